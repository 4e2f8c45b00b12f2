# The flake a Myco node builds for @NAME@ (myco.json names it under "flake" and "attr").
# Nodes run bin/@NAME@ from packages.<system>.default; buildGoModule names the program after the
# last element of the module path in go.mod, so keep it "@NAME@".
# Run `nix flake lock` once and commit flake.lock, so every node builds the same nixpkgs.
{
  description = "@NAME@: a small HTTP service (Go, standard library only)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.05";

  outputs = { self, nixpkgs }:
    let
      # The architectures Myco nodes run on; myco.json's "arch" may narrow this.
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        default = pkgs.buildGoModule {
          pname = "@NAME@";
          version = "0.1.0";
          src = ./.;
          # null while go.mod has no requirements. Once you add one, set this to
          # pkgs.lib.fakeHash, build, and paste the hash Nix prints instead.
          vendorHash = null;
        };
      });
    };
}
