//! Device-mapper devices by name, through the devicemapper crate (no dmsetup process).
//! Device nodes are found from dev_t through sysfs: /dev/mapper/NAME may not exist where
//! no udev runs.

use devicemapper::{DevId, Device, DmFlags, DmName, DmOptions, TargetLine, TargetParams, DM};
use std::path::PathBuf;

use crate::error::{Error, Result};

/// A table as the kernel reports it: (start sector, length, target type, parameters) per
/// line. Tables sftsan loads are typed (`TargetLine`); only what it reads back is raw.
pub type Table = Vec<(u64, u64, String, String)>;

fn dm_err(what: &str, name: &str, e: impl std::fmt::Display) -> Error {
    Error::refused(format!("device-mapper {what} {name}"), e.to_string())
}

fn open() -> Result<DM> {
    DM::new().map_err(|e| Error::unsupported("device-mapper", format!("{e} (is dm_mod loaded?)")))
}

fn dm_name(name: &str) -> Result<&DmName> {
    DmName::new(name).map_err(|e| dm_err("name", name, e))
}

/// The device's dev_t, or None when no device of that name exists.
pub fn device(name: &str) -> Result<Option<Device>> {
    if !std::path::Path::new("/dev/mapper/control").exists() {
        // No device-mapper in this kernel: no device of any name exists.
        return Ok(None);
    }
    let dm = open()?;
    let devices = dm.list_devices().map_err(|e| dm_err("list", name, e))?;
    Ok(devices
        .into_iter()
        .find(|(n, ..)| n.to_string() == name)
        .map(|(_, dev, _)| dev))
}

/// `/dev/<name>` of a block device, from its dev_t via sysfs.
pub fn node_path(dev: Device) -> Result<PathBuf> {
    let uevent = format!("/sys/dev/block/{}:{}/uevent", dev.major, dev.minor);
    let text = std::fs::read_to_string(&uevent).map_err(|e| Error::io(&uevent, e))?;
    let name = text
        .lines()
        .find_map(|l| l.strip_prefix("DEVNAME="))
        .ok_or_else(|| Error::corrupt(&uevent, "no DEVNAME"))?;
    Ok(PathBuf::from("/dev").join(name))
}

/// Size in 512-byte sectors of the block device `dev`.
pub fn sectors(major: u32, minor: u32) -> Result<u64> {
    let path = format!("/sys/dev/block/{major}:{minor}/size");
    std::fs::read_to_string(&path)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| Error::not_found(path, "cannot read the size"))
}

/// Creates `name` with the one-line table `line` and activates it; on any failure nothing
/// is left behind.
pub fn create<T: TargetParams>(
    name: &str,
    line: &TargetLine<T>,
    read_only: bool,
) -> Result<Device> {
    let table: Table = vec![(
        *line.start,
        *line.length,
        line.params.target_type().to_string(),
        line.params.param_str(),
    )];
    let dm = open()?;
    let id = DevId::Name(dm_name(name)?);
    let mut options = DmOptions::default();
    if read_only {
        options = options.set_flags(DmFlags::DM_READONLY);
    }
    let info = dm
        .device_create(dm_name(name)?, None, options)
        .map_err(|e| dm_err("create", name, e))?;
    let loaded = dm
        .table_load(&id, &table, options)
        .and_then(|_| dm.device_suspend(&id, DmOptions::default()));
    if let Err(e) = loaded {
        let _ = dm.device_remove(&id, DmOptions::default());
        return Err(dm_err("load table for", name, e));
    }
    Ok(info.device())
}

/// The active table of `name`, or None when it does not exist.
pub fn table(name: &str) -> Result<Option<Table>> {
    if device(name)?.is_none() {
        return Ok(None);
    }
    let dm = open()?;
    let id = DevId::Name(dm_name(name)?);
    let (_, table) = dm
        .table_status(
            &id,
            DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
        )
        .map_err(|e| dm_err("table of", name, e))?;
    Ok(Some(table))
}

/// The status lines of `name` (target-specific counters).
pub fn status(name: &str) -> Result<Table> {
    let dm = open()?;
    let id = DevId::Name(dm_name(name)?);
    dm.table_status(&id, DmOptions::default())
        .map(|(_, t)| t)
        .map_err(|e| dm_err("status of", name, e))
}

/// Waits up to `timeout` until `done` accepts the status lines of `name`, woken by
/// device-mapper's events (a target's table event, such as dm-clone finishing its copy,
/// wakes pollers of the control device); `Ok(None)` means the time ran out.
pub fn wait_for_status<T>(
    name: &str,
    timeout: std::time::Duration,
    mut done: impl FnMut(&Table) -> Option<T>,
) -> Result<Option<T>> {
    use std::os::fd::{AsRawFd, BorrowedFd};
    let dm = open()?;
    let arm = |dm: &DM| {
        dm.arm_poll()
            .map(drop)
            .map_err(|e| dm_err("arm poll for", name, e))
    };
    // Armed before the first look, so an event right after it still wakes the poll.
    arm(&dm)?;
    super::wait::until(
        std::time::Instant::now() + timeout,
        || status(name).map(|t| done(&t)),
        |left| {
            // SAFETY: `dm` owns the descriptor and outlives this borrow.
            let fd = unsafe { BorrowedFd::borrow_raw(dm.as_raw_fd()) };
            super::wait::readable(fd, left)
                .map_err(|e| dm_err("waiting for events of", name, e))?;
            arm(&dm)
        },
    )
}

/// Sends a message to a target (e.g. `create_thin 1` to a thin pool).
pub fn message(name: &str, message: &impl std::fmt::Display) -> Result<()> {
    let text = message.to_string();
    let dm = open()?;
    let id = DevId::Name(dm_name(name)?);
    dm.target_msg(&id, None, &text)
        .map(drop)
        .map_err(|e| dm_err(&format!("message {text:?} to"), name, e))
}

/// Removes `name` if it exists.
pub fn remove(name: &str) -> Result<()> {
    if device(name)?.is_none() {
        return Ok(());
    }
    let dm = open()?;
    dm.device_remove(&DevId::Name(dm_name(name)?), DmOptions::default())
        .map(drop)
        .map_err(|e| dm_err("remove", name, e))
}
