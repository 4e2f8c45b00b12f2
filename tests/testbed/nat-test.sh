#!/usr/bin/env bash
# A box behind NAT on the testbed (`make testbed-test`, docs/testbed.md, docs/protocol.md section
# 12): four boxes with real systemd, boxes 0 and 1 started `--relay` (TESTBED_RELAYS in lib.sh),
# box 2 plain, box 3 behind a NAT router (TESTBED_NAT: its own home link, nftables masquerade in
# the router's namespace, nothing forwarded inbound but replies) and started `--behind-nat`. Box 3
# joins the public boxes; none of them joins box 3. It checks, in order:
#
# - the NAT is real: from box 0's namespace box 3's home address does not answer a ping, neither
#   as the boxes are (no route) nor with a route through the router (it forwards nothing new
#   inbound), while box 3 pings box 0; and box 0 lists box 3 at the router's address;
# - every box sees the four members alive (testbed_up), and still at every check over 30 s;
# - a service with 4 replicas (every box; no manifest field names a box) deployed through box 0's
#   socket runs on box 3 (systemctl is-active inside box 3), and one deployed through box 3's own
#   socket runs on boxes 0, 1 and 2; both on all four boxes, each box's time logged; and box 2's
#   `myco ls` reports box 3's replica running (its health, gossiped through the relays);
# - the relays forwarded frames: `myco_relayed_frames_total` of boxes 0 and 1, read from each
#   box's API metrics endpoint, sums to more than 0;
# - the relay that carried box 2's frames to box 3 killed (a power cut; box 3's first relay, box 0
#   or box 1 as the random node keys rank them): box 2 sees it dead, never sees box 3 dead
#   meanwhile nor in the 20 s after, sees box 3 alive at the end, and the other relay forwards
#   more frames than before;
# - box 3 cut off its home link: box 2 declares it dead, measured from the cut, as it declared the
#   killed relay dead (the usual bound: both are SWIM's detection).
#
# `TESTBED_NAT_PORTS=random tests/testbed/nat-test.sh` makes the router a symmetric NAT (a random
# public port for each peer box 3 sends to) and checks that boxes 0 and 1 see box 3 at different
# addresses; everything else is the same.
#
# `NAT_DETECT=1` starts box 3 without `--behind-nat` (its default `--nat auto`): before the checks
# above it must find out by itself that it is behind NAT, from where its peers see its frames
# (docs/protocol.md section 12): its `myco_behind_nat` and `myco_nat_detected` metrics turn 1
# within NAT_DETECT_WAIT_S (default 60 s) of its start, measured as `nat_detected_s`, its journal
# says "behind NAT: peers see this box at ..." once, and no public box concludes it (their
# `myco_nat_detected` stays 0, checked again at the end). `make testbed-test` runs the symmetric
# variant this way.
#
# Prints `NAT ports=kept|random reachable_directly=0|1 alive_all=0|1 deploy_to_nat_s=S deploy_from_nat_s=S
# health_reported=0|1 relayed_frames=N relay_death_box3_alive=0|1 relay_dead_s=S
# cut_to_dead_s=S[ nat_detected_s=S]` (nat_detected_s with NAT_DETECT=1; measured; empty, or 0 for the
# flags, when the step was not reached, and the script fails). The waits' bounds (60 s) only catch a daemon that never
# gets there.
#
# `NAT_BOXES=8 NAT_HOLD_S=150 TESTBED_ARGS="--profile metered" tests/testbed/nat-test.sh` runs the
# same with boxes 4-7 plain too, held 150 s, on the profile where the relays' NAT mappings are
# held open by the box's keepalives (not part of `make testbed-test`).
#
# Needs root on a cgroup v1 or hybrid host. Usage: tests/testbed/nat-test.sh [RELEASE_DIR]
# (default target/release, holding myco-d and myco).

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
TESTBED_NAT="3"
TESTBED_RELAYS="0 1"
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

# NAT_BOXES=8: more public plain boxes (4 and up), so that with `--profile metered` gossip talks
# to each peer less often than the NAT's 30 s and only the keepalives hold the relays' mappings.
box_count=${NAT_BOXES:-4}
natted=3
wait_s=60
# NAT_HOLD_S=150 with TESTBED_ARGS="--profile metered" holds long past the NAT's 30 s mappings.
hold_s=${NAT_HOLD_S:-30}
after_kill_s=20
nat_detect=${NAT_DETECT:-0}
detect_wait_s=${NAT_DETECT_WAIT_S:-60}
nat_detected_ms=''
reachable_directly='' alive_all=0 deploy_to_ms='' deploy_from_ms='' relayed_frames='' relay_death=0 dead_ms=''
health_reported=0 cut_dead_ms=''
report() {
	echo "NAT ports=$TESTBED_NAT_PORTS reachable_directly=$reachable_directly alive_all=$alive_all" \
		"deploy_to_nat_s=${deploy_to_ms:+$(ms_as_s "$deploy_to_ms")}" \
		"deploy_from_nat_s=${deploy_from_ms:+$(ms_as_s "$deploy_from_ms")}" \
		"health_reported=$health_reported relayed_frames=$relayed_frames relay_death_box3_alive=$relay_death" \
		"relay_dead_s=${dead_ms:+$(ms_as_s "$dead_ms")}" \
		"cut_to_dead_s=${cut_dead_ms:+$(ms_as_s "$cut_dead_ms")}${NAT_DETECT:+ nat_detected_s=${nat_detected_ms:+$(ms_as_s "$nat_detected_ms")}}"
}
testbed_report_on_exit

started=$(now_ms)
testbed_up "$box_count"
testbed_has_executor || fail "the NAT test needs myco-d's systemd executor"

testbed_node_ids
# The state (alive, suspect, dead, left) box I's daemon lists box J in; empty if not listed.
state_of() {
	box_myco "$1" nodes --json | grep -o "\"id\":\"${ids[$2]}\",\"address\":[^,]*,\"state\":\"[a-z]*\"" \
		| sed -E 's/.*"state":"([a-z]*)"/\1/' || true
}
pings() { ip netns exec "$(box_name "$1")" ping -q -c 1 -W 1 "$2" >/dev/null 2>&1; }

# --- box 3 finds out it is behind NAT (NAT_DETECT=1) ------------------------------------------

# No public box concludes it is behind NAT: its peers see it at its own address. Box SKIP (if
# given) is not asked: it was killed.
public_never_concluded() {
	local i skip=${1:--1}
	for ((i = 0; i < box_count; i++)); do
		((i == natted || i == skip)) || (($(metric "$i" myco_nat_detected) == 0)) \
			|| fail "public box $i concluded it is behind NAT (myco_nat_detected $(metric "$i" myco_nat_detected))"
	done
}
if ((nat_detect)); then
	until (($(metric "$natted" myco_behind_nat) == 1)); do
		(($(now_ms) - started < detect_wait_s * 1000)) \
			|| fail "box $natted does not find out it is behind NAT $detect_wait_s s after the boxes started"
		sleep 0.2
	done
	nat_detected_ms=$(($(now_ms) - started))
	detected=$(metric "$natted" myco_nat_detected)
	((detected == 1)) || fail "box $natted's myco_nat_detected is $detected, not 1"
	said=$(box_exec "$natted" journalctl --no-pager -o cat -u myco-d.service | grep -c 'behind NAT: peers see this box at' || true)
	((said == 1)) || fail "box $natted's journal says 'behind NAT: peers see this box at ...' $said times, not once"
	public_never_concluded
	log "box $natted found out it is behind NAT $(ms_as_s "$nat_detected_ms") s after the boxes started:" \
		"$(box_exec "$natted" journalctl --no-pager -o cat -u myco-d.service | grep 'behind NAT: peers see' | tail -n 1)"
fi

# --- the NAT is real ---------------------------------------------------------------------------

home=$(box_addr "$natted")
pings "$natted" "$(box_addr 0)" || fail "box $natted (behind NAT) cannot ping box 0 at $(box_addr 0)"
reachable_directly=1
! pings 0 "$home" || fail "box 0 pings box $natted's home address $home: no NAT between them"
# Even a box that routes the home subnet through the router gets nothing in: the router forwards
# only replies.
ip -n "$(box_name 0)" route add "$TESTBED_HOME_SUBNET.0/24" via "$TESTBED_ROUTER_ADDR"
probe=0
pings 0 "$home" || probe=$?
ip -n "$(box_name 0)" route del "$TESTBED_HOME_SUBNET.0/24" via "$TESTBED_ROUTER_ADDR"
((probe != 0)) || fail "box 0 pings $home through the router: it forwards new inbound traffic"
reachable_directly=0
listed=$(box_myco 0 nodes --json | grep -o "\"id\":\"${ids[natted]}\",\"address\":\"[^\"]*\"" || true)
[[ $listed == *"\"$TESTBED_ROUTER_ADDR:"* ]] \
	|| fail "box 0 does not list box $natted at the router's address $TESTBED_ROUTER_ADDR: '$listed'"
log "box $natted reaches box 0; box 0 does not reach $home, routed or not; box 0 lists box $natted at ${listed##*\"address\":}"
# A symmetric NAT (TESTBED_NAT_PORTS=random) gives each peer another port: box 1 must list box
# 3 at the port its own frames come from, not box 0's.
if [[ $TESTBED_NAT_PORTS == random ]]; then
	seen=$(box_myco 1 nodes --json | grep -o "\"id\":\"${ids[natted]}\",\"address\":\"[^\"]*\"" || true)
	[[ -n $seen && $seen != "$listed" ]] \
		|| fail "boxes 0 and 1 list box $natted at the same address behind a symmetric NAT: '$listed'"
	log "symmetric NAT: box 1 lists box $natted at ${seen##*\"address\":}"
fi

# --- membership holds ------------------------------------------------------------------------

for ((t = 0; t < hold_s; t++)); do
	for ((i = 0; i < box_count; i++)); do
		alive=$(box_alive_count "$i")
		((alive == box_count)) || fail "box $i sees $alive of $box_count members alive $t s into the hold"
	done
	sleep 1
done
alive_all=1
log "every box saw all $box_count members alive at each check for $hold_s s"

# --- deploys to and from the box behind NAT ----------------------------------------------------

# deploy NAME SOCKET_BOX: a service with a replica on every box, deployed through box SOCKET_BOX.
deploy() {
	cat >"$TESTBED_WORK/$1.json" <<EOF
{"name": "$1", "exec": "/usr/bin/sleep", "args": ["infinity"], "replicas": $box_count}
EOF
	"$TESTBED_WORK/bin/myco" deploy "$TESTBED_WORK/$1.json" --operator-key "$TESTBED_WORK/operator.key" \
		--socket "$(box_socket "$2")" >/dev/null
}
# wait_everywhere NAME STARTED: waits until myco-NAME.service is active on every box, and sets
# arrived[I] to the milliseconds from STARTED until box I's unit was first seen active.
arrived=()
wait_everywhere() {
	local name=$1 started=$2 i
	arrived=()
	until ((${#arrived[@]} == box_count)); do
		for i in $(service_boxes "$name"); do
			[[ -n ${arrived[i]:-} ]] || arrived[i]=$(($(now_ms) - started))
		done
		(($(now_ms) - started < wait_s * 1000)) \
			|| fail "myco-$name.service is active only on boxes '${!arrived[*]}' $wait_s s after the deploy"
		sleep 0.1
	done
	log "myco-$name.service active on boxes 0 to $((box_count - 1)) after" \
		"$(for i in "${!arrived[@]}"; do printf '%s ' "$(ms_as_s "${arrived[i]}")"; done)s"
}

deployed=$(now_ms)
deploy inward 0
wait_everywhere inward "$deployed"
deploy_to_ms=${arrived[natted]}
log "deployed inward through box 0: active on box $natted after $(ms_as_s "$deploy_to_ms") s"

deployed=$(now_ms)
deploy outward "$natted"
wait_everywhere outward "$deployed"
deploy_from_ms=$(for i in "${!arrived[@]}"; do ((i == natted)) || echo "${arrived[i]}"; done | sort -n | tail -n 1)
log "deployed outward through box $natted: active on every other box after $(ms_as_s "$deploy_from_ms") s"

# The state box I's `myco ls` reports for service NAME's replica on box J (empty if not placed).
placed_state() {
	box_myco "$1" ls --json | python3 -c '
import json, sys
name, node = sys.argv[1], sys.argv[2]
for s in json.load(sys.stdin)["services"]:
    if s["name"] == name:
        print(" ".join(p["state"] for p in s["placed_on"] if p["id"] == node))
' "$2" "${ids[$3]}"
}
box3_reported_running() { [[ $(placed_state 2 inward "$natted") == running ]]; }
wait_for "$wait_s" "box 2 reports box $natted's replica of inward running" box3_reported_running
health_reported=1
log "box 2's myco ls: inward on box $natted is $(placed_state 2 inward "$natted")"

# --- the relays forwarded ----------------------------------------------------------------------

relayed0=$(metric 0 myco_relayed_frames_total)
relayed1=$(metric 1 myco_relayed_frames_total)
relayed_frames=$((relayed0 + relayed1))
((relayed_frames > 0)) || fail "neither relay forwarded a frame: myco_relayed_frames_total is 0 on boxes 0 and 1"
log "relayed frames: box 0 $relayed0, box 1 $relayed1; box 2 sent $(metric 2 myco_frames_via_relay_total)" \
	"through a relay; box $natted sent $(metric "$natted" myco_relay_keepalives_total) keepalives"

# --- the busy relay dies ----------------------------------------------------------------------

# Box 2 sends to box 3 through box 3's first relay, which the boxes' random keys make box 0 or
# box 1 (the others are box 3's relays and send directly): kill the one that carried the frames,
# so that box 2's frames must move to the other.
if ((relayed0 >= relayed1)); then dead=0 other=1 before=$relayed1; else dead=1 other=0 before=$relayed0; fi
killed=$(now_ms)
box_kill "$dead"
# Box 2's view every 0.2 s: box 3 must never be dead, until the relay is and for a while after.
suspect=0
watch_natted() {
	case $(state_of 2 "$natted") in
	dead) fail "box 2 declared box $natted dead after relay $dead was killed" ;;
	suspect) suspect=$((suspect + 1)) ;;
	esac
}
until [[ $(state_of 2 "$dead") == dead ]]; do
	watch_natted
	(($(now_ms) - killed < wait_s * 1000)) || fail "box 2 does not see box $dead dead $wait_s s after it was killed"
	sleep 0.2
done
dead_ms=$(($(now_ms) - killed))
log "box 2 sees relay $dead dead $(ms_as_s "$dead_ms") s after the power cut; box $natted was never dead meanwhile"
until (($(now_ms) - killed - dead_ms >= after_kill_s * 1000)); do
	watch_natted
	sleep 0.2
done
[[ $(state_of 2 "$natted") == alive ]] || fail "box 2 lists box $natted as '$(state_of 2 "$natted")', not alive"
after=$(metric "$other" myco_relayed_frames_total)
((after > before)) || fail "relay $other forwarded nothing after relay $dead died ($before before, $after after)"
relay_death=1
log "box $natted alive in box 2's view $after_kill_s s after relay $dead's death (suspect at $suspect polls of 0.2 s);" \
	"relay $other forwarded $((after - before)) more frames"

# --- box 3 cut off --------------------------------------------------------------------------

cut=$(now_ms)
box_cut "$natted"
until [[ $(state_of 2 "$natted") == dead ]]; do
	(($(now_ms) - cut < wait_s * 1000)) || fail "box 2 does not see box $natted dead $wait_s s after it was cut off"
	sleep 0.2
done
cut_dead_ms=$(($(now_ms) - cut))
log "box 2 sees box $natted dead $(ms_as_s "$cut_dead_ms") s after its home link was cut" \
	"(relay $dead's power cut: $(ms_as_s "$dead_ms") s)"
if ((nat_detect)); then
	public_never_concluded "$dead"
	log "no public box concluded it is behind NAT (myco_nat_detected 0 on every live public box)"
fi
