#!/usr/bin/env bash
# Runs a local cluster: a Redis Cluster of 3 masters and 3 replicas on
# loopback, and NODES origin nodes (release) that share it. Every node takes
# application requests and device connections; a push taken by any node
# reaches its device on whichever node holds it. Ctrl-C stops everything
# (the Redis data stays in $CLUSTER_DIR until the next start).
#
#   scripts/cluster.sh [origin args...]      (given to every node)
#
# Node i (from 0) listens on 127.0.0.1: application API $APP_BASE_PORT+10i,
# WebSocket +1, HTTP/2 +2, /metrics +3; its push resources are named with its own URL
# unless ORIGIN_PUBLIC_URL names a front for all (a load balancer).
#
# Environment:
#   NODES           origin nodes (default 3)
#   REDIS_BASE_PORT the first Redis port; six in a row (default 7000; each
#                   also uses its port + 10000 for the cluster bus)
#   APP_BASE_PORT   node 0's application port (default 8080)
#   WAIT_REPLICAS   replicas a write waits for (default 1)
#   CLUSTER_DIR     Redis files and node logs (default /tmp/webpush-cluster)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

NODES="${NODES:-3}"
REDIS_BASE_PORT="${REDIS_BASE_PORT:-7000}"
APP_BASE_PORT="${APP_BASE_PORT:-8080}"
WAIT_REPLICAS="${WAIT_REPLICAS:-1}"
CLUSTER_DIR="${CLUSTER_DIR:-/tmp/webpush-cluster}"

echo "==== setup ===="
bash scripts/setup.sh
echo "==== build origin (release) ===="
cargo build --release -p origin
ORIGIN_BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/origin"

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo
  echo "cluster: stopping"
  for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do
    for _ in $(seq 50); do
      kill -0 "$pid" 2>/dev/null || break
      sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
  done
}
trap 'cleanup; exit 130' INT
trap 'cleanup; exit 143' TERM
trap cleanup EXIT

echo "==== Redis Cluster: 3 masters, 3 replicas from port $REDIS_BASE_PORT ===="
seeds=()
for i in 0 1 2 3 4 5; do
  port=$((REDIS_BASE_PORT + i))
  dir="$CLUSTER_DIR/redis-$port"
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" \
    --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
    --appendonly yes --appendfsync always --save '' --daemonize no --loglevel warning \
    >"$dir/redis.log" 2>&1 &
  pids+=($!)
  seeds+=("127.0.0.1:$port")
done
for s in "${seeds[@]}"; do
  for _ in $(seq 100); do
    redis-cli -p "${s#*:}" ping >/dev/null 2>&1 && break
    sleep 0.1
  done
done
if redis-cli -p "$REDIS_BASE_PORT" cluster info | grep -q 'cluster_state:ok'; then
  echo "cluster: the Redis Cluster of the last start is back"
else
  redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
fi
for _ in $(seq 300); do
  redis-cli -p "$REDIS_BASE_PORT" cluster info | grep -q 'cluster_state:ok' && break
  sleep 0.1
done
# Writes wait for a replica of every master: the replicas must be in sync.
for s in "${seeds[@]}"; do
  for _ in $(seq 300); do
    redis-cli -p "${s#*:}" info replication | grep -q 'role:slave\|state=online' && break
    sleep 0.1
  done
done
STORE="redis-cluster://$(IFS=,; echo "${seeds[*]}")"

echo "==== $NODES origin nodes on $STORE ===="
for ((i = 0; i < NODES; i++)); do
  app=$((APP_BASE_PORT + 10 * i))
  mkdir -p "$CLUSTER_DIR/node$i"
  "$ORIGIN_BIN" --app-listen "127.0.0.1:$app" --ws-listen "127.0.0.1:$((app + 1))" \
    --h2-listen "127.0.0.1:$((app + 2))" --metrics-listen "127.0.0.1:$((app + 3))" \
    --data-dir "$CLUSTER_DIR/node$i" \
    --store "$STORE" --node-id "node$i" --redis-wait-replicas "$WAIT_REPLICAS" "$@" \
    >"$CLUSTER_DIR/node$i/origin.log" 2>&1 &
  pids+=($!)
done
for ((i = 0; i < NODES; i++)); do
  app=$((APP_BASE_PORT + 10 * i))
  for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$app/ready" >/dev/null 2>&1 && break
    sleep 0.1
  done
  printf 'cluster: node%s  application http://127.0.0.1:%s  WebSocket ws://127.0.0.1:%s  HTTP/2 http://127.0.0.1:%s  metrics http://127.0.0.1:%s/metrics  log %s\n' \
    "$i" "$app" "$((app + 1))" "$((app + 2))" "$((app + 3))" "$CLUSTER_DIR/node$i/origin.log"
done
echo "cluster: ready; Ctrl-C stops it"
status=0
wait -n "${pids[@]}" || status=$?
echo "cluster: a process exited (status $status)"
exit "$status"
