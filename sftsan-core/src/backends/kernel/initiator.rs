//! A node's attachment to its parent's iSCSI target through the kernel's initiator
//! (open-iscsi): the parent's LUN becomes a local SCSI disk that the cache is built on.
//!
//! How a session is made, so several nodes can live in one kernel:
//! - Each session gets a private open-iscsi *iface* record (`sftsan-<hash>`) whose
//!   `iface.initiatorname` is the node's own IQN, and a node record bound to that iface.
//!   That is the one place open-iscsi takes a per-login initiator name from; the host's
//!   `/etc/iscsi/initiatorname.iscsi` is never read or written.
//! - CHAP credentials go into the node record (`node.session.auth.*`); login retries and the
//!   login timeout are bounded by the resource's timeout.
//! - Before logging in, the parent's target is probed with libiscsi ([`super::target_probe`]):
//!   an unreachable parent, a missing target, refused credentials or a LUN of the wrong
//!   size fail at once with their own message, where open-iscsi would retry for minutes.
//! - The disk is found through sysfs only: the session whose target, initiator name and
//!   portal match (`/sys/class/iscsi_session/sessionN`, `/sys/class/iscsi_connection`), its
//!   `device/target*/H:C:T:LUN/block/sdX`, and the node `/dev/sdX` checked against the
//!   dev_t. Never /dev/disk/by-*, which needs udev. The waits for the disk after a login
//!   and for the session's end after a logout are woken by device events
//!   ([`super::uevents`]), subscribed to before the login or logout.
//! - Teardown logs the session out by its sid, deletes the node record and the iface; a
//!   failed create does the same, so no session or record outlives an error.
//!
//! open-iscsi needs its daemon: [`ensure_iscsid`] starts one when nothing listens on
//! iscsid's control socket, and [`stop_started_iscsid`] stops only that one (found by its
//! own pid file), never an iscsid the system runs. The kernel's iSCSI netlink exists only in
//! the initial network namespace, so iscsid, iscsiadm and the libiscsi probe all run there:
//! the transport must be the local one.

use serde::{Deserialize, Serialize};
use std::fs;
use std::net::{IpAddr, SocketAddr};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::target_probe::{probe_target, validate_chap_word, validate_iqn};
use super::uevents::DeviceEvents;
use crate::error::{Error, Result};
use crate::process;
use crate::resources::{first_difference, Ctx, Observed, Params, Resource};

/// The pid file of an iscsid that sftsan started (its argv names it, which tells it apart
/// from a system iscsid and from a recycled pid).
pub const ISCSID_PIDFILE: &str = "/run/sftsan-iscsid.pid";

/// The abstract unix socket iscsiadm talks to iscsid through (also systemd's
/// `iscsid.socket`, which starts iscsid on demand).
const ISCSID_SOCKET: &str = "@ISCSIADM_ABSTRACT_NAMESPACE";

/// open-iscsi keeps node records of one target in one directory tree, and iscsiadm does
/// not lock it: nodes of a tree level logging in to one parent at once would clobber each
/// other's records. One record change (and login) at a time per process.
static ISCSIADM: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How often iscsid's control socket is looked for after starting iscsid (no event tells).
const POLL: Duration = Duration::from_millis(50);

pub use crate::backends::shared::Chap;

/// A logged-in open-iscsi session to one LUN of the parent's target, as the node's initiator.
/// One resource per (initiator, target, portal): teardown logs out every session of that
/// triple.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IscsiSession {
    /// The node that logs in, and its parent (for messages).
    pub node: String,
    /// Name of the parent node whose target is logged in to (for messages).
    pub parent: String,
    /// The parent's iSCSI portal, address and port (e.g. 10.0.0.1:3260).
    pub portal: SocketAddr,
    /// IQN of the parent's target.
    pub target: String,
    /// The LUN that carries the image: 0 on LIO, 1 on tgt (whose LUN 0 is its controller).
    pub lun: u16,
    /// The node's own initiator name; the parent's ACL admits it.
    pub initiator: String,
    /// CHAP credentials to log in with; `None`: no authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<Chap>,
    /// The LUN's size in bytes: a parent exporting anything else is refused.
    pub size: u64,
    /// Bounds the probe, the login and the wait for the disk, each.
    pub timeout_ms: u64,
    /// Seconds a broken session waits to be re-established before its I/O fails
    /// (open-iscsi's `replacement_timeout`); negative: never fail, I/O waits until the
    /// session logs back in.
    #[serde(
        default = "default_replacement_timeout",
        skip_serializing_if = "is_default_replacement_timeout"
    )]
    pub replacement_timeout_s: i32,
}

/// open-iscsi's own default: what sessions journaled before sftsan set it have, and
/// their records keep reading as they were written.
fn default_replacement_timeout() -> i32 {
    120
}

fn is_default_replacement_timeout(seconds: &i32) -> bool {
    *seconds == default_replacement_timeout()
}

/// A block device of a session, as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// The kernel's name, e.g. `sdb`.
    pub name: String,
    /// The device's major number.
    pub major: u32,
    /// The device's minor number.
    pub minor: u32,
    /// Bytes.
    pub size: u64,
    /// The kernel marked it read-only (the target reports write protection).
    pub read_only: bool,
}

impl Disk {
    /// `/dev/<name>`: devtmpfs creates it; check it with [`Disk::node_matches`].
    pub fn path(&self) -> PathBuf {
        Path::new("/dev").join(&self.name)
    }

    /// Whether `/dev/<name>` is a block device with this disk's dev_t.
    pub fn node_matches(&self) -> bool {
        fs::metadata(self.path()).is_ok_and(|m| {
            m.file_type().is_block_device()
                && libc::major(m.rdev()) == self.major
                && libc::minor(m.rdev()) == self.minor
        })
    }
}

/// One iSCSI session of the kernel, from sysfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// The kernel's session id, N of `sessionN`.
    pub sid: u32,
    /// IQN of the target the session is logged in to.
    pub target: String,
    /// The initiator name the session logged in with.
    pub initiator: String,
    /// Name of the open-iscsi iface record it was made through (`sftsan-<hash>` for sftsan's).
    pub iface: String,
    /// `LOGGED_IN`, `FAILED`, `FREE`.
    pub state: String,
    /// The portal its (first) connection was made to.
    pub portal: Option<SocketAddr>,
    /// Seconds its I/O waits for a broken connection to be re-established
    /// (`recovery_tmo`, set from `replacement_timeout`).
    pub recovery_tmo: Option<i32>,
    /// Disks by LUN.
    pub disks: Vec<(u64, Disk)>,
}

impl SessionInfo {
    /// The session's disk of LUN `lun`, if the kernel has made one.
    pub fn disk(&self, lun: u64) -> Option<&Disk> {
        self.disks.iter().find(|(l, _)| *l == lun).map(|(_, d)| d)
    }
}

/// Every iSCSI session of the running kernel.
pub fn sessions() -> Vec<SessionInfo> {
    sessions_in(Path::new("/sys"))
}

/// Every iSCSI session described under `sys` (a sysfs root).
pub fn sessions_in(sys: &Path) -> Vec<SessionInfo> {
    let class = sys.join("class/iscsi_session");
    let mut out: Vec<SessionInfo> = fs::read_dir(&class)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let sid: u32 = name.strip_prefix("session")?.parse().ok()?;
            let dir = entry.path();
            Some(SessionInfo {
                sid,
                target: read_attr(&dir.join("targetname")).unwrap_or_default(),
                initiator: read_attr(&dir.join("initiatorname")).unwrap_or_default(),
                iface: read_attr(&dir.join("ifacename")).unwrap_or_default(),
                state: read_attr(&dir.join("state")).unwrap_or_default(),
                portal: connection_portal(sys, sid),
                recovery_tmo: read_attr(&dir.join("recovery_tmo"))
                    .as_deref()
                    .and_then(parse_recovery_tmo),
                disks: session_disks(&dir.join("device")),
            })
        })
        .collect();
    out.sort_by_key(|s| s.sid);
    out
}

/// `recovery_tmo` as sysfs shows it: seconds, or `off` for a negative (never) timeout.
fn parse_recovery_tmo(text: &str) -> Option<i32> {
    match text {
        "off" => Some(-1),
        seconds => seconds.parse().ok(),
    }
}

fn read_attr(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// The portal of connection `<sid>:<cid>` (lowest cid): the persistent address (what was
/// asked for), else the current one.
fn connection_portal(sys: &Path, sid: u32) -> Option<SocketAddr> {
    let prefix = format!("connection{sid}:");
    let mut conns: Vec<PathBuf> = fs::read_dir(sys.join("class/iscsi_connection"))
        .ok()?
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    conns.sort();
    conns.into_iter().find_map(|dir| {
        let pick = |a: &str, p: &str| -> Option<SocketAddr> {
            let addr: IpAddr = read_attr(&dir.join(a))?.parse().ok()?;
            let port: u16 = read_attr(&dir.join(p))?.parse().ok()?;
            Some(SocketAddr::new(addr, port))
        };
        pick("persistent_address", "persistent_port").or_else(|| pick("address", "port"))
    })
}

/// The block devices under a session's device directory:
/// `target<H>:<C>:<T>/<H>:<C>:<T>:<LUN>/block/<name>`.
fn session_disks(device: &Path) -> Vec<(u64, Disk)> {
    let mut disks = Vec::new();
    for target in fs::read_dir(device).into_iter().flatten().flatten() {
        if !target.file_name().to_string_lossy().starts_with("target") {
            continue;
        }
        for lu in fs::read_dir(target.path()).into_iter().flatten().flatten() {
            let name = lu.file_name().to_string_lossy().into_owned();
            let parts: Vec<&str> = name.split(':').collect();
            let Some(lun) = (parts.len() == 4)
                .then(|| parts[3].parse::<u64>().ok())
                .flatten()
            else {
                continue;
            };
            for block in fs::read_dir(lu.path().join("block"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some(disk) = disk_from_sysfs(&block.path()) {
                    disks.push((lun, disk));
                }
            }
        }
    }
    disks.sort_by_key(|(lun, _)| *lun);
    disks
}

/// A block device from its sysfs directory (`dev`, `size`, `ro`, `uevent`'s DEVNAME).
fn disk_from_sysfs(dir: &Path) -> Option<Disk> {
    let dev = read_attr(&dir.join("dev"))?;
    let (major, minor) = dev.split_once(':')?;
    let name = fs::read_to_string(dir.join("uevent"))
        .ok()
        .and_then(|u| {
            u.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(str::to_string))
        })
        .or_else(|| Some(dir.file_name()?.to_string_lossy().into_owned()))?;
    let sectors: u64 = read_attr(&dir.join("size"))?.parse().ok()?;
    Some(Disk {
        name,
        major: major.parse().ok()?,
        minor: minor.parse().ok()?,
        size: sectors * 512,
        read_only: read_attr(&dir.join("ro")).as_deref() == Some("1"),
    })
}

/// The session whose disk is block device `major:minor`, if any.
pub fn session_of_disk(major: u32, minor: u32) -> Option<SessionInfo> {
    sessions().into_iter().find(|s| {
        s.disks
            .iter()
            .any(|(_, d)| d.major == major && d.minor == minor)
    })
}

/// Fails the I/O that a session which lost its target holds (a negative replacement
/// timeout keeps it waiting for the session to log back in) by logging the session out;
/// a logged-in session is left alone. Returns whether it logged out.
pub fn fail_held_io(ctx: &Ctx, session: &SessionInfo, timeout: Duration) -> Result<bool> {
    if session.state == "LOGGED_IN" {
        return Ok(false);
    }
    let _records = ISCSIADM.lock().unwrap_or_else(|p| p.into_inner());
    let events = DeviceEvents::subscribe(&["iscsi_session"])?;
    let sid = session.sid.to_string();
    match iscsiadm(ctx, &["-m", "session", "-r", &sid, "--logout"]) {
        Ok(_) => {}
        Err(e) if matches!(e.code, Some(ERR_NO_OBJS_FOUND | ERR_SYSFS_LOOKUP | 2)) => {}
        Err(e) => {
            return Err(e
                .error()
                .context(format!("logging out of failed session {sid}")))
        }
    }
    let gone = events.wait_until(timeout, || {
        (!sessions().iter().any(|s| s.sid == session.sid)).then_some(())
    })?;
    match gone {
        Some(()) => Ok(true),
        None => Err(Error::timeout(
            format!("failed session {sid} to {}", session.target),
            format!("still there {} ms after logging out", timeout.as_millis()),
        )),
    }
}

/// Whether something listens on iscsid's control socket in this network namespace (a
/// running iscsid, or systemd's socket that starts one on demand).
pub fn iscsid_listening() -> bool {
    fs::read_to_string("/proc/net/unix").is_ok_and(|t| unix_socket_listening(&t, ISCSID_SOCKET))
}

/// Whether `/proc/net/unix` text has a listening socket (`__SO_ACCEPTCON`) at `path`.
fn unix_socket_listening(proc_net_unix: &str, path: &str) -> bool {
    proc_net_unix.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() >= 8
            && fields[7] == path
            && u32::from_str_radix(fields[3], 16).is_ok_and(|flags| flags & 0x10000 != 0)
    })
}

/// What [`ensure_iscsid`] found or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Iscsid {
    /// iscsid (or its systemd socket) was there already: not sftsan's to stop.
    AlreadyRunning,
    /// sftsan started it (pid file [`ISCSID_PIDFILE`]).
    Started {
        /// Process id of the iscsid sftsan started.
        pid: i32,
    },
}

/// Makes sure iscsid answers: starts `iscsid -p` [`ISCSID_PIDFILE`] when nothing listens on
/// its control socket, and waits for the socket up to `timeout`.
///
/// sftsan does not manage a system iscsid (systemd's, socket-activated on Debian): when one
/// is there it is used as it is. One it started stays running for later sessions and other
/// sftsan commands until [`stop_started_iscsid`].
pub fn ensure_iscsid(ctx: &Ctx, timeout: Duration) -> Result<Iscsid> {
    // Nodes of one tree level log in in parallel: one of them starts iscsid.
    static STARTING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = STARTING
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if iscsid_listening() {
        return Ok(Iscsid::AlreadyRunning);
    }
    // A stale pid file of ours (its iscsid died) would confuse stop_started_iscsid.
    if process::live_pid(Path::new(ISCSID_PIDFILE), ISCSID_PIDFILE).is_none() {
        process::remove_file_if_exists(Path::new(ISCSID_PIDFILE))?;
    }
    // iscsid forks into the background; its parent exits once the child is set up.
    let mut cmd = ctx.transport.command("iscsid");
    cmd.args(["-p", ISCSID_PIDFILE])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    tracing::debug!(target: "sftsan::cmd", "{}: {:?}", ctx.transport.describe(), cmd);
    let status = cmd
        .status()
        .map_err(|e| crate::transport::spawn_error("iscsid", e))?;
    if !status.success() {
        return Err(Error::Command {
            argv: vec!["iscsid".into()],
            status: status.to_string(),
            stderr: String::new(),
        });
    }
    let deadline = Instant::now() + timeout;
    loop {
        let pid = process::live_pid(Path::new(ISCSID_PIDFILE), ISCSID_PIDFILE);
        if let (true, Some(pid)) = (iscsid_listening(), pid) {
            return Ok(Iscsid::Started { pid });
        }
        if Instant::now() >= deadline {
            return Err(Error::timeout(
                "iscsid",
                format!(
                    "started, but its control socket {ISCSID_SOCKET} did not appear within {} ms",
                    timeout.as_millis()
                ),
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// Stops the iscsid sftsan started (per [`ISCSID_PIDFILE`]), if it runs; returns its pid.
/// Refuses while the kernel has iSCSI sessions: without iscsid they would not recover from
/// a connection loss, nor could they be logged out.
pub fn stop_started_iscsid(timeout: Duration) -> Result<Option<i32>> {
    let pidfile = Path::new(ISCSID_PIDFILE);
    let Some(pid) = process::live_pid(pidfile, ISCSID_PIDFILE) else {
        process::remove_file_if_exists(pidfile)?;
        return Ok(None);
    };
    let live = sessions();
    if !live.is_empty() {
        let sids: Vec<String> = live.iter().map(|s| s.sid.to_string()).collect();
        return Err(Error::conflict(
            format!("iscsid (pid {pid})"),
            format!(
                "not stopped: the kernel still has iSCSI sessions {}",
                sids.join(", ")
            ),
        ));
    }
    let fail = |e: std::io::Error| Error::io(format!("/proc/{pid}"), e).context("stopping iscsid");
    let stop_failed = |e: Error| e.context("stopping iscsid");
    // SIGTERM again every half second: an iscsid that is still setting up (just started)
    // can miss the first one.
    let deadline = Instant::now() + timeout;
    loop {
        process::signal(pid, libc::SIGTERM).map_err(fail)?;
        let left = deadline.saturating_duration_since(Instant::now());
        if process::wait_exit(pid, left.min(Duration::from_millis(500))) {
            break;
        }
        if left.is_zero() {
            tracing::warn!("iscsid (pid {pid}) ignored SIGTERM for {timeout:?}; killing it");
            process::stop(pid, Duration::ZERO).map_err(stop_failed)?;
            break;
        }
    }
    process::remove_file_if_exists(pidfile)?;
    Ok(Some(pid))
}

/// A failed iscsiadm run: its exit code and the line that explains it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AdmError {
    code: Option<i32>,
    message: String,
    /// iscsiadm itself is not installed.
    not_installed: bool,
    /// What ran (secrets masked) and how it ended.
    argv: Vec<String>,
    status: String,
}

impl AdmError {
    /// The failure as sftsan reports a failed program.
    fn error(&self) -> Error {
        if self.not_installed {
            return Error::unsupported("iscsiadm", "not installed on this host (open-iscsi)");
        }
        Error::Command {
            argv: self.argv.clone(),
            status: self.status.clone(),
            stderr: self.message.clone(),
        }
    }
}

// iscsiadm's exit codes (open-iscsi include/iscsi_err.h).
const ERR_NOMEM: i32 = 3; // also "could not read iface info"
const ERR_IDBM: i32 = 6;
const ERR_INVAL: i32 = 7;
const ERR_TRANS_TIMEOUT: i32 = 8;
const ERR_TRANS_NOT_FOUND: i32 = 12;
const ERR_SESS_EXISTS: i32 = 15;
const ERR_ISCSID_COMM: i32 = 18;
const ERR_FATAL_LOGIN: i32 = 19;
const ERR_ISCSID_NOTCONN: i32 = 20;
const ERR_NO_OBJS_FOUND: i32 = 21;
const ERR_SYSFS_LOOKUP: i32 = 22;
const ERR_LOGIN_AUTH_FAILED: i32 = 24;

/// The most telling line of iscsiadm's stderr: the one with the initiator's reason, else the
/// first error line, else the last line.
fn adm_reason(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    lines
        .iter()
        .find(|l| l.contains("reported error"))
        .or_else(|| {
            lines
                .iter()
                .find(|l| l.contains("ERROR") || l.contains("rror"))
        })
        .or(lines.last())
        .map(|l| l.to_string())
        .unwrap_or_default()
}

/// The arguments as they may be logged: CHAP secrets masked.
fn loggable(args: &[&str]) -> Vec<String> {
    let mut out = Vec::with_capacity(args.len());
    let mut mask_next_value = false;
    for (i, a) in args.iter().enumerate() {
        if mask_next_value && i > 0 && args[i - 1] == "-v" {
            out.push("********".to_string());
            mask_next_value = false;
            continue;
        }
        if a.contains("auth.password") {
            mask_next_value = true;
        }
        out.push((*a).to_string());
    }
    out
}

fn iscsiadm(ctx: &Ctx, args: &[&str]) -> Result<String, AdmError> {
    let mut cmd = ctx.transport.command("iscsiadm");
    cmd.args(args).stdin(Stdio::null());
    tracing::debug!(target: "sftsan::cmd", "{}: iscsiadm {:?}", ctx.transport.describe(), loggable(args));
    let argv: Vec<String> = std::iter::once("iscsiadm".to_string())
        .chain(loggable(args))
        .collect();
    let out = cmd.output().map_err(|e| AdmError {
        code: None,
        message: format!("cannot run iscsiadm (open-iscsi): {e}"),
        not_installed: e.kind() == std::io::ErrorKind::NotFound,
        argv: argv.clone(),
        status: "not started".into(),
    })?;
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    Err(AdmError {
        code: out.status.code(),
        message: adm_reason(&String::from_utf8_lossy(&out.stderr)),
        not_installed: false,
        argv,
        status: out.status.to_string(),
    })
}

impl IscsiSession {
    fn timeout(&self) -> Duration {
        Duration::from_millis(self.timeout_ms.max(1))
    }

    /// The private open-iscsi iface record of this session: `sftsan-` and 16 hex digits of
    /// (initiator, target, portal). Its `iface.initiatorname` is the node's IQN.
    pub fn iface(&self) -> String {
        let portal = self.portal.to_string();
        format!(
            "sftsan-{:016x}",
            crate::hash::fnv64_parts(&[&self.initiator, &self.target, &portal])
        )
    }

    fn validate(&self) -> Result<()> {
        let bad = |what: &str, value: &str, why: crate::error::Rejection| {
            Error::invalid(
                format!("{}: {what}", self.node),
                format!("{value:?} is invalid: {why}"),
            )
        };
        validate_iqn(&self.target).map_err(|why| bad("target name", &self.target, why))?;
        validate_iqn(&self.initiator).map_err(|why| bad("initiator name", &self.initiator, why))?;
        if let Some(chap) = &self.chap {
            validate_chap_word(&chap.username)
                .map_err(|why| bad("CHAP user", &chap.username, why))?;
            validate_chap_word(&chap.password)
                .map_err(|why| bad("CHAP secret", "(hidden)", why))?;
        }
        if self.size == 0 || self.size % 512 != 0 {
            return Err(bad(
                "size",
                &self.size.to_string(),
                crate::error::Rejection::new("not a positive multiple of 512"),
            ));
        }
        Ok(())
    }

    /// The kernel's sessions of this (initiator, target, portal).
    pub fn matching_sessions(&self) -> Vec<SessionInfo> {
        sessions()
            .into_iter()
            .filter(|s| {
                s.target == self.target
                    && s.initiator == self.initiator
                    && s.portal == Some(self.portal)
            })
            .collect()
    }

    /// The session's disk for this LUN, when it is logged in and its device node is there.
    pub fn disk(&self) -> Option<Disk> {
        self.matching_sessions()
            .into_iter()
            .filter(|s| s.state == "LOGGED_IN")
            .find_map(|s| s.disk(self.lun.into()).cloned())
            .filter(|d| d.size > 0 && d.node_matches())
    }

    fn portal_arg(&self) -> String {
        self.portal.to_string()
    }

    /// `iscsiadm -m node -T <target> -p <portal> -I <iface> ARGS...`
    fn node_cmd(&self, ctx: &Ctx, args: &[&str]) -> Result<String, AdmError> {
        let (portal, iface) = (self.portal_arg(), self.iface());
        let mut all = vec![
            "-m",
            "node",
            "-T",
            &self.target,
            "-p",
            &portal,
            "-I",
            &iface,
        ];
        all.extend_from_slice(args);
        iscsiadm(ctx, &all)
    }

    fn update(&self, ctx: &Ctx, name: &str, value: &str) -> Result<()> {
        self.node_cmd(ctx, &["-o", "update", "-n", name, "-v", value])
            .map(drop)
            .map_err(|e| {
                let shown = if name.contains("password") {
                    "********"
                } else {
                    value
                };
                e.error().context(format!(
                    "{}: setting {name} = {shown} in the node record of {}",
                    self.node, self.target
                ))
            })
    }

    /// Writes the iface and node records this session logs in with.
    fn write_records(&self, ctx: &Ctx) -> Result<()> {
        let iface = self.iface();
        let fail = |what: &str, e: AdmError| e.error().context(format!("{}: {what}", self.node));
        iscsiadm(ctx, &["-m", "iface", "-I", &iface, "-o", "new"])
            .map_err(|e| fail(&format!("creating iface record {iface}"), e))?;
        iscsiadm(
            ctx,
            &[
                "-m",
                "iface",
                "-I",
                &iface,
                "-o",
                "update",
                "-n",
                "iface.initiatorname",
                "-v",
                &self.initiator,
            ],
        )
        .map_err(|e| fail(&format!("setting the initiator name of iface {iface}"), e))?;
        // `-o new` replaces a record left by an earlier attempt.
        self.node_cmd(ctx, &["-o", "new"])
            .map_err(|e| fail(&format!("creating the node record of {}", self.target), e))?;
        let login_timeout = self.timeout_ms.div_ceil(1000).max(1).to_string();
        self.update(ctx, "node.startup", "manual")?;
        // The disk must appear without a manual rescan, whatever iscsid.conf says.
        self.update(ctx, "node.session.scan", "auto")?;
        self.update(ctx, "node.session.initial_login_retry_max", "1")?;
        self.update(ctx, "node.conn[0].timeo.login_timeout", &login_timeout)?;
        self.update(
            ctx,
            "node.session.timeo.replacement_timeout",
            &self.replacement_timeout_s.to_string(),
        )?;
        match &self.chap {
            Some(chap) => {
                self.update(ctx, "node.session.auth.authmethod", "CHAP")?;
                self.update(ctx, "node.session.auth.username", &chap.username)?;
                self.update(ctx, "node.session.auth.password", &chap.password)?;
            }
            None => self.update(ctx, "node.session.auth.authmethod", "None")?,
        }
        Ok(())
    }

    /// A login refusal in one line, from iscsiadm's exit code.
    fn login_error(&self, e: &AdmError) -> Error {
        let who = format!(
            "{}: login to {} at {} as {}",
            self.node, self.target, self.portal, self.initiator
        );
        let detail = |why: String| format!("{why}: {}", e.message);
        match e.code {
            // open-iscsi's code for both a refused CHAP and an initiator outside the ACL.
            Some(ERR_LOGIN_AUTH_FAILED) => Error::refused(
                who,
                detail(format!(
                    "refused: authentication failed or not authorized ({})",
                    match &self.chap {
                        Some(c) => format!("CHAP user {:?}", c.username),
                        None => "no CHAP credentials given".into(),
                    }
                )),
            ),
            Some(ERR_FATAL_LOGIN) => Error::refused(who, detail("refused by the target".into())),
            Some(ERR_TRANS_TIMEOUT) => Error::timeout(who, detail("timed out".into())),
            Some(ERR_ISCSID_NOTCONN | ERR_ISCSID_COMM) => Error::unreachable(
                who,
                detail(
                    "iscsid does not answer (it must run in the initial network namespace)".into(),
                ),
            ),
            Some(ERR_TRANS_NOT_FOUND) => {
                Error::unsupported(who, detail("the kernel has no iscsi_tcp transport".into()))
            }
            Some(ERR_SESS_EXISTS) => {
                Error::conflict(who, detail("a session already exists".into()))
            }
            _ => Error::refused(who, detail("failed".into())),
        }
    }

    /// Writes the records, logs in and waits for the LUN's disk, without probing the target
    /// first (create does; this is the kernel initiator's own refusal). On failure nothing of
    /// the session is left.
    pub fn login(&self, ctx: &Ctx) -> Result<Disk> {
        self.validate()?;
        let _records = ISCSIADM.lock().unwrap_or_else(|p| p.into_inner());
        let result = self
            .write_records(ctx)
            // Subscribed before logging in, so the disk's event cannot be missed.
            .and_then(|()| DeviceEvents::subscribe(&["block"]))
            .and_then(|events| {
                self.node_cmd(ctx, &["--login"])
                    .map_err(|e| self.login_error(&e))?;
                self.wait_for_disk(&events)
            });
        if let Err(e) = &result {
            if let Err(cleanup) = self.remove(ctx) {
                return Err(e
                    .clone()
                    .context(format!("cleaning up failed ({cleanup}) after")));
            }
        }
        result
    }

    /// Waits (on device events, see [`DeviceEvents`]) until the session's disk for the LUN
    /// is there with its /dev node, and udev is done with it where udevd runs; checks its
    /// size.
    fn wait_for_disk(&self, events: &DeviceEvents) -> Result<Disk> {
        let found = events.wait_until(self.timeout(), || {
            self.disk().filter(|d| events.settled(d.major, d.minor))
        })?;
        let Some(disk) = found else {
            let state = self
                .matching_sessions()
                .iter()
                .map(|s| format!("session {} {}", s.sid, s.state))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::timeout(
                format!("{}: login to {} at {}", self.node, self.target, self.portal),
                format!(
                    "logged in, but no disk for LUN {} appeared within {} ms ({})",
                    self.lun,
                    self.timeout_ms,
                    if state.is_empty() {
                        "no session".into()
                    } else {
                        state
                    }
                ),
            ));
        };
        if disk.size != self.size {
            return Err(Error::conflict(
                format!("{}: LUN {} of {}", self.node, self.lun, self.target),
                format!(
                    "is {} ({} bytes), expected {} bytes",
                    disk.path().display(),
                    disk.size,
                    self.size
                ),
            ));
        }
        Ok(disk)
    }

    fn iface_exists(&self, ctx: &Ctx) -> Result<bool> {
        match iscsiadm(ctx, &["-m", "iface", "-I", &self.iface()]) {
            Ok(_) => Ok(true),
            Err(e) if matches!(e.code, Some(ERR_IDBM | ERR_NO_OBJS_FOUND)) => Ok(false),
            // Without open-iscsi there are no records to remove.
            Err(e) if e.not_installed => Ok(false),
            Err(e) => Err(e.error().context(format!(
                "{}: reading iface record {}",
                self.node,
                self.iface()
            ))),
        }
    }
}

impl Resource for IscsiSession {
    fn desired(&self) -> Params {
        vec![
            ("portal", self.portal.to_string()),
            ("target", self.target.clone()),
            ("lun", self.lun.to_string()),
            ("initiator", self.initiator.clone()),
            ("size", self.size.to_string()),
        ]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let found = self.matching_sessions();
        let session = match found.as_slice() {
            [] => return Ok(Observed::Absent),
            [one] => one,
            many => {
                let sids: Vec<String> = many.iter().map(|s| s.sid.to_string()).collect();
                return Ok(Observed::Partial(format!(
                    "{} sessions to {} as {} (sids {})",
                    many.len(),
                    self.target,
                    self.initiator,
                    sids.join(", ")
                )));
            }
        };
        if session.state != "LOGGED_IN" {
            return Ok(Observed::Partial(format!(
                "session {} to {} is {}",
                session.sid, self.target, session.state
            )));
        }
        let Some(disk) = session.disk(self.lun.into()) else {
            return Ok(Observed::Partial(format!(
                "session {} to {} has no disk for LUN {}",
                session.sid, self.target, self.lun
            )));
        };
        if !disk.node_matches() {
            return Ok(Observed::Partial(format!(
                "{} is not the block device {}:{} of session {}",
                disk.path().display(),
                disk.major,
                disk.minor,
                session.sid
            )));
        }
        Ok(Observed::Present(vec![
            ("portal", self.portal.to_string()),
            ("target", session.target.clone()),
            ("lun", self.lun.to_string()),
            ("initiator", session.initiator.clone()),
            ("size", disk.size.to_string()),
        ]))
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        self.validate()?;
        match self.observe(ctx)? {
            Observed::Present(have) if first_difference(&have, &self.desired()).is_none() => {
                return Ok(());
            }
            Observed::Absent => {}
            _ => self.teardown(ctx)?,
        }
        ensure_iscsid(ctx, self.timeout())?;
        let chap = self
            .chap
            .as_ref()
            .map(|c| (c.username.as_str(), c.password.as_str()));
        probe_target(
            self.portal,
            &self.target,
            self.lun,
            &self.initiator,
            chap,
            self.size,
            self.timeout(),
        )
        .map_err(|e| Error::from(e).context(format!("{}: parent {}", self.node, self.parent)))?;
        self.login(ctx).map(drop)
    }

    fn teardown(&self, ctx: &Ctx) -> Result<()> {
        let _records = ISCSIADM.lock().unwrap_or_else(|p| p.into_inner());
        self.remove(ctx)
    }

    fn runtime(&self) -> Params {
        match self.disk() {
            Some(d) => vec![
                ("disk", d.path().display().to_string()),
                ("dev", format!("{}:{}", d.major, d.minor)),
            ],
            None => vec![],
        }
    }
}

impl IscsiSession {
    /// Logs out and deletes the records; the caller holds [`ISCSIADM`] (login calls this
    /// when it fails, and the lock is not reentrant).
    fn remove(&self, ctx: &Ctx) -> Result<()> {
        let live = self.matching_sessions();
        if live.is_empty() {
            return self.delete_records(ctx);
        }
        // Logging out needs iscsid.
        ensure_iscsid(ctx, self.timeout())?;
        // Subscribed before logging out: the session's removal wakes the wait below.
        let events = DeviceEvents::subscribe(&["iscsi_session", "block"])?;
        for s in &live {
            let sid = s.sid.to_string();
            match iscsiadm(ctx, &["-m", "session", "-r", &sid, "--logout"]) {
                Ok(_) => {}
                // Gone meanwhile.
                Err(e) if matches!(e.code, Some(ERR_NO_OBJS_FOUND | ERR_SYSFS_LOOKUP | 2)) => {}
                Err(e) => {
                    return Err(e.error().context(format!(
                        "{}: logging out of session {sid} to {}",
                        self.node, self.target
                    )))
                }
            }
        }
        let gone = events.wait_until(self.timeout(), || {
            self.matching_sessions().is_empty().then_some(())
        })?;
        if gone.is_none() {
            return Err(Error::timeout(
                format!("{}: the session to {}", self.node, self.target),
                format!("still there {} ms after logging out", self.timeout_ms),
            ));
        }
        self.delete_records(ctx)
    }

    /// Deletes the node record and the iface, if they are there.
    fn delete_records(&self, ctx: &Ctx) -> Result<()> {
        if self.iface_exists(ctx)? {
            match self.node_cmd(ctx, &["-o", "delete"]) {
                Ok(_) => {}
                Err(e) if matches!(e.code, Some(ERR_NO_OBJS_FOUND)) => {}
                Err(e) => {
                    return Err(e.error().context(format!(
                        "{}: deleting the node record of {}",
                        self.node, self.target
                    )))
                }
            }
            match iscsiadm(ctx, &["-m", "iface", "-I", &self.iface(), "-o", "delete"]) {
                Ok(_) => {}
                Err(e) if matches!(e.code, Some(ERR_INVAL | ERR_NOMEM | ERR_NO_OBJS_FOUND)) => {}
                Err(e) => {
                    return Err(e.error().context(format!(
                        "{}: deleting iface record {}",
                        self.node,
                        self.iface()
                    )))
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn session() -> IscsiSession {
        IscsiSession {
            node: "n1".into(),
            parent: "origin".into(),
            portal: "127.0.0.1:3260".parse().unwrap(),
            target: "iqn.2014-12.org.sftsan:demo.image.base".into(),
            lun: 0,
            initiator: "iqn.2014-12.org.sftsan:demo.node.n1".into(),
            chap: Some(Chap {
                username: "n1".into(),
                password: "s3cret-s3cret".into(),
            }),
            size: 16 << 20,
            timeout_ms: 5000,
            replacement_timeout_s: 3,
        }
    }

    #[test]
    fn it_round_trips_through_json_and_hides_the_secret_in_debug() {
        let s = session();
        let json = serde_json::to_string(&s).unwrap();
        let back: IscsiSession = serde_json::from_str(&json).unwrap();
        assert_eq!(back, s);
        let debug = format!("{s:?}");
        assert!(!debug.contains("s3cret"), "{debug}");
        assert!(debug.contains("n1"), "{debug}");
        let mut open = s.clone();
        open.chap = None;
        let json = serde_json::to_string(&open).unwrap();
        assert!(!json.contains("chap"), "{json}");
        assert_eq!(serde_json::from_str::<IscsiSession>(&json).unwrap(), open);
    }

    #[test]
    fn desired_names_what_identifies_the_session() {
        let d = session().desired();
        let names: Vec<&str> = d.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["portal", "target", "lun", "initiator", "size"]);
        assert_eq!(d[0].1, "127.0.0.1:3260");
        assert_eq!(d[4].1, (16u64 << 20).to_string());
    }

    #[test]
    fn the_iface_name_is_stable_distinct_and_safe() {
        let a = session();
        let mut b = session();
        b.initiator = "iqn.2014-12.org.sftsan:demo.node.n2".into();
        let mut c = session();
        c.portal = "127.0.0.2:3260".parse().unwrap();
        assert_eq!(a.iface(), session().iface());
        assert_ne!(a.iface(), b.iface());
        assert_ne!(a.iface(), c.iface());
        let name = a.iface();
        assert_eq!(name.len(), "sftsan-".len() + 16);
        assert!(name
            .chars()
            .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-'));
    }

    #[test]
    fn names_and_sizes_are_validated() {
        assert!(session().validate().is_ok());
        let mut s = session();
        s.initiator = "iqn.2014-12.org.sftsan:N1".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("initiator name"));
        let mut s = session();
        s.target = "iqn.x;reboot".into();
        assert!(s
            .validate()
            .unwrap_err()
            .to_string()
            .contains("target name"));
        let mut s = session();
        s.chap.as_mut().unwrap().password = "two words".into();
        let e = s.validate().unwrap_err().to_string();
        assert!(e.contains("CHAP secret") && !e.contains("two words"), "{e}");
        let mut s = session();
        s.size = 1000;
        assert!(s.validate().unwrap_err().to_string().contains("size"));
    }

    #[test]
    fn secrets_are_masked_in_logged_arguments() {
        let args = [
            "-m",
            "node",
            "-o",
            "update",
            "-n",
            "node.session.auth.password",
            "-v",
            "topsecret",
        ];
        let shown = loggable(&args).join(" ");
        assert!(!shown.contains("topsecret"), "{shown}");
        assert!(shown.ends_with("-v ********"), "{shown}");
        let args = ["-m", "node", "-n", "node.session.auth.username", "-v", "n1"];
        assert_eq!(loggable(&args).join(" "), args.join(" "));
    }

    #[test]
    fn iscsiadms_reason_line_is_picked() {
        let stderr = "Logging in to [iface: x, target: t, portal: 127.0.0.1,3260]\n\
            iscsiadm: Could not login to [iface: x, target: t, portal: 127.0.0.1,3260].\n\
            iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)\n\
            iscsiadm: Could not log into all portals\n";
        assert_eq!(
            adm_reason(stderr),
            "iscsiadm: initiator reported error (24 - iSCSI login failed due to authorization failure)"
        );
        assert_eq!(
            adm_reason("iscsiadm: No records found\n"),
            "iscsiadm: No records found"
        );
        assert_eq!(adm_reason(""), "");
        let e = session().login_error(&AdmError {
            code: Some(24),
            message: "x".into(),
            not_installed: false,
            argv: vec!["iscsiadm".into()],
            status: "exit status: 24".into(),
        });
        assert!(
            e.to_string()
                .contains("authentication failed or not authorized (CHAP user \"n1\")"),
            "{e}"
        );
        assert!(!e.to_string().contains("s3cret"));
    }

    #[test]
    fn the_control_socket_is_found_in_proc_net_unix() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            000000004187148d: 00000002 00000000 00010000 0001 01 11006 @ISCSIADM_ABSTRACT_NAMESPACE\n\
            0000000012345678: 00000003 00000000 00000000 0001 03 11007 @ISCSID_UIP_ABSTRACT_NAMESPACE\n";
        assert!(unix_socket_listening(text, ISCSID_SOCKET));
        // A connected (not listening) socket does not count.
        let connected = text.replace("00010000", "00000000");
        assert!(!unix_socket_listening(&connected, ISCSID_SOCKET));
        assert!(!unix_socket_listening("Num RefCount\n", ISCSID_SOCKET));
    }

    /// A sysfs tree with one session (sid 3) to `target` over 127.0.0.1:3260 as `initiator`
    /// with LUN 0 as sdb (8:16, 16 MiB, read-only), shaped like the kernel's.
    fn fake_sysfs(root: &Path, target: &str, initiator: &str) {
        let w = |p: PathBuf, v: &str| {
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, v).unwrap();
        };
        let sess = root.join("devices/platform/host5/session3");
        let attrs = sess.join("iscsi_session/session3");
        w(attrs.join("targetname"), &format!("{target}\n"));
        w(attrs.join("initiatorname"), &format!("{initiator}\n"));
        w(attrs.join("ifacename"), "sftsan-0000000000000001\n");
        w(attrs.join("state"), "LOGGED_IN\n");
        w(attrs.join("recovery_tmo"), "3\n");
        let conn = sess.join("connection3:0/iscsi_connection/connection3:0");
        w(conn.join("persistent_address"), "127.0.0.1\n");
        w(conn.join("persistent_port"), "3260\n");
        w(conn.join("address"), "127.0.0.1\n");
        w(conn.join("port"), "3260\n");
        let sdb = sess.join("target5:0:0/5:0:0:0/block/sdb");
        w(sdb.join("dev"), "8:16\n");
        w(sdb.join("size"), "32768\n");
        w(sdb.join("ro"), "1\n");
        w(
            sdb.join("uevent"),
            "MAJOR=8\nMINOR=16\nDEVNAME=sdb\nDEVTYPE=disk\n",
        );
        fs::create_dir_all(root.join("class/iscsi_session")).unwrap();
        fs::create_dir_all(root.join("class/iscsi_connection")).unwrap();
        symlink(&attrs, root.join("class/iscsi_session/session3")).unwrap();
        symlink(&conn, root.join("class/iscsi_connection/connection3:0")).unwrap();
        symlink(&sess, attrs.join("device")).unwrap();
    }

    #[test]
    fn sessions_and_their_disks_are_read_from_sysfs() {
        let dir = tempfile::tempdir().unwrap();
        let s = session();
        fake_sysfs(dir.path(), &s.target, &s.initiator);
        let found = sessions_in(dir.path());
        assert_eq!(found.len(), 1, "{found:?}");
        let f = &found[0];
        assert_eq!(f.sid, 3);
        assert_eq!(f.target, s.target);
        assert_eq!(f.initiator, s.initiator);
        assert_eq!(f.state, "LOGGED_IN");
        assert_eq!(f.portal, Some(s.portal));
        assert_eq!(f.recovery_tmo, Some(3));
        let disk = f.disk(0).expect("LUN 0");
        assert_eq!(
            disk,
            &Disk {
                name: "sdb".into(),
                major: 8,
                minor: 16,
                size: 16 << 20,
                read_only: true,
            }
        );
        assert_eq!(disk.path(), Path::new("/dev/sdb"));
        assert!(f.disk(1).is_none());
    }

    #[test]
    fn an_absent_session_is_observed_absent_and_its_teardown_does_nothing() {
        let ctx = Ctx {
            transport: std::sync::Arc::new(crate::transport::LocalTransport),
            tools: std::sync::Arc::new(crate::resources::Tools::from_env()),
        };
        let mut s = session();
        // A target no test anywhere logs in to.
        s.target = format!("iqn.2014-12.org.sftsan:unit.absent.{}", std::process::id());
        assert_eq!(s.observe(&ctx).unwrap(), Observed::Absent);
        s.teardown(&ctx).expect("tearing down nothing");
        assert_eq!(s.runtime(), vec![]);
    }

    #[test]
    fn a_recovery_timeout_of_off_is_negative() {
        assert_eq!(parse_recovery_tmo("off"), Some(-1));
        assert_eq!(parse_recovery_tmo("3"), Some(3));
        assert_eq!(parse_recovery_tmo("soon"), None);
    }

    #[test]
    fn no_sysfs_class_means_no_sessions() {
        let dir = tempfile::tempdir().unwrap();
        assert!(sessions_in(dir.path()).is_empty());
    }
}
