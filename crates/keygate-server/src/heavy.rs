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

/// The locks users' vault password checks take turns at, one per user (by the user id's
/// low bits; two users share one at a chance of 1 in 1024). A fixed array: nothing to
/// add or remove per user.
static CHECKING: [tokio::sync::Mutex<()>; 1024] =
    [const { tokio::sync::Mutex::const_new(()) }; 1024];

/// Held while one user's vault password check runs; dropped, it lets the next one in.
pub type UserTurn = tokio::sync::MutexGuard<'static, ()>;

/// One vault password check per user at a time, on this instance: a user's parallel
/// unlocks (a right password meets no lockout) could otherwise hold every [`KDF`] turn
/// and keep everyone else's unlocks waiting. Later ones wait their turn (so parallel
/// guesses still meet the lockout one by one), at most `wait`, then 503 `vault_busy`.
pub async fn one_per_user(user: uuid::Uuid, wait: Duration) -> ApiResult<UserTurn> {
    let lock = &CHECKING[(user.as_u128() % CHECKING.len() as u128) as usize];
    tokio::time::timeout(wait, lock.lock())
        .await
        .map_err(|_| ApiError::Status {
            status: StatusCode::SERVICE_UNAVAILABLE,
            code: "vault_busy",
            detail: "another password check of this vault is still running; try again shortly"
                .into(),
            retry_after: Some(1),
        })
}

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
        // one password check per user at a time; other users are not held up
        let u = uuid::Uuid::new_v4();
        let v = uuid::Uuid::from_u128(u.as_u128() ^ 1);
        let first = one_per_user(u, wait).await.unwrap();
        let busy = one_per_user(u, wait).await.err().map(|e| e.code());
        assert_eq!(busy, Some("vault_busy"));
        let other = one_per_user(v, wait).await.unwrap();
        let next = tokio::spawn(one_per_user(u, Duration::from_secs(5)));
        drop(first);
        drop(next.await.unwrap().unwrap());
        drop(other);
        // a waiter that gave up leaves the turn free for the next one
        let holder = one_per_user(u, wait).await.unwrap();
        assert!(one_per_user(u, wait).await.is_err());
        drop(holder);
        assert!(one_per_user(u, wait).await.is_ok());
        assert_eq!(KEYGEN.available_permits(), 2);
    }
}
