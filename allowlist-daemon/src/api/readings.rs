//! The routes that read counters: refused sources, stats, metrics; and the OpenAPI document.
//! None of them waits for a change in progress.

use std::sync::PoisonError;

use axum::Json;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState, OPENAPI, with_snapshot};

/// A number from 1 to `max` given as query parameter `field`; `default` when absent.
pub(super) fn count(
    raw: Option<&str>,
    field: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    let Some(raw) = raw else {
        return Ok(default);
    };
    raw.trim()
        .parse::<usize>()
        .ok()
        .filter(|n| (1..=max).contains(n))
        .ok_or_else(|| {
            ApiError::invalid(
                field,
                format!("{field} {raw:?} is not a number from 1 to {max}"),
            )
        })
}

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
    let window = match &query.window {
        None => std::time::Duration::from_secs(60),
        Some(raw) => humantime::parse_duration(raw.trim()).map_err(|err| {
            ApiError::invalid("window", format!("window {raw:?}: {err} (e.g. 60s, 5m)"))
        })?,
    };
    let limit = count(query.limit.as_deref(), "limit", 20, 4096)?;
    with_snapshot(&state, move |_, usage| {
        Ok(Json(json!(usage.top(window, limit)?)))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct StatsQuery {
    top: Option<String>,
}

/// `GET /v1/stats?top=100`: packet counters, hits per list, the `top` busiest entries.
pub(super) async fn stats(
    State(state): State<AppState>,
    Query(query): Query<StatsQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let top = count(query.top.as_deref(), "top", 100, 10_000)?;
    with_snapshot(&state, move |snapshot, usage| {
        Ok(Json(json!(usage.stats(&snapshot, top)?)))
    })
    .await
}

/// `GET /metrics`: the Prometheus text, bounded whatever the size of the lists.
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
    let top_entries = state.metrics_top_entries;
    let text = with_snapshot(&state, move |snapshot, usage| {
        Ok(crate::metrics::render(
            &snapshot,
            usage,
            top_entries,
            &requests,
            fleet.as_ref(),
        )?)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response())
}

pub(super) async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
