//! Commands run inside a named network namespace (`ip netns` convention: a bind mount at
//! /var/run/netns/NAME). Only the network namespace is entered: the mount namespace stays
//! the host's, so files and sockets the node creates are visible to sftsan.

use super::Transport;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// Runs commands inside the network namespace `/var/run/netns/<name>`.
#[derive(Debug, Clone)]
pub struct NetnsTransport {
    name: String,
}

impl NetnsTransport {
    /// A transport into the network namespace called `name` (which need not exist yet).
    pub fn new(name: &str) -> Self {
        NetnsTransport { name: name.into() }
    }

    /// The bind mount that holds namespace `name`: `/var/run/netns/<name>`.
    pub fn path(name: &str) -> PathBuf {
        PathBuf::from("/var/run/netns").join(name)
    }

    fn open(&self) -> std::io::Result<File> {
        File::open(Self::path(&self.name))
    }
}

fn enter(ns: &File) -> std::io::Result<()> {
    // SAFETY: setns only reads the fd; it affects the calling thread alone.
    if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

impl Transport for NetnsTransport {
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new(program);
        // Everything the child needs is made before the fork: between fork and exec only
        // async-signal-safe calls are allowed, so no allocation (an error is its errno).
        let ns = self
            .open()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOENT));
        // SAFETY: the closure only calls setns(2) or builds an io::Error from an errno,
        // neither of which allocates or takes a lock.
        unsafe {
            cmd.pre_exec(move || match &ns {
                Ok(f) => enter(f),
                Err(errno) => Err(std::io::Error::from_raw_os_error(*errno)),
            });
        }
        cmd
    }

    fn probe_tcp(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<()> {
        let ns = self.open()?;
        // A thread of its own enters the namespace, so this process's threads stay put.
        std::thread::spawn(move || {
            enter(&ns)?;
            TcpStream::connect_timeout(&addr, timeout).map(drop)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("probe thread panicked")))
    }

    fn describe(&self) -> String {
        format!("netns {}", self.name)
    }
}
