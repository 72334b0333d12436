//! Crash safety of the kernel backend: `up` killed after each kind of kernel resource
//! (with LIO, and tgtd's target with `kernel.relay = "tgt"`), then `up` completes and
//! `down` leaves nothing (see kernel_cluster.rs for the tree). The tree is origin -> n1,
//! n2, and n1 -> n3 where a kind only a grandchild has (its standby session) is tested.

mod kernel_support;

use kernel_support::*;
use sftsan_tests::MIB;
use std::ffi::OsStr;

/// How the cluster of a crash case is made.
struct Case {
    kind: &'static str,
    snapshots: &'static str,
    relay: &'static str,
    cache: &'static str,
}

/// Every kernel resource kind, on the LIO relay (`tgt-relay` on tgt); and the origin's tgtd
/// target (`origin-target`) for `kernel.relay = "tgt"`.
fn cases() -> Vec<Case> {
    use sftsan_core::plan::ResourceSpec;
    let mut cases: Vec<Case> = ResourceSpec::KERNEL_KINDS
        .iter()
        .map(|&kind| Case {
            kind,
            snapshots: match kind {
                "thin-pool" | "thin-volume" => "dm-thin",
                _ => "dm-snapshot",
            },
            relay: if kind == "tgt-relay" { "tgt" } else { "lio" },
            cache: if kind == "dm-clone" {
                "dm-clone"
            } else {
                "dm-cache"
            },
        })
        .collect();
    cases.push(Case {
        kind: "origin-target",
        snapshots: "dm-snapshot",
        relay: "tgt",
        cache: "dm-cache",
    });
    cases
}

/// `up` killed (SIGKILL) right after creating the first resource of each kernel kind:
/// the next `up` completes, a VM disk reads the image, and `down` leaves nothing.
#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn up_resumes_after_a_crash_after_each_kernel_kind() {
    use sftsan_core::engine::KILL_AFTER_ENV;
    use std::os::unix::process::ExitStatusExt;
    require_kernel_ready();
    let mut failed = Vec::new();
    for (i, case) in cases().iter().enumerate() {
        let kind = case.kind;
        let disk_name = match case.snapshots {
            "dm-thin" => "thin-1",
            _ => "snap-1",
        };
        let name = format!("kk{i}");
        // For the `block-device` kind, n2 keeps its first VM's COW on a named device.
        let disks = (kind == "block-device").then(|| TestDisks::new(&[4 * MIB]));
        let n2 = match &disks {
            Some(d) => format!(
                "devices = {{ cow = [{:?}] }}",
                d.path(0).display().to_string()
            ),
            None => String::new(),
        };
        // Only a grandchild logs in to a standby: n3, below n1.
        let mut nodes = vec![("n1", String::new()), ("n2", n2)];
        let checked = match kind {
            "iscsi-standby" => {
                nodes.push(("n3", String::new()));
                "n3"
            }
            _ => "n2",
        };
        let c = cluster_with(&name, case.snapshots, case.relay, case.cache, &nodes);
        let spec = spec_file(&c);
        let run = |env: &[(&str, &str)]| sftsan_cli(&[OsStr::new("up"), spec.as_os_str()], env);
        let killed = run(&[(KILL_AFTER_ENV, kind)]);
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            assert_eq!(
                killed.status.signal(),
                Some(9),
                "up was not killed after {kind}: {killed:?}"
            );
            let resumed = run(&[]);
            assert!(
                resumed.status.success(),
                "up after a crash after {kind}: {}",
                String::from_utf8_lossy(&resumed.stderr)
            );
            assert_eq!(
                sha256(&disk(&c, checked, disk_name)),
                c.sha,
                "after a crash after {kind}"
            );
            c.engine
                .down()
                .unwrap_or_else(|e| panic!("down after {kind}: {e}"));
            assert_nothing_left(&name);
        }));
        if outcome.is_err() {
            failed.push(kind);
        }
    }
    assert!(
        failed.is_empty(),
        "not recovered after a crash after {failed:?}"
    );
}
