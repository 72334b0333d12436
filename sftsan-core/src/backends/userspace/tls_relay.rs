//! Remote mode: a node's export for its children, on its data address, over TLS with a
//! pre-shared key per child. A second qemu-storage-daemon reads the node's export on its
//! local unix socket and serves it on; QEMU has one NBD server per daemon, and the node's
//! VMs (which cannot present a key) keep reading the unix socket.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::daemon::nbd_server_param;
use super::qapi::{
    BlockdevOptions, Driver, SocketAddress, TlsCredsPsk, TlsEndpoint, LINK_TLS_PRIORITY,
};
use super::qemu_opt_escape;
use crate::error::{Error, IoContext, Result};
use crate::process;
use crate::resources::{Ctx, Observed, Params, Resource, Tools};
use crate::transport::run;

/// After the node's own daemon restarts, the relay's reads wait this long for it.
const RECONNECT_DELAY_S: u64 = 5;

/// A node's TLS-PSK export for its children (remote mode, nodes with children).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsRelay {
    /// Name of the node (from the spec) that relays.
    pub node: String,
    /// The node's runtime directory: the relay's pid file sits beside the daemon's.
    pub run_dir: PathBuf,
    /// The node's data address, the only one the relay listens on.
    pub address: IpAddr,
    /// TCP port (the spec's `cluster.port`).
    pub port: u16,
    /// The export's name (the image's name).
    pub export: String,
    /// The node's own NBD server (its daemon's unix socket).
    pub socket: PathBuf,
    /// The directory of `keys.psk`: one `child:hexkey` line per child.
    pub keys: PathBuf,
}

impl TlsRelay {
    fn pidfile(&self) -> PathBuf {
        self.run_dir.join("tls-relay.pid")
    }

    /// The pid file's path appears in the relay's argv: it tells ours from others.
    fn marker(&self) -> String {
        self.pidfile().display().to_string()
    }

    fn args(&self) -> Result<Vec<String>> {
        let json = |what: &str, v: serde_json::Result<serde_json::Value>| {
            v.map(|v| v.to_string())
                .map_err(|e| Error::corrupt(what.to_string(), e.to_string()))
        };
        let creds = TlsCredsPsk {
            id: "link".into(),
            endpoint: TlsEndpoint::Server,
            dir: self.keys.clone(),
            username: None,
            priority: Some(LINK_TLS_PRIORITY.into()),
        };
        let upstream = BlockdevOptions {
            node_name: "node-export".into(),
            read_only: true,
            driver: Driver::Nbd {
                server: SocketAddress::Unix {
                    path: self.socket.clone(),
                },
                export: self.export.clone(),
                reconnect_delay: Some(RECONNECT_DELAY_S),
                open_timeout: None,
                tls_creds: None,
            },
        };
        Ok(vec![
            "--object".into(),
            json("the relay's credentials", serde_json::to_value(&creds))?,
            "--blockdev".into(),
            json("the relay's block node", serde_json::to_value(&upstream))?,
            "--nbd-server".into(),
            format!(
                "addr.type=inet,addr.host={},addr.port={},tls-creds=link",
                self.address, self.port
            ),
            "--export".into(),
            format!(
                "type=nbd,id=relay,node-name=node-export,name={}",
                qemu_opt_escape(&self.export)
            ),
            "--pidfile".into(),
            self.marker(),
            // Returns once the server listens: the readiness event.
            "--daemonize".into(),
        ])
    }
}

fn keys_dir_of(argv: &[String]) -> String {
    argv.iter()
        .skip_while(|a| *a != "--object")
        .nth(1)
        .and_then(|o| serde_json::from_str::<serde_json::Value>(o).ok())
        .and_then(|v| v.get("dir").and_then(|d| d.as_str()).map(str::to_string))
        .unwrap_or_default()
}

impl Resource for TlsRelay {
    fn desired(&self) -> Params {
        vec![
            ("address", self.address.to_string()),
            ("port", self.port.to_string()),
            ("keys", self.keys.display().to_string()),
        ]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let Some(pid) = process::live_pid(&self.pidfile(), &self.marker()) else {
            return Ok(Observed::Absent);
        };
        let argv = process::cmdline(pid);
        let param = |key| nbd_server_param(&argv, key).unwrap_or_default();
        Ok(Observed::Present(vec![
            ("address", param("addr.host=")),
            ("port", param("addr.port=")),
            ("keys", keys_dir_of(&argv)),
        ]))
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        let keys = self.keys.join("keys.psk");
        if !keys.is_file() {
            return Err(Error::not_found(
                format!("{}'s keys for its children", self.node),
                format!("{} is missing", keys.display()),
            ));
        }
        std::fs::create_dir_all(&self.run_dir).at(&self.run_dir)?;
        process::remove_file_if_exists(&self.pidfile())?;
        run(
            &*ctx.transport,
            Tools::program(&ctx.tools.storage_daemon),
            self.args()?,
        )
        .map_err(|e| e.context(format!("starting {}'s TLS relay", self.node)))?;
        Ok(())
    }

    fn runtime(&self) -> Params {
        let pid = process::live_pid(&self.pidfile(), &self.marker());
        vec![("pid", pid.map(|p| p.to_string()).unwrap_or_default())]
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        if let Some(pid) = process::live_pid(&self.pidfile(), &self.marker()) {
            // SIGTERM: the relay holds nothing to flush (read-only, no cache of its own).
            process::stop(pid, Duration::from_secs(3))?;
        }
        process::remove_file_if_exists(&self.pidfile())
    }
}
