//! examples/python: the unittest suite of the ctypes wrapper (sftsan.py) and the VDSM hook,
//! run with `python3 -m unittest` against this build's libsftsan.so. As root with qemu it
//! also gets a real local cluster (SFTSAN_TEST_SPEC), which it brings up and down itself;
//! without, the cluster tests skip and the rest still run.

mod common;

use std::process::Command;

use sftsan_tests::{can_run_clusters, TestCluster};

#[test]
fn python_wrapper_and_vdsm_hook() {
    if !common::have_tools(&["python3"]) {
        return;
    }
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
    // origin + 3 nodes, binary: n1 and n2 below the origin, n3 below n1.
    let cluster = can_run_clusters().then(|| {
        TestCluster::new("ffi-python", 73)
            .nodes(3)
            .degree(2)
            .create()
    });
    if let Some(c) = &cluster {
        cmd.env("SFTSAN_TEST_SPEC", &c.spec_path);
    }
    let out = cmd.output().expect("cannot run python3");
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "python3 -m unittest failed: {}",
        out.status
    );
    let summary = stderr.lines().last().unwrap_or_default();
    match &cluster {
        Some(c) => {
            assert_eq!(summary, "OK", "every test ran, none skipped");
            c.assert_no_leftovers();
        }
        None => assert!(summary.starts_with("OK (skipped="), "{summary}"),
    }
}
