//! The messages Ferry's reference services exchange, one module per system: types and serde
//! only, no I/O. A message's field names, type name and topic are its wire contract: they keep
//! the names of the system each service replaces, so that system's consumers could read them.
//!
//! **Architecture invariant:** services depend on this crate, never on each other.

pub mod billing;
pub mod courses;
pub mod orders;
pub mod users;
