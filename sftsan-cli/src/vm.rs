//! `sftsan vm`: a cluster's VMs as libvirt domains, one per snapshot of each compute node.

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sftsan_core::resources::Tools;
use sftsan_core::stdio::out;
use sftsan_libvirt::batch::{Batch, BatchOptions, Op, PoolSpec};
use sftsan_libvirt::cluster::Cluster;
use sftsan_libvirt::identity::{NamePattern, DEFAULT_NAME_PATTERN};
use sftsan_libvirt::libvirt::{Libvirt, DEFAULT_URI};
use sftsan_libvirt::vms::{load_template, plan_vms, Vm, VmSettings};
use sftsan_libvirt::xml::VmMode;

/// `sftsan vm ...`
#[derive(Subcommand)]
pub enum Command {
    /// Make the snapshots and define a domain for each (all or nothing).
    Define(Common),
    /// Start the domains (snapshots made first), --concurrency at once, --interval apart.
    Start(Common),
    /// Stop the domains (stateless VMs lose their snapshot).
    Destroy(Common),
    /// Stop and undefine the domains; --remove-snapshots also deletes their disks.
    Undefine(Common),
    /// One line per VM: domain state, snapshot, mode.
    List(Common),
    /// Print the domain XML `define` would give one VM, touching nothing.
    Xml(XmlArgs),
}

#[derive(Args)]
pub struct XmlArgs {
    /// The cluster spec.
    spec: PathBuf,
    /// The VM's node.
    #[arg(long)]
    node: String,
    /// The VM's snapshot index on its node.
    #[arg(long, default_value_t = 1)]
    index: u32,
    #[command(flatten)]
    domain: DomainArgs,
}

/// What the domains look like.
#[derive(Args)]
pub struct DomainArgs {
    /// Domain template: libvirt domain XML; its boot disk, if it has one, becomes the VM's
    /// snapshot [default: built-in, QEMU/TCG, 128 MiB, 1 CPU, a user-mode NIC].
    #[arg(long, value_name = "FILE")]
    template: Option<PathBuf>,
    /// Domain names, from {cluster}, {image}, {node} and {index}.
    #[arg(long = "name", value_name = "PATTERN", default_value = DEFAULT_NAME_PATTERN)]
    name_pattern: String,
    /// persistent: a VM keeps its disk across stop and start; stateless: every start
    /// begins from the image (recorded in the domain at define).
    #[arg(long, default_value = "persistent")]
    mode: VmMode,
}

#[derive(Args)]
pub struct Common {
    /// The cluster spec.
    spec: PathBuf,
    /// Only VMs of this node (repeatable; default: every compute node).
    #[arg(long = "node", value_name = "NODE")]
    nodes: Vec<String>,
    /// libvirt connection URI [default: $LIBVIRT_DEFAULT_URI, else qemu:///system].
    #[arg(short, long, value_name = "URI")]
    connect: Option<String>,
    #[command(flatten)]
    domain: DomainArgs,
    /// VMs per node [default: the spec's snapshots.per_node].
    #[arg(long, value_name = "N")]
    count: Option<u32>,
    /// Domains worked on at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Minimum time between two starts (boot queueing), e.g. 500ms, 2s.
    #[arg(long, value_parser = parse_duration, default_value = "0s")]
    interval: Duration,
    /// undefine: remove the VMs' snapshots (their disks) as well.
    #[arg(long)]
    remove_snapshots: bool,
}

/// The cluster of `spec` and the VMs of `nodes` (all when empty), `per_node` each.
fn load_vms(
    spec: &Path,
    domain: &DomainArgs,
    per_node: Option<u32>,
    nodes: Vec<String>,
) -> Result<(Cluster, Vec<Vm>)> {
    let cluster = Cluster::load(spec, Tools::from_env()).map_err(anyhow::Error::msg)?;
    let template = domain
        .template
        .as_deref()
        .map(load_template)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let settings = VmSettings {
        name_pattern: NamePattern::new(&domain.name_pattern).map_err(anyhow::Error::msg)?,
        mode: domain.mode,
        template,
        per_node,
        nodes,
    };
    let vms =
        plan_vms(&cluster.spec, cluster.plan(), spec, &settings).map_err(anyhow::Error::msg)?;
    Ok((cluster, vms))
}

/// `sftsan vm xml`: the domain of one VM, as define would define it.
fn print_xml(x: XmlArgs) -> Result<()> {
    anyhow::ensure!(x.index >= 1, "--index: snapshots are numbered from 1");
    let (_, vms) = load_vms(&x.spec, &x.domain, Some(x.index), vec![x.node])?;
    let vm = vms.last().context("no VM selected")?;
    out(&vm.domain.to_xml()).context("stdout")
}

fn parse_duration(s: &str) -> std::result::Result<Duration, String> {
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    let v: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 500ms or 2s"))?;
    if !(0.0..=86400.0).contains(&v) {
        return Err(format!("{s:?}: out of range"));
    }
    Ok(Duration::from_secs_f64(v * scale))
}

/// Runs one batch and prints its table; Ok(false) when a VM failed.
pub fn run(command: Command) -> Result<bool> {
    let (op, c) = match command {
        Command::Xml(x) => return print_xml(x).map(|()| true),
        Command::Define(c) => (Op::Define, c),
        Command::Start(c) => (Op::Start, c),
        Command::Destroy(c) => (Op::Destroy, c),
        Command::Undefine(c) => (Op::Undefine, c),
        Command::List(c) => (Op::List, c),
    };
    anyhow::ensure!(c.concurrency >= 1, "--concurrency must be at least 1");
    let (cluster, vms) = load_vms(&c.spec, &c.domain, c.count, c.nodes.clone())?;
    let uri = c
        .connect
        .clone()
        .or_else(|| std::env::var("LIBVIRT_DEFAULT_URI").ok())
        .unwrap_or_else(|| DEFAULT_URI.into());
    let libvirt = Libvirt::open(&uri).map_err(anyhow::Error::msg)?;
    let mut nodes: Vec<&str> = vms.iter().map(|v| v.node.as_str()).collect();
    nodes.dedup();
    let pools = nodes
        .iter()
        .map(|n| PoolSpec {
            cluster: cluster.plan().cluster.clone(),
            node: n.to_string(),
            name: cluster.pool_name(n),
            dir: cluster.names().snapshot_dir(n),
        })
        .collect();
    let batch = Batch {
        libvirt: &libvirt,
        snapshots: &cluster,
        pools,
        options: BatchOptions {
            concurrency: c.concurrency,
            interval: c.interval,
            remove_snapshots: c.remove_snapshots,
        },
    };
    let report = batch.run(op, &vms);
    out(&report.table()).context("stdout")?;
    Ok(report.failures() == 0)
}
