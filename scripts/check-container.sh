#!/usr/bin/env bash
# Builds the container image from the real Dockerfile and runs it, with no Docker engine:
#   1. debian:bookworm-slim, made here: `debootstrap --variant=minbase bookworm` from the mirror
#      apt uses, slimmed like Docker's official -slim image (no docs, man pages, locales, apt
#      lists), committed with buildah. Cached in $SWITCHYARD_CI_CACHE (/var/cache/switchyard-ci):
#      only the first run, or --refresh-base, pays for it.
#   2. cargo build --release --locked (nothing to do when CI built it already), its debug info
#      stripped into target/container/switchyard, then `buildah build --format docker --target
#      prebuilt` (vfs storage, chroot isolation; Docker format keeps HEALTHCHECK and STOPSIGNAL).
#   3. Inspects the image: user 10001 (not root), the three volumes, ports 8000 and 9000,
#      HEALTHCHECK and STOPSIGNAL as the Dockerfile writes them, entrypoint, size (<= 100 MB).
#   4. Runs it (`buildah run`, chroot isolation, host network):
#      - `switchyard check` on conf/compose/switchyard.toml, where compose mounts it
#        (app-blue/app-green resolve to compose.yaml's pinned addresses through /etc/hosts);
#      - the image's ENTRYPOINT + CMD with a config in front of two demo apps on the host
#        (`switchyard demo`); a request from the host; the HEALTHCHECK command inside; `ctl
#        switch green` inside; then the STOPSIGNAL with a request in flight: the request ends
#        200 and the proxy exits 0 within [shutdown] timeout.
# Any failed check exits non-zero. Every process and container it starts is gone on exit, and
# the image it built is deleted (--keep-image keeps it as localhost/switchyard:latest).
#
#   scripts/check-container.sh [--keep-image] [--refresh-base]
#
# Needs root (debootstrap and chroot isolation), cargo, objcopy, python3, curl, flock; installs
# debootstrap and buildah with apt-get when missing. DEBIAN_MIRROR overrides the mirror.
set -Eeuo pipefail
trap 'echo "check-container: line $LINENO: failed: $BASH_COMMAND" >&2' ERR
cd "$(dirname "$0")/.."
ROOT=$PWD

KEEP_IMAGE=0
REFRESH_BASE=0
for arg in "$@"; do
  case "$arg" in
    --keep-image) KEEP_IMAGE=1 ;;
    --refresh-base) REFRESH_BASE=1 ;;
    -h | --help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check-container: unknown argument $arg (try --help)" >&2; exit 2 ;;
  esac
done

have() { command -v "$1" >/dev/null 2>&1; }
say() { printf 'check-container: %s\n' "$*" >&2; }
ok() { printf 'check-container: ok   %s\n' "$*" >&2; }
die() { printf 'check-container: FAILED: %s\n' "$*" >&2; exit 1; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

[ "$(id -u)" = 0 ] || die "run as root: debootstrap and buildah's chroot isolation need it"

CACHE=${SWITCHYARD_CI_CACHE:-/var/cache/switchyard-ci}
BASE=docker.io/library/debian:bookworm-slim
IMAGE=localhost/switchyard:check-$$
BUILDAH=(buildah --storage-driver vfs --root "$CACHE/storage" --runroot /run/switchyard-ci/storage)
# The limit the project set for the image (the proxy binary plus Debian's slim base).
MAX_IMAGE_MB=100

TMP=$(mktemp -d /tmp/switchyard-container.XXXXXX)
ROOTFS=""
CONTAINERS=()
PGIDS=()
BUILT_IMAGE=""
cleanup() {
  local rc=$? pg c
  set +e
  trap - ERR
  for pg in "${PGIDS[@]}"; do
    kill -TERM -- "-$pg" 2>/dev/null
    for _ in $(seq 50); do kill -0 -- "-$pg" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pg" 2>/dev/null
  done
  # The proxy is in buildah's session; should buildah have given it a group of its own.
  if [ -n "${SY_PID:-}" ] && kill -0 "$SY_PID" 2>/dev/null; then kill -KILL "$SY_PID"; fi
  for c in "${CONTAINERS[@]}"; do "${BUILDAH[@]}" rm "$c" >/dev/null 2>&1; done
  if [ -n "$BUILT_IMAGE" ] && [ "$KEEP_IMAGE" = 0 ]; then
    "${BUILDAH[@]}" rmi "$BUILT_IMAGE" >/dev/null 2>&1
  fi
  if [ -n "$ROOTFS" ] && [ -d "$ROOTFS" ]; then
    # debootstrap mounts /proc and /sys inside while it works: never delete through them.
    umount -R "$ROOTFS/proc" "$ROOTFS/sys" "$ROOTFS/dev/pts" 2>/dev/null
    rm -rf --one-file-system "$ROOTFS"
  fi
  rm -f "$ROOT/target/container/switchyard"
  if [ "$rc" != 0 ]; then
    for f in "$TMP"/*.log; do
      [ -s "$f" ] || continue
      echo "--- $f (last 20 lines)" >&2
      tail -n 20 "$f" >&2
    done
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

T_ALL=$(now)

# --- tools --------------------------------------------------------------------------------
need=()
have debootstrap || need+=(debootstrap)
have buildah || need+=(buildah)
if [ ${#need[@]} -gt 0 ]; then
  have apt-get || die "${need[*]} missing and no apt-get to install them with"
  say "installing ${need[*]} with apt-get"
  t=$(now)
  apt-get update -qq
  # buildah's recommends (runc/crun, fuse-overlayfs) serve other isolations and drivers.
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  say "installed in $(since "$t") s"
fi
for tool in debootstrap buildah cargo objcopy python3 curl flock; do
  have "$tool" || die "$tool is missing"
done
say "$(buildah --version), debootstrap $(dpkg-query -W -f '${Version}' debootstrap 2>/dev/null || echo '?')"
mkdir -p "$CACHE" /run/switchyard-ci

# --- 1. the base image --------------------------------------------------------------------
# The mirror apt uses for bookworm's main component (sources.list or deb822, either way).
mirror() {
  if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
  local m
  m=$(apt-cache policy 2>/dev/null | awk '$3 == "bookworm/main" { print $2; exit }')
  echo "${m:-http://deb.debian.org/debian}"
}

# What debuerreotype's --slimify does for Docker's official debian:*-slim images, so that the
# size measured here is what users' builds get.
slimify() {
  local r=$1
  cat >"$r/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
EOF
  find "$r/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
  find "$r/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "${r:?}"/usr/share/{groff,info,linda,lintian,man}/*
  find "$r/usr/share/locale" -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +
  printf '%s\n' 'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
    'APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/*.bin || true"; };' \
    'Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";' >"$r/etc/apt/apt.conf.d/docker-clean"
  echo 'Acquire::Languages "none";' >"$r/etc/apt/apt.conf.d/docker-no-languages"
  rm -rf "$r"/var/cache/apt/archives/*.deb "$r"/var/cache/apt/*.bin "$r"/var/lib/apt/lists/*
  # The container runtime provides these; debootstrap copied the build machine's.
  rm -rf "${r:?}"/dev/* "$r/etc/hostname" "$r/etc/resolv.conf" "$r"/var/log/*.log
}

base_image() {
  exec 9>"$CACHE/base.lock"
  flock 9 # one build of the base at a time; a concurrent run waits and then reuses it
  if [ "$REFRESH_BASE" = 0 ] && "${BUILDAH[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
    say "base image $BASE: cached in $CACHE/storage, built $("${BUILDAH[@]}" inspect --type image \
      --format '{{index .Docker.Config.Labels "org.switchyard.ci.base"}}' "$BASE" 2>/dev/null || echo '?')"
    exec 9>&-
    return
  fi
  local m t ctr mnt
  m=$(mirror)
  say "base image $BASE: debootstrap --variant=minbase bookworm from $m"
  t=$(now)
  ROOTFS=$CACHE/rootfs.$$
  debootstrap --variant=minbase bookworm "$ROOTFS" "$m" >"$TMP/debootstrap.log" 2>&1 \
    || die "debootstrap failed (log above)"
  slimify "$ROOTFS"
  ctr=$("${BUILDAH[@]}" from scratch)
  CONTAINERS+=("$ctr")
  mnt=$("${BUILDAH[@]}" mount "$ctr")
  cp -a "$ROOTFS/." "$mnt/"
  "${BUILDAH[@]}" umount "$ctr" >/dev/null
  "${BUILDAH[@]}" config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["bash"]' --label "org.switchyard.ci.base=$(date -u +%FT%TZ) from $m" "$ctr"
  "${BUILDAH[@]}" commit --quiet --format docker --rm "$ctr" "$BASE" >/dev/null
  CONTAINERS=()
  umount -R "$ROOTFS/proc" "$ROOTFS/sys" 2>/dev/null || true
  rm -rf --one-file-system "$ROOTFS"
  ROOTFS=""
  say "base image built in $(since "$t") s"
  exec 9>&-
}

T=$(now)
base_image
T_BASE=$(since "$T")

# --- 2. the image -------------------------------------------------------------------------
T=$(now)
say "cargo build --release --locked"
cargo build --release --locked --quiet
mkdir -p target/container
objcopy --strip-debug target/release/switchyard target/container/switchyard
say "buildah build --format docker --target prebuilt -t $IMAGE"
BUILT_IMAGE=$IMAGE
"${BUILDAH[@]}" build --quiet --isolation chroot --format docker --pull=never \
  --target prebuilt -t "$IMAGE" -f Dockerfile . >"$TMP/build.log" 2>&1 \
  || die "buildah build failed (log above)"
T_BUILD=$(since "$T")
ok "image built in $T_BUILD s"

# --- 3. inspect ---------------------------------------------------------------------------
"${BUILDAH[@]}" inspect --type image "$IMAGE" >"$TMP/inspect.json"
ctr=$("${BUILDAH[@]}" from --pull=never --name "switchyard-check-$$" "$IMAGE")
CONTAINERS+=("$ctr")
mnt=$("${BUILDAH[@]}" mount "$ctr")
IMAGE_BYTES=$(du -sb "$mnt" | cut -f1)
"${BUILDAH[@]}" umount "$ctr" >/dev/null
IMAGE_MB=$(awk -v b="$IMAGE_BYTES" 'BEGIN { printf "%.1f", b / 1e6 }')
BIN_MB=$(awk -v b="$(stat -c %s target/container/switchyard)" 'BEGIN { printf "%.1f", b / 1e6 }')

# Prints KEY=VALUE lines for the shell (the STOPSIGNAL, the HEALTHCHECK command, ENTRYPOINT +
# CMD), one "ok ..." line per check, and exits 1 on the first mismatch.
python3 - "$TMP/inspect.json" Dockerfile "$mnt/etc/passwd" >"$TMP/inspect.out" <<'PY' || die "image inspection (above)"
import json, re, shlex, sys

config = json.load(open(sys.argv[1]))["Docker"]["config"]
text = re.sub(r"\\\n", " ", open(sys.argv[2]).read())
def fail(msg):
    print(f"check-container: FAILED: {msg}", file=sys.stderr)
    sys.exit(1)
def ok(msg):
    print(f"check-container: ok   {msg}", file=sys.stderr)

# The Dockerfile's instructions of the `runtime` stage (both targets inherit it).
stage = re.search(r"^FROM debian:bookworm-slim AS runtime$(.*?)^FROM ", text, re.M | re.S)
if not stage:
    fail("Dockerfile: no `FROM debian:bookworm-slim AS runtime` stage")
written = {}
for line in stage.group(1).splitlines():
    m = re.match(r"\s*(HEALTHCHECK|STOPSIGNAL)\s+(.*)", line)
    if m:
        written[m.group(1)] = m.group(2).strip()

user = config.get("User") or ""
if user in ("", "root", "0") or user.startswith(("root:", "0:")):
    fail(f"image user is {user!r}: it must not run as root")
uids = {f[0]: f[2] for f in (l.split(":") for l in open(sys.argv[3])) if len(f) > 2}
uid = user if user.isdigit() else uids.get(user.split(":")[0])
if uid != "10001":
    fail(f"image user {user!r} has uid {uid}, not 10001")
ok(f"user {user} (uid {uid}, not root)")

volumes = sorted(config.get("Volumes") or {})
want = ["/etc/switchyard", "/run/switchyard", "/var/lib/switchyard"]
if volumes != want:
    fail(f"volumes {volumes}, want {want}")
ok(f"volumes {' '.join(volumes)}")

ports = sorted(config.get("ExposedPorts") or {})
if ports != ["8000/tcp", "9000/tcp"]:
    fail(f"exposed ports {ports}, want 8000/tcp 9000/tcp")
ok(f"ports {' '.join(ports)}")

hc = config.get("Healthcheck")
if not hc or "HEALTHCHECK" not in written:
    fail(f"HEALTHCHECK missing (image: {hc}, Dockerfile: {written.get('HEALTHCHECK')})")
m = re.match(r"((?:--[a-z-]+=\S+\s+)*)CMD\s+(\[.*\])$", written["HEALTHCHECK"])
if not m:
    fail(f"cannot read the Dockerfile's HEALTHCHECK: {written['HEALTHCHECK']}")
secs = {"ms": 1e-3, "s": 1, "m": 60, "h": 3600}
def ns(v):
    d = re.fullmatch(r"(\d+)(ms|s|m|h)", v)
    return int(int(d.group(1)) * secs[d.group(2)] * 1e9)
opts = dict(o[2:].split("=", 1) for o in m.group(1).split())
want_hc = {"Test": ["CMD"] + json.loads(m.group(2))}
for opt, key in (("interval", "Interval"), ("timeout", "Timeout"), ("start-period", "StartPeriod")):
    if opt in opts:
        want_hc[key] = ns(opts[opt])
if "retries" in opts:
    want_hc["Retries"] = int(opts["retries"])
for key, value in want_hc.items():
    if hc.get(key) != value:
        fail(f"HEALTHCHECK {key} is {hc.get(key)!r} in the image, {value!r} in the Dockerfile")
if want_hc["Test"][1:3] != ["switchyard", "ctl"] or want_hc["Test"][-1] != "status":
    fail(f"HEALTHCHECK is not `switchyard ctl ... status`: {want_hc['Test']}")
ok(f"HEALTHCHECK {' '.join(written['HEALTHCHECK'].split())}")

if config.get("StopSignal") != written.get("STOPSIGNAL") or written.get("STOPSIGNAL") != "SIGTERM":
    fail(f"STOPSIGNAL is {config.get('StopSignal')!r} in the image, {written.get('STOPSIGNAL')!r} in the Dockerfile, want SIGTERM")
ok(f"STOPSIGNAL {config['StopSignal']}")

argv = (config.get("Entrypoint") or []) + (config.get("Cmd") or [])
if argv[:2] != ["switchyard", "run"]:
    fail(f"ENTRYPOINT + CMD is {argv}, want switchyard run ...")
ok(f"ENTRYPOINT + CMD {' '.join(argv)}")

print(f"STOPSIGNAL={shlex.quote(config['StopSignal'])}")
print(f"HEALTHCHECK=({' '.join(shlex.quote(a) for a in want_hc['Test'][1:])})")
print(f"DEFAULT_CMD=({' '.join(shlex.quote(a) for a in argv)})")
PY
# shellcheck source=/dev/null
source "$TMP/inspect.out"
awk -v mb="$IMAGE_MB" -v max="$MAX_IMAGE_MB" 'BEGIN { exit !(mb <= max) }' \
  || die "image is $IMAGE_MB MB, over the $MAX_IMAGE_MB MB limit"
ok "image size $IMAGE_MB MB (its files; \`buildah images\`: $("${BUILDAH[@]}" images --format '{{.Size}}' "$IMAGE"); switchyard binary $BIN_MB MB; limit $MAX_IMAGE_MB MB)"

# --- 4. run it ----------------------------------------------------------------------------
# A process inside the image, as `docker run`/`docker exec` would start it: the image's user,
# the host's network (chroot isolation has no network of its own). The image's three volumes
# are the working container's own, shared by every `buildah run` of it as `docker exec` shares
# a container's. Nothing is bind-mounted over them: in buildah 1.28 a bind mount onto an image
# volume loses to the empty volume now and then (1 run in 10 here).
in_image() { # in_image [buildah run options...] -- COMMAND...
  local opts=()
  while [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  "${BUILDAH[@]}" run --isolation chroot --network host "${opts[@]}" "$ctr" -- "$@"
}

# Puts FILE at /etc/switchyard/switchyard.toml in the container's config volume, as
# `docker cp` would (compose bind-mounts it there instead).
put_config() {
  mkdir -p "$TMP/in"
  cp "$1" "$TMP/in/switchyard.toml"
  chmod 0755 "$TMP" "$TMP/in"
  chmod 0644 "$TMP/in/switchyard.toml"
  in_image -v "$TMP/in:/mnt/switchyard-ci:ro" -- cp /mnt/switchyard-ci/switchyard.toml /etc/switchyard/switchyard.toml \
    || die "cannot put $1 into the container's /etc/switchyard"
}

# check on the compose config, where compose mounts it, the app names given the addresses
# compose.yaml pins for them.
pinned() { awk -v s="  $1:" '$0 == s { f = 1 } f && /ipv4_address:/ { print $2; exit }' conf/compose.yaml; }
blue_ip=$(pinned app-blue)
green_ip=$(pinned app-green)
[[ -n $blue_ip && -n $green_ip ]] || die "conf/compose.yaml: no ipv4_address for app-blue/app-green"
printf '127.0.0.1 localhost\n%s app-blue\n%s app-green\n' "$blue_ip" "$green_ip" >"$TMP/hosts"
put_config conf/compose/switchyard.toml
in_image --no-hosts -v "$TMP/hosts:/etc/hosts:ro" -- switchyard check --config /etc/switchyard/switchyard.toml >"$TMP/check.out" 2>&1 \
  || { cat "$TMP/check.out" >&2; die "switchyard check on conf/compose/switchyard.toml inside the image"; }
ok "inside: $(cat "$TMP/check.out")"

free_ports() { # free_ports N: N distinct free TCP ports on 127.0.0.1
  python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"
}
start() { # start NAME CMD...: in the background, in its own process group, logging to $TMP/NAME.log
  local name=$1
  shift
  setsid "$@" >"$TMP/$name.log" 2>&1 &
  PGIDS+=("$!")
  LAST_PID=$!
}

# Two demo apps (blue, green) on the host; `switchyard demo` runs them (and a proxy, unused),
# every port picked by the kernel. The proxy's ports are picked once they are taken.
start demo target/container/switchyard demo --port 0 --dir "$TMP/demo"
for _ in $(seq 100); do
  grep -qs 'blue app on' "$TMP/demo.log" && break
  kill -0 "$LAST_PID" 2>/dev/null || die "switchyard demo exited at start"
  sleep 0.1
done
BLUE=$(sed -n 's/.*blue app on \([0-9.:]*\),.*/\1/p' "$TMP/demo.log")
GREEN=$(sed -n 's/.*green app on \([0-9.:]*\)).*/\1/p' "$TMP/demo.log")
[[ -n $BLUE && -n $GREEN ]] || die "could not read the demo apps' addresses from its output"
read -r P_PROXY P_METRICS <<<"$(free_ports 2)"

SHUTDOWN_S=10
mkdir -p "$TMP/etc"
cat >"$TMP/etc/switchyard.toml" <<EOF
# written by scripts/check-container.sh: the image's volumes, two demo apps on the host
[listen]
http = "127.0.0.1:$P_PROXY"

[server]
threads = 2

[admin]
socket = "/run/switchyard/admin.sock"
metrics = "127.0.0.1:$P_METRICS"

[state]
file = "/var/lib/switchyard/state"
initial = "blue"

[health]
path = "/health/ready"
interval = "500ms"
timeout = "500ms"
rise = 2
fall = 2

[switch]
gate_timeout = "10s"
drain_timeout = "5s"
watch = "2s"
max_errors = 3

[shutdown]
timeout = "${SHUTDOWN_S}s"

[[route]]
name = "app"
path_prefix = "/"
blue = ["$BLUE"]
green = ["$GREEN"]
EOF
put_config "$TMP/etc/switchyard.toml"

say "running the image's command: ${DEFAULT_CMD[*]} (blue $BLUE, green $GREEN, front door 127.0.0.1:$P_PROXY)"
start proxy "${BUILDAH[@]}" run --isolation chroot --network host "$ctr" -- "${DEFAULT_CMD[@]}"
PROXY=$LAST_PID
# The proxy's own process (under `buildah run`, in its session), which a container stop signals.
SY_PID=""
for _ in $(seq 300); do
  kill -0 "$PROXY" 2>/dev/null || die "the proxy exited at start"
  SY_PID=$(pgrep -s "$PROXY" -x switchyard | head -n 1 || true)
  [ -n "$SY_PID" ] && break
  sleep 0.1
done
[ -n "$SY_PID" ] || die "no switchyard process under buildah run after 30 s"
for _ in $(seq 300); do
  kill -0 "$PROXY" 2>/dev/null || die "the proxy exited at start"
  # Up once the front door answers 200: blue's health checks passed.
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_PROXY/" || true)" = 200 ] && break
  sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$P_PROXY/")" = 200 ] \
  || die "the proxy does not answer 200 after 30 s"
SY_UID=$(awk '/^Uid:/ { print $2 }' "/proc/$SY_PID/status")
[ "$SY_UID" = 10001 ] || die "the proxy runs as uid $SY_UID, not 10001"
ok "proxy running as uid $SY_UID (pid $SY_PID), ready"

answer() { curl -sS --max-time 5 "http://127.0.0.1:$P_PROXY/" 2>&1 || true; }
body=$(answer)
[ "$body" = blue ] || die "request from the host: got '$body', want 'blue'"
ok "request from the host through the proxy: $body"

t=$(now)
out=$(in_image -- "${HEALTHCHECK[@]}" 2>&1) \
  || { echo "$out" >&2; die "the HEALTHCHECK command (${HEALTHCHECK[*]}) failed inside"; }
ok "inside: HEALTHCHECK ${HEALTHCHECK[*]} exited 0 in $(since "$t") s: $(echo "$out" | tail -n 1)"

# The README's `docker exec CONTAINER switchyard ctl ...` form: the default socket path.
out=$(in_image -- switchyard ctl switch green 2>&1) \
  || { echo "$out" >&2; die "switchyard ctl switch green failed inside"; }
[ "$(echo "$out" | tail -n 1)" = "ok active=green" ] || { echo "$out" >&2; die "switch green: last line is not 'ok active=green'"; }
ok "inside: switchyard ctl switch green: $(echo "$out" | tr '\n' ';' | sed 's/;$//; s/;/; /g')"
body=$(answer)
[ "$body" = green ] || die "after the switch: got '$body', want 'green'"
ok "request from the host after the switch: $body"
state=$(in_image -- cat /var/lib/switchyard/state 2>&1) || die "no state file in the /var/lib/switchyard volume: $state"
ok "inside: the state file in the /var/lib/switchyard volume says: $state"

# The container stop: a request in flight must finish, and the proxy must exit 0 in time.
start slow curl -sS --max-time 30 -o "$TMP/slow.body" -w '%{http_code}' \
  "http://127.0.0.1:$P_PROXY/slow?sleep_ms=2000"
SLOW=$LAST_PID
inflight() {
  local m
  m=$(curl -s "http://127.0.0.1:$P_METRICS/metrics" || true)
  grep -q '^switchyard_inflight_requests{color="green"} 1$' <<<"$m"
}
for _ in $(seq 50); do inflight && break; sleep 0.1; done
inflight || die "the slow request is not in flight after 5 s (switchyard_inflight_requests)"
t=$(now)
kill -s "$STOPSIGNAL" "$SY_PID"
rc=0
deadline=$(( SHUTDOWN_S * 10 + 50 ))
for _ in $(seq "$deadline"); do kill -0 "$PROXY" 2>/dev/null || break; sleep 0.1; done
kill -0 "$PROXY" 2>/dev/null && die "the proxy still runs $(since "$t") s after $STOPSIGNAL ([shutdown] timeout ${SHUTDOWN_S}s)"
wait "$PROXY" || rc=$?
stop_s=$(since "$t")
[ "$rc" = 0 ] || die "the proxy exited with $rc after $STOPSIGNAL"
awk -v s="$stop_s" -v max="$SHUTDOWN_S" 'BEGIN { exit !(s <= max) }' \
  || die "the proxy took $stop_s s to stop, over [shutdown] timeout ${SHUTDOWN_S}s"
wait "$SLOW" || true
[[ $(cat "$TMP/slow.log") == 200 && $(cat "$TMP/slow.body") == green ]] \
  || die "the request in flight at $STOPSIGNAL got: $(cat "$TMP/slow.log") '$(cat "$TMP/slow.body" 2>/dev/null)'"
ok "$STOPSIGNAL: the request in flight ended 200, the proxy exited 0 in $stop_s s ([shutdown] timeout ${SHUTDOWN_S}s)"

say "all checks passed: image $IMAGE_MB MB; base image ${T_BASE} s, image build ${T_BUILD} s, total $(since "$T_ALL") s"
if [ "$KEEP_IMAGE" = 1 ]; then
  "${BUILDAH[@]}" tag "$IMAGE" localhost/switchyard:latest
  "${BUILDAH[@]}" rmi "$IMAGE" >/dev/null
  say "kept the image: localhost/switchyard:latest (buildah ${BUILDAH[*]:1} images)"
fi
