//! Per-node counters: how much of the image the cache holds, and bytes moved over the
//! node's NBD connections (kernel TCP counters, read with `ss`, so they include NBD framing).

use serde::Serialize;
use std::net::SocketAddr;
use std::path::Path;

use crate::error::{Error, Result};
use crate::resources::{Ctx, Tools};
use crate::transport::run_stdout;

/// Bytes of the image present in the cache file (fetched blocks, including zero blocks).
pub fn cache_fill(ctx: &Ctx, file: &Path) -> Result<u64> {
    if !file.exists() {
        return Ok(0);
    }
    let map = run_stdout(
        &*ctx.transport,
        Tools::program(&ctx.tools.qemu_img),
        [
            "map".as_ref(),
            "-U".as_ref(),
            "--output=json".as_ref(),
            file.as_os_str(),
        ],
    )?;
    let extents: Vec<Extent> = serde_json::from_str(&map)
        .map_err(|e| Error::corrupt("qemu-img map's JSON", e.to_string()))?;
    Ok(extents.iter().filter(|e| e.present).map(|e| e.length).sum())
}

/// One extent of `qemu-img map --output=json`.
#[derive(serde::Deserialize)]
struct Extent {
    length: u64,
    /// The cache file holds the extent (it was fetched).
    present: bool,
}

/// Bytes a node's open TCP connections moved, from `ss -i`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Received on connections to the parent's export.
    pub upstream_bytes: u64,
    /// Sent on connections to this node's export (children and local VMs).
    pub served_bytes: u64,
}

/// Sums the node's established TCP connections. Counters live as long as a connection:
/// they restart when the daemon reconnects or restarts.
pub fn traffic(ctx: &Ctx, listen: SocketAddr, parent: Option<SocketAddr>) -> Result<Traffic> {
    let out = run_stdout(
        &*ctx.transport,
        "ss",
        ["-H", "-t", "-i", "-n", "state", "established"],
    )?;
    Ok(parse_ss(&out, listen, parent))
}

fn counter(info: &str, key: &str) -> u64 {
    info.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn parse_ss(out: &str, listen: SocketAddr, parent: Option<SocketAddr>) -> Traffic {
    let mut t = Traffic::default();
    let mut lines = out.lines();
    while let Some(sock) = lines.next() {
        let Some(info) = lines.next() else { break };
        // With `state established`, columns are: Recv-Q Send-Q Local Peer.
        let cols: Vec<&str> = sock.split_whitespace().collect();
        let (Some(local), Some(peer)) = (cols.get(2), cols.get(3)) else {
            continue;
        };
        if parent.is_some_and(|p| *peer == p.to_string()) {
            t.upstream_bytes += counter(info, "bytes_received:");
        }
        if *local == listen.to_string() {
            t.served_bytes += counter(info, "bytes_acked:");
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_upstream_and_served_connections() {
        let out = "0 0 10.0.0.2:10809 10.0.0.5:40000\n\t bytes_sent:900 bytes_acked:800 bytes_received:10\n\
                   0 0 10.0.0.2:40100 10.0.0.1:10809\n\t bytes_sent:20 bytes_acked:20 bytes_received:4096\n\
                   0 0 10.0.0.2:10809 10.0.0.2:40200\n\t bytes_acked:200 bytes_received:5\n";
        let t = parse_ss(
            out,
            "10.0.0.2:10809".parse().unwrap(),
            Some("10.0.0.1:10809".parse().unwrap()),
        );
        assert_eq!(
            t,
            Traffic {
                upstream_bytes: 4096,
                served_bytes: 1000
            }
        );
    }
}
