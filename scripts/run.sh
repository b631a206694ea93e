#!/usr/bin/env bash
# Runs the whole service locally: the origin (native, release) and the edge
# (wrangler dev) in front of it. Ctrl-C stops both.
#
#   scripts/run.sh [origin args...]
#
# Environment (the origin also reads its own ORIGIN_* settings, see origin --help):
#   ORIGIN_APP_LISTEN the origin's application API (default 127.0.0.1:8080); the
#                     edge forwards to http://$ORIGIN_APP_LISTEN (wrangler.toml's
#                     ORIGIN_URL has the same default)
#   EDGE_PORT         the edge's port on 127.0.0.1 (default 8787)
#   EDGE_HMAC_SECRET  the edge→origin mark's key, given to both (default: a
#                     dev-only value; never use it anywhere but loopback)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

export ORIGIN_APP_LISTEN="${ORIGIN_APP_LISTEN:-127.0.0.1:8080}"
ORIGIN_URL="http://$ORIGIN_APP_LISTEN"
EDGE_PORT="${EDGE_PORT:-8787}"
export EDGE_HMAC_SECRET="${EDGE_HMAC_SECRET:-dev-only-edge-hmac-secret-not-for-production}"
# The origin checks the edge's mark with the same secret (its own name for it).
export ORIGIN_EDGE_SECRET="${ORIGIN_EDGE_SECRET:-$EDGE_HMAC_SECRET}"

echo "==== setup ===="
bash scripts/setup.sh
echo "==== build origin (release) ===="
cargo build --release -p origin
echo "==== build edge ===="
bash scripts/build-edge.sh

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "run: stopping"
  for pid in "${pids[@]}"; do
    # Each service runs in its own process group (setsid): end the group.
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

# The binary just built (what `cargo run --release -p origin` runs), started
# directly: no rebuild between the two, and signals reach the origin itself.
ORIGIN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/origin"
echo "==== origin: $ORIGIN_BIN $* ===="
setsid "$ORIGIN_BIN" "$@" &
pids+=($!)

echo "==== edge: wrangler dev on http://127.0.0.1:$EDGE_PORT → $ORIGIN_URL ===="
WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false \
  setsid node node_modules/wrangler/bin/wrangler.js dev \
    --ip 127.0.0.1 --port "$EDGE_PORT" \
    --show-interactive-dev-session=false \
    --var "ORIGIN_URL:$ORIGIN_URL" \
    --var "EDGE_HMAC_SECRET:$EDGE_HMAC_SECRET" </dev/null &
pids+=($!)

echo "run: origin pid ${pids[0]}, edge pid ${pids[1]}; Ctrl-C stops both"
# Stop everything as soon as either one ends.
status=0
wait -n "${pids[@]}" || status=$?
echo "run: a service exited (status $status)"
exit "$status"
