#!/usr/bin/env bash
# Checks a unit of systemd/ without a running systemd (`make systemd-check`): myco-d.service with
# its DNS socket, or myco-priv.service with its socket.
#
# 1. `systemd-analyze verify` against a throwaway root laid out like an installed box: the units,
#    unchanged, in /etc/systemd/system, the release binary in /usr/bin (verify refuses an
#    ExecStart that does not exist), and this machine's own systemd units so that network.target
#    and multi-user.target resolve. verify exits 0 on much that it merely ignores (unknown keys,
#    bad MemoryMax values), so any output at all fails the check too.
# 2. `systemd-analyze security --offline=yes --threshold=N` of the first unit: the exposure score
#    (0 best, 10 worst) must not rise above N/10.
#
# Usage: systemd/check.sh BINARY THRESHOLD [UNIT...]   (the units default to myco-d.service)

set -euo pipefail

binary=${1:?usage: check.sh BINARY THRESHOLD [UNIT...]}
threshold=${2:?usage: check.sh BINARY THRESHOLD [UNIT...]}
shift 2
names=("${@:-myco-d.service}")
here=$(cd "$(dirname "$0")" && pwd)
name=${names[0]}
unit=$here/$name

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
cp "$binary" "$root/usr/bin/$(basename "$binary")"
for n in "${names[@]}"; do
	cp "$here/$n" "$root/etc/systemd/system/$n"
done

# Run from the root so that verify does not pick up units from the working directory.
errors=$(cd "$root" && systemd-analyze verify --root="$root" "${names[@]}" 2>&1) || status=$?
if [[ -n $errors || ${status:-0} -ne 0 ]]; then
	echo "systemd-analyze verify failed (exit ${status:-0}) for $unit:" >&2
	# Name the file as it is in the repository, not as it is in the throwaway root.
	echo "${errors//$root\/etc\/systemd\/system\//systemd/}" >&2
	exit 1
fi
echo "systemd-analyze verify: ${names[*]} clean"

report=$(cd "$root" && systemd-analyze security --offline=yes --threshold="$threshold" \
	"$root/etc/systemd/system/$name" 2>&1) || {
	echo "$report" | grep '✗' >&2 || true
	echo "$report" | tail -n 1 >&2
	echo "$name's exposure is above the gate of $threshold/10 (the Makefile's" \
		"SYSTEMD_SECURITY_MAX or PRIV_SECURITY_MAX); harden the unit back, or raise the gate" \
		"with a reason" >&2
	exit 1
}
echo "$report" | tail -n 1
