//! Remote mode's hosts over real SSH: each host a namespace with its own sshd (see
//! `sftsan_tests::hosts`). The controller trusts host keys only when told to, checks every
//! host in one connection each, and names the host when one fails.

use std::path::{Path, PathBuf};

use sftsan_tests::hosts::TestHosts;
use sftsan_tests::{sftsan, sftsan_bin, stderr, stdout, write_image, MIB};

/// A remote cluster on `hosts`: the origin on h1, n1.. on h2.., degree 2.
struct RemoteCluster {
    hosts: TestHosts,
    spec: PathBuf,
}

impl RemoteCluster {
    /// `count` hosts running this workspace's sftsan.
    fn new(prefix: &str, subnet: u8, count: usize) -> RemoteCluster {
        Self::running(prefix, subnet, count, &sftsan_bin().display().to_string())
    }

    /// `count` hosts told to run `program`; each has a private `bin` directory where the
    /// controller installs its own copy when `program` is not sftsan of its version.
    fn running(prefix: &str, subnet: u8, count: usize, program: &str) -> RemoteCluster {
        let hosts = TestHosts::new(prefix, subnet, count, &["state", "bin"]);
        let dir = hosts.dir.path();
        let image = dir.join("base.raw");
        write_image(&image, 16 * MIB, prefix);
        let install_dir = format!("install_dir = \"{}\"\n", dir.join("bin").display());
        let text = hosts.remote_spec(prefix, &image, 1, program, &install_dir);
        let spec = dir.join("spec.toml");
        std::fs::write(&spec, text).unwrap();
        RemoteCluster { hosts, spec }
    }

    /// `sftsan hosts trust`, which must succeed.
    fn trust(&self) {
        let out = sftsan(["hosts".as_ref(), "trust".as_ref(), self.spec.as_os_str()]);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    fn known_hosts(&self) -> PathBuf {
        self.hosts.dir.path().join("known_hosts")
    }

    fn connections(&self) -> Vec<usize> {
        self.hosts.hosts.iter().map(|h| h.connections()).collect()
    }
}

/// The `SHA256:...` fingerprint of a public key file.
fn fingerprint(public_key: &Path) -> String {
    let out = std::process::Command::new("ssh-keygen")
        .arg("-lf")
        .arg(public_key)
        .output()
        .unwrap();
    stdout(&out)
        .split_whitespace()
        .find(|w| w.starts_with("SHA256:"))
        .unwrap()
        .to_string()
}

/// The `hosts check --json` rows: (node, ready, problems).
fn check(c: &RemoteCluster) -> (bool, Vec<(String, bool, String)>) {
    let out = sftsan([
        "hosts".as_ref(),
        "check".as_ref(),
        "--json".as_ref(),
        c.spec.as_os_str(),
    ]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(&out), stderr(&out)));
    let rows = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let problems = r["problems"].as_array().unwrap();
            let text: Vec<&str> = problems.iter().map(|p| p.as_str().unwrap()).collect();
            (
                r["node"].as_str().unwrap().to_string(),
                problems.is_empty(),
                text.join("; "),
            )
        })
        .collect();
    (out.status.success(), rows)
}

#[test]
#[ignore = "root tier: network namespaces, sshd"]
fn hosts_are_trusted_explicitly_then_checked_in_one_connection_each() {
    let c = RemoteCluster::new("sfrh1", 90, 3);
    // No host is known yet: strict checking refuses every one, and says which.
    let (ok, rows) = check(&c);
    assert!(!ok, "check passed with no trusted host: {rows:?}");
    for (node, ready, problems) in &rows {
        assert!(!ready, "{node}");
        assert!(
            problems.contains("Host key verification failed"),
            "{node}: {problems}"
        );
    }
    assert!(!c.known_hosts().exists(), "a failed check learned a key");

    let out = sftsan(["hosts".as_ref(), "trust".as_ref(), c.spec.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    for (node, host) in ["origin", "n1", "n2"].iter().zip(&c.hosts.hosts) {
        let expected = fingerprint(&host.host_key_pub());
        assert!(
            printed
                .lines()
                .any(|l| l.starts_with(&format!("{node}: ")) && l.contains(&expected)),
            "{node}'s fingerprint {expected} not in:\n{printed}"
        );
    }

    let (per_host, (ok, rows)) = connections_during(&c, || check(&c));
    assert!(ok, "{rows:?}");
    assert!(rows.iter().all(|(_, ready, _)| *ready), "{rows:?}");
    assert_eq!(
        per_host,
        [1, 1, 1],
        "SSH connections per host for one check"
    );

    // The text table: a row per host and no problem lines.
    let out = sftsan(["hosts".as_ref(), "check".as_ref(), c.spec.as_os_str()]);
    assert!(out.status.success(), "{}", stdout(&out));
    let table = stdout(&out);
    for node in ["origin", "n1", "n2"] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(node) && l.ends_with("yes")),
            "{table}"
        );
    }
}

#[test]
#[ignore = "root tier: network namespaces, sshd"]
fn a_changed_host_key_is_refused_and_named() {
    let mut c = RemoteCluster::new("sfrh2", 91, 3);
    c.trust();
    let known = std::fs::read_to_string(c.known_hosts()).unwrap();

    c.hosts.change_host_key(1);
    let (ok, rows) = check(&c);
    assert!(!ok);
    assert!(
        rows[0].1 && rows[2].1,
        "other hosts are unaffected: {rows:?}"
    );
    assert_eq!(rows[1].0, "n1");
    assert!(!rows[1].1);
    assert!(
        rows[1].2.contains("Host key verification failed"),
        "{rows:?}"
    );
    assert!(
        rows[1].2.contains(&c.hosts.hosts[1].address.to_string()),
        "{rows:?}"
    );

    // Trusting again does not replace a changed key: that stays the operator's decision.
    let out = sftsan(["hosts".as_ref(), "trust".as_ref(), c.spec.as_os_str()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line, for n1: {err}");
    assert!(err.starts_with("sftsan: n1: "), "{err}");
    assert_eq!(std::fs::read_to_string(c.known_hosts()).unwrap(), known);
}

#[test]
#[ignore = "root tier: network namespaces, sshd"]
fn an_unreachable_host_fails_alone() {
    let mut c = RemoteCluster::new("sfrh3", 92, 3);
    c.trust();
    c.hosts.stop(2);
    let started = std::time::Instant::now();
    let (ok, rows) = check(&c);
    assert!(!ok);
    assert!(rows[0].1 && rows[1].1, "{rows:?}");
    assert_eq!(rows[2].0, "n2");
    assert!(rows[2].2.contains("Connection refused"), "{rows:?}");
    assert!(
        started.elapsed().as_secs() < 30,
        "a refused host must not stall the check"
    );
}

/// Fails unless every host runs nothing but its sshd: no daemon, keeper or session left.
fn assert_only_sshd_runs(c: &RemoteCluster) {
    for i in 0..c.hosts.hosts.len() {
        let left = processes(c, i);
        assert!(
            left.iter().all(|p| p == "sshd"),
            "host {i} still runs {left:?}"
        );
    }
}

/// Processes running in host `i`'s namespace, by name.
fn processes(c: &RemoteCluster, i: usize) -> Vec<String> {
    c.hosts.processes(i)
}

/// `sftsan status --json`: each node as `name=state`.
fn status(c: &RemoteCluster) -> Vec<String> {
    let out = sftsan(["status".as_ref(), "--json".as_ref(), c.spec.as_os_str()]);
    assert!(out.status.success(), "status: {}", stderr(&out));
    let st: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    st["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| {
            format!(
                "{}={}",
                n["name"].as_str().unwrap(),
                n["state"].as_str().unwrap()
            )
        })
        .collect()
}

/// Every node in `state`, as [`status`] shows them.
fn all(c: &RemoteCluster, state: &str) -> Vec<String> {
    std::iter::once(format!("origin={state}"))
        .chain((1..c.hosts.hosts.len()).map(|i| format!("n{i}={state}")))
        .collect()
}

/// `up`, every node then up, `down`, and nothing but sshd left on any host; returns what
/// `up` logged.
fn up_then_down(c: &RemoteCluster) -> String {
    let (_, log) = connections_for(c, &["up"]);
    assert_eq!(status(c), all(c, "up"));
    connections_for(c, &["down"]);
    assert_only_sshd_runs(c);
    log
}

/// Runs `sftsan ARGS SPEC`, asserting success, and returns how many SSH connections each
/// host accepted meanwhile.
fn connections_for(c: &RemoteCluster, args: &[&str]) -> (Vec<usize>, String) {
    let mut argv: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    argv.push(c.spec.as_os_str());
    let (per_host, out) = connections_during(c, || sftsan(argv));
    assert!(
        out.status.success(),
        "{args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    (per_host, stderr(&out))
}

/// Runs `work` and returns how many SSH connections each host accepted meanwhile.
fn connections_during<T>(c: &RemoteCluster, work: impl FnOnce() -> T) -> (Vec<usize>, T) {
    let before = c.connections();
    let result = work();
    let per_host = c
        .connections()
        .iter()
        .zip(&before)
        .map(|(a, b)| a - b)
        .collect();
    (per_host, result)
}

#[test]
#[ignore = "root tier: network namespaces, sshd, qemu-storage-daemon"]
fn a_remote_cluster_comes_up_serves_the_image_and_goes_down_host_by_host() {
    // The origin and six nodes, degree 2: three levels.
    let c = RemoteCluster::new("sfrh4", 93, 7);
    c.trust();

    let (per_host, log) = connections_for(&c, &["up"]);
    assert!(log.contains("up: 7 of 7 hosts done"), "{log}");
    assert_eq!(per_host, [1; 7], "SSH connections per host for one up");
    assert_eq!(status(&c), all(&c, "up"));

    // Each node's VM disk, read on its host (as its VMs read it: through the node's
    // local socket, the node's cache and its parents' TLS relays), is the image. The disk
    // lives in the host's own state directory; no export is reachable from here.
    let spec = sftsan_core::spec::ClusterSpec::load(&c.spec).unwrap();
    let names = sftsan_core::names::Names::new(&spec);
    for i in 1..c.hosts.hosts.len() {
        let node = format!("n{i}");
        let image = c.hosts.dir.path().join("base.raw");
        let out = c
            .hosts
            .compare_on_host(i, &[], &image, &names.snapshot_file(&node, 1));
        assert!(
            out.status.success(),
            "{node}: {}{}",
            stdout(&out),
            stderr(&out)
        );
    }

    // verify: each host checks its node against its parent (the origin against the
    // image), parents first, one connection per host.
    let (per_host, _) = connections_for(&c, &["verify"]);
    assert_eq!(per_host, [1; 7], "SSH connections per host for one verify");
    let out = sftsan(["verify".as_ref(), c.spec.as_os_str()]);
    let lines: Vec<String> = stdout(&out).lines().map(String::from).collect();
    assert_eq!(lines.len(), 7, "{lines:?}");
    assert!(
        lines.iter().all(|l| l.contains(": identical to")),
        "{lines:?}"
    );
    // A VM that wrote to its disk: verify names that node, and only it.
    let out = c
        .hosts
        .in_host(6, Path::new("qemu-io"))
        .args(["-f", "qcow2", "-c", "write -P 0x5a 0 64k"])
        .arg(names.snapshot_file("n6", 1))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = sftsan(["verify".as_ref(), c.spec.as_os_str()]);
    assert!(!out.status.success(), "verify missed a written disk");
    let differing: Vec<String> = stdout(&out)
        .lines()
        .filter(|l| !l.contains(": identical to"))
        .map(String::from)
        .collect();
    assert_eq!(differing.len(), 1, "{}", stdout(&out));
    assert!(differing[0].starts_with("n6/snapshot/1: "), "{differing:?}");

    // Again: nothing to do.
    let (_, log) = connections_for(&c, &["up"]);
    assert!(!log.contains(" 1 created"), "{log}");
    assert!(log.contains("n6: 0 created"), "{log}");

    let keys = sftsan_core::remote::link_keys::LinkKeyStore::path(&names);
    assert!(
        keys.is_file(),
        "the controller keeps the links' keys while up"
    );
    let (per_host, _) = connections_for(&c, &["down"]);
    assert_eq!(per_host, [1; 7], "SSH connections per host for one down");
    assert!(!keys.exists(), "down forgets the links' keys");
    assert_eq!(status(&c), all(&c, "down"));
    assert_only_sshd_runs(&c);
    for i in 0..c.hosts.hosts.len() {
        // Nothing of the cluster is left in the host's state: no journal, no installed
        // spec, no directory.
        let kept: Vec<_> = std::fs::read_dir(c.hosts.hosts[i].dir.join("private0"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert!(kept.is_empty(), "host {i} keeps {kept:?}");
    }
}

#[test]
#[ignore = "root tier: network namespaces, 32 sshd, qemu-storage-daemon"]
fn thirty_two_hosts_come_up_with_one_ssh_connection_each_per_command() {
    let c = RemoteCluster::new("sfrh5", 94, 32);
    c.trust();
    let (per_host, log) = connections_for(&c, &["up"]);
    assert_eq!(per_host, [1; 32], "SSH connections per host for up: {log}");
    let (per_host, states) = connections_during(&c, || status(&c));
    assert_eq!(states, all(&c, "up"));
    assert_eq!(per_host, [1; 32], "SSH connections per host for status");
    let (per_host, log) = connections_for(&c, &["down"]);
    assert_eq!(
        per_host, [1; 32],
        "SSH connections per host for down: {log}"
    );
    assert_eq!(status(&c), all(&c, "down"));
}

#[test]
#[ignore = "root tier: network namespaces, sshd, qemu-storage-daemon"]
fn up_changes_nothing_while_a_host_is_unreachable_and_completes_once_it_is_back() {
    let mut c = RemoteCluster::new("sfrh6", 95, 3);
    c.trust();
    c.hosts.stop(2);
    let out = sftsan(["up".as_ref(), c.spec.as_os_str()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "a line for the host, one for the refusal: {err}"
    );
    assert!(
        lines[0].starts_with("sftsan: n2 (root@198.18.95.3): ") && lines[0].contains("refused"),
        "{err}"
    );
    assert!(lines[1].contains("nothing was changed"), "{err}");
    for i in 0..2 {
        let left = processes(&c, i);
        assert!(left.iter().all(|p| p == "sshd"), "host {i} runs {left:?}");
        let journal = c.hosts.hosts[i].dir.join("private0/journal.json");
        assert!(!journal.exists(), "host {i} journaled a run");
    }

    c.hosts.start(2);
    let out = sftsan(["up".as_ref(), c.spec.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(status(&c), all(&c, "up"));
    // Each host journals its own node where the check above looked.
    for i in 0..3 {
        let journal = c.hosts.hosts[i].dir.join("private0/journal.json");
        assert!(journal.exists(), "{}", journal.display());
    }
    let out = sftsan(["down".as_ref(), c.spec.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
#[ignore = "root tier: network namespaces, sshd, qemu-storage-daemon"]
fn hosts_without_sftsan_get_the_controllers_copy_and_run_it() {
    let c = RemoteCluster::running("sfrh7", 96, 3, "/nonexistent/sftsan");
    c.trust();
    let (per_host, _) = connections_for(&c, &["hosts", "check"]);
    assert_eq!(per_host, [1, 1, 1], "shipping rides the check's connection");
    // Each host holds the controller's program, named by its content.
    let sha = sftsan_tests::sha256_file(sftsan_bin());
    for host in &c.hosts.hosts {
        let copy = host.dir.join("private1").join(format!("sftsan-{sha}"));
        let meta = std::fs::metadata(&copy).unwrap_or_else(|e| panic!("{}: {e}", copy.display()));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(meta.permissions().mode() & 0o777, 0o755);
        assert_eq!(sftsan_tests::sha256_file(&copy), sha);
    }
    let out = sftsan([
        "hosts".as_ref(),
        "check".as_ref(),
        "--json".as_ref(),
        c.spec.as_os_str(),
    ]);
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for row in rows.as_array().unwrap() {
        assert!(
            row["program"]
                .as_str()
                .unwrap()
                .ends_with(&format!("sftsan-{sha}")),
            "{row}"
        );
        assert_eq!(row["problems"].as_array().unwrap().len(), 0, "{row}");
    }
    // The cluster runs on the copies.
    let log = up_then_down(&c);
    assert!(log.contains("up: 3 of 3 hosts done"), "{log}");
}

/// Hosts whose sftsan is another version (here: the real one, claiming 0.0.1 in its
/// facts) get the controller's copy, and the cluster runs on it.
#[test]
#[ignore = "root tier: network namespaces, sshd, qemu-storage-daemon"]
fn hosts_with_another_version_get_the_controllers_copy() {
    let dir = tempfile::Builder::new()
        .prefix("sftsan-old.")
        .tempdir()
        .unwrap();
    let old = dir.path().join("sftsan");
    let script = format!(
        "#!/bin/sh\nexec {} \"$@\" | sed 's/\"sftsan\":\"{}\"/\"sftsan\":\"0.0.1\"/'\n",
        sftsan_bin().display(),
        sftsan_core::remote::facts::VERSION
    );
    std::fs::write(&old, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let c = RemoteCluster::running("sfro", 87, 2, &old.display().to_string());
    c.trust();
    let out = sftsan([
        "hosts".as_ref(),
        "check".as_ref(),
        "--json".as_ref(),
        c.spec.as_os_str(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
    for row in rows.as_array().unwrap() {
        let program = row["program"].as_str().unwrap();
        assert!(program.contains("/sftsan-"), "{row}");
        assert_eq!(row["shipped"], true, "{row}");
    }
    up_then_down(&c);
}

/// A host's `host apply` dies midway (killed right after it made its cache, and again
/// right after its TLS relay, each before journaling it): the controller names that
/// host, the level stops, and the next `up` resumes the host from its own journal and
/// completes the cluster.
#[test]
#[ignore = "root tier: network namespaces, sshd, qemu-storage-daemon"]
fn a_host_killed_during_its_apply_is_resumed_by_the_next_up() {
    let mut c = RemoteCluster::new("sfrh8", 97, 4);
    c.trust();
    for kind in ["cache", "tls-relay"] {
        c.hosts
            .set_session_env(1, &[(sftsan_core::engine::KILL_AFTER_ENV, kind)]);
        let out = sftsan(["up".as_ref(), c.spec.as_os_str()]);
        assert!(
            !out.status.success(),
            "up survived a host killed after its {kind}: {}",
            stderr(&out)
        );
        let err = stderr(&out);
        let named: Vec<&str> = err.lines().filter(|l| l.starts_with("sftsan: ")).collect();
        assert_eq!(named.len(), 1, "one line, for n1: {err}");
        assert!(
            named[0].starts_with("sftsan: n1 (root@198.18.97.2): "),
            "{err}"
        );
        // n1's level stopped there: its children were not started.
        assert!(!err.contains("n3:"), "{err}");
        let journal = c.hosts.hosts[1].dir.join("private0/journal.json");
        assert!(journal.exists(), "the killed host kept its journal");

        c.hosts.set_session_env(1, &[]);
        let out = sftsan(["up".as_ref(), c.spec.as_os_str()]);
        assert!(out.status.success(), "after {kind}: {}", stderr(&out));
        assert_eq!(status(&c), all(&c, "up"), "after {kind}");
        let out = sftsan(["verify".as_ref(), c.spec.as_os_str()]);
        assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
        let out = sftsan(["down".as_ref(), c.spec.as_os_str()]);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_only_sshd_runs(&c);
    }
}

/// The libvirt hook on a host of a remote cluster finds the spec `up` installed there and
/// makes its VM's disk on that host's node alone (its parent is another host), as libvirt
/// would run it when the VM starts; release discards a stateless VM's disk.
#[test]
#[ignore = "root tier: network namespaces, sshd, qemu-storage-daemon"]
fn the_hook_on_a_host_makes_its_vms_disk_there() {
    let c = RemoteCluster::new("sfrh9", 98, 3);
    c.trust();
    let out = sftsan(["up".as_ref(), c.spec.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));

    // On n2's host: the domain of a VM beyond per_node, from the installed spec.
    let installed = c.hosts.dir.path().join("state/spec.toml");
    let out = c
        .hosts
        .in_host(2, sftsan_bin())
        .args(["vm", "xml"])
        .arg(&installed)
        .args(["--node", "n2", "--index", "2", "--mode", "stateless"])
        .output()
        .unwrap();
    assert!(out.status.success(), "vm xml on the host: {}", stderr(&out));
    let xml = stdout(&out);
    let hook = sftsan_bin().with_file_name("sftsan-hook");
    let run_hook = |op: &str, subop: &str| {
        let args = ["sfrh9-n2-2", op, subop, "-"];
        let out = c.hosts.run_in_host(2, &hook, &args, xml.as_bytes());
        assert!(out.status.success(), "hook {op} {subop}: {}", stderr(&out));
    };
    let spec = sftsan_core::spec::ClusterSpec::load(&c.spec).unwrap();
    let disk = sftsan_core::names::Names::new(&spec).snapshot_file("n2", 2);
    let on_host = c.hosts.hosts[2]
        .dir
        .join("private0")
        .join(disk.strip_prefix(c.hosts.dir.path().join("state")).unwrap());
    assert!(!on_host.exists());
    run_hook("prepare", "begin");
    assert!(on_host.exists(), "prepare made no {}", on_host.display());
    // Read on the host, as the VM reads it: through its node's local socket.
    let image = c.hosts.dir.path().join("base.raw");
    let out = c.hosts.compare_on_host(2, &[], &image, &disk);
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    // Nothing of n2's ancestors was made on n2's host.
    let journal =
        std::fs::read_to_string(c.hosts.hosts[2].dir.join("private0/journal.json")).unwrap();
    assert!(
        !journal.contains("\"n1/") && !journal.contains("\"origin/"),
        "{journal}"
    );
    run_hook("release", "end");
    assert!(!on_host.exists(), "release kept a stateless VM's disk");

    let out = sftsan(["down".as_ref(), c.spec.as_os_str()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// `qemu-img info` of `parent`'s export from host `i`, presenting `key` (a directory
/// with `keys.psk`, and the identity) or no TLS at all.
fn read_export_from(
    c: &RemoteCluster,
    i: usize,
    parent: usize,
    key: Option<(&Path, &str)>,
) -> std::process::Output {
    let address = c.hosts.hosts[parent].address;
    let mut cmd = c.hosts.in_host(i, Path::new("qemu-img"));
    cmd.arg("info");
    let mut image =
        format!("driver=nbd,server.type=inet,server.host={address},server.port=10809,export=base");
    if let Some((dir, user)) = key {
        cmd.arg("--object").arg(format!(
            "tls-creds-psk,id=link,endpoint=client,dir={},username={user}",
            dir.display()
        ));
        image += ",tls-creds=link";
    }
    cmd.args(["--image-opts", &image]).output().unwrap()
}

/// Listening TCP sockets in host `i`, as `address:port`.
fn listening(c: &RemoteCluster, i: usize) -> Vec<String> {
    let out = c
        .hosts
        .in_host(i, Path::new("ss"))
        .args(["-Hltn"])
        .output()
        .unwrap();
    assert!(out.status.success(), "ss: {}", stderr(&out));
    let mut sockets: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3).map(String::from))
        .collect();
    sockets.sort();
    sockets
}

#[test]
#[ignore = "root tier: network namespaces, sshd, qemu-storage-daemon"]
fn links_admit_only_their_own_childs_key_and_exports_listen_only_on_data_addresses() {
    // origin (h1) -> n1 (h2), n2 (h3); n1 -> n3 (h4).
    let c = RemoteCluster::new("sfrl", 99, 4);
    c.trust();
    let (_, log) = connections_for(&c, &["up"]);
    assert!(log.contains("up: 4 of 4 hosts done"), "{log}");
    let spec = sftsan_core::spec::ClusterSpec::load(&c.spec).unwrap();
    let names = sftsan_core::names::Names::new(&spec);

    // Nodes with children listen on their data address (TLS) and sshd's port; leaves
    // only for SSH. No wildcard, no loopback.
    for (i, host) in c.hosts.hosts.iter().enumerate() {
        let a = host.address;
        let want: Vec<String> = if i <= 1 {
            vec![format!("{a}:10809"), format!("{a}:22")]
        } else {
            vec![format!("{a}:22")]
        };
        assert_eq!(listening(&c, i), want, "host {}", host.name);
    }
    // A second address on n1's host: nothing answers there.
    let second = std::net::Ipv4Addr::new(198, 18, 99, 100);
    let added = c
        .hosts
        .in_host(1, Path::new("ip"))
        .args(["addr", "add", &format!("{second}/25"), "dev", "sfrlp2"])
        .status()
        .unwrap();
    assert!(added.success());
    let probe = |addr: std::net::Ipv4Addr| {
        std::net::TcpStream::connect_timeout(
            &(addr, 10809).into(),
            std::time::Duration::from_secs(2),
        )
        .is_ok()
    };
    assert!(
        probe(c.hosts.hosts[1].address),
        "n1's relay answers on its data address"
    );
    assert!(!probe(second), "an export answers on a second address");

    // n3's own key reads n1's export (the control); no TLS, a wrong key, and another
    // link's key read nothing.
    let own = names.link_keys_dir("n3").join("client");
    let out = read_export_from(&c, 3, 1, Some((&own, "n3")));
    assert!(out.status.success(), "n3's own key: {}", stderr(&out));
    assert!(
        stdout(&out).contains("virtual size: 16 MiB"),
        "{}",
        stdout(&out)
    );
    let out = read_export_from(&c, 3, 1, None);
    assert!(!out.status.success(), "read without TLS: {}", stdout(&out));
    let wrong = c.hosts.dir.path().join("wrong-key");
    std::fs::create_dir(&wrong).unwrap();
    std::fs::write(wrong.join("keys.psk"), format!("n3:{}\n", "ab".repeat(32))).unwrap();
    let out = read_export_from(&c, 3, 1, Some((&wrong, "n3")));
    assert!(
        !out.status.success(),
        "read with a wrong key: {}",
        stdout(&out)
    );
    let n2s = names.link_keys_dir("n2").join("client");
    let out = read_export_from(&c, 2, 1, Some((&n2s, "n2")));
    assert!(
        !out.status.success(),
        "n2's key (for the origin) read n1: {}",
        stdout(&out)
    );

    // A host given a wrong key for its link fails with one line naming the link and
    // leaves nothing running; the next up completes.
    let image = std::fs::read_to_string(c.hosts.hosts[3].dir.join("private0/image.json")).unwrap();
    let request = |action: &str, key: &str| {
        serde_json::json!({
            "spec": std::fs::read_to_string(&c.spec).unwrap(),
            "node": "n3",
            "image": serde_json::from_str::<serde_json::Value>(&image).unwrap(),
            "action": action,
            "keys": {"upstream": key},
        })
        .to_string()
    };
    let apply = |input: String| {
        c.hosts
            .run_in_host(3, sftsan_bin(), &["host", "apply"], input.as_bytes())
    };
    let out = apply(request("down", ""));
    assert!(out.status.success(), "down n3: {}", stderr(&out));
    let out = apply(request("up", &"cd".repeat(32)));
    assert!(!out.status.success(), "n3 came up with a wrong key");
    let said = stdout(&out);
    let failed: Vec<&str> = said.lines().filter(|l| l.contains("\"failed\"")).collect();
    assert_eq!(failed.len(), 1, "{}", stdout(&out));
    eprintln!("a wrong key: {}", failed[0]);
    assert!(
        failed[0].contains("n3/upstream") && failed[0].contains("parent n1"),
        "{}",
        failed[0]
    );
    let left = processes(&c, 3);
    assert!(
        left.iter().all(|p| p == "sshd"),
        "n3's host still runs {left:?}"
    );
    up_then_down(&c);
}

/// A local user made for one test (a login without root), removed when dropped.
struct TestUser(&'static str);

impl TestUser {
    fn new(name: &'static str) -> TestUser {
        // A run killed before its Drop left the user behind.
        let _ = std::process::Command::new("userdel")
            .arg(name)
            .stderr(std::process::Stdio::null())
            .status();
        // `*`, not useradd's locked `!`: sshd without PAM refuses locked accounts.
        let made = std::process::Command::new("useradd")
            .args(["--system", "--no-create-home", "--home-dir", "/nonexistent"])
            .args(["--shell", "/bin/sh", "--password", "*", name])
            .status()
            .unwrap();
        assert!(made.success(), "useradd {name}");
        TestUser(name)
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _ = std::process::Command::new("userdel").arg(self.0).status();
    }
}

#[test]
#[ignore = "root tier: network namespaces, sshd, a local user"]
fn a_login_without_root_is_refused_before_anything_changes() {
    let c = RemoteCluster::new("sfrn", 88, 3);
    let user = TestUser::new("sftsan-nonroot");
    // sshd reads authorized_keys as the user logging in: let it through the 0700 directory
    // (to that public file only; the directory stays unlistable).
    use std::os::unix::fs::PermissionsExt;
    let dir = c.hosts.dir.path();
    let mode = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    mode(dir, 0o711).unwrap();
    mode(&dir.join("authorized_keys"), 0o644).unwrap();
    let text = std::fs::read_to_string(&c.spec).unwrap();
    let as_user = format!("name = \"n1\"\nssh = {{ user = \"{}\" }}\n", user.0);
    std::fs::write(&c.spec, text.replace("name = \"n1\"\n", &as_user)).unwrap();
    c.trust();

    let out = sftsan(["up".as_ref(), c.spec.as_os_str()]);
    assert!(!out.status.success(), "up ran with a login without root");
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(
        lines.len(),
        2,
        "a line for the host, one for the refusal: {err}"
    );
    assert!(
        lines[0].starts_with("sftsan: n1 (sftsan-nonroot@198.18.88.2): ")
            && lines[0].contains("not root"),
        "{err}"
    );
    assert!(lines[1].contains("nothing was changed"), "{err}");
    for i in 0..3 {
        let left = processes(&c, i);
        assert!(left.iter().all(|p| p == "sshd"), "host {i} runs {left:?}");
        let journal = c.hosts.hosts[i].dir.join("private0/journal.json");
        assert!(!journal.exists(), "host {i} journaled a run");
    }

    // Logging in as root instead, the same cluster comes up.
    std::fs::write(&c.spec, text).unwrap();
    up_then_down(&c);
}
