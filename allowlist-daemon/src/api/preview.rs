//! The routes of previews: start one (`POST`), read its report while it runs and after
//! (`GET`), end it (`DELETE`).

use std::net::IpAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::enforcement::parse_scopes;
use super::error::JsonBody;
use super::{ApiError, AppState, operator, with_service};
use crate::dataplane::{PreviewSource, Would};
use crate::model::{AllowlistInput, DesiredList, rfc3339};
use crate::server::Peer;
use crate::service::{Candidate, MAX_PREVIEW_WINDOW, Preview};

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
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
        Ok((StatusCode::CREATED, Json(preview_view(&preview))))
    })
    .await
}

/// The preview running or last run.
pub(super) async fn preview(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    with_service(&state, |service| match service.preview() {
        Some(preview) => Ok(Json(preview_view(&preview))),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no preview has run since the daemon started",
        )),
    })
    .await
}

/// Ends the running preview; its report stays.
pub(super) async fn end_preview(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    with_service(&state, |service| {
        service.end_preview("ended on request")?;
        match service.preview() {
            Some(preview) => Ok(Json(preview_view(&preview))),
            None => Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no preview has run since the daemon started",
            )),
        }
    })
    .await
}

/// A preview as the API shows it.
fn preview_view(preview: &Preview) -> Value {
    let candidate = match preview.candidate.as_ref() {
        Candidate::Enable(ids) => json!({ "enable": ids }),
        Candidate::Disable(ids) => json!({ "disable": ids }),
        Candidate::Scopes(scopes) => {
            let protect: Vec<String> = scopes.iter().map(ToString::to_string).collect();
            json!({ "protect": protect })
        }
        Candidate::Replace { id, list } => json!({
            "replace": { "id": id, "entries": list.entries.as_ref().map_or(0, Vec::len) },
        }),
        Candidate::Apply { allowlists, prune } => {
            let names: Vec<&str> = allowlists.iter().map(|list| list.name.as_str()).collect();
            json!({ "apply": { "allowlists": names, "prune": prune } })
        }
    };
    let side = |would: Would| {
        let sources: Vec<Value> = preview.sources(would).map(source_view).collect();
        let packets: u64 = preview.sources(would).map(|s| s.packets).sum();
        json!({ "packets": packets, "sources": sources })
    };
    json!({
        "state": if preview.ended.is_some() { "ended" } else { "running" },
        "candidate": candidate,
        "started_at": rfc3339(preview.started_at),
        "ends_at": rfc3339(preview.ends_at),
        "ended_at": preview.ended.map(|(at, _)| rfc3339(at)),
        "ended_because": preview.ended.map(|(_, why)| why),
        "would_cut": preview.would_cut,
        "would_drop": side(Would::Drop),
        "would_pass": side(Would::Pass),
    })
}

/// One source of a report.
fn source_view(source: &PreviewSource) -> Value {
    let ports: Vec<Value> = source
        .ports
        .iter()
        .map(|(protocol, port, packets)| {
            json!({ "protocol": protocol_name(*protocol), "port": port, "packets": packets })
        })
        .collect();
    json!({
        "address": source.address,
        "packets": source.packets,
        "bytes": source.bytes,
        "last_seen_seconds_ago": source.last_seen_ago.as_secs(),
        "ports": ports,
    })
}

/// A protocol's usual name, else its number.
fn protocol_name(protocol: u8) -> String {
    match protocol {
        1 => "icmp".to_owned(),
        6 => "tcp".to_owned(),
        17 => "udp".to_owned(),
        58 => "icmpv6".to_owned(),
        other => other.to_string(),
    }
}
