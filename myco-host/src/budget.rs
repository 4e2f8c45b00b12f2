//! The daemon's memory budget: every buffer and table `myco-d` lays out on the heap at start-up,
//! as one sum with one commented line per consumer, checked at compile time. Nothing is allocated
//! after ready (`crate::alloc` counts, and refuses under `--strict-alloc`), so this sum is the
//! ceiling of the daemon's heap for its whole life, whatever its peers and clients send. Pages
//! never touched stay unmapped, so the resident size is usually far below it (docs/benchmarks.md).
//!
//! The buffers are allocated one by one where they are used (`Box`, `vec!` in each module's
//! constructor), not carved from one static region: the sum is what keeps them honest, and
//! `tests/strict_alloc.rs` checks the heap at ready against it.

use crate::daemon::conns::{Conn, ANSWER_BYTES, CONNECTIONS_MAX};
use crate::daemon::dns::{DNS_TCP_MAX, MESSAGE_BYTES_MAX, UDP_QUERY_BYTES_MAX};
use crate::daemon::events::{Record, EVENTS_MAX};
use crate::daemon::udp_batch::BATCH;
use crate::daemon::Daemon;
use crate::flight::FLIGHT_RECORDER_BYTES;
use crate::http::request::RequestBuffer;
use crate::spawn::{ARGV_BYTES, OUTPUT_BYTES};
use core::mem::size_of;
use myco_core::dns::UDP_BYTES_MAX;
use myco_core::unit::UNIT_BYTES_MAX;
use myco_core::Node;

/// The core node: every table of the desired state, membership, sessions and sync.
pub const NODE_BYTES: usize = size_of::<Node>();
/// The API: per connection a request buffer, an answer buffer, and its slot.
pub const API_BYTES: usize =
    CONNECTIONS_MAX * (size_of::<RequestBuffer>() + ANSWER_BYTES + size_of::<Conn>());
/// DNS: per TCP connection a query and a whole answer (each behind its 2-byte length), and one
/// batch of UDP queries and answers.
pub const DNS_BYTES: usize = DNS_TCP_MAX * (2 + UDP_QUERY_BYTES_MAX + 2 + MESSAGE_BYTES_MAX)
    + BATCH * (UDP_QUERY_BYTES_MAX + UDP_BYTES_MAX);
/// Durability: the WAL's pending batch and the one in flight, and the store's write buffer.
pub const WAL_BYTES: usize = 2 * crate::daemon::wal::BATCH_BYTES + crate::store::WRITE_BUFFER_BYTES;
/// `/stream`'s ring of events.
pub const EVENTS_BYTES: usize = EVENTS_MAX * size_of::<Record>();
/// The executor: the core's executor, one rendered unit, one unit file read back (the builder's,
/// to find what a unit runs), an argument list for `systemctl` and one for `/logs`, and the
/// builder's and the collector's, a child's output for each of the three lanes, the audit
/// log's line, and the health checks' slots and argument list.
pub const EXECUTOR_BYTES: usize = size_of::<myco_core::executor::Executor>()
    + UNIT_BYTES_MAX
    + crate::daemon::build::UNIT_FILE_BYTES_MAX
    + 4 * ARGV_BYTES
    + 3 * OUTPUT_BYTES
    + crate::audit::LINE_BYTES_MAX
    + crate::daemon::health::CHECKS_BYTES;
/// What start-up allocates in passing and keeps: the daemon's own struct, paths and the parsed
/// command line, the environment handed to builds, and std's thread and I/O state (measured
/// at under 20 KiB with the executor and DNS on; the margin covers long paths).
pub const LEFTOVERS_BYTES: usize = size_of::<Daemon>() + 64 * 1024;

/// The heap's ceiling: everything above, summed.
pub const HEAP_BYTES_MAX: usize = NODE_BYTES
    + API_BYTES
    + DNS_BYTES
    + WAL_BYTES
    + EVENTS_BYTES
    + FLIGHT_RECORDER_BYTES
    + EXECUTOR_BYTES
    + LEFTOVERS_BYTES;

/// The aim for the daemon's resident memory (docs/benchmarks.md): the heap's ceiling stays under
/// it, with room for the binary, the stacks and the kernel's io_uring rings.
pub const RSS_AIM_BYTES: usize = 16 * 1024 * 1024;

const _: () = assert!(HEAP_BYTES_MAX <= RSS_AIM_BYTES / 2);
// The two largest consumers, so that growing one of them is a visible decision.
const _: () = assert!(API_BYTES <= 4 * 1024 * 1024);
const _: () = assert!(NODE_BYTES <= 512 * 1024);
