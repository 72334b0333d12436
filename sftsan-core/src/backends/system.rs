//! The real host as the engine's [`Backend`]: every item is made by its own resource's
//! code, and before a run the kernel is probed for what the items need. This module
//! composes the backend families; the families never import each other.

use std::sync::Arc;
use std::time::Duration;

use crate::backends::kernel::{initiator, probe};
use crate::error::{Error, Result};
use crate::resources::{Backend, Ctx, Item, Observed, Params, Tools};

/// The real host as the engine's backend: each item's own resource code makes it.
pub struct SystemBackend {
    tools: Arc<Tools>,
}

impl SystemBackend {
    /// A backend whose resources run the external programs in `tools`.
    pub fn new(tools: Tools) -> SystemBackend {
        SystemBackend {
            tools: Arc::new(tools),
        }
    }

    fn ctx(&self, item: &Item) -> Ctx {
        Ctx {
            transport: item.transport.open(),
            tools: self.tools.clone(),
        }
    }
}

impl Backend for SystemBackend {
    fn observe(&self, item: &Item) -> Result<Observed> {
        item.resource.observe(&self.ctx(item))
    }

    fn create(&self, item: &Item) -> Result<()> {
        item.resource.create(&self.ctx(item))
    }

    fn revive(&self, item: &Item) -> Result<()> {
        item.resource.revive(&self.ctx(item))
    }

    fn teardown(&self, item: &Item) -> Result<()> {
        item.resource.teardown(&self.ctx(item))
    }

    fn runtime(&self, item: &Item) -> Params {
        item.resource.runtime()
    }

    /// The kernel has every feature the items need (named with its module when not), and
    /// each item's own checks pass.
    fn preflight(&self, items: &[Item]) -> Result<()> {
        let wanted = probe::features_for(items.iter().map(|i| i.kind));
        if !wanted.is_empty() {
            if let Some(why) = probe::report(&probe::missing(&wanted)) {
                return Err(Error::unsupported("this host's kernel", why));
            }
        }
        items.iter().try_for_each(|i| i.resource.preflight())
    }

    /// Stops the iscsid sftsan started for its sessions once the kernel has none left
    /// (another cluster's may still need it), and never one sftsan did not start.
    fn after_teardown(&self, kinds: &[&str]) -> Result<()> {
        if kinds.contains(&"iscsi-session") && initiator::sessions().is_empty() {
            initiator::stop_started_iscsid(Duration::from_secs(10))
                .map_err(|e| e.context("iscsid"))?;
        }
        Ok(())
    }
}
