//! examples/python: the unittest suite of the ctypes wrapper (sftsan.py) and the VDSM hook,
//! run with `python3 -m unittest` against this build's libsftsan.so: without a cluster (the
//! cluster tests say they skip), and in the root tier with a real local cluster
//! (SFTSAN_TEST_SPEC), which it brings up and down itself.

mod common;

use std::process::Command;

use sftsan_tests::{require_clusters, Cluster, TestCluster};

/// `python3 -m unittest` in examples/python with this build's library; with `cluster`,
/// the suite's cluster tests get it as their scratch cluster.
fn run_suite(cluster: Option<&Cluster>) -> String {
    common::require_tools(&["python3"]);
    let artifacts = common::artifacts();
    let dir = common::workspace().join("examples/python");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "unittest", "-v", "test_sftsan"])
        .current_dir(&dir)
        .env("SFTSAN_LIB", artifacts.shared_lib())
        .env("SFTSAN_BIN", artifacts.sftsan_bin())
        .env("PYTHONDONTWRITEBYTECODE", "1") // no __pycache__ in the source tree
        .env_remove("SFTSAN_TEST_SPEC")
        .env_remove("RUST_LOG");
    if let Some(c) = cluster {
        cmd.env("SFTSAN_TEST_SPEC", &c.spec_path);
    }
    let out = cmd.output().expect("cannot run python3");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "python3 -m unittest failed: {}",
        out.status
    );
    stderr.lines().last().unwrap_or_default().to_string()
}

/// Everything but the cluster tests (no root needed): those are skipped, and say so.
#[test]
fn python_wrapper_and_vdsm_hook() {
    let summary = run_suite(None);
    assert!(summary.starts_with("OK (skipped="), "{summary}");
}

/// The whole suite with a real local cluster (origin + 3 nodes, binary: n1 and n2 below
/// the origin, n3 below n1): every test runs, none is skipped.
#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn python_suite_on_a_real_cluster() {
    require_clusters();
    let c = TestCluster::new("ffi-python", 73)
        .nodes(3)
        .degree(2)
        .create();
    let summary = run_suite(Some(&c));
    assert_eq!(summary, "OK", "every test ran, none skipped");
    c.assert_no_leftovers();
}
