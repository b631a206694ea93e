#!/usr/bin/env bash
# The one test command (CI runs it through .ci/run). Stops at the first failure.
#
#   1 setup        scripts/setup.sh (seconds when everything is installed)
#   2 fmt          cargo fmt --all --check
#   3 clippy       cargo clippy --workspace --all-targets --all-features -- -D warnings
#   4 test         cargo test --workspace --all-features (unit, RFC vectors, property tests, and the
#                  origin's integration tests over real sockets: the store conformance suite on
#                  redb, redis-server and a Redis Cluster, nodes of a cluster); then the origin's
#                  request, list, device and restart suites again on one redis-server and on a
#                  Redis Cluster (ORIGIN_TEST_STORE=redis, redis-cluster)
#   5 e2e          Firefox ESR and the npm web-push library against the origin binary
#   6 wasm32       the shared crate builds for wasm32-unknown-unknown on its own;
#                  clippy of the edge (and shared) as compiled for wasm32, with
#                  and without the edge's bench feature
#   7 fuzz smoke   scripts/fuzz-smoke.sh, else scripts/fuzz.sh (its short default run)
#   8 edge         build the Worker and run the edge tests under wrangler dev
#   9 container    scripts/container-test.sh: the origin's image built (base from
#                  debootstrap), run under podman, a message pushed through it,
#                  SIGTERM and a restart on the same volume with nothing lost;
#                  scripts/pod-test.sh: podman-cluster.yaml played (a Redis
#                  Cluster of 3+3 and three nodes from the images), a message
#                  through node b to a device on node a
#  10 load         scripts/bench.sh e g s (release): one list push to 10,000
#                  devices over real WebSocket connections against single
#                  pushes, kill -9 during the fan-out of a 200,000-member
#                  offline list, and a key flooding its lists held to its
#                  budget while another sender's pushes all arrive
#
# For local use only, TEST_SKIP="fmt clippy ..." (names: setup fmt clippy test
# e2e wasm fuzz edge container load) skips steps, loudly. CI never sets it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

total_start=$SECONDS
step_start=
step() {
  if [[ -n "$step_start" ]]; then
    printf -- '---- done in %d s\n' "$((SECONDS - step_start))"
  fi
  step_start=$SECONDS
  printf '\n==== %s ====\n' "$*"
}
skipped() {
  if [[ " ${TEST_SKIP:-} " == *" $1 "* ]]; then
    echo "SKIPPED (TEST_SKIP=${TEST_SKIP})"
    return 0
  fi
  return 1
}
trap 'rc=$?; if ((rc != 0)); then printf "\n==== FAILED (exit %d) after %d s ====\n" "$rc" "$((SECONDS - total_start))"; fi' EXIT

step "1/10 setup (scripts/setup.sh)"
skipped setup || bash scripts/setup.sh

step "2/10 cargo fmt --all --check"
skipped fmt || cargo fmt --all --check

step "3/10 cargo clippy --workspace --all-targets --all-features -- -D warnings"
skipped clippy || cargo clippy --workspace --all-targets --all-features -- -D warnings

step "4/10 cargo test --workspace --all-features"
# The edge once more without its features: the benchmark route must be
# absent from the production Worker.
# The origin's suites again with every service on one redis-server, then
# on a Redis Cluster: bad input, limits and every protocol behave as on the
# embedded store.
# (An `if` body, not `skipped || { a && b; }`: bash's -e does not stop at
# a command that fails inside such a group.)
if ! skipped test; then
  cargo test --workspace --all-features
  cargo test -p edge
  for store in redis redis-cluster; do
    ORIGIN_TEST_STORE=$store cargo test -p origin --test bad_input --test lists --test rfc8030 \
      --test websocket --test metrics --test restart --test edge_mark --test expiry
  done
fi

step "5/10 end-to-end: Firefox ESR and npm web-push against the origin (tests/js)"
skipped e2e || E2E_SKIP_BUILD=1 node --test tests/js/

step "6/10 wasm32: shared builds; clippy of edge + shared for wasm32"
if ! skipped wasm; then
  scripts/tools/wasm-cargo build -p shared --target wasm32-unknown-unknown
  scripts/tools/wasm-cargo clippy -p edge -p shared --target wasm32-unknown-unknown -- -D warnings
  scripts/tools/wasm-cargo clippy -p edge --features bench --target wasm32-unknown-unknown -- -D warnings
fi

step "7/10 fuzz smoke"
if skipped fuzz; then
  :
elif [[ -f scripts/fuzz-smoke.sh ]]; then
  bash scripts/fuzz-smoke.sh
elif [[ -f scripts/fuzz.sh ]]; then
  bash scripts/fuzz.sh
else
  echo "no scripts/fuzz-smoke.sh or scripts/fuzz.sh: skipped"
fi

step "8/10 edge: build, then its tests under wrangler dev with a real origin"
if ! skipped edge; then
  bash scripts/build-edge.sh
  EDGE_SMOKE_SKIP_BUILD=1 node --test tests/edge/
fi

step "9/10 container: build the origin's image, run it, push through it, stop and restart"
if ! skipped container; then
  bash scripts/container-test.sh
  bash scripts/pod-test.sh
fi

step "10/10 load: a 10,000-member list over real WebSocket connections; kill -9 during a 200,000-member fan-out; a flood over a key's budget"
# Release builds; each scenario checks correctness (every member exactly one
# copy, status counts add up, every member of the crashed fan-out served after
# the restart, the flooding key held to its budget while the other sender's
# pushes all arrive) and fails the step if not. The figures are printed, not
# judged.
if ! skipped load; then
  LIST_DEVICES=10000 QUIET_WAIT=5 FLOOD_SECS=15 FLOOD_VICTIM_SECS=5 bash scripts/bench.sh e g s
fi

step "all passed in $((SECONDS - total_start)) s${TEST_SKIP:+ (but TEST_SKIP=$TEST_SKIP)}"
