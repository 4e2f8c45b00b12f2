#!/usr/bin/env bash
# Checks systemd/myco-d.service without a running systemd (`make systemd-check`):
#
# 1. `systemd-analyze verify` against a throwaway root laid out like an installed box: the unit,
#    unchanged, at /etc/systemd/system/myco-d.service, the release binary at /usr/bin/myco-d
#    (verify refuses an ExecStart that does not exist), and this machine's own systemd units so
#    that network.target and multi-user.target resolve. verify exits 0 on much that it merely
#    ignores (unknown keys, bad MemoryMax values), so any output at all fails the check too.
# 2. `systemd-analyze security --offline=yes --threshold=N`: the exposure score (0 best, 10 worst)
#    must not rise above N/10.
#
# Usage: systemd/check.sh MYCO_D_BINARY THRESHOLD

set -euo pipefail

binary=${1:?usage: check.sh MYCO_D_BINARY THRESHOLD}
threshold=${2:?usage: check.sh MYCO_D_BINARY THRESHOLD}
unit=$(cd "$(dirname "$0")" && pwd)/myco-d.service

if ! command -v systemd-analyze >/dev/null; then
	apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq systemd
fi
[[ -x $binary ]] || { echo "check.sh: $binary is not an executable; build it first" >&2; exit 1; }
units=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null \
	|| echo /usr/lib/systemd/system)
[[ -e $units/multi-user.target ]] || { echo "check.sh: no systemd units in $units" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
ln -s usr/lib "$root/lib"
ln -s usr/bin "$root/bin"
cp -a "$units" "$root/usr/lib/systemd/system"
cp "$binary" "$root/usr/bin/myco-d"
cp "$unit" "$root/etc/systemd/system/myco-d.service"

# Run from the root so that verify does not pick up units from the working directory.
errors=$(cd "$root" && systemd-analyze verify --root="$root" myco-d.service 2>&1) || status=$?
if [[ -n $errors || ${status:-0} -ne 0 ]]; then
	echo "systemd-analyze verify failed (exit ${status:-0}) for $unit:" >&2
	# Name the file as it is in the repository, not as it is in the throwaway root.
	echo "${errors//$root\/etc\/systemd\/system\//systemd/}" >&2
	exit 1
fi
echo "systemd-analyze verify: myco-d.service is clean"

report=$(cd "$root" && systemd-analyze security --offline=yes --threshold="$threshold" \
	"$root/etc/systemd/system/myco-d.service" 2>&1) || {
	echo "$report" | grep '✗' >&2 || true
	echo "$report" | tail -n 1 >&2
	echo "myco-d.service's exposure is above the gate of $threshold/10 (SYSTEMD_SECURITY_MAX in" \
		"the Makefile); harden the unit back, or raise the gate with a reason" >&2
	exit 1
}
echo "$report" | tail -n 1
