# kubeshard: make help lists the targets.
SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec
.DEFAULT_GOAL := help

ROOT := $(abspath .)
BIN := $(ROOT)/bin
K8S_BINS := $(BIN)/k8s
export KUBEBUILDER_ASSETS ?= $(K8S_BINS)

# Pinned tool versions. Tools are installed into bin/ with their version in
# the file name, so changing a version here installs the new one.
CONTROLLER_GEN_VERSION := v0.23.0
CONTROLLER_GEN := $(BIN)/controller-gen-$(CONTROLLER_GEN_VERSION)
GOLANGCI_LINT_VERSION := v2.15.0
GOLANGCI_LINT := $(BIN)/golangci-lint-$(GOLANGCI_LINT_VERSION)

IMG ?= kubeshard/largedata-operator:dev
# The library's packages whose RBAC markers every ring needs.
RING_PKGS := ./pkg/coordinator;./pkg/serving;./pkg/labeler;./pkg/sharding;./pkg/shardcache;./pkg/slotwebhook
GO_TEST_FLAGS ?= -count=1 -timeout 30m

##@ General

.PHONY: help
help: ## Show the targets.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
		/^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2 } \
		/^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code, CRDs, RBAC and webhook configuration.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...
	# CRDs of the project's APIs only (tests define kinds of their own), and
	# the example operator's webhook configuration from its markers.
	$(CONTROLLER_GEN) crd paths=./api/... output:crd:artifacts:config=deploy/base/crd
	$(CONTROLLER_GEN) webhook paths=./cmd/... output:webhook:artifacts:config=deploy/base/webhook
	# RBAC in two parts: what every kubeshard ring needs (a Role in the
	# ring's namespace), and what the example operator needs.
	$(CONTROLLER_GEN) rbac:roleName=kubeshard-ring paths="$(RING_PKGS)" output:rbac:artifacts:config=deploy/base/rbac/ring
	$(CONTROLLER_GEN) rbac:roleName=largedata-operator paths="./cmd/...;./pkg/largedata/..." output:rbac:artifacts:config=deploy/base/rbac/operator

.PHONY: verify
verify: lint ## Fail if generated files are stale, code is not gofmt'ed, go vet or the linters complain, or go.mod is untidy.
	@hack/verify.sh

.PHONY: lint
lint: $(GOLANGCI_LINT) ## Run the pinned golangci-lint with the linters .golangci.yml chooses.
	$(GOLANGCI_LINT) run ./...

.PHONY: build
build: ## Build the operator and the load test into bin/.
	go build -o $(BIN)/largedata-operator ./cmd/largedata-operator
	go build -o $(BIN)/loadtest ./loadtest

.PHONY: loadtest
loadtest: k8s-bins ## Run a load test on a local cluster (LOADTEST_FLAGS, see loadtest/README.md); reports in bin/loadtest/report.
	go run ./loadtest run $(LOADTEST_FLAGS)

# Packages whose tests need no control plane: fake clients, fake clocks.
UNIT_PKGS := ./api/... ./cmd/... ./internal/... ./pkg/... ./loadtest/...
# Packages whose tests start a control plane, operator processes, PostgreSQL or Prometheus
# (pkg/sharding's guide test runs here; -short skips it in UNIT_PKGS).
SYSTEM_PKGS := ./test/... ./loadtest/ ./pkg/sharding/

.PHONY: unit
unit: ## Run the unit tests with the race detector: no control plane, about three minutes.
	go test -race -short $(GO_TEST_FLAGS) $(UNIT_PKGS)

.PHONY: test
test: k8s-bins test-deps unit ## Run every test: unit (with -race), fuzzing briefly, integration on a real API server, the short end-to-end set.
	$(MAKE) --no-print-directory fuzz FUZZTIME=$(TEST_FUZZTIME)
	go test $(GO_TEST_FLAGS) $(SYSTEM_PKGS)

# Every parser of what kubeshard reads from outside, as package:FuzzTarget.
FUZZ_TARGETS := ./pkg/ring:FuzzParseRanges ./pkg/ring:FuzzShardSelector ./pkg/slotlabel:FuzzRead \
	./pkg/membership:FuzzTrackerObserve ./pkg/slotwebhook:FuzzHandle
FUZZTIME ?= 1m
# make test fuzzes each target for a count of inputs, not a duration: Go 1.26's
# fuzzing coordinator can fail a target with a bare "context deadline exceeded"
# when a duration ends while a worker is busy (golang/go#75804, fixed in 1.27),
# which a loaded CI machine hits. A count has no deadline to race.
TEST_FUZZTIME ?= 10000x

.PHONY: fuzz
fuzz: ## Fuzz every parser of outside input for FUZZTIME each (default 1m; make test runs TEST_FUZZTIME, 10000 inputs each).
	@for t in $(FUZZ_TARGETS); do \
		echo "go test -run '^$$' -fuzz '^$${t#*:}$$' -fuzztime $(FUZZTIME) $${t%%:*}"; \
		go test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) "$${t%%:*}" || exit 1; \
	done

.PHONY: test-deps
test-deps: ## Install what the tests need and Go cannot build (PostgreSQL, Prometheus), or say how.
	@hack/test-deps.sh

.PHONY: e2e
e2e: k8s-bins ## Run the full end-to-end set (faults, scaling under load); about 10 minutes. Grep FIGURES for the measurements.
	KUBESHARD_E2E=full go test $(GO_TEST_FLAGS) -v ./test/e2e/

.PHONY: e2e-shardselector
e2e-shardselector: k8s-bins ## The full end-to-end set with selectorMode ShardSelector (API servers with the gate ShardedListAndWatch).
	KUBESHARD_E2E=full KUBESHARD_E2E_SELECTOR_MODE=ShardSelector go test $(GO_TEST_FLAGS) -v ./test/e2e/

.PHONY: e2e-kine
e2e-kine: k8s-bins ## The short end-to-end set with kube-apiserver on kine over PostgreSQL instead of etcd.
	KUBESHARD_STORAGE=kine go test $(GO_TEST_FLAGS) -v ./test/e2e/

.PHONY: bench
bench: ## Run the benchmarks and print their tables (see BENCHMARKS.md).
	go run ./test/bench/ringbench
	go test -run '^$$' -bench . -benchmem ./pkg/...

.PHONY: demo
demo: k8s-bins test-deps ## Run the demo: a local cluster, 3 members on PostgreSQL, 20,000 objects, scale to 4 (Ctrl-C stops it).
	go run ./hack/demo

.PHONY: deploy-check
deploy-check: k8s-bins ## Build every overlay in deploy/ and check it on a real API server (server-side dry-run).
	go test -count=1 ./test/integration/deploy/

.PHONY: deploy
deploy: ## Install on the current cluster (deploy/default needs cert-manager and the Prometheus Operator).
	$(K8S_BINS)/kubectl apply --server-side -k deploy/base/crd
	$(K8S_BINS)/kubectl wait --for=condition=Established crd/shardrings.sharding.kubeshard.dev crd/largedata.data.kubeshard.dev
	$(K8S_BINS)/kubectl apply --server-side -k deploy/default

.PHONY: docker-build
docker-build: ## Build the operator image (needs a Docker engine).
	docker build -t $(IMG) .

##@ Tools

.PHONY: k8s-bins
k8s-bins: ## Build kube-apiserver, kube-controller-manager, kubectl, etcd and kine into bin/k8s (first time about 15 minutes).
	@hack/k8s-bins.sh

$(GOLANGCI_LINT):
	GOBIN=$(BIN) go install github.com/golangci/golangci-lint/v2/cmd/golangci-lint@$(GOLANGCI_LINT_VERSION)
	mv $(BIN)/golangci-lint $@

$(CONTROLLER_GEN):
	GOBIN=$(BIN) go install sigs.k8s.io/controller-tools/cmd/controller-gen@$(CONTROLLER_GEN_VERSION)
	mv $(BIN)/controller-gen $@
