//! What a cluster looks like right now: per node, whether its stack is up, how full its
//! cache is, and how many bytes it fetched and served.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::sync::Arc;

use crate::backends::userspace::stats;
use crate::backends::userspace::switch::{report_file, Report};
use crate::plan::ResourceSpec;
use crate::plan::{Plan, Role};
use crate::resources::{Ctx, Observed, Tools};

/// Whether a node's planned stack exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NodeState {
    /// Every resource of its stack exists.
    Up,
    /// No resource of its stack exists.
    Down,
    /// Some of its stack exists: `up` completes it, `down` removes it.
    Partial,
    /// Run by someone else (an unmanaged origin).
    External,
}

/// One node as observed now.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeStatus {
    /// The node's name from the spec, e.g. `n1`.
    pub name: String,
    /// Whether it is the origin or a compute node.
    pub role: Role,
    /// The parent's node name; `None` for the origin.
    pub parent: Option<String>,
    /// Depth below the origin (the origin is level 0).
    pub level: usize,
    /// Whether its stack is up, down or partly there.
    pub state: NodeState,
    /// How many resources of its planned stack exist.
    pub resources_present: usize,
    /// How many resources its planned stack has.
    pub resources_planned: usize,
    /// Bytes of the image held in its cache; the whole image on the origin.
    pub cache_fill_bytes: u64,
    /// The image's size in bytes, to set `cache_fill_bytes` against.
    pub image_bytes: u64,
    /// Bytes received from upstream: by the node's upstream switch since it started (from
    /// whichever ancestor it read), else on the current connections to the parent.
    pub upstream_bytes: u64,
    /// Bytes sent from its export (to children and local VMs) on the current connections.
    pub served_bytes: u64,
    /// How many of its planned qcow2 snapshots (VM disks) exist.
    pub snapshots: usize,
    /// Where the node reads the image from now, for nodes with an upstream switch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<UpstreamLink>,
    /// Problems met while looking (a resource that could not be observed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub problems: Vec<String>,
}

/// A node's link to the tree above it, as its upstream switch reports it: where it reads
/// now, its planned parent, its moves (the last ones with their causes) and counters.
pub type UpstreamLink = Report;

/// The whole cluster as observed now.
#[derive(Debug, Clone, Serialize)]
pub struct ClusterStatus {
    /// The cluster's name (`cluster.name`).
    pub cluster: String,
    /// The image's name (`image.name`).
    pub image: String,
    /// The image's size in bytes.
    pub image_bytes: u64,
    /// Children per node (`cluster.degree`).
    pub degree: usize,
    /// Every node, origin first, in tree order.
    pub nodes: Vec<NodeStatus>,
}

/// Observes every planned resource; touches nothing.
pub fn status(plan: &Plan, tools: Arc<Tools>) -> ClusterStatus {
    let nodes = std::thread::scope(|s| {
        let handles: Vec<_> = plan
            .nodes
            .iter()
            .map(|node| {
                let tools = tools.clone();
                s.spawn(move || node_status(plan, node, tools))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("status worker"))
            .collect()
    });
    ClusterStatus {
        cluster: plan.cluster.clone(),
        image: plan.image.clone(),
        image_bytes: plan.image_size,
        degree: plan.degree,
        nodes,
    }
}

/// Observes one node's planned resources; touches nothing.
pub fn node_status(plan: &Plan, node: &crate::plan::NodePlan, tools: Arc<Tools>) -> NodeStatus {
    let node_ctx = Ctx {
        transport: node.transport.open(),
        tools: tools.clone(),
    };
    let root_ctx = Ctx {
        transport: crate::transport::TransportSpec::Local.open(),
        tools,
    };
    let mut problems = Vec::new();
    let mut present = 0;
    let mut snapshots = 0;
    for r in &node.stack {
        let ctx = if r.runs_on_node() {
            &node_ctx
        } else {
            &root_ctx
        };
        match r.as_resource().observe(ctx) {
            Ok(Observed::Present(_)) => {
                present += 1;
                snapshots += matches!(r, ResourceSpec::Snapshot(_)) as usize;
            }
            Ok(_) => {}
            Err(e) => problems.push(format!("{}: {e}", r.id(Some(&node.name)))),
        }
    }
    let state = match (node.stack.len(), present) {
        (0, _) => NodeState::External,
        (n, p) if p == n => NodeState::Up,
        (_, 0) => NodeState::Down,
        _ => NodeState::Partial,
    };
    let mut st = NodeStatus {
        name: node.name.clone(),
        role: node.role,
        parent: node.parent.clone(),
        level: node.level,
        state,
        resources_present: present,
        resources_planned: node.stack.len(),
        cache_fill_bytes: 0,
        image_bytes: plan.image_size,
        upstream_bytes: 0,
        served_bytes: 0,
        snapshots,
        upstream: None,
        problems,
    };
    if present == 0 {
        return st;
    }
    for r in &node.stack {
        match r {
            ResourceSpec::Cache(c) => match stats::cache_fill(&node_ctx, &c.file) {
                Ok(b) => st.cache_fill_bytes = b,
                Err(e) => st.problems.push(format!("cache fill: {e}")),
            },
            ResourceSpec::OriginExport(_) | ResourceSpec::OriginTarget(_) => {
                st.cache_fill_bytes = plan.image_size
            }
            _ => {}
        }
    }
    let port = node_port(node);
    let listen = SocketAddr::new(node.address, port);
    let parent = node.stack.iter().find_map(|r| match r {
        ResourceSpec::Upstream(u) => Some(SocketAddr::new(u.host, u.port)),
        _ => None,
    });
    match stats::traffic(&node_ctx, listen, parent) {
        Ok(t) => {
            st.upstream_bytes = t.upstream_bytes;
            st.served_bytes = t.served_bytes;
        }
        Err(e) => st.problems.push(format!("traffic: {e}")),
    }
    if let Some(s) = node.stack.iter().find_map(|r| match r {
        ResourceSpec::UpstreamSwitch(s) => Some(s),
        _ => None,
    }) {
        match Report::read(&report_file(&s.run_dir)) {
            Ok(Some(r)) => {
                // After a failover the parent's connection counts nothing: the switch
                // counts what came from every upstream.
                st.upstream_bytes = r.upstream_bytes;
                st.upstream = Some(r);
            }
            Ok(None) => {}
            Err(e) => st.problems.push(format!("upstream switch: {e}")),
        }
    }
    st
}

fn node_port(node: &crate::plan::NodePlan) -> u16 {
    node.stack
        .iter()
        .find_map(|r| match r {
            ResourceSpec::Daemon(d) => Some(d.port),
            ResourceSpec::OriginTarget(t) | ResourceSpec::TgtRelay(t) => Some(t.port),
            _ => None,
        })
        .unwrap_or(crate::spec::DEFAULT_PORT)
}
