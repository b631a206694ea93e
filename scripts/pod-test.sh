#!/usr/bin/env bash
# The pod test: the local cluster of podman-cluster.yaml (a Redis Cluster of
# 3 masters and 3 replicas and three origin nodes, from the images) played
# with `podman kube play`, and a message sent through node b to a device
# connected to node a:
#
#   1 podman, runc, curl (scripts/setup.sh installs them); pushctl (cargo,
#     host)
#   2 the base image (skipped when present), the origin's image and the
#     Redis image (`--target redis`); cached layers make these quick after
#     scripts/container-test.sh
#   3 `podman kube play`: the six Redis servers join one cluster, and
#     every node answers /ready
#   4 a device subscribes on node a; a message (RFC 8291, VAPID) sent to
#     node b arrives with its exact text (node b forwarded it:
#     push_cluster_forwarded_total)
#   5 `podman kube down`: the pod and its containers removed (and the
#     test's volumes)
#
#   scripts/pod-test.sh
#
# Uses the ports podman-cluster.yaml names (7000-7005 and 17000-17005, 8080-8082,
# 8090-8093, 8100-8103 on loopback): they must be free.
# Environment: CONTAINER_NOFILE (default 20000, this machine's hard limit)
# and CONTAINER_NPROC (default 4096), the containers' limits.
# Needs root (podman's rootful storage) and Debian 12.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

export BASE_IMAGE="${BASE_IMAGE:-localhost/webpush-base:bookworm}"
POD=webpush-cluster
VOLUMES=(webpush-redis-{0..5} webpush-origin-{a,b,c})
start=$SECONDS

say() { printf 'pod-test: %s\n' "$*"; }
fail() {
  printf 'pod-test: FAILED: %s\n' "$*" >&2
  exit 1
}
pm() {
  podman --runtime runc "$@" 2> >(grep -v 'unable to get systemd connection' >&2)
}
down() {
  pm kube down podman-cluster.yaml >/dev/null 2>&1 || true
  pm pod rm -f "$POD" >/dev/null 2>&1 || true
  pm volume rm -f "${VOLUMES[@]}" >/dev/null 2>&1 || true
}

WORK="$(mktemp -d /tmp/webpush-pod-test.XXXXXX)"
# A pod's containers take podman's default limits, whose open files
# (1048576) exceed this machine's hard limit (20000): set them here.
NOFILE="${CONTAINER_NOFILE:-20000}"
NPROC="${CONTAINER_NPROC:-4096}"
cat >"$WORK/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$NOFILE:$NOFILE", "nproc=$NPROC:$NPROC"]
CONF
export CONTAINERS_CONF="$WORK/containers.conf"
cleanup() {
  local rc=$?
  trap - EXIT
  if ((rc != 0)); then
    for c in origin-a origin-b redis-cluster-create; do
      echo "---- $c (last 30 lines) ----" >&2
      pm logs --tail 30 "$POD-$c" >&2 2>/dev/null || true
    done
    for f in "$WORK"/*.out "$WORK"/*.err; do
      [[ -s "$f" ]] && { echo "---- $f ----" >&2; cat "$f" >&2; }
    done
  fi
  jobs -p | xargs -r kill 2>/dev/null || true
  down
  rm -rf "$WORK"
  if ((rc != 0)); then
    printf '\npod-test: FAILED (exit %d) after %d s\n' "$rc" "$((SECONDS - start))" >&2
  fi
  exit "$rc"
}
trap cleanup EXIT

for tool in podman runc curl; do
  command -v "$tool" >/dev/null || fail "no $tool: run scripts/setup.sh first"
done
if [[ $(id -u) -ne 0 ]]; then fail "run as root (rootful podman)"; fi
port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
for p in 7000 7001 7002 7003 7004 7005 17000 17001 17002 17003 17004 17005 \
  8080 8081 8082 8083 8090 8091 8092 8093 8100 8101 8102 8103; do
  port_free "$p" || fail "port $p is taken"
done
cargo build --release -q -p client
PUSHCTL="${CARGO_TARGET_DIR:-$ROOT/target}/release/pushctl"

say "images: base, origin, redis"
bash scripts/container-base.sh
build_args=(--format docker --network host --pull=never -f Containerfile)
if [[ -s /etc/ssl/certs/ca-certificates.crt ]]; then
  build_args+=(-v /etc/ssl/certs/ca-certificates.crt:/run/build-ca.crt:ro)
fi
pm build "${build_args[@]}" -t localhost/webpush-origin:latest . >"$WORK/build-origin.log" 2>&1 || {
  tail -n 40 "$WORK/build-origin.log" >&2
  fail "podman build (origin)"
}
pm build "${build_args[@]}" --target redis -t localhost/webpush-redis:latest . \
  >"$WORK/build-redis.log" 2>&1 || {
  tail -n 40 "$WORK/build-redis.log" >&2
  fail "podman build (redis)"
}

say "podman kube play podman-cluster.yaml"
down
pm kube play podman-cluster.yaml >"$WORK/play.log" 2>&1 || {
  cat "$WORK/play.log" >&2
  fail "podman kube play"
}
for port in 8080 8090 8100; do
  ready=0
  for _ in $(seq 300); do
    if curl -fsS -o /dev/null "http://127.0.0.1:$port/ready" 2>/dev/null; then
      ready=1
      break
    fi
    sleep 0.2
  done
  ((ready)) || fail "no /ready on :$port within 60 s"
done
state="$(redis-cli -p 7000 cluster info 2>/dev/null | tr -d '\r' | grep cluster_state || true)"
[[ "$state" == cluster_state:ok ]] || fail "Redis Cluster: $state"
# Writes wait for a replica: every master's must be in sync first.
for p in 7000 7001 7002 7003 7004 7005; do
  synced=0
  for _ in $(seq 300); do
    if redis-cli -p "$p" info replication | grep -q 'role:slave\|state=online'; then
      synced=1
      break
    fi
    sleep 0.2
  done
  ((synced)) || fail "Redis on :$p: replication not in sync within 60 s"
done
say "three nodes ready on a Redis Cluster ($(redis-cli -p 7000 cluster nodes | grep -c master) masters)"

say "a device on node a, a message through node b"
"$PUSHCTL" keys --out "$WORK/app.pem" >"$WORK/keys.out" 2>&1
"$PUSHCTL" subscribe "ws://127.0.0.1:8081" --state "$WORK/device.json" \
  >"$WORK/device.sub" 2>"$WORK/subscribe.err"
grep -q '"endpoint":"http://127.0.0.1:8080/p/' "$WORK/device.sub" || fail "subscription: $(cat "$WORK/device.sub")"
sed 's|http://127.0.0.1:8080/p/|http://127.0.0.1:8090/p/|' "$WORK/device.sub" >"$WORK/via-b.sub"
"$PUSHCTL" listen --state "$WORK/device.json" --count 1 --timeout 30 \
  >"$WORK/listen.out" 2>"$WORK/listen.err" &
listen_pid=$!
for _ in $(seq 100); do
  grep -q '^listening for' "$WORK/listen.err" 2>/dev/null && break
  sleep 0.1
done
# Node a records its route in Redis just after the device's hello; a
# message sent before that is stored and fetched, not forwarded. A route
# hash always holds one field besides the records ("~", which keeps it a
# hash table), and outlives the records of devices that left.
routed=0
for _ in $(seq 100); do
  for p in 7000 7001 7002 7003 7004 7005; do
    for key in $(redis-cli -p "$p" --scan --pattern '*:routes:*' 2>/dev/null); do
      fields="$(redis-cli -c -p "$p" hlen "$key" 2>/dev/null || true)"
      if [[ "$fields" =~ ^[0-9]+$ ]] && ((fields > 1)); then
        routed=1
      fi
    done
  done
  ((routed)) && break
  sleep 0.1
done
((routed)) || fail "node a recorded no route for the device within 10 s"
MSG="through node b to node a $(date +%s%N)"
"$PUSHCTL" send --to "$WORK/via-b.sub" --vapid "$WORK/app.pem" \
  --subject mailto:ops@example.com "$MSG" >"$WORK/send.out" 2>&1 || fail "pushctl send"
grep -q '^sent: 201' "$WORK/send.out" || fail "pushctl send: not 201"
wait "$listen_pid" || fail "the device did not get the message (pushctl listen: $?)"
[[ "$(cat "$WORK/listen.out")" == "[aes128gcm] $MSG" ]] || fail "the device printed $(cat "$WORK/listen.out")"
forwarded="$(curl -fsS http://127.0.0.1:8093/metrics | awk '$1 == "push_cluster_forwarded_total" {print $2}')"
[[ "${forwarded:-0}" -ge 1 ]] || fail "node b forwarded nothing (push_cluster_forwarded_total ${forwarded:-none})"
say "received: $MSG (forwarded by node b)"

pm kube down podman-cluster.yaml >"$WORK/down.log" 2>&1 || fail "podman kube down"
left="$(pm ps -a --filter "pod=$POD" --format '{{.Names}}' | wc -l)"
[[ "$left" == 0 ]] || fail "$left containers left after podman kube down"
say "passed in $((SECONDS - start)) s"
