//! Extractors whose rejections are problem+json: JSON bodies (`AppJson`), paths and queries,
//! and the request metadata that audit events record.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use std::net::SocketAddr;

use crate::error::{ApiError, FieldError};
use crate::recorder::RequestMeta;

/// `Json<T>` whose rejections are keygate problems: 415 wrong content type, 413 too
/// large, 400 malformed JSON, 422 wrong shape (naming the field where serde says it).
pub struct AppJson<T>(pub T);

impl<S, T> FromRequest<S> for AppJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(|ct| {
                let m = ct
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                m == "application/json" || (m.starts_with("application/") && m.ends_with("+json"))
            })
            .unwrap_or(false);
        if !json_type {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "send the body as application/json",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the body is larger than this server accepts",
                    )
                } else {
                    ApiError::bad_request("unreadable_body", "the body could not be read")
                }
            })?;
        let de = &mut serde_json::Deserializer::from_slice(&bytes);
        match serde_path_to_error::deserialize(de) {
            Ok(v) => Ok(AppJson(v)),
            Err(e) => {
                let path = e.path().to_string();
                let inner = e.into_inner();
                if inner.is_syntax() || inner.is_eof() || inner.is_io() {
                    return Err(ApiError::bad_request(
                        "malformed_json",
                        "the body is not valid JSON",
                    ));
                }
                let msg = inner.to_string();
                // serde names missing / unknown fields in backticks at the root path.
                let field = if path == "." || path.is_empty() {
                    msg.split('`').nth(1).unwrap_or("body").to_string()
                } else {
                    path
                };
                let message: String = msg
                    .split(" at line ")
                    .next()
                    .unwrap_or(&msg)
                    .chars()
                    .take(200)
                    .collect();
                Err(ApiError::Validation(vec![FieldError::new(
                    field.chars().take(64).collect::<String>(),
                    message,
                )]))
            }
        }
    }
}

/// An optional JSON body: an empty body (with or without a content type) is `None`;
/// anything else must be JSON and is read exactly as [`AppJson`] reads it.
pub struct OptionalJson<T>(pub Option<T>);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let (parts, body) = req.into_parts();
        // `Bytes` honours the body-size limit, which lives in the (cloned) extensions.
        let bytes =
            axum::body::Bytes::from_request(Request::from_parts(parts.clone(), body), state)
                .await
                .map_err(|e| {
                    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                        ApiError::new(
                            StatusCode::PAYLOAD_TOO_LARGE,
                            "payload_too_large",
                            "the body is larger than this server accepts",
                        )
                    } else {
                        ApiError::bad_request("unreadable_body", "the body could not be read")
                    }
                })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(None));
        }
        let req = Request::from_parts(parts, axum::body::Body::from(bytes));
        AppJson::<T>::from_request(req, state)
            .await
            .map(|AppJson(v)| OptionalJson(Some(v)))
    }
}

/// Path parameters with problem+json rejections (e.g. an id that is not a UUID → 404, so
/// ids cannot be probed by shape).
pub struct AppPath<T>(pub T);

impl<S, T> FromRequestParts<S> for AppPath<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| AppPath(p.0))
            .map_err(|_: PathRejection| ApiError::not_found("resource"))
    }
}

/// Query parameters with problem+json rejections.
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| AppQuery(q.0))
            .map_err(|e: QueryRejection| {
                let msg = e.body_text();
                let field = msg.split('`').nth(1).unwrap_or("query").to_string();
                ApiError::Validation(vec![FieldError::new(
                    field,
                    msg.chars().take(200).collect::<String>(),
                )])
            })
    }
}

impl<S: Send + Sync> FromRequestParts<S> for RequestMeta {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        // The trusted-proxy-aware address (`client_ip::resolve`), else the TCP peer.
        let ip = parts
            .extensions
            .get::<crate::client_ip::ClientIp>()
            .map(|c| c.0.to_string())
            .or_else(|| {
                parts
                    .extensions
                    .get::<ConnectInfo<SocketAddr>>()
                    .map(|c| c.0.ip().to_string())
            });
        let header = |n: &str| {
            parts
                .headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(|s| s.chars().take(500).collect::<String>())
        };
        let device_fingerprint =
            header("x-device-id").map(|d| hex::encode(&Sha256::digest(d.as_bytes())[..16]));
        // from a trusted proxy's headers only (`client_ip::resolve`)
        let geo = parts
            .extensions
            .get::<crate::client_ip::Geo>()
            .cloned()
            .unwrap_or_default();
        Ok(RequestMeta {
            ip,
            user_agent: header("user-agent"),
            device_fingerprint,
            geo_country: geo.country,
            geo_city: geo.city,
            request_id: header("x-request-id"),
        })
    }
}
