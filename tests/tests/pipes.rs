//! Every `sftsan` command that prints survives a reader that is gone before it writes
//! (`sftsan plan SPEC | head -1`): it exits 0, or dies of SIGPIPE as coreutils do, and says
//! nothing on stderr. A command that changes the cluster still finishes its work.

use std::process::Command;

use sftsan_tests::{
    assert_quiet_on_closed_pipe, require_clusters, run_into_closed_pipe, sftsan_bin, TestCluster,
};

fn sftsan_into_closed_pipe(args: &[&str]) {
    let mut cmd = Command::new(sftsan_bin());
    cmd.args(args).env_remove("RUST_LOG");
    let out = run_into_closed_pipe(&mut cmd);
    assert_quiet_on_closed_pipe(&out, &format!("sftsan {}", args.join(" ")));
}

/// What prints without a cluster running: the plan, the status of a cluster that is down,
/// an imported legacy configuration, help and version.
#[test]
fn commands_that_need_no_cluster_end_quietly() {
    let c = TestCluster::new("pipes", 53).nodes(3).create();
    let spec = c.spec_path.to_str().unwrap();
    let dir = c.work_dir();
    let cfg = dir.join("cfg.data");
    let nodes = dir.join("nodes");
    std::fs::write(
        &cfg,
        "imagename=img\nimagedev=/dev/vg/img\nimagenode=10.0.0.1\nnumsnap=2\ndegree=2\ncachesize=64\n",
    )
    .unwrap();
    std::fs::write(&nodes, "10.0.0.2\n10.0.0.3\n").unwrap();
    let (cfg, nodes) = (cfg.to_str().unwrap(), nodes.to_str().unwrap());
    for args in [
        vec!["plan", spec],
        vec!["plan", spec, "--json"],
        vec!["status", spec],
        vec!["status", spec, "--json"],
        vec!["import-legacy", cfg, nodes],
        vec!["--help"],
        vec!["plan", "--help"],
        vec!["--version"],
    ] {
        sftsan_into_closed_pipe(&args);
    }
    assert!(!c.state_dir().exists(), "printing touched nothing");
}

/// What prints about a running cluster: status, verify, a snapshot's file.
#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn commands_on_a_running_cluster_end_quietly_and_finish_their_work() {
    require_clusters();
    let c = TestCluster::new("pipesup", 54)
        .nodes(1)
        .snapshots(1)
        .image_size(4 << 20)
        .create();
    c.up();
    let spec = c.spec_path.to_str().unwrap();
    sftsan_into_closed_pipe(&["status", spec]);
    sftsan_into_closed_pipe(&["status", spec, "--json"]);
    sftsan_into_closed_pipe(&["verify", spec]);
    sftsan_into_closed_pipe(&["snapshot", "create", spec, "n1", "2"]);
    assert!(
        c.snapshot_file("n1", 2).exists(),
        "the snapshot was made though nobody read its name"
    );
    c.down();
    c.assert_no_leftovers();
}
