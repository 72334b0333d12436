//! `sftsan hosts check`: whether every host can take its part, one row per host, gathered
//! in parallel over SSH. `up` runs it first and changes nothing when a host fails.

use std::time::Duration;

use serde::Serialize;

use super::facts::{self, HostFacts, VERSION};
use super::fleet::Fleet;
use crate::spec::ClusterSpec;
use crate::transport::ssh::SshHost;

/// Largest clock difference from the controller a host may have: logs and journals of
/// different hosts are read side by side.
const SKEW_MAX_MS: i64 = 5_000;
/// How long a host may take to gather its facts (it may load kernel modules).
const FACTS_TIMEOUT: Duration = Duration::from_secs(60);

/// One host's readiness: a row of `sftsan hosts check`.
#[derive(Debug, Clone, Serialize)]
pub struct HostCheck {
    /// The node the host runs.
    pub node: String,
    /// How the controller reaches it, e.g. `root@10.0.0.2`.
    pub destination: String,
    /// The sftsan the host runs for this cluster: `ssh.program`, or the controller's own
    /// copy when the host had none or another version.
    pub program: String,
    /// Whether the controller's copy was installed (or found) there this time.
    pub shipped: bool,
    /// What the host reported; `None` when it could not be asked.
    pub facts: Option<HostFacts>,
    /// The host's clock minus the controller's, in milliseconds.
    pub skew_ms: Option<i64>,
    /// Bytes its cache takes when full (`cache.size`; 0 on the origin, which has none).
    pub cache_needed: u64,
    /// What keeps the host from taking part, each in a few words; empty when it is ready.
    pub problems: Vec<String>,
}

impl HostCheck {
    /// Whether the host can take its part.
    pub fn ready(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks every host of `fleet`, in parallel; the rows come in the spec's order.
pub fn check(spec: &ClusterSpec, fleet: &Fleet) -> Vec<HostCheck> {
    fleet.each(|node, host| check_host(spec, node, host))
}

fn check_host(spec: &ClusterSpec, node: &str, host: &SshHost) -> HostCheck {
    let is_origin = node == spec.origin.name;
    let mut row = HostCheck {
        node: node.into(),
        destination: host.destination().to_string(),
        program: remote_program(spec),
        shipped: false,
        facts: None,
        skew_ms: None,
        cache_needed: if is_origin { 0 } else { spec.cache.size.0 },
        problems: vec![],
    };
    if let Err(e) = host.connect() {
        row.problems.push(e.to_string());
        return row;
    }
    let request = facts::request_for(spec, node);
    let mut asked = ask(host, &row.program, &request);
    if needs_our_binary(&asked) {
        match super::ship::ship(host, &install_dir(spec)) {
            Ok(path) => {
                row.program = path.display().to_string();
                row.shipped = true;
                asked = ask(host, &row.program, &request);
            }
            Err(e) => {
                row.problems.push(format!(
                    "{} there, and installing ours failed: {e}",
                    describe(&asked, &row.program)
                ));
                return row;
            }
        }
    }
    match asked {
        Asked::Facts {
            facts,
            sent,
            received,
        } => {
            let skew = skew_ms(facts.time_ms, sent, received);
            row.skew_ms = Some(skew);
            row.problems = problems(&row, &facts, skew);
            row.facts = Some(*facts);
        }
        other => row.problems.push(describe(&other, &row.program)),
    }
    row
}

/// How far a host's clock is off: its reading `host` was taken while the controller's
/// clock went from `sent` to `received`, so with equal clocks it lies in between; only
/// the distance outside that interval is skew (a slow answer under load is not).
fn skew_ms(host: u64, sent: u64, received: u64) -> i64 {
    if host < sent {
        -((sent - host) as i64)
    } else {
        host.saturating_sub(received) as i64
    }
}

/// What asking a host for its facts gave.
enum Asked {
    /// Its facts, and the controller's clock before and after asking.
    Facts {
        facts: Box<HostFacts>,
        sent: u64,
        received: u64,
    },
    /// The program is not there (the shell's "command not found").
    Missing,
    /// The program ran but gave no facts (not sftsan, or an sftsan without them).
    NoFacts(String),
    /// The host could not be asked.
    Failed(String),
}

fn ask(host: &SshHost, program: &str, request: &facts::FactsRequest) -> Asked {
    let input = serde_json::to_vec(request).expect("a request serializes");
    let sent = facts::now_ms();
    let out = match host.run(&[program, "host", "facts"], &input, FACTS_TIMEOUT) {
        Ok(out) => out,
        Err(e) => return Asked::Failed(e.to_string()),
    };
    let received = facts::now_ms();
    if out.status.code() == Some(127) {
        return Asked::Missing;
    }
    match serde_json::from_slice(&out.stdout) {
        Ok(facts) if out.status.success() => Asked::Facts {
            facts: Box::new(facts),
            sent,
            received,
        },
        _ => Asked::NoFacts(format!("{} ({})", said(&out.stderr), out.status)),
    }
}

/// What a host's program said on stderr last, or that it said nothing.
pub(super) fn said(stderr: &[u8]) -> String {
    let last = crate::transport::last_line(stderr);
    if last.is_empty() {
        "no answer".into()
    } else {
        last
    }
}

/// Whether the host should get the controller's copy: it has no sftsan where the spec
/// says, or one of another version (or one too old to answer).
fn needs_our_binary(asked: &Asked) -> bool {
    match asked {
        Asked::Missing | Asked::NoFacts(_) => true,
        Asked::Facts { facts, .. } => facts.sftsan != VERSION,
        Asked::Failed(_) => false,
    }
}

fn describe(asked: &Asked, program: &str) -> String {
    match asked {
        Asked::Missing => format!("sftsan: {program} is not installed"),
        Asked::NoFacts(why) => format!("{program} host facts failed: {why}"),
        Asked::Failed(why) => why.clone(),
        Asked::Facts { facts, .. } => format!("{program} is sftsan {}", facts.sftsan),
    }
}

/// Where copies of the controller's sftsan go on the hosts (`ssh.install_dir`).
fn install_dir(spec: &ClusterSpec) -> std::path::PathBuf {
    spec.ssh
        .as_ref()
        .and_then(|s| s.install_dir.clone())
        .unwrap_or_else(|| super::ship::DEFAULT_INSTALL_DIR.into())
}

/// What the facts say is wrong with the host.
fn problems(row: &HostCheck, facts: &HostFacts, skew_ms: i64) -> Vec<String> {
    let mut problems = vec![];
    if !facts.root {
        problems.push(
            "the login is not root: sftsan sets up daemons, addresses and block devices there"
                .into(),
        );
    }
    if facts.sftsan != VERSION {
        problems.push(format!(
            "runs sftsan {}, the controller {VERSION}",
            facts.sftsan
        ));
    }
    for (program, version) in &facts.programs {
        // libvirt serves the host's VMs, not the cluster: its absence shows, but is no failure.
        if version.is_none() && program != "libvirtd" {
            problems.push(format!("{program} is not installed"));
        }
    }
    if let Some(missing) = &facts.kernel_missing {
        problems.push(missing.clone());
    }
    if let Some(Err(why)) = &facts.image {
        problems.push(why.clone());
    }
    let free = facts.cache_free.unwrap_or(0);
    let wanted = row.cache_needed.saturating_sub(facts.cache_used);
    if free < wanted {
        problems.push(format!(
            "{} free for the cache, {} needed",
            crate::spec::ByteSize(free),
            crate::spec::ByteSize(wanted)
        ));
    }
    if skew_ms.abs() > SKEW_MAX_MS {
        problems.push(format!(
            "its clock is {:.1} s {} the controller's",
            skew_ms.abs() as f64 / 1000.0,
            if skew_ms > 0 { "ahead of" } else { "behind" }
        ));
    }
    problems
}

/// The sftsan program the hosts run (`ssh.program`), as the remote shell finds it.
pub fn remote_program(spec: &ClusterSpec) -> String {
    spec.ssh
        .as_ref()
        .and_then(|s| s.program.as_ref())
        .map_or_else(|| "sftsan".into(), |p| p.to_string_lossy().into_owned())
}

/// Learns the key of every host not known yet (the explicit first contact), and returns
/// each host's known key fingerprints, or why it could not be reached. A key that changed
/// is refused, never replaced.
pub fn trust(fleet: &Fleet) -> Vec<(String, crate::error::Result<Vec<String>>)> {
    if let Some(dir) = fleet.known_hosts().parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    fleet.each(|node, host| {
        let known = host
            .connect()
            .and_then(|()| fingerprints(fleet.known_hosts(), host));
        (node.to_string(), known)
    })
}

/// `ssh-keygen -l -F HOST -f KNOWN_HOSTS`: the fingerprints known for the host.
fn fingerprints(
    known_hosts: &std::path::Path,
    host: &SshHost,
) -> crate::error::Result<Vec<String>> {
    let dest = host.destination();
    let pattern = match dest.port {
        Some(port) if port != 22 => format!("[{}]:{port}", dest.host),
        _ => dest.host.clone(),
    };
    let out = std::process::Command::new("ssh-keygen")
        .args(["-l", "-F", &pattern, "-f"])
        .arg(known_hosts)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| crate::transport::spawn_error("ssh-keygen", e))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split_whitespace().skip(1).collect::<Vec<_>>().join(" "))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ready_facts() -> HostFacts {
        HostFacts {
            sftsan: VERSION.into(),
            root: true,
            hostname: "h".into(),
            kernel: "6.1".into(),
            time_ms: 0,
            programs: vec![("qemu-storage-daemon".into(), Some("10.0".into()))],
            kernel_missing: None,
            cache_free: Some(1 << 30),
            cache_used: 0,
            image: None,
        }
    }

    fn row() -> HostCheck {
        HostCheck {
            node: "n1".into(),
            destination: "root@h".into(),
            program: "sftsan".into(),
            shipped: false,
            facts: None,
            skew_ms: None,
            cache_needed: 1 << 20,
            problems: vec![],
        }
    }

    #[test]
    fn a_host_without_our_version_gets_our_copy() {
        let with = |sftsan: &str| Asked::Facts {
            facts: Box::new(HostFacts {
                sftsan: sftsan.into(),
                ..ready_facts()
            }),
            sent: 0,
            received: 0,
        };
        assert!(!needs_our_binary(&with(VERSION)));
        assert!(needs_our_binary(&with("0.0.1")));
        assert!(needs_our_binary(&Asked::Missing));
        assert!(needs_our_binary(&Asked::NoFacts("unknown command".into())));
        assert!(!needs_our_binary(&Asked::Failed("unreachable".into())));
    }

    #[test]
    fn skew_is_only_what_lies_outside_the_round_trip() {
        assert_eq!(skew_ms(15_000, 10_000, 20_000), 0, "a slow answer");
        assert_eq!(skew_ms(26_000, 10_000, 20_000), 6_000);
        assert_eq!(skew_ms(3_000, 10_000, 20_000), -7_000);
    }

    #[test]
    fn a_ready_host_has_no_problem() {
        assert!(problems(&row(), &ready_facts(), 0).is_empty());
    }

    /// Each thing that keeps a host out is one problem, named.
    #[test]
    fn what_keeps_a_host_out_is_named() {
        let cases: Vec<(HostFacts, i64, &str)> = vec![
            (
                HostFacts {
                    root: false,
                    ..ready_facts()
                },
                0,
                "not root",
            ),
            (
                HostFacts {
                    sftsan: "0.0.1".into(),
                    ..ready_facts()
                },
                0,
                "runs sftsan 0.0.1",
            ),
            (
                HostFacts {
                    programs: vec![("tgtd".into(), None)],
                    ..ready_facts()
                },
                0,
                "tgtd is not installed",
            ),
            (
                HostFacts {
                    kernel_missing: Some("the kernel lacks dm target \"cache\"".into()),
                    ..ready_facts()
                },
                0,
                "lacks dm target",
            ),
            (
                HostFacts {
                    cache_free: Some(1000),
                    ..ready_facts()
                },
                0,
                "free for the cache",
            ),
            (ready_facts(), -7_000, "7.0 s behind"),
        ];
        for (facts, skew, expected) in cases {
            let found = problems(&row(), &facts, skew);
            assert_eq!(found.len(), 1, "{found:?}");
            assert!(found[0].contains(expected), "{found:?} lacks {expected:?}");
        }
        // libvirt serves VMs, not the cluster: its absence is shown, never a failure.
        let no_libvirt = HostFacts {
            programs: vec![("libvirtd".into(), None)],
            ..ready_facts()
        };
        assert!(problems(&row(), &no_libvirt, 0).is_empty());
    }
}
