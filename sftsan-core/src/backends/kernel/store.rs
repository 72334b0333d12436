//! What a node's local stores (loop-backed files, block devices named in the spec) share:
//! a sidecar file recording which image the store's content belongs to, so that a store
//! kept over a reboot is used again only for the same image.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic;

/// Bytes cleared at the start of a store that sftsan takes over or gives back: every dm
/// target's metadata (dm-cache, dm-clone, thin pool superblocks; a persistent
/// dm-snapshot's header) starts in its first blocks, and a stale one would be loaded.
pub const HEADER_BYTES: u64 = 1 << 20;

/// `<file>.identity`, beside the store it describes.
pub fn identity_file(store: &Path) -> PathBuf {
    let mut name = store.file_name().unwrap_or_default().to_os_string();
    name.push(".identity");
    store.with_file_name(name)
}

/// The recorded identity, or "(none)" when there is no sidecar.
pub fn stored_identity(sidecar: &Path) -> String {
    std::fs::read_to_string(sidecar)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "(none)".into())
}

/// Writes `identity` to the sidecar (atomically): the store now holds that image's data.
pub fn record_identity(sidecar: &Path, identity: &str) -> Result<()> {
    write_atomic(sidecar, identity.as_bytes())
        .map_err(|e| e.context("recording the image a store holds"))
}

/// Refuses to use a kept store again unless it belongs to the image the plan serves.
pub fn check_identity(what: &str, sidecar: &Path, identity: &str) -> Result<()> {
    let stored = stored_identity(sidecar);
    if stored == identity {
        return Ok(());
    }
    Err(Error::corrupt(
        what,
        format!("holds data of image {stored}, but the image is now {identity}; run `sftsan down` to discard it"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_store_is_used_again_only_for_its_own_image() {
        let dir = tempfile::tempdir().unwrap();
        let sidecar = identity_file(&dir.path().join("base.cache.img"));
        assert_eq!(
            sidecar.file_name().unwrap().to_str(),
            Some("base.cache.img.identity")
        );
        assert_eq!(stored_identity(&sidecar), "(none)");
        let refused = check_identity("cache", &sidecar, "1-2-3").unwrap_err();
        assert!(refused.to_string().contains("image (none)"), "{refused}");
        record_identity(&sidecar, "1-2-3").unwrap();
        check_identity("cache", &sidecar, "1-2-3").unwrap();
        let refused = check_identity("cache", &sidecar, "4-5-6").unwrap_err();
        assert!(
            refused
                .to_string()
                .starts_with("cache: holds data of image 1-2-3, but the image is now 4-5-6"),
            "{refused}"
        );
    }
}
