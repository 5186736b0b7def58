//! keygate-server: the HTTP edge. Only this crate knows HTTP and JSON.
//!
//! Request flow: `app::observe` (request id, metrics, logs) → route → `auth::Caller`
//! extractor (JWT) → handler → storage / keyring / gateway → problem+json on error.
#![forbid(unsafe_code)]

/// Anomaly scoring of credential use and auto-suspension.
pub mod anomaly;
/// Startup checks, router, middleware, graceful shutdown.
pub mod app;
/// JWT verification (HS256, JWKS) and the `Caller` extractor.
pub mod auth;
/// `keygate backup` / `restore`: files and key checks around the storage snapshot.
pub mod backup;
/// The client IP behind trusted proxies (`X-Forwarded-For`).
pub mod client_ip;
/// TOML + `KEYGATE_*` configuration.
pub mod config;
/// The table of settings and its Markdown rendering (`docs/CONFIGURATION.md`).
pub mod config_reference;
/// problem+json errors.
pub mod error;
/// Extractors with problem+json rejections; request metadata for audit.
pub mod extract;
/// The signing proxy.
pub mod gateway;
/// Core dumps off, not dumpable, memory locked (at `serve` start).
pub mod hardening;
pub(crate) mod heavy;
/// OAuth token refresh for integrations.
pub mod integrations;
/// The audit events of what the command line hands out (tokens, sign-in links).
pub mod issue;
/// Background jobs (reminders, webhook delivery, token refresh), once across instances.
pub mod jobs;
/// Data dir and key files.
pub mod keyfiles;
/// Per-user DEKs at run time (create, unwrap, cache, unlock sessions).
pub mod keyring;
/// The configured key provider (local or OpenBao Transit) and the database's tie to it.
pub mod kms;
/// Master-key versions and `keygate master-key rotate`.
pub mod master_key;
/// Prometheus metrics.
pub mod metrics;
/// The OpenAPI document.
pub mod openapi;
/// Requests to user-chosen URLs (webhooks, OAuth token endpoints): public addresses only.
pub mod outbound;
/// Master-derived keys for site keys and webhook secrets.
pub mod platform;
/// Group commit of audit events and call rows.
pub mod recorder;
/// Token revocations ("sign out everywhere"), kept in memory on every instance.
pub mod revocations;
/// Routes.
pub mod routes;
/// Sealing/opening a credential's secret fields.
pub mod secrets;
/// `keygate shred --user`: crypto-shredding from the command line.
pub mod shred;
/// Application state.
pub mod state;
/// Logging setup.
pub mod telemetry;
/// HTTPS (rustls), client certificates, reload on SIGHUP.
pub mod tls;
pub mod ui;
/// Webhook events: queue, signature, delivery with retries.
pub mod webhooks;

pub use app::{prepare, prepare_existing, prepare_tool, router, shutdown_signal, Application};
pub use config::{Config, ConfigError, KeyProviderKind};
