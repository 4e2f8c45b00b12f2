# The privileged helper myco-priv as the NixOS module declares it: a pure function from the
# module's settings to the attributes of `systemd.sockets.myco-priv` and
# `systemd.services.myco-priv`, using builtins only, like nix/unit.nix.
#
# Invariant: with the settings of `nix/unit-check.nix`'s reference box, every directive equals
# the one in systemd/myco-priv.socket and systemd/myco-priv.service, word for word and in order,
# except EnvironmentFile= (the module's operator option replaces /etc/myco/myco-d.env), ExecStart=
# (the options become flags) and the service's [Install] Also= (the module enables the socket
# itself). `nix/unit-check.nix` compares them. The reasons for each directive are written once,
# in the shipped files.
{ package
, operator
, unitDir ? "/run/systemd/system"
, systemctl ? null
, journalctl ? null
, systemdRun ? null
  # The Nix the helper builds and collects with (its bin/nix, nix-store, nix-collect-garbage):
  # NixOS gives services a PATH without Nix.
, nix ? null
}:
let
  optionalFlag = name: value: if value == null then [ ] else [ name value ];
  args = [ "--operator" operator "--allow-user" "myco" "--gcroot-dir" "/var/lib/myco-gcroots" "--unit-dir" unitDir ]
    ++ optionalFlag "--systemctl" systemctl
    ++ optionalFlag "--journalctl" journalctl
    ++ optionalFlag "--systemd-run" systemdRun
    ++ (if nix == null then [ ] else [
      "--nix" "${nix}/bin/nix"
      "--nix-store" "${nix}/bin/nix-store"
      "--nix-collect-garbage" "${nix}/bin/nix-collect-garbage"
    ]);
in
{
  socket = {
    description = "Myco privileged helper socket";
    wantedBy = [ "sockets.target" ];
    socketConfig = {
      ListenStream = "/run/myco-priv.sock";
      SocketUser = "root";
      SocketGroup = "myco";
      SocketMode = "0660";
      Accept = "no";
      Backlog = "16";
    };
  };
  service = {
    description = "Myco privileged helper: unit files, systemctl and Nix for myco-d";
    requires = [ "myco-priv.socket" ];
    after = [ "myco-priv.socket" ];
    serviceConfig = {
      # Every word is a store path, a fixed flag, a hex key or a checked directory: none needs
      # quoting.
      ExecStart = builtins.concatStringsSep " " ([ "${package}/bin/myco-priv" ] ++ args);
      Restart = "always";
      RestartSec = "2s";

      MemoryMax = "32M";
      TasksMax = "32";
      OOMScoreAdjust = "-500";

      CapabilityBoundingSet = "";
      AmbientCapabilities = "";
      NoNewPrivileges = "yes";
      UMask = "0077";

      ProtectSystem = "strict";
      ReadWritePaths = unitDir;
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

      PrivateNetwork = "yes";
      IPAddressDeny = "any";
      RestrictAddressFamilies = "AF_UNIX";
      SystemCallArchitectures = "native";
      SystemCallFilter = [ "@system-service" "~@privileged @resources" ];
      SystemCallErrorNumber = "EPERM";

      StandardError = "journal";
    };
  };
}
