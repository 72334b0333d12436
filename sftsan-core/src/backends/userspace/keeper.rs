//! The cache keeper: a small detached process per node that makes fetched blocks durable.
//!
//! Copy-on-read writes land in the qcow2 cache, but its metadata stays in the daemon's
//! memory until a flush: a daemon killed before then forgets blocks it had fetched. QMP has
//! no plain "flush" command, and reopening the node (which flushes) drains the whole block
//! graph first, freezing the node while any read waits on its upstream. So the keeper sends
//! an NBD flush through the node's own export instead: it flushes the cache under the
//! export and waits for nothing else. It does that whenever the cache grew, at most every
//! `interval`, and once more on SIGTERM. It exits by itself when its daemon goes away.

use serde::{Deserialize, Serialize};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::nbd::{Address, Connection};
use super::qapi::QueryBlockstats;
use super::{daemon_pid, graph, keeper_socket, Qmp};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{remove_file_if_exists, write_atomic};
use crate::process;
use crate::resources::{Ctx, Observed, Params, Resource, Tools};
use crate::transport::run;

/// A node's cache keeper process (`sftsan keeper`), which flushes the cache as it grows.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Keeper {
    /// Name of the node (from the spec) whose cache is kept.
    pub node: String,
    /// The node's runtime directory: the daemon's keeper QMP socket, the keeper's pid file.
    pub run_dir: PathBuf,
    /// Least time between two flushes, in milliseconds (the spec's `cache.flush_interval_ms`).
    pub interval_ms: u64,
    /// The name of the node's export, which the keeper flushes through.
    #[serde(default)]
    pub export: String,
    /// Where the node's daemon serves that export (journals of earlier releases lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub export_address: Option<Address>,
}

impl Keeper {
    fn pidfile(&self) -> PathBuf {
        self.run_dir.join("keeper.pid")
    }

    fn marker(&self) -> String {
        keeper_socket(&self.run_dir).display().to_string()
    }
}

impl Resource for Keeper {
    fn desired(&self) -> Params {
        vec![("interval-ms", self.interval_ms.to_string())]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let Some(pid) = process::live_pid(&self.pidfile(), &self.marker()) else {
            return Ok(Observed::Absent);
        };
        let argv = process::cmdline(pid);
        let arg = |name: &str| {
            argv.iter()
                .position(|a| a == name)
                .and_then(|i| argv.get(i + 1))
                .cloned()
                .unwrap_or_default()
        };
        // A keeper lives as long as the daemon it was started for; one that still serves a
        // daemon that has been replaced is on its way out and must not count.
        if daemon_pid(&self.run_dir).map(|p| p.to_string()) != Some(arg("--daemon-pid")) {
            return Ok(Observed::Partial(
                "the keeper serves a daemon that is gone".into(),
            ));
        }
        Ok(Observed::Present(vec![(
            "interval-ms",
            arg("--interval-ms"),
        )]))
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        remove_file_if_exists(&self.pidfile())?;
        let daemon = daemon_pid(&self.run_dir).ok_or_else(|| {
            Error::not_found(
                format!("the storage daemon of {}", self.node),
                "is not running",
            )
        })?;
        let address = self.export_address.as_ref().ok_or_else(|| {
            Error::invalid(
                format!("{}/keeper", self.node),
                "has no export address (a journal of an earlier release): run `sftsan up`",
            )
        })?;
        let args = [
            "keeper".to_string(),
            "--qmp".into(),
            self.marker(),
            "--pidfile".into(),
            self.pidfile().display().to_string(),
            "--interval-ms".into(),
            self.interval_ms.to_string(),
            "--export".into(),
            self.export.clone(),
            "--export-address".into(),
            address.to_string(),
            "--daemon-pid".into(),
            daemon.to_string(),
        ];
        // `sftsan keeper` returns once the keeper is connected and its pid file written.
        run(&*ctx.transport, Tools::program(&ctx.tools.sftsan), &args)
            .map_err(|e| e.context("starting the cache keeper"))?;
        Ok(())
    }

    fn runtime(&self) -> Params {
        let pid = process::live_pid(&self.pidfile(), &self.marker());
        vec![("pid", pid.map(|p| p.to_string()).unwrap_or_default())]
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        if let Some(pid) = process::live_pid(&self.pidfile(), &self.marker()) {
            // Its last flush is bounded by FINAL_FLUSH_DEADLINE.
            process::stop(pid, FINAL_FLUSH_DEADLINE + Duration::from_secs(2))?;
        }
        remove_file_if_exists(&self.pidfile())?;
        Ok(())
    }
}

/// Arguments of `sftsan keeper`.
#[derive(Debug, Clone)]
pub struct KeeperArgs {
    /// The daemon's QMP socket reserved for the keeper (`keeper.sock`).
    pub qmp: PathBuf,
    /// Where the keeper's pid is written once it runs in the background.
    pub pidfile: PathBuf,
    /// Least time between two flushes.
    pub interval: Duration,
    /// The node's export and where it is served: flushes go through it.
    pub export: String,
    /// See `export`.
    pub export_address: Address,
    /// The daemon served: the keeper exits as soon as it does.
    pub daemon_pid: i32,
}

static TERMINATE: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

/// Connects, detaches into the background and returns in the parent once the child's pid
/// is recorded. The child never returns: it runs the flush loop and exits.
pub fn run_keeper(args: &KeeperArgs) -> Result<()> {
    // Short: a stopped daemon must not keep SIGTERM waiting behind a query.
    let qmp = Qmp::connect(&args.qmp, Duration::from_secs(2))?;
    let daemon = process::pidfd_open(args.daemon_pid)
        .at(format!("/proc/{}", args.daemon_pid))
        .map_err(|e| e.context("the storage daemon"))?;
    // SAFETY: the CLI is single-threaded here; the child only continues this function.
    match unsafe { libc::fork() } {
        -1 => Err(Error::io("fork", std::io::Error::last_os_error())),
        0 => {
            detach();
            let code = flush_loop(qmp, &daemon, args);
            std::process::exit(code)
        }
        child => write_atomic(&args.pidfile, child.to_string().as_bytes()),
    }
}

fn detach() {
    // SAFETY: plain syscalls on our own process; the handler only stores an atomic.
    unsafe {
        libc::setsid();
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
    }
    let _ = std::env::set_current_dir(Path::new("/"));
}

fn written_up_to(qmp: &mut Qmp) -> Result<u64> {
    let stats = qmp.run(&QueryBlockstats { query_nodes: true })?;
    Ok(stats
        .iter()
        .find(|s| s.node_name.as_deref() == Some(graph::CACHE_FILE))
        .map_or(0, |s| s.stats.wr_highest_offset))
}

/// How long one flush may take before the keeper drops its connection and tries again.
const FLUSH_DEADLINE: Duration = Duration::from_secs(30);
/// The flush on SIGTERM: teardown does not wait longer for it.
const FINAL_FLUSH_DEADLINE: Duration = Duration::from_secs(1);

/// The keeper's connection to the node's export, made again after a failure.
struct Flusher<'a> {
    args: &'a KeeperArgs,
    conn: Option<Connection>,
}

impl Flusher<'_> {
    fn flush(&mut self, deadline: Duration) -> bool {
        if self.conn.as_ref().is_none_or(Connection::is_lost) {
            self.conn =
                Connection::open(&self.args.export_address, &self.args.export, deadline).ok();
        }
        let Some(conn) = &self.conn else { return false };
        let done = conn.flush(deadline).is_ok();
        if !done {
            self.conn = None; // a connection with a request stuck on it is not reused
        }
        done
    }
}

fn flush_loop(mut qmp: Qmp, daemon: &OwnedFd, args: &KeeperArgs) -> i32 {
    let mut flusher = Flusher { args, conn: None };
    let mut flushed_at = 0;
    loop {
        // Wait one interval, or less: SIGTERM interrupts the wait, and the daemon's pidfd
        // turns readable the moment the daemon exits.
        let mut pfd = libc::pollfd {
            fd: daemon.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let ready = unsafe { libc::poll(&mut pfd, 1, args.interval.as_millis() as i32) };
        if ready > 0 {
            return 0; // the daemon is gone: nothing left to keep
        }
        if TERMINATE.load(Ordering::SeqCst) {
            // One last flush, without asking the daemon anything first: one that does not
            // answer (stopped, stuck) must not hold teardown.
            flusher.flush(FINAL_FLUSH_DEADLINE);
            return 0;
        }
        match written_up_to(&mut qmp) {
            // A flush that fails is tried again next round.
            Ok(now) if now != flushed_at && flusher.flush(FLUSH_DEADLINE) => flushed_at = now,
            Ok(_) => {}
            // Stopped or busy: ask again next round (its pidfd says when it is gone).
            Err(e) if e.kind() == crate::error::ErrorKind::Timeout => {}
            Err(_) => return 0, // the daemon is gone: nothing left to keep
        }
    }
}
