//! A smoke test for a fresh cluster: every node reads a snapshot through its own network
//! (and so through its cache and its ancestors') and compares it with the base image.
//! A snapshot a VM has written to differs, as it should: run this before VMs start.

use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;

use crate::plan::Plan;
use crate::plan::ResourceSpec;
use crate::resources::{Ctx, Tools};
use crate::transport::run;

/// The result of reading one node's snapshot back and comparing it with the image.
#[derive(Debug, Clone, Serialize)]
pub struct Verified {
    /// The node's name, e.g. `n1`.
    pub node: String,
    /// Which snapshot was read (1-based index).
    pub snapshot: u32,
    /// How long the comparison took, in seconds.
    pub seconds: f64,
    /// None when the snapshot reads back the image; otherwise what went wrong.
    pub error: Option<String>,
}

/// Checks snapshot `index` of every node, level by level (parents first, so each level
/// finds its parents' caches warm), the nodes of a level in parallel.
pub fn verify(
    plan: &Plan,
    tools: Arc<Tools>,
    index: u32,
    source: &std::path::Path,
) -> Vec<Verified> {
    let mut results = Vec::new();
    for level in plan.setup_order() {
        let level_results: Vec<Verified> = std::thread::scope(|s| {
            let handles: Vec<_> = level
                .iter()
                .filter_map(|name| plan.node(name))
                .filter_map(|node| {
                    let snap = node.stack.iter().find_map(|r| match r {
                        ResourceSpec::Snapshot(s) if s.index == index => Some(s.clone()),
                        _ => None,
                    })?;
                    let ctx = Ctx {
                        transport: node.transport.open(),
                        tools: tools.clone(),
                    };
                    Some(s.spawn(move || {
                        let started = Instant::now();
                        let file = snap.file.display().to_string();
                        let base = source.display().to_string();
                        let args = ["compare", "-q", "-f", "qcow2", "-F", "raw", &file, &base];
                        let error = run(&*ctx.transport, Tools::program(&ctx.tools.qemu_img), args)
                            .err()
                            .map(|e| e.to_string());
                        Verified {
                            node: snap.node.clone(),
                            snapshot: index,
                            seconds: started.elapsed().as_secs_f64(),
                            error,
                        }
                    }))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("verify worker"))
                .collect()
        });
        results.extend(level_results);
    }
    results
}
