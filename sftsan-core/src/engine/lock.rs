//! One sftsan at a time per cluster: an exclusive lock on a file in the state directory.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use super::EngineError;
use crate::names::Names;

pub struct StateLock {
    file: File,
    path: PathBuf,
}

impl StateLock {
    /// Takes the lock or fails at once, naming the lock file.
    pub fn acquire(names: &Names) -> Result<StateLock, EngineError> {
        let path = names.lock();
        let fail = |what: String| EngineError::Lock(format!("{}: {what}", path.display()));
        // `down` removes the lock file while holding it: a lock taken on a file that was
        // removed meanwhile guards nothing, so take it again on the file now there.
        for _ in 0..3 {
            std::fs::create_dir_all(names.state_dir()).map_err(|e| fail(e.to_string()))?;
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .map_err(|e| fail(e.to_string()))?;
            // SAFETY: flock on an fd we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
                return Err(fail("another sftsan is working on this cluster".into()));
            }
            let held = file.metadata().map_err(|e| fail(e.to_string()))?;
            let current = std::fs::metadata(&path).ok();
            if current.is_some_and(|m| m.ino() == held.ino() && m.dev() == held.dev()) {
                return Ok(StateLock { file, path });
            }
        }
        Err(fail("the lock file keeps being replaced".into()))
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
