//! The per-node qemu-storage-daemon process: QMP monitors and an NBD server.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::qapi::Quit;
use super::{connect, keeper_socket, qemu_opt_escape, qmp_socket};
use crate::error::{IoContext, Result};
use crate::fsutil::prune_run_dir;
use crate::process;
use crate::resources::{Ctx, Observed, Params, Resource, Tools};
use crate::transport::run;

/// A node's qemu-storage-daemon, with its QMP monitors and NBD server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Daemon {
    /// Name of the node (from the spec) the daemon runs on.
    pub node: String,
    /// Address the NBD server listens on (the node's address).
    pub address: IpAddr,
    /// TCP port of the NBD server (the spec's `cluster.port`, e.g. 10809).
    pub port: u16,
    /// The node's runtime directory: QMP sockets, pid file, log.
    pub run_dir: PathBuf,
}

pub(crate) fn pidfile(run_dir: &Path) -> PathBuf {
    run_dir.join("daemon.pid")
}

impl Daemon {
    fn pidfile(&self) -> PathBuf {
        pidfile(&self.run_dir)
    }

    /// Our own socket path appears in the daemon's argv: it tells our daemon from others.
    fn marker(&self) -> String {
        qmp_socket(&self.run_dir).display().to_string()
    }

    fn remove_runtime_files(&self) -> Result<()> {
        for f in [
            self.pidfile(),
            qmp_socket(&self.run_dir),
            keeper_socket(&self.run_dir),
        ] {
            process::remove_file_if_exists(&f)?;
        }
        Ok(())
    }
}

fn nbd_server_param(cmdline: &[String], key: &str) -> Option<String> {
    cmdline
        .iter()
        .find(|a| a.starts_with("addr.type=inet"))?
        .split(',')
        .find_map(|kv| kv.strip_prefix(key).map(str::to_string))
}

impl Resource for Daemon {
    fn desired(&self) -> Params {
        vec![
            ("address", self.address.to_string()),
            ("port", self.port.to_string()),
        ]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let Some(pid) = process::live_pid(&self.pidfile(), &self.marker()) else {
            return Ok(Observed::Absent);
        };
        let argv = process::cmdline(pid);
        Ok(Observed::Present(vec![
            (
                "address",
                nbd_server_param(&argv, "addr.host=").unwrap_or_default(),
            ),
            (
                "port",
                nbd_server_param(&argv, "addr.port=").unwrap_or_default(),
            ),
        ]))
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        std::fs::create_dir_all(&self.run_dir).at(&self.run_dir)?;
        self.remove_runtime_files()?;
        let monitor = |id: &str, path: PathBuf| {
            format!(
                "socket,id={id},path={},server=on,wait=off",
                qemu_opt_escape(&path.display().to_string())
            )
        };
        let args = [
            "--chardev".to_string(),
            monitor("qmp", qmp_socket(&self.run_dir)),
            "--monitor".into(),
            "chardev=qmp".into(),
            "--chardev".into(),
            monitor("keeper", keeper_socket(&self.run_dir)),
            "--monitor".into(),
            "chardev=keeper".into(),
            "--nbd-server".into(),
            format!(
                "addr.type=inet,addr.host={},addr.port={}",
                self.address, self.port
            ),
            "--pidfile".into(),
            self.pidfile().display().to_string(),
            // The parent returns only once the daemon is listening: that is our readiness event.
            "--daemonize".into(),
        ];
        run(
            &*ctx.transport,
            Tools::program(&ctx.tools.storage_daemon),
            &args,
        )
        .map_err(|e| e.context("starting qemu-storage-daemon"))?;
        Ok(())
    }

    fn runtime(&self) -> Params {
        let pid = process::live_pid(&self.pidfile(), &self.marker());
        vec![
            ("pid", pid.map(|p| p.to_string()).unwrap_or_default()),
            ("qmp", self.marker()),
            (
                "keeper-qmp",
                keeper_socket(&self.run_dir).display().to_string(),
            ),
        ]
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        if let Some(pid) = process::live_pid(&self.pidfile(), &self.marker()) {
            // `quit` closes every block node cleanly (flushing the cache) before exiting.
            let asked = connect(&self.run_dir)
                .ok()
                .flatten()
                .map(|mut q| q.run(&Quit {}).is_ok())
                .unwrap_or(false);
            if !asked || !process::wait_exit(pid, Duration::from_secs(20)) {
                process::stop(pid, Duration::from_secs(10))?;
            }
        }
        self.remove_runtime_files()?;
        prune_run_dir(&self.run_dir);
        Ok(())
    }
}
