//! What the service takes from the daemon's configuration: its own settings, so that the
//! service knows nothing of flags, files or defaults.

use std::collections::BTreeSet;
use std::path::PathBuf;

use allowlist_common::Mode;
use ipnet::IpNet;

use crate::dataplane::{Replies, ReplyOpeners};
use crate::model::{Model, Settings};
use crate::policy::PortScope;

/// The service's settings.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// The model's limits, acknowledgement window and rule capacity.
    pub model: Settings,
    /// Prefixes always allowed while enforcing.
    pub always_allow: Vec<IpNet>,
    /// Ports guarded until scopes are set through the API; empty: all.
    pub default_scopes: Vec<PortScope>,
    /// Ports whose established sessions the lockout guard protects.
    pub protect_ports: Vec<u16>,
    /// What enforcing does with other sources.
    pub mode: Mode,
    /// Where the audit trail is kept.
    pub state_dir: PathBuf,
    /// Size at which the audit trail is rotated.
    pub audit_max_bytes: u64,
    /// Replies to the host's own flows.
    pub replies: Replies,
    /// Which of the host's own packets open flows for replies.
    pub reply_openers: ReplyOpeners,
    /// IP protocols that pass unchecked while scopes are set.
    pub unprotected_protocols: BTreeSet<u8>,
    /// One refused packet in this many is noted for `top`; 0: none.
    pub top_sample: u32,
}

impl ServiceSettings {
    /// Gives `model` what comes from the settings rather than from the state: the
    /// always-allow prefixes (with the first rule ids: the entries' come after, so that the
    /// ids in use, and the kernel's hit array, stay as small as the policy) and the default
    /// scopes.
    pub(super) fn configure(&self, model: &mut Model) {
        model.set_default_scopes(self.default_scopes.iter().copied().collect());
        model.set_always_allow(
            self.always_allow
                .iter()
                .zip(0..)
                .map(|(net, rule)| (*net, rule))
                .collect(),
        );
    }
}
