# The flake a Myco node builds for @NAME@ (myco.json names it under "flake" and "attr").
# Nodes run bin/@NAME@ from packages.<system>.default, so keep the program's name.
# Run `nix flake lock` once and commit flake.lock, so every node builds the same nixpkgs.
{
  description = "@NAME@: a small HTTP service (Python, standard library only)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.05";

  outputs = { self, nixpkgs }:
    let
      # The architectures Myco nodes run on; myco.json's "arch" may narrow this.
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        # A wrapper that runs server.py with nixpkgs' python3. Add Python dependencies by
        # switching to python3Packages.buildPythonApplication with a pyproject.toml.
        default = pkgs.writeShellApplication {
          name = "@NAME@";
          runtimeInputs = [ pkgs.python3 ];
          text = ''
            exec python3 ${./server.py} "$@"
          '';
        };
      });
    };
}
