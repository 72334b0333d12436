//! `sftsan bench faults`: faults injected while readers read through VM overlays, each on
//! a fresh local-mode cluster: the parent's daemon killed or stopped, its link down or
//! losing every packet, the origin's daemon restarted, a keeper killed; or `--chaos`, a
//! random fault every few seconds on one cluster. Per fault: read errors, wrong bytes, the
//! longest stall, the children's re-parent time, and one `down` with the fault in force,
//! timed and checked for leftovers. Written as a markdown table and raw JSON.

mod bar;
mod chaos;
mod cli;
mod cluster;
mod guard;
mod image;
mod inject;
mod reader;
mod reparent;
mod report;
mod residue;
mod rng;
mod setup;
mod single;
mod summary;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sftsan_core::{errln, outln};

use cluster::{Layout, Topology};
use inject::Fault;
use report::{Failed, Results};
use setup::Settings;

const MIB: u64 = 1 << 20;
/// Written first into a work directory the benchmark made: only such a directory is
/// emptied and removed.
const MARKER: &str = ".sftsan-bench-faults";

/// Faults injected under readers.
#[derive(Args, Debug)]
pub struct Faults {
    /// Tree shapes, each fault on a fresh cluster of each (default: chain,tree; for
    /// --chaos: tree).
    #[arg(long, value_delimiter = ',')]
    topology: Vec<Topology>,
    /// The single faults, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "kill,stop,link-down,loss,origin-restart,keeper-kill"
    )]
    faults: Vec<Fault>,
    /// Instead of the single faults: one cluster (the first topology), a random fault
    /// every few seconds for SECONDS.
    #[arg(long, value_name = "SECONDS")]
    chaos: Option<u64>,
    /// Seeds the chaos and the readers (default: from the clock); printed, so a run can
    /// be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Nodes below the origin (default: 3 for a chain, 7 for a tree, the fewest that give
    /// n1 grandchildren).
    #[arg(long)]
    nodes: Option<usize>,
    /// VM disks per node, one reader each.
    #[arg(long, default_value_t = 2)]
    snapshots: u32,
    /// The image's size; reads sweep it, so a larger image keeps caches missing longer.
    #[arg(long, default_value_t = 1024)]
    image_mib: u64,
    /// Every node's link rate, each way (Mbit/s; 0: unshaped).
    #[arg(long, default_value_t = 100)]
    link_mbit: u32,
    /// Reading before the fault (seconds).
    #[arg(long, default_value_t = 2)]
    warmup_s: u64,
    /// Reading from the fault until `down` (seconds).
    #[arg(long, default_value_t = 10)]
    window_s: u64,
    /// How long a killed origin daemon or keeper stays dead before `up` revives it (ms).
    #[arg(long, default_value_t = 1000)]
    hold_ms: u64,
    /// Least time between the starts of one reader's reads (ms).
    #[arg(long, default_value_t = 5)]
    read_interval_ms: u64,
    /// `up` is killed after this long (seconds).
    #[arg(long, default_value_t = 120)]
    up_timeout_s: u64,
    /// The measured `down` is killed after this long (seconds); the bar is 10.
    #[arg(long, default_value_t = 60)]
    down_timeout_s: u64,
    /// The clusters' subnet; an unreachable route guards it while a cluster is up.
    #[arg(long, default_value = "198.19.253.0/24")]
    subnet: ipnet::Ipv4Net,
    /// The image, specs and clusters' state (made for the run, removed after it).
    #[arg(long, default_value = "/var/tmp/sftsan-bench-faults")]
    work_dir: PathBuf,
    /// Where results.md and results.json go.
    #[arg(long, default_value = "docs/bench/faults")]
    out: PathBuf,
    /// The sftsan program whose up, down and status are run (default: this one).
    #[arg(long, hide = true)]
    sftsan: Option<PathBuf>,
}

impl Faults {
    /// One-line errors naming the argument, before anything is touched.
    fn check(&self) -> Result<()> {
        let range = |name: &str, v: u64, lo: u64, hi: u64| -> Result<()> {
            if !(lo..=hi).contains(&v) {
                bail!("--{name}: {v} is out of range ({lo} to {hi})");
            }
            Ok(())
        };
        if let Some(n) = self.nodes {
            range("nodes", n as u64, 3, 30)?;
        }
        range("snapshots", self.snapshots.into(), 1, 4)?;
        range("image-mib", self.image_mib, 16, 16384)?;
        range("link-mbit", self.link_mbit.into(), 0, 100_000)?;
        range("warmup-s", self.warmup_s, 1, 60)?;
        range("window-s", self.window_s, 3, 300)?;
        range("hold-ms", self.hold_ms, 0, 60_000)?;
        range("read-interval-ms", self.read_interval_ms, 0, 1000)?;
        range("up-timeout-s", self.up_timeout_s, 10, 600)?;
        range("down-timeout-s", self.down_timeout_s, 10, 600)?;
        if let Some(s) = self.chaos {
            range("chaos", s, 5, 3600)?;
        } else if self.faults.is_empty() {
            bail!("--faults: name at least one fault");
        }
        if self.subnet.hosts().count() < 32 {
            bail!("--subnet: {} is too small (at least a /27)", self.subnet);
        }
        crate::check_work_dir(&self.work_dir)?;
        if self.work_dir.parent().is_none() {
            bail!("--work-dir: cannot be the root directory");
        }
        if self.out.is_file() {
            bail!("--out: {} is a file, not a directory", self.out.display());
        }
        Ok(())
    }

    fn topologies(&self) -> Vec<Topology> {
        match (self.topology.is_empty(), self.chaos.is_some()) {
            (false, _) => self.topology.clone(),
            (true, true) => vec![Topology::Tree],
            (true, false) => vec![Topology::Chain, Topology::Tree],
        }
    }
}

/// `sftsan bench faults`.
pub fn faults(args: &Faults) -> Result<()> {
    args.check()?;
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("must run as root: the clusters are made of network namespaces");
    }
    for tool in ["qemu-storage-daemon", "qemu-io", "qemu-img", "ip", "tc"] {
        if !inject::on_path(tool) {
            bail!("{tool} is not installed (scripts/install-deps.sh installs it)");
        }
    }
    let _signals = crate::relay_tls::Signals::catch();
    let program = cli::program(args.sftsan.as_deref())?;
    prepare(&args.work_dir, &program)?;
    let result = measure(args, &program);
    let cleaned = residue::remove_dir_if_exists(&args.work_dir);
    let results = result?;
    cleaned?;
    report::write(&args.out, &results)?;
    outln!("{}", report::table(&results))?;
    outln!("{}", args.out.join("results.md").display())?;
    if !results.failed.is_empty() {
        bail!(
            "{} of the runs could not be measured (see {})",
            results.failed.len(),
            args.out.join("results.md").display()
        );
    }
    Ok(())
}

/// Makes the work directory; an earlier run's (its marker says so) is cleared first, its
/// clusters taken down through their specs.
fn prepare(work: &Path, program: &Path) -> Result<()> {
    if work.exists() {
        if !work.join(MARKER).is_file() {
            bail!(
                "--work-dir: {} exists and is not a faults work directory; name another",
                work.display()
            );
        }
        errln!("clearing an earlier run's leftovers in {}", work.display());
        for entry in std::fs::read_dir(work)?.flatten() {
            let spec = entry.path().join("spec.toml");
            if spec.is_file() {
                let cli = cli::Cli {
                    program: program.to_path_buf(),
                    spec: spec.clone(),
                };
                let o = cli.run(&["down"], Duration::from_secs(120))?;
                if !o.ok {
                    bail!(
                        "an earlier run's cluster ({}) cannot be taken down: {}",
                        spec.display(),
                        o.message
                    );
                }
            }
        }
        residue::remove_dir_if_exists(work)?;
    }
    std::fs::create_dir_all(work)
        .with_context(|| format!("--work-dir: cannot create {}", work.display()))?;
    std::fs::write(work.join(MARKER), b"sftsan bench faults\n")?;
    Ok(())
}

fn measure(args: &Faults, program: &Path) -> Result<Results> {
    let image_size = args.image_mib * MIB;
    let image = args.work_dir.join("image.raw");
    errln!("making a {} MiB pattern image", args.image_mib);
    image::make(&image, image_size)?;
    let layout = Layout {
        nodes: args.nodes,
        snapshots: args.snapshots,
        image,
        image_size,
        link_mbit: args.link_mbit,
        subnet: args.subnet,
        work_dir: args.work_dir.clone(),
        program: program.to_path_buf(),
    };
    let seed = args.seed.unwrap_or_else(|| reparent::unix_ms() % 1_000_000);
    let settings = Settings {
        warmup: Duration::from_secs(args.warmup_s),
        window: Duration::from_secs(args.window_s),
        hold: Duration::from_millis(args.hold_ms),
        read_interval: Duration::from_millis(args.read_interval_ms),
        up_timeout: Duration::from_secs(args.up_timeout_s),
        down_timeout: Duration::from_secs(args.down_timeout_s),
        seed,
    };
    let mut results = Results {
        context: context(args, seed),
        runs: Vec::new(),
        chaos: None,
        failed: Vec::new(),
    };
    let topologies = args.topologies();
    match args.chaos {
        Some(seconds) => {
            let topology = topologies[0];
            match chaos::run(&layout, topology, seconds, seed, &settings) {
                Ok(run) => {
                    dirty(&run.down)?;
                    results.chaos = Some(run);
                }
                Err(e) => {
                    crate::relay_tls::interrupted()?;
                    results.failed.push(Failed {
                        title: format!("{}: chaos", topology.name()),
                        error: format!("{e:#}"),
                    });
                }
            }
        }
        None => {
            for &topology in &topologies {
                for &fault in &args.faults {
                    let title = format!("{}: {}", topology.name(), fault.name());
                    errln!("{title}");
                    match single::run(&layout, topology, fault, &settings) {
                        Ok(run) => {
                            errln!(
                                "  {} read errors of {}, {} wrong bytes, stall {:.2} s, re-parent {}, down {:.1} s, {} left",
                                run.reads.read_errors(),
                                run.reads.reads,
                                run.reads.wrong_bytes,
                                run.reads.max_latency_s,
                                run.reparent
                                    .time_ms()
                                    .map_or("n/a".into(), |ms| format!("{ms} ms")),
                                run.down.seconds,
                                run.down.residue.len()
                            );
                            dirty(&run.down)?;
                            results.runs.push(run);
                        }
                        Err(e) => {
                            crate::relay_tls::interrupted()?;
                            errln!("  not measured: {e:#}");
                            results.failed.push(Failed {
                                title,
                                error: format!("{e:#}"),
                            });
                        }
                    }
                }
            }
        }
    }
    Ok(results)
}

/// A cluster the forced cleanup could not remove ends the run: the next would share its
/// subnet.
fn dirty(down: &guard::Down) -> Result<()> {
    if !down.cleanup_failed.is_empty() {
        bail!(
            "a cluster could not be removed: {}",
            down.cleanup_failed.join("; ")
        );
    }
    Ok(())
}

fn context(args: &Faults, seed: u64) -> report::Context {
    let nodes = args
        .topologies()
        .iter()
        .map(|t| {
            format!(
                "{}: {} nodes below the origin",
                t.name(),
                args.nodes.unwrap_or(t.default_nodes())
            )
        })
        .collect::<Vec<_>>()
        .join("; ");
    let link = match args.link_mbit {
        0 => "unshaped".to_string(),
        m => format!("{m} Mbit/s each way (tbf)"),
    };
    report::Context {
        command: std::iter::once("sftsan".to_string())
            .chain(std::env::args().skip(1))
            .collect::<Vec<_>>()
            .join(" "),
        date: crate::date(),
        machine: crate::report::machine(),
        parameters: vec![
            ("clusters".into(), nodes),
            (
                "VM disks".into(),
                format!("{} per node, one reader each", args.snapshots),
            ),
            (
                "image".into(),
                format!(
                    "{} MiB, every 64 KiB block one byte derived from its index",
                    args.image_mib
                ),
            ),
            ("links".into(), link),
            (
                "window".into(),
                format!(
                    "{} s of reading before the fault, {} s from it to down",
                    args.warmup_s, args.window_s
                ),
            ),
            (
                "reads".into(),
                format!(
                    "at most one per {} ms per reader; 3 in 4 sweep the image, 1 in 4 anywhere; 1 in 4 part of a block",
                    args.read_interval_ms
                ),
            ),
            ("seed".into(), seed.to_string()),
            ("subnet".into(), args.subnet.to_string()),
        ],
    }
}
