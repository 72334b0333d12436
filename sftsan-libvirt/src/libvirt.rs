//! The libvirt calls sftsan makes, through the `virt` crate: domains and dir pools.

use serde::Serialize;
use std::sync::Once;
use virt::connect::Connect;
use virt::domain::Domain as VirtDomain;

use crate::xml::Domain;
use sftsan_core::error::{Error, Result};

/// The default connection (the system QEMU driver).
pub const DEFAULT_URI: &str = "qemu:///system";

/// libvirt's error, in one line.
fn msg(e: virt::error::Error) -> String {
    e.message().replace('\n', " ")
}

/// A libvirt failure about `what`, of the kind its error number says.
fn lv(what: impl Into<String>, e: virt::error::Error) -> Error {
    use virt::error::ErrorNumber;
    let what = what.into();
    let missing = is_missing(&e);
    let code = e.code();
    let detail = msg(e);
    if missing {
        Error::not_found(what, detail)
    } else if code.is_known_and(|c| matches!(c, ErrorNumber::OperationInvalid)) {
        Error::conflict(what, detail)
    } else if code.is_known_and(|c| {
        matches!(
            c,
            ErrorNumber::NoConnect | ErrorNumber::Rpc | ErrorNumber::SystemError
        )
    }) {
        Error::unreachable(what, detail)
    } else {
        Error::refused(what, detail)
    }
}

/// Whether a libvirt error says the object does not exist.
fn is_missing(e: &virt::error::Error) -> bool {
    use virt::error::ErrorNumber;
    e.code().is_known_and(|c| {
        matches!(
            c,
            ErrorNumber::NoDomain | ErrorNumber::NoStoragePool | ErrorNumber::NoStorageVolume
        )
    })
}

/// Whether a domain is defined and whether it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainState {
    /// No domain by that name.
    Undefined,
    /// Defined but not active.
    Stopped,
    /// Active.
    Running,
}

impl DomainState {
    /// The state in words, as `virsh` puts it.
    pub fn as_str(self) -> &'static str {
        match self {
            DomainState::Undefined => "undefined",
            DomainState::Stopped => "shut off",
            DomainState::Running => "running",
        }
    }
}

/// Why libvirt says a domain is paused (the ones sftsan acts on, and the rest by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PauseReason {
    /// A disk's I/O error with `error_policy='stop'`: the VM waits to be resumed.
    IoError,
    /// Someone paused it (`virsh suspend`): left alone.
    User,
    /// QEMU stopped and libvirt was not told why. libvirt says this of an I/O error whose
    /// BLOCK_IO_ERROR event QEMU delivered after the STOP event (QEMU sends at most one
    /// BLOCK_IO_ERROR per second).
    Unknown,
    /// Any other reason, as libvirt names it (`migration`, `snapshot`, ...).
    Other(String),
}

impl std::fmt::Display for PauseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            PauseReason::IoError => f.write_str("I/O error"),
            PauseReason::User => f.write_str("user"),
            PauseReason::Unknown => f.write_str("unknown"),
            PauseReason::Other(r) => f.write_str(r),
        }
    }
}

/// A domain's state with the reason libvirt gives for a pause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// No domain by that name.
    Undefined,
    /// Defined but not active.
    ShutOff,
    /// Active and running.
    Running,
    /// Active but paused, and why.
    Paused(PauseReason),
    /// Anything else (shutting down, crashed, suspended to RAM, blocked), in libvirt's word.
    Other(String),
}

impl std::fmt::Display for RunState {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        match self {
            RunState::Undefined => f.write_str("undefined"),
            RunState::ShutOff => f.write_str("shut off"),
            RunState::Running => f.write_str("running"),
            RunState::Paused(reason) => write!(f, "paused ({reason})"),
            RunState::Other(s) => f.write_str(s),
        }
    }
}

/// One disk error libvirt reports for a domain (`virsh domblkerror`). QEMU keeps a
/// device's error status after a resume (it resets only drives made with `-drive`, and
/// libvirt uses `-blockdev`), so this says a disk failed since the domain started, not
/// that it fails now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskError {
    /// The disk's target (`vda`).
    pub disk: String,
    /// The host ran out of space for it (else an unspecified I/O error).
    pub no_space: bool,
}

impl std::fmt::Display for DiskError {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        let what = if self.no_space {
            "no space"
        } else {
            "I/O error"
        };
        write!(f, "{}: {what}", self.disk)
    }
}

/// One connection, shared by a batch's threads (libvirt connections are thread-safe).
pub struct Libvirt {
    conn: Connect,
    uri: String,
}

impl Libvirt {
    /// Connects to `uri` and turns off libvirt's printing of errors to stderr.
    pub fn open(uri: &str) -> Result<Libvirt> {
        Libvirt::open_as(uri, uri)
    }

    /// Connects to `uri`, which errors and [`Libvirt::uri`] call `shown` (a URI without
    /// the parameters that are the caller's plumbing, such as a wrapper's path).
    pub fn open_as(uri: &str, shown: &str) -> Result<Libvirt> {
        static QUIET: Once = Once::new();
        // Without this libvirt prints every error to stderr as well.
        QUIET.call_once(virt::error::clear_error_callback);
        let conn = Connect::open(Some(uri)).map_err(|e| lv(format!("libvirt at {shown}"), e))?;
        Ok(Libvirt {
            conn,
            uri: shown.into(),
        })
    }

    /// The URI this connection was opened with (as shown).
    pub fn uri(&self) -> &str {
        &self.uri
    }

    fn lookup(&self, name: &str) -> Result<Option<VirtDomain>> {
        match self.conn.lookup_domain_by_name(name) {
            Ok(d) => Ok(Some(d)),
            Err(e) if is_missing(&e) => Ok(None),
            Err(e) => Err(lv(name, e)),
        }
    }

    fn get(&self, name: &str) -> Result<VirtDomain> {
        self.lookup(name)?
            .ok_or_else(|| Error::not_found(name, "not defined (run `sftsan vm define` first)"))
    }

    /// The state of the domain named `name` (`Undefined` if there is none).
    pub fn state(&self, name: &str) -> Result<DomainState> {
        match self.lookup(name)? {
            None => Ok(DomainState::Undefined),
            Some(d) => match d.is_active() {
                Ok(true) => Ok(DomainState::Running),
                Ok(false) => Ok(DomainState::Stopped),
                Err(e) => Err(lv(name, e)),
            },
        }
    }

    /// The state of the domain named `name` with libvirt's reason for a pause.
    pub fn run_state(&self, name: &str) -> Result<RunState> {
        use virt::domain::{DomainPausedReason as P, DomainState as S, DomainStateReason};
        use virt::enumutil::Enum;
        let Some(d) = self.lookup(name)? else {
            return Ok(RunState::Undefined);
        };
        let (state, reason) = d.state().map_err(|e| lv(name, e))?;
        let state = match state {
            Enum::Known(s) => s,
            // virt's state() drops libvirt's error and reports it as an unknown state:
            // ask again in a way that returns the error.
            Enum::Unknown(raw) => {
                d.info().map_err(|e| lv(name, e))?;
                return Err(Error::refused(name, format!("libvirt gave state {raw}")));
            }
        };
        Ok(match state {
            S::Running => RunState::Running,
            S::Shutoff => RunState::ShutOff,
            S::Paused => RunState::Paused(match reason {
                Enum::Known(DomainStateReason::Paused(r)) => match r {
                    Enum::Known(P::IOError) => PauseReason::IoError,
                    Enum::Known(P::User) => PauseReason::User,
                    Enum::Known(P::Unknown) => PauseReason::Unknown,
                    Enum::Known(other) => PauseReason::Other(other.to_string()),
                    Enum::Unknown(raw) => PauseReason::Other(format!("reason {raw}")),
                },
                _ => PauseReason::Unknown,
            }),
            S::NoState => RunState::Other("no state".into()),
            S::Blocked => RunState::Other("blocked".into()),
            S::Shutdown => RunState::Other("shutting down".into()),
            S::Crashed => RunState::Other("crashed".into()),
            S::PMSuspended => RunState::Other("suspended (power management)".into()),
        })
    }

    /// Resumes a paused domain (QEMU's `cont`: the requests an I/O error stopped are
    /// retried).
    pub fn resume(&self, name: &str) -> Result<()> {
        self.get(name)?
            .resume()
            .map_err(|e| lv(format!("{name}: resume"), e))
    }

    /// Pauses a running domain, as a user would (`virsh suspend`).
    pub fn suspend(&self, name: &str) -> Result<()> {
        self.get(name)?
            .suspend()
            .map_err(|e| lv(format!("{name}: suspend"), e))
    }

    /// The disk errors libvirt reports for a running domain (see [`DiskError`]).
    pub fn disk_errors(&self, name: &str) -> Result<Vec<DiskError>> {
        use virt::sys;
        let d = self.get(name)?;
        let failed = |what: &str| lv(format!("{name}: {what}"), virt::error::Error::last_error());
        // SAFETY: d is a live domain; a NULL array with 0 entries asks for the count.
        let count = unsafe { sys::virDomainGetDiskErrors(d.as_ptr(), std::ptr::null_mut(), 0, 0) };
        if count < 0 {
            return Err(failed("disk errors"));
        }
        if count == 0 {
            return Ok(vec![]);
        }
        let mut errors = vec![
            sys::virDomainDiskError {
                disk: std::ptr::null_mut(),
                error: 0,
            };
            count as usize
        ];
        // SAFETY: the array holds `count` entries; libvirt fills at most that many and
        // returns how many it filled, each with a string this code frees below.
        let filled = unsafe {
            sys::virDomainGetDiskErrors(d.as_ptr(), errors.as_mut_ptr(), count as u32, 0)
        };
        if filled < 0 {
            return Err(failed("disk errors"));
        }
        let mut out = Vec::new();
        for e in errors.iter().take(filled as usize) {
            if e.disk.is_null() {
                continue;
            }
            // SAFETY: libvirt returned a NUL-terminated string it allocated with malloc;
            // it is read once and freed once.
            let disk = unsafe {
                let s = std::ffi::CStr::from_ptr(e.disk)
                    .to_string_lossy()
                    .into_owned();
                libc::free(e.disk.cast());
                s
            };
            if e.error as u32 != sys::VIR_DOMAIN_DISK_ERROR_NONE {
                out.push(DiskError {
                    disk,
                    no_space: e.error as u32 == sys::VIR_DOMAIN_DISK_ERROR_NO_SPACE,
                });
            }
        }
        Ok(out)
    }

    /// The read and write requests a running domain's disks completed, all disks together
    /// (failed requests are not counted).
    pub fn disk_requests(&self, name: &str) -> Result<u64> {
        use virt::sys;
        let d = self.get(name)?;
        let mut stats = sys::virDomainBlockStatsStruct {
            rd_req: 0,
            rd_bytes: 0,
            wr_req: 0,
            wr_bytes: 0,
            errs: 0,
        };
        // virt's block_stats() ignores libvirt's failure and reads the struct anyway.
        // SAFETY: d is a live domain, the disk name a NUL-terminated (empty: every disk)
        // string, and the struct as large as the size passed.
        let rc = unsafe {
            sys::virDomainBlockStats(
                d.as_ptr(),
                c"".as_ptr(),
                &mut stats,
                std::mem::size_of::<sys::virDomainBlockStatsStruct>(),
            )
        };
        if rc < 0 {
            return Err(lv(
                format!("{name}: disk statistics"),
                virt::error::Error::last_error(),
            ));
        }
        Ok(stats.rd_req.max(0) as u64 + stats.wr_req.max(0) as u64)
    }

    /// The UUID of a defined domain, if there is one by that name.
    pub fn uuid(&self, name: &str) -> Result<Option<String>> {
        match self.lookup(name)? {
            None => Ok(None),
            Some(d) => d.uuid_string().map(Some).map_err(|e| lv(name, e)),
        }
    }

    /// Defines (or redefines) a persistent domain.
    pub fn define(&self, domain: &Domain) -> Result<()> {
        self.conn
            .define_domain_xml(&domain.to_xml())
            .map(|_| ())
            .map_err(|e| lv(format!("{}: define", domain.name()), e))
    }

    /// Defines a domain from libvirt XML as it is (e.g. to restore an earlier definition).
    pub fn define_xml(&self, name: &str, xml: &str) -> Result<()> {
        self.conn
            .define_domain_xml(xml)
            .map(|_| ())
            .map_err(|e| lv(format!("{name}: define"), e))
    }

    /// A domain's persistent definition, as libvirt's XML.
    pub fn inactive_xml(&self, name: &str) -> Result<String> {
        const INACTIVE: u32 = 2; // VIR_DOMAIN_XML_INACTIVE
        self.get(name)?.xml_desc(INACTIVE).map_err(|e| lv(name, e))
    }

    /// Starts a defined domain.
    pub fn start(&self, name: &str) -> Result<()> {
        self.get(name)?
            .create()
            .map_err(|e| lv(format!("{name}: start"), e))
    }

    /// Stops a domain hard. libvirt reports a failure when QEMU takes longer to exit than
    /// it waits (seen on a loaded host: "Failed to terminate process ... Device or
    /// resource busy"); the domain is then asked again, a bounded number of times, and
    /// the call succeeds once it is no longer running.
    pub fn destroy(&self, name: &str) -> Result<()> {
        const ATTEMPTS: usize = 3;
        let domain = self.get(name)?;
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match domain.destroy() {
                Ok(()) => return Ok(()),
                Err(e) => last = Some(e),
            }
            if !domain.is_active().unwrap_or(true) {
                return Ok(());
            }
        }
        let what = format!("{name}: destroy (after {ATTEMPTS} attempts)");
        Err(match last {
            Some(e) => lv(what, e),
            None => Error::refused(what, "failed"),
        })
    }

    /// Removes a domain's persistent definition.
    pub fn undefine(&self, name: &str) -> Result<()> {
        self.get(name)?
            .undefine()
            .map_err(|e| lv(format!("{name}: undefine"), e))
    }

    /// libvirt's current XML of a domain, parsed.
    pub fn domain(&self, name: &str) -> Result<Domain> {
        let xml = self.get(name)?.xml_desc(0).map_err(|e| lv(name, e))?;
        Domain::from_xml(&xml)
            .map_err(|e| Error::corrupt(format!("{name}: libvirt's domain XML"), e.to_string()))
    }

    /// Every domain (running or not) that carries sftsan metadata.
    pub fn sftsan_domains(&self) -> Result<Vec<Domain>> {
        let all = self
            .conn
            .list_all_domains(0)
            .map_err(|e| lv("list domains", e))?;
        let mut out = Vec::new();
        for d in all {
            let xml = match d.xml_desc(0) {
                Ok(xml) => xml,
                // Undefined since the listing: not there any more.
                Err(e) if is_missing(&e) => continue,
                Err(e) => return Err(lv("domain XML", e)),
            };
            if let Ok(parsed) = Domain::from_xml(&xml) {
                if parsed.sftsan().is_some() {
                    out.push(parsed);
                }
            }
        }
        Ok(out)
    }

    /// HMP command through the QEMU monitor (tests and diagnostics).
    pub fn hmp(&self, name: &str, command: &str) -> Result<String> {
        const HMP: u32 = 1; // VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
        self.get(name)?
            .qemu_monitor_command(command, HMP)
            .map_err(|e| lv(name, e))
    }

    /// Makes a persistent, started, autostarted `dir` pool of that name over `path` exist,
    /// and refreshes it. Returns whether it was created.
    pub fn ensure_pool(&self, name: &str, path: &std::path::Path) -> Result<bool> {
        let err = |what: &str, e| lv(format!("pool {name}: {what}"), e);
        let (pool, created) = match self.conn.lookup_storage_pool_by_name(name) {
            Ok(p) => (p, false),
            Err(e) if is_missing(&e) => {
                let xml = pool_xml(name, path)?;
                let p = self
                    .conn
                    .define_storage_pool_xml(&xml, 0)
                    .map_err(|e| err("define", e))?;
                (p, true)
            }
            Err(e) => return Err(err("lookup", e)),
        };
        if !pool.is_active().map_err(|e| err("state", e))? {
            pool.create(0).map_err(|e| err("start", e))?;
        }
        if created {
            pool.set_autostart(true).map_err(|e| err("autostart", e))?;
        } else {
            pool.refresh(0).map_err(|e| err("refresh", e))?;
        }
        Ok(created)
    }

    /// Volume names of a pool (after its last refresh).
    pub fn pool_volumes(&self, name: &str) -> Result<Vec<String>> {
        let pool = self
            .conn
            .lookup_storage_pool_by_name(name)
            .map_err(|e| lv(format!("pool {name}"), e))?;
        let mut v = pool
            .list_volumes()
            .map_err(|e| lv(format!("pool {name}"), e))?;
        v.sort();
        Ok(v)
    }

    /// Stops and undefines a pool (its directory and volumes stay). Returns whether there
    /// was one.
    pub fn remove_pool(&self, name: &str) -> Result<bool> {
        let err = |what: &str, e| lv(format!("pool {name}: {what}"), e);
        let pool = match self.conn.lookup_storage_pool_by_name(name) {
            Ok(p) => p,
            Err(e) if is_missing(&e) => return Ok(false),
            Err(e) => return Err(err("lookup", e)),
        };
        if pool.is_active().map_err(|e| err("state", e))? {
            pool.destroy().map_err(|e| err("stop", e))?;
        }
        pool.undefine().map_err(|e| err("undefine", e))?;
        Ok(true)
    }
}

#[derive(Serialize)]
#[serde(rename = "pool")]
struct PoolXml {
    #[serde(rename = "@type")]
    kind: &'static str,
    name: String,
    target: PoolTarget,
}

#[derive(Serialize)]
struct PoolTarget {
    path: String,
}

fn pool_xml(name: &str, path: &std::path::Path) -> Result<String> {
    quick_xml::se::to_string(&PoolXml {
        kind: "dir",
        name: name.into(),
        target: PoolTarget {
            path: path.display().to_string(),
        },
    })
    .map_err(|e| Error::invalid(format!("pool {name}"), e.to_string()))
}
