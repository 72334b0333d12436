//! The controller's SSH sessions to every host of a remote cluster for one command: one
//! master connection per host, opened on first use, several hosts worked on at once (at
//! most `ssh.max_sessions`), and every connection closed when the fleet is dropped.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::spec::{ClusterSpec, Mode};
use crate::transport::ssh::{HostKeys, SshHost, SshOptions};

/// Hosts worked on at once unless `ssh.max_sessions` says otherwise.
const DEFAULT_SESSIONS: u32 = 32;
/// Seconds to wait for a connection unless `ssh.connect_timeout_s` says otherwise.
const DEFAULT_CONNECT_TIMEOUT_S: u32 = 10;

/// Every host of a remote cluster, reachable for one command.
pub struct Fleet {
    hosts: Vec<(String, SshHost)>,
    sessions: usize,
    /// Where the master connections' sockets live; removed with the fleet.
    control_dir: tempfile::TempDir,
    known_hosts: PathBuf,
}

impl Fleet {
    /// The hosts of `spec` (mode remote); `host_keys` says whether unknown host keys are
    /// refused (every command) or learned (`sftsan hosts trust`).
    pub fn open(spec: &ClusterSpec, host_keys: HostKeys) -> Result<Fleet> {
        if spec.cluster.mode != Mode::Remote {
            return Err(Error::invalid(
                "cluster.mode",
                "hosts are reached over SSH only with mode = \"remote\"",
            ));
        }
        let ssh = spec.ssh.clone().unwrap_or_default();
        let known_hosts = ssh
            .known_hosts
            .clone()
            .unwrap_or_else(|| spec.cluster.state_dir.join("known_hosts"));
        let control_dir = control_dir()?;
        let options = SshOptions {
            known_hosts: known_hosts.clone(),
            control_dir: control_dir.path().to_path_buf(),
            connect_timeout: Duration::from_secs(
                ssh.connect_timeout_s
                    .unwrap_or(DEFAULT_CONNECT_TIMEOUT_S)
                    .into(),
            ),
            host_keys,
        };
        let hosts = spec
            .ssh_hosts()
            .into_iter()
            .map(|(name, dest)| (name, SshHost::new(dest, options.clone())))
            .collect();
        Ok(Fleet {
            hosts,
            sessions: ssh.max_sessions.unwrap_or(DEFAULT_SESSIONS) as usize,
            control_dir,
            known_hosts,
        })
    }

    /// The known_hosts file the fleet checks host keys against.
    pub fn known_hosts(&self) -> &std::path::Path {
        &self.known_hosts
    }

    /// Each host by node name, in the spec's order (the origin first).
    pub fn hosts(&self) -> impl Iterator<Item = (&str, &SshHost)> {
        self.hosts.iter().map(|(n, h)| (n.as_str(), h))
    }

    /// Runs `work` for every host, at most `ssh.max_sessions` at once, and returns the
    /// results in the hosts' order. A host's failure does not stop the others.
    pub fn each<T: Send>(&self, work: impl Fn(&str, &SshHost) -> T + Sync) -> Vec<T> {
        let all: Vec<&str> = self.hosts.iter().map(|(n, _)| n.as_str()).collect();
        self.each_of(&all, work)
    }

    /// Like [`Fleet::each`], for the hosts of these nodes only (a tree level), in the
    /// order given; a node without a host (an unmanaged origin) is skipped.
    pub fn each_of<T: Send, S: AsRef<str>>(
        &self,
        nodes: &[S],
        work: impl Fn(&str, &SshHost) -> T + Sync,
    ) -> Vec<T> {
        let chosen: Vec<&(String, SshHost)> = nodes
            .iter()
            .filter_map(|n| self.hosts.iter().find(|(name, _)| name == n.as_ref()))
            .collect();
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<Option<T>>> = Mutex::new((0..chosen.len()).map(|_| None).collect());
        let workers = self.sessions.clamp(1, chosen.len().max(1));
        std::thread::scope(|s| {
            for _ in 0..workers {
                s.spawn(|| loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some((name, host)) = chosen.get(i) else {
                        return;
                    };
                    let result = work(name, host);
                    results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(result);
                });
            }
        });
        results
            .into_inner()
            .unwrap_or_else(|p| p.into_inner())
            .into_iter()
            .map(|r| r.expect("every host was worked on"))
            .collect()
    }
}

impl Drop for Fleet {
    /// Ends every master connection (there is one only if a socket is in the directory);
    /// the directory goes with the TempDir.
    fn drop(&mut self) {
        let any_socket = std::fs::read_dir(self.control_dir.path())
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if !any_socket {
            return;
        }
        self.each(|_, host| host.close());
    }
}

/// A new private directory with a short path for the sockets: /run for root, else the
/// temporary directory.
fn control_dir() -> Result<tempfile::TempDir> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    let parent = if root {
        PathBuf::from("/run")
    } else {
        PathBuf::from("/tmp")
    };
    tempfile::Builder::new()
        .prefix("sftsan-ssh.")
        .tempdir_in(&parent)
        .map_err(|e| Error::io(parent, e))
}
