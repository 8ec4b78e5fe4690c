#!/bin/sh
# Zero-downtime binary upgrade of a running switchyard under systemd: the unit's ExecReload=.
#
#   install -m 0755 ./switchyard /usr/local/bin/switchyard.new \
#     && mv /usr/local/bin/switchyard.new /usr/local/bin/switchyard
#   systemctl reload switchyard
#
# What it does (pingora's upgrade protocol, see `switchyard run --help`):
#   1. refuses unless the old process answers `status` with phase=idle (an upgrade during a
#      switch would restart the new process on the persisted color and lose the switch);
#   2. `switchyard check` of the config with the NEW binary; on failure nothing is touched;
#   3. starts `switchyard run --config CONFIG --upgrade` in the background and waits until it
#      listens on the upgrade socket (it waits there ~5 s for the old process's sockets);
#   4. sends SIGQUIT to the old process ($MAINPID): it hands its listening sockets over, keeps
#      serving what is open for ~5 s (answering `Connection: close`), then shuts down
#      gracefully within [shutdown] timeout;
#   5. waits for the handover (the new process removes the upgrade socket once it has the
#      sockets), writes the new PID to the unit's PIDFile=, and waits until the new process
#      answers on the admin socket. When this script exits 0, systemd reads PIDFile= and takes
#      the new process as the service's main PID; the old one finishes draining on its own,
#      in the same cgroup but no longer the main process.
#
# Limits, honestly:
#   - Until step 4 a failure leaves the old process serving traffic. BUT the new process
#     takes over the admin socket path as soon as it starts, so if it dies before the handover
#     the old process keeps proxying with no reachable admin socket: `switchyard ctl` fails
#     until the next `systemctl restart switchyard`.
#   - After SIGQUIT there is no way back: if the new process dies during or after the
#     handover, the old one still exits, and the service is down until systemd restarts it
#     (Restart=always in the unit, a cold start: a few seconds without a listener).
#   - The listen addresses must not change across a reload (the new process inherits the old
#     sockets); change them with `systemctl restart`.
#   - A second reload while an old process is still draining is fine; each old process exits
#     by itself within 5 s + [shutdown] timeout.
#
# Usage: switchyard-upgrade.sh CONFIG [OLD_PID]   (OLD_PID defaults to $MAINPID)
# Environment (defaults match conf/switchyard.toml):
#   SWITCHYARD_BIN           /usr/local/bin/switchyard
#   SWITCHYARD_SOCKET        /run/switchyard/admin.sock     ([admin] socket)
#   SWITCHYARD_UPGRADE_SOCK  /run/switchyard/upgrade.sock   ([server] upgrade_sock)
#   PIDFILE                  /run/switchyard/switchyard.pid (systemd sets it from PIDFile=)
#   SWITCHYARD_UPGRADE_FORCE=1  upgrade even while a switch is in progress
set -eu

CONFIG=${1:?usage: switchyard-upgrade.sh CONFIG [OLD_PID]}
OLD=${2:-${MAINPID:-}}
BIN=${SWITCHYARD_BIN:-/usr/local/bin/switchyard}
SOCK=${SWITCHYARD_SOCKET:-/run/switchyard/admin.sock}
UPSOCK=${SWITCHYARD_UPGRADE_SOCK:-/run/switchyard/upgrade.sock}
PIDFILE=${PIDFILE:-/run/switchyard/switchyard.pid}

say() { echo "switchyard-upgrade: $*" >&2; }
die() { say "$*"; exit 1; }

# Polls "$@" every 0.1 s for up to $1 tenths of a second.
wait_for() {
    n=$1; shift
    while [ "$n" -gt 0 ]; do
        if "$@"; then return 0; fi
        n=$((n - 1))
        sleep 0.1
    done
    return 1
}
alive() { kill -0 "$1" 2>/dev/null; }

[ -n "$OLD" ] || die "no old PID (pass it, or run me from ExecReload= where \$MAINPID is set)"
alive "$OLD" || die "old process $OLD is not running; use systemctl restart"

# 1. Only between switches.
status=$("$BIN" ctl --socket "$SOCK" status 2>&1) || die "the running switchyard does not answer on $SOCK: $status"
case "$status" in
    *"phase=idle"*) ;;
    *)
        [ "${SWITCHYARD_UPGRADE_FORCE:-}" = 1 ] || die "a switch is in progress, try again when it is over (or SWITCHYARD_UPGRADE_FORCE=1):
$status"
        ;;
esac

# 2. The new binary must accept the config.
"$BIN" check --config "$CONFIG" >&2 || die "the new binary refuses $CONFIG; nothing was changed"

# 3. Start the new process; it binds the upgrade socket and waits for the old one's sockets.
rm -f "$UPSOCK"
"$BIN" run --config "$CONFIG" --upgrade &
NEW=$!
say "started $BIN (pid $NEW), waiting for it to listen on $UPSOCK"
if ! wait_for 100 sh -c '[ -S "$1" ] || ! kill -0 "$2" 2>/dev/null' _ "$UPSOCK" "$NEW" || ! alive "$NEW"; then
    kill "$NEW" 2>/dev/null || true
    die "the new process did not get ready for the upgrade; the old one ($OLD) keeps serving (its admin socket may be gone: see the limits above)"
fi

# 4. Point of no return.
say "sending SIGQUIT to the old process $OLD"
kill -QUIT "$OLD"

# 5. The new process removes the upgrade socket once it holds the listening sockets.
if ! wait_for 150 sh -c '! [ -e "$1" ] || ! kill -0 "$2" 2>/dev/null' _ "$UPSOCK" "$NEW" || ! alive "$NEW"; then
    die "the handover failed (new process $NEW gone or stuck); the old process is exiting: the service restarts cold (Restart=always)"
fi
echo "$NEW" > "$PIDFILE.tmp"
mv -f "$PIDFILE.tmp" "$PIDFILE"
if ! wait_for 100 "$BIN" ctl --socket "$SOCK" status >/dev/null 2>&1; then
    alive "$NEW" || die "the new process $NEW died after the handover"
    die "the new process $NEW holds the sockets but its admin socket does not answer"
fi
say "upgrade done: pid $NEW serves, old pid $OLD drains and exits by itself"
"$BIN" ctl --socket "$SOCK" status >&2 || true
