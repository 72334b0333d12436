//! The kernel path survives a dead parent: n3 (origin -> n1 -> n3) reads its upstream
//! through dm-multipath, n1's LUN first and the origin's, logged in ahead of time, standing
//! by. n1's target goes away while readers compare every byte of n3's upstream and of a VM
//! disk with the image: the parent's session gives up after its replacement timeout, the
//! kernel moves the I/O to the origin's path, and the readers see a stall, never an error.
//! `down` then leaves nothing, the failed session included.

mod kernel_support;

use kernel_support::failover::{parent_dies_during_reads, Fault, Repair};
use kernel_support::{assert_nothing_left, IMAGE};

fn check(name: &str, relay: &str, fault: Fault) {
    let outcome = parent_dies_during_reads(name, relay, fault, Repair::Standby, None);
    outcome.print(name);
    for r in &outcome.reports {
        assert_eq!(
            (r.errors, r.wrong),
            (0, 0),
            "{}: {:?}",
            r.path.display(),
            r.first_failures
        );
        // The stall is the parent session's replacement timeout (3 s) and the move; an
        // error-free run that took far longer would still be a failure to re-parent.
        assert!(
            r.longest.as_secs_f64() < 10.0,
            "{}: a read stalled {:?}",
            r.path.display(),
            r.longest
        );
    }
    assert!(
        outcome.failover.as_secs_f64() < 10.0,
        "the upstream moved after {:?}",
        outcome.failover
    );
    // At least the upstream reader's whole pass after the move came through the new path.
    assert!(
        outcome.new_path_sectors >= IMAGE / 512,
        "only {} sectors through the origin's path",
        outcome.new_path_sectors
    );
    let c = outcome.cluster;
    c.engine.down().unwrap_or_else(|e| panic!("down: {e}"));
    assert_nothing_left(name);
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn the_parents_lio_target_removed_during_reads_costs_a_stall_not_an_error() {
    check("kf-lio", "lio", Fault::RemoveTarget);
}

#[test]
#[ignore = "kernel tier: needs device-mapper, LIO and open-iscsi (bash tests/kernel-vm/run)"]
fn the_parents_tgtd_killed_during_reads_costs_a_stall_not_an_error() {
    check("kf-tgt", "tgt", Fault::KillTgtd);
}
