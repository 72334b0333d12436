//! File helpers with crash-safe semantics.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Replaces `path` with `data` atomically: a crash leaves the old or the new content,
/// never a mix. Writes a temporary file, fsyncs it, renames it and fsyncs the directory.
/// The file is readable by its owner only: sftsan's state is its own, and the journal
/// holds CHAP credentials.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    write_atomic_io(path, data).at(path)
}

fn write_atomic_io(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp"));
    // A temporary file left by a crash keeps its mode when opened again: start anew.
    if let Err(e) = fs::remove_file(&tmp) {
        if e.kind() != io::ErrorKind::NotFound {
            return Err(e);
        }
    }
    {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Removes a file, treating "not there" as success.
pub fn remove_file_if_exists(path: &Path) -> Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(Error::io(path, e)),
        _ => Ok(()),
    }
}

/// Removes `dirs` in order where they are empty, so teardown leaves no empty directories.
pub fn prune_dirs(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = std::fs::remove_dir(d);
    }
}

/// Removes a node's run directory, then `run/` itself once the last node is gone.
pub fn prune_run_dir(run_dir: &Path) {
    let dirs: Vec<PathBuf> = run_dir.ancestors().take(2).map(PathBuf::from).collect();
    prune_dirs(&dirs);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("j.json");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        remove_file_if_exists(&p).unwrap();
        remove_file_if_exists(&p).unwrap();
        assert!(!p.exists());
    }
}
