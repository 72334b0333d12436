//! A kernel-backend cluster inside one kernel: an origin and four nodes in a binary tree,
//! told apart by name and IQN (host mode on 127.0.0.x). Every node logs in to its
//! parent's LIO target with CHAP, caches it with dm-cache and relays the cache; each VM
//! disk (dm-snapshot or dm-thin) reads back the image, writes stay in their disk, and
//! `down` leaves no dm device, loop device, LIO object, iSCSI session or iscsid.

use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::Arc;

use sftsan_core::backends::kernel::dm;
use sftsan_core::backends::kernel::probe::NODE_FEATURES;
use sftsan_core::engine::Engine;
use sftsan_core::names::Names;
use sftsan_core::plan;
use sftsan_core::resources::Tools;
use sftsan_core::spec::{validate, ClusterSpec};
use sftsan_tests::{in_kernel_tier, kernel_has, write_image, MIB};
use sha2::{Digest, Sha256};

const IMAGE: u64 = 16 * MIB;
const NODES: [&str; 4] = ["n1", "n2", "n3", "n4"];

/// Brings a cluster up; takes it down when dropped, also when a test fails.
struct KernelCluster {
    engine: Engine,
    names: Names,
    sha: String,
    text: String,
    _dir: tempfile::TempDir,
}

fn spec_text(c: &KernelCluster) -> String {
    c.text.clone()
}

impl Drop for KernelCluster {
    fn drop(&mut self) {
        if let Err(e) = self.engine.down() {
            eprintln!("down: {e}");
        }
    }
}

fn cluster(name: &str, kind: &str, relay: &str) -> KernelCluster {
    cluster_of(name, kind, relay, &NODES)
}

fn cluster_of(name: &str, kind: &str, relay: &str, node_names: &[&str]) -> KernelCluster {
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
    let engine = Engine::new(&spec, plan, Tools::from_env(), Arc::new(|_| {}));
    KernelCluster {
        engine,
        names,
        sha,
        text,
        _dir: dir,
    }
}

fn disk(c: &KernelCluster, node: &str, what: &str) -> std::path::PathBuf {
    let name = c.names.dm_name(node, what);
    let dev = dm::device(&name)
        .unwrap()
        .unwrap_or_else(|| panic!("no dm device {name}"));
    dm::node_path(dev).unwrap()
}

fn sha256(path: &Path) -> String {
    let mut data = Vec::new();
    fs::File::open(path)
        .unwrap()
        .read_to_end(&mut data)
        .unwrap();
    format!("{:x}", Sha256::digest(&data))
}

fn check(name: &str, kind: &str, disk_name: &str, relay: &str) {
    if !kernel_has(name, NODE_FEATURES) {
        assert!(
            !in_kernel_tier(),
            "the kernel tier's kernel must have every node feature"
        );
        return;
    }
    let c = cluster(name, kind, relay);
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

    let again = c.engine.up().unwrap();
    assert_eq!(again.created, 0, "a second up changes nothing");

    c.engine.down().unwrap_or_else(|e| panic!("down: {e}"));
    assert_nothing_left(name);
}

/// No dm device, loop device, iSCSI session, LIO target or iscsid of cluster `name`.
fn assert_nothing_left(name: &str) {
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

fn dm_names() -> Vec<String> {
    fs::read_dir("/sys/block")
        .unwrap()
        .flatten()
        .filter_map(|e| fs::read_to_string(e.path().join("dm/name")).ok())
        .map(|n| n.trim().to_string())
        .collect()
}

#[test]
fn a_tree_with_dm_snapshots() {
    check("kc-snap", "dm-snapshot", "snap", "lio");
}

#[test]
fn a_tree_with_thin_volumes() {
    check("kc-thin", "dm-thin", "thin", "lio");
}

/// The same tree with tgtd (userspace iSCSI targets) as the origin's and the relays' target.
#[test]
fn a_tree_with_tgt_relays() {
    check("kc-tgt", "dm-snapshot", "snap", "tgt");
}

/// Where the kernel lacks what the spec needs (this host, not the tier's guest), `up`
/// names every missing feature in one line and touches nothing.
#[test]
fn up_on_a_kernel_without_the_features_names_them_and_makes_nothing() {
    use sftsan_core::backends::kernel::probe;
    use sftsan_core::spec::SnapshotKind;
    let missing = probe::missing(&probe::features_for(SnapshotKind::DmThin));
    if missing.is_empty() || unsafe { libc::geteuid() } != 0 {
        return; // the tier's kernel has everything: the cluster tests above cover it
    }
    let c = cluster("kc-missing", "dm-thin", "lio");
    let dir = c._dir.path().to_path_buf();
    let spec = dir.join("spec.toml");
    fs::write(&spec, spec_text(&c)).unwrap();
    let out = sftsan_tests::sftsan([std::ffi::OsStr::new("up"), spec.as_os_str()]);
    let err = sftsan_tests::stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("sftsan: the kernel lacks "), "{err}");
    for m in &missing {
        assert!(
            err.contains(&m.feature.to_string()),
            "{err} does not name {}",
            m.feature
        );
    }
    assert!(
        !dir.join("state").join("journal.json").exists(),
        "a journal was written"
    );
    assert!(
        !dir.join("state").join("nodes").exists(),
        "node files were made"
    );
}

/// `up` killed (SIGKILL) right after creating the first resource of each kernel kind:
/// the next `up` completes, a VM disk reads the image, and `down` leaves nothing.
#[test]
fn up_resumes_after_a_crash_after_each_kernel_kind() {
    use sftsan_core::engine::KILL_AFTER_ENV;
    use sftsan_core::resources::ResourceSpec;
    use std::os::unix::process::ExitStatusExt;
    if !kernel_has(
        "up_resumes_after_a_crash_after_each_kernel_kind",
        NODE_FEATURES,
    ) {
        assert!(
            !in_kernel_tier(),
            "the kernel tier's kernel must have every node feature"
        );
        return;
    }
    let sftsan = std::env::var_os("SFTSAN_BIN").expect("the kernel tier sets SFTSAN_BIN");
    let mut failed = Vec::new();
    for (i, kind) in ResourceSpec::KERNEL_KINDS.iter().enumerate() {
        let (snapshots, disk_name) = match *kind {
            "thin-pool" | "thin-volume" => ("dm-thin", "thin-1"),
            _ => ("dm-snapshot", "snap-1"),
        };
        let name = format!("kk{i}");
        let c = cluster_of(&name, snapshots, "lio", &["n1", "n2"]);
        let spec = c._dir.path().join("spec.toml");
        fs::write(&spec, spec_text(&c)).unwrap();
        let run = |env: Option<&str>| {
            let mut cmd = std::process::Command::new(&sftsan);
            cmd.arg("up").arg(&spec);
            if let Some(k) = env {
                cmd.env(KILL_AFTER_ENV, k);
            }
            cmd.output().unwrap()
        };
        let killed = run(Some(kind));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_eq!(
                killed.status.signal(),
                Some(9),
                "up was not killed after {kind}: {killed:?}"
            );
            let resumed = run(None);
            assert!(
                resumed.status.success(),
                "up after a crash after {kind}: {}",
                String::from_utf8_lossy(&resumed.stderr)
            );
            assert_eq!(
                sha256(&disk(&c, "n2", disk_name)),
                c.sha,
                "after a crash after {kind}"
            );
            c.engine
                .down()
                .unwrap_or_else(|e| panic!("down after {kind}: {e}"));
            assert_nothing_left(&name);
        }));
        if outcome.is_err() {
            failed.push(*kind);
        }
    }
    assert!(
        failed.is_empty(),
        "not recovered after a crash after {failed:?}"
    );
}
