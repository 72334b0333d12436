//! Result codes, the per-thread last error, and the boundary every entry point runs behind:
//! argument checks, error classification and `catch_unwind`.

use std::cell::RefCell;
use std::ffi::{c_char, CStr, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use sftsan_core::error::{Error as CoreError, ErrorKind};
use sftsan_core::spec::SpecError;

/// What a call did. Every fallible function returns one; `SFTSAN_RESULT_OK` is 0, every
/// other value is a failure whose message `sftsan_last_error` returns on the same thread.
/// Values are stable; new ones may be added at the end.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(non_camel_case_types)]
pub enum sftsan_result {
    /// Success: the outputs were written.
    Ok = 0,
    /// A required pointer argument was NULL.
    NullArgument = 1,
    /// A string argument was not valid UTF-8.
    InvalidUtf8 = 2,
    /// The spec could not be parsed or broke a rule (the message names the field).
    InvalidSpec = 3,
    /// sftsan or the system failed: a command, a daemon, a file, a step of `up` or `down`
    /// (which then rolled back what it had created).
    EngineFailure = 4,
    /// No such node, snapshot or spec file.
    NotFound = 5,
    /// The call needs the cluster (or the node) up, and it is not.
    NotUp = 6,
    /// sftsan panicked (a bug): the panic was caught at the boundary. The context stays
    /// usable; the cluster is as the journal left it (`sftsan_up` or `sftsan_down` resume).
    Panic = 7,
    /// An argument was well-formed but not acceptable (e.g. a snapshot on the origin).
    InvalidArgument = 8,
    /// Someone else is working on the cluster (another sftsan holds its state lock), or a
    /// node still serves children and cannot go down.
    Busy = 9,
}

impl sftsan_result {
    /// The name C sees, e.g. `SFTSAN_RESULT_NOT_UP`, NUL-terminated.
    pub(crate) fn name_with_nul(code: u32) -> &'static str {
        match code {
            0 => "SFTSAN_RESULT_OK\0",
            1 => "SFTSAN_RESULT_NULL_ARGUMENT\0",
            2 => "SFTSAN_RESULT_INVALID_UTF8\0",
            3 => "SFTSAN_RESULT_INVALID_SPEC\0",
            4 => "SFTSAN_RESULT_ENGINE_FAILURE\0",
            5 => "SFTSAN_RESULT_NOT_FOUND\0",
            6 => "SFTSAN_RESULT_NOT_UP\0",
            7 => "SFTSAN_RESULT_PANIC\0",
            8 => "SFTSAN_RESULT_INVALID_ARGUMENT\0",
            9 => "SFTSAN_RESULT_BUSY\0",
            _ => "SFTSAN_RESULT_UNKNOWN\0",
        }
    }
}

/// A failure on its way to the caller: its code and its message.
#[derive(Debug)]
pub(crate) struct Error {
    pub code: sftsan_result,
    pub message: String,
}

impl Error {
    pub fn new(code: sftsan_result, message: impl Into<String>) -> Error {
        Error {
            code,
            message: message.into(),
        }
    }

    /// The same failure with `context` (e.g. the spec path) in front of its message.
    pub fn context(mut self, context: impl std::fmt::Display) -> Error {
        self.message = format!("{context}: {}", self.message);
        self
    }
}

impl From<SpecError> for Error {
    fn from(e: SpecError) -> Error {
        Error::new(sftsan_result::InvalidSpec, e.to_string())
    }
}

impl From<CoreError> for Error {
    /// The result code of an error's kind (never of its text).
    fn from(e: CoreError) -> Error {
        let code = match e.kind() {
            ErrorKind::NotFound => sftsan_result::NotFound,
            ErrorKind::Invalid => sftsan_result::InvalidArgument,
            ErrorKind::Busy | ErrorKind::InUse => sftsan_result::Busy,
            ErrorKind::Unreachable
            | ErrorKind::Timeout
            | ErrorKind::Command
            | ErrorKind::Io
            | ErrorKind::Corrupt
            | ErrorKind::Conflict
            | ErrorKind::Unsupported => sftsan_result::EngineFailure,
        };
        Error::new(code, e.to_string().replace('\n', " "))
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::new(sftsan_result::EngineFailure, format!("JSON: {e}"))
    }
}

thread_local! {
    /// The message of this thread's most recent failed call; empty after a success.
    static LAST_ERROR: RefCell<String> = const { RefCell::new(String::new()) };
}

pub(crate) fn set_last_error(message: &str) {
    // A C string cannot carry NUL: show it instead of cutting the message there.
    let message = message.replace('\0', "\\0");
    let _ = LAST_ERROR.try_with(|e| *e.borrow_mut() = message);
}

pub(crate) fn clear_last_error() {
    let _ = LAST_ERROR.try_with(|e| e.borrow_mut().clear());
}

/// Copies this thread's last error into `buf` (at most `len` bytes, NUL included, cut at a
/// UTF-8 character boundary); returns the message's full length without the NUL.
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes.
pub(crate) unsafe fn copy_last_error(buf: *mut c_char, len: usize) -> usize {
    LAST_ERROR
        .try_with(|e| {
            let message = e.borrow();
            if !buf.is_null() && len > 0 {
                let mut n = message.len().min(len - 1);
                while !message.is_char_boundary(n) {
                    n -= 1;
                }
                // SAFETY: the caller guarantees `buf` holds `len` bytes and n + 1 <= len;
                // `message` is a live String of at least n bytes that cannot overlap the
                // caller's buffer.
                unsafe {
                    std::ptr::copy_nonoverlapping(message.as_ptr(), buf.cast::<u8>(), n);
                    *buf.add(n) = 0;
                }
            }
            message.len()
        })
        .unwrap_or(0)
}

/// Runs one entry point's body: a panic becomes `Panic`, an `Err` its code; either way the
/// message becomes this thread's last error. A success clears it.
pub(crate) fn boundary(body: impl FnOnce() -> Result<(), Error>) -> sftsan_result {
    // AssertUnwindSafe: after a panic nothing the body touched is used again except the
    // context, whose state is immutable apart from mutex-guarded slots that recover from
    // poisoning; the cluster's own state is on disk, guarded by its journal.
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => {
            clear_last_error();
            sftsan_result::Ok
        }
        Ok(Err(e)) => {
            set_last_error(&e.message);
            e.code
        }
        Err(payload) => {
            let what = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-string payload".into());
            set_last_error(&format!(
                "sftsan panicked (a bug; please report it): {what}"
            ));
            sftsan_result::Panic
        }
    }
}

pub(crate) fn null(name: &str) -> Error {
    Error::new(
        sftsan_result::NullArgument,
        format!("argument `{name}` is NULL"),
    )
}

/// A string argument as UTF-8.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid and unchanged for
/// `'a` (the duration of the call).
pub(crate) unsafe fn str_arg<'a>(p: *const c_char, name: &str) -> Result<&'a str, Error> {
    if p.is_null() {
        return Err(null(name));
    }
    // SAFETY: non-NULL, and the caller guarantees a NUL-terminated string living for 'a.
    let bytes = unsafe { CStr::from_ptr(p) }.to_bytes();
    std::str::from_utf8(bytes).map_err(|e| {
        Error::new(
            sftsan_result::InvalidUtf8,
            format!(
                "argument `{name}` is not valid UTF-8 (bad byte at offset {})",
                e.valid_up_to()
            ),
        )
    })
}

/// Checks that an output pointer is there before any work is done.
pub(crate) fn out_arg<T>(p: *mut T, name: &str) -> Result<(), Error> {
    if p.is_null() {
        Err(null(name))
    } else {
        Ok(())
    }
}

/// A Rust string as a C string the caller frees with `sftsan_string_free`.
pub(crate) fn c_string(s: String) -> Result<*mut c_char, Error> {
    CString::new(s).map(CString::into_raw).map_err(|e| {
        Error::new(
            sftsan_result::EngineFailure,
            format!(
                "a returned string holds a NUL byte at offset {}",
                e.nul_position()
            ),
        )
    })
}
