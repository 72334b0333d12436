//! A kernel-backend cluster inside one kernel: an origin and four nodes in a binary tree,
//! told apart by name and IQN (host mode on 127.0.0.x). Every node logs in to its
//! parent's LIO target with CHAP, caches it with dm-cache or dm-clone and relays the cache;
//! each VM disk (dm-snapshot or dm-thin) reads back the image, writes stay in their disk,
//! and `down` leaves no dm device, loop device, LIO object, iSCSI session or iscsid.

mod kernel_support;

use kernel_support::*;
use sftsan_core::backends::kernel::probe;
use std::fs;

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn a_tree_with_dm_snapshots() {
    check("kc-snap", "dm-snapshot", "snap", "lio", "dm-cache");
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn a_tree_with_thin_volumes() {
    check("kc-thin", "dm-thin", "thin", "lio", "dm-cache");
}

/// The same tree with tgtd (userspace iSCSI targets) as the origin's and the relays' target.
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn a_tree_with_tgt_relays() {
    check("kc-tgt", "dm-snapshot", "snap", "tgt", "dm-cache");
}

/// The same tree with dm-clone caches (`kernel.cache = "dm-clone"`), where the kernel has
/// the clone target (the tier builds it for Debian's kernel, which lacks it).
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn a_tree_with_dm_clone_caches() {
    check("kc-clone", "dm-snapshot", "snap", "lio", "dm-clone");
}

/// dm-clone under thin volumes: their external origin is the clone.
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn a_tree_with_dm_clone_and_thin_volumes() {
    check("kc-clthin", "dm-thin", "thin", "lio", "dm-clone");
}

/// Where the kernel lacks what the spec needs (this host, not the tier's guest), `up`
/// names every missing feature in one line and touches nothing.
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn up_on_a_kernel_without_the_features_names_them_and_makes_nothing() {
    let c = cluster("kc-missing", "dm-thin", "lio", "dm-clone");
    let missing = probe::missing(&c.features);
    // SAFETY: geteuid has no preconditions and cannot fail.
    if missing.is_empty() || unsafe { libc::geteuid() } != 0 {
        return; // the tier's kernel has everything: the cluster tests above cover it
    }
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
