//! How a node's commands reach it: this process's namespaces, a network namespace, or
//! another host over SSH. Commands are argument vectors, never shell strings.

mod local;
mod netns;
pub mod ssh;

pub use local::LocalTransport;
pub use netns::NetnsTransport;

use serde::{Deserialize, Serialize};
use std::ffi::OsStr;
use std::net::SocketAddr;
use std::process::{Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};

/// Where a node's commands run.
pub trait Transport: Send + Sync + std::fmt::Debug {
    /// A command for `program`, set up to run in this transport's context.
    fn command(&self, program: &str) -> Command;

    /// Opens and closes a TCP connection to `addr` from the node's network context.
    fn probe_tcp(&self, addr: SocketAddr, timeout: Duration) -> std::io::Result<()>;

    /// Short description for messages, e.g. `netns sftsan-demo-n3`.
    fn describe(&self) -> String;
}

/// How the journal records a node's transport, so teardown needs no spec.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum TransportSpec {
    /// Commands run in this process's own namespaces ([`LocalTransport`]).
    Local,
    /// Commands run in a named network namespace ([`NetnsTransport`]).
    Netns {
        /// The namespace's name under `/var/run/netns`, e.g. `sftsan-demo-n3`.
        name: String,
    },
}

impl TransportSpec {
    /// The transport this spec describes, ready to run commands.
    pub fn open(&self) -> Arc<dyn Transport> {
        match self {
            TransportSpec::Local => Arc::new(LocalTransport),
            TransportSpec::Netns { name } => Arc::new(NetnsTransport::new(name)),
        }
    }
}

/// Runs `program args...` through `transport` to completion; a non-zero exit is an
/// [`Error::Command`] carrying the argv (secrets masked) and the program's last stderr line.
pub fn run<I, S>(transport: &dyn Transport, program: &str, args: I) -> Result<Output>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let args: Vec<S> = args.into_iter().collect();
    let mut cmd = transport.command(program);
    cmd.args(&args).stdin(Stdio::null());
    let argv: Vec<String> = std::iter::once(program.to_string())
        .chain(redacted(args.iter().map(|a| a.as_ref().to_string_lossy())))
        .collect();
    tracing::debug!(target: "sftsan::cmd", "{}: {argv:?}", transport.describe());
    let out = cmd.output().map_err(|e| spawn_error(program, e))?;
    if !out.status.success() {
        return Err(Error::Command {
            argv,
            status: out.status.to_string(),
            stderr: last_line(&out.stderr),
        });
    }
    Ok(out)
}

/// The last line of a program's error output that says something (trimmed); empty when
/// there is none. Errors carry it as the reason a program gave.
pub fn last_line(stderr: &[u8]) -> String {
    String::from_utf8_lossy(stderr)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// A program that could not be started: missing from this host, or refused by the system.
pub fn spawn_error(program: &str, e: std::io::Error) -> Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        Error::unsupported(program, "not installed on this host (cannot run it)")
    } else {
        Error::io(program, e)
    }
}

/// Arguments for a log line, with the value of every `--password` (tgtadm's CHAP
/// secrets) masked.
fn redacted<'a>(args: impl Iterator<Item = std::borrow::Cow<'a, str>>) -> Vec<String> {
    let mut after_password = false;
    args.map(|a| {
        let shown = if after_password {
            "********".to_string()
        } else {
            a.to_string()
        };
        after_password = a == "--password";
        shown
    })
    .collect()
}

/// Like [`run`] but returns stdout as text.
pub fn run_stdout<I, S>(transport: &dyn Transport, program: &str, args: I) -> Result<String>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    run(transport, program, args).map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_never_reach_the_log() {
        let args = [
            "--op",
            "new",
            "--user",
            "n1",
            "--password",
            "s3cret",
            "--lld",
            "iscsi",
        ];
        let shown = redacted(args.iter().map(|a| std::borrow::Cow::Borrowed(*a)));
        assert_eq!(
            shown,
            [
                "--op",
                "new",
                "--user",
                "n1",
                "--password",
                "********",
                "--lld",
                "iscsi"
            ]
        );
    }
}
