//! What a switch tells the rest of sftsan: where it reads from, how often it moved and why.
//! The switch rewrites this file (atomically) on every move and every few seconds; `status`
//! reads it. It is the node's record of its re-parents.

use serde::{Deserialize, Serialize};
use std::path::Path;

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// The moves a report keeps (newest last).
const KEPT_EVENTS: usize = 32;

/// One move from an upstream to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When the new link was in place, in milliseconds since the Unix epoch.
    pub at_unix_ms: u64,
    /// The node read from before (empty if none was).
    pub from: String,
    /// The node read from now.
    pub to: String,
    /// What made it move.
    pub cause: String,
    /// From the first sign of trouble (the failed request's sending) to the new link.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub took_ms: Option<u64>,
}

/// A switch's state as written to `switch.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The node read from now (empty while no upstream answers).
    pub current: String,
    /// The node's parent in the tree.
    pub planned: String,
    /// Moves so far (away and back).
    pub failovers: u64,
    /// When the last move happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reparent_unix_ms: Option<u64>,
    /// How long the last move took.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reparent_took_ms: Option<u64>,
    /// Requests sent again after their upstream failed.
    pub retried_requests: u64,
    /// Requests that failed for good.
    pub failed_requests: u64,
    /// Bytes read from upstreams.
    pub upstream_bytes: u64,
    /// The last moves, oldest first.
    #[serde(default)]
    pub events: Vec<Event>,
}

impl Report {
    pub(super) fn record(&mut self, event: Event) {
        self.failovers += 1;
        self.last_reparent_unix_ms = Some(event.at_unix_ms);
        self.last_reparent_took_ms = event.took_ms;
        self.events.push(event);
        if self.events.len() > KEPT_EVENTS {
            self.events.remove(0);
        }
    }

    /// Writes the report atomically.
    pub fn write(&self, path: &Path) -> Result<()> {
        let text = serde_json::to_vec_pretty(self).expect("plain data encodes");
        write_atomic(path, &text)
    }

    /// The report at `path`; `Ok(None)` when there is none.
    pub fn read(path: &Path) -> Result<Option<Report>> {
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::io(path, e)),
        };
        serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::corrupt(path.display().to_string(), e.to_string()))
    }
}
