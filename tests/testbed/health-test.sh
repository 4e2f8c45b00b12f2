#!/usr/bin/env bash
# Health checks on the testbed (`make testbed-test`, docs/testbed.md): two boxes with real systemd,
# myco-d installed as systemd/myco-d.service, and a service that stops answering.
#
# - A python HTTP server whose /healthz answers 200, or 500 while a file `fail` exists in its
#   state directory, is deployed with 2 replicas and an HTTP health check (every 2 s, 2 failures);
#   it runs on both boxes and both resolve `sick.myco` to both.
# - `fail` is created on one box (the victim): its daemon finds the service unhealthy, restarts it
#   (a new InvocationID), reports it `unhealthy` in `myco ls` on both boxes, and both boxes' DNS
#   leave the victim out, while the other box keeps serving.
# - `fail` is removed: the next check passes, and the victim is back in both boxes' DNS.
#
# Prints `HEALTH unhealthy_left_dns=0|1 restarted=0|1` (each measured; 0 fails the script) and the
# timings. The waits' bounds (60 s) only catch an engine that never gets there.
#
# Needs root on a cgroup v1 or hybrid host. Usage: tests/testbed/health-test.sh [RELEASE_DIR]
# (default target/release, holding myco-d and myco).

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
trap 'exit 130' INT TERM

box_count=2
service=sick
wait_s=60
left_dns=0
restarted=0
# The result line, also on failure, with what was measured so far.
report() { echo "HEALTH unhealthy_left_dns=$left_dns restarted=$restarted"; }
trap 'report; testbed_down' EXIT

testbed_up "$box_count"
testbed_has_executor || fail "the health test needs myco-d's systemd executor"

# The server: one line of python, as the entry's arguments may hold no newline. It runs in its
# state directory (the unit's WorkingDirectory), where the test creates and removes `fail`.
server='exec("import http.server, os\nclass H(http.server.BaseHTTPRequestHandler):\n def do_GET(s):\n  s.send_response(500 if os.path.exists(\"fail\") else 200)\n  s.end_headers()\n def log_message(s, *a): pass\nhttp.server.HTTPServer((\"\", 8080), H).serve_forever()")'
manifest=$TESTBED_WORK/$service.json
python3 - "$manifest" "$service" "$server" <<'EOF'
import json, sys
path, name, server = sys.argv[1:]
manifest = {
    "name": name, "exec": "/usr/bin/python3", "args": ["-c", server], "replicas": 2,
    "ports": [{"port": 8080}],
    "health": {"http": "/healthz", "port": 8080, "interval_s": 2, "timeout_s": 1, "failures": 2},
}
json.dump(manifest, open(path, "w"))
EOF
"$TESTBED_WORK/bin/myco" deploy "$manifest" --operator-key "$TESTBED_WORK/operator.key" \
	--socket "$(box_socket 0)" >/dev/null

both() { [[ $(service_boxes "$service") == "0 1" ]]; }
wait_for "$wait_s" "myco-$service.service active on both boxes" both
for i in 0 1; do
	wait_for "$wait_s" "box $i resolves $service.myco to both boxes" dns_is "$i" "0 1"
done
log "$service runs on both boxes and both resolve it to both"

victim=1
keeper=0
state_dir=/var/lib/private/myco-$service
invocation=$(service_show "$victim" "$service" InvocationID)
sickened=$(now_ms)
box_exec "$victim" touch "$state_dir/fail"
log "box $victim: $state_dir/fail created; its /healthz answers 500"
# Every box's `myco ls` names the victim unhealthy (gossiped status).
reported_unhealthy() {
	local i
	for i in 0 1; do
		box_myco "$i" ls --json | python3 -c '
import json, sys
found = [s for s in json.load(sys.stdin)["services"] if s["name"] == "sick"]
states = [p["state"] for p in found[0]["placed_on"]] if found else []
sys.exit(0 if "unhealthy" in states and "running" in states else 1)
' || return 1
	done
}
wait_for "$wait_s" "both boxes report the victim unhealthy and the other running" reported_unhealthy
unhealthy_ms=$(($(now_ms) - sickened))
log "reported unhealthy after $(ms_as_s "$unhealthy_ms") s:"
box_myco "$keeper" ls | sed 's/^/    /'
wait_for "$wait_s" "box $keeper leaves box $victim out of $service.myco" dns_is "$keeper" "$keeper"
wait_for "$wait_s" "box $victim leaves itself out of $service.myco" dns_is "$victim" "$keeper"
left_dns=1
log "both boxes resolve $service.myco to box $keeper only"
new_invocation() {
	local now
	now=$(service_show "$victim" "$service" InvocationID)
	[[ -n $now && $now != "$invocation" ]]
}
wait_for "$wait_s" "box $victim restarts myco-$service.service" new_invocation
restarted=1
restarts=$(box_exec "$victim" curl -sS --max-time 5 --unix-socket /run/myco/myco.sock \
	http://localhost/metrics | sed -n 's/^myco_health_restarts_total //p')
log "box $victim restarted myco-$service.service (myco_health_restarts_total $restarts)"

healed=$(now_ms)
box_exec "$victim" rm "$state_dir/fail"
for i in 0 1; do
	wait_for "$wait_s" "box $i resolves $service.myco to both boxes again" dns_is "$i" "0 1"
done
back_ms=$(($(now_ms) - healed))
log "healthy again: both boxes resolve $service.myco to both after $(ms_as_s "$back_ms") s"
log "timings: unhealthy_reported_s=$(ms_as_s "$unhealthy_ms") back_in_dns_s=$(ms_as_s "$back_ms")"
log "PASS in $SECONDS s"
