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

# The budget for each of the two shipped binaries: 2 MiB stripped (docs/benchmarks.md).
BINARY_SIZE_BYTES_MAX := 2097152
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
NOSTD_TARGET := thumbv7em-none-eabihf
ARM_TARGET := aarch64-unknown-linux-gnu
# Debian's cross linker and qemu user emulation run aarch64 test binaries on this x86_64 machine.
ARM_ENV := CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc \
	CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64-static -L /usr/aarch64-linux-gnu"
FUZZ_TARGETS := $(basename $(notdir $(wildcard fuzz/fuzz_targets/*.rs)))
# The simulator's runs are built for this machine's CPU: ChaCha20 and Poly1305 get their vector
# code inlined (about 15% less CPU in the standard scenario; trace hashes identical to a plain
# build). In a target directory of its own, as loom's: the flags would otherwise rebuild target/sim
# each time someone runs the plain `cargo run --profile sim` a failure prints.
SIM_BUILD := CARGO_TARGET_DIR=$(TARGET_DIR)/native RUSTFLAGS="-C target-cpu=native"
SIM := $(SIM_BUILD) cargo run --profile sim -p myco-sim --
# apt-get waits for the package lock (unattended upgrades may hold it) instead of failing.
APT := DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600

.PHONY: ci check test test-root loom sim gauntlet gauntlet-short gauntlet-ci bench bench-cache bench-formation bench-loss bench-peers bench-profiles size size-check nostd aarch64 aarch64-release aarch64-tools fmt fmt-check lint \
	fuzz fuzz-build fuzz-seeds tools nostd-tools fuzz-tools systemd-check systemd-test priv-systemd-test units-check nix-check \
	testbed-test demo readme-walk man install deb deb-tools package-test

# Everything CI checks that any developer can run as an ordinary user: formatting, lints, the
# no_std build, the tests, a 2-minute gauntlet, the size gates, the fuzz build and the offline
# unit checks (systemd-analyze verify/security against a throwaway root need no privileges) and
# the offline Nix checks (a throwaway Nix store needs none either).
# The first run may fetch rustup components and cargo-fuzz into the user's own toolchain.
CHECKS := fmt-check lint nostd test loom readme-walk size fuzz-build systemd-check units-check nix-check
check: $(CHECKS) gauntlet-short

# What CI runs: the checks of `check` with the full 10-minute gauntlet instead of the short one,
# then what needs root: `tools` (apt-get), the tests that mount a filesystem or drop packets with
# nftables (test-root), the aarch64 run (Debian's cross toolchain and qemu-user, installed by
# apt-get), real systemd in
# containers (systemd-test, priv-systemd-test, testbed-test), the Debian packages with lintian (deb) and the amd64
# package installed, used and removed in a testbed box (package-test). docs/install.md records
# how long it takes.
ci: tools $(CHECKS) gauntlet-ci test-root aarch64 systemd-test priv-systemd-test testbed-test package-test

# nextest runs test binaries in parallel and reports better; plain cargo test is the fallback for
# machines without it. The crates have no doctests (nextest skips those); examples are checked by
# `lint`, which builds all targets. `test` is every test an ordinary user can run; `test-root`
# runs the ones that need root, named in ROOT_TESTS (the full-disk tests mount a tmpfs, the p2p
# test gives each daemon its own /nix in a mount namespace, the privileged_daemon tests run the
# daemon as nobody beside a root myco-priv), from the
# myco-host test binaries in ROOT_TEST_BINARIES, and the real-loss test (nftables) from myco-tests.
# The throttle test needs no root but takes ~25 s. Ends with issue 16's summary line
# (tests/p2p-line.sh) from the figures the p2p and cache tests wrote in $(TARGET_DIR)/test-figures.
ROOT_TESTS := a_full_disk_frees_the_reserve_and_the_wal_keeps_working \
	a_full_disk_never_stops_the_daemon_and_loses_nothing \
	a_deploy_in_flight_when_the_disk_fills_gets_the_daemons_507 \
	the_flight_recorder_is_written_on_a_full_disk \
	a_full_disk_allocates_nothing \
	twenty_daemons_at_30_percent_loss_converge_and_replace_a_killed_box \
	boxes_substitute_from_peers_and_refuse_tampered_paths \
	a_remote_box_gets_its_build_from_the_builder \
	a_remote_box_learns_that_the_builder_s_build_failed \
	a_revoked_box_s_cache_is_not_trusted \
	the_default_throttle_holds_for_one_client_and_two_share_it \
	an_unprivileged_daemon_runs_services_through_myco_priv \
	refusals_are_logged_and_counted \
	exec_health_checks_run_through_myco_priv
ROOT_TEST_BINARIES := daemon flight_recorder_full_disk strict_alloc p2p cache privileged_daemon
EMPTY :=
SPACE := $(EMPTY) $(EMPTY)
ROOT_FILTER := $(subst $(SPACE), | ,$(foreach t,$(ROOT_TESTS),test(=$(t))))

test:
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run --workspace -E 'not ($(ROOT_FILTER))'; \
	else \
		cargo test --workspace -- $(addprefix --skip ,$(ROOT_TESTS)); \
	fi

test-root:
	rm -rf $(TARGET_DIR)/test-figures
	if cargo nextest --version >/dev/null 2>&1; then \
		cargo nextest run -p myco-host $(addprefix --test ,$(ROOT_TEST_BINARIES)) -E '$(ROOT_FILTER)' \
		&& cargo nextest run -p myco-tests --test lossy -E '$(ROOT_FILTER)'; \
	else \
		cargo test -p myco-host $(addprefix --test ,$(ROOT_TEST_BINARIES)) -- --exact $(ROOT_TESTS) \
		&& cargo test -p myco-tests --test lossy -- --exact $(ROOT_TESTS); \
	fi
	tests/p2p-line.sh $(TARGET_DIR)/test-figures

# loom models of where the daemon's threads meet (myco-host/tests/loom.rs). `--cfg loom` changes
# every crate's flags, so they build in a target directory of their own rather than rebuild the
# main one; LOOM_MAX_PREEMPTIONS bounds the interleavings explored (loom's advice: 2 or 3).
loom:
	RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 CARGO_TARGET_DIR=$(TARGET_DIR)/loom \
		cargo test -p myco-host --test loom

# The README's local example ("Two daemons on this machine"), read from README.md and run as
# written against the debug binaries, on loopback in a temporary directory; it fails if a step
# fails or prints something else than the README says, so the README cannot rot.
readme-walk:
	cargo build --bin myco-d --bin myco
	tests/readme-walk.sh $(TARGET_DIR)/debug

sim:
	$(SIM) run --seed $(SEED) --nodes $(NODES) --services $(SERVICES) --loss $(LOSS)

# Each `make gauntlet` explores new seeds (every failure prints its own reproduction); CI's short
# gauntlet starts from seed 1 so a submission's result does not depend on luck.
GAUNTLET_SEED ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')

gauntlet:
	$(SIM) gauntlet --seconds $$(($(MINUTES) * 60)) --seed $(GAUNTLET_SEED)

gauntlet-short:
	$(SIM) gauntlet --seconds 120 --seed 1

# CI's gauntlet: every scenario that ever failed (myco-sim/regressions.txt), exactly, then random
# seeds for the rest of GAUNTLET_CI_SECONDS; each failure prints its reproduction and fails CI.
GAUNTLET_CI_SECONDS ?= 600
gauntlet-ci:
	$(SIM_BUILD) myco-sim/gauntlet-ci.sh $(GAUNTLET_CI_SECONDS) $(GAUNTLET_SEED)

bench:
	$(SIM) bench
	dir=$$(mktemp -d); cargo run --release -p myco-host --example wal_bench -- "$$dir"; rm -rf "$$dir"
	cargo build --release -p myco-host -p myco-cli
	cargo run --release -p myco-testkit --bin daemon_bench
	# The engine on three boxes under real systemd: its TESTBED line has deploy to running and
	# death to replaced (needs root; docs/testbed.md).
	$(MAKE) --no-print-directory testbed-test
	tests/dnsbench/run.sh

# The binary cache against a static one (`nix copy --to file://` + python3 -m http.server), with
# the real Nix on loopback: prints CACHE size_mb=.. myco_s=.. static_s=.. rss_max_kb=..
# throttle_one_mb_s=.. (docs/benchmarks.md). SIZE_MB (default 100) and RUNS (default 3).
bench-cache:
	cargo build --release -p myco-host -p myco-cli
	tests/bench-cache.sh

# Formation of NODES real daemons on loopback (staggered start, as in `make bench`): prints
# FORMED nodes=.. last_start_to_all_alive_s=.. false_dead=.. (docs/benchmarks.md). 100 unless
# NODES is given: the 50 above are `make sim`'s.
FORMATION_NODES := $(if $(filter command line environment,$(origin NODES)),$(NODES),100)
bench-formation:
	cargo build --release -p myco-host -p myco-cli
	cargo run --release -p myco-testkit --bin daemon_bench -- --nodes $(FORMATION_NODES) --formation-only

# Real packet loss (nftables on loopback; needs root and `nft`): 20 daemons at 30% and 50% loss
# take 100 deploys and replace a killed box, beside MycoSim's runs of the same size, one
# LOSS nodes=.. loss_pct=.. real_*=.. sim_*=.. line per loss (docs/benchmarks.md).
bench-loss:
	cargo build --release -p myco-host -p myco-cli
	cargo build --profile sim -p myco-sim
	cargo run --release -p myco-testkit --bin loss_bench

# Each network profile on 20 real daemons on loopback, in one run: bytes per box per second at
# rest and three deaths to replaced, beside the profile's arithmetic, goal and detection bound,
# one PROFILE line per profile (docs/benchmarks.md, "Network profiles").
bench-profiles:
	cargo build --release -p myco-host -p myco-cli
	cargo run --release -p myco-testkit --bin profile_bench

# Myco side by side with foca (in MycoSim's network), memberlist and chitchat (loopback,
# nftables loss; needs root), one table, one line per system and figure (docs/benchmarks.md, "Side by side").
# The harnesses are bench/peers, a workspace of its own; not part of make ci.
bench-peers:
	bench/peers/run.sh

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

# The core and host unit tests on aarch64 under qemu, then the tests that start myco-d and myco
# as processes (tests/aarch64-processes.sh: the aarch64 children run through binfmt_misc, which it
# registers for the run as root, else through qemu-aarch64-static explicitly), and both binaries
# built and size-gated for aarch64 (edge boxes are x86_64 and aarch64). qemu-user does not emulate
# io_uring, so the io tests' uring variants are skipped there (MYCO_NO_IO_URING) and the poll
# variants carry the shared behaviour. docs/install.md lists what is left out and why.
# Test threads get 16 MiB of stack: unoptimized tests build a node and an executor (about 1.2 MB)
# on the stack, which the default 2 MiB does not hold under qemu's aarch64 frames. The daemon
# keeps both in its static arena.
aarch64: aarch64-tools
	$(ARM_ENV) MYCO_NO_IO_URING=1 RUST_MIN_STACK=16777216 cargo test -p myco-core -p myco-host --target $(ARM_TARGET) \
		--lib --test store --test reserve --test flight_recorder --test io
	$(ARM_ENV) tests/aarch64-processes.sh
	$(MAKE) --no-print-directory aarch64-release
	$(MAKE) --no-print-directory size-check BINARY_DIR=$(TARGET_DIR)/$(ARM_TARGET)/release

# The aarch64 release binaries, for the size gate and the arm64 package.
aarch64-release: aarch64-tools
	$(ARM_ENV) cargo build --release --target $(ARM_TARGET) --bin myco-d --bin myco-priv --bin myco

aarch64-tools:
	command -v aarch64-linux-gnu-gcc >/dev/null && command -v qemu-aarch64-static >/dev/null \
		|| ($(APT) update -qq && $(APT) install -y -qq \
			gcc-aarch64-linux-gnu libc6-dev-arm64-cross qemu-user-static)
	rustup target list --installed | grep -x $(ARM_TARGET) >/dev/null \
		|| rustup target add $(ARM_TARGET)

# Proves that myco-core builds without std or an allocator.
nostd: nostd-tools
	cargo build -p myco-core --target $(NOSTD_TARGET)

# The fuzz crate is outside the workspace, so its targets and the seed writer are formatted by
# name.
fmt:
	cargo fmt --all
	$(if $(FUZZ_TARGETS),rustfmt fuzz/fuzz_targets/*.rs fuzz/examples/*.rs)

fmt-check:
	cargo fmt --all -- --check
	$(if $(FUZZ_TARGETS),rustfmt --check fuzz/fuzz_targets/*.rs fuzz/examples/*.rs)

# Shell too: the testbed and CI scripts are code that runs as root (shellcheck from `make tools`).
lint:
	cargo clippy --workspace --all-targets -- -D warnings
	shellcheck -x -S warning $$(git ls-files '*.sh') .ci/run

# Each target reads its generated corpus (fuzz/corpus/, git-ignored, where libFuzzer writes what
# it finds) and, when there is one, its committed seeds (fuzz/seeds/, valid inputs the fuzzer
# cannot find alone: frames behind a magic number, genuinely signed handshakes); libFuzzer
# writes only to the first directory. The limits are the ones a hostile input must stay within.
fuzz: fuzz-tools
	$(if $(FUZZ_TARGETS),,@echo "no fuzz targets in fuzz/fuzz_targets")
	for target in $(FUZZ_TARGETS); do \
		mkdir -p "fuzz/corpus/$$target"; \
		seeds=$$(test -d "fuzz/seeds/$$target" && echo "fuzz/seeds/$$target" || true); \
		cargo +nightly fuzz run "$$target" "fuzz/corpus/$$target" $$seeds -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=512 -timeout=5; \
	done

# Rewrites fuzz/seeds/ with the product's own encoders (fuzz/examples/seeds.rs): run it when a
# format changes and commit the result.
fuzz-seeds:
	cargo run --manifest-path fuzz/Cargo.toml --example seeds

fuzz-build: fuzz-tools
	$(if $(FUZZ_TARGETS),cargo +nightly fuzz build,@echo "no fuzz targets in fuzz/fuzz_targets")

# Everything a fresh machine with only rustup's stable toolchain needs for `make ci`. The
# end-to-end tests (tests/) drive the API with curl and check /metrics with promtool, which
# Debian ships in its prometheus package; myco-cli's init tests parse the generated flake.nix
# files with nix-bin's nix-instantiate --parse, which works offline; the DNS tests query with
# dig (dnsutils).
tools: nostd-tools fuzz-tools aarch64-tools deb-tools
	rustup component add rustfmt clippy
	command -v curl >/dev/null && command -v promtool >/dev/null \
		&& command -v nix-instantiate >/dev/null && command -v dig >/dev/null \
		&& command -v nft >/dev/null && command -v shellcheck >/dev/null \
		|| ($(APT) update -qq && $(APT) install -y -qq \
			--no-install-recommends curl prometheus nix-bin dnsutils nftables shellcheck)

# grep without -q reads all of rustup's output, so pipefail never sees rustup die of SIGPIPE.
nostd-tools:
	rustup target list --installed | grep -x $(NOSTD_TARGET) >/dev/null \
		|| rustup target add $(NOSTD_TARGET)

fuzz-tools:
	rustup toolchain list | grep '^nightly' >/dev/null \
		|| rustup toolchain install nightly --profile minimal
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# `systemd-analyze security --offline=yes` exposure of systemd/myco-d.service, times 10, that the
# unit may not exceed: the measured score, so weakening any one directive fails it. Measured: 1.2
# (systemd 252; issue 22's bar), as the user myco with no capability at all: myco-priv does what
# needs root, and systemd binds DNS's port 53 (myco-d-dns.socket) and passes the sockets. What
# remains: the network the daemon needs (PrivateNetwork 0.5, IPAddressDeny 0.2, AF_INET/AF_INET6
# 0.3, AF_UNIX 0.1), no PrivateUsers (0.2), the host's root and ProtectClock's read access to the
# RTC. (With CAP_NET_BIND_SERVICE held instead of the passed sockets it was 1.4; as root, 1.7.)
# The services it starts score 1.1 to 1.5 (docs/units.md).
SYSTEMD_SECURITY_MAX := 12
# The same gate for myco-priv.service, the privileged helper (issue 22). Measured (systemd 252):
# 0.7. It runs as root (0.4) without PrivateUsers (0.2), which writing units and talking to
# systemd need; the host's root, ProtectClock's RTC read and AF_UNIX are 0.1 each. It holds no
# capability, no IP socket (a private network namespace, AF_UNIX only), and writes only
# /etc/systemd/system.
PRIV_SECURITY_MAX := 7

# Verifies the units as installed next to the release binaries, and gates their exposure scores.
systemd-check:
	cargo build --release --bin myco-d --bin myco-priv
	systemd/check.sh $(TARGET_DIR)/release/myco-d $(SYSTEMD_SECURITY_MAX) myco-d.service myco-d-dns.socket
	systemd/check.sh $(TARGET_DIR)/release/myco-priv $(PRIV_SECURITY_MAX) myco-priv.service myco-priv.socket

# Boots the unit under a real systemd in a container and checks readiness, the dynamic user, the
# API socket, restarts and the watchdog (see systemd/nspawn-test.sh). Needs root. ~15 s, or ~80 s
# the first time on a machine, when it builds the container's root filesystem.
systemd-test:
	cargo build --release --bin myco-d --bin myco-priv --bin myco
	systemd/nspawn-test.sh $(TARGET_DIR)/release

# Boots myco-priv.socket and myco-priv.service under a real systemd in a container and talks to
# the helper as the daemon's user with the ignored test `under_a_real_systemd`
# (systemd/priv-nspawn-test.sh). Needs root. ~3 s once the root filesystem is cached.
PRIV_TEST_BINARY = $(shell cargo test -p myco-host --test privileged --no-run 2>&1 \
	| sed -n 's/.*Executable tests\/privileged.rs (\(.*\))/\1/p')
priv-systemd-test:
	cargo build --release --bin myco-priv --bin myco
	systemd/priv-nspawn-test.sh $(TARGET_DIR)/release/myco-priv $(PRIV_TEST_BINARY) \
		$(TARGET_DIR)/release/myco

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
# a `TESTBED ...` line. Then a good version rolled out in waves and a bad one held after the first
# (tests/testbed/rollout-test.sh): a `ROLLOUT ...` line. Then the golden path (tests/testbed/golden-test.sh): `myco init python`
# committed, deployed, built with Nix in the boxes, served by name, rolled out, a broken commit
# refused; a `GOLDEN ...` line. Then health checks (tests/testbed/health-test.sh): a service whose
# /healthz turns to 500 is restarted, leaves DNS and comes back; a `HEALTH ...` line. Then the
# links carrying IPv6 only (tests/testbed/ipv6-test.sh): gossip, a deploy, AAAA answers, the Nix
# cache and `myco proxy` over IPv6; an `IPV6 ...` line. Then two zones that bridge
# (tests/testbed/zones-test.sh): a deploy in zone 0 for zone 1 runs in zone 1 while membership
# stays in each zone; a `ZONES ...` line. Then a box behind a NAT router with two relays
# (tests/testbed/nat-test.sh): the NAT holds, deploys reach it and leave it, a relay dies; a
# `NAT ...` line; again behind a symmetric NAT (a random public port per peer) with box 3 started
# without --behind-nat, finding it out by itself (NAT_DETECT=1: `nat_detected_s` on its line). Then issue 16's peer-to-peer Nix cache and remote builder
# (tests/testbed/p2p-test.sh): box 0 --builder, box 2 --build remote; the boxes that did not build a
# version copy it from a peer's cache and build nothing, box 2 gets its builds from peers; a
# `P2P-TESTBED ...` line; then the same on links that carry IPv6 only. Then the caches under hostile
# conditions (tests/testbed/p2p-hostile-test.sh): the default upload throttle for one client and
# two, the NAR slots of clients cut mid-NAR, a tampered NAR refused, a revoked box's cache not
# used; a `P2P-HOSTILE ...` line. Then a builder for another system (tests/testbed/xsys-test.sh):
# an x86_64 --builder with aarch64-linux in extra-platforms builds an aarch64 board's output, which
# the board (--build remote) fetches; a `P2P-XSYS ...` line. Needs root.
# About 8 minutes (twelve runs, each booting its boxes; docs/install.md), more the first time on a machine (debootstrap).
# Ends with the self-healing summary (tests/testbed/rollout-line.sh): one ROLLOUT line from the
# figures the engine, rollout and health tests printed; and issue 16's P2P line from the two P2P
# tests' (tests/testbed/p2p-line.sh).
TESTBED_LOGS := $(TARGET_DIR)/testbed-logs
testbed-test:
	cargo build --release --bin myco-d --bin myco-priv --bin myco
	mkdir -p $(TESTBED_LOGS)
	tests/testbed/engine-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/engine.log
	tests/testbed/rollout-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/rollout.log
	tests/testbed/golden-test.sh $(TARGET_DIR)/release
	tests/testbed/health-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/health.log
	tests/testbed/ipv6-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/ipv6.log
	tests/testbed/zones-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/zones.log
	tests/testbed/nat-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/nat.log
	NAT_DETECT=1 TESTBED_NAT_PORTS=random tests/testbed/nat-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/nat-symmetric.log
	tests/testbed/p2p-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/p2p.log
	TESTBED_IPV6=yes tests/testbed/p2p-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/p2p-ipv6.log
	tests/testbed/p2p-hostile-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/p2p-hostile.log
	tests/testbed/xsys-test.sh $(TARGET_DIR)/release | tee $(TESTBED_LOGS)/p2p-xsys.log
	tests/testbed/rollout-line.sh $(TESTBED_LOGS)
	tests/testbed/p2p-line.sh $(TESTBED_LOGS)

# The README's first command: installs what it needs, builds, boots three boxes, deploys a
# service, powers off a box that runs it, shows it running elsewhere, cleans up. Needs root.
demo:
	tests/testbed/demo.sh

# --- installing (docs/install.md) ---------------------------------------------------------------

PREFIX ?= /usr/local
DESTDIR ?=
MAN_DIR := $(TARGET_DIR)/man
DEB_DIR := $(TARGET_DIR)/deb
DEB_VERSION = $(shell packaging/deb/build.sh --version)

# myco.1, myco-d.8 and myco.json.5 from the release binaries' --help and docs/myco-json.md (the
# generator is myco-testkit's `manpages`); groff must format each without a warning.
man:
	cargo build --release --bin myco-d --bin myco-priv --bin myco
	MYCO_BIN_DIR=$(TARGET_DIR)/release cargo run -q -p myco-testkit --bin manpages -- $(MAN_DIR) >/dev/null
	for page in $(MAN_DIR)/*; do \
		warnings=$$(LC_ALL=C.UTF-8 groff -man -Tutf8 -ww -z "$$page" 2>&1); \
		[[ -z $$warnings ]] || { echo "$$page: $$warnings"; exit 1; }; \
	done

# The binaries, the unit (ExecStart pointing at PREFIX/bin), man pages, bash and zsh completions
# and the example env and resolved files, under DESTDIR/PREFIX (packaging/install.sh).
install: man
	DESTDIR=$(DESTDIR) PREFIX=$(PREFIX) packaging/install.sh $(TARGET_DIR)/release $(MAN_DIR)

# myco_VERSION-1_amd64.deb and myco_VERSION-1_arm64.deb in DEB_DIR, each checked by lintian
# (errors and warnings fail; a warning judged acceptable is overridden, with why, in
# packaging/deb/lintian-overrides).
deb: deb-tools man aarch64-release
	packaging/deb/build.sh amd64 $(TARGET_DIR)/release $(MAN_DIR) $(DEB_DIR)
	COMPLETIONS_MYCO=$(TARGET_DIR)/release/myco packaging/deb/build.sh arm64 \
		$(TARGET_DIR)/$(ARM_TARGET)/release $(MAN_DIR) $(DEB_DIR)
	for arch in amd64 arm64; do \
		lintian --fail-on error,warning $(DEB_DIR)/myco_$(DEB_VERSION)_$$arch.deb; \
	done

deb-tools:
	command -v dpkg-deb >/dev/null && command -v lintian >/dev/null && command -v groff >/dev/null \
		|| ($(APT) update -qq && $(APT) install -y -qq \
			--no-install-recommends dpkg-dev lintian groff-base man-db)

# The amd64 package in a testbed box with real systemd: dpkg -i, configure, start, join two
# boxes, deploy; then apt-get remove and purge leave nothing behind (tests/testbed/package-test.sh).
# Needs root. Builds the packages first (`deb`), so the package tested is the tree's.
package-test: deb
	tests/testbed/package-test.sh $(DEB_DIR)/myco_$(DEB_VERSION)_amd64.deb $(TARGET_DIR)/release
