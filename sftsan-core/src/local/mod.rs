//! A cluster on one machine: every node is a network namespace with its own address on a
//! bridge, and an `unreachable` route for the cluster subnet keeps the root namespace (and
//! so the default route) from ever carrying the cluster's traffic.

mod bridge;
mod namespace;
mod shaping;
mod subnet_guard;

pub use bridge::Bridge;
pub use namespace::Namespace;
pub use subnet_guard::SubnetGuard;

use crate::error::{Error, Result};
use crate::resources::{Ctx, Tools};
use crate::transport::{run, run_stdout};

/// Runs `ip ARGS...` in the context's network namespace.
pub(crate) fn ip(ctx: &Ctx, args: &[&str]) -> Result<()> {
    run(&*ctx.transport, Tools::program(&ctx.tools.ip), args)?;
    Ok(())
}

pub(crate) fn ip_json(ctx: &Ctx, args: &[&str]) -> Result<serde_json::Value> {
    let mut full = vec!["-j"];
    full.extend_from_slice(args);
    let out = run_stdout(&*ctx.transport, Tools::program(&ctx.tools.ip), &full)?;
    if out.trim().is_empty() {
        return Ok(serde_json::Value::Array(vec![]));
    }
    serde_json::from_str(&out)
        .map_err(|e| Error::corrupt(format!("ip -j {}", args.join(" ")), e.to_string()))
}

/// Whether a network interface of this name exists in the root namespace.
pub(crate) fn link_exists(name: &str) -> bool {
    std::path::Path::new("/sys/class/net").join(name).exists()
}

/// Keeps IPv6 autoconfiguration off an interface sftsan made: nothing but the cluster's
/// own IPv4 traffic should appear on it.
pub(crate) fn disable_ipv6(name: &str) {
    let knob = format!("/proc/sys/net/ipv6/conf/{name}/disable_ipv6");
    let _ = std::fs::write(knob, "1");
}
