//! From the configuration to the model: limits, rule capacities, the always-allow prefixes,
//! the state loaded and checked, and new ids.

use std::sync::atomic::{AtomicU64, Ordering};

use allowlist_common::RuleId;
use time::OffsetDateTime;

use crate::config::Config;
use crate::model::{Model, Settings};
use crate::store::{Store, StoreError};

/// Rule ids available to allowlist entries: room for a full replacement of every entry (old
/// and new side by side while it is applied).
pub(super) fn entry_rule_capacity(config: &Config) -> RuleId {
    RuleId::try_from(config.max_entries.saturating_mul(2)).unwrap_or(RuleId::MAX / 2)
}

/// The number of rules the kernel maps need for `config`: entries, then always-allow.
pub fn kernel_rule_capacity(config: &Config) -> u32 {
    entry_rule_capacity(config).saturating_add(config.always_allow.len() as u32)
}

/// The model's limits and windows under `config`.
pub fn settings(config: &Config) -> Settings {
    Settings {
        max_lists: config.max_lists,
        max_entries: config.max_entries,
        max_name_len: config.max_name_len,
        max_description_len: config.max_description_len,
        ack_min: config.ack_min,
        ack_max: config.ack_max,
        rule_capacity: entry_rule_capacity(config),
    }
}

/// Gives `model` what comes from `config` rather than from the state: the always-allow
/// prefixes (with their rule ids, after the entries') and the default scopes.
pub(super) fn configure(model: &mut Model, config: &Config) {
    model.set_default_scopes(config.protect.iter().copied().collect());
    model.set_always_allow(
        config
            .always_allow
            .iter()
            .zip(entry_rule_capacity(config)..)
            .map(|(net, rule)| (*net, rule))
            .collect(),
    );
}

/// Reads the state in `store` and checks it against every invariant, with `config`'s limits
/// and always-allow prefixes; `None` when there is no state yet. A state that breaks one is
/// refused with the file, the problem and what to do; nothing touches the kernel before.
pub fn load_state(config: &Config, store: &Store) -> Result<Option<Model>, StoreError> {
    let Some(mut model) = store.load()? else {
        return Ok(None);
    };
    configure(&mut model, config);
    model
        .validate(&settings(config))
        .map_err(|problem| store.invalid(problem))?;
    Ok(Some(model))
}

/// A fresh random id such as `al_1f0c93a4d2b7e650`.
pub(super) fn new_id(prefix: &'static str) -> String {
    static FALLBACK: AtomicU64 = AtomicU64::new(0);
    let mut bytes = [0u8; 8];
    let value = match getrandom::fill(&mut bytes) {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
            nanos ^ FALLBACK.fetch_add(1, Ordering::Relaxed).rotate_left(32)
        }
    };
    format!("{prefix}_{value:016x}")
}
