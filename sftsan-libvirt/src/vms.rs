//! Which VMs a cluster has and what their domains look like: one VM per snapshot of each
//! compute node, its domain built from a template (the user's or the built-in default).

use std::path::{Path, PathBuf};

use sftsan_core::plan::{Plan, Role};
use sftsan_core::spec::ValidatedSpec;

use crate::identity::{vm_mac, vm_uuid, NamePattern};
use crate::xml::{
    Boot, Devices, Disk, DiskDriver, DiskSource, DiskTarget, Domain, Features, Flag, Interface,
    Memory, Model, Os, OsType, SftsanMeta, Vcpu, VmMode,
};

/// The device name of the VM's sftsan disk inside the guest.
pub const DISK_TARGET: &str = "vda";

/// What the operator chose for a batch.
#[derive(Debug, Clone)]
pub struct VmSettings {
    pub name_pattern: NamePattern,
    pub mode: VmMode,
    /// The user's template; `None`: [`default_template`].
    pub template: Option<Domain>,
    /// VMs per node; `None`: the spec's `snapshots.per_node`.
    pub per_node: Option<u32>,
    /// Only these nodes (empty: every compute node).
    pub nodes: Vec<String>,
}

impl Default for VmSettings {
    fn default() -> Self {
        VmSettings {
            name_pattern: NamePattern::default(),
            mode: VmMode::Persistent,
            template: None,
            per_node: None,
            nodes: vec![],
        }
    }
}

/// One VM: a snapshot of a node and the domain that boots from it.
#[derive(Debug, Clone)]
pub struct Vm {
    pub name: String,
    pub node: String,
    pub index: u32,
    pub uuid: String,
    pub snapshot: PathBuf,
    pub domain: Domain,
}

/// A domain that boots here (QEMU under TCG, no KVM needed): 128 MiB, one CPU, ACPI (which
/// libvirt 9 with QEMU 10 requires), one user-mode NIC, no graphics. The sftsan disk is
/// added per VM.
pub fn default_template() -> Domain {
    Domain {
        kind: "qemu".into(),
        name: "sftsan-template".into(),
        memory: Some(Memory::mib(128)),
        vcpu: Some(Vcpu {
            placement: None,
            count: 1,
        }),
        os: Some(Os {
            os_type: OsType {
                arch: Some("x86_64".into()),
                machine: Some("pc".into()),
                value: "hvm".into(),
            },
            boot: vec![Boot { dev: "hd".into() }],
        }),
        features: Some(Features {
            acpi: Some(Flag {}),
            ..Default::default()
        }),
        on_poweroff: Some("destroy".into()),
        on_reboot: Some("restart".into()),
        on_crash: Some("destroy".into()),
        devices: Devices {
            interface: vec![Interface {
                kind: "user".into(),
                model: Some(Model {
                    kind: "virtio".into(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Reads a user's domain template (libvirt domain XML without the sftsan disk).
pub fn load_template(path: &Path) -> Result<Domain, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("template {}: {e}", path.display()))?;
    Domain::from_xml(&text).map_err(|e| format!("template {}: {e}", path.display()))
}

/// The VMs of the selected nodes, in tree order, each with its domain.
pub fn plan_vms(
    spec: &ValidatedSpec,
    plan: &Plan,
    spec_path: &Path,
    settings: &VmSettings,
) -> Result<Vec<Vm>, String> {
    for n in &settings.nodes {
        match plan.node(n) {
            None => {
                let known: Vec<&str> = plan
                    .nodes
                    .iter()
                    .filter(|n| n.role == Role::Node)
                    .map(|n| n.name.as_str())
                    .collect();
                return Err(format!(
                    "no node named {n:?} in cluster {} (nodes: {})",
                    plan.cluster,
                    known.join(", ")
                ));
            }
            Some(p) if p.role == Role::Origin => {
                return Err(format!("{n:?} is the origin: VMs run on compute nodes"))
            }
            Some(_) => {}
        }
    }
    let spec_path =
        std::path::absolute(spec_path).map_err(|e| format!("{}: {e}", spec_path.display()))?;
    let per_node = settings.per_node.unwrap_or(spec.spec().snapshots.per_node);
    let template = settings.template.clone().unwrap_or_else(default_template);
    let mut vms = Vec::new();
    for node in plan.nodes.iter().filter(|n| n.role == Role::Node) {
        if !settings.nodes.is_empty() && !settings.nodes.contains(&node.name) {
            continue;
        }
        for index in 1..=per_node {
            let name = settings
                .name_pattern
                .expand(&plan.cluster, &plan.image, &node.name, index);
            let snapshot = plan.vm_disk_path(&node.name, index);
            let meta = SftsanMeta {
                cluster: plan.cluster.clone(),
                image: plan.image.clone(),
                node: node.name.clone(),
                snapshot: index,
                mode: settings.mode,
                spec: spec_path.display().to_string(),
            };
            let domain = build_domain(&template, &name, &snapshot, meta);
            vms.push(Vm {
                uuid: domain.uuid.clone().unwrap_or_default(),
                name,
                node: node.name.clone(),
                index,
                snapshot,
                domain,
            });
        }
    }
    Ok(vms)
}

/// The domain of VM `index` on `node`, as `sftsan vm define` defines it (default name
/// pattern), from `template` (libvirt domain XML without the sftsan disk) or the default.
/// `spec_path` goes into the metadata for the hook; without it the hook cannot serve the
/// domain.
pub fn domain_xml(
    plan: &Plan,
    spec_path: Option<&Path>,
    node: &str,
    index: u32,
    template: Option<&str>,
    mode: VmMode,
) -> Result<String, String> {
    match plan.node(node) {
        None => {
            return Err(format!(
                "no node named {node:?} in cluster {}",
                plan.cluster
            ))
        }
        Some(n) if n.role == Role::Origin => {
            return Err(format!("{node:?} is the origin: VMs run on compute nodes"))
        }
        Some(_) => {}
    }
    if index == 0 {
        return Err("snapshots are numbered from 1".into());
    }
    let template = match template {
        Some(text) => Domain::from_xml(text).map_err(|e| format!("template: {e}"))?,
        None => default_template(),
    };
    let spec_path = match spec_path {
        Some(p) => std::path::absolute(p)
            .map_err(|e| format!("{}: {e}", p.display()))?
            .display()
            .to_string(),
        None => String::new(),
    };
    let name = NamePattern::default().expand(&plan.cluster, &plan.image, node, index);
    let meta = SftsanMeta {
        cluster: plan.cluster.clone(),
        image: plan.image.clone(),
        node: node.into(),
        snapshot: index,
        mode,
        spec: spec_path,
    };
    build_domain(&template, &name, &plan.vm_disk_path(node, index), meta)
        .to_xml()
        .map_err(|e| format!("domain XML: {e}"))
}

/// The template with this VM's name, UUID, MACs, metadata and disk.
pub fn build_domain(template: &Domain, name: &str, snapshot: &Path, meta: SftsanMeta) -> Domain {
    let mut d = template.clone();
    d.name = name.into();
    d.uuid = Some(vm_uuid(&meta.cluster, &meta.node, meta.snapshot));
    for (nic, iface) in d.devices.interface.iter_mut().enumerate() {
        iface.mac = Some(crate::xml::Mac {
            address: vm_mac(&meta.cluster, &meta.node, meta.snapshot, nic),
        });
    }
    d.devices.disk.retain(|disk| disk.target.dev != DISK_TARGET);
    // The kernel backend's VM disks are dm devices; the userspace backend's qcow2 files.
    let block = snapshot.starts_with("/dev");
    let path = Some(snapshot.display().to_string());
    d.devices.disk.insert(
        0,
        Disk {
            kind: if block { "block" } else { "file" }.into(),
            device: "disk".into(),
            driver: Some(DiskDriver {
                name: Some("qemu".into()),
                format: Some(if block { "raw" } else { "qcow2" }.into()),
                ..Default::default()
            }),
            source: Some(if block {
                DiskSource {
                    dev: path,
                    ..Default::default()
                }
            } else {
                DiskSource {
                    file: path,
                    ..Default::default()
                }
            }),
            target: DiskTarget {
                dev: DISK_TARGET.into(),
                bus: Some("virtio".into()),
            },
            ..Default::default()
        },
    );
    d.metadata.sftsan = Some(meta);
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_path_becomes_a_raw_block_disk() {
        let meta = SftsanMeta {
            cluster: "c".into(),
            image: "base".into(),
            node: "n1".into(),
            snapshot: 1,
            mode: VmMode::Persistent,
            spec: String::new(),
        };
        let d = build_domain(
            &default_template(),
            "vm",
            Path::new("/dev/mapper/sftsan-c-n1-snap-1"),
            meta,
        );
        let disk = &d.devices.disk[0];
        assert_eq!(disk.kind, "block");
        let source = disk.source.as_ref().unwrap();
        assert_eq!(
            source.dev.as_deref(),
            Some("/dev/mapper/sftsan-c-n1-snap-1")
        );
        assert_eq!(source.file, None);
        assert_eq!(disk.driver.as_ref().unwrap().format.as_deref(), Some("raw"));
        let xml = d.to_xml().unwrap();
        assert!(
            xml.contains("<disk type=\"block\" device=\"disk\">"),
            "{xml}"
        );
    }
    use crate::xml::RawXml;

    fn meta(node: &str, index: u32) -> SftsanMeta {
        SftsanMeta {
            cluster: "c".into(),
            image: "base".into(),
            node: node.into(),
            snapshot: index,
            mode: VmMode::Stateless,
            spec: "/s.toml".into(),
        }
    }

    #[test]
    fn the_default_domain_has_acpi_and_the_vm_disk() {
        let d = build_domain(
            &default_template(),
            "c-n1-1",
            Path::new("/x/base-1.qcow2"),
            meta("n1", 1),
        );
        let text = d.to_xml().unwrap();
        assert!(text.contains("<acpi/>"), "{text}");
        assert!(text.contains("<domain type=\"qemu\">"), "{text}");
        let back = Domain::from_xml(&text).unwrap();
        assert_eq!(back, d);
        let disk = &back.devices.disk[0];
        assert_eq!(disk.kind, "file");
        assert_eq!(
            disk.driver.as_ref().unwrap().format.as_deref(),
            Some("qcow2")
        );
        assert_eq!(
            disk.source.as_ref().unwrap().file.as_deref(),
            Some("/x/base-1.qcow2")
        );
        assert_eq!(back.uuid.as_deref(), Some(vm_uuid("c", "n1", 1).as_str()));
        assert_eq!(
            back.devices.interface[0].mac.as_ref().unwrap().address,
            vm_mac("c", "n1", 1, 0)
        );
        assert_eq!(back.sftsan().unwrap(), &meta("n1", 1));
    }

    #[test]
    fn a_user_template_keeps_its_devices_and_loses_its_vda() {
        let template = Domain::from_xml(
            r#"<domain type='kvm'>
              <name>whatever</name>
              <memory unit='GiB'>2</memory>
              <os><type arch='x86_64'>hvm</type></os>
              <clock offset='utc'/>
              <devices>
                <disk type='file' device='disk'><source file='/old.img'/><target dev='vda' bus='virtio'/></disk>
                <disk type='file' device='cdrom'><source file='/seed.iso'/><target dev='hdc' bus='ide'/><readonly/></disk>
                <interface type='network'><source network='default'/><model type='virtio'/></interface>
                <interface type='bridge'><source bridge='br0'/></interface>
                <serial type='pty'><target port='0'/></serial>
              </devices>
            </domain>"#,
        )
        .unwrap();
        let d = build_domain(&template, "vm", Path::new("/s/b-2.qcow2"), meta("n2", 2));
        assert_eq!(d.kind, "kvm");
        assert_eq!(d.devices.disk.len(), 2);
        assert_eq!(
            d.devices.disk[0].source.as_ref().unwrap().file.as_deref(),
            Some("/s/b-2.qcow2")
        );
        assert_eq!(d.devices.disk[1].device, "cdrom");
        assert!(d.devices.disk[1].readonly.is_some());
        let macs: Vec<_> = d
            .devices
            .interface
            .iter()
            .map(|i| i.mac.as_ref().unwrap().address.clone())
            .collect();
        assert_eq!(macs, [vm_mac("c", "n2", 2, 0), vm_mac("c", "n2", 2, 1)]);
        assert_eq!(
            d.extra.iter().filter_map(RawXml::name).collect::<Vec<_>>(),
            ["clock"]
        );
        let text = d.to_xml().unwrap();
        assert_eq!(Domain::from_xml(&text).unwrap(), d, "{text}");
        assert!(text.contains("<serial type='pty'>"), "{text}");
    }

    #[test]
    fn the_example_template_parses_and_keeps_its_extras() {
        let text = include_str!("../../examples/libvirt/domain.xml");
        let t = Domain::from_xml(text).unwrap();
        assert_eq!(t.kind, "qemu");
        assert!(t.features.as_ref().unwrap().acpi.is_some());
        assert_eq!(t.metadata.extra.len(), 1);
        let d = build_domain(&t, "vm", Path::new("/s/b-1.qcow2"), meta("n1", 1));
        let back = Domain::from_xml(&d.to_xml().unwrap()).unwrap();
        assert_eq!(back, d);
        let devs: Vec<_> = back.devices.extra.iter().filter_map(RawXml::name).collect();
        assert_eq!(devs, ["serial", "console", "memballoon"]);
    }
}
