# The one entry point for every task; .ci/run calls `make ci` (the README's test command) and nothing else.

SHELL := bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test

# Simulator scenario for `make sim`; override on the command line, e.g. `make sim SEED=7`.
SEED ?= 1
NODES ?= 50
SERVICES ?= 1000
LOSS ?= 0.5
MINUTES ?= 10
FUZZ_SECONDS ?= 30

# DESIGN.md's budget for each of the two shipped binaries: 2 MiB stripped.
BINARY_SIZE_BYTES_MAX := 2097152
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
NOSTD_TARGET := thumbv7em-none-eabihf
ARM_TARGET := aarch64-unknown-linux-gnu
# Debian's cross linker and qemu user emulation run aarch64 test binaries on this x86_64 machine.
ARM_ENV := CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
FUZZ_TARGETS := $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))
SIM := cargo run --profile sim -p myco-sim --

.PHONY: ci check test test-root sim gauntlet gauntlet-short bench size size-check nostd aarch64 aarch64-tools fmt fmt-check lint \
	fuzz fuzz-build tools nostd-tools fuzz-tools systemd-check systemd-test units-check nix-check \
	testbed-test demo

# Everything CI checks that any developer can run as an ordinary user: formatting, lints, the
# no_std build, the tests, a 2-minute gauntlet, the size gates, the fuzz build and the offline
# unit checks (systemd-analyze verify/security against a throwaway root need no privileges) and
# the offline Nix checks (a throwaway Nix store needs none either).
# The first run may fetch rustup components and cargo-fuzz into the user's own toolchain.
check: fmt-check lint nostd test gauntlet-short size fuzz-build systemd-check units-check nix-check

# What CI runs: `check`, then what needs root: `tools` (apt-get), the tests that mount a
# filesystem (test-root), the aarch64 run (Debian's cross toolchain and qemu-user, installed by
# apt-get), and real systemd in containers (systemd-test, testbed-test).
ci: tools check test-root aarch64 systemd-test testbed-test

# nextest runs test binaries in parallel and reports better; plain cargo test is the fallback for
# machines without it. The crates have no doctests (nextest skips those); examples are checked by
# `lint`, which builds all targets. `test` is every test an ordinary user can run; `test-root`
# runs the ones that need root, named in ROOT_TEST (the full-disk test mounts a tmpfs).
ROOT_TEST := a_full_disk_frees_the_reserve_and_the_wal_keeps_working

test:
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace -E 'not test(=$(ROOT_TEST))'; \
	else \
		cargo test --workspace -- --skip $(ROOT_TEST); \
	fi

test-root:
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run -p myco-host --test daemon -E 'test(=$(ROOT_TEST))'; \
	else \
		cargo test -p myco-host --test daemon -- --exact $(ROOT_TEST); \
	fi

sim:
	$(SIM) run --seed $(SEED) --nodes $(NODES) --services $(SERVICES) --loss $(LOSS)

# Each `make gauntlet` explores new seeds (every failure prints its own reproduction); CI's short
# gauntlet starts from seed 1 so a submission's result does not depend on luck.
GAUNTLET_SEED ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')

gauntlet:
	$(SIM) gauntlet --seconds $$(($(MINUTES) * 60)) --seed $(GAUNTLET_SEED)

gauntlet-short:
	$(SIM) gauntlet --seconds 120 --seed 1

bench:
	$(SIM) bench
	dir=$$(mktemp -d); cargo run --release -p myco-host --example wal_bench -- "$$dir"; rm -rf "$$dir"
	cargo build --release -p myco-host -p myco-cli
	cargo run --release -p myco-testkit --bin daemon_bench
	# The engine on three boxes under real systemd: its TESTBED line has deploy to running and
	# death to replaced (needs root; docs/testbed.md).
	$(MAKE) --no-print-directory testbed-test
	tests/dnsbench/run.sh

size:
	cargo build --release --bin myco-d --bin myco
	$(MAKE) --no-print-directory size-check BINARY_DIR=$(TARGET_DIR)/release

# Fails if a stripped release binary in BINARY_DIR exceeds the budget.
size-check:
	@status=0; \
	for bin in myco-d myco; do \
		bytes=$$(stat -c %s "$(BINARY_DIR)/$$bin"); \
		echo "$(BINARY_DIR)/$$bin: $$bytes bytes (max $(BINARY_SIZE_BYTES_MAX))"; \
		if [ "$$bytes" -gt $(BINARY_SIZE_BYTES_MAX) ]; then \
			echo "$$bin is over its size budget"; status=1; \
		fi; \
	done; \
	exit $$status

# The core and host unit tests on aarch64 under qemu, and both binaries built and size-gated for
# aarch64 (edge boxes are x86_64 and aarch64). The test binaries that start processes (daemon,
# systemd) are left out: without binfmt_misc the kernel cannot exec an aarch64 child. qemu-user
# does not emulate io_uring, so the io tests' uring variants are skipped there (MYCO_NO_IO_URING)
# and the poll variants carry the shared behaviour.
aarch64: aarch64-tools
	$(ARM_ENV) MYCO_NO_IO_URING=1 cargo test -p myco-core -p myco-host --target $(ARM_TARGET) \
		--lib --test store --test reserve --test flight_recorder --test io
	$(ARM_ENV) cargo build --release --target $(ARM_TARGET) --bin myco-d --bin myco
	$(MAKE) --no-print-directory size-check BINARY_DIR=$(TARGET_DIR)/$(ARM_TARGET)/release

aarch64-tools:
	command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
	rustup target list --installed | grep -x $(ARM_TARGET) >/dev/null \
		|| rustup target add $(ARM_TARGET)

# Proves that myco-core builds without std or an allocator.
nostd: nostd-tools
	cargo build -p myco-core --target $(NOSTD_TARGET)

# The fuzz crate is outside the workspace, so its targets are formatted by name.
fmt:
	cargo fmt --all
	$(if $(FUZZ_TARGETS),rustfmt fuzz/fuzz_targets/*.rs)

fmt-check:
	cargo fmt --all -- --check
	$(if $(FUZZ_TARGETS),rustfmt --check fuzz/fuzz_targets/*.rs)

lint:
	cargo clippy --workspace --all-targets -- -D warnings

fuzz: fuzz-tools
	$(if $(FUZZ_TARGETS),,@echo "no fuzz targets in fuzz/fuzz_targets")
	for target in $(FUZZ_TARGETS); do \
		cargo +nightly fuzz run "$$target" -- -max_total_time=$(FUZZ_SECONDS); \
	done

fuzz-build: fuzz-tools
	$(if $(FUZZ_TARGETS),cargo +nightly fuzz build,@echo "no fuzz targets in fuzz/fuzz_targets")

# Everything a fresh machine with only rustup's stable toolchain needs for `make ci`. The
# end-to-end tests (tests/) drive the API with curl and check /metrics with promtool, which
# Debian ships in its prometheus package; myco-cli's init tests parse the generated flake.nix
# files with nix-bin's nix-instantiate --parse, which works offline; the DNS tests query with
# dig (dnsutils).
tools: nostd-tools fuzz-tools aarch64-tools
	rustup component add rustfmt clippy
	command -v curl >/dev/null && command -v promtool >/dev/null \
		&& command -v nix-instantiate >/dev/null && command -v dig >/dev/null \
		|| (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
			--no-install-recommends curl prometheus nix-bin dnsutils)

# grep without -q reads all of rustup's output, so pipefail never sees rustup die of SIGPIPE.
nostd-tools:
	rustup target list --installed | grep -x $(NOSTD_TARGET) >/dev/null \
		|| rustup target add $(NOSTD_TARGET)

fuzz-tools:
	rustup toolchain list | grep '^nightly' >/dev/null \
		|| rustup toolchain install nightly --profile minimal
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# `systemd-analyze security --offline=yes` exposure of systemd/myco-d.service, times 10, that the
# unit may not exceed: the measured score, so weakening any one directive fails it. Measured: 1.7
# (systemd 252). What remains: the network the daemon needs (PrivateNetwork 0.5, IPAddressDeny 0.2,
# AF_INET/AF_INET6 0.3, AF_UNIX 0.1), running as root (0.4) without PrivateUsers (0.2) because
# the executor writes units and drives systemctl, CAP_NET_BIND_SERVICE (0.1) for *.myco DNS on
# port 53 (its only capability), the host's root and ProtectClock's read access to the RTC. The
# services it starts score 1.1 to 1.5 (docs/units.md).
SYSTEMD_SECURITY_MAX := 17

# Verifies the unit as installed next to the release binary, and gates its exposure score.
systemd-check:
	cargo build --release --bin myco-d
	systemd/check.sh $(TARGET_DIR)/release/myco-d $(SYSTEMD_SECURITY_MAX)

# Boots the unit under a real systemd in a container and checks readiness, the dynamic user, the
# API socket, restarts and the watchdog (see systemd/nspawn-test.sh). Needs root. ~15 s, or ~80 s
# the first time on a machine, when it builds the container's root filesystem.
systemd-test:
	cargo build --release --bin myco-d --bin myco
	systemd/nspawn-test.sh $(TARGET_DIR)/release

# The exposure, times 10, that no unit `myco render` makes from tests/units may exceed (the issue's
# bar of 1.5). Measured (systemd 252): 1.1 for most services; 1.4 with a port below 1024
# (CAP_NET_BIND_SERVICE, no PrivateUsers); 1.5 with a GPU and a low port. docs/units.md.
UNITS_SECURITY_MAX := 15

# Renders every manifest of tests/units/ok with the release myco, verifies each unit with
# systemd-analyze (no output allowed) and gates its security exposure; every manifest of
# tests/units/refused must be refused (see systemd/units-check.sh).
units-check:
	cargo build --release --bin myco
	systemd/units-check.sh $(TARGET_DIR)/release/myco $(UNITS_SECURITY_MAX)

# flake.nix, the NixOS module and every .nix file, offline against the stand-in nixpkgs of
# tests/nix: parse, the module's unit equals systemd/myco-d.service, the module's options, and
# `nix flake show` / `nix flake check --no-build` (see tests/nix/flake-check.sh, docs/nix.md).
nix-check:
	tests/nix/flake-check.sh

# Three boxes with real systemd in containers on a bridge, each running myco-d installed from
# systemd/myco-d.service; a service deployed with 2 replicas, one box cut off and healed, a new
# version rolled out (see tests/testbed/engine-test.sh and docs/testbed.md). Prints the timings on
# a `TESTBED ...` line. Needs root. ~25 s, or ~80 s the first time on a machine (debootstrap).
testbed-test:
	cargo build --release --bin myco-d --bin myco
	tests/testbed/engine-test.sh $(TARGET_DIR)/release

# The README's first command: installs what it needs, builds, boots three boxes, deploys a
# service, powers off a box that runs it, shows it running elsewhere, cleans up. Needs root.
demo:
	tests/testbed/demo.sh
