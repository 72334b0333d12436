//! Checks of the block devices a spec names as node stores (`[nodes.devices]`): what the
//! spec alone can tell. Whether a device exists, is large enough and is free is checked
//! on the host before anything is touched (the engine's preflight) and when it is taken.

use std::collections::HashMap;
use std::path::{Component, Path};

use super::{Backend, ClusterSpec, Mode, SnapshotKind, SpecError};

pub fn check(spec: &ClusterSpec) -> Result<(), SpecError> {
    // A device path names one device per host: on one host every node's devices and the
    // image must differ; in a remote cluster each node is a host of its own.
    let one_host = spec.cluster.mode != Mode::Remote;
    let mut seen: HashMap<&Path, String> = HashMap::new();
    if one_host {
        seen.insert(&spec.image.source, "image.source".into());
    }
    for (i, node) in spec.nodes.iter().enumerate() {
        if !one_host {
            seen.clear();
        }
        let devices = &node.devices;
        if devices.is_empty() {
            continue;
        }
        let here = format!("nodes[{i}].devices");
        if spec.cluster.backend != Backend::Kernel {
            return Err(SpecError::new(
                here,
                "block devices are only used with cluster.backend = \"kernel\"",
            ));
        }
        let kind = spec.snapshots.kind;
        if !devices.cow.is_empty() && kind != SnapshotKind::DmSnapshot {
            return Err(SpecError::new(
                format!("{here}.cow"),
                "only used with snapshots.kind = \"dm-snapshot\"",
            ));
        }
        for (field, set) in [
            ("thin_data", devices.thin_data.is_some()),
            ("thin_metadata", devices.thin_metadata.is_some()),
        ] {
            if set && kind != SnapshotKind::DmThin {
                return Err(SpecError::new(
                    format!("{here}.{field}"),
                    "only used with snapshots.kind = \"dm-thin\"",
                ));
            }
        }
        for (field, path) in devices.named() {
            let field = format!("{here}.{field}");
            check_path(&field, path)?;
            if let Some(other) = seen.insert(path, field.clone()) {
                return Err(SpecError::new(
                    field,
                    format!("{:?} is also {other}", path.display().to_string()),
                ));
            }
        }
    }
    Ok(())
}

/// An absolute path of plain components, in the characters device paths use
/// (`/dev/disk/by-path/pci-0000:00:1f.2-ata-1`, `/dev/vg0/lv_cache`).
fn check_path(field: &str, path: &Path) -> Result<(), SpecError> {
    let shown = path.display().to_string();
    let fail = |problem: String| Err(SpecError::new(field, problem));
    if !path.is_absolute() {
        return fail(format!("{shown:?} is not an absolute path"));
    }
    if let Some(c) = shown
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || "/._-+:@".contains(c)))
    {
        return fail(format!(
            "{shown:?} contains {c:?}; a device path has only letters, digits and / . _ - + : @"
        ));
    }
    if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
        || shown.ends_with('/')
    {
        return fail(format!("{shown:?} must name a device without '.' or '..'"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::{test_spec_text, ClusterSpec, NodeDevices};

    fn spec_with(backend: &str, kind: &str, n1_extra: &str) -> Result<ClusterSpec, SpecError> {
        ClusterSpec::from_toml(&test_spec_text("/s", backend, kind, n1_extra))
    }

    fn spec(backend: &str, kind: &str) -> ClusterSpec {
        spec_with(backend, kind, "").unwrap()
    }

    fn error(spec: &ClusterSpec) -> String {
        check(spec).unwrap_err().to_string()
    }

    #[test]
    fn devices_parse_from_the_nodes_table() {
        let s = spec_with(
            "kernel",
            "dm-snapshot",
            r#"devices = { cache = "/dev/vg0/n1-cache", cow = ["/dev/vg0/n1-cow1"] }"#,
        )
        .unwrap();
        let named: Vec<String> = s.nodes[0]
            .devices
            .named()
            .into_iter()
            .map(|(f, p)| format!("{f}={}", p.display()))
            .collect();
        assert_eq!(
            named,
            ["cache=/dev/vg0/n1-cache", "cow[0]=/dev/vg0/n1-cow1"]
        );
        check(&s).unwrap();
        // A spec without devices writes none back.
        assert!(!spec("kernel", "dm-thin").to_toml().contains("devices"));
    }

    #[test]
    fn an_unknown_device_key_is_refused() {
        let e = spec_with(
            "kernel",
            "dm-thin",
            r#"devices = { cache_dev = "/dev/sdb" }"#,
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("unknown field `cache_dev`"), "{e}");
    }

    #[test]
    fn devices_need_the_kernel_backend() {
        let mut s = spec("userspace", "qcow2");
        s.nodes[1].devices.cache = Some("/dev/sdb".into());
        assert_eq!(
            error(&s),
            "nodes[1].devices: block devices are only used with cluster.backend = \"kernel\""
        );
    }

    #[test]
    fn cow_devices_need_dm_snapshots_and_thin_devices_dm_thin() {
        let mut s = spec("kernel", "dm-thin");
        s.nodes[0].devices.cow = vec!["/dev/sdb".into()];
        assert_eq!(
            error(&s),
            "nodes[0].devices.cow: only used with snapshots.kind = \"dm-snapshot\""
        );
        let mut s = spec("kernel", "dm-snapshot");
        s.nodes[0].devices.thin_metadata = Some("/dev/sdb".into());
        assert_eq!(
            error(&s),
            "nodes[0].devices.thin_metadata: only used with snapshots.kind = \"dm-thin\""
        );
    }

    #[test]
    fn device_paths_are_absolute_and_plain() {
        for (path, problem) in [
            ("dev/sdb", "\"dev/sdb\" is not an absolute path"),
            (
                "/dev/my disk",
                "\"/dev/my disk\" contains ' '; a device path has only letters, digits and / . _ - + : @",
            ),
            ("/dev/../etc/passwd", "\"/dev/../etc/passwd\" must name a device without '.' or '..'"),
            ("/dev/sdb/", "\"/dev/sdb/\" must name a device without '.' or '..'"),
        ] {
            let mut s = spec("kernel", "dm-snapshot");
            s.nodes[0].devices = NodeDevices {
                cache: Some("/dev/vg0/ok".into()),
                cache_metadata: Some(path.into()),
                ..Default::default()
            };
            assert_eq!(
                error(&s),
                format!("nodes[0].devices.cache_metadata: {problem}")
            );
        }
        let mut s = spec("kernel", "dm-snapshot");
        s.nodes[0].devices.cache = Some("/dev/disk/by-path/pci-0000:00:1f.2-ata-1".into());
        check(&s).unwrap();
    }

    #[test]
    fn a_device_is_named_once() {
        let mut s = spec("kernel", "dm-snapshot");
        s.nodes[0].devices.cache = Some("/dev/sdb".into());
        s.nodes[1].devices.cow = vec!["/dev/sdc".into(), "/dev/sdb".into()];
        assert_eq!(
            error(&s),
            "nodes[1].devices.cow[1]: \"/dev/sdb\" is also nodes[0].devices.cache"
        );
        let mut s = spec("kernel", "dm-thin");
        s.nodes[0].devices.thin_data = Some("/srv/base.img".into());
        assert_eq!(
            error(&s),
            "nodes[0].devices.thin_data: \"/srv/base.img\" is also image.source"
        );
    }

    /// Each node of a remote cluster is a host of its own: the same path there is
    /// another device, and the image lives on the origin's host.
    #[test]
    fn remote_hosts_name_their_devices_alike() {
        let mut s = spec("kernel", "dm-snapshot");
        s.cluster.mode = crate::spec::Mode::Remote;
        s.nodes[0].devices.cache = Some("/dev/sdb".into());
        s.nodes[1].devices.cache = Some("/dev/sdb".into());
        s.nodes[1].devices.cow = vec!["/srv/base.img".into()];
        check(&s).unwrap();
        s.nodes[1].devices.cow = vec!["/dev/sdb".into()];
        assert_eq!(
            error(&s),
            "nodes[1].devices.cow[0]: \"/dev/sdb\" is also nodes[1].devices.cache"
        );
    }
}
