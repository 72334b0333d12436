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
    let error = link_pair(plan, node, index).and_then(|pair| {
        let mut args: Vec<String> = vec!["compare".into(), "-q".into()];
        if let Some(creds) = pair.credentials {
            args.extend(["--object".into(), creds]);
        }
        args.extend([
            "-f".into(),
            pair.format.into(),
            "-F".into(),
            "raw".into(),
            pair.first,
            pair.parent,
        ]);
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

/// What `verify_link` compares.
struct LinkPair {
    /// The format of `first`.
    format: &'static str,
    /// The node's side: the image file (origin), or a VM disk (a compute node).
    first: String,
    /// The export it must equal, as a filename `qemu-img` opens.
    parent: String,
    /// `--object` of the TLS credentials the parent's export asks for (remote mode).
    credentials: Option<String>,
}

/// An NBD export as a `qemu-img` filename; `tls` names the credentials object.
fn nbd_filename(server: serde_json::Value, export: &str, tls: Option<&str>) -> String {
    let mut file = serde_json::json!({"driver": "nbd", "server": server, "export": export});
    if let Some(id) = tls {
        file["tls-creds"] = id.into();
    }
    format!("json:{}", serde_json::json!({ "file": file }))
}

fn link_pair(plan: &Plan, node: &str, index: u32) -> Result<LinkPair, String> {
    let n = plan
        .node(node)
        .ok_or_else(|| format!("no node {node:?} in the plan"))?;
    let inet = |addr: std::net::IpAddr, port: u16| serde_json::json!({"type": "inet", "host": addr.to_string(), "port": port.to_string()});
    if n.parent.is_none() {
        let source = n.stack.iter().find_map(|r| match r {
            ResourceSpec::OriginExport(o) => Some(o.source.display().to_string()),
            _ => None,
        });
        let daemon = n.stack.iter().find_map(|r| match r {
            ResourceSpec::Daemon(d) => Some(d),
            _ => None,
        });
        return match (source, daemon) {
            (Some(source), Some(d)) => Ok(LinkPair {
                format: "raw",
                first: source,
                parent: match &d.socket {
                    Some(socket) => nbd_filename(
                        serde_json::json!({"type": "unix", "path": socket}),
                        &plan.image,
                        None,
                    ),
                    None => nbd_filename(inet(n.address, d.port), &plan.image, None),
                },
                credentials: None,
            }),
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
        (Some(u), Some(s)) => Ok(LinkPair {
            format: "qcow2",
            first: s.file.display().to_string(),
            parent: nbd_filename(
                inet(u.host, u.port),
                &u.export,
                u.tls.as_ref().map(|_| "link"),
            ),
            credentials: u.tls.as_ref().map(|key| {
                serde_json::to_string(&key.credentials("link")).expect("strings serialize")
            }),
        }),
        _ => Err(format!(
            "{node}: checks a qcow2 snapshot {index} against an NBD parent only (userspace backend, NBD origin)"
        )),
    }
}
