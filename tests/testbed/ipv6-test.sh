#!/usr/bin/env bash
# The testbed on IPv6-only links (`make testbed-test`, docs/testbed.md): three boxes with real
# systemd whose bridge carries only IPv6 (TESTBED_IPV6 in lib.sh): box I has fd00:77::(10+I)/64
# and no IPv4 address but loopback's, myco-d listens on [::]:7946, joins by IPv6 address and
# accepts tunnels on --proxy-listen [::]:7948. It checks, in order:
#
# - no box has an IPv4 address or route but loopback's, and every box sees three members alive,
#   each at its IPv6 address (gossip formed over IPv6);
# - a service with 2 replicas, deployed through box 0's socket, runs on exactly 2 boxes;
# - `dig AAAA web.myco @127.0.0.1` in every box answers exactly the placed boxes' IPv6 addresses
#   (the box itself as ::1 when it runs the service), and A answers nothing but the box's own
#   127.0.0.1;
# - the peer-to-peer Nix cache of each box answers `curl -g http://[ADDR]:7947/nix-cache-info`
#   from another box;
# - `myco proxy --to [ADDR]:7948`, run in another box's network namespace with the operator key
#   (which stays on the host), serves `myco ls` and `myco nodes` of that box through the tunnel.
#
# Prints `IPV6 formed=0|1 dns_aaaa=0|1 cache=0|1 proxy=0|1` (each measured, 0 when its step was not
# reached, and the script fails) and the timings `IPV6 up_s=.. deploy_to_running_s=..`. The waits'
# bounds (60 s) only catch an engine that never gets there.
#
# Needs root on a cgroup v1 or hybrid host. Usage: tests/testbed/ipv6-test.sh [RELEASE_DIR]
# (default target/release, holding myco-d and myco).

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
TESTBED_IPV6=yes
proxy_port=7948
cache_port=7947
TESTBED_ARGS="--proxy-listen [::]:$proxy_port"
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

box_count=3
service=web
replicas=2
wait_s=60
formed=0 dns_aaaa=0 cache=0 proxy=0 proxy_pid=
report() { echo "IPV6 formed=$formed dns_aaaa=$dns_aaaa cache=$cache proxy=$proxy"; }
# The result line even on a failure, and the proxy stopped; testbed_down sees the exit status.
finish() {
	local status=$?
	set +e
	report
	[[ -z $proxy_pid ]] || kill "$proxy_pid" 2>/dev/null
	(exit "$status")
	testbed_down
}
trap finish EXIT
trap 'exit 130' INT TERM

started=$(now_ms)
testbed_up "$box_count"
up_ms=$(($(now_ms) - started))
testbed_has_executor || fail "the IPv6 test needs myco-d's systemd executor"

# --- the links carry IPv6 only ---------------------------------------------------------------

for ((i = 0; i < box_count; i++)); do
	ns=$(box_name "$i")
	v4=$(ip -n "$ns" -4 -o addr show | awk '{print $2, $4}')
	[[ $v4 == "lo 127.0.0.1/8" ]] || fail "box $i has IPv4 addresses besides loopback's: $v4"
	[[ -z $(ip -n "$ns" -4 route show) ]] || fail "box $i has an IPv4 route: $(ip -n "$ns" -4 route show)"
	nodes=$(box_myco "$i" nodes --json)
	for ((j = 0; j < box_count; j++)); do
		((j == i)) && continue
		[[ $nodes == *"\"address\":\"$(box_endpoint "$j" "$TESTBED_PORT")\""* ]] \
			|| fail "box $i does not list box $j at $(box_endpoint "$j" "$TESTBED_PORT"): $nodes"
	done
done
formed=1
log "gossip formed over IPv6 only: every box lists the others at their fd00:77:: addresses"

# --- a deploy runs on the placed boxes ---------------------------------------------------------

manifest=$TESTBED_WORK/$service.json
cat >"$manifest" <<EOF
{"name": "$service", "exec": "/usr/bin/sleep", "args": ["infinity"], "replicas": $replicas}
EOF
running=
runs_on_exactly() {
	running=$(service_boxes "$service")
	[[ $(wc -w <<<"$running") -eq $1 ]]
}
deployed=$(now_ms)
"$TESTBED_WORK/bin/myco" deploy "$manifest" --operator-key "$TESTBED_WORK/operator.key" \
	--socket "$(box_socket 0)" >/dev/null
wait_for "$wait_s" "myco-$service.service active on $replicas boxes" runs_on_exactly "$replicas"
deploy_ms=$(($(now_ms) - deployed))
log "deployed $service: active on boxes $running after $(ms_as_s "$deploy_ms") s"

# --- DNS: AAAA records of the placed boxes -----------------------------------------------------

dig_in() { ip netns exec "$(box_name "$1")" dig +short +time=1 +tries=1 @127.0.0.1 "$service.myco" "$2" | sort; }
# What box I should get for AAAA: the placed boxes' IPv6 addresses, itself as ::1.
aaaa_expected() {
	local j
	for j in $running; do
		if ((j == $1)); then echo ::1; else box_addr "$j"; fi
	done | sort
}
a_expected() { [[ " $running " != *" $1 "* ]] || echo 127.0.0.1; }
dns_ok() {
	[[ $(dig_in "$1" AAAA) == "$(aaaa_expected "$1")" && $(dig_in "$1" A) == "$(a_expected "$1")" ]]
}
for ((i = 0; i < box_count; i++)); do
	wait_for "$wait_s" "box $i answers AAAA $service.myco with the placed boxes ($running)" dns_ok "$i"
	log "box $i: AAAA $service.myco is $(dig_in "$i" AAAA | tr '\n' ' ')"
done
dns_aaaa=1

# --- the peer-to-peer Nix cache over IPv6 ------------------------------------------------------

for ((i = 0; i < box_count; i++)); do
	from=$(((i + 1) % box_count))
	url="http://$(box_endpoint "$i" "$cache_port")/nix-cache-info"
	info=$(box_exec "$from" curl -gsSf --max-time 5 "$url") || fail "box $from: curl $url failed"
	grep -qx 'StoreDir: /nix/store' <<<"$info" || fail "box $from: $url answered '$info'"
done
cache=1
log "every box's binary cache answers /nix-cache-info over IPv6 to another box"

# --- myco proxy over IPv6 --------------------------------------------------------------------

# The proxy runs in box 1's network namespace (box 0 reached over the IPv6 link) but on the host's
# files, with the operator key that never enters a box; its socket is in the run's directory.
sock=$TESTBED_WORK/proxy.sock
ip netns exec "$(box_name 1)" "$TESTBED_WORK/bin/myco" proxy --to "$(box_endpoint 0 "$proxy_port")" \
	--listen "$sock" --operator-key "$TESTBED_WORK/operator.key" &
proxy_pid=$!
wait_for 10 "myco proxy serves $sock" test -S "$sock"
listed=$("$TESTBED_WORK/bin/myco" ls --socket "$sock")
grep -qw "$service" <<<"$listed" || fail "myco ls through the proxy does not list $service: $listed"
through=$("$TESTBED_WORK/bin/myco" status --json --socket "$sock" | json_field node_id)
direct=$(box_myco 0 status --json | json_field node_id)
[[ -n $through && $through == "$direct" ]] || fail "the proxy reached node '$through', not box 0 ($direct)"
proxy=1
log "myco ls through myco proxy --to $(box_endpoint 0 "$proxy_port") lists $service (node $through)"

echo "IPV6 up_s=$(ms_as_s "$up_ms") deploy_to_running_s=$(ms_as_s "$deploy_ms")"
