//! A node's qemu-storage-daemon killed under a running guest that reads its disk: the
//! VM pauses on the I/O error instead of failing the guest's reads (its disk stops on
//! errors), `sftsan up` revives the daemon, `sftsan vm resume` resumes the VM, and the
//! guest reads on, every pass identical to the image, never having seen an error. Needs
//! root, libvirtd, QEMU and the boot image of sftsan-bench (built here if missing); see
//! common/mod.rs for the libvirtd harness.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use sftsan_libvirt::libvirt::{PauseReason, RunState};

/// Where sftsan-bench/boot-image/build leaves the guest image (kernel, initramfs).
const BOOT_IMAGE: &str = "/var/cache/sftsan/bench/boot-image";

/// The guest's /init, appended to the boot image's initramfs (a later archive's file wins):
/// the boot image's modules, then whole-disk reads of /dev/vda without the page cache,
/// one console line per pass with its digest, forever. Kernel messages of level error and
/// worse reach the console too (loglevel=4), so an I/O error the guest saw would show.
const GUEST_INIT: &str = r#"#!/bin/sh
export PATH=/bin:/sbin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp
while read -r need ko; do
    insmod "/lib/modules/$ko" 2>/dev/null && continue
    [ "$need" = optional ] || echo "sftsan-io cannot load $ko"
done </etc/sftsan-bench/modules
until [ -b /dev/vda ]; do usleep 10000; done
set -o pipefail
pass=0
while :; do
    pass=$((pass + 1))
    if sum=$(dd if=/dev/vda bs=1M iflag=direct 2>/tmp/dd.err | sha256sum); then
        echo "sftsan-io pass $pass ${sum%% *}"
    else
        echo "sftsan-io pass $pass FAILED $(tr '\n' ' ' </tmp/dd.err)"
    fi
done
"#;

/// One newc (SVR4 with no CRC) cpio member; the kernel unpacks such archives appended
/// to a compressed initramfs.
fn cpio_member(out: &mut Vec<u8>, name: &str, mode: u32, data: &[u8]) {
    let fields = [0, mode, 0, 0, 1, 0, data.len() as u32, 0, 0, 0, 0];
    let mut header = String::from("070701");
    for f in fields {
        header += &format!("{f:08X}");
    }
    header += &format!("{:08X}{:08X}", name.len() + 1, 0);
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    out.resize(out.len().next_multiple_of(4), 0);
    out.extend_from_slice(data);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The boot image's kernel and initramfs, built by its script when missing (idempotent:
/// it returns at once when the image is there).
fn boot_image() -> (PathBuf, PathBuf) {
    let dir = Path::new(BOOT_IMAGE);
    if !dir.join("manifest.json").is_file() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../sftsan-bench/boot-image/build");
        let out = Command::new("bash").arg(&script).output().unwrap();
        assert!(
            out.status.success(),
            "building the boot image failed:\n{}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("manifest.json")).unwrap()).unwrap();
    let file = |key: &str| dir.join(manifest[key].as_str().expect(key));
    (file("vmlinuz"), file("initrd"))
}

/// The passes the guest printed: (pass, digest or "FAILED ..."), and every other line.
fn console(path: &Path) -> (Vec<(u32, String)>, Vec<String>) {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let (mut passes, mut other) = (vec![], vec![]);
    for line in text.lines() {
        let mut words = line.trim().splitn(4, ' ');
        match (words.next(), words.next(), words.next(), words.next()) {
            (Some("sftsan-io"), Some("pass"), Some(n), Some(rest)) if n.parse::<u32>().is_ok() => {
                passes.push((n.parse().unwrap(), rest.trim().to_string()));
            }
            _ if line.trim().is_empty() => {}
            _ => other.push(line.to_string()),
        }
    }
    (passes, other)
}

fn table_row<'a>(out: &'a str, vm: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(vm))
        .unwrap_or_else(|| panic!("no row for {vm}:\n{out}"))
}

#[test]
#[ignore = "root tier: needs root, libvirtd, QEMU and sftsan-bench's boot image (scripts/test.sh runs it)"]
fn a_vm_paused_by_its_nodes_daemon_dying_resumes_and_reads_the_image() {
    require_libvirt();
    let (kernel, base_initrd) = boot_image();
    let h = Harness::get();
    let lvd = h.libvirtd();
    let c = TestCluster::create("lvioerr", 12, 1, 1, 1, &lvd.uri);
    let image_sha = sftsan_tests::sha256_file(&c.work.path().join("base.raw"));

    // Copies: libvirt hands a guest's kernel and initramfs to the QEMU user while it runs.
    let kernel_path = c.work.path().join("vmlinux");
    std::fs::copy(&kernel, &kernel_path).unwrap();
    let mut initrd = std::fs::read(&base_initrd).unwrap();
    initrd.resize(initrd.len().next_multiple_of(4), 0);
    cpio_member(&mut initrd, "init", 0o100755, GUEST_INIT.as_bytes());
    cpio_member(&mut initrd, "TRAILER!!!", 0, b"");
    let initrd_path = c.work.path().join("initrd.img");
    std::fs::write(&initrd_path, initrd).unwrap();
    let console_path = c.work.path().join("console.log");
    // No disk: sftsan gives the VM its snapshot as vda, with its error policies.
    let template = format!(
        "<domain type='qemu'>
  <name>t</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{}</kernel>
    <initrd>{}</initrd>
    <cmdline>console=ttyS0 loglevel=4 panic=-1 no_timer_check</cmdline>
  </os>
  <features><acpi/></features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <serial type='file'>
      <source path='{}'/>
      <target port='0'/>
    </serial>
  </devices>
</domain>
",
        kernel_path.display(),
        initrd_path.display(),
        console_path.display()
    );
    let template_path = c.work.path().join("guest.xml");
    std::fs::write(&template_path, template).unwrap();
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
    let read_twice = sftsan_tests::eventually(Duration::from_secs(180), || {
        console(&console_path).0.len() >= 2
    });
    let (passes, other) = console(&console_path);
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
        let passes_before = console(&console_path).0.len();
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
        // Paused: the guest reads nothing more (at most the pass it was in ends).
        let (passes, _) = console(&console_path);
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
        let last = console(&console_path).0.last().map_or(0, |p| p.0);
        let read_on = sftsan_tests::eventually(Duration::from_secs(120), || {
            console(&console_path).0.last().map_or(0, |p| p.0) >= last + 2
        });
        assert!(
            read_on,
            "no new passes after the resume: {:?}\n{}",
            console(&console_path),
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
    let (passes, other) = console(&console_path);
    for (n, digest) in &passes {
        assert_eq!(digest, &image_sha, "pass {n}: {passes:?}");
    }
    let errors: Vec<&String> = other
        .iter()
        .filter(|l| l.contains("error") || l.contains("FAILED"))
        .collect();
    assert!(errors.is_empty(), "the guest saw errors: {errors:?}");
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
