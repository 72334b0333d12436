//! Commands on another host through the system's OpenSSH client, so that ~/.ssh/config,
//! agents, jump hosts and keys work as they do for the operator. One master connection per
//! host carries every command of a run (ControlMaster); nothing ever prompts (BatchMode);
//! host keys are checked against sftsan's own known_hosts file only.
//!
//! The remote side receives one command line that its shell splits into words: every word
//! is single-quoted here, so no text from a spec is ever shell code there. Secrets go on
//! stdin, never on a command line.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::last_line;
use crate::error::{Error, Result};

/// Where, and as whom, the controller logs in to one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SshDestination {
    /// Host name or address ssh connects to.
    pub host: String,
    /// User to log in as; `None` leaves it to ~/.ssh/config or ssh.
    pub user: Option<String>,
    /// Port; `None` leaves it to ~/.ssh/config or 22.
    pub port: Option<u16>,
    /// Private key to log in with.
    pub identity_file: Option<PathBuf>,
}

impl std::fmt::Display for SshDestination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(user) = &self.user {
            write!(f, "{user}@")?;
        }
        match (self.host.contains(':'), self.port) {
            (true, Some(port)) => write!(f, "[{}]:{port}", self.host),
            (false, Some(port)) => write!(f, "{}:{port}", self.host),
            (_, None) => write!(f, "{}", self.host),
        }
    }
}

/// What ssh does with a host whose key is not in the known_hosts file yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HostKeys {
    /// Refuse it: the operator trusts hosts explicitly (`sftsan hosts trust`).
    Strict,
    /// Add it (the explicit trust step); a changed key is refused all the same.
    AcceptNew,
}

/// Settings shared by every host of one run.
#[derive(Debug, Clone)]
pub struct SshOptions {
    /// The known_hosts file sftsan keeps for the cluster.
    pub known_hosts: PathBuf,
    /// A private (0700) directory for the master connections' sockets; short, since a
    /// socket path has at most 107 bytes.
    pub control_dir: PathBuf,
    /// How long connecting to a host may take.
    pub connect_timeout: Duration,
    /// What to do with a host key not seen before.
    pub host_keys: HostKeys,
}

/// One host reached over SSH.
#[derive(Debug, Clone)]
pub struct SshHost {
    dest: SshDestination,
    options: SshOptions,
}

/// ssh's exit status when ssh itself failed (connecting, authenticating, a host key).
const SSH_FAILED: i32 = 255;

impl SshHost {
    /// A host at `dest`; nothing connects until a command runs.
    pub fn new(dest: SshDestination, options: SshOptions) -> SshHost {
        SshHost { dest, options }
    }

    /// The destination, for messages.
    pub fn destination(&self) -> &SshDestination {
        &self.dest
    }

    /// Opens the master connection that every later command of this run shares (the
    /// first command over it is `true`); an error names the host and says why: refused,
    /// host key, permission.
    pub fn connect(&self) -> Result<()> {
        // ConnectTimeout bounds reaching the host; key exchange, login and the first
        // command get this much more (many hosts at once keep a controller busy).
        let deadline = self.options.connect_timeout + Duration::from_secs(30);
        let out = self.run(&["true"], &[], deadline)?;
        if !out.status.success() {
            return Err(Error::unreachable(
                format!("ssh {}", self.dest),
                format!("`true` failed there ({})", out.status),
            ));
        }
        Ok(())
    }

    /// Runs `argv` on the host with `input` on its standard input and waits at most
    /// `timeout`, returning whatever the remote program exited with. ssh's own failure
    /// (exit 255: connecting, authenticating, a host key) is [`Error::Unreachable`] naming
    /// the host; running out of time is [`Error::Timeout`].
    pub fn run<S: AsRef<OsStr>>(
        &self,
        argv: &[S],
        input: &[u8],
        timeout: Duration,
    ) -> Result<Output> {
        self.finish(self.command(argv), input, timeout)
    }

    /// The local ssh command that runs `argv` on the host (for callers that stream its
    /// output). Its exit status is the remote program's, or 255 when ssh failed.
    pub fn command<S: AsRef<OsStr>>(&self, argv: &[S]) -> Command {
        // The first command to a host becomes its master and goes to the background
        // (with its stdio on /dev/null), serving the others; it ends with `close`, or
        // after a minute without use if the controller could not close it.
        let mut cmd = self.ssh(&["-o", "ControlMaster=auto", "-o", "ControlPersist=60"]);
        cmd.arg("--")
            .arg(&self.dest.host)
            .arg(remote_command_line(argv));
        cmd
    }

    /// The options sftsan gives ssh for this host, everything before the destination:
    /// BatchMode, host keys checked only against sftsan's known_hosts, the shared master
    /// connection, the destination's user, port and key. For a program that runs ssh to
    /// the host itself (libvirt's qemu+ssh transport, through a wrapper that adds these),
    /// so that its connection is checked as strictly and rides the same master.
    pub fn client_options(&self) -> Vec<OsString> {
        let cmd = self.command::<&str>(&[]);
        cmd.get_args()
            .take_while(|a| *a != "--")
            .map(OsStr::to_os_string)
            .collect()
    }

    /// Ends the master connection, if one is open.
    pub fn close(&self) {
        let mut cmd = self.ssh(&["-O", "exit"]);
        cmd.arg("--").arg(&self.dest.host);
        let _ = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }

    /// ssh with the options every call shares, then `extra`.
    fn ssh(&self, extra: &[&str]) -> Command {
        let o = &self.options;
        let mut cmd = Command::new("ssh");
        let strict = match o.host_keys {
            HostKeys::Strict => "yes",
            HostKeys::AcceptNew => "accept-new",
        };
        let option = |name: &str, value: &OsStr| {
            let mut s = OsString::from(format!("{name}="));
            s.push(value);
            [OsString::from("-o"), s]
        };
        cmd.args(["-o", "BatchMode=yes"])
            .args(option("StrictHostKeyChecking", strict.as_ref()))
            .args(option("UserKnownHostsFile", o.known_hosts.as_os_str()))
            .args(["-o", "GlobalKnownHostsFile=/dev/null"])
            .args(["-o", "UpdateHostKeys=no"])
            .args(["-o", "HashKnownHosts=no"])
            .args(option("ControlPath", o.control_dir.join("%C").as_os_str()))
            .args(option(
                "ConnectTimeout",
                o.connect_timeout.as_secs().max(1).to_string().as_ref(),
            ))
            // A host that stops answering is noticed within 15 s, not at TCP's timeout.
            .args(["-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"])
            .args(["-o", "LogLevel=ERROR"]);
        if let Some(user) = &self.dest.user {
            cmd.arg("-l").arg(user);
        }
        if let Some(port) = self.dest.port {
            cmd.arg("-p").arg(port.to_string());
        }
        if let Some(key) = &self.dest.identity_file {
            cmd.arg("-i").arg(key).args(["-o", "IdentitiesOnly=yes"]);
        }
        cmd.args(extra);
        cmd
    }

    /// Runs `cmd` with `input` on its stdin, collecting its output, for at most `timeout`.
    fn finish(&self, mut cmd: Command, input: &[u8], timeout: Duration) -> Result<Output> {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| super::spawn_error("ssh", e))?;
        let out = collect(&mut child, input, timeout);
        let out = match out {
            Some(out) => out,
            None => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(Error::timeout(
                    format!("ssh {}", self.dest),
                    format!("no answer within {} s", timeout.as_secs()),
                ));
            }
        };
        if out.status.code() == Some(SSH_FAILED) {
            let why = last_line(&out.stderr);
            // ssh also exits 255 when the remote program died of a signal: with the
            // connection still up, that is what happened.
            if self.master_alive() {
                return Err(Error::Command {
                    argv: vec![format!("ssh {}", self.dest)],
                    status: "ended by a signal on the host (or exit 255)".into(),
                    stderr: why,
                });
            }
            return Err(Error::unreachable(format!("ssh {}", self.dest), why));
        }
        Ok(out)
    }

    /// Whether this host's master connection is up (`ssh -O check`).
    fn master_alive(&self) -> bool {
        let mut cmd = self.ssh(&["-O", "check"]);
        cmd.arg("--")
            .arg(&self.dest.host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        cmd.status().is_ok_and(|s| s.success())
    }
}

/// Feeds `input`, reads stdout and stderr to their end and waits for the child, all within
/// `timeout`; `None` when the time ran out first.
fn collect(child: &mut Child, input: &[u8], timeout: Duration) -> Option<Output> {
    let stdin = child.stdin.take();
    let mut stdout = child.stdout.take()?;
    let mut stderr = child.stderr.take()?;
    let pid = child.id() as i32;
    std::thread::scope(|s| {
        s.spawn(move || {
            // Dropping the pipe afterwards is the remote program's end of input.
            if let Some(mut w) = stdin {
                let _ = w.write_all(input);
            }
        });
        let out = s.spawn(move || {
            let mut buf = Vec::new();
            let _ = stdout.read_to_end(&mut buf);
            buf
        });
        let err = s.spawn(move || {
            let mut buf = Vec::new();
            let _ = stderr.read_to_end(&mut buf);
            buf
        });
        if !crate::process::exited_within(pid, timeout) {
            // Killing ssh closes the pipes, so the readers end too.
            crate::process::signal(pid, libc::SIGKILL).ok();
            let _ = (out.join(), err.join());
            return None;
        }
        let status = child.wait().ok()?;
        Some(Output {
            status,
            stdout: out.join().unwrap_or_default(),
            stderr: err.join().unwrap_or_default(),
        })
    })
}

/// The command line a POSIX shell splits back into exactly `argv`.
pub fn remote_command_line<S: AsRef<OsStr>>(argv: &[S]) -> OsString {
    let words: Vec<Vec<u8>> = argv.iter().map(|w| quote(w.as_ref())).collect();
    OsString::from_vec(words.join(&b' '))
}

/// `word` in single quotes, each `'` in it written as `'\''`: the shell takes all of it
/// literally, whatever bytes it holds.
pub fn quote(word: &OsStr) -> Vec<u8> {
    let mut out = Vec::with_capacity(word.len() + 2);
    out.push(b'\'');
    for &b in word.as_bytes() {
        if b == b'\'' {
            out.extend_from_slice(b"'\\''");
        } else {
            out.push(b);
        }
    }
    out.push(b'\'');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A real shell splits the line back into the very words, however hostile.
    #[test]
    fn a_shell_splits_the_command_line_into_the_words() {
        let words: Vec<OsString> = [
            "sftsan",
            "it's",
            "$(touch /tmp/pwned)",
            "`id`",
            "a b\tc\nd",
            "; rm -rf /",
            "",
            "'\\''",
            "*",
            "~root",
        ]
        .iter()
        .map(OsString::from)
        .chain([OsString::from_vec(vec![0xff, b'x', 0xfe])])
        .collect();
        let line = remote_command_line(&words);
        // sh prints each word it received, NUL-terminated.
        let mut script = OsString::from("for w in ");
        script.push(&line);
        script.push("; do printf '%s\\0' \"$w\"; done");
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success());
        let got: Vec<OsString> = out
            .stdout
            .split(|b| *b == 0)
            .map(|w| OsString::from_vec(w.to_vec()))
            .collect();
        let mut expected = words.clone();
        expected.push(OsString::new()); // after the last NUL
        assert_eq!(got, expected);
    }

    #[test]
    fn options_come_before_the_destination_and_the_command_after_it() {
        let host = SshHost::new(
            SshDestination {
                host: "node1.example".into(),
                user: Some("ops".into()),
                port: Some(2222),
                identity_file: Some("/etc/sftsan/id".into()),
            },
            SshOptions {
                known_hosts: "/var/lib/sftsan/known_hosts".into(),
                control_dir: "/run/sftsan-ssh.x".into(),
                connect_timeout: Duration::from_secs(7),
                host_keys: HostKeys::Strict,
            },
        );
        let cmd = host.command(&["sftsan", "--version"]);
        let args: Vec<String> = cmd
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        let at = |s: &str| args.iter().position(|a| a == s).unwrap_or(usize::MAX);
        assert_eq!(args[at("--") + 1], "node1.example");
        assert_eq!(args[at("--") + 2], "'sftsan' '--version'");
        assert_eq!(args.len(), at("--") + 3);
        for wanted in [
            "BatchMode=yes",
            "StrictHostKeyChecking=yes",
            "UserKnownHostsFile=/var/lib/sftsan/known_hosts",
            "ControlPath=/run/sftsan-ssh.x/%C",
            "ConnectTimeout=7",
            "ControlMaster=auto",
        ] {
            assert!(at(wanted) < at("--"), "{wanted} in {args:?}");
        }
        assert_eq!(args[at("-l") + 1], "ops");
        assert_eq!(args[at("-p") + 1], "2222");
        assert_eq!(args[at("-i") + 1], "/etc/sftsan/id");
        // What another program's ssh is given: the same options, without the destination.
        let options: Vec<String> = host
            .client_options()
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert_eq!(options, args[..at("--")]);
    }
}
