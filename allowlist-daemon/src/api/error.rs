//! The error envelope every refusal uses: `{"error": {"code", "message", ...}}`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde_json::json;

use crate::model::ModelError;
use crate::service::ServiceError;

/// An error response: `{"error": {"code", "message", "field"?, ...}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    field: Option<String>,
    retry_after_seconds: Option<u64>,
    addresses: Option<Box<[IpAddr]>>,
    error_id: Option<Box<str>>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
            field: None,
            retry_after_seconds: None,
            addresses: None,
            error_id: None,
        }
    }

    /// A 500 for a failure of the daemon itself while doing `what`: its cause (file paths,
    /// errno text, panic messages) goes to the log under a new error id, the client gets the
    /// id to find that line.
    pub(super) fn internal(what: &str, cause: &str) -> Self {
        let mut bytes = [0u8; 6];
        // Without randomness the id is still unique enough to grep for: the time.
        if getrandom::fill(&mut bytes).is_err() {
            let now = time::OffsetDateTime::now_utc().unix_timestamp_nanos();
            bytes.copy_from_slice(&now.to_le_bytes()[..6]);
        }
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        tracing::error!(error_id = %id, error = %cause, "{what} failed");
        ApiError {
            error_id: Some(id.clone().into()),
            ..ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                format!("{what} failed; the daemon's log has the cause under error_id {id}"),
            )
        }
    }

    /// A 400 `invalid_request` about the request's `field`.
    pub(super) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            field: Some(field.into()),
            ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    /// A blocking task that panicked or was cancelled.
    fn from(err: tokio::task::JoinError) -> Self {
        ApiError::internal("the request", &err.to_string())
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Refused(refusal) => refusal.into(),
            other => ApiError::internal("the request", &crate::error_chain(&other)),
        }
    }
}

impl From<crate::dataplane::DataplaneError> for ApiError {
    fn from(err: crate::dataplane::DataplaneError) -> Self {
        ApiError::internal("reading the counters", &crate::error_chain(&err))
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
            | ModelError::FeedRefused { .. }
            | ModelError::AllowAllRequired { .. }
            | ModelError::CoversAll { .. } => StatusCode::UNPROCESSABLE_ENTITY,
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
                ModelError::WouldLockOut { addresses } => Some(addresses.into()),
                _ => None,
            },
            error_id: None,
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
        if let Some(id) = self.error_id {
            error["error_id"] = json!(id);
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
pub(super) struct JsonBody<T>(pub(super) T);

/// Bodies up to this size are parsed where they arrive; larger ones off the async workers,
/// which keep answering other requests meanwhile.
const PARSE_INLINE_BYTES: usize = 64 * 1024;

impl<S: Send + Sync, T: DeserializeOwned + Send + 'static> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .map(|value| {
                value
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .is_some_and(|essence| {
                essence == "application/json"
                    || (essence.starts_with("application/") && essence.ends_with("+json"))
            });
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| body_rejection(rejection.status(), rejection.body_text()))?;
        let parsed = if bytes.len() <= PARSE_INLINE_BYTES {
            parse_body(&bytes)
        } else {
            tokio::task::spawn_blocking(move || parse_body(&bytes)).await?
        };
        match parsed {
            Ok(value) => Ok(JsonBody(value)),
            Err(rejection) => Err(body_rejection(rejection.status(), rejection.body_text())),
        }
    }
}

/// Parses a JSON body: directly, and only when that fails again through axum's parser, which
/// tracks the path to the error for the message (at a cost per element a large body feels).
fn parse_body<T: DeserializeOwned>(bytes: &Bytes) -> Result<T, JsonRejection> {
    match serde_json::from_slice(bytes) {
        Ok(value) => Ok(value),
        Err(_) => Json::<T>::from_bytes(bytes).map(|Json(value)| value),
    }
}

/// The error for a body that could not be read (`status` 413 when too large) or parsed.
fn body_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "the request body is larger than the limit (--max-body-bytes)",
        )
    } else {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", text)
    }
}
