//! The service's settings, from the resolved configuration.

use allowlist_common::RuleId;

use super::Config;
use crate::model::Settings;
use crate::service::ServiceSettings;

impl Config {
    /// What the service takes from this configuration.
    pub fn service(&self) -> ServiceSettings {
        // Rule ids for a full replacement of every entry (old and new side by side while it
        // is applied), after those of the always-allow prefixes.
        let entries =
            RuleId::try_from(self.max_entries.saturating_mul(2)).unwrap_or(RuleId::MAX / 2);
        ServiceSettings {
            model: Settings {
                max_lists: self.max_lists,
                max_entries: self.max_entries,
                max_name_len: self.max_name_len,
                max_description_len: self.max_description_len,
                ack_min: self.ack_min,
                ack_max: self.ack_max,
                rule_capacity: entries
                    .saturating_add(RuleId::try_from(self.always_allow.len()).unwrap_or(0)),
                max_entry_ttl: self.max_entry_ttl,
            },
            always_allow: self.always_allow.clone(),
            default_scopes: self.protect.clone(),
            protect_ports: self.protect_ports.clone(),
            mode: self.mode,
            state_dir: self.state_dir.clone(),
            audit_max_bytes: self.audit_max_bytes,
            replies: self.replies,
            reply_openers: self.reply_openers.clone(),
            unprotected_protocols: self.unprotected_protocols.clone(),
            top_sample: self.top_sample,
        }
    }
}
