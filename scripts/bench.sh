#!/usr/bin/env bash
# Runs drover's benchmarks, each with the iteration count it needs, and prints
# the machine they ran on first; docs/benchmarks.md records the results.
#   - PollUnchanged: one poll is a few ms, so 300 of them (1x is one noisy poll);
#   - Materialize: each release is ~1 s of work after a 61 s settle, 3 of them;
#   - AgentIdle: one iteration is the goal's 100 idle polls at 1 s (~2 min),
#     then 60 polls at 10 s, the 10 minutes of issue 7's idle goal;
#   - any other benchmark: once (the e2e lab's too: each is minutes).
# The machine is shared: compare each figure with its reference from the same
# run, not with another run's. Usage: scripts/bench.sh [extra go test flags]
set -euo pipefail
cd "$(dirname "$0")/.."
GO=${GO:-go}

echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (dirty)')"
echo "# $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //'), kernel $(uname -r), $($GO version | cut -d' ' -f3)"
echo "# load average: $(cut -d' ' -f1-3 /proc/loadavg)"

bench() { "$GO" test -run '^$' -timeout 30m "$@"; }
bench -bench '^BenchmarkPollUnchanged$' -benchtime 300x "$@" ./gitsource/
bench -bench '^BenchmarkMaterialize$' -benchtime 3x "$@" ./artifacts/
bench -tags e2e -bench '^BenchmarkAgentIdle$' -benchtime 1x "$@" ./cmd/drover/
DROVER_BENCH_INTERVAL=10s DROVER_BENCH_POLLS=60 bench -tags e2e -bench '^BenchmarkAgentIdle$' -benchtime 1x "$@" ./cmd/drover/
bench -bench . -skip '^Benchmark(PollUnchanged|Materialize|AgentIdle)$' -benchtime 1x "$@" ./...
# The 3-node lab (issue 7; needs root): three rollouts under the load of 300
# clients (drained window against its floor, push to converged, failed
# requests), then agents left idle for 10 minutes (-idle) at a 10 s poll.
bench -tags e2e -bench . -benchtime 1x "$@" ./e2e/
