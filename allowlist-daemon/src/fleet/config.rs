//! Which fleet a host follows and how: the follower's settings, from `allowlistd`'s options.

use std::path::PathBuf;

use super::store::EtcdOptions;

/// Which fleet the host follows, and how to reach it.
#[derive(Debug, Clone)]
pub struct FleetConfig {
    /// How to reach etcd.
    pub etcd: EtcdOptions,
    /// The fleet.
    pub fleet: String,
    /// This host's name in the fleet.
    pub host: String,
    /// The operators' keys this host trusts, and how many must sign; `None`: releases need
    /// no signature.
    pub trust: Option<(PathBuf, usize)>,
    /// The largest release this host reads.
    pub max_release_bytes: usize,
}
