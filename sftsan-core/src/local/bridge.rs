//! The bridge joining the cluster's namespaces. It has no address: the root namespace
//! takes no part in the cluster's traffic.

use serde::{Deserialize, Serialize};

use super::{disable_ipv6, ip, link_exists};
use crate::error::Result;
use crate::resources::{Ctx, Observed, Params, Resource};

/// The Linux bridge every node namespace's veth is attached to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bridge {
    /// The bridge's interface name (at most 15 bytes), e.g. `sft1a2b3cbr`.
    pub name: String,
}

impl Resource for Bridge {
    fn desired(&self) -> Params {
        vec![]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let sys = std::path::Path::new("/sys/class/net").join(&self.name);
        Ok(match (sys.exists(), sys.join("bridge").exists()) {
            (false, _) => Observed::Absent,
            (true, true) => Observed::Present(vec![]),
            (true, false) => Observed::Partial(format!("{} exists but is not a bridge", self.name)),
        })
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        ip(ctx, &["link", "add", &self.name, "type", "bridge"])?;
        disable_ipv6(&self.name);
        ip(ctx, &["link", "set", &self.name, "up"])
    }

    fn teardown(&self, ctx: &Ctx) -> Result<()> {
        if !link_exists(&self.name) {
            return Ok(());
        }
        ip(ctx, &["link", "del", &self.name])
    }
}
