//! The initiator side of the kernel path: the libiscsi probe of a parent's target and the
//! open-iscsi session resource, against a LIO target that each test sets up by raw configfs
//! writes (a fileio LUN over a file of known content, a TPG on 127.0.0.1:3260, ACLs with
//! CHAP, the LUN read-only). On a kernel without LIO or iscsi_tcp these skip with the
//! missing features named; the kernel tier (tests/kernel-vm/run) runs them in a guest.

use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use sftsan_core::backends::kernel::initiator::{
    ensure_iscsid, iscsid_listening, sessions, stop_started_iscsid, Chap, IscsiSession, Iscsid,
};
use sftsan_core::backends::kernel::probe::Feature;
use sftsan_core::backends::kernel::target_probe::{probe_target, ProbeError};
use sftsan_core::resources::{Ctx, Observed, Resource, Tools};
use sftsan_core::transport::LocalTransport;
use sftsan_tests::{in_kernel_tier, require_kernel, MIB};

const CONFIGFS: &str = "/sys/kernel/config/target";
const PORTAL: &str = "127.0.0.1:3260";
const TIMEOUT: Duration = Duration::from_secs(10);

/// Tests share port 3260 and the kernel's session list: one at a time.
fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|d| d.join(program).is_file()))
}

/// Fails unless this kernel (and userland) can run the test: LIO always, the kernel
/// initiator and open-iscsi's programs when `initiator`.
fn require_ready(initiator: bool) {
    let mut needs = vec![Feature::Configfs, Feature::LioIscsiTarget];
    if initiator {
        needs.push(Feature::IscsiInitiator);
    }
    require_kernel(&needs);
    assert!(
        Path::new(CONFIGFS).is_dir(),
        "configfs is not mounted at {CONFIGFS}"
    );
    if initiator {
        if let Some(tool) = ["iscsid", "iscsiadm"].into_iter().find(|t| !on_path(t)) {
            panic!("{tool} (open-iscsi) is not installed");
        }
    }
}

fn ctx() -> Ctx {
    Ctx {
        transport: Arc::new(LocalTransport),
        tools: Arc::new(Tools::from_env()),
    }
}

fn portal() -> SocketAddr {
    PORTAL.parse().unwrap()
}

/// `size` bytes of a xorshift stream seeded by `seed`: no two blocks alike.
fn pattern(size: u64, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(size as usize);
    while (out.len() as u64) < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(size as usize);
    out
}

/// An initiator the test target admits, with its CHAP credentials.
#[derive(Clone)]
struct Admitted {
    iqn: String,
    user: String,
    secret: String,
}

fn admitted(n: u32) -> Admitted {
    Admitted {
        iqn: format!("iqn.2014-12.org.sftsan:test.node.n{n}"),
        user: format!("n{n}-user"),
        secret: format!("n{n}-secret-0123"),
    }
}

/// A LIO iSCSI target made by raw configfs writes: a fileio backstore over a file of known
/// content, TPG 1 on 127.0.0.1:3260 with authentication, LUN 0 mapped read-only to each
/// admitted initiator (CHAP), no demo mode. Everything it made is removed when dropped,
/// in reverse order, also when the test fails.
struct LioTarget {
    iqn: String,
    file: PathBuf,
    content: Vec<u8>,
    tpg: PathBuf,
    /// configfs directories and links made, in order.
    made: Vec<PathBuf>,
    _dir: tempfile::TempDir,
}

impl LioTarget {
    fn new(name: &str, size: u64, initiators: &[&Admitted]) -> LioTarget {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lun.img");
        let content = pattern(size, 0x5f7a_11c3 ^ size);
        fs::write(&file, &content).unwrap();
        let iqn = format!("iqn.2014-12.org.sftsan:test.target.{name}");
        let c = Path::new(CONFIGFS);
        let mut t = LioTarget {
            tpg: c.join("iscsi").join(&iqn).join("tpgt_1"),
            iqn,
            file,
            content,
            made: Vec::new(),
            _dir: dir,
        };
        // A fileio HBA of its own, so removing it never touches another test's devices.
        let hba = c.join(format!("core/fileio_{}", 7000 + std::process::id() % 1000));
        let dev = hba.join(format!("sftsan_test_{name}"));
        t.mkdir(&hba);
        t.mkdir(&dev);
        write(
            &dev.join("control"),
            &format!("fd_dev_name={},fd_dev_size={size}", t.file.display()),
        );
        write(&dev.join("enable"), "1");
        // The fabric's directory appears on its first mkdir (and stays: other targets).
        let fabric = c.join("iscsi");
        if !fabric.is_dir() {
            fs::create_dir(&fabric).unwrap_or_else(|e| panic!("mkdir {}: {e}", fabric.display()));
        }
        t.mkdir(&fabric.join(&t.iqn));
        let tpg = t.tpg.clone();
        t.mkdir(&tpg);
        t.mkdir(&tpg.join("lun/lun_0"));
        t.link(&dev, &tpg.join("lun/lun_0/port"));
        t.mkdir(&tpg.join("np").join(PORTAL));
        write(&tpg.join("attrib/authentication"), "1");
        write(&tpg.join("attrib/generate_node_acls"), "0");
        for i in initiators {
            let acl = tpg.join("acls").join(&i.iqn);
            t.mkdir(&acl);
            t.mkdir(&acl.join("lun_0"));
            t.link(&tpg.join("lun/lun_0"), &acl.join("lun_0/map"));
            write(&acl.join("lun_0/write_protect"), "1");
            write(&acl.join("auth/userid"), &i.user);
            write(&acl.join("auth/password"), &i.secret);
        }
        write(&tpg.join("enable"), "1");
        t
    }

    fn size(&self) -> u64 {
        self.content.len() as u64
    }

    fn mkdir(&mut self, path: &Path) {
        fs::create_dir(path).unwrap_or_else(|e| panic!("mkdir {}: {e}", path.display()));
        self.made.push(path.to_path_buf());
    }

    fn link(&mut self, target: &Path, link: &Path) {
        symlink(target, link).unwrap_or_else(|e| panic!("ln -s {}: {e}", link.display()));
        self.made.push(link.to_path_buf());
    }

    /// The backing file still holds what the test wrote there.
    fn assert_unchanged(&self) {
        assert!(
            fs::read(&self.file).unwrap() == self.content,
            "the LUN's backing file was modified"
        );
    }
}

fn write(path: &Path, value: &str) {
    // Exactly these bytes: LIO keeps a trailing newline as part of CHAP credentials.
    fs::write(path, value).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

impl Drop for LioTarget {
    fn drop(&mut self) {
        let _ = fs::write(self.tpg.join("enable"), "0");
        for path in self.made.iter().rev() {
            let gone = if path.is_symlink() {
                fs::remove_file(path)
            } else {
                fs::remove_dir(path)
            };
            if let Err(e) = gone {
                eprintln!("cleanup: {}: {e}", path.display());
            }
        }
    }
}

/// A session resource that is torn down when dropped (also when the test fails).
struct Attached {
    session: IscsiSession,
}

impl Drop for Attached {
    fn drop(&mut self) {
        if let Err(e) = self.session.teardown(&ctx()) {
            eprintln!("cleanup: {e}");
        }
    }
}

fn session_for(target: &LioTarget, node: &str, who: &Admitted) -> IscsiSession {
    IscsiSession {
        node: node.into(),
        parent: "parent".into(),
        portal: portal(),
        target: target.iqn.clone(),
        lun: 0,
        initiator: who.iqn.clone(),
        chap: Some(Chap {
            username: who.user.clone(),
            password: who.secret.clone(),
        }),
        size: target.size(),
        timeout_ms: TIMEOUT.as_millis() as u64,
        replacement_timeout_s: 3,
    }
}

fn probe(target: &LioTarget, who: &Admitted) -> Result<(), ProbeError> {
    probe_target(
        portal(),
        &target.iqn,
        0,
        &who.iqn,
        Some((&who.user, &who.secret)),
        target.size(),
        TIMEOUT,
    )
}

/// The node records open-iscsi has for `target` (none: iscsiadm exits 21).
fn node_records(target: &str) -> Option<String> {
    let out = Command::new("iscsiadm")
        .args(["-m", "node", "-T", target])
        .output()
        .expect("iscsiadm runs");
    match out.status.code() {
        Some(21) => None,
        Some(0) => Some(String::from_utf8_lossy(&out.stdout).into_owned()),
        other => panic!(
            "iscsiadm -m node -T {target}: {other:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

fn iface_exists(iface: &str) -> bool {
    Command::new("iscsiadm")
        .args(["-m", "iface", "-I", iface])
        .output()
        .expect("iscsiadm runs")
        .status
        .success()
}

/// Nothing of `s` is left: no kernel session at all, no node record, no iface record.
fn assert_nothing_left(s: &IscsiSession) {
    let left: Vec<_> = fs::read_dir("/sys/class/iscsi_session")
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "iSCSI sessions left: {left:?}");
    assert_eq!(
        node_records(&s.target),
        None,
        "a node record of {} is left",
        s.target
    );
    assert!(
        !iface_exists(&s.iface()),
        "iface record {} is left",
        s.iface()
    );
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn probe_accepts_the_right_target_lun_size_and_chap() {
    require_ready(false);
    let _serial = serial();
    let n1 = admitted(1);
    let target = LioTarget::new("probe-ok", 8 * MIB, &[&n1]);
    probe(&target, &n1).expect("the probe of a correct target succeeds");
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn probe_reports_an_unreachable_portal() {
    require_ready(false);
    let _serial = serial();
    let n1 = admitted(1);
    let target = LioTarget::new("probe-port", 8 * MIB, &[&n1]);
    let wrong: SocketAddr = "127.0.0.1:3261".parse().unwrap();
    let secret = Some((n1.user.as_str(), n1.secret.as_str()));
    let e = probe_target(
        wrong,
        &target.iqn,
        0,
        &n1.iqn,
        secret,
        target.size(),
        TIMEOUT,
    )
    .unwrap_err();
    assert!(matches!(e, ProbeError::Unreachable { .. }), "{e}");
    let line = e.to_string();
    assert!(
        line.contains("127.0.0.1:3261") && line.contains("unreachable"),
        "{line}"
    );
    assert!(!line.contains('\n'));
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn probe_reports_a_missing_target() {
    require_ready(false);
    let _serial = serial();
    let n1 = admitted(1);
    let target = LioTarget::new("probe-iqn", 8 * MIB, &[&n1]);
    let missing = format!("{}-nonexistent", target.iqn);
    let secret = Some((n1.user.as_str(), n1.secret.as_str()));
    let e = probe_target(
        portal(),
        &missing,
        0,
        &n1.iqn,
        secret,
        target.size(),
        TIMEOUT,
    )
    .unwrap_err();
    assert!(matches!(e, ProbeError::TargetMissing { .. }), "{e}");
    let line = e.to_string();
    assert!(
        line.contains(&missing) && line.contains("has no target"),
        "{line}"
    );
    // Discovery (SendTargets) named what the portal offers instead.
    let offered = line.split("; the portal offers ").nth(1).unwrap_or("");
    assert!(offered.contains(&target.iqn), "{line}");
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn probe_reports_a_wrong_lun_size_with_both_sizes() {
    require_ready(false);
    let _serial = serial();
    let n1 = admitted(1);
    let target = LioTarget::new("probe-size", 8 * MIB, &[&n1]);
    let secret = Some((n1.user.as_str(), n1.secret.as_str()));
    let expected = 16 * MIB;
    let e = probe_target(portal(), &target.iqn, 0, &n1.iqn, secret, expected, TIMEOUT).unwrap_err();
    assert_eq!(
        e,
        ProbeError::WrongSize {
            portal: portal(),
            target: target.iqn.clone(),
            lun: 0,
            expected,
            actual: 8 * MIB,
        }
    );
    let line = e.to_string();
    assert!(
        line.contains(&(8 * MIB).to_string()) && line.contains(&expected.to_string()),
        "{line}"
    );
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn probe_reports_a_wrong_chap_secret_as_an_authentication_failure() {
    require_ready(false);
    let _serial = serial();
    let n1 = admitted(1);
    let target = LioTarget::new("probe-chap", 8 * MIB, &[&n1]);
    let wrong = Some((n1.user.as_str(), "not-the-secret-42"));
    let e = probe_target(
        portal(),
        &target.iqn,
        0,
        &n1.iqn,
        wrong,
        target.size(),
        TIMEOUT,
    )
    .unwrap_err();
    assert!(matches!(e, ProbeError::AuthenticationFailed { .. }), "{e}");
    assert!(
        !e.to_string().contains("not-the-secret"),
        "the secret leaked: {e}"
    );
    // No credentials at all: the same refusal, said so.
    let e = probe_target(
        portal(),
        &target.iqn,
        0,
        &n1.iqn,
        None,
        target.size(),
        TIMEOUT,
    )
    .unwrap_err();
    assert!(
        matches!(
            e,
            ProbeError::AuthenticationFailed {
                chap_user: None,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn probe_reports_an_initiator_outside_the_acl() {
    require_ready(false);
    let _serial = serial();
    let (n1, stranger) = (admitted(1), admitted(9));
    let target = LioTarget::new("probe-acl", 8 * MIB, &[&n1]);
    let creds = Some((stranger.user.as_str(), stranger.secret.as_str()));
    let e = probe_target(
        portal(),
        &target.iqn,
        0,
        &stranger.iqn,
        creds,
        target.size(),
        TIMEOUT,
    )
    .unwrap_err();
    assert!(matches!(e, ProbeError::NotAuthorized { .. }), "{e}");
    assert!(e.to_string().contains(&stranger.iqn), "{e}");
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn a_session_attaches_the_lun_as_a_read_only_disk_and_tears_down_cleanly() {
    require_ready(true);
    let _serial = serial();
    let ctx = ctx();
    let n1 = admitted(1);
    let target = LioTarget::new("session", 8 * MIB, &[&n1]);
    let s = session_for(&target, "n1", &n1);
    assert_eq!(s.observe(&ctx).unwrap(), Observed::Absent);
    let attached = Attached { session: s.clone() };

    s.create(&ctx).expect("create");
    let disk = s.disk().expect("the session's disk");
    assert!(
        disk.node_matches(),
        "{} is not {}:{}",
        disk.path().display(),
        disk.major,
        disk.minor
    );
    assert_eq!(disk.size, target.size());
    let mut read = Vec::new();
    fs::File::open(disk.path())
        .unwrap()
        .read_to_end(&mut read)
        .unwrap();
    assert!(
        read == target.content,
        "{} differs from the LUN's file",
        disk.path().display()
    );

    // Present with the parameters asked for; creating again changes nothing.
    assert_eq!(s.observe(&ctx).unwrap(), Observed::Present(s.desired()));
    s.create(&ctx).expect("create again");
    let ours: Vec<_> = sessions()
        .into_iter()
        .filter(|x| x.target == target.iqn)
        .collect();
    assert_eq!(ours.len(), 1, "{ours:?}");
    assert_eq!(ours[0].initiator, n1.iqn);
    assert_eq!(s.disk(), Some(disk.clone()));

    // The LUN is write-protected: the kernel marks the disk read-only and refuses writes.
    assert!(disk.read_only, "{} is writable", disk.path().display());
    let wrote = OpenOptions::new()
        .write(true)
        .open(disk.path())
        .and_then(|mut f| {
            f.write_all(&[0xa5; 4096])?;
            f.sync_all()
        });
    assert!(
        wrote.is_err(),
        "a write to {} succeeded",
        disk.path().display()
    );
    target.assert_unchanged();

    s.teardown(&ctx).expect("teardown");
    assert_eq!(s.observe(&ctx).unwrap(), Observed::Absent);
    assert_nothing_left(&s);
    assert!(
        !disk.path().exists(),
        "{} outlived its session",
        disk.path().display()
    );
    // Tearing down what is gone does nothing.
    s.teardown(&ctx).expect("teardown again");
    drop(attached);
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn the_kernel_initiator_refuses_a_wrong_chap_secret_and_leaves_nothing() {
    require_ready(true);
    let _serial = serial();
    let ctx = ctx();
    let n1 = admitted(1);
    let target = LioTarget::new("chap", 8 * MIB, &[&n1]);
    let mut s = session_for(&target, "n1", &n1);
    s.chap.as_mut().unwrap().password = "not-the-secret-42".into();
    let _attached = Attached { session: s.clone() };
    ensure_iscsid(&ctx, TIMEOUT).expect("iscsid");

    // open-iscsi itself, without the probe: the target refuses the login.
    let e = s.login(&ctx).unwrap_err().to_string();
    assert!(e.contains("authentication failed"), "{e}");
    assert!(e.contains(&n1.iqn), "{e}");
    assert!(!e.contains("not-the-secret"), "the secret leaked: {e}");
    assert_nothing_left(&s);

    // Through create, the probe reports it first.
    let e = s.create(&ctx).unwrap_err().to_string();
    assert!(e.contains("authentication failed"), "{e}");
    assert_nothing_left(&s);
    target.assert_unchanged();
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn two_nodes_in_one_kernel_get_their_own_sessions_by_initiator_name() {
    require_ready(true);
    let _serial = serial();
    let ctx = ctx();
    let (n1, n2) = (admitted(1), admitted(2));
    let target = LioTarget::new("two", 4 * MIB, &[&n1, &n2]);
    let s1 = session_for(&target, "n1", &n1);
    let s2 = session_for(&target, "n2", &n2);
    let _a1 = Attached {
        session: s1.clone(),
    };
    let _a2 = Attached {
        session: s2.clone(),
    };
    s1.create(&ctx).expect("create n1");
    s2.create(&ctx).expect("create n2");
    let (d1, d2) = (s1.disk().expect("n1's disk"), s2.disk().expect("n2's disk"));
    assert_ne!(
        (d1.major, d1.minor),
        (d2.major, d2.minor),
        "both got {}",
        d1.path().display()
    );
    let mut by_initiator: Vec<String> = sessions()
        .into_iter()
        .filter(|x| x.target == target.iqn)
        .map(|x| x.initiator)
        .collect();
    by_initiator.sort();
    assert_eq!(by_initiator, [n1.iqn.clone(), n2.iqn.clone()]);
    assert_ne!(s1.iface(), s2.iface());

    // One node's teardown leaves the other's session and disk alone.
    s1.teardown(&ctx).expect("teardown n1");
    assert_eq!(s1.observe(&ctx).unwrap(), Observed::Absent);
    assert_eq!(s2.observe(&ctx).unwrap(), Observed::Present(s2.desired()));
    assert_eq!(s2.disk(), Some(d2));
    s2.teardown(&ctx).expect("teardown n2");
    assert_nothing_left(&s1);
    assert_nothing_left(&s2);
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn iscsid_is_started_once_and_only_the_one_sftsan_started_is_stopped() {
    require_ready(true);
    let _serial = serial();
    let ctx = ctx();
    // An iscsid left by an earlier test of this process is sftsan's: stop it first.
    stop_started_iscsid(TIMEOUT).expect("stopping an earlier iscsid");
    if iscsid_listening() {
        // A system iscsid: sftsan must use it and never stop it.
        assert_eq!(
            ensure_iscsid(&ctx, TIMEOUT).unwrap(),
            Iscsid::AlreadyRunning
        );
        assert_eq!(stop_started_iscsid(TIMEOUT).unwrap(), None);
        assert!(iscsid_listening());
        assert!(
            !in_kernel_tier(),
            "the kernel tier's guest has no iscsid of its own"
        );
        return;
    }
    let Iscsid::Started { pid } = ensure_iscsid(&ctx, TIMEOUT).unwrap() else {
        panic!("nothing listened, yet iscsid was not started");
    };
    assert!(iscsid_listening());
    assert_eq!(
        ensure_iscsid(&ctx, TIMEOUT).unwrap(),
        Iscsid::AlreadyRunning
    );
    assert_eq!(stop_started_iscsid(TIMEOUT).unwrap(), Some(pid));
    assert!(!iscsid_listening(), "iscsid's socket is still there");
    assert!(sftsan_tests::process_gone(pid), "iscsid {pid} still runs");
    assert_eq!(stop_started_iscsid(TIMEOUT).unwrap(), None);
}

/// A systemd-udevd this test started (no rules): stopped, and its /run/udev removed, when
/// dropped, so later tests see a host without udevd again.
struct Udevd(std::process::Child);

impl Drop for Udevd {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes no pointers; the pid is of our own child, not yet reaped.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
        let _ = fs::remove_dir_all("/run/udev");
    }
}

/// Where udevd runs, a login waits on udev's events and returns only once udev has
/// initialized the disk (its database entry is there), as on a production host.
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn with_udevd_a_login_returns_once_udev_has_initialized_the_disk() {
    use sftsan_core::backends::kernel::uevents::{DeviceEvents, Source};
    use std::time::Instant;
    require_ready(true);
    let _serial = serial();
    let _udevd = if Path::new("/run/udev/control").exists() {
        None // this host runs udevd already: use it as it is
    } else {
        assert!(
            on_path("systemd-udevd"),
            "systemd-udevd (udev) is not installed"
        );
        let child = Command::new("systemd-udevd")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("systemd-udevd starts");
        let udevd = Udevd(child);
        // Nothing announces the control socket: look for it until a deadline.
        let deadline = Instant::now() + TIMEOUT;
        while !Path::new("/run/udev/control").exists() {
            assert!(Instant::now() < deadline, "udevd made no control socket");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(udevd)
    };
    assert_eq!(Source::detect(), Source::Udev);
    let ctx = ctx();
    let n1 = admitted(1);
    let target = LioTarget::new("udev", 8 * MIB, &[&n1]);
    let s = session_for(&target, "n1", &n1);
    let attached = Attached { session: s.clone() };

    s.create(&ctx).expect("create");
    let disk = s.disk().expect("the session's disk");
    let db = format!("/run/udev/data/b{}:{}", disk.major, disk.minor);
    assert!(
        Path::new(&db).exists(),
        "create returned before udev initialized {} ({db} is missing)",
        disk.path().display()
    );
    let events = DeviceEvents::subscribe(&["block"]).unwrap();
    assert_eq!(events.source(), Source::Udev);
    assert!(events.settled(disk.major, disk.minor));

    s.teardown(&ctx).expect("teardown");
    assert_nothing_left(&s);
    drop(attached);
}
