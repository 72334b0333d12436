//! The small part of the NBD protocol sftsan needs in its own processes: a client that
//! reads a parent's export with deadlines (the upstream switch, the keeper's flush) and a
//! read-only server on a unix socket (the switch's face to the node's daemon).

pub(crate) mod client;
pub(crate) mod proto;
pub mod server;

pub use client::{Address, Connection, Failure};
pub(crate) use proto::errno;
pub use server::{serve, Source};
