//! Bounds on CPU- and memory-heavy work run on Tokio's blocking pool (password
//! derivation, RSA key generation). That pool grows to 512 threads: without a bound of
//! their own, one user's parallel requests could start hundreds of such jobs at once,
//! exhaust the server's memory or cores, and take every user's gateway down with it.

use std::time::Duration;

use axum::http::StatusCode;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::error::{ApiError, ApiResult};

/// Argon2id derivations at once (64 MiB each with the default parameters).
pub static KDF: Semaphore = Semaphore::const_new(4);
/// RSA key generations at once (each keeps a core busy for up to a second).
pub static KEYGEN: Semaphore = Semaphore::const_new(2);
/// How long a request waits for a turn before it is refused.
pub const WAIT: Duration = Duration::from_secs(10);

/// A turn at `sem` within `wait`, else 503 with problem `code` and `Retry-After: 1`.
pub async fn turn(
    sem: &'static Semaphore,
    wait: Duration,
    code: &'static str,
) -> ApiResult<SemaphorePermit<'static>> {
    match tokio::time::timeout(wait, sem.acquire()).await {
        Ok(Ok(permit)) => Ok(permit),
        _ => Err(ApiError::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code,
            detail: "too many requests of this kind are running; try again shortly".into(),
            retry_after: Some(1),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Work past the bound waits for a turn, and is refused with 503 (and a
    /// Retry-After) when none comes in time.
    #[tokio::test]
    async fn work_beyond_the_bound_waits_then_is_refused() {
        static SEM: Semaphore = Semaphore::const_new(2);
        let wait = Duration::from_millis(50);
        let a = turn(&SEM, wait, "busy").await.unwrap();
        let _b = turn(&SEM, wait, "busy").await.unwrap();
        let busy = turn(&SEM, wait, "vault_busy").await.unwrap_err();
        assert_eq!(busy.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(busy.code(), "vault_busy");
        assert!(matches!(
            busy,
            ApiError::Status {
                retry_after: Some(1),
                ..
            }
        ));
        // a turn given back is taken by the next one waiting
        let waiting = tokio::spawn(turn(&SEM, Duration::from_secs(5), "busy"));
        drop(a);
        assert!(waiting.await.unwrap().is_ok());
        assert_eq!(KDF.available_permits(), 4);
        assert_eq!(KEYGEN.available_permits(), 2);
    }
}
