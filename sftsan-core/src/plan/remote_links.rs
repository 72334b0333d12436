//! Remote mode's links in the plan: TLS from every child to a managed parent, a TLS relay
//! on exactly the nodes with children, VMs on the node's local socket.

use super::{plan, Plan, ResourceSpec};
use crate::spec::{ClusterSpec, MeasuredImage, ValidatedSpec};

fn remote_plan(origin_managed: bool) -> Plan {
    let text = format!(
        r#"
        [cluster]
        name = "c"
        state_dir = "/var/lib/sftsan/c"
        mode = "remote"
        degree = 2
        [image]
        name = "base"
        source = "/images/base.raw"
        [origin]
        address = "10.0.0.1"
        managed = {origin_managed}
        [[nodes]]
        name = "n1"
        address = "10.0.0.2"
        [[nodes]]
        name = "n2"
        address = "10.0.0.3"
        [[nodes]]
        name = "n3"
        address = "10.0.0.4"
        [cache]
        size = "1GiB"
        [snapshots]
        per_node = 1
        "#
    );
    let spec = ClusterSpec::from_toml(&text).unwrap();
    let image = MeasuredImage {
        size: 1 << 20,
        identity: "size=1048576".into(),
    };
    plan(&ValidatedSpec::measured(spec, image).unwrap())
}

fn kinds(plan: &Plan, node: &str) -> Vec<&'static str> {
    plan.node(node)
        .unwrap()
        .stack
        .iter()
        .map(|r| r.kind())
        .collect()
}

#[test]
fn nodes_with_children_relay_over_tls_and_leaves_listen_nowhere() {
    let p = remote_plan(true);
    assert_eq!(
        kinds(&p, "origin"),
        ["daemon", "origin-export", "tls-relay"]
    );
    let relay = [
        "daemon",
        "upstream",
        "cache",
        "relay-export",
        "tls-relay",
        "keeper",
    ];
    assert_eq!(kinds(&p, "n1"), [&relay[..], &["snapshot"]].concat());
    assert_eq!(
        kinds(&p, "n3"),
        [
            "daemon",
            "upstream",
            "cache",
            "relay-export",
            "keeper",
            "snapshot"
        ]
    );
    for node in ["n1", "n2", "n3"] {
        for r in &p.node(node).unwrap().stack {
            match r {
                ResourceSpec::Daemon(d) => assert_eq!(
                    d.socket.as_deref(),
                    Some(std::path::Path::new(&format!(
                        "/var/lib/sftsan/c/run/{node}/nbd.sock"
                    )))
                ),
                ResourceSpec::Upstream(u) => {
                    let key = u.tls.as_ref().expect("every link is TLS");
                    assert_eq!(key.username, node);
                    assert!(key.dir.ends_with(format!("link-keys/{node}/client")));
                }
                ResourceSpec::Snapshot(s) => assert!(s.socket.is_some(), "{node}'s VM disk"),
                ResourceSpec::TlsRelay(t) => {
                    assert_eq!(t.address.to_string(), "10.0.0.2");
                    assert!(t.keys.ends_with("link-keys/n1/server"));
                }
                _ => {}
            }
        }
    }
}

#[test]
fn links_to_an_unmanaged_origin_are_plain_and_the_rest_tls() {
    let p = remote_plan(false);
    let tls = |node: &str| {
        p.node(node)
            .unwrap()
            .stack
            .iter()
            .any(|r| matches!(r, ResourceSpec::Upstream(u) if u.tls.is_some()))
    };
    assert!(
        !tls("n1") && !tls("n2"),
        "the origin is someone else's server"
    );
    assert!(tls("n3"), "n1 -> n3 is a link between sftsan hosts");
}
