//! examples/shell/cluster.sh, the CLI flow (plan, up, verify, status --json, snapshot,
//! down), on a real local cluster; and its trap: when `up` dies half-way, the script
//! takes the cluster down before it exits. Needs root.

mod common;

use std::process::{Command, Output};

use sftsan_tests::{require_clusters, Cluster, TestCluster};

fn run_script(cluster: &Cluster, env: &[(&str, &str)]) -> Output {
    Command::new("bash")
        .arg(common::workspace().join("examples/shell/cluster.sh"))
        .arg(&cluster.spec_path)
        .env("SFTSAN", common::artifacts().sftsan_bin())
        .env_remove("RUST_LOG")
        .env_remove(sftsan_core::engine::KILL_AFTER_ENV)
        .envs(env.iter().copied())
        .output()
        .expect("cannot run bash")
}

/// The root tier's preconditions: root, the storage tools and bash, python3.
fn require() {
    require_clusters();
    common::require_tools(&["bash", "python3"]);
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn shell_example_runs_the_whole_flow() {
    require();
    let cluster = TestCluster::new("ffi-shell", 74).create();
    let out = run_script(&cluster, &[]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{}\n{stdout}\n{stderr}", out.status);
    for step in ["plan", "up", "verify", "status", "snapshot 3 on n1", "down"] {
        assert!(
            stderr.contains(&format!("cluster.sh: {step}\n")),
            "{step}: {stderr}"
        );
    }
    assert!(stdout.contains("identical to the image"), "{stdout}");
    assert!(
        stdout.contains("\"state\": \"up\""),
        "status --json: {stdout}"
    );
    let extra = cluster.snapshot_file("n1", 3);
    assert!(
        stdout.contains(&format!("snapshot: n1 3 {}\n", extra.display())),
        "{stdout}"
    );
    assert!(stdout.ends_with("down: ok\n"), "{stdout}");
    cluster.assert_no_leftovers();
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn shell_example_takes_the_cluster_down_when_a_step_fails() {
    require();
    let cluster = TestCluster::new("ffi-shtrap", 77).create();
    // `up` kills itself right after starting the first keeper.
    let out = run_script(&cluster, &[(sftsan_core::engine::KILL_AFTER_ENV, "keeper")]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("failed (exit 137): taking the cluster down"),
        "{stderr}"
    );
    assert!(stderr.contains("down: "), "{stderr}");
    cluster.assert_no_leftovers();
}
