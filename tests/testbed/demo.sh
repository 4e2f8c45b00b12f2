#!/usr/bin/env bash
# `make demo`: Myco on three boxes, from nothing, in about a minute (docs/testbed.md).
#
# Installs what this machine lacks (debootstrap, systemd-nspawn, zstd, iproute2), builds the
# release binaries, boots three boxes with real systemd (tests/testbed/lib.sh), deploys a sample
# service with two replicas the way an operator would (`myco sign` where the operator key is,
# `myco deploy --entry` on a box), shows where placement put it and the dynamic user it runs as;
# then a service made by `myco init python`, committed to git and deployed with `--wait`: the
# boxes placed to run it build it with Nix and start it, and the third box reaches it by name
# (`curl http://web.myco:8080/`); then powers off one of the boxes that run the first service,
# shows it running again on the others, prints a summary with the timings, and removes
# everything it made.
#
# Needs root, and a cgroup v1 or hybrid host (docs/testbed.md). Usage: tests/testbed/demo.sh

set -euo pipefail

repo=$(cd "$(dirname "$0")/../.." && pwd)
# TESTBED_RELEASE=DIR runs the binaries in DIR and builds nothing.
build=${TESTBED_RELEASE:+no}
TESTBED_RELEASE=${TESTBED_RELEASE:-${CARGO_TARGET_DIR:-$repo/target}/release}
# shellcheck source=SCRIPTDIR/lib.sh
source "$repo/tests/testbed/lib.sh"
# shellcheck source=SCRIPTDIR/flake.sh
source "$repo/tests/testbed/flake.sh"

service=hello
replicas=2
wait_s=60

# Bold headings and dim prompts on a terminal, plain text in a log.
if [[ -t 1 ]]; then bold=$'\e[1m' dim=$'\e[2m' plain=$'\e[0m'; else bold='' dim='' plain=''; fi
step() { printf '\n%s==> %s%s\n' "$bold" "$*" "$plain"; }
prompt() { printf '%s%s#%s %s\n' "$dim" "$1" "$plain" "$2"; }
# Prints a command as an operator would type it on box I, then runs it there.
on_box() {
	local i=$1
	shift
	prompt "box$i" "$*"
	box_exec "$i" "$@"
}
# Each box's node id as `myco ls` and `myco nodes` show it (the first 8 hex digits), read once
# while all are up, so that a box powered off later is still named.
BOX_NODE=()
read_node_ids() {
	local i
	for ((i = 0; i < TESTBED_BOXES; i++)); do
		BOX_NODE[i]=$(box_exec "$i" curl -s --unix-socket /run/myco/myco.sock http://localhost/health \
			| json_field node_id | cut -c1-8)
	done
}
# Prints, for every box, its node id, and whether it runs the service and as which user.
where() {
	local i state
	for ((i = 0; i < TESTBED_BOXES; i++)); do
		if [[ -z ${BOX_LEADER[i]:-} ]]; then
			printf '  box%s  %-11s  %s  powered off\n' "$i" "${BOX_ADDR[i]}" "${BOX_NODE[i]}"
			continue
		fi
		state=$(box_exec "$i" systemctl is-active "myco-$service.service" 2>/dev/null || true)
		if [[ $state == active ]]; then
			printf '  box%s  %-11s  %s  myco-%s.service active, as %s\n' "$i" "${BOX_ADDR[i]}" \
				"${BOX_NODE[i]}" "$service" "$(service_dynamic_user "$i" "$service")"
		else
			printf '  box%s  %-11s  %s  -\n' "$i" "${BOX_ADDR[i]}" "${BOX_NODE[i]}"
		fi
	done
}
# Whether box 0's `myco ls` (Myco's own view, from the boxes' gossiped statuses) shows the service
# running on REPLICAS boxes: it follows systemd by up to a status push (about a second).
ls_shows_running() {
	box_myco 0 ls --json | python3 -c '
import json, sys
found = [s for s in json.load(sys.stdin)["services"] if s["name"] == sys.argv[1]]
running = [p for p in found[0]["placed_on"] if p["state"] == "running"] if found else []
sys.exit(0 if len(running) == int(sys.argv[2]) else 1)
' "$service" "$replicas"
}

testbed_host_check

step "Tools and binaries"
nspawn_tools
if [[ $build != no ]]; then
	command -v cargo >/dev/null || fail "cargo is missing: install Rust (https://rustup.rs), then run 'make demo' again"
	(cd "$repo" && cargo build --release --quiet --bin myco-d --bin myco-priv --bin myco)
	log "built $TESTBED_RELEASE/myco-d, myco-priv and myco"
fi

flakes=$(mktemp -d /tmp/myco-demo.XXXXXX)
demo_down() {
	testbed_down
	rm -rf "$flakes"
}
trap demo_down EXIT
trap 'exit 130' INT TERM
flake_setup "$flakes"
TESTBED_BINDS=("${FLAKE_BINDS[@]}")

step "Three boxes: Debian with systemd, myco-d installed from systemd/myco-d.service (user myco) beside myco-priv"
nspawn_rootfs
started=$(now_ms)
testbed_up 3
up_ms=$(($(now_ms) - started))
testbed_has_executor || fail "this myco-d has no systemd executor ('--executor' in 'myco-d --help'): it \
keeps and gossips services but does not run them yet"
read_node_ids
on_box 0 myco nodes

step "Deploy '$service': two replicas of a program every box has"
cat >"$TESTBED_WORK/$service.json" <<EOF
{"name": "$service", "exec": "/usr/bin/sleep", "args": ["infinity"], "replicas": $replicas}
EOF
cat "$TESTBED_WORK/$service.json"
# The operator key stays on the operator's machine (here: the host); the signed entry is what
# travels to a box.
prompt host "myco sign $service.json --operator-key operator.key --out $service.entry"
(cd "$TESTBED_WORK" && bin/myco sign "$service.json" --operator-key operator.key --out "$service.entry")
prompt host "cp $service.entry box0:/tmp/"
cp "$TESTBED_WORK/$service.entry" "/proc/${BOX_LEADER[0]}/root/tmp/"
deployed=$(now_ms)
deployed_mono=$(mono_ms)
on_box 0 myco deploy --entry "/tmp/$service.entry" --wait
running=
runs_on_replicas() {
	running=$(service_boxes "$service")
	[[ $(wc -w <<<"$running") -eq $replicas ]]
}
wait_for "$wait_s" "myco-$service.service running on $replicas boxes" runs_on_replicas
reported_ms=$(($(now_ms) - deployed))
placed=$running
# As the testbed's engine test measures it: to the later start as systemd stamped it. `--wait`
# returns later: a box reports a unit running once it has read it active a second after its start.
# shellcheck disable=SC2086 # the box numbers, one word each
deploy_ms=$(started_after_ms "$deployed_mono" "myco-$service.service" $placed) \
	|| fail "no box's myco-$service.service says it started after the deploy"
log "running on $replicas boxes $(ms_as_s "$deploy_ms") s after the deploy (systemd's start stamps); reported running after $(ms_as_s "$reported_ms") s"
on_box 0 myco ls
where

step "A flake service: myco init python web, committed, deployed, built by the boxes"
prompt host "myco init python web && git commit (nixpkgs: an offline stand-in)"
flake_init web "$TESTBED_RELEASE/myco"
ls "$FLAKE_REPO"
prompt host "myco sign web/myco.json --operator-key operator.key --out web.entry"
(cd "$TESTBED_WORK" && bin/myco sign "$FLAKE_REPO/myco.json" --operator-key operator.key --out web.entry)
cp "$TESTBED_WORK/web.entry" "/proc/${BOX_LEADER[0]}/root/tmp/"
flake_started=$(now_ms)
on_box 0 myco deploy --entry /tmp/web.entry --wait
flake_ms=$(($(now_ms) - flake_started))
web_boxes=$(service_boxes web)
for ((reader = 0; reader < 3; reader++)); do
	[[ " $web_boxes " == *" $reader "* ]] || break
done
# The box's programs resolve names through its own myco-d.
box_exec "$reader" sh -c 'echo "nameserver 127.0.0.1" > /etc/resolv.conf'
for ((i = 0; i < 50; i++)); do
	box_exec "$reader" curl -sf --max-time 2 http://web.myco:8080/ >/dev/null 2>&1 && break
	sleep 0.1
done
on_box "$reader" curl -sS http://web.myco:8080/
first=${web_boxes%% *}
prompt "box$first" "systemctl show -p ExecStart myco-web.service"
service_show "$first" web ExecStart | sed -E 's/.*path=([^ ;]*).*/  \1/'

# Power off a box that runs it; box 0 stays, since the commands above talk to its daemon.
victim=${running##* }
step "Power off box$victim"
stopped=$(now_ms)
box_stop "$victim"
log "box$victim is off"
wait_for "$wait_s" "myco-$service.service running on $replicas boxes again" runs_on_replicas
death_ms=$(($(now_ms) - stopped))
log "running on $replicas boxes again $(ms_as_s "$death_ms") s after box$victim went down"
on_box 0 myco nodes
wait_for "$wait_s" "box 0's myco ls shows $service running on $replicas boxes" ls_shows_running
on_box 0 myco ls
where

step "Summary"
summary() { printf '  %-44s %s\n' "$1" "$2"; }
summary "three boxes booted, myco-d up, all alive" "$(ms_as_s "$up_ms") s"
summary "deploy to running on $replicas boxes" "$(ms_as_s "$deploy_ms") s (placed on box${placed// /, box})"
summary "  ... reported running (myco deploy --wait)" "$(ms_as_s "$reported_ms") s (a unit counts as running once read active 1 s after its start)"
summary "box$victim powered off to running elsewhere" "$(ms_as_s "$death_ms") s (now on box${running// /, box})"
summary "each copy runs as a dynamic user" "$(service_dynamic_user "${running%% *}" "$service")"
split=$(box_split_check 0)
summary "myco-d runs as the user myco, not root" "$split (myco-priv, root, writes the units)"
summary "myco init python web: deploy to running" "$(ms_as_s "$flake_ms") s, built with Nix on box${web_boxes// /, box}"
echo "TESTBED demo up_s=$(ms_as_s "$up_ms") deploy_to_running_s=$(ms_as_s "$deploy_ms") deploy_reported_s=$(ms_as_s "$reported_ms") death_to_replaced_s=$(ms_as_s "$death_ms") flake_to_running_s=$(ms_as_s "$flake_ms")"
step "Cleaning up"
