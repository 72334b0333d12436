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

/// Checks one node of a remote cluster on its own host, which has no copy of the image:
/// the origin's export against the image file, a compute node's snapshot `index` against
/// its parent's export. Every link equal to its parent makes every node equal the image;
/// run parents first.
pub fn verify_link(plan: &Plan, node: &str, tools: Arc<Tools>, index: u32) -> Verified {
    let started = Instant::now();
    let error = link_pair(plan, node, index).and_then(|(format, first, second)| {
        let args = ["compare", "-q", "-f", format, "-F", "raw", &first, &second];
        let local = crate::transport::TransportSpec::Local.open();
        run(&*local, Tools::program(&tools.qemu_img), args)
            .map(drop)
            .map_err(|e| e.to_string())
    });
    Verified {
        node: node.into(),
        snapshot: index,
        seconds: started.elapsed().as_secs_f64(),
        error: error.err(),
    }
}

/// What `verify_link` compares: (format of the first, the first, the parent's export).
fn link_pair(
    plan: &Plan,
    node: &str,
    index: u32,
) -> Result<(&'static str, String, String), String> {
    let n = plan
        .node(node)
        .ok_or_else(|| format!("no node {node:?} in the plan"))?;
    let url = |addr: std::net::IpAddr, port: u16, export: &str| {
        format!("nbd://{}/{export}", std::net::SocketAddr::new(addr, port))
    };
    if n.parent.is_none() {
        let source = n.stack.iter().find_map(|r| match r {
            ResourceSpec::OriginExport(o) => Some(o.source.display().to_string()),
            _ => None,
        });
        let port = n.stack.iter().find_map(|r| match r {
            ResourceSpec::Daemon(d) => Some(d.port),
            _ => None,
        });
        return match (source, port) {
            (Some(source), Some(port)) => Ok(("raw", source, url(n.address, port, &plan.image))),
            _ => Err(format!(
                "{node}: checks a managed NBD origin only (userspace backend)"
            )),
        };
    }
    let upstream = n.stack.iter().find_map(|r| match r {
        ResourceSpec::Upstream(u) if u.iscsi.is_none() => Some(u),
        _ => None,
    });
    let snapshot = n.stack.iter().find_map(|r| match r {
        ResourceSpec::Snapshot(s) if s.index == index => Some(s),
        _ => None,
    });
    match (upstream, snapshot) {
        (Some(u), Some(s)) => Ok((
            "qcow2",
            s.file.display().to_string(),
            url(u.host, u.port, &u.export),
        )),
        _ => Err(format!(
            "{node}: checks a qcow2 snapshot {index} against an NBD parent only (userspace backend, NBD origin)"
        )),
    }
}
