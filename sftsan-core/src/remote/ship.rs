//! Installing the controller's own sftsan on a host that lacks it or runs another version,
//! at a content-addressed path (`<install_dir>/sftsan-<sha256>`): a host never runs a
//! stale copy, and two versions can sit side by side during an upgrade. The copy needs the
//! host to have the libraries a package would declare (the same distribution); the .deb is
//! the way to prepare hosts, this the fallback that keeps versions in step.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::transport::ssh::SshHost;

/// Where shipped copies go unless `ssh.install_dir` says otherwise.
pub const DEFAULT_INSTALL_DIR: &str = "/var/lib/sftsan/bin";
/// Longest a copy of the program may take to reach a host.
const COPY_TIMEOUT: Duration = Duration::from_secs(600);
/// Longest a small remote command (mkdir, chmod, mv, sha256sum) may take.
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// This program's file and its sha256 (hex), hashed once per process.
fn controller_binary() -> Result<&'static (PathBuf, String)> {
    static BINARY: OnceLock<std::result::Result<(PathBuf, String), String>> = OnceLock::new();
    BINARY
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| format!("this program: {e}"))?;
            let mut file =
                std::fs::File::open(&exe).map_err(|e| format!("{}: {e}", exe.display()))?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match file.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => hasher.update(&buf[..n]),
                    Err(e) => return Err(format!("{}: {e}", exe.display())),
                }
            }
            Ok((exe, format!("{:x}", hasher.finalize())))
        })
        .as_ref()
        .map_err(|why| Error::unsupported("shipping sftsan to a host", why.clone()))
}

/// Makes sure the host has this program at its content-addressed path under
/// `install_dir`, copying it there if not; returns that path.
pub fn ship(host: &SshHost, install_dir: &Path) -> Result<PathBuf> {
    let (exe, sha) = controller_binary()?;
    let target = install_dir.join(format!("sftsan-{sha}"));
    if remote_sha256(host, &target)?.as_deref() == Some(sha.as_str()) {
        return Ok(target);
    }
    let partial = install_dir.join(format!(".sftsan-{sha}.{}.part", std::process::id()));
    let bytes = std::fs::read(exe).map_err(|e| Error::io(exe, e))?;
    must(
        host,
        &["mkdir".into(), "-p".into(), install_dir.into()],
        &[],
    )?;
    let mut of = OsString::from("of=");
    of.push(&partial);
    let copied = must_within(
        host,
        &["dd".into(), of, "bs=1M".into(), "status=none".into()],
        &bytes,
        COPY_TIMEOUT,
    )
    .and_then(|_| {
        must(
            host,
            &["chmod".into(), "0755".into(), partial.clone().into()],
            &[],
        )
    })
    .and_then(|_| match remote_sha256(host, &partial)? {
        Some(got) if got == *sha => Ok(()),
        got => Err(Error::corrupt(
            format!("the copy of sftsan on {}", host.destination()),
            format!("sha256 {} instead of {sha}", got.unwrap_or_default()),
        )),
    })
    .and_then(|_| {
        must(
            host,
            &[
                "mv".into(),
                "-f".into(),
                partial.clone().into(),
                target.clone().into(),
            ],
            &[],
        )
    });
    if let Err(e) = copied {
        let _ = host.run(
            &["rm".into(), "-f".into(), OsString::from(&partial)],
            &[],
            STEP_TIMEOUT,
        );
        return Err(e);
    }
    Ok(target)
}

/// The sha256 of a file on the host, or `None` when there is no such file.
fn remote_sha256(host: &SshHost, path: &Path) -> Result<Option<String>> {
    let out = host.run(
        &["sha256sum".into(), OsString::from(path)],
        &[],
        STEP_TIMEOUT,
    )?;
    if !out.status.success() {
        return Ok(None);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.split_whitespace().next().map(str::to_string))
}

fn must(host: &SshHost, argv: &[OsString], input: &[u8]) -> Result<()> {
    must_within(host, argv, input, STEP_TIMEOUT)
}

/// Runs `argv` on the host; a non-zero exit is an [`Error::Command`] naming it.
fn must_within(host: &SshHost, argv: &[OsString], input: &[u8], timeout: Duration) -> Result<()> {
    let out = host.run(argv, input, timeout)?;
    if out.status.success() {
        return Ok(());
    }
    Err(Error::Command {
        argv: std::iter::once(format!("ssh {}", host.destination()))
            .chain(argv.iter().map(|a| a.to_string_lossy().into_owned()))
            .collect(),
        status: out.status.to_string(),
        stderr: crate::transport::last_line(&out.stderr),
    })
}
