//! sftsan-core: on-demand, cache-on-read, relayed VM base images over a tree of nodes.
//!
//! Data flows one way: [`spec`] (what the operator wrote) -> [`plan`] (the tree and one
//! resource stack per node) -> [`engine`] (applies stacks in order, journals, rolls back)
//! -> [`resources`] (typed create / teardown / observe) -> [`backends`] -> [`transport`].

pub mod backends;
pub mod cluster;
pub mod engine;
pub mod error;
pub mod fsutil;
pub mod hash;
pub mod local;
pub mod membership;
pub mod names;
pub mod plan;
pub mod process;
pub mod remote;
pub mod resources;
pub mod spec;
pub mod status;
pub mod stdio;
pub mod topology;
pub mod transport;
pub mod verify;
