# shellcheck shell=bash
# Shell library: a testbed of N Myco boxes on this machine (docs/testbed.md). Each box is a
# Debian bookworm container with real systemd as PID 1 (tests/testbed/nspawn.sh), in a network
# namespace of its own joined to one bridge, running the release `myco-d` as the systemd service
# systemd/myco-d.service, as the user myco beside the privileged helper myco-priv (its socket and
# service from systemd/, the user from systemd/myco.sysusers), with its own node key and
# certificate. Sourced by the testbed's tests and demo.sh; it defines functions and runs nothing.
#
#   testbed_up N      boot N boxes and wait until every box sees N members alive
#   testbed_down      stop and remove everything testbed_up made; safe to call twice, and from a
#                     trap: `trap testbed_down EXIT`
#   box_exec I CMD    run CMD inside box I (nsenter into all its namespaces)
#   box_myco I ARGS   run the `myco` tool inside box I, against that box's daemon socket
#   box_nix I CMD     run a Nix command inside box I, with the box's own Nix configuration
#   box_cert I H      write box I's certificate again, issued at height H (a key rotation)
#   box_cut I         take box I off the bridge (its packets are dropped); box_heal I puts it back
#   box_stop I        clean poweroff of box I; box_kill I is a power cut; box_start I boots it
#                     again (fresh state: --volatile=overlay keeps nothing, the keys are the same)
#
# Box I (0-based) has the address 10.77.0.(10+I)/24 on a bridge that has no address on the host
# side: gossip stays between the boxes' namespaces and never reaches the host's own interfaces or
# any other machine. Every name this run creates carries TESTBED_ID (this shell's pid), so runs
# can overlap, and a run that was killed before its trap ran is swept by the next one.
#
# Callers set TESTBED_RELEASE (the directory holding myco-d, myco-priv and myco; default
# target/release),
# may set TESTBED_UNIT (default systemd/myco-d.service), and run as root with `set -euo pipefail`.
# They may also set TESTBED_BARE, box numbers separated by spaces: those boxes boot without Myco
# (no myco-d, myco-priv, myco, units or /etc/myco bound in) and testbed_up neither starts nor counts them;
# their work directory, which holds the etc-myco an operator would copy in, is bound read-only at
# /myco-testbed, for a caller that installs Myco itself (package-test.sh installs the .deb).
# TESTBED_BINDS, an array of systemd-nspawn --bind/--bind-ro arguments, is given to every box
# (golden-test.sh binds its git repositories and the boxes' Nix configuration); TESTBED_BOX_BINDS,
# an array indexed by box number, further such arguments for that box alone, separated by spaces
# (xsys-test.sh: each box's own nix.conf, flake.sh's flake_box_conf).
# TESTBED_ARCH, an array indexed by box number, the arch box I's certificate names (default
# x86_64; xsys-test.sh certifies an "aarch64 board").
# TESTBED_IPV6=yes makes the links IPv6 only: box I has fd00:77::(10+I)/64 and no IPv4 address
# but loopback, and myco-d listens on [::] and joins by IPv6 address (ipv6-test.sh).
# TESTBED_ZONES="0 0 1 1" certifies box I into the I-th zone listed (default zone 0), and each box
# joins only boxes of its own zone; TESTBED_BRIDGES="0 2" certifies those boxes with --bridge all
# and gives each the other zones' bridge boxes as --bridge-seed (zones-test.sh).
# TESTBED_ARGS holds further myco-d flags for every box (e.g. --proxy-listen [::]:7948);
# TESTBED_BOX_ARGS, an array indexed by box number, further flags for that box alone, after
# TESTBED_ARGS (p2p-test.sh: TESTBED_BOX_ARGS=([0]="--builder" [2]="--build remote")).
# TESTBED_NAT="3" puts those boxes behind a NAT router (nat-test.sh): a network namespace with one
# leg on the bridge at 10.77.0.250 and one on a home bridge of its own at 10.78.0.1/24, which
# masquerades what leaves by the testbed bridge (nftables, in the router's namespace only) and
# forwards nothing inbound but replies (conntrack; an idle mapping lasts 30 s). Box I behind it
# has 10.78.0.(10+I)/24 on the home bridge and a default route via the router; the public boxes
# have no route to 10.78.0.0/24.
# Those boxes run `--behind-nat` (with NAT_DETECT=1 they run without it and find it out), join only
# public boxes, and no box joins them (their address is
# unreachable). IPv4 only. TESTBED_RELAYS="0 1" starts those boxes `--relay`.
# TESTBED_NAT_PORTS=random makes that NAT symmetric: each new flow (each peer a box sends to) gets
# a random public port (nftables `masquerade fully-random`); the default, kept, keeps a box's port.

TESTBED_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
# shellcheck source=SCRIPTDIR/nspawn.sh
source "$TESTBED_REPO/tests/testbed/nspawn.sh"

TESTBED_RELEASE=${TESTBED_RELEASE:-$TESTBED_REPO/target/release}
# The unit every box installs; another file tries a change to the unit on the whole testbed.
TESTBED_UNIT=${TESTBED_UNIT:-$TESTBED_REPO/systemd/myco-d.service}
TESTBED_BARE=${TESTBED_BARE:-}
[[ -v TESTBED_BINDS ]] || TESTBED_BINDS=()
# (`[[ -v A ]]` asks for A[0]: an array set at another index alone would be emptied.)
declare -p TESTBED_BOX_BINDS &>/dev/null || TESTBED_BOX_BINDS=()
declare -p TESTBED_ARCH &>/dev/null || TESTBED_ARCH=()
TESTBED_ID=$$
TESTBED_SUBNET=10.77.0
TESTBED_SUBNET6=fd00:77:
TESTBED_IPV6=${TESTBED_IPV6:-}
TESTBED_ZONES=${TESTBED_ZONES:-}
TESTBED_BRIDGES=${TESTBED_BRIDGES:-}
TESTBED_ARGS=${TESTBED_ARGS:-}
[[ -v TESTBED_BOX_ARGS ]] || TESTBED_BOX_ARGS=()
TESTBED_NAT=${TESTBED_NAT:-}
TESTBED_RELAYS=${TESTBED_RELAYS:-}
TESTBED_NAT_PORTS=${TESTBED_NAT_PORTS:-kept}
# The NAT router: its namespace and its leg on the testbed bridge share a name, as a box's do;
# its other leg is on the home bridge, where the boxes behind it are.
TESTBED_ROUTER=mtb${TESTBED_ID}r
TESTBED_ROUTER_ADDR=10.77.0.250
TESTBED_HOME=mtb${TESTBED_ID}h
TESTBED_HOME_SUBNET=10.78.0
TESTBED_PORT=7946
# Where every run keeps its files; a directory whose owner pid is gone belongs to a killed run.
TESTBED_RUN_ROOT=/run/myco-testbed
TESTBED_WORK=$TESTBED_RUN_ROOT/$TESTBED_ID
TESTBED_BRIDGE=mtb$TESTBED_ID
# The daemon's disk reserve: small, because the container's overlay is a tmpfs whose pages count
# against myco-d's MemoryMax=64M; the default 500 MB would get the daemon OOM-killed.
TESTBED_RESERVE_BYTES=4194304
# The boxes' state, indexed by box number; an empty BOX_LEADER means the box is not running.
TESTBED_BOXES=0
TESTBED_IS_UP=
BOX_PID=()
BOX_LEADER=()
BOX_ADDR=()
BOX_CGROUPS=()

log() { printf '[%s] %s\n' "$(date +%T.%2N)" "$*"; }
# testbed_down repeats the message after the diagnostics, so that it is the output's last line.
TESTBED_FAILURE=
fail() {
	TESTBED_FAILURE=$*
	log "FAIL: $*" >&2
	exit 1
}

# Milliseconds since the epoch, and a millisecond count as seconds with two decimals.
now_ms() { date +%s%3N; }
# Milliseconds on CLOCK_MONOTONIC, the clock systemd stamps a unit's state changes with (the boxes
# share the host's kernel and have no time namespace of their own): a time measured against
# `active_since_ms` does not include the polling that noticed the change (up to 0.3 s with two
# boxes to ask).
mono_ms() { python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 10**6)'; }
# When unit U on box I last became active, in `mono_ms` terms (0: never).
active_since_ms() {
	local us
	us=$(box_exec "$1" systemctl show -P ActiveEnterTimestampMonotonic "$2")
	echo $((${us:-0} / 1000))
}
# The latest `active_since_ms` of unit U on boxes I... minus FROM (a `mono_ms`), if one of them
# became active after FROM; otherwise nothing, and a non-zero status.
started_after_ms() {
	local from=$1 unit=$2 i t latest=0
	shift 2
	for i in "$@"; do
		t=$(active_since_ms "$i" "$unit")
		((t > latest)) && latest=$t
	done
	((latest > from)) && echo $((latest - from))
}
ms_as_s() { printf '%d.%02d' $(($1 / 1000)) $(($1 % 1000 / 10)); }

box_name() { echo "mtb${TESTBED_ID}b$1"; }
box_is_bare() { [[ " $TESTBED_BARE " == *" $1 "* ]]; }
box_is_bridge() { [[ " $TESTBED_BRIDGES " == *" $1 "* ]]; }
box_is_nat() { [[ " $TESTBED_NAT " == *" $1 "* ]]; }
box_is_relay() { [[ " $TESTBED_RELAYS " == *" $1 "* ]]; }
# Box I's address on the bridge, and ADDR:PORT of box I as myco-d and curl take it ([v6]:port).
box_addr() {
	if [[ -n $TESTBED_IPV6 ]]; then
		echo "$TESTBED_SUBNET6:$((10 + $1))"
	elif box_is_nat "$1"; then
		echo "$TESTBED_HOME_SUBNET.$((10 + $1))"
	else
		echo "$TESTBED_SUBNET.$((10 + $1))"
	fi
}
box_endpoint() {
	if [[ -n $TESTBED_IPV6 ]]; then echo "[$(box_addr "$1")]:$2"; else echo "$(box_addr "$1"):$2"; fi
}
box_zone() {
	local zones
	read -ra zones <<<"$TESTBED_ZONES"
	echo "${zones[$1]:-0}"
}
# How many boxes running myco-d share box I's zone (box I included): the members it should see.
box_zone_members() {
	local i=$1 j count=0
	for ((j = 0; j < TESTBED_BOXES; j++)); do
		box_is_bare "$j" || [[ $(box_zone "$j") != "$(box_zone "$i")" ]] || count=$((count + 1))
	done
	echo "$count"
}

box_exec() {
	local i=$1
	shift
	[[ -n ${BOX_LEADER[i]:-} ]] || fail "box $i is not running"
	nsenter -t "${BOX_LEADER[i]}" -a -- "$@"
}

# Runs a Nix command in box I with the box's own Nix configuration (/etc/nix), not the host's
# offline settings flake.sh exported, which name files the box does not have.
box_nix() {
	local i=$1
	shift
	box_exec "$i" env -u NIX_CONF_DIR -u XDG_CACHE_HOME "$@"
}

box_myco() {
	local i=$1
	shift
	box_exec "$i" /usr/bin/myco "$@"
}

box_cut() { ip link set "$(box_name "$1")" nomaster; }
box_heal() { ip link set "$(box_name "$1")" master "$(box_link "$1")"; }
# The bridge box I's veth is on: the home bridge behind the NAT router, or the testbed bridge.
box_link() { if box_is_nat "$1"; then echo "$TESTBED_HOME"; else echo "$TESTBED_BRIDGE"; fi; }

box_stop() {
	nspawn_stop "${BOX_PID[$1]}"
	BOX_LEADER[$1]=
	# shellcheck disable=SC2086
	nspawn_cgroups_remove ${BOX_CGROUPS[$1]}
}

# A power cut: SIGKILL to the container's PID 1 ends every process in it at once, with no
# shutdown and no goodbye to the peers.
box_kill() {
	if [[ -n ${BOX_LEADER[$1]:-} ]]; then kill -KILL "${BOX_LEADER[$1]}" 2>/dev/null || true; fi
	box_stop "$1"
}

box_start() {
	box_boot "$1"
	box_wait_booted "$1"
	box_exec "$1" sh -c "$NSPAWN_MYCO_START"
}

# Number of members box I's daemon lists as alive, itself included; 0 if it does not answer.
box_alive_count() {
	box_myco "$1" nodes --json 2>/dev/null | grep -o '"state":"alive"' | wc -l || true
}

# What this host must be before anything is installed, built or bootstrapped: root, and a cgroup
# v1 or hybrid layout. Checked first so that an unsuitable host is told so in a second, not after
# a build and a debootstrap of minutes.
testbed_host_check() {
	[[ $(id -u) -eq 0 ]] || fail "run as root (sudo): network namespaces, bridges and systemd-nspawn need it"
	[[ -z $TESTBED_NAT || -z $TESTBED_IPV6 ]] || fail "TESTBED_NAT is IPv4 only; it cannot be combined with TESTBED_IPV6"
	[[ -d /sys/fs/cgroup/memory ]] || fail "this host mounts only the unified (cgroup v2) hierarchy: there is no
cgroup v1 memory controller at /sys/fs/cgroup/memory. The testbed (make demo, make testbed-test,
make package-test) needs a cgroup v1 or hybrid host, where the boxes' systemd 252 runs
(docs/testbed.md says how to boot one with systemd.unified_cgroup_hierarchy=0). Nothing was
installed or built. The rest of the README (make check, the local two-daemon example) needs no
such host."
}

testbed_tools() {
	testbed_host_check
	nspawn_tools
	# The NAT router's rules, and the test's reachability probes.
	if [[ -n $TESTBED_NAT ]] && { ! command -v nft >/dev/null || ! command -v ping >/dev/null; }; then
		log "installing nftables iputils-ping"
		apt-get -o DPkg::Lock::Timeout=600 update -qq
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
			--no-install-recommends nftables iputils-ping >/dev/null
	fi
	local binary
	for binary in myco-d myco-priv myco; do
		[[ -x $TESTBED_RELEASE/$binary ]] \
			|| fail "$TESTBED_RELEASE/$binary is missing; run 'cargo build --release --bin myco-d --bin myco-priv --bin myco'"
	done
}

# Removes what runs killed before their trap left behind: their directory under
# TESTBED_RUN_ROOT records the nspawn pids and cgroups; links and namespaces carry their id.
testbed_sweep() {
	local dir id pid pids ns
	for dir in "$TESTBED_RUN_ROOT"/*/; do
		[[ -f $dir/owner ]] || continue
		id=$(basename "$dir")
		kill -0 "$(cat "$dir/owner")" 2>/dev/null && continue
		log "removing the leftovers of testbed run $id (its shell is gone)"
		pids=()
		while read -r pid; do
			grep -qa "mtb${id}b" "/proc/$pid/cmdline" 2>/dev/null && pids+=("$pid")
		done <"$dir/pids"
		((${#pids[@]} == 0)) || nspawn_stop "${pids[@]}"
		for ns in $(ip netns list | awk '{print $1}' | grep -E "^mtb${id}(b[0-9]+|r)$" || true); do
			ip netns delete "$ns" 2>/dev/null || true
		done
		ip link delete "mtb$id" 2>/dev/null || true
		ip link delete "mtb${id}h" 2>/dev/null || true
		# shellcheck disable=SC2046
		nspawn_cgroups_remove $(cat "$dir/cgroups")
		rm -rf "$dir"
	done
}

# Writes box I's /etc/myco: its key, its certificate signed by the operator key, and the env file
# from the example with the operator and the flags filled in. Each box joins through up to three
# others (the lowest-numbered; myco-d takes at most 8 --join), so any two can be down at boot;
# never through a box behind NAT, whose address no other box reaches.
box_files() {
	local i=$1 dir=$TESTBED_WORK/box$1 args j
	local -i joins
	mkdir -p "$dir"
	# systemd sets the hostname from /etc/hostname, over nspawn's --hostname.
	echo "box$i" >"$dir/hostname"
	mkdir -m 0700 "$dir/etc-myco"
	"$TESTBED_WORK/bin/myco" keygen --out "$dir/etc-myco/node.key" >/dev/null
	box_cert "$i" 0
	args="--listen 0.0.0.0:$TESTBED_PORT"
	[[ -z $TESTBED_IPV6 ]] || args="--listen [::]:$TESTBED_PORT"
	for ((j = 0, joins = 0; j < TESTBED_BOXES && joins < 3; j++)); do
		((j == i)) && continue
		[[ $(box_zone "$j") == "$(box_zone "$i")" ]] || continue
		box_is_nat "$j" && continue
		args+=" --join $(box_endpoint "$j" "$TESTBED_PORT")"
		joins+=1
	done
	for ((j = 0; j < TESTBED_BOXES; j++)); do
		box_is_bridge "$i" && box_is_bridge "$j" && [[ $(box_zone "$j") != "$(box_zone "$i")" ]] \
			&& ! box_is_nat "$j" && args+=" --bridge-seed $(box_endpoint "$j" "$TESTBED_PORT")"
	done
	! box_is_relay "$i" || args+=" --relay"
	! box_is_nat "$i" || [[ ${NAT_DETECT:-0} == 1 ]] || args+=" --behind-nat"
	args+=" --reserve-bytes $TESTBED_RESERVE_BYTES${TESTBED_ARGS:+ $TESTBED_ARGS}"
	args+="${TESTBED_BOX_ARGS[i]:+ ${TESTBED_BOX_ARGS[i]}}"
	# The boxes' offline Nix (tests/nix/conf) has neither build users nor the sandbox: builds
	# there run as root, which the daemon and the helper each refuse unless told.
	args+=" --allow-root-builds"
	sed -E -e "s/^MYCO_OPERATOR=.*/MYCO_OPERATOR=$TESTBED_OPERATOR/" -e "s/^MYCO_ARGS=.*/MYCO_ARGS=$args/" \
		-e "s/^MYCO_PRIV_ARGS=.*/MYCO_PRIV_ARGS=--allow-root-builds/" \
		"$TESTBED_REPO/systemd/myco-d.env.example" >"$dir/etc-myco/myco-d.env"
	chmod 0644 "$dir/etc-myco/myco-d.env"
}

# box_cert I HEIGHT: box I's certificate, signed by the operator key and issued at HEIGHT (the
# RevocationBlock it survives; docs/operator.md, "Rotating keys"), in its etc-myco. A running
# box reads it at the next restart of myco-d.
box_cert() {
	local i=$1 dir=$TESTBED_WORK/box$1 node bridge=()
	node=$("$TESTBED_WORK/bin/myco" pubkey --key "$dir/etc-myco/node.key" --json | json_field public_key)
	[[ ${#node} -eq 64 ]] || fail "could not read box $i's public key from 'myco pubkey'"
	box_is_bridge "$i" && bridge=(--bridge all)
	rm -f "$dir/etc-myco/node.cert"
	"$TESTBED_WORK/bin/myco" cert --operator-key "$TESTBED_WORK/operator.key" --node-pubkey "$node" \
		--zone "$(box_zone "$i")" "${bridge[@]}" --arch "${TESTBED_ARCH[i]:-x86_64}" --issued-at "$2" \
		--out "$dir/etc-myco/node.cert" >/dev/null
}

# Box I's network: a namespace with loopback and one end of a veth pair as eth0; the other end,
# named like the box, on the bridge (a box behind NAT: on the home bridge, with a default route
# via the router).
box_network() {
	local i=$1 name
	name=$(box_name "$i")
	BOX_ADDR[i]=$(box_addr "$i")
	ip netns add "$name"
	ip link add "$name" type veth peer name eth0 netns "$name"
	ip link set "$name" master "$(box_link "$i")" up
	ip -n "$name" link set lo up
	if [[ -n $TESTBED_IPV6 ]]; then
		# No duplicate address detection: the address is usable at once, not tentative for a second.
		ip -n "$name" addr add "${BOX_ADDR[i]}/64" dev eth0 nodad
	else
		ip -n "$name" addr add "${BOX_ADDR[i]}/24" dev eth0
	fi
	ip -n "$name" link set eth0 up
	! box_is_nat "$i" || ip -n "$name" route add default via "$TESTBED_HOME_SUBNET.1"
}

# The NAT router for TESTBED_NAT: a namespace with eth0 on the testbed bridge and `home` on the
# home bridge. It forwards from home to the testbed subnet, rewriting the source to its own
# address (masquerade: a box's port is kept while free, so the mapping is endpoint-independent
# as protocol.md section 12 assumes; with TESTBED_NAT_PORTS=random each peer sees another port),
# and from there back only what conntrack knows as a reply.
# Its conntrack forgets an idle UDP mapping after 30 s, even once both sides have spoken (Linux's
# default then is 120 s): the shortest mapping protocol.md section 12 claims to serve, so the
# testbed's NAT is the harshest one Myco should work behind.
testbed_router() {
	local r=$TESTBED_ROUTER
	ip link add "$TESTBED_HOME" type bridge
	ip link set "$TESTBED_HOME" up
	ip netns add "$r"
	ip link add "$r" type veth peer name eth0 netns "$r"
	ip link set "$r" master "$TESTBED_BRIDGE" up
	ip link add "${r}h" type veth peer name home netns "$r"
	ip link set "${r}h" master "$TESTBED_HOME" up
	ip -n "$r" link set lo up
	ip -n "$r" addr add "$TESTBED_ROUTER_ADDR/24" dev eth0
	ip -n "$r" addr add "$TESTBED_HOME_SUBNET.1/24" dev home
	ip -n "$r" link set eth0 up
	ip -n "$r" link set home up
	ip netns exec "$r" sysctl -qw net.ipv4.ip_forward=1 net.netfilter.nf_conntrack_udp_timeout=30 \
		net.netfilter.nf_conntrack_udp_timeout_stream=30
	local masquerade=masquerade
	[[ $TESTBED_NAT_PORTS != random ]] || masquerade="masquerade fully-random"
	ip netns exec "$r" nft -f - <<EOF
table ip myco_testbed_nat {
	chain forward {
		type filter hook forward priority filter; policy drop;
		ct state established,related accept
		iifname "home" oifname "eth0" accept
	}
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "eth0" $masquerade
	}
}
EOF
}

# Starts box I's container in the background.
box_boot() {
	local i=$1 name dir=$TESTBED_WORK/box$1 myco=() own=()
	name=$(box_name "$i")
	read -ra own <<<"${TESTBED_BOX_BINDS[i]:-}"
	if box_is_bare "$i"; then
		myco=(--bind-ro="$dir:/myco-testbed")
	else
		nspawn_myco_binds "$TESTBED_WORK/bin"
		myco=("${NSPAWN_MYCO_BINDS[@]}" --bind-ro="$TESTBED_WORK/bin/myco:/usr/bin/myco"
			--bind-ro="$dir/etc-myco:/etc/myco")
	fi
	nspawn_boot "$name" "$dir/console.log" --hostname="box$i" \
		--network-namespace-path="/run/netns/$name" "${myco[@]}" \
		--bind-ro="$dir/hostname:/etc/hostname" "${TESTBED_BINDS[@]}" "${own[@]}" \
		--bind-ro="$TESTBED_WORK/init:/myco-testbed-init" \
		/myco-testbed-init
	BOX_PID[i]=$NSPAWN_PID
	BOX_CGROUPS[i]="${NSPAWN_CGROUPS[*]}"
	echo "$NSPAWN_PID" >>"$TESTBED_WORK/pids"
	printf '%s\n' "${NSPAWN_CGROUPS[@]}" >>"$TESTBED_WORK/cgroups"
}

box_wait_booted() {
	BOX_LEADER[$1]=$(nspawn_leader "${BOX_PID[$1]}" "$TESTBED_WORK/box$1/console.log")
	nspawn_wait_running "${BOX_LEADER[$1]}"
}

json_field() { sed -nE "s/.*\"$1\" *: *\"([^\"]*)\".*/\1/p"; }

testbed_up() {
	local n=${1:?testbed_up N} i started pids=() alive members
	((n >= 1 && n <= 200)) || fail "testbed_up: $n boxes; the /24 has room for 1 to 200"
	started=$(now_ms)
	testbed_tools
	nspawn_rootfs
	mkdir -p "$TESTBED_RUN_ROOT"
	testbed_sweep
	TESTBED_BOXES=$n
	TESTBED_IS_UP=yes
	mkdir -m 0700 "$TESTBED_WORK"
	echo "$$" >"$TESTBED_WORK/owner"
	: >"$TESTBED_WORK/pids"
	: >"$TESTBED_WORK/cgroups"
	# Copies, so that a cargo build or an edit during the run cannot change what the boxes run.
	nspawn_myco_stage "$TESTBED_WORK/bin" "$TESTBED_RELEASE" "$TESTBED_UNIT"
	cp "$TESTBED_RELEASE/myco" "$TESTBED_WORK/bin/"
	nspawn_init_wrapper "$TESTBED_WORK/init"

	# The operator key stays on the host, as it would stay off real boxes.
	"$TESTBED_WORK/bin/myco" keygen --out "$TESTBED_WORK/operator.key" >/dev/null
	TESTBED_OPERATOR=$("$TESTBED_WORK/bin/myco" pubkey --key "$TESTBED_WORK/operator.key" --json \
		| json_field public_key)
	[[ ${#TESTBED_OPERATOR} -eq 64 ]] || fail "could not read the operator's public key from 'myco pubkey'"

	ip link add "$TESTBED_BRIDGE" type bridge
	if [[ -n $TESTBED_IPV6 ]]; then
		# Neighbour discovery is multicast: without snooping the bridge floods it, so no MLD querier
		# is needed; and the host keeps no (link-local) address on the bridge.
		ip link set "$TESTBED_BRIDGE" type bridge mcast_snooping 0
		sysctl -qw "net.ipv6.conf.$TESTBED_BRIDGE.disable_ipv6=1"
	fi
	ip link set "$TESTBED_BRIDGE" up
	[[ -z $TESTBED_NAT ]] || testbed_router
	for ((i = 0; i < n; i++)); do
		box_files "$i"
		box_network "$i"
		box_boot "$i"
	done
	for ((i = 0; i < n; i++)); do box_wait_booted "$i"; done
	log "$n containers booted in $(ms_as_s $(($(now_ms) - started))) s; the user myco, then systemctl enable --now myco-priv.socket myco-d"

	# `systemctl start` of a Type=notify unit returns once READY=1 arrived: the API answers.
	for ((i = 0; i < n; i++)); do
		box_is_bare "$i" && continue
		timeout 60 nsenter -t "${BOX_LEADER[i]}" -a -- sh -c "$NSPAWN_MYCO_START" &
		pids[i]=$!
	done
	for ((i = 0; i < n; i++)); do
		box_is_bare "$i" && continue
		wait "${pids[i]}" || fail "box $i: systemctl enable --now myco-d failed (READY=1 never came, or the daemon exited)"
	done

	for ((i = 0; i < n; i++)); do
		box_is_bare "$i" && continue
		members=$(box_zone_members "$i")
		for _ in $(seq 300); do
			alive=$(box_alive_count "$i")
			((alive == members)) && break
			sleep 0.1
		done
		((alive == members)) || fail "box $i sees $alive of $members members alive after 30 s"
	done
	log "testbed up: $n boxes, each running myco-d sees every member of its zone alive, in $(ms_as_s $(($(now_ms) - started))) s"
}

# Prints what the boxes' journals say about myco-d and the services it placed (on a failure).
testbed_diagnostics() {
	local i
	for ((i = 0; i < TESTBED_BOXES; i++)); do
		[[ -n ${BOX_LEADER[i]:-} ]] || continue
		echo "---- box $i (${BOX_ADDR[i]}): systemctl status 'myco-*'" >&2
		box_exec "$i" systemctl status --no-pager -l -n 0 'myco-*' >&2 || true
		echo "---- box $i: myco ls; myco nodes; the units myco-d wrote (first lines)" >&2
		box_myco "$i" ls >&2 || true
		box_myco "$i" nodes >&2 || true
		# shellcheck disable=SC2016 # expanded by the box's shell
		box_exec "$i" sh -c 'for f in /etc/systemd/system/myco-?*.service; do
			[ -e "$f" ] && [ "$f" != /etc/systemd/system/myco-d.service ] && echo "$f: $(head -n 1 "$f")"
		done' >&2 || true
		echo "---- box $i: journalctl -u 'myco-*' (last 40 lines)" >&2
		box_exec "$i" journalctl --no-pager -o short-precise -u 'myco-*' -n 40 >&2 || true
	done
	[[ -z $TESTBED_NAT ]] && return 0
	echo "---- the NAT router: its conntrack table (which public port maps which box to which peer)" >&2
	ip netns exec "$TESTBED_ROUTER" cat /proc/net/nf_conntrack >&2 || true
}

# With TESTBED_JOURNALS=DIR, keeps each running box's journal (short-precise: the host's clock,
# to the microsecond), its daemon's event stream and its metrics in DIR/boxI.journal,
# DIR/boxI.stream and DIR/boxI.metrics, to time where a deploy's or a death's seconds go
# (docs/benchmarks.md) and read counters (myco_nat_detected, ...) after the boxes are gone.
testbed_keep_journals() {
	local dir=${TESTBED_JOURNALS:-} i
	[[ -n $dir ]] || return 0
	mkdir -p "$dir"
	for ((i = 0; i < TESTBED_BOXES; i++)); do
		[[ -n ${BOX_LEADER[i]:-} ]] || continue
		box_exec "$i" journalctl --no-pager -o short-precise >"$dir/box$i.journal" 2>&1 || true
		box_exec "$i" curl -sN --max-time 2 --unix-socket /run/myco/myco.sock \
			-H 'Last-Event-ID: 0' http://localhost/stream >"$dir/box$i.stream" 2>&1 || true
		box_exec "$i" curl -s --unix-socket /run/myco/myco.sock http://box/metrics \
			>"$dir/box$i.metrics" 2>&1 || true
	done
	log "journals, event streams and metrics kept in $dir"
}

testbed_down() {
	local status=$? i pids=()
	[[ -n $TESTBED_IS_UP ]] || return 0
	TESTBED_IS_UP=
	((status == 0)) || testbed_diagnostics
	testbed_keep_journals
	for ((i = 0; i < TESTBED_BOXES; i++)); do
		[[ -n ${BOX_PID[i]:-} ]] && pids+=("${BOX_PID[i]}")
	done
	((${#pids[@]} == 0)) || nspawn_stop "${pids[@]}"
	for ((i = 0; i < TESTBED_BOXES; i++)); do
		ip netns delete "$(box_name "$i")" 2>/dev/null || true
		ip link delete "$(box_name "$i")" 2>/dev/null || true
		# shellcheck disable=SC2086
		nspawn_cgroups_remove ${BOX_CGROUPS[i]:-}
	done
	ip netns delete "$TESTBED_ROUTER" 2>/dev/null || true
	ip link delete "$TESTBED_ROUTER" 2>/dev/null || true
	ip link delete "${TESTBED_ROUTER}h" 2>/dev/null || true
	ip link delete "$TESTBED_HOME" 2>/dev/null || true
	ip link delete "$TESTBED_BRIDGE" 2>/dev/null || true
	rm -rf "$TESTBED_WORK"
	log "testbed down: containers, namespaces, links, bridges and cgroups removed"
	[[ -z $TESTBED_FAILURE ]] || log "FAIL: $TESTBED_FAILURE" >&2
}

# --- services the engine placed ----------------------------------------------------------------

# The daemon's API socket of box I, as a path on the host: the host's `myco` (which has the
# operator key) reaches a box's daemon through the box's root directory.
box_socket() { echo "/proc/${BOX_LEADER[$1]}/root/run/myco/myco.sock"; }

# Whether the systemd executor exists in this build (myco-d --executor systemd|none).
testbed_has_executor() { "$TESTBED_WORK/bin/myco-d" --help 2>&1 | grep -q -- '--executor'; }

# For a test script that defines `report` (its one result line): on any exit, prints that line,
# even after a failure, then takes the testbed down, which sees the script's exit status.
testbed_report_on_exit() {
	trap testbed_report_and_down EXIT
	trap 'exit 130' INT TERM
}
testbed_report_and_down() {
	local status=$?
	# Nothing here may stop testbed_down: a run that leaves its boxes up holds the testbed lock.
	set +eu
	report
	(exit "$status")
	testbed_down
}

# Fills the array `ids` with each box's node id, box I's at I, from `myco status --json`.
testbed_node_ids() {
	local i
	ids=()
	for ((i = 0; i < TESTBED_BOXES; i++)); do
		ids[i]=$(box_myco "$i" status --json | json_field node_id)
		[[ ${#ids[i]} -eq 16 ]] || fail "box $i: no node id in 'myco status --json'"
	done
}

# Prints the running boxes on which myco-NAME.service is active, space-separated.
service_boxes() {
	local name=$1 i boxes=()
	for ((i = 0; i < TESTBED_BOXES; i++)); do
		[[ -n ${BOX_LEADER[i]:-} ]] || continue
		[[ $(box_exec "$i" systemctl is-active "myco-$name.service" 2>/dev/null || true) == active ]] \
			&& boxes+=("$i")
	done
	echo "${boxes[*]}"
}

# Prints a property of myco-NAME.service on box I (systemctl show -p PROPERTY --value).
service_show() { box_exec "$1" systemctl show -p "$3" --value "myco-$2.service"; }

# Checks that myco-NAME.service on box I runs as a dynamic user and prints "USER (uid UID)".
service_dynamic_user() {
	local i=$1 name=$2 pid uid user
	[[ $(service_show "$i" "$name" DynamicUser) == yes ]] \
		|| fail "box $i: myco-$name.service does not have DynamicUser=yes"
	pid=$(service_show "$i" "$name" MainPID)
	((pid > 0)) || fail "box $i: myco-$name.service has no main process"
	# /proc/PID belongs to the process's effective uid; ps asks NSS, where libnss-systemd answers
	# for dynamic users.
	uid=$(box_exec "$i" stat -c %u "/proc/$pid")
	user=$(box_exec "$i" ps -o user= -p "$pid" | tr -d ' ')
	((uid >= 61184 && uid <= 65519)) || fail "box $i: myco-$name.service runs as uid $uid, not a dynamic user's (61184-65519)"
	[[ -n $user && $user != "$uid" ]] || fail "box $i: the dynamic user $uid has no name (libnss-systemd)"
	echo "$user (uid $uid)"
}

# Checks that box I runs myco-d split (docs/architecture.md, "Least privilege"): its process as
# the system user myco, not root. Prints "uid UID".
box_split_check() {
	local i=$1 pid uid myco
	pid=$(box_exec "$i" systemctl show -p MainPID --value myco-d.service)
	((pid > 0)) || fail "box $i: myco-d.service has no main process"
	uid=$(box_exec "$i" ps -o uid= -p "$pid" | tr -d ' ')
	myco=$(box_exec "$i" id -u myco)
	((uid != 0 && uid == myco)) || fail "box $i: myco-d runs as uid $uid, not as the user myco (uid $myco)"
	echo "uid $uid"
}

# box_priv_wrote I SERVICE: myco-priv runs as root on box I (socket-activated: once the daemon
# has asked for something) and its journal says it wrote myco-SERVICE.service, which the daemon,
# as myco, cannot write into /etc/systemd/system itself.
box_priv_wrote() {
	local helper
	helper=$(box_exec "$1" systemctl show -p MainPID --value myco-priv.service)
	((helper > 0)) || fail "box $1: myco-priv.service is not running"
	[[ $(box_exec "$1" ps -o uid= -p "$helper" | tr -d ' ') == 0 ]] || fail "box $1: myco-priv does not run as root"
	box_exec "$1" journalctl --no-pager -o cat -u myco-priv.service \
		| grep -q "^myco-priv: write myco-$2.service: Exited(0)" \
		|| fail "box $1: myco-priv's journal does not say it wrote myco-$2.service"
}

# wait_for SECONDS WHAT CMD...: runs CMD every 0.1 s until it succeeds; fails after SECONDS.
wait_for() {
	local seconds=$1 what=$2 deadline
	shift 2
	deadline=$(($(now_ms) + seconds * 1000))
	until "$@"; do
		(($(now_ms) < deadline)) || fail "$what: not after $seconds s"
		sleep 0.1
	done
}

# *.myco DNS for the caller's $service, as a workload on box I sees it (dig from inside the box's
# network namespace, to the daemon on its 127.0.0.1:53): every box that runs the service
# healthily, this box as 127.0.0.1. Sorted, one per line.
dns_answer() {
	# shellcheck disable=SC2154 # the caller's
	ip netns exec "$(box_name "$1")" dig +short +time=1 +tries=1 @127.0.0.1 "$service.myco" A | sort
}
# What box I should get from dns_answer when the boxes BOXES (indices) serve the service.
dns_expected() {
	local i=$1 j
	for j in $2; do
		if ((j == i)); then echo 127.0.0.1; else box_addr "$j"; fi
	done | sort
}
# dns_is I BOXES: box I's DNS answers exactly the boxes BOXES.
dns_is() {
	[[ $(dns_answer "$1") == "$(dns_expected "$1" "$2")" ]]
}

# --- builds, and the boxes' binary caches (golden-test.sh, nat-test.sh, p2p-*.sh) ---------------

# A counter from box I's metrics (0 when absent).
metric() {
	box_exec "$1" curl -s --unix-socket /run/myco/myco.sock http://box/metrics \
		| awk -v name="$2" '$1 == name {n = $2} END {print n + 0}'
}

# The store path box I's unit of the caller's $service runs (its ExecStart program without
# /bin/NAME).
# shellcheck disable=SC2154 # service is the caller's
store_path_on() {
	service_show "$1" "$service" ExecStart | sed -nE "s|.*path=(/nix/store/[^ ;]*)/bin/$service .*|\1|p"
}

# flake_deploy LABEL REPLICAS [BOX]: signs FLAKE_REPO's myco.json with REPLICAS (locking the
# branch's commit) and sends the entry through box BOX's socket (default 0).
flake_deploy() {
	local entry=$TESTBED_WORK/$1.entry
	sed -i -E "s/\"replicas\": [0-9]+/\"replicas\": $2/" "$FLAKE_REPO/myco.json"
	"$TESTBED_WORK/bin/myco" sign "$FLAKE_REPO/myco.json" --operator-key "$TESTBED_WORK/operator.key" \
		--out "$entry" >/dev/null
	"$TESTBED_WORK/bin/myco" deploy --entry "$entry" --socket "$(box_socket "${3:-0}")" >/dev/null
}

# Whether the caller's $service runs on exactly one box; sets one_boxes to it.
one_box() { read -ra one_boxes <<<"$(service_boxes "$service")" && ((${#one_boxes[@]} == 1)); }

# Whether $service runs on exactly one box, from a built store path other than NOT (if given);
# sets one_boxes to that box and one_path to the path. Both in one look: a unit seen active
# may be read a moment later while it is being replaced or removed.
one_built() {
	one_box || return 1
	one_path=$(store_path_on "${one_boxes[0]}")
	# shellcheck disable=SC2154 # the caller's
	[[ $one_path == /nix/store/*-$service && $one_path != "${1:-}" ]]
}

# flake_deploy NAME 1, then waits (the caller's $wait_s) for $service on one box running a built
# store path other than NOT (if given); sets one_boxes to that box and one_path to the path.
flake_deploy_one() {
	flake_deploy "$1" 1
	# shellcheck disable=SC2154 # the caller's
	wait_for "$wait_s" "myco-$service.service active on 1 box, from a built store path" one_built "${2:-}"
}

# The log of box I's last build of the service (nix build -L's standard error).
# shellcheck disable=SC2154 # service is the caller's
build_log() { box_exec "$1" cat "/var/lib/myco/builds/$service.log" 2>/dev/null || true; }
# Derivations box I's last build built itself (Nix's "building '...drv'" lines).
built_here() { build_log "$1" | grep -c "^building '/nix/store/" || true; }
# Whether box I's last build copied a path from a peer's http:// cache.
fetched() { build_log "$1" | grep -q "^copying path '/nix/store/[^']*' from 'http://"; }

# The boxes (numbers) whose node key signed PATH in box I's store: Nix registers the signatures
# of the narinfo it verified, named by node id (`myco pubkey`'s nix_cache_key).
signers() {
	local sigs j id out=()
	sigs=$(box_nix "$1" nix --extra-experimental-features nix-command path-info --sigs "$2")
	for ((j = 0; j < TESTBED_BOXES; j++)); do
		id=$("$TESTBED_WORK/bin/myco" pubkey --key "$TESTBED_WORK/box$j/etc-myco/node.key" --json \
			| json_field node_id)
		[[ $sigs == *[[:space:]]"$id:"* ]] && out+=("$j")
	done
	echo "${out[*]}"
}
# fetched_signed I PATH: box I holds PATH with the signature of another box's node key.
fetched_signed() {
	local by
	by=$(signers "$1" "$2")
	[[ -n $by && " $by " != *" $1 "* ]] || fail "box $1: $2 carries no signature of another box: $(box_nix "$1" nix --extra-experimental-features nix-command path-info --sigs "$2")"
	log "box $1: $2 is signed by box $by's node key, which box $1's Nix verified"
}

# The value of KEY on the last line starting with PREFIX in LOGDIR/LOG, or 0 (the summary lines
# of make testbed-test: rollout-line.sh, p2p-line.sh).
log_figure() {
	local v
	v=$(grep -h "^$3 " "$1/$2" 2>/dev/null | tail -n 1 | tr ' ' '\n' | sed -n "s/^$4=//p")
	echo "${v:-0}"
}
