//! The engine on the simulated backend: order, rollback after a failure at each step, a
//! crash after each step and the run that resumes it, revival of what vanished, and
//! teardown order. No root, no daemons; the journal and lock are real files.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;

use super::*;
use crate::backends::sim::{Op, SimBackend};
use crate::error::ErrorKind;
use crate::spec::{validate, ClusterSpec};

/// A userspace cluster in host mode: origin and three nodes, degree 2 (three levels, two
/// nodes side by side on the second), a snapshot each. Nothing of it touches the host but
/// its state directory.
struct Fixture {
    dir: tempfile::TempDir,
    sim: Arc<SimBackend>,
}

impl Fixture {
    fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        std::fs::File::create(dir.path().join("base.raw"))
            .unwrap()
            .set_len(1 << 20)
            .unwrap();
        Fixture {
            dir,
            sim: Arc::new(SimBackend::new()),
        }
    }

    /// An engine over the fixture's state, as a new `sftsan` process would make it.
    fn engine(&self) -> Engine {
        let image = self.dir.path().join("base.raw");
        let mut text = format!(
            "[cluster]\nname = \"sim\"\nstate_dir = {:?}\nmode = \"host\"\ndegree = 2\n\
             [image]\nname = \"base\"\nsource = {image:?}\n\
             [origin]\naddress = \"127.0.0.1\"\n\
             [cache]\nsize = \"8MiB\"\n[snapshots]\nper_node = 1\n",
            self.dir.path().join("state"),
        );
        for i in 1..=3 {
            text += &format!(
                "[[nodes]]\nname = \"n{i}\"\naddress = \"127.0.0.{}\"\n",
                i + 1
            );
        }
        let spec = validate(ClusterSpec::from_toml(&text).unwrap()).unwrap();
        Engine::new(
            crate::plan::plan(&spec),
            Names::new(spec.spec()),
            self.sim.clone(),
            Arc::new(|_| {}),
        )
    }

    fn journal_exists(&self) -> bool {
        self.dir.path().join("state/journal.json").exists()
    }
}

/// Every planned id, in plan order: the cluster's, then node by node in setup order.
fn planned(engine: &Engine) -> Vec<String> {
    let plan = engine.plan();
    let mut ids: Vec<String> = plan.cluster_stack.iter().map(|r| r.id(None)).collect();
    for level in plan.setup_order() {
        for name in level {
            let node = plan.node(&name).unwrap();
            ids.extend(node.stack.iter().map(|r| r.id(Some(&node.name))));
        }
    }
    ids
}

fn created(sim: &SimBackend) -> Vec<String> {
    sim.log()
        .into_iter()
        .filter_map(|op| match op {
            Op::Create(id) => Some(id),
            _ => None,
        })
        .collect()
}

fn node_of(id: &str) -> &str {
    id.split('/').next().unwrap()
}

#[test]
fn up_makes_each_stack_in_order_and_parents_before_children() {
    let f = Fixture::new();
    let engine = f.engine();
    let summary = engine.up().unwrap();
    let all = planned(&engine);
    let made = created(&f.sim);
    assert_eq!(summary.created, all.len());
    let mut sorted_made = made.clone();
    sorted_made.sort();
    let mut sorted_all = all.clone();
    sorted_all.sort();
    assert_eq!(sorted_made, sorted_all, "each planned resource made once");
    // Within a node, the stack's order; a node starts after its parent is complete.
    let at = |id: &str| made.iter().position(|m| m == id).unwrap();
    let plan = engine.plan();
    for node in &plan.nodes {
        let ids: Vec<String> = node.stack.iter().map(|r| r.id(Some(&node.name))).collect();
        assert!(
            ids.windows(2).all(|w| at(&w[0]) < at(&w[1])),
            "{}: {ids:?} made out of order: {made:?}",
            node.name
        );
        if let Some(parent) = &node.parent {
            let parent_last = made.iter().rposition(|m| node_of(m) == parent).unwrap();
            assert!(at(&ids[0]) > parent_last, "{} before its parent", node.name);
        }
    }
    // A second up changes nothing.
    let again = engine.up().unwrap();
    assert_eq!((again.created, again.unchanged), (0, all.len()));
    assert_eq!(created(&f.sim).len(), all.len());
}

#[test]
fn a_failure_at_any_step_rolls_back_what_the_run_made() {
    let all = planned(&Fixture::new().engine());
    for (step, id) in all.iter().enumerate() {
        let f = Fixture::new();
        let engine = f.engine();
        f.sim.fail_create_of(id);
        let err = engine.up().unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Command, "{id}: {err}");
        assert!(err.to_string().contains(id.as_str()), "{err}");
        if step > 0 {
            assert!(matches!(err, Error::RolledBack { .. }), "{id}: {err}");
        }
        assert_eq!(f.sim.objects(), Vec::<String>::new(), "{id}: left behind");
        assert!(!f.journal_exists(), "{id}: the journal stayed");
        assert!(
            !f.dir.path().join("state").exists(),
            "{id}: state dir stayed"
        );
    }
}

#[test]
fn a_crash_after_any_step_is_resumed_by_the_next_up() {
    let all = planned(&Fixture::new().engine());
    for step in 1..=all.len() {
        let f = Fixture::new();
        f.sim.crash_after_creates(step);
        let crashed = catch_unwind(AssertUnwindSafe(|| f.engine().up()));
        if step < all.len() || crashed.is_err() {
            assert!(crashed.is_err(), "step {step}: the run did not crash");
        }
        // Nodes of one level run side by side: the others finish their stacks.
        let left = f.sim.objects().len();
        assert!(left >= step, "step {step}: what the crash left: {left}");
        assert!(
            f.journal_exists(),
            "step {step}: the journal names what may exist"
        );
        f.sim.clear_faults();
        let resumed = f.engine().up().unwrap();
        assert_eq!(
            (resumed.created, resumed.unchanged),
            (all.len() - left, left),
            "step {step}: the crashed item is adopted, never made twice"
        );
        assert_eq!(created(&f.sim).len(), all.len(), "step {step}");
        // And down after all that leaves nothing.
        f.engine().down().unwrap();
        assert_eq!(f.sim.objects(), Vec::<String>::new(), "step {step}");
        assert!(!f.journal_exists());
    }
}

#[test]
fn a_lost_daemon_is_revived_and_never_rolled_back() {
    let f = Fixture::new();
    let engine = f.engine();
    engine.up().unwrap();
    assert!(f.sim.lose("n3/daemon"));
    let again = engine.up().unwrap();
    assert_eq!(again.created, 1, "only the lost daemon");
    assert!(f.sim.log().contains(&Op::Revive("n3/daemon".into())));
    assert!(f.sim.object("n3/daemon").is_some());
    // A revive that is followed by a failure keeps the revived (its stores hold data):
    // the rollback removes only what the run created.
    assert!(f.sim.lose("n2/daemon"));
    f.sim.fail_create_of("n2/snapshot/3");
    let err = engine.ensure_snapshot("n2", 3).unwrap_err();
    assert!(err.to_string().contains("n2/snapshot/3"), "{err}");
    assert!(f.sim.object("n2/daemon").is_some(), "revived, then kept");
    assert!(f.sim.object("n2/snapshot/3").is_none());
}

#[test]
fn down_removes_children_before_parents_and_the_cluster_last() {
    let f = Fixture::new();
    let engine = f.engine();
    engine.up().unwrap();
    let summary = engine.down().unwrap();
    let removed: Vec<String> = f
        .sim
        .log()
        .into_iter()
        .filter_map(|op| match op {
            Op::Teardown(id) => Some(id),
            _ => None,
        })
        .collect();
    assert_eq!(summary.removed, planned(&engine).len());
    let plan = engine.plan();
    let first = |node: &str| removed.iter().position(|r| node_of(r) == node).unwrap();
    let last = |node: &str| removed.iter().rposition(|r| node_of(r) == node).unwrap();
    for node in &plan.nodes {
        let ids: Vec<String> = node.stack.iter().map(|r| r.id(Some(&node.name))).collect();
        let at = |id: &str| removed.iter().position(|r| r == id).unwrap();
        assert!(
            ids.windows(2).all(|w| at(&w[0]) > at(&w[1])),
            "{}: its stack is removed top down: {removed:?}",
            node.name
        );
        if let Some(parent) = &node.parent {
            assert!(
                last(&node.name) < first(parent),
                "{} after its parent",
                node.name
            );
        }
    }
    assert_eq!(f.sim.objects(), Vec::<String>::new());
    assert!(!f.journal_exists());
}

#[test]
fn a_refused_preflight_touches_nothing() {
    let f = Fixture::new();
    let engine = f.engine();
    f.sim.fail_preflight("no kernel for that");
    let err = engine.up().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unsupported, "{err}");
    assert!(f.sim.log().is_empty());
    assert!(!f.dir.path().join("state").exists());
}

/// A host of a remote cluster makes its own node's stack and nothing of its ancestors,
/// which are other hosts; its journal then holds that node only.
#[test]
fn up_only_makes_one_nodes_stack() {
    let f = Fixture::new();
    let engine = f.engine();
    let summary = engine.up_only("n3").unwrap();
    let n3 = engine.plan().node("n3").unwrap();
    let ids: Vec<String> = n3.stack.iter().map(|r| r.id(Some("n3"))).collect();
    assert_eq!(created(&f.sim), ids);
    assert_eq!(summary.created, ids.len());
    engine.down_only("n3").unwrap();
    assert!(f.sim.objects().is_empty(), "{:?}", f.sim.objects());
    assert!(
        !f.journal_exists(),
        "the host keeps no journal of a node it no longer runs"
    );
}
