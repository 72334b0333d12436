//! `ip route add unreachable <subnet>` in the root namespace, before anything connects.

use serde::{Deserialize, Serialize};

use super::{ip, ip_json};
use crate::error::Result;
use crate::resources::{Ctx, Observed, Params, Resource};

/// An `unreachable` route for the cluster subnet in the root namespace, so the cluster's
/// traffic never leaves through the host's own routes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubnetGuard {
    /// The cluster subnet (`local.subnet`), e.g. `10.0.0.0/24`.
    pub subnet: ipnet::Ipv4Net,
}

impl Resource for SubnetGuard {
    fn desired(&self) -> Params {
        vec![("subnet", self.subnet.to_string())]
    }

    fn observe(&self, ctx: &Ctx) -> Result<Observed> {
        let routes = ip_json(ctx, &["route", "show", "type", "unreachable"])?;
        let wanted = self.subnet.to_string();
        let found = routes
            .as_array()
            .is_some_and(|r| r.iter().any(|r| r["dst"] == wanted.as_str()));
        Ok(if found {
            Observed::Present(self.desired())
        } else {
            Observed::Absent
        })
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        ip(
            ctx,
            &["route", "add", "unreachable", &self.subnet.to_string()],
        )
    }

    fn teardown(&self, ctx: &Ctx) -> Result<()> {
        if self.observe(ctx)? == Observed::Absent {
            return Ok(());
        }
        ip(
            ctx,
            &["route", "del", "unreachable", &self.subnet.to_string()],
        )
    }
}
