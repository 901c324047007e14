# tillwatch — the README's two commands are `make demo` and `make test`.
SHELL := /bin/bash
GO ?= go
BIN := bin
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -X github.com/tillwatch/tillwatch/internal/buildinfo.Version=$(VERSION)
BINARIES := tillwatch tillwatch-sensor tillwatch-collector
CROSS_PKGS := ./cmd/tillwatch ./cmd/tillwatch-sensor ./sensor/... ./internal/... ./rules/...
# Every folder with Go code, for gofmt.
GO_DIRS := cmd collector internal rules sensor bench sim demo e2e build
# Tests run as root in CI (process connector, kill); -p 1 keeps the two
# cores for the suites that start real collectors and sensors.
TESTFLAGS ?= -race -count=1 -timeout 30m

.PHONY: all build demo test deps test-deps vet fuzz fuzz-short clean rules bench-yara deb

all: build

## deps: what `make build` needs (gcc, libyara-dev and static archives); installed as root on Debian/Ubuntu, else the command to run
deps:
	@GO=$(GO) build/install-deps.sh build

## test-deps: deps plus what `make test` needs (JDK 17 and Maven for the test Elasticsearch, curl, yara, dpkg, systemd)
test-deps:
	@GO=$(GO) build/install-deps.sh test

# libyara (and libmagic, libjansson, libcrypto) are linked from their static
# archives through our own yara.pc. CGO_CFLAGS differs from a plain build on
# purpose: go's build cache does not see PKG_CONFIG_PATH or the tag, and
# would otherwise reuse the dynamically linked go-yara package.
YARA_STATIC_ENV := PKG_CONFIG_PATH=$(CURDIR)/build/pkgconfig CGO_CFLAGS="-O2 -g -DTILLWATCH_YARA_STATIC=1"

## rules: repack rules/builtin.tar.gz after changing a rule file (a test fails until you do)
rules:
	cd rules && $(GO) generate .

## build: the three binaries under bin/
build: deps
	@mkdir -p $(BIN)
	$(YARA_STATIC_ENV) $(GO) build -trimpath -tags yara_static -ldflags "$(LDFLAGS)" -o $(BIN)/ $(addprefix ./cmd/,$(BINARIES))
	@! ldd $(BIN)/tillwatch-sensor | grep -q yara || { echo "bin/tillwatch-sensor links libyara dynamically; see build/pkgconfig/yara.pc"; exit 1; }

## deb: Debian packages tillwatch-sensor, tillwatch-collector and tillwatch-cli under dist/, from bin/ (docs/deploy.md)
deb: build
	@mkdir -p dist
	@rm -f dist/tillwatch-*.deb
	$(GO) run -ldflags "$(LDFLAGS)" ./build/packaging/mkdeb --bin $(BIN) --out dist

## demo: collector + enrolled sensor + a simulated attack, on this machine
demo: build
	@if [ "$$(id -u)" != 0 ]; then echo "note: not root; the sensor runs in monitor mode. 'sudo make demo' shows it stopping the attack."; fi
	./$(BIN)/tillwatch demo

## vet: static checks
vet: deps
	@test -z "$$(gofmt -l $(GO_DIRS))" || { echo "gofmt needed:"; gofmt -l $(GO_DIRS); exit 1; }
	$(GO) vet ./...
	# The sensor and CLI run on every OS; the collector is Linux-only (and its
	# Elasticsearch client is a heavy build), so it is not cross-built.
	GOOS=windows $(GO) build $(CROSS_PKGS)
	# The sensor runs as a Windows service (cmd/tillwatch-sensor/service_windows.go).
	GOOS=windows CGO_ENABLED=0 $(GO) vet ./cmd/tillwatch-sensor/
	GOOS=darwin $(GO) build $(CROSS_PKGS)
	CGO_ENABLED=0 $(GO) build ./cmd/...

## test: everything CI runs
test: test-deps vet fuzz-short
	@$(MAKE) --no-print-directory es-up
	@# es-down runs whatever the tests return; the exit code is the tests'.
	@# e2e runs real sensors in enforce mode; they act on every process
	@# of the machine, so it runs alone, after the other packages.
	@rc=0; TILLWATCH_ES_URL=$(ES_URL) $(GO) test $(TESTFLAGS) $$($(GO) list ./... | grep -v /e2e) || rc=$$?; \
	  $(MAKE) --no-print-directory es-down; [ $$rc = 0 ] || exit $$rc
	$(GO) test $(TESTFLAGS) ./e2e/
	# The 1,000-sensor fault test at full size; the race detector makes it too heavy.
	$(GO) test -count=1 -run 'Thousand' ./sim/fleet/

## fuzz: every fuzz target for FUZZTIME each (default 2m)
fuzz:
	$(MAKE) fuzz-short FUZZTIME=$${FUZZTIME:-2m}

## fuzz-short: a fixed number of executions of each fuzz target so they do not rot
# A count, not a duration: a duration -fuzztime races Go's fuzzing coordinator
# (golang/go#75804, "context deadline exceeded" with no failing input), and on
# a loaded 2-CPU CI machine it lost that race twice in a row. A count has no
# deadline to race; 50,000 executions take 2-9 s per target here.
FUZZTIME ?= 50000x
fuzz-short: deps
	@for t in $$(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -n1 dirname | sort -u); do \
	  for f in $$(grep -h '^func Fuzz' $$t/*_test.go | sed 's/func \(Fuzz[A-Za-z0-9_]*\).*/\1/'); do \
	    echo "fuzz $$t $$f"; sh build/fuzz-one.sh $(GO) $$t $$f $(FUZZTIME) || exit 1; \
	  done; \
	done

## bench-yara: our sweep and `tillwatch scan` against the yara CLI, same rules, corpus and threads; writes docs/benchmarks.md (YARA)
## YARA_PUBLIC: a folder of public .yar files (e.g. signature-base's yara/) for the scan command's table (default: rules/yara)
YARA_PUBLIC ?=
bench-yara: build
	$(GO) run ./bench/yarabench -out docs/benchmarks.md $(if $(YARA_PUBLIC),-public $(YARA_PUBLIC))

## bench-rmm: RMM detection latency of the real sensor (as root), decoder exec to alert line; writes docs/benchmarks.md (RMM detection latency)
.PHONY: bench-rmm
bench-rmm:
	$(GO) run ./bench/rmmbench -out docs/benchmarks.md

## bench-fanout: kill-switch fan-out, campaign trigger to the last acknowledgement, 1,000 and 10,000 simulated sensors; writes docs/benchmarks.md
.PHONY: bench-fanout
bench-fanout: deps
	$(GO) run ./bench/fanoutbench -out docs/benchmarks.md

## bench-ransomware: files lost to the simulator per mode, time to stop, benign false positives (root); writes docs/benchmarks.md
.PHONY: bench-ransomware
bench-ransomware: build
	$(GO) run ./bench/ransombench -out docs/benchmarks.md

## bench-ransomware-kernel: the ransomware tables with the sensor on the host and the kernel's decoy and burst tripwires armed, files.open_permission always then unless-kernel (root; acts only on its own processes: response.only_under); writes docs/benchmarks.md
.PHONY: bench-ransomware-kernel
bench-ransomware-kernel: build
	$(GO) run ./bench/ransombench -placement host -open-permission always -out docs/benchmarks.md
	$(GO) run ./bench/ransombench -placement host -open-permission unless-kernel -out docs/benchmarks.md

## bench-footprint: idle sensor RSS and CPU over -window (default 5m), on the host and alone in a PID namespace (root); writes docs/benchmarks.md
.PHONY: bench-footprint
bench-footprint: build
	$(GO) run ./bench/footprintbench -out docs/benchmarks.md

## bench-load: file storm (50,000-file tar + gzip) and process storm (5,000 execs) without and with a running sensor in its default configuration (the kernel layer armed where the kernel allows it), and the events it lost (root); writes docs/benchmarks.md
.PHONY: bench-load
bench-load: build
	$(GO) run ./bench/loadbench -kernel auto -out docs/benchmarks.md

## bench-console: console page loads on 1,000 tills and 100,000 alerts, SQLite then Elasticsearch (needs make es-up; SQLite only without it); writes docs/benchmarks.md
.PHONY: bench-console
bench-console: deps
	$(GO) run ./bench/consolebench -es $(ES_URL) -out docs/benchmarks.md

## bench-ingest: collector ingest rate from 1,000 hosts into SQLite, then into Elasticsearch against a bare bulk indexer (needs make es-up; skipped with a message without it); writes docs/benchmarks.md
.PHONY: bench-ingest
bench-ingest: deps
	$(GO) run ./bench/ingestbench -es $(ES_URL) -out docs/benchmarks.md

## bench-fleet: 20,000 simulated sensors (as many as the descriptor limit allows) heartbeating on one collector (SQLite): enrolment, collector RSS and CPU, heartbeat errors; writes docs/benchmarks.md
.PHONY: bench-fleet
bench-fleet: deps
	$(GO) run ./bench/fleetbench -out docs/benchmarks.md

## bench: every benchmark in turn, each writing its own section of docs/benchmarks.md (root; about an hour)
## Elasticsearch is started for bench-ingest and stopped after it, unless it was already running (someone else's).
BENCHES := bench-yara bench-rmm bench-ransomware bench-fanout bench-footprint bench-load bench-ingest bench-fleet
.PHONY: bench
bench: build
	@failed=""; for b in $(BENCHES); do \
	  echo "== make $$b"; \
	  if [ $$b = bench-ingest ]; then \
	    up=0; curl -fsS -m 3 "$(ES_URL)/_cluster/health" >/dev/null 2>&1 && up=1; \
	    [ $$up = 1 ] || $(MAKE) --no-print-directory es-up || { failed="$$failed es-up"; continue; }; \
	    $(MAKE) --no-print-directory $$b || failed="$$failed $$b"; \
	    [ $$up = 1 ] || $(MAKE) --no-print-directory es-down; \
	  else \
	    $(MAKE) --no-print-directory $$b || failed="$$failed $$b"; \
	  fi; \
	done; \
	[ -z "$$failed" ] || { echo "bench: failed:$$failed"; exit 1; }

## es-up / es-down: the test Elasticsearch (one genuine 8.x node from Elastic's
## jars on Maven Central) on 127.0.0.1:9200; see docs/elasticsearch-testing.md
ES_URL ?= http://127.0.0.1:9200
.PHONY: es-up es-down
es-up:
	@testing/elasticsearch/es.sh up
es-down:
	@testing/elasticsearch/es.sh down

clean:
	rm -rf $(BIN) dist
