//! The cleanup guard of one cluster. The measured teardown is one `sftsan down`, faults
//! left in force; whatever it leaves is then removed by force, after the faults are undone.
//! Dropped without that (an error, a panic, Ctrl-C), the guard does the same cleanup.

use anyhow::{bail, Result};
use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

use sftsan_core::errln;

use super::cluster::{subnet_users, Testbed};
use super::inject::Active;
use super::residue::{force_clean, remove_dir_if_exists, residue};

/// How long the guard's own `down` may take before the rest is removed by force.
const CLEANUP_DOWN: Duration = Duration::from_secs(30);

/// The measured `down` and what it left.
#[derive(Debug, Clone, Serialize)]
pub struct Down {
    pub seconds: f64,
    pub ok: bool,
    pub timed_out: bool,
    /// Its last stderr line.
    pub message: String,
    /// What was left of the cluster after it (empty: nothing).
    pub residue: Vec<String>,
    /// What the forced cleanup could not remove (empty unless the machine is left dirty).
    pub cleanup_failed: Vec<String>,
}

pub struct Guard<'a> {
    bed: &'a Testbed,
    active: Mutex<Vec<Active>>,
    done: bool,
}

impl<'a> Guard<'a> {
    /// Clears what an interrupted run of the same cluster left, then checks that nobody
    /// else uses the subnet: the cluster's guard route must be its own.
    pub fn new(bed: &'a Testbed) -> Result<Guard<'a>> {
        let mut guard = Guard {
            bed,
            active: Mutex::new(Vec::new()),
            done: false,
        };
        if !residue(bed).is_empty() {
            errln!("{}: clearing an earlier run's leftovers", bed.name);
            let left = guard.cleanup(false, false);
            if !left.is_empty() {
                bail!(
                    "{}: an earlier run's leftovers cannot be removed: {}",
                    bed.name,
                    left.join("; ")
                );
            }
            guard.done = false;
        }
        let users = subnet_users(&bed.subnet);
        if !users.is_empty() {
            guard.done = true;
            bail!(
                "--subnet: {} is in use on this machine ({}); name another",
                bed.subnet,
                users.join(", ")
            );
        }
        Ok(guard)
    }

    /// A fault in force: undone by the cleanup, never before the measured `down`.
    pub fn hold(&self, fault: Active) {
        self.active.lock().expect("the guard's lock").push(fault);
    }

    /// Undoes the fault in force last (chaos), and forgets it.
    pub fn undo_last(&self) -> Result<()> {
        let last = self.active.lock().expect("the guard's lock").pop();
        match last {
            Some(fault) => fault.undo(),
            None => Ok(()),
        }
    }

    /// One `sftsan down` with every fault still in force, timed; then what it left is
    /// listed and removed by force.
    pub fn measured_down(&mut self, timeout: Duration) -> Result<Down> {
        let o = self.bed.cli.run(&["down"], timeout)?;
        let left = residue(self.bed);
        let cleanup_failed = self.cleanup(true, true);
        Ok(Down {
            seconds: o.seconds,
            ok: o.ok,
            timed_out: o.timed_out,
            message: o.message,
            residue: left,
            cleanup_failed,
        })
    }

    /// Undoes the faults, runs `down` (again only if a fault was undone since the last),
    /// removes the rest by force (and with `spec`, the cluster's directory); returns what
    /// is still there.
    fn cleanup(&mut self, spec: bool, after_down: bool) -> Vec<String> {
        self.done = true;
        let mut undone = false;
        for fault in self
            .active
            .lock()
            .expect("the guard's lock")
            .drain(..)
            .rev()
        {
            undone = true;
            if let Err(e) = fault.undo() {
                errln!("{}: undoing {fault:?}: {e:#}", self.bed.name);
            }
        }
        if (undone || !after_down) && !residue(self.bed).is_empty() {
            match self.bed.cli.run(&["down"], CLEANUP_DOWN) {
                Ok(o) if !o.ok => errln!("{}: cleanup: sftsan down: {}", self.bed.name, o.message),
                Err(e) => errln!("{}: cleanup: {e:#}", self.bed.name),
                Ok(_) => {}
            }
        }
        let mut failed = force_clean(self.bed);
        failed.extend(residue(self.bed));
        if failed.is_empty() && spec {
            let _ = std::fs::remove_file(&self.bed.cli.spec);
            if let Err(e) = remove_dir_if_exists(&self.bed.dir) {
                failed.push(format!("{e:#}"));
            }
        }
        failed
    }
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let left = self.cleanup(true, false);
        if !left.is_empty() {
            errln!(
                "{}: cleanup left behind: {}",
                self.bed.name,
                left.join("; ")
            );
        }
    }
}
