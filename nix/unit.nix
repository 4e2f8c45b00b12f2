# The systemd unit of myco-d as the NixOS module declares it: a pure function from the module's
# settings to the attributes of `systemd.services.myco-d` (description, after, wantedBy,
# unitConfig, serviceConfig), using builtins only so that tests evaluate it without nixpkgs.
#
# Invariant: with the settings of `nix/unit-check.nix`'s reference box, every directive equals
# the one in systemd/myco-d.service, word for word and in order, except two: EnvironmentFile=
# (the module's options replace /etc/myco/myco-d.env) and ExecStart= (the options become flags
# there instead of ${MYCO_OPERATOR} and $MYCO_ARGS). `nix/unit-check.nix` compares the two files,
# and it is a check of the flake, so they cannot drift apart. The reasons for each directive are
# written once, in systemd/myco-d.service.
{ package
, operator
, joins ? [ ]
, listen ? "[::]:7946"
, dns ? [ ]
, stateDir ? "/var/lib/myco"
, unitDir ? "/run/systemd/system"
, keyFile ? "/etc/myco/node.key"
, certFile ? "/etc/myco/node.cert"
, extraArgs ? [ ]
  # The Nix whose nix-store serves this box's cache and whose `nix show-config` names the systems
  # it builds for: on the daemon's PATH (NixOS gives services a PATH without Nix).
, nix ? null
}:
let
  stateRoot = "/var/lib/";
  stateDirectory =
    if builtins.substring 0 (builtins.stringLength stateRoot) stateDir == stateRoot
      && builtins.match "/var/lib/[^/][^ ]*" stateDir != null
    then builtins.substring (builtins.stringLength stateRoot) (-1) stateDir
    else throw "services.myco.stateDir must be a directory under /var/lib (systemd's StateDirectory=), got '${stateDir}'";
  # ExecStart= is split by systemd, not a shell: a word with nothing special stays bare, anything
  # else is double-quoted with `\` and `"` escaped, and `%` and `$` doubled so that systemd
  # expands neither specifiers nor variables in a value the operator wrote.
  escape = arg:
    if builtins.match "[]A-Za-z0-9_./:@+=,[-]+" arg != null then arg
    else "\"" + builtins.replaceStrings [ "\\" "\"" "%" "$" ] [ "\\\\" "\\\"" "%%" "$$" ] arg + "\"";
  flag = name: values: builtins.concatLists (map (value: [ name value ]) values);
  optionalFlag = name: value: if value == null then [ ] else [ name value ];
  # systemctl and journalctl are the helper's to run (nix/priv-unit.nix), not the daemon's.
  args = [ "--operator" operator "--privileged" "/run/myco-priv.sock" "--gcroot-dir" "/var/lib/myco-gcroots" ]
    ++ flag "--listen" [ listen ]
    ++ flag "--join" joins
    ++ flag "--dns" dns
    ++ flag "--unit-dir" [ unitDir ]
    ++ extraArgs;
in
assert builtins.length dns <= 2
  || throw "services.myco.dns: myco-d binds at most two DNS addresses, got ${toString (builtins.length dns)}";
{
  description = "Myco daemon: membership, gossip and service placement for this box";
  after = [ "network.target" "myco-priv.socket" "myco-d-dns.socket" ];
  wants = [ "myco-priv.socket" "myco-priv.service" "myco-d-dns.socket" ];
  wantedBy = [ "multi-user.target" ];
  path = if nix == null then [ ] else [ nix ];
  unitConfig = {
    StartLimitIntervalSec = "0";
    # As in the shipped unit: no start, and no restart loop, until the key and certificate exist.
    ConditionPathExists = [ keyFile certFile ];
  };
  serviceConfig = {
    Type = "notify";
    NotifyAccess = "main";
    ExecStart = builtins.concatStringsSep " " (map escape ([ "${package}/bin/myco-d" ] ++ args));
    Restart = "always";
    RestartSec = "2s";
    WatchdogSec = "30s";

    MemoryMax = "64M";
    TasksMax = "16";
    OOMScoreAdjust = "-500";

    User = "myco";
    Group = "myco";
    StateDirectory = stateDirectory;
    StateDirectoryMode = "0700";
    RuntimeDirectory = "myco";
    RuntimeDirectoryMode = "0750";
    LogsDirectory = "myco";
    LogsDirectoryMode = "0750";
    LoadCredential = [ "node.key:${keyFile}" "node.cert:${certFile}" ];
    UMask = "0077";

    CapabilityBoundingSet = "";
    AmbientCapabilities = "";
    NoNewPrivileges = "yes";
    ProtectSystem = "strict";
    ReadWritePaths = "/var/lib/myco-gcroots";
    ProtectHome = "yes";
    PrivateTmp = "yes";
    PrivateDevices = "yes";
    DevicePolicy = "closed";
    PrivateIPC = "yes";
    PrivateMounts = "yes";
    ProtectKernelTunables = "yes";
    ProtectKernelModules = "yes";
    ProtectKernelLogs = "yes";
    ProtectControlGroups = "yes";
    ProtectClock = "yes";
    ProtectHostname = "yes";
    ProtectProc = "invisible";
    ProcSubset = "pid";
    LockPersonality = "yes";
    MemoryDenyWriteExecute = "yes";
    RestrictRealtime = "yes";
    RestrictSUIDSGID = "yes";
    RemoveIPC = "yes";
    RestrictNamespaces = "yes";
    RestrictAddressFamilies = "AF_UNIX AF_INET AF_INET6";
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service io_uring_setup io_uring_enter io_uring_register"
      "~@privileged @resources"
    ];
    SystemCallErrorNumber = "EPERM";

    StandardError = "journal";
    SyslogLevelPrefix = "yes";
  };
}
