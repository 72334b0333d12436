//! Imports the configuration of the original bash sftsan: its `cfg.data` (bash `key=value`
//! lines) and its `nodes` file (one compute node address per line).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::str::{Chars, FromStr};

use super::validate::{check_name, CLUSTER_NAME_MAX, NAME_MAX};
use super::{
    Backend, ByteSize, CacheSpec, ClusterSection, ClusterSpec, ImageSpec, KernelCache, KernelSpec,
    Mode, NodeSpec, OriginProtocol, OriginSpec, RelayTarget, SnapshotKind, SnapshotSpec,
};

/// Why a legacy configuration could not be imported; one line naming file, line and key.
#[derive(Debug, thiserror::Error)]
pub enum LegacyError {
    #[error("cfg.data line {line}: expected key=value, got {text:?}")]
    Syntax { line: usize, text: String },
    #[error("cfg.data line {line}: unknown key {key:?}")]
    UnknownKey { line: usize, key: String },
    #[error("cfg.data: required key {key:?} is missing")]
    MissingKey { key: &'static str },
    #[error("cfg.data line {line}: {key}: {problem}")]
    BadValue {
        line: usize,
        key: &'static str,
        problem: String,
    },
    #[error("nodes line {line}: {text:?} is not an IP address")]
    BadNode { line: usize, text: String },
}

/// Keys whose values become part of the spec.
const USED: [&str; 8] = [
    "imagename",
    "imagedev",
    "imagenode",
    "numsnap",
    "degree",
    "cachesize",
    "workdir",
    "snaptype",
];

/// Keys the bash scripts needed that mean nothing here (`cacheloopdev` gave way to
/// `cache.dir`; `nodes` is read from the nodes file).
const IGNORED: [&str; 5] = ["vgname", "cacheloopdev", "dmsnap", "qcsnap", "nodes"];

/// Converts sftsan's `cfg.data` and `nodes` files into a spec. `state_dir`, when given,
/// replaces `workdir` (the directory the bash scripts ran from).
pub fn import_legacy(
    cfg_data: &str,
    nodes: &str,
    state_dir: Option<&Path>,
) -> Result<ClusterSpec, LegacyError> {
    let cfg = Cfg::parse(cfg_data)?;
    let image_name = image_name(&cfg)?;
    let (backend, kind) = snapshot_style(&cfg)?;
    Ok(ClusterSpec {
        cluster: ClusterSection {
            name: cluster_name(&image_name),
            state_dir: match state_dir {
                Some(dir) => dir.to_path_buf(),
                None => workdir(&cfg, &image_name)?,
            },
            backend,
            mode: Mode::Host,
            degree: cfg.required("degree")?.number()?,
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
            address: cfg.required("imagenode")?.address()?,
            managed: true,
            protocol: OriginProtocol::Nbd,
            iscsi_port: 3260,
            iscsi_target: None,
            iscsi_control_port: None,
        },
        nodes: parse_nodes(nodes)?,
        cache: CacheSpec {
            dir: None,
            size: cache_size(cfg.required("cachesize")?)?,
            flush_interval_ms: super::default_flush_interval_ms(),
        },
        snapshots: SnapshotSpec {
            per_node: cfg.required("numsnap")?.number()?,
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
    })
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

/// The used keys of a cfg.data, each with its value from the last line that set it
/// (as bash would have it).
struct Cfg {
    values: HashMap<&'static str, Value>,
}

/// One `key=value` assignment.
struct Value {
    key: &'static str,
    line: usize,
    /// The value with quotes removed; `$...` and backticks are kept as written.
    text: String,
    /// The value needs the shell (variable or command substitution) to mean anything.
    shell: bool,
}

impl Cfg {
    fn parse(text: &str) -> Result<Cfg, LegacyError> {
        let mut values = HashMap::new();
        for (index, raw) in text.lines().enumerate() {
            let line = index + 1;
            let trimmed = raw.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (key, rest) = trimmed
                .split_once('=')
                .filter(|(key, _)| is_identifier(key))
                .ok_or_else(|| LegacyError::Syntax {
                    line,
                    text: trimmed.into(),
                })?;
            if IGNORED.contains(&key) {
                continue;
            }
            let key =
                *USED
                    .iter()
                    .find(|used| **used == key)
                    .ok_or_else(|| LegacyError::UnknownKey {
                        line,
                        key: key.into(),
                    })?;
            let word =
                parse_word(rest).map_err(|problem| LegacyError::BadValue { line, key, problem })?;
            let value = Value {
                key,
                line,
                text: word.text,
                shell: word.shell,
            };
            values.insert(key, value);
        }
        Ok(Cfg { values })
    }

    fn get(&self, key: &'static str) -> Option<&Value> {
        self.values.get(key)
    }

    fn required(&self, key: &'static str) -> Result<&Value, LegacyError> {
        self.get(key).ok_or(LegacyError::MissingKey { key })
    }
}

impl Value {
    fn bad(&self, problem: String) -> LegacyError {
        LegacyError::BadValue {
            line: self.line,
            key: self.key,
            problem,
        }
    }

    /// The value as written; shell expansion cannot be evaluated here.
    fn literal(&self) -> Result<&str, LegacyError> {
        if self.shell {
            return Err(self.bad(format!(
                "{:?} needs the shell to expand it; write the value out",
                self.text
            )));
        }
        if self.text.is_empty() {
            return Err(self.bad("is empty".into()));
        }
        Ok(&self.text)
    }

    fn number<T: FromStr>(&self) -> Result<T, LegacyError> {
        let text = self.literal()?;
        text.parse()
            .map_err(|_| self.bad(format!("{text:?} is not a whole number")))
    }

    fn address(&self) -> Result<IpAddr, LegacyError> {
        let text = self.literal()?;
        text.parse()
            .map_err(|_| self.bad(format!("{text:?} is not an IP address")))
    }
}

fn is_identifier(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A shell word: its text without quotes, and whether it uses expansion.
#[derive(Debug, Default, PartialEq)]
struct Word {
    text: String,
    shell: bool,
}

/// Reads the value after `key=` as bash would: quotes removed, ended by unquoted
/// whitespace, after which only a `#` comment may follow.
fn parse_word(raw: &str) -> Result<Word, String> {
    let mut word = Word::default();
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' => break,
            '\'' => word.text.push_str(&take_until(&mut chars, '\'')?),
            '"' => double_quoted(&mut chars, &mut word)?,
            '`' => substitution(&mut chars, &mut word, "`", '`')?,
            '$' if chars.as_str().starts_with('(') => {
                chars.next();
                substitution(&mut chars, &mut word, "$(", ')')?;
            }
            '$' => {
                word.shell = true;
                word.text.push('$');
            }
            '\\' => word.text.extend(chars.next()),
            c => word.text.push(c),
        }
    }
    let rest = chars.as_str().trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(word)
    } else {
        Err(format!(
            "unexpected {rest:?} after the value (one assignment per line)"
        ))
    }
}

/// Text up to the closing `end`, which is consumed.
fn take_until(chars: &mut Chars, end: char) -> Result<String, String> {
    let mut text = String::new();
    for c in chars.by_ref() {
        if c == end {
            return Ok(text);
        }
        text.push(c);
    }
    Err(format!("unterminated {end}"))
}

/// A command substitution, kept as written.
fn substitution(chars: &mut Chars, word: &mut Word, open: &str, close: char) -> Result<(), String> {
    let command = take_until(chars, close)?;
    word.shell = true;
    word.text.push_str(open);
    word.text.push_str(&command);
    word.text.push(close);
    Ok(())
}

/// The inside of a `"..."` string, whose opening quote was consumed.
fn double_quoted(chars: &mut Chars, word: &mut Word) -> Result<(), String> {
    while let Some(c) = chars.next() {
        match c {
            '"' => return Ok(()),
            '\\' => match chars.next() {
                Some(escaped @ ('$' | '`' | '"' | '\\')) => word.text.push(escaped),
                Some(other) => {
                    word.text.push('\\');
                    word.text.push(other);
                }
                None => break,
            },
            '$' | '`' => {
                word.shell = true;
                word.text.push(c);
            }
            c => word.text.push(c),
        }
    }
    Err("unterminated \"".into())
}

fn image_name(cfg: &Cfg) -> Result<String, LegacyError> {
    let value = cfg.required("imagename")?;
    let name = value.literal()?;
    check_name(value.key, name, NAME_MAX).map_err(|e| value.bad(e.problem))?;
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
        Some(value) => Ok(value.literal()?.into()),
        None => Ok(Path::new("/var/lib/sftsan").join(image_name)),
    }
}

/// `snaptype` chose between the `$dmsnap` and `$qcsnap` scripts; qcow2 when absent.
fn snapshot_style(cfg: &Cfg) -> Result<(Backend, SnapshotKind), LegacyError> {
    let Some(value) = cfg.get("snaptype") else {
        return Ok((Backend::Userspace, SnapshotKind::Qcow2));
    };
    match value.text.as_str() {
        "$dmsnap" | "${dmsnap}" | "dmsnap" => Ok((Backend::Kernel, SnapshotKind::DmSnapshot)),
        "$qcsnap" | "${qcsnap}" | "qcsnap" => Ok((Backend::Userspace, SnapshotKind::Qcow2)),
        other => Err(value.bad(format!("{other:?} is neither $dmsnap nor $qcsnap"))),
    }
}

/// `cachesize` is in MiB.
fn cache_size(value: &Value) -> Result<ByteSize, LegacyError> {
    let mib: u64 = value.number()?;
    mib.checked_mul(1 << 20)
        .map(ByteSize)
        .ok_or_else(|| value.bad(format!("{mib} MiB is too large")))
}

/// Compute nodes in file order, named `node2`, `node3`, ... (sftsan numbered the origin 1).
fn parse_nodes(text: &str) -> Result<Vec<NodeSpec>, LegacyError> {
    let mut nodes = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let entry = raw.split_once('#').map_or(raw, |(before, _)| before).trim();
        if entry.is_empty() {
            continue;
        }
        let address = entry.parse().map_err(|_| LegacyError::BadNode {
            line: index + 1,
            text: entry.into(),
        })?;
        nodes.push(NodeSpec {
            name: format!("node{}", nodes.len() + 2),
            address,
            devices: Default::default(),
        });
    }
    Ok(nodes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// cfg.data exactly as in the original sftsan README (the degree line is separated from
    /// its comment by tabs).
    const SEED_CFG: &str = r"imagenode=192.168.0.152   #原存储节点ip
imagename=ubuntu12      #镜像名称
numsnap=2               #在计算节点建立snapshot的数目
vgname=vgdata            #原存储节点VG的名称
imagedev=/dev/mapper/vgdata-lvimage1     #原存储节点的镜像路径
degree=1					#sftsan树形模型的度，2为二叉树，10为十叉树，1为链状结构
workdir=/root/sftsan/       #sftsan工作路径
nodes=`cat $workdir/nodes`  #计算节点列表，每个计算节点一行
cachesize=4096            #cache的大小，设置太大占用过多内存，导致性能下降，甚至崩溃，设置太小会导致数据置换，性能下降
cacheloopdev=/dev/loop6   #用来进行缓存的块设备
dmsnap=dmsnap           #配置snapshot的参数
qcsnap=qcsnap            #另一种实现方式qcow2，现在没有使用
snaptype=$dmsnap
#snaptype=$qcsnap
";

    const NODES: &str = "192.168.0.153\n192.168.0.154\n192.168.0.155\n";

    /// The smallest complete cfg.data.
    const MINIMAL: &str = "\
imagename=img
imagedev=/dev/vg/img
imagenode=10.0.0.1
numsnap=3
degree=2
cachesize=1024
";

    fn import(cfg: &str) -> Result<ClusterSpec, LegacyError> {
        import_legacy(cfg, "10.0.0.2\n", None)
    }

    fn import_err(cfg: &str) -> String {
        import(cfg).unwrap_err().to_string()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn converts_the_original_cfg_data() {
        let spec = import_legacy(SEED_CFG, NODES, None).unwrap();
        assert_eq!(spec.cluster.name, "ubuntu12");
        assert_eq!(spec.cluster.state_dir, Path::new("/root/sftsan/"));
        assert_eq!(spec.cluster.backend, Backend::Kernel);
        let kernel = spec
            .kernel
            .as_ref()
            .expect("a kernel cluster gets a [kernel] section");
        assert_eq!(kernel.chap_secret.len(), 24, "a generated CHAP secret");
        assert!(!kernel.open_access);
        assert_eq!(spec.cluster.mode, Mode::Host);
        assert_eq!(spec.cluster.degree, 1);
        assert_eq!(spec.cluster.port, super::super::DEFAULT_PORT);
        assert_eq!(spec.image.name, "ubuntu12");
        assert_eq!(spec.image.source, Path::new("/dev/mapper/vgdata-lvimage1"));
        assert_eq!(spec.image.size, None);
        assert_eq!(spec.origin.name, "origin");
        assert_eq!(spec.origin.address, ip("192.168.0.152"));
        assert!(spec.origin.managed);
        let nodes: Vec<(&str, IpAddr)> = spec
            .nodes
            .iter()
            .map(|n| (n.name.as_str(), n.address))
            .collect();
        assert_eq!(
            nodes,
            [
                ("node2", ip("192.168.0.153")),
                ("node3", ip("192.168.0.154")),
                ("node4", ip("192.168.0.155")),
            ]
        );
        assert_eq!(spec.cache.size, ByteSize(4096 << 20));
        assert_eq!(spec.cache.dir, None);
        assert_eq!(spec.snapshots.per_node, 2);
        assert_eq!(spec.snapshots.kind, SnapshotKind::DmSnapshot);
        assert_eq!(spec.local, None);

        let back = ClusterSpec::from_toml(&spec.to_toml()).unwrap();
        assert_eq!(back, spec);
    }

    #[test]
    fn state_dir_argument_replaces_workdir() {
        let spec = import_legacy(SEED_CFG, NODES, Some(Path::new("/srv/sftsan"))).unwrap();
        assert_eq!(spec.cluster.state_dir, Path::new("/srv/sftsan"));
    }

    #[test]
    fn state_dir_defaults_to_var_lib_without_workdir() {
        let spec = import(MINIMAL).unwrap();
        assert_eq!(spec.cluster.state_dir, Path::new("/var/lib/sftsan/img"));
    }

    #[test]
    fn snaptype_defaults_to_qcow2() {
        let spec = import(MINIMAL).unwrap();
        assert_eq!(spec.cluster.backend, Backend::Userspace);
        assert_eq!(spec.snapshots.kind, SnapshotKind::Qcow2);
    }

    #[test]
    fn snaptype_selects_backend_and_kind() {
        for (line, backend, kind) in [
            ("snaptype=$qcsnap", Backend::Userspace, SnapshotKind::Qcow2),
            ("snaptype=qcsnap", Backend::Userspace, SnapshotKind::Qcow2),
            (
                "snaptype=\"${qcsnap}\"",
                Backend::Userspace,
                SnapshotKind::Qcow2,
            ),
            (
                "snaptype=$dmsnap",
                Backend::Kernel,
                SnapshotKind::DmSnapshot,
            ),
            (
                "snaptype=dmsnap # dm",
                Backend::Kernel,
                SnapshotKind::DmSnapshot,
            ),
        ] {
            let spec = import(&format!("{MINIMAL}{line}\n")).unwrap();
            assert_eq!(
                (spec.cluster.backend, spec.snapshots.kind),
                (backend, kind),
                "{line}"
            );
        }
    }

    #[test]
    fn unknown_snaptype_is_rejected() {
        let err = import_err(&format!("{MINIMAL}snaptype=$thin\n"));
        assert_eq!(
            err,
            "cfg.data line 7: snaptype: \"$thin\" is neither $dmsnap nor $qcsnap"
        );
    }

    #[test]
    fn ignored_keys_are_accepted() {
        let cfg = format!(
            "{MINIMAL}vgname=vgdata\ncacheloopdev=/dev/loop6\ndmsnap=dmsnap\nqcsnap=qcsnap\n\
             nodes=`cat $workdir/nodes`\nnodes=$(cat \"unterminated\n"
        );
        import(&cfg).unwrap();
    }

    #[test]
    fn unknown_key_is_rejected_with_its_line() {
        let err = import_err(&format!("# comment\n\n{MINIMAL}vmcount=4\n"));
        assert_eq!(err, "cfg.data line 9: unknown key \"vmcount\"");
    }

    #[test]
    fn line_without_assignment_is_rejected() {
        let err = import_err(&format!("{MINIMAL}source ./common.sh\n"));
        assert_eq!(
            err,
            "cfg.data line 7: expected key=value, got \"source ./common.sh\""
        );
        let err = import_err("=x\n");
        assert_eq!(err, "cfg.data line 1: expected key=value, got \"=x\"");
    }

    #[test]
    fn missing_required_keys_are_named() {
        for key in [
            "imagename",
            "imagedev",
            "imagenode",
            "numsnap",
            "degree",
            "cachesize",
        ] {
            let cfg: String = MINIMAL
                .lines()
                .filter(|line| !line.starts_with(&format!("{key}=")))
                .map(|line| format!("{line}\n"))
                .collect();
            let err = import_err(&cfg);
            assert_eq!(err, format!("cfg.data: required key {key:?} is missing"));
        }
    }

    #[test]
    fn bad_numbers_name_key_and_line() {
        let err = import_err(&MINIMAL.replace("numsnap=3", "numsnap=three"));
        assert_eq!(
            err,
            "cfg.data line 4: numsnap: \"three\" is not a whole number"
        );
        let err = import_err(&MINIMAL.replace("degree=2", "degree=-1"));
        assert_eq!(err, "cfg.data line 5: degree: \"-1\" is not a whole number");
        let err = import_err(&MINIMAL.replace("cachesize=1024", "cachesize=4G"));
        assert_eq!(
            err,
            "cfg.data line 6: cachesize: \"4G\" is not a whole number"
        );
    }

    #[test]
    fn huge_cachesize_is_rejected() {
        let err = import_err(&MINIMAL.replace("cachesize=1024", "cachesize=18446744073709551615"));
        assert_eq!(
            err,
            "cfg.data line 6: cachesize: 18446744073709551615 MiB is too large"
        );
    }

    #[test]
    fn bad_imagenode_is_rejected() {
        let err = import_err(&MINIMAL.replace("imagenode=10.0.0.1", "imagenode=storage1"));
        assert_eq!(
            err,
            "cfg.data line 3: imagenode: \"storage1\" is not an IP address"
        );
    }

    #[test]
    fn empty_value_is_rejected() {
        let err = import_err(&MINIMAL.replace("imagedev=/dev/vg/img", "imagedev= # none"));
        assert_eq!(err, "cfg.data line 2: imagedev: is empty");
    }

    #[test]
    fn invalid_imagename_is_rejected() {
        let err = import_err(&MINIMAL.replace("imagename=img", "imagename=\"my img\""));
        assert!(
            err.starts_with("cfg.data line 1: imagename: \"my img\" contains ' '"),
            "{err}"
        );
        let err = import_err(&MINIMAL.replace("imagename=img", "imagename=.img"));
        assert_eq!(
            err,
            "cfg.data line 1: imagename: \".img\" must not start with '.' or '-'"
        );
    }

    #[test]
    fn long_imagename_is_cut_for_the_cluster_name() {
        let cfg = MINIMAL.replace("imagename=img", "imagename=ubuntu-12.04-server-amd64");
        let spec = import(&cfg).unwrap();
        assert_eq!(spec.image.name, "ubuntu-12.04-server-amd64");
        assert_eq!(spec.cluster.name, "ubuntu-12.04-ser");
        assert_eq!(spec.cluster.name.len(), CLUSTER_NAME_MAX);
    }

    #[test]
    fn shell_expansion_in_a_used_value_is_rejected() {
        let err = import_err(&format!("{MINIMAL}workdir=`pwd`\n"));
        assert_eq!(
            err,
            "cfg.data line 7: workdir: \"`pwd`\" needs the shell to expand it; \
             write the value out"
        );
        let err = import_err(&MINIMAL.replace("/dev/vg/img", "/dev/$vgname/img"));
        assert_eq!(
            err,
            "cfg.data line 2: imagedev: \"/dev/$vgname/img\" needs the shell to expand it; \
             write the value out"
        );
    }

    #[test]
    fn later_assignments_win() {
        let spec = import(&format!("{MINIMAL}degree=5\n")).unwrap();
        assert_eq!(spec.cluster.degree, 5);
    }

    #[test]
    fn quotes_escapes_and_comments_are_read_like_bash() {
        let word = |raw: &str| parse_word(raw).unwrap();
        let plain = |text: &str| Word {
            text: text.into(),
            shell: false,
        };
        assert_eq!(word("abc"), plain("abc"));
        assert_eq!(word("abc   # comment"), plain("abc"));
        assert_eq!(word("abc#def"), plain("abc#def"));
        assert_eq!(word("'a b'"), plain("a b"));
        assert_eq!(word("'$x'"), plain("$x"));
        assert_eq!(word("\"a b\" #c"), plain("a b"));
        assert_eq!(word("\"a\\\"b\""), plain("a\"b"));
        assert_eq!(word("a\\ b"), plain("a b"));
        assert_eq!(word("\\$x"), plain("$x"));
        assert_eq!(word("/x/'y z'/\"w\""), plain("/x/y z/w"));
        assert_eq!(word(""), plain(""));
        assert_eq!(word(" # only a comment"), plain(""));
        for raw in ["$x", "\"$x\"", "`cat f`", "$(cat f)", "a\"`b`\""] {
            assert!(word(raw).shell, "{raw}");
        }
        assert_eq!(word("`cat $w/nodes` # x").text, "`cat $w/nodes`");
    }

    #[test]
    fn malformed_values_are_rejected() {
        assert_eq!(parse_word("'abc").unwrap_err(), "unterminated '");
        assert_eq!(parse_word("\"abc").unwrap_err(), "unterminated \"");
        assert_eq!(parse_word("`abc").unwrap_err(), "unterminated `");
        assert_eq!(
            parse_word("a b").unwrap_err(),
            "unexpected \"b\" after the value (one assignment per line)"
        );
        let err = import_err(&MINIMAL.replace("imagedev=/dev/vg/img", "imagedev='/dev/vg/img"));
        assert_eq!(err, "cfg.data line 2: imagedev: unterminated '");
    }

    #[test]
    fn nodes_file_skips_blanks_and_comments() {
        let nodes = "# compute nodes\n\n10.0.0.2\n  10.0.0.3  # rack 2\n\nfd00::4\n";
        let spec = import_legacy(MINIMAL, nodes, None).unwrap();
        let names: Vec<&str> = spec.nodes.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["node2", "node3", "node4"]);
        assert_eq!(spec.nodes[1].address, ip("10.0.0.3"));
        assert_eq!(spec.nodes[2].address, ip("fd00::4"));
    }

    #[test]
    fn bad_node_address_names_its_line() {
        let err = import_legacy(MINIMAL, "10.0.0.2\n\nnode3.example\n", None).unwrap_err();
        assert_eq!(
            err.to_string(),
            "nodes line 3: \"node3.example\" is not an IP address"
        );
    }

    #[test]
    fn imported_spec_passes_validation_once_the_image_exists() {
        let image = tempfile::NamedTempFile::new().unwrap();
        image.as_file().set_len(1 << 20).unwrap();
        let cfg = MINIMAL.replace("/dev/vg/img", &image.path().display().to_string());
        let spec = import_legacy(&cfg, NODES, None).unwrap();
        let validated = super::super::validate(spec).unwrap();
        assert_eq!(validated.image_size(), 1 << 20);
    }
}
