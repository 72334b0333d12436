//! Membership on a running cluster: a node leaves (its children and the nodes after it move
//! to their new parents first) and a node joins, while a reader on every node reads its VM
//! disk again and again and compares it with the image. No read may fail or differ.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use sftsan_tests::{require_clusters, sftsan_env, stderr, Cluster, TestCluster, MIB};

/// Reads `node`'s first VM disk whole and compares it with the image, until `stop`;
/// returns (identical passes, failed or different passes, what the failures said).
fn read_until(c: &Cluster, node: &str, stop: &AtomicBool) -> (u32, u32, Vec<String>) {
    let image = c.work_dir().join("base.raw");
    let (mut good, mut bad, mut said) = (0, 0, Vec::new());
    // Bounded in count and time besides the flag.
    let deadline = Instant::now() + Duration::from_secs(240);
    for _ in 0..500 {
        if stop.load(Ordering::SeqCst) || Instant::now() >= deadline {
            break;
        }
        let out = c
            .in_node(node, "qemu-img")
            .args(["compare", "-U", "-f", "qcow2", "-F", "raw"])
            .arg(c.snapshot_file(node, 1))
            .arg(&image)
            .output()
            .expect("qemu-img runs");
        if out.status.success() {
            good += 1;
        } else {
            bad += 1;
            said.push(format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                stderr(&out)
            ));
        }
    }
    (good, bad, said)
}

fn node_cli(c: &Cluster, args: &[&str]) -> String {
    let mut argv = vec!["node", args[0], c.spec_path.to_str().unwrap()];
    argv.extend(&args[1..]);
    let out = sftsan_env(argv, &[]);
    assert!(
        out.status.success(),
        "sftsan node {args:?} failed:\n{}",
        stderr(&out)
    );
    stderr(&out)
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn nodes_leave_and_join_while_every_node_reads() {
    require_clusters();
    // Origin + 6 nodes, binary: n1 serves n3 and n4.
    let c = TestCluster::new("members", 62)
        .nodes(6)
        .degree(2)
        .snapshots(1)
        .image_size(24 * MIB)
        .link_mbit(200)
        .create();
    c.up();
    let stop = AtomicBool::new(false);
    let staying = ["n2", "n3", "n4", "n5", "n6"];
    let (results, joined) = std::thread::scope(|s| {
        let readers: Vec<_> = staying
            .iter()
            .map(|n| (n, s.spawn(|| read_until(&c, n, &stop))))
            .collect();
        // Let every reader start fetching before the tree changes under it.
        std::thread::sleep(Duration::from_secs(2)); // a pace for the readers, not a sync
        let removed = node_cli(&c, &["remove", "n1"]);
        let added = node_cli(&c, &["add", "n7", "--address", "198.18.62.20"]);
        let joined = s.spawn(|| read_until(&c, "n7", &stop));
        std::thread::sleep(Duration::from_secs(3)); // readers go on over the new tree
        stop.store(true, Ordering::SeqCst);
        let results: Vec<_> = readers
            .into_iter()
            .map(|(n, h)| (n.to_string(), h.join().unwrap()))
            .collect();
        eprintln!("{removed}{added}");
        (results, joined.join().unwrap())
    });
    for (node, (good, bad, said)) in results.iter().chain([&("n7".to_string(), joined)]) {
        assert_eq!(*bad, 0, "{node}: {bad} reads failed or differed: {said:?}");
        assert!(*good > 0, "{node} read nothing");
    }
    // The spec names what runs; n3 now reads from its new parent (the origin).
    let spec = std::fs::read_to_string(&c.spec_path).unwrap();
    assert!(
        !spec.contains("\"n1\"") && spec.contains("\"n7\""),
        "{spec}"
    );
    let n3 = c.node_status("n3");
    assert_eq!(n3["parent"], "origin", "{n3}");
    assert_eq!(n3["upstream"]["current"], "origin", "{n3}");
    assert!(Command::new("ip")
        .args(["netns", "list"])
        .output()
        .map(|o| !String::from_utf8_lossy(&o.stdout).contains("sftsan-members-n1"))
        .unwrap());
    c.down();
    c.assert_no_leftovers();
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn a_parent_that_up_brings_back_takes_its_children_back() {
    require_clusters();
    // A chain: n2 reads from n1, n3 from n2.
    let c = TestCluster::new("comeback", 63)
        .nodes(3)
        .snapshots(1)
        .image_size(16 * MIB)
        .create();
    c.up();
    let current = |node: &str| c.node_status(node)["upstream"]["current"].clone();
    let n1 = c.pid("n1", "daemon");
    // SAFETY: kill(2) on a pid just read from the daemon's pid file.
    assert_eq!(unsafe { libc::kill(n1, libc::SIGKILL) }, 0);
    // Reading n2's disk makes n2's switch notice and move to the origin.
    assert_eq!(c.read_snapshot_sha256("n2", 1), c.base_sha256);
    assert_eq!(current("n2"), "origin");
    // up revives n1 alone; n2's switch tries its parent again every 3 s and moves back.
    let revived = c.up();
    assert!(revived.contains("n1/daemon"), "{revived}");
    assert!(
        sftsan_tests::eventually(Duration::from_secs(10), || current("n2") == "n1"),
        "n2 did not return to n1: {}",
        c.node_status("n2")
    );
    assert_eq!(c.node_status("n2")["upstream"]["failovers"], 2);
    assert_eq!(c.read_snapshot_sha256("n3", 1), c.base_sha256);
    c.down();
    c.assert_no_leftovers();
}
