# req-mtls: request mTLS client and server on the stock Go toolchain.
# `make` alone prints this help. Everything runs natively with Go and make;
# the docker-* targets do the same inside Docker.

GO        ?= go
BIN       ?= bin
CERTS_DIR ?= testdata/certs
CA_KEY    ?=
CA_NAME   ?=
# make client-request's client certificate, under the public demo's root:
# RFC 9500's testRSA4096 (a public test key, never a root of CERTS_DIR).
DEMO_DIR  ?= testdata/demo
DEMO_KEY  := third_party/rfc9500/testRSA4096.key
FUZZTIME  ?= 1m
FUZZ_JOBS ?= 1
DEMO_URL  ?= https://req-mtls.research.cloudflare.com/debug
LDFLAGS   := -s -w

.DEFAULT_GOAL := help

.PHONY: help build test h2spec test-future race lint soak fuzz bench demo gen-cert start-test-server \
	client-request-local client-request artefacts capture \
	docker-build docker-start-test-server docker-client-request-local docker-client-request docker-test

help: ## print this help
	@echo "usage: make TARGET"
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-30s %s\n", $$1, $$2}'

build: ## build client, server and gencert into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

PEER_TESTS := ^(TestH2spec|TestDocsExamples|TestDocsPicture|TestWebBotAuthNPM|TestWebBotAuthNPMDirectory|TestGatewayVerifiesWebBotAuthNPM|TestClientThroughProxy|TestForwardProxyClients|TestForwardProxyRefusals|TestCurl|TestOpenSSLClient|TestOpenSSLServer|TestTshark|TestChromium|TestGatewayNginx|TestFleetHAProxy|TestACMEPebble)$$

test: ## run every test (unit, handshake, end to end; peer tests verbose)
	@# Cloudflare's web-bot-auth (pinned in e2e/wba/package.json), for the
	@# Web Bot Auth interoperability tests, once.
	@if command -v npm >/dev/null && [ ! -d e2e/wba/node_modules/web-bot-auth ]; then \
		npm install --prefix e2e/wba --no-package-lock --no-audit --no-fund >/dev/null 2>&1 || \
		echo "make test: npm install in e2e/wba failed: the Web Bot Auth interoperability tests will skip" >&2; fi
	@# h2spec, the HTTP/2 conformance suite, for TestH2spec, once.
	@test -x $(BIN)/h2spec || $(MAKE) --no-print-directory h2spec || \
		echo "make test: building h2spec failed: TestH2spec will skip (fail under REQ_MTLS_REQUIRE_PEERS)" >&2
	$(GO) vet ./...
	$(GO) test -count=1 -skip '$(PEER_TESTS)' ./...
	REQ_MTLS_H2SPEC=$(abspath $(BIN))/h2spec $(GO) test -count=1 -v -run '$(PEER_TESTS)' ./e2e
	cd examples && $(GO) vet ./... && $(GO) test -count=1 ./...

# h2spec (github.com/summerwind/h2spec), pinned with its dependencies in
# tools/h2spec/go.mod, a module of its own: the project's go.mod holds none
# of it.
h2spec: ## build the HTTP/2 conformance suite h2spec into BIN (pinned in tools/h2spec; TestH2spec runs it)
	$(GO) build -C tools/h2spec -o $(abspath $(BIN))/h2spec github.com/summerwind/h2spec/cmd/h2spec

# The in-process tests again with every fixture made, and both sides of
# every handshake checked, seven years from now: the suite holds on any date.
test-future: ## the in-process tests with their clock seven years ahead (REQ_MTLS_TEST_YEARS=7)
	REQ_MTLS_TEST_YEARS=7 $(GO) test -count=1 -skip '$(PEER_TESTS)' $$($(GO) list ./... | grep -v /e2e)

race: ## the tests under the race detector (peer tests left to make test)
	$(GO) test -race -count=1 -skip '$(PEER_TESTS)' ./...
	cd examples && $(GO) test -race -count=1 ./...

STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.7.0

lint: ## go vet, gofmt and staticcheck (pinned version, fetched by go run)
	$(GO) vet ./...
	GOARCH=386 $(GO) vet ./internal/rawio ./internal/gateway # raw socket calls are built per architecture
	GOOS=windows $(GO) build -o /dev/null ./... # the binaries and tools build off Linux too
	GOOS=darwin $(GO) build -o /dev/null ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go'))" || { gofmt -l $$(git ls-files '*.go'); echo "gofmt: files above need formatting" >&2; exit 1; }
	$(GO) run $(STATICCHECK) ./...
	cd examples && $(GO) vet ./... && $(GO) run $(STATICCHECK) ./...

SOAK ?= 5m

soak: ## full handshake load on the server binary for SOAK (default 5m), RSS and goroutines sampled
	REQ_MTLS_SOAK=$(SOAK) $(GO) test -count=1 -v -timeout 0 -run '^TestSoak$$' ./e2e

demo: build ## start a local server, then flagged and unflagged requests
	BIN=$(BIN) ./scripts/demo.sh

gen-cert: build ## write a local root, server and client certificates into CERTS_DIR (CA_KEY=file: the root's key; CA_NAME=name; FORCE=1 overwrites)
	@if [ -z "$(FORCE)" ] && ls $(CERTS_DIR)/*.crt $(CERTS_DIR)/*.key >/dev/null 2>&1; then \
		echo "make gen-cert: $(CERTS_DIR) holds certificates already; make gen-cert FORCE=1 overwrites them" >&2; exit 1; fi
	$(BIN)/gencert -dir $(CERTS_DIR) $(if $(CA_KEY),-ca-key $(CA_KEY)) $(if $(CA_NAME),-ca-name '$(CA_NAME)') $(if $(FORCE),-force)

start-test-server: build ## run the server on localhost:8775 with the CERTS_DIR certificates
	@test -f $(CERTS_DIR)/server.crt || { echo "no certificates in $(CERTS_DIR): run 'make gen-cert' first" >&2; exit 1; }
	@$(BIN)/gencert -check-root $(CERTS_DIR)/rootCA.crt >/dev/null || { \
		echo "make start-test-server: make a new local root: make gen-cert FORCE=1"; exit 1; } >&2
	$(BIN)/server -cert $(CERTS_DIR)/server.crt -key $(CERTS_DIR)/server.key -client-cacert $(CERTS_DIR)/rootCA.crt

client-request-local: build ## flag 80 to https://localhost:8775/debug with the CERTS_DIR client certificate
	@test -f $(CERTS_DIR)/client.crt || { echo "no certificates in $(CERTS_DIR): run 'make gen-cert' first" >&2; exit 1; }
	$(BIN)/client -cert $(CERTS_DIR)/client.crt -key $(CERTS_DIR)/client.key \
		-server-cacert $(CERTS_DIR)/rootCA.crt -tlsflags 80 --connect https://localhost:8775/debug

# The public demo trusts client certificates under its root, whose key is
# RFC 9500's testRSA4096: gencert issues one into DEMO_DIR when there is
# none (and never a root: nothing local comes to trust that key).
client-request: build ## flag 80 to the public demo (DEMO_URL); makes its client certificate in DEMO_DIR when missing
	@test -f $(DEMO_DIR)/client.crt || $(BIN)/gencert -ca-key $(DEMO_KEY) -client-only -force -dir $(DEMO_DIR)
	@$(BIN)/gencert -check-demo $(DEMO_DIR)/client.crt -ca-key $(DEMO_KEY) || { \
		echo "make client-request: remove $(DEMO_DIR)/client.crt and client.key to make new ones"; exit 1; } >&2
	$(BIN)/client -cert $(DEMO_DIR)/client.crt -key $(DEMO_DIR)/client.key -tlsflags 80 --connect $(DEMO_URL)

# sha256sum (GNU) or shasum -a 256 (macOS, BSD): the same output format.
SHA256SUM := $(shell command -v sha256sum >/dev/null 2>&1 && echo sha256sum || echo shasum -a 256)
ARTEFACT_ARCHS := amd64 arm64

artefacts: ## static binaries for linux/amd64 and linux/arm64 in bin/linux-*/, each with SHA256SUMS
	@for arch in $(ARTEFACT_ARCHS); do \
		echo "CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -buildvcs=auto -ldflags '$(LDFLAGS)' -o $(BIN)/linux-$$arch/ ./cmd/..."; \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -buildvcs=auto -ldflags '$(LDFLAGS)' -o $(BIN)/linux-$$arch/ ./cmd/... || exit 1; \
		(cd $(BIN)/linux-$$arch && rm -f SHA256SUMS && $(SHA256SUM) * > .SHA256SUMS.tmp && mv .SHA256SUMS.tmp SHA256SUMS) || exit 1; \
	done
	@ls -l $(BIN)/linux-amd64 $(BIN)/linux-arm64
	@cat $(BIN)/linux-amd64/SHA256SUMS $(BIN)/linux-arm64/SHA256SUMS

# make capture and make bench write into OUT, a scratch directory under the
# gitignored bin/ unless given; OUT=assets replaces the committed files.
OUT ?= $(BIN)/assets
# The capture's server port: 8775 unless given; 443 only when asked for
# (CAPTURE_PORT=443, as root), as the committed capture was recorded.
CAPTURE_PORT ?= 8775

capture: build ## record a flagged exchange with tshark into OUT/demonstration-capture.pcapng (OUT=bin/assets; OUT=assets CAPTURE_PORT=443 remakes the committed one)
	BIN=$(BIN) CAPTURE_PORT=$(CAPTURE_PORT) ./scripts/capture.sh $(OUT)/demonstration-capture.pcapng

fuzz: ## run every fuzz target go test -list finds for FUZZTIME (default 1m; FUZZ_JOBS=2: two at a time), keep corpora in testdata/fuzz
	FUZZTIME=$(FUZZTIME) FUZZ_JOBS=$(FUZZ_JOBS) ./scripts/fuzz.sh

BENCH_ROUNDS ?= 7
BENCH_ONLY   ?=
BENCH_ARGS   ?=
BENCH_MICRO  := ./internal/tlsflags ./internal/clienthello ./internal/policy

bench: build ## server CPU per handshake vs stock crypto/tls, throughput, the gateway vs nginx and Caddy (CPU, and h2load's saturation and latency), microbenchmarks; writes OUT/bench.* (OUT=bin/assets; OUT=assets updates the committed ones; BENCH_ONLY=handshake, gateway, load, shared, memory or forward runs one part)
	$(GO) build -o $(BIN)/bench ./tools/bench
	@if command -v taskset >/dev/null && [ "$$(nproc)" -ge 2 ]; then \
		echo "taskset -c 0 $(BIN)/bench -server-cpu 1 $(if $(BENCH_ONLY),-only $(BENCH_ONLY) )..."; \
		taskset -c 0 $(BIN)/bench -bin $(BIN) -out $(OUT) -rounds $(BENCH_ROUNDS) -server-cpu 1 $(if $(BENCH_ONLY),-only $(BENCH_ONLY)) $(BENCH_ARGS); \
	else $(BIN)/bench -bin $(BIN) -out $(OUT) -rounds $(BENCH_ROUNDS) $(if $(BENCH_ONLY),-only $(BENCH_ONLY)) $(BENCH_ARGS); fi
	@# The status goes through a file: a plain pipe into tee would hide a
	@# failure of go test, and sh has no pipefail.
	@if [ -n "$(BENCH_ONLY)" ]; then echo "bench: BENCH_ONLY=$(BENCH_ONLY): microbenchmarks not run"; exit 0; fi; \
		echo "$(GO) test -run XXX -bench . -benchmem $(BENCH_MICRO) | tee $(OUT)/bench-micro.txt"; \
		{ $(GO) test -run XXX -bench . -benchmem $(BENCH_MICRO); echo $$? >$(OUT)/.bench-micro.status; } | tee $(OUT)/bench-micro.txt; \
		status=$$(cat $(OUT)/.bench-micro.status); rm -f $(OUT)/.bench-micro.status; \
		[ $$status -eq 0 ] && echo "bench: wrote $(OUT)/bench.md, $(OUT)/bench.svg, $(OUT)/bench-gateway.svg, $(OUT)/bench-load.*, $(OUT)/bench-latency.svg and $(OUT)/bench-micro.txt"; exit $$status

# The containers run as you (REQ_MTLS_USER, see docker-compose.yml): the keys
# that make gen-cert writes are yours, with mode 0600.
DOCKER_COMPOSE = REQ_MTLS_USER=$$(id -u):$$(id -g) docker compose

docker-build: ## build the server and client images
	docker compose --profile client build

docker-start-test-server: ## the server in Docker, on localhost:8775, with the testdata/certs certificates
	@test -f testdata/certs/server.crt || { echo "no certificates in testdata/certs: run 'make gen-cert' first" >&2; exit 1; }
	$(DOCKER_COMPOSE) up server

docker-client-request-local: ## flag 80 from the client container to the server container
	@test -f testdata/certs/client.crt || { echo "no certificates in testdata/certs: run 'make gen-cert' first" >&2; exit 1; }
	$(DOCKER_COMPOSE) run --rm --no-deps client -cert /testdata/certs/client.crt -key /testdata/certs/client.key \
		-server-cacert /testdata/certs/rootCA.crt -tlsflags 80 --connect https://localhost:8775/debug

docker-client-request: build ## flag 80 from the client container to the public demo (client certificate in testdata/demo, made when missing)
	@test -f $(DEMO_DIR)/client.crt || $(BIN)/gencert -ca-key $(DEMO_KEY) -client-only -force -dir $(DEMO_DIR)
	$(DOCKER_COMPOSE) run --rm --no-deps client -cert /testdata/demo/client.crt -key /testdata/demo/client.key \
		-tlsflags 80 --connect $(DEMO_URL)

docker-test: ## build the images and run the compose services for real, with Podman (as root; CI runs it)
	./scripts/docker-test.sh
