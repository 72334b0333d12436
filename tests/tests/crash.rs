//! Crashes: `up` killed right after creating each kind of resource resumes cleanly, a
//! node's daemon killed after its keeper flushed serves its cache without refetching, and
//! a reboot (every process, namespace and link gone) is brought back over the files.

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use sftsan_core::engine::KILL_AFTER_ENV;
use sftsan_core::plan::ResourceSpec;
use sftsan_tests::{eventually, process_gone, require_clusters, Cluster, TestCluster, MIB};

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn up_resumes_after_a_crash_after_each_kind() {
    require_clusters();
    let failed: Vec<&str> = ResourceSpec::KINDS
        .iter()
        .zip(110..)
        .filter(|&(kind, subnet)| std::panic::catch_unwind(|| crash_after(kind, subnet)).is_err())
        .map(|(kind, _)| *kind)
        .collect();
    assert!(
        failed.is_empty(),
        "a crash after creating {failed:?} was not recovered from (see the panics above)"
    );
}

/// Origin + 2 nodes in a chain: `up` killed after creating the first `kind`, then `up`.
fn crash_after(kind: &str, subnet: u8) {
    // Cluster names have at most 16 bytes; the kinds' first 14 tell them apart.
    let mut c = TestCluster::new(&format!("k-{}", &kind[..kind.len().min(14)]), subnet);
    // Only an iSCSI origin has a target; every other kind is in any cluster.
    if kind == "origin-target" {
        c = c.iscsi_origin();
    }
    let c = c.create();
    let out = c.cli_env(&["up"], &[(KILL_AFTER_ENV, kind)]);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "up with {KILL_AFTER_ENV}={kind} was not killed: {out:?}"
    );
    c.up();
    let leaf = c.leaf();
    assert_eq!(
        c.read_snapshot_sha256(&leaf, 1),
        c.base_sha256,
        "after a crash after {kind}"
    );
    c.down();
    c.assert_no_leftovers();
}

/// Reads a snapshot of the leaf whole and waits until its keeper made the cache durable.
fn fill_leaf_cache(c: &Cluster) -> String {
    let leaf = c.leaf();
    assert_eq!(c.read_snapshot_sha256(&leaf, 1), c.base_sha256);
    let durable = eventually(Duration::from_secs(20), || {
        c.cache_present_bytes(&leaf) == c.image_size
    });
    assert!(
        durable,
        "the keeper did not flush {leaf}'s cache: {} of {} bytes on disk",
        c.cache_present_bytes(&leaf),
        c.image_size
    );
    leaf
}

/// SIGKILLs a node's storage daemon and waits until it is gone.
fn kill_daemon(c: &Cluster, node: &str) {
    let pid = c.pid(node, "daemon");
    // SAFETY: kill(2) on a pid we just read from the daemon's pid file.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    assert!(
        eventually(Duration::from_secs(10), || process_gone(pid)),
        "daemon {pid} of {node} survived SIGKILL"
    );
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn a_killed_daemon_serves_its_flushed_cache() {
    require_clusters();
    let c = TestCluster::new("durable", 40)
        .image_size(64 * MIB)
        .create();
    c.up();
    let leaf = fill_leaf_cache(&c);
    // The node's upstream switch outlives its daemon and counts from its start.
    let fetched = || c.node_status(&leaf)["upstream_bytes"].as_u64().unwrap();
    let before = fetched();
    kill_daemon(&c, &leaf);

    c.up();
    assert_eq!(c.read_snapshot_sha256(&leaf, 1), c.base_sha256);
    let refetched = fetched() - before;
    assert!(
        refetched < MIB,
        "{leaf} refetched {refetched} bytes instead of serving its cache"
    );

    c.down();
    c.assert_no_leftovers();
}

/// After a daemon crash, `up` must leave the node with a keeper for its new daemon: the old
/// keeper exits once it notices its daemon is gone, and the node must still be up then.
#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn a_restarted_daemon_gets_a_keeper() {
    require_clusters();
    let c = TestCluster::new("rekeep", 41).create();
    c.up();
    let leaf = c.leaf();
    let old_keeper = c.pid(&leaf, "keeper");
    kill_daemon(&c, &leaf);

    c.up();
    assert!(
        eventually(Duration::from_secs(20), || process_gone(old_keeper)),
        "the keeper of {leaf}'s killed daemon is still running"
    );
    let status = c.node_status(&leaf);
    assert_eq!(
        status["state"], "up",
        "{leaf} after its daemon was restarted: {status}"
    );

    c.down();
    c.assert_no_leftovers();
}

/// After a reboot `up` brings the cluster back over what its files kept: a VM's writes are
/// still in its snapshot, and the leaf serves its flushed cache without fetching it again.
#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn a_reboot_brings_the_cluster_back_over_its_files() {
    require_clusters();
    let c = TestCluster::new("reboot", 42).image_size(64 * MIB).create();
    c.up();
    let leaf = fill_leaf_cache(&c);
    c.qemu_io(&leaf, 2, "write -P 0x6b 1M 64k");
    c.power_cut();
    assert!(c.namespaces().is_empty());

    c.up();
    assert!(
        c.has_pattern(&leaf, 2, 0x6b, MIB, 64 << 10),
        "the VM's write in {leaf}'s snapshot 2 did not survive the reboot"
    );
    assert_eq!(c.read_snapshot_sha256(&leaf, 1), c.base_sha256);
    let upstream = c.node_status(&leaf)["upstream_bytes"].as_u64().unwrap();
    assert!(
        upstream < MIB,
        "{leaf} refetched {upstream} bytes after the reboot instead of serving its cache"
    );

    c.down();
    c.assert_no_leftovers();
}
