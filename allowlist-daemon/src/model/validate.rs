//! The checks a request and a saved state both go through, and the check of a whole saved
//! state against the invariants.

use std::collections::BTreeSet;

use ipnet::IpNet;

use super::allowlist::{Allowlist, EntryId};
use super::error::{InvalidState, ModelError};
use super::settings::Settings;
use super::state::Model;

/// Checks a list name: not empty, no surrounding spaces, within the limit.
pub(super) fn check_name(name: &str, field: &str, settings: &Settings) -> Result<(), ModelError> {
    if name.trim().is_empty() {
        return Err(ModelError::InvalidRequest {
            message: "name is empty".into(),
            field: Some(field.to_owned()),
        });
    }
    if name.trim() != name {
        return Err(ModelError::InvalidRequest {
            message: format!("name {name:?} has surrounding spaces"),
            field: Some(field.to_owned()),
        });
    }
    if name.chars().count() > settings.max_name_len {
        return Err(ModelError::LimitExceeded {
            what: "name is too long".into(),
            limit: settings.max_name_len,
            field: Some(field.to_owned()),
        });
    }
    Ok(())
}

/// Checks a description's length.
pub(super) fn check_description(
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

/// Refuses a prefix that allows every source of its family unless `allow_all`.
pub(super) fn check_allow_all(net: IpNet, field: &str, allow_all: bool) -> Result<(), ModelError> {
    if net.prefix_len() == 0 && !allow_all {
        return Err(ModelError::AllowAllRequired {
            field: field.to_owned(),
            cidr: net,
        });
    }
    Ok(())
}

/// Checks a stored prefix as [`crate::policy::parse_cidr`] checks a given one, and
/// [`check_allow_all`].
fn check_prefix(net: IpNet, field: &str, allow_all: bool) -> Result<(), ModelError> {
    // The prefix's text only for the error: a state holds millions of prefixes.
    if crate::policy::check_prefix(net, "").is_err() {
        crate::policy::check_prefix(net, &net.to_string()).map_err(|source| ModelError::Cidr {
            field: field.to_owned(),
            source,
        })?;
    }
    check_allow_all(net, field, allow_all)
}

/// Checks one stored list: id, name, description, and its entries (prefixes, descriptions,
/// no prefix twice). Entry ids are checked by [`check_unique_ids`].
fn check_list(list: &Allowlist, at: &str, settings: &Settings) -> Result<(), InvalidState> {
    let fail = |err: ModelError| InvalidState::at(at, err);
    if list.id.is_empty() {
        return Err(InvalidState::at(at, "the id is empty"));
    }
    check_name(&list.name, "name", settings).map_err(fail)?;
    check_description(&list.description, "description", settings).map_err(fail)?;
    for (index, entry) in list.entries.iter().enumerate() {
        // The entry's place, written only for an error: a state holds millions of them.
        let place = || format!("{at}.entries[{index}]");
        let fail_entry = |err: ModelError| InvalidState::at(place(), err);
        check_prefix(entry.cidr, "cidr", list.allow_all).map_err(fail_entry)?;
        check_description(entry.description(), "description", settings).map_err(fail_entry)?;
        if index > 0 && list.entries[index - 1].cidr >= entry.cidr {
            return Err(InvalidState::at(
                place(),
                format!("{} is in the list twice, or out of order", entry.cidr),
            ));
        }
    }
    Ok(())
}

/// Refuses an entry id used twice among `lists` (each with its place), naming the second
/// use. Sorted rather than hashed: a state holds millions of ids.
fn check_unique_ids<'a>(
    lists: impl Iterator<Item = (String, &'a Allowlist)> + Clone,
) -> Result<(), InvalidState> {
    let mut ids: Vec<EntryId> = lists
        .clone()
        .flat_map(|(_, list)| list.entries.iter().map(|entry| entry.id))
        .collect();
    ids.sort_unstable();
    let Some(twice) = ids
        .windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
    else {
        return Ok(());
    };
    let mut seen = false;
    for (at, list) in lists {
        for (index, entry) in list.entries.iter().enumerate() {
            if entry.id == twice {
                if seen {
                    return Err(InvalidState::at(
                        format!("{at}.entries[{index}]"),
                        format!("entry id {twice} is used twice"),
                    ));
                }
                seen = true;
            }
        }
    }
    Err(InvalidState::at(
        "allowlists",
        format!("entry id {twice} is used twice"),
    ))
}

impl Model {
    /// Checks a loaded state against every invariant an API call keeps, with this daemon's
    /// limits and always-allow prefixes: names, descriptions and prefixes as a request would
    /// be checked, unique names and ids, the limits, enabled lists that exist and allow
    /// something, and a pending change that concerns existing lists and whose revert gives a
    /// state that passes the same checks.
    pub fn validate(&self, settings: &Settings) -> Result<(), InvalidState> {
        self.validate_state(settings)?;
        let Some(pending) = self.window.pending() else {
            return Ok(());
        };
        let at = "pending";
        let mut concerned = BTreeSet::new();
        let restored = |id: &String| pending.revert_to.lists.iter().any(|list| &list.id == id);
        for id in &pending.allowlist_ids {
            if !self.allowlists.contains_key(id) && !restored(id) {
                return Err(InvalidState::at(
                    at,
                    format!("names allowlist {id}, which does not exist"),
                ));
            }
            if !concerned.insert(id) {
                return Err(InvalidState::at(at, format!("names allowlist {id} twice")));
            }
        }
        if !(pending.applied_at <= pending.acknowledge_after
            && pending.acknowledge_after < pending.revert_at)
        {
            return Err(InvalidState::at(
                at,
                "its times are out of order (applied_at <= acknowledge_after < revert_at)",
            ));
        }
        for list in &pending.revert_to.lists {
            if !concerned.contains(&list.id) {
                return Err(InvalidState::at(
                    at,
                    format!(
                        "restores allowlist {}, which the change does not concern",
                        list.id
                    ),
                ));
            }
            let place = format!("{at}.revert_to.{}", list.id);
            check_list(list, &place, settings)?;
            check_unique_ids(std::iter::once((place, list)))?;
        }
        if let Some(missing) = pending
            .revert_to
            .enabled
            .iter()
            .find(|id| !self.allowlists.contains_key(*id) && !restored(id))
        {
            return Err(InvalidState::at(
                at,
                format!("a revert would enable allowlist {missing}, which does not exist"),
            ));
        }
        self.reverted()
            .validate_state(settings)
            .map_err(|err| InvalidState::at(at, format!("a revert would give a state where {err}")))
    }

    /// [`Model::validate`] without the pending change.
    fn validate_state(&self, settings: &Settings) -> Result<(), InvalidState> {
        if self.allowlists.len() > settings.max_lists {
            return Err(InvalidState::at(
                "allowlists",
                format!(
                    "{} allowlists, more than --max-lists {}: raise --max-lists",
                    self.allowlists.len(),
                    settings.max_lists
                ),
            ));
        }
        let mut names = BTreeSet::new();
        for (key, list) in &self.allowlists {
            let at = format!("allowlists.{key}");
            if *key != list.id {
                return Err(InvalidState::at(
                    at,
                    format!("the list's id is {:?}", list.id),
                ));
            }
            check_list(list, &at, settings)?;
            if !names.insert(&list.name) {
                return Err(InvalidState::at(
                    at,
                    format!("another list is named {:?}", list.name),
                ));
            }
        }
        check_unique_ids(
            self.allowlists
                .iter()
                .map(|(key, list)| (format!("allowlists.{key}"), list)),
        )?;
        let total = self.total_entries();
        if total > settings.max_entries {
            return Err(InvalidState::at(
                "allowlists",
                format!(
                    "{total} entries, more than --max-entries {}: raise --max-entries",
                    settings.max_entries
                ),
            ));
        }
        if let Some(missing) = self
            .enabled
            .iter()
            .find(|id| !self.allowlists.contains_key(*id))
        {
            return Err(InvalidState::at(
                "enabled",
                format!("names allowlist {missing}, which does not exist"),
            ));
        }
        self.check_allows_something(&self.enabled, None)
            .map_err(|_| {
                InvalidState::at(
                    "enabled",
                    "the enabled lists and the --allow prefixes allow no address: enforcing them \
                 would drop every IP packet",
                )
            })
    }
}
