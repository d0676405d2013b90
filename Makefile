# drover's build, test and lint entry points. `make test` is what CI runs.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.version=$(VERSION)
GO ?= go
STATICCHECK := honnef.co/go/tools/cmd/staticcheck@v0.8.2

.PHONY: build test lint setup bench quickstart quickstart-stop clean

build:
	$(GO) build -trimpath -ldflags '$(LDFLAGS)' -o bin/drover ./cmd/drover

setup:
	@bash scripts/setup.sh

test: setup
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 15m ./...

lint:
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# Each benchmark with the iterations it needs; results go to docs/benchmarks.md.
bench: setup
	@bash scripts/bench.sh

clean:
	rm -rf bin

# The README's first command: drover's agent on the shipped example.
quickstart:
	@bash scripts/quickstart.sh

quickstart-stop:
	@if [ -s .quickstart/state/agent.pid ]; then kill $$(cat .quickstart/state/agent.pid) 2>/dev/null || true; sleep 2; fi
	@for b in /usr/lib/postgresql/*/bin; do :; done; \
	  if [ -d .quickstart/pg/data ]; then if [ "$$(id -u)" -eq 0 ]; then setpriv --reuid=postgres --regid=postgres --init-groups $$b/pg_ctl -D .quickstart/pg/data -m fast stop; else $$b/pg_ctl -D .quickstart/pg/data -m fast stop; fi; fi >/dev/null 2>&1 || true
	@if [ -s .quickstart/nginx/nginx.pid ]; then kill -QUIT $$(cat .quickstart/nginx/nginx.pid) 2>/dev/null || true; fi
