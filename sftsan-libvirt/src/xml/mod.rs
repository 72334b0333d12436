//! libvirt domain XML, kept whole: a template or libvirt's own XML is read into a lossless
//! tree (`tree`), sftsan changes only what it owns (name, UUID, MACs, the boot disk, its
//! own `<metadata>` element), and every other element, attribute, namespace, comment and
//! text comes back out as it was.

mod tree;

pub use tree::{Document, Element, Node, ParseError, MAX_DEPTH};

/// sftsan's XML namespace for domain metadata.
pub const SFTSAN_NS: &str = "https://sftsan.org/xmlns/domain/1";
/// The prefix sftsan writes its metadata element with (readers match the namespace).
pub const SFTSAN_PREFIX: &str = "sftsan";
/// The device name sftsan gives the VM's disk when the template has no boot disk.
pub const DEFAULT_DISK_TARGET: &str = "vda";
/// The boot disk's `error_policy` and `rerror_policy`: an I/O error on the VM's snapshot
/// (its node's daemon restarting under it) pauses the VM instead of failing the guest's
/// request; QEMU retries the request when the VM is resumed (`sftsan vm resume`).
pub const DISK_ERROR_POLICY: &str = "stop";

/// Why a domain's XML cannot be read or used; one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML (or nested too deep).
    #[error("{0}")]
    Parse(#[from] ParseError),
    /// Well-formed XML that is not a domain sftsan can work with.
    #[error("{0}")]
    Unusable(String),
}

fn unusable<T>(problem: impl Into<String>) -> Result<T, XmlError> {
    Err(XmlError::Unusable(problem.into()))
}

/// Whether a VM's disk outlives a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum VmMode {
    /// The snapshot stays across stop and start (the VM keeps its writes).
    #[default]
    Persistent,
    /// The snapshot is discarded when the VM stops: every start begins from the image.
    Stateless,
}

impl VmMode {
    /// The mode's name, as in the metadata's `mode` attribute and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            VmMode::Persistent => "persistent",
            VmMode::Stateless => "stateless",
        }
    }
}

impl std::str::FromStr for VmMode {
    type Err = sftsan_core::error::Rejection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "persistent" => Ok(VmMode::Persistent),
            "stateless" => Ok(VmMode::Stateless),
            _ => Err(sftsan_core::error::Rejection(format!(
                "{s:?}: expected persistent or stateless"
            ))),
        }
    }
}

/// `<sftsan:vm xmlns:sftsan="https://sftsan.org/xmlns/domain/1" .../>`: what the hook
/// needs to serve the domain without asking libvirt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SftsanMeta {
    /// The cluster the VM belongs to.
    pub cluster: String,
    /// The cluster's image the snapshot is of.
    pub image: String,
    /// The compute node the snapshot is on.
    pub node: String,
    /// The snapshot's index on its node (1-based).
    pub snapshot: u32,
    /// Whether the snapshot outlives a stop.
    pub mode: VmMode,
    /// The cluster spec (absolute path).
    pub spec: String,
}

impl SftsanMeta {
    fn to_element(&self) -> Element {
        Element::new(&format!("{SFTSAN_PREFIX}:vm"))
            .with_attr(&format!("xmlns:{SFTSAN_PREFIX}"), SFTSAN_NS)
            .with_attr("cluster", &self.cluster)
            .with_attr("image", &self.image)
            .with_attr("node", &self.node)
            .with_attr("snapshot", &self.snapshot.to_string())
            .with_attr("mode", self.mode.as_str())
            .with_attr("spec", &self.spec)
    }

    fn from_element(e: &Element) -> Result<SftsanMeta, XmlError> {
        let get = |name: &str| {
            e.attr(name)
                .map(str::to_string)
                .ok_or_else(|| XmlError::Unusable(format!("sftsan metadata: no {name} attribute")))
        };
        let (cluster, image, node) = (get("cluster")?, get("image")?, get("node")?);
        let snapshot = get("snapshot")?;
        let snapshot = snapshot.parse().map_err(|_| {
            XmlError::Unusable(format!(
                "sftsan metadata: snapshot {snapshot:?} is not a number"
            ))
        })?;
        let mode = get("mode")?
            .parse()
            .map_err(|e| XmlError::Unusable(format!("sftsan metadata: mode {e}")))?;
        Ok(SftsanMeta {
            cluster,
            image,
            node,
            snapshot,
            mode,
            spec: get("spec")?,
        })
    }
}

/// What a disk of a domain is, as read from its XML.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiskInfo {
    /// `file`, `block`, `network`, `volume`
    pub kind: String,
    /// `disk`, `cdrom`, `floppy`, `lun`
    pub device: String,
    /// `source file=` or `source dev=` (the path of a file or block disk).
    pub path: Option<String>,
    /// `target dev=`: the device name the guest sees (`vda`, `sda`, ...).
    pub target: Option<String>,
    /// `target bus=`: `virtio`, `sata`, `scsi`, ...
    pub bus: Option<String>,
    /// The driver's `type`: `raw`, `qcow2`, ...
    pub format: Option<String>,
    /// The driver's `error_policy` (writes, and reads without `rerror_policy`).
    pub error_policy: Option<String>,
    /// The driver's `rerror_policy` (reads).
    pub rerror_policy: Option<String>,
}

impl DiskInfo {
    /// Whether an I/O error on this disk pauses the VM, for reads and writes alike, as
    /// sftsan's VM disks do ([`DISK_ERROR_POLICY`]).
    pub fn stops_on_error(&self) -> bool {
        let stop = Some(DISK_ERROR_POLICY);
        self.error_policy.as_deref() == stop && self.rerror_policy.as_deref() == stop
    }
}

/// The disk sftsan gives a VM: its snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmDisk {
    /// The snapshot's path, as the disk's source.
    pub path: String,
    /// A block device (the kernel backend's dm snapshot, raw) rather than a qcow2 file.
    pub block: bool,
}

impl VmDisk {
    /// The disk for a snapshot at `path`: a block device if it is under `/dev`, else a
    /// qcow2 file.
    pub fn for_path(path: &std::path::Path) -> VmDisk {
        VmDisk {
            path: path.display().to_string(),
            block: path.starts_with("/dev"),
        }
    }

    fn kind(&self) -> &'static str {
        if self.block {
            "block"
        } else {
            "file"
        }
    }

    fn format(&self) -> &'static str {
        if self.block {
            "raw"
        } else {
            "qcow2"
        }
    }

    fn source(&self) -> Element {
        let attr = if self.block { "dev" } else { "file" };
        Element::new("source").with_attr(attr, &self.path)
    }
}

/// A libvirt domain: the whole document, and sftsan's metadata read from it.
#[derive(Debug, Clone)]
pub struct Domain {
    doc: Document,
    meta: Option<SftsanMeta>,
}

/// Two domains are equal when their `<domain>` elements are, indentation aside.
impl PartialEq for Domain {
    fn eq(&self, other: &Domain) -> bool {
        self.doc.root.normalized() == other.doc.root.normalized()
    }
}

impl Eq for Domain {}

/// Children of `<domain>` that libvirt expects before `<metadata>`.
const BEFORE_METADATA: &[&str] = &["name", "uuid", "genid", "title", "description"];

impl Domain {
    /// Reads a domain's XML (a template, or libvirt's own after a define).
    pub fn from_xml(text: &str) -> Result<Domain, XmlError> {
        let doc = Document::parse(text)?;
        let root = &doc.root;
        if root.name != "domain" {
            return unusable(format!("the root element is <{}>, not <domain>", root.name));
        }
        if root.attr("type").is_none() {
            return unusable("<domain> has no type attribute (qemu or kvm)");
        }
        for once in ["name", "uuid", "metadata", "memory", "os", "devices"] {
            if root.children_named(once).count() > 1 {
                return unusable(format!("<domain> has more than one <{once}>"));
            }
        }
        let meta = match find_sftsan(root) {
            Some(e) => Some(SftsanMeta::from_element(e)?),
            None => None,
        };
        Ok(Domain { doc, meta })
    }

    /// The domain as libvirt takes it: the `<domain>` element, indented. Comments before
    /// and after it (a template's documentation) are left out.
    pub fn to_xml(&self) -> String {
        self.doc.root.to_xml()
    }

    /// The `<domain>` element, for reading what sftsan does not model.
    pub fn root(&self) -> &Element {
        &self.doc.root
    }

    /// The `<domain type=...>` attribute: `qemu`, `kvm`, ...
    pub fn kind(&self) -> &str {
        self.doc.root.attr("type").unwrap_or_default()
    }

    /// The `<name>` text, trimmed; empty if there is none.
    pub fn name(&self) -> String {
        self.doc
            .root
            .child("name")
            .map(|n| n.text().trim().to_string())
            .unwrap_or_default()
    }

    /// Sets `<name>`, adding it as the first child if missing.
    pub fn set_name(&mut self, name: &str) {
        let root = &mut self.doc.root;
        if root.child("name").is_none() {
            root.insert_after(&[], Element::new("name"));
        }
        root.ensure_child("name").set_text(name);
    }

    /// The `<uuid>` text, trimmed, if the domain has one.
    pub fn uuid(&self) -> Option<String> {
        let uuid = self.doc.root.child("uuid")?;
        Some(uuid.text().trim().to_string())
    }

    /// Sets `<uuid>`, adding it after `<name>` if missing.
    pub fn set_uuid(&mut self, uuid: &str) {
        let root = &mut self.doc.root;
        if root.child("uuid").is_none() {
            root.insert_after(&["name"], Element::new("uuid"));
        }
        root.ensure_child("uuid").set_text(uuid);
    }

    /// sftsan's metadata, if this is one of sftsan's domains.
    pub fn sftsan(&self) -> Option<&SftsanMeta> {
        self.meta.as_ref()
    }

    /// Replaces sftsan's metadata element (or removes it, with `None`); other programs'
    /// metadata stays.
    pub fn set_sftsan(&mut self, meta: Option<SftsanMeta>) {
        let root = &mut self.doc.root;
        let stale: Vec<usize> = match root.child("metadata") {
            Some(metadata) => metadata
                .children
                .iter()
                .enumerate()
                .filter(
                    |(_, n)| matches!(n, Node::Element(e) if is_sftsan_vm(e, &[&*root, metadata])),
                )
                .map(|(i, _)| i)
                .collect(),
            None => vec![],
        };
        if let Some(metadata) = root.child_mut("metadata") {
            for at in stale.into_iter().rev() {
                metadata.children.remove(at);
            }
        }
        if let Some(m) = &meta {
            if root.child("metadata").is_none() {
                root.insert_after(BEFORE_METADATA, Element::new("metadata"));
            }
            let metadata = root.ensure_child("metadata");
            metadata.children.insert(0, Node::Element(m.to_element()));
        }
        self.meta = meta;
    }

    /// `<memory>` in bytes (libvirt's units; KiB when none is given).
    pub fn memory_bytes(&self) -> Option<u64> {
        let memory = self.doc.root.child("memory")?;
        let value: u64 = memory.text().trim().parse().ok()?;
        let factor: u64 = match memory.attr("unit").unwrap_or("KiB") {
            "b" | "bytes" => 1,
            "KB" => 1000,
            "k" | "KiB" => 1 << 10,
            "MB" => 1000 * 1000,
            "M" | "MiB" => 1 << 20,
            "GB" => 1000 * 1000 * 1000,
            "G" | "GiB" => 1 << 30,
            "TB" => 1000 * 1000 * 1000 * 1000,
            "T" | "TiB" => 1 << 40,
            _ => return None,
        };
        value.checked_mul(factor)
    }

    /// Sets `<memory>` (and drops `<currentMemory>`, which must not exceed it).
    pub fn set_memory_mib(&mut self, mib: u64) {
        let root = &mut self.doc.root;
        root.remove_children("currentMemory");
        let memory = root.ensure_child("memory");
        memory.attrs = vec![("unit".into(), "MiB".into())];
        memory.set_text(&mib.to_string());
    }

    /// Every `<disk>` under `<devices>`, in document order.
    pub fn disks(&self) -> Vec<DiskInfo> {
        let Some(devices) = self.doc.root.child("devices") else {
            return vec![];
        };
        devices
            .children_named("disk")
            .map(|disk| {
                let source = disk.child("source");
                let target = disk.child("target");
                let driver = |name| {
                    disk.child("driver")
                        .and_then(|d| d.attr(name))
                        .map(Into::into)
                };
                DiskInfo {
                    kind: disk.attr("type").unwrap_or_default().into(),
                    device: disk.attr("device").unwrap_or("disk").into(),
                    path: source
                        .and_then(|s| s.attr("file").or(s.attr("dev")))
                        .map(Into::into),
                    target: target.and_then(|t| t.attr("dev")).map(Into::into),
                    bus: target.and_then(|t| t.attr("bus")).map(Into::into),
                    format: driver("type"),
                    error_policy: driver("error_policy"),
                    rerror_policy: driver("rerror_policy"),
                }
            })
            .collect()
    }

    /// The MAC address of each network interface, in order (`None`: libvirt picks one).
    pub fn macs(&self) -> Vec<Option<String>> {
        let Some(devices) = self.doc.root.child("devices") else {
            return vec![];
        };
        devices
            .children_named("interface")
            .map(|i| {
                i.child("mac")
                    .and_then(|m| m.attr("address"))
                    .map(Into::into)
            })
            .collect()
    }

    /// Gives interface `n` (in document order) the address `mac(n)`.
    pub fn set_macs(&mut self, mac: impl Fn(usize) -> String) {
        let Some(devices) = self.doc.root.child_mut("devices") else {
            return;
        };
        let interfaces = devices.elements_mut().filter(|e| e.name == "interface");
        for (n, interface) in interfaces.enumerate() {
            let address = mac(n);
            match interface.child_mut("mac") {
                Some(m) => m.set_attr("address", &address),
                None => {
                    interface.insert_after(&[], Element::new("mac").with_attr("address", &address))
                }
            }
        }
    }

    /// Makes `disk` the domain's boot disk. The template's boot disk (the disk device with
    /// the lowest `<boot order>`, else the first disk device) keeps its target, bus, boot
    /// order, address and driver options and gets the snapshot as its source; a template
    /// without one gets a virtio disk `vda` as the first disk. Either way the disk's driver
    /// gets sftsan's error policies ([`DISK_ERROR_POLICY`]), replacing the template's.
    pub fn set_boot_disk(&mut self, disk: &VmDisk) -> Result<(), XmlError> {
        let root = &mut self.doc.root;
        if root.child("devices").is_none() {
            root.children.push(Node::Element(Element::new("devices")));
        }
        let devices = root.ensure_child("devices");
        match boot_disk(devices) {
            Some(at) => {
                let Node::Element(element) = &mut devices.children[at] else {
                    unreachable!("boot_disk() returns the index of an element");
                };
                replace_source(element, disk);
                Ok(())
            }
            None => {
                if let Some(taken) = devices
                    .children_named("disk")
                    .find(|d| target_dev(d) == Some(DEFAULT_DISK_TARGET))
                {
                    return unusable(format!(
                        "it has no boot disk and its {} device uses {DEFAULT_DISK_TARGET}, the target sftsan gives the VM's disk",
                        taken.attr("device").unwrap_or("disk")
                    ));
                }
                let element = Element::new("disk")
                    .with_attr("type", disk.kind())
                    .with_attr("device", "disk")
                    .with_child(
                        Element::new("driver")
                            .with_attr("name", "qemu")
                            .with_attr("type", disk.format())
                            .with_attr("error_policy", DISK_ERROR_POLICY)
                            .with_attr("rerror_policy", DISK_ERROR_POLICY),
                    )
                    .with_child(disk.source())
                    .with_child(
                        Element::new("target")
                            .with_attr("dev", DEFAULT_DISK_TARGET)
                            .with_attr("bus", "virtio"),
                    );
                devices.insert_after(&["emulator"], element);
                Ok(())
            }
        }
    }
}

fn target_dev(disk: &Element) -> Option<&str> {
    disk.child("target").and_then(|t| t.attr("dev"))
}

/// The index (among `devices`' children) of the boot disk: the `device='disk'` disk with
/// the lowest `<boot order>`, else the first one.
fn boot_disk(devices: &Element) -> Option<usize> {
    let disks = devices
        .children
        .iter()
        .enumerate()
        .filter_map(|(i, n)| match n {
            Node::Element(e)
                if e.name == "disk" && e.attr("device").unwrap_or("disk") == "disk" =>
            {
                Some((i, e))
            }
            _ => None,
        });
    let order = |e: &Element| {
        e.child("boot")
            .and_then(|b| b.attr("order"))
            .and_then(|o| o.parse::<u32>().ok())
            .unwrap_or(u32::MAX)
    };
    // min_by_key keeps the first of equals: document order breaks ties.
    disks.min_by_key(|(_, e)| order(e)).map(|(i, _)| i)
}

/// Points an existing disk at the snapshot: its type, its driver's format and error
/// policies and its source change; a backing chain libvirt recorded for the old source goes.
fn replace_source(element: &mut Element, disk: &VmDisk) {
    element.set_attr("type", disk.kind());
    if element.child("driver").is_none() {
        element.insert_after(&[], Element::new("driver").with_attr("name", "qemu"));
    }
    let driver = element.ensure_child("driver");
    driver.set_attr("type", disk.format());
    driver.set_attr("error_policy", DISK_ERROR_POLICY);
    driver.set_attr("rerror_policy", DISK_ERROR_POLICY);
    element.remove_children("backingStore");
    match element
        .children
        .iter()
        .position(|n| matches!(n, Node::Element(e) if e.name == "source"))
    {
        Some(at) => element.children[at] = Node::Element(disk.source()),
        None => element.insert_after(&["driver"], disk.source()),
    }
}

fn is_sftsan_vm(e: &Element, ancestors: &[&Element]) -> bool {
    e.namespace(ancestors) == Some(SFTSAN_NS) && e.name.rsplit(':').next() == Some("vm")
}

/// sftsan's element in `<metadata>`, found by namespace, whatever its prefix.
fn find_sftsan(root: &Element) -> Option<&Element> {
    let metadata = root.child("metadata")?;
    metadata
        .elements()
        .find(|e| is_sftsan_vm(e, &[root, metadata]))
}

#[cfg(test)]
mod tests;
