# A stand-in for nixpkgs, for offline tests: exactly what the `myco init` templates and Myco's own
# flake use, built from the host's own tools. Pass it with
# `--override-input nixpkgs git+file:///COPY-OF-THIS`.
#   lib                                           lib.nix: genAttrs, cleanSource, and the option
#                                                 functions and types the NixOS module uses
#   legacyPackages.<system>.python3               bin/python3, a link to the host's /usr/bin/python3
#   legacyPackages.<system>.writeShellApplication bin/NAME, a /bin/sh script running `text` with
#                                                 each runtime input's bin on PATH; and
#                                                 build-priority, the builder's nice value and
#                                                 I/O class as `nice` and `ionice` print them, so
#                                                 tests see the priority builds ran at
#   legacyPackages.<system>.writeShellScriptBin  the same, without runtime inputs
#   legacyPackages.<system>.rustPlatform.buildRustPackage, mkShell, runCommand
#                                                 derivations with the same arguments as nixpkgs'
#                                                 that only record them (the flake's outputs are
#                                                 evaluated, never built, in tests)
#   legacyPackages.<system>.callPackage           as in nixpkgs, without overriding
#   legacyPackages.<system>.<tool>, pkgsCross.aarch64-multiplatform.buildPackages.gcc
#                                                 empty packages named after the tools the
#                                                 development shell lists
# Builders run with no PATH, so every tool is called by its absolute path.
{
  outputs = { self }:
    let
      lib = import ./lib.nix;
      systems = [ "x86_64-linux" "aarch64-linux" ];
      # A derivation that builds an empty directory, for packages that are only named.
      empty = system: name: derivation {
        inherit name system;
        builder = "/bin/sh";
        args = [ "-c" "/bin/mkdir -p $out" ];
      };
      tools = [
        "cargo-nextest" "cargo-fuzz" "curl" "debootstrap" "dig" "dnsmasq" "dnsperf" "gcc"
        "gnumake" "iproute2" "nix" "pkg-config" "procps" "prometheus" "qemu" "rustup" "systemd"
        "util-linux" "zstd"
      ];
      pkgsFor = system: let pkgs = lib.genAttrs tools (empty system) // {
        inherit lib;
        stdenv.hostPlatform.system = system;
        pkgsCross.aarch64-multiplatform.buildPackages.gcc = empty system "aarch64-unknown-linux-gnu-gcc";
        callPackage = fn: args:
          let f = if builtins.isFunction fn then fn else import fn;
          in f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);
        rustPlatform.buildRustPackage = { pname, version, ... }@attrs:
          empty system "${pname}-${version}" // { passthru = attrs; };
        mkShell = { name ? "nix-shell", ... }: empty system name;
        runCommand = name: _env: script: derivation {
          inherit name system script;
          builder = "/bin/sh";
          args = [ "-c" "eval \"$script\"" ];
        };
        writeShellScriptBin = name: text: pkgs.writeShellApplication { inherit name text; };
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
              "/bin/mkdir -p $out/bin && printf '%s' \"$script\" > $out/bin/${name} && /bin/chmod +x $out/bin/${name} && { /usr/bin/nice; /usr/bin/ionice; } > $out/build-priority"
            ];
          };
      }; in pkgs;
    in
    {
      inherit lib;
      legacyPackages = lib.genAttrs systems pkgsFor;
    };
}
