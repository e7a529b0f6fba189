//! The effective policy of a model, built again only when what it comes from changed: at a
//! million entries building it costs tens of milliseconds, and most changes (an
//! acknowledgement, an edit of a list that is not enabled) leave it as it was.

use std::sync::Arc;

use allowlist_common::RuleId;
use ipnet::IpNet;

use crate::model::{Entry, Model};
use crate::policy::Policy;

/// The last policy built, with what it was built from.
#[derive(Default)]
pub(super) struct PolicyCache {
    built: Option<Built>,
}

/// A policy and its sources. The entries are held, not only compared: while they are held
/// no copy of the model can change them in place (`Arc::make_mut` copies shared entries),
/// so the same allocation means the same entries.
struct Built {
    entries: Vec<Arc<Vec<Entry>>>,
    always_allow: Vec<(IpNet, RuleId)>,
    policy: Policy,
}

impl PolicyCache {
    /// [`Model::effective_policy`] of `model`, reused when its enabled lists hold the very
    /// entries of the last call and the always-allow prefixes are the same.
    pub(super) fn policy(&mut self, model: &Model) -> Policy {
        let entries: Vec<Arc<Vec<Entry>>> = model.enabled_entries().cloned().collect();
        if let Some(built) = &self.built
            && built.entries.len() == entries.len()
            && built
                .entries
                .iter()
                .zip(&entries)
                .all(|(held, now)| Arc::ptr_eq(held, now))
            && built.always_allow == model.always_allow()
        {
            return built.policy.clone();
        }
        let policy = model.effective_policy();
        self.built = Some(Built {
            entries,
            always_allow: model.always_allow().to_vec(),
            policy: policy.clone(),
        });
        policy
    }

    /// Forgets the last policy, and the entries it held.
    pub(super) fn clear(&mut self) {
        self.built = None;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use time::OffsetDateTime;

    use super::*;
    use crate::model::{EntryId, Settings};

    fn model() -> Model {
        let entry = |id: u64, cidr: &str, rule: u32| json!({"id": format!("en_{id:016x}"), "cidr": cidr, "rule": rule});
        serde_json::from_value(json!({
            "format": 3,
            "allowlists": {"al1": {
                "id": "al1", "name": "office", "description": "",
                "entries": [entry(1, "192.0.2.1/32", 0), entry(2, "192.0.2.2/32", 1)],
                "created_at": "2026-01-01T00:00:00Z", "updated_at": "2026-01-01T00:00:00Z",
                "version": 1,
            }},
            "enabled": ["al1"],
            "pending": null,
        }))
        .expect("model")
    }

    #[test]
    fn a_change_to_an_enabled_list_builds_the_policy_again() {
        let mut cache = PolicyCache::default();
        let before = model();
        assert_eq!(cache.policy(&before), before.effective_policy());
        assert_eq!(cache.policy(&before.clone()), before.effective_policy());

        let mut after = before.clone();
        let settings = Settings {
            max_lists: 4,
            max_entries: 8,
            max_name_len: 16,
            max_description_len: 16,
            ack_min: Duration::from_secs(1),
            ack_max: Duration::from_secs(2),
            rule_capacity: 16,
            max_entry_ttl: std::time::Duration::from_secs(7 * 24 * 3600),
        };
        after
            .remove_entry(
                "al1",
                EntryId(2),
                None,
                OffsetDateTime::now_utc(),
                &settings,
            )
            .expect("remove");
        let policy = cache.policy(&after);
        assert_eq!(policy, after.effective_policy());
        assert_eq!(policy.len(), 1, "the removed prefix is gone");
        assert_eq!(cache.policy(&before), before.effective_policy(), "and back");
    }
}
