//! The origin's export: the base image, read-only, over NBD.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

use super::qapi::{BlockExportAdd, BlockExportOptions, BlockdevAdd, BlockdevOptions, Driver};
use super::{
    block_nodes, connect, delete_export, delete_nodes, export_exists, find_node, graph, require,
    teardown_in_daemon,
};
use crate::error::Result;
use crate::resources::{Ctx, Observed, Params, Resource};

/// The origin's NBD export of the base image, read-only, in its storage daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OriginExport {
    /// Name of the node (from the spec) of the origin.
    pub node: String,
    /// The node's runtime directory, holding its daemon's QMP socket.
    pub run_dir: PathBuf,
    /// Path of the base image file (the spec's `image.source`).
    pub source: PathBuf,
    /// Name of the NBD export (the image's name).
    pub export: String,
}

impl Resource for OriginExport {
    fn desired(&self) -> Params {
        vec![("source", self.source.display().to_string())]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let Some(mut qmp) = connect(&self.run_dir)? else {
            return Ok(Observed::Absent);
        };
        let nodes = block_nodes(&mut qmp)?;
        let exported = export_exists(&mut qmp, graph::ORIGIN_EXPORT_ID)?;
        match (find_node(&nodes, graph::ORIGIN_FILE), exported) {
            (None, false) => Ok(Observed::Absent),
            (Some(file), true) => Ok(Observed::Present(vec![("source", file.file.clone())])),
            _ => Ok(Observed::Partial(
                "image node and export out of step".into(),
            )),
        }
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let mut qmp = require(&self.run_dir, &self.node)?;
        let is_block = std::fs::metadata(&self.source)
            .map(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
            .unwrap_or(false);
        let filename = self.source.clone();
        let file = BlockdevOptions {
            node_name: graph::ORIGIN_FILE.into(),
            read_only: true,
            driver: if is_block {
                Driver::HostDevice { filename }
            } else {
                Driver::File { filename }
            },
        };
        let raw = BlockdevOptions {
            node_name: graph::ORIGIN.into(),
            read_only: true,
            driver: Driver::Raw {
                file: graph::ORIGIN_FILE.into(),
            },
        };
        let export = BlockExportOptions::Nbd {
            id: graph::ORIGIN_EXPORT_ID.into(),
            node_name: graph::ORIGIN.into(),
            name: self.export.clone(),
            writable: false,
        };
        let made = qmp
            .run(&BlockdevAdd(file))
            .and_then(|_| qmp.run(&BlockdevAdd(raw)))
            .and_then(|_| qmp.run(&BlockExportAdd(export)));
        if let Err(e) = made {
            let _ = self.teardown(_ctx);
            return Err(e);
        }
        Ok(())
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        teardown_in_daemon(&self.run_dir, |qmp| {
            delete_export(qmp, graph::ORIGIN_EXPORT_ID)?;
            delete_nodes(qmp, &[graph::ORIGIN, graph::ORIGIN_FILE])
        })
    }
}
