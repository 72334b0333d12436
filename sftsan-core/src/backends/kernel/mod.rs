//! The kernel data path (device-mapper, loop, LIO/tgt, open-iscsi). Before anything is
//! touched, the probe says exactly what the running kernel lacks.

pub mod blockdev;
pub mod configfs;
pub mod devref;
pub use crate::backends::shared::dm;
pub mod dm_devices;
pub mod dm_targets;
pub mod initiator;
pub mod lio;
pub mod loopback;
pub mod multipath;
pub mod probe;
pub mod store;
pub mod target_probe;
pub mod uevents;
pub use crate::backends::shared::wait;
