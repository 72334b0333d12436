//! Crash safety of the kernel backend: `up` killed after each kind of kernel resource,
//! then `up` completes and `down` leaves nothing (see kernel_cluster.rs for the tree).

mod kernel_support;

use kernel_support::*;
use sftsan_core::backends::kernel::probe::{Feature, NODE_FEATURES};
use sftsan_tests::{in_kernel_tier, kernel_has};
use std::fs;

/// `up` killed (SIGKILL) right after creating the first resource of each kernel kind:
/// the next `up` completes, a VM disk reads the image, and `down` leaves nothing.
#[test]
fn up_resumes_after_a_crash_after_each_kernel_kind() {
    use sftsan_core::engine::KILL_AFTER_ENV;
    use sftsan_core::resources::ResourceSpec;
    use std::os::unix::process::ExitStatusExt;
    let mut needs = NODE_FEATURES.to_vec();
    needs.push(Feature::DmTarget("clone"));
    if !kernel_has("up_resumes_after_a_crash_after_each_kernel_kind", &needs) {
        assert!(
            !in_kernel_tier(),
            "the kernel tier's kernel must have every node feature"
        );
        return;
    }
    let sftsan = std::env::var_os("SFTSAN_BIN").expect("the kernel tier sets SFTSAN_BIN");
    let mut failed = Vec::new();
    for (i, kind) in ResourceSpec::KERNEL_KINDS.iter().enumerate() {
        let (snapshots, disk_name) = match *kind {
            "thin-pool" | "thin-volume" => ("dm-thin", "thin-1"),
            _ => ("dm-snapshot", "snap-1"),
        };
        let cache = if *kind == "dm-clone" {
            "dm-clone"
        } else {
            "dm-cache"
        };
        let name = format!("kk{i}");
        let c = cluster_of(&name, snapshots, "lio", cache, &["n1", "n2"]);
        let spec = c._dir.path().join("spec.toml");
        fs::write(&spec, spec_text(&c)).unwrap();
        let run = |env: Option<&str>| {
            let mut cmd = std::process::Command::new(&sftsan);
            cmd.arg("up").arg(&spec);
            if let Some(k) = env {
                cmd.env(KILL_AFTER_ENV, k);
            }
            cmd.output().unwrap()
        };
        let killed = run(Some(kind));
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_eq!(
                killed.status.signal(),
                Some(9),
                "up was not killed after {kind}: {killed:?}"
            );
            let resumed = run(None);
            assert!(
                resumed.status.success(),
                "up after a crash after {kind}: {}",
                String::from_utf8_lossy(&resumed.stderr)
            );
            assert_eq!(
                sha256(&disk(&c, "n2", disk_name)),
                c.sha,
                "after a crash after {kind}"
            );
            c.engine
                .down()
                .unwrap_or_else(|e| panic!("down after {kind}: {e}"));
            assert_nothing_left(&name);
        }));
        if outcome.is_err() {
            failed.push(*kind);
        }
    }
    assert!(
        failed.is_empty(),
        "not recovered after a crash after {failed:?}"
    );
}
