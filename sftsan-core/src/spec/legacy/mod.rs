//! Imports the original bash sftsan's configuration: its `cfg.data` (shell assignments the
//! scripts `source`) and its `nodes` file (compute node addresses). A key sftsan has a use
//! for becomes part of the spec; any other assignment gets one warning naming it, as
//! sourcing it cost the scripts nothing. Only a malformed line or a wrong value is an error.

mod shell;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use super::validate::{check_name, CLUSTER_NAME_MAX, NAME_MAX};
use super::{
    Backend, ByteSize, CacheSpec, ClusterSection, ClusterSpec, ImageSpec, KernelCache, KernelSpec,
    Mode, NodeDevices, NodeSpec, OriginProtocol, OriginSpec, RelayTarget, SnapshotKind,
    SnapshotSpec, SshSpec,
};
use shell::{Assignment, Value};

/// Why a legacy configuration could not be imported; one line naming file, line and key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LegacyError {
    /// A line of `cfg.data` is not a shell assignment sftsan can read.
    #[error("cfg.data line {line}: {problem}")]
    Syntax {
        /// 1-based line number in `cfg.data`.
        line: usize,
        /// What is wrong with the line.
        problem: String,
    },
    /// `cfg.data` does not assign a key the import needs.
    #[error("cfg.data: required key {key:?} is missing")]
    MissingKey {
        /// The missing key, e.g. `imagename`.
        key: &'static str,
    },
    /// A key of `cfg.data` has a value the spec cannot take.
    #[error("cfg.data line {line}: {key}: {problem}")]
    BadValue {
        /// 1-based line number of the key's last assignment in `cfg.data`.
        line: usize,
        /// The key, e.g. `cachesize`.
        key: &'static str,
        /// What is wrong with the value.
        problem: String,
    },
    /// A word of the `nodes` file is not a usable compute node address.
    #[error("nodes line {line}: {problem}")]
    BadNode {
        /// 1-based line number in the `nodes` file.
        line: usize,
        /// What is wrong with the address: not an IP, the origin's, or listed twice.
        problem: String,
    },
    /// The `nodes` file lists no address at all.
    #[error("nodes: no compute node (one IP address per line)")]
    NoNodes,
}

/// An assignment the import did not carry over, and why; shown once per key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegacyWarning {
    /// The line of the key's first assignment.
    pub line: usize,
    /// The `cfg.data` key, e.g. `vgname`.
    pub key: String,
    /// Why the spec leaves it out, and what sftsan does instead.
    pub reason: String,
}

impl std::fmt::Display for LegacyWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cfg.data line {}: {}: {}",
            self.line, self.key, self.reason
        )
    }
}

/// The spec made of a legacy configuration, and what it left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The spec built from the legacy files; not validated yet.
    pub spec: ClusterSpec,
    /// One warning per `cfg.data` key the spec does not carry over.
    pub warnings: Vec<LegacyWarning>,
}

/// The keys the original scripts read that become part of a spec. `dmsnap` and `qcsnap`
/// are the values `snaptype` is compared with; `nodes` is the nodes file.
const USED: [&str; 12] = [
    "imagename",
    "imagedev",
    "imagenode",
    "numsnap",
    "degree",
    "cachesize",
    "workdir",
    "snaptype",
    "dmsnap",
    "qcsnap",
    "nodes",
    "cacheoridev",
];

/// Keys the original scripts read that have no counterpart here, with the reason.
const UNUSED: [(&str, &str); 2] = [
    (
        "vgname",
        "the volume group the original scripts made each node's cache and COW volumes in; \
         sftsan makes its own stores (files, or the block devices a node's entry names); ignored",
    ),
    (
        "cacheloopdev",
        "a fixed loop device for the cache; sftsan attaches free loop devices itself; ignored",
    ),
];

/// Where the nodes of an imported cluster run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LegacyMode {
    /// Each on its own host, reached as root over SSH, as the scripts reached them
    /// (`cluster.mode = "remote"`).
    #[default]
    Remote,
    /// All on this host (`cluster.mode = "host"`), to try a configuration on one machine.
    Host,
}

/// Converts sftsan's `cfg.data` and `nodes` files into a spec. `state_dir`, when given,
/// replaces `workdir` (the directory the bash scripts ran from).
pub fn import_legacy(
    cfg_data: &str,
    nodes: &str,
    state_dir: Option<&Path>,
    mode: LegacyMode,
) -> Result<Imported, LegacyError> {
    let cfg = Cfg::parse(cfg_data)?;
    let image_name = image_name(&cfg)?;
    let (backend, kind) = snapshot_style(&cfg)?;
    let origin_address = cfg.required("imagenode")?.parse("an IP address")?;
    let mut nodes = parse_nodes(nodes, origin_address)?;
    let mut warnings = cfg.warnings();
    if let Some(warning) = cache_device(&cfg, backend, mode, &mut nodes)? {
        warnings.push(warning);
        warnings.sort_by_key(|w| w.line);
    }
    let spec = ClusterSpec {
        cluster: ClusterSection {
            name: cluster_name(&image_name),
            state_dir: match state_dir {
                Some(dir) => dir.to_path_buf(),
                None => workdir(&cfg, &image_name)?,
            },
            backend,
            mode: match mode {
                LegacyMode::Remote => Mode::Remote,
                LegacyMode::Host => Mode::Host,
            },
            degree: cfg.required("degree")?.parse("a whole number")?,
            port: super::default_port(),
            parallelism: super::default_parallelism(),
            connect_timeout_ms: super::default_connect_timeout_ms(),
        },
        image: ImageSpec {
            source: cfg.required("imagedev")?.literal()?.into(),
            name: image_name,
            size: None,
        },
        origin: OriginSpec {
            name: super::default_origin_name(),
            address: origin_address,
            managed: true,
            protocol: OriginProtocol::Nbd,
            iscsi_port: 3260,
            iscsi_target: None,
            iscsi_control_port: None,
            ssh: None,
        },
        nodes,
        cache: CacheSpec {
            dir: None,
            size: cache_size(cfg.required("cachesize")?)?,
            flush_interval_ms: super::default_flush_interval_ms(),
        },
        snapshots: SnapshotSpec {
            per_node: cfg.required("numsnap")?.parse("a whole number")?,
            kind,
        },
        local: None,
        // sftsan's targets had no authentication: an imported kernel cluster gets CHAP
        // credentials of its own (a random secret; change it as you like).
        kernel: (backend == Backend::Kernel).then(|| KernelSpec {
            cache: KernelCache::DmCache,
            relay: RelayTarget::Lio,
            iscsi_port: 3260,
            chap_user: "sftsan".into(),
            chap_secret: random_secret(),
            open_access: false,
        }),
        // The scripts ran `ssh root@node`.
        ssh: (mode == LegacyMode::Remote).then(|| SshSpec {
            user: Some("root".into()),
            ..Default::default()
        }),
    };
    Ok(Imported { spec, warnings })
}

/// 24 hex digits from the kernel's random source.
fn random_secret() -> String {
    use std::io::Read;
    let mut bytes = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .expect("/dev/urandom is readable");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The assignments of a cfg.data: each key's value as bash would have it after sourcing
/// the file (the last assignment wins), and where each key was first set.
struct Cfg {
    last: HashMap<String, Assignment>,
    /// Keys in the order they first appear, with that line.
    first: Vec<(String, usize)>,
}

/// A used key's final value.
struct Setting<'a> {
    key: &'static str,
    line: usize,
    value: &'a Value,
}

impl Cfg {
    fn parse(text: &str) -> Result<Cfg, LegacyError> {
        let all = shell::assignments(text).map_err(|e| LegacyError::Syntax {
            line: e.line,
            problem: e.problem,
        })?;
        let mut cfg = Cfg {
            last: HashMap::new(),
            first: Vec::new(),
        };
        for a in all {
            if !cfg.last.contains_key(&a.key) {
                cfg.first.push((a.key.clone(), a.line));
            }
            cfg.last.insert(a.key.clone(), a);
        }
        Ok(cfg)
    }

    fn get(&self, key: &'static str) -> Option<Setting<'_>> {
        self.last.get(key).map(|a| Setting {
            key,
            line: a.line,
            value: &a.value,
        })
    }

    fn required(&self, key: &'static str) -> Result<Setting<'_>, LegacyError> {
        self.get(key).ok_or(LegacyError::MissingKey { key })
    }

    /// One warning per key the spec has no place for.
    fn warnings(&self) -> Vec<LegacyWarning> {
        self.first
            .iter()
            .filter(|(key, _)| !USED.contains(&key.as_str()))
            .map(|(key, line)| LegacyWarning {
                line: *line,
                key: key.clone(),
                reason: UNUSED
                    .iter()
                    .find(|(unused, _)| unused == key)
                    .map_or("not a setting of the original sftsan; ignored", |(_, r)| r)
                    .into(),
            })
            .collect()
    }
}

impl Setting<'_> {
    fn bad(&self, problem: String) -> LegacyError {
        LegacyError::BadValue {
            line: self.line,
            key: self.key,
            problem,
        }
    }

    /// The value, which must be known and not empty.
    fn literal(&self) -> Result<&str, LegacyError> {
        if let Some(why) = &self.value.unknown {
            return Err(self.bad(format!("{:?}: {why}; write the value out", self.value.text)));
        }
        if self.value.text.is_empty() {
            return Err(self.bad("is empty".into()));
        }
        Ok(&self.value.text)
    }

    fn parse<T: FromStr>(&self, what: &str) -> Result<T, LegacyError> {
        let text = self.literal()?;
        text.parse()
            .map_err(|_| self.bad(format!("{text:?} is not {what}")))
    }
}

fn image_name(cfg: &Cfg) -> Result<String, LegacyError> {
    let setting = cfg.required("imagename")?;
    let name = setting.literal()?;
    check_name(setting.key, name, NAME_MAX).map_err(|e| setting.bad(e.problem))?;
    Ok(name.into())
}

/// The cluster is named after the image, cut to fit (names are ASCII once checked).
fn cluster_name(image_name: &str) -> String {
    image_name
        .get(..CLUSTER_NAME_MAX)
        .unwrap_or(image_name)
        .into()
}

fn workdir(cfg: &Cfg, image_name: &str) -> Result<PathBuf, LegacyError> {
    match cfg.get("workdir") {
        Some(setting) => Ok(setting.literal()?.into()),
        None => Ok(Path::new("/var/lib/sftsan").join(image_name)),
    }
}

/// `snaptype` holds the value of `$dmsnap` (dm snapshots: the kernel backend) or of
/// `$qcsnap` (qcow2 overlays: the userspace backend); qcow2 when it is absent.
fn snapshot_style(cfg: &Cfg) -> Result<(Backend, SnapshotKind), LegacyError> {
    let Some(setting) = cfg.get("snaptype") else {
        return Ok((Backend::Userspace, SnapshotKind::Qcow2));
    };
    // `$dmsnap` where cfg.data never set dmsnap: the scripts' own name for it.
    match (&setting.value.unknown, setting.value.text.as_str()) {
        (Some(_), "$dmsnap") => return Ok((Backend::Kernel, SnapshotKind::DmSnapshot)),
        (Some(_), "$qcsnap") => return Ok((Backend::Userspace, SnapshotKind::Qcow2)),
        _ => {}
    }
    let value = setting.literal()?;
    let of = |key: &'static str| -> Result<String, LegacyError> {
        match cfg.get(key) {
            Some(s) => Ok(s.literal()?.to_string()),
            None => Ok(key.to_string()),
        }
    };
    if value == of("dmsnap")? {
        Ok((Backend::Kernel, SnapshotKind::DmSnapshot))
    } else if value == of("qcsnap")? {
        Ok((Backend::Userspace, SnapshotKind::Qcow2))
    } else {
        Err(setting.bad(format!("{value:?} is neither $dmsnap nor $qcsnap")))
    }
}

/// `cachesize` is in MiB.
fn cache_size(setting: Setting) -> Result<ByteSize, LegacyError> {
    let mib: u64 = setting.parse("a whole number")?;
    mib.checked_mul(1 << 20)
        .map(ByteSize)
        .ok_or_else(|| setting.bad(format!("{mib} MiB is too large")))
}

/// `cacheoridev`: the block device each compute node's cache lived on (under its loop
/// device). The kernel backend caches every node there when each node is a host of its
/// own; a spec that runs every node on one host can give it to a single node only.
fn cache_device(
    cfg: &Cfg,
    backend: Backend,
    mode: LegacyMode,
    nodes: &mut [NodeSpec],
) -> Result<Option<LegacyWarning>, LegacyError> {
    let Some(setting) = cfg.get("cacheoridev") else {
        return Ok(None);
    };
    let device = PathBuf::from(setting.literal()?);
    if !device.is_absolute() {
        return Err(setting.bad(format!("{:?} is not an absolute path", device.display())));
    }
    let warning = |reason: String| {
        Ok(Some(LegacyWarning {
            line: setting.line,
            key: setting.key.into(),
            reason,
        }))
    };
    match nodes {
        _ if backend != Backend::Kernel => warning(
            "caches on a block device are the kernel backend's (snaptype=$dmsnap); qcow2 caches \
             are files; ignored"
                .into(),
        ),
        _ if mode == LegacyMode::Remote || nodes.len() == 1 => {
            for node in nodes.iter_mut() {
                node.devices = NodeDevices {
                    cache: Some(device.clone()),
                    ..Default::default()
                };
            }
            Ok(None)
        }
        _ => warning(format!(
            "{} is each compute host's own cache device, but the imported spec runs all {} nodes \
             on one host (mode = \"host\"), where one device cannot hold every cache; their \
             caches are files (import with mode remote to give it to every node)",
            device.display(),
            nodes.len()
        )),
    }
}

/// Compute nodes in file order, named `node2`, `node3`, ... (sftsan numbered the origin
/// 1). Like `cat nodes` in the scripts, any whitespace separates addresses; `#` starts a
/// comment, blank lines and CRLF line ends are fine.
fn parse_nodes(text: &str, origin: IpAddr) -> Result<Vec<NodeSpec>, LegacyError> {
    let mut nodes: Vec<NodeSpec> = Vec::new();
    let mut lines: HashMap<IpAddr, usize> = HashMap::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let entry = raw.split_once('#').map_or(raw, |(before, _)| before);
        for word in entry.split_whitespace() {
            let bad = |problem: String| LegacyError::BadNode { line, problem };
            let address: IpAddr = word
                .parse()
                .map_err(|_| bad(format!("{word:?} is not an IP address")))?;
            if address == origin {
                return Err(bad(format!("{address} is imagenode, the origin")));
            }
            if let Some(first) = lines.insert(address, line) {
                return Err(bad(format!("{address} is already listed on line {first}")));
            }
            nodes.push(NodeSpec {
                name: format!("node{}", nodes.len() + 2),
                address,
                devices: Default::default(),
                ssh: None,
            });
        }
    }
    if nodes.is_empty() {
        return Err(LegacyError::NoNodes);
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests;
