//! DNS for the `.myco` zone (RFC 1035, EDNS0 from RFC 6891): one query in, one response out.
//!
//! `NAME.myco` A and AAAA carry every healthy instance of service NAME, `_NAME._tcp.myco` and
//! `_NAME._udp.myco` SRV carry its declared ports, unknown names under `.myco` are NXDOMAIN and
//! other zones are REFUSED. The host asks a [`Directory`] for the facts and frames the bytes; this
//! module only parses and writes into the caller's buffer. Invariants: no input panics; records
//! are written whole or not at all, and a required record that does not fit the transport's limit
//! sets TC; every TTL, including the SOA minimum used for negative caching, is [`TTL_S`].

use crate::config::PLACEMENT_MAX;
use crate::schema::addr::PeerAddr;
use crate::schema::entry::{valid_name, Protocol};

/// Every record's TTL and the negative-caching TTL: instances come and go within seconds.
pub const TTL_S: u32 = 5;
/// The UDP payload size we advertise in our OPT record (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD_BYTES: u16 = 1232;
/// The UDP response limit without EDNS0 (RFC 1035 section 4.2.1).
pub const UDP_BYTES_CLASSIC: usize = 512;
/// The largest UDP response we send, whatever size the client claims.
pub const UDP_BYTES_MAX: usize = 4096;
/// The largest TCP response: the host frames it with a 2-byte length.
pub const TCP_BYTES_MAX: usize = 65535;
pub const HEADER_BYTES: usize = 12;
/// A name on the wire, length bytes and the root included (RFC 1035 section 2.3.4).
pub const NAME_WIRE_BYTES_MAX: usize = 255;
/// At most this many labels fit in `NAME_WIRE_BYTES_MAX` (one-byte labels and the root).
const LABELS_MAX: usize = 127;
/// Our OPT record: root name, type, class, TTL, empty RDATA.
const OPT_BYTES: usize = 11;
/// The zone apex label.
const ZONE: &[u8] = b"myco";

pub const TYPE_A: u16 = 1;
pub const TYPE_SOA: u16 = 6;
pub const TYPE_AAAA: u16 = 28;
pub const TYPE_SRV: u16 = 33;
pub const TYPE_OPT: u16 = 41;
pub const TYPE_ANY: u16 = 255;
pub const CLASS_IN: u16 = 1;
pub const CLASS_ANY: u16 = 255;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_FORMERR: u8 = 1;
pub const RCODE_NXDOMAIN: u8 = 3;
pub const RCODE_NOTIMP: u8 = 4;
pub const RCODE_REFUSED: u8 = 5;
/// The upper eight bits of the extended RCODE BADVERS (16), carried in the OPT TTL.
const EXTENDED_RCODE_BADVERS: u8 = 1;

const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;

/// What the host knows about services, asked per query.
pub trait Directory {
    /// Calls `out` with the address of every healthy instance of service `name` (a valid service
    /// name); returns false if there is no such service.
    fn instances(&self, name: &str, out: &mut dyn FnMut(PeerAddr)) -> bool;
    /// Whether service `name` exists, healthy anywhere or not. A directory where listing the
    /// instances costs more than a lookup overrides this: every query asks it first.
    fn exists(&self, name: &str) -> bool {
        self.instances(name, &mut |_| {})
    }
    /// Calls `out` with every port service `name` declares.
    fn ports(&self, name: &str, out: &mut dyn FnMut(u16, Protocol));
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// The fixed header of a DNS message, read from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    pub fn new_checked(msg: &[u8]) -> Option<Header> {
        Some(Header {
            id: read_u16(msg, 0)?,
            flags: read_u16(msg, 2)?,
            qdcount: read_u16(msg, 4)?,
            ancount: read_u16(msg, 6)?,
            nscount: read_u16(msg, 8)?,
            arcount: read_u16(msg, 10)?,
        })
    }
    pub fn response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }
    pub fn opcode(&self) -> u8 {
        ((self.flags >> 11) & 0xF) as u8
    }
    pub fn authoritative(&self) -> bool {
        self.flags & FLAG_AA != 0
    }
    pub fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }
    pub fn recursion_desired(&self) -> bool {
        self.flags & FLAG_RD != 0
    }
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xF) as u8
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Section {
    Answer,
    Authority,
    Additional,
}

/// One resource record of a parsed message; `name_offset` is where its owner name starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    pub name_offset: usize,
    pub rtype: u16,
    pub class: u16,
    pub ttl: u32,
    pub rdata: &'a [u8],
}

/// Walks a whole message, checking every bound and that every compression pointer points
/// backwards (so no loop is possible), and calls `f` with each record. Returns the header if the
/// message parses to its end with nothing left over.
pub fn parse_message(msg: &[u8], f: &mut dyn FnMut(Section, Record<'_>)) -> Option<Header> {
    let header = Header::new_checked(msg)?;
    let mut pos = HEADER_BYTES;
    for _ in 0..header.qdcount {
        pos = skip_name(msg, pos)?;
        pos = pos.checked_add(4).filter(|&p| p <= msg.len())?;
    }
    let sections = [
        (Section::Answer, header.ancount),
        (Section::Authority, header.nscount),
        (Section::Additional, header.arcount),
    ];
    for (section, count) in sections {
        for _ in 0..count {
            let (record, end) = parse_record(msg, pos)?;
            f(section, record);
            pos = end;
        }
    }
    (pos == msg.len()).then_some(header)
}

/// Answers one query into `out`. Returns the response length, or None when the query does not
/// deserve one: shorter than a header, itself a response, or `out` too small for a header.
pub fn answer<D: Directory + ?Sized>(
    query: &[u8],
    transport: Transport,
    dir: &D,
    out: &mut [u8],
) -> Option<usize> {
    let header = Header::new_checked(query)?;
    if header.response() || out.len() < HEADER_BYTES {
        return None;
    }
    let transport_limit = match transport {
        Transport::Udp => UDP_BYTES_CLASSIC,
        Transport::Tcp => TCP_BYTES_MAX,
    };
    let mut w = Writer::new(out, header, transport_limit);
    if header.opcode() != 0 {
        return Some(w.finish(RCODE_NOTIMP, false));
    }
    if header.qdcount != 1 {
        return Some(w.finish(RCODE_FORMERR, false));
    }
    let Some(q) = Question::parse(query) else {
        return Some(w.finish(RCODE_FORMERR, false));
    };
    let Some(edns) = parse_edns(query, q.end, &header) else {
        return Some(w.finish(RCODE_FORMERR, false));
    };
    if let (Transport::Udp, Some(e)) = (transport, edns) {
        w.limit_set(usize::from(e.payload).clamp(UDP_BYTES_CLASSIC, UDP_BYTES_MAX));
    }
    // Room for our OPT record is kept back from the start, so it is never what overflows.
    let reserve = if edns.is_some() { OPT_BYTES } else { 0 };
    if w.limit < HEADER_BYTES + reserve {
        w.truncated = true;
        return Some(w.finish(RCODE_NOERROR, false));
    }
    w.limit -= reserve;
    if !w.put(&query[HEADER_BYTES..q.end]) {
        w.truncated = true;
        return Some(w.finish(RCODE_NOERROR, false));
    }
    w.qdcount = 1;
    let (rcode, extended) = match edns {
        Some(e) if e.version != 0 => (RCODE_NOERROR, EXTENDED_RCODE_BADVERS),
        _ => (resolve(&q, dir, &mut w), 0),
    };
    if edns.is_some() {
        w.limit += reserve;
        let ttl = u32::from(extended) << 24;
        let ok = w.record(&[0], TYPE_OPT, EDNS_PAYLOAD_BYTES, ttl, &[]);
        assert!(ok, "room for OPT was reserved");
        w.arcount += 1;
    }
    let authoritative = rcode != RCODE_REFUSED && extended == 0;
    Some(w.finish(rcode, authoritative))
}

/// Writes the answer and authority (and SRV additional) records; returns the RCODE.
fn resolve<D: Directory + ?Sized>(q: &Question, dir: &D, w: &mut Writer<'_>) -> u8 {
    if (q.qclass != CLASS_IN && q.qclass != CLASS_ANY) || q.labels == 0 {
        return RCODE_REFUSED;
    }
    if q.label(q.labels - 1) != ZONE {
        return RCODE_REFUSED;
    }
    // The question sits verbatim at HEADER_BYTES, so `myco.` in it can be pointed at.
    let apex = HEADER_BYTES + usize::from(q.starts[q.labels - 1]);
    let apex_ptr = pointer(apex);
    match q.labels {
        1 => {
            if q.qtype == TYPE_SOA || q.qtype == TYPE_ANY {
                w.soa(apex_ptr, Section::Answer);
            } else {
                w.soa(apex_ptr, Section::Authority);
            }
            RCODE_NOERROR
        }
        // `_tcp.myco` and `_udp.myco` are empty non-terminals: names exist below them (the SRV
        // names), so they are NODATA, not NXDOMAIN, which a resolver may take as "nothing below".
        2 if matches!(q.label(0), b"_tcp" | b"_udp") => {
            w.soa(apex_ptr, Section::Authority);
            RCODE_NOERROR
        }
        2 => {
            let Some(name) = service(dir, q.label(0)) else {
                w.soa(apex_ptr, Section::Authority);
                return RCODE_NXDOMAIN;
            };
            let owner = pointer(HEADER_BYTES);
            if q.qtype == TYPE_A || q.qtype == TYPE_AAAA {
                w.addresses(dir, name, owner, q.qtype, Section::Answer);
            }
            if w.ancount == 0 && !w.truncated {
                w.soa(apex_ptr, Section::Authority);
            }
            RCODE_NOERROR
        }
        3 => {
            let protocol = match q.label(1) {
                b"_tcp" => Protocol::Tcp,
                b"_udp" => Protocol::Udp,
                _ => {
                    w.soa(apex_ptr, Section::Authority);
                    return RCODE_NXDOMAIN;
                }
            };
            let label = q.label(0);
            let Some(name) = label.strip_prefix(b"_").and_then(|l| service(dir, l)) else {
                w.soa(apex_ptr, Section::Authority);
                return RCODE_NXDOMAIN;
            };
            if q.qtype == TYPE_SRV {
                w.srv(dir, name, protocol);
            }
            if w.ancount == 0 && !w.truncated {
                w.soa(apex_ptr, Section::Authority);
            }
            RCODE_NOERROR
        }
        _ => {
            w.soa(apex_ptr, Section::Authority);
            RCODE_NXDOMAIN
        }
    }
}

/// The service a label names, if it is a valid name the directory knows.
fn service<'l, D: Directory + ?Sized>(dir: &D, label: &'l [u8]) -> Option<&'l str> {
    let name = core::str::from_utf8(label).ok()?;
    (valid_name(name) && dir.exists(name)).then_some(name)
}

/// The one question, its name lowercased, with where each label starts.
struct Question {
    name: [u8; NAME_WIRE_BYTES_MAX],
    starts: [u8; LABELS_MAX],
    labels: usize,
    qtype: u16,
    qclass: u16,
    /// Where the question ends in the query.
    end: usize,
}

impl Question {
    /// Refuses compression pointers and extended label types: a question has no earlier name to
    /// point at, so a pointer is either malformed or an attack.
    fn parse(msg: &[u8]) -> Option<Question> {
        let mut q = Question {
            name: [0; NAME_WIRE_BYTES_MAX],
            starts: [0; LABELS_MAX],
            labels: 0,
            qtype: 0,
            qclass: 0,
            end: 0,
        };
        let mut pos = HEADER_BYTES;
        let mut used = 0;
        loop {
            let len = usize::from(*msg.get(pos)?);
            if len & 0xC0 != 0 {
                return None;
            }
            if len == 0 {
                pos += 1;
                break;
            }
            // The label, its length byte and the root that must still follow.
            if used + 1 + len + 1 > NAME_WIRE_BYTES_MAX || q.labels == LABELS_MAX {
                return None;
            }
            let label = msg.get(pos + 1..pos + 1 + len)?;
            q.starts[q.labels] = u8::try_from(used).ok()?;
            q.labels += 1;
            q.name[used] = len as u8;
            for (dst, src) in q.name[used + 1..used + 1 + len].iter_mut().zip(label) {
                *dst = src.to_ascii_lowercase();
            }
            used += 1 + len;
            pos += 1 + len;
        }
        q.qtype = read_u16(msg, pos)?;
        q.qclass = read_u16(msg, pos + 2)?;
        q.end = pos + 4;
        assert!(q.end <= msg.len());
        Some(q)
    }

    fn label(&self, i: usize) -> &[u8] {
        assert!(i < self.labels);
        let start = usize::from(self.starts[i]);
        let len = usize::from(self.name[start]);
        &self.name[start + 1..start + 1 + len]
    }
}

#[derive(Clone, Copy)]
struct Edns {
    payload: u16,
    version: u8,
}

/// Finds the query's OPT record, skipping any other records. Outer None: malformed (bad bounds,
/// or more than one OPT, which RFC 6891 section 6.1.1 makes a FORMERR).
fn parse_edns(msg: &[u8], mut pos: usize, header: &Header) -> Option<Option<Edns>> {
    let total = u32::from(header.ancount) + u32::from(header.nscount) + u32::from(header.arcount);
    let additional_from = total - u32::from(header.arcount);
    let mut edns = None;
    for i in 0..total {
        let (record, end) = parse_record(msg, pos)?;
        if record.rtype == TYPE_OPT {
            let root = msg[record.name_offset] == 0;
            if i < additional_from || !root || edns.is_some() {
                return None;
            }
            edns = Some(Edns {
                payload: record.class,
                version: (record.ttl >> 16) as u8,
            });
        }
        pos = end;
    }
    Some(edns)
}

fn parse_record(msg: &[u8], pos: usize) -> Option<(Record<'_>, usize)> {
    let fixed = skip_name(msg, pos)?;
    let rtype = read_u16(msg, fixed)?;
    let class = read_u16(msg, fixed + 2)?;
    let ttl = u32::from(read_u16(msg, fixed + 4)?) << 16 | u32::from(read_u16(msg, fixed + 6)?);
    let rdlen = usize::from(read_u16(msg, fixed + 8)?);
    let rdata = msg.get(fixed + 10..fixed + 10 + rdlen)?;
    let record = Record {
        name_offset: pos,
        rtype,
        class,
        ttl,
        rdata,
    };
    Some((record, fixed + 10 + rdlen))
}

/// Returns where the name at `pos` ends. A pointer ends the name and must point strictly
/// backwards, before this name began; it is checked, never followed, so no loop can form.
fn skip_name(msg: &[u8], start: usize) -> Option<usize> {
    let mut pos = start;
    loop {
        let len = usize::from(*msg.get(pos)?);
        match len & 0xC0 {
            0x00 if len == 0 => return Some(pos + 1),
            0x00 => {
                msg.get(pos + 1..pos + 1 + len)?;
                pos += 1 + len;
                if pos - start > NAME_WIRE_BYTES_MAX {
                    return None;
                }
            }
            0xC0 => {
                let target = usize::from(read_u16(msg, pos)? & 0x3FFF);
                return (target < start).then_some(pos + 2);
            }
            _ => return None,
        }
    }
}

fn read_u16(msg: &[u8], pos: usize) -> Option<u16> {
    let b = msg.get(pos..pos.checked_add(2)?)?;
    Some(u16::from_be_bytes([b[0], b[1]]))
}

fn pointer(offset: usize) -> [u8; 2] {
    assert!(offset < 0x4000);
    (0xC000 | offset as u16).to_be_bytes()
}

/// The response under construction; every record goes in whole or not at all.
struct Writer<'o> {
    out: &'o mut [u8],
    len: usize,
    limit: usize,
    query: Header,
    truncated: bool,
    qdcount: u16,
    ancount: u16,
    nscount: u16,
    arcount: u16,
}

impl<'o> Writer<'o> {
    fn new(out: &'o mut [u8], query: Header, transport_limit: usize) -> Writer<'o> {
        let limit = out.len().min(transport_limit);
        assert!(limit >= HEADER_BYTES);
        Writer {
            out,
            len: HEADER_BYTES,
            limit,
            query,
            truncated: false,
            qdcount: 0,
            ancount: 0,
            nscount: 0,
            arcount: 0,
        }
    }

    fn limit_set(&mut self, limit: usize) {
        self.limit = self.out.len().min(limit);
    }

    fn put(&mut self, bytes: &[u8]) -> bool {
        let end = self.len + bytes.len();
        if end > self.limit {
            return false;
        }
        self.out[self.len..end].copy_from_slice(bytes);
        self.len = end;
        true
    }

    /// Writes one record, or nothing if it does not fit.
    fn record(&mut self, owner: &[u8], rtype: u16, class: u16, ttl: u32, rdata: &[&[u8]]) -> bool {
        let mark = self.len;
        let rdlen: usize = rdata.iter().map(|part| part.len()).sum();
        let Ok(rdlen) = u16::try_from(rdlen) else {
            return false;
        };
        let mut ok = self.put(owner)
            && self.put(&rtype.to_be_bytes())
            && self.put(&class.to_be_bytes())
            && self.put(&ttl.to_be_bytes())
            && self.put(&rdlen.to_be_bytes());
        for part in rdata {
            ok = ok && self.put(part);
        }
        if !ok {
            self.len = mark;
        }
        ok
    }

    /// Counts a written record, or marks the response truncated if a required one did not fit;
    /// additional records are optional and are dropped without TC (RFC 2181 section 9).
    fn count(&mut self, written: bool, section: Section) -> bool {
        match (written, section) {
            (true, Section::Answer) => self.ancount += 1,
            (true, Section::Authority) => self.nscount += 1,
            (true, Section::Additional) => self.arcount += 1,
            (false, Section::Additional) => {}
            (false, _) => self.truncated = true,
        }
        written
    }

    fn soa(&mut self, apex_ptr: [u8; 2], section: Section) {
        if self.truncated {
            return;
        }
        let mut numbers = [0u8; 20];
        // Serial 1; refresh, retry, expire and the negative-caching minimum all TTL_S.
        numbers[..4].copy_from_slice(&1u32.to_be_bytes());
        for chunk in numbers[4..].chunks_exact_mut(4) {
            chunk.copy_from_slice(&TTL_S.to_be_bytes());
        }
        let rdata: [&[u8]; 5] = [b"\x02ns", &apex_ptr, b"\x0ahostmaster", &apex_ptr, &numbers];
        let written = self.record(&apex_ptr, TYPE_SOA, CLASS_IN, TTL_S, &rdata);
        self.count(written, section);
    }

    /// Writes service `name`'s addresses of type `qtype` (A or AAAA) under owner `owner`,
    /// starting at a place chosen by the query's id: clients pick random ids, so a client that
    /// takes the first record spreads over the instances. More instances than a placement can
    /// hold (a directory other than placement's) are written in the directory's order.
    fn addresses<D: Directory + ?Sized>(
        &mut self,
        dir: &D,
        name: &str,
        owner: [u8; 2],
        qtype: u16,
        section: Section,
    ) {
        assert!(qtype == TYPE_A || qtype == TYPE_AAAA);
        let wanted = |addr: &PeerAddr| (qtype == TYPE_A) == addr.as_v4().is_some();
        let mut found = heapless::Vec::<PeerAddr, PLACEMENT_MAX>::new();
        let mut more = false;
        dir.instances(name, &mut |addr| {
            if wanted(&addr) {
                more |= found.push(addr).is_err();
            }
        });
        if more {
            let mut stop = false;
            dir.instances(name, &mut |addr| {
                if !stop && wanted(&addr) {
                    stop = !self.address(&owner, addr, section);
                }
            });
            return;
        }
        let start = usize::from(self.query.id) % found.len().max(1);
        let (tail, head) = found.split_at(start);
        for &addr in head.iter().chain(tail) {
            if !self.address(&owner, addr, section) {
                return;
            }
        }
    }

    /// One A or AAAA record; false once nothing more fits.
    fn address(&mut self, owner: &[u8; 2], addr: PeerAddr, section: Section) -> bool {
        if self.truncated {
            return false;
        }
        let written = match addr.as_v4() {
            Some(v4) => self.record(owner, TYPE_A, CLASS_IN, TTL_S, &[&v4]),
            None => self.record(owner, TYPE_AAAA, CLASS_IN, TTL_S, &[&addr.ip]),
        };
        self.count(written, section)
    }

    /// One SRV record per declared port of `protocol`, target `NAME.myco.`, then the target's
    /// addresses in the additional section as far as they fit.
    fn srv<D: Directory + ?Sized>(&mut self, dir: &D, name: &str, protocol: Protocol) {
        let owner = pointer(HEADER_BYTES);
        let mut target_at = None;
        dir.ports(name, &mut |number, p| {
            if p != protocol || self.truncated {
                return;
            }
            // Priority 0, weight 0, then the port.
            let mut fixed = [0u8; 6];
            fixed[4..].copy_from_slice(&number.to_be_bytes());
            // RFC 2782 forbids compressing the target, so it is spelled out.
            let label_len = [name.len() as u8];
            let rdata: [&[u8]; 4] = [&fixed, &label_len, name.as_bytes(), b"\x04myco\x00"];
            let start = self.len;
            let written = self.record(&owner, TYPE_SRV, CLASS_IN, TTL_S, &rdata);
            if self.count(written, Section::Answer) && target_at.is_none() {
                target_at = Some(start + owner.len() + 10 + fixed.len());
            }
        });
        if let (Some(at), false) = (target_at, self.truncated) {
            let target = pointer(at);
            self.addresses(dir, name, target, TYPE_A, Section::Additional);
            self.addresses(dir, name, target, TYPE_AAAA, Section::Additional);
        }
    }

    /// Writes the header and returns the response length.
    fn finish(self, rcode: u8, authoritative: bool) -> usize {
        let opcode = self.query.flags & 0x7800;
        let mut flags = FLAG_QR | opcode | (self.query.flags & FLAG_RD) | u16::from(rcode & 0xF);
        if authoritative {
            flags |= FLAG_AA;
        }
        if self.truncated {
            flags |= FLAG_TC;
        }
        let fields = [
            self.query.id,
            flags,
            self.qdcount,
            self.ancount,
            self.nscount,
            self.arcount,
        ];
        for (chunk, field) in self.out[..HEADER_BYTES].chunks_exact_mut(2).zip(fields) {
            chunk.copy_from_slice(&field.to_be_bytes());
        }
        assert!(self.len <= self.out.len() && self.len <= TCP_BYTES_MAX);
        self.len
    }
}

#[cfg(test)]
mod tests;
