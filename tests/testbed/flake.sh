# shellcheck shell=bash
# Shell library: a flake service's git repository as an operator would have it, for boxes that
# build with real Nix offline (golden-test.sh, demo.sh). Defines functions and runs nothing.
#
#   flake_setup DIR         DIR/repos holds the repositories; sets FLAKE_BINDS, the systemd-nspawn
#                           arguments that show them to every box read-only at the same path, with
#                           the offline nix.conf of tests/nix as the boxes' /etc/nix/nix.conf.
#                           Exports the host's offline Nix settings (myco sign locks with nix).
#                           FLAKE_REPO_BINDS: the repositories alone, for boxes whose nix.conf
#                           differs (flake_box_conf).
#   flake_box_conf I LINE.. box I's own nix.conf: the offline one and LINEs after it (they win,
#                           e.g. `system = aarch64-linux`); sets TESTBED_BOX_BINDS[I] to bind it
#                           at /etc/nix/nix.conf (lib.sh). With FLAKE_REPO_BINDS, for every box.
#   flake_init NAME MYCO    `MYCO init python` into DIR/repos/NAME, its nixpkgs input pointed at
#                           a git copy of the stand-in nixpkgs of tests/nix (there is no nixpkgs
#                           offline; the template itself is what gets built), myco.json's flake
#                           at the repository, locked and committed. Sets FLAKE_REPO.
#   flake_commit MESSAGE    commits every change in FLAKE_REPO.
#
# Callers provide `log` and `fail`, and run as root with `set -euo pipefail`.

FLAKE_FIXTURES=$(cd "$(dirname "${BASH_SOURCE[0]}")/../nix" && pwd)

flake_git() { git -C "$1" -c user.name=myco-test -c user.email=test@myco.invalid "${@:2}"; }

flake_setup() {
	FLAKE_DIR=$1
	if ! command -v nix >/dev/null || ! command -v git >/dev/null; then
		log "installing nix-bin and git (myco sign locks flake references with nix)"
		DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
			--no-install-recommends nix-bin git >/dev/null
	fi
	# The host's Nix, offline, with caches of this run's own.
	export NIX_CONF_DIR=$FLAKE_FIXTURES/conf XDG_CACHE_HOME=$FLAKE_DIR/cache
	mkdir -p "$FLAKE_DIR/repos"
	# shellcheck disable=SC2034 # read by the scripts that source this file
	FLAKE_REPO_BINDS=(--bind-ro="$FLAKE_DIR/repos")
	# shellcheck disable=SC2034 # read by the scripts that source this file
	FLAKE_BINDS=("${FLAKE_REPO_BINDS[@]}" --bind-ro="$FLAKE_FIXTURES/conf/nix.conf:/etc/nix/nix.conf")
	cp -r "$FLAKE_FIXTURES/nixpkgs-stub" "$FLAKE_DIR/repos/nixpkgs"
	flake_git "$FLAKE_DIR/repos/nixpkgs" init -q -b master
	flake_git "$FLAKE_DIR/repos/nixpkgs" add -A
	flake_git "$FLAKE_DIR/repos/nixpkgs" commit -qm "stand-in nixpkgs"
}

flake_box_conf() {
	local i=$1 conf=$FLAKE_DIR/nix-box$1.conf
	shift
	{
		cat "$FLAKE_FIXTURES/conf/nix.conf"
		printf '%s\n' "$@"
	} >"$conf"
	# shellcheck disable=SC2034 # read by lib.sh's box_boot
	TESTBED_BOX_BINDS[i]="--bind-ro=$conf:/etc/nix/nix.conf"
}

flake_init() {
	local name=$1 myco=$2
	FLAKE_REPO=$FLAKE_DIR/repos/$name
	"$myco" init python "$FLAKE_REPO" --name "$name" >/dev/null
	sed -i "s|inputs.nixpkgs.url = .*|inputs.nixpkgs.url = \"git+file://$FLAKE_DIR/repos/nixpkgs?ref=master\";|" \
		"$FLAKE_REPO/flake.nix"
	sed -i "s|\"flake\": .*|\"flake\": \"git+file://$FLAKE_REPO?ref=master\",|" "$FLAKE_REPO/myco.json"
	flake_git "$FLAKE_REPO" init -q -b master
	# Nix sees only the files git tracks.
	flake_git "$FLAKE_REPO" add -A
	nix flake lock "$FLAKE_REPO" 2>"$FLAKE_DIR/lock.log" \
		|| fail "nix flake lock failed: $(cat "$FLAKE_DIR/lock.log")"
	flake_commit "$name, as myco init made it"
}

flake_commit() { flake_git "$FLAKE_REPO" add -A && flake_git "$FLAKE_REPO" commit -qm "$1"; }
