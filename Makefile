# image-prewarmer. `make help` lists the targets; `make test` is the one test command (CI runs it).

SHELL := /usr/bin/env bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := help

# The product version is the chart's appVersion: the image tag the chart deploys by default.
VERSION ?= $(shell sed -n 's/^appVersion: *"\{0,1\}\([^"]*\)"\{0,1\}$$/\1/p' charts/image-prewarmer/Chart.yaml)
COMMIT  ?= $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)
LDFLAGS := -s -w -X github.com/image-prewarmer/image-prewarmer/pkg/version.Version=$(VERSION) \
           -X github.com/image-prewarmer/image-prewarmer/pkg/version.Commit=$(COMMIT)

# Pinned tools are built once into this cache (outside the repository) by hack/tools/install.sh.
TOOLS_CACHE ?= $(or $(IMAGE_PREWARMER_CACHE),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/image-prewarmer)
TOOLS_BIN   := $(TOOLS_CACHE)/bin
export IMAGE_PREWARMER_CACHE := $(TOOLS_CACHE)
export PATH := $(TOOLS_BIN):$(PATH)

BIN := bin/prewarm-orchestrator

comma := ,
space := $(subst ,, )

.PHONY: help
help: ## List the targets.
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  %-14s %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.PHONY: build
build: ## Build the orchestrator binary into bin/.
	CGO_ENABLED=0 go build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/prewarm-orchestrator

# GO_FILES sets files to the tracked Go files, and fails (rather than leave gofmt reading stdin)
# outside a git checkout.
GO_FILES = files=$$(git ls-files '*.go') && [[ -n $$files ]] || { echo "needs a git checkout: git ls-files found no Go files" >&2; exit 1; }

.PHONY: tools
tools: ## Build the pinned cluster and chart tools into the cache (first time ~10 min).
	hack/tools/install.sh >/dev/null

.PHONY: fmt
fmt: ## Format the Go code.
	@$(GO_FILES); gofmt -w $$files

.PHONY: lint
lint: ## gofmt and go vet.
	@$(GO_FILES); out=$$(gofmt -l $$files); if [[ -n "$$out" ]]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	go vet ./...

.PHONY: unit
unit: ## Unit tests (no cluster), with the race detector.
	CGO_ENABLED=1 go test -race -count=1 ./pkg/... ./cmd/... ./hack/...

.PHONY: e2e
e2e: tools ## End-to-end tests against a local control plane (brought up and down by the tests).
	go test -count=1 -timeout 30m ./test/e2e/...

.PHONY: preflight
preflight: ## Check the host commands `make test` needs (before the long steps).
	@missing=(); for c in git gcc flock yamllint; do command -v $$c >/dev/null 2>&1 || missing+=($$c); done; \
	if [[ $${#missing[@]} -gt 0 ]]; then echo "preflight: missing $${missing[*]} (Debian: apt-get install -y git gcc util-linux yamllint; bash .ci/run installs them)" >&2; exit 1; fi
	@have=$$(go env GOVERSION); have=$${have#go}; \
	if [[ $$(printf '%s\n' 1.26.7 "$$have" | sort -V | head -n1) != 1.26.7 ]]; then \
	  if [[ $$(go env GOTOOLCHAIN) == local* ]]; then echo "preflight: Go $$have is older than the 1.26.7 the pinned tools need (GOTOOLCHAIN=local)" >&2; exit 1; fi; \
	  echo "preflight: Go $$have is older than 1.26.7: the pinned tools' builds will fetch go1.26.7 through the module proxy" >&2; \
	fi
	@for c in qemu-aarch64 skopeo; do command -v $$c >/dev/null 2>&1 || echo "preflight: $$c is missing: the image test checks less without it (fails under CI=true; Debian: apt-get install -y qemu-user skopeo)" >&2; done

.PHONY: test
test: preflight lint unit e2e chart-lint chart-test ## Everything CI runs: lint, unit, e2e, chart lint and install.

.PHONY: bench
bench: tools ## Measure release latency (event-driven) and run --once cost on the local cluster; writes docs/benchmarks.md (~15 min; not part of test).
	go run ./hack/bench -out docs/benchmarks.md

.PHONY: cluster-up
cluster-up: tools ## Start the local cluster (etcd, apiserver, controller-manager, scheduler, kwok) on 127.0.0.1.
	hack/cluster.sh up

.PHONY: cluster-down
cluster-down: ## Stop and delete the local cluster.
	hack/cluster.sh down

# The demo's orchestrator mode, as the chart's orchestrator.mode: cronjob or deployment.
MODE ?= cronjob

.PHONY: demo
demo: ## A local cluster where a 20-node notebook pool goes through a rolling OS upgrade, live (1-3 min once tools are built). MODE=deployment: event-driven.
	go run ./hack/demo -mode $(MODE) -ldflags '$(LDFLAGS)' up

.PHONY: demo-down
demo-down: ## Delete the demo's cluster and files.
	go run ./hack/demo down

.PHONY: chart-lint
chart-lint: ## Lint the chart: ct lint (helm lint + yamllint) for every ci values file, README values table, chart tests (alerting rules with promtool).
	@command -v yamllint >/dev/null 2>&1 || { echo "chart-lint: yamllint is not installed (ct lint needs it): apt-get install -y yamllint" >&2; exit 1; }
	hack/tools/install.sh helm ct promtool >/dev/null
	ct lint --config ct.yaml --all
	yamllint -c lintconf.yaml --strict values-examples ct.yaml lintconf.yaml
	go run ./hack/chart-readme -check
	go test -count=1 ./test/chart/...

.PHONY: chart-test
chart-test: ## Install the chart into a local kwok cluster: ct install (ci values + helm test) and every values-examples file.
	test/chart/ct-install.sh

.PHONY: chart-docs
chart-docs: ## Regenerate the values table of charts/image-prewarmer/README.md from values.yaml.
	go run ./hack/chart-readme

IMAGE_REPO ?= ghcr.io/image-prewarmer/prewarm-orchestrator
REVISION   ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)

# The image's platforms: the warmer pods copy the binary out of it onto every pool node, so it needs
# one for each architecture the pools run.
PLATFORMS ?= linux/amd64 linux/arm64

# Space- or comma-separated, as buildx takes them.
image_platforms = $(strip $(subst $(comma),$(space),$(PLATFORMS)))

.PHONY: image
image: ## Build the orchestrator image (PLATFORMS: linux/amd64 and linux/arm64) into dist/prewarm-orchestrator-<version>.tar, no Docker engine needed.
	@[[ -n "$(image_platforms)" ]] || { echo "image: PLATFORMS is empty; e.g. PLATFORMS=linux/amd64,linux/arm64" >&2; exit 2; }
	@for p in $(image_platforms); do \
	  echo "building $$p"; \
	  CGO_ENABLED=0 GOOS=$${p%/*} GOARCH=$${p#*/} go build -trimpath -ldflags '$(LDFLAGS)' \
	    -o dist/$${p%/*}-$${p#*/}/prewarm-orchestrator ./cmd/prewarm-orchestrator; \
	done
	go run ./hack/image -repository $(IMAGE_REPO) -version $(VERSION) -revision $(REVISION) \
	  -binary $(subst $(space),$(comma),$(foreach p,$(image_platforms),$(p)=dist/$(subst /,-,$(p))/prewarm-orchestrator)) \
	  -output dist/prewarm-orchestrator-$(VERSION).tar
