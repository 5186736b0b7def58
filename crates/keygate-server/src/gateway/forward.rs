//! Forwarding a signed request: pooled client (HTTP/1.1 and HTTP/2 over rustls), a
//! per-connection timeout, retries with jittered backoff only for idempotent reads, and a
//! cap on the size of what comes back.

use std::time::{Duration, Instant};

use axum::http::{HeaderMap, HeaderName, StatusCode};
use bytes::{Bytes, BytesMut};
use keygate_exchanges::OutgoingRequest;

use crate::error::ApiError;

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

fn classify(e: &reqwest::Error, timeout_ms: u64) -> UpstreamError {
    if e.is_timeout() {
        UpstreamError::Timeout(timeout_ms)
    } else if e.is_connect() || e.is_request() {
        UpstreamError::Unreachable
    } else {
        UpstreamError::Broken
    }
}

async fn once(
    http: &reqwest::Client,
    url: &str,
    req: &OutgoingRequest,
    timeout_ms: u64,
) -> Result<Upstream, UpstreamError> {
    let started = Instant::now();
    let deadline = Duration::from_millis(timeout_ms);
    let fut = async {
        let mut resp = http
            .request(req.method.clone(), url)
            .headers(req.headers.clone())
            .body(req.body.clone())
            .send()
            .await
            .map_err(|e| classify(&e, timeout_ms))?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
        {
            return Err(UpstreamError::TooLarge);
        }
        let mut body = BytesMut::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| classify(&e, timeout_ms))? {
            if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                return Err(UpstreamError::TooLarge);
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Upstream {
            status,
            headers,
            body: body.freeze(),
            elapsed: started.elapsed(),
        })
    };
    tokio::time::timeout(deadline, fut)
        .await
        .unwrap_or(Err(UpstreamError::Timeout(timeout_ms)))
}

/// Sends `req` to `base` + path + query. `retries` extra attempts (idempotent reads only,
/// decided by the caller) on timeouts, connection failures and 502/503/504.
pub async fn send(
    http: &reqwest::Client,
    base: &str,
    req: &OutgoingRequest,
    timeout_ms: u64,
    retries: u32,
) -> Result<Upstream, UpstreamError> {
    let url = match req.query.as_deref() {
        Some(q) if !q.is_empty() => format!("{base}{}?{q}", req.path),
        _ => format!("{base}{}", req.path),
    };
    let mut attempt = 0;
    loop {
        let r = once(http, &url, req, timeout_ms).await;
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
    }
}
