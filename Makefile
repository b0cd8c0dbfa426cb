# Every module also builds and tests alone (GOWORK=off), so targets loop over
# the modules; go.work ties them together for editors and `make build`.
MODULES      := internal backend seeder dispatcher bench e2e
UNIT_MODULES := internal backend seeder dispatcher bench
PROGRAMS     := backend seeder dispatcher
# `docker compose` (v2 plugin) where installed, else docker-compose (v1).
COMPOSE      ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# make fuzz runs each fuzz target this long; make test runs it too, so CI
# fuzzes every run, for a bounded time.
FUZZTIME     ?= 10s
# make bench: measured seconds per contestant and round, the slices they
# take turns in, rounds, connections; which groups and peers run (about
# 3 minutes with all peers installed). A quick look at the proxy alone:
# make bench BENCH_FLAGS="-modes proxy -rounds 1"
BENCH_FLAGS  ?= -duration 6s -slice 2s -rounds 3 -conns 64 -modes redirect,proxy -peers auto
E2E_TIMEOUT  ?= 45m

.PHONY: all build run down test unit e2e lint fuzz bench gobench tidy clean

all: lint build test

## build: compile the three programs into bin/
build:
	@mkdir -p bin
	@for p in $(PROGRAMS); do echo "go build -o bin/$$p ./$$p"; go build -o bin/$$p ./$$p || exit 1; done

## run: build the images and start the tutorial's stack (Ctrl-C stops it)
run:
	$(COMPOSE) up --build

## down: remove the stack's containers and network
down:
	$(COMPOSE) down --remove-orphans

## test: lint, the unit tests of every module (real redis-server), each fuzz
## target for FUZZTIME, then the e2e tests
test: lint unit fuzz e2e

## unit: each module's tests on its own; needs redis-server on PATH
unit:
	@for m in $(UNIT_MODULES); do echo "==> unit tests: $$m"; (cd $$m && GOWORK=off go test -count=1 ./...) || exit 1; done

## e2e: build the real images and drive the whole stack from outside; needs Docker
e2e:
	@echo "==> e2e tests (builds the images; the first run takes a few minutes)"
	cd e2e && GOWORK=off go test -count=1 -timeout $(E2E_TIMEOUT) -v ./...

## lint: gofmt and go vet over every module
lint:
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do echo "==> go vet: $$m"; (cd $$m && GOWORK=off go vet ./...) || exit 1; done

## fuzz: run each fuzz target for FUZZTIME
fuzz:
	@echo "==> fuzz: each target for $(FUZZTIME)"
	cd internal && GOWORK=off go test -run '^$$' -fuzz '^FuzzParseBackend$$' -fuzztime $(FUZZTIME) ./rotation
	cd dispatcher && GOWORK=off go test -run '^$$' -fuzz '^FuzzTarget$$' -fuzztime $(FUZZTIME) .

## bench: redis-server, three backends, the dispatchers (ROTATION=redis,
## ROTATION=local, MODE=proxy) and, where installed, HAProxy, nginx and Caddy
## as local processes, under wrk (or a Go load generator), taking turns every
## 2 s slice; see docs/peers.md
bench:
	cd bench && GOWORK=off go run . $(BENCH_FLAGS)

## gobench: the Go benchmarks of the hot path (testing.B), real redis-server
gobench:
	cd internal && GOWORK=off go test -run '^$$' -bench . -benchtime 2s ./rotation
	cd dispatcher && GOWORK=off go test -run '^$$' -bench . -benchtime 2s .

## tidy: go mod tidy in every module
tidy:
	@for m in $(MODULES); do (cd $$m && GOWORK=off go mod tidy) || exit 1; done

clean:
	rm -rf bin
