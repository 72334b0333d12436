//! A node's upstream switch: the node's daemon reads its backing from a local socket that
//! this process serves, and the switch reads from the parent, or when the parent fails
//! (killed, stopped, cut off) from the grandparent, ..., the origin, sending the requests
//! in flight again there. The daemon never sees the failure: no read error reaches the
//! cache, its children or its VMs.

mod failover;
mod process;
mod report;

pub use failover::{Ancestor, Switch, Timing};
pub use process::{read_ancestors, run_switch, write_ancestors, SwitchArgs};
pub use report::{Event, Report};

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::Result;
use crate::fsutil::remove_file_if_exists;
use crate::process as procs;
use crate::resources::{Ctx, Observed, Params, Resource, Tools};
use crate::transport::run;

/// The socket the node's daemon reads its upstream from.
pub fn switch_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("upstream.sock")
}

/// The switch's report (`status` reads it).
pub fn report_file(run_dir: &Path) -> PathBuf {
    run_dir.join("switch.json")
}

/// A node's upstream switch process (`sftsan switch`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamSwitch {
    /// Name of the node (from the spec) whose upstream this is.
    pub node: String,
    /// The node's runtime directory: socket, pid file, ancestor list, report.
    pub run_dir: PathBuf,
    /// The export's name on every ancestor.
    pub export: String,
    /// Where to read from, nearest first: the parent, the grandparent, ..., the origin.
    pub ancestors: Vec<Ancestor>,
}

impl UpstreamSwitch {
    fn pidfile(&self) -> PathBuf {
        self.run_dir.join("switch.pid")
    }

    fn upstreams_file(&self) -> PathBuf {
        self.run_dir.join("switch-upstreams.json")
    }

    fn socket(&self) -> PathBuf {
        switch_socket(&self.run_dir)
    }

    /// The socket's path is in the switch's argv: it tells ours from any other process.
    fn marker(&self) -> String {
        self.socket().display().to_string()
    }

    fn pid(&self) -> Option<i32> {
        procs::live_pid(&self.pidfile(), &self.marker())
    }

    /// Tells a running switch that the tree above the node changed; true if one runs.
    pub fn retarget(&self) -> Result<bool> {
        let Some(pid) = self.pid() else {
            return Ok(false);
        };
        write_ancestors(&self.upstreams_file(), &self.ancestors)?;
        procs::signal(pid, libc::SIGHUP)
            .map_err(|e| crate::error::Error::io(format!("/proc/{pid}"), e))?;
        Ok(true)
    }
}

/// An ancestor list as one parameter: `n1=10.0.0.2:10809,origin=10.0.0.1:10809`.
fn ancestors_param(list: &[Ancestor]) -> String {
    let each: Vec<String> = list
        .iter()
        .map(|a| format!("{}={}", a.node, a.address))
        .collect();
    each.join(",")
}

impl Resource for UpstreamSwitch {
    fn desired(&self) -> Params {
        vec![
            ("socket", self.marker()),
            ("ancestors", ancestors_param(&self.ancestors)),
        ]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        if self.pid().is_none() {
            return Ok(Observed::Absent);
        }
        // A tree changed by hand shows here; `node add`/`node remove` keep the list current.
        let listed = read_ancestors(&self.upstreams_file())
            .map(|l| ancestors_param(&l))
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        Ok(Observed::Present(vec![
            ("socket", self.marker()),
            ("ancestors", listed),
        ]))
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        std::fs::create_dir_all(&self.run_dir)
            .map_err(|e| crate::error::Error::io(&self.run_dir, e))?;
        remove_file_if_exists(&self.pidfile())?;
        write_ancestors(&self.upstreams_file(), &self.ancestors)?;
        let path = |p: PathBuf| p.display().to_string();
        let args = [
            "switch".to_string(),
            "--socket".into(),
            self.marker(),
            "--pidfile".into(),
            path(self.pidfile()),
            "--upstreams".into(),
            path(self.upstreams_file()),
            "--report".into(),
            path(report_file(&self.run_dir)),
            "--export".into(),
            self.export.clone(),
        ];
        // `sftsan switch` returns once it is connected to the parent and listening.
        run(&*ctx.transport, Tools::program(&ctx.tools.sftsan), &args)
            .map_err(|e| e.context("starting the upstream switch"))?;
        Ok(())
    }

    fn runtime(&self) -> Params {
        vec![("pid", self.pid().map(|p| p.to_string()).unwrap_or_default())]
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        if let Some(pid) = self.pid() {
            procs::stop(pid, Duration::from_secs(3))?;
        }
        for f in [
            self.pidfile(),
            self.upstreams_file(),
            report_file(&self.run_dir),
            self.socket(),
        ] {
            remove_file_if_exists(&f)?;
        }
        Ok(())
    }
}
