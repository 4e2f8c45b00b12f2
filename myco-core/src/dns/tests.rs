//! The answerer against a fixed directory. Every response is parsed back and checked for the
//! invariants all responses keep (ID, QR, RD, TTL, the transport limit), besides what each test
//! proves.

use super::*;
use crate::random::Prng;
use crate::schema::entry::Port;

struct Service {
    name: &'static str,
    addrs: &'static [PeerAddr],
    ports: &'static [Port],
}

struct TestDir {
    services: &'static [Service],
}

impl Directory for TestDir {
    fn instances(&self, name: &str, out: &mut dyn FnMut(PeerAddr)) -> bool {
        let Some(s) = self.services.iter().find(|s| s.name == name) else {
            return false;
        };
        s.addrs.iter().for_each(|&a| out(a));
        true
    }
    fn ports(&self, name: &str, out: &mut dyn FnMut(u16, Protocol)) {
        for s in self.services.iter().filter(|s| s.name == name) {
            s.ports.iter().for_each(|p| out(p.number, p.protocol));
        }
    }
}

const fn v4(i: usize) -> PeerAddr {
    PeerAddr::v4([10, 0, (i / 256) as u8, (i % 256) as u8], 0)
}

const fn v6(i: usize) -> PeerAddr {
    let mut ip = [0u8; 16];
    ip[0] = 0xfd;
    ip[15] = i as u8;
    PeerAddr { ip, port: 0 }
}

const MANY: usize = 200;
const MANY_ADDRS: [PeerAddr; 2 * MANY] = {
    let mut a = [PeerAddr {
        ip: [0; 16],
        port: 0,
    }; 2 * MANY];
    let mut i = 0;
    while i < MANY {
        a[i] = v4(i);
        a[MANY + i] = v6(i);
        i += 1;
    }
    a
};
const WEB_ADDRS: [PeerAddr; 2] = [v4(1), v6(1)];
const FIVE_ADDRS: [PeerAddr; 5] = [v4(10), v4(11), v4(12), v4(13), v4(14)];
const WEB_PORTS: [Port; 3] = [
    Port {
        number: 80,
        protocol: Protocol::Tcp,
    },
    Port {
        number: 443,
        protocol: Protocol::Tcp,
    },
    Port {
        number: 5353,
        protocol: Protocol::Udp,
    },
];
const DIR: TestDir = TestDir {
    services: &[
        Service {
            name: "web",
            addrs: &WEB_ADDRS,
            ports: &WEB_PORTS,
        },
        Service {
            name: "many",
            addrs: &MANY_ADDRS,
            ports: &[],
        },
        Service {
            name: "five",
            addrs: &FIVE_ADDRS,
            ports: &[],
        },
        Service {
            name: "idle",
            addrs: &[],
            ports: &[],
        },
    ],
};

/// Builds a query for `name` (dotted, no trailing dot) into `buf`.
fn query(buf: &mut [u8; 512], name: &str, qtype: u16, edns: Option<(u16, u8)>) -> usize {
    buf[..12].copy_from_slice(&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    let mut n = 12;
    for label in name.split('.').filter(|l| !l.is_empty()) {
        buf[n] = label.len() as u8;
        buf[n + 1..n + 1 + label.len()].copy_from_slice(label.as_bytes());
        n += 1 + label.len();
    }
    buf[n] = 0;
    buf[n + 1..n + 3].copy_from_slice(&qtype.to_be_bytes());
    buf[n + 3..n + 5].copy_from_slice(&CLASS_IN.to_be_bytes());
    n += 5;
    if let Some((payload, version)) = edns {
        buf[11] = 1;
        let p = payload.to_be_bytes();
        buf[n..n + 11].copy_from_slice(&[0, 0, 41, p[0], p[1], 0, version, 0, 0, 0, 0]);
        n += 11;
    }
    n
}

struct Reply {
    header: Header,
    len: usize,
    answers: [u16; 4],
    authority_soa: usize,
    additional: usize,
    opt_payload: Option<u16>,
    opt_ttl: u32,
    a: usize,
    aaaa: usize,
    srv_ports: [u16; 4],
}

/// Asks and parses the whole response back, asserting the invariants every response keeps.
fn ask(q: &[u8], transport: Transport) -> Reply {
    let mut out = [0u8; TCP_BYTES_MAX];
    let len = answer(q, transport, &DIR, &mut out).expect("a response");
    let mut r = Reply {
        header: Header::new_checked(&out).unwrap(),
        len,
        answers: [0; 4],
        authority_soa: 0,
        additional: 0,
        opt_payload: None,
        opt_ttl: 0,
        a: 0,
        aaaa: 0,
        srv_ports: [0; 4],
    };
    let header = parse_message(&out[..len], &mut |section, rec| {
        if rec.rtype != TYPE_OPT {
            assert_eq!(rec.ttl, TTL_S);
        }
        match (section, rec.rtype) {
            (Section::Answer, t) => {
                let i = r.answers.iter().position(|&x| x == 0 || x == t).unwrap();
                r.answers[i] = t;
                match t {
                    TYPE_A => r.a += 1,
                    TYPE_AAAA => r.aaaa += 1,
                    TYPE_SRV => {
                        let i = r.srv_ports.iter().position(|&p| p == 0).unwrap();
                        r.srv_ports[i] = u16::from_be_bytes([rec.rdata[4], rec.rdata[5]]);
                    }
                    _ => {}
                }
            }
            (Section::Authority, TYPE_SOA) => {
                r.authority_soa += 1;
                assert_eq!(rec.rdata[rec.rdata.len() - 4..], TTL_S.to_be_bytes());
            }
            (Section::Additional, TYPE_OPT) => {
                r.opt_payload = Some(rec.class);
                r.opt_ttl = rec.ttl;
            }
            (Section::Additional, _) => r.additional += 1,
            other => panic!("unexpected record {other:?}"),
        }
    })
    .expect("the response parses");
    assert_eq!(header, r.header);
    assert!(header.response());
    assert_eq!(header.id, 0x1234);
    assert!(header.recursion_desired());
    let limit = match transport {
        Transport::Udp => UDP_BYTES_MAX,
        Transport::Tcp => TCP_BYTES_MAX,
    };
    assert!(len <= limit);
    r
}

/// 200 instances overflow a classic UDP response: TC with as many whole records as fit; TCP
/// carries all of them, and A and AAAA each carry only their own family.
#[test]
fn many_instances_truncate_over_udp_and_complete_over_tcp() {
    let mut buf = [0u8; 512];
    for (qtype, record_bytes) in [(TYPE_A, 16), (TYPE_AAAA, 28)] {
        let n = query(&mut buf, "many.myco", qtype, None);
        let udp = ask(&buf[..n], Transport::Udp);
        assert!(udp.header.truncated());
        assert!(udp.len <= UDP_BYTES_CLASSIC);
        assert!(udp.len + record_bytes > UDP_BYTES_CLASSIC, "as many as fit");
        assert!(udp.header.ancount > 0 && usize::from(udp.header.ancount) < MANY);
        let tcp = ask(&buf[..n], Transport::Tcp);
        assert!(!tcp.header.truncated());
        assert_eq!(tcp.header.rcode(), RCODE_NOERROR);
        assert!(tcp.header.authoritative());
        assert_eq!(usize::from(tcp.header.ancount), MANY);
        if qtype == TYPE_A {
            assert_eq!((tcp.a, tcp.aaaa), (MANY, 0));
        } else {
            assert_eq!((tcp.a, tcp.aaaa), (0, MANY));
        }
    }
}

/// EDNS0: our OPT is echoed with our payload size, the client's size (capped at 4096) is the
/// UDP limit, and an unknown EDNS version gets BADVERS.
#[test]
fn edns_echo_and_payload_size() {
    let mut buf = [0u8; 512];
    let n = query(&mut buf, "many.myco", TYPE_A, Some((4096, 0)));
    let r = ask(&buf[..n], Transport::Udp);
    assert_eq!(r.opt_payload, Some(EDNS_PAYLOAD_BYTES));
    assert!(!r.header.truncated());
    assert_eq!(usize::from(r.header.ancount), MANY);

    let n = query(&mut buf, "many.myco", TYPE_AAAA, Some((65000, 0)));
    let r = ask(&buf[..n], Transport::Udp);
    assert!(r.header.truncated(), "capped at 4096");
    assert!(r.len <= UDP_BYTES_MAX && r.len > UDP_BYTES_MAX - 28 - OPT_BYTES);
    assert_eq!(r.opt_payload, Some(EDNS_PAYLOAD_BYTES), "OPT survives TC");

    let n = query(&mut buf, "many.myco", TYPE_A, Some((700, 0)));
    let r = ask(&buf[..n], Transport::Udp);
    assert!(r.header.truncated() && r.len <= 700 && r.len > 700 - 16);

    let n = query(&mut buf, "many.myco", TYPE_A, Some((100, 0)));
    let r = ask(&buf[..n], Transport::Udp);
    assert!(r.len <= 512 && r.len > 512 - 16, "sizes below 512 mean 512");

    let n = query(&mut buf, "web.myco", TYPE_A, Some((1232, 1)));
    let r = ask(&buf[..n], Transport::Udp);
    assert_eq!(r.header.ancount, 0);
    assert_eq!(r.opt_ttl >> 24, u32::from(EXTENDED_RCODE_BADVERS));
}

/// SRV carries each declared port of the asked protocol, targets NAME.myco., and adds the
/// target's addresses.
#[test]
fn srv_carries_ports() {
    let mut buf = [0u8; 512];
    let n = query(&mut buf, "_web._tcp.myco", TYPE_SRV, None);
    let r = ask(&buf[..n], Transport::Udp);
    assert_eq!(r.header.rcode(), RCODE_NOERROR);
    assert_eq!(r.srv_ports, [80, 443, 0, 0]);
    assert_eq!(r.additional, 2, "one A and one AAAA for the target");
    let mut out = [0u8; 512];
    let len = answer(&buf[..n], Transport::Udp, &DIR, &mut out).unwrap();
    let mut targets = 0;
    parse_message(&out[..len], &mut |section, rec| {
        if section == Section::Answer {
            assert!(rec.rdata.ends_with(b"\x03web\x04myco\x00"));
            targets += 1;
        }
    })
    .unwrap();
    assert_eq!(targets, 2);

    let n = query(&mut buf, "_web._udp.myco", TYPE_SRV, None);
    assert_eq!(ask(&buf[..n], Transport::Udp).srv_ports, [5353, 0, 0, 0]);

    let n = query(&mut buf, "_many._tcp.myco", TYPE_SRV, None);
    let r = ask(&buf[..n], Transport::Udp);
    assert_eq!((r.header.rcode(), r.header.ancount), (RCODE_NOERROR, 0));
    assert_eq!(r.authority_soa, 1, "no ports is NODATA");

    let n = query(&mut buf, "_nope._tcp.myco", TYPE_SRV, None);
    assert_eq!(
        ask(&buf[..n], Transport::Udp).header.rcode(),
        RCODE_NXDOMAIN
    );
}

/// Unknown names under .myco are NXDOMAIN with an SOA; known names with other types, the apex
/// and the empty non-terminals `_tcp` and `_udp` are NODATA with an SOA; other zones are REFUSED and not authoritative.
#[test]
fn negative_answers() {
    let mut buf = [0u8; 512];
    for name in ["nope.myco", "a.web.myco", "_web._sctp.myco", "Web_.myco"] {
        let n = query(&mut buf, name, TYPE_A, None);
        let r = ask(&buf[..n], Transport::Udp);
        assert_eq!(r.header.rcode(), RCODE_NXDOMAIN, "{name}");
        assert!(r.header.authoritative());
        assert_eq!((r.header.ancount, r.authority_soa), (0, 1));
    }
    for (name, qtype) in [
        ("web.myco", TYPE_SRV),
        ("web.myco", TYPE_ANY),
        ("idle.myco", TYPE_A),
        ("myco", TYPE_A),
        ("_tcp.myco", TYPE_A),
        ("_udp.myco", TYPE_SRV),
    ] {
        let n = query(&mut buf, name, qtype, None);
        let r = ask(&buf[..n], Transport::Udp);
        assert_eq!(r.header.rcode(), RCODE_NOERROR, "{name}");
        assert_eq!((r.header.ancount, r.authority_soa), (0, 1), "{name}");
    }
    let n = query(&mut buf, "myco", TYPE_SOA, None);
    let r = ask(&buf[..n], Transport::Udp);
    assert_eq!(r.answers, [TYPE_SOA, 0, 0, 0]);
    for name in ["example.com", "web.myco.evil", ""] {
        let n = query(&mut buf, name, TYPE_A, None);
        let r = ask(&buf[..n], Transport::Udp);
        assert_eq!(r.header.rcode(), RCODE_REFUSED, "{name}");
        assert!(!r.header.authoritative());
        assert_eq!(r.header.ancount + r.header.nscount, 0);
    }
}

/// Names match whatever their case, and the question comes back as it was asked.
#[test]
fn names_are_case_insensitive() {
    let mut buf = [0u8; 512];
    let n = query(&mut buf, "WeB.MyCo", TYPE_A, None);
    let r = ask(&buf[..n], Transport::Udp);
    assert_eq!((r.header.rcode(), r.a), (RCODE_NOERROR, 1));
    let mut out = [0u8; 512];
    answer(&buf[..n], Transport::Udp, &DIR, &mut out).unwrap();
    assert_eq!(out[12..n], buf[12..n]);
    let n = query(&mut buf, "_WEB._TCP.MYCO", TYPE_SRV, None);
    assert_eq!(ask(&buf[..n], Transport::Udp).srv_ports, [80, 443, 0, 0]);
}

/// Malformed headers get FORMERR or NOTIMP; a response or a scrap is dropped.
#[test]
fn malformed_queries_get_errors() {
    let mut buf = [0u8; 512];
    let n = query(&mut buf, "web.myco", TYPE_A, None);
    buf[5] = 2;
    assert_eq!(ask(&buf[..n], Transport::Udp).header.rcode(), RCODE_FORMERR);
    buf[5] = 0;
    assert_eq!(ask(&buf[..n], Transport::Udp).header.rcode(), RCODE_FORMERR);
    buf[5] = 1;
    buf[2] |= 2 << 3;
    assert_eq!(ask(&buf[..n], Transport::Udp).header.rcode(), RCODE_NOTIMP);
    buf[2] = 0x81;
    let mut out = [0u8; 512];
    assert_eq!(answer(&buf[..n], Transport::Udp, &DIR, &mut out), None);
    assert_eq!(answer(&buf[..11], Transport::Udp, &DIR, &mut out), None);
    assert_eq!(
        answer(&buf[..n], Transport::Udp, &DIR, &mut out[..11]),
        None
    );
    // Two OPT records.
    let n = query(&mut buf, "web.myco", TYPE_A, Some((1232, 0)));
    buf.copy_within(n - 11..n, n);
    buf[11] = 2;
    let r = ask(&buf[..n + 11], Transport::Udp);
    assert_eq!(r.header.rcode(), RCODE_FORMERR);
    // An output buffer too small for the question and our OPT gets a bare TC header.
    let n = query(&mut buf, "web.myco", TYPE_A, Some((1232, 0)));
    for size in 12..n + 11 {
        let len = answer(&buf[..n], Transport::Udp, &DIR, &mut out[..size]).unwrap();
        let header = parse_message(&out[..len], &mut |_, _| {}).unwrap();
        assert!(header.truncated() && len <= size, "{size}");
    }
}

/// A compression pointer in the question, including one pointing at itself, is refused.
#[test]
fn compression_pointer_loop_in_question_refused() {
    let mut buf = [0u8; 512];
    buf[..12].copy_from_slice(&[0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    buf[12..18].copy_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
    assert_eq!(
        ask(&buf[..18], Transport::Udp).header.rcode(),
        RCODE_FORMERR
    );
    buf[12..20].copy_from_slice(&[1, b'a', 0xC0, 0x0C, 0, 1, 0, 1]);
    assert_eq!(
        ask(&buf[..20], Transport::Udp).header.rcode(),
        RCODE_FORMERR
    );
    // The response parser never follows a forward or self pointer either.
    assert!(skip_name(&buf[..20], 12).is_none());
}

/// Random and mutated packets never panic, and every response parses back.
#[test]
fn garbage_never_panics() {
    let mut prng = Prng::new(0x0d15_ea5e);
    let mut valid = [0u8; 512];
    let valid_len = query(&mut valid, "_web._tcp.myco", TYPE_SRV, Some((1232, 0)));
    let mut out = [0u8; 1024];
    for round in 0..20_000 {
        let mut buf = [0u8; 512];
        let len = if round % 2 == 0 {
            let len = prng.below(80) as usize;
            buf[..len]
                .iter_mut()
                .for_each(|b| *b = prng.next_u64() as u8);
            if len > 4 && prng.chance(1, 2) {
                buf[2] &= 0x07;
                buf[4..6].copy_from_slice(&[0, 1]);
            }
            len
        } else {
            buf = valid;
            for _ in 0..1 + prng.below(4) {
                let i = prng.below(valid_len as u64) as usize;
                buf[i] = prng.next_u64() as u8;
            }
            prng.below(valid_len as u64 + 1) as usize
        };
        let out_len = 12 + prng.below(1012) as usize;
        let transport = if prng.chance(1, 2) {
            Transport::Udp
        } else {
            Transport::Tcp
        };
        if let Some(n) = answer(&buf[..len], transport, &DIR, &mut out[..out_len]) {
            assert!(n <= out_len);
            let header = parse_message(&out[..n], &mut |_, _| {}).expect("parses back");
            assert!(header.response());
        }
    }
}

/// The A records of a response, in order.
fn a_records(response: &[u8]) -> heapless::Vec<[u8; 4], 8> {
    let mut found = heapless::Vec::new();
    parse_message(response, &mut |section, rec| {
        if section == Section::Answer && rec.rtype == TYPE_A {
            found.push(rec.rdata.try_into().unwrap()).unwrap();
        }
    })
    .expect("the response parses");
    found
}

/// Answers rotate with the query id: every instance, each once, starting at id mod count, so
/// clients (which pick random ids) that take the first record spread over the instances.
#[test]
fn answers_rotate_with_the_query_id() {
    let mut buf = [0u8; 512];
    let n = query(&mut buf, "five.myco", TYPE_A, None);
    let mut firsts = heapless::Vec::<[u8; 4], 10>::new();
    for id in 0u16..10 {
        buf[..2].copy_from_slice(&id.to_be_bytes());
        let mut out = [0u8; 512];
        let len = answer(&buf[..n], Transport::Udp, &DIR, &mut out).unwrap();
        let got = a_records(&out[..len]);
        let start = usize::from(id) % FIVE_ADDRS.len();
        let expected: heapless::Vec<[u8; 4], 8> = (0..FIVE_ADDRS.len())
            .map(|k| FIVE_ADDRS[(start + k) % FIVE_ADDRS.len()].as_v4().unwrap())
            .collect();
        assert_eq!(got, expected, "id {id}");
        if !firsts.contains(&got[0]) {
            firsts.push(got[0]).unwrap();
        }
    }
    assert_eq!(
        firsts.len(),
        FIVE_ADDRS.len(),
        "every instance comes first for some id"
    );
}
