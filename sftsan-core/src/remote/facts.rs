//! What a host reports about itself to the controller (`sftsan host facts`): the sftsan it
//! runs, the programs and kernel features its part of the cluster needs, the free space
//! where its cache goes, and its clock. The controller asks; the host gathers.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::backends::kernel::probe;
use crate::names::Names;
use crate::spec::{
    measure_image, Backend, ClusterSpec, ImageSpec, KernelCache, MeasuredImage, OriginProtocol,
    RelayTarget, SnapshotKind,
};

/// This build's version, which every host of a cluster must run.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// What the controller asks one host about (sent as JSON on the host's stdin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FactsRequest {
    /// Programs the host's part needs, each asked for its version.
    pub programs: Vec<String>,
    /// Kinds of the resources the host will run (for the kernel features they need).
    pub kinds: Vec<String>,
    /// Where the host's cache goes; the free space of its file system is reported.
    pub cache_dir: PathBuf,
    /// The image to measure, on the origin's host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<ImageSpec>,
}

/// A host's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    /// The sftsan version the host runs.
    pub sftsan: String,
    /// Whether the login has root's powers there (network, block devices, daemons).
    pub root: bool,
    /// The host's name (its kernel's).
    pub hostname: String,
    /// Its kernel release.
    pub kernel: String,
    /// Its clock when it answered, in milliseconds since the epoch.
    pub time_ms: u64,
    /// Each program asked about, with the first line of its `--version`, or `None` when
    /// it cannot be run.
    pub programs: Vec<(String, Option<String>)>,
    /// The kernel features it lacks (after loading their modules once), in one line.
    pub kernel_missing: Option<String>,
    /// Bytes free in the cache's file system (that of the nearest existing directory of
    /// `cache_dir`).
    pub cache_free: Option<u64>,
    /// Bytes the files under `cache_dir` already take (a cache from an earlier `up`).
    pub cache_used: u64,
    /// The image as measured here, or why it could not be (when asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Result<MeasuredImage, String>>,
}

/// Gathers the facts on this host.
pub fn gather(request: &FactsRequest) -> HostFacts {
    let kinds = request.kinds.iter().map(String::as_str);
    let wanted = probe::features_for(kinds);
    let kernel_missing = if wanted.is_empty() {
        None
    } else {
        probe::report(&probe::missing(&wanted))
    };
    HostFacts {
        sftsan: VERSION.into(),
        // SAFETY: geteuid has no preconditions and cannot fail.
        root: unsafe { libc::geteuid() } == 0,
        hostname: proc_text("/proc/sys/kernel/hostname"),
        kernel: proc_text("/proc/sys/kernel/osrelease"),
        time_ms: now_ms(),
        programs: request
            .programs
            .iter()
            .map(|p| (p.clone(), version_of(p)))
            .collect(),
        kernel_missing,
        cache_free: free_bytes(&request.cache_dir),
        cache_used: allocated_bytes(&request.cache_dir),
        image: request
            .image
            .as_ref()
            .map(|i| measure_image(i).map_err(|e| e.to_string())),
    }
}

/// What `node`'s host is asked: the programs and kernel features its part of `spec`
/// needs, and where its cache goes.
pub fn request_for(spec: &ClusterSpec, node: &str) -> FactsRequest {
    let is_origin = node == spec.origin.name;
    let kernel = spec.cluster.backend == Backend::Kernel;
    let k = spec.kernel.as_ref();
    let tgt = match k {
        Some(k) if kernel => k.relay == RelayTarget::Tgt,
        _ => is_origin && spec.origin.protocol == OriginProtocol::Iscsi,
    };
    let mut programs: Vec<&str> = vec![];
    if !kernel {
        programs.extend(["qemu-storage-daemon", "qemu-img"]);
    }
    if tgt {
        programs.push("tgtd");
    }
    if !is_origin {
        programs.push("libvirtd");
    }
    let mut kinds: Vec<&str> = vec![];
    if kernel && !is_origin {
        // Every node's upstream is a multipath device over its iSCSI path(s).
        kinds.extend(["loop-file", "iscsi-session", "dm-multipath"]);
        kinds.push(match k.map(|k| k.cache) {
            Some(KernelCache::DmClone) => "dm-clone",
            _ => "dm-cache",
        });
        kinds.extend(match spec.snapshots.kind {
            SnapshotKind::DmThin => &["thin-pool", "thin-volume"][..],
            _ => &["dm-snapshot"][..],
        });
    }
    if kernel && !tgt {
        kinds.push("lio-target");
    }
    FactsRequest {
        image: is_origin.then(|| spec.image.clone()),
        programs: programs.into_iter().map(String::from).collect(),
        kinds: kinds.into_iter().map(String::from).collect(),
        cache_dir: Names::new(spec).cache_dir(node),
    }
}

/// Milliseconds since the epoch on this host's clock.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn proc_text(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The first line of `program --version`; `None` when it cannot be run or fails.
fn version_of(program: &str) -> Option<String> {
    let out = Command::new(program)
        .arg("--version")
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().next()?.trim();
    (out.status.success() && !line.is_empty()).then(|| line.to_string())
}

/// Free bytes in the file system `dir` will be on: that of its nearest existing ancestor.
fn free_bytes(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let path = CString::new(existing.as_os_str().as_bytes()).ok()?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is NUL-terminated and `st` is valid for writes of a statvfs.
    let rc = unsafe { libc::statvfs(path.as_ptr(), st.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it filled `st`.
    let st = unsafe { st.assume_init() };
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Bytes allocated to the files under `dir` (0 when there is none).
fn allocated_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => allocated_bytes(&e.path()),
            Ok(t) if t.is_file() => e.metadata().map_or(0, |m| m.blocks() * 512),
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn facts_of_this_host_name_its_programs_and_space() {
        let facts = gather(&FactsRequest {
            programs: vec!["sh".into(), "no-such-program-sftsan".into()],
            kinds: vec![],
            cache_dir: "/tmp/does/not/exist/yet".into(),
            image: None,
        });
        assert_eq!(facts.sftsan, VERSION);
        assert!(!facts.kernel.is_empty());
        assert_eq!(facts.programs[1], ("no-such-program-sftsan".into(), None));
        assert!(facts.cache_free.is_some_and(|b| b > 0), "{facts:?}");
        assert!(facts.kernel_missing.is_none());
    }

    #[test]
    fn a_kernel_node_is_asked_for_its_kernel_features() {
        let text = crate::spec::test_spec_text("/tmp/s", "kernel", "dm-thin", "")
            .replace("degree = 2", "degree = 2\nmode = \"remote\"")
            + "[kernel]\nchap_user = \"u\"\nchap_secret = \"0123456789abcdef\"\nrelay = \"tgt\"\n";
        let spec = ClusterSpec::from_toml(&text).unwrap();
        let node = request_for(&spec, "n1");
        assert_eq!(
            node.kinds,
            [
                "loop-file",
                "iscsi-session",
                "dm-multipath",
                "dm-cache",
                "thin-pool",
                "thin-volume"
            ]
        );
        assert_eq!(node.programs, ["tgtd", "libvirtd"]);
        let origin = request_for(&spec, "origin");
        assert!(origin.kinds.is_empty());
        assert_eq!(origin.programs, ["tgtd"]);
    }
}
