//! Vault metadata (seed `vault_metadata`) and unlock sessions.

use uuid::Uuid;

use crate::{on_unique, Actor, DbTime, Result, StorageError, Store};

/// A PBKDF2 vault moved to Argon2id on unlock ([`Store::open_vault_session`]).
#[derive(Debug, Clone, Copy)]
pub struct KdfUpgrade<'a> {
    pub kdf: &'a str,
    pub salt: &'a [u8],
    /// The wrap the unlock opened: the upgrade applies only while it is still stored.
    pub opened: &'a [u8],
    /// The DEK wrapped under the new KDF's key.
    pub wrapped: &'a [u8],
}

/// What [`Store::claim_unlock_attempt`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnlockClaim {
    /// The attempt may check its password; its number in the current run of failures.
    Attempt(i32),
    /// The vault is locked out until then; nothing was counted.
    LockedOut(DbTime),
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VaultRecord {
    pub user_id: Uuid,
    /// KDF and parameters in keygate-crypto's compact form (`argon2id$m=65536,t=3,p=1`).
    pub kdf: String,
    pub salt: Vec<u8>,
    pub auto_lock_minutes: i32,
    pub require_password_on_decrypt: bool,
    pub biometric_unlock_enabled: bool,
    pub failed_unlock_attempts: i32,
    pub last_failed_unlock_at: Option<DbTime>,
    pub locked_out_until: Option<DbTime>,
    pub last_unlocked_at: Option<DbTime>,
    pub created_at: DbTime,
    pub updated_at: DbTime,
}

#[derive(Clone, sqlx::FromRow)]
pub struct VaultSession {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// The DEK wrapped by the KEK for the session's lifetime.
    pub session_dek: Vec<u8>,
    pub dek_version: i32,
    pub kek_version: i32,
    pub unlocked_at: DbTime,
    pub last_used_at: DbTime,
    pub expires_at: DbTime,
    pub ip_address: Option<String>,
    /// During a password-mode DEK rotation: the version being retired, wrapped like
    /// `session_dek`, so rows not yet re-sealed stay readable (`None` otherwise).
    pub previous_session_dek: Option<Vec<u8>>,
    pub previous_dek_version: Option<i32>,
}

/// Without the wrapped keys: `session_dek` opens the vault with the master key alone, and
/// must not reach a log through a `{:?}`.
impl std::fmt::Debug for VaultSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VaultSession")
            .field("user_id", &self.user_id)
            .field("session_id", &self.session_id)
            .field("session_dek", &"[wrapped]")
            .field("dek_version", &self.dek_version)
            .field("kek_version", &self.kek_version)
            .field("unlocked_at", &self.unlocked_at)
            .field("last_used_at", &self.last_used_at)
            .field("expires_at", &self.expires_at)
            .field("ip_address", &self.ip_address)
            .field(
                "previous_session_dek",
                &self.previous_session_dek.as_ref().map(|_| "[wrapped]"),
            )
            .field("previous_dek_version", &self.previous_dek_version)
            .finish()
    }
}

/// How a password-mode DEK rotation carries a live unlock session over to the new version
/// (see [`Store::add_user_key_version`]): both blobs are wrapped by the KEK under session
/// contexts, like `VaultSession::session_dek`.
pub struct SessionRekey {
    /// The new DEK version, wrapped for the session.
    pub session_dek: Vec<u8>,
    /// The retired version, wrapped for the session, until the rotation finishes.
    pub previous_session_dek: Vec<u8>,
    pub previous_dek_version: i32,
    pub kek_version: i32,
    pub now: DbTime,
}

impl std::fmt::Debug for SessionRekey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRekey")
            .field("previous_dek_version", &self.previous_dek_version)
            .field("kek_version", &self.kek_version)
            .finish_non_exhaustive()
    }
}

const VCOLS: &str = "user_id, kdf, salt, auto_lock_minutes, require_password_on_decrypt, biometric_unlock_enabled, failed_unlock_attempts, last_failed_unlock_at, locked_out_until, last_unlocked_at, created_at, updated_at";
pub(crate) const SESSION_COLS: &str = "user_id, session_id, session_dek, dek_version, kek_version, unlocked_at, last_used_at, expires_at, ip_address, previous_session_dek, previous_dek_version";

impl Store {
    pub async fn vault(&self, actor: Actor, user_id: Uuid) -> Result<Option<VaultRecord>> {
        let sql = format!("SELECT {VCOLS} FROM vaults WHERE user_id = $1");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Creates the vault row and switches the DEK to password protection in one
    /// transaction (`expected_wrapped` guards against a concurrent change).
    pub async fn setup_vault(
        &self,
        actor: Actor,
        v: &VaultRecord,
        dek_version: i32,
        expected_wrapped: &[u8],
        new_wrapped: &[u8],
    ) -> Result<()> {
        let ins =
            format!("INSERT INTO vaults ({VCOLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12)");
        in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(&ins)
                .bind(v.user_id)
                .bind(v.kdf.clone())
                .bind(v.salt.clone())
                .bind(v.auto_lock_minutes)
                .bind(v.require_password_on_decrypt)
                .bind(v.biometric_unlock_enabled)
                .bind(v.failed_unlock_attempts)
                .bind(v.last_failed_unlock_at)
                .bind(v.locked_out_until)
                .bind(v.last_unlocked_at)
                .bind(v.created_at)
                .bind(v.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_unique(e, "vault"))?;
            let n = sqlx::query::<DB>("UPDATE user_keys SET wrapped_dek = $1, protection = 'password', updated_at = $2 WHERE user_id = $3 AND version = $4 AND wrapped_dek = $5 AND state = 'active'")
                .bind(new_wrapped)
                .bind(v.updated_at)
                .bind(v.user_id)
                .bind(dek_version)
                .bind(expected_wrapped)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                return Err(StorageError::VersionMismatch);
            }
        });
        Ok(())
    }

    /// Counts an unlock attempt as failed BEFORE its password is checked (a correct one
    /// resets the count, [`Store::reset_unlock_failures`]), so parallel guesses cannot all
    /// pass a lockout check made before any of them failed. Returns the attempt's number
    /// in the current run of failures, or the end of the lockout in force at `now`. The
    /// attempt whose number `lockout` maps to a time sets the lockout, in the same
    /// transaction: at most that many guesses run per lockout, however many arrive at once.
    pub async fn claim_unlock_attempt(
        &self,
        actor: Actor,
        user_id: Uuid,
        now: DbTime,
        lockout: impl Fn(i32) -> Option<DbTime> + Send,
    ) -> Result<UnlockClaim> {
        Ok(in_tx!(self, actor, |tx| {
            let n: Option<i32> = sqlx::query_scalar::<DB, i32>(
                "UPDATE vaults SET failed_unlock_attempts = failed_unlock_attempts + 1, updated_at = $1 \
                 WHERE user_id = $2 AND (locked_out_until IS NULL OR locked_out_until <= $1) RETURNING failed_unlock_attempts",
            )
            .bind(now)
            .bind(user_id)
            .fetch_optional(&mut *tx)
            .await?;
            match n {
                Some(n) => {
                    if let Some(until) = lockout(n) {
                        sqlx::query::<DB>(
                            "UPDATE vaults SET locked_out_until = $1 WHERE user_id = $2",
                        )
                        .bind(until)
                        .bind(user_id)
                        .execute(&mut *tx)
                        .await?;
                    }
                    UnlockClaim::Attempt(n)
                }
                None => {
                    let until: Option<DbTime> = sqlx::query_scalar::<DB, Option<DbTime>>(
                        "SELECT locked_out_until FROM vaults WHERE user_id = $1",
                    )
                    .bind(user_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .flatten();
                    match until {
                        Some(u) => UnlockClaim::LockedOut(u),
                        None => return Err(StorageError::NotFound),
                    }
                }
            }
        }))
    }

    /// A claimed attempt's password was wrong: when.
    pub async fn note_failed_unlock(&self, actor: Actor, user_id: Uuid, now: DbTime) -> Result<()> {
        in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("UPDATE vaults SET last_failed_unlock_at = $1 WHERE user_id = $2")
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// A claimed attempt's password was right: the run of failures (and any lockout a
    /// parallel wrong guess set) ends.
    pub async fn reset_unlock_failures(
        &self,
        actor: Actor,
        user_id: Uuid,
        now: DbTime,
    ) -> Result<()> {
        in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("UPDATE vaults SET failed_unlock_attempts = 0, locked_out_until = NULL, updated_at = $1 WHERE user_id = $2")
                .bind(now)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Opens an unlock session (replacing any previous one), records the unlock time, and
    /// optionally stores an upgraded KDF + rewrapped DEK (PBKDF2 → Argon2id on unlock).
    /// (The run of failed attempts was ended by the password check,
    /// [`Store::reset_unlock_failures`].) `VersionMismatch`, and nothing written, if the
    /// session's key version is no longer active (shredded or rotated meanwhile: no
    /// session copy of a destroyed key) or the upgrade's key was rewrapped meanwhile (a
    /// password change: the upgrade would revert it).
    pub async fn open_vault_session(
        &self,
        actor: Actor,
        s: &VaultSession,
        opened: &[u8],
        kdf_upgrade: Option<KdfUpgrade<'_>>,
    ) -> Result<()> {
        let ins = format!(
            "INSERT INTO vault_sessions ({SESSION_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)"
        );
        in_tx!(self, actor, |tx| {
            // `opened` is the stored wrap the password opened: a password change (or
            // another setup) that committed since makes this unlock one with the old
            // password, and it opens nothing.
            let active = sqlx::query::<DB>(
                "SELECT 1 FROM user_keys WHERE user_id = $1 AND version = $2 AND state = 'active' AND wrapped_dek = $3",
            )
            .bind(s.user_id)
            .bind(s.dek_version)
            .bind(opened)
            .fetch_optional(&mut *tx)
            .await?;
            if active.is_none() {
                return Err(StorageError::VersionMismatch);
            }
            sqlx::query::<DB>("DELETE FROM vault_sessions WHERE user_id = $1")
                .bind(s.user_id)
                .execute(&mut *tx)
                .await?;
            sqlx::query::<DB>(&ins)
                .bind(s.user_id)
                .bind(s.session_id)
                .bind(s.session_dek.clone())
                .bind(s.dek_version)
                .bind(s.kek_version)
                .bind(s.unlocked_at)
                .bind(s.last_used_at)
                .bind(s.expires_at)
                .bind(s.ip_address.clone())
                .bind(s.previous_session_dek.clone())
                .bind(s.previous_dek_version)
                .execute(&mut *tx)
                .await?;
            sqlx::query::<DB>(
                "UPDATE vaults SET last_unlocked_at = $1, updated_at = $1 WHERE user_id = $2",
            )
            .bind(s.unlocked_at)
            .bind(s.user_id)
            .execute(&mut *tx)
            .await?;
            if let Some(KdfUpgrade {
                kdf,
                salt,
                opened,
                wrapped,
            }) = kdf_upgrade
            {
                let n = sqlx::query::<DB>(
                    "UPDATE user_keys SET wrapped_dek = $1 WHERE user_id = $2 AND version = $3 AND wrapped_dek = $4",
                )
                .bind(wrapped)
                .bind(s.user_id)
                .bind(s.dek_version)
                .bind(opened)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if n != 1 {
                    return Err(StorageError::VersionMismatch);
                }
                sqlx::query::<DB>("UPDATE vaults SET kdf = $1, salt = $2 WHERE user_id = $3")
                    .bind(kdf)
                    .bind(salt)
                    .bind(s.user_id)
                    .execute(&mut *tx)
                    .await?;
            }
        });
        Ok(())
    }

    /// Changes a password vault's auto-lock (idle minutes) and biometric-unlock flag; a
    /// `None` keeps the stored value. Answers false when the user has no password vault.
    pub async fn update_vault_settings(
        &self,
        actor: Actor,
        user_id: Uuid,
        auto_lock_minutes: Option<i32>,
        biometric_unlock_enabled: Option<bool>,
        now: DbTime,
    ) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(
                "UPDATE vaults SET auto_lock_minutes = COALESCE($1, auto_lock_minutes), \
                 biometric_unlock_enabled = COALESCE($2, biometric_unlock_enabled), updated_at = $3 \
                 WHERE user_id = $4",
            )
            .bind(auto_lock_minutes)
            .bind(biometric_unlock_enabled)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// Brings a live unlock session's end forward to `end` (never later).
    pub async fn shorten_vault_session(
        &self,
        actor: Actor,
        user_id: Uuid,
        end: DbTime,
    ) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(
                "UPDATE vault_sessions SET expires_at = $1 WHERE user_id = $2 AND expires_at > $1",
            )
            .bind(end)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// The user's live unlock session (not expired at `now`).
    pub async fn vault_session(
        &self,
        actor: Actor,
        user_id: Uuid,
        now: DbTime,
    ) -> Result<Option<VaultSession>> {
        let sql = format!(
            "SELECT {SESSION_COLS} FROM vault_sessions WHERE user_id = $1 AND expires_at > $2"
        );
        Ok(in_tx!(@quiet self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(user_id)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Deletes unlock sessions that ended before `before`. An ended session's row still
    /// holds the data key wrapped by the master key alone: left in place, a database
    /// writer could move its end forward and unlock the vault without the password.
    pub async fn prune_vault_sessions(&self, before: DbTime) -> Result<u64> {
        // quiet: an ended session already unlocks nothing, so no cached context changes
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query::<DB>("DELETE FROM vault_sessions WHERE expires_at <= $1")
                .bind(before)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        }))
    }

    /// Slides the idle timeout of a live session.
    pub async fn touch_vault_session(
        &self,
        actor: Actor,
        user_id: Uuid,
        now: DbTime,
        expires_at: DbTime,
    ) -> Result<()> {
        in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("UPDATE vault_sessions SET last_used_at = $1, expires_at = $2 WHERE user_id = $3 AND expires_at > $1")
                .bind(now)
                .bind(expires_at)
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// The last step of a password-mode DEK rotation: the session no longer carries the
    /// retired version.
    pub async fn end_session_rekey(&self, actor: Actor, user_id: Uuid) -> Result<()> {
        in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("UPDATE vault_sessions SET previous_session_dek = NULL, previous_dek_version = NULL WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Ends the unlock session; returns whether one was open.
    pub async fn close_vault_session(&self, actor: Actor, user_id: Uuid) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("DELETE FROM vault_sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Locks `user_id`'s vault when its unlock session was opened by the sign-in
    /// `sign_in` (any sign-in: `None`), as revoking that sign-in (or all) does.
    pub async fn close_vault_session_of(
        &self,
        user_id: Uuid,
        sign_in: Option<Uuid>,
    ) -> Result<bool> {
        let n = in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>(
                "DELETE FROM vault_sessions WHERE user_id = $1 AND ($2 IS NULL OR session_id = $2)",
            )
            .bind(user_id)
            .bind(sign_in)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        });
        Ok(n > 0)
    }

    /// Password change: rewrap the DEK under the new password key (data untouched).
    #[allow(clippy::too_many_arguments)] // one compare-and-swap; a struct would only rename the arguments
    pub async fn change_vault_password(
        &self,
        actor: Actor,
        user_id: Uuid,
        kdf: &str,
        salt: &[u8],
        dek_version: i32,
        expected_wrapped: &[u8],
        new_wrapped: &[u8],
        now: DbTime,
    ) -> Result<()> {
        in_tx!(self, actor, |tx| {
            let n = sqlx::query::<DB>("UPDATE user_keys SET wrapped_dek = $1, updated_at = $2 WHERE user_id = $3 AND version = $4 AND wrapped_dek = $5 AND state = 'active'")
                .bind(new_wrapped)
                .bind(now)
                .bind(user_id)
                .bind(dek_version)
                .bind(expected_wrapped)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n != 1 {
                return Err(StorageError::VersionMismatch);
            }
            sqlx::query::<DB>(
                "UPDATE vaults SET kdf = $1, salt = $2, updated_at = $3 WHERE user_id = $4",
            )
            .bind(kdf)
            .bind(salt)
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
            // An unlock made with the old password ends with it (the caller opens its own
            // session with the new one afterwards).
            sqlx::query::<DB>("DELETE FROM vault_sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }
}
