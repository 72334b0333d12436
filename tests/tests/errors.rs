//! Failures an operator meets through the CLI: an unreachable upstream (rolled back), an
//! invalid spec (one line naming the field), a legacy configuration to import, and an `up`
//! or `plan` on a cluster that is already up (nothing changes).

use sftsan_core::spec::ClusterSpec;
use sftsan_tests::{require_clusters, sftsan, stderr, stdout, Cluster, TestCluster};

/// stderr without `up`'s progress lines (`[  0.1s] n1/daemon  created ...`).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.starts_with('[')).collect()
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn unreachable_upstream_is_rolled_back() {
    require_clusters();
    // Nobody serves the image at the origin's address (198.18.50.1).
    let c = TestCluster::new("unreach", 50)
        .unmanaged_origin()
        .connect_timeout_ms(2000)
        .create();
    let out = c.cli(&["up"]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let lines = error_lines(&err);
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    assert!(lines[0].starts_with("sftsan: "), "{err}");
    assert!(lines[0].contains("unreachable"), "{err}");
    c.assert_no_leftovers();
}

#[test]
fn invalid_specs_name_the_field() {
    let c = TestCluster::new("invalid", 52).create();
    assert_rejected(&c, "nodes[1].name", |s| {
        s.nodes[1].name = s.nodes[0].name.clone()
    });
    assert_rejected(&c, "cluster.degree", |s| s.cluster.degree = 0);
    assert!(
        !c.state_dir().exists(),
        "an invalid spec touched the state directory"
    );
}

/// `plan` and `up` of the cluster's spec changed by `edit` fail with one line naming `field`.
fn assert_rejected(c: &Cluster, field: &str, edit: fn(&mut ClusterSpec)) {
    let mut spec = c.spec.clone();
    edit(&mut spec);
    let path = c.work_dir().join("invalid.toml");
    std::fs::write(&path, spec.to_toml()).unwrap();
    for command in ["plan", "up"] {
        let out = sftsan([command.as_ref(), path.as_os_str()]);
        let err = stderr(&out);
        assert_eq!(
            out.status.code(),
            Some(1),
            "{command} with a bad {field}: {err}"
        );
        assert_eq!(
            err.lines().count(),
            1,
            "{command}: one line expected:\n{err}"
        );
        assert!(
            err.starts_with("sftsan: ") && err.contains(field),
            "{command}: {err}"
        );
    }
}

/// cfg.data from a working installation of the original sftsan: its README's (seed 000),
/// with `cacheoridev` on line 14 (the device under the cache's loop device).
const CFG_DATA: &str = include_str!("../../examples/legacy/cfg.data");

/// The example nodes file (20 compute nodes, comments, blank lines, trailing spaces) with
/// CRLF line ends, as a file edited on Windows has them.
fn nodes_file() -> String {
    include_str!("../../examples/legacy/nodes").replace('\n', "\r\n")
}

#[test]
fn a_field_cfg_data_imports_with_warnings_and_plans_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("cfg.data"), CFG_DATA).unwrap();
    std::fs::write(path("nodes"), nodes_file()).unwrap();
    let state = path("state");
    let out = sftsan([
        "import-legacy".as_ref(),
        path("cfg.data").as_os_str(),
        path("nodes").as_os_str(),
        "--state-dir".as_ref(),
        state.as_os_str(),
        "-o".as_ref(),
        path("spec.toml").as_os_str(),
    ]);
    assert!(out.status.success(), "import-legacy: {}", stderr(&out));
    // One warning per key the spec has no place for, and none for what it used.
    let warnings: Vec<String> = stderr(&out).lines().map(String::from).collect();
    let keys: Vec<&str> = warnings
        .iter()
        .map(|w| {
            let rest = w
                .strip_prefix("sftsan: warning: cfg.data line ")
                .unwrap_or_else(|| panic!("{w}"));
            rest.split(": ").nth(1).unwrap()
        })
        .collect();
    // cacheoridev is each compute host's cache device: used, so not warned about.
    assert_eq!(keys, ["vgname", "cacheloopdev"], "{warnings:#?}");
    assert!(
        warnings[0].starts_with("sftsan: warning: cfg.data line 4: vgname: "),
        "{warnings:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path("spec.toml"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the spec holds a CHAP secret: owner-only");

    // The image device does not exist here: point the spec at a file that does.
    std::fs::write(path("image.raw"), vec![0x5a; 1 << 20]).unwrap();
    let toml = std::fs::read_to_string(path("spec.toml")).unwrap();
    let old = r#"source = "/dev/mapper/vgdata-lvimage1""#;
    assert!(toml.contains(old), "imported spec:\n{toml}");
    let toml = toml.replace(old, &format!("source = {:?}", path("image.raw")));
    std::fs::write(path("spec.toml"), toml).unwrap();

    let out = sftsan([
        "plan".as_ref(),
        "--json".as_ref(),
        path("spec.toml").as_os_str(),
    ]);
    assert!(
        out.status.success(),
        "plan of the imported spec: {}",
        stderr(&out)
    );
    let plan: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(plan["cluster"], "ubuntu12");
    assert_eq!(plan["degree"], 1);
    // A multi-host cluster: each node on its own host, reached as root at its address.
    assert_eq!(plan["mode"], "remote");
    let tree: Vec<String> = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{} {} ssh {}@{} <- {}",
                n["name"].as_str().unwrap(),
                n["address"].as_str().unwrap(),
                n["ssh"]["user"].as_str().unwrap(),
                n["ssh"]["host"].as_str().unwrap(),
                n["parent"].as_str().unwrap_or("-")
            )
        })
        .collect();
    let mut chain = vec!["origin 192.168.0.152 ssh root@192.168.0.152 <- -".to_string()];
    for i in 0..20 {
        let parent = if i == 0 {
            "origin".to_string()
        } else {
            format!("node{}", i + 1)
        };
        let address = format!("192.168.0.{}", 153 + i);
        chain.push(format!(
            "node{} {address} ssh root@{address} <- {parent}",
            i + 2
        ));
    }
    assert_eq!(tree, chain, "the 21-node chain, in the nodes file's order");
    // Each host's cache goes on its own cacheoridev.
    let caches: Vec<&serde_json::Value> = plan["nodes"].as_array().unwrap()[1..]
        .iter()
        .map(|n| &n["stack"])
        .collect();
    for stack in caches {
        assert!(
            stack.to_string().contains("/dev/vgdata/lvcache"),
            "a node's stack without its cache device: {stack}"
        );
    }
    assert!(!state.exists(), "plan touched the state directory");
}

/// What a cluster has on the system, to tell whether a command changed anything.
fn fingerprint(c: &Cluster) -> String {
    let journal = std::fs::read_to_string(c.names.journal()).unwrap_or_default();
    format!(
        "{journal}\n{:?}\n{:?}\n{:?}",
        c.files(),
        c.processes(),
        c.namespaces()
    )
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn up_and_plan_on_a_running_cluster_change_nothing() {
    require_clusters();
    let c = TestCluster::new("rerun", 51).create();
    c.up();
    let before = fingerprint(&c);

    let err = c.up();
    assert!(err.contains("up: 0 created"), "{err}");
    for line in err.lines().filter(|l| l.starts_with('[')) {
        assert!(line.contains(" unchanged "), "second up: {line}");
    }
    assert_eq!(fingerprint(&c), before, "a second up changed the cluster");

    let out = c.cli(&["plan"]);
    assert!(out.status.success(), "plan: {}", stderr(&out));
    assert_eq!(fingerprint(&c), before, "plan changed the cluster");

    c.down();
    c.assert_no_leftovers();
}
