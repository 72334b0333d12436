//! One sftsan at a time per cluster: an exclusive lock on a file in the state directory.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::names::Names;

/// The held lock on a cluster's state directory; released when dropped.
pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock or fails at once, naming the lock file.
    pub fn acquire(names: &Names) -> Result<StateLock> {
        let path = names.lock();
        // `down` removes the lock file while holding it: a lock taken on a file that was
        // removed meanwhile guards nothing, so take it again on the file now there.
        for _ in 0..3 {
            std::fs::create_dir_all(names.state_dir()).at(names.state_dir())?;
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .at(&path)?;
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                return Err(Error::busy(
                    path.display().to_string(),
                    "another sftsan is working on this cluster",
                ));
            }
            let held = file.metadata().at(&path)?;
            let current = std::fs::metadata(&path).ok();
            if current.is_some_and(|m| m.ino() == held.ino() && m.dev() == held.dev()) {
                return Ok(StateLock { file, path });
            }
        }
        Err(Error::busy(
            path.display().to_string(),
            "the lock file keeps being replaced",
        ))
    }

    /// Removes the lock file, still holding the lock (after `down`: the cluster is gone).
    pub fn remove(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(state_dir: &std::path::Path) -> Names {
        let text =
            crate::spec::test_spec_text(&state_dir.display().to_string(), "userspace", "qcow2", "");
        Names::new(&crate::spec::ClusterSpec::from_toml(&text).unwrap())
    }

    #[test]
    fn one_holder_at_a_time_and_removal_leaves_no_file() {
        let dir = tempfile::tempdir().unwrap();
        let names = names(&dir.path().join("state"));
        let first = StateLock::acquire(&names).unwrap();
        let second = StateLock::acquire(&names).err().expect("a second lock");
        assert_eq!(second.kind(), crate::error::ErrorKind::Busy);
        assert!(
            second
                .to_string()
                .ends_with("another sftsan is working on this cluster"),
            "{second}"
        );
        first.remove();
        assert!(!names.lock().exists());
        // Taken again on a new file.
        let again = StateLock::acquire(&names).unwrap();
        assert!(names.lock().exists());
        drop(again);
    }
}
