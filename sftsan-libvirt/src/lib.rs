//! sftsan-libvirt: libvirt domains over sftsan-core's snapshots.
//!
//! - [`xml`]: domain XML as serde types (quick-xml); what sftsan does not model is kept
//!   verbatim, sftsan's own `<metadata>` element is found by its namespace.
//! - [`identity`]: stable names, UUIDs and MACs derived from (cluster, node, index).
//! - [`vms`]: a cluster's VMs (one per snapshot of each compute node) and their domains,
//!   from a user's template or the built-in default.
//! - [`libvirt`]: the libvirt calls, through the `virt` crate: domains and dir pools.
//! - [`batch`]: define / start / destroy / undefine / list over many VMs, with a
//!   concurrency limit, boot queueing and a per-VM result table (`sftsan vm`).
//! - [`resume`]: resuming the VMs an I/O error paused (their disks stop the VM on errors).
//! - [`cluster`]: the core engine as batches and the hook use it (waits for the state lock).
//! - [`remote`]: a remote cluster's hosts: their libvirt over qemu+ssh (host keys checked
//!   as sftsan checks them), their snapshots through their own sftsan and hook.
//! - [`hook`]: libvirt's QEMU hook (`sftsan-hook`): just-in-time stacks and snapshots.
pub use sftsan_core as core;

#[cfg(feature = "libvirt")]
pub mod batch;
pub mod cluster;
pub mod hook;
pub mod identity;
#[cfg(feature = "libvirt")]
pub mod libvirt;
#[cfg(feature = "libvirt")]
pub mod remote;
#[cfg(feature = "libvirt")]
pub mod resume;
pub mod vms;
pub mod xml;
