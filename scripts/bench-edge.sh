#!/usr/bin/env bash
# Benchmark of the edge Worker: builds the origin (release) and the Worker,
# then runs tests/edge/bench-client.mjs, which starts a fresh origin (temp
# data dir, free ports) and `wrangler dev` in front of it, connects devices
# that acknowledge everything, and prints one JSON line per scenario:
#
#   single-push        requests/s, p50/p99 latency, straight to the origin vs through the edge
#   list-push          the same for list pushes (4 KiB JWE, VAPID, connected members)
#   edge-validate-cpu  CPU time inside workerd for checking a 4 KiB JWE list push with
#                      a VAPID token (target: ≤ 1 ms), per iteration of a loop run in one
#                      request (workerd's clock is coarse and only moves on I/O)
#   edge-wasm-size     bytes of the release .wasm, raw and gzip
#
#   scripts/bench-edge.sh
#
# Environment: BENCH_REQUESTS [2000], BENCH_CONCURRENCY [16], BENCH_DEVICES [20],
# BENCH_LIST_MEMBERS [10], BENCH_CPU_ITERATIONS [2000]; BENCH_RESULTS (a file
# that also receives the result lines). Everything runs on one machine:
# client, workerd and origin share its cores, so the figures compare paths,
# they are not capacities.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

echo "==== build origin (release) ====" >&2
cargo build --release -p origin >&2
echo "==== build edge (with the benchmark route) ====" >&2
# The benchmark route is a cargo feature, never in a production Worker; the
# next ordinary build (scripts/run.sh, the tests) builds without it again.
export EDGE_FEATURES=bench
bash scripts/build-edge.sh >&2

export ORIGIN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/origin"
export EDGE_SMOKE_SKIP_BUILD=1
export ORIGIN_LOG="${ORIGIN_LOG:-warn}"

echo "==== bench (one JSON line per scenario) ====" >&2
if [[ -n "${BENCH_RESULTS:-}" ]]; then
  node tests/edge/bench-client.mjs | tee -a "$BENCH_RESULTS"
else
  node tests/edge/bench-client.mjs
fi
