//! A node's qemu-storage-daemon killed under a running guest that reads its disk: the
//! VM pauses on the I/O error instead of failing the guest's reads (its disk stops on
//! errors), `sftsan up` revives the daemon, `sftsan vm resume` resumes the VM, and the
//! guest reads on, every pass identical to the image, never having seen an error. Needs
//! root, libvirtd, QEMU and the boot image of sftsan-bench (built here if missing); see
//! common/mod.rs for the libvirtd harness.

mod common;
mod guest;

use std::time::{Duration, Instant};

use common::*;
use guest::ReadingGuest;
use sftsan_libvirt::libvirt::{PauseReason, RunState};

fn table_row<'a>(out: &'a str, vm: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(vm))
        .unwrap_or_else(|| panic!("no row for {vm}:\n{out}"))
}

#[test]
#[ignore = "root tier: needs root, libvirtd, QEMU and sftsan-bench's boot image (scripts/test.sh runs it)"]
fn a_vm_paused_by_its_nodes_daemon_dying_resumes_and_reads_the_image() {
    require_libvirt();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvioerr", 12, 1, 1, 1, &lvd.uri);
    let image_sha = sftsan_tests::sha256_file(&c.work.path().join("base.raw"));

    let guest = ReadingGuest::new(c.work.path());
    let template_path = c.work.path().join("guest.xml");
    std::fs::write(&template_path, guest.template()).unwrap();
    c.vm_ok("define", &["--template", template_path.to_str().unwrap()]);
    let name = "lvioerr-n1-1";
    let lv = lvd.connect();
    let disk = lv.domain(name).unwrap().disks().remove(0);
    assert!(
        disk.stops_on_error(),
        "libvirt kept the disk's error policies: {disk:?}"
    );
    c.vm_ok("start", &[]);

    // The guest reads its whole disk twice, right.
    let booted = Instant::now();
    let read_twice =
        sftsan_tests::eventually(Duration::from_secs(180), || guest.console().0.len() >= 2);
    let (passes, other) = guest.console();
    assert!(
        read_twice,
        "the guest did not read its disk twice in 180 s: {passes:?} {other:?}\n{}",
        lvd.logs()
    );
    eprintln!(
        "guest reading its disk: {} passes {:.1}s after start",
        passes.len(),
        booted.elapsed().as_secs_f64()
    );

    // Twice the node's daemon dies while the guest reads. The first time `vm resume` is
    // also run while the node is down (QEMU's NBD client then starts reconnecting in the
    // background); the second time only after `up` (its first retry after the break fails
    // and starts the reconnect: a later resume sticks).
    for resume_while_down in [true, false] {
        let pid_file = c.names.run_dir("n1").join("daemon.pid");
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
        let passes_before = guest.console().0.len();
        let killed = Instant::now();
        // SAFETY: signals the node's daemon, checked above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let mut state = RunState::Running;
        let paused = sftsan_tests::eventually(Duration::from_secs(30), || {
            state = lv.run_state(name).unwrap();
            state != RunState::Running
        });
        assert!(paused, "still running 30 s after the kill\n{}", lvd.logs());
        assert_eq!(
            state,
            RunState::Paused(PauseReason::IoError),
            "{}",
            lvd.logs()
        );
        let errors = lv.disk_errors(name).unwrap();
        assert!(errors.iter().any(|e| e.disk == "vda"), "{errors:?}");
        eprintln!(
            "paused ({state}) {:.3}s after the kill; libvirt's disk errors: {errors:?}",
            killed.elapsed().as_secs_f64()
        );
        let out = c.vm_ok("list", &[]);
        assert!(
            table_row(&stdout(&out), name).contains("paused (I/O error), snapshot present"),
            "{}",
            stdout(&out)
        );
        // Paused: the guest reads nothing more (at most the pass it was in ends).
        let (passes, _) = guest.console();
        assert!(passes.len() <= passes_before + 1, "{passes:?}");

        if resume_while_down {
            // Safe to run now: the VM pauses again on every resume, and the command says
            // so and fails.
            let out = c.vm("resume", &["--wait", "4s"]);
            let text = stdout(&out);
            eprintln!("sftsan vm resume, the node down:\n{text}");
            assert!(!out.status.success(), "{text}");
            assert!(
                table_row(&text, name).contains("paused again"),
                "{text}{}",
                stderr(&out)
            );
            assert!(matches!(lv.run_state(name).unwrap(), RunState::Paused(_)));
        }

        // The node comes back, and the VM with it.
        let up = c.sftsan(&["up"]);
        assert!(up.status.success(), "{}", stderr(&up));
        assert!(c.node_is_up("n1"));
        let t = Instant::now();
        let out = c.vm_ok("resume", &[]);
        let text = stdout(&out);
        eprintln!(
            "sftsan vm resume after up ({:.1}s):\n{text}",
            t.elapsed().as_secs_f64()
        );
        assert!(table_row(&text, name).contains(" resumed"), "{text}");
        assert_eq!(lv.run_state(name).unwrap(), RunState::Running);

        // The guest reads on: two more whole passes.
        let last = guest.last_pass();
        let read_on =
            sftsan_tests::eventually(Duration::from_secs(120), || guest.last_pass() >= last + 2);
        assert!(
            read_on,
            "no new passes after the resume: {:?}\n{}",
            guest.console(),
            lvd.logs()
        );
        assert_eq!(
            lv.run_state(name).unwrap(),
            RunState::Running,
            "{}",
            lvd.logs()
        );
    }

    // Every pass of the whole run read the image, and the guest saw no error.
    assert_eq!(guest.errors(), Vec::<String>::new(), "the guest saw errors");
    let (passes, _) = guest.console();
    for (n, digest) in &passes {
        assert_eq!(digest, &image_sha, "pass {n}: {passes:?}");
    }
    eprintln!(
        "{} passes, each the image ({image_sha}); no error on the console",
        passes.len()
    );

    // Safe to run any time: a running VM is left as it is, and one its user paused too.
    let out = c.vm_ok("resume", &[]);
    assert!(
        table_row(&stdout(&out), name).contains("running: nothing to do"),
        "{}",
        stdout(&out)
    );
    lv.suspend(name).unwrap();
    let out = c.vm_ok("resume", &[name]);
    assert!(
        table_row(&stdout(&out), name).contains("paused (user): left alone"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        lv.run_state(name).unwrap(),
        RunState::Paused(PauseReason::User)
    );
    lv.resume(name).unwrap();
    assert_eq!(lv.run_state(name).unwrap(), RunState::Running);
}
