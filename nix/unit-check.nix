# Compares the unit the NixOS module declares (nix/unit.nix) with the unit the project ships
# (systemd/myco-d.service), using builtins only: `nix flake check` runs it as `checks.<system>.unit`
# and tests/nix/flake-check.sh evaluates it with nix-instantiate, also against altered copies of
# the shipped unit to prove that it notices a change.
#
# The reference box is a shipped install whose /etc/myco/myco-d.env sets MYCO_OPERATOR to
# `operator`, MYCO_ARGS to `args` below and MYCO_PRIV_ARGS to nothing (NixOS's Nix has build
# users and the sandbox, so its helper needs no --allow-root-builds). nix/unit.nix with the matching settings must render,
# section by section, the same directives with the same values in the same order, except for
# EnvironmentFile= (the module has none) and ExecStart=, which must be the shipped command line
# with the variables expanded and /usr/bin/myco-d replaced by the package's binary.
#
# Returns the list of differences, each a sentence; empty when the two agree.
#
# The DNS socket (nix/dns-socket.nix with the default addresses) is compared with
# systemd/myco-d-dns.socket, every directive.
#
# The helper's units (nix/priv-unit.nix) are compared the same way with systemd/myco-priv.socket
# and systemd/myco-priv.service, with the same reference box: all but EnvironmentFile=, the
# service's [Install] (Also=: the module enables the socket itself) and ExecStart=, which must be
# the shipped one expanded, followed by the module's --unit-dir.
{ unitText ? builtins.readFile ../systemd/myco-d.service
, unit ? import ./unit.nix
, privSocketText ? builtins.readFile ../systemd/myco-priv.socket
, privServiceText ? builtins.readFile ../systemd/myco-priv.service
, privUnit ? import ./priv-unit.nix
, dnsSocketText ? builtins.readFile ../systemd/myco-d-dns.socket
, dnsSocket ? import ./dns-socket.nix
}:
let
  package = "/nix/store/00000000000000000000000000000000-myco-0.1.0";
  operator = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
  args = "--listen [::]:7946 --join 192.0.2.10:7946 --join [2001:db8::10]:7946"
    + " --dns 127.0.0.1:53 --unit-dir /etc/systemd/system --verbose";
  rendered = unit {
    inherit package operator;
    joins = [ "192.0.2.10:7946" "[2001:db8::10]:7946" ];
    dns = [ "127.0.0.1:53" ];
    unitDir = "/etc/systemd/system";
    extraArgs = [ "--verbose" ];
  };
  unitDir = "/etc/systemd/system";
  privRendered = privUnit { inherit package operator unitDir; };

  # The shipped file as { Section = { Key = [ value ... ]; }; }, values in file order. Blank
  # lines and comments are skipped; the file has no line continuations.
  parse = text:
    let
      lines = builtins.filter builtins.isString (builtins.split "\n" text);
      step = state: line:
        let
          section = builtins.match "[[]([A-Za-z]+)[]]" line;
          directive = builtins.match "([A-Za-z]+)=(.*)" line;
          key = builtins.elemAt directive 0;
          old = state.units.${state.section} or { };
        in
        if section != null then state // { section = builtins.head section; }
        else if directive == null then state
        else state // {
          units = state.units // {
            ${state.section} = old // { ${key} = (old.${key} or [ ]) ++ [ (builtins.elemAt directive 1) ]; };
          };
        };
    in
    (builtins.foldl' step { section = "none"; units = { }; } lines).units;

  # The module's attributes as the same shape, the way NixOS writes them into the unit file: a
  # list becomes one line per element, `after`/`wantedBy` one space-separated line.
  asLines = builtins.mapAttrs (_: value: if builtins.isList value then value else [ value ]);
  declared = {
    Unit = asLines (rendered.unitConfig // {
      Description = rendered.description;
      After = builtins.concatStringsSep " " rendered.after;
      Wants = builtins.concatStringsSep " " rendered.wants;
    });
    Service = asLines rendered.serviceConfig;
    Install.WantedBy = [ (builtins.concatStringsSep " " rendered.wantedBy) ];
  };
  shipped = parse unitText;

  # The differences between a shipped FILE, parsed, and the declared sections, except the keys in
  # exempt (per section).
  compareFile = file: shippedUnit: declaredUnit: exempt:
    let
      compareSection = name:
        let
          want = builtins.removeAttrs (shippedUnit.${name} or { }) (exempt.${name} or [ ]);
          have = builtins.removeAttrs (declaredUnit.${name} or { }) (exempt.${name} or [ ]);
          keys = builtins.attrNames (want // have);
          show = values: if values == null then "nothing" else builtins.toJSON values;
        in
        builtins.concatMap
          (key: if (want.${key} or null) == (have.${key} or null) then [ ]
            else [ "[${name}] ${key}=: ${file} has ${show (want.${key} or null)}, the module has ${show (have.${key} or null)}" ])
          keys;
    in
    builtins.concatMap compareSection (builtins.attrNames (shippedUnit // declaredUnit));

  expectedExecStart = map
    (builtins.replaceStrings [ "/usr/bin/myco-d" "\${MYCO_OPERATOR}" "$MYCO_ARGS" ]
      [ "${package}/bin/myco-d" operator args ])
    (shipped.Service.ExecStart or [ ]);

  dnsRendered = dnsSocket { };
  dnsDeclared = {
    Unit = asLines (dnsRendered.unitConfig // { Description = dnsRendered.description; });
    Socket = asLines dnsRendered.socketConfig;
    Install.WantedBy = [ (builtins.concatStringsSep " " dnsRendered.wantedBy) ];
  };

  privSocket = parse privSocketText;
  privService = parse privServiceText;
  privDeclaredSocket = {
    Unit.Description = [ privRendered.socket.description ];
    Socket = asLines privRendered.socket.socketConfig;
    Install.WantedBy = [ (builtins.concatStringsSep " " privRendered.socket.wantedBy) ];
  };
  privDeclaredService = {
    Unit = asLines {
      Description = privRendered.service.description;
      Requires = builtins.concatStringsSep " " privRendered.service.requires;
      After = builtins.concatStringsSep " " privRendered.service.after;
    };
    Service = asLines privRendered.service.serviceConfig;
  };
  privExpectedExecStart = map
    (line: builtins.replaceStrings [ "/usr/bin/myco-priv" "\${MYCO_OPERATOR}" " $MYCO_PRIV_ARGS" ]
      [ "${package}/bin/myco-priv" operator "" ] line + " --unit-dir ${unitDir}")
    (privService.Service.ExecStart or [ ]);
in
compareFile "systemd/myco-d.service" shipped declared { Service = [ "EnvironmentFile" "ExecStart" ]; }
++ (if [ rendered.serviceConfig.ExecStart ] == expectedExecStart then [ ]
  else [ "[Service] ExecStart=: systemd/myco-d.service with MYCO_OPERATOR and MYCO_ARGS expanded is ${builtins.toJSON expectedExecStart}, nix/unit.nix has ${builtins.toJSON rendered.serviceConfig.ExecStart}" ])
++ (if shipped.Service ? EnvironmentFile && !(rendered.serviceConfig ? EnvironmentFile) then [ ]
  else [ "[Service] EnvironmentFile=: expected in systemd/myco-d.service and not in nix/unit.nix" ])
++ compareFile "systemd/myco-d-dns.socket" (parse dnsSocketText) dnsDeclared { }
++ compareFile "systemd/myco-priv.socket" privSocket privDeclaredSocket { }
++ compareFile "systemd/myco-priv.service" privService privDeclaredService
  { Service = [ "EnvironmentFile" "ExecStart" ]; Install = [ "Also" ]; }
++ (if [ privRendered.service.serviceConfig.ExecStart ] == privExpectedExecStart then [ ]
  else [ "[Service] ExecStart=: systemd/myco-priv.service expanded, with --unit-dir, is ${builtins.toJSON privExpectedExecStart}, nix/priv-unit.nix has ${builtins.toJSON privRendered.service.serviceConfig.ExecStart}" ])
