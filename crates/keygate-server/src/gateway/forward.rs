//! Forwarding a signed request: pooled client (HTTP/1.1, and HTTP/2 where the exchange
//! offers it by ALPN, over rustls with the webpki roots; hyper directly, no redirects
//! followed, nothing decompressed), a per-connection timeout, retries with jittered
//! backoff only for idempotent reads, and a cap on the size of what comes back.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, StatusCode, Uri};
use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use keygate_exchanges::OutgoingRequest;

use crate::error::ApiError;

/// The gateway's pooled upstream client.
pub type HttpClient = Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>;

/// Idle pooled connections kept per exchange host.
const POOL_IDLE_PER_HOST: usize = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Builds the gateway's client: TLS through rustls (ring) with the webpki roots, plain
/// HTTP only where the allowed-upstreams check let a `http://` base URL through.
pub fn client() -> Result<HttpClient, String> {
    use hyper_rustls::ConfigBuilderExt;
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| format!("upstream TLS: {e}"))?
    .with_webpki_roots()
    .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(CONNECT_TIMEOUT));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .pool_idle_timeout(Duration::from_secs(90))
        .build(https))
}

/// Largest exchange response keygate passes back.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

pub struct Upstream {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("the exchange did not answer within {0} ms")]
    Timeout(u64),
    #[error("the exchange could not be reached")]
    Unreachable,
    #[error("the exchange's answer exceeds {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("the exchange's answer was cut off or malformed")]
    Broken,
}

impl UpstreamError {
    pub fn status(&self) -> StatusCode {
        match self {
            UpstreamError::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn into_api_error(self) -> ApiError {
        let code = match self {
            UpstreamError::Timeout(_) => "upstream_timeout",
            UpstreamError::Unreachable => "upstream_unavailable",
            UpstreamError::TooLarge => "upstream_response_too_large",
            UpstreamError::Broken => "upstream_bad_response",
        };
        ApiError::new(self.status(), code, self.to_string())
    }
}

/// Response headers not passed back: hop-by-hop and the length (recomputed).
pub fn passes_back(name: &HeaderName) -> bool {
    !matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-authenticate"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "content-length"
    )
}

async fn once(
    http: &HttpClient,
    uri: &Uri,
    req: &OutgoingRequest,
    timeout_ms: u64,
) -> Result<Upstream, UpstreamError> {
    let started = Instant::now();
    let deadline = Duration::from_millis(timeout_ms);
    let fut = async {
        let mut builder = hyper::Request::builder()
            .method(req.method.clone())
            .uri(uri.clone());
        if let Some(h) = builder.headers_mut() {
            *h = req.headers.clone();
        }
        let request = builder
            .body(Full::new(req.body.clone()))
            .map_err(|_| UpstreamError::Unreachable)?;
        // no answer at all (refused, reset, closed before a response head): unreachable;
        // a body cut off after the head: broken
        let resp = http
            .request(request)
            .await
            .map_err(|_| UpstreamError::Unreachable)?;
        let (parts, mut incoming) = resp.into_parts();
        let declared = parts
            .headers
            .get(http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_RESPONSE_BYTES as u64) {
            return Err(UpstreamError::TooLarge);
        }
        let mut body = BytesMut::with_capacity(declared.unwrap_or(0) as usize);
        while let Some(frame) = incoming.frame().await {
            let frame = frame.map_err(|_| UpstreamError::Broken)?;
            if let Ok(chunk) = frame.into_data() {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(UpstreamError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
        }
        Ok(Upstream {
            status: parts.status,
            headers: parts.headers,
            body: body.freeze(),
            elapsed: started.elapsed(),
        })
    };
    tokio::time::timeout(deadline, fut)
        .await
        .unwrap_or(Err(UpstreamError::Timeout(timeout_ms)))
}

/// Sends `req` to `base` + path + query. `retries` extra attempts (idempotent reads only,
/// decided by the caller) on timeouts, connection failures and 502/503/504, each only if
/// `may_retry` agrees (the exchange counts every attempt against its rate limit, so the
/// caller charges each one and refuses one that no longer fits): else the last answer
/// stands.
pub async fn send(
    http: &HttpClient,
    base: &str,
    req: &OutgoingRequest,
    timeout_ms: u64,
    retries: u32,
    may_retry: &mut (dyn FnMut() -> bool + Send),
) -> Result<Upstream, UpstreamError> {
    let url = match req.query.as_deref() {
        Some(q) if !q.is_empty() => format!("{base}{}?{q}", req.path),
        _ => format!("{base}{}", req.path),
    };
    // a path or query the client sent that is not a valid URI never leaves keygate
    let uri: Uri = url.parse().map_err(|_| UpstreamError::Unreachable)?;
    let mut attempt = 0;
    loop {
        let r = once(http, &uri, req, timeout_ms).await;
        let retryable = match &r {
            Ok(u) => matches!(u.status.as_u16(), 502..=504),
            Err(UpstreamError::TooLarge) => false,
            Err(_) => true,
        };
        if !retryable || attempt >= retries {
            return r;
        }
        attempt += 1;
        let base_ms = 50u64 << attempt.min(5);
        let jitter = rand::random::<u64>() % (base_ms + 1);
        tokio::time::sleep(Duration::from_millis(base_ms / 2 + jitter)).await;
        // asked after the pause: a ban or a used-up budget learned meanwhile holds it
        if !may_retry() {
            return r;
        }
    }
}
