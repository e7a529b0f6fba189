//! The allowlist control plane.
//!
//! - [`policy`]: the pure policy model (prefixes, rules, diffs).
//! - [`dataplane`]: the driver of the XDP program, the only module that touches the kernel.
pub mod dataplane;
pub mod model;
pub mod policy;
