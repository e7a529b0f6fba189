//! The admin model: named allowlists of entries, which of them are enabled, and the pending
//! change that must be acknowledged or is reverted. Pure: the caller passes the time and new
//! ids in, persists the model and writes the resulting policy to the kernel.
//!
//! # Invariants
//!
//! Every operation keeps these, and [`Model::validate`] checks a loaded state against them.
//! "Enforced" means the effective policy (the always-allow prefixes and the entries of the
//! enabled lists), the enabled set and the scopes.
//!
//! 1. **No change escapes its acknowledgement.** An accepted operation either leaves what is
//!    enforced as it was, only widens it (entries added to an enabled list), or becomes the
//!    one pending change: enabling, disabling, changing scopes, and any edit that drops a
//!    prefix from an enabled list. While a change is pending, another such change is refused
//!    (409 `change_pending`), and so is any edit or deletion of a list whose state a revert
//!    restores (the list a narrowing update edited, the lists a disable turned off), whatever
//!    it would do.
//! 2. **A revert restores exactly what was acknowledged**: the enabled set, the scopes, and
//!    each list the change edited (name, description, entries with their ids and rules).
//!    Widenings accepted meanwhile on other enabled lists stay (they needed no
//!    acknowledgement), and so do edits of a list being enabled (a revert disables it).
//! 3. **Never empty while enforcing.** With some list enabled, the effective policy holds a
//!    prefix, now and in the state a revert would restore.
//! 4. **Limits hold** now and in the state a revert would restore: lists, entries, name and
//!    description lengths; every rule id is below the capacity and names one prefix.
//! 5. **Well-formed.** Names are unique (those of lists a revert would restore included),
//!    not empty, without surrounding spaces; ids are unique; prefixes have no host bits, are
//!    not IPv4-mapped, appear once per list, and allow every source (`/0`) only in a list
//!    that says `allow_all`; enable and disable name each list once.
//! 6. **The pending change is coherent**: it concerns existing lists, its times are ordered,
//!    and what it restores names existing lists.
//! 7. **The fleet's lists are the fleet's.** A list that came with a fleet release is edited,
//!    enabled, disabled or deleted only by the next release (or once the host is detached);
//!    a release is one pending change, acknowledged only for the fleet, and applies as a
//!    whole or not at all, like every [`Model::apply`].
//!
//! A list may follow a feed (its source): a refresh replaces its entries without an
//! acknowledgement, within bounds no series of reads gets past: never empty, at most half of
//! the entries a person last set taken out, and nothing the lockout guard keeps reachable
//! cut off ([`Model::refresh_from_source`]).
//!
//! Entries may expire: at their time they leave their list, and the lists a revert would
//! restore, without an acknowledgement (they were declared with the entry); the last entries
//! of a policy whose every prefix expires are held, in the kernel too ([`Model::expire`]).
//!
//! The service adds the eighth: the kernel enforces [`Model::effective_policy`] and, while
//! a change is pending, falls back by itself to that of [`Model::reverted`] at the deadline.

mod allowlist;
mod apply;
mod changes;
mod error;
mod evaluate;
mod expiry;
mod fleet;
mod ids;
mod input;
mod lists;
mod pending;
mod rules;
mod saved;
mod settings;
mod source;
mod state;
mod validate;
mod window;

pub use allowlist::{Allowlist, Entry, EntryId, Expiry, FleetOrigin, rfc3339};
pub use apply::{ApplyReport, DesiredList, ListChange, Scope};
pub use error::{InvalidState, ModelError};
pub use evaluate::{Evaluation, GuardedAddress, Match, Reason};
pub use expiry::Expired;
pub use fleet::FleetMemo;
#[cfg(any(test, feature = "test-util"))]
pub use ids::SequentialIds;
pub use ids::{IdSource, NewIds};
pub use input::{AllowlistInput, EntriesInput, EntryInput};
pub use pending::{Action, Pending, Restore};
pub use saved::{SavedFileNames, SavedState};
pub use settings::Settings;
pub use source::{ListSource, Refreshed, SourceInput};
pub use state::Model;

#[cfg(test)]
mod tests;
