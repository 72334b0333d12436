//! What the running kernel offers the kernel backend, checked before anything is touched.
//!
//! A missing module is loaded with `modprobe` once, as the kernel would on demand; what is
//! still missing after that is reported feature by feature, with where sftsan looked.

use std::fmt;
use std::path::Path;
use std::process::{Command, Stdio};

/// A kernel facility the kernel backend may need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Feature {
    /// Device-mapper itself (`/dev/mapper/control`).
    DeviceMapper,
    /// A device-mapper target type, as `dmsetup targets` lists it.
    DmTarget(&'static str),
    /// Loop devices, which back a node's store files.
    Loop,
    /// LIO is configured through configfs.
    Configfs,
    /// The LIO iSCSI target (target_core_mod and iscsi_target_mod).
    LioIscsiTarget,
    /// The open-iscsi kernel initiator transport.
    IscsiInitiator,
}

impl Feature {
    /// The module that provides it, for `modprobe`.
    fn module(self) -> &'static [&'static str] {
        match self {
            Feature::DeviceMapper => &["dm_mod"],
            Feature::DmTarget("snapshot" | "snapshot-origin") => &["dm_snapshot"],
            Feature::DmTarget("thin-pool" | "thin") => &["dm_thin_pool"],
            Feature::DmTarget("cache") => &["dm_cache", "dm_cache_smq"],
            Feature::DmTarget("clone") => &["dm_clone"],
            // Its tables name the round-robin path selector, a module of its own.
            Feature::DmTarget("multipath") => &["dm_multipath", "dm_round_robin"],
            Feature::DmTarget(_) => &["dm_mod"],
            Feature::Loop => &["loop"],
            Feature::Configfs => &["configfs"],
            Feature::LioIscsiTarget => &[
                "target_core_mod",
                "target_core_iblock",
                "target_core_file",
                "iscsi_target_mod",
            ],
            Feature::IscsiInitiator => &["iscsi_tcp"],
        }
    }
}

impl fmt::Display for Feature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Feature::DeviceMapper => write!(f, "device-mapper"),
            Feature::DmTarget(t) => write!(f, "dm target {t:?}"),
            Feature::Loop => write!(f, "loop devices"),
            Feature::Configfs => write!(f, "configfs"),
            Feature::LioIscsiTarget => write!(f, "LIO iSCSI target"),
            Feature::IscsiInitiator => write!(f, "iSCSI initiator (iscsi_tcp)"),
        }
    }
}

/// One missing feature and where sftsan looked for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// The feature the kernel lacks.
    pub feature: Feature,
    /// What sftsan found where it looked, e.g. "no /dev/mapper/control".
    pub detail: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} (module {})",
            self.feature,
            self.detail,
            self.feature.module().join(", ")
        )
    }
}

/// Everything a kernel-backend node with dm-cache, dm-snapshot or dm-thin, LIO relays and
/// a multipath iSCSI upstream needs.
pub const NODE_FEATURES: &[Feature] = &[
    Feature::DeviceMapper,
    Feature::DmTarget("linear"),
    Feature::DmTarget("cache"),
    Feature::DmTarget("snapshot"),
    Feature::DmTarget("snapshot-origin"),
    Feature::DmTarget("thin-pool"),
    Feature::DmTarget("thin"),
    Feature::DmTarget("multipath"),
    Feature::Loop,
    Feature::Configfs,
    Feature::LioIscsiTarget,
    Feature::IscsiInitiator,
];

/// What resources of these kinds need of the kernel, each feature once. A dm-clone cache
/// asks for the clone target, which many kernels (Debian's among them) lack.
pub fn features_for<'a>(kinds: impl IntoIterator<Item = &'a str>) -> Vec<Feature> {
    let mut wanted = Vec::new();
    for kind in kinds {
        for f in kind_features(kind) {
            if !wanted.contains(f) {
                wanted.push(*f);
            }
        }
    }
    wanted
}

/// The kernel features a resource of `kind` needs (none for userspace ones).
fn kind_features(kind: &str) -> &'static [Feature] {
    const DM: Feature = Feature::DeviceMapper;
    match kind {
        "iscsi-session" | "iscsi-standby" => &[Feature::IscsiInitiator],
        "dm-multipath" => &[DM, Feature::DmTarget("multipath")],
        "loop-file" => &[Feature::Loop],
        "dm-cache" => &[DM, Feature::DmTarget("cache")],
        "dm-clone" => &[DM, Feature::DmTarget("clone")],
        "dm-linear" => &[DM, Feature::DmTarget("linear")],
        "dm-snapshot" => &[DM, Feature::DmTarget("snapshot")],
        "thin-pool" => &[DM, Feature::DmTarget("thin-pool")],
        "thin-volume" => &[DM, Feature::DmTarget("thin")],
        "lio-target" => &[Feature::Configfs, Feature::LioIscsiTarget],
        _ => &[],
    }
}

/// The features of `wanted` the kernel lacks, after trying to load their modules once.
pub fn missing(wanted: &[Feature]) -> Vec<Missing> {
    let absent: Vec<Missing> = wanted.iter().filter_map(|&f| check(f).err()).collect();
    if absent.is_empty() {
        return absent;
    }
    for m in &absent {
        for module in m.feature.module() {
            let _ = Command::new("modprobe")
                .args(["-q", module])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
    absent
        .into_iter()
        .filter_map(|m| check(m.feature).err())
        .collect()
}

/// One line naming everything missing, or None when nothing is.
pub fn report(missing: &[Missing]) -> Option<String> {
    (!missing.is_empty()).then(|| {
        let parts: Vec<String> = missing.iter().map(ToString::to_string).collect();
        format!("the kernel lacks {}", parts.join("; "))
    })
}

fn check(feature: Feature) -> Result<(), Missing> {
    let fail = |detail: &str| {
        Err(Missing {
            feature,
            detail: detail.into(),
        })
    };
    let module_loaded = |name: &str| Path::new("/sys/module").join(name).exists();
    match feature {
        Feature::DeviceMapper => {
            if Path::new("/dev/mapper/control").exists()
                || proc_lists("/proc/misc", "device-mapper")
            {
                Ok(())
            } else {
                fail("no /dev/mapper/control and no device-mapper in /proc/misc")
            }
        }
        Feature::DmTarget(target) => match dm_targets() {
            Ok(targets) if targets.iter().any(|t| t == target) => Ok(()),
            Ok(targets) => fail(&format!(
                "not among the kernel's dm targets ({})",
                targets.join(", ")
            )),
            Err(e) => fail(&format!("cannot list dm targets: {e}")),
        },
        Feature::Loop => {
            if Path::new("/dev/loop-control").exists() {
                Ok(())
            } else {
                fail("no /dev/loop-control")
            }
        }
        Feature::Configfs => {
            if proc_lists("/proc/filesystems", "configfs") {
                Ok(())
            } else {
                fail("configfs is not in /proc/filesystems")
            }
        }
        Feature::LioIscsiTarget => {
            if module_loaded("target_core_mod") && module_loaded("iscsi_target_mod") {
                Ok(())
            } else {
                fail("target_core_mod and iscsi_target_mod are not both in /sys/module")
            }
        }
        Feature::IscsiInitiator => {
            if module_loaded("iscsi_tcp") {
                Ok(())
            } else {
                fail("iscsi_tcp is not in /sys/module")
            }
        }
    }
}

/// Whether a whitespace-separated field of some line of `file` equals `word`.
fn proc_lists(file: &str, word: &str) -> bool {
    std::fs::read_to_string(file)
        .map(|t| t.lines().any(|l| l.split_whitespace().any(|w| w == word)))
        .unwrap_or(false)
}

/// The kernel's device-mapper target types (DM_LIST_VERSIONS).
pub fn dm_targets() -> crate::error::Result<Vec<String>> {
    use crate::error::Error;
    if !Path::new("/dev/mapper/control").exists() {
        return Err(Error::unsupported(
            "device-mapper",
            "no /dev/mapper/control",
        ));
    }
    let dm =
        devicemapper::DM::new().map_err(|e| Error::unsupported("device-mapper", e.to_string()))?;
    let versions = dm
        .list_versions()
        .map_err(|e| Error::refused("device-mapper: listing targets", e.to_string()))?;
    Ok(versions.into_iter().map(|(name, ..)| name).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_names_each_missing_feature_and_its_module() {
        let missing = vec![
            Missing {
                feature: Feature::DeviceMapper,
                detail: "no /dev/mapper/control".into(),
            },
            Missing {
                feature: Feature::DmTarget("clone"),
                detail: "not among the kernel's dm targets (linear)".into(),
            },
        ];
        let line = report(&missing).unwrap();
        assert!(
            line.starts_with(
                "the kernel lacks device-mapper: no /dev/mapper/control (module dm_mod)"
            ),
            "{line}"
        );
        assert!(line.contains("dm target \"clone\": not among"), "{line}");
        assert!(line.contains("(module dm_clone)"), "{line}");
        assert!(!line.contains('\n'));
        assert_eq!(report(&[]), None);
    }
}
