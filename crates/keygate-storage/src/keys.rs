//! Per-user data keys (seed `user_encryption_keys`): stored only wrapped, versioned.

use uuid::Uuid;

use crate::{Actor, AuditEvent, DbTime, Result, Store};

#[derive(Clone, sqlx::FromRow)]
pub struct UserKeyRecord {
    pub user_id: Uuid,
    pub version: i32,
    /// `None` once crypto-shredded.
    pub wrapped_dek: Option<Vec<u8>>,
    pub kek_version: i32,
    /// `platform` or `password`.
    pub protection: String,
    /// `active`, `retired` (older version still needed to read old rows) or `shredded`.
    pub state: String,
    pub created_at: DbTime,
    pub updated_at: DbTime,
}

/// Without the wrapped key (a platform-mode one opens with the master key alone).
impl std::fmt::Debug for UserKeyRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserKeyRecord")
            .field("user_id", &self.user_id)
            .field("version", &self.version)
            .field(
                "wrapped_dek",
                &self.wrapped_dek.as_ref().map(|_| "[wrapped]"),
            )
            .field("kek_version", &self.kek_version)
            .field("protection", &self.protection)
            .field("state", &self.state)
            .field("created_at", &self.created_at)
            .field("updated_at", &self.updated_at)
            .finish()
    }
}

pub(crate) const COLS: &str =
    "user_id, version, wrapped_dek, kek_version, protection, state, created_at, updated_at";

impl Store {
    /// The user's active DEK record, if any.
    pub async fn active_user_key(
        &self,
        actor: Actor,
        user_id: Uuid,
    ) -> Result<Option<UserKeyRecord>> {
        let sql = format!("SELECT {COLS} FROM user_keys WHERE user_id = $1 AND state = 'active' ORDER BY version DESC LIMIT 1");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Every DEK record of the user (all versions, any state).
    pub async fn user_keys(&self, actor: Actor, user_id: Uuid) -> Result<Vec<UserKeyRecord>> {
        let sql = format!("SELECT {COLS} FROM user_keys WHERE user_id = $1 ORDER BY version");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// One DEK record of the user, by version (any state). A read: it takes no write lock
    /// and leaves the write epoch alone (the keyring rechecks a cached DEK's row with it).
    pub async fn user_key(
        &self,
        actor: Actor,
        user_id: Uuid,
        version: i32,
    ) -> Result<Option<UserKeyRecord>> {
        let sql = format!("SELECT {COLS} FROM user_keys WHERE user_id = $1 AND version = $2");
        Ok(in_tx!(@quiet self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(version)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Inserts a first DEK for a user unless one appeared concurrently; returns the
    /// active record either way, or `None` when the user was shredded meanwhile.
    pub async fn insert_first_user_key(
        &self,
        actor: Actor,
        rec: &UserKeyRecord,
    ) -> Result<Option<UserKeyRecord>> {
        let ins = "INSERT INTO user_keys (user_id, version, wrapped_dek, kek_version, protection, state, created_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, version) DO NOTHING";
        let sel = format!("SELECT {COLS} FROM user_keys WHERE user_id = $1 AND state = 'active' ORDER BY version DESC LIMIT 1");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(ins)
                .bind(rec.user_id)
                .bind(rec.version)
                .bind(rec.wrapped_dek.clone())
                .bind(rec.kek_version)
                .bind(rec.protection.clone())
                .bind(rec.state.clone())
                .bind(rec.created_at)
                .bind(rec.updated_at)
                .execute(&mut *tx)
                .await?;
            // none when a shred came first: its key row holds no key
            sqlx::query_as::<DB, _>(&sel)
                .bind(rec.user_id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Per-user DEK rotation: retires `replaces` (the active version the caller read and
    /// unwrapped) and inserts `rec` (the next version, `active`) in one transaction.
    /// `Conflict` if that version already exists, or if `replaces` is no longer the active
    /// version with the wrap the caller read: a shred, a vault setup or a password change
    /// committed meanwhile, and going on would undo the shred, leave the new version
    /// outside the password, or wrap it under a password no longer in use.
    ///
    /// `session` (a password-protected vault that is unlocked) moves the live unlock
    /// session to the new version while it keeps the retired one for rows not yet
    /// re-sealed (see [`Store::end_session_rekey`]). The caller proved the password
    /// through the unlock check, which already ended any run of failed attempts.
    pub async fn add_user_key_version(
        &self,
        actor: Actor,
        rec: &UserKeyRecord,
        replaces: &UserKeyRecord,
        session: Option<&crate::SessionRekey>,
    ) -> Result<()> {
        let retire = "UPDATE user_keys SET state = 'retired', updated_at = $1 \
                      WHERE user_id = $2 AND version = $3 AND state = 'active' AND wrapped_dek = $4";
        let ins = "INSERT INTO user_keys (user_id, version, wrapped_dek, kek_version, protection, state, created_at, updated_at) \
                   VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (user_id, version) DO NOTHING";
        let rekey = "UPDATE vault_sessions SET session_dek = $1, dek_version = $2, kek_version = $3, \
                     previous_session_dek = $4, previous_dek_version = $5 WHERE user_id = $6 AND expires_at > $7";
        in_tx!(self, actor, |tx| {
            let retired = sqlx::query::<DB>(retire)
                .bind(rec.created_at)
                .bind(rec.user_id)
                .bind(replaces.version)
                .bind(replaces.wrapped_dek.clone())
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if retired != 1 {
                return Err(crate::StorageError::Conflict("user key version"));
            }
            let n = sqlx::query::<DB>(ins)
                .bind(rec.user_id)
                .bind(rec.version)
                .bind(rec.wrapped_dek.clone())
                .bind(rec.kek_version)
                .bind(rec.protection.clone())
                .bind(rec.state.clone())
                .bind(rec.created_at)
                .bind(rec.updated_at)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                // rolls back the retirement too
                return Err(crate::StorageError::Conflict("user key version"));
            }
            if let Some(r) = session {
                sqlx::query::<DB>(rekey)
                    .bind(r.session_dek.clone())
                    .bind(rec.version)
                    .bind(r.kek_version)
                    .bind(r.previous_session_dek.clone())
                    .bind(r.previous_dek_version)
                    .bind(rec.user_id)
                    .bind(r.now)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(())
    }

    /// Whether any of the user's sealed rows (credential secrets, integration secrets and
    /// tokens) is on a DEK version other than `version`: a DEK rotation did not finish.
    pub async fn user_rows_not_on_dek(
        &self,
        actor: Actor,
        user_id: Uuid,
        version: i32,
    ) -> Result<bool> {
        let sql = "SELECT \
            (SELECT COUNT(*) FROM credential_secrets WHERE user_id = $1 AND dek_version <> $2) + \
            (SELECT COUNT(*) FROM integrations WHERE user_id = $1 AND dek_version <> $2) + \
            (SELECT COUNT(*) FROM integration_tokens WHERE user_id = $1 AND dek_version <> $2)";
        let n: i64 = in_tx!(self, actor, |tx| {
            sqlx::query_scalar::<DB, i64>(sql)
                .bind(user_id)
                .bind(version)
                .fetch_one(&mut *tx)
                .await?
        });
        Ok(n > 0)
    }

    /// Replaces the wrapped form of one DEK version (password setup/change, KEK rewrap),
    /// only if it still is what the caller read (`expected_wrapped`).
    #[allow(clippy::too_many_arguments)] // one compare-and-swap; a struct would only rename the arguments
    pub async fn rewrap_user_key(
        &self,
        actor: Actor,
        user_id: Uuid,
        version: i32,
        expected_wrapped: &[u8],
        new_wrapped: &[u8],
        kek_version: i32,
        protection: &str,
        now: DbTime,
    ) -> Result<bool> {
        let sql = "UPDATE user_keys SET wrapped_dek = $1, kek_version = $2, protection = $3, updated_at = $4 \
                   WHERE user_id = $5 AND version = $6 AND wrapped_dek = $7";
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(sql)
                .bind(new_wrapped)
                .bind(kek_version)
                .bind(protection)
                .bind(now)
                .bind(user_id)
                .bind(version)
                .bind(expected_wrapped)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(n == 1)
    }

    /// A batch of DEK records wrapped under a KEK version other than `current`, for
    /// master-key rotation (service identity). Resumable: call until empty.
    pub async fn user_keys_not_on_kek(
        &self,
        current: i32,
        limit: i64,
    ) -> Result<Vec<UserKeyRecord>> {
        let sql = format!("SELECT {COLS} FROM user_keys WHERE kek_version <> $1 AND wrapped_dek IS NOT NULL ORDER BY user_id, version LIMIT $2");
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(current)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Ends unlock sessions whose DEK copy is wrapped under a KEK version other than
    /// `current` (the last step of a master-key rotation; users unlock again).
    pub async fn drop_vault_sessions_not_on_kek(&self, current: i32) -> Result<u64> {
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>("DELETE FROM vault_sessions WHERE kek_version <> $1")
                .bind(current)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        }))
    }

    /// Crypto-shredding: destroys every DEK version of the user and their unlock session.
    /// Ciphertexts stay, unreadable forever; metadata and audit remain. A user with no DEK
    /// yet gets a shredded key row, so nothing can be sealed for them afterwards either.
    ///
    /// `audit` builds the audit events of a shred that destroyed `n` key versions; they
    /// are appended to the chain in the same transaction, so a shred is never stored
    /// without its record, nor the record without the shred.
    pub async fn shred_user_keys(
        &self,
        actor: Actor,
        user_id: Uuid,
        now: DbTime,
        audit: impl FnOnce(u64) -> Vec<AuditEvent> + Send,
        chain_key: &[u8],
    ) -> Result<u64> {
        let backend = self.backend();
        Ok(in_tx!(self, actor, |tx| {
            // the chain head's row lock first, in the order the gateway's group commit takes
            // its locks (head, then credentials): the other order deadlocks on PostgreSQL
            sqlx::query::<DB>("UPDATE audit_head SET seq = seq WHERE id = 1")
                .execute(&mut *tx)
                .await?;
            let n = sqlx::query::<DB>("UPDATE user_keys SET wrapped_dek = NULL, state = 'shredded', updated_at = $1 WHERE user_id = $2 AND state <> 'shredded'")
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            // a user with no key yet is shredded too: a key row that holds no key (no
            // master-key version wraps it: 0) refuses every secret sealed for them later,
            // as the destroyed keys of any other shredded user do
            sqlx::query::<DB>(
                "INSERT INTO user_keys (user_id, version, wrapped_dek, kek_version, protection, state, created_at, updated_at) \
                 SELECT $1, 1, NULL, 0, 'platform', 'shredded', $2, $2 \
                 WHERE NOT EXISTS (SELECT 1 FROM user_keys WHERE user_id = $1)",
            )
            .bind(user_id)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            sqlx::query::<DB>("DELETE FROM vault_sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
            // a new row_version: an edit or rotation that read the credential before the
            // shred fails its version check instead of writing back the old status
            sqlx::query::<DB>(
                "UPDATE credentials SET status = 'shredded', updated_at = $1, row_version = row_version + 1 WHERE user_id = $2",
            )
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            append_chained!(tx, backend, audit(n), chain_key);
            n
        }))
    }
}
