# drover's build, test and lint entry points. `make test` is what CI runs.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build test unit e2e lint setup bench demo demo-stop quickstart quickstart-stop clean release

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/drover ./cmd/drover
	$(GO) build -trimpath -o bin/drover-lab ./e2e/cmd/drover-lab

setup:
	@bash scripts/setup.sh

# Everything CI runs: the package tests, then the end-to-end tests: the
# drover binary run as an agent against real nginx, Redis, PostgreSQL and
# systemd nodes (cmd/drover's multi-process tests, behind the e2e tag so
# that `make unit` stays quick), and the scenarios on a 3-node cluster
# (needs root: namespaces, mounts, cgroups). cmd/drover's tests run four
# at a time: their agents wait on LB checks and locks (about 45 s of CPU in
# 400 s), and the ones that measure zero loss or run systemd nodes are not
# marked parallel.
test: unit e2e

unit: setup
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

e2e: setup
	$(GO) vet -tags e2e ./cmd/drover/ ./e2e/
	$(GO) test -tags e2e -count=1 -timeout 20m -parallel 4 ./cmd/drover/
	$(GO) test -tags e2e -count=1 -timeout 30m -v ./e2e/

lint:
	$(GO) vet ./...
	$(GO) vet -tags e2e ./cmd/drover/ ./e2e/
	$(GO) run $(STATICCHECK) ./...
	$(GO) run $(STATICCHECK) -tags e2e ./cmd/drover/ ./e2e/

# Each benchmark with the iterations it needs; results go to docs/benchmarks.md.
bench: setup
	@bash scripts/bench.sh

# Static linux/amd64 and linux/arm64 binaries, a .deb of each and
# SHA256SUMS, into dist/ (scripts/release.sh says what the package holds).
release:
	@VERSION=$(VERSION) GO=$(GO) bash scripts/release.sh

clean:
	rm -rf bin dist

# The README's first command: the example platform on a 3-node cluster on
# this machine (e2e/lab), with a git forge to push changes to.
demo: setup build
	@if [ "$$(id -u)" -ne 0 ]; then echo "make demo needs root (network namespaces, mounts, cgroups): sudo make demo" >&2; exit 1; fi
	bin/drover-lab up --work .demo/config

demo-stop:
	@if [ ! -e /tmp/drover-lab/lab.json ]; then echo "no demo lab running"; \
	  elif [ -x bin/drover-lab ]; then bin/drover-lab down; else $(GO) run ./e2e/cmd/drover-lab down; fi
	rm -rf .demo

# drover's agent alone on this machine, without root or a cluster.
quickstart:
	@bash scripts/quickstart.sh

quickstart-stop:
	@if [ -s .quickstart/state/agent.pid ]; then kill $$(cat .quickstart/state/agent.pid) 2>/dev/null || true; sleep 2; fi
	@for b in /usr/lib/postgresql/*/bin; do :; done; \
	  if [ -d .quickstart/pg/data ]; then if [ "$$(id -u)" -eq 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups $$b/pg_ctl -D .quickstart/pg/data -m fast stop; else $$b/pg_ctl -D .quickstart/pg/data -m fast stop; fi; fi >/dev/null 2>&1 || true
	@if [ -s .quickstart/nginx/nginx.pid ]; then kill -QUIT $$(cat .quickstart/nginx/nginx.pid) 2>/dev/null || true; fi
