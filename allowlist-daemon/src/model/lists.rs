//! Creating, editing and deleting allowlists. Every edit of an existing list goes through
//! [`Model::put_list`], which decides whether it is a pending change.

use time::OffsetDateTime;

use std::sync::Arc;

use super::allowlist::{Allowlist, Entry, EntryId};
use super::error::ModelError;
use super::ids::IdSource;
use super::input::{AllowlistInput, EntriesInput, allocate_entries, parse_entries};
use super::pending::Action;
use super::rules::RuleAllocator;
use super::settings::Settings;
use super::source::parse_source;
use super::state::Model;
use super::validate::{check_description, check_name};

impl Model {
    /// Creates an allowlist (not enabled).
    pub fn create(
        &mut self,
        input: AllowlistInput,
        now: OffsetDateTime,
        settings: &Settings,
        ids: IdSource,
    ) -> Result<&Allowlist, ModelError> {
        if self.allowlists.len().max(self.lists_reverted()) >= settings.max_lists {
            return Err(ModelError::LimitExceeded {
                what: "too many allowlists".into(),
                limit: settings.max_lists,
                field: None,
            });
        }
        let (name, description) = self.check_header(&input, None, settings)?;
        let source = input.source.as_ref().map(parse_source).transpose()?;
        let entries = input.entries.unwrap_or_default();
        let parsed = parse_entries(entries, "entries", &[], input.allow_all, now, settings)?;
        self.check_totals(parsed.len(), 0, false, settings)?;
        let mut allocator = RuleAllocator::new(self.rules_in_use(), settings.rule_capacity);
        let entries = allocate_entries(parsed, &[], &mut allocator, ids)?;
        let id = ids.list_id();
        let mut list = Allowlist {
            id: id.clone(),
            name,
            description,
            entries: Arc::new(entries),
            allow_all: input.allow_all,
            fleet: None,
            source,
            feed_baseline: 0,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        list.set_by_person();
        Ok(self.allowlists.entry(id).or_insert(list))
    }

    /// Replaces an allowlist's name, description and entries. Entries whose prefix stays keep
    /// their id and rule. Removing prefixes from an enabled list becomes the pending change.
    pub fn replace(
        &mut self,
        id: &str,
        input: AllowlistInput,
        if_match: Option<u64>,
        now: OffsetDateTime,
        settings: &Settings,
        ids: IdSource,
    ) -> Result<&Allowlist, ModelError> {
        let current = self.allowlist(id)?;
        check_version(current, if_match)?;
        self.window.check_not_frozen(id)?;
        let (name, description) = self.check_header(&input, Some(id), settings)?;
        let source = input
            .source
            .as_ref()
            .map(parse_source)
            .transpose()?
            .map(|source| source.keeping_credentials(current.source.as_ref()));
        let entries = input.entries.unwrap_or_default();
        let parsed = parse_entries(entries, "entries", &[], input.allow_all, now, settings)?;
        let mut allocator = RuleAllocator::new(self.rules_in_use(), settings.rule_capacity);
        let entries = allocate_entries(parsed, &current.entries, &mut allocator, ids)?;
        let next = Allowlist {
            id: current.id.clone(),
            name,
            description,
            entries: Arc::new(entries),
            allow_all: input.allow_all,
            fleet: current.fleet.clone(),
            source,
            feed_baseline: current.feed_baseline,
            created_at: current.created_at,
            updated_at: now,
            version: current.version,
        };
        self.put_list(next, now, settings)?;
        self.allowlist(id)
    }

    /// Deletes an allowlist that is not enabled and that no pending change concerns.
    pub fn delete(&mut self, id: &str, if_match: Option<u64>) -> Result<Allowlist, ModelError> {
        let list = self.allowlist(id)?;
        check_version(list, if_match)?;
        self.fleet.check_local_edit(list)?;
        if self.is_enabled(id) {
            return Err(ModelError::AllowlistEnabled { id: id.to_owned() });
        }
        self.window.check_not_frozen(id)?;
        let deleted = self
            .allowlists
            .remove(id)
            .ok_or_else(|| super::state::not_found(id))?;
        self.fleet.note_drift(&deleted);
        Ok(deleted)
    }

    /// Adds entries to an allowlist; on an enabled list they apply at once (adding narrows
    /// nothing).
    pub fn add_entries(
        &mut self,
        id: &str,
        input: EntriesInput,
        now: OffsetDateTime,
        settings: &Settings,
        ids: IdSource,
    ) -> Result<Vec<Entry>, ModelError> {
        let current = self.allowlist(id)?;
        if input.entries.is_empty() {
            return Err(ModelError::InvalidRequest {
                message: "entries is empty".into(),
                field: Some("entries".into()),
            });
        }
        self.window.check_not_frozen(id)?;
        let allow_all = input.allow_all || current.allow_all;
        let parsed = parse_entries(
            input.entries,
            "entries",
            &current.entries,
            allow_all,
            now,
            settings,
        )?;
        let mut allocator = RuleAllocator::new(self.rules_in_use(), settings.rule_capacity);
        let added = allocate_entries(parsed, &[], &mut allocator, ids)?;
        let mut next = current.clone();
        let mut merged = Vec::with_capacity(current.entries.len() + added.len());
        merged.extend(current.entries.iter().cloned());
        merged.extend(added.iter().cloned());
        merged.sort_by_key(|a| a.cidr);
        next.entries = Arc::new(merged);
        next.allow_all = allow_all;
        self.put_list(next, now, settings)?;
        Ok(added)
    }

    /// Removes one entry; on an enabled list this becomes the pending change.
    pub fn remove_entry(
        &mut self,
        id: &str,
        entry_id: EntryId,
        if_match: Option<u64>,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<Entry, ModelError> {
        let current = self.allowlist(id)?;
        check_version(current, if_match)?;
        let index = current
            .entries
            .iter()
            .position(|entry| entry.id == entry_id)
            .ok_or_else(|| ModelError::NotFound {
                what: "entry",
                id: entry_id.to_string(),
            })?;
        let mut next = current.clone();
        let removed = Arc::make_mut(&mut next.entries).remove(index);
        self.put_list(next, now, settings)?;
        Ok(removed)
    }

    /// Puts `list` in place of the list with its id, with the next version: the one path of
    /// every edit. An edit of a list a pending change concerns is refused. An edit of an
    /// enabled list that drops prefixes narrows what is enforced: it needs no other change
    /// pending, must leave something allowed, and becomes the pending change, whose revert
    /// restores the list exactly as it was. Limits hold now and after a revert.
    fn put_list(
        &mut self,
        mut list: Allowlist,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        let id = list.id.clone();
        self.window.check_not_frozen(&id)?;
        let current = self.allowlist(&id)?;
        self.fleet.check_local_edit(current)?;
        let narrowing = self.is_enabled(&id) && !current.is_covered_by(&list);
        if narrowing {
            self.window.check_closed()?;
            self.check_allows_something(&self.enabled, Some(&list))?;
        }
        self.check_totals(
            list.entries.len(),
            current.entries.len(),
            narrowing,
            settings,
        )?;
        list.version = current.version + 1;
        list.updated_at = now;
        list.set_by_person();
        if narrowing {
            let restore = self.restore_point(vec![current.clone()]);
            let ids = vec![id.clone()];
            self.window
                .open(Action::Update, ids, restore, None, now, settings)?;
        }
        self.fleet.note_drift(&list);
        self.allowlists.insert(id, list);
        Ok(())
    }

    /// Checks that putting `new_len` entries where `old_len` were (a new list: 0) keeps the
    /// entry limit now and once the pending change is reverted (a `narrowing` edit becomes
    /// the pending change: its revert gives back today's entries).
    pub(super) fn check_totals(
        &self,
        new_len: usize,
        old_len: usize,
        narrowing: bool,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        let now = self.total_entries();
        let after = now - old_len + new_len;
        let reverted = if narrowing {
            now
        } else {
            self.total_entries_reverted() - old_len + new_len
        };
        if after.max(reverted) > settings.max_entries {
            return Err(ModelError::LimitExceeded {
                what: format!(
                    "too many entries ({now} exist, {} after a revert of the pending change; this \
                     request makes them {after})",
                    self.total_entries_reverted()
                ),
                limit: settings.max_entries,
                field: Some("entries".into()),
            });
        }
        Ok(())
    }

    /// Checks a list's name and description; returns them trimmed as stored.
    fn check_header(
        &self,
        input: &AllowlistInput,
        own_id: Option<&str>,
        settings: &Settings,
    ) -> Result<(String, String), ModelError> {
        let name = input.name.trim().to_owned();
        check_name(&name, "name", settings)?;
        let description = input.description.clone().unwrap_or_default();
        check_description(&description, "description", settings)?;
        // The names of lists a revert would bring back stay reserved until then.
        if self
            .kept_lists()
            .any(|list| list.name == name && Some(list.id.as_str()) != own_id)
        {
            return Err(ModelError::DuplicateName { name });
        }
        Ok((name, description))
    }
}

fn check_version(list: &Allowlist, if_match: Option<u64>) -> Result<(), ModelError> {
    match if_match {
        Some(expected) if expected != list.version => Err(ModelError::VersionMismatch {
            expected,
            current: list.version,
        }),
        _ => Ok(()),
    }
}
