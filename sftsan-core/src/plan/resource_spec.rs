//! The concrete resources a plan is made of: one enum over every kind the backends offer,
//! with the parameters it was planned with. The engine journals these, so teardown needs
//! nothing but the journal.

use serde::{Deserialize, Serialize};

use crate::backends::kernel::blockdev::BlockStore;
use crate::backends::kernel::dm_devices::{
    DmCache, DmClone, DmLinear, DmSnapshot, ThinPool, ThinVolume,
};
use crate::backends::kernel::initiator::IscsiSession;
use crate::backends::kernel::lio::LioTarget;
use crate::backends::kernel::loopback::LoopFile;
use crate::backends::kernel::multipath::DmMultipath;
use crate::backends::tgt::TgtTarget;
use crate::backends::userspace::{
    Cache, Daemon, Keeper, OriginExport, RelayExport, Snapshot, TlsRelay, Upstream, UpstreamSwitch,
};
use crate::local::{Bridge, Namespace, SubnetGuard};
use crate::resources::Resource;

/// Every kind of resource sftsan manages, with the parameters it was planned with.
/// Stored in the journal, so teardown needs nothing but the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ResourceSpec {
    /// Local mode: an `unreachable` route for the subnet that guards the root namespace.
    SubnetGuard(SubnetGuard),
    /// Local mode: the bridge every node's veth is attached to.
    Bridge(Bridge),
    /// Local mode: a node's network namespace with its veth and address.
    Namespace(Namespace),
    /// Userspace: a node's qemu-storage-daemon (QMP monitor and NBD server).
    Daemon(Daemon),
    /// Userspace: the origin's read-only NBD export of the image.
    OriginExport(OriginExport),
    /// The origin's private tgtd serving the image as one read-only iSCSI LUN (userspace
    /// `origin.protocol = "iscsi"`, or the kernel backend with `kernel.relay = "tgt"`).
    OriginTarget(TgtTarget),
    /// Userspace: the process a node's daemon reads its upstream through, which fails over
    /// from the parent to the grandparent, ..., the origin.
    UpstreamSwitch(UpstreamSwitch),
    /// Userspace: a node's read-only attachment to its parent's export.
    Upstream(Upstream),
    /// Userspace: a node's qcow2 cache, filled by copy-on-read from the upstream.
    Cache(Cache),
    /// Userspace: a node's NBD export of its cached image, for children and VMs.
    RelayExport(RelayExport),
    /// Userspace, remote mode: a node's TLS-PSK export for its children on its data address.
    TlsRelay(TlsRelay),
    /// Userspace: the keeper process that flushes a node's cache so fetched blocks survive a crash.
    Keeper(Keeper),
    /// Userspace: a VM disk, a qcow2 overlay backed by the node's relay export.
    Snapshot(Snapshot),
    /// Kernel: an open-iscsi session from a node to its parent's target.
    IscsiSession(IscsiSession),
    /// Kernel: a node's standby session to its grandparent's target, logged in ahead of
    /// time as its upstream's second path.
    IscsiStandby(IscsiSession),
    /// Kernel: a node's upstream, dm-multipath over its sessions' disks (queue_if_no_path).
    DmMultipath(DmMultipath),
    /// Kernel: a file attached to a loop device, as one of a node's stores.
    LoopFile(LoopFile),
    /// Kernel: a block device from the spec, taken over as one of a node's stores.
    BlockStore(BlockStore),
    /// Kernel: dm-cache keeping a node's reads of the upstream disk on a local store.
    DmCache(DmCache),
    /// Kernel: dm-clone copying the whole image from the upstream disk to a local store.
    DmClone(DmClone),
    /// Kernel: a dm-linear view of another device (e.g. the cache, for LIO to export).
    DmLinear(DmLinear),
    /// Kernel: an iSCSI target in LIO that serves a node's image to its children.
    LioTarget(LioTarget),
    /// Kernel: a node's private tgtd serving its cached image to its children
    /// (`kernel.relay = "tgt"`).
    TgtRelay(TgtTarget),
    /// Kernel: a VM disk as a persistent dm-snapshot with its own COW store.
    DmSnapshot(DmSnapshot),
    /// Kernel: a node's thin pool that holds its VMs' thin volumes.
    ThinPool(ThinPool),
    /// Kernel: a VM disk as a thin volume over the cached image as external origin.
    ThinVolume(ThinVolume),
}

impl ResourceSpec {
    /// The resource itself, for the engine to observe, create, revive or tear down.
    pub fn as_resource(&self) -> &dyn Resource {
        match self {
            ResourceSpec::SubnetGuard(r) => r,
            ResourceSpec::Bridge(r) => r,
            ResourceSpec::Namespace(r) => r,
            ResourceSpec::Daemon(r) => r,
            ResourceSpec::OriginExport(r) => r,
            ResourceSpec::OriginTarget(r) => r,
            ResourceSpec::UpstreamSwitch(r) => r,
            ResourceSpec::Upstream(r) => r,
            ResourceSpec::Cache(r) => r,
            ResourceSpec::RelayExport(r) => r,
            ResourceSpec::TlsRelay(r) => r,
            ResourceSpec::Keeper(r) => r,
            ResourceSpec::Snapshot(r) => r,
            ResourceSpec::IscsiSession(r) => r,
            ResourceSpec::IscsiStandby(r) => r,
            ResourceSpec::DmMultipath(r) => r,
            ResourceSpec::LoopFile(r) => r,
            ResourceSpec::BlockStore(r) => r,
            ResourceSpec::DmCache(r) => r,
            ResourceSpec::DmClone(r) => r,
            ResourceSpec::DmLinear(r) => r,
            ResourceSpec::LioTarget(r) => r,
            ResourceSpec::TgtRelay(r) => r,
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
            ResourceSpec::UpstreamSwitch(_) => "upstream-switch",
            ResourceSpec::Upstream(_) => "upstream",
            ResourceSpec::Cache(_) => "cache",
            ResourceSpec::RelayExport(_) => "relay-export",
            ResourceSpec::TlsRelay(_) => "tls-relay",
            ResourceSpec::Keeper(_) => "keeper",
            ResourceSpec::Snapshot(_) => "snapshot",
            ResourceSpec::IscsiSession(_) => "iscsi-session",
            ResourceSpec::IscsiStandby(_) => "iscsi-standby",
            ResourceSpec::DmMultipath(_) => "dm-multipath",
            ResourceSpec::LoopFile(_) => "loop-file",
            ResourceSpec::BlockStore(_) => "block-device",
            ResourceSpec::DmCache(_) => "dm-cache",
            ResourceSpec::DmClone(_) => "dm-clone",
            ResourceSpec::DmLinear(_) => "dm-linear",
            ResourceSpec::LioTarget(_) => "lio-target",
            ResourceSpec::TgtRelay(_) => "tgt-relay",
            ResourceSpec::DmSnapshot(_) => "dm-snapshot",
            ResourceSpec::ThinPool(_) => "thin-pool",
            ResourceSpec::ThinVolume(_) => "thin-volume",
        }
    }

    /// The kernel backend's kinds, in the order a node's stack is built.
    pub const KERNEL_KINDS: [&'static str; 13] = [
        "iscsi-session",
        "iscsi-standby",
        "dm-multipath",
        "loop-file",
        "block-device",
        "dm-cache",
        "dm-clone",
        "dm-linear",
        "lio-target",
        "tgt-relay",
        "dm-snapshot",
        "thin-pool",
        "thin-volume",
    ];

    /// The userspace backend's kinds (and local mode's), in the order a node's stack is
    /// built; remote mode adds `tls-relay` after `relay-export`.
    pub const KINDS: [&'static str; 12] = [
        "subnet-guard",
        "bridge",
        "namespace",
        "daemon",
        "origin-export",
        "origin-target",
        "upstream-switch",
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
