//! A VM's disk: a qcow2 overlay whose backing is the node's relay export. Writes stay in
//! the overlay; reads of untouched blocks go through the node's cache.

use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::PathBuf;

use super::{nbd_backing, nbd_unix_backing};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::prune_dirs;
use crate::fsutil::remove_file_if_exists;
use crate::resources::{Ctx, Observed, Params, Resource, Tools};
use crate::transport::{run, run_stdout};

/// A VM's disk: a qcow2 overlay file backed by its node's relay export over NBD.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Name of the node (from the spec) whose VM disk this is.
    pub node: String,
    /// Number of the VM disk on the node, from 1.
    pub index: u32,
    /// Path of the overlay file, e.g. `<state>/nodes/<node>/snapshots/<image>-1.qcow2`.
    pub file: PathBuf,
    /// Address of the NBD server of the backing export (the node's own).
    pub host: IpAddr,
    /// TCP port of that NBD server.
    pub port: u16,
    /// Name of the backing NBD export (the image's name).
    pub export: String,
    /// Remote mode: the node's export is read on this unix socket instead of `host:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub socket: Option<PathBuf>,
    /// The overlay's virtual size in bytes (the image's size).
    pub size: u64,
    /// Directories sftsan made for snapshots, removed on teardown when empty.
    pub prune: Vec<PathBuf>,
}

/// What `qemu-img info --output=json` says of an overlay (the fields sftsan compares).
#[derive(Deserialize)]
#[serde(rename_all = "kebab-case")]
struct ImageInfo {
    backing_filename: Option<String>,
    virtual_size: u64,
}

impl Snapshot {
    fn backing(&self) -> String {
        let json = match &self.socket {
            Some(socket) => nbd_unix_backing(socket, &self.export),
            None => nbd_backing(&self.host, self.port, &self.export),
        };
        format!("json:{json}")
    }

    fn tmp(&self) -> PathBuf {
        let mut name = self.file.file_name().unwrap_or_default().to_os_string();
        name.push(".creating");
        self.file.with_file_name(name)
    }
}

impl Resource for Snapshot {
    fn desired(&self) -> Params {
        vec![("backing", self.backing()), ("size", self.size.to_string())]
    }

    fn observe(&self, ctx: &Ctx) -> Result<Observed> {
        if !self.file.exists() {
            return Ok(Observed::Absent);
        }
        let info = run_stdout(
            &*ctx.transport,
            Tools::program(&ctx.tools.qemu_img),
            [
                "info".as_ref(),
                "-U".as_ref(),
                "--output=json".as_ref(),
                self.file.as_os_str(),
            ],
        )?;
        let info: ImageInfo = serde_json::from_str(&info)
            .map_err(|e| Error::corrupt("qemu-img info's JSON", e.to_string()))?;
        Ok(Observed::Present(vec![
            ("backing", info.backing_filename.unwrap_or_default()),
            ("size", info.virtual_size.to_string()),
        ]))
    }

    fn create(&self, ctx: &Ctx) -> Result<()> {
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        let tmp = self.tmp();
        remove_file_if_exists(&tmp)?;
        // -u: the backing is not opened now (VMs open it when they start), so creating
        // hundreds of snapshots costs no round trips to the node's export.
        run(
            &*ctx.transport,
            Tools::program(&ctx.tools.qemu_img),
            [
                "create".to_string(),
                "-q".into(),
                "-u".into(),
                "-f".into(),
                "qcow2".into(),
                "-F".into(),
                "raw".into(),
                "-b".into(),
                self.backing(),
                tmp.display().to_string(),
                self.size.to_string(),
            ],
        )?;
        std::fs::rename(&tmp, &self.file).at(&self.file)?;
        Ok(())
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        remove_file_if_exists(&self.file)?;
        remove_file_if_exists(&self.tmp())?;
        prune_dirs(&self.prune);
        Ok(())
    }
}
