//! `sftsan up|down|status SPEC` as an operator runs them, each bounded in time: a command
//! stuck on a wedged daemon is killed at its deadline and reported, never waited for.

use anyhow::{Context, Result};
use serde::Serialize;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// How one command ended.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Exited 0 before its deadline.
    pub ok: bool,
    /// Killed at its deadline.
    pub timed_out: bool,
    pub seconds: f64,
    /// Its last stderr line (the error, or the summary).
    pub message: String,
    #[serde(skip)]
    pub stdout: String,
}

/// The `sftsan` program and one cluster's spec.
#[derive(Debug, Clone)]
pub struct Cli {
    pub program: PathBuf,
    pub spec: PathBuf,
}

impl Cli {
    /// `sftsan ARGS... SPEC`, killed after `timeout`.
    pub fn run(&self, args: &[&str], timeout: Duration) -> Result<Outcome> {
        run_bounded(
            Command::new(&self.program).args(args).arg(&self.spec),
            timeout,
        )
        .with_context(|| format!("sftsan {}", args.join(" ")))
    }
}

/// Runs `cmd` with its output captured; kills it (by its pid) once `timeout` passed.
pub fn run_bounded(cmd: &mut Command, timeout: Duration) -> Result<Outcome> {
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start it")?;
    // Pipes drain on threads of their own, so a chatty command never blocks on them.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_string(&mut text);
            }
            text
        })
    };
    let out = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let pid = child.id() as i32;
    let exited = sftsan_core::process::exited_within(pid, timeout);
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().context("waiting for it")?;
    let seconds = started.elapsed().as_secs_f64();
    // A killed command's helpers may still hold its pipes: its output is not waited for.
    let (stdout, stderr) = if exited {
        (
            out.join().unwrap_or_default(),
            err.join().unwrap_or_default(),
        )
    } else {
        (String::new(), String::new())
    };
    Ok(Outcome {
        ok: exited && status.success(),
        timed_out: !exited,
        seconds,
        message: if exited {
            last_line(&stderr)
        } else {
            format!("still running after {} s; killed", timeout.as_secs())
        },
        stdout,
    })
}

/// The last non-empty line of a command's output.
pub fn last_line(text: &str) -> String {
    text.lines()
        .rfind(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
        .to_string()
}

/// The `sftsan` program to measure: `--sftsan`, else this executable (`sftsan bench`).
pub fn program(given: Option<&Path>) -> Result<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None => std::env::current_exe().context("finding this program"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_command_past_its_deadline_is_killed_and_reported() {
        let o = run_bounded(Command::new("sleep").arg("30"), Duration::from_millis(200)).unwrap();
        assert!(o.timed_out && !o.ok, "{o:?}");
        assert!(o.seconds < 10.0, "{o:?}");
    }

    #[test]
    fn a_quick_command_gives_its_output() {
        let o = run_bounded(Command::new("echo").arg("out"), Duration::from_secs(30)).unwrap();
        assert!(o.ok && !o.timed_out, "{o:?}");
        assert_eq!(o.stdout, "out\n");
        let o = run_bounded(
            Command::new("ls").arg("/nonexistent/sftsan-faults"),
            Duration::from_secs(30),
        )
        .unwrap();
        assert!(!o.ok && !o.timed_out, "{o:?}");
        assert!(o.message.contains("/nonexistent/sftsan-faults"), "{o:?}");
    }
}
