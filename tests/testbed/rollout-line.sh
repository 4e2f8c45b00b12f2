#!/usr/bin/env bash
# Prints the one-line summary of the self-healing tests on the testbed:
#   ROLLOUT good_waves_ok=.. bad_version_max_boxes=.. old_version_kept=.. unhealthy_left_dns=..
#           memory_max_killed=..
# from the lines the tests printed (LOGDIR/{rollout,health,engine}.log, written by
# `make testbed-test`). A figure a test did not print is 0, and the script then fails.
#
# Usage: tests/testbed/rollout-line.sh LOGDIR
set -euo pipefail
dir=${1:?usage: rollout-line.sh LOGDIR}

# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
figure() { log_figure "$dir" "$@"; }

waves=$(figure rollout.log ROLLOUT good_waves_ok)
bad_max=$(figure rollout.log ROLLOUT bad_version_max_boxes)
kept=$(figure rollout.log ROLLOUT old_version_kept)
left_dns=$(figure health.log HEALTH unhealthy_left_dns)
killed=$(figure engine.log TESTBED memory_max_killed)
echo "ROLLOUT good_waves_ok=$waves bad_version_max_boxes=$bad_max old_version_kept=$kept" \
	"unhealthy_left_dns=$left_dns memory_max_killed=$killed"
[[ $waves == 1 && $bad_max == 1 && $kept == 1 && $left_dns == 1 && $killed == 1 ]]
