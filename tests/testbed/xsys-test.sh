#!/usr/bin/env bash
# A builder builds for boards of another system (issue 16; docs/nix.md, "Which systems"), on three
# boxes with real systemd and real Nix (each box its own store and its own nix.conf, offline;
# flake.sh). Box 0 is an x86_64 `--builder` whose nix.conf adds `extra-platforms =
# aarch64-linux`; box 1 builds as usual; box 2 is an "aarch64 board": its certificate says
# aarch64, its nix.conf `system = aarch64-linux` with no extra platforms, and it runs `--build
# remote`.
#
# The service's flake defines `packages.<system>.default` for both systems as a derivation with no
# input but its server.py, `derivation { system = <that system>; builder = "/bin/sh"; ... }`: the
# x86_64 /bin/sh of these hosts runs it for either system, so no emulation is needed. A real
# aarch64 derivation on an x86_64 builder needs binfmt (qemu-user) registered for aarch64, which
# this test does not use. myco.json says `"arch": "aarch64"`, one replica: only box 2 may run it.
#
# Checks: box 2 runs it; its build built no derivation (its log) and fetched from a peer's cache
# (myco_builds_from_peers_total); box 0, where it is not placed, built it for a peer
# (myco_builds_for_peers_total 1); the store path on box 2 is the output of a derivation whose
# system is aarch64-linux (`nix show-derivation` of its deriver in box 2's store), equals that
# output as the host's Nix evaluates it for aarch64-linux, and differs from the x86_64 output;
# it carries box 0's signature, which box 2's Nix verified (`nix path-info --sigs`).
#
# Prints one line, also on a failure (a field not reached reads 0):
#   P2P-XSYS builder_system=x86_64-linux target=aarch64-linux remote_build_ok=0|1 builds_on_board=N
#       built_for_peers=N signed_by=boxN|none drv_system=S run_s=S
# remote_build_ok: every check held; builds_on_board: derivations box 2 built; run_s: from the
# deploy until box 2 runs it.
#
# Needs root, like engine-test.sh. Usage: tests/testbed/xsys-test.sh [RELEASE_DIR]

set -euo pipefail

TESTBED_RELEASE=$(realpath "${1:-$(dirname "$0")/../../target/release}")
# shellcheck source=SCRIPTDIR/flake.sh
source "$(dirname "$0")/flake.sh"
# Outside the testbed's work directory: the boxes bind the repositories at boot.
xsys=$(mktemp -d /tmp/myco-xsys.XXXXXX)
TESTBED_BOX_ARGS=([0]="--builder" [2]="--build remote")
TESTBED_ARCH=([2]=aarch64)
# shellcheck source=SCRIPTDIR/lib.sh
source "$(dirname "$0")/lib.sh"

service=web
wait_s=120
remote_ok=0
board_builds=0
built_for_peers=0
signed_by=none
drv_system=none
run_ms=0
report() {
	echo "P2P-XSYS builder_system=x86_64-linux target=aarch64-linux remote_build_ok=$remote_ok" \
		"builds_on_board=$board_builds built_for_peers=$built_for_peers signed_by=$signed_by" \
		"drv_system=$drv_system run_s=$(ms_as_s "$run_ms")"
}
trap 'testbed_report_and_down; rm -rf "$xsys"' EXIT
trap 'exit 130' INT TERM

flake_setup "$xsys"
TESTBED_BINDS=("${FLAKE_REPO_BINDS[@]}")
flake_box_conf 0 "extra-platforms = aarch64-linux"
flake_box_conf 1
flake_box_conf 2 "system = aarch64-linux" "extra-platforms ="
flake_init "$service" "$TESTBED_RELEASE/myco"
repo=$FLAKE_REPO
# The program is server.py run by the box's python3; the output differs per system only by the
# derivation's `system`.
cat >"$repo/flake.nix" <<'EOF'
{
  outputs = { self }:
    let
      web = system: derivation {
        name = "web";
        inherit system;
        builder = "/bin/sh";
        server = ./server.py;
        args = [ "-c" ''
          /bin/mkdir -p $out/bin
          printf '#!/bin/sh\nexec /usr/bin/python3 %s "$@"\n' "$server" >$out/bin/web
          /bin/chmod +x $out/bin/web
        '' ];
      };
      systems = [ "x86_64-linux" "aarch64-linux" ];
    in
    {
      packages = builtins.listToAttrs
        (map (system: { name = system; value.default = web system; }) systems);
    };
}
EOF
sed -i 's/"attr": "default",/"attr": "default",\n  "arch": "aarch64",/' "$repo/myco.json"
grep -q '"arch": "aarch64"' "$repo/myco.json" || fail "myco.json names no arch: $(cat "$repo/myco.json")"
nix flake lock "$repo" 2>"$xsys/lock.log" || fail "nix flake lock failed: $(cat "$xsys/lock.log")"
flake_commit "both systems, no input, for aarch64 boards"
out_for() { nix eval --raw "git+file://$repo?ref=master#packages.$1.default.outPath"; }
arm_out=$(out_for aarch64-linux)
x86_out=$(out_for x86_64-linux)
[[ $arm_out != "$x86_out" ]] || fail "the flake's two systems have one output: $arm_out"

testbed_up 3
box_nix 0 nix show-config | grep -qx 'extra-platforms = aarch64-linux' \
	|| fail "box 0's Nix does not build aarch64-linux: $(box_nix 0 nix show-config | grep -E '^(system|extra-platforms) ')"
[[ $(box_nix 2 nix show-config | sed -n 's/^system = //p') == aarch64-linux ]] \
	|| fail "box 2's Nix is not an aarch64-linux one"

started=$(now_ms)
flake_deploy_one board
run_ms=$(($(now_ms) - started))
((one_boxes[0] == 2)) || fail "the aarch64 service runs on box ${one_boxes[0]}, not on the board"
path=$one_path
log "box 2 runs $path after $(ms_as_s "$run_ms") s; its build log:"
build_log 2 | sed 's/^/    /' >&2
board_builds=$(built_here 2)
((board_builds == 0)) || fail "box 2 (--build remote) built $board_builds derivations"
fetched 2 || fail "box 2 did not copy $path from a peer's cache"
(($(metric 2 myco_builds_from_peers_total) >= 1)) || fail "box 2: myco_builds_from_peers_total is 0"
(($(metric 2 myco_builds_requested_total) >= 1)) || fail "box 2 asked no builder"
built_for_peers=$(metric 0 myco_builds_for_peers_total)
((built_for_peers == 1)) || fail "box 0 built $built_for_peers versions for peers, not 1"
[[ $path == "$arm_out" ]] || fail "box 2 runs $path, not the aarch64-linux output $arm_out (x86_64: $x86_out)"
deriver=$(box_nix 2 nix --extra-experimental-features nix-command path-info --json "$path" \
	| json_field deriver | head -n 1)
drv_system=$(box_nix 2 nix --extra-experimental-features nix-command show-derivation "$deriver" \
	| json_field system | head -n 1)
[[ $drv_system == aarch64-linux ]] || fail "box 2's $path comes from $deriver, of system '$drv_system'"
signed_by=box$(signers 2 "$path")
[[ $signed_by == box0 ]] || fail "box 2's $path is signed by $signed_by, not by the builder box 0"
log "box 2 fetched $path ($drv_system, not $x86_out) from box 0, which built it for it, signed by box 0's key"
remote_ok=1
