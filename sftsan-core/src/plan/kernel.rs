//! A kernel-backend node's stack. The origin exports its image as an LIO target; every
//! node logs in to its parent's target, caches the disk with dm-cache or dm-clone over
//! loop-backed files, relays the cache as its own LIO target, and gives each VM a persistent
//! dm-snapshot or a thin volume with the cache as external origin. Only the node's
//! children may log in, with the cluster's CHAP credentials.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::backends::kernel::devref::DevRef;
use crate::backends::kernel::dm_devices::{
    DmCache, DmClone, DmLinear, DmSnapshot, ThinPool, ThinVolume,
};
use crate::backends::kernel::initiator::{Chap, IscsiSession};
use crate::backends::kernel::lio::{Acl, Backing, LioTarget};
use crate::backends::kernel::loopback::LoopFile;
use crate::backends::userspace::OriginTarget;
use crate::names::Names;
use crate::resources::ResourceSpec;
use crate::spec::{ClusterSpec, KernelCache, KernelSpec, RelayTarget, SnapshotKind};
use crate::topology::Tree;

/// dm-cache, dm-clone region and thin-pool block size: 64 KiB.
const BLOCK_SECTORS: u64 = 128;
/// dm-snapshot chunk: 4 KiB.
const CHUNK_SECTORS: u64 = 8;
/// COW store of the never-written upstream view.
const UPSTREAM_COW: u64 = 1 << 20;

/// Metadata room for dm-cache, dm-clone or a thin pool over `size` bytes of data: 8 MiB plus
/// generous room per 64 KiB block.
fn metadata_size(size: u64) -> u64 {
    (8 << 20) + (size / 65536) * 64
}

/// The stack of the node at tree position `index` (1 is the origin).
pub fn stack(
    spec: &ClusterSpec,
    kernel: &KernelSpec,
    names: &Names,
    tree: &Tree,
    all: &[(String, IpAddr)],
    index: usize,
    size: u64,
) -> Vec<ResourceSpec> {
    let (name, address) = &all[index - 1];
    let chap = Chap {
        username: kernel.chap_user.clone(),
        password: kernel.chap_secret.clone(),
    };
    let acls: Vec<Acl> = tree
        .children(index)
        .into_iter()
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
        ResourceSpec::OriginTarget(OriginTarget {
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
        })
    };
    let Some(parent) = tree.parent(index) else {
        let image = Backing::File {
            path: spec.image.source.clone(),
            size,
        };
        return vec![target(image)];
    };
    let (parent_name, parent_address) = &all[parent - 1];
    let sectors = size / 512;
    let file = |what: &str| names.node_file(name, what);
    let loop_file = |what: &str, bytes: u64| {
        ResourceSpec::LoopFile(LoopFile {
            node: name.clone(),
            file: file(what),
            size: bytes,
        })
    };
    let session = IscsiSession {
        node: name.clone(),
        parent: parent_name.clone(),
        portal: SocketAddr::new(*parent_address, kernel.iscsi_port),
        target: names.node_target_iqn(parent_name),
        // tgt's LUN 0 is its controller; LIO exports the disk as LUN 0.
        lun: if tgt { 1 } else { 0 },
        initiator: names.initiator_iqn(name),
        chap: Some(chap.clone()),
        size,
        timeout_ms: spec.cluster.connect_timeout_ms,
    };
    let cache_name = names.dm_name(name, "cache");
    let cache = DevRef::Dm {
        name: cache_name.clone(),
    };
    let mut stack = vec![ResourceSpec::IscsiSession(session.clone())];
    match kernel.cache {
        KernelCache::DmCache => {
            // dm-cache opens its origin read-write, but the parent's LUN is write-protected.
            // A transient dm-snapshot opens its origin read-only and is writable itself:
            // dm-cache builds on that view. Nothing writes to it (VMs write to their own
            // disks, children cannot write), so its small COW store stays empty.
            let upstream_name = names.dm_name(name, "upstream");
            stack.extend([
                loop_file("upstream-cow.img", UPSTREAM_COW),
                ResourceSpec::DmSnapshot(DmSnapshot {
                    node: name.clone(),
                    index: 0,
                    name: upstream_name.clone(),
                    origin: DevRef::Iscsi {
                        session: Box::new(session.clone()),
                    },
                    cow: DevRef::Loop {
                        file: file("upstream-cow.img"),
                    },
                    sectors,
                    chunk_sectors: CHUNK_SECTORS,
                    persistent: false,
                }),
                loop_file("cache.img", size),
                loop_file("cache-meta.img", metadata_size(size)),
                ResourceSpec::DmCache(DmCache {
                    node: name.clone(),
                    name: cache_name.clone(),
                    origin: DevRef::Dm {
                        name: upstream_name,
                    },
                    cache: DevRef::Loop {
                        file: file("cache.img"),
                    },
                    metadata: DevRef::Loop {
                        file: file("cache-meta.img"),
                    },
                    sectors,
                    block_sectors: BLOCK_SECTORS,
                }),
            ]);
        }
        // dm-clone opens its source read-only: it builds on the parent's LUN itself.
        KernelCache::DmClone => stack.extend([
            loop_file("clone.img", size),
            loop_file("clone-meta.img", metadata_size(size)),
            ResourceSpec::DmClone(DmClone {
                node: name.clone(),
                name: cache_name.clone(),
                source: DevRef::Iscsi {
                    session: Box::new(session.clone()),
                },
                destination: DevRef::Loop {
                    file: file("clone.img"),
                },
                metadata: DevRef::Loop {
                    file: file("clone-meta.img"),
                },
                sectors,
                region_sectors: BLOCK_SECTORS,
            }),
        ]),
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
            stack.push(loop_file("pool-meta.img", metadata_size(data)));
            stack.push(loop_file("pool-data.img", data));
            stack.push(ResourceSpec::ThinPool(ThinPool {
                node: name.clone(),
                name: pool.clone(),
                metadata: DevRef::Loop {
                    file: file("pool-meta.img"),
                },
                data: DevRef::Loop {
                    file: file("pool-data.img"),
                },
                sectors: data / 512,
                block_sectors: BLOCK_SECTORS,
            }));
            for i in 1..=per_node {
                stack.extend(vm_disk(names, SnapshotKind::DmThin, name, i, size));
            }
        }
        _ => {
            for i in 1..=per_node {
                stack.extend(vm_disk(names, SnapshotKind::DmSnapshot, name, i, size));
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
pub fn vm_disk(
    names: &Names,
    kind: SnapshotKind,
    node: &str,
    index: u32,
    size: u64,
) -> Vec<ResourceSpec> {
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
            sectors: size / 512,
        })],
        _ => {
            let cow = names.node_file(node, &format!("cow-{index}.img"));
            vec![
                // Sparse: a COW store only grows as large as what its VM writes.
                ResourceSpec::LoopFile(LoopFile {
                    node: node.into(),
                    file: cow.clone(),
                    size,
                }),
                ResourceSpec::DmSnapshot(DmSnapshot {
                    node: node.into(),
                    index,
                    name,
                    origin: cache,
                    cow: DevRef::Loop { file: cow },
                    sectors: size / 512,
                    chunk_sectors: CHUNK_SECTORS,
                    persistent: true,
                }),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::plan::plan;
    use crate::resources::ResourceSpec;
    use crate::spec::{validate, ClusterSpec};

    fn kernel_plan(kind: &str) -> (crate::plan::Plan, tempfile::NamedTempFile) {
        kernel_plan_with(kind, "dm-cache")
    }

    fn kernel_plan_with(kind: &str, cache: &str) -> (crate::plan::Plan, tempfile::NamedTempFile) {
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
            [cache]
            size = "8MiB"
            [snapshots]
            per_node = 2
            kind = "{kind}"
            [kernel]
            cache = "{cache}"
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
        use crate::backends::kernel::probe::{features_for, Feature};
        let (p, _image) = kernel_plan_with("dm-snapshot", "dm-clone");
        let stack = &p.node("n1").unwrap().stack;
        let kinds: Vec<&str> = stack.iter().map(|r| r.kind()).collect();
        assert_eq!(
            kinds[..6],
            [
                "iscsi-session",
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
        assert!(matches!(clone.source, DevRef::Iscsi { .. }), "{clone:?}");
        assert_eq!(clone.name, "sftsan-kc-n1-cache");
        assert_eq!(clone.sectors, (1 << 20) / 512);
        let wanted = features_for(&p);
        assert!(wanted.contains(&Feature::DmTarget("clone")), "{wanted:?}");
        assert!(!wanted.contains(&Feature::DmTarget("cache")), "{wanted:?}");
        assert!(!wanted.contains(&Feature::DmTarget("thin")), "{wanted:?}");

        let (p, _image) = kernel_plan_with("dm-thin", "dm-cache");
        let wanted = features_for(&p);
        for f in [
            Feature::DmTarget("cache"),
            Feature::DmTarget("snapshot"),
            Feature::DmTarget("thin-pool"),
            Feature::DmTarget("thin"),
            Feature::IscsiInitiator,
            Feature::LioIscsiTarget,
            Feature::Loop,
        ] {
            assert!(wanted.contains(&f), "{f} missing from {wanted:?}");
        }
        assert!(!wanted.contains(&Feature::DmTarget("clone")), "{wanted:?}");
    }
}
