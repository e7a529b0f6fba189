//! The allowlist control plane.
//!
//! - [`policy`]: the pure policy model (prefixes, rules, diffs).
//! - [`model`]: the pure admin model (allowlists, enable/acknowledge/revert, lockout guard).
//! - [`store`]: the model on disk, written atomically.
//! - [`dataplane`]: the driver of the XDP program, the only module that touches the kernel.
//! - [`host`]: established sessions, for the lockout guard.
//! - [`auth`]: the admin token.
//! - [`server`]: where and how the admin API is served (TCP, TLS, unix socket, limits).
//! - [`metrics`]: the Prometheus text of `GET /metrics`.
#![warn(missing_docs)]
#![allow(
    rustdoc::private_intra_doc_links,
    reason = "the documentation is for whoever works on the code: `cargo doc --document-private-items`"
)]

pub mod api;
pub mod auth;
pub mod config;
pub mod dataplane;
pub mod fleet;
pub mod host;
pub mod metrics;
pub mod model;
pub mod policy;
pub mod policy_file;
pub mod server;
pub mod service;
pub mod store;

/// An error and its causes on one line: `what: why: why`.
pub fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    text
}
