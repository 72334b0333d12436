//! The bar of issue 15: zero read errors, zero wrong bytes, re-parenting within 5 s where
//! the faulted node's children must move, `down` within 10 s leaving nothing. Each run
//! lists where it misses it.

use super::chaos::ChaosRun;
use super::guard::Down;
use super::single::FaultRun;
use super::summary::ReadStats;

pub const REPARENT_MS: u64 = 5_000;
pub const DOWN_S: f64 = 10.0;

/// `excused`: errors where a VM pauses instead (see [`ChaosRun`]).
fn reads(r: &ReadStats, excused: u64, out: &mut Vec<String>) {
    if r.read_errors() > excused {
        out.push(format!(
            "{} read errors ({} failed, {} never completed{})",
            r.read_errors() - excused,
            r.errors,
            r.hung,
            if excused > 0 {
                format!("; {excused} more on a node whose own daemon was dead")
            } else {
                String::new()
            }
        ));
    }
    if r.wrong_bytes > 0 {
        out.push(format!(
            "{} wrong bytes in {} reads",
            r.wrong_bytes, r.wrong_reads
        ));
    }
    if !r.fatal.is_empty() {
        out.push(format!("{} readers ended early", r.fatal.len()));
    }
}

fn down(d: &Down, out: &mut Vec<String>) {
    if d.timed_out {
        out.push(format!("down still running after {:.0} s", d.seconds));
    } else if !d.ok {
        out.push(format!("down failed: {}", d.message));
    } else if d.seconds > DOWN_S {
        out.push(format!("down took {:.1} s", d.seconds));
    }
    if !d.residue.is_empty() {
        out.push(format!("{} things left after down", d.residue.len()));
    }
}

pub fn single(run: &FaultRun) -> Vec<String> {
    let mut out = Vec::new();
    reads(&run.reads, 0, &mut out);
    if run.reads.ok_after_fault == 0 {
        out.push("no good read after the fault".into());
    }
    if run.reparent_expected {
        match run.reparent.time_ms() {
            None => out.push("no re-parent seen".into()),
            Some(ms) if ms > REPARENT_MS => {
                out.push(format!("re-parent took {:.1} s", ms as f64 / 1e3))
            }
            Some(_) => {}
        }
    }
    if run.upstream_bytes_after_fault == 0 {
        out.push("no bytes came from upstream after the fault".into());
    }
    if run.revived == Some(false) {
        out.push("up did not revive what was killed".into());
    }
    if !run.guard_route_kept {
        out.push("the unreachable route was gone during the run".into());
    }
    down(&run.down, &mut out);
    out
}

pub fn chaos(run: &ChaosRun) -> Vec<String> {
    let mut out = Vec::new();
    reads(&run.reads, run.errors_on_own_dead_daemon, &mut out);
    let failed = run.events.iter().filter(|e| e.problem.is_some()).count();
    if failed > 0 {
        out.push(format!("{failed} faults could not be injected or undone"));
    }
    if !run.guard_route_kept {
        out.push("the unreachable route was gone during the run".into());
    }
    down(&run.down, &mut out);
    out
}
