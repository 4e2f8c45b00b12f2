#!/usr/bin/env bash
# `*.myco` DNS under load (issue 8): dnsperf against one myco-d and, in the same run, against
# dnsmasq serving the same names, both on loopback. Prints a markdown table (queries per second,
# average and p99 latency, resident memory) and one `DNSBENCH ...` line. Part of `make bench`;
# results and method in docs/benchmarks.md.
#
# myco-d runs with the executor on, writing units to a temporary directory and running a stand-in
# systemctl that reports every unit as running, so each deployed service is healthy on this box
# and resolves to 127.0.0.1. dnsmasq runs in the foreground from its binary (not its service),
# with host-record lines for the same names.
#
# Queries: the N service names (type A) plus 10% names that are not services (NXDOMAIN), the same
# file for both servers. Each server gets a timed pass (qps and average latency, from dnsperf's
# summary) and then a shorter verbose pass with the same parameters, whose per-response latencies
# give p99 (dnsperf 2.10 prints no percentiles). RSS is VmRSS after both passes.
#
# Environment: SERVICES (100), SECONDS_PER_RUN (10), P99_SECONDS (5), CLIENTS (1),
# OUTSTANDING (100), PORT_BASE (a free-looking port range, default 25300), CARGO_TARGET_DIR.
set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
services=${SERVICES:-100}
seconds=${SECONDS_PER_RUN:-10}
p99_seconds=${P99_SECONDS:-5}
clients=${CLIENTS:-1}
outstanding=${OUTSTANDING:-100}
port_base=${PORT_BASE:-25300}
gossip_port=$port_base
myco_dns_port=$((port_base + 1))
dnsmasq_port=$((port_base + 2))
bin=${CARGO_TARGET_DIR:-$root/target}/release
[[ $bin = /* ]] || bin=$root/$bin

log() { echo "dnsbench: $*" >&2; }
fail() { log "FAIL: $*"; exit 1; }

work=$(mktemp -d /tmp/dnsbench.XXXXXX)
daemon_pid=
dnsmasq_pid=
cleanup() {
	local pid
	for pid in $daemon_pid $dnsmasq_pid; do
		kill "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
	return 0
}
trap cleanup EXIT

# dnsmasq-base is the binary alone: the dnsmasq package would also install and start the service.
if ! command -v dnsperf >/dev/null || ! command -v dnsmasq >/dev/null || ! command -v dig >/dev/null; then
	log "installing dnsperf, dnsmasq-base and dig"
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends \
		dnsperf dnsmasq-base dnsutils >/dev/null
fi

cargo build --release -p myco-host -p myco-cli --manifest-path "$root/Cargo.toml" >&2

# Keys and certificate for a cluster of one.
"$bin/myco" keygen --out "$work/op.key" >/dev/null
"$bin/myco" keygen --out "$work/node.key" >/dev/null
json_field() { sed -nE "s/.*\"$1\" *: *\"([^\"]*)\".*/\1/p"; }
operator=$("$bin/myco" pubkey --key "$work/op.key" --json | json_field public_key)
node=$("$bin/myco" pubkey --key "$work/node.key" --json | json_field public_key)
[[ ${#operator} -eq 64 && ${#node} -eq 64 ]] || fail "could not read public keys from 'myco pubkey'"
"$bin/myco" cert --operator-key "$work/op.key" --node-pubkey "$node" --zone 0 --arch x86_64 \
	--out "$work/node.cert" >/dev/null

# The tests' stand-in systemctl: reports every unit it is asked about as running, accepts
# everything else.
cp "$root/myco-testkit/fake-systemctl.sh" "$work/fake-systemctl"
chmod 755 "$work/fake-systemctl"
mkdir -p "$work/state" "$work/units"

"$bin/myco-d" --operator "$operator" --key "$work/node.key" --cert "$work/node.cert" \
	--state-dir "$work/state" --socket "$work/myco.sock" --reserve-bytes 0 \
	--listen "127.0.0.1:$gossip_port" --dns "127.0.0.1:$myco_dns_port" --cache-listen off \
	--executor systemd --unit-dir "$work/units" --systemctl "$work/fake-systemctl" \
	2>"$work/myco-d.log" &
daemon_pid=$!
for _ in $(seq 100); do
	[[ -S $work/myco.sock ]] && break
	kill -0 "$daemon_pid" 2>/dev/null || fail "myco-d exited: $(tail -5 "$work/myco-d.log")"
	sleep 0.1
done
[[ -S $work/myco.sock ]] || fail "myco-d did not create its socket"

name() { printf 'svc-%03d' "$1"; }
log "deploying $services services to myco-d"
for ((i = 0; i < services; i++)); do
	printf '{"name": "%s", "exec": "/usr/bin/true", "ports": [{"port": 8080, "protocol": "tcp"}]}\n' \
		"$(name "$i")" >"$work/manifest.json"
	"$bin/myco" deploy "$work/manifest.json" --operator-key "$work/op.key" \
		--socket "$work/myco.sock" >/dev/null
done
last=$(name $((services - 1))).myco
for _ in $(seq 300); do
	[[ $(dig @127.0.0.1 -p "$myco_dns_port" "$last" A +short +tries=1 +time=1 2>/dev/null) = 127.0.0.1 ]] && break
	sleep 0.1
done
[[ $(dig @127.0.0.1 -p "$myco_dns_port" "$last" A +short +tries=1 +time=1) = 127.0.0.1 ]] \
	|| fail "myco-d does not answer $last with 127.0.0.1"
for ((i = 0; i < services; i++)); do
	[[ $(dig @127.0.0.1 -p "$myco_dns_port" "$(name "$i").myco" A +short +tries=1 +time=1) = 127.0.0.1 ]] \
		|| fail "myco-d does not answer $(name "$i").myco"
done

# dnsmasq: the same names, no upstream, no /etc/hosts; local=/myco/ makes it answer NXDOMAIN for
# other names in the zone (without it, a miss is REFUSED for want of an upstream).
{
	echo "local=/myco/"
	for ((i = 0; i < services; i++)); do echo "host-record=$(name "$i").myco,127.0.0.1"; done
} >"$work/dnsmasq.conf"
dnsmasq --keep-in-foreground --conf-file="$work/dnsmasq.conf" --port="$dnsmasq_port" \
	--listen-address=127.0.0.1 --bind-interfaces --no-resolv --no-hosts --user="$(id -un)" \
	--pid-file="$work/dnsmasq.pid" --log-facility=- 2>"$work/dnsmasq.log" &
dnsmasq_pid=$!
for _ in $(seq 100); do
	[[ $(dig @127.0.0.1 -p "$dnsmasq_port" "$last" A +short +tries=1 +time=1 2>/dev/null) = 127.0.0.1 ]] && break
	kill -0 "$dnsmasq_pid" 2>/dev/null || fail "dnsmasq exited: $(tail -5 "$work/dnsmasq.log")"
	sleep 0.1
done
[[ $(dig @127.0.0.1 -p "$dnsmasq_port" "$last" A +short +tries=1 +time=1) = 127.0.0.1 ]] \
	|| fail "dnsmasq does not answer $last with 127.0.0.1"

# Queries: every service, and one miss per ten names, interleaved.
misses=$(((services + 9) / 10))
{
	for ((i = 0; i < services; i++)); do
		echo "$(name "$i").myco A"
		((i % 10 == 9)) && echo "nope-$((i / 10)).myco A"
	done
	true
} >"$work/queries"
[[ $(grep -c nope "$work/queries") -eq $misses ]] || fail "query file has the wrong number of misses"

# CPU time (user + system, clock ticks) a process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# One server: a timed pass for qps and average latency, a verbose pass for p99. The server's CPU
# time over the timed pass, per completed query, shows its cost apart from dnsperf's (the two
# share the machine's 2 cores, so qps can be bounded by dnsperf rather than the server).
# Sets qps, avg_ms, p99_ms, lost, cpu_us.
measure() {
	local port=$1 label=$2 pid=$3
	local out=$work/$label before completed
	before=$(cpu_ticks "$pid")
	dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$seconds" -c "$clients" -q "$outstanding" \
		>"$out.summary" 2>&1 || fail "dnsperf against $label: $(tail -5 "$out.summary")"
	completed=$(awk '/Queries completed:/ {print $3}' "$out.summary")
	cpu_us=$(awk -v t="$(($(cpu_ticks "$pid") - before))" -v hz="$(getconf CLK_TCK)" -v n="$completed" \
		'BEGIN {printf "%.1f", t / hz / n * 1e6}')
	qps=$(awk '/Queries per second:/ {print $4}' "$out.summary")
	avg_ms=$(awk '/Average Latency \(s\):/ {printf "%.3f", $4 * 1000}' "$out.summary")
	lost=$(awk '/Queries lost:/ {print $3}' "$out.summary")
	nx=$(awk '/Response codes:/ {for (i = 1; i <= NF; i++) if ($i == "NXDOMAIN") print $(i + 1)}' "$out.summary")
	[[ -n $nx && $nx -gt 0 ]] || fail "$label answered no NXDOMAIN: $(grep 'Response codes' "$out.summary")"
	[[ -n $qps && -n $avg_ms ]] || fail "could not read dnsperf's summary for $label"
	# -v prints one line per response: "> RCODE NAME TYPE SECONDS".
	dnsperf -s 127.0.0.1 -p "$port" -d "$work/queries" -l "$p99_seconds" -c "$clients" -q "$outstanding" -v \
		>"$out.verbose" 2>&1 || fail "verbose dnsperf against $label"
	p99_ms=$(awk '$1 == ">" {print $NF}' "$out.verbose" | sort -g \
		| awk '{v[NR] = $1} END {if (NR == 0) exit 1; i = int(NR * 0.99 + 0.999999); if (i > NR) i = NR; printf "%.3f", v[i] * 1000}') \
		|| fail "no per-query latencies in dnsperf -v output for $label"
	log "$label: $qps qps, avg $avg_ms ms, p99 $p99_ms ms, lost $lost, $cpu_us us CPU per query; $(grep 'Response codes' "$out.summary" | sed 's/^ *//')"
}

rss_kib() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status"; }

log "dnsperf: $seconds s per server (then $p99_seconds s verbose for p99), -c $clients -q $outstanding"
measure "$myco_dns_port" myco-d "$daemon_pid"
myco_qps=$qps myco_avg=$avg_ms myco_p99=$p99_ms myco_lost=$lost myco_cpu=$cpu_us
measure "$dnsmasq_port" dnsmasq "$dnsmasq_pid"
dnsmasq_qps=$qps dnsmasq_avg=$avg_ms dnsmasq_p99=$p99_ms dnsmasq_lost=$lost dnsmasq_cpu=$cpu_us
kill -0 "$daemon_pid" 2>/dev/null || fail "myco-d died during the run"
kill -0 "$dnsmasq_pid" 2>/dev/null || fail "dnsmasq died during the run"
myco_rss=$(rss_kib "$daemon_pid")
dnsmasq_rss=$(rss_kib "$dnsmasq_pid")

echo
echo "| server | queries/s | avg latency | p99 latency | lost | server CPU per query | RSS |"
echo "|---|---|---|---|---|---|---|"
printf '| myco-d | %.0f | %s ms | %s ms | %s | %s µs | %s KiB |\n' \
	"$myco_qps" "$myco_avg" "$myco_p99" "$myco_lost" "$myco_cpu" "$myco_rss"
printf '| dnsmasq %s | %.0f | %s ms | %s ms | %s | %s µs | %s KiB |\n' \
	"$(dnsmasq --version | awk 'NR == 1 {print $3}')" "$dnsmasq_qps" "$dnsmasq_avg" "$dnsmasq_p99" \
	"$dnsmasq_lost" "$dnsmasq_cpu" "$dnsmasq_rss"
echo
printf 'DNSBENCH services=%s queries=%s seconds=%s clients=%s outstanding=%s myco_qps=%.0f myco_avg_ms=%s myco_p99_ms=%s myco_cpu_us=%s myco_rss_kib=%s dnsmasq_qps=%.0f dnsmasq_avg_ms=%s dnsmasq_p99_ms=%s dnsmasq_cpu_us=%s dnsmasq_rss_kib=%s\n' \
	"$services" "$(wc -l <"$work/queries")" "$seconds" "$clients" "$outstanding" "$myco_qps" "$myco_avg" \
	"$myco_p99" "$myco_cpu" "$myco_rss" "$dnsmasq_qps" "$dnsmasq_avg" "$dnsmasq_p99" "$dnsmasq_cpu" "$dnsmasq_rss"
