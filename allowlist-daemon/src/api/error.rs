//! The error envelope every refusal uses: `{"error": {"code", "message", ...}}`.

use std::net::IpAddr;

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
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
    addresses: Option<Vec<IpAddr>>,
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

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Refused(refusal) => refusal.into(),
            other => {
                let message = crate::error_chain(&other);
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
pub(super) struct JsonBody<T>(pub(super) T);

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
