//! A file of a given size behind a loop device (loopdev-3): the local store of a cache,
//! of its metadata, of a snapshot's COW or of a thin pool. Found again by its backing file.
//!
//! The file outlives its loop device: after a reboot the next `up` attaches it again as it
//! is, so a cache keeps its blocks and a VM its writes. A sidecar records which image the
//! store belongs to; a store of another image is never attached again.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

use super::store;
use crate::error::{Error, IoContext, Result};
use crate::fsutil::remove_file_if_exists;
use crate::resources::{Ctx, Observed, Params, Resource};

/// A node's local store: a sparse file of a given size attached to a loop device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoopFile {
    /// Name of the node (from the spec) whose store this is.
    pub node: String,
    /// Path of the backing file, in the node's cache directory.
    pub file: PathBuf,
    /// The file's size in bytes.
    pub size: u64,
    /// The image whose blocks (or whose VMs' writes) the file holds.
    #[serde(default)]
    pub identity: String,
}

/// The loop device (major, minor) whose backing file is `file`, if one is attached.
pub fn find(file: &Path) -> Option<(u32, u32)> {
    let wanted = file.to_string_lossy().into_owned();
    std::fs::read_dir("/sys/block")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            if !name.starts_with("loop") {
                return None;
            }
            let backing = std::fs::read_to_string(entry.path().join("loop/backing_file")).ok()?;
            if backing.trim() != wanted {
                return None;
            }
            let dev = std::fs::read_to_string(entry.path().join("dev")).ok()?;
            let (major, minor) = dev.trim().split_once(':')?;
            Some((major.parse().ok()?, minor.parse().ok()?))
        })
}

/// Attaches `file` to a free loop device. Finding a free device and binding it are two
/// steps, so a concurrent attach (another node of the same level, another program) can take
/// the device in between: that is retried, a bounded number of times.
pub fn attach(file: &Path) -> std::io::Result<loopdev::LoopDevice> {
    let control = loopdev::LoopControl::open()?;
    let mut attempts = 0;
    loop {
        let dev = control.next_free()?;
        match dev.with().part_scan(false).attach(file) {
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempts < 16 => attempts += 1,
            done => return done.map(|()| dev),
        }
    }
}

impl LoopFile {
    fn identity_file(&self) -> PathBuf {
        store::identity_file(&self.file)
    }

    fn attach(&self) -> Result<()> {
        attach(&self.file)
            .map(drop)
            .map_err(|e| Error::io(&self.file, e).context("attaching to a loop device"))
    }
}

impl Resource for LoopFile {
    fn desired(&self) -> Params {
        vec![
            ("size", self.size.to_string()),
            ("identity", self.identity.clone()),
        ]
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        match (self.file.exists(), find(&self.file)) {
            // A file alone is not in use: `revive` attaches it again as it is.
            (_, None) => Ok(Observed::Absent),
            (true, Some(_)) => {
                let size = std::fs::metadata(&self.file).at(&self.file)?.len();
                Ok(Observed::Present(vec![
                    ("size", size.to_string()),
                    ("identity", store::stored_identity(&self.identity_file())),
                ]))
            }
            (false, Some(_)) => Ok(Observed::Partial(format!(
                "{} was deleted while attached",
                self.file.display()
            ))),
        }
    }

    /// A new, empty (sparse) file: whatever a file of that name held is discarded.
    fn create(&self, _ctx: &Ctx) -> Result<()> {
        if let Some(dir) = self.file.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        remove_file_if_exists(&self.identity_file())?;
        std::fs::File::create(&self.file)
            .and_then(|f| f.set_len(self.size))
            .at(&self.file)?;
        store::record_identity(&self.identity_file(), &self.identity)?;
        self.attach().inspect_err(|_| {
            let _ = remove_file_if_exists(&self.file);
            let _ = remove_file_if_exists(&self.identity_file());
        })
    }

    fn revive(&self, ctx: &Ctx) -> Result<()> {
        if !self.file.exists() {
            tracing::warn!(
                "{}: {} is gone; starting it empty",
                self.node,
                self.file.display()
            );
            return self.create(ctx);
        }
        store::check_identity(
            &self.file.display().to_string(),
            &self.identity_file(),
            &self.identity,
        )?;
        let size = std::fs::metadata(&self.file).at(&self.file)?.len();
        if size != self.size {
            return Err(Error::conflict(
                self.file.display().to_string(),
                format!(
                    "is {size} bytes, but the plan wants {}; run `sftsan down` to discard it",
                    self.size
                ),
            ));
        }
        self.attach()
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        if let Some((major, minor)) = find(&self.file) {
            let path = super::dm::node_path(devicemapper::Device { major, minor })?;
            loopdev::LoopDevice::open(&path)
                .and_then(|d| d.detach())
                .map_err(|e| Error::io(&path, e).context("detaching"))?;
        }
        remove_file_if_exists(&self.file)?;
        remove_file_if_exists(&self.identity_file())?;
        Ok(())
    }
}
