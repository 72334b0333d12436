//! Checks a parent's iSCSI target with libiscsi before the kernel initiator logs in.
//!
//! open-iscsi reports most failures as a generic login error after retrying for a while;
//! this probe asks the portal which targets it offers (a SendTargets discovery session),
//! logs in once from userspace, reads the LUN's capacity and logs out, so an unreachable
//! parent, a missing target (with what the portal offers instead), refused credentials and
//! a LUN of the wrong size each get their own one-line error within the caller's timeout.
//!
//! The whole probe is bounded by one deadline: TCP reachability is tested first (libiscsi's
//! message for a refused connection is misleading), then libiscsi's asynchronous calls run
//! in an event loop of ours, because its `_sync` calls never time out on a target that
//! accepts the connection and then stays silent.

use std::cell::{Cell, RefCell};
use std::ffi::{CStr, CString};
use std::net::{SocketAddr, TcpStream};
use std::os::raw::{c_int, c_void};
use std::ptr::NonNull;
use std::rc::Rc;
use std::time::{Duration, Instant};

use sftsan_iscsi_sys as sys;

use crate::error::Rejection;

/// Why a target cannot be used, in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProbeError {
    /// A target name, initiator name or CHAP word that iSCSI does not accept; nothing was sent.
    #[error("{what} {value:?} is invalid: {why}")]
    InvalidName {
        /// Which value it is, e.g. "target name" or "CHAP user".
        what: &'static str,
        /// The value as given ("(hidden)" for a CHAP secret).
        value: String,
        /// What is wrong with it.
        why: String,
    },
    /// No TCP connection to the portal could be made within the timeout.
    #[error("iSCSI portal {portal} is unreachable: {reason}")]
    Unreachable {
        /// The portal probed, address and port.
        portal: SocketAddr,
        /// Why the connection failed, e.g. "connection refused".
        reason: String,
    },
    /// The login was refused with "target not found" or "target removed", or with "service
    /// unavailable", which is what LIO answers for a target name it does not have.
    #[error(
        "iSCSI portal {portal} has no target {target} (login refused: {answer}{})",
        offered_note(offered)
    )]
    TargetMissing {
        /// The portal probed, address and port.
        portal: SocketAddr,
        /// IQN of the target probed.
        target: String,
        /// The refusal the target gave, e.g. "target not found".
        answer: String,
        /// What the portal's discovery offered, when discovery answered.
        offered: Option<Vec<String>>,
    },
    /// The login was refused for its credentials (iSCSI login status 0x0201).
    #[error(
        "target {target} at {portal} refused the login of {initiator}: authentication failed ({})",
        match chap_user { Some(u) => format!("CHAP user {u:?}"), None => "no CHAP credentials given".to_string() }
    )]
    AuthenticationFailed {
        /// The portal probed, address and port.
        portal: SocketAddr,
        /// IQN of the target probed.
        target: String,
        /// The initiator name the probe logged in as.
        initiator: String,
        /// The CHAP user logged in with; `None` when no credentials were given.
        chap_user: Option<String>,
    },
    /// The target does not admit the initiator: it is not in its ACL (login status 0x0202).
    #[error("target {target} at {portal} does not admit initiator {initiator} (authorization failure: not in its ACL)")]
    NotAuthorized {
        /// The portal probed, address and port.
        portal: SocketAddr,
        /// IQN of the target probed.
        target: String,
        /// The initiator name the probe logged in as.
        initiator: String,
    },
    /// The login worked but the LUN did not answer TEST UNIT READY or READ CAPACITY.
    #[error("LUN {lun} of target {target} at {portal} is not usable: {detail}")]
    LunUnavailable {
        /// The portal probed, address and port.
        portal: SocketAddr,
        /// IQN of the target probed.
        target: String,
        /// The LUN probed.
        lun: u16,
        /// What failed, on one line (libiscsi's error where it gave one).
        detail: String,
    },
    /// The LUN's capacity is not the image's size.
    #[error(
        "LUN {lun} of target {target} at {portal} has {actual} bytes, expected {expected} bytes"
    )]
    WrongSize {
        /// The portal probed, address and port.
        portal: SocketAddr,
        /// IQN of the target probed.
        target: String,
        /// The LUN probed.
        lun: u16,
        /// Bytes the LUN should hold (the image's size).
        expected: u64,
        /// Bytes the LUN holds, from READ CAPACITY (16).
        actual: u64,
    },
    /// The target did not complete a stage of the probe before the deadline.
    #[error("target {target} at {portal} did not answer within {} ms ({stage})", after.as_millis())]
    Timeout {
        /// The portal probed, address and port.
        portal: SocketAddr,
        /// IQN of the target probed.
        target: String,
        /// The stage that ran out of time, e.g. "logging in".
        stage: &'static str,
        /// The timeout the probe was given.
        after: Duration,
    },
    /// Any other failure of the probe (libiscsi's error or an unexpected login status).
    #[error("target {target} at {portal}: {detail}")]
    Failed {
        /// The portal probed, address and port.
        portal: SocketAddr,
        /// IQN of the target probed.
        target: String,
        /// What went wrong, on one line.
        detail: String,
    },
}

impl ProbeError {
    /// A missing target's error with what the portal offers instead (`offered` asked only
    /// then); any other error as it is.
    fn with_offered(self, offered: impl FnOnce() -> Option<Vec<String>>) -> ProbeError {
        match self {
            ProbeError::TargetMissing {
                portal,
                target,
                answer,
                ..
            } => ProbeError::TargetMissing {
                portal,
                target,
                answer,
                offered: offered(),
            },
            other => other,
        }
    }
}

impl From<ProbeError> for crate::error::Error {
    /// The probe's findings by what a caller can do about them; the message stays.
    fn from(e: ProbeError) -> crate::error::Error {
        use crate::error::Error;
        let message = e.to_string();
        match e {
            ProbeError::InvalidName { what, .. } => Error::invalid(what, message),
            ProbeError::Unreachable { portal, reason } => {
                Error::unreachable(format!("iSCSI portal {portal}"), reason)
            }
            ProbeError::TargetMissing { target, .. } => {
                Error::not_found(format!("iSCSI target {target}"), message)
            }
            ProbeError::AuthenticationFailed { target, .. }
            | ProbeError::NotAuthorized { target, .. }
            | ProbeError::Failed { target, .. } => {
                Error::refused(format!("iSCSI target {target}"), message)
            }
            ProbeError::LunUnavailable { target, .. } => {
                Error::unreachable(format!("iSCSI target {target}"), message)
            }
            ProbeError::WrongSize { target, .. } => {
                Error::conflict(format!("iSCSI target {target}"), message)
            }
            ProbeError::Timeout { target, .. } => {
                Error::timeout(format!("iSCSI target {target}"), message)
            }
        }
    }
}

fn offered_note(offered: &Option<Vec<String>>) -> String {
    match offered.as_deref() {
        None => String::new(),
        Some([]) => "; the portal offers no target".into(),
        Some(targets) => format!("; the portal offers {}", targets.join(", ")),
    }
}

/// What libiscsi said when it refused a call.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
struct Libiscsi(String);

/// Checks that `iqn` is an iSCSI qualified name sftsan accepts: `iqn.` followed by lower
/// case letters, digits, `.`, `:` and `-`, at most 223 bytes (RFC 3720).
pub fn validate_iqn(iqn: &str) -> Result<(), Rejection> {
    if !iqn.starts_with("iqn.") || iqn.len() <= 4 {
        return Err(Rejection::new(
            "an IQN starts with \"iqn.\" (iqn.YYYY-MM.reversed.domain:name)",
        ));
    }
    if iqn.len() > 223 {
        return Err(Rejection(format!("{} bytes, at most 223", iqn.len())));
    }
    match iqn
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || ".:-".contains(*c)))
    {
        Some(c) => Err(Rejection(format!(
            "{c:?} is not allowed (lower case letters, digits, '.', ':' and '-')"
        ))),
        None => Ok(()),
    }
}

/// Checks a CHAP user name or secret: 1 to 255 printable ASCII characters, no spaces (they
/// are stored in open-iscsi's and LIO's line-based records).
pub fn validate_chap_word(word: &str) -> Result<(), Rejection> {
    if word.is_empty() || word.len() > 255 {
        return Err(Rejection(format!("{} bytes, must be 1 to 255", word.len())));
    }
    if !word.chars().all(|c| c.is_ascii_graphic()) {
        return Err(Rejection::new(
            "only printable ASCII without spaces is allowed",
        ));
    }
    Ok(())
}

/// Logs in to `iqn` at `portal` as `initiator_iqn` (with CHAP `(user, secret)` when given),
/// checks that `lun` is `expected_size` bytes, logs out. Everything within `timeout`.
pub fn probe_target(
    portal: SocketAddr,
    iqn: &str,
    lun: u16,
    initiator_iqn: &str,
    chap: Option<(&str, &str)>,
    expected_size: u64,
    timeout: Duration,
) -> Result<(), ProbeError> {
    let probe = Probe {
        portal,
        target: iqn,
        lun,
        initiator: initiator_iqn,
        chap_user: chap.map(|(u, _)| u),
        timeout,
    };
    probe.validate(chap)?;
    let deadline = Instant::now() + timeout;

    TcpStream::connect_timeout(&portal, timeout).map_err(|e| ProbeError::Unreachable {
        portal,
        reason: match e.kind() {
            std::io::ErrorKind::TimedOut | std::io::ErrorKind::WouldBlock => {
                format!("no answer within {} ms", timeout.as_millis())
            }
            _ => e.to_string(),
        },
    })?;

    let mut session = Session::new(initiator_iqn)
        .ok_or_else(|| probe.failed("cannot create a libiscsi context"))?;
    session
        .configure(Some(iqn), chap)
        .map_err(|e| probe.failed(&e.0))?;

    // Connect, log in, TEST UNIT READY on the LUN.
    let connected = session.completion();
    let portal_c = CString::new(portal.to_string()).expect("an address has no NUL");
    // SAFETY: the context is valid; `connected` lives in the session until after the
    // context is destroyed, so the callback never writes to freed memory.
    let rc = unsafe {
        sys::iscsi_full_connect_async(
            session.ctx.as_ptr(),
            portal_c.as_ptr(),
            lun.into(),
            Some(on_done),
            connected.as_ptr(),
        )
    };
    let login = if rc != 0 {
        Err(probe.login_error(&session.error(), false))
    } else {
        match session.run_until(&connected, deadline) {
            Ok(()) if connected.status.get() == sys::SCSI_STATUS_GOOD => Ok(()),
            Ok(()) => Err(probe.login_error(&session.error(), session.logged_in())),
            Err(LoopError::Timeout) => Err(probe.timeout("logging in")),
            Err(LoopError::Failed(detail)) => Err(probe.login_error(&detail, session.logged_in())),
        }
    };
    // Only a missing target costs a discovery session, in what is left of the time.
    login.map_err(|e| e.with_offered(|| discover(portal, initiator_iqn, deadline)))?;

    // READ CAPACITY (16).
    let capacity = session.completion();
    // SAFETY: as above; the task handed to the callback is freed by the session.
    let task = unsafe {
        sys::iscsi_readcapacity16_task(
            session.ctx.as_ptr(),
            lun.into(),
            Some(on_task),
            capacity.as_ptr(),
        )
    };
    if task.is_null() {
        return Err(probe.lun_error(&session.error()));
    }
    match session.run_until(&capacity, deadline) {
        Ok(()) => {}
        Err(LoopError::Timeout) => return Err(probe.timeout("reading the LUN's capacity")),
        Err(LoopError::Failed(detail)) => return Err(probe.lun_error(&detail)),
    }
    if capacity.status.get() != sys::SCSI_STATUS_GOOD {
        return Err(probe.lun_error(&format!("READ CAPACITY (16) failed: {}", session.error())));
    }
    let task = capacity.task.get();
    // SAFETY: the command completed with GOOD status and its task is alive (freed only when
    // the session drops); the returned struct lives in the task's memory.
    let data = unsafe { sys::scsi_datain_unmarshall(task) } as *const sys::scsi_readcapacity16;
    if data.is_null() {
        return Err(probe.lun_error("cannot parse the READ CAPACITY (16) data"));
    }
    // SAFETY: non-null, points into the live task, layout per scsi-lowlevel.h.
    let rc16 = unsafe { *data };
    let actual = rc16
        .returned_lba
        .checked_add(1)
        .and_then(|blocks| blocks.checked_mul(rc16.block_length.into()))
        .ok_or_else(|| probe.lun_error("the LUN reports an impossible capacity"))?;

    session.logout(deadline);

    if actual != expected_size {
        return Err(ProbeError::WrongSize {
            portal,
            target: iqn.to_string(),
            lun,
            expected: expected_size,
            actual,
        });
    }
    Ok(())
}

/// The target names `portal` offers to `initiator` (a SendTargets discovery session,
/// without credentials: sftsan's targets need none for discovery). None when discovery
/// fails or runs out of time: the login that follows then has the only word.
fn discover(portal: SocketAddr, initiator: &str, deadline: Instant) -> Option<Vec<String>> {
    let mut session = Session::new(initiator)?;
    session.configure(None, None).ok()?;
    let ctx = session.ctx.as_ptr();
    let portal_c = CString::new(portal.to_string()).ok()?;
    let connected = session.completion();
    // SAFETY: valid context; the completions live in the session until after the context
    // is destroyed, so no callback writes to freed memory.
    let rc = unsafe {
        sys::iscsi_connect_async(ctx, portal_c.as_ptr(), Some(on_done), connected.as_ptr())
    };
    session.finish(rc, &connected, deadline)?;
    let logged_in = session.completion();
    // SAFETY: as above.
    let rc = unsafe { sys::iscsi_login_async(ctx, Some(on_done), logged_in.as_ptr()) };
    session.finish(rc, &logged_in, deadline)?;
    let discovered = session.completion();
    // SAFETY: as above; on_discovery copies the list before libiscsi frees it.
    let rc = unsafe { sys::iscsi_discovery_async(ctx, Some(on_discovery), discovered.as_ptr()) };
    session.finish(rc, &discovered, deadline)?;
    session.logout(deadline);
    let mut targets = discovered.targets.take();
    targets.sort();
    Some(targets)
}

/// The parameters of one probe, to build its errors.
struct Probe<'a> {
    portal: SocketAddr,
    target: &'a str,
    lun: u16,
    initiator: &'a str,
    chap_user: Option<&'a str>,
    timeout: Duration,
}

impl Probe<'_> {
    fn validate(&self, chap: Option<(&str, &str)>) -> Result<(), ProbeError> {
        let invalid = |what, value: &str, why: Rejection| ProbeError::InvalidName {
            what,
            value: value.to_string(),
            why: why.0,
        };
        validate_iqn(self.target).map_err(|why| invalid("target name", self.target, why))?;
        validate_iqn(self.initiator)
            .map_err(|why| invalid("initiator name", self.initiator, why))?;
        if let Some((user, secret)) = chap {
            validate_chap_word(user).map_err(|why| invalid("CHAP user", user, why))?;
            // The secret is never echoed.
            validate_chap_word(secret).map_err(|why| invalid("CHAP secret", "(hidden)", why))?;
        }
        Ok(())
    }

    fn failed(&self, detail: &str) -> ProbeError {
        ProbeError::Failed {
            portal: self.portal,
            target: self.target.to_string(),
            detail: one_line(detail),
        }
    }

    fn timeout(&self, stage: &'static str) -> ProbeError {
        ProbeError::Timeout {
            portal: self.portal,
            target: self.target.to_string(),
            stage,
            after: self.timeout,
        }
    }

    fn lun_error(&self, detail: &str) -> ProbeError {
        ProbeError::LunUnavailable {
            portal: self.portal,
            target: self.target.to_string(),
            lun: self.lun,
            detail: one_line(detail),
        }
    }

    /// A failed connect/login (`logged_in`: the login worked and the LUN check failed).
    fn login_error(&self, detail: &str, logged_in: bool) -> ProbeError {
        if logged_in {
            return self.lun_error(detail);
        }
        match login_status(detail) {
            Some(status @ (0x0203 | 0x0204 | 0x0301)) => ProbeError::TargetMissing {
                portal: self.portal,
                target: self.target.to_string(),
                answer: match status {
                    0x0203 => "target not found",
                    0x0204 => "target removed",
                    _ => "service unavailable, LIO's answer for an unknown target name",
                }
                .to_string(),
                offered: None,
            },
            Some(0x0201) => ProbeError::AuthenticationFailed {
                portal: self.portal,
                target: self.target.to_string(),
                initiator: self.initiator.to_string(),
                chap_user: self.chap_user.map(str::to_string),
            },
            Some(0x0202) => ProbeError::NotAuthorized {
                portal: self.portal,
                target: self.target.to_string(),
                initiator: self.initiator.to_string(),
            },
            _ => self.failed(&format!("login failed: {detail}")),
        }
    }
}

/// The iSCSI login status (class << 8 | detail) in libiscsi's login error,
/// `Failed to log in to target. Status: Target not found(515)`.
fn login_status(detail: &str) -> Option<u16> {
    let rest = &detail[detail.find("Status: ")? + "Status: ".len()..];
    let open = rest.rfind('(')?;
    let close = open + rest[open..].find(')')?;
    rest[open + 1..close].trim().parse().ok()
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// What a callback reports. Written by libiscsi's callbacks through a shared pointer, so
/// every field is a `Cell`.
struct Completion {
    finished: Cell<bool>,
    status: Cell<c_int>,
    /// The SCSI task of a command, freed when the session drops.
    task: Cell<*mut sys::scsi_task>,
    /// The target names a discovery reported.
    targets: RefCell<Vec<String>>,
}

impl Completion {
    /// The pointer libiscsi hands back to the callback.
    fn as_ptr(self: &Rc<Self>) -> *mut c_void {
        Rc::as_ptr(self) as *mut c_void
    }
}

unsafe extern "C" fn on_done(
    _iscsi: *mut sys::iscsi_context,
    status: c_int,
    _command_data: *mut c_void,
    private_data: *mut c_void,
) {
    // SAFETY: private_data is a Completion owned by the session, alive until after the
    // context is destroyed (the last moment libiscsi calls back).
    let c = unsafe { &*(private_data as *const Completion) };
    c.status.set(status);
    c.finished.set(true);
}

unsafe extern "C" fn on_task(
    _iscsi: *mut sys::iscsi_context,
    status: c_int,
    command_data: *mut c_void,
    private_data: *mut c_void,
) {
    // SAFETY: as in on_done.
    let c = unsafe { &*(private_data as *const Completion) };
    if c.task.get().is_null() {
        c.task.set(command_data as *mut sys::scsi_task);
    }
    c.status.set(status);
    c.finished.set(true);
}

unsafe extern "C" fn on_discovery(
    _iscsi: *mut sys::iscsi_context,
    status: c_int,
    command_data: *mut c_void,
    private_data: *mut c_void,
) {
    // SAFETY: as in on_done.
    let c = unsafe { &*(private_data as *const Completion) };
    if status == sys::SCSI_STATUS_GOOD {
        let mut at = command_data as *const sys::iscsi_discovery_address;
        let mut targets = c.targets.borrow_mut();
        // SAFETY: libiscsi's list, valid during this callback; each name NUL-terminated.
        while let Some(address) = unsafe { at.as_ref() } {
            if !address.target_name.is_null() {
                // SAFETY: checked non-NULL above; libiscsi's NUL-terminated string, valid
                // while this callback runs (the name is copied before it returns).
                let name = unsafe { CStr::from_ptr(address.target_name) };
                targets.push(name.to_string_lossy().into_owned());
            }
            at = address.next;
        }
    }
    c.status.set(status);
    c.finished.set(true);
}

enum LoopError {
    Timeout,
    Failed(String),
}

/// One libiscsi context, used by this thread only. Dropping it destroys the context (which
/// cancels anything in flight, running its callbacks), then frees the SCSI tasks.
struct Session {
    ctx: NonNull<sys::iscsi_context>,
    completions: Vec<Rc<Completion>>,
}

impl Session {
    fn new(initiator: &str) -> Option<Session> {
        let name = CString::new(initiator).ok()?;
        // SAFETY: libiscsi copies the name.
        let ctx = NonNull::new(unsafe { sys::iscsi_create_context(name.as_ptr()) })?;
        Some(Session {
            ctx,
            completions: Vec::new(),
        })
    }

    /// A normal session to `target`, or a discovery session (None).
    fn configure(
        &mut self,
        target: Option<&str>,
        chap: Option<(&str, &str)>,
    ) -> Result<(), Libiscsi> {
        let cstr = |s: &str| CString::new(s).map_err(|_| Libiscsi("a name contains NUL".into()));
        let ctx = self.ctx.as_ptr();
        // SAFETY: valid context; libiscsi copies the strings.
        unsafe {
            let session_type = match target {
                Some(target) => {
                    let target = cstr(target)?;
                    if sys::iscsi_set_targetname(ctx, target.as_ptr()) != 0 {
                        return Err(Libiscsi(self.error()));
                    }
                    sys::ISCSI_SESSION_NORMAL
                }
                None => sys::ISCSI_SESSION_DISCOVERY,
            };
            if sys::iscsi_set_session_type(ctx, session_type) != 0
                || sys::iscsi_set_header_digest(ctx, sys::ISCSI_HEADER_DIGEST_NONE_CRC32C) != 0
            {
                return Err(Libiscsi(self.error()));
            }
            sys::iscsi_set_noautoreconnect(ctx, 1);
            if let Some((user, secret)) = chap {
                let (user, secret) = (cstr(user)?, cstr(secret)?);
                if sys::iscsi_set_initiator_username_pwd(ctx, user.as_ptr(), secret.as_ptr()) != 0 {
                    return Err(Libiscsi(self.error()));
                }
            }
        }
        Ok(())
    }

    /// A new completion; the session keeps a reference until after the context is
    /// destroyed, so the pointer libiscsi gets stays valid as long as it may call back.
    fn completion(&mut self) -> Rc<Completion> {
        let c = Rc::new(Completion {
            finished: Cell::new(false),
            status: Cell::new(sys::SCSI_STATUS_ERROR),
            task: Cell::new(std::ptr::null_mut()),
            targets: RefCell::new(Vec::new()),
        });
        self.completions.push(Rc::clone(&c));
        c
    }

    /// Waits for a call started with return code `rc` to complete with GOOD status.
    fn finish(&mut self, rc: c_int, done: &Completion, deadline: Instant) -> Option<()> {
        if rc != 0 {
            return None;
        }
        self.run_until(done, deadline).ok()?;
        (done.status.get() == sys::SCSI_STATUS_GOOD).then_some(())
    }

    fn error(&self) -> String {
        // SAFETY: valid context; the string is owned by it and copied at once.
        let err = unsafe { sys::iscsi_get_error(self.ctx.as_ptr()) };
        if err.is_null() {
            return "unknown libiscsi error".into();
        }
        // SAFETY: a NUL-terminated string owned by the context.
        let text = unsafe { CStr::from_ptr(err) }.to_string_lossy();
        if text.trim().is_empty() {
            "unknown libiscsi error".into()
        } else {
            one_line(&text)
        }
    }

    fn logged_in(&self) -> bool {
        // SAFETY: valid context.
        unsafe { sys::iscsi_is_logged_in(self.ctx.as_ptr()) != 0 }
    }

    /// Services the connection until `done` finishes or `deadline` passes.
    fn run_until(&mut self, done: &Completion, deadline: Instant) -> Result<(), LoopError> {
        let ctx = self.ctx.as_ptr();
        loop {
            if done.finished.get() {
                return Ok(());
            }
            let now = Instant::now();
            if now >= deadline {
                return Err(LoopError::Timeout);
            }
            // Wake at least once a second so libiscsi's own timers run.
            let wait = (deadline - now).min(Duration::from_secs(1));
            // SAFETY: valid context.
            let (fd, events) = unsafe { (sys::iscsi_get_fd(ctx), sys::iscsi_which_events(ctx)) };
            let revents = if fd < 0 || events == 0 {
                // libiscsi asks to be called again later (iscsi.h: wait >= 100 ms).
                std::thread::sleep(wait.min(Duration::from_millis(100)));
                0
            } else {
                let mut pfd = libc::pollfd {
                    fd,
                    events: events as libc::c_short,
                    revents: 0,
                };
                let ms = wait.as_millis().max(1) as c_int;
                // SAFETY: one valid pollfd.
                let n = unsafe { libc::poll(&mut pfd, 1, ms) };
                if n < 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(LoopError::Failed(format!("poll: {e}")));
                }
                pfd.revents as c_int
            };
            // SAFETY: valid context; callbacks only touch live completions.
            if unsafe { sys::iscsi_service(ctx, revents) } < 0 {
                if done.finished.get() {
                    return Ok(());
                }
                return Err(LoopError::Failed(self.error()));
            }
        }
    }

    /// A polite logout, bounded by `deadline` (at most 2 s); failures are ignored: the
    /// context's destruction closes the connection anyway.
    fn logout(&mut self, deadline: Instant) {
        let done = self.completion();
        // SAFETY: valid context; `done` outlives it.
        let rc =
            unsafe { sys::iscsi_logout_async(self.ctx.as_ptr(), Some(on_done), done.as_ptr()) };
        if rc == 0 {
            let bound = deadline.min(Instant::now() + Duration::from_secs(2));
            let _ = self.run_until(&done, bound);
        }
        // SAFETY: valid context; disconnecting a logged-out (or failed) session is allowed.
        unsafe { sys::iscsi_disconnect(self.ctx.as_ptr()) };
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the context is valid and destroyed once; the completions its cancelled
        // callbacks write to are still alive (dropped after this body).
        unsafe { sys::iscsi_destroy_context(self.ctx.as_ptr()) };
        for c in &self.completions {
            let task = c.task.replace(std::ptr::null_mut());
            if !task.is_null() {
                // SAFETY: a task handed to us by a callback, freed once.
                unsafe { sys::scsi_free_scsi_task(task) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    const TARGET: &str = "iqn.2014-12.org.sftsan:test.image.base";
    const INITIATOR: &str = "iqn.2014-12.org.sftsan:test.node.n1";

    fn probe() -> Probe<'static> {
        Probe {
            portal: "127.0.0.1:3260".parse().unwrap(),
            target: TARGET,
            lun: 0,
            initiator: INITIATOR,
            chap_user: Some("n1"),
            timeout: Duration::from_secs(5),
        }
    }

    #[test]
    fn iqns_are_checked() {
        assert_eq!(validate_iqn(TARGET), Ok(()));
        assert_eq!(validate_iqn("iqn.2003-01.org.linux-iscsi.x:sn.1"), Ok(()));
        for bad in [
            "",
            "iqn.",
            "eui.02004567a425678d",
            "iqn.2014-12.org.x:Upper",
            "iqn.2014-12.org.x:a b",
            "iqn.2014-12.org.x:a_b",
            "iqn.x;rm -rf /",
            "iqn.x\n",
        ] {
            assert!(validate_iqn(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(validate_iqn(&format!("iqn.{}", "a".repeat(220))).is_err());
    }

    #[test]
    fn chap_words_are_checked() {
        assert_eq!(validate_chap_word("n1-user"), Ok(()));
        assert_eq!(validate_chap_word("s3cr3t!#%"), Ok(()));
        for bad in ["", "with space", "new\nline", "tab\t", "é"] {
            assert!(validate_chap_word(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(validate_chap_word(&"x".repeat(256)).is_err());
    }

    #[test]
    fn the_login_status_is_read_from_libiscsis_message() {
        let msg = |s| format!("Failed to log in to target. Status: {s}");
        assert_eq!(login_status(&msg("Target not found(515)")), Some(0x0203));
        assert_eq!(
            login_status(&msg("Authentication failure(513)")),
            Some(0x0201)
        );
        assert_eq!(
            login_status(&msg("Authorization failure(514)")),
            Some(0x0202)
        );
        assert_eq!(login_status("iscsi_service failed with : Failed to log in to target. Status: Target not found(515)"), Some(0x0203));
        assert_eq!(login_status("Connection refused"), None);
        assert_eq!(login_status("Status: nonsense"), None);
    }

    #[test]
    fn login_failures_get_their_own_errors() {
        let p = probe();
        let status = |s| format!("Failed to log in to target. Status: {s}");
        let missing = p.login_error(&status("Target not found(515)"), false);
        assert!(matches!(missing, ProbeError::TargetMissing { .. }));
        assert_eq!(
            missing.to_string(),
            format!("iSCSI portal 127.0.0.1:3260 has no target {TARGET} (login refused: target not found)")
        );
        // What discovery found is named.
        let offered = |targets: Vec<String>| {
            p.login_error(&status("Target not found(515)"), false)
                .with_offered(|| Some(targets))
        };
        assert_eq!(
            offered(vec![
                "iqn.2014-12.org.sftsan:test.a".into(),
                "iqn.2014-12.org.sftsan:test.b".into(),
            ])
            .to_string(),
            format!("iSCSI portal 127.0.0.1:3260 has no target {TARGET} (login refused: target not found; the portal offers iqn.2014-12.org.sftsan:test.a, iqn.2014-12.org.sftsan:test.b)")
        );
        assert!(offered(vec![])
            .to_string()
            .ends_with("; the portal offers no target)"));
        // Other errors are not about targets: nothing is asked.
        let refused = p.login_error(&status("Authentication failure(513)"), false);
        assert_eq!(
            refused.clone().with_offered(|| panic!("discovery asked")),
            refused
        );
        // LIO answers an unknown target name with "service unavailable".
        let lio = p.login_error(&status("Service unavailable(769)"), false);
        assert!(matches!(lio, ProbeError::TargetMissing { .. }), "{lio}");
        assert!(lio.to_string().contains("unknown target name"), "{lio}");
        let auth = p.login_error(&status("Authentication failure(513)"), false);
        assert!(matches!(auth, ProbeError::AuthenticationFailed { .. }));
        assert_eq!(
            auth.to_string(),
            format!("target {TARGET} at 127.0.0.1:3260 refused the login of {INITIATOR}: authentication failed (CHAP user \"n1\")")
        );
        assert!(matches!(
            p.login_error(&status("Authorization failure(514)"), false),
            ProbeError::NotAuthorized { .. }
        ));
        assert!(matches!(
            p.login_error("TestUnitReady failed", true),
            ProbeError::LunUnavailable { lun: 0, .. }
        ));
        let other = p.login_error("Some\nmulti-line   error", false);
        assert!(matches!(other, ProbeError::Failed { .. }));
        assert!(!other.to_string().contains('\n'), "{other}");
    }

    #[test]
    fn a_wrong_size_names_both_sizes() {
        let e = ProbeError::WrongSize {
            portal: "127.0.0.1:3260".parse().unwrap(),
            target: TARGET.into(),
            lun: 1,
            expected: 16 << 20,
            actual: 8 << 20,
        };
        let line = e.to_string();
        assert!(
            line.contains("16777216") && line.contains("8388608"),
            "{line}"
        );
        assert!(line.contains("LUN 1"), "{line}");
    }

    #[test]
    fn invalid_names_are_refused_before_connecting() {
        // A port nobody listens on: an invalid name must be reported, not unreachability.
        let portal: SocketAddr = "127.0.0.1:9".parse().unwrap();
        let t = Duration::from_secs(1);
        let e = probe_target(portal, "iqn.X", 0, INITIATOR, None, 0, t).unwrap_err();
        assert!(
            matches!(
                e,
                ProbeError::InvalidName {
                    what: "target name",
                    ..
                }
            ),
            "{e}"
        );
        let e = probe_target(portal, TARGET, 0, "bad name", None, 0, t).unwrap_err();
        assert!(
            matches!(
                e,
                ProbeError::InvalidName {
                    what: "initiator name",
                    ..
                }
            ),
            "{e}"
        );
        let e =
            probe_target(portal, TARGET, 0, INITIATOR, Some(("u", "has space")), 0, t).unwrap_err();
        assert!(
            matches!(
                e,
                ProbeError::InvalidName {
                    what: "CHAP secret",
                    ..
                }
            ),
            "{e}"
        );
        assert!(
            !e.to_string().contains("has space"),
            "the secret leaked: {e}"
        );
    }

    #[test]
    fn a_closed_port_is_reported_unreachable() {
        // Bind and drop a listener: the port is then (almost certainly) closed.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let portal: SocketAddr = ([127, 0, 0, 1], port).into();
        let e = probe_target(
            portal,
            TARGET,
            0,
            INITIATOR,
            None,
            0,
            Duration::from_secs(2),
        )
        .unwrap_err();
        assert!(matches!(e, ProbeError::Unreachable { .. }), "{e}");
        assert!(e.to_string().contains(&portal.to_string()), "{e}");
    }

    #[test]
    fn a_silent_target_times_out_at_the_deadline() {
        // Accepts the connection, reads the login request and never answers.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let portal = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut held = Vec::new();
            // The reachability check's connection, then libiscsi's.
            for _ in 0..2 {
                let (mut s, _) = listener.accept().unwrap();
                let mut buf = [0u8; 48];
                let _ = s.set_read_timeout(Some(Duration::from_millis(200)));
                let _ = s.read(&mut buf);
                held.push(s);
            }
            held
        });
        let start = Instant::now();
        let e = probe_target(
            portal,
            TARGET,
            0,
            INITIATOR,
            None,
            0,
            Duration::from_millis(1500),
        )
        .unwrap_err();
        let took = start.elapsed();
        assert!(
            matches!(
                e,
                ProbeError::Timeout {
                    stage: "logging in",
                    ..
                }
            ),
            "{e}"
        );
        assert!(took < Duration::from_secs(5), "the probe took {took:?}");
        drop(server.join().unwrap());
    }

    #[test]
    fn a_peer_that_closes_at_once_is_a_failed_login() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let portal = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            for _ in 0..2 {
                let (s, _) = listener.accept().unwrap();
                drop(s);
            }
        });
        let e = probe_target(
            portal,
            TARGET,
            0,
            INITIATOR,
            None,
            0,
            Duration::from_secs(3),
        )
        .unwrap_err();
        assert!(matches!(e, ProbeError::Failed { .. }), "{e}");
        assert!(!e.to_string().contains('\n'));
        server.join().unwrap();
    }
}
