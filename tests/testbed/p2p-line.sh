#!/usr/bin/env bash
# Prints issue 16's line for the boxes' binary caches on the testbed:
#   P2P substituted_boxes=.. builds_on_fetchers=.. remote_build_ok=.. tampered_refused=..
#       revoked_not_trusted=.. throttle_mb_s=.. throttle_two_mb_s=.. slots_freed=..
# from the lines p2p-test.sh (P2P-TESTBED) and p2p-hostile-test.sh (P2P-HOSTILE) printed
# (LOGDIR/p2p.log and LOGDIR/p2p-hostile.log, written by `make testbed-test`). A figure a test did
# not print is 0, and the script then fails.
#
# Usage: tests/testbed/p2p-line.sh LOGDIR
set -euo pipefail
dir=${1:?usage: p2p-line.sh LOGDIR}
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

substituted=$(log_figure "$dir" p2p.log P2P-TESTBED substituted_boxes)
on_fetchers=$(log_figure "$dir" p2p.log P2P-TESTBED builds_on_fetchers)
remote=$(log_figure "$dir" p2p.log P2P-TESTBED remote_build_ok)
tampered=$(log_figure "$dir" p2p-hostile.log P2P-HOSTILE tampered_refused)
revoked=$(log_figure "$dir" p2p-hostile.log P2P-HOSTILE revoked_not_trusted)
one=$(log_figure "$dir" p2p-hostile.log P2P-HOSTILE throttle_mb_s)
two=$(log_figure "$dir" p2p-hostile.log P2P-HOSTILE throttle_two_mb_s)
slots=$(log_figure "$dir" p2p-hostile.log P2P-HOSTILE slots_freed)
echo "P2P substituted_boxes=$substituted builds_on_fetchers=$on_fetchers remote_build_ok=$remote" \
	"tampered_refused=$tampered revoked_not_trusted=$revoked throttle_mb_s=$one" \
	"throttle_two_mb_s=$two slots_freed=$slots"
# builds_on_fetchers reads 0 also when p2p-test.sh did not print it; substituted_boxes then fails.
((substituted >= 1)) && [[ $on_fetchers == 0 && $remote == 1 && $tampered == 1 && $revoked == 1 && $slots == 1 ]] \
	&& awk -v a="$one" -v b="$two" 'BEGIN {exit !(a >= 4.5 && a <= 5.5 && b >= 4.5 && b <= 5.5)}'
