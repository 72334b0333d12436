//! Data paths behind the resource traits.
pub mod userspace;
