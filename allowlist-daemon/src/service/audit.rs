//! The audit trail the service keeps: who changed what, with the lists and entries
//! concerned and what the host enforced before and after, appended to the state directory's
//! trail (see [`crate::store::AuditLog`]) as each change is made, acknowledged, reverted or
//! expires.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, PoisonError};

use crate::model::{Allowlist, Model};
use crate::store::{AuditLog, AuditRecord, ListChanges};

/// Who asks for a change: the token's name, and for a request, its peer and its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Actor {
    /// The token's name; `allowlistd` for what the daemon does by itself.
    pub name: String,
    /// Where the request came from.
    pub peer: Option<String>,
    /// `METHOD /path`.
    pub request: Option<String>,
    /// The address of a remote operator (a TCP peer beyond loopback).
    pub remote_ip: Option<std::net::IpAddr>,
}

impl Default for Actor {
    /// The daemon itself (a revert at the deadline, an expiry, a fleet release).
    fn default() -> Self {
        Actor {
            name: "allowlistd".into(),
            peer: None,
            request: None,
            remote_ip: None,
        }
    }
}

/// What became of a change, as the trail says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Made (and, if it narrows, pending).
    Applied,
    /// The pending change acknowledged.
    Acknowledged,
    /// The pending change reverted at its deadline.
    Reverted,
    /// Entries removed at their expiry.
    Expired,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Acknowledged => "acknowledged",
            Outcome::Reverted => "reverted",
            Outcome::Expired => "expired",
        }
    }
}

/// The trail the service appends to, and who the changes being made are recorded for.
pub(super) struct AuditTrail {
    log: Arc<Mutex<AuditLog>>,
    actor: Actor,
}

impl AuditTrail {
    /// Records in `log`, for the daemon until [`AuditTrail::act_as`] names someone.
    pub(super) fn new(log: AuditLog) -> Self {
        AuditTrail {
            log: Arc::new(Mutex::new(log)),
            actor: Actor::default(),
        }
    }

    /// Makes `actor` the one the next changes are recorded for.
    pub(super) fn act_as(&mut self, actor: Actor) {
        self.actor = actor;
    }

    /// The trail, shared with the API (which records refusals and reads it).
    pub(super) fn log(&self) -> Arc<Mutex<AuditLog>> {
        self.log.clone()
    }

    /// Records a change from `previous` to `current`, by the actor of the request being
    /// served: an audit line in the log and a record in the trail (a trail that cannot be
    /// written is logged, never a reason to undo the change).
    pub(super) fn record(
        &self,
        outcome: Outcome,
        action: String,
        (previous, current): (&Model, &Model),
        before: String,
        after: String,
    ) {
        tracing::info!(target: "audit", before = %before, after = %after, "{action}");
        let record = AuditRecord {
            peer: self.actor.peer.clone(),
            request: self.actor.request.clone(),
            allowlists: changes(previous, current),
            before: Some(before),
            after: Some(after),
            ..AuditRecord::event(&self.actor.name, outcome.as_str(), action)
        };
        self.append(record);
    }

    /// [`AuditTrail::record`] for what the daemon does by itself (a revert at the deadline,
    /// an expiry), whoever's request it happens during.
    pub(super) fn record_by_daemon(
        &mut self,
        outcome: Outcome,
        action: String,
        models: (&Model, &Model),
        before: String,
        after: String,
    ) {
        let actor = std::mem::take(&mut self.actor);
        self.record(outcome, action, models, before, after);
        self.actor = actor;
    }

    /// Appends `record` to the trail; a trail that cannot be written is logged.
    pub(super) fn append(&self, record: AuditRecord) {
        append_to_trail(&self.log, record);
    }
}

/// Appends `record` to `trail`; a trail that cannot be written is logged, never a reason to
/// fail what it records.
pub fn append_to_trail(trail: &Mutex<AuditLog>, record: AuditRecord) {
    let appended = trail
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .append(record);
    if let Err(err) = appended {
        tracing::warn!(error = %crate::error_chain(&err), "writing the audit trail");
    }
}

/// Counts `record`, a request refused as unauthenticated from `origin`, in `trail` (see
/// [`AuditLog::append_unauthenticated`]); returns whether it was recorded whole. A trail that
/// cannot be written is logged.
pub fn append_unauthenticated(trail: &Mutex<AuditLog>, record: AuditRecord, origin: &str) -> bool {
    trail
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .append_unauthenticated(record, origin)
        .unwrap_or_else(|err| {
            tracing::warn!(error = %crate::error_chain(&err), "writing the audit trail");
            false
        })
}

/// Writes the summaries of unauthenticated refusals whose minute is over, logging each.
pub fn flush_refusal_summaries(trail: &Mutex<AuditLog>) {
    let flushed = trail
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .flush_summaries();
    match flushed {
        Ok(summaries) => {
            for summary in summaries {
                tracing::warn!(
                    target: "audit",
                    peer = summary.peer.as_deref().unwrap_or_default(),
                    count = summary.count.unwrap_or_default(),
                    "{}",
                    summary.action
                );
            }
        }
        Err(err) => tracing::warn!(error = %crate::error_chain(&err), "writing the audit trail"),
    }
}

/// How the lists differ from `before` to `after`.
fn changes(before: &Model, after: &Model) -> Vec<ListChanges> {
    let ids: BTreeSet<&str> = before
        .allowlists()
        .chain(after.allowlists())
        .map(|list| list.id.as_str())
        .collect();
    ids.into_iter()
        .filter_map(|id| {
            let old = before.allowlist(id).ok();
            let new = after.allowlist(id).ok();
            let was_enabled = before.is_enabled(id);
            let is_enabled = after.is_enabled(id);
            let change = match (old, new) {
                (None, Some(_)) => "created",
                (Some(_), None) => "deleted",
                _ if is_enabled && !was_enabled => "enabled",
                _ if was_enabled && !is_enabled => "disabled",
                (Some(old), Some(new)) if !Arc::ptr_eq(&old.entries, &new.entries) => "changed",
                _ => return None,
            };
            let ((added_count, added), (removed_count, removed)) = entry_changes(old, new);
            let list = new.or(old)?;
            if change == "changed" && added_count == 0 && removed_count == 0 {
                return None;
            }
            Some(ListChanges {
                id: id.to_owned(),
                name: list.name.clone(),
                change: change.into(),
                added_count,
                removed_count,
                added,
                removed,
            })
        })
        .collect()
}

/// The prefixes `new` has and `old` has not, and those `old` has and `new` has not, each
/// as (count, the first [`ListChanges::SHOWN`]): one walk of the two sorted entry lists,
/// no copy of them (a list may hold a million entries).
fn entry_changes(
    old: Option<&Allowlist>,
    new: Option<&Allowlist>,
) -> ((usize, Vec<String>), (usize, Vec<String>)) {
    let mut added = (0, Vec::new());
    let mut removed = (0, Vec::new());
    if let (Some(old), Some(new)) = (old, new)
        && Arc::ptr_eq(&old.entries, &new.entries)
    {
        return (added, removed);
    }
    let note = |side: &mut (usize, Vec<String>), cidr: &ipnet::IpNet| {
        side.0 += 1;
        if side.1.len() < ListChanges::SHOWN {
            side.1.push(cidr.to_string());
        }
    };
    let (mut old, mut new) = (
        entries_of(old).iter().peekable(),
        entries_of(new).iter().peekable(),
    );
    loop {
        match (old.peek(), new.peek()) {
            (Some(before), Some(after)) if before.cidr == after.cidr => {
                old.next();
                new.next();
            }
            (Some(before), Some(after)) if before.cidr < after.cidr => {
                note(&mut removed, &before.cidr);
                old.next();
            }
            (_, Some(after)) => {
                note(&mut added, &after.cidr);
                new.next();
            }
            (Some(before), None) => {
                note(&mut removed, &before.cidr);
                old.next();
            }
            (None, None) => return (added, removed),
        }
    }
}

/// The entries of `list`, none without one.
fn entries_of(list: Option<&Allowlist>) -> &[crate::model::Entry] {
    list.map_or(&[][..], |list| list.entries.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_daemon_does_is_recorded_as_the_daemon_s() {
        let dir =
            std::env::temp_dir().join(format!("allowlist-audit-trail-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a directory for the trail");
        let mut trail = AuditTrail::new(AuditLog::open(&dir, 1 << 20).expect("a trail"));
        trail.act_as(Actor {
            name: "alice".into(),
            peer: Some("192.0.2.1:40000".into()),
            request: Some("PUT /v1/allowlists/al_1".into()),
            remote_ip: None,
        });
        let model = Model::default();
        let models = (&model, &model);
        trail.record(
            Outcome::Applied,
            "made".into(),
            models,
            "a".into(),
            "b".into(),
        );
        trail.record_by_daemon(
            Outcome::Reverted,
            "undone".into(),
            models,
            "b".into(),
            "a".into(),
        );
        trail.record(
            Outcome::Acknowledged,
            "kept".into(),
            models,
            "a".into(),
            "a".into(),
        );
        let records = trail
            .log()
            .lock()
            .expect("the trail")
            .newest(3, None)
            .expect("read");
        let seen: Vec<(&str, &str, Option<&str>)> = records
            .iter()
            .rev()
            .map(|r| (r.actor.as_str(), r.outcome.as_str(), r.peer.as_deref()))
            .collect();
        assert_eq!(
            seen,
            [
                ("alice", "applied", Some("192.0.2.1:40000")),
                ("allowlistd", "reverted", None),
                ("alice", "acknowledged", Some("192.0.2.1:40000")),
            ]
        );
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
