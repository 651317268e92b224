# codat-rotator build, test and lint. `make help` lists the targets.

GO        ?= go
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/staticcheck

FUZZTIME ?= 30s
# package:target pairs
FUZZ_TARGETS := codat:FuzzDecodeKey codat:FuzzDecodeKeyList codat:FuzzDecodeError codat:FuzzParseRetryAfter \
	internal/isotime:FuzzParse store:FuzzDecodeTarget cmd/codat-rotator:FuzzParseConfig

# Tests need a real `vault server -dev`: the one on PATH, or bin/vault built
# from the pinned module in tools/vault (its own module, so Vault's
# dependencies stay out of ours). The first build takes ~10-20 minutes and
# ~4 GB of module cache; later builds reuse the caches.
VAULT_BIN ?= $(shell command -v vault 2>/dev/null || echo $(CURDIR)/$(BIN)/vault)
export VAULT_BIN

.PHONY: help build demo emulator test vault lint fmt fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/codat-rotator
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/codat-rotator ./cmd/codat-rotator

demo: build vault ## run the demo: Vault dev server, Codat emulator, rotations (Ctrl-C stops)
	VAULT_BIN=$(VAULT_BIN) ./configs/demo.sh

emulator: build ## build and run the local Codat emulator on 127.0.0.1:8484
	$(BIN)/codat-rotator emulator --listen 127.0.0.1:8484

test: vault test-deploy ## run the whole test suite with the race detector
	$(GO) test -race -count=1 ./...

# deploy/kubernetes is its own module (the Kubernetes API types stay out of
# ours), so ./... above does not reach it.
.PHONY: test-deploy
test-deploy: ## test the Kubernetes manifests (strict decoding, kustomize build)
	cd deploy/kubernetes && $(GO) vet ./... && $(GO) test -count=1 ./...

# The unit under a real systemd: a Debian bookworm root (debootstrap,
# cached in build/nspawn, ~1 min the first time) booted with
# systemd-nspawn, the built binary and systemd/codat-rotator.service
# installed unchanged, Vault and the Codat emulator on the host's
# loopback. Needs root, systemd-container and debootstrap (.ci/run
# installs them); ~3 min, most of it the unit's 2 min watchdog.
.PHONY: test-systemd
test-systemd: build vault ## boot the unit under a real systemd (systemd-nspawn; root)
	$(GO) test -tags nspawn -count=1 -v -timeout 20m ./systemd/ -args -binary=$(CURDIR)/$(BIN)/codat-rotator -root-cache=$(CURDIR)/build/nspawn

vault: ## make sure a vault binary exists for the tests (PATH, or build bin/vault)
	@if [ -x "$(VAULT_BIN)" ]; then echo "vault: $(VAULT_BIN)"; else \
		echo "vault: building $(BIN)/vault from tools/vault (pinned github.com/hashicorp/vault v1.21.0)"; \
		cd tools/vault && $(GO) build -mod=mod -trimpath -ldflags '-s -w' -o $(CURDIR)/$(BIN)/vault . ; \
	fi

lint: $(STATICCHECK) ## gofmt, go vet and staticcheck
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags nspawn ./systemd/
	$(STATICCHECK) ./...
	$(STATICCHECK) -tags nspawn ./systemd/

fmt: ## format the code
	gofmt -w .

fuzz: ## run every fuzz target for FUZZTIME (default 30s) each
	@for pt in $(FUZZ_TARGETS); do \
		p=$${pt%%:*}; t=$${pt#*:}; echo "== $$p $$t"; \
		$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./$$p/ || exit 1; \
	done

$(STATICCHECK):
	GOBIN=$(CURDIR)/$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean: ## remove built files (and the cached Debian root of test-systemd)
	rm -rf $(BIN) dist build

# Benchmarks print numbers; docs/benchmarks.md holds the results and how
# to read them. They need the same Vault as the tests, take ~15 minutes
# (two of them watch idle daemons for 60s per fleet size), and never run in `make test`.
BENCH_IDLE ?= 60s
BENCH_FLEET ?= 1000
ROTATIONS ?= 1000

.PHONY: bench bench-budget soak
bench: vault ## run the benchmarks and print their numbers (docs/benchmarks.md)
	$(GO) test -run='^$$' -bench='^BenchmarkFileSize$$' -benchtime=1x ./store/
	$(GO) test -run='^$$' -bench='^BenchmarkGroupCommit$$' -benchtime=2s ./store/
	$(GO) test -run='^$$' -bench='^BenchmarkRotation$$' -benchtime=20x -timeout=0 ./cmd/codat-rotator/
	$(GO) test -run='^$$' -bench='^BenchmarkStartToReady$$' -benchtime=20x -timeout=0 ./cmd/codat-rotator/
	$(GO) test -run='^$$' -bench='^BenchmarkConfigLoad$$' -benchtime=5x ./cmd/codat-rotator/ -bench.sizes=1,1000
	$(GO) test -run='^$$' -bench='^BenchmarkCommands$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -bench.sizes=1,1000
	$(GO) test -run='^$$' -bench='^BenchmarkReadyAndReload$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -bench.fleet=$(BENCH_FLEET)
	$(GO) test -run='^$$' -bench='^BenchmarkFleet$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -bench.fleet=$(BENCH_FLEET)
	$(GO) test -run='^$$' -bench='^BenchmarkFleetEmergency$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -bench.fleet=$(BENCH_FLEET)
	$(GO) test -run='^$$' -bench='^BenchmarkSameTick$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -bench.fleet=$(BENCH_FLEET)
	$(GO) test -run='^$$' -bench='^BenchmarkIdleFootprint$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -bench.idle=$(BENCH_IDLE)
	$(GO) test -run='^$$' -bench='^BenchmarkIdleWakeups$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -bench.idle=$(BENCH_IDLE)
	$(GO) test -run='^$$' -bench='^BenchmarkRoundTrip$$' -count=10 ./codatauth/

bench-budget: vault ## a fleet-wide emergency of BENCH_FLEET targets at the default Codat request budget (~5 min for 1,000)
	$(GO) test -run='^$$' -bench='^BenchmarkFleetBudget$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -bench.fleet=$(BENCH_FLEET)

soak: vault ## run the daemon on a 1s schedule for ROTATIONS rotations (default 1000, ~17 min); fail on growth or a failure
	$(GO) test -run='^$$' -bench='^BenchmarkSoak$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -soak.rotations=$(ROTATIONS)

# The seeded chaos simulation (rotation/chaos_test.go): N schedules of
# rotations, crashes and Codat/Vault faults, invariants checked after
# every step. A failure prints its seed; replay one schedule with
# `go test -v -run TestChaos ./rotation/ -args -chaos.seed=SEED -chaos.trace`.
N ?= 10000
.PHONY: chaos
chaos: vault ## run N seeded chaos schedules (default 10000), no race detector
	$(GO) test -v -run TestChaos -count=1 -timeout 0 ./rotation/ -args -chaos.n=$(N)
