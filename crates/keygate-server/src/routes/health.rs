use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
}

/// Process is up.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200, body = Health)))]
pub async fn healthz() -> Json<Health> {
    Json(Health {
        status: "ok",
        version: env!("CARGO_PKG_VERSION"),
    })
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Ready {
    pub status: &'static str,
    pub database: &'static str,
    pub schema_version: i64,
    /// `tls`, `mtls`, `plaintext_loopback`, or `plaintext_allowed` (plain HTTP on a
    /// non-loopback address because `KEYGATE_ALLOW_PLAINTEXT=true`).
    pub transport: &'static str,
    /// Operator warnings, e.g. `plaintext_allowed`. Empty when all is well.
    pub warnings: Vec<String>,
}

/// Database reachable and migrations current.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200, body = Ready), (status = 503, body = Ready)))]
pub async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let transport = crate::tls::transport(&s.config);
    let warnings: Vec<String> = match transport {
        "plaintext_allowed" => vec![
            "plaintext_allowed: serving plain HTTP on a non-loopback address; only safe behind a TLS-terminating proxy".into(),
        ],
        _ => vec![],
    };
    let applied = s.store.applied_schema_version().await;
    let current = s.store.binary_schema_version();
    match applied {
        Ok(v) if v == current => (
            StatusCode::OK,
            Json(Ready {
                status: "ready",
                database: "ok",
                schema_version: v,
                transport,
                warnings,
            }),
        ),
        Ok(v) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Ready {
                status: "not_ready",
                database: "migrations_pending",
                schema_version: v,
                transport,
                warnings,
            }),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(Ready {
                status: "not_ready",
                database: "unreachable",
                schema_version: 0,
                transport,
                warnings,
            }),
        ),
    }
}

/// Prometheus metrics (text exposition format).
#[utoipa::path(get, path = "/metrics", tag = "ops", responses((status = 200, content_type = "text/plain", body = String)))]
pub async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render(),
    )
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = "ops", responses((status = 200, content_type = "application/json", body = Object)))]
pub async fn openapi() -> impl IntoResponse {
    Json(crate::openapi::document())
}
