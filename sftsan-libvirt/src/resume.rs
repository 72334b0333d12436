//! Resuming the VMs an I/O error paused (`sftsan vm resume`).
//!
//! sftsan's VM disks stop the VM on an I/O error (`error_policy='stop'`,
//! `rerror_policy='stop'`): when a node's qemu-storage-daemon dies under its VMs, QEMU
//! pauses them instead of failing the guests' requests. Once the node serves again (`sftsan
//! up` revives it), resuming a VM makes QEMU retry those requests. Only VMs paused by an
//! I/O error are resumed; one paused by its user (or for any other reason) is left alone,
//! so this is safe to run at any time.
//!
//! What QEMU 10.0 and libvirt 9.0 do here, and why resuming takes more than one
//! `virDomainResume`:
//! - A VM disk reads its node's export through QEMU's NBD client, which libvirt opens
//!   without `reconnect-delay` (it cannot pass one). Once the connection broke, a request
//!   does not wait for a new one: it starts QEMU's connect thread (if none runs) and fails
//!   at once, whether the node is back or not. The thread keeps trying in the background
//!   (1, 2, 4, 8, then 16 s apart), and the first request after it connected uses the new
//!   connection. A paused VM sends no requests, so the first resume after the node is back
//!   usually pauses the VM again (its retry only starts the thread), and the next one
//!   sticks; the disk never needs reopening.
//! - QEMU sends at most one BLOCK_IO_ERROR event per second (later ones wait), and one
//!   failed retry can raise several (one per guest request). libvirt 9.0 marks a running
//!   domain "paused (I/O error)" when such an event arrives, and learns that QEMU runs
//!   only from QEMU's RESUME event. So an event held back from a failed resume that
//!   arrives after a resume that worked leaves libvirt showing a running VM as paused, for
//!   good: `virDomainResume` then sends QEMU a `cont` that changes nothing and raises no
//!   RESUME, and `virDomainSuspend` does nothing to a domain libvirt thinks paused. Hence
//!   every resume waits [`ResumeOptions::event_gap`] after the VM was last seen pausing
//!   (more than QEMU's second), so that every held-back event reaches libvirt while the
//!   VM is still paused, where libvirt ignores it. A VM that someone else resumed too soon
//!   is told by its disk requests: they go on while libvirt shows it paused (restarting
//!   libvirtd makes libvirt read QEMU's state again). For the same reason a pause whose
//!   event came after QEMU's STOP shows as "paused (unknown)": a VM paused for an unknown
//!   reason whose disk reports an error is taken as paused by it.

use std::time::{Duration, Instant};

use sftsan_core::error::{Error, ErrorKind, Result};

use crate::batch::{bounded, Op, Report, Row};
use crate::libvirt::{DiskError, Libvirt, PauseReason, RunState};

/// How resuming goes.
#[derive(Debug, Clone)]
pub struct ResumeOptions {
    /// How long to keep resuming a VM that pauses again (its node's storage not serving
    /// yet, or QEMU's connect thread not reconnected yet). QEMU's thread waits up to 16 s
    /// between attempts, so this should be longer.
    pub wait: Duration,
    /// How long a resumed VM must stay running to count as resumed (a retried request that
    /// fails pauses it again within milliseconds).
    pub settle: Duration,
    /// How long after the VM was last seen pausing it is resumed: more than the second
    /// QEMU holds back a BLOCK_IO_ERROR event, so that none reaches libvirt after a resume
    /// that worked (see the module's notes).
    pub event_gap: Duration,
    /// At most this many VMs resumed at once.
    pub concurrency: usize,
}

impl Default for ResumeOptions {
    fn default() -> Self {
        ResumeOptions {
            wait: Duration::from_secs(30),
            settle: Duration::from_millis(1500),
            event_gap: Duration::from_millis(1200),
            // Resuming is mostly waiting: many VMs of a node wait side by side.
            concurrency: 16,
        }
    }
}

/// How often a resumed VM's state is read while it settles.
const POLL: Duration = Duration::from_millis(50);

/// What resuming needs of libvirt, per domain ([`Libvirt`] in production; the tests
/// script it).
pub trait Control: Sync {
    /// The domain's state and pause reason.
    fn run_state(&self, name: &str) -> Result<RunState>;
    /// Resumes the paused domain.
    fn resume(&self, name: &str) -> Result<()>;
    /// The disk errors libvirt reports for the domain.
    fn disk_errors(&self, name: &str) -> Result<Vec<DiskError>>;
    /// The requests the domain's disks completed so far.
    fn disk_requests(&self, name: &str) -> Result<u64>;
}

impl Control for Libvirt {
    fn run_state(&self, name: &str) -> Result<RunState> {
        Libvirt::run_state(self, name)
    }
    fn resume(&self, name: &str) -> Result<()> {
        Libvirt::resume(self, name)
    }
    fn disk_errors(&self, name: &str) -> Result<Vec<DiskError>> {
        Libvirt::disk_errors(self, name)
    }
    fn disk_requests(&self, name: &str) -> Result<u64> {
        Libvirt::disk_requests(self, name)
    }
}

/// Which of a cluster's domains to work on.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only domains of these nodes (empty: every node).
    pub nodes: Vec<String>,
    /// Only the domains of these names (empty: all); each must be one of the cluster's.
    pub names: Vec<String>,
}

/// One of a cluster's domains, as its sftsan metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The domain's name.
    pub name: String,
    /// The compute node its snapshot is on.
    pub node: String,
    /// Its snapshot's index on that node.
    pub index: u32,
}

/// The domains of `libvirt` whose sftsan metadata names `cluster` (whatever their names
/// and however they were defined), of the selected nodes, by node, index and name.
pub fn cluster_domains(libvirt: &Libvirt, cluster: &str, nodes: &[String]) -> Result<Vec<Member>> {
    let mut members: Vec<Member> = libvirt
        .sftsan_domains()?
        .iter()
        .filter_map(|d| {
            let meta = d.sftsan()?;
            (meta.cluster == cluster && (nodes.is_empty() || nodes.contains(&meta.node))).then(
                || Member {
                    name: d.name(),
                    node: meta.node.clone(),
                    index: meta.snapshot,
                },
            )
        })
        .collect();
    members.sort_by(|a, b| (&a.node, a.index, &a.name).cmp(&(&b.node, b.index, &b.name)));
    Ok(members)
}

/// The members `names` selects (all when empty); a name that is not one of them is an
/// error, before anything is done.
pub fn select(members: Vec<Member>, names: &[String], cluster: &str) -> Result<Vec<Member>> {
    if names.is_empty() {
        return Ok(members);
    }
    if let Some(missing) = names
        .iter()
        .find(|n| !members.iter().any(|m| &m.name == *n))
    {
        return Err(Error::not_found(
            format!("domain {missing}"),
            format!("not one of cluster {cluster}'s domains (of the selected nodes)"),
        ));
    }
    Ok(members
        .into_iter()
        .filter(|m| names.contains(&m.name))
        .collect())
}

/// Resumes every member an I/O error paused, at most `options.concurrency` at once; a row
/// per member, in order.
pub fn resume_members(ctl: &dyn Control, members: &[Member], options: &ResumeOptions) -> Vec<Row> {
    bounded(members, options.concurrency, Duration::ZERO, |m| {
        resume_domain(ctl, &m.name, options)
    })
    .into_iter()
    .zip(members)
    .map(|((outcome, elapsed), m)| Row {
        vm: m.name.clone(),
        node: m.node.clone(),
        index: m.index,
        outcome,
        elapsed,
    })
    .collect()
}

/// Resumes the selected domains of `cluster` that an I/O error paused: one row per
/// domain, saying what was done (or why nothing was).
pub fn resume_cluster(
    libvirt: &Libvirt,
    cluster: &str,
    selection: &Selection,
    options: &ResumeOptions,
) -> Result<Report> {
    let started = Instant::now();
    let members = cluster_domains(libvirt, cluster, &selection.nodes)?;
    let members = select(members, &selection.names, cluster)?;
    let rows = resume_members(libvirt, &members, options);
    Ok(Report {
        op: Op::Resume,
        rows,
        notes: vec![],
        elapsed: started.elapsed(),
    })
}

/// What to do with a domain found in some state.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Decision {
    /// Paused by an I/O error (in these words): resume it.
    Resume(String),
    /// Nothing to do, and why.
    Leave(String),
}

fn listed(errors: &[DiskError]) -> String {
    errors
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

fn decide(state: &RunState, errors: impl FnOnce() -> Vec<DiskError>) -> Decision {
    match state {
        RunState::Paused(PauseReason::IoError) => {
            let errors = errors();
            Decision::Resume(if errors.is_empty() {
                "paused by an I/O error".into()
            } else {
                format!("paused by an I/O error ({})", listed(&errors))
            })
        }
        // libvirt's word when QEMU's BLOCK_IO_ERROR event came after its STOP event.
        RunState::Paused(PauseReason::Unknown) => {
            let errors = errors();
            if errors.is_empty() {
                Decision::Leave("paused (unknown), no disk error: left alone".into())
            } else {
                Decision::Resume(format!("paused after an I/O error ({})", listed(&errors)))
            }
        }
        RunState::Paused(reason) => Decision::Leave(format!("paused ({reason}): left alone")),
        RunState::Running => Decision::Leave("running: nothing to do".into()),
        RunState::ShutOff => Decision::Leave("shut off: nothing to do".into()),
        RunState::Undefined => Decision::Leave("not defined".into()),
        RunState::Other(s) => Decision::Leave(format!("{s}: left alone")),
    }
}

/// Resumes the domain `name` if an I/O error paused it, until it stays running or
/// `options.wait` is over; says what it did. A domain in any other state is left as it is.
pub fn resume_domain(ctl: &dyn Control, name: &str, options: &ResumeOptions) -> Result<String> {
    let state = ctl.run_state(name)?;
    // libvirt reports disk errors of active domains only; none is what a stopped one has.
    let errors = || ctl.disk_errors(name).unwrap_or_default();
    match decide(&state, errors) {
        Decision::Leave(what) => Ok(what),
        Decision::Resume(why) => resume_until_running(ctl, name, &why, options),
    }
}

/// What a resumed domain did while it settled.
enum Settled {
    /// Ran for the whole settle time.
    Running,
    /// Paused again, for this reason.
    Paused(PauseReason),
    /// Left the running state otherwise (shut off, crashed, ...).
    Ended(RunState),
}

fn settle(ctl: &dyn Control, name: &str, settle: Duration) -> Result<Settled> {
    let until = Instant::now() + settle;
    loop {
        match ctl.run_state(name)? {
            RunState::Running => {}
            RunState::Paused(reason) => return Ok(Settled::Paused(reason)),
            other => return Ok(Settled::Ended(other)),
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(Settled::Running);
        }
        std::thread::sleep(left.min(POLL));
    }
}

fn resume_until_running(
    ctl: &dyn Control,
    name: &str,
    why: &str,
    options: &ResumeOptions,
) -> Result<String> {
    let started = Instant::now();
    let deadline = started + options.wait;
    let mut attempts = 0u32;
    // When it paused is not known: seen paused now, it paused at the latest now.
    let mut resume_at = started + options.event_gap;
    // A paused VM's disks complete no requests (failed ones are not counted).
    let requests = || ctl.disk_requests(name).ok();
    loop {
        if let Some(wait) = resume_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        attempts += 1;
        match ctl.resume(name) {
            Ok(()) => {}
            // "not paused": it runs after all (libvirt saw QEMU's RESUME meanwhile); the
            // settling below says whether it stays so.
            Err(e) if e.kind() == ErrorKind::Conflict => {}
            Err(e) => return Err(e),
        }
        let again = match settle(ctl, name, options.settle)? {
            Settled::Running => {
                let tries = if attempts > 1 {
                    format!(" after {attempts} resumes")
                } else {
                    String::new()
                };
                return Ok(format!("resumed{tries} (was {why})"));
            }
            Settled::Paused(PauseReason::User) => {
                return Ok(format!("resumed (was {why}), then paused by its user"))
            }
            Settled::Ended(state) => return Ok(format!("resumed (was {why}); now {state}")),
            Settled::Paused(reason) => reason,
        };
        resume_at = Instant::now() + options.event_gap;
        if resume_at >= deadline {
            return Err(Error::timeout(
                name,
                format!(
                    "{why}; paused again ({again}) after each of {attempts} resumes in {:.1}s: {}",
                    started.elapsed().as_secs_f64(),
                    if why.contains(": no space") {
                        "its host has no space left for it (free some, then resume again)"
                    } else {
                        "its node does not serve its disk (bring the node up with `sftsan up SPEC`, then resume again)"
                    }
                ),
            ));
        }
        let at_pause = requests();
        if let Some(wait) = resume_at.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let still = ctl.run_state(name)?;
        match &still {
            RunState::Paused(PauseReason::User) => {
                return Ok(format!("{why}; then paused by its user: left alone"))
            }
            RunState::Paused(_) | RunState::Running => {}
            other => return Ok(format!("{why}; now {other}")),
        }
        // Paused all along, yet its disks worked: QEMU runs it.
        if let (RunState::Paused(_), Some(a), Some(b)) = (&still, at_pause, requests()) {
            if b > a {
                return Err(Error::conflict(
                    name,
                    format!(
                        "libvirt shows it {still}, but its disks completed {} requests meanwhile: QEMU runs it, and libvirt missed QEMU's resume (in libvirt 9.0 an I/O error event that arrives late, after a resume, marks a running domain paused; restarting libvirtd makes libvirt read QEMU's state again)",
                        b - a
                    ),
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A paused VM as QEMU and libvirt 9.0 show it: the first `failing` resumes pause it
    /// again (as while QEMU's NBD client reconnects), reported by turns as "I/O error" and
    /// "unknown"; after the resume that works, `stale` reads later a late BLOCK_IO_ERROR
    /// event marks it paused in libvirt for good while QEMU runs it (a resume then changes
    /// nothing, and its disk requests go on); `user_pause_after` reads after a resume that
    /// works, its user pauses it.
    struct FakeVm {
        state: Mutex<RunState>,
        failing: Mutex<u32>,
        stale: Mutex<Option<u32>>,
        user_pause_after: Mutex<Option<u32>>,
        errors: Vec<DiskError>,
        resumes: Mutex<Vec<Instant>>,
        /// QEMU runs it while libvirt shows it paused.
        phantom: Mutex<bool>,
        requests: Mutex<u64>,
    }

    impl FakeVm {
        fn new(state: RunState, failing: u32) -> FakeVm {
            FakeVm {
                state: Mutex::new(state),
                failing: Mutex::new(failing),
                stale: Mutex::new(None),
                user_pause_after: Mutex::new(None),
                errors: vec![DiskError {
                    disk: "vda".into(),
                    no_space: false,
                }],
                resumes: Mutex::new(vec![]),
                phantom: Mutex::new(false),
                requests: Mutex::new(0),
            }
        }

        fn resumes(&self) -> usize {
            self.resumes.lock().unwrap().len()
        }
    }

    fn countdown(slot: &Mutex<Option<u32>>) -> bool {
        let mut slot = slot.lock().unwrap();
        match *slot {
            Some(0) => {
                *slot = None;
                true
            }
            Some(n) => {
                *slot = Some(n - 1);
                false
            }
            None => false,
        }
    }

    impl Control for FakeVm {
        fn run_state(&self, _: &str) -> Result<RunState> {
            let mut state = self.state.lock().unwrap();
            let mut phantom = self.phantom.lock().unwrap();
            if *state == RunState::Running || *phantom {
                // The guest does I/O.
                *self.requests.lock().unwrap() += 1;
            }
            if *state == RunState::Running {
                if countdown(&self.stale) {
                    *state = RunState::Paused(PauseReason::IoError);
                    *phantom = true;
                } else if countdown(&self.user_pause_after) {
                    *state = RunState::Paused(PauseReason::User);
                }
            }
            Ok(state.clone())
        }
        fn resume(&self, name: &str) -> Result<()> {
            self.resumes.lock().unwrap().push(Instant::now());
            let mut state = self.state.lock().unwrap();
            if !matches!(*state, RunState::Paused(_)) {
                return Err(Error::conflict(name, "domain is not paused"));
            }
            if *self.phantom.lock().unwrap() {
                // QEMU's `cont` of a running VM: no RESUME event, libvirt's state stays.
                return Ok(());
            }
            let mut failing = self.failing.lock().unwrap();
            *state = if *failing > 0 {
                *failing -= 1;
                RunState::Paused(if *failing % 2 == 0 {
                    PauseReason::IoError
                } else {
                    PauseReason::Unknown
                })
            } else {
                RunState::Running
            };
            Ok(())
        }
        fn disk_errors(&self, _: &str) -> Result<Vec<DiskError>> {
            Ok(self.errors.clone())
        }
        fn disk_requests(&self, _: &str) -> Result<u64> {
            Ok(*self.requests.lock().unwrap())
        }
    }

    fn quick() -> ResumeOptions {
        ResumeOptions {
            wait: Duration::from_secs(5),
            settle: Duration::from_millis(120),
            event_gap: Duration::from_millis(30),
            concurrency: 2,
        }
    }

    #[test]
    fn only_vms_an_io_error_paused_are_resumed() {
        for (state, errors, want) in [
            (RunState::Running, true, "running: nothing to do"),
            (RunState::ShutOff, true, "shut off: nothing to do"),
            (
                RunState::Paused(PauseReason::User),
                true,
                "paused (user): left alone",
            ),
            (
                RunState::Paused(PauseReason::Other("migration".into())),
                true,
                "paused (migration): left alone",
            ),
            (
                RunState::Paused(PauseReason::Unknown),
                false,
                "paused (unknown), no disk error: left alone",
            ),
            (
                RunState::Other("crashed".into()),
                true,
                "crashed: left alone",
            ),
        ] {
            let mut vm = FakeVm::new(state.clone(), 0);
            if !errors {
                vm.errors.clear();
            }
            assert_eq!(resume_domain(&vm, "v", &quick()).unwrap(), want);
            assert_eq!(vm.resumes(), 0, "{state:?} was resumed");
            assert_eq!(*vm.state.lock().unwrap(), state);
        }
        let vm = FakeVm::new(RunState::Paused(PauseReason::Unknown), 0);
        assert_eq!(
            resume_domain(&vm, "v", &quick()).unwrap(),
            "resumed (was paused after an I/O error (vda: I/O error))"
        );
        assert_eq!(vm.resumes(), 1);
    }

    /// Resumed again and again, never sooner than the event gap after it was seen paused
    /// (the first time: after the call began).
    #[test]
    fn a_vm_that_pauses_again_is_resumed_until_it_stays_running() {
        let vm = FakeVm::new(RunState::Paused(PauseReason::IoError), 3);
        let t0 = Instant::now();
        let outcome = resume_domain(&vm, "v", &quick()).unwrap();
        let at = vm.resumes.lock().unwrap().clone();
        let gap = quick().event_gap;
        assert!(at[0] - t0 >= gap, "{:?}", at[0] - t0);
        for pair in at.windows(2) {
            assert!(pair[1] - pair[0] >= gap, "{:?}", pair[1] - pair[0]);
        }
        assert_eq!(
            outcome,
            "resumed after 4 resumes (was paused by an I/O error (vda: I/O error))"
        );
        assert_eq!(vm.resumes(), 4);
        assert_eq!(*vm.state.lock().unwrap(), RunState::Running);
    }

    /// A VM that libvirt shows paused while QEMU runs it (someone resumed it within a
    /// second of a failed resume) is named as such at the first retry, not after the wait.
    #[test]
    fn a_running_vm_that_libvirt_shows_paused_is_told_apart() {
        let vm = FakeVm::new(RunState::Paused(PauseReason::IoError), 0);
        *vm.stale.lock().unwrap() = Some(1);
        let t = Instant::now();
        let err = resume_domain(&vm, "v", &quick()).unwrap_err();
        assert!(t.elapsed() < quick().wait, "{:?}", t.elapsed());
        assert_eq!(err.kind(), ErrorKind::Conflict, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("QEMU runs it") && text.contains("restarting libvirtd"),
            "{text}"
        );
        assert_eq!(vm.resumes(), 1);
    }

    #[test]
    fn a_vm_whose_node_stays_down_fails_after_the_wait() {
        let vm = FakeVm::new(RunState::Paused(PauseReason::IoError), u32::MAX);
        let options = ResumeOptions {
            wait: Duration::from_millis(300),
            settle: Duration::from_millis(20),
            event_gap: Duration::from_millis(10),
            ..quick()
        };
        let t = Instant::now();
        let err = resume_domain(&vm, "v", &options).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
        let text = err.to_string();
        assert!(
            text.contains("paused again") && text.contains("sftsan up"),
            "{text}"
        );
        assert!(vm.resumes() > 1, "{}", vm.resumes());
        assert!(matches!(*vm.state.lock().unwrap(), RunState::Paused(_)));
    }

    #[test]
    fn a_vm_short_of_space_is_told_so() {
        let mut vm = FakeVm::new(RunState::Paused(PauseReason::IoError), u32::MAX);
        vm.errors[0].no_space = true;
        let options = ResumeOptions {
            wait: Duration::from_millis(100),
            settle: Duration::from_millis(10),
            event_gap: Duration::from_millis(10),
            ..quick()
        };
        let err = resume_domain(&vm, "v", &options).unwrap_err().to_string();
        assert!(
            err.contains("(vda: no space)") && err.contains("no space left"),
            "{err}"
        );
    }

    #[test]
    fn a_user_who_pauses_it_meanwhile_wins() {
        let vm = FakeVm::new(RunState::Paused(PauseReason::IoError), 0);
        *vm.user_pause_after.lock().unwrap() = Some(0);
        let outcome = resume_domain(&vm, "v", &quick()).unwrap();
        assert!(outcome.ends_with("then paused by its user"), "{outcome}");
        assert_eq!(vm.resumes(), 1);
        assert_eq!(
            *vm.state.lock().unwrap(),
            RunState::Paused(PauseReason::User)
        );
    }

    #[test]
    fn members_are_selected_by_name() {
        let m = |name: &str, node: &str, index| Member {
            name: name.into(),
            node: node.into(),
            index,
        };
        let all = vec![m("c-n1-1", "n1", 1), m("c-n1-2", "n1", 2), m("x", "n2", 1)];
        assert_eq!(select(all.clone(), &[], "c").unwrap(), all);
        assert_eq!(
            select(all.clone(), &["x".into()], "c").unwrap(),
            [m("x", "n2", 1)]
        );
        let err = select(all, &["x".into(), "gone".into()], "c").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound);
        assert!(err.to_string().contains("domain gone"), "{err}");
    }

    /// On libvirt's test driver: the cluster's domains are found by their metadata, a
    /// running one and one its user paused are left as they are, another cluster's and
    /// other domains are not touched.
    #[test]
    fn a_cluster_resume_on_the_test_driver_leaves_healthy_and_user_paused_vms() {
        use crate::vms::{build_domain, default_template};
        use crate::xml::{SftsanMeta, VmMode};
        let lv = Libvirt::open("test:///default").unwrap();
        let define = |cluster: &str, node: &str, index| {
            let meta = SftsanMeta {
                cluster: cluster.into(),
                image: "base".into(),
                node: node.into(),
                snapshot: index,
                mode: VmMode::Persistent,
                spec: "/nonexistent/spec.toml".into(),
            };
            let name = format!("{cluster}-{node}-{index}");
            let path = format!("/s/{node}/base-{index}.qcow2");
            let d = build_domain(&default_template(), &name, Path::new(&path), meta).unwrap();
            lv.define(&d).unwrap();
            lv.start(&name).unwrap();
            name
        };
        use std::path::Path;
        let a = define("ut-resume", "n1", 1);
        let b = define("ut-resume", "n2", 1);
        let other = define("ut-resume-other", "n1", 1);
        lv.suspend(&b).unwrap();
        lv.suspend(&other).unwrap();
        assert_eq!(
            lv.run_state(&b).unwrap(),
            RunState::Paused(PauseReason::User)
        );

        let report = resume_cluster(&lv, "ut-resume", &Selection::default(), &quick()).unwrap();
        let rows: Vec<(String, String)> = report
            .rows
            .iter()
            .map(|r| (r.vm.clone(), r.outcome.clone().unwrap()))
            .collect();
        assert_eq!(
            rows,
            [
                (a.clone(), "running: nothing to do".to_string()),
                (b.clone(), "paused (user): left alone".to_string())
            ],
            "{}",
            report.table()
        );
        assert_eq!(report.failures(), 0);
        assert!(
            report.table().contains("resume: 2 VMs, 0 failed"),
            "{}",
            report.table()
        );
        assert_eq!(
            lv.run_state(&b).unwrap(),
            RunState::Paused(PauseReason::User)
        );

        let only = Selection {
            nodes: vec!["n2".into()],
            names: vec![],
        };
        let report = resume_cluster(&lv, "ut-resume", &only, &quick()).unwrap();
        assert_eq!(report.rows.len(), 1);
        assert_eq!(report.rows[0].vm, b);
        let named = Selection {
            nodes: vec![],
            names: vec![other.clone()],
        };
        let err = resume_cluster(&lv, "ut-resume", &named, &quick()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
        assert_eq!(
            lv.run_state(&other).unwrap(),
            RunState::Paused(PauseReason::User)
        );
        for name in [a, b, other] {
            lv.destroy(&name).unwrap();
            lv.undefine(&name).unwrap();
            assert_eq!(lv.run_state(&name).unwrap(), RunState::Undefined);
        }
    }
}
