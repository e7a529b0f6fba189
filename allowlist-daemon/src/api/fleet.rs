//! The host's side of its fleet: `GET /v1/fleet`, and detaching from it and attaching again.

use std::sync::PoisonError;

use axum::Json;
use axum::extract::State;
use serde_json::json;

use super::{ApiError, AppState, with_service};

/// `GET /v1/fleet`: whether the host follows a fleet, is connected, which release it is on
/// and where it stands.
pub(super) async fn fleet(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let view = state
        .fleet
        .as_ref()
        .map(|view| view.lock().unwrap_or_else(PoisonError::into_inner).clone());
    let detached = state.published.latest().model.fleet().detached;
    Ok(Json(match view {
        Some(view) => json!({ "following": true, "detached": detached, "fleet": view }),
        None => json!({ "following": false, "detached": detached }),
    }))
}

/// `POST /v1/fleet/detach`: the host stops following its fleet; the fleet's lists become
/// editable like its own, and stay in force.
pub(super) async fn detach(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_detached(state, true).await
}

/// `POST /v1/fleet/attach`: the host follows its fleet again; the next release replaces the
/// fleet's lists.
pub(super) async fn attach(
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    set_detached(state, false).await
}

async fn set_detached(
    state: AppState,
    detached: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    let drifted = with_service(&state, move |service| {
        Ok(service.set_fleet_detached(detached)?)
    })
    .await?;
    // What the host enforces (which detaching and attaching leave as it is).
    let enforcement = super::views::enforcement_view(&state.published.latest());
    Ok(Json(json!({
        "detached": detached,
        "drifted": drifted,
        "reapplied": !drifted.is_empty(),
        "enforcement": enforcement,
    })))
}
