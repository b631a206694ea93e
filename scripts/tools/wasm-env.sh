# Sourced (not run) by scripts/build-edge.sh and scripts/tools/wasm-cargo: the
# environment in which Debian's rustc-web builds for wasm32-unknown-unknown.
#
# rustup's toolchains have no wasm32 target here and cannot download one;
# Debian's rustc-web/cargo-web (with rust-web-src for std's sources and lld-22
# as the linker) can, by building std itself: RUSTC_BOOTSTRAP=1 unlocks
# -Zbuild-std on the stable compiler. Everything here stays inside the
# sourcing process.

_wasm_env_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Tools installed by scripts/setup.sh, found before PATH changes.
case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) PATH="$HOME/.cargo/bin:$PATH" ;;
esac
export WASM_BINDGEN_BIN="${WASM_BINDGEN_BIN:-$(command -v wasm-bindgen || echo "$HOME/.cargo/bin/wasm-bindgen")}"
export WORKER_BUILD_BIN="${WORKER_BUILD_BIN:-$(command -v worker-build || echo "$HOME/.cargo/bin/worker-build")}"
# wrangler's own esbuild (package-lock.json pins it), so nothing is downloaded.
if [[ -z "${ESBUILD_BIN:-}" ]]; then
  for _c in "$_wasm_env_root/node_modules/@esbuild/linux-x64/bin/esbuild" \
            "$_wasm_env_root/node_modules/esbuild/bin/esbuild"; do
    if [[ -x "$_c" ]]; then ESBUILD_BIN="$_c"; break; fi
  done
fi
export ESBUILD_BIN="${ESBUILD_BIN:-}"

# Debian's cargo and rustc first; our rustc stand-in (answers worker-build's
# target check) before them. cargo itself is pointed at the real compiler.
export PATH="$_wasm_env_root/scripts/tools:/usr/bin:$PATH"
export RUSTC=/usr/bin/rustc
export CARGO=/usr/bin/cargo
export RUSTC_BOOTSTRAP=1
export CARGO_UNSTABLE_BUILD_STD=std,panic_abort
# A target folder of its own: Debian's compiler must not share fingerprints
# (nor the cargo lock) with the native rustup builds in target/.
export CARGO_TARGET_DIR="${EDGE_TARGET_DIR:-$_wasm_env_root/target/edge}"
unset RUSTUP_TOOLCHAIN RUSTC_WRAPPER RUSTC_WORKSPACE_WRAPPER RUSTFLAGS CARGO_ENCODED_RUSTFLAGS \
  CARGO_BUILD_RUSTFLAGS CARGO_BUILD_TARGET 2>/dev/null || true
unset _c _wasm_env_root
