//! Integrations (seed `integrations`) and their OAuth tokens (seed `integration_tokens`).
//! Client secrets and tokens are opaque ciphertexts here (sealed with the user's DEK).

use sqlx::types::Json;
use uuid::Uuid;

use crate::{on_unique, Actor, DbTime, Result, StorageError, Store};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IntegrationRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: String,
    pub name: String,
    pub client_id: String,
    pub client_secret_ct: Option<Vec<u8>>,
    pub token_url: String,
    pub scopes: Json<Vec<String>>,
    pub config: Json<serde_json::Value>,
    /// active | needs_reconsent | error
    pub status: String,
    pub last_error: Option<String>,
    pub dek_version: i32,
    pub row_version: i64,
    pub created_at: DbTime,
    pub updated_at: DbTime,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IntegrationTokenRecord {
    pub integration_id: Uuid,
    pub user_id: Uuid,
    pub access_token_ct: Vec<u8>,
    pub refresh_token_ct: Option<Vec<u8>>,
    pub token_type: String,
    pub scopes: Json<Vec<String>>,
    pub expires_at: Option<DbTime>,
    pub dek_version: i32,
    pub refreshed_at: Option<DbTime>,
    pub refresh_attempts: i32,
    pub next_attempt_at: Option<DbTime>,
    pub last_error: Option<String>,
    pub created_at: DbTime,
    pub updated_at: DbTime,
}

/// A failed token refresh: attempt count, when to retry, and why.
#[derive(Debug, Clone)]
pub struct RefreshFailure {
    pub user_id: Uuid,
    pub integration_id: Uuid,
    pub attempts: i32,
    pub next_attempt_at: Option<DbTime>,
    pub error: String,
    pub now: DbTime,
    /// The `refreshed_at` of the tokens that failed: a refresh that has succeeded since
    /// (the owner's, on another instance) is not marked failed.
    pub refreshed_at: Option<DbTime>,
}

/// The most integrations one user may have.
pub const MAX_INTEGRATIONS_PER_USER: i64 = 50;

const ICOLS: &str = "id, user_id, provider, name, client_id, client_secret_ct, token_url, scopes, config, status, last_error, dek_version, row_version, created_at, updated_at";
const TCOLS: &str = "integration_id, user_id, access_token_ct, refresh_token_ct, token_type, scopes, expires_at, dek_version, refreshed_at, refresh_attempts, next_attempt_at, last_error, created_at, updated_at";

/// Inserts or replaces an integration's tokens (bound with [`bind_token!`]).
fn token_upsert_sql() -> String {
    format!(
        "INSERT INTO integration_tokens ({TCOLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14) \
         ON CONFLICT (integration_id) DO UPDATE SET access_token_ct = excluded.access_token_ct, \
         refresh_token_ct = excluded.refresh_token_ct, token_type = excluded.token_type, scopes = excluded.scopes, \
         expires_at = excluded.expires_at, dek_version = excluded.dek_version, refreshed_at = excluded.refreshed_at, \
         refresh_attempts = excluded.refresh_attempts, next_attempt_at = excluded.next_attempt_at, \
         last_error = excluded.last_error, updated_at = excluded.updated_at"
    )
}

/// Binds the 14 columns of one `IntegrationTokenRecord` (order of `TCOLS`).
macro_rules! bind_token {
    ($q:expr, $t:expr) => {{
        let t = $t;
        $q.bind(t.integration_id)
            .bind(t.user_id)
            .bind(t.access_token_ct.clone())
            .bind(t.refresh_token_ct.clone())
            .bind(t.token_type.clone())
            .bind(t.scopes.clone())
            .bind(t.expires_at)
            .bind(t.dek_version)
            .bind(t.refreshed_at)
            .bind(t.refresh_attempts)
            .bind(t.next_attempt_at)
            .bind(t.last_error.clone())
            .bind(t.created_at)
            .bind(t.updated_at)
    }};
}

impl Store {
    /// Stores integration `i`, unless its user already has [`MAX_INTEGRATIONS_PER_USER`]
    /// ([`StorageError::LimitReached`]): each one is refreshed by the platform's job.
    /// Adds an integration, and its first tokens when given, in one transaction.
    pub async fn create_integration(
        &self,
        actor: Actor,
        i: &IntegrationRecord,
        tokens: Option<&IntegrationTokenRecord>,
    ) -> Result<()> {
        let sql = format!("INSERT INTO integrations ({ICOLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)");
        let token_sql = token_upsert_sql();
        in_tx!(self, actor, |tx| {
            // the count and the insert, one user at a time: a burst cannot pass together
            owner_lock!(self, tx, i.user_id, crate::webhooks::CAP_LOCKS);
            let n: i64 = sqlx::query_scalar::<DB, i64>(
                "SELECT COUNT(*) FROM integrations WHERE user_id = $1",
            )
            .bind(i.user_id)
            .fetch_one(&mut *tx)
            .await?;
            if n >= MAX_INTEGRATIONS_PER_USER {
                return Err(StorageError::LimitReached(
                    "integrations",
                    MAX_INTEGRATIONS_PER_USER,
                ));
            }
            require_active_dek!(self, tx, i.user_id, i.dek_version);
            sqlx::query::<DB>(&sql)
                .bind(i.id)
                .bind(i.user_id)
                .bind(i.provider.clone())
                .bind(i.name.clone())
                .bind(i.client_id.clone())
                .bind(i.client_secret_ct.clone())
                .bind(i.token_url.clone())
                .bind(i.scopes.clone())
                .bind(i.config.clone())
                .bind(i.status.clone())
                .bind(i.last_error.clone())
                .bind(i.dek_version)
                .bind(i.row_version)
                .bind(i.created_at)
                .bind(i.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_unique(e, "name"))?;
            if let Some(t) = tokens {
                bind_token!(sqlx::query::<DB>(&token_sql), t)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(())
    }

    pub async fn list_integrations(
        &self,
        actor: Actor,
        user_id: Uuid,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<IntegrationRecord>> {
        let sql = format!("SELECT {ICOLS} FROM integrations WHERE user_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    pub async fn integration(
        &self,
        actor: Actor,
        user_id: Uuid,
        id: Uuid,
    ) -> Result<Option<IntegrationRecord>> {
        let sql = format!("SELECT {ICOLS} FROM integrations WHERE user_id = $1 AND id = $2");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Every user's integrations after `cursor`, for the admin view (service identity;
    /// the caller must have checked that an admin asks).
    pub async fn list_all_integrations(
        &self,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<IntegrationRecord>> {
        let sql = format!(
            "SELECT {ICOLS} FROM integrations WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        );
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Any user's integration by id (service identity: the refresh job).
    pub async fn integration_by_id(&self, id: Uuid) -> Result<Option<IntegrationRecord>> {
        let sql = format!("SELECT {ICOLS} FROM integrations WHERE id = $1");
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Integrations that need consent and whose owner was not told since they came to
    /// need it (no `integration.needs_reconsent` claimed at or after the status change,
    /// `updated_at`): the notices a cool-down held back, oldest first.
    pub async fn integrations_awaiting_reconsent_notice(
        &self,
        limit: i64,
    ) -> Result<Vec<IntegrationRecord>> {
        let sql = format!(
            "SELECT {ICOLS} FROM integrations i WHERE status = 'needs_reconsent' \
             AND NOT EXISTS (SELECT 1 FROM sent_reminders r WHERE r.subject_id = i.id \
                             AND r.created_at >= i.updated_at) \
             ORDER BY updated_at LIMIT $1"
        );
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Sets only an integration's `status` and `last_error` (a token refresh's outcome,
    /// tokens stored), unless it is `disabled` (paused by its owner: answered unchanged,
    /// so a refresh that was under way when it was paused cannot switch it on): unlike [`Store::update_integration`] with no expected version, it
    /// cannot write back fields another request or a data-key rotation changed meanwhile.
    pub async fn set_integration_status(
        &self,
        actor: Actor,
        user_id: Uuid,
        id: Uuid,
        status: &str,
        last_error: Option<&str>,
        now: DbTime,
    ) -> Result<IntegrationRecord> {
        let sel = format!("SELECT {ICOLS} FROM integrations WHERE user_id = $1 AND id = $2");
        Ok(in_tx!(self, actor, |tx| {
            let n = sqlx::query::<DB>(
                "UPDATE integrations SET status = $1, last_error = $2, updated_at = $3, \
                 row_version = row_version + 1 WHERE user_id = $4 AND id = $5 AND status <> 'disabled'",
            )
            .bind(status)
            .bind(last_error)
            .bind(now)
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            // a paused integration keeps its status: answered as it is
            let row: Option<IntegrationRecord> = sqlx::query_as::<DB, _>(&sel)
                .bind(user_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?;
            match row {
                Some(r) if n == 1 || r.status == "disabled" => r,
                _ => return Err(StorageError::NotFound),
            }
        }))
    }

    /// Writes the editable fields at `expected_version` (`None`: unconditionally; status
    /// alone goes through [`Store::set_integration_status`]).
    pub async fn update_integration(
        &self,
        actor: Actor,
        i: &IntegrationRecord,
        expected_version: Option<i64>,
    ) -> Result<IntegrationRecord> {
        let sel = format!("SELECT {ICOLS} FROM integrations WHERE id = $1");
        Ok(in_tx!(self, actor, |tx| {
            let n = sqlx::query::<DB>(
                "UPDATE integrations SET provider = $1, name = $2, client_id = $3, client_secret_ct = $4, token_url = $5, \
                 scopes = $6, config = $7, status = $8, last_error = $9, dek_version = $10, updated_at = $11, \
                 row_version = row_version + 1 WHERE user_id = $12 AND id = $13 AND ($14 IS NULL OR row_version = $14)",
            )
            .bind(i.provider.clone())
            .bind(i.name.clone())
            .bind(i.client_id.clone())
            .bind(i.client_secret_ct.clone())
            .bind(i.token_url.clone())
            .bind(i.scopes.clone())
            .bind(i.config.clone())
            .bind(i.status.clone())
            .bind(i.last_error.clone())
            .bind(i.dek_version)
            .bind(i.updated_at)
            .bind(i.user_id)
            .bind(i.id)
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(|e| on_unique(e, "name"))?
            .rows_affected();
            if n != 1 {
                return Err(StorageError::VersionMismatch);
            }
            sqlx::query_as::<DB, _>(&sel)
                .bind(i.id)
                .fetch_one(&mut *tx)
                .await?
        }))
    }

    pub async fn delete_integration(&self, actor: Actor, user_id: Uuid, id: Uuid) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(
                "DELETE FROM integration_tokens WHERE user_id = $1 AND integration_id = $2",
            )
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query::<DB>("DELETE FROM integrations WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    pub async fn integration_token(
        &self,
        actor: Actor,
        user_id: Uuid,
        integration_id: Uuid,
    ) -> Result<Option<IntegrationTokenRecord>> {
        let sql = format!(
            "SELECT {TCOLS} FROM integration_tokens WHERE user_id = $1 AND integration_id = $2"
        );
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(integration_id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Re-seals an integration's tokens (a DEK rotation): writes `t`'s ciphertexts and DEK
    /// version only if the row still holds the access token ciphertext `was` (every write
    /// of the tokens seals afresh, so any write since the read changed it). `false`: the
    /// tokens were rewritten meanwhile (a refresh, new tokens), and `t` would have put
    /// stale ones back.
    pub async fn reseal_integration_token(
        &self,
        actor: Actor,
        t: &IntegrationTokenRecord,
        was: &[u8],
    ) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(
                "UPDATE integration_tokens SET access_token_ct = $1, refresh_token_ct = $2, dek_version = $3, updated_at = $4 \
                 WHERE user_id = $5 AND integration_id = $6 AND access_token_ct = $7",
            )
            .bind(t.access_token_ct.clone())
            .bind(t.refresh_token_ct.clone())
            .bind(t.dek_version)
            .bind(t.updated_at)
            .bind(t.user_id)
            .bind(t.integration_id)
            .bind(was.to_vec())
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Creates or replaces an integration's tokens.
    pub async fn put_integration_token(
        &self,
        actor: Actor,
        t: &IntegrationTokenRecord,
    ) -> Result<()> {
        let sql = token_upsert_sql();
        in_tx!(self, actor, |tx| {
            require_active_dek!(self, tx, t.user_id, t.dek_version);
            bind_token!(sqlx::query::<DB>(&sql), t)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Records a failed refresh attempt; the job retries at `next_attempt_at`.
    pub async fn record_refresh_failure(&self, actor: Actor, f: &RefreshFailure) -> Result<()> {
        in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(
                "UPDATE integration_tokens SET refresh_attempts = $1, next_attempt_at = $2, last_error = $3, updated_at = $4 \
                 WHERE user_id = $5 AND integration_id = $6 \
                 AND (refreshed_at = $7 OR (refreshed_at IS NULL AND $7 IS NULL))",
            )
            .bind(f.attempts)
            .bind(f.next_attempt_at)
            .bind(f.error.clone())
            .bind(f.now)
            .bind(f.user_id)
            .bind(f.integration_id)
            .bind(f.refreshed_at)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Tokens of active integrations that expire before `expires_before` and whose next
    /// attempt is due at `now` (refresh job), by (`expires_at`, `integration_id`) after `after`: a
    /// pass pages through all of them, so no page of tokens that keep failing can hide
    /// the rest.
    pub async fn tokens_to_refresh(
        &self,
        expires_before: DbTime,
        now: DbTime,
        after: Option<(DbTime, Uuid)>,
        limit: i64,
    ) -> Result<Vec<IntegrationTokenRecord>> {
        let sql = format!(
            "SELECT {} FROM integration_tokens t JOIN integrations i ON i.id = t.integration_id \
             WHERE i.status = 'active' AND t.refresh_token_ct IS NOT NULL AND t.expires_at IS NOT NULL \
             AND t.expires_at < $1 AND (t.next_attempt_at IS NULL OR t.next_attempt_at <= $2) \
             AND ($4 IS NULL OR t.expires_at > $4 OR (t.expires_at = $4 AND t.integration_id > $5)) \
             ORDER BY t.expires_at, t.integration_id LIMIT $3",
            TCOLS
                .split(", ")
                .map(|c| format!("t.{c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(expires_before)
                .bind(now)
                .bind(limit)
                .bind(after.map(|a| a.0))
                .bind(after.map(|a| a.1))
                .fetch_all(&mut *tx)
                .await?
        }))
    }
}
