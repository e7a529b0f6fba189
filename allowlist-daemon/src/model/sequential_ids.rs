//! Deterministic ids for tests: `al1`, `en_...02`, ..., counted on from a number.

use super::allowlist::EntryId;
use super::state::NewIds;

/// Ids in sequence, one counter for lists and entries; `.0` is the last one handed out.
#[derive(Debug, Clone, Copy, Default)]
pub struct SequentialIds(pub u64);

impl NewIds for SequentialIds {
    fn list_id(&mut self) -> String {
        self.0 += 1;
        format!("al{}", self.0)
    }

    fn entry_id(&mut self) -> EntryId {
        self.0 += 1;
        EntryId(self.0)
    }
}
