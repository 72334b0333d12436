//! The controller's `up`, `down` and `status` of a remote cluster: each host runs its own
//! node (`sftsan host apply`), parents before children and the hosts of a tree level side
//! by side for `up`, children first for `down`, every host at once for `status`.

use std::time::Duration;

use super::check::remote_program;
use super::fleet::Fleet;
use super::host::{HostAction, HostEvent, HostRequest};
use super::link_keys::LinkKeyStore;
use crate::error::{Error, Result};
use crate::names::Names;
use crate::plan::{self, Plan};
use crate::spec::{ClusterSpec, MeasuredImage, ValidatedSpec};
use crate::status::{ClusterStatus, NodeState, NodeStatus};
use crate::transport::ssh::SshHost;

/// Longest a host may take to bring its node up or down.
const APPLY_TIMEOUT: Duration = Duration::from_secs(600);

/// Told of each host's outcome as it finishes (from the threads working on hosts).
pub type OnHost = dyn Fn(&HostOutcome) + Sync;

/// What happened on one host.
#[derive(Debug)]
pub struct HostOutcome {
    /// The node the host runs.
    pub node: String,
    /// Every step the host reported, in order.
    pub events: Vec<HostEvent>,
    /// `Ok` when the host finished the request.
    pub result: Result<()>,
}

/// A remote cluster as the controller drives it: its spec, the image as measured on the
/// origin's host, and its plan.
pub struct Remote<'a> {
    spec_text: String,
    validated: ValidatedSpec,
    plan: Plan,
    fleet: &'a Fleet,
    /// The sftsan each host runs, as its check found it (node -> program).
    programs: std::collections::HashMap<String, String>,
}

impl<'a> Remote<'a> {
    /// The cluster of `spec` (its TOML `spec_text`), whose image `image` measured, on
    /// hosts as `checked` found them.
    pub fn new(
        spec_text: &str,
        image: MeasuredImage,
        fleet: &'a Fleet,
        checked: &[super::HostCheck],
    ) -> Result<Remote<'a>> {
        let spec = ClusterSpec::from_toml(spec_text).map_err(Error::from)?;
        let validated = ValidatedSpec::measured(spec, image).map_err(Error::from)?;
        let plan = plan::plan(&validated);
        let programs = checked
            .iter()
            .map(|r| (r.node.clone(), r.program.clone()))
            .collect();
        Ok(Remote {
            spec_text: spec_text.into(),
            validated,
            plan,
            fleet,
            programs,
        })
    }

    /// The cluster's plan.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Brings every host's node up, level by level. Stops after the first level where a
    /// host failed (that host rolled back; the others keep what they made, and the next
    /// `up` completes them), returning every host's outcome so far. Each host gets its
    /// links' keys, made on the first `up` and kept by the controller.
    pub fn up(&self, on_host: &OnHost) -> Result<Vec<HostOutcome>> {
        let keys = LinkKeyStore::open(&self.names(), &self.plan)?;
        Ok(self.by_levels(
            self.plan.setup_order(),
            Some(&keys),
            HostAction::Up,
            on_host,
        ))
    }

    /// Takes every host's node down, children first; once every host is down, the
    /// controller forgets the links' keys.
    pub fn down(&self, on_host: &OnHost) -> Result<Vec<HostOutcome>> {
        let mut levels = self.plan.setup_order();
        levels.reverse();
        let outcomes = self.by_levels(levels, None, HostAction::Down, on_host);
        if outcomes.iter().all(|o| o.result.is_ok()) {
            LinkKeyStore::forget(&self.names())?;
        }
        Ok(outcomes)
    }

    fn names(&self) -> Names {
        Names::new(self.validated.spec())
    }

    /// Checks every node against its parent, parents first (so that each level finds
    /// its parents' caches warm): every node's snapshot `index` reads back the image.
    pub fn verify(&self, index: u32) -> Vec<crate::verify::Verified> {
        let mut results = vec![];
        for level in self.plan.setup_order() {
            let outcomes = self.fleet.each_of(&level, |node, host| {
                self.request(node, host, HostAction::Verify, index, None)
            });
            results.extend(outcomes.into_iter().map(|o| {
                let verified = o.events.iter().find_map(|e| match e {
                    HostEvent::Verified {
                        snapshot,
                        seconds,
                        error,
                    } => Some(crate::verify::Verified {
                        node: o.node.clone(),
                        snapshot: *snapshot,
                        seconds: *seconds,
                        error: error.clone(),
                    }),
                    _ => None,
                });
                verified.unwrap_or_else(|| crate::verify::Verified {
                    node: o.node.clone(),
                    snapshot: index,
                    seconds: 0.0,
                    error: Some(match &o.result {
                        Err(e) => e.to_string(),
                        Ok(()) => "its host sent no result".into(),
                    }),
                })
            }));
        }
        results
    }

    fn by_levels(
        &self,
        levels: Vec<Vec<String>>,
        keys: Option<&LinkKeyStore>,
        action: HostAction,
        on_host: &OnHost,
    ) -> Vec<HostOutcome> {
        let mut all = vec![];
        for level in levels {
            let outcomes = self.fleet.each_of(&level, |node, host| {
                let outcome = self.request(node, host, action, 1, keys);
                on_host(&outcome);
                outcome
            });
            let failed = outcomes.iter().any(|o| o.result.is_err());
            all.extend(outcomes);
            if failed {
                break;
            }
        }
        all
    }

    /// Every node as its host observes it; a host that cannot be asked gets a row saying
    /// why.
    pub fn status(&self) -> ClusterStatus {
        let names: Vec<String> = self.plan.nodes.iter().map(|n| n.name.clone()).collect();
        let rows = self.fleet.each_of(&names, |node, host| {
            self.request(node, host, HostAction::Status, 1, None)
        });
        let nodes = self
            .plan
            .nodes
            .iter()
            .map(|n| {
                let outcome = rows.iter().find(|o| o.node == n.name);
                let reported = outcome.and_then(|o| {
                    o.events.iter().find_map(|e| match e {
                        HostEvent::Status { node } => Some((**node).clone()),
                        _ => None,
                    })
                });
                reported.unwrap_or_else(|| self.unknown_row(n, outcome))
            })
            .collect();
        ClusterStatus {
            cluster: self.plan.cluster.clone(),
            image: self.plan.image.clone(),
            image_bytes: self.plan.image_size,
            degree: self.plan.degree,
            nodes,
        }
    }

    /// The row of a node whose host did not answer (or that has none: external).
    fn unknown_row(&self, n: &crate::plan::NodePlan, outcome: Option<&HostOutcome>) -> NodeStatus {
        let problems = match outcome.map(|o| &o.result) {
            Some(Err(e)) => vec![e.to_string()],
            Some(Ok(())) => vec!["its host sent no status".into()],
            None => vec![],
        };
        NodeStatus {
            name: n.name.clone(),
            role: n.role,
            parent: n.parent.clone(),
            level: n.level,
            state: if n.stack.is_empty() {
                NodeState::External
            } else {
                NodeState::Down
            },
            resources_present: 0,
            resources_planned: n.stack.len(),
            cache_fill_bytes: 0,
            image_bytes: self.plan.image_size,
            upstream_bytes: 0,
            served_bytes: 0,
            snapshots: 0,
            upstream: None,
            problems,
        }
    }

    /// Sends one request to `node`'s host and reads its events.
    fn request(
        &self,
        node: &str,
        host: &SshHost,
        action: HostAction,
        snapshot: u32,
        keys: Option<&LinkKeyStore>,
    ) -> HostOutcome {
        let request = HostRequest {
            spec: self.spec_text.clone(),
            node: node.into(),
            image: self.validated.image().clone(),
            action,
            snapshot,
            keys: keys
                .map(|k| k.for_node(&self.plan, node))
                .unwrap_or_default(),
        };
        let input = serde_json::to_vec(&request).expect("a request serializes");
        let program = self
            .programs
            .get(node)
            .cloned()
            .unwrap_or_else(|| remote_program(self.validated.spec()));
        let mut outcome = HostOutcome {
            node: node.into(),
            events: vec![],
            result: Ok(()),
        };
        let here = format!("{node} ({})", host.destination());
        let out = match host.run(&[program.as_str(), "host", "apply"], &input, APPLY_TIMEOUT) {
            Ok(out) => out,
            Err(e) => {
                outcome.result = Err(e.context(here));
                return outcome;
            }
        };
        outcome.events = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let failed = outcome.events.iter().find_map(|e| match e {
            HostEvent::Failed { error, .. } => Some(error.clone()),
            _ => None,
        });
        let done = outcome
            .events
            .iter()
            .any(|e| matches!(e, HostEvent::Done { .. }));
        outcome.result = match (failed, done) {
            (Some(error), _) => Err(Error::refused(here, error)),
            (None, true) if out.status.success() => Ok(()),
            _ => {
                let last = super::check::said(&out.stderr);
                Err(Error::refused(
                    here,
                    format!(
                        "sftsan host apply ended without a result ({}): {last}",
                        out.status
                    ),
                ))
            }
        };
        outcome
    }
}

/// The image as the origin's host measured it (from `hosts check`'s facts), or as this
/// host measures it when no host holds it (an unmanaged origin).
pub fn measured_image(spec: &ClusterSpec, rows: &[super::HostCheck]) -> Result<MeasuredImage> {
    let origin = rows.iter().find(|r| r.node == spec.origin.name);
    match origin
        .and_then(|r| r.facts.as_ref())
        .and_then(|f| f.image.clone())
    {
        Some(Ok(image)) => Ok(image),
        Some(Err(why)) => Err(Error::invalid("image.source", why)),
        None => crate::spec::measure_image(&spec.image).map_err(Error::from),
    }
}
