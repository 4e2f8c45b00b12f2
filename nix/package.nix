# The three binaries, myco-d, myco-priv and myco, built by nixpkgs' Rust toolchain from this repository's sources
# and Cargo.lock (every dependency comes from crates.io, so no output hashes are needed).
{ lib, rustPlatform }:
let
  cargo = builtins.fromTOML (builtins.readFile ../Cargo.toml);
  # Build outputs and fuzzing state never belong in the source, whether the flake is read from a
  # git checkout (where they are untracked anyway) or from a plain directory.
  ignored = [ "target" "result" "testbed-cache" ];
in
rustPlatform.buildRustPackage {
  pname = "myco";
  inherit (cargo.workspace.package) version;
  src = lib.cleanSourceWith {
    src = lib.cleanSource ../.;
    filter = path: _type: !(builtins.elem (baseNameOf path) ignored);
  };
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--bin" "myco-d" "--bin" "myco-priv" "--bin" "myco" ];
  # The tests need what a build sandbox lacks: systemd, curl, promtool, root for some, and minutes
  # of simulator time. `make check` runs them; the package is the binaries they tested.
  doCheck = false;
  meta = {
    description = "Orchestrator for fleets of edge boxes: the daemon myco-d and the operator's tool myco";
    license = lib.licenses.asl20;
    mainProgram = "myco";
    platforms = lib.platforms.linux;
  };
}
