//! Platform metadata (`keygate_meta`): the master-key check value and similar one-off
//! facts. Written by the login role at startup, never by request transactions.

use crate::db::Db;
use crate::{Result, Store};

/// The key under which the master key's check value is stored (DESIGN.md §7).
pub const META_KEY_CHECK: &str = "master_key_check";

impl Store {
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        let sql = "SELECT value FROM keygate_meta WHERE key = $1";
        Ok(match &self.db {
            Db::Sqlite(p) => {
                sqlx::query_scalar::<sqlx::Sqlite, _>(sql)
                    .bind(key)
                    .fetch_optional(p)
                    .await?
            }
            Db::Postgres(p) => {
                sqlx::query_scalar::<sqlx::Postgres, _>(sql)
                    .bind(key)
                    .fetch_optional(p)
                    .await?
            }
        })
    }

    /// Inserts `value` unless the key exists; returns the value now stored (so two
    /// instances starting at once agree on one).
    pub async fn meta_set_if_absent(&self, key: &str, value: &str) -> Result<String> {
        let ins =
            "INSERT INTO keygate_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING";
        match &self.db {
            Db::Sqlite(p) => sqlx::query::<sqlx::Sqlite>(ins)
                .bind(key)
                .bind(value)
                .execute(p)
                .await
                .map(|_| ())?,
            Db::Postgres(p) => sqlx::query::<sqlx::Postgres>(ins)
                .bind(key)
                .bind(value)
                .execute(p)
                .await
                .map(|_| ())?,
        };
        Ok(self.meta_get(key).await?.unwrap_or_default())
    }

    /// Overwrites a metadata value (master-key rotation moves the check value).
    pub async fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        let sql = "INSERT INTO keygate_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
        match &self.db {
            Db::Sqlite(p) => sqlx::query::<sqlx::Sqlite>(sql)
                .bind(key)
                .bind(value)
                .execute(p)
                .await
                .map(|_| ())?,
            Db::Postgres(p) => sqlx::query::<sqlx::Postgres>(sql)
                .bind(key)
                .bind(value)
                .execute(p)
                .await
                .map(|_| ())?,
        };
        Ok(())
    }

    /// Overwrites several metadata values in one transaction (all or none), so a
    /// master-key rotation's last step never leaves the check value and the key version apart.
    pub async fn meta_set_all(&self, pairs: &[(&str, &str)]) -> Result<()> {
        let sql = "INSERT INTO keygate_meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO UPDATE SET value = excluded.value";
        match &self.db {
            Db::Sqlite(p) => {
                let mut tx = p.begin().await?;
                for (k, v) in pairs {
                    sqlx::query::<sqlx::Sqlite>(sql)
                        .bind(*k)
                        .bind(*v)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                for (k, v) in pairs {
                    sqlx::query::<sqlx::Postgres>(sql)
                        .bind(*k)
                        .bind(*v)
                        .execute(&mut *tx)
                        .await?;
                }
                tx.commit().await?;
            }
        };
        Ok(())
    }

    /// True when no user data exists yet (a fresh database may get a fresh master key).
    pub async fn is_empty(&self) -> Result<bool> {
        let sql = "SELECT COUNT(*) FROM user_keys";
        let n: i64 = match &self.db {
            Db::Sqlite(p) => {
                sqlx::query_scalar::<sqlx::Sqlite, _>(sql)
                    .fetch_one(p)
                    .await?
            }
            Db::Postgres(p) => {
                sqlx::query_scalar::<sqlx::Postgres, _>(sql)
                    .fetch_one(p)
                    .await?
            }
        };
        Ok(n == 0)
    }
}
