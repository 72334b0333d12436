//! What a benchmark run found, as numbers per method and as the markdown page under
//! docs/bench/: the command, the machine, the parameters, the table and the plots.

use serde::Serialize;
use std::fmt::Write as _;

use crate::methods::MethodRun;

pub const MIB: f64 = 1024.0 * 1024.0;

/// The numbers of one method, derived from its run.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub method: String,
    pub vms: usize,
    pub prepare_s: f64,
    pub makespan_s: f64,
    pub boot_p50_s: f64,
    pub boot_p90_s: f64,
    pub boot_max_s: f64,
    pub origin_egress: u64,
    /// Origin egress over (working set x the origin's children): 1.0 = each child
    /// fetched each block once.
    pub origin_egress_per_child_ws: f64,
    pub node_ingress_mean: u64,
    pub node_ingress_max: u64,
    pub cache_hit_ratio: Option<f64>,
}

/// The `q` quantile (0..=1) of `values` by nearest rank.
pub fn quantile(values: &[f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    v[rank - 1]
}

pub fn summarize(run: &MethodRun, working_set: u64) -> Summary {
    let seconds: Vec<f64> = run.boots.iter().map(|b| b.seconds()).collect();
    let ingress: Vec<u64> = run.node_ingress.iter().map(|(_, b)| *b).collect();
    let per_child = (working_set * run.origin_children.max(1) as u64) as f64;
    Summary {
        method: run.method.clone(),
        vms: run.boots.len(),
        prepare_s: run.prepare_s,
        makespan_s: run.makespan_s,
        boot_p50_s: quantile(&seconds, 0.5),
        boot_p90_s: quantile(&seconds, 0.9),
        boot_max_s: quantile(&seconds, 1.0),
        origin_egress: run.origin_egress,
        origin_egress_per_child_ws: run.origin_egress as f64 / per_child,
        node_ingress_mean: ingress.iter().sum::<u64>() / ingress.len().max(1) as u64,
        node_ingress_max: ingress.iter().copied().max().unwrap_or(0),
        cache_hit_ratio: run.cache_hit_ratio,
    }
}

/// The run's description: everything needed to read (and repeat) its numbers.
#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub command: String,
    pub date: String,
    pub machine: Vec<(String, String)>,
    pub parameters: Vec<(String, String)>,
    pub plots: Vec<(String, String)>,
}

fn mib(bytes: u64) -> String {
    format!("{:.1}", bytes as f64 / MIB)
}

/// The best sftsan method's makespan against each baseline's, e.g. "4.2x faster than central".
pub fn headline(summaries: &[Summary]) -> Vec<String> {
    let best = summaries
        .iter()
        .filter(|s| s.method.starts_with("sftsan"))
        .min_by(|a, b| a.makespan_s.total_cmp(&b.makespan_s));
    let Some(best) = best else { return vec![] };
    summaries
        .iter()
        .filter(|s| !s.method.starts_with("sftsan"))
        .map(|s| {
            format!(
                "{} boots all VMs {:.1}x faster than {} ({:.1} s vs {:.1} s), with {:.1}x less origin egress",
                best.method,
                s.makespan_s / best.makespan_s,
                s.method,
                best.makespan_s,
                s.makespan_s,
                s.origin_egress as f64 / best.origin_egress.max(1) as f64
            )
        })
        .collect()
}

pub fn markdown(title: &str, ctx: &Context, summaries: &[Summary]) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# {title}\n");
    let _ = writeln!(
        md,
        "Made on {} with:\n\n```\n{}\n```\n",
        ctx.date, ctx.command
    );
    for line in headline(summaries) {
        let _ = writeln!(md, "- {line}");
    }
    let _ = writeln!(
        md,
        "\n| method | VMs | makespan s | prepare s | boot p50 s | boot p90 s | boot max s | origin egress MiB | origin egress / (WS x children) | node ingress mean MiB | node ingress max MiB | cache hit ratio (at least) |"
    );
    let _ = writeln!(
        md,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for s in summaries {
        let hit = s
            .cache_hit_ratio
            .map_or("-".to_string(), |h| format!("{:.1} %", h * 100.0));
        let _ = writeln!(
            md,
            "| {} | {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {:.3} | {} | {} | {} |",
            s.method,
            s.vms,
            s.makespan_s,
            s.prepare_s,
            s.boot_p50_s,
            s.boot_p90_s,
            s.boot_max_s,
            mib(s.origin_egress),
            s.origin_egress_per_child_ws,
            mib(s.node_ingress_mean),
            mib(s.node_ingress_max),
            hit
        );
    }
    let _ = writeln!(
        md,
        "\nmakespan: from the method's start (setup included) to the last VM's boot. prepare: until \
         the last node's disks were ready (sftsan's `up`; full copy's slowest copy). Egress and \
         ingress are bytes on the hosts' links (veth counters, headers included). WS (working set): \
         the image bytes one boot makes a node fetch (the trace's requests rounded out to the \
         cache's 64 KiB clusters). Cache hit ratio: of the bytes sftsan's nodes served to their \
         VMs and children, the share they did not fetch from upstream; a lower bound, since a \
         miss fetches a whole 64 KiB cluster (1 - fetched/served, 0 when negative).\n"
    );
    let _ = writeln!(md, "## Plots\n");
    for (file, caption) in &ctx.plots {
        let _ = writeln!(md, "![{caption}]({file})\n");
    }
    let _ = writeln!(md, "## Parameters\n");
    for (k, v) in &ctx.parameters {
        let _ = writeln!(md, "- {k}: {v}");
    }
    let _ = writeln!(md, "\n## Machine\n");
    for (k, v) in &ctx.machine {
        let _ = writeln!(md, "- {k}: {v}");
    }
    md
}

/// CPU, cores, memory, kernel and QEMU of this machine.
pub fn machine() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kib: u64 = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let qemu = std::process::Command::new("qemu-system-x86_64")
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.lines().next().map(str::to_string))
        .unwrap_or_default();
    vec![
        ("CPU".into(), cpu),
        ("cores".into(), cores.to_string()),
        (
            "memory".into(),
            format!("{:.1} GiB", mem_kib as f64 / 1024.0 / 1024.0),
        ),
        (
            "kernel".into(),
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
        ("QEMU".into(), format!("{qemu} (TCG: no KVM)")),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_by_nearest_rank() {
        let v = [5.0, 1.0, 3.0, 2.0, 4.0];
        assert_eq!(quantile(&v, 0.5), 3.0);
        assert_eq!(quantile(&v, 0.9), 5.0);
        assert_eq!(quantile(&v, 1.0), 5.0);
        assert_eq!(quantile(&v, 0.0), 1.0);
        assert_eq!(quantile(&[], 0.5), 0.0);
    }

    fn summary(method: &str, makespan_s: f64, origin_egress: u64) -> Summary {
        Summary {
            method: method.into(),
            vms: 4,
            prepare_s: 0.0,
            makespan_s,
            boot_p50_s: 0.0,
            boot_p90_s: 0.0,
            boot_max_s: 0.0,
            origin_egress,
            origin_egress_per_child_ws: 1.0,
            node_ingress_mean: 0,
            node_ingress_max: 0,
            cache_hit_ratio: None,
        }
    }

    #[test]
    fn the_headline_compares_the_fastest_sftsan_with_each_baseline() {
        let lines = headline(&[
            summary("central", 40.0, 800),
            summary("sftsan-1", 20.0, 100),
            summary("sftsan-2", 10.0, 200),
        ]);
        assert_eq!(lines.len(), 1);
        assert!(
            lines[0].starts_with("sftsan-2 boots all VMs 4.0x faster than central"),
            "{}",
            lines[0]
        );
        assert!(
            lines[0].ends_with("4.0x less origin egress"),
            "{}",
            lines[0]
        );
    }
}
