//! The userspace data path: one qemu-storage-daemon per node, driven over QMP.
//!
//! Origin:  file -> raw -> NBD export `<image>`
//! Node:    NBD upstream (parent's export) -> qcow2 cache -> copy-on-read -> NBD export
//!          `<image>` for children and local VMs; qcow2 overlays per VM backed by it.
//! A keeper process per node flushes the cache so that what was fetched survives a crash.

mod cache;
mod daemon;
mod keeper;
mod origin;
mod qmp;
mod relay;
mod snapshot;
pub mod stats;
mod upstream;

pub use cache::Cache;
pub use daemon::Daemon;
pub use keeper::{run_keeper, Keeper, KeeperArgs};
pub use origin::OriginExport;
pub use qmp::Qmp;
pub use relay::RelayExport;
pub use snapshot::Snapshot;
pub use upstream::{IscsiLogin, Upstream};

use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};

/// Block graph node names inside a node's daemon.
pub(crate) mod graph {
    pub const ORIGIN_FILE: &str = "origin-file";
    pub const ORIGIN: &str = "origin";
    pub const UPSTREAM: &str = "upstream";
    pub const CACHE_FILE: &str = "cache-file";
    pub const CACHE: &str = "cache";
    pub const COR: &str = "cor";
    pub const ORIGIN_EXPORT_ID: &str = "origin";
    pub const RELAY_EXPORT_ID: &str = "relay";
}

/// Control socket of the daemon (sftsan's own commands).
pub fn qmp_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("qmp.sock")
}

/// A second monitor, so the keeper never blocks sftsan's commands.
pub fn keeper_socket(run_dir: &Path) -> PathBuf {
    run_dir.join("keeper.sock")
}

const QMP_TIMEOUT: Duration = Duration::from_secs(30);

/// Connects to a node's daemon; `Ok(None)` when no daemon listens (so nothing in it exists).
pub(crate) fn connect(run_dir: &Path) -> Result<Option<Qmp>> {
    Qmp::try_connect(&qmp_socket(run_dir), QMP_TIMEOUT)
}

/// Like [`connect`] but a missing daemon is an error: used when creating.
pub(crate) fn require(run_dir: &Path, node: &str) -> Result<Qmp> {
    connect(run_dir)?
        .ok_or_else(|| Error::not_found(format!("the storage daemon of {node}"), "is not running"))
}

/// Block nodes of the daemon by name, with their QMP descriptions.
pub(crate) fn block_nodes(qmp: &mut Qmp) -> Result<Vec<Value>> {
    let nodes = qmp.execute("query-named-block-nodes", json!({"flat": true}))?;
    Ok(nodes.as_array().cloned().unwrap_or_default())
}

pub(crate) fn find_node<'a>(nodes: &'a [Value], name: &str) -> Option<&'a Value> {
    nodes.iter().find(|n| n["node-name"] == name)
}

pub(crate) fn export_exists(qmp: &mut Qmp, id: &str) -> Result<bool> {
    let exports = qmp.execute("query-block-exports", json!({}))?;
    Ok(exports
        .as_array()
        .is_some_and(|a| a.iter().any(|e| e["id"] == id)))
}

/// Removes an export, dropping connected clients, and waits until it is really gone.
pub(crate) fn delete_export(qmp: &mut Qmp, id: &str) -> Result<()> {
    if !export_exists(qmp, id)? {
        return Ok(());
    }
    qmp.execute("block-export-del", json!({"id": id, "mode": "hard"}))?;
    qmp.wait_event("BLOCK_EXPORT_DELETED", Duration::from_secs(30), |d| {
        d["id"] == id
    })?;
    Ok(())
}

/// Deletes block nodes in the given order, skipping those already gone.
pub(crate) fn delete_nodes(qmp: &mut Qmp, names: &[&str]) -> Result<()> {
    let existing = block_nodes(qmp)?;
    for name in names {
        if find_node(&existing, name).is_some() {
            qmp.execute("blockdev-del", json!({"node-name": name}))?;
        }
    }
    Ok(())
}

/// QEMU's option syntax splits at commas; a literal comma is written twice.
pub(crate) fn qemu_opt_escape(s: &str) -> String {
    s.replace(',', ",,")
}

/// The pid of the node's live storage daemon, if one runs.
pub(crate) fn daemon_pid(run_dir: &Path) -> Option<i32> {
    crate::process::live_pid(
        &daemon::pidfile(run_dir),
        &qmp_socket(run_dir).display().to_string(),
    )
}

/// The JSON a qcow2 overlay uses as backing to reach an NBD export.
pub fn nbd_backing(host: &std::net::IpAddr, port: u16, export: &str) -> String {
    json!({"file": {"driver": "nbd",
        "server": {"type": "inet", "host": host.to_string(), "port": port.to_string()},
        "export": export}})
    .to_string()
}
