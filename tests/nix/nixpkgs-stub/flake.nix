# A stand-in for nixpkgs, for offline tests: exactly what the `myco init` templates use, built
# from the host's own tools. Pass it with `--override-input nixpkgs git+file:///COPY-OF-THIS`.
#   lib.genAttrs                                  as in nixpkgs
#   legacyPackages.<system>.python3               bin/python3, a link to the host's /usr/bin/python3
#   legacyPackages.<system>.writeShellApplication bin/NAME, a /bin/sh script running `text` with
#                                                 each runtime input's bin on PATH
# Builders run with no PATH, so every tool is called by its absolute path.
{
  outputs = { self }:
    let
      systems = [ "x86_64-linux" "aarch64-linux" ];
      genAttrs = names: f: builtins.listToAttrs (map (name: { inherit name; value = f name; }) names);
      pkgsFor = system: {
        python3 = derivation {
          name = "python3-host";
          inherit system;
          builder = "/bin/sh";
          args = [ "-c" "/bin/mkdir -p $out/bin && /bin/ln -s /usr/bin/python3 $out/bin/python3" ];
        };
        writeShellApplication = { name, runtimeInputs ? [ ], text }:
          derivation {
            inherit name system;
            builder = "/bin/sh";
            script = ''
              #!/bin/sh
              set -eu
              export PATH="${builtins.concatStringsSep ":" (map (p: "${p}/bin") runtimeInputs)}:$PATH"
              ${text}
            '';
            args = [
              "-c"
              "/bin/mkdir -p $out/bin && printf '%s' \"$script\" > $out/bin/${name} && /bin/chmod +x $out/bin/${name}"
            ];
          };
      };
    in
    {
      lib = { inherit genAttrs; };
      legacyPackages = genAttrs systems pkgsFor;
    };
}
