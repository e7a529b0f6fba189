//! The routes of allowlists and their entries.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::JsonBody;
use super::views::{
    AllowlistView, EntryView, allowlist_response, allowlist_view, if_match, with_etag,
};
use super::{ApiError, AppState, with_service};
use crate::model::{AllowlistInput, EntriesInput, ModelError, rfc3339};

pub(super) async fn list_allowlists(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    with_service(&state, |service| {
        let model = service.model();
        let lists: Vec<AllowlistView> = model
            .allowlists()
            .map(|list| allowlist_view(model, list))
            .collect();
        Ok(Json(json!({ "allowlists": lists })))
    })
    .await
}

pub(super) async fn create_allowlist(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<AllowlistInput>,
) -> Result<Response, ApiError> {
    with_service(&state, move |service| {
        let list = service.create(input)?;
        Ok(allowlist_response(
            StatusCode::CREATED,
            service.model(),
            &list,
        ))
    })
    .await
}

pub(super) async fn get_allowlist(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    with_service(&state, move |service| {
        let usage = service.entry_use(&id)?;
        let model = service.model();
        let list = model.allowlist(&id)?;
        let mut view = allowlist_view(model, list);
        for (entry, used) in view.entries.iter_mut().zip(usage) {
            entry.hits = Some(used.hits);
            entry.last_hit = Some(used.last_hit.map(rfc3339));
        }
        Ok(with_etag(
            (StatusCode::OK, Json(view)).into_response(),
            list,
        ))
    })
    .await
}

pub(super) async fn replace_allowlist(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    JsonBody(input): JsonBody<AllowlistInput>,
) -> Result<Response, ApiError> {
    let version = if_match(&headers)?;
    with_service(&state, move |service| {
        let list = service.replace(&id, input, version)?;
        Ok(allowlist_response(StatusCode::OK, service.model(), &list))
    })
    .await
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
        let views: Vec<EntryView> = added.iter().map(EntryView::from).collect();
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
