#!/usr/bin/env bash
# Progressive rollout with automatic hold on the testbed (`make testbed-test`, docs/testbed.md,
# docs/algorithm.md section 9): three boxes with real systemd, one exec service (python's
# http.server) with 3 replicas.
#
# - A good new version rolls out in waves: the first box of the service's placement (the canary,
#   as `myco ls --json` orders placed_on) takes it alone, the two others keep the version before
#   until the canary has run the new one for the settle time, then take it; all three end on it.
# - A bad new version (python exits at once) stops after the first wave: the canary tries it,
#   goes back to the version before, and the two others never write it; every box ends running
#   the version before, which still answers HTTP; `myco deploy --wait` exits non-zero naming the
#   box and the failure, and `myco ls` shows the rollout held.
#
# Which version a box runs is its unit file's `X-Myco-Clock=` line (the entry's clock) while the
# unit is active. Prints the figures it measured:
# `ROLLOUT good_waves_ok=0|1 bad_version_max_boxes=N old_version_kept=0|1 canary_alone_s=...`.
#
# Needs root on a cgroup v1 or hybrid host. Usage: tests/testbed/rollout-test.sh [RELEASE_DIR]
# (default target/release, holding myco-d and myco). Run under `flock /tmp/myco-testbed.lock`.

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
trap testbed_down EXIT
trap 'exit 130' INT TERM

box_count=3
service=web
port=8080
# Bounds on each wait: far above any healthy figure (the settle time is 10 s).
wait_s=90

testbed_up "$box_count"
testbed_has_executor || fail "the rollout test needs myco-d's systemd executor"

manifest=$TESTBED_WORK/$service.json
# write_manifest VARIANT [VERSION]: the service, a variant of http.server (`good` serves, `bad`
# exits), with VERSION in its environment (a version that changed nothing it runs would be
# written without a restart).
write_manifest() {
	local code
	case $1 in
	good) code="import http.server as h; h.test(HandlerClass=h.SimpleHTTPRequestHandler, port=$port, bind='0.0.0.0')" ;;
	bad) code="import sys; sys.exit('this version is broken')" ;;
	esac
	cat >"$manifest" <<EOF
{"name": "$service", "exec": "/usr/bin/python3", "args": ["-c", "$code"], "replicas": 3,
 "ports": [{"port": $port, "protocol": "tcp"}], "env": {"VERSION": "${2:-1}"}}
EOF
}
# deploy CLOCK [ARGS]: through box 0's socket.
deploy() {
	local clock=$1
	shift
	"$TESTBED_WORK/bin/myco" deploy "$manifest" --operator-key "$TESTBED_WORK/operator.key" \
		--clock "$clock" --socket "$(box_socket 0)" "$@"
}

# The clock of the version box I's unit runs, or '-' when the unit is not active.
runs() {
	local i=$1 clock
	[[ $(box_exec "$i" systemctl is-active "myco-$service.service" 2>/dev/null || true) == active ]] \
		|| { echo -; return; }
	clock=$(box_exec "$i" systemctl cat "myco-$service.service" 2>/dev/null \
		| sed -n 's/^X-Myco-Clock=//p' | head -n 1)
	echo "${clock:--}"
}
# The clock box I's unit file was written from, active or not.
written() {
	box_exec "$1" systemctl cat "myco-$service.service" 2>/dev/null \
		| sed -n 's/^X-Myco-Clock=//p' | head -n 1
}
all_run() {
	local i
	for ((i = 0; i < box_count; i++)); do [[ $(runs "$i") == "$1" ]] || return 1; done
}
# Box I answers HTTP on the service's port (from inside the box).
answers() { box_exec "$1" curl -sf --max-time 2 -o /dev/null "http://127.0.0.1:$port/"; }

# The box index of each node id, and the canary: the first of placed_on.
declare -A box_of
for ((i = 0; i < box_count; i++)); do
	id=$(box_myco "$i" status --json | json_field node_id)
	box_of[$id]=$i
done
canary_box() {
	local first
	first=$(box_myco 0 ls --json | python3 -c '
import json, sys
s = [s for s in json.load(sys.stdin)["services"] if s["name"] == sys.argv[1]]
print(s[0]["placed_on"][0]["id"] if s and s[0]["placed_on"] else "")
' "$service")
	echo "${box_of[$first]:-}"
}

# --- version 1 everywhere ------------------------------------------------------------------------

v1=$(now_ms)
write_manifest good
deploy "$v1" --wait --timeout "$wait_s" >/dev/null
wait_for "$wait_s" "version $v1 active on all $box_count boxes" all_run "$v1"
canary=$(canary_box)
[[ -n $canary ]] || fail "no canary: myco ls shows no placement for $service"
log "version $v1 runs on all $box_count boxes; the canary (first placed) is box $canary"

# --- a good version rolls out in waves -----------------------------------------------------------

v2=$((v1 + 1))
write_manifest good 2
deploy "$v2" >/dev/null
started=$(now_ms)
declare -A took
# Samples every box until all run v2: when each first ran it, and whether any other box ran it
# while the canary had not run it for 5 s (half the settle time, so slow sampling cannot fake it).
early=0
until all_run "$v2"; do
	(($(now_ms) - started < wait_s * 1000)) || fail "version $v2 did not reach all boxes in $wait_s s"
	for ((i = 0; i < box_count; i++)); do
		[[ -z ${took[$i]:-} && $(runs "$i") == "$v2" ]] && took[$i]=$(now_ms)
	done
	for ((i = 0; i < box_count; i++)); do
		((i == canary)) || [[ -z ${took[$i]:-} ]] && continue
		if [[ -z ${took[$canary]:-} ]] || (( took[$i] - took[$canary] < 5000 )); then early=1; fi
	done
	sleep 0.2
done
for ((i = 0; i < box_count; i++)); do [[ -n ${took[$i]:-} ]] || took[$i]=$(now_ms); done
# When the second wave started: the first box after the canary to run it.
second=
for ((i = 0; i < box_count; i++)); do
	((i == canary)) && continue
	[[ -z $second ]] || ((took[$i] < second)) && second=${took[$i]}
done
canary_alone_ms=$((second - took[$canary]))
good_waves_ok=$((early == 0 ? 1 : 0))
for ((i = 0; i < box_count; i++)); do
	log "box $i ran version $v2 after $(ms_as_s $((took[$i] - started))) s$( ((i == canary)) && echo ' (canary)')"
done
((good_waves_ok == 1)) || fail "a box took version $v2 before the canary (box $canary) had run it for 5 s"
log "good version: the canary ran it alone for $(ms_as_s "$canary_alone_ms") s, then the rest took it"
box_myco 0 ls | sed 's/^/    /'

# --- a bad version stops after the first wave ----------------------------------------------------

v3=$((v2 + 1))
write_manifest bad
wait_out=$TESTBED_WORK/bad-wait.out
deploy "$v3" --wait --timeout "$wait_s" >"$wait_out" 2>&1 &
waiter=$!
bad_max=0
# While --wait runs, and 15 s more (past the settle time, in case a box took it late): how many
# boxes had a unit file written from the bad version at once.
sampling_until=0
while :; do
	n=0
	for ((i = 0; i < box_count; i++)); do [[ $(written "$i") == "$v3" ]] && n=$((n + 1)); done
	((n > bad_max)) && bad_max=$n
	if ((sampling_until == 0)) && ! kill -0 "$waiter" 2>/dev/null; then
		sampling_until=$(($(now_ms) + 15000))
	fi
	((sampling_until > 0 && $(now_ms) > sampling_until)) && break
	sleep 0.2
done
wait_status=0
wait "$waiter" || wait_status=$?
wait_said=$(cat "$wait_out")
log "myco deploy --wait for the bad version exited $wait_status: $(tail -n 1 <<<"$wait_said")"
if ((wait_status == 0)); then
	box_myco 0 ls --json
	fail "myco deploy --wait succeeded for a version that exits at once"
fi
[[ $wait_said == *"is held"* ]] || fail "--wait did not say the rollout is held: $wait_said"
canary_id=
for id in "${!box_of[@]}"; do ((box_of[$id] == canary)) && canary_id=$id; done
[[ $wait_said == *"${canary_id:0:8}"* ]] || fail "--wait did not name the canary ${canary_id:0:8}: $wait_said"

wait_for "$wait_s" "every box runs version $v2 again" all_run "$v2"
old_kept=1
for ((i = 0; i < box_count; i++)); do
	wait_for "$wait_s" "box $i answers HTTP with the version before" answers "$i" || old_kept=0
done
held=$(box_myco 1 ls --json | python3 -c '
import json, sys
s = [s for s in json.load(sys.stdin)["services"] if s["name"] == sys.argv[1]][0]
r = s.get("rollout") or {}
print(r.get("state", ""), r.get("reason", ""))
' "$service")
[[ $held == held* ]] || fail "box 1 does not report the rollout held: '$held'"
log "bad version: at most $bad_max box(es) wrote it; all run version $v2 and answer; box 1 says: $held"
box_myco 1 ls | sed 's/^/    /'
audit=$(box_exec "$canary" cat /var/log/myco/audit.log)
for outcome in on-trial settled rolled-back; do
	grep -q "\"outcome\":\"$outcome\"" <<<"$audit" || fail "box $canary: no $outcome line in the audit log"
done
grep -q '"outcome":"held-' <<<"$audit" || fail "box $canary: no held line in the audit log"
log "the canary's audit log has on-trial, settled, held and rolled-back lines"

echo "ROLLOUT good_waves_ok=$good_waves_ok bad_version_max_boxes=$bad_max old_version_kept=$old_kept" \
	"canary_alone_s=$(ms_as_s "$canary_alone_ms")"
log "PASS in $SECONDS s"
