#!/usr/bin/env bash
# Checks the observability files against promtool and a live switchyard:
#   - promtool check rules / test rules on conf/prometheus/alerts.yml (+ alerts.test.yml),
#     promtool check config on conf/prometheus/prometheus.yml;
#   - conf/grafana/switchyard.json: valid JSON, a dashboard that uses ${DS_PROMETHEUS}, every
#     query parses as PromQL (through promtool) and names only metrics switchyard exports;
#   - a real `switchyard demo`: a few requests and a `switch green`, then its /metrics goes
#     through `promtool check metrics` (format and Prometheus naming lint; any finding fails).
# promtool comes from Debian's `prometheus` package, installed here when missing; the
# package's own Prometheus server is never left running.
# Needs: cargo (cmake: scripts/install-deps.sh), python3, curl; apt-get when promtool is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

have() { command -v "$1" >/dev/null 2>&1; }
say() { echo "check-observability: $*" >&2; }
die() { say "FAILED: $*"; exit 1; }

SUDO=""
if [ "$(id -u)" != 0 ] && have sudo; then SUDO="sudo"; fi

WORK=$(mktemp -d)
DEMO_PID=""
POLICY_RC_CREATED=""
cleanup() {
  if [ -n "$DEMO_PID" ] && kill -0 "$DEMO_PID" 2>/dev/null; then
    kill "$DEMO_PID" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$DEMO_PID" 2>/dev/null || break; sleep 0.1; done
    if kill -0 "$DEMO_PID" 2>/dev/null; then kill -9 "$DEMO_PID" 2>/dev/null || true; fi
    wait "$DEMO_PID" 2>/dev/null || true
  fi
  if [ -n "$POLICY_RC_CREATED" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; fi
  rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# PIDs of running Prometheus servers from the Debian package (by executable, not by name).
prometheus_pids() {
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    [ "$exe" = /usr/bin/prometheus ] && echo "${p#/proc/}"
  done
  return 0
}

# --- promtool -----------------------------------------------------------------------------
if ! have promtool; then
  have apt-get || die "promtool is missing and there is no apt-get to install Debian's prometheus package"
  say "installing Debian's prometheus package for promtool"
  before=$(prometheus_pids)
  # Debian starts a package's service on install unless policy-rc.d says no (exit 101); the
  # Prometheus server would then take port 9090 for good. Say no for this install only.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 0755 /usr/sbin/policy-rc.d
    POLICY_RC_CREATED=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  if [ -n "$POLICY_RC_CREATED" ]; then $SUDO rm -f /usr/sbin/policy-rc.d; POLICY_RC_CREATED=""; fi
  # Belt and braces: a server that started anyway is stopped, and not started at boot.
  if [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  fi
  for pid in $(prometheus_pids); do
    case " $before " in *" $pid "*) continue ;; esac
    say "stopping the prometheus server (pid $pid) that the package started"
    $SUDO kill "$pid" 2>/dev/null || true
  done
  have promtool || die "promtool still missing after installing prometheus"
fi
say "$(promtool --version 2>&1 | head -n 1)"

# --- alerting rules and Prometheus config -------------------------------------------------
promtool check rules conf/prometheus/alerts.yml
promtool test rules conf/prometheus/alerts.test.yml
promtool check config conf/prometheus/prometheus.yml

# --- Grafana dashboard --------------------------------------------------------------------
python3 -m json.tool conf/grafana/switchyard.json >/dev/null || die "conf/grafana/switchyard.json is not valid JSON"
# Every query, with Grafana's variables filled in, becomes a recording rule so that promtool
# parses it; metric names are checked against the ones src/metrics.rs registers.
python3 - conf/grafana/switchyard.json src/metrics.rs conf/prometheus/alerts.yml "$WORK/dashboard-queries.yml" <<'EOF' \
  || die "conf/grafana/switchyard.json or alerts.yml does not match switchyard's metrics (above)"
import json, re, sys
dash_path, metrics_rs, alerts_path, out_path = sys.argv[1:5]
errors = []
d = json.load(open(dash_path))
if not isinstance(d.get("schemaVersion"), int) or d["schemaVersion"] < 36:
    errors.append("schemaVersion missing or older than 36")
variables = {v.get("name"): v for v in d.get("templating", {}).get("list", [])}
if variables.get("DS_PROMETHEUS", {}).get("type") != "datasource":
    errors.append("no datasource variable DS_PROMETHEUS")
known = set(re.findall(r'"(switchyard_[a-z_]+)"', open(metrics_rs).read()))
if not known:
    errors.append("found no metric names in " + metrics_rs)
histograms = {n for n in known if n.endswith("_seconds")}
known |= {h + s for h in histograms for s in ("_bucket", "_sum", "_count")}

def metric_names(expr):
    return set(re.findall(r"\b(switchyard_[a-z_]+)\b", expr))

exprs, ids = [], set()
for p in d.get("panels", []):
    title = p.get("title", "?")
    if p.get("id") in ids:
        errors.append(f"panel id {p.get('id')} used twice")
    ids.add(p.get("id"))
    g = p.get("gridPos", {})
    if not all(k in g for k in ("x", "y", "w", "h")):
        errors.append(f"panel {title!r}: incomplete gridPos")
    if not p.get("targets"):
        errors.append(f"panel {title!r}: no query")
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${DS_PROMETHEUS}":
            errors.append(f"panel {title!r}: query does not use ${{DS_PROMETHEUS}}")
        exprs.append((title, t.get("expr", "")))
for a in d.get("annotations", {}).get("list", []):
    if "expr" in a:
        exprs.append(("annotation " + a.get("name", "?"), a["expr"]))
for v in variables.values():
    q = v.get("definition") or ""
    m = re.fullmatch(r"label_values\((.*),\s*\w+\)", q)
    if m:
        exprs.append(("variable " + v["name"], m.group(1)))
    elif v.get("type") == "query":
        exprs.append(("variable " + v["name"], q))
for title, e in exprs:
    unknown = metric_names(e) - known
    if not metric_names(e):
        errors.append(f"{title!r}: no switchyard metric in {e!r}")
    if unknown:
        errors.append(f"{title!r}: unknown metric(s) {sorted(unknown)}")
for name in metric_names(open(alerts_path).read()) - known:
    errors.append(f"alerts.yml: unknown metric {name}")

subst = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h",
         '"$instance"': '".*"', '"$route"': '".*"'}
with open(out_path, "w") as f:
    f.write("groups:\n  - name: dashboard\n    rules:\n")
    for i, (title, e) in enumerate(exprs):
        for k, v in subst.items():
            e = e.replace(k, v)
        if "$" in e:
            errors.append(f"{title!r}: unhandled Grafana variable in {e!r}")
        f.write(f"      - record: dashboard:query{i}\n        expr: {json.dumps(e)}\n")
if errors:
    print("\n".join("dashboard: " + e for e in errors), file=sys.stderr)
    sys.exit(1)
print(f"dashboard: {len(d['panels'])} panels, {len(exprs)} queries over {len(known)} known metric names", file=sys.stderr)
EOF
promtool check rules "$WORK/dashboard-queries.yml" >/dev/null || {
  promtool check rules "$WORK/dashboard-queries.yml" || true
  die "a dashboard query does not parse as PromQL"
}

# --- live scrape of a real switchyard -----------------------------------------------------
cargo build --quiet
BIN=target/debug/switchyard
METRICS_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" demo --port 0 --metrics-port "$METRICS_PORT" --dir "$WORK/demo" >"$WORK/demo.out" 2>"$WORK/demo.err" &
DEMO_PID=$!

METRICS_URL="" FRONT=""
for _ in $(seq 1 300); do
  kill -0 "$DEMO_PID" 2>/dev/null || { cat "$WORK/demo.err" >&2; die "switchyard demo exited"; }
  METRICS_URL=$(sed -n 's|^ *metrics *\(http://[^ ]*/metrics\).*|\1|p' "$WORK/demo.out" | head -n 1)
  FRONT=$(sed -n 's|^ *front door *\(http://[^ ]*/\).*|\1|p' "$WORK/demo.out" | head -n 1)
  if [ -n "$METRICS_URL" ] && [ -n "$FRONT" ] && curl -fsS -o /dev/null "$METRICS_URL" 2>/dev/null; then break; fi
  METRICS_URL=""
  sleep 0.1
done
[ -n "$METRICS_URL" ] || { cat "$WORK/demo.err" >&2; die "switchyard demo did not serve its metrics within 30 s"; }
say "demo up: front door $FRONT, metrics $METRICS_URL"

for _ in $(seq 1 20); do
  curl -fsS -o /dev/null "$FRONT" || die "request to the demo's front door failed"
done
"$BIN" ctl --socket "$WORK/demo/admin.sock" switch green >"$WORK/switch.out" \
  || { cat "$WORK/switch.out" >&2; die "switch green failed"; }
tail -n 1 "$WORK/switch.out" >&2
for _ in $(seq 1 20); do
  curl -fsS -o /dev/null "$FRONT" || die "request to the demo's front door failed after the switch"
done

curl -fsS "$METRICS_URL" >"$WORK/metrics.txt" || die "scraping $METRICS_URL failed"
for name in switchyard_requests_total switchyard_request_duration_seconds switchyard_active_color \
    switchyard_inflight_requests switchyard_websocket_connections switchyard_server_healthy \
    switchyard_switches_total; do
  grep -q "^# TYPE $name " "$WORK/metrics.txt" || die "metric $name missing from the scrape"
done
grep -q '^switchyard_switches_total{result="committed"} 1$' "$WORK/metrics.txt" \
  || die "the committed switch is not counted in switchyard_switches_total"
# promtool exits non-zero on a parse error or on any lint finding, and prints them.
if ! lint=$(promtool check metrics <"$WORK/metrics.txt" 2>&1); then
  echo "$lint" >&2
  die "promtool check metrics reports problems in switchyard's /metrics (above)"
fi
[ -z "$lint" ] || echo "$lint" >&2
say "promtool check metrics: $(grep -c '^# TYPE' "$WORK/metrics.txt") metric families, no problems"
say "all checks passed"
