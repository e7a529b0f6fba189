//! The admin HTTP API: routes, authentication and the work of each handler off the async
//! workers; [`error`] has the error envelope, [`views`] the JSON shapes, then one file per
//! group of routes.

mod apply;
mod audit;
mod enforcement;
mod error;
mod fleet;
mod lists;
mod preview;
mod readings;
mod stream;
mod views;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Extension, MatchedPath, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde_json::json;
use tracing::Instrument as _;

use crate::auth::AdminToken;
use crate::fleet::FleetView;
use crate::metrics::RequestCounts;
use crate::server::Peer;
use crate::service::{
    Actor, Operator, Published, Service, Snapshot, Usage, append_to_trail, append_unauthenticated,
};
use crate::store::{AuditLog, AuditRecord};

pub use error::ApiError;

use apply::apply;
use audit::audit;
use enforcement::{acknowledge, disable, enable, enforcement, evaluate, set_scopes};
use fleet::{attach, detach, fleet};
use lists::{
    add_entries, create_allowlist, delete_allowlist, get_allowlist, list_allowlists, list_entries,
    remove_entry, replace_allowlist,
};
use readings::{metrics, openapi, stats, top};

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The service; one change at a time.
    pub service: Arc<Mutex<Service>>,
    /// The service's latest snapshot, which reads are answered from.
    pub published: Published,
    /// The counters, read without the service.
    pub usage: Arc<Usage>,
    /// Entries `GET /metrics` gives a series of their own.
    pub metrics_top_entries: usize,
    /// The admin token.
    pub token: Arc<AdminToken>,
    /// Requests served, by route and status, for `GET /metrics`.
    pub requests: Arc<Mutex<RequestCounts>>,
    /// The fleet follower's state, when the host follows a fleet.
    pub fleet: Option<Arc<Mutex<FleetView>>>,
    /// The audit trail, which refused requests are recorded in too.
    pub audit: Arc<Mutex<AuditLog>>,
}

tokio::task_local! {
    /// Who the request being served is from, for the audit trail of the changes it makes.
    static ACTOR: Actor;
}

/// The API's routes, with bodies of at most `max_body_bytes` that must arrive within
/// `body_timeout`.
pub fn router(state: AppState, max_body_bytes: usize, body_timeout: Duration) -> Router {
    let v1 = Router::new()
        .route("/allowlists", get(list_allowlists).post(create_allowlist))
        .route(
            "/allowlists/{id}",
            get(get_allowlist)
                .put(replace_allowlist)
                .delete(delete_allowlist),
        )
        .route(
            "/allowlists/{id}/entries",
            get(list_entries).post(add_entries),
        )
        .route("/allowlists/{id}/entries/{entry_id}", delete(remove_entry))
        .route("/enforcement", get(enforcement))
        .route("/enforcement/enable", post(enable))
        .route("/enforcement/disable", post(disable))
        .route("/enforcement/acknowledge", post(acknowledge))
        .route("/enforcement/scopes", put(set_scopes))
        .route(
            "/enforcement/preview",
            get(preview::preview)
                .post(preview::start_preview)
                .delete(preview::end_preview),
        )
        .route("/evaluate", get(evaluate))
        .route("/apply", post(apply))
        .route("/fleet", get(fleet))
        .route("/fleet/detach", post(detach))
        .route("/fleet/attach", post(attach))
        .route("/audit", get(audit))
        .route("/stats", get(stats))
        .route("/top", get(top))
        .route("/openapi.json", get(openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .method_not_allowed_fallback(method_not_allowed)
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .nest("/v1", v1)
        .merge(metrics)
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            audit_refusals,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .layer(middleware::from_fn(move |request, next| {
            read_body_within(body_timeout, max_body_bytes, request, next)
        }))
        .layer(middleware::from_fn(move |request, next| {
            refuse_declared_oversize(max_body_bytes, request, next)
        }))
        .with_state(state)
}

/// Reads the whole body before the request is handled, and answers 408 when it does not
/// arrive within `body_timeout`: a client that sends headers and then trickles (or never
/// sends) its body cannot hold a connection, nor the change it carries, for longer.
async fn read_body_within(
    body_timeout: Duration,
    max_body_bytes: usize,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    match tokio::time::timeout(body_timeout, axum::body::to_bytes(body, max_body_bytes)).await {
        Ok(Ok(bytes)) => {
            next.run(Request::from_parts(parts, Body::from(bytes)))
                .await
        }
        Ok(Err(err)) => {
            let too_large = std::error::Error::source(&err)
                .is_some_and(|cause| cause.is::<http_body_util::LengthLimitError>());
            if too_large {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "payload_too_large",
                    format!("the request's body is over the limit of {max_body_bytes} bytes (--max-body-bytes)"),
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "bad_body",
                    format!("reading the request's body: {err}"),
                )
            }
            .into_response()
        }
        Err(_) => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "request_timeout",
            format!(
                "the request's body did not arrive within {} (--request-timeout)",
                humantime::format_duration(body_timeout)
            ),
        )
        .into_response(),
    }
}

/// Answers 413 at once to a request whose `Content-Length` is over `max_body_bytes`,
/// before any of its body is read (a client, or a slow one, cannot make the daemon wait for
/// a body it would refuse).
async fn refuse_declared_oversize(max_body_bytes: usize, request: Request, next: Next) -> Response {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    match declared {
        Some(length) if length > max_body_bytes as u64 => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "the request declares a body of {length} bytes; the limit is {max_body_bytes} \
                 (--max-body-bytes)"
            ),
        )
        .into_response(),
        _ => next.run(request).await,
    }
}

/// The answer to a method a route does not take, in the error envelope (axum adds `Allow`).
async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "the route does not take this method (see Allow, and GET /v1/openapi.json)",
    )
}

/// Writes an audit line, naming the peer, and a record in the audit trail, for every
/// request refused as unauthenticated (401) or forbidden (403), and for every refused attempt
/// at a change (a 4xx to a method other than GET: a lockout the guard prevented, a change
/// pending, a bad body): who tried what is on record, not only what changed.
async fn audit_refusals(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let change =
        request.method() != axum::http::Method::GET && request.method() != axum::http::Method::HEAD;
    let known = request.extensions().get::<Peer>();
    let peer = known.map_or_else(|| "unknown".to_owned(), ToString::to_string);
    let origin = known.map_or_else(|| "unknown".to_owned(), Peer::origin);
    let what = request_line(&request);
    let response = next.run(request).await;
    let status = response.status();
    if !(status == StatusCode::UNAUTHORIZED
        || status == StatusCode::FORBIDDEN
        || (change && status.is_client_error()))
    {
        return response;
    }
    // The error's code and message, for the trail: error bodies are small.
    let (parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 << 10)
        .await
        .unwrap_or_default();
    let error: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    let reason = format!(
        "{}: {}",
        error["error"]["code"].as_str().unwrap_or("refused"),
        error["error"]["message"].as_str().unwrap_or_default()
    );
    let unauthenticated = status == StatusCode::UNAUTHORIZED;
    let actor = if unauthenticated {
        "unauthenticated"
    } else {
        state.token.name()
    };
    let record = AuditRecord {
        peer: Some(peer.clone()),
        request: Some(what.clone()),
        status: Some(status.as_u16()),
        reason: Some(reason.clone()),
        ..AuditRecord::event(actor, "refused", "refused".into())
    };
    let audit = state.audit.clone();
    // Anyone can cause a 401: counted per peer and minute rather than written each time.
    let written = tokio::task::spawn_blocking(move || match unauthenticated {
        true => append_unauthenticated(&audit, record, &origin),
        false => {
            append_to_trail(&audit, record);
            true
        }
    })
    .await;
    match written {
        Ok(true) => tracing::warn!(
            target: "audit",
            peer = %peer,
            request = %what,
            status = status.as_u16(),
            reason = %reason,
            "refused"
        ),
        Ok(false) => {}
        Err(err) => tracing::warn!(error = %err, "writing the audit trail"),
    }
    Response::from_parts(parts, Body::from(bytes))
}

/// `METHOD /path`, the path as the client sent it (routes under /v1 see it without the
/// prefix).
fn request_line(request: &Request) -> String {
    let path = request
        .extensions()
        .get::<axum::extract::OriginalUri>()
        .map_or_else(|| request.uri().path(), |uri| uri.0.path());
    format!("{} {path}", request.method())
}

/// The operator of a request that may start enforcement: the address its client names, and
/// the connection's own remote address.
fn operator(client_ip: Option<std::net::IpAddr>, peer: Option<Extension<Peer>>) -> Operator {
    Operator {
        client_ip,
        peer_ip: peer.and_then(|Extension(peer)| peer.remote_ip()),
    }
}

/// Counts each request by its route (the pattern, not the ids in it) and status.
async fn count_requests(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let mut requests = state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    *requests
        .entry((route, response.status().as_u16()))
        .or_default() += 1;
    response
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if state.token.accepts(authorization) {
        // Audit lines written while serving the request name the token.
        let line = request_line(&request);
        let span = tracing::info_span!("api", token = state.token.name(), request = %line);
        let peer = request.extensions().get::<Peer>();
        let actor = Actor {
            name: state.token.name().to_owned(),
            peer: peer.map(ToString::to_string),
            request: Some(line),
            remote_ip: peer.and_then(Peer::remote_ip),
        };
        ACTOR.scope(actor, next.run(request).instrument(span)).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        )
        .into_response()
    }
}

/// Runs `read` on the latest snapshot, off the async workers (it may read counters from the
/// kernel); it never waits for a change in progress.
async fn with_snapshot<T: Send + 'static>(
    state: &AppState,
    read: impl FnOnce(Arc<Snapshot>, &Usage) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let snapshot = state.published.latest();
    let usage = state.usage.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        read(snapshot, &usage)
    })
    .await?
}

/// Runs `operation` on the service off the async workers (it syncs files and writes maps).
async fn with_service<T: Send + 'static>(
    state: &AppState,
    operation: impl FnOnce(&mut Service) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = state.service.clone();
    let span = tracing::Span::current();
    let actor = ACTOR.try_with(Clone::clone).unwrap_or_default();
    tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        let mut service = service.lock().unwrap_or_else(PoisonError::into_inner);
        service.act_as(actor);
        let done = operation(&mut service);
        service.act_as(Actor::default());
        done
    })
    .await?
}
