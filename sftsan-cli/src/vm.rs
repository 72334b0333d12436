//! `sftsan vm`: a cluster's VMs as libvirt domains, one per snapshot of each compute node;
//! on a remote cluster's controller, each node's in its own host's libvirt (qemu+ssh), with
//! the snapshots made there by the host's hook (see `sftsan_libvirt::remote`).

use anyhow::{Context, Result};
use clap::{Args, Subcommand};
use std::path::{Path, PathBuf};
use std::time::Duration;

use sftsan_core::errln;
use sftsan_core::plan::Plan;
use sftsan_core::remote::{self, Fleet, HostCheck};
use sftsan_core::resources::Tools;
use sftsan_core::spec::{ClusterSpec, Mode, ValidatedSpec};
use sftsan_core::stdio::out;
use sftsan_core::transport::ssh::HostKeys;
use sftsan_libvirt::batch::{run_on_hosts, Batch, BatchOptions, HostBatch, Op, PoolSpec};
use sftsan_libvirt::cluster::{pool_name, Cluster};
use sftsan_libvirt::identity::{NamePattern, DEFAULT_NAME_PATTERN};
use sftsan_libvirt::libvirt::{Libvirt, DEFAULT_URI};
use sftsan_libvirt::remote::{connect, HostSnapshots, SshWrappers};
use sftsan_libvirt::resume::{
    cluster_domains, resume_cluster, resume_members, select, Member, ResumeOptions, Selection,
};
use sftsan_libvirt::vms::{check_compute_node, load_template, plan_vms, Vm, VmSettings};
use sftsan_libvirt::xml::VmMode;

/// Hosts worked on at once unless `ssh.max_sessions` says otherwise (as `up` does).
const DEFAULT_SESSIONS: u32 = 32;

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
    /// Resume the VMs an I/O error paused (their node's storage went away: bring it back
    /// with `sftsan up` first); a VM paused by its user, or in any other state, is left
    /// alone. One line per domain of the cluster.
    Resume(ResumeArgs),
}

#[derive(Args)]
pub struct ResumeArgs {
    /// The cluster spec.
    spec: PathBuf,
    /// Only these domains (default: every domain of the cluster, found by sftsan's
    /// metadata whatever its name).
    #[arg(value_name = "VM")]
    vms: Vec<String>,
    /// Only VMs of this node (repeatable; default: every compute node).
    #[arg(long = "node", value_name = "NODE")]
    nodes: Vec<String>,
    /// libvirt connection URI [default: $LIBVIRT_DEFAULT_URI, else qemu:///system]. Not
    /// for a remote cluster (see `sftsan vm list --help`).
    #[arg(short, long, value_name = "URI")]
    connect: Option<String>,
    /// How long to keep resuming a VM that pauses again (its node not serving yet, or
    /// QEMU still reconnecting to it, which can take 16 s), e.g. 30s, 2s.
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    wait: Duration,
    /// VMs resumed at once (each mostly waits: a resume counts once the VM ran 1.5 s).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
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
    /// libvirt connection URI [default: $LIBVIRT_DEFAULT_URI, else qemu:///system]. Not
    /// for a remote cluster, whose nodes' libvirt sftsan reaches as
    /// qemu+ssh://USER@HOST/system, each at its node's SSH destination.
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

/// What the operator chose for the VMs, checked.
fn settings(domain: &DomainArgs, per_node: Option<u32>, nodes: Vec<String>) -> Result<VmSettings> {
    let template = domain
        .template
        .as_deref()
        .map(load_template)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    Ok(VmSettings {
        name_pattern: NamePattern::new(&domain.name_pattern).map_err(anyhow::Error::msg)?,
        mode: domain.mode,
        template,
        per_node,
        nodes,
    })
}

/// The cluster of `spec` and the VMs of `nodes` (all when empty), `per_node` each.
fn load_vms(
    spec: &Path,
    domain: &DomainArgs,
    per_node: Option<u32>,
    nodes: Vec<String>,
) -> Result<(Cluster, Vec<Vm>)> {
    let cluster = Cluster::load(spec, Tools::from_env()).map_err(anyhow::Error::msg)?;
    let settings = settings(domain, per_node, nodes)?;
    let vms =
        plan_vms(&cluster.spec, cluster.plan(), spec, &settings).map_err(anyhow::Error::msg)?;
    Ok((cluster, vms))
}

/// The spec at `path` if it is a remote cluster's and this is its controller (not one of
/// its hosts, where `up` installed it and the local path serves the host's own node).
fn remote_spec(path: &Path) -> Result<Option<ClusterSpec>> {
    let (_, spec) = super::load_rules(path)?;
    let on_a_host = sftsan_core::cluster::installed_image(&spec)?.is_some();
    Ok((spec.cluster.mode == Mode::Remote && !on_a_host).then_some(spec))
}

/// A remote cluster as `sftsan vm` sees it from the controller: its hosts (one SSH
/// connection each, checked as `up` checks them), the image as the origin's host measured
/// it, the plan, and where `up` installed the spec on every host (which the domains name,
/// for the hook).
struct RemoteCluster {
    fleet: Fleet,
    checked: Vec<HostCheck>,
    spec: ValidatedSpec,
    plan: Plan,
    installed: PathBuf,
}

impl RemoteCluster {
    fn open(path: &Path, spec: ClusterSpec) -> Result<RemoteCluster> {
        let fleet = Fleet::open(&spec, HostKeys::Strict)?;
        let checked = remote::check(&spec, &fleet);
        // The image's measure comes from the origin's host (as for up and status).
        if let Some(origin) = checked.iter().find(|r| r.node == spec.origin.name) {
            if origin.facts.is_none() {
                anyhow::bail!(
                    "{} ({}): {} (the image is measured there)",
                    origin.node,
                    origin.destination,
                    origin.problems.join("; ")
                );
            }
        }
        let image = remote::measured_image(&spec, &checked)?;
        let installed = sftsan_core::cluster::installed_spec_path(&spec);
        let spec = ValidatedSpec::measured(spec, image)
            .map_err(sftsan_core::error::Error::from)
            .with_context(|| path.display().to_string())?;
        let plan = sftsan_core::plan::plan(&spec);
        Ok(RemoteCluster {
            fleet,
            checked,
            spec,
            plan,
            installed,
        })
    }

    /// The VMs `settings` selects; each domain names the spec installed on its host.
    fn vms(&self, settings: &VmSettings) -> Result<Vec<Vm>> {
        plan_vms(&self.spec, &self.plan, &self.installed, settings).map_err(anyhow::Error::msg)
    }
}

/// `sftsan vm xml`: the domain of one VM, as define would define it.
fn print_xml(x: XmlArgs) -> Result<()> {
    anyhow::ensure!(x.index >= 1, "--index: snapshots are numbered from 1");
    let vms = match remote_spec(&x.spec)? {
        Some(spec) => {
            let cluster = RemoteCluster::open(&x.spec, spec)?;
            cluster.vms(&settings(&x.domain, Some(x.index), vec![x.node])?)?
        }
        None => load_vms(&x.spec, &x.domain, Some(x.index), vec![x.node])?.1,
    };
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

/// The libvirt URI of a local cluster's commands.
fn local_uri(connect: &Option<String>) -> String {
    connect
        .clone()
        .or_else(|| std::env::var("LIBVIRT_DEFAULT_URI").ok())
        .unwrap_or_else(|| DEFAULT_URI.into())
}

/// After `up` on this host: resumes the cluster's VMs that an I/O error paused while their
/// node was down, and says so; quiet when libvirt is not there or nothing was paused.
pub fn resume_after_up(spec: &Path) {
    let Ok(cluster) = Cluster::load(spec, Tools::from_env()) else {
        return;
    };
    let libvirt = match Libvirt::open(&local_uri(&None)) {
        Ok(l) => l,
        Err(e) => {
            tracing::debug!("no VMs to resume: {e}");
            return;
        }
    };
    let everything = Selection {
        nodes: vec![],
        names: vec![],
    };
    let report = resume_cluster(
        &libvirt,
        &cluster.plan().cluster,
        &everything,
        &ResumeOptions::default(),
    );
    match report {
        Ok(report) => {
            for row in &report.rows {
                match &row.outcome {
                    Ok(o) if o.starts_with("resumed") => errln!("{}: {o}", row.vm),
                    Ok(_) => {}
                    Err(e) => errln!("{}: not resumed: {e} (see `sftsan vm resume`)", row.vm),
                }
            }
        }
        Err(e) => tracing::debug!("no VMs to resume: {e}"),
    }
}

/// `sftsan vm resume`: the table of what was done to each domain; Ok(false) when a VM
/// could not be resumed.
fn resume(r: ResumeArgs) -> Result<bool> {
    anyhow::ensure!(r.concurrency >= 1, "--concurrency must be at least 1");
    let options = ResumeOptions {
        wait: r.wait,
        concurrency: r.concurrency,
        ..Default::default()
    };
    let selection = Selection {
        nodes: r.nodes.clone(),
        names: r.vms.clone(),
    };
    if let Some(spec) = remote_spec(&r.spec)? {
        if let Some(uri) = &r.connect {
            anyhow::bail!(
                "--connect {uri}: {} is a remote cluster's spec: each node's VMs are on its own host",
                r.spec.display()
            );
        }
        return resume_remote(&r.spec, spec, &selection, &options);
    }
    let cluster = Cluster::load(&r.spec, Tools::from_env()).map_err(anyhow::Error::msg)?;
    for n in &r.nodes {
        check_compute_node(cluster.plan(), n).map_err(anyhow::Error::msg)?;
    }
    let libvirt = Libvirt::open(&local_uri(&r.connect)).map_err(anyhow::Error::msg)?;
    let report = resume_cluster(&libvirt, &cluster.plan().cluster, &selection, &options)
        .map_err(anyhow::Error::msg)?;
    out(&report.table()).context("stdout")?;
    Ok(report.failures() == 0)
}

/// `sftsan vm resume` over a remote cluster: each selected compute node's domains in its
/// own host's libvirt, the hosts side by side.
fn resume_remote(
    path: &Path,
    spec: ClusterSpec,
    selection: &Selection,
    options: &ResumeOptions,
) -> Result<bool> {
    let started = std::time::Instant::now();
    let sessions = spec
        .ssh
        .as_ref()
        .and_then(|s| s.max_sessions)
        .unwrap_or(DEFAULT_SESSIONS) as usize;
    let cluster = RemoteCluster::open(path, spec)?;
    for n in &selection.nodes {
        check_compute_node(&cluster.plan, n).map_err(anyhow::Error::msg)?;
    }
    let nodes: Vec<&str> = cluster
        .plan
        .nodes
        .iter()
        .filter(|n| n.role == sftsan_core::plan::Role::Node)
        .map(|n| n.name.as_str())
        .filter(|n| selection.nodes.is_empty() || selection.nodes.iter().any(|s| s == n))
        .collect();
    let wrappers = SshWrappers::new()?;
    let libvirts = connect_hosts(&cluster, &nodes, &wrappers)?;
    let name = cluster.plan.cluster.clone();
    // Every host's domains first, so that a name on no host stops everything.
    let found: Vec<(&Libvirt, Vec<Member>)> = libvirts
        .iter()
        .map(|(node, libvirt)| {
            let members = cluster_domains(libvirt, &name, &[node.to_string()])
                .map_err(|e| anyhow::anyhow!("{node}: {e}"))?;
            Ok((libvirt, members))
        })
        .collect::<Result<_>>()?;
    let all: Vec<Member> = found.iter().flat_map(|(_, m)| m.clone()).collect();
    let chosen = select(all, &selection.names, &name).map_err(anyhow::Error::msg)?;
    let per_host: Vec<(&Libvirt, Vec<Member>)> = found
        .into_iter()
        .map(|(libvirt, members)| {
            let members = members.into_iter().filter(|m| chosen.contains(m)).collect();
            (libvirt, members)
        })
        .collect();
    let rows = sftsan_libvirt::batch::bounded(&per_host, sessions, Duration::ZERO, |(lv, m)| {
        let libvirt: &Libvirt = lv;
        resume_members(libvirt, m, options)
    })
    .into_iter()
    .flat_map(|(rows, _)| rows)
    .collect();
    let report = sftsan_libvirt::batch::Report {
        op: Op::Resume,
        rows,
        notes: vec![],
        elapsed: started.elapsed(),
    };
    out(&report.table()).context("stdout")?;
    Ok(report.failures() == 0)
}

/// Runs one batch and prints its table; Ok(false) when a VM failed.
pub fn run(command: Command) -> Result<bool> {
    let (op, c) = match command {
        Command::Xml(x) => return print_xml(x).map(|()| true),
        Command::Resume(r) => return resume(r),
        Command::Define(c) => (Op::Define, c),
        Command::Start(c) => (Op::Start, c),
        Command::Destroy(c) => (Op::Destroy, c),
        Command::Undefine(c) => (Op::Undefine, c),
        Command::List(c) => (Op::List, c),
    };
    anyhow::ensure!(c.concurrency >= 1, "--concurrency must be at least 1");
    if let Some(spec) = remote_spec(&c.spec)? {
        return run_remote(op, &c, spec);
    }
    let (cluster, vms) = load_vms(&c.spec, &c.domain, c.count, c.nodes.clone())?;
    let libvirt = Libvirt::open(&local_uri(&c.connect)).map_err(anyhow::Error::msg)?;
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

/// Each of `nodes`' host's libvirt, over qemu+ssh through sftsan's SSH options and
/// connection. Every one must answer: otherwise one line names the host (a line each, then
/// a count, when there are several) and nothing is done on any host.
fn connect_hosts<'a>(
    cluster: &RemoteCluster,
    nodes: &[&'a str],
    wrappers: &SshWrappers,
) -> Result<Vec<(&'a str, Libvirt)>> {
    let connected = cluster.fleet.each_of(nodes, |node, host| {
        let row = cluster.checked.iter().find(|r| r.node == node);
        match row {
            // Not even SSH worked: say why, as the check found it.
            Some(r) if r.facts.is_none() => Err(anyhow::anyhow!(
                "{node} ({}): {}",
                r.destination,
                r.problems.join("; ")
            )),
            _ => connect(node, host, wrappers).map_err(anyhow::Error::msg),
        }
    });
    // A host whose libvirt does not answer stops the batch before anything is done: one
    // line naming it (a line each, then a count, when there are several).
    let failed: Vec<&anyhow::Error> = connected.iter().filter_map(|r| r.as_ref().err()).collect();
    match failed.as_slice() {
        [] => {}
        [one] => anyhow::bail!("{one}; nothing was done on any host"),
        several => {
            for e in several {
                errln!("sftsan vm: {e}");
            }
            anyhow::bail!(
                "{} of {} hosts cannot be reached; nothing was done on any host",
                several.len(),
                nodes.len()
            );
        }
    }
    Ok(nodes
        .iter()
        .copied()
        .zip(connected.into_iter().map(|r| r.expect("checked above")))
        .collect())
}

/// One batch over a remote cluster's hosts: each compute node's VMs in its own host's
/// libvirt (qemu+ssh, through sftsan's SSH options and connection), its snapshots made by
/// that host's hook at start and asked of or removed by the host's own sftsan; the hosts
/// side by side (at most `ssh.max_sessions`), each with the batch's concurrency and
/// interval. Every host's libvirt must answer first: otherwise nothing is done anywhere.
fn run_remote(op: Op, c: &Common, spec: ClusterSpec) -> Result<bool> {
    if let Some(uri) = &c.connect {
        anyhow::bail!(
            "--connect {uri}: {} is a remote cluster's spec: each node's VMs are on its own host, whose libvirt sftsan reaches as qemu+ssh://USER@HOST/system at the node's [ssh] destination",
            c.spec.display()
        );
    }
    let sessions = spec
        .ssh
        .as_ref()
        .and_then(|s| s.max_sessions)
        .unwrap_or(DEFAULT_SESSIONS) as usize;
    let cluster = RemoteCluster::open(&c.spec, spec)?;
    let vms = cluster.vms(&settings(&c.domain, c.count, c.nodes.clone())?)?;
    let mut nodes: Vec<&str> = vms.iter().map(|v| v.node.as_str()).collect();
    nodes.dedup();

    let wrappers = SshWrappers::new()?;
    let libvirts = connect_hosts(&cluster, &nodes, &wrappers)?;
    let snapshots: Vec<HostSnapshots> = libvirts
        .iter()
        .map(|(node, _)| {
            let (_, host) = cluster
                .fleet
                .hosts()
                .find(|(n, _)| n == node)
                .expect("every compute node has a host");
            let program = cluster
                .checked
                .iter()
                .find(|r| r.node == *node)
                .map_or_else(
                    || remote::remote_program(cluster.spec.spec()),
                    |r| r.program.clone(),
                );
            HostSnapshots::new(node, host, &program, &cluster.installed, &cluster.plan)
        })
        .collect();
    let names = sftsan_core::names::Names::new(cluster.spec.spec());
    let hosts: Vec<HostBatch> = libvirts
        .iter()
        .zip(&snapshots)
        .map(|((node, libvirt), snapshots)| HostBatch {
            batch: Batch {
                libvirt,
                snapshots,
                pools: vec![PoolSpec {
                    cluster: cluster.plan.cluster.clone(),
                    node: node.to_string(),
                    name: pool_name(&cluster.plan, node),
                    dir: names.snapshot_dir(node),
                }],
                options: BatchOptions {
                    concurrency: c.concurrency,
                    interval: c.interval,
                    remove_snapshots: c.remove_snapshots,
                },
            },
            vms: vms.iter().filter(|v| v.node == *node).cloned().collect(),
        })
        .collect();
    let report = run_on_hosts(op, &hosts, sessions);
    out(&report.table()).context("stdout")?;
    Ok(report.failures() == 0)
}
