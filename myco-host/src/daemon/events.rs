//! The event ring behind `GET /stream`: the last `EVENTS_MAX` things that happened on this node
//! (members, entries, deploys, placements, unit health, refused frames, the WAL recovery), each
//! with an id that grows by one. It lies in the arena, sized at build time; pushing overwrites
//! the oldest record, so the ring never refuses an event and never allocates. Subscribers keep only a cursor
//! (the next id they want) and format records into their own answer buffer when it has drained:
//! a subscriber that does not read falls behind and is told how many it missed, but never holds
//! the loop or the others.
//!
//! The first id of a run is the wall-clock time of its start in milliseconds, so ids of a later
//! run are above those of an earlier one (unless the earlier one averaged more than one event a
//! millisecond). A `Last-Event-ID` below this run's first id, or above its newest, is from
//! another run: the client is told so with `event: reset` and gets everything still held.
//!
//! Each event carries the wall-clock time it was pushed, written as RFC 3339 like the audit log's,
//! so a reader sees when it happened without decoding the id. An `entry` event is pushed by the
//! core's sink, which cannot see the store while the core holds it; the loop names it afterwards
//! (`name_entries`), before any subscriber is pumped, so every subscriber sees the service's name.

use crate::http::json::Json;
use crate::http::response::{Cursor, Full};
use myco_core::hex::HexU64;
use myco_core::schema::entry::Version;

/// Events held for subscribers that fall behind or reconnect.
pub const EVENTS_MAX: usize = 4096;
/// The longest formatted event: a 63-byte name escaped at worst six bytes a byte, plus fields.
pub const EVENT_BYTES_MAX: usize = 640;
/// The ring's records in the arena: `EVENTS_MAX` records of at most 128 bytes, 512 KiB, resident
/// only as far as events have filled it.
const _: () = assert!(core::mem::size_of::<Record>() <= 128);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// `word` is joined, alive, suspect or dead; `key` is the member's node id.
    Member,
    /// An entry of the desired state changed (a deploy here or by gossip); `key` is its hash,
    /// `name` the service's name once `Ring::name_entries` has looked it up.
    Entry,
    /// A deploy through this API became durable; `name`, `clock`/`key_id`, `word` the outcome.
    Deploy,
    /// A unit was written here (`word` placed) or removed (`word` removed).
    Placement,
    /// A unit's health changed to `word`.
    Unit,
    /// Frames refused in the last second; `count` of them, `word` the last reason.
    Refused,
    /// The WAL was replayed at start-up: `count` records, `key` services, `clock` bytes truncated.
    Recovery,
    /// The RevocationBlock rose to `count`.
    Revoked,
    /// A Nix store garbage collection ended: `word` freed or failed, `count` bytes freed,
    /// `key` store paths deleted.
    Gc,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Member => "member",
            Kind::Entry => "entry",
            Kind::Deploy => "deploy",
            Kind::Placement => "placement",
            Kind::Unit => "unit",
            Kind::Refused => "refused",
            Kind::Recovery => "recovery",
            Kind::Revoked => "revoked",
            Kind::Gc => "gc",
        }
    }
}

/// One event; small and fixed-size, so the ring is one array in the arena.
#[derive(Clone, Debug)]
pub struct Record {
    pub id: u64,
    pub kind: Kind,
    pub word: &'static str,
    /// When the event was pushed, in milliseconds since the Unix epoch (`Ring::push` sets it).
    pub time_ms: u64,
    pub key: u64,
    pub count: u64,
    pub clock: u64,
    /// The signing key's id (`Version::key_id`).
    pub key_id: u32,
    /// A one-byte length keeps a record at 128 bytes (the ring holds 4096).
    pub name: heapless::String<63, u8>,
}

impl Record {
    pub fn new(kind: Kind, word: &'static str) -> Record {
        Record {
            id: 0,
            kind,
            word,
            time_ms: 0,
            key: 0,
            count: 0,
            clock: 0,
            key_id: 0,
            name: heapless::String::new(),
        }
    }

    pub fn named(kind: Kind, word: &'static str, name: &str) -> Record {
        let mut r = Record::new(kind, word);
        r.set_name(name);
        r
    }

    fn set_name(&mut self, name: &str) {
        self.name.clear();
        // Service names are at most 63 bytes; a longer one is cut rather than dropped.
        for c in name.chars() {
            if self.name.push(c).is_err() {
                break;
            }
        }
    }

    pub fn gc(done: myco_core::executor::GcDone) -> Record {
        use myco_core::executor::GcDone;
        let (word, freed) = match done {
            GcDone::Freed(f) => ("freed", f),
            GcDone::Failed => ("failed", Default::default()),
        };
        let mut r = Record::new(Kind::Gc, word);
        r.count = freed.bytes;
        r.key = freed.paths;
        r
    }

    pub fn deploy(name: &str, version: Version, applied: bool) -> Record {
        let mut r = Record::named(
            Kind::Deploy,
            if applied { "applied" } else { "unchanged" },
            name,
        );
        r.clock = version.clock;
        r.key_id = version.key_id;
        r
    }
}

/// The ring's records: `EVENTS_MAX` of them, in the arena.
pub type Records = heapless::Vec<Record, EVENTS_MAX>;

pub struct Ring {
    /// Laid out whole in the arena but filled as events come, so a quiet daemon's ring costs no
    /// resident memory: untouched pages stay unmapped.
    records: &'static mut Records,
    /// The id of this run's first event.
    first_id: u64,
    /// The id the next event gets; ids `oldest()..next_id` are held.
    next_id: u64,
    /// Events from this id on have not been through `name_entries` yet.
    unnamed_from: u64,
    /// Refused frames since the last `flush_refused`, and the last reason.
    refused: u64,
    refused_why: &'static str,
}

impl Ring {
    /// A ring whose first event gets `first_id` (at least 1: a client with no event sends 0).
    pub fn new(first_id: u64, records: &'static mut Records) -> Ring {
        let first_id = first_id.max(1);
        records.clear();
        Ring {
            records,
            first_id,
            next_id: first_id,
            unnamed_from: first_id,
            refused: 0,
            refused_why: "",
        }
    }

    pub fn next_id(&self) -> u64 {
        self.next_id
    }

    /// The oldest id still held (equal to `next_id` when the ring is empty).
    pub fn oldest(&self) -> u64 {
        self.next_id
            .saturating_sub(EVENTS_MAX as u64)
            .max(self.first_id)
    }

    /// Where a subscriber that last received `last_event_id` goes on, and whether that id is
    /// from another run of the daemon (`event: reset`; it then gets everything held). No id means
    /// only what happens from now on.
    pub fn resume(&self, last_event_id: Option<u64>) -> (u64, bool) {
        match last_event_id {
            None => (self.next_id, false),
            Some(n) if n < self.first_id || n >= self.next_id => (self.oldest(), true),
            Some(n) => (n + 1, false),
        }
    }

    pub fn push(&mut self, mut record: Record) -> u64 {
        let id = self.next_id;
        record.id = id;
        record.time_ms = unix_ms();
        let slot = self.slot(id);
        if slot == self.records.len() {
            // `slot` is below `EVENTS_MAX`, so the ring has room for it.
            self.records
                .push(record)
                .expect("the ring holds EVENTS_MAX records");
        } else {
            self.records[slot] = record;
        }
        self.next_id += 1;
        assert!(self.get(id).is_some_and(|r| r.id == id));
        id
    }

    /// Where event `id` lives: the ring fills from slot 0 with this run's first event.
    fn slot(&self, id: u64) -> usize {
        ((id - self.first_id) % EVENTS_MAX as u64) as usize
    }

    pub fn get(&self, id: u64) -> Option<&Record> {
        if id < self.oldest() || id >= self.next_id {
            return None;
        }
        let r = &self.records[self.slot(id)];
        assert_eq!(r.id, id, "a live id is in its own slot");
        Some(r)
    }

    /// Names the `entry` events pushed since the last call by their service, as `name_of` finds
    /// it from the key hash (`None`: the store no longer holds it, and the event keeps only its
    /// hash). The loop calls it before it pumps subscribers.
    pub fn name_entries<'s>(&mut self, name_of: impl Fn(u64) -> Option<&'s str>) {
        for id in self.unnamed_from.max(self.oldest())..self.next_id {
            let slot = self.slot(id);
            let r = &mut self.records[slot];
            if r.kind == Kind::Entry && r.name.is_empty() {
                if let Some(name) = name_of(r.key) {
                    r.set_name(name);
                }
            }
        }
        self.unnamed_from = self.next_id;
    }

    /// Counts a refused frame; `flush_refused` turns the count into one event, so a flood of bad
    /// frames costs one event a second instead of the whole ring.
    pub fn refused(&mut self, why: &'static str) {
        self.refused += 1;
        self.refused_why = why;
    }

    pub fn flush_refused(&mut self) {
        if self.refused > 0 {
            let mut r = Record::new(Kind::Refused, self.refused_why);
            r.count = std::mem::take(&mut self.refused);
            self.push(r);
        }
    }
}

/// Milliseconds since the Unix epoch by the wall clock (0 if it is set before 1970).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Writes one event in SSE form: `id:`, `event:`, one `data:` line of JSON, a blank line.
pub fn format(out: &mut Cursor<'_>, r: &Record) -> Result<(), Full> {
    out.put(b"id: ")?;
    out.put_u64(r.id)?;
    out.put(b"\nevent: ")?;
    out.put(r.kind.name().as_bytes())?;
    out.put(b"\ndata: ")?;
    let mut j = Json::new(out);
    j.begin_object()?;
    j.key("id")?;
    j.u64(r.id)?;
    j.key("time")?;
    let mut time = heapless::String::<32>::new();
    // 24 bytes until the year 10000; a time that does not fit is a broken clock, not a reason
    // to lose the event.
    let _ = crate::audit::rfc3339(&mut time, r.time_ms);
    j.string(&time)?;
    kind_fields(&mut j, r)?;
    j.end_object()?;
    j.finish();
    out.put(b"\n\n")
}

/// The fields that belong to `r`'s kind, inside its JSON object.
fn kind_fields(j: &mut Json<'_, '_>, r: &Record) -> Result<(), Full> {
    match r.kind {
        Kind::Member => {
            j.key("kind")?;
            j.string(r.word)?;
            j.key("node")?;
            j.string(HexU64::new(r.key).as_str())?;
        }
        Kind::Entry => {
            if !r.name.is_empty() {
                j.key("name")?;
                j.string(&r.name)?;
            }
            j.key("key_hash")?;
            j.string(HexU64::new(r.key).as_str())?;
        }
        Kind::Deploy => {
            j.key("name")?;
            j.string(&r.name)?;
            j.key("version")?;
            j.begin_object()?;
            j.key("clock")?;
            j.u64(r.clock)?;
            j.key("key_id")?;
            j.u64(r.key_id.into())?;
            j.end_object()?;
            j.key("outcome")?;
            j.string(r.word)?;
        }
        Kind::Placement => {
            j.key("name")?;
            j.string(&r.name)?;
            j.key("kind")?;
            j.string(r.word)?;
        }
        Kind::Unit => {
            j.key("name")?;
            j.string(&r.name)?;
            j.key("state")?;
            j.string(r.word)?;
        }
        Kind::Refused => {
            j.key("count")?;
            j.u64(r.count)?;
            j.key("last_reason")?;
            j.string(r.word)?;
        }
        Kind::Recovery => {
            j.key("records")?;
            j.u64(r.count)?;
            j.key("services")?;
            j.u64(r.key)?;
            j.key("truncated_bytes")?;
            j.u64(r.clock)?;
        }
        Kind::Revoked => {
            j.key("height")?;
            j.u64(r.count)?;
        }
        Kind::Gc => {
            j.key("outcome")?;
            j.string(r.word)?;
            j.key("freed_bytes")?;
            j.u64(r.count)?;
            j.key("paths_deleted")?;
            j.u64(r.key)?;
        }
    }
    Ok(())
}

/// `event: missed`: the ring overwrote `missed` events this subscriber had not received; it goes
/// on from `next`. It carries no `id:`, so a reconnect still names the last event received.
pub fn format_missed(out: &mut Cursor<'_>, missed: u64, next: u64) -> Result<(), Full> {
    out.put(b"event: missed\ndata: {\"missed\":")?;
    out.put_u64(missed)?;
    out.put(b",\"next\":")?;
    out.put_u64(next)?;
    out.put(b"}\n\n")
}

/// `event: reset`: the client's `Last-Event-ID` is from another run of the daemon; it gets every
/// event this run still holds, from `next`.
pub fn format_reset(out: &mut Cursor<'_>, last_event_id: u64, next: u64) -> Result<(), Full> {
    out.put(b"event: reset\ndata: {\"last_event_id\":")?;
    out.put_u64(last_event_id)?;
    out.put(b",\"next\":")?;
    out.put_u64(next)?;
    out.put(b"}\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ring keeps the newest `EVENTS_MAX` ids and forgets older ones.
    #[test]
    fn ring_overwrites_the_oldest() {
        let mut ring = Ring::new(1, Box::leak(Box::default()));
        assert_eq!(ring.oldest(), 1);
        assert!(ring.get(1).is_none());
        for _ in 0..EVENTS_MAX + 10 {
            ring.push(Record::new(Kind::Entry, ""));
        }
        assert_eq!(ring.next_id(), EVENTS_MAX as u64 + 11);
        assert_eq!(ring.oldest(), 11);
        assert!(ring.get(10).is_none());
        assert_eq!(ring.get(11).unwrap().id, 11);
    }

    /// Ids from this run resume after them, even when overtaken (`missed` comes from the pump);
    /// ids from another run, below the first or past the newest, reset.
    #[test]
    fn resume_tells_this_run_from_another() {
        let mut ring = Ring::new(1000, Box::leak(Box::default()));
        for _ in 0..3 {
            ring.push(Record::new(Kind::Entry, ""));
        }
        assert_eq!(ring.resume(None), (1003, false));
        assert_eq!(ring.resume(Some(1000)), (1001, false));
        assert_eq!(ring.resume(Some(1002)), (1003, false));
        assert_eq!(ring.resume(Some(1003)), (1000, true));
        assert_eq!(ring.resume(Some(999)), (1000, true));
        assert_eq!(ring.resume(Some(0)), (1000, true));
        assert_eq!(ring.resume(Some(u64::MAX)), (1000, true));
    }

    /// A refused-frame flood becomes one event with its count.
    #[test]
    fn refused_frames_are_aggregated() {
        let mut ring = Ring::new(1, Box::leak(Box::default()));
        for _ in 0..1000 {
            ring.refused("BadSignature");
        }
        ring.flush_refused();
        ring.flush_refused();
        assert_eq!(ring.next_id(), 2);
        let mut r = ring.get(1).unwrap().clone();
        assert!(r.time_ms > 0, "push stamps the wall-clock time");
        r.time_ms = 1_796_193_351_921;
        let mut buf = [0u8; EVENT_BYTES_MAX];
        let mut out = Cursor::new(&mut buf);
        format(&mut out, &r).unwrap();
        assert_eq!(
            out.written(),
            b"id: 1\nevent: refused\ndata: {\"id\":1,\"time\":\"2026-12-02T06:35:51.921Z\",\"count\":1000,\"last_reason\":\"BadSignature\"}\n\n"
        );
    }

    /// `entry` events are named by their service once the loop looks them up, each exactly once;
    /// one whose entry the store no longer holds keeps only its hash.
    #[test]
    fn entry_events_are_named_by_their_service() {
        let mut ring = Ring::new(1, Box::leak(Box::default()));
        for key in [7, 8] {
            let mut r = Record::new(Kind::Entry, "");
            r.key = key;
            ring.push(r);
        }
        ring.name_entries(|key| (key == 7).then_some("web"));
        ring.name_entries(|_| Some("not-looked-up-twice"));
        assert_eq!(ring.get(1).unwrap().name.as_str(), "web");
        assert_eq!(ring.get(2).unwrap().name.as_str(), "");
        let mut buf = [0u8; EVENT_BYTES_MAX];
        let mut out = Cursor::new(&mut buf);
        format(&mut out, ring.get(1).unwrap()).unwrap();
        let text = String::from_utf8_lossy(out.written()).into_owned();
        assert!(
            text.contains(",\"name\":\"web\",\"key_hash\":\"0000000000000007\"}"),
            "{text}"
        );
    }

    /// The longest name, escaped at worst, fits `EVENT_BYTES_MAX`.
    #[test]
    fn the_largest_event_fits() {
        let name = "\u{1}".repeat(63);
        let mut r = Record::named(Kind::Deploy, "unchanged", &name);
        r.id = u64::MAX;
        r.time_ms = u64::MAX;
        r.clock = u64::MAX;
        r.key_id = u32::MAX;
        let mut buf = [0u8; EVENT_BYTES_MAX];
        format(&mut Cursor::new(&mut buf), &r).unwrap();
    }
}
