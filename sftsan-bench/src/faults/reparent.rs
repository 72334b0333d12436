//! Re-parent times: `sftsan status --json`, polled during the fault, gives each child of
//! the faulted node its upstream link's `last_reparent_unix_ms` (absent until nodes have
//! an upstream switch); the re-parent time is that minus the fault's injection time.

use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::cli::Cli;

/// Longest one `status` may take: a status stuck on a wedged daemon is a failed poll.
const STATUS_TIMEOUT: Duration = Duration::from_secs(10);
const POLL_EVERY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone, Serialize)]
pub struct ChildReparent {
    pub node: String,
    /// Its first re-parent at or after the fault, as status reported it.
    pub at_unix_ms: Option<u64>,
    /// That minus the fault's injection time.
    pub after_ms: Option<u64>,
    /// The upstream it reads from, as last reported.
    pub current: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Reparents {
    pub children: Vec<ChildReparent>,
    pub polls: u32,
    /// The longest one `status --json` took.
    pub slowest_poll_s: f64,
    /// Polls that failed or timed out, and the last reason.
    pub failed_polls: u32,
    pub last_problem: Option<String>,
}

impl Reparents {
    /// Nothing seen yet of `children`.
    fn watching(children: Vec<String>) -> Reparents {
        Reparents {
            children: children
                .into_iter()
                .map(|node| ChildReparent {
                    node,
                    at_unix_ms: None,
                    after_ms: None,
                    current: None,
                })
                .collect(),
            polls: 0,
            slowest_poll_s: 0.0,
            failed_polls: 0,
            last_problem: None,
        }
    }
}

impl Reparents {
    /// When the last child had moved: `None` unless every child did.
    pub fn time_ms(&self) -> Option<u64> {
        if self.children.is_empty() {
            return None;
        }
        let all: Option<Vec<u64>> = self.children.iter().map(|c| c.after_ms).collect();
        all?.into_iter().max()
    }

    /// Reads one `status --json` output.
    fn update(&mut self, json: &serde_json::Value, since_unix_ms: u64) {
        let nodes = json["nodes"].as_array().cloned().unwrap_or_default();
        for child in &mut self.children {
            let Some(n) = nodes.iter().find(|n| n["name"] == child.node.as_str()) else {
                continue;
            };
            let link = &n["upstream"];
            if let Some(current) = link["current"].as_str() {
                child.current = Some(current.to_string());
            }
            let at = link["last_reparent_unix_ms"].as_u64();
            if child.at_unix_ms.is_none() {
                if let Some(at) = at.filter(|&at| at >= since_unix_ms) {
                    child.at_unix_ms = Some(at);
                    child.after_ms = Some(at - since_unix_ms);
                }
            }
        }
    }
}

pub struct Poller {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Reparents>,
}

impl Poller {
    /// Polls until [`Poller::finish`]: one status at a time, each bounded.
    pub fn start(cli: Cli, children: Vec<String>, since_unix_ms: u64) -> Poller {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut r = Reparents::watching(children);
            loop {
                let stopping = flag.load(Ordering::SeqCst);
                // One last poll after the stop when a child has not been seen moving: the
                // time is recorded by the switch, so a late answer still gives it.
                if stopping && r.time_ms().is_some() {
                    break;
                }
                let started = Instant::now();
                r.polls += 1;
                let problem = match cli.run(&["status", "--json"], STATUS_TIMEOUT) {
                    Ok(o) if o.ok => match serde_json::from_str(&o.stdout) {
                        Ok(json) => {
                            r.update(&json, since_unix_ms);
                            None
                        }
                        Err(e) => Some(format!("status --json: {e}")),
                    },
                    Ok(o) => Some(format!(
                        "status --json after {:.1} s: {}",
                        o.seconds, o.message
                    )),
                    Err(e) => Some(format!("{e:#}")),
                };
                r.slowest_poll_s = r.slowest_poll_s.max(started.elapsed().as_secs_f64());
                if let Some(p) = problem {
                    r.failed_polls += 1;
                    r.last_problem = Some(p);
                }
                if stopping {
                    break;
                }
                let next = started + POLL_EVERY;
                while !flag.load(Ordering::SeqCst) && Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            r
        });
        Poller { stop, thread }
    }

    pub fn finish(self) -> Reparents {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("the status poller panicked")
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reparents(children: &[&str]) -> Reparents {
        Reparents::watching(children.iter().map(|c| c.to_string()).collect())
    }

    #[test]
    fn a_reparent_counts_from_the_fault_and_only_once_every_child_moved() {
        let mut r = reparents(&["n3", "n4"]);
        // Before the switch: no `upstream` at all.
        r.update(&serde_json::json!({"nodes": [{"name": "n3"}]}), 1000);
        assert_eq!(r.time_ms(), None);
        // n3 moved before the fault (an earlier move): not this fault's.
        let status = |n3: u64, n4: Option<u64>| {
            let mut n4_link = serde_json::json!({"current": "n1", "planned": "n1"});
            if let Some(at) = n4 {
                n4_link = serde_json::json!({"current": "origin", "last_reparent_unix_ms": at});
            }
            serde_json::json!({"nodes": [
                {"name": "n3", "upstream": {"current": "origin", "last_reparent_unix_ms": n3}},
                {"name": "n4", "upstream": n4_link},
            ]})
        };
        r.update(&status(900, None), 1000);
        assert_eq!(r.children[0].after_ms, None);
        r.update(&status(1800, None), 1000);
        assert_eq!(r.children[0].after_ms, Some(800));
        assert_eq!(r.time_ms(), None, "n4 has not moved yet");
        r.update(&status(1800, Some(3500)), 1000);
        assert_eq!(r.time_ms(), Some(2500));
        assert_eq!(r.children[1].current.as_deref(), Some("origin"));
        // A later move (back to the parent) does not replace the first.
        r.update(&status(9000, Some(9000)), 1000);
        assert_eq!(r.time_ms(), Some(2500));
        assert_eq!(reparents(&[]).time_ms(), None);
    }
}
