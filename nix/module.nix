# The NixOS module `services.myco`: myco-d on this machine, under the same hardened unit as
# systemd/myco-d.service (the unit itself is nix/unit.nix, checked against that file), configured
# by options instead of /etc/myco/myco-d.env; as the system user myco, beside the privileged helper
# myco-priv with the units of systemd/myco-priv.socket and .service (nix/priv-unit.nix, checked the
# same way) and with its DNS sockets from systemd (nix/dns-socket.nix, systemd/myco-d-dns.socket), as the Debian package installs them (docs/architecture.md, "Least privilege").
#
# Invariant: the module adds nothing to the unit that nix/unit.nix does not declare; what is
# NixOS-specific lives in the option defaults (the unit directory) and in the settings outside the
# unit (firewall, resolved drop-in). A box's zone is not an option: it is part of the node's
# certificate (`myco cert --zone`), which the daemon reads, so a second setting could only
# disagree with it.
self:
{ config, lib, pkgs, ... }:
let
  cfg = config.services.myco;
  inherit (lib) mkOption types;
  port = builtins.match ".*:([0-9]+)" cfg.listen;
  helper = import ./priv-unit.nix {
    inherit (cfg) package operator unitDir;
    # The system's own systemd, named exactly: NixOS has no /usr/bin/systemctl to fall back on.
    systemctl = "${config.systemd.package}/bin/systemctl";
    journalctl = "${config.systemd.package}/bin/journalctl";
    systemdRun = "${config.systemd.package}/bin/systemd-run";
    nix = config.nix.package;
  };
in
{
  options.services.myco = {
    enable = lib.mkEnableOption "myco-d, the Myco daemon of this box";
    package = mkOption {
      type = types.package;
      default = self.packages.${pkgs.stdenv.hostPlatform.system}.default;
      defaultText = lib.literalExpression "myco.packages.\${pkgs.stdenv.hostPlatform.system}.default";
      description = "The package holding bin/myco-d and bin/myco-priv.";
    };
    operator = mkOption {
      type = types.strMatching "[0-9a-fA-F]{64}";
      example = "3b6a27bcceb6a42d62a3a8d02a6f0d73653215771de243a63ac048a18b59da29";
      description = "The cluster's operator public key, 64 hex digits (`myco pubkey --key operator.key`).";
    };
    joins = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "192.0.2.10:7946" "[2001:db8::10]:7946" ];
      description = "Peers to contact first (`--join`). Peers heard of since are remembered in the state directory.";
    };
    listen = mkOption {
      type = types.str;
      default = "[::]:7946";
      description = "The gossip UDP socket (`--listen`); `[::]` is dual stack.";
    };
    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open the UDP port of `listen` in the NixOS firewall, which peers need to reach this box.";
    };
    dns = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "127.0.0.1:53" ];
      description = "Addresses for `*.myco` DNS (`--dns`, at most two); empty means the daemon's default, 127.0.0.1:53 and [::1]:53; `[ \"off\" ]` turns it off.";
    };
    resolvedDomain = mkOption {
      type = types.bool;
      default = false;
      description = "Install systemd/myco-resolved.conf as a systemd-resolved drop-in, so that `*.myco` names resolve through myco-d's DNS on 127.0.0.1.";
    };
    stateDir = mkOption {
      type = types.str;
      default = "/var/lib/myco";
      description = "WAL, snapshots, peers and the disk reserve; a directory under /var/lib (systemd's StateDirectory=).";
    };
    unitDir = mkOption {
      type = types.str;
      default = "/run/systemd/system";
      description = "Where myco-priv writes the units of the services placed here (`--unit-dir` of both the daemon and the helper). NixOS owns /etc/systemd/system (a link into the read-only store), so the default is the runtime unit directory, which systemd also loads.";
    };
    keyFile = mkOption {
      type = types.str;
      default = "/etc/myco/node.key";
      description = "This node's key (`myco keygen`), root-only; systemd hands the daemon a private copy.";
    };
    certFile = mkOption {
      type = types.str;
      default = "/etc/myco/node.cert";
      description = "This node's certificate (`myco cert`), which also fixes its zone.";
    };
    extraArgs = mkOption {
      type = types.listOf types.str;
      default = [ ];
      example = [ "--reserve-bytes" "100000000" ];
      description = "Further myco-d flags (docs/daemon.md), one list element per word.";
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = [{
      assertion = port != null;
      message = "services.myco.listen must end in :PORT, got '${cfg.listen}'";
    }];
    systemd.services.myco-d = import ./unit.nix {
      inherit (cfg) package operator joins listen dns stateDir unitDir keyFile certFile extraArgs;
      nix = config.nix.package;
    };
    systemd.sockets.myco-priv = helper.socket;
    # Port 53 bound by systemd and passed to the daemon, which holds no capability.
    systemd.sockets.myco-d-dns = lib.mkIf (cfg.dns != [ "off" ]) (import ./dns-socket.nix {
      inherit (cfg) dns keyFile certFile;
    });
    systemd.services.myco-priv = helper.service;
    # A fixed system user, as systemd/myco.sysusers makes it elsewhere: the helper serves its uid
    # and its socket belongs to its group.
    users.users.myco = {
      isSystemUser = true;
      group = "myco";
      description = "Myco daemon";
    };
    users.groups.myco = { };
    # Where the helper's builds link their results, as systemd/myco.tmpfiles makes it: root's, so
    # the daemon cannot swap it for a link; the group myco deletes old roots in it.
    systemd.tmpfiles.rules = [ "d /var/lib/myco-gcroots 0770 root myco -" ];
    networking.firewall.allowedUDPPorts =
      lib.optionals (cfg.openFirewall && port != null) [ (builtins.fromJSON (builtins.head port)) ];
    environment.etc."systemd/resolved.conf.d/myco.conf" = lib.mkIf cfg.resolvedDomain {
      source = ../systemd/myco-resolved.conf;
    };
  };
}
