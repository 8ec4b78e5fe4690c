#!/usr/bin/env bash
# The fleet tour (`make fleet-demo`): a local 3-member etcd cluster, the blue and green demo
# apps, and three switchyard instances (edge-1..3) that switch as one fleet. Everything lives
# in a temp dir and stops on Ctrl-C. Needs etcd (scripts/install-deps.sh installs it).
#
# Ports (override with the environment): etcd clients 23791-23793 (peers 23801-23803), demo
# apps 3100 (blue) and 3101 (green), front doors 8101-8103, metrics 9101-9103.
# MEMBERS=N (1-9) starts N instances instead of 3; WATCH sets [switch] watch (default 10s);
# benches/fleet.sh uses both.
set -euo pipefail
cd "$(dirname "$0")/.."

bin=${SWITCHYARD_BIN:-target/release/switchyard}
etcd_base=${ETCD_BASE:-2379}     # client ports ${etcd_base}1..3, peers $((etcd_base+1))1..3
front_base=${FRONT_BASE:-810}    # front doors ${front_base}1..3
metrics_base=${METRICS_BASE:-910}
blue_port=${BLUE_PORT:-3100}
green_port=${GREEN_PORT:-3101}
members=${MEMBERS:-3}
watch=${WATCH:-10s}

command -v etcd >/dev/null || { echo "fleet-demo: etcd is missing; run scripts/install-deps.sh" >&2; exit 1; }
[ -x "$bin" ] || { echo "fleet-demo: $bin is missing; run cargo build --release" >&2; exit 1; }

dir=$(mktemp -d /tmp/switchyard-fleet-demo.XXXXXX)
pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # etcd's graceful stop tries to hand leadership to members that are stopping too; its
  # data is a temp dir, so after 2 s it is killed.
  for _ in $(seq 1 20); do
    alive=0
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  # etcd preallocates ~80 MB of WAL per member: keep the logs, not the data.
  rm -rf "$dir"/etcd[0-9]
  echo "fleet-demo: stopped; logs are in $dir"
  exit 0
}
trap cleanup INT TERM EXIT

cluster=""
for i in 1 2 3; do
  cluster+="${cluster:+,}etcd$i=http://127.0.0.1:$((etcd_base + 1))$i"
done
endpoints=""
for i in 1 2 3; do
  etcd --name "etcd$i" --data-dir "$dir/etcd$i" \
    --listen-client-urls "http://127.0.0.1:${etcd_base}$i" \
    --advertise-client-urls "http://127.0.0.1:${etcd_base}$i" \
    --listen-peer-urls "http://127.0.0.1:$((etcd_base + 1))$i" \
    --initial-advertise-peer-urls "http://127.0.0.1:$((etcd_base + 1))$i" \
    --initial-cluster "$cluster" --initial-cluster-state new \
    --initial-cluster-token switchyard-fleet-demo \
    --logger zap --log-level warn >"$dir/etcd$i.log" 2>&1 &
  pids+=($!)
  endpoints+="${endpoints:+, }\"http://127.0.0.1:${etcd_base}$i\""
done

"$bin" demo --apps-only --blue-port "$blue_port" --green-port "$green_port" >"$dir/apps.log" 2>&1 &
pids+=($!)

for i in $(seq 1 "$members"); do
  mkdir -p "$dir/edge-$i"
  cat >"$dir/edge-$i/switchyard.toml" <<TOML
[listen]
http = "127.0.0.1:${front_base}$i"

[admin]
socket = "$dir/edge-$i/admin.sock"
metrics = "127.0.0.1:${metrics_base}$i"

[state]
file = "$dir/edge-$i/state"

[health]
interval = "500ms"
timeout = "500ms"
rise = 2
fall = 2

[switch]
gate_timeout = "10s"
drain_timeout = "5s"
watch = "$watch"

[fleet]
etcd = [$endpoints]
name = "demo"
member = "edge-$i"
lease_ttl = "3s"
min_members = 2

[[route]]
name = "app"
path_prefix = "/"
blue = ["127.0.0.1:$blue_port"]
green = ["127.0.0.1:$green_port"]
TOML
  "$bin" run --config "$dir/edge-$i/switchyard.toml" 2>"$dir/edge-$i.log" &
  pids+=($!)
done

# Ready: each instance answers /ready once it has confirmed the fleet's color from etcd.
for i in $(seq 1 "$members"); do
  for _ in $(seq 1 150); do
    curl -sf "http://127.0.0.1:${metrics_base}$i/ready" >/dev/null 2>&1 && break
    sleep 0.2
  done
  curl -sf "http://127.0.0.1:${metrics_base}$i/ready" >/dev/null 2>&1 ||
    { echo "fleet-demo: edge-$i is not ready; see $dir/edge-$i.log" >&2; exit 1; }
done

ctl="$bin ctl --socket $dir/edge"
cat <<TXT

switchyard fleet demo is running (everything in $dir)
  etcd         $endpoints
  demo apps    blue 127.0.0.1:$blue_port, green 127.0.0.1:$green_port
  edge-1..$members    front doors http://127.0.0.1:${front_base}1/ .. ${front_base}$members/, /ready on :${metrics_base}1 .. :${metrics_base}$members

Try, in another terminal:
  for i in 1 2 3; do curl -s http://127.0.0.1:${front_base}\$i/; done        # blue x3
  $ctl-1/admin.sock switch green                  # on one member: the whole fleet moves
  for i in 1 2 3; do curl -s http://127.0.0.1:${front_base}\$i/; done        # green x3
  $ctl-2/admin.sock members                       # every member: color, epoch, health, last seen
  $ctl-3/admin.sock status                        # fleet=demo members=3/3 epoch=1 connected
  $ctl-3/admin.sock rollback                      # from any member: the fleet goes back
Faults to try (docs/fleet.md says what happens):
  kill -STOP <pid of an etcd>  x2                 # no quorum: detached, traffic stays, switch refused
  kill -STOP <pid of edge-1> during its switch    # the fleet rolls back once after lease_ttl (3s)
Ctrl-C stops everything.
TXT
wait
