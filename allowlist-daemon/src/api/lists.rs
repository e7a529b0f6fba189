//! The routes of allowlists and their entries. Reads are answered from the latest snapshot,
//! written as they are sent; writes go through the service, one at a time, and answer from
//! what they committed.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use ipnet::IpNet;
use serde::ser::{Error as _, SerializeStruct as _};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::json;
use time::OffsetDateTime;

use super::error::JsonBody;
use super::readings::count;
use super::stream::json_stream;
use super::views::{AllowlistsView, EntriesView, EntryView, allowlist_response, if_match};
use super::{ApiError, AppState, with_service, with_snapshot};
use crate::dataplane::RuleTable;
use crate::model::{AllowlistInput, EntriesInput, ModelError};
use crate::policy::parse_cidr;
use crate::service::Snapshot;

/// Entries in a page unless the request says otherwise.
const PAGE_DEFAULT: usize = 1000;
/// Most entries in a page.
const PAGE_MAX: usize = 10_000;

/// The query of `GET /v1/allowlists`.
#[derive(Deserialize)]
pub(super) struct ListsQuery {
    entries: Option<String>,
}

/// `GET /v1/allowlists[?entries=false]`: every list, with its entries unless `entries=false`
/// (then only their `entry_count`, for lists too large to read whole).
pub(super) async fn list_allowlists(
    State(state): State<AppState>,
    Query(query): Query<ListsQuery>,
) -> Result<Response, ApiError> {
    let with_entries = match query.entries.as_deref().map(str::trim) {
        None | Some("true") => true,
        Some("false") => false,
        Some(raw) => {
            return Err(ApiError::invalid(
                "entries",
                format!("entries {raw:?} is neither true nor false"),
            ));
        }
    };
    let snapshot = state.published.latest();
    Ok(json_stream(StatusCode::OK, None, move || AllowlistsView {
        snapshot,
        with_entries,
    }))
}

pub(super) async fn create_allowlist(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<AllowlistInput>,
) -> Result<Response, ApiError> {
    let list = with_service(&state, move |service| Ok(service.create(input)?)).await?;
    let snapshot = state.published.latest();
    Ok(allowlist_response(
        StatusCode::CREATED,
        snapshot,
        list,
        None,
    ))
}

/// `GET /v1/allowlists/{id}`: the list with every entry's hits and last hit.
pub(super) async fn get_allowlist(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (snapshot, list, table) = with_snapshot(&state, move |snapshot, usage| {
        let list = snapshot.model.allowlist(&id)?.clone();
        let (table, _) = usage.rules_and_flows(&snapshot)?;
        Ok((snapshot, list, table))
    })
    .await?;
    Ok(allowlist_response(
        StatusCode::OK,
        snapshot,
        list,
        Some(table),
    ))
}

/// The query of a page of entries.
#[derive(Deserialize)]
pub(super) struct PageQuery {
    limit: Option<String>,
    after: Option<String>,
}

/// `GET /v1/allowlists/{id}/entries?limit=N&after=CIDR`: at most `limit` entries, in prefix
/// order, after `after` (the `next` of the page before), with their hits and last hit. An
/// entry there from the first page to the last is in exactly one page, however the list
/// changes in between.
pub(super) async fn list_entries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<PageQuery>,
) -> Result<Response, ApiError> {
    let limit = count(query.limit.as_deref(), "limit", PAGE_DEFAULT, PAGE_MAX)?;
    let after: Option<IpNet> = query
        .after
        .as_deref()
        .map(|raw| {
            parse_cidr(raw).map_err(|err| {
                ApiError::from(ModelError::Cidr {
                    field: "after".into(),
                    source: err,
                })
            })
        })
        .transpose()?;
    let page = with_snapshot(&state, move |snapshot, usage| {
        let version = snapshot.model.allowlist(&id)?.version;
        let (table, _) = usage.rules_and_flows(&snapshot)?;
        Ok(Page {
            snapshot,
            id,
            version,
            table,
            after,
            limit,
            now: OffsetDateTime::now_utc(),
        })
    })
    .await?;
    Ok(json_stream(StatusCode::OK, Some(page.version), move || {
        page
    }))
}

/// A page of a list's entries, from one snapshot.
struct Page {
    snapshot: Arc<Snapshot>,
    id: String,
    version: u64,
    table: Arc<RuleTable>,
    after: Option<IpNet>,
    limit: usize,
    now: OffsetDateTime,
}

impl Serialize for Page {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let list = self
            .snapshot
            .model
            .allowlist(&self.id)
            .map_err(S::Error::custom)?;
        let start = self
            .after
            .map_or(0, |after| list.entries.partition_point(|e| e.cidr <= after));
        let end = (start + self.limit).min(list.entries.len());
        let entries = &list.entries[start..end];
        let next = (end < list.entries.len())
            .then(|| entries.last().map(|entry| entry.cidr))
            .flatten();
        let mut page = serializer.serialize_struct("Page", 5)?;
        page.serialize_field("allowlist_id", &list.id)?;
        page.serialize_field("version", &self.version)?;
        page.serialize_field("total", &list.entries.len())?;
        page.serialize_field(
            "entries",
            &EntriesView {
                entries,
                used: Some((&self.table, self.now)),
            },
        )?;
        page.serialize_field("next", &next)?;
        page.end()
    }
}

pub(super) async fn replace_allowlist(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(input): JsonBody<AllowlistInput>,
) -> Result<Response, ApiError> {
    let version = if_match(&headers)?;
    let list = with_service(&state, move |service| {
        Ok(service.replace(&id, input, version)?)
    })
    .await?;
    let snapshot = state.published.latest();
    Ok(allowlist_response(StatusCode::OK, snapshot, list, None))
}

pub(super) async fn delete_allowlist(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let version = if_match(&headers)?;
    with_service(&state, move |service| {
        service.delete(&id, version)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

pub(super) async fn add_entries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(input): JsonBody<EntriesInput>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    with_service(&state, move |service| {
        let added = service.add_entries(&id, input)?;
        let views: Vec<EntryView> = added.iter().map(EntryView::new).collect();
        Ok((StatusCode::CREATED, Json(json!({ "entries": views }))))
    })
    .await
}

pub(super) async fn remove_entry(
    State(state): State<AppState>,
    Path((id, entry_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let version = if_match(&headers)?;
    with_service(&state, move |service| {
        let entry_id = entry_id.parse().map_err(|_| ModelError::NotFound {
            what: "entry",
            id: entry_id.clone(),
        })?;
        service.remove_entry(&id, entry_id, version)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}
