//! The model itself: the lists, the enabled set, the scopes and the pending change, with the
//! readers that say what the kernel must enforce.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use allowlist_common::{EXPIRING_RULE, RuleId};
use ipnet::IpNet;
use time::OffsetDateTime;

use super::allowlist::{Allowlist, Entry};
use super::error::ModelError;
use super::fleet::FleetMemo;
use super::pending::Pending;
use super::window::AckWindow;
use crate::policy::{Policy, PortScope};

/// The state the admin API manages, as persisted (see the module's invariants).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Model {
    pub(super) allowlists: BTreeMap<String, Allowlist>,
    pub(super) enabled: BTreeSet<String>,
    /// The change waiting for acknowledgement, and what its revert restores.
    pub(super) window: AckWindow,
    /// The protected ports set through the API; `None` until then.
    pub(super) scopes: Option<BTreeSet<PortScope>>,
    /// What the host keeps of the fleet it follows.
    pub(super) fleet: FleetMemo,
    /// The always-allow prefixes (from the daemon's configuration, never persisted).
    pub(super) always_allow: Vec<(IpNet, RuleId)>,
    /// The protected ports until the API sets some (configuration, never persisted).
    pub(super) default_scopes: BTreeSet<PortScope>,
}

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

    /// Every list the model keeps: the lists, then the lists a revert restores.
    pub fn kept_lists(&self) -> impl Iterator<Item = &Allowlist> {
        self.allowlists.values().chain(self.window.restorable())
    }

    /// The enabled allowlists' ids.
    pub fn enabled(&self) -> &BTreeSet<String> {
        &self.enabled
    }

    /// What the host keeps of its fleet.
    pub fn fleet(&self) -> &FleetMemo {
        &self.fleet
    }

    /// The fleet release waiting for its acknowledgement, if the pending change is one.
    pub fn pending_release(&self) -> Option<&str> {
        self.window.release()
    }

    /// The change waiting for acknowledgement.
    pub fn pending(&self) -> Option<&Pending> {
        self.window.pending()
    }

    /// Whether the host enforces a policy: some allowlist is enabled.
    pub fn enforcing(&self) -> bool {
        !self.enabled.is_empty()
    }

    /// The policy for the kernel: the always-allow prefixes and the entries of the enabled
    /// allowlists.
    pub fn effective_policy(&self) -> Policy {
        // The always-allow prefixes first: they keep a prefix a list names too.
        let expiring = self.kernel_expiring();
        let lists = self.enabled_lists().flat_map(|list| list.entries.iter());
        self.always_allow
            .iter()
            .copied()
            .chain(lists.map(|entry| {
                let flag = if expiring.contains_key(&entry.rule) {
                    EXPIRING_RULE
                } else {
                    0
                };
                (entry.cidr, entry.rule | flag)
            }))
            .collect()
    }

    /// The rules of the enabled entries that expire and that the kernel may expire by itself,
    /// with their time: those whose prefix no other prefix in force holds (the kernel knows
    /// only the longest prefix of an address; an entry inside another leaves when the daemon
    /// removes it), but those kept past their time (see [`Model::expire`]). Flagged
    /// [`EXPIRING_RULE`] in [`Model::effective_policy`].
    pub fn kernel_expiring(&self) -> BTreeMap<RuleId, OffsetDateTime> {
        let entries = || self.enabled_lists().flat_map(|list| list.entries.iter());
        if !entries().any(|entry| entry.expires_at.is_some()) {
            return BTreeMap::new();
        }
        let kept = self.kept_rules();
        let mut held: std::collections::HashMap<IpNet, usize> = std::collections::HashMap::new();
        for net in self
            .always_allow
            .iter()
            .map(|(net, _)| *net)
            .chain(entries().map(|entry| entry.cidr))
        {
            *held.entry(net).or_default() += 1;
        }
        let covered = |cidr: IpNet| {
            (0..=cidr.prefix_len()).any(|len| {
                let Ok(outer) = IpNet::new(cidr.addr(), len) else {
                    return false;
                };
                let times = held.get(&outer.trunc()).copied().unwrap_or(0);
                if len == cidr.prefix_len() {
                    times > 1
                } else {
                    times > 0
                }
            })
        };
        entries()
            .filter_map(|entry| Some((entry.rule, entry.expires_at?.time(), entry.cidr)))
            .filter(|(rule, _, cidr)| !kept.contains(rule) && !covered(*cidr))
            .map(|(rule, at, _)| (rule, at))
            .collect()
    }

    /// The prefixes in force that allow every source of their family (`0.0.0.0/0`, `::/0`).
    pub fn allow_all_prefixes(&self) -> BTreeSet<IpNet> {
        let lists = self.enabled_lists().flat_map(|list| list.entries.iter());
        self.always_allow
            .iter()
            .map(|(net, _)| *net)
            .chain(lists.map(|entry| entry.cidr))
            .filter(|net| net.prefix_len() == 0)
            .collect()
    }

    /// The entries of the enabled lists, in the order [`Model::effective_policy`] takes
    /// them: with the always-allow prefixes, all that policy depends on.
    pub fn enabled_entries(&self) -> impl Iterator<Item = &Arc<Vec<Entry>>> {
        self.enabled_lists().map(|list| &list.entries)
    }

    /// The enabled allowlists.
    pub(super) fn enabled_lists(&self) -> impl Iterator<Item = &Allowlist> {
        self.enabled.iter().filter_map(|id| self.allowlists.get(id))
    }

    /// The state a revert of the pending change would give (itself when nothing is pending):
    /// what the kernel falls back to on its own at the deadline.
    pub fn reverted(&self) -> Model {
        let mut reverted = self.clone();
        if let Some(pending) = self.window.pending() {
            reverted.revert_now(pending.revert_at);
        }
        reverted
    }

    /// Entries over all allowlists now.
    pub(super) fn total_entries(&self) -> usize {
        self.allowlists
            .values()
            .map(|list| list.entries.len())
            .sum()
    }

    /// Allowlists once the pending change is reverted: without those it created, with
    /// those it deleted.
    pub(super) fn lists_reverted(&self) -> usize {
        let Some(pending) = self.window.pending() else {
            return self.allowlists.len();
        };
        let restore = &pending.revert_to;
        let created = restore
            .created
            .iter()
            .filter(|id| self.allowlists.contains_key(*id))
            .count();
        let deleted = restore
            .lists
            .iter()
            .filter(|list| !self.allowlists.contains_key(&list.id))
            .count();
        self.allowlists.len() - created + deleted
    }

    /// Entries over all allowlists once the pending change is reverted.
    pub(super) fn total_entries_reverted(&self) -> usize {
        let Some(pending) = self.window.pending() else {
            return self.total_entries();
        };
        pending
            .revert_to
            .lists
            .iter()
            .fold(self.total_entries(), |total, restored| {
                let now = self
                    .allowlists
                    .get(&restored.id)
                    .map_or(0, |l| l.entries.len());
                total - now + restored.entries.len()
            })
    }
}

pub(super) fn not_found(id: &str) -> ModelError {
    ModelError::NotFound {
        what: "allowlist",
        id: id.to_owned(),
    }
}
