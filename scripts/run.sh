#!/usr/bin/env bash
# Runs the whole service locally as it is deployed: the origin (native,
# release) behind the edge (the Worker under wrangler dev). Application
# servers talk to the edge, http://127.0.0.1:$EDGE_PORT: push resources, list
# services and VAPID `aud` are the edge's URL (the origin gets it as its
# --public-url), and the origin refuses application requests that the edge
# did not mark (--behind-edge true, with the shared secret). Devices connect
# to the origin's WebSocket (127.0.0.1:8081) and HTTP/2 (127.0.0.1:8082)
# listeners directly. Ctrl-C stops both.
#
#   scripts/run.sh [origin args...]
#
# The origin alone stays a complete push service, and it is what a new user
# gets by default: `cargo run --release -p origin` (or the container image)
# serves the application API itself on 127.0.0.1:8080 with the same
# validation, no edge and no secret. RUN_EDGE=0 scripts/run.sh does that here.
#
# Environment (the origin also reads its own ORIGIN_* settings, see origin --help):
#   ORIGIN_APP_LISTEN the origin's application API (default 127.0.0.1:8080); the
#                     edge forwards to http://$ORIGIN_APP_LISTEN
#   EDGE_PORT         the edge's port on 127.0.0.1 (default 8787)
#   EDGE_HMAC_SECRET  the edge→origin mark's key, given to both (default: a
#                     dev-only value; never use it anywhere but loopback)
#   LIMITS            protocol limits for both, a JSON object of shared::Limits
#                     fields, e.g. '{"max_message_bytes": 8192}' (default: none)
#   RUN_EDGE          0: the origin alone, on its own defaults (default 1)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

RUN_EDGE="${RUN_EDGE:-1}"
export ORIGIN_APP_LISTEN="${ORIGIN_APP_LISTEN:-127.0.0.1:8080}"
ORIGIN_URL="http://$ORIGIN_APP_LISTEN"
EDGE_PORT="${EDGE_PORT:-8787}"
EDGE_URL="http://127.0.0.1:$EDGE_PORT"
LIMITS="${LIMITS:-}"

if [[ -n "$LIMITS" ]]; then
  # The origin takes limits as name=value pairs (ORIGIN_LIMITS, comma-separated).
  ORIGIN_LIMITS="$(node -e '
    const l = JSON.parse(process.argv[1]);
    process.stdout.write(Object.entries(l).map(([k, v]) => `${k}=${v}`).join(","));
  ' "$LIMITS")"
  export ORIGIN_LIMITS
fi

if [[ "$RUN_EDGE" != 0 ]]; then
  export EDGE_HMAC_SECRET="${EDGE_HMAC_SECRET:-dev-only-edge-hmac-secret-not-for-production}"
  # Behind the edge: the origin checks the edge's mark with the same secret
  # (its own name for it), refuses unmarked application requests, and names
  # its resources (and expects VAPID tokens) for the edge's URL.
  export ORIGIN_EDGE_SECRET="${ORIGIN_EDGE_SECRET:-$EDGE_HMAC_SECRET}"
  export ORIGIN_BEHIND_EDGE="${ORIGIN_BEHIND_EDGE:-true}"
  export ORIGIN_PUBLIC_URL="${ORIGIN_PUBLIC_URL:-$EDGE_URL}"
fi

echo "==== setup ===="
bash scripts/setup.sh
echo "==== build origin (release) ===="
cargo build --release -p origin
if [[ "$RUN_EDGE" != 0 ]]; then
  echo "==== build edge ===="
  bash scripts/build-edge.sh
fi

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

if [[ "$RUN_EDGE" == 0 ]]; then
  echo "run: origin alone (pid ${pids[0]}): application API on $ORIGIN_URL; Ctrl-C stops it"
else
  echo "==== edge: wrangler dev on $EDGE_URL → $ORIGIN_URL ===="
  vars=(--var "ORIGIN_URL:$ORIGIN_URL" --var "EDGE_HMAC_SECRET:$EDGE_HMAC_SECRET")
  if [[ -n "$LIMITS" ]]; then vars+=(--var "LIMITS:$LIMITS"); fi
  WRANGLER_SEND_METRICS=false CLOUDFLARE_CF_FETCH_ENABLED=false \
    setsid node node_modules/wrangler/bin/wrangler.js dev \
      --ip 127.0.0.1 --port "$EDGE_PORT" \
      --show-interactive-dev-session=false \
      "${vars[@]}" </dev/null &
  pids+=($!)
  echo "run: origin pid ${pids[0]}, edge pid ${pids[1]}; application servers use $EDGE_URL; Ctrl-C stops both"
fi
# Stop everything as soon as either one ends.
status=0
wait -n "${pids[@]}" || status=$?
echo "run: a service exited (status $status)"
exit "$status"
