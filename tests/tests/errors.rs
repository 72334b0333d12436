//! Failures an operator meets through the CLI: an unreachable upstream (rolled back), an
//! invalid spec (one line naming the field), a legacy configuration to import, and an `up`
//! or `plan` on a cluster that is already up (nothing changes).

use sftsan_core::spec::ClusterSpec;
use sftsan_tests::{can_run_clusters, sftsan, stderr, stdout, Cluster, TestCluster};

/// stderr without `up`'s progress lines (`[  0.1s] n1/daemon  created ...`).
fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| !l.starts_with('[')).collect()
}

#[test]
fn unreachable_upstream_is_rolled_back() {
    if !can_run_clusters() {
        return;
    }
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

/// cfg.data as in the original sftsan's README (seed 000).
const CFG_DATA: &str = r"imagenode=192.168.0.152   #原存储节点ip
imagename=ubuntu12      #镜像名称
numsnap=2               #在计算节点建立snapshot的数目
vgname=vgdata            #原存储节点VG的名称
imagedev=/dev/mapper/vgdata-lvimage1     #原存储节点的镜像路径
degree=1					#sftsan树形模型的度，2为二叉树，10为十叉树，1为链状结构
workdir=/root/sftsan/       #sftsan工作路径
nodes=`cat $workdir/nodes`  #计算节点列表，每个计算节点一行
cachesize=4096            #cache的大小，设置太大占用过多内存，导致性能下降，甚至崩溃，设置太小会导致数据置换，性能下降
cacheloopdev=/dev/loop6   #用来进行缓存的块设备
dmsnap=dmsnap           #配置snapshot的参数
qcsnap=qcsnap            #另一种实现方式qcow2，现在没有使用
snaptype=$dmsnap
#snaptype=$qcsnap
";

#[test]
fn imported_legacy_config_is_a_valid_spec() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    std::fs::write(path("cfg.data"), CFG_DATA).unwrap();
    std::fs::write(path("nodes"), "192.168.0.153\n192.168.0.154\n").unwrap();
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
    let tree: Vec<String> = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{} <- {}",
                n["name"].as_str().unwrap(),
                n["parent"].as_str().unwrap_or("-")
            )
        })
        .collect();
    assert_eq!(tree, ["origin <- -", "node2 <- origin", "node3 <- node2"]);
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
fn up_and_plan_on_a_running_cluster_change_nothing() {
    if !can_run_clusters() {
        return;
    }
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
