//! Batch operations on a cluster's VMs: define, start (with boot queueing), destroy,
//! undefine, list. Each VM's outcome becomes a row of the result table.

use sftsan_core::error::{Error, Result};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster::Snapshots;
use crate::libvirt::{DomainState, Libvirt, RunState};
use crate::vms::Vm;
use crate::xml::VmMode;

/// The operation a batch applies to each of its VMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Make each VM's snapshot and (re)define its domain; any failure rolls back the batch.
    Define,
    /// Start stopped domains (snapshots made first), spaced by the batch's interval.
    Start,
    /// Stop running domains; a stateless VM's snapshot is discarded.
    Destroy,
    /// Stop and remove the domains; snapshots go too if asked or if stateless.
    Undefine,
    /// Report each VM's domain state, snapshot and mode; changes nothing.
    List,
    /// Resume the domains an I/O error paused (see [`crate::resume`]); others stay as
    /// they are.
    Resume,
}

impl Op {
    /// The operation's lowercase name, as in `sftsan vm <op>` and the report's summary.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Define => "define",
            Op::Start => "start",
            Op::Destroy => "destroy",
            Op::Undefine => "undefine",
            Op::List => "list",
            Op::Resume => "resume",
        }
    }
}

/// How a batch runs: its concurrency, start spacing and snapshot removal.
#[derive(Debug, Clone)]
pub struct BatchOptions {
    /// At most this many libvirt operations at once.
    pub concurrency: usize,
    /// At least this long between two starts (boot queueing against boot storms).
    pub interval: Duration,
    /// `undefine`: remove the VMs' snapshots too (their writes are lost).
    pub remove_snapshots: bool,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            concurrency: 4,
            interval: Duration::ZERO,
            remove_snapshots: false,
        }
    }
}

/// The libvirt pool of one node's snapshot directory.
#[derive(Debug, Clone)]
pub struct PoolSpec {
    /// The cluster the node belongs to.
    pub cluster: String,
    /// The compute node whose snapshots the pool shows.
    pub node: String,
    /// The libvirt pool's name (`sftsan-<cluster>-<node>-<image>`).
    pub name: String,
    /// The node's snapshot directory, the pool's target.
    pub dir: PathBuf,
}

/// One VM's line of a batch's result table.
#[derive(Debug, Clone)]
pub struct Row {
    /// The VM's domain name.
    pub vm: String,
    /// The compute node its snapshot is on.
    pub node: String,
    /// Its snapshot's index on that node.
    pub index: u32,
    /// What the operation did to the VM, in words, or why it failed.
    pub outcome: Result<String>,
    /// How long the VM's part of the operation took.
    pub elapsed: Duration,
}

/// The result of one batch: a row per VM, in the order they were given.
#[derive(Debug, Clone)]
pub struct Report {
    /// The operation the batch ran.
    pub op: Op,
    /// One row per VM.
    pub rows: Vec<Row>,
    /// Batch-level events: pools, rollback.
    pub notes: Vec<String>,
    /// Wall-clock time of the whole batch.
    pub elapsed: Duration,
}

impl Report {
    /// How many VMs' operation failed.
    pub fn failures(&self) -> usize {
        self.rows.iter().filter(|r| r.outcome.is_err()).count()
    }

    /// The per-VM result table, then the notes and a summary line.
    pub fn table(&self) -> String {
        let header = ["VM", "NODE", "SNAPSHOT", "RESULT", "TIME"];
        let cells: Vec<[String; 5]> = self
            .rows
            .iter()
            .map(|r| {
                [
                    r.vm.clone(),
                    r.node.clone(),
                    r.index.to_string(),
                    match &r.outcome {
                        Ok(s) => s.clone(),
                        Err(e) => format!("FAILED: {e}"),
                    },
                    format!("{:.1}s", r.elapsed.as_secs_f64()),
                ]
            })
            .collect();
        let mut width = header.map(str::len);
        for row in &cells {
            for (w, c) in width.iter_mut().zip(row) {
                *w = (*w).max(c.len());
            }
        }
        let line = |row: &[&str]| {
            let mut s = String::new();
            for (i, c) in row.iter().enumerate() {
                if i + 1 == row.len() {
                    s += c;
                } else {
                    s += &format!("{c:<w$}  ", w = width[i]);
                }
            }
            s.trim_end().to_string() + "\n"
        };
        let mut out = line(&header);
        for row in &cells {
            out += &line(&row.each_ref().map(String::as_str));
        }
        for n in &self.notes {
            out += &format!("{n}\n");
        }
        out += &format!(
            "{}: {} VMs, {} failed, in {:.1}s\n",
            self.op.as_str(),
            self.rows.len(),
            self.failures(),
            self.elapsed.as_secs_f64()
        );
        out
    }
}

/// Runs `work` on every item, at most `concurrency` at once, starting them in order with
/// at least `interval` between two starts. Results come back in the items' order, each
/// with how long it took.
pub fn bounded<T: Sync, R: Send>(
    items: &[T],
    concurrency: usize,
    interval: Duration,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<(R, Duration)> {
    let next = AtomicUsize::new(0);
    let gate: Mutex<Option<Instant>> = Mutex::new(None);
    let results: Mutex<Vec<Option<(R, Duration)>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..concurrency.clamp(1, items.len().max(1)) {
            s.spawn(|| loop {
                // Take the next item and its start slot together, so slots follow item order.
                let (i, at) = {
                    let mut g = gate.lock().unwrap();
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    if i >= items.len() {
                        return;
                    }
                    let now = Instant::now();
                    let at = g.map_or(now, |t| t.max(now));
                    *g = Some(at + interval);
                    (i, at)
                };
                if let Some(wait) = at.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
                let started = Instant::now();
                let r = work(&items[i]);
                results.lock().unwrap()[i] = Some((r, started.elapsed()));
            });
        }
    });
    results
        .into_inner()
        .unwrap()
        .into_iter()
        .map(|r| r.expect("every item ran"))
        .collect()
}

/// A define's note where the VMs' hosts make their snapshots.
const HOOK_MAKES_SNAPSHOTS: &str =
    "snapshots: each VM's is made on its host by sftsan's libvirt hook when the VM starts";

/// The persistent definition a define replaced (libvirt's XML), if there was one.
type Previous = Option<String>;

/// What the first half of a define did, for the second to report and, if the batch
/// failed, undo.
#[derive(Default)]
struct DefineAttempt<'v> {
    /// Snapshots this define made (they existed not before).
    created_snapshots: Vec<&'v Vm>,
    /// Each VM's snapshot, in order, up to the first that failed.
    snap_results: Vec<Result<()>>,
    snap_times: Vec<Duration>,
    /// Each VM's domain (empty when a snapshot failed).
    defined: Vec<(Result<Previous>, Duration)>,
    /// The host's hook makes the snapshots: none were made here.
    snapshots_by_hook: bool,
}

impl DefineAttempt<'_> {
    fn failed(&self) -> bool {
        self.snap_results.iter().any(Result::is_err) || self.defined.iter().any(|(r, _)| r.is_err())
    }
}

/// A batch over one cluster's VMs.
pub struct Batch<'a> {
    /// The libvirt connection the domains are defined on.
    pub libvirt: &'a Libvirt,
    /// Makes and removes the VMs' snapshots (the cluster's engine, in production).
    pub snapshots: &'a dyn Snapshots,
    /// The pools of the nodes the VMs are on.
    pub pools: Vec<PoolSpec>,
    /// Concurrency, start interval and snapshot removal.
    pub options: BatchOptions,
}

fn row(vm: &Vm, outcome: Result<String>, elapsed: Duration) -> Row {
    Row {
        vm: vm.name.clone(),
        node: vm.node.clone(),
        index: vm.index,
        outcome,
        elapsed,
    }
}

impl Batch<'_> {
    /// Applies `op` to every VM, then creates, refreshes or removes the nodes' pools
    /// (not for `List`); failures are reported per VM, not returned.
    pub fn run(&self, op: Op, vms: &[Vm]) -> Report {
        let started = Instant::now();
        let mut notes = Vec::new();
        let rows = match op {
            Op::Define => self.define(vms, &mut notes),
            Op::Start => self.start(vms, &mut notes),
            Op::Destroy => self.parallel(vms, |vm| self.destroy_one(vm)),
            Op::Undefine => self.parallel(vms, |vm| self.undefine_one(vm)),
            Op::Resume => {
                let options = crate::resume::ResumeOptions {
                    concurrency: self.options.concurrency,
                    ..Default::default()
                };
                self.parallel(vms, |vm| {
                    crate::resume::resume_domain(self.libvirt, &vm.name, &options)
                })
            }
            Op::List => vms
                .iter()
                .map(|vm| {
                    let t = Instant::now();
                    row(vm, self.describe(vm), t.elapsed())
                })
                .collect(),
        };
        if !matches!(op, Op::List | Op::Resume) {
            self.sync_pools(op, &mut notes);
        }
        Report {
            op,
            rows,
            notes,
            elapsed: started.elapsed(),
        }
    }

    fn parallel(&self, vms: &[Vm], work: impl Fn(&Vm) -> Result<String> + Sync) -> Vec<Row> {
        bounded(vms, self.options.concurrency, Duration::ZERO, work)
            .into_iter()
            .zip(vms)
            .map(|((outcome, t), vm)| row(vm, outcome, t))
            .collect()
    }

    /// Snapshots first (one at a time: the engine holds the cluster's lock), then the
    /// domains in parallel. Any failure undoes the whole batch: the domains it defined are
    /// undefined and the snapshots it created are removed.
    fn define(&self, vms: &[Vm], notes: &mut Vec<String>) -> Vec<Row> {
        let attempt = self.try_define(vms);
        let failed = attempt.failed();
        self.settle_define(vms, &attempt, failed, notes)
    }

    /// The first half of a define: every snapshot (unless the hook makes them), then every
    /// domain; nothing is undone yet.
    fn try_define<'v>(&self, vms: &'v [Vm]) -> DefineAttempt<'v> {
        let mut attempt = DefineAttempt::default();
        if self.snapshots.made_by_hook() {
            attempt.snapshots_by_hook = true;
        } else {
            for vm in vms {
                let t = Instant::now();
                let existed = self.snapshots.exists(&vm.node, vm.index);
                let r = self.snapshots.ensure(&vm.node, vm.index).map(|_| ());
                if r.is_ok() && !existed {
                    attempt.created_snapshots.push(vm);
                }
                attempt.snap_times.push(t.elapsed());
                let failed = r.is_err();
                attempt.snap_results.push(r);
                if failed {
                    break;
                }
            }
        }
        if !attempt.failed() {
            attempt.defined = bounded(vms, self.options.concurrency, Duration::ZERO, |vm| {
                self.define_one(vm)
            });
        }
        attempt
    }

    /// The second half: each VM's row, and, when `failed` (this batch's attempt or, over
    /// several hosts, any host's), the rollback of everything the attempt did.
    fn settle_define(
        &self,
        vms: &[Vm],
        attempt: &DefineAttempt,
        failed: bool,
        notes: &mut Vec<String>,
    ) -> Vec<Row> {
        let mut rows = Vec::new();
        for (i, vm) in vms.iter().enumerate() {
            let snap_t = attempt.snap_times.get(i).copied().unwrap_or_default();
            let outcome = match (attempt.snap_results.get(i), attempt.defined.get(i)) {
                (Some(Err(e)), _) => Err(e.clone()),
                (_, Some((Err(e), _))) => Err(e.clone()),
                // Rollback: what this batch defined goes, what it redefined gets its old
                // definition back.
                (_, Some((Ok(None), _))) if failed => match self.libvirt.undefine(&vm.name) {
                    Ok(()) => Ok("defined, then undefined (the batch failed)".into()),
                    Err(e) => Err(e.context("rollback")),
                },
                (_, Some((Ok(Some(old)), _))) if failed => {
                    match self.libvirt.define_xml(&vm.name, old) {
                        Ok(()) => Ok("redefined, then restored (the batch failed)".into()),
                        Err(e) => Err(e.context("rollback")),
                    }
                }
                (_, Some((Ok(None), _))) => Ok("defined".into()),
                (_, Some((Ok(Some(_)), _))) => Ok("redefined".into()),
                _ => Ok("not attempted (the batch failed)".into()),
            };
            let t = snap_t + attempt.defined.get(i).map(|d| d.1).unwrap_or_default();
            rows.push(row(vm, outcome, t));
        }
        if failed {
            for vm in &attempt.created_snapshots {
                match self.snapshots.remove(&vm.node, vm.index) {
                    Ok(_) => notes.push(format!(
                        "rollback: removed snapshot {}/{} created by this batch",
                        vm.node, vm.index
                    )),
                    Err(e) => notes.push(format!("rollback FAILED: {e}")),
                }
            }
        } else if attempt.snapshots_by_hook && !vms.is_empty() {
            notes.push(HOOK_MAKES_SNAPSHOTS.into());
        }
        rows
    }

    /// Defines one VM's domain; returns the definition it replaced, if any. A domain of
    /// that name with another UUID is someone else's and is left alone.
    fn define_one(&self, vm: &Vm) -> Result<Previous> {
        let previous = match self.libvirt.uuid(&vm.name)? {
            None => None,
            Some(uuid) if uuid.eq_ignore_ascii_case(&vm.uuid) => {
                Some(self.libvirt.inactive_xml(&vm.name)?)
            }
            Some(uuid) => {
                return Err(Error::conflict(
                    format!("a domain named {} with another UUID ({uuid})", vm.name),
                    "exists: not this VM, left alone",
                ))
            }
        };
        self.libvirt.define(&vm.domain)?;
        Ok(previous)
    }

    /// Makes the snapshots of stopped VMs exist (so that starts work without the hook
    /// too; where the hook makes them, it does at each start), then starts the domains
    /// with the concurrency bound and the interval.
    fn start(&self, vms: &[Vm], _notes: &mut [String]) -> Vec<Row> {
        let mut prepared: Vec<Result<()>> = Vec::new();
        for vm in vms {
            let r = match self.libvirt.state(&vm.name) {
                Ok(DomainState::Stopped) if !self.snapshots.made_by_hook() => {
                    self.snapshots.ensure(&vm.node, vm.index).map(|_| ())
                }
                Ok(_) => Ok(()),
                Err(e) => Err(e),
            };
            prepared.push(r);
        }
        let items: Vec<(&Vm, &Result<()>)> = vms.iter().zip(&prepared).collect();
        bounded(
            &items,
            self.options.concurrency,
            self.options.interval,
            |(vm, prep)| {
                if let Err(e) = prep {
                    return Err(e.clone());
                }
                match self.libvirt.state(&vm.name)? {
                    DomainState::Undefined => Err(Error::not_found(
                        vm.name.clone(),
                        "not defined (run `sftsan vm define` first)",
                    )),
                    DomainState::Running => Ok("already running".into()),
                    DomainState::Stopped => match self.libvirt.start(&vm.name) {
                        Ok(()) => Ok("started".into()),
                        Err(e) => Err(self.start_failure(vm, e)),
                    },
                }
            },
        )
        .into_iter()
        .zip(vms)
        .map(|((outcome, t), vm)| row(vm, outcome, t))
        .collect()
    }

    /// A failed start where the host's hook should have made the snapshot and did not:
    /// most likely the hook is not installed there, which the error then says.
    fn start_failure(&self, vm: &Vm, e: Error) -> Error {
        if self.snapshots.made_by_hook() && !self.snapshots.exists(&vm.node, vm.index) {
            return e.context(format!(
                "the host has no {}/snapshot/{}, which sftsan's libvirt hook makes at each start (is the hook installed there?)",
                vm.node, vm.index
            ));
        }
        e
    }

    /// The mode libvirt's copy of the domain records (what it was defined with).
    fn defined_mode(&self, vm: &Vm) -> Option<VmMode> {
        let d = self.libvirt.domain(&vm.name).ok()?;
        d.sftsan().map(|m| m.mode)
    }

    fn destroy_one(&self, vm: &Vm) -> Result<String> {
        let mut what = match self.libvirt.state(&vm.name)? {
            DomainState::Undefined => return Ok("not defined".into()),
            DomainState::Stopped => "not running".to_string(),
            DomainState::Running => {
                self.libvirt.destroy(&vm.name)?;
                "destroyed".to_string()
            }
        };
        // The hook discards a stateless VM's snapshot at release; do it here as well, for
        // hosts without the hook (removing an absent snapshot does nothing).
        if self.defined_mode(vm) == Some(VmMode::Stateless)
            && self.snapshots.remove(&vm.node, vm.index)?
        {
            what += ", snapshot discarded (stateless)";
        }
        Ok(what)
    }

    fn undefine_one(&self, vm: &Vm) -> Result<String> {
        let mode = self.defined_mode(vm);
        let mut what = match self.libvirt.state(&vm.name)? {
            DomainState::Undefined => "not defined".to_string(),
            DomainState::Stopped => {
                self.libvirt.undefine(&vm.name)?;
                "undefined".to_string()
            }
            DomainState::Running => {
                self.libvirt.destroy(&vm.name)?;
                self.libvirt.undefine(&vm.name)?;
                "destroyed, undefined".to_string()
            }
        };
        if (self.options.remove_snapshots || mode == Some(VmMode::Stateless))
            && self.snapshots.remove(&vm.node, vm.index)?
        {
            what += ", snapshot removed";
        }
        Ok(what)
    }

    fn describe(&self, vm: &Vm) -> Result<String> {
        // With a pause's reason: "paused (I/O error)" is what `vm resume` is for.
        let state = self.libvirt.run_state(&vm.name)?;
        let snapshot = if self.snapshots.exists(&vm.node, vm.index) {
            "snapshot present"
        } else {
            "no snapshot"
        };
        let mode = match state {
            RunState::Undefined => String::new(),
            _ => self
                .defined_mode(vm)
                .map(|m| format!(", {}", m.as_str()))
                .unwrap_or_else(|| ", not sftsan's".into()),
        };
        Ok(format!("{state}, {snapshot}{mode}"))
    }

    /// One refresh per pool per batch. After `undefine`, a node's pool goes away with
    /// the last sftsan domain of the node.
    fn sync_pools(&self, op: Op, notes: &mut Vec<String>) {
        let remaining: Option<BTreeMap<(String, String), usize>> =
            (op == Op::Undefine).then(|| {
                let mut m = BTreeMap::new();
                for d in self.libvirt.sftsan_domains().unwrap_or_default() {
                    let meta = d.sftsan().expect("sftsan_domains have metadata");
                    *m.entry((meta.cluster.clone(), meta.node.clone()))
                        .or_insert(0) += 1;
                }
                m
            });
        for pool in &self.pools {
            let key = (pool.cluster.clone(), pool.node.clone());
            let keep = remaining
                .as_ref()
                .is_none_or(|m| m.get(&key).copied().unwrap_or(0) > 0);
            let note = if !keep {
                match self.libvirt.remove_pool(&pool.name) {
                    Ok(true) => Some(format!("pool {}: removed", pool.name)),
                    Ok(false) => None,
                    Err(e) => Some(format!("pool {}: FAILED: {e}", pool.name)),
                }
            } else if !self.snapshots.dir_exists(&pool.dir) {
                None
            } else {
                match self.libvirt.ensure_pool(&pool.name, &pool.dir) {
                    Ok(true) => Some(format!("pool {}: created", pool.name)),
                    Ok(false) => Some(format!("pool {}: refreshed", pool.name)),
                    Err(e) => Some(format!("pool {}: FAILED: {e}", pool.name)),
                }
            };
            notes.extend(note);
        }
    }
}

/// One host's part of a batch over several hosts (a remote cluster's compute nodes): its
/// own batch, over its own libvirt connection, and its VMs.
pub struct HostBatch<'a> {
    /// The batch on that host (its concurrency and interval: boot queueing per host).
    pub batch: Batch<'a>,
    /// The VMs on that host, in plan order.
    pub vms: Vec<Vm>,
}

/// Runs `op` on several hosts side by side, at most `hosts_at_once` at a time, each
/// host's VMs as its own [`Batch`] would; one report, with the hosts' rows and notes in
/// the order given. A define stays all or nothing over every host: each host defines its
/// domains, and if any VM on any host failed, every host rolls back what it did.
pub fn run_on_hosts(op: Op, hosts: &[HostBatch], hosts_at_once: usize) -> Report {
    let started = Instant::now();
    let parts: Vec<(Vec<Row>, Vec<String>)> = if op == Op::Define {
        // Items by reference, so that each attempt may borrow its host's VMs.
        let each: Vec<&HostBatch> = hosts.iter().collect();
        let attempts: Vec<DefineAttempt> = bounded(&each, hosts_at_once, Duration::ZERO, |h| {
            let h: &HostBatch = h;
            h.batch.try_define(&h.vms)
        })
        .into_iter()
        .map(|(a, _)| a)
        .collect();
        let failed = attempts.iter().any(DefineAttempt::failed);
        let settle: Vec<(&HostBatch, DefineAttempt)> = hosts.iter().zip(attempts).collect();
        bounded(&settle, hosts_at_once, Duration::ZERO, |(h, attempt)| {
            let mut notes = vec![];
            let rows = h.batch.settle_define(&h.vms, attempt, failed, &mut notes);
            h.batch.sync_pools(op, &mut notes);
            (rows, notes)
        })
        .into_iter()
        .map(|(p, _)| p)
        .collect()
    } else {
        bounded(hosts, hosts_at_once, Duration::ZERO, |h| {
            let r = h.batch.run(op, &h.vms);
            (r.rows, r.notes)
        })
        .into_iter()
        .map(|(p, _)| p)
        .collect()
    };
    let (mut rows, mut notes) = (vec![], vec![]);
    for (r, n) in parts {
        rows.extend(r);
        // A note every host makes alike is said once.
        for note in n {
            if !notes.contains(&note) {
                notes.push(note);
            }
        }
    }
    Report {
        op,
        rows,
        notes,
        elapsed: started.elapsed(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vms::{build_domain, default_template};
    use crate::xml::{Domain, SftsanMeta};
    use std::sync::atomic::AtomicUsize;

    /// Snapshots as plain files in a scratch directory; can be told to fail for one VM.
    struct FakeSnapshots {
        dir: tempfile::TempDir,
        fail: Option<(String, u32)>,
        /// Stands for a remote host whose hook makes the snapshots: ensure must not be
        /// called.
        by_hook: bool,
    }

    impl FakeSnapshots {
        fn new() -> Self {
            FakeSnapshots {
                dir: tempfile::tempdir().unwrap(),
                fail: None,
                by_hook: false,
            }
        }
        fn file(&self, node: &str, index: u32) -> PathBuf {
            self.dir
                .path()
                .join(node)
                .join(format!("base-{index}.qcow2"))
        }
    }

    impl Snapshots for FakeSnapshots {
        fn ensure(&self, node: &str, index: u32) -> Result<PathBuf> {
            assert!(
                !self.by_hook,
                "ensure called where the hook makes snapshots"
            );
            if self.fail.as_ref() == Some(&(node.to_string(), index)) {
                return Err(Error::refused(
                    format!("{node}/snapshot/{index}"),
                    "injected failure",
                ));
            }
            let f = self.file(node, index);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(&f, b"qcow2").unwrap();
            Ok(f)
        }
        fn remove(&self, node: &str, index: u32) -> Result<bool> {
            Ok(std::fs::remove_file(self.file(node, index)).is_ok())
        }
        fn exists(&self, node: &str, index: u32) -> bool {
            self.file(node, index).exists()
        }
        fn made_by_hook(&self) -> bool {
            self.by_hook
        }
    }

    fn vms(
        cluster: &str,
        snaps: &FakeSnapshots,
        nodes: &[&str],
        per_node: u32,
        mode: VmMode,
    ) -> Vec<Vm> {
        let mut out = Vec::new();
        for node in nodes {
            for index in 1..=per_node {
                let name = format!("{cluster}-{node}-{index}");
                let meta = SftsanMeta {
                    cluster: cluster.into(),
                    image: "base".into(),
                    node: node.to_string(),
                    snapshot: index,
                    mode,
                    spec: "/nonexistent/spec.toml".into(),
                };
                let file = snaps.file(node, index);
                let domain = build_domain(&default_template(), &name, &file, meta).unwrap();
                out.push(Vm {
                    uuid: domain.uuid().unwrap(),
                    name,
                    node: node.to_string(),
                    index,
                    snapshot: file,
                    domain,
                });
            }
        }
        out
    }

    fn pools(cluster: &str, snaps: &FakeSnapshots, nodes: &[&str]) -> Vec<PoolSpec> {
        nodes
            .iter()
            .map(|n| PoolSpec {
                cluster: cluster.into(),
                node: n.to_string(),
                name: format!("sftsan-{cluster}-{n}-base"),
                dir: snaps.dir.path().join(n),
            })
            .collect()
    }

    fn test_driver() -> Libvirt {
        Libvirt::open("test:///default").expect("libvirt's test driver")
    }

    fn outcomes(r: &Report) -> Vec<String> {
        r.rows
            .iter()
            .map(|r| match &r.outcome {
                Ok(s) => s.clone(),
                Err(e) => format!("ERR {e}"),
            })
            .collect()
    }

    /// The first workers wait until three run at once (within a deadline), so three must
    /// be able to; a fourth at any time would show in the peak. No sleeping for overlap.
    #[test]
    fn bounded_keeps_order_and_the_concurrency_limit() {
        use std::sync::{Condvar, Mutex};
        // (running now, whether three ran together yet)
        let state = Mutex::new((0usize, false));
        let changed = Condvar::new();
        let peak = AtomicUsize::new(0);
        let items: Vec<u32> = (0..12).collect();
        let out = bounded(&items, 3, Duration::ZERO, |i| {
            let mut s = state.lock().unwrap();
            s.0 += 1;
            peak.fetch_max(s.0, Ordering::SeqCst);
            s.1 |= s.0 == 3;
            changed.notify_all();
            let (mut s, _) = changed
                .wait_timeout_while(s, Duration::from_secs(10), |s| !s.1)
                .unwrap();
            s.0 -= 1;
            drop(s);
            i * 2
        });
        assert_eq!(
            out.iter().map(|r| r.0).collect::<Vec<_>>(),
            (0..12).map(|i| i * 2).collect::<Vec<_>>()
        );
        assert_eq!(peak.load(Ordering::SeqCst), 3);
    }

    #[test]
    fn bounded_spaces_starts_by_the_interval() {
        let t0 = Instant::now();
        let starts = Mutex::new(Vec::new());
        let items: Vec<u32> = (0..5).collect();
        bounded(&items, 5, Duration::from_millis(60), |i| {
            starts.lock().unwrap().push((*i, t0.elapsed()));
        });
        let mut starts = starts.into_inner().unwrap();
        starts.sort();
        for w in starts.windows(2) {
            let gap = w[1].1.saturating_sub(w[0].1);
            assert!(gap >= Duration::from_millis(55), "{starts:?}");
        }
        assert!(starts[4].1 >= Duration::from_millis(235), "{starts:?}");
    }

    #[test]
    fn a_batch_defines_starts_destroys_and_undefines_on_the_test_driver() {
        let lv = test_driver();
        let snaps = FakeSnapshots::new();
        let nodes = ["n1", "n2", "n3"];
        let vms = vms("ut-full", &snaps, &nodes, 2, VmMode::Persistent);
        let batch = Batch {
            libvirt: &lv,
            snapshots: &snaps,
            pools: pools("ut-full", &snaps, &nodes),
            options: BatchOptions {
                concurrency: 2,
                interval: Duration::from_millis(10),
                remove_snapshots: false,
            },
        };
        let r = batch.run(Op::Define, &vms);
        assert_eq!(r.failures(), 0, "{}", r.table());
        assert!(outcomes(&r).iter().all(|o| o == "defined"), "{}", r.table());
        assert!(
            r.notes.iter().filter(|n| n.ends_with("created")).count() == 3,
            "{}",
            r.table()
        );
        for vm in &vms {
            assert!(snaps.exists(&vm.node, vm.index));
            // libvirt's own XML parses back into the same VM.
            let d: Domain = lv.domain(&vm.name).unwrap();
            assert_eq!(d.uuid().as_deref(), Some(vm.uuid.as_str()));
            assert_eq!(d.sftsan(), vm.domain.sftsan());
            assert_eq!(d.disks()[0].path, vm.domain.disks()[0].path);
            assert_eq!(d.macs(), vm.domain.macs());
        }
        // Defining again changes nothing but says so.
        let r = batch.run(Op::Define, &vms);
        assert!(
            outcomes(&r).iter().all(|o| o == "redefined"),
            "{}",
            r.table()
        );
        assert!(
            r.notes.iter().all(|n| n.ends_with("refreshed")),
            "{}",
            r.table()
        );

        let r = batch.run(Op::Start, &vms);
        assert!(outcomes(&r).iter().all(|o| o == "started"), "{}", r.table());
        let r = batch.run(Op::Start, &vms);
        assert!(
            outcomes(&r).iter().all(|o| o == "already running"),
            "{}",
            r.table()
        );
        let r = batch.run(Op::List, &vms);
        assert!(
            outcomes(&r)
                .iter()
                .all(|o| o == "running, snapshot present, persistent"),
            "{}",
            r.table()
        );
        lv.suspend(&vms[0].name).unwrap();
        let r = batch.run(Op::List, &vms[..1]);
        assert_eq!(
            outcomes(&r),
            ["paused (user), snapshot present, persistent"],
            "{}",
            r.table()
        );
        // Resume leaves a VM its user paused alone.
        let r = batch.run(Op::Resume, &vms[..2]);
        assert_eq!(
            outcomes(&r),
            ["paused (user): left alone", "running: nothing to do"],
            "{}",
            r.table()
        );
        assert!(r.notes.is_empty(), "no pool work: {:?}", r.notes);
        let r = batch.run(Op::Destroy, &vms);
        assert!(
            outcomes(&r).iter().all(|o| o == "destroyed"),
            "{}",
            r.table()
        );
        let r = batch.run(Op::Undefine, &vms);
        assert!(
            outcomes(&r).iter().all(|o| o == "undefined"),
            "{}",
            r.table()
        );
        assert_eq!(
            r.notes.iter().filter(|n| n.ends_with("removed")).count(),
            3,
            "{}",
            r.table()
        );
        // Persistent VMs keep their disks unless asked.
        assert!(vms.iter().all(|vm| snaps.exists(&vm.node, vm.index)));
        let r = batch.run(Op::List, &vms);
        assert!(
            outcomes(&r)
                .iter()
                .all(|o| o == "undefined, snapshot present"),
            "{}",
            r.table()
        );
        let table = r.table();
        assert!(table.starts_with("VM"), "{table}");
        assert!(table.contains("ut-full-n3-2"), "{table}");
        assert!(table.trim_end().ends_with("s"), "{table}");
    }

    #[test]
    fn a_failing_define_leaves_no_vm_of_the_batch_defined() {
        let lv = test_driver();
        let snaps = FakeSnapshots::new();
        let nodes = ["n1", "n2"];
        let vms = vms("ut-fail", &snaps, &nodes, 3, VmMode::Persistent);
        // Someone else's domain holds the name of the fifth VM.
        let mut foreign = vms[4].domain.clone();
        foreign.set_uuid("00000000-0000-4000-8000-000000000001");
        foreign.set_sftsan(None);
        lv.define(&foreign).unwrap();
        // One VM of the batch was defined before, with 64 MiB: it stays, as it was.
        let mut before = vms[0].domain.clone();
        before.set_memory_mib(64);
        lv.define(&before).unwrap();
        let batch = Batch {
            libvirt: &lv,
            snapshots: &snaps,
            pools: pools("ut-fail", &snaps, &nodes),
            options: BatchOptions::default(),
        };
        let r = batch.run(Op::Define, &vms);
        assert_eq!(r.failures(), 1, "{}", r.table());
        assert!(outcomes(&r)[4].contains("another UUID"), "{}", r.table());
        for (i, vm) in vms.iter().enumerate() {
            let state = lv.state(&vm.name).unwrap();
            match i {
                0 => {
                    assert_eq!(state, DomainState::Stopped, "defined before the batch");
                    let mem = lv.domain(&vm.name).unwrap().memory_bytes();
                    assert_eq!(mem, Some(64 << 20), "restored: {}", r.table());
                    assert!(outcomes(&r)[0].contains("restored"), "{}", r.table());
                }
                4 => assert_eq!(lv.uuid(&vm.name).unwrap(), foreign.uuid()),
                _ => assert_eq!(state, DomainState::Undefined, "{}: {}", vm.name, r.table()),
            }
            assert!(
                !snaps.exists(&vm.node, vm.index),
                "{}: snapshot left",
                vm.name
            );
        }
        lv.undefine(&vms[0].name).unwrap();
        lv.undefine(&vms[4].name).unwrap();

        // A snapshot that cannot be made: nothing is defined at all.
        let mut snaps = FakeSnapshots::new();
        snaps.fail = Some(("n2".into(), 1));
        let vms = vms_for(&snaps, "ut-fail2");
        let batch = Batch {
            libvirt: &lv,
            snapshots: &snaps,
            pools: pools("ut-fail2", &snaps, &nodes),
            options: BatchOptions::default(),
        };
        let r = batch.run(Op::Define, &vms);
        assert_eq!(r.failures(), 1, "{}", r.table());
        assert!(
            outcomes(&r)[3].contains("injected failure"),
            "{}",
            r.table()
        );
        for vm in &vms {
            assert_eq!(lv.state(&vm.name).unwrap(), DomainState::Undefined);
            assert!(!snaps.exists(&vm.node, vm.index));
        }
    }

    fn vms_for(snaps: &FakeSnapshots, cluster: &str) -> Vec<Vm> {
        vms(cluster, snaps, &["n1", "n2"], 3, VmMode::Persistent)
    }

    #[test]
    fn stateless_vms_lose_their_snapshot_when_stopped() {
        let lv = test_driver();
        let snaps = FakeSnapshots::new();
        let vms = vms("ut-stateless", &snaps, &["n1"], 2, VmMode::Stateless);
        let batch = Batch {
            libvirt: &lv,
            snapshots: &snaps,
            pools: pools("ut-stateless", &snaps, &["n1"]),
            options: BatchOptions::default(),
        };
        assert_eq!(batch.run(Op::Define, &vms).failures(), 0);
        assert_eq!(batch.run(Op::Start, &vms).failures(), 0);
        let r = batch.run(Op::Destroy, &vms);
        assert!(
            outcomes(&r)
                .iter()
                .all(|o| o == "destroyed, snapshot discarded (stateless)"),
            "{}",
            r.table()
        );
        assert!(vms.iter().all(|vm| !snaps.exists(&vm.node, vm.index)));
        // The next start makes a fresh one.
        let r = batch.run(Op::Start, &vms);
        assert!(outcomes(&r).iter().all(|o| o == "started"), "{}", r.table());
        assert!(vms.iter().all(|vm| snaps.exists(&vm.node, vm.index)));
        let r = batch.run(Op::Undefine, &vms);
        assert!(
            outcomes(&r)
                .iter()
                .all(|o| o == "destroyed, undefined, snapshot removed"),
            "{}",
            r.table()
        );
    }

    /// Two hosts (two connections) whose hooks make the snapshots: define and start touch
    /// only libvirt, and a define that fails on one host is undone on both.
    #[test]
    fn a_define_over_hosts_is_all_or_nothing_and_leaves_snapshots_to_the_hook() {
        let (lv1, lv2) = (test_driver(), test_driver());
        let mut snaps = FakeSnapshots::new();
        snaps.by_hook = true;
        let all = vms("ut-hosts", &snaps, &["n1", "n2"], 2, VmMode::Persistent);
        let (on1, on2) = all.split_at(2);
        let host = |lv, vms: &[Vm], node| HostBatch {
            batch: Batch {
                libvirt: lv,
                snapshots: &snaps,
                pools: pools("ut-hosts", &snaps, &[node]),
                options: BatchOptions::default(),
            },
            vms: vms.to_vec(),
        };
        let hosts = [host(&lv1, on1, "n1"), host(&lv2, on2, "n2")];
        // Someone else's domain holds the name of n2's second VM.
        let mut foreign = on2[1].domain.clone();
        foreign.set_uuid("00000000-0000-4000-8000-000000000002");
        foreign.set_sftsan(None);
        lv2.define(&foreign).unwrap();
        let r = run_on_hosts(Op::Define, &hosts, 2);
        assert_eq!(r.failures(), 1, "{}", r.table());
        assert!(outcomes(&r)[3].contains("another UUID"), "{}", r.table());
        for vm in &all[..3] {
            assert_eq!(
                lv1.state(&vm.name).unwrap(),
                DomainState::Undefined,
                "{}",
                r.table()
            );
        }
        assert!(outcomes(&r)[0].contains("then undefined"), "{}", r.table());
        lv2.undefine(&foreign.name()).unwrap();

        let r = run_on_hosts(Op::Define, &hosts, 2);
        assert_eq!(outcomes(&r), ["defined"; 4], "{}", r.table());
        // Said once, not once per host.
        assert_eq!(r.notes, [HOOK_MAKES_SNAPSHOTS], "{}", r.table());
        // No snapshot yet, so no directory for a pool either.
        assert!(all.iter().all(|vm| !snaps.exists(&vm.node, vm.index)));
        assert!(
            !r.notes.iter().any(|n| n.starts_with("pool")),
            "{}",
            r.table()
        );
        let r = run_on_hosts(Op::Start, &hosts, 2);
        assert_eq!(outcomes(&r), ["started"; 4], "{}", r.table());
        assert_eq!(
            r.rows.iter().map(|r| r.vm.as_str()).collect::<Vec<_>>(),
            all.iter().map(|v| v.name.as_str()).collect::<Vec<_>>()
        );
        let r = run_on_hosts(Op::Undefine, &hosts, 2);
        assert_eq!(outcomes(&r), ["destroyed, undefined"; 4], "{}", r.table());
    }
}
