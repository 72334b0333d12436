//! The heart of the upstream switch: one live connection to the best upstream that answers
//! (the parent, else the grandparent, ..., else the origin), requests retried on the next
//! one when theirs fails, a heartbeat that notices a parent gone silent, and a return to a
//! nearer upstream as soon as it answers again.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::super::nbd::{errno, Address, Connection, Failure, Source};
use super::report::{Event, Report};

/// One node the switch may read from, nearest first in the list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ancestor {
    /// Its node name (for status and logs).
    pub node: String,
    /// Its NBD server.
    pub address: SocketAddr,
}

/// How long things may take.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// Connecting and negotiating with one upstream.
    pub connect: Duration,
    /// How often the current upstream is asked for a small block, and how long it may take
    /// to answer before it counts as gone (a stopped process, a dead link).
    pub heartbeat: Duration,
    /// See `heartbeat`.
    pub liveness: Duration,
    /// The longest a request may wait on one upstream before it is sent to the next.
    pub request: Duration,
    /// How often a nearer upstream is tried while reading from a farther one.
    pub return_probe: Duration,
    /// After this long without any upstream, a request fails (the VM above pauses).
    pub give_up: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            connect: Duration::from_millis(1500),
            heartbeat: Duration::from_secs(1),
            liveness: Duration::from_secs(2),
            request: Duration::from_secs(15),
            return_probe: Duration::from_secs(3),
            give_up: Duration::from_secs(120),
        }
    }
}

/// The connection in use, with the upstream it goes to.
#[derive(Clone)]
struct Link {
    index: usize,
    generation: u64,
    conn: Arc<Connection>,
}

#[derive(Default)]
struct State {
    ancestors: Vec<Ancestor>,
    link: Option<Link>,
    generation: u64,
    /// The upstream to try first when the link is gone.
    next: usize,
    /// When the current trouble began (the failed request was sent), for the event.
    trouble_since: Option<Instant>,
    trouble_cause: String,
    /// The upstream read from before the trouble.
    last_index: Option<usize>,
    report: Report,
}

/// A node's view of the tree above it.
pub struct Switch {
    export: String,
    size: u64,
    timing: Timing,
    state: Mutex<State>,
    changed: Condvar,
    retried: AtomicU64,
    failed: AtomicU64,
    bytes: AtomicU64,
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Switch {
    /// A switch over `ancestors` (nearest first) whose first connection is `first`.
    pub fn new(
        export: &str,
        ancestors: Vec<Ancestor>,
        timing: Timing,
        first: Connection,
    ) -> Switch {
        let planned = ancestors
            .first()
            .map(|a| a.node.clone())
            .unwrap_or_default();
        let report = Report {
            current: planned.clone(),
            planned,
            ..Report::default()
        };
        let size = first.size();
        Switch {
            export: export.into(),
            size,
            timing,
            state: Mutex::new(State {
                ancestors,
                link: Some(Link {
                    index: 0,
                    generation: 1,
                    conn: Arc::new(first),
                }),
                generation: 1,
                last_index: Some(0),
                report,
                ..State::default()
            }),
            changed: Condvar::new(),
            retried: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
        }
    }

    /// Replaces the ancestor list (membership changed); the link moves to the new first
    /// one by the next return probe, or at once if the current one is no longer listed.
    pub fn set_ancestors(&self, ancestors: Vec<Ancestor>) {
        let mut st = self.state.lock().unwrap();
        let current = st.link.as_ref().map(|l| st.ancestors[l.index].clone());
        st.report.planned = ancestors
            .first()
            .map(|a| a.node.clone())
            .unwrap_or_default();
        let position = current.and_then(|c| ancestors.iter().position(|a| *a == c));
        match (position, st.link.clone()) {
            (Some(i), Some(mut link)) => {
                link.index = i;
                st.last_index = Some(i);
                st.link = Some(link);
            }
            (_, link) => {
                if let Some(link) = link {
                    link.conn.close();
                }
                st.link = None;
                st.last_index = None;
                st.next = 0;
                st.trouble_since = Some(Instant::now());
                st.trouble_cause = "the tree changed".into();
            }
        }
        st.ancestors = ancestors;
        self.changed.notify_all();
    }

    /// The report as it stands now (counters included).
    pub fn report(&self) -> Report {
        let st = self.state.lock().unwrap();
        let mut r = st.report.clone();
        r.current = st
            .link
            .as_ref()
            .map(|l| st.ancestors[l.index].node.clone())
            .unwrap_or_default();
        r.retried_requests = self.retried.load(Ordering::Relaxed);
        r.failed_requests = self.failed.load(Ordering::Relaxed);
        r.upstream_bytes = self.bytes.load(Ordering::Relaxed);
        r
    }

    /// The live link, connecting to the next upstream that answers if there is none.
    /// `None` once `until` has passed without one.
    fn link(&self, until: Instant) -> Option<Link> {
        let mut st = self.state.lock().unwrap();
        loop {
            if let Some(link) = &st.link {
                if !link.conn.is_lost() {
                    return Some(link.clone());
                }
                let index = link.index;
                self.drop_link(
                    &mut st,
                    index,
                    "the connection broke".into(),
                    Instant::now(),
                );
            }
            if let Some(link) = self.connect_next(&mut st) {
                return Some(link);
            }
            if Instant::now() >= until {
                return None;
            }
            // Nobody answers: wait a little (or for a change) and go round again.
            st = self
                .changed
                .wait_timeout(st, Duration::from_millis(200))
                .unwrap()
                .0;
        }
    }

    /// One round over the ancestors, starting at `next`; installs the first that answers.
    fn connect_next(&self, st: &mut State) -> Option<Link> {
        let n = st.ancestors.len();
        for k in 0..n {
            let index = (st.next + k) % n;
            let target = st.ancestors[index].clone();
            let address = Address::Tcp(target.address);
            match Connection::open(&address, &self.export, self.timing.connect) {
                Ok(conn) if conn.size() == self.size => {
                    st.generation += 1;
                    let link = Link {
                        index,
                        generation: st.generation,
                        conn: Arc::new(conn),
                    };
                    st.link = Some(link.clone());
                    self.moved(st, index);
                    return Some(link);
                }
                Ok(conn) => {
                    tracing::warn!(
                        "{}: serves {} bytes, not {}; skipped",
                        target.node,
                        conn.size(),
                        self.size
                    );
                }
                Err(e) => tracing::info!("{} at {}: {e}", target.node, target.address),
            }
        }
        None
    }

    /// Records a move to `index` if it is not where the switch read from before.
    fn moved(&self, st: &mut State, index: usize) {
        let since = st.trouble_since.take();
        let from = st.last_index.replace(index);
        if from == Some(index) {
            return;
        }
        let name = |i: Option<usize>| {
            i.and_then(|i| st.ancestors.get(i))
                .map_or_else(String::new, |a| a.node.clone())
        };
        let event = Event {
            at_unix_ms: unix_ms(),
            from: name(from),
            to: name(Some(index)),
            cause: std::mem::take(&mut st.trouble_cause),
            took_ms: since.map(|s| s.elapsed().as_millis() as u64),
        };
        tracing::warn!(
            "re-parented from {} to {} ({}) in {:?} ms",
            event.from,
            event.to,
            event.cause,
            event.took_ms
        );
        st.report.record(event);
        self.changed.notify_all();
    }

    /// Drops the link to `index` (if it is still the one in use) after `cause`.
    fn drop_link(&self, st: &mut State, index: usize, cause: String, since: Instant) {
        if let Some(link) = st.link.take() {
            link.conn.close();
        }
        st.next = (index + 1) % st.ancestors.len().max(1);
        if st.trouble_since.is_none() {
            st.trouble_since = Some(since);
            st.trouble_cause = format!("{}: {cause}", st.ancestors[index].node);
        }
    }

    /// The link of `generation` failed `cause`, noticed for a request sent at `since`.
    fn failed_link(&self, generation: u64, cause: String, since: Instant) {
        let mut st = self.state.lock().unwrap();
        let Some(link) = st.link.clone() else { return };
        if link.generation == generation {
            self.drop_link(&mut st, link.index, cause, since);
        }
    }

    /// Asks the current upstream for a small block; drops it if it does not answer in time.
    pub fn heartbeat(&self) {
        let Some(link) = self.state.lock().unwrap().link.clone() else {
            return;
        };
        let sent = Instant::now();
        if let Err(f) = link.conn.read(0, 512, self.timing.liveness) {
            self.failed_link(link.generation, format!("heartbeat: {f}"), sent);
        }
    }

    /// While reading from a farther upstream, tries the nearer ones; moves back to the
    /// nearest that answers a read in time.
    pub fn try_return(&self) {
        let (ancestors, current) = {
            let st = self.state.lock().unwrap();
            let Some(link) = &st.link else { return };
            (st.ancestors.clone(), link.index)
        };
        for (index, a) in ancestors.iter().enumerate().take(current) {
            let Ok(conn) =
                Connection::open(&Address::Tcp(a.address), &self.export, self.timing.connect)
            else {
                continue;
            };
            if conn.size() != self.size || conn.read(0, 512, self.timing.liveness).is_err() {
                continue;
            }
            let mut st = self.state.lock().unwrap();
            if st.ancestors != ancestors {
                return; // the tree changed meanwhile: the next probe starts over
            }
            st.generation += 1;
            let generation = st.generation;
            let old = st.link.replace(Link {
                index,
                generation,
                conn: Arc::new(conn),
            });
            st.trouble_since = Some(Instant::now());
            st.trouble_cause = format!("{} answers again", a.node);
            self.moved(&mut st, index);
            drop(st);
            // Requests still waiting on the old link are sent again on the new one.
            if let Some(old) = old {
                old.conn.close();
            }
            return;
        }
    }

    /// Whether the switch reads from a farther upstream than the nearest.
    pub fn away(&self) -> bool {
        let st = self.state.lock().unwrap();
        st.link.as_ref().is_none_or(|l| l.index > 0)
    }
}

impl Source for Switch {
    fn size(&self) -> u64 {
        self.size
    }

    fn read(&self, offset: u64, length: u32) -> Result<Vec<u8>, u32> {
        let until = Instant::now() + self.timing.give_up;
        let mut attempts = 0u32;
        loop {
            let Some(link) = self.link(until) else {
                self.failed.fetch_add(1, Ordering::Relaxed);
                tracing::error!(
                    "read at {offset}: no upstream answered in {:?}",
                    self.timing.give_up
                );
                return Err(errno::EIO);
            };
            if attempts > 0 {
                self.retried.fetch_add(1, Ordering::Relaxed);
            }
            attempts += 1;
            let sent = Instant::now();
            match link.conn.read(offset, length, self.timing.request) {
                Ok(data) => {
                    self.bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
                    return Ok(data);
                }
                Err(f) => {
                    let cause = match &f {
                        Failure::Errno(e) => format!("answered error {e}"),
                        other => other.to_string(),
                    };
                    self.failed_link(link.generation, cause, sent);
                }
            }
            if Instant::now() >= until {
                self.failed.fetch_add(1, Ordering::Relaxed);
                return Err(errno::EIO);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backends::userspace::nbd::{serve, Source};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicBool, AtomicU8};

    const SIZE: u64 = 1 << 20;
    const ANSWER: u8 = 0;
    const FAIL: u8 = 1;
    const HANG: u8 = 2;

    /// An ancestor's export: byte `i` is `i % 251`; it can fail or hang its reads.
    struct Ancestral {
        mode: AtomicU8,
        reads: AtomicU64,
    }

    impl Source for Ancestral {
        fn size(&self) -> u64 {
            SIZE
        }
        fn read(&self, offset: u64, length: u32) -> Result<Vec<u8>, u32> {
            let until = Instant::now() + Duration::from_secs(10);
            while self.mode.load(Ordering::SeqCst) == HANG && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10)); // a test double's stall
            }
            if self.mode.load(Ordering::SeqCst) == FAIL {
                return Err(errno::EIO);
            }
            self.reads.fetch_add(1, Ordering::SeqCst);
            Ok((offset..offset + u64::from(length))
                .map(|i| (i % 251) as u8)
                .collect())
        }
    }

    /// A TCP NBD server whose connections can be cut and whose door can be shut.
    struct Server {
        node: String,
        address: SocketAddr,
        source: Arc<Ancestral>,
        conns: Arc<Mutex<Vec<TcpStream>>>,
        refusing: Arc<AtomicBool>,
    }

    impl Server {
        fn start(node: &str) -> Server {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let source = Arc::new(Ancestral {
                mode: AtomicU8::new(ANSWER),
                reads: AtomicU64::new(0),
            });
            let conns = Arc::new(Mutex::new(Vec::new()));
            let refusing = Arc::new(AtomicBool::new(false));
            let server = Server {
                node: node.into(),
                address: listener.local_addr().unwrap(),
                source: source.clone(),
                conns: conns.clone(),
                refusing: refusing.clone(),
            };
            std::thread::spawn(move || {
                for conn in listener.incoming().flatten() {
                    if refusing.load(Ordering::SeqCst) {
                        continue; // dropped: the client sees its handshake fail
                    }
                    conns.lock().unwrap().push(conn.try_clone().unwrap());
                    let source: Arc<dyn Source> = source.clone();
                    std::thread::spawn(move || serve(conn, "img", source));
                }
            });
            server
        }

        fn ancestor(&self) -> Ancestor {
            Ancestor {
                node: self.node.clone(),
                address: self.address,
            }
        }

        /// Like a killed daemon: every connection reset, no new one served.
        fn kill(&self) {
            self.refusing.store(true, Ordering::SeqCst);
            for c in self.conns.lock().unwrap().drain(..) {
                let _ = c.shutdown(std::net::Shutdown::Both);
            }
        }
    }

    fn timing() -> Timing {
        Timing {
            connect: Duration::from_secs(2),
            heartbeat: Duration::from_millis(100),
            liveness: Duration::from_millis(300),
            request: Duration::from_secs(5),
            return_probe: Duration::from_millis(100),
            give_up: Duration::from_secs(5),
        }
    }

    fn switch_over(servers: &[&Server], timing: Timing) -> Switch {
        let first = Connection::open(
            &Address::Tcp(servers[0].address),
            "img",
            Duration::from_secs(2),
        )
        .unwrap();
        let ancestors = servers.iter().map(|s| s.ancestor()).collect();
        Switch::new("img", ancestors, timing, first)
    }

    fn expected(offset: u64, length: u32) -> Vec<u8> {
        (offset..offset + u64::from(length))
            .map(|i| (i % 251) as u8)
            .collect()
    }

    #[test]
    fn a_killed_parent_is_replaced_by_the_grandparent_without_a_failed_read() {
        let (a, b) = (Server::start("a"), Server::start("b"));
        let sw = switch_over(&[&a, &b], timing());
        assert_eq!(sw.read(4096, 8192), Ok(expected(4096, 8192)));
        a.kill();
        assert_eq!(sw.read(70_000, 65536), Ok(expected(70_000, 65536)));
        let r = sw.report();
        assert_eq!((r.current.as_str(), r.planned.as_str()), ("b", "a"));
        assert_eq!((r.failovers, r.failed_requests), (1, 0));
        assert_eq!(r.events[0].from, "a");
        assert!(b.source.reads.load(Ordering::SeqCst) > 0);
    }

    #[test]
    fn an_error_answer_sends_the_read_to_the_next_ancestor() {
        let (a, b) = (Server::start("a"), Server::start("b"));
        let sw = switch_over(&[&a, &b], timing());
        a.source.mode.store(FAIL, Ordering::SeqCst);
        assert_eq!(sw.read(0, 512), Ok(expected(0, 512)));
        let r = sw.report();
        assert_eq!((r.current.as_str(), r.retried_requests), ("b", 1));
    }

    #[test]
    fn a_silent_parent_is_left_at_the_heartbeat_and_taken_back_when_it_answers() {
        let (a, b) = (Server::start("a"), Server::start("b"));
        let sw = Arc::new(switch_over(&[&a, &b], timing()));
        a.source.mode.store(HANG, Ordering::SeqCst);
        let started = Instant::now();
        let reader = {
            let sw = sw.clone();
            std::thread::spawn(move || sw.read(1 << 19, 4096))
        };
        // The reader's request now waits on the silent parent; the heartbeat notices.
        sw.heartbeat();
        assert_eq!(reader.join().unwrap(), Ok(expected(1 << 19, 4096)));
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "{:?}",
            started.elapsed()
        );
        let r = sw.report();
        assert_eq!(r.current, "b");
        assert!(r.last_reparent_took_ms.is_some_and(|t| t < 3000), "{r:?}");
        assert!(sw.away());
        // The parent answers again: the next return probe moves back to it.
        a.source.mode.store(ANSWER, Ordering::SeqCst);
        sw.try_return();
        let r = sw.report();
        assert_eq!((r.current.as_str(), r.failovers), ("a", 2));
        assert!(!sw.away());
    }

    #[test]
    fn with_no_ancestor_left_a_read_fails_after_the_give_up_time_and_is_counted() {
        let a = Server::start("a");
        let sw = switch_over(
            &[&a],
            Timing {
                give_up: Duration::from_millis(500),
                ..timing()
            },
        );
        a.kill();
        let started = Instant::now();
        assert_eq!(sw.read(0, 512), Err(errno::EIO));
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(sw.report().failed_requests, 1);
    }

    #[test]
    fn a_new_ancestor_list_moves_the_link_off_a_node_that_left() {
        let (a, b) = (Server::start("a"), Server::start("b"));
        let sw = switch_over(&[&a, &b], timing());
        sw.set_ancestors(vec![b.ancestor()]);
        assert_eq!(sw.read(0, 512), Ok(expected(0, 512)));
        let r = sw.report();
        assert_eq!((r.current.as_str(), r.planned.as_str()), ("b", "b"));
    }
}
