//! The JSON shapes of lists, entries and the enforcement state, and the ETag of a list.

use axum::Json;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::json;

use super::ApiError;
use std::sync::Arc;

use crate::model::{Action, Allowlist, Entry, EntryId, FleetOrigin, Model, rfc3339};
use crate::service::Service;

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

#[derive(Serialize)]
pub(super) struct EntryView {
    pub(super) id: EntryId,
    pub(super) cidr: IpNet,
    #[serde(serialize_with = "text_or_empty")]
    pub(super) description: Option<Arc<str>>,
    /// Packets allowed (in `GET /v1/allowlists/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) hits: Option<u64>,
    /// When it last allowed one, RFC 3339, `null` if never (in `GET /v1/allowlists/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) last_hit: Option<Option<String>>,
}

/// A description as the API shows it: empty when there is none.
fn text_or_empty<S: serde::Serializer>(
    text: &Option<Arc<str>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(text.as_deref().unwrap_or(""))
}

impl From<&Entry> for EntryView {
    fn from(entry: &Entry) -> Self {
        EntryView {
            id: entry.id,
            cidr: entry.cidr,
            description: entry.description.clone(),
            hits: None,
            last_hit: None,
        }
    }
}

#[derive(Serialize)]
pub(super) struct AllowlistView {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) enabled: bool,
    pub(super) allow_all: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) fleet: Option<FleetOrigin>,
    pub(super) entries: Vec<EntryView>,
    pub(super) created_at: String,
    pub(super) updated_at: String,
    pub(super) version: u64,
}

pub(super) fn allowlist_view(model: &Model, list: &Allowlist) -> AllowlistView {
    AllowlistView {
        id: list.id.clone(),
        name: list.name.clone(),
        description: list.description.clone(),
        enabled: model.is_enabled(&list.id),
        allow_all: list.allow_all,
        fleet: list.fleet.clone(),
        entries: list.entries.iter().map(EntryView::from).collect(),
        created_at: rfc3339(list.created_at),
        updated_at: rfc3339(list.updated_at),
        version: list.version,
    }
}

/// One allowlist with its ETag.
pub(super) fn allowlist_response(status: StatusCode, model: &Model, list: &Allowlist) -> Response {
    with_etag(
        (status, Json(allowlist_view(model, list))).into_response(),
        list,
    )
}

/// Adds `list`'s version as the ETag.
pub(super) fn with_etag(mut response: Response, list: &Allowlist) -> Response {
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", list.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

#[derive(Serialize)]
pub(super) struct PendingView {
    action: Action,
    allowlist_ids: Vec<String>,
    applied_at: String,
    acknowledge_after: String,
    revert_at: String,
}

pub(super) fn enforcement_view(service: &Service) -> serde_json::Value {
    let model = service.model();
    json!({
        "enforcing": model.enforcing(),
        "allow_all": model.allow_all_prefixes(),
        "state_saved": service.unsaved().is_none(),
        "save_error": service.unsaved().map(|failure| json!({
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
