//! examples/c/cluster.c built with gcc against libsftsan.so and libsftsan.a, each run
//! against a real local cluster (network namespaces, qemu-storage-daemon): plan, up,
//! status, verify, an extra snapshot, down. The shared build also runs under valgrind,
//! which must find no invalid access and no definite leak. Needs root.

mod common;

use std::path::Path;
use std::process::Command;

use common::{artifacts, compile_c, Link};
use serde_json::Value;
use sftsan_tests::{require_clusters, Cluster, TestCluster};

/// The JSON document printed after the line `heading:`.
fn section(stdout: &str, heading: &str) -> Value {
    let start = stdout
        .find(&format!("\n{heading}:\n"))
        .unwrap_or_else(|| panic!("no {heading} in:\n{stdout}"))
        + heading.len()
        + 3;
    let rest = &stdout[start..];
    // A document ends at the first line that is only "}" or "]".
    let end = rest
        .lines()
        .scan(0, |at, line| {
            *at += line.len() + 1;
            Some((*at, line))
        })
        .find(|(_, line)| *line == "}" || *line == "]")
        .map(|(at, _)| at)
        .unwrap_or_else(|| panic!("unterminated {heading} in:\n{stdout}"));
    serde_json::from_str(&rest[..end]).unwrap_or_else(|e| panic!("{heading}: {e}"))
}

/// Runs the C example (optionally under valgrind) on `cluster` and checks what it did.
fn run_example(cluster: &Cluster, exe: &Path, valgrind: bool) {
    let mut cmd = if valgrind {
        let mut v = common::valgrind();
        v.arg(exe);
        v
    } else {
        Command::new(exe)
    };
    let out = cmd
        .arg(&cluster.spec_path)
        .env("SFTSAN_BIN", artifacts().sftsan_bin())
        .env_remove("RUST_LOG")
        .output()
        .expect("cannot run the C example");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "{} exited with {} (99 under valgrind: an invalid access or a definite leak)\n\
         stdout:\n{stdout}\nstderr:\n{stderr}",
        exe.display(),
        out.status
    );
    let first = &cluster.nodes()[0];
    assert!(
        stdout.contains(&format!(
            "before up: snapshot_path({first}, 1) -> SFTSAN_RESULT_NOT_UP, as expected"
        )),
        "{stdout}"
    );
    let plan = section(&stdout, "plan");
    assert_eq!(plan["cluster"], cluster.name());
    assert!(stdout.contains("\nup: ok ("), "{stdout}");
    let status = section(&stdout, "status");
    let nodes = status["nodes"].as_array().expect("status nodes");
    assert_eq!(nodes.len(), cluster.nodes().len() + 1);
    for n in nodes {
        assert_eq!(n["state"], "up", "{n}");
    }
    let verified = section(&stdout, "verify");
    assert_eq!(
        verified.as_array().map(Vec::len),
        Some(cluster.nodes().len())
    );
    // Snapshots 1 and 2 are planned; the extra one is 3.
    let extra = cluster.snapshot_file(first, 3);
    assert!(
        stdout.contains(&format!("snapshot: {first} 3 {}\n", extra.display())),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("removed: {first} 3 (existed: yes)")),
        "{stdout}"
    );
    assert!(stdout.ends_with("down: ok\n"), "{stdout}");
    // The progress callback saw the steps, and down left nothing behind.
    assert!(stderr.contains("n1/snapshot/3"), "{stderr}");
    cluster.assert_no_leftovers();
}

fn example(link: Link, dir: &Path) -> std::path::PathBuf {
    let exe = dir.join(format!("cluster-{link:?}"));
    compile_c(
        &common::workspace().join("examples/c/cluster.c"),
        &exe,
        link,
    );
    exe
}

/// The root tier's preconditions: root, the storage tools and gcc.
fn require() {
    require_clusters();
    common::require_tools(&["gcc"]);
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn c_example_shared_library() {
    require();
    let cluster = TestCluster::new("ffi-shared", 70).create();
    let exe = example(Link::Shared, cluster.work_dir());
    run_example(&cluster, &exe, false);
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn c_example_static_library() {
    require();
    let cluster = TestCluster::new("ffi-static", 71)
        .nodes(3)
        .degree(2)
        .create();
    let exe = example(Link::Static, cluster.work_dir());
    if common::on_path("ldd") {
        let ldd = Command::new("ldd").arg(&exe).output().unwrap();
        let ldd = String::from_utf8_lossy(&ldd.stdout);
        assert!(!ldd.contains("libsftsan"), "linked dynamically: {ldd}");
    }
    run_example(&cluster, &exe, false);
}

#[test]
#[ignore = "root tier: needs root and the storage tools (scripts/test.sh runs it)"]
fn c_example_under_valgrind() {
    require();
    common::require_tools(&["valgrind"]);
    let cluster = TestCluster::new("ffi-valgrind", 72).create();
    let exe = example(Link::Shared, cluster.work_dir());
    run_example(&cluster, &exe, true);
}

/// examples/c/Makefile builds both programs (into a scratch directory here).
#[test]
fn c_example_makefile_builds_both() {
    common::require_tools(&["make", "gcc"]);
    let a = artifacts();
    let out_dir = tempfile::tempdir().unwrap();
    let out = Command::new("make")
        .arg("-C")
        .arg(common::workspace().join("examples/c"))
        .arg(format!("OUT={}", out_dir.path().display()))
        .arg(format!("TARGET={}", a.dir.display()))
        .arg(format!("STATIC_LIBS={}", a.static_libs.join(" ")))
        .output()
        .expect("cannot run make");
    assert!(
        out.status.success(),
        "make: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for exe in ["cluster", "cluster-static"] {
        let exe = out_dir.path().join(exe);
        // Without arguments it prints its usage and exits 2: it links and loads.
        let run = Command::new(&exe).output().unwrap();
        assert_eq!(run.status.code(), Some(2), "{}", exe.display());
        assert!(String::from_utf8_lossy(&run.stderr).contains("usage:"));
    }
}
