# tillwatch — the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/tillwatch/tillwatch/internal/buildinfo.Version=$(VERSION)
BINARIES := tillwatch tillwatch-sensor tillwatch-collector
# Tests run as root in CI (process connector, kill); -p 1 keeps the two
# cores for the suites that start real collectors and sensors.
TESTFLAGS ?= -race -count=1 -timeout 20m

.PHONY: all build demo test deps vet fuzz fuzz-short clean

all: build

## deps: check the toolchain; say in one line what is missing
deps:
	@command -v $(GO) >/dev/null || { echo "missing: Go 1.26 (https://go.dev/dl)"; exit 2; }
	@command -v gcc >/dev/null || { echo "missing: a C compiler for cgo and -race: apt-get install -y gcc"; exit 2; }
	@$(GO) version | grep -qE 'go1\.(2[6-9]|[3-9][0-9])' || { echo "need Go >= 1.26, have: $$($(GO) version)"; exit 2; }

## build: the three binaries under bin/
build: deps
	@mkdir -p $(BIN)
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))

## demo: collector + enrolled sensor + a simulated attack, on this machine
demo: build
	@if [ "$$(id -u)" != 0 ]; then echo "note: not root; the sensor runs in monitor mode. 'sudo make demo' shows it stopping the attack."; fi
	./$(BIN)/tillwatch demo

## vet: static checks
vet: deps
	@test -z "$$(gofmt -l cmd collector internal rules sensor)" || { echo "gofmt needed:"; gofmt -l cmd collector internal rules sensor; exit 1; }
	$(GO) vet ./...
	GOOS=windows $(GO) build ./...
	GOOS=darwin $(GO) build ./...

## test: everything CI runs
test: vet fuzz-short
	$(GO) test $(TESTFLAGS) ./...

## fuzz: every fuzz target for FUZZTIME each (default 2m)
fuzz:
	$(MAKE) fuzz-short FUZZTIME=$${FUZZTIME:-2m}

## fuzz-short: a few seconds on each fuzz target so they do not rot
FUZZTIME ?= 5s
fuzz-short: deps
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$t $$f"; $(GO) test -run '^$$' -fuzz "^$$f$$" -fuzztime $(FUZZTIME) $$t || exit 1; \
	  done; \
	done

clean:
	rm -rf $(BIN) dist
