//! Typed resources: each knows how to create, tear down and observe itself.
//!
//! The engine calls `observe` first: an absent resource is created, a present one with the
//! same parameters is left alone ("unchanged"), a present one with other parameters is an
//! error naming the difference, and a partial one is torn down and created again.
//! Tearing down an absent resource does nothing.

use std::path::PathBuf;
use std::sync::Arc;

use crate::transport::{Transport, TransportSpec};

/// The parameters that identify a resource, as (name, value) pairs in a fixed order.
pub type Params = Vec<(&'static str, String)>;

/// What `observe` found of a resource on the system.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observed {
    /// Nothing of it exists.
    Absent,
    /// It exists and works, with these parameters (compared with [`Resource::desired`]).
    Present(Params),
    /// Some of it exists, but not in a state that can be used or adopted.
    Partial(String),
}

pub use crate::error::{Error, Result};

/// External programs resources run, resolved once.
#[derive(Debug, Clone)]
pub struct Tools {
    /// `qemu-storage-daemon`, which runs a node's userspace storage stack.
    pub storage_daemon: PathBuf,
    /// `qemu-img`, which makes and inspects qcow2 files.
    pub qemu_img: PathBuf,
    /// iproute2's `ip`, which sets up local mode's namespaces, links and routes.
    pub ip: PathBuf,
    /// iproute2's `tc`, which shapes local-mode links (`local.link_mbit`).
    pub tc: PathBuf,
    /// The `sftsan` executable, which hosts the cache keeper (`sftsan keeper`).
    pub sftsan: PathBuf,
}

impl Tools {
    /// Programs from PATH; `sftsan` from $SFTSAN_BIN, else this executable's directory.
    pub fn from_env() -> Tools {
        let sftsan = std::env::var_os("SFTSAN_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let exe = std::env::current_exe().ok()?;
                let dir = exe.parent()?;
                let here = dir.join("sftsan");
                let up = dir.parent()?.join("sftsan"); // test binaries live in target/*/deps
                [here, up].into_iter().find(|p| p.is_file())
            })
            .unwrap_or_else(|| PathBuf::from("sftsan"));
        Tools {
            storage_daemon: "qemu-storage-daemon".into(),
            qemu_img: "qemu-img".into(),
            ip: "ip".into(),
            tc: "tc".into(),
            sftsan,
        }
    }

    /// A tool's path as an argv word; empty if it is not valid UTF-8.
    pub fn program(path: &std::path::Path) -> &str {
        path.to_str().unwrap_or("")
    }
}

/// What a resource operation needs: where its node's commands run, and which programs.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// Where the node's commands run (the host or the node's network namespace).
    pub transport: Arc<dyn Transport>,
    /// The external programs to run.
    pub tools: Arc<Tools>,
}

/// Something sftsan makes on a system (a daemon, an export, a dm device, a namespace),
/// with the parameters it was planned with.
pub trait Resource {
    /// The parameters this resource is asked to have.
    fn desired(&self) -> Params;
    /// Finds out whether the resource exists, and with which parameters.
    fn observe(&self, ctx: &Ctx) -> Result<Observed>;
    /// Makes the resource, once `observe` found it absent (or partial and torn down).
    fn create(&self, ctx: &Ctx) -> Result<()>;
    /// Removes the resource, or whatever part of it exists; nothing to do when it is absent.
    fn teardown(&self, ctx: &Ctx) -> Result<()>;

    /// Makes again a resource the journal says was made but whose system objects are gone
    /// (after a reboot), keeping what its local stores hold: a cache's blocks, a VM's
    /// writes. Resources that hold nothing of their own are simply created.
    fn revive(&self, ctx: &Ctx) -> Result<()> {
        self.create(ctx)
    }

    /// Facts of the running resource worth recording in the journal (pids, sockets).
    fn runtime(&self) -> Params {
        vec![]
    }

    /// Checks on the host that it can be made, before anything of a run is touched (a
    /// named block device exists and is large enough).
    fn preflight(&self) -> Result<()> {
        Ok(())
    }
}

/// One resource as the engine hands it to a [`Backend`]: its identity and the resource.
pub struct Item<'a> {
    /// Unique within a cluster: `<node>/<kind>`, `<node>/snapshot/<n>`, `cluster/<kind>`.
    pub id: &'a str,
    /// The kind, as journaled (`daemon`, `dm-cache`, ...).
    pub kind: &'static str,
    /// The node it belongs to; `None` for the cluster's own resources.
    pub node: Option<&'a str>,
    /// Where its commands run.
    pub transport: &'a TransportSpec,
    /// The resource itself, with its planned parameters.
    pub resource: &'a dyn Resource,
}

/// Where the engine makes resources: the real system (daemons, kernel objects) or a
/// simulation for testing the engine. The engine decides order, journaling and rollback;
/// a backend only makes, observes and removes one item at a time.
pub trait Backend: Send + Sync {
    /// Finds out whether `item` exists, and with which parameters.
    fn observe(&self, item: &Item) -> Result<Observed>;
    /// Makes `item`, which `observe` found absent (or partial and torn down).
    fn create(&self, item: &Item) -> Result<()>;
    /// Makes again what the journal says was made but is gone (a reboot), over what its
    /// stores kept.
    fn revive(&self, item: &Item) -> Result<()>;
    /// Removes `item`, or whatever part of it exists; nothing to do when it is absent.
    fn teardown(&self, item: &Item) -> Result<()>;
    /// Facts of a made item worth journaling (pids, sockets).
    fn runtime(&self, item: &Item) -> Params;
    /// Checks that the host can make `items`, before anything is touched.
    fn preflight(&self, items: &[Item]) -> Result<()>;
    /// Cleans up after a cluster of these kinds was torn down (daemons sftsan started for
    /// it that nothing uses any more).
    fn after_teardown(&self, kinds: &[&str]) -> Result<()>;
}

/// The first parameter that differs between what is there and what is wanted.
pub fn first_difference(have: &Params, want: &Params) -> Option<(&'static str, String, String)> {
    want.iter().find_map(|(name, w)| {
        let h = have.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        match h {
            Some(h) if &h == w => None,
            h => Some((*name, h.unwrap_or_else(|| "(none)".into()), w.clone())),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn difference_names_the_field() {
        let want = vec![("port", "10809".to_string()), ("host", "a".to_string())];
        let have = vec![("port", "10809".to_string()), ("host", "b".to_string())];
        assert_eq!(
            first_difference(&have, &want),
            Some(("host", "b".to_string(), "a".to_string()))
        );
        assert_eq!(first_difference(&want, &want), None);
        assert_eq!(first_difference(&vec![], &want).map(|d| d.0), Some("port"));
    }
}
