//! Fleets: one policy on many hosts, distributed through etcd.
//!
//! An operator publishes a policy file as a release ([`store::FleetStore::publish`],
//! compare-and-swap on the fleet's current release, chunked when large). Each host's
//! [`follower`] watches the fleet, applies a new release as one pending change with the
//! kernel's deadline, acknowledges it only once the operator acknowledged the release in the
//! store, and reports its status under a lease. Without that acknowledgement every host
//! reverts by itself, with or without etcd or the daemon.

pub mod acknowledgement;
pub mod config;
pub mod follower;
pub mod keys;
pub mod preview;
pub mod release;
pub mod rollout;
pub mod signature;
pub mod status;
pub mod store;
pub mod view;

pub use config::FleetConfig;
pub use release::Release;
pub use rollout::{Progress, Rollout};
pub use status::{FleetState, HostStatus};
pub use store::{EtcdOptions, FleetError, FleetStore};
pub use view::FleetView;
