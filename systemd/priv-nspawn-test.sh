#!/usr/bin/env bash
# Runs systemd/myco-priv.socket and myco-priv.service under a real systemd (`make
# priv-systemd-test`): a Debian bookworm container booted with systemd-nspawn, as
# systemd/nspawn-test.sh boots myco-d's, with the release myco-priv and both units bound in, and
# the system user `myco` for the daemon (systemd/myco.sysusers, by systemd-sysusers), and /etc/myco/myco-d.env naming a fresh operator key
# (`myco keygen`), whose key file the test reads to sign its entries. Then:
#
# - the socket is /run/myco-priv.sock, root:myco, mode 0660;
# - as `myco`, the `under_a_real_systemd` test of myco-host/tests/privileged.rs (bound in,
#   ignored in ordinary runs) talks to it: a unit it writes is loaded by `show`, enabled with
#   no reload and running, a new file under it makes `show` say it needs one, `show` and the
#   journal come back on the test's pipe, nix-collect-garbage runs through systemd-run
#   with its output on that pipe too, hostile requests are refused, and disabling and removing
#   the unit leaves it inactive. So the sandbox of myco-priv.service leaves it what it
#   needs (systemctl and journalctl through systemd's sockets, /etc/systemd/system writable);
# - a user outside the group `myco` cannot connect at all;
# - the helper socket-activated by that runs as root with no capability and no network interface
#   but loopback.
#
# Needs root (docs/testbed.md). The container has only loopback: nothing leaves this machine.
#
# Usage: systemd/priv-nspawn-test.sh MYCO_PRIV_BINARY PRIVILEGED_TEST_BINARY MYCO_BINARY

set -euo pipefail

usage="usage: priv-nspawn-test.sh MYCO_PRIV_BINARY PRIVILEGED_TEST_BINARY MYCO_BINARY"
binary=$(realpath "${1:?$usage}")
tests=$(realpath "${2:?$usage}")
myco=$(realpath "${3:?$usage}")
repo=$(cd "$(dirname "$0")/.." && pwd)

log() { printf '[%s] %s\n' "$(date +%T)" "$*"; }
fail() {
	log "FAIL: $*" >&2
	exit 1
}

[[ $(id -u) -eq 0 ]] || fail "run as root: systemd-nspawn needs it"
[[ -x $binary && -x $tests && -x $myco ]] || fail "build myco-priv, myco and the privileged test binary first"

# shellcheck source=SCRIPTDIR/../tests/testbed/nspawn.sh
source "$repo/tests/testbed/nspawn.sh"
nspawn_tools
nspawn_rootfs

work=$(mktemp -d /var/tmp/myco-priv-test.XXXXXX)
machine=myco-priv-$$
nspawn_pid=
NSPAWN_CGROUPS=()

cleanup() {
	local status=$?
	if [[ -n $nspawn_pid ]] && kill -0 "$nspawn_pid" 2>/dev/null; then
		if [[ $status -ne 0 && -n ${leader:-} ]]; then
			inside systemctl status --no-pager -l myco-priv.service myco-web.service >&2 || true
			inside journalctl --no-pager -n 40 >&2 || true
		fi
		nspawn_stop "$nspawn_pid"
	fi
	nspawn_cgroups_remove "${NSPAWN_CGROUPS[@]}"
	rm -rf "$work"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

nspawn_init_wrapper "$work/init"
mkdir "$work/bin"
cp "$binary" "$work/bin/myco-priv"
cp "$tests" "$work/bin/privileged-test"
chmod 0755 "$work/bin" "$work/bin/"*

# The operator key the helper trusts, in the daemon's env file as a box has it. Its key file is a
# throwaway test key, readable by both test users, so that nobody's run fails at the socket only.
mkdir "$work/etc-myco"
"$myco" keygen --out "$work/bin/operator.key" >/dev/null
operator=$("$myco" pubkey --key "$work/bin/operator.key" --json \
	| sed -nE 's/.*"public_key" *: *"([0-9a-f]+)".*/\1/p')
chmod 0644 "$work/bin/operator.key"
[[ ${#operator} -eq 64 ]] || fail "could not read the operator's public key from 'myco pubkey'"
sed -E "s/^MYCO_OPERATOR=.*/MYCO_OPERATOR=$operator/" "$repo/systemd/myco-d.env.example" \
	>"$work/etc-myco/myco-d.env"
chmod 0644 "$work/etc-myco/myco-d.env"

log "booting $machine"
nspawn_boot "$machine" "$work/console.log" --private-network \
	--bind-ro="$work/bin/myco-priv:/usr/bin/myco-priv" \
	--bind-ro="$work/bin/privileged-test:/opt/myco/privileged-test" \
	--bind-ro="$work/bin/operator.key:/opt/myco/operator.key" \
	--bind-ro="$work/etc-myco:/etc/myco" \
	--bind-ro="$repo/systemd/myco-priv.socket:/etc/systemd/system/myco-priv.socket" \
	--bind-ro="$repo/systemd/myco-priv.service:/etc/systemd/system/myco-priv.service" \
	--bind-ro="$repo/systemd/myco.sysusers:/usr/lib/sysusers.d/myco.conf" \
	--bind-ro="$work/init:/myco-test-init" \
	/myco-test-init
nspawn_pid=$NSPAWN_PID
leader=$(nspawn_leader "$nspawn_pid" "$work/console.log")
inside() { nsenter -t "$leader" -a -- "$@"; }
nspawn_wait_running "$leader"
log "container up, leader pid $leader"

# The daemon's user, as the packages create it: systemd/myco.sysusers through systemd-sysusers.
inside systemd-sysusers /usr/lib/sysusers.d/myco.conf
uid=$(inside id -u myco)
inside systemctl daemon-reload
inside systemctl start myco-priv.socket
owner=$(inside stat -c '%a %U %G' /run/myco-priv.sock)
[[ $owner == "660 root myco" ]] || fail "the socket is '$owner', not '660 root myco'"
log "socket: /run/myco-priv.sock $owner; myco is uid $uid"

as() {
	local user=$1 group=$2
	shift 2
	inside setpriv --reuid="$user" --regid="$group" --clear-groups \
		env MYCO_PRIV_SOCKET=/run/myco-priv.sock MYCO_PRIV_OPERATOR_KEY=/opt/myco/operator.key "$@"
}
log "as myco: write, load, enable, show, journal, collect garbage, refuse, disable, remove"
as myco myco /opt/myco/privileged-test --ignored --exact under_a_real_systemd --nocapture \
	|| fail "the helper did not do what the daemon's user asked"
if as nobody nogroup /opt/myco/privileged-test --ignored --exact under_a_real_systemd >"$work/nobody" 2>&1; then
	fail "nobody (not in group myco) was served"
fi
grep -q 'Permission denied' "$work/nobody" || fail "nobody failed otherwise: $(tail -n 5 "$work/nobody")"
log "nobody: connect refused by the socket's mode"

pid=$(inside systemctl show -p MainPID --value myco-priv.service)
((pid > 0)) || fail "myco-priv.service is not running after serving"
helper_uid=$(inside stat -c %u "/proc/$pid")
caps=$(inside awk '/^CapEff/ {print $2}' "/proc/$pid/status")
links=$(inside nsenter -t "$pid" -n ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
log "myco-priv: pid $pid uid $helper_uid CapEff=$caps links: $links"
((helper_uid == 0)) || fail "myco-priv runs as uid $helper_uid, not root"
[[ $caps == 0000000000000000 ]] || fail "myco-priv holds capabilities $caps"
[[ $links == "lo " ]] || fail "myco-priv sees network interfaces: $links"
log "PASS in $SECONDS s"
