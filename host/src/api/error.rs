//! The one error type of the HTTP API: every failure becomes a JSON
//! `{error, detail}` with the status that says whose fault it is. A bad
//! request is a 4xx naming what is wrong, never a 500.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    PluginRefused(String),
    #[error("{detail}")]
    TooManyRequests { detail: String, retry_after_s: u64 },
    #[error("{0}")]
    Timeout(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    fn status_and_kind(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
    /// The pipeline did not answer within its answer timeout (and was
    /// failed for it).
    #[error("{0}")]
    Unresponsive(String),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::PluginRefused(_) => (StatusCode::UNPROCESSABLE_ENTITY, "plugin_refused"),
            ApiError::TooManyRequests { .. } => {
                (StatusCode::TOO_MANY_REQUESTS, "too_many_requests")
            }
            ApiError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, "timeout"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, kind) = self.status_and_kind();
        if status.is_server_error() {
            tracing::error!("{self}");
        }
        let body = serde_json::json!({ "error": kind, "detail": self.to_string() });
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/json")],
            body.to_string(),
            ApiError::Unresponsive(_) => (StatusCode::GATEWAY_TIMEOUT, "unresponsive"),
        )
            .into_response();
        if let ApiError::TooManyRequests { retry_after_s, .. } = self {
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from_str(&retry_after_s.to_string()).expect("digits"),
            );
        }
        response
    }
}

/// A body extractor's rejection (too large, unreadable) as an API error.
impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(rejection: axum::extract::rejection::BytesRejection) -> Self {
        let status = rejection.status();
        let detail = rejection.body_text();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(detail)
        } else {
            ApiError::BadRequest(detail)
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
