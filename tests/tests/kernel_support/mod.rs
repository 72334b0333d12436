//! What the kernel-backend cluster tests share: a cluster of an origin and nodes inside one
//! kernel (host mode on 127.0.0.x, told apart by name and IQN), its checks, and the check
//! that `down` left nothing. Each test binary uses part of it.
#![allow(dead_code)]

pub mod failover;

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
use sftsan_tests::{require_kernel, write_image, MIB};
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
    let nodes: Vec<(&str, String)> = node_names.iter().map(|n| (*n, String::new())).collect();
    cluster_with(name, kind, relay, cache, &nodes)
}

/// A cluster whose nodes are (name, extra TOML lines of its `[[nodes]]` entry, such as
/// `devices = { ... }`).
pub fn cluster_with(
    name: &str,
    kind: &str,
    relay: &str,
    cache: &str,
    node_entries: &[(&str, String)],
) -> KernelCluster {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("image.raw");
    let sha = write_image(&image, IMAGE, name);
    let nodes: String = node_entries
        .iter()
        .enumerate()
        .map(|(i, (n, extra))| {
            format!(
                "[[nodes]]\nname = \"{n}\"\naddress = \"127.0.0.{}\"\n{extra}\n",
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
    let features = plan.kernel_features();
    let engine = sftsan_core::cluster::engine(&spec, Tools::from_env(), Arc::new(|_| {}));
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

/// Fails unless the kernel has every node feature and dm-clone: what any kernel-backend
/// test cluster may need, checked before a test makes anything.
pub fn require_kernel_ready() {
    let mut needs = probe::NODE_FEATURES.to_vec();
    needs.push(Feature::DmTarget("clone"));
    require_kernel(&needs);
}

/// Fails unless the kernel has what cluster `c` needs.
pub fn require_ready(c: &KernelCluster) {
    require_kernel(&c.features);
}

pub fn check(name: &str, kind: &str, disk_name: &str, relay: &str, cache: &str) {
    let c = cluster(name, kind, relay, cache);
    require_ready(&c);
    c.engine.up().unwrap_or_else(|e| panic!("up: {e}"));
    for node in NODES {
        for i in 1..=2 {
            let path = disk(&c, node, &format!("{disk_name}-{i}"));
            assert_eq!(sha256(&path), c.sha, "{node}'s disk {i} reads the image");
        }
    }
    // A write to one VM's disk on a leaf stays there.
    let written = disk(&c, "n4", &format!("{disk_name}-1"));
    write_at(&written, 2 * MIB, &[0xcd; 8192]);
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
    // Backstores live in core/<hba>/<name>: fileio_N, iblock_N.
    let backstores: Vec<String> = fs::read_dir("/sys/kernel/config/target/core")
        .map(|hbas| {
            hbas.flatten()
                .filter_map(|hba| fs::read_dir(hba.path()).ok())
                .flat_map(|objects| objects.flatten())
                .map(|o| o.file_name().to_string_lossy().into_owned())
                .filter(|o| o.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    assert!(backstores.is_empty(), "LIO backstores left: {backstores:?}");
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

/// What a host's reboot (or power loss) does to a kernel-backend cluster: every kernel
/// object and daemon is gone (dm devices, loop devices, iSCSI sessions, LIO targets, tgtd,
/// iscsid) while the files stay, and so does the journal. Done from the journal with the
/// resources' own removal of their kernel objects, keeping every store's content: loop
/// devices are detached without deleting their files, claims of named block devices
/// removed without clearing them, thin volumes deactivated without deleting their data.
pub fn power_cut(c: &KernelCluster) {
    use sftsan_core::backends::kernel::{initiator, loopback};
    use sftsan_core::engine::Journal;
    use sftsan_core::plan::ResourceSpec;
    use sftsan_core::resources::Ctx;
    use sftsan_core::transport::LocalTransport;
    let journal = Journal::load(&c.names.journal())
        .unwrap()
        .expect("a journal");
    let ctx = Ctx {
        transport: Arc::new(LocalTransport),
        tools: Arc::new(Tools::from_env()),
    };
    for e in journal.data.entries.iter().rev() {
        let gone = match &e.resource {
            ResourceSpec::LoopFile(l) => match loopback::find(&l.file) {
                Some((major, minor)) => {
                    let path = sftsan_tests::block_device_path(major, minor);
                    loopdev::LoopDevice::open(&path)
                        .and_then(|d| d.detach())
                        .map_err(|e| e.to_string())
                }
                None => Ok(()),
            },
            ResourceSpec::BlockStore(b) => dm::remove(&b.name).map_err(|e| e.to_string()),
            ResourceSpec::ThinVolume(t) => dm::remove(&t.name).map_err(|e| e.to_string()),
            other => other
                .as_resource()
                .teardown(&ctx)
                .map_err(|e| e.to_string()),
        };
        gone.unwrap_or_else(|why| panic!("power cut: {}: {why}", e.id));
    }
    initiator::stop_started_iscsid(std::time::Duration::from_secs(10)).unwrap();
    let prefix = format!("sftsan-{}-", c.names.cluster());
    let left: Vec<String> = dm_names()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "power cut: dm devices left: {left:?}");
}

/// Block devices a test hands to a cluster, as an operator would hand it LVs: loop devices
/// over files of the test's own, detached when dropped (also when the test fails).
pub struct TestDisks {
    pub disks: Vec<loopdev::LoopDevice>,
    _dir: tempfile::TempDir,
}

impl TestDisks {
    /// One disk per size, all zeros.
    pub fn new(sizes: &[u64]) -> TestDisks {
        let dir = tempfile::tempdir().unwrap();
        let disks = sizes
            .iter()
            .enumerate()
            .map(|(i, size)| {
                let file = dir.path().join(format!("disk-{i}.img"));
                fs::File::create(&file).unwrap().set_len(*size).unwrap();
                sftsan_core::backends::kernel::loopback::attach(&file).unwrap()
            })
            .collect();
        TestDisks { disks, _dir: dir }
    }

    pub fn path(&self, i: usize) -> std::path::PathBuf {
        self.disks[i].path().expect("an attached loop device")
    }

    /// The first `len` bytes of disk `i`.
    pub fn head(&self, i: usize, len: usize) -> Vec<u8> {
        read_at(&self.path(i), 0, len)
    }

    /// Writes `data` at `at` of disk `i` and syncs it.
    pub fn write(&self, i: usize, at: u64, data: &[u8]) {
        write_at(&self.path(i), at, data)
    }
}

impl Drop for TestDisks {
    fn drop(&mut self) {
        for d in &self.disks {
            if let Err(e) = d.detach() {
                eprintln!("detaching a test disk: {e}");
            }
        }
    }
}

/// Runs the `sftsan` program (the kernel tier's, from `SFTSAN_BIN`; else this workspace's)
/// with `env` added: what an operator runs, planning the spec anew.
pub fn sftsan_cli(args: &[&std::ffi::OsStr], env: &[(&str, &str)]) -> std::process::Output {
    match std::env::var_os("SFTSAN_BIN") {
        Some(bin) => std::process::Command::new(bin)
            .args(args)
            .env_remove("RUST_LOG")
            .envs(env.iter().copied())
            .output()
            .unwrap(),
        None => sftsan_tests::sftsan_env(args, env),
    }
}

/// The error of a failed `sftsan` run: its one `sftsan: ` line, which comes after the
/// progress lines.
pub fn error_line(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    let errors: Vec<&str> = err.lines().filter(|l| l.starts_with("sftsan: ")).collect();
    assert_eq!(errors.len(), 1, "one error line: {err}");
    assert_eq!(
        err.lines().last(),
        Some(errors[0]),
        "the error comes last: {err}"
    );
    errors[0].to_string()
}

/// The spec file of `c`, written into its directory.
pub fn spec_file(c: &KernelCluster) -> std::path::PathBuf {
    let spec = c._dir.path().join("spec.toml");
    fs::write(&spec, spec_text(c)).unwrap();
    spec
}

/// The image file of `c`.
pub fn image_file(c: &KernelCluster) -> std::path::PathBuf {
    c._dir.path().join("image.raw")
}

/// Writes `data` at `at` of `path` and syncs it.
pub fn write_at(path: &Path, at: u64, data: &[u8]) {
    let mut f = fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    f.write_all(data).unwrap();
    f.sync_all().unwrap();
}

/// `len` bytes at `at` of `path`.
pub fn read_at(path: &Path, at: u64, len: usize) -> Vec<u8> {
    let mut f = fs::File::open(path).unwrap();
    f.seek(SeekFrom::Start(at)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
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
        let Hydration { regions, .. } = wait_hydrated(c, node);
        let name = c.names.dm_name(node, "cache");
        assert_eq!(regions, IMAGE / (64 << 10), "{name}: 64 KiB regions");
        let copy = c.names.node_file(node, "clone.img");
        assert_eq!(sha256(&copy), c.sha, "{node}'s local copy is the image");
    }
}

/// Waits (up to 240 s, woken by dm events) until `node`'s dm-clone copied the whole image.
pub fn wait_hydrated(c: &KernelCluster, node: &str) -> Hydration {
    let name = c.names.dm_name(node, "cache");
    let status = |t: &dm::Table| t.first().and_then(|l| parse_clone_status(&l.3));
    let done = dm::wait_for_status(&name, std::time::Duration::from_secs(240), |t| {
        status(t).filter(|h| h.hydrated == h.regions)
    })
    .unwrap();
    done.unwrap_or_else(|| {
        let last = dm::status(&name).unwrap();
        panic!("{name} did not finish hydrating within 240 s: {last:?}")
    })
}
