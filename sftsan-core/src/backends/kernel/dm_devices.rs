//! The device-mapper devices of a kernel-backend node: the cache over the upstream disk
//! (dm-cache or dm-clone), and per VM either a persistent dm-snapshot or a thin volume with the cache as its
//! external origin (one thin pool per node).

use serde::{Deserialize, Serialize};

use super::devref::DevRef;
use super::dm;
use crate::error::{Error, Result};
use crate::resources::{Ctx, Observed, Params, Resource};

/// What every dm resource observes: its first target's type and length.
fn observe_table(name: &str) -> Result<Observed> {
    Ok(match dm::table(name)? {
        None => Observed::Absent,
        Some(t) if t.is_empty() => Observed::Partial(format!("{name} has no table")),
        Some(t) => Observed::Present(vec![
            ("target", t[0].2.clone()),
            ("sectors", t[0].1.to_string()),
        ]),
    })
}

fn desired(target: &str, sectors: u64) -> Params {
    vec![("target", target.into()), ("sectors", sectors.to_string())]
}

/// A plain linear view of another device. LIO claims the device it exports exclusively,
/// while device-mapper devices share their claims: a view of the cache lets LIO export it
/// while the VMs' disks build on the cache itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmLinear {
    pub node: String,
    pub name: String,
    pub origin: DevRef,
    pub sectors: u64,
}

impl Resource for DmLinear {
    fn desired(&self) -> Params {
        desired("linear", self.sectors)
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        observe_table(&self.name)
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let params = format!("{} 0", self.origin.table_arg()?);
        dm::create(
            &self.name,
            &vec![(0, self.sectors, "linear".into(), params)],
            false,
        )
        .map(drop)
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)
    }
}

/// dm-cache, writethrough with the smq policy: reads of the upstream disk are kept on a
/// local cache device, with a small metadata device beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmCache {
    pub node: String,
    pub name: String,
    pub origin: DevRef,
    pub cache: DevRef,
    pub metadata: DevRef,
    /// The origin's (the image's) length in sectors.
    pub sectors: u64,
    /// Cache block size in sectors (64 KiB = 128).
    pub block_sectors: u64,
}

impl Resource for DmCache {
    fn desired(&self) -> Params {
        desired("cache", self.sectors)
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        observe_table(&self.name)
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let params = format!(
            "{} {} {} {} 1 writethrough smq 0",
            self.metadata.table_arg()?,
            self.cache.table_arg()?,
            self.origin.table_arg()?,
            self.block_sectors
        );
        dm::create(
            &self.name,
            &vec![(0, self.sectors, "cache".into(), params)],
            false,
        )
        .map(drop)
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)
    }
}

/// dm-clone: a local copy of the upstream disk, hydrated region by region in the
/// background. Until a region is copied, reads of it go to the source (the parent), so the
/// device reads the image from the start. dm-clone opens its source read-only, so it
/// builds on the parent's write-protected LUN directly.
///
/// Reads alone never hydrate a region (dm-clone-target.c remaps them to the source), so
/// `no_hydration` would leave the local copy empty forever: background hydration stays on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmClone {
    pub node: String,
    pub name: String,
    pub source: DevRef,
    pub destination: DevRef,
    pub metadata: DevRef,
    /// The source's (the image's) length in sectors.
    pub sectors: u64,
    /// Region size in sectors (64 KiB = 128), a power of two.
    pub region_sectors: u64,
}

impl Resource for DmClone {
    fn desired(&self) -> Params {
        desired("clone", self.sectors)
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        observe_table(&self.name)
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let params = format!(
            "{} {} {} {}",
            self.metadata.table_arg()?,
            self.destination.table_arg()?,
            self.source.table_arg()?,
            self.region_sectors
        );
        dm::create(
            &self.name,
            &vec![(0, self.sectors, "clone".into(), params)],
            false,
        )
        .map(drop)
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)
    }
}

/// How far a dm-clone device has copied its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hydration {
    pub hydrated: u64,
    pub regions: u64,
    /// Regions being copied right now.
    pub in_flight: u64,
}

/// dm-clone's status line: `<metadata block size> <used>/<total metadata blocks>
/// <region size> <hydrated>/<total regions> <hydrating regions> ...`.
pub fn parse_clone_status(line: &str) -> Option<Hydration> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (hydrated, regions) = fields.get(3)?.split_once('/')?;
    Some(Hydration {
        hydrated: hydrated.parse().ok()?,
        regions: regions.parse().ok()?,
        in_flight: fields.get(4)?.parse().ok()?,
    })
}

/// The hydration of dm-clone device `name`.
pub fn clone_hydration(name: &str) -> Result<Hydration> {
    let status = dm::status(name)?;
    status
        .first()
        .filter(|t| t.2 == "clone")
        .and_then(|t| parse_clone_status(&t.3))
        .ok_or_else(|| Error::corrupt(name, format!("not a dm-clone status: {status:?}")))
}

/// A VM's disk as a persistent dm-snapshot of a read-only origin: its COW store survives
/// a reboot (unlike the original sftsan's non-persistent snapshots).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmSnapshot {
    pub node: String,
    pub index: u32,
    pub name: String,
    pub origin: DevRef,
    pub cow: DevRef,
    pub sectors: u64,
    /// COW chunk size in sectors (4 KiB = 8).
    pub chunk_sectors: u64,
    /// A persistent COW store survives a reboot; a transient one is for views that are
    /// never written.
    #[serde(default = "persistent")]
    pub persistent: bool,
}

fn persistent() -> bool {
    true
}

impl Resource for DmSnapshot {
    fn desired(&self) -> Params {
        desired("snapshot", self.sectors)
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        observe_table(&self.name)
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let params = format!(
            "{} {} {} {}",
            self.origin.table_arg()?,
            self.cow.table_arg()?,
            if self.persistent { "P" } else { "N" },
            self.chunk_sectors
        );
        dm::create(
            &self.name,
            &vec![(0, self.sectors, "snapshot".into(), params)],
            false,
        )
        .map(drop)
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)
    }
}

/// One thin pool per node, holding the VMs' thin volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinPool {
    pub node: String,
    pub name: String,
    pub metadata: DevRef,
    pub data: DevRef,
    /// The pool's length in sectors; None: all of the data device (a device the spec
    /// names, whose size is known only on its host).
    pub sectors: Option<u64>,
    /// Pool block size in sectors (64 KiB = 128).
    pub block_sectors: u64,
}

impl Resource for ThinPool {
    fn desired(&self) -> Params {
        match self.sectors {
            Some(sectors) => desired("thin-pool", sectors),
            None => vec![("target", "thin-pool".into())],
        }
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        observe_table(&self.name)
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        // Blocks a thin volume has not written come from its external origin, so zeroing
        // new blocks would be wasted work.
        let params = format!(
            "{} {} {} 0 1 skip_block_zeroing",
            self.metadata.table_arg()?,
            self.data.table_arg()?,
            self.block_sectors
        );
        let sectors = match self.sectors {
            Some(sectors) => sectors,
            // Whole pool blocks: the target refuses a partial last block.
            None => self.data.sectors()? / self.block_sectors * self.block_sectors,
        };
        dm::create(
            &self.name,
            &vec![(0, sectors, "thin-pool".into(), params)],
            false,
        )
        .map(drop)
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)
    }
}

/// A VM's disk as a thin volume whose unwritten blocks read from an external origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinVolume {
    pub node: String,
    pub index: u32,
    pub name: String,
    pub pool: String,
    pub thin_id: u32,
    pub origin: DevRef,
    pub sectors: u64,
}

impl ThinVolume {
    /// The dm device of thin id `thin_id` in the pool, over the external origin.
    fn activate(&self) -> Result<()> {
        let pool = DevRef::Dm {
            name: self.pool.clone(),
        }
        .table_arg()?;
        let params = format!("{pool} {} {}", self.thin_id, self.origin.table_arg()?);
        dm::create(
            &self.name,
            &vec![(0, self.sectors, "thin".into(), params)],
            false,
        )
        .map(drop)
    }
}

impl Resource for ThinVolume {
    fn desired(&self) -> Params {
        desired("thin", self.sectors)
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        observe_table(&self.name)
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        // A volume id left in the pool's metadata by an interrupted run may hold writes of
        // an earlier VM: delete it first so the VM starts from the origin's content.
        let _ = dm::message(&self.pool, &format!("delete {}", self.thin_id));
        dm::message(&self.pool, &format!("create_thin {}", self.thin_id))?;
        self.activate().inspect_err(|_| {
            let _ = dm::message(&self.pool, &format!("delete {}", self.thin_id));
        })
    }

    /// After a reboot the pool's metadata still holds the volume and its VM's writes.
    fn revive(&self, _ctx: &Ctx) -> Result<()> {
        self.activate().map_err(|e| {
            e.context(format!(
                "thin volume {} of {} cannot be activated again (`sftsan snapshot remove` discards it)",
                self.thin_id, self.pool
            ))
        })
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)?;
        if dm::device(&self.pool)?.is_some() {
            let _ = dm::message(&self.pool, &format!("delete {}", self.thin_id));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clone_status_line_gives_its_hydration() {
        let line = "8 37/1024 128 25/256 1 0 4 hydration_threshold 1 hydration_batch_size 1 rw";
        assert_eq!(
            parse_clone_status(line),
            Some(Hydration {
                hydrated: 25,
                regions: 256,
                in_flight: 1
            })
        );
        assert_eq!(parse_clone_status("Fail"), None);
        assert_eq!(parse_clone_status("8 37/1024 128 x/256 0"), None);
    }
}
