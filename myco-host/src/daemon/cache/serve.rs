//! The cache's slots: reading a request, answering it from the closure table and `nix-store`,
//! and passing a NAR on under the throttle; and the closure table's refresh.

use super::*;
use myco_core::cache::{
    find_registration, whole_registrations, write_fingerprint, write_narinfo, Registration,
};
use nix::fcntl::FcntlArg;

impl Slot {
    pub(super) fn new(buf: &'static mut [u8; SLOT_BYTES]) -> Slot {
        Slot {
            stream: None,
            buf,
            filled: 0,
            start: 0,
            end: 0,
            phase: Phase::Reading,
            deadline_ms: 0,
            idle_ms: IDLE_MS,
            allowance: 0,
            dead: false,
        }
    }

    pub(super) fn open(&mut self, stream: TcpStream, now_ms: u64, idle_ms: u64) {
        (self.filled, self.start, self.end) = (0, 0, 0);
        self.phase = Phase::Reading;
        self.idle_ms = idle_ms;
        self.deadline_ms = now_ms + idle_ms;
        self.stream = Some(stream);
    }

    /// Open, between requests, with nothing buffered: may give way to a new client.
    pub(super) fn idle(&self) -> bool {
        self.is_open() && matches!(self.phase, Phase::Reading) && self.filled == 0
    }

    pub(super) fn is_open(&self) -> bool {
        self.stream.is_some() && !self.dead
    }

    /// Closes the connection: its child is told to stop now; the fds close in `reap`, once the
    /// loop has forgotten them.
    pub(super) fn close(&mut self) {
        if let Phase::Nar { child: Some(child) } = &mut self.phase {
            child.kill_group();
        }
        self.dead = self.stream.is_some();
    }

    /// Ends what `close` began: the child is reaped and the socket closed.
    pub(super) fn reap(&mut self) {
        let phase = std::mem::replace(&mut self.phase, Phase::Reading);
        if let Phase::Nar { child: Some(child) } = phase {
            child.kill_now_and_reap();
        }
        if let Some(stream) = self.stream.take() {
            linger(stream, &mut self.buf[..]);
        }
        self.dead = false;
        (self.filled, self.start, self.end) = (0, 0, 0);
    }

    /// Says `r` without waiting (a timeout: the client may not read at all).
    pub(super) fn refuse_now(&mut self, r: Refusal) {
        let n = refusal_answer(r, &mut self.buf[..]);
        if let Some(stream) = self.stream.as_mut() {
            let _ = stream.write(&self.buf[..n]);
        }
    }

    /// Queues `r`'s answer: a 404 keeps the connection open, other refusals close it.
    fn refuse(&mut self, r: Refusal, keep_alive: bool, now_ms: u64) {
        let n = refusal_answer(r, &mut self.buf[..]);
        let keep_alive = keep_alive && r == Refusal::NotFound;
        self.queue((0, n), keep_alive, now_ms);
    }

    /// A 500 with `why`: this box could not read a path it serves.
    fn fail(&mut self, why: &str, now_ms: u64) {
        let n = write_head(&mut self.buf[..], 500, "text/plain", Some(why.len()), false);
        self.buf[n..n + why.len()].copy_from_slice(why.as_bytes());
        self.queue((0, n + why.len()), false, now_ms);
    }

    /// Answers `registration`'s narinfo, signed by `key` under `name`.
    fn narinfo(
        &mut self,
        registration: &Registration<'_>,
        (key, name): (&SigningKey, &[u8]),
        (head_only, keep_alive): (bool, bool),
        now_ms: u64,
    ) {
        let Some(n) = write_fingerprint(registration, &mut self.buf[..]) else {
            return self.fail(
                "the path's references are too long for this cache\n",
                now_ms,
            );
        };
        let signature = key.sign(&self.buf[..n]);
        let facts = NarInfoFacts {
            registration: *registration,
            key_name: name,
            signature: &signature,
        };
        let Some(len) = write_narinfo(&facts, &mut self.buf[HEAD_ROOM..]) else {
            return self.fail("the path's narinfo is too long for this cache\n", now_ms);
        };
        let mut head = [0u8; HEAD_ROOM];
        let h = write_head(&mut head, 200, "text/x-nix-narinfo", Some(len), keep_alive);
        self.buf[HEAD_ROOM - h..HEAD_ROOM].copy_from_slice(&head[..h]);
        let end = if head_only {
            HEAD_ROOM
        } else {
            HEAD_ROOM + len
        };
        self.queue((HEAD_ROOM - h, end), keep_alive, now_ms);
    }

    fn queue(&mut self, (start, end): (usize, usize), keep_alive: bool, now_ms: u64) {
        (self.start, self.end) = (start, end);
        self.phase = Phase::Answering { keep_alive };
        self.answer(now_ms);
    }

    /// Sends what the client takes of the answer; then waits for the next request, or closes.
    pub(super) fn answer(&mut self, now_ms: u64) {
        let Phase::Answering { keep_alive } = self.phase else {
            return;
        };
        if self.send(now_ms, usize::MAX).is_err() {
            return self.close();
        }
        if self.start < self.end {
            return;
        }
        if !keep_alive {
            return self.close();
        }
        (self.filled, self.start, self.end) = (0, 0, 0);
        self.phase = Phase::Reading;
    }

    /// Writes up to `most` bytes of `buf[start..end]`; the bytes written. `Err`: the client is
    /// gone.
    fn send(&mut self, now_ms: u64, most: usize) -> Result<usize, ()> {
        let stream = self.stream.as_mut().ok_or(())?;
        let mut sent = 0;
        while self.start < self.end && sent < most {
            let upto = self.end.min(self.start.saturating_add(most - sent));
            match stream.write(&self.buf[self.start..upto]) {
                Ok(0) => return Err(()),
                Ok(n) => {
                    (self.start, sent) = (self.start + n, sent + n);
                    self.deadline_ms = now_ms + self.idle_ms;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return Err(()),
            }
        }
        Ok(sent)
    }

    /// Reads what arrived of a request head; false when the client went away.
    fn read_head(&mut self) -> bool {
        let Some(stream) = self.stream.as_mut() else {
            return false;
        };
        while self.filled < rules::REQUEST_HEAD_BYTES_MAX {
            match stream.read(&mut self.buf[self.filled..rules::REQUEST_HEAD_BYTES_MAX]) {
                Ok(0) => return false,
                Ok(n) => self.filled += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return false,
            }
        }
        true
    }
}

impl Cache {
    pub(super) fn read_request(&mut self, i: usize, now_ms: u64) {
        let s = &mut self.slots[i];
        if !s.read_head() {
            return s.close();
        }
        if s.filled == 0 {
            return;
        }
        match rules::parse_request(&s.buf[..s.filled]) {
            Parse::Incomplete => {}
            Parse::Refused(r) => {
                self.stats.refused += 1;
                s.refuse(r, false, now_ms);
            }
            Parse::Complete(request) => {
                self.stats.requests += 1;
                // Pipelined requests are not read: answer this one and close.
                let keep_alive = request.keep_alive && request.consumed == s.filled;
                self.route(i, request.route, (request.head_only, keep_alive), now_ms);
            }
        }
    }

    fn route(
        &mut self,
        i: usize,
        route: Route,
        (head_only, keep_alive): (bool, bool),
        now_ms: u64,
    ) {
        let hash = match route {
            Route::CacheInfo => {
                let s = &mut self.slots[i];
                let body = rules::CACHE_INFO;
                let kind = "text/x-nix-cache-info";
                let n = write_head(&mut s.buf[..], 200, kind, Some(body.len()), keep_alive);
                s.buf[n..n + body.len()].copy_from_slice(body);
                let end = if head_only { n } else { n + body.len() };
                return s.queue((0, end), keep_alive, now_ms);
            }
            Route::NarInfo(hash) | Route::Nar(hash) => hash,
        };
        let table = &self.closure.table[..self.closure.len];
        let Some(registration) = find_registration(table, &hash) else {
            let miss = Refusal::miss(self.closure.incomplete());
            match miss {
                Refusal::NotFound => self.stats.not_found += 1,
                _ => self.stats.busy += 1,
            }
            return self.slots[i].refuse(miss, keep_alive, now_ms);
        };
        if let Route::NarInfo(_) = route {
            self.stats.narinfos += 1;
            let signer = (&self.key, self.key_name.as_str().as_bytes());
            let how = (head_only, keep_alive);
            return self.slots[i].narinfo(&registration, signer, how, now_ms);
        }
        let nar = |s: &Slot| s.is_open() && matches!(s.phase, Phase::Nar { .. });
        if self.slots.iter().filter(|s| nar(s)).count() >= NARS_MAX {
            self.stats.busy += 1;
            return self.slots[i].refuse(Refusal::Busy, false, now_ms);
        }
        let tools = (&mut self.argv, self.nix_store.as_str(), &self.env[..]);
        let spawned = spawn_dump(tools, registration.path);
        let s = &mut self.slots[i];
        match spawned {
            Ok(child) => {
                self.stats.nars += 1;
                let kind = "application/x-nix-archive";
                let n = write_head(&mut s.buf[..], 200, kind, None, false);
                (s.start, s.end) = (0, n);
                s.phase = Phase::Nar { child: Some(child) };
            }
            Err(e) => {
                let e = format_args!("binary cache: cannot run nix-store --dump: {e}");
                self.log.log(Level::Error, e);
                s.fail("cannot run nix-store on this box\n", now_ms);
            }
        }
    }

    /// Passes the NAR on: what the throttle allows of what is buffered, then more from
    /// `nix-store --dump`; closes once it all went, or when the client went away.
    pub(super) fn pump_nar(&mut self, i: usize, now_ms: u64) {
        let s = &mut self.slots[i];
        for _ in 0..NAR_ROUNDS {
            if s.start == s.end {
                let Phase::Nar { child } = &mut s.phase else {
                    return;
                };
                let Some(c) = child.as_mut() else {
                    return s.close();
                };
                match c.read_into(&mut s.buf[..]) {
                    Some(0) => return,
                    Some(n) => (s.start, s.end) = (0, n),
                    None => {
                        self.closed |= 1 << (2 + 2 * i);
                        child.take().expect("checked").kill_now_and_reap();
                        continue;
                    }
                }
            }
            let granted = self.bucket.take(now_ms, (s.end - s.start).min(s.allowance));
            if granted == 0 {
                // Waiting for the throttle is not the client's idleness.
                s.deadline_ms = now_ms + s.idle_ms;
                return;
            }
            let Ok(sent) = s.send(now_ms, granted) else {
                self.bucket.give_back(granted);
                return s.close();
            };
            self.bucket.give_back(granted - sent);
            s.allowance -= sent;
            self.stats.nar_bytes += sent as u64;
            if sent < granted {
                return;
            }
        }
    }

    /// Starts reading the closure table again when the GC root directory changed, or when the
    /// last refresh failed and its retry is due.
    pub(super) fn refresh_closure(&mut self, now_ms: u64) {
        let c = &mut self.closure;
        if c.retry_at_ms.is_some_and(|at| now_ms >= at) {
            (c.retry_at_ms, c.stale) = (None, true);
        }
        let Some((dir, seen)) = c.roots.as_mut() else {
            return;
        };
        let Ok(stat) = nix::sys::stat::fstat(&*dir) else {
            return;
        };
        let mtime = (stat.st_mtime, stat.st_mtime_nsec);
        if mtime != *seen {
            *seen = mtime;
            c.stale = true;
        }
        if !c.stale || c.child.is_some() {
            return;
        }
        c.stale = false;
        let tools = (
            c.systemd_run.as_str(),
            self.nix_store.as_str(),
            &self.env[..],
        );
        match spawn_closure(&mut self.argv, tools, dir, c.privileged.as_ref()) {
            Ok(Some(child)) => {
                c.len = 0;
                c.child = Some(child);
            }
            Ok(None) => {
                (c.len, self.stats.paths) = (0, 0);
                c.listed();
            }
            Err(e) => {
                // Asked again as a query that listed nothing is: the old table is still whole.
                let retry_ms = c.failed(now_ms);
                self.log.log(
                    Level::Warning,
                    format_args!("binary cache: cannot list what this box built: {e}; asked again in {retry_ms} ms"),
                );
            }
        }
    }

    /// Reads the refresh's output into the table; whole registrations only, and what does not
    /// fit is left out (and said). While it runs the table holds what has arrived so far: a path
    /// not yet read is 503 until it ends (`Refusal::miss`), which Nix retries.
    pub(super) fn read_closure(&mut self, now_ms: u64) {
        let c = &mut self.closure;
        let Some(child) = c.child.as_mut() else {
            return;
        };
        let mut scratch = [0u8; 4096];
        loop {
            let full = c.len == c.table.len();
            let buf = if full {
                &mut scratch[..]
            } else {
                &mut c.table[c.len..]
            };
            match child.read_into(buf) {
                Some(0) => return,
                Some(_) if full => c.overflow = true,
                Some(n) => c.len += n,
                None => break,
            }
        }
        self.closed |= 1 << TOKENS;
        c.child.take().expect("checked").kill_and_reap();
        let overflow = std::mem::take(&mut c.overflow);
        let (paths, len) = whole_registrations(&c.table[..c.len]);
        c.len = len;
        self.stats.paths = paths as u64;
        if overflow {
            self.log.log(
                Level::Warning,
                format_args!("binary cache: the facts of this box's builds' closure are over {CLOSURE_BYTES} bytes; only {paths} store paths are served"),
            );
        }
        // A refresh runs only with roots, and a root's closure holds the root: none is a failed
        // query (its exit status goes to myco-priv, not here), asked again later.
        if paths == 0 {
            let retry_ms = c.failed(now_ms);
            c.offer_due |= myco_core::cache::withdraws_offer(c.failures);
            self.log.log(
                Level::Warning,
                format_args!("binary cache: the closure query of this box's builds listed no store path; asked again in {retry_ms} ms, answering 503 until then"),
            );
            return;
        }
        c.listed();
        self.log.log(
            Level::Info,
            format_args!("binary cache: serving {paths} store paths"),
        );
    }
}

/// Closes `stream` after reading what the client sent that was not read (the rest of a head
/// too large, a request beyond a refusal), as far as it has arrived: closing a socket with unread
/// input resets the connection, and the reset can overtake the answer just sent. Best effort,
/// never waiting.
pub(super) fn linger(mut stream: TcpStream, scratch: &mut [u8]) {
    let _ = stream.shutdown(std::net::Shutdown::Write);
    for _ in 0..4 {
        match stream.read(scratch) {
            Ok(n) if n > 0 => {}
            _ => return,
        }
    }
}

/// `nix-store --dump PATH`, its stdout to be read. It reads the path from the filesystem, not
/// the store's database, so it runs as the daemon's own child, under the daemon's read-only view
/// of `/nix`.
fn spawn_dump(
    (argv, nix_store, env): (&mut Argv, &str, &[CString]),
    path: &[u8],
) -> std::io::Result<Child> {
    argv.clear();
    let fits = "three short arguments fit";
    argv.push(&[nix_store.as_bytes()]).expect(fits);
    argv.push(&[b"--dump"]).expect(fits);
    argv.push(&[path]).expect(fits);
    let child = spawn::spawn(argv, &super::super::transient::env_refs(env))?;
    // A larger pipe lets `nix-store` run ahead of the socket by more than the default 64 KiB,
    // so the loop and it wake each other less often. Kernel memory, not the daemon's; a box
    // whose limit (fs.pipe-max-size) is lower keeps the default.
    let _ = nix::fcntl::fcntl(child.stdout(), FcntlArg::F_SETPIPE_SZ(NAR_PIPE_BYTES));
    Ok(child)
}

/// The facts of the closure of the GC roots in `dir`, in the transient unit
/// `myco-cache-closure`, spawned, or asked of `privileged`, which runs the same line. `None`
/// without roots.
fn spawn_closure(
    argv: &mut Argv,
    (systemd_run, nix_store, env): (&str, &str, &[CString]),
    dir: &File,
    privileged: Option<&crate::privileged::client::Client>,
) -> std::io::Result<Option<Child>> {
    if !closure_argv(argv, (systemd_run, nix_store, env), dir)? {
        return Ok(None);
    }
    if let Some(client) = privileged {
        // The request has no fields: a few bytes of frame.
        let request = myco_core::privileged::Request::CacheClosure;
        return client.start(&request, &mut [0u8; 16], None).map(Some);
    }
    spawn::spawn(argv, &super::super::transient::env_refs(env)).map(Some)
}

/// The command line of the closure query into `argv`: `systemd-run ... -- sh -c "'nix-store'
/// --query --requisites 'ROOT'... | xargs -r 'nix-store' --dump-db"`. False without roots.
/// `myco-priv` runs the same line.
///
/// The script names its paths itself, single-quoted, with no `$` and no `;`: a `daemon-reload`
/// between systemd-run's creation of the unit and its start makes systemd (252) read the
/// command back from /run, where it wrote `$` and `;` escaped, and it reads `\$` and `\;` back
/// as two characters each (the testbed showed a script of `"$@"` run as `$nix_store: not
/// found`). Hence only paths of the store's own characters go in (`script_safe`), which also
/// leaves the shell nothing to interpret in them.
pub fn closure_argv(
    argv: &mut Argv,
    (systemd_run, nix_store, env): (&str, &str, &[CString]),
    dir: &File,
) -> std::io::Result<bool> {
    if !script_safe(nix_store.as_bytes()) {
        return Err(std::io::Error::other(
            "the nix-store path has characters the closure query's script cannot hold",
        ));
    }
    argv.clear();
    let unit = super::super::transient::Unit {
        systemd_run,
        name: &[b"myco-cache-closure"],
        runtime_max_s: Some(CLOSURE_TIMEOUT_S),
    };
    let fits = "the prefix and the script's start fit";
    super::super::transient::push_prefix(argv, &unit, env).expect(fits);
    argv.push(&[b"sh"]).expect(fits);
    argv.push(&[b"-c"]).expect(fits);
    let store = nix_store.as_bytes();
    argv.push(&[b"'", store, b"' --query --requisites"])
        .expect(fits);
    let mut target = [0u8; crate::path::PATH_BYTES_MAX];
    let (mut roots, mut full) = (0usize, false);
    crate::path::for_each_name(dir, |name| {
        // A root that is not a store path, or whose path is gone, would fail the whole query:
        // left out. (`stat` takes the bytes through a stack buffer.)
        let Some(path) = crate::path::read_link_at(dir, name, &mut target).filter(|p| {
            p.starts_with(b"/nix/store/") && script_safe(p) && nix::sys::stat::stat(*p).is_ok()
        }) else {
            return;
        };
        full |= argv.extend_last(&[b" '", path, b"'"]).is_err();
        roots += 1;
    })?;
    full |= argv
        .extend_last(&[b" | xargs -r '", store, b"' --dump-db"])
        .is_err();
    if full {
        return Err(std::io::Error::other(
            "more GC roots than one nix-store command line takes",
        ));
    }
    Ok(roots > 0)
}

/// Whether `path` is made only of the characters of a store path's name
/// (`myco_core::cache::store_name_byte`) and `/`: nothing a shell between single quotes, or
/// systemd in a unit file, reads as more.
fn script_safe(path: &[u8]) -> bool {
    !path.is_empty()
        && path
            .iter()
            .all(|&b| b == b'/' || myco_core::cache::store_name_byte(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_store_characters_go_in_the_script() {
        assert!(script_safe(
            b"/nix/store/0123456789abcdfghijklmnpqrsvwxyz-py3.11-a+b_c.d?e=f"
        ));
        assert!(script_safe(b"/run/current-system/sw/bin/nix-store"));
        for bad in [
            &b""[..],
            b"/nix/store/x'y",
            b"/nix/store/$x",
            b"/a;b",
            b"/a b",
            b"/a\\b",
            b"%n",
        ] {
            assert!(!script_safe(bad), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn a_nix_store_path_the_script_cannot_hold_is_refused() {
        let mut argv = Argv::leaked();
        let dir = File::open("/").unwrap();
        let tools = ("systemd-run", "/opt/my nix/bin/nix-store", &[][..]);
        let refused = closure_argv(&mut argv, tools, &dir).unwrap_err();
        assert!(refused.to_string().contains("cannot hold"), "{refused}");
    }
}
