#!/usr/bin/env bash
# Checks the flake, the NixOS module and every Nix file offline (`make nix-check`), with the
# stand-in nixpkgs of tests/nix/nixpkgs-stub instead of the real one, which is not reachable here:
#
# 1. `nix-instantiate --parse` of every tracked .nix file (the flake, nix/, the `myco init`
#    templates, these fixtures).
# 2. nix/unit-check.nix: the unit nix/unit.nix declares equals systemd/myco-d.service, and those
#    nix/priv-unit.nix declares systemd/myco-priv.socket and .service, directive by directive; and
#    it reports a difference for each of a few altered copies of the shipped units,
#    so an empty answer means agreement, not a comparison that sees nothing.
# 3. tests/nix/eval-module.nix: the module's options against a stand-in evaluator; and every flag
#    the module can pass to myco-d is one docs/daemon.md documents.
# 4. `nix flake show` and `nix flake check --no-build` of a git repository holding the tracked
#    files as they are in the working tree (what Nix itself sees of a dirty checkout; untracked
#    files are invisible to a flake, so commit new ones), with nixpkgs overridden by the stand-in;
#    again with a flake.lock that pins an unreachable nixpkgs; then the same check must fail once
#    the shipped unit changes.
#
# Every call uses a throwaway Nix store of its own (`store = DIR`), which an ordinary user may
# write without a nix-daemon and which leaves the machine's /nix alone. Nothing is fetched and
# nothing is built. Without Nix it prints SKIPPED (`make tools` installs it).

set -euo pipefail

root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"

if ! command -v nix-instantiate >/dev/null || ! command -v nix >/dev/null; then
	echo "SKIPPED: nix-check: Nix is not installed (make tools, or apt install nix-bin)"
	exit 0
fi

work=$(mktemp -d)
# Nix makes what it puts in a store read-only.
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
export NIX_CONF_DIR=$root/tests/nix/conf XDG_CACHE_HOME=$work/cache NIX_CONFIG="store = $work/store"
# Debian's nix-bin warns about its missing build group on every call; the warning is noise here.
quiet() { "$@" 2> >(grep -v "group 'nixbld'" >&2); }
fail() { echo "nix-check: $*" >&2; exit 1; }
eval_json() { quiet nix-instantiate --eval --strict --json "$@"; }

parse_all() {
	local count=0 file
	while IFS= read -r -d '' file; do
		quiet nix-instantiate --parse "$file" >/dev/null || fail "$file does not parse"
		count=$((count + 1))
	done < <(git ls-files -z -- '*.nix')
	echo "nix-instantiate --parse: $count files parse"
}

# Each alteration of the shipped unit, and the directive the comparison must then name.
unit_compare() {
	local differences
	differences=$(eval_json -E 'import ./nix/unit-check.nix { }')
	[[ $differences == "[]" ]] || fail "nix/unit.nix and systemd/myco-d.service differ: $differences"
	local -A alterations=(
		[NoNewPrivileges]='/^NoNewPrivileges=yes$/d'
		[MemoryMax]='s/^MemoryMax=64M$/MemoryMax=128M/'
		[SystemCallFilter]='s/^SystemCallFilter=~@privileged @resources$/SystemCallFilter=~@privileged/'
		[ExecStart]='s/^ExecStart=.*/ExecStart=\/usr\/bin\/myco-d $MYCO_ARGS/'
		[PrivateUsers]='s/^\[Service\]$/[Service]\nPrivateUsers=yes/'
		[WantedBy]='s/^WantedBy=.*/WantedBy=default.target/'
	)
	local key
	for key in "${!alterations[@]}"; do
		sed "${alterations[$key]}" systemd/myco-d.service >"$work/altered.service"
		cmp -s systemd/myco-d.service "$work/altered.service" && fail "alteration of $key changed nothing"
		differences=$(eval_json --arg unitText "builtins.readFile $work/altered.service" \
			-E '{ unitText }: import ./nix/unit-check.nix { inherit unitText; }')
		[[ $differences == *"$key="* ]] || fail "unit-check missed a changed $key=: $differences"
	done
	# The helper's two files and the DNS socket, one alteration each.
	local -A helper=([myco-priv.service]='s/^MemoryMax=32M$/MemoryMax=64M/'
		[myco-priv.socket]='s/^SocketMode=0660$/SocketMode=0666/'
		[myco-d-dns.socket]='s/^FreeBind=yes$/FreeBind=no/')
	local file
	for file in "${!helper[@]}"; do
		sed "${helper[$file]}" "systemd/$file" >"$work/altered"
		cmp -s "systemd/$file" "$work/altered" && fail "the alteration of $file changed nothing"
		differences=$(eval_json --arg text "builtins.readFile $work/altered" -E "{ text }: import ./nix/unit-check.nix {
			$(case $file in myco-d-dns.socket) echo dnsSocketText ;; *.socket) echo privSocketText ;;
				*) echo privServiceText ;; esac) = text; }")
		[[ $differences == *"systemd/$file has"* ]] || fail "unit-check missed a change to $file: $differences"
	done
	echo "unit-check: nix/unit.nix, dns-socket.nix and priv-unit.nix match systemd/myco-d.service," \
		"myco-d-dns.socket and myco-priv.*," \
		"and $((${#alterations[@]} + ${#helper[@]})) alterations are caught"
}

module_eval() {
	local failures flag flags
	failures=$(eval_json tests/nix/eval-module.nix)
	[[ $failures == "[]" ]] || fail "the NixOS module does not do what tests/nix/eval-module.nix expects: $failures"
	flags=$(eval_json -E '(import ./nix/unit.nix { package = "/p"; operator = "0";
		joins = [ "a:1" ]; dns = [ "b:2" ]; }).serviceConfig.ExecStart' | grep -oE -- '--[a-z-]+' | sort -u)
	for flag in $flags; do
		grep -qF -- "| \`$flag " docs/daemon.md || fail "the module passes $flag, which docs/daemon.md does not list"
	done
	echo "module: tests/nix/eval-module.nix holds; flags $(echo $flags) are myco-d's"
}

# A git repository at $1 holding, as they are in $2, the files named on stdin (NUL-separated,
# relative to $2) that exist there, committed.
commit_copy() {
	local dest=$1 from=$2 file
	mkdir -p "$dest"
	while IFS= read -r -d '' file; do
		if [[ -e $from/$file ]]; then
			(cd "$from" && cp --parents -- "$file" "$dest/")
		fi
	done
	git -C "$dest" init -q
	git -C "$dest" add -A
	git -C "$dest" -c user.name=nix-check -c user.email=nix-check@localhost commit -qm copy
}

# `nix flake SUBCOMMAND ARGS...` of the copy in $work/repo with the stand-in nixpkgs.
nix_flake() {
	local subcommand=$1
	shift
	quiet nix --option warn-dirty false flake "$subcommand" --no-write-lock-file \
		--override-input nixpkgs "git+file://$work/stub" "$@" "git+file://$work/repo"
}

flake_eval() {
	git ls-files -z | commit_copy "$work/repo" "$root"
	(cd tests/nix/nixpkgs-stub && git ls-files -z) | commit_copy "$work/stub" "$root/tests/nix/nixpkgs-stub"
	local shown
	shown=$(nix_flake show --json 2>"$work/show.log") || fail "nix flake show failed: $(cat "$work/show.log")"
	python3 - "$shown" <<-'PY' || fail "nix flake show lacks outputs: $shown"
		import json, sys
		flake = json.loads(sys.argv[1])
		for system in ("x86_64-linux", "aarch64-linux"):
		    assert flake["packages"][system]["default"]["name"].startswith("myco-")
		    assert flake["devShells"][system]["default"]["type"] == "derivation"
		    assert set(flake["checks"][system]) == {"package", "shell", "unit"}
		assert flake["nixosModules"]["default"]["type"] == "nixos-module"
	PY
	nix_flake check --no-build 2>"$work/check.log" \
		|| fail "nix flake check --no-build failed: $(cat "$work/check.log")"
	# A flake.lock pinning a nixpkgs nobody can fetch (rev and hash all zeros) changes nothing:
	# --override-input replaces the locked input without fetching it.
	cp tests/nix/unreachable.lock "$work/repo/flake.lock"
	git -C "$work/repo" add flake.lock
	git -C "$work/repo" -c user.name=nix-check -c user.email=nix-check@localhost commit -qm lock
	nix_flake check --no-build 2>"$work/check.log" \
		|| fail "nix flake check --no-build failed with a flake.lock: $(cat "$work/check.log")"
	sed -i 's/^MemoryMax=64M$/MemoryMax=65M/' "$work/repo/systemd/myco-d.service"
	git -C "$work/repo" -c user.name=nix-check -c user.email=nix-check@localhost commit -qam altered
	if nix_flake check --no-build 2>"$work/check.log" \
		|| ! grep -q 'MemoryMax=' "$work/check.log"; then
		fail "nix flake check passed with an altered unit: $(cat "$work/check.log")"
	fi
	echo "nix flake show and check --no-build: packages, nixosModules, devShells, checks evaluate," \
		"with or without a flake.lock; an altered unit fails the check"
}

parse_all
unit_compare
module_eval
flake_eval
