//! `GET /v1/audit`: the audit trail, newest first, a page at a time.

use std::sync::PoisonError;

use axum::Json;
use axum::extract::{Query, State};
use serde::Deserialize;
use serde_json::json;

use super::{ApiError, AppState};

/// Records in a page unless `limit` says otherwise, and at most.
const DEFAULT_LIMIT: usize = 100;
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Records in the page.
    limit: Option<usize>,
    /// Only records older than this id: the `next` of the page before.
    after: Option<u64>,
}

/// The newest records (older than `after`), and the cursor of the next page.
pub(super) async fn audit(
    State(state): State<AppState>,
    Query(query): Query<AuditQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::invalid(
            "limit",
            format!("limit {limit} is out of range: give 1 to {MAX_LIMIT}"),
        ));
    }
    let audit = state.audit.clone();
    let records = tokio::task::spawn_blocking(move || {
        audit
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .newest(limit, query.after)
    })
    .await?
    .map_err(|err| ApiError::internal("reading the audit trail", &crate::error_chain(&err)))?;
    let next = (records.len() == limit)
        .then(|| records.last().map(|record| record.id))
        .flatten();
    Ok(Json(json!({ "records": records, "next": next })))
}
