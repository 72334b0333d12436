//! How a kernel resource names a block device it builds on: by something stable (a dm
//! name, a loop's backing file, a path), resolved to its dev_t when it is needed.

use devicemapper::{Device, Sectors};
use serde::{Deserialize, Serialize};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::initiator::IscsiSession;
use super::{dm, loopback};
use crate::error::{Error, Result};

/// A block device a kernel resource builds on, named stably and resolved to its dev_t on use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum DevRef {
    /// The device-mapper device of this name.
    Dm {
        /// Name of the dm device (as in `/dev/mapper/<name>`).
        name: String,
    },
    /// The loop device attached to this file.
    Loop {
        /// Path of the loop device's backing file.
        file: PathBuf,
    },
    /// A block device node.
    Path {
        /// Path of the device node, e.g. `/dev/sdb`.
        path: PathBuf,
    },
    /// The disk of an iSCSI session (its sdX name is not stable across logins).
    Iscsi {
        /// The session whose disk (LUN) is meant.
        session: Box<IscsiSession>,
    },
}

impl DevRef {
    /// The device's current (major, minor); a not-found error when it is not there.
    pub fn resolve(&self) -> Result<Device> {
        let missing = |what: String| Error::not_found(what, "is not there");
        match self {
            DevRef::Dm { name } => {
                dm::device(name)?.ok_or_else(|| missing(format!("dm device {name}")))
            }
            DevRef::Loop { file } => loopback::find(file)
                .map(|(major, minor)| Device { major, minor })
                .ok_or_else(|| missing(format!("a loop device over {}", file.display()))),
            DevRef::Iscsi { session } => session
                .disk()
                .map(|d| Device {
                    major: d.major,
                    minor: d.minor,
                })
                .ok_or_else(|| missing(format!("the disk of the session to {}", session.target))),
            DevRef::Path { path } => {
                let rdev = std::fs::metadata(path)
                    .map_err(|e| Error::io(path, e))?
                    .rdev();
                Ok(Device {
                    major: libc::major(rdev),
                    minor: libc::minor(rdev),
                })
            }
        }
    }

    /// The device's size.
    pub fn sectors(&self) -> Result<Sectors> {
        let d = self.resolve()?;
        dm::sectors(d.major, d.minor).map(Sectors)
    }
}
