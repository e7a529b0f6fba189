//! The operations of the API, each one transaction: the model's rules decide, the state is
//! saved, the kernel follows.

use std::collections::BTreeSet;

use super::lockout::{self, Operator};
use super::setup::RandomIds;
use super::{Service, ServiceError};
use crate::model::{
    Allowlist, AllowlistInput, ApplyReport, DesiredList, EntriesInput, Entry, EntryId,
    GuardedAddress, Pending, Scope,
};
use crate::policy::PortScope;

/// Why a preview ends when an operator enables a change.
const PREVIEW_ENDED: &str = "a change was enabled";

impl Service {
    /// Creates an allowlist.
    pub fn create(&mut self, input: AllowlistInput) -> Result<Allowlist, ServiceError> {
        self.transact(
            |list: &Allowlist| {
                format!(
                    "created allowlist {} ({:?}) with {} entries",
                    list.id,
                    list.name,
                    list.entries.len()
                )
            },
            |model, settings, now| model.create(input, now, settings, &mut RandomIds).cloned(),
        )
    }

    /// Replaces an allowlist.
    pub fn replace(
        &mut self,
        id: &str,
        input: AllowlistInput,
        if_match: Option<u64>,
    ) -> Result<Allowlist, ServiceError> {
        self.transact(
            |list: &Allowlist| {
                format!(
                    "replaced allowlist {} ({:?}): now {} entries, version {}",
                    list.id,
                    list.name,
                    list.entries.len(),
                    list.version
                )
            },
            |model, settings, now| {
                model
                    .replace(id, input, if_match, now, settings, &mut RandomIds)
                    .cloned()
            },
        )
    }

    /// Deletes an allowlist.
    pub fn delete(&mut self, id: &str, if_match: Option<u64>) -> Result<Allowlist, ServiceError> {
        self.transact(
            |list: &Allowlist| format!("deleted allowlist {} ({:?})", list.id, list.name),
            |model, _, _| model.delete(id, if_match),
        )
    }

    /// Adds entries to an allowlist.
    pub fn add_entries(
        &mut self,
        id: &str,
        input: EntriesInput,
    ) -> Result<Vec<Entry>, ServiceError> {
        self.transact(
            |added: &Vec<Entry>| format!("added {} entries to allowlist {id}", added.len()),
            |model, settings, now| model.add_entries(id, input, now, settings, &mut RandomIds),
        )
    }

    /// Removes one entry.
    pub fn remove_entry(
        &mut self,
        id: &str,
        entry_id: EntryId,
        if_match: Option<u64>,
    ) -> Result<Entry, ServiceError> {
        self.transact(
            |entry: &Entry| {
                format!(
                    "removed entry {} ({}) from allowlist {id}",
                    entry.id, entry.cidr
                )
            },
            |model, settings, now| model.remove_entry(id, entry_id, if_match, now, settings),
        )
    }

    /// Enables allowlists, guarding the operator's address and established sessions to
    /// protected ports; returns the addresses the lockout guard checked, or `None` when it
    /// did not apply (the host enforced already, or `force`).
    pub fn enable(
        &mut self,
        ids: &[String],
        operator: Operator,
        force: bool,
    ) -> Result<Option<Vec<GuardedAddress>>, ServiceError> {
        let applies = !self.model.enforcing() && !force;
        let guarded = self
            .guard
            .guarded(self.model.enforcing(), operator, force)?;
        let addresses = lockout::addresses(&guarded);
        self.transact(
            |_| format!("enabled {ids:?}{}", if force { " (forced)" } else { "" }),
            |model, settings, now| model.enable(ids, &addresses, force, now, settings),
        )?;
        self.end_preview(PREVIEW_ENDED)?;
        Ok(applies.then_some(guarded))
    }

    /// Converges the host's own lists to `desired` as one change (see
    /// [`crate::model::Model::apply`]);
    /// with `dry_run`, says what would change and changes nothing.
    pub fn apply(
        &mut self,
        desired: Vec<DesiredList>,
        prune: bool,
        dry_run: bool,
        operator: Operator,
        force: bool,
    ) -> Result<ApplyReport, ServiceError> {
        let guarded = self
            .guard
            .guarded(self.model.enforcing(), operator, force)?;
        let scope = Scope::Local { prune };
        if dry_run {
            let mut copy = self.model.clone();
            let now = time::OffsetDateTime::now_utc();
            let report = copy.apply(
                desired,
                scope,
                &guarded,
                force,
                now,
                &self.settings,
                &mut RandomIds,
            )?;
            return Ok(report);
        }
        let report = self.transact(
            |report: &ApplyReport| format!("applied a policy file: {}", describe(report)),
            |model, settings, now| {
                model.apply(
                    desired,
                    scope,
                    &guarded,
                    force,
                    now,
                    settings,
                    &mut RandomIds,
                )
            },
        )?;
        self.end_preview(PREVIEW_ENDED)?;
        Ok(report)
    }

    /// Disables allowlists.
    pub fn disable(&mut self, ids: &[String]) -> Result<(), ServiceError> {
        self.transact(
            |_| format!("disabled {ids:?}"),
            |model, settings, now| model.disable(ids, now, settings),
        )?;
        self.end_preview(PREVIEW_ENDED)
    }

    /// Changes the protected ports.
    pub fn set_scopes(&mut self, scopes: BTreeSet<PortScope>) -> Result<(), ServiceError> {
        let shown: Vec<String> = scopes.iter().map(ToString::to_string).collect();
        self.transact(
            |_| format!("set the protected ports to {shown:?}"),
            |model, settings, now| model.set_scopes(scopes, now, settings),
        )?;
        self.end_preview(PREVIEW_ENDED)
    }

    /// Acknowledges the pending change.
    pub fn acknowledge(&mut self) -> Result<Pending, ServiceError> {
        self.transact_as(
            super::audit::Outcome::Acknowledged,
            |pending: &Pending| {
                format!(
                    "acknowledged the {:?} of {:?}",
                    pending.action, pending.allowlist_ids
                )
            },
            |model, settings, now| model.acknowledge(now, settings),
        )
    }
}

/// An apply report on one line, for audit lines.
pub(super) fn describe(report: &ApplyReport) -> String {
    if report.is_empty() {
        return "no change".into();
    }
    let mut parts = Vec::new();
    let mut named = |what: &str, names: &[String]| {
        if !names.is_empty() {
            parts.push(format!("{what} {}", names.join(", ")));
        }
    };
    named("created", &report.created);
    named("deleted", &report.deleted);
    named("enabled", &report.enabled);
    named("disabled", &report.disabled);
    for change in &report.updated {
        parts.push(format!(
            "updated {} (+{} -{})",
            change.name, change.added, change.removed
        ));
    }
    parts.join("; ")
}
