#!/usr/bin/env bash
# Proves the README's two commands on a fresh machine: a new container from
# the locally built Debian 12 base image (scripts/container-base.sh, no
# registry), given only what a fresh machine of this kind has (rustup with its
# toolchains, Node 20 with npm, git), clones the repository, runs the README's
# run command until a push through the edge reaches a device, then the
# README's test command. Prints one line per step and the total time.
#
#   scripts/fresh-check.sh              # the committed HEAD of this checkout
#   FRESH_REF=main scripts/fresh-check.sh
#
# Inside a container, the test command's container step (podman building and
# running an image) cannot run: it is skipped, by name, and said so.
#
# Environment:
#   FRESH_REF        what to clone (default HEAD)
#   FRESH_NETWORK    podman's --network for the container (default host: apt,
#                    crates.io and npm are reached as on the host; nothing else
#                    may listen on the ports the tests use meanwhile)
#   FRESH_SKIP       test steps to skip besides container (names as in
#                    scripts/test.sh's TEST_SKIP), for trying the script itself
#   KEEP_WORK=1      keep the work folder (the full log)
#   BASE_IMAGE       the base tag (default localhost/webpush-base:bookworm)
#
# Needs root, podman and debootstrap (scripts/setup.sh installs them).
set -euo pipefail

# ---- inside the container ----------------------------------------------------
# The host runs this same file as `fresh-check.sh --inside` in the container.
if [[ "${1:-}" == --inside ]]; then
  export PATH="/root/.cargo/bin:$PATH"
  step() { printf '\n#### %s\n' "$*"; }

  step "machine: git (a fresh machine's baseline; setup.sh installs the rest)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  apt-get install -y -q --no-install-recommends git ca-certificates >/dev/null
  # The machine's own certificate authorities (/usr/local/share/ca-certificates,
  # mounted from the host) join the system's bundle, as on the host.
  update-ca-certificates >/dev/null 2>&1 || true
  rustc --version && cargo --version && node --version && npm --version && git --version

  step "clone"
  git clone -q /src /root/webpush
  cd /root/webpush
  git checkout -q "$FRESH_COMMIT"
  git log --oneline -1

  step "run command: scripts/run.sh until a push through the edge reaches a device"
  setsid bash scripts/run.sh >/root/run.log 2>&1 </dev/null &
  run_pid=$!
  stop_run() { kill -TERM -- "-$run_pid" 2>/dev/null || true; wait "$run_pid" 2>/dev/null || true; }
  trap stop_run EXIT
  edge=http://127.0.0.1:8787
  up=0
  for _ in $(seq 3600); do
    if ! kill -0 "$run_pid" 2>/dev/null; then tail -n 60 /root/run.log; echo "run.sh exited"; exit 1; fi
    if curl -fsS "$edge/health" >/dev/null 2>&1; then up=1; break; fi
    sleep 1
  done
  ((up)) || { tail -n 60 /root/run.log; echo "no /health through the edge within an hour"; exit 1; }
  grep -E '^setup: (done|ok|MISSING)' /root/run.log || true
  echo "health through the edge: $(curl -fsS "$edge/health")"
  cargo build --release -q -p client
  pushctl=target/release/pushctl
  d="$(mktemp -d)"
  "$pushctl" keys --out "$d/app.pem" >/dev/null
  "$pushctl" subscribe ws://127.0.0.1:8081 --state "$d/device.json" >"$d/device.sub"
  grep -q "\"endpoint\":\"$edge/p/" "$d/device.sub" || { cat "$d/device.sub"; echo "endpoint is not the edge's"; exit 1; }
  "$pushctl" listen --state "$d/device.json" --count 1 --timeout 60 >"$d/got" 2>"$d/listen.err" &
  listen_pid=$!
  for _ in $(seq 100); do grep -q '^listening for' "$d/listen.err" 2>/dev/null && break; sleep 0.1; done
  msg="through the edge $(date +%s%N)"
  "$pushctl" send --to "$d/device.sub" --vapid "$d/app.pem" --subject mailto:ops@example.com "$msg"
  wait "$listen_pid" || { cat "$d/listen.err"; echo "the device got nothing"; exit 1; }
  [[ "$(cat "$d/got")" == "[aes128gcm] $msg" ]] || { cat "$d/got"; echo "the device got something else"; exit 1; }
  echo "the device received: $msg"
  stop_run
  trap - EXIT

  step "test command: scripts/test.sh"
  TEST_SKIP="container ${FRESH_SKIP:-}" bash scripts/test.sh
  exit 0
fi

# ---- on the host -------------------------------------------------------------
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BASE_IMAGE="${BASE_IMAGE:-localhost/webpush-base:bookworm}"
export BASE_IMAGE
NAME=webpush-fresh-check
total_start=$SECONDS

say() { printf 'fresh-check: %s\n' "$*"; }
[[ $(id -u) -eq 0 ]] || { say "run as root (rootful podman)"; exit 1; }
command -v podman >/dev/null || { say "no podman: run scripts/setup.sh first"; exit 1; }
[[ -x "$HOME/.cargo/bin/rustup" && -d "$HOME/.rustup/toolchains" ]] || { say "no rustup in $HOME"; exit 1; }
command -v node >/dev/null && command -v npm >/dev/null || { say "no node/npm"; exit 1; }

commit="$(git rev-parse "${FRESH_REF:-HEAD}")"
if [[ -n "$(git status --porcelain --untracked-files=no)" ]]; then
  say "note: uncommitted changes are not checked; the container clones $commit"
fi

WORK="$(mktemp -d /var/tmp/webpush-fresh-check.XXXXXX)"
LOG="$WORK/fresh-check.log"
cleanup() {
  local rc=$?
  podman --runtime runc rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  if [[ "${KEEP_WORK:-0}" == 1 || $rc -ne 0 ]]; then say "log kept: $LOG"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

t=$SECONDS
bash scripts/container-base.sh | sed 's/^/  /'
say "base image $BASE_IMAGE ready in $((SECONDS - t)) s"

# What a fresh machine of this kind has before the project's set-up: rustup
# with the toolchains it came with (mounted as an overlay, so nothing the
# container writes reaches the host), only rustup's own proxies in
# ~/.cargo/bin (the host's cargo-installed tools stay out), and the nodejs
# package's files.
mkdir -p "$WORK/cargo-bin" "$WORK/node"
cp "$HOME/.cargo/bin/rustup" "$WORK/cargo-bin/rustup"
for proxy in cargo cargo-clippy cargo-fmt cargo-miri clippy-driver rls rust-analyzer \
  rust-gdb rust-gdbgui rust-lldb rustc rustdoc rustfmt; do
  ln -s rustup "$WORK/cargo-bin/$proxy"
done
# npm as the machine has it (the nodejs package's, or the newer one npm
# installed over it).
{
  dpkg -L nodejs | while read -r f; do
    if [[ -f "$f" || -L "$f" ]]; then printf '%s\n' "$f"; fi
  done
  find /usr/lib/node_modules/npm /usr/bin/npm /usr/bin/npx \( -type f -o -type l \) 2>/dev/null || true
} | sort -u | tar -C / -cf "$WORK/node/nodejs.tar" --no-recursion -T - 2>/dev/null

# The machine's network environment: its local certificate authorities (a
# TLS-inspecting egress proxy signs with one) and the variables that point
# clients at the bundle.
env_args=()
for v in SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS GIT_SSL_CAINFO \
  REQUESTS_CA_BUNDLE CARGO_HTTP_CAINFO http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
  if [[ -n "${!v:-}" ]]; then env_args+=(-e "$v=${!v}"); fi
done
ca_args=()
if [[ -d /usr/local/share/ca-certificates ]]; then
  ca_args=(-v /usr/local/share/ca-certificates:/usr/local/share/ca-certificates:ro)
fi

podman --runtime runc rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
say "container from $BASE_IMAGE: clones $commit, then the run command and the test command (about 20 minutes)"
set +e
podman --runtime runc run --name "$NAME" --rm \
  --network "${FRESH_NETWORK:-host}" \
  --ulimit nofile=20000:20000 --ulimit nproc=16384:16384 --shm-size 2g \
  --security-opt seccomp=unconfined \
  -v "$ROOT:/src:ro" \
  -v "$HOME/.rustup:/root/.rustup:O" \
  -v "$WORK/cargo-bin:/root/.cargo/bin:O" \
  -v "$WORK/node:/fresh/node:ro" \
  -v "$ROOT/scripts/fresh-check.sh:/fresh/fresh-check.sh:ro" \
  "${ca_args[@]}" "${env_args[@]}" \
  -e FRESH_COMMIT="$commit" -e FRESH_SKIP="${FRESH_SKIP:-}" -e RUSTUP_AUTO_INSTALL=0 \
  -e HOME=/root -w /root \
  "$BASE_IMAGE" \
  bash -c 'tar -C / -xf /fresh/node/nodejs.tar && exec bash /fresh/fresh-check.sh --inside' \
  >"$LOG" 2>&1 &
run_pid=$!
set -e

# One line per step as it ends: the container's own steps (####) and the test
# command's (==== n/10 ... / ---- done in n s).
step_name=""
step_start=$SECONDS
report() {
  if [[ -n "$step_name" ]]; then printf 'fresh-check: %-78s %5d s\n' "$step_name" "$((SECONDS - step_start))"; fi
  step_name="$1"
  step_start=$SECONDS
}
tail -n +1 -F --pid "$run_pid" "$LOG" 2>/dev/null | while IFS= read -r line; do
  case "$line" in
    "#### "*) report "${line#\#\#\#\# }" ;;
    "==== "[0-9]*/[0-9]*" "*" ====" | "==== FAILED"* | "==== all passed"*) report "test ${line//====/}" ;;
    SKIPPED*) printf 'fresh-check:   %s\n' "$line" ;;
  esac
done
rc=0
wait "$run_pid" || rc=$?
if ((rc != 0)); then
  tail -n 80 "$LOG" | sed 's/^/  | /'
  say "FAILED (exit $rc) after $((SECONDS - total_start)) s"
  exit "$rc"
fi
grep -E '^==== all passed' "$LOG" | sed 's/^/fresh-check: test /'
say "passed: the run command answered through the edge and the test command passed, in $((SECONDS - total_start)) s"
