//! Connections (seed `exchange_connections` minus key columns) and balances
//! (seed `exchange_balances`).

use futures::future::BoxFuture;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{on_unique, Actor, DbTime, Result, StorageError, Store};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ConnectionRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub name: String,
    pub exchange: String,
    pub credential_id: Uuid,
    pub base_url: Option<String>,
    pub timeout_ms: i32,
    pub max_retries: i32,
    pub is_default: bool,
    pub is_enabled: bool,
    pub status: String,
    pub scopes: Option<Json<Vec<String>>>,
    pub limits: Json<serde_json::Value>,
    pub tags: Json<Vec<String>>,
    pub metadata: Json<serde_json::Value>,
    pub last_successful_ping: Option<DbTime>,
    pub last_error_message: Option<String>,
    pub error_count: i32,
    pub warnings: Json<Vec<String>>,
    pub last_verified_at: Option<DbTime>,
    pub verification_status: String,
    pub row_version: i64,
    pub created_at: DbTime,
    pub updated_at: DbTime,
}

/// What a connection list is narrowed to (`None`: any).
#[derive(Debug, Clone, Default)]
pub struct ConnectionFilter {
    pub exchange: Option<String>,
    pub status: Option<String>,
    pub is_default: Option<bool>,
    pub is_enabled: Option<bool>,
    pub credential_id: Option<Uuid>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BalanceRecord {
    pub id: Uuid,
    pub connection_id: Uuid,
    pub user_id: Uuid,
    pub asset: String,
    pub account_type: String,
    pub free: String,
    pub locked: String,
    pub total: String,
    pub usd_value: Option<String>,
    pub last_price: Option<String>,
    pub synced_at: DbTime,
}

pub(crate) const COLS: &str = "id, user_id, name, exchange, credential_id, base_url, timeout_ms, max_retries, is_default, is_enabled, status, scopes, limits, tags, metadata, last_successful_ping, last_error_message, error_count, warnings, last_verified_at, verification_status, row_version, created_at, updated_at";
const BCOLS: &str = "id, connection_id, user_id, asset, account_type, free, locked, total, usd_value, last_price, synced_at";

impl Store {
    pub async fn create_connection(&self, actor: Actor, c: &ConnectionRecord) -> Result<()> {
        let sql = format!("INSERT INTO connections ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24)");
        in_tx!(self, actor, |tx| {
            if c.is_default {
                sqlx::query::<DB>(
                    "UPDATE connections SET is_default = $1 WHERE user_id = $2 AND exchange = $3",
                )
                .bind(false)
                .bind(c.user_id)
                .bind(c.exchange.clone())
                .execute(&mut *tx)
                .await?;
            }
            sqlx::query::<DB>(&sql)
                .bind(c.id)
                .bind(c.user_id)
                .bind(c.name.clone())
                .bind(c.exchange.clone())
                .bind(c.credential_id)
                .bind(c.base_url.clone())
                .bind(c.timeout_ms)
                .bind(c.max_retries)
                .bind(c.is_default)
                .bind(c.is_enabled)
                .bind(c.status.clone())
                .bind(c.scopes.clone())
                .bind(c.limits.clone())
                .bind(c.tags.clone())
                .bind(c.metadata.clone())
                .bind(c.last_successful_ping)
                .bind(c.last_error_message.clone())
                .bind(c.error_count)
                .bind(c.warnings.clone())
                .bind(c.last_verified_at)
                .bind(c.verification_status.clone())
                .bind(c.row_version)
                .bind(c.created_at)
                .bind(c.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_unique(e, "name"))?;
        });
        Ok(())
    }

    pub async fn list_connections(
        &self,
        actor: Actor,
        user_id: Uuid,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ConnectionRecord>> {
        self.list_connections_where(actor, user_id, &ConnectionFilter::default(), cursor, limit)
            .await
    }

    /// [`Store::list_connections`] narrowed by `filter` (each set field must match).
    pub async fn list_connections_where(
        &self,
        actor: Actor,
        user_id: Uuid,
        filter: &ConnectionFilter,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<ConnectionRecord>> {
        let sql = format!(
            "SELECT {COLS} FROM connections WHERE user_id = $1 AND ($2 IS NULL OR id > $2) \
             AND ($4 IS NULL OR exchange = $4) AND ($5 IS NULL OR status = $5) \
             AND ($6 IS NULL OR is_default = $6) AND ($7 IS NULL OR is_enabled = $7) \
             AND ($8 IS NULL OR credential_id = $8) ORDER BY id LIMIT $3"
        );
        Ok(in_tx!(@quiet self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(cursor)
                .bind(limit)
                .bind(filter.exchange.clone())
                .bind(filter.status.clone())
                .bind(filter.is_default)
                .bind(filter.is_enabled)
                .bind(filter.credential_id)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    pub async fn connection(
        &self,
        actor: Actor,
        user_id: Uuid,
        id: Uuid,
    ) -> Result<Option<ConnectionRecord>> {
        let sql = format!("SELECT {COLS} FROM connections WHERE user_id = $1 AND id = $2");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Writes the editable fields if the row is still at `expected_version`.
    /// `resync`: the key or upstream changed, so the connection is due for the background
    /// sync at once (its last verification was of the old one).
    pub async fn update_connection(
        &self,
        actor: Actor,
        c: &ConnectionRecord,
        expected_version: i64,
        resync: bool,
    ) -> Result<ConnectionRecord> {
        let sel = format!("SELECT {COLS} FROM connections WHERE user_id = $1 AND id = $2");
        Ok(in_tx!(self, actor, |tx| {
            if c.is_default {
                sqlx::query::<DB>("UPDATE connections SET is_default = $1 WHERE user_id = $2 AND exchange = $3 AND id <> $4")
                    .bind(false)
                    .bind(c.user_id)
                    .bind(c.exchange.clone())
                    .bind(c.id)
                    .execute(&mut *tx)
                    .await?;
            }
            let n = sqlx::query::<DB>("UPDATE connections SET name = $1, credential_id = $2, base_url = $3, timeout_ms = $4, max_retries = $5, is_default = $6, is_enabled = $7, scopes = $8, limits = $9, tags = $10, metadata = $11, updated_at = $12, row_version = row_version + 1, sync_attempted_at = CASE WHEN $16 THEN NULL ELSE sync_attempted_at END, last_verified_at = CASE WHEN $16 THEN NULL ELSE last_verified_at END WHERE user_id = $13 AND id = $14 AND row_version = $15")
                .bind(c.name.clone())
                .bind(c.credential_id)
                .bind(c.base_url.clone())
                .bind(c.timeout_ms)
                .bind(c.max_retries)
                .bind(c.is_default)
                .bind(c.is_enabled)
                // not `status`: the health checks own it, and write it without a version
                // bump, so an edit must not put back the status it read
                .bind(c.scopes.clone())
                .bind(c.limits.clone())
                .bind(c.tags.clone())
                .bind(c.metadata.clone())
                .bind(c.updated_at)
                .bind(c.user_id)
                .bind(c.id)
                .bind(expected_version)
                .bind(resync)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_unique(e, "name"))?
                .rows_affected();
            if n != 1 {
                return Err(StorageError::VersionMismatch);
            }
            sqlx::query_as::<DB, _>(&sel)
                .bind(c.user_id)
                .bind(c.id)
                .fetch_one(&mut *tx)
                .await?
        }))
    }

    pub async fn delete_connection(&self, actor: Actor, user_id: Uuid, id: Uuid) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("DELETE FROM balances WHERE user_id = $1 AND connection_id = $2")
                .bind(user_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query::<DB>("DELETE FROM api_calls WHERE user_id = $1 AND connection_id = $2")
                .bind(user_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query::<DB>("DELETE FROM connections WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        // its call rows went with it: carried anomaly counts would still hold them
        self.history.clear();
        Ok(n > 0)
    }

    /// Health after a call or a check: success resets the error count.
    pub async fn record_connection_health(
        &self,
        actor: Actor,
        user_id: Uuid,
        id: Uuid,
        ok: bool,
        error: Option<&str>,
        now: DbTime,
    ) -> Result<()> {
        in_tx!(self, actor, |tx| {
            if ok {
                sqlx::query::<DB>("UPDATE connections SET last_successful_ping = $1, error_count = 0, status = 'healthy' WHERE user_id = $2 AND id = $3")
                    .bind(now)
                    .bind(user_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            } else {
                sqlx::query::<DB>("UPDATE connections SET last_error_message = $1, error_count = error_count + 1, status = CASE WHEN error_count + 1 >= 5 THEN 'failing' ELSE 'degraded' END WHERE user_id = $2 AND id = $3")
                    .bind(error)
                    .bind(user_id)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(())
    }

    /// Stores a key check's outcome on the connection. `warnings` None (a check that
    /// failed, which learnt nothing of the key) keeps the ones stored: a key found risky
    /// stays marked so through an exchange's error.
    pub async fn record_verification(
        &self,
        actor: Actor,
        user_id: Uuid,
        id: Uuid,
        status: &str,
        warnings: Option<&[String]>,
        now: DbTime,
    ) -> Result<()> {
        in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("UPDATE connections SET verification_status = $1, warnings = COALESCE($2, warnings), last_verified_at = $3 WHERE user_id = $4 AND id = $5")
                .bind(status)
                .bind(warnings.map(Json))
                .bind(now)
                .bind(user_id)
                .bind(id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Replaces a connection's synced balances with a fresh snapshot.
    pub fn replace_balances<'a>(
        &'a self,
        actor: Actor,
        user_id: Uuid,
        connection_id: Uuid,
        rows: &'a [BalanceRecord],
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let ins = format!("INSERT INTO balances ({BCOLS}) VALUES ");
            in_tx!(self, actor, |tx| {
                sqlx::query::<DB>("DELETE FROM balances WHERE user_id = $1 AND connection_id = $2")
                    .bind(user_id)
                    .bind(connection_id)
                    .execute(&mut *tx)
                    .await?;
                if !rows.is_empty() {
                    let sql = crate::multi_insert(&ins, 11, rows.len());
                    let mut q = sqlx::query::<DB>(&sql);
                    for b in rows {
                        q = q
                            .bind(b.id)
                            .bind(b.connection_id)
                            .bind(b.user_id)
                            .bind(b.asset.clone())
                            .bind(b.account_type.clone())
                            .bind(b.free.clone())
                            .bind(b.locked.clone())
                            .bind(b.total.clone())
                            .bind(b.usd_value.clone())
                            .bind(b.last_price.clone())
                            .bind(b.synced_at);
                    }
                    q.execute(&mut *tx).await?;
                }
            });
            Ok(())
        })
    }

    pub async fn balances(
        &self,
        actor: Actor,
        user_id: Uuid,
        connection_id: Uuid,
    ) -> Result<Vec<BalanceRecord>> {
        let sql = format!("SELECT {BCOLS} FROM balances WHERE user_id = $1 AND connection_id = $2 ORDER BY asset, account_type");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(connection_id)
                .fetch_all(&mut *tx)
                .await?
        }))
    }
}
