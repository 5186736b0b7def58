//! What one gateway call needs from the database, read in a single transaction, and the
//! shared request counters (PostgreSQL: shared by every instance).

use uuid::Uuid;

use crate::connections::COLS as CONN_COLS;
use crate::credentials::{CCOLS, SCOLS};
use crate::keys::COLS as KEY_COLS;
use crate::vault::SESSION_COLS;
use crate::{
    Actor, ConnectionRecord, CredentialRecord, DbTime, Result, SecretRecord, Store, UserKeyRecord,
    VaultSession,
};

/// The connection, its credential, the generation that would sign, and the owner's key
/// state, as of one consistent read.
#[derive(Debug, Clone)]
pub struct CallContext {
    pub connection: ConnectionRecord,
    pub credential: CredentialRecord,
    /// The requested generation (default: the credential's current one), if it exists.
    pub secret: Option<SecretRecord>,
    /// The owner's active DEK record (`None` before the first secret was stored).
    pub user_key: Option<UserKeyRecord>,
    /// The owner's live unlock session, looked up only for password-protected vaults.
    pub vault_session: Option<VaultSession>,
    /// The limits of the credential's other connections: a spend cap set on one of them
    /// counts this connection's calls too, so they are reserved while under way.
    pub sibling_limits: Vec<crate::Json<serde_json::Value>>,
}

impl Store {
    /// Loads everything a proxied call through connection `connection_id` of `user_id`
    /// needs; `None` when the connection does not exist for this user.
    pub async fn call_context(
        &self,
        actor: Actor,
        user_id: Uuid,
        connection_id: Uuid,
        generation: Option<i32>,
        now: DbTime,
    ) -> Result<Option<CallContext>> {
        let conn_sql =
            format!("SELECT {CONN_COLS} FROM connections WHERE user_id = $1 AND id = $2");
        let cred_sql = format!("SELECT {CCOLS} FROM credentials WHERE user_id = $1 AND id = $2");
        let secret_sql = format!("SELECT {SCOLS} FROM credential_secrets WHERE user_id = $1 AND credential_id = $2 AND generation = $3");
        let key_sql = format!("SELECT {KEY_COLS} FROM user_keys WHERE user_id = $1 AND state = 'active' ORDER BY version DESC LIMIT 1");
        let session_sql = format!(
            "SELECT {SESSION_COLS} FROM vault_sessions WHERE user_id = $1 AND expires_at > $2"
        );
        let siblings_sql =
            "SELECT limits FROM connections WHERE user_id = $1 AND credential_id = $2 AND id <> $3";
        Ok(in_tx!(@quiet self, actor, |tx| {
            let connection: Option<ConnectionRecord> = sqlx::query_as::<DB, _>(&conn_sql)
                .bind(user_id)
                .bind(connection_id)
                .fetch_optional(&mut *tx)
                .await?;
            match connection {
                None => None,
                Some(connection) => {
                    let credential: CredentialRecord = sqlx::query_as::<DB, _>(&cred_sql)
                        .bind(user_id)
                        .bind(connection.credential_id)
                        .fetch_one(&mut *tx)
                        .await?;
                    let secret: Option<SecretRecord> = sqlx::query_as::<DB, _>(&secret_sql)
                        .bind(user_id)
                        .bind(credential.id)
                        .bind(generation.unwrap_or(credential.current_generation))
                        .fetch_optional(&mut *tx)
                        .await?;
                    let user_key: Option<UserKeyRecord> = sqlx::query_as::<DB, _>(&key_sql)
                        .bind(user_id)
                        .fetch_optional(&mut *tx)
                        .await?;
                    let vault_session = if user_key
                        .as_ref()
                        .is_some_and(|k| k.protection == "password")
                    {
                        sqlx::query_as::<DB, _>(&session_sql)
                            .bind(user_id)
                            .bind(now)
                            .fetch_optional(&mut *tx)
                            .await?
                    } else {
                        None
                    };
                    let sibling_limits = sqlx::query_scalar::<DB, crate::Json<serde_json::Value>>(siblings_sql)
                        .bind(user_id)
                        .bind(credential.id)
                        .bind(connection.id)
                        .fetch_all(&mut *tx)
                        .await?;
                    Some(CallContext {
                        connection,
                        credential,
                        secret,
                        user_key,
                        vault_session,
                        sibling_limits,
                    })
                }
            }
        }))
    }

    /// Adds one to each `(bucket, window_start)` counter and returns the new counts in the
    /// same order, in one statement (PostgreSQL: shared by every instance).
    pub async fn bump_counters(&self, actor: Actor, windows: &[(String, i64)]) -> Result<Vec<i64>> {
        if windows.is_empty() {
            return Ok(Vec::new());
        }
        let mut sql =
            String::from("INSERT INTO rate_counters (bucket, window_start, count) VALUES ");
        for i in 0..windows.len() {
            if i > 0 {
                sql.push(',');
            }
            sql.push_str(&format!("(${}, ${}, 1)", 2 * i + 1, 2 * i + 2));
        }
        sql.push_str(" ON CONFLICT (bucket, window_start) DO UPDATE SET count = rate_counters.count + 1 RETURNING bucket, window_start, count");
        let rows: Vec<(String, i64, i64)> = in_tx!(@quiet self, actor, |tx| {
            let mut q = sqlx::query_as::<DB, (String, i64, i64)>(&sql);
            for (b, w) in windows {
                q = q.bind(b.clone()).bind(*w);
            }
            q.fetch_all(&mut *tx).await?
        });
        Ok(windows
            .iter()
            .map(|(b, w)| {
                rows.iter()
                    .find(|(rb, rw, _)| rb == b && rw == w)
                    .map(|r| r.2)
                    .unwrap_or(i64::MAX)
            })
            .collect())
    }
}

impl Store {
    /// Enabled connections whose key was last checked before `before` (or never), oldest
    /// first: `(user_id, connection_id)` for the background sync.
    pub async fn connections_due_for_sync(
        &self,
        before: DbTime,
        now: DbTime,
        limit: i64,
    ) -> Result<Vec<(Uuid, Uuid)>> {
        // Claimed (`sync_attempted_at`) whatever the sync then finds: a connection whose
        // check fails (a revoked key, an unreachable or disallowed upstream) is tried again
        // after the interval, not on every run ahead of every other connection. Another
        // instance does not pick a claimed one.
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, (Uuid, Uuid)>(
                // the outer conditions again: on PostgreSQL a racing claim re-checks only
                // the outer WHERE of a row it waited for
                "UPDATE connections SET sync_attempted_at = $3 \
                 WHERE is_enabled AND (sync_attempted_at IS NULL OR sync_attempted_at < $1) \
                 AND id IN (\
                 SELECT id FROM connections WHERE is_enabled \
                 AND (last_verified_at IS NULL OR last_verified_at < $1) \
                 AND (sync_attempted_at IS NULL OR sync_attempted_at < $1) \
                 ORDER BY sync_attempted_at IS NOT NULL, sync_attempted_at, \
                 last_verified_at IS NOT NULL, last_verified_at, id LIMIT $2) \
                 RETURNING user_id, id",
            )
            .bind(before)
            .bind(limit)
            .bind(now)
            .fetch_all(&mut *tx)
            .await?
        }))
    }
}
