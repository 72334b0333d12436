//! What the kernel failover tests share: readers that compare every byte they read with
//! the image and time every read, a node's resources from the journal, and the faults
//! (a node's target removed, its tgtd killed).

use std::fs;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use sftsan_core::backends::kernel::initiator::IscsiSession;
use sftsan_core::engine::Journal;
use sftsan_core::plan::ResourceSpec;
use sftsan_core::resources::{Ctx, Tools};
use sftsan_core::transport::LocalTransport;

use super::KernelCluster;

/// Each read: 64 KiB, so a stall is timed to one small request.
pub const CHUNK: usize = 64 << 10;

/// What a reader saw.
#[derive(Debug, Default)]
pub struct ReadReport {
    pub path: PathBuf,
    pub reads: u64,
    pub passes: u64,
    /// Reads that failed (EIO and the like) or came back short.
    pub errors: u64,
    /// Reads whose bytes differ from the image's.
    pub wrong: u64,
    /// The first few failures, for the assertion message.
    pub first_failures: Vec<String>,
    /// The longest single read, and where it started.
    pub longest: Duration,
    pub longest_at: Option<Instant>,
}

/// A thread reading a device from start to end over and over with O_DIRECT (every read
/// reaches the device, never the page cache), comparing each chunk with the image.
pub struct Reader {
    stop: Arc<AtomicBool>,
    /// Completed passes over the whole device.
    passes: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
    handle: Option<JoinHandle<ReadReport>>,
}

/// A page-aligned buffer, as O_DIRECT needs.
struct Aligned {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl Aligned {
    fn new(len: usize) -> Aligned {
        let layout = std::alloc::Layout::from_size_align(len, 4096).unwrap();
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!ptr.is_null(), "out of memory");
        Aligned { ptr, layout }
    }

    fn bytes(&mut self) -> &mut [u8] {
        // SAFETY: ptr holds layout.size() initialized bytes, owned by self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.layout.size()) }
    }
}

impl Drop for Aligned {
    fn drop(&mut self) {
        // SAFETY: allocated with this layout in new.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

impl Reader {
    pub fn start(path: PathBuf, image: Arc<Vec<u8>>) -> Reader {
        let stop = Arc::new(AtomicBool::new(false));
        let passes = Arc::new(AtomicU64::new(0));
        let bytes = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let counters = Counters {
            stop: stop.clone(),
            passes: passes.clone(),
            bytes: bytes.clone(),
            errors: errors.clone(),
        };
        let handle = std::thread::spawn(move || read_loop(path, &image, &counters));
        Reader {
            stop,
            passes,
            bytes,
            errors,
            handle: Some(handle),
        }
    }

    pub fn passes(&self) -> u64 {
        self.passes.load(Ordering::SeqCst)
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::SeqCst)
    }

    /// Reads that failed so far.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::SeqCst)
    }

    /// Stops after the read in progress and returns what it saw.
    pub fn finish(mut self) -> ReadReport {
        self.stop.store(true, Ordering::SeqCst);
        let handle = self.handle.take().expect("finished once");
        handle.join().expect("the reader panicked")
    }
}

/// A test that fails midway stops its readers too: a device being read cannot be removed.
impl Drop for Reader {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

/// What a reader shares with its test while it runs.
struct Counters {
    stop: Arc<AtomicBool>,
    passes: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    errors: Arc<AtomicU64>,
}

fn read_loop(path: PathBuf, image: &[u8], c: &Counters) -> ReadReport {
    let file = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut buf = Aligned::new(CHUNK);
    let mut report = ReadReport {
        path: path.clone(),
        ..ReadReport::default()
    };
    fn fail(report: &mut ReadReport, what: String) {
        if report.first_failures.len() < 5 {
            report.first_failures.push(what);
        }
    }
    while !c.stop.load(Ordering::SeqCst) {
        for at in (0..image.len()).step_by(CHUNK) {
            if c.stop.load(Ordering::SeqCst) {
                return report;
            }
            let started = Instant::now();
            let got = file.read_at(buf.bytes(), at as u64);
            let took = started.elapsed();
            report.reads += 1;
            if took > report.longest {
                report.longest = took;
                report.longest_at = Some(started);
            }
            let want = &image[at..(at + CHUNK).min(image.len())];
            match got {
                Ok(n) if n == want.len() => {
                    if &buf.bytes()[..n] != want {
                        report.wrong += 1;
                        fail(&mut report, format!("wrong bytes at {at}"));
                    }
                    c.bytes.fetch_add(n as u64, Ordering::SeqCst);
                }
                Ok(n) => {
                    report.errors += 1;
                    c.errors.fetch_add(1, Ordering::SeqCst);
                    fail(&mut report, format!("{n} bytes at {at}"));
                }
                Err(e) => {
                    report.errors += 1;
                    c.errors.fetch_add(1, Ordering::SeqCst);
                    fail(&mut report, format!("at {at}: {e}"));
                }
            }
        }
        report.passes += 1;
        c.passes.fetch_add(1, Ordering::SeqCst);
    }
    report
}

/// What a resource operation of a test needs.
pub fn ctx() -> Ctx {
    Ctx {
        transport: Arc::new(LocalTransport),
        tools: Arc::new(Tools::from_env()),
    }
}

/// The resource `id` (e.g. `n1/lio-target`) as cluster `c`'s journal recorded it.
pub fn journaled(c: &KernelCluster, id: &str) -> ResourceSpec {
    let journal = Journal::load(&c.names.journal())
        .unwrap()
        .expect("a journal");
    journal
        .data
        .entries
        .into_iter()
        .find(|e| e.id == id)
        .map(|e| e.resource)
        .unwrap_or_else(|| panic!("{id} is not in the journal"))
}

/// The session `id` (`<node>/iscsi-session` or `<node>/iscsi-standby`) of `c`.
pub fn session(c: &KernelCluster, id: &str) -> IscsiSession {
    match journaled(c, id) {
        ResourceSpec::IscsiSession(s) | ResourceSpec::IscsiStandby(s) => s,
        other => panic!("{id} is a {}", other.kind()),
    }
}

/// Removes `node`'s iSCSI target as its own teardown does (LIO: its configfs objects, which
/// closes its sessions); the rest of the node's stack stays.
pub fn remove_target(c: &KernelCluster, node: &str) {
    use sftsan_core::resources::Resource;
    match journaled(c, &format!("{node}/lio-target")) {
        ResourceSpec::LioTarget(t) => t.teardown(&ctx()).unwrap(),
        other => panic!("{node}'s target is a {}", other.kind()),
    }
}

/// Kills `node`'s tgtd (SIGKILL): its sessions' connections are reset by the kernel.
pub fn kill_tgtd(c: &KernelCluster, node: &str) -> i32 {
    let pidfile = c.names.run_dir(node).join("tgtd.pid");
    let pid: i32 = fs::read_to_string(&pidfile)
        .unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()))
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill has no memory preconditions.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0, "kill {pid}");
    pid
}

/// Sectors read from block device `major:minor` so far (`/sys/dev/block/.../stat`).
pub fn sectors_read(major: u32, minor: u32) -> u64 {
    let stat = fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/stat")).unwrap();
    stat.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// The image's bytes.
pub fn image_bytes(path: &Path) -> Arc<Vec<u8>> {
    Arc::new(fs::read(path).unwrap())
}

/// On a panic, makes the I/O that n3's upstream queues for lack of a path fail instead, so
/// that readers stuck in it return and the cluster can be taken down (`down` goes on to the
/// parents of a node it could not take down, and then nothing would ever serve that I/O).
struct Unqueue(String);

impl Drop for Unqueue {
    fn drop(&mut self) {
        use sftsan_core::backends::kernel::multipath::MultipathMessage;
        if std::thread::panicking() {
            let _ = super::dm::message(&self.0, &MultipathMessage::FailIfNoPath);
        }
    }
}

/// How the parent goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Its LIO target is removed (`kernel.relay = "lio"`).
    RemoveTarget,
    /// Its tgtd is killed (`kernel.relay = "tgt"`).
    KillTgtd,
}

/// What a failover run measured.
pub struct Outcome {
    pub reports: Vec<ReadReport>,
    /// From the fault until the multipath device's I/O went to the new path.
    pub failover: Duration,
    /// Sectors read through the new path's disk while the readers ran.
    pub new_path_sectors: u64,
    /// n3's upstream table at the end.
    pub table: Option<sftsan_core::backends::kernel::multipath::MultipathTargetParams>,
    /// The new path's device.
    pub new_path: devicemapper::Device,
    /// The cluster, still up (the caller takes it down).
    pub cluster: KernelCluster,
}

/// A cluster origin -> n1, n2; n1 -> n3 (degree 2) on `relay`: readers on n3's upstream
/// (its multipath device, where every read reaches a path) and on its first VM disk
/// (through its cache) read and compare the image while n1's target goes away. The kernel
/// moves the I/O to the origin's path group; then the table is reloaded to that path alone
/// (suspended without flushing, loaded, resumed) under the same readers.
pub fn parent_dies_during_reads(name: &str, relay: &str, fault: Fault) -> Outcome {
    use super::{cluster_of, disk, dm, image_file, require_ready};
    use sftsan_core::backends::kernel::multipath::{self, MultipathTargetParams};

    let c = cluster_of(name, "dm-snapshot", relay, "dm-cache", &["n1", "n2", "n3"]);
    require_ready(&c);
    c.engine.up().unwrap_or_else(|e| panic!("up: {e}"));
    let parent = session(&c, "n3/iscsi-session");
    let standby = session(&c, "n3/iscsi-standby");
    assert_eq!(parent.parent, "n1");
    assert_eq!(standby.parent, "origin");
    let parent_dev = disk_of(&parent);
    let standby_dev = disk_of(&standby);
    let mpath = c.names.dm_name("n3", "mpath");
    let both = MultipathTargetParams {
        queue_if_no_path: true,
        groups: vec![vec![parent_dev], vec![standby_dev]],
    };
    assert_eq!(
        multipath::table(&mpath).unwrap(),
        Some(both),
        "n3's upstream: n1's LUN, then the origin's"
    );
    let recovery = |s: &IscsiSession| s.matching_sessions()[0].recovery_tmo;
    assert_eq!(
        recovery(&parent),
        Some(3),
        "the parent's replacement timeout"
    );
    assert_eq!(recovery(&standby), Some(-1), "the standby never gives up");

    let image = image_bytes(&image_file(&c));
    let upstream = dm::node_path(dm::device(&mpath).unwrap().unwrap()).unwrap();
    let readers = [
        Reader::start(upstream, image.clone()),
        Reader::start(disk(&c, "n3", "snap-1"), image),
    ];
    // Dropped before the readers: a failing test must not leave them waiting forever.
    let _unqueue = Unqueue(mpath.clone());
    assert!(
        sftsan_tests::eventually(Duration::from_secs(60), || readers[0].bytes() >= 2 << 20),
        "the reader of n3's upstream read nothing"
    );
    let before = sectors_read(standby_dev.major, standby_dev.minor);
    let fault_at = Instant::now();
    match fault {
        Fault::RemoveTarget => remove_target(&c, "n1"),
        Fault::KillTgtd => drop(kill_tgtd(&c, "n1")),
    }
    let moved = dm::wait_for_status(&mpath, Duration::from_secs(60), |lines| {
        let s: multipath::MultipathStatus = lines.first()?.3.parse().ok()?;
        let parent_failed = s.path(parent_dev).is_some_and(|p| !p.active);
        (parent_failed && s.active_path() == Some(standby_dev)).then_some(())
    })
    .unwrap();
    let failover = fault_at.elapsed();
    assert!(
        moved.is_some(),
        "n3's upstream did not move to the origin's path: {:?}",
        multipath::status(&mpath)
    );
    // Every reader finishes a whole pass after the move; then the table drops the dead
    // path under them, and they finish another.
    let next_pass =
        |readers: &[Reader; 2]| -> Vec<u64> { readers.iter().map(|r| r.passes() + 2).collect() };
    let passed = |readers: &[Reader; 2], marks: &[u64]| {
        sftsan_tests::eventually(Duration::from_secs(180), || {
            readers.iter().zip(marks).all(|(r, m)| r.passes() >= *m)
        })
    };
    let marks = next_pass(&readers);
    assert!(passed(&readers, &marks), "no whole pass after the move");
    let sectors = devicemapper::Sectors(super::IMAGE / 512);
    let alone = MultipathTargetParams {
        queue_if_no_path: true,
        groups: vec![vec![standby_dev]],
    };
    multipath::reload(&mpath, &alone, sectors).unwrap();
    let marks = next_pass(&readers);
    let done = passed(&readers, &marks);
    let reports: Vec<ReadReport> = readers.into_iter().map(Reader::finish).collect();
    assert!(done, "no whole pass after the reload: {reports:?}");
    Outcome {
        reports,
        failover,
        new_path_sectors: sectors_read(standby_dev.major, standby_dev.minor) - before,
        table: multipath::table(&mpath).unwrap(),
        new_path: standby_dev,
        cluster: c,
    }
}

/// The block device of a logged-in session's LUN.
pub fn disk_of(s: &IscsiSession) -> devicemapper::Device {
    let d = s
        .disk()
        .unwrap_or_else(|| panic!("{}'s session to {} has no disk", s.node, s.parent));
    devicemapper::Device {
        major: d.major,
        minor: d.minor,
    }
}

impl Outcome {
    /// One line per reader: what it read, its longest stall, its failures.
    pub fn print(&self, what: &str) {
        println!(
            "{what}: the upstream moved to the new path {:.2} s after the fault; {} sectors read through it",
            self.failover.as_secs_f64(),
            self.new_path_sectors
        );
        for r in &self.reports {
            println!(
                "{what}: {}: {} reads in {} passes, {} errors, {} wrong, longest stall {:.3} s",
                r.path.display(),
                r.reads,
                r.passes,
                r.errors,
                r.wrong,
                r.longest.as_secs_f64()
            );
        }
    }
}
