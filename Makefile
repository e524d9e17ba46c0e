# slotkv — build, run and test. `make run` and `make test` do all the set-up
# on a fresh machine: tools come from tools/go.mod (pinned), nothing else.
SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
GO    ?= go
BIN   := $(CURDIR)/bin
export GOFLAGS := -buildvcs=false

MODULES  := gen pkg services/storage services/router services/downloader services/migrator services/console cmd/slotkvctl cmd/slotkv-dataset e2e e2e/browser deployments/k8s
SERVICES := storage router
# The code generators, built only for make proto, verify-gen and lint; and
# grpcurl, which make run's examples use: a first make run builds no
# generator (buf alone takes minutes on an empty build cache).
GEN_TOOLS := buf protoc-gen-go protoc-gen-go-grpc protoc-gen-grpc-gateway protoc-gen-openapiv2
GEN_TOOL_PKGS := github.com/bufbuild/buf/cmd/buf google.golang.org/protobuf/cmd/protoc-gen-go \
	google.golang.org/grpc/cmd/protoc-gen-go-grpc \
	github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-grpc-gateway \
	github.com/grpc-ecosystem/grpc-gateway/v2/protoc-gen-openapiv2
TOOLS    := $(GEN_TOOLS) grpcurl
# Evaluated once (not at each use), so every target of one make run gets the
# same version even if the tree changes meanwhile.
ifndef VERSION
VERSION  := $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
endif
# The image tag of VERSION: [A-Za-z0-9_.-], at most 128 characters (the
# same rule as deployments/docker/images.sh).
IMAGE_TAG := $(shell printf '%s' '$(VERSION)' | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-128)
LDFLAGS  := -s -w -X github.com/slotkv/slotkv/pkg/version.Version=$(VERSION)
TEST_TIMEOUT ?= 14m

.PHONY: all build tools etcd proto verify-gen lint test test-unit test-e2e test-compose test-k8s test-robustness test-browser bench bench-migration run images clean tidy fmt certs

all: build

## tools: build the pinned code generators and grpcurl into bin/
tools: $(addprefix $(BIN)/,$(TOOLS))
$(addprefix $(BIN)/,$(GEN_TOOLS)): tools/go.mod tools/go.sum
	cd tools && GOWORK=off $(GO) build -o $(BIN)/ $(GEN_TOOL_PKGS)
$(BIN)/grpcurl: tools/go.mod tools/go.sum
	cd tools && GOWORK=off $(GO) build -o $(BIN)/ github.com/fullstorydev/grpcurl/cmd/grpcurl

## etcd: etcd's server at the version pinned in tools/go.mod
## (go.etcd.io/etcd/server/v3, main in tools/cmd/etcd), static, into bin/etcd.
## Built only for the targets that start it (make test; pkg/etcdtest) and
## the slotkv/etcd image of the compose stack (make images).
etcd: $(BIN)/etcd
$(BIN)/etcd: tools/go.mod tools/go.sum tools/cmd/etcd/main.go
	cd tools && GOWORK=off CGO_ENABLED=0 $(GO) build -ldflags '-s -w' -o $(BIN)/etcd ./cmd/etcd

## proto: regenerate gen/ from proto/ (byte-for-byte reproducible)
proto: $(addprefix $(BIN)/,$(GEN_TOOLS))
	rm -rf gen/slotkv gen/openapi
	$(BIN)/buf lint
	$(BIN)/buf generate

## verify-gen: fail when gen/ is not what `make proto` produces
verify-gen: proto
	@if [ -n "$$(git status --porcelain -- gen proto)" ]; then \
		echo "gen/ is stale: run 'make proto' and commit the result:"; \
		git status --porcelain -- gen proto; git diff --stat -- gen; exit 1; fi
	@echo "gen/ is current"

## build: every service binary and the CLI into bin/ (static, CGO_ENABLED=0)
build:
	@mkdir -p $(BIN)
	cd services/storage && CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/slotkv-storage ./cmd/slotkv-storage
	cd services/router && CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/slotkv-router ./cmd/slotkv-router
	cd services/downloader && CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/slotkv-downloader ./cmd/slotkv-downloader
	cd services/migrator && CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/slotkv-migrator ./cmd/slotkv-migrator
	cd services/console && CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/slotkv-console ./cmd/slotkv-console
	cd cmd/slotkvctl && CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/slotkvctl .
	cd cmd/slotkv-dataset && CGO_ENABLED=0 $(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/slotkv-dataset .

## images: one image per service plus slotkv-tools (slotkvctl, slotkv-dataset)
## and slotkv/etcd (bin/etcd, the compose stack's etcd members),
## FROM scratch with this host's CA bundle, tagged slotkv/NAME:dev and
## slotkv/NAME:$(VERSION); nothing is pulled. Staged under build/images/.
images: build $(BIN)/etcd
	DOCKER_BUILDKIT=0 SLOTKV_BIN=$(BIN) VERSION=$(VERSION) ./deployments/docker/images.sh

## lint: buf lint, go vet and gofmt over every module
lint: tools
	$(BIN)/buf lint
	@for m in $(MODULES); do (cd $$m && $(GO) vet ./...) || exit 1; done
	@out=$$(gofmt -l $(MODULES)); if [ -n "$$out" ]; then echo "not gofmt-formatted:"; echo "$$out"; exit 1; fi

## test: unit, integration and end-to-end tests of every module (race detector on)
test: build $(BIN)/etcd
	@command -v redis-cli >/dev/null && command -v zsh >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-tools zsh >/dev/null) || echo "redis-cli or zsh not installed (apt-get install redis-tools zsh): the redis-cli and zsh completion tests will skip"
	SLOTKV_BIN=$(BIN) SLOTKV_REQUIRE_ETCD=1 $(GO) test -race -timeout $(TEST_TIMEOUT) $(addsuffix /...,$(addprefix ./,$(MODULES)))

## fuzz: run every fuzz target (func Fuzz* in a *_test.go of any module) for
## FUZZTIME each, one at a time: -fuzz takes a single target per package.
## Their seed corpora (testdata/fuzz/) already run as tests in `make test`.
## A target that fails with no failing input written is not a finding: on a
## busy machine Go's coordinator races the -fuzztime deadline
## (golang/go#51484, "context deadline exceeded") or the go command dies
## with nothing printed. It runs once more, and a second failure fails;
## a finding writes its input to testdata/fuzz/ and fails at once. (The
## recipe's shell runs with -e: the exit status is taken with `&& ... ||`,
## or a failing run would end the recipe before the retry.)
FUZZTIME ?= 30s
.PHONY: fuzz
fuzz: build
	@for m in $(MODULES); do \
		for d in $$(cd $$m && grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r -n1 dirname | sort -u); do \
			for f in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$m/$$d/*_test.go); do \
				echo "--- fuzz $$m/$${d#./} $$f ($(FUZZTIME))"; \
				out=$$(cd $$m && SLOTKV_BIN=$(BIN) $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$d 2>&1) && rc=0 || rc=$$?; echo "$$out"; \
				if [ $$rc -ne 0 ]; then \
					echo "--- $$f: exit status $$rc"; \
					if echo "$$out" | grep -q 'Failing input written'; then exit 1; fi; \
					echo "--- $$f: failed with no failing input written (golang/go#51484 or the go command killed); once more"; \
					(cd $$m && SLOTKV_BIN=$(BIN) $(GO) test -run '^$$' -fuzz "^$$f\$$" -fuzztime $(FUZZTIME) $$d) || { echo "--- $$f: failed twice"; exit 1; }; \
				fi; \
			done; \
		done; \
	done

## test-e2e: only the process-level end-to-end tests
test-e2e: build
	SLOTKV_BIN=$(BIN) $(GO) test -race -timeout $(TEST_TIMEOUT) ./e2e/...

## test-robustness: the robustness suite: client histories through the
## router checked for linearizability (porcupine) while nodes, the migrator
## and the router are killed in every phase, streams cut and bulk loads run;
## prints ops, ambiguous, failed and linearizable per scenario. Violations
## leave porcupine's visualization in .data/robustness/.
test-robustness: build
	@mkdir -p .data/robustness && rm -f .data/robustness/summary.txt
	$(GO) test -timeout 5m ./e2e/robustness/
	SLOTKV_ROBUSTNESS=1 SLOTKV_BIN=$(BIN) $(GO) test -count=1 -timeout 25m -run '^TestRobustness$$' ./e2e/ || { cat .data/robustness/summary.txt 2>/dev/null; exit 1; }
	@cat .data/robustness/summary.txt

## test-browser: the web console in a real Chromium (chromedp, e2e/browser)
## against a real local stack of processes: login, the cluster page, a
## migration started from the form and watched to its end, a bad range,
## a bulk load, the traffic charts. Installs Debian's chromium when it is
## missing. Screenshots of every page land in .data/screenshots/.
test-browser: build
	command -v chromium >/dev/null || (apt-get update && apt-get install -y chromium)
	@mkdir -p .data/screenshots
	SLOTKV_BROWSER=1 SLOTKV_BIN=$(BIN) $(GO) test -count=1 -timeout 10m -run '^TestConsoleInChromium$$' -v ./e2e/browser/

## test-compose: the container stack (slotkv's OTLP receiver in Jaeger's
## place) under a project of its own, checked through its published ports by
## e2e/compose, then removed with its volumes; TLS=1 runs the stack on mutual
## TLS (deployments/compose/tls.yml)
## The images of this version (not :dev, which any other build may retag
## meanwhile).
test-compose: images $(BIN)/grpcurl
	cd e2e && CGO_ENABLED=0 $(GO) build -o $(BIN)/slotkv-otlpsink ./cmd/otlpsink
	DOCKER_BUILDKIT=0 SLOTKV_BIN=$(BIN) VERSION=$(VERSION) ./deployments/docker/images.sh slotkv-otlpsink slotkv-otlpsink slotkv-otlpsink
	SLOTKV_BIN=$(BIN) SLOTKV_IMAGE_TAG=$(IMAGE_TAG) SLOTKV_COMPOSE_TLS=$(TLS) ./deployments/compose/test.sh

## test-k8s: deployments/k8s's base run as Docker containers, each as its
## manifest configures it (env, args, probes, read-only root as 65532),
## with the images of this version: etcd's static cluster, every probe,
## slotkvctl bootstrap through etcd, a put and get through the router
test-k8s: images
	SLOTKV_K8S_DOCKER=1 SLOTKV_IMAGE_TAG=$(IMAGE_TAG) $(GO) test -count=1 -timeout 10m -run '^TestDockerPods$$' -v ./deployments/k8s/

## bench: benchmarks with figures and ratios against a baseline from the same run
bench: build
	SLOTKV_BIN=$(BIN) $(GO) test -run '^$$' -bench 'SingleKey|SlowReplica' -benchtime 3s ./e2e/ \
	| $(GO) run ./e2e/cmd/benchratio \
		'router get / storage get=SingleKey/router-get:SingleKey/storage-get' \
		'router put / storage put=SingleKey/router-put:SingleKey/storage-put' \
		'reads with a slow replica: hedged / unhedged=SlowReplicaReads/hedged:SlowReplicaReads/unhedged'
	SLOTKV_BIN=$(BIN) $(GO) test -run '^$$' -bench BulkLoad -benchtime 1x -timeout 30m ./e2e/ \
	| $(GO) run ./e2e/cmd/benchratio \
		'bulk load end to end / raw Badger write=BulkLoad@MB/s-end-to-end:BulkLoad@MB/s-raw-badger' \
		'bulk load ingest / raw Badger write=BulkLoad@MB/s-ingest:BulkLoad@MB/s-raw-badger' \
		'download+verify / raw Badger write=BulkLoad@MB/s-download+verify:BulkLoad@MB/s-raw-badger'
	cd services/storage && $(GO) test -run '^$$' -bench CleanupWriteStall -benchtime 1x ./internal/store/ \
	| $(GO) run ../../e2e/cmd/benchratio \
		'worst write during cleanup: batched delete / DropPrefix=CleanupWriteStall/batched-delete:CleanupWriteStall/drop-prefix'
	cd services/router && $(GO) test -run '^$$' -bench . -benchtime 2s . \
	| $(GO) run ../../e2e/cmd/benchratio \
		'multi-get of 100 keys / 100 sequential gets=MultiGet100:SequentialGet100' \
		'router get, every request traced and exported / untraced=Tracing/traced:Tracing/untraced'
	cd services/storage && $(GO) test -run '^$$' -bench . -benchtime 2s . \
	| $(GO) run ../../e2e/cmd/benchratio \
		'storage get: gRPC / direct Badger=Get/grpc:Get/direct' \
		'storage put: gRPC / direct Badger=Put/grpc:Put/direct' \
		'storage ingest stream / raw Badger write=Ingest:RawBadgerWrite'
	cd pkg && $(GO) test -run '^$$' -bench 'ParallelOverhead|DirectCall|SelectiveCall' -benchmem ./fanout/ \
	| $(GO) run ../e2e/cmd/benchratio \
		'parallel call, 1 sub / direct call=ParallelOverhead/1sub:DirectCall' \
		'parallel call, 8 subs / direct call=ParallelOverhead/8subs:DirectCall'
	$(MAKE) --no-print-directory bench-migration
	$(MAKE) --no-print-directory bench-redis

## bench-redis: redis-benchmark -t set,get,incr,mset -P 16 -c 50 -n 200000
## against the router (proxy mode), the storage nodes (--cluster) and a
## redis-server started for the comparison, in one run: requests/s and the
## ratios to redis-server. Installs Debian's redis-tools and redis-server
## when missing. REDIS_BENCH_N changes -n.
.PHONY: bench-redis
bench-redis: build
	SLOTKV_BIN=$(BIN) ./deployments/local/redis-bench.sh

## bench-migration: slot-range migration at scale, real processes: 1,000,000
## keys x 1 KiB on 3 storage nodes, slots 0-5460 moved at each P of
## SLOTKV_BENCH_P (default 1,2,4), each next to the raw pipeline
## (e2e/cmd/rawpipe) at the same P, then the hand-off write pause over 100
## hand-offs under 5,000 puts/s. SLOTKV_BENCH_KEYS, SLOTKV_BENCH_ROUNDS, SLOTKV_BENCH_HANDOFFS,
## SLOTKV_BENCH_WRITES_PER_SEC and SLOTKV_BENCH_PROFILE_DIR (CPU, mutex and
## block profiles of the largest P) are in e2e/bench_migration_test.go.
bench-migration: build
	cd e2e && CGO_ENABLED=0 $(GO) build -o $(BIN)/rawpipe ./cmd/rawpipe
	ps="$${SLOTKV_BENCH_P:-1,2,4}"; first="$${ps%%,*}"; specs=(); \
	for p in $${ps//,/ }; do \
		specs+=("migration P$$p whole job / raw pipeline=MigrationScaling/p$$p-slotkv@MB/s-job:MigrationScaling/p$$p-raw@MB/s-job" \
			"migration P$$p to hand-off / raw pipeline=MigrationScaling/p$$p-slotkv@MB/s-handoff:MigrationScaling/p$$p-raw@MB/s-job" \
			"migration P$$p CPU per GB / raw pipeline=MigrationScaling/p$$p-slotkv@cpu-s/GB:MigrationScaling/p$$p-raw@cpu-s/GB" \
			"migration P$$p CPU per GB, settled / raw=MigrationScaling/p$$p-slotkv@cpu-s/GB-settled:MigrationScaling/p$$p-raw@cpu-s/GB-settled"); \
		if [ "$$p" != "$$first" ]; then \
			specs+=("migration P$$p / P$$first whole job=MigrationScaling/p$$p-slotkv@MB/s-job:MigrationScaling/p$$first-slotkv@MB/s-job" \
				"raw pipeline P$$p / P$$first=MigrationScaling/p$$p-raw@MB/s-job:MigrationScaling/p$$first-raw@MB/s-job"); \
		fi; \
	done; \
	SLOTKV_BIN=$(BIN) $(GO) test -run '^$$' -bench MigrationScaling -benchtime 1x -timeout 60m ./e2e/ \
	| $(GO) run ./e2e/cmd/benchratio "$${specs[@]}"

## run: etcd, 3 storage nodes, router, migrator, downloader, console on loopback, data under ./.data/, Ctrl-C stops all;
## `make run TLS=1` runs every service on mutual TLS with the certificates of
## `make certs` (made on the first such run)
run: build $(BIN)/grpcurl $(BIN)/etcd
	SLOTKV_BIN=$(BIN) SLOTKV_RUN_TLS=$(TLS) ./deployments/local/run.sh

## certs: a development CA, a certificate for the services (SANs 127.0.0.1,
## ::1, localhost and the compose service names) and a client certificate,
## made with Go's crypto (slotkvctl dev-certs), under .data/certs (git-ignored)
CERTS ?= $(CURDIR)/.data/certs
certs:
	cd cmd/slotkvctl && $(GO) run . dev-certs --out $(CERTS)

## tidy: go mod tidy in every module
tidy:
	@for m in $(MODULES) tools; do (cd $$m && GOWORK=off $(GO) mod tidy) || exit 1; done

fmt:
	gofmt -w $(MODULES)

clean:
	rm -rf $(BIN) build
