#!/usr/bin/env bash
# Load benchmark of the origin: builds release, then runs its
# scenarios, each against a fresh origin (temp data dir, free ports, stopped
# at exit), printing one JSON result line per scenario, tagged "scenario":
#
#   a  connect 15,000 WebSocket devices: devices/s and origin RSS per device
#   b  push to 10,000 devices, empty bodies, as fast as possible
#   c  the same with 2 KiB aes128gcm bodies
#   d  open loop: 5,000 pushes/s for 5 s; p99 POST→delivery latency
#   e  one list push (2 KiB compact JWE) to 15,000 connected devices against
#      15,000 single 2 KiB pushes to the same devices (ratio ≥ 20 wanted),
#      twice: ready-made bodies ("ratio"), then as applications send them,
#      with RFC 8291 encryption and a VAPID JWT per push ("ratio_as_apps");
#      the list push is repeated LIST_REPEATS times more, for the median of
#      its last-copy time ("list.list_repeats")
#   f  a list of 1,000,000 offline subscriptions: the push's 201 latency
#      (≤ 50 ms wanted), then 15,000 reconnect (all copies in ≤ 3 s wanted)
#   g  crash test: a list of 200,000 offline subscriptions; kill -9 the origin
#      right after the push's 201, while its fan-out runs; restart it on the
#      same store; every member reconnects (15,000 at a time) and must get its
#      copy exactly once ("crash.every_member_got_it", "duplicates": 0)
#   h  the list push of e alone (1 + LIST_REPEATS times), the devices
#      acknowledging 1 s after each copy arrived, so that their
#      acknowledgements do not share the two cores with the delivery
#   i  the kernel's floor for e on this machine, no origin: bare writes of a
#      copy-sized frame to LIST_DEVICES loopback sockets, read by bare
#      clients, first without answers, then with a device-sized `ack` each,
#      then with answers and the written sockets watched by an epoll thread
#      as an event-driven server's are (1 + LIST_REPEATS rounds each); hold e
#      and h against it
#
#   j  e's list push (list only) and i's two floors with answers, alternated
#      J_ROUNDS times, then one line of their medians and ratios per round
#      and overall: the machine's speed moves within minutes, the ratio much
#      less (not in the default run)
#   k  two origin nodes on one redis-server (appendfsync always): PUSH_DEVICES
#      devices on node A; 2 KiB pushes as fast as possible, then open loop at
#      CLUSTER_RATE/s, first through node A itself ("k-same-node-*"), then
#      through node B, which routes each to A ("k-other-node-*"): deliveries/s
#      and p99 POST→delivery, the two side by side; then e's list push (list
#      only) on node A; after each, Redis's memory and CPU ("k-redis-*": bytes
#      per subscription with its user agent and route, bytes per list member,
#      CPU seconds of the step) (not in the default run)
#   l  CLUSTER_NODES [6] origin nodes on a Redis Cluster of 3 masters and 3
#      replicas (appendfsync always; writes wait for a replica): CLUSTER_DEVICES
#      [100000] devices spread evenly over the nodes connect, hello and
#      register (devices/s, each node's RSS per idle device); then as many
#      new devices, a list of all of them made and pushed (2 KiB compact JWE)
#      through node 0, 1 + LIST_REPEATS times: 201 latency and last copy,
#      and the same devices by single pushes through node 0 (ratio, as e);
#      with CLUSTER_ACK_DELAY_MS, the devices acknowledge each copy that
#      many ms after it arrived (as in h); CLUSTER_LIST_ONLY=1 leaves the
#      single pushes out;
#      then CLUSTER_PUSH_DEVICES [60000] new devices take 2 KiB single pushes
#      sent to every node in turn (each device is on one node, so 5 in 6
#      are routed to another): as fast as possible ("l-singles-flat-out",
#      deliveries/s), then open loop at RATE/s ("l-singles-open-loop", p99
#      POST→delivery); Redis's memory and CPU after each (not in the
#      default run)
#
#   m  what a delivered copy costs the origin, acknowledgements included:
#      e's list push alone (1 + LIST_REPEATS times) to LIST_DEVICES devices,
#      then PUSHES_EMPTY unsigned single pushes to PUSH_DEVICES devices, each
#      with devices that acknowledge at once and with devices that never do,
#      first as the workers' epoll loop serves them, then as plain WebSocket
#      clients ("m-*-plain-*": a tokio-tungstenite task per device, serde_json);
#      each line gives the origin's CPU per copy inside the delivery window
#      ("origin_cpu_us_per_copy") and over the whole push, until every
#      acknowledgement is read and its write committed ("whole"); then one
#      line "m-per-copy" of those medians and what an acknowledgement costs
#      (acknowledging minus not) (not in the default run)
#   n  what committing each single push before its 201 costs: b, c and d with
#      the default (the message committed, then deleted when acknowledged)
#      and with --deliver-before-commit, alternated DURABLE_ROUNDS [2] times;
#      then one line "n-durable" of each mode's medians and their ratio (not
#      in the default run)
#   r  reconnect storm: STORM_DEVICES devices, each subscription in STORM_LISTS
#      lists of STORM_BACKLOG pushes it received and acknowledged, go; one
#      push to each list while they are away; all come back at once: time
#      to the last copy, /health latency throughout, list messages read per
#      device; STORM_ROUNDS [2] times (the later rounds read only what came
#      after each member's settled record) (not in the default run)
#   s  flood: one VAPID key pushes to its FLOOD_LISTS [100] lists of
#      FLOOD_MEMBERS [1000] offline subscriptions as fast as it can for
#      FLOOD_SECS [40] s, against a copy budget of FLOOD_BUDGET [1000000] a
#      minute, while another sender's single pushes go open loop at
#      FLOOD_RATE [1000]/s to FLOOD_VICTIMS [1000] devices: their p99
#      POST→delivery against the same before and after the flood (ratio ≤ 2
#      wanted), and the copies the flooder got accepted per clock minute
#      (≤ the budget); the flooder runs at nice FLOOD_NICE [19], as if on
#      machines of its own (not in the default run)
#
#   scripts/bench.sh [scenario letters...]      (default: a b c d e f g h i)
#
# Environment (defaults in brackets): CONNECT_DEVICES [15000], CLUSTER_RATE [2000],
# CLUSTER_NODES [6], CLUSTER_DEVICES [100000], CLUSTER_PUSH_DEVICES [60000],
# CLUSTER_REPLICA_FSYNC [always] (the replicas' appendfsync in l: everysec),
# CLUSTER_ACK_DELAY_MS [0] (l's list devices acknowledge that much later),
# PUSH_DEVICES [10000], PUSHES_EMPTY [200000], PUSHES_BODY [100000],
# BODY_BYTES [2048], CONCURRENCY [32], RATE [5000], RATE_SECS [5],
# LIST_DEVICES [15000], LIST_REPEATS [8], OFFLINE_MEMBERS [1000000], RECONNECT [15000],
# CRASH_MEMBERS [200000], STORM_DEVICES [15000], STORM_LISTS [10], STORM_BACKLOG [99], STORM_ROUNDS [2], STORM_SETTLE_SECS [60],
# STORM_TIMEOUT [3600] seconds for scenario r,
# J_ROUNDS [3], LIST_CHUNK [50000] members per list request, OFFLINE_TIMEOUT [1500] s,
# BENCH_TIMEOUT [240] seconds per scenario, ORIGIN_LOG [warn],
# BENCH_RESULTS (a file that also receives the result lines), KEEP_WORK=1
# (keep the origins' data and logs),
# ORIGIN_BIN (an origin binary to use instead of building one),
# QUIET_WAIT [30]: before each scenario, wait up to this many seconds for a
# second in which the machine is at least 90% idle (other programs' CPU use
# skews every figure; the result lines report it as "other_cpu_s").
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

case ":$PATH:" in
  *":$HOME/.cargo/bin:"*) ;;
  *) export PATH="$HOME/.cargo/bin:$PATH" ;;
esac

CONNECT_DEVICES="${CONNECT_DEVICES:-15000}"
PUSH_DEVICES="${PUSH_DEVICES:-10000}"
PUSHES_EMPTY="${PUSHES_EMPTY:-200000}"
PUSHES_BODY="${PUSHES_BODY:-100000}"
BODY_BYTES="${BODY_BYTES:-2048}"
CONCURRENCY="${CONCURRENCY:-32}"
RATE="${RATE:-5000}"
RATE_SECS="${RATE_SECS:-5}"
BENCH_TIMEOUT="${BENCH_TIMEOUT:-240}"
LIST_DEVICES="${LIST_DEVICES:-15000}"
LIST_REPEATS="${LIST_REPEATS:-8}"
OFFLINE_MEMBERS="${OFFLINE_MEMBERS:-1000000}"
RECONNECT="${RECONNECT:-15000}"
CRASH_MEMBERS="${CRASH_MEMBERS:-200000}"
LIST_CHUNK="${LIST_CHUNK:-50000}"
OFFLINE_TIMEOUT="${OFFLINE_TIMEOUT:-1500}"
export ORIGIN_LOG="${ORIGIN_LOG:-warn}"
scenarios=("$@")
((${#scenarios[@]})) || scenarios=(a b c d e f g h i)

BIN="$ROOT/target/release"
if [[ -n "${ORIGIN_BIN:-}" ]]; then
  echo "==== build pushbench (release); origin: $ORIGIN_BIN ====" >&2
  cargo build --release -p bench >&2 || exit 1
else
  echo "==== build (release) ====" >&2
  cargo build --release -p bench -p origin >&2 || exit 1
  ORIGIN_BIN="$BIN/origin"
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/pushbench.XXXXXX")"
ORIGIN_PID=
APP=
WS=
METRICS=

stop_origin() {
  # A restarted origin (scenario g) wrote its pid here.
  if [[ -n "$ORIGIN_PID" && -s "$WORK/restarted.pid" ]]; then
    ORIGIN_PID="$(cat "$WORK/restarted.pid")"
    rm -f "$WORK/restarted.pid"
  fi
  [[ -n "$ORIGIN_PID" ]] || return 0
  kill -TERM "$ORIGIN_PID" 2>/dev/null
  for _ in $(seq 50); do
    kill -0 "$ORIGIN_PID" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$ORIGIN_PID" 2>/dev/null
  wait "$ORIGIN_PID" 2>/dev/null
  ORIGIN_PID=
}

cleanup() {
  trap - INT TERM EXIT
  stop_origin
  stop_cluster
  stop_scale
  if [[ -n "${KEEP_WORK:-}" ]]; then echo "bench: kept $WORK" >&2; else rm -rf "$WORK"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Every origin the load tool drives: its devices come from a few loopback
# addresses, where a deployment's come from many, so the per-address
# subscription rate is raised with the per-subscription message rate.
LOAD_LIMITS="--limit subscription_messages_per_minute=1000000 --subscriptions-per-address-per-minute 1000000000 ${ORIGIN_EXTRA:-}"

# Scenario r pushes to each list far more than once a minute, 15,000 copies
# a push (all lists without a VAPID key share one copy budget), and makes
# its lists from one address. The service's own --list-settle-secs
# (STORM_SETTLE_SECS): on the embedded store it paces the looks in the
# background at connected devices; on Redis it is also the age a message
# must reach to be settled.
STORM_LIMITS="--limit list_pushes_per_minute=1000000,owner_copies_per_minute=1000000000"
STORM_LIMITS+=",list_creations_per_minute=10000 --keyless-list-creations-per-address-per-minute 10000"
STORM_LIMITS+=" --list-settle-secs ${STORM_SETTLE_SECS:-60}"

# Starts a fresh origin on free ports; sets ORIGIN_PID, APP, WS, METRICS.
start_origin() {
  local name="$1" dir="$WORK/$1"
  mkdir -p "$dir/data"
  # shellcheck disable=SC2086 # ORIGIN_ARGS is a list of flags
  "$ORIGIN_BIN" --app-listen 127.0.0.1:0 --ws-listen 127.0.0.1:0 --h2-listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --keyless-lists \
    --data-dir "$dir/data" $LOAD_LIMITS ${ORIGIN_ARGS:-} \
    >"$dir/stdout" 2>"$dir/origin.log" &
  ORIGIN_PID=$!
  local line=
  for _ in $(seq 100); do
    line="$(grep -m1 '^origin ready' "$dir/stdout" 2>/dev/null)" && break
    kill -0 "$ORIGIN_PID" 2>/dev/null || break
    sleep 0.1
  done
  if [[ -z "$line" ]]; then
    echo "bench: the origin did not start for $name:" >&2
    cat "$dir/origin.log" >&2
    stop_origin
    return 1
  fi
  APP="$(sed -E 's/.* app=([^ ]+).*/\1/' <<<"$line")"
  WS="$(sed -E 's/.* ws=([^ ]+).*/\1/' <<<"$line")"
  METRICS="$(sed -E 's/.* metrics=([^ ]+).*/\1/' <<<"$line")"
  # How to start this origin again on the same addresses and store (after a kill).
  cat >"$WORK/restart.sh" <<EOF
"$ORIGIN_BIN" --app-listen $APP --ws-listen $WS --h2-listen 127.0.0.1:0 \\
  --metrics-listen $METRICS --keyless-lists \\
  --data-dir "$dir/data" $LOAD_LIMITS \\
  >>"$dir/stdout" 2>>"$dir/origin.log" </dev/null &
echo \$! >"$WORK/restarted.pid"
EOF
  echo "bench: $name: origin $ORIGIN_PID app=$APP ws=$WS" >&2
}

# Scenario k: a redis-server and two origin nodes on it; devices on node A,
# pushes through node A, then through node B.
REDIS_PID=
NODE_B_PID=
stop_cluster() {
  [[ -z "$NODE_B_PID" ]] || { kill -TERM "$NODE_B_PID" 2>/dev/null; wait "$NODE_B_PID" 2>/dev/null; }
  [[ -z "$REDIS_PID" ]] || { kill -TERM "$REDIS_PID" 2>/dev/null; wait "$REDIS_PID" 2>/dev/null; }
  NODE_B_PID= REDIS_PID=
}
cluster_scenario() {
  local dir="$WORK/k" port
  mkdir -p "$dir/redis" "$dir/a" "$dir/b"
  port="$(free_port)"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/redis" --appendonly yes \
    --appendfsync always --save '' --loglevel warning >"$dir/redis/log" 2>&1 &
  REDIS_PID=$!
  for _ in $(seq 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.1; done
  local store="redis://127.0.0.1:$port" rate="${CLUSTER_RATE:-2000}" via
  "$ORIGIN_BIN" --app-listen 127.0.0.1:0 --ws-listen 127.0.0.1:0 --h2-listen 127.0.0.1:0 \
    --metrics-listen 127.0.0.1:0 --keyless-lists --store "$store" --node-id b --data-dir "$dir/b" \
    $LOAD_LIMITS >"$dir/b/stdout" 2>"$dir/b/origin.log" &
  NODE_B_PID=$!
  local line=
  for _ in $(seq 100); do
    line="$(grep -m1 '^origin ready' "$dir/b/stdout" 2>/dev/null)" && break
    sleep 0.1
  done
  local app_b
  app_b="http://$(sed -E 's/.* app=([^ ]+).*/\1/' <<<"$line")"
  REDIS_PORTS=("$port") REDIS_PIDS=("$REDIS_PID") REDIS_CPU_LAST=0
  redis_line k-redis-start
  for via in same-node other-node; do
    local target="@APP@"
    [[ "$via" == same-node ]] || target="$app_b"
    ORIGIN_ARGS="--store $store --node-id a" run "k-$via-flat-out" push --devices "$PUSH_DEVICES" \
      --pushes "$PUSHES_BODY" --concurrency "$CONCURRENCY" --body-bytes "$BODY_BYTES" \
      --app "$target" --src-base 200
    redis_line "k-redis-after-$via-flat-out"
    ORIGIN_ARGS="--store $store --node-id a" run "k-$via-open-loop" push --devices "$PUSH_DEVICES" \
      --pushes "$((rate * RATE_SECS))" --rate "$rate" --concurrency "$CONCURRENCY" \
      --body-bytes "$BODY_BYTES" --app "$target" --src-base 220
    redis_line "k-redis-after-$via-open-loop"
  done
  ORIGIN_ARGS="--store $store --node-id a" run k-list-on-redis list --list-only \
    --devices "$PUSH_DEVICES" --body-bytes "$BODY_BYTES" --chunk "$LIST_CHUNK" \
    --list-repeats 2 --app @APP@ --src-base 240
  redis_line k-redis-after-list
  stop_cluster
}

# Scenario l: a Redis Cluster and CLUSTER_NODES origin nodes on it.
L_PIDS=()
stop_scale() {
  local p
  for p in "${L_PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${L_PIDS[@]}"; do wait "$p" 2>/dev/null; done
  L_PIDS=()
}
free_port() {
  python3 -c 'import socket
while True:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); p = s.getsockname()[1]
    if p < 55000:
        t = socket.socket()
        try:
            t.bind(("127.0.0.1", p + 10000)); print(p); break
        except OSError: pass'
}
scale_scenario() {
  local nodes="${CLUSTER_NODES:-6}" devices="${CLUSTER_DEVICES:-100000}" dir="$WORK/l" i
  REDIS_PORTS=() REDIS_PIDS=() REDIS_CPU_LAST=0
  local seeds=()
  for i in 0 1 2 3 4 5; do
    local port
    port="$(free_port)"
    mkdir -p "$dir/redis-$port"
    redis-server --port "$port" --bind 127.0.0.1 --dir "$dir/redis-$port" \
      --cluster-enabled yes --cluster-node-timeout 2000 --appendonly yes \
      --appendfsync always --save '' --loglevel warning >"$dir/redis-$port/log" 2>&1 &
    L_PIDS+=($!) REDIS_PIDS+=($!) REDIS_PORTS+=("$port")
    seeds+=("127.0.0.1:$port")
  done
  for i in "${REDIS_PORTS[@]}"; do
    for _ in $(seq 100); do redis-cli -p "$i" ping >/dev/null 2>&1 && break; sleep 0.1; done
  done
  redis-cli --cluster create "${seeds[@]}" --cluster-replicas 1 --cluster-yes >/dev/null
  for i in "${REDIS_PORTS[@]}"; do
    for _ in $(seq 300); do
      redis-cli -p "$i" cluster info | grep -q cluster_state:ok && break
      sleep 0.1
    done
  done
  for i in "${REDIS_PORTS[@]}"; do
    for _ in $(seq 300); do
      redis-cli -p "$i" info replication | grep -q 'role:slave\|state=online' && break
      sleep 0.1
    done
  done
  # Replicas may flush their append-only file once a second: a write a
  # 201 answered is then on its master's disk and in a replica's memory.
  local replica_fsync="${CLUSTER_REPLICA_FSYNC:-always}"
  if [[ "$replica_fsync" != always ]]; then
    for i in "${REDIS_PORTS[@]}"; do
      if redis-cli -p "$i" info replication | grep -q role:slave; then
        redis-cli -p "$i" config set appendfsync "$replica_fsync" >/dev/null
      fi
    done
  fi
  local store apps=() wss=() pids=()
  store="redis-cluster://$(IFS=,; echo "${seeds[*]}")"
  for ((i = 0; i < nodes; i++)); do apps+=("127.0.0.1:$(free_port)"); done
  for ((i = 0; i < nodes; i++)); do
    mkdir -p "$dir/n$i"
    local ws
    ws="127.0.0.1:$(free_port)"
    "$ORIGIN_BIN" --app-listen "${apps[$i]}" --ws-listen "$ws" --h2-listen 127.0.0.1:0 \
      --metrics-listen 127.0.0.1:0 --keyless-lists \
      --data-dir "$dir/n$i" --store "$store" --node-id "n$i" --redis-wait-replicas 1 \
      --public-url "http://${apps[0]}" $LOAD_LIMITS \
      >"$dir/n$i/stdout" 2>"$dir/n$i/origin.log" &
    L_PIDS+=($!) pids+=($!) wss+=("$ws")
  done
  for ((i = 0; i < nodes; i++)); do
    for _ in $(seq 200); do curl -fs "http://${apps[$i]}/ready" >/dev/null 2>&1 && break; sleep 0.1; done
  done
  echo "bench: l: $nodes nodes on $store (replicas: appendfsync $replica_fsync)" >&2
  local ws_all pid_all per
  ws_all="$(IFS=,; echo "${wss[*]}")"
  pid_all="$(IFS=,; echo "${pids[*]}")"
  per=$(((devices + 2 * nodes - 1) / (2 * nodes)))
  redis_line l-redis-start
  run_bare l-connect connect --devices "$devices" --workers $((2 * nodes)) --per-worker "$per" \
    --ws "$ws_all" --origin-pid "$pid_all" --src-base 2
  redis_line l-redis-after-connect
  run_bare l-list list --devices "$devices" --workers $((2 * nodes)) --per-worker "$per" \
    --body-bytes "$BODY_BYTES" --chunk "$LIST_CHUNK" --list-repeats "$LIST_REPEATS" \
    --ack-delay-ms "${CLUSTER_ACK_DELAY_MS:-0}" ${CLUSTER_LIST_ONLY:+--list-only} \
    --ws "$ws_all" --app "http://${apps[0]}" --origin-pid "${pids[0]}" --src-base 40
  redis_line l-redis-after-list
  local app_all push_devices="${CLUSTER_PUSH_DEVICES:-60000}"
  app_all="$(printf 'http://%s,' "${apps[@]}")"
  app_all="${app_all%,}"
  per=$(((push_devices + 2 * nodes - 1) / (2 * nodes)))
  run_bare l-singles-flat-out push --devices "$push_devices" --pushes "$((2 * push_devices))" \
    --concurrency "${CLUSTER_PUSH_CONCURRENCY:-$((8 * nodes))}" --body-bytes "$BODY_BYTES" --app "$app_all" \
    --workers $((2 * nodes)) --per-worker "$per" --ws "$ws_all" --origin-pid "${pids[0]}" --src-base 80
  redis_line l-redis-after-singles-flat-out
  run_bare l-singles-open-loop push --devices "$push_devices" --pushes "$((RATE * RATE_SECS))" \
    --rate "$RATE" --concurrency "${CLUSTER_PUSH_CONCURRENCY:-$((8 * nodes))}" --body-bytes "$BODY_BYTES" --app "$app_all" \
    --workers $((2 * nodes)) --per-worker "$per" --ws "$ws_all" --origin-pid "${pids[0]}" --src-base 120
  redis_line l-redis-after-singles-open-loop
  stop_scale
}

# One line of Redis's figures: memory (summed over the servers on
# REDIS_PORTS), the CPU their processes (REDIS_PIDS) spent since the last
# line, and on one server what it holds (subscriptions, list members).
REDIS_CPU_LAST=0
redis_line() {
  local name="$1" mem=0 ticks=0 p m extra=""
  for p in "${REDIS_PORTS[@]}"; do
    m="$(redis-cli -p "$p" info memory | tr -d '\r' | sed -n 's/^used_memory://p')"
    mem=$((mem + ${m:-0}))
  done
  for p in "${REDIS_PIDS[@]}"; do ticks=$((ticks + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done
  local cpu
  cpu="$(awk -v t="$ticks" -v l="$REDIS_CPU_LAST" -v h="$(getconf CLK_TCK)" 'BEGIN {printf "%.2f", (t - l) / h}')"
  REDIS_CPU_LAST="$ticks"
  if ((${#REDIS_PORTS[@]} == 1)); then
    local subs members=0 key
    subs="$(redis-cli -p "${REDIS_PORTS[0]}" hget wp:counts subscriptions | tr -d '\r')"
    for key in $(redis-cli -p "${REDIS_PORTS[0]}" --scan --pattern 'wp:list_members:*'); do
      members=$((members + $(redis-cli -p "${REDIS_PORTS[0]}" zcard "$key")))
    done
    extra=",\"subscriptions\":${subs:-0},\"list_members\":$members"
  fi
  if [[ -n "${REDIS_COMMANDSTATS:-}" ]]; then
    # Where Redis's time went since the last line: the commands taking
    # most of it, summed over the servers (on stderr).
    for p in "${REDIS_PORTS[@]}"; do
      redis-cli -p "$p" info commandstats | tr -d '\r'
      redis-cli -p "$p" config resetstat >/dev/null
    done | awk -F'[:,=]' -v name="$name" '/^cmdstat_/ { calls[$1] += $3; us[$1] += $5 }
      END { for (c in us) printf "%s %s calls=%d usec=%d\n", name, c, calls[c], us[c] }' |
      sort -t= -k3 -n -r | head -12 >&2
  fi
  local out="{\"scenario\":\"$name\",\"redis_used_memory\":$mem,\"redis_cpu_s\":$cpu$extra}"
  echo "$out"
  [[ -z "${BENCH_RESULTS:-}" ]] || echo "$out" >>"$BENCH_RESULTS"
}

# Waits (at most QUIET_WAIT s) for a second with the CPUs ≥ 90% idle.
wait_quiet() {
  local deadline=$((SECONDS + ${QUIET_WAIT:-30})) a b idle
  while :; do
    read -ra a < <(grep '^cpu ' /proc/stat)
    sleep 1
    read -ra b < <(grep '^cpu ' /proc/stat)
    local total=0 i
    for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
    idle=$(((b[4] - a[4] + b[5] - a[5]) * 100 / (total > 0 ? total : 1)))
    if ((idle >= 90)); then
      echo "bench: machine ${idle}% idle" >&2
      return
    fi
    if ((SECONDS >= deadline)); then
      echo "bench: machine still busy (${idle}% idle); measuring anyway" >&2
      return
    fi
  done
}

failures=0
LAST_OUT=
# The median of the last scenario's result line ("median_ms"), or nothing.
last_median() { grep -o '"median_ms":[0-9.]*' <<<"$LAST_OUT" | head -1 | cut -d: -f2; }

# Scenario j: the list push and its floors, alternated; one summary line.
list_against_floor() {
  local rounds="${J_ROUNDS:-3}" r list=() acks=() watched=()
  for r in $(seq "$rounds"); do
    run "j-list-$r" list --list-only --devices "$LIST_DEVICES" --body-bytes "$BODY_BYTES" \
      --chunk "$LIST_CHUNK" --list-repeats "$LIST_REPEATS" --app @APP@ --src-base 80
    list+=("$(last_median)")
    run_bare "j-floor-acks-$r" floor --sockets "$LIST_DEVICES" --rounds "$((LIST_REPEATS + 1))"
    acks+=("$(last_median)")
    run_bare "j-floor-acks-watched-$r" floor --sockets "$LIST_DEVICES" \
      --rounds "$((LIST_REPEATS + 1))" --watcher
    watched+=("$(last_median)")
  done
  local out
  out="$(awk -v l="${list[*]}" -v a="${acks[*]}" -v w="${watched[*]}" '
    function med(v, n,   i, j, t) {
      for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (v[j] + 0 < v[i] + 0) { t = v[i]; v[i] = v[j]; v[j] = t }
      return n % 2 ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
    }
    function arr(v, n,   i, s) { s = ""; for (i = 1; i <= n; i++) s = s (i > 1 ? "," : "") v[i]; return "[" s "]" }
    BEGIN {
      n = split(l, L, " "); split(a, A, " "); split(w, W, " ")
      for (i = 1; i <= n; i++) {
        if (L[i] == "" || A[i] + 0 <= 0 || W[i] + 0 <= 0) { bad = 1; continue }
        RA[i] = sprintf("%.3f", L[i] / A[i]); RW[i] = sprintf("%.3f", L[i] / W[i])
      }
      if (bad || n == 0) { print "{\"scenario\":\"j-list-against-floor\",\"error\":\"a round gave no median\"}"; exit }
      printf "{\"scenario\":\"j-list-against-floor\",\"rounds\":%d,\"list_median_ms\":%s,\"floor_acks_median_ms\":%s,\"floor_acks_watched_median_ms\":%s,\"ratio_to_floor_acks\":%s,\"ratio_to_floor_acks_watched\":%s,\"median_ratio_to_floor_acks\":%s,\"median_ratio_to_floor_acks_watched\":%s}\n",
        n, arr(L, n), arr(A, n), arr(W, n), arr(RA, n), arr(RW, n), med(RA, n), med(RW, n)
    }')"
  echo "$out"
  [[ -z "${BENCH_RESULTS:-}" ]] || echo "$out" >>"$BENCH_RESULTS"
  grep -q '"error"' <<<"$out" && failures=$((failures + 1))
}
# Scenario m: list and single pushes with devices that acknowledge and
# devices that do not, served two ways; then the medians side by side.
per_copy_scenario() {
  local figs=() kind acks extra
  for kind in epoll plain; do
    for acks in acks no-acks; do
      extra=()
      [[ $kind == plain ]] && extra+=(--plain)
      [[ $acks == no-acks ]] && extra+=(--no-acks)
      run "m-list-$kind-$acks" list --list-only --devices "$LIST_DEVICES" --body-bytes "$BODY_BYTES" \
        --chunk "$LIST_CHUNK" --list-repeats "$LIST_REPEATS" --app @APP@ --src-base 200 "${extra[@]}"
      figs+=("list-$kind-$acks=${LAST_OUT:-null}")
      run "m-singles-$kind-$acks" push --devices "$PUSH_DEVICES" --pushes "$PUSHES_BODY" \
        --concurrency "$CONCURRENCY" --app @APP@ --src-base 220 "${extra[@]}"
      figs+=("singles-$kind-$acks=${LAST_OUT:-null}")
    done
  done
  local out
  out="$(python3 - "${figs[@]}" <<'PY'
import json, sys
f = {}
def pick(k, line):
    if k.startswith("list-"):
        r = (line.get("list") or {}).get("list_repeats") or {}
        return [r.get("whole_origin_cpu_us_per_copy_median"), r.get("origin_cpu_us_per_copy_median"), r.get("median_ms")]
    return [(line.get("whole") or {}).get("origin_cpu_us_per_push"), line.get("origin_cpu_us_per_push"), line.get("deliveries_per_s")]
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    try:
        f[k] = pick(k, json.loads(v) or {})
    except (ValueError, AttributeError):
        f[k] = None
out = {"scenario": "m-per-copy", "fields": "[whole µs per copy, window µs per copy, last copy median ms or deliveries/s]"}
out.update(f)
for what in ("list", "singles"):
    for kind in ("epoll", "plain"):
        a, n = f.get(f"{what}-{kind}-acks"), f.get(f"{what}-{kind}-no-acks")
        if a and n and a[0] is not None and n[0] is not None:
            out[f"{what}-{kind}-ack_us"] = round(a[0] - n[0], 3)
print(json.dumps(out))
PY
)"
  echo "$out"
  [[ -z "${BENCH_RESULTS:-}" ]] || echo "$out" >>"$BENCH_RESULTS"
}

# Scenario n: what committing each message before its 201 costs single
# pushes to connected devices: b, c and d with the default (committed
# first) and with --deliver-before-commit (autopush's way), alternated,
# DURABLE_ROUNDS rounds (2); the summary line n-durable gives each mode's
# medians and their ratio.
durable_scenario() {
  local figs=() round mode args
  for round in $(seq "${DURABLE_ROUNDS:-2}"); do
    for mode in committed before-commit; do
      args=""
      [[ $mode == before-commit ]] && args="--deliver-before-commit"
      ORIGIN_ARGS="$args" run "n-b-$mode-$round" push --devices "$PUSH_DEVICES" \
        --pushes "$PUSHES_EMPTY" --concurrency "$CONCURRENCY" --app @APP@ --src-base 20
      figs+=("b-$mode=${LAST_OUT:-null}")
      ORIGIN_ARGS="$args" run "n-c-$mode-$round" push --devices "$PUSH_DEVICES" \
        --pushes "$PUSHES_BODY" --concurrency "$CONCURRENCY" --body-bytes "$BODY_BYTES" \
        --app @APP@ --src-base 40
      figs+=("c-$mode=${LAST_OUT:-null}")
      ORIGIN_ARGS="$args" run "n-d-$mode-$round" push --devices "$PUSH_DEVICES" \
        --pushes "$((RATE * RATE_SECS))" --rate "$RATE" --concurrency "$CONCURRENCY" \
        --app @APP@ --src-base 60
      figs+=("d-$mode=${LAST_OUT:-null}")
    done
  done
  local out
  out="$(python3 - "${figs[@]}" <<'PY'
import json, statistics, sys
f = {}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    try:
        line = json.loads(v) or {}
    except ValueError:
        line = {}
    what = "p99_ms" if k.startswith("d-") else "deliveries_per_s"
    ok = line.get("missing") == 0 and line.get("duplicates") == 0
    f.setdefault(k, []).append(line.get(what) if ok else None)
out = {"scenario": "n-durable"}
for s, what in (("b", "deliveries_per_s"), ("c", "deliveries_per_s"), ("d", "p99_ms")):
    m = {}
    for mode in ("committed", "before-commit"):
        vals = f.get(f"{s}-{mode}") or []
        out[f"{s}-{mode}-{what}"] = vals
        good = [v for v in vals if v is not None]
        m[mode] = statistics.median(good) if good and len(good) == len(vals) else None
        out[f"{s}-{mode}-median"] = m[mode]
    if m["committed"] and m["before-commit"]:
        out[f"{s}-ratio"] = round(m["committed"] / m["before-commit"], 3)
print(json.dumps(out))
PY
)"
  echo "$out"
  [[ -z "${BENCH_RESULTS:-}" ]] || echo "$out" >>"$BENCH_RESULTS"
}

# Scenario s: a flood of list pushes by one VAPID key beside another
# sender's single pushes; one line.
FLOOD_BUDGET="${FLOOD_BUDGET:-1000000}"
flood_scenario() {
  local name=s-flood dir="$WORK/s-flood" figs=() out
  ORIGIN_ARGS="--limit owner_copies_per_minute=$FLOOD_BUDGET,list_creations_per_minute=1000" \
    start_origin "$name" || { failures=$((failures + 1)); return; }
  wait_quiet
  local victim=(push --devices "${FLOOD_VICTIMS:-1000}" --pushes "$((${FLOOD_RATE:-1000} * ${FLOOD_VICTIM_SECS:-10}))"
    --rate "${FLOOD_RATE:-1000}" --concurrency "$CONCURRENCY" --app "http://$APP"
    --metrics "http://$METRICS" --ws "$WS" --origin-pid "$ORIGIN_PID")
  out="$("$BIN/pushbench" --scenario s-victim-idle --timeout-secs "$BENCH_TIMEOUT" "${victim[@]}" --src-base 60)"
  echo "$out"
  figs+=("idle-before=$out")
  # The flooder stands for a sender on machines of its own: it has what
  # CPU the service and the other sender leave (FLOOD_NICE [19]).
  nice -n "${FLOOD_NICE:-19}" \
    "$BIN/pushbench" --scenario s-flooder --timeout-secs "$BENCH_TIMEOUT" flood --app "http://$APP" \
    --lists "${FLOOD_LISTS:-100}" --members "${FLOOD_MEMBERS:-1000}" --secs "${FLOOD_SECS:-40}" \
    --concurrency "${FLOOD_CONCURRENCY:-16}" --budget "$FLOOD_BUDGET" --ws "$WS" --src-base 200 \
    >"$dir/flood.out" 2>"$dir/flood.err" &
  local flooder=$!
  for _ in $(seq 1200); do
    grep -q 'flooding' "$dir/flood.err" 2>/dev/null && break
    kill -0 "$flooder" 2>/dev/null || break
    sleep 0.1
  done
  sleep 2
  out="$("$BIN/pushbench" --scenario s-victim-flood --timeout-secs "$BENCH_TIMEOUT" "${victim[@]}" --src-base 80)"
  echo "$out"
  figs+=("flood=$out")
  wait "$flooder"
  out="$(cat "$dir/flood.out")"
  echo "$out"
  figs+=("flooder=$out")
  out="$("$BIN/pushbench" --scenario s-victim-idle --timeout-secs "$BENCH_TIMEOUT" "${victim[@]}" --src-base 100)"
  echo "$out"
  figs+=("idle-after=$out")
  stop_origin
  out="$(python3 - "${figs[@]}" <<'PY'
import json, statistics, sys
f = {}
for a in sys.argv[1:]:
    k, _, v = a.partition("=")
    try:
        f[k] = json.loads(v) or {}
    except ValueError:
        f[k] = {}
def p99(k):
    l = f.get(k, {})
    ok = l.get("missing") == 0 and l.get("duplicates") == 0
    return l.get("p99_ms") if ok else None
idle = [p for p in (p99("idle-before"), p99("idle-after")) if p is not None]
flood = p99("flood")
fl = f.get("flooder", {})
out = {"scenario": "s-flood",
       "victim_p99_ms_idle": [p99("idle-before"), p99("idle-after")],
       "victim_p99_ms_flood": flood,
       "ratio": round(flood / statistics.mean(idle), 2) if flood and idle else None,
       "flooder": {k: fl.get(k) for k in ("lists", "members", "secs", "pushes", "pushes_per_s",
                   "accepted", "statuses", "refused", "retry_after_s", "copies_by_clock_minute", "copies_straddling_minutes",
                   "most_copies_in_a_minute", "budget_per_minute", "held_to_budget", "error")}}
out["correct"] = bool(fl.get("held_to_budget")) and out["ratio"] is not None and out["ratio"] <= 2
print(json.dumps(out))
PY
)"
  echo "$out"
  [[ -z "${BENCH_RESULTS:-}" ]] || echo "$out" >>"$BENCH_RESULTS"
  # A budget that did not hold, or another sender whose pushes under the
  # flood did not all arrive once, fails the run; the ratio is a figure
  # (it needs a quiet machine).
  grep -q '"held_to_budget": true' <<<"$out" && grep -q '"victim_p99_ms_flood": [0-9]' <<<"$out" ||
    failures=$((failures + 1))
}

# Runs one scenario without an origin: name, then pushbench arguments.
run_bare() {
  local name="$1"
  shift
  LAST_OUT=
  echo "==== $name ($(cut -d' ' -f1-3 /proc/loadavg) load before) ====" >&2
  wait_quiet
  local out rc
  out="$("$BIN/pushbench" --scenario "$name" --timeout-secs "${TIMEOUT:-$BENCH_TIMEOUT}" "$@")"
  rc=$?
  [[ -n "$out" ]] || out="{\"scenario\":\"$name\",\"error\":\"pushbench exited $rc without a result\"}"
  echo "$out"
  LAST_OUT="$out"
  [[ -z "${BENCH_RESULTS:-}" ]] || echo "$out" >>"$BENCH_RESULTS"
  ((rc == 0)) || failures=$((failures + 1))
}

# Runs one scenario against a fresh origin: name, then pushbench arguments
# (@APP@ stands for the application API's URL).
run() {
  local name="$1"
  shift
  LAST_OUT=
  echo "==== $name ($(cut -d' ' -f1-3 /proc/loadavg) load before) ====" >&2
  start_origin "$name" || { failures=$((failures + 1)); return; }
  wait_quiet
  local out rc args=()
  for a in "$@"; do args+=("${a//@APP@/http://$APP}"); done
  # The whole of a push is read from the origin's operator listener.
  [[ "$1" != push && "$1" != list && "$1" != storm ]] || args+=(--metrics "http://$METRICS")
  out="$("$BIN/pushbench" --scenario "$name" --timeout-secs "${TIMEOUT:-$BENCH_TIMEOUT}" "${args[@]}" \
    --ws "$WS" --origin-pid "$ORIGIN_PID")"
  rc=$?
  [[ -n "$out" ]] || out="{\"scenario\":\"$name\",\"error\":\"pushbench exited $rc without a result\"}"
  echo "$out"
  LAST_OUT="$out"
  [[ -z "${BENCH_RESULTS:-}" ]] || echo "$out" >>"$BENCH_RESULTS"
  ((rc == 0)) || failures=$((failures + 1))
  if [[ -s "$WORK/$name/origin.log" ]]; then
    echo "bench: $name: origin log (last lines):" >&2
    tail -5 "$WORK/$name/origin.log" >&2
  fi
  stop_origin
}

for s in "${scenarios[@]}"; do
  case "$s" in
    a) run a-connect-15k connect --devices "$CONNECT_DEVICES" --src-base 2 ;;
    b) run b-push-empty push --devices "$PUSH_DEVICES" --pushes "$PUSHES_EMPTY" \
         --concurrency "$CONCURRENCY" --app @APP@ --src-base 20 ;;
    c) run c-push-2k push --devices "$PUSH_DEVICES" --pushes "$PUSHES_BODY" \
         --concurrency "$CONCURRENCY" --body-bytes "$BODY_BYTES" --app @APP@ --src-base 40 ;;
    d) run d-open-loop-5k push --devices "$PUSH_DEVICES" --pushes "$((RATE * RATE_SECS))" \
         --rate "$RATE" --concurrency "$CONCURRENCY" --app @APP@ --src-base 60 ;;
    e) run e-list-vs-single list --devices "$LIST_DEVICES" --concurrency "$CONCURRENCY" \
         --body-bytes "$BODY_BYTES" --single-body-bytes "$BODY_BYTES" --chunk "$LIST_CHUNK" \
         --list-repeats "$LIST_REPEATS" --app @APP@ --src-base 80 ;;
    f) TIMEOUT="$OFFLINE_TIMEOUT" run f-offline-list offline-list --members "$OFFLINE_MEMBERS" \
         --reconnect "$RECONNECT" --body-bytes "$BODY_BYTES" --chunk "$LIST_CHUNK" \
         --connect-concurrency 256 --app @APP@ --src-base 100 ;;
    g) TIMEOUT="$OFFLINE_TIMEOUT" run g-crash-during-fanout offline-list --members "$CRASH_MEMBERS" \
         --reconnect "$RECONNECT" --body-bytes "$BODY_BYTES" --chunk "$LIST_CHUNK" \
         --connect-concurrency 256 --app @APP@ --src-base 140 \
         --crash-restart "bash $WORK/restart.sh" ;;
    h) run h-list-acks-later list --list-only --devices "$LIST_DEVICES" --body-bytes "$BODY_BYTES" \
         --chunk "$LIST_CHUNK" --list-repeats "$LIST_REPEATS" --ack-delay-ms 1000 \
         --app @APP@ --src-base 180 ;;
    i) run_bare i-floor-no-acks floor --sockets "$LIST_DEVICES" --ack-bytes 0 --rounds "$((LIST_REPEATS + 1))"
       run_bare i-floor-acks floor --sockets "$LIST_DEVICES" --rounds "$((LIST_REPEATS + 1))"
       run_bare i-floor-acks-watched floor --sockets "$LIST_DEVICES" --rounds "$((LIST_REPEATS + 1))" \
         --watcher ;;
    j) list_against_floor ;;
    k) cluster_scenario ;;
    l) scale_scenario ;;
    m) per_copy_scenario ;;
    n) durable_scenario ;;
    s) flood_scenario ;;
    r) TIMEOUT="${STORM_TIMEOUT:-3600}" ORIGIN_ARGS="$STORM_LIMITS" run r-reconnect-storm storm \
         --devices "${STORM_DEVICES:-15000}" --lists "${STORM_LISTS:-10}" \
         --backlog "${STORM_BACKLOG:-99}" --rounds "${STORM_ROUNDS:-2}" --body-bytes "$BODY_BYTES" --chunk "$LIST_CHUNK" \
         --connect-concurrency 256 --app @APP@ --src-base 160 ;;
    *) echo "bench: unknown scenario $s (a b c d e f g h i j k l m n r s)" >&2; failures=$((failures + 1)) ;;
  esac
done
((failures == 0)) || echo "bench: $failures scenario(s) failed" >&2
exit $((failures > 0))
