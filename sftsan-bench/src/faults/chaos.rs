//! The chaos run: one cluster, readers on every leaf, and a fault every few seconds on a
//! random node (the origin included), each undone after a moment: a daemon killed and
//! revived by `up`, stopped and continued, its link down and up, its loss on and off, a
//! keeper killed and revived. Kills go to the origin and the nodes with children only: a
//! node whose own daemon dies fails its readers' reads until it is back (a VM there
//! pauses instead, which `sftsan vm resume` undoes), which is not what is measured here;
//! every other fault hits leaves too. Every choice comes from the seed, printed first,
//! so a run can be replayed.

use anyhow::Result;
use serde::Serialize;
use std::time::{Duration, Instant};

use sftsan_core::errln;

use super::bar;
use super::cluster::{Layout, Testbed, Topology};
use super::guard::{Down, Guard};
use super::inject;
use super::reader::{Outcome, ReaderLog};
use super::rng::Rng;
use super::setup::{self, Ingress, Settings, STOP_GRACE};
use super::single::cluster_name;
use super::summary::{summarize, ReadStats};
use crate::relay_tls::interrupted;

/// How long readers keep reading after the last fault is undone.
const SETTLE: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// SIGKILL the node's daemon; `up` revives it after the hold.
    Kill,
    /// SIGSTOP the daemon; SIGCONT after the hold.
    Stop,
    /// The link down; up after the hold.
    LinkDown,
    /// 100% loss on the link; off after the hold.
    Loss,
    /// SIGKILL the node's keeper; `up` revives it after the hold.
    KeeperKill,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Action::Kill => "kill",
            Action::Stop => "stop",
            Action::LinkDown => "link-down",
            Action::Loss => "loss",
            Action::KeeperKill => "keeper-kill",
        }
    }
}

const ACTIONS: [Action; 5] = [
    Action::Kill,
    Action::Stop,
    Action::LinkDown,
    Action::Loss,
    Action::KeeperKill,
];

/// One fault of the run.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Seconds since the chaos started.
    pub at_s: f64,
    pub action: Action,
    pub node: String,
    pub hold_ms: u64,
    /// How long the reviving `up` took (kill, keeper-kill).
    pub revive_s: Option<f64>,
    /// Kill: from the kill until `up` revived the daemon, in seconds on the readers'
    /// clock (the run's start).
    pub daemon_dead: Option<[f64; 2]>,
    /// What went wrong injecting or undoing it.
    pub problem: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ChaosRun {
    pub topology: Topology,
    pub cluster: String,
    pub seed: u64,
    pub seconds: u64,
    pub reader_nodes: Vec<String>,
    pub events: Vec<Event>,
    /// Bytes into the reader nodes' links during the chaos.
    pub upstream_bytes: u64,
    /// Share of the image in each node's cache at the end: once full, reads stop going
    /// upstream (a larger image or slower links keep them going).
    pub cache_fill_end: std::collections::BTreeMap<String, f64>,
    pub guard_route_kept: bool,
    pub reads: ReadStats,
    /// Read errors of readers on a node whose own daemon was killed, from the kill until
    /// the reader's first good read after `up` revived it (its NBD client reconnecting):
    /// nothing can serve them there, and a VM pauses on them instead
    /// (`error_policy='stop'`, then `vm resume`); qemu-io has no such policy.
    pub errors_on_own_dead_daemon: u64,
    /// The longest a reader took to read well again after `up` revived its node's daemon.
    pub slowest_own_recovery_s: f64,
    pub down: Down,
    pub failures: Vec<String>,
}

/// Errors set apart (see [`ChaosRun::errors_on_own_dead_daemon`]) and the slowest
/// recovery after a revive.
fn own_dead_daemon(logs: &[ReaderLog], events: &[Event]) -> (u64, f64) {
    let mut errors = 0;
    let mut slowest: f64 = 0.0;
    for log in logs {
        let windows: Vec<[f64; 2]> = events
            .iter()
            .filter(|e| e.node == log.node)
            .filter_map(|e| e.daemon_dead)
            .collect();
        // A read is set apart once, however many windows it falls in.
        let mut apart = vec![false; log.reads.len()];
        for (i, &[dead, revived]) in windows.iter().enumerate() {
            // Reads are in order: the first good one after the kill ends the window.
            let until = log
                .reads
                .iter()
                .find(|r| r.outcome == Outcome::Ok && r.start >= dead)
                .map_or(log.ended, |r| r.end());
            // Killed again before it recovered: the next window measures the recovery.
            if windows.get(i + 1).is_none_or(|next| next[0] > until) {
                slowest = slowest.max(until - revived.min(until));
            }
            for (r, apart) in log.reads.iter().zip(apart.iter_mut()) {
                if matches!(r.outcome, Outcome::Error | Outcome::Hung)
                    && r.end() >= dead
                    && r.start <= until
                {
                    *apart = true;
                }
            }
        }
        errors += apart.iter().filter(|&&a| a).count() as u64;
    }
    (errors, slowest)
}

/// The schedule's next fault: gap before it, action, node, hold (all from the seed).
fn next(
    rng: &mut Rng,
    nodes: &[String],
    with_origin: &[String],
    serving: &[String],
) -> (u64, Action, String, u64) {
    let gap = rng.between(1000, 3000);
    let action = *rng.pick(&ACTIONS);
    // The origin has no keeper; a daemon is killed only where no reader reads.
    let node = match action {
        Action::KeeperKill => rng.pick(nodes),
        Action::Kill => rng.pick(serving),
        _ => rng.pick(with_origin),
    }
    .clone();
    let hold = rng.between(500, 2500);
    (gap, action, node, hold)
}

pub fn run(
    layout: &Layout,
    topology: Topology,
    seconds: u64,
    seed: u64,
    s: &Settings,
) -> Result<ChaosRun> {
    let bed = Testbed::new(layout, topology, &cluster_name(topology, "chaos"))?;
    let mut guard = Guard::new(&bed)?;
    let t0 = Instant::now();
    setup::up(&bed, s)?;
    let nodes = bed.nodes();
    let with_origin: Vec<String> = std::iter::once(bed.origin())
        .chain(nodes.iter().cloned())
        .collect();
    let is_parent = |n: &String| bed.plan.nodes.iter().any(|m| m.parent.as_ref() == Some(n));
    let leaves: Vec<String> = nodes.iter().filter(|n| !is_parent(n)).cloned().collect();
    let serving: Vec<String> = with_origin
        .iter()
        .filter(|n| is_parent(n))
        .cloned()
        .collect();
    let readers = setup::start_readers(&bed, &leaves, s, t0);
    let readers =
        setup::warm_up(readers, s).map_err(|(logs, why)| setup::reader_failure(&logs, &why))?;
    let ingress = Ingress::new(&bed, &leaves);
    errln!(
        "chaos: {seconds} s on a {}, seed {seed} (--chaos {seconds} --seed {seed} replays it)",
        topology.name()
    );
    let start = Instant::now();
    let fault_at = t0.elapsed().as_secs_f64();
    let end = start + Duration::from_secs(seconds);
    let mut rng = Rng::new(seed);
    let mut events = Vec::new();
    let mut stopped = Ok(());
    loop {
        let (gap, action, node, hold) = next(&mut rng, &nodes, &with_origin, &serving);
        let at = Instant::now() + Duration::from_millis(gap);
        if at >= end {
            break;
        }
        if let Err(e) = setup::wait_until(at) {
            stopped = Err(e);
            break;
        }
        let mut event = Event {
            at_s: start.elapsed().as_secs_f64(),
            action,
            node,
            hold_ms: hold,
            revive_s: None,
            daemon_dead: None,
            problem: None,
        };
        errln!(
            "[{:6.1}s] {} {} for {} ms",
            event.at_s,
            action.name(),
            event.node,
            hold
        );
        if let Err(e) = inject_and_undo(&bed, &guard, &mut event, s, t0) {
            errln!("           {e:#}");
            event.problem = Some(format!("{e:#}"));
        }
        events.push(event);
        if let Err(e) = interrupted() {
            stopped = Err(e);
            break;
        }
    }
    if stopped.is_ok() {
        stopped = setup::wait_until(Instant::now() + SETTLE);
    }
    let upstream_bytes = ingress.bytes();
    let cache_fill_end = setup::cache_fill(&bed, &nodes);
    let guard_route_kept = bed.guard_route_present();
    let logs = readers.stop(STOP_GRACE);
    stopped?;
    let down = guard.measured_down(s.down_timeout)?;
    let (own, slowest_own_recovery_s) = own_dead_daemon(&logs, &events);
    let mut run = ChaosRun {
        topology,
        cluster: bed.name.clone(),
        seed,
        seconds,
        reader_nodes: leaves,
        events,
        upstream_bytes,
        cache_fill_end,
        guard_route_kept,
        reads: summarize(&logs, fault_at),
        errors_on_own_dead_daemon: own,
        slowest_own_recovery_s,
        down,
        failures: Vec::new(),
    };
    run.failures = bar::chaos(&run);
    Ok(run)
}

/// One fault: injected, held, undone. A fault that could not be undone is undone by the
/// guard's cleanup at the latest.
fn inject_and_undo(
    bed: &Testbed,
    guard: &Guard,
    event: &mut Event,
    s: &Settings,
    t0: Instant,
) -> Result<()> {
    let node = bed.node(&event.node);
    let hold = Duration::from_millis(event.hold_ms);
    let revive = |event: &mut Event| -> Result<()> {
        setup::wait_until(Instant::now() + hold)?;
        let o = bed.up(s.up_timeout)?;
        event.revive_s = Some(o.seconds);
        if !o.ok {
            anyhow::bail!("up after {:.1} s: {}", o.seconds, o.message);
        }
        Ok(())
    };
    match event.action {
        Action::Kill => {
            let pid = inject::daemon_pid(&node)?;
            let from = t0.elapsed().as_secs_f64();
            // Until revived; for good if it is not.
            event.daemon_dead = Some([from, f64::INFINITY]);
            inject::kill(pid)?;
            revive(event)?;
            event.daemon_dead = Some([from, t0.elapsed().as_secs_f64()]);
            Ok(())
        }
        Action::KeeperKill => {
            inject::kill(inject::keeper_pid(&node)?)?;
            revive(event)
        }
        Action::Stop | Action::LinkDown | Action::Loss => {
            let active = match event.action {
                Action::Stop => inject::stop(&node, inject::daemon_pid(&node)?)?,
                Action::LinkDown => inject::link_down(&node)?,
                _ => inject::loss_on(&node)?,
            };
            guard.hold(active);
            let held = setup::wait_until(Instant::now() + hold);
            guard.undo_last()?;
            held
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_schedule() {
        let nodes: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let all: Vec<String> = ["origin", "n1", "n2", "n3"].map(String::from).to_vec();
        let serving: Vec<String> = ["origin", "n1"].map(String::from).to_vec();
        let schedule = |seed| {
            let mut rng = Rng::new(seed);
            (0..50)
                .map(|_| next(&mut rng, &nodes, &all, &serving))
                .collect::<Vec<_>>()
        };
        assert_eq!(schedule(11), schedule(11));
        assert_ne!(schedule(11), schedule(12));
        let s = schedule(11);
        assert!(s
            .iter()
            .all(|(gap, _, _, hold)| (1000..=3000).contains(gap) && (500..=2500).contains(hold)));
        assert!(s
            .iter()
            .all(|(_, a, n, _)| *a != Action::KeeperKill || n != "origin"));
        // Daemons die only where no reader reads.
        assert!(s
            .iter()
            .all(|(_, a, n, _)| *a != Action::Kill || serving.contains(n)));
        // Every action and the origin come up in 50 faults.
        for a in ACTIONS {
            assert!(s.iter().any(|(_, x, _, _)| *x == a), "{a:?} never chosen");
        }
        assert!(s.iter().any(|(_, _, n, _)| n == "origin"));
    }

    #[test]
    fn only_errors_on_a_node_until_it_reads_well_after_its_revive_are_set_apart() {
        use crate::faults::reader::Read;
        let read = |start: f64, outcome| Read {
            start,
            latency: 0.1,
            len: 512,
            outcome,
        };
        let log = |node: &str, reads| ReaderLog {
            node: node.into(),
            disk: "d".into(),
            reads,
            messages: vec![],
            ended: 20.0,
            fatal: None,
        };
        let logs = [
            // n1's daemon dead from 5 s, revived at 7 s; its reader reads well at 8.6 s.
            log(
                "n1",
                vec![
                    read(2.0, Outcome::Error),
                    read(4.0, Outcome::Ok),
                    read(5.5, Outcome::Error),
                    read(7.8, Outcome::Error),
                    read(8.5, Outcome::Ok),
                    read(9.0, Outcome::Error),
                ],
            ),
            // n2 is below n1: its errors are never set apart.
            log("n2", vec![read(6.0, Outcome::Error)]),
        ];
        let kill = Event {
            at_s: 3.0,
            action: Action::Kill,
            node: "n1".into(),
            hold_ms: 1000,
            revive_s: Some(1.0),
            daemon_dead: Some([5.0, 7.0]),
            problem: None,
        };
        let stop = Event {
            action: Action::Stop,
            node: "n2".into(),
            daemon_dead: None,
            ..kill.clone()
        };
        let (errors, slowest) = own_dead_daemon(&logs, &[kill.clone(), stop]);
        assert_eq!(errors, 2);
        assert!((slowest - 1.6).abs() < 1e-9, "{slowest}");
        // Killed again at 6 s, before it had read well: each error counts once, and the
        // recovery is measured from the last revive (at 8 s).
        let again = Event {
            daemon_dead: Some([6.0, 8.0]),
            ..kill.clone()
        };
        let (errors, slowest) = own_dead_daemon(&logs, &[kill, again]);
        assert_eq!(errors, 2);
        assert!((slowest - 0.6).abs() < 1e-9, "{slowest}");
    }
}
