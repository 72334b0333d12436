//! sftsan-core's engine as the VM commands and the hook use it: snapshots on demand, with
//! waiting for the cluster's state lock (a hook and a batch may work on one cluster at once).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sftsan_core::engine::Engine;
use sftsan_core::error::{Error, ErrorKind, Result};
use sftsan_core::names::Names;
use sftsan_core::plan::Plan;
use sftsan_core::resources::Tools;
use sftsan_core::spec::{ClusterSpec, ValidatedSpec};

/// How long to wait for another sftsan working on the same cluster.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);

/// What a batch needs of the cluster: VM snapshots made and removed on demand.
pub trait Snapshots: Sync {
    /// Makes sure the snapshot exists (bringing its node up if needed).
    fn ensure(&self, node: &str, index: u32) -> Result<PathBuf>;
    /// Removes it; returns whether there was one.
    fn remove(&self, node: &str, index: u32) -> Result<bool>;
    /// Whether the snapshot is there now (no lock taken, nothing brought up).
    fn exists(&self, node: &str, index: u32) -> bool;
    /// Whether a node's snapshot directory exists where the VMs run (a libvirt `dir`
    /// pool can show only a directory that is there).
    fn dir_exists(&self, dir: &Path) -> bool {
        dir.is_dir()
    }
    /// Whether the VMs' host makes their snapshots itself, with sftsan's libvirt hook at
    /// `prepare begin` of every start: a batch then never calls [`Snapshots::ensure`]
    /// (define and start only touch libvirt). True for a remote cluster's hosts, whose
    /// disks the controller cannot make; false here, where a batch makes them first so
    /// that starts work without the hook too.
    fn made_by_hook(&self) -> bool {
        false
    }
}

/// A loaded cluster: its spec, plan and engine.
pub struct Cluster {
    /// The validated spec.
    pub spec: ValidatedSpec,
    /// The file the spec was loaded from, as given (errors name it).
    pub spec_path: PathBuf,
    /// The engine over the real host, logging its progress through `tracing`.
    pub engine: Engine,
    names: Names,
}

impl Cluster {
    /// Loads and validates the spec; `tools` as the engine should run them.
    pub fn load(spec_path: &Path, tools: Tools) -> Result<Cluster> {
        let show = spec_path.display().to_string();
        let spec =
            ClusterSpec::load(spec_path).map_err(|e| Error::from(e).context(show.clone()))?;
        let spec = sftsan_core::cluster::validate_here(spec).map_err(|e| e.context(show))?;
        let progress: sftsan_core::engine::Progress = Arc::new(|e| {
            tracing::info!(
                "{}: {}{}",
                e.id,
                e.action.as_str(),
                if e.rollback { " (rollback)" } else { "" }
            )
        });
        Ok(Cluster {
            names: Names::new(spec.spec()),
            engine: sftsan_core::cluster::engine(&spec, tools, progress),
            spec,
            spec_path: spec_path.to_path_buf(),
        })
    }

    /// The cluster's plan: its nodes and their stacks.
    pub fn plan(&self) -> &Plan {
        self.engine.plan()
    }

    /// Checks that `node` is one of the cluster's compute nodes (the engine's own error for
    /// an unknown node speaks of a missing snapshot).
    pub fn check_node(&self, node: &str) -> Result<()> {
        crate::vms::check_compute_node(self.plan(), node)
            .map_err(|e| e.context(self.spec_path.display().to_string()))
    }

    /// The names sftsan gives this cluster's resources on the host.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The libvirt pool that shows one node's snapshots: `sftsan-<cluster>-<node>-<image>`.
    pub fn pool_name(&self, node: &str) -> String {
        pool_name(self.plan(), node)
    }
}

/// The libvirt pool that shows one node's snapshots: `sftsan-<cluster>-<node>-<image>`.
pub fn pool_name(plan: &Plan, node: &str) -> String {
    format!(
        "{}-{}-{node}-{}",
        sftsan_core::names::PREFIX,
        plan.cluster,
        plan.image
    )
}

/// Runs an engine call, retrying while another sftsan holds the cluster's lock (and only
/// then: any other failure, a permission error on the lock file included, is final).
pub fn with_lock<T>(what: &str, mut call: impl FnMut() -> Result<T>) -> Result<T> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match call() {
            Err(e) if e.kind() == ErrorKind::Busy && Instant::now() < deadline => {
                tracing::debug!("{what}: waiting for the state lock ({e})");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(e.context(what)),
            Ok(v) => return Ok(v),
        }
    }
}

impl Snapshots for Cluster {
    fn ensure(&self, node: &str, index: u32) -> Result<PathBuf> {
        with_lock(&format!("{node}/snapshot/{index}"), || {
            self.engine.ensure_snapshot(node, index)
        })
    }

    fn remove(&self, node: &str, index: u32) -> Result<bool> {
        with_lock(&format!("{node}/snapshot/{index}"), || {
            self.engine.remove_snapshot(node, index)
        })
    }

    fn exists(&self, node: &str, index: u32) -> bool {
        self.plan().vm_disk_path(node, index).exists()
    }
}
