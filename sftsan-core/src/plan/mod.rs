//! The plan: the tree, and for every node the ordered stack of resources that makes it.
//! Computed from a validated spec without touching the system.

mod kernel;

use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use crate::backends::tgt::TgtTarget;
use crate::backends::userspace::nbd::Address;
use crate::backends::userspace::switch::{switch_socket, Ancestor};
use crate::backends::userspace::{
    Cache, Daemon, IscsiLogin, Keeper, LinkKey, OriginExport, RelayExport, Snapshot, TlsRelay,
    Upstream, UpstreamSwitch,
};
use crate::local::{Bridge, Namespace, SubnetGuard};
use crate::names::Names;
use crate::spec::{Backend, ClusterSpec, Mode, OriginProtocol, SnapshotKind, ValidatedSpec};
use crate::topology::Tree;
use crate::transport::ssh::SshDestination;
use crate::transport::TransportSpec;

/// What a node is in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The tree's root, which serves the image itself.
    Origin,
    /// A compute node: caches the image from its parent and serves it on.
    Node,
}

/// One node of the plan: its place in the tree and the resources that make it.
#[derive(Debug, Clone, Serialize)]
pub struct NodePlan {
    /// The node's name from the spec, e.g. `n1`.
    pub name: String,
    /// Position in the tree (the origin is 1).
    pub index: usize,
    /// Whether the node is the origin or a compute node.
    pub role: Role,
    /// The parent's node name; `None` for the origin.
    pub parent: Option<String>,
    /// Depth below the origin (the origin is level 0).
    pub level: usize,
    /// The node's IP address from the spec.
    pub address: IpAddr,
    /// Where the node's commands run: the host or the node's network namespace.
    pub transport: TransportSpec,
    /// How the controller reaches the node's host (mode remote); there the host's own
    /// sftsan runs `transport` = this host.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh: Option<SshDestination>,
    /// The node's resources in creation order (empty for an origin someone else runs).
    pub stack: Vec<ResourceSpec>,
}

/// The whole plan: every resource the cluster needs, node by node, computed from a spec.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// The cluster's name (`cluster.name`).
    pub cluster: String,
    /// The image's name (`image.name`), also the name of every export.
    pub image: String,
    /// The image's size in bytes, as measured during validation.
    pub image_size: u64,
    /// Where the nodes run (`cluster.mode`).
    pub mode: Mode,
    /// Children per node (`cluster.degree`).
    pub degree: usize,
    /// How many nodes of one tree level are set up at once (`cluster.parallelism`).
    pub parallelism: usize,
    /// Resources shared by the whole cluster (local mode's guard route and bridge).
    pub cluster_stack: Vec<ResourceSpec>,
    /// Indexed by tree position - 1: the origin first.
    pub nodes: Vec<NodePlan>,
    /// The distribution tree the nodes are placed in.
    #[serde(skip)]
    pub tree: Tree,
    #[serde(skip)]
    names: Names,
    /// Where each compute node of the kernel backend keeps its stores.
    #[serde(skip)]
    stores: std::collections::BTreeMap<String, kernel::Stores>,
    /// The storage stack the nodes are built from (`cluster.backend`).
    pub backend: Backend,
    /// How VM disks are made (`snapshots.kind`).
    pub snapshot_kind: SnapshotKind,
}

impl Plan {
    /// The plan of the node called `name` (the origin included), if there is one.
    pub fn node(&self, name: &str) -> Option<&NodePlan> {
        self.nodes.iter().find(|n| n.name == name)
    }

    /// The resources making VM disk `index` of a compute node, planned or not (VMs beyond
    /// `per_node` get theirs on demand), in creation order: the disk is the last.
    pub fn vm_disk(&self, node: &str, index: u32) -> Option<Vec<ResourceSpec>> {
        let n = self
            .node(node)
            .filter(|n| n.role == Role::Node && index > 0)?;
        if self.backend == Backend::Kernel {
            return Some(kernel::vm_disk(
                self.stores.get(node)?,
                self.snapshot_kind,
                index,
                self.image_size,
            ));
        }
        let daemon = n.stack.iter().find_map(|r| match r {
            ResourceSpec::Daemon(d) => Some(d),
            _ => None,
        })?;
        Some(vec![snapshot(&self.names, daemon, self.image_size, index)])
    }

    /// Where VM disk `index` of `node` is, for a domain's `<disk>`: the qcow2 overlay of the
    /// userspace backend, or `/dev/mapper/<name>` of the kernel backend's dm device.
    pub fn vm_disk_path(&self, node: &str, index: u32) -> PathBuf {
        match self.backend {
            Backend::Kernel => Path::new("/dev/mapper").join(kernel::vm_disk_name(
                &self.names,
                self.snapshot_kind,
                node,
                index,
            )),
            Backend::Userspace => self.names.snapshot_file(node, index),
        }
    }

    /// Every resource kind the plan makes, including a VM disk made on demand.
    pub fn kinds(&self) -> Vec<&'static str> {
        let on_demand = self
            .nodes
            .iter()
            .find(|n| n.role == Role::Node)
            .and_then(|n| self.vm_disk(&n.name, 1))
            .unwrap_or_default();
        let mut kinds: Vec<&'static str> = Vec::new();
        for r in self.nodes.iter().flat_map(|n| &n.stack).chain(&on_demand) {
            if !kinds.contains(&r.kind()) {
                kinds.push(r.kind());
            }
        }
        kinds
    }

    /// What the plan needs of the kernel (nothing on the userspace backend).
    pub fn kernel_features(&self) -> Vec<crate::backends::kernel::probe::Feature> {
        crate::backends::kernel::probe::features_for(self.kinds())
    }

    /// Node names grouped by level, parents first.
    pub fn setup_order(&self) -> Vec<Vec<String>> {
        self.tree
            .setup_order()
            .into_iter()
            .map(|level| {
                level
                    .into_iter()
                    .map(|i| self.nodes[i - 1].name.clone())
                    .collect()
            })
            .collect()
    }
}

/// Builds the plan for a validated spec.
pub fn plan(validated: &ValidatedSpec) -> Plan {
    let spec = validated.spec();
    let names = Names::new(spec);
    let size = validated.image_size();
    let identity = validated.image_identity().to_string();
    let tree = Tree::new(spec.nodes.len(), spec.cluster.degree as usize);
    let port = spec.cluster.port;
    let export = names.export_name();
    let local = (spec.cluster.mode == Mode::Local)
        .then(|| spec.local.clone())
        .flatten();
    // Separate hosts: every NBD link between them is TLS with a key of its own, and a
    // node's VMs read its export on a local socket.
    let links = (spec.cluster.mode == Mode::Remote).then_some(Links { names: &names });

    let cluster_stack = match &local {
        Some(l) => vec![
            ResourceSpec::SubnetGuard(SubnetGuard { subnet: l.subnet }),
            ResourceSpec::Bridge(Bridge {
                name: names.bridge(),
            }),
        ],
        None => vec![],
    };

    let mut all: Vec<(String, IpAddr)> = vec![(spec.origin.name.clone(), spec.origin.address)];
    all.extend(spec.nodes.iter().map(|n| (n.name.clone(), n.address)));

    let hosts: std::collections::HashMap<String, SshDestination> =
        spec.ssh_hosts().into_iter().collect();
    let kernel_backend = spec.cluster.backend == Backend::Kernel;
    let stores: std::collections::BTreeMap<String, kernel::Stores> = (0..spec.nodes.len())
        .filter(|_| kernel_backend)
        .map(|i| {
            let stores = kernel::Stores::new(spec, &names, i, &identity);
            (spec.nodes[i].name.clone(), stores)
        })
        .collect();

    let nodes = all
        .iter()
        .enumerate()
        .map(|(i, (name, address))| {
            let index = i + 1;
            let is_origin = index == 1;
            let managed = !is_origin || spec.origin.managed;
            let parent = tree.parent(index).map(|p| all[p - 1].clone());
            let run_dir = names.run_dir(name);
            let mut stack = Vec::new();
            let mut transport = TransportSpec::Local;
            if let (Some(l), true) = (&local, managed) {
                transport = TransportSpec::Netns {
                    name: names.netns(name),
                };
                stack.push(ResourceSpec::Namespace(Namespace {
                    node: name.clone(),
                    netns: names.netns(name),
                    address: ipv4(*address),
                    prefix_len: l.subnet.prefix_len(),
                    veth_host: names.veth_host(name),
                    veth_peer: names.veth_peer(name),
                    bridge: names.bridge(),
                    link_mbit: l.link_mbit,
                }));
            }
            let iscsi_origin = spec.origin.protocol == OriginProtocol::Iscsi;
            if let (Backend::Kernel, Some(k)) = (spec.cluster.backend, &spec.kernel) {
                let node_stores = stores.get(name);
                stack = kernel::stack(spec, k, &names, &tree, &all, index, size, node_stores);
            } else {
                match &parent {
                    None if !managed => {}
                    None if iscsi_origin => stack.push(ResourceSpec::OriginTarget(TgtTarget {
                        node: name.clone(),
                        run_dir,
                        address: *address,
                        port: spec.origin.iscsi_port,
                        control_port: spec
                            .origin
                            .iscsi_control_port
                            .unwrap_or_else(|| names.tgt_control_port()),
                        iqn: origin_iqn(spec, &names),
                        source: spec.image.source.clone(),
                        initiators: tree
                            .children(index)
                            .iter()
                            .map(|&c| names.initiator_iqn(&all[c - 1].0))
                            .collect(),
                        chap: None,
                        source_dm: None,
                    })),
                    None => {
                        stack.push(daemon(name, *address, port, &run_dir, links.as_ref()));
                        stack.push(ResourceSpec::OriginExport(OriginExport {
                            node: name.clone(),
                            run_dir,
                            source: spec.image.source.clone(),
                            export: export.clone(),
                        }));
                        if let Some(links) = &links {
                            stack.extend(links.relay(name, *address, port, &tree, index));
                        }
                    }
                    Some((parent_name, parent_addr)) => {
                        stack.push(daemon(name, *address, port, &run_dir, links.as_ref()));
                        let from_iscsi_origin = iscsi_origin && tree.parent(index) == Some(1);
                        let upstream = Upstream {
                            node: name.clone(),
                            run_dir: run_dir.clone(),
                            parent: parent_name.clone(),
                            host: *parent_addr,
                            port: if from_iscsi_origin {
                                spec.origin.iscsi_port
                            } else {
                                port
                            },
                            export: export.clone(),
                            connect_timeout_ms: spec.cluster.connect_timeout_ms,
                            iscsi: from_iscsi_origin.then(|| IscsiLogin {
                                target: origin_iqn(spec, &names),
                                initiator: names.initiator_iqn(name),
                            }),
                            // An unmanaged origin is someone else's server: no key.
                            tls: links
                                .as_ref()
                                .filter(|_| tree.parent(index) != Some(1) || spec.origin.managed)
                                .filter(|_| !from_iscsi_origin)
                                .map(|l| l.upstream_key(name)),
                            switch: None,
                        };
                        let relay = links
                            .as_ref()
                            .and_then(|l| l.relay(name, *address, port, &tree, index));
                        // TLS links and an iSCSI parent are attached directly: the switch
                        // speaks plain NBD only.
                        let switch =
                            (links.is_none() && !from_iscsi_origin).then(|| UpstreamSwitch {
                                node: name.clone(),
                                run_dir: run_dir.clone(),
                                export: export.clone(),
                                ancestors: ancestors(&tree, index, &all, port, iscsi_origin),
                            });
                        let upstream = Upstream {
                            switch: switch.as_ref().map(|_| switch_socket(&run_dir)),
                            ..upstream
                        };
                        stack.extend(switch.map(ResourceSpec::UpstreamSwitch));
                        node_stack(&mut stack, spec, &names, upstream, relay, size, &identity)
                    }
                }
            }
            NodePlan {
                name: name.clone(),
                index,
                role: if is_origin { Role::Origin } else { Role::Node },
                parent: parent.map(|p| p.0),
                level: tree.level(index),
                address: *address,
                transport,
                ssh: hosts.get(name).cloned(),
                stack,
            }
        })
        .collect();

    Plan {
        cluster: spec.cluster.name.clone(),
        image: spec.image.name.clone(),
        image_size: size,
        mode: spec.cluster.mode,
        degree: spec.cluster.degree as usize,
        parallelism: spec.cluster.parallelism as usize,
        cluster_stack,
        nodes,
        tree,
        names,
        stores,
        backend: spec.cluster.backend,
        snapshot_kind: spec.snapshots.kind,
    }
}

/// Where a node may read the image from, nearest first: its parent, the parent's parent,
/// ..., the origin (unless the origin serves iSCSI, which the switch does not speak).
fn ancestors(
    tree: &Tree,
    index: usize,
    all: &[(String, IpAddr)],
    port: u16,
    iscsi_origin: bool,
) -> Vec<Ancestor> {
    std::iter::successors(tree.parent(index), |&p| tree.parent(p))
        .filter(|&p| !(p == 1 && iscsi_origin))
        .map(|p| Ancestor {
            node: all[p - 1].0.clone(),
            address: SocketAddr::new(all[p - 1].1, port),
        })
        .collect()
}

fn daemon(
    name: &str,
    address: IpAddr,
    port: u16,
    run_dir: &Path,
    links: Option<&Links>,
) -> ResourceSpec {
    ResourceSpec::Daemon(Daemon {
        node: name.into(),
        address,
        port,
        run_dir: run_dir.to_path_buf(),
        socket: links.map(|l| l.names.nbd_socket(name)),
    })
}

/// Remote mode's links between hosts: TLS with a pre-shared key per parent-child link.
struct Links<'a> {
    names: &'a Names,
}

impl Links<'_> {
    /// A child's end of the link to its parent.
    fn upstream_key(&self, node: &str) -> LinkKey {
        LinkKey {
            dir: self.names.link_keys_dir(node).join("client"),
            username: node.into(),
        }
    }

    /// The TLS relay of a node with children; none for a leaf, which serves no one.
    fn relay(
        &self,
        node: &str,
        address: IpAddr,
        port: u16,
        tree: &Tree,
        index: usize,
    ) -> Option<ResourceSpec> {
        if tree.children(index).is_empty() {
            return None;
        }
        Some(ResourceSpec::TlsRelay(TlsRelay {
            node: node.into(),
            run_dir: self.names.run_dir(node),
            address,
            port,
            export: self.names.export_name(),
            socket: self.names.nbd_socket(node),
            keys: self.names.link_keys_dir(node).join("server"),
        }))
    }
}

fn origin_iqn(spec: &ClusterSpec, names: &Names) -> String {
    spec.origin
        .iscsi_target
        .clone()
        .unwrap_or_else(|| names.iqn())
}

/// A compute node's stack above its daemon: upstream, cache, relay (and remote mode's TLS
/// relay), keeper, snapshots.
fn node_stack(
    stack: &mut Vec<ResourceSpec>,
    spec: &ClusterSpec,
    names: &Names,
    upstream: Upstream,
    tls_relay: Option<ResourceSpec>,
    size: u64,
    identity: &str,
) {
    let name = upstream.node.clone();
    let name = name.as_str();
    let run_dir = names.run_dir(name);
    let export = names.export_name();
    let cache_file = names.cache_file(name);
    let node_dir = names.state_dir().join("nodes").join(name);
    let mut cache_prune = vec![names.cache_dir(name)];
    if spec.cache.dir.is_some() {
        cache_prune.extend(names.cache_dir(name).parent().map(Path::to_path_buf));
    }
    cache_prune.push(node_dir.clone());
    stack.push(ResourceSpec::Upstream(upstream));
    stack.push(ResourceSpec::Cache(Cache {
        node: name.into(),
        run_dir: run_dir.clone(),
        file: cache_file,
        size,
        identity: identity.into(),
        prune: cache_prune,
    }));
    stack.push(ResourceSpec::RelayExport(RelayExport {
        node: name.into(),
        run_dir: run_dir.clone(),
        export: export.clone(),
    }));
    stack.extend(tls_relay);
    let daemon = stack.iter().find_map(|r| match r {
        ResourceSpec::Daemon(d) => Some(d.clone()),
        _ => None,
    });
    stack.push(ResourceSpec::Keeper(Keeper {
        node: name.into(),
        run_dir,
        interval_ms: spec.cache.flush_interval_ms,
        export: export.clone(),
        export_address: daemon.as_ref().map(|d| match &d.socket {
            Some(path) => Address::Unix(path.clone()),
            None => Address::Tcp(SocketAddr::new(d.address, d.port)),
        }),
    }));
    if let Some(daemon) = daemon {
        for index in 1..=spec.snapshots.per_node {
            stack.push(snapshot(names, &daemon, size, index));
        }
    }
}

/// A VM disk on a node: an overlay backed by the export of the node's `daemon`.
fn snapshot(names: &Names, daemon: &Daemon, size: u64, index: u32) -> ResourceSpec {
    let node = daemon.node.as_str();
    ResourceSpec::Snapshot(Snapshot {
        node: node.into(),
        index,
        file: names.snapshot_file(node, index),
        host: daemon.address,
        port: daemon.port,
        socket: daemon.socket.clone(),
        export: names.export_name(),
        size,
        prune: vec![
            names.snapshot_dir(node),
            names.state_dir().join("nodes").join(node),
        ],
    })
}

fn ipv4(a: IpAddr) -> Ipv4Addr {
    match a {
        IpAddr::V4(v4) => v4,
        // Validation allows only IPv4 addresses in local mode.
        IpAddr::V6(_) => Ipv4Addr::UNSPECIFIED,
    }
}

mod resource_spec;

pub use resource_spec::ResourceSpec;

#[cfg(test)]
mod remote_links;
#[cfg(test)]
mod tree_properties;
