//! Detached daemons: finding them by pid file, and stopping them with a deadline.
//! Waiting uses a pidfd (an event), not sleeps.

use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// Reads a pid file and returns the pid if that process is alive and its command line
/// contains `marker` (guards against a recycled pid).
pub fn live_pid(pidfile: &Path, marker: &str) -> Option<i32> {
    let pid: i32 = fs::read_to_string(pidfile).ok()?.trim().parse().ok()?;
    cmdline_contains(pid, marker).then_some(pid)
}

/// Whether process `pid` exists (not a zombie) and its argv contains `marker`.
pub fn cmdline_contains(pid: i32, marker: &str) -> bool {
    if is_zombie(pid) {
        return false;
    }
    let Ok(raw) = fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    raw.split(|b| *b == 0)
        .any(|arg| String::from_utf8_lossy(arg).contains(marker))
}

fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(false)
}

/// The command line of `pid` as arguments.
pub fn cmdline(pid: i32) -> Vec<String> {
    fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            raw.split(|b| *b == 0)
                .filter(|a| !a.is_empty())
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A pidfd for `pid`: it becomes readable when the process exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall; on success the returned fd is ours to own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a new, open pidfd that nothing else owns or will close.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Waits until `pid` exits or `timeout` passes; true when it is gone. A child of ours is
/// reaped, so that it does not stay in the process table.
pub fn wait_exit(pid: i32, timeout: Duration) -> bool {
    if !exited_within(pid, timeout) {
        return false;
    }
    // SAFETY: waitpid with a null status pointer writes nothing; WNOHANG never blocks.
    unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
    true
}

/// Waits until `pid` exits or `timeout` passes, without reaping it (its parent still
/// collects the exit status); true when it has exited.
pub fn exited_within(pid: i32, timeout: Duration) -> bool {
    let fd = match pidfd_open(pid) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ESRCH) => return true, // already gone
        // No pidfds (an old kernel, or valgrind around a C caller of the library): look.
        Err(_) => return gone_within(pid, timeout),
    };
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().min(i32::MAX as u128) as i32) };
        if n > 0 {
            // A readable pidfd: the process has exited.
            return true;
        }
        if n == 0 || left.is_zero() {
            return false;
        }
    }
}

/// Whether `pid` is gone (or a zombie) within `timeout`, looked at every 20 ms: the
/// fallback where no pidfd can be had.
fn gone_within(pid: i32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        // SAFETY: kill(2) with signal 0 only checks that the process exists.
        let exists = unsafe { libc::kill(pid, 0) } == 0;
        if !exists || is_zombie(pid) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sends `signal` to `pid`, ignoring a process that is already gone.
pub fn signal(pid: i32, signal: i32) -> io::Result<()> {
    // SAFETY: kill(2) with a plain pid.
    if unsafe { libc::kill(pid, signal) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        Ok(())
    } else {
        Err(err)
    }
}

pub use crate::fsutil::remove_file_if_exists;

/// SIGTERM, wait up to `grace`, then SIGKILL and wait again. Errors if it survives.
pub fn stop(pid: i32, grace: Duration) -> crate::error::Result<()> {
    let proc_dir = format!("/proc/{pid}");
    let fail = |e| crate::error::Error::io(&proc_dir, e).context("stopping it");
    signal(pid, libc::SIGTERM).map_err(fail)?;
    if wait_exit(pid, grace) {
        return Ok(());
    }
    tracing::warn!("pid {pid} ignored SIGTERM for {grace:?}; killing it");
    signal(pid, libc::SIGKILL).map_err(fail)?;
    if wait_exit(pid, Duration::from_secs(10)) {
        Ok(())
    } else {
        Err(crate::error::Error::timeout(
            format!("pid {pid}"),
            "survived SIGKILL for 10 s",
        ))
    }
}
