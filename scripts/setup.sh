#!/usr/bin/env bash
# Installs everything the build, run and tests need, idempotently.
#
# Assumes a Debian 12 machine with rustup (stable + nightly), node 20 and npm.
# A second run only checks and takes seconds. Each step says what it does.
#
#   apt:   rustc-web cargo-web rust-web-src lld-22  (Debian's rustc with a
#          wasm32 target and std sources: rustup cannot fetch wasm32 here)
#          rust-web-clippy                          (clippy of the wasm32-only code)
#          firefox-esr                              (end-to-end browser tests)
#          podman runc debootstrap                  (the container image and its test)
#   rustup components: clippy, rustfmt
#   cargo install (to ~/.cargo/bin): wasm-bindgen-cli (= version in Cargo.lock),
#          worker-build, cargo-fuzz
#   npm ci at the repo root (wrangler, web-push, jose), skipped while
#          node_modules matches package-lock.json
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORKER_BUILD_VERSION=0.8.7
CARGO_FUZZ_VERSION=0.13.2
APT_PACKAGES=(rustc-web cargo-web rust-web-src rust-web-clippy lld-22 firefox-esr openssl podman runc debootstrap)
MIN_RUSTC_WEB=1.91.0

case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

say() { printf 'setup: %s\n' "$*"; }
start=$SECONDS

# --- apt packages -----------------------------------------------------------
missing=()
for p in "${APT_PACKAGES[@]}"; do
  if [[ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" != "install ok installed" ]]; then
    missing+=("$p")
  fi
done
# worker 0.8.7 needs rustc >= 1.91: bookworm's own rustc-web is 1.85, the one in
# bookworm-security is new enough. An old one is upgraded.
rustc_web_ok() {
  local v
  v="$(/usr/bin/rustc --version 2>/dev/null | awk '{print $2}')"
  [[ -n "$v" ]] && [[ "$(printf '%s\n%s\n' "$MIN_RUSTC_WEB" "$v" | sort -V | head -n1)" == "$MIN_RUSTC_WEB" ]]
}
if [[ " ${missing[*]} " != *" rustc-web "* ]] && ! rustc_web_ok; then
  say "apt: /usr/bin/rustc is older than $MIN_RUSTC_WEB; upgrading rustc-web"
  for p in rustc-web cargo-web rust-web-src rust-web-clippy; do
    [[ " ${missing[*]} " == *" $p "* ]] || missing+=("$p")
  done
fi
if ((${#missing[@]})); then
  SUDO=()
  if [[ $(id -u) -ne 0 ]]; then SUDO=(sudo); fi
  say "apt: installing ${missing[*]}"
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
  if ! rustc_web_ok; then
    echo "setup: Debian's rustc ($(/usr/bin/rustc --version 2>&1)) is older than $MIN_RUSTC_WEB;" \
      "is bookworm-security in the apt sources?" >&2
    exit 1
  fi
else
  say "apt: ${APT_PACKAGES[*]} present"
fi

# --- rustup toolchains and components ----------------------------------------
if ! rustup toolchain list | grep -q '^nightly'; then
  say "WARNING: no nightly toolchain (rustup); 'cargo +nightly fuzz' will not work"
fi
for c in clippy rustfmt; do
  if rustup component list --installed 2>/dev/null | grep -q "^$c"; then
    say "rustup: $c present"
  else
    say "rustup: adding $c"
    rustup component add "$c"
  fi
done

# --- cargo tools ---------------------------------------------------------------
# wasm-bindgen-cli must be exactly the wasm-bindgen version the edge is locked to.
wb_version=""
if [[ -f Cargo.lock ]]; then
  wb_version="$(awk '/^name = "wasm-bindgen"$/ { getline; gsub(/[^0-9.]/, ""); print; exit }' Cargo.lock)"
fi
if [[ -z "$wb_version" ]]; then
  wb_version="$(sed -n 's/^wasm-bindgen = "=\([0-9.]*\)".*/\1/p' edge/Cargo.toml | head -n1)"
fi
if [[ -z "$wb_version" ]]; then
  echo "setup: cannot tell the wasm-bindgen version (Cargo.lock, edge/Cargo.toml)" >&2
  exit 1
fi
if [[ "$(wasm-bindgen --version 2>/dev/null || true)" == "wasm-bindgen $wb_version"* ]]; then
  say "cargo: wasm-bindgen-cli $wb_version present"
else
  say "cargo: installing wasm-bindgen-cli $wb_version (several minutes)"
  # Without --locked: the way this recipe was proven on this kind of machine.
  cargo install wasm-bindgen-cli --version "$wb_version" --force
fi

if [[ "$(worker-build --version 2>/dev/null || true)" == *"$WORKER_BUILD_VERSION"* ]]; then
  say "cargo: worker-build $WORKER_BUILD_VERSION present"
else
  say "cargo: installing worker-build $WORKER_BUILD_VERSION (several minutes)"
  cargo install worker-build --version "$WORKER_BUILD_VERSION" --force
fi

if cargo fuzz --version >/dev/null 2>&1; then
  say "cargo: cargo-fuzz present ($(cargo fuzz --version 2>/dev/null))"
else
  say "cargo: installing cargo-fuzz $CARGO_FUZZ_VERSION"
  cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

# --- npm -------------------------------------------------------------------------
stamp=node_modules/.setup-lock.sha256
want="$(sha256sum package-lock.json | cut -d' ' -f1)"
if [[ -d node_modules && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  say "npm: node_modules matches package-lock.json"
else
  say "npm: npm ci"
  npm ci --no-audit --no-fund
  echo "$want" >"$stamp"
fi

say "done in $((SECONDS - start)) s"
