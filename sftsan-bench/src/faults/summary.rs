//! What the readers saw, summed up: errors, wrong bytes, the longest stall (the slowest
//! read, and the longest time a reader went without a good read), per node and over time.

use serde::Serialize;
use std::collections::BTreeMap;

use super::reader::{Outcome, ReaderLog};

/// Width of a timeline bucket, in seconds.
const BUCKET_S: f64 = 0.5;
const MESSAGES: usize = 8;

#[derive(Debug, Clone, Default, Serialize)]
pub struct NodeReads {
    pub reads: u64,
    pub errors: u64,
    pub hung: u64,
    pub wrong_reads: u64,
}

/// Good and failed reads completed in one bucket; `t` is its start, in seconds from
/// the fault (negative before it).
#[derive(Debug, Clone, Serialize)]
pub struct Bucket {
    pub t: f64,
    pub ok: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReadStats {
    pub readers: usize,
    pub reads: u64,
    pub ok: u64,
    /// Good reads completed after the fault.
    pub ok_after_fault: u64,
    /// Reads that failed (EIO, ...).
    pub errors: u64,
    /// Reads still outstanding when the readers stopped (counted as errors too).
    pub hung: u64,
    /// Reads whose data differed from the image.
    pub wrong_reads: u64,
    /// Bytes of those reads: qemu-io's pattern check names the range, not each byte.
    pub wrong_bytes: u64,
    /// Bytes read and found identical to the image.
    pub good_bytes: u64,
    pub max_latency_s: f64,
    pub p50_latency_ms: f64,
    pub p99_latency_ms: f64,
    /// The longest time one reader went without a good read (from its first).
    pub longest_gap_s: f64,
    /// Readers that ended by themselves, and why.
    pub fatal: Vec<String>,
    /// Distinct failure messages, the first few.
    pub messages: Vec<String>,
    pub per_node: BTreeMap<String, NodeReads>,
    pub timeline: Vec<Bucket>,
}

impl ReadStats {
    /// Every read a VM would have seen fail: errors, and reads that never completed.
    pub fn read_errors(&self) -> u64 {
        self.errors + self.hung
    }
}

/// `fault_at`: seconds since the run's start when the fault was injected (the timeline's
/// zero).
pub fn summarize(logs: &[ReaderLog], fault_at: f64) -> ReadStats {
    let mut s = ReadStats {
        readers: logs.len(),
        ..ReadStats::default()
    };
    let mut latencies = Vec::new();
    let mut buckets: BTreeMap<i64, (u64, u64)> = BTreeMap::new();
    for log in logs {
        let node = s.per_node.entry(log.node.clone()).or_default();
        let mut last_good: Option<f64> = None;
        for r in &log.reads {
            s.reads += 1;
            node.reads += 1;
            latencies.push(r.latency);
            match r.outcome {
                Outcome::Ok => {
                    s.ok += 1;
                    s.good_bytes += r.len;
                    s.ok_after_fault += u64::from(r.end() >= fault_at);
                    if let Some(prev) = last_good {
                        s.longest_gap_s = s.longest_gap_s.max(r.end() - prev);
                    }
                    last_good = Some(r.end());
                }
                Outcome::Wrong => {
                    s.wrong_reads += 1;
                    s.wrong_bytes += r.len;
                    node.wrong_reads += 1;
                }
                Outcome::Error => {
                    s.errors += 1;
                    node.errors += 1;
                }
                Outcome::Hung => {
                    s.hung += 1;
                    node.hung += 1;
                }
            }
            let bucket = ((r.end() - fault_at) / BUCKET_S).floor() as i64;
            let b = buckets.entry(bucket).or_default();
            if r.outcome == Outcome::Ok {
                b.0 += 1;
            } else {
                b.1 += 1;
            }
        }
        // A reader that stopped, or stalled up to its stop, went without since its last.
        if let Some(prev) = last_good {
            s.longest_gap_s = s.longest_gap_s.max(log.ended - prev);
        }
        if let Some(why) = &log.fatal {
            s.fatal
                .push(format!("{} {}: {why}", log.node, log.disk.display()));
        }
        for m in &log.messages {
            if s.messages.len() < MESSAGES && !s.messages.contains(m) {
                s.messages.push(m.clone());
            }
        }
    }
    latencies.sort_by(f64::total_cmp);
    let quantile = |q: f64| {
        if latencies.is_empty() {
            0.0
        } else {
            latencies[((latencies.len() - 1) as f64 * q).round() as usize]
        }
    };
    s.max_latency_s = latencies.last().copied().unwrap_or(0.0);
    s.p50_latency_ms = quantile(0.5) * 1e3;
    s.p99_latency_ms = quantile(0.99) * 1e3;
    if let (Some(&first), Some(&last)) = (buckets.keys().next(), buckets.keys().last()) {
        s.timeline = (first..=last)
            .map(|k| {
                let (ok, failed) = buckets.get(&k).copied().unwrap_or_default();
                Bucket {
                    t: k as f64 * BUCKET_S,
                    ok,
                    failed,
                }
            })
            .collect();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::faults::reader::Read;

    fn read(start: f64, latency: f64, outcome: Outcome) -> Read {
        Read {
            start,
            latency,
            len: 4096,
            outcome,
        }
    }

    #[test]
    fn stalls_errors_and_wrong_bytes_are_counted() {
        let a = ReaderLog {
            node: "n2".into(),
            disk: "a".into(),
            reads: vec![
                read(0.0, 0.1, Outcome::Ok),
                read(0.1, 0.1, Outcome::Ok),
                // A 3 s read, then an error, then good again.
                read(0.2, 3.0, Outcome::Ok),
                read(3.2, 0.1, Outcome::Error),
                read(3.3, 0.1, Outcome::Wrong),
                read(3.4, 0.1, Outcome::Ok),
            ],
            messages: vec!["read failed: Input/output error".into()],
            ended: 3.6,
            fatal: None,
        };
        let b = ReaderLog {
            node: "n3".into(),
            disk: "b".into(),
            reads: vec![read(0.0, 0.5, Outcome::Ok), read(1.0, 4.0, Outcome::Hung)],
            messages: vec![],
            ended: 5.0,
            fatal: None,
        };
        let s = summarize(&[a, b], 1.0);
        assert_eq!((s.reads, s.ok, s.errors, s.hung), (8, 5, 1, 1));
        // Ends at 3.2 s and 3.5 s, after the fault at 1.0 s.
        assert_eq!(s.ok_after_fault, 2);
        assert_eq!(s.read_errors(), 2);
        assert_eq!((s.wrong_reads, s.wrong_bytes), (1, 4096));
        assert!((s.max_latency_s - 4.0).abs() < 1e-9);
        // Reader b: good at 0.5 s, nothing good until it stopped at 5.0 s.
        assert!((s.longest_gap_s - 4.5).abs() < 1e-9, "{}", s.longest_gap_s);
        assert_eq!(s.per_node["n3"].hung, 1);
        assert_eq!(s.messages.len(), 1);
        let total: u64 = s.timeline.iter().map(|b| b.ok + b.failed).sum();
        assert_eq!(total, 8);
        assert!(
            s.timeline[0].t < 0.0,
            "the timeline starts before the fault"
        );
    }
}
