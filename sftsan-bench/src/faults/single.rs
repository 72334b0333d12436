//! One fault on a fresh cluster: readers through the VM disks below the faulted node, the
//! fault, a window of reading through it, then `down` with the fault still in force.

use anyhow::{Context, Result};
use serde::Serialize;
use std::collections::BTreeMap;
use std::time::Instant;

use sftsan_core::errln;

use super::bar;
use super::cli::Outcome;
use super::cluster::{Layout, Testbed, Topology};
use super::guard::{Down, Guard};
use super::inject::{self, Active, Fault};
use super::reparent::{unix_ms, Poller, Reparents};
use super::setup::{self, Ingress, Settings, STOP_GRACE};
use super::summary::{summarize, ReadStats};
use crate::relay_tls::interrupted;

/// One single fault, measured.
#[derive(Debug, Clone, Serialize)]
pub struct FaultRun {
    pub topology: Topology,
    pub fault: Fault,
    pub cluster: String,
    /// The node the fault hit.
    pub node: String,
    pub title: String,
    /// Its children: they must move to another upstream when `reparent_expected`.
    pub children: Vec<String>,
    pub reparent_expected: bool,
    /// Where the readers ran (one per VM disk).
    pub reader_nodes: Vec<String>,
    pub injected_unix_ms: u64,
    pub window_s: f64,
    /// How the loss was made (loss only).
    pub loss_method: Option<String>,
    /// The `up` that revived what was killed (origin restart, keeper).
    pub revive: Option<Outcome>,
    /// Whether the revived process is running again afterwards.
    pub revived: Option<bool>,
    /// Share of the image in the reader nodes' caches just before the fault: what is not
    /// there must come from upstream.
    pub cache_fill_before: BTreeMap<String, f64>,
    /// Bytes into the reader nodes' links from the fault to the window's end.
    pub upstream_bytes_after_fault: u64,
    /// The guard route was there after `up` and at the window's end.
    pub guard_route_kept: bool,
    pub reads: ReadStats,
    pub reparent: Reparents,
    pub down: Down,
    /// Where the run misses the bar (zero errors, re-parent <= 5 s, down <= 10 s, ...).
    pub failures: Vec<String>,
}

/// The cluster's name: one per topology and fault, so leftovers never mix.
pub fn cluster_name(topology: Topology, what: &str) -> String {
    format!("flt-{}-{what}", &topology.name()[..1])
}

pub fn run(layout: &Layout, topology: Topology, fault: Fault, s: &Settings) -> Result<FaultRun> {
    let bed = Testbed::new(layout, topology, &cluster_name(topology, fault.short()))?;
    let mut guard = Guard::new(&bed)?;
    let t0 = Instant::now();
    setup::up(&bed, s)?;
    let target = match fault {
        Fault::OriginRestart => bed.origin(),
        _ => bed.faulted_parent()?,
    };
    let reader_nodes = match fault {
        Fault::OriginRestart => bed.nodes(),
        Fault::KeeperKill => std::iter::once(target.clone())
            .chain(bed.descendants(&target))
            .collect(),
        _ => bed.descendants(&target),
    };
    let node = bed.node(&target);
    // The pid is found before the clock starts: the injection is one system call.
    let pid = match fault {
        Fault::KeeperKill => inject::keeper_pid(&node)?,
        Fault::LinkDown | Fault::Loss => 0,
        _ => inject::daemon_pid(&node)?,
    };
    let readers = setup::start_readers(&bed, &reader_nodes, s, t0);
    let readers =
        setup::warm_up(readers, s).map_err(|(logs, why)| setup::reader_failure(&logs, &why))?;
    let cache_fill_before = setup::cache_fill(&bed, &reader_nodes);
    let ingress = Ingress::new(&bed, &reader_nodes);
    let children = bed.children(&target);

    let injected_unix_ms = unix_ms();
    let fault_at = t0.elapsed();
    let poller = Poller::start(bed.cli.clone(), children.clone(), injected_unix_ms);
    let mut loss_method = None;
    let mut revive = None;
    let mut revived = None;
    let injected: Result<()> = (|| {
        match fault {
            Fault::Kill => inject::kill(pid)?,
            Fault::Stop => guard.hold(inject::stop(&node, pid)?),
            Fault::LinkDown => guard.hold(inject::link_down(&node)?),
            Fault::Loss => {
                let active = inject::loss_on(&node)?;
                if let Active::Loss { rule, .. } = &active {
                    loss_method = Some(rule.method().to_string());
                }
                guard.hold(active);
            }
            Fault::OriginRestart | Fault::KeeperKill => {
                inject::kill(pid)?;
                setup::wait_until(Instant::now() + s.hold)?;
                let o = bed.up(s.up_timeout)?;
                let pidfile = if fault == Fault::KeeperKill {
                    "keeper.pid"
                } else {
                    "daemon.pid"
                };
                revived = Some(o.ok && inject::node_pid(&node, pidfile).is_some_and(|p| p != pid));
                revive = Some(o);
            }
        }
        Ok(())
    })();
    let waited = injected.and_then(|()| setup::wait_until(t0 + fault_at + s.window));
    let upstream_bytes_after_fault = ingress.bytes();
    let guard_route_kept = bed.guard_route_present();
    // Readers stop at the window's end; a status still answering may take longer.
    let logs = readers.stop(STOP_GRACE);
    let reparent = poller.finish();
    waited.with_context(|| format!("injecting {}", fault.describe(&target)))?;
    interrupted()?;
    let down = guard.measured_down(s.down_timeout)?;

    let reads = summarize(&logs, fault_at.as_secs_f64());
    let mut run = FaultRun {
        topology,
        fault,
        cluster: bed.name.clone(),
        title: format!("{}: {}", topology.name(), fault.describe(&target)),
        node: target,
        children,
        reparent_expected: fault.reparent_expected(),
        reader_nodes,
        injected_unix_ms,
        window_s: s.window.as_secs_f64(),
        loss_method,
        revive,
        revived,
        cache_fill_before,
        upstream_bytes_after_fault,
        guard_route_kept,
        reads,
        reparent,
        down,
        failures: Vec::new(),
    };
    run.failures = bar::single(&run);
    if !run.down.cleanup_failed.is_empty() {
        errln!(
            "{}: the forced cleanup left: {}",
            run.cluster,
            run.down.cleanup_failed.join("; ")
        );
    }
    Ok(run)
}
