//! Converging to a declared set of lists in one transaction: `allowlistctl apply` for the
//! host's own lists, and fleet releases for the fleet's lists.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::allowlist::{Allowlist, FleetOrigin};
use super::error::ModelError;
use super::evaluate::{GuardedAddress, check_reachable};
use super::ids::IdSource;
use super::input::{EntryInput, allocate_entries, parse_entries};
use super::pending::{Action, Restore};
use super::rules::RuleAllocator;
use super::settings::Settings;
use super::source::{SourceInput, parse_source};
use super::state::Model;
use super::validate::{check_description, check_name};

/// One list as a policy file or a fleet release declares it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DesiredList {
    /// Its name: lists are matched by name.
    pub name: String,
    /// Free text.
    #[serde(default)]
    pub description: String,
    /// Whether it is enabled.
    #[serde(default)]
    pub enabled: bool,
    /// Whether it may hold `0.0.0.0/0` or `::/0`.
    #[serde(default)]
    pub allow_all: bool,
    /// Its entries.
    #[serde(default)]
    pub entries: Vec<EntryInput>,
    /// The feed it follows (the host's own lists only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<SourceInput>,
}

/// Which lists an apply converges.
#[derive(Debug, Clone, Copy)]
pub enum Scope<'a> {
    /// The host's own lists; with `prune`, own lists the declaration does not name are
    /// deleted, else left alone.
    Local {
        /// Delete own lists not named.
        prune: bool,
    },
    /// The lists of `fleet` as `release` declares them; fleet lists it does not name are
    /// deleted. A release is always one pending change, acknowledged for the fleet.
    Fleet {
        /// The fleet.
        fleet: &'a str,
        /// The release.
        release: &'a str,
    },
}

/// One list an apply changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListChange {
    /// The list's name.
    pub name: String,
    /// Prefixes added.
    pub added: usize,
    /// Prefixes removed.
    pub removed: usize,
}

/// What an apply changed (or, for a dry run, would change), by list name.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ApplyReport {
    /// Lists created.
    pub created: Vec<String>,
    /// Lists whose entries, description or flags changed.
    pub updated: Vec<ListChange>,
    /// Lists deleted.
    pub deleted: Vec<String>,
    /// Lists enabled.
    pub enabled: Vec<String>,
    /// Lists disabled.
    pub disabled: Vec<String>,
}

impl ApplyReport {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.created.is_empty()
            && self.updated.is_empty()
            && self.deleted.is_empty()
            && self.enabled.is_empty()
            && self.disabled.is_empty()
    }
}

impl Model {
    /// Converges the lists of `scope` to `desired`, in one transaction: creates and replaces
    /// lists by name, deletes what the scope says, enables and disables as declared. A change
    /// that narrows what is enforced or changes which lists are enabled (and any fleet
    /// release) becomes the one pending change, whose revert restores every list it touched
    /// and the enabled set exactly. Refused as a whole, changing nothing, if any part is
    /// invalid, if a change is pending, or (not enforcing yet, without `force`) if it would
    /// drop `guarded`; a fleet release, whenever it would cut off an address of `guarded`
    /// that passes now.
    #[allow(clippy::too_many_arguments)]
    pub fn apply(
        &mut self,
        desired: Vec<DesiredList>,
        scope: Scope<'_>,
        guarded: &[GuardedAddress],
        force: bool,
        now: OffsetDateTime,
        settings: &Settings,
        ids: IdSource,
    ) -> Result<ApplyReport, ModelError> {
        let mut next = self.clone();
        let mut report = ApplyReport::default();
        let mut touched = BTreeSet::new();
        let mut snapshots = Vec::new();
        let mut created = Vec::new();
        let mut allocator = RuleAllocator::new(self.rules_in_use(), settings.rule_capacity);
        let mut names = BTreeSet::new();
        for (index, list) in desired.iter().enumerate() {
            let at = format!("allowlists[{index}]");
            let name = list.name.trim();
            check_name(name, &format!("{at}.name"), settings)?;
            check_description(&list.description, &format!("{at}.description"), settings)?;
            if !names.insert(name.to_owned()) {
                return Err(ModelError::DuplicateName {
                    name: name.to_owned(),
                });
            }
            let existing = self.allowlists().find(|l| l.name == name);
            if let Some(existing) = existing {
                self.check_owner(existing, scope)?;
            }
            let entries = list.entries.clone();
            let previous = existing.map_or(&[][..], |l| l.entries.as_slice());
            let parsed = parse_entries(
                entries,
                &format!("{at}.entries"),
                &[],
                list.allow_all,
                now,
                settings,
            )?;
            let entries = allocate_entries(parsed, previous, &mut allocator, ids)?;
            let source = match (&list.source, scope) {
                (None, _) => None,
                (Some(_), Scope::Fleet { .. }) => {
                    return Err(ModelError::InvalidRequest {
                        message: format!(
                            "{at}.source: a fleet's lists cannot follow a feed (each host \
                             would read it on its own); publish the entries"
                        ),
                        field: Some(format!("{at}.source")),
                    });
                }
                (Some(input), Scope::Local { .. }) => Some(
                    parse_source(input)?
                        .keeping_credentials(existing.and_then(|l| l.source.as_ref())),
                ),
            };
            let origin = match scope {
                Scope::Local { .. } => existing.and_then(|l| l.fleet.clone()),
                Scope::Fleet { fleet, release } => Some(FleetOrigin {
                    fleet: fleet.to_owned(),
                    release: release.to_owned(),
                }),
            };
            let id = match existing {
                Some(old) => {
                    let mut new = Allowlist {
                        name: name.to_owned(),
                        description: list.description.clone(),
                        entries: Arc::new(entries),
                        allow_all: list.allow_all,
                        fleet: origin,
                        source,
                        updated_at: now,
                        version: old.version + 1,
                        ..old.clone()
                    };
                    new.set_by_person();
                    if !same_content(old, &new) {
                        report.updated.push(change(old, &new));
                        snapshots.push(old.clone());
                        touched.insert(old.id.clone());
                        next.allowlists.insert(old.id.clone(), new);
                    }
                    old.id.clone()
                }
                None => {
                    let id = ids.list_id();
                    report.created.push(name.to_owned());
                    created.push(id.clone());
                    touched.insert(id.clone());
                    let mut new = Allowlist {
                        id: id.clone(),
                        name: name.to_owned(),
                        description: list.description.clone(),
                        entries: Arc::new(entries),
                        allow_all: list.allow_all,
                        fleet: origin,
                        source,
                        feed_baseline: 0,
                        created_at: now,
                        updated_at: now,
                        version: 1,
                    };
                    new.set_by_person();
                    next.allowlists.insert(id.clone(), new);
                    id
                }
            };
            let was_enabled = self.is_enabled(&id);
            if list.enabled && !was_enabled {
                report.enabled.push(name.to_owned());
                touched.insert(id.clone());
                next.enabled.insert(id);
            } else if !list.enabled && was_enabled {
                report.disabled.push(name.to_owned());
                touched.insert(id.clone());
                next.enabled.remove(&id);
            }
        }
        for list in self.allowlists() {
            if !names.contains(&list.name) && scope.deletes(list) {
                report.deleted.push(list.name.clone());
                if next.enabled.remove(&list.id) {
                    report.disabled.push(list.name.clone());
                }
                touched.insert(list.id.clone());
                snapshots.push(list.clone());
                next.allowlists.remove(&list.id);
            }
        }
        let release = matches!(scope, Scope::Fleet { .. });
        if report.is_empty() && !release {
            return Ok(report);
        }
        self.window.check_closed()?;
        next.check_apply_limits(self, settings)?;
        next.check_allows_something(&next.enabled, None)?;
        let addresses = || guarded.iter().map(|guarded| guarded.address);
        if !self.enforcing() && next.enforcing() && !force {
            check_reachable(addresses(), |addr| next.admits(addr))?;
        }
        // A release no person acknowledges on this host: judged by the guard every time,
        // not only when it starts enforcing.
        if release {
            check_reachable(addresses(), |addr| !self.admits(addr) || next.admits(addr))?;
        }
        if release || self.apply_narrows(&next) {
            let restore = Restore {
                created,
                ..self.restore_point(snapshots)
            };
            let action = if release {
                Action::Release
            } else {
                Action::Apply
            };
            let release = match scope {
                Scope::Fleet { release, .. } => Some(release),
                Scope::Local { .. } => None,
            };
            let ids = touched.into_iter().collect();
            next.window
                .open(action, ids, restore, release, now, settings)?;
        }
        *self = next;
        Ok(report)
    }

    /// Stops or resumes following the fleet: detached, the fleet's lists are editable.
    /// Attaching again after the fleet's lists were edited (or deleted) finds drift: the
    /// last acknowledged release is then forgotten, so that the fleet's current release is
    /// applied again, as a pending change. Returns the lists that drifted. Refused while a
    /// fleet release waits for its acknowledgement.
    pub fn set_detached(&mut self, detached: bool) -> Result<Vec<String>, ModelError> {
        if self.pending_release().is_some() {
            self.window.check_closed()?;
        }
        Ok(self.fleet.set_detached(detached))
    }

    /// Offers `release` to this host again, which reverted it (or could not apply it): it is
    /// applied again as a pending change. Returns whether the host had reverted it.
    pub fn forget_reverted(&mut self, release: &str) -> bool {
        self.fleet.forget_reverted(release)
    }

    /// Refuses an apply of `scope` to `list`, a list of that name the host has: own lists
    /// are not the fleet's, and the fleet's are not the host's (unless it is detached).
    fn check_owner(&self, list: &Allowlist, scope: Scope<'_>) -> Result<(), ModelError> {
        match (scope, &list.fleet) {
            (Scope::Local { .. }, Some(_)) => self.fleet.check_local_edit(list),
            (Scope::Fleet { fleet, .. }, Some(origin)) if origin.fleet == fleet => Ok(()),
            (Scope::Fleet { .. }, _) => Err(ModelError::DuplicateName {
                name: list.name.clone(),
            }),
            (Scope::Local { .. }, None) => Ok(()),
        }
    }

    /// Whether `next` enforces less than this model: another enabled set, or an enabled
    /// list that lost a prefix.
    fn apply_narrows(&self, next: &Model) -> bool {
        self.enabled != next.enabled
            || self.enabled_lists().any(|old| {
                next.allowlists
                    .get(&old.id)
                    .is_none_or(|new| !old.is_covered_by(new))
            })
    }

    /// The list and entry limits, for the state an apply leads to.
    fn check_apply_limits(&self, before: &Model, settings: &Settings) -> Result<(), ModelError> {
        if self.allowlists.len() > settings.max_lists.max(before.allowlists.len()) {
            return Err(ModelError::LimitExceeded {
                what: format!("too many allowlists ({})", self.allowlists.len()),
                limit: settings.max_lists,
                field: Some("allowlists".into()),
            });
        }
        let total = self.total_entries();
        if total > settings.max_entries {
            return Err(ModelError::LimitExceeded {
                what: format!("too many entries ({total})"),
                limit: settings.max_entries,
                field: Some("allowlists".into()),
            });
        }
        Ok(())
    }
}

impl Scope<'_> {
    /// Whether a list the declaration does not name is deleted.
    fn deletes(&self, list: &Allowlist) -> bool {
        match self {
            Scope::Local { prune } => *prune && list.fleet.is_none(),
            Scope::Fleet { fleet, .. } => list.fleet.as_ref().is_some_and(|o| o.fleet == *fleet),
        }
    }
}

/// Whether two versions of a list hold the same: name, description, flags, origin, entries.
fn same_content(old: &Allowlist, new: &Allowlist) -> bool {
    old.name == new.name
        && old.description == new.description
        && old.allow_all == new.allow_all
        && old.fleet == new.fleet
        && old.source == new.source
        && old.entries.len() == new.entries.len()
        && old.entries.iter().zip(new.entries.iter()).all(|(a, b)| {
            a.cidr == b.cidr && a.description == b.description && a.expires_at == b.expires_at
        })
}

/// How `old` became `new`, in prefixes.
fn change(old: &Allowlist, new: &Allowlist) -> ListChange {
    let before: BTreeSet<_> = old.entries.iter().map(|e| e.cidr).collect();
    let after: BTreeSet<_> = new.entries.iter().map(|e| e.cidr).collect();
    ListChange {
        name: new.name.clone(),
        added: after.difference(&before).count(),
        removed: before.difference(&after).count(),
    }
}
