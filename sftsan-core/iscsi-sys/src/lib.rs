//! Raw declarations of the few libiscsi functions sftsan calls, written by hand against
//! Debian 12's libiscsi-dev 1.19 (`/usr/include/iscsi/iscsi.h`, `scsi-lowlevel.h`).
//!
//! No crate for libiscsi exists, and bindgen would drag the whole (large) API in: this is
//! exactly what `sftsan_core::backends::kernel::target_probe` uses, nothing more. The
//! asynchronous calls are used (with an event loop of the caller's, bounded by a deadline)
//! because the `_sync` ones poll without ever timing out: a target that accepts the TCP
//! connection but never answers would block them forever.
//!
//! Everything here is `unsafe` to call; see the safe wrapper for the rules (one thread per
//! context, callbacks' private data outliving the context).

#![allow(non_camel_case_types)]

use libc::{c_char, c_int, c_void};
use std::marker::{PhantomData, PhantomPinned};

/// `struct iscsi_context`: opaque, only ever handled by pointer.
#[repr(C)]
pub struct iscsi_context {
    _data: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `struct scsi_task`: only its first member, `int status` (scsi-lowlevel.h), is declared;
/// the rest stays opaque. Only ever handled by pointer, never created or moved in Rust.
#[repr(C)]
pub struct scsi_task {
    /// The task's outcome, a `SCSI_STATUS_*` value.
    pub status: c_int,
    _rest: [u8; 0],
    _marker: PhantomData<(*mut u8, PhantomPinned)>,
}

/// `struct scsi_readcapacity16` (scsi-lowlevel.h), as `scsi_datain_unmarshall` returns it for
/// a READ CAPACITY (16) task. It lives in the task's memory and is freed with the task.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct scsi_readcapacity16 {
    /// Address of the LUN's last logical block, so the LUN holds `returned_lba + 1` blocks.
    pub returned_lba: u64,
    /// Bytes per logical block (e.g. 512 or 4096).
    pub block_length: u32,
    /// Protection information type (P_TYPE); meaningful only when `prot_en` is 1.
    pub p_type: u8,
    /// 1 when protection information is enabled on the LUN (PROT_EN).
    pub prot_en: u8,
    /// Protection information intervals exponent (P_I_EXPONENT).
    pub p_i_exp: u8,
    /// Logical blocks per physical block, as a power of two (e.g. 3: eight 512-byte blocks).
    pub lbppbe: u8,
    /// 1 when logical block provisioning (thin provisioning) is enabled (LBPME).
    pub lbpme: u8,
    /// 1 when unmapped blocks read back as zeros (LBPRZ).
    pub lbprz: u8,
    /// Lowest aligned logical block address: the first block on a physical block boundary.
    pub lalba: u16,
}

/// `struct iscsi_target_portal` (iscsi.h): one portal a discovered target is reachable at.
#[repr(C)]
pub struct iscsi_target_portal {
    /// The target's next portal; NULL after the last.
    pub next: *mut iscsi_target_portal,
    /// The portal's address as a C string, e.g. "192.0.2.10:3260,1" (with its portal group).
    pub portal: *const c_char,
}

/// `struct iscsi_discovery_address` (iscsi.h): one target a SendTargets discovery reported,
/// in a list that is valid only while the discovery's callback runs.
#[repr(C)]
pub struct iscsi_discovery_address {
    /// The next discovered target; NULL after the last.
    pub next: *mut iscsi_discovery_address,
    /// The target's IQN as a C string.
    pub target_name: *const c_char,
    /// The first of the portals the target is reachable at.
    pub portals: *mut iscsi_target_portal,
}

/// `iscsi_command_cb`: `status` is a `SCSI_STATUS_*`; `command_data` is the `scsi_task` for
/// SCSI commands and NULL (or call specific) for connect/login/logout.
pub type iscsi_command_cb = Option<
    unsafe extern "C" fn(
        iscsi: *mut iscsi_context,
        status: c_int,
        command_data: *mut c_void,
        private_data: *mut c_void,
    ),
>;

// enum iscsi_session_type
/// A discovery session: only SendTargets, no target name needed.
pub const ISCSI_SESSION_DISCOVERY: c_int = 1;
/// A normal session to one target (set with `iscsi_set_targetname`) for SCSI commands.
pub const ISCSI_SESSION_NORMAL: c_int = 2;

// enum iscsi_header_digest
/// Offer no header digest only.
pub const ISCSI_HEADER_DIGEST_NONE: c_int = 0;
/// Offer "None,CRC32C": prefer no header digest, accept CRC32C.
pub const ISCSI_HEADER_DIGEST_NONE_CRC32C: c_int = 1;
/// Offer "CRC32C,None": prefer a CRC32C header digest, accept none.
pub const ISCSI_HEADER_DIGEST_CRC32C_NONE: c_int = 2;
/// Offer a CRC32C header digest only.
pub const ISCSI_HEADER_DIGEST_CRC32C: c_int = 3;

// enum scsi_status
/// The call or command succeeded.
pub const SCSI_STATUS_GOOD: c_int = 0;
/// The target failed the command and reported sense data (SCSI CHECK CONDITION).
pub const SCSI_STATUS_CHECK_CONDITION: c_int = 2;
/// The target is busy and did not run the command; it may be retried.
pub const SCSI_STATUS_BUSY: c_int = 8;
/// The target redirected the login to another portal (libiscsi's own status).
pub const SCSI_STATUS_REDIRECT: c_int = 0x101;
/// The call was aborted before it completed, e.g. by `iscsi_destroy_context`.
pub const SCSI_STATUS_CANCELLED: c_int = 0x0f00_0000;
/// The call failed (connection, login or transport error); see `iscsi_get_error`.
pub const SCSI_STATUS_ERROR: c_int = 0x0f00_0001;
/// The call did not complete within libiscsi's own timeout.
pub const SCSI_STATUS_TIMEOUT: c_int = 0x0f00_0002;

extern "C" {
    /// A new context that logs in as `initiator_name`; NULL when out of memory.
    pub fn iscsi_create_context(initiator_name: *const c_char) -> *mut iscsi_context;
    /// Closes the connection (without a logout), cancels what is in flight (their callbacks
    /// run with `SCSI_STATUS_CANCELLED`) and frees the context.
    pub fn iscsi_destroy_context(iscsi: *mut iscsi_context) -> c_int;
    /// Sets the IQN of the target a normal session logs in to; 0 on success, < 0 on error.
    pub fn iscsi_set_targetname(iscsi: *mut iscsi_context, targetname: *const c_char) -> c_int;
    /// Sets the session type (`ISCSI_SESSION_*`) before login; 0 on success, < 0 on error.
    pub fn iscsi_set_session_type(iscsi: *mut iscsi_context, session_type: c_int) -> c_int;
    /// Sets the header digests offered (`ISCSI_HEADER_DIGEST_*`) before login; 0 on success.
    pub fn iscsi_set_header_digest(iscsi: *mut iscsi_context, header_digest: c_int) -> c_int;
    /// Sets the user and secret for one-way CHAP at login; 0 on success, < 0 on error.
    pub fn iscsi_set_initiator_username_pwd(
        iscsi: *mut iscsi_context,
        user: *const c_char,
        passwd: *const c_char,
    ) -> c_int;
    /// `state` 1: never reconnect on its own (a probe wants the first failure).
    pub fn iscsi_set_noautoreconnect(iscsi: *mut iscsi_context, state: c_int);
    /// The last error as text; owned by the context.
    pub fn iscsi_get_error(iscsi: *mut iscsi_context) -> *const c_char;
    /// Non-zero while the context is logged in to its target.
    pub fn iscsi_is_logged_in(iscsi: *mut iscsi_context) -> c_int;

    /// The socket to poll (it changes across reconnects: ask before every poll).
    pub fn iscsi_get_fd(iscsi: *mut iscsi_context) -> c_int;
    /// The poll events wanted now; 0 means "wait >= 100 ms and ask again".
    pub fn iscsi_which_events(iscsi: *mut iscsi_context) -> c_int;
    /// Processes `revents` from poll; < 0 on a fatal error.
    pub fn iscsi_service(iscsi: *mut iscsi_context, revents: c_int) -> c_int;

    /// Connects to `portal` (`host:port`, `[v6]:port`), logs in and checks that `lun`
    /// answers TEST UNIT READY. `cb` may run twice (again when the connection drops later).
    pub fn iscsi_full_connect_async(
        iscsi: *mut iscsi_context,
        portal: *const c_char,
        lun: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> c_int;
    /// Connects to `portal` without logging in (discovery sessions log in separately).
    pub fn iscsi_connect_async(
        iscsi: *mut iscsi_context,
        portal: *const c_char,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> c_int;
    /// Starts a login on a connected context; < 0 when it cannot start (then `cb` never runs).
    pub fn iscsi_login_async(
        iscsi: *mut iscsi_context,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> c_int;
    /// SendTargets on a logged-in discovery session: `command_data` of `cb` is the first
    /// `iscsi_discovery_address`, freed when `cb` returns.
    pub fn iscsi_discovery_async(
        iscsi: *mut iscsi_context,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> c_int;
    /// READ CAPACITY (16); the task reaches `cb` as `command_data` and is the caller's to free.
    pub fn iscsi_readcapacity16_task(
        iscsi: *mut iscsi_context,
        lun: c_int,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> *mut scsi_task;
    /// Starts a logout; `cb` runs with `SCSI_STATUS_GOOD` once the target has confirmed it.
    pub fn iscsi_logout_async(
        iscsi: *mut iscsi_context,
        cb: iscsi_command_cb,
        private_data: *mut c_void,
    ) -> c_int;
    /// Closes the connection (not allowed while logged in); 0 on success, < 0 on error.
    pub fn iscsi_disconnect(iscsi: *mut iscsi_context) -> c_int;

    /// The task's data-in parsed for its CDB (`scsi_readcapacity16` for READ CAPACITY 16),
    /// allocated in the task; NULL when it cannot be parsed.
    pub fn scsi_datain_unmarshall(task: *mut scsi_task) -> *mut c_void;
    /// Frees a task and what it holds (e.g. its unmarshalled data), once its callback has run.
    pub fn scsi_free_scsi_task(task: *mut scsi_task);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::{CStr, CString};

    #[test]
    fn a_context_is_created_configured_and_destroyed() {
        let name = CString::new("iqn.2014-12.org.sftsan:test.sys").unwrap();
        let target = CString::new("iqn.2014-12.org.sftsan:test.target").unwrap();
        // SAFETY: the strings outlive the calls (libiscsi copies them); the context is
        // used by this thread only and destroyed once.
        unsafe {
            let ctx = iscsi_create_context(name.as_ptr());
            assert!(!ctx.is_null());
            assert_eq!(iscsi_set_targetname(ctx, target.as_ptr()), 0);
            assert_eq!(iscsi_set_session_type(ctx, ISCSI_SESSION_NORMAL), 0);
            assert_eq!(
                iscsi_set_header_digest(ctx, ISCSI_HEADER_DIGEST_NONE_CRC32C),
                0
            );
            assert_eq!(iscsi_is_logged_in(ctx), 0);
            // Not connected: no socket yet.
            assert!(iscsi_get_fd(ctx) < 0);
            let err = iscsi_get_error(ctx);
            assert!(err.is_null() || CStr::from_ptr(err).to_str().is_ok());
            assert_eq!(iscsi_destroy_context(ctx), 0);
        }
    }

    #[test]
    fn readcapacity16_matches_the_header_layout() {
        // uint64_t, uint32_t, six uint8_t, uint16_t: 8 + 4 + 6 + 2 = 20, padded to 24.
        assert_eq!(std::mem::size_of::<scsi_readcapacity16>(), 24);
        assert_eq!(std::mem::align_of::<scsi_readcapacity16>(), 8);
    }
}
