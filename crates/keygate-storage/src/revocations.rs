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
}
