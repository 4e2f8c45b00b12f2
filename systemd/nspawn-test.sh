#!/usr/bin/env bash
# Runs systemd/myco-d.service under a real systemd (`make systemd-test`): a Debian bookworm
# container booted with systemd-nspawn (docs/testbed.md), the release myco-d and myco-priv with
# their units and the sysusers file bound in as the packages install them, keys and a certificate
# made with the release `myco`, then:
#
# - systemd-sysusers creates the user myco from systemd/myco.sysusers, and myco-priv.socket starts;
# - `systemctl start` returns and the unit is active: Type=notify's READY=1 arrived;
# - it runs as the user myco, not root, with no capability (what needs root it asks of
#   myco-priv), with MemoryMax and TasksMax in its cgroup;
# - DNS answers on 127.0.0.1:53 and [::1]:53 (`myco_dns_listeners 2`), on the sockets
#   myco-d-dns.socket passed: without a capability it could bind neither itself;
# - the API answers on /run/myco/myco.sock, which is mode 0660, and /health says io_uring (the
#   unit's syscall filter lets the ring through);
# - stderr's `<N>` prefixes became journal priorities, not text;
# - it reads Nix's configuration from inside its sandbox and builds here (the container's Nix has
#   build users and the sandbox, as Nix's defaults say);
# - SIGKILL of the main process: NRestarts goes up and it is active again with a new pid;
# - the watchdog (shortened by a drop-in, so the test is quick) is pet: WatchdogTimestamp moves
#   and no restart happens over 2.5 x WatchdogSec;
# - `systemctl stop` ends it cleanly (Result=success).
#
# The container has its own network namespace with only loopback: nothing leaves this machine.
# Needs root and a cgroup v1 or hybrid host like the project's machines (docs/testbed.md). The root
# filesystem is built once with debootstrap (~50 s) and kept in $MYCO_TEST_CACHE (default
# /var/cache/myco-test) as a zstd tarball and as the unpacked tree that every run boots read-only.
#
# Usage: systemd/nspawn-test.sh RELEASE_DIR   (the directory holding myco-d, myco-priv and myco)

set -euo pipefail

release=$(realpath "${1:?usage: nspawn-test.sh RELEASE_DIR}")
repo=$(cd "$(dirname "$0")/.." && pwd)
# The watchdog the test runs with; the unit's own 30 s would make the test wait a minute.
watchdog_sec=4
# A small reserve still exercises fallocate under the sandbox. The default 500 MB would land in
# the container's tmpfs overlay, whose pages count against MemoryMax=64M.
reserve_bytes=4194304

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
fail() {
	log "FAIL: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || fail "run as root: systemd-nspawn and debootstrap need it"
for binary in myco-d myco-priv myco; do
	[[ -x $release/$binary ]] || fail "$release/$binary is missing; run 'cargo build --release'"
done

# Tools, the cached root filesystem, cgroups, the init wrapper and booting: shared with the
# multi-box testbed (tests/testbed/nspawn.sh).
# shellcheck source=SCRIPTDIR/../tests/testbed/nspawn.sh
source "$repo/tests/testbed/nspawn.sh"
nspawn_tools
nspawn_rootfs

# --- the container's files -------------------------------------------------------------------

work=$(mktemp -d /var/tmp/myco-systemd-test.XXXXXX)
machine=myco-test-$$
nspawn_pid=
NSPAWN_CGROUPS=()

cleanup() {
	local status=$?
	if [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
		[[ $status -ne 0 && -n ${leader:-} ]] && dump_diagnostics
		nspawn_stop "$nspawn_pid"
	fi
	nspawn_cgroups_remove "${NSPAWN_CGROUPS[@]}"
	rm -rf "$work"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nspawn_init_wrapper "$work/init"

# Keys and certificate, as an operator would make them (docs/daemon.md).
mkdir -m 0700 "$work/operator" "$work/etc-myco"
"$release/myco" keygen --out "$work/operator/operator.key" >/dev/null
"$release/myco" keygen --out "$work/etc-myco/node.key" >/dev/null
json_field() { sed -nE "s/.*\"$1\" *: *\"([0-9a-f]+)\".*/\1/p"; }
operator=$("$release/myco" pubkey --key "$work/operator/operator.key" --json \
	| json_field public_key)
node=$("$release/myco" pubkey --key "$work/etc-myco/node.key" --json | json_field public_key)
[[ ${#operator} -eq 64 && ${#node} -eq 64 ]] || fail "could not read public keys from 'myco pubkey'"
"$release/myco" cert --operator-key "$work/operator/operator.key" --node-pubkey "$node" --zone 0 \
	--arch x86_64 --out "$work/etc-myco/node.cert" >/dev/null
# The env file, from the example with the two values filled in.
sed -E -e "s/^MYCO_OPERATOR=.*/MYCO_OPERATOR=$operator/" \
	-e "s/^MYCO_ARGS=.*/MYCO_ARGS=--reserve-bytes $reserve_bytes/" \
	"$repo/systemd/myco-d.env.example" >"$work/etc-myco/myco-d.env"
chmod 0644 "$work/etc-myco/myco-d.env"

mkdir "$work/dropin"
cat >"$work/dropin/test.conf" <<EOF
# The test's only change to the unit: a short watchdog, so that a missed ping shows quickly.
[Service]
WatchdogSec=${watchdog_sec}s
EOF

# --- boot ------------------------------------------------------------------------------------

log "booting $machine"
nspawn_myco_stage "$work/bin" "$release" "$repo/systemd/myco-d.service"
nspawn_myco_binds "$work/bin"
nspawn_boot "$machine" "$work/console.log" --private-network "${NSPAWN_MYCO_BINDS[@]}" \
	--bind-ro="$work/dropin:/etc/systemd/system/myco-d.service.d" \
	--bind-ro="$work/etc-myco:/etc/myco" \
	--bind-ro="$work/init:/myco-test-init" \
	/myco-test-init
nspawn_pid=$NSPAWN_PID
leader=$(nspawn_leader "$nspawn_pid" "$work/console.log")

inside() { nsenter -t "$leader" -a -- "$@"; }
show() { inside systemctl show -p "$1" --value myco-d.service; }

dump_diagnostics() {
	echo "---- systemctl status myco-d" >&2
	inside systemctl status --no-pager -l myco-d.service >&2 || true
	echo "---- journalctl -u myco-d" >&2
	inside journalctl --no-pager -u myco-d.service -n 60 >&2 || true
}

state=
for _ in $(seq 100); do
	state=$(inside systemctl is-system-running 2>/dev/null || true)
	[[ $state == running || $state == degraded ]] && break
	sleep 0.2
done
[[ $state == running || $state == degraded ]] || fail "container did not boot: '$state'"
log "container up ($state), leader pid $leader"

# --- the checks ------------------------------------------------------------------------------

log "systemd-sysusers, then systemctl enable --now myco-priv.socket myco-d"
started=$SECONDS
timeout 60 nsenter -t "$leader" -a -- sh -c "$NSPAWN_MYCO_START" \
	|| fail "systemctl start myco-d failed: READY=1 never came, or the daemon exited"
[[ $(show ActiveState) == active ]] || fail "not active after start"
log "active after $((SECONDS - started)) s: READY=1 arrived"

pid=$(show MainPID)
# /proc/PID belongs to the process's effective uid.
uid=$(inside stat -c %u "/proc/$pid")
log "MainPID=$pid uid=$uid User=$(show User) NRestarts=$(show NRestarts)"
myco=$(inside id -u myco)
((uid != 0 && uid == myco)) || fail "uid $uid: myco-d must run as the user myco (uid $myco), not root"
# No capability at all, none to gain back: port 53 comes from myco-d-dns.socket.
caps=$(inside awk '/^Cap(Eff|Amb|Bnd)/ {print $2}' "/proc/$pid/status" | sort -u)
[[ $caps == 0000000000000000 ]] || fail "capabilities $caps, want none"
log "the user myco (uid $uid) with no capability (effective, ambient, bounding)"
owner=$(inside stat -c '%a %U %G' /run/myco-priv.sock)
[[ $owner == "660 root myco" ]] || fail "the helper's socket is '$owner', not '660 root myco'"
[[ $(show NRestarts) == 0 ]] || fail "restarted while starting"

memory_cgroup=/sys/fs/cgroup/memory/system.slice/myco-d.service
limit=$(inside cat "$memory_cgroup/memory.limit_in_bytes")
tasks=$(inside cat /sys/fs/cgroup/pids/system.slice/myco-d.service/pids.max)
log "cgroup: memory.limit_in_bytes=$limit pids.max=$tasks"
[[ $limit == $((64 * 1024 * 1024)) ]] || fail "MemoryMax is not enforced"
[[ $tasks == 16 ]] || fail "TasksMax is not enforced"

mode=$(inside stat -c %a /run/myco/myco.sock)
[[ $mode == 660 ]] || fail "API socket has mode $mode, not 660"
health=$(inside curl -sS --max-time 5 -w '\n%{http_code}' --unix-socket /run/myco/myco.sock \
	http://localhost/health) || fail "the API socket did not answer"
code=${health##*$'\n'}
body=${health%$'\n'*}
log "GET /health -> $code $body"
[[ $code == 200 ]] || fail "/health answered $code, not 200"
# DNS on 127.0.0.1:53 and [::1]:53 with no capability: only through the sockets systemd passed.
listeners=$(inside curl -sS --max-time 5 --unix-socket /run/myco/myco.sock http://localhost/metrics \
	| sed -n 's/^myco_dns_listeners //p')
[[ $listeners == 2 ]] || fail "myco_dns_listeners is '$listeners', not 2: the DNS sockets were not passed"
log "DNS answers on 2 addresses of port 53, from myco-d-dns.socket"
# The unit's SystemCallFilter must leave io_uring to the daemon (docs/api.md: "io" says which
# loop runs). Only a kernel with io_uring switched off excuses the poll fallback.
case $body in
*'"io":"io_uring"'*) ;;
*'"io":"poll"'*)
	[[ $(cat /proc/sys/kernel/io_uring_disabled 2>/dev/null || echo 0) != 0 ]] \
		|| fail "the daemon fell back to poll: the sandbox blocks io_uring"
	log "note: io_uring is disabled on this kernel; the daemon runs on poll"
	;;
*) fail "/health does not say which event loop runs" ;;
esac

# SyslogLevelPrefix=yes: a `<N>` prefix becomes PRIORITY=N and leaves the message.
messages=$(inside journalctl --no-pager -o cat -u myco-d.service _PID="$pid")
priorities=$(inside journalctl --no-pager -o json -u myco-d.service _PID="$pid" \
	| grep -o '"PRIORITY":"[0-9]"' | sort | uniq -c | tr -s ' \n' ' ')
log "journal priorities: $priorities"
printf '    %s\n' "${messages//$'\n'/$'\n'    }"
[[ -n $messages ]] || fail "the daemon logged nothing"
# The container's Nix has Nix's defaults (build users, the sandbox), which the daemon reads with
# `nix show-config` from inside its own sandbox: it builds here (docs/nix.md, "Builders as root").
grep -q "builds: local here" <<<"$messages" \
	|| fail "the daemon does not build here: $(grep -E 'show-config|builds:' <<<"$messages")"
! grep -qE '^<[0-7]>' <<<"$messages" || fail "priority prefixes reached the journal as text"

log "kill -9 $pid"
inside kill -KILL "$pid"
for _ in $(seq 100); do
	[[ $(show NRestarts) == 1 && $(show ActiveState) == active ]] && break
	sleep 0.2
done
new_pid=$(show MainPID)
[[ $(show NRestarts) == 1 ]] || fail "NRestarts is $(show NRestarts) after SIGKILL, not 1"
[[ $(show ActiveState) == active && $new_pid != "$pid" ]] || fail "did not come back after SIGKILL"
log "back: MainPID=$new_pid NRestarts=1"

# 2.5 x WatchdogSec: a daemon that never pets is killed at least twice in this window.
log "watching the watchdog (WatchdogSec=${watchdog_sec}s) for $((5 * watchdog_sec / 2)) s"
first_ping=$(show WatchdogTimestampMonotonic)
sleep $((5 * watchdog_sec / 2))
last_ping=$(show WatchdogTimestampMonotonic)
[[ $(show NRestarts) == 1 && $(show MainPID) == "$new_pid" ]] \
	|| fail "restarted while idle (NRestarts=$(show NRestarts)): the watchdog is not pet"
((last_ping > first_ping)) || fail "WatchdogTimestamp did not move: no WATCHDOG=1 arrived"
log "watchdog pet: last ping moved by $(((last_ping - first_ping) / 1000)) ms, no restart"

log "systemctl stop myco-d"
inside systemctl stop myco-d.service
result=$(show Result)
[[ $result == success ]] || fail "stop ended with Result=$result, not a clean exit"
log "PASS in $SECONDS s"
