//! Pools, migrations, and the per-transaction identity that drives row-level security.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, Postgres, SqlitePool, Transaction};
use uuid::Uuid;

use crate::{Result, StorageError};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub(crate) enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Which database a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Who a transaction acts for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActorRole {
    /// An end user: sees only their own rows.
    User,
    /// An admin user: own rows, plus admin-only tables (site keys, all audit events).
    Admin,
    /// The platform itself (service_role tokens, background jobs, operator CLI).
    Service,
}

impl ActorRole {
    pub fn as_str(self) -> &'static str {
        match self {
            ActorRole::User => "user",
            ActorRole::Admin => "admin",
            ActorRole::Service => "service",
        }
    }
}

/// The identity a transaction runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user_id: Option<Uuid>,
    pub role: ActorRole,
}

impl Actor {
    pub fn user(user_id: Uuid) -> Self {
        Actor {
            user_id: Some(user_id),
            role: ActorRole::User,
        }
    }
    pub fn admin(user_id: Uuid) -> Self {
        Actor {
            user_id: Some(user_id),
            role: ActorRole::Admin,
        }
    }
    pub fn service() -> Self {
        Actor {
            user_id: None,
            role: ActorRole::Service,
        }
    }

    /// Whether this actor may read `owner`'s own rows, as the owner policies of
    /// row-level security say (the service role, or the owner). For the caches in front
    /// of the database: a cached row of another user is not served to this actor, whose
    /// read the database would have refused.
    pub fn may_act_for(&self, owner: Uuid) -> bool {
        self.role == ActorRole::Service || self.user_id == Some(owner)
    }
}

/// Switches to `keygate_app` and sets the caller's identity for the rest of the
/// transaction, in one round trip (`set_config('role', ..)` is `SET LOCAL ROLE`).
pub(crate) async fn set_pg_identity(
    tx: &mut Transaction<'_, Postgres>,
    actor: Actor,
) -> Result<()> {
    let uid = actor.user_id.map(|u| u.to_string()).unwrap_or_default();
    let conn: &mut sqlx::PgConnection = tx;
    sqlx::query::<Postgres>(
        "SELECT set_config('role', 'keygate_app', true), set_config('keygate.user_id', $1, true), set_config('keygate.role', $2, true)",
    )
    .bind(uid)
    .bind(actor.role.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// `BEGIN` plus what [`set_pg_identity`] sets, as one simple query: a round trip less per
/// transaction. Inlining is safe: the values are typed (a UUID's hex-and-dash text, a fixed
/// role name), never caller text.
pub(crate) fn pg_begin_sql(actor: Actor) -> String {
    format!("BEGIN; {}", pg_identity_sql(actor, true))
}

/// A pooled PostgreSQL connection on its way into a transaction. sqlx (0.8.6) counts the
/// transaction only once its `BEGIN` has answered and left it open, and rolls back only a
/// counted one: a `BEGIN` cut off on the way (the request's future dropped when its client
/// went away) or failing half-way (`BEGIN; <statement that fails>`) went back to the pool
/// inside a transaction no one would end, holding the last caller's identity, or aborted,
/// failing every later statement on it (upstream: launchbadge/sqlx#4393, #4409). Until
/// [`PgBegin::begin`] has answered, dropping this closes the connection instead.
pub(crate) struct PgBegin {
    conn: sqlx::pool::PoolConnection<Postgres>,
    begun: bool,
}

impl PgBegin {
    pub(crate) async fn acquire(pool: &PgPool) -> std::result::Result<PgBegin, sqlx::Error> {
        Ok(PgBegin {
            conn: pool.acquire().await?,
            begun: false,
        })
    }

    /// `BEGIN` with `sql` ([`pg_begin_sql`]); the transaction borrows the connection.
    pub(crate) async fn begin(
        &mut self,
        sql: String,
    ) -> std::result::Result<Transaction<'_, Postgres>, sqlx::Error> {
        let PgBegin { conn, begun } = self;
        let tx = sqlx::Connection::begin_with(&mut **conn, sql).await?;
        *begun = true;
        Ok(tx)
    }
}

impl Drop for PgBegin {
    fn drop(&mut self) {
        if !self.begun {
            self.conn.close_on_drop();
        }
    }
}

/// The `SELECT set_config(…)` of [`pg_begin_sql`]; `local` = for the transaction only,
/// else for the session (a connection that always acts as one actor).
pub(crate) fn pg_identity_sql(actor: Actor, local: bool) -> String {
    let uid = actor.user_id.map(|u| u.to_string()).unwrap_or_default();
    format!(
        "SELECT set_config('role', 'keygate_app', {local}), set_config('keygate.user_id', '{uid}', {local}), set_config('keygate.role', '{}', {local})",
        actor.role.as_str()
    )
}

/// Makes every transaction of a PostgreSQL session READ COMMITTED unless it says otherwise,
/// whatever the server's or the database's `default_transaction_isolation`. The queries
/// are written for it: a row that another instance changed or deleted while a statement
/// waited for its lock is looked at afresh (the spend check, the reminder claim, the group
/// commit's late call rows), where a snapshot isolation would end the transaction with a
/// serialization error instead. A transaction that needs a snapshot (a backup) sets its own.
pub(crate) const PG_READ_COMMITTED: &str =
    "SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL READ COMMITTED";

/// The storage handle: cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pub(crate) db: Db,
    /// Bumped after every committed transaction of this process except the gateway's hot
    /// path (see [`Store::write_epoch`]).
    pub(crate) epoch: std::sync::Arc<std::sync::atomic::AtomicU64>,
    /// The group commit's own connection and thread ([`Store::record_batch`]:
    /// `sqlite_writer.rs` for a SQLite file, `pg_batch.rs`; none for in-memory SQLite).
    pub(crate) writer: Option<std::sync::Arc<crate::batch_writer::BatchWriter>>,
    /// Anomaly history carried between assessments (`anomaly.rs`).
    pub(crate) history: std::sync::Arc<crate::anomaly::HistoryCache>,
}

/// WAL frames after which a committing SQLite connection checkpoints inline (SQLite's
/// default is 1,000). The group commit's checkpoints run on a thread of their own and keep
/// the WAL far below this (`sqlite_writer.rs`, `Checkpointer`): an inline checkpoint
/// blocks the writer, and every call waiting on the group commit waits with it. This is
/// the fallback that bounds the WAL (about 160 MB) should that thread be missing.
pub(crate) const SQLITE_WAL_AUTOCHECKPOINT: u32 = 40_000;

/// How long a SQLite connection waits for a lock another one holds before it fails: the
/// pool's `busy_timeout`, and the group-commit writer's own busy handler (`sqlite_writer.rs`).
pub(crate) const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl Store {
    /// Connects to `url` (`sqlite:` path or `postgres://`). SQLite files are created if
    /// missing, in WAL mode.
    pub async fn connect(url: &str) -> Result<Store> {
        if url.starts_with("sqlite:") {
            let opts = SqliteConnectOptions::from_str(url)?
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .synchronous(SqliteSynchronous::Normal)
                .busy_timeout(SQLITE_BUSY_TIMEOUT)
                .foreign_keys(true)
                // a deleted row's bytes are zeroed where that costs no extra I/O: a
                // shredded key's wrapped data key, an ended unlock session's, do not stay
                // in the file's free space
                .pragma("secure_delete", "fast")
                .pragma("wal_autocheckpoint", SQLITE_WAL_AUTOCHECKPOINT.to_string());
            let file = opts.get_filename().to_path_buf();
            let pool = SqlitePoolOptions::new()
                .max_connections(8)
                .connect_with(opts)
                .await?;
            // an in-memory database exists only inside the pool's connection
            let in_memory = file.as_os_str().is_empty()
                || file.as_os_str() == ":memory:"
                || url.contains("mode=memory");
            let writer = if in_memory {
                None
            } else {
                Some(std::sync::Arc::new(
                    crate::sqlite_writer::start(file)
                        .map_err(|e| StorageError::Writer(e.to_string()))?,
                ))
            };
            Ok(Store {
                db: Db::Sqlite(pool),
                epoch: Default::default(),
                writer,
                history: Default::default(),
            })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let opts = PgConnectOptions::from_str(url)?;
            let pool = PgPoolOptions::new()
                .max_connections(16)
                .acquire_timeout(Duration::from_secs(10))
                .after_connect(|conn, _| {
                    Box::pin(async move {
                        sqlx::Executor::execute(conn, PG_READ_COMMITTED).await?;
                        Ok(())
                    })
                })
                .connect_with(opts.clone())
                .await?;
            let writer =
                crate::pg_batch::start(opts).map_err(|e| StorageError::Writer(e.to_string()))?;
            Ok(Store {
                db: Db::Postgres(pool),
                epoch: Default::default(),
                writer: Some(std::sync::Arc::new(writer)),
                history: Default::default(),
            })
        } else {
            Err(StorageError::UnsupportedUrl(
                url.split(':').next().unwrap_or_default().to_string(),
            ))
        }
    }

    /// A counter that moves after every transaction this process commits through the
    /// store, except the gateway's own hot-path bookkeeping (call rows, audit events,
    /// counters). A cache of database state that notes the epoch *before* it reads and
    /// compares it on use sees every later write of this process: a mismatch means
    /// "reload". Writes by other processes are not seen; such caches need a short TTL.
    pub fn write_epoch(&self) -> u64 {
        self.epoch.load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn bump_epoch(&self) {
        self.epoch.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    pub fn backend(&self) -> Backend {
        match self.db {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }

    fn migrator(&self) -> &'static sqlx::migrate::Migrator {
        match self.db {
            Db::Sqlite(_) => &SQLITE_MIGRATIONS,
            Db::Postgres(_) => &PG_MIGRATIONS,
        }
    }

    /// Latest schema version this binary knows.
    pub fn binary_schema_version(&self) -> i64 {
        self.migrator().iter().map(|m| m.version).max().unwrap_or(0)
    }

    /// Highest applied schema version, 0 for an empty database.
    pub async fn applied_schema_version(&self) -> Result<i64> {
        let sql = "SELECT MAX(version) FROM _sqlx_migrations WHERE success";
        let r: std::result::Result<Option<i64>, sqlx::Error> = match &self.db {
            Db::Sqlite(p) => {
                sqlx::query_scalar::<sqlx::Sqlite, _>(sql)
                    .fetch_one(p)
                    .await
            }
            Db::Postgres(p) => {
                sqlx::query_scalar::<sqlx::Postgres, _>(sql)
                    .fetch_one(p)
                    .await
            }
        };
        match r {
            Ok(v) => Ok(v.unwrap_or(0)),
            // no migrations table yet: an empty database
            Err(sqlx::Error::Database(e))
                if e.message().contains("no such table")
                    || e.message().contains("does not exist") =>
            {
                Ok(0)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Refuses a database whose schema is newer than this binary, then applies pending
    /// migrations (each in its own transaction).
    pub async fn migrate(&self) -> Result<()> {
        let db = self.applied_schema_version().await?;
        let binary = self.binary_schema_version();
        if db > binary {
            return Err(StorageError::SchemaTooNew { db, binary });
        }
        match &self.db {
            Db::Sqlite(p) => SQLITE_MIGRATIONS.run(p).await?,
            Db::Postgres(p) => {
                // Instances starting together must not race on migrations.
                PG_MIGRATIONS.run(p).await?;
                check_second_wall(p).await?
            }
        }
        Ok(())
    }

    /// Applies this binary's migrations to a new, empty database only. A database already
    /// at an older schema is left alone ([`StorageError::SchemaBehind`]): a command-line
    /// tool run with a newly installed binary must not upgrade the schema under a server
    /// still running the older one. Only `serve` and `migrate` upgrade ([`Store::migrate`]).
    pub async fn migrate_if_new(&self) -> Result<()> {
        let db = self.applied_schema_version().await?;
        let binary = self.binary_schema_version();
        if db > 0 && db < binary {
            return Err(StorageError::SchemaBehind { db, binary });
        }
        self.migrate().await
    }

    /// True when this binary has a migration with exactly this version.
    pub fn knows_migration(&self, version: i64) -> bool {
        self.migrator().iter().any(|m| m.version == version)
    }

    /// Applies this binary's migrations up to and including `version` only (restore
    /// writes a backup at the schema it was taken at, then migrates the rest).
    pub async fn migrate_to(&self, version: i64) -> Result<()> {
        let db = self.applied_schema_version().await?;
        if db > version {
            return Err(StorageError::SchemaTooNew {
                db,
                binary: version,
            });
        }
        let subset = sqlx::migrate::Migrator::new(MigrationsUpTo(
            self.migrator()
                .iter()
                .filter(|m| m.version <= version)
                .cloned()
                .collect(),
        ))
        .await?;
        match &self.db {
            Db::Sqlite(p) => subset.run(p).await?,
            Db::Postgres(p) => subset.run(p).await?,
        }
        Ok(())
    }

    /// True when the database answers and every migration this binary knows is applied.
    pub async fn is_ready(&self) -> bool {
        matches!(self.applied_schema_version().await, Ok(v) if v == self.binary_schema_version())
    }

    /// Runs a raw read-only query under `actor` and returns how many rows it saw; used by
    /// the row-level-security test to show that RLS (not only WHERE clauses) isolates users.
    pub async fn count_rows_as(&self, actor: Actor, table: RawTable) -> Result<i64> {
        let sql = format!("SELECT COUNT(*) FROM {}", table.name());
        let n: i64 = in_tx!(self, actor, |tx| {
            sqlx::query_scalar::<DB, _>(&sql)
                .fetch_one(&mut *tx)
                .await?
        });
        Ok(n)
    }

    pub async fn close(&self) {
        if let Some(w) = &self.writer {
            w.close().await;
        }
        match &self.db {
            Db::Sqlite(p) => p.close().await,
            Db::Postgres(p) => p.close().await,
        }
    }
}

/// Row-level security is keygate's second wall on PostgreSQL, and it holds only while the
/// role requests run as (`keygate_app`) is neither a superuser nor exempt from it, and
/// every table holding users' rows has it enabled. The role is the cluster's, and the
/// migration keeps a `keygate_app` that existed before; an operator can disable a table's
/// policies. Either is refused at start rather than served without the wall.
async fn check_second_wall(pool: &PgPool) -> Result<()> {
    let (superuser, bypass): (bool, bool) =
        sqlx::query_as("SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'keygate_app'")
            .fetch_one(pool)
            .await?;
    if superuser || bypass {
        return Err(StorageError::SecondWall(
            "the role keygate_app is a superuser or has BYPASSRLS, so row-level security does not apply to it: ALTER ROLE keygate_app NOSUPERUSER NOBYPASSRLS".into(),
        ));
    }
    let open: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = current_schema() AND c.relkind = 'r' AND NOT c.relrowsecurity \
         AND c.relname NOT IN ('_sqlx_migrations', 'keygate_meta', 'audit_head') ORDER BY 1",
    )
    .fetch_all(pool)
    .await?;
    if !open.is_empty() {
        return Err(StorageError::SecondWall(format!(
            "row-level security is disabled on {}: ALTER TABLE … ENABLE ROW LEVEL SECURITY",
            open.join(", ")
        )));
    }
    Ok(())
}

/// A fixed list of embedded migrations as a [`sqlx::migrate::MigrationSource`].
#[derive(Debug)]
struct MigrationsUpTo(Vec<sqlx::migrate::Migration>);

impl<'s> sqlx::migrate::MigrationSource<'s> for MigrationsUpTo {
    fn resolve(
        self,
    ) -> futures::future::BoxFuture<
        's,
        std::result::Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>,
    > {
        Box::pin(async move { Ok(self.0) })
    }
}

/// Tables [`Store::count_rows_as`] may count (a closed list: no SQL from outside).
#[derive(Debug, Clone, Copy)]
pub enum RawTable {
    Credentials,
    CredentialSecrets,
    Connections,
    UserKeys,
    AuditEvents,
    ApiCalls,
}

impl RawTable {
    fn name(self) -> &'static str {
        match self {
            RawTable::Credentials => "credentials",
            RawTable::CredentialSecrets => "credential_secrets",
            RawTable::Connections => "connections",
            RawTable::UserKeys => "user_keys",
            RawTable::AuditEvents => "audit_events",
            RawTable::ApiCalls => "api_calls",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every pooled SQLite connection zeroes deleted cells (`secure_delete` = 2, `fast`),
    /// and reads back a time stored with a year past 9999 by an earlier release.
    #[tokio::test]
    async fn sqlite_connections_zero_deleted_cells_and_read_far_years() {
        let dir = std::env::temp_dir().join(format!("keygate-db-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.join("t.db").display()))
            .await
            .unwrap();
        let Db::Sqlite(pool) = &store.db else {
            panic!("not SQLite")
        };
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut c = pool.acquire().await.unwrap();
            let mode: i64 = sqlx::query_scalar("PRAGMA secure_delete")
                .fetch_one(&mut *c)
                .await
                .unwrap();
            assert_eq!(mode, 2);
            held.push(c);
        }
        let far: crate::DbTime = sqlx::query_scalar("SELECT '+10000-01-01T00:00:00.000000Z'")
            .fetch_one(&mut *held[0])
            .await
            .unwrap();
        assert_eq!(far.0.format("%Y").to_string(), "+10000");
        assert_eq!(far.canonical(), "9999-12-31T23:59:59.999999Z");
        drop(held);
        pool.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A `BEGIN` that fails half-way, or is cut off before it answers, does not put its
    /// connection back in the pool inside a transaction (sqlx would not end it).
    #[tokio::test]
    async fn a_begin_that_did_not_answer_does_not_go_back_to_the_pool() {
        let Some(admin) = crate::scratch::test_admin_url() else {
            return;
        };
        // one connection: whatever the test leaves in the pool, the next query gets
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&admin)
            .await
            .unwrap();
        // Outside a transaction a statement's `now()` is its own start; inside one opened
        // earlier, the transaction's. An aborted one fails the statement.
        let in_old_transaction = |pool: PgPool| async move {
            sqlx::query_scalar::<_, bool>(
                "SELECT now() < statement_timestamp() - interval '50 milliseconds'",
            )
            .fetch_one(&pool)
            .await
        };
        {
            let mut c = PgBegin::acquire(&pool).await.unwrap();
            assert!(c.begin("BEGIN; SELECT 1/0".into()).await.is_err());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !in_old_transaction(pool.clone())
                .await
                .expect("not an aborted transaction"),
            "failed half-way"
        );
        {
            let mut c = PgBegin::acquire(&pool).await.unwrap();
            let cut = tokio::time::timeout(
                Duration::from_millis(50),
                c.begin("BEGIN; SELECT pg_sleep(0.3)".into()),
            )
            .await;
            assert!(cut.is_err(), "the BEGIN was cut off");
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(
            !in_old_transaction(pool.clone()).await.unwrap(),
            "cut off before it answered"
        );
        // a BEGIN that answered is pooled as before: the same server process serves the
        // next query, outside any transaction
        let pid = || async {
            sqlx::query_scalar::<_, i32>("SELECT pg_backend_pid()")
                .fetch_one(&pool)
                .await
                .unwrap()
        };
        let before = pid().await;
        {
            let mut c = PgBegin::acquire(&pool).await.unwrap();
            let tx = c.begin("BEGIN".into()).await.unwrap();
            tx.commit().await.unwrap();
        }
        assert_eq!(pid().await, before, "the connection was pooled");
        assert!(!in_old_transaction(pool.clone()).await.unwrap());
        pool.close().await;
    }

    /// Upgrades are forward-only and transactional, and both backends move in step.
    #[test]
    fn migrations_are_forward_only_transactional_and_parallel() {
        let versions =
            |m: &sqlx::migrate::Migrator| -> Vec<i64> { m.iter().map(|x| x.version).collect() };
        assert_eq!(versions(&SQLITE_MIGRATIONS), versions(&PG_MIGRATIONS));
        assert!(!versions(&SQLITE_MIGRATIONS).is_empty());
        for m in SQLITE_MIGRATIONS.iter().chain(PG_MIGRATIONS.iter()) {
            assert!(
                m.migration_type.is_up_migration(),
                "{} {}: no down migrations",
                m.version,
                m.description
            );
            assert!(
                !m.no_tx,
                "{} {}: every migration runs in a transaction",
                m.version, m.description
            );
        }
    }

    /// A database whose default is REPEATABLE READ still gets READ COMMITTED transactions
    /// from the store's pool, on every connection it opens.
    #[tokio::test]
    async fn postgres_transactions_are_read_committed_whatever_the_default() {
        use sqlx::Connection;
        let Some(admin) = crate::scratch::test_admin_url() else {
            return;
        };
        let db = crate::scratch::create(&admin, &crate::scratch::test_prefix())
            .await
            .unwrap();
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        sqlx::query(
            "DO $$ BEGIN EXECUTE format('ALTER DATABASE %I SET default_transaction_isolation \
             = %L', current_database(), 'repeatable read'); END $$",
        )
        .execute(&mut c)
        .await
        .unwrap();
        c.close().await.unwrap();
        // the setting applies to sessions opened from now on
        let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
        let plain: String = sqlx::query_scalar("SHOW transaction_isolation")
            .fetch_one(&mut c)
            .await
            .unwrap();
        assert_eq!(plain, "repeatable read", "the database default took");
        c.close().await.unwrap();

        let store = Store::connect(&db.url).await.unwrap();
        let Db::Postgres(pool) = &store.db else {
            unreachable!()
        };
        // several connections at once, so more than one is opened
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut conn = pool.acquire().await.unwrap();
            let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
            let level: String = sqlx::query_scalar("SHOW transaction_isolation")
                .fetch_one(&mut *tx)
                .await
                .unwrap();
            assert_eq!(level, "read committed");
            tx.rollback().await.unwrap();
            held.push(conn);
        }
        drop(held);
        store.close().await;
        db.drop().await;
    }
}
