//! The state loaded and checked against the service's settings, and new ids.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

use time::OffsetDateTime;

use super::ServiceSettings;
use crate::model::{EntryId, Model, NewIds};
use crate::store::{Store, StoreError};

/// Reads the state in `store` and checks it against every invariant, with `settings`' limits
/// and always-allow prefixes; `None` when there is no state yet. A state that breaks one is
/// refused with the file, the problem and what to do; nothing touches the kernel before.
pub fn load_state(
    settings: &ServiceSettings,
    store: &mut Store,
) -> Result<Option<Model>, StoreError> {
    let started = std::time::Instant::now();
    let Some(mut model) = store.load()? else {
        return Ok(None);
    };
    tracing::debug!(ms = started.elapsed().as_millis() as u64, "state read");
    settings.configure(&mut model);
    model
        .validate(&settings.model)
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
