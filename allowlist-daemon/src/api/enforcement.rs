//! The routes of enforcement: its state, enable, disable, scopes, acknowledge, evaluate.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Extension, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::json;

use super::error::JsonBody;
use super::views::enforcement_view;
use super::{ApiError, AppState, operator, with_service};
use crate::server::Peer;

pub(super) async fn enforcement(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(enforcement_view(&state.published.latest()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EnableInput {
    allowlist_ids: Vec<String>,
    #[serde(default)]
    client_ip: Option<IpAddr>,
    #[serde(default)]
    force: bool,
}

/// Enables lists; when the host starts enforcing, the answer names the addresses the
/// lockout guard checked (`lockout_guard.checked`), so the operator sees whom it protected.
pub(super) async fn enable(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    JsonBody(input): JsonBody<EnableInput>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let operator = operator(input.client_ip, peer);
    with_service(&state, move |service| {
        let checked = service.enable(&input.allowlist_ids, operator, input.force)?;
        let mut view = enforcement_view(&service.snapshot());
        if let Some(checked) = checked {
            view["lockout_guard"] = json!({ "checked": checked });
        }
        Ok((StatusCode::ACCEPTED, Json(view)))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DisableInput {
    allowlist_ids: Vec<String>,
}

pub(super) async fn disable(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<DisableInput>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    with_service(&state, move |service| {
        service.disable(&input.allowlist_ids)?;
        Ok((
            StatusCode::ACCEPTED,
            Json(enforcement_view(&service.snapshot())),
        ))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ScopesInput {
    protect: Vec<String>,
}

pub(super) async fn set_scopes(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<ScopesInput>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let scopes = parse_scopes(&input.protect)?;
    with_service(&state, move |service| {
        service.set_scopes(scopes)?;
        Ok((
            StatusCode::ACCEPTED,
            Json(enforcement_view(&service.snapshot())),
        ))
    })
    .await
}

/// The protected ports of a `protect` field (`tcp/22`, `udp/51820`).
pub(super) fn parse_scopes(
    protect: &[String],
) -> Result<std::collections::BTreeSet<crate::policy::PortScope>, ApiError> {
    let mut scopes = std::collections::BTreeSet::new();
    for (index, text) in protect.iter().enumerate() {
        let scope = text
            .parse()
            .map_err(|message: String| ApiError::invalid(format!("protect[{index}]"), message))?;
        scopes.insert(scope);
    }
    Ok(scopes)
}

pub(super) async fn acknowledge(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    with_service(&state, |service| {
        service.acknowledge()?;
        Ok(Json(enforcement_view(&service.snapshot())))
    })
    .await
}

#[derive(Deserialize)]
pub(super) struct EvaluateQuery {
    ip: Option<String>,
}

pub(super) async fn evaluate(
    State(state): State<AppState>,
    Query(query): Query<EvaluateQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad_ip = |message: String| ApiError::invalid("ip", message);
    let raw = query
        .ip
        .ok_or_else(|| bad_ip("give the address to evaluate as ?ip=ADDR".into()))?;
    let addr: IpAddr = raw
        .trim()
        .parse()
        .map_err(|_| bad_ip(format!("{raw:?} is not an IPv4 or IPv6 address")))?;
    let snapshot = state.published.latest();
    Ok(Json(json!(snapshot.model.evaluate(addr))))
}
