#!/usr/bin/env bash
# The Debian package on a box with real systemd (`make package-test`, docs/install.md): three
# testbed boxes, two running myco-d as the testbed installs it and the third bare, where the test
# does what an operator does with the package.
#
# It proves:
# - `dpkg -i` installs it with the dependencies a Debian box has, puts the binaries (myco-d,
#   myco-priv, myco), units, sysusers file, man pages and completions in place, creates the system
#   user myco, makes /etc/myco (mode 0700) with the env file, enables and starts myco-priv.socket
#   (root:myco, 0660), and enables myco-d.service without starting a daemon that has no key: the
#   unit's start is skipped on its ConditionPathExists= (ConditionResult=no), with no failure and
#   no restart loop;
# - with the key, the certificate and the env file in /etc/myco, `systemctl start myco-d` starts
#   it, as the user myco and not root, and it joins the two other boxes: every box sees three
#   members alive;
# - a service deployed with 3 replicas runs on the package's box too, as a myco-NAME.service that
#   myco-priv (root) wrote for the daemon;
# - `apt-get remove` stops the daemon, the helper and the services it placed, and removes the
#   binaries, the units and the services' units, but keeps /etc/myco;
# - `apt-get purge` removes /etc/myco and /var/lib/myco as well, and afterwards the box's files
#   are exactly those it had before `dpkg -i` (outside the logs and package manager's records, and
#   the backups of the user databases systemd-sysusers made: the user myco stays, as Debian's
#   system users do).
#
# Needs root on a cgroup v1 or hybrid host. Usage: tests/testbed/package-test.sh DEB [RELEASE_DIR]
# (RELEASE_DIR, default target/release, holds the myco-d, myco-priv and myco the two other boxes
# run).

set -euo pipefail

deb=$(realpath "${1:?usage: package-test.sh DEB [RELEASE_DIR]}")
TESTBED_RELEASE=$(realpath "${2:-$(dirname "$0")/../../target/release}")
TESTBED_BARE=2
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
trap testbed_down EXIT
trap 'exit 130' INT TERM

[[ -f $deb ]] || fail "$deb is missing; run 'make deb'"
box=2
service=probe
wait_s=60

testbed_up 3

# What a box holds, as `path mode`, outside what changes by itself (logs, caches, the package
# manager's and systemd's own records, the virtual file systems).
files() {
	box_exec "$box" find / -xdev \( -path /proc -o -path /sys -o -path /dev -o -path /run \
		-o -path /tmp -o -path /var/log -o -path /var/cache -o -path /var/lib/dpkg \
		-o -path /var/lib/apt -o -path /var/lib/systemd -o -path /myco-testbed \) -prune \
		-o -printf '%p %m\n' | sort
}
before=$(files)

cp "$deb" "$TESTBED_WORK/box$box/myco.deb"
box_exec "$box" env DEBIAN_FRONTEND=noninteractive dpkg -i /myco-testbed/myco.deb >/dev/null \
	|| fail "dpkg -i of $(basename "$deb") failed"
units="/lib/systemd/system/myco-d.service /lib/systemd/system/myco-d-dns.socket
	/lib/systemd/system/myco-priv.socket /lib/systemd/system/myco-priv.service"
for path in /usr/bin/myco-d /usr/bin/myco-priv /usr/bin/myco $units /usr/lib/sysusers.d/myco.conf \
	/usr/lib/tmpfiles.d/myco.conf /usr/share/man/man1/myco.1.gz /usr/share/man/man5/myco.json.5.gz /usr/share/man/man8/myco-d.8.gz \
	/usr/share/man/man8/myco-priv.8.gz /usr/share/bash-completion/completions/myco \
	/usr/share/zsh/vendor-completions/_myco /etc/myco/myco-d.env; do
	box_exec "$box" test -e "$path" || fail "the package did not install $path"
done
[[ $(box_exec "$box" stat -c %a /etc/myco) == 700 ]] || fail "/etc/myco is not mode 0700"
[[ $(box_exec "$box" systemctl is-enabled myco-d.service) == enabled ]] \
	|| fail "the package did not enable myco-d.service"
box_exec "$box" id myco >/dev/null || fail "the package did not create the user myco"
gcroots=$(box_exec "$box" stat -c '%a %U %G' /var/lib/myco-gcroots) \
	|| fail "the package did not create /var/lib/myco-gcroots"
[[ $gcroots == "770 root myco" ]] || fail "/var/lib/myco-gcroots is '$gcroots', not '770 root myco'"
[[ $(box_exec "$box" systemctl is-enabled myco-d-dns.socket) == enabled ]] \
	|| fail "the package did not enable myco-d-dns.socket"
[[ $(box_exec "$box" systemctl is-enabled myco-priv.socket) == enabled \
	&& $(box_exec "$box" systemctl is-active myco-priv.socket) == active ]] \
	|| fail "the package did not enable and start myco-priv.socket"
owner=$(box_exec "$box" stat -c '%a %U %G' /run/myco-priv.sock)
[[ $owner == "660 root myco" ]] || fail "/run/myco-priv.sock is '$owner', not '660 root myco'"
show=$(box_exec "$box" systemctl show -p ActiveState -p ConditionResult -p NRestarts myco-d.service)
if ! grep -qx 'ActiveState=inactive' <<<"$show" || ! grep -qx 'ConditionResult=no' <<<"$show" \
	|| ! grep -qx 'NRestarts=0' <<<"$show"; then
	fail "without a key myco-d.service should be skipped on its condition: $(tr '\n' ' ' <<<"$show")"
fi
log "dpkg -i: files in place, the user myco, /etc/myco 0700, myco-priv.socket listening" \
	"($owner), myco-d enabled and skipped until it has a key"

# The operator's part: the box's key, certificate and env file (made by testbed_up), then start.
box_exec "$box" sh -c 'cp /myco-testbed/etc-myco/* /etc/myco/ && chmod 0600 /etc/myco/node.key'
box_exec "$box" systemctl start myco-d.service || fail "systemctl start myco-d failed"
all_see_three() {
	local i
	for i in 0 1 2; do [[ $(box_alive_count "$i") -eq 3 ]] || return 1; done
}
wait_for "$wait_s" "every box sees 3 members alive once the package's box started" all_see_three
[[ $(box_exec "$box" systemctl is-active myco-d-dns.socket) == active ]] \
	|| fail "starting myco-d did not start myco-d-dns.socket"
split=$(box_split_check "$box")
log "configured and started: myco-d runs as the user myco ($split); the package's box joined, every box sees 3 members alive"

manifest=$TESTBED_WORK/$service.json
echo "{\"name\": \"$service\", \"exec\": \"/usr/bin/sleep\", \"args\": [\"infinity\"], \"replicas\": 3}" \
	>"$manifest"
"$TESTBED_WORK/bin/myco" deploy "$manifest" --operator-key "$TESTBED_WORK/operator.key" \
	--socket "$(box_socket 0)" >/dev/null
runs_on_package_box() { [[ $(service_boxes "$service") == "0 1 2" ]]; }
wait_for "$wait_s" "myco-$service.service active on all three boxes" runs_on_package_box
box_priv_wrote "$box" "$service"
log "deployed $service: myco-priv wrote its unit; it runs on the package's box as $(service_dynamic_user "$box" "$service")"

box_exec "$box" env DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq myco >/dev/null \
	|| fail "apt-get remove myco failed"
for path in /usr/bin/myco-d /usr/bin/myco-priv /usr/bin/myco $units /usr/lib/sysusers.d/myco.conf \
	/usr/lib/tmpfiles.d/myco.conf "/etc/systemd/system/myco-$service.service"; do
	! box_exec "$box" test -e "$path" || fail "apt-get remove left $path"
done
for unit in myco-d.service myco-d-dns.socket myco-priv.service myco-priv.socket "myco-$service.service"; do
	[[ $(box_exec "$box" systemctl is-active "$unit" || true) != active ]] \
		|| fail "$unit still runs after apt-get remove"
done
box_exec "$box" test -s /etc/myco/node.key || fail "apt-get remove did not keep /etc/myco"
log "apt-get remove: daemon, helper and its service stopped, binaries and units gone, /etc/myco kept"

box_exec "$box" env DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq myco >/dev/null \
	|| fail "apt-get purge myco failed"
after=$(files)
left=$(diff <(echo "$before") <(echo "$after") || true)
[[ -z $left ]] || fail "after apt-get purge the box differs from before dpkg -i:
$left"
log "apt-get purge: the box holds exactly the files it had before dpkg -i"
log "PASS in $SECONDS s"
