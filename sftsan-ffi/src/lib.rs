//! sftsan-ffi: the C ABI over sftsan-core. (Filled by the FFI issue.)
pub use sftsan_core as core;
