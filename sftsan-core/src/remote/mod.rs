//! A remote cluster (`cluster.mode = "remote"`): every node is a machine of its own, which
//! the controller reaches with the system's OpenSSH client and which runs its part with its
//! own sftsan. This module holds both sides: the controller's sessions to the hosts
//! ([`Fleet`]), and what a host answers ([`facts`]).

mod apply;
mod check;
pub mod facts;
mod fleet;
pub mod host;
pub mod link_keys;
mod ship;

pub use apply::{measured_image, HostOutcome, OnHost, Remote};
pub use check::{check, remote_program, trust, HostCheck};
pub use fleet::Fleet;
