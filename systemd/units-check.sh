#!/usr/bin/env bash
# Checks the units `myco render` makes from the corpus in tests/units (`make units-check`):
#
# 1. Every manifest in tests/units/ok/ renders, and its unit, installed in a throwaway root laid out
#    like a box (this machine's systemd units, so network.target resolves, and an executable at
#    every ExecStart=/ExecStartPre= path, which verify insists on), passes
#    `systemd-analyze verify` with no output at all: verify exits 0 on much that it merely ignores
#    (an unknown key, a line dropped as "not UTF-8 clean"), so any output fails the check.
# 2. Each of those units scores at most THRESHOLD/10 with
#    `systemd-analyze security --offline=yes`; the scores are printed as a table.
# 3. Every manifest in tests/units/refused/ is refused: `myco render` exits 1, prints nothing on
#    stdout and says why on stderr ("myco: manifest '...' is refused: ..." or "... cannot become
#    a systemd unit: ...").
#
# Usage: systemd/units-check.sh MYCO_BINARY THRESHOLD [CORPUS_DIR]

set -euo pipefail

myco=$(realpath "${1:?usage: units-check.sh MYCO_BINARY THRESHOLD [CORPUS_DIR]}")
threshold=${2:?usage: units-check.sh MYCO_BINARY THRESHOLD [CORPUS_DIR]}
corpus=$(realpath "${3:-$(dirname "$0")/../tests/units}")
gate="$((threshold / 10)).$((threshold % 10))"

if ! command -v systemd-analyze >/dev/null; then
	apt-get -o DPkg::Lock::Timeout=600 update -qq && DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq systemd
fi
[[ -x $myco ]] || { echo "units-check.sh: $myco is not an executable; build it first" >&2; exit 1; }
units=$(pkg-config --variable=systemdsystemunitdir systemd 2>/dev/null \
	|| echo /usr/lib/systemd/system)
[[ -e $units/network.target ]] || { echo "units-check.sh: no systemd units in $units" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd" "$root/etc/systemd/system"
ln -s usr/lib "$root/lib"
ln -s usr/bin "$root/bin"
cp -a "$units" "$root/usr/lib/systemd/system"

failed=0
fail() {
	echo "FAIL: $*" >&2
	failed=1
}

# The executable path of a command line as systemd reads it: the renderer writes it as the first
# double-quoted word, and a path holds no quote, backslash or '$' (the renderer refuses those), so
# undoing '%%' is all the unquoting it needs.
exec_paths() {
	sed -n 's/^ExecStart\(Pre\)\{0,1\}="\([^"]*\)".*/\2/p' "$1" | sed 's/%%/%/g'
}

# Manifests are named relative to the corpus, as in the messages myco prints about them.
cd "$corpus"
shopt -s nullglob
ok=(ok/*.json)
refused=(refused/*.json)
((${#ok[@]} > 0)) || { echo "units-check.sh: no manifests in $corpus/ok" >&2; exit 1; }

printf '%-22s %-28s %6s  %s\n' MANIFEST UNIT BYTES EXPOSURE
for manifest in "${ok[@]}"; do
	shown=$manifest
	if ! summary=$("$myco" render "$manifest" --out "$work/unit" 2>&1); then
		fail "$shown: myco render refused it: $summary"
		continue
	fi
	unit=$(awk '$1 == "unit" { print $2 }' <<<"$summary")
	bytes=$(awk '$1 == "size_bytes" { print $2 }' <<<"$summary")
	installed=$root/etc/systemd/system/$unit
	mv "$work/unit" "$installed"
	while IFS= read -r path; do
		mkdir -p "$root$(dirname "$path")"
		printf '#!/bin/sh\nexit 0\n' >"$root$path"
		chmod 755 "$root$path"
	done < <(exec_paths "$installed")

	# Run from the root so that verify does not pick up units from the working directory.
	status=0
	errors=$(cd "$root" && systemd-analyze verify --root="$root" "$unit" 2>&1) || status=$?
	if [[ -n $errors || $status -ne 0 ]]; then
		fail "$shown: systemd-analyze verify (exit $status) on $unit:"
		echo "${errors//$root/}" >&2
	fi

	status=0
	report=$(cd "$root" && systemd-analyze security --offline=yes --threshold="$threshold" \
		"$installed" 2>&1) || status=$?
	exposure=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p' <<<"$report")
	printf '%-22s %-28s %6s  %s\n' "${shown#ok/}" "$unit" "$bytes" "${exposure:-?}"
	if [[ $status -ne 0 || -z $exposure ]]; then
		fail "$shown: $unit's exposure ${exposure:-?} is above the gate of $gate:"
		grep '✗' <<<"$report" >&2 || echo "$report" >&2
	fi
done

for manifest in "${refused[@]}"; do
	shown=$manifest
	status=0
	"$myco" render "$manifest" >"$work/stdout" 2>"$work/stderr" || status=$?
	if [[ $status -ne 1 || -s $work/stdout ]] \
		|| ! grep -Eq "^myco: manifest '.*' (is refused|cannot become a systemd unit): " \
			"$work/stderr"; then
		fail "$shown: expected exit 1, no output and a reason; got exit $status:"
		cat "$work/stdout" "$work/stderr" >&2
	else
		echo "refused: $(cut -c1-120 "$work/stderr")"
	fi
done

if ((failed)); then
	echo "units-check: FAILED" >&2
	exit 1
fi
echo "units-check: ${#ok[@]} units verify clean and score at most $gate;" \
	"${#refused[@]} manifests refused"
