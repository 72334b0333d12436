//! Every name sftsan puts on a system, derived in one place from validated spec names,
//! so that everything a cluster created can be found (and removed) from its spec alone.

use std::path::{Path, PathBuf};

use crate::spec::ClusterSpec;

/// Prefix of network namespaces, exports and daemon names.
pub const PREFIX: &str = "sftsan";

/// Names for one cluster.
#[derive(Debug, Clone)]
pub struct Names {
    cluster: String,
    state_dir: PathBuf,
    cache_dir: Option<PathBuf>,
    image: String,
    /// Short stable tag of the cluster name, for kernel names limited to 15 bytes.
    tag: String,
}

impl Names {
    /// The names of the cluster `spec` describes.
    pub fn new(spec: &ClusterSpec) -> Names {
        Names {
            cluster: spec.cluster.name.clone(),
            state_dir: spec.cluster.state_dir.clone(),
            cache_dir: spec.cache.dir.clone(),
            image: spec.image.name.clone(),
            tag: short_tag(&spec.cluster.name),
        }
    }

    /// The cluster's name (`cluster.name`).
    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// The cluster's state directory (`cluster.state_dir`).
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// The journal file: `<state_dir>/journal.json`.
    pub fn journal(&self) -> PathBuf {
        self.state_dir.join("journal.json")
    }

    /// The file locked while an sftsan works on the cluster: `<state_dir>/lock`.
    pub fn lock(&self) -> PathBuf {
        self.state_dir.join("lock")
    }

    /// Runtime files of a node's daemons: QMP socket, pid files, logs.
    pub fn run_dir(&self, node: &str) -> PathBuf {
        self.state_dir.join("run").join(node)
    }

    /// Remote mode: the unix socket of a node's NBD server, where its VMs and its TLS relay
    /// read the node's export (`<run_dir>/nbd.sock`).
    pub fn nbd_socket(&self, node: &str) -> PathBuf {
        self.run_dir(node).join("nbd.sock")
    }

    /// Remote mode: the pre-shared keys of a node's links (`<state_dir>/link-keys/<node>`):
    /// `client/keys.psk` for the link to its parent, `server/keys.psk` for its children's.
    pub fn link_keys_dir(&self, node: &str) -> PathBuf {
        self.state_dir.join("link-keys").join(node)
    }

    /// Directory holding a node's cache file.
    pub fn cache_dir(&self, node: &str) -> PathBuf {
        match &self.cache_dir {
            Some(dir) => dir.join(&self.cluster).join(node),
            None => self.state_dir.join("nodes").join(node),
        }
    }

    /// A node's qcow2 cache file (userspace backend): `<image>.cache.qcow2` in its cache dir.
    pub fn cache_file(&self, node: &str) -> PathBuf {
        self.cache_dir(node)
            .join(format!("{}.cache.qcow2", self.image))
    }

    /// Directory holding a node's VM disks: `<state_dir>/nodes/<node>/snapshots`.
    pub fn snapshot_dir(&self, node: &str) -> PathBuf {
        self.state_dir.join("nodes").join(node).join("snapshots")
    }

    /// The VM disk of snapshot `index` (1-based, as sftsan's `snp-<image>_<n>`).
    pub fn snapshot_file(&self, node: &str, index: u32) -> PathBuf {
        self.snapshot_dir(node)
            .join(format!("{}-{index}.qcow2", self.image))
    }

    /// Name of the image's export on every node (the origin's and each relay).
    pub fn export_name(&self) -> String {
        self.image.clone()
    }

    /// The iSCSI initiator name a node logs in with (the origin's ACL lists its children's).
    pub fn initiator_iqn(&self, node: &str) -> String {
        format!(
            "iqn.2014-12.org.sftsan:{}.node.{}",
            iqn_part(&self.cluster),
            iqn_part(node)
        )
    }

    /// The origin's iSCSI target name.
    pub fn iqn(&self) -> String {
        format!(
            "iqn.2014-12.org.sftsan:{}.image.{}",
            iqn_part(&self.cluster),
            iqn_part(&self.image)
        )
    }

    /// The iSCSI target a kernel-backend node exports (the origin its image, a node its
    /// cache).
    pub fn node_target_iqn(&self, node: &str) -> String {
        format!(
            "iqn.2014-12.org.sftsan:{}.{}.{}",
            iqn_part(&self.cluster),
            iqn_part(node),
            iqn_part(&self.image)
        )
    }

    /// A node's device-mapper device `what` (cache, snap-1, pool, thin-1, ...).
    pub fn dm_name(&self, node: &str, what: &str) -> String {
        format!("{PREFIX}-{}-{node}-{what}", self.cluster)
    }

    /// A node's LIO backstore object.
    pub fn backstore(&self, node: &str) -> String {
        format!("{PREFIX}-{}-{node}", self.cluster)
    }

    /// A node's loop-backed file `what` (cache.img, cow-1.img, ...).
    pub fn node_file(&self, node: &str, what: &str) -> PathBuf {
        self.cache_dir(node).join(format!("{}.{what}", self.image))
    }

    /// tgtd's management port: private per cluster, so several tgtd can run side by side.
    pub fn tgt_control_port(&self) -> u16 {
        let tag = u32::from_str_radix(&self.tag, 16).unwrap_or(0);
        20000 + (tag % 10000) as u16
    }

    /// tgtd's management port for the node at tree position `index` (kernel backend: one
    /// tgtd per node, side by side on one host).
    pub fn tgt_node_control_port(&self, index: usize) -> u16 {
        self.tgt_control_port() + index as u16
    }

    /// A node's network namespace in local mode: `sftsan-<cluster>-<node>`.
    pub fn netns(&self, node: &str) -> String {
        format!("{PREFIX}-{}-{node}", self.cluster)
    }

    /// Linux interface names are at most 15 bytes: use the cluster tag and node position.
    pub fn bridge(&self) -> String {
        format!("sft{}br", self.tag)
    }

    /// Root-namespace end of a node's veth (the other end is renamed `eth0` in the
    /// namespace). Named after the node, not its place in the tree: a node removed from the
    /// middle of the list moves the others, and their interfaces must keep their names.
    pub fn veth_host(&self, node: &str) -> String {
        format!("sft{}h{}", self.tag, crate::hash::node_tag(node))
    }

    /// Namespace end of the veth before it is moved and renamed.
    pub fn veth_peer(&self, node: &str) -> String {
        format!("sft{}p{}", self.tag, crate::hash::node_tag(node))
    }
}

/// Name of a node's interface inside its namespace.
pub const NETNS_IFACE: &str = "eth0";

/// IQNs are lower case and have no underscores.
fn iqn_part(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

/// Six hex digits of FNV-1a over the cluster name: stable across runs and builds.
fn short_tag(name: &str) -> String {
    format!("{:06x}", crate::hash::fnv32(name.as_bytes()) & 0xff_ffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(cluster: &str) -> Names {
        let text = crate::spec::test_spec_text("/s", "userspace", "qcow2", "")
            .replace("name = \"c\"", &format!("name = {cluster:?}"));
        Names::new(&crate::spec::ClusterSpec::from_toml(&text).unwrap())
    }

    #[test]
    fn interface_names_fit_the_kernel_limit() {
        let long = names("a-very-long-clus");
        let node = "a-node-name-as-long-as-they-may-be";
        for name in [long.bridge(), long.veth_host(node), long.veth_peer(node)] {
            assert!(name.len() <= 15, "{name} is longer than IFNAMSIZ allows");
            assert!(name.starts_with("sft"), "{name}");
        }
        // Stable for a name, different for another.
        assert_eq!(long.bridge(), names("a-very-long-clus").bridge());
        assert_ne!(long.bridge(), names("another").bridge());
        assert_ne!(long.veth_host("n1"), long.veth_host("n2"));
        assert_eq!(
            long.veth_host("n1"),
            names("a-very-long-clus").veth_host("n1")
        );
    }
}
