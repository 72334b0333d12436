//! A node's cache: a qcow2 file (no backing in its header) opened with the upstream as
//! backing, under a copy-on-read filter, so every block read once is kept locally.
//!
//! The file outlives its daemon: after a crash the next `up` reopens it and serves what the
//! keeper had flushed. A sidecar records which image the cache holds; a cache of another
//! image is never served.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::qapi::{BlockdevAdd, BlockdevOptions, Driver};
use super::{block_nodes, connect, delete_nodes, find_node, graph, require, teardown_in_daemon};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::prune_dirs;
use crate::fsutil::{remove_file_if_exists, write_atomic};
use crate::resources::{Ctx, Observed, Params, Resource, Tools};
use crate::transport::run;

/// A node's qcow2 cache of the image in its storage daemon, filled by copy-on-read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cache {
    /// Name of the node (from the spec) whose cache this is.
    pub node: String,
    /// The node's runtime directory, holding its daemon's QMP socket.
    pub run_dir: PathBuf,
    /// Path of the qcow2 cache file, e.g. `<cache dir>/<image>.cache.qcow2`.
    pub file: PathBuf,
    /// The image's size: the cache's virtual size.
    pub size: u64,
    /// What image the cache holds (size, modification time, a digest of its ends).
    pub identity: String,
    /// Directories sftsan made for the file, removed on teardown when empty.
    pub prune: Vec<PathBuf>,
}

/// The qcow2 node's options. The keeper reopens the node with exactly these to flush it.
pub fn cache_node_options(size: u64) -> BlockdevOptions {
    // One L2 entry (8 bytes) maps a 64 KiB cluster: keep the whole map in memory.
    let l2 = (size / 8192).next_multiple_of(65536).max(1 << 20);
    BlockdevOptions {
        node_name: graph::CACHE.into(),
        read_only: false,
        driver: Driver::Qcow2 {
            file: graph::CACHE_FILE.into(),
            backing: Some(graph::UPSTREAM.into()),
            l2_cache_size: Some(l2),
        },
    }
}

impl Cache {
    fn identity_file(&self) -> PathBuf {
        let mut name = self.file.file_name().unwrap_or_default().to_os_string();
        name.push(".identity");
        self.file.with_file_name(name)
    }

    fn stored_identity(&self) -> Option<String> {
        std::fs::read_to_string(self.identity_file())
            .ok()
            .map(|s| s.trim().to_string())
    }

    fn make_file(&self, ctx: &Ctx) -> Result<()> {
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        // Created under a temporary name and renamed, so a crash never leaves a cache file
        // without its identity.
        let tmp = tmp_path(&self.file);
        remove_file_if_exists(&tmp)?;
        run(
            &*ctx.transport,
            Tools::program(&ctx.tools.qemu_img),
            ["create", "-q", "-f", "qcow2"]
                .iter()
                .map(|s| s.to_string())
                .chain([tmp.display().to_string(), self.size.to_string()]),
        )?;
        write_atomic(&self.identity_file(), self.identity.as_bytes())?;
        std::fs::rename(&tmp, &self.file).at(&self.file)?;
        Ok(())
    }
}

fn tmp_path(p: &Path) -> PathBuf {
    let mut name = p.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    p.with_file_name(name)
}

impl Resource for Cache {
    fn desired(&self) -> Params {
        vec![("identity", self.identity.clone())]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        if !self.file.exists() {
            return Ok(Observed::Absent);
        }
        let identity = self.stored_identity().unwrap_or_else(|| "(unknown)".into());
        if identity != self.identity {
            return Ok(Observed::Present(vec![("identity", identity)]));
        }
        let Some(mut qmp) = connect(&self.run_dir)? else {
            // The file alone is not in use; `create` reopens it and keeps what it holds.
            return Ok(Observed::Absent);
        };
        let nodes = block_nodes(&mut qmp)?;
        let present =
            [graph::CACHE_FILE, graph::CACHE, graph::COR].map(|n| find_node(&nodes, n).is_some());
        Ok(match present {
            [true, true, true] => Observed::Present(vec![("identity", identity)]),
            [false, false, false] => Observed::Absent,
            _ => Observed::Partial("cache block nodes half set up".into()),
        })
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        match self.stored_identity() {
            _ if !self.file.exists() => self.make_file(ctx)?,
            Some(id) if id == self.identity => {
                tracing::info!("{}: reusing cache {}", self.node, self.file.display())
            }
            other => {
                return Err(Error::corrupt(
                    format!("cache {}", self.file.display()),
                    format!(
                        "holds image {} but the image is now {}; run `sftsan down` to discard it",
                        other.unwrap_or_else(|| "(unknown)".into()),
                        self.identity
                    ),
                ))
            }
        }
        let mut qmp = require(&self.run_dir, &self.node)?;
        let steps = [
            BlockdevOptions {
                node_name: graph::CACHE_FILE.into(),
                read_only: false,
                driver: Driver::File {
                    filename: self.file.clone(),
                },
            },
            cache_node_options(self.size),
            BlockdevOptions {
                node_name: graph::COR.into(),
                read_only: false,
                driver: Driver::CopyOnRead {
                    file: graph::CACHE.into(),
                },
            },
        ];
        for options in steps {
            if let Err(e) = qmp.run(&BlockdevAdd(options)) {
                let _ = delete_nodes(&mut qmp, &[graph::COR, graph::CACHE, graph::CACHE_FILE]);
                return Err(e);
            }
        }
        Ok(())
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        teardown_in_daemon(&self.run_dir, |qmp| {
            delete_nodes(qmp, &[graph::COR, graph::CACHE, graph::CACHE_FILE])
        })?;
        remove_file_if_exists(&self.file)?;
        remove_file_if_exists(&tmp_path(&self.file))?;
        remove_file_if_exists(&self.identity_file())?;
        prune_dirs(&self.prune);
        Ok(())
    }
}
