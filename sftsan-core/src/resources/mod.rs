//! Typed resources: each knows how to create, tear down and observe itself.
//!
//! The engine calls `observe` first: an absent resource is created, a present one with the
//! same parameters is left alone ("unchanged"), a present one with other parameters is an
//! error naming the difference, and a partial one is torn down and created again.
//! Tearing down an absent resource does nothing.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::sync::Arc;

use crate::backends::kernel::blockdev::BlockStore;
use crate::backends::kernel::dm_devices::{
    DmCache, DmClone, DmLinear, DmSnapshot, ThinPool, ThinVolume,
};
use crate::backends::kernel::initiator::IscsiSession;
use crate::backends::kernel::lio::LioTarget;
use crate::backends::kernel::loopback::LoopFile;
use crate::backends::userspace::{
    Cache, Daemon, Keeper, OriginExport, OriginTarget, RelayExport, Snapshot, Upstream,
};
use crate::local::{Bridge, Namespace, SubnetGuard};
use crate::transport::Transport;

/// The parameters that identify a resource, as (name, value) pairs in a fixed order.
pub type Params = Vec<(&'static str, String)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    Absent,
    Present(Params),
    /// Some of it exists, but not in a state that can be used or adopted.
    Partial(String),
}

pub use crate::error::{Error, Result};

/// External programs resources run, resolved once.
#[derive(Debug, Clone)]
pub struct Tools {
    pub storage_daemon: PathBuf,
    pub qemu_img: PathBuf,
    pub ip: PathBuf,
    /// iproute2's `tc`, which shapes local-mode links (`local.link_mbit`).
    pub tc: PathBuf,
    /// The `sftsan` executable, which hosts the cache keeper (`sftsan keeper`).
    pub sftsan: PathBuf,
}

impl Tools {
    /// Programs from PATH; `sftsan` from $SFTSAN_BIN, else this executable's directory.
    pub fn from_env() -> Tools {
        let sftsan = std::env::var_os("SFTSAN_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                let dir = exe.parent()?;
                let here = dir.join("sftsan");
                let up = dir.parent()?.join("sftsan"); // test binaries live in target/*/deps
                [here, up].into_iter().find(|p| p.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("sftsan"));
        Tools {
            storage_daemon: "qemu-storage-daemon".into(),
            qemu_img: "qemu-img".into(),
            ip: "ip".into(),
            tc: "tc".into(),
            sftsan,
        }
    }

    pub fn program(path: &std::path::Path) -> &str {
        path.to_str().unwrap_or("")
    }
}

/// What a resource operation needs: where its node's commands run, and which programs.
#[derive(Clone, Debug)]
pub struct Ctx {
    pub transport: Arc<dyn Transport>,
    pub tools: Arc<Tools>,
}

pub trait Resource {
    /// The parameters this resource is asked to have.
    fn desired(&self) -> Params;
    fn observe(&self, ctx: &Ctx) -> Result<Observed>;
    fn create(&self, ctx: &Ctx) -> Result<()>;
    fn teardown(&self, ctx: &Ctx) -> Result<()>;

    /// Makes again a resource the journal says was made but whose system objects are gone
    /// (after a reboot), keeping what its local stores hold: a cache's blocks, a VM's
    /// writes. Resources that hold nothing of their own are simply created.
    fn revive(&self, ctx: &Ctx) -> Result<()> {
        self.create(ctx)
    }

    /// Facts of the running resource worth recording in the journal (pids, sockets).
    fn runtime(&self) -> Params {
        vec![]
    }
}

/// Every kind of resource sftsan manages, with the parameters it was planned with.
/// Stored in the journal, so teardown needs nothing but the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ResourceSpec {
    SubnetGuard(SubnetGuard),
    Bridge(Bridge),
    Namespace(Namespace),
    Daemon(Daemon),
    OriginExport(OriginExport),
    OriginTarget(OriginTarget),
    Upstream(Upstream),
    Cache(Cache),
    RelayExport(RelayExport),
    Keeper(Keeper),
    Snapshot(Snapshot),
    IscsiSession(IscsiSession),
    LoopFile(LoopFile),
    BlockStore(BlockStore),
    DmCache(DmCache),
    DmClone(DmClone),
    DmLinear(DmLinear),
    LioTarget(LioTarget),
    DmSnapshot(DmSnapshot),
    ThinPool(ThinPool),
    ThinVolume(ThinVolume),
}

impl ResourceSpec {
    pub fn as_resource(&self) -> &dyn Resource {
        match self {
            ResourceSpec::SubnetGuard(r) => r,
            ResourceSpec::Bridge(r) => r,
            ResourceSpec::Namespace(r) => r,
            ResourceSpec::Daemon(r) => r,
            ResourceSpec::OriginExport(r) => r,
            ResourceSpec::OriginTarget(r) => r,
            ResourceSpec::Upstream(r) => r,
            ResourceSpec::Cache(r) => r,
            ResourceSpec::RelayExport(r) => r,
            ResourceSpec::Keeper(r) => r,
            ResourceSpec::Snapshot(r) => r,
            ResourceSpec::IscsiSession(r) => r,
            ResourceSpec::LoopFile(r) => r,
            ResourceSpec::BlockStore(r) => r,
            ResourceSpec::DmCache(r) => r,
            ResourceSpec::DmClone(r) => r,
            ResourceSpec::DmLinear(r) => r,
            ResourceSpec::LioTarget(r) => r,
            ResourceSpec::DmSnapshot(r) => r,
            ResourceSpec::ThinPool(r) => r,
            ResourceSpec::ThinVolume(r) => r,
        }
    }

    /// Whether its commands run in the node's network context (not the root namespace).
    pub fn runs_on_node(&self) -> bool {
        !matches!(
            self,
            ResourceSpec::SubnetGuard(_) | ResourceSpec::Bridge(_) | ResourceSpec::Namespace(_)
        )
    }

    /// The kind as spelled in the journal and in `SFTSAN_TEST_KILL_AFTER`.
    pub fn kind(&self) -> &'static str {
        match self {
            ResourceSpec::SubnetGuard(_) => "subnet-guard",
            ResourceSpec::Bridge(_) => "bridge",
            ResourceSpec::Namespace(_) => "namespace",
            ResourceSpec::Daemon(_) => "daemon",
            ResourceSpec::OriginExport(_) => "origin-export",
            ResourceSpec::OriginTarget(_) => "origin-target",
            ResourceSpec::Upstream(_) => "upstream",
            ResourceSpec::Cache(_) => "cache",
            ResourceSpec::RelayExport(_) => "relay-export",
            ResourceSpec::Keeper(_) => "keeper",
            ResourceSpec::Snapshot(_) => "snapshot",
            ResourceSpec::IscsiSession(_) => "iscsi-session",
            ResourceSpec::LoopFile(_) => "loop-file",
            ResourceSpec::BlockStore(_) => "block-device",
            ResourceSpec::DmCache(_) => "dm-cache",
            ResourceSpec::DmClone(_) => "dm-clone",
            ResourceSpec::DmLinear(_) => "dm-linear",
            ResourceSpec::LioTarget(_) => "lio-target",
            ResourceSpec::DmSnapshot(_) => "dm-snapshot",
            ResourceSpec::ThinPool(_) => "thin-pool",
            ResourceSpec::ThinVolume(_) => "thin-volume",
        }
    }

    /// The kernel backend's kinds, in the order a node's stack is built.
    pub const KERNEL_KINDS: [&'static str; 10] = [
        "iscsi-session",
        "loop-file",
        "block-device",
        "dm-cache",
        "dm-clone",
        "dm-linear",
        "lio-target",
        "dm-snapshot",
        "thin-pool",
        "thin-volume",
    ];

    /// The userspace backend's kinds (and local mode's), in the order a node's stack is
    /// built.
    pub const KINDS: [&'static str; 11] = [
        "subnet-guard",
        "bridge",
        "namespace",
        "daemon",
        "origin-export",
        "origin-target",
        "upstream",
        "cache",
        "relay-export",
        "keeper",
        "snapshot",
    ];

    /// A stable identifier: `<node>/<kind>` or `<node>/snapshot/<n>`, `cluster/<kind>`.
    pub fn id(&self, node: Option<&str>) -> String {
        let owner = node.unwrap_or("cluster");
        match self {
            ResourceSpec::Snapshot(s) => format!("{owner}/snapshot/{}", s.index),
            ResourceSpec::DmSnapshot(s) => format!("{owner}/dm-snapshot/{}", s.index),
            ResourceSpec::ThinVolume(s) => format!("{owner}/thin-volume/{}", s.index),
            // A node has several loop-backed files: the file names them.
            ResourceSpec::LoopFile(l) => format!(
                "{owner}/loop-file/{}",
                l.file.file_name().unwrap_or_default().to_string_lossy()
            ),
            ResourceSpec::BlockStore(b) => format!("{owner}/block-device/{}", b.role),
            other => format!("{owner}/{}", other.kind()),
        }
    }
}

/// The first parameter that differs between what is there and what is wanted.
pub fn first_difference(have: &Params, want: &Params) -> Option<(&'static str, String, String)> {
    want.iter().find_map(|(name, w)| {
        let h = have.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        match h {
            Some(h) if &h == w => None,
            h => Some((*name, h.unwrap_or_else(|| "(none)".into()), w.clone())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_names_the_field() {
        let want = vec![("port", "10809".to_string()), ("host", "a".to_string())];
        let have = vec![("port", "10809".to_string()), ("host", "b".to_string())];
        assert_eq!(
            first_difference(&have, &want),
            Some(("host", "b".to_string(), "a".to_string()))
        );
        assert_eq!(first_difference(&want, &want), None);
        assert_eq!(first_difference(&vec![], &want).map(|d| d.0), Some("port"));
    }
}
