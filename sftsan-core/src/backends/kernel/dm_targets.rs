//! Typed parameters of the device-mapper targets the devicemapper crate does not model
//! (dm-snapshot, dm-clone), and of the thin-pool messages sftsan sends. They implement the
//! crate's `TargetParams`, so every table sftsan loads is built from typed fields and
//! `Sectors`, never from a hand-formatted string.

use std::fmt;
use std::str::FromStr;

use devicemapper::{DmError, DmResult, ErrorEnum, Sectors, TargetParams, TargetTypeBuf, ThinDevId};

fn invalid(what: impl Into<String>) -> DmError {
    DmError::Dm(ErrorEnum::Invalid, what.into())
}

/// The fields of `s` after the target type `expected`, exactly `count` of them.
fn fields<'a>(s: &'a str, expected: &str, count: usize) -> DmResult<Vec<&'a str>> {
    let mut words = s.split_whitespace();
    match words.next() {
        Some(t) if t == expected => {}
        other => {
            return Err(invalid(format!(
                "expected a {expected} target, found {other:?}"
            )))
        }
    }
    let rest: Vec<&str> = words.collect();
    if rest.len() != count {
        return Err(invalid(format!(
            "a {expected} target has {count} parameters, found {} in {s:?}",
            rest.len()
        )));
    }
    Ok(rest)
}

fn number(word: &str, what: &str) -> DmResult<u64> {
    word.parse()
        .map_err(|_| invalid(format!("{what}: {word:?} is not a number")))
}

fn target_type(name: &str) -> TargetTypeBuf {
    TargetTypeBuf::new(name.into()).expect("a short, valid target type name")
}

const SNAPSHOT: &str = "snapshot";
const CLONE: &str = "clone";

/// `snapshot <origin> <COW device> <P|N> <chunk size>` (Documentation/admin-guide/
/// device-mapper/snapshot.rst).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotTargetParams {
    /// The read-only device the snapshot is taken of.
    pub origin: devicemapper::Device,
    /// The device holding copied-on-write chunks.
    pub cow: devicemapper::Device,
    /// P: the COW store survives a reboot; N: it is transient.
    pub persistent: bool,
    /// Chunk size, a power of two.
    pub chunk_size: Sectors,
}

impl TargetParams for SnapshotTargetParams {
    fn param_str(&self) -> String {
        let mode = if self.persistent { "P" } else { "N" };
        format!("{} {} {mode} {}", self.origin, self.cow, *self.chunk_size)
    }

    fn target_type(&self) -> TargetTypeBuf {
        target_type(SNAPSHOT)
    }
}

impl fmt::Display for SnapshotTargetParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SNAPSHOT} {}", self.param_str())
    }
}

impl FromStr for SnapshotTargetParams {
    type Err = DmError;

    fn from_str(s: &str) -> DmResult<Self> {
        let v = fields(s, SNAPSHOT, 4)?;
        Ok(SnapshotTargetParams {
            origin: v[0].parse()?,
            cow: v[1].parse()?,
            persistent: match v[2] {
                "P" | "PO" => true,
                "N" => false,
                other => return Err(invalid(format!("snapshot mode {other:?} is not P or N"))),
            },
            chunk_size: Sectors(number(v[3], "snapshot chunk size")?),
        })
    }
}

/// `clone <metadata dev> <destination dev> <source dev> <region size>` with no feature
/// or core arguments (Documentation/admin-guide/device-mapper/dm-clone.rst).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CloneTargetParams {
    /// The device holding which regions are copied.
    pub metadata: devicemapper::Device,
    /// The local device the copy is written to.
    pub destination: devicemapper::Device,
    /// The device copied from, opened read-only.
    pub source: devicemapper::Device,
    /// Region size, a power of two.
    pub region_size: Sectors,
}

impl TargetParams for CloneTargetParams {
    fn param_str(&self) -> String {
        format!(
            "{} {} {} {}",
            self.metadata, self.destination, self.source, *self.region_size
        )
    }

    fn target_type(&self) -> TargetTypeBuf {
        target_type(CLONE)
    }
}

impl fmt::Display for CloneTargetParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{CLONE} {}", self.param_str())
    }
}

impl FromStr for CloneTargetParams {
    type Err = DmError;

    fn from_str(s: &str) -> DmResult<Self> {
        // The kernel reports the table with its (empty) argument counts appended.
        let trimmed = s.strip_suffix(" 0 0").unwrap_or(s);
        let v = fields(trimmed, CLONE, 4)?;
        Ok(CloneTargetParams {
            metadata: v[0].parse()?,
            destination: v[1].parse()?,
            source: v[2].parse()?,
            region_size: Sectors(number(v[3], "clone region size")?),
        })
    }
}

/// A message to a thin pool (Documentation/admin-guide/device-mapper/thin-provisioning.rst).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PoolMessage {
    /// Creates an empty thin volume of this id.
    CreateThin(ThinDevId),
    /// Deletes the thin volume of this id and frees its blocks.
    Delete(ThinDevId),
}

impl fmt::Display for PoolMessage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PoolMessage::CreateThin(id) => write!(f, "create_thin {id}"),
            PoolMessage::Delete(id) => write!(f, "delete {id}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use devicemapper::Device;

    fn dev(major: u32, minor: u32) -> Device {
        Device { major, minor }
    }

    #[test]
    fn a_snapshot_table_reads_as_the_kernel_documents_it_and_back() {
        let p = SnapshotTargetParams {
            origin: dev(253, 1),
            cow: dev(7, 3),
            persistent: true,
            chunk_size: Sectors(8),
        };
        assert_eq!(p.to_string(), "snapshot 253:1 7:3 P 8");
        assert_eq!(p.to_string().parse::<SnapshotTargetParams>().unwrap(), p);
        let transient = SnapshotTargetParams {
            persistent: false,
            ..p
        };
        assert_eq!(transient.param_str(), "253:1 7:3 N 8");
    }

    #[test]
    fn a_clone_table_reads_with_or_without_the_kernels_argument_counts() {
        let p = CloneTargetParams {
            metadata: dev(7, 0),
            destination: dev(7, 1),
            source: dev(8, 16),
            region_size: Sectors(128),
        };
        assert_eq!(p.to_string(), "clone 7:0 7:1 8:16 128");
        assert_eq!(p.to_string().parse::<CloneTargetParams>().unwrap(), p);
        assert_eq!(
            "clone 7:0 7:1 8:16 128 0 0"
                .parse::<CloneTargetParams>()
                .unwrap(),
            p
        );
    }

    #[test]
    fn malformed_tables_are_refused() {
        for bad in [
            "linear 7:0 0",
            "snapshot 253:1 7:3 X 8",
            "snapshot 253:1 7:3 P eight",
            "snapshot 253:1 7:3 P",
            "clone 7:0 7:1 8:16",
            "clone x 7:1 8:16 128",
        ] {
            let snapshot = bad.parse::<SnapshotTargetParams>().is_err();
            let clone = bad.parse::<CloneTargetParams>().is_err();
            assert!(snapshot && clone, "{bad:?} was accepted");
        }
    }

    #[test]
    fn pool_messages_are_the_documented_words() {
        let id = ThinDevId::new_u64(7).unwrap();
        assert_eq!(PoolMessage::CreateThin(id).to_string(), "create_thin 7");
        assert_eq!(PoolMessage::Delete(id).to_string(), "delete 7");
    }
}
