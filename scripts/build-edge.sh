#!/usr/bin/env bash
# Builds the edge Worker (edge/) to wasm with worker-build, offline.
#
# Output: edge/build/ (worker/shim.mjs is wrangler's entry point, index_bg.wasm
# the module). wrangler.toml runs this as its build command, so `wrangler dev`
# and `wrangler deploy` build first; when nothing the build reads is newer than
# its output, it says so and stops (EDGE_BUILD_FORCE=1 builds anyway).
#
# EDGE_FEATURES: cargo features of the edge to build with, e.g. "bench" (the
# benchmark route, scripts/bench-edge.sh; never in production). A build with
# other features than the last one's is never taken as up to date.
#
# Needs what scripts/setup.sh installs (Debian's rustc-web, worker-build,
# wasm-bindgen-cli, node_modules). See scripts/tools/wasm-env.sh for the recipe.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT=edge/build
ENTRY="$OUT/worker/shim.mjs"
WASM="$OUT/index_bg.wasm"
INPUTS=(edge/src edge/Cargo.toml shared/src shared/Cargo.toml Cargo.toml Cargo.lock
        scripts/build-edge.sh scripts/tools/wasm-env.sh scripts/tools/rustc)

FEATURES="${EDGE_FEATURES:-}"
FEATURES_STAMP="$OUT/features"
if [[ "${EDGE_BUILD_FORCE:-0}" != 1 && -f "$ENTRY" && -f "$WASM" ]] \
   && [[ "$(cat "$FEATURES_STAMP" 2>/dev/null)" == "$FEATURES" ]] \
   && [[ -z "$(find "${INPUTS[@]}" -newer "$WASM" -print -quit 2>/dev/null)" ]]; then
  echo "build-edge: $WASM is up to date ($(stat -c %s "$WASM") bytes${FEATURES:+, features: $FEATURES})"
  exit 0
fi

# shellcheck source=scripts/tools/wasm-env.sh
source scripts/tools/wasm-env.sh

for tool in "$WORKER_BUILD_BIN" "$WASM_BINDGEN_BIN" "$ESBUILD_BIN" /usr/bin/cargo /usr/bin/rustc; do
  if [[ -z "$tool" || ! -x "$tool" ]]; then
    echo "build-edge: missing tool '${tool}': run scripts/setup.sh" >&2
    exit 1
  fi
done

# The Worker is sized, not raced: the release profile tuned for size, for this
# build only (the origin's native release profile in Cargo.toml stays as it is;
# the edge has its own target folder, so the two never rebuild each other).
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${CARGO_PROFILE_RELEASE_OPT_LEVEL:-z}"
export CARGO_PROFILE_RELEASE_LTO="${CARGO_PROFILE_RELEASE_LTO:-fat}"
export CARGO_PROFILE_RELEASE_CODEGEN_UNITS="${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-1}"
export CARGO_PROFILE_RELEASE_DEBUG="${CARGO_PROFILE_RELEASE_DEBUG:-false}"
export CARGO_PROFILE_RELEASE_PANIC=abort

start=$SECONDS
# The build's start time, given to the output at the end: an input edited while
# the build runs is then newer than the output, and the next run rebuilds.
started="$(mktemp)"
trap 'rm -f "$started"' EXIT
echo "build-edge: worker-build --release (wasm-bindgen $("$WASM_BINDGEN_BIN" --version | cut -d' ' -f2), target dir $CARGO_TARGET_DIR)"
extra=()
if [[ -n "$FEATURES" ]]; then extra=(--features "$FEATURES"); fi
(cd edge && "$WORKER_BUILD_BIN" --release "${extra[@]}")

if [[ ! -f "$ENTRY" || ! -f "$WASM" ]]; then
  echo "build-edge: worker-build did not produce $ENTRY and $WASM" >&2
  ls -R "$OUT" >&2 || true
  exit 1
fi
printf '%s' "$FEATURES" >"$FEATURES_STAMP"
touch -r "$started" "$WASM"
echo "build-edge: built $WASM ($(stat -c %s "$WASM") bytes${FEATURES:+, features: $FEATURES}) in $((SECONDS - start)) s"
