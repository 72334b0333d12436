//! `sftsan vm resume` on a remote cluster: every compute host's libvirt reached over
//! qemu+ssh from the controller (see `sftsan_tests::hosts`: each host a namespace with its
//! own sshd, libvirtd and state). A guest on n1's host reads its disk while n1's daemon is
//! killed there; its VM pauses, `up` revives the daemon, and `vm resume` resumes it, while
//! the VM on n2's host that its user paused stays paused.

mod guest;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use guest::ReadingGuest;
use sftsan_tests::hosts::TestHosts;
use sftsan_tests::{eventually, sftsan, sftsan_bin, stderr, stdout, write_image, MIB};

/// Three hosts: the origin on h1, n1 on h2 and n2 on h3, libvirtd on h2 and h3. Dropping
/// it stops the guests and libvirtd the orderly way, then the hosts go with the rest.
struct Remote {
    hosts: TestHosts,
    spec: PathBuf,
}

impl Remote {
    fn sftsan(&self, args: &[&str], extra: &[&str]) -> Output {
        let mut argv: Vec<&OsStr> = args.iter().map(OsStr::new).collect();
        argv.push(self.spec.as_os_str());
        argv.extend(extra.iter().map(OsStr::new));
        sftsan(argv)
    }

    fn ok(&self, args: &[&str], extra: &[&str]) -> String {
        let out = self.sftsan(args, extra);
        assert!(
            out.status.success(),
            "sftsan {args:?} {extra:?}: {}{}\n{}\n{}",
            stdout(&out),
            stderr(&out),
            self.hosts.libvirt_log(1),
            self.hosts.libvirt_log(2)
        );
        stdout(&out)
    }

    /// `virsh ARGS` on host `i`, which must succeed; its output, trimmed.
    fn virsh(&self, i: usize, args: &[&str]) -> String {
        let out = self.hosts.virsh(i, args);
        assert!(out.status.success(), "virsh {args:?}: {}", stderr(&out));
        stdout(&out).trim().to_string()
    }

    /// A path under the state directory as host `i` has it (its private copy).
    fn on_host(&self, i: usize, path: &Path) -> PathBuf {
        let state = self.hosts.dir.path().join("state");
        self.hosts.hosts[i]
            .dir
            .join("private0")
            .join(path.strip_prefix(&state).unwrap())
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        for i in [1, 2] {
            self.hosts.stop_libvirtd(i);
        }
    }
}

fn row<'a>(table: &'a str, vm: &str) -> &'a str {
    table
        .lines()
        .find(|l| l.starts_with(vm))
        .unwrap_or_else(|| panic!("no row for {vm}:\n{table}"))
}

#[test]
#[ignore = "root tier: network namespaces, sshd, libvirtd, QEMU, sftsan-bench's boot image"]
fn vm_resume_on_a_remote_cluster_resumes_only_what_an_io_error_paused() {
    let hosts = TestHosts::new("sfrr", 82, 3, &["state"]);
    let image = hosts.dir.path().join("base.raw");
    let image_sha = write_image(&image, 16 * MIB, "sfrr");
    let program = sftsan_bin().display().to_string();
    let spec = hosts.dir.path().join("spec.toml");
    std::fs::write(&spec, hosts.remote_spec("sfrr", &image, 0, &program, "")).unwrap();
    let c = Remote { hosts, spec };
    // The hook finds `sftsan` beside its real path: both are this build's.
    let hook = Path::new(env!("CARGO_BIN_EXE_sftsan-hook"));
    for i in [1, 2] {
        c.hosts.start_libvirtd(i, hook);
    }
    c.ok(&["hosts", "trust"], &[]);
    c.ok(&["up"], &[]);

    // n1's VM reads its disk in a loop; n2's is the default guest.
    let dir = c.hosts.dir.path().join("guest");
    std::fs::create_dir(&dir).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let guest = ReadingGuest::new(&dir);
    let template = dir.join("guest.xml");
    std::fs::write(&template, guest.template()).unwrap();
    let template = template.to_str().unwrap();
    c.ok(
        &["vm", "define"],
        &["--count", "1", "--node", "n1", "--template", template],
    );
    c.ok(&["vm", "define"], &["--count", "1", "--node", "n2"]);
    c.ok(&["vm", "start"], &["--count", "1"]);
    let (reader, paused_by_user) = ("sfrr-n1-1", "sfrr-n2-1");
    let xml = c.virsh(1, &["dumpxml", reader]);
    assert!(
        xml.contains("error_policy='stop' rerror_policy='stop'"),
        "{xml}"
    );
    assert!(
        eventually(Duration::from_secs(180), || guest.last_pass() >= 2),
        "the guest on h2 did not read its disk twice: {:?}\n{}",
        guest.console(),
        c.hosts.libvirt_log(1)
    );
    c.virsh(2, &["suspend", paused_by_user]);

    // n1's daemon dies on its host while the guest reads: the VM pauses.
    let pid_file = c.on_host(
        1,
        &sftsan_core::names::Names::new(&sftsan_core::spec::ClusterSpec::load(&c.spec).unwrap())
            .run_dir("n1")
            .join("daemon.pid"),
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    assert!(
        String::from_utf8_lossy(&cmdline).starts_with("qemu-storage-daemon"),
        "{pid_file:?} names no storage daemon"
    );
    // SAFETY: signals n1's daemon, checked above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(
        eventually(Duration::from_secs(30), || {
            c.virsh(1, &["domstate", "--reason", reader]) == "paused (I/O error)"
        }),
        "{reader}: {}",
        c.virsh(1, &["domstate", "--reason", reader])
    );

    // Back up, then resumed; the VM its user paused stays so.
    c.ok(&["up"], &[]);
    let table = c.ok(&["vm", "resume"], &[]);
    eprintln!("$ sftsan vm resume\n{table}");
    assert!(row(&table, reader).contains(" resumed"), "{table}");
    assert!(
        row(&table, paused_by_user).contains("paused (user): left alone"),
        "{table}"
    );
    assert_eq!(c.virsh(1, &["domstate", reader]), "running");
    assert_eq!(
        c.virsh(2, &["domstate", "--reason", paused_by_user]),
        "paused (user)"
    );
    let last = guest.last_pass();
    assert!(
        eventually(Duration::from_secs(120), || guest.last_pass() >= last + 2),
        "no new passes after the resume: {:?}",
        guest.console()
    );
    assert_eq!(guest.errors(), Vec::<String>::new(), "the guest saw errors");
    let (passes, _) = guest.console();
    for (n, digest) in &passes {
        assert_eq!(digest, &image_sha, "pass {n}: {passes:?}");
    }

    // A name on no host stops the command before anything is done.
    let out = c.sftsan(&["vm", "resume"], &["sfrr-n3-1"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("domain sfrr-n3-1: not one of cluster sfrr's domains"),
        "{}",
        stderr(&out)
    );

    c.ok(&["vm", "undefine"], &["--count", "1", "--remove-snapshots"]);
    c.ok(&["down"], &[]);
}
