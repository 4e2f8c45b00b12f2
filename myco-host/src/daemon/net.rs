//! The daemon's sockets: the gossip UDP socket, the API's Unix listener, and the conversions
//! between the kernel's addresses and the core's `PeerAddr` (IPv6, IPv4 mapped).

use myco_core::PeerAddr;
use nix::sys::socket::{
    bind, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage,
};
use std::fs;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;

/// The API socket's mode: the owner and the operators' group may deploy, nobody else.
pub const SOCKET_MODE: u32 = 0o660;

pub fn peer_addr(addr: SocketAddr) -> PeerAddr {
    match addr {
        SocketAddr::V4(a) => PeerAddr::v4(a.ip().octets(), a.port()),
        SocketAddr::V6(a) => PeerAddr {
            ip: a.ip().octets(),
            port: a.port(),
        },
    }
}

/// This box's own addresses with the bound `port`, for `--nat auto` (`node::natobs` in the core):
/// every interface's address when `getifaddrs` works (IPv4, then IPv6 but link-local: peers meet
/// the box at routable addresses), and the source address the kernel picks towards each of
/// `towards` (the join addresses) and towards any global address of each family. `getifaddrs`
/// needs a netlink socket, which the hardened unit refuses (`RestrictAddressFamilies`); the
/// routes' source addresses need none (a UDP `connect` only looks up the route, it sends
/// nothing) and are exactly where the box's frames leave from, which is what peers compare.
/// A socket bound to one address (`--listen 10.0.0.5:7946`) sends from that address alone,
/// whatever the routes say, so that address comes first: without it, a box bound to 127.0.0.7
/// (as the test clusters are) is seen at an address its routes never name (they pick 127.0.0.1)
/// and would take itself for a box behind NAT.
/// Duplicates left out; the core keeps the first `OWN_ADDRS_MAX`.
pub fn own_addrs(listen: SocketAddr, towards: &[SocketAddr]) -> Vec<PeerAddr> {
    let port = listen.port();
    let bound = (!listen.ip().is_unspecified()).then(|| peer_addr(listen));
    let mut list: Vec<PeerAddr> = bound.into_iter().collect();
    list.extend(interface_addrs(port).unwrap_or_default());
    // Documentation addresses (RFC 5737, RFC 3849): never a peer, routed by the default route.
    let global = [
        SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)), 7946),
        SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
            7946,
        ),
    ];
    for to in towards.iter().chain(&global) {
        if let Some(ip) = source_towards(*to) {
            list.push(peer_addr(SocketAddr::new(ip, port)));
        }
    }
    let mut seen = std::collections::HashSet::new();
    list.retain(|a| seen.insert(*a));
    list
}

/// Every interface's address but IPv6 link-local ones, IPv4 first.
fn interface_addrs(port: u16) -> io::Result<Vec<PeerAddr>> {
    let mut list: Vec<PeerAddr> = Vec::new();
    let mut v6 = Vec::new();
    for ifa in nix::ifaddrs::getifaddrs()? {
        let Some(a) = ifa.address else { continue };
        if let Some(s) = a.as_sockaddr_in() {
            list.push(PeerAddr::v4(s.ip().octets(), port));
        } else if let Some(s) = a.as_sockaddr_in6() {
            if s.ip().segments()[0] & 0xffc0 != 0xfe80 {
                let ip = s.ip().octets();
                v6.push(PeerAddr { ip, port });
            }
        }
    }
    list.extend(v6);
    Ok(list)
}

/// The source address this host's routes give a datagram to `to`; None without a route.
fn source_towards(to: SocketAddr) -> Option<IpAddr> {
    let any = match to {
        SocketAddr::V4(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
        SocketAddr::V6(_) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
    };
    let socket = UdpSocket::bind(any).ok()?;
    socket.connect(to).ok()?;
    Some(socket.local_addr().ok()?.ip()).filter(|ip| !ip.is_unspecified())
}

/// Where to send to `peer` from a socket of this family: an IPv4-only socket cannot reach an
/// IPv6 peer (`None`); a dual-stack socket reaches IPv4 peers through their mapped address.
pub fn socket_addr(peer: PeerAddr, ipv6_socket: bool) -> Option<SocketAddr> {
    if ipv6_socket {
        let ip = Ipv6Addr::from(peer.ip);
        return Some(SocketAddr::V6(SocketAddrV6::new(ip, peer.port, 0, 0)));
    }
    let [a, b, c, d] = peer.as_v4()?;
    Some(SocketAddr::V4(SocketAddrV4::new(
        Ipv4Addr::new(a, b, c, d),
        peer.port,
    )))
}

/// How addresses show in the API and logs: IPv4-mapped peers as plain IPv4.
pub fn display_addr(peer: PeerAddr) -> SocketAddr {
    match peer.as_v4() {
        Some([a, b, c, d]) => SocketAddr::new(IpAddr::V4(Ipv4Addr::new(a, b, c, d)), peer.port),
        None => SocketAddr::new(IpAddr::V6(Ipv6Addr::from(peer.ip)), peer.port),
    }
}

/// Binds the gossip socket, non-blocking. An IPv6 address is dual stack whatever the host's
/// `net.ipv6.bindv6only` says, so `[::]:7946` hears IPv4 peers too; an IPv4 address is IPv4 only.
pub fn bind_udp(listen: SocketAddr) -> io::Result<UdpSocket> {
    let family = match listen {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let flags = SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC;
    let fd = socket(family, SockType::Datagram, flags, None)?;
    if listen.is_ipv6() {
        setsockopt(&fd, sockopt::Ipv6V6Only, &false)?;
    }
    bind(fd.as_raw_fd(), &SockaddrStorage::from(listen))?;
    Ok(UdpSocket::from(fd))
}

/// `bind_udp`, retried for up to a second while the address is in use: after a crash the kernel
/// may still hold the old process's port while it tears down its io_uring, and systemd restarts
/// the daemon at once.
pub fn bind_udp_retrying(listen: SocketAddr) -> io::Result<UdpSocket> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(1);
    loop {
        match bind_udp(listen) {
            Err(e)
                if e.kind() == io::ErrorKind::AddrInUse && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            result => return result,
        }
    }
}

/// Binds the API socket, non-blocking, mode `SOCKET_MODE`. A socket file left by a daemon that
/// died is replaced; one that still answers belongs to a running daemon, and that is an error.
pub fn bind_api(path: &Path) -> io::Result<UnixListener> {
    if let Ok(meta) = fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(io::Error::other(format!(
                "{} exists and is not a socket; move it away or pass another --socket",
                path.display()
            )));
        }
        if answers(path) {
            return Err(io::Error::other(format!(
                "another myco-d answers on {}; stop it or pass another --socket",
                path.display()
            )));
        }
        fs::remove_file(path)?;
    }
    let listener = UnixListener::bind(path)?;
    listener.set_nonblocking(true)?;
    fs::set_permissions(path, fs::Permissions::from_mode(SOCKET_MODE))?;
    Ok(listener)
}

/// Whether a daemon answers `/health` on `path`. Accepting a connection is not enough: a killed
/// daemon's listener may linger while the kernel tears down its io_uring, queueing connections
/// nobody will ever read.
fn answers(path: &Path) -> bool {
    let Ok(mut stream) = UnixStream::connect(path) else {
        return false;
    };
    let timeout = Some(std::time::Duration::from_secs(1));
    let asked = stream.set_read_timeout(timeout).is_ok()
        && stream.set_write_timeout(timeout).is_ok()
        && stream
            .write_all(b"GET /health HTTP/1.1\r\nConnection: close\r\n\r\n")
            .is_ok();
    let mut head = [0u8; 5];
    asked && stream.read_exact(&mut head).is_ok() && &head == b"HTTP/"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The source address towards a join address is among the box's own, with the bound port:
    /// towards loopback, 127.0.0.1 (found without netlink, as under the hardened unit).
    #[test]
    fn own_addrs_include_the_source_towards_each_join_address() {
        let towards = [SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9)];
        let any = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 7000);
        let own = own_addrs(any, &towards);
        assert!(own.contains(&PeerAddr::v4([127, 0, 0, 1], 7000)), "{own:?}");
        assert_eq!(
            source_towards(towards[0]),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
    }

    /// A box bound to one address counts it as its own, first, though no route names it
    /// (towards 127.0.0.1 the source is 127.0.0.1, not the bound 127.0.0.7).
    #[test]
    fn own_addrs_start_with_the_bound_address() {
        let bound: SocketAddr = "127.0.0.7:7000".parse().unwrap();
        let towards = [SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9)];
        let own = own_addrs(bound, &towards);
        assert_eq!(
            own.first(),
            Some(&PeerAddr::v4([127, 0, 0, 7], 7000)),
            "{own:?}"
        );
        assert!(own.contains(&PeerAddr::v4([127, 0, 0, 1], 7000)), "{own:?}");
    }

    #[test]
    fn addresses_round_trip_through_the_core_form() {
        let v4: SocketAddr = "127.0.0.1:7946".parse().unwrap();
        let v6: SocketAddr = "[fd00::2]:7000".parse().unwrap();
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:7946".parse().unwrap();
        assert_eq!(peer_addr(v4), peer_addr(mapped), "one peer, one address");
        assert_eq!(display_addr(peer_addr(mapped)), v4);
        assert_eq!(display_addr(peer_addr(v6)), v6);
        assert_eq!(socket_addr(peer_addr(v4), false), Some(v4));
        assert_eq!(socket_addr(peer_addr(v4), true), Some(mapped));
        assert_eq!(socket_addr(peer_addr(v6), false), None);
    }

    #[test]
    fn dual_stack_socket_hears_ipv4() {
        let server = bind_udp("[::1]:0".parse().unwrap());
        // Loopback IPv6 may be absent in a minimal namespace; the IPv4 path is what matters then.
        let Ok(server) = server else { return };
        let any = bind_udp("[::]:0".parse().unwrap()).unwrap();
        let port = any.local_addr().unwrap().port();
        let client = UdpSocket::bind("127.0.0.1:0").unwrap();
        client.send_to(b"hi", ("127.0.0.1", port)).unwrap();
        let mut buf = [0u8; 8];
        any.set_nonblocking(false).unwrap();
        let (n, from) = any.recv_from(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi");
        assert_eq!(display_addr(peer_addr(from)), client.local_addr().unwrap());
        drop(server);
    }

    #[test]
    fn api_socket_refuses_a_live_daemon_and_replaces_a_dead_one() {
        let dir = myco_testkit::TempDir::new("net");
        let path = dir.join("api.sock");
        let first = bind_api(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, SOCKET_MODE);
        assert!(
            bind_api(&path).is_ok(),
            "a socket nobody answers on is stale"
        );
        let live = bind_api(&path).unwrap();
        live.set_nonblocking(false).unwrap();
        let answering = std::thread::spawn(move || {
            let (mut s, _) = live.accept().unwrap();
            let mut head = [0u8; 16];
            let _ = s.read(&mut head);
            s.write_all(b"HTTP/1.1 200 OK\r\n\r\n").unwrap();
            live
        });
        assert!(
            bind_api(&path).is_err(),
            "a socket a daemon answers on is not taken over"
        );
        drop(answering.join().unwrap());
        drop(first);
        bind_api(&path).expect("a dead socket is replaced");
    }
}
