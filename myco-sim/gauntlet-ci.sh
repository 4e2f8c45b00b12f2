#!/usr/bin/env bash
# CI's gauntlet (`make gauntlet-ci`): SECONDS of simulation in all. First every scenario of
# myco-sim/regressions.txt, exactly as written, one per core at a time; then `myco-sim gauntlet`
# (also one seed per core) from a random seed for the rest of the time (at least
# MIN_RANDOM_SECONDS). Every failure prints the command that
# reproduces it; any failure fails the run, after all of it has run.
#
# Usage: myco-sim/gauntlet-ci.sh SECONDS [FIRST_RANDOM_SEED]

set -euo pipefail

total_s=${1:?usage: gauntlet-ci.sh SECONDS [FIRST_RANDOM_SEED]}
seed=${2:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
min_random_s=60
here=$(cd "$(dirname "$0")" && pwd)
cargo build -q --profile sim -p myco-sim
sim=${CARGO_TARGET_DIR:-$here/../target}/sim/myco-sim
started=$SECONDS
failures=0
# Scenarios run side by side, one per core (each is one thread); their reports print in file order.
jobs_max=$(nproc)
out_dir=$(mktemp -d)
trap 'rm -rf "$out_dir"' EXIT

# Runs one regression scenario and prints its report; fails when the scenario fails.
regression() {
	local args=$1 what=$2 out
	# shellcheck disable=SC2086 # the arguments split on spaces, as on a command line
	if out=$("$sim" run $args 2>&1); then
		echo "regression ok: $what"
	else
		echo "$out"
		echo "regression FAILED: $what"
		echo "  reproduce with: cargo run --profile sim -p myco-sim -- run ${args% }"
		return 1
	fi
}

pids=()
while IFS= read -r line; do
	args=${line%%#*}
	[[ -n ${args// /} ]] || continue
	while (($(jobs -rp | wc -l) >= jobs_max)); do wait -n || true; done
	regression "$args" "${line#*# }" >"$out_dir/${#pids[@]}" &
	pids+=($!)
done <"$here/regressions.txt"
for i in "${!pids[@]}"; do
	wait "${pids[$i]}" || failures=$((failures + 1))
	cat "$out_dir/$i"
done

left_s=$((total_s - (SECONDS - started)))
((left_s >= min_random_s)) || left_s=$min_random_s
echo "gauntlet-ci: regressions took $((SECONDS - started)) s; random seeds from $seed for $left_s s"
# The gauntlet prints each failure's reproduction itself (as `myco-sim run ...`).
"$sim" gauntlet --seconds "$left_s" --seed "$seed" || failures=$((failures + 1))
echo "gauntlet-ci: $((SECONDS - started)) s in all, $failures failing part(s)"
((failures == 0))
