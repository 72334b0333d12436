//! A block device the spec names as a node's store (an LV, a partition, a disk) instead of
//! a loop-backed file. While the cluster uses it, a dm-linear device carrying the
//! cluster's prefix claims it, so it is held (no one else can open it exclusively), named
//! like everything else sftsan made, and found by that name.
//!
//! sftsan takes over only a device that is not in use and carries no filesystem, RAID or
//! LVM signature or partition table (libblkid's probe, as stratisd does), clears its first
//! MiB (stale dm metadata there would be loaded) and records which image it serves. After
//! a reboot the claim is made again over the device as it is. Teardown clears the first
//! MiB again: the device is left as blank as it came, apart from the data blocks.

use devicemapper::{Device, LinearTargetParams, Sectors, TargetLine};
use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::{dm, store};
use crate::error::{Error, Rejection, Result};
use crate::fsutil::remove_file_if_exists;
use crate::resources::{Ctx, Observed, Params, Resource};

/// A block device named in the spec, taken over as one of a node's stores and claimed by a
/// dm-linear device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockStore {
    /// Name of the node (from the spec) whose store this is.
    pub node: String,
    /// What the node keeps on it: cache, cache-metadata, cow-N, thin-data, thin-metadata.
    pub role: String,
    /// The spec field that names the device (`nodes[0].devices.cache`), for errors.
    pub field: String,
    /// Path of the block device, as the spec names it (e.g. `/dev/vg0/cache`).
    pub device: PathBuf,
    /// The dm-linear device claiming it.
    pub name: String,
    /// The smallest size that holds what the node keeps on it.
    pub min_bytes: u64,
    /// The image the store's content belongs to: "size-mtime-digest", as the plan computes it.
    pub identity: String,
    /// Sidecar file in the node's cache directory recording `identity` once taken over.
    pub identity_file: PathBuf,
}

/// A block device opened exclusively: fails with EBUSY while it is mounted, claimed by a
/// dm or md device, or opened exclusively by anyone else.
fn open_exclusive(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(path)
}

/// The device's (major, minor) and size in bytes, or why it cannot be a store.
pub fn inspect(path: &Path) -> Result<(u32, u32, u64), Rejection> {
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Rejection::new("does not exist"),
        _ => Rejection(e.to_string()),
    })?;
    if !meta.file_type().is_block_device() {
        return Err(Rejection::new("is not a block device"));
    }
    let (major, minor) = (libc::major(meta.rdev()), libc::minor(meta.rdev()));
    let sectors = dm::sectors(major, minor).map_err(|e| Rejection(e.to_string()))?;
    Ok((major, minor, sectors * 512))
}

/// What libblkid finds on the device that someone may still want: a filesystem, RAID or
/// LVM member, swap, or a partition table.
fn signature(path: &Path) -> Result<Option<String>, Rejection> {
    use libblkid_rs::BlkidProbe;
    let failed = |e: libblkid_rs::BlkidErr| Rejection(format!("cannot be probed: {e}"));
    let mut probe = BlkidProbe::new_from_filename(path).map_err(failed)?;
    probe.enable_superblocks(true).map_err(failed)?;
    probe.enable_partitions(true).map_err(failed)?;
    probe.do_safeprobe().map_err(failed)?;
    if let Ok(kind) = probe.lookup_value("TYPE") {
        return Ok(Some(format!("a {kind} signature")));
    }
    if let Ok(table) = probe.lookup_value("PTTYPE") {
        return Ok(Some(format!("a {table} partition table")));
    }
    Ok(None)
}

fn clear_header(f: &mut File, size: u64) -> std::io::Result<()> {
    let zeros = vec![0u8; store::HEADER_BYTES.min(size) as usize];
    f.seek(SeekFrom::Start(0))?;
    f.write_all(&zeros)?;
    f.sync_all()
}

impl BlockStore {
    fn fail(&self, problem: impl std::fmt::Display) -> Error {
        Error::invalid(
            self.field.clone(),
            format!("{} {problem}", self.device.display()),
        )
    }

    /// Checks that the device exists, is a block device and is large enough (what can be
    /// checked before anything is touched); returns its (major, minor, size).
    fn inspect_store(&self) -> Result<(u32, u32, u64)> {
        let found = inspect(&self.device).map_err(|p| self.fail(p))?;
        if found.2 < self.min_bytes {
            return Err(self.fail(format!(
                "holds {} bytes; it must hold at least {}",
                found.2, self.min_bytes
            )));
        }
        Ok(found)
    }

    /// Checks the device can serve as this store; returns it opened exclusively, with
    /// what [`Self::preflight`] found.
    fn take(&self) -> Result<(File, (u32, u32, u64))> {
        let found = self.inspect_store()?;
        let f = open_exclusive(&self.device).map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => {
                self.fail("is in use (mounted, or held by another device or program)")
            }
            _ => self.fail(e),
        })?;
        Ok((f, found))
    }

    /// The dm-linear device over all of device `major:minor` of `size` bytes.
    fn claim(&self, (major, minor, size): (u32, u32, u64)) -> Result<()> {
        let whole = LinearTargetParams::new(Device { major, minor }, Sectors(0));
        let line = TargetLine::new(Sectors(0), Sectors(size / 512), whole);
        dm::create(&self.name, &line, false).map(drop)
    }
}

impl Resource for BlockStore {
    fn preflight(&self) -> Result<()> {
        self.inspect_store().map(drop)
    }

    fn desired(&self) -> Params {
        let device = inspect(&self.device)
            .map(|(major, minor, _)| format!("{major}:{minor}"))
            .unwrap_or_else(|_| "(missing)".into());
        vec![
            ("target", "linear".into()),
            ("device", device),
            ("identity", self.identity.clone()),
        ]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        Ok(match dm::table(&self.name)? {
            None => Observed::Absent,
            Some(t) if t.is_empty() => Observed::Partial(format!("{} has no table", self.name)),
            Some(t) => Observed::Present(vec![
                ("target", t[0].2.clone()),
                (
                    "device",
                    t[0].3.split_whitespace().next().unwrap_or("").into(),
                ),
                ("identity", store::stored_identity(&self.identity_file)),
            ]),
        })
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let (mut f, device) = self.take()?;
        if let Some(found) = signature(&self.device).map_err(|e| self.fail(e))? {
            return Err(self.fail(format!(
                "holds {found}; sftsan only takes over blank devices (clear it with `wipefs -a` if it is meant for sftsan)"
            )));
        }
        remove_file_if_exists(&self.identity_file)?;
        clear_header(&mut f, device.2).map_err(|e| self.fail(format!("cannot be cleared: {e}")))?;
        drop(f);
        store::record_identity(&self.identity_file, &self.identity)?;
        self.claim(device).inspect_err(|_| {
            let _ = remove_file_if_exists(&self.identity_file);
        })
    }

    fn revive(&self, _ctx: &Ctx) -> Result<()> {
        let (f, device) = self.take()?;
        drop(f);
        store::check_identity(&self.field, &self.identity_file, &self.identity)?;
        self.claim(device)
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)?;
        // Only a device sftsan took over (it recorded an image for it) is cleared.
        if !self.identity_file.exists() {
            return Ok(());
        }
        match inspect(&self.device) {
            Ok((.., size)) => match open_exclusive(&self.device) {
                Ok(mut f) => clear_header(&mut f, size)
                    .map_err(|e| self.fail(format!("cannot be cleared: {e}")))?,
                Err(e) => tracing::warn!("{}: left as it is", self.fail(e)),
            },
            Err(problem) => tracing::warn!("{}: not cleared", self.fail(problem)),
        }
        remove_file_if_exists(&self.identity_file)?;
        Ok(())
    }
}
