//! One fault run's cluster: a local-mode spec generated in the work directory (a chain or
//! a binary tree over the pattern image), its plan and names, and the `sftsan` commands
//! that bring it up and down.

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use sftsan_core::names::Names;
use sftsan_core::plan::{Plan, Role};
use sftsan_core::spec::{cache_needed, validate, ClusterSpec};

use super::cli::{Cli, Outcome};
use crate::bed::netns_and_veth;

/// The tree's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Topology {
    /// origin -> n1 -> n2 -> ... (degree 1).
    Chain,
    /// A binary tree (degree 2).
    Tree,
}

impl Topology {
    pub fn name(self) -> &'static str {
        match self {
            Topology::Chain => "chain",
            Topology::Tree => "tree",
        }
    }

    pub fn degree(self) -> u32 {
        match self {
            Topology::Chain => 1,
            Topology::Tree => 2,
        }
    }

    /// The fewest nodes below the origin that give n1 children and grandchildren: a chain
    /// of 3; a binary tree of 7 (n1 -> n3, n4; n3 -> n7).
    pub fn default_nodes(self) -> usize {
        match self {
            Topology::Chain => 3,
            Topology::Tree => 7,
        }
    }
}

/// What every cluster of one bench run shares.
#[derive(Debug, Clone)]
pub struct Layout {
    pub nodes: Option<usize>,
    pub snapshots: u32,
    pub image: PathBuf,
    pub image_size: u64,
    /// 0: links unshaped.
    pub link_mbit: u32,
    pub subnet: ipnet::Ipv4Net,
    pub work_dir: PathBuf,
    pub program: PathBuf,
}

/// A node as the faults see it.
#[derive(Debug, Clone)]
pub struct NodeInfo {
    pub name: String,
    pub netns: String,
    /// The root-namespace end of its veth (its counters are the node's traffic).
    pub veth: String,
    pub run_dir: PathBuf,
}

/// One cluster, planned from its generated spec.
pub struct Testbed {
    pub name: String,
    pub topology: Topology,
    /// `<work_dir>/<name>`: the spec and the state directory.
    pub dir: PathBuf,
    pub plan: Plan,
    pub names: Names,
    pub subnet: ipnet::Ipv4Net,
    pub snapshots: u32,
    pub cli: Cli,
}

impl Testbed {
    /// Writes `<work_dir>/<name>/spec.toml` and plans it; nothing on the system yet.
    pub fn new(layout: &Layout, topology: Topology, name: &str) -> Result<Testbed> {
        let dir = layout.work_dir.join(name);
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let text = spec_text(layout, topology, name, &dir.join("state"))?;
        let spec_path = dir.join("spec.toml");
        std::fs::write(&spec_path, &text)
            .with_context(|| format!("writing {}", spec_path.display()))?;
        let spec = ClusterSpec::from_toml(&text).map_err(anyhow::Error::msg)?;
        let names = Names::new(&spec);
        let validated = validate(spec).map_err(anyhow::Error::msg)?;
        let bed = Testbed {
            name: name.to_string(),
            topology,
            dir,
            plan: sftsan_core::plan::plan(&validated),
            names,
            subnet: layout.subnet,
            snapshots: layout.snapshots,
            cli: Cli {
                program: layout.program.clone(),
                spec: spec_path,
            },
        };
        Ok(bed)
    }

    pub fn state_dir(&self) -> &Path {
        self.names.state_dir()
    }

    pub fn origin(&self) -> String {
        self.plan.nodes[0].name.clone()
    }

    /// The nodes below the origin, in tree order.
    pub fn nodes(&self) -> Vec<String> {
        self.plan
            .nodes
            .iter()
            .filter(|n| n.role == Role::Node)
            .map(|n| n.name.clone())
            .collect()
    }

    pub fn node(&self, name: &str) -> NodeInfo {
        let plan = self.plan.node(name).expect("a planned node");
        let (netns, veth) = netns_and_veth(plan);
        NodeInfo {
            name: plan.name.clone(),
            netns,
            veth,
            run_dir: self.names.run_dir(name),
        }
    }

    pub fn children(&self, node: &str) -> Vec<String> {
        self.plan
            .nodes
            .iter()
            .filter(|n| n.parent.as_deref() == Some(node))
            .map(|n| n.name.clone())
            .collect()
    }

    /// Every node below `node`, nearest first.
    pub fn descendants(&self, node: &str) -> Vec<String> {
        let mut out = self.children(node);
        let mut i = 0;
        while i < out.len() {
            let more = self.children(&out[i]);
            out.extend(more);
            i += 1;
        }
        out
    }

    /// The first node below the origin with grandchildren: the parent whose faults its
    /// children must route around (the grandchildren prove a relay keeps relaying).
    pub fn faulted_parent(&self) -> Result<String> {
        self.nodes()
            .into_iter()
            .find(|n| {
                self.children(n)
                    .iter()
                    .any(|c| !self.children(c).is_empty())
            })
            .with_context(|| {
                format!(
                    "--nodes: a {} of {} nodes has no node with grandchildren below the origin",
                    self.topology.name(),
                    self.nodes().len()
                )
            })
    }

    /// The VM disks of `node`.
    pub fn disks(&self, node: &str) -> Vec<PathBuf> {
        (1..=self.snapshots)
            .map(|i| self.names.snapshot_file(node, i))
            .collect()
    }

    pub fn up(&self, timeout: Duration) -> Result<Outcome> {
        self.cli.run(&["up"], timeout)
    }

    /// Brings the cluster up; an error names what `up` said.
    pub fn up_checked(&self, timeout: Duration) -> Result<Outcome> {
        let o = self.up(timeout)?;
        if !o.ok {
            bail!("sftsan up failed after {:.1} s: {}", o.seconds, o.message);
        }
        Ok(o)
    }

    /// Whether the root namespace has the `unreachable` route that keeps the cluster's
    /// traffic on the machine.
    pub fn guard_route_present(&self) -> bool {
        unreachable_routes().contains(&self.subnet.to_string())
    }
}

/// `dst` of every `unreachable` route of the root namespace.
pub fn unreachable_routes() -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-j", "route", "show", "type", "unreachable"])
        .output();
    let Ok(out) = out else { return Vec::new() };
    let routes: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    routes
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["dst"].as_str().map(str::to_string))
        .collect()
}

/// Routes and addresses of the root namespace inside or around `subnet` (the default
/// route aside): the subnet must be nobody's before a cluster takes it.
pub fn subnet_users(subnet: &ipnet::Ipv4Net) -> Vec<String> {
    let overlaps = |net: &ipnet::Ipv4Net| net.contains(subnet) || subnet.contains(net);
    let json = |args: &[&str]| -> serde_json::Value {
        std::process::Command::new("ip")
            .args(args)
            .output()
            .ok()
            .and_then(|o| serde_json::from_slice(&o.stdout).ok())
            .unwrap_or_default()
    };
    let mut users = Vec::new();
    for table in ["main", "local"] {
        let routes = json(&["-j", "-4", "route", "show", "table", table]);
        for r in routes.as_array().into_iter().flatten() {
            let dst = r["dst"].as_str().unwrap_or("default");
            let net = match dst.parse::<ipnet::Ipv4Net>() {
                Ok(n) => Some(n),
                Err(_) => dst
                    .parse::<Ipv4Addr>()
                    .ok()
                    .and_then(|a| ipnet::Ipv4Net::new(a, 32).ok()),
            };
            if net.is_some_and(|n| n.prefix_len() > 0 && overlaps(&n)) {
                users.push(format!("route {dst} ({table})"));
            }
        }
    }
    let addrs = json(&["-j", "-4", "addr", "show"]);
    for link in addrs.as_array().into_iter().flatten() {
        for a in link["addr_info"].as_array().into_iter().flatten() {
            let ip = a["local"].as_str().and_then(|s| s.parse::<Ipv4Addr>().ok());
            if ip.is_some_and(|ip| subnet.contains(&ip)) {
                users.push(format!(
                    "address {} on {}",
                    a["local"].as_str().unwrap_or(""),
                    link["ifname"].as_str().unwrap_or("?")
                ));
            }
        }
    }
    users
}

fn spec_text(layout: &Layout, topology: Topology, name: &str, state: &Path) -> Result<String> {
    let nodes = layout.nodes.unwrap_or(topology.default_nodes());
    let host =
        |i: usize| -> Result<Ipv4Addr> {
            layout.subnet.hosts().nth(i).with_context(|| {
                format!("--subnet: {} has no room for {nodes} nodes", layout.subnet)
            })
        };
    let mut text = format!(
        "[cluster]\nname = {name:?}\nstate_dir = {state:?}\nmode = \"local\"\n\
         degree = {degree}\n\
         [image]\nname = \"img\"\nsource = {image:?}\n\
         [origin]\nname = \"origin\"\naddress = \"{origin}\"\n\
         [cache]\nsize = {cache}\n\
         [snapshots]\nper_node = {snapshots}\n\
         [local]\nsubnet = \"{subnet}\"\n",
        state = state.display().to_string(),
        degree = topology.degree(),
        image = layout.image.display().to_string(),
        origin = host(0)?,
        cache = cache_needed(layout.image_size),
        snapshots = layout.snapshots,
        subnet = layout.subnet,
    );
    if layout.link_mbit > 0 {
        text.push_str(&format!("link_mbit = {}\n", layout.link_mbit));
    }
    for i in 1..=nodes {
        text.push_str(&format!(
            "[[nodes]]\nname = \"n{i}\"\naddress = \"{}\"\n",
            host(i)?
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(dir: &Path) -> Layout {
        let image = dir.join("image.raw");
        super::super::image::make(&image, 1 << 20).unwrap();
        Layout {
            nodes: None,
            snapshots: 2,
            image,
            image_size: 1 << 20,
            link_mbit: 100,
            subnet: "198.18.250.0/24".parse().unwrap(),
            work_dir: dir.to_path_buf(),
            program: "sftsan".into(),
        }
    }

    #[test]
    fn the_faulted_parent_has_children_and_grandchildren() {
        let dir =
            std::env::temp_dir().join(format!("sftsan-faults-cluster-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut l = layout(&dir);
        let chain = Testbed::new(&l, Topology::Chain, "c").unwrap();
        assert_eq!(chain.faulted_parent().unwrap(), "n1");
        assert_eq!(chain.children("n1"), ["n2"]);
        assert_eq!(chain.descendants("n1"), ["n2", "n3"]);
        assert_eq!(chain.disks("n2").len(), 2);
        let tree = Testbed::new(&l, Topology::Tree, "t").unwrap();
        assert_eq!(tree.faulted_parent().unwrap(), "n1");
        assert_eq!(tree.children("n1"), ["n3", "n4"]);
        assert_eq!(tree.descendants("n1"), ["n3", "n4", "n7"]);
        assert_eq!(tree.descendants("origin").len(), 7);
        let n3 = tree.node("n3");
        assert!(n3.netns.ends_with("-n3") && n3.veth.starts_with("sft"));
        // Six nodes of a binary tree give n1 no grandchildren: refused with the reason.
        l.nodes = Some(6);
        let small = Testbed::new(&l, Topology::Tree, "s").unwrap();
        let e = small.faulted_parent().unwrap_err().to_string();
        assert!(e.contains("grandchildren"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
