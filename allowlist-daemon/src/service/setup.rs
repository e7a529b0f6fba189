//! From the configuration to the model: limits, rule capacities, the always-allow prefixes,
//! the state loaded and checked, and new ids.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use allowlist_common::RuleId;
use time::OffsetDateTime;

use crate::config::Config;
use crate::model::{EntryId, Model, NewIds, Settings};
use crate::store::{Store, StoreError};

/// Rule ids available to allowlist entries: room for a full replacement of every entry (old
/// and new side by side while it is applied).
pub(super) fn entry_rule_capacity(config: &Config) -> RuleId {
    RuleId::try_from(config.max_entries.saturating_mul(2)).unwrap_or(RuleId::MAX / 2)
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
        rule_capacity: entry_rule_capacity(config)
            .saturating_add(RuleId::try_from(config.always_allow.len()).unwrap_or(0)),
        max_entry_ttl: config.max_entry_ttl,
    }
}

/// Gives `model` what comes from `config` rather than from the state: the always-allow
/// prefixes (with the first rule ids: the entries' come after, so that the ids in use, and
/// the kernel's hit array, stay as small as the policy) and the default scopes.
pub(super) fn configure(model: &mut Model, config: &Config) {
    model.set_default_scopes(config.protect.iter().copied().collect());
    model.set_always_allow(
        config
            .always_allow
            .iter()
            .zip(0..)
            .map(|(net, rule)| (*net, rule))
            .collect(),
    );
}

/// Reads the state in `store` and checks it against every invariant, with `config`'s limits
/// and always-allow prefixes; `None` when there is no state yet. A state that breaks one is
/// refused with the file, the problem and what to do; nothing touches the kernel before.
pub fn load_state(config: &Config, store: &mut Store) -> Result<Option<Model>, StoreError> {
    let started = std::time::Instant::now();
    let Some(mut model) = store.load()? else {
        return Ok(None);
    };
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "state read");
    configure(&mut model, config);
    model
        .validate(&settings(config))
        .map_err(|problem| store.invalid(problem))?;
    Ok(Some(model))
}

/// New ids: a process-wide counter started at random and mixed (splitmix64's finalizer, a
/// bijection), so ids are unique within a run and collide across runs with a chance of one
/// in 2^64 per pair, without a system call per id.
pub(super) struct RandomIds;

impl RandomIds {
    fn next() -> u64 {
        static STATE: OnceLock<AtomicU64> = OnceLock::new();
        let state = STATE.get_or_init(|| {
            let mut seed = [0u8; 8];
            if getrandom::fill(&mut seed).is_err() {
                let nanos = OffsetDateTime::now_utc().unix_timestamp_nanos() as u64;
                seed = nanos.to_le_bytes();
            }
            AtomicU64::new(u64::from_le_bytes(seed))
        });
        let mut z = state.fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

impl NewIds for RandomIds {
    fn list_id(&mut self) -> String {
        format!("al_{:016x}", RandomIds::next())
    }

    fn entry_id(&mut self) -> EntryId {
        EntryId(RandomIds::next())
    }
}
