//! Output of the command-line tools that survives a reader going away: `sftsan plan SPEC |
//! head -1` ends quietly, as coreutils do, where `println!` would panic. A closed stdout is
//! remembered and later output dropped, so a command still finishes what it started (a
//! half-made cluster is worse than lost output) and exits with its own status.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_GONE: AtomicBool = AtomicBool::new(false);

/// Writes `text` to stdout. A reader that went away (EPIPE) is no error; any other write
/// error (a full disk behind a redirection) is.
pub fn out(text: &str) -> io::Result<()> {
    if STDOUT_GONE.load(Ordering::Relaxed) {
        return Ok(());
    }
    let mut stdout = io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {
            STDOUT_GONE.store(true, Ordering::Relaxed);
            Ok(())
        }
        other => other,
    }
}

/// Whether stdout's reader went away.
pub fn stdout_gone() -> bool {
    STDOUT_GONE.load(Ordering::Relaxed)
}

/// Writes `text` and a newline to stderr, ignoring failure: there is nowhere left to
/// report it.
pub fn err_line(text: &str) {
    let mut stderr = io::stderr().lock();
    let _ = writeln!(stderr, "{text}");
}

/// `println!` for the tools: [`out`] with a newline, `?` for real write errors.
#[macro_export]
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::stdio::out(&format!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that never panics: [`err_line`].
#[macro_export]
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::stdio::err_line(&format!($($arg)*))
    };
}
