//! Measurement (not a regression test): the standby path group against a table reload by
//! a watcher, on the same fault (n1's LIO target removed under readers of n3).

mod kernel_support;

use kernel_support::assert_nothing_left;
use kernel_support::failover::{parent_dies_during_reads, Fault, Repair};

fn probe(name: &str, repair: Repair, replacement_s: Option<i32>) {
    let o = parent_dies_during_reads(name, "lio", Fault::RemoveTarget, repair, replacement_s);
    o.print(&format!("{repair:?} replacement {replacement_s:?}"));
    let c = o.cluster;
    c.engine.down().unwrap_or_else(|e| panic!("down: {e}"));
    assert_nothing_left(name);
}

#[test]
#[ignore = "kernel tier"]
fn standby_group() {
    probe("kp-a", Repair::Standby, None);
}

#[test]
#[ignore = "kernel tier"]
fn reload_warm() {
    probe("kp-bw", Repair::ReloadWarm, None);
}

#[test]
#[ignore = "kernel tier"]
fn reload_cold() {
    probe("kp-bc", Repair::ReloadCold, None);
}

#[test]
#[ignore = "kernel tier"]
fn standby_group_replacement_0() {
    probe("kp-a0", Repair::Standby, Some(0));
}

#[test]
#[ignore = "kernel tier"]
fn reload_warm_replacement_0() {
    probe("kp-bw0", Repair::ReloadWarm, Some(0));
}

#[test]
#[ignore = "kernel tier"]
fn reload_cold_replacement_0() {
    probe("kp-bc0", Repair::ReloadCold, Some(0));
}
