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
    /// Remote mode: the NBD server listens on this unix socket instead of `address:port`
    /// (only the node's VMs and its TLS relay read it; children go through the relay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
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
        let sockets = [qmp_socket(&self.run_dir), keeper_socket(&self.run_dir)];
        for f in sockets
            .into_iter()
            .chain([self.pidfile()])
            .chain(self.socket.clone())
        {
            process::remove_file_if_exists(&f)?;
        }
        Ok(())
    }
}

/// A key's value in the `--nbd-server` argument (`addr.type=...,key=value,...`).
pub(crate) fn nbd_server_param(cmdline: &[String], key: &str) -> Option<String> {
    cmdline
        .iter()
        .find(|a| a.starts_with("addr.type="))?
        .split(',')
        .find_map(|kv| kv.strip_prefix(key).map(str::to_string))
}

impl Daemon {
    /// The `--nbd-server` argument: the unix socket, else the node's address and port.
    fn nbd_server(&self) -> String {
        match &self.socket {
            Some(path) => format!(
                "addr.type=unix,addr.path={}",
                qemu_opt_escape(&path.display().to_string())
            ),
            None => format!(
                "addr.type=inet,addr.host={},addr.port={}",
                self.address, self.port
            ),
        }
    }
}

impl Resource for Daemon {
    fn desired(&self) -> Params {
        match &self.socket {
            Some(path) => vec![("socket", path.display().to_string())],
            None => vec![
                ("address", self.address.to_string()),
                ("port", self.port.to_string()),
            ],
        }
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let Some(pid) = process::live_pid(&self.pidfile(), &self.marker()) else {
            return Ok(Observed::Absent);
        };
        let argv = process::cmdline(pid);
        let param = |key| nbd_server_param(&argv, key).unwrap_or_default();
        Ok(Observed::Present(match &self.socket {
            Some(_) => vec![("socket", param("addr.path=").replace(",,", ","))],
            None => vec![
                ("address", param("addr.host=")),
                ("port", param("addr.port=")),
            ],
        }))
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
            self.nbd_server(),
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
        if let Some(socket) = &self.socket {
            super::vm_readers::admit(socket)?;
        }
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
            // A daemon that does not answer, or does not finish in time, is killed.
            let asked = connect(&self.run_dir)
                .ok()
                .flatten()
                .map(|mut q| q.run(&Quit {}).is_ok())
                .unwrap_or(false);
            if !asked || !process::wait_exit(pid, Duration::from_secs(10)) {
                process::stop(pid, Duration::from_secs(2))?;
            }
        }
        self.remove_runtime_files()?;
        prune_run_dir(&self.run_dir);
        Ok(())
    }
}
