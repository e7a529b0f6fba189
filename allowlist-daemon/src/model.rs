//! The admin model: named allowlists of entries, which of them are enabled, and the pending
//! change that must be acknowledged or is reverted. Pure: the caller passes the time and new
//! ids in, persists the model and writes the resulting policy to the kernel.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use allowlist_common::RuleId;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::policy::{CidrError, Policy, PortScope, parse_cidr};

/// One allowed prefix in an allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Generated id, unique across lists.
    pub id: String,
    /// The prefix (host bits clear).
    pub cidr: IpNet,
    /// Free text.
    pub description: String,
    /// Index of the entry's hit counter in the kernel.
    pub rule: RuleId,
}

/// A named allowlist.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allowlist {
    /// Generated id.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// The entries, in the order they were added.
    pub entries: Vec<Entry>,
    /// When the list was created.
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    /// When the list last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// Bumped on every change; the HTTP ETag.
    pub version: u64,
}

/// What a pending change did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Enabled allowlists.
    Enable,
    /// Disabled allowlists.
    Disable,
    /// Removed entries from an enabled allowlist.
    Update,
    /// Changed the protected ports.
    Scopes,
}

/// What reverting a pending change restores.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Restore {
    /// The set of enabled allowlists before the change.
    Enabled(BTreeSet<String>),
    /// Entries removed from an enabled allowlist, to put back.
    Entries {
        /// The allowlist.
        allowlist_id: String,
        /// The removed entries (their ids and rules stay reserved until the change resolves).
        entries: Vec<Entry>,
    },
    /// The scopes before the change (`None`: the daemon's `--protect` default).
    Scopes(Option<BTreeSet<PortScope>>),
}

/// A change applied to the kernel that must be acknowledged within its window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// What the change did.
    pub action: Action,
    /// The allowlists it concerned.
    pub allowlist_ids: Vec<String>,
    /// When it was applied.
    #[serde(with = "time::serde::rfc3339")]
    pub applied_at: OffsetDateTime,
    /// Acknowledgements before this are too early.
    #[serde(with = "time::serde::rfc3339")]
    pub acknowledge_after: OffsetDateTime,
    /// Without acknowledgement, the change is reverted at this time.
    #[serde(with = "time::serde::rfc3339")]
    pub revert_at: OffsetDateTime,
    /// What a revert restores.
    pub restore: Restore,
}

/// Limits and windows that come from the daemon's configuration, not from the state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Most allowlists.
    pub max_lists: usize,
    /// Most entries over all allowlists.
    pub max_entries: usize,
    /// Longest name, in characters.
    pub max_name_len: usize,
    /// Longest description, in characters.
    pub max_description_len: usize,
    /// Earliest acknowledgement after a change.
    pub ack_min: Duration,
    /// Latest acknowledgement after a change; the revert time.
    pub ack_max: Duration,
    /// Rule ids available to entries: `0..rule_capacity`.
    pub rule_capacity: RuleId,
}

/// Why a request is refused. Each variant has a stable `code` for API clients.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModelError {
    /// The request is malformed in a way the types did not catch.
    #[error("{message}")]
    InvalidRequest {
        /// What is wrong.
        message: String,
        /// Where.
        field: Option<String>,
    },
    /// A CIDR that does not parse.
    #[error("{field}: {source}")]
    InvalidCidr {
        /// Where.
        field: String,
        /// What is wrong.
        source: CidrError,
    },
    /// A CIDR with host bits set.
    #[error("{field}: {source}")]
    HostBitsSet {
        /// Where.
        field: String,
        /// What is wrong, with the network meant.
        source: CidrError,
    },
    /// No allowlist or entry with that id.
    #[error("no {what} with id {id:?}")]
    NotFound {
        /// "allowlist" or "entry".
        what: &'static str,
        /// The id asked for.
        id: String,
    },
    /// Another allowlist has this name.
    #[error("an allowlist named {name:?} exists already")]
    DuplicateName {
        /// The name.
        name: String,
    },
    /// The same prefix twice in one allowlist.
    #[error("{field}: {cidr} is already in the allowlist")]
    DuplicateEntry {
        /// Where.
        field: String,
        /// The prefix.
        cidr: IpNet,
    },
    /// A configured limit would be exceeded.
    #[error("{what}: the limit is {limit}")]
    LimitExceeded {
        /// What is limited.
        what: String,
        /// The limit.
        limit: usize,
        /// Where.
        field: Option<String>,
    },
    /// The allowlist changed since the version the client read (If-Match).
    #[error("the allowlist is at version {current}, not {expected}: read it again")]
    VersionMismatch {
        /// The version the client sent.
        expected: u64,
        /// The current version.
        current: u64,
    },
    /// A change is waiting for acknowledgement.
    #[error("a {action:?} change is pending until acknowledged or reverted at {revert_at}")]
    ChangePending {
        /// The pending change's action.
        action: Action,
        /// When it reverts.
        revert_at: String,
    },
    /// Nothing to acknowledge.
    #[error("no change is pending")]
    NothingPending,
    /// Acknowledged before the window opened.
    #[error(
        "too early: acknowledge in {retry_after_seconds} s (the window opens {ack_min_seconds} s after the change)"
    )]
    TooEarly {
        /// Seconds until acknowledgement is accepted.
        retry_after_seconds: u64,
        /// The configured minimum.
        ack_min_seconds: u64,
    },
    /// The allowlist is enabled and cannot be deleted.
    #[error("allowlist {id:?} is enabled: disable it first")]
    AllowlistEnabled {
        /// The allowlist.
        id: String,
    },
    /// Enabling lists that are enabled already.
    #[error("already enabled: {}", ids.join(", "))]
    AlreadyEnabled {
        /// The lists.
        ids: Vec<String>,
    },
    /// Disabling lists that are not enabled.
    #[error("not enabled: {}", ids.join(", "))]
    NotEnabled {
        /// The lists.
        ids: Vec<String>,
    },
    /// The change would leave an enforced policy that allows nothing.
    #[error("the resulting policy allows no address: it would drop every IP packet")]
    EmptyPolicy,
    /// Enabling would drop these addresses (the caller, or established sessions).
    #[error("enabling would cut off {}: add them or pass force", addresses.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    WouldLockOut {
        /// Addresses the new policy would drop.
        addresses: Vec<IpAddr>,
    },
}

impl ModelError {
    /// The stable error code of the API.
    pub fn code(&self) -> &'static str {
        match self {
            ModelError::InvalidRequest { .. } => "invalid_request",
            ModelError::InvalidCidr { .. } => "invalid_cidr",
            ModelError::HostBitsSet { .. } => "host_bits_set",
            ModelError::NotFound { .. } => "not_found",
            ModelError::DuplicateName { .. } => "duplicate_name",
            ModelError::DuplicateEntry { .. } => "duplicate_entry",
            ModelError::LimitExceeded { .. } => "limit_exceeded",
            ModelError::VersionMismatch { .. } => "precondition_failed",
            ModelError::ChangePending { .. } => "change_pending",
            ModelError::NothingPending => "nothing_pending",
            ModelError::TooEarly { .. } => "too_early",
            ModelError::AllowlistEnabled { .. } => "allowlist_enabled",
            ModelError::AlreadyEnabled { .. } => "already_enabled",
            ModelError::NotEnabled { .. } => "not_enabled",
            ModelError::EmptyPolicy => "empty_policy",
            ModelError::WouldLockOut { .. } => "would_lock_out",
        }
    }

    /// The request field the error is about, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            ModelError::InvalidRequest { field, .. } | ModelError::LimitExceeded { field, .. } => {
                field.as_deref()
            }
            ModelError::InvalidCidr { field, .. }
            | ModelError::HostBitsSet { field, .. }
            | ModelError::DuplicateEntry { field, .. } => Some(field),
            _ => None,
        }
    }
}

/// An entry as a client sends it.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EntryInput {
    /// A CIDR or a plain address.
    pub cidr: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
}

/// An allowlist as a client sends it (create and replace).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AllowlistInput {
    /// Unique name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// The entries.
    #[serde(default)]
    pub entries: Option<Vec<EntryInput>>,
}

/// Why an address would pass or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// No allowlist is enabled: everything passes.
    NotEnforcing,
    /// The always-allow list covers it.
    AlwaysAllow,
    /// An enabled allowlist covers it.
    Allowlist,
    /// Nothing covers it: dropped.
    NoMatch,
}

/// An entry of an enabled allowlist that covers an address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Match {
    /// The allowlist.
    pub allowlist_id: String,
    /// The entry.
    pub entry_id: String,
    /// The entry's prefix.
    pub cidr: IpNet,
}

/// Whether an address passes now, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Evaluation {
    /// Whether its packets pass.
    pub allowed: bool,
    /// Why.
    pub reason: Reason,
    /// Entries of enabled allowlists that cover it.
    pub matches: Vec<Match>,
}

/// The state the admin API manages, as persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Model {
    allowlists: BTreeMap<String, Allowlist>,
    enabled: BTreeSet<String>,
    pending: Option<Pending>,
    /// The protected ports set through the API; `None` until then.
    #[serde(default)]
    scopes: Option<BTreeSet<PortScope>>,
    /// The always-allow prefixes (from the daemon's configuration, never persisted).
    #[serde(skip)]
    always_allow: Vec<(IpNet, RuleId)>,
    /// The protected ports until the API sets some (configuration, never persisted).
    #[serde(skip)]
    default_scopes: BTreeSet<PortScope>,
}

/// Makes new ids: called with a prefix ("al" or "en"), returns an id never used before.
pub type IdSource<'a> = &'a mut dyn FnMut(&'static str) -> String;

impl Model {
    /// Sets the always-allow prefixes and their rule ids (configuration, not state).
    pub fn set_always_allow(&mut self, always_allow: Vec<(IpNet, RuleId)>) {
        self.always_allow = always_allow;
    }

    /// The always-allow prefixes.
    pub fn always_allow(&self) -> &[(IpNet, RuleId)] {
        &self.always_allow
    }

    /// Sets the protected ports used until the API sets some (configuration, not state).
    pub fn set_default_scopes(&mut self, scopes: BTreeSet<PortScope>) {
        self.default_scopes = scopes;
    }

    /// The protected ports in force; empty: every port is checked.
    pub fn scopes(&self) -> &BTreeSet<PortScope> {
        self.scopes.as_ref().unwrap_or(&self.default_scopes)
    }

    /// Changes the protected ports; the change is pending like an enable.
    pub fn set_scopes(
        &mut self,
        scopes: BTreeSet<PortScope>,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        self.check_no_pending()?;
        if &scopes == self.scopes() {
            return Ok(());
        }
        let previous = self.scopes.replace(scopes);
        self.pending = Some(pending(
            Action::Scopes,
            Vec::new(),
            now,
            settings,
            Restore::Scopes(previous),
        ));
        Ok(())
    }

    /// All allowlists, by id.
    pub fn allowlists(&self) -> impl Iterator<Item = &Allowlist> {
        self.allowlists.values()
    }

    /// One allowlist.
    pub fn allowlist(&self, id: &str) -> Result<&Allowlist, ModelError> {
        self.allowlists.get(id).ok_or_else(|| not_found(id))
    }

    /// Whether an allowlist is enabled.
    pub fn is_enabled(&self, id: &str) -> bool {
        self.enabled.contains(id)
    }

    /// The enabled allowlists' ids.
    pub fn enabled(&self) -> &BTreeSet<String> {
        &self.enabled
    }

    /// The change waiting for acknowledgement.
    pub fn pending(&self) -> Option<&Pending> {
        self.pending.as_ref()
    }

    /// Whether the host enforces a policy: some allowlist is enabled.
    pub fn enforcing(&self) -> bool {
        !self.enabled.is_empty()
    }

    /// The policy for the kernel: the always-allow prefixes and the entries of the enabled
    /// allowlists.
    pub fn effective_policy(&self) -> Policy {
        let mut policy: Policy = self.always_allow.iter().copied().collect();
        for id in &self.enabled {
            if let Some(list) = self.allowlists.get(id) {
                for entry in &list.entries {
                    policy.insert(entry.cidr, entry.rule);
                }
            }
        }
        policy
    }

    /// Every rule id in use, including those of entries a pending change may restore.
    pub fn rules_in_use(&self) -> BTreeSet<RuleId> {
        let mut rules: BTreeSet<RuleId> = self
            .allowlists
            .values()
            .flat_map(|list| list.entries.iter().map(|entry| entry.rule))
            .collect();
        if let Some(Pending {
            restore: Restore::Entries { entries, .. },
            ..
        }) = &self.pending
        {
            rules.extend(entries.iter().map(|entry| entry.rule));
        }
        rules
    }

    /// Gives fresh rule ids to entries whose rule is out of `0..capacity` or shared (after the
    /// capacity setting changed, or a hand-edited state file). Returns how many changed.
    pub fn renumber_rules(&mut self, capacity: RuleId) -> usize {
        let mut seen = BTreeSet::new();
        let mut bad = Vec::new();
        for list in self.allowlists.values() {
            for (index, entry) in list.entries.iter().enumerate() {
                if entry.rule >= capacity || !seen.insert(entry.rule) {
                    bad.push((list.id.clone(), index));
                }
            }
        }
        let mut allocator = RuleAllocator::new(seen, capacity);
        let mut changed = 0;
        for (list_id, index) in bad {
            if let (Some(rule), Some(list)) =
                (allocator.allocate(), self.allowlists.get_mut(&list_id))
            {
                list.entries[index].rule = rule;
                changed += 1;
            }
        }
        changed
    }

    fn total_entries(&self) -> usize {
        self.allowlists
            .values()
            .map(|list| list.entries.len())
            .sum()
    }

    /// Creates an allowlist.
    pub fn create(
        &mut self,
        input: AllowlistInput,
        now: OffsetDateTime,
        settings: &Settings,
        ids: IdSource,
    ) -> Result<&Allowlist, ModelError> {
        if self.allowlists.len() >= settings.max_lists {
            return Err(ModelError::LimitExceeded {
                what: "too many allowlists".into(),
                limit: settings.max_lists,
                field: None,
            });
        }
        let (name, description) = self.check_header(&input, None, settings)?;
        let parsed = parse_entries(input.entries.unwrap_or_default(), "entries", &[], settings)?;
        self.check_total(parsed.len(), settings)?;
        let mut allocator = RuleAllocator::new(self.rules_in_use(), settings.rule_capacity);
        let entries = allocate_entries(parsed, &[], &mut allocator, ids)?;
        let id = ids("al");
        let list = Allowlist {
            id: id.clone(),
            name,
            description,
            entries,
            created_at: now,
            updated_at: now,
            version: 1,
        };
        Ok(self.allowlists.entry(id).or_insert(list))
    }

    /// Replaces an allowlist's name, description and entries. Entries whose prefix stays keep
    /// their id. Removing entries from an enabled list becomes the pending change.
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
        let (name, description) = self.check_header(&input, Some(id), settings)?;
        let parsed = parse_entries(input.entries.unwrap_or_default(), "entries", &[], settings)?;
        let old_len = current.entries.len();
        if parsed.len() > old_len {
            self.check_total(parsed.len() - old_len, settings)?;
        }
        let kept: BTreeSet<IpNet> = parsed.iter().map(|(cidr, _)| *cidr).collect();
        let removed: Vec<Entry> = current
            .entries
            .iter()
            .filter(|entry| !kept.contains(&entry.cidr))
            .cloned()
            .collect();
        let mut allocator = RuleAllocator::new(self.rules_in_use(), settings.rule_capacity);
        let entries = allocate_entries(parsed, &current.entries, &mut allocator, ids)?;
        self.edit_list(id, removed, now, settings, |list| {
            list.name = name;
            list.description = description;
            list.entries = entries;
        })?;
        self.allowlist(id)
    }

    /// Deletes an allowlist that is not enabled.
    pub fn delete(&mut self, id: &str, if_match: Option<u64>) -> Result<Allowlist, ModelError> {
        check_version(self.allowlist(id)?, if_match)?;
        if self.is_enabled(id) {
            return Err(ModelError::AllowlistEnabled { id: id.to_owned() });
        }
        if self
            .pending
            .as_ref()
            .is_some_and(|pending| pending.allowlist_ids.iter().any(|p| p == id))
        {
            // A revert of the pending change would need this list back.
            self.check_no_pending()?;
        }
        self.allowlists.remove(id).ok_or_else(|| not_found(id))
    }

    /// Adds entries to an allowlist; on an enabled list they apply at once.
    pub fn add_entries(
        &mut self,
        id: &str,
        inputs: Vec<EntryInput>,
        now: OffsetDateTime,
        settings: &Settings,
        ids: IdSource,
    ) -> Result<Vec<Entry>, ModelError> {
        let current = self.allowlist(id)?;
        if inputs.is_empty() {
            return Err(ModelError::InvalidRequest {
                message: "entries is empty".into(),
                field: Some("entries".into()),
            });
        }
        let existing: Vec<IpNet> = current.entries.iter().map(|entry| entry.cidr).collect();
        let parsed = parse_entries(inputs, "entries", &existing, settings)?;
        self.check_total(parsed.len(), settings)?;
        let mut allocator = RuleAllocator::new(self.rules_in_use(), settings.rule_capacity);
        let added = allocate_entries(parsed, &[], &mut allocator, ids)?;
        let list = self.allowlists.get_mut(id).ok_or_else(|| not_found(id))?;
        list.entries.extend(added.iter().cloned());
        list.updated_at = now;
        list.version += 1;
        Ok(added)
    }

    /// Removes one entry; on an enabled list this becomes the pending change.
    pub fn remove_entry(
        &mut self,
        id: &str,
        entry_id: &str,
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
                id: entry_id.to_owned(),
            })?;
        let removed = current.entries[index].clone();
        self.edit_list(id, vec![removed.clone()], now, settings, |list| {
            list.entries.remove(index);
        })?;
        Ok(removed)
    }

    /// Applies `edit` to allowlist `id` (bumping its version) on a copy and keeps the copy if it
    /// is valid. On an enabled list whose edit `removed` entries, the edit is narrowing: it
    /// needs no other change pending, must leave something allowed, and becomes the pending
    /// change, whose revert puts the removed entries back.
    fn edit_list(
        &mut self,
        id: &str,
        removed: Vec<Entry>,
        now: OffsetDateTime,
        settings: &Settings,
        edit: impl FnOnce(&mut Allowlist),
    ) -> Result<(), ModelError> {
        let narrowing = self.is_enabled(id) && !removed.is_empty();
        if narrowing {
            self.check_no_pending()?;
        }
        let mut next = self.clone();
        let list = next
            .allowlists
            .get_mut(id)
            .ok_or_else(|| ModelError::NotFound {
                what: "allowlist",
                id: id.to_owned(),
            })?;
        edit(list);
        list.updated_at = now;
        list.version += 1;
        if narrowing {
            next.check_not_empty()?;
            next.pending = Some(pending(
                Action::Update,
                vec![id.to_owned()],
                now,
                settings,
                Restore::Entries {
                    allowlist_id: id.to_owned(),
                    entries: removed,
                },
            ));
        }
        *self = next;
        Ok(())
    }

    /// Enables allowlists. When the host is not enforcing yet, refuses if the new policy
    /// would drop any of `guarded` (the caller's address, sources of established sessions),
    /// unless `force`.
    pub fn enable(
        &mut self,
        ids: &[String],
        guarded: &[IpAddr],
        force: bool,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        self.check_ids(ids)?;
        let already: Vec<String> = ids
            .iter()
            .filter(|id| self.is_enabled(id))
            .cloned()
            .collect();
        if !already.is_empty() {
            return Err(ModelError::AlreadyEnabled { ids: already });
        }
        self.check_no_pending()?;
        let mut next = self.clone();
        next.enabled.extend(ids.iter().cloned());
        next.check_not_empty()?;
        if !self.enforcing() && !force {
            let policy = next.effective_policy();
            let mut cut_off: Vec<IpAddr> = guarded
                .iter()
                .copied()
                .filter(|addr| policy.lookup(*addr).is_none())
                .collect();
            cut_off.sort();
            cut_off.dedup();
            if !cut_off.is_empty() {
                return Err(ModelError::WouldLockOut { addresses: cut_off });
            }
        }
        next.pending = Some(pending(
            Action::Enable,
            ids.to_vec(),
            now,
            settings,
            Restore::Enabled(self.enabled.clone()),
        ));
        *self = next;
        Ok(())
    }

    /// Disables allowlists.
    pub fn disable(
        &mut self,
        ids: &[String],
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<(), ModelError> {
        self.check_ids(ids)?;
        let not_enabled: Vec<String> = ids
            .iter()
            .filter(|id| !self.is_enabled(id))
            .cloned()
            .collect();
        if !not_enabled.is_empty() {
            return Err(ModelError::NotEnabled { ids: not_enabled });
        }
        self.check_no_pending()?;
        let mut next = self.clone();
        for id in ids {
            next.enabled.remove(id);
        }
        next.check_not_empty()?;
        next.pending = Some(pending(
            Action::Disable,
            ids.to_vec(),
            now,
            settings,
            Restore::Enabled(self.enabled.clone()),
        ));
        *self = next;
        Ok(())
    }

    /// Confirms the pending change.
    pub fn acknowledge(
        &mut self,
        now: OffsetDateTime,
        settings: &Settings,
    ) -> Result<Pending, ModelError> {
        let pending = self.pending.as_ref().ok_or(ModelError::NothingPending)?;
        if now < pending.acknowledge_after {
            let wait = pending.acknowledge_after - now;
            return Err(ModelError::TooEarly {
                retry_after_seconds: wait.whole_seconds().max(0) as u64
                    + u64::from(wait.subsec_nanoseconds() > 0),
                ack_min_seconds: settings.ack_min.as_secs(),
            });
        }
        if now >= pending.revert_at {
            self.revert();
            return Err(ModelError::NothingPending);
        }
        self.pending.take().ok_or(ModelError::NothingPending)
    }

    /// Reverts the pending change if its time has come; returns it if so.
    pub fn revert_if_due(&mut self, now: OffsetDateTime) -> Option<Pending> {
        if self.pending.as_ref().is_some_and(|p| now >= p.revert_at) {
            self.revert()
        } else {
            None
        }
    }

    /// The state a revert of the pending change would give (itself when nothing is pending):
    /// what the kernel falls back to on its own at the deadline.
    pub fn reverted(&self) -> Model {
        let mut reverted = self.clone();
        reverted.revert();
        reverted
    }

    fn revert(&mut self) -> Option<Pending> {
        let pending = self.pending.take()?;
        match &pending.restore {
            Restore::Enabled(enabled) => {
                self.enabled = enabled
                    .iter()
                    .filter(|id| self.allowlists.contains_key(*id))
                    .cloned()
                    .collect();
            }
            Restore::Scopes(previous) => self.scopes = previous.clone(),
            Restore::Entries {
                allowlist_id,
                entries,
            } => {
                if let Some(list) = self.allowlists.get_mut(allowlist_id) {
                    let present: BTreeSet<IpNet> =
                        list.entries.iter().map(|entry| entry.cidr).collect();
                    for entry in entries {
                        if !present.contains(&entry.cidr) {
                            list.entries.push(entry.clone());
                        }
                    }
                    list.version += 1;
                    list.updated_at = pending.revert_at;
                }
            }
        }
        Some(pending)
    }

    /// Whether `addr` passes now, and which entries cover it.
    pub fn evaluate(&self, addr: IpAddr) -> Evaluation {
        let matches: Vec<Match> = self
            .enabled
            .iter()
            .filter_map(|id| self.allowlists.get(id))
            .flat_map(|list| {
                list.entries
                    .iter()
                    .filter(move |entry| entry.cidr.contains(&addr))
                    .map(move |entry| Match {
                        allowlist_id: list.id.clone(),
                        entry_id: entry.id.clone(),
                        cidr: entry.cidr,
                    })
            })
            .collect();
        let (allowed, reason) = if !self.enforcing() {
            (true, Reason::NotEnforcing)
        } else if self.always_allow.iter().any(|(net, _)| net.contains(&addr)) {
            (true, Reason::AlwaysAllow)
        } else if !matches.is_empty() {
            (true, Reason::Allowlist)
        } else {
            (false, Reason::NoMatch)
        };
        Evaluation {
            allowed,
            reason,
            matches,
        }
    }

    fn check_header(
        &self,
        input: &AllowlistInput,
        own_id: Option<&str>,
        settings: &Settings,
    ) -> Result<(String, String), ModelError> {
        let name = input.name.trim().to_owned();
        if name.is_empty() {
            return Err(ModelError::InvalidRequest {
                message: "name is empty".into(),
                field: Some("name".into()),
            });
        }
        if name.chars().count() > settings.max_name_len {
            return Err(ModelError::LimitExceeded {
                what: "name is too long".into(),
                limit: settings.max_name_len,
                field: Some("name".into()),
            });
        }
        let description = input.description.clone().unwrap_or_default();
        check_description(&description, "description", settings)?;
        if self
            .allowlists
            .values()
            .any(|list| list.name == name && Some(list.id.as_str()) != own_id)
        {
            return Err(ModelError::DuplicateName { name });
        }
        Ok((name, description))
    }

    fn check_total(&self, adding: usize, settings: &Settings) -> Result<(), ModelError> {
        if self.total_entries() + adding > settings.max_entries {
            return Err(ModelError::LimitExceeded {
                what: format!(
                    "too many entries ({} exist, {adding} more asked for)",
                    self.total_entries()
                ),
                limit: settings.max_entries,
                field: Some("entries".into()),
            });
        }
        Ok(())
    }

    fn check_ids(&self, ids: &[String]) -> Result<(), ModelError> {
        if ids.is_empty() {
            return Err(ModelError::InvalidRequest {
                message: "allowlist_ids is empty".into(),
                field: Some("allowlist_ids".into()),
            });
        }
        for id in ids {
            self.allowlist(id)?;
        }
        Ok(())
    }

    fn check_no_pending(&self) -> Result<(), ModelError> {
        match &self.pending {
            Some(pending) => Err(ModelError::ChangePending {
                action: pending.action,
                revert_at: rfc3339(pending.revert_at),
            }),
            None => Ok(()),
        }
    }

    /// Refuses an enforcing state whose policy, even with the always-allow list, is empty.
    fn check_not_empty(&self) -> Result<(), ModelError> {
        if self.enforcing() && self.effective_policy().is_empty() {
            return Err(ModelError::EmptyPolicy);
        }
        Ok(())
    }
}

fn not_found(id: &str) -> ModelError {
    ModelError::NotFound {
        what: "allowlist",
        id: id.to_owned(),
    }
}

/// Formats a time as RFC 3339.
pub fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.to_string())
}

fn pending(
    action: Action,
    allowlist_ids: Vec<String>,
    now: OffsetDateTime,
    settings: &Settings,
    restore: Restore,
) -> Pending {
    Pending {
        action,
        allowlist_ids,
        applied_at: now,
        acknowledge_after: now + settings.ack_min,
        revert_at: now + settings.ack_max,
        restore,
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

fn check_description(
    description: &str,
    field: &str,
    settings: &Settings,
) -> Result<(), ModelError> {
    if description.chars().count() > settings.max_description_len {
        return Err(ModelError::LimitExceeded {
            what: "description is too long".into(),
            limit: settings.max_description_len,
            field: Some(field.to_owned()),
        });
    }
    Ok(())
}

/// Parses and checks entries: valid CIDRs, descriptions within the limit, no duplicates among
/// themselves or with `existing`.
fn parse_entries(
    inputs: Vec<EntryInput>,
    field: &str,
    existing: &[IpNet],
    settings: &Settings,
) -> Result<Vec<(IpNet, String)>, ModelError> {
    let mut seen: BTreeSet<IpNet> = existing.iter().copied().collect();
    let mut parsed = Vec::with_capacity(inputs.len());
    for (index, input) in inputs.into_iter().enumerate() {
        let cidr = parse_cidr(&input.cidr).map_err(|source| {
            let field = format!("{field}[{index}].cidr");
            match source {
                CidrError::HostBitsSet { .. } => ModelError::HostBitsSet { field, source },
                CidrError::Invalid { .. } => ModelError::InvalidCidr { field, source },
            }
        })?;
        let description = input.description.unwrap_or_default();
        check_description(
            &description,
            &format!("{field}[{index}].description"),
            settings,
        )?;
        if !seen.insert(cidr) {
            return Err(ModelError::DuplicateEntry {
                field: format!("{field}[{index}].cidr"),
                cidr,
            });
        }
        parsed.push((cidr, description));
    }
    Ok(parsed)
}

/// Turns parsed entries into entries, reusing the id and rule of a `previous` entry with the
/// same prefix and allocating fresh ones otherwise.
fn allocate_entries(
    parsed: Vec<(IpNet, String)>,
    previous: &[Entry],
    allocator: &mut RuleAllocator,
    ids: IdSource,
) -> Result<Vec<Entry>, ModelError> {
    let previous: BTreeMap<IpNet, &Entry> =
        previous.iter().map(|entry| (entry.cidr, entry)).collect();
    parsed
        .into_iter()
        .map(|(cidr, description)| {
            if let Some(old) = previous.get(&cidr) {
                return Ok(Entry {
                    description,
                    ..(*old).clone()
                });
            }
            let rule = allocator.allocate().ok_or(ModelError::LimitExceeded {
                what: "no free rule slot in the kernel maps".into(),
                limit: allocator.capacity as usize,
                field: Some("entries".into()),
            })?;
            Ok(Entry {
                id: ids("en"),
                cidr,
                description,
                rule,
            })
        })
        .collect()
}

/// Hands out the smallest free rule ids.
struct RuleAllocator {
    used: BTreeSet<RuleId>,
    next: RuleId,
    capacity: RuleId,
}

impl RuleAllocator {
    fn new(used: BTreeSet<RuleId>, capacity: RuleId) -> Self {
        Self {
            used,
            next: 0,
            capacity,
        }
    }

    fn allocate(&mut self) -> Option<RuleId> {
        while self.next < self.capacity {
            let candidate = self.next;
            self.next += 1;
            if self.used.insert(candidate) {
                return Some(candidate);
            }
        }
        None
    }
}

#[cfg(test)]
mod tests;
