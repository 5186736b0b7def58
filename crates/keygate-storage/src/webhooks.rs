//! Webhook endpoints (per user, or platform-wide with `user_id` NULL) and the delivery
//! queue / log. Deliveries are claimed by moving `claimed_until` forward (PostgreSQL:
//! `FOR UPDATE SKIP LOCKED`), so two instances never send the same attempt.

use futures::future::BoxFuture;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{multi_insert, on_unique, Actor, Backend, DbTime, Result, StorageError, Store};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebhookRecord {
    pub id: Uuid,
    /// `None`: a platform endpoint (admin-managed), receiving every user's events.
    pub user_id: Option<Uuid>,
    pub url: String,
    pub description: Option<String>,
    /// Event types it receives; empty means all.
    pub events: Json<Vec<String>>,
    /// The signing secret, sealed (opaque here).
    pub secret_ct: Vec<u8>,
    pub is_enabled: bool,
    pub row_version: i64,
    pub created_at: DbTime,
    pub updated_at: DbTime,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRecord {
    pub id: Uuid,
    /// `None` for endpoints configured in `KEYGATE_WEBHOOK_URLS`.
    pub webhook_id: Option<Uuid>,
    pub user_id: Option<Uuid>,
    pub url: String,
    pub event_type: String,
    /// The exact JSON body that is signed and sent.
    pub payload: String,
    /// pending | delivered | failed
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DbTime,
    pub claimed_until: Option<DbTime>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub created_at: DbTime,
    pub delivered_at: Option<DbTime>,
}

/// The most webhook endpoints one user (or the platform) may have.
pub const MAX_WEBHOOKS_PER_OWNER: i64 = 25;

/// The advisory-lock key space of the per-owner caps (webhooks, integrations).
pub(crate) const CAP_LOCKS: u64 = 0x6361_7073_6f77_6e72;

const WCOLS: &str =
    "id, user_id, url, description, events, secret_ct, is_enabled, row_version, created_at, updated_at";
pub(crate) const DELIVERY_COLS: &str = "id, webhook_id, user_id, url, event_type, payload, status, attempts, next_attempt_at, claimed_until, last_status_code, last_error, created_at, delivered_at";
pub(crate) const DELIVERY_NCOLS: usize = 14;

impl Store {
    /// Stores endpoint `w`, unless its owner (the platform's, for `user_id` None) already
    /// has [`MAX_WEBHOOKS_PER_OWNER`] ([`StorageError::LimitReached`]): every event is
    /// queued once per endpoint, so their number is what one event costs.
    pub async fn create_webhook(&self, actor: Actor, w: &WebhookRecord) -> Result<()> {
        let sql = format!("INSERT INTO webhooks ({WCOLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10)");
        in_tx!(self, actor, |tx| {
            // the count and the insert, one owner at a time: a burst cannot pass together
            owner_lock!(self, tx, w.user_id.unwrap_or_default(), CAP_LOCKS);
            let n: i64 = sqlx::query_scalar::<DB, i64>(
                "SELECT COUNT(*) FROM webhooks WHERE user_id = $1 OR ($1 IS NULL AND user_id IS NULL)",
            )
            .bind(w.user_id)
            .fetch_one(&mut *tx)
            .await?;
            if n >= MAX_WEBHOOKS_PER_OWNER {
                return Err(StorageError::LimitReached(
                    "webhooks",
                    MAX_WEBHOOKS_PER_OWNER,
                ));
            }
            sqlx::query::<DB>(&sql)
                .bind(w.id)
                .bind(w.user_id)
                .bind(w.url.clone())
                .bind(w.description.clone())
                .bind(w.events.clone())
                .bind(w.secret_ct.clone())
                .bind(w.is_enabled)
                .bind(w.row_version)
                .bind(w.created_at)
                .bind(w.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_unique(e, "webhook"))?;
        });
        Ok(())
    }

    /// Endpoints of `owner` (`None`: platform endpoints), by id after `cursor`.
    pub async fn list_webhooks(
        &self,
        actor: Actor,
        owner: Option<Uuid>,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<WebhookRecord>> {
        let sql = format!(
            "SELECT {WCOLS} FROM webhooks WHERE (user_id = $1 OR ($1 IS NULL AND user_id IS NULL)) \
             AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3"
        );
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(owner)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    pub async fn webhook(
        &self,
        actor: Actor,
        owner: Option<Uuid>,
        id: Uuid,
    ) -> Result<Option<WebhookRecord>> {
        let sql = format!(
            "SELECT {WCOLS} FROM webhooks WHERE id = $1 AND (user_id = $2 OR ($2 IS NULL AND user_id IS NULL))"
        );
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Writes url, description, events, enabled and secret if the row is still at
    /// `expected_version`.
    pub async fn update_webhook(
        &self,
        actor: Actor,
        w: &WebhookRecord,
        expected_version: i64,
    ) -> Result<WebhookRecord> {
        let sel = format!("SELECT {WCOLS} FROM webhooks WHERE id = $1");
        Ok(in_tx!(self, actor, |tx| {
            let n = sqlx::query::<DB>(
                "UPDATE webhooks SET url = $1, description = $2, events = $3, is_enabled = $4, secret_ct = $5, \
                 updated_at = $6, row_version = row_version + 1 WHERE id = $7 \
                 AND (user_id = $8 OR ($8 IS NULL AND user_id IS NULL)) AND row_version = $9",
            )
            .bind(w.url.clone())
            .bind(w.description.clone())
            .bind(w.events.clone())
            .bind(w.is_enabled)
            .bind(w.secret_ct.clone())
            .bind(w.updated_at)
            .bind(w.id)
            .bind(w.user_id)
            .bind(expected_version)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n != 1 {
                return Err(StorageError::VersionMismatch);
            }
            sqlx::query_as::<DB, _>(&sel)
                .bind(w.id)
                .fetch_one(&mut *tx)
                .await?
        }))
    }

    pub async fn delete_webhook(
        &self,
        actor: Actor,
        owner: Option<Uuid>,
        id: Uuid,
    ) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(
                "DELETE FROM webhooks WHERE id = $1 AND (user_id = $2 OR ($2 IS NULL AND user_id IS NULL))",
            )
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Enabled endpoints that receive events of `user` (theirs plus the platform's);
    /// `None`: platform endpoints only.
    pub async fn webhooks_for(&self, user: Option<Uuid>) -> Result<Vec<WebhookRecord>> {
        let sql = format!(
            "SELECT {WCOLS} FROM webhooks WHERE is_enabled AND (user_id IS NULL OR user_id = $1) ORDER BY id"
        );
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Queues deliveries (one multi-row insert).
    pub async fn enqueue_deliveries(&self, rows: &[DeliveryRecord]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let ins = multi_insert(
            &format!("INSERT INTO webhook_deliveries ({DELIVERY_COLS}) VALUES "),
            DELIVERY_NCOLS,
            rows.len(),
        );
        in_tx!(self, Actor::service(), |tx| {
            bind_deliveries!(sqlx::query::<DB>(&ins), rows)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Claims up to `limit` pending deliveries due at `now` until `claim_until`, so no
    /// other instance picks them up meanwhile.
    pub async fn claim_due_deliveries(
        &self,
        now: DbTime,
        claim_until: DbTime,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>> {
        let lock = match self.backend() {
            Backend::Postgres => " FOR UPDATE SKIP LOCKED",
            Backend::Sqlite => "",
        };
        let sql = format!(
            "UPDATE webhook_deliveries SET claimed_until = $1 WHERE id IN (SELECT id FROM webhook_deliveries \
             WHERE status = 'pending' AND next_attempt_at <= $2 AND (claimed_until IS NULL OR claimed_until <= $2) \
             ORDER BY next_attempt_at LIMIT $3{lock}) RETURNING {DELIVERY_COLS}"
        );
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(claim_until)
                .bind(now)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Records the outcome of one attempt (status, counters, next attempt) and releases
    /// the claim.
    pub async fn finish_delivery(&self, d: &DeliveryRecord) -> Result<()> {
        in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>(
                "UPDATE webhook_deliveries SET status = $1, attempts = $2, next_attempt_at = $3, claimed_until = NULL, \
                 last_status_code = $4, last_error = $5, delivered_at = $6, url = $8 WHERE id = $7",
            )
            .bind(d.status.clone())
            .bind(d.attempts)
            .bind(d.next_attempt_at)
            .bind(d.last_status_code)
            .bind(d.last_error.clone())
            .bind(d.delivered_at)
            .bind(d.id)
            .bind(d.url.clone())
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Queues `d` unless `max` deliveries of its event type were already queued since
    /// `since` for any endpoint of its user, or for endpoint `webhook_id` when that is a
    /// platform endpoint (no user): a rate limit on what a caller can queue at will, such as test
    /// events. Count and insert are one transaction under a lock on the user (PostgreSQL:
    /// an advisory lock; SQLite: the write lock), so parallel requests cannot all pass
    /// the count. Answers whether `d` was queued.
    pub async fn enqueue_delivery_within(
        &self,
        webhook_id: Uuid,
        d: &DeliveryRecord,
        since: DbTime,
        max: i64,
    ) -> Result<bool> {
        let (sql, key) = match d.user_id {
            Some(u) => (
                "SELECT COUNT(*) FROM webhook_deliveries WHERE user_id = $1 AND event_type = $2 AND created_at > $3",
                u,
            ),
            None => (
                "SELECT COUNT(*) FROM webhook_deliveries WHERE webhook_id = $1 AND event_type = $2 AND created_at > $3",
                webhook_id,
            ),
        };
        let ins = multi_insert(
            &format!("INSERT INTO webhook_deliveries ({DELIVERY_COLS}) VALUES "),
            DELIVERY_NCOLS,
            1,
        );
        Ok(in_tx!(self, Actor::service(), |tx| {
            owner_lock!(self, tx, key, QUEUE_LOCKS);
            let queued = sqlx::query_scalar::<DB, i64>(sql)
                .bind(key)
                .bind(d.event_type.clone())
                .bind(since)
                .fetch_one(&mut *tx)
                .await?;
            if queued >= max {
                false
            } else {
                bind_deliveries!(sqlx::query::<DB>(&ins), std::slice::from_ref(d))
                    .execute(&mut *tx)
                    .await?;
                true
            }
        }))
    }

    /// Delivery log of one endpoint, newest first.
    pub async fn list_deliveries(
        &self,
        actor: Actor,
        webhook_id: Uuid,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<DeliveryRecord>> {
        let sql = format!(
            "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE webhook_id = $1 AND ($2 IS NULL OR id < $2) ORDER BY id DESC LIMIT $3"
        );
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(webhook_id)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Every delivery of an event type (tests and operators), oldest first.
    pub fn deliveries_of_type<'a>(
        &'a self,
        event_type: &'a str,
    ) -> BoxFuture<'a, Result<Vec<DeliveryRecord>>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {DELIVERY_COLS} FROM webhook_deliveries WHERE event_type = $1 ORDER BY created_at, id"
            );
            Ok(in_tx!(self, Actor::service(), |tx| {
                sqlx::query_as::<DB, _>(&sql)
                    .bind(event_type)
                    .fetch_all(&mut *tx)
                    .await?
            }))
        })
    }
}

/// The advisory lock space of the users' (and platform endpoints') rate-limited queues,
/// apart from the spend locks'.
const QUEUE_LOCKS: u64 = 0x7765_6268_6f6f_6b73;
