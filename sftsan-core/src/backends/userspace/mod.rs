//! The userspace data path: one qemu-storage-daemon per node, driven over QMP.
//!
//! Origin:  file -> raw -> NBD export `<image>`
//! Node:    NBD upstream (parent's export) -> qcow2 cache -> copy-on-read -> NBD export
//!          `<image>` for children and local VMs; qcow2 overlays per VM backed by it.
//! Remote mode: a node's daemon serves on a unix socket (its VMs read there) and a second
//! daemon, the TLS relay, serves that export to its children with a pre-shared key each.
//! A keeper process per node flushes the cache so that what was fetched survives a crash.

mod cache;
mod daemon;
mod keeper;
pub mod nbd;
mod origin;
pub mod qapi;
mod qmp;
mod relay;
mod snapshot;
pub mod stats;
pub mod switch;
mod tls_relay;
mod upstream;
mod vm_readers;

pub use cache::Cache;
pub use daemon::Daemon;
pub use keeper::{run_keeper, Keeper, KeeperArgs};
pub use origin::OriginExport;
pub use qmp::Qmp;
pub use relay::RelayExport;
pub use snapshot::Snapshot;
pub use switch::{run_switch, SwitchArgs, UpstreamSwitch};
pub use tls_relay::TlsRelay;
pub use upstream::{IscsiLogin, LinkKey, Upstream};

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, ErrorKind, Result};
use qapi::{
    BlockDeviceInfo, BlockExportDel, BlockExportDeleted, BlockdevDel, Driver, ExportRemoveMode,
    QueryBlockExports, QueryNamedBlockNodes, SocketAddress,
};

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

/// How long observing or tearing down waits for a daemon's answer: a healthy daemon
/// answers in milliseconds; one that does not is stopped or stuck.
const QMP_TIMEOUT: Duration = Duration::from_secs(3);
/// Creating waits longer: opening a block node may wait for a parent to answer.
const QMP_CREATE_TIMEOUT: Duration = Duration::from_secs(30);

/// Daemons (by QMP socket) that did not answer in time a moment ago: they are not waited
/// on again for a while, so one stuck daemon costs a command one timeout, not one per
/// step. A long-lived caller (the C ABI) asks again after `WEDGED_FOR`.
static WEDGED: Mutex<BTreeMap<PathBuf, Instant>> = Mutex::new(BTreeMap::new());
const WEDGED_FOR: Duration = Duration::from_secs(30);

fn known_wedged(socket: &Path) -> bool {
    let mut wedged = WEDGED.lock().unwrap();
    wedged.retain(|_, since| since.elapsed() < WEDGED_FOR);
    wedged.contains_key(socket)
}

fn mark_wedged(socket: PathBuf, wedged: bool) {
    let mut set = WEDGED.lock().unwrap();
    if wedged {
        set.insert(socket, Instant::now());
    } else {
        set.remove(&socket);
    }
}

fn wedged_error(socket: &Path) -> Error {
    Error::timeout(
        format!("QMP socket {}", socket.display()),
        "the daemon did not answer in time",
    )
}

/// Connects to a node's daemon; `Ok(None)` when no daemon listens (so nothing in it exists).
pub(crate) fn connect(run_dir: &Path) -> Result<Option<Qmp>> {
    let socket = qmp_socket(run_dir);
    if known_wedged(&socket) {
        return Err(wedged_error(&socket));
    }
    Qmp::try_connect(&socket, QMP_TIMEOUT).inspect_err(|e| {
        if e.kind() == ErrorKind::Timeout {
            mark_wedged(socket.clone(), true);
        }
    })
}

/// Like [`connect`] but a missing daemon is an error: used when creating.
pub(crate) fn require(run_dir: &Path, node: &str) -> Result<Qmp> {
    Qmp::try_connect(&qmp_socket(run_dir), QMP_CREATE_TIMEOUT)?
        .ok_or_else(|| Error::not_found(format!("the storage daemon of {node}"), "is not running"))
}

/// Runs a teardown step inside the node's daemon. A daemon that does not answer in time
/// (stopped, or stuck on something that never comes) is killed instead: what the step
/// would have removed goes with it, and teardown goes on.
pub(crate) fn teardown_in_daemon(
    run_dir: &Path,
    step: impl FnOnce(&mut Qmp) -> Result<()>,
) -> Result<()> {
    let result = connect(run_dir).and_then(|qmp| match qmp {
        Some(mut qmp) => step(&mut qmp),
        None => Ok(()),
    });
    match result {
        Err(e) if matches!(e.kind(), ErrorKind::Timeout | ErrorKind::Unreachable) => {
            // Once it is gone, the socket answers at once (nobody listens) or a new daemon does.
            let killed = kill_daemon(run_dir, &e);
            mark_wedged(qmp_socket(run_dir), killed.is_err());
            killed
        }
        other => other,
    }
}

/// Kills the node's daemon (if it still runs) after `why`.
fn kill_daemon(run_dir: &Path, why: &Error) -> Result<()> {
    let Some(pid) = daemon_pid(run_dir) else {
        return Ok(());
    };
    tracing::warn!("{why}; killing the storage daemon (pid {pid})");
    crate::process::signal(pid, libc::SIGKILL).map_err(|e| Error::io(format!("/proc/{pid}"), e))?;
    if crate::process::wait_exit(pid, Duration::from_secs(10)) {
        Ok(())
    } else {
        Err(Error::timeout(
            format!("pid {pid}"),
            "survived SIGKILL for 10 s",
        ))
    }
}

/// Every block node of the daemon.
pub(crate) fn block_nodes(qmp: &mut Qmp) -> Result<Vec<BlockDeviceInfo>> {
    qmp.run(&QueryNamedBlockNodes { flat: true })
}

pub(crate) fn find_node<'a>(
    nodes: &'a [BlockDeviceInfo],
    name: &str,
) -> Option<&'a BlockDeviceInfo> {
    nodes.iter().find(|n| n.node_name == name)
}

pub(crate) fn export_exists(qmp: &mut Qmp, id: &str) -> Result<bool> {
    let exports = qmp.run(&QueryBlockExports {})?;
    Ok(exports.iter().any(|e| e.id == id))
}

/// Removes an export, dropping connected clients, and waits until it is really gone.
pub(crate) fn delete_export(qmp: &mut Qmp, id: &str) -> Result<()> {
    if !export_exists(qmp, id)? {
        return Ok(());
    }
    qmp.run(&BlockExportDel {
        id: id.into(),
        mode: ExportRemoveMode::Hard,
    })?;
    qmp.wait_event(QMP_TIMEOUT, |d: &BlockExportDeleted| d.id == id)?;
    Ok(())
}

/// Deletes block nodes in the given order, skipping those already gone.
pub(crate) fn delete_nodes(qmp: &mut Qmp, names: &[&str]) -> Result<()> {
    let existing = block_nodes(qmp)?;
    for name in names {
        if find_node(&existing, name).is_some() {
            qmp.run(&BlockdevDel {
                node_name: (*name).into(),
            })?;
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

/// The JSON a qcow2 overlay uses as backing to reach an NBD export. It is written into
/// every VM disk's header and compared when observed, so its text never changes: keys are
/// sorted (through `Value`), as the first releases wrote them.
pub fn nbd_backing(host: &std::net::IpAddr, port: u16, export: &str) -> String {
    backing_json(SocketAddress::inet(*host, port), export)
}

/// Like [`nbd_backing`], for an export served on a unix socket (remote mode's nodes).
pub fn nbd_unix_backing(socket: &Path, export: &str) -> String {
    backing_json(
        SocketAddress::Unix {
            path: socket.to_path_buf(),
        },
        export,
    )
}

fn backing_json(server: SocketAddress, export: &str) -> String {
    #[derive(serde::Serialize)]
    struct Backing {
        file: Driver,
    }
    let backing = Backing {
        file: Driver::Nbd {
            server,
            export: export.into(),
            reconnect_delay: None,
            open_timeout: None,
            tls_creds: None,
        },
    };
    serde_json::to_value(&backing)
        .expect("plain strings and numbers encode")
        .to_string()
}

#[cfg(test)]
mod tests {
    /// VM disks made by earlier releases carry this text in their headers.
    #[test]
    fn the_nbd_backing_text_is_what_vm_disks_already_carry() {
        assert_eq!(
            super::nbd_backing(&"10.0.0.2".parse().unwrap(), 10809, "img"),
            r#"{"file":{"driver":"nbd","export":"img","server":{"host":"10.0.0.2","port":"10809","type":"inet"}}}"#
        );
    }
}
