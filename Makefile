# codat-rotator build, test and lint. `make help` lists the targets.

GO        ?= go
# The Go toolchain that builds, tests and checks everything that ships:
# the go command fetches it through the module proxy the first time
# (~76 MB). Set here, not left to the environment, so that a machine
# whose own Go is older (or GOTOOLCHAIN=local) still builds with it;
# go.mod's toolchain line names the same version.
GO_TOOLCHAIN := go1.27.3
export GOTOOLCHAIN := $(GO_TOOLCHAIN)
BIN       := bin
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
COMMIT    ?= $(shell git rev-parse HEAD 2>/dev/null)
DATE      ?= $(shell date -u +%Y-%m-%dT%H:%M:%SZ)
LDFLAGS   := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.date=$(DATE)

STATICCHECK_VERSION := v0.8.2
STATICCHECK := $(BIN)/staticcheck

# govulncheck, against a vulnerability database built offline from a
# pinned golang.org/x/vulndb (the public endpoint is not reachable from
# here): its cmd/indexdb indexes the module's data/osv reports. Move
# VULNDB_VERSION forward (go list -m golang.org/x/vulndb@latest) to
# learn of newer vulnerabilities.
GOVULNCHECK_VERSION := v1.10.0
GOVULNCHECK := $(BIN)/govulncheck
VULNDB_VERSION := v0.0.0-20261105234957-e22db6528018
# Kept in the user's cache, keyed by version: CI's fresh clones reuse it.
VULNDB := $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/codat-rotator/vulndb/$(VULNDB_VERSION)

FUZZTIME ?= 30s
# package:target pairs
FUZZ_TARGETS := codat:FuzzDecodeKey codat:FuzzDecodeKeyList codat:FuzzDecodeError codat:FuzzParseRetryAfter \
	internal/isotime:FuzzParse store:FuzzDecodeTarget cmd/codat-rotator:FuzzParseConfig

# The modules of this repository beside the daemon's, for consumers:
# codatauth (what an application imports) and secret (the redacted type
# it shares with the daemon). The daemon's go.mod replaces them with
# these directories; ./... does not reach them, so test, lint and
# vulncheck visit each.
MODULES := secret codatauth

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
	@for m in $(MODULES); do echo "== module $$m"; (cd $$m && $(GO) test -race -count=1 ./...) || exit 1; done

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

# The manifests on a real Kubernetes API server, and the daemon logging in
# to a real Vault through its TokenReview (deploy/kubernetes/cluster_test.go).
# kube-apiserver is built from the pinned module in tools/kube-apiserver
# into build/kubernetes (~25 min and ~1 GB of module and build cache the
# first time, on 2 cores shared with another build; then cached: the
# binary is rebuilt only when that module changes; built with the
# machine's own Go, like the test Vault, so a toolchain move does not
# pay it again). Also needs Debian's
# etcd-server, kubectl 1.27+, and the Go module proxy for the Prometheus
# Operator's CRD. A missing part fails the test (it never skips).
KUBE_VERSION := v1.34.4
KUBE_APISERVER := build/kubernetes/kube-apiserver-$(KUBE_VERSION)

$(KUBE_APISERVER): tools/kube-apiserver/go.mod tools/kube-apiserver/go.sum
	@echo "kube-apiserver: building $@ from tools/kube-apiserver (k8s.io/kubernetes $(KUBE_VERSION)); ~25 min the first time"
	cd tools/kube-apiserver && GOTOOLCHAIN=local CGO_ENABLED=0 $(GO) build -trimpath \
		-ldflags '-s -w -X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=34' \
		-o $(CURDIR)/$@ k8s.io/kubernetes/cmd/kube-apiserver

.PHONY: test-kubernetes
test-kubernetes: build vault $(KUBE_APISERVER) ## the manifests on a real kube-apiserver, Vault's Kubernetes auth through it
	cd deploy/kubernetes && $(GO) test -tags cluster -count=1 -v -timeout 15m -run '^TestCluster$$' . \
		-args -apiserver=$(CURDIR)/$(KUBE_APISERVER) -binary=$(CURDIR)/$(BIN)/codat-rotator -vault=$(VAULT_BIN)

# The image as the StatefulSet runs it (image/image_test.go): the
# Dockerfile's final stage assembled under podman on a stand-in base
# (no registry is reachable here; the test's doc says what differs), run
# read-only as 65532 with no capabilities and 128 MiB against a Vault dev
# server and the Codat emulator: start, probes, rotation, SIGTERM,
# SIGKILL mid-rotation and restart, the state file's owner and mode, no
# secret in the logs. Needs root, podman, runc, ca-certificates, tzdata.
.PHONY: test-image
test-image: build vault ## the image under podman with the StatefulSet's security context (root)
	$(GO) test -tags image -count=1 -v -timeout 10m ./image/ -args -binary=$(CURDIR)/$(BIN)/codat-rotator

# The test Vault never ships: it is built with the machine's own Go
# (GOTOOLCHAIN=local), whose build cache keeps its 13-30 minute first
# build from being paid again for every toolchain the daemon moves to.
vault: ## make sure a vault binary exists for the tests (PATH, or build bin/vault)
	@if [ -x "$(VAULT_BIN)" ]; then echo "vault: $(VAULT_BIN)"; else \
		echo "vault: building $(BIN)/vault from tools/vault (pinned github.com/hashicorp/vault v1.21.0)"; \
		cd tools/vault && GOTOOLCHAIN=local $(GO) build -mod=mod -trimpath -ldflags '-s -w' -o $(CURDIR)/$(BIN)/vault . ; \
	fi

lint: $(STATICCHECK) ## gofmt, go vet and staticcheck
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	@for m in $(MODULES); do (cd $$m && echo "go vet ./... ($$m)" && $(GO) vet ./...) || exit 1; done
	$(GO) vet -tags nspawn ./systemd/
	cd deploy/kubernetes && $(GO) vet -tags cluster ./...
	$(GO) vet -tags image ./image/
	$(STATICCHECK) ./...
	@for m in $(MODULES); do (cd $$m && echo "staticcheck ./... ($$m)" && $(CURDIR)/$(STATICCHECK) ./...) || exit 1; done
	$(STATICCHECK) -tags nspawn ./systemd/
	$(STATICCHECK) -tags image ./image/

.PHONY: vulncheck
vulncheck: $(GOVULNCHECK) $(VULNDB)/index/db.json ## govulncheck the daemon against the pinned vulnerability database; fails on a reachable one
	@# govulncheck asks the go command for its version in GOPATH mode,
	@# where GOTOOLCHAIN does not switch: the toolchain's go goes first on PATH.
	PATH="$$($(GO) env GOROOT)/bin:$$PATH" $(GOVULNCHECK) -db file://$(VULNDB) ./...
	@for m in $(MODULES); do (cd $$m && echo "govulncheck ./... ($$m)" && PATH="$$($(GO) env GOROOT)/bin:$$PATH" $(CURDIR)/$(GOVULNCHECK) -db file://$(VULNDB) ./...) || exit 1; done

$(GOVULNCHECK):
	GOBIN=$(CURDIR)/$(BIN) $(GO) install golang.org/x/vuln/cmd/govulncheck@$(GOVULNCHECK_VERSION)

# The database, built once per VULNDB_VERSION (~1 min with a warm module
# cache; the first download of vulndb's dependencies takes a few).
$(VULNDB)/index/db.json:
	@dir=$$($(GO) mod download -json golang.org/x/vulndb@$(VULNDB_VERSION) | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$$/\1/p'); \
	test -n "$$dir" || { echo "vulncheck: cannot download golang.org/x/vulndb@$(VULNDB_VERSION)"; exit 1; }; \
	rm -rf $(VULNDB).tmp && \
	GOFLAGS=-mod=mod $(GO) run golang.org/x/vulndb/cmd/indexdb@$(VULNDB_VERSION) -vulns "$$dir/data/osv" -out $(VULNDB).tmp && \
	rm -rf $(VULNDB) && mv $(VULNDB).tmp $(VULNDB)

fmt: ## format the code
	gofmt -w .

fuzz: ## run every fuzz target for FUZZTIME (default 30s) each
	@for pt in $(FUZZ_TARGETS); do \
		p=$${pt%%:*}; t=$${pt#*:}; echo "== $$p $$t"; \
		$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./$$p/ || exit 1; \
	done

$(STATICCHECK):
	GOBIN=$(CURDIR)/$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean: ## remove built files (and the cached Debian root of test-systemd and kube-apiserver of test-kubernetes)
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
	cd codatauth && $(GO) test -run='^$$' -bench='^BenchmarkRoundTrip$$' -count=10 .

bench-budget: vault ## a fleet-wide emergency of BENCH_FLEET targets at the default Codat request budget (~5 min for 1,000)
	$(GO) test -run='^$$' -bench='^BenchmarkFleetBudget$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -bench.fleet=$(BENCH_FLEET)

soak: vault ## run the daemon on a 1s schedule for ROTATIONS rotations (default 1000, ~17 min); fail on growth or a failure
	$(GO) test -run='^$$' -bench='^BenchmarkSoak$$' -benchtime=1x -timeout=0 ./cmd/codat-rotator/ -soak.rotations=$(ROTATIONS)

# The seeded chaos simulation (rotation/chaos_test.go): N schedules of
# rotations, crashes and Codat/Vault faults, invariants checked after
# every step. A failure prints its seed; replay one schedule with
# `go test -v -run TestChaos ./rotation/ -args -chaos.seed=SEED -chaos.trace`.
# STEPS bounds each schedule's length (the identity families need long
# ones: a copy, then its fix; a metadata delete, then a rename); FIRST is
# the first seed, so a run on seeds never used before is FIRST=<new>.
N ?= 10000
STEPS ?= 24
FIRST ?= 1
.PHONY: chaos
chaos: vault ## run N seeded chaos schedules of up to STEPS steps (defaults 10000, 24) from seed FIRST, no race detector
	$(GO) test -v -run TestChaos -count=1 -timeout 0 ./rotation/ -args -chaos.n=$(N) -chaos.steps=$(STEPS) -chaos.first=$(FIRST)
