//! What the kernel-backend cluster tests share: a cluster of an origin and nodes inside one
//! kernel (host mode on 127.0.0.x, told apart by name and IQN), its checks, and the check
//! that `down` left nothing. Each test binary uses part of it.
#![allow(dead_code)]

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use sftsan_core::backends::kernel::dm;
use sftsan_core::backends::kernel::dm_devices::{parse_clone_status, Hydration};
use sftsan_core::backends::kernel::probe::{self, Feature};
use sftsan_core::engine::Engine;
use sftsan_core::names::Names;
use sftsan_core::plan;
use sftsan_core::resources::Tools;
use sftsan_core::spec::{validate, ClusterSpec};
use sftsan_tests::{in_kernel_tier, kernel_has, write_image, MIB};
use sha2::{Digest, Sha256};

pub const IMAGE: u64 = 16 * MIB;
pub const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];

/// Brings a cluster up; takes it down when dropped, also when a test fails.
pub struct KernelCluster {
    pub engine: Engine,
    pub names: Names,
    pub sha: String,
    pub text: String,
    /// What its plan needs of the kernel.
    pub features: Vec<Feature>,
    pub _dir: tempfile::TempDir,
}

pub fn spec_text(c: &KernelCluster) -> String {
    c.text.clone()
}

impl Drop for KernelCluster {
    fn drop(&mut self) {
        // Never brought up (skipped): nothing to take down.
        if !self._dir.path().join("state").exists() {
            return;
        }
        if let Err(e) = self.engine.down() {
            eprintln!("down: {e}");
        }
    }
}

pub fn cluster(name: &str, kind: &str, relay: &str, cache: &str) -> KernelCluster {
    cluster_of(name, kind, relay, cache, &NODES)
}

pub fn cluster_of(
    name: &str,
    kind: &str,
    relay: &str,
    cache: &str,
    node_names: &[&str],
) -> KernelCluster {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    let sha = write_image(&image, IMAGE, name);
    let nodes: String = node_names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            format!(
                "[[nodes]]\nname = \"{n}\"\naddress = \"127.0.0.{}\"\n",
                i + 2
            )
        })
        .collect();
    let text = format!(
        r#"
[cluster]
name = "{name}"
state_dir = "{state}"
backend = "kernel"
mode = "host"
degree = 2
[image]
name = "base"
source = "{image}"
[origin]
address = "127.0.0.1"
{nodes}
[cache]
size = "32MiB"
[snapshots]
per_node = 2
kind = "{kind}"
[kernel]
cache = "{cache}"
relay = "{relay}"
chap_user = "sftsan"
chap_secret = "a-secret-for-the-tests"
"#,
        state = dir.path().join("state").display(),
        image = image.display(),
    );
    let spec = validate(ClusterSpec::from_toml(&text).unwrap()).unwrap();
    let names = Names::new(spec.spec());
    let plan = plan::plan(&spec);
    let features = probe::features_for(&plan);
    let engine = Engine::new(&spec, plan, Tools::from_env(), Arc::new(|_| {}));
    KernelCluster {
        engine,
        names,
        sha,
        text,
        features,
        _dir: dir,
    }
}

pub fn disk(c: &KernelCluster, node: &str, what: &str) -> std::path::PathBuf {
    let name = c.names.dm_name(node, what);
    let dev = dm::device(&name)
        .unwrap()
        .unwrap_or_else(|| panic!("no dm device {name}"));
    dm::node_path(dev).unwrap()
}

pub fn sha256(path: &Path) -> String {
    let mut data = Vec::new();
    fs::File::open(path)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    format!("{:x}", Sha256::digest(&data))
}

pub fn check(name: &str, kind: &str, disk_name: &str, relay: &str, cache: &str) {
    let c = cluster(name, kind, relay, cache);
    if !kernel_has(name, &c.features) {
        assert!(
            !in_kernel_tier(),
            "the kernel tier's kernel must have {:?}",
            c.features
        );
        return;
    }
    c.engine.up().unwrap_or_else(|e| panic!("up: {e}"));
    for node in NODES {
        for i in 1..=2 {
            let path = disk(&c, node, &format!("{disk_name}-{i}"));
            assert_eq!(sha256(&path), c.sha, "{node}'s disk {i} reads the image");
        }
    }
    // A write to one VM's disk on a leaf stays there.
    let written = disk(&c, "n4", &format!("{disk_name}-1"));
    let mut f = fs::OpenOptions::new().write(true).open(&written).unwrap();
    f.seek(SeekFrom::Start(2 * MIB)).unwrap();
    f.write_all(&[0xcd; 8192]).unwrap();
    f.sync_all().unwrap();
    drop(f);
    assert_ne!(sha256(&written), c.sha);
    assert_eq!(sha256(&disk(&c, "n4", &format!("{disk_name}-2"))), c.sha);
    assert_eq!(sha256(&disk(&c, "n2", &format!("{disk_name}-1"))), c.sha);
    assert_eq!(
        sha256(&disk(&c, "n1", "cache")),
        c.sha,
        "the leaf's parent's cache"
    );

    if cache == "dm-clone" {
        check_hydrated(&c);
    }

    let again = c.engine.up().unwrap();
    assert_eq!(again.created, 0, "a second up changes nothing");

    c.engine.down().unwrap_or_else(|e| panic!("down: {e}"));
    assert_nothing_left(name);
}

/// No dm device, loop device, iSCSI session, LIO target or iscsid of cluster `name`.
pub fn assert_nothing_left(name: &str) {
    let prefix = format!("sftsan-{name}-");
    let dm_left: Vec<String> = dm_names()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(dm_left.is_empty(), "dm devices left: {dm_left:?}");
    let loops: Vec<String> = fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("loop/backing_file")).ok())
        .filter(|f| f.contains(name) || f.contains("/state/"))
        .collect();
    assert!(loops.is_empty(), "loop devices left: {loops:?}");
    let sessions = fs::read_dir("/sys/class/iscsi_session")
        .map(|d| d.count())
        .unwrap_or(0);
    assert_eq!(sessions, 0, "iSCSI sessions left");
    let targets: Vec<String> = fs::read_dir("/sys/kernel/config/target/iscsi")
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(
        targets.iter().all(|t| !t.contains(name)),
        "LIO targets left: {targets:?}"
    );
    let iscsid = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
        .any(|c| c.trim() == "iscsid");
    assert!(!iscsid, "the iscsid sftsan started is still running");
    let tgtd = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("comm")).ok())
        .any(|c| c.trim() == "tgtd");
    assert!(!tgtd, "a tgtd is still running");
}

pub fn dm_names() -> Vec<String> {
    fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("dm/name")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

/// Every node's dm-clone copies the whole image in the background: its destination file
/// ends up holding the image, and the node then serves it locally.
pub fn check_hydrated(c: &KernelCluster) {
    for node in NODES {
        let name = c.names.dm_name(node, "cache");
        let status = |t: &dm::Table| t.first().and_then(|l| parse_clone_status(&l.3));
        let done = dm::wait_for_status(&name, std::time::Duration::from_secs(240), |t| {
            status(t).filter(|h| h.hydrated == h.regions)
        })
        .unwrap();
        let last = dm::status(&name).unwrap();
        let Some(Hydration { regions, .. }) = done else {
            panic!("{name} did not finish hydrating within 240 s: {last:?}");
        };
        assert_eq!(regions, IMAGE / (64 << 10), "{name}: 64 KiB regions");
        let copy = c.names.node_file(node, "clone.img");
        assert_eq!(sha256(&copy), c.sha, "{node}'s local copy is the image");
    }
}
