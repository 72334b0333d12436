//! What several backend families use: device-mapper lookups and CHAP credentials. The
//! families (userspace, kernel, tgt, sim) import this module, never each other.

mod chap;
pub mod dm;
pub mod wait;

pub use chap::Chap;
