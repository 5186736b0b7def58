//! Token revocations ("sign out everywhere"): per user, the instant before which that
//! user's tokens were issued is refused. The server keeps the table in memory and
//! reloads it every second (`keygate-server/src/revocations.rs`).

use uuid::Uuid;

use crate::{Actor, DbTime, Result, Store};

/// One user's cut-off.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenRevocation {
    pub user_id: Uuid,
    /// Tokens issued before this instant are refused.
    pub issued_before: DbTime,
    /// When the row last changed (the writer's clock).
    pub updated_at: DbTime,
}

impl Store {
    /// Refuses every token of `user` issued before `before`, ends the user's console
    /// sessions and deletes their unused sign-in links, in one transaction (as the service identity: console sessions are
    /// service-only rows; the route has checked who may do this). A cut-off never moves
    /// back. Answers the cut-off now in force.
    pub async fn revoke_tokens(&self, user: Uuid, before: DbTime, now: DbTime) -> Result<DbTime> {
        let upsert = "INSERT INTO token_revocations (user_id, issued_before, updated_at) VALUES ($1, $2, $3) \
                      ON CONFLICT (user_id) DO UPDATE SET \
                      issued_before = CASE WHEN excluded.issued_before > token_revocations.issued_before \
                                           THEN excluded.issued_before ELSE token_revocations.issued_before END, \
                      updated_at = excluded.updated_at";
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>(upsert)
                .bind(user)
                .bind(before)
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query::<DB>("DELETE FROM ui_sessions WHERE user_id = $1")
                .bind(user)
                .execute(&mut *tx)
                .await?;
            // a sign-in link made before is no way back in
            sqlx::query::<DB>("DELETE FROM ui_login_links WHERE user_id = $1")
                .bind(user)
                .execute(&mut *tx)
                .await?;
            sqlx::query_scalar::<DB, DbTime>(
                "SELECT issued_before FROM token_revocations WHERE user_id = $1",
            )
            .bind(user)
            .fetch_one(&mut *tx)
            .await?
        }))
    }

    /// Every user's cut-off (one row per user who ever signed out everywhere).
    pub async fn token_revocations(&self) -> Result<Vec<TokenRevocation>> {
        // a read, every second on every instance: it must not move the write epoch,
        // which would drop the gateway's context cache each time
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query_as::<DB, TokenRevocation>(
                "SELECT user_id, issued_before, updated_at FROM token_revocations",
            )
            .fetch_all(&mut *tx)
            .await?
        }))
    }

    /// Refuses `user`'s tokens of one sign-in (`sign_in`: a token's `session_id`, else an
    /// id derived from the token; `user` the nil UUID for a service-role token without
    /// `sub`) until `expires_at`; revoking again keeps the later expiry. With `cap`, only
    /// while `user` has fewer than that many revocations in force (or this one already
    /// is): every instance reloads them all each second, so a user naming sign-ins (by
    /// session id) must not be able to grow them without bound. Answers the expiry now in
    /// force, `None` when the cap refused it. Not a change the gateway's context cache
    /// depends on (`@quiet`).
    pub async fn revoke_sign_in(
        &self,
        user: Uuid,
        sign_in: Uuid,
        expires_at: DbTime,
        now: DbTime,
        cap: Option<i64>,
    ) -> Result<Option<DbTime>> {
        // one statement (the count and the insert see one snapshot); on PostgreSQL two
        // instances racing may each add one past the cap, which is harmless
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query_scalar::<DB, DbTime>(
                "INSERT INTO revoked_sign_ins (user_id, sign_in, expires_at, revoked_at) \
                 SELECT $1, $2, $3, $4 WHERE \
                   (SELECT count(*) FROM revoked_sign_ins WHERE user_id = $1 AND expires_at >= $4) < $5 \
                   OR EXISTS (SELECT 1 FROM revoked_sign_ins WHERE user_id = $1 AND sign_in = $2) \
                 ON CONFLICT (user_id, sign_in) DO UPDATE SET \
                 expires_at = CASE WHEN excluded.expires_at > revoked_sign_ins.expires_at \
                                   THEN excluded.expires_at ELSE revoked_sign_ins.expires_at END \
                 RETURNING expires_at",
            )
            .bind(user)
            .bind(sign_in)
            .bind(expires_at)
            .bind(now)
            .bind(cap.unwrap_or(i64::MAX))
            .fetch_optional(&mut *tx)
            .await?
        }))
    }

    /// The revoked sign-ins in force at `now`: `(user, sign_in, expires_at)`.
    pub async fn revoked_sign_ins(&self, now: DbTime) -> Result<Vec<(Uuid, Uuid, DbTime)>> {
        // read every second on every instance: must not move the write epoch
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query_as::<DB, (Uuid, Uuid, DbTime)>(
                "SELECT user_id, sign_in, expires_at FROM revoked_sign_ins WHERE expires_at >= $1",
            )
            .bind(now)
            .fetch_all(&mut *tx)
            .await?
        }))
    }

    /// Drops revoked sign-ins whose tokens expired before `before`.
    pub async fn prune_revoked_sign_ins(&self, before: DbTime) -> Result<u64> {
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query::<DB>("DELETE FROM revoked_sign_ins WHERE expires_at < $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        }))
    }
}
