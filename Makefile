# rtmanager — build, test and benchmark entry points. `make help` lists them.

GO        ?= go
SQLC      := $(GO) tool -modfile=tools.mod sqlc
STATICCHECK := $(GO) tool -modfile=tools.mod staticcheck
VERSION   ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X github.com/galaxy/rtmanager/agent/cli.Version=$(VERSION)
TEST_FLAGS ?= -race -count=1 -timeout 25m
BENCH     ?= .
BENCHTIME ?= 2s

.PHONY: help build image generate check-generated vet test test-disruptive test-docker-current fuzz bench bench-fleet bench-river demo clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-20s %s\n", $$1, $$2}'

build: ## build bin/rtmanager
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/rtmanager ./agent

image: ## build the agent's container image (rtmanager:latest) from scratch
	rm -rf bin/image && mkdir -p bin/image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/image/rtmanager ./agent
	cp deploy/container/Dockerfile bin/image/
	docker build -t rtmanager:$(VERSION) -t rtmanager:latest bin/image

generate: ## regenerate the sqlc code from queries/ and migrations/
	$(SQLC) generate

check-generated: ## fail when the committed sqlc code is stale
	@$(SQLC) diff || { echo "generated code is stale: run 'make generate' and commit the result" >&2; exit 1; }

# bench/queue is a module of its own (River stays out of ours): ./... in
# the root does not reach it, so vet and test name it.
BENCH_QUEUE := bench/queue

vet: ## go vet and staticcheck (also of the bench/queue module)
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(GO) -C $(BENCH_QUEUE) vet ./...
	$(GO) -C $(BENCH_QUEUE) tool -modfile=../../tools.mod staticcheck ./...

test: vet check-generated ## vet, generated-code check, and all tests with the race detector
	$(GO) test $(TEST_FLAGS) ./...
	$(GO) -C $(BENCH_QUEUE) test $(TEST_FLAGS) ./...
	@if [ -n "$$CI" ]; then $(MAKE) --no-print-directory test-disruptive; fi

test-disruptive: ## tests that restart the dockerd behind DOCKER_HOST (make test runs them under CI only)
	RTM_TEST_RESTART_DOCKERD=1 $(GO) test $(TEST_FLAGS) -p 1 -run '^(TestDaemonRestart|TestDockerdRestart)$$' ./agent/watcher/ ./e2e/faults/

# The packages whose tests talk to Docker, run again against a current
# Docker Engine; those that build, import or pull images run once more with
# its containerd image store.
DOCKER_CURRENT    ?= scripts/docker-current.sh
DOCKER_TEST_PKGS  := ./agent/engine/ ./agent/executor/ ./agent/watcher/ ./agent/reconcile/ ./agent/sweeper/ \
	./agent/app/ ./agent/cli/ ./internal/engineimage/ ./internal/testutil/dockerd/ ./deploy/ ./e2e/...
IMAGE_TEST_PKGS   := ./agent/engine/ ./internal/engineimage/ ./agent/executor/ ./deploy/

test-docker-current: ## the Docker tests (restarts included) against a current Docker beside the system's (root; CI runs it)
	host=$$(RTM_DOCKER_CURRENT_IMAGE_STORE=containerd $(DOCKER_CURRENT)) && \
		DOCKER_HOST=$$host $(GO) test $(TEST_FLAGS) $(IMAGE_TEST_PKGS)
	host=$$($(DOCKER_CURRENT)) && \
		DOCKER_HOST=$$host $(GO) test $(TEST_FLAGS) $(DOCKER_TEST_PKGS) && \
		DOCKER_HOST=$$host $(MAKE) --no-print-directory test-disruptive

# Counts, not durations: with a duration Go's fuzzer can fail with
# "context deadline exceeded" when the time runs out in the middle of an
# input on a loaded machine. About 15 s each here.
FUZZ_DECODE ?= 300000x
FUZZ_MAP    ?= 120000x
FUZZ_CONTRACT ?= 40000x

fuzz: ## run the job-payload, contract and event-mapping fuzzers for a bounded number of inputs (CI runs it after make test)
	$(GO) test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZ_DECODE) ./internal/domain/job/
	$(GO) test -run '^$$' -fuzz '^FuzzPayload$$' -fuzztime $(FUZZ_CONTRACT) ./contract/
	$(GO) test -run '^$$' -fuzz '^FuzzMap$$' -fuzztime $(FUZZ_MAP) ./agent/watcher/

bench: ## run the benchmarks and print their figures as one table, then the fleet simulation and the queue beside River
	$(GO) test -run '^$$' -bench '$(BENCH)' -benchtime $(BENCHTIME) -benchmem ./... | tee bench.out | awk -f scripts/benchtable.awk
	$(MAKE) --no-print-directory bench-fleet
	$(MAKE) --no-print-directory bench-river

FLEET_HOSTS ?= 1,100,1000,10000
FLEET_FLAGS ?=
bench-fleet: ## simulate a fleet on one PostgreSQL (idle cost, pickup latency, throughput) at FLEET_HOSTS hosts
	$(GO) run ./internal/loadsim/cmd/loadsim -hosts $(FLEET_HOSTS) $(FLEET_FLAGS) | tee bench-fleet.out

RIVER_FLAGS ?=
bench-river: ## our queue and River side by side on one throwaway PostgreSQL, alternating rounds (RIVER_FLAGS: see -help); writes bench-river.out
	$(GO) -C $(BENCH_QUEUE) run ./cmd/queuebench -out $(CURDIR)/bench-river.out $(RIVER_FLAGS)

demo: build ## start `rtmanager dev` and play the Game Master against it: start, kill, stop, remove, change image
	bin/rtmanager demo

clean: ## remove build output
	rm -rf bin bench.out bench-fleet.out bench-river.out
