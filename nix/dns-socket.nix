# myco-d's DNS sockets as the NixOS module declares them (`systemd.sockets.myco-d-dns`): systemd
# binds port 53 and passes the sockets, so the daemon holds no capability. A pure function of the
# module's settings, using builtins only, like nix/unit.nix.
#
# Invariant: with the default addresses, every directive equals systemd/myco-d-dns.socket's, word
# for word and in order; `nix/unit-check.nix` compares them. Other `dns` addresses become the
# sockets' addresses, as they become the daemon's --dns.
{ dns ? [ ]
, keyFile ? "/etc/myco/node.key"
, certFile ? "/etc/myco/node.cert"
}:
let
  # The daemon's own default --dns.
  addresses = if dns == [ ] then [ "127.0.0.1:53" "[::1]:53" ] else dns;
in
{
  description = "Myco daemon: *.myco DNS sockets on loopback";
  wantedBy = [ "sockets.target" ];
  unitConfig.ConditionPathExists = [ keyFile certFile ];
  socketConfig = {
    ListenDatagram = addresses;
    ListenStream = addresses;
    FreeBind = "yes";
    Service = "myco-d.service";
  };
}
