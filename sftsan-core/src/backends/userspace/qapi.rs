//! The part of QEMU's QAPI schema sftsan speaks, as typed structs: each command names its
//! arguments and what it returns, each event its data. Field names follow the schema
//! (qapi/block-core.json, qapi/block-export.json); fields sftsan does not read are ignored,
//! so a newer QEMU adding fields changes nothing.
//!
//! A generated crate (qapi-rs) was considered: its types are generated from one QEMU
//! release's schema, and sftsan runs against whatever qemu-storage-daemon the host has,
//! while it needs fewer than a dozen commands.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

/// A QMP command: serialized as its arguments, answered with `Returns`.
pub trait Command: Serialize {
    /// The command's name on the wire.
    const NAME: &'static str;
    /// What a successful call returns.
    type Returns: DeserializeOwned;
}

/// A QMP event: its name and, deserialized, its `data`.
pub trait Event: DeserializeOwned {
    /// The event's name on the wire.
    const NAME: &'static str;
}

/// The empty object commands without a result return.
#[derive(Debug, Deserialize)]
pub struct Empty {}

macro_rules! command {
    ($type:ty, $name:literal, $returns:ty) => {
        impl Command for $type {
            const NAME: &'static str = $name;
            type Returns = $returns;
        }
    };
}

/// Leaves capabilities negotiation mode (the first command of every connection).
#[derive(Debug, Serialize)]
pub struct QmpCapabilities {}
command!(QmpCapabilities, "qmp_capabilities", Empty);

/// Ends the daemon after closing every block node cleanly.
#[derive(Debug, Serialize)]
pub struct Quit {}
command!(Quit, "quit", Empty);

/// Adds a block node.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BlockdevAdd(pub BlockdevOptions);
command!(BlockdevAdd, "blockdev-add", Empty);

/// Deletes a block node nothing uses any more.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockdevDel {
    /// The node to delete.
    pub node_name: String,
}
command!(BlockdevDel, "blockdev-del", Empty);

/// Creates an object: here the TLS-PSK credentials of a node's link to its parent.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct ObjectAdd(pub TlsCredsPsk);
command!(ObjectAdd, "object-add", Empty);

/// Deletes an object nothing uses any more.
#[derive(Debug, Serialize)]
pub struct ObjectDel {
    /// The object's id.
    pub id: String,
}
command!(ObjectDel, "object-del", Empty);

/// Lists the children of a QOM path (`/objects` holds the objects `object-add` made).
#[derive(Debug, Serialize)]
pub struct QomList {
    /// The path listed.
    pub path: String,
}
command!(QomList, "qom-list", Vec<ObjectPropertyInfo>);

/// One child or property of a QOM path.
#[derive(Debug, Clone, Deserialize)]
pub struct ObjectPropertyInfo {
    /// Its name (an object's id under `/objects`).
    pub name: String,
}

/// TLS credentials with a pre-shared key: `dir/keys.psk` holds `username:hexkey` lines
/// (a server's one per client it admits, a client's its own).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "qom-type", rename = "tls-creds-psk")]
pub struct TlsCredsPsk {
    /// The object's id, which `tls-creds` options name.
    pub id: String,
    /// `client` or `server`.
    pub endpoint: TlsEndpoint,
    /// The directory holding `keys.psk`.
    pub dir: PathBuf,
    /// The identity a client presents (its line in the server's file).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// GnuTLS priority string: which protocol versions and ciphers may be chosen.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<String>,
}

/// The TLS of links between hosts: TLS 1.3 with AES-GCM only, which servers' CPUs do in
/// hardware (GnuTLS's default for PSK chose a slower cipher here; `sftsan bench relay-tls`
/// measures what the links cost).
pub const LINK_TLS_PRIORITY: &str =
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM";

/// Which end of a TLS connection credentials are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsEndpoint {
    /// The side that connects.
    Client,
    /// The side that listens.
    Server,
}

/// Reopens block nodes with new options (the same options flush a qcow2 node's metadata).
#[derive(Debug, Serialize)]
pub struct BlockdevReopen {
    /// The nodes' complete options, each naming its node.
    pub options: Vec<BlockdevOptions>,
}
command!(BlockdevReopen, "blockdev-reopen", Empty);

/// Exports a block node.
#[derive(Debug, Serialize)]
#[serde(transparent)]
pub struct BlockExportAdd(pub BlockExportOptions);
command!(BlockExportAdd, "block-export-add", Empty);

/// Removes an export; `BLOCK_EXPORT_DELETED` says when it is gone.
#[derive(Debug, Serialize)]
pub struct BlockExportDel {
    /// The export's id.
    pub id: String,
    /// Whether connected clients are dropped.
    pub mode: ExportRemoveMode,
}
command!(BlockExportDel, "block-export-del", Empty);

/// How `block-export-del` treats connected clients.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExportRemoveMode {
    /// Waits for clients to disconnect.
    Safe,
    /// Drops connected clients.
    Hard,
}

/// Lists block nodes.
#[derive(Debug, Serialize)]
pub struct QueryNamedBlockNodes {
    /// Every node, not only the top of each graph.
    pub flat: bool,
}
command!(
    QueryNamedBlockNodes,
    "query-named-block-nodes",
    Vec<BlockDeviceInfo>
);

/// Lists exports.
#[derive(Debug, Serialize)]
pub struct QueryBlockExports {}
command!(
    QueryBlockExports,
    "query-block-exports",
    Vec<BlockExportInfo>
);

/// I/O counters of devices or block nodes.
#[derive(Debug, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct QueryBlockstats {
    /// Counters of every named node instead of the devices'.
    pub query_nodes: bool,
}
command!(QueryBlockstats, "query-blockstats", Vec<BlockStats>);

/// A block node's options: what every driver has, and the driver's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockdevOptions {
    /// The node's name in the daemon's graph.
    pub node_name: String,
    /// Opened read-only.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// The driver and its options.
    #[serde(flatten)]
    pub driver: Driver,
}

/// A block driver and its options (children are named by their node names).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "driver",
    rename_all = "kebab-case",
    rename_all_fields = "kebab-case"
)]
pub enum Driver {
    /// A regular file.
    File {
        /// Its path.
        filename: PathBuf,
    },
    /// A block device.
    HostDevice {
        /// Its device node.
        filename: PathBuf,
    },
    /// The raw format over another node.
    Raw {
        /// The node holding the data.
        file: String,
    },
    /// The qcow2 format over another node.
    Qcow2 {
        /// The node holding the qcow2 file.
        file: String,
        /// The node unallocated clusters read from.
        #[serde(skip_serializing_if = "Option::is_none")]
        backing: Option<String>,
        /// Bytes of L2 table cache.
        #[serde(skip_serializing_if = "Option::is_none")]
        l2_cache_size: Option<u64>,
    },
    /// A filter that writes every block read below it into its child.
    CopyOnRead {
        /// The node filtered.
        file: String,
    },
    /// A client of an NBD export.
    Nbd {
        /// Where the export is served.
        server: SocketAddress,
        /// The export's name.
        export: String,
        /// Seconds after a lost connection until requests fail (and reconnects continue).
        #[serde(skip_serializing_if = "Option::is_none")]
        reconnect_delay: Option<u64>,
        /// Seconds the first connection may take.
        #[serde(skip_serializing_if = "Option::is_none")]
        open_timeout: Option<u64>,
        /// The id of the TLS credentials object the connection authenticates with.
        #[serde(skip_serializing_if = "Option::is_none")]
        tls_creds: Option<String>,
    },
    /// An iSCSI LUN through libiscsi.
    Iscsi {
        /// Always `tcp`.
        transport: IscsiTransport,
        /// `host:port` of the target's portal.
        portal: String,
        /// The target's IQN.
        target: String,
        /// The initiator name to log in with.
        initiator_name: String,
        /// The LUN.
        lun: u32,
    },
}

/// The iSCSI transport.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum IscsiTransport {
    /// iSCSI over TCP.
    Tcp,
}

/// A server address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SocketAddress {
    /// An IP address and port.
    Inet {
        /// The host (an address: sftsan never resolves names here).
        host: String,
        /// The port, a string in QAPI.
        port: String,
    },
    /// A unix socket.
    Unix {
        /// Its path.
        path: PathBuf,
    },
}

impl SocketAddress {
    /// The TCP address `host:port`.
    pub fn inet(host: IpAddr, port: u16) -> SocketAddress {
        SocketAddress::Inet {
            host: host.to_string(),
            port: port.to_string(),
        }
    }
}

/// An export of a block node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(
    tag = "type",
    rename_all = "lowercase",
    rename_all_fields = "kebab-case"
)]
pub enum BlockExportOptions {
    /// An NBD export on the daemon's NBD server.
    Nbd {
        /// The export's id in the daemon.
        id: String,
        /// The node exported.
        node_name: String,
        /// The name clients ask for.
        name: String,
        /// Whether clients may write.
        writable: bool,
    },
}

/// A block node as `query-named-block-nodes` describes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockDeviceInfo {
    /// The node's name.
    #[serde(default)]
    pub node_name: String,
    /// The node's driver.
    pub drv: String,
    /// What the node opened: a path, or a URL such as `nbd://host:port/export`.
    pub file: String,
}

/// An export as `query-block-exports` describes it.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockExportInfo {
    /// The export's id.
    pub id: String,
}

/// One entry of `query-blockstats`.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct BlockStats {
    /// The node's name (node queries).
    #[serde(default)]
    pub node_name: Option<String>,
    /// The guest device's id path (device queries).
    #[serde(default)]
    pub qdev: Option<String>,
    /// The counters.
    pub stats: BlockDeviceStats,
}

/// I/O counters of a device or node.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockDeviceStats {
    /// Bytes read.
    pub rd_bytes: u64,
    /// The end of the highest write so far.
    pub wr_highest_offset: u64,
}

/// An export was removed.
#[derive(Debug, Clone, Deserialize)]
pub struct BlockExportDeleted {
    /// The export's id.
    pub id: String,
}

impl Event for BlockExportDeleted {
    const NAME: &'static str = "BLOCK_EXPORT_DELETED";
}

/// The guest or the monitor shut QEMU down.
#[derive(Debug, Clone, Deserialize)]
pub struct Shutdown {
    /// The guest asked for it.
    pub guest: bool,
    /// Why (`guest-shutdown`, `host-qmp-quit`, ...).
    pub reason: String,
}

impl Event for Shutdown {
    const NAME: &'static str = "SHUTDOWN";
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn blockdev_options_serialize_as_the_schema_names_them() {
        let nbd = BlockdevOptions {
            node_name: "upstream".into(),
            read_only: true,
            driver: Driver::Nbd {
                server: SocketAddress::inet("10.0.0.1".parse().unwrap(), 10809),
                export: "img".into(),
                reconnect_delay: Some(5),
                open_timeout: Some(2),
                tls_creds: None,
            },
        };
        assert_eq!(
            serde_json::to_value(BlockdevAdd(nbd)).unwrap(),
            json!({"node-name": "upstream", "read-only": true, "driver": "nbd",
                   "server": {"type": "inet", "host": "10.0.0.1", "port": "10809"},
                   "export": "img", "reconnect-delay": 5, "open-timeout": 2})
        );
        let qcow2 = BlockdevOptions {
            node_name: "cache".into(),
            read_only: false,
            driver: Driver::Qcow2 {
                file: "cache-file".into(),
                backing: Some("upstream".into()),
                l2_cache_size: Some(1 << 20),
            },
        };
        assert_eq!(
            serde_json::to_value(BlockdevReopen {
                options: vec![qcow2]
            })
            .unwrap(),
            json!({"options": [{"node-name": "cache", "driver": "qcow2", "file": "cache-file",
                   "backing": "upstream", "l2-cache-size": 1048576}]})
        );
        let iscsi = Driver::Iscsi {
            transport: IscsiTransport::Tcp,
            portal: "10.0.0.1:3260".into(),
            target: "iqn.2026-12.org.sftsan:img".into(),
            initiator_name: "iqn.2026-12.org.sftsan:n1".into(),
            lun: 1,
        };
        assert_eq!(
            serde_json::to_value(iscsi).unwrap(),
            json!({"driver": "iscsi", "transport": "tcp", "portal": "10.0.0.1:3260",
                   "target": "iqn.2026-12.org.sftsan:img",
                   "initiator-name": "iqn.2026-12.org.sftsan:n1", "lun": 1})
        );
    }

    #[test]
    fn exports_and_their_removal_serialize_as_the_schema_names_them() {
        let add = BlockExportAdd(BlockExportOptions::Nbd {
            id: "relay".into(),
            node_name: "cor".into(),
            name: "img".into(),
            writable: false,
        });
        assert_eq!(
            serde_json::to_value(add).unwrap(),
            json!({"type": "nbd", "id": "relay", "node-name": "cor", "name": "img",
                   "writable": false})
        );
        let del = BlockExportDel {
            id: "relay".into(),
            mode: ExportRemoveMode::Hard,
        };
        assert_eq!(
            serde_json::to_value(del).unwrap(),
            json!({"id": "relay", "mode": "hard"})
        );
        assert_eq!(
            serde_json::to_value(QueryBlockstats { query_nodes: true }).unwrap(),
            json!({"query-nodes": true})
        );
    }

    /// Answers as QEMU 10.0 gives them (trimmed), with fields sftsan does not read.
    #[test]
    fn answers_parse_and_unknown_fields_are_ignored() {
        let nodes: Vec<BlockDeviceInfo> = serde_json::from_value(json!([
            {"iops_rd": 0, "detect_zeroes": "off", "ro": true, "node-name": "upstream",
             "drv": "nbd", "file": "nbd://10.0.0.1:10809/img", "encrypted": false,
             "image": {"virtual-size": 1048576, "filename": "nbd://10.0.0.1:10809/img"}}
        ]))
        .unwrap();
        assert_eq!(nodes[0].node_name, "upstream");
        assert_eq!(nodes[0].file, "nbd://10.0.0.1:10809/img");
        let stats: Vec<BlockStats> = serde_json::from_value(json!([
            {"node-name": "cache-file", "stats": {"rd_bytes": 512, "wr_highest_offset": 65536,
             "wr_bytes": 65536, "timed_stats": []}}
        ]))
        .unwrap();
        assert_eq!(stats[0].stats.wr_highest_offset, 65536);
        let exports: Vec<BlockExportInfo> = serde_json::from_value(json!([
            {"id": "relay", "type": "nbd", "node-name": "cor", "shutting-down": false}
        ]))
        .unwrap();
        assert_eq!(exports[0].id, "relay");
    }

    #[test]
    fn psk_credentials_and_unix_sockets_encode_as_qemu_names_them() {
        let creds = ObjectAdd(TlsCredsPsk {
            id: "upstream-tls".into(),
            endpoint: TlsEndpoint::Client,
            dir: "/s/link-keys/n2/client".into(),
            username: Some("n2".into()),
            priority: None,
        });
        assert_eq!(
            serde_json::to_value(creds).unwrap(),
            json!({"qom-type": "tls-creds-psk", "id": "upstream-tls", "endpoint": "client",
                   "dir": "/s/link-keys/n2/client", "username": "n2"})
        );
        let server = SocketAddress::Unix {
            path: "/s/run/n2/nbd.sock".into(),
        };
        assert_eq!(
            serde_json::to_value(server).unwrap(),
            json!({"type": "unix", "path": "/s/run/n2/nbd.sock"})
        );
    }
}
