//! `sftsan`: plan, bring up, inspect and tear down a cluster, its VMs through libvirt, and
//! the benchmark. A thin skin: it parses, calls the libraries and prints.

mod hosts;
mod output;
mod vm;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sftsan_core::backends::userspace::{run_keeper, run_switch, KeeperArgs, SwitchArgs};
use sftsan_core::engine::{Engine, Event, Progress};
use sftsan_core::resources::Tools;
use sftsan_core::spec::{import_legacy, ClusterSpec, LegacyMode, ValidatedSpec};
use sftsan_core::stdio::out;
use sftsan_core::{errln, outln};
use sftsan_core::{plan, status, verify};

#[derive(Parser)]
#[command(
    name = "sftsan",
    version,
    about = "Boot many VMs from one base image: on-demand fetch, cache on read, relay over a tree, a copy-on-write snapshot per VM"
)]
struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); also honours RUST_LOG.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

/// Where an imported legacy cluster's nodes run (`import-legacy --mode`).
#[derive(Clone, Copy, clap::ValueEnum)]
enum ImportMode {
    /// Each node on its own host, reached over SSH as root.
    Remote,
    /// Every node on this host.
    Host,
}

#[derive(Subcommand)]
enum Command {
    /// Show the tree and every node's stack, touching nothing.
    Plan {
        spec: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Create (or complete) the cluster: origin export, every node's cache and relay, snapshots.
    Up {
        spec: PathBuf,
        /// Only this node and the nodes between it and the origin.
        #[arg(long)]
        node: Option<String>,
    },
    /// Remove everything `up` created.
    Down {
        spec: PathBuf,
        /// Only this node's stack (refused while its children are up).
        #[arg(long)]
        node: Option<String>,
    },
    /// Create or remove one VM's snapshot (its disk), bringing its node up if needed.
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Add a node to a running cluster, or remove one gracefully (its children move first).
    #[command(subcommand)]
    Node(NodeCommand),
    /// One line per node: parent, level, state, cache fill, bytes from upstream, snapshots.
    Status {
        spec: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Read one snapshot on every node through its cache and compare it with the image.
    Verify {
        spec: PathBuf,
        /// Which snapshot of each node to read.
        #[arg(long, default_value_t = 1)]
        snapshot: u32,
    },
    /// Convert the original sftsan's cfg.data and nodes files into a cluster spec (TOML).
    ImportLegacy {
        cfg_data: PathBuf,
        nodes: PathBuf,
        /// State directory for the new spec (default: cfg.data's workdir).
        #[arg(long)]
        state_dir: Option<PathBuf>,
        /// Write the spec here instead of standard output.
        #[arg(short, long)]
        output: Option<PathBuf>,
        /// Where the nodes run: each on its own host over SSH as root, as the scripts ran
        /// them (remote), or all on this host (host).
        #[arg(long, value_enum, default_value_t = ImportMode::Remote)]
        mode: ImportMode,
    },
    /// A cluster's VMs as libvirt domains: one per snapshot of each compute node.
    #[command(subcommand)]
    Vm(vm::Command),
    /// sftsan's benchmarks.
    #[command(subcommand)]
    Bench(sftsan_bench::Command),
    /// The hosts of a remote cluster: trust their SSH keys, check they are ready.
    #[command(subcommand)]
    Hosts(hosts::HostsCommand),
    /// (internal) What a host runs when its controller asks over SSH.
    #[command(subcommand, hide = true)]
    Host(hosts::HostCommand),
    /// (internal) A node's upstream switch, started by `up`: the node's daemon reads
    /// through it, and it fails over from the parent to the ancestors above.
    #[command(hide = true)]
    Switch {
        #[arg(long)]
        socket: PathBuf,
        #[arg(long)]
        pidfile: PathBuf,
        #[arg(long)]
        upstreams: PathBuf,
        #[arg(long)]
        report: PathBuf,
        #[arg(long)]
        export: String,
    },
    /// (internal) The per-node cache keeper, started by `up`.
    #[command(hide = true)]
    Keeper {
        #[arg(long)]
        qmp: PathBuf,
        #[arg(long)]
        pidfile: PathBuf,
        #[arg(long)]
        interval_ms: u64,
        #[arg(long)]
        export: String,
        #[arg(long)]
        export_address: sftsan_core::backends::userspace::nbd::Address,
        #[arg(long)]
        daemon_pid: i32,
    },
}

#[derive(Subcommand)]
enum NodeCommand {
    /// Append node NAME at ADDRESS to the spec's [[nodes]] and bring it up; running nodes
    /// keep their place in the tree.
    Add {
        spec: PathBuf,
        name: String,
        #[arg(long)]
        address: std::net::IpAddr,
    },
    /// Take node NAME out of the tree and the spec: every node below it (and after it in
    /// the list) moves to its new parent first, readers going on, then its stack goes.
    /// Its own VM disks go with it: move or stop its VMs first.
    Remove { spec: PathBuf, name: String },
}

#[derive(Subcommand)]
enum SnapshotCommand {
    /// Make sure snapshot INDEX of NODE exists; prints its file.
    Create {
        spec: PathBuf,
        node: String,
        index: u32,
    },
    /// Remove snapshot INDEX of NODE (the VM's writes are lost).
    Remove {
        spec: PathBuf,
        node: String,
        index: u32,
    },
}

fn main() {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    // `sftsan vm` has said "sftsan vm:" in front of its errors since it was its own program.
    let prefix = match &cli.command {
        Command::Vm(_) => "sftsan vm",
        Command::Bench(_) => "sftsan bench",
        _ => "sftsan",
    };
    if let Err(e) = run(cli.command) {
        errln!("{prefix}: {}", one_line(&e));
        std::process::exit(1);
    }
}

/// The error and its causes on one line.
fn one_line(e: &anyhow::Error) -> String {
    e.chain()
        .map(|c| c.to_string())
        .collect::<Vec<_>>()
        .join(": ")
        .replace('\n', " ")
}

fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level));
    // Colours only for a person at a terminal: not in logs, pipes or a controller's SSH.
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .init();
}

fn load(path: &Path) -> Result<ValidatedSpec> {
    let spec = ClusterSpec::load(path).with_context(|| path.display().to_string())?;
    sftsan_core::cluster::validate_here(spec).with_context(|| path.display().to_string())
}

/// Whether the spec at `path` is a remote cluster's, which the controller drives over SSH.
fn is_remote(path: &Path) -> Result<bool> {
    let spec = ClusterSpec::load(path).with_context(|| path.display().to_string())?;
    Ok(spec.cluster.mode == sftsan_core::spec::Mode::Remote)
}

/// A spec checked against every rule that needs no file: what the controller of a remote
/// cluster can check (the image is on the origin's host).
/// Also returns the spec's text, which remote hosts are sent as it is.
fn load_rules(path: &Path) -> Result<(String, ClusterSpec)> {
    let shown = || path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(shown)?;
    let spec = ClusterSpec::from_toml(&text).with_context(shown)?;
    sftsan_core::spec::check_rules(&spec).with_context(shown)?;
    Ok((text, spec))
}

fn progress() -> Progress {
    let start = Instant::now();
    Arc::new(move |e: &Event| output::progress_line(start.elapsed(), e))
}

/// The spec at `path` for a command that works on this host's own stacks: not a remote
/// cluster's, whose nodes are other hosts (there `up`, `down` and `status` go host by host).
fn load_here(path: &Path, command: &str) -> Result<ValidatedSpec> {
    let spec = ClusterSpec::load(path).with_context(|| path.display().to_string())?;
    // On one of the cluster's hosts (where `up` installed the spec) these commands work
    // on its own node.
    if spec.cluster.mode == sftsan_core::spec::Mode::Remote
        && sftsan_core::cluster::installed_image(&spec)?.is_none()
    {
        anyhow::bail!(
            "{}: cluster.mode = \"remote\": `{command}` does not drive remote hosts yet (up, down, status, verify and hosts do)",
            path.display()
        );
    }
    sftsan_core::cluster::validate_here(spec).with_context(|| path.display().to_string())
}

fn engine(path: &Path) -> Result<Engine> {
    let spec = load_here(path, "this command")?;
    Ok(sftsan_core::cluster::engine(
        &spec,
        Tools::from_env(),
        progress(),
    ))
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Plan { spec, json } => {
            let plan = plan::plan(&load(&spec)?);
            if json {
                outln!("{}", serde_json::to_string_pretty(&plan)?)?;
            } else {
                out(&output::plan_text(&plan))?;
            }
        }
        Command::Up { spec, node: None } if is_remote(&spec)? => {
            if !hosts::run_remote(&spec, hosts::RemoteAction::Up)? {
                std::process::exit(1);
            }
        }
        Command::Down { spec, node: None } if is_remote(&spec)? => {
            if !hosts::run_remote(&spec, hosts::RemoteAction::Down)? {
                std::process::exit(1);
            }
        }
        Command::Status { spec, json } if is_remote(&spec)? => {
            if !hosts::run_remote(&spec, hosts::RemoteAction::Status { json })? {
                std::process::exit(1);
            }
        }
        Command::Verify { spec, snapshot } if is_remote(&spec)? => {
            if !hosts::run_remote(&spec, hosts::RemoteAction::Verify { snapshot })? {
                std::process::exit(1);
            }
        }
        Command::Up { spec, node } => {
            let engine = engine(&spec)?;
            let started = Instant::now();
            let s = match &node {
                Some(n) => engine.up_node(n)?,
                None => engine.up()?,
            };
            errln!(
                "up: {} created, {} already there, in {:.1}s",
                s.created,
                s.unchanged,
                started.elapsed().as_secs_f64()
            );
            // What was revived serves again: VMs an I/O error paused meanwhile go on.
            if s.created > 0 {
                vm::resume_after_up(&spec);
            }
        }
        Command::Down { spec, node } => {
            let engine = engine(&spec)?;
            let started = Instant::now();
            let s = match &node {
                Some(n) => engine.down_node(n)?,
                None => engine.down()?,
            };
            errln!(
                "down: {} removed in {:.1}s",
                s.removed,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Node(command) => {
            let started = Instant::now();
            let engine_for = |spec: &ValidatedSpec| {
                sftsan_core::cluster::engine(spec, Tools::from_env(), progress())
            };
            let (what, s) = match command {
                NodeCommand::Add {
                    spec,
                    name,
                    address,
                } => (
                    "node add",
                    sftsan_core::membership::add_node(&spec, &name, address, engine_for)?,
                ),
                NodeCommand::Remove { spec, name } => (
                    "node remove",
                    sftsan_core::membership::remove_node(&spec, &name, engine_for)?,
                ),
            };
            errln!(
                "{what}: {} created, {} removed, in {:.1}s",
                s.created,
                s.removed,
                started.elapsed().as_secs_f64()
            );
        }
        Command::Snapshot(SnapshotCommand::Create { spec, node, index }) => {
            let file = engine(&spec)?.ensure_snapshot(&node, index)?;
            outln!("{}", file.display())?;
        }
        Command::Snapshot(SnapshotCommand::Remove { spec, node, index }) => {
            if !engine(&spec)?.remove_snapshot(&node, index)? {
                errln!("{node}/snapshot/{index}: there was none");
            }
        }
        Command::Status { spec, json } => {
            let plan = plan::plan(&load(&spec)?);
            let st = status::status(&plan, Arc::new(Tools::from_env()));
            if json {
                outln!("{}", serde_json::to_string_pretty(&st)?)?;
            } else {
                out(&output::status_text(&st))?;
            }
        }
        Command::Verify { spec, snapshot } => {
            let spec = load(&spec)?;
            let plan = plan::plan(&spec);
            let source = &spec.spec().image.source;
            let results = verify::verify(&plan, Arc::new(Tools::from_env()), snapshot, source);
            let failed: Vec<_> = results.iter().filter(|r| r.error.is_some()).collect();
            for r in &results {
                outln!("{}", output::verified_line(r, "identical to the image"))?;
            }
            if let Some(first) = failed.first() {
                anyhow::bail!(
                    "{} of {} snapshots differ from the image or could not be read (first: {}/snapshot/{})",
                    failed.len(),
                    results.len(),
                    first.node,
                    first.snapshot
                );
            }
        }
        Command::ImportLegacy {
            cfg_data,
            nodes,
            state_dir,
            output,
            mode,
        } => {
            let read =
                |p: &Path| std::fs::read_to_string(p).with_context(|| p.display().to_string());
            let mode = match mode {
                ImportMode::Remote => LegacyMode::Remote,
                ImportMode::Host => LegacyMode::Host,
            };
            let imported = import_legacy(
                &read(&cfg_data)?,
                &read(&nodes)?,
                state_dir.as_deref(),
                mode,
            )?;
            for warning in &imported.warnings {
                errln!("sftsan: warning: {warning}");
            }
            let text = imported.spec.to_toml();
            match output {
                // Owner-only and whole or not at all: the spec may hold a CHAP secret.
                Some(path) => sftsan_core::fsutil::write_atomic(&path, text.as_bytes())
                    .with_context(|| path.display().to_string())?,
                None => out(&text)?,
            }
        }
        Command::Vm(command) => {
            if !vm::run(command)? {
                std::process::exit(1);
            }
        }
        Command::Bench(command) => sftsan_bench::run(command)?,
        Command::Hosts(command) => {
            if !hosts::run_hosts(command)? {
                std::process::exit(1);
            }
        }
        Command::Host(command) => hosts::run_host(command)?,
        Command::Switch {
            socket,
            pidfile,
            upstreams,
            report,
            export,
        } => run_switch(&SwitchArgs {
            socket,
            pidfile,
            upstreams,
            report,
            export,
        })
        .map_err(anyhow::Error::msg)?,
        Command::Keeper {
            qmp,
            pidfile,
            interval_ms,
            export,
            export_address,
            daemon_pid,
        } => run_keeper(&KeeperArgs {
            qmp,
            pidfile,
            interval: Duration::from_millis(interval_ms),
            export,
            export_address,
            daemon_pid,
        })
        .map_err(anyhow::Error::msg)?,
    }
    Ok(())
}
