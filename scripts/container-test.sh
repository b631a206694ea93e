#!/usr/bin/env bash
# The container test: builds the origin's image (Containerfile) on a base made
# here (scripts/container-base.sh: no registry is needed), runs it, and pushes
# messages through it to a device with pushctl:
#
#   1 podman, runc, debootstrap and curl (scripts/setup.sh installs them);
#     pushctl (cargo, host)
#   2 base image (skipped when present), then the image (layers and cargo
#     caches make a second build take seconds)
#   3 run: host network on free loopback ports, a fresh named volume on /data,
#     explicit ulimits; wait for /ready and a healthy `podman healthcheck run`;
#     the origin runs as uid 10001 with those limits
#   4 a device subscribes over WebSocket and listens; a message (RFC 8291,
#     VAPID) arrives with its exact text
#   5 a second message is sent while the device is away; `podman stop`
#     (SIGTERM) exits 0; a new container on the same volume delivers it to the
#     same device state (uaid), and nothing else arrives after it
#
#   scripts/container-test.sh
#
# Environment:
#   ORIGIN_IMAGE      the image tag (default localhost/webpush-origin:latest)
#   BASE_IMAGE        the base tag (default localhost/webpush-base:bookworm)
#   CONTAINER_NOFILE  open files per process (default 20000, this machine's hard limit)
#   CONTAINER_NPROC   processes (default 4096)
#   KEEP_WORK=1       keep the work folder (keys, device state, logs)
#
# Needs root (podman's rootful storage) and Debian 12; run scripts/setup.sh
# first for cargo. Periodic health checks need systemd, which this machine
# does not run: podman says so (its "unable to get systemd connection" errors
# are filtered out), and the test runs the check itself.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

ORIGIN_IMAGE="${ORIGIN_IMAGE:-localhost/webpush-origin:latest}"
export BASE_IMAGE="${BASE_IMAGE:-localhost/webpush-base:bookworm}"
NOFILE="${CONTAINER_NOFILE:-20000}"
NPROC="${CONTAINER_NPROC:-4096}"
NAME=webpush-origin-test
VOLUME=webpush-origin-test-data

say() { printf 'container-test: %s\n' "$*"; }
fail() {
  printf 'container-test: FAILED: %s\n' "$*" >&2
  exit 1
}

total_start=$SECONDS
timings=()
phase_name=
phase_start=
phase() {
  if [[ -n "$phase_name" ]]; then timings+=("$(printf '%4d s  %s' "$((SECONDS - phase_start))" "$phase_name")"); fi
  phase_name="$*"
  phase_start=$SECONDS
  [[ -z "$phase_name" ]] || printf '\n== %s ==\n' "$phase_name"
}

# podman with runc, without its complaints that systemd is not there to run
# the periodic health checks.
pm() {
  podman --runtime runc "$@" 2> >(grep -v 'unable to get systemd connection' >&2)
}

WORK="$(mktemp -d /tmp/webpush-container-test.XXXXXX)"
cleanup() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)); then
    echo "---- container logs (last 40 lines) ----" >&2
    pm logs --tail 40 "$NAME" >&2 2>/dev/null || true
    for f in "$WORK"/*.out "$WORK"/*.err; do
      [[ -s "$f" ]] && { echo "---- $f ----" >&2; cat "$f" >&2; }
    done
  fi
  jobs -p | xargs -r kill 2>/dev/null || true
  pm rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
  pm volume rm -f "$VOLUME" >/dev/null 2>&1 || true
  if [[ "${KEEP_WORK:-0}" == 1 ]]; then say "work folder kept: $WORK"; else rm -rf "$WORK"; fi
  if ((rc != 0)); then
    printf '\ncontainer-test: FAILED (exit %d) after %d s\n' "$rc" "$((SECONDS - total_start))" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------
phase "tools: podman, runc, debootstrap, curl (scripts/setup.sh); pushctl"
for tool in podman runc debootstrap curl; do
  command -v "$tool" >/dev/null || fail "no $tool: run scripts/setup.sh first"
done
if [[ $(id -u) -ne 0 ]]; then fail "run as root (rootful podman; debootstrap)"; fi
cargo build --release -q -p client
PUSHCTL="${CARGO_TARGET_DIR:-$ROOT/target}/release/pushctl"
say "pushctl: $PUSHCTL"

# Leftovers of an interrupted run.
pm rm -f -t 0 "$NAME" >/dev/null 2>&1 || true
pm volume rm -f "$VOLUME" >/dev/null 2>&1 || true

# ---------------------------------------------------------------------------
phase "base image ($BASE_IMAGE)"
bash scripts/container-base.sh

phase "image ($ORIGIN_IMAGE): podman build"
build_args=(--format docker --network host --pull=never -f Containerfile -t "$ORIGIN_IMAGE")
# A TLS-inspecting proxy's CA, if the host trusts one: cargo in the build
# stage then reaches crates.io through it (see the Containerfile).
if [[ -s /etc/ssl/certs/ca-certificates.crt ]]; then
  build_args+=(-v /etc/ssl/certs/ca-certificates.crt:/run/build-ca.crt:ro)
fi
pm build "${build_args[@]}" . >"$WORK/build.log" 2>&1 || {
  tail -n 40 "$WORK/build.log" >&2
  fail "podman build"
}
grep -E '^ *(Compiling origin|Finished)' "$WORK/build.log" | sed 's/^ */  cargo: /' || say "every layer cached"
user="$(pm image inspect --format '{{.Config.User}}' "$ORIGIN_IMAGE")"
health="$(pm image inspect --format '{{.Config.Healthcheck}}' "$ORIGIN_IMAGE")"
[[ "$user" == 10001:10001 ]] || fail "image user is '$user', not 10001:10001"
[[ "$health" == *--health-probe* ]] || fail "image has no HEALTHCHECK ($health): built without --format docker?"
pm image ls --format '  {{.Repository}}:{{.Tag}} {{.Size}}' "$ORIGIN_IMAGE"

# ---------------------------------------------------------------------------
# Three consecutive free ports on loopback (host network: they are the host's).
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
APP_PORT=
for _ in $(seq 200); do
  p=$((20000 + RANDOM % 10000))
  if port_free "$p" && port_free "$((p + 1))" && port_free "$((p + 2))"; then
    APP_PORT=$p
    break
  fi
done
[[ -n "$APP_PORT" ]] || fail "no free ports"
WS_PORT=$((APP_PORT + 1))
H2_PORT=$((APP_PORT + 2))
APP_URL="http://127.0.0.1:$APP_PORT"

run_origin() {
  pm run -d --name "$NAME" \
    --network host \
    --ulimit "nofile=$NOFILE:$NOFILE" --ulimit "nproc=$NPROC:$NPROC" \
    --stop-timeout 30 \
    -v "$VOLUME:/data" \
    -e "ORIGIN_APP_LISTEN=127.0.0.1:$APP_PORT" \
    -e "ORIGIN_WS_LISTEN=127.0.0.1:$WS_PORT" \
    -e "ORIGIN_H2_LISTEN=127.0.0.1:$H2_PORT" \
    -e "ORIGIN_PUBLIC_URL=$APP_URL" \
    -e "ORIGIN_DEVICE_URL=http://127.0.0.1:$H2_PORT" \
    "$ORIGIN_IMAGE" >/dev/null
}

wait_ready() {
  local ready=0
  for _ in $(seq 150); do
    if [[ "$(pm inspect --format '{{.State.Running}}' "$NAME")" != true ]]; then
      fail "the container stopped"
    fi
    if curl -fsS -o /dev/null "$APP_URL/ready" 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.2
  done
  ((ready)) || fail "no /ready at $APP_URL within 30 s"
  pm healthcheck run "$NAME" >/dev/null || fail "podman healthcheck run: unhealthy"
  local status
  status="$(pm inspect --format '{{.State.Health.Status}}' "$NAME")"
  [[ "$status" == healthy ]] || fail "health status '$status'"
  say "ready on $APP_URL (ws :$WS_PORT, h2 :$H2_PORT), healthy"
}

# Stops with SIGTERM and checks the origin ended by itself, with status 0.
stop_origin() {
  local t0=$SECONDS
  pm stop -t 30 "$NAME" >/dev/null
  local code sig
  code="$(pm inspect --format '{{.State.ExitCode}}' "$NAME")"
  sig="$(pm inspect --format '{{.Config.StopSignal}}' "$NAME")"
  [[ "$sig" == 15 ]] || fail "stop signal $sig, not SIGTERM (15)"
  [[ "$code" == 0 ]] || fail "the origin exited with status $code after podman stop"
  say "stopped with SIGTERM in $((SECONDS - t0)) s, exit status 0"
}

# A device listens for exactly COUNT messages (or TIMEOUT seconds) in the
# background; its decrypted messages go to $WORK/$1.out.
listen() {
  local tag="$1" count="$2" timeout="$3"
  "$PUSHCTL" listen --state "$WORK/device.json" --count "$count" --timeout "$timeout" \
    >"$WORK/$tag.out" 2>"$WORK/$tag.err" &
  listen_pid=$!
  for _ in $(seq 100); do
    grep -q '^listening for' "$WORK/$tag.err" 2>/dev/null && return 0
    kill -0 "$listen_pid" 2>/dev/null || break
    sleep 0.1
  done
  fail "the device did not connect ($tag)"
}

send() {
  "$PUSHCTL" send --to "$WORK/device.sub" --vapid "$WORK/app.pem" \
    --subject mailto:ops@example.com "$1" >"$WORK/send.out" 2>&1 || {
    cat "$WORK/send.out" >&2
    fail "pushctl send '$1'"
  }
  grep -q '^sent: 201' "$WORK/send.out" || {
    cat "$WORK/send.out" >&2
    fail "pushctl send '$1': not 201"
  }
}

# The device's messages, exactly (lines of `pushctl listen`).
expect_messages() {
  local tag="$1"
  shift
  local want got
  want="$(printf '%s\n' "$@")"
  got="$(cat "$WORK/$tag.out")"
  [[ "$got" == "$want" ]] || fail "$tag: the device printed
$got
--- instead of
$want"
}

# ---------------------------------------------------------------------------
phase "run: $ORIGIN_IMAGE on volume $VOLUME"
pm volume create "$VOLUME" >/dev/null
run_origin
wait_ready
uid="$(pm exec "$NAME" id -u)"
[[ "$uid" == 10001 ]] || fail "the origin runs as uid $uid"
pid1_user="$(pm exec "$NAME" stat -c %u /proc/1)"
[[ "$pid1_user" == 10001 ]] || fail "the origin (pid 1) runs as uid $pid1_user"
limits="$(pm exec "$NAME" cat /proc/1/limits)"
grep -Eq "^Max open files +$NOFILE +$NOFILE " <<<"$limits" || fail "open files limit: $(grep 'open files' <<<"$limits")"
grep -Eq "^Max processes +$NPROC +$NPROC " <<<"$limits" || fail "processes limit: $(grep 'Max processes' <<<"$limits")"
say "the origin runs as uid 10001, nofile $NOFILE, nproc $NPROC; data in $(pm exec "$NAME" ls /data | tr '\n' ' ')"

phase "push: a device over WebSocket, one message"
"$PUSHCTL" keys --out "$WORK/app.pem" >"$WORK/keys.out" 2>&1
"$PUSHCTL" subscribe "ws://127.0.0.1:$WS_PORT" --state "$WORK/device.json" \
  >"$WORK/device.sub" 2>"$WORK/subscribe.err"
grep -q "\"endpoint\":\"$APP_URL/p/" "$WORK/device.sub" || fail "subscription: $(cat "$WORK/device.sub")"
MSG1="first message through the container $(date +%s%N)"
listen live 1 30
send "$MSG1"
wait "$listen_pid" || fail "the device did not get the message (pushctl listen: $?)"
expect_messages live "[aes128gcm] $MSG1"
say "received: $MSG1"

phase "stop with nothing lost: message while away, SIGTERM, new container, same volume"
MSG2="second message, sent while the device was away $(date +%s%N)"
send "$MSG2"
stop_origin
pm rm "$NAME" >/dev/null
run_origin
wait_ready
listen after 1 30
wait "$listen_pid" || fail "the stored message did not arrive after the restart (pushctl listen: $?)"
expect_messages after "[aes128gcm] $MSG2"
say "received after the restart: $MSG2"
# Both were acknowledged: nothing more comes.
listen again 1 2
rc=0
wait "$listen_pid" || rc=$?
[[ "$rc" == 3 ]] || fail "expected no further message (pushctl listen exit 3), got exit $rc"
expect_messages again
say "nothing delivered twice"
stop_origin

phase ""
printf '\ncontainer-test: timings\n'
printf '  %s\n' "${timings[@]}"
printf 'container-test: passed in %d s\n' "$((SECONDS - total_start))"
