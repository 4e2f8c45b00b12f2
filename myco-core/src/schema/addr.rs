//! Peer addresses as the core sees them: an IPv6 address (IPv4 mapped) and a port.
//!
//! The core never opens sockets; it only names where a frame goes. The host converts to and from
//! `SocketAddr`, the simulator uses addresses as node numbers.

use serde::{Deserialize, Serialize};

#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct PeerAddr {
    pub ip: [u8; 16],
    pub port: u16,
}

impl PeerAddr {
    /// An IPv4 address, stored IPv4-mapped (`::ffff:a.b.c.d`).
    pub const fn v4(octets: [u8; 4], port: u16) -> PeerAddr {
        let mut ip = [0u8; 16];
        ip[10] = 0xff;
        ip[11] = 0xff;
        ip[12] = octets[0];
        ip[13] = octets[1];
        ip[14] = octets[2];
        ip[15] = octets[3];
        PeerAddr { ip, port }
    }

    /// The IPv4 octets if this is an IPv4-mapped address.
    pub fn as_v4(&self) -> Option<[u8; 4]> {
        let mapped =
            self.ip[..10].iter().all(|&b| b == 0) && self.ip[10] == 0xff && self.ip[11] == 0xff;
        mapped.then(|| [self.ip[12], self.ip[13], self.ip[14], self.ip[15]])
    }
}
