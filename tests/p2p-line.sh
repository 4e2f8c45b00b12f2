#!/usr/bin/env bash
# Prints issue 16's one-line summary of the binary cache and peer-to-peer tests with the real Nix:
#   P2P substituted_boxes=.. builds_on_fetchers=.. remote_build_ok=.. tampered_refused=..
#       revoked_cache_refused=.. throttle_mb_s=.. remote_build_failed_seen=..
# from the lines the tests wrote under DIR (target/test-figures, written by `make test-root`:
# myco-host/tests/p2p.rs and cache.rs). A figure no test wrote is "missing", and the script then
# fails.
#
# Usage: tests/p2p-line.sh DIR
set -euo pipefail
dir=${1:?usage: p2p-line.sh DIR}

# The value of KEY on the P2P line in DIR/FILE, or "missing".
figure() {
	local file=$1 key=$2 v
	v=$(grep -h '^P2P ' "$dir/$file" 2>/dev/null | tail -n 1 | tr ' ' '\n' | sed -n "s/^$key=//p")
	echo "${v:-missing}"
}

substituted=$(figure substitute substituted_boxes)
fetchers=$(figure substitute builds_on_fetchers)
tampered=$(figure substitute tampered_refused)
remote=$(figure remote remote_build_ok)
revoked=$(figure revoked revoked_cache_refused)
throttle=$(figure throttle throttle_mb_s)
failed_seen=$(figure remote-failed remote_build_failed_seen)
echo "P2P substituted_boxes=$substituted builds_on_fetchers=$fetchers remote_build_ok=$remote" \
	"tampered_refused=$tampered revoked_cache_refused=$revoked throttle_mb_s=$throttle" \
	"remote_build_failed_seen=$failed_seen"
[[ $substituted != missing && $fetchers == 0 && $remote == 1 && $tampered == 1 && $revoked == 1 &&
	$throttle != missing && $failed_seen == 1 ]]
