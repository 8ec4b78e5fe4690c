#!/usr/bin/env bash
# CPU profile of switchyard under the throughput test of benches/run.sh (issue 5).
#
#   benches/profile.sh [--duration S] [--compare]
#
# This machine has no hardware counters for perf (`perf stat -e instructions true` says "not
# supported"), so the profile is valgrind's callgrind: instruction counts (Ir) per request.
# The same backend (one nginx worker, small body) and switchyard config (threads = 1) as
# run.sh; instrumentation is switched on only while `wrk -t1 -c32` runs, after a warm-up.
# --compare profiles nginx (1 worker) and HAProxy (nbthread 1) the same way for reference.
# Prints the top functions (exclusive and inclusive) and Ir per request; the callgrind files
# stay in benches/results/profile/ for callgrind_annotate or kcachegrind.
set -Eeuo pipefail
trap 'echo "profile.sh: line $LINENO: failed: $BASH_COMMAND" >&2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DURATION=15
COMPARE=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --duration) DURATION=$2; shift ;;
        --compare) COMPARE=1 ;;
        *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done

TMP=$(mktemp -d /tmp/switchyard-profile.XXXXXX)
declare -A PID=()
stop() {
    local name=$1 pid=${PID[$1]:-}
    [[ -n "$pid" ]] || return 0
    unset 'PID[$name]'
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() { for n in "${!PID[@]}"; do stop "$n"; done; rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
start() { local name=$1; shift; setsid "$@" >"$TMP/$name.log" 2>&1 & PID[$name]=$!; }
wait_port() {
    for _ in $(seq 600); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        kill -0 "${PID[$2]}" 2>/dev/null || { cat "$TMP/$2.log" >&2; echo "$2 exited" >&2; exit 1; }
        sleep 0.1
    done
    echo "$2 not listening after 60 s" >&2
    exit 1
}

need=()
command -v valgrind >/dev/null || need+=(valgrind)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || need+=(nginx)
[[ -x /usr/sbin/haproxy ]] || command -v haproxy >/dev/null || need+=(haproxy)
command -v wrk >/dev/null || need+=(wrk)
if [[ ${#need[@]} -gt 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
PATH="$PATH:/usr/sbin"
ulimit -n "$(ulimit -Hn)"
cd "$ROOT"
cargo build --release --quiet
BIN=$ROOT/target/release/switchyard
OUT=$ROOT/benches/results/profile
mkdir -p "$OUT"
read -r P_BLUE P_GREEN P_PROXY P_METRICS < <(python3 -c '
import socket
s=[socket.socket() for _ in range(4)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])' 2>/dev/null || echo 28301 28302 28303 28304)

d=$TMP/backend
mkdir -p "$d"
cat >"$d/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/body;
    proxy_temp_path $d/proxy;
    keepalive_requests 10000000;
    default_type text/plain;
    server { listen 127.0.0.1:$P_BLUE; location / { add_header x-color blue always; return 200 "blue\n"; } }
    server { listen 127.0.0.1:$P_GREEN; location / { add_header x-color green always; return 200 "green\n"; } }
}
EOF
start backend nginx -p "$d" -e "$d/error.log" -c "$d/nginx.conf"
wait_port "$P_BLUE" backend

profile() { # profile NAME: the process PID[NAME] runs under callgrind on P_PROXY
    local name=$1
    wait_port "$P_PROXY" "$name"
    wrk -t1 -c32 -d3s "http://127.0.0.1:$P_PROXY/" >/dev/null
    callgrind_control --instr=on "${PID[$name]}" >/dev/null
    wrk -t1 -c32 -d"${DURATION}s" "http://127.0.0.1:$P_PROXY/" >"$TMP/$name.wrk"
    callgrind_control --dump="$name" "${PID[$name]}" >/dev/null
    callgrind_control --instr=off "${PID[$name]}" >/dev/null
    local reqs dump total
    reqs=$(awk '/requests in/ { print $1 }' "$TMP/$name.wrk")
    stop "$name"
    dump=$(ls -S "$OUT/$name".callgrind* | head -n 1)
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    echo
    echo "== $name: $reqs requests profiled, $(awk -v t="$total" -v r="$reqs" 'BEGIN { printf "%.0f", t / r }') instructions per request (all threads)"
    echo "-- top functions, exclusive (self) Ir"
    callgrind_annotate --threshold=99 "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,32p'
    echo "-- top functions, inclusive Ir"
    callgrind_annotate --inclusive=yes --threshold=99 "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,42p'
}

rm -f "$OUT"/*.callgrind*
VG=(valgrind --tool=callgrind --instr-atstart=no --separate-threads=no)

s=$TMP/switchyard
mkdir -p "$s"
cat >"$s/switchyard.toml" <<EOF
[listen]
http = "127.0.0.1:$P_PROXY"
[server]
threads = 1
[admin]
socket = "$s/admin.sock"
metrics = "127.0.0.1:$P_METRICS"
[state]
file = "$s/state"
initial = "blue"
[health]
path = "/health/ready"
interval = "500ms"
timeout = "2s"
[shutdown]
timeout = "1s"
[[route]]
name = "app"
path_prefix = "/"
blue = ["127.0.0.1:$P_BLUE"]
green = ["127.0.0.1:$P_GREEN"]
EOF
RUST_LOG=warn start switchyard "${VG[@]}" --callgrind-out-file="$OUT/switchyard.callgrind" "$BIN" run --config "$s/switchyard.toml"
profile switchyard

if [[ $COMPARE == 1 ]]; then
    n=$TMP/nginx
    mkdir -p "$n"
    cat >"$n/nginx.conf" <<EOF
daemon off;
master_process off;
worker_processes 1;
pid $n/nginx.pid;
error_log $n/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $n/body;
    proxy_temp_path $n/proxy;
    keepalive_requests 10000000;
    upstream app { server 127.0.0.1:$P_BLUE; keepalive 64; }
    server {
        listen 127.0.0.1:$P_PROXY;
        location / {
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Host \$host;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto \$scheme;
        }
    }
}
EOF
    start nginx "${VG[@]}" --callgrind-out-file="$OUT/nginx.callgrind" nginx -p "$n" -e "$n/error.log" -c "$n/nginx.conf"
    profile nginx
    h=$TMP/haproxy
    mkdir -p "$h"
    cat >"$h/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn 4000
defaults
    mode http
    timeout connect 2s
    timeout client 75s
    timeout server 75s
    http-reuse always
    option forwardfor
frontend fe
    bind 127.0.0.1:$P_PROXY
    http-request set-header X-Forwarded-Proto http
    default_backend app
backend app
    server s1 127.0.0.1:$P_BLUE
EOF
    start haproxy "${VG[@]}" --callgrind-out-file="$OUT/haproxy.callgrind" haproxy -db -f "$h/haproxy.cfg"
    profile haproxy
fi
