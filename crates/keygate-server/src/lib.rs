//! keygate-server: the HTTP edge. Only this crate knows HTTP and JSON.
//!
//! Request flow: `app::observe` (request id, metrics, logs) → route → `auth::Caller`
//! extractor (JWT) → handler → storage / keyring / gateway → problem+json on error.
#![forbid(unsafe_code)]

/// Startup checks, router, middleware, graceful shutdown.
pub mod app;
/// JWT verification (HS256, JWKS) and the `Caller` extractor.
pub mod auth;
/// `keygate backup` / `restore`: files and key checks around the storage snapshot.
pub mod backup;
/// TOML + `KEYGATE_*` configuration.
pub mod config;
/// problem+json errors.
pub mod error;
/// Extractors with problem+json rejections; request metadata for audit.
pub mod extract;
/// The signing proxy.
pub mod gateway;
/// Data dir and key files.
pub mod keyfiles;
/// Per-user DEKs at run time (create, unwrap, cache, unlock sessions).
pub mod keyring;
/// Prometheus metrics.
pub mod metrics;
/// The OpenAPI document.
pub mod openapi;
/// Group commit of audit events and call rows.
pub mod recorder;
/// Routes.
pub mod routes;
/// Sealing/opening a credential's secret fields.
pub mod secrets;
/// Application state.
pub mod state;
/// Logging setup.
pub mod telemetry;

pub use app::{prepare, router, shutdown_signal, Application};
pub use config::{Config, ConfigError};
