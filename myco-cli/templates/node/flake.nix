# The flake a Myco node builds for @NAME@ (myco.json names it under "flake" and "attr").
# Nodes run bin/@NAME@ from packages.<system>.default, so keep the program's name.
# Run `nix flake lock` once and commit flake.lock, so every node builds the same nixpkgs.
{
  description = "@NAME@: a small HTTP service (Node.js, no dependencies)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-24.05";

  outputs = { self, nixpkgs }:
    let
      # The architectures Myco nodes run on; myco.json's "arch" may narrow this.
      systems = [ "x86_64-linux" "aarch64-linux" ];
      forAllSystems = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAllSystems (pkgs: {
        # server.js copied next to package.json, with bin/@NAME@ running it under nixpkgs'
        # nodejs. Once package.json has dependencies, switch to pkgs.buildNpmPackage and set its
        # npmDepsHash (pkgs.lib.fakeHash first, then the hash Nix prints).
        default = pkgs.stdenv.mkDerivation {
          pname = "@NAME@";
          version = "0.1.0";
          src = ./.;
          nativeBuildInputs = [ pkgs.makeWrapper ];
          dontBuild = true;
          installPhase = ''
            runHook preInstall
            mkdir -p $out/lib/@NAME@ $out/bin
            cp server.js package.json $out/lib/@NAME@/
            makeWrapper ${pkgs.nodejs}/bin/node $out/bin/@NAME@ \
              --add-flags $out/lib/@NAME@/server.js
            runHook postInstall
          '';
        };
      });
    };
}
