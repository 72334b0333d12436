//! Data paths behind the resource traits: each family makes its own kind of resources and
//! imports only `shared`, `resources`, `transport` and `process`, never another family.
pub mod kernel;
pub mod shared;
pub mod sim;
pub mod system;
pub mod tgt;
pub mod userspace;
