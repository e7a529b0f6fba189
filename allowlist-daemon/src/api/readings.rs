//! The routes that read: refused sources, stats, metrics and the OpenAPI document.

use std::sync::PoisonError;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, OPENAPI, with_service};

#[derive(Deserialize)]
pub(super) struct TopQuery {
    window: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/top?window=60s&limit=20`: the sources refused most often lately.
pub(super) async fn top(
    State(state): State<AppState>,
    Query(query): Query<TopQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = |field: &str, message: String| ApiError::invalid(field, message);
    let window = match &query.window {
        None => std::time::Duration::from_secs(60),
        Some(raw) => humantime::parse_duration(raw.trim())
            .map_err(|err| bad("window", format!("window {raw:?}: {err} (e.g. 60s, 5m)")))?,
    };
    let limit = match &query.limit {
        None => 20,
        Some(raw) => raw
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=4096).contains(n))
            .ok_or_else(|| {
                bad(
                    "limit",
                    format!("limit {raw:?} is not a number from 1 to 4096"),
                )
            })?,
    };
    with_service(&state, move |service| {
        Ok(Json(json!(service.top(window, limit)?)))
    })
    .await
}

pub(super) async fn stats(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    with_service(&state, |service| Ok(Json(json!(service.stats()?)))).await
}

pub(super) async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let requests = state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let fleet = state
        .fleet
        .as_ref()
        .map(|view| view.lock().unwrap_or_else(PoisonError::into_inner).clone());
    let text = with_service(&state, move |service| {
        Ok(crate::metrics::render(service, &requests, fleet.as_ref())?)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
