//! The ways of getting one image to many VMs that the benchmark compares, run one at a time
//! on the same emulated network: how each builds its VMs' disks, then the boot storm.

use anyhow::{bail, Context, Result};
use indicatif::ProgressBar;
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::bed::{Bed, BedParams, Host};
use crate::boot::{boot, in_node, Boot, BootMode, Vm};
use crate::sampler::{Counter, Sample, Sampler};
use crate::workload::Workload;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Method {
    /// Every VM's overlay is backed by the origin's export directly (seed 001 "incremental").
    Central,
    /// Every node copies the whole image from the origin, then its VMs boot from the copy
    /// (seed 001 "clone").
    FullCopy,
    /// sftsan over a tree of this degree.
    Sftsan(u32),
}

/// A `--methods` word that names no method.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a method (central, full-copy, sftsan-D with D from 1 to 64)")]
pub struct UnknownMethod(String);

impl FromStr for Method {
    type Err = UnknownMethod;
    fn from_str(s: &str) -> Result<Method, UnknownMethod> {
        match s {
            "central" => Ok(Method::Central),
            "full-copy" => Ok(Method::FullCopy),
            _ => s
                .strip_prefix("sftsan-")
                .and_then(|d| d.parse().ok())
                .filter(|d| (1..=64).contains(d))
                .map(Method::Sftsan)
                .ok_or_else(|| UnknownMethod(s.into())),
        }
    }
}

impl std::fmt::Display for Method {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Method::Central => f.write_str("central"),
            Method::FullCopy => f.write_str("full-copy"),
            Method::Sftsan(d) => write!(f, "sftsan-{d}"),
        }
    }
}

/// Everything measured while one method ran; times in seconds since it started.
#[derive(Debug, Clone, Serialize)]
pub struct MethodRun {
    pub method: String,
    /// Until the last node's disks were ready (sftsan's `up`, full copy's slowest copy).
    pub prepare_s: f64,
    /// From the method's start to the last VM's boot.
    pub makespan_s: f64,
    pub boots: Vec<Boot>,
    /// Bytes the origin sent on its link.
    pub origin_egress: u64,
    /// The origin's children in the method's tree (every node for the baselines).
    pub origin_children: usize,
    /// Bytes each node received on its link.
    pub node_ingress: Vec<(String, u64)>,
    /// sftsan only: of the bytes nodes served (to VMs and children), the share that did
    /// not have to come from upstream (a lower bound; see [`hit_ratio`]).
    pub cache_hit_ratio: Option<f64>,
    /// Counters sampled during the run: index 0 is the origin's egress.
    pub samples: Vec<Sample>,
}

pub struct Run<'a> {
    pub params: &'a BedParams,
    pub workload: &'a Workload,
    pub mode: BootMode,
    pub timeout: Duration,
    pub tick: Duration,
    pub progress: ProgressBar,
}

impl Run<'_> {
    /// The method's cluster, planned (named after the method: one run's clusters never
    /// share names).
    fn bed(&self, method: Method) -> Result<Bed> {
        let (tag, degree) = match method {
            Method::Central => ("c".to_string(), self.params.nodes as u32),
            Method::FullCopy => ("f".to_string(), self.params.nodes as u32),
            Method::Sftsan(d) => (format!("s{d}"), d),
        };
        Bed::new(self.params, &tag, degree)
    }

    /// Removes what an interrupted earlier run of these methods left behind, before any
    /// of them starts: their clusters share the subnet.
    pub fn clear_leftovers(&self, methods: &[Method]) -> Result<()> {
        methods
            .iter()
            .try_for_each(|&m| self.bed(m)?.clear_leftovers())
    }

    pub fn method(&self, method: Method) -> Result<MethodRun> {
        let t0 = Instant::now();
        let mut bed = self.bed(method)?;
        let origin = bed.origin();
        let nodes = bed.nodes();
        let mut counters = vec![Counter::new(&origin.veth, "rx")];
        counters.extend(nodes.iter().map(|n| Counter::new(&n.veth, "tx")));
        let sampler = Sampler::start(counters, self.tick, t0);
        self.progress
            .set_length((nodes.len() as u64) * u64::from(self.params.vms_per_node));
        self.progress.set_message(format!("{method}: setting up"));
        let result = self.storm(method, &mut bed, &nodes, t0);
        let samples = sampler.finish();
        let (boots, prepare_s) = result?;
        let upstream = match method {
            Method::Sftsan(_) => Some(bed.upstream_bytes()),
            _ => None,
        };
        bed.down()?;
        let last = samples.last().context("no counter samples")?;
        let origin_children = nodes
            .iter()
            .filter(|n| n.parent.as_deref() == Some(&origin.name))
            .count();
        Ok(MethodRun {
            method: method.to_string(),
            prepare_s,
            makespan_s: boots.iter().map(|b| b.end).fold(0.0, f64::max),
            origin_egress: last.bytes[0],
            origin_children,
            node_ingress: nodes
                .iter()
                .zip(&last.bytes[1..])
                .map(|(n, b)| (n.name.clone(), *b))
                .collect(),
            cache_hit_ratio: upstream.map(|u| hit_ratio(&nodes, &boots, &u)),
            boots,
            samples,
        })
    }

    /// Brings the method's cluster up and boots every VM; returns the boots and when the
    /// last node's disks were ready.
    fn storm(
        &self,
        method: Method,
        bed: &mut Bed,
        nodes: &[Host],
        t0: Instant,
    ) -> Result<(Vec<Boot>, f64)> {
        match method {
            Method::Sftsan(_) => bed.up_sftsan()?,
            Method::Central | Method::FullCopy => bed.up_baseline()?,
        }
        let bed = &*bed;
        let up_s = t0.elapsed().as_secs_f64();
        self.progress.set_message(format!("{method}: booting"));
        let per_node: Vec<Result<(Vec<Boot>, f64)>> = std::thread::scope(|s| {
            let handles: Vec<_> = nodes
                .iter()
                .map(|node| s.spawn(move || self.node(method, bed, node, t0)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| bail!("a node's thread panicked"))
                })
                .collect()
        });
        let mut boots = Vec::new();
        let mut prepared_s = up_s;
        for r in per_node {
            let (node_boots, ready_s) = r?;
            boots.extend(node_boots);
            prepared_s = prepared_s.max(ready_s);
        }
        Ok((boots, prepared_s))
    }

    /// One node: its VMs' disks, then its VMs, all booting at once.
    fn node(
        &self,
        method: Method,
        bed: &Bed,
        node: &Host,
        t0: Instant,
    ) -> Result<(Vec<Boot>, f64)> {
        let m = self.params.vms_per_node;
        let disks: Vec<PathBuf> = match method {
            Method::Sftsan(_) => (1..=m).map(|i| bed.vm_disk(&node.name, i)).collect(),
            Method::Central => overlays(
                &bed.node_dir(&node.name),
                &bed.origin_backing(),
                self.workload,
                m,
            )?,
            Method::FullCopy => {
                let dir = bed.node_dir(&node.name);
                let copy = dir.join("image.raw");
                full_copy(&node.netns, &bed.origin_backing(), &copy)?;
                let backing =
                    serde_json::json!({"file": {"driver": "file", "filename": copy}}).to_string();
                overlays(&dir, &backing, self.workload, m)?
            }
        };
        let ready_s = t0.elapsed().as_secs_f64();
        let run_dir = bed.state_dir.join("bench").join("vms");
        let vms: Vec<Vm> = disks
            .into_iter()
            .enumerate()
            .map(|(i, disk)| Vm {
                name: format!("{}-vm{i}", node.name),
                node: node.name.clone(),
                netns: node.netns.clone(),
                disk,
                run_dir: run_dir.clone(),
            })
            .collect();
        let boots: Vec<Result<Boot>> = std::thread::scope(|s| {
            let handles: Vec<_> = vms
                .iter()
                .map(|vm| {
                    s.spawn(move || {
                        let b = boot(vm, self.workload, self.mode, t0, self.timeout);
                        self.progress.inc(1);
                        b
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| bail!("a VM's thread panicked")))
                .collect()
        });
        Ok((boots.into_iter().collect::<Result<_>>()?, ready_s))
    }
}

/// Creates `count` qcow2 overlays in `dir` over `backing` (a QEMU `json:` spec of a raw image).
fn overlays(dir: &Path, backing: &str, w: &Workload, count: u32) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    (0..count)
        .map(|i| {
            let file = dir.join(format!("vm{i}.qcow2"));
            let out = Command::new("qemu-img")
                .args(["create", "-q", "-u", "-f", "qcow2", "-F", "raw", "-b"])
                .arg(format!("json:{backing}"))
                .arg(&file)
                .arg(w.manifest.disk_bytes.to_string())
                .output()
                .context("cannot run qemu-img")?;
            if !out.status.success() {
                bail!(
                    "qemu-img create {}: {}",
                    file.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            Ok(file)
        })
        .collect()
}

/// Copies the whole image from the origin's export into `dest`, from the node's namespace.
fn full_copy(netns: &str, origin_backing: &str, dest: &Path) -> Result<()> {
    if let Some(dir) = dest.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let source: serde_json::Value = serde_json::from_str(origin_backing)?;
    let source = serde_json::json!({"driver": "raw", "file": source["file"]});
    let out = in_node(netns, "qemu-img")
        .args(["convert", "-O", "raw"])
        .arg(format!("json:{source}"))
        .arg(dest)
        .output()
        .context("cannot run qemu-img")?;
    if !out.status.success() {
        bail!(
            "copying the image to {}: {}",
            dest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// A lower bound of the nodes' byte hit ratio, 1 - fetched/served over all nodes (0 when
/// negative): served counts the nodes' VMs' reads and what their children fetched from
/// them; fetched what they took from their parents. Every fetched byte belongs to a miss,
/// but a miss fetches its whole 64 KiB cluster, so the true hit ratio is at least this.
fn hit_ratio(nodes: &[Host], boots: &[Boot], upstream: &[(String, u64)]) -> f64 {
    let fetched_by = |name: &str| {
        upstream
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, b)| *b)
    };
    let mut fetched = 0u64;
    let mut served = 0u64;
    for node in nodes {
        fetched += fetched_by(&node.name);
        served += boots
            .iter()
            .filter(|b| b.node == node.name)
            .map(|b| b.read_bytes)
            .sum::<u64>();
        served += nodes
            .iter()
            .filter(|c| c.parent.as_deref() == Some(&node.name))
            .map(|c| fetched_by(&c.name))
            .sum::<u64>();
    }
    if served == 0 {
        return 0.0;
    }
    (1.0 - fetched as f64 / served as f64).max(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(name: &str, parent: &str) -> Host {
        Host {
            name: name.into(),
            netns: String::new(),
            veth: String::new(),
            parent: Some(parent.into()),
        }
    }

    fn boot(node: &str, read_bytes: u64) -> Boot {
        Boot {
            vm: format!("{node}-vm"),
            node: node.into(),
            start: 0.0,
            end: 1.0,
            read_bytes,
        }
    }

    #[test]
    fn the_hit_ratio_counts_children_as_readers_and_is_never_negative() {
        let nodes = [host("n1", "origin"), host("n2", "n1")];
        let boots = [
            boot("n1", 10),
            boot("n1", 10),
            boot("n2", 10),
            boot("n2", 10),
        ];
        let upstream = [("n1".to_string(), 15), ("n2".to_string(), 15)];
        // n1 served 20 to its VMs and 15 to n2; n2 served 20: 30 of 55 were fetched.
        let ratio = hit_ratio(&nodes, &boots, &upstream);
        assert!((ratio - (1.0 - 30.0 / 55.0)).abs() < 1e-9, "{ratio}");
        let wasteful = [("n1".to_string(), 100), ("n2".to_string(), 100)];
        assert_eq!(hit_ratio(&nodes, &boots, &wasteful), 0.0);
        assert!("sftsan-0".parse::<Method>().is_err());
        assert_eq!("sftsan-4".parse::<Method>(), Ok(Method::Sftsan(4)));
        assert_eq!(Method::FullCopy.to_string(), "full-copy");
    }
}
