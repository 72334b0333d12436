//! A node's relay export: its cached copy of the image, read-only, for children and VMs.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::qapi::{BlockExportAdd, BlockExportOptions};
use super::{connect, delete_export, export_exists, graph, require, teardown_in_daemon};
use crate::error::Result;
use crate::resources::{Ctx, Observed, Params, Resource};

/// A node's read-only NBD export of its cached image, for its children and its VMs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelayExport {
    /// Name of the node (from the spec) that relays.
    pub node: String,
    /// The node's runtime directory, holding its daemon's QMP socket.
    pub run_dir: PathBuf,
    /// Name of the NBD export (the image's name, as on every node).
    pub export: String,
}

impl Resource for RelayExport {
    fn desired(&self) -> Params {
        vec![]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let Some(mut qmp) = connect(&self.run_dir)? else {
            return Ok(Observed::Absent);
        };
        Ok(if export_exists(&mut qmp, graph::RELAY_EXPORT_ID)? {
            Observed::Present(vec![])
        } else {
            Observed::Absent
        })
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let mut qmp = require(&self.run_dir, &self.node)?;
        qmp.run(&BlockExportAdd(BlockExportOptions::Nbd {
            id: graph::RELAY_EXPORT_ID.into(),
            node_name: graph::COR.into(),
            name: self.export.clone(),
            writable: false,
        }))?;
        Ok(())
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        teardown_in_daemon(&self.run_dir, |qmp| {
            delete_export(qmp, graph::RELAY_EXPORT_ID)
        })
    }
}
