//! The libvirt QEMU hook: just-in-time snapshots for sftsan's domains.
//!
//! libvirt runs `/etc/libvirt/hooks/qemu` and every `/etc/libvirt/hooks/qemu.d/*` with
//! `GUEST OPERATION SUB-OPERATION EXTRA` and the domain's XML on stdin. For a domain with
//! sftsan metadata:
//!
//! - `prepare begin`: the node's stack is brought up (with every node between it and the
//!   origin) and the VM's snapshot made, if missing. A failure aborts the start.
//! - `release end`: a stateless VM's snapshot is removed (the next start gets a fresh one).
//! - `reconnect begin` (libvirtd restarted while the VM ran): the stack is repaired if
//!   needed; this never fails, since failing would make libvirt kill a running guest.
//!
//! Everything else, and every other domain, returns at once. The hook never calls
//! libvirt's API (libvirt holds the domain's lock while it runs hooks) and is idempotent.

use sftsan_core::error::{Error, Result};
use std::path::{Path, PathBuf};

use sftsan_core::resources::Tools;

use crate::cluster::{Cluster, Snapshots};
use crate::xml::{DiskInfo, Domain, SftsanMeta, VmMode};

/// Where the hook logs one line per event it handles (libvirt passes hooks no custom
/// environment, so the place is fixed).
pub const LOG_FILE: &str = "/var/log/libvirt/sftsan-hook.log";

/// What a hook call did, for the hook's log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Not one of sftsan's domains, or an event sftsan has nothing to do for.
    Ignored,
    /// The event was handled; the text says what happened to the snapshot.
    Done(String),
}

/// The `sftsan` executable the engine runs as the cache keeper: `$SFTSAN_BIN`, else beside
/// the hook's real path (install the hook as a symlink to `sftsan-hook` next to `sftsan`),
/// else the usual install directories, else `sftsan` on PATH.
pub fn tools() -> Tools {
    let mut tools = Tools::from_env();
    if !tools.sftsan.is_file() {
        let real = std::env::current_exe()
            .ok()
            .and_then(|e| e.canonicalize().ok());
        let candidates = real
            .iter()
            .filter_map(|e| e.parent().map(|d| d.join("sftsan")))
            .chain(["/usr/local/bin/sftsan", "/usr/bin/sftsan"].map(PathBuf::from));
        if let Some(found) = candidates.into_iter().find(|p| p.is_file()) {
            tools.sftsan = found;
        }
    }
    tools
}

/// What the hook needs of a domain's XML.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The domain's sftsan metadata: cluster, node, snapshot, mode, spec.
    pub meta: SftsanMeta,
    /// The domain's disks, to check it boots from the snapshot.
    pub disks: Vec<DiskInfo>,
}

/// Reads the domain XML libvirt passes on stdin. `None`: not one of sftsan's domains
/// (anything that does not parse as a domain and does not mention sftsan's namespace).
pub fn parse_request(xml: &str) -> Result<Option<Request>> {
    match Domain::from_xml(xml) {
        Ok(d) => Ok(d.sftsan().map(|meta| Request {
            meta: meta.clone(),
            disks: d.disks(),
        })),
        Err(_) if !xml.contains(crate::xml::SFTSAN_NS) => Ok(None),
        Err(e) => Err(Error::invalid("domain XML", e.to_string())),
    }
}

/// Handles one hook call. `xml` is what libvirt wrote on stdin.
pub fn handle(op: &str, subop: &str, xml: &str, tools: Tools) -> Result<Outcome> {
    let relevant = matches!(
        (op, subop),
        ("prepare", "begin") | ("release", "end") | ("reconnect", "begin")
    );
    if !relevant {
        return Ok(Outcome::Ignored);
    }
    let Some(Request { meta, disks }) = parse_request(xml)? else {
        return Ok(Outcome::Ignored);
    };
    let load = || load_cluster(&meta, tools.clone());
    match (op, subop) {
        ("prepare", "begin") => {
            let cluster = load()?;
            // The domain must boot from the snapshot the hook prepares (a qcow2 file or,
            // on the kernel backend, a dm device), not from a file that merely looks
            // like one (a spec whose state_dir moved, a hand edit).
            let want = cluster.plan().vm_disk_path(&meta.node, meta.snapshot);
            let want = want.display().to_string();
            let Some(disk) = disks
                .iter()
                .find(|d| d.path.as_deref() == Some(want.as_str()))
            else {
                let have: Vec<String> = disks
                    .iter()
                    .filter(|d| d.device == "disk")
                    .map(|d| {
                        let target = d.target.as_deref().unwrap_or("?");
                        format!("{target}={}", d.path.as_deref().unwrap_or("(no source)"))
                    })
                    .collect();
                return Err(Error::conflict(
                    format!(
                        "no disk is {}/snapshot/{} ({want})",
                        meta.node, meta.snapshot
                    ),
                    format!(
                        "the domain has {}: redefine it with `sftsan vm define`",
                        if have.is_empty() {
                            "no disk".into()
                        } else {
                            have.join(", ")
                        }
                    ),
                ));
            };
            let file = cluster.ensure(&meta.node, meta.snapshot)?;
            // A domain not defined by sftsan (hand-written XML) may lack the policies; the
            // hook cannot change libvirt's XML, so it says so in its log.
            let policy = if disk.stops_on_error() {
                ""
            } else {
                "; WARNING: the disk lacks error_policy='stop' rerror_policy='stop', so an I/O error from its node fails the guest's request instead of pausing the VM (redefine it with `sftsan vm define`)"
            };
            Ok(Outcome::Done(format!(
                "{}/snapshot/{} ready: {}{policy}",
                meta.node,
                meta.snapshot,
                file.display()
            )))
        }
        ("release", "end") if meta.mode == VmMode::Stateless => {
            let cluster = load()?;
            let existed = cluster.remove(&meta.node, meta.snapshot)?;
            Ok(Outcome::Done(format!(
                "{}/snapshot/{} {} (stateless)",
                meta.node,
                meta.snapshot,
                if existed { "discarded" } else { "already gone" }
            )))
        }
        ("release", "end") => Ok(Outcome::Ignored),
        ("reconnect", "begin") => {
            let result = load().and_then(|c| c.ensure(&meta.node, meta.snapshot));
            Ok(Outcome::Done(match result {
                Ok(_) => format!("{}/snapshot/{} healthy", meta.node, meta.snapshot),
                Err(e) => format!("WARNING (guest left running): {e}"),
            }))
        }
        _ => Ok(Outcome::Ignored),
    }
}

fn load_cluster(meta: &SftsanMeta, tools: Tools) -> Result<Cluster> {
    let cluster = Cluster::load(Path::new(&meta.spec), tools)?;
    if cluster.plan().cluster != meta.cluster {
        return Err(Error::conflict(
            meta.spec.clone(),
            format!(
                "now describes cluster {:?}, but the domain belongs to {:?}",
                cluster.plan().cluster,
                meta.cluster
            ),
        ));
    }
    cluster.check_node(&meta.node)?;
    Ok(cluster)
}

/// Points stdin, stdout and stderr at /dev/null so that nothing the hook starts keeps
/// libvirt's pipes open (libvirt waits for them to close). Returns a close-on-exec copy of
/// the original stderr, for the hook's own last word.
pub fn detach_stdio() -> std::io::Result<std::fs::File> {
    use std::os::fd::{FromRawFd, IntoRawFd};
    // SAFETY: plain fd calls on descriptors this process owns; the duplicate is owned by
    // the returned File.
    unsafe {
        let saved = libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3);
        if saved < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let null = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?
            .into_raw_fd();
        for fd in 0..=2 {
            if libc::dup2(null, fd) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        if null > 2 {
            libc::close(null);
        }
        Ok(std::fs::File::from_raw_fd(saved))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vms::{build_domain, default_template};

    fn xml(meta: Option<SftsanMeta>) -> String {
        let mut d = default_template();
        d.set_name("g");
        d.set_sftsan(meta);
        d.to_xml()
    }

    #[test]
    fn other_domains_and_events_are_ignored() {
        let t = Tools::from_env();
        assert_eq!(
            handle("prepare", "begin", &xml(None), t.clone()).ok(),
            Some(Outcome::Ignored)
        );
        assert_eq!(
            handle("prepare", "begin", "<domain", t.clone()).ok(),
            Some(Outcome::Ignored)
        );
        let meta = SftsanMeta {
            cluster: "c".into(),
            image: "i".into(),
            node: "n1".into(),
            snapshot: 1,
            mode: VmMode::Persistent,
            spec: "/nonexistent/spec.toml".into(),
        };
        let d = build_domain(&default_template(), "g", Path::new("/x"), meta.clone()).unwrap();
        let text = d.to_xml();
        for (op, sub) in [
            ("start", "begin"),
            ("started", "begin"),
            ("stopped", "end"),
            ("migrate", "begin"),
        ] {
            assert_eq!(
                handle(op, sub, &text, t.clone()).ok(),
                Some(Outcome::Ignored),
                "{op} {sub}"
            );
        }
        // A persistent VM keeps its snapshot at release.
        assert_eq!(
            handle("release", "end", &text, t.clone()).ok(),
            Some(Outcome::Ignored)
        );
        // prepare needs the spec: a clear error.
        let err = handle("prepare", "begin", &text, t.clone())
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/spec.toml"), "{err}");
        // reconnect never fails.
        match handle("reconnect", "begin", &text, t).unwrap() {
            Outcome::Done(s) => assert!(s.starts_with("WARNING"), "{s}"),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn prepare_refuses_a_disk_that_is_not_the_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("base.raw");
        std::fs::write(&image, vec![1u8; 1 << 20]).unwrap();
        let spec = dir.path().join("spec.toml");
        std::fs::write(
            &spec,
            format!(
                "[cluster]\nname = \"hk\"\nstate_dir = {state:?}\nmode = \"host\"\ndegree = 1\n\n\
                 [image]\nname = \"base\"\nsource = {image:?}\n\n\
                 [origin]\naddress = \"127.80.99.1\"\n\n\
                 [cache]\nsize = {cache}\n\n[snapshots]\nper_node = 1\n\n\
                 [[nodes]]\nname = \"n1\"\naddress = \"127.80.99.11\"\n",
                state = dir.path().join("state"),
                cache = sftsan_core::spec::cache_needed(1 << 20),
            ),
        )
        .unwrap();
        let meta = SftsanMeta {
            cluster: "hk".into(),
            image: "base".into(),
            node: "n1".into(),
            snapshot: 1,
            mode: VmMode::Persistent,
            spec: spec.display().to_string(),
        };
        let d = build_domain(
            &default_template(),
            "g",
            Path::new("/elsewhere.qcow2"),
            meta.clone(),
        )
        .unwrap();
        let err = handle("prepare", "begin", &d.to_xml(), Tools::from_env())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/elsewhere.qcow2") && err.contains("sftsan vm define"),
            "{err}"
        );
        // Another cluster's spec at that path is refused too.
        let mut other = meta;
        other.cluster = "other".into();
        let d = build_domain(&default_template(), "g", Path::new("/x"), other).unwrap();
        let err = handle("prepare", "begin", &d.to_xml(), Tools::from_env())
            .unwrap_err()
            .to_string();
        assert!(err.contains("belongs to \"other\""), "{err}");
        assert!(!dir.path().join("state").exists(), "nothing was touched");
    }
}
