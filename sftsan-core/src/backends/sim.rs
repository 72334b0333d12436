//! An in-memory backend for testing the engine in milliseconds, without root: every item
//! "exists" as an entry holding the parameters it was made with. Faults can be injected:
//! a create that fails, a crash (a panic, as `kill -9` ends a run: nothing rolled back)
//! right after the n-th create, and an object that vanishes (a killed daemon, a reboot).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use crate::error::{Error, Result};
use crate::resources::{Backend, Item, Observed, Params};

/// What the simulation did, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// The item of this id was created.
    Create(String),
    /// The item of this id was made again after it was lost.
    Revive(String),
    /// The item of this id was torn down (logged only when it existed).
    Teardown(String),
}

/// A made item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimObject {
    /// The item's kind, as journaled (`daemon`, `dm-cache`, ...).
    pub kind: &'static str,
    /// The node it belongs to; `None` for the cluster's own resources.
    pub node: Option<String>,
    /// The resource's desired parameters when it was made; observing returns them.
    pub params: Params,
}

#[derive(Debug, Default)]
struct State {
    objects: BTreeMap<String, SimObject>,
    log: Vec<Op>,
    creates: usize,
    fail_create: Option<String>,
    crash_after_creates: Option<usize>,
    fail_preflight: Option<String>,
}

/// The simulated host: made items live in memory, and faults can be injected.
#[derive(Debug, Default)]
pub struct SimBackend {
    state: Mutex<State>,
}

impl SimBackend {
    /// An empty simulation: nothing made, no faults.
    pub fn new() -> SimBackend {
        SimBackend::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A simulated crash unwinds while nothing holds the lock; stay usable regardless.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creating the item with this id fails (once per call, until cleared).
    pub fn fail_create_of(&self, id: &str) {
        self.state().fail_create = Some(id.into());
    }

    /// The run "crashes" (panics) right after the `n`-th successful create from now on:
    /// the object exists, the engine never hears of it.
    pub fn crash_after_creates(&self, n: usize) {
        let mut s = self.state();
        s.crash_after_creates = Some(s.creates + n);
    }

    /// The preflight refuses with this reason.
    pub fn fail_preflight(&self, why: &str) {
        self.state().fail_preflight = Some(why.into());
    }

    /// Removes every injected fault (failing create, crash, refused preflight).
    pub fn clear_faults(&self) {
        let mut s = self.state();
        s.fail_create = None;
        s.crash_after_creates = None;
        s.fail_preflight = None;
    }

    /// The object vanishes as a killed daemon or a rebooted kernel's objects do; returns
    /// whether it existed.
    pub fn lose(&self, id: &str) -> bool {
        self.state().objects.remove(id).is_some()
    }

    /// Ids of the objects that exist.
    pub fn objects(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    /// The object of this id, if it exists.
    pub fn object(&self, id: &str) -> Option<SimObject> {
        self.state().objects.get(id).cloned()
    }

    /// Everything done so far, in order.
    pub fn log(&self) -> Vec<Op> {
        self.state().log.clone()
    }

    fn make(&self, item: &Item, op: fn(String) -> Op) {
        let mut s = self.state();
        s.objects.insert(
            item.id.into(),
            SimObject {
                kind: item.kind,
                node: item.node.map(String::from),
                params: item.resource.desired(),
            },
        );
        s.log.push(op(item.id.into()));
    }
}

impl Backend for SimBackend {
    fn observe(&self, item: &Item) -> Result<Observed> {
        Ok(match self.state().objects.get(item.id) {
            Some(o) => Observed::Present(o.params.clone()),
            None => Observed::Absent,
        })
    }

    fn create(&self, item: &Item) -> Result<()> {
        if self.state().fail_create.as_deref() == Some(item.id) {
            return Err(Error::refused(item.id, "injected failure"));
        }
        self.make(item, Op::Create);
        let crash = {
            let mut s = self.state();
            s.creates += 1;
            s.crash_after_creates == Some(s.creates)
        };
        if crash {
            panic!("simulated crash right after creating {}", item.id);
        }
        Ok(())
    }

    fn revive(&self, item: &Item) -> Result<()> {
        self.make(item, Op::Revive);
        Ok(())
    }

    fn teardown(&self, item: &Item) -> Result<()> {
        let mut s = self.state();
        if s.objects.remove(item.id).is_some() {
            s.log.push(Op::Teardown(item.id.into()));
        }
        Ok(())
    }

    fn runtime(&self, _item: &Item) -> Params {
        vec![]
    }

    fn preflight(&self, _items: &[Item]) -> Result<()> {
        match &self.state().fail_preflight {
            Some(why) => Err(Error::unsupported("simulated host", why.clone())),
            None => Ok(()),
        }
    }

    fn after_teardown(&self, _kinds: &[&str]) -> Result<()> {
        Ok(())
    }
}
