#!/usr/bin/env bash
# The aarch64 build tested as a daemon, not only as a library (`make aarch64`, docs/install.md):
# the test binaries of myco-host, myco-cli and the tests crate that start myco-d and myco as
# processes, built for aarch64 and run under qemu-user on this x86_64 machine.
#
# A test binary runs under qemu (cargo's runner), but the aarch64 processes it starts need the
# kernel to hand them to qemu too: binfmt_misc. If `qemu-aarch64` is registered, it is used. If
# not and this runs as root, the script registers it (with the F flag, so that qemu is found from
# any mount namespace) and unregisters it, and unmounts binfmt_misc if it mounted it, on exit.
# Without binfmt and without root, the children run through qemu-aarch64-static explicitly:
# MYCO_BIN_DIR points at wrapper scripts, which covers the tests that find their binaries through
# myco-testkit (myco-host's and the tests crate's); myco-cli's tests start the binary cargo names
# for them (CARGO_BIN_EXE_myco), so they need binfmt and are left out then.
#
# qemu-user has no io_uring, so MYCO_NO_IO_URING=1 selects the poll loop. Left out everywhere:
# the full-disk test (root and a tmpfs mount: `make test-root` covers it on x86_64), the test
# that blocks io_uring with a seccomp filter (qemu-user does not apply a guest's seccomp filter
# to itself), the sd_notify test that starts a child with an empty environment (which loses the
# QEMU_LD_PREFIX qemu needs to find the aarch64 loader), and the real-systemd tests
# (systemd-test, testbed-test), which need containers.
#
# Usage: tests/aarch64-processes.sh (with ARM_ENV's linker and runner in the environment)

set -euo pipefail

target=aarch64-unknown-linux-gnu
sysroot=/usr/aarch64-linux-gnu
binfmt=/proc/sys/fs/binfmt_misc
repo=$(cd "$(dirname "$0")/.." && pwd)
bin_dir=${CARGO_TARGET_DIR:-$repo/target}/$target/debug
skip=(--skip a_full_disk_frees_the_reserve_and_the_wal_keeps_working
	--skip a_full_disk_never_stops_the_daemon_and_loses_nothing
	--skip a_deploy_in_flight_when_the_disk_fills_gets_the_daemons_507
	--skip falls_back_to_poll_when_seccomp_blocks_io_uring
	--skip empty_environment_disables_everything)
mounted='' registered='' wrappers=''

cleanup() {
	if [[ -n $registered ]]; then echo -1 >"$binfmt/qemu-aarch64"; fi
	if [[ -n $mounted ]]; then umount "$binfmt"; fi
	if [[ -n $wrappers ]]; then rm -rf "$wrappers"; fi
}
trap cleanup EXIT

# The magic and mask of an aarch64 ELF executable (qemu's own qemu-binfmt-conf.sh).
register() {
	if [[ ! -e $binfmt/register ]]; then
		mount -t binfmt_misc binfmt_misc "$binfmt" && mounted=yes
	fi
	printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
		>"$binfmt/register"
	registered=yes
}

packages=(-p myco-host -p myco-tests)
tests=(--test daemon --test stream --test executor --test systemd --test cluster)
if [[ -e $binfmt/qemu-aarch64 ]]; then
	echo "aarch64: binfmt_misc runs aarch64 children through qemu"
elif [[ $(id -u) -eq 0 ]] && register 2>/dev/null; then
	echo "aarch64: registered qemu-aarch64 with binfmt_misc for this run"
else
	echo "aarch64: no binfmt_misc; children run through qemu-aarch64-static explicitly, myco-cli's process tests left out"
	wrappers=$(mktemp -d)
	for binary in myco-d myco; do
		printf '#!/bin/sh\nexec qemu-aarch64-static -L %s %s "$@"\n' "$sysroot" "$bin_dir/$binary" \
			>"$wrappers/$binary"
		chmod 0755 "$wrappers/$binary"
	done
	export MYCO_BIN_DIR=$wrappers
fi
if [[ -z $wrappers ]]; then
	packages+=(-p myco-cli)
	tests+=(--test cli --test logs --test wait --test render)
	export MYCO_BIN_DIR=$bin_dir
fi

# qemu-user (Debian 12's 7.2) can deadlock in the child of a fork from a threaded guest, before
# the exec: seen once in a CI run, a test binary's child stuck on a futex for good while starting
# the 20th of 32 daemons. A run that has not ended in RUN_S is taken for that: its processes
# are killed, and it runs once more. A hang of our own hangs twice and fails.
run_s=900
run_tests() {
	QEMU_LD_PREFIX=$sysroot MYCO_NO_IO_URING=1 timeout --kill-after=10 "$run_s" \
		cargo test --target "$target" "${packages[@]}" "${tests[@]}" -- "${skip[@]}"
}
# The kit would rebuild a stale binary for the host; build the aarch64 ones first instead.
cargo build --target "$target" -p myco-host -p myco-cli --bins
cargo test --no-run --target "$target" "${packages[@]}" "${tests[@]}"
status=0
run_tests || status=$?
if ((status == 124 || status == 137)); then
	echo "aarch64: the tests did not end in $run_s s (a qemu-user fork deadlock?); killing them, running once more"
	pkill -9 -f "$bin_dir/" || true
	run_tests
else
	exit "$status"
fi
