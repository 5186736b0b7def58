//! One error type for the HTTP edge, rendered as RFC 9457 `application/problem+json` with a
//! stable snake_case `code`. Causes (driver errors, crypto failures) are logged by the
//! `log_errors` middleware from a response extension; they never reach the client.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;

use keygate_storage::StorageError;

/// A field-level validation error (`errors` member of a 422 problem).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// RFC 9457 problem details, keygate flavour.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// URI naming the problem type (`https://keygate.dev/problems/<code>`).
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub instance: Option<String>,
    /// Stable machine-readable code naming the rule or failure.
    pub code: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// The cause of an error response, kept for the log only.
#[derive(Clone)]
pub struct ErrorCause(pub Arc<String>);

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{detail}")]
    Status {
        status: StatusCode,
        code: &'static str,
        detail: String,
        retry_after: Option<u64>,
    },
    #[error("validation failed")]
    Validation(Vec<FieldError>),
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::Status {
            status,
            code,
            detail: detail.into(),
            retry_after: None,
        }
    }
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", detail)
    }
    pub fn forbidden(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, code, detail)
    }
    pub fn conflict(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, detail)
    }
    pub fn bad_request(code: &'static str, detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, detail)
    }
    pub fn field(field: &str, message: impl Into<String>) -> Self {
        ApiError::Validation(vec![FieldError::new(field, message)])
    }
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        ApiError::Internal(cause.to_string())
    }

    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::Status { status, .. } => *status,
            ApiError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Status { code, .. } => code,
            ApiError::Validation(_) => "validation_failed",
            ApiError::Internal(_) => "internal_error",
        }
    }
}

/// The title for a status, from the HTTP reason phrase.
fn title(status: StatusCode) -> String {
    status.canonical_reason().unwrap_or("Error").to_string()
}

/// Builds a problem+json response.
pub fn problem_response(
    status: StatusCode,
    code: &str,
    detail: Option<String>,
    errors: Vec<FieldError>,
) -> Response {
    let p = Problem {
        type_: format!("https://keygate.dev/problems/{code}"),
        title: title(status),
        status: status.as_u16(),
        detail,
        instance: None,
        code: code.to_string(),
        errors,
        request_id: None,
    };
    let body = serde_json::to_vec(&p).unwrap_or_default();
    let mut resp = (status, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let code = self.code();
        match self {
            ApiError::Status {
                detail,
                retry_after,
                ..
            } => {
                let mut r = problem_response(status, code, Some(detail), vec![]);
                if let Some(s) = retry_after {
                    r.headers_mut()
                        .insert(header::RETRY_AFTER, HeaderValue::from(s));
                }
                r
            }
            ApiError::Validation(errors) => problem_response(
                status,
                code,
                Some("the request has invalid fields".into()),
                errors,
            ),
            ApiError::Internal(cause) => {
                let mut r = problem_response(
                    status,
                    code,
                    Some("an internal error occurred; it has been logged".into()),
                    vec![],
                );
                r.extensions_mut().insert(ErrorCause(Arc::new(cause)));
                r
            }
        }
    }
}

impl From<StorageError> for ApiError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::NotFound => ApiError::not_found("resource"),
            StorageError::Conflict("label") => ApiError::Validation(vec![FieldError::new(
                "label",
                "a credential with this label already exists",
            )]),
            StorageError::Conflict("name") => ApiError::Validation(vec![FieldError::new(
                "name",
                "a connection with this name already exists",
            )]),
            StorageError::Conflict("credential_in_use") => ApiError::conflict(
                "credential_in_use",
                "the credential is used by a connection; delete or re-point the connection first",
            ),
            StorageError::Conflict("data_key_version") => ApiError::conflict(
                "data_key_changed",
                "your data key was rotated (or shredded) while this was being stored; nothing was written, retry",
            ),
            StorageError::Conflict(what) => {
                ApiError::conflict("conflict", format!("{what} already exists"))
            }
            StorageError::LimitReached(what, n) => ApiError::conflict(
                match what {
                    "webhooks" => "too_many_webhooks",
                    "integrations" => "too_many_integrations",
                    _ => "limit_reached",
                },
                format!("at most {n} {what} per owner; delete one first"),
            ),
            StorageError::VersionMismatch => ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "version_mismatch",
                "the resource changed since you read it; fetch it again and retry",
            ),
            other => ApiError::Internal(other.to_string()),
        }
    }
}

impl From<keygate_crypto::CryptoError> for ApiError {
    fn from(e: keygate_crypto::CryptoError) -> Self {
        // One opaque problem for every decrypt failure (STYLE.md).
        ApiError::Internal(format!("crypto: {e}"))
    }
}

impl From<keygate_keys::KeyError> for ApiError {
    fn from(e: keygate_keys::KeyError) -> Self {
        if e.is_transient() {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "key_provider_unavailable",
                "the key provider is unreachable; retry later",
            )
        } else {
            ApiError::Internal(format!("key provider: {e}"))
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
