//! A node's attachment to its parent's export (NBD, read-only, reconnecting).

use serde::{Deserialize, Serialize};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::qapi::{
    BlockdevAdd, BlockdevOptions, Driver, IscsiTransport, ObjectAdd, ObjectDel, QomList,
    SocketAddress, TlsCredsPsk, TlsEndpoint, LINK_TLS_PRIORITY,
};
use super::{
    block_nodes, connect, delete_nodes, find_node, graph, require, teardown_in_daemon, Qmp,
};
use crate::error::{Error, Result};
use crate::resources::{Ctx, Observed, Params, Resource};

/// A lost parent fails reads after this many seconds (EIO) instead of hanging them, and the
/// connection is re-established when the parent returns.
const RECONNECT_DELAY_S: u64 = 5;

/// Through the node's switch, reads wait this long for a restarted switch: the switch
/// itself never fails a read before its own give-up time.
const SWITCH_RECONNECT_DELAY_S: u64 = 60;

/// A node's read-only block node of its parent's export (NBD, or iSCSI from an iSCSI origin).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Upstream {
    /// Name of the node (from the spec) that attaches.
    pub node: String,
    /// The node's runtime directory, holding its daemon's QMP socket.
    pub run_dir: PathBuf,
    /// Name of the parent node (for messages).
    pub parent: String,
    /// The parent's address.
    pub host: IpAddr,
    /// TCP port of the parent's NBD server, or of its iSCSI portal.
    pub port: u16,
    /// Name of the parent's NBD export (the image's name); unused over iSCSI.
    pub export: String,
    /// How long opening the connection to the parent may take, in milliseconds.
    pub connect_timeout_ms: u64,
    /// Set when the parent is an iSCSI origin: its target (LUN 1) and our initiator name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iscsi: Option<IscsiLogin>,
    /// Remote mode: the link is TLS with this pre-shared key (NBD parents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<LinkKey>,
    /// Set when the node reads through its upstream switch, which listens here (the parent
    /// named above is then where the switch reads first).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub switch: Option<PathBuf>,
}

/// A child's end of a TLS-PSK link: `dir/keys.psk` holds `username:hexkey`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkKey {
    /// The directory holding the child's `keys.psk`.
    pub dir: PathBuf,
    /// The identity the child presents (its node name): the parent keys its file by it.
    pub username: String,
}

impl LinkKey {
    /// The credentials object a daemon or `qemu-img` connects with, under `id`.
    pub fn credentials(&self, id: &str) -> TlsCredsPsk {
        TlsCredsPsk {
            id: id.into(),
            endpoint: TlsEndpoint::Client,
            dir: self.dir.clone(),
            username: Some(self.username.clone()),
            priority: Some(LINK_TLS_PRIORITY.into()),
        }
    }
}

/// The id of the upstream link's TLS credentials in a node's daemon.
const TLS_ID: &str = "upstream-tls";

/// Whether the daemon holds an object called `id`.
fn has_object(qmp: &mut Qmp, id: &str) -> Result<bool> {
    let objects = qmp.run(&QomList {
        path: "/objects".into(),
    })?;
    Ok(objects.iter().any(|o| o.name == id))
}

fn delete_object(qmp: &mut Qmp, id: &str) -> Result<()> {
    if has_object(qmp, id)? {
        qmp.run(&ObjectDel { id: id.into() })?;
    }
    Ok(())
}

/// How a node logs in to an iSCSI origin's target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IscsiLogin {
    /// IQN of the origin's target.
    pub target: String,
    /// The node's own initiator name, which the origin's ACL admits.
    pub initiator: String,
}

impl Upstream {
    fn url(&self) -> String {
        let addr = SocketAddr::new(self.host, self.port);
        if let Some(socket) = &self.switch {
            // As QEMU names an NBD node on a unix socket.
            return format!("nbd+unix:///{}?socket={}", self.export, socket.display());
        }
        match &self.iscsi {
            Some(login) => format!("iscsi://{addr}/{}/1", login.target),
            None if self.tls.is_some() => format!("nbd://{addr}/{} (tls)", self.export),
            None => format!("nbd://{addr}/{}", self.export),
        }
    }

    fn blockdev(&self) -> BlockdevOptions {
        let driver = match &self.iscsi {
            // An iSCSI parent that vanishes stalls reads until it returns (QEMU's iscsi
            // driver has no reconnect timeout); an NBD parent fails them after a delay.
            Some(login) => Driver::Iscsi {
                transport: IscsiTransport::Tcp,
                portal: SocketAddr::new(self.host, self.port).to_string(),
                target: login.target.clone(),
                initiator_name: login.initiator.clone(),
                lun: 1,
            },
            None if self.switch.is_some() => Driver::Nbd {
                server: SocketAddress::Unix {
                    path: self.switch.clone().unwrap_or_default(),
                },
                export: self.export.clone(),
                reconnect_delay: Some(SWITCH_RECONNECT_DELAY_S),
                open_timeout: Some(self.connect_timeout_ms.div_ceil(1000)),
                tls_creds: None,
            },
            None => Driver::Nbd {
                server: SocketAddress::inet(self.host, self.port),
                export: self.export.clone(),
                reconnect_delay: Some(RECONNECT_DELAY_S),
                open_timeout: Some(self.connect_timeout_ms.div_ceil(1000)),
                tls_creds: self.tls.as_ref().map(|_| TLS_ID.to_string()),
            },
        };
        BlockdevOptions {
            node_name: graph::UPSTREAM.into(),
            read_only: true,
            driver,
        }
    }
}

impl Resource for Upstream {
    fn desired(&self) -> Params {
        vec![("upstream", self.url())]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let Some(mut qmp) = connect(&self.run_dir)? else {
            return Ok(Observed::Absent);
        };
        let nodes = block_nodes(&mut qmp)?;
        Ok(match find_node(&nodes, graph::UPSTREAM) {
            None => Observed::Absent,
            // QEMU names an NBD node by its URL alone: the credentials object tells a TLS
            // link from a plain one.
            Some(n) if has_object(&mut qmp, TLS_ID)? => {
                Observed::Present(vec![("upstream", format!("{} (tls)", n.file))])
            }
            Some(n) => Observed::Present(vec![("upstream", n.file.clone())]),
        })
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        // Probe from the node's own network first: a refused or unroutable parent gets a
        // clear message instead of QEMU's generic open failure. (The switch made the same
        // check when it started.)
        let addr = SocketAddr::new(self.host, self.port);
        let timeout = Duration::from_millis(self.connect_timeout_ms);
        if self.switch.is_none() {
            ctx.transport.probe_tcp(addr, timeout).map_err(|e| {
                Error::unreachable(
                    format!("parent {} at {addr}", self.parent),
                    format!("from {}: {e}", self.node),
                )
            })?;
        }
        let mut qmp = require(&self.run_dir, &self.node)?;
        let attaching =
            |e: Error| e.context(format!("attaching to parent {} at {addr}", self.parent));
        if let Some(key) = &self.tls {
            // Made afresh: the client reads its key when the object is made.
            delete_object(&mut qmp, TLS_ID)?;
            qmp.run(&ObjectAdd(key.credentials(TLS_ID)))
                .map_err(|e| attaching(e.context("the link's pre-shared key")))?;
        }
        if let Err(e) = qmp.run(&BlockdevAdd(self.blockdev())) {
            // A refused key leaves no credentials behind.
            delete_object(&mut qmp, TLS_ID)?;
            return Err(attaching(e));
        }
        Ok(())
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        teardown_in_daemon(&self.run_dir, |qmp| {
            delete_nodes(qmp, &[graph::UPSTREAM])?;
            delete_object(qmp, TLS_ID)
        })
    }
}
