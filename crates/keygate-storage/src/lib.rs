//! keygate-storage: the only crate with SQL.
//!
//! One [`Store`] over either SQLite (embedded default, WAL) or PostgreSQL (production, many
//! instances, row-level security). Both backends run the same SQL text: parameters are
//! `$N`, which SQLite accepts too; timestamps go through [`DbTime`] (TIMESTAMPTZ on
//! PostgreSQL, fixed-width sortable text on SQLite); money is BIGINT micro-USD.
//!
//! Invariants:
//! - Every request-scoped operation runs in one transaction, so a rejected request leaves
//!   nothing half-written.
//! - On PostgreSQL each transaction first switches to the `keygate_app` role and sets the
//!   caller's identity (`keygate.user_id`, `keygate.role`) transaction-locally, so row-level
//!   security applies; queries still filter by owner explicitly (RLS is the second wall).
//! - Ciphertexts are opaque bytes here: this crate never sees a plaintext secret.

/// Runs `$body` in one transaction on whichever backend the store has. On PostgreSQL the
/// transaction first takes the `keygate_app` role and the actor's identity, so row-level
/// security applies to everything inside. An early return (`?`) drops the transaction,
/// which rolls it back.
macro_rules! in_tx {
    // On SQLite `BEGIN IMMEDIATE`: a transaction that reads and then writes takes the
    // write lock up front (waiting out other writers for the busy timeout) instead of
    // failing at once with SQLITE_BUSY when another connection, such as the group-commit
    // writer, committed between its first read and its first write.
    ($store:expr, $actor:expr, |$tx:ident| $body:block) => {{
        let out = in_tx!(@begin "BEGIN IMMEDIATE", $store, $actor, |$tx| $body);
        $store.bump_epoch();
        out
    }};
    // The gateway's hot-path bookkeeping: does not move `Store::write_epoch`. Reads, or
    // single statements, so a deferred `BEGIN` cannot fail half-way.
    (@quiet $store:expr, $actor:expr, |$tx:ident| $body:block) => {{
        in_tx!(@begin "BEGIN", $store, $actor, |$tx| $body)
    }};
    (@begin $sqlite_begin:literal, $store:expr, $actor:expr, |$tx:ident| $body:block) => {{
        match &$store.db {
            $crate::db::Db::Sqlite(pool) => {
                #[allow(dead_code)]
                type DB = sqlx::Sqlite;
                let mut $tx = pool.begin_with($sqlite_begin).await?;
                #[allow(unused_mut)]
                let out = { $body };
                $tx.commit().await?;
                out
            }
            $crate::db::Db::Postgres(pool) => {
                #[allow(dead_code)]
                type DB = sqlx::Postgres;
                // BEGIN and the identity in one round trip; a connection whose BEGIN did
                // not answer is closed, not pooled (`PgBegin`)
                let mut conn = $crate::db::PgBegin::acquire(pool).await?;
                let mut $tx = conn.begin($crate::db::pg_begin_sql($actor)).await?;
                #[allow(unused_mut)]
                let out = { $body };
                $tx.commit().await?;
                out
            }
        }
    }};
}

/// Binds the 22 columns of one `ApiCallRecord` (order of `usage::COLS`).
macro_rules! bind_api_call {
    ($q:expr, $r:expr) => {{
        let r = $r;
        $q.bind(r.id)
            .bind(r.connection_id)
            .bind(r.credential_id)
            .bind(r.user_id)
            .bind(r.method.clone())
            .bind(r.endpoint.clone())
            .bind(r.class.clone())
            .bind(r.decision.clone())
            .bind(r.deny_code.clone())
            .bind(r.status_code)
            .bind(r.response_time_ms)
            .bind(r.success)
            .bind(r.error_message.clone())
            .bind(r.rate_limit_remaining)
            .bind(r.rate_limit_reset)
            .bind(r.notional_usd_micros)
            .bind(r.withdrawal_usd_micros)
            .bind(r.ip_address.clone())
            .bind(r.user_agent.clone())
            .bind(r.session_id)
            .bind(r.created_at)
            .bind(r.rate_limit_used)
    }};
}

/// Binds the 26 columns of one chained `AuditEvent` (order of `audit::COLS`).
macro_rules! bind_audit_event {
    ($q:expr, $e:expr) => {{
        let e = $e;
        $q.bind(e.seq)
            .bind(e.id)
            .bind(e.created_at)
            .bind(e.category.clone())
            .bind(e.action.clone())
            .bind(e.actor_id)
            .bind(e.actor_role.clone())
            .bind(e.user_id)
            .bind(e.credential_id)
            .bind(e.connection_id)
            .bind(e.endpoint.clone())
            .bind(e.http_method.clone())
            .bind(e.ip_address.clone())
            .bind(e.user_agent.clone())
            .bind(e.device_fingerprint.clone())
            .bind(e.geo_country.clone())
            .bind(e.geo_city.clone())
            .bind(e.session_id)
            .bind(e.success)
            .bind(e.status_code)
            .bind(e.reason.clone())
            .bind(e.risk_score)
            .bind(e.risk_reasons.clone())
            .bind(e.metadata.clone())
            .bind(e.prev_hash.clone())
            .bind(e.hash.clone())
    }};
}

/// Inside an `in_tx!` body: on PostgreSQL, takes the transaction's advisory lock on `id`
/// in key space `space` (waiting at most 5 s, then the request fails rather than drain the
/// pool), so that a count and the insert it allows run one at a time per `id` across
/// instances. SQLite needs none: `in_tx!` holds the write lock.
macro_rules! owner_lock {
    ($store:expr, $tx:ident, $id:expr, $space:expr) => {
        if $store.backend() == $crate::Backend::Postgres {
            sqlx::query::<DB>("SET LOCAL lock_timeout = '5s'")
                .execute(&mut *$tx)
                .await?;
            sqlx::query::<DB>("SELECT pg_advisory_xact_lock($1)")
                .bind($crate::spend::advisory_key($id, $space))
                .execute(&mut *$tx)
                .await?;
        }
    };
}

/// Inside an `in_tx!` body: fails with `Conflict("data_key_version")` unless the user's
/// data-key `version` is still the active one, for a write that stores something sealed
/// under it. A row sealed under a version a rotation retired meanwhile would stay on it
/// (outside a vault password set afterwards). On PostgreSQL the key's row is share-locked
/// until the commit, so a rotation or shred waits for this write and its re-seal pass
/// sees the row; SQLite's `in_tx!` holds the write lock.
macro_rules! require_active_dek {
    ($store:expr, $tx:ident, $user:expr, $version:expr) => {
        let sql = match $store.backend() {
            $crate::Backend::Postgres => "SELECT 1 FROM user_keys WHERE user_id = $1 AND version = $2 AND state = 'active' FOR SHARE",
            $crate::Backend::Sqlite => "SELECT 1 FROM user_keys WHERE user_id = $1 AND version = $2 AND state = 'active'",
        };
        if sqlx::query::<DB>(sql)
            .bind($user)
            .bind($version)
            .fetch_optional(&mut *$tx)
            .await?
            .is_none()
        {
            return Err($crate::StorageError::Conflict("data_key_version"));
        }
    };
}

/// Inside an `in_tx!` body: appends `events` to the audit chain under the chain head's row
/// lock (their `seq`, `prev_hash` and `hash` assigned here) and evaluates to the stored
/// events. Whatever else the transaction writes commits with them, or neither does.
macro_rules! append_chained {
    ($tx:ident, $backend:expr, $events:expr, $chain_key:expr) => {{
        let events: Vec<$crate::AuditEvent> = $events;
        if events.is_empty() {
            events
        } else {
            // takes the head's row lock and reads it in one statement
            let head = sqlx::query::<DB>(
                "UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash",
            )
            .fetch_one(&mut *$tx)
            .await?;
            let (out, seq, prev) = $crate::audit::chain(
                events,
                sqlx::Row::try_get(&head, 0)?,
                sqlx::Row::try_get(&head, 1)?,
                $chain_key,
            );
            let insert = format!("INSERT INTO audit_events ({}) VALUES ", $crate::audit::COLS);
            let mut rest = &out[..];
            while !rest.is_empty() {
                let n = $crate::usage::chunk(rest.len());
                let sql = $crate::multi_insert_for($backend, &insert, 26, n);
                let mut q = sqlx::query::<DB>(&sql);
                for e in &rest[..n] {
                    q = bind_audit_event!(q, e);
                }
                q.execute(&mut *$tx).await?;
                rest = &rest[n..];
            }
            sqlx::query::<DB>("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
                .bind(seq)
                .bind(prev)
                .execute(&mut *$tx)
                .await?;
            out
        }
    }};
}

/// Binds every column of each [`DeliveryRecord`] to a multi-row insert built with
/// `multi_insert(.., DELIVERY_NCOLS, rows.len())`.
macro_rules! bind_deliveries {
    ($q:expr, $rows:expr) => {{
        let mut q = $q;
        for d in $rows {
            q = q
                .bind(d.id)
                .bind(d.webhook_id)
                .bind(d.user_id)
                .bind(d.url.clone())
                .bind(d.event_type.clone())
                .bind(d.payload.clone())
                .bind(d.status.clone())
                .bind(d.attempts)
                .bind(d.next_attempt_at)
                .bind(d.claimed_until)
                .bind(d.last_status_code)
                .bind(d.last_error.clone())
                .bind(d.created_at)
                .bind(d.delivered_at);
        }
        q
    }};
}

mod anomaly;
mod audit;
mod backup;
mod batch_writer;
mod connections;
mod credentials;
mod db;
mod gateway;
mod integrations;
mod keys;
mod meta;
mod pg_batch;
mod revocations;
mod schedule;
#[doc(hidden)]
pub mod scratch;
mod site_keys;
mod spend;
mod sqlite_writer;
mod time;
mod ui;
mod upstream_blocks;
mod usage;
mod vault;
mod webhooks;

pub use anomaly::*;
pub use audit::*;
pub use backup::*;
pub use connections::*;
pub use credentials::*;
pub use db::{Actor, ActorRole, Backend, RawTable, Store};
pub use gateway::*;
pub use integrations::*;
pub use keys::*;
pub use meta::*;
pub use revocations::*;
pub use schedule::*;
pub use site_keys::*;
pub use spend::*;
pub use sqlx::types::Json;
pub use time::DbTime;
pub use ui::*;
pub use upstream_blocks::*;
pub use usage::*;
pub use vault::*;
pub use webhooks::*;

/// Storage failures. `Database` carries the driver error for logs; the HTTP edge never
/// shows it to a client.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("not found")]
    NotFound,
    /// A unique constraint was violated; carries the constraint's columns hint.
    #[error("conflict: {0}")]
    Conflict(&'static str),
    /// Optimistic concurrency: the row changed since the caller read it.
    #[error("version mismatch")]
    VersionMismatch,
    #[error("unsupported database url: {0}")]
    UnsupportedUrl(String),
    #[error("database schema is newer than this binary (database {db}, binary {binary})")]
    SchemaTooNew { db: i64, binary: i64 },
    #[error("database schema is older than this binary (database {db}, binary {binary}): run `keygate migrate`, or start the new server, first; a command-line tool does not upgrade a database an older server may still be serving")]
    SchemaBehind { db: i64, binary: i64 },
    /// An owner already has the most rows of a kind allowed (webhook endpoints,
    /// integrations): `(what, limit)`.
    #[error("at most {1} {0} per owner")]
    LimitReached(&'static str, i64),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// The group commit's writer thread (`batch_writer.rs`) could not start, or a batch
    /// failed and whether it was stored is not known (the connection broke, a COMMIT
    /// failed on I/O, the thread stopped mid-batch).
    #[error("database error: {0}")]
    Writer(String),
    /// The group commit's transaction failed and the database rolled it back: none of the
    /// batch is stored.
    #[error("database error: {0}")]
    WriterRolledBack(String),
    /// PostgreSQL's row-level security would not hold (`Store::migrate`): why.
    #[error("refusing to serve without row-level security: {0}")]
    SecondWall(String),
    /// The database refused a row of the group commit's batch (a constraint, a value it
    /// cannot store, a trigger) and rolled the batch back: none of it is stored.
    #[error("database error: {0}")]
    WriterRefusedRow(String),
}

impl StorageError {
    /// Whether the database reported the failed write's transaction as rolled back (so
    /// nothing of it is stored), rather than a failure whose outcome is unknown.
    pub fn rolled_back(&self) -> bool {
        matches!(
            self,
            StorageError::WriterRolledBack(_)
                | StorageError::WriterRefusedRow(_)
                | StorageError::Database(sqlx::Error::Database(_))
        )
    }

    /// Whether the database refused a row of the failed write (see
    /// [`refuses_a_row`]), and so rolled it back.
    pub fn refused_row(&self) -> bool {
        match self {
            StorageError::WriterRefusedRow(_) => true,
            StorageError::Database(e) => refuses_a_row(e),
            _ => false,
        }
    }
}

/// Whether PostgreSQL's answer `e` refuses a row, rather than the whole write: a data
/// exception (SQLSTATE class 22: a value it cannot store), an integrity constraint (class
/// 23), or an exception a trigger raised (P0001). A lock or statement timeout, a
/// serialization failure, a missing privilege (42501, which is also how row-level
/// security refuses: the writer's identity is the same for every row), a full disk or a
/// shutdown would fail any write, and are not.
pub(crate) fn refuses_a_row(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => d
            .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
            .is_some_and(|p| {
                let c = p.code();
                c.starts_with("22") || c.starts_with("23") || c == "P0001"
            }),
        _ => false,
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Maps a unique-constraint violation to [`StorageError::Conflict`].
pub(crate) fn on_unique(e: sqlx::Error, what: &'static str) -> StorageError {
    if let sqlx::Error::Database(db) = &e {
        if db.is_unique_violation() {
            return StorageError::Conflict(what);
        }
    }
    StorageError::Database(e)
}

/// [`multi_insert`] for the hot path: on SQLite with anonymous `?` placeholders, bound in
/// order. (SQLite resolves a numbered parameter's name by a linear scan, and the driver
/// asks for every parameter's name, so a 1 400-parameter `$N` insert costs a quadratic
/// number of steps; `?` has no name to look up.)
pub(crate) fn multi_insert_for(backend: Backend, head: &str, cols: usize, rows: usize) -> String {
    match backend {
        Backend::Postgres => multi_insert(head, cols, rows),
        Backend::Sqlite => {
            let group = format!("({})", vec!["?"; cols].join(","));
            let mut s = String::with_capacity(head.len() + rows * (group.len() + 1));
            s.push_str(head);
            for r in 0..rows {
                if r > 0 {
                    s.push(',');
                }
                s.push_str(&group);
            }
            s
        }
    }
}

/// `head` followed by `rows` groups of `cols` placeholders: `($1,..,$n),($n+1,..)`.
pub(crate) fn multi_insert(head: &str, cols: usize, rows: usize) -> String {
    let mut s = String::with_capacity(head.len() + rows * cols * 5);
    s.push_str(head);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push('$');
            s.push_str(&(r * cols + c + 1).to_string());
        }
        s.push(')');
    }
    s
}

#[cfg(test)]
mod send_tests {
    //! Every store future must be `Send` so axum handlers can await it.
    use super::*;

    fn assert_send<T: Send>(_: T) {}

    #[allow(dead_code)]
    fn store_futures_are_send(s: Store, rows: Vec<ApiCallRecord>, ev: Vec<AuditEvent>) {
        assert_send(s.insert_api_calls(&rows));
        assert_send(s.append_audit(ev, &[0u8; 32]));
        assert_send(s.verify_audit_chain(&[0u8; 32]));
        let u = uuid::Uuid::nil();
        assert_send(s.vault(Actor::service(), u));
        assert_send(s.credential(Actor::service(), u, u));
        assert_send(s.begin_spend_check(u, DbTime::now()));
    }
}
