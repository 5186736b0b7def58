//! Credentials: one model for the seed's `api_keys`, `encrypted_api_keys`,
//! `encrypted_exchange_credentials`, the key columns of `exchange_connections` and
//! `api_key_permissions`. Metadata lives in `credentials`; each key generation's sealed
//! secrets live in `credential_secrets` (the rotation chain).

use sqlx::types::Json;
use uuid::Uuid;

use crate::{on_unique, Actor, DbTime, Result, StorageError, Store};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CredentialRecord {
    pub id: Uuid,
    pub user_id: Uuid,
    pub exchange: String,
    pub label: String,
    pub environment: String,
    /// active | rotating | pending | suspended | revoked | expired | shredded
    pub status: String,
    /// hmac | ed25519 | rsa | ec
    pub key_type: String,
    pub api_key_hint: Option<String>,
    pub public_key: Option<String>,
    pub permissions: Json<Vec<String>>,
    pub limits: Json<serde_json::Value>,
    pub current_generation: i32,
    pub expires_at: Option<DbTime>,
    pub usage_count: i64,
    pub last_used_at: Option<DbTime>,
    pub suspended_reason: Option<String>,
    pub row_version: i64,
    pub created_at: DbTime,
    pub updated_at: DbTime,
}

/// One generation of a credential's sealed secrets. Every `*_ct` is a keygate-crypto
/// field ciphertext bound to (user, this row's id, field name, DEK version).
#[derive(Clone, sqlx::FromRow)]
pub struct SecretRecord {
    pub id: Uuid,
    pub credential_id: Uuid,
    pub user_id: Uuid,
    pub generation: i32,
    pub dek_version: i32,
    pub api_key_ct: Option<Vec<u8>>,
    pub api_secret_ct: Option<Vec<u8>>,
    pub passphrase_ct: Option<Vec<u8>>,
    pub private_key_ct: Option<Vec<u8>>,
    /// active | rotating | revoked
    pub status: String,
    pub rotated_from: Option<Uuid>,
    pub grace_period_ends_at: Option<DbTime>,
    pub last_nonce: i64,
    pub created_at: DbTime,
}

impl std::fmt::Debug for SecretRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretRecord")
            .field("id", &self.id)
            .field("credential_id", &self.credential_id)
            .field("generation", &self.generation)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

pub(crate) const CCOLS: &str = "id, user_id, exchange, label, environment, status, key_type, api_key_hint, public_key, permissions, limits, current_generation, expires_at, usage_count, last_used_at, suspended_reason, row_version, created_at, updated_at";
pub(crate) const SCOLS: &str = "id, credential_id, user_id, generation, dek_version, api_key_ct, api_secret_ct, passphrase_ct, private_key_ct, status, rotated_from, grace_period_ends_at, last_nonce, created_at";

/// Inserts one generation row inside the caller's transaction (a macro so the same text
/// serves both backends' connection types).
macro_rules! insert_secret {
    ($tx:expr, $s:expr) => {{
        let s: &SecretRecord = $s;
        let sql = format!("INSERT INTO credential_secrets ({SCOLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14)");
        sqlx::query::<DB>(&sql)
            .bind(s.id)
            .bind(s.credential_id)
            .bind(s.user_id)
            .bind(s.generation)
            .bind(s.dek_version)
            .bind(s.api_key_ct.clone())
            .bind(s.api_secret_ct.clone())
            .bind(s.passphrase_ct.clone())
            .bind(s.private_key_ct.clone())
            .bind(s.status.clone())
            .bind(s.rotated_from)
            .bind(s.grace_period_ends_at)
            .bind(s.last_nonce)
            .bind(s.created_at)
            .execute($tx)
            .await?;
    }};
}

impl Store {
    /// Creates a credential with its first generation of secrets, atomically.
    pub async fn create_credential(
        &self,
        actor: Actor,
        c: &CredentialRecord,
        s: &SecretRecord,
    ) -> Result<()> {
        let sql = format!("INSERT INTO credentials ({CCOLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19)");
        in_tx!(self, actor, |tx| {
            require_active_dek!(self, tx, s.user_id, s.dek_version);
            sqlx::query::<DB>(&sql)
                .bind(c.id)
                .bind(c.user_id)
                .bind(c.exchange.clone())
                .bind(c.label.clone())
                .bind(c.environment.clone())
                .bind(c.status.clone())
                .bind(c.key_type.clone())
                .bind(c.api_key_hint.clone())
                .bind(c.public_key.clone())
                .bind(c.permissions.clone())
                .bind(c.limits.clone())
                .bind(c.current_generation)
                .bind(c.expires_at)
                .bind(c.usage_count)
                .bind(c.last_used_at)
                .bind(c.suspended_reason.clone())
                .bind(c.row_version)
                .bind(c.created_at)
                .bind(c.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_unique(e, "label"))?;
            insert_secret!(&mut *tx, s);
        });
        Ok(())
    }

    /// The user's credentials after `cursor` (by id, which is time-ordered UUIDv7).
    pub async fn list_credentials(
        &self,
        actor: Actor,
        user_id: Uuid,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<CredentialRecord>> {
        let sql = format!("SELECT {CCOLS} FROM credentials WHERE user_id = $1 AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Every user's credentials (optionally only those in `status`) after `cursor`, for the
    /// admin views. Runs as the service identity: the caller must have checked that an
    /// admin asks (DESIGN.md §7: admin paths use the documented service policy).
    pub async fn list_all_credentials(
        &self,
        status: Option<&str>,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<CredentialRecord>> {
        let sql = format!("SELECT {CCOLS} FROM credentials WHERE ($1 IS NULL OR status = $1) AND ($2 IS NULL OR id > $2) ORDER BY id LIMIT $3");
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(status)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    pub async fn credential(
        &self,
        actor: Actor,
        user_id: Uuid,
        id: Uuid,
    ) -> Result<Option<CredentialRecord>> {
        let sql = format!("SELECT {CCOLS} FROM credentials WHERE user_id = $1 AND id = $2");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Writes the editable fields of `c` if the row is still at `expected_version`;
    /// returns the stored record (row_version bumped).
    pub async fn update_credential(
        &self,
        actor: Actor,
        c: &CredentialRecord,
        expected_version: i64,
    ) -> Result<CredentialRecord> {
        let sel = format!("SELECT {CCOLS} FROM credentials WHERE user_id = $1 AND id = $2");
        Ok(in_tx!(self, actor, |tx| {
            let n = sqlx::query::<DB>("UPDATE credentials SET label = $1, permissions = $2, limits = $3, expires_at = $4, status = $5, suspended_reason = $6, api_key_hint = $7, updated_at = $8, row_version = row_version + 1 WHERE user_id = $9 AND id = $10 AND row_version = $11")
                .bind(c.label.clone())
                .bind(c.permissions.clone())
                .bind(c.limits.clone())
                .bind(c.expires_at)
                .bind(c.status.clone())
                .bind(c.suspended_reason.clone())
                .bind(c.api_key_hint.clone())
                .bind(c.updated_at)
                .bind(c.user_id)
                .bind(c.id)
                .bind(expected_version)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_unique(e, "label"))?
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

    /// Deletes a credential and its secrets; refused while a connection uses it.
    pub async fn delete_credential(&self, actor: Actor, user_id: Uuid, id: Uuid) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            let used: i64 = sqlx::query_scalar::<DB, _>(
                "SELECT COUNT(*) FROM connections WHERE user_id = $1 AND credential_id = $2",
            )
            .bind(user_id)
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
            if used > 0 {
                return Err(StorageError::Conflict("credential_in_use"));
            }
            sqlx::query::<DB>(
                "DELETE FROM credential_secrets WHERE user_id = $1 AND credential_id = $2",
            )
            .bind(user_id)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query::<DB>("DELETE FROM credentials WHERE user_id = $1 AND id = $2")
                .bind(user_id)
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Rotation: stores the next generation, puts the current one into its grace period
    /// (and cuts any older generation's grace to end no later), and bumps the credential,
    /// all in one transaction.
    pub async fn rotate_credential(
        &self,
        actor: Actor,
        c: &CredentialRecord,
        expected_version: i64,
        new_secret: &SecretRecord,
        grace_period_ends_at: DbTime,
    ) -> Result<CredentialRecord> {
        let sel = format!("SELECT {CCOLS} FROM credentials WHERE user_id = $1 AND id = $2");
        Ok(in_tx!(self, actor, |tx| {
            // First, as everywhere it is taken: a shred locks the key's row before the
            // user's credentials, so taking them the other way round could deadlock.
            require_active_dek!(self, tx, new_secret.user_id, new_secret.dek_version);
            let n = sqlx::query::<DB>("UPDATE credentials SET current_generation = $1, status = $2, api_key_hint = $3, updated_at = $4, row_version = row_version + 1 WHERE user_id = $5 AND id = $6 AND row_version = $7")
                .bind(new_secret.generation)
                .bind(c.status.clone())
                .bind(c.api_key_hint.clone())
                .bind(new_secret.created_at)
                .bind(c.user_id)
                .bind(c.id)
                .bind(expected_version)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                return Err(StorageError::VersionMismatch);
            }
            // an older generation still in its grace signs no longer than the one now
            // retired: a rotation without grace ends every earlier key's grace too
            sqlx::query::<DB>("UPDATE credential_secrets SET grace_period_ends_at = $1 WHERE user_id = $2 AND credential_id = $3 AND status = 'rotating' AND (grace_period_ends_at IS NULL OR grace_period_ends_at > $1)")
                .bind(grace_period_ends_at)
                .bind(c.user_id)
                .bind(c.id)
                .execute(&mut *tx)
                .await?;
            sqlx::query::<DB>("UPDATE credential_secrets SET status = 'rotating', grace_period_ends_at = $1 WHERE user_id = $2 AND credential_id = $3 AND status = 'active'")
                .bind(grace_period_ends_at)
                .bind(c.user_id)
                .bind(c.id)
                .execute(&mut *tx)
                .await?;
            insert_secret!(&mut *tx, new_secret);
            // A rotation restarts the credential's rotation schedule, if it has one.
            let interval: Option<i32> = sqlx::query_scalar::<DB, i32>(
                "SELECT interval_days FROM rotation_schedules WHERE credential_id = $1",
            )
            .bind(c.id)
            .fetch_optional(&mut *tx)
            .await?;
            if let Some(days) = interval {
                let now = new_secret.created_at;
                sqlx::query::<DB>("UPDATE rotation_schedules SET next_due_at = $1, last_rotated_at = $2, updated_at = $2 WHERE credential_id = $3")
                    .bind(DbTime::new(now.0 + chrono::Duration::days(days as i64)))
                    .bind(now)
                    .bind(c.id)
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query_as::<DB, _>(&sel)
                .bind(c.user_id)
                .bind(c.id)
                .fetch_one(&mut *tx)
                .await?
        }))
    }

    /// A credential's secrets of one generation.
    pub async fn credential_secret(
        &self,
        actor: Actor,
        user_id: Uuid,
        credential_id: Uuid,
        generation: i32,
    ) -> Result<Option<SecretRecord>> {
        let sql = format!("SELECT {SCOLS} FROM credential_secrets WHERE user_id = $1 AND credential_id = $2 AND generation = $3");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(credential_id)
                .bind(generation)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Every generation of a credential, newest first.
    pub async fn credential_secrets(
        &self,
        actor: Actor,
        user_id: Uuid,
        credential_id: Uuid,
    ) -> Result<Vec<SecretRecord>> {
        let sql = format!("SELECT {SCOLS} FROM credential_secrets WHERE user_id = $1 AND credential_id = $2 ORDER BY generation DESC");
        // a read: it must not drop the gateway's cached contexts
        Ok(in_tx!(@quiet self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(credential_id)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Every user's keys whose `expires_at` has passed become `expired` (active or
    /// rotating ones, at most `limit` a call; a suspended key stays suspended, so that
    /// only its owner's reactivation brings it back), and generations whose rotation grace
    /// has ended become `revoked`: what the gateway already refuses by the times, the
    /// rows now say (lists, the admin's status filter, rotation reminders). Answers the
    /// expired credentials as `(user_id, id)`.
    pub async fn expire_due(&self, now: DbTime, limit: i64) -> Result<Vec<(Uuid, Uuid)>> {
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>(
                "UPDATE credential_secrets SET status = 'revoked' \
                 WHERE status = 'rotating' AND grace_period_ends_at <= $1",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            // the conditions again outside the subquery: PostgreSQL re-checks only the
            // outer ones on a row another transaction changed meanwhile (a suspension, a
            // shred, a later expiry), and would otherwise overwrite it
            sqlx::query_as::<DB, (Uuid, Uuid)>(
                "UPDATE credentials SET status = 'expired', updated_at = $1, row_version = row_version + 1 \
                 WHERE id IN (SELECT id FROM credentials WHERE status IN ('active', 'rotating') \
                              AND expires_at <= $1 ORDER BY expires_at LIMIT $2) \
                 AND status IN ('active', 'rotating') AND expires_at <= $1 \
                 RETURNING user_id, id",
            )
            .bind(now)
            .bind(limit)
            .fetch_all(&mut *tx)
            .await?
        }))
    }

    /// Marks generations whose grace period has ended as revoked.
    pub async fn revoke_expired_generations(
        &self,
        actor: Actor,
        user_id: Uuid,
        now: DbTime,
    ) -> Result<u64> {
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("UPDATE credential_secrets SET status = 'revoked' WHERE user_id = $1 AND status = 'rotating' AND grace_period_ends_at <= $2")
                .bind(user_id)
                .bind(now)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        }))
    }

    /// Replaces the sealed secrets of one generation (DEK rotation re-encrypts rows),
    /// only if the row is still sealed under `expected_dek_version`.
    pub async fn reseal_secret(
        &self,
        actor: Actor,
        s: &SecretRecord,
        expected_dek_version: i32,
    ) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("UPDATE credential_secrets SET dek_version = $1, api_key_ct = $2, api_secret_ct = $3, passphrase_ct = $4, private_key_ct = $5 WHERE id = $6 AND user_id = $7 AND dek_version = $8")
                .bind(s.dek_version)
                .bind(s.api_key_ct.clone())
                .bind(s.api_secret_ct.clone())
                .bind(s.passphrase_ct.clone())
                .bind(s.private_key_ct.clone())
                .bind(s.id)
                .bind(s.user_id)
                .bind(expected_dek_version)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// The user's secrets sealed under a DEK version other than `current` (DEK rotation).
    pub async fn secrets_not_on_dek(
        &self,
        actor: Actor,
        user_id: Uuid,
        current: i32,
        limit: i64,
    ) -> Result<Vec<SecretRecord>> {
        let sql = format!("SELECT {SCOLS} FROM credential_secrets WHERE user_id = $1 AND dek_version <> $2 ORDER BY id LIMIT $3");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(current)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Allocates a nonce strictly greater than any this key generation used, and at least
    /// `floor` (e.g. the current time in µs), shared by every instance (Kraken).
    pub async fn next_nonce(&self, actor: Actor, secret_id: Uuid, floor: i64) -> Result<i64> {
        Ok(in_tx!(@quiet self, actor, |tx| {
            sqlx::query_scalar::<DB, _>("UPDATE credential_secrets SET last_nonce = CASE WHEN last_nonce + 1 > $1 THEN last_nonce + 1 ELSE $1 END WHERE id = $2 RETURNING last_nonce")
                .bind(floor)
                .bind(secret_id)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StorageError::NotFound)?
        }))
    }
}

impl Store {
    /// Attaches the exchange's key id to a generated (`pending`) credential: replaces the
    /// sealed fields of its generation and makes it `active`, in one transaction. False when
    /// the credential is not pending (or the row moved under us); `VersionMismatch` when a
    /// data-key rotation re-sealed the generation after `s` was read.
    pub async fn activate_generated(
        &self,
        actor: Actor,
        c: &CredentialRecord,
        s: &SecretRecord,
    ) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            let n = sqlx::query::<DB>("UPDATE credentials SET status = 'active', api_key_hint = $1, updated_at = $2, row_version = row_version + 1 WHERE user_id = $3 AND id = $4 AND status = 'pending'")
                .bind(c.api_key_hint.clone())
                .bind(c.updated_at)
                .bind(c.user_id)
                .bind(c.id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                // sealed under the data-key version it was read with: if a data-key
                // rotation re-sealed the row meanwhile, nothing is written (the row would
                // go back to the retired version)
                let sealed = sqlx::query::<DB>("UPDATE credential_secrets SET api_key_ct = $1, private_key_ct = $2 WHERE id = $3 AND user_id = $4 AND dek_version = $5")
                    .bind(s.api_key_ct.clone())
                    .bind(s.private_key_ct.clone())
                    .bind(s.id)
                    .bind(s.user_id)
                    .bind(s.dek_version)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected();
                if sealed != 1 {
                    return Err(StorageError::VersionMismatch);
                }
            }
            n
        });
        Ok(n == 1)
    }
}
