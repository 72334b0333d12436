//! What every run does around its faults: the cluster up with its guard route, readers on
//! the chosen nodes warmed up, how full their caches are, the bytes into their links.

use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::cluster::Testbed;
use super::image::BLOCK;
use super::reader::{ReaderLog, ReaderSpec, Readers};
use crate::relay_tls::interrupted;
use crate::sampler::Counter;

/// The run's timing, shared by single faults and chaos.
#[derive(Debug, Clone)]
pub struct Settings {
    pub warmup: Duration,
    pub window: Duration,
    /// How long a killed origin daemon or keeper stays dead before `up` revives it.
    pub hold: Duration,
    pub read_interval: Duration,
    pub up_timeout: Duration,
    pub down_timeout: Duration,
    /// Seeds the readers' sequences (and the chaos).
    pub seed: u64,
}

/// How long a stopping reader waits for a read still outstanding.
pub const STOP_GRACE: Duration = Duration::from_secs(1);

/// `up`, and its guard route checked: nothing may connect before the route is there.
pub fn up(bed: &Testbed, s: &Settings) -> Result<()> {
    bed.up_checked(s.up_timeout)?;
    if !bed.guard_route_present() {
        bail!(
            "{}: no unreachable route for {} after up",
            bed.name,
            bed.subnet
        );
    }
    Ok(())
}

/// One reader per VM disk of each node.
pub fn start_readers(bed: &Testbed, nodes: &[String], s: &Settings, t0: Instant) -> Readers {
    let blocks = bed.plan.image_size / BLOCK;
    let mut specs = Vec::new();
    for node in nodes {
        let info = bed.node(node);
        for disk in bed.disks(node) {
            let seed = s.seed ^ super::image::mix(specs.len() as u64);
            specs.push(ReaderSpec {
                node: node.clone(),
                netns: info.netns.clone(),
                disk,
                blocks,
                seed,
                interval: s.read_interval,
            });
        }
    }
    Readers::start(specs, t0)
}

/// Until every reader has read well once and the warm-up has passed. A reader that ends
/// (its disk cannot be opened) ends the run.
pub fn warm_up(readers: Readers, s: &Settings) -> Result<Readers, (Vec<ReaderLog>, String)> {
    let started = Instant::now();
    let deadline = started + s.warmup + Duration::from_secs(60);
    loop {
        if let Err(e) = interrupted() {
            return Err((readers.stop(STOP_GRACE), e.to_string()));
        }
        let ready = readers.ok_counts().iter().all(|&n| n > 0);
        if ready && started.elapsed() >= s.warmup {
            return Ok(readers);
        }
        if readers.any_ended() {
            return Err((readers.stop(STOP_GRACE), "a reader ended".into()));
        }
        if Instant::now() >= deadline {
            return Err((
                readers.stop(STOP_GRACE),
                "a reader has not read well 60 s after the warm-up".into(),
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Why a run's readers could not start: the fatal reasons they gave.
pub fn reader_failure(logs: &[ReaderLog], what: &str) -> anyhow::Error {
    let why: Vec<String> = logs
        .iter()
        .filter_map(|l| {
            l.fatal
                .as_ref()
                .map(|f| format!("{} {}: {f}", l.node, l.disk.display()))
        })
        .collect();
    anyhow::anyhow!("{what}: {}", why.join("; "))
}

/// How full each node's cache is (fraction of the image), from `status --json`.
pub fn cache_fill(bed: &Testbed, nodes: &[String]) -> BTreeMap<String, f64> {
    let mut fill = BTreeMap::new();
    let Ok(o) = bed.cli.run(&["status", "--json"], Duration::from_secs(10)) else {
        return fill;
    };
    let json: serde_json::Value = serde_json::from_str(&o.stdout).unwrap_or_default();
    for n in json["nodes"].as_array().into_iter().flatten() {
        let name = n["name"].as_str().unwrap_or_default();
        if nodes.iter().any(|x| x == name) {
            let cached = n["cache_fill_bytes"].as_f64().unwrap_or(0.0);
            let size = n["image_bytes"].as_f64().unwrap_or(1.0).max(1.0);
            fill.insert(name.to_string(), cached / size);
        }
    }
    fill
}

/// Bytes into the nodes' links (their veths' root ends transmit to them) since `new`.
pub struct Ingress {
    counters: Vec<(Counter, u64)>,
}

impl Ingress {
    pub fn new(bed: &Testbed, nodes: &[String]) -> Ingress {
        let counters = nodes
            .iter()
            .map(|n| {
                let c = Counter::new(&bed.node(n).veth, "tx");
                let base = c.read();
                (c, base)
            })
            .collect();
        Ingress { counters }
    }

    pub fn bytes(&self) -> u64 {
        self.counters
            .iter()
            .map(|(c, base)| c.read().saturating_sub(*base))
            .sum()
    }
}

/// Until `deadline`, unless interrupted: the measurement window itself.
pub fn wait_until(deadline: Instant) -> Result<()> {
    loop {
        interrupted()?;
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(());
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
}
