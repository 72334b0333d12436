//! Data paths behind the resource traits.
pub mod kernel;
pub mod userspace;
