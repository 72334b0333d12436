//! `sftsan-hook`: libvirt's QEMU hook for sftsan's domains. Install it as a symlink
//! `/etc/libvirt/hooks/qemu.d/sftsan` (or `/etc/libvirt/hooks/qemu`) to this binary,
//! installed beside `sftsan`, then (re)start libvirtd. See sftsan_libvirt::hook.

use std::io::{Read, Write};

use sftsan_libvirt::hook::{detach_stdio, handle, tools, Outcome, LOG_FILE};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [guest, op, subop, ..] = args.as_slice() else {
        sftsan_core::errln!("sftsan-hook: usage: sftsan-hook GUEST OPERATION SUB-OPERATION [EXTRA] < DOMAIN-XML (run by libvirt)");
        std::process::exit(2);
    };
    let mut xml = String::new();
    if let Err(e) = std::io::stdin().read_to_string(&mut xml) {
        sftsan_core::errln!("sftsan-hook: {guest}: cannot read the domain XML on stdin: {e}");
        std::process::exit(1);
    }
    // Fast path for everything that is not sftsan's business: no logging, no detaching.
    if !xml.contains(sftsan_libvirt::xml::SFTSAN_NS) {
        return;
    }
    let mut stderr = match detach_stdio() {
        Ok(f) => f,
        Err(e) => {
            sftsan_core::errln!("sftsan-hook: {guest}: cannot detach from libvirt's stdio: {e}");
            std::process::exit(1);
        }
    };
    let started = std::time::Instant::now();
    let result = handle(op, subop, &xml, tools());
    let line = match &result {
        Ok(Outcome::Ignored) => return,
        Ok(Outcome::Done(what)) => format!("{guest} {op} {subop}: {what}"),
        Err(e) => format!("{guest} {op} {subop}: FAILED: {e}"),
    };
    log(&format!("{line} ({:.1}s)", started.elapsed().as_secs_f64()));
    if let Err(e) = result {
        // One line: libvirt puts it in the error the start fails with.
        let _ = writeln!(
            stderr,
            "sftsan-hook: {guest}: {}",
            e.to_string().replace('\n', " ")
        );
        std::process::exit(1);
    }
}

/// Appends a line to the hook's log (best effort: a missing log directory is no error).
fn log(line: &str) {
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(LOG_FILE)
    else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0);
    let _ = writeln!(f, "{now:.3} {line}");
}
