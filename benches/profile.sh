#!/usr/bin/env bash
# CPU profile and heap allocations per proxied request (issues 5 and 11), under callgrind.
#
#   benches/profile.sh [--requests N] [--warmup N] [--compare] [--brief] [--out FILE] [--bin PATH]
#                      [--loadgen PATH] [--name NAME] [--route-extra TOML] [--header "Name: value"]
#
# This machine has no hardware counters for perf (`perf stat -e instructions true` says "not
# supported"), so the profile is valgrind's callgrind: instruction counts (Ir) per request,
# which are deterministic, so they are the number that judges hot-path changes. The same
# backend (one nginx worker, small body) and switchyard config (threads = 1) as run.sh.
# The load is `loadgen count` (benches/loadgen/count.rs): 32 keep-alive connections, opened
# and warmed up (--warmup requests each, default 20) before callgrind's instrumentation is
# switched on; then exactly --requests requests (default 10,000) back to back, and the
# instrumentation off once the last response is in. So the window holds a known number of
# requests and no connection setup, and the count does not depend on how busy the machine is.
# --compare profiles nginx (1 worker) and HAProxy (nbthread 1) the same way for reference.
#
# Heap allocations per request are counted in the same window, exactly, from callgrind's call
# counts: calls of the Rust allocator entry points (__rust_alloc, __rust_alloc_zeroed; with
# __rust_realloc counted apart), plus calls of libc's malloc, calloc, posix_memalign,
# aligned_alloc and memalign (realloc apart) for C code and for nginx and HAProxy, whose own
# pools hand out most of their memory without calling malloc. No special build is needed.
#
# Prints Ir and allocations per request and, unless --brief, the top functions (exclusive and
# inclusive); the callgrind files and the top-function listings (NAME.top.txt) stay in
# benches/results/profile/ for callgrind_annotate or kcachegrind. --out FILE writes
# NAME_ir_per_req, NAME_allocs_per_req, NAME_reallocs_per_req, NAME_requests as key=value
# lines (what benches/run.sh reads). --bin (or $SWITCHYARD_BIN) skips `cargo build --release`,
# --loadgen the build of benches/loadgen.rs. --route-extra adds lines to switchyard's route (its
# CORS and rate limit, for run.sh's policies section), --header one field to every request,
# --name names switchyard's profile (default switchyard) in the files and the --out keys.
set -Eeuo pipefail
trap 'echo "profile.sh: line $LINENO: failed: $BASH_COMMAND" >&2' ERR

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUESTS=10000
WARMUP=20
LOADGEN=""
COMPARE=0
BRIEF=0
KV=""
BIN=${SWITCHYARD_BIN:-}
SY_NAME=switchyard
ROUTE_EXTRA=""
HEADER_ARGS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --requests) REQUESTS=$2; shift ;;
        --loadgen) LOADGEN=$2; shift ;;
        --warmup) WARMUP=$2; shift ;;
        --compare) COMPARE=1 ;;
        --brief) BRIEF=1 ;;
        --out) KV=$2; shift ;;
        --bin) BIN=$2; shift ;;
        --name) SY_NAME=$2; shift ;;
        --route-extra) ROUTE_EXTRA=$2; shift ;;
        --header) HEADER_ARGS=(--header "$2"); shift ;;
        -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
        *) echo "profile.sh: unknown argument $1" >&2; exit 2 ;;
    esac
    shift
done
[[ -z "$KV" ]] || : >"$KV"

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
if [[ ${#need[@]} -gt 0 ]]; then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
PATH="$PATH:/usr/sbin"
ulimit -n "$(ulimit -Hn)"
cd "$ROOT"
if [[ -z "$BIN" ]]; then
    cargo build --release --quiet
    BIN=$ROOT/target/release/switchyard
fi
[[ -x "$BIN" ]] || { echo "profile.sh: no switchyard binary at $BIN" >&2; exit 1; }
if [[ -z "$LOADGEN" ]]; then
    cargo build --release --quiet --bench loadgen --message-format=json >"$TMP/loadgen-build.json"
    LOADGEN=$(grep -o '"executable":"[^"]*loadgen[^"]*"' "$TMP/loadgen-build.json" | cut -d'"' -f4 | tail -n 1 || true)
fi
[[ -x "$LOADGEN" ]] || { echo "profile.sh: no loadgen executable (benches/loadgen.rs)" >&2; exit 1; }
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

# Calls per function name in a callgrind file (names may be compressed as "(id) name").
callgrind_calls() {
    awk '
        /^c?fn=/ {
            v = $0; sub(/^c?fn=/, "", v)
            if (match(v, /^\([0-9]+\)/)) {
                id = substr(v, 2, RLENGTH - 2); rest = substr(v, RLENGTH + 1); sub(/^ /, "", rest)
                if (rest != "") names[id] = rest; else rest = names[id]
                v = rest
            }
            if ($0 ~ /^cfn=/) cfn = v
            next
        }
        /^calls=/ { split(substr($0, 7), a, " "); calls[cfn] += a[1] }
        END { for (f in calls) print calls[f], f }
    ' "$1"
}

# Allocations and reallocations in a callgrind file: "ALLOCS REALLOCS".
count_allocs() {
    callgrind_calls "$1" | awk '
        { n = $1; $1 = ""; f = substr($0, 2); sub(/\x27[0-9]+$/, "", f) }
        f ~ /(^|::)__rust_(alloc|alloc_zeroed)$/ || f ~ /^(malloc|calloc|posix_memalign|aligned_alloc|memalign)$/ { a += n }
        f ~ /(^|::)__rust_realloc$/ || f == "realloc" { r += n }
        END { printf "%d %d\n", a, r }
    '
}

profile() { # profile NAME: the process PID[NAME] runs under callgrind on P_PROXY
    local name=$1
    local pid=${PID[$name]}
    wait_port "$P_PROXY" "$name"
    "$LOADGEN" count --url "http://127.0.0.1:$P_PROXY/" --conns 32 --requests "$REQUESTS" \
        --warmup "$WARMUP" --label "$name" --out "$TMP/$name.count" "${HEADER_ARGS[@]}" \
        --on "callgrind_control --instr=on $pid >/dev/null 2>&1" \
        --off "callgrind_control --dump=$name $pid >/dev/null 2>&1 && callgrind_control --instr=off $pid >/dev/null 2>&1"
    local reqs dump total allocs reallocs per
    reqs=$(awk -F= '$1 == "requests" { print $2 }' "$TMP/$name.count")
    stop "$name"
    dump=$(ls -S "$OUT/$name".callgrind* | head -n 1)
    total=$(callgrind_annotate "$dump" 2>/dev/null | awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    read -r allocs reallocs < <(count_allocs "$dump")
    per() { awk -v t="$1" -v r="$reqs" -v f="$2" 'BEGIN { if (r > 0) printf f, t / r; else print "-" }'; }
    {
        echo "-- top functions, exclusive (self) Ir"
        callgrind_annotate --threshold=99 "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,32p'
        echo "-- top functions, inclusive Ir"
        callgrind_annotate --inclusive=yes --threshold=99 "$dump" 2>/dev/null | sed -n '/^Ir/,$p' | sed -n '3,42p'
    } >"$OUT/$name.top.txt"
    echo
    echo "== $name: $reqs requests profiled, $(per "$total" %.0f) instructions per request (all threads), $(per "$allocs" %.2f) heap allocations and $(per "$reallocs" %.2f) reallocations per request"
    [[ $BRIEF == 1 ]] || cat "$OUT/$name.top.txt"
    if [[ -n "$KV" ]]; then
        {
            echo "${name}_requests=$reqs"
            echo "${name}_ir_per_req=$(per "$total" %.0f)"
            echo "${name}_allocs_per_req=$(per "$allocs" %.2f)"
            echo "${name}_reallocs_per_req=$(per "$reallocs" %.2f)"
        } >>"$KV"
    fi
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
$ROUTE_EXTRA
EOF
RUST_LOG=warn start "$SY_NAME" "${VG[@]}" --callgrind-out-file="$OUT/$SY_NAME.callgrind" "$BIN" run --config "$s/switchyard.toml"
profile "$SY_NAME"

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
