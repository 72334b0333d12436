//! A reboot of a kernel-backend host: every kernel object and daemon is gone, the files and
//! the journal stay (see `power_cut`). The next `up` brings the cluster back over what its
//! stores kept: a VM's writes survive, a cache still holds what it fetched (dm-cache) or
//! copied (dm-clone), and a store is never used again for another image.

mod kernel_support;

use kernel_support::*;
use sftsan_core::backends::kernel::dm;
use sftsan_core::backends::kernel::dm_devices::parse_clone_status;
use sftsan_tests::{write_image, MIB};
use std::ffi::OsStr;
use std::fs;

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn a_reboot_keeps_vm_writes_and_the_dm_cache() {
    reboot("kr-snap", "dm-snapshot", "snap", "dm-cache");
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn a_reboot_keeps_thin_volumes_and_the_dm_clone_copy() {
    reboot("kr-thin", "dm-thin", "thin", "dm-clone");
}

/// The cache blocks of `node` holding image data: dm-cache's used cache blocks, or
/// dm-clone's hydrated regions.
fn cache_blocks(c: &KernelCluster, node: &str, cache: &str) -> u64 {
    let name = c.names.dm_name(node, "cache");
    let status = dm::status(&name).unwrap();
    let line = &status.first().expect("a status line").3;
    if cache == "dm-clone" {
        return parse_clone_status(line)
            .expect("a dm-clone status")
            .hydrated;
    }
    // <metadata block size> <used>/<total metadata blocks> <cache block size>
    // <used>/<total cache blocks> ...
    let used = line
        .split_whitespace()
        .nth(3)
        .and_then(|f| f.split_once('/'));
    used.and_then(|(u, _)| u.parse().ok())
        .unwrap_or_else(|| panic!("{name}: not a dm-cache status: {line}"))
}

fn reboot(name: &str, kind: &str, disk_name: &str, cache: &str) {
    // A chain below n1: origin -> n1, n2; n1 -> n3.
    let c = cluster_of(name, kind, "lio", cache, &["n1", "n2", "n3"]);
    require_ready(&c);
    c.engine.up().unwrap_or_else(|e| panic!("up: {e}"));
    let written = disk(&c, "n3", &format!("{disk_name}-1"));
    assert_eq!(sha256(&written), c.sha, "n3's disk reads the image");
    let marker = vec![0x5a; 16384];
    write_at(&written, 3 * MIB, &marker);
    if cache == "dm-clone" {
        wait_hydrated(&c, "n3");
    }
    // dm-cache's smq policy promotes blocks that are read again, not every first read.
    let mut kept = cache_blocks(&c, "n3", cache);
    for _ in 0..4 {
        if kept > 0 {
            break;
        }
        sha256(&written);
        kept = cache_blocks(&c, "n3", cache);
    }
    assert!(kept > 0, "n3's cache holds nothing before the reboot");

    power_cut(&c);
    let back = c
        .engine
        .up()
        .unwrap_or_else(|e| panic!("up after a reboot: {e}"));
    assert!(back.created > 0, "nothing was made again: {back:?}");

    // Before anything reads: the cache holds what it held.
    assert_eq!(
        cache_blocks(&c, "n3", cache),
        kept,
        "n3's cache blocks after the reboot"
    );
    let written = disk(&c, "n3", &format!("{disk_name}-1"));
    assert_eq!(
        read_at(&written, 3 * MIB, marker.len()),
        marker,
        "the VM's write survived the reboot"
    );
    let image = fs::read(image_file(&c)).unwrap();
    let mut expected = image.clone();
    expected[3 * MIB as usize..3 * MIB as usize + marker.len()].copy_from_slice(&marker);
    assert!(
        fs::read(&written).unwrap() == expected,
        "n3's written disk is the image and the VM's write"
    );
    for node in ["n1", "n2", "n3"] {
        let other = disk(&c, node, &format!("{disk_name}-2"));
        assert_eq!(sha256(&other), c.sha, "{node}'s other disk reads the image");
    }
    let again = c.engine.up().unwrap();
    assert_eq!(
        again.created, 0,
        "a second up after the reboot changes nothing"
    );

    c.engine.down().unwrap_or_else(|e| panic!("down: {e}"));
    assert_nothing_left(name);
    assert!(
        !c._dir.path().join("state").exists(),
        "down left the state directory (or something in it)"
    );
}

/// A cache or COW kept over a reboot belongs to the image it was made for: when the image
/// was replaced meanwhile, `up` refuses in one line and keeps the VM's writes (only `down`
/// discards them), and `down` then removes everything.
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn after_a_reboot_stores_of_a_replaced_image_are_refused() {
    let name = "kr-img";
    let c = cluster_of(name, "dm-snapshot", "lio", "dm-cache", &["n1"]);
    require_ready(&c);
    let spec = spec_file(&c);
    c.engine.up().unwrap_or_else(|e| panic!("up: {e}"));
    write_at(&disk(&c, "n1", "snap-1"), MIB, &[0x33; 4096]);
    power_cut(&c);

    write_image(&image_file(&c), IMAGE, "a newer image");
    let up = sftsan_cli(&[OsStr::new("up"), spec.as_os_str()], &[]);
    let err = error_line(&up);
    assert!(
        err.contains("holds data of image") && err.contains("run `sftsan down` to discard it"),
        "{err}"
    );
    let cow = c.names.node_file("n1", "cow-1.img");
    assert!(
        cow.exists(),
        "the VM's COW file was discarded by a failed up"
    );

    let down = sftsan_cli(&[OsStr::new("down"), spec.as_os_str()], &[]);
    assert!(
        down.status.success(),
        "{}",
        String::from_utf8_lossy(&down.stderr)
    );
    assert_nothing_left(name);
    assert!(!cow.exists(), "down left {}", cow.display());
}
