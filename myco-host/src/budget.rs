//! The daemon's memory budget: every table, buffer and ring `myco-d` needs, as one sum with one
//! commented line per consumer, checked at compile time against the arena that holds them
//! (`arena.rs`). They are carved from one preallocated arena of statics, so they cannot grow: the
//! sum is fixed at link time and lives in `.bss`, whose pages become resident only when the
//! daemon first writes them (docs/benchmarks.md has the resident size at rest and under load).
//!
//! The heap holds only what start-up allocates in passing and keeps (paths, the parsed command
//! line, the environment handed to builds, std's own state). Nothing is allocated after ready
//! (`crate::alloc` counts, and refuses under `--strict-alloc`), so `HEAP_BYTES_MAX` bounds the
//! heap for the daemon's whole life, and `MEMORY_BYTES_MAX` everything the daemon's own data can
//! take, whatever its peers and clients send; `tests/strict_alloc.rs` checks the heap at ready.

use crate::daemon::conns::{ANSWER_BYTES, CONNECTIONS_MAX};
use crate::daemon::dns::{DNS_TCP_MAX, MESSAGE_BYTES_MAX, UDP_QUERY_BYTES_MAX};
use crate::daemon::events::{Record, EVENTS_MAX};
use crate::daemon::udp_batch::BATCH;
use crate::daemon::Daemon;
use crate::flight::FLIGHT_RECORDER_BYTES;
use crate::http::request::RequestBuffer;
use crate::spawn::{ARGV_BYTES, OUTPUT_BYTES};
use core::mem::size_of;
use myco_core::dns::UDP_BYTES_MAX;
use myco_core::Node;

/// The core node: every table of the desired state, membership, sessions and sync.
pub const NODE_BYTES: usize = size_of::<Node>();
/// The API: per connection a request buffer and an answer buffer.
pub const API_BYTES: usize = CONNECTIONS_MAX * (size_of::<RequestBuffer>() + ANSWER_BYTES);
/// DNS: per TCP connection a query and a whole answer (each behind its 2-byte length), and one
/// batch of UDP queries and answers.
pub const DNS_BYTES: usize = DNS_TCP_MAX * (2 + UDP_QUERY_BYTES_MAX + 2 + MESSAGE_BYTES_MAX)
    + BATCH * (UDP_QUERY_BYTES_MAX + UDP_BYTES_MAX);
/// Durability: the WAL's pending batch and the one in flight, and the store's write buffer.
pub const WAL_BYTES: usize = 2 * crate::daemon::wal::BATCH_BYTES + crate::store::WRITE_BUFFER_BYTES;
/// `/stream`'s ring of events.
pub const EVENTS_BYTES: usize = EVENTS_MAX * size_of::<Record>();
/// The executor: the core's executor, one unit file written (header and rendered unit), a
/// request to myco-priv (`--privileged`), one unit file read back (the builder's,
/// to find what a unit runs), an argument list for `systemctl` and one for `/logs`, and the
/// builder's and the collector's, a child's output for each of the three lanes, the audit
/// log's line, the health checks' slots and argument list, and a kept version's record.
pub const EXECUTOR_BYTES: usize = size_of::<myco_core::executor::Executor>()
    + crate::arena::UNIT_FILE_TEXT_BYTES
    + crate::arena::PRIVILEGED_FRAME_BYTES
    + crate::daemon::build::UNIT_FILE_BYTES_MAX
    + crate::arena::ARGVS * ARGV_BYTES
    + crate::arena::OUTPUTS * OUTPUT_BYTES
    + crate::audit::LINE_BYTES_MAX
    + myco_core::executor::rollout::KEPT_RECORD_BYTES_MAX;
/// The binary cache: per connection slot a buffer (a request, a narinfo, a stretch of a NAR),
/// the closure table of the paths it serves, and the argument list of its `nix-store`.
pub const CACHE_BYTES: usize = crate::daemon::cache::CACHE_SLOTS * crate::daemon::cache::SLOT_BYTES
    + crate::daemon::cache::CLOSURE_BYTES
    + ARGV_BYTES;
/// The proxy: per tunnel slot the largest record from the client and the largest to it.
pub const PROXY_BYTES: usize =
    crate::daemon::proxy::PROXY_SLOTS * 2 * crate::daemon::proxy::BUF_BYTES;
/// The daemon's own struct: the API's and DNS's connection slots, the sink, the timers.
pub const DAEMON_BYTES: usize = size_of::<Daemon>();

/// The arena: everything above, summed.
pub const ARENA_BUDGET_BYTES: usize = NODE_BYTES
    + API_BYTES
    + DNS_BYTES
    + WAL_BYTES
    + EVENTS_BYTES
    + FLIGHT_RECORDER_BYTES
    + EXECUTOR_BYTES
    + CACHE_BYTES
    + PROXY_BYTES
    + DAEMON_BYTES;

/// What the arena's layout adds to the sum: the event ring's length word and alignment padding
/// between fields.
const LAYOUT_SLACK_BYTES: usize = 16;
// The arena as laid out holds exactly the budget, give or take the layout's slack: a buffer
// added to the arena without a line here (or the reverse) fails the build.
const _: () = assert!(crate::arena::ARENA_BYTES >= ARENA_BUDGET_BYTES);
const _: () = assert!(crate::arena::ARENA_BYTES <= ARENA_BUDGET_BYTES + LAYOUT_SLACK_BYTES);

/// The heap's ceiling: what start-up allocates in passing and keeps (the parsed command line,
/// paths, the environment handed to builds, the `systemctl` and `journalctl` paths, std's
/// thread and I/O state; 1.8 to 3.0 KiB measured by `tests/strict_alloc.rs`, in
/// docs/benchmarks.md; the margin covers long paths and many `--join` flags).
pub const HEAP_BYTES_MAX: usize = 64 * 1024;

/// Everything the daemon's own data can take: the arena and the heap.
pub const MEMORY_BYTES_MAX: usize = crate::arena::ARENA_BYTES + HEAP_BYTES_MAX;

/// The aim for the daemon's resident memory (docs/benchmarks.md): the ceiling stays under it,
/// with room for the binary, the stacks and the kernel's io_uring rings.
pub const RSS_AIM_BYTES: usize = 16 * 1024 * 1024;

const _: () = assert!(MEMORY_BYTES_MAX <= RSS_AIM_BYTES / 2);
// The two largest consumers, so that growing one of them is a visible decision.
const _: () = assert!(API_BYTES <= 4 * 1024 * 1024);
const _: () = assert!(NODE_BYTES <= myco_core::config::NODE_BYTES_MAX);
