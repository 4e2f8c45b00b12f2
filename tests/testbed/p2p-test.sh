#!/usr/bin/env bash
# Boxes fetch builds from each other, and a box that never builds gets its builds from a builder
# (issue 16; docs/nix.md), on three boxes with real systemd and real Nix (each box its own store,
# offline; flake.sh). Box 0 runs `--builder`, box 2 `--build remote`, box 1 neither. The service
# is `myco init python web`, as in golden-test.sh.
#
# 1. Deployed with 1 replica, it runs on the box placement picks, which got it while no box had
#    it: by its own build (box 0 or 1: its build log shows a derivation built), or, on box 2, by
#    asking the builder: box 0 built it though it is not placed there
#    (myco_builds_for_peers_total), box 2 asked (myco_builds_requested_total) and fetched it from
#    box 0's cache without building.
# 2. The same commit deployed with 3 replicas runs on every box, the same store path everywhere,
#    and the boxes that did not have it never built: the log of their build (nix build -L, run in
#    the unit myco-build-web) has a path copied from a peer's http:// cache and no derivation
#    built, and myco_builds_from_peers_total counts the fetch. Nix copies a path only if its
#    narinfo is signed by a key it was told to trust (the daemon names only the node keys the
#    operator certified), and registers that signature: `nix path-info --sigs` in the fetching
#    box names another box's node id (`myco pubkey`). Box 0, if it built the version for
#    box 2 in step 1, already holds it: its build neither builds nor copies.
# 3. Box 2 (--build remote) never built a derivation in any of its builds.
# 4. A new commit deployed to the 3 replicas (rolled out in waves): every box runs its new store
#    path, box 2 again without building, from a peer's cache. Each box's log of its last build
#    of the service is printed (a box that built the version and then ran a build again for a
#    newer entry shows that later, empty, log).
#
# With TESTBED_IPV6=yes the links carry IPv6 only (as in ipv6-test.sh): Nix substitutes from
# http://[fd00:77::1J]:7947, the daemons gossip over IPv6.
#
# Prints one line, also on a failure (a field not reached reads 0):
#   P2P-TESTBED links=ipv4|ipv6 substituted_boxes=N builds_on_fetchers=N remote_build_ok=0|1 remote_from=boxN
#       built_for_peers=N fetch_s=S
# substituted_boxes: boxes that got version 1 from a peer's cache (steps 1 and 2);
# builds_on_fetchers: derivations the boxes that did not get it first built (must be 0);
# remote_build_ok: step 4 held for box 2; remote_from: whose cache box 2 copied version 2 from
# (none if it copied nothing); built_for_peers: box 0's myco_builds_for_peers_total at
# the end (builds it ran because box 2 asked); fetch_s: from the 3-replica deploy until all 3
# boxes run version 1.
#
# Needs root, like engine-test.sh. Usage: tests/testbed/p2p-test.sh [RELEASE_DIR]

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
# shellcheck source=SCRIPTDIR/flake.sh
source "$(dirname "$0")/flake.sh"
# Outside the testbed's work directory: the boxes bind the repositories at boot.
p2p=$(mktemp -d /tmp/myco-p2p.XXXXXX)
TESTBED_BOX_ARGS=([0]="--builder" [2]="--build remote")
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

service=web
wait_s=120
substituted=0
fetcher_builds=0
remote_ok=0
fetch_ms=0
built_for_peers=0
remote_from=none
links=ipv4
[[ -z $TESTBED_IPV6 ]] || links=ipv6
# The result line, also on a failure (testbed_report_and_down).
report() {
	echo "P2P-TESTBED links=$links substituted_boxes=$substituted builds_on_fetchers=$fetcher_builds" \
		"remote_build_ok=$remote_ok remote_from=$remote_from built_for_peers=$built_for_peers fetch_s=$(ms_as_s "$fetch_ms")"
}
trap 'testbed_report_and_down; rm -rf "$p2p"' EXIT
trap 'exit 130' INT TERM

flake_setup "$p2p"
TESTBED_BINDS=("${FLAKE_BINDS[@]}")
flake_init "$service" "$TESTBED_RELEASE/myco"
repo=$FLAKE_REPO

testbed_up 3

# every box runs store path PATH (or, with PATH empty, a store path other than NOT).
all_run() {
	local path=$1 not=${2:-} i p
	for i in 0 1 2; do
		p=$(store_path_on "$i")
		[[ $p == /nix/store/*-$service ]] || return 1
		if [[ -n $path ]]; then [[ $p == "$path" ]] || return 1; else [[ $p != "$not" ]] || return 1; fi
	done
}

# --- 1. one replica: the box placement picks gets it first --------------------------------------
flake_deploy_one v1-one
first=${one_boxes[0]} v1=$one_path
log "1 replica: box $first runs $v1; its build log:"
build_log "$first" | sed 's/^/    /' >&2
if ((first == 2)); then
	# Nobody offered it: box 2 asked the builder, which built it though it is not placed there.
	built_for_peers=$(metric 0 myco_builds_for_peers_total)
	((built_for_peers >= 1)) || fail "box 2 (--build remote) runs $v1, but box 0 built nothing for peers"
	(($(metric 2 myco_builds_requested_total) >= 1)) || fail "box 2 runs $v1 but asked no builder"
	{ (($(built_here 2) == 0)) && fetched 2; } || fail "box 2 (--build remote) did not fetch $v1 without building"
	fetched_signed 2 "$v1"
	substituted=1
	log "box 2 (--build remote) asked box 0 (--builder), which built $v1 for it; box 2 fetched it"
else
	(($(built_here "$first") >= 1)) || fail "box $first runs $v1 but its build log shows no build"
fi

# --- 2. three replicas of the same commit: the other boxes fetch ---------------------------------
started=$(now_ms)
flake_deploy v1-three 3
wait_for "$wait_s" "all 3 boxes run $v1" all_run "$v1"
fetch_ms=$(($(now_ms) - started))
for i in 0 1 2; do
	((i == first)) && continue
	log "box $i's build log of $v1:"
	build_log "$i" | sed 's/^/    /' >&2
	n=$(built_here "$i")
	fetcher_builds=$((fetcher_builds + n))
	if ((i == 0 && built_for_peers >= 1)) && ! fetched 0; then
		# The builder already holds what it built for box 2: its build found the path in its store.
		log "box 0 already held $v1 (built for box 2 in step 1)"
		continue
	fi
	fetched "$i" || fail "box $i runs $v1 but its build log shows no copy from a peer's cache"
	fetched_signed "$i" "$v1"
	(($(metric "$i" myco_builds_from_peers_total) >= 1)) || fail "box $i: myco_builds_from_peers_total is 0"
	((n == 0)) && substituted=$((substituted + 1))
done
((fetcher_builds == 0)) || fail "boxes that could fetch $v1 built $fetcher_builds derivations"
log "3 replicas: every box runs $v1 after $(ms_as_s "$fetch_ms") s; $substituted fetched it, building nothing"
# --- 4. a new commit --------------------------------------------------------------------------------
sed -i "s/hello from {NAME}/hello again from {NAME}/" "$repo/server.py"
flake_commit "version 2"
flake_deploy v2 3
wait_for "$wait_s" "all 3 boxes run version 2" all_run "" "$v1"
v2=$(store_path_on 0)
all_run "$v2" || fail "the boxes run different outputs of version 2"
for i in 0 1 2; do
	log "version 2: box $i runs $v2; its build log:"
	build_log "$i" | sed 's/^/    /' >&2
done
built_for_peers=$(metric 0 myco_builds_for_peers_total)
(($(built_here 2) == 0)) && fetched 2 && fetched_signed 2 "$v2" && remote_ok=1
# Which box's cache box 2 copied version 2 from (by its endpoint: IPv4, or IPv6 with TESTBED_IPV6).
from=$(build_log 2 | sed -nE "s/^copying path .* from 'http:\/\/([^']+)'.*/\1/p" | tail -n 1)
for j in 0 1; do [[ $from != "$(box_endpoint "$j" 7947)" ]] || remote_from=box$j; done
((remote_ok == 1)) || fail "box 2 (--build remote) did not get version 2 from a peer's cache without building"
