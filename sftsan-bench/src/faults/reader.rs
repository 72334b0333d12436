//! Readers: one qemu-io per VM disk, in its node's namespace, fed one command at a time
//! over stdin, as a VM reads its disk through its overlay. Each read is checked against
//! the image (`read -P BYTE`: every byte compared) and timed from the command's write to
//! the next prompt. Most reads sweep the image in an order of their own, so caches keep
//! missing and reads keep going upstream; the rest land anywhere (hits, mostly).

use serde::Serialize;
use std::io::{Read as _, Write as _};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::image::{pattern, BLOCK};
use super::rng::Rng;

const PROMPT: &[u8] = b"qemu-io> ";
/// Distinct error messages kept per reader.
const MESSAGES: usize = 5;

/// A reader to start.
#[derive(Debug, Clone)]
pub struct ReaderSpec {
    pub node: String,
    pub netns: String,
    pub disk: PathBuf,
    /// Blocks of the image.
    pub blocks: u64,
    pub seed: u64,
    /// Least time from one read's start to the next (a VM does not read flat out).
    pub interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Ok,
    /// The pattern check failed: the data differs from the image.
    Wrong,
    /// The read failed (EIO, ...).
    Error,
    /// Never completed: still outstanding when the readers stopped.
    Hung,
}

/// One read; times in seconds since the run's start.
#[derive(Debug, Clone, Copy)]
pub struct Read {
    pub start: f64,
    pub latency: f64,
    pub len: u64,
    pub outcome: Outcome,
}

impl Read {
    pub fn end(&self) -> f64 {
        self.start + self.latency
    }
}

/// Everything one reader saw.
#[derive(Debug, Clone)]
pub struct ReaderLog {
    pub node: String,
    pub disk: PathBuf,
    pub reads: Vec<Read>,
    /// Distinct failure messages (qemu-io's lines), the first few.
    pub messages: Vec<String>,
    /// When it stopped reading (seconds since the run's start).
    pub ended: f64,
    /// Why it stopped before it was told to, if it did.
    pub fatal: Option<String>,
}

/// What the readers and their controller share.
struct Shared {
    stop: AtomicBool,
    /// How long a stopping reader waits for its outstanding read.
    grace_ms: AtomicU64,
    /// Good reads so far, per reader.
    ok: Vec<AtomicU64>,
}

/// Running readers.
pub struct Readers {
    shared: Arc<Shared>,
    handles: Vec<JoinHandle<ReaderLog>>,
}

impl Readers {
    pub fn start(specs: Vec<ReaderSpec>, t0: Instant) -> Readers {
        let shared = Arc::new(Shared {
            stop: AtomicBool::new(false),
            grace_ms: AtomicU64::new(1000),
            ok: (0..specs.len()).map(|_| AtomicU64::new(0)).collect(),
        });
        let handles = specs
            .into_iter()
            .enumerate()
            .map(|(i, spec)| {
                let shared = shared.clone();
                // The thread owns its qemu-io: the process dies with it (PDEATHSIG).
                std::thread::spawn(move || read_loop(spec, t0, &shared, i))
            })
            .collect();
        Readers { shared, handles }
    }

    /// Good reads so far, per reader.
    pub fn ok_counts(&self) -> Vec<u64> {
        self.shared
            .ok
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    /// Whether a reader has ended by itself (qemu-io could not open its disk or exited).
    pub fn any_ended(&self) -> bool {
        self.handles.iter().any(JoinHandle::is_finished)
    }

    /// Stops every reader: a read still outstanding `grace` after the stop is recorded as
    /// hung and its qemu-io killed.
    pub fn stop(mut self, grace: Duration) -> Vec<ReaderLog> {
        self.shared
            .grace_ms
            .store(grace.as_millis() as u64, Ordering::SeqCst);
        self.shared.stop.store(true, Ordering::SeqCst);
        std::mem::take(&mut self.handles)
            .into_iter()
            .map(|h| h.join().expect("a reader thread panicked"))
            .collect()
    }
}

impl Drop for Readers {
    fn drop(&mut self) {
        // An error path: the threads end (and their qemu-io with them) without a wait.
        self.shared.stop.store(true, Ordering::SeqCst);
    }
}

/// The reads' sequence: mostly a sweep of the image with a stride of its own (misses),
/// some anywhere; a quarter of them a part of a block rather than the whole.
struct Picker {
    rng: Rng,
    blocks: u64,
    next: u64,
    stride: u64,
}

impl Picker {
    fn new(seed: u64, blocks: u64) -> Picker {
        let mut rng = Rng::new(seed);
        let next = rng.below(blocks);
        let mut stride = rng.below(blocks) | 1;
        while gcd(stride, blocks) != 1 {
            stride += 2;
        }
        Picker {
            rng,
            blocks,
            next,
            stride: stride % blocks.max(1),
        }
    }

    /// (offset, length, the byte every one of its bytes must be).
    fn pick(&mut self) -> (u64, u64, u8) {
        let r = self.rng.next_u64();
        let block = if r % 4 != 0 {
            let b = self.next;
            self.next = (self.next + self.stride) % self.blocks;
            b
        } else {
            self.rng.below(self.blocks)
        };
        let sectors = BLOCK / 512;
        let (first, count) = if (r >> 8) % 4 == 0 {
            let first = self.rng.below(sectors);
            (first, 1 + self.rng.below(sectors - first))
        } else {
            (0, sectors)
        };
        (block * BLOCK + first * 512, count * 512, pattern(block))
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

enum Reply {
    Text(String),
    /// qemu-io closed its output: it exited.
    Eof,
    /// Given up: the stop's grace (or the start's deadline) passed.
    Abandoned,
}

/// A qemu-io process at its prompt.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: ChildStdout,
    buf: Vec<u8>,
    stderr: Option<JoinHandle<String>>,
}

impl Session {
    fn start(spec: &ReaderSpec) -> std::io::Result<Session> {
        let mut child = crate::boot::in_node(&spec.netns, "qemu-io")
            .args(["-f", "qcow2"])
            .arg(&spec.disk)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("a piped stdout");
        let mut err = child.stderr.take().expect("a piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = String::new();
            let _ = err.read_to_string(&mut text);
            text
        });
        Ok(Session {
            child,
            stdin,
            stdout,
            buf: Vec::new(),
            stderr: Some(stderr),
        })
    }

    fn send(&mut self, line: &str) -> bool {
        self.stdin
            .as_mut()
            .is_some_and(|s| s.write_all(line.as_bytes()).is_ok())
    }

    /// Output up to the next prompt. Gives up once `stop` has been set for the grace, or
    /// at `deadline`.
    fn until_prompt(&mut self, shared: &Shared, deadline: Option<Instant>) -> Reply {
        let mut stop_seen: Option<Instant> = None;
        loop {
            if let Some(at) = find(&self.buf, PROMPT) {
                let text = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + PROMPT.len());
                return Reply::Text(text);
            }
            if shared.stop.load(Ordering::SeqCst) {
                let seen = *stop_seen.get_or_insert_with(Instant::now);
                if seen.elapsed() >= Duration::from_millis(shared.grace_ms.load(Ordering::SeqCst)) {
                    return Reply::Abandoned;
                }
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Reply::Abandoned;
            }
            let mut pfd = libc::pollfd {
                fd: self.stdout.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd; 50 ms bounds how late a stop is noticed.
            let n = unsafe { libc::poll(&mut pfd, 1, 50) };
            if n <= 0 {
                continue;
            }
            let mut chunk = [0u8; 4096];
            match self.stdout.read(&mut chunk) {
                Ok(0) | Err(_) => return Reply::Eof,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
            }
        }
    }

    fn stderr_tail(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let text = self
            .stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default();
        super::cli::last_line(&text)
    }

    /// `quit`, a moment to exit, then SIGKILL.
    fn close(&mut self) {
        self.send("quit\n");
        self.stdin = None;
        let pid = self.child.id() as i32;
        if !sftsan_core::process::exited_within(pid, Duration::from_secs(2)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// What qemu-io's answer to `read -P` says.
fn classify(text: &str, len: u64) -> (Outcome, Option<String>) {
    if text.contains("Pattern verification failed") {
        return (Outcome::Wrong, Some(first_line(text)));
    }
    if text.contains(&format!("read {len}/{len} bytes")) {
        return (Outcome::Ok, None);
    }
    (Outcome::Error, Some(first_line(text)))
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("(no output)")
        .trim()
        .to_string()
}

fn read_loop(spec: ReaderSpec, t0: Instant, shared: &Shared, index: usize) -> ReaderLog {
    let stop = &shared.stop;
    let mut log = ReaderLog {
        node: spec.node.clone(),
        disk: spec.disk.clone(),
        reads: Vec::new(),
        messages: Vec::new(),
        ended: 0.0,
        fatal: None,
    };
    let since = |t: Instant| t.duration_since(t0).as_secs_f64();
    let mut session = match Session::start(&spec) {
        Ok(s) => s,
        Err(e) => {
            log.fatal = Some(format!("cannot start qemu-io: {e}"));
            log.ended = since(Instant::now());
            return log;
        }
    };
    // Opening the overlay connects to the node's export: bounded, like a VM's start.
    match session.until_prompt(shared, Some(Instant::now() + Duration::from_secs(30))) {
        Reply::Text(_) => {}
        Reply::Eof | Reply::Abandoned => {
            log.fatal = Some(format!("qemu-io did not start: {}", session.stderr_tail()));
            log.ended = since(Instant::now());
            return log;
        }
    }
    let mut picker = Picker::new(spec.seed, spec.blocks);
    while !stop.load(Ordering::Relaxed) {
        let (offset, len, byte) = picker.pick();
        let started = Instant::now();
        if !session.send(&format!("read -P {byte:#04x} {offset} {len}\n")) {
            log.fatal = Some(format!("qemu-io exited: {}", session.stderr_tail()));
            break;
        }
        let reply = session.until_prompt(shared, None);
        let read = |outcome| Read {
            start: since(started),
            latency: started.elapsed().as_secs_f64(),
            len,
            outcome,
        };
        match reply {
            Reply::Text(text) => {
                let (outcome, message) = classify(&text, len);
                log.reads.push(read(outcome));
                if outcome == Outcome::Ok {
                    shared.ok[index].fetch_add(1, Ordering::Relaxed);
                }
                if let Some(m) = message {
                    if log.messages.len() < MESSAGES && !log.messages.contains(&m) {
                        log.messages.push(m);
                    }
                }
            }
            Reply::Abandoned => {
                log.reads.push(read(Outcome::Hung));
                break;
            }
            Reply::Eof => {
                log.reads.push(read(Outcome::Error));
                log.fatal = Some(format!("qemu-io exited: {}", session.stderr_tail()));
                break;
            }
        }
        // Pacing, not synchronization: the next read starts one interval after this one.
        let next = started + spec.interval;
        while !stop.load(Ordering::Relaxed) && Instant::now() < next {
            std::thread::sleep(
                next.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(20)),
            );
        }
    }
    log.ended = since(Instant::now());
    session.close();
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qemu_io_answers_are_classified() {
        let ok = "read 65536/65536 bytes at offset 0\n64 KiB, 1 ops; 00.01 sec (1 MiB/sec)\n";
        assert_eq!(classify(ok, 65536).0, Outcome::Ok);
        let wrong = "Pattern verification failed at offset 458752, 4096 bytes\n\
                     read 4096/4096 bytes at offset 458752\n";
        assert_eq!(classify(wrong, 4096).0, Outcome::Wrong);
        let (o, m) = classify("read failed: Input/output error\n", 4096);
        assert_eq!(o, Outcome::Error);
        assert_eq!(m.unwrap(), "read failed: Input/output error");
        // A short read is no success.
        assert_eq!(
            classify("read 512/4096 bytes at offset 0\n", 4096).0,
            Outcome::Error
        );
    }

    #[test]
    fn reads_stay_inside_one_block_and_sweep_the_image() {
        let blocks = 1000;
        let mut p = Picker::new(42, blocks);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..4000 {
            let (off, len, byte) = p.pick();
            let block = off / BLOCK;
            assert!(block < blocks);
            assert_eq!((off + len - 1) / BLOCK, block, "a read spans two blocks");
            assert!(len > 0 && len % 512 == 0 && off % 512 == 0);
            assert_eq!(byte, pattern(block));
            seen.insert(block);
        }
        // Three quarters of 4000 reads sweep 1000 blocks: every block is met.
        assert_eq!(seen.len() as u64, blocks);
    }
}
