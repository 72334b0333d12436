//! Human-readable output: progress lines, the plan, the status table.

use std::fmt::Write;
use std::time::Duration;

use sftsan_core::engine::Event;
use sftsan_core::plan::Plan;
use sftsan_core::spec::ByteSize;
use sftsan_core::status::{ClusterStatus, NodeState};

pub fn progress_line(at: Duration, e: &Event) {
    let tag = if e.rollback { " (rollback)" } else { "" };
    sftsan_core::errln!(
        "[{:>6.1}s] {:<28} {:<9} {:>6.2}s{tag}",
        at.as_secs_f64(),
        e.id,
        e.action.as_str(),
        e.elapsed.as_secs_f64()
    );
}

/// The plan as text: the tree by level, each node with its stack.
pub fn plan_text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "cluster {}: image {} ({}), degree {}, {} nodes, {} levels",
        plan.cluster,
        plan.image,
        ByteSize(plan.image_size),
        plan.degree,
        plan.nodes.len(),
        plan.setup_order().len()
    );
    if !plan.cluster_stack.is_empty() {
        let ids: Vec<_> = plan.cluster_stack.iter().map(|r| r.kind()).collect();
        let _ = writeln!(out, "cluster: {}", ids.join(", "));
    }
    for (level, names) in plan.setup_order().iter().enumerate() {
        let _ = writeln!(out, "level {level}:");
        for name in names {
            let n = plan.node(name).expect("planned node");
            let parent = n
                .parent
                .as_deref()
                .map(|p| format!(" <- {p}"))
                .unwrap_or_default();
            let stack: Vec<String> = n
                .stack
                .iter()
                .map(|r| r.id(None).replace("cluster/", ""))
                .collect();
            let host = n
                .ssh
                .as_ref()
                .map(|d| format!(" via ssh {d}"))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "  {} ({}){host}{parent}: {}",
                n.name,
                n.address,
                stack.join(", ")
            );
        }
    }
    out
}

fn size(b: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b}B")
    } else {
        format!("{v:.1}{}", UNITS[u])
    }
}

/// The status table, one line per node and one per problem.
pub fn status_text(st: &ClusterStatus) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<12} {:<12} {:>5} {:<8} {:>14} {:>11} {:>11} {:>9}",
        "NODE", "PARENT", "LEVEL", "STATE", "CACHE", "UPSTREAM", "SERVED", "SNAPSHOTS"
    );
    for n in &st.nodes {
        let state = match n.state {
            NodeState::Up => "up",
            NodeState::Down => "down",
            NodeState::Partial => "partial",
            NodeState::External => "external",
        };
        let fill = match (n.cache_fill_bytes * 100).checked_div(n.image_bytes) {
            Some(pct) => format!("{} {pct:>3}%", size(n.cache_fill_bytes)),
            None => "-".into(),
        };
        let _ = writeln!(
            out,
            "{:<12} {:<12} {:>5} {:<8} {:>14} {:>11} {:>11} {:>9}",
            n.name,
            n.parent.as_deref().unwrap_or("-"),
            n.level,
            state,
            fill,
            size(n.upstream_bytes),
            size(n.served_bytes),
            n.snapshots
        );
        if let Some(line) = n.upstream.as_ref().and_then(upstream_line) {
            let _ = writeln!(out, "    {line}");
        }
        for p in &n.problems {
            let _ = writeln!(out, "    ! {p}");
        }
    }
    out
}

/// What a node's upstream switch did, when it did anything: where it reads now (if not
/// from its parent), how often it moved, and when and how fast it last did.
fn upstream_line(link: &sftsan_core::status::UpstreamLink) -> Option<String> {
    if link.failovers == 0 && link.current == link.planned && link.failed_requests == 0 {
        return None;
    }
    let reads = match link.current.as_str() {
        "" => "reads from no one (no upstream answers)".to_string(),
        c if c == link.planned => format!("reads from {c}"),
        c => format!("reads from {c}, not its parent {}", link.planned),
    };
    let mut line = format!("upstream: {reads}; {} move(s)", link.failovers);
    if let Some(at) = link.last_reparent_unix_ms {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let _ = write!(
            line,
            ", the last {:.0} s ago",
            now.saturating_sub(at) as f64 / 1000.0
        );
        if let Some(took) = link.last_reparent_took_ms {
            let _ = write!(line, " (took {took} ms)");
        }
    }
    if link.retried_requests > 0 || link.failed_requests > 0 {
        let _ = write!(
            line,
            "; {} request(s) retried, {} failed",
            link.retried_requests, link.failed_requests
        );
    }
    Some(line)
}

/// One `verify` result: `n1/snapshot/1: identical to ... (0.4s)`, `same` saying what a
/// good result is identical to.
pub fn verified_line(r: &sftsan_core::verify::Verified, same: &str) -> String {
    let outcome = r.error.as_deref().unwrap_or(same);
    format!(
        "{}/snapshot/{}: {outcome} ({:.1}s)",
        r.node, r.snapshot, r.seconds
    )
}

#[cfg(test)]
mod tests {
    use super::upstream_line;
    use sftsan_core::status::UpstreamLink;

    #[test]
    fn a_quiet_switch_adds_no_line_and_a_moved_one_says_where_it_reads() {
        let quiet = UpstreamLink {
            current: "n1".into(),
            planned: "n1".into(),
            ..UpstreamLink::default()
        };
        assert_eq!(upstream_line(&quiet), None);
        let moved = UpstreamLink {
            current: "origin".into(),
            failovers: 1,
            last_reparent_took_ms: Some(2005),
            last_reparent_unix_ms: Some(1),
            retried_requests: 3,
            ..quiet
        };
        let line = upstream_line(&moved).unwrap();
        assert!(
            line.starts_with("upstream: reads from origin, not its parent n1; 1 move(s)"),
            "{line}"
        );
        assert!(
            line.contains("(took 2005 ms)") && line.contains("3 request(s) retried, 0 failed"),
            "{line}"
        );
    }
}
