//! Rotation schedules (seed `api_key_rotation_schedule`), the reminders already sent, and
//! background-job leases. Reminders are claimed by a unique key (`INSERT .. ON CONFLICT DO
//! NOTHING`) in the same transaction that queues their webhook deliveries, so each one is
//! sent once even with several instances running the job.

use uuid::Uuid;

use crate::{multi_insert, Actor, DbTime, DeliveryRecord, Result, Store};

/// The least time between two reminders about one subject ([`Store::claim_reminder`]).
pub const REMINDER_COOL_DOWN: chrono::Duration = chrono::Duration::hours(20);

#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RotationSchedule {
    pub credential_id: Uuid,
    pub user_id: Uuid,
    pub interval_days: i32,
    pub next_due_at: DbTime,
    pub auto_rotation_enabled: bool,
    pub last_rotated_at: Option<DbTime>,
    pub created_at: DbTime,
    pub updated_at: DbTime,
}

/// A schedule with its credential's label (for lists and reminders).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueRotation {
    pub credential_id: Uuid,
    pub user_id: Uuid,
    pub interval_days: i32,
    pub next_due_at: DbTime,
    pub label: String,
    pub exchange: String,
    pub status: String,
}

const RCOLS: &str = "credential_id, user_id, interval_days, next_due_at, auto_rotation_enabled, last_rotated_at, created_at, updated_at";
const DCOLS: &str =
    "r.credential_id, r.user_id, r.interval_days, r.next_due_at, c.label, c.exchange, c.status";

/// A key in use with an expiry of its own (`credentials.expires_at`), for the reminders
/// before it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExpiringCredential {
    pub id: Uuid,
    pub user_id: Uuid,
    pub label: String,
    pub exchange: String,
    pub expires_at: DbTime,
}

/// Credential statuses that get no rotation reminder: the key is out of use for good.
pub const NO_REMINDER_STATUSES: [&str; 3] = ["revoked", "expired", "shredded"];

impl Store {
    pub async fn rotation_schedule(
        &self,
        actor: Actor,
        user_id: Uuid,
        credential_id: Uuid,
    ) -> Result<Option<RotationSchedule>> {
        let sql = format!(
            "SELECT {RCOLS} FROM rotation_schedules WHERE user_id = $1 AND credential_id = $2"
        );
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(credential_id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Creates or replaces a credential's schedule.
    pub async fn put_rotation_schedule(
        &self,
        actor: Actor,
        r: &RotationSchedule,
    ) -> Result<RotationSchedule> {
        let sql = format!(
            "INSERT INTO rotation_schedules ({RCOLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8) \
             ON CONFLICT (credential_id) DO UPDATE SET interval_days = excluded.interval_days, \
             next_due_at = excluded.next_due_at, auto_rotation_enabled = excluded.auto_rotation_enabled, \
             updated_at = excluded.updated_at RETURNING {RCOLS}"
        );
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(r.credential_id)
                .bind(r.user_id)
                .bind(r.interval_days)
                .bind(r.next_due_at)
                .bind(r.auto_rotation_enabled)
                .bind(r.last_rotated_at)
                .bind(r.created_at)
                .bind(r.updated_at)
                .fetch_one(&mut *tx)
                .await?
        }))
    }

    pub async fn delete_rotation_schedule(
        &self,
        actor: Actor,
        user_id: Uuid,
        credential_id: Uuid,
    ) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(
                "DELETE FROM rotation_schedules WHERE user_id = $1 AND credential_id = $2",
            )
            .bind(user_id)
            .bind(credential_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Schedules due before `due_before`, soonest first: one user's (`Some`), or every
    /// user's for the service identity (`None`). Paged by (`next_due_at`, credential id).
    pub async fn rotations_due(
        &self,
        actor: Actor,
        user_id: Option<Uuid>,
        due_before: DbTime,
        after: Option<(DbTime, Uuid)>,
        limit: i64,
    ) -> Result<Vec<DueRotation>> {
        let sql = format!(
            "SELECT {DCOLS} FROM rotation_schedules r JOIN credentials c ON c.id = r.credential_id \
             WHERE ($1 IS NULL OR r.user_id = $1) AND r.next_due_at < $2 \
             AND ($3 IS NULL OR r.next_due_at > $3 OR (r.next_due_at = $3 AND r.credential_id > $4)) \
             ORDER BY r.next_due_at, r.credential_id LIMIT $5"
        );
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(due_before)
                .bind(after.map(|a| a.0))
                .bind(after.map(|a| a.1))
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Keys in use (active or rotating) whose own expiry is after `now` and before
    /// `before`, soonest first, after the keyset cursor `after`.
    pub async fn credentials_expiring(
        &self,
        now: DbTime,
        before: DbTime,
        after: Option<(DbTime, Uuid)>,
        limit: i64,
    ) -> Result<Vec<ExpiringCredential>> {
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query_as::<DB, ExpiringCredential>(
                "SELECT id, user_id, label, exchange, expires_at FROM credentials \
                 WHERE status IN ('active', 'rotating') AND expires_at > $1 AND expires_at < $2 \
                 AND ($3 IS NULL OR expires_at > $3 OR (expires_at = $3 AND id > $4)) \
                 ORDER BY expires_at, id LIMIT $5",
            )
            .bind(now)
            .bind(before)
            .bind(after.map(|a| a.0))
            .bind(after.map(|a| a.1))
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }))
    }

    /// Claims reminder `key` and, only if this call claimed it, queues `deliveries`, in one
    /// transaction. Returns whether this call claimed it. With `due`, only while the
    /// subject (a `credential`'s rotation schedule, or a `site_key`) is still due then: a
    /// rotation that committed after the job read the schedule has moved the date, and
    /// the reminder for the old one is not sent; nor is a credential's that has been
    /// revoked, expired or shredded since. On PostgreSQL the schedule row is share locked,
    /// so a rotation that has written it and not yet committed is waited for and then
    /// seen; the credential's status is read as committed when the claim runs.
    ///
    /// Not within [`REMINDER_COOL_DOWN`] of the subject's last claimed reminder: each new
    /// due date makes new reminder keys, so an owner who sets the date again and again
    /// (into the past, or a minute ahead) would otherwise queue a reminder, to their own
    /// and the platform's webhooks, each time. The stages are a day or more apart, so a
    /// reminder held back is claimed by a pass after the cool-down, at the stage then due.
    #[allow(clippy::too_many_arguments)]
    pub async fn claim_reminder(
        &self,
        key: &str,
        subject_kind: &str,
        subject_id: Uuid,
        user_id: Option<Uuid>,
        now: DbTime,
        deliveries: &[DeliveryRecord],
        due: Option<DbTime>,
    ) -> Result<bool> {
        let pg = self.backend() == crate::Backend::Postgres;
        // the subject's due date at $7, when there is one to check
        let due = due.and_then(|due| {
            let still_due = match subject_kind {
                // and the credential not revoked, expired or shredded since (the job skips
                // those; a shred or expiry can commit between its read and this claim).
                // Only the schedule row is locked: a rotation or a deletion locks the
                // credential first, so locking both here could deadlock with it.
                "credential" => format!(
                    "SELECT 1 FROM rotation_schedules r JOIN credentials c ON c.id = r.credential_id \
                     WHERE r.credential_id = $3 AND r.next_due_at = $7 \
                     AND c.status NOT IN ({}){}",
                    NO_REMINDER_STATUSES.map(|s| format!("'{s}'")).join(", "),
                    if pg { " FOR SHARE OF r" } else { "" }
                ),
                "site_key" => format!(
                    "SELECT 1 FROM site_api_keys WHERE id = $3 AND is_active AND next_rotation_at = $7{}",
                    if pg { " FOR SHARE" } else { "" }
                ),
                // a key's own expiry, still the one the job read, and the key in use
                "credential_expiry" => format!(
                    "SELECT 1 FROM credentials WHERE id = $3 AND expires_at = $7 \
                     AND status IN ('active', 'rotating'){}",
                    if pg { " FOR SHARE" } else { "" }
                ),
                _ => return None,
            };
            Some((due, still_due))
        });
        let claim = format!(
            "INSERT INTO sent_reminders (reminder_key, subject_kind, subject_id, user_id, created_at) \
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS ({}) \
             AND NOT EXISTS (SELECT 1 FROM sent_reminders WHERE subject_id = $3 AND created_at > $6) \
             ON CONFLICT (reminder_key) DO NOTHING",
            due.as_ref().map_or("SELECT 1", |(_, still_due)| still_due.as_str())
        );
        let ins = multi_insert(
            &format!(
                "INSERT INTO webhook_deliveries ({}) VALUES ",
                crate::webhooks::DELIVERY_COLS
            ),
            crate::webhooks::DELIVERY_NCOLS,
            deliveries.len(),
        );
        Ok(in_tx!(self, Actor::service(), |tx| {
            let mut q = sqlx::query::<DB>(&claim)
                .bind(key)
                .bind(subject_kind)
                .bind(subject_id)
                .bind(user_id)
                .bind(now)
                .bind(DbTime::new(now.0 - REMINDER_COOL_DOWN));
            if let Some((at, _)) = &due {
                q = q.bind(*at);
            }
            let n = q.execute(&mut *tx).await?.rows_affected();
            if n == 1 && !deliveries.is_empty() {
                let q = bind_deliveries!(sqlx::query::<DB>(&ins), deliveries);
                q.execute(&mut *tx).await?;
            }
            n == 1
        }))
    }

    /// How many reminders were sent for a subject (tests and status views).
    pub async fn reminders_sent(&self, subject_id: Uuid) -> Result<Vec<String>> {
        // a read (the schedule's view shows it): the write epoch stays
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query_scalar::<DB, String>(
                "SELECT reminder_key FROM sent_reminders WHERE subject_id = $1 ORDER BY created_at, reminder_key",
            )
            .bind(subject_id)
            .fetch_all(&mut *tx)
            .await?
        }))
    }

    /// Takes (or renews) the lease of job `name` until `until` if it is free at `now` or
    /// already ours. Returns whether `holder` now holds it.
    pub async fn try_job_lease(
        &self,
        name: &str,
        holder: &str,
        now: DbTime,
        until: DbTime,
    ) -> Result<bool> {
        let n = in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>(
                "INSERT INTO job_leases (name, holder, lease_until, last_run_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until, \
                 last_run_at = excluded.last_run_at WHERE job_leases.lease_until <= $4 OR job_leases.holder = $2",
            )
            .bind(name)
            .bind(holder)
            .bind(until)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Extends a lease `holder` still holds (unexpired at `now`) until `until`; `false` when
    /// it ran out or another holder has it (a lease given back, or expired, is not taken
    /// again here: whatever the holder read under it may be stale).
    pub async fn renew_job_lease(
        &self,
        name: &str,
        holder: &str,
        now: DbTime,
        until: DbTime,
    ) -> Result<bool> {
        let n = in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>(
                "UPDATE job_leases SET lease_until = $1 WHERE name = $2 AND holder = $3 AND lease_until > $4",
            )
            .bind(until)
            .bind(name)
            .bind(holder)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Gives back a lease `holder` holds (taken with [`Store::try_job_lease`]); one it no
    /// longer holds is left alone.
    pub async fn release_job_lease(&self, name: &str, holder: &str) -> Result<()> {
        in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>("DELETE FROM job_leases WHERE name = $1 AND holder = $2")
                .bind(name)
                .bind(holder)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }
}
