#!/usr/bin/env bash
# The golden path (`make testbed-test`, docs/testbed.md): a service made by `myco init python`
# goes from a git commit to serving traffic found by DNS, on three boxes with real systemd and
# real Nix (Debian's nix-bin, single-user, each box its own store in its own overlay; offline).
#
# - On the host (the operator's machine): `myco init python web`, its nixpkgs input pointed at the
#   stand-in of tests/nix (there is no nixpkgs offline; the template itself is what is built),
#   locked and committed to a git repository every box sees read-only at the same path.
# - `myco sign` locks the branch to its commit (timed: lock_s) and `myco deploy --entry --wait`
#   sends that entry: both placed boxes build it in the transient unit myco-build-web (the
#   stand-in records the builder's CPU and I/O priority in the output: nice 19, idle), write a
#   unit that runs the built store path, start it, and report running.
# - From the third box, `curl http://web.myco:8080/` resolves through that box's own myco-d DNS
#   (its resolv.conf names 127.0.0.1) and answers 200 with the template's greeting.
# - A new commit deployed rolls out to a new store path on both boxes; the third box gets the new
#   answer.
# - A commit that does not build (a runtime input whose builder fails): `--wait` fails naming the
#   box and `myco logs`, both boxes keep running and answering the previous version.
# - Each placed box's audit log has built, started and build-failed lines naming the commit, and
#   the built and started lines the store path.
#
# Prints one line `GOLDEN lock_s=.. build_s=.. start_s=.. serving_s=.. rollout_s=..`: lock_s is
# `myco sign` (locking and signing), build_s from the deploy to the last box's `built` audit
# line, start_s from there until `--wait` saw both running, serving_s from the deploy to the
# third box's first answer, rollout_s from the second deploy until both boxes run the new store
# path and the third box gets the new answer. Timings are printed, not judged; the waits' bounds
# only catch an engine that never gets there.
#
# Needs root, like engine-test.sh. Usage: tests/testbed/golden-test.sh [RELEASE_DIR]

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
# shellcheck source=SCRIPTDIR/flake.sh
source "$(dirname "$0")/flake.sh"
# The repositories live outside the testbed's work directory because the boxes bind them at boot,
# before testbed_up makes that directory.
golden=$(mktemp -d /tmp/myco-golden.XXXXXX)
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"
golden_down() {
	testbed_down
	rm -rf "$golden"
}
trap golden_down EXIT
trap 'exit 130' INT TERM

service=web
wait_s=120

flake_setup "$golden"
TESTBED_BINDS=("${FLAKE_BINDS[@]}")
flake_init "$service" "$TESTBED_RELEASE/myco"
repo=$FLAKE_REPO
log "the operator's repository: $repo (myco init python, nixpkgs locked to the stand-in)"

testbed_up 3

# Programs in the boxes resolve names through their own myco-d.
for ((i = 0; i < 3; i++)); do
	box_exec "$i" sh -c 'echo "nameserver 127.0.0.1" > /etc/resolv.conf'
done

# --- deploy, build, start, serve ----------------------------------------------------------------

# sign_deploy LABEL: locks and signs the manifest (sets sign_ms), then sends the entry with
# --wait; sets deployed_at and deploy_ok (whether --wait succeeded) and deploy_out.
sign_deploy() {
	local entry=$TESTBED_WORK/$1.entry started
	started=$(now_ms)
	"$TESTBED_WORK/bin/myco" sign "$repo/myco.json" --operator-key "$TESTBED_WORK/operator.key" \
		--out "$entry" >/dev/null
	sign_ms=$(($(now_ms) - started))
	deployed_at=$(now_ms)
	deploy_ok=yes
	deploy_out=$("$TESTBED_WORK/bin/myco" deploy --entry "$entry" --wait --timeout "$wait_s" \
		--socket "$(box_socket 0)" 2>&1) || deploy_ok=
}

# myco-d's resident set on box I, in KiB: builds run in units of their own and Nix's output is
# read through fixed buffers, so it must not grow with builds.
daemon_rss_kib() {
	local pid
	pid=$(box_exec "$1" systemctl show -p MainPID --value myco-d.service)
	box_exec "$1" sed -nE 's/^VmRSS:[[:space:]]*([0-9]+) kB/\1/p' "/proc/$pid/status"
}

# The body box I gets from http://web.myco:8080/, by name through its own DNS; empty on failure.
answer_on() { box_exec "$1" curl -sf --max-time 2 "http://$service.myco:8080/" 2>/dev/null || true; }
answers() { [[ $(answer_on "$1") == "$2" ]]; }

# Milliseconds since the epoch of the last audit line with OUTCOME on box I (0: none).
audit_ms() {
	local t
	t=$(box_exec "$1" grep "\"outcome\":\"$2\"" /var/log/myco/audit.log 2>/dev/null | tail -n 1 \
		| sed -nE 's/.*"time":"([^"]*)".*/\1/p')
	[[ -n $t ]] && date -d "$t" +%s%3N || echo 0
}

declare -A rss_before
for i in 0 1 2; do rss_before[$i]=$(daemon_rss_kib "$i"); done
sign_deploy v1
[[ -n $deploy_ok ]] || fail "myco deploy --wait failed: $deploy_out"
first_deploy_at=$deployed_at
runs_on_two() { read -ra placed <<<"$(service_boxes "$service")" && ((${#placed[@]} == 2)); }
wait_for "$wait_s" "myco-$service.service active on 2 boxes" runs_on_two
running_at=$(now_ms)
for ((third = 0; third < 3; third++)); do
	[[ " ${placed[*]} " == *" $third "* ]] || break
done
lock_ms=$sign_ms
built_at=0
for i in "${placed[@]}"; do
	t=$(audit_ms "$i" built)
	((t > 0)) || fail "box $i runs $service but its audit log has no built line"
	((t > built_at)) && built_at=$t
done
log "signed (locked) in $(ms_as_s "$lock_ms") s; built on boxes ${placed[*]}; running $(ms_as_s $((running_at - first_deploy_at))) s after the deploy"

v1_path=
for i in "${placed[@]}"; do
	path=$(store_path_on "$i")
	[[ $path == /nix/store/*-$service ]] || fail "box $i: ExecStart does not run a built store path: $(service_show "$i" "$service" ExecStart)"
	[[ -z $v1_path || $path == "$v1_path" ]] || fail "boxes built different outputs of one commit: $v1_path and $path"
	v1_path=$path
	priority=$(box_exec "$i" cat "$path/build-priority" | tr '\n' ' ')
	[[ $priority == "19 idle " ]] \
		|| fail "box $i built at priority '$priority', not nice 19 and I/O class idle"
	# The helper linked the build (its GC root) into root's directory, which the daemon's user
	# cannot swap for a link to elsewhere (docs/architecture.md, "Least privilege").
	roots=$(box_exec "$i" stat -c '%a %U %G' /var/lib/myco-gcroots)
	[[ $roots == "770 root myco" ]] || fail "box $i: /var/lib/myco-gcroots is '$roots', not '770 root myco'"
	[[ $(box_exec "$i" sh -c "readlink /var/lib/myco-gcroots/$service-*") == "$path" ]] \
		|| fail "box $i: no GC root in /var/lib/myco-gcroots names $path"
done
log "both boxes run $v1_path, built at nice 19 and I/O class idle, rooted in /var/lib/myco-gcroots (root:myco 0770)"

greeting="hello from $service"
wait_for 30 "box $third gets '$greeting' from http://$service.myco:8080/" answers "$third" "$greeting"
serving_at=$(now_ms)
log "box $third: curl http://$service.myco:8080/ answers '$greeting' (resolved by its own myco-d)"

# --- a new commit rolls out ----------------------------------------------------------------------

sed -i "s/hello from {NAME}/hello again from {NAME}/" "$repo/server.py"
flake_commit "a new greeting"
sign_deploy v2
[[ -n $deploy_ok ]] || fail "the second deploy --wait failed: $deploy_out"
rolled_out() {
	local i path
	for i in "${placed[@]}"; do
		path=$(store_path_on "$i")
		[[ -n $path && $path != "$v1_path" ]] || return 1
	done
	answers "$third" "hello again from $service"
}
wait_for "$wait_s" "the new commit runs on boxes ${placed[*]} and answers box $third" rolled_out
rollout_ms=$(($(now_ms) - deployed_at))
v2_path=$(store_path_on "${placed[0]}")
log "rolled out in $(ms_as_s "$rollout_ms") s: $v2_path"

# --- a commit that does not build ----------------------------------------------------------------

broken='(derivation { name = "broken"; system = pkgs.stdenv.hostPlatform.system; builder = "/bin/false"; })'
sed -i "s|runtimeInputs = \[ pkgs.python3 \];|runtimeInputs = [ pkgs.python3 $broken ];|" "$repo/flake.nix"
grep -q '/bin/false' "$repo/flake.nix" || fail "could not break the template's flake.nix"
flake_commit "a runtime input that does not build"
sign_deploy v3
[[ -z $deploy_ok ]] || fail "myco deploy --wait succeeded for a commit that does not build: $deploy_out"
[[ $deploy_out == *build-failed* && $deploy_out == *"myco logs $service"* ]] \
	|| fail "--wait failed without naming the failed build and 'myco logs $service': $deploy_out"
for i in "${placed[@]}"; do
	[[ $(store_path_on "$i") == "$v2_path" ]] || fail "box $i no longer runs $v2_path after a failed build"
	[[ $(service_show "$i" "$service" ActiveState) == active ]] || fail "box $i stopped the running version after a failed build"
done
answers "$third" "hello again from $service" || fail "box $third lost the running version's answer after a failed build"
log "a commit that does not build: --wait failed ($(echo "$deploy_out" | tail -n 1)); the previous version still runs and answers"

# --- the audit log -------------------------------------------------------------------------------

# --wait fails at the first box that reports the failed build: the first wave of the rollout
# (docs/algorithm.md section 9), the one box that builds the new version; the other keeps the
# running version and waits for it, and never builds the broken commit.
build_failed_on() { box_exec "$1" grep -q '"outcome":"build-failed"' /var/log/myco/audit.log; }
some_build_failed() {
	local i
	for i in "${placed[@]}"; do build_failed_on "$i" && return 0; done
	return 1
}
wait_for "$wait_s" "the first wave logs the failed build" some_build_failed
failed_boxes=0
for i in "${placed[@]}"; do
	audit=$(box_exec "$i" cat /var/log/myco/audit.log)
	for outcome in built started; do
		lines=$(grep -c "\"outcome\":\"$outcome\"" <<<"$audit" || true)
		((lines >= 2)) || fail "box $i: $lines $outcome lines in the audit log, not 2: $audit"
	done
	grep -q "\"store_path\":\"$v2_path\",\"outcome\":\"started\"" <<<"$audit" \
		|| fail "box $i: no started line with the store path $v2_path: $audit"
	build_failed_on "$i" || continue
	failed_boxes=$((failed_boxes + 1))
	grep '"outcome":"build-failed"' <<<"$audit" | grep -qE '"rev":"[0-9a-f]{40}"' \
		|| fail "box $i: no build-failed line naming the commit: $audit"
done
((failed_boxes == 1)) || fail "$failed_boxes boxes built the broken commit, not the first wave alone"
log "the audit logs of boxes ${placed[*]} have built, started and build-failed lines with rev and store path"
for i in "${placed[@]}"; do
	log "box $i: myco-d's VmRSS ${rss_before[$i]} KiB before the builds, $(daemon_rss_kib "$i") KiB after three builds (two built, one failed)"
done

echo "GOLDEN lock_s=$(ms_as_s "$lock_ms") build_s=$(ms_as_s $((built_at - first_deploy_at))) \
start_s=$(ms_as_s $((running_at - built_at))) serving_s=$(ms_as_s $((serving_at - first_deploy_at))) \
rollout_s=$(ms_as_s "$rollout_ms")"
