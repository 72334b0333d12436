//! sftsan's errors: typed by what a caller can do about them. Every message is one line;
//! [`Error::kind`] says whether waiting, fixing the input or repairing the system helps,
//! so nobody classifies an error by its text.

use std::path::PathBuf;
use std::sync::Arc;

/// What kind of failure an [`Error`] is, for callers that act on it (retries, result
/// codes, exit statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// The input (spec, argument, template, file content) breaks a rule: fix it.
    Invalid,
    /// Someone else works on it right now (a lock): the same call may succeed later.
    Busy,
    /// What was named does not exist.
    NotFound,
    /// A peer (parent node, daemon, portal) did not answer: may succeed later.
    Unreachable,
    /// Something did not happen within its deadline: may succeed later.
    Timeout,
    /// An external program or daemon refused or failed.
    Command,
    /// A file or device could not be read or written.
    Io,
    /// Stored state is damaged or belongs to something else (another image's cache).
    Corrupt,
    /// Something exists in another shape than wanted.
    Conflict,
    /// Others still depend on it (a node that serves children): not removable now.
    InUse,
    /// This host lacks what is needed (a kernel feature, a program).
    Unsupported,
}

impl ErrorKind {
    /// Whether the same call may succeed later without anybody changing anything.
    pub fn is_transient(self) -> bool {
        matches!(
            self,
            ErrorKind::Busy | ErrorKind::Unreachable | ErrorKind::Timeout
        )
    }
}

/// A failure, with what a caller needs to act on it and one line to show.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// Input breaks a rule; see [`ErrorKind::Invalid`].
    #[error("{field}: {problem}")]
    Invalid {
        /// Where the bad value is: a spec field, an argument, a file line.
        field: String,
        /// What rule the value breaks.
        problem: String,
    },
    /// Someone else holds it right now (a lock); see [`ErrorKind::Busy`].
    #[error("{}", joined(what, detail))]
    Busy {
        /// What is busy, e.g. `cluster demo`.
        what: String,
        /// Who holds it or why; may be empty.
        detail: String,
    },
    /// What was named does not exist.
    #[error("{}", joined(what, detail))]
    NotFound {
        /// What was looked for.
        what: String,
        /// Where it was looked for or why it is missing; may be empty.
        detail: String,
    },
    /// A peer (parent node, daemon, portal) did not answer.
    #[error("{what} is unreachable: {detail}")]
    Unreachable {
        /// The peer that did not answer.
        what: String,
        /// How reaching it failed.
        detail: String,
    },
    /// Something did not happen within its deadline.
    #[error("{}", joined(what, detail))]
    Timeout {
        /// What was waited for.
        what: String,
        /// How long was waited or what was last seen; may be empty.
        detail: String,
    },
    /// A program exited with failure: its argv (secrets masked), exit status and the last
    /// line it wrote on stderr.
    #[error("{} failed ({status}){}", argv.first().map(String::as_str).unwrap_or("command"), tail(stderr))]
    Command {
        /// The program and its arguments, with secrets masked.
        argv: Vec<String>,
        /// How it ended, as displayed, e.g. `exit status: 22`.
        status: String,
        /// The last line it wrote on stderr; may be empty.
        stderr: String,
    },
    /// A daemon's or library's refusal that is not a program's exit (QMP, libiscsi, dm).
    #[error("{}", joined(what, detail))]
    Refused {
        /// Who refused, and what was asked of it.
        what: String,
        /// The refusal's own message; may be empty.
        detail: String,
    },
    /// A file or device could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or device.
        path: PathBuf,
        /// The operating system's error, shared so that the error stays `Clone`.
        source: Arc<std::io::Error>,
    },
    /// Stored state is damaged or belongs to something else.
    #[error("{}", joined(what, detail))]
    Corrupt {
        /// The damaged or foreign state, e.g. a journal or a cache file.
        what: String,
        /// What is wrong with it; may be empty.
        detail: String,
    },
    /// Something exists in another shape than wanted.
    #[error("{}", joined(what, detail))]
    Conflict {
        /// The thing found.
        what: String,
        /// How it differs from what was wanted; may be empty.
        detail: String,
    },
    /// Others still depend on it, so it cannot be removed now.
    #[error("{}", joined(what, detail))]
    InUse {
        /// The thing that was to be removed.
        what: String,
        /// Who still depends on it; may be empty.
        detail: String,
    },
    /// This host lacks what is needed (a kernel feature, a program).
    #[error("{}", joined(what, detail))]
    Unsupported {
        /// What is missing.
        what: String,
        /// Why it is needed or how to get it; may be empty.
        detail: String,
    },
    /// `source` with where it happened in front: `n1/daemon: create failed: ...`.
    #[error("{context}: {source}")]
    Context {
        /// Where it happened, e.g. `n1/daemon`.
        context: String,
        /// The error that happened there.
        source: Box<Error>,
    },
    /// A step failed, and what the run had created was removed again (or not all of it).
    #[error(
        "{source}; rolled back what this run created{}",
        rollback_note(failures)
    )]
    RolledBack {
        /// The step's failure.
        source: Box<Error>,
        /// The removals that failed during rollback; empty when rollback was complete.
        failures: Vec<Error>,
    },
    /// Some of what should have been removed is still there.
    #[error("{what} incomplete: {}", join(failures))]
    Incomplete {
        /// What was being removed, e.g. `teardown`.
        what: String,
        /// One error per part that could not be removed.
        failures: Vec<Error>,
    },
}

fn rollback_note(failures: &[Error]) -> String {
    if failures.is_empty() {
        String::new()
    } else {
        format!(", but rollback failed for: {}", join(failures))
    }
}

fn join(errors: &[Error]) -> String {
    errors
        .iter()
        .map(Error::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// `what: detail`, or `what` alone when there is no detail.
fn joined(what: &str, detail: &str) -> String {
    if detail.is_empty() {
        what.to_string()
    } else {
        format!("{what}: {detail}")
    }
}

fn tail(stderr: &str) -> String {
    if stderr.is_empty() {
        String::new()
    } else {
        format!(": {stderr}")
    }
}

/// Short constructors: `Error::invalid("cluster.degree", "must be at least 1")`.
macro_rules! what_detail {
    ($($fn:ident => $variant:ident),* $(,)?) => {$(
        #[doc = concat!("An [`Error::", stringify!($variant), "`].")]
        pub fn $fn(what: impl Into<String>, detail: impl Into<String>) -> Error {
            Error::$variant { what: what.into(), detail: detail.into() }
        }
    )*};
}

impl Error {
    what_detail! {
        busy => Busy,
        not_found => NotFound,
        unreachable => Unreachable,
        timeout => Timeout,
        refused => Refused,
        corrupt => Corrupt,
        conflict => Conflict,
        in_use => InUse,
        unsupported => Unsupported,
    }

    /// Input that breaks a rule; `field` names where (a spec field, an argument, a line).
    pub fn invalid(field: impl Into<String>, problem: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            problem: problem.into(),
        }
    }

    /// A failed read or write of `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            source: Arc::new(source),
        }
    }

    /// This error with `context` in front of its message; the kind stays.
    pub fn context(self, context: impl Into<String>) -> Error {
        Error::Context {
            context: context.into(),
            source: Box::new(self),
        }
    }

    /// What kind of failure this is; context and rollback wrappers take their source's kind.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Invalid { .. } => ErrorKind::Invalid,
            Error::Busy { .. } => ErrorKind::Busy,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Unreachable { .. } => ErrorKind::Unreachable,
            Error::Timeout { .. } => ErrorKind::Timeout,
            Error::Command { .. } | Error::Refused { .. } => ErrorKind::Command,
            Error::Io { .. } => ErrorKind::Io,
            Error::Corrupt { .. } => ErrorKind::Corrupt,
            Error::Conflict { .. } => ErrorKind::Conflict,
            Error::InUse { .. } => ErrorKind::InUse,
            Error::Unsupported { .. } => ErrorKind::Unsupported,
            Error::Context { source, .. } | Error::RolledBack { source, .. } => source.kind(),
            Error::Incomplete { failures, .. } => {
                failures.first().map_or(ErrorKind::Command, Error::kind)
            }
        }
    }

    /// The error under every context.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } | Error::RolledBack { source, .. } => source.root(),
            other => other,
        }
    }
}

/// Why a value is not acceptable, where it is not yet known which field held it: the
/// caller names the field and makes it an [`Error::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Rejection(pub String);

impl Rejection {
    /// A rejection saying `why` the value is not acceptable.
    pub fn new(why: impl Into<String>) -> Rejection {
        Rejection(why.into())
    }

    /// The rejection of the value in `field`.
    pub fn of(self, field: impl Into<String>) -> Error {
        Error::invalid(field, self.0)
    }
}

/// `Result` with sftsan's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Adds context to a result's error: `.context("n1/daemon")`.
pub trait ResultExt<T> {
    /// Puts `context` in front of the error, if any.
    fn context(self, context: impl Into<String>) -> Result<T>;
    /// Puts the context that `context` builds in front of the error; built only on error.
    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T>;
}

impl<T> ResultExt<T> for Result<T> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| e.context(context))
    }

    fn with_context<C: Into<String>>(self, context: impl FnOnce() -> C) -> Result<T> {
        self.map_err(|e| e.context(context()))
    }
}

/// Names the file of an I/O result's error: `fs::metadata(&p).at(&p)?`.
pub trait IoContext<T> {
    /// Turns an I/O error into an [`Error::Io`] about `path`.
    fn at(self, path: impl AsRef<std::path::Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<std::path::Path>) -> Result<T> {
        self.map_err(|e| Error::io(path.as_ref(), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_keeps_the_kind_and_reads_as_one_line() {
        let e = Error::busy("cluster demo", "another sftsan works on it (pid 42)")
            .context("up")
            .context("demo.toml");
        assert_eq!(e.kind(), ErrorKind::Busy);
        assert!(e.kind().is_transient());
        assert_eq!(
            e.to_string(),
            "demo.toml: up: cluster demo: another sftsan works on it (pid 42)"
        );
        assert!(matches!(e.root(), Error::Busy { .. }));
    }

    #[test]
    fn commands_show_program_status_and_stderr() {
        let e = Error::Command {
            argv: vec!["tgtadm".into(), "--mode".into()],
            status: "exit status: 22".into(),
            stderr: "can't find the target".into(),
        };
        assert_eq!(
            e.to_string(),
            "tgtadm failed (exit status: 22): can't find the target"
        );
        assert_eq!(e.kind(), ErrorKind::Command);
        assert!(!e.kind().is_transient());
        let io = Error::io("/x/y", std::io::ErrorKind::PermissionDenied.into());
        assert_eq!(io.kind(), ErrorKind::Io);
        assert!(io.to_string().starts_with("/x/y: "), "{io}");
    }
}
