//! The host's side of a remote cluster (`sftsan host apply`): the controller sends the
//! spec, the node this host runs, the image as the origin measured it and what to do, as
//! JSON on stdin; the host runs its own engine on its own node, journaling locally, and
//! writes every step and the outcome as JSON lines on stdout. A connection cut midway
//! leaves a journal that the next request resumes.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::cluster;
use crate::engine::{Event, Progress, Summary};
use crate::error::{Error, Result};
use crate::resources::Tools;
use crate::spec::{ClusterSpec, MeasuredImage, ValidatedSpec};
use crate::status::{self, NodeStatus};
use crate::verify;

use super::link_keys::{self, NodeLinkKeys};

/// What the controller asks a host to do with its node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HostAction {
    /// Bring the node's stack up (resuming whatever an earlier request left).
    Up,
    /// Tear the node's stack down.
    Down,
    /// Observe the node.
    Status,
    /// Check the node against its parent (`verify`; the origin against the image).
    Verify,
}

/// One request to a host.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRequest {
    /// The cluster's spec, as TOML.
    pub spec: String,
    /// The node this host runs.
    pub node: String,
    /// The image as the host holding it measured it.
    pub image: MeasuredImage,
    /// What to do.
    pub action: HostAction,
    /// Which VM disk `verify` reads.
    #[serde(default = "first_snapshot")]
    pub snapshot: u32,
    /// `up`: the pre-shared keys of the node's links (stdin is the only way keys travel).
    #[serde(default)]
    pub keys: NodeLinkKeys,
}

fn first_snapshot() -> u32 {
    1
}

/// One line of a host's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum HostEvent {
    /// A resource was dealt with (the engine's progress).
    Step {
        /// The resource's id, e.g. `n1/daemon`.
        id: String,
        /// What happened to it, e.g. `created`.
        action: String,
        /// Whether it undid what a failed request made.
        rollback: bool,
    },
    /// The node as observed (`status`).
    Status {
        /// The node's row.
        node: Box<NodeStatus>,
    },
    /// The node checked against its parent (`verify`).
    Verified {
        /// Which snapshot was read.
        snapshot: u32,
        /// How long it took, in seconds.
        seconds: f64,
        /// `None` when it reads back what its parent serves; else what went wrong.
        error: Option<String>,
    },
    /// The request succeeded.
    Done {
        /// Resources made.
        created: usize,
        /// Resources found already there.
        unchanged: usize,
        /// Resources removed.
        removed: usize,
    },
    /// The request failed; nothing it made is left (the engine rolled back).
    Failed {
        /// The error's kind, e.g. `unreachable`.
        kind: String,
        /// The error, in one line.
        error: String,
    },
}

/// Where a host's events go: called from the engine's worker threads.
pub type Emit = Arc<dyn Fn(&HostEvent) + Send + Sync>;

/// Carries out `request` on this host with `tools` (whose `sftsan` is the program serving
/// the request: a shipped copy has its own name), reporting each event to `emit` (a
/// failure is the caller's to report, as [`HostEvent::Failed`]).
pub fn serve(request: &HostRequest, tools: Tools, emit: Emit) -> Result<()> {
    let spec = ClusterSpec::from_toml(&request.spec).map_err(|e| Error::from(e).context("spec"))?;
    let validated = ValidatedSpec::measured(spec, request.image.clone())
        .map_err(|e| Error::from(e).context("spec"))?;
    let spec = validated.spec();
    if request.action == HostAction::Up {
        cluster::install(spec, &request.spec, &request.image)?;
        link_keys::install(
            &crate::names::Names::new(spec),
            &request.node,
            &request.keys,
        )?;
    }
    let progress: Progress = {
        let emit = emit.clone();
        Arc::new(move |e: &Event| {
            emit(&HostEvent::Step {
                id: e.id.clone(),
                action: e.action.as_str().to_string(),
                rollback: e.rollback,
            })
        })
    };
    let tools = Arc::new(tools);
    let engine = cluster::engine(&validated, (*tools).clone(), progress);
    let node = &request.node;
    let summary: Summary = match request.action {
        HostAction::Up => engine.up_only(node)?,
        HostAction::Down => {
            let summary = engine.down_only(node)?;
            link_keys::uninstall(&crate::names::Names::new(spec))?;
            cluster::uninstall(spec)?;
            summary
        }
        HostAction::Status => {
            let plan = engine.plan();
            let planned = plan
                .node(node)
                .ok_or_else(|| Error::not_found(format!("node {node:?}"), "not in the spec"))?;
            let row = status::node_status(plan, planned, tools.clone());
            emit(&HostEvent::Status {
                node: Box::new(row),
            });
            Summary::default()
        }
        HostAction::Verify => {
            let v = verify::verify_link(engine.plan(), node, tools.clone(), request.snapshot);
            emit(&HostEvent::Verified {
                snapshot: v.snapshot,
                seconds: v.seconds,
                error: v.error,
            });
            Summary::default()
        }
    };
    emit(&HostEvent::Done {
        created: summary.created,
        unchanged: summary.unchanged,
        removed: summary.removed,
    });
    Ok(())
}
