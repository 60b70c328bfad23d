# req-mtls: request mTLS client and server on the stock Go toolchain.
# `make` alone prints this help.

GO       ?= go
BIN      ?= bin
FUZZTIME ?= 1m

.DEFAULT_GOAL := help

.PHONY: help build test fuzz bench

help: ## print this help
	@grep -E '^[a-z0-9-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-22s %s\n", $$1, $$2}'

build: ## build the binaries into bin/
	$(GO) build -o $(BIN)/ ./cmd/...

test: ## run every test (unit, handshake, end to end)
	$(GO) vet ./...
	$(GO) test -count=1 ./...

fuzz: ## run each fuzz target for FUZZTIME (default 1m)
	$(GO) test -run XXX -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./internal/tlsflags
	$(GO) test -run XXX -fuzz '^FuzzConn$$' -fuzztime $(FUZZTIME) ./internal/clienthello
	$(GO) test -run XXX -fuzz '^FuzzSummarize$$' -fuzztime $(FUZZTIME) ./internal/clienthello

bench: ## run the Go microbenchmarks
	$(GO) test -run XXX -bench . -benchmem ./internal/...
