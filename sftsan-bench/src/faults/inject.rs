//! The faults: a node's daemon killed or stopped, its link down or losing every packet, its
//! keeper killed. Each acts on one process (by the pid its pid file names, checked against
//! its command line) or one interface of the cluster; what must be undone is an [`Active`].

use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sftsan_core::names::NETNS_IFACE;
use sftsan_core::process;
use sftsan_core::transport::{NetnsTransport, Transport};

use super::cli::run_bounded;
use super::cluster::NodeInfo;

/// A single fault of the fault table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Fault {
    /// The parent's qemu-storage-daemon killed (SIGKILL).
    Kill,
    /// The parent's qemu-storage-daemon stopped (SIGSTOP): a silent death.
    Stop,
    /// The parent's link down.
    LinkDown,
    /// 100% packet loss on the parent's link, both ways.
    Loss,
    /// The origin's daemon killed, then revived by `sftsan up`.
    OriginRestart,
    /// The parent's keeper killed, then revived by `sftsan up`.
    KeeperKill,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill => "kill",
            Fault::Stop => "stop",
            Fault::LinkDown => "link-down",
            Fault::Loss => "loss",
            Fault::OriginRestart => "origin-restart",
            Fault::KeeperKill => "keeper-kill",
        }
    }

    /// A word for the fault's cluster name (at most 16 bytes in all).
    pub fn short(self) -> &'static str {
        match self {
            Fault::LinkDown => "link",
            Fault::OriginRestart => "origin",
            Fault::KeeperKill => "keeper",
            other => other.name(),
        }
    }

    /// What happened to `node`, for the table.
    pub fn describe(self, node: &str) -> String {
        match self {
            Fault::Kill => format!("{node}'s daemon killed (-9)"),
            Fault::Stop => format!("{node}'s daemon stopped (SIGSTOP)"),
            Fault::LinkDown => format!("{node}'s link down"),
            Fault::Loss => format!("100% loss on {node}'s link"),
            Fault::OriginRestart => format!("{node}'s daemon restarted (-9, then up)"),
            Fault::KeeperKill => format!("{node}'s keeper killed (-9, then up)"),
        }
    }

    /// Whether the faulted node's children must move to another upstream: its faults
    /// that outlast the window. The origin's children have no other upstream, and a
    /// keeper is not on the data path.
    pub fn reparent_expected(self) -> bool {
        matches!(
            self,
            Fault::Kill | Fault::Stop | Fault::LinkDown | Fault::Loss
        )
    }
}

/// A fault in force, as it is undone.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Active {
    Stopped { node: String, pid: i32 },
    LinkDown { node: String, veth: String },
    Loss { node: String, rule: LossRule },
}

impl Active {
    /// Undoes the fault; nothing to do once what it acted on is gone (after `down`).
    pub fn undo(&self) -> Result<()> {
        match self {
            Active::Stopped { pid, .. } => {
                process::signal(*pid, libc::SIGCONT).context("SIGCONT")?;
                Ok(())
            }
            Active::LinkDown { veth, .. } if link_exists(veth) => set_link(veth, true),
            Active::Loss { rule, .. } if rule.target_exists() => loss_off(rule),
            Active::LinkDown { .. } | Active::Loss { .. } => Ok(()),
        }
    }
}

/// How the loss was made: netem where the kernel has it, else a DROP rule in the node's
/// namespace (the same silence: no reset, no ICMP).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum LossRule {
    /// netem on both ends of the veth; under local mode's tbf where the link is shaped.
    Netem {
        veth: String,
        veth_parent: Option<String>,
        netns: String,
        netns_parent: Option<String>,
    },
    /// iptables DROP on the namespace's eth0, both ways (kernels without sch_netem).
    Drop { netns: String },
}

impl LossRule {
    fn target_exists(&self) -> bool {
        match self {
            LossRule::Netem { veth, .. } => link_exists(veth),
            LossRule::Drop { netns } => NetnsTransport::path(netns).exists(),
        }
    }

    pub fn method(&self) -> &'static str {
        match self {
            LossRule::Netem { .. } => "tc netem loss 100% on both ends of the veth",
            LossRule::Drop { .. } => {
                "iptables DROP on the node's eth0 both ways (this kernel has no sch_netem)"
            }
        }
    }
}

/// A daemon or keeper of `node`: the pid its pid file names, if that process is alive
/// and is the node's own (its command line names the node's run directory).
pub fn node_pid(node: &NodeInfo, pidfile: &str) -> Option<i32> {
    process::live_pid(
        &node.run_dir.join(pidfile),
        &node.run_dir.display().to_string(),
    )
}

pub fn daemon_pid(node: &NodeInfo) -> Result<i32> {
    node_pid(node, "daemon.pid")
        .with_context(|| format!("{}'s storage daemon is not running", node.name))
}

pub fn keeper_pid(node: &NodeInfo) -> Result<i32> {
    node_pid(node, "keeper.pid").with_context(|| format!("{}'s keeper is not running", node.name))
}

/// SIGKILL, and waits (on a pidfd) until the process is gone.
pub fn kill(pid: i32) -> Result<()> {
    process::signal(pid, libc::SIGKILL).context("SIGKILL")?;
    if !process::exited_within(pid, Duration::from_secs(10)) {
        bail!("pid {pid} survived SIGKILL for 10 s");
    }
    Ok(())
}

/// SIGSTOP, and waits until the kernel shows the process stopped.
pub fn stop(node: &NodeInfo, pid: i32) -> Result<Active> {
    process::signal(pid, libc::SIGSTOP).context("SIGSTOP")?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !is_stopped(pid) {
        if Instant::now() >= deadline {
            bail!("pid {pid} is not stopped 5 s after SIGSTOP");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Ok(Active::Stopped {
        node: node.name.clone(),
        pid,
    })
}

fn is_stopped(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            let state = s.rsplit_once(')')?.1.trim_start().chars().next()?;
            Some(state == 'T')
        })
        .unwrap_or(false)
}

pub fn link_down(node: &NodeInfo) -> Result<Active> {
    set_link(&node.veth, false)?;
    Ok(Active::LinkDown {
        node: node.name.clone(),
        veth: node.veth.clone(),
    })
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// The root-namespace end of the veth, so the node's own traffic (its VMs on its
/// address) stays up while its link to the bridge is cut.
fn set_link(veth: &str, up: bool) -> Result<()> {
    let state = if up { "up" } else { "down" };
    checked(Command::new("ip").args(["link", "set", "dev", veth, state]))
}

/// 100% loss both ways on the node's link.
pub fn loss_on(node: &NodeInfo) -> Result<Active> {
    let veth_parent = tbf_parent(None, &node.veth)?;
    let host_end = netem(None, &node.veth, veth_parent.as_deref(), true);
    let rule = match host_end {
        Ok(()) => {
            let netns_parent = tbf_parent(Some(&node.netns), NETNS_IFACE)?;
            if let Err(e) = netem(
                Some(&node.netns),
                NETNS_IFACE,
                netns_parent.as_deref(),
                true,
            ) {
                let _ = netem(None, &node.veth, veth_parent.as_deref(), false);
                return Err(e);
            }
            LossRule::Netem {
                veth: node.veth.clone(),
                veth_parent,
                netns: node.netns.clone(),
                netns_parent,
            }
        }
        Err(e) if format!("{e:#}").contains("unknown") => {
            drop_rules(&node.netns, true)?;
            LossRule::Drop {
                netns: node.netns.clone(),
            }
        }
        Err(e) => return Err(e),
    };
    Ok(Active::Loss {
        node: node.name.clone(),
        rule,
    })
}

fn loss_off(rule: &LossRule) -> Result<()> {
    match rule {
        LossRule::Netem {
            veth,
            veth_parent,
            netns,
            netns_parent,
        } => {
            let host = netem(None, veth, veth_parent.as_deref(), false);
            netem(Some(netns), NETNS_IFACE, netns_parent.as_deref(), false)?;
            host
        }
        LossRule::Drop { netns } => drop_rules(netns, false),
    }
}

/// `tc` in the root namespace or in `netns`.
fn tc(netns: Option<&str>) -> Command {
    let mut cmd = Command::new("tc");
    if let Some(ns) = netns {
        cmd.args(["-n", ns]);
    }
    cmd
}

/// The class of the device's root tbf (`HANDLE:1`) when local mode shapes the link: netem
/// goes below it, so the rate limit stays as `up` checks it.
fn tbf_parent(netns: Option<&str>, dev: &str) -> Result<Option<String>> {
    let out = tc(netns)
        .args(["-j", "qdisc", "show", "dev", dev])
        .output()
        .context("running tc")?;
    let qdiscs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    Ok(qdiscs
        .as_array()
        .into_iter()
        .flatten()
        .find(|q| q["root"] == true && q["kind"] == "tbf")
        .and_then(|q| q["handle"].as_str())
        .map(|h| format!("{h}1")))
}

fn netem(netns: Option<&str>, dev: &str, parent: Option<&str>, on: bool) -> Result<()> {
    let mut cmd = tc(netns);
    cmd.args(["qdisc", if on { "add" } else { "del" }, "dev", dev]);
    match parent {
        Some(p) => cmd.args(["parent", p]),
        None => cmd.arg("root"),
    };
    if on {
        cmd.args(["handle", "5f:", "netem", "loss", "100%"]);
    }
    checked(&mut cmd)
}

fn drop_rules(netns: &str, on: bool) -> Result<()> {
    let op = if on { "-I" } else { "-D" };
    for (chain, dir) in [("INPUT", "-i"), ("OUTPUT", "-o")] {
        checked(NetnsTransport::new(netns).command("iptables").args([
            "-w",
            op,
            chain,
            dir,
            NETNS_IFACE,
            "-j",
            "DROP",
        ]))?;
    }
    Ok(())
}

/// Runs a quick helper (10 s at most); an error carries its last stderr line.
pub fn checked(cmd: &mut Command) -> Result<()> {
    let shown = format!("{cmd:?}");
    let o = run_bounded(cmd, Duration::from_secs(10)).with_context(|| shown.clone())?;
    if !o.ok {
        bail!("{shown}: {}", o.message);
    }
    Ok(())
}

/// Whether `program` is on PATH (or in the sbin directories a non-root PATH may lack).
pub fn on_path(program: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .any(|d| Path::new(&d).join(program).is_file())
    })
}
