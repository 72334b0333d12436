//! Small helpers for configfs (LIO's configuration interface): directories are objects,
//! files are attributes, symlinks are associations.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Where configfs is mounted; LIO's objects live under its `target` directory.
pub const ROOT: &str = "/sys/kernel/config";

/// Mounts configfs at its usual place if the kernel has it and it is not mounted yet.
pub fn ensure_mounted() -> Result<()> {
    if Path::new(ROOT).join("target").exists() || is_mounted() {
        return Ok(());
    }
    let src = c"configfs";
    let dst = c"/sys/kernel/config";
    // SAFETY: plain mount(2) with static C strings.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            dst.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(Error::io(ROOT, io::Error::last_os_error()).context("mounting configfs"));
    }
    Ok(())
}

fn is_mounted() -> bool {
    fs::read_to_string("/proc/mounts")
        .map(|m| {
            m.lines()
                .any(|l| l.split_whitespace().nth(2) == Some("configfs"))
        })
        .unwrap_or(false)
}

fn err(path: &Path, what: &str, e: io::Error) -> Error {
    Error::io(path, e).context(what)
}

/// Creates a configfs object (directory) unless it exists.
pub fn mkdir(path: &Path) -> Result<()> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(err(path, "creating", e)),
        _ => Ok(()),
    }
}

/// Removes a configfs object if it exists.
pub fn rmdir(path: &Path) -> Result<()> {
    match fs::remove_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(path, "removing", e)),
        _ => Ok(()),
    }
}

/// Sets an attribute: writes `value` to the configfs file `path`.
pub fn write(path: &Path, value: &str) -> Result<()> {
    fs::write(path, value).map_err(|e| err(path, &format!("writing {value:?} to"), e))
}

/// An attribute's value, trimmed; `None` when the file cannot be read.
pub fn read(path: &Path) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

/// Links `link` to `target` unless a link is there.
pub fn link(target: &Path, link: &Path) -> Result<()> {
    if fs::symlink_metadata(link).is_ok() {
        return Ok(());
    }
    std::os::unix::fs::symlink(target, link).map_err(|e| err(link, "linking", e))
}

/// Removes association `link` if it exists.
pub fn unlink(link: &Path) -> Result<()> {
    match fs::remove_file(link) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(err(link, "unlinking", e)),
        _ => Ok(()),
    }
}

/// The entries of a configfs directory (empty when it does not exist).
pub fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default()
}
