//! One sftsan at a time per cluster: an exclusive lock on a file in the state directory.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;

use super::EngineError;
use crate::names::Names;

pub struct StateLock {
    _file: File,
}

impl StateLock {
    /// Takes the lock or fails at once, naming the lock file.
    pub fn acquire(names: &Names) -> Result<StateLock, EngineError> {
        let path = names.lock();
        let fail = |what: String| EngineError::Lock(format!("{}: {what}", path.display()));
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
        Ok(StateLock { _file: file })
    }
}
