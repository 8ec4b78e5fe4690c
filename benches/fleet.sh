#!/usr/bin/env bash
# Fleet switch benchmark (issue 12): the time from a fleet decision to every member swapped,
# p50/p99 over N switches, with 3 and with 8 instances on this machine (3-member etcd on
# loopback, started by scripts/fleet-demo.sh).
#
#   benches/fleet.sh                 100 switches each with 3 and 8 instances (about 4 minutes)
#   benches/fleet.sh --switches 20   fewer
#
# What is measured: the switching member's `swap: N/N members on green in Xms` line, from the
# moment its compare-and-swap of the decision returned to the moment every live member's
# record in etcd reported the new epoch. That includes each member's own round trip to etcd
# to say so, so it is an upper bound of decision → every routing table swapped.
# Environment: SWITCHYARD_BIN=path uses a prebuilt binary instead of `cargo build --release`.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SWITCHES=100
while [[ $# -gt 0 ]]; do
  case "$1" in
    --switches) SWITCHES=$2; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "fleet.sh: unknown argument $1 (try --help)" >&2; exit 2 ;;
  esac
  shift
done
if [[ -z "${SWITCHYARD_BIN:-}" ]]; then
  (cd "$ROOT" && cargo build --release --quiet)
  SWITCHYARD_BIN=$ROOT/target/release/switchyard
fi
export SWITCHYARD_BIN

demo_pid=""
stop_demo() {
  if [[ -n "$demo_pid" ]]; then
    kill "$demo_pid" 2>/dev/null || true
    wait "$demo_pid" 2>/dev/null || true
  fi
  demo_pid=""
}
trap stop_demo EXIT

# pct FILE P: the P-th percentile (nearest rank) of the numbers in FILE.
pct() { sort -n "$1" | awk -v p="$2" '{ a[NR] = $1 } END { i = int((p * NR + 99) / 100); if (i < 1) i = 1; print a[i] }'; }

results=""
for members in 3 8; do
  log=$(mktemp)
  MEMBERS=$members WATCH=100ms "$ROOT/scripts/fleet-demo.sh" >"$log" 2>&1 &
  demo_pid=$!
  for _ in $(seq 1 300); do grep -q "Ctrl-C stops everything" "$log" && break; sleep 0.2; done
  grep -q "Ctrl-C stops everything" "$log" || { cat "$log" >&2; exit 1; }
  dir=$(grep -m1 -o '/tmp/switchyard-fleet-demo\.[A-Za-z0-9]*' "$log")
  times=$(mktemp)
  color=green
  for s in $(seq 1 "$SWITCHES"); do
    out=$("$SWITCHYARD_BIN" ctl --socket "$dir/edge-1/admin.sock" switch "$color")
    last=$(tail -1 <<<"$out")
    [[ "$last" == "ok active=$color" ]] || { echo "fleet.sh: switch $s: $out" >&2; exit 1; }
    sed -n "s/^swap: $members\/$members members on $color in \([0-9]*\)ms.*/\1/p" <<<"$out" >>"$times"
    [[ $color == green ]] && color=blue || color=green
  done
  n=$(wc -l <"$times")
  [[ "$n" == "$SWITCHES" ]] || { echo "fleet.sh: only $n of $SWITCHES switches saw every member swap" >&2; exit 1; }
  line="| $members | $SWITCHES | $(pct "$times" 50) ms | $(pct "$times" 99) ms | $(sort -n "$times" | tail -1) ms |"
  echo "$line"
  results+="$line"$'\n'
  stop_demo
  rm -f "$log" "$times"
done
printf '\n| instances | switches | p50 | p99 | max |\n| --- | --- | --- | --- | --- |\n%s' "$results"
