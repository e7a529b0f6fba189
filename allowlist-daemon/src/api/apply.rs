//! `POST /v1/apply`: the host's own lists converged to a policy file, as one change.

use std::net::IpAddr;

use axum::Json;
use axum::extract::{Extension, State};
use serde::Deserialize;
use serde_json::json;

use super::error::JsonBody;
use super::views::enforcement_view;
use super::{ApiError, AppState, operator, with_service};
use crate::model::DesiredList;
use crate::server::Peer;

/// A policy file as `allowlistctl apply` sends it.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyInput {
    allowlists: Vec<DesiredList>,
    /// Delete the host's own lists the file does not name.
    #[serde(default)]
    prune: bool,
    /// Say what would change; change nothing.
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    client_ip: Option<IpAddr>,
    #[serde(default)]
    force: bool,
}

pub(super) async fn apply(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    JsonBody(input): JsonBody<ApplyInput>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let operator = operator(input.client_ip, peer);
    with_service(&state, move |service| {
        let report = service.apply(
            input.allowlists,
            input.prune,
            input.dry_run,
            operator,
            input.force,
        )?;
        Ok(Json(json!({
            "changed": !report.is_empty(),
            "dry_run": input.dry_run,
            "report": report,
            "enforcement": enforcement_view(&service.snapshot()),
        })))
    })
    .await
}
