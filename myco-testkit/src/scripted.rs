//! A stand-in for `myco-d` that proves what `myco` sends and how it takes each answer: a Unix
//! socket served by a thread that reads each request (head and `Content-Length` body), records it,
//! and writes what the test's script returns for it, then closes the connection. It serves any
//! number of connections until `requests` (or drop) stops it, or `SERVE_TIMEOUT` passes, so a
//! test whose `myco` never connects fails instead of hanging.

use crate::dir::TempDir;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// The longest a stand-in serves.
const SERVE_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the stand-in looks for a new connection while idle.
const ACCEPT_INTERVAL: Duration = Duration::from_millis(5);

/// What the stand-in read from `myco`.
#[derive(Clone, Debug)]
pub struct Request {
    /// The request line, e.g. `POST /deploy HTTP/1.1`.
    pub line: String,
    /// Every header line, as sent.
    pub headers: Vec<String>,
    pub body: Vec<u8>,
}

/// How the stand-in writes an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// In one write.
    Whole,
    /// In two writes with a pause between, as a streamed journal arrives: proves the client does
    /// not expect a whole answer from one read.
    Split,
}

/// A stand-in daemon; stops serving when dropped.
pub struct ScriptedDaemon {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Vec<Request>>>,
}

impl ScriptedDaemon {
    /// Listens on `myco.sock` in `dir` (replacing an earlier stand-in's socket file) and answers
    /// each request with `script(request)`, delivered whole.
    pub fn start<F>(dir: &TempDir, script: F) -> ScriptedDaemon
    where
        F: FnMut(&Request) -> Vec<u8> + Send + 'static,
    {
        ScriptedDaemon::start_with(dir, Delivery::Whole, script)
    }

    /// A stand-in whose every connection gets `answer`.
    pub fn answering(dir: &TempDir, answer: Vec<u8>) -> ScriptedDaemon {
        ScriptedDaemon::start(dir, move |_| answer.clone())
    }

    /// As `start`, delivering answers as `delivery` says.
    pub fn start_with<F>(dir: &TempDir, delivery: Delivery, mut script: F) -> ScriptedDaemon
    where
        F: FnMut(&Request) -> Vec<u8> + Send + 'static,
    {
        let socket = dir.join("myco.sock");
        let _ = fs::remove_file(&socket);
        let listener = UnixListener::bind(&socket).expect("bind the stand-in's socket");
        listener.set_nonblocking(true).expect("non-blocking accept");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = thread::spawn(move || {
            let deadline = Instant::now() + SERVE_TIMEOUT;
            let mut requests = Vec::new();
            while !stopped.load(Ordering::Relaxed) && Instant::now() < deadline {
                let mut stream = match listener.accept() {
                    Ok((stream, _)) => stream,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        thread::sleep(ACCEPT_INTERVAL);
                        continue;
                    }
                    Err(e) => panic!("accept: {e}"),
                };
                let Some(request) = read_request(&mut stream) else {
                    continue;
                };
                // myco may stop reading early (a refused head); that is its business here.
                let _ = deliver(&mut stream, &script(&request), delivery);
                requests.push(request);
            }
            requests
        });
        ScriptedDaemon {
            socket,
            stop,
            thread: Some(thread),
        }
    }

    /// The socket's path, as `--socket` takes it.
    pub fn socket(&self) -> String {
        self.socket.to_str().expect("UTF-8 temp path").to_string()
    }

    /// Stops serving and returns every request received, in order.
    pub fn requests(mut self) -> Vec<Request> {
        self.stop.store(true, Ordering::Relaxed);
        let thread = self.thread.take().expect("joined once");
        thread.join().expect("the stand-in's thread does not panic")
    }

    /// Stops serving and returns the one request received; panics if `myco` never connected.
    #[track_caller]
    pub fn request(self) -> Request {
        let mut requests = self.requests();
        assert!(!requests.is_empty(), "myco never connected to the daemon");
        requests.swap_remove(0)
    }
}

impl Drop for ScriptedDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn deliver(stream: &mut UnixStream, answer: &[u8], delivery: Delivery) -> std::io::Result<()> {
    if delivery == Delivery::Whole {
        return stream.write_all(answer);
    }
    let (first, second) = answer.split_at(answer.len() / 2);
    stream.write_all(first)?;
    stream.flush()?;
    thread::sleep(Duration::from_millis(50));
    stream.write_all(second)
}

/// Reads one request: the head up to its blank line, then `Content-Length` bytes of body. `None`
/// if the client hung up or sent no complete request within the read timeout.
pub fn read_request(stream: &mut UnixStream) -> Option<Request> {
    stream.set_nonblocking(false).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut bytes = Vec::new();
    let mut byte = [0u8];
    while !bytes.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).ok()?;
        bytes.push(byte[0]);
    }
    let head = String::from_utf8(bytes).ok()?;
    let mut lines = head.trim_end().split("\r\n");
    let line = lines.next()?.to_string();
    let headers: Vec<String> = lines.map(String::from).collect();
    let length = headers
        .iter()
        .find_map(|h| h.strip_prefix("Content-Length: "))
        .map_or(Some(0), |n| n.trim().parse().ok())?;
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).ok()?;
    Some(Request {
        line,
        headers,
        body,
    })
}

/// A JSON answer as myco-d writes one, e.g. `answer("200 OK", "{...}")`.
pub fn answer(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}
