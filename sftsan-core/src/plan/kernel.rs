//! A kernel-backend node's stack. The origin exports its image as an LIO target; every
//! node logs in to its parent's target (and, below the first level, to its grandparent's as
//! a standby), reads them as one dm-multipath device, caches that with dm-cache or dm-clone
//! over loop-backed files or block devices the spec names, relays the cache as its own LIO
//! target, and gives each VM a persistent dm-snapshot or a thin volume with the cache as
//! external origin. Only the node's children and grandchildren may log in, with the
//! cluster's CHAP credentials.
//!
//! Failover: the parent's session gives up after [`FAILOVER_REPLACEMENT_S`], the kernel then
//! fails that path and resubmits the I/O to the grandparent's path, logged in ahead of
//! time; a last path never gives up (its I/O waits for the session to come back), and
//! `queue_if_no_path` keeps whatever finds no path queued rather than failed.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::backends::kernel::blockdev::BlockStore;
use crate::backends::kernel::devref::DevRef;
use crate::backends::kernel::dm_devices::{
    DmCache, DmClone, DmLinear, DmSnapshot, ThinPool, ThinVolume,
};
use crate::backends::kernel::initiator::{Chap, IscsiSession};
use crate::backends::kernel::lio::{Acl, Backing, LioTarget};
use crate::backends::kernel::loopback::LoopFile;
use crate::backends::kernel::multipath::DmMultipath;
use crate::backends::tgt::TgtTarget;
use crate::names::Names;
use crate::plan::ResourceSpec;
use crate::spec::{ClusterSpec, KernelCache, KernelSpec, NodeDevices, RelayTarget, SnapshotKind};
use crate::topology::Tree;
use devicemapper::Sectors;

/// dm-cache, dm-clone region and thin-pool block size: 64 KiB.
const BLOCK_SECTORS: Sectors = Sectors(128);
/// dm-snapshot chunk: 4 KiB.
const CHUNK_SECTORS: Sectors = Sectors(8);
/// COW store of the never-written upstream view.
const UPSTREAM_COW: u64 = 1 << 20;

/// Seconds the parent's session waits to be re-established before its I/O moves to the
/// standby path: long enough for a connection blip, short enough to re-parent within 5 s.
pub const FAILOVER_REPLACEMENT_S: i32 = 3;
/// A path with nothing behind it never gives up: its I/O waits until the session logs back
/// in (a parent's restart costs a stall, not an error), as dm-multipath without multipathd
/// would never reinstate a path it failed.
pub const LAST_PATH_REPLACEMENT_S: i32 = -1;

/// Smallest COW device of a VM's dm-snapshot: its header and a few chunks. What a VM can
/// write is bounded by its COW device, as with LVM snapshots.
const COW_DEVICE_MIN: u64 = 1 << 20;
/// Smallest thin pool data and metadata devices the spec may name.
const THIN_DATA_MIN: u64 = 1 << 20;
const THIN_METADATA_MIN: u64 = 2 << 20;

/// Metadata room for dm-cache, dm-clone or a thin pool over `size` bytes of data: 8 MiB plus
/// generous room per 64 KiB block.
fn metadata_size(size: u64) -> u64 {
    (8 << 20) + (size / 65536) * 64
}

/// Where one node keeps its stores: loop-backed files in its directory, or the block
/// devices its spec entry names.
#[derive(Debug, Clone)]
pub struct Stores {
    names: Names,
    node: String,
    /// `nodes[i].devices`, for errors about a device.
    field: String,
    devices: NodeDevices,
    /// The image the stores' content belongs to.
    identity: String,
}

impl Stores {
    /// The stores of `spec.nodes[position]`.
    pub fn new(spec: &ClusterSpec, names: &Names, position: usize, identity: &str) -> Stores {
        let node = &spec.nodes[position];
        Stores {
            names: names.clone(),
            node: node.name.clone(),
            field: format!("nodes[{position}].devices"),
            devices: node.devices.clone(),
            identity: identity.into(),
        }
    }

    /// The resource making store `file` (a loop-backed file of `bytes`, or the device named
    /// by `device`: (its field, its path), of at least `bytes`) and how dm tables name it.
    fn store(
        &self,
        file: &str,
        device: Option<(String, &Path)>,
        bytes: u64,
    ) -> (ResourceSpec, DevRef) {
        let Some((field, path)) = device else {
            let file = self.names.node_file(&self.node, file);
            let made = ResourceSpec::LoopFile(LoopFile {
                node: self.node.clone(),
                file: file.clone(),
                size: bytes,
                identity: self.identity.clone(),
            });
            return (made, DevRef::Loop { file });
        };
        let role = file.trim_end_matches(".img");
        let name = self.names.dm_name(&self.node, &format!("dev-{role}"));
        let made = ResourceSpec::BlockStore(BlockStore {
            node: self.node.clone(),
            role: role.into(),
            field: format!("{}.{field}", self.field),
            device: path.into(),
            name: name.clone(),
            min_bytes: bytes,
            identity: self.identity.clone(),
            identity_file: self
                .names
                .node_file(&self.node, &format!("dev-{role}.identity")),
        });
        (made, DevRef::Dm { name })
    }

    /// The cache's data and metadata stores (dm-cache's cache and metadata devices, or
    /// dm-clone's destination and metadata), named by `kind`'s files.
    fn cache(&self, kind: &str, size: u64) -> [(ResourceSpec, DevRef); 2] {
        let d = &self.devices;
        [
            self.store(
                &format!("{kind}.img"),
                NodeDevices::field("cache", &d.cache),
                size,
            ),
            self.store(
                &format!("{kind}-meta.img"),
                NodeDevices::field("cache_metadata", &d.cache_metadata),
                metadata_size(size),
            ),
        ]
    }

    /// The thin pool's metadata and data stores; the data holds `data` bytes as a file.
    fn thin_pool(&self, data: u64) -> [(ResourceSpec, DevRef); 2] {
        let d = &self.devices;
        let metadata = match d.thin_metadata {
            Some(_) => THIN_METADATA_MIN,
            None => metadata_size(data),
        };
        [
            self.store(
                "pool-meta.img",
                NodeDevices::field("thin_metadata", &d.thin_metadata),
                metadata,
            ),
            self.store(
                "pool-data.img",
                NodeDevices::field("thin_data", &d.thin_data),
                if d.thin_data.is_some() {
                    THIN_DATA_MIN
                } else {
                    data
                },
            ),
        ]
    }

    /// VM disk `index`'s COW store: the spec's `cow[index - 1]`, else a sparse file as
    /// large as the image (it grows only as large as what its VM writes).
    fn cow(&self, index: u32, size: u64) -> (ResourceSpec, DevRef) {
        let i = index as usize - 1;
        match self.devices.cow.get(i) {
            Some(path) => self.store(
                &format!("cow-{index}.img"),
                Some((format!("cow[{i}]"), path)),
                COW_DEVICE_MIN,
            ),
            None => self.store(&format!("cow-{index}.img"), None, size),
        }
    }
}

/// The stack of the node at tree position `index` (1 is the origin); `stores` is None
/// only for the origin.
#[allow(clippy::too_many_arguments)]
pub fn stack(
    spec: &ClusterSpec,
    kernel: &KernelSpec,
    names: &Names,
    tree: &Tree,
    all: &[(String, IpAddr)],
    index: usize,
    size: u64,
    stores: Option<&Stores>,
) -> Vec<ResourceSpec> {
    let (name, address) = &all[index - 1];
    let chap = Chap {
        username: kernel.chap_user.clone(),
        password: kernel.chap_secret.clone(),
    };
    // Children log in as their upstream; grandchildren as their standby path.
    let acls: Vec<Acl> = tree
        .children(index)
        .into_iter()
        .flat_map(|c| std::iter::once(c).chain(tree.children(c)))
        .map(|c| Acl {
            initiator: names.initiator_iqn(&all[c - 1].0),
            chap: Some(chap.clone()),
        })
        .collect();
    let tgt = kernel.relay == RelayTarget::Tgt;
    let initiators: Vec<String> = acls.iter().map(|a: &Acl| a.initiator.clone()).collect();
    // A node's target: LIO by default, or a private tgtd (`kernel.relay = "tgt"`).
    let target = |backing: Backing| {
        if !tgt {
            return ResourceSpec::LioTarget(LioTarget {
                node: name.clone(),
                iqn: names.node_target_iqn(name),
                backstore: names.backstore(name),
                backing,
                portal: SocketAddr::new(*address, kernel.iscsi_port),
                acls: acls.clone(),
                open_access: kernel.open_access,
            });
        }
        let (source, source_dm) = match backing {
            Backing::File { path, .. } | Backing::Block { path } => (path, None),
            Backing::Dm { name } => (PathBuf::from(format!("dm:{name}")), Some(name)),
        };
        let target = TgtTarget {
            node: name.clone(),
            run_dir: names.run_dir(name),
            address: *address,
            port: kernel.iscsi_port,
            control_port: names.tgt_node_control_port(index),
            iqn: names.node_target_iqn(name),
            source,
            initiators: initiators.clone(),
            chap: Some(chap.clone()),
            source_dm,
        };
        // The origin's target and a relay are different steps of a stack: each has its
        // own kind in the journal and in status.
        match tree.parent(index) {
            None => ResourceSpec::OriginTarget(target),
            Some(_) => ResourceSpec::TgtRelay(target),
        }
    };
    let Some(parent) = tree.parent(index) else {
        let image = Backing::File {
            path: spec.image.source.clone(),
            size,
        };
        return vec![target(image)];
    };
    let stores = stores.expect("a node's stack needs its stores");
    let sectors = Sectors(size / 512);
    let standby_of = tree.parent(parent);
    let session_to = |upstream: usize, replacement_timeout_s: i32| {
        let (upstream_name, upstream_address) = &all[upstream - 1];
        IscsiSession {
            node: name.clone(),
            parent: upstream_name.clone(),
            portal: SocketAddr::new(*upstream_address, kernel.iscsi_port),
            target: names.node_target_iqn(upstream_name),
            // tgt's LUN 0 is its controller; LIO exports the disk as LUN 0.
            lun: if tgt { 1 } else { 0 },
            initiator: names.initiator_iqn(name),
            chap: Some(chap.clone()),
            size,
            timeout_ms: spec.cluster.connect_timeout_ms,
            replacement_timeout_s,
        }
    };
    let session = session_to(
        parent,
        match standby_of {
            Some(_) => FAILOVER_REPLACEMENT_S,
            None => LAST_PATH_REPLACEMENT_S,
        },
    );
    let standby = standby_of.map(|g| session_to(g, LAST_PATH_REPLACEMENT_S));
    let path = |s: &IscsiSession| DevRef::Iscsi {
        session: Box::new(s.clone()),
    };
    let mpath_name = names.dm_name(name, "mpath");
    let upstream = DevRef::Dm {
        name: mpath_name.clone(),
    };
    let cache_name = names.dm_name(name, "cache");
    let cache = DevRef::Dm {
        name: cache_name.clone(),
    };
    let mut stack = vec![ResourceSpec::IscsiSession(session.clone())];
    stack.extend(standby.clone().map(ResourceSpec::IscsiStandby));
    stack.push(ResourceSpec::DmMultipath(DmMultipath {
        node: name.clone(),
        name: mpath_name,
        paths: std::iter::once(&session)
            .chain(standby.as_ref())
            .map(path)
            .collect(),
        sectors,
    }));
    match kernel.cache {
        KernelCache::DmCache => {
            // dm-cache opens its origin read-write, but the upstream is read-only. A
            // transient dm-snapshot opens its origin read-only and is writable itself:
            // dm-cache builds on that view. Nothing writes to it (VMs write to their own
            // disks, children cannot write), so its small COW store stays empty.
            let upstream_name = names.dm_name(name, "upstream");
            let (upstream_cow, upstream_cow_dev) =
                stores.store("upstream-cow.img", None, UPSTREAM_COW);
            let [(cache_store, cache_dev), (meta_store, meta_dev)] = stores.cache("cache", size);
            stack.extend([
                upstream_cow,
                ResourceSpec::DmSnapshot(DmSnapshot {
                    node: name.clone(),
                    index: 0,
                    name: upstream_name.clone(),
                    origin: upstream,
                    cow: upstream_cow_dev,
                    sectors,
                    chunk_sectors: CHUNK_SECTORS,
                    persistent: false,
                }),
                cache_store,
                meta_store,
                ResourceSpec::DmCache(DmCache {
                    node: name.clone(),
                    name: cache_name.clone(),
                    origin: DevRef::Dm {
                        name: upstream_name,
                    },
                    cache: cache_dev,
                    metadata: meta_dev,
                    sectors,
                    block_sectors: BLOCK_SECTORS,
                }),
            ]);
        }
        // dm-clone opens its source read-only: it builds on the upstream itself.
        KernelCache::DmClone => {
            let [(copy_store, copy_dev), (meta_store, meta_dev)] = stores.cache("clone", size);
            stack.extend([
                copy_store,
                meta_store,
                ResourceSpec::DmClone(DmClone {
                    node: name.clone(),
                    name: cache_name.clone(),
                    source: upstream,
                    destination: copy_dev,
                    metadata: meta_dev,
                    sectors,
                    region_sectors: BLOCK_SECTORS,
                }),
            ])
        }
    }
    stack.extend([
        ResourceSpec::DmLinear(DmLinear {
            node: name.clone(),
            name: names.dm_name(name, "relay"),
            origin: cache.clone(),
            sectors,
        }),
        target(Backing::Dm {
            name: names.dm_name(name, "relay"),
        }),
    ]);
    let per_node = spec.snapshots.per_node;
    match spec.snapshots.kind {
        SnapshotKind::DmThin => {
            let pool = names.dm_name(name, "pool");
            let data = size * u64::from(per_node.max(1));
            let [(meta_store, meta_dev), (data_store, data_dev)] = stores.thin_pool(data);
            // A pool on a named device spans the whole device.
            let on_device = matches!(data_store, ResourceSpec::BlockStore(_));
            stack.extend([
                meta_store,
                data_store,
                ResourceSpec::ThinPool(ThinPool {
                    node: name.clone(),
                    name: pool.clone(),
                    metadata: meta_dev,
                    data: data_dev,
                    sectors: (!on_device).then_some(Sectors(data / 512)),
                    block_sectors: BLOCK_SECTORS,
                }),
            ]);
            for i in 1..=per_node {
                stack.extend(vm_disk(stores, SnapshotKind::DmThin, i, size));
            }
        }
        _ => {
            for i in 1..=per_node {
                stack.extend(vm_disk(stores, SnapshotKind::DmSnapshot, i, size));
            }
        }
    }
    stack
}

/// The dm device name of VM disk `index` on `node`.
pub fn vm_disk_name(names: &Names, kind: SnapshotKind, node: &str, index: u32) -> String {
    match kind {
        SnapshotKind::DmThin => names.dm_name(node, &format!("thin-{index}")),
        _ => names.dm_name(node, &format!("snap-{index}")),
    }
}

/// The resources making VM disk `index` on `node`, in creation order: a persistent
/// dm-snapshot of the node's cache with its (sparse) COW file, or a thin volume in the
/// node's pool with the cache as external origin.
pub fn vm_disk(stores: &Stores, kind: SnapshotKind, index: u32, size: u64) -> Vec<ResourceSpec> {
    let (names, node) = (&stores.names, stores.node.as_str());
    let cache = DevRef::Dm {
        name: names.dm_name(node, "cache"),
    };
    let name = vm_disk_name(names, kind, node, index);
    match kind {
        SnapshotKind::DmThin => vec![ResourceSpec::ThinVolume(ThinVolume {
            node: node.into(),
            index,
            name,
            pool: names.dm_name(node, "pool"),
            thin_id: index,
            origin: cache,
            sectors: Sectors(size / 512),
        })],
        _ => {
            let (cow_store, cow) = stores.cow(index, size);
            vec![
                cow_store,
                ResourceSpec::DmSnapshot(DmSnapshot {
                    node: node.into(),
                    index,
                    name,
                    origin: cache,
                    cow,
                    sectors: Sectors(size / 512),
                    chunk_sectors: CHUNK_SECTORS,
                    persistent: true,
                }),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use devicemapper::Sectors;

    use crate::plan::plan;
    use crate::plan::ResourceSpec;
    use crate::spec::{validate, ClusterSpec};

    fn kernel_plan(kind: &str) -> (crate::plan::Plan, tempfile::NamedTempFile) {
        kernel_plan_with(kind, "dm-cache")
    }

    fn kernel_plan_with(kind: &str, cache: &str) -> (crate::plan::Plan, tempfile::NamedTempFile) {
        kernel_plan_devices(kind, cache, "")
    }

    /// `devices`: the text of n1's `devices = { ... }` table, or "".
    fn kernel_plan_devices(
        kind: &str,
        cache: &str,
        devices: &str,
    ) -> (crate::plan::Plan, tempfile::NamedTempFile) {
        kernel_plan_relay(kind, cache, devices, "lio")
    }

    fn kernel_plan_relay(
        kind: &str,
        cache: &str,
        devices: &str,
        relay: &str,
    ) -> (crate::plan::Plan, tempfile::NamedTempFile) {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(1 << 20).unwrap();
        let text = format!(
            r#"
            [cluster]
            name = "kc"
            state_dir = "/var/lib/sftsan/kc"
            backend = "kernel"
            degree = 2
            [image]
            name = "base"
            source = "{}"
            [origin]
            address = "127.0.0.1"
            [[nodes]]
            name = "n1"
            address = "127.0.0.2"
            {devices}
            [cache]
            size = "8MiB"
            [snapshots]
            per_node = 2
            kind = "{kind}"
            [kernel]
            cache = "{cache}"
            relay = "{relay}"
            chap_user = "sftsan"
            chap_secret = "a-long-secret"
            "#,
            image.path().display()
        );
        (
            plan(&validate(ClusterSpec::from_toml(&text).unwrap()).unwrap()),
            image,
        )
    }

    /// (id, dm table reference) of every store of n1, in stack order.
    fn stores_of(p: &crate::plan::Plan) -> Vec<String> {
        p.node("n1")
            .unwrap()
            .stack
            .iter()
            .filter_map(|r| match r {
                ResourceSpec::LoopFile(l) => Some(format!(
                    "{} {}",
                    r.id(Some("n1")),
                    l.file.file_name().unwrap().to_string_lossy()
                )),
                ResourceSpec::BlockStore(b) => Some(format!(
                    "{} {} {} {} >= {}",
                    r.id(Some("n1")),
                    b.field,
                    b.device.display(),
                    b.name,
                    b.min_bytes
                )),
                _ => None,
            })
            .collect()
    }

    /// The origin's tgtd and a node's tgtd relay are different steps: each has its own kind
    /// (and id), in the journal and in status.
    #[test]
    fn tgt_targets_are_the_origins_or_a_relay() {
        let (p, _image) = kernel_plan_relay("dm-snapshot", "dm-cache", "", "tgt");
        let kinds = |node: &str| -> Vec<&str> {
            let stack = &p.node(node).unwrap().stack;
            stack.iter().map(|r| r.kind()).collect()
        };
        assert_eq!(kinds("origin"), vec!["origin-target"]);
        let n1 = kinds("n1");
        assert!(n1.contains(&"tgt-relay"), "{n1:?}");
        assert!(!n1.contains(&"origin-target"), "{n1:?}");
        assert!(!n1.contains(&"lio-target"), "{n1:?}");
    }

    #[test]
    fn named_devices_replace_loop_files_store_by_store() {
        let (p, _image) = kernel_plan_devices(
            "dm-snapshot",
            "dm-cache",
            r#"devices = { cache = "/dev/vg/c", cow = ["/dev/vg/cow1"] }"#,
        );
        assert_eq!(
            stores_of(&p),
            [
                "n1/loop-file/base.upstream-cow.img base.upstream-cow.img".to_string(),
                format!(
                    "n1/block-device/cache nodes[0].devices.cache /dev/vg/c sftsan-kc-n1-dev-cache >= {}",
                    1 << 20
                ),
                "n1/loop-file/base.cache-meta.img base.cache-meta.img".into(),
                "n1/block-device/cow-1 nodes[0].devices.cow[0] /dev/vg/cow1 sftsan-kc-n1-dev-cow-1 >= 1048576".into(),
                "n1/loop-file/base.cow-2.img base.cow-2.img".into(),
            ]
        );
        let cache = p.node("n1").unwrap().stack.iter().find_map(|r| match r {
            ResourceSpec::DmCache(c) => Some(c.clone()),
            _ => None,
        });
        let cache = cache.unwrap();
        assert_eq!(
            serde_json::to_value(&cache.cache).unwrap(),
            serde_json::json!({"type": "dm", "name": "sftsan-kc-n1-dev-cache"})
        );
        // An on-demand disk beyond the list gets a file; one within it its device.
        let disk = p.vm_disk("n1", 1).unwrap();
        assert!(matches!(&disk[0], ResourceSpec::BlockStore(b) if b.role == "cow-1"));
        let disk = p.vm_disk("n1", 5).unwrap();
        assert!(matches!(&disk[0], ResourceSpec::LoopFile(_)));
    }

    #[test]
    fn a_thin_pool_on_a_named_device_spans_it() {
        let (p, _image) = kernel_plan_devices(
            "dm-thin",
            "dm-clone",
            r#"devices = { thin_data = "/dev/vg/data", thin_metadata = "/dev/vg/meta", cache_metadata = "/dev/vg/cm" }"#,
        );
        let stores = stores_of(&p);
        assert_eq!(stores.len(), 4, "{stores:?}");
        assert!(stores[0].ends_with("base.clone.img"), "{stores:?}");
        assert!(
            stores[1].starts_with("n1/block-device/clone-meta nodes[0].devices.cache_metadata"),
            "{stores:?}"
        );
        assert!(
            stores[2].starts_with("n1/block-device/pool-meta nodes[0].devices.thin_metadata"),
            "{stores:?}"
        );
        assert!(
            stores[3].starts_with("n1/block-device/pool-data nodes[0].devices.thin_data"),
            "{stores:?}"
        );
        let pool = p.node("n1").unwrap().stack.iter().find_map(|r| match r {
            ResourceSpec::ThinPool(t) => Some(t.sectors),
            _ => None,
        });
        assert_eq!(pool, Some(None));
        let (p, _image) = kernel_plan("dm-thin");
        let pool = p.node("n1").unwrap().stack.iter().find_map(|r| match r {
            ResourceSpec::ThinPool(t) => Some(t.sectors),
            _ => None,
        });
        assert_eq!(pool, Some(Some(Sectors(2 * (1 << 20) / 512))));
    }

    #[test]
    fn every_store_carries_the_images_identity() {
        let (p, image) = kernel_plan("dm-snapshot");
        let want = crate::spec::image_identity(image.path(), 1 << 20);
        for r in &p.node("n1").unwrap().stack {
            if let ResourceSpec::LoopFile(l) = r {
                assert_eq!(l.identity, want, "{}", l.file.display());
            }
        }
    }

    #[test]
    fn an_on_demand_vm_disk_is_a_dm_device_like_the_planned_ones() {
        let (p, _image) = kernel_plan("dm-snapshot");
        let planned: Vec<String> = p
            .node("n1")
            .unwrap()
            .stack
            .iter()
            .map(|r| r.id(Some("n1")))
            .collect();
        assert!(
            planned.contains(&"n1/dm-snapshot/2".to_string()),
            "{planned:?}"
        );
        let disk = p.vm_disk("n1", 7).unwrap();
        assert!(
            matches!(disk.as_slice(), [ResourceSpec::LoopFile(_), ResourceSpec::DmSnapshot(s)] if s.index == 7)
        );
        assert_eq!(
            p.vm_disk_path("n1", 7).to_str(),
            Some("/dev/mapper/sftsan-kc-n1-snap-7")
        );
        assert!(p.vm_disk("origin", 1).is_none());
        assert!(p.vm_disk("n1", 0).is_none());

        let (p, _image) = kernel_plan("dm-thin");
        let disk = p.vm_disk("n1", 3).unwrap();
        assert!(matches!(disk.as_slice(), [ResourceSpec::ThinVolume(t)] if t.thin_id == 3));
        assert_eq!(
            p.vm_disk_path("n1", 3).to_str(),
            Some("/dev/mapper/sftsan-kc-n1-thin-3")
        );
    }

    #[test]
    fn a_dm_clone_cache_builds_on_the_parents_lun_and_needs_the_clone_target() {
        use crate::backends::kernel::devref::DevRef;
        use crate::backends::kernel::probe::Feature;
        let (p, _image) = kernel_plan_with("dm-snapshot", "dm-clone");
        let stack = &p.node("n1").unwrap().stack;
        let kinds: Vec<&str> = stack.iter().map(|r| r.kind()).collect();
        assert_eq!(
            kinds[..7],
            [
                "iscsi-session",
                "dm-multipath",
                "loop-file",
                "loop-file",
                "dm-clone",
                "dm-linear",
                "lio-target"
            ],
            "{kinds:?}"
        );
        let clone = stack
            .iter()
            .find_map(|r| match r {
                ResourceSpec::DmClone(c) => Some(c),
                _ => None,
            })
            .unwrap();
        assert_eq!(
            clone.source,
            DevRef::Dm {
                name: "sftsan-kc-n1-mpath".into()
            }
        );
        assert_eq!(clone.name, "sftsan-kc-n1-cache");
        assert_eq!(clone.sectors, Sectors((1 << 20) / 512));
        let wanted = p.kernel_features();
        assert!(wanted.contains(&Feature::DmTarget("clone")), "{wanted:?}");
        assert!(!wanted.contains(&Feature::DmTarget("cache")), "{wanted:?}");
        assert!(!wanted.contains(&Feature::DmTarget("thin")), "{wanted:?}");

        let (p, _image) = kernel_plan_with("dm-thin", "dm-cache");
        let wanted = p.kernel_features();
        for f in [
            Feature::DmTarget("cache"),
            Feature::DmTarget("snapshot"),
            Feature::DmTarget("thin-pool"),
            Feature::DmTarget("thin"),
            Feature::DmTarget("multipath"),
            Feature::IscsiInitiator,
            Feature::LioIscsiTarget,
            Feature::Loop,
        ] {
            assert!(wanted.contains(&f), "{f} missing from {wanted:?}");
        }
        assert!(!wanted.contains(&Feature::DmTarget("clone")), "{wanted:?}");
    }

    /// origin -> n1 -> n2 (degree 1) on `relay`.
    fn chain_plan(relay: &str) -> (crate::plan::Plan, tempfile::NamedTempFile) {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(1 << 20).unwrap();
        let text = format!(
            r#"
            [cluster]
            name = "kc"
            state_dir = "/var/lib/sftsan/kc"
            backend = "kernel"
            degree = 1
            [image]
            name = "base"
            source = "{}"
            [origin]
            address = "127.0.0.1"
            [[nodes]]
            name = "n1"
            address = "127.0.0.2"
            [[nodes]]
            name = "n2"
            address = "127.0.0.3"
            [cache]
            size = "8MiB"
            [snapshots]
            per_node = 1
            kind = "dm-snapshot"
            [kernel]
            relay = "{relay}"
            chap_user = "sftsan"
            chap_secret = "a-long-secret"
            "#,
            image.path().display()
        );
        (
            plan(&validate(ClusterSpec::from_toml(&text).unwrap()).unwrap()),
            image,
        )
    }

    /// A node below the first level reads its parent and, as a standby path group behind
    /// it, its grandparent, logged in ahead of time; the grandparent's target admits it.
    #[test]
    fn a_grandchild_reads_through_multipath_with_a_standby_to_its_grandparent() {
        use crate::backends::kernel::devref::DevRef;
        use crate::backends::kernel::initiator::IscsiSession;
        let (p, _image) = chain_plan("lio");
        let stack = |node: &str| p.node(node).unwrap().stack.clone();
        let sessions = |node: &str| -> Vec<IscsiSession> {
            stack(node)
                .into_iter()
                .filter_map(|r| match r {
                    ResourceSpec::IscsiSession(s) | ResourceSpec::IscsiStandby(s) => Some(s),
                    _ => None,
                })
                .collect()
        };
        let n2 = sessions("n2");
        let targets: Vec<(&str, i32)> = n2
            .iter()
            .map(|s| (s.target.as_str(), s.replacement_timeout_s))
            .collect();
        assert_eq!(
            targets,
            [
                (
                    "iqn.2014-12.org.sftsan:kc.n1.base",
                    super::FAILOVER_REPLACEMENT_S
                ),
                (
                    "iqn.2014-12.org.sftsan:kc.origin.base",
                    super::LAST_PATH_REPLACEMENT_S
                ),
            ]
        );
        let kinds: Vec<&str> = stack("n2").iter().map(|r| r.kind()).collect();
        assert_eq!(
            kinds[..3],
            ["iscsi-session", "iscsi-standby", "dm-multipath"]
        );
        let mpath = stack("n2")
            .into_iter()
            .find_map(|r| match r {
                ResourceSpec::DmMultipath(m) => Some(m),
                _ => None,
            })
            .unwrap();
        let paths: Vec<DevRef> = n2
            .iter()
            .map(|s| DevRef::Iscsi {
                session: Box::new(s.clone()),
            })
            .collect();
        assert_eq!(mpath.paths, paths, "the parent first, then the standby");
        assert_eq!(mpath.name, "sftsan-kc-n2-mpath");
        // The upstream view dm-cache builds on reads the multipath device.
        let view = stack("n2").into_iter().find_map(|r| match r {
            ResourceSpec::DmSnapshot(s) if s.index == 0 => Some(s.origin),
            _ => None,
        });
        assert_eq!(
            view,
            Some(DevRef::Dm {
                name: "sftsan-kc-n2-mpath".into()
            })
        );
        // n1 has nowhere else to go: one path that never gives up.
        let n1 = sessions("n1");
        assert_eq!(n1.len(), 1);
        assert_eq!(n1[0].replacement_timeout_s, super::LAST_PATH_REPLACEMENT_S);
        // The origin admits its grandchild; n1 admits only its child.
        let admitted = |node: &str| -> Vec<String> {
            stack(node)
                .into_iter()
                .find_map(|r| match r {
                    ResourceSpec::LioTarget(t) => {
                        Some(t.acls.into_iter().map(|a| a.initiator).collect())
                    }
                    _ => None,
                })
                .unwrap()
        };
        assert_eq!(
            admitted("origin"),
            [
                "iqn.2014-12.org.sftsan:kc.node.n1",
                "iqn.2014-12.org.sftsan:kc.node.n2"
            ]
        );
        assert_eq!(admitted("n1"), ["iqn.2014-12.org.sftsan:kc.node.n2"]);
        // tgt's origin admits the same initiators.
        let (p, _image) = chain_plan("tgt");
        let origin = p
            .node("origin")
            .unwrap()
            .stack
            .iter()
            .find_map(|r| match r {
                ResourceSpec::OriginTarget(t) => Some(t.initiators.clone()),
                _ => None,
            });
        assert_eq!(origin.unwrap().len(), 2);
    }
}
