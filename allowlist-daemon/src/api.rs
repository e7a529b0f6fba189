//! The admin HTTP API: routes, authentication, JSON views and errors.

use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Path, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use ipnet::IpNet;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tracing::Instrument as _;

use crate::auth::AdminToken;
use crate::metrics::RequestCounts;
use crate::model::{
    Action, Allowlist, AllowlistInput, EntriesInput, Entry, Model, ModelError, rfc3339,
};
use crate::service::{Service, ServiceError};

/// The OpenAPI 3 description of this API.
pub const OPENAPI: &str = include_str!("openapi.json");

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    /// The service; one operation at a time.
    pub service: Arc<Mutex<Service>>,
    /// The admin token.
    pub token: Arc<AdminToken>,
    /// Requests served, by route and status, for `GET /metrics`.
    pub requests: Arc<Mutex<RequestCounts>>,
}

/// The API's routes.
pub fn router(state: AppState, max_body_bytes: usize) -> Router {
    let v1 = Router::new()
        .route("/allowlists", get(list_allowlists).post(create_allowlist))
        .route(
            "/allowlists/{id}",
            get(get_allowlist)
                .put(replace_allowlist)
                .delete(delete_allowlist),
        )
        .route("/allowlists/{id}/entries", post(add_entries))
        .route("/allowlists/{id}/entries/{entry_id}", delete(remove_entry))
        .route("/enforcement", get(enforcement))
        .route("/enforcement/enable", post(enable))
        .route("/enforcement/disable", post(disable))
        .route("/enforcement/acknowledge", post(acknowledge))
        .route("/enforcement/scopes", put(set_scopes))
        .route("/evaluate", get(evaluate))
        .route("/stats", get(stats))
        .route("/top", get(top))
        .route("/openapi.json", get(openapi))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    let metrics = Router::new()
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(state.clone(), authenticate));
    Router::new()
        .route("/healthz", get(|| async { Json(json!({"status": "ok"})) }))
        .nest("/v1", v1)
        .merge(metrics)
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route") })
        .layer(middleware::from_fn_with_state(
            state.clone(),
            count_requests,
        ))
        .layer(DefaultBodyLimit::max(max_body_bytes))
        .with_state(state)
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

/// An error response: `{"error": {"code", "message", "field"?, ...}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after_seconds: Option<u64>,
    addresses: Option<Vec<IpAddr>>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_seconds: None,
            addresses: None,
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Refused(refusal) => refusal.into(),
            other => {
                let mut message = other.to_string();
                let mut source = std::error::Error::source(&other);
                while let Some(cause) = source {
                    message.push_str(&format!(": {cause}"));
                    source = cause.source();
                }
                tracing::error!(error = %message, "request failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal_error", message)
            }
        }
    }
}

impl From<ModelError> for ApiError {
    fn from(err: ModelError) -> Self {
        let status = match err {
            ModelError::InvalidRequest { .. } | ModelError::Cidr { .. } => StatusCode::BAD_REQUEST,
            ModelError::NotFound { .. } => StatusCode::NOT_FOUND,
            ModelError::VersionMismatch { .. } => StatusCode::PRECONDITION_FAILED,
            ModelError::LimitExceeded { .. }
            | ModelError::EmptyPolicy
            | ModelError::AllowAllRequired { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::CONFLICT,
        };
        ApiError {
            status,
            code: err.code(),
            message: err.to_string(),
            field: err.field().map(str::to_owned),
            retry_after_seconds: match &err {
                ModelError::TooEarly {
                    retry_after_seconds,
                    ..
                } => Some(*retry_after_seconds),
                _ => None,
            },
            addresses: match err {
                ModelError::WouldLockOut { addresses } => Some(addresses),
                _ => None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        if let Some(field) = self.field {
            error["field"] = json!(field);
        }
        if let Some(seconds) = self.retry_after_seconds {
            error["retry_after_seconds"] = json!(seconds);
        }
        if let Some(addresses) = self.addresses {
            error["addresses"] = json!(addresses);
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(seconds) = self.retry_after_seconds {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON body whose rejections are API errors: 413 when too large, 400 otherwise.
struct JsonBody<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(JsonBody(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the limit (--max-body-bytes)",
        )
    } else {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            rejection.body_text(),
        )
    }
}

async fn authenticate(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let authorization = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok());
    if state.token.accepts(authorization) {
        // Audit lines written while serving the request name the token.
        let span = tracing::info_span!(
            "api",
            token = state.token.name(),
            request = %format_args!("{} {}", request.method(), request.uri().path()),
        );
        next.run(request).instrument(span).await
    } else {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong bearer token (Authorization: Bearer <token>)",
        )
        .into_response()
    }
}

/// Runs `operation` on the service off the async workers (it syncs files and writes maps).
async fn with_service<T: Send + 'static>(
    state: &AppState,
    operation: impl FnOnce(&mut Service) -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    let service = state.service.clone();
    let span = tracing::Span::current();
    tokio::task::spawn_blocking(move || {
        let _span = span.enter();
        let mut service = service.lock().unwrap_or_else(PoisonError::into_inner);
        operation(&mut service)
    })
    .await
    .map_err(|err| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            err.to_string(),
        )
    })?
}

/// The version named by an `If-Match` header; `*` and no header match any.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let value = value.to_str().unwrap_or("").trim();
    if value == "*" {
        return Ok(None);
    }
    value
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .map(Some)
        .map_err(|_| {
            ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "precondition_failed",
                format!("If-Match {value:?} is not an ETag of this API"),
            )
        })
}

#[derive(Serialize)]
struct EntryView {
    id: String,
    cidr: IpNet,
    description: String,
    /// Packets allowed (in `GET /v1/allowlists/{id}` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    hits: Option<u64>,
    /// When it last allowed one, RFC 3339, `null` if never (in `GET /v1/allowlists/{id}`).
    #[serde(skip_serializing_if = "Option::is_none")]
    last_hit: Option<Option<String>>,
}

impl From<&Entry> for EntryView {
    fn from(entry: &Entry) -> Self {
        EntryView {
            id: entry.id.clone(),
            cidr: entry.cidr,
            description: entry.description.clone(),
            hits: None,
            last_hit: None,
        }
    }
}

#[derive(Serialize)]
struct AllowlistView {
    id: String,
    name: String,
    description: String,
    enabled: bool,
    allow_all: bool,
    entries: Vec<EntryView>,
    created_at: String,
    updated_at: String,
    version: u64,
}

fn allowlist_view(model: &Model, list: &Allowlist) -> AllowlistView {
    AllowlistView {
        id: list.id.clone(),
        name: list.name.clone(),
        description: list.description.clone(),
        enabled: model.is_enabled(&list.id),
        allow_all: list.allow_all,
        entries: list.entries.iter().map(EntryView::from).collect(),
        created_at: rfc3339(list.created_at),
        updated_at: rfc3339(list.updated_at),
        version: list.version,
    }
}

/// One allowlist with its ETag.
fn allowlist_response(status: StatusCode, model: &Model, list: &Allowlist) -> Response {
    with_etag(
        (status, Json(allowlist_view(model, list))).into_response(),
        list,
    )
}

/// Adds `list`'s version as the ETag.
fn with_etag(mut response: Response, list: &Allowlist) -> Response {
    if let Ok(etag) = HeaderValue::from_str(&format!("\"{}\"", list.version)) {
        response.headers_mut().insert(header::ETAG, etag);
    }
    response
}

#[derive(Serialize)]
struct PendingView {
    action: Action,
    allowlist_ids: Vec<String>,
    applied_at: String,
    acknowledge_after: String,
    revert_at: String,
}

fn enforcement_view(service: &Service) -> serde_json::Value {
    let model = service.model();
    json!({
        "enforcing": model.enforcing(),
        "allow_all": model.allow_all_prefixes(),
        "state_saved": service.unsaved().is_none(),
        "save_error": service.unsaved().map(|failure| json!({
            "message": failure.cause,
            "since": rfc3339(failure.since),
            "attempts": failure.attempts,
        })),
        "enabled_allowlist_ids": model.enabled(),
        "always_allow": model.always_allow().iter().map(|(net, _)| net.to_string()).collect::<Vec<_>>(),
        "scopes": model.scopes(),
        "pending": model.pending().map(|pending| PendingView {
            action: pending.action,
            allowlist_ids: pending.allowlist_ids.clone(),
            applied_at: rfc3339(pending.applied_at),
            acknowledge_after: rfc3339(pending.acknowledge_after),
            revert_at: rfc3339(pending.revert_at),
        }),
    })
}

async fn list_allowlists(
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

async fn create_allowlist(
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

async fn get_allowlist(
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

async fn replace_allowlist(
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

async fn delete_allowlist(
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

async fn add_entries(
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

async fn remove_entry(
    State(state): State<AppState>,
    Path((id, entry_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let version = if_match(&headers)?;
    with_service(&state, move |service| {
        service.remove_entry(&id, &entry_id, version)?;
        Ok(StatusCode::NO_CONTENT)
    })
    .await
}

async fn enforcement(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    with_service(&state, |service| Ok(Json(enforcement_view(service)))).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableInput {
    allowlist_ids: Vec<String>,
    #[serde(default)]
    client_ip: Option<IpAddr>,
    #[serde(default)]
    force: bool,
}

async fn enable(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<EnableInput>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    with_service(&state, move |service| {
        service.enable(&input.allowlist_ids, input.client_ip, input.force)?;
        Ok((StatusCode::ACCEPTED, Json(enforcement_view(service))))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DisableInput {
    allowlist_ids: Vec<String>,
}

async fn disable(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<DisableInput>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    with_service(&state, move |service| {
        service.disable(&input.allowlist_ids)?;
        Ok((StatusCode::ACCEPTED, Json(enforcement_view(service))))
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopesInput {
    protect: Vec<String>,
}

async fn set_scopes(
    State(state): State<AppState>,
    JsonBody(input): JsonBody<ScopesInput>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let mut scopes = std::collections::BTreeSet::new();
    for (index, text) in input.protect.iter().enumerate() {
        let scope = text.parse().map_err(|message: String| ApiError {
            field: Some(format!("protect[{index}]")),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        })?;
        scopes.insert(scope);
    }
    with_service(&state, move |service| {
        service.set_scopes(scopes)?;
        Ok((StatusCode::ACCEPTED, Json(enforcement_view(service))))
    })
    .await
}

async fn acknowledge(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    with_service(&state, |service| {
        service.acknowledge()?;
        Ok(Json(enforcement_view(service)))
    })
    .await
}

#[derive(Deserialize)]
struct EvaluateQuery {
    ip: Option<String>,
}

async fn evaluate(
    State(state): State<AppState>,
    Query(query): Query<EvaluateQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad_ip = |message: String| ApiError {
        field: Some("ip".into()),
        ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    };
    let raw = query
        .ip
        .ok_or_else(|| bad_ip("give the address to evaluate as ?ip=ADDR".into()))?;
    let addr: IpAddr = raw
        .trim()
        .parse()
        .map_err(|_| bad_ip(format!("{raw:?} is not an IPv4 or IPv6 address")))?;
    with_service(&state, move |service| {
        Ok(Json(json!(service.model().evaluate(addr))))
    })
    .await
}

#[derive(Deserialize)]
struct TopQuery {
    window: Option<String>,
    limit: Option<String>,
}

/// `GET /v1/top?window=60s&limit=20`: the sources refused most often lately.
async fn top(
    State(state): State<AppState>,
    Query(query): Query<TopQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let bad = |field: &str, message: String| ApiError {
        field: Some(field.into()),
        ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    };
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

async fn stats(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    with_service(&state, |service| Ok(Json(json!(service.stats()?)))).await
}

async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let requests = state
        .requests
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let text = with_service(&state, move |service| {
        Ok(crate::metrics::render(service, &requests)?)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI).into_response()
}
