//! The boot workload: the guest image that sftsan-bench/boot-image/build makes (kernel,
//! initramfs, ext4 disk and its manifest) and the boot trace recorded from it.

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The cache's cluster size: a node fetches whole 64 KiB clusters from its parent.
pub const CACHE_CLUSTER: u64 = 64 * 1024;

/// `manifest.json` of a built boot image.
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub kernel_version: String,
    pub vmlinuz: String,
    pub initrd: String,
    pub disk: String,
    pub disk_bytes: u64,
    pub trace: String,
    /// The machine part of every VM's QEMU command line.
    pub qemu_args: Vec<String>,
    /// Kernel command line; `{vm}` becomes the VM's name.
    pub append: String,
    /// The console line of a finished boot; `{vm}` becomes the VM's name.
    pub booted_marker: String,
    #[serde(default = "default_disk_device")]
    pub disk_device: String,
    pub working_set_files: u64,
    pub working_set_bytes: u64,
}

fn default_disk_device() -> String {
    "virtio-blk-pci".into()
}

/// One disk request of a recorded boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    pub write: bool,
    pub offset: u64,
    pub len: u64,
}

/// A boot's disk requests in the order the guest made them.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    pub ops: Vec<Op>,
}

impl Trace {
    /// Parses `R <offset> <bytes>` / `W <offset> <bytes>` lines; blank lines and `#` comments
    /// are skipped. Every request must lie inside a disk of `disk_bytes`.
    pub fn parse(text: &str, disk_bytes: u64) -> Result<Trace> {
        let mut ops = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || format!("trace line {}: {line:?}", i + 1);
            let mut fields = line.split_whitespace();
            let write = match fields.next() {
                Some("R") => false,
                Some("W") => true,
                _ => bail!("{}: expected R or W first", bad()),
            };
            let mut number = || -> Result<u64> {
                fields
                    .next()
                    .and_then(|f| f.parse().ok())
                    .with_context(|| format!("{}: expected <offset> <bytes>", bad()))
            };
            let (offset, len) = (number()?, number()?);
            if len == 0 || offset.checked_add(len).is_none_or(|end| end > disk_bytes) {
                bail!("{}: outside the {disk_bytes}-byte disk", bad());
            }
            ops.push(Op { write, offset, len });
        }
        if ops.is_empty() {
            bail!("the trace has no requests");
        }
        Ok(Trace { ops })
    }

    pub fn read_bytes(&self) -> u64 {
        self.ops.iter().filter(|o| !o.write).map(|o| o.len).sum()
    }

    pub fn reads(&self) -> usize {
        self.ops.iter().filter(|o| !o.write).count()
    }

    /// Bytes of the image a node's cache fetches for one boot: every request's range
    /// rounded out to whole clusters, counted once. Writes count too: a VM's overlay
    /// reads the rest of a cluster it partly writes from the cache.
    pub fn footprint(&self, cluster: u64) -> u64 {
        let mut ranges: Vec<(u64, u64)> = self
            .ops
            .iter()
            .map(|o| {
                let start = o.offset / cluster * cluster;
                let end = (o.offset + o.len).div_ceil(cluster) * cluster;
                (start, end)
            })
            .collect();
        ranges.sort_unstable();
        let mut total = 0;
        let mut covered_to = 0;
        for (start, end) in ranges {
            let start = start.max(covered_to);
            if end > start {
                total += end - start;
                covered_to = end;
            }
        }
        total
    }
}

/// A built boot image, checked complete.
#[derive(Debug, Clone)]
pub struct Workload {
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub trace: Trace,
}

impl Workload {
    pub fn load(dir: &Path) -> Result<Workload> {
        let manifest_path = dir.join("manifest.json");
        let text = std::fs::read_to_string(&manifest_path).with_context(|| {
            format!(
                "--image-dir: no boot image in {} (build it with sftsan-bench/boot-image/build)",
                dir.display()
            )
        })?;
        let manifest: Manifest = serde_json::from_str(&text)
            .with_context(|| format!("{}: not a boot image manifest", manifest_path.display()))?;
        for file in [
            &manifest.vmlinuz,
            &manifest.initrd,
            &manifest.disk,
            &manifest.trace,
        ] {
            if !dir.join(file).is_file() {
                bail!("--image-dir: {} lacks {file}", dir.display());
            }
        }
        let disk_bytes = std::fs::metadata(dir.join(&manifest.disk))?.len();
        if disk_bytes != manifest.disk_bytes {
            bail!(
                "--image-dir: {} is {disk_bytes} bytes, its manifest says {}",
                manifest.disk,
                manifest.disk_bytes
            );
        }
        let trace_path = dir.join(&manifest.trace);
        let trace = Trace::parse(&std::fs::read_to_string(&trace_path)?, disk_bytes)
            .with_context(|| trace_path.display().to_string())?;
        Ok(Workload {
            dir: dir.to_path_buf(),
            manifest,
            trace,
        })
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    pub fn disk(&self) -> PathBuf {
        self.path(&self.manifest.disk)
    }

    /// What one node fetches to boot its VMs: the trace's cluster-rounded footprint.
    pub fn working_set(&self) -> u64 {
        self.trace.footprint(CACHE_CLUSTER)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trace_is_parsed_in_order() {
        let t = Trace::parse("# boot\nR 0 4096\n\nW 8192 512\nR 65536 131072\n", 1 << 20).unwrap();
        assert_eq!(t.ops.len(), 3);
        assert!(t.ops[1].write);
        assert_eq!(t.read_bytes(), 4096 + 131072);
        assert_eq!(t.reads(), 2);
    }

    #[test]
    fn bad_trace_lines_are_named() {
        let e = Trace::parse("R 0 4096\nX 1 2\n", 1 << 20).unwrap_err();
        assert!(e.to_string().starts_with("trace line 2: \"X 1 2\""), "{e}");
        let e = Trace::parse("R 0\n", 1 << 20).unwrap_err();
        assert!(e.to_string().contains("expected <offset> <bytes>"), "{e}");
        let e = Trace::parse("R 1048000 4096\n", 1 << 20).unwrap_err();
        assert!(
            e.to_string().contains("outside the 1048576-byte disk"),
            "{e}"
        );
        assert!(Trace::parse("\n# nothing\n", 1 << 20).is_err());
    }

    #[test]
    fn the_footprint_counts_each_cluster_once() {
        let k = 1024;
        let t = Trace::parse(
            // Two reads in cluster 0, one spanning clusters 1-2, one inside 2, a write in 5.
            &format!(
                "R 0 4096\nR 8192 4096\nR {} {}\nR {} 512\nW {} 512\n",
                100 * k,
                60 * k,
                140 * k,
                330 * k
            ),
            1 << 20,
        )
        .unwrap();
        assert_eq!(t.footprint(64 * k), 4 * 64 * k);
        assert_eq!(t.footprint(4 * k), 4 * k + 4 * k + 60 * k + 4 * k);
    }
}
