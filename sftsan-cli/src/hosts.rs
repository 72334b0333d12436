//! `sftsan hosts ...` (the controller's view of a remote cluster's hosts) and `sftsan host
//! ...` (what a host runs when the controller asks over SSH).

use std::fmt::Write as _;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::Subcommand;
use sftsan_core::remote::host::{serve, Emit, HostEvent, HostRequest};
use sftsan_core::remote::{self, facts, Fleet, HostCheck, Remote};
use sftsan_core::resources::Tools;
use sftsan_core::stdio::out;
use sftsan_core::transport::ssh::HostKeys;
use sftsan_core::{errln, outln};

/// The hosts of a remote cluster (`cluster.mode = "remote"`).
#[derive(Subcommand)]
pub enum HostsCommand {
    /// First contact: learn each host's SSH key into the cluster's known_hosts (a key that
    /// changed is refused), and print the fingerprints to compare with the hosts' own.
    Trust { spec: PathBuf },
    /// One row per host: SSH, sftsan, the programs and kernel features its part needs,
    /// free space for its cache, clock skew. Exits 1 when a host is not ready.
    Check {
        spec: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

/// What a host runs for the controller (over SSH; not for operators).
#[derive(Subcommand)]
pub enum HostCommand {
    /// Reads a facts request (JSON) on stdin, writes this host's facts (JSON).
    Facts,
    /// Reads a request (JSON) on stdin, brings this host's node up or down or observes
    /// it, and writes every step and the outcome as JSON lines.
    Apply,
}

/// What the controller does with a remote cluster.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum RemoteAction {
    /// `sftsan up`.
    Up,
    /// `sftsan down`.
    Down,
    /// `sftsan status`.
    Status {
        /// As JSON.
        json: bool,
    },
    /// `sftsan verify`.
    Verify {
        /// Which VM disk every node reads.
        snapshot: u32,
    },
}

/// `up`, `down` or `status` of a remote cluster, each host over SSH; false when a host
/// failed. `up` first checks every host and changes nothing unless all are ready.
pub fn run_remote(path: &Path, action: RemoteAction) -> Result<bool> {
    let (text, spec) = super::load_rules(path)?;
    let fleet = Fleet::open(&spec, HostKeys::Strict)?;
    let rows = remote::check(&spec, &fleet);
    let not_ready: Vec<&HostCheck> = rows.iter().filter(|r| !r.ready()).collect();
    if action == RemoteAction::Up && !not_ready.is_empty() {
        for r in &not_ready {
            errln!(
                "sftsan: {} ({}): {}",
                r.node,
                r.destination,
                r.problems.join("; ")
            );
        }
        anyhow::bail!(
            "{} of {} hosts are not ready (sftsan hosts check {}); nothing was changed",
            not_ready.len(),
            rows.len(),
            path.display()
        );
    }
    let image = remote::measured_image(&spec, &rows)?;
    let cluster = Remote::new(&text, image, &fleet, &rows)?;
    let started = std::time::Instant::now();
    let outcomes = match action {
        RemoteAction::Status { json } => {
            let st = cluster.status();
            if json {
                outln!("{}", serde_json::to_string_pretty(&st)?)?;
            } else {
                out(&super::output::status_text(&st))?;
            }
            return Ok(st.nodes.iter().all(|n| n.problems.is_empty()));
        }
        RemoteAction::Verify { snapshot } => {
            let results = cluster.verify(snapshot);
            for r in &results {
                let line = super::output::verified_line(r, "identical to its parent's export");
                outln!("{line}")?;
            }
            let failed = results.iter().filter(|r| r.error.is_some()).count();
            if failed > 0 {
                errln!(
                    "sftsan: verify: {failed} of {} nodes differ or failed",
                    results.len()
                );
            }
            return Ok(failed == 0);
        }
        RemoteAction::Up => cluster.up(&progress(fleet.hosts().count()))?,
        RemoteAction::Down => cluster.down(&progress(fleet.hosts().count()))?,
    };
    let failed: Vec<&remote::HostOutcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    for o in &failed {
        if let Err(e) = &o.result {
            errln!("sftsan: {e}");
        }
    }
    let verb = if action == RemoteAction::Up {
        "up"
    } else {
        "down"
    };
    errln!(
        "{verb}: {} of {} hosts done in {:.1}s",
        outcomes.len() - failed.len(),
        fleet.hosts().count(),
        started.elapsed().as_secs_f64()
    );
    Ok(failed.is_empty())
}

/// A line per host as it finishes, counted against all hosts: `[3/7] n2: 6 created, ...`.
fn progress(total: usize) -> impl Fn(&remote::HostOutcome) + Sync {
    let finished = std::sync::atomic::AtomicUsize::new(0);
    move |o: &remote::HostOutcome| {
        let n = finished.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let done = o.events.iter().find_map(|e| match e {
            HostEvent::Done {
                created,
                unchanged,
                removed,
            } => Some(format!(
                "{created} created, {unchanged} unchanged, {removed} removed"
            )),
            _ => None,
        });
        match (&o.result, done) {
            (Ok(()), Some(done)) => errln!("[{n}/{total}] {}: {done}", o.node),
            _ => errln!("[{n}/{total}] {}: FAILED", o.node),
        }
    }
}

/// Runs a `hosts` command; false when a host failed.
pub fn run_hosts(command: HostsCommand) -> Result<bool> {
    match command {
        HostsCommand::Trust { spec } => {
            let (_, spec) = super::load_rules(&spec)?;
            let fleet = Fleet::open(&spec, HostKeys::AcceptNew)?;
            let mut ok = true;
            for (node, known) in remote::trust(&fleet) {
                match known {
                    Ok(keys) => {
                        for key in keys {
                            outln!("{node}: {key}")?;
                        }
                    }
                    Err(e) => {
                        ok = false;
                        errln!("sftsan: {node}: {e}");
                    }
                }
            }
            outln!("known hosts: {}", fleet.known_hosts().display())?;
            Ok(ok)
        }
        HostsCommand::Check { spec, json } => {
            let (_, spec) = super::load_rules(&spec)?;
            let fleet = Fleet::open(&spec, HostKeys::Strict)?;
            let rows = remote::check(&spec, &fleet);
            if json {
                outln!("{}", serde_json::to_string_pretty(&rows)?)?;
            } else {
                out(&check_table(&rows))?;
            }
            Ok(rows.iter().all(HostCheck::ready))
        }
    }
}

/// Runs a `host` command.
pub fn run_host(command: HostCommand) -> Result<()> {
    match command {
        HostCommand::Facts => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("stdin")?;
            let request: facts::FactsRequest =
                serde_json::from_str(&input).context("facts request on stdin")?;
            outln!("{}", serde_json::to_string(&facts::gather(&request))?)?;
            Ok(())
        }
        HostCommand::Apply => {
            let mut input = String::new();
            std::io::stdin()
                .read_to_string(&mut input)
                .context("stdin")?;
            let request: HostRequest =
                serde_json::from_str(&input).context("host request on stdin")?;
            // One whole line per event; the engine reports from several threads.
            let emit: Emit = Arc::new(|e: &HostEvent| {
                let line = serde_json::to_string(e).expect("an event serializes");
                let _ = outln!("{line}");
            });
            // The keeper is this very program, whatever its name (a shipped copy's is
            // its content address).
            let mut tools = Tools::from_env();
            if let Ok(exe) = std::env::current_exe() {
                tools.sftsan = exe;
            }
            if let Err(e) = serve(&request, tools, emit.clone()) {
                emit(&HostEvent::Failed {
                    kind: format!("{:?}", e.kind()).to_lowercase(),
                    error: e.to_string(),
                });
                std::process::exit(1);
            }
            Ok(())
        }
    }
}

/// Bytes for a person to read: "42.5 GiB".
fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

/// The rows of `hosts check` as a table, then one line per problem.
fn check_table(rows: &[HostCheck]) -> String {
    let mut text = format!(
        "{:<12} {:<24} {:<8} {:<18} {:>10} {:>7}  {}\n",
        "NODE", "SSH", "SFTSAN", "KERNEL", "CACHE FREE", "SKEW", "READY"
    );
    for r in rows {
        let f = r.facts.as_ref();
        let _ = writeln!(
            text,
            "{:<12} {:<24} {:<8} {:<18} {:>10} {:>7}  {}",
            r.node,
            r.destination,
            f.map_or("-", |f| f.sftsan.as_str()),
            f.map_or("-", |f| f.kernel.as_str()),
            f.and_then(|f| f.cache_free).map_or("-".into(), human),
            r.skew_ms
                .map_or("-".into(), |s| format!("{:+.1}s", s as f64 / 1000.0)),
            if r.ready() { "yes" } else { "NO" }
        );
        if r.shipped {
            let _ = writeln!(text, "    sftsan: the controller's copy, {}", r.program);
        }
        if let Some(f) = f {
            let programs: Vec<String> = f
                .programs
                .iter()
                .map(|(p, v)| format!("{p}: {}", v.as_deref().unwrap_or("missing")))
                .collect();
            if !programs.is_empty() {
                let _ = writeln!(text, "    {}", programs.join("; "));
            }
        }
    }
    for r in rows {
        for p in &r.problems {
            let _ = writeln!(text, "{} ({}): {p}", r.node, r.destination);
        }
    }
    text
}
