#!/usr/bin/env bash
# Two zones that bridge, on the testbed (`make testbed-test`, docs/testbed.md): four boxes with
# real systemd, boxes 0-1 certified into zone 0 and boxes 2-3 into zone 1 (TESTBED_ZONES in
# lib.sh); box 0 and box 2 are certified `--bridge all` and given each other as --bridge-seed
# (TESTBED_BRIDGES), and every box joins only the boxes of its own zone. It checks, in order:
#
# - each box sees the two members of its own zone alive (testbed_up) and lists no member of the
#   other zone;
# - a service whose manifest says `"zone": 1`, deployed through box 1's socket (zone 0, not a
#   bridge: the entry goes through box 0's bridge to box 2), runs on one box of zone 1, on no box
#   of zone 0, and stays so;
# - every box lists the entry (`myco ls`): the desired state is one across the zones;
# - still, no box's `myco nodes` lists a member of the other zone (membership stays local), and
#   box 2 counts the entry among those it received over a bridge (`myco_bridge_entries_total`).
#
# Prints `ZONES deploy_across_s=S members_crossing=N entry_everywhere=0|1` (measured: the time from
# the deploy to the unit active in zone 1; the members of the other zone the boxes list, summed,
# which must be 0; every box listing the entry). The waits' bounds (60 s) only catch an engine
# that never gets there.
#
# `TESTBED_IPV6=yes tests/testbed/zones-test.sh` runs the same on links that carry only IPv6 (the
# bridges then meet by their IPv6 addresses).
#
# Needs root on a cgroup v1 or hybrid host. Usage: tests/testbed/zones-test.sh [RELEASE_DIR]
# (default target/release, holding myco-d and myco).

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
TESTBED_ZONES="0 0 1 1"
TESTBED_BRIDGES="0 2"
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

box_count=4
service=edge
wait_s=60
settle_s=3
deploy_ms=
members_crossing=
entry_everywhere=0
report() {
	echo "ZONES deploy_across_s=${deploy_ms:+$(ms_as_s "$deploy_ms")} members_crossing=$members_crossing entry_everywhere=$entry_everywhere"
}
testbed_report_on_exit

testbed_up "$box_count"
testbed_has_executor || fail "the zones test needs myco-d's systemd executor"

testbed_node_ids
# Members of the other zone that box I lists, whatever their state.
crossing_at() {
	local i=$1 j nodes count=0
	nodes=$(box_myco "$i" nodes --json)
	for ((j = 0; j < box_count; j++)); do
		[[ $(box_zone "$j") != "$(box_zone "$i")" && $nodes == *"\"${ids[j]}\""* ]] && count=$((count + 1))
	done
	echo "$count"
}
crossing_total() {
	local i total=0
	for ((i = 0; i < box_count; i++)); do total=$((total + $(crossing_at "$i"))); done
	echo "$total"
}
[[ $(crossing_total) == 0 ]] || fail "a box lists a member of the other zone before any deploy"
# The same lookup finds the members of a box's own zone, so the zero above is not a lookup that
# never matches.
for ((i = 0; i < box_count; i++)); do
	nodes=$(box_myco "$i" nodes --json)
	for ((j = 0; j < box_count; j++)); do
		[[ $(box_zone "$j") != "$(box_zone "$i")" || $nodes == *"\"${ids[j]}\""* ]] \
			|| fail "box $i does not list box $j of its own zone (${ids[j]})"
	done
done

# --- a deploy in zone 0 for zone 1 -----------------------------------------------------------

manifest=$TESTBED_WORK/$service.json
cat >"$manifest" <<EOF
{"name": "$service", "exec": "/usr/bin/sleep", "args": ["infinity"], "zone": 1, "replicas": 1}
EOF
running=
# The service runs on exactly one box, and that box is in zone 1 (sets `running`).
runs_in_zone_1() {
	running=$(service_boxes "$service")
	[[ $(wc -w <<<"$running") -eq 1 && $(box_zone "$running") == 1 ]]
}
deployed=$(now_ms)
"$TESTBED_WORK/bin/myco" deploy "$manifest" --operator-key "$TESTBED_WORK/operator.key" \
	--socket "$(box_socket 1)" >/dev/null
wait_for "$wait_s" "myco-$service.service active on one box of zone 1" runs_in_zone_1
deploy_ms=$(($(now_ms) - deployed))
first=$running
sleep "$settle_s"
if ! runs_in_zone_1 || [[ $running != "$first" ]]; then
	fail "myco-$service.service did not stay on box $first alone: now on '$(service_boxes "$service")'"
fi
log "deployed $service (zone 1) through box 1 (zone 0): active on box $running after $(ms_as_s "$deploy_ms") s"

listed_everywhere() {
	local i
	for ((i = 0; i < box_count; i++)); do
		box_myco "$i" ls --json | grep -q "\"name\":\"$service\"" || return 1
	done
}
wait_for "$wait_s" "every box lists $service" listed_everywhere
entry_everywhere=1

members_crossing=$(crossing_total)
[[ $members_crossing == 0 ]] || fail "$members_crossing member records crossed between the zones"
bridged=$(box_exec 2 curl -s --unix-socket /run/myco/myco.sock http://box/metrics \
	| awk '$1 == "myco_bridge_entries_total" {print $2}')
if [[ -z $bridged ]] || ! awk -v n="$bridged" 'BEGIN { exit !(n >= 1) }'; then
	fail "box 2 (zone 1's bridge) received no entry over a bridge: myco_bridge_entries_total is '$bridged'"
fi
log "every box lists $service; no box lists a member of the other zone; box 2 received $bridged entries over its bridge"
