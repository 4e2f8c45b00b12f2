#!/usr/bin/env bash
# The testbed's end-to-end test (`make testbed-test`, docs/testbed.md): three boxes with real
# systemd, myco-d installed as systemd/myco-d.service, and then the engine's promise.
#
# The boxes:
# - myco-d is active on each box, in a memory cgroup whose limit is the unit's MemoryMax=64M
#   (67108864 bytes in memory.limit_in_bytes), so the limit is enforced, not just written down;
# - every box sees all three members alive (checked by testbed_up);
# - myco-d runs as the system user myco, not root, beside myco-priv as root (the split of
#   docs/architecture.md, "Least privilege"), and the helper's journal shows it wrote the unit of
#   every box the service below runs on.
#
# The engine (placement and the systemd executor):
# - a service with 2 replicas, deployed with `myco deploy` through box 0's socket, runs as
#   myco-NAME.service on exactly 2 boxes, under a dynamic user, and stays on exactly 2;
# - one of those boxes is cut off the network: the service runs on both remaining boxes again;
# - the cut is healed: exactly 2 boxes run it again, and it stays so;
# - scaling restarts nothing that runs: the same manifest with one replica more (and a higher
#   --clock) starts it on one more box, and the boxes that ran it keep their process (the same
#   InvocationID) while their unit files name the new version, which systemd has reloaded;
# - a new version that changes what runs (another environment, back to 2 replicas) rolls out as a
#   restart: every box that runs it has a new InvocationID, and every daemon lists the new
#   version.
#
# Timings are printed, not judged (timing belongs in benchmarks): one line
# - `dig @127.0.0.1 NAME.myco` in each box answers the boxes that run it, over UDP and TCP, and
#   follows the service when it moves;
# - a service that crash-loops (`/usr/bin/false`) is reported as restarting or failed by every
#   box's `myco ls`, including the boxes that do not run it;
# - a service past its manifest's `memory_max` (python filling 256 MiB under MemoryMax=32M) is
#   killed by the kernel, and myco-d on its box stays active;
# `TESTBED boxes=3 up_s=... deploy_to_running_s=... death_to_replaced_s=... heal_to_settled_s=...
# rollout_s=...`. The waits' bounds (60 s) only catch an engine that never gets there.
#
# Needs root on a cgroup v1 or hybrid host. Usage: tests/testbed/engine-test.sh [RELEASE_DIR]
# (default target/release, holding myco-d and myco).

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
trap testbed_down EXIT
trap 'exit 130' INT TERM

box_count=3
service=probe
replicas=2
# Bounds on each wait: far above any healthy figure, so that they only catch an engine that
# never converges.
wait_s=60
# How long a placement must hold to count as settled: longer than a few gossip rounds (200 ms),
# so that a third copy starting late would be seen.
settle_s=3

started=$(now_ms)
testbed_up "$box_count"
up_ms=$(($(now_ms) - started))

# --- the boxes -------------------------------------------------------------------------------

for ((i = 0; i < box_count; i++)); do
	[[ $(box_exec "$i" systemctl is-active myco-d.service) == active ]] \
		|| fail "box $i: myco-d.service is not active"
	memory=/sys/fs/cgroup/memory/system.slice/myco-d.service
	limit=$(box_exec "$i" cat "$memory/memory.limit_in_bytes")
	[[ $limit == $((64 * 1024 * 1024)) ]] \
		|| fail "box $i: myco-d's memory.limit_in_bytes is $limit, not MemoryMax=64M: the limit is not enforced"
	pid=$(box_exec "$i" systemctl show -p MainPID --value myco-d.service)
	box_exec "$i" grep -qx "$pid" "$memory/cgroup.procs" \
		|| fail "box $i: myco-d (pid $pid) is not in the limited memory cgroup"
done
log "myco-d is active on all $box_count boxes, each in a memory cgroup limited to 64 MiB"

# --- the engine ------------------------------------------------------------------------------

testbed_has_executor || fail "the boxes pass; the engine part needs myco-d's systemd executor \
('--executor' in 'myco-d --help'), which this build of myco-d lacks"

manifest=$TESTBED_WORK/$service.json
cat >"$manifest" <<EOF
{"name": "$service", "exec": "/usr/bin/sleep", "args": ["infinity"], "replicas": $replicas}
EOF
# deploy CLOCK [MANIFEST]: through box 0's socket.
deploy() {
	"$TESTBED_WORK/bin/myco" deploy "${2:-$manifest}" --operator-key "$TESTBED_WORK/operator.key" \
		--clock "$1" --socket "$(box_socket 0)" >/dev/null
}

running=
# Exactly COUNT boxes run the service (sets `running`).
runs_on_exactly() {
	running=$(service_boxes "$service")
	[[ $(wc -w <<<"$running") -eq $1 ]]
}
# Exactly COUNT boxes run it, and the same ones still do settle_s later.
settled_on_exactly() {
	runs_on_exactly "$1" || return 1
	local first=$running
	sleep "$settle_s"
	runs_on_exactly "$1" && [[ $running == "$first" ]]
}

clock=$(now_ms)
deployed=$(now_ms)
deployed_mono=$(mono_ms)
deploy "$clock"
wait_for "$wait_s" "myco-$service.service active on $replicas boxes" runs_on_exactly "$replicas"
noticed_ms=$(($(now_ms) - deployed))
# From the deploy to the last replica's start as systemd stamped it, not to the poll that saw it.
# shellcheck disable=SC2086 # one box number per word
deploy_ms=$(started_after_ms "$deployed_mono" "myco-$service.service" $running) \
	|| fail "no box's myco-$service.service says it started after the deploy"
settled_on_exactly "$replicas" \
	|| fail "myco-$service.service did not stay on exactly $replicas boxes: now on '$running'"
log "deployed $service (replicas $replicas): active on boxes $running after $(ms_as_s "$deploy_ms") s (seen by polling after $(ms_as_s "$noticed_ms") s)"
for i in $running; do
	log "box $i runs myco-$service.service as $(service_dynamic_user "$i" "$service")"
	box_priv_wrote "$i" "$service"
done
for ((i = 0; i < box_count; i++)); do
	split=$(box_split_check "$i")
	log "box $i: myco-d runs as the user myco ($split)"
done
log "myco-priv, as root, wrote myco-$service.service on boxes $running"

for ((i = 0; i < box_count; i++)); do
	wait_for "$wait_s" "box $i resolves $service.myco to the boxes that run it ($running)" dns_is "$i" "$running"
done
log "$service.myco from box 0: $(dns_answer 0 | tr '\n' ' ')(boxes $running)"
tcp=$(ip netns exec "$(box_name 0)" dig +short +tcp @127.0.0.1 "$service.myco" A | sort)
[[ $tcp == "$(dns_answer 0)" ]] || fail "DNS over TCP differs: $tcp"
[[ $(ip netns exec "$(box_name 0)" dig +time=1 @127.0.0.1 nope.myco A | grep -c NXDOMAIN) == 1 ]] \
	|| fail "nope.myco is not NXDOMAIN"

# Cut off the highest-numbered box that runs it, so that box 0, whose socket takes the deploys,
# stays in the cluster.
victim=${running##* }
remaining=()
for ((i = 0; i < box_count; i++)); do ((i == victim)) || remaining+=("$i"); done
runs_on_remaining() {
	local i
	for i in "${remaining[@]}"; do
		[[ $(box_exec "$i" systemctl is-active "myco-$service.service" 2>/dev/null || true) == active ]] \
			|| return 1
	done
}
cut=$(now_ms)
cut_mono=$(mono_ms)
box_cut "$victim"
log "box $victim cut off the network"
wait_for "$wait_s" "myco-$service.service active on boxes ${remaining[*]} after box $victim was cut off" \
	runs_on_remaining
noticed_ms=$(($(now_ms) - cut))
# To the start of the replacement as systemd stamped it (the other box ran it before the cut).
death_ms=$(started_after_ms "$cut_mono" "myco-$service.service" "${remaining[@]}") \
	|| fail "no remaining box's myco-$service.service says it started after the cut"
log "running on boxes ${remaining[*]} $(ms_as_s "$death_ms") s after the cut (seen by polling after $(ms_as_s "$noticed_ms") s)"
# The name follows the service: box 0 now answers with the boxes that took over.
wait_for "$wait_s" "box 0 resolves $service.myco to boxes ${remaining[*]}" dns_is 0 "${remaining[*]}"
log "$service.myco from box 0 after the cut: $(dns_answer 0 | tr '\n' ' ')"

healed=$(now_ms)
box_heal "$victim"
log "box $victim back on the network"
wait_for "$wait_s" "myco-$service.service back on exactly $replicas boxes after the heal" \
	runs_on_exactly "$replicas"
heal_ms=$(($(now_ms) - healed))
settled_on_exactly "$replicas" \
	|| fail "after the heal myco-$service.service did not stay on exactly $replicas boxes: now on '$running'"
log "healed: on exactly $replicas boxes ($running) after $(ms_as_s "$heal_ms") s"

# Scaling: the same manifest with one replica more. The boxes that ran it keep their process
# (their unit files are written for the new version and reloaded, not restarted); one more box
# starts it.
declare -A invocation
for i in $running; do invocation[$i]=$(service_show "$i" "$service" InvocationID); done
kept_boxes=$running
scaled=$TESTBED_WORK/$service-scaled.json
sed "s/\"replicas\": $replicas}/\"replicas\": $((replicas + 1))}/" "$manifest" >"$scaled"
grep -q "\"replicas\": $((replicas + 1))}" "$scaled" || fail "cannot scale $manifest"
# Every box that ran it runs the same process from a unit file of the scaled version that
# systemd has loaded, and one more box runs it.
scaled_in_place() {
	local i show
	runs_on_exactly $((replicas + 1)) || return 1
	for i in $kept_boxes; do
		show=$(box_exec "$i" systemctl show -p InvocationID -p NeedDaemonReload "myco-$service.service")
		grep -qx "NeedDaemonReload=no" <<<"$show" || return 1
		[[ $(box_exec "$i" sed -n 's/^X-Myco-Clock=//p' "/etc/systemd/system/myco-$service.service") \
			== $((clock + 1)) ]] || return 1
		grep -qx "InvocationID=${invocation[$i]}" <<<"$show" \
			|| fail "box $i restarted myco-$service.service for a version that only scales it"
	done
}
scaling=$(now_ms)
deploy $((clock + 1)) "$scaled"
wait_for "$wait_s" "scaled to $((replicas + 1)) boxes, the $replicas that ran it not restarted" \
	scaled_in_place
log "scaled: on boxes $running after $(ms_as_s $(($(now_ms) - scaling))) s; boxes $kept_boxes kept their process"
clock=$((clock + 1))

# A new version: another environment, and back to its replicas. Every box that runs it
# afterwards must have started it anew (a new InvocationID), not kept the old process.
for i in $running; do invocation[$i]=$(service_show "$i" "$service" InvocationID); done
sed "s/}\$/, \"env\": {\"VERSION\": \"$((clock + 1))\"}}/" "$manifest" >"$manifest.new"
mv "$manifest.new" "$manifest"
grep -q '"env"' "$manifest" || fail "cannot change $manifest"
# One `systemctl show` per box, so that state and invocation come from the same moment: a
# restart in progress is never taken for a finished one.
restarted() {
	local i show new=()
	for ((i = 0; i < box_count; i++)); do
		show=$(box_exec "$i" systemctl show -p ActiveState -p InvocationID "myco-$service.service")
		grep -qx 'ActiveState=active' <<<"$show" || continue
		grep -qx "InvocationID=${invocation[$i]:-none}" <<<"$show" && return 1
		new+=("$i")
	done
	((${#new[@]} == replicas)) || return 1
	for ((i = 0; i < box_count; i++)); do
		box_myco "$i" ls --json | grep -q "\"clock\":$((clock + 1))[,}]" || return 1
	done
}
rolled=$(now_ms)
deploy $((clock + 1))
wait_for "$wait_s" "version $((clock + 1)) restarted on $replicas boxes" restarted
rollout_ms=$(($(now_ms) - rolled))
settled_on_exactly "$replicas" \
	|| fail "after the new version myco-$service.service did not stay on exactly $replicas boxes: now on '$running'"
for i in $running; do service_dynamic_user "$i" "$service" >/dev/null; done
log "version $((clock + 1)) restarted on boxes $running after $(ms_as_s "$rollout_ms") s"

# A workload that crash-loops is reported, not hidden: every box, including those that do not
# run it, lists it as restarting or failed on the box placement chose (gossiped status).
crasher=$TESTBED_WORK/crasher.json
echo '{"name": "crasher", "exec": "/usr/bin/false", "replicas": 1}' >"$crasher"
"$TESTBED_WORK/bin/myco" deploy "$crasher" --operator-key "$TESTBED_WORK/operator.key" \
	--socket "$(box_socket 0)" >/dev/null
crash_reported() {
	local i
	for ((i = 0; i < box_count; i++)); do
		box_myco "$i" ls --json | python3 -c '
import json, sys
found = [s for s in json.load(sys.stdin)["services"] if s["name"] == "crasher"]
placed = found[0]["placed_on"] if found else []
sys.exit(0 if placed and all(p["state"] in ("restarting", "failed") for p in placed) else 1)
' || return 1
	done
}
crashed=$(now_ms)
wait_for "$wait_s" "every box reports the crash-looping service" crash_reported
log "crash loop reported on every box after $(ms_as_s $(($(now_ms) - crashed))) s:"
box_myco 0 ls | sed 's/^/    /'

# The unit's journal through /logs on the box that runs it (real journald), and where to ask
# from a box that does not; the event stream through curl -N.
crash_box=
for ((i = 0; i < box_count; i++)); do
	[[ $(box_exec "$i" systemctl is-enabled myco-crasher.service 2>/dev/null || true) == enabled ]] \
		&& crash_box=$i
done
[[ -n $crash_box ]] || fail "no box has myco-crasher.service enabled"
logs=$(box_exec "$crash_box" curl -sS --max-time 5 --unix-socket /run/myco/myco.sock \
	'http://localhost/logs?service=crasher&lines=50')
grep -q 'myco-crasher.service' <<<"$logs" || fail "/logs on box $crash_box: $logs"
log "/logs on box $crash_box: $(grep -c '' <<<"$logs") journal lines, e.g. $(tail -1 <<<"$logs")"
other=$(((crash_box + 1) % box_count))
elsewhere=$(box_exec "$other" curl -sS --max-time 5 --unix-socket /run/myco/myco.sock \
	'http://localhost/logs?service=crasher')
grep -q 'does not run on this box; it runs on' <<<"$elsewhere" || fail "/logs on box $other: $elsewhere"
log "/logs on box $other: $elsewhere"
events=$(box_exec 0 curl -sN --max-time 2 --unix-socket /run/myco/myco.sock \
	-H 'Last-Event-ID: 0' http://localhost/stream || true)
grep -q '^event: ' <<<"$events" || fail "/stream on box 0 said nothing: $events"
log "/stream on box 0: $(grep -c '^event: ' <<<"$events") events, kinds: $(grep '^event: ' <<<"$events" | sort -u | cut -d' ' -f2 | tr '\n' ' ')"

# A service past its manifest's memory_max is killed by the kernel, and only it: its unit carries
# MemoryMax=, systemd reports the kill, and myco-d on its box runs on.
hog=$TESTBED_WORK/hog.json
cat >"$hog" <<'EOF'
{"name": "hog", "exec": "/usr/bin/python3", "replicas": 1, "memory_max": "32M",
 "args": ["-c", "import time; b = b'x' * (256 * 1024 * 1024); time.sleep(3600)"]}
EOF
"$TESTBED_WORK/bin/myco" deploy "$hog" --operator-key "$TESTBED_WORK/operator.key" \
	--socket "$(box_socket 0)" >/dev/null
hog_box=
hog_placed() {
	local i
	for ((i = 0; i < box_count; i++)); do
		[[ $(box_exec "$i" systemctl is-enabled myco-hog.service 2>/dev/null || true) == enabled ]] \
			&& hog_box=$i && return 0
	done
	return 1
}
wait_for "$wait_s" "myco-hog.service enabled on a box" hog_placed
[[ $(service_show "$hog_box" hog MemoryMax) == $((32 * 1024 * 1024)) ]] \
	|| fail "box $hog_box: myco-hog.service has MemoryMax=$(service_show "$hog_box" hog MemoryMax), not 32M"
# On a cgroup v1 host systemd cannot tell an OOM kill from another SIGKILL: either counts.
hog_killed() {
	local result status
	result=$(service_show "$hog_box" hog Result)
	status=$(service_show "$hog_box" hog ExecMainStatus)
	[[ $result == oom-kill || ($result == signal && $status == 9) ]]
}
wait_for "$wait_s" "the kernel kills myco-hog.service past its memory_max" hog_killed
[[ $(box_exec "$hog_box" systemctl is-active myco-d.service) == active ]] \
	|| fail "box $hog_box: myco-d is not active after the hog was killed"
log "box $hog_box: myco-hog.service killed past MemoryMax=32M ($(service_show "$hog_box" hog Result)); myco-d still active"

echo "TESTBED boxes=$box_count up_s=$(ms_as_s "$up_ms") deploy_to_running_s=$(ms_as_s "$deploy_ms")" \
	"death_to_replaced_s=$(ms_as_s "$death_ms") heal_to_settled_s=$(ms_as_s "$heal_ms")" \
	"rollout_s=$(ms_as_s "$rollout_ms") memory_max_killed=1"
log "PASS in $SECONDS s"
