//! Web-console sign-in links and sessions (issue 10). Tokens and session ids are stored
//! only as SHA-256 hashes; every query runs as the service role (RLS `service_only`),
//! because a lookup by hash happens before the caller's identity is known.

use uuid::Uuid;

use crate::{Actor, DbTime, Result, Store};

/// A console session as stored (the cookie value itself is never stored).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UiSessionRecord {
    pub id_hash: Vec<u8>,
    pub user_id: Uuid,
    pub is_admin: bool,
    pub csrf_token: String,
    pub created_at: DbTime,
    pub last_seen_at: DbTime,
    pub expires_at: DbTime,
    /// The JWKS key a session opened with an asymmetric token was verified with: the
    /// session lasts only while that key is in the set.
    pub jwks_kid: Option<String>,
    /// When what opened the session was issued (Unix seconds): a token's `iat`, or the
    /// time a sign-in link was used. `None` for sessions opened before this was kept.
    pub issued_at: Option<i64>,
    /// The sign-in (`Caller::sign_in`) of the token the session was opened with: revoking
    /// that token ends the session. `None` for one opened with a sign-in link.
    pub opened_by: Option<Uuid>,
    /// When the user signed in (Unix seconds): the link's use, or the pasted token's
    /// authentication time. `None` when unknown: never a recent sign-in.
    pub signed_in_at: Option<i64>,
}

/// Binds a session's columns, in [`SESSION_COLS`] order (a macro: the query's backend is
/// the `DB` of the `in_tx!` arm it is used in).
macro_rules! bind_session {
    ($q:expr, $s:expr) => {{
        let s = $s;
        $q.bind(s.id_hash.clone())
            .bind(s.user_id)
            .bind(s.is_admin)
            .bind(s.csrf_token.clone())
            .bind(s.created_at)
            .bind(s.last_seen_at)
            .bind(s.expires_at)
            .bind(s.jwks_kid.clone())
            .bind(s.issued_at)
            .bind(s.opened_by)
            .bind(s.signed_in_at)
    }};
}

const SESSION_COLS: &str =
    "id_hash, user_id, is_admin, csrf_token, created_at, last_seen_at, expires_at, jwks_kid, issued_at, opened_by, signed_in_at";

fn insert_session_sql() -> String {
    format!("INSERT INTO ui_sessions ({SESSION_COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11)")
}

impl Store {
    /// Stores a one-time login link (by the hash of its token).
    pub async fn create_login_link(
        &self,
        token_hash: &[u8],
        user_id: Uuid,
        is_admin: bool,
        expires_at: DbTime,
    ) -> Result<()> {
        let now = DbTime::now();
        in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>(
                "INSERT INTO ui_login_links (token_hash, user_id, is_admin, expires_at, used_at, created_at) VALUES ($1,$2,$3,$4,NULL,$5)",
            )
            .bind(token_hash.to_vec())
            .bind(user_id)
            .bind(is_admin)
            .bind(expires_at)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }

    /// Uses up a login link and stores session `s` in one transaction, if the link is
    /// unused, unexpired and signs in `s`'s user with `s`'s admin flag. Atomic: two
    /// concurrent uses cannot both succeed, and a link is never used up without its
    /// session (a failure leaves the link as it was). Answers whether it signed in.
    pub async fn consume_login_link_into_session(
        &self,
        token_hash: &[u8],
        s: &UiSessionRecord,
    ) -> Result<bool> {
        let now = DbTime::now();
        let sql = insert_session_sql();
        Ok(in_tx!(self, Actor::service(), |tx| {
            let used = sqlx::query::<DB>(
                "UPDATE ui_login_links SET used_at = $2 WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2 \
                 AND user_id = $3 AND is_admin = $4",
            )
            .bind(token_hash.to_vec())
            .bind(now)
            .bind(s.user_id)
            .bind(s.is_admin)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if used == 1 {
                bind_session!(sqlx::query::<DB>(&sql), s)
                    .execute(&mut *tx)
                    .await?;
            }
            used == 1
        }))
    }

    /// Who a login link signs in as, while it is unused and unexpired; uses nothing up
    /// (the console asks for a confirming POST before
    /// [`Store::consume_login_link_into_session`]).
    pub async fn peek_login_link(&self, token_hash: &[u8]) -> Result<Option<(Uuid, bool)>> {
        let now = DbTime::now();
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, (Uuid, bool)>(
                "SELECT user_id, is_admin FROM ui_login_links WHERE token_hash = $1 AND used_at IS NULL AND expires_at > $2",
            )
            .bind(token_hash.to_vec())
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
        }))
    }

    pub async fn create_ui_session(&self, s: &UiSessionRecord) -> Result<()> {
        let sql = insert_session_sql();
        in_tx!(self, Actor::service(), |tx| {
            bind_session!(sqlx::query::<DB>(&sql), s)
                .execute(&mut *tx)
                .await?;
        });
        Ok(())
    }

    /// Returns the live session with this id hash and records activity; `None` when it
    /// does not exist, passed its absolute expiry, or was idle since before `idle_cutoff`.
    pub async fn touch_ui_session(
        &self,
        id_hash: &[u8],
        idle_cutoff: DbTime,
    ) -> Result<Option<UiSessionRecord>> {
        let now = DbTime::now();
        let sql = format!(
            "UPDATE ui_sessions SET last_seen_at = $2 WHERE id_hash = $1 AND expires_at > $2 AND last_seen_at > $3 RETURNING {SESSION_COLS}"
        );
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, UiSessionRecord>(&sql)
                .bind(id_hash.to_vec())
                .bind(now)
                .bind(idle_cutoff)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Ends every console session opened with a token (not those opened with a sign-in
    /// link); returns how many.
    pub async fn end_token_ui_sessions(&self) -> Result<u64> {
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>(
                "DELETE FROM ui_sessions WHERE opened_by IS NOT NULL OR jwks_kid IS NOT NULL",
            )
            .execute(&mut *tx)
            .await?
            .rows_affected()
        }))
    }

    /// Ends a session (logout), and drops every expired session and used or expired link.
    pub async fn delete_ui_session(&self, id_hash: &[u8]) -> Result<()> {
        let now = DbTime::now();
        in_tx!(self, Actor::service(), |tx| {
            sqlx::query::<DB>("DELETE FROM ui_sessions WHERE id_hash = $1 OR expires_at <= $2")
                .bind(id_hash.to_vec())
                .bind(now)
                .execute(&mut *tx)
                .await?;
            sqlx::query::<DB>(
                "DELETE FROM ui_login_links WHERE expires_at <= $1 OR used_at IS NOT NULL",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
        });
        Ok(())
    }
}
