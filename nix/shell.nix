# The development shell: the tools `make check` and `make ci` call, under the names the Makefile
# and the test scripts use. Rust itself comes from rustup, as on any other machine: the Makefile
# adds targets (thumbv7em-none-eabihf, aarch64-unknown-linux-gnu) and the nightly toolchain that
# cargo-fuzz needs with rustup commands, which nixpkgs' rustc cannot answer.
{ pkgs }:
let
  crossGcc = pkgs.pkgsCross.aarch64-multiplatform.buildPackages.gcc;
  # Debian's names for the aarch64 cross linker and qemu-user, which the Makefile calls.
  alias = name: target: pkgs.writeShellScriptBin name ''exec ${target} "$@"'';
in
pkgs.mkShell {
  name = "myco";
  packages = with pkgs; [
    rustup
    cargo-nextest
    cargo-fuzz
    gcc
    gnumake
    pkg-config
    crossGcc
    (alias "aarch64-linux-gnu-gcc" "${crossGcc}/bin/aarch64-unknown-linux-gnu-gcc")
    qemu
    (alias "qemu-aarch64-static" "${qemu}/bin/qemu-aarch64")
    curl
    prometheus
    nix
    dig
    systemd
    debootstrap
    iproute2
    util-linux
    procps
    dnsmasq
    dnsperf
    zstd
  ];
}
