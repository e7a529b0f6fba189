//! Where new lists and entries take their ids from.

use super::allowlist::EntryId;

/// Makes ids never used before, for new lists and entries.
pub trait NewIds {
    /// A new list id (`al_...`).
    fn list_id(&mut self) -> String;
    /// A new entry id.
    fn entry_id(&mut self) -> EntryId;
}

/// Where a model operation takes its new ids from.
pub type IdSource<'a> = &'a mut dyn NewIds;

/// Ids in sequence for tests, one counter for lists and entries (`al1`, `en_...02`, ...,
/// counted on from a number); `.0` is the last one handed out.
#[cfg(any(test, feature = "test-util"))]
#[derive(Debug, Clone, Copy, Default)]
pub struct SequentialIds(pub u64);

#[cfg(any(test, feature = "test-util"))]
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
