//! Replays arbitrary bytes as a write-ahead log, through both readers.
//!
//! Proves: no panic on any bytes; the whole-buffer scan and the streaming replayer (fed in
//! fuzz-chosen chunk sizes) agree on every record and on where the good prefix ends; the good
//! prefix replays cleanly on its own, to the same records.
#![no_main]

use libfuzzer_sys::fuzz_target;
use myco_core::wal::{scan, RecordView, Records, Replayer, Stop};

fn digest(r: &RecordView<'_>) -> (u8, usize, u64) {
    match r {
        RecordView::Entry(e) => (
            1,
            e.len(),
            e.iter().fold(0u64, |h, &b| h.rotate_left(5) ^ u64::from(b)),
        ),
        RecordView::CheckpointEnd(c) => (2, c.entries as usize, c.state_hash),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, log)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk).max(1);
    let mut whole = Vec::new();
    let mut records = Records::new(log);
    for r in records.by_ref() {
        whole.push(digest(&r));
    }
    let summary = records.finish();
    assert_eq!(summary.good_bytes, scan(log).good_bytes);
    assert!(summary.good_bytes as usize <= log.len());

    let mut replayer: Replayer = Replayer::new();
    let mut streamed = Vec::new();
    let mut fed = 0;
    while !replayer.is_stopped() {
        while let Some(r) = replayer.poll_record() {
            streamed.push(digest(&r));
        }
        if fed == log.len() || replayer.is_stopped() {
            break;
        }
        let space = replayer.space();
        let n = space.len().min(chunk).min(log.len() - fed);
        space[..n].copy_from_slice(&log[fed..fed + n]);
        replayer.handle_filled(n);
        fed += n;
    }
    while let Some(r) = replayer.poll_record() {
        streamed.push(digest(&r));
    }
    assert_eq!(streamed, whole, "both readers see the same records");
    assert_eq!(replayer.finish().good_bytes, summary.good_bytes);

    let good = &log[..summary.good_bytes as usize];
    let again = scan(good);
    assert_eq!(again.stop, Stop::Clean, "the good prefix replays cleanly");
    assert_eq!(again.good_bytes, summary.good_bytes);
});
