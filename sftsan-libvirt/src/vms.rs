//! Which VMs a cluster has and what their domains look like: one VM per snapshot of each
//! compute node, its domain built from a template (the user's or the built-in default).

use sftsan_core::error::{Error, IoContext, Result};
use std::path::{Path, PathBuf};

use sftsan_core::plan::{Plan, Role};
use sftsan_core::spec::ValidatedSpec;

use crate::identity::{vm_mac, vm_uuid, NamePattern};
use crate::xml::{Domain, SftsanMeta, VmDisk, VmMode};

/// What the operator chose for a batch.
#[derive(Debug, Clone)]
pub struct VmSettings {
    /// How the VMs' domains are named.
    pub name_pattern: NamePattern,
    /// Whether the VMs keep their snapshots across stop and start.
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
    /// The domain's name, from the name pattern.
    pub name: String,
    /// The compute node the snapshot is on.
    pub node: String,
    /// The snapshot's index on that node (from 1).
    pub index: u32,
    /// The domain's UUID, derived from (cluster, node, index).
    pub uuid: String,
    /// The disk the domain boots from: a qcow2 overlay, or the kernel backend's dm device.
    pub snapshot: PathBuf,
    /// The domain as it is defined.
    pub domain: Domain,
}

/// A domain that boots here (QEMU under TCG, no KVM needed): 128 MiB, one CPU, ACPI (which
/// libvirt 9 with QEMU 10 requires), one user-mode NIC, no graphics, no disk: each VM
/// gets its snapshot as `vda`.
const DEFAULT_TEMPLATE: &str = "\
<domain type='qemu'>
  <name>sftsan-template</name>
  <memory unit='MiB'>128</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
  </features>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <interface type='user'>
      <model type='virtio'/>
    </interface>
  </devices>
</domain>
";

/// The built-in template (`DEFAULT_TEMPLATE`).
pub fn default_template() -> Domain {
    Domain::from_xml(DEFAULT_TEMPLATE).expect("the built-in template is a domain")
}

/// Reads a user's domain template (libvirt domain XML; its boot disk, if it has one,
/// becomes each VM's snapshot). One line says why a template cannot be used.
pub fn load_template(path: &Path) -> Result<Domain> {
    let text = std::fs::read_to_string(path).at(path)?;
    parse_template(&text).map_err(|e| template_error(&path.display().to_string(), e))
}

/// A template's problem as an invalid input named after the template.
fn template_error(name: &str, e: crate::xml::XmlError) -> Error {
    let field = if name.is_empty() {
        "template".to_string()
    } else {
        format!("template {name}")
    };
    Error::invalid(field, e.to_string())
}

/// `node` must be one of the plan's compute nodes: VMs run there.
pub fn check_compute_node(plan: &Plan, node: &str) -> Result<()> {
    match plan.node(node) {
        None => {
            let known: Vec<&str> = plan
                .nodes
                .iter()
                .filter(|n| n.role == Role::Node)
                .map(|n| n.name.as_str())
                .collect();
            Err(Error::not_found(
                format!("no node named {node:?} in cluster {}", plan.cluster),
                format!("nodes: {}", known.join(", ")),
            ))
        }
        Some(p) if p.role == Role::Origin => Err(Error::invalid(
            format!("{node:?}"),
            "is the origin: VMs run on compute nodes",
        )),
        Some(_) => Ok(()),
    }
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::path::absolute(path).at(path)
}

/// Parses a template and checks that sftsan can make VMs of it.
pub fn parse_template(text: &str) -> Result<Domain, crate::xml::XmlError> {
    let template = Domain::from_xml(text)?;
    // A trial build finds what only building can (a vda taken by another device).
    template
        .clone()
        .set_boot_disk(&VmDisk::for_path(Path::new("/trial.qcow2")))?;
    Ok(template)
}

/// The VMs of the selected nodes, in tree order, each with its domain.
pub fn plan_vms(
    spec: &ValidatedSpec,
    plan: &Plan,
    spec_path: &Path,
    settings: &VmSettings,
) -> Result<Vec<Vm>> {
    for n in &settings.nodes {
        check_compute_node(plan, n)?;
    }
    let spec_path = absolute(spec_path)?;
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
            let domain = build_domain(&template, &name, &snapshot, meta)
                .map_err(|e| template_error("", e))?;
            vms.push(Vm {
                uuid: domain.uuid().unwrap_or_default(),
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
/// pattern), from `template` (libvirt domain XML; see [`build_domain`]) or the default.
/// `spec_path` goes into the metadata for the hook; without it the hook cannot serve the
/// domain.
pub fn domain_xml(
    plan: &Plan,
    spec_path: Option<&Path>,
    node: &str,
    index: u32,
    template: Option<&str>,
    mode: VmMode,
) -> Result<String> {
    check_compute_node(plan, node)?;
    if index == 0 {
        return Err(Error::invalid("index", "snapshots are numbered from 1"));
    }
    let template = match template {
        Some(text) => parse_template(text).map_err(|e| template_error("", e))?,
        None => default_template(),
    };
    let spec_path = match spec_path {
        Some(p) => absolute(p)?.display().to_string(),
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
        .map(|d| d.to_xml())
        .map_err(|e| template_error("", e))
}

/// The template with this VM's name, UUID, MACs, metadata and boot disk; nothing else
/// of it changes.
pub fn build_domain(
    template: &Domain,
    name: &str,
    snapshot: &Path,
    meta: SftsanMeta,
) -> Result<Domain, crate::xml::XmlError> {
    let mut d = template.clone();
    d.set_name(name);
    d.set_uuid(&vm_uuid(&meta.cluster, &meta.node, meta.snapshot));
    d.set_macs(|nic| vm_mac(&meta.cluster, &meta.node, meta.snapshot, nic));
    d.set_boot_disk(&VmDisk::for_path(snapshot))?;
    d.set_sftsan(Some(meta));
    Ok(d)
}
