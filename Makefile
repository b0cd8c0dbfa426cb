# Every module also builds and tests alone (GOWORK=off), so targets loop over
# the modules; go.work ties them together for editors and `make build`.
# The check of the Kubernetes manifests is a module of its own, so that its
# Kubernetes and Kustomize dependencies stay out of the programs' modules;
# make k8s-check runs its tests (so make unit need not).
K8S_CHECK    := deploy/kubernetes/check
MODULES      := internal backend seeder dispatcher bench lab e2e $(K8S_CHECK)
UNIT_MODULES := internal backend seeder dispatcher bench lab
PROGRAMS     := backend seeder dispatcher
# `docker compose` (v2 plugin) where installed, else docker-compose (v1).
COMPOSE      ?= $(shell docker compose version >/dev/null 2>&1 && echo "docker compose" || echo docker-compose)
# make fuzz runs each fuzz target this long; make test runs it too, so CI
# fuzzes every run, for a bounded time.
FUZZTIME     ?= 10s
# make bench: measured seconds per contestant and round, the slices they
# take turns in, rounds, connections; which groups and peers run (about
# 3 minutes with all peers installed). A quick look at the proxy alone:
# make bench BENCH_FLAGS="-modes proxy -rounds 1"; what a 10,000-entry list
# costs least-conn and round robin (issue 21): make bench BENCH_FLAGS="-modes long"
BENCH_FLAGS  ?= -duration 6s -slice 2s -rounds 3 -conns 64 -modes redirect,proxy -peers auto
E2E_TIMEOUT  ?= 45m
# Where make e2e keeps what the tests save (go test -artifacts), such as
# TestDashboard's screenshot; git ignores it.
E2E_OUT      ?= $(CURDIR)/out/e2e

# make unit RUN=TestSeed, make e2e RUN=TestDashboard: only the tests whose
# names match (go test -run).
RUN          ?=
# The link checker: a module of its own, outside the workspace.
LINKCHECK    := .ci/linkcheck

.PHONY: all help build up logs run down standins test unit k8s-check e2e lint links fuzz bench lab lab-live gobench tidy clean

## all: lint, build, then every test (make test)
all: lint build test

## help: list the targets and what each does
help:
	@awk '/^## [a-z][a-z0-9-]*:/ { sub(/^## /, ""); i = index($$0, ":"); t = substr($$0, 1, i - 1); \
	        d[t] = substr($$0, i + 2); last = t; next } \
	      /^## / && last != "" { sub(/^## /, ""); d[last] = d[last] "\n" sprintf("%-10s  ", "") $$0; next } \
	      { last = "" } \
	      /^[a-z][a-z0-9-]*:/ && !/:=/ { t = $$0; sub(/:.*/, "", t); if (!(t in seen)) { seen[t] = 1; order[++n] = t } } \
	      END { for (k = 1; k <= n; k++) printf "%-10s  %s\n", order[k], (order[k] in d) ? d[order[k]] : "(no description)" }' $(firstword $(MAKEFILE_LIST))

## build: compile the three programs into bin/
build:
	@mkdir -p bin
	@for p in $(PROGRAMS); do echo "go build -o bin/$$p ./$$p"; go build -o bin/$$p ./$$p || exit 1; done

## up: build the images, start the tutorial's stack in the background and
## wait until every service is ready (COMPOSE_PROFILES=many: those too); where
## the base images cannot be pulled, build local stand-ins and try again
## (.ci/up.sh)
up:
	@COMPOSE="$(COMPOSE)" bash .ci/up.sh

## logs: follow the stack's logs (Ctrl-C stops following, not the stack)
logs:
	$(COMPOSE) logs -f

## run: build the images and start the stack in the foreground (Ctrl-C stops it)
run:
	$(COMPOSE) up --build

## down: stop the stack and remove its containers and network
down:
	$(COMPOSE) down --remove-orphans

## standins: on a machine that cannot pull images, build local stand-ins for
## the base images and write their names to .env, which compose reads
standins:
	bash .ci/standins.sh --env .env

## test: lint, the unit tests of every module (real redis-server), the
## check of the Kubernetes manifests, each fuzz target for FUZZTIME, then the
## e2e tests
test: lint unit k8s-check fuzz e2e

## unit: each module's tests on its own (RUN=name: only those); needs
## redis-server on PATH
unit:
	@for m in $(UNIT_MODULES); do echo "==> unit tests: $$m"; (cd $$m && GOWORK=off go test -count=1 $(if $(RUN),-run '$(RUN)') ./...) || exit 1; done

## k8s-check: render the Kubernetes manifests (deploy/kubernetes: the base and
## every overlay), decode them strictly, and check their variables, ports and
## selectors against the programs' own settings, offline (docs/kubernetes.md)
k8s-check:
	@echo "==> k8s-check: deploy/kubernetes"
	cd $(K8S_CHECK) && GOWORK=off go test -count=1 ./...

## e2e: build the real images and drive the whole stack from outside
## (RUN=name: only those; saved files go to out/e2e); needs Docker
e2e:
	@echo "==> e2e tests (builds the images; the first run takes a few minutes)"
	@mkdir -p $(E2E_OUT)
	cd e2e && GOWORK=off go test -count=1 -timeout $(E2E_TIMEOUT) $(if $(RUN),-run '$(RUN)') -artifacts -outputdir $(E2E_OUT) -v ./...

## lint: the link check, gofmt and go vet over every module, and a ## line
## for every target (make help)
lint: links
	@if $(MAKE) -s help | grep -q '(no description)'; then echo "targets without a ## line:"; $(MAKE) -s help | grep '(no description)'; exit 1; fi
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@for m in $(MODULES); do echo "==> go vet: $$m"; (cd $$m && GOWORK=off go vet ./...) || exit 1; done

## links: every relative link and #anchor in README.md, CONTRIBUTING.md and
## docs/ points to a file and heading that exist
links:
	@echo "==> links"
	@out=$$(gofmt -l $(LINKCHECK)); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	@cd $(LINKCHECK) && GOWORK=off go vet . && GOWORK=off go test -count=1 -run '^Test(Slug|HeadingAnchors|Links|Run)' . >/dev/null
	@cd $(LINKCHECK) && GOWORK=off go run . ../..

## fuzz: run each fuzz target for FUZZTIME
fuzz:
	@echo "==> fuzz: each target for $(FUZZTIME)"
	cd internal && GOWORK=off go test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./backend
	cd dispatcher && GOWORK=off go test -run '^$$' -fuzz '^FuzzTarget$$' -fuzztime $(FUZZTIME) .

## bench: redis-server, three backends, the dispatchers (ROTATION=redis,
## ROTATION=local, MODE=proxy) and, where installed, HAProxy, nginx and Caddy
## as local processes, under wrk (or a Go load generator), taking turns every
## 2 s slice; see docs/peers.md. BENCH_FLAGS="-modes long": least-conn and
## round robin on 3 entries and on 10,000 (docs/performance.md)
bench:
	cd bench && GOWORK=off go run . $(BENCH_FLAGS)

## lab: redis-server, a pool of backends and proxying dispatchers as local
## processes, under open-loop load; LAB_SCENARIO picks what it measures (slow,
## the default: one slow, small backend, every strategy; churn, herd, failure,
## retries; all); prints tables and writes LAB_OUT/<scenario>/report.json and
## charts (docs/lab.md)
lab:
	@mkdir -p bin
	cd lab && GOWORK=off go build -o ../bin/lab .
	bin/lab

## lab-live: the lab's console (lab serve): the same scenario live, as local
## processes (redis-server, three backends with CONTROL=1, two dispatchers);
## prints the URL of its page (LAB_ADDR, default 127.0.0.1:8099; docs/lab.md)
lab-live:
	@mkdir -p bin
	cd lab && GOWORK=off go build -o ../bin/lab .
	bin/lab serve

## gobench: the Go benchmarks of the hot path (testing.B), real redis-server
gobench:
	cd internal && GOWORK=off go test -run '^$$' -bench . -benchtime 2s ./store ./balance
	cd dispatcher && GOWORK=off go test -run '^$$' -bench . -benchtime 2s .

## tidy: go mod tidy in every module
tidy:
	@for m in $(MODULES); do (cd $$m && GOWORK=off go mod tidy) || exit 1; done

## clean: remove bin/
clean:
	rm -rf bin
