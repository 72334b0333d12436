//! A remote cluster's VMs (`cluster.mode = "remote"`): each compute node's domains are
//! defined in its own host's libvirt, which the controller reaches as
//! `qemu+ssh://USER@HOST[:PORT]/system`, and each VM's snapshot lives on that host, made
//! there by sftsan's libvirt hook when the VM starts (from the spec `up` installed at
//! `<state_dir>/spec.toml`, which the domain's metadata names).
//!
//! Why the hook makes the snapshots: a VM's disk is a file (or dm device) on its host,
//! made by the host's own engine under the host's lock and journal; the hook already does
//! exactly that at `prepare begin` of every start, whoever starts the domain (virsh,
//! autostart, `sftsan vm start`). The controller making it too would only add a second
//! path to the same result. So `define` and `start` touch nothing but libvirt, and the
//! controller asks a host's own sftsan over SSH only for what libvirt cannot tell or do:
//! whether a snapshot (or the node's snapshot directory) is there, and removing one
//! (`undefine --remove-snapshots`, a stateless VM's at `destroy`).
//!
//! Host keys: libvirt's ssh transport runs the system's `ssh`, but its URI takes neither a
//! known_hosts file nor ssh options (`known_hosts=` is read by its libssh transports only,
//! and `no_verify=` could only weaken checking). So the URI names a wrapper
//! (`command=`): a script in a private directory that lives for one command and runs ssh
//! with sftsan's own options for that host ([`SshHost::client_options`]): host keys only
//! from sftsan's known_hosts (hosts `sftsan hosts trust` learned), BatchMode, and the
//! master connection the command already opened (ControlPath), which libvirt's session
//! then shares; libvirt's own arguments follow. The URI also carries the destination's
//! user, port and key (`keyfile=`), as an operator would write it.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sftsan_core::error::{Error, IoContext, Result};
use sftsan_core::plan::Plan;
use sftsan_core::transport::last_line;
use sftsan_core::transport::ssh::{quote, SshDestination, SshHost};

use crate::cluster::{Snapshots, LOCK_WAIT};
use crate::libvirt::Libvirt;

/// Longest a small command on a host (`test -e`) may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(60);
/// Longest making or removing a snapshot on a host may take (making one may bring the
/// node's stack up first).
const SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(600);
/// What the host's sftsan says when another sftsan (the hook, for another VM) holds the
/// cluster's state lock there: the same request may succeed a moment later.
const LOCK_HELD: &str = "another sftsan is working on this cluster";

/// The libvirt URI of a host's system QEMU driver as an operator would write it:
/// `qemu+ssh://USER@HOST[:PORT]/system` (an IPv6 address in brackets).
pub fn shown_uri(dest: &SshDestination) -> String {
    let mut uri = String::from("qemu+ssh://");
    if let Some(user) = &dest.user {
        uri += &escape(user.as_bytes());
        uri.push('@');
    }
    if dest.host.contains(':') {
        uri += &format!("[{}]", dest.host);
    } else {
        uri += &dest.host;
    }
    if let Some(port) = dest.port {
        uri += &format!(":{port}");
    }
    uri + "/system"
}

/// The URI `sftsan vm` opens: [`shown_uri`] with the destination's key (`keyfile=`) and
/// the ssh wrapper libvirt runs instead of `ssh` (`command=`).
pub fn libvirt_uri(dest: &SshDestination, command: &Path) -> String {
    let mut uri = shown_uri(dest);
    uri += "?command=";
    uri += &escape(command.as_os_str().as_bytes());
    if let Some(key) = &dest.identity_file {
        uri += "&keyfile=";
        uri += &escape(key.as_os_str().as_bytes());
    }
    uri
}

/// Percent-encodes every byte but RFC 3986's unreserved ones and `/`, so that a path or
/// name is one URI parameter value, whatever it holds.
fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b'/') {
            out.push(b as char);
        } else {
            out += &format!("%{b:02X}");
        }
    }
    out
}

/// The ssh wrappers of one command: a private (0700) directory, removed with the value.
pub struct SshWrappers {
    dir: tempfile::TempDir,
}

impl SshWrappers {
    /// A new private directory: under /run for root (as the master connections' sockets),
    /// else the temporary directory.
    pub fn new() -> Result<SshWrappers> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let parent = if unsafe { libc::geteuid() } == 0 {
            PathBuf::from("/run")
        } else {
            std::env::temp_dir()
        };
        let dir = tempfile::Builder::new()
            .prefix("sftsan-vm.")
            .tempdir_in(&parent)
            .at(&parent)?;
        Ok(SshWrappers { dir })
    }

    /// Writes the wrapper for `node`'s host: `exec ssh OPTIONS... "$@"`, every option
    /// single-quoted. Returns its path.
    pub fn write(&self, node: &str, host: &SshHost) -> Result<PathBuf> {
        let path = self.dir.path().join(format!("ssh-{node}"));
        let mut script = format!(
            "#!/bin/sh\n# libvirt's ssh to {node} ({}) for `sftsan vm`: sftsan's ssh options, then libvirt's.\nexec ssh",
            host.destination()
        )
        .into_bytes();
        for option in host.client_options() {
            script.push(b' ');
            script.extend(quote(&option));
        }
        script.extend_from_slice(b" \"$@\"\n");
        std::fs::write(&path, script).at(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).at(&path)?;
        Ok(path)
    }
}

/// Connects to the libvirt of `node`'s host over qemu+ssh, through the wrapper `wrappers`
/// write for it. An error names the node, its destination and the URI.
pub fn connect(node: &str, host: &SshHost, wrappers: &SshWrappers) -> Result<Libvirt> {
    let here = format!("{node} ({})", host.destination());
    let command = wrappers.write(node, host).map_err(|e| e.context(&here))?;
    let dest = host.destination();
    Libvirt::open_as(&libvirt_uri(dest, &command), &shown_uri(dest)).map_err(|e| e.context(here))
}

/// One compute node's snapshots, on its host: asked of, and removed by, the host's own
/// sftsan over the controller's SSH connection, from the spec `up` installed there. Made
/// by the host's libvirt hook ([`Snapshots::made_by_hook`]).
pub struct HostSnapshots<'a> {
    node: String,
    host: &'a SshHost,
    program: String,
    spec: PathBuf,
    plan: &'a Plan,
    /// One engine call at a time per host: each takes the host's state lock.
    one_at_a_time: Mutex<()>,
}

impl<'a> HostSnapshots<'a> {
    /// `node`'s snapshots on `host`, whose sftsan is `program` (as `hosts check` found
    /// it) and which holds the cluster's spec at `installed_spec`.
    pub fn new(
        node: &str,
        host: &'a SshHost,
        program: &str,
        installed_spec: &Path,
        plan: &'a Plan,
    ) -> HostSnapshots<'a> {
        HostSnapshots {
            node: node.into(),
            host,
            program: program.into(),
            spec: installed_spec.to_path_buf(),
            plan,
            one_at_a_time: Mutex::new(()),
        }
    }

    fn here(&self) -> String {
        format!("{} ({})", self.node, self.host.destination())
    }

    /// Whether `test -e`/`-d` holds for `path` on the host; an SSH failure counts as no
    /// (and is logged).
    fn test(&self, flag: &str, path: &Path) -> bool {
        let argv = [OsStr::new("test"), OsStr::new(flag), path.as_os_str()];
        match self.host.run(&argv, &[], PROBE_TIMEOUT) {
            Ok(out) => out.status.success(),
            Err(e) => {
                tracing::warn!("{}: test {flag} {}: {e}", self.here(), path.display());
                false
            }
        }
    }

    /// Runs `sftsan snapshot VERB SPEC NODE INDEX` on the host, again while another
    /// sftsan there holds the state lock (up to [`LOCK_WAIT`]); returns its stdout.
    fn snapshot(&self, verb: &str, node: &str, index: u32) -> Result<String> {
        let what = format!("{}: {node}/snapshot/{index}", self.here());
        if node != self.node {
            return Err(Error::invalid(what, "is not this host's node"));
        }
        let index_text = index.to_string();
        let argv = [
            OsStr::new(&self.program),
            OsStr::new("snapshot"),
            OsStr::new(verb),
            self.spec.as_os_str(),
            OsStr::new(node),
            OsStr::new(&index_text),
        ];
        let _one = self.one_at_a_time.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = Instant::now() + LOCK_WAIT;
        loop {
            let out = self
                .host
                .run(&argv, &[], SNAPSHOT_TIMEOUT)
                .map_err(|e| e.context(&what))?;
            if out.status.success() {
                return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
            }
            let said = last_line(&out.stderr);
            if said.contains(LOCK_HELD) && Instant::now() < deadline {
                tracing::debug!("{what}: waiting for the host's state lock ({said})");
                std::thread::sleep(Duration::from_millis(200));
                continue;
            }
            return Err(Error::Command {
                argv: vec![format!("sftsan snapshot {verb}")],
                status: out.status.to_string(),
                stderr: said,
            }
            .context(what));
        }
    }
}

impl Snapshots for HostSnapshots<'_> {
    fn ensure(&self, node: &str, index: u32) -> Result<PathBuf> {
        let printed = self.snapshot("create", node, index)?;
        Ok(PathBuf::from(printed.trim_end_matches('\n')))
    }

    fn remove(&self, node: &str, index: u32) -> Result<bool> {
        let existed = self.exists(node, index);
        self.snapshot("remove", node, index)?;
        Ok(existed)
    }

    fn exists(&self, node: &str, index: u32) -> bool {
        self.test("-e", &self.plan.vm_disk_path(node, index))
    }

    fn dir_exists(&self, dir: &Path) -> bool {
        self.test("-d", dir)
    }

    fn made_by_hook(&self) -> bool {
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sftsan_core::transport::ssh::{HostKeys, SshOptions};

    fn dest(host: &str, user: Option<&str>, port: Option<u16>) -> SshDestination {
        SshDestination {
            host: host.into(),
            user: user.map(String::from),
            port,
            identity_file: Some("/etc/sftsan/id ed+25519&x".into()),
        }
    }

    #[test]
    fn uris_name_the_host_and_carry_the_key_and_the_wrapper_as_one_value_each() {
        let d = dest("10.0.0.2", Some("root"), None);
        assert_eq!(shown_uri(&d), "qemu+ssh://root@10.0.0.2/system");
        assert_eq!(
            libvirt_uri(&d, Path::new("/run/sftsan-vm.x/ssh-n1")),
            "qemu+ssh://root@10.0.0.2/system?command=/run/sftsan-vm.x/ssh-n1&keyfile=/etc/sftsan/id%20ed%2B25519%26x"
        );
        let d = dest("fd00::2", None, Some(2222));
        assert_eq!(shown_uri(&d), "qemu+ssh://[fd00::2]:2222/system");
        let d = dest("n1.mgmt.example", Some("ops"), Some(22));
        assert_eq!(shown_uri(&d), "qemu+ssh://ops@n1.mgmt.example:22/system");
    }

    /// The wrapper runs ssh with sftsan's options first (strict host keys against its
    /// known_hosts, its master connection), then whatever libvirt passes, word for word.
    #[test]
    fn the_wrapper_runs_ssh_with_sftsans_options_then_libvirts() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in `ssh` first on PATH that prints its arguments, one per line.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let fake = bin.join("ssh");
        std::fs::write(&fake, "#!/bin/sh\nprintf '%s\\n' \"$@\"\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let host = SshHost::new(
            dest("10.0.0.2", Some("root"), Some(2222)),
            SshOptions {
                known_hosts: "/var/lib/sftsan/it's known_hosts".into(),
                control_dir: "/run/sftsan-ssh.x".into(),
                connect_timeout: Duration::from_secs(5),
                host_keys: HostKeys::Strict,
            },
        );
        let wrappers = SshWrappers::new().unwrap();
        let script = wrappers.write("n1", &host).unwrap();
        let mode = std::fs::metadata(&script).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let libvirt_args = ["-p", "2222", "-T", "--", "10.0.0.2", "sh", "-c", "a 'b' $c"];
        let out = std::process::Command::new(&script)
            .args(libvirt_args)
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        let got: Vec<String> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(String::from)
            .collect();
        let mut want: Vec<String> = host
            .client_options()
            .iter()
            .map(|o| o.to_string_lossy().into_owned())
            .collect();
        assert!(
            want.contains(&"StrictHostKeyChecking=yes".to_string())
                && want.contains(&"UserKnownHostsFile=/var/lib/sftsan/it's known_hosts".into())
                && want.contains(&"BatchMode=yes".into()),
            "{want:?}"
        );
        want.extend(libvirt_args.iter().map(|a| a.to_string()));
        assert_eq!(got, want);
        drop(wrappers);
        assert!(!script.exists(), "the wrappers go with their directory");
    }
}
