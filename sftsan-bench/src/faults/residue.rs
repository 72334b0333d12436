//! What a cluster left on the system after `down` (processes, namespaces, interfaces, the
//! guard route, mounts, files), and the forced removal of it, by the cluster's own names
//! and by the pids of processes whose command line names its state directory.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use sftsan_core::process;

use super::cluster::Testbed;
use super::inject::checked;

/// Live processes (not zombies) whose argv mentions the cluster's state directory: its
/// daemons, keepers and readers.
pub fn processes(bed: &Testbed) -> Vec<(i32, String)> {
    let needle = bed.state_dir().display().to_string();
    let me = std::process::id() as i32;
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut found: Vec<(i32, String)> = entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| pid != me && process::cmdline_contains(pid, &needle))
        .map(|pid| (pid, process::cmdline(pid).join(" ")))
        .collect();
    found.sort();
    found
}

/// The cluster's network namespaces that exist.
fn namespaces(bed: &Testbed) -> Vec<String> {
    let prefix = format!("{}-{}-", sftsan_core::names::PREFIX, bed.name);
    std::fs::read_dir("/var/run/netns")
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

/// The cluster's bridge and veth ends that exist.
fn interfaces(bed: &Testbed) -> Vec<String> {
    let nodes = bed.plan.nodes.iter().map(|n| n.name.as_str());
    std::iter::once(bed.names.bridge())
        .chain(nodes.flat_map(|n| [bed.names.veth_host(n), bed.names.veth_peer(n)]))
        .filter(|l| Path::new("/sys/class/net").join(l).exists())
        .collect()
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        out.push(entry.path());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            files(&entry.path(), out);
        }
    }
}

/// Everything of the cluster still on the system, one line each.
pub fn residue(bed: &Testbed) -> Vec<String> {
    let mut left: Vec<String> = processes(bed)
        .into_iter()
        .map(|(pid, argv)| format!("process {pid} {argv}"))
        .collect();
    left.extend(namespaces(bed).into_iter().map(|n| format!("netns {n}")));
    left.extend(
        interfaces(bed)
            .into_iter()
            .map(|l| format!("interface {l}")),
    );
    if bed.guard_route_present() {
        left.push(format!("unreachable route {}", bed.subnet));
    }
    let markers = [
        format!("/netns/{}-{}-", sftsan_core::names::PREFIX, bed.name),
        bed.state_dir().display().to_string(),
    ];
    for line in std::fs::read_to_string("/proc/mounts")
        .unwrap_or_default()
        .lines()
    {
        if markers.iter().any(|m| line.contains(m.as_str())) {
            left.push(format!("mount {line}"));
        }
    }
    let mut found = Vec::new();
    files(bed.state_dir(), &mut found);
    found.sort();
    let lock = bed.names.lock();
    left.extend(
        found
            .into_iter()
            .filter(|f| *f != lock)
            .map(|f| format!("file {}", f.display())),
    );
    left
}

/// Removes whatever of the cluster is left, without `sftsan`: kills its processes (by
/// pid), deletes its interfaces, namespaces and guard route, removes its state directory.
/// Returns what could not be done.
pub fn force_clean(bed: &Testbed) -> Vec<String> {
    let mut failed = Vec::new();
    for (pid, argv) in processes(bed) {
        // SIGKILL reaches a stopped process too.
        let _ = process::signal(pid, libc::SIGKILL);
        if !process::exited_within(pid, Duration::from_secs(10)) {
            failed.push(format!("process {pid} {argv} survived SIGKILL"));
        }
    }
    // A veth goes with either end; the bridge after its ports.
    for link in interfaces(bed).into_iter().rev() {
        if Path::new("/sys/class/net").join(&link).exists() {
            if let Err(e) = checked(Command::new("ip").args(["link", "del", &link])) {
                failed.push(format!("{e:#}"));
            }
        }
    }
    for ns in namespaces(bed) {
        if let Err(e) = checked(Command::new("ip").args(["netns", "del", &ns])) {
            failed.push(format!("{e:#}"));
        }
    }
    if bed.guard_route_present() {
        let subnet = bed.subnet.to_string();
        if let Err(e) = checked(Command::new("ip").args(["route", "del", "unreachable", &subnet])) {
            failed.push(format!("{e:#}"));
        }
    }
    if let Err(e) = remove_dir_if_exists(bed.state_dir()) {
        failed.push(format!("{e:#}"));
    }
    failed
}

pub fn remove_dir_if_exists(dir: &Path) -> anyhow::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(anyhow::Error::from(e).context(format!("removing {}", dir.display())))
        }
        _ => Ok(()),
    }
}
