//! What the model takes from the daemon's configuration: its limits and the
//! acknowledgement window.

use std::time::Duration;

use allowlist_common::RuleId;

/// Limits and windows that come from the daemon's configuration, not from the state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most allowlists.
    pub max_lists: usize,
    /// Most entries over all allowlists.
    pub max_entries: usize,
    /// Longest name, in characters.
    pub max_name_len: usize,
    /// Longest description, in characters.
    pub max_description_len: usize,
    /// Earliest acknowledgement after a change.
    pub ack_min: Duration,
    /// Latest acknowledgement after a change; the revert time.
    pub ack_max: Duration,
    /// Rule ids available to entries: `0..rule_capacity`.
    pub rule_capacity: RuleId,
    /// Longest time an entry may be given to live (`ttl`, `expires_at`).
    pub max_entry_ttl: Duration,
}

#[cfg(test)]
impl Settings {
    /// Small limits for unit tests: 4 lists, 8 entries, 16 rule ids, names of 16 characters,
    /// acknowledgement from 60 s to 120 s, entries living up to 7 days.
    pub(crate) fn small() -> Settings {
        Settings {
            max_lists: 4,
            max_entries: 8,
            max_name_len: 16,
            max_description_len: 20,
            ack_min: Duration::from_secs(60),
            ack_max: Duration::from_secs(120),
            rule_capacity: 16,
            max_entry_ttl: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
