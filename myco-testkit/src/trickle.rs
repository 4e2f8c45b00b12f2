//! Slow clients, for tests that prove a server's fixed table of connections cannot be held
//! against newcomers: each client sends a request one byte at a time, a byte per interval, and
//! connects again whenever the server closes it, so the table stays as full as the clients can
//! keep it for as long as they run.
//!
//! Invariant: the clients stop, and their threads are joined, when the `Tricklers` drops.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

/// Running slow clients.
pub struct Tricklers {
    stop: Arc<AtomicBool>,
    /// Connections made, by all clients, first ones and reconnections alike.
    connections: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl Tricklers {
    /// `count` clients trickling `GET /health` into the API socket at `socket`, a byte a second.
    pub fn api_health(count: usize, socket: std::path::PathBuf) -> Tricklers {
        Tricklers::start(
            count,
            Duration::from_secs(1),
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            move || std::os::unix::net::UnixStream::connect(&socket),
        )
    }

    /// Starts `count` clients that connect with `connect` and send `request` a byte every
    /// `interval`, reconnecting when a connect or a write fails.
    pub fn start<S, C>(count: usize, interval: Duration, request: &[u8], connect: C) -> Tricklers
    where
        S: Write,
        C: Fn() -> std::io::Result<S> + Clone + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let connections = Arc::new(AtomicU64::new(0));
        let threads = (0..count)
            .map(|_| {
                let (stop, connections) = (stop.clone(), connections.clone());
                let (connect, request) = (connect.clone(), request.to_vec());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        if let Ok(stream) = connect() {
                            connections.fetch_add(1, Ordering::Relaxed);
                            trickle(stream, &request, interval, &stop);
                        }
                        thread::sleep(interval.min(Duration::from_millis(50)));
                    }
                })
            })
            .collect();
        Tricklers {
            stop,
            connections,
            threads,
        }
    }

    /// Connections made so far.
    pub fn connections(&self) -> u64 {
        self.connections.load(Ordering::Relaxed)
    }
}

/// Sends `request` a byte at a time until it is all sent, a write fails or `stop` is set.
fn trickle(mut stream: impl Write, request: &[u8], interval: Duration, stop: &AtomicBool) {
    for byte in request {
        if stop.load(Ordering::Relaxed) || stream.write_all(&[*byte]).is_err() {
            return;
        }
        // Slept in slices, so a test's end does not wait out a whole interval per client.
        let slices = (interval.as_millis() / 50).max(1) as u32;
        for _ in 0..slices {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            thread::sleep(interval / slices);
        }
    }
}

impl Drop for Tricklers {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}
