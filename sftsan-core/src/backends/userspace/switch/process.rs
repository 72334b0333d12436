//! `sftsan switch`: the detached process of a node's upstream switch. It serves the node's
//! daemon on a unix socket and reads from the tree above through [`Switch`].

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::super::nbd::{self, Address, Connection};
use super::failover::{Ancestor, Switch, Timing};
use crate::error::{Error, IoContext, Result};
use crate::fsutil::{remove_file_if_exists, write_atomic};

/// Arguments of `sftsan switch`.
#[derive(Debug, Clone)]
pub struct SwitchArgs {
    /// Where the node's daemon connects.
    pub socket: PathBuf,
    /// Where the switch's pid is written once it runs in the background.
    pub pidfile: PathBuf,
    /// The ancestors, nearest first (JSON); re-read on SIGHUP.
    pub upstreams: PathBuf,
    /// Where the switch writes its report.
    pub report: PathBuf,
    /// The export's name on every ancestor.
    pub export: String,
}

static TERMINATE: AtomicBool = AtomicBool::new(false);
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    TERMINATE.store(true, Ordering::SeqCst);
}

extern "C" fn on_hup(_: libc::c_int) {
    RELOAD.store(true, Ordering::SeqCst);
}

/// The ancestors listed in `path`, nearest first.
pub fn read_ancestors(path: &Path) -> Result<Vec<Ancestor>> {
    let text = std::fs::read(path).at(path)?;
    let list: Vec<Ancestor> = serde_json::from_slice(&text)
        .map_err(|e| Error::corrupt(path.display().to_string(), e.to_string()))?;
    if list.is_empty() {
        return Err(Error::invalid(
            path.display().to_string(),
            "lists no upstream",
        ));
    }
    Ok(list)
}

/// Writes the ancestor list where the switch reads it.
pub fn write_ancestors(path: &Path, ancestors: &[Ancestor]) -> Result<()> {
    let text = serde_json::to_vec_pretty(ancestors).expect("plain data encodes");
    write_atomic(path, &text)
}

/// Starts the switch in the background; returns once it serves (its pid file written) or
/// with the reason it could not start.
pub fn run_switch(args: &SwitchArgs) -> Result<()> {
    let ancestors = read_ancestors(&args.upstreams)?;
    let mut fds = [0; 2];
    // SAFETY: pipe2 fills two fds, which we own from here on.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(Error::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: both fds are open and ours alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // SAFETY: no threads run yet; the child only continues this function.
    match unsafe { libc::fork() } {
        -1 => Err(Error::io("fork", std::io::Error::last_os_error())),
        0 => {
            drop(read_end);
            let code = child(args, ancestors, std::fs::File::from(write_end));
            std::process::exit(code)
        }
        pid => {
            drop(write_end);
            let mut said = String::new();
            let _ = std::fs::File::from(read_end).read_to_string(&mut said);
            match said.strip_prefix("ok") {
                Some(_) => write_atomic(&args.pidfile, pid.to_string().as_bytes()),
                None => {
                    // SAFETY: reaping our own child, which has exited or is exiting.
                    unsafe { libc::waitpid(pid, std::ptr::null_mut(), 0) };
                    let first = &ancestors[0];
                    Err(Error::unreachable(
                        format!("parent {} at {}", first.node, first.address),
                        said.trim().trim_start_matches("error: ").to_string(),
                    ))
                }
            }
        }
    }
}

/// The switch process: connects, reports readiness on `ready`, then serves until SIGTERM.
fn child(args: &SwitchArgs, ancestors: Vec<Ancestor>, mut ready: std::fs::File) -> i32 {
    let timing = Timing::default();
    let start = || -> std::result::Result<(Arc<Switch>, UnixListener), String> {
        let first = &ancestors[0];
        let conn = Connection::open(&Address::Tcp(first.address), &args.export, timing.connect)
            .map_err(|e| e.to_string())?;
        let _ = std::fs::remove_file(&args.socket);
        let listener = UnixListener::bind(&args.socket).map_err(|e| e.to_string())?;
        // Only the node's daemon (root) reads through it.
        std::fs::set_permissions(&args.socket, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        let switch = Arc::new(Switch::new(&args.export, ancestors.clone(), timing, conn));
        switch
            .report()
            .write(&args.report)
            .map_err(|e| e.to_string())?;
        Ok((switch, listener))
    };
    let (switch, listener) = match start() {
        Ok(s) => s,
        Err(why) => {
            let _ = writeln!(ready, "error: {why}");
            return 1;
        }
    };
    detach();
    let _ = ready.write_all(b"ok\n");
    drop(ready);
    {
        let (switch, args) = (switch.clone(), args.clone());
        std::thread::spawn(move || housekeeping(&switch, &args, timing));
    }
    {
        let switch = switch.clone();
        std::thread::spawn(move || loop {
            switch.heartbeat();
            std::thread::sleep(timing.heartbeat); // a pace, not a synchronisation
        });
    }
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let (switch, export) = (switch.clone(), args.export.clone());
        std::thread::spawn(move || {
            if let Err(e) = nbd::serve(conn, &export, switch) {
                tracing::info!("daemon connection ended: {e}");
            }
        });
    }
    0
}

/// Signals, the report file, and the way back to nearer upstreams.
fn housekeeping(switch: &Switch, args: &SwitchArgs, timing: Timing) {
    let tick = Duration::from_millis(100);
    let mut written = switch.report();
    let mut last_write = Instant::now();
    let mut last_probe = Instant::now();
    loop {
        if TERMINATE.load(Ordering::SeqCst) {
            // Teardown removes the report; writing it now could only race with that.
            let _ = remove_file_if_exists(&args.socket);
            std::process::exit(0);
        }
        if RELOAD.swap(false, Ordering::SeqCst) {
            match read_ancestors(&args.upstreams) {
                Ok(list) => switch.set_ancestors(list),
                Err(e) => tracing::error!("keeping the old upstreams: {e}"),
            }
        }
        if last_probe.elapsed() >= timing.return_probe && switch.away() {
            switch.try_return();
            last_probe = Instant::now();
        }
        // A move is written at once; counters at most once a second.
        let now = switch.report();
        let moved = now.events != written.events || now.current != written.current;
        if moved || (now != written && last_write.elapsed() >= Duration::from_secs(1)) {
            let _ = now.write(&args.report);
            written = now;
            last_write = Instant::now();
        }
        std::thread::sleep(tick); // a pace, not a synchronisation
    }
}

fn detach() {
    // SAFETY: plain syscalls on our own process; the handlers only store atomics.
    unsafe {
        libc::setsid();
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_term as *const () as libc::sighandler_t);
        libc::signal(libc::SIGHUP, on_hup as *const () as libc::sighandler_t);
        libc::signal(libc::SIGPIPE, libc::SIG_IGN);
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        if null >= 0 {
            for fd in 0..3 {
                libc::dup2(null, fd);
            }
        }
    }
    let _ = std::env::set_current_dir(Path::new("/"));
}
