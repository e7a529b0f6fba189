//! The JSON shapes of lists, entries and the enforcement state, serialized straight from the
//! model (no copy of the entries), and the ETag of a list.

use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde::ser::SerializeStruct as _;
use serde::{Serialize, Serializer};
use serde_json::json;
use time::OffsetDateTime;

use super::ApiError;
use super::stream::json_stream;
use crate::dataplane::{RuleTable, RuleUse};
use crate::model::{Action, Allowlist, Entry, Model, rfc3339};
use crate::policy::CidrText;
use crate::service::Snapshot;

/// The version named by an `If-Match` header; `*` and no header match any.
pub(super) fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or("").trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("If-Match {value:?} is not an ETag of this API"),
            )
        })
}

/// One entry as the API shows it; with its use when read with the list.
pub(super) struct EntryView<'a> {
    entry: &'a Entry,
    used: Option<(RuleUse, OffsetDateTime)>,
}

impl<'a> EntryView<'a> {
    /// `entry` alone.
    pub(super) fn new(entry: &'a Entry) -> Self {
        EntryView { entry, used: None }
    }

    /// `entry` with its hits and last hit from `table`, read at `now`.
    pub(super) fn with_use(entry: &'a Entry, table: &RuleTable, now: OffsetDateTime) -> Self {
        EntryView {
            entry,
            used: Some((table.get(entry.rule), now)),
        }
    }
}

impl Serialize for EntryView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let fields = if self.used.is_some() { 6 } else { 4 };
        let mut view = serializer.serialize_struct("Entry", fields)?;
        view.serialize_field("id", &self.entry.id)?;
        view.serialize_field("cidr", CidrText::new(&self.entry.cidr).as_str())?;
        // No description is an empty one.
        view.serialize_field("description", self.entry.description())?;
        view.serialize_field(
            "expires_at",
            &self.entry.expires_at.map(|at| rfc3339(at.time())),
        )?;
        if let Some((used, now)) = &self.used {
            view.serialize_field("hits", &used.hits)?;
            let last_hit = used.last_hit_ago.map(|ago| rfc3339(*now - ago));
            view.serialize_field("last_hit", &last_hit)?;
        }
        view.end()
    }
}

/// Entries as a JSON array, serialized one by one; with their use when a table is given.
pub(super) struct EntriesView<'a> {
    pub(super) entries: &'a [Entry],
    pub(super) used: Option<(&'a RuleTable, OffsetDateTime)>,
}

impl Serialize for EntriesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.entries.iter().map(|entry| match self.used {
            Some((table, now)) => EntryView::with_use(entry, table, now),
            None => EntryView::new(entry),
        }))
    }
}

/// One allowlist as the API shows it, its entries with their use when a table is given.
pub(super) struct AllowlistView<'a> {
    pub(super) list: &'a Allowlist,
    pub(super) enabled: bool,
    pub(super) used: Option<(&'a RuleTable, OffsetDateTime)>,
    /// Whether the entries are shown, or only their count.
    pub(super) with_entries: bool,
}

impl<'a> AllowlistView<'a> {
    /// `list` of `model`, its entries (if `with_entries`) without their use.
    pub(super) fn new(model: &Model, list: &'a Allowlist, with_entries: bool) -> Self {
        AllowlistView {
            list,
            enabled: model.is_enabled(&list.id),
            used: None,
            with_entries,
        }
    }
}

impl Serialize for AllowlistView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let list = self.list;
        let mut view = serializer.serialize_struct("Allowlist", 12)?;
        view.serialize_field("id", &list.id)?;
        view.serialize_field("name", &list.name)?;
        view.serialize_field("description", &list.description)?;
        view.serialize_field("enabled", &self.enabled)?;
        view.serialize_field("allow_all", &list.allow_all)?;
        if let Some(fleet) = &list.fleet {
            view.serialize_field("fleet", fleet)?;
        }
        if let Some(source) = &list.source {
            view.serialize_field(
                "source",
                &serde_json::json!({
                    "url": source.shown_url(),
                    "format": source.format,
                    "refresh": humantime::format_duration(
                        std::time::Duration::from_secs(source.refresh_seconds)
                    ).to_string(),
                    "acknowledged_entries": list.feed_baseline,
                }),
            )?;
        }
        view.serialize_field("entry_count", &list.entries.len())?;
        if self.with_entries {
            view.serialize_field(
                "entries",
                &EntriesView {
                    entries: &list.entries,
                    used: self.used,
                },
            )?;
        }
        view.serialize_field("created_at", &rfc3339(list.created_at))?;
        view.serialize_field("updated_at", &rfc3339(list.updated_at))?;
        view.serialize_field("version", &list.version)?;
        view.end()
    }
}

/// Every allowlist of a snapshot, as `GET /v1/allowlists` shows them.
pub(super) struct AllowlistsView {
    /// The snapshot.
    pub(super) snapshot: Arc<Snapshot>,
    /// Whether each list's entries are shown, or only their count.
    pub(super) with_entries: bool,
}

impl Serialize for AllowlistsView {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let model = &self.snapshot.model;
        let mut view = serializer.serialize_struct("Allowlists", 1)?;
        let lists: Vec<AllowlistView> = model
            .allowlists()
            .map(|list| AllowlistView::new(model, list, self.with_entries))
            .collect();
        view.serialize_field("allowlists", &lists)?;
        view.end()
    }
}

/// One allowlist, streamed, with its version as the ETag.
pub(super) fn allowlist_response(
    status: StatusCode,
    snapshot: Arc<Snapshot>,
    list: Allowlist,
    used: Option<Arc<RuleTable>>,
) -> Response {
    let version = list.version;
    json_stream(status, Some(version), move || {
        let now = OffsetDateTime::now_utc();
        Owned {
            enabled: snapshot.model.is_enabled(&list.id),
            list,
            used: used.map(|table| (table, now)),
        }
    })
}

/// An [`AllowlistView`] that owns what it shows, for a response written after the handler.
struct Owned {
    list: Allowlist,
    enabled: bool,
    used: Option<(Arc<RuleTable>, OffsetDateTime)>,
}

impl Serialize for Owned {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        AllowlistView {
            list: &self.list,
            enabled: self.enabled,
            used: self.used.as_ref().map(|(table, now)| (&**table, *now)),
            with_entries: true,
        }
        .serialize(serializer)
    }
}

#[derive(Serialize)]
pub(super) struct PendingView {
    action: Action,
    allowlist_ids: Vec<String>,
    applied_at: String,
    acknowledge_after: String,
    revert_at: String,
}

pub(super) fn enforcement_view(snapshot: &Snapshot) -> serde_json::Value {
    let model = &snapshot.model;
    json!({
        "enforcing": model.enforcing(),
        "allow_all": model.allow_all_prefixes(),
        "state_saved": snapshot.unsaved.is_none(),
        "save_error": snapshot.unsaved.as_ref().map(|failure| json!({
            "message": failure.cause,
            "since": rfc3339(failure.since),
            "attempts": failure.attempts,
        })),
        "enabled_allowlist_ids": model.enabled(),
        "always_allow": model.always_allow().iter().map(|(net, _)| net.to_string()).collect::<Vec<_>>(),
        "scopes": model.scopes(),
        "pending": model.pending().map(|pending| PendingView {
            action: pending.action,
            allowlist_ids: pending.allowlist_ids.clone(),
            applied_at: rfc3339(pending.applied_at),
            acknowledge_after: rfc3339(pending.acknowledge_after),
            revert_at: rfc3339(pending.revert_at),
        }),
    })
}
