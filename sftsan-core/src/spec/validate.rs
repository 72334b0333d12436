//! Checks a parsed spec before anything on the system is touched. The first problem found
//! is returned as one [`SpecError`] naming the TOML path of the field and the bad value.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::net::IpAddr;
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use super::{
    Backend, ByteSize, CacheSpec, ClusterSpec, ImageSpec, Mode, OriginProtocol, SnapshotKind,
    SpecError,
};

/// Longest node, origin and image name.
pub const NAME_MAX: usize = 32;
/// Longest cluster name: it prefixes every name sftsan puts on a system.
pub const CLUSTER_NAME_MAX: usize = 16;

/// Shortest interval at which caches are flushed.
const FLUSH_INTERVAL_MIN_MS: u64 = 100;
/// Image sizes are whole 512-byte sectors.
const SECTOR: u64 = 512;

/// A spec that passed validation, with facts learned while validating: the image's size
/// and identity. [`validate`] measures the image here; [`ValidatedSpec::measured`] takes
/// what the host holding it measured (a remote cluster's origin).
#[derive(Debug, Clone)]
pub struct ValidatedSpec {
    spec: ClusterSpec,
    image: MeasuredImage,
}

/// What a host holding `image.source` measured of it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MeasuredImage {
    /// Its size in bytes.
    pub size: u64,
    /// What image it is ([`image_identity`]): caches of another image are not reused.
    pub identity: String,
}

impl ValidatedSpec {
    /// The spec that passed validation.
    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Size in bytes of `image.source`, as measured while validating.
    pub fn image_size(&self) -> u64 {
        self.image.size
    }

    /// What image `image.source` is ([`image_identity`]).
    pub fn image_identity(&self) -> &str {
        &self.image.identity
    }

    /// The image as measured: its size and identity.
    pub fn image(&self) -> &MeasuredImage {
        &self.image
    }

    /// A spec whose image another host measured: every rule is checked, the image
    /// against what was measured.
    pub fn measured(spec: ClusterSpec, image: MeasuredImage) -> Result<ValidatedSpec, SpecError> {
        check_rules(&spec)?;
        check_expected_size(&spec.image, image.size)?;
        check_cache_size(&spec.cache, image.size)?;
        Ok(ValidatedSpec { spec, image })
    }

    /// The spec that passed validation, dropping what was learned while validating.
    pub fn into_spec(self) -> ClusterSpec {
        self.spec
    }
}

/// Checks every rule a spec must follow; returns the first problem found.
pub fn validate(spec: ClusterSpec) -> Result<ValidatedSpec, SpecError> {
    check_rules(&spec)?;
    let image = measure_image(&spec.image)?;
    check_cache_size(&spec.cache, image.size)?;
    Ok(ValidatedSpec { spec, image })
}

/// Measures `image.source` on this host: its size (checked as validation checks it) and
/// its identity.
pub fn measure_image(image: &ImageSpec) -> Result<MeasuredImage, SpecError> {
    let size = check_image(image)?;
    Ok(MeasuredImage {
        size,
        identity: image_identity(&image.source, size),
    })
}

/// What image a cache holds: its size, modification time and a digest of its first and
/// last MiB. Cheap for any image size, and changes when the image is replaced.
pub fn image_identity(source: &Path, size: u64) -> String {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let mut digest = crate::hash::Fnv64::default();
    let mut mtime = 0;
    if let Ok(mut f) = File::open(source) {
        mtime = f.metadata().map(|m| m.mtime()).unwrap_or(0);
        let window = (1u64 << 20).min(size);
        let mut buf = vec![0u8; window as usize];
        for at in [0, size - window] {
            if f.seek(SeekFrom::Start(at)).is_ok() && f.read_exact(&mut buf).is_ok() {
                digest.update(&buf);
            }
        }
    }
    format!("{size}-{mtime}-{:016x}", digest.finish())
}

/// Every rule the spec alone decides, reading no file: all that [`validate`] checks before
/// it looks at the image.
pub fn check_rules(spec: &ClusterSpec) -> Result<(), SpecError> {
    check_names(spec)?;
    check_unique_names(spec)?;
    check_unique_addresses(spec)?;
    check_counts(spec)?;
    check_dirs(spec)?;
    check_snapshot_kind(spec)?;
    check_mode(spec)?;
    check_origin_protocol(spec)?;
    check_kernel(spec)?;
    super::ssh::check(spec)?;
    super::devices::check(spec)
}

/// Smallest cache that holds the whole image plus qcow2 metadata: image + image/512 + 1 MiB.
pub fn cache_needed(image_size: u64) -> u64 {
    image_size
        .saturating_add(image_size / 512)
        .saturating_add(1 << 20)
}

/// Checks a name against [A-Za-z0-9._-], 1..=max bytes, not starting with '.' or '-'.
/// `field` is used in the error.
pub fn check_name(field: &str, value: &str, max: usize) -> Result<(), SpecError> {
    let fail = |problem: String| Err(SpecError::new(field, problem));
    if value.is_empty() {
        return fail("must not be empty".into());
    }
    if value.len() > max {
        return fail(format!(
            "{value:?} is {} bytes long, at most {max} allowed",
            value.len()
        ));
    }
    if let Some(c) = value.chars().find(|&c| !is_name_char(c)) {
        return fail(format!(
            "{value:?} contains {c:?}; use only letters, digits, '.', '_' and '-'"
        ));
    }
    if value.starts_with(['.', '-']) {
        return fail(format!("{value:?} must not start with '.' or '-'"));
    }
    Ok(())
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')
}

fn check_names(spec: &ClusterSpec) -> Result<(), SpecError> {
    check_name("cluster.name", &spec.cluster.name, CLUSTER_NAME_MAX)?;
    check_name("image.name", &spec.image.name, NAME_MAX)?;
    check_name("origin.name", &spec.origin.name, NAME_MAX)?;
    for (i, node) in spec.nodes.iter().enumerate() {
        check_name(&format!("nodes[{i}].name"), &node.name, NAME_MAX)?;
    }
    Ok(())
}

/// Node names must differ from each other and from the origin's.
fn check_unique_names(spec: &ClusterSpec) -> Result<(), SpecError> {
    let mut seen = HashMap::from([(spec.origin.name.as_str(), "origin.name".to_string())]);
    for (i, node) in spec.nodes.iter().enumerate() {
        let field = format!("nodes[{i}].name");
        if let Some(other) = seen.get(node.name.as_str()) {
            return Err(SpecError::new(
                field,
                format!("duplicate node name {:?} (also {other})", node.name),
            ));
        }
        seen.insert(&node.name, field);
    }
    Ok(())
}

/// Node addresses must differ from each other and from a managed origin's.
fn check_unique_addresses(spec: &ClusterSpec) -> Result<(), SpecError> {
    let mut seen = HashMap::new();
    if spec.origin.managed {
        seen.insert(spec.origin.address, "origin.address".to_string());
    }
    for (i, node) in spec.nodes.iter().enumerate() {
        let field = format!("nodes[{i}].address");
        if let Some(other) = seen.get(&node.address) {
            return Err(SpecError::new(
                field,
                format!("duplicate address {} (also {other})", node.address),
            ));
        }
        seen.insert(node.address, field);
    }
    Ok(())
}

fn check_counts(spec: &ClusterSpec) -> Result<(), SpecError> {
    let cluster = &spec.cluster;
    at_least("cluster.degree", cluster.degree.into(), 1)?;
    if spec.nodes.is_empty() {
        return Err(SpecError::new(
            "nodes",
            "no compute nodes (add at least one [[nodes]] entry)",
        ));
    }
    at_least("cluster.parallelism", cluster.parallelism.into(), 1)?;
    at_least("cluster.port", cluster.port.into(), 1)?;
    at_least("cluster.connect_timeout_ms", cluster.connect_timeout_ms, 1)?;
    at_least(
        "cache.flush_interval_ms",
        spec.cache.flush_interval_ms,
        FLUSH_INTERVAL_MIN_MS,
    )
}

/// An iSCSI origin needs a target name sftsan can pass on (its own, or the one given for
/// an unmanaged origin), in the characters RFC 3720 allows in an IQN.
fn check_origin_protocol(spec: &ClusterSpec) -> Result<(), SpecError> {
    let origin = &spec.origin;
    if origin.protocol != OriginProtocol::Iscsi {
        return Ok(());
    }
    at_least("origin.iscsi_port", origin.iscsi_port.into(), 1)?;
    match &origin.iscsi_target {
        None if !origin.managed => Err(SpecError::new(
            "origin.iscsi_target",
            "required for an unmanaged iSCSI origin",
        )),
        Some(iqn)
            if !iqn.starts_with("iqn.")
                || iqn.len() > 223
                || !iqn
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || ".:-".contains(c)) =>
        {
            Err(SpecError::new(
                "origin.iscsi_target",
                format!("{iqn:?} is not an IQN (iqn.YYYY-MM.reversed.domain:name, lower case)"),
            ))
        }
        _ => Ok(()),
    }
}

fn at_least(field: &str, value: u64, min: u64) -> Result<(), SpecError> {
    if value < min {
        return Err(SpecError::new(
            field,
            format!("must be at least {min}, got {value}"),
        ));
    }
    Ok(())
}

fn check_dirs(spec: &ClusterSpec) -> Result<(), SpecError> {
    absolute("cluster.state_dir", &spec.cluster.state_dir)?;
    match &spec.cache.dir {
        Some(dir) => absolute("cache.dir", dir),
        None => Ok(()),
    }
}

fn absolute(field: &str, path: &Path) -> Result<(), SpecError> {
    if !path.is_absolute() {
        return Err(SpecError::new(
            field,
            format!("{:?} is not an absolute path", path.display().to_string()),
        ));
    }
    Ok(())
}

/// qcow2 snapshots are made by the userspace backend, dm ones by the kernel backend.
fn check_snapshot_kind(spec: &ClusterSpec) -> Result<(), SpecError> {
    let kind = spec.snapshots.kind;
    let needed = match kind {
        SnapshotKind::Qcow2 => Backend::Userspace,
        SnapshotKind::DmSnapshot | SnapshotKind::DmThin => Backend::Kernel,
    };
    if spec.cluster.backend != needed {
        return Err(SpecError::new(
            "snapshots.kind",
            format!(
                "{:?} needs cluster.backend = {:?}, but the backend is {:?}",
                kind_name(kind),
                backend_name(needed),
                backend_name(spec.cluster.backend),
            ),
        ));
    }
    Ok(())
}

/// The kernel backend needs its section, and CHAP credentials that iSCSI accepts: they
/// are written into configfs and node records, so no whitespace or control characters.
fn check_kernel(spec: &ClusterSpec) -> Result<(), SpecError> {
    let kernel =
        match (&spec.kernel, spec.cluster.backend) {
            (None, Backend::Kernel) => return Err(SpecError::new(
                "kernel",
                "cluster.backend = \"kernel\" needs a [kernel] section (chap_user, chap_secret)",
            )),
            (Some(_), Backend::Userspace) => {
                return Err(SpecError::new(
                    "kernel",
                    "only used with cluster.backend = \"kernel\"",
                ))
            }
            (None, _) => return Ok(()),
            (Some(k), _) => k,
        };
    at_least("kernel.iscsi_port", kernel.iscsi_port.into(), 1)?;
    // The kernel's iSCSI initiator works only in the initial network namespace: nodes on
    // one machine are told apart by name and IQN, not by namespace.
    if spec.cluster.mode == Mode::Local {
        return Err(SpecError::new(
            "cluster.mode",
            "the kernel backend needs mode = \"host\" or \"remote\" (the kernel's iSCSI initiator works only in the initial network namespace)",
        ));
    }
    if !spec.origin.managed {
        return Err(SpecError::new(
            "origin.managed",
            "the kernel backend does not support an unmanaged origin yet",
        ));
    }
    // kernel.cache = "dm-clone" needs the kernel's clone target: the kernel probe checks
    // that on the host that runs the cluster, not here.
    let printable = |s: &str| s.chars().all(|c| c.is_ascii_graphic());
    if kernel.chap_user.is_empty() || kernel.chap_user.len() > 255 || !printable(&kernel.chap_user)
    {
        return Err(SpecError::new(
            "kernel.chap_user",
            "must be 1 to 255 printable ASCII characters without spaces",
        ));
    }
    if !(12..=255).contains(&kernel.chap_secret.len()) || !printable(&kernel.chap_secret) {
        return Err(SpecError::new(
            "kernel.chap_secret",
            format!(
                "must be 12 to 255 printable ASCII characters without spaces (got {} characters)",
                kernel.chap_secret.len()
            ),
        ));
    }
    Ok(())
}

fn kind_name(kind: SnapshotKind) -> &'static str {
    match kind {
        SnapshotKind::Qcow2 => "qcow2",
        SnapshotKind::DmSnapshot => "dm-snapshot",
        SnapshotKind::DmThin => "dm-thin",
    }
}

pub(super) fn mode_name(mode: Mode) -> &'static str {
    match mode {
        Mode::Local => "local",
        Mode::Host => "host",
        Mode::Remote => "remote",
    }
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Userspace => "userspace",
        Backend::Kernel => "kernel",
    }
}

/// `[local]` goes with mode local, and then every address the cluster binds lies in it.
fn check_mode(spec: &ClusterSpec) -> Result<(), SpecError> {
    match (spec.cluster.mode, &spec.local) {
        (Mode::Local, Some(local)) => {
            check_link_rate(local.link_mbit)?;
            check_local_addresses(spec, local.subnet)?;
            check_interface_tags(spec)
        }
        (Mode::Local, None) => Err(SpecError::new(
            "local",
            "cluster.mode = \"local\" needs a [local] section with a subnet",
        )),
        (mode @ (Mode::Host | Mode::Remote), Some(_)) => Err(SpecError::new(
            "local",
            format!(
                "only used with cluster.mode = \"local\" (mode is \"{}\")",
                mode_name(mode)
            ),
        )),
        (Mode::Host | Mode::Remote, None) => Ok(()),
    }
}

/// Highest link rate sftsan shapes to: 100 Gbit/s, beyond any veth's real throughput.
const LINK_MBIT_MAX: u32 = 100_000;

fn check_link_rate(link_mbit: Option<u32>) -> Result<(), SpecError> {
    match link_mbit {
        Some(rate) if rate == 0 || rate > LINK_MBIT_MAX => Err(SpecError::new(
            "local.link_mbit",
            format!(
                "{rate} is out of range (1 to {LINK_MBIT_MAX} Mbit/s; leave it out for no limit)"
            ),
        )),
        _ => Ok(()),
    }
}

fn check_local_addresses(spec: &ClusterSpec, subnet: ipnet::Ipv4Net) -> Result<(), SpecError> {
    if subnet.prefix_len() > 30 {
        return Err(SpecError::new(
            "local.subnet",
            format!("{subnet} has no room for host addresses (use a prefix of /30 or shorter)"),
        ));
    }
    if spec.origin.managed {
        check_local_address("origin.address", spec.origin.address, subnet)?;
    }
    for (i, node) in spec.nodes.iter().enumerate() {
        check_local_address(&format!("nodes[{i}].address"), node.address, subnet)?;
    }
    Ok(())
}

/// Each node's veth is named after a short tag of its name: two names with one tag cannot
/// both be local nodes.
fn check_interface_tags(spec: &ClusterSpec) -> Result<(), SpecError> {
    let mut seen = std::collections::HashMap::new();
    let names = std::iter::once(&spec.origin.name).chain(spec.nodes.iter().map(|n| &n.name));
    for (i, name) in names.enumerate() {
        if let Some(other) = seen.insert(crate::hash::node_tag(name), name) {
            let field = match i {
                0 => "origin.name".to_string(),
                i => format!("nodes[{}].name", i - 1),
            };
            return Err(SpecError::new(
                &field,
                format!("{name:?} and {other:?} would share a network interface name; rename one"),
            ));
        }
    }
    Ok(())
}

fn check_local_address(
    field: &str,
    address: IpAddr,
    subnet: ipnet::Ipv4Net,
) -> Result<(), SpecError> {
    let fail = |problem: String| Err(SpecError::new(field, problem));
    let IpAddr::V4(v4) = address else {
        return fail(format!("{address} is not IPv4 (local.subnet is {subnet})"));
    };
    if !subnet.contains(&v4) {
        return fail(format!("{v4} is outside local.subnet {subnet}"));
    }
    if v4 == subnet.network() {
        return fail(format!(
            "{v4} is the network address of local.subnet {subnet}"
        ));
    }
    if v4 == subnet.broadcast() {
        return fail(format!(
            "{v4} is the broadcast address of local.subnet {subnet}"
        ));
    }
    Ok(())
}

/// The image must be a readable, non-empty regular file or block device of whole sectors,
/// of the size the spec says if it says one. Returns its size in bytes.
fn check_image(image: &ImageSpec) -> Result<u64, SpecError> {
    let path = &image.source;
    let fail = |problem: String| SpecError::new("image.source", problem);
    let shown = path.display().to_string();
    // Look before opening: opening a FIFO would block.
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail(format!("{shown:?} does not exist")),
        _ => fail(format!("cannot stat {shown:?}: {e}")),
    })?;
    let file_type = meta.file_type();
    if !file_type.is_file() && !file_type.is_block_device() {
        return Err(fail(format!(
            "{shown:?} is not a regular file or block device"
        )));
    }
    let mut file =
        File::open(path).map_err(|e| fail(format!("cannot open {shown:?} for reading: {e}")))?;
    // Seeking works for block devices too, whose metadata length is 0.
    let size = file
        .seek(SeekFrom::End(0))
        .map_err(|e| fail(format!("cannot find the size of {shown:?}: {e}")))?;
    if size == 0 {
        return Err(fail(format!("{shown:?} is empty")));
    }
    if size % SECTOR != 0 {
        return Err(fail(format!(
            "{shown:?} is {size} bytes, not a multiple of {SECTOR}"
        )));
    }
    check_expected_size(image, size)?;
    Ok(size)
}

/// `image.size`, when given, must be what the image measures.
fn check_expected_size(image: &ImageSpec, size: u64) -> Result<(), SpecError> {
    match image.size {
        Some(expected) if expected.bytes() != size => Err(SpecError::new(
            "image.size",
            format!(
                "is {}, but {:?} is {}",
                show_size(expected.bytes()),
                image.source.display().to_string(),
                show_size(size)
            ),
        )),
        _ => Ok(()),
    }
}

fn check_cache_size(cache: &CacheSpec, image_size: u64) -> Result<(), SpecError> {
    let needed = cache_needed(image_size);
    if cache.size.bytes() < needed {
        return Err(SpecError::new(
            "cache.size",
            format!(
                "{} is too small: a cache of the {} image needs at least {}",
                show_size(cache.size.bytes()),
                show_size(image_size),
                show_size(needed)
            ),
        ));
    }
    Ok(())
}

/// `1GiB (1073741824 bytes)`, or just `1000 bytes` when no unit fits exactly.
fn show_size(bytes: u64) -> String {
    let size = ByteSize(bytes);
    if size.to_string() != format!("{bytes}B") {
        format!("{size} ({bytes} bytes)")
    } else {
        format!("{bytes} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::super::{
        ClusterSection, LocalSpec, NodeSpec, OriginProtocol, OriginSpec, SnapshotSpec,
    };
    use super::*;
    use tempfile::NamedTempFile;

    const MIB: u64 = 1 << 20;

    /// A raw image of `size` bytes in a temporary file.
    fn image_file(size: u64) -> NamedTempFile {
        let file = NamedTempFile::new().unwrap();
        file.as_file().set_len(size).unwrap();
        file
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// A valid host-mode spec: origin 127.0.0.1, nodes n1..n3 on 127.0.0.2..4.
    fn spec_for(image: &Path) -> ClusterSpec {
        ClusterSpec {
            cluster: ClusterSection {
                name: "test".into(),
                state_dir: "/var/lib/sftsan/test".into(),
                backend: Backend::Userspace,
                mode: Mode::Host,
                degree: 2,
                port: 10809,
                parallelism: 4,
                connect_timeout_ms: 5000,
            },
            image: ImageSpec {
                name: "base".into(),
                source: image.to_path_buf(),
                size: None,
            },
            origin: OriginSpec {
                name: "origin".into(),
                address: ip("127.0.0.1"),
                managed: true,
                protocol: OriginProtocol::Nbd,
                iscsi_port: 3260,
                iscsi_target: None,
                iscsi_control_port: None,
                ssh: None,
            },
            nodes: (1..=3)
                .map(|i| NodeSpec {
                    name: format!("n{i}"),
                    address: ip(&format!("127.0.0.{}", i + 1)),
                    devices: Default::default(),
                    ssh: None,
                })
                .collect(),
            cache: CacheSpec {
                dir: None,
                size: ByteSize(16 * MIB),
                flush_interval_ms: 1000,
            },
            snapshots: SnapshotSpec {
                per_node: 2,
                kind: SnapshotKind::Qcow2,
            },
            local: None,
            kernel: None,
            ssh: None,
        }
    }

    /// Validates a variant of the valid spec (with a 1 MiB image) and returns its error.
    fn error_after(change: impl FnOnce(&mut ClusterSpec)) -> String {
        let image = image_file(MIB);
        let mut spec = spec_for(image.path());
        change(&mut spec);
        validate(spec).unwrap_err().to_string()
    }

    /// Turns the valid spec into a local-mode one on 10.0.0.0/24 (origin .1, nodes .2-.4).
    fn make_local(spec: &mut ClusterSpec) {
        spec.cluster.mode = Mode::Local;
        spec.local = Some(LocalSpec {
            subnet: "10.0.0.0/24".parse().unwrap(),
            link_mbit: None,
        });
        spec.origin.address = ip("10.0.0.1");
        for (i, node) in spec.nodes.iter_mut().enumerate() {
            node.address = ip(&format!("10.0.0.{}", i + 2));
        }
    }

    #[test]
    fn valid_spec_passes_and_reports_image_size() {
        let image = image_file(MIB);
        let spec = spec_for(image.path());
        let validated = validate(spec.clone()).unwrap();
        assert_eq!(validated.image_size(), MIB);
        assert_eq!(validated.spec(), &spec);
        assert_eq!(validated.into_spec(), spec);
    }

    /// Found by fuzzing: toml's message for a bad table header runs over two lines.
    #[test]
    fn toml_errors_are_one_line() {
        let err = ClusterSpec::from_toml("[cluster]\nname = \"x\"\n[a b]\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "spec line 3: invalid table header; expected `.`, `]`"
        );
    }

    #[test]
    fn cache_needed_adds_metadata_and_slack() {
        assert_eq!(cache_needed(0), MIB);
        assert_eq!(cache_needed(1 << 30), (1 << 30) + 2 * MIB + MIB);
        assert_eq!(cache_needed(u64::MAX), u64::MAX);
    }

    #[test]
    fn check_name_accepts_the_allowed_charset() {
        for name in ["a", "node-1", "Ubuntu_12.04", "0", "x.-_"] {
            check_name("f", name, NAME_MAX).unwrap();
        }
        check_name("f", &"a".repeat(NAME_MAX), NAME_MAX).unwrap();
    }

    #[test]
    fn check_name_rejects_empty() {
        let err = check_name("image.name", "", NAME_MAX).unwrap_err();
        assert_eq!(err.to_string(), "image.name: must not be empty");
    }

    #[test]
    fn check_name_rejects_too_long() {
        let err = check_name("f", &"a".repeat(5), 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            "f: \"aaaaa\" is 5 bytes long, at most 4 allowed"
        );
    }

    #[test]
    fn check_name_rejects_bad_characters() {
        for (name, bad) in [("a b", ' '), ("a/b", '/'), ("näme", 'ä'), ("x:y", ':')] {
            let err = check_name("f", name, NAME_MAX).unwrap_err();
            assert!(err.problem.contains(&format!("{bad:?}")), "{err}");
        }
    }

    #[test]
    fn check_name_rejects_leading_dot_or_dash() {
        for name in [".hidden", "-opt", "..", "-"] {
            let err = check_name("f", name, NAME_MAX).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("f: {name:?} must not start with '.' or '-'")
            );
        }
    }

    #[test]
    fn cluster_name_is_limited_to_cluster_name_max() {
        let err = error_after(|s| s.cluster.name = "a".repeat(CLUSTER_NAME_MAX + 1));
        assert!(err.starts_with("cluster.name: \"aaaa"), "{err}");
        assert!(
            err.ends_with("is 17 bytes long, at most 16 allowed"),
            "{err}"
        );
    }

    #[test]
    fn bad_image_name_is_reported() {
        let err = error_after(|s| s.image.name = "my image".into());
        assert!(
            err.starts_with("image.name: \"my image\" contains ' '"),
            "{err}"
        );
    }

    #[test]
    fn bad_origin_name_is_reported() {
        let err = error_after(|s| s.origin.name = "-origin".into());
        assert_eq!(
            err,
            "origin.name: \"-origin\" must not start with '.' or '-'"
        );
    }

    #[test]
    fn bad_node_name_names_its_index() {
        let err = error_after(|s| s.nodes[2].name = "n/3".into());
        assert!(
            err.starts_with("nodes[2].name: \"n/3\" contains '/'"),
            "{err}"
        );
    }

    #[test]
    fn duplicate_node_names_are_rejected() {
        let err = error_after(|s| s.nodes[2].name = "n1".into());
        assert_eq!(
            err,
            "nodes[2].name: duplicate node name \"n1\" (also nodes[0].name)"
        );
    }

    #[test]
    fn node_named_like_the_origin_is_a_duplicate() {
        let err = error_after(|s| s.nodes[1].name = "origin".into());
        assert_eq!(
            err,
            "nodes[1].name: duplicate node name \"origin\" (also origin.name)"
        );
    }

    #[test]
    fn duplicate_node_addresses_are_rejected() {
        let err = error_after(|s| s.nodes[2].address = ip("127.0.0.2"));
        assert_eq!(
            err,
            "nodes[2].address: duplicate address 127.0.0.2 (also nodes[0].address)"
        );
    }

    #[test]
    fn node_on_a_managed_origin_address_is_rejected() {
        let err = error_after(|s| s.nodes[0].address = ip("127.0.0.1"));
        assert_eq!(
            err,
            "nodes[0].address: duplicate address 127.0.0.1 (also origin.address)"
        );
    }

    #[test]
    fn node_may_share_an_unmanaged_origin_address() {
        let image = image_file(MIB);
        let mut spec = spec_for(image.path());
        spec.origin.managed = false;
        spec.nodes[0].address = spec.origin.address;
        validate(spec).unwrap();
    }

    #[test]
    fn zero_degree_is_rejected() {
        let err = error_after(|s| s.cluster.degree = 0);
        assert_eq!(err, "cluster.degree: must be at least 1, got 0");
    }

    #[test]
    fn no_nodes_is_rejected() {
        let err = error_after(|s| s.nodes.clear());
        assert_eq!(
            err,
            "nodes: no compute nodes (add at least one [[nodes]] entry)"
        );
    }

    #[test]
    fn zero_parallelism_is_rejected() {
        let err = error_after(|s| s.cluster.parallelism = 0);
        assert_eq!(err, "cluster.parallelism: must be at least 1, got 0");
    }

    #[test]
    fn zero_port_is_rejected() {
        let err = error_after(|s| s.cluster.port = 0);
        assert_eq!(err, "cluster.port: must be at least 1, got 0");
    }

    #[test]
    fn zero_connect_timeout_is_rejected() {
        let err = error_after(|s| s.cluster.connect_timeout_ms = 0);
        assert_eq!(err, "cluster.connect_timeout_ms: must be at least 1, got 0");
    }

    #[test]
    fn short_flush_interval_is_rejected() {
        let err = error_after(|s| s.cache.flush_interval_ms = 99);
        assert_eq!(err, "cache.flush_interval_ms: must be at least 100, got 99");
    }

    #[test]
    fn relative_state_dir_is_rejected() {
        let err = error_after(|s| s.cluster.state_dir = "var/lib/sftsan".into());
        assert_eq!(
            err,
            "cluster.state_dir: \"var/lib/sftsan\" is not an absolute path"
        );
    }

    #[test]
    fn relative_cache_dir_is_rejected() {
        let err = error_after(|s| s.cache.dir = Some("caches".into()));
        assert_eq!(err, "cache.dir: \"caches\" is not an absolute path");
    }

    #[test]
    fn qcow2_snapshots_need_the_userspace_backend() {
        let err = error_after(|s| s.cluster.backend = Backend::Kernel);
        assert_eq!(
            err,
            "snapshots.kind: \"qcow2\" needs cluster.backend = \"userspace\", \
             but the backend is \"kernel\""
        );
    }

    #[test]
    fn dm_snapshots_need_the_kernel_backend() {
        for kind in [SnapshotKind::DmSnapshot, SnapshotKind::DmThin] {
            let err = error_after(|s| s.snapshots.kind = kind);
            assert_eq!(
                err,
                format!(
                    "snapshots.kind: {:?} needs cluster.backend = \"kernel\", \
                     but the backend is \"userspace\"",
                    kind_name(kind)
                )
            );
            let image = image_file(MIB);
            let mut spec = spec_for(image.path());
            spec.cluster.backend = Backend::Kernel;
            spec.snapshots.kind = kind;
            spec.kernel = Some(kernel_section("a-long-secret"));
            validate(spec).unwrap();
        }
    }

    #[test]
    fn local_mode_spec_passes() {
        let image = image_file(MIB);
        let mut spec = spec_for(image.path());
        make_local(&mut spec);
        validate(spec).unwrap();
    }

    #[test]
    fn local_mode_needs_a_local_section() {
        let err = error_after(|s| {
            make_local(s);
            s.local = None;
        });
        assert_eq!(
            err,
            "local: cluster.mode = \"local\" needs a [local] section with a subnet"
        );
    }

    #[test]
    fn local_section_is_rejected_in_host_mode() {
        let err = error_after(|s| {
            make_local(s);
            s.cluster.mode = Mode::Host;
        });
        assert_eq!(
            err,
            "local: only used with cluster.mode = \"local\" (mode is \"host\")"
        );
    }

    #[test]
    fn local_subnet_needs_host_addresses() {
        let err = error_after(|s| {
            make_local(s);
            s.local = Some(LocalSpec {
                subnet: "10.0.0.0/31".parse().unwrap(),
                link_mbit: None,
            });
        });
        assert!(
            err.starts_with("local.subnet: 10.0.0.0/31 has no room for host addresses"),
            "{err}"
        );
    }

    #[test]
    fn local_link_rate_must_be_in_range() {
        for bad in [0, LINK_MBIT_MAX + 1] {
            let err = error_after(|s| {
                make_local(s);
                s.local.as_mut().unwrap().link_mbit = Some(bad);
            });
            assert!(
                err.starts_with(&format!("local.link_mbit: {bad} is out of range")),
                "{err}"
            );
        }
        let image = image_file(MIB);
        let mut spec = spec_for(image.path());
        make_local(&mut spec);
        spec.local.as_mut().unwrap().link_mbit = Some(100);
        validate(spec).unwrap();
    }

    #[test]
    fn local_node_address_must_be_ipv4() {
        let err = error_after(|s| {
            make_local(s);
            s.nodes[1].address = ip("fd00::2");
        });
        assert_eq!(
            err,
            "nodes[1].address: fd00::2 is not IPv4 (local.subnet is 10.0.0.0/24)"
        );
    }

    #[test]
    fn local_node_address_must_be_inside_the_subnet() {
        let err = error_after(|s| {
            make_local(s);
            s.nodes[2].address = ip("10.0.1.4");
        });
        assert_eq!(
            err,
            "nodes[2].address: 10.0.1.4 is outside local.subnet 10.0.0.0/24"
        );
    }

    #[test]
    fn local_address_must_not_be_the_network_address() {
        let err = error_after(|s| {
            make_local(s);
            s.nodes[0].address = ip("10.0.0.0");
        });
        assert_eq!(
            err,
            "nodes[0].address: 10.0.0.0 is the network address of local.subnet 10.0.0.0/24"
        );
    }

    #[test]
    fn local_address_must_not_be_the_broadcast_address() {
        let err = error_after(|s| {
            make_local(s);
            s.nodes[0].address = ip("10.0.0.255");
        });
        assert_eq!(
            err,
            "nodes[0].address: 10.0.0.255 is the broadcast address of local.subnet 10.0.0.0/24"
        );
    }

    #[test]
    fn local_mode_checks_a_managed_origin_address_only() {
        let err = error_after(|s| {
            make_local(s);
            s.origin.address = ip("192.168.1.1");
        });
        assert_eq!(
            err,
            "origin.address: 192.168.1.1 is outside local.subnet 10.0.0.0/24"
        );

        let image = image_file(MIB);
        let mut spec = spec_for(image.path());
        make_local(&mut spec);
        spec.origin.address = ip("192.168.1.1");
        spec.origin.managed = false;
        validate(spec).unwrap();
    }

    #[test]
    fn missing_image_source_is_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.raw");
        let err = error_after(|s| s.image.source = missing.clone());
        assert_eq!(
            err,
            format!(
                "image.source: {:?} does not exist",
                missing.display().to_string()
            )
        );
    }

    /// An image this process may not read is refused at validation. Root reads every file,
    /// so as root this test runs again in its own binary as `nobody` (setpriv), and the
    /// run there makes the check.
    #[test]
    fn unreadable_image_source_is_rejected() {
        use std::os::unix::fs::PermissionsExt;
        if let Some(image) = std::env::var_os(UNREADABLE_IMAGE_ENV) {
            assert_unreadable_is_rejected(Path::new(&image));
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let image = dir.path().join("base.raw");
        std::fs::write(&image, vec![0u8; MIB as usize]).unwrap();
        std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o000)).unwrap();
        // SAFETY: geteuid cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            assert_unreadable_is_rejected(&image);
            return;
        }
        let out = std::process::Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .arg(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "spec::validate::tests::unreadable_image_source_is_rejected",
            ])
            .env(UNREADABLE_IMAGE_ENV, &image)
            .output()
            .expect("setpriv (util-linux) runs the check as nobody");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "as nobody: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Set for the re-run as another user: the image to check.
    const UNREADABLE_IMAGE_ENV: &str = "SFTSAN_TEST_UNREADABLE_IMAGE";

    fn assert_unreadable_is_rejected(image: &Path) {
        let err = validate(spec_for(image)).unwrap_err();
        assert_eq!(err.field, "image.source");
        assert!(err.problem.starts_with("cannot open"), "{err}");
    }

    #[test]
    fn image_source_must_be_a_file_or_block_device() {
        let dir = tempfile::tempdir().unwrap();
        for path in [dir.path(), Path::new("/dev/null")] {
            let err = error_after(|s| s.image.source = path.to_path_buf());
            assert_eq!(
                err,
                format!(
                    "image.source: {:?} is not a regular file or block device",
                    path.display().to_string()
                )
            );
        }
    }

    #[test]
    fn empty_image_source_is_rejected() {
        let image = image_file(0);
        let err = validate(spec_for(image.path())).unwrap_err().to_string();
        assert!(err.starts_with("image.source: \""), "{err}");
        assert!(err.ends_with("\" is empty"), "{err}");
    }

    #[test]
    fn image_size_must_be_whole_sectors() {
        let image = image_file(MIB + 100);
        let err = validate(spec_for(image.path())).unwrap_err().to_string();
        assert!(err.starts_with("image.source: "), "{err}");
        assert!(
            err.ends_with("is 1048676 bytes, not a multiple of 512"),
            "{err}"
        );
    }

    #[test]
    fn stated_image_size_must_match_the_source() {
        let image = image_file(MIB);
        let mut spec = spec_for(image.path());
        spec.image.size = Some(ByteSize(2 * MIB));
        let err = validate(spec.clone()).unwrap_err();
        assert_eq!(err.field, "image.size");
        assert_eq!(
            err.problem,
            format!(
                "is 2MiB (2097152 bytes), but {:?} is 1MiB (1048576 bytes)",
                image.path().display().to_string()
            )
        );
        spec.image.size = Some(ByteSize(MIB));
        validate(spec).unwrap();
    }

    #[test]
    fn cache_must_hold_the_whole_image() {
        let err = error_after(|s| s.cache.size = ByteSize(2 * MIB));
        assert_eq!(
            err,
            "cache.size: 2MiB (2097152 bytes) is too small: a cache of the \
             1MiB (1048576 bytes) image needs at least 2050KiB (2099200 bytes)"
        );
        let image = image_file(MIB);
        let mut spec = spec_for(image.path());
        spec.cache.size = ByteSize(cache_needed(MIB));
        validate(spec).unwrap();
    }

    #[test]
    fn show_size_uses_units_when_exact() {
        assert_eq!(show_size(1 << 30), "1GiB (1073741824 bytes)");
        assert_eq!(show_size(1000), "1000 bytes");
        assert_eq!(show_size(1025), "1025 bytes");
        assert_eq!(show_size(2099200), "2050KiB (2099200 bytes)");
        assert_eq!(show_size(512), "512 bytes");
    }
}

#[cfg(test)]
mod iscsi_tests {
    use super::super::OriginProtocol;
    use super::*;

    fn spec_with(protocol: OriginProtocol, managed: bool, target: Option<&str>) -> ClusterSpec {
        let mut spec = minimal_spec();
        spec.origin.protocol = protocol;
        spec.origin.managed = managed;
        spec.origin.iscsi_target = target.map(String::from);
        spec
    }

    #[test]
    fn unmanaged_iscsi_origin_needs_a_target() {
        let err =
            check_origin_protocol(&spec_with(OriginProtocol::Iscsi, false, None)).unwrap_err();
        assert_eq!(err.field, "origin.iscsi_target");
        assert!(check_origin_protocol(&spec_with(OriginProtocol::Iscsi, true, None)).is_ok());
        assert!(check_origin_protocol(&spec_with(OriginProtocol::Nbd, false, None)).is_ok());
    }

    #[test]
    fn iscsi_target_must_be_an_iqn() {
        for bad in [
            "eui.1234",
            "iqn.2014-12.org.x:Upper",
            "iqn.2014-12.org.x:a b",
            "iqn.x;rm",
        ] {
            let err = check_origin_protocol(&spec_with(OriginProtocol::Iscsi, false, Some(bad)))
                .unwrap_err();
            assert_eq!(err.field, "origin.iscsi_target", "{bad}");
        }
        let good = Some("iqn.2014-12.org.example:images.base-1");
        assert!(check_origin_protocol(&spec_with(OriginProtocol::Iscsi, false, good)).is_ok());
    }
}

/// A spec that parses (not one that validates: its image does not exist).
#[cfg(test)]
fn minimal_spec() -> ClusterSpec {
    ClusterSpec::from_toml(
        r#"
        [cluster]
        name = "c"
        state_dir = "/tmp/x"
        degree = 2
        [image]
        name = "base"
        source = "/nonexistent"
        [origin]
        address = "127.0.0.1"
        [[nodes]]
        name = "n1"
        address = "127.0.0.2"
        [cache]
        size = "1GiB"
        [snapshots]
        per_node = 1
        "#,
    )
    .unwrap()
}

#[cfg(test)]
fn kernel_section(secret: &str) -> super::KernelSpec {
    super::KernelSpec {
        cache: Default::default(),
        relay: Default::default(),
        iscsi_port: 3260,
        chap_user: "sftsan".into(),
        chap_secret: secret.into(),
        open_access: false,
    }
}

#[cfg(test)]
mod kernel_tests {
    use super::*;

    fn spec(backend: Backend, kernel: Option<super::super::KernelSpec>) -> ClusterSpec {
        let mut spec = minimal_spec();
        spec.cluster.backend = backend;
        spec.kernel = kernel;
        spec
    }

    #[test]
    fn the_kernel_backend_needs_its_section_and_only_it_does() {
        let err = check_kernel(&spec(Backend::Kernel, None)).unwrap_err();
        assert_eq!(err.field, "kernel");
        let err = check_kernel(&spec(
            Backend::Userspace,
            Some(kernel_section("a-long-secret")),
        ))
        .unwrap_err();
        assert_eq!(err.field, "kernel");
        assert!(check_kernel(&spec(
            Backend::Kernel,
            Some(kernel_section("a-long-secret"))
        ))
        .is_ok());
    }

    #[test]
    fn either_kernel_cache_is_accepted() {
        use super::super::KernelCache;
        for cache in [KernelCache::DmCache, KernelCache::DmClone] {
            let mut k = kernel_section("a-long-secret");
            k.cache = cache;
            assert!(
                check_kernel(&spec(Backend::Kernel, Some(k))).is_ok(),
                "{cache:?}"
            );
        }
        let parsed: super::super::KernelSpec = toml::from_str(
            "cache = \"dm-clone\"\nchap_user = \"u\"\nchap_secret = \"a-long-secret\"",
        )
        .unwrap();
        assert_eq!(parsed.cache, KernelCache::DmClone);
    }

    #[test]
    fn chap_credentials_must_be_usable() {
        for bad in [
            "short",
            "has a space12",
            "tab\tinside12345",
            &"x".repeat(256),
        ] {
            let err = check_kernel(&spec(Backend::Kernel, Some(kernel_section(bad)))).unwrap_err();
            assert_eq!(err.field, "kernel.chap_secret", "{bad:?}");
        }
        let mut k = kernel_section("a-long-secret");
        k.chap_user = String::new();
        assert_eq!(
            check_kernel(&spec(Backend::Kernel, Some(k)))
                .unwrap_err()
                .field,
            "kernel.chap_user"
        );
    }
}
