//! The emulated cluster a method runs on: an sftsan local-mode cluster (every host a network
//! namespace on a bridge, its link rate-limited). sftsan's own methods bring the whole
//! cluster up; the baselines bring up only the origin (the same NBD export of the image)
//! and the nodes' namespaces, and build their VMs' disks themselves.

use anyhow::{Context, Result};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sftsan_core::backends::userspace::nbd_backing;
use sftsan_core::engine::{Engine, Event};
use sftsan_core::plan::ResourceSpec;
use sftsan_core::plan::{NodePlan, Plan, Role};
use sftsan_core::resources::{Ctx, Tools};
use sftsan_core::spec::{cache_needed, validate, ClusterSpec, DEFAULT_PORT};
use sftsan_core::transport::{LocalTransport, TransportSpec};

/// What every method's cluster shares.
#[derive(Debug, Clone)]
pub struct BedParams {
    pub nodes: usize,
    pub vms_per_node: u32,
    pub subnet: ipnet::Ipv4Net,
    pub link_mbit: u32,
    pub image: PathBuf,
    pub work_dir: PathBuf,
}

/// A host of the emulated network.
#[derive(Debug, Clone)]
pub struct Host {
    pub name: String,
    pub netns: String,
    /// The root-namespace end of its link: its counters are the host's traffic.
    pub veth: String,
    pub parent: Option<String>,
}

pub struct Bed {
    engine: Engine,
    /// Namespaces the bed made itself (baselines), removed before `down`.
    own_namespaces: Vec<ResourceSpec>,
    ctx: Ctx,
    pub state_dir: PathBuf,
    torn_down: bool,
}

impl Bed {
    /// The cluster spec of one method: `degree` shapes the tree (baselines ignore it).
    fn spec(p: &BedParams, tag: &str, degree: u32) -> Result<ClusterSpec> {
        let host = |i: usize| -> Result<Ipv4Addr> {
            p.subnet.hosts().nth(i).with_context(|| {
                format!("--subnet: {} has no room for {} nodes", p.subnet, p.nodes)
            })
        };
        let cache_bytes = cache_needed(std::fs::metadata(&p.image)?.len());
        let state_dir = p.work_dir.join(tag);
        let mut toml = format!(
            "[cluster]\nname = \"bench-{tag}\"\nstate_dir = {state:?}\nmode = \"local\"\n\
             degree = {degree}\nparallelism = 8\n\
             [image]\nname = \"boot\"\nsource = {image:?}\n\
             [origin]\naddress = \"{origin}\"\n\
             [cache]\nsize = {cache_bytes}\n\
             [snapshots]\nper_node = {vms}\n\
             [local]\nsubnet = \"{subnet}\"\nlink_mbit = {mbit}\n",
            state = state_dir.display().to_string(),
            image = p.image.display().to_string(),
            origin = host(0)?,
            vms = p.vms_per_node,
            subnet = p.subnet,
            mbit = p.link_mbit,
        );
        for i in 1..=p.nodes {
            toml.push_str(&format!(
                "[[nodes]]\nname = \"n{i}\"\naddress = \"{}\"\n",
                host(i)?
            ));
        }
        ClusterSpec::from_toml(&toml).map_err(anyhow::Error::msg)
    }

    /// The method's cluster, planned; nothing on the system is touched yet.
    pub fn new(p: &BedParams, tag: &str, degree: u32) -> Result<Bed> {
        let spec = validate(Self::spec(p, tag, degree)?).map_err(anyhow::Error::msg)?;
        let progress = Arc::new(|e: &Event| tracing::debug!("{e:?}"));
        let tools = Tools::from_env();
        let ctx = Ctx {
            transport: Arc::new(LocalTransport),
            tools: Arc::new(tools.clone()),
        };
        Ok(Bed {
            state_dir: spec.spec().cluster.state_dir.clone(),
            engine: sftsan_core::cluster::engine(&spec, tools, progress),
            own_namespaces: Vec::new(),
            ctx,
            torn_down: false,
        })
    }

    /// Removes what an interrupted earlier run of this method left: its cluster (through
    /// the journal) and the namespaces a baseline made outside it.
    pub fn clear_leftovers(&self) -> Result<()> {
        self.engine
            .down()
            .context("removing an earlier run's cluster")?;
        for ns in self.planned_namespaces() {
            ns.as_resource()
                .teardown(&self.ctx)
                .context("removing an earlier run's namespace")?;
        }
        Ok(())
    }

    fn planned_namespaces(&self) -> Vec<ResourceSpec> {
        self.plan()
            .nodes
            .iter()
            .filter(|n| n.role == Role::Node)
            .flat_map(|n| n.stack.iter())
            .filter(|r| matches!(r, ResourceSpec::Namespace(_)))
            .cloned()
            .collect()
    }

    /// sftsan's method: the whole cluster, with a snapshot per VM.
    pub fn up_sftsan(&self) -> Result<()> {
        self.engine.up().context("sftsan up")?;
        Ok(())
    }

    /// A baseline's cluster: the origin's export and every node's namespace, nothing else.
    pub fn up_baseline(&mut self) -> Result<()> {
        let origin = self.plan().nodes[0].name.clone();
        self.engine
            .up_node(&origin)
            .context("bringing up the origin")?;
        for ns in self.planned_namespaces() {
            // Recorded before creation: a half-made namespace is torn down too.
            self.own_namespaces.push(ns.clone());
            ns.as_resource()
                .create(&self.ctx)
                .context("creating a node's namespace")?;
        }
        Ok(())
    }

    pub fn plan(&self) -> &Plan {
        self.engine.plan()
    }

    pub fn origin(&self) -> Host {
        self.hosts().swap_remove(0)
    }

    /// The nodes (not the origin), in tree order.
    pub fn nodes(&self) -> Vec<Host> {
        self.hosts().split_off(1)
    }

    fn hosts(&self) -> Vec<Host> {
        self.plan()
            .nodes
            .iter()
            .map(|n| {
                let (netns, veth) = netns_and_veth(n);
                Host {
                    name: n.name.clone(),
                    netns,
                    veth,
                    parent: n.parent.clone(),
                }
            })
            .collect()
    }

    /// The origin's export as a QEMU `json:` backing specification of a raw image, as
    /// sftsan's own snapshots name their node's export.
    pub fn origin_backing(&self) -> String {
        nbd_backing(
            &self.plan().nodes[0].address,
            DEFAULT_PORT,
            &self.plan().image,
        )
    }

    /// Snapshot `index` of `node` (sftsan's method).
    pub fn vm_disk(&self, node: &str, index: u32) -> PathBuf {
        self.plan().vm_disk_path(node, index)
    }

    /// Where a baseline keeps a node's files.
    pub fn node_dir(&self, node: &str) -> PathBuf {
        self.state_dir.join("bench").join(node)
    }

    pub fn upstream_bytes(&self) -> Vec<(String, u64)> {
        let status = sftsan_core::status::status(self.plan(), self.ctx.tools.clone());
        status
            .nodes
            .into_iter()
            .map(|n| (n.name, n.upstream_bytes))
            .collect()
    }

    /// Removes everything: the baseline's namespaces and files, then the cluster.
    pub fn down(mut self) -> Result<()> {
        self.torn_down = true;
        self.teardown()
    }

    fn teardown(&mut self) -> Result<()> {
        let mut first_error = None;
        for ns in self.own_namespaces.drain(..).rev() {
            if let Err(e) = ns.as_resource().teardown(&self.ctx) {
                first_error.get_or_insert(anyhow::Error::from(e));
            }
        }
        if let Err(e) = remove_dir_if_exists(&self.state_dir.join("bench")) {
            first_error.get_or_insert(e);
        }
        match self.engine.down() {
            // The state directory is the bench's own: nothing of the cluster is left in it
            // but the lock file.
            Ok(_) => {
                if let Err(e) = remove_dir_if_exists(&self.state_dir) {
                    first_error.get_or_insert(e);
                }
            }
            Err(e) => {
                first_error.get_or_insert(e.into());
            }
        }
        match first_error {
            Some(e) => Err(e.context("tearing down the bench cluster")),
            None => Ok(()),
        }
    }
}

impl Drop for Bed {
    fn drop(&mut self) {
        if self.torn_down {
            return;
        }
        if let Err(e) = self.teardown() {
            sftsan_core::errln!("sftsan-bench: {e:#}");
        }
    }
}

fn remove_dir_if_exists(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

/// A local-mode node's network namespace and the root end of its veth (empty where the
/// node has none).
pub(crate) fn netns_and_veth(n: &NodePlan) -> (String, String) {
    let veth = n
        .stack
        .iter()
        .find_map(|r| match r {
            ResourceSpec::Namespace(ns) => Some(ns.veth_host.clone()),
            _ => None,
        })
        .unwrap_or_default();
    let netns = match &n.transport {
        TransportSpec::Netns { name } => name.clone(),
        TransportSpec::Local => String::new(),
    };
    (netns, veth)
}
