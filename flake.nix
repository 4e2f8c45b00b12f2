# Myco as a Nix flake: the two binaries, the NixOS module, the development shell and the checks.
# docs/nix.md says how to use each, and what tests/nix/flake-check.sh proves of them offline.
{
  description = "Myco: an orchestrator for fleets of edge boxes (myco-d and myco)";

  # rust-version in Cargo.toml is 1.85: nixos-25.05 is the first release with a rustc that new.
  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      # The boxes Myco runs on.
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forEachSystem = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forEachSystem (pkgs: rec {
        myco = pkgs.callPackage ./nix/package.nix { };
        default = myco;
      });

      nixosModules.default = import ./nix/module.nix self;

      devShells = forEachSystem (pkgs: {
        default = import ./nix/shell.nix { inherit pkgs; };
      });

      checks = forEachSystem (pkgs: {
        package = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        shell = self.devShells.${pkgs.stdenv.hostPlatform.system}.default;
        # Fails while evaluating, so `nix flake check --no-build` catches it too.
        unit =
          let differences = import ./nix/unit-check.nix { };
          in if differences == [ ]
          then pkgs.runCommand "myco-unit-matches-shipped" { } "echo ok > $out"
          else throw ("nix/unit.nix and systemd/myco-d.service differ:\n"
            + builtins.concatStringsSep "\n" differences);
      });
    };
}
