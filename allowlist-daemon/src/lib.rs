//! The allowlist control plane.
//!
//! - [`policy`]: the pure policy model (prefixes, rules, diffs).
//! - [`model`]: the pure admin model (allowlists, enable/acknowledge/revert, lockout guard).
//! - [`store`]: the model on disk, written atomically.
//! - [`dataplane`]: the driver of the XDP program, the only module that touches the kernel.
//! - [`host`]: established sessions, for the lockout guard.
//! - [`auth`]: the admin token.
//! - [`metrics`]: the Prometheus text of `GET /metrics`.
pub mod api;
pub mod auth;
pub mod config;
pub mod dataplane;
pub mod host;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod service;
pub mod store;
