# Evaluates nix/module.nix offline, without nixpkgs' module system: a stand-in evaluator fills
# each option from the settings or its default, refuses a value of the wrong type (with the type
# checks of nixpkgs-stub/lib.nix) or an option the module does not declare, and resolves mkIf.
# Merging with other modules is not modelled: each case is the module alone.
#
# Proves that the module's options reach the unit and the system settings: disabled it declares
# nothing; with defaults it runs the package's myco-d under nix/unit.nix's unit (the unit that
# nix/unit-check.nix compares with systemd/myco-d.service) and the NixOS unit directory; each
# option becomes its flag or setting; and bad settings are refused at evaluation, not at boot.
#
# `nix-instantiate --eval --strict --json tests/nix/eval-module.nix` prints the failures, each a
# sentence: `[]` when every case holds (tests/nix/flake-check.sh requires that).
let
  lib = import ./nixpkgs-stub/lib.nix;
  package = { type = "derivation"; name = "myco-0.1.0"; outPath = "/nix/store/00000000000000000000000000000000-myco-0.1.0"; };
  bin = "${package.outPath}/bin/myco-d";
  pkgs = { stdenv.hostPlatform.system = "x86_64-linux"; };
  module = import ../../nix/module.nix { packages.x86_64-linux.default = package; };
  systemd = { type = "derivation"; name = "systemd-257"; outPath = "/nix/store/00000000000000000000000000000000-systemd-257"; };
  nix = { type = "derivation"; name = "nix-2.28"; outPath = "/nix/store/00000000000000000000000000000000-nix-2.28"; };
  # What the helper's ExecStart= ends with: the system's own systemd.
  tools = "--systemctl ${systemd.outPath}/bin/systemctl --journalctl ${systemd.outPath}/bin/journalctl"
    + " --systemd-run ${systemd.outPath}/bin/systemd-run"
    + " --nix ${nix.outPath}/bin/nix --nix-store ${nix.outPath}/bin/nix-store"
    + " --nix-collect-garbage ${nix.outPath}/bin/nix-collect-garbage";
  helperBin = "${package.outPath}/bin/myco-priv";
  operator = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";

  # mkIf false leaves nothing behind; derivations and paths are values, not option trees.
  withoutNulls = attrs: builtins.removeAttrs attrs
    (builtins.filter (name: attrs.${name} == null) (builtins.attrNames attrs));
  resolve = value:
    if builtins.isAttrs value && (value._type or null) == "if" then
      (if value.condition then resolve value.content else null)
    else if builtins.isAttrs value && !(value ? outPath) then
      withoutNulls (builtins.mapAttrs (_: resolve) value)
    else value;

  eval = settings:
    let
      evaluated = module { inherit lib pkgs; config = { services.myco = cfg; systemd.package = systemd; nix.package = nix; }; };
      options = evaluated.options.services.myco;
      fill = name: option:
        let value = settings.${name} or option.default or (throw "services.myco.${name} has no value");
        in if option.type.check value then value
        else throw "services.myco.${name}: ${builtins.toJSON value} is not a ${option.type.name}";
      cfg = builtins.mapAttrs fill options;
      unknown = builtins.filter (name: !(options ? ${name})) (builtins.attrNames settings);
    in
    if unknown == [ ] then (let config = resolve evaluated.config; in if config == null then { } else config)
    else throw "services.myco has no option ${builtins.concatStringsSep ", " unknown}";

  unitOf = settings: (eval settings).systemd.services.myco-d;
  helperOf = settings: (eval settings).systemd.services.myco-priv;
  refused = settings: !(builtins.tryEval (builtins.deepSeq (eval settings) true)).success;
  failedAssertions = settings:
    map (a: a.message) (builtins.filter (a: !a.assertion) (eval settings).assertions);
  full = {
    enable = true;
    inherit operator;
    joins = [ "192.0.2.10:7946" "[2001:db8::10]:7946" ];
    listen = "0.0.0.0:7000";
    openFirewall = true;
    dns = [ "127.0.0.1:5353" ];
    resolvedDomain = true;
    stateDir = "/var/lib/myco-edge";
    unitDir = "/etc/myco-units";
    keyFile = "/run/secrets/node.key";
    certFile = "/run/secrets/node.cert";
    extraArgs = [ "--reserve-bytes" "0" "--verbose" ];
  };

  # Each case: a sentence saying what should hold, and whether it does.
  cases = [
    [ "disabled, the module declares nothing" (eval { } == { }) ]
    [ "enabled with only an operator, myco-d runs from the package through the helper with the NixOS unit directory"
      ((unitOf { enable = true; inherit operator; }).serviceConfig.ExecStart
        == "${bin} --operator ${operator} --privileged /run/myco-priv.sock --gcroot-dir /var/lib/myco-gcroots --listen [::]:7946 --unit-dir /run/systemd/system") ]
    [ "enabled with defaults, the unit is nix/unit.nix's with the same settings"
      (unitOf { enable = true; inherit operator; }
        == import ../../nix/unit.nix { inherit package operator nix; }) ]
    [ "enabled, the system's Nix is on myco-d's PATH (its nix-store serves the cache)"
      ((unitOf { enable = true; inherit operator; }).path == [ nix ]) ]
    [ "enabled, myco-priv runs from the package for the user myco, with the same unit directory, the system's systemctl, journalctl and systemd-run, and the system's Nix"
      ((helperOf { enable = true; inherit operator; }).serviceConfig.ExecStart
        == "${helperBin} --operator ${operator} --allow-user myco --gcroot-dir /var/lib/myco-gcroots --unit-dir /run/systemd/system ${tools}") ]
    [ "enabled, the helper's socket and service are nix/priv-unit.nix's, and the user and group myco exist"
      (let c = eval { enable = true; inherit operator; };
           h = import ../../nix/priv-unit.nix {
             inherit package operator;
             systemctl = "${systemd}/bin/systemctl";
             journalctl = "${systemd}/bin/journalctl";
             systemdRun = "${systemd}/bin/systemd-run";
             inherit nix;
           };
       in c.systemd.sockets.myco-priv == h.socket && c.systemd.services.myco-priv == h.service
         && c.users.users.myco.isSystemUser && c.users.users.myco.group == "myco"
         && c.users.groups ? myco
         && c.systemd.tmpfiles.rules == [ "d /var/lib/myco-gcroots 0770 root myco -" ] && (unitOf { enable = true; inherit operator; }).serviceConfig.User == "myco") ]
    [ "with defaults, no port is opened and no resolved drop-in is installed"
      (let c = eval { enable = true; inherit operator; };
       in c.networking.firewall.allowedUDPPorts == [ ] && !(c.environment.etc ? "systemd/resolved.conf.d/myco.conf")) ]
    [ "every option becomes its flag, in the documented order"
      ((unitOf full).serviceConfig.ExecStart == "${bin} --operator ${operator} --privileged /run/myco-priv.sock"
        + " --gcroot-dir /var/lib/myco-gcroots --listen 0.0.0.0:7000 --join 192.0.2.10:7946 --join [2001:db8::10]:7946 --dns 127.0.0.1:5353"
        + " --unit-dir /etc/myco-units --reserve-bytes 0 --verbose") ]
    [ "the state, unit, key and certificate paths reach the sandbox"
      (let s = (unitOf full).serviceConfig;
       in s.StateDirectory == "myco-edge" && (helperOf full).serviceConfig.ReadWritePaths == "/etc/myco-units"
         && s.LoadCredential == [ "node.key:/run/secrets/node.key" "node.cert:/run/secrets/node.cert" ]) ]
    [ "the DNS socket listens on the daemon's default addresses, on the dns option's, and is not declared with dns off"
      ((eval { enable = true; inherit operator; }).systemd.sockets.myco-d-dns.socketConfig.ListenStream == [ "127.0.0.1:53" "[::1]:53" ]
        && (eval full).systemd.sockets.myco-d-dns.socketConfig.ListenDatagram == [ "127.0.0.1:5353" ]
        && !((eval { enable = true; inherit operator; dns = [ "off" ]; }).systemd.sockets ? myco-d-dns)
        && (eval full).systemd.sockets.myco-d-dns.unitConfig.ConditionPathExists == [ "/run/secrets/node.key" "/run/secrets/node.cert" ]) ]
    [ "openFirewall opens the UDP port of listen"
      ((eval full).networking.firewall.allowedUDPPorts == [ 7000 ]) ]
    [ "resolvedDomain installs the shipped resolved drop-in"
      (baseNameOf (eval full).environment.etc."systemd/resolved.conf.d/myco.conf".source == "myco-resolved.conf") ]
    [ "an operator key that is not 64 hex digits is refused"
      (refused { enable = true; operator = "3b6a27"; }) ]
    [ "a missing operator key is refused" (refused { enable = true; }) ]
    [ "an option the module does not have (zone: the certificate holds it) is refused"
      (refused { enable = true; inherit operator; zone = 3; }) ]
    [ "a state directory outside /var/lib is refused"
      (refused { enable = true; inherit operator; stateDir = "/srv/myco"; }) ]
    [ "more than two DNS addresses are refused"
      (refused { enable = true; inherit operator; dns = [ "127.0.0.1:53" "[::1]:53" "127.0.0.2:53" ]; }) ]
    [ "a listen address without a port fails an assertion"
      (failedAssertions { enable = true; inherit operator; listen = "[::]"; } != [ ]) ]
    [ "arguments with spaces, % or $ reach myco-d as one word each, unexpanded"
      ((unitOf { enable = true; inherit operator; extraArgs = [ "--revocation" "/etc/my co/r%i$X" ]; }).serviceConfig.ExecStart
        == "${bin} --operator ${operator} --privileged /run/myco-priv.sock --gcroot-dir /var/lib/myco-gcroots --listen [::]:7946 --unit-dir /run/systemd/system --revocation \"/etc/my co/r%%i$$X\"") ]
  ];
in
map builtins.head (builtins.filter (case: !(builtins.elemAt case 1)) cases)
