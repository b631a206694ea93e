#!/usr/bin/env bash
# Installs everything the build, run and tests need, idempotently.
#
# Assumes a Debian 12 machine with rustup (a stable toolchain), Node 20 with npm,
# and root (or sudo) for apt. A second run only checks and takes seconds. Each
# step says what it does; the last one checks that every tool answers and
# fails naming the ones that do not.
#
#   apt:   gcc g++ libc6-dev pkg-config libssl-dev git ca-certificates curl
#          (native builds; libfuzzer-sys compiles C++, worker-build links OpenSSL)
#          rustc-web cargo-web rust-web-src lld-22  (Debian's rustc with a
#          wasm32 target and std sources: rustup cannot fetch wasm32 here)
#          rust-web-llvm                            (rust-lld, the linker of the
#                                                    edge's cdylib)
#          rust-web-clippy                          (clippy of the wasm32-only code)
#          firefox-esr                              (end-to-end browser tests)
#          podman runc debootstrap                  (the container image and its test)
#          catatonit                                (the pause process of a pod:
#                                                    podman kube play podman-cluster.yaml)
#          redis-server redis-tools                 (the Redis store, the cluster and
#                                                    their tests: real servers, a real
#                                                    Redis Cluster)
#   rustup: components clippy and rustfmt; the nightly toolchain for cargo fuzz
#          when rustup can fetch it (else scripts/fuzz.sh runs cargo fuzz on
#          stable with RUSTC_BOOTSTRAP=1)
#   cargo install (to ~/.cargo/bin): wasm-bindgen-cli (= version in Cargo.lock),
#          worker-build, cargo-fuzz
#   npm ci at the repo root (wrangler, web-push, jose), skipped while
#          node_modules matches package-lock.json
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

WORKER_BUILD_VERSION=0.8.7
CARGO_FUZZ_VERSION=0.13.2
APT_PACKAGES=(gcc g++ libc6-dev pkg-config libssl-dev git ca-certificates curl
  rustc-web cargo-web rust-web-src rust-web-clippy rust-web-llvm lld-22
  firefox-esr openssl podman runc debootstrap catatonit redis-server redis-tools)
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
  for p in rustc-web cargo-web rust-web-src rust-web-clippy rust-web-llvm; do
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
toolchains="$(rustup toolchain list 2>/dev/null || true)"
if grep -q '^nightly' <<<"$toolchains"; then
  say "rustup: nightly present"
elif RUSTUP_AUTO_INSTALL=1 rustup toolchain install nightly --profile minimal >/dev/null 2>&1; then
  say "rustup: nightly installed"
else
  say "rustup: no nightly toolchain and none can be fetched; scripts/fuzz.sh uses stable with RUSTC_BOOTSTRAP=1"
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

# --- every tool answers ----------------------------------------------------------
# What the build, the run and the tests call, each asked for its version, so
# that a package that installed without the file a step needs (the edge's
# linker, rust-lld, comes from a package of its own) is named here rather
# than twenty minutes later by the step that needs it.
failed=()
check() {
  local name="$1"
  shift
  local out
  if out="$("$@" 2>&1)" && out="${out%%$'\n'*}" && [[ -n "$out" ]]; then
    printf 'setup: ok  %-14s %s\n' "$name" "$out"
  else
    printf 'setup: MISSING %-10s (%s)\n' "$name" "$*" >&2
    failed+=("$name")
  fi
}
check cargo cargo --version
check rustfmt cargo fmt --version
check clippy cargo clippy --version
check cc cc --version
check c++ c++ --version
check rustc-web /usr/bin/rustc --version
check cargo-web /usr/bin/cargo --version
check rust-lld rust-lld -flavor wasm --version
check wasm-bindgen wasm-bindgen --version
check worker-build worker-build --version
check cargo-fuzz cargo fuzz --version
check node node --version
check npm npm --version
check wrangler node node_modules/wrangler/bin/wrangler.js --version
check firefox-esr firefox-esr --version
check podman podman --version
check runc runc --version
check debootstrap ls /usr/sbin/debootstrap
check catatonit catatonit --version
check redis-server redis-server --version
check redis-cli redis-cli --version
if ((${#failed[@]})); then
  echo "setup: FAILED: missing or not answering: ${failed[*]}" >&2
  exit 1
fi

say "done in $((SECONDS - start)) s"
