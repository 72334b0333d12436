//! libvirt domain XML as serde types (quick-xml), with everything sftsan does not model
//! kept verbatim.
//!
//! The typed part covers what sftsan writes or reads: name, UUID, memory, CPUs, OS,
//! features, lifecycle actions, disks, network interfaces and sftsan's own metadata
//! element. Any other child of `<domain>`, of `<devices>` or of `<metadata>` (a `<clock>`,
//! a `<serial>`, another program's metadata, whatever libvirt adds after a define) is
//! kept as raw XML in [`Domain::extra`], [`Devices::extra`] and [`Metadata::extra`], and
//! written back unchanged. Sub-elements of a disk or an interface that are not modelled
//! here are dropped; libvirt fills in defaults for them (addresses, aliases).

use quick_xml::events::{BytesStart, Event};
use quick_xml::{NsReader, Reader, Writer};
use serde::{Deserialize, Serialize};
use std::io::Write;

/// sftsan's XML namespace for domain metadata.
pub const SFTSAN_NS: &str = "https://sftsan.org/xmlns/domain/1";
/// The prefix sftsan writes its metadata element with (readers match the namespace).
pub const SFTSAN_PREFIX: &str = "sftsan";

#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    #[error("domain XML: {0}")]
    Parse(String),
    #[error("domain XML: cannot write: {0}")]
    Write(String),
}

fn parse_err(e: impl std::fmt::Display) -> XmlError {
    XmlError::Parse(e.to_string())
}

/// An element kept as it was written (one complete element, with its children). Two are
/// equal when they differ only in whitespace between tags (indentation).
#[derive(Debug, Clone, Default)]
pub struct RawXml(pub String);

impl PartialEq for RawXml {
    fn eq(&self, other: &RawXml) -> bool {
        self.normalized() == other.normalized()
    }
}

impl Eq for RawXml {}

impl RawXml {
    /// The element without whitespace-only text between tags.
    pub fn normalized(&self) -> String {
        let mut reader = Reader::from_str(&self.0);
        reader.config_mut().trim_text(true);
        let mut writer = Writer::new(Vec::new());
        loop {
            match reader.read_event() {
                Ok(Event::Eof) => break,
                Ok(ev) => {
                    if writer.write_event(ev).is_err() {
                        return self.0.clone();
                    }
                }
                Err(_) => return self.0.clone(),
            }
        }
        String::from_utf8(writer.into_inner()).unwrap_or_else(|_| self.0.clone())
    }

    /// The element's name as written (with its prefix, if any).
    pub fn name(&self) -> Option<String> {
        let mut reader = Reader::from_str(&self.0);
        loop {
            match reader.read_event() {
                Ok(Event::Start(e)) | Ok(Event::Empty(e)) => return Some(e.name().0.to_string()),
                Ok(Event::Eof) | Err(_) => return None,
                _ => {}
            }
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename = "domain")]
pub struct Domain {
    /// `qemu` (TCG), `kvm`, ...
    #[serde(rename = "@type")]
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// Filled from the raw XML (namespaced children), never by serde.
    #[serde(skip)]
    pub metadata: Metadata,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<Memory>,
    #[serde(
        rename = "currentMemory",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub current_memory: Option<Memory>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vcpu: Option<Vcpu>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<Os>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub features: Option<Features>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_poweroff: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_reboot: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_crash: Option<String>,
    #[serde(default)]
    pub devices: Devices,
    /// Children of `<domain>` sftsan does not model, verbatim and in order.
    #[serde(skip)]
    pub extra: Vec<RawXml>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Memory {
    #[serde(rename = "@unit", default, skip_serializing_if = "Option::is_none")]
    pub unit: Option<String>,
    #[serde(rename = "$text")]
    pub value: u64,
}

impl Memory {
    pub fn mib(n: u64) -> Memory {
        Memory {
            unit: Some("MiB".into()),
            value: n,
        }
    }

    /// The amount in bytes (libvirt's units; KiB when none is given).
    pub fn bytes(&self) -> u64 {
        let unit = self.unit.as_deref().unwrap_or("KiB");
        let factor: u64 = match unit {
            "b" | "bytes" => 1,
            "KB" => 1000,
            "k" | "KiB" => 1 << 10,
            "MB" => 1000 * 1000,
            "M" | "MiB" => 1 << 20,
            "GB" => 1000 * 1000 * 1000,
            "G" | "GiB" => 1 << 30,
            "TB" => 1000 * 1000 * 1000 * 1000,
            "T" | "TiB" => 1 << 40,
            _ => 1 << 10,
        };
        self.value * factor
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Vcpu {
    #[serde(
        rename = "@placement",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub placement: Option<String>,
    #[serde(rename = "$text")]
    pub count: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Os {
    #[serde(rename = "type")]
    pub os_type: OsType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub boot: Vec<Boot>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OsType {
    #[serde(rename = "@arch", default, skip_serializing_if = "Option::is_none")]
    pub arch: Option<String>,
    #[serde(rename = "@machine", default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    #[serde(rename = "$text")]
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Boot {
    #[serde(rename = "@dev")]
    pub dev: String,
}

/// An empty marker element such as `<acpi/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Flag {}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Features {
    /// Required by libvirt 9 with QEMU 10 (without it QEMU is given `-no-acpi`, which it
    /// no longer knows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acpi: Option<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub apic: Option<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pae: Option<Flag>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Devices {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emulator: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disk: Vec<Disk>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interface: Vec<Interface>,
    /// Other devices (controllers, consoles, serial ports, ...), verbatim and in order.
    #[serde(skip)]
    pub extra: Vec<RawXml>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Disk {
    /// `file`, `block`, `network`, `volume`
    #[serde(rename = "@type")]
    pub kind: String,
    /// `disk`, `cdrom`, ...
    #[serde(rename = "@device")]
    pub device: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver: Option<DiskDriver>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<DiskSource>,
    pub target: DiskTarget,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readonly: Option<Flag>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot: Option<BootOrder>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<Alias>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskDriver {
    #[serde(rename = "@name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "@type", default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
    #[serde(rename = "@cache", default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<String>,
    #[serde(rename = "@discard", default, skip_serializing_if = "Option::is_none")]
    pub discard: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskSource {
    #[serde(rename = "@file", default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
    #[serde(rename = "@dev", default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(rename = "@protocol", default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(rename = "@name", default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(rename = "@pool", default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
    #[serde(rename = "@volume", default, skip_serializing_if = "Option::is_none")]
    pub volume: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DiskTarget {
    #[serde(rename = "@dev")]
    pub dev: String,
    #[serde(rename = "@bus", default, skip_serializing_if = "Option::is_none")]
    pub bus: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct BootOrder {
    #[serde(rename = "@order")]
    pub order: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Alias {
    #[serde(rename = "@name")]
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Interface {
    /// `network`, `bridge`, `user`, `ethernet`, ...
    #[serde(rename = "@type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<Mac>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<InterfaceSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<Alias>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Mac {
    #[serde(rename = "@address")]
    pub address: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct InterfaceSource {
    #[serde(rename = "@network", default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    #[serde(rename = "@bridge", default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    #[serde(rename = "@dev", default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<String>,
    #[serde(rename = "@mode", default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Model {
    #[serde(rename = "@type")]
    pub kind: String,
}

/// `<metadata>`: sftsan's element (by namespace) and everyone else's, verbatim.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Metadata {
    pub sftsan: Option<SftsanMeta>,
    pub extra: Vec<RawXml>,
}

/// Whether a VM's disk outlives a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmMode {
    /// The snapshot stays across stop and start (the VM keeps its writes).
    #[default]
    Persistent,
    /// The snapshot is discarded when the VM stops: every start begins from the image.
    Stateless,
}

impl VmMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VmMode::Persistent => "persistent",
            VmMode::Stateless => "stateless",
        }
    }
}

impl std::str::FromStr for VmMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "persistent" => Ok(VmMode::Persistent),
            "stateless" => Ok(VmMode::Stateless),
            _ => Err(format!("{s:?}: expected persistent or stateless")),
        }
    }
}

/// `<sftsan:vm xmlns:sftsan="https://sftsan.org/xmlns/domain/1" .../>`: what the hook
/// needs to serve the domain without asking libvirt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SftsanMeta {
    #[serde(rename = "@cluster")]
    pub cluster: String,
    #[serde(rename = "@image")]
    pub image: String,
    #[serde(rename = "@node")]
    pub node: String,
    /// The snapshot's index on its node (1-based).
    #[serde(rename = "@snapshot")]
    pub snapshot: u32,
    #[serde(rename = "@mode")]
    pub mode: VmMode,
    /// The cluster spec (absolute path).
    #[serde(rename = "@spec")]
    pub spec: String,
}

impl SftsanMeta {
    fn to_raw(&self) -> Result<RawXml, XmlError> {
        let mut text = String::new();
        let ser = quick_xml::se::Serializer::with_root(&mut text, Some("vm"))
            .map_err(|e| XmlError::Write(e.to_string()))?;
        self.serialize(ser)
            .map_err(|e| XmlError::Write(e.to_string()))?;
        // Put the element in sftsan's namespace: prefix it and declare the prefix.
        let body = text
            .strip_prefix("<vm")
            .ok_or_else(|| XmlError::Write(format!("unexpected metadata XML {text}")))?;
        Ok(RawXml(format!(
            "<{SFTSAN_PREFIX}:vm xmlns:{SFTSAN_PREFIX}=\"{SFTSAN_NS}\"{body}"
        )))
    }

    fn from_raw(raw: &str) -> Result<SftsanMeta, XmlError> {
        quick_xml::de::from_str(raw).map_err(|e| parse_err(format!("sftsan metadata: {e}")))
    }
}

/// The top-level children of `<domain>` the typed part covers.
const DOMAIN_KNOWN: &[&str] = &[
    "name",
    "uuid",
    "title",
    "description",
    "metadata",
    "memory",
    "currentMemory",
    "vcpu",
    "os",
    "features",
    "on_poweroff",
    "on_reboot",
    "on_crash",
    "devices",
];
const DEVICES_KNOWN: &[&str] = &["emulator", "disk", "interface"];

impl Domain {
    /// Parses a domain's XML (a template, or libvirt's own after a define).
    pub fn from_xml(text: &str) -> Result<Domain, XmlError> {
        let mut domain: Domain = quick_xml::de::from_str(text).map_err(parse_err)?;
        let split = split_children(text)?;
        domain.extra = split.domain_extra;
        domain.devices.extra = split.devices_extra;
        for (raw, in_sftsan_ns) in split.metadata {
            if in_sftsan_ns && domain.metadata.sftsan.is_none() {
                domain.metadata.sftsan = Some(SftsanMeta::from_raw(&raw.0)?);
            } else {
                domain.metadata.extra.push(raw);
            }
        }
        Ok(domain)
    }

    /// The domain as libvirt XML: the typed part, then the kept raw elements.
    pub fn to_xml(&self) -> Result<String, XmlError> {
        let typed = quick_xml::se::to_string(self).map_err(|e| XmlError::Write(e.to_string()))?;
        let mut metadata = self.metadata.extra.clone();
        if let Some(m) = &self.metadata.sftsan {
            metadata.insert(0, m.to_raw()?);
        }
        splice(&typed, &metadata, &self.devices.extra, &self.extra)
    }

    /// sftsan's metadata, if this is one of sftsan's domains.
    pub fn sftsan(&self) -> Option<&SftsanMeta> {
        self.metadata.sftsan.as_ref()
    }
}

struct Split {
    domain_extra: Vec<RawXml>,
    devices_extra: Vec<RawXml>,
    /// Children of `<metadata>`, and whether each is in sftsan's namespace.
    metadata: Vec<(RawXml, bool)>,
}

/// Collects, verbatim, the children of `<domain>` and `<devices>` that the typed part does
/// not cover, and every child of `<metadata>`.
fn split_children(text: &str) -> Result<Split, XmlError> {
    let mut reader = NsReader::from_str(text);
    let mut split = Split {
        domain_extra: vec![],
        devices_extra: vec![],
        metadata: vec![],
    };
    let mut path: Vec<String> = Vec::new();
    loop {
        let before = reader.buffer_position() as usize;
        let (ns, event) = reader.read_resolved_event().map_err(parse_err)?;
        let in_ours = matches!(ns, quick_xml::name::ResolveResult::Bound(n) if n.0 == SFTSAN_NS);
        match event {
            Event::Start(e) => {
                let name = e.name().0.to_string();
                let parent: Vec<&str> = path.iter().map(String::as_str).collect();
                let target = classify(&parent, &name);
                if let Some(target) = target {
                    let end = e.to_end().into_owned();
                    reader.read_to_end(end.name()).map_err(parse_err)?;
                    let after = reader.buffer_position() as usize;
                    let raw = RawXml(text[before..after].trim().to_string());
                    push(&mut split, target, raw, in_ours);
                } else {
                    path.push(name);
                }
            }
            Event::Empty(e) => {
                let name = e.name().0.to_string();
                let parent: Vec<&str> = path.iter().map(String::as_str).collect();
                if let Some(target) = classify(&parent, &name) {
                    let after = reader.buffer_position() as usize;
                    let raw = RawXml(text[before..after].trim().to_string());
                    push(&mut split, target, raw, in_ours);
                }
            }
            Event::End(_) => {
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(split)
}

#[derive(Clone, Copy)]
enum Target {
    Domain,
    Devices,
    Metadata,
}

fn classify(parent: &[&str], name: &str) -> Option<Target> {
    match parent {
        ["domain"] if !DOMAIN_KNOWN.contains(&name) => Some(Target::Domain),
        ["domain", "devices"] if !DEVICES_KNOWN.contains(&name) => Some(Target::Devices),
        ["domain", "metadata"] => Some(Target::Metadata),
        _ => None,
    }
}

fn push(split: &mut Split, target: Target, raw: RawXml, in_ours: bool) {
    match target {
        Target::Domain => split.domain_extra.push(raw),
        Target::Devices => split.devices_extra.push(raw),
        Target::Metadata => split.metadata.push((raw, in_ours)),
    }
}

/// Rewrites the serialized typed domain with the raw elements put back: `<metadata>` after
/// the uuid/description block, device extras at the end of `<devices>`, domain extras at
/// the end of `<domain>`. Indents the result.
fn splice(
    typed: &str,
    metadata: &[RawXml],
    devices: &[RawXml],
    domain: &[RawXml],
) -> Result<String, XmlError> {
    let werr = |e: std::io::Error| XmlError::Write(e.to_string());
    let mut reader = Reader::from_str(typed);
    let mut writer = Writer::new_with_indent(Vec::new(), b' ', 2);
    let mut depth = 0usize;
    let mut metadata_written = metadata.is_empty();
    // Raw elements go in as events of their own, so that the writer indents them.
    let write_raw = |writer: &mut Writer<Vec<u8>>, raws: &[RawXml]| -> Result<(), XmlError> {
        for raw in raws {
            let mut r = Reader::from_str(&raw.0);
            r.config_mut().trim_text(true);
            loop {
                match r.read_event().map_err(parse_err)? {
                    Event::Eof => break,
                    ev => writer.write_event(ev).map_err(werr)?,
                }
            }
        }
        Ok(())
    };
    let write_metadata = |writer: &mut Writer<Vec<u8>>| -> Result<(), XmlError> {
        writer
            .write_event(Event::Start(BytesStart::new("metadata")))
            .map_err(werr)?;
        write_raw(writer, metadata)?;
        writer
            .write_event(Event::End(BytesStart::new("metadata").to_end()))
            .map_err(werr)?;
        Ok(())
    };
    loop {
        let event = reader.read_event().map_err(parse_err)?;
        match &event {
            Event::Start(e) => {
                if depth == 1
                    && !metadata_written
                    && !matches!(e.name().0, "name" | "uuid" | "title" | "description")
                {
                    write_metadata(&mut writer)?;
                    metadata_written = true;
                }
                depth += 1;
            }
            Event::Empty(e) => {
                if depth == 1 && !metadata_written && e.name().0 != "uuid" {
                    write_metadata(&mut writer)?;
                    metadata_written = true;
                }
                if depth == 1 && e.name().0 == "devices" && !devices.is_empty() {
                    // An empty <devices/> that gets children.
                    writer.write_event(Event::Start(e.clone())).map_err(werr)?;
                    write_raw(&mut writer, devices)?;
                    writer.write_event(Event::End(e.to_end())).map_err(werr)?;
                    continue;
                }
            }
            Event::End(e) => {
                depth -= 1;
                if depth == 1 && e.name().0 == "devices" {
                    write_raw(&mut writer, devices)?;
                }
                if depth == 0 {
                    if !metadata_written {
                        write_metadata(&mut writer)?;
                        metadata_written = true;
                    }
                    write_raw(&mut writer, domain)?;
                }
            }
            Event::Eof => break,
            _ => {}
        }
        writer.write_event(event).map_err(werr)?;
    }
    let mut out = writer.into_inner();
    out.write_all(b"\n").map_err(werr)?;
    String::from_utf8(out).map_err(|e| XmlError::Write(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIBVIRT_LIKE: &str = r#"<domain type='qemu' id='3'>
  <name>c1-n1-1</name>
  <uuid>6f1c2a8e-0b1d-4c2e-9a7f-5d3e2b1a0c9d</uuid>
  <metadata>
    <other:thing xmlns:other="http://example.org/other/1"><other:x a="1">text</other:x></other:thing>
    <sftsan:vm xmlns:sftsan="https://sftsan.org/xmlns/domain/1" cluster="c1" image="base" node="n1" snapshot="1" mode="stateless" spec="/tmp/spec.toml"/>
  </metadata>
  <memory unit='KiB'>65536</memory>
  <currentMemory unit='KiB'>65536</currentMemory>
  <vcpu placement='static'>1</vcpu>
  <resource>
    <partition>/machine</partition>
  </resource>
  <os>
    <type arch='x86_64' machine='pc-i440fx-10.0'>hvm</type>
    <boot dev='hd'/>
  </os>
  <features>
    <acpi/>
  </features>
  <cpu mode='custom' match='exact' check='full'>
    <model fallback='forbid'>qemu64</model>
  </cpu>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>restart</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='/s/n1/base-1.qcow2' index='2'/>
      <backingStore type='network' index='3'>
        <format type='raw'/>
        <source protocol='nbd' name='base'>
          <host name='127.0.0.1' port='10809'/>
        </source>
        <backingStore/>
      </backingStore>
      <target dev='vda' bus='virtio'/>
      <alias name='virtio-disk0'/>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x04' function='0x0'/>
    </disk>
    <controller type='usb' index='0' model='piix3-uhci'>
      <address type='pci' domain='0x0000' bus='0x00' slot='0x01' function='0x2'/>
    </controller>
    <interface type='user'>
      <mac address='02:11:22:33:44:55'/>
      <model type='virtio'/>
    </interface>
    <memballoon model='none'/>
  </devices>
  <seclabel type='dynamic' model='dac' relabel='yes'>
    <label>+64055:+107</label>
  </seclabel>
</domain>
"#;

    #[test]
    fn parses_libvirt_xml_and_keeps_what_it_does_not_model() {
        let d = Domain::from_xml(LIBVIRT_LIKE).unwrap();
        assert_eq!(d.kind, "qemu");
        assert_eq!(d.name, "c1-n1-1");
        assert_eq!(d.memory.as_ref().unwrap().bytes(), 64 << 20);
        assert_eq!(d.vcpu.as_ref().unwrap().count, 1);
        assert!(d.features.as_ref().unwrap().acpi.is_some());
        let meta = d.sftsan().unwrap();
        assert_eq!(meta.node, "n1");
        assert_eq!(meta.snapshot, 1);
        assert_eq!(meta.mode, VmMode::Stateless);
        assert_eq!(d.metadata.extra.len(), 1);
        assert!(d.metadata.extra[0].0.contains("other:x"));
        let names: Vec<_> = d.extra.iter().filter_map(RawXml::name).collect();
        assert_eq!(names, ["resource", "cpu", "clock", "seclabel"]);
        let devs: Vec<_> = d.devices.extra.iter().filter_map(RawXml::name).collect();
        assert_eq!(devs, ["controller", "memballoon"]);
        assert_eq!(d.devices.disk.len(), 1);
        let disk = &d.devices.disk[0];
        assert_eq!(
            disk.source.as_ref().unwrap().file.as_deref(),
            Some("/s/n1/base-1.qcow2")
        );
        assert_eq!(
            disk.driver.as_ref().unwrap().format.as_deref(),
            Some("qcow2")
        );
        assert_eq!(
            d.devices.interface[0].mac.as_ref().unwrap().address,
            "02:11:22:33:44:55"
        );
    }

    #[test]
    fn round_trips_through_its_own_xml() {
        let d = Domain::from_xml(LIBVIRT_LIKE).unwrap();
        let text = d.to_xml().unwrap();
        let again = Domain::from_xml(&text).unwrap();
        assert_eq!(d, again, "{text}");
        // Metadata comes right after the uuid, the rest in libvirt's order is not needed.
        let uuid = text.find("<uuid>").unwrap();
        let metadata = text.find("<metadata>").unwrap();
        let memory = text.find("<memory").unwrap();
        assert!(uuid < metadata && metadata < memory, "{text}");
        assert!(
            text.contains(&format!("xmlns:sftsan=\"{SFTSAN_NS}\"")),
            "{text}"
        );
    }

    #[test]
    fn metadata_is_found_by_namespace_not_prefix() {
        let text = LIBVIRT_LIKE
            .replace("<sftsan:vm xmlns:sftsan=", "<s2:vm xmlns:s2=")
            .replace("other:thing", "x:thing")
            .replace("xmlns:other", "xmlns:x");
        let d = Domain::from_xml(&text).unwrap();
        assert_eq!(d.sftsan().unwrap().cluster, "c1");
        let not_ours = LIBVIRT_LIKE.replace(SFTSAN_NS, "https://example.org/not-sftsan");
        let d = Domain::from_xml(&not_ours).unwrap();
        assert!(d.sftsan().is_none());
        assert_eq!(d.metadata.extra.len(), 2);
    }

    #[test]
    fn a_domain_without_metadata_or_devices_writes_valid_xml() {
        let d = Domain {
            kind: "qemu".into(),
            name: "x".into(),
            ..Default::default()
        };
        let text = d.to_xml().unwrap();
        assert_eq!(Domain::from_xml(&text).unwrap(), d, "{text}");
        let mut with_meta = d.clone();
        with_meta.metadata.sftsan = Some(SftsanMeta {
            cluster: "c".into(),
            image: "i".into(),
            node: "n".into(),
            snapshot: 2,
            mode: VmMode::Persistent,
            spec: "/a b/<spec>&.toml".into(),
        });
        with_meta
            .devices
            .extra
            .push(RawXml("<console type='pty'/>".into()));
        let text = with_meta.to_xml().unwrap();
        assert_eq!(Domain::from_xml(&text).unwrap(), with_meta, "{text}");
    }

    #[test]
    fn bad_xml_is_an_error() {
        assert!(Domain::from_xml("<domain type='qemu'><name>x</nam></domain>").is_err());
        assert!(Domain::from_xml("not xml").is_err());
    }
}
