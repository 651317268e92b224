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
FUZZ_TARGETS := FuzzDecodeKey FuzzDecodeKeyList FuzzDecodeError FuzzParseRetryAfter FuzzParseTime

.PHONY: help build emulator test lint fmt fuzz clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-10s %s\n", $$1, $$2}'

build: ## build bin/codat-rotator
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN)/codat-rotator ./cmd/codat-rotator

emulator: build ## build and run the local Codat emulator on 127.0.0.1:8484
	$(BIN)/codat-rotator emulator --listen 127.0.0.1:8484

test: ## run the whole test suite with the race detector
	$(GO) test -race -count=1 ./...

lint: $(STATICCHECK) ## gofmt, go vet and staticcheck
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then echo "gofmt would change:"; echo "$$unformatted"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...

fmt: ## format the code
	gofmt -w .

fuzz: ## run every fuzz target for FUZZTIME (default 30s) each
	@for t in $(FUZZ_TARGETS); do \
		echo "== $$t"; \
		$(GO) test -run='^$$' -fuzz="^$$t$$" -fuzztime=$(FUZZTIME) ./codat/ || exit 1; \
	done

$(STATICCHECK):
	GOBIN=$(CURDIR)/$(BIN) $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION)

clean: ## remove built files
	rm -rf $(BIN) dist
