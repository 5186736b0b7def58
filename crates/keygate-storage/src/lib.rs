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
    ($store:expr, $actor:expr, |$tx:ident| $body:block) => {{
        match &$store.db {
            $crate::db::Db::Sqlite(pool) => {
                let mut $tx = pool.begin().await?;
                #[allow(unused_mut)]
                let out = { $body };
                $tx.commit().await?;
                out
            }
            $crate::db::Db::Postgres(pool) => {
                let mut $tx = pool.begin().await?;
                $crate::db::set_pg_identity(&mut $tx, $actor).await?;
                #[allow(unused_mut)]
                let out = { $body };
                $tx.commit().await?;
                out
            }
        }
    }};
}

mod audit;
mod connections;
mod credentials;
mod db;
mod keys;
mod meta;
mod time;
mod usage;
mod vault;

pub use audit::*;
pub use connections::*;
pub use credentials::*;
pub use db::{Actor, ActorRole, Backend, RawTable, Store};
pub use keys::*;
pub use meta::*;
pub use time::DbTime;
pub use usage::*;
pub use vault::*;

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
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
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
