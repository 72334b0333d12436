//! A node as a network namespace: a veth pair with one end on the bridge and the other,
//! renamed eth0 and given the node's address, inside the namespace. The namespace has
//! routes for the cluster subnet only (no default route).

use serde::{Deserialize, Serialize};
use std::net::Ipv4Addr;

use super::shaping::{egress_limit, limit_egress};
use super::{disable_ipv6, ip, ip_json, link_exists};
use crate::error::Result;
use crate::names::NETNS_IFACE;
use crate::resources::{Ctx, Observed, Params, Resource};
use crate::transport::NetnsTransport;

/// A node's network namespace, joined to the cluster bridge by a veth pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Namespace {
    /// Name of the node (from the spec) that lives in the namespace.
    pub node: String,
    /// The namespace's name, e.g. `sftsan-demo-n1` (`/var/run/netns/<netns>`).
    pub netns: String,
    /// The node's address, given to `eth0` inside the namespace, e.g. `10.0.0.2`.
    pub address: Ipv4Addr,
    /// Prefix length of the cluster subnet (`local.subnet`), e.g. `24`.
    pub prefix_len: u8,
    /// Name of the veth end that stays in the root namespace, on the bridge.
    pub veth_host: String,
    /// Name of the veth end moved into the namespace, before it is renamed `eth0`.
    pub veth_peer: String,
    /// Name of the cluster bridge the host end is attached to.
    pub bridge: String,
    /// Both directions of the node's link limited to this rate (`local.link_mbit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link_mbit: Option<u32>,
}

impl Namespace {
    fn exists(&self) -> bool {
        NetnsTransport::path(&self.netns).exists()
    }

    fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix_len)
    }

    /// Limits the link both ways: the bridge side's egress is what the node receives, the
    /// namespace side's egress what it sends.
    fn shape(&self, ctx: &Ctx, mbit: u32) -> Result<()> {
        limit_egress(ctx, None, &self.veth_host, mbit)?;
        limit_egress(ctx, Some(&self.netns), NETNS_IFACE, mbit)
    }

    /// The link's rate limit as found, when both ends carry the same one.
    fn observed_limit(&self, ctx: &Ctx) -> Result<Option<u32>> {
        let inbound = egress_limit(ctx, None, &self.veth_host)?;
        let outbound = egress_limit(ctx, Some(&self.netns), NETNS_IFACE)?;
        Ok(if inbound == outbound { inbound } else { None })
    }
}

impl Resource for Namespace {
    fn desired(&self) -> Params {
        let mut params = vec![("address", self.cidr())];
        if let Some(mbit) = self.link_mbit {
            params.push(("link_mbit", mbit.to_string()));
        }
        params
    }

    fn observe(&self, ctx: &Ctx) -> Result<Observed> {
        if !self.exists() {
            return Ok(if link_exists(&self.veth_host) {
                Observed::Partial(format!("{} left without its namespace", self.veth_host))
            } else {
                Observed::Absent
            });
        }
        let addrs = ip_json(
            ctx,
            &["-n", &self.netns, "addr", "show", "dev", NETNS_IFACE],
        )
        .unwrap_or_default();
        let found = addrs
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|l| l["addr_info"].as_array().cloned().unwrap_or_default());
        let cidrs: Vec<String> = found
            .filter(|a| a["family"] == "inet")
            .map(|a| format!("{}/{}", a["local"].as_str().unwrap_or(""), a["prefixlen"]))
            .collect();
        if cidrs.is_empty() || !link_exists(&self.veth_host) {
            return Ok(Observed::Partial(format!("{} is not wired up", self.netns)));
        }
        let mut params = vec![("address", cidrs.join(","))];
        if self.link_mbit.is_some() {
            match self.observed_limit(ctx)? {
                Some(mbit) => params.push(("link_mbit", mbit.to_string())),
                None => {
                    return Ok(Observed::Partial(format!(
                        "{}'s link is not rate-limited",
                        self.netns
                    )))
                }
            }
        }
        Ok(Observed::Present(params))
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        let ns = self.netns.as_str();
        let cidr = self.cidr();
        let steps: [&[&str]; 9] = [
            &["netns", "add", ns],
            &[
                "link",
                "add",
                &self.veth_host,
                "type",
                "veth",
                "peer",
                "name",
                &self.veth_peer,
            ],
            &["link", "set", &self.veth_peer, "netns", ns],
            &[
                "-n",
                ns,
                "link",
                "set",
                &self.veth_peer,
                "name",
                NETNS_IFACE,
            ],
            &["-n", ns, "addr", "add", &cidr, "dev", NETNS_IFACE],
            &["-n", ns, "link", "set", NETNS_IFACE, "up"],
            &["-n", ns, "link", "set", "lo", "up"],
            &["link", "set", &self.veth_host, "master", &self.bridge],
            &["link", "set", &self.veth_host, "up"],
        ];
        for (i, step) in steps.iter().enumerate() {
            if i == 2 {
                disable_ipv6(&self.veth_host);
            }
            if let Err(e) = ip(ctx, step) {
                let _ = self.teardown(ctx);
                return Err(e);
            }
        }
        if let Some(mbit) = self.link_mbit {
            if let Err(e) = self.shape(ctx, mbit) {
                let _ = self.teardown(ctx);
                return Err(e);
            }
        }
        Ok(())
    }

    fn teardown(&self, ctx: &Ctx) -> Result<()> {
        // Deleting one end of a veth pair deletes both at once; deleting the namespace
        // first would leave the host end to vanish later, asynchronously.
        if link_exists(&self.veth_host) {
            ip(ctx, &["link", "del", &self.veth_host])?;
        }
        if self.exists() {
            ip(ctx, &["netns", "del", &self.netns])?;
        }
        Ok(())
    }
}
