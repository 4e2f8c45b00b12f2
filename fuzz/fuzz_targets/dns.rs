//! Fuzzes `dns::answer` on arbitrary bytes as a query against a small directory.
//!
//! Proves that no query panics the DNS parser or answer writer, over UDP and TCP and into output
//! buffers of any size, and that every response parses back as a whole message: a response to
//! the query's ID within the transport's limit, whose records all carry a TTL of at most 5 s.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::dns::{self, Directory, Section, Transport};
use myco_core::schema::entry::Protocol;
use myco_core::PeerAddr;

struct Small;

impl Directory for Small {
    fn instances(&self, name: &str, out: &mut dyn FnMut(PeerAddr)) -> bool {
        match name {
            "web" => {
                (0..40).for_each(|i| out(PeerAddr::v4([10, 0, 0, i], 0)));
                let mut ip = [0u8; 16];
                ip[0] = 0xfd;
                (0..40).for_each(|i| {
                    ip[15] = i;
                    out(PeerAddr { ip, port: 0 })
                });
                true
            }
            "db" => true,
            _ => false,
        }
    }
    fn ports(&self, name: &str, out: &mut dyn FnMut(u16, Protocol)) {
        if name == "web" {
            out(80, Protocol::Tcp);
            out(443, Protocol::Tcp);
            out(53, Protocol::Udp);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // The first byte picks the transport and the output buffer's size; the rest is the query.
    let Some((&knob, query)) = data.split_first() else {
        return;
    };
    let transport = if knob & 1 == 0 {
        Transport::Udp
    } else {
        Transport::Tcp
    };
    let mut out = vec![0u8; dns::TCP_BYTES_MAX];
    let out_len = if knob & 2 == 0 {
        out.len()
    } else {
        usize::from(knob) * 4
    };
    let Some(n) = dns::answer(query, transport, &Small, &mut out[..out_len]) else {
        return;
    };
    assert!(n <= out_len);
    let limit = match transport {
        Transport::Udp => dns::UDP_BYTES_MAX,
        Transport::Tcp => dns::TCP_BYTES_MAX,
    };
    assert!(
        n <= limit,
        "response of {n} bytes over the {limit}-byte limit"
    );
    let header = dns::parse_message(&out[..n], &mut |section, record| {
        if record.rtype != dns::TYPE_OPT {
            assert!(record.ttl <= dns::TTL_S);
        } else {
            assert_eq!(section, Section::Additional);
        }
    })
    .expect("every response parses back");
    let asked = dns::Header::new_checked(query).expect("only a header is answered");
    assert!(header.response());
    assert_eq!(header.id, asked.id);
    assert_eq!(header.opcode(), asked.opcode());
    assert_eq!(header.recursion_desired(), asked.recursion_desired());
    assert!(header.qdcount <= 1);
});
