//! The cluster spec: what an operator writes (TOML), parsed with serde and validated
//! before anything on the system is touched.

mod bytesize;
mod devices;
mod legacy;
mod ssh;
mod validate;

pub use bytesize::ByteSize;
pub use legacy::{import_legacy, Imported, LegacyError, LegacyMode, LegacyWarning};
pub use validate::{
    cache_needed, check_name, check_rules, image_identity, measure_image, validate, MeasuredImage,
    ValidatedSpec, CLUSTER_NAME_MAX, NAME_MAX,
};

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// Default NBD port every node's relay export listens on.
pub const DEFAULT_PORT: u16 = 10809;

/// A validation or parse failure: names the field and says what is wrong, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {problem}")]
pub struct SpecError {
    /// Where the problem is: a field path such as `nodes[1].address`, or `spec line 7`.
    pub field: String,
    /// What is wrong there, in one line.
    pub problem: String,
}

impl From<SpecError> for crate::error::Error {
    fn from(e: SpecError) -> crate::error::Error {
        crate::error::Error::invalid(e.field, e.problem)
    }
}

impl SpecError {
    /// A failure of `field`, saying what the `problem` is.
    pub fn new(field: impl Into<String>, problem: impl Into<String>) -> Self {
        SpecError {
            field: field.into(),
            problem: problem.into(),
        }
    }
}

/// A whole cluster spec file, as parsed (not yet validated).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    /// `[cluster]`: name, state directory, backend, mode and tree shape.
    pub cluster: ClusterSection,
    /// `[image]`: the image to distribute.
    pub image: ImageSpec,
    /// `[origin]`: the node that serves the image to the tree's first level.
    pub origin: OriginSpec,
    /// `[[nodes]]`: the nodes that receive the image; their order sets their place in the tree.
    #[serde(default)]
    pub nodes: Vec<NodeSpec>,
    /// `[cache]`: where and how large each node's image cache is.
    pub cache: CacheSpec,
    /// `[snapshots]`: the VM disks every node gets on top of its cache.
    pub snapshots: SnapshotSpec,
    /// Present when `cluster.mode = "local"`: every node is a network namespace on a bridge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalSpec>,
    /// Settings of the kernel backend (`cluster.backend = "kernel"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<KernelSpec>,
    /// How the controller reaches the hosts of a remote cluster (`cluster.mode = "remote"`):
    /// defaults for every node's `ssh`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshSpec>,
}

/// The `[cluster]` section: settings that apply to the whole cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Prefix of every name sftsan puts on a system (namespaces, files, exports).
    pub name: String,
    /// Journal, daemon sockets, pid files and (by default) caches and snapshots live here.
    pub state_dir: PathBuf,
    /// Which storage stack every node runs; default `userspace`.
    #[serde(default)]
    pub backend: Backend,
    /// Where the nodes run: this host's namespace (default) or local network namespaces.
    #[serde(default)]
    pub mode: Mode,
    /// Children per node: 1 = chain, 2 = binary tree, >= nodes = star.
    pub degree: u32,
    /// TCP port of every node's NBD export.
    #[serde(default = "default_port")]
    pub port: u16,
    /// How many nodes of one tree level are set up at once.
    #[serde(default = "default_parallelism")]
    pub parallelism: u32,
    /// How long a node waits for its parent to accept a connection.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
}

/// The storage stack a cluster's nodes are built from (`cluster.backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// qemu-storage-daemon, NBD and qcow2: needs no kernel storage modules.
    #[default]
    Userspace,
    /// device-mapper, loop, LIO/tgt and open-iscsi.
    Kernel,
}

/// Where a cluster's nodes run (`cluster.mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every node is a network namespace on one machine (needs `[local]`).
    Local,
    /// Every node runs in this process's own network namespace (e.g. 127.0.0.x addresses).
    #[default]
    Host,
    /// Every node is a machine of its own, reached over SSH (`[ssh]` and each node's
    /// `ssh`); each host runs its part of the plan with its own sftsan.
    Remote,
}

/// The `[image]` section: the image the cluster distributes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSpec {
    /// Short name of the image; names its exports, caches and snapshot files.
    pub name: String,
    /// A raw image file or block device on the origin.
    pub source: PathBuf,
    /// Expected size; when given it must match the source.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<ByteSize>,
}

/// The `[origin]` section: the tree's root, which serves the image itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OriginSpec {
    /// The origin's node name; default `origin`.
    #[serde(default = "default_origin_name")]
    pub name: String,
    /// IP address the origin serves the image on, e.g. `10.0.0.1`.
    pub address: IpAddr,
    /// false: the image server is run by someone else at address:port, export = image name.
    #[serde(default = "default_true")]
    pub managed: bool,
    /// How the origin serves the image to its children.
    #[serde(default)]
    pub protocol: OriginProtocol,
    /// iSCSI portal port (protocol = "iscsi").
    #[serde(default = "default_iscsi_port")]
    pub iscsi_port: u16,
    /// iSCSI target name; default `iqn.2014-12.org.sftsan:<cluster>.<image>`. Required
    /// for an unmanaged iSCSI origin.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iscsi_target: Option<String>,
    /// tgtd's management port (private per cluster); default derived from the cluster name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iscsi_control_port: Option<u16>,
    /// The origin host's SSH destination (mode remote, managed origin); default its address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<NodeSsh>,
}

/// The protocol the origin serves the image with (`origin.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OriginProtocol {
    /// qemu-storage-daemon's NBD export.
    #[default]
    Nbd,
    /// A read-only LUN of a tgtd (userspace iSCSI target), open only to the origin's children.
    Iscsi,
}

/// One `[[nodes]]` entry: a machine (or namespace) that receives the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSpec {
    /// The node's name, unique in the cluster, e.g. `n1`.
    pub name: String,
    /// IP address the node's export listens on, e.g. `10.0.0.2`; unique in the cluster.
    pub address: IpAddr,
    /// Block devices the kernel backend keeps this node's stores on, instead of
    /// loop-backed files in the cache directory.
    #[serde(default, skip_serializing_if = "NodeDevices::is_empty")]
    pub devices: NodeDevices,
    /// The node's SSH destination (mode remote); default its address, with `[ssh]`'s user,
    /// port and identity file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssh: Option<NodeSsh>,
}

/// A node's stores on block devices (LVs, partitions, disks), each optional: a store
/// without a device is a loop-backed file. sftsan takes over only blank devices that
/// nothing uses, and clears their first MiB when it takes them and when it gives them back.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeDevices {
    /// dm-cache's cache device, or dm-clone's destination: at least the image's size.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<PathBuf>,
    /// The metadata device of dm-cache or dm-clone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_metadata: Option<PathBuf>,
    /// COW stores of the VMs' dm-snapshots, for VM disks 1, 2, ... in order (a disk beyond
    /// the list gets a loop-backed file). A VM can write as much as its COW device holds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cow: Vec<PathBuf>,
    /// The thin pool's data device (`snapshots.kind = "dm-thin"`): what all VMs write.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin_data: Option<PathBuf>,
    /// The thin pool's metadata device.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thin_metadata: Option<PathBuf>,
}

impl NodeDevices {
    /// Whether no device is named, so every store is a loop-backed file.
    pub fn is_empty(&self) -> bool {
        self.named().is_empty()
    }

    /// Every device named, with its field below `devices`.
    pub fn named(&self) -> Vec<(String, &Path)> {
        let one = Self::field;
        one("cache", &self.cache)
            .into_iter()
            .chain(one("cache_metadata", &self.cache_metadata))
            .chain(
                self.cow
                    .iter()
                    .enumerate()
                    .map(|(i, p)| (format!("cow[{i}]"), p.as_path())),
            )
            .chain(one("thin_data", &self.thin_data))
            .chain(one("thin_metadata", &self.thin_metadata))
            .collect()
    }

    /// (`field`, its device) when `device` is set.
    pub fn field<'a>(field: &str, device: &'a Option<PathBuf>) -> Option<(String, &'a Path)> {
        device.as_deref().map(|p| (field.to_string(), p))
    }
}

/// The `[cache]` section: every node's local copy of the image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheSpec {
    /// Where node caches live; default `<state_dir>/nodes/<node>/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<PathBuf>,
    /// Largest cache per node; must hold the whole image.
    pub size: ByteSize,
    /// Cached blocks are made durable at least this often (a crash loses at most this much).
    #[serde(default = "default_flush_interval_ms")]
    pub flush_interval_ms: u64,
}

/// The `[snapshots]` section: the writable VM disks made on every node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotSpec {
    /// How many VM disks (snapshots of the image) each node gets, numbered from 1.
    pub per_node: u32,
    /// How those disks are made; must suit `cluster.backend`. Default `qcow2`.
    #[serde(default)]
    pub kind: SnapshotKind,
}

/// How a node's VM disks are made (`snapshots.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SnapshotKind {
    /// A qcow2 overlay backed by the node's export (userspace backend).
    #[default]
    Qcow2,
    /// dm-snapshot with a persistent COW store (kernel backend).
    DmSnapshot,
    /// dm-thin volume with an external origin (kernel backend).
    DmThin,
}

/// The `[kernel]` section: settings of the kernel backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelSpec {
    /// The device-mapper target that caches the image on every node; default `dm-cache`.
    #[serde(default)]
    pub cache: KernelCache,
    /// The iSCSI target every node serves its children with; default `lio`.
    #[serde(default)]
    pub relay: RelayTarget,
    /// iSCSI portal port of every node's target.
    #[serde(default = "default_iscsi_port")]
    pub iscsi_port: u16,
    /// CHAP credentials children log in with; every target requires them.
    pub chap_user: String,
    /// CHAP password that goes with `chap_user`: 12 to 255 printable characters.
    pub chap_secret: String,
    /// Let any initiator log in (no ACLs). Off unless asked for: never for production.
    #[serde(default)]
    pub open_access: bool,
}

/// The device-mapper target that holds a node's copy of the image (`kernel.cache`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelCache {
    /// dm-cache, writethrough, smq policy.
    #[default]
    DmCache,
    /// dm-clone: copies the whole image in the background; regions not copied yet are
    /// read from the parent. Needs the kernel's clone target (`dm_clone`).
    DmClone,
}

/// The iSCSI target that serves a node's image to its children (`kernel.relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RelayTarget {
    /// The kernel's LIO target, configured through configfs.
    #[default]
    Lio,
    /// tgtd (userspace), configured with tgtadm.
    Tgt,
}

/// The `[local]` section: the emulated network of local mode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalSpec {
    /// Every node address lies in it; an `unreachable` route for it guards the root namespace.
    pub subnet: ipnet::Ipv4Net,
    /// Limits every node's link to this many Mbit/s each way (a tbf qdisc on both ends of
    /// its veth), so the emulated network has the bottlenecks of a real one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_mbit: Option<u32>,
}

/// The `[ssh]` section: how the controller reaches every host of a remote cluster. The
/// system's OpenSSH client does it, so ~/.ssh/config, agents and jump hosts apply.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    /// User to log in as on every host; default: what ~/.ssh/config or ssh itself picks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// SSH port of every host; default: ~/.ssh/config's, else 22.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Private key to log in with (absolute path); default: ssh's own choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
    /// The host keys sftsan trusts (absolute path); default `<state_dir>/known_hosts`.
    /// A host is added only by `sftsan hosts trust`; a changed key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_hosts: Option<PathBuf>,
    /// The sftsan program on the hosts; default `sftsan` (found on the remote PATH). A
    /// host without it, or with another version, gets the controller's own copy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub program: Option<PathBuf>,
    /// Where such copies go on the hosts, each named by its sha256 (absolute path);
    /// default `/var/lib/sftsan/bin`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub install_dir: Option<PathBuf>,
    /// How many hosts are worked on at once (SSH sessions); default 32.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_sessions: Option<u32>,
    /// Seconds to wait for a host's SSH connection; default 10.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_timeout_s: Option<u32>,
}

/// A host's SSH destination: each field given replaces `[ssh]`'s.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSsh {
    /// Host name or address to connect to; default the node's address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// User to log in as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// SSH port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Private key to log in with (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity_file: Option<PathBuf>,
}

fn default_port() -> u16 {
    DEFAULT_PORT
}
fn default_parallelism() -> u32 {
    4
}
fn default_connect_timeout_ms() -> u64 {
    5000
}
fn default_flush_interval_ms() -> u64 {
    1000
}
fn default_origin_name() -> String {
    "origin".into()
}
fn default_iscsi_port() -> u16 {
    3260
}
fn default_true() -> bool {
    true
}

impl ClusterSpec {
    /// Parse a spec from TOML text; the error names the offending key.
    pub fn from_toml(text: &str) -> Result<Self, SpecError> {
        toml::from_str(text).map_err(|e| {
            let field = e
                .span()
                .map(|s| text[..s.start].lines().count().max(1))
                .map(|line| format!("spec line {line}"))
                .unwrap_or_else(|| "spec".into());
            // toml's messages run over several lines; errors here are one.
            let message: Vec<&str> = e.message().lines().map(str::trim).collect();
            SpecError::new(field, message.join("; "))
        })
    }

    /// Read and parse a spec file.
    pub fn load(path: &Path) -> Result<Self, SpecError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| SpecError::new("spec", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text)
    }

    /// The spec as TOML text, which [`ClusterSpec::from_toml`] reads back.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a spec always serializes")
    }
}

/// A small spec's TOML for unit tests: an origin and nodes n1 and n2 on 127.0.0.x, with
/// `n1_extra` added to n1's entry (the image is not checked until validation).
#[cfg(test)]
pub(crate) fn test_spec_text(state_dir: &str, backend: &str, kind: &str, n1_extra: &str) -> String {
    format!(
        r#"
        [cluster]
        name = "c"
        state_dir = "{state_dir}"
        backend = "{backend}"
        degree = 2
        [image]
        name = "base"
        source = "/srv/base.img"
        [origin]
        address = "127.0.0.1"
        [[nodes]]
        name = "n1"
        address = "127.0.0.2"
        {n1_extra}
        [[nodes]]
        name = "n2"
        address = "127.0.0.3"
        [cache]
        size = "8MiB"
        [snapshots]
        per_node = 2
        kind = "{kind}"
        "#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example specs stay valid as the spec evolves, commented-out keys included.
    #[test]
    fn every_example_spec_parses() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let name = path.display();
            let spec = ClusterSpec::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
            devices::check(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
            let uncommented = text.replace("\n# devices = ", "\ndevices = ");
            if uncommented != text {
                let spec = ClusterSpec::from_toml(&uncommented)
                    .unwrap_or_else(|e| panic!("{name}, devices uncommented: {e}"));
                assert!(spec.nodes.iter().any(|n| !n.devices.is_empty()));
                devices::check(&spec).unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            seen += 1;
        }
        assert!(seen >= 3, "only {seen} example specs in {}", dir.display());
    }
}
