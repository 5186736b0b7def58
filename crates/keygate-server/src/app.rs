//! Building and running the server: startup checks (data dir, keys, migrations, key-check
//! value), the router with its middleware, and graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use keygate_keys::KeyProvider;
use keygate_storage::{Store, META_KEY_CHECK};
use tokio::net::TcpListener;
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError, KeyProviderKind};
use crate::error::{problem_response, ErrorCause};
use crate::keyfiles::{self, KeySource};
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::recorder::Recorder;
use crate::state::AppState;

/// Opens the database, runs migrations, loads (or, for an empty database, creates) the
/// master key and checks it against the stored key-check value, or, with the OpenBao
/// provider, unwraps the stored root through Transit (`kms.rs`). Every failure is one line.
pub async fn prepare(config: Config) -> Result<AppState, ConfigError> {
    prepare_with(config, Schema::Upgrade).await
}

/// [`prepare`] for a command-line tool that may be the first to touch a database
/// (`keygate token`, `login-link`): it sets up a new, empty database, but refuses one at
/// an older schema instead of upgrading it under a server that may still be running the
/// older binary.
pub async fn prepare_tool(config: Config) -> Result<AppState, ConfigError> {
    prepare_with(config, Schema::SetUpNew).await
}

/// [`prepare_tool`] for a tool that works on existing data (`audit`, `shred`,
/// `master-key rotate`): an empty database is refused too, before any key is created, so
/// that a mistyped `KEYGATE_DATABASE_URL` or data dir is not reported as an empty, intact
/// audit log.
pub async fn prepare_existing(config: Config) -> Result<AppState, ConfigError> {
    prepare_with(config, Schema::Existing).await
}

/// What [`prepare_with`] does to the database's schema.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Schema {
    /// Apply every pending migration (`serve`, `migrate`).
    Upgrade,
    /// Set up an empty database; refuse an older schema.
    SetUpNew,
    /// Refuse an empty database and an older schema.
    Existing,
}

async fn prepare_with(config: Config, schema: Schema) -> Result<AppState, ConfigError> {
    keyfiles::ensure_data_dir(&config.data_dir)?;
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| ConfigError(format!("cannot open database: {e}")))?;
    if schema == Schema::Existing
        && store
            .applied_schema_version()
            .await
            .map_err(|e| ConfigError(format!("cannot open database: {e}")))?
            == 0
    {
        return Err(ConfigError(format!(
            "no keygate database at {}: it is empty (check KEYGATE_DATABASE_URL and KEYGATE_DATA_DIR)",
            crate::routes::admin::without_password(&config.database_url)
        )));
    }
    let migrated = if schema == Schema::Upgrade {
        store.migrate().await
    } else {
        store.migrate_if_new().await
    };
    migrated.map_err(|e| ConfigError(format!("database migration failed: {e}")))?;
    // a database stays with the key provider it was created with (kms.rs)
    crate::kms::check_provider_kind(&store, config.key_provider).await?;
    let keys = match config.key_provider {
        KeyProviderKind::Local => local_keys(&config, &store).await?,
        KeyProviderKind::OpenBao => crate::kms::resolve_openbao(&config, &store).await?,
    };
    let jwt_secret = keyfiles::load_or_create_jwt_secret(&config)?;
    let chain_key = Arc::new(*keys.root.derive_subkey("audit-chain/v1").as_bytes());
    let platform = Arc::new(crate::platform::PlatformKeys::derive(&keys.root));
    let provider: Arc<dyn KeyProvider> = match config.key_provider {
        // Transit always wraps under its latest version; a local key can fall behind
        KeyProviderKind::Local => Arc::new(crate::master_key::CurrentKeyOnly::new(
            keys.provider,
            store.clone(),
        )),
        KeyProviderKind::OpenBao => keys.provider,
    };
    let auth = Authenticator::new(
        &jwt_secret,
        &config.admin_claim,
        config.jwt_audience.as_deref(),
        config.jwks_url.as_deref(),
    )
    .with_issuer(config.jwt_issuer.as_deref())
    .with_jwks_max_age(Duration::from_secs(config.jwks_max_age_secs))
    .with_session_key(
        &jwt_secret,
        keys.root
            .derive_subkey("console-session-secret/v1")
            .as_bytes(),
    )
    .with_revocations({
        let r = crate::revocations::Revocations::new(store.clone());
        r.reload()
            .await
            .map_err(|e| ConfigError(format!("cannot read token revocations: {e}")))?;
        Arc::new(r)
    });
    let metrics = Arc::new(Metrics::default());
    let recorder = Recorder::start(store.clone(), chain_key.clone(), metrics.clone());
    let http = crate::outbound::client(&config.allowed_private_hosts)
        .map_err(|e| ConfigError(format!("http client: {e}")))?;
    let operator_http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| ConfigError(format!("http client: {e}")))?;
    Ok(AppState::new(crate::state::AppStateInner {
        keyring: Keyring::new(provider, store.clone()),
        gateway: Arc::new(
            crate::gateway::Gateway::new(&config, store.backend()).map_err(ConfigError)?,
        ),
        config: Arc::new(config),
        store,
        auth,
        recorder,
        metrics,
        http,
        operator_http,
        chain_key,
        platform,
        jobs: crate::jobs::Jobs::new(),
        kms: keys.transit,
    }))
}

/// The local provider: the master key from `KEYGATE_MASTER_KEY` / a key file (generated
/// only for an empty database), matched against the database (`master_key::resolve`).
async fn local_keys(
    config: &Config,
    store: &Store,
) -> Result<crate::master_key::ResolvedKeys, ConfigError> {
    let loaded = keyfiles::load_master_key(config)?;
    let stored_check = store
        .meta_get(META_KEY_CHECK)
        .await
        .map_err(|e| ConfigError(format!("cannot read database metadata: {e}")))?;
    let (master, source) = match loaded {
        Some(k) => k,
        None => {
            let empty = store
                .is_empty()
                .await
                .map_err(|e| ConfigError(e.to_string()))?;
            if stored_check.is_some() || !empty {
                return Err(ConfigError(format!(
                    "no master key found ({} missing and KEYGATE_MASTER_KEY unset) but the database already holds keys; supply the master key it was created with",
                    config.data_dir.join(keyfiles::MASTER_KEY_FILE).display()
                )));
            }
            keyfiles::generate_master_key(config)?
        }
    };
    // A database that holds keys but no key-check value would take whatever key is
    // supplied as its own (and record it): refuse instead of guessing.
    if stored_check.is_none()
        && !store
            .is_empty()
            .await
            .map_err(|e| ConfigError(e.to_string()))?
    {
        return Err(ConfigError(
            "the database holds keys but no master-key check value (keygate_meta master_key_check); refusing to guess whether this master key is theirs: restore keygate_meta from a backup"
                .into(),
        ));
    }
    // key-check value, key version, previous key during a rotation (master_key.rs)
    let keys = crate::master_key::resolve(config, store, master).await?;
    match &source {
        KeySource::Generated(p) => tracing::warn!(
            path = %p.display(),
            "generated a new master key: BACK IT UP and keep it apart from the database and its backups; without it no secret can be recovered"
        ),
        KeySource::File(p) => tracing::info!(path = %p.display(), "master key loaded from file"),
        KeySource::Env => tracing::info!("master key loaded from KEYGATE_MASTER_KEY"),
    }
    Ok(keys)
}

/// The full router with middleware.
pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .merge(crate::routes::health::router())
        .merge(crate::routes::credentials::router())
        .merge(crate::routes::connections::router())
        .merge(crate::routes::vault::router())
        .merge(crate::routes::dek_rotation::router())
        .merge(crate::routes::audit::router())
        .merge(crate::routes::oversight_router())
        .merge(crate::gateway::router())
        .merge(crate::ui::router(state.clone()))
        .fallback(|| async {
            problem_response(
                StatusCode::NOT_FOUND,
                "not_found",
                Some("no such route".into()),
                vec![],
            )
        })
        .layer(axum::extract::DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::client_ip::resolve,
        ))
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(|_| {
            problem_response(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                Some("an internal error occurred; it has been logged".into()),
                vec![],
            )
        }))
        .with_state(state)
}

fn valid_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic()))
        .then(|| s.to_string())
}

/// Request id, access log, metrics, error-cause logging, and problem+json for bare
/// framework errors (405 and friends).
async fn observe(State(state): State<AppState>, mut req: Request, next: Next) -> Response {
    let start = Instant::now();
    let rid = req
        .headers()
        .get("x-request-id")
        .and_then(valid_request_id)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    req.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&rid).expect("checked"),
    );
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().clone();
    let span = tracing::info_span!("request", request_id = %rid, method = %method, route = %route);
    let mut resp = next.run(req).instrument(span.clone()).await;
    let status = resp.status();
    if let Some(cause) = resp.extensions().get::<ErrorCause>() {
        span.in_scope(|| tracing::error!(cause = %cause.0, "request failed"));
    }
    let is_problem = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/problem+json"));
    if (status.is_client_error() || status.is_server_error())
        && !is_problem
        && !route.contains("/proxy/")
        && !route.starts_with("/ui")
        // its 503 says what is not ready (`Ready`, documented in the OpenAPI)
        && (route != "/readyz" || status != StatusCode::SERVICE_UNAVAILABLE)
    {
        let code = match status {
            StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
            StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
            StatusCode::NOT_FOUND => "not_found",
            s if s.is_server_error() => "internal_error",
            _ => "bad_request",
        };
        let allow = resp.headers().get(header::ALLOW).cloned();
        resp = problem_response(status, code, None, vec![]);
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    } else if route.starts_with("/ui")
        && status.is_client_error()
        && !is_problem
        && !resp
            .headers()
            .get(header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"text/html"))
    {
        // the console's pages answer a request they cannot read (a malformed id or query,
        // a method a page does not take, a form too large) with its error page, not
        // axum's plain-text rejection
        let title = match status {
            StatusCode::METHOD_NOT_ALLOWED => "Not allowed here",
            StatusCode::PAYLOAD_TOO_LARGE => "Too large",
            StatusCode::NOT_FOUND => "Not found",
            _ => "Request not understood",
        };
        let allow = resp.headers().get(header::ALLOW).cloned();
        resp = crate::ui::render_status(
            status,
            "error.html",
            None,
            serde_json::json!({"title": title, "detail": "This page could not read the request: check the address or go back and try again."}),
        );
        if let Some(a) = allow {
            resp.headers_mut().insert(header::ALLOW, a);
        }
    }
    resp.headers_mut().insert(
        "x-request-id",
        HeaderValue::from_str(&rid).expect("checked"),
    );
    let secs = start.elapsed().as_secs_f64();
    state
        .metrics
        .observe_request(method.as_str(), &route, status.as_u16(), secs);
    span.in_scope(|| {
        tracing::info!(
            status = status.as_u16(),
            latency_ms = secs * 1000.0,
            "handled"
        )
    });
    resp
}

/// A bound, ready-to-run server (port 0 allowed; tests read `local_addr`).
pub struct Application {
    listener: TcpListener,
    router: Router,
    tls: Option<crate::tls::TlsReloader>,
    pub state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> Result<Application, ConfigError> {
        let listen = config.listen;
        crate::tls::check_plaintext(&config)?;
        let tls = crate::tls::TlsFiles::from_config(&config)?
            .map(crate::tls::TlsReloader::load)
            .transpose()?;
        let state = prepare(config).await?;
        if state.config.dev_fast_kdf {
            tracing::warn!(
                "KEYGATE_DEV_FAST_KDF is on: vault passwords set or changed now are derived with Argon2id at 1 MiB and one pass, cheap to guess; they stay that weak until changed with it off. For tests only"
            );
        }
        crate::ui::session::end_sessions_of_changed_token_settings(&state)
            .await
            .map_err(|e| ConfigError(format!("cannot check the console's sessions: {e}")))?;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|e| ConfigError(format!("cannot listen on {listen}: {e}")))?;
        let router = router(state.clone());
        // a serving instance keeps the revocations current (a tool's copy is never read)
        state.auth.revocations().clone().start();
        crate::gateway::share_upstream_blocks(state.clone());
        if state.config.jobs_enabled {
            crate::jobs::start(state.clone());
        }
        Ok(Application {
            listener,
            router,
            tls,
            state,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("bound")
    }

    /// The TLS configuration handle (what SIGHUP reloads), when TLS is on.
    pub fn tls_reloader(&self) -> Option<crate::tls::TlsReloader> {
        self.tls.clone()
    }

    /// Serves until `shutdown` resolves, then lets in-flight requests finish. SIGHUP
    /// reloads the TLS files.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let hup = tokio::spawn(crate::tls::reload_on_sighup(self.tls.clone()));
        let _stop_hup = AbortOnDrop(hup);
        if let Some(tls) = self.tls {
            return crate::tls::serve(self.listener, self.router, tls, shutdown).await;
        }
        axum::serve(
            self.listener,
            self.router
                .into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(shutdown)
        .await
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        {
            s.recv().await;
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

impl IntoResponse for ConfigError {
    fn into_response(self) -> Response {
        problem_response(
            StatusCode::INTERNAL_SERVER_ERROR,
            "config_error",
            None,
            vec![],
        )
    }
}
