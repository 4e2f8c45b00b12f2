//! The daemon's one preallocated arena: every table, buffer and ring `myco-d` needs, sized from
//! constants and laid out in statics (`static_cell`), so the memory the daemon can ever use for
//! them is fixed at link time and costs nothing until touched. `budget.rs` writes the same sizes
//! as one commented sum and checks that they agree.
//!
//! The zero-filled buffers are one `ConstStaticCell`: a constant all-zero value, so the kernel
//! maps it from `.bss` and a page becomes resident only when the daemon first writes it (a quiet
//! daemon's answer buffers cost nothing). The node, the core's executor and the daemon struct
//! are built at start, so they are `StaticCell`s written once by the start-up thread. The flight
//! recorder's ring has a cell of its own: the logger takes it before the daemon starts.
//!
//! Invariants: the arena is taken once per process (`Arena::take`, which also claims the hand-off
//! in [`handoff`]), by the thread that builds the daemon; the thread that runs the loop may touch
//! the daemon only after `enter_loop`. Tests that build one part alone borrow a leaked heap
//! buffer ([`leak_bytes`]) instead, so any number of them can run in one process.

pub mod handoff;

use crate::daemon::cache;
use crate::daemon::conns::{ANSWER_BYTES, CONNECTIONS_MAX};
use crate::daemon::dns::{DNS_TCP_MAX, MESSAGE_BYTES_MAX, UDP_QUERY_BYTES_MAX};
use crate::daemon::events::{Record, EVENTS_MAX};
use crate::daemon::Daemon;
use crate::flight::FLIGHT_RECORDER_BYTES;
use crate::http::request::RequestBuffer;
use crate::spawn::{ARGV_BYTES, OUTPUT_BYTES};
use core::mem::MaybeUninit;
use myco_core::dns::UDP_BYTES_MAX;
use myco_core::unit::UNIT_BYTES_MAX;
use myco_core::Node;
use static_cell::{ConstStaticCell, StaticCell};

/// The atomics `handoff` is written against: std's here, loom's in `tests/loom.rs`.
mod atomics {
    pub use std::sync::atomic::{AtomicU8, Ordering};
}

/// One API connection's buffers.
pub struct ApiSlot {
    pub request: RequestBuffer,
    pub answer: [u8; ANSWER_BYTES],
}

/// One DNS-over-TCP connection's buffers: a query and a whole answer, each behind its 2-byte
/// length.
pub struct DnsSlot {
    pub input: [u8; 2 + UDP_QUERY_BYTES_MAX],
    pub output: [u8; 2 + MESSAGE_BYTES_MAX],
}

/// The executor's buffers: one rendered unit, one unit file read back (the builder's, to find
/// what a unit runs), argument lists for `systemctl`, `/logs`, the builder, the collector and
/// the exec health checks,
/// and a child's output for each of the three lanes (units, builds, collection).
pub struct ExecutorBuffers {
    pub unit: [u8; UNIT_FILE_TEXT_BYTES],
    /// A request to `myco-priv` (`--privileged`), encoded.
    pub request: [u8; PRIVILEGED_FRAME_BYTES],
    pub unit_file: [u8; crate::daemon::build::UNIT_FILE_BYTES_MAX],
    pub argv: [[u8; ARGV_BYTES]; ARGVS],
    pub output: [[u8; OUTPUT_BYTES]; OUTPUTS],
    /// A kept version's record, written to disk (`daemon::kept`).
    pub kept: [u8; myco_core::executor::rollout::KEPT_RECORD_BYTES_MAX],
}

/// What the executor takes from the arena: a place for the core's executor, and its buffers.
pub struct ExecutorArena {
    pub core: &'static mut MaybeUninit<myco_core::executor::Executor>,
    pub buffers: &'static mut ExecutorBuffers,
}

impl ExecutorArena {
    /// On the heap, never freed, for tests that build an executor alone.
    pub fn leaked() -> ExecutorArena {
        let mut buffers = Box::<ExecutorBuffers>::new_uninit();
        // SAFETY: the pointer is to one uninitialised `ExecutorBuffers` the box owns, and zeroing
        // it initialises it: it holds only byte arrays, for which all zeros is a value.
        let buffers = unsafe {
            buffers.as_mut_ptr().write_bytes(0, 1);
            buffers.assume_init()
        };
        ExecutorArena {
            core: Box::leak(Box::new_uninit()),
            buffers: Box::leak(buffers),
        }
    }
}

/// A unit file: the executor's header line and the rendered unit.
pub const UNIT_FILE_TEXT_BYTES: usize = crate::daemon::executor::HEADER_BYTES + UNIT_BYTES_MAX;
/// A framed request to `myco-priv`.
pub const PRIVILEGED_FRAME_BYTES: usize =
    myco_core::privileged::FRAME_HEADER_BYTES + myco_core::privileged::REQUEST_BYTES_MAX;

/// Argument lists: `systemctl`, `/logs`, the builder's, the collector's and the exec health
/// checks'.
pub const ARGVS: usize = 5;
/// Children's outputs: the unit lane, the builder and the collector.
pub const OUTPUTS: usize = 3;

/// Every buffer that starts zeroed.
pub struct Buffers {
    pub api: [ApiSlot; CONNECTIONS_MAX],
    pub dns_tcp: [DnsSlot; DNS_TCP_MAX],
    /// One batch of UDP queries and their answers (`udp_batch`).
    pub dns_queries: [u8; crate::daemon::udp_batch::BATCH * UDP_QUERY_BYTES_MAX],
    pub dns_answers: [u8; crate::daemon::udp_batch::BATCH * UDP_BYTES_MAX],
    /// The WAL's pending batch and the one in flight.
    pub wal: [[u8; crate::daemon::wal::BATCH_BYTES]; 2],
    /// The store's write buffer (snapshots, synchronous appends).
    pub store: [u8; crate::store::WRITE_BUFFER_BYTES],
    /// `/stream`'s ring of events, filled as events come.
    pub events: heapless::Vec<Record, EVENTS_MAX>,
    pub executor: ExecutorBuffers,
    /// The audit log's line.
    pub audit_line: [u8; crate::audit::LINE_BYTES_MAX],
    pub cache: CacheSlots,
    /// The proxy's tunnel slots: a record from the client and one to it, each.
    pub proxy: [[[u8; crate::daemon::proxy::BUF_BYTES]; 2]; crate::daemon::proxy::PROXY_SLOTS],
}

/// The binary cache's buffers: one per connection slot, the closure table, and the argument
/// list of the `nix-store` it runs.
pub struct CacheSlots {
    pub slots: [[u8; cache::SLOT_BYTES]; cache::CACHE_SLOTS],
    pub closure: [u8; cache::CLOSURE_BYTES],
    pub argv: [u8; ARGV_BYTES],
}

impl Buffers {
    const ZERO: Buffers = Buffers {
        api: [const {
            ApiSlot {
                request: RequestBuffer::new(),
                answer: [0; ANSWER_BYTES],
            }
        }; CONNECTIONS_MAX],
        dns_tcp: [const {
            DnsSlot {
                input: [0; 2 + UDP_QUERY_BYTES_MAX],
                output: [0; 2 + MESSAGE_BYTES_MAX],
            }
        }; DNS_TCP_MAX],
        dns_queries: [0; crate::daemon::udp_batch::BATCH * UDP_QUERY_BYTES_MAX],
        dns_answers: [0; crate::daemon::udp_batch::BATCH * UDP_BYTES_MAX],
        wal: [[0; crate::daemon::wal::BATCH_BYTES]; 2],
        store: [0; crate::store::WRITE_BUFFER_BYTES],
        events: heapless::Vec::new(),
        executor: ExecutorBuffers {
            unit: [0; UNIT_FILE_TEXT_BYTES],
            request: [0; PRIVILEGED_FRAME_BYTES],
            unit_file: [0; crate::daemon::build::UNIT_FILE_BYTES_MAX],
            argv: [[0; ARGV_BYTES]; ARGVS],
            output: [[0; OUTPUT_BYTES]; OUTPUTS],
            kept: [0; myco_core::executor::rollout::KEPT_RECORD_BYTES_MAX],
        },
        audit_line: [0; crate::audit::LINE_BYTES_MAX],
        cache: CacheSlots {
            slots: [[0; cache::SLOT_BYTES]; cache::CACHE_SLOTS],
            closure: [0; cache::CLOSURE_BYTES],
            argv: [0; ARGV_BYTES],
        },
        proxy: [[[0; crate::daemon::proxy::BUF_BYTES]; 2]; crate::daemon::proxy::PROXY_SLOTS],
    };
}

static BUFFERS: ConstStaticCell<Buffers> = ConstStaticCell::new(Buffers::ZERO);
static NODE: StaticCell<Node> = StaticCell::new();
static CORE_EXECUTOR: StaticCell<myco_core::executor::Executor> = StaticCell::new();
static DAEMON: StaticCell<Daemon> = StaticCell::new();
static FLIGHT_RING: ConstStaticCell<[u8; FLIGHT_RECORDER_BYTES]> =
    ConstStaticCell::new([0; FLIGHT_RECORDER_BYTES]);
/// Who holds the arena: the thread that builds the daemon, then the one that runs it.
static HANDOFF: handoff::Handoff = handoff::Handoff {
    state: atomics::AtomicU8::new(handoff::FREE),
};

/// The arena, taken and split by consumer: each part is this process's only reference to it.
pub struct Arena {
    pub node: &'static mut MaybeUninit<Node>,
    pub daemon: &'static mut MaybeUninit<Daemon>,
    pub api: &'static mut [ApiSlot; CONNECTIONS_MAX],
    pub dns: crate::daemon::dns::DnsBuffers,
    pub wal: [&'static mut [u8]; 2],
    pub store: &'static mut [u8],
    pub events: &'static mut crate::daemon::events::Records,
    pub executor: ExecutorArena,
    pub audit_line: &'static mut [u8],
    pub cache: cache::CacheBuffers,
    pub proxy: crate::daemon::proxy::ProxyBuffers,
}

impl Arena {
    /// The arena, the first time it is asked in this process (by the start-up thread); `None`
    /// ever after, so a second daemon in one process is refused rather than aliased.
    pub fn take() -> Option<Arena> {
        if !HANDOFF.claim() {
            return None;
        }
        let b = BUFFERS.take();
        let [wal_a, wal_b] = &mut b.wal;
        Some(Arena {
            node: NODE.uninit(),
            daemon: DAEMON.uninit(),
            api: &mut b.api,
            dns: crate::daemon::dns::DnsBuffers {
                tcp: &mut b.dns_tcp,
                queries: &mut b.dns_queries,
                answers: &mut b.dns_answers,
            },
            wal: [wal_a, wal_b],
            store: &mut b.store,
            events: &mut b.events,
            executor: ExecutorArena {
                core: CORE_EXECUTOR.uninit(),
                buffers: &mut b.executor,
            },
            audit_line: &mut b.audit_line,
            cache: cache::CacheBuffers {
                slots: &mut b.cache.slots,
                closure: &mut b.cache.closure,
                argv: &mut b.cache.argv,
            },
            proxy: &mut b.proxy,
        })
    }
}

/// Called by the start-up thread once the daemon is built in the arena: from now on it is the
/// loop's, and the start-up thread touches nothing in it.
pub fn hand_over() {
    HANDOFF.publish();
}

/// Called by the thread that runs the loop before it touches the daemon; panics if the daemon
/// was not handed over (a bug: the loop would read a half-built arena).
pub fn enter_loop() {
    assert!(HANDOFF.take(), "the arena was not handed over to the loop");
}

/// The flight recorder's ring, once per process (the recorder's `OnceLock` asks once).
pub fn flight_ring() -> &'static mut [u8] {
    FLIGHT_RING.take()
}

/// A zeroed buffer of `len` bytes on the heap, never freed: for tests and tools that build one
/// part of the daemon alone, and for as many of them as they like in one process. The daemon
/// itself takes its buffers from the arena.
pub fn leak_bytes(len: usize) -> &'static mut [u8] {
    Box::leak(vec![0; len].into_boxed_slice())
}

/// Bytes of the arena, as laid out (what `budget.rs` sums from the constants).
pub const ARENA_BYTES: usize = size_of::<Buffers>()
    + size_of::<Node>()
    + size_of::<myco_core::executor::Executor>()
    + size_of::<Daemon>()
    + FLIGHT_RECORDER_BYTES;
