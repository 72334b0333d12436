//! What TLS costs a relay (`sftsan bench relay-tls`): readers fetch one image whole from a
//! node's export, once as local/host mode serves it (the node's daemon on TCP, no TLS) and
//! once as remote mode does (TLS-PSK from the node's TLS relay, which reads the daemon's
//! unix socket). Both arms are up for the whole run and take turns round by round, so the
//! machine's noise hits both; the report gives medians, CPU per GiB and tls/plain ratios.

use anyhow::{bail, Context as _, Result};
use clap::Args;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fs;
use std::io::{Read as _, Write as _};
use std::net::{IpAddr, Ipv4Addr, TcpListener};
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use sftsan_core::backends::userspace::{Daemon, LinkKey, OriginExport, TlsRelay};
use sftsan_core::resources::{Ctx, Observed, Resource, Tools};
use sftsan_core::transport::LocalTransport;
use sftsan_core::{errln, outln};

const MIB: u64 = 1 << 20;
const GIB: f64 = (1u64 << 30) as f64;
/// The export's name in both arms.
const EXPORT: &str = "bench";
/// The identity the readers present to the relay.
const USERNAME: &str = "bench";
/// Written first into a work directory the benchmark made: only such a directory is ever
/// emptied and removed (an interrupted run's leftovers are cleared by the next run).
const MARKER: &str = ".sftsan-bench-relay-tls";

/// What TLS costs a relay.
#[derive(Args, Debug)]
pub struct RelayTls {
    /// Size of the image each reader reads whole (binary units: 256MiB, 1GiB; bytes if bare).
    #[arg(long, default_value = "256MiB")]
    size: String,
    /// Rounds; each reads through plain then tls, once per reader count.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Parallel reader counts (a relay serves several children), each reading the whole image.
    #[arg(long, value_delimiter = ',', default_value = "1,4")]
    readers: Vec<u32>,
    /// Requests in flight per reader (qemu-img convert -m).
    #[arg(long, default_value_t = 8)]
    depth: u32,
    /// The image, keys, sockets and runtime files (made for the run, removed after it).
    #[arg(long, default_value = "/var/tmp/sftsan-bench-relay-tls")]
    work_dir: PathBuf,
    /// Where README.md and results.json go.
    #[arg(long, default_value = "docs/bench/relay-tls")]
    out: PathBuf,
}

/// `256MiB`, `1GiB`, `64M`, `4096`: binary units.
fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits.parse().ok()?;
    let shift = match unit {
        "" | "B" => 0,
        "K" | "KiB" => 10,
        "M" | "MiB" => 20,
        "G" | "GiB" => 30,
        _ => return None,
    };
    n.checked_mul(1 << shift)
}

impl RelayTls {
    /// One-line errors naming the argument, before anything is touched; the image's size.
    fn check(&self) -> Result<u64> {
        let size = parse_size(&self.size).with_context(|| {
            format!(
                "--size: {:?} is not a size (e.g. 256MiB, 1GiB, or bytes)",
                self.size
            )
        })?;
        if size == 0 || size % MIB != 0 || size > 64 << 30 {
            bail!(
                "--size: {} must be a whole number of MiB, from 1MiB to 64GiB",
                self.size
            );
        }
        if !(1..=100).contains(&self.rounds) {
            bail!("--rounds: {} is out of range (1 to 100)", self.rounds);
        }
        if self.readers.is_empty() {
            bail!("--readers: name at least one reader count");
        }
        if let Some(n) = self.readers.iter().find(|n| !(1..=32).contains(*n)) {
            bail!("--readers: {n} is out of range (1 to 32)");
        }
        let mut seen = self.readers.clone();
        seen.sort_unstable();
        seen.dedup();
        if seen.len() != self.readers.len() {
            bail!("--readers: a reader count appears twice");
        }
        if !(1..=16).contains(&self.depth) {
            bail!("--depth: {} is out of range (1 to 16)", self.depth);
        }
        super::check_work_dir(&self.work_dir)?;
        let text = self.work_dir.to_string_lossy();
        if self.work_dir.parent().is_none() {
            bail!("--work-dir: {text:?} cannot be the root directory");
        }
        if self.out.is_file() {
            bail!("--out: {} is a file, not a directory", self.out.display());
        }
        Ok(size)
    }
}

// ---------------------------------------------------------------------------------------
// Ctrl-C: the run stops between steps and tears down what it made.

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set a flag while it lives (the previous handlers come back after).
pub(crate) struct Signals {
    old: Vec<(libc::c_int, libc::sigaction)>,
}

impl Signals {
    pub(crate) fn catch() -> Signals {
        INTERRUPTED.store(false, Ordering::SeqCst);
        let mut old = Vec::new();
        for sig in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: a zeroed sigaction is a valid value; the handler only stores to an
            // atomic (async-signal-safe); both pointers are valid for the call.
            unsafe {
                let mut action: libc::sigaction = std::mem::zeroed();
                action.sa_sigaction = on_signal as *const () as libc::sighandler_t;
                action.sa_flags = libc::SA_RESTART;
                libc::sigemptyset(&mut action.sa_mask);
                let mut previous: libc::sigaction = std::mem::zeroed();
                if libc::sigaction(sig, &action, &mut previous) == 0 {
                    old.push((sig, previous));
                }
            }
        }
        Signals { old }
    }
}

impl Drop for Signals {
    fn drop(&mut self) {
        for (sig, previous) in &self.old {
            // SAFETY: restores an action sigaction returned; the pointer is valid.
            unsafe { libc::sigaction(*sig, previous, std::ptr::null_mut()) };
        }
    }
}

pub(crate) fn interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// The two arms, made of the resources sftsan runs in production.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
enum ArmKind {
    Plain,
    Tls,
}

impl ArmKind {
    fn name(self) -> &'static str {
        match self {
            ArmKind::Plain => "plain",
            ArmKind::Tls => "tls",
        }
    }

    fn path(self) -> &'static str {
        match self {
            ArmKind::Plain => {
                "reader -> TCP -> the node's qemu-storage-daemon (local/host mode: no TLS, no relay)"
            }
            ArmKind::Tls => {
                "reader -> TLS-PSK over TCP -> the node's TLS relay (a second qemu-storage-daemon) \
                 -> unix socket -> the node's qemu-storage-daemon (remote mode)"
            }
        }
    }
}

struct Arm {
    kind: ArmKind,
    daemon: Daemon,
    export: OriginExport,
    relay: Option<TlsRelay>,
    /// What readers connect to (the daemon's port, or the relay's).
    port: u16,
    /// The readers' key (tls).
    client: Option<LinkKey>,
}

impl Arm {
    fn new(kind: ArmKind, work: &Path, image: &Path, port: u16) -> Arm {
        let run_dir = work.join(kind.name());
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let socket = run_dir.join("nbd.sock");
        let daemon = Daemon {
            node: kind.name().into(),
            address: loopback,
            port,
            run_dir: run_dir.clone(),
            socket: (kind == ArmKind::Tls).then(|| socket.clone()),
        };
        let export = OriginExport {
            node: kind.name().into(),
            run_dir: run_dir.clone(),
            source: image.to_path_buf(),
            export: EXPORT.into(),
        };
        let (relay, client) = match kind {
            ArmKind::Plain => (None, None),
            ArmKind::Tls => (
                Some(TlsRelay {
                    node: kind.name().into(),
                    run_dir,
                    address: loopback,
                    port,
                    export: EXPORT.into(),
                    socket,
                    keys: work.join("keys/server"),
                }),
                Some(LinkKey {
                    dir: work.join("keys/client"),
                    username: USERNAME.into(),
                }),
            ),
        };
        Arm {
            kind,
            daemon,
            export,
            relay,
            port,
            client,
        }
    }

    /// In creation order.
    fn resources(&self) -> Vec<&dyn Resource> {
        let mut r: Vec<&dyn Resource> = vec![&self.daemon, &self.export];
        if let Some(relay) = &self.relay {
            r.push(relay);
        }
        r
    }

    /// The arm's server processes: the daemon, and the relay (tls).
    fn server_pids(&self) -> Result<Vec<(&'static str, i32)>> {
        let pid = |what: &'static str, r: &dyn Resource| -> Result<(&'static str, i32)> {
            r.runtime()
                .iter()
                .find(|(k, _)| *k == "pid")
                .and_then(|(_, v)| v.parse().ok())
                .map(|p| (what, p))
                .with_context(|| format!("the {} arm's {what} is not running", self.kind.name()))
        };
        let mut pids = vec![pid("daemon", &self.daemon)?];
        if let Some(relay) = &self.relay {
            pids.push(pid("relay", relay)?);
        }
        Ok(pids)
    }

    /// `--object` of the readers' credentials (tls).
    fn object(&self) -> Result<Option<String>> {
        self.client
            .as_ref()
            .map(|key| Ok(serde_json::to_string(&key.credentials("link"))?))
            .transpose()
    }

    /// The export as `qemu-img --image-opts` reads it.
    fn image_opts(&self) -> String {
        let mut o = format!(
            "driver=raw,file.driver=nbd,file.server.type=inet,file.server.host=127.0.0.1,\
             file.server.port={},file.export={EXPORT}",
            self.port
        );
        if self.client.is_some() {
            o.push_str(",file.tls-creds=link");
        }
        o
    }
}

/// Everything the run made; dropping it tears everything down.
struct Bed {
    ctx: Ctx,
    work: PathBuf,
    arms: [Arm; 2],
    cleaned: bool,
}

impl Bed {
    fn new(work: &Path, ports: [u16; 2]) -> Bed {
        let image = work.join("image.raw");
        Bed {
            ctx: Ctx {
                transport: Arc::new(LocalTransport),
                tools: Arc::new(Tools::from_env()),
            },
            work: work.to_path_buf(),
            arms: [
                Arm::new(ArmKind::Plain, work, &image, ports[0]),
                Arm::new(ArmKind::Tls, work, &image, ports[1]),
            ],
            cleaned: false,
        }
    }

    fn image(&self) -> PathBuf {
        self.work.join("image.raw")
    }

    /// Clears what an interrupted earlier run left in the work directory (its marker
    /// says it is ours), then makes the directory afresh.
    fn prepare(&mut self) -> Result<()> {
        if self.work.exists() {
            if !self.work.join(MARKER).is_file() {
                // Not ours: nothing in it is touched, now or when the bed is dropped.
                self.cleaned = true;
                bail!(
                    "--work-dir: {} exists and is not a relay-tls work directory; name another",
                    self.work.display()
                );
            }
            errln!(
                "clearing an earlier run's leftovers in {}",
                self.work.display()
            );
            self.teardown().context("clearing an earlier run")?;
        }
        self.cleaned = false;
        if let Some(parent) = self.work.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("--work-dir: cannot create {}", parent.display()))?;
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&self.work)
            .with_context(|| format!("--work-dir: cannot create {}", self.work.display()))?;
        fs::write(self.work.join(MARKER), b"sftsan bench relay-tls\n")?;
        Ok(())
    }

    /// Stops every process and removes the work directory; idempotent.
    fn teardown(&mut self) -> Result<()> {
        let mut first_error = None;
        for arm in &self.arms {
            for r in arm.resources().into_iter().rev() {
                if let Err(e) = r.teardown(&self.ctx) {
                    first_error.get_or_insert(
                        anyhow::Error::from(e)
                            .context(format!("tearing down the {} arm", arm.kind.name())),
                    );
                }
            }
        }
        if let Some(e) = first_error {
            return Err(e);
        }
        for arm in &self.arms {
            for r in arm.resources() {
                if !matches!(r.observe(&self.ctx)?, Observed::Absent) {
                    bail!(
                        "the {} arm's {:?} survived its teardown",
                        arm.kind.name(),
                        r.desired()
                    );
                }
            }
        }
        let left = own_daemons(&self.work);
        if !left.is_empty() {
            bail!(
                "qemu-storage-daemon processes {left:?} of {} survived the teardown",
                self.work.display()
            );
        }
        if self.work.join(MARKER).is_file() {
            fs::remove_dir_all(&self.work)
                .with_context(|| format!("removing {}", self.work.display()))?;
        }
        self.cleaned = true;
        Ok(())
    }

    fn create(&self) -> Result<()> {
        for arm in &self.arms {
            for r in arm.resources() {
                interrupted()?;
                r.create(&self.ctx)
                    .with_context(|| format!("starting the {} arm", arm.kind.name()))?;
            }
        }
        Ok(())
    }

    /// One `qemu-img compare` of each arm's export against the image: a broken arm cannot
    /// report a fast number.
    fn check_data(&self) -> Result<()> {
        let file = format!(
            "driver=raw,file.driver=file,file.filename={}",
            self.image().display()
        );
        for arm in &self.arms {
            interrupted()?;
            let mut cmd = Command::new(&self.ctx.tools.qemu_img);
            cmd.args(["compare", "-q"]);
            if let Some(object) = arm.object()? {
                cmd.args(["--object", &object]);
            }
            let out = cmd
                .args(["--image-opts", &file, &arm.image_opts()])
                .output()
                .context("running qemu-img compare")?;
            if !out.status.success() {
                bail!(
                    "the {} arm's export differs from the image or cannot be read (qemu-img compare exited {}): {}",
                    arm.kind.name(),
                    out.status,
                    last_line(&out.stderr)
                );
            }
        }
        Ok(())
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if !self.cleaned {
            if let Err(e) = self.teardown() {
                errln!("cleaning up: {e:#}");
            }
        }
    }
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// Live qemu-storage-daemon processes whose argv names `work`.
fn own_daemons(work: &Path) -> Vec<i32> {
    let needle = work.display().to_string();
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| {
            let argv = sftsan_core::process::cmdline(pid);
            argv.first()
                .is_some_and(|a| a.ends_with("qemu-storage-daemon"))
                && argv.iter().any(|a| a.contains(&needle))
        })
        .collect()
}

/// Two free TCP ports on the loopback (free when asked; the daemons bind them right after).
fn free_ports() -> Result<[u16; 2]> {
    let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let b = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok([a.local_addr()?.port(), b.local_addr()?.port()])
}

/// The image: `size` bytes of pseudo-random data (nothing for zero detection or
/// compression to skip), synced so that no writeback runs during the measurements.
fn make_image(path: &Path, size: u64) -> Result<()> {
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
        | 1;
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        interrupted()?;
        for chunk in buf.chunks_exact_mut(8) {
            // xorshift64*
            seed ^= seed >> 12;
            seed ^= seed << 25;
            seed ^= seed >> 27;
            chunk.copy_from_slice(&seed.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        file.write_all(&buf)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    file.sync_all()
        .with_context(|| format!("syncing {}", path.display()))?;
    Ok(())
}

/// A fresh 32-byte key, the same line in the relay's and the readers' `keys.psk`.
fn write_keys(work: &Path) -> Result<()> {
    let mut bytes = [0u8; 32];
    fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    for side in ["server", "client"] {
        let dir = work.join("keys").join(side);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join("keys.psk"))?;
        writeln!(f, "{USERNAME}:{key}")?;
    }
    Ok(())
}

fn free_bytes(dir: &Path) -> Option<u64> {
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).ok()?;
    // SAFETY: a zeroed statvfs is a valid value; both pointers are valid for the call.
    unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        (libc::statvfs(path.as_ptr(), &mut st) == 0).then(|| st.f_bavail * st.f_frsize)
    }
}

// ---------------------------------------------------------------------------------------
// Measuring.

/// CPU seconds (user + system, every thread) a process has used so far.
fn process_cpu_s(pid: i32) -> Result<f64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the command (which may hold spaces) start at field 3 (state).
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("a malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("/proc/{pid}/stat has no field {n}"))
    };
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Ok((field(14)? + field(15)?) as f64 / ticks)
}

/// One measurement: `readers` readers through one arm, each reading the whole export.
#[derive(Debug, Clone, Serialize)]
struct Sample {
    round: u32,
    arm: ArmKind,
    readers: u32,
    bytes: u64,
    seconds: f64,
    mib_per_s: f64,
    /// CPU seconds of the arm's server processes (`daemon`, and `relay` for tls).
    server_cpu_s: BTreeMap<&'static str, f64>,
    /// CPU seconds of the readers (user + system, from wait4).
    reader_cpu_s: f64,
}

/// Waits for a child, with its resource usage.
fn wait_child(pid: i32) -> Result<(i32, f64)> {
    let mut status = 0;
    // SAFETY: a zeroed rusage is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: `pid` is our unreaped child; both pointers are valid for the call.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            break;
        }
        let err = std::io::Error::last_os_error();
        if err.kind() != std::io::ErrorKind::Interrupted {
            return Err(err).context("waiting for a reader");
        }
    }
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok((status, secs(usage.ru_utime) + secs(usage.ru_stime)))
}

struct Measure<'a> {
    bed: &'a Bed,
    size: u64,
    depth: u32,
}

impl Measure<'_> {
    fn sample(&self, arm: &Arm, readers: u32, round: u32) -> Result<Sample> {
        let pids = arm.server_pids()?;
        let before: Vec<f64> = pids
            .iter()
            .map(|(_, p)| process_cpu_s(*p))
            .collect::<Result<_>>()?;
        let object = arm.object()?;
        let target = format!("driver=null-co,size={}", self.size);
        let mut running: Vec<(i32, PathBuf)> = Vec::new();
        let started = Instant::now();
        let mut spawned = Ok(());
        for i in 0..readers {
            let log = self.bed.work.join(format!("reader-{i}.log"));
            // qemu-img bench has no --object in QEMU 10.0, so it cannot present a key:
            // convert into a null target reads the export sequentially the same way.
            let mut cmd = Command::new(&self.bed.ctx.tools.qemu_img);
            cmd.args(["convert", "-n", "-W", "-S", "0", "-m"])
                .arg(self.depth.to_string());
            if let Some(o) = &object {
                cmd.args(["--object", o]);
            }
            cmd.args(["--image-opts", &arm.image_opts()])
                .args(["--target-image-opts", &target])
                .stdin(Stdio::null())
                .stdout(Stdio::null());
            let child = fs::File::create(&log)
                .map_err(anyhow::Error::from)
                .and_then(|f| Ok(cmd.stderr(f).spawn()?));
            match child {
                Ok(c) => running.push((c.id() as i32, log)),
                Err(e) => {
                    spawned = Err(e.context("starting qemu-img convert"));
                    break;
                }
            }
        }
        if spawned.is_err() {
            for (pid, _) in &running {
                // SAFETY: an unreaped child of ours: the pid cannot be reused yet.
                unsafe { libc::kill(*pid, libc::SIGKILL) };
            }
        }
        let mut reader_cpu_s = 0.0;
        let mut failed = None;
        for (pid, log) in &running {
            let (status, cpu) = wait_child(*pid)?;
            reader_cpu_s += cpu;
            if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) && failed.is_none() {
                failed = Some(last_line(&fs::read(log).unwrap_or_default()));
            }
            let _ = fs::remove_file(log);
        }
        let seconds = started.elapsed().as_secs_f64();
        spawned?;
        interrupted()?;
        if let Some(why) = failed {
            bail!("a reader of the {} arm failed: {why}", arm.kind.name());
        }
        let mut server_cpu_s = BTreeMap::new();
        for ((what, pid), b) in pids.iter().zip(before) {
            server_cpu_s.insert(*what, process_cpu_s(*pid)? - b);
        }
        let bytes = self.size * u64::from(readers);
        Ok(Sample {
            round,
            arm: arm.kind,
            readers,
            bytes,
            seconds,
            mib_per_s: bytes as f64 / MIB as f64 / seconds,
            server_cpu_s,
            reader_cpu_s,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Summaries.

#[derive(Debug, Serialize)]
struct Summary {
    arm: ArmKind,
    readers: u32,
    samples: usize,
    median_mib_per_s: f64,
    min_mib_per_s: f64,
    max_mib_per_s: f64,
    /// Server CPU seconds per GiB served, summed over the rounds (daemon + relay for tls).
    server_cpu_s_per_gib: f64,
    /// The same, per process.
    server_cpu_s_per_gib_by_process: BTreeMap<&'static str, f64>,
    reader_cpu_s_per_gib: f64,
}

#[derive(Debug, Serialize)]
struct Ratio {
    readers: u32,
    /// tls / plain of the median throughputs.
    throughput: f64,
    /// The same ratio round by round (paired samples).
    throughput_by_round: Vec<f64>,
    server_cpu_per_gib: f64,
    reader_cpu_per_gib: f64,
    /// Server and readers together.
    total_cpu_per_gib: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => v[n / 2],
        _ => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn summarize(samples: &[Sample], arm: ArmKind, readers: u32) -> Summary {
    let s: Vec<&Sample> = samples
        .iter()
        .filter(|s| s.arm == arm && s.readers == readers)
        .collect();
    let rates: Vec<f64> = s.iter().map(|s| s.mib_per_s).collect();
    let gib = s.iter().map(|s| s.bytes as f64).sum::<f64>() / GIB;
    let per_gib = |x: f64| if gib > 0.0 { x / gib } else { 0.0 };
    let mut by_process = BTreeMap::new();
    for sample in &s {
        for (what, cpu) in &sample.server_cpu_s {
            *by_process.entry(*what).or_insert(0.0) += cpu;
        }
    }
    let server_total: f64 = by_process.values().sum();
    Summary {
        arm,
        readers,
        samples: s.len(),
        median_mib_per_s: median(rates.clone()),
        min_mib_per_s: rates.iter().copied().fold(f64::INFINITY, f64::min),
        max_mib_per_s: rates.iter().copied().fold(0.0, f64::max),
        server_cpu_s_per_gib: per_gib(server_total),
        server_cpu_s_per_gib_by_process: by_process
            .into_iter()
            .map(|(k, v)| (k, per_gib(v)))
            .collect(),
        reader_cpu_s_per_gib: per_gib(s.iter().map(|s| s.reader_cpu_s).sum()),
    }
}

fn ratio(samples: &[Sample], plain: &Summary, tls: &Summary) -> Ratio {
    let div = |a: f64, b: f64| if b > 0.0 { a / b } else { f64::NAN };
    let rounds: BTreeMap<u32, (f64, f64)> = samples
        .iter()
        .filter(|s| s.readers == plain.readers)
        .fold(BTreeMap::new(), |mut m, s| {
            let e = m.entry(s.round).or_insert((0.0, 0.0));
            match s.arm {
                ArmKind::Plain => e.0 = s.mib_per_s,
                ArmKind::Tls => e.1 = s.mib_per_s,
            }
            m
        });
    Ratio {
        readers: plain.readers,
        throughput: div(tls.median_mib_per_s, plain.median_mib_per_s),
        throughput_by_round: rounds.values().map(|(p, t)| div(*t, *p)).collect(),
        server_cpu_per_gib: div(tls.server_cpu_s_per_gib, plain.server_cpu_s_per_gib),
        reader_cpu_per_gib: div(tls.reader_cpu_s_per_gib, plain.reader_cpu_s_per_gib),
        total_cpu_per_gib: div(
            tls.server_cpu_s_per_gib + tls.reader_cpu_s_per_gib,
            plain.server_cpu_s_per_gib + plain.reader_cpu_s_per_gib,
        ),
    }
}

fn reader_word(n: u32) -> &'static str {
    if n == 1 {
        "reader"
    } else {
        "readers"
    }
}

/// The results as a markdown table (also what the terminal shows).
fn table(summaries: &[Summary], ratios: &[Ratio]) -> String {
    let mut t = String::from(
        "| readers | arm | MiB/s (median) | MiB/s (min-max) | server CPU s/GiB | reader CPU s/GiB |\n\
         | ---: | --- | ---: | ---: | ---: | ---: |\n",
    );
    for r in ratios {
        for s in summaries.iter().filter(|s| s.readers == r.readers) {
            let split = if s.server_cpu_s_per_gib_by_process.len() > 1 {
                let parts: Vec<String> = s
                    .server_cpu_s_per_gib_by_process
                    .iter()
                    .map(|(k, v)| format!("{k} {v:.2}"))
                    .collect();
                format!(" ({})", parts.join(" + "))
            } else {
                String::new()
            };
            t.push_str(&format!(
                "| {} | {} | {:.0} | {:.0}-{:.0} | {:.2}{split} | {:.2} |\n",
                s.readers,
                s.arm.name(),
                s.median_mib_per_s,
                s.min_mib_per_s,
                s.max_mib_per_s,
                s.server_cpu_s_per_gib,
                s.reader_cpu_s_per_gib
            ));
        }
        let rounds: Vec<String> = r
            .throughput_by_round
            .iter()
            .map(|x| format!("{x:.2}"))
            .collect();
        t.push_str(&format!(
            "| {} | **tls/plain** | **{:.2}x** | rounds: {} | **{:.2}x** | **{:.2}x** |\n",
            r.readers,
            r.throughput,
            rounds.join(", "),
            r.server_cpu_per_gib,
            r.reader_cpu_per_gib
        ));
    }
    t
}

#[derive(Debug, Serialize)]
struct Context {
    command: String,
    date: String,
    machine: Vec<(String, String)>,
    parameters: Vec<(String, String)>,
}

fn qemu_img_version(tools: &Tools) -> String {
    Command::new(&tools.qemu_img)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default()
}

const READING: &str = "\
- **plain** is how local and host mode serve a child: the reader connects over TCP to the \
node's qemu-storage-daemon, which exports the image.
- **tls** is how remote mode serves a child: the reader presents its pre-shared key over \
TCP to the node's TLS relay (`TlsRelay`, a second qemu-storage-daemon with `tls-creds-psk`), \
which reads the node's daemon over its unix socket. The tls arm therefore includes the extra \
hop through the relay and its socket, not only the encryption: its ratio to plain is what \
remote mode's data path costs against local mode's.
- Both arms are sftsan's own resources (`Daemon`, `OriginExport`, `TlsRelay`), up for the \
whole run, on the loopback; the image is in the page cache, so the numbers are the servers' \
and readers' CPU, not a disk or a network.
- Every reader reads the whole image (`qemu-img convert -n -W -S 0 -m DEPTH` into a null-co \
target: `qemu-img bench` cannot take TLS credentials, it has no `--object`); MiB/s is all \
readers' bytes over the wall time of the slowest, from process start (TLS handshake and NBD \
negotiation included).
- Server CPU is utime+stime of the arm's qemu-storage-daemon processes (both for tls: daemon \
+ relay) from /proc/PID/stat before and after each sample (10 ms ticks), reader CPU the \
readers' rusage from wait4; both are summed over the rounds and divided by the GiB served.
- Readers and servers share the machine's cores (see below): once they are busy, more \
readers no longer raise the aggregate MiB/s, and CPU s/GiB is the figure that carries over \
to another machine.
- The arms take turns (round by round: plain then tls for each reader count) so the noise of \
a shared machine hits both; ratios are tls/plain from the same run. Each arm's export was \
compared with the image once (`qemu-img compare`) before the measurements.
";

// ---------------------------------------------------------------------------------------
// The run.

/// `sftsan bench relay-tls`.
pub fn relay_tls(args: &RelayTls) -> Result<()> {
    let size = args.check()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root: the node's socket is handed to libvirt's QEMU group, as in production");
    }
    fs::create_dir_all(&args.out)
        .with_context(|| format!("--out: cannot create {}", args.out.display()))?;
    let parent = args.work_dir.parent().unwrap_or(Path::new("/"));
    if let Some(free) = parent.ancestors().find(|p| p.exists()).and_then(free_bytes) {
        if free < size + 64 * MIB {
            bail!(
                "--work-dir: {} has {} MiB free; the image needs {} MiB",
                parent.display(),
                free / MIB,
                size / MIB
            );
        }
    }
    let _signals = Signals::catch();
    let mut bed = Bed::new(&args.work_dir, free_ports()?);
    bed.prepare()?;
    let result = measure(args, size, &bed);
    let cleanup = bed.teardown();
    // Tried once: a failed teardown is reported below, not repeated when the bed drops.
    bed.cleaned = true;
    let (summaries, ratios, samples) = match (result, cleanup) {
        (Ok(r), Ok(())) => r,
        (Err(e), cleanup) => {
            if let Err(c) = cleanup {
                errln!("cleaning up: {c:#}");
            }
            if INTERRUPTED.load(Ordering::SeqCst) {
                bail!("interrupted; everything the run made is removed");
            }
            return Err(e);
        }
        (Ok(_), Err(c)) => return Err(c.context("cleaning up")),
    };
    let context = Context {
        command: std::iter::once("sftsan".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        date: crate::date(),
        machine: {
            let mut m = crate::report::machine();
            m.push(("qemu-img".into(), qemu_img_version(&bed.ctx.tools)));
            m
        },
        parameters: vec![
            (
                "image".into(),
                format!("{} MiB of pseudo-random data", size / MIB),
            ),
            ("rounds".into(), args.rounds.to_string()),
            (
                "readers".into(),
                args.readers
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            ),
            (
                "depth".into(),
                format!("{} requests in flight per reader", args.depth),
            ),
        ],
    };
    let table = table(&summaries, &ratios);
    outln!("{table}")?;
    outln!("plain: {}", ArmKind::Plain.path())?;
    outln!("tls:   {}", ArmKind::Tls.path())?;
    outln!("The tls arm includes the relay's extra hop: tls/plain is remote mode's data path against local mode's, not TLS alone.")?;
    write_results(&args.out, &context, &table, &summaries, &ratios, &samples)?;
    outln!("{}", args.out.join("README.md").display())?;
    Ok(())
}

type Results = (Vec<Summary>, Vec<Ratio>, Vec<Sample>);

fn measure(args: &RelayTls, size: u64, bed: &Bed) -> Result<Results> {
    errln!(
        "making a {} MiB image in {}",
        size / MIB,
        bed.work.display()
    );
    make_image(&bed.image(), size)?;
    write_keys(&bed.work)?;
    bed.create()?;
    bed.check_data()?;
    let m = Measure {
        bed,
        size,
        depth: args.depth,
    };
    let mut samples = Vec::new();
    for round in 1..=args.rounds {
        for &readers in &args.readers {
            for arm in &bed.arms {
                interrupted()?;
                let s = m.sample(arm, readers, round).with_context(|| {
                    format!(
                        "round {round}, {} arm, {readers} {}",
                        arm.kind.name(),
                        reader_word(readers)
                    )
                })?;
                let server: f64 = s.server_cpu_s.values().sum();
                let gib = s.bytes as f64 / GIB;
                errln!(
                    "round {round}/{}  {readers:2} {:7}  {:5}  {:8.1} MiB/s  server {:.2} s/GiB  readers {:.2} s/GiB",
                    args.rounds,
                    reader_word(readers),
                    arm.kind.name(),
                    s.mib_per_s,
                    server / gib,
                    s.reader_cpu_s / gib
                );
                samples.push(s);
            }
        }
    }
    let mut summaries = Vec::new();
    let mut ratios = Vec::new();
    for &readers in &args.readers {
        let plain = summarize(&samples, ArmKind::Plain, readers);
        let tls = summarize(&samples, ArmKind::Tls, readers);
        ratios.push(ratio(&samples, &plain, &tls));
        summaries.push(plain);
        summaries.push(tls);
    }
    Ok((summaries, ratios, samples))
}

fn write_results(
    out: &Path,
    ctx: &Context,
    table: &str,
    summaries: &[Summary],
    ratios: &[Ratio],
    samples: &[Sample],
) -> Result<()> {
    let mut md = String::from("# What TLS costs a relay\n\n");
    md.push_str(&format!(
        "Measured {} with:\n\n```\n{}\n```\n\n",
        ctx.date, ctx.command
    ));
    md.push_str(table);
    md.push_str("\nHow to read it:\n\n");
    md.push_str(READING);
    md.push_str("\n| parameter | value |\n| --- | --- |\n");
    for (k, v) in &ctx.parameters {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str("\n| machine | |\n| --- | --- |\n");
    for (k, v) in &ctx.machine {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str("\nEvery sample is in `results.json`.\n");
    fs::write(out.join("README.md"), md)
        .with_context(|| format!("--out: writing {}", out.join("README.md").display()))?;
    let arms: BTreeMap<&str, &str> = [ArmKind::Plain, ArmKind::Tls]
        .into_iter()
        .map(|a| (a.name(), a.path()))
        .collect();
    let json = serde_json::json!({
        "context": ctx,
        "arms": arms,
        "summaries": summaries,
        "ratios": ratios,
        "samples": samples,
    });
    fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )
    .with_context(|| format!("--out: writing {}", out.join("results.json").display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_binary() {
        assert_eq!(parse_size("256MiB"), Some(256 << 20));
        assert_eq!(parse_size("1G"), Some(1 << 30));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("2KiB"), Some(2048));
        assert_eq!(parse_size("1.5G"), None);
        assert_eq!(parse_size("MiB"), None);
        assert_eq!(parse_size("99999999999999999999G"), None);
    }

    #[test]
    fn medians_of_odd_and_even_counts() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(process_cpu_s(std::process::id() as i32).unwrap() >= 0.0);
    }
}
