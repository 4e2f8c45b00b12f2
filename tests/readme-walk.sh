#!/usr/bin/env bash
# The README's "Two daemons on this machine", executed, so the README cannot rot: this script
# reads the sh block that follows the `<!-- readme-walk: ... -->` marker in README.md (the README
# is the one copy of those commands), runs it as written with the binaries of BIN_DIR first on
# PATH, and then checks what it printed: both boxes alive, the deploy in `myco events` under the
# service's name, the service listed by both daemons, and the words of a box without an executor.
# A step that fails fails the walk (the block runs under `set -euo pipefail`).
#
# Loopback only (the block's own flags), in a temporary directory that is removed at the end, with
# every process the block started stopped, whether it passed or not. The whole walk is bounded by
# WALK_TIMEOUT_S (default 120 s).
#
# Usage: tests/readme-walk.sh BIN_DIR   (BIN_DIR holds myco and myco-d; `make readme-walk`)

set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${1:?usage: tests/readme-walk.sh BIN_DIR (the directory holding myco and myco-d)}
for binary in myco myco-d; do
	[[ -x $bin_dir/$binary ]] || {
		echo "readme-walk: $bin_dir/$binary is missing; run 'cargo build --bin myco-d --bin myco'" >&2
		exit 1
	}
done
bin_dir=$(cd "$bin_dir" && pwd)

# The block: from the marker's next sh fence to its closing fence.
block=$(awk '
	/^<!-- readme-walk:/ { marked = 1; next }
	marked && !inside && /^```sh$/ { inside = 1; next }
	inside && /^```$/ { exit }
	inside { print }
' "$repo/README.md")
if [[ -z $block ]]; then
	echo "readme-walk: README.md has no sh block after a '<!-- readme-walk: ... -->' line" >&2
	exit 1
fi

work=$(mktemp -d /tmp/myco-readme-walk.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The block's `mktemp -d` makes its directory in here, so removing $work removes everything.
{
	echo 'set -euo pipefail'
	# Whatever happens, the daemons and `myco events` the block left running are stopped.
	# shellcheck disable=SC2016 # written for walk.sh to expand, not this script
	echo 'trap '\''kill $(jobs -p) 2>/dev/null || true'\'' EXIT'
	echo "$block"
} >"$work/walk.sh"

out=$work/out.txt
# timeout signals its whole process group, so a hung step takes its daemons down with it.
if ! PATH="$bin_dir:$PATH" TMPDIR="$work" timeout "${WALK_TIMEOUT_S:-120}" \
	bash "$work/walk.sh" >"$out" 2>&1; then
	echo "readme-walk: the README's local example failed; it printed:" >&2
	cat "$out" >&2
	for log in "$work"/tmp.*/*.log; do
		[[ -f $log ]] && { echo "--- $log" >&2; cat "$log" >&2; }
	done
	exit 1
fi

# What the block printed must say what the README says it does.
status=0
expect() {
	local what=$1 pattern=$2 count=${3:-1}
	local found
	found=$(grep -cE -- "$pattern" "$out" || true)
	if ((found < count)); then
		echo "readme-walk: expected $what (/$pattern/ at least $count times, found $found)" >&2
		status=1
	fi
}
expect "both boxes alive in 'myco nodes'" '127\.0\.0\.1:794[67] +alive' 2
expect "box b left after its clean stop, in 'myco nodes'" '127\.0\.0\.1:7947 +left'
expect "box b's leaving in 'myco events'" 'member +kind=left node='
expect "'myco events' saying what it follows" 'following the events of myco-d at'
expect "the deploy in 'myco events', by name" 'deploy +name=hello outcome=applied'
expect "the entry in 'myco events', by name" 'Z entry +name=hello$'
expect "hello in both daemons' 'myco ls'" '^hello +[0-9]+ ' 2
expect "'myco ls' saying the boxes run no executor" '^no-executor: this box runs no services' 2
expect "'myco logs' saying the box runs no services" 'this box runs no services \(myco-d --executor none\), so it has no journal of hello'
if ((status != 0)); then
	echo "readme-walk: the README's local example ran, but printed:" >&2
	cat "$out" >&2
	exit 1
fi
echo "readme-walk: the README's local example works as written"
