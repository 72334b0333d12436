//! The boot-storm benchmark (`sftsan bench boot-storm`): boots many VMs from one image
//! through each method (central, full copy, sftsan trees) on the same emulated network, one
//! method at a time, and writes a markdown table, the raw results and plots.

mod bed;
mod boot;
mod faults;
mod methods;
mod plot;
mod relay_tls;
mod report;
mod sampler;
mod workload;

use anyhow::{bail, Context as _, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bed::BedParams;
use boot::BootMode;
use methods::{Method, MethodRun, Run};
use report::{summarize, Context, Summary};
use workload::Workload;

/// `sftsan bench ...`
#[derive(Subcommand)]
pub enum Command {
    /// Boot NODES x VMS_PER_NODE VMs at once through each method; report makespan, boot
    /// times, origin egress, node ingress and cache hits, with plots.
    BootStorm(BootStorm),
    /// Readers fetch an image from a node's export with and without TLS (remote mode's
    /// relay against local mode's plain export), in turns; report throughput, CPU per GiB
    /// and the tls/plain ratios.
    RelayTls(relay_tls::RelayTls),
    /// Faults injected while readers read through VM disks (a parent's daemon killed or
    /// stopped, its link down or lossy, the origin restarted, a keeper killed, or --chaos);
    /// report read errors, wrong bytes, stalls, re-parent and down times, leftovers.
    Faults(faults::Faults),
}

/// The boot storm's parameters.
#[derive(Args, Debug)]
pub struct BootStorm {
    /// Compute nodes (network namespaces), besides the origin.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
    /// VMs booted on every node.
    #[arg(long, default_value_t = 2)]
    vms_per_node: u32,
    /// Methods to compare, in order: central, full-copy, sftsan-D (D = the tree's degree).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "central,full-copy,sftsan-1,sftsan-2,sftsan-4"
    )]
    methods: Vec<Method>,
    /// guest: real QEMU guests boot; replay: qemu-io repeats the recorded boot trace.
    #[arg(long, value_enum, default_value_t = BootMode::Guest)]
    mode: BootMode,
    /// Every host's link rate, each way (Mbit/s).
    #[arg(long, default_value_t = 100)]
    link_mbit: u32,
    /// The boot image (sftsan-bench/boot-image/build makes it).
    #[arg(long, default_value = "/var/cache/sftsan/bench/boot-image")]
    image_dir: PathBuf,
    /// The emulated network's subnet; an unreachable route guards it while the bench runs.
    #[arg(long, default_value = "198.19.254.0/24")]
    subnet: ipnet::Ipv4Net,
    /// Caches, copies, overlays and state of the clusters (removed after each method).
    #[arg(long, default_value = "/var/tmp/sftsan-bench")]
    work_dir: PathBuf,
    /// Where the table, results.json and plots go (default docs/bench/boot-storm-MODE-NxM).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Longest a single VM may take to boot (seconds).
    #[arg(long, default_value_t = 1800)]
    vm_timeout_s: u64,
    /// How often link counters are sampled (milliseconds).
    #[arg(long, default_value_t = 250)]
    tick_ms: u64,
}

impl BootStorm {
    /// One-line errors naming the argument, before anything is touched.
    fn check(&self) -> Result<()> {
        if !(1..=250).contains(&self.nodes) {
            bail!("--nodes: {} is out of range (1 to 250)", self.nodes);
        }
        if !(1..=64).contains(&self.vms_per_node) {
            bail!(
                "--vms-per-node: {} is out of range (1 to 64)",
                self.vms_per_node
            );
        }
        if self.methods.is_empty() {
            bail!("--methods: name at least one method");
        }
        check_work_dir(&self.work_dir)?;
        if !(10..=10_000).contains(&self.tick_ms) {
            bail!("--tick-ms: {} is out of range (10 to 10000)", self.tick_ms);
        }
        Ok(())
    }

    fn out_dir(&self) -> PathBuf {
        self.out.clone().unwrap_or_else(|| {
            let mode = match self.mode {
                BootMode::Guest => "guest",
                BootMode::Replay => "replay",
            };
            PathBuf::from(format!(
                "docs/bench/boot-storm-{mode}-{}x{}",
                self.nodes, self.vms_per_node
            ))
        })
    }
}

/// `--work-dir` of a benchmark: absolute, and fit for QEMU option strings (commas
/// separate options) and unix socket addresses (their length is bounded).
fn check_work_dir(dir: &std::path::Path) -> Result<()> {
    if !dir.is_absolute() {
        bail!("--work-dir: {} is not an absolute path", dir.display());
    }
    let text = dir.to_string_lossy();
    if text.contains(',') || text.chars().any(char::is_whitespace) || text.len() > 60 {
        bail!("--work-dir: {text:?} must have no commas or spaces and at most 60 bytes");
    }
    Ok(())
}

/// Runs one benchmark.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::BootStorm(args) => boot_storm(&args),
        Command::RelayTls(args) => relay_tls::relay_tls(&args),
        Command::Faults(args) => faults::faults(&args),
    }
}

fn boot_storm(args: &BootStorm) -> Result<()> {
    args.check()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root: the emulated network is made of network namespaces");
    }
    let workload = Workload::load(&args.image_dir)?;
    let working_set = workload.working_set();
    let params = BedParams {
        nodes: args.nodes,
        vms_per_node: args.vms_per_node,
        subnet: args.subnet,
        link_mbit: args.link_mbit,
        image: workload.disk(),
        work_dir: args.work_dir.clone(),
    };
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{msg:28} [{bar:30}] {pos}/{len} VMs booted, {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let run = Run {
        params: &params,
        workload: &workload,
        mode: args.mode,
        timeout: Duration::from_secs(args.vm_timeout_s),
        tick: Duration::from_millis(args.tick_ms),
        progress: bar.clone(),
    };
    run.clear_leftovers(&args.methods)?;
    let mut runs: Vec<MethodRun> = Vec::new();
    let mut summaries: Vec<Summary> = Vec::new();
    for &method in &args.methods {
        bar.reset();
        let r = run
            .method(method)
            .with_context(|| format!("method {method}"))?;
        let s = summarize(&r, working_set);
        let line = format!(
            "{:10} makespan {:7.1} s, boots p50 {:.1} s max {:.1} s, origin sent {:.1} MiB ({:.2} x WS x children)",
            s.method,
            s.makespan_s,
            s.boot_p50_s,
            s.boot_max_s,
            s.origin_egress as f64 / report::MIB,
            s.origin_egress_per_child_ws
        );
        if bar.is_hidden() {
            sftsan_core::errln!("{line}");
        } else {
            bar.println(line);
        }
        runs.push(r);
        summaries.push(s);
    }
    bar.finish_and_clear();
    // Each method removed its own state; the work directory goes too once it is empty.
    let _ = std::fs::remove_dir(&args.work_dir);
    let out = args.out_dir();
    write_results(&out, args, &workload, &runs, &summaries)?;
    sftsan_core::outln!("{}", out.join("README.md").display())?;
    Ok(())
}

fn write_results(
    out: &Path,
    args: &BootStorm,
    w: &Workload,
    runs: &[MethodRun],
    summaries: &[Summary],
) -> Result<()> {
    std::fs::create_dir_all(out)
        .with_context(|| format!("--out: cannot create {}", out.display()))?;
    let plots = plot::plots(out, runs)?;
    let m = &w.manifest;
    let command = std::iter::once("sftsan bench".to_string())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let ctx = Context {
        command,
        date: date(),
        machine: report::machine(),
        parameters: vec![
            ("nodes".into(), format!("{} (plus the origin)", args.nodes)),
            ("VMs per node".into(), args.vms_per_node.to_string()),
            ("boot".into(), format!("{:?}", args.mode).to_lowercase()),
            (
                "links".into(),
                format!("{} Mbit/s each way on every host (tbf)", args.link_mbit),
            ),
            (
                "image".into(),
                format!(
                    "{:.0} MiB ext4, Debian kernel {}",
                    m.disk_bytes as f64 / report::MIB,
                    m.kernel_version
                ),
            ),
            (
                "boot working set".into(),
                format!(
                    "{} files, {:.1} MiB read by init",
                    m.working_set_files,
                    m.working_set_bytes as f64 / report::MIB
                ),
            ),
            (
                "trace".into(),
                format!(
                    "{} reads, {:.1} MiB; WS (64 KiB clusters) {:.1} MiB",
                    w.trace.reads(),
                    w.trace.read_bytes() as f64 / report::MIB,
                    w.working_set() as f64 / report::MIB
                ),
            ),
        ],
        plots,
    };
    let title = format!(
        "Boot storm: {} nodes x {} VMs ({:?} boots)",
        args.nodes, args.vms_per_node, args.mode
    )
    .replace("Guest", "guest")
    .replace("Replay", "replay");
    std::fs::write(
        out.join("README.md"),
        report::markdown(&title, &ctx, summaries),
    )?;
    let json = serde_json::json!({"context": ctx, "summaries": summaries, "runs": runs});
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&json)?,
    )?;
    Ok(())
}

/// Today's date (UTC), from the system clock.
fn date() -> String {
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400) as i64;
    // Civil-from-days (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}
