//! A node's upstream as a dm-multipath device: one path group per iSCSI path, the
//! parent's LUN first and a standby ancestor's LUN behind it, with `queue_if_no_path`.
//! When the parent's session gives up (its `replacement_timeout`), the kernel fails the
//! path and resubmits the I/O to the next group by itself: no daemon has to notice.
//! Paths are never reinstated (there is no multipathd): a failed parent stays failed.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use devicemapper::{
    DevId, Device, DmError, DmFlags, DmName, DmOptions, DmResult, ErrorEnum, Sectors, TargetLine,
    TargetParams, TargetTypeBuf, DM,
};
use serde::{Deserialize, Serialize};

use super::devref::DevRef;
use super::{dm, initiator};
use crate::error::{Error, Result};
use crate::resources::{Ctx, Observed, Params, Resource};

const MULTIPATH: &str = "multipath";
/// Every group holds one path, so the selector never chooses; round-robin is the one
/// every kernel with dm-multipath has beside it.
const SELECTOR: &str = "round-robin";

fn invalid(what: impl Into<String>) -> DmError {
    DmError::Dm(ErrorEnum::Invalid, what.into())
}

/// `multipath <#features> [queue_if_no_path] 0 <#groups> 1 <group>...`, each group
/// `round-robin 0 <#paths> 1 (<dev> 1)...` (Documentation/admin-guide/device-mapper/
/// dm-multipath and multipath-tools' tables).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipathTargetParams {
    /// Queue I/O while no path works, instead of failing it.
    pub queue_if_no_path: bool,
    /// Path groups in the order they are tried, each with its paths.
    pub groups: Vec<Vec<Device>>,
}

impl TargetParams for MultipathTargetParams {
    fn param_str(&self) -> String {
        let features = if self.queue_if_no_path {
            "1 queue_if_no_path"
        } else {
            "0"
        };
        let mut s = format!("{features} 0 {} 1", self.groups.len());
        for group in &self.groups {
            s.push_str(&format!(" {SELECTOR} 0 {} 1", group.len()));
            for dev in group {
                s.push_str(&format!(" {dev} 1"));
            }
        }
        s
    }

    fn target_type(&self) -> TargetTypeBuf {
        TargetTypeBuf::new(MULTIPATH.into()).expect("a short, valid target type name")
    }
}

impl fmt::Display for MultipathTargetParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{MULTIPATH} {}", self.param_str())
    }
}

/// Words of a dm table or status line, read by counts the line itself carries.
struct Words<'a>(std::str::SplitWhitespace<'a>);

impl<'a> Words<'a> {
    fn word(&mut self, what: &str) -> DmResult<&'a str> {
        self.0
            .next()
            .ok_or_else(|| invalid(format!("multipath: {what} missing")))
    }

    fn count(&mut self, what: &str) -> DmResult<usize> {
        let w = self.word(what)?;
        w.parse()
            .map_err(|_| invalid(format!("multipath: {what}: {w:?} is not a number")))
    }

    /// Skips a counted list (`<n> word...`), returning its words.
    fn counted(&mut self, what: &str) -> DmResult<Vec<&'a str>> {
        let n = self.count(what)?;
        (0..n).map(|_| self.word(what)).collect()
    }

    fn skip(&mut self, n: usize, what: &str) -> DmResult<()> {
        (0..n).try_for_each(|_| self.word(what).map(drop))
    }
}

impl FromStr for MultipathTargetParams {
    type Err = DmError;

    /// The table as the kernel reports it: it may add features (such as
    /// `retain_attached_hw_handler`) and the hardware handler it attached (`1 alua`).
    fn from_str(s: &str) -> DmResult<Self> {
        let mut w = Words(s.split_whitespace());
        let first = w.word("target type")?;
        if first != MULTIPATH {
            return Err(invalid(format!(
                "expected a multipath target, found {first:?}"
            )));
        }
        let features = w.counted("features")?;
        w.counted("hardware handler")?;
        let groups = w.count("path groups")?;
        w.word("initial group")?;
        let mut out = Vec::with_capacity(groups);
        for _ in 0..groups {
            w.word("path selector")?;
            w.counted("selector arguments")?;
            let paths = w.count("paths")?;
            let args = w.count("path arguments")?;
            let mut group = Vec::with_capacity(paths);
            for _ in 0..paths {
                group.push(w.word("path")?.parse()?);
                w.skip(args, "path arguments")?;
            }
            out.push(group);
        }
        Ok(MultipathTargetParams {
            queue_if_no_path: features.contains(&"queue_if_no_path"),
            groups: out,
        })
    }
}

/// One path as the kernel's status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PathStatus {
    /// The path's block device.
    pub device: Device,
    /// `A`: usable; `F`: failed (an I/O on it failed; only a message reinstates it).
    pub active: bool,
    /// How often it failed.
    pub fail_count: u32,
}

/// One path group as the kernel's status reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupStatus {
    /// `A`: I/O goes here now; `E`: enabled, standing by; `D`: bypassed.
    pub state: char,
    /// Its paths.
    pub paths: Vec<PathStatus>,
}

/// A multipath device's status line (`STATUSTYPE_INFO` of dm-mpath.c).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MultipathStatus {
    /// Path groups in table order.
    pub groups: Vec<GroupStatus>,
}

impl MultipathStatus {
    /// The device of the first usable path of the group I/O goes to now.
    pub fn active_path(&self) -> Option<Device> {
        self.groups
            .iter()
            .find(|g| g.state == 'A')?
            .paths
            .iter()
            .find(|p| p.active)
            .map(|p| p.device)
    }

    /// The path of `device`, wherever it is.
    pub fn path(&self, device: Device) -> Option<&PathStatus> {
        self.groups
            .iter()
            .flat_map(|g| &g.paths)
            .find(|p| p.device == device)
    }
}

impl FromStr for MultipathStatus {
    type Err = DmError;

    fn from_str(s: &str) -> DmResult<Self> {
        let mut w = Words(s.split_whitespace());
        w.counted("feature status")?;
        w.counted("hardware handler status")?;
        let groups = w.count("path groups")?;
        w.word("next group")?;
        let mut out = Vec::with_capacity(groups);
        for _ in 0..groups {
            let state = w.word("group state")?;
            let state = match state {
                "A" | "E" | "D" => state.chars().next().unwrap_or('E'),
                other => return Err(invalid(format!("multipath: group state {other:?}"))),
            };
            w.counted("selector status")?;
            let paths = w.count("paths")?;
            let info = w.count("path selector info")?;
            let mut group = Vec::with_capacity(paths);
            for _ in 0..paths {
                let device = w.word("path")?.parse()?;
                let active = match w.word("path state")? {
                    "A" => true,
                    "F" => false,
                    other => return Err(invalid(format!("multipath: path state {other:?}"))),
                };
                let fails = w.word("fail count")?;
                let fail_count = fails
                    .parse()
                    .map_err(|_| invalid(format!("multipath: fail count {fails:?}")))?;
                w.skip(info, "path selector info")?;
                group.push(PathStatus {
                    device,
                    active,
                    fail_count,
                });
            }
            out.push(GroupStatus {
                state,
                paths: group,
            });
        }
        Ok(MultipathStatus { groups: out })
    }
}

/// A message to a multipath device (dm-mpath.c `multipath_message`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MultipathMessage {
    /// Fail the I/O queued for lack of a path, and any later such I/O.
    FailIfNoPath,
    /// Queue I/O while no path works (again).
    QueueIfNoPath,
}

impl fmt::Display for MultipathMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MultipathMessage::FailIfNoPath => "fail_if_no_path",
            MultipathMessage::QueueIfNoPath => "queue_if_no_path",
        })
    }
}

/// The status of multipath device `name`.
pub fn status(name: &str) -> Result<MultipathStatus> {
    let lines = dm::status(name)?;
    let line = lines
        .first()
        .filter(|l| l.2 == MULTIPATH)
        .ok_or_else(|| Error::corrupt(name, format!("not a multipath device: {lines:?}")))?;
    line.3
        .parse()
        .map_err(|e| Error::corrupt(name, format!("multipath status {:?}: {e}", line.3)))
}

/// The active table of multipath device `name`; None when the device is not there.
pub fn table(name: &str) -> Result<Option<MultipathTargetParams>> {
    let Some(lines) = dm::table(name)? else {
        return Ok(None);
    };
    let line = lines
        .first()
        .filter(|l| l.2 == MULTIPATH)
        .ok_or_else(|| Error::corrupt(name, format!("not a multipath table: {lines:?}")))?;
    format!("{MULTIPATH} {}", line.3)
        .parse()
        .map(Some)
        .map_err(|e| Error::corrupt(name, format!("multipath table {:?}: {e}", line.3)))
}

/// A node's upstream: a read-only dm-multipath device over its iSCSI paths, one path group
/// each, in the order they are used.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmMultipath {
    /// Name of the node (from the spec) the device is made on.
    pub node: String,
    /// The dm device's name, e.g. `sftsan-<cluster>-<node>-mpath`.
    pub name: String,
    /// The paths: the parent's LUN, then the standby ancestor's (each an iSCSI session).
    pub paths: Vec<DevRef>,
    /// The image's length.
    pub sectors: Sectors,
}

impl DmMultipath {
    fn params(&self) -> Result<MultipathTargetParams> {
        let groups = self
            .paths
            .iter()
            .map(|p| p.resolve().map(|d| vec![d]))
            .collect::<Result<_>>()?;
        Ok(MultipathTargetParams {
            queue_if_no_path: true,
            groups,
        })
    }

    fn shape(sectors: u64, groups: usize) -> Params {
        vec![
            ("target", MULTIPATH.into()),
            ("sectors", sectors.to_string()),
            ("path groups", groups.to_string()),
        ]
    }
}

impl Resource for DmMultipath {
    fn desired(&self) -> Params {
        DmMultipath::shape(*self.sectors, self.paths.len())
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        Ok(match dm::table(&self.name)? {
            None => Observed::Absent,
            Some(t) if t.is_empty() => Observed::Partial(format!("{} has no table", self.name)),
            Some(t) => {
                let groups = table(&self.name)?.map_or(0, |p| p.groups.len());
                Observed::Present(DmMultipath::shape(t[0].1, groups))
            }
        })
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        // Read-only: the paths are write-protected LUNs, and a read-only table opens them
        // for reading only.
        let line = TargetLine::new(Sectors(0), self.sectors, self.params()?);
        dm::create(&self.name, &line, true).map(drop)
    }

    /// Queued I/O would keep the device from ever going: fail it first, then remove.
    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        if dm::device(&self.name)?.is_none() {
            return Ok(());
        }
        // A device without a table (a half-made one) takes no message; remove it anyway.
        let _ = dm::message(&self.name, &MultipathMessage::FailIfNoPath);
        dm::remove(&self.name)
    }
}

/// How long logging out a session that lost its target may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(15);

/// Makes I/O that waits for an upstream that no longer answers fail, before dm device
/// `name` is removed: what it has in flight to such an upstream would keep its removal
/// waiting forever (dm-clone waits for its hydration, dm-cache for its promotions). Each
/// multipath device below `name` without a working path stops queueing, and its paths'
/// sessions that lost their target (a last path's never times out) are logged out, which
/// fails what they hold. An upstream with a working path is left as it is.
pub fn release_below(ctx: &Ctx, name: &str) -> Result<()> {
    for mpath in multipath_below(name)? {
        release(ctx, &mpath)?;
    }
    Ok(())
}

fn release(ctx: &Ctx, name: &str) -> Result<()> {
    let paths: Vec<_> = status(name)?
        .groups
        .into_iter()
        .flat_map(|g| g.paths)
        .map(|p| {
            let session = initiator::session_of_disk(p.device.major, p.device.minor);
            (p, session)
        })
        .collect();
    let working = paths
        .iter()
        .any(|(p, s)| p.active && s.as_ref().is_some_and(|s| s.state == "LOGGED_IN"));
    if working {
        return Ok(());
    }
    tracing::info!("{name}: no working path; failing the I/O that waits for one");
    dm::message(name, &MultipathMessage::FailIfNoPath)?;
    for session in paths.iter().filter_map(|(_, s)| s.as_ref()) {
        initiator::fail_held_io(ctx, session, RELEASE_TIMEOUT)
            .map_err(|e| e.context(format!("releasing {name}")))?;
    }
    Ok(())
}

/// The multipath devices `name` is built on, at any depth.
fn multipath_below(name: &str) -> Result<Vec<String>> {
    let fail = |e: DmError| Error::refused(format!("device-mapper deps of {name}"), e.to_string());
    let dm = DM::new().map_err(|e| Error::unsupported("device-mapper", e.to_string()))?;
    let (mut found, mut todo) = (Vec::new(), vec![name.to_string()]);
    while let Some(next) = todo.pop() {
        let id = DevId::Name(DmName::new(&next).map_err(fail)?);
        for dev in dm.table_deps(&id, DmOptions::default()).map_err(fail)? {
            let sysfs = format!("/sys/dev/block/{}:{}/dm/name", dev.major, dev.minor);
            let Ok(below) = std::fs::read_to_string(&sysfs) else {
                continue; // not a dm device: a disk, a loop device
            };
            let below = below.trim().to_string();
            let is_multipath =
                dm::table(&below)?.is_some_and(|t| t.first().is_some_and(|l| l.2 == MULTIPATH));
            if is_multipath {
                found.push(below);
            } else {
                todo.push(below);
            }
        }
    }
    Ok(found)
}

/// Replaces the table of multipath device `name` with `params` without failing queued or
/// in-flight I/O: the new table is loaded beside the live one, the device suspended without
/// flushing (I/O waiting for a path stays queued), and resumed, which swaps the tables;
/// I/O then goes to the new table's paths. A table that does not load changes nothing.
pub fn reload(name: &str, params: &MultipathTargetParams, sectors: Sectors) -> Result<()> {
    let fail = |what: &str, e: DmError| {
        Error::refused(format!("device-mapper {what} {name}"), e.to_string())
    };
    let dm = DM::new().map_err(|e| Error::unsupported("device-mapper", e.to_string()))?;
    let id = DevId::Name(DmName::new(name).map_err(|e| fail("name", e))?);
    let table = vec![(0, *sectors, MULTIPATH.to_string(), params.param_str())];
    let read_only = DmOptions::default().set_flags(DmFlags::DM_READONLY);
    dm.table_load(&id, &table, read_only)
        .map_err(|e| fail("load table for", e))?;
    let noflush = DmOptions::default().set_flags(DmFlags::DM_SUSPEND | DmFlags::DM_NOFLUSH);
    if let Err(e) = dm.device_suspend(&id, noflush) {
        let _ = dm.table_clear(&id);
        return Err(fail("suspend", e));
    }
    dm.device_suspend(&id, DmOptions::default())
        .map(drop)
        .map_err(|e| fail("resume", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dev(major: u32, minor: u32) -> Device {
        Device { major, minor }
    }

    #[test]
    fn a_table_reads_as_the_kernel_reports_it_and_back() {
        let p = MultipathTargetParams {
            queue_if_no_path: true,
            groups: vec![vec![dev(8, 16)], vec![dev(8, 32)]],
        };
        assert_eq!(
            p.to_string(),
            "multipath 1 queue_if_no_path 0 2 1 round-robin 0 1 1 8:16 1 round-robin 0 1 1 8:32 1"
        );
        assert_eq!(p.to_string().parse::<MultipathTargetParams>().unwrap(), p);
        // The kernel's own report adds the features and hardware handler it keeps.
        let kernel = "multipath 2 queue_if_no_path retain_attached_hw_handler 1 alua 2 1 \
                      round-robin 0 1 1 8:16 1 round-robin 0 1 1 8:32 1";
        assert_eq!(kernel.parse::<MultipathTargetParams>().unwrap(), p);
        let single = MultipathTargetParams {
            queue_if_no_path: false,
            groups: vec![vec![dev(8, 0)]],
        };
        assert_eq!(single.param_str(), "0 0 1 1 round-robin 0 1 1 8:0 1");
    }

    #[test]
    fn a_status_line_says_which_path_carries_the_io() {
        let before = "2 0 0 0 2 1 A 0 1 0 8:16 A 0 E 0 1 0 8:32 A 0 ";
        let s: MultipathStatus = before.parse().unwrap();
        assert_eq!(s.active_path(), Some(dev(8, 16)));
        let after = "2 1 1 0 2 2 E 0 1 0 8:16 F 1 A 0 1 0 8:32 A 0 ";
        let s: MultipathStatus = after.parse().unwrap();
        assert_eq!(s.active_path(), Some(dev(8, 32)));
        assert_eq!(
            s.path(dev(8, 16)),
            Some(&PathStatus {
                device: dev(8, 16),
                active: false,
                fail_count: 1
            })
        );
        // No I/O yet: no group is current.
        let idle: MultipathStatus = "2 0 0 0 1 1 E 0 1 0 8:0 A 0".parse().unwrap();
        assert_eq!(idle.active_path(), None);
    }

    #[test]
    fn malformed_lines_are_refused() {
        for bad in [
            "linear 8:0 0",
            "multipath 1 queue_if_no_path 0 1 1 round-robin 0 1 1",
            "multipath x",
        ] {
            assert!(bad.parse::<MultipathTargetParams>().is_err(), "{bad:?}");
        }
        for bad in [
            "2 0 0 0 1 1 X 0 1 0 8:0 A 0",
            "2 0 0 0 1 1 A 0 1 0 8:0 Q 0",
            "2 0",
        ] {
            assert!(bad.parse::<MultipathStatus>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn messages_are_the_documented_words() {
        assert_eq!(
            MultipathMessage::FailIfNoPath.to_string(),
            "fail_if_no_path"
        );
        assert_eq!(
            MultipathMessage::QueueIfNoPath.to_string(),
            "queue_if_no_path"
        );
    }
}
