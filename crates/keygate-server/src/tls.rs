//! HTTPS with rustls: loading PEM files, optional client certificates (mTLS), reload on
//! SIGHUP, and the accept loop.
//!
//! *Invariants:*
//! - With `tls_cert`/`tls_key` set, the listener speaks TLS only; a plain HTTP request
//!   fails the handshake and never reaches a handler.
//! - With `tls_client_ca` set, a handshake without a certificate signed by that CA fails
//!   (`WebPkiClientVerifier`), before any token is looked at.
//! - A reload swaps the `ServerConfig` used for *new* handshakes; open connections keep
//!   the one they were accepted with, so none is dropped. A reload that fails (missing
//!   file, key not matching the certificate) keeps the current configuration.
//! - Only ring is used as the crypto provider (the one reqwest and sqlx already link).

use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::config::{Config, ConfigError};

/// A client that connects but does not finish its handshake within this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The PEM files that make up the TLS configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// `Some` when TLS is configured. A certificate without a key (or the reverse), or a
    /// client CA without a server certificate, is a configuration error.
    pub fn from_config(cfg: &Config) -> Result<Option<TlsFiles>, ConfigError> {
        match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
                client_ca: cfg.tls_client_ca.clone(),
            })),
            (None, None) if cfg.tls_client_ca.is_some() => Err(ConfigError(
                "KEYGATE_TLS_CLIENT_CA needs KEYGATE_TLS_CERT and KEYGATE_TLS_KEY".into(),
            )),
            (None, None) => Ok(None),
            (Some(_), None) => Err(ConfigError(
                "KEYGATE_TLS_CERT is set but KEYGATE_TLS_KEY is not; set both".into(),
            )),
            (None, Some(_)) => Err(ConfigError(
                "KEYGATE_TLS_KEY is set but KEYGATE_TLS_CERT is not; set both".into(),
            )),
        }
    }
}

/// How the server is reachable, as `/readyz` reports it.
pub fn transport(cfg: &Config) -> &'static str {
    match (&cfg.tls_cert, &cfg.tls_client_ca) {
        (Some(_), Some(_)) => "mtls",
        (Some(_), None) => "tls",
        (None, _) if cfg.listen.ip().is_loopback() => "plaintext_loopback",
        (None, _) => "plaintext_allowed",
    }
}

/// The rule alone (no logging): plain HTTP only on loopback, unless the operator allowed
/// it (a TLS-terminating proxy stands in front).
pub fn plaintext_policy(cfg: &Config) -> Result<(), ConfigError> {
    if cfg.tls_cert.is_some() || cfg.listen.ip().is_loopback() || cfg.allow_plaintext {
        return Ok(());
    }
    Err(ConfigError(format!(
        "refusing to serve plain HTTP on non-loopback address {}: set KEYGATE_TLS_CERT and KEYGATE_TLS_KEY, or KEYGATE_ALLOW_PLAINTEXT=true if a TLS-terminating proxy stands in front",
        cfg.listen
    )))
}

/// Refuses plain HTTP on a non-loopback address unless the operator allowed it; then it
/// warns.
pub fn check_plaintext(cfg: &Config) -> Result<(), ConfigError> {
    plaintext_policy(cfg)?;
    if cfg.tls_cert.is_some() || cfg.listen.ip().is_loopback() {
        return Ok(());
    }
    tracing::warn!(
        listen = %cfg.listen,
        "serving PLAIN HTTP on a non-loopback address (KEYGATE_ALLOW_PLAINTEXT=true): tokens and secrets cross the network unencrypted unless a TLS-terminating proxy stands in front"
    );
    Ok(())
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Reads a PEM certificate chain (end-entity first).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError(format!("{} is not valid PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError(format!(
            "{} holds no PEM certificate",
            path.display()
        )));
    }
    Ok(certs)
}

/// Reads a PEM private key (PKCS#8, PKCS#1 or SEC1).
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, ConfigError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| {
        ConfigError(format!(
            "{} holds no usable PEM private key: {e}",
            path.display()
        ))
    })
}

/// The end of a certificate's validity period.
pub fn not_after(cert: &CertificateDer<'_>) -> Result<SystemTime, ConfigError> {
    use x509_cert::der::Decode;
    let c = x509_cert::Certificate::from_der(cert.as_ref())
        .map_err(|e| ConfigError(format!("certificate cannot be parsed: {e}")))?;
    Ok(c.tbs_certificate.validity.not_after.to_system_time())
}

/// What a loaded configuration serves.
#[derive(Debug, Clone)]
pub struct CertSummary {
    pub not_after: SystemTime,
    pub client_auth: bool,
}

/// Builds a rustls server configuration from the files; checks that the key belongs to
/// the certificate.
pub fn server_config(files: &TlsFiles) -> Result<(ServerConfig, CertSummary), ConfigError> {
    let provider = provider();
    let certs = load_certs(&files.cert)?;
    let not_after = not_after(&certs[0])?;
    let key = load_key(&files.key)?;
    let certified =
        CertifiedKey::from_der(certs.clone(), key.clone_key(), &provider).map_err(|e| {
            ConfigError(format!(
                "{} does not fit {}: {e}",
                files.key.display(),
                files.cert.display()
            ))
        })?;
    drop(certified);
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError(format!("TLS: {e}")))?;
    let builder = match &files.client_ca {
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            for c in load_certs(ca)? {
                roots
                    .add(c)
                    .map_err(|e| ConfigError(format!("{}: not a usable CA: {e}", ca.display())))?;
            }
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()
                    .map_err(|e| ConfigError(format!("{}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| ConfigError(format!("TLS certificate: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((
        config,
        CertSummary {
            not_after,
            client_auth: files.client_ca.is_some(),
        },
    ))
}

fn log_expiry(summary: &CertSummary) {
    let not_after = chrono::DateTime::<chrono::Utc>::from(summary.not_after);
    match summary.not_after.duration_since(SystemTime::now()) {
        Err(_) => {
            tracing::error!(%not_after, "the TLS certificate has EXPIRED; clients will refuse it")
        }
        Ok(left) if left < Duration::from_secs(14 * 86400) => {
            tracing::warn!(%not_after, "the TLS certificate expires within 14 days")
        }
        Ok(_) => {
            tracing::info!(%not_after, client_auth = summary.client_auth, "TLS certificate loaded")
        }
    }
}

/// The current TLS configuration, swappable at run time. Cloning shares it.
#[derive(Clone)]
pub struct TlsReloader {
    files: TlsFiles,
    current: Arc<RwLock<Arc<ServerConfig>>>,
}

impl TlsReloader {
    /// Loads the files; any problem is a one-line startup error.
    pub fn load(files: TlsFiles) -> Result<TlsReloader, ConfigError> {
        let (config, summary) = server_config(&files)?;
        log_expiry(&summary);
        Ok(TlsReloader {
            files,
            current: Arc::new(RwLock::new(Arc::new(config))),
        })
    }

    /// Re-reads the files (certificate, key and client CA). New handshakes use them; a
    /// failure leaves the current configuration in place.
    pub fn reload(&self) -> Result<CertSummary, ConfigError> {
        let (config, summary) = server_config(&self.files)?;
        *self.current.write() = Arc::new(config);
        log_expiry(&summary);
        Ok(summary)
    }

    /// The configuration new handshakes use.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.read().clone()
    }
}

/// Reloads the TLS configuration on every SIGHUP until the task is dropped. Without TLS
/// a SIGHUP is logged and ignored (the default action would end the process).
pub async fn reload_on_sighup(tls: Option<TlsReloader>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::warn!("cannot listen for SIGHUP; TLS reload is unavailable");
        return;
    };
    while hup.recv().await.is_some() {
        match &tls {
            Some(t) => match t.reload() {
                Ok(_) => tracing::info!("SIGHUP: TLS configuration reloaded"),
                Err(e) => {
                    tracing::error!(error = %e, "SIGHUP: TLS reload failed; keeping the current certificate")
                }
            },
            None => tracing::info!("SIGHUP: TLS is not configured; nothing to reload"),
        }
    }
}

/// Serves `router` over TLS until `shutdown` resolves, then stops accepting and lets open
/// connections finish their in-flight requests. The peer address reaches handlers as
/// `ConnectInfo<SocketAddr>`, as with `axum::serve`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: TlsReloader,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let graceful = GracefulShutdown::new();
    let builder = auto::Builder::new(TokioExecutor::new());
    tokio::pin!(shutdown);
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let router = router.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, "TLS handshake timed out");
                    return;
                }
            };
            let svc = hyper::service::service_fn(move |mut req: http::Request<Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                router.clone().oneshot(req)
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
