//! The engine: applies the plan's stacks in dependency order (cluster resources, then tree
//! levels parents-first, nodes of a level in parallel with a bound), journals every step,
//! and on failure tears down what this run created, in reverse.

mod journal;
mod lock;

pub use journal::{Entry, EntryState, Journal, JournalData};
pub use lock::StateLock;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::names::Names;
use crate::plan::{NodePlan, Plan, ResourceSpec, Role};
use crate::resources::{first_difference, Backend, Item, Observed};
use crate::transport::TransportSpec;

/// Set to a resource kind to have `up` kill itself with SIGKILL right after creating the
/// first resource of that kind, before journaling it as created: the crash tests use it.
pub const KILL_AFTER_ENV: &str = "SFTSAN_TEST_KILL_AFTER";

/// What the engine did with one resource, as reported in an [`Event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Was absent and has been made.
    Created,
    /// Already there with the same parameters.
    Unchanged,
    /// Was half there: removed and made again.
    Recreated,
    /// The journal says it was made, but its kernel objects were gone (a reboot): made
    /// again over what its stores kept.
    Revived,
    /// Was there and has been torn down.
    Removed,
    /// Teardown found nothing to remove.
    Absent,
    /// The step failed; the run's error says why.
    Failed,
}

impl Action {
    /// Every action, for the front ends that document them.
    pub const ALL: [Action; 7] = [
        Action::Created,
        Action::Unchanged,
        Action::Recreated,
        Action::Revived,
        Action::Removed,
        Action::Absent,
        Action::Failed,
    ];

    /// The word progress output shows, e.g. `created`; `FAILED` in capitals to stand out.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Created => "created",
            Action::Unchanged => "unchanged",
            Action::Recreated => "recreated",
            Action::Revived => "revived",
            Action::Removed => "removed",
            Action::Absent => "absent",
            Action::Failed => "FAILED",
        }
    }
}

/// Progress, reported as it happens.
#[derive(Debug, Clone)]
pub struct Event {
    /// The resource's id, e.g. `n1/daemon` or `n1/snapshot/2`.
    pub id: String,
    /// What was done with it.
    pub action: Action,
    /// How long the step took.
    pub elapsed: Duration,
    /// Whether the step undoes what a failed run created.
    pub rollback: bool,
}

/// The callback the engine reports every [`Event`] to; called from worker threads.
pub type Progress = Arc<dyn Fn(&Event) + Send + Sync>;

/// The engine's failures are sftsan's [`Error`]s.
pub type EngineError = Error;

fn no_such_node(node: &str) -> Error {
    Error::not_found(format!("no node named {node:?} in this cluster"), "")
}

fn no_such_snapshot(node: &str, index: u32) -> Error {
    Error::not_found(
        format!("node {node:?} has no snapshot {index}"),
        "snapshots are numbered from 1",
    )
}

fn not_compute_node(node: &str) -> Error {
    Error::invalid(
        format!("{node:?}"),
        "is the origin: VM snapshots live on compute nodes",
    )
}

/// How many resources a run changed.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    /// Resources made: created, recreated or revived.
    pub created: usize,
    /// Resources found already there with the planned parameters.
    pub unchanged: usize,
    /// Resources torn down (ones already gone are not counted).
    pub removed: usize,
}

/// Shared state of one run.
struct Run {
    journal: Mutex<Journal>,
    /// What this run created, in order: rolled back in reverse on failure.
    created: Mutex<Vec<Entry>>,
    summary: Mutex<Summary>,
    progress: Progress,
    backend: Arc<dyn Backend>,
    transports: BTreeMap<String, TransportSpec>,
}

/// The host's own context, for what runs outside any node's.
static HOST: TransportSpec = TransportSpec::Local;

impl Run {
    /// Where `r`'s commands run: its node's context, or the host's.
    fn transport(&self, node: Option<&str>, r: &ResourceSpec) -> &TransportSpec {
        node.filter(|_| r.runs_on_node())
            .and_then(|n| self.transports.get(n))
            .unwrap_or(&HOST)
    }

    /// `r` as the backend takes it.
    fn item<'a>(&'a self, id: &'a str, node: Option<&'a str>, r: &'a ResourceSpec) -> Item<'a> {
        Item {
            id,
            kind: r.kind(),
            node,
            transport: self.transport(node, r),
            resource: r.as_resource(),
        }
    }

    fn report(&self, id: &str, action: Action, started: Instant, rollback: bool) {
        (self.progress)(&Event {
            id: id.into(),
            action,
            elapsed: started.elapsed(),
            rollback,
        });
    }

    /// Makes one resource exist with its planned parameters.
    fn ensure(&self, node: Option<&str>, r: &ResourceSpec) -> Result<()> {
        let id = r.id(node);
        let started = Instant::now();
        let item = self.item(&id, node, r);
        let res = r.as_resource();
        let step = |action: &'static str| {
            move |cause: Error| cause.context(format!("{}: {action} failed", r.id(node)))
        };
        let observed = self.backend.observe(&item).map_err(step("observe"))?;
        let made_before =
            self.journal.lock().unwrap().get(&id).map(|e| e.state) == Some(EntryState::Created);
        let action = match observed {
            Observed::Present(have) => {
                if let Some((field, have, want)) = first_difference(&have, &res.desired()) {
                    return Err(Error::conflict(
                        id,
                        format!(
                            "exists with {field} = {have}, but the spec wants {want} (run `sftsan down` first, or keep the spec as it was)"
                        ),
                    ));
                }
                // Adopt it: it carries our name, so `down` must remove it too.
                let mut journal = self.journal.lock().unwrap();
                if journal.get(&id).map(|e| e.state) != Some(EntryState::Created) {
                    let runtime = self.backend.runtime(&item);
                    journal.record(&id, node, r, EntryState::Created, runtime)?;
                }
                drop(journal);
                self.summary.lock().unwrap().unchanged += 1;
                self.report(&id, Action::Unchanged, started, false);
                return Ok(());
            }
            Observed::Partial(why) => {
                tracing::info!("{id}: {why}; removing the remains before creating it");
                self.backend.teardown(&item).map_err(step("teardown"))?;
                Action::Recreated
            }
            Observed::Absent if made_before => Action::Revived,
            Observed::Absent => Action::Created,
        };
        let made = if action == Action::Revived {
            // It stays journaled as made and is never rolled back: its stores hold what
            // earlier runs kept (a VM's writes), which only `down` may discard.
            self.backend.revive(&item).map_err(step("revive"))
        } else {
            self.journal
                .lock()
                .unwrap()
                .record(&id, node, r, EntryState::Creating, vec![])?;
            self.created
                .lock()
                .unwrap()
                .push(planned_entry(id.clone(), node, r));
            self.backend.create(&item).map_err(step("create"))
        };
        if let Err(e) = made {
            self.report(&id, Action::Failed, started, false);
            return Err(e);
        }
        crash_point(r.kind());
        self.journal.lock().unwrap().record(
            &id,
            node,
            r,
            EntryState::Created,
            self.backend.runtime(&item),
        )?;
        self.summary.lock().unwrap().created += 1;
        self.report(&id, action, started, false);
        Ok(())
    }

    /// Tears down one journaled resource and forgets it.
    fn remove(&self, entry: &Entry, rollback: bool) -> Result<()> {
        let started = Instant::now();
        let item = self.item(&entry.id, entry.node.as_deref(), &entry.resource);
        let absent = matches!(self.backend.observe(&item), Ok(Observed::Absent));
        match self.backend.teardown(&item) {
            Ok(()) => {
                self.journal
                    .lock()
                    .unwrap()
                    .forget(&entry.id)
                    .map_err(|e| e.context(entry.id.clone()))?;
                let action = if absent {
                    Action::Absent
                } else {
                    Action::Removed
                };
                if !absent {
                    self.summary.lock().unwrap().removed += 1;
                }
                self.report(&entry.id, action, started, rollback);
                Ok(())
            }
            Err(e) => {
                self.report(&entry.id, Action::Failed, started, rollback);
                Err(e.context(entry.id.clone()))
            }
        }
    }

    fn rollback(&self) -> Vec<Error> {
        let created = std::mem::take(&mut *self.created.lock().unwrap());
        created
            .iter()
            .rev()
            .filter_map(|entry| self.remove(entry, true).err())
            .collect()
    }
}

fn crash_point(kind: &str) {
    if std::env::var(KILL_AFTER_ENV).is_ok_and(|k| k == kind) {
        tracing::warn!("{KILL_AFTER_ENV}={kind}: killing this process");
        // SAFETY: signals our own process; nothing runs after it.
        unsafe { libc::kill(libc::getpid(), libc::SIGKILL) };
    }
}

/// Runs `work` for each item, at most `bound` at a time; returns the first error.
fn bounded<T: Sync>(
    items: &[T],
    bound: usize,
    work: impl Fn(&T) -> Result<()> + Sync,
) -> Result<()> {
    let mut first_error = None;
    for chunk in items.chunks(bound.max(1)) {
        let results: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = chunk.iter().map(|item| s.spawn(|| work(item))).collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("worker panicked"))
                .collect()
        });
        if let Some(e) = results.into_iter().find_map(Result::err) {
            first_error.get_or_insert(e);
        }
        if first_error.is_some() {
            break;
        }
    }
    first_error.map_or(Ok(()), Err)
}

/// Applies a plan through a backend: brings the cluster up, adds and removes nodes and
/// VM disks, and tears it all down again, journaling every step.
pub struct Engine {
    plan: Plan,
    names: Names,
    backend: Arc<dyn Backend>,
    progress: Progress,
}

impl Engine {
    /// An engine that applies `plan` (whose names are `names`) through `backend`.
    pub fn new(plan: Plan, names: Names, backend: Arc<dyn Backend>, progress: Progress) -> Engine {
        Engine {
            plan,
            names,
            backend,
            progress,
        }
    }

    /// The plan this engine applies.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    fn open_run(&self) -> Result<Run> {
        let mut journal = Journal::open(&self.names.journal(), &self.plan.cluster)?;
        for n in &self.plan.nodes {
            journal
                .data
                .transports
                .insert(n.name.clone(), n.transport.clone());
        }
        journal.data.levels = self.plan.setup_order();
        let transports = journal.data.transports.clone();
        Ok(Run {
            journal: Mutex::new(journal),
            created: Mutex::new(Vec::new()),
            summary: Mutex::new(Summary::default()),
            progress: self.progress.clone(),
            backend: self.backend.clone(),
            transports,
        })
    }

    /// Brings the whole cluster up, resuming whatever an earlier run left.
    pub fn up(&self) -> Result<Summary> {
        let scope: Vec<&ResourceSpec> = self.plan.nodes.iter().flat_map(|n| &n.stack).collect();
        self.transaction(&scope, |run| self.apply(run, &self.plan.tree.setup_order()))
    }

    /// Brings up one node and every node between it and the origin (parents first), each
    /// with its whole stack: what a VM on that node needs, and nothing else.
    pub fn up_node(&self, node: &str) -> Result<Summary> {
        let path = self.path_to(node)?;
        self.transaction(&self.stacks_of(&path), |run| {
            self.apply(run, &path.iter().map(|&i| vec![i]).collect::<Vec<_>>())
        })
    }

    /// Brings up `node`'s own stack only: on a host of a remote cluster, where the
    /// node's ancestors are other hosts, brought up before it by the controller.
    pub fn up_only(&self, node: &str) -> Result<Summary> {
        let index = self
            .plan
            .node(node)
            .ok_or_else(|| no_such_node(node))?
            .index;
        self.transaction(&self.stacks_of(&[index]), |run| {
            self.apply(run, &[vec![index]])
        })
    }

    /// The stacks of the nodes at these tree positions.
    fn stacks_of(&self, positions: &[usize]) -> Vec<&ResourceSpec> {
        positions
            .iter()
            .flat_map(|&i| &self.plan.nodes[i - 1].stack)
            .collect()
    }

    /// Makes sure snapshot `index` of `node` exists (bringing the node up if needed) and
    /// returns its file. `index` may exceed `snapshots.per_node`: VMs beyond the planned
    /// count get their snapshots on demand.
    pub fn ensure_snapshot(&self, node: &str, index: u32) -> Result<PathBuf> {
        let disk = self.vm_disk(node, index)?;
        let path = self.path_to(node)?;
        let mut scope = self.stacks_of(&path);
        scope.extend(&disk);
        self.transaction(&scope, |run| {
            self.apply(run, &path.iter().map(|&i| vec![i]).collect::<Vec<_>>())?;
            disk.iter().try_for_each(|r| run.ensure(Some(node), r))
        })?;
        Ok(self.plan.vm_disk_path(node, index))
    }

    /// Removes snapshot `index` of `node` (a VM's disk: its writes are gone). Returns
    /// whether there was one.
    pub fn remove_snapshot(&self, node: &str, index: u32) -> Result<bool> {
        let disk = self.vm_disk(node, index)?;
        let _lock = StateLock::acquire(&self.names)?;
        let run = self.open_run()?;
        let last = disk.last().expect("a VM disk has at least one resource");
        let existed = !matches!(
            run.backend
                .observe(&run.item(&last.id(Some(node)), Some(node), last)),
            Ok(Observed::Absent)
        );
        for r in disk.iter().rev() {
            let id = r.id(Some(node));
            let journaled = run.journal.lock().unwrap().get(&id).cloned();
            let entry = journaled.unwrap_or_else(|| planned_entry(id, Some(node), r));
            run.remove(&entry, false)
                .map_err(|f| teardown_incomplete(vec![f]))?;
        }
        Ok(existed)
    }

    /// Tears down one node's stack. Refuses while a child still has anything up, since
    /// the child reads through this node.
    pub fn down_node(&self, node: &str) -> Result<Summary> {
        let plan_node = self.plan.node(node).ok_or_else(|| no_such_node(node))?;
        let _lock = StateLock::acquire(&self.names)?;
        let run = self.open_run()?;
        {
            let j = run.journal.lock().unwrap();
            let busy: Vec<String> = self
                .plan
                .tree
                .children(plan_node.index)
                .into_iter()
                .map(|c| self.plan.nodes[c - 1].name.clone())
                .filter(|c| {
                    j.data
                        .entries
                        .iter()
                        .any(|e| e.node.as_deref() == Some(c.as_str()))
                })
                .collect();
            if !busy.is_empty() {
                return Err(Error::in_use(
                    format!("node {node}"),
                    format!("still serves {}: take them down first", busy.join(", ")),
                ));
            }
        }
        add_planned_entries(&run, &self.plan, Some(node));
        remove_node_entries(&run, node)?;
        Ok(run.summary.into_inner().unwrap())
    }

    /// Tears down the stack of `node`, which has left the plan (removed from the spec),
    /// from what the journal recorded of it. The caller has moved its children away.
    pub fn retire(&self, node: &str) -> Result<Summary> {
        if self.plan.node(node).is_some() {
            return Err(Error::invalid(
                format!("node {node}"),
                "is still in the spec: only a node that left it is retired",
            ));
        }
        let _lock = StateLock::acquire(&self.names)?;
        let run = self.open_run()?;
        remove_node_entries(&run, node)?;
        let mut journal = run.journal.lock().unwrap();
        journal.data.transports.remove(node);
        journal.save()?;
        drop(journal);
        Ok(run.summary.into_inner().unwrap())
    }

    /// Tears down `node`'s stack and then, when the journal names nothing else (a host of
    /// a remote cluster runs one node), the state kept for it: journal, lock, directories.
    pub fn down_only(&self, node: &str) -> Result<Summary> {
        let summary = self.down_node(node)?;
        let lock = StateLock::acquire(&self.names)?;
        let run = self.open_run()?;
        let journal = run.journal.lock().unwrap();
        if journal.data.entries.is_empty() {
            journal.delete()?;
            drop(journal);
            self.remove_state(lock);
        }
        Ok(summary)
    }

    /// Whether `node`'s stack, its VM disks aside, exists on the system.
    pub fn node_is_up(&self, node: &str) -> Result<bool> {
        let n = self.plan.node(node).ok_or_else(|| no_such_node(node))?;
        let mut disks: Vec<String> = Vec::new();
        for index in 1.. {
            let ids: Vec<String> = self
                .plan
                .vm_disk(node, index)
                .unwrap_or_default()
                .iter()
                .map(|r| r.id(Some(node)))
                .filter(|id| n.stack.iter().any(|r| r.id(Some(node)) == *id))
                .collect();
            if ids.is_empty() {
                break;
            }
            disks.extend(ids);
        }
        for r in &n.stack {
            if disks.contains(&r.id(Some(node))) {
                continue;
            }
            if !matches!(self.observe(n, r)?, Observed::Present(_)) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Whether VM disk `index` of `node` exists.
    pub fn snapshot_exists(&self, node: &str, index: u32) -> Result<bool> {
        let disk = self.vm_disk(node, index)?;
        let n = self.plan.node(node).ok_or_else(|| no_such_node(node))?;
        let last = disk.last().expect("a VM disk has at least one resource");
        Ok(matches!(self.observe(n, last)?, Observed::Present(_)))
    }

    /// What the backend sees of one of `n`'s resources.
    fn observe(&self, n: &NodePlan, r: &ResourceSpec) -> Result<Observed> {
        let id = r.id(Some(&n.name));
        let transport = if r.runs_on_node() {
            &n.transport
        } else {
            &HOST
        };
        let item = Item {
            id: &id,
            kind: r.kind(),
            node: Some(&n.name),
            transport,
            resource: r.as_resource(),
        };
        self.backend
            .observe(&item)
            .map_err(|e| e.context(format!("{id}: cannot observe")))
    }

    /// Tree positions from the origin down to `node`.
    /// The tree positions from the origin to `node`: what must be up for it. On a host of
    /// a remote cluster the ancestors are other hosts: there it is the node alone.
    fn path_to(&self, node: &str) -> Result<Vec<usize>> {
        let mut at = self
            .plan
            .node(node)
            .ok_or_else(|| no_such_node(node))?
            .index;
        let mut path = vec![at];
        if self.plan.mode == crate::spec::Mode::Remote {
            return Ok(path);
        }
        while let Some(parent) = self.plan.tree.parent(at) {
            path.push(parent);
            at = parent;
        }
        path.reverse();
        Ok(path)
    }

    fn vm_disk(&self, node: &str, index: u32) -> Result<Vec<ResourceSpec>> {
        if index == 0 {
            return Err(no_such_snapshot(node, index));
        }
        match self.plan.node(node) {
            None => return Err(no_such_node(node)),
            Some(n) if n.role == Role::Origin => return Err(not_compute_node(node)),
            Some(_) => {}
        }
        self.plan
            .vm_disk(node, index)
            .ok_or_else(|| no_such_snapshot(node, index))
    }

    /// The backend's checks of everything `scope` may make, before anything is touched.
    fn preflight(&self, scope: &[&ResourceSpec]) -> Result<()> {
        let transport = TransportSpec::Local;
        let ids: Vec<String> = scope.iter().map(|r| r.id(None)).collect();
        let items: Vec<Item> = scope
            .iter()
            .zip(&ids)
            .map(|(r, id)| Item {
                id,
                kind: r.kind(),
                node: None,
                transport: &transport,
                resource: r.as_resource(),
            })
            .collect();
        self.backend.preflight(&items)
    }

    /// Runs `work` under the state lock; on failure tears down what it created, in reverse.
    /// `scope`: the resources `work` may make, checked before anything is touched.
    fn transaction(
        &self,
        scope: &[&ResourceSpec],
        work: impl FnOnce(&Run) -> Result<()>,
    ) -> Result<Summary> {
        self.preflight(scope)?;
        let lock = StateLock::acquire(&self.names)?;
        let run = self.open_run()?;
        run.journal.lock().unwrap().save()?;
        let cause = match work(&run) {
            Ok(()) => return Ok(run.summary.into_inner().unwrap()),
            Err(cause) if run.created.lock().unwrap().is_empty() => cause,
            Err(cause) => Error::RolledBack {
                source: Box::new(cause),
                failures: run.rollback(),
            },
        };
        // Nothing of the cluster exists (any more): leave no state behind either.
        let journal = run.journal.into_inner().unwrap();
        if journal.data.entries.is_empty() {
            if let Err(e) = self.after_teardown() {
                tracing::warn!("{e}");
            }
            journal.delete()?;
            self.remove_state(lock);
        }
        Err(cause)
    }

    /// What the backend cleans up once the cluster's resources are gone.
    fn after_teardown(&self) -> Result<()> {
        let kinds = self.plan.kinds();
        self.backend
            .after_teardown(&kinds)
            .map_err(|e| teardown_incomplete(vec![e]))
    }

    /// Once the journal is gone: the directories sftsan made, the lock file and (when
    /// empty) the state directory.
    fn remove_state(&self, lock: StateLock) {
        remove_state_dirs(&self.names, self.plan.nodes.iter().map(|n| n.name.as_str()));
        lock.remove();
        let _ = std::fs::remove_dir(self.names.state_dir());
    }

    /// The cluster's own resources, then the given levels of nodes in order.
    fn apply(&self, run: &Run, levels: &[Vec<usize>]) -> Result<()> {
        for r in &self.plan.cluster_stack {
            run.ensure(None, r)?;
        }
        for level in levels {
            let nodes: Vec<&NodePlan> = level.iter().map(|&i| &self.plan.nodes[i - 1]).collect();
            bounded(&nodes, self.plan.parallelism, |node| {
                node.stack
                    .iter()
                    .try_for_each(|r| run.ensure(Some(&node.name), r))
            })?;
        }
        Ok(())
    }

    /// Tears down everything the journal names plus everything the plan would create
    /// (in case the journal was lost), children before parents.
    pub fn down(&self) -> Result<Summary> {
        let lock = StateLock::acquire(&self.names)?;
        let run = self.open_run()?;
        add_planned_entries(&run, &self.plan, None);
        teardown_all(&run, self.plan.parallelism)?;
        self.after_teardown()?;
        run.journal.lock().unwrap().delete()?;
        self.remove_state(lock);
        Ok(run.summary.into_inner().unwrap())
    }
}

/// Adds planned resources the journal does not name (as "creating": they may exist), so
/// that teardown after a lost journal leaks nothing; tearing down an absent one is a no-op.
/// `only`: one node's resources; None: the cluster's and every node's.
fn add_planned_entries(run: &Run, plan: &Plan, only: Option<&str>) {
    let mut j = run.journal.lock().unwrap();
    if only.is_none() {
        for r in &plan.cluster_stack {
            let id = r.id(None);
            if j.get(&id).is_none() {
                j.data.entries.insert(0, planned_entry(id, None, r));
            }
        }
    }
    for node in plan
        .nodes
        .iter()
        .filter(|n| only.is_none_or(|o| o == n.name))
    {
        for r in &node.stack {
            let id = r.id(Some(&node.name));
            if j.get(&id).is_none() {
                j.data.entries.push(planned_entry(id, Some(&node.name), r));
            }
        }
    }
}

fn planned_entry(id: String, node: Option<&str>, r: &ResourceSpec) -> Entry {
    Entry {
        id,
        node: node.map(String::from),
        state: EntryState::Creating,
        resource: r.clone(),
        runtime: BTreeMap::new(),
    }
}

/// Node entries level by level from the leaves up (a level's nodes in parallel, each
/// node's entries newest first), then the cluster's own entries newest first.
fn teardown_all(run: &Run, parallelism: usize) -> Result<()> {
    let (levels, entries) = {
        let j = run.journal.lock().unwrap();
        (j.data.levels.clone(), j.data.entries.clone())
    };
    let mut failures = Mutex::new(Vec::new());
    let mut ordered_nodes: Vec<Vec<String>> = levels.into_iter().rev().collect();
    // Nodes the journal knows but the level list does not (e.g. removed from the spec).
    let known: Vec<String> = ordered_nodes.concat();
    let strays: Vec<String> = entries
        .iter()
        .filter_map(|e| e.node.clone())
        .filter(|n| !known.contains(n))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    ordered_nodes.insert(0, strays);
    for level in ordered_nodes {
        let _ = bounded(&level, parallelism, |node| {
            for e in entries
                .iter()
                .rev()
                .filter(|e| e.node.as_deref() == Some(node.as_str()))
            {
                if let Err(f) = run.remove(e, false) {
                    failures.lock().unwrap().push(f);
                    break; // what lies below a failed resource cannot be removed safely
                }
            }
            Ok(())
        });
    }
    for e in entries.iter().rev().filter(|e| e.node.is_none()) {
        if let Err(f) = run.remove(e, false) {
            failures.get_mut().unwrap().push(f);
        }
    }
    let failures = failures.into_inner().unwrap();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(teardown_incomplete(failures))
    }
}

/// Removes the journal's entries of `node`, newest first; stops at the first that fails,
/// since what lies below a resource that could not be removed must stay.
fn remove_node_entries(run: &Run, node: &str) -> Result<()> {
    let entries = run.journal.lock().unwrap().data.entries.clone();
    for e in entries
        .iter()
        .rev()
        .filter(|e| e.node.as_deref() == Some(node))
    {
        run.remove(e, false)
            .map_err(|f| teardown_incomplete(vec![f]))?;
    }
    Ok(())
}

fn teardown_incomplete(failures: Vec<Error>) -> Error {
    Error::Incomplete {
        what: "teardown".into(),
        failures,
    }
}

/// Removes the directories sftsan made for the cluster's nodes (in the state directory and
/// in `cache.dir`) once they are empty.
fn remove_state_dirs<'a>(names: &Names, nodes: impl Iterator<Item = &'a str>) {
    let mut cache_parent = None;
    for node in nodes {
        let _ = std::fs::remove_dir(names.snapshot_dir(node));
        let _ = std::fs::remove_dir(names.run_dir(node));
        let cache = names.cache_dir(node);
        let _ = std::fs::remove_dir(&cache);
        cache_parent = cache.parent().map(PathBuf::from);
    }
    // `<cache.dir>/<cluster>` (or the state directory's `nodes`).
    if let Some(dir) = cache_parent {
        let _ = std::fs::remove_dir(dir);
    }
    for d in [
        names.state_dir().join("run"),
        names.state_dir().join("nodes"),
    ] {
        let _ = std::fs::remove_dir(d);
    }
}

#[cfg(test)]
mod tests;
