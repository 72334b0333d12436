//! The libvirt hook over the kernel backend's real block stack: the domain XML `sftsan vm
//! xml` writes for a kernel-backend VM (a raw block disk on `/dev/mapper`) goes to the
//! `sftsan-hook` program on stdin as libvirt would pass it. `prepare begin` brings the node
//! up and makes the VM's dm snapshot, `release end` discards a stateless VM's snapshot, and
//! the next prepare starts it from the image again. (sftsan-libvirt's tests run the same
//! path under a real libvirtd on a host kernel without device-mapper.)

mod kernel_support;

use kernel_support::*;
use sftsan_core::backends::kernel::dm;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// A program of sftsan-libvirt: beside the tier's `sftsan` (`SFTSAN_BIN`), else this
/// workspace's debug build.
fn program(name: &str) -> PathBuf {
    match std::env::var_os("SFTSAN_BIN") {
        Some(bin) => PathBuf::from(bin).with_file_name(name),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("../target/debug")
            .join(name),
    }
}

/// Runs the hook as libvirt does: guest name, operation, sub-operation, `-`, and the
/// domain XML on stdin. Returns its stderr; panics when it fails.
fn hook(guest: &str, op: &str, subop: &str, xml: &str) -> String {
    let mut child = Command::new(program("sftsan-hook"))
        .args([guest, op, subop, "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot run sftsan-hook");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(xml.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "hook {op} {subop}: {err}");
    err
}

/// The block device of the dm device `/dev/mapper/NAME` names, if it exists. (The guest
/// runs no udev, which makes the /dev/mapper links on a host.)
fn dm_disk(mapper_path: &Path) -> Option<PathBuf> {
    let name = mapper_path.file_name()?.to_str()?;
    let dev = dm::device(name).unwrap()?;
    Some(dm::node_path(dev).unwrap())
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn the_hook_prepares_and_releases_a_kernel_backend_vm() {
    let c = cluster_of("khook", "dm-snapshot", "lio", "dm-cache", &["n1"]);
    require_ready(&c);
    let spec = spec_file(&c);
    let out = Command::new(program("sftsan"))
        .args(["vm", "xml"])
        .arg(&spec)
        .args(["--node", "n1", "--mode", "stateless"])
        .output()
        .expect("cannot run sftsan");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let xml = String::from_utf8(out.stdout).unwrap();
    let disk = c.engine.plan().vm_disk_path("n1", 1);
    assert!(
        xml.contains(&format!("<source dev=\"{}\"/>", disk.display())),
        "a block disk on the VM's dm snapshot: {xml}"
    );
    let guest = "khook-n1-1";

    hook(guest, "prepare", "begin", &xml);
    let dev = dm_disk(&disk).unwrap_or_else(|| panic!("prepare made no {}", disk.display()));
    assert_eq!(sha256(&dev), c.sha, "the VM's disk reads the image");
    write_at(&dev, 0, &[0xee; 4096]);

    hook(guest, "release", "end", &xml);
    assert_eq!(
        dm_disk(&disk),
        None,
        "release discarded the stateless VM's snapshot"
    );

    hook(guest, "prepare", "begin", &xml);
    let dev = dm_disk(&disk).expect("the second prepare made the snapshot again");
    assert_eq!(sha256(&dev), c.sha, "the next start begins from the image");
    hook(guest, "release", "end", &xml);

    drop(c);
    assert_nothing_left("khook");
}
