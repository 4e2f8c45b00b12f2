# shellcheck shell=bash
# Shell library: real systemd as PID 1 in systemd-nspawn containers on a host whose PID 1 is not
# systemd (docs/testbed.md). Sourced by systemd/nspawn-test.sh (one container) and
# tests/testbed/lib.sh (a cluster of them); it defines functions and constants and runs nothing.
#
# - nspawn_tools installs debootstrap, systemd-nspawn and zstd when they are missing.
# - nspawn_rootfs builds (once, ~50 s, with debootstrap) or unpacks (~0.5 s) the Debian bookworm
#   root filesystem that every container boots read-only with --volatile=overlay, and sets
#   NSPAWN_ROOTFS. Bookworm's systemd 252 is the newest that accepts this host's cgroup v1 layout.
# - nspawn_init_wrapper writes the init that remounts the cgroup controllers read-write before it
#   execs systemd: without it systemd cannot set MemoryMax or TasksMax on a v1 host.
# - nspawn_boot starts one container in the background in cgroups of its own (concurrent
#   containers collide otherwise) and sets NSPAWN_PID and NSPAWN_CGROUPS; nspawn_leader finds the
#   container's PID 1, which `nsenter -t LEADER -a` enters; nspawn_stop powers it off.
# - nspawn_myco_stage and nspawn_myco_binds put Myco in a box as the packages install it, split
#   (docs/architecture.md, "Least privilege"): myco-d as the user myco beside the root helper
#   myco-priv, socket-activated; NSPAWN_MYCO_START, run inside the booted box, creates the user and
#   starts both.
#
# Callers provide `log` and `fail` (fail must not return), and run as root with `set -euo pipefail`.

# The cache of root filesystems, shared by every script and run on the machine.
NSPAWN_CACHE=${MYCO_TEST_CACHE:-/var/cache/myco-test}
# curl talks to the API socket; libnss-systemd resolves dynamic users' names; iproute2 and procps
# show addresses and processes inside a box; nix-bin (single-user Nix, each box its own store),
# git (Nix fetches git+file:// flakes with it) and python3 (the `myco init python` service, run
# through the stand-in nixpkgs of tests/nix) let boxes build and run flake services.
# (libdbi-perl: debootstrap does not resolve the virtual package perl-dbdabi-94 that nix-bin
# needs through libdbd-sqlite3-perl.) Changing this list builds a new cached tree.
NSPAWN_PACKAGES=systemd,systemd-sysv,dbus,libnss-systemd,iproute2,procps,curl,nix-bin,libdbi-perl,git,python3
NSPAWN_SUITE=bookworm

nspawn_tools() {
	local missing=()
	command -v debootstrap >/dev/null || missing+=(debootstrap)
	command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
	command -v zstd >/dev/null || missing+=(zstd)
	command -v ip >/dev/null || missing+=(iproute2)
	command -v nsenter >/dev/null || missing+=(util-linux)
	command -v pgrep >/dev/null || missing+=(procps)
	((${#missing[@]} == 0)) && return 0
	log "installing ${missing[*]}"
	apt-get -o DPkg::Lock::Timeout=600 update -qq
	DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "${missing[@]}" \
		>/dev/null
}

# The first Debian mirror this machine's apt uses (deb822 or one-line format).
nspawn_mirror() {
	local found
	found=$(grep -hsE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/* \
		| grep -v security | head -n 1 | sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//')
	echo "${found:-http://deb.debian.org/debian}"
}

# Sets NSPAWN_ROOTFS: the unpacked tree, kept next to its zstd tarball. --volatile=overlay keeps it
# read-only under a tmpfs, so every container and run shares it and none can change it.
nspawn_rootfs() {
	local tarball staging lock
	tarball=$NSPAWN_CACHE/rootfs-$NSPAWN_SUITE-$(echo "$NSPAWN_PACKAGES" | sha256sum | cut -c1-12).tar.zst
	NSPAWN_ROOTFS=${tarball%.tar.zst}
	mkdir -p "$NSPAWN_CACHE"
	# Concurrent runs share the cache; only one builds it.
	exec {lock}>"$NSPAWN_CACHE/.lock"
	flock "$lock"
	if [[ ! -s $tarball ]]; then
		staging=$(mktemp -d "$NSPAWN_CACHE/build.XXXXXX")
		log "debootstrap $NSPAWN_SUITE into $staging (once; cached as $tarball)"
		debootstrap --variant=minbase --include="$NSPAWN_PACKAGES" "$NSPAWN_SUITE" \
			"$staging/root" "$(nspawn_mirror)" >"$staging/debootstrap.log" 2>&1 || {
			tail -n 20 "$staging/debootstrap.log" >&2
			rm -rf "$staging"
			fail "debootstrap failed (mirror $(nspawn_mirror)); the log's end is above"
		}
		tar -C "$staging/root" --numeric-owner -cf - . | zstd -q -T0 -o "$staging/rootfs.tar.zst"
		mv "$staging/rootfs.tar.zst" "$tarball"
		# The tree just packed is the tree the tarball would unpack to.
		rm -rf "$NSPAWN_ROOTFS"
		mv "$staging/root" "$NSPAWN_ROOTFS"
		rm -rf "$staging"
	fi
	if [[ ! -d $NSPAWN_ROOTFS ]]; then
		staging=$(mktemp -d "$NSPAWN_CACHE/extract.XXXXXX")
		log "extracting $tarball"
		zstd -q -dc "$tarball" | tar -C "$staging" --numeric-owner -xf -
		chmod 0755 "$staging"
		mv "$staging" "$NSPAWN_ROOTFS"
	fi
	flock -u "$lock"
	exec {lock}>&-
}

# Under a cgroup v1 host nspawn mounts the controllers read-only, and systemd then cannot set
# MemoryMax or TasksMax: the wrapper remounts them read-write before systemd starts.
nspawn_init_wrapper() {
	cat >"$1" <<'EOF'
#!/bin/sh
for controller in /sys/fs/cgroup/*/; do
	mount -o remount,bind,rw "$controller" 2>/dev/null
done
exec /lib/systemd/systemd
EOF
	chmod 0755 "$1"
}

# Prints one new cgroup directory per hierarchy, named NAME, below this shell's own (so the
# harness's own limits still apply to the container).
nspawn_cgroups_make() {
	local name=$1 line hierarchy path dir
	while IFS= read -r line; do
		hierarchy=${line#*:}
		hierarchy=${hierarchy%%:*}
		path=${line#*:*:}
		case $hierarchy in
		"") dir=/sys/fs/cgroup/unified$path ;;
		name=systemd) dir=/sys/fs/cgroup/systemd$path ;;
		*) dir=/sys/fs/cgroup/${hierarchy%%,*}$path ;;
		esac
		[[ -d $dir ]] || continue
		mkdir -p "${dir%/}/$name"
		# A new v1 cpuset has no CPUs or memory nodes, and refuses tasks until it gets some.
		if [[ -e $dir/cpuset.cpus ]]; then
			cat "$dir/cpuset.cpus" >"${dir%/}/$name/cpuset.cpus"
			cat "$dir/cpuset.mems" >"${dir%/}/$name/cpuset.mems"
		fi
		echo "${dir%/}/$name"
	done </proc/self/cgroup
}

nspawn_cgroups_remove() {
	local dir
	for dir in "$@"; do
		[[ -d $dir ]] || continue
		# The container's systemd leaves nested cgroups; remove the deepest first.
		find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
	done
}

# nspawn_boot NAME LOGFILE NSPAWN_ARGS... -- INIT: starts `systemd-nspawn -D ROOTFS -M NAME` with
# the options every container here needs, in cgroups of its own, in the background. Sets
# NSPAWN_PID (nspawn itself, a child of this shell) and NSPAWN_CGROUPS. Must not run in a
# subshell: the caller waits for NSPAWN_PID.
nspawn_boot() {
	local name=$1 logfile=$2
	shift 2
	mapfile -t NSPAWN_CGROUPS < <(nspawn_cgroups_make "$name")
	(
		for dir in "${NSPAWN_CGROUPS[@]}"; do echo "$BASHPID" >"$dir/cgroup.procs"; done
		exec systemd-nspawn -D "$NSPAWN_ROOTFS" -M "$name" --volatile=overlay --register=no \
			--keep-unit --console=read-only --kill-signal=SIGRTMIN+3 "$@"
	) >"$logfile" 2>&1 </dev/null &
	# shellcheck disable=SC2034 # for the caller
	NSPAWN_PID=$!
}

# nspawn_leader NSPAWN_PID LOGFILE: prints the container's PID 1 once the init wrapper has exec'd
# systemd (nspawn's child), waiting up to 10 s.
nspawn_leader() {
	local pid=$1 logfile=$2 leader
	for _ in $(seq 100); do
		leader=$(pgrep -P "$pid" | head -n 1 || true)
		if [[ -n $leader && $(cat "/proc/$leader/comm" 2>/dev/null) == systemd ]]; then
			echo "$leader"
			return 0
		fi
		kill -0 "$pid" 2>/dev/null || {
			cat "$logfile" >&2
			fail "systemd-nspawn exited before the container booted; its output is above"
		}
		sleep 0.1
	done
	fail "no container leader 10 s after starting nspawn (pid $pid); see $logfile"
}

# nspawn_wait_running LEADER: waits (up to 20 s) until the container's systemd has finished
# booting; `degraded` counts, since a minimal image may have a unit that fails.
nspawn_wait_running() {
	local state=
	for _ in $(seq 100); do
		state=$(nsenter -t "$1" -a -- systemctl is-system-running 2>/dev/null || true)
		[[ $state == running || $state == degraded ]] && return 0
		sleep 0.2
	done
	fail "the container (leader $1) did not boot: systemctl is-system-running says '$state'"
}

# nspawn_stop NSPAWN_PID...: nspawn forwards SIGTERM as SIGRTMIN+3, a clean poweroff (~1.5 s);
# whatever still runs after 10 s is killed. Returns once every nspawn has exited.
nspawn_stop() {
	local pid
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "$@"; do
		for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
		if kill -0 "$pid" 2>/dev/null; then
			# Killing the container's PID 1 ends its whole PID namespace; then nspawn exits.
			pkill -KILL -P "$pid" 2>/dev/null || true
			kill -KILL "$pid" 2>/dev/null || true
		fi
		wait "$pid" 2>/dev/null || true
	done
}

# nspawn_myco_stage DIR RELEASE UNIT: copies what a box needs of the split Myco into DIR: myco-d
# and myco-priv from RELEASE, UNIT as myco-d.service, and systemd/'s myco-d-dns.socket,
# myco-priv.socket, myco-priv.service, myco.sysusers and myco.tmpfiles. Copies, so that a build or an edit during a run cannot
# change what the boxes run.
nspawn_myco_stage() {
	local dir=$1 release=$2 unit=$3 systemd_dir
	systemd_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../systemd" && pwd)
	mkdir -p "$dir"
	cp "$release/myco-d" "$release/myco-priv" "$dir/"
	cp "$unit" "$dir/myco-d.service"
	cp "$systemd_dir/myco-d-dns.socket" "$systemd_dir/myco-priv.socket" "$systemd_dir/myco-priv.service" \
		"$systemd_dir/myco.sysusers" "$systemd_dir/myco.tmpfiles" "$dir/"
}

# nspawn_myco_binds DIR: sets NSPAWN_MYCO_BINDS, the systemd-nspawn arguments that bind what
# nspawn_myco_stage put in DIR where the Debian package installs it (the units in
# /etc/systemd/system, where an operator's own copies go).
nspawn_myco_binds() {
	local dir=$1
	# shellcheck disable=SC2034 # for the caller
	NSPAWN_MYCO_BINDS=(--bind-ro="$dir/myco-d:/usr/bin/myco-d"
		--bind-ro="$dir/myco-priv:/usr/bin/myco-priv"
		--bind-ro="$dir/myco-d.service:/etc/systemd/system/myco-d.service"
		--bind-ro="$dir/myco-d-dns.socket:/etc/systemd/system/myco-d-dns.socket"
		--bind-ro="$dir/myco-priv.socket:/etc/systemd/system/myco-priv.socket"
		--bind-ro="$dir/myco-priv.service:/etc/systemd/system/myco-priv.service"
		--bind-ro="$dir/myco.sysusers:/usr/lib/sysusers.d/myco.conf"
		--bind-ro="$dir/myco.tmpfiles:/usr/lib/tmpfiles.d/myco.conf")
}

# What the Debian package's postinst does, as one command for `sh -c` inside a booted box: the user
# myco from the sysusers file (before the socket, whose group it is), the GC root directory (group
# myco) from the tmpfiles file, then the helper's socket, the
# daemon's DNS sockets and the daemon. Each box boots with a fresh /etc (--volatile=overlay), so every boot runs it.
# shellcheck disable=SC2034 # for the callers
NSPAWN_MYCO_START='systemd-sysusers /usr/lib/sysusers.d/myco.conf && systemd-tmpfiles --create /usr/lib/tmpfiles.d/myco.conf && systemctl enable --now --quiet myco-priv.socket myco-d-dns.socket myco-d.service'
