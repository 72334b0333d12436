//! The results: one markdown table (fault | longest stall | read errors | wrong bytes |
//! re-parent time | down time | residue), details, and the raw JSON, with the command line
//! that made them.

use anyhow::{Context as _, Result};
use serde::Serialize;
use std::path::Path;

use super::chaos::ChaosRun;
use super::guard::Down;
use super::single::FaultRun;
use super::summary::ReadStats;

const MIB: f64 = (1u64 << 20) as f64;

/// A run that could not be measured.
#[derive(Debug, Clone, Serialize)]
pub struct Failed {
    pub title: String,
    pub error: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Context {
    pub command: String,
    pub date: String,
    pub machine: Vec<(String, String)>,
    pub parameters: Vec<(String, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub context: Context,
    pub runs: Vec<FaultRun>,
    pub chaos: Option<ChaosRun>,
    pub failed: Vec<Failed>,
}

fn stall(r: &ReadStats) -> String {
    format!("{:.2} s / {:.2} s", r.max_latency_s, r.longest_gap_s)
}

fn errors(r: &ReadStats) -> String {
    let mut s = format!("{} of {}", r.read_errors(), r.reads);
    if r.hung > 0 {
        s.push_str(&format!(" ({} hung)", r.hung));
    }
    s
}

fn chaos_errors(c: &ChaosRun) -> String {
    let own = c.errors_on_own_dead_daemon;
    if own == 0 {
        return errors(&c.reads);
    }
    format!(
        "{} of {} ({own} of them on a node whose own daemon was dead, until its reader \
         read well again, at most {:.1} s after up: a VM pauses there)",
        c.reads.read_errors(),
        c.reads.reads,
        c.slowest_own_recovery_s
    )
}

fn down(d: &Down) -> String {
    if d.timed_out {
        format!("> {:.0} s (killed)", d.seconds)
    } else if !d.ok {
        format!("{:.1} s (failed)", d.seconds)
    } else {
        format!("{:.1} s", d.seconds)
    }
}

fn residue(d: &Down) -> String {
    match d.residue.len() {
        0 => "none".into(),
        n => format!("{n} left"),
    }
}

fn reparent(run: &FaultRun) -> String {
    match (run.reparent.time_ms(), run.reparent_expected) {
        (Some(ms), _) => format!("{:.2} s", ms as f64 / 1e3),
        (None, true) => "n/a".into(),
        (None, false) => "- (none expected)".into(),
    }
}

/// The table the docs hold, with the chaos run's row last.
pub fn table(results: &Results) -> String {
    let mut t = String::from(
        "| fault | longest stall (slowest read / longest gap) | read errors | wrong bytes | re-parent time | down time | residue |\n\
         | --- | ---: | ---: | ---: | ---: | ---: | --- |\n",
    );
    for run in &results.runs {
        t.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} | {} |\n",
            run.title,
            stall(&run.reads),
            errors(&run.reads),
            run.reads.wrong_bytes,
            reparent(run),
            down(&run.down),
            residue(&run.down)
        ));
    }
    if let Some(c) = &results.chaos {
        t.push_str(&format!(
            "| {}: chaos, {} faults in {} s (seed {}) | {} | {} | {} | - | {} | {} |\n",
            c.topology.name(),
            c.events.len(),
            c.seconds,
            c.seed,
            stall(&c.reads),
            chaos_errors(c),
            c.reads.wrong_bytes,
            down(&c.down),
            residue(&c.down)
        ));
    }
    for f in &results.failed {
        t.push_str(&format!(
            "| {} | not measured: {} | | | | | |\n",
            f.title, f.error
        ));
    }
    t
}

fn percent(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

fn details(results: &Results) -> String {
    let mut t = String::from(
        "| fault | readers on | reads (good after the fault) | caches before the fault | upstream after the fault | read p50 / p99 | notes |\n\
         | --- | --- | ---: | --- | ---: | ---: | --- |\n",
    );
    for run in &results.runs {
        let caches: Vec<String> = run
            .cache_fill_before
            .iter()
            .map(|(n, f)| format!("{n} {}", percent(*f)))
            .collect();
        let mut notes = Vec::new();
        if let Some(m) = &run.loss_method {
            notes.push(m.clone());
        }
        if let Some(o) = &run.revive {
            notes.push(format!(
                "revived by up in {:.1} s{}",
                o.seconds,
                if o.ok { "" } else { " (failed)" }
            ));
        }
        if run.reparent.slowest_poll_s > 2.0 {
            notes.push(format!(
                "status --json took up to {:.1} s",
                run.reparent.slowest_poll_s
            ));
        }
        if run.reparent.failed_polls > 0 {
            notes.push(format!(
                "{} of {} status polls failed ({})",
                run.reparent.failed_polls,
                run.reparent.polls,
                run.reparent.last_problem.as_deref().unwrap_or("")
            ));
        }
        if let Some(m) = run.reads.messages.first() {
            notes.push(format!("readers saw: {m}"));
        }
        t.push_str(&format!(
            "| {} | {} ({} readers) | {} ({}) | {} | {:.1} MiB | {:.1} / {:.1} ms | {} |\n",
            run.title,
            run.reader_nodes.join(", "),
            run.reads.readers,
            run.reads.reads,
            run.reads.ok_after_fault,
            caches.join(", "),
            run.upstream_bytes_after_fault as f64 / MIB,
            run.reads.p50_latency_ms,
            run.reads.p99_latency_ms,
            notes.join("; ")
        ));
    }
    t
}

fn chaos_details(c: &ChaosRun) -> String {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for e in &c.events {
        *counts
            .entry(format!("{} {}", e.action.name(), e.node))
            .or_default() += 1;
    }
    let faults: Vec<String> = counts.iter().map(|(k, n)| format!("{k} x{n}")).collect();
    let caches: Vec<String> = c
        .cache_fill_end
        .iter()
        .map(|(n, f)| format!("{n} {}", percent(*f)))
        .collect();
    format!(
        "\nChaos details: readers on {} ({} readers, {} reads, p50 / p99 {:.1} / {:.1} ms); \
         {:.1} MiB came from upstream; caches at the end: {}. Faults: {}.\n",
        c.reader_nodes.join(", "),
        c.reads.readers,
        c.reads.reads,
        c.reads.p50_latency_ms,
        c.reads.p99_latency_ms,
        c.upstream_bytes as f64 / MIB,
        caches.join(", "),
        faults.join(", ")
    )
}

fn misses(results: &Results) -> String {
    let mut s = String::new();
    for run in &results.runs {
        if !run.failures.is_empty() {
            s.push_str(&format!("- {}: {}\n", run.title, run.failures.join("; ")));
        }
    }
    if let Some(c) = &results.chaos {
        if !c.failures.is_empty() {
            s.push_str(&format!(
                "- {}: chaos: {}\n",
                c.topology.name(),
                c.failures.join("; ")
            ));
        }
    }
    s
}

const READING: &str = "\
- Each single fault runs on a fresh local-mode cluster (userspace backend) and hits the \
first node below the origin with grandchildren (the origin for its restart). Readers are one \
`qemu-io` per VM disk, in its node's namespace, on every node below the faulted one (the \
faulted node too for its keeper; every node for the origin). Each read is checked with \
`read -P`: every 64 KiB block of the image holds one byte derived from its index, so every \
byte read is compared with the image.
- Reads mostly sweep the image in an order of their own, so caches keep missing; \
\"caches before the fault\" and \"upstream after the fault\" (bytes into the reader nodes' \
links from the fault to the window's end) show how much had to come from upstream.
- Longest stall: the slowest read (a read still outstanding when the readers stop counts \
up to then) / the longest time one reader went without a good read. Read errors count \
failed reads and reads that never completed (hung).
- Re-parent time: each child of the faulted node reports `upstream.last_reparent_unix_ms` \
in `sftsan status --json`; the time is the last child's minus the injection time. n/a: no \
child reported one (nodes without an upstream switch report none).
- Down time: one `sftsan down` with the fault still in force (the stopped daemon stays \
stopped, the link stays down); residue is what was left of the cluster after it \
(processes, namespaces, interfaces, the guard route, mounts, files), then removed by force.
- Chaos: readers run on the leaves, and daemons are killed only on the origin and nodes \
with children; stops, link faults and keeper kills hit any node. A node whose own daemon \
dies cannot serve its own readers until `up` revives it (a VM there pauses on the error, \
`error_policy='stop'`, and is resumed); errors of that kind, were there any, are counted \
apart; every other one misses the bar.
- The bar (issue 15): zero read errors, zero wrong bytes, re-parent within 5 s where the \
children must move, down within 10 s, nothing left.
";

pub fn markdown(results: &Results) -> String {
    let c = &results.context;
    let mut md = String::from("# Faults under readers\n\n");
    md.push_str(&format!(
        "Measured {} with:\n\n```\n{}\n```\n\n",
        c.date, c.command
    ));
    md.push_str(&table(results));
    let missed = misses(results);
    if !missed.is_empty() {
        md.push_str("\nWhere runs miss the bar:\n\n");
        md.push_str(&missed);
    }
    if !results.runs.is_empty() {
        md.push_str("\nDetails:\n\n");
        md.push_str(&details(results));
    }
    if let Some(c) = &results.chaos {
        md.push_str(&chaos_details(c));
    }
    md.push_str("\nHow to read it:\n\n");
    md.push_str(READING);
    md.push_str("\n| parameter | value |\n| --- | --- |\n");
    for (k, v) in &c.parameters {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str("\n| machine | |\n| --- | --- |\n");
    for (k, v) in &c.machine {
        md.push_str(&format!("| {k} | {v} |\n"));
    }
    md.push_str("\nEvery measurement is in `results.json`.\n");
    md
}

pub fn write(out: &Path, results: &Results) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out: cannot create {}", out.display()))?;
    let md = out.join("results.md");
    std::fs::write(&md, markdown(results))
        .with_context(|| format!("--out: writing {}", md.display()))?;
    let json = out.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(results)?)
        .with_context(|| format!("--out: writing {}", json.display()))?;
    Ok(())
}
