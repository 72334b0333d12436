//! A private tgtd (userspace iSCSI target) with one read-only LUN: the userspace origin
//! (`origin.protocol = "iscsi"`), and the kernel backend's targets with `kernel.relay =
//! "tgt"` (the image, or a dm view of a node's cache, with a CHAP account). Only the
//! node's children's initiator names may log in.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::backends::shared::{dm, Chap};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{prune_run_dir, remove_file_if_exists};
use crate::process;
use crate::resources::{Ctx, Observed, Params, Resource};
use crate::transport::{run, run_stdout, LocalTransport};

/// tgtd's management sockets live here, named by control port.
const TGTD_RUN_DIR: &str = "/var/run/tgtd";
const TID: &str = "1";
const LUN: &str = "1";

/// A private tgtd exporting one file or dm device read-only as LUN 1 of one target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TgtTarget {
    /// Name of the node (from the spec) tgtd runs on.
    pub node: String,
    /// The node's runtime directory, holding tgtd's pid file (`tgtd.pid`).
    pub run_dir: PathBuf,
    /// Address the iSCSI portal listens on.
    pub address: IpAddr,
    /// TCP port of the iSCSI portal (e.g. 3260).
    pub port: u16,
    /// tgtd's management port, private to this tgtd so several can run side by side.
    pub control_port: u16,
    /// The target's IQN.
    pub iqn: String,
    /// The file exported (the image); unused when `source_dm` is set.
    pub source: PathBuf,
    /// Initiator names allowed to log in (the origin's children).
    pub initiators: Vec<String>,
    /// CHAP credentials every initiator must log in with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chap: Option<Chap>,
    /// Export this device-mapper device (found when the target is made) instead of
    /// `source`: the kernel backend's relay of a node's cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_dm: Option<String>,
}

impl TgtTarget {
    fn pidfile(&self) -> PathBuf {
        self.run_dir.join("tgtd.pid")
    }

    fn marker(&self) -> String {
        self.pidfile().display().to_string()
    }

    fn control_socket(&self) -> PathBuf {
        Path::new(TGTD_RUN_DIR).join(format!("socket.{}", self.control_port))
    }

    /// The lock file tgtd holds while it owns the control port.
    fn control_lock(&self) -> PathBuf {
        let mut lock = self.control_socket().into_os_string();
        lock.push(".lock");
        PathBuf::from(lock)
    }

    /// The tgtd that holds this control port now, if any (whoever's it is).
    fn control_port_holder(&self) -> Option<i32> {
        lock_holder(&self.control_lock())
    }

    /// `tgtadm -C PORT --lld iscsi ARGS...`, from the root namespace (the socket is a file).
    fn tgtadm(&self, args: &[&str]) -> Result<String> {
        let control = self.control_port.to_string();
        let mut full = vec!["-C", &control, "--lld", "iscsi"];
        full.extend_from_slice(args);
        run_stdout(&LocalTransport, "tgtadm", &full)
    }

    /// What the LUN serves: the file or device, or the dm device's node.
    fn backing(&self) -> Result<String> {
        match &self.source_dm {
            None => Ok(self.source.display().to_string()),
            Some(name) => {
                let dev = dm::device(name)?.ok_or_else(|| {
                    Error::not_found(format!("dm device {name}"), "nothing to export")
                })?;
                Ok(dm::node_path(dev)?.display().to_string())
            }
        }
    }

    fn configure(&self) -> Result<()> {
        let source = self.backing()?;
        self.tgtadm(&[
            "--mode",
            "target",
            "--op",
            "new",
            "--tid",
            TID,
            "--targetname",
            &self.iqn,
        ])?;
        self.tgtadm(&[
            "--mode",
            "logicalunit",
            "--op",
            "new",
            "--tid",
            TID,
            "--lun",
            LUN,
            "--backing-store",
            &source,
        ])?;
        // tgtd refuses readonly=1 on creation; it must be a separate update.
        self.tgtadm(&[
            "--mode",
            "logicalunit",
            "--op",
            "update",
            "--tid",
            TID,
            "--lun",
            LUN,
            "--params",
            "readonly=1",
        ])?;
        if let Some(chap) = &self.chap {
            let (user, password) = (chap.username.as_str(), chap.password.as_str());
            self.tgtadm(&[
                "--mode",
                "account",
                "--op",
                "new",
                "--user",
                user,
                "--password",
                password,
            ])?;
            self.tgtadm(&[
                "--mode", "account", "--op", "bind", "--tid", TID, "--user", user,
            ])?;
        }
        for name in &self.initiators {
            self.tgtadm(&[
                "--mode",
                "target",
                "--op",
                "bind",
                "--tid",
                TID,
                "--initiator-name",
                name,
            ])?;
        }
        Ok(())
    }

    fn wait_for_control_socket(&self) -> Result<()> {
        // tgtd opens its management socket after it detaches: poll for it with a deadline.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.control_socket().exists() {
            if Instant::now() > deadline {
                return Err(Error::timeout(
                    "tgtd",
                    format!(
                        "did not open {} within 10s",
                        self.control_socket().display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

/// The pid holding a POSIX lock on `path` (tgtd locks its control port's lock file), if
/// any process does.
fn lock_holder(path: &Path) -> Option<i32> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).ok()?;
    // SAFETY: flock is plain data; F_GETLK only fills it in.
    let mut query: libc::flock = unsafe { std::mem::zeroed() };
    query.l_type = libc::F_WRLCK as libc::c_short;
    query.l_whence = libc::SEEK_SET as libc::c_short;
    query.l_start = 0;
    query.l_len = 1;
    // SAFETY: a valid fd and a valid flock for the call to fill in.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut query) } != 0 {
        return None;
    }
    (query.l_type != libc::F_UNLCK as libc::c_short).then_some(query.l_pid)
}

impl Resource for TgtTarget {
    fn desired(&self) -> Params {
        // A dm device's node is only known while it exists.
        let source = self
            .backing()
            .unwrap_or_else(|_| self.source.display().to_string());
        vec![("target", self.iqn.clone()), ("source", source)]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        if process::live_pid(&self.pidfile(), &self.marker()).is_none() {
            return Ok(Observed::Absent);
        }
        let show = self.tgtadm(&["--mode", "target", "--op", "show"])?;
        let target = show
            .lines()
            .find_map(|l| l.strip_prefix(&format!("Target {TID}: ")).map(str::trim))
            .map(String::from);
        let source = show
            .lines()
            .filter_map(|l| l.trim().strip_prefix("Backing store path: "))
            .find(|p| *p != "None")
            .map(String::from);
        Ok(match (target, source) {
            (Some(t), Some(s)) => Observed::Present(vec![("target", t), ("source", s)]),
            _ => Observed::Partial("tgtd runs without its target".into()),
        })
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        // Control ports are derived per cluster and node; two clusters' can meet. Another
        // tgtd on ours would take our target commands: refuse, and touch none of its files.
        if let Some(pid) = self.control_port_holder() {
            return Err(Error::in_use(
                format!("tgt control port {}", self.control_port),
                format!(
                    "held by another tgtd (pid {pid}, not {}'s): another cluster on this host? \
                     Give this one another iscsi_control_port",
                    self.node
                ),
            ));
        }
        std::fs::create_dir_all(&self.run_dir).at(&self.run_dir)?;
        remove_file_if_exists(&self.pidfile())?;
        let args = [
            "-C".to_string(),
            self.control_port.to_string(),
            "--iscsi".into(),
            format!("portal={}:{}", self.address, self.port),
            "--pid-file".into(),
            self.pidfile().display().to_string(),
        ];
        run(&*ctx.transport, "tgtd", &args).map_err(|e| e.context("starting tgtd"))?;
        let configured = self
            .wait_for_control_socket()
            .and_then(|()| self.configure());
        if let Err(e) = configured {
            let _ = self.teardown(ctx);
            return Err(e);
        }
        Ok(())
    }

    fn runtime(&self) -> Params {
        let pid = process::live_pid(&self.pidfile(), &self.marker());
        vec![
            ("pid", pid.map(|p| p.to_string()).unwrap_or_default()),
            (
                "control-socket",
                self.control_socket().display().to_string(),
            ),
        ]
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        if let Some(pid) = process::live_pid(&self.pidfile(), &self.marker()) {
            // tgtd ignores SIGTERM while it has targets: remove ours (dropping sessions), then
            // put the daemon into shutdown so the signal ends it.
            let _ = self.tgtadm(&[
                "--mode", "target", "--op", "delete", "--force", "--tid", TID,
            ]);
            let _ = self.tgtadm(&["--mode", "system", "--op", "delete"]);
            process::stop(pid, Duration::from_secs(10))?;
        }
        // The control files are ours to remove only when no other tgtd holds the port.
        if self.control_port_holder().is_none() {
            for f in [self.control_socket(), self.control_lock()] {
                remove_file_if_exists(&f)?;
            }
        }
        remove_file_if_exists(&self.pidfile())?;
        let _ = std::fs::remove_dir(TGTD_RUN_DIR); // only when no other tgtd uses it
        prune_run_dir(&self.run_dir);
        Ok(())
    }
}
