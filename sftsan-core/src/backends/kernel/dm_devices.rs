//! The device-mapper devices of a kernel-backend node: the cache over the upstream disk
//! (dm-cache or dm-clone), and per VM either a persistent dm-snapshot or a thin volume with the cache as its
//! external origin (one thin pool per node).

use devicemapper::{
    CacheTargetParams, LinearTargetParams, Sectors, TargetLine, ThinDevId, ThinPoolTargetParams,
    ThinTargetParams,
};
use serde::{Deserialize, Serialize};

use super::devref::DevRef;
use super::dm;
use super::dm_targets::{CloneTargetParams, PoolMessage, SnapshotTargetParams};
use super::multipath::release_below;
use crate::error::{Error, Result};
use crate::resources::{Ctx, Observed, Params, Resource};

/// What every dm resource observes: its first target's type and length.
fn observe_table(name: &str) -> Result<Observed> {
    Ok(match dm::table(name)? {
        None => Observed::Absent,
        Some(t) if t.is_empty() => Observed::Partial(format!("{name} has no table")),
        Some(t) => Observed::Present(table_params(&t[0].2, t[0].1)),
    })
}

/// What is compared between the desired and the observed device: one function makes both,
/// so they cannot drift apart in format (`Sectors` displays with a unit, the kernel's table
/// without).
fn table_params(target: &str, sectors: u64) -> Params {
    vec![("target", target.into()), ("sectors", sectors.to_string())]
}

fn desired(target: &str, sectors: Sectors) -> Params {
    table_params(target, *sectors)
}

/// Every sftsan dm device is one target over its whole length.
fn whole<T: devicemapper::TargetParams>(sectors: Sectors, params: T) -> TargetLine<T> {
    TargetLine::new(Sectors(0), sectors, params)
}

/// A plain linear view of another device. LIO claims the device it exports exclusively,
/// while device-mapper devices share their claims: a view of the cache lets LIO export it
/// while the VMs' disks build on the cache itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmLinear {
    /// Name of the node (from the spec) the device is made on.
    pub node: String,
    /// The dm device's name, e.g. `sftsan-<cluster>-<node>-relay`.
    pub name: String,
    /// The device the view maps, from its first sector.
    pub origin: DevRef,
    /// The view's length.
    pub sectors: Sectors,
}

impl Resource for DmLinear {
    fn desired(&self) -> Params {
        desired("linear", self.sectors)
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        observe_table(&self.name)
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let params = LinearTargetParams::new(self.origin.resolve()?, Sectors(0));
        dm::create(&self.name, &whole(self.sectors, params), false).map(drop)
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)
    }
}

/// dm-cache, writethrough with the smq policy: reads of the upstream disk are kept on a
/// local cache device, with a small metadata device beside it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DmCache {
    /// Name of the node (from the spec) the device is made on.
    pub node: String,
    /// The dm device's name, e.g. `sftsan-<cluster>-<node>-cache`.
    pub name: String,
    /// The slow device whose reads are cached (a read-only view of the parent's LUN).
    pub origin: DevRef,
    /// The local fast device holding cached blocks (the image's size).
    pub cache: DevRef,
    /// The local device holding dm-cache's metadata (which blocks are cached).
    pub metadata: DevRef,
    /// The origin's (the image's) length.
    pub sectors: Sectors,
    /// Cache block size (64 KiB = 128 sectors).
    pub block_sectors: Sectors,
}

impl Resource for DmCache {
    fn desired(&self) -> Params {
        desired("cache", self.sectors)
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        observe_table(&self.name)
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let params = CacheTargetParams::new(
            self.metadata.resolve()?,
            self.cache.resolve()?,
            self.origin.resolve()?,
            self.block_sectors,
            vec!["writethrough".into()],
            "smq".into(),
            vec![],
        );
        dm::create(&self.name, &whole(self.sectors, params), false).map(drop)
    }

    /// A promotion in flight to a dead upstream would hold the removal: released first.
    fn teardown(&self, ctx: &Ctx) -> Result<()> {
        if dm::device(&self.name)?.is_some() {
            release_below(ctx, &self.name)?;
        }
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
    /// Name of the node (from the spec) the device is made on.
    pub node: String,
    /// The dm device's name, e.g. `sftsan-<cluster>-<node>-cache`.
    pub name: String,
    /// The device copied from: the parent's LUN, via the node's iSCSI session.
    pub source: DevRef,
    /// The local device the copy is written to (the image's size).
    pub destination: DevRef,
    /// The local device holding dm-clone's metadata (which regions are copied).
    pub metadata: DevRef,
    /// The source's (the image's) length.
    pub sectors: Sectors,
    /// Region size (64 KiB = 128 sectors), a power of two.
    pub region_sectors: Sectors,
}

impl Resource for DmClone {
    fn desired(&self) -> Params {
        desired("clone", self.sectors)
    }

    fn observe(&self, _ctx: &Ctx) -> Result<Observed> {
        observe_table(&self.name)
    }

    fn create(&self, _ctx: &Ctx) -> Result<()> {
        let params = CloneTargetParams {
            metadata: self.metadata.resolve()?,
            destination: self.destination.resolve()?,
            source: self.source.resolve()?,
            region_size: self.region_sectors,
        };
        dm::create(&self.name, &whole(self.sectors, params), false).map(drop)
    }

    /// Its removal waits for the hydration in flight: released first if the upstream is dead.
    fn teardown(&self, ctx: &Ctx) -> Result<()> {
        if dm::device(&self.name)?.is_some() {
            release_below(ctx, &self.name)?;
        }
        dm::remove(&self.name)
    }
}

/// How far a dm-clone device has copied its source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hydration {
    /// Regions already copied to the destination.
    pub hydrated: u64,
    /// Regions the device has in all.
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
    /// Name of the node (from the spec) the device is made on.
    pub node: String,
    /// Number of the VM disk on the node, from 1; 0 for the cache's upstream view.
    pub index: u32,
    /// The dm device's name, e.g. `sftsan-<cluster>-<node>-snap-1`.
    pub name: String,
    /// The read-only device the snapshot is taken of (the node's cache, or the parent's LUN).
    pub origin: DevRef,
    /// The device holding the snapshot's copied-on-write chunks.
    pub cow: DevRef,
    /// The snapshot's length (the origin's).
    pub sectors: Sectors,
    /// COW chunk size (4 KiB = 8 sectors).
    pub chunk_sectors: Sectors,
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
        let params = SnapshotTargetParams {
            origin: self.origin.resolve()?,
            cow: self.cow.resolve()?,
            persistent: self.persistent,
            chunk_size: self.chunk_sectors,
        };
        dm::create(&self.name, &whole(self.sectors, params), false).map(drop)
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)
    }
}

/// One thin pool per node, holding the VMs' thin volumes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinPool {
    /// Name of the node (from the spec) the device is made on.
    pub node: String,
    /// The dm device's name, e.g. `sftsan-<cluster>-<node>-pool`.
    pub name: String,
    /// The device holding the pool's metadata (volumes and their block mappings).
    pub metadata: DevRef,
    /// The device holding the blocks the thin volumes have written.
    pub data: DevRef,
    /// The pool's length; None: all of the data device (a device the spec names, whose
    /// size is known only on its host).
    pub sectors: Option<Sectors>,
    /// Pool block size (64 KiB = 128 sectors).
    pub block_sectors: Sectors,
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
        let params = ThinPoolTargetParams::new(
            self.metadata.resolve()?,
            self.data.resolve()?,
            self.block_sectors,
            devicemapper::DataBlocks(0),
            vec!["skip_block_zeroing".into()],
        );
        let sectors = match self.sectors {
            Some(sectors) => sectors,
            // Whole pool blocks: the target refuses a partial last block.
            None => Sectors(*self.data.sectors()? / *self.block_sectors * *self.block_sectors),
        };
        dm::create(&self.name, &whole(sectors, params), false).map(drop)
    }

    fn teardown(&self, _ctx: &Ctx) -> Result<()> {
        dm::remove(&self.name)
    }
}

/// A VM's disk as a thin volume whose unwritten blocks read from an external origin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThinVolume {
    /// Name of the node (from the spec) the device is made on.
    pub node: String,
    /// Number of the VM disk on the node, from 1.
    pub index: u32,
    /// The dm device's name, e.g. `sftsan-<cluster>-<node>-thin-1`.
    pub name: String,
    /// Name of the dm thin pool holding the volume.
    pub pool: String,
    /// The volume's id inside the pool (the VM disk's number).
    pub thin_id: u32,
    /// The external origin unwritten blocks read from: the node's cache.
    pub origin: DevRef,
    /// The volume's length (the image's size).
    pub sectors: Sectors,
}

impl ThinVolume {
    /// The volume's id as the pool's messages and table take it.
    fn id(&self) -> Result<ThinDevId> {
        ThinDevId::new_u64(self.thin_id.into())
            .map_err(|e| Error::invalid(format!("thin volume {}", self.name), e.to_string()))
    }

    /// The dm device of thin id `thin_id` in the pool, over the external origin.
    fn activate(&self) -> Result<()> {
        let pool = DevRef::Dm {
            name: self.pool.clone(),
        }
        .resolve()?;
        let params = ThinTargetParams::new(pool, self.id()?, Some(self.origin.resolve()?));
        dm::create(&self.name, &whole(self.sectors, params), false).map(drop)
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
        let id = self.id()?;
        let _ = dm::message(&self.pool, &PoolMessage::Delete(id));
        dm::message(&self.pool, &PoolMessage::CreateThin(id))?;
        self.activate().inspect_err(|_| {
            let _ = dm::message(&self.pool, &PoolMessage::Delete(id));
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
            let _ = dm::message(&self.pool, &PoolMessage::Delete(self.id()?));
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
