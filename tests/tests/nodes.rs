//! One node at a time: `up --node` brings up the path from the origin, a VM's snapshot is
//! made on demand (also beyond the planned count) and removed, and `down --node` refuses
//! while a child still reads through the node.

use sftsan_tests::{require_clusters, sftsan, stderr, stdout, TestCluster, MIB};
use std::time::Instant;

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn a_node_comes_up_with_its_ancestors_only() {
    require_clusters();
    // origin + 4 nodes, binary: n1 and n2 below the origin, n3 and n4 below n1.
    let c = TestCluster::new("one-node", 60).nodes(4).degree(2).create();
    let leaf = c.leaf();
    let out = c.cli(&["up", "--node", &leaf]);
    assert!(out.status.success(), "up --node: {}", stderr(&out));

    let state = |node: &str| c.node_status(node)["state"].as_str().unwrap().to_string();
    let nodes = c.nodes();
    assert_eq!(state(c.origin()), "up");
    assert_eq!(state(&nodes[0]), "up", "the leaf's parent");
    assert_eq!(state(&leaf), "up");
    assert_eq!(state(&nodes[1]), "down", "not on the leaf's path");
    assert_eq!(state(&nodes[2]), "down", "the leaf's sibling");
    assert_eq!(c.read_snapshot_sha256(&leaf, 2), c.base_sha256);

    // A snapshot beyond snapshots.per_node, made on demand, reads the image too.
    let spec = c.spec_path.to_str().unwrap();
    let out = sftsan(["snapshot", "create", spec, &leaf, "9"]);
    assert!(out.status.success(), "snapshot create: {}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        c.snapshot_file(&leaf, 9).to_str().unwrap()
    );
    assert_eq!(c.read_snapshot_sha256(&leaf, 9), c.base_sha256);
    let out = sftsan(["snapshot", "remove", spec, &leaf, "9"]);
    assert!(out.status.success(), "snapshot remove: {}", stderr(&out));
    assert!(!c.snapshot_file(&leaf, 9).exists());

    // The origin has no snapshots; the parent cannot go while its child is up.
    let out = sftsan(["snapshot", "create", spec, c.origin(), "1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("is the origin"), "{}", stderr(&out));
    let out = c.cli(&["down", "--node", &nodes[0]]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("still serves"), "{}", stderr(&out));

    // Children first, then the parent: each leaves its node down.
    for node in [&leaf, &nodes[0]] {
        let out = c.cli(&["down", "--node", node]);
        assert!(out.status.success(), "down --node {node}: {}", stderr(&out));
        assert_eq!(state(node), "down");
    }
    c.down();
    c.assert_no_leftovers();
}

/// The root tbf's rate of `dev` (in `netns`, if given) as `tc` prints it, e.g. "40Mbit".
fn tbf_rate(netns: Option<&str>, dev: &str) -> Option<String> {
    let mut cmd = std::process::Command::new("tc");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    let out = cmd.args(["qdisc", "show", "dev", dev]).output().unwrap();
    let text = stdout(&out);
    let words: Vec<&str> = text.split_whitespace().collect();
    let tbf = words.windows(2).position(|w| w == ["qdisc", "tbf"])?;
    let rate = words[tbf..].iter().position(|w| *w == "rate")?;
    Some(words[tbf + rate + 1].to_string())
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn local_links_are_limited_to_link_mbit() {
    require_clusters();
    // 32 Mbit/s is 4 MB/s: the node's 24 MiB take at least 6.3 s to arrive.
    let c = TestCluster::new("shaped", 61)
        .nodes(1)
        .snapshots(1)
        .image_size(24 * MIB)
        .link_mbit(32)
        .create();
    c.up();
    let node = &c.nodes()[0];
    for name in [c.origin(), node.as_str()] {
        let veth = c.names.veth_host(name);
        assert_eq!(tbf_rate(None, &veth).as_deref(), Some("32Mbit"), "{veth}");
    }
    let netns = c.names.netns(node);
    assert_eq!(tbf_rate(Some(&netns), "eth0").as_deref(), Some("32Mbit"));
    // A second up finds the limits in place and changes nothing.
    let again = c.up();
    assert!(again.contains("up: 0 created"), "{again}");

    let started = Instant::now();
    assert_eq!(c.read_snapshot_sha256(node, 1), c.base_sha256);
    let took = started.elapsed().as_secs_f64();
    let floor = (24 * MIB) as f64 / (32e6 / 8.0);
    assert!(
        took > 0.95 * floor,
        "24 MiB arrived in {took:.2} s; 32 Mbit/s needs {floor:.2} s"
    );
    c.down();
    c.assert_no_leftovers();
}
