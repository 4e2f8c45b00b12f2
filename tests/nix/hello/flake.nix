# A flake with no inputs whose package builds offline in a fraction of a second: bin/hello, a
# shell script that prints "hello". Tests lock it, and build it, without nixpkgs or a network.
# Builders run with no PATH, so every tool is called by its absolute path.
{
  outputs = { self }: {
    packages.x86_64-linux.default = derivation {
      name = "hello";
      system = "x86_64-linux";
      builder = "/bin/sh";
      args = [
        "-c"
        "/bin/mkdir -p $out/bin; printf '#!/bin/sh\\necho hello\\n' > $out/bin/hello; /bin/chmod +x $out/bin/hello"
      ];
    };
  };
}
