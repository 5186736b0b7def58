//! Backup and restore: one backend-neutral snapshot format for SQLite and PostgreSQL.
//!
//! A backup file is plain UTF-8 text, one JSON document per line:
//!
//! ```text
//! {"format":"keygate-backup","format_version":1,"keygate_version":..,"schema_version":..,
//!  "source_backend":..,"created_at":..,"key_check_value":..,"tables":[{"name":..,"columns":[[name,kind],..],"rows":n},..],
//!  "not_included":[..]}
//! {"table":"user_keys","row":[..]}            one line per row, tables in [`BACKUP_TABLES`] order
//! ...
//! {"trailer":"keygate-backup","rows":total,"sha256":"<hex of every byte before this line>"}
//! ```
//!
//! Cells are typed by the column's [`ColKind`]: uuid and time as strings (times in
//! [`DbTime::canonical`] form, microseconds), bytes as standard base64, json embedded, null
//! as `null`. So a row read from one backend is written to the other exactly, and the audit
//! chain (whose canonical encoding is backend-neutral) still verifies after a restore.
//!
//! Invariants:
//! - **Every table is accounted for.** A backup first compares the live schema with
//!   [`BACKUP_TABLES`] + [`NOT_BACKED_UP`] (tables, columns and their types) and refuses to
//!   run if anything is unregistered, so a new migration can never be silently left out.
//!   *A new table must be registered in [`BACKUP_TABLES`] (or, with a reason, in
//!   [`NOT_BACKED_UP`]); a new column in its table's column list.*
//! - **Nothing here unwraps data keys.** The file holds ciphertexts and DEKs wrapped by the
//!   master key, never the master key, the token secret or unlock sessions
//!   (`vault_sessions` holds DEKs wrapped for a live session and is not backed up: a
//!   restored password vault starts locked).
//! - **Consistent snapshot.** All tables are read in one read-only transaction
//!   (PostgreSQL: `REPEATABLE READ READ ONLY`; SQLite: one read transaction over WAL),
//!   while the server keeps writing.
//! - **All or nothing.** A restore checks the whole file (trailer checksum, header, schema
//!   version) before it touches the database, refuses a non-empty target, and writes every
//!   row in one transaction, which also re-checks the checksum before it commits.
//!
//! The SHA-256 trailer detects truncation and corruption, not a deliberate forgery (anyone
//! who can edit the file can recompute it). Forged rows still cannot yield secrets or a
//! valid audit chain without the master key: sealed fields are AEAD-bound to their row and
//! the chain is keyed by a master-key subkey. Run `keygate audit verify` after a restore.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};
use sqlx::types::Json;
use sqlx::{Decode, Encode, Row, Type};
use uuid::Uuid;

use crate::db::{set_pg_identity, Db};
use crate::{Actor, DbTime, StorageError, Store, META_KEY_CHECK};

/// Version of the file layout described in the module docs.
pub const BACKUP_FORMAT_VERSION: u32 = 1;
const FORMAT_NAME: &str = "keygate-backup";
/// Bind parameters per INSERT statement (below SQLite's and PostgreSQL's limits).
const PARAMS_PER_STATEMENT: usize = 900;

/// How a column's values are read, written to the file and bound again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColKind {
    /// TEXT on both backends.
    Text,
    /// INTEGER.
    I32,
    /// BIGINT.
    I64,
    /// BOOLEAN.
    Bool,
    /// UUID on PostgreSQL, 16-byte BLOB on SQLite.
    Uuid,
    /// TIMESTAMPTZ on PostgreSQL, fixed-width TEXT on SQLite ([`DbTime`]).
    Time,
    /// BYTEA / BLOB (ciphertexts, salts), base64 in the file.
    Bytes,
    /// JSONB on PostgreSQL, TEXT on SQLite.
    Json,
}

impl ColKind {
    /// `information_schema.columns.data_type` on PostgreSQL.
    fn pg_type(self) -> &'static str {
        match self {
            ColKind::Text => "text",
            ColKind::I32 => "integer",
            ColKind::I64 => "bigint",
            ColKind::Bool => "boolean",
            ColKind::Uuid => "uuid",
            ColKind::Time => "timestamp with time zone",
            ColKind::Bytes => "bytea",
            ColKind::Json => "jsonb",
        }
    }
    /// The declared type in the SQLite migrations.
    fn sqlite_type(self) -> &'static str {
        match self {
            ColKind::Text | ColKind::Time | ColKind::Json => "TEXT",
            ColKind::I32 => "INTEGER",
            ColKind::I64 => "BIGINT",
            ColKind::Bool => "BOOLEAN",
            ColKind::Uuid | ColKind::Bytes => "BLOB",
        }
    }
}

/// One backed-up table.
#[derive(Debug, Clone, Copy)]
pub struct TableSpec {
    pub name: &'static str,
    /// Every column of the table, with its kind. Checked against the live schema.
    pub columns: &'static [(&'static str, ColKind)],
    /// Row order in the file (the primary key), so equal data gives equal files.
    pub order_by: &'static [&'static str],
    /// A table the migrations seed with one row (`audit_head`): restore updates that row
    /// by this key column instead of inserting, and the target counts as empty while every
    /// row still satisfies [`TableSpec::seed_predicate`].
    pub seeded_key: Option<&'static str>,
    /// SQL predicate true for the migration's seed row(s).
    pub seed_predicate: Option<&'static str>,
    /// Platform metadata that the `keygate_app` role may not write: restore writes it as
    /// the migration login before switching to the service identity. Such tables come
    /// first in [`BACKUP_TABLES`].
    pub login_write: bool,
}

const fn table(
    name: &'static str,
    columns: &'static [(&'static str, ColKind)],
    order_by: &'static [&'static str],
) -> TableSpec {
    TableSpec {
        name,
        columns,
        order_by,
        seeded_key: None,
        seed_predicate: None,
        login_write: false,
    }
}

use ColKind::{Bool, Bytes, Json as J, Text, Time, Uuid as U, I32, I64};

/// Every table a backup holds, in restore order (parents before children, foreign keys).
///
/// **Register new tables here** (and new columns in their table's list); the schema check
/// in [`Store::backup`] and the API tests fail until the live schema and this list agree.
pub const BACKUP_TABLES: &[TableSpec] = &[
    TableSpec {
        login_write: true,
        ..table("keygate_meta", &[("key", Text), ("value", Text)], &["key"])
    },
    table(
        "user_keys",
        &[
            ("user_id", U),
            ("version", I32),
            ("wrapped_dek", Bytes),
            ("kek_version", I32),
            ("protection", Text),
            ("state", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        &["user_id", "version"],
    ),
    table(
        "vaults",
        &[
            ("user_id", U),
            ("kdf", Text),
            ("salt", Bytes),
            ("auto_lock_minutes", I32),
            ("require_password_on_decrypt", Bool),
            ("biometric_unlock_enabled", Bool),
            ("failed_unlock_attempts", I32),
            ("last_failed_unlock_at", Time),
            ("locked_out_until", Time),
            ("last_unlocked_at", Time),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        &["user_id"],
    ),
    table(
        "credentials",
        &[
            ("id", U),
            ("user_id", U),
            ("exchange", Text),
            ("label", Text),
            ("environment", Text),
            ("status", Text),
            ("key_type", Text),
            ("api_key_hint", Text),
            ("public_key", Text),
            ("permissions", J),
            ("limits", J),
            ("current_generation", I32),
            ("expires_at", Time),
            ("usage_count", I64),
            ("last_used_at", Time),
            ("suspended_reason", Text),
            ("row_version", I64),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        &["id"],
    ),
    table(
        "credential_secrets",
        &[
            ("id", U),
            ("credential_id", U),
            ("user_id", U),
            ("generation", I32),
            ("dek_version", I32),
            ("api_key_ct", Bytes),
            ("api_secret_ct", Bytes),
            ("passphrase_ct", Bytes),
            ("private_key_ct", Bytes),
            ("status", Text),
            ("rotated_from", U),
            ("grace_period_ends_at", Time),
            ("last_nonce", I64),
            ("created_at", Time),
        ],
        &["id"],
    ),
    table(
        "connections",
        &[
            ("id", U),
            ("user_id", U),
            ("name", Text),
            ("exchange", Text),
            ("credential_id", U),
            ("base_url", Text),
            ("timeout_ms", I32),
            ("max_retries", I32),
            ("is_default", Bool),
            ("is_enabled", Bool),
            ("status", Text),
            ("scopes", J),
            ("limits", J),
            ("tags", J),
            ("metadata", J),
            ("last_successful_ping", Time),
            ("last_error_message", Text),
            ("error_count", I32),
            ("warnings", J),
            ("last_verified_at", Time),
            ("verification_status", Text),
            ("row_version", I64),
            ("created_at", Time),
            ("updated_at", Time),
            ("sync_attempted_at", Time),
        ],
        &["id"],
    ),
    table(
        "balances",
        &[
            ("id", U),
            ("connection_id", U),
            ("user_id", U),
            ("asset", Text),
            ("account_type", Text),
            ("free", Text),
            ("locked", Text),
            ("total", Text),
            ("usd_value", Text),
            ("last_price", Text),
            ("synced_at", Time),
        ],
        &["id"],
    ),
    table(
        "api_calls",
        &[
            ("id", U),
            ("connection_id", U),
            ("credential_id", U),
            ("user_id", U),
            ("method", Text),
            ("endpoint", Text),
            ("class", Text),
            ("decision", Text),
            ("deny_code", Text),
            ("status_code", I32),
            ("response_time_ms", I32),
            ("success", Bool),
            ("error_message", Text),
            ("rate_limit_remaining", I64),
            ("rate_limit_reset", Time),
            ("notional_usd_micros", I64),
            ("withdrawal_usd_micros", I64),
            ("ip_address", Text),
            ("user_agent", Text),
            ("session_id", U),
            ("created_at", Time),
            ("rate_limit_used", I64),
        ],
        &["id"],
    ),
    table(
        "audit_events",
        &[
            ("seq", I64),
            ("id", U),
            ("created_at", Time),
            ("category", Text),
            ("action", Text),
            ("actor_id", U),
            ("actor_role", Text),
            ("user_id", U),
            ("credential_id", U),
            ("connection_id", U),
            ("endpoint", Text),
            ("http_method", Text),
            ("ip_address", Text),
            ("user_agent", Text),
            ("device_fingerprint", Text),
            ("geo_country", Text),
            ("geo_city", Text),
            ("session_id", U),
            ("success", Bool),
            ("status_code", I32),
            ("reason", Text),
            ("risk_score", I32),
            ("risk_reasons", J),
            ("metadata", J),
            ("prev_hash", Text),
            ("hash", Text),
        ],
        &["seq"],
    ),
    TableSpec {
        seeded_key: Some("id"),
        seed_predicate: Some("seq = 0 AND hash = 'genesis'"),
        ..table(
            "audit_head",
            &[("id", I32), ("seq", I64), ("hash", Text)],
            &["id"],
        )
    },
    table(
        "credential_spend",
        &[
            ("credential_id", U),
            ("user_id", U),
            ("day", Text),
            ("volume_usd_micros", I64),
            ("withdrawal_usd_micros", I64),
        ],
        &["credential_id", "day"],
    ),
    table(
        "rate_counters",
        &[("bucket", Text), ("window_start", I64), ("count", I64)],
        &["bucket", "window_start"],
    ),
    table(
        "rotation_schedules",
        &[
            ("credential_id", U),
            ("user_id", U),
            ("interval_days", I32),
            ("next_due_at", Time),
            ("auto_rotation_enabled", Bool),
            ("last_rotated_at", Time),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        &["credential_id"],
    ),
    table(
        "sent_reminders",
        &[
            ("reminder_key", Text),
            ("subject_kind", Text),
            ("subject_id", U),
            ("user_id", U),
            ("created_at", Time),
        ],
        &["reminder_key"],
    ),
    table(
        "site_api_keys",
        &[
            ("id", U),
            ("name", Text),
            ("provider", Text),
            ("key_prefix", Text),
            ("value_ct", Bytes),
            ("description", Text),
            ("is_active", Bool),
            ("usage_count", I64),
            ("last_used_at", Time),
            ("rotation_interval_days", I32),
            ("next_rotation_at", Time),
            ("created_by", U),
            ("row_version", I64),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        &["id"],
    ),
    table(
        "integrations",
        &[
            ("id", U),
            ("user_id", U),
            ("provider", Text),
            ("name", Text),
            ("client_id", Text),
            ("client_secret_ct", Bytes),
            ("token_url", Text),
            ("scopes", J),
            ("config", J),
            ("status", Text),
            ("last_error", Text),
            ("dek_version", I32),
            ("row_version", I64),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        &["id"],
    ),
    table(
        "integration_tokens",
        &[
            ("integration_id", U),
            ("user_id", U),
            ("access_token_ct", Bytes),
            ("refresh_token_ct", Bytes),
            ("token_type", Text),
            ("scopes", J),
            ("expires_at", Time),
            ("dek_version", I32),
            ("refreshed_at", Time),
            ("refresh_attempts", I32),
            ("next_attempt_at", Time),
            ("last_error", Text),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        &["integration_id"],
    ),
    table(
        "webhooks",
        &[
            ("id", U),
            ("user_id", U),
            ("url", Text),
            ("description", Text),
            ("events", J),
            ("secret_ct", Bytes),
            ("is_enabled", Bool),
            ("row_version", I64),
            ("created_at", Time),
            ("updated_at", Time),
        ],
        &["id"],
    ),
    table(
        "webhook_deliveries",
        &[
            ("id", U),
            ("webhook_id", U),
            ("user_id", U),
            ("url", Text),
            ("event_type", Text),
            ("payload", Text),
            ("status", Text),
            ("attempts", I32),
            ("next_attempt_at", Time),
            ("claimed_until", Time),
            ("last_status_code", I32),
            ("last_error", Text),
            ("created_at", Time),
            ("delivered_at", Time),
        ],
        &["id"],
    ),
    // a restore must not bring back tokens their user revoked
    table(
        "token_revocations",
        &[
            ("user_id", U),
            ("issued_before", Time),
            ("updated_at", Time),
        ],
        &["user_id"],
    ),
    // nor a single token revoked
    table(
        "revoked_sign_ins",
        &[
            ("user_id", U),
            ("sign_in", U),
            ("expires_at", Time),
            ("revoked_at", Time),
        ],
        &["user_id", "sign_in"],
    ),
];

/// Tables deliberately left out of a backup, with the reason.
pub const NOT_BACKED_UP: &[(&str, &str)] = &[
    (
        "upstream_blocks",
        "the exchanges' current bans of keygate's address or a key; over within minutes",
    ),
    (
        "vault_sessions",
        "unlock sessions hold DEKs wrapped for a live session; a restored vault starts locked",
    ),
    (
        "job_leases",
        "which instance runs a background job right now; meaningless on another machine",
    ),
    (
        "ui_sessions",
        "web-console sessions are short-lived sign-ins; a restore signs everyone out",
    ),
    (
        "ui_login_links",
        "one-time sign-in links live minutes; a restored link must not sign anyone in",
    ),
    (
        "_sqlx_migrations",
        "restore runs the migrations itself; the header carries the schema version",
    ),
];

fn spec(name: &str) -> Option<&'static TableSpec> {
    BACKUP_TABLES.iter().find(|t| t.name == name)
}

/// Backup and restore failures; each renders as one line for the operator.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("backup file is truncated (no complete trailer line); take a new backup")]
    Truncated,
    #[error("backup file is corrupt: {0}")]
    Corrupt(String),
    #[error("backup format version {0} is not supported by this keygate (supports {BACKUP_FORMAT_VERSION})")]
    UnsupportedFormat(u32),
    #[error("backup schema version {backup} is newer than this keygate's ({binary}); restore with the keygate version that took it or a later one")]
    BackupSchemaTooNew { backup: i64, binary: i64 },
    #[error("backup schema version {0} is not a migration this keygate knows")]
    UnknownSchema(i64),
    #[error("target database is at schema version {target}, newer than the backup's {backup}; restore into a new, empty database")]
    TargetSchemaNewer { target: i64, backup: i64 },
    #[error("target database is not empty (table {table} has {rows} row(s)); restore needs an empty database")]
    NotEmpty { table: String, rows: i64 },
    #[error("database schema version {db} differs from this keygate's {binary}; run `keygate migrate` (or use the matching keygate) before a backup")]
    SchemaMismatch { db: i64, binary: i64 },
    #[error(
        "database has no master-key check value (keygate never started on it); nothing to back up"
    )]
    NoKeyCheck,
    #[error("schema not covered by the backup registry: {0} (register it in crates/keygate-storage/src/backup.rs)")]
    Unregistered(String),
    #[error("table {table}: the service identity sees {visible} of {total} rows; a row-level-security policy for role 'service' is missing")]
    HiddenRows {
        table: String,
        visible: i64,
        total: i64,
    },
    #[error(transparent)]
    Storage(#[from] StorageError),
}

impl From<sqlx::Error> for BackupError {
    fn from(e: sqlx::Error) -> Self {
        BackupError::Storage(StorageError::Database(e))
    }
}

type BResult<T> = std::result::Result<T, BackupError>;

/// The first line of a backup file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BackupHeader {
    pub format: String,
    pub format_version: u32,
    pub keygate_version: String,
    pub schema_version: i64,
    /// `sqlite` or `postgres`: informational only, the format is the same.
    pub source_backend: String,
    pub created_at: String,
    /// The master key's check value (DESIGN.md §7): restore refuses a key that does not
    /// match it, before writing anything.
    pub key_check_value: String,
    pub tables: Vec<TableHeader>,
    pub not_included: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TableHeader {
    pub name: String,
    pub columns: Vec<(String, ColKind)>,
    pub rows: i64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RowLine {
    table: String,
    row: Vec<Value>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Trailer {
    trailer: String,
    rows: i64,
    sha256: String,
}

/// What a backup or restore did.
#[derive(Debug, Clone, Serialize)]
pub struct BackupSummary {
    pub schema_version: i64,
    pub tables: Vec<(String, i64)>,
    pub total_rows: i64,
    pub sha256: String,
}

/// Hashes every byte written through it.
struct HashingWriter<W: Write> {
    inner: W,
    hash: Sha256,
}

impl<W: Write> HashingWriter<W> {
    fn line<T: Serialize>(&mut self, v: &T) -> BResult<()> {
        let mut buf = serde_json::to_vec(v).map_err(|e| BackupError::Corrupt(e.to_string()))?;
        buf.push(b'\n');
        self.hash.update(&buf);
        self.inner.write_all(&buf).map_err(|e| BackupError::Io {
            path: "backup output".into(),
            source: e,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Cells

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// Reads column `i` of `row` as `kind` into its file form.
fn read_cell<'r, R>(row: &'r R, i: usize, kind: ColKind) -> Result<Value, sqlx::Error>
where
    R: Row,
    usize: sqlx::ColumnIndex<R>,
    String: Decode<'r, R::Database> + Type<R::Database>,
    i32: Decode<'r, R::Database> + Type<R::Database>,
    i64: Decode<'r, R::Database> + Type<R::Database>,
    bool: Decode<'r, R::Database> + Type<R::Database>,
    Uuid: Decode<'r, R::Database> + Type<R::Database>,
    DbTime: Decode<'r, R::Database> + Type<R::Database>,
    Vec<u8>: Decode<'r, R::Database> + Type<R::Database>,
    Json<Value>: Decode<'r, R::Database> + Type<R::Database>,
{
    Ok(match kind {
        ColKind::Text => row.try_get::<Option<String>, _>(i)?.map(Value::String),
        ColKind::I32 => row.try_get::<Option<i32>, _>(i)?.map(Value::from),
        ColKind::I64 => row.try_get::<Option<i64>, _>(i)?.map(Value::from),
        ColKind::Bool => row.try_get::<Option<bool>, _>(i)?.map(Value::Bool),
        ColKind::Uuid => row
            .try_get::<Option<Uuid>, _>(i)?
            .map(|u| Value::String(u.to_string())),
        ColKind::Time => row
            .try_get::<Option<DbTime>, _>(i)?
            .map(|t| Value::String(t.canonical())),
        ColKind::Bytes => row
            .try_get::<Option<Vec<u8>>, _>(i)?
            .map(|b| Value::String(b64().encode(b))),
        ColKind::Json => row.try_get::<Option<Json<Value>>, _>(i)?.map(|j| j.0),
    }
    .unwrap_or(Value::Null))
}

/// A file cell parsed back into its typed value (`None` = SQL NULL).
#[derive(Debug, Clone)]
enum Cell {
    Text(Option<String>),
    I32(Option<i32>),
    I64(Option<i64>),
    Bool(Option<bool>),
    Uuid(Option<Uuid>),
    Time(Option<DbTime>),
    Bytes(Option<Vec<u8>>),
    Json(Option<Json<Value>>),
}

fn parse_cell(v: &Value, kind: ColKind) -> Result<Cell, String> {
    let null = v.is_null();
    let s = || {
        v.as_str()
            .ok_or_else(|| format!("expected a {kind:?} string"))
    };
    Ok(match kind {
        ColKind::Text => Cell::Text(if null { None } else { Some(s()?.to_string()) }),
        ColKind::I32 => Cell::I32(if null {
            None
        } else {
            Some(
                v.as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .ok_or("expected a 32-bit integer")?,
            )
        }),
        ColKind::I64 => Cell::I64(if null {
            None
        } else {
            Some(v.as_i64().ok_or("expected a 64-bit integer")?)
        }),
        ColKind::Bool => Cell::Bool(if null {
            None
        } else {
            Some(v.as_bool().ok_or("expected a boolean")?)
        }),
        ColKind::Uuid => Cell::Uuid(if null {
            None
        } else {
            Some(Uuid::parse_str(s()?).map_err(|_| "expected a UUID")?)
        }),
        ColKind::Time => Cell::Time(if null {
            None
        } else {
            let text = s()?;
            let t = chrono::DateTime::parse_from_rfc3339(text)
                .map(|t| DbTime::new(t.with_timezone(&chrono::Utc)))
                .map_err(|_| "expected a timestamp")?;
            if t.canonical() != text {
                return Err("timestamp not in canonical form".into());
            }
            Some(t)
        }),
        ColKind::Bytes => Cell::Bytes(if null {
            None
        } else {
            Some(b64().decode(s()?).map_err(|_| "expected base64")?)
        }),
        ColKind::Json => Cell::Json(if null { None } else { Some(Json(v.clone())) }),
    })
}

type Query<'q, DB> = sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>;

fn bind_cell<'q, DB: sqlx::Database>(q: Query<'q, DB>, c: Cell) -> Query<'q, DB>
where
    Option<String>: Encode<'q, DB> + Type<DB>,
    Option<i32>: Encode<'q, DB> + Type<DB>,
    Option<i64>: Encode<'q, DB> + Type<DB>,
    Option<bool>: Encode<'q, DB> + Type<DB>,
    Option<Uuid>: Encode<'q, DB> + Type<DB>,
    Option<DbTime>: Encode<'q, DB> + Type<DB>,
    Option<Vec<u8>>: Encode<'q, DB> + Type<DB>,
    Option<Json<Value>>: Encode<'q, DB> + Type<DB>,
{
    match c {
        Cell::Text(v) => q.bind(v),
        Cell::I32(v) => q.bind(v),
        Cell::I64(v) => q.bind(v),
        Cell::Bool(v) => q.bind(v),
        Cell::Uuid(v) => q.bind(v),
        Cell::Time(v) => q.bind(v),
        Cell::Bytes(v) => q.bind(v),
        Cell::Json(v) => q.bind(v),
    }
}

// ---------------------------------------------------------------------------------------
// Schema coverage

/// Compares the live schema (`(table, column, declared type)`) with the registry.
/// SQLite's rowid alias must be declared `INTEGER PRIMARY KEY` (`audit_events.seq`); it
/// holds 64-bit values, so it backs a column registered as [`ColKind::I64`] (declared
/// BIGINT elsewhere). PostgreSQL's types are lower case and never match here.
fn rowid_alias(kind: ColKind, declared: &str) -> bool {
    kind == ColKind::I64 && declared == "INTEGER"
}

fn check_coverage(
    live: &[(String, String, String)],
    type_of: fn(ColKind) -> &'static str,
) -> BResult<()> {
    let mut tables: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for (t, c, ty) in live {
        tables
            .entry(t.as_str())
            .or_default()
            .insert(c.as_str(), ty.as_str());
    }
    let mut problems = Vec::new();
    for (t, cols) in &tables {
        if NOT_BACKED_UP.iter().any(|(n, _)| n == t) {
            continue;
        }
        let Some(spec) = spec(t) else {
            problems.push(format!("table {t} is not registered"));
            continue;
        };
        for (c, ty) in cols {
            match spec.columns.iter().find(|(n, _)| n == c) {
                None => problems.push(format!("column {t}.{c} is not registered")),
                Some((_, k)) if !type_of(*k).eq_ignore_ascii_case(ty) && !rowid_alias(*k, ty) => {
                    problems.push(format!(
                        "column {t}.{c} is {ty} in the database but registered as {k:?}"
                    ))
                }
                Some(_) => {}
            }
        }
        for (c, _) in spec.columns {
            if !cols.contains_key(c) {
                problems.push(format!("registered column {t}.{c} is not in the database"));
            }
        }
    }
    for s in BACKUP_TABLES {
        if !tables.contains_key(s.name) {
            problems.push(format!(
                "registered table {} is not in the database",
                s.name
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(BackupError::Unregistered(problems.join("; ")))
    }
}

const SQLITE_COLUMNS: &str =
    "SELECT m.name, p.name, p.type FROM sqlite_master m, pragma_table_info(m.name) p \
     WHERE m.type = 'table' AND m.name NOT LIKE 'sqlite_%' ORDER BY m.name, p.cid";
const PG_COLUMNS: &str =
    "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns \
     WHERE table_schema = current_schema() ORDER BY table_name, ordinal_position";

fn select_sql(spec: &TableSpec, pg: bool) -> String {
    let cols: Vec<&str> = spec.columns.iter().map(|(c, _)| *c).collect();
    let order: Vec<String> = spec
        .order_by
        .iter()
        .map(|c| {
            let text = spec
                .columns
                .iter()
                .any(|(n, k)| n == c && *k == ColKind::Text);
            // byte order on both backends, so equal data gives equal files
            if pg && text {
                format!("{c} COLLATE \"C\"")
            } else {
                c.to_string()
            }
        })
        .collect();
    format!(
        "SELECT {} FROM {} ORDER BY {}",
        cols.join(", "),
        spec.name,
        order.join(", ")
    )
}

fn count_sql(spec: &TableSpec) -> String {
    match spec.seed_predicate {
        Some(p) => format!("SELECT COUNT(*) FROM {} WHERE NOT ({p})", spec.name),
        None => format!("SELECT COUNT(*) FROM {}", spec.name),
    }
}

// ---------------------------------------------------------------------------------------
// Backup

/// Runs `$body` with `$c` bound to the open transaction's connection, once per backend.
macro_rules! dump_tables {
    ($tx:ident, $pg:expr, $out:ident, $specs:expr) => {{
        let mut per_table = Vec::new();
        for spec in $specs {
            let sql = select_sql(spec, $pg);
            let mut rows = sqlx::query(&sql).fetch(&mut *$tx);
            let mut n = 0i64;
            while let Some(row) = rows.try_next().await? {
                let mut cells = Vec::with_capacity(spec.columns.len());
                for (i, (_, kind)) in spec.columns.iter().enumerate() {
                    cells.push(read_cell(&row, i, *kind)?);
                }
                $out.line(&RowLine {
                    table: spec.name.to_string(),
                    row: cells,
                })?;
                n += 1;
            }
            per_table.push((spec.name.to_string(), n));
        }
        per_table
    }};
}

impl Store {
    /// Writes a consistent snapshot of every registered table to `out` in the backup
    /// format. Needs no master key: it copies ciphertexts and wrapped keys as they are.
    pub async fn backup<W: Write + Send>(&self, out: W) -> BResult<BackupSummary> {
        let binary = self.binary_schema_version();
        let db = self.applied_schema_version().await?;
        if db != binary {
            return Err(BackupError::SchemaMismatch { db, binary });
        }
        let mut out = HashingWriter {
            inner: out,
            hash: Sha256::new(),
        };
        let header = |counts: &[i64], kcv: String, backend: &str| BackupHeader {
            format: FORMAT_NAME.into(),
            format_version: BACKUP_FORMAT_VERSION,
            keygate_version: env!("CARGO_PKG_VERSION").into(),
            schema_version: binary,
            source_backend: backend.into(),
            created_at: DbTime::now().canonical(),
            key_check_value: kcv,
            tables: BACKUP_TABLES
                .iter()
                .zip(counts)
                .map(|(s, n)| TableHeader {
                    name: s.name.into(),
                    columns: s.columns.iter().map(|(c, k)| (c.to_string(), *k)).collect(),
                    rows: *n,
                })
                .collect(),
            not_included: NOT_BACKED_UP.iter().map(|(n, _)| n.to_string()).collect(),
        };
        let kcv_sql = "SELECT value FROM keygate_meta WHERE key = $1";
        let counted = match &self.db {
            Db::Sqlite(pool) => {
                // One read transaction: under WAL its snapshot is fixed at the first read.
                let mut tx = pool.begin().await?;
                let live: Vec<(String, String, String)> =
                    sqlx::query_as(SQLITE_COLUMNS).fetch_all(&mut *tx).await?;
                check_coverage(&live, ColKind::sqlite_type)?;
                let mut counts = Vec::new();
                for s in BACKUP_TABLES {
                    let sql = format!("SELECT COUNT(*) FROM {}", s.name);
                    counts.push(
                        sqlx::query_scalar::<_, i64>(&sql)
                            .fetch_one(&mut *tx)
                            .await?,
                    );
                }
                let kcv: Option<String> = sqlx::query_scalar(kcv_sql)
                    .bind(META_KEY_CHECK)
                    .fetch_optional(&mut *tx)
                    .await?;
                out.line(&header(
                    &counts,
                    kcv.ok_or(BackupError::NoKeyCheck)?,
                    "sqlite",
                ))?;
                let per_table = dump_tables!(tx, false, out, BACKUP_TABLES);
                tx.rollback().await?;
                (counts, per_table)
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Must be the transaction's first statement.
                sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
                    .execute(&mut *tx)
                    .await?;
                let live: Vec<(String, String, String)> =
                    sqlx::query_as(PG_COLUMNS).fetch_all(&mut *tx).await?;
                check_coverage(&live, ColKind::pg_type)?;
                // Count as the login (no RLS), then read as the service identity through
                // its explicit policies; the same snapshot, so the numbers must agree.
                let mut totals = Vec::new();
                for s in BACKUP_TABLES {
                    let sql = format!("SELECT COUNT(*) FROM {}", s.name);
                    totals.push(
                        sqlx::query_scalar::<_, i64>(&sql)
                            .fetch_one(&mut *tx)
                            .await?,
                    );
                }
                set_pg_identity(&mut tx, Actor::service()).await?;
                let mut counts = Vec::new();
                for (s, total) in BACKUP_TABLES.iter().zip(&totals) {
                    let sql = format!("SELECT COUNT(*) FROM {}", s.name);
                    let visible: i64 = sqlx::query_scalar(&sql).fetch_one(&mut *tx).await?;
                    if visible != *total {
                        return Err(BackupError::HiddenRows {
                            table: s.name.into(),
                            visible,
                            total: *total,
                        });
                    }
                    counts.push(visible);
                }
                let kcv: Option<String> = sqlx::query_scalar(kcv_sql)
                    .bind(META_KEY_CHECK)
                    .fetch_optional(&mut *tx)
                    .await?;
                out.line(&header(
                    &counts,
                    kcv.ok_or(BackupError::NoKeyCheck)?,
                    "postgres",
                ))?;
                let per_table = dump_tables!(tx, true, out, BACKUP_TABLES);
                tx.rollback().await?;
                (counts, per_table)
            }
        };
        let (counts, per_table) = counted;
        for ((name, n), expected) in per_table.iter().zip(&counts) {
            if n != expected {
                return Err(BackupError::Corrupt(format!(
                    "table {name}: counted {expected} rows but read {n} in the same snapshot"
                )));
            }
        }
        let total: i64 = counts.iter().sum();
        let sha256 = hex::encode(out.hash.clone().finalize());
        let trailer = Trailer {
            trailer: FORMAT_NAME.into(),
            rows: total,
            sha256: sha256.clone(),
        };
        out.line(&trailer)?;
        out.inner.flush().map_err(|e| BackupError::Io {
            path: "backup output".into(),
            source: e,
        })?;
        Ok(BackupSummary {
            schema_version: binary,
            tables: per_table,
            total_rows: total,
            sha256,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Restore

/// A backup file whose checksum, trailer and header have been verified (nothing is
/// written to any database by opening it).
#[derive(Debug, Clone)]
pub struct BackupFile {
    path: PathBuf,
    header: BackupHeader,
    sha256: String,
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> BackupError + '_ {
    move |e| BackupError::Io {
        path: path.display().to_string(),
        source: e,
    }
}

/// Reads `path` line by line, hashing every line except the last (the trailer), which is
/// returned with the hash and the number of lines before it.
fn hash_lines(
    path: &Path,
    mut each: impl FnMut(usize, &[u8]) -> BResult<()>,
) -> BResult<(String, Vec<u8>, usize)> {
    let f = File::open(path).map_err(io_err(path))?;
    let mut r = BufReader::with_capacity(1 << 16, f);
    let mut hash = Sha256::new();
    let mut prev: Option<Vec<u8>> = None;
    let mut n = 0usize;
    loop {
        let mut line = Vec::new();
        let got = r.read_until(b'\n', &mut line).map_err(io_err(path))?;
        if got == 0 {
            break;
        }
        if line.last() != Some(&b'\n') {
            return Err(BackupError::Truncated);
        }
        if let Some(p) = prev.take() {
            hash.update(&p);
            each(n, &p)?;
            n += 1;
        }
        prev = Some(line);
    }
    let trailer = prev.ok_or(BackupError::Truncated)?;
    Ok((hex::encode(hash.finalize()), trailer, n))
}

impl BackupFile {
    /// Verifies the whole file (trailer, checksum, header, row lines in header order and
    /// count) without touching a database.
    pub fn open(path: &Path) -> BResult<BackupFile> {
        let (sha, trailer, lines) = hash_lines(path, |_, _| Ok(()))?;
        let trailer: Trailer = serde_json::from_slice(&trailer).map_err(|_| {
            // a cut inside the rows leaves a row line last
            if serde_json::from_slice::<RowLine>(&trailer).is_ok() {
                BackupError::Truncated
            } else {
                BackupError::Corrupt("the trailer line is not valid".into())
            }
        })?;
        if trailer.trailer != FORMAT_NAME {
            return Err(BackupError::Corrupt("not a keygate backup trailer".into()));
        }
        if trailer.sha256 != sha {
            return Err(BackupError::Corrupt(
                "SHA-256 checksum mismatch (the file was modified or damaged)".into(),
            ));
        }
        // Checksum good: now parse the header and check the rows' shape.
        let mut header: Option<BackupHeader> = None;
        let mut table_idx = 0usize;
        let mut in_table = 0i64;
        let mut total = 0i64;
        let mut key_checks = 0usize;
        hash_lines(path, |i, line| {
            if i == 0 {
                let h = parse_header(line)?;
                header = Some(h);
                return Ok(());
            }
            let h = header.as_ref().expect("first line parsed");
            let row: RowLine = serde_json::from_slice(line)
                .map_err(|e| BackupError::Corrupt(format!("line {}: {e}", i + 1)))?;
            while table_idx < h.tables.len() && h.tables[table_idx].name != row.table {
                if in_table != h.tables[table_idx].rows {
                    return Err(BackupError::Corrupt(format!(
                        "table {}: header says {} rows, file has {in_table}",
                        h.tables[table_idx].name, h.tables[table_idx].rows
                    )));
                }
                table_idx += 1;
                in_table = 0;
            }
            let Some(t) = h.tables.get(table_idx) else {
                return Err(BackupError::Corrupt(format!(
                    "line {}: unexpected table {}",
                    i + 1,
                    row.table
                )));
            };
            if row.row.len() != t.columns.len() {
                return Err(BackupError::Corrupt(format!(
                    "line {}: {} values for {} columns",
                    i + 1,
                    row.row.len(),
                    t.columns.len()
                )));
            }
            for (v, (c, k)) in row.row.iter().zip(&t.columns) {
                parse_cell(v, *k).map_err(|e| {
                    BackupError::Corrupt(format!("line {}: {}.{c}: {e}", i + 1, t.name))
                })?;
            }
            // The header's key-check value is what restore checks the master key against
            // before it writes: it must be the one the backed-up metadata records, or a
            // key that matches the header could restore data keys it cannot unwrap.
            if t.name == "keygate_meta"
                && row.row.first().and_then(|v| v.as_str()) == Some(crate::META_KEY_CHECK)
            {
                key_checks += 1;
                if row.row.get(1).and_then(|v| v.as_str()) != Some(h.key_check_value.as_str()) {
                    return Err(BackupError::Corrupt(
                        "the header's key-check value differs from the backed-up metadata".into(),
                    ));
                }
            }
            in_table += 1;
            total += 1;
            Ok(())
        })?;
        let header = header.ok_or(BackupError::Truncated)?;
        if key_checks != 1 {
            return Err(BackupError::Corrupt(
                "the backed-up metadata must hold exactly one master-key check value".into(),
            ));
        }
        let mut rest = header.tables.iter().skip(table_idx);
        if let Some(first) = rest.next() {
            if first.rows != in_table {
                return Err(BackupError::Corrupt(format!(
                    "table {}: header says {} rows, file has {in_table}",
                    first.name, first.rows
                )));
            }
        }
        if let Some(t) = rest.find(|t| t.rows != 0) {
            return Err(BackupError::Corrupt(format!(
                "table {}: header says {} rows, file has 0",
                t.name, t.rows
            )));
        }
        if total != trailer.rows || lines == 0 {
            return Err(BackupError::Corrupt(format!(
                "trailer says {} rows, file has {total}",
                trailer.rows
            )));
        }
        Ok(BackupFile {
            path: path.to_path_buf(),
            header,
            sha256: sha,
        })
    }

    pub fn header(&self) -> &BackupHeader {
        &self.header
    }

    pub fn sha256(&self) -> &str {
        &self.sha256
    }
}

fn parse_header(line: &[u8]) -> BResult<BackupHeader> {
    #[derive(Deserialize)]
    struct Probe {
        format: Option<String>,
        format_version: Option<u32>,
    }
    let probe: Probe = serde_json::from_slice(line).map_err(|_| {
        BackupError::Corrupt("the first line is not a keygate backup header".into())
    })?;
    if probe.format.as_deref() != Some(FORMAT_NAME) {
        return Err(BackupError::Corrupt(
            "the first line is not a keygate backup header".into(),
        ));
    }
    match probe.format_version {
        Some(BACKUP_FORMAT_VERSION) => {}
        Some(v) => return Err(BackupError::UnsupportedFormat(v)),
        None => return Err(BackupError::Corrupt("header has no format_version".into())),
    }
    let h: BackupHeader =
        serde_json::from_slice(line).map_err(|e| BackupError::Corrupt(format!("header: {e}")))?;
    let mut seen = BTreeSet::new();
    let mut last_idx = None;
    for t in &h.tables {
        let Some(spec_idx) = BACKUP_TABLES.iter().position(|s| s.name == t.name) else {
            return Err(BackupError::Corrupt(format!(
                "header names table {} which this keygate does not know",
                t.name
            )));
        };
        if !seen.insert(t.name.clone()) || last_idx.is_some_and(|l| l >= spec_idx) {
            return Err(BackupError::Corrupt("header tables out of order".into()));
        }
        last_idx = Some(spec_idx);
        let spec = &BACKUP_TABLES[spec_idx];
        for (c, k) in &t.columns {
            if !spec.columns.iter().any(|(n, kk)| n == c && kk == k) {
                return Err(BackupError::Corrupt(format!(
                    "header column {}.{c} ({k:?}) does not match this keygate's schema",
                    t.name
                )));
            }
        }
        if t.rows < 0 {
            return Err(BackupError::Corrupt("negative row count".into()));
        }
    }
    Ok(h)
}

/// Builds one multi-row INSERT (or, for a seeded table, one UPDATE per row) and binds it.
fn insert_sql(t: &TableHeader, rows: usize) -> String {
    let cols: Vec<&str> = t.columns.iter().map(|(c, _)| c.as_str()).collect();
    crate::multi_insert(
        &format!("INSERT INTO {} ({}) VALUES ", t.name, cols.join(", ")),
        cols.len(),
        rows,
    )
}

fn update_sql(t: &TableHeader, key: &str) -> String {
    let mut sets = Vec::new();
    let mut key_pos = 0;
    for (i, (c, _)) in t.columns.iter().enumerate() {
        if c == key {
            key_pos = i + 1;
        } else {
            sets.push(format!("{c} = ${}", i + 1));
        }
    }
    format!(
        "UPDATE {} SET {} WHERE {key} = ${key_pos}",
        t.name,
        sets.join(", ")
    )
}

/// Streams the row lines of a verified file, grouped by table, in chunks that fit one
/// statement; re-hashes the file and reports a mismatch at the end.
struct RowReader {
    reader: BufReader<File>,
    hash: Sha256,
    pending: Option<Vec<u8>>,
    path: PathBuf,
}

impl RowReader {
    fn new(path: &Path) -> BResult<RowReader> {
        let f = File::open(path).map_err(io_err(path))?;
        let mut reader = BufReader::with_capacity(1 << 16, f);
        let mut first = Vec::new();
        reader.read_until(b'\n', &mut first).map_err(io_err(path))?;
        let mut hash = Sha256::new();
        hash.update(&first);
        let mut r = RowReader {
            reader,
            hash,
            pending: None,
            path: path.to_path_buf(),
        };
        r.pending = r.next_raw()?;
        Ok(r)
    }

    fn next_raw(&mut self) -> BResult<Option<Vec<u8>>> {
        let mut line = Vec::new();
        let n = self
            .reader
            .read_until(b'\n', &mut line)
            .map_err(io_err(&self.path))?;
        Ok((n > 0).then_some(line))
    }

    /// The next row line, or `None` at the trailer (then `pending` holds the trailer).
    fn next_row(&mut self) -> BResult<Option<RowLine>> {
        let Some(cur) = self.pending.take() else {
            return Err(BackupError::Truncated);
        };
        let next = self.next_raw()?;
        if next.is_none() {
            self.pending = Some(cur);
            return Ok(None);
        }
        self.hash.update(&cur);
        self.pending = next;
        serde_json::from_slice(&cur).map_err(|e| BackupError::Corrupt(e.to_string()))
    }

    fn finish(self, expected: &str) -> BResult<()> {
        if hex::encode(self.hash.finalize()) != expected {
            return Err(BackupError::Corrupt(
                "the file changed while it was being restored".into(),
            ));
        }
        Ok(())
    }
}

/// Inserts every row of `file` using `$tx`; `$switch` runs once, after the login-only
/// tables and before the first other one.
macro_rules! write_rows {
    ($tx:ident, $file:expr, $switch:block) => {{
        let mut rows = RowReader::new(&$file.path)?;
        let mut per_table = Vec::new();
        let mut switched = false;
        for t in &$file.header.tables {
            let s = spec(&t.name).expect("header checked against the registry");
            if !s.login_write && !switched {
                $switch
                switched = true;
            }
            let chunk = (PARAMS_PER_STATEMENT / t.columns.len().max(1)).max(1);
            let mut done = 0i64;
            while done < t.rows {
                let take = (chunk as i64).min(t.rows - done) as usize;
                let mut batch = Vec::with_capacity(take);
                for _ in 0..take {
                    let r = rows
                        .next_row()?
                        .ok_or_else(|| BackupError::Corrupt("rows ended early".into()))?;
                    if r.table != t.name {
                        return Err(BackupError::Corrupt(format!(
                            "expected a {} row, found {}",
                            t.name, r.table
                        )));
                    }
                    let mut cells = Vec::with_capacity(t.columns.len());
                    for (v, (_, k)) in r.row.iter().zip(&t.columns) {
                        cells.push(parse_cell(v, *k).map_err(BackupError::Corrupt)?);
                    }
                    batch.push(cells);
                }
                if let Some(key) = s.seeded_key {
                    let sql = update_sql(t, key);
                    for cells in batch {
                        let mut q = sqlx::query(&sql);
                        for c in cells {
                            q = bind_cell(q, c);
                        }
                        let n = q.execute(&mut *$tx).await?.rows_affected();
                        if n != 1 {
                            return Err(BackupError::Corrupt(format!(
                                "table {}: the migration's seed row is missing",
                                t.name
                            )));
                        }
                    }
                } else {
                    let sql = insert_sql(t, batch.len());
                    let mut q = sqlx::query(&sql);
                    for cells in batch {
                        for c in cells {
                            q = bind_cell(q, c);
                        }
                    }
                    q.execute(&mut *$tx).await?;
                }
                done += take as i64;
            }
            per_table.push((t.name.clone(), t.rows));
        }
        if rows.next_row()?.is_some() {
            return Err(BackupError::Corrupt("more rows than the header lists".into()));
        }
        rows.finish(&$file.sha256)?;
        per_table
    }};
}

impl Store {
    /// Rows in registered tables that are not the migrations' own seed; a missing table
    /// counts as empty (the target may be older than the backup, or blank).
    async fn first_nonempty_table(&self) -> BResult<Option<(String, i64)>> {
        for s in BACKUP_TABLES {
            let sql = count_sql(s);
            let r: Result<i64, sqlx::Error> = match &self.db {
                Db::Sqlite(p) => sqlx::query_scalar(&sql).fetch_one(p).await,
                Db::Postgres(p) => sqlx::query_scalar(&sql).fetch_one(p).await,
            };
            match r {
                Ok(0) => {}
                Ok(n) => return Ok(Some((s.name.to_string(), n))),
                Err(sqlx::Error::Database(e))
                    if e.message().contains("no such table")
                        || e.message().contains("does not exist") => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }

    /// Restores a verified backup into this (empty) database: migrates it to the backup's
    /// schema version, writes every row in one transaction, then applies any newer
    /// migrations. The caller must have checked the master key against
    /// [`BackupHeader::key_check_value`] first.
    pub async fn restore(&self, file: &BackupFile) -> BResult<BackupSummary> {
        let h = &file.header;
        let binary = self.binary_schema_version();
        if h.schema_version > binary {
            return Err(BackupError::BackupSchemaTooNew {
                backup: h.schema_version,
                binary,
            });
        }
        if !self.knows_migration(h.schema_version) {
            return Err(BackupError::UnknownSchema(h.schema_version));
        }
        let target = self.applied_schema_version().await?;
        if target > h.schema_version {
            return Err(BackupError::TargetSchemaNewer {
                target,
                backup: h.schema_version,
            });
        }
        if let Some((table, rows)) = self.first_nonempty_table().await? {
            return Err(BackupError::NotEmpty { table, rows });
        }
        self.migrate_to(h.schema_version).await?;
        let per_table = match &self.db {
            Db::Sqlite(pool) => {
                let mut tx = pool.begin().await?;
                let per_table = write_rows!(tx, file, {});
                tx.commit().await?;
                per_table
            }
            Db::Postgres(pool) => {
                let mut tx = pool.begin().await?;
                // Everything after the login-only metadata is written as the service
                // identity, through its row-level-security policies.
                let per_table = write_rows!(tx, file, {
                    set_pg_identity(&mut tx, Actor::service()).await?;
                });
                // Serial/identity columns (none today) continue after the restored rows.
                sqlx::query("SELECT set_config('role', 'none', true)")
                    .execute(&mut *tx)
                    .await?;
                resync_pg_sequences(&mut tx).await?;
                tx.commit().await?;
                per_table
            }
        };
        self.migrate().await?;
        Ok(BackupSummary {
            schema_version: h.schema_version,
            total_rows: per_table.iter().map(|(_, n)| n).sum(),
            tables: per_table,
            sha256: file.sha256.clone(),
        })
    }
}

/// Moves every sequence behind a registered table's column (serial or identity) past the
/// largest restored value, so new rows do not collide with restored ones.
async fn resync_pg_sequences(tx: &mut sqlx::Transaction<'_, sqlx::Postgres>) -> BResult<()> {
    let serials: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, pg_get_serial_sequence(quote_ident(table_name), column_name)::text \
         FROM information_schema.columns WHERE table_schema = current_schema() \
         AND pg_get_serial_sequence(quote_ident(table_name), column_name) IS NOT NULL",
    )
    .fetch_all(&mut **tx)
    .await?;
    for (t, c, seq) in serials {
        if spec(&t).is_none() {
            continue;
        }
        let sql = format!(
            "SELECT setval($1, COALESCE((SELECT MAX({c}) FROM {t}), 1), (SELECT MAX({c}) FROM {t}) IS NOT NULL)"
        );
        sqlx::query(&sql).bind(seq).execute(&mut **tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_is_well_formed() {
        let mut names = BTreeSet::new();
        let mut login_phase = true;
        for t in BACKUP_TABLES {
            assert!(names.insert(t.name), "{} listed twice", t.name);
            assert!(
                !NOT_BACKED_UP.iter().any(|(n, _)| *n == t.name),
                "{} both backed up and excluded",
                t.name
            );
            if !t.login_write {
                login_phase = false;
            }
            assert!(
                !t.login_write || login_phase,
                "{}: login-written tables must come first",
                t.name
            );
            for o in t.order_by {
                assert!(t.columns.iter().any(|(c, _)| c == o), "{}.{o}", t.name);
            }
            if let Some(k) = t.seeded_key {
                assert!(t.columns.iter().any(|(c, _)| *c == k));
                assert!(t.seed_predicate.is_some());
            }
        }
    }

    #[test]
    fn cells_round_trip_through_the_file_form() {
        let cases = [
            (Value::from("x"), ColKind::Text),
            (Value::from(-5), ColKind::I32),
            (Value::from(i64::MAX), ColKind::I64),
            (Value::Bool(true), ColKind::Bool),
            (Value::from(Uuid::nil().to_string()), ColKind::Uuid),
            (Value::from("2026-01-02T03:04:05.000006Z"), ColKind::Time),
            (Value::from("AAEC/w=="), ColKind::Bytes),
            (serde_json::json!({"a": [1, "b"]}), ColKind::Json),
        ];
        for (v, k) in cases {
            assert!(parse_cell(&v, k).is_ok(), "{v} as {k:?}");
            assert!(parse_cell(&Value::Null, k).is_ok());
        }
        assert!(parse_cell(&Value::from(1i64 << 40), ColKind::I32).is_err());
        assert!(parse_cell(&Value::from("2026-01-02T03:04:05Z"), ColKind::Time).is_err());
        assert!(parse_cell(&Value::from("not base64!"), ColKind::Bytes).is_err());
        assert!(parse_cell(&Value::from("nope"), ColKind::Uuid).is_err());
    }

    #[test]
    fn coverage_names_what_is_missing() {
        let mut live: Vec<(String, String, String)> = BACKUP_TABLES
            .iter()
            .flat_map(|t| {
                t.columns.iter().map(|(c, k)| {
                    (
                        t.name.to_string(),
                        c.to_string(),
                        k.sqlite_type().to_string(),
                    )
                })
            })
            .collect();
        live.push(("vault_sessions".into(), "user_id".into(), "BLOB".into()));
        check_coverage(&live, ColKind::sqlite_type).unwrap();
        live.push(("made_up_table".into(), "id".into(), "BLOB".into()));
        live.push(("credentials".into(), "new_col".into(), "TEXT".into()));
        let e = check_coverage(&live, ColKind::sqlite_type)
            .unwrap_err()
            .to_string();
        assert!(e.contains("table made_up_table is not registered"), "{e}");
        assert!(
            e.contains("column credentials.new_col is not registered"),
            "{e}"
        );
    }

    #[test]
    fn update_sql_targets_the_seed_row() {
        let t = TableHeader {
            name: "audit_head".into(),
            columns: vec![
                ("id".into(), ColKind::I32),
                ("seq".into(), ColKind::I64),
                ("hash".into(), ColKind::Text),
            ],
            rows: 1,
        };
        assert_eq!(
            update_sql(&t, "id"),
            "UPDATE audit_head SET seq = $2, hash = $3 WHERE id = $1"
        );
    }
}
