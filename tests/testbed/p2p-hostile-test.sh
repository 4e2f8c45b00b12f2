#!/usr/bin/env bash
# The boxes' binary caches under hostile conditions (issue 16; docs/nix.md), on three boxes with
# real systemd and real Nix (each box its own store, offline; flake.sh), all building for
# themselves. p2p-test.sh shows the boxes fetching from each other; this shows what they refuse
# and what the cache's bounds hold.
#
# 1. Throttle: box 0 holds a path of 100 MB of random bytes (nix-store --add, rooted in its GC
#    root directory as a built version is, so its cache serves it). Box 1 downloads its NAR with
#    curl for 10 s under the default --cache-upload-rate (5 MB/s), then boxes 1 and 2 at once for
#    10 s: each rate, and the two's sum, must be 5 MB/s within 10%. Every client is cut mid-NAR.
# 2. Slots: the cut clients' slots are free: box 0's myco-d has no nix-store --dump left, and
#    five clients at once then get the NAR four times (the bound, 4 NARs at once) and one 503
#    (myco_cache_requests_total{answer="busy"} counts it).
# 3. Tampered: the service `myco init python web` deployed with 1 replica is built by the box
#    placement picks (X); its output is then altered in X's store behind Nix's back (a line
#    appended to bin/web, so `nix-store --verify-path` fails there). Deployed with 3 replicas,
#    the other boxes ask X's cache, whose NAR no longer has the narinfo's hash: Nix refuses it
#    ("hash mismatch importing path") and the box builds it itself (or fetches it from the box
#    that did). Every other box ends with the version's store path intact, carrying no signature
#    of X.
# 4. Revoked: a new commit with 1 replica is built by the box placement picks (W), whose cache
#    then serves it. The operator revokes W (docs/operator.md, "Rotating keys": the other boxes
#    re-certified at height 1 and restarted, then the revocation given to one of them, which
#    gossips it). Deployed with 3 replicas, the other boxes get it without W: no copy from W's
#    cache in their build logs, no signature of W on the path.
#
# Prints one line, also on a failure (a field not reached reads 0):
#   P2P-HOSTILE throttle_mb_s=R throttle_two_mb_s=R throttle_each_mb_s=R,R slots_freed=0|1
#       tampered_refused=0|1 revoked_not_trusted=0|1
# throttle_mb_s: one client's rate; throttle_two_mb_s: two clients' sum; slots_freed: step 2.
#
# Needs root, like engine-test.sh. Usage: tests/testbed/p2p-hostile-test.sh [RELEASE_DIR]

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
# shellcheck source=SCRIPTDIR/flake.sh
source "$(dirname "$0")/flake.sh"
# Outside the testbed's work directory: the boxes bind the repositories at boot.
p2p=$(mktemp -d /tmp/myco-p2p.XXXXXX)
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

service=web
wait_s=120
cache_port=7947
rate_one=0
rate_two=0
rate_each=0,0
slots_freed=0
tampered=0
revoked=0
report() {
	echo "P2P-HOSTILE throttle_mb_s=$rate_one throttle_two_mb_s=$rate_two throttle_each_mb_s=$rate_each" \
		"slots_freed=$slots_freed tampered_refused=$tampered revoked_not_trusted=$revoked"
}
trap 'testbed_report_and_down; rm -rf "$p2p"' EXIT
trap 'exit 130' INT TERM

flake_setup "$p2p"
TESTBED_BINDS=("${FLAKE_BINDS[@]}")
flake_init "$service" "$TESTBED_RELEASE/myco"

testbed_up 3

# --- 1. the throttle -------------------------------------------------------------------------------
# The 100 MB path, rooted where box 0's daemon roots its builds (the unit's --gcroot-dir).
big=$(box_nix 0 sh -c 'head -c 100000000 /dev/urandom >/tmp/big && nix-store --add /tmp/big && rm /tmp/big')
box_exec 0 ln -s "$big" /var/lib/myco-gcroots/big-aaaaaaaaaaaa
nar_url=http://$(box_endpoint 0 "$cache_port")/nar/$(basename "$big" | cut -c1-32).nar
narinfo_url=${nar_url/nar\//}
narinfo_url=${narinfo_url%.nar}.narinfo
served() { [[ $(box_exec 1 curl -s -o /dev/null -w '%{http_code}' "$narinfo_url") == 200 ]]; }
wait_for 30 "box 0's cache serves $big" served

# nar_get I SECONDS: box I downloads the NAR for at most SECONDS, then goes away; prints the
# HTTP status, the bytes it got and the seconds it took.
nar_get() {
	box_exec "$1" curl -s -o /dev/null --max-time "$2" -w '%{http_code} %{size_download} %{time_total}\n' \
		"$nar_url" || true
}
# MB/s of a nar_get line.
mb_s() { awk '{printf "%.2f", $2 / $3 / 1e6}' <<<"$1"; }
# Whether R MB/s is 5 within 10%.
near_5() { awk -v r="$1" 'BEGIN {exit !(r >= 4.5 && r <= 5.5)}'; }

one=$(nar_get 1 10)
rate_one=$(mb_s "$one")
log "one client: $one (status, bytes, s): $rate_one MB/s"
nar_get 1 10 >"$p2p/two-1" &
first=$!
nar_get 2 10 >"$p2p/two-2"
wait "$first"
rate_each="$(mb_s "$(cat "$p2p/two-1")"),$(mb_s "$(cat "$p2p/two-2")")"
rate_two=$(awk -F, '{printf "%.2f", $1 + $2}' <<<"$rate_each")
log "two clients at once: $(cat "$p2p/two-1" "$p2p/two-2" | paste -sd' '): $rate_each MB/s, $rate_two together"
near_5 "$rate_one" || fail "one client got $rate_one MB/s, not 5 within 10%"
near_5 "$rate_two" || fail "two clients got $rate_two MB/s together, not 5 within 10%"

# --- 2. the cut clients' slots are free ----------------------------------------------------------
dumps() {
	local pid
	pid=$(box_exec 0 systemctl show -p MainPID --value myco-d.service)
	box_exec 0 ps --ppid "$pid" -o comm= | grep -c '^nix-store$' || true
}
no_dumps() { (($(dumps) == 0)); }
wait_for 2 "box 0 reaped the nix-store --dump of the clients that went away" no_dumps
busy=$(metric 0 'myco_cache_requests_total{answer="busy"}')
clients=()
for k in 1 2 3 4 5; do
	nar_get $((k % 2 + 1)) 3 >"$p2p/slot-$k" &
	clients+=($!)
done
wait "${clients[@]}"
statuses=$(cut -d' ' -f1 "$p2p"/slot-* | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
log "five clients at once after three went away mid-NAR: $statuses"
[[ $(grep -c '^200 ' "$p2p"/slot-* | awk -F: '{n += $2} END {print n}') == 4 ]] \
	|| fail "five clients at once: $statuses; expected four NARs (the bound) and one 503"
(($(metric 0 'myco_cache_requests_total{answer="busy"}') == busy + 1)) || fail "the fifth client was not counted busy"
wait_for 2 "box 0 reaped the nix-store --dump of the five" no_dumps
slots_freed=1

# --- 3. a tampered NAR ----------------------------------------------------------------------------
testbed_node_ids
# The build keys box I sees box J's cache offer (/nodes), one a line.
offers() {
	box_myco "$1" nodes --json | grep -o "\"id\":\"${ids[$2]}\"[^}]*" \
		| sed -nE 's/.*"offers":\[([^]]*)\].*/\1/p' | tr -d '"' | tr ',' '\n' | sed '/^$/d'
}
# Writes what each box offers now to $p2p/offers-J.
offers_now() {
	local j
	for j in 0 1 2; do offers "$j" "$j" >"$p2p/offers-$j"; done
}
# new_offer_seen J: every other box sees box J offer a version it did not offer at offers_now.
new_offer_seen() {
	local i
	for i in 0 1 2; do
		((i == $1)) || offers "$i" "$1" | grep -qvxF -f "$p2p/offers-$1" || return 1
	done
}
offers_now
flake_deploy_one v1-one
x=${one_boxes[0]} v1=$one_path
box_exec "$x" sh -c "chmod u+w $v1/bin $v1/bin/$service && echo 'echo tampered' >>$v1/bin/$service"
! box_nix "$x" nix-store --verify-path "$v1" 2>/dev/null || fail "box $x: $v1 still verifies after tampering"
# Its peers ask its cache only once they see it offer the version.
wait_for 30 "every box sees box $x offer $v1" new_offer_seen "$x"
log "box $x built $v1 and offers it; its bin/$service is now altered in its store"
# run_on PATH BOX...: each BOX runs store path PATH.
run_on() {
	local i
	for i in "${@:2}"; do [[ $(store_path_on "$i") == "$1" ]] || return 1; done
}
flake_deploy v1-three 3
wait_for "$wait_s" "all 3 boxes run $v1" run_on "$v1" 0 1 2
# What box X's cache did meanwhile: a refresh that failed, if any, shows here (a short log; the
# journals printed on a failure may be cut to their last lines).
log "box $x's binary cache, last lines:"
box_exec "$x" journalctl --no-pager -o short-precise -u myco-d.service | grep 'binary cache' \
	| tail -n 4 | sed 's/^/    /' >&2 || true
mismatch=0
for i in 0 1 2; do
	((i == x)) && continue
	log "box $i's build log of $v1:"
	build_log "$i" | sed 's/^/    /' >&2
	build_log "$i" | grep -q "hash mismatch importing path '$v1'" && mismatch=$((mismatch + 1))
	box_nix "$i" nix-store --verify-path "$v1" || fail "box $i: $v1 does not verify"
	! box_exec "$i" grep -q tampered "$v1/bin/$service" || fail "box $i holds the tampered $v1"
	[[ " $(signers "$i" "$v1") " != *" $x "* ]] || fail "box $i: $v1 carries box $x's signature"
done
((mismatch >= 1)) || fail "no box's Nix reported refusing box $x's tampered NAR"
tampered=1
log "$mismatch box(es) refused box $x's tampered NAR; every other box holds $v1 intact"

# --- 4. a revoked box's cache ----------------------------------------------------------------------
sed -i "s/hello from {NAME}/hello again from {NAME}/" "$FLAKE_REPO/server.py"
flake_commit "version 2"
offers_now
flake_deploy_one v2-one "$v1"
w=${one_boxes[0]} v2=$one_path
kept=()
for i in 0 1 2; do ((i == w)) || kept+=("$i"); done
v2_narinfo=http://$(box_endpoint "$w" "$cache_port")/$(basename "$v2" | cut -c1-32).narinfo
w_serves() { [[ $(box_exec "${kept[0]}" curl -s -o /dev/null -w '%{http_code}' "$v2_narinfo") == 200 ]]; }
wait_for 30 "box $w's cache serves $v2" w_serves
# Without the revocation, the kept boxes would now fetch it from box W.
wait_for 30 "every box sees box $w offer $v2" new_offer_seen "$w"
log "box $w built $v2, serves it and offers it; the operator revokes box $w"
for i in "${kept[@]}"; do box_cert "$i" 1; done
"$TESTBED_WORK/bin/myco" revoke --operator-key "$TESTBED_WORK/operator.key" --height 1 \
	--out "$p2p/rev.bin" >/dev/null
# Where docs/operator.md puts it: outside /etc/myco, which only root may enter; myco-d reads it
# as the user myco.
box_exec "${kept[0]}" sh -c 'cat >/etc/myco-revocation.bin && chmod 0644 /etc/myco-revocation.bin' <"$p2p/rev.bin"
sed -i -E 's|^(MYCO_ARGS=.*)$|\1 --revocation /etc/myco-revocation.bin|' "$TESTBED_WORK/box${kept[0]}/etc-myco/myco-d.env"
for i in "${kept[@]}"; do box_exec "$i" systemctl restart myco-d; done
revoked_on() { (($(metric "$1" myco_revocation_block) == 1)); }
w_gone() {
	local i
	for i in "${kept[@]}"; do revoked_on "$i" && (($(box_alive_count "$i") == 2)) || return 1; done
}
# 60 s, not 30: restarted together, a box may list the other dead for about 30 s (the other's
# clean-stop record reached it after their new sessions opened; docs/testbed.md, "open").
wait_for 60 "the kept boxes hold the revocation and see each other only" w_gone
flake_deploy v2-three 3 "${kept[0]}"
wait_for "$wait_s" "boxes ${kept[*]} run $v2" run_on "$v2" "${kept[@]}"
for i in "${kept[@]}"; do
	log "box $i's build log of $v2:"
	build_log "$i" | sed 's/^/    /' >&2
	! build_log "$i" | grep -q "from 'http://$(box_endpoint "$w" "$cache_port")'" \
		|| fail "box $i copied $v2 from the revoked box $w's cache"
	[[ " $(signers "$i" "$v2") " != *" $w "* ]] || fail "box $i: $v2 carries the revoked box $w's signature"
done
revoked=1
log "boxes ${kept[*]} got $v2 without the revoked box $w"
