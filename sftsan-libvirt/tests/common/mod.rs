//! The harness of sftsan-libvirt's tests against a real libvirtd with QEMU (TCG).
//!
//! One libvirtd + virtlogd pair serves every test of the process. It runs without systemd
//! (`virtlogd -d`, `libvirtd -d`) in a private mount namespace, where the harness's own
//! directories are bind-mounted over /etc/libvirt, /run/libvirt, /var/lib/libvirt,
//! /var/log/libvirt and /var/cache/libvirt: the host's libvirt configuration is neither
//! used nor touched, the sftsan hook is installed in the private /etc/libvirt/hooks before
//! the daemon starts, and clients reach it through `qemu:///system?socket=...`.
//!
//! /dev/kvm is hidden in that namespace (an empty file, mode 0600, bind-mounted over it).
//! Without that, libvirt 9.0 with QEMU 10 re-probes QEMU's capabilities (~4 s, several
//! times) on every define and start: QEMU probes KVM as root before dropping to the
//! libvirt-qemu user and finds it, while libvirt's own check asks whether libvirt-qemu may
//! open /dev/kvm (root:root 0600 without udev: no), so every cached result looks stale
//! ("KVM was enabled when probing ..., but it is not available now"). With /dev/kvm
//! hidden both agree there is no KVM, and the capabilities are probed once.
//! SFTSAN_TEST_LIBVIRT_KEEP_KVM=1 leaves /dev/kvm visible, to measure the difference.
//!
//! The daemons (and any guest still running) are stopped when the test process exits,
//! also after failed tests (an atexit handler), and leftovers of a killed earlier run are
//! stopped before a new daemon starts. Tests take a process-wide lock: one at a time.
//!
//! Clusters here run in `mode = "host"` on 127.80.<n>.x: the guests' QEMU processes run in
//! the root network namespace and open their snapshot's NBD backing themselves, which a
//! local-mode cluster (its nodes in namespaces behind an unreachable route) would refuse.
//! In production this is the normal case: a node is a host, and its VMs run on it.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use sftsan_core::names::Names;
use sftsan_core::spec::{cache_needed, ClusterSpec};
use sftsan_libvirt::libvirt::Libvirt;

pub const MIB: u64 = 1 << 20;

/// Where a killed run's daemons are recorded, so the next run can stop them.
const PIDS_FILE: &str = "/run/sftsan-libvirt-test.pids";

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Fails unless this host can run the libvirt tests: root, libvirtd, QEMU and the storage
/// tools (the root tier's).
pub fn require_libvirt() {
    sftsan_tests::require_root_with(&[
        "libvirtd",
        "virtlogd",
        "qemu-system-x86_64",
        "qemu-storage-daemon",
        "qemu-img",
        "unshare",
    ]);
}

/// The workspace's target directory for this build.
fn target_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_sftsan-hook"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// `sftsan` (sftsan-cli's binary: the VM commands and the cache keeper) built beside
/// sftsan-hook, so that the hook finds it beside its own real path.
pub fn sftsan_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .args(["build", "-p", "sftsan-cli", "--bin", "sftsan"])
            .current_dir(workspace)
            .output()
            .expect("cannot run cargo");
        assert!(
            out.status.success(),
            "building sftsan failed:\n{}",
            stderr(&out)
        );
        let bin = target_dir().join("sftsan");
        assert!(bin.is_file(), "{} missing after the build", bin.display());
        bin
    })
}

pub fn hook_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sftsan-hook"))
}

/// A running libvirtd (with its virtlogd) in a private mount namespace.
pub struct Libvirtd {
    pub root: PathBuf,
    pub uri: String,
    pub kvm_hidden: bool,
    /// How long its start took (until it answered).
    pub startup: Duration,
}

impl Libvirtd {
    pub fn connect(&self) -> Libvirt {
        Libvirt::open(&self.uri).expect("connect to the test libvirtd")
    }

    /// The hook's log in the private /var/log/libvirt.
    pub fn hook_log(&self) -> String {
        fs::read_to_string(self.root.join("log/sftsan-hook.log")).unwrap_or_default()
    }

    pub fn daemon_log(&self) -> String {
        fs::read_to_string(self.root.join("log/libvirtd.log")).unwrap_or_default()
    }

    /// The last lines of the daemon's and the hook's logs, for failure messages.
    pub fn logs(&self) -> String {
        let tail = |s: String| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        format!(
            "--- libvirtd.log (tail)\n{}\n--- sftsan-hook.log (tail)\n{}",
            tail(self.daemon_log()),
            tail(self.hook_log())
        )
    }

    /// Stops libvirtd (guests keep running) and starts it again in the same mount
    /// namespace (the one virtlogd still holds); returns once it answers.
    pub fn restart_libvirtd(&self) {
        let pid = read_pid(&self.root.join("libvirtd.pid")).expect("libvirtd pid");
        stop_pid(pid, "libvirtd", Duration::from_secs(10));
        let logd = read_pid(&self.root.join("virtlogd.pid")).expect("virtlogd pid");
        let out = Command::new("nsenter")
            .arg(format!("--mount=/proc/{logd}/ns/mnt"))
            .args(["--", "libvirtd", "-d", "-p"])
            .arg(self.root.join("libvirtd.pid"))
            .env("PATH", path_with_sbin())
            .output()
            .expect("cannot run nsenter");
        assert!(
            out.status.success(),
            "restarting libvirtd: {}",
            stderr(&out)
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Libvirt::open(&self.uri).is_err() {
            assert!(
                Instant::now() < deadline,
                "libvirtd did not come back\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start() -> Libvirtd {
        stop_recorded();
        let started = Instant::now();
        let root = tempfile::Builder::new()
            .prefix("sftsan-libvirtd-")
            .tempdir()
            .unwrap()
            .keep();
        fs::set_permissions(&root, fs::Permissions::from_mode(0o755)).unwrap();
        let etc = root.join("etc");
        fs::create_dir_all(etc.join("hooks/qemu.d")).unwrap();
        // The hook, both ways libvirt finds one; both run, which also shows it idempotent.
        sftsan_bin();
        std::os::unix::fs::symlink(hook_bin(), etc.join("hooks/qemu")).unwrap();
        std::os::unix::fs::symlink(hook_bin(), etc.join("hooks/qemu.d/sftsan")).unwrap();
        // Debian's defaults (QEMU runs as libvirt-qemu), no networks, no autostart; no
        // private /dev per guest, since libvirt would try to move the /dev/kvm mount below
        // into it ("Unable to move ... mount to /dev/kvm: Invalid argument").
        fs::write(etc.join("qemu.conf"), "namespaces = []\n").unwrap();
        fs::write(
            etc.join("libvirtd.conf"),
            "log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n",
        )
        .unwrap();
        let hide = std::env::var_os("SFTSAN_TEST_LIBVIRT_KEEP_KVM").is_none();
        let script = r#"
            R=$1
            for d in run lib log cache; do mkdir -p "$R/$d"; done
            mkdir -p /etc/libvirt /run/libvirt /var/lib/libvirt /var/log/libvirt /var/cache/libvirt
            mount --bind "$R/etc" /etc/libvirt
            mount --bind "$R/run" /run/libvirt
            mount --bind "$R/lib" /var/lib/libvirt
            mount --bind "$R/log" /var/log/libvirt
            mount --bind "$R/cache" /var/cache/libvirt
            if [ "$2" = hide ] && [ -e /dev/kvm ]; then
                : > "$R/no-kvm"; chmod 600 "$R/no-kvm"
                mount --bind "$R/no-kvm" /dev/kvm
            fi
            virtlogd -d -p "$R/virtlogd.pid"
            libvirtd -d -p "$R/libvirtd.pid"
        "#;
        let out = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "/bin/sh", "-ec"])
            .arg(script)
            .arg("sh")
            .arg(&root)
            .arg(if hide { "hide" } else { "keep" })
            .env("PATH", path_with_sbin())
            .output()
            .expect("cannot run unshare");
        let uri = format!(
            "qemu:///system?socket={}",
            root.join("run/libvirt-sock").display()
        );
        let d = Libvirtd {
            root,
            uri,
            kvm_hidden: hide,
            startup: Duration::ZERO,
        };
        record_pids(&d);
        assert!(
            out.status.success(),
            "starting libvirtd failed: {}\n{}",
            stderr(&out),
            d.logs()
        );
        let deadline = Instant::now() + Duration::from_secs(30);
        while Libvirt::open(&d.uri).is_err() {
            assert!(
                Instant::now() < deadline,
                "libvirtd did not answer on {} within 30 s\n{}",
                d.uri,
                d.logs()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Libvirtd {
            startup: started.elapsed(),
            ..d
        }
    }
}

fn path_with_sbin() -> String {
    let path = std::env::var("PATH").unwrap_or_default();
    format!("{path}:/usr/local/sbin:/usr/sbin:/sbin")
}

fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn record_pids(d: &Libvirtd) {
    // The daemons write their pid files a moment after forking.
    let deadline = Instant::now() + Duration::from_secs(10);
    while (read_pid(&d.root.join("libvirtd.pid")).is_none()
        || read_pid(&d.root.join("virtlogd.pid")).is_none())
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = fs::write(PIDS_FILE, d.root.display().to_string());
}

fn alive(pid: i32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

fn cmdline(pid: i32) -> String {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| String::from_utf8_lossy(&b).replace('\0', " "))
        .unwrap_or_default()
}

/// Stops (TERM, then KILL after `grace`) a process if it still runs `program`.
fn stop_pid(pid: i32, program: &str, grace: Duration) {
    if !alive(pid) || !cmdline(pid).contains(program) {
        return;
    }
    // SAFETY: signals a process this harness started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}

/// Stops the guests, libvirtd and virtlogd of the harness rooted at `root`.
fn stop_root(root: &Path) {
    // Guests first: libvirtd leaves them running when it stops.
    for entry in fs::read_dir(root.join("run/qemu"))
        .into_iter()
        .flatten()
        .flatten()
    {
        if entry.path().extension() == Some(OsStr::new("pid")) {
            if let Some(pid) = read_pid(&entry.path()) {
                stop_pid(pid, "qemu-system", Duration::from_secs(2));
            }
        }
    }
    if let Some(pid) = read_pid(&root.join("libvirtd.pid")) {
        stop_pid(pid, "libvirtd", Duration::from_secs(10));
    }
    if let Some(pid) = read_pid(&root.join("virtlogd.pid")) {
        stop_pid(pid, "virtlogd", Duration::from_secs(5));
    }
    if std::env::var_os("SFTSAN_TEST_KEEP").is_none() {
        let _ = fs::remove_dir_all(root);
    }
}

/// Stops what an earlier, killed run left (recorded in PIDS_FILE).
fn stop_recorded() {
    if let Ok(root) = fs::read_to_string(PIDS_FILE) {
        let root = PathBuf::from(root.trim());
        if root.starts_with(std::env::temp_dir()) && root.join("etc").is_dir() {
            stop_root(&root);
        }
        let _ = fs::remove_file(PIDS_FILE);
    }
}

static HARNESS: Mutex<Option<Libvirtd>> = Mutex::new(None);

extern "C" fn stop_at_exit() {
    let guard = HARNESS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = guard.as_ref() {
        stop_root(&d.root);
        let _ = fs::remove_file(PIDS_FILE);
    }
}

/// The shared libvirtd, started on first use; the guard serializes the tests.
pub struct Harness {
    guard: MutexGuard<'static, Option<Libvirtd>>,
}

impl Harness {
    pub fn get() -> Harness {
        let mut guard = HARNESS.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            let d = Libvirtd::start();
            eprintln!(
                "harness: libvirtd up in {:.1}s at {} (/dev/kvm {})",
                d.startup.as_secs_f64(),
                d.uri,
                if d.kvm_hidden { "hidden" } else { "visible" }
            );
            // SAFETY: registers a plain extern "C" function.
            unsafe { libc::atexit(stop_at_exit) };
            *guard = Some(d);
        }
        Harness { guard }
    }

    pub fn libvirtd(&self) -> &Libvirtd {
        self.guard.as_ref().expect("started")
    }
}

/// Runs `sftsan vm ARGS...` to completion.
pub fn sftsan_vm<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    Command::new(sftsan_bin())
        .arg("vm")
        .args(args)
        .env_remove("RUST_LOG")
        .env_remove("LIBVIRT_DEFAULT_URI")
        .output()
        .expect("cannot run sftsan vm")
}

/// The fill byte of MiB `k` of the test image: every MiB reads as one pattern, none zero.
pub fn pattern(k: u64) -> u8 {
    0x11 + k as u8
}

/// A host-mode cluster on 127.80.<n>.x: origin .1, nodes n1, n2, ... at .11, .12, ...
pub struct TestCluster {
    pub name: String,
    pub work: tempfile::TempDir,
    pub spec_path: PathBuf,
    pub spec: ClusterSpec,
    pub names: Names,
    pub image_size: u64,
    pub uri: String,
}

impl TestCluster {
    pub fn create(
        name: &str,
        net: u8,
        nodes: usize,
        degree: u32,
        per_node: u32,
        uri: &str,
    ) -> TestCluster {
        let image_size = 16 * MIB;
        let work = tempfile::Builder::new()
            .prefix("sftsan-lvtest-")
            .tempdir()
            .unwrap();
        // QEMU runs as libvirt-qemu and must reach the snapshots below.
        fs::set_permissions(work.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let image = work.path().join("base.raw");
        let mut f = fs::File::create(&image).unwrap();
        for k in 0..image_size / MIB {
            f.write_all(&vec![pattern(k); MIB as usize]).unwrap();
        }
        f.sync_all().unwrap();
        let mut text = format!(
            "[cluster]\nname = {name:?}\nstate_dir = {state:?}\nmode = \"host\"\n\
             degree = {degree}\n\n\
             [image]\nname = \"base\"\nsource = {image:?}\n\n\
             [origin]\nname = \"origin\"\naddress = \"127.80.{net}.1\"\n\n\
             [cache]\nsize = {cache}\nflush_interval_ms = 200\n\n\
             [snapshots]\nper_node = {per_node}\n",
            state = work.path().join("state"),
            cache = cache_needed(image_size),
        );
        for i in 1..=nodes {
            text += &format!(
                "\n[[nodes]]\nname = \"n{i}\"\naddress = \"127.80.{net}.{}\"\n",
                10 + i
            );
        }
        let spec_path = work.path().join("spec.toml");
        fs::write(&spec_path, text).unwrap();
        let spec = ClusterSpec::load(&spec_path).unwrap();
        TestCluster {
            name: name.into(),
            names: Names::new(&spec),
            spec,
            spec_path,
            work,
            image_size,
            uri: uri.into(),
        }
    }

    /// `sftsan vm OP SPEC --connect URI ARGS...`
    pub fn vm(&self, op: &str, args: &[&str]) -> Output {
        let mut all: Vec<&OsStr> = vec![OsStr::new(op), self.spec_path.as_os_str()];
        all.extend([OsStr::new("--connect"), OsStr::new(&self.uri)]);
        all.extend(args.iter().map(OsStr::new));
        sftsan_vm(all)
    }

    /// `sftsan vm OP SPEC --connect URI ARGS...`, which must succeed.
    pub fn vm_ok(&self, op: &str, args: &[&str]) -> Output {
        let out = self.vm(op, args);
        assert!(
            out.status.success(),
            "sftsan vm {op}: {}{}",
            stdout(&out),
            stderr(&out)
        );
        out
    }

    pub fn sftsan(&self, args: &[&str]) -> Output {
        Command::new(sftsan_bin())
            .args(args)
            .arg(&self.spec_path)
            .env_remove("RUST_LOG")
            .output()
            .expect("cannot run sftsan")
    }

    /// Whether the node runs its daemon (its pid file names a live process).
    pub fn node_is_up(&self, node: &str) -> bool {
        fs::read_dir(self.names.run_dir(node))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().extension() == Some(OsStr::new("pid")))
            .filter_map(|e| read_pid(&e.path()))
            .any(alive)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        // This cluster's domains and pools, then the cluster.
        if let Ok(lv) = Libvirt::open(&self.uri) {
            for d in lv.sftsan_domains().unwrap_or_default() {
                if d.sftsan().is_some_and(|m| m.cluster == self.name) {
                    let _ = lv.destroy(&d.name());
                    let _ = lv.undefine(&d.name());
                }
            }
            for n in &self.spec.nodes {
                let _ = lv.remove_pool(&format!("sftsan-{}-{}-base", self.name, n.name));
            }
        }
        let out = self.sftsan(&["down"]);
        if !out.status.success() {
            eprintln!("cleanup: sftsan down failed: {}", stderr(&out));
        }
    }
}

/// Runs a `qemu-io` command on the guest's disk `vda` through its QEMU monitor (HMP, on
/// the virtio disk's backend) and returns what it printed. qemu-io prints to QEMU's
/// stdout, which libvirt's virtlogd writes to the domain's log: read it from there.
fn guest_qemu_io(
    lvd: &Libvirtd,
    lv: &Libvirt,
    domain: &str,
    command: &str,
    done: &[&str],
) -> Result<String, String> {
    let log = lvd.root.join("log/qemu").join(format!("{domain}.log"));
    let before = fs::metadata(&log).map(|m| m.len()).unwrap_or(0) as usize;
    let cmd = format!("qemu-io -d virtio-disk0/virtio-backend \"{command}\"");
    let out = lv.hmp(domain, &cmd).map_err(|e| e.to_string())?;
    if !out.trim().is_empty() {
        return Err(format!("{domain}: {cmd}: {}", out.trim()));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = fs::read(&log).unwrap_or_default();
        let new = String::from_utf8_lossy(text.get(before..).unwrap_or_default()).into_owned();
        if done.iter().any(|d| new.contains(d)) {
            return Ok(new);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{domain}: {cmd}: no answer in {} within 10 s (got {new:?})",
                log.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `len` bytes at `offset` of the guest's disk all read as `pattern`.
pub fn guest_reads(
    lvd: &Libvirtd,
    lv: &Libvirt,
    domain: &str,
    pattern: u8,
    offset: u64,
    len: u64,
) -> Result<(), String> {
    let ok = format!("read {len}/{len} bytes at offset {offset}");
    let cmd = format!("read -P {pattern:#04x} {offset} {len}");
    let out = guest_qemu_io(lvd, lv, domain, &cmd, &[&ok, "failed", "rror"])?;
    if out.contains(&ok) && !out.contains("failed") {
        Ok(())
    } else {
        Err(format!("{domain}: {cmd}: {}", out.trim()))
    }
}

pub fn guest_writes(
    lvd: &Libvirtd,
    lv: &Libvirt,
    domain: &str,
    pattern: u8,
    offset: u64,
    len: u64,
) -> Result<(), String> {
    let ok = format!("wrote {len}/{len} bytes at offset {offset}");
    let cmd = format!("write -P {pattern:#04x} {offset} {len}");
    let out = guest_qemu_io(lvd, lv, domain, &cmd, &[&ok, "failed", "rror"])?;
    if out.contains(&ok) {
        Ok(())
    } else {
        Err(format!("{domain}: {cmd}: {}", out.trim()))
    }
}

/// The guest's whole disk, MiB by MiB, against the image's patterns.
pub fn guest_reads_the_image(
    lvd: &Libvirtd,
    lv: &Libvirt,
    domain: &str,
    size: u64,
) -> Result<(), String> {
    (0..size / MIB).try_for_each(|k| guest_reads(lvd, lv, domain, pattern(k), k * MIB, MIB))
}
