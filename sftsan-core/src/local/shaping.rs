//! Link rate limits for local-mode clusters: a token bucket (tbf) on each end of a node's
//! veth, so a namespace "host" sends and receives no faster than a real NIC would and the
//! emulated network has a real network's bottlenecks (the image server's link first).

use crate::error::Result;
use crate::resources::{Ctx, Tools};
use crate::transport::{run, run_stdout};

/// Bytes a tbf may send at once: 10 ms at the link rate (the kernel's timer granularity
/// needs at least rate/HZ), never less than 64 KiB so a GSO segment always fits.
fn burst_bytes(mbit: u32) -> u64 {
    (u64::from(mbit) * 1_000_000 / 8 / 100).max(64 * 1024)
}

/// `tc [-n NETNS] qdisc replace dev DEV root tbf ...`: limits what DEV sends to `mbit`.
pub(crate) fn limit_egress(ctx: &Ctx, netns: Option<&str>, dev: &str, mbit: u32) -> Result<()> {
    let rate = format!("{mbit}mbit");
    let burst = burst_bytes(mbit).to_string();
    let mut args: Vec<&str> = Vec::new();
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["qdisc", "replace", "dev", dev, "root", "tbf", "rate", &rate]);
    // 100 ms of queue: TCP sees delay before loss, as behind a real switch port.
    args.extend(["burst", &burst, "latency", "100ms"]);
    run(&*ctx.transport, Tools::program(&ctx.tools.tc), &args)?;
    Ok(())
}

/// The rate (Mbit/s) of DEV's root tbf, if it has one.
pub(crate) fn egress_limit(ctx: &Ctx, netns: Option<&str>, dev: &str) -> Result<Option<u32>> {
    let mut args: Vec<&str> = vec!["-j"];
    if let Some(ns) = netns {
        args.extend(["-n", ns]);
    }
    args.extend(["qdisc", "show", "dev", dev]);
    let out = run_stdout(&*ctx.transport, Tools::program(&ctx.tools.tc), &args)?;
    Ok(root_tbf_mbit(&out))
}

/// Reads `tc -j qdisc show` output: the root tbf's rate (bytes/s there) in Mbit/s.
fn root_tbf_mbit(json: &str) -> Option<u32> {
    let qdiscs: serde_json::Value = serde_json::from_str(json).ok()?;
    let root = qdiscs
        .as_array()?
        .iter()
        .find(|q| q["root"] == true && q["kind"] == "tbf")?;
    let bytes_per_s = root["options"]["rate"].as_u64()?;
    u32::try_from(bytes_per_s * 8 / 1_000_000).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_covers_ten_milliseconds_or_a_gso_segment() {
        assert_eq!(burst_bytes(1), 64 * 1024);
        assert_eq!(burst_bytes(1000), 1_250_000);
    }

    #[test]
    fn the_root_tbf_rate_is_read_from_tc_json() {
        let tbf = r#"[{"kind":"tbf","handle":"8001:","root":true,"refcnt":3,
            "options":{"rate":5000000,"burst":65535,"lat":100000}}]"#;
        assert_eq!(root_tbf_mbit(tbf), Some(40));
        let none = r#"[{"kind":"noqueue","handle":"0:","root":true,"refcnt":2,"options":{}}]"#;
        assert_eq!(root_tbf_mbit(none), None);
        assert_eq!(root_tbf_mbit(""), None);
    }
}
