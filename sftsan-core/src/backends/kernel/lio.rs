//! An iSCSI target in LIO, configured through configfs: one backstore (a file, a block
//! device or a device-mapper device), one TPG with one portal, LUN 0 write-protected, and
//! access only for the listed initiator names, each with its own CHAP credentials.
//! Open access (generate_node_acls) only when asked for explicitly.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use super::configfs::{self, ROOT};
use super::dm;
pub use super::initiator::Chap;
use crate::error::{Error, Result};
use crate::resources::{Ctx, Observed, Params, Resource};

/// What a LIO target's backstore exports as its LUN.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Backing {
    /// A regular file (fileio backstore), e.g. the origin's image.
    File {
        /// Path of the file.
        path: PathBuf,
        /// Bytes the LUN exports (the image's size).
        size: u64,
    },
    /// A block device node.
    Block {
        /// Path of the device node.
        path: PathBuf,
    },
    /// A device-mapper device by name, resolved to its node when the target is made.
    Dm {
        /// Name of the dm device, e.g. `sftsan-<cluster>-<node>-relay`.
        name: String,
    },
}

/// One initiator a LIO target admits, with the CHAP credentials it must log in with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acl {
    /// The admitted initiator's IQN (a child node's initiator name).
    pub initiator: String,
    /// CHAP credentials the initiator must present; `None`: no authentication.
    pub chap: Option<Chap>,
}

/// A node's iSCSI target in LIO: one backstore exported read-only as LUN 0 at one portal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LioTarget {
    /// Name of the node (from the spec) the target runs on.
    pub node: String,
    /// The target's IQN.
    pub iqn: String,
    /// Name of the backstore object: unique per target.
    pub backstore: String,
    /// What the target exports: the image file on the origin, a relay dm device elsewhere.
    pub backing: Backing,
    /// Address and port the target listens on (e.g. 10.0.0.1:3260).
    pub portal: SocketAddr,
    /// The initiators admitted: the node's children.
    pub acls: Vec<Acl>,
    /// Let any initiator in (generate_node_acls=1): never unless the spec says so.
    pub open_access: bool,
}

const LUN: &str = "lun_0";

impl LioTarget {
    fn hba(&self) -> PathBuf {
        let kind = match self.backing {
            Backing::File { .. } => "fileio_0",
            Backing::Block { .. } | Backing::Dm { .. } => "iblock_0",
        };
        Path::new(ROOT).join("target/core").join(kind)
    }

    fn store(&self) -> PathBuf {
        self.hba().join(&self.backstore)
    }

    fn target(&self) -> PathBuf {
        Path::new(ROOT).join("target/iscsi").join(&self.iqn)
    }

    fn tpg(&self) -> PathBuf {
        self.target().join("tpgt_1")
    }

    fn portal_dir(&self) -> PathBuf {
        self.tpg().join("np").join(self.portal.to_string())
    }

    fn describe_backing(&self) -> String {
        match &self.backing {
            Backing::File { path, .. } | Backing::Block { path } => path.display().to_string(),
            Backing::Dm { name } => format!("dm:{name}"),
        }
    }

    fn acl_names(&self) -> String {
        let mut names: Vec<&str> = self.acls.iter().map(|a| a.initiator.as_str()).collect();
        names.sort();
        names.join(",")
    }

    fn make_backstore(&self) -> Result<()> {
        configfs::mkdir(&self.hba())?;
        configfs::mkdir(&self.store())?;
        let (control, device) = match &self.backing {
            Backing::File { path, size } => (
                format!("fd_dev_name={},fd_dev_size={size}", path.display()),
                path.clone(),
            ),
            Backing::Block { path } => (
                format!("udev_path={},readonly=1", path.display()),
                path.clone(),
            ),
            Backing::Dm { name } => {
                let dev = dm::device(name)?.ok_or_else(|| {
                    Error::not_found(format!("dm device {name}"), "nothing to export")
                })?;
                let path = dm::node_path(dev)?;
                (format!("udev_path={},readonly=1", path.display()), path)
            }
        };
        configfs::write(&self.store().join("control"), &control)?;
        // The kernel keeps this attribute for tools to read; observe reads it back to see
        // what the backstore serves.
        configfs::write(
            &self.store().join("udev_path"),
            &device.display().to_string(),
        )?;
        configfs::write(&self.store().join("enable"), "1")
    }

    fn make_target(&self) -> Result<()> {
        configfs::mkdir(&Path::new(ROOT).join("target/iscsi"))?;
        configfs::mkdir(&self.target())?;
        configfs::mkdir(&self.tpg())?;
        let lun = self.tpg().join("lun").join(LUN);
        configfs::mkdir(&lun)?;
        configfs::link(&self.store(), &lun.join("store"))?;
        configfs::mkdir(&self.portal_dir())?;
        let attrib = self.tpg().join("attrib");
        let chap = self.acls.iter().any(|a| a.chap.is_some());
        configfs::write(&attrib.join("authentication"), if chap { "1" } else { "0" })?;
        configfs::write(
            &attrib.join("generate_node_acls"),
            if self.open_access { "1" } else { "0" },
        )?;
        configfs::write(&attrib.join("demo_mode_write_protect"), "1")?;
        for acl in &self.acls {
            let dir = self.tpg().join("acls").join(&acl.initiator);
            configfs::mkdir(&dir)?;
            if let Some(chap) = &acl.chap {
                configfs::write(&dir.join("auth/userid"), &chap.username)?;
                configfs::write(&dir.join("auth/password"), &chap.password)?;
            }
            let mapped = dir.join(LUN);
            configfs::mkdir(&mapped)?;
            configfs::link(&lun, &mapped.join("lun"))?;
            // Children read; nobody writes through a relay or the origin.
            configfs::write(&mapped.join("write_protect"), "1")?;
        }
        configfs::write(&self.tpg().join("enable"), "1")
    }
}

impl Resource for LioTarget {
    fn desired(&self) -> Params {
        vec![
            ("backing", self.describe_backing()),
            ("portal", self.portal.to_string()),
            ("initiators", self.acl_names()),
        ]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        let (target, store) = (self.target().exists(), self.store().exists());
        if !target && !store {
            return Ok(Observed::Absent);
        }
        if !(target && store) || configfs::read(&self.tpg().join("enable")).as_deref() != Some("1")
        {
            return Ok(Observed::Partial(format!("target {} half made", self.iqn)));
        }
        let portals: Vec<String> = configfs::entries(&self.tpg().join("np"))
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        let mut acls: Vec<String> = configfs::entries(&self.tpg().join("acls"))
            .iter()
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        acls.sort();
        let served = configfs::read(&self.store().join("udev_path")).unwrap_or_default();
        let backing = match &self.backing {
            // A dm device's node (dm-N) is only known once it exists: compare with it now.
            Backing::Dm { name } => match dm::device(name)? {
                Some(dev) if dm::node_path(dev)?.display().to_string() == served => {
                    self.describe_backing()
                }
                _ => served,
            },
            _ => served,
        };
        Ok(Observed::Present(vec![
            ("backing", backing),
            ("portal", portals.join(",")),
            ("initiators", acls.join(",")),
        ]))
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        configfs::ensure_mounted()?;
        let made = self.make_backstore().and_then(|()| self.make_target());
        if let Err(e) = made {
            let _ = self.teardown(_ctx);
            return Err(e);
        }
        Ok(())
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        let tpg = self.tpg();
        if tpg.exists() {
            let _ = configfs::write(&tpg.join("enable"), "0");
            for acl in configfs::entries(&tpg.join("acls")) {
                for mapped in configfs::entries(&acl)
                    .into_iter()
                    .filter(|p| is_lun_dir(p))
                {
                    for link in configfs::entries(&mapped)
                        .into_iter()
                        .filter(|p| p.is_symlink())
                    {
                        configfs::unlink(&link)?;
                    }
                    configfs::rmdir(&mapped)?;
                }
                configfs::rmdir(&acl)?;
            }
            for np in configfs::entries(&tpg.join("np")) {
                configfs::rmdir(&np)?;
            }
            for lun in configfs::entries(&tpg.join("lun")) {
                for link in configfs::entries(&lun)
                    .into_iter()
                    .filter(|p| p.is_symlink())
                {
                    configfs::unlink(&link)?;
                }
                configfs::rmdir(&lun)?;
            }
            configfs::rmdir(&tpg)?;
        }
        configfs::rmdir(&self.target())?;
        configfs::rmdir(&self.store())?;
        let _ = configfs::rmdir(&self.hba()); // shared with other targets: only when empty
        Ok(())
    }
}

fn is_lun_dir(p: &Path) -> bool {
    p.file_name()
        .is_some_and(|n| n.to_string_lossy().starts_with("lun_"))
        && p.is_dir()
}
