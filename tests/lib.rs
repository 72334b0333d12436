//! The harness of sftsan's integration tests: real local-mode clusters (qemu-storage-daemon
//! processes in network namespaces), driven through the `sftsan` command as an operator
//! would, and checked from outside: snapshot contents, traffic counters, leftovers.
//!
//! Every test builds its cluster with a [`TestCluster`] in a /24 of its own inside
//! 198.18.0.0/15. The returned [`Cluster`] runs `sftsan down` when dropped, so a failing
//! test cleans up too, and holds a process-wide lock so clusters never run concurrently.

pub mod hosts;

use std::ffi::OsStr;
use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use serde_json::Value;
use sftsan_core::names::Names;
use sftsan_core::spec::{cache_needed, ClusterSpec};
use sha2::{Digest, Sha256};
use tempfile::TempDir;

/// One mebibyte, in bytes.
pub const MIB: u64 = 1 << 20;

/// The `sftsan` binary of this workspace, built once per test process.
pub fn sftsan_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the tests crate lives in the workspace");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "sftsan-cli", "--bin", "sftsan"])
            .current_dir(workspace)
            .output()
            .expect("cannot run cargo");
        assert!(
            out.status.success(),
            "building sftsan failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(|t| workspace.join(t))
            .unwrap_or_else(|| workspace.join("target"));
        target.join("debug").join("sftsan")
    })
}

/// Runs `sftsan ARGS...` to completion (without RUST_LOG or a crash point inherited).
pub fn sftsan<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    sftsan_env(args, &[])
}

/// Like [`sftsan`], with extra environment variables (e.g. `SFTSAN_TEST_KILL_AFTER`).
pub fn sftsan_env<I, S>(args: I, env: &[(&str, &str)]) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let mut cmd = Command::new(sftsan_bin());
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove(sftsan_core::engine::KILL_AFTER_ENV)
        .envs(env.iter().copied());
    cmd.output().expect("cannot run sftsan")
}

/// Runs `cmd` with its stdout a pipe whose reader has already gone (`cmd | head -c0`, but
/// without the race of when head closes): the first write meets EPIPE.
pub fn run_into_closed_pipe(cmd: &mut Command) -> Output {
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills both descriptors on success; each is owned by one OwnedFd.
    let (read, write) = unsafe {
        assert_eq!(libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC), 0);
        use std::os::fd::FromRawFd;
        (
            std::os::fd::OwnedFd::from_raw_fd(fds[0]),
            std::os::fd::OwnedFd::from_raw_fd(fds[1]),
        )
    };
    drop(read);
    cmd.stdout(write)
        .stderr(std::process::Stdio::piped())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"))
}

/// Checks what `run_into_closed_pipe` gave: exit status 0, or death by SIGPIPE (141 in a
/// shell) as coreutils die, and nothing on stderr but the engine's progress lines
/// (`[   0.0s] n1/snapshot/2  created ...`), which a command that changes the cluster
/// writes whatever its stdout is.
pub fn assert_quiet_on_closed_pipe(out: &Output, what: &str) {
    use std::os::unix::process::ExitStatusExt;
    let ok = out.status.code() == Some(0) || out.status.signal() == Some(libc::SIGPIPE);
    assert!(ok, "{what}: {:?}, stderr: {}", out.status, stderr(out));
    let err = stderr(out);
    let other: Vec<&str> = err.lines().filter(|l| !l.starts_with("[ ")).collect();
    assert!(other.is_empty(), "{what}: stderr must stay empty:\n{err}");
}

/// A finished command's stdout as text (invalid UTF-8 replaced).
pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A finished command's stderr as text (invalid UTF-8 replaced).
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a helper program and returns its stdout; panics with its stderr when it fails.
fn checked(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
    stdout(&out)
}

/// Fails unless this host can run clusters (root, qemu-storage-daemon, ip): the root
/// tier's tests need them, and a missing one is a failure, never a skip.
pub fn require_clusters() {
    require_root_with(&["qemu-storage-daemon", "ip"]);
}

/// Fails unless this process is root and every program of `tools` is installed.
pub fn require_root_with(tools: &[&str]) {
    assert_eq!(
        // SAFETY: geteuid cannot fail.
        unsafe { libc::geteuid() },
        0,
        "this test needs root (it is in the root tier: run it as root with --ignored)"
    );
    if let Some(tool) = tools.iter().find(|tool| !on_path(tool)) {
        panic!("{tool} is not installed (scripts/install-deps.sh installs it)");
    }
}

/// Whether `program` is on PATH, or in the sbin directories a non-root PATH may lack.
fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|path| {
        std::env::split_paths(&path)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d| d.join(program).is_file())
    })
}

/// Polls `condition` until it holds or `timeout` passes; returns whether it held.
pub fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The sha256 of a file's contents, in lowercase hex; panics if it cannot be read.
pub fn sha256_file(path: &Path) -> String {
    let mut file = fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut hasher = Sha256::new();
    let mut buf = vec![0; MIB as usize];
    loop {
        match file.read(&mut buf).expect("read") {
            0 => break,
            n => hasher.update(&buf[..n]),
        }
    }
    format!("{:x}", hasher.finalize())
}

fn hash_and_remove(path: &Path) -> String {
    let sha = sha256_file(path);
    fs::remove_file(path).unwrap();
    sha
}

fn join<T>(handle: std::thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Whether process `pid` is gone (a zombie counts as gone).
pub fn process_gone(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

/// Clusters share the machine's two cores and its network stack: one at a time.
fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// A local-mode cluster to create: origin `198.18.<subnet>.1` and nodes `n1`, `n2`, ... at
/// `198.18.<subnet>.11`, `.12`, ...
pub struct TestCluster {
    name: String,
    subnet: u8,
    nodes: usize,
    degree: u32,
    snapshots: u32,
    image_size: u64,
    managed_origin: bool,
    iscsi_origin: bool,
    connect_timeout_ms: u64,
    link_mbit: Option<u32>,
}

impl TestCluster {
    /// Defaults: 2 nodes in a chain, 2 snapshots each, a 16 MiB image.
    pub fn new(name: &str, subnet: u8) -> TestCluster {
        TestCluster {
            name: name.into(),
            subnet,
            nodes: 2,
            degree: 1,
            snapshots: 2,
            image_size: 16 * MIB,
            managed_origin: true,
            iscsi_origin: false,
            connect_timeout_ms: 5000,
            link_mbit: None,
        }
    }

    /// How many compute nodes (`n1` ... `n<nodes>`).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self
    }

    /// `[cluster] degree`: children per node (1 = chain, 2 = binary tree).
    pub fn degree(mut self, degree: u32) -> Self {
        self.degree = degree;
        self
    }

    /// `[snapshots] per_node`: VM disks per node.
    pub fn snapshots(mut self, per_node: u32) -> Self {
        self.snapshots = per_node;
        self
    }

    /// A whole number of MiB.
    pub fn image_size(mut self, bytes: u64) -> Self {
        self.image_size = bytes;
        self
    }

    /// `[origin] managed = false`: nobody serves the image at the origin's address.
    pub fn unmanaged_origin(mut self) -> Self {
        self.managed_origin = false;
        self
    }

    /// `[origin] protocol = "iscsi"`: the origin is a tgtd, its children attach over iSCSI.
    pub fn iscsi_origin(mut self) -> Self {
        self.iscsi_origin = true;
        self
    }

    /// `[cluster] connect_timeout_ms`: how long a node waits for its parent.
    pub fn connect_timeout_ms(mut self, ms: u64) -> Self {
        self.connect_timeout_ms = ms;
        self
    }

    /// `[local] link_mbit`: every node's link limited to this rate each way.
    pub fn link_mbit(mut self, mbit: u32) -> Self {
        self.link_mbit = Some(mbit);
        self
    }

    /// Writes the base image and the spec; creates nothing on the system yet.
    pub fn create(self) -> Cluster {
        assert_eq!(self.image_size % MIB, 0, "image size must be whole MiB");
        sftsan_bin(); // built before there is a cluster whose drop needs it
        let serial = exclusive();
        let work = tempfile::Builder::new()
            .prefix("sftsan-test-")
            .tempdir()
            .unwrap();
        let cache = tempfile::Builder::new()
            .prefix("sftsan-cache-")
            .tempdir()
            .unwrap();
        let image = work.path().join("base.raw");
        let base_sha256 = write_image(&image, self.image_size, &self.name);
        let net = format!("198.18.{}", self.subnet);
        let mut text = format!(
            "[cluster]\nname = {name:?}\nstate_dir = {state:?}\nmode = \"local\"\n\
             degree = {degree}\nconnect_timeout_ms = {timeout}\n\n\
             [image]\nname = \"base\"\nsource = {image:?}\n\n\
             [origin]\nname = \"origin\"\naddress = \"{net}.1\"\nmanaged = {managed}\n\
             protocol = \"{protocol}\"\n\n\
             [cache]\ndir = {cache:?}\nsize = {cache_size}\n\n\
             [snapshots]\nper_node = {snapshots}\n\n\
             [local]\nsubnet = \"{net}.0/24\"\n",
            name = self.name,
            state = work.path().join("state"),
            degree = self.degree,
            timeout = self.connect_timeout_ms,
            image = image,
            managed = self.managed_origin,
            protocol = if self.iscsi_origin { "iscsi" } else { "nbd" },
            cache = cache.path(),
            cache_size = cache_needed(self.image_size),
            snapshots = self.snapshots,
        );
        if let Some(mbit) = self.link_mbit {
            text += &format!("link_mbit = {mbit}\n");
        }
        for i in 1..=self.nodes {
            text += &format!(
                "\n[[nodes]]\nname = \"n{i}\"\naddress = \"{net}.{}\"\n",
                10 + i
            );
        }
        let spec_path = work.path().join("spec.toml");
        fs::write(&spec_path, text).unwrap();
        let spec = ClusterSpec::load(&spec_path).expect("the harness writes valid TOML");
        Cluster {
            names: Names::new(&spec),
            subnet: format!("{net}.0/24"),
            spec_path,
            spec,
            image,
            image_size: self.image_size,
            base_sha256,
            work,
            cache,
            _serial: serial,
        }
    }
}

/// Writes `size` bytes of a xorshift stream seeded by `seed` (no zero blocks, which
/// copy-on-read treats specially) and returns their sha256.
pub fn write_image(path: &Path, size: u64, seed: &str) -> String {
    let mut x = seed.bytes().fold(0x9e37_79b9_7f4a_7c15_u64, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
    });
    let mut file = fs::File::create(path).unwrap();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        hasher.update(&buf);
        file.write_all(&buf).unwrap();
    }
    file.sync_all().unwrap();
    format!("{:x}", hasher.finalize())
}

/// A cluster's spec, image and directories; runs `sftsan down` when dropped.
pub struct Cluster {
    /// The spec file the harness wrote, in the work directory.
    pub spec_path: PathBuf,
    /// The spec as loaded from that file.
    pub spec: ClusterSpec,
    /// The names sftsan gives the cluster's resources on the system.
    pub names: Names,
    /// `198.18.<n>.0/24`
    pub subnet: String,
    /// The base image (a raw file) and what it holds.
    pub image: PathBuf,
    /// The base image's size in bytes.
    pub image_size: u64,
    /// The sha256 of the base image's contents (lowercase hex).
    pub base_sha256: String,
    work: TempDir,
    cache: TempDir,
    _serial: MutexGuard<'static, ()>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let out = self.cli(&["down"]);
        if !out.status.success() {
            eprintln!("cleanup: sftsan down failed: {}", stderr(&out));
        }
    }
}

impl Cluster {
    /// The cluster's name, as in the spec.
    pub fn name(&self) -> &str {
        &self.spec.cluster.name
    }

    /// The spec's `state_dir`, inside the work directory.
    pub fn state_dir(&self) -> &Path {
        self.names.state_dir()
    }

    /// `cache.dir`: a directory of its own, outside the state directory.
    pub fn cache_dir(&self) -> &Path {
        self.cache.path()
    }

    /// A scratch directory that lives as long as the cluster.
    pub fn work_dir(&self) -> &Path {
        self.work.path()
    }

    /// The origin's name (`origin`).
    pub fn origin(&self) -> &str {
        &self.spec.origin.name
    }

    /// The compute nodes in tree order.
    pub fn nodes(&self) -> Vec<String> {
        self.spec.nodes.iter().map(|n| n.name.clone()).collect()
    }

    /// The last node: a leaf of the tree.
    pub fn leaf(&self) -> String {
        self.spec.nodes.last().expect("a node").name.clone()
    }

    /// `sftsan ARGS... SPEC`
    pub fn cli(&self, args: &[&str]) -> Output {
        self.cli_env(args, &[])
    }

    /// [`Self::cli`] with extra environment variables.
    pub fn cli_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        let spec = self.spec_path.as_os_str();
        sftsan_env(args.iter().map(OsStr::new).chain([spec]), env)
    }

    /// `sftsan up`, which must succeed; returns its stderr (progress and summary).
    pub fn up(&self) -> String {
        let out = self.cli(&["up"]);
        assert!(out.status.success(), "sftsan up failed:\n{}", stderr(&out));
        stderr(&out)
    }

    /// `sftsan down`, which must succeed.
    pub fn down(&self) {
        let out = self.cli(&["down"]);
        assert!(
            out.status.success(),
            "sftsan down failed:\n{}",
            stderr(&out)
        );
    }

    /// `sftsan status --json`, which must succeed, parsed.
    pub fn status_json(&self) -> Value {
        let out = self.cli(&["status", "--json"]);
        assert!(
            out.status.success(),
            "sftsan status failed:\n{}",
            stderr(&out)
        );
        serde_json::from_str(&stdout(&out)).expect("status --json prints JSON")
    }

    /// One node's entry of `status --json`.
    pub fn node_status(&self, node: &str) -> Value {
        let status = self.status_json();
        let nodes = status["nodes"].as_array().expect("nodes");
        let found = nodes.iter().find(|n| n["name"] == node);
        found
            .unwrap_or_else(|| panic!("{node} not in {status}"))
            .clone()
    }

    /// Where snapshot `index` (1-based) of `node` is on disk.
    pub fn snapshot_file(&self, node: &str, index: u32) -> PathBuf {
        self.names.snapshot_file(node, index)
    }

    /// `program` run inside the node's network namespace.
    pub fn in_node(&self, node: &str, program: &str) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/var/run/netns/{}", self.names.netns(node)))
            .arg(program);
        cmd
    }

    /// Reads a snapshot whole, as a VM on the node would, and returns its sha256.
    pub fn read_snapshot_sha256(&self, node: &str, index: u32) -> String {
        hash_and_remove(&self.copy_snapshot(node, index))
    }

    /// [`Self::read_snapshot_sha256`] of many snapshots: read one after another, so the tree
    /// serves one reader at a time, while up to two copies are hashed on other threads.
    pub fn read_snapshots_sha256(&self, snapshots: &[(String, u32)]) -> Vec<String> {
        std::thread::scope(|s| {
            let mut hashing = std::collections::VecDeque::new();
            let mut hashes = Vec::new();
            for (node, index) in snapshots {
                if hashing.len() == 2 {
                    hashes.push(join(hashing.pop_front().unwrap()));
                }
                let copy = self.copy_snapshot(node, *index);
                hashing.push_back(s.spawn(move || hash_and_remove(&copy)));
            }
            hashes.extend(hashing.into_iter().map(join));
            hashes
        })
    }

    /// `qemu-img convert -O raw` of the snapshot, in the node's namespace, to a scratch file.
    fn copy_snapshot(&self, node: &str, index: u32) -> PathBuf {
        let copy = self.work_dir().join(format!("read-{node}-{index}.raw"));
        checked(
            self.in_node(node, "qemu-img")
                .args(["convert", "-O", "raw"])
                .arg(self.snapshot_file(node, index))
                .arg(&copy),
        );
        copy
    }

    /// `qemu-io -c CMD <snapshot>` on the node; returns its stdout.
    pub fn qemu_io(&self, node: &str, index: u32, command: &str) -> String {
        checked(
            self.in_node(node, "qemu-io")
                .args(["-c", command])
                .arg(self.snapshot_file(node, index)),
        )
    }

    /// Whether `len` bytes at `offset` of the snapshot all read as `pattern`, by the output
    /// of `qemu-io -c "read -P ..."` (some versions exit 0 when the check fails).
    pub fn has_pattern(&self, node: &str, index: u32, pattern: u8, offset: u64, len: u64) -> bool {
        let mut cmd = self.in_node(node, "qemu-io");
        cmd.arg("-c")
            .arg(format!("read -P {pattern:#04x} {offset} {len}"))
            .arg(self.snapshot_file(node, index));
        let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
        if stdout(&out).contains("Pattern verification failed") {
            return false;
        }
        assert!(out.status.success(), "{cmd:?}: {}", stderr(&out));
        true
    }

    /// Bytes `node` sent: the receive counter of its veth's root-namespace end.
    pub fn veth_rx_bytes(&self, node: &str) -> u64 {
        let veth = self.names.veth_host(node);
        let path = format!("/sys/class/net/{veth}/statistics/rx_bytes");
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        text.trim().parse().unwrap()
    }

    /// Bytes of the image the node's cache file holds on disk (`qemu-img map`).
    pub fn cache_present_bytes(&self, node: &str) -> u64 {
        let map = checked(
            Command::new("qemu-img")
                .args(["map", "-U", "--output=json"])
                .arg(self.names.cache_file(node)),
        );
        let map: Value = serde_json::from_str(&map).expect("qemu-img map JSON");
        map.as_array()
            .expect("extents")
            .iter()
            .filter(|e| e["present"] == true)
            .map(|e| e["length"].as_u64().unwrap())
            .sum()
    }

    /// Pid in a node's `<state_dir>/run/<node>/<name>.pid`.
    pub fn pid(&self, node: &str, name: &str) -> i32 {
        let path = self.names.run_dir(node).join(format!("{name}.pid"));
        let text = fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
        text.trim().parse().unwrap()
    }

    /// What a reboot does to a local cluster: its daemons and keepers die (SIGKILL: only
    /// what the keepers made durable is on disk), its namespaces, veths, bridge and guard
    /// route are gone; its files and its journal stay.
    pub fn power_cut(&self) {
        for p in self.processes() {
            let pid: i32 = p.split_whitespace().next().unwrap().parse().unwrap();
            // SAFETY: kill(2) on a pid just read from /proc.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        assert!(
            eventually(Duration::from_secs(10), || self.processes().is_empty()),
            "processes survived SIGKILL: {:?}",
            self.processes()
        );
        for ns in self.namespaces() {
            checked(Command::new("ip").args(["netns", "delete", &ns]));
        }
        let bridge = self.names.bridge();
        if Path::new("/sys/class/net").join(&bridge).exists() {
            checked(Command::new("ip").args(["link", "delete", &bridge]));
        }
        checked(Command::new("ip").args(["route", "delete", "unreachable", &self.subnet]));
    }

    /// Live processes whose command line mentions the state or cache directory, as
    /// `<pid> <argv>`.
    pub fn processes(&self) -> Vec<String> {
        let dirs = [self.state_dir(), self.cache_dir()].map(|d| d.display().to_string());
        let mut found = Vec::new();
        for entry in fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|p| p.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(raw) = fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let argv = String::from_utf8_lossy(&raw).replace('\0', " ");
            if dirs.iter().any(|d| argv.contains(d.as_str())) && !process_gone(pid) {
                found.push(format!("{pid} {}", argv.trim_end()));
            }
        }
        found.sort();
        found
    }

    /// Network namespaces named after this cluster.
    pub fn namespaces(&self) -> Vec<String> {
        let prefix = format!("{}-{}-", sftsan_core::names::PREFIX, self.name());
        checked(Command::new("ip").args(["netns", "list"]))
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| ns.starts_with(&prefix))
            .map(String::from)
            .collect()
    }

    /// Every path under the state and cache directories, sorted.
    pub fn files(&self) -> Vec<PathBuf> {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
                out.push(entry.path());
                if entry.file_type().is_ok_and(|t| t.is_dir()) {
                    walk(&entry.path(), out);
                }
            }
        }
        let mut out = Vec::new();
        walk(self.state_dir(), &mut out);
        walk(self.cache_dir(), &mut out);
        out.sort();
        out
    }

    /// Nothing of the cluster is left on the system: processes, namespaces, interfaces,
    /// the guard route, mounts, loop devices, files.
    pub fn assert_no_leftovers(&self) {
        let mut left: Vec<String> = self
            .processes()
            .into_iter()
            .map(|p| format!("process {p}"))
            .collect();
        left.extend(
            self.namespaces()
                .into_iter()
                .map(|ns| format!("netns {ns}")),
        );
        let nodes = std::iter::once(self.origin().to_string()).chain(self.nodes());
        let links = [self.names.bridge()]
            .into_iter()
            .chain(nodes.flat_map(|n| [self.names.veth_host(&n), self.names.veth_peer(&n)]));
        for link in links {
            if Path::new("/sys/class/net").join(&link).exists() {
                left.push(format!("interface {link}"));
            }
        }
        let routes =
            checked(Command::new("ip").args(["-j", "route", "show", "type", "unreachable"]));
        let routes: Value = serde_json::from_str(&routes).unwrap_or(Value::Null);
        if routes
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["dst"] == self.subnet.as_str()))
        {
            left.push(format!("unreachable route {}", self.subnet));
        }
        let netns_mount = format!("/netns/{}-{}-", sftsan_core::names::PREFIX, self.name());
        let dirs = [self.state_dir(), self.cache_dir()].map(|d| d.display().to_string());
        let mut markers: Vec<&str> = dirs.iter().map(String::as_str).collect();
        markers.push(&netns_mount);
        for line in fs::read_to_string("/proc/mounts").unwrap().lines() {
            if markers.iter().any(|m| line.contains(m)) {
                left.push(format!("mount {line}"));
            }
        }
        let tgtd_socket = format!("/var/run/tgtd/socket.{}", self.names.tgt_control_port());
        if Path::new(&tgtd_socket).exists() {
            left.push(format!("tgtd control socket {tgtd_socket}"));
        }
        for line in checked(Command::new("losetup").arg("-a")).lines() {
            if dirs.iter().any(|d| line.contains(d.as_str())) {
                left.push(format!("loop device {line}"));
            }
        }
        let lock = self.names.lock();
        for file in self.files() {
            if file != lock {
                left.push(format!("file {}", file.display()));
            }
        }
        assert!(
            left.is_empty(),
            "cluster {} left behind:\n  {}",
            self.name(),
            left.join("\n  ")
        );
    }
}

/// Fails unless this process is root on a kernel with every feature of `features`
/// (named with its module when missing).
pub fn require_kernel(features: &[sftsan_core::backends::kernel::probe::Feature]) {
    use sftsan_core::backends::kernel::probe;
    // SAFETY: geteuid cannot fail.
    assert_eq!(unsafe { libc::geteuid() }, 0, "kernel-path tests need root");
    if let Some(why) = probe::report(&probe::missing(features)) {
        panic!("{why}");
    }
}

/// True inside the kernel tier's guest, where every kernel feature test must run.
pub fn in_kernel_tier() -> bool {
    std::env::var_os("SFTSAN_KERNEL_TIER").is_some()
}

/// `/dev/<name>` of a block device, found from its dev_t through sysfs (no udev needed).
pub fn block_device_path(major: u32, minor: u32) -> PathBuf {
    let uevent = fs::read_to_string(format!("/sys/dev/block/{major}:{minor}/uevent"))
        .unwrap_or_else(|e| panic!("no sysfs entry for block device {major}:{minor}: {e}"));
    let name = uevent
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .unwrap_or_else(|| panic!("no DEVNAME for {major}:{minor}"));
    Path::new("/dev").join(name)
}
