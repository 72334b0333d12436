//! A remote cluster's SSH settings: every host's destination, resolved from `[ssh]` and
//! the node's own `ssh`, and the rules that keep them safe to hand to ssh(1).

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;

use super::validate::{check_name, mode_name, NAME_MAX};
use super::{ClusterSpec, Mode, NodeSsh, SpecError, SshSpec};
use crate::transport::ssh::SshDestination;

/// Longest user name accepted (the limit of Linux's utmp records).
const USER_MAX: usize = 32;
/// Longest host name (RFC 1123).
const HOST_MAX: usize = 253;
/// Most hosts worked on at once that a spec may ask for.
const SESSIONS_MAX: u32 = 1024;
/// Longest connect timeout a spec may ask for, in seconds.
const CONNECT_TIMEOUT_MAX_S: u32 = 600;

impl ClusterSpec {
    /// Every host of a remote cluster with its destination: the managed origin first, then
    /// the nodes in tree order. Empty unless `cluster.mode = "remote"`.
    pub fn ssh_hosts(&self) -> Vec<(String, SshDestination)> {
        if self.cluster.mode != Mode::Remote {
            return vec![];
        }
        let defaults = self.ssh.as_ref();
        let origin = self.origin.managed.then(|| {
            let dest = resolve(defaults, self.origin.ssh.as_ref(), self.origin.address);
            (self.origin.name.clone(), dest)
        });
        origin
            .into_iter()
            .chain(
                self.nodes
                    .iter()
                    .map(|n| (n.name.clone(), resolve(defaults, n.ssh.as_ref(), n.address))),
            )
            .collect()
    }
}

/// The node's own setting where it has one, else `[ssh]`'s; the host defaults to the
/// node's address.
fn resolve(defaults: Option<&SshSpec>, own: Option<&NodeSsh>, address: IpAddr) -> SshDestination {
    let own = own.cloned().unwrap_or_default();
    let defaults = defaults.cloned().unwrap_or_default();
    SshDestination {
        host: own.host.unwrap_or_else(|| address.to_string()),
        user: own.user.or(defaults.user),
        port: own.port.or(defaults.port),
        identity_file: own.identity_file.or(defaults.identity_file),
    }
}

/// `[ssh]` and the `ssh` of nodes belong to mode remote, where every value must be one ssh
/// takes as a single word, and no two nodes may share a host.
pub(super) fn check(spec: &ClusterSpec) -> Result<(), SpecError> {
    let per_node = std::iter::once(("origin.ssh".to_string(), spec.origin.ssh.as_ref())).chain(
        spec.nodes
            .iter()
            .enumerate()
            .map(|(i, n)| (format!("nodes[{i}].ssh"), n.ssh.as_ref())),
    );
    if spec.cluster.mode != Mode::Remote {
        let only_remote = |field: String| {
            let mode = mode_name(spec.cluster.mode);
            let problem = format!("only used with cluster.mode = \"remote\" (mode is \"{mode}\")");
            Err(SpecError::new(field, problem))
        };
        if spec.ssh.is_some() {
            return only_remote("ssh".into());
        }
        return match per_node.into_iter().find(|(_, ssh)| ssh.is_some()) {
            Some((field, _)) => only_remote(field),
            None => Ok(()),
        };
    }
    if let Some(ssh) = &spec.ssh {
        check_defaults(ssh)?;
    }
    if spec.cluster.backend == crate::spec::Backend::Userspace
        && spec.origin.protocol == crate::spec::OriginProtocol::Iscsi
        && spec.origin.managed
    {
        return Err(SpecError::new(
            "origin.protocol",
            "a remote cluster's links between hosts are NBD over TLS: use \"nbd\" (the userspace iSCSI origin has no CHAP)",
        ));
    }
    if !spec.origin.managed && spec.origin.ssh.is_some() {
        return Err(SpecError::new(
            "origin.ssh",
            "an unmanaged origin is not run by sftsan: it has no SSH destination",
        ));
    }
    for (field, ssh) in per_node {
        if let Some(ssh) = ssh {
            check_node(&field, ssh)?;
        }
    }
    check_one_node_per_host(spec)
}

fn check_defaults(ssh: &SshSpec) -> Result<(), SpecError> {
    if let Some(user) = &ssh.user {
        check_user("ssh.user", user)?;
    }
    check_port("ssh.port", ssh.port)?;
    for (field, path) in [
        ("ssh.identity_file", &ssh.identity_file),
        ("ssh.known_hosts", &ssh.known_hosts),
        ("ssh.install_dir", &ssh.install_dir),
    ] {
        if let Some(path) = path {
            check_option_path(field, path)?;
        }
    }
    if let Some(program) = &ssh.program {
        check_program(program)?;
    }
    if let Some(n) = ssh.max_sessions {
        check_range("ssh.max_sessions", n, SESSIONS_MAX)?;
    }
    if let Some(s) = ssh.connect_timeout_s {
        check_range("ssh.connect_timeout_s", s, CONNECT_TIMEOUT_MAX_S)?;
    }
    Ok(())
}

fn check_node(field: &str, ssh: &NodeSsh) -> Result<(), SpecError> {
    if let Some(host) = &ssh.host {
        check_host(&format!("{field}.host"), host)?;
    }
    if let Some(user) = &ssh.user {
        check_user(&format!("{field}.user"), user)?;
    }
    check_port(&format!("{field}.port"), ssh.port)?;
    if let Some(path) = &ssh.identity_file {
        check_option_path(&format!("{field}.identity_file"), path)?;
    }
    Ok(())
}

/// A host's engine, journal and hook serve one node: two nodes on one host would share them.
fn check_one_node_per_host(spec: &ClusterSpec) -> Result<(), SpecError> {
    let mut seen: HashMap<(String, Option<u16>), String> = HashMap::new();
    for (name, dest) in spec.ssh_hosts() {
        let key = (dest.host.to_ascii_lowercase(), dest.port);
        if let Some(other) = seen.get(&key) {
            return Err(SpecError::new(
                format!("{}.ssh.host", field_of(spec, &name)),
                format!("{dest} is also {other}'s host (one node per host)"),
            ));
        }
        seen.insert(key, name);
    }
    Ok(())
}

/// `origin` or `nodes[i]` for the node called `name`.
fn field_of(spec: &ClusterSpec, name: &str) -> String {
    match spec.nodes.iter().position(|n| n.name == name) {
        Some(i) => format!("nodes[{i}]"),
        None => "origin".into(),
    }
}

/// A host name (RFC 1123 labels) or an IP address; never something ssh could read as an
/// option or a user.
fn check_host(field: &str, host: &str) -> Result<(), SpecError> {
    if host.parse::<IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.is_empty() || host.len() > HOST_MAX || !host.split('.').all(label_ok) {
        return Err(SpecError::new(
            field,
            format!(
                "{host:?} is neither an IP address nor a host name (letters, digits and '-' in dot-separated labels, at most {HOST_MAX} bytes)"
            ),
        ));
    }
    Ok(())
}

/// A portable user name: a letter or '_', then letters, digits, '.', '_' or '-'.
fn check_user(field: &str, user: &str) -> Result<(), SpecError> {
    let mut chars = user.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !first_ok || !rest_ok || user.len() > USER_MAX {
        return Err(SpecError::new(
            field,
            format!(
                "{user:?} is not a user name (a letter or '_', then letters, digits, '.', '_' or '-'; at most {USER_MAX} bytes)"
            ),
        ));
    }
    Ok(())
}

fn check_port(field: &str, port: Option<u16>) -> Result<(), SpecError> {
    if port == Some(0) {
        return Err(SpecError::new(field, "must be a port from 1 to 65535"));
    }
    Ok(())
}

fn check_range(field: &str, value: u32, max: u32) -> Result<(), SpecError> {
    if value == 0 || value > max {
        return Err(SpecError::new(
            field,
            format!("must be from 1 to {max}, got {value}"),
        ));
    }
    Ok(())
}

/// ssh splits option values at whitespace and expands `%` tokens in file names: a path it
/// is given must have neither, and be absolute.
fn check_option_path(field: &str, path: &Path) -> Result<(), SpecError> {
    let text = path.to_string_lossy();
    if !path.is_absolute() {
        return Err(SpecError::new(
            field,
            format!("{text:?} must be an absolute path"),
        ));
    }
    if let Some(c) = text
        .chars()
        .find(|&c| c.is_whitespace() || c.is_control() || matches!(c, '%' | '"' | '\''))
    {
        return Err(SpecError::new(
            field,
            format!("{text:?} contains {c:?}, which ssh would not take as part of a file name"),
        ));
    }
    Ok(())
}

/// The remote program: an absolute path, or a plain name found on the remote PATH.
fn check_program(program: &Path) -> Result<(), SpecError> {
    if program.is_absolute() {
        return check_option_path("ssh.program", program);
    }
    let text = program.to_string_lossy();
    check_name("ssh.program", &text, NAME_MAX).map_err(|_| {
        SpecError::new(
            "ssh.program",
            format!("{text:?} must be an absolute path or a program name (letters, digits, '.', '_', '-')"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn remote_spec(extra: &str, n1: &str) -> String {
        super::super::test_spec_text("/tmp/s", "userspace", "qcow2", n1)
            .replace("degree = 2", "degree = 2\nmode = \"remote\"")
            + extra
    }

    fn error_of(text: &str) -> String {
        let spec = ClusterSpec::from_toml(text).expect("parses");
        super::super::check_rules(&spec).unwrap_err().to_string()
    }

    #[test]
    fn hosts_default_to_the_addresses_with_the_sections_defaults() {
        let text = remote_spec(
            "[ssh]\nuser = \"root\"\nport = 2222\n",
            "ssh = { host = \"n1.example\", user = \"ops\" }",
        );
        let spec = ClusterSpec::from_toml(&text).unwrap();
        super::super::check_rules(&spec).unwrap();
        let hosts: Vec<String> = spec
            .ssh_hosts()
            .iter()
            .map(|(n, d)| format!("{n}={d}"))
            .collect();
        assert_eq!(
            hosts,
            [
                "origin=root@127.0.0.1:2222",
                "n1=ops@n1.example:2222",
                "n2=root@127.0.0.3:2222"
            ]
        );
    }

    #[test]
    fn ssh_settings_outside_remote_mode_are_refused() {
        let text = super::super::test_spec_text("/tmp/s", "userspace", "qcow2", "")
            + "[ssh]\nuser = \"root\"\n";
        assert_eq!(
            error_of(&text),
            "ssh: only used with cluster.mode = \"remote\" (mode is \"host\")"
        );
        let text =
            super::super::test_spec_text("/tmp/s", "userspace", "qcow2", "ssh = { host = \"h\" }");
        assert!(error_of(&text).starts_with("nodes[0].ssh: only used"));
    }

    #[test]
    fn values_ssh_could_misread_are_refused() {
        for (n1, field) in [
            ("ssh = { host = \"-oProxyCommand=x\" }", "nodes[0].ssh.host"),
            ("ssh = { host = \"a b\" }", "nodes[0].ssh.host"),
            ("ssh = { user = \"root@evil\" }", "nodes[0].ssh.user"),
            ("ssh = { user = \"-l\" }", "nodes[0].ssh.user"),
            ("ssh = { port = 0 }", "nodes[0].ssh.port"),
            (
                "ssh = { identity_file = \"key\" }",
                "nodes[0].ssh.identity_file",
            ),
            (
                "ssh = { identity_file = \"/k/%d\" }",
                "nodes[0].ssh.identity_file",
            ),
            (
                "ssh = { identity_file = \"/a key\" }",
                "nodes[0].ssh.identity_file",
            ),
        ] {
            let e = error_of(&remote_spec("", n1));
            assert!(e.starts_with(&format!("{field}: ")), "{n1}: {e}");
        }
        for (section, field) in [
            ("known_hosts = \"/x y\"", "ssh.known_hosts"),
            ("program = \"../sftsan\"", "ssh.program"),
            ("program = \"sft san\"", "ssh.program"),
            ("max_sessions = 0", "ssh.max_sessions"),
            ("connect_timeout_s = 601", "ssh.connect_timeout_s"),
        ] {
            let e = error_of(&remote_spec(&format!("[ssh]\n{section}\n"), ""));
            assert!(e.starts_with(&format!("{field}: ")), "{section}: {e}");
        }
    }

    #[test]
    fn a_host_serves_one_node() {
        let e = error_of(&remote_spec("", "ssh = { host = \"127.0.0.3\" }"));
        assert_eq!(
            e,
            "nodes[1].ssh.host: 127.0.0.3 is also n1's host (one node per host)"
        );
    }

    #[test]
    fn programs_are_paths_or_plain_names() {
        for ok in ["sftsan", "/usr/local/bin/sftsan", "sftsan-1.2"] {
            let spec =
                ClusterSpec::from_toml(&remote_spec(&format!("[ssh]\nprogram = \"{ok}\"\n"), ""))
                    .unwrap();
            super::super::check_rules(&spec).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }
}
