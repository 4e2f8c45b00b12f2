//! The binary cache's decisions (issue 16, "Every box serves its builds"): which requests a box
//! answers and how, the one upload throttle of the box, and the narinfo a stock `nix` client
//! reads and verifies. The daemon moves the bytes (`myco-host`'s `daemon::cache`); everything it
//! decides on comes from here, pure and unit-tested.
//!
//! The protocol is Nix's HTTP binary cache: `GET /nix-cache-info`, `GET|HEAD /<hash>.narinfo`
//! and `GET /nar/<hash>.nar`, where `<hash>` is the 32-character nix32 hash that starts a store
//! path's base name. The narinfo's `URL` names the NAR by that same store hash, so the daemon
//! finds the path for either request in one table (the closure of what this box built).

mod narinfo;
#[cfg(test)]
mod tests;

pub(crate) use narinfo::is_store_path;
pub use narinfo::{
    base64, next_registration, nix32, parse_registration, store_name_byte, write_fingerprint,
    write_narinfo, NarInfoFacts, Registration, KEY_NAME_BYTES,
};

/// A store path's hash part: 32 nix32 characters (160 bits).
pub const STORE_HASH_CHARS: usize = 32;
/// A request head (request line and headers) may be this long: `nix` sends a few short headers.
/// Longer is 431, and the connection closes.
pub const REQUEST_HEAD_BYTES_MAX: usize = 4096;
/// `nix-cache-info`: the store it serves, that the client may ask for many paths at once, and a
/// priority (lower is tried first) below cache.nixos.org's 40, so a fleet prefers its own boxes.
pub const CACHE_INFO: &[u8] = b"StoreDir: /nix/store\nWantMassQuery: 1\nPriority: 30\n";
/// The nix32 alphabet (base 32 without e, o, u, t), as Nix prints hashes and store paths.
pub const NIX32_CHARS: &[u8; 32] = b"0123456789abcdfghijklmnpqrsvwxyz";

/// A store hash as it appears in a request or a store path.
pub type StoreHash = [u8; STORE_HASH_CHARS];

/// What a request asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Route {
    CacheInfo,
    NarInfo(StoreHash),
    Nar(StoreHash),
}

/// One whole request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Request {
    pub route: Route,
    /// `HEAD`: the answer's head only (`nix` asks whether a path is there this way).
    pub head_only: bool,
    /// False when the client asked to close, or spoke HTTP/1.0.
    pub keep_alive: bool,
    /// Bytes of the buffer the head used.
    pub consumed: usize,
}

/// What the buffered bytes of a connection are so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Parse {
    /// A prefix of an acceptable head: read more.
    Incomplete,
    Complete(Request),
    /// Answer this and close.
    Refused(Refusal),
}

/// A request the cache refuses, by its status.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// 400: not an HTTP request, or a target with `..`, `//`, a query or odd bytes.
    BadRequest,
    /// 404: not a cache path, or a store hash this box does not serve.
    NotFound,
    /// 405: a method other than GET and HEAD (HEAD only for narinfos and the cache info).
    MethodNotAllowed,
    /// 408: the head did not arrive within the idle timeout.
    Timeout,
    /// 431: the head is longer than `REQUEST_HEAD_BYTES_MAX`.
    HeadTooLarge,
    /// 503: every download slot is busy; try again later.
    Busy,
    /// 503: a hash not found while the box re-reads what it serves (its GC roots changed), or
    /// while a reading that failed waits to be tried again. Not 404, which Nix remembers as
    /// "not there" (`narinfo-cache-negative-ttl`, an hour by default): a peer asking in that
    /// window would build what this box is about to serve, and not ask it again for an hour.
    /// Nix retries a 503 (five tries over about five seconds), by when the table is whole again.
    Refreshing,
    /// 505: an HTTP version other than 1.0 and 1.1.
    Version,
}

impl Refusal {
    pub fn status(self) -> u16 {
        match self {
            Refusal::BadRequest => 400,
            Refusal::NotFound => 404,
            Refusal::MethodNotAllowed => 405,
            Refusal::Timeout => 408,
            Refusal::HeadTooLarge => 431,
            Refusal::Busy | Refusal::Refreshing => 503,
            Refusal::Version => 505,
        }
    }

    /// The body: what happened, for whoever reads it with curl.
    pub fn message(self) -> &'static str {
        match self {
            Refusal::BadRequest => {
                "bad request: a cache path is /nix-cache-info, /HASH.narinfo or /nar/HASH.nar\n"
            }
            Refusal::NotFound => {
                "not found: this box serves only the closures of the services it built\n"
            }
            Refusal::MethodNotAllowed => "method not allowed: the cache takes GET and HEAD\n",
            Refusal::Timeout => "request timeout: the request did not arrive in time\n",
            Refusal::HeadTooLarge => "request header fields too large\n",
            Refusal::Busy => "busy: every download slot of this box is taken; try again later\n",
            Refusal::Refreshing => {
                "refreshing: this box is re-reading what it serves; try again in a second\n"
            }
            Refusal::Version => "HTTP version not supported: use HTTP/1.1\n",
        }
    }

    /// The answer for a store hash the closure table does not hold: 404, or 503 while the table
    /// is incomplete (`refreshing`: being read again, or its last reading failed and is tried
    /// again soon), when the hash may be among what has not arrived yet.
    pub fn miss(refreshing: bool) -> Refusal {
        if refreshing {
            Refusal::Refreshing
        } else {
            Refusal::NotFound
        }
    }
}

/// A closure query that lists nothing though it was given roots failed (a root's closure holds
/// the root). The usual cause is transient (a `daemon-reload` racing the query's transient unit),
/// and the box answers 503 until a reading succeeds, so the first retry is soon: 1 s, within the
/// five seconds Nix keeps retrying a 503. A query that keeps failing (a broken store) is asked
/// half as often each time, down to once a minute.
pub fn closure_retry_ms(failures: u32) -> u64 {
    const FIRST_MS: u64 = 1_000;
    const MAX_MS: u64 = 60_000;
    let doublings = failures.saturating_sub(1).min(6);
    (FIRST_MS << doublings).min(MAX_MS)
}

/// Whether a box whose closure query failed `failures` times in a row withdraws its offer (its
/// status offers nothing until a query lists its builds again). Not at the first failures: the
/// usual one is transient and the box answers 503 meanwhile, which peers retry, while a peer
/// that sees no offer builds the version itself. From the third (about 3 s of failing, with
/// `closure_retry_ms`), peers stop asking a box that cannot serve.
pub fn withdraws_offer(failures: u32) -> bool {
    failures >= 3
}

/// Reads a request head from the start of `buf`. The outcome depends only on the bytes: a head
/// still arriving is `Incomplete` until it ends or passes `REQUEST_HEAD_BYTES_MAX`.
pub fn parse_request(buf: &[u8]) -> Parse {
    let window = &buf[..buf.len().min(REQUEST_HEAD_BYTES_MAX)];
    let Some(end) = find(window, b"\r\n\r\n") else {
        return if buf.len() >= REQUEST_HEAD_BYTES_MAX {
            Parse::Refused(Refusal::HeadTooLarge)
        } else {
            Parse::Incomplete
        };
    };
    let head = &window[..end];
    let line_end = find(head, b"\r\n").unwrap_or(head.len());
    let (line, headers) = head.split_at(line_end);
    match request_line(line) {
        Ok((route, head_only, http11)) => Parse::Complete(Request {
            route,
            head_only,
            keep_alive: http11 && !asks_to_close(headers),
            consumed: end + 4,
        }),
        Err(refusal) => Parse::Refused(refusal),
    }
}

/// `METHOD SP TARGET SP HTTP/1.x`: the route, whether it is HEAD, and whether HTTP/1.1.
fn request_line(line: &[u8]) -> Result<(Route, bool, bool), Refusal> {
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(Refusal::BadRequest);
    };
    let http11 = match version {
        b"HTTP/1.1" => true,
        b"HTTP/1.0" => false,
        v if v.starts_with(b"HTTP/") => return Err(Refusal::Version),
        _ => return Err(Refusal::BadRequest),
    };
    let route = route(target)?;
    let head_only = match method {
        b"GET" => false,
        b"HEAD" if !matches!(route, Route::Nar(_)) => true,
        m if !m.is_empty() && m.iter().all(u8::is_ascii_uppercase) => {
            return Err(Refusal::MethodNotAllowed)
        }
        _ => return Err(Refusal::BadRequest),
    };
    Ok((route, head_only, http11))
}

/// The route of a request target. Anything that could name a file outside the cache's paths
/// (`..`, `//`, `\`, a query, a fragment, percent-escapes, control bytes) is refused before it
/// is looked at, though no target is ever used as a path.
pub fn route(target: &[u8]) -> Result<Route, Refusal> {
    let odd = |b: &u8| !b.is_ascii_graphic() || b"\\?#%".contains(b);
    if target.first() != Some(&b'/')
        || target.iter().any(odd)
        || find(target, b"..").is_some()
        || find(target, b"//").is_some()
    {
        return Err(Refusal::BadRequest);
    }
    let path = &target[1..];
    if path == b"nix-cache-info" {
        return Ok(Route::CacheInfo);
    }
    if let Some(hash) = path.strip_suffix(b".narinfo").and_then(store_hash) {
        return Ok(Route::NarInfo(hash));
    }
    let nar = path
        .strip_prefix(b"nar/")
        .and_then(|p| p.strip_suffix(b".nar"));
    nar.and_then(store_hash)
        .map(Route::Nar)
        .ok_or(Refusal::NotFound)
}

/// `text` as a store hash: exactly 32 nix32 characters.
pub fn store_hash(text: &[u8]) -> Option<StoreHash> {
    (text.len() == STORE_HASH_CHARS && text.iter().all(|c| NIX32_CHARS.contains(c)))
        .then(|| text.try_into().expect("length checked"))
}

/// Whether the headers hold `Connection: close` (names and values in any case).
fn asks_to_close(headers: &[u8]) -> bool {
    headers.split(|&b| b == b'\n').any(|line| {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        name.eq_ignore_ascii_case(b"connection") && value.eq_ignore_ascii_case(b"close")
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The box's one upload throttle: every NAR byte sent to any client takes a token, so the box's
/// uplink carries at most `rate` bytes a second on average, however many clients download. Up to
/// a tenth of a second's worth may be sent at once, so a loop that wakes every 50 ms keeps the
/// rate without bursts a metered link would notice.
///
/// Tokens are counted in byte-milliseconds (a byte is 1000), so a refill of any number of
/// milliseconds is exact and the rate does not drift by rounding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TokenBucket {
    /// Bytes a second; 0 is unlimited.
    rate: u64,
    /// The most byte-milliseconds held.
    capacity: u64,
    held: u64,
    last_ms: u64,
}

impl TokenBucket {
    /// A bucket for `rate` bytes a second (0: unlimited), full at `now_ms`.
    pub const fn new(rate: u64, now_ms: u64) -> TokenBucket {
        // A tenth of a second's worth, and at least a byte.
        let capacity = if rate / 10 > 0 { rate / 10 } else { 1 };
        TokenBucket {
            rate,
            capacity: capacity * 1000,
            held: capacity * 1000,
            last_ms: now_ms,
        }
    }

    pub fn unlimited(&self) -> bool {
        self.rate == 0
    }

    /// Bytes that may be sent now (`usize::MAX` when unlimited).
    pub fn available(&mut self, now_ms: u64) -> usize {
        if self.unlimited() {
            return usize::MAX;
        }
        self.refill(now_ms);
        usize::try_from(self.held / 1000).unwrap_or(usize::MAX)
    }

    /// Bytes each of `clients` may send now, so that they share the tokens evenly rather than
    /// the first one served taking them all (`usize::MAX` when unlimited).
    pub fn share(&mut self, now_ms: u64, clients: usize) -> usize {
        self.available(now_ms) / clients.max(1)
    }

    /// Takes up to `want` bytes' tokens and returns how many were granted.
    pub fn take(&mut self, now_ms: u64, want: usize) -> usize {
        let granted = want.min(self.available(now_ms));
        if !self.unlimited() {
            self.held -= granted as u64 * 1000;
        }
        granted
    }

    /// Gives back tokens taken for bytes the socket did not take after all.
    pub fn give_back(&mut self, bytes: usize) {
        if !self.unlimited() {
            self.held = (self.held + bytes as u64 * 1000).min(self.capacity);
        }
    }

    fn refill(&mut self, now_ms: u64) {
        let elapsed = now_ms.saturating_sub(self.last_ms);
        self.last_ms = self.last_ms.max(now_ms);
        let added = self.rate.saturating_mul(elapsed);
        self.held = self.held.saturating_add(added).min(self.capacity);
    }
}

/// The registration of the store path with hash `hash` in `table`, the facts of this box's
/// GC roots' closure (`nix-store --dump-db` over `nix-store --query --requisites`): the only
/// paths the cache serves. `None` for any other hash, whatever else the store holds.
pub fn find_registration<'t>(table: &'t [u8], hash: &StoreHash) -> Option<Registration<'t>> {
    let mut rest = table;
    while let Some((r, used)) = narinfo::next_registration(rest) {
        if r.path.get(11..11 + STORE_HASH_CHARS) == Some(&hash[..]) {
            return Some(r);
        }
        rest = &rest[used..];
    }
    None
}

/// How many registrations lead `table`, and the bytes they take: a table cut short (its
/// buffer was full) keeps only those.
pub fn whole_registrations(table: &[u8]) -> (usize, usize) {
    let (mut count, mut len) = (0, 0);
    while let Some((_, used)) = narinfo::next_registration(&table[len..]) {
        (count, len) = (count + 1, len + used);
    }
    (count, len)
}
