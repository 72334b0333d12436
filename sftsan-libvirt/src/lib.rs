//! sftsan-libvirt: domains, pool volumes and the libvirt hook over sftsan-core's snapshots.
//! (Filled by the libvirt issue; for now it only re-exports the core it builds on.)
pub use sftsan_core as core;
