# mesh-operator Makefile. `make help` lists the targets.

SHELL := /usr/bin/env bash -o pipefail
.SHELLFLAGS := -ec

K8S_VERSION ?= v1.37.2
BIN ?= $(CURDIR)/bin
CONTROLLER_GEN ?= $(BIN)/controller-gen
HELM ?= $(BIN)/helm
KUBEBUILDER_ASSETS ?= $(BIN)/k8s/$(K8S_VERSION)
export KUBEBUILDER_ASSETS

# Packages whose tests run with the race detector; envtest suites run
# without it (the API server dominates their time, not our code).
RACE_PKGS = ./engine/... ./node/... ./api/... ./cmd/... ./client/... ./hack/... ./test/nodes/... ./controllers/resources/... ./controllers/status/...
ENVTEST_PKGS = ./controllers ./test/install/...

.DEFAULT_GOAL := help

##@ General

.PHONY: help
help: ## List the targets with one line each.
	@awk 'BEGIN {FS = ":.*##"; printf "Usage: make <target>\n"} \
	  /^[a-zA-Z0-9_-]+:.*?##/ { printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2 } \
	  /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) }' $(MAKEFILE_LIST)

##@ Development

.PHONY: generate
generate: $(CONTROLLER_GEN) ## Generate deepcopy code for the API types.
	$(CONTROLLER_GEN) object:headerFile=hack/boilerplate.go.txt paths=./api/...

.PHONY: manifests
manifests: $(CONTROLLER_GEN) ## Generate the CRD and RBAC manifests into config/ and the Helm chart.
	$(CONTROLLER_GEN) crd rbac:roleName=mesh-operator-manager \
	  paths=./api/... paths=./controllers/... \
	  output:crd:artifacts:config=config/crd/bases output:rbac:artifacts:config=config/rbac
	mkdir -p charts/mesh-operator/files/crds
	cp config/crd/bases/*.yaml charts/mesh-operator/files/crds/
	cp config/rbac/role.yaml charts/mesh-operator/files/role.yaml

.PHONY: fmt
fmt: ## Format the Go code.
	gofmt -w $$(git ls-files '*.go')

.PHONY: vet
vet: ## Run go vet.
	go vet ./...

.PHONY: lint
lint: ## Check formatting, vet, and that engine/ imports no Kubernetes package.
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...
	hack/check-layers.sh

.PHONY: test
test: tools lint helm-lint ## Run every test: unit and process tests (-race), adapters against real servers, envtest, end-to-end.
	hack/test-deps.sh
	go test -race -count=1 $(RACE_PKGS)
	go test -count=1 -v $(ENVTEST_PKGS) -ginkgo.v
	$(MAKE) test-e2e

.PHONY: verify-generated
verify-generated: generate manifests ## Fail when generated files are not committed.
	@git diff --exit-code -- api config || (echo "generated files are stale: run make generate manifests"; exit 1)

##@ Build

.PHONY: build
build: ## Build the manager, mesh-node and meshctl binaries into bin/.
	go build -o $(BIN)/manager ./cmd/manager
	go build -o $(BIN)/mesh-node ./cmd/mesh-node
	go build -o $(BIN)/meshctl ./cmd/meshctl

.PHONY: bench-bus
bench-bus: ## Side-by-side ingest benchmark: our bus vs JetStream vs Redis streams (prints ratios).
	hack/test-deps.sh
	go run ./cmd/bench-bus

.PHONY: run
run: manifests ## Run the operator against the cluster in KUBECONFIG (installs the CRD first).
	kubectl apply --server-side -f config/crd/bases
	go run ./cmd/manager --leader-elect=false

##@ Tools

.PHONY: tools
tools: k8s-binaries $(CONTROLLER_GEN) $(HELM) ## Build every tool the tests need (first time about 12 minutes).

.PHONY: k8s-binaries
k8s-binaries: ## Build etcd, kube-apiserver and kube-controller-manager from source into bin/k8s/.
	hack/build-k8s.sh $(BIN)

$(CONTROLLER_GEN) $(HELM):
	hack/build-tools.sh $(BIN)

##@ Packaging

VERSION ?= v0.1.0
IMAGE_REGISTRY ?= ghcr.io/purplerain
IMAGES ?= $(BIN)/images
CHART ?= charts/mesh-operator
CA_BUNDLE ?= $(wildcard /etc/ssl/certs/ca-certificates.crt)

.PHONY: image
image: ## Build the mesh-operator and mesh-node OCI image tarballs into bin/images (no Docker needed).
	mkdir -p $(IMAGES) $(BIN)/static
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o $(BIN)/static/manager ./cmd/manager
	CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o $(BIN)/static/mesh-node ./cmd/mesh-node
	go run ./cmd/image-builder --tag $(IMAGE_REGISTRY)/mesh-operator:$(VERSION) $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE)) \
	  --file $(BIN)/static/manager:/manager --entrypoint /manager --output $(IMAGES)/mesh-operator-$(VERSION).tar
	go run ./cmd/image-builder --tag $(IMAGE_REGISTRY)/mesh-node:$(VERSION) $(if $(CA_BUNDLE),--ca-bundle $(CA_BUNDLE)) \
	  --file $(BIN)/static/mesh-node:/usr/local/bin/mesh-node --entrypoint /usr/local/bin/mesh-node --output $(IMAGES)/mesh-node-$(VERSION).tar

.PHONY: chart-sync
chart-sync: manifests ## Copy the generated CRD and RBAC role into the Helm chart.
	mkdir -p $(CHART)/files/crds
	cp config/crd/bases/*.yaml $(CHART)/files/crds/
	cp config/rbac/role.yaml $(CHART)/files/role.yaml

.PHONY: helm-lint
helm-lint: $(HELM) ## Lint the Helm chart (strict).
	$(HELM) lint --strict $(CHART)

.PHONY: test-install
test-install: tools ## Run the install tests: helm template goldens, helm install/upgrade and kubectl apply -k on envtest.
	go test -count=1 -v ./test/install/... -ginkgo.v

.PHONY: docs
docs: ## Regenerate docs/reference.md from the API types' comments.
	go run ./hack/refdocs -o docs/reference.md

##@ Local cluster

.PHONY: demo
demo: k8s-binaries ## Run the operator and the sample MeshCluster on a local cluster (pods as processes), ingest events with meshctl.
	hack/demo.sh up

.PHONY: demo-down
demo-down: ## Stop the local cluster, the operator and every pod process.
	hack/demo.sh down

.PHONY: test-e2e
test-e2e: k8s-binaries ## Run the end-to-end suite on a fresh local cluster with the operator (logs in tmp/e2e/).
	go test -count=1 -timeout=15m -v ./test/e2e/... -ginkgo.v -ginkgo.timeout=12m
