//! A kernel-backend node's block stack, resource by resource, on a real kernel: a cache
//! (dm-cache over a read-only origin), VM disks as persistent dm-snapshots and as thin
//! volumes with the cache as external origin, and an LIO target relaying the cache with
//! CHAP-protected, write-protected access. Runs in the kernel tier; skips elsewhere.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use devicemapper::Sectors;
use sftsan_core::backends::kernel::devref::DevRef;
use sftsan_core::backends::kernel::dm;
use sftsan_core::backends::kernel::dm_devices::{DmCache, DmSnapshot, ThinPool, ThinVolume};
use sftsan_core::backends::kernel::lio::{Acl, Backing, Chap, LioTarget};
use sftsan_core::backends::kernel::loopback::LoopFile;
use sftsan_core::backends::kernel::probe::Feature;
use sftsan_core::resources::{Ctx, Observed, Resource, Tools};
use sftsan_core::transport::LocalTransport;
use sftsan_tests::{require_kernel, write_image, MIB};
use sha2::{Digest, Sha256};

const IMAGE: u64 = 16 * MIB;
const SECTORS: Sectors = Sectors(IMAGE / 512);

fn ctx() -> Ctx {
    Ctx {
        transport: Arc::new(LocalTransport),
        tools: Arc::new(Tools::from_env()),
    }
}

/// Resources created by a test, torn down in reverse when dropped (also on failure).
struct Stack {
    ctx: Ctx,
    made: Vec<Box<dyn Resource>>,
    origin_loop: Option<loopdev::LoopDevice>,
}

impl Stack {
    /// Creates `r` and checks that it observes as wanted. Kept for teardown first, so a
    /// failed check still removes it.
    fn add<R: Resource + 'static>(&mut self, r: R) {
        r.create(&self.ctx)
            .unwrap_or_else(|e| panic!("create: {e}"));
        self.made.push(Box::new(r));
        let r = self.made.last().unwrap();
        let observed = r.observe(&self.ctx).unwrap();
        assert_eq!(
            observed,
            Observed::Present(r.desired()),
            "observe after create"
        );
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        while let Some(r) = self.made.pop() {
            if let Err(e) = r.teardown(&self.ctx) {
                eprintln!("teardown: {e}");
            }
        }
        if let Some(l) = self.origin_loop.take() {
            let _ = l.detach();
        }
    }
}

fn sha256_dev(dev: &DevRef) -> String {
    let path = dm::node_path(dev.resolve().unwrap()).unwrap();
    let mut f = fs::File::open(&path).unwrap();
    let mut data = Vec::new();
    f.read_to_end(&mut data).unwrap();
    format!("{:x}", Sha256::digest(&data))
}

fn write_dev(dev: &DevRef, at: u64, data: &[u8]) {
    let path = dm::node_path(dev.resolve().unwrap()).unwrap();
    let mut f = fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

fn loop_file(stack: &mut Stack, dir: &Path, name: &str, size: u64) -> DevRef {
    let file = dir.join(name);
    stack.add(LoopFile {
        node: "n1".into(),
        file: file.clone(),
        size,
        identity: "kernel-stack".into(),
    });
    DevRef::Loop { file }
}

/// A fresh stack with a read-only loop device over a generated image as the origin (in a
/// cluster, the upstream iSCSI disk).
fn origin(dir: &Path) -> (Stack, DevRef, String) {
    let file: PathBuf = dir.join("image.raw");
    let sha = write_image(&file, IMAGE, "kernel-stack");
    let dev = loopdev::LoopControl::open().unwrap().next_free().unwrap();
    dev.with()
        .read_only(true)
        .part_scan(false)
        .attach(&file)
        .unwrap();
    let stack = Stack {
        ctx: ctx(),
        made: Vec::new(),
        origin_loop: Some(dev),
    };
    (stack, DevRef::Loop { file }, sha)
}

fn cache(stack: &mut Stack, dir: &Path, origin: DevRef, tag: &str) -> DevRef {
    let cache = loop_file(stack, dir, "cache.img", IMAGE);
    let metadata = loop_file(stack, dir, "cache-meta.img", 8 * MIB);
    let name = format!("sftsan-kt-{tag}-cache");
    stack.add(DmCache {
        node: "n1".into(),
        name: name.clone(),
        origin,
        cache,
        metadata,
        sectors: SECTORS,
        block_sectors: Sectors(128),
    });
    DevRef::Dm { name }
}

fn require_ready() {
    let needs = [
        Feature::DeviceMapper,
        Feature::DmTarget("cache"),
        Feature::DmTarget("snapshot"),
        Feature::DmTarget("thin-pool"),
        Feature::DmTarget("thin"),
        Feature::Loop,
        Feature::Configfs,
        Feature::LioIscsiTarget,
    ];
    require_kernel(&needs);
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn dm_snapshots_over_a_dm_cache_read_the_image_and_keep_writes_apart() {
    require_ready();
    let dir = tempfile::tempdir().unwrap();
    let (mut stack, origin, sha) = origin(dir.path());
    let cache = cache(&mut stack, dir.path(), origin, "snap");
    assert_eq!(sha256_dev(&cache), sha, "the cache reads the origin");

    let snaps: Vec<DevRef> = (1..=2)
        .map(|i| {
            let cow = loop_file(&mut stack, dir.path(), &format!("cow-{i}.img"), IMAGE);
            let name = format!("sftsan-kt-snap-{i}");
            stack.add(DmSnapshot {
                node: "n1".into(),
                index: i,
                name: name.clone(),
                origin: cache.clone(),
                cow,
                sectors: SECTORS,
                chunk_sectors: Sectors(8),
                persistent: true,
            });
            DevRef::Dm { name }
        })
        .collect();
    for s in &snaps {
        assert_eq!(sha256_dev(s), sha, "a fresh snapshot reads the image");
    }
    write_dev(&snaps[0], MIB, &[0xab; 4096]);
    assert_ne!(
        sha256_dev(&snaps[0]),
        sha,
        "the write landed in its snapshot"
    );
    assert_eq!(
        sha256_dev(&snaps[1]),
        sha,
        "another snapshot does not see it"
    );
    assert_eq!(sha256_dev(&cache), sha, "the cache does not see it");
    drop(stack);
    assert_no_devices("sftsan-kt-snap");
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn thin_volumes_with_the_cache_as_external_origin() {
    require_ready();
    let dir = tempfile::tempdir().unwrap();
    let (mut stack, origin, sha) = origin(dir.path());
    let cache = cache(&mut stack, dir.path(), origin, "thin");
    let metadata = loop_file(&mut stack, dir.path(), "pool-meta.img", 8 * MIB);
    let data = loop_file(&mut stack, dir.path(), "pool-data.img", 2 * IMAGE);
    let pool = "sftsan-kt-thin-pool".to_string();
    stack.add(ThinPool {
        node: "n1".into(),
        name: pool.clone(),
        metadata,
        data,
        sectors: Some(Sectors(2 * *SECTORS)),
        block_sectors: Sectors(128),
    });
    let vols: Vec<DevRef> = (1..=2)
        .map(|i| {
            let name = format!("sftsan-kt-thin-{i}");
            stack.add(ThinVolume {
                node: "n1".into(),
                index: i,
                name: name.clone(),
                pool: pool.clone(),
                thin_id: i,
                origin: cache.clone(),
                sectors: SECTORS,
            });
            DevRef::Dm { name }
        })
        .collect();
    for v in &vols {
        assert_eq!(
            sha256_dev(v),
            sha,
            "a fresh thin volume reads its external origin"
        );
    }
    write_dev(&vols[1], 3 * MIB, &[0x5a; 65536]);
    assert_ne!(sha256_dev(&vols[1]), sha);
    assert_eq!(
        sha256_dev(&vols[0]),
        sha,
        "another volume does not see the write"
    );
    assert_eq!(
        sha256_dev(&cache),
        sha,
        "the external origin does not see it"
    );
    drop(stack);
    assert_no_devices("sftsan-kt-thin");
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn an_lio_target_relays_the_cache_to_listed_initiators_only() {
    require_ready();
    let dir = tempfile::tempdir().unwrap();
    let (mut stack, origin, _) = origin(dir.path());
    let cache = cache(&mut stack, dir.path(), origin, "lio");
    let DevRef::Dm { name } = cache else {
        unreachable!()
    };
    let iqn = "iqn.2014-12.org.sftsan:kt.image.base";
    let portal: SocketAddr = "127.0.0.1:3260".parse().unwrap();
    let target = LioTarget {
        node: "n1".into(),
        iqn: iqn.into(),
        backstore: "sftsan-kt-lio".into(),
        backing: Backing::Dm { name },
        portal,
        acls: vec![Acl {
            initiator: "iqn.2014-12.org.sftsan:kt.node.n3".into(),
            chap: Some(Chap {
                username: "n3".into(),
                password: "secret-of-n3".into(),
            }),
        }],
        open_access: false,
    };
    stack.add(target.clone());
    let tpg = Path::new("/sys/kernel/config/target/iscsi")
        .join(iqn)
        .join("tpgt_1");
    let attr = |p: &str| fs::read_to_string(tpg.join(p)).unwrap().trim().to_string();
    assert_eq!(attr("enable"), "1");
    assert_eq!(attr("attrib/generate_node_acls"), "0", "no open access");
    assert_eq!(attr("attrib/authentication"), "1", "CHAP required");
    assert_eq!(
        attr("acls/iqn.2014-12.org.sftsan:kt.node.n3/lun_0/write_protect"),
        "1",
        "children may not write"
    );
    // A second create of the same target is a no-op the engine would see as unchanged.
    assert_eq!(
        target.observe(&stack.ctx).unwrap(),
        Observed::Present(target.desired())
    );
    drop(stack);
    assert!(!tpg.exists(), "the target outlived its teardown");
    assert!(!Path::new("/sys/kernel/config/target/core/iblock_0/sftsan-kt-lio").exists());
    assert_no_devices("sftsan-kt-lio");
}

fn assert_no_devices(prefix: &str) {
    let left: Vec<String> = fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("dm/name")).ok())
        .map(|n| n.trim().to_string())
        .filter(|n| n.starts_with(prefix))
        .collect();
    assert!(left.is_empty(), "dm devices left: {left:?}");
    let loops: Vec<String> = fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|f| f.contains("/tmp/"))
        .collect();
    assert!(loops.is_empty(), "loop devices left: {loops:?}");
}
