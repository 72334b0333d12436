//! The kernel data path (device-mapper, loop, LIO/tgt, open-iscsi). Its first piece is
//! the probe: before anything is touched, say exactly what the running kernel lacks.

pub mod probe;
