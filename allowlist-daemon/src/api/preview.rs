//! The routes of previews: start one (`POST`), read its report while it runs and after
//! (`GET`), end it (`DELETE`).

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;

use super::enforcement::parse_scopes;
use super::error::JsonBody;
use super::{ApiError, AppState, operator, with_service};

use crate::model::{AllowlistInput, DesiredList};
use crate::server::Peer;
use crate::service::{Candidate, MAX_PREVIEW_WINDOW, PreviewReport};

/// The window of a preview that names none.
const DEFAULT_WINDOW: Duration = Duration::from_secs(300);

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PreviewInput {
    /// Lists the candidate enables.
    #[serde(default)]
    enable: Vec<String>,
    /// Lists the candidate disables.
    #[serde(default)]
    disable: Vec<String>,
    /// The only ports the candidate protects (`tcp/22`; empty: every port).
    #[serde(default)]
    protect: Option<Vec<String>>,
    /// A list the candidate replaces, as `PUT /v1/allowlists/{id}` would.
    #[serde(default)]
    replace: Option<ReplaceInput>,
    /// A policy file the candidate applies, as `POST /v1/apply` would.
    #[serde(default)]
    apply: Option<ApplyInput>,
    /// How long it runs (`5m`, `90s`; at most a day).
    #[serde(default)]
    window: Option<String>,
    /// The operator's address, judged by the lockout guard.
    #[serde(default)]
    client_ip: Option<IpAddr>,
}

/// The `replace` of a preview.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ReplaceInput {
    /// The list's id.
    id: String,
    /// The body a `PUT` of it would send.
    list: AllowlistInput,
}

/// The `apply` of a preview.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ApplyInput {
    /// The lists the file declares.
    allowlists: Vec<DesiredList>,
    /// Delete the host's own lists it does not name.
    #[serde(default)]
    prune: bool,
}

/// The one change `input` names.
fn candidate(input: PreviewInput) -> Result<Candidate, ApiError> {
    let mut named = Vec::new();
    if !input.enable.is_empty() {
        named.push(Candidate::Enable(input.enable));
    }
    if !input.disable.is_empty() {
        named.push(Candidate::Disable(input.disable));
    }
    if let Some(protect) = input.protect {
        named.push(Candidate::Scopes(parse_scopes(&protect)?));
    }
    if let Some(ReplaceInput { id, list }) = input.replace {
        named.push(Candidate::Replace { id, list });
    }
    if let Some(ApplyInput { allowlists, prune }) = input.apply {
        named.push(Candidate::Apply { allowlists, prune });
    }
    match named.len() {
        1 => Ok(named.remove(0)),
        _ => Err(ApiError::invalid(
            "enable",
            "name one change: the lists it would enable, or disable, the ports it would \
             protect, the list it would replace, or the policy file it would apply",
        )),
    }
}

/// Starts a preview: 201 with its report (empty yet).
pub(super) async fn start_preview(
    State(state): State<AppState>,
    peer: Option<Extension<Peer>>,
    JsonBody(input): JsonBody<PreviewInput>,
) -> Result<(StatusCode, Json<PreviewReport>), ApiError> {
    let (window, client_ip) = (input.window.clone(), input.client_ip);
    let candidate = candidate(input)?;
    let window = match window.as_deref() {
        None => DEFAULT_WINDOW,
        Some(text) => humantime::parse_duration(text.trim())
            .map_err(|err| ApiError::invalid("window", format!("{text:?}: {err}")))?,
    };
    if window.is_zero() || window > MAX_PREVIEW_WINDOW {
        return Err(ApiError::invalid(
            "window",
            "a preview runs for more than nothing and at most 24h",
        ));
    }
    let operator = operator(client_ip, peer);
    with_service(&state, move |service| {
        let preview = service.start_preview(candidate, window, operator)?;
        Ok((StatusCode::CREATED, Json(preview.report())))
    })
    .await
}

/// The preview running or last run.
pub(super) async fn preview(
    State(state): State<AppState>,
) -> Result<Json<PreviewReport>, ApiError> {
    with_service(&state, |service| match service.preview() {
        Some(preview) => Ok(Json(preview.report())),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no preview has run since the daemon started",
        )),
    })
    .await
}

/// Ends the running preview; its report stays.
pub(super) async fn end_preview(
    State(state): State<AppState>,
) -> Result<Json<PreviewReport>, ApiError> {
    with_service(&state, |service| {
        service.end_preview("ended on request")?;
        match service.preview() {
            Some(preview) => Ok(Json(preview.report())),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no preview has run since the daemon started",
            )),
        }
    })
    .await
}
