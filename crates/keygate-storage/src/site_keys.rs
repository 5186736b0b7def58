//! Site keys (seed `site_api_keys`): platform-wide provider keys, admin only (RLS policy
//! `admin_only`). The value is an opaque ciphertext here.

use uuid::Uuid;

use crate::{on_unique, Actor, DbTime, Result, StorageError, Store};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SiteKeyRecord {
    pub id: Uuid,
    pub name: String,
    pub provider: String,
    /// The first characters of the key, for display.
    pub key_prefix: String,
    pub value_ct: Vec<u8>,
    pub description: Option<String>,
    pub is_active: bool,
    pub usage_count: i64,
    pub last_used_at: Option<DbTime>,
    pub rotation_interval_days: Option<i32>,
    pub next_rotation_at: Option<DbTime>,
    pub created_by: Option<Uuid>,
    pub row_version: i64,
    pub created_at: DbTime,
    pub updated_at: DbTime,
}

const COLS: &str = "id, name, provider, key_prefix, value_ct, description, is_active, usage_count, last_used_at, rotation_interval_days, next_rotation_at, created_by, row_version, created_at, updated_at";

impl Store {
    pub async fn create_site_key(&self, actor: Actor, k: &SiteKeyRecord) -> Result<()> {
        let sql = format!("INSERT INTO site_api_keys ({COLS}) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15)");
        in_tx!(self, actor, |tx| {
            sqlx::query::<DB>(&sql)
                .bind(k.id)
                .bind(k.name.clone())
                .bind(k.provider.clone())
                .bind(k.key_prefix.clone())
                .bind(k.value_ct.clone())
                .bind(k.description.clone())
                .bind(k.is_active)
                .bind(k.usage_count)
                .bind(k.last_used_at)
                .bind(k.rotation_interval_days)
                .bind(k.next_rotation_at)
                .bind(k.created_by)
                .bind(k.row_version)
                .bind(k.created_at)
                .bind(k.updated_at)
                .execute(&mut *tx)
                .await
                .map_err(|e| on_unique(e, "site_key_name"))?;
        });
        Ok(())
    }

    pub async fn list_site_keys(
        &self,
        actor: Actor,
        cursor: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<SiteKeyRecord>> {
        let sql = format!(
            "SELECT {COLS} FROM site_api_keys WHERE ($1 IS NULL OR id > $1) ORDER BY id LIMIT $2"
        );
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(cursor)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    pub async fn site_key(&self, actor: Actor, id: Uuid) -> Result<Option<SiteKeyRecord>> {
        let sql = format!("SELECT {COLS} FROM site_api_keys WHERE id = $1");
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// Writes the editable fields (including a new sealed value) at `expected_version`.
    pub async fn update_site_key(
        &self,
        actor: Actor,
        k: &SiteKeyRecord,
        expected_version: i64,
    ) -> Result<SiteKeyRecord> {
        let sel = format!("SELECT {COLS} FROM site_api_keys WHERE id = $1");
        Ok(in_tx!(self, actor, |tx| {
            let n = sqlx::query::<DB>(
                "UPDATE site_api_keys SET name = $1, provider = $2, key_prefix = $3, value_ct = $4, description = $5, \
                 is_active = $6, rotation_interval_days = $7, next_rotation_at = $8, updated_at = $9, \
                 row_version = row_version + 1 WHERE id = $10 AND row_version = $11",
            )
            .bind(k.name.clone())
            .bind(k.provider.clone())
            .bind(k.key_prefix.clone())
            .bind(k.value_ct.clone())
            .bind(k.description.clone())
            .bind(k.is_active)
            .bind(k.rotation_interval_days)
            .bind(k.next_rotation_at)
            .bind(k.updated_at)
            .bind(k.id)
            .bind(expected_version)
            .execute(&mut *tx)
            .await
            .map_err(|e| on_unique(e, "site_key_name"))?
            .rows_affected();
            if n != 1 {
                return Err(StorageError::VersionMismatch);
            }
            sqlx::query_as::<DB, _>(&sel)
                .bind(k.id)
                .fetch_one(&mut *tx)
                .await?
        }))
    }

    pub async fn delete_site_key(&self, actor: Actor, id: Uuid) -> Result<bool> {
        let n = in_tx!(self, actor, |tx| {
            sqlx::query::<DB>("DELETE FROM site_api_keys WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?
                .rows_affected()
        });
        Ok(n > 0)
    }

    /// Counts one use of an active key and returns it (with the sealed value).
    pub async fn use_site_key(
        &self,
        actor: Actor,
        id: Uuid,
        now: DbTime,
    ) -> Result<Option<SiteKeyRecord>> {
        let sql = format!(
            "UPDATE site_api_keys SET usage_count = usage_count + 1, last_used_at = $1 WHERE id = $2 AND is_active RETURNING {COLS}"
        );
        Ok(in_tx!(self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(now)
                .bind(id)
                .fetch_optional(&mut *tx)
                .await?
        }))
    }

    /// The active site keys of `provider` (any case): the ids, at most two (one is the
    /// key to use; two mean the provider's key is ambiguous).
    pub async fn active_site_keys_of(&self, actor: Actor, provider: &str) -> Result<Vec<Uuid>> {
        Ok(in_tx!(@quiet self, actor, |tx| {
            sqlx::query_scalar::<DB, Uuid>(
                "SELECT id FROM site_api_keys WHERE is_active AND LOWER(provider) = LOWER($1) ORDER BY id LIMIT 2",
            )
            .bind(provider)
            .fetch_all(&mut *tx)
            .await?
        }))
    }

    /// Active site keys with a rotation date before `due_before` (reminder job).
    pub async fn site_keys_due(&self, due_before: DbTime) -> Result<Vec<SiteKeyRecord>> {
        let sql = format!(
            "SELECT {COLS} FROM site_api_keys WHERE is_active AND next_rotation_at IS NOT NULL AND next_rotation_at < $1 ORDER BY next_rotation_at, id"
        );
        Ok(in_tx!(self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(due_before)
                .fetch_all(&mut *tx)
                .await?
        }))
    }
}
