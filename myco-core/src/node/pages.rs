//! Push-pull of member tables (memberlist's join and `PushPullInterval`): how a box learns the
//! whole membership in one exchange instead of by piggybacking over tens of seconds.
//!
//! - A node that hears from one of its join addresses for the first time sends that node its whole
//!   table as `Pull` pages; the join node answers with its own whole table as `Push` pages.
//! - Every `member_sync_interval_ms` of its profile a node sends one `Sync` page (part of its
//!   table, and the digest of its live set) to a random live member. A receiver whose live set
//!   differs starts a push-pull with the sender, so a node that misses members (or holds a death
//!   the other has not heard of) is repaired within about one interval instead of waiting for
//!   piggybacks.
//!
//! A whole table is at most `MEMBER_PAGES_MAX` frames and goes to one member at most once per
//! `MEMBER_PULL_MIN_MS`, so a peer that keeps asking is answered, never amplified. Every record
//! of a page goes through the same precedence rules as a piggybacked update (`apply_member`), so
//! a page can only tell what a ping could.

use super::*;
use crate::config::{MEMBER_PAGES_MAX, MEMBER_PAGE_RECORDS, MEMBER_PULL_MIN_MS};
use crate::schema::message::PageKind;

impl Node {
    /// The periodic page to one random live member: up to a page of records from a random
    /// place in the table, and the digest that tells the receiver whether to pull.
    pub(super) fn send_sync_page(&mut self, sink: &mut impl Sink, peer: u64) {
        let Some(to) = self.members.get(peer).map(|m| m.addr) else {
            return;
        };
        let n = self.members.list().len();
        let start = self.rng.below(n.max(1) as u64) as usize;
        let list = (0..n.min(MEMBER_PAGE_RECORDS))
            .map(|i| self.members.list()[(start + i) % n].update())
            .collect();
        self.send_page(sink, to, PageKind::Sync, list);
    }

    /// Sends member `peer` this node's whole table as `kind` pages, unless it sent it one less
    /// than `MEMBER_PULL_MIN_MS` ago. A table of only this node still sends one (empty) page, so
    /// a lonely joiner's pull is answered.
    pub(super) fn send_table(&mut self, sink: &mut impl Sink, peer: u64, kind: PageKind) {
        let now = self.out.now;
        let Some(m) = self.members.get_mut(peer) else {
            return;
        };
        if m.paged_at
            .is_some_and(|t| now.since_ms(t) < MEMBER_PULL_MIN_MS)
        {
            return;
        }
        m.paged_at = Some(now);
        self.out.counters.tables_sent += 1;
        let to = m.addr;
        let n = self.members.list().len();
        let mut pages = 0;
        let mut start = 0;
        while pages == 0 || start < n {
            let end = n.min(start + MEMBER_PAGE_RECORDS);
            let list = self.members.list()[start..end]
                .iter()
                .map(Member::update)
                .collect();
            self.send_page(sink, to, kind, list);
            start = end;
            pages += 1;
        }
        assert!(
            pages <= MEMBER_PAGES_MAX,
            "a table is at most MEMBER_PAGES_MAX pages"
        );
    }

    fn send_page(
        &mut self,
        sink: &mut impl Sink,
        to: PeerAddr,
        kind: PageKind,
        list: Vec<MemberUpdate, MEMBER_PAGE_RECORDS>,
    ) {
        let live = Digest(self.members.live_digest(self.id));
        let msg = Message::MemberPage { kind, live, list };
        self.out.send(sink, to, self.store.root(), msg);
    }

    /// Applies a page's records like any membership update, then answers as its kind asks.
    pub(super) fn handle_page(
        &mut self,
        now: Instant,
        sender: u64,
        kind: PageKind,
        live: Digest,
        list: &[MemberUpdate],
        sink: &mut impl Sink,
    ) {
        for u in list {
            self.apply_member(now, u, sender, sink);
        }
        match kind {
            PageKind::Sync if live.0 != self.members.live_digest(self.id) => {
                self.send_table(sink, sender, PageKind::Pull);
            }
            PageKind::Pull => self.send_table(sink, sender, PageKind::Push),
            PageKind::Sync | PageKind::Push => {}
        }
    }
}
