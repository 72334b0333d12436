//! One node at a time: `up --node` brings up the path from the origin, a VM's snapshot is
//! made on demand (also beyond the planned count) and removed, and `down --node` refuses
//! while a child still reads through the node.

use sftsan_tests::{can_run_clusters, sftsan, stderr, stdout, TestCluster};

#[test]
fn a_node_comes_up_with_its_ancestors_only() {
    if !can_run_clusters() {
        return;
    }
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
