//! The service's settings, from the resolved configuration.

use allowlist_common::RuleId;

use super::Config;
use crate::model::Settings;
use crate::service::ServiceSettings;

impl Config {
    /// What the service takes from this configuration.
    pub fn service(&self) -> ServiceSettings {
        let options = &self.options;
        // Rule ids for a full replacement of every entry (old and new side by side while it
        // is applied), after those of the always-allow prefixes.
        let entries =
            RuleId::try_from(options.max_entries.saturating_mul(2)).unwrap_or(RuleId::MAX / 2);
        ServiceSettings {
            model: Settings {
                max_lists: options.max_lists,
                max_entries: options.max_entries,
                max_name_len: options.max_name_len,
                max_description_len: options.max_description_len,
                ack_min: options.ack_min,
                ack_max: options.ack_max,
                rule_capacity: entries
                    .saturating_add(RuleId::try_from(self.always_allow.len()).unwrap_or(0)),
                max_entry_ttl: options.max_entry_ttl,
            },
            always_allow: self.always_allow.clone(),
            default_scopes: options.protect.clone(),
            protect_ports: options.protect_port.clone(),
            mode: options.mode.into(),
            state_dir: options.state_dir.clone(),
            audit_max_bytes: options.audit_max_bytes,
            replies: self.replies,
            reply_openers: self.reply_openers.clone(),
            unprotected_protocols: self.unprotected_protocols.clone(),
            top_sample: options.top_sample,
        }
    }
}
