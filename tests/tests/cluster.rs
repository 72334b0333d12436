//! Whole clusters of every shape: each snapshot reads back the base image, writes stay in
//! their snapshot, every node fetches the image once and relays it, and `down` leaves
//! nothing behind.

use std::time::Duration;

use serde_json::Value;
use sftsan_tests::{eventually, require_clusters, sha256_file, TestCluster, MIB};

/// Origin + 6 nodes, 3 snapshots each, of the given degree.
fn six_nodes(name: &str, subnet: u8, degree: u32, image_size: u64) -> TestCluster {
    TestCluster::new(name, subnet)
        .nodes(6)
        .degree(degree)
        .snapshots(3)
        .image_size(image_size)
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn binary_tree() {
    check_cluster(six_nodes("t-tree", 20, 2, 256 * MIB));
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn chain() {
    check_cluster(six_nodes("t-chain", 21, 1, 256 * MIB));
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn degree_three() {
    check_cluster(six_nodes("t-deg3", 22, 3, 256 * MIB));
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn star() {
    check_cluster(six_nodes("t-star", 23, 8, 256 * MIB));
}

/// The origin as an iSCSI target (tgtd) instead of an NBD export.
#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn iscsi_origin() {
    check_cluster(
        TestCluster::new("t-iscsi", 24)
            .nodes(3)
            .degree(2)
            .image_size(16 * MIB)
            .iscsi_origin(),
    );
}

fn check_cluster(cluster: TestCluster) {
    require_clusters();
    let c = cluster.create();
    c.up();
    let nodes = c.nodes();
    let per_node = c.spec.snapshots.per_node;

    let snapshots: Vec<(String, u32)> = nodes
        .iter()
        .flat_map(|node| (1..=per_node).map(move |index| (node.clone(), index)))
        .collect();
    let hashes = c.read_snapshots_sha256(&snapshots);
    for ((node, index), sha) in snapshots.iter().zip(hashes) {
        assert_eq!(
            sha, c.base_sha256,
            "{node} snapshot {index} differs from the base"
        );
    }

    // A write lands in its own snapshot only, never in a sibling, another node or the base.
    let (first, last) = (&nodes[0], &nodes[nodes.len() - 1]);
    c.qemu_io(first, 1, "write -P 0xab 0 1M");
    assert!(
        c.has_pattern(first, 1, 0xab, 0, MIB),
        "{first}/1 lost its write"
    );
    assert!(
        !c.has_pattern(first, 2, 0xab, 0, MIB),
        "{first}/2 sees {first}/1's write"
    );
    assert!(
        !c.has_pattern(last, 1, 0xab, 0, MIB),
        "{last}/1 sees {first}/1's write"
    );
    assert_eq!(
        sha256_file(&c.image),
        c.base_sha256,
        "the base image changed"
    );

    // Every node fetched the image from its parent once; the origin sent it once per child.
    let status = c.status_json();
    let statuses = status["nodes"].as_array().unwrap();
    let size = c.image_size as f64;
    for n in statuses.iter().filter(|n| n["role"] == "node") {
        let upstream = n["upstream_bytes"].as_u64().unwrap();
        assert!(
            upstream as f64 <= size * 1.01 + MIB as f64,
            "{} fetched {upstream} bytes of a {size}-byte image",
            n["name"]
        );
    }
    let children = statuses
        .iter()
        .filter(|n| n["parent"] == c.origin())
        .count();
    let egress = c.veth_rx_bytes(c.origin());
    assert!(
        egress as f64 <= size * children as f64 * 1.03 + MIB as f64,
        "the origin sent {egress} bytes to {children} children, image {size}"
    );
    assert!(
        egress >= c.image_size * children as u64,
        "the origin sent only {egress} bytes to {children} children, image {size}"
    );

    // The keeper flushes within its interval: then every cache holds the whole image.
    let all_full = |status: &Value| {
        status["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .all(|n| n["cache_fill_bytes"] == c.image_size)
    };
    eventually(Duration::from_secs(20), || all_full(&c.status_json()));
    for n in c.status_json()["nodes"].as_array().unwrap() {
        assert_eq!(
            n["cache_fill_bytes"], c.image_size,
            "cache fill of {}",
            n["name"]
        );
    }

    c.down();
    c.assert_no_leftovers();
}
