//! sftsan-core's engine as the VM commands and the hook use it: snapshots on demand, with
//! waiting for the cluster's state lock (a hook and a batch may work on one cluster at once).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sftsan_core::engine::{Engine, EngineError};
use sftsan_core::names::Names;
use sftsan_core::plan::{self, Plan};
use sftsan_core::resources::Tools;
use sftsan_core::spec::{validate, ClusterSpec, ValidatedSpec};

/// How long to wait for another sftsan working on the same cluster.
pub const LOCK_WAIT: Duration = Duration::from_secs(120);

/// What a batch needs of the cluster: VM snapshots made and removed on demand.
pub trait Snapshots: Sync {
    /// Makes sure the snapshot exists (bringing its node up if needed).
    fn ensure(&self, node: &str, index: u32) -> Result<PathBuf, String>;
    /// Removes it; returns whether there was one.
    fn remove(&self, node: &str, index: u32) -> Result<bool, String>;
    fn exists(&self, node: &str, index: u32) -> bool;
}

/// A loaded cluster: its spec, plan and engine.
pub struct Cluster {
    pub spec: ValidatedSpec,
    pub spec_path: PathBuf,
    pub engine: Engine,
    names: Names,
}

impl Cluster {
    /// Loads and validates the spec; `tools` as the engine should run them.
    pub fn load(spec_path: &Path, tools: Tools) -> Result<Cluster, String> {
        let show = spec_path.display();
        let spec = ClusterSpec::load(spec_path).map_err(|e| format!("{show}: {e}"))?;
        let spec = validate(spec).map_err(|e| format!("{show}: {e}"))?;
        let plan = plan::plan(&spec);
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
            engine: Engine::new(&spec, plan, tools, progress),
            spec,
            spec_path: spec_path.to_path_buf(),
        })
    }

    pub fn plan(&self) -> &Plan {
        self.engine.plan()
    }

    /// Checks that `node` is one of the cluster's compute nodes (the engine's own error for
    /// an unknown node speaks of a missing snapshot).
    pub fn check_node(&self, node: &str) -> Result<(), String> {
        match self.plan().node(node) {
            Some(n) if n.role == sftsan_core::plan::Role::Node => Ok(()),
            Some(_) => Err(format!("{node:?} is the origin: VMs run on compute nodes")),
            None => Err(format!(
                "no node named {node:?} in cluster {} ({})",
                self.plan().cluster,
                self.spec_path.display()
            )),
        }
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The libvirt pool that shows one node's snapshots: `sftsan-<cluster>-<node>-<image>`.
    pub fn pool_name(&self, node: &str) -> String {
        format!(
            "{}-{}-{node}-{}",
            sftsan_core::names::PREFIX,
            self.plan().cluster,
            self.plan().image
        )
    }
}

/// Runs an engine call, retrying while another sftsan holds the cluster's lock.
pub fn with_lock<T>(
    what: &str,
    mut call: impl FnMut() -> Result<T, EngineError>,
) -> Result<T, String> {
    let deadline = Instant::now() + LOCK_WAIT;
    loop {
        match call() {
            Err(EngineError::Lock(why)) if Instant::now() < deadline => {
                tracing::debug!("{what}: waiting for the state lock ({why})");
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(e) => return Err(format!("{what}: {e}")),
            Ok(v) => return Ok(v),
        }
    }
}

impl Snapshots for Cluster {
    fn ensure(&self, node: &str, index: u32) -> Result<PathBuf, String> {
        with_lock(&format!("{node}/snapshot/{index}"), || {
            self.engine.ensure_snapshot(node, index)
        })
    }

    fn remove(&self, node: &str, index: u32) -> Result<bool, String> {
        with_lock(&format!("{node}/snapshot/{index}"), || {
            self.engine.remove_snapshot(node, index)
        })
    }

    fn exists(&self, node: &str, index: u32) -> bool {
        self.plan().vm_disk_path(node, index).exists()
    }
}
