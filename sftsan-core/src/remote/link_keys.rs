//! Pre-shared keys of a remote cluster's NBD links: one random key per parent-child link,
//! made by the controller, kept there (0600) so that a later `up` sends the same keys, sent
//! to the two hosts of the link inside the request on stdin, and stored by each host 0600
//! in a 0700 directory as QEMU's `keys.psk` files.

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::names::Names;
use crate::plan::{Plan, ResourceSpec};

/// Bytes of randomness per key.
const KEY_BYTES: usize = 32;

/// The keys one host needs for its node's links.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLinkKeys {
    /// The key (hex) of the link to the node's parent, if it has an NBD parent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// The keys (hex) of the links to the node's children, by child.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub children: BTreeMap<String, String>,
}

impl std::fmt::Debug for NodeLinkKeys {
    // Keys never reach a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeLinkKeys")
            .field("upstream", &self.upstream.as_ref().map(|_| "<key>"))
            .field("children", &self.children.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The controller's keys of every link of a cluster, kept in `<state_dir>/link-keys.json`.
pub struct LinkKeyStore {
    path: PathBuf,
    /// `parent>child` -> key (hex).
    keys: BTreeMap<String, String>,
}

fn link(parent: &str, child: &str) -> String {
    format!("{parent}>{child}")
}

/// The links of `plan` that are TLS: (parent, child).
fn tls_links(plan: &Plan) -> Vec<(String, String)> {
    plan.nodes
        .iter()
        .filter_map(|n| {
            let parent = n.parent.clone()?;
            n.stack
                .iter()
                .any(|r| matches!(r, ResourceSpec::Upstream(u) if u.tls.is_some()))
                .then(|| (parent, n.name.clone()))
        })
        .collect()
}

impl LinkKeyStore {
    /// Where the controller keeps a cluster's link keys.
    pub fn path(names: &Names) -> PathBuf {
        names.state_dir().join("link-keys.json")
    }

    /// The store of `plan`'s cluster, with a key for every link (new links get new keys,
    /// saved before any is sent).
    pub fn open(names: &Names, plan: &Plan) -> Result<LinkKeyStore> {
        let path = Self::path(names);
        let mut keys: BTreeMap<String, String> = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                Error::corrupt(path.display().to_string(), format!("link keys: {e}"))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).at(&path),
        };
        let mut added = false;
        for (parent, child) in tls_links(plan) {
            if let std::collections::btree_map::Entry::Vacant(v) = keys.entry(link(&parent, &child))
            {
                v.insert(random_key()?);
                added = true;
            }
        }
        let store = LinkKeyStore { path, keys };
        if added {
            store.save()?;
        }
        Ok(store)
    }

    /// The keys `node`'s host needs.
    pub fn for_node(&self, plan: &Plan, node: &str) -> NodeLinkKeys {
        let mut keys = NodeLinkKeys::default();
        for (parent, child) in tls_links(plan) {
            let Some(key) = self.keys.get(&link(&parent, &child)) else {
                continue;
            };
            if child == node {
                keys.upstream = Some(key.clone());
            }
            if parent == node {
                keys.children.insert(child, key.clone());
            }
        }
        keys
    }

    /// Forgets every key (after the whole cluster went down).
    pub fn forget(names: &Names) -> Result<()> {
        crate::fsutil::remove_file_if_exists(&Self::path(names))
    }

    fn save(&self) -> Result<()> {
        let text = serde_json::to_vec_pretty(&self.keys).expect("strings serialize");
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir).at(dir)?;
        }
        write_secret(&self.path, &text)
    }
}

/// 32 bytes from the kernel's random source, as hex.
fn random_key() -> Result<String> {
    let mut bytes = [0u8; KEY_BYTES];
    let source = Path::new("/dev/urandom");
    fs::File::open(source)
        .and_then(|mut f| f.read_exact(&mut bytes))
        .at(source)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Writes `bytes` to `path` readable by its owner only, replacing it whole.
fn write_secret(path: &Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("new");
    crate::fsutil::remove_file_if_exists(&tmp)?;
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .at(&tmp)?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .at(&tmp)?;
    fs::rename(&tmp, path).at(path)
}

/// Writes a host's key files for `node`: `client/keys.psk` (its own line) and
/// `server/keys.psk` (one line per child), in 0700 directories.
pub fn install(names: &Names, node: &str, keys: &NodeLinkKeys) -> Result<()> {
    let dir = names.link_keys_dir(node);
    let files = [
        (
            "client",
            keys.upstream
                .iter()
                .map(|k| (node, k.as_str()))
                .collect::<Vec<_>>(),
        ),
        (
            "server",
            keys.children
                .iter()
                .map(|(c, k)| (c.as_str(), k.as_str()))
                .collect(),
        ),
    ];
    for (side, lines) in files {
        if lines.is_empty() {
            continue;
        }
        let side_dir = dir.join(side);
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&side_dir)
            .at(&side_dir)?;
        let text: String = lines
            .iter()
            .map(|(who, key)| format!("{who}:{key}\n"))
            .collect();
        write_secret(&side_dir.join("keys.psk"), text.as_bytes())?;
    }
    Ok(())
}

/// Removes every key file of the cluster on this host.
pub fn uninstall(names: &Names) -> Result<()> {
    let dir = names.state_dir().join("link-keys");
    match fs::remove_dir_all(&dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e).at(&dir),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_random_hex_and_never_printed() {
        let (a, b) = (random_key().unwrap(), random_key().unwrap());
        assert_eq!(a.len(), 2 * KEY_BYTES);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        let keys = NodeLinkKeys {
            upstream: Some(a.clone()),
            children: [("n3".to_string(), b.clone())].into(),
        };
        let shown = format!("{keys:?}");
        assert!(!shown.contains(&a) && !shown.contains(&b), "{shown}");
        assert!(shown.contains("n3"), "{shown}");
    }

    #[test]
    fn key_files_are_private_and_name_each_side() {
        let dir = tempfile::tempdir().unwrap();
        let text = include_str!("../../../examples/chain.toml");
        let mut spec = crate::spec::ClusterSpec::from_toml(text).unwrap();
        spec.cluster.state_dir = dir.path().to_path_buf();
        let names = Names::new(&spec);
        let keys = NodeLinkKeys {
            upstream: Some("aa".into()),
            children: [("n3".into(), "bb".into()), ("n4".into(), "cc".into())].into(),
        };
        install(&names, "n1", &keys).unwrap();
        let base = names.link_keys_dir("n1");
        let client = fs::read_to_string(base.join("client/keys.psk")).unwrap();
        let server = fs::read_to_string(base.join("server/keys.psk")).unwrap();
        assert_eq!(client, "n1:aa\n");
        assert_eq!(server, "n3:bb\nn4:cc\n");
        for (path, mode) in [
            (base.join("client/keys.psk"), 0o600),
            (base.join("server"), 0o700),
        ] {
            let m = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(m, mode, "{}", path.display());
        }
        uninstall(&names).unwrap();
        assert!(!dir.path().join("link-keys").exists());
    }
}
