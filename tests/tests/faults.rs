//! The fault-injection tier (issue 15): `sftsan bench faults` as anyone runs it, one fault
//! per test on a small chain (origin -> n1 -> n2 -> n3, n1 faulted, readers through every
//! VM disk below it), and a short chaos run on a binary tree. Each asserts the bar: zero
//! read errors, zero wrong bytes, the children re-parented within 5 s where they must
//! move, one `down` with the fault in force within 10 s, nothing left. The measurement
//! must not be vacuous either: the caches below were far from full, and bytes came from
//! upstream after the fault.

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;

use sftsan_tests::{require_root_with, sftsan_bin};

const TOOLS: [&str; 5] = ["qemu-storage-daemon", "qemu-io", "qemu-img", "ip", "tc"];

/// The bench's own cluster names start so (`flt-<topology>-<fault>`).
const NETNS_PREFIX: &str = "sftsan-flt-";

/// One bench at a time: the clusters share the machine's two cores.
static SERIAL: Mutex<()> = Mutex::new(());

/// `sftsan bench faults ARGS` on `198.18.<subnet>.0/24`, which must succeed and leave
/// nothing; returns its results.json.
fn bench(subnet: u8, args: &[&str]) -> Value {
    require_root_with(&TOOLS);
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let tmp = tempfile::Builder::new()
        .prefix("sftsan-faults")
        .tempdir_in("/var/tmp")
        .unwrap();
    let work = tmp.path().join("w");
    let out = tmp.path().join("out");
    let subnet = format!("198.18.{subnet}.0/24");
    let run = Command::new(sftsan_bin())
        .args(["bench", "faults", "--image-mib", "256", "--warmup-s", "2"])
        .args([
            "--window-s",
            "8",
            "--down-timeout-s",
            "20",
            "--subnet",
            &subnet,
        ])
        .args(args)
        .arg("--work-dir")
        .arg(&work)
        .arg("--out")
        .arg(&out)
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
        leftovers(&subnet, tmp.path()),
        Vec::<String>::new(),
        "the benchmark left these behind"
    );
    assert!(!work.exists(), "the benchmark left its work directory");
    let md = std::fs::read_to_string(out.join("results.md")).unwrap();
    assert!(md.contains("| fault | longest stall"), "{md}");
    serde_json::from_slice(&std::fs::read(out.join("results.json")).unwrap()).unwrap()
}

/// What a bench run could leave, looked for from outside: namespaces of its clusters,
/// the guard route, processes naming its directory.
fn leftovers(subnet: &str, dir: &Path) -> Vec<String> {
    let netns = Command::new("ip").args(["netns", "list"]).output().unwrap();
    let mut left: Vec<String> = String::from_utf8_lossy(&netns.stdout)
        .lines()
        .filter(|l| l.starts_with(NETNS_PREFIX))
        .map(|l| format!("namespace {l}"))
        .collect();
    let routes = Command::new("ip")
        .args(["route", "show", "type", "unreachable"])
        .output()
        .unwrap();
    if String::from_utf8_lossy(&routes.stdout).contains(subnet) {
        left.push(format!("unreachable route {subnet}"));
    }
    let needle = dir.display().to_string();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(argv) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let argv = String::from_utf8_lossy(&argv).replace('\0', " ");
        if argv.contains(&needle) && !sftsan_tests::process_gone(pid(&entry)) {
            left.push(format!("process {argv}"));
        }
    }
    left
}

fn pid(entry: &std::fs::DirEntry) -> i32 {
    entry
        .file_name()
        .to_str()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

fn u64_of(v: &Value) -> u64 {
    v.as_u64()
        .unwrap_or_else(|| panic!("not a whole number: {v}"))
}

fn f64_of(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

/// Where a run's reads and `down` miss the bar. `excused`: read errors of readers on a
/// node while its own daemon was dead (chaos), where a VM pauses instead.
fn read_and_down_misses(run: &Value, excused: u64, misses: &mut Vec<String>) {
    let reads = &run["reads"];
    let errors = u64_of(&reads["errors"]) + u64_of(&reads["hung"]);
    if errors > excused {
        misses.push(format!(
            "{errors} read errors of {} ({} hung, {excused} on a node whose own daemon was dead); per node {}; readers saw {}",
            reads["reads"], reads["hung"], reads["per_node"], reads["messages"]
        ));
    }
    if u64_of(&reads["wrong_bytes"]) > 0 {
        misses.push(format!("{} wrong bytes", reads["wrong_bytes"]));
    }
    if !reads["fatal"].as_array().unwrap().is_empty() {
        misses.push(format!("readers ended early: {}", reads["fatal"]));
    }
    let down = &run["down"];
    let seconds = f64_of(&down["seconds"]);
    if down["ok"] != true || seconds > 10.0 {
        misses.push(format!(
            "down took {seconds:.1} s (ok: {}, {})",
            down["ok"], down["message"]
        ));
    }
    if !down["residue"].as_array().unwrap().is_empty() {
        misses.push(format!("left after down: {}", down["residue"]));
    }
    if run["guard_route_kept"] != true {
        misses.push("the unreachable route was gone during the run".into());
    }
}

/// One fault on the chain, against the bar.
fn single(fault: &str, subnet: u8) {
    let results = bench(subnet, &["--topology", "chain", "--faults", fault]);
    assert_eq!(results["failed"], serde_json::json!([]), "{results}");
    let runs = results["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 1, "{results}");
    let run = &runs[0];
    assert_eq!(run["fault"], fault);
    // Not vacuous: readers ran below n1, their caches were far from full at the fault, and
    // good reads kept coming after it.
    let nodes = run["reader_nodes"].as_array().unwrap();
    assert!(nodes.iter().any(|n| n == "n3"), "{run}");
    for (node, fill) in run["cache_fill_before"].as_object().unwrap() {
        assert!(
            f64_of(fill) < 0.5,
            "{node}'s cache was {fill} full at the fault"
        );
    }
    let mut misses = Vec::new();
    read_and_down_misses(run, 0, &mut misses);
    if u64_of(&run["reads"]["ok_after_fault"]) == 0 {
        misses.push("no good read after the fault".into());
    }
    if u64_of(&run["upstream_bytes_after_fault"]) == 0 {
        misses.push("no bytes came from upstream after the fault".into());
    }
    if run["reparent_expected"] == true {
        let children = run["reparent"]["children"].as_array().unwrap();
        assert!(!children.is_empty(), "{run}");
        for c in children {
            match c["after_ms"].as_u64() {
                Some(ms) if ms <= 5000 => {}
                Some(ms) => misses.push(format!("{} re-parented after {ms} ms", c["node"])),
                None => misses.push(format!(
                    "{} did not re-parent (status: {})",
                    c["node"], run["reparent"]
                )),
            }
        }
    }
    if run["revived"] == false {
        misses.push(format!("up did not revive it: {}", run["revive"]));
    }
    assert!(
        misses.is_empty(),
        "{}:\n  {}",
        run["title"],
        misses.join("\n  ")
    );
}

#[test]
#[ignore = "root tier: needs root, QEMU and iproute2 (scripts/test.sh runs it)"]
fn a_parent_killed() {
    single("kill", 64);
}

#[test]
#[ignore = "root tier: needs root, QEMU and iproute2 (scripts/test.sh runs it)"]
fn a_parent_stopped() {
    single("stop", 65);
}

#[test]
#[ignore = "root tier: needs root, QEMU and iproute2 (scripts/test.sh runs it)"]
fn a_parents_link_down() {
    single("link-down", 66);
}

#[test]
#[ignore = "root tier: needs root, QEMU, iproute2 and netem or iptables (scripts/test.sh runs it)"]
fn a_parents_link_losing_every_packet() {
    single("loss", 67);
}

#[test]
#[ignore = "root tier: needs root, QEMU and iproute2 (scripts/test.sh runs it)"]
fn the_origin_restarted() {
    single("origin-restart", 68);
}

#[test]
#[ignore = "root tier: needs root, QEMU and iproute2 (scripts/test.sh runs it)"]
fn a_keeper_killed() {
    single("keeper-kill", 69);
}

/// SFTSAN_CHAOS_SECONDS (default 60) of a fault every few seconds on a binary tree of 7,
/// readers on every node; SFTSAN_CHAOS_SEED replays a run (default: a fixed seed).
#[test]
#[ignore = "root tier: needs root, QEMU, iproute2 and netem or iptables (scripts/test.sh runs it)"]
fn chaos() {
    let seconds = std::env::var("SFTSAN_CHAOS_SECONDS").unwrap_or_else(|_| "60".into());
    let seed = std::env::var("SFTSAN_CHAOS_SEED").unwrap_or_else(|_| "15".into());
    let results = bench(
        70,
        &[
            "--topology",
            "tree",
            "--snapshots",
            "1",
            "--chaos",
            &seconds,
            "--seed",
            &seed,
        ],
    );
    assert_eq!(results["failed"], serde_json::json!([]), "{results}");
    let run = &results["chaos"];
    assert_eq!(run["seed"].to_string(), seed, "{run}");
    let events = run["events"].as_array().unwrap();
    let seconds: u64 = seconds.parse().unwrap();
    assert!(
        events.len() as u64 >= seconds / 8,
        "{} faults in {seconds} s",
        events.len()
    );
    // Readers run on the leaves and daemons are killed only on nodes with children (a
    // reader on a node whose own daemon dies cannot be served; a VM there pauses, which
    // sftsan-libvirt's io_error test covers): every read error counts.
    assert_eq!(u64_of(&run["errors_on_own_dead_daemon"]), 0, "{run}");
    let mut misses = Vec::new();
    read_and_down_misses(run, 0, &mut misses);
    for e in events {
        if !e["problem"].is_null() {
            misses.push(format!("fault {e}"));
        }
    }
    assert!(
        misses.is_empty(),
        "chaos (seed {seed}):\n  {}",
        misses.join("\n  ")
    );
}
