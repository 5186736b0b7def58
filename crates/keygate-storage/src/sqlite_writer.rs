//! The SQLite side of the gateway's group commit ([`Store::record_batch`]): one
//! connection on a thread of its own that runs a whole batch (call rows, usage counters,
//! chained audit events) as ONE job.
//!
//! Why not sqlx here: sqlx runs every SQLite statement on its connection's worker thread
//! and hands the result back to the async task, so a batch of eight statements cost
//! sixteen thread wake-ups. Under load each one waits for a free core, and a one-row
//! commit took ~750 µs, most of it waiting (measured). Here a batch is one hand-over each
//! way. The connection also keeps its page cache warm: nothing else writes through it.
//!
//! The rows are encoded exactly as sqlx encodes them (UUIDs as 16-byte blobs, times as
//! canonical RFC 3339 text, booleans as integers, JSON as text), so every sqlx read of
//! these tables sees the same values whichever path wrote them.
//!
//! [`Store::record_batch`]: crate::Store::record_batch

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::ffi;
use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{params_from_iter, Connection, OpenFlags, TransactionBehavior};
use uuid::Uuid;

use crate::batch_writer::{BatchWriter, Outcome, Sink};
use crate::{audit, ApiCallRecord, AuditEvent, DbTime};

/// Starts the writer thread for the database file `path` (opened on first use).
pub(crate) fn start(path: PathBuf) -> std::io::Result<BatchWriter> {
    BatchWriter::start(
        "keygate-sqlite-writer",
        "SQLite",
        SqliteSink {
            path,
            checkpointer: None,
        },
    )
}

struct SqliteSink {
    path: PathBuf,
    /// Runs while the writer's connection is open.
    checkpointer: Option<Checkpointer>,
}

/// How often the checkpointer copies the WAL's new pages into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(100);
/// WAL frames after which the checkpointer also restarts the WAL.
const RESTART_AFTER_FRAMES: i64 = 10_000;

/// The WAL checkpoints, off the writer's thread (issue 7).
///
/// A checkpoint copies the WAL's pages into the database file and ends with `fsync`s. Run
/// inline by the committing connection (SQLite's autocheckpoint, every 1,000 frames), it
/// blocked the writer for its whole length, and every call waiting on the group commit
/// waited with it: the CPU sat idle. Here a thread of its own runs a PASSIVE checkpoint
/// every [`CHECKPOINT_EVERY`]; it takes no lock the writer needs, so its copying and its
/// `fsync`s overlap the batches. A PASSIVE checkpoint cannot restart the WAL while the
/// writer keeps appending (the writer never begins a transaction with every frame copied,
/// so the WAL would grow without end), so once the WAL holds [`RESTART_AFTER_FRAMES`]
/// frames the thread follows the PASSIVE round with a RESTART checkpoint. That one holds
/// the write lock while it copies and syncs the frames appended since the PASSIVE round,
/// and then the WAL starts over. What it has to sync is kept small (see [`checkpoint`]):
/// about 2 ms under load, once a second or so, where it was 13–22 ms. The connections'
/// autocheckpoint ([`crate::db::SQLITE_WAL_AUTOCHECKPOINT`], far above the restart point)
/// stays as the fallback should this thread be missing.
struct Checkpointer {
    stop: std::sync::mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
    /// RESTARTs that completed (the WAL starts over at the next write); read by the tests.
    #[cfg_attr(not(test), allow(dead_code))]
    restarts: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Checkpointer {
    fn start(path: PathBuf, every: Duration, restart_after: i64) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let restarts = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let restarted = restarts.clone();
        let thread = std::thread::Builder::new()
            .name("keygate-sqlite-checkpoint".into())
            .spawn(move || {
                // a RESTART that cannot get the write lock (or wait out the readers) soon
                // gives up and is tried again next round, rather than stall the writer
                let c = match open(&path).and_then(|c| {
                    c.busy_timeout(Duration::from_millis(20))?;
                    Ok(c)
                }) {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::warn!(error = %e, "SQLite checkpointer could not open the database; the writer checkpoints inline");
                        return;
                    }
                };
                let mut rounds = Rounds::new(restart_after);
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(every)
                {
                    let round = checkpoint(&c, rounds.restart_after, rounds.last);
                    if rounds.note(&round) {
                        restarted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })?;
        Ok(Checkpointer {
            stop,
            thread,
            restarts,
        })
    }

    /// RESTARTs completed so far.
    #[cfg(test)]
    fn restarts(&self) -> u64 {
        self.restarts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stops the thread and waits for it, so its connection is closed on return.
    fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.thread.join();
    }
}

/// How long a batch waits for a lock another connection holds (a RESTART checkpoint, a
/// write through the pool) before it fails.
const LOCK_WAIT: Duration = crate::db::SQLITE_BUSY_TIMEOUT;
/// The step of that wait. SQLite's own busy handler sleeps 1, 2, 5, 10, 15, 20 ms…, so a
/// lock held for 22 ms (a RESTART's two `fsync`s) kept the writer, and every call waiting
/// on the group commit, asleep for 35 ms (measured with `perf trace`, issue 7).
const LOCK_POLL: Duration = Duration::from_micros(250);

thread_local! {
    /// When the current wait for a lock began (the busy handler's first call for it).
    static WAITING_SINCE: std::cell::Cell<Option<std::time::Instant>> =
        const { std::cell::Cell::new(None) };
}

/// The writer's busy handler: polls every [`LOCK_POLL`] until it has waited [`LOCK_WAIT`].
/// The wait is measured, not counted in polls: on a loaded host each sleep overshoots.
fn wait_for_lock(tries: i32) -> bool {
    let now = std::time::Instant::now();
    let since = WAITING_SINCE.with(|w| {
        if tries == 0 {
            w.set(Some(now));
        }
        w.get().unwrap_or(now)
    });
    if !keep_waiting(now - since) {
        return false;
    }
    std::thread::sleep(LOCK_POLL);
    true
}

/// Whether a lock still busy after `waited` is worth another poll.
fn keep_waiting(waited: Duration) -> bool {
    waited < LOCK_WAIT
}

/// A warning once the WAL holds this many times the restart point: RESTARTs keep failing.
const STUCK_AFTER: i64 = 4;

/// What one checkpoint round found and did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Round {
    /// Frames in the WAL after the PASSIVE step.
    log: i64,
    /// Of those, frames copied into the database file.
    copied: i64,
    /// A RESTART ran and completed: the WAL starts over at the next write.
    restarted: bool,
}

/// Why a checkpoint round failed.
#[derive(Debug)]
enum RoundError {
    /// A checkpoint statement failed (say, a full disk); the next round tries again.
    Checkpoint(rusqlite::Error),
    /// An `fsync` failed. The kernel may have dropped the pages it could not write, and a
    /// later sync can succeed without them, so no RESTART may follow: it would start the
    /// WAL over while its frames may be all that holds those pages.
    Sync(rusqlite::Error),
}

impl std::fmt::Display for RoundError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RoundError::Checkpoint(e) => write!(f, "checkpoint: {e}"),
            RoundError::Sync(e) => write!(f, "fsync: {e}"),
        }
    }
}

/// The checkpointer's memory between rounds, and its log lines: one warning when rounds
/// start failing (say, a full disk), not one every round, and one line when they work
/// again; one warning when the WAL keeps growing because no RESTART gets through.
struct Rounds {
    /// The RESTART point; `i64::MAX` (PASSIVE only) after a failed `fsync`.
    restart_after: i64,
    /// The last round, if it worked.
    last: Option<Round>,
    failing: bool,
    stuck: bool,
}

impl Rounds {
    fn new(restart_after: i64) -> Rounds {
        Rounds {
            restart_after,
            last: None,
            failing: false,
            stuck: false,
        }
    }

    /// Takes in a round's outcome; `true` when it completed a RESTART.
    fn note(&mut self, round: &Result<Round, RoundError>) -> bool {
        let round = match round {
            Ok(round) => *round,
            Err(RoundError::Sync(e)) => {
                self.last = None;
                if self.restart_after != i64::MAX {
                    self.restart_after = i64::MAX;
                    tracing::error!(error = %e, "an fsync failed during a SQLite checkpoint: no more WAL restarts from this checkpointer; check the disk");
                }
                return false;
            }
            Err(e) => {
                self.last = None;
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(error = %e, "SQLite checkpoint failed; retrying every round");
                }
                return false;
            }
        };
        self.last = Some(round);
        if self.failing {
            self.failing = false;
            tracing::info!("SQLite checkpoints work again");
        }
        if round.restarted || round.log < self.restart_after {
            if self.stuck {
                self.stuck = false;
                tracing::info!("the SQLite WAL restarts again");
            }
        } else if round.log >= STUCK_AFTER.saturating_mul(self.restart_after) && !self.stuck {
            self.stuck = true;
            tracing::warn!(
                frames = round.log,
                "the SQLite WAL keeps growing: no RESTART checkpoint gets the database to itself (a long-running read?)"
            );
        }
        round.restarted
    }
}

/// One round: PASSIVE, then RESTART once the WAL holds `restart_after` frames. A RESTART
/// that finds the lock or a reader busy past the connection's timeout is tried again next
/// round. `last` is the previous round, if it worked.
///
/// `fsync` here costs in proportion to the data it has to write (measured on this disk:
/// 0.14 ms for 4 KB, 0.8 ms for 400 KB, 7 ms for 4 MB). SQLite syncs the database file
/// only after a round that copied every frame, which under a writer that never pauses is
/// the RESTART: its `fsync`, made while it holds the write lock, used to write out every
/// page the PASSIVE rounds had copied since the last one (13–22 ms, measured with `perf
/// trace`). So each round that copied anything syncs the database file, and before a
/// RESTART the WAL too, with no lock held: the RESTART's own syncs find only the last
/// moment's pages left to write. These syncs add durability and change no ordering SQLite
/// relies on.
fn checkpoint(
    c: &Connection,
    restart_after: i64,
    last: Option<Round>,
) -> Result<Round, RoundError> {
    let (log, copied): (i64, i64) = c
        .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((r.get(1)?, r.get(2)?))
        })
        .map_err(RoundError::Checkpoint)?;
    let mut round = Round {
        log,
        copied,
        restarted: false,
    };
    // the same counts as last round: nothing was copied, there is nothing to sync
    if last.is_none_or(|l| (l.log, l.copied) != (log, copied)) {
        sync(c, ffi::SQLITE_FCNTL_FILE_POINTER).map_err(RoundError::Sync)?;
    }
    if log >= restart_after {
        sync(c, ffi::SQLITE_FCNTL_JOURNAL_POINTER).map_err(RoundError::Sync)?;
        let busy: i64 = c
            .query_row("PRAGMA wal_checkpoint(RESTART)", [], |r| r.get(0))
            .map_err(RoundError::Checkpoint)?;
        round.restarted = busy == 0;
    }
    Ok(round)
}

/// Syncs one of the connection's files: the database file
/// (`SQLITE_FCNTL_FILE_POINTER`) or, in WAL mode, the WAL (`SQLITE_FCNTL_JOURNAL_POINTER`),
/// through SQLite's own handle for it. Never through a descriptor of our own: closing any
/// descriptor of the database file drops every POSIX lock this process holds on it,
/// SQLite's shared lock included, and another process that then opens and closes the
/// database takes itself for the last one and deletes the WAL under the writer (SQLite's
/// "How To Corrupt An SQLite Database File", 2.2). A file the connection has not opened is
/// left alone.
fn sync(c: &Connection, op: std::ffi::c_int) -> rusqlite::Result<()> {
    let mut file: *mut ffi::sqlite3_file = std::ptr::null_mut();
    // SAFETY: `c.handle()` is this connection's open `sqlite3*`, and the connection is only
    // used on this thread. Both opcodes write one `sqlite3_file*` into `file`, which lives
    // through the call.
    let rc = unsafe {
        ffi::sqlite3_file_control(c.handle(), c"main".as_ptr(), op, (&raw mut file).cast())
    };
    let failed = |rc, what: &str| {
        Err(rusqlite::Error::SqliteFailure(
            ffi::Error::new(rc),
            Some(what.into()),
        ))
    };
    if rc != ffi::SQLITE_OK {
        return failed(rc, "no file handle to sync");
    }
    // SAFETY: a non-null `file` is a file of this connection. It stays valid until the
    // pager closes it, and no statement runs on this connection between here and the
    // sync. `pMethods` is null for a file not open (or closed), else SQLite's static
    // methods.
    let x_sync = unsafe { file.as_ref() }
        .and_then(|f| unsafe { f.pMethods.as_ref() })
        .and_then(|m| m.xSync);
    let Some(x_sync) = x_sync else {
        return Ok(());
    };
    // SAFETY: `file` is open (it has methods) and used by no other thread.
    let rc = unsafe { x_sync(file, ffi::SQLITE_SYNC_NORMAL) };
    if rc != ffi::SQLITE_OK {
        return failed(rc, "sync during a checkpoint");
    }
    Ok(())
}

/// A failed open or batch, and whether the batch is known not stored.
#[derive(Debug)]
pub(crate) struct WriteError {
    error: rusqlite::Error,
    rolled_back: bool,
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

/// Any failure before the COMMIT: the transaction is rolled back when it is dropped (and
/// the connection is closed after a failed batch), so nothing of it is stored.
impl From<rusqlite::Error> for WriteError {
    fn from(error: rusqlite::Error) -> Self {
        WriteError {
            error,
            rolled_back: true,
        }
    }
}

impl WriteError {
    /// The COMMIT itself failed. BUSY or LOCKED leave the transaction open, and dropping
    /// it rolls it back; any other failure there (I/O, a full disk, out of memory) may
    /// come after the commit frame reached the WAL, so the outcome is unknown.
    fn at_commit(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
        let rolled_back = matches!(
            error.sqlite_error_code(),
            Some(DatabaseBusy | DatabaseLocked)
        );
        WriteError { error, rolled_back }
    }
}

impl Sink for SqliteSink {
    type Conn = Connection;
    type Error = WriteError;

    fn open(&mut self) -> Result<Connection, WriteError> {
        let c = open(&self.path)?;
        c.busy_handler(Some(wait_for_lock))?;
        if let Some(old) = self.checkpointer.take() {
            old.stop();
        }
        match Checkpointer::start(self.path.clone(), CHECKPOINT_EVERY, RESTART_AFTER_FRAMES) {
            Ok(cp) => self.checkpointer = Some(cp),
            Err(e) => {
                tracing::warn!(error = %e, "no SQLite checkpointer thread; the writer checkpoints inline")
            }
        }
        Ok(c)
    }

    fn close(&mut self, conn: Connection) {
        drop(conn);
        if let Some(cp) = self.checkpointer.take() {
            cp.stop();
        }
    }

    fn write(
        &mut self,
        c: &mut Connection,
        calls: &[ApiCallRecord],
        events: &mut [AuditEvent],
        chain_key: &[u8],
    ) -> Result<(), WriteError> {
        write(c, calls, events, chain_key)
    }

    /// A constraint (a trigger's `RAISE(ABORT)` included), a value of the wrong type or
    /// one too big refuses a row; anything else before the COMMIT fails the whole write.
    fn outcome(e: &WriteError) -> Outcome {
        use rusqlite::ErrorCode::{ConstraintViolation, TooBig, TypeMismatch};
        if !e.rolled_back {
            Outcome::Unknown
        } else if matches!(
            e.error.sqlite_error_code(),
            Some(ConstraintViolation | TypeMismatch | TooBig)
        ) {
            Outcome::RowRefused
        } else {
            Outcome::RolledBack
        }
    }
}

fn open(path: &PathBuf) -> rusqlite::Result<Connection> {
    // the file exists: the sqlx pool created and migrated it
    let c = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    c.busy_timeout(crate::db::SQLITE_BUSY_TIMEOUT)?;
    // the pool's settings (db.rs)
    c.pragma_update(None, "journal_mode", "WAL")?;
    c.pragma_update(None, "synchronous", "NORMAL")?;
    // statement journals in memory (the writer runs no big sorts that would need disk)
    c.pragma_update(None, "temp_store", "MEMORY")?;
    c.pragma_update(None, "foreign_keys", "ON")?;
    c.pragma_update(
        None,
        "wal_autocheckpoint",
        crate::db::SQLITE_WAL_AUTOCHECKPOINT,
    )?;
    c.set_prepared_statement_cache_capacity(32);
    Ok(c)
}

/// `(?,?,…)` with `n` anonymous placeholders.
fn placeholders(n: usize) -> String {
    format!("({})", vec!["?"; n].join(","))
}

fn uuid(u: &Uuid) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Blob(u.as_bytes()))
}

fn opt_uuid(u: &Option<Uuid>) -> ToSqlOutput<'_> {
    u.as_ref().map_or(ToSqlOutput::Owned(Value::Null), uuid)
}

fn text(s: &str) -> ToSqlOutput<'_> {
    ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes()))
}

fn opt_text(s: &Option<String>) -> ToSqlOutput<'_> {
    s.as_deref().map_or(ToSqlOutput::Owned(Value::Null), text)
}

fn int(i: impl Into<i64>) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(Value::Integer(i.into()))
}

fn opt_int<T: Into<i64> + Copy>(i: &Option<T>) -> ToSqlOutput<'static> {
    i.map_or(ToSqlOutput::Owned(Value::Null), int)
}

fn time(t: &DbTime) -> ToSqlOutput<'static> {
    ToSqlOutput::Owned(Value::Text(t.canonical()))
}

fn opt_time(t: &Option<DbTime>) -> ToSqlOutput<'static> {
    t.as_ref().map_or(ToSqlOutput::Owned(Value::Null), time)
}

/// The 22 columns of `usage::COLS`, in that order.
fn call_values<'a>(r: &'a ApiCallRecord, out: &mut Vec<ToSqlOutput<'a>>) {
    out.extend([
        uuid(&r.id),
        uuid(&r.connection_id),
        uuid(&r.credential_id),
        uuid(&r.user_id),
        text(&r.method),
        text(&r.endpoint),
        text(&r.class),
        text(&r.decision),
        opt_text(&r.deny_code),
        opt_int(&r.status_code),
        opt_int(&r.response_time_ms),
        int(r.success),
        opt_text(&r.error_message),
        opt_int(&r.rate_limit_remaining),
        opt_time(&r.rate_limit_reset),
        int(r.notional_usd_micros),
        int(r.withdrawal_usd_micros),
        opt_text(&r.ip_address),
        opt_text(&r.user_agent),
        opt_uuid(&r.session_id),
        time(&r.created_at),
        opt_int(&r.rate_limit_used),
    ]);
}

/// The 26 columns of `audit::COLS`, in that order.
fn event_values<'a>(
    e: &'a AuditEvent,
    out: &mut Vec<ToSqlOutput<'a>>,
) -> Result<(), serde_json::Error> {
    let reasons = serde_json::to_string(&e.risk_reasons.0)?;
    let metadata = serde_json::to_string(&e.metadata.0)?;
    out.extend([
        int(e.seq),
        uuid(&e.id),
        time(&e.created_at),
        text(&e.category),
        text(&e.action),
        opt_uuid(&e.actor_id),
        text(&e.actor_role),
        opt_uuid(&e.user_id),
        opt_uuid(&e.credential_id),
        opt_uuid(&e.connection_id),
        opt_text(&e.endpoint),
        opt_text(&e.http_method),
        opt_text(&e.ip_address),
        opt_text(&e.user_agent),
        opt_text(&e.device_fingerprint),
        opt_text(&e.geo_country),
        opt_text(&e.geo_city),
        opt_uuid(&e.session_id),
        int(e.success),
        opt_int(&e.status_code),
        opt_text(&e.reason),
        int(e.risk_score),
        ToSqlOutput::Owned(Value::Text(reasons)),
        ToSqlOutput::Owned(Value::Text(metadata)),
        text(&e.prev_hash),
        text(&e.hash),
    ]);
    Ok(())
}

/// The batch in one IMMEDIATE transaction (the write lock up front, waiting out other
/// writers for up to the busy timeout), in the same order and with the same statements as
/// the sqlx path in `usage.rs`.
fn write(
    c: &mut Connection,
    calls: &[ApiCallRecord],
    events: &mut [AuditEvent],
    chain_key: &[u8],
) -> Result<(), WriteError> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // One row per statement: a multi-row INSERT inside a transaction makes SQLite keep a
    // statement journal (a copy of every page it touches, in case a later row fails);
    // with no thread hop per statement, single-row inserts are the cheaper way.
    // a deleted connection's late rows are left out (`Store::record_batch`)
    let call_sql = format!(
        "INSERT INTO api_calls ({}) SELECT {} WHERE EXISTS (SELECT 1 FROM connections WHERE id = ?2)",
        crate::usage::COLS,
        (1..=22).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
    );
    let mut values = Vec::with_capacity(22);
    {
        let mut st = tx.prepare_cached(&call_sql)?;
        for r in calls {
            values.clear();
            call_values(r, &mut values);
            st.execute(params_from_iter(values.iter()))?;
        }
    }
    for ((credential_id, user_id), (n, at)) in crate::usage::usage_of(calls) {
        tx.prepare_cached(crate::usage::USAGE_UPDATE)?
            .execute(params_from_iter([
                int(n),
                time(&at),
                uuid(&user_id),
                uuid(&credential_id),
            ]))?;
    }
    for ((credential_id, day), (user_id, volume, withdrawal)) in crate::usage::spend_of(calls) {
        tx.prepare_cached(crate::usage::SPEND_UPSERT)?
            .execute(params_from_iter([
                uuid(&credential_id),
                uuid(&user_id),
                text(&day),
                int(volume),
                int(withdrawal),
            ]))?;
    }
    if !events.is_empty() {
        let (seq, prev): (i64, String) = tx
            .prepare_cached("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")?
            .query_row([], |r| Ok((r.get(0)?, r.get(1)?)))?;
        let (seq, prev) = audit::chain_in_place(events, seq, prev, chain_key);
        let audit_sql = format!(
            "INSERT INTO audit_events ({}) VALUES {}",
            audit::COLS,
            placeholders(26)
        );
        let mut st = tx.prepare_cached(&audit_sql)?;
        let mut values = Vec::with_capacity(26);
        for e in events.iter() {
            values.clear();
            event_values(e, &mut values)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            st.execute(params_from_iter(values.iter()))?;
        }
        drop(st);
        tx.prepare_cached("UPDATE audit_head SET seq = ?1, hash = ?2 WHERE id = 1")?
            .execute(rusqlite::params![seq, prev])?;
    }
    tx.commit().map_err(WriteError::at_commit)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Which failed batches are known to have stored nothing: anything that failed before
    /// the COMMIT, and a COMMIT refused for a lock; not a COMMIT that failed otherwise
    /// (what reached the WAL is not known). Of those, a refused row (a constraint, a
    /// trigger's abort, a value of the wrong type or too big) is told apart: the rest of
    /// the batch would be stored without it.
    #[test]
    fn a_failure_is_a_rollback_unless_the_commit_itself_failed() {
        let failure =
            |code: i32| rusqlite::Error::SqliteFailure(rusqlite::ffi::Error::new(code), None);
        let outcome = |e: rusqlite::Error| SqliteSink::outcome(&e.into());
        for code in [
            ffi::SQLITE_CONSTRAINT_TRIGGER,
            ffi::SQLITE_CONSTRAINT_FOREIGNKEY,
            ffi::SQLITE_CONSTRAINT_NOTNULL,
            ffi::SQLITE_MISMATCH,
            ffi::SQLITE_TOOBIG,
        ] {
            assert_eq!(outcome(failure(code)), Outcome::RowRefused, "{code}");
        }
        for code in [
            ffi::SQLITE_ERROR,
            ffi::SQLITE_IOERR_WRITE,
            ffi::SQLITE_FULL,
            ffi::SQLITE_BUSY,
        ] {
            assert_eq!(outcome(failure(code)), Outcome::RolledBack, "{code}");
        }
        for code in [ffi::SQLITE_BUSY, ffi::SQLITE_LOCKED] {
            let e = WriteError::at_commit(failure(code));
            assert_eq!(
                SqliteSink::outcome(&e),
                Outcome::RolledBack,
                "COMMIT {code}"
            );
        }
        for code in [ffi::SQLITE_IOERR_WRITE, ffi::SQLITE_FULL, ffi::SQLITE_NOMEM] {
            let e = WriteError::at_commit(failure(code));
            assert_eq!(SqliteSink::outcome(&e), Outcome::Unknown, "COMMIT {code}");
        }
        let io =
            crate::StorageError::Database(sqlx::Error::Io(std::io::ErrorKind::BrokenPipe.into()));
        assert!(
            !io.rolled_back(),
            "a broken connection leaves the outcome unknown"
        );
        assert!(!io.refused_row());
        assert!(crate::StorageError::WriterRolledBack("x".into()).rolled_back());
        assert!(!crate::StorageError::WriterRolledBack("x".into()).refused_row());
        let refused = crate::StorageError::WriterRefusedRow("x".into());
        assert!(refused.rolled_back() && refused.refused_row());
        assert!(!crate::StorageError::Writer("x".into()).rolled_back());
    }

    /// An empty database file in a directory of its own (remove the directory after).
    fn scratch_file(prefix: &str) -> (PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", Uuid::now_v7()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.db");
        Connection::open(&path).unwrap();
        (dir, path)
    }

    /// The writer's side of the file at `path`, not yet open.
    fn sink(path: &std::path::Path) -> SqliteSink {
        SqliteSink {
            path: path.to_path_buf(),
            checkpointer: None,
        }
    }

    /// A writer's connection to a new file holding table `t` with `columns`, that never
    /// checkpoints by itself (the tests' checkpoints are the only ones).
    fn bare_writer(prefix: &str, columns: &str) -> (PathBuf, PathBuf, Connection) {
        let (dir, path) = scratch_file(prefix);
        let w = open(&path).unwrap();
        w.pragma_update(None, "wal_autocheckpoint", 0).unwrap();
        w.execute_batch(&format!("CREATE TABLE t ({columns})"))
            .unwrap();
        (dir, path, w)
    }

    /// WAL frames the file at `path` has held at most (it never shrinks: a restart
    /// overwrites it from the start).
    fn wal_frames(path: &std::path::Path) -> u64 {
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        let len = std::fs::metadata(wal).map(|m| m.len()).unwrap_or(0);
        len.saturating_sub(32) / (4096 + 24)
    }

    /// The writer's connection brings its checkpointer with it, and closing the connection
    /// stops it (its connection closed before `close` returns).
    #[test]
    fn the_sink_runs_a_checkpointer_while_its_connection_is_open() {
        let (dir, path) = scratch_file("keygate-sink");
        let mut sink = sink(&path);
        let conn = sink.open().unwrap();
        let running = sink.checkpointer.as_ref().expect("a checkpointer");
        assert!(!running.thread.is_finished());
        sink.close(conn);
        assert!(sink.checkpointer.is_none());
        // reopening (as after a failed batch) starts a fresh one
        let conn = sink.open().unwrap();
        assert!(!sink.checkpointer.as_ref().unwrap().thread.is_finished());
        sink.close(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The writer waits out a write lock another connection holds (a RESTART checkpoint
    /// holds one across two `fsync`s) and begins once it is released, polling with its own
    /// handler instead of SQLite's ever longer sleeps.
    #[test]
    fn the_writer_waits_out_a_lock_another_connection_holds() {
        let (dir, path) = scratch_file("keygate-busy");
        let mut sink = sink(&path);
        let mut conn = sink.open().unwrap();
        // `PRAGMA busy_timeout` reads 0 once a handler of one's own replaced SQLite's
        let timeout: i64 = conn
            .query_row("PRAGMA busy_timeout", [], |r| r.get(0))
            .unwrap();
        assert_eq!(timeout, 0, "SQLite's sleeping busy handler is in use");
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .unwrap();
        let holder = open(&path).unwrap();
        holder
            .execute_batch("BEGIN IMMEDIATE; INSERT INTO t VALUES (1)")
            .unwrap();
        let released = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = released.clone();
        let other = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            flag.store(true, std::sync::atomic::Ordering::SeqCst);
            holder.execute_batch("COMMIT").unwrap();
        });
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .expect("the writer waits for the lock instead of failing");
        assert!(
            released.load(std::sync::atomic::Ordering::SeqCst),
            "began while the other connection held the lock"
        );
        tx.execute("INSERT INTO t VALUES (2)", []).unwrap();
        tx.commit().unwrap();
        other.join().unwrap();
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 2);
        sink.close(conn);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The wait is bounded like the pool's `busy_timeout`, by the time waited: a lock that
    /// stays busy fails the batch after [`LOCK_WAIT`]. The polls are short.
    #[test]
    fn the_writer_gives_up_on_a_lock_after_the_pools_timeout() {
        assert!(
            LOCK_POLL <= Duration::from_millis(1),
            "polls in small steps"
        );
        assert!(keep_waiting(Duration::ZERO));
        assert!(keep_waiting(LOCK_WAIT - Duration::from_micros(1)));
        assert!(!keep_waiting(LOCK_WAIT));
        assert!(!keep_waiting(Duration::MAX));
        // the clock starts at the first poll of each wait
        assert!(wait_for_lock(0));
        let Some(long_ago) = std::time::Instant::now().checked_sub(LOCK_WAIT) else {
            return; // the clock began less than LOCK_WAIT ago
        };
        WAITING_SINCE.with(|w| w.set(Some(long_ago)));
        assert!(
            !wait_for_lock(1),
            "a wait that began LOCK_WAIT ago gives up"
        );
        assert!(wait_for_lock(0), "a new wait starts its clock afresh");
    }

    /// A failed `fsync` ends the RESTARTs for good (the WAL may hold the only copy of
    /// pages the kernel dropped); a failed checkpoint statement does not. The round after
    /// a failure syncs whatever it finds, and the stuck warning comes and goes with the WAL.
    #[test]
    fn a_failed_fsync_ends_the_restarts() {
        let busy = || rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_BUSY), None);
        let io = || rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_IOERR), None);
        let ok = |log, restarted| {
            Ok(Round {
                log,
                copied: log,
                restarted,
            })
        };
        let mut r = Rounds::new(400);
        assert!(r.note(&ok(500, true)));
        assert_eq!(r.last, Some(ok(500, true).unwrap()));
        assert!(!r.note(&Err(RoundError::Checkpoint(busy()))));
        assert_eq!((r.restart_after, r.last, r.failing), (400, None, true));
        assert!(!r.note(&ok(10, false)));
        assert!(!r.failing);
        assert!(!r.note(&ok(1_600, false)));
        assert!(r.stuck, "4x the restart point with no RESTART");
        assert!(r.note(&ok(1_700, true)));
        assert!(!r.stuck);
        assert!(!r.note(&Err(RoundError::Sync(io()))));
        assert_eq!((r.restart_after, r.last), (i64::MAX, None));
        assert!(!r.note(&ok(50_000, false)));
        assert_eq!(r.restart_after, i64::MAX, "restarts stay off");
        assert!(!r.stuck);
    }

    /// The checkpointer's syncs must not drop this process's POSIX locks on the database
    /// file (closing any descriptor of it would). Without SQLite's shared lock, another
    /// process that opens and closes the database takes itself for the last connection:
    /// it checkpoints, deletes the WAL, and the writer's next commits go to an unlinked
    /// file, lost to every other process. Here the other process is Python's `sqlite3`.
    #[test]
    fn a_checkpoint_keeps_the_locks_another_process_relies_on() {
        let (dir, path, mut w) = bare_writer("keygate-locks", "v INTEGER NOT NULL");
        let insert = |w: &mut Connection, from: i64| {
            let tx = w.transaction().unwrap();
            for i in from..from + 100 {
                tx.execute("INSERT INTO t (v) VALUES (?1)", [i]).unwrap();
            }
            tx.commit().unwrap();
        };
        insert(&mut w, 0);
        let c = open(&path).unwrap();
        // a round that copies frames, syncs both files and restarts the WAL
        let round = checkpoint(&c, 1, None).unwrap();
        assert!(round.copied > 0 && round.restarted, "{round:?}");
        insert(&mut w, 100);
        // a round that syncs the database file only
        checkpoint(&c, i64::MAX, None).unwrap();
        insert(&mut w, 200);
        let count = |label: &str| -> i64 {
            let out = std::process::Command::new("python3")
                .arg("-c")
                .arg(
                    "import sqlite3, sys\n\
                     c = sqlite3.connect(sys.argv[1])\n\
                     print(c.execute('SELECT COUNT(*) FROM t').fetchone()[0])\n\
                     c.close()",
                )
                .arg(&path)
                .output()
                .expect("python3 runs");
            assert!(out.status.success(), "{label}: {out:?}");
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        assert_eq!(count("the other process"), 300);
        let mut wal = path.as_os_str().to_owned();
        wal.push("-wal");
        assert!(
            std::path::Path::new(&wal).exists(),
            "the other process deleted the WAL under the writer"
        );
        insert(&mut w, 300);
        assert_eq!(
            count("a later process"),
            400,
            "commits went to a deleted WAL"
        );
        drop(c);
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// Under a writer that never stops appending, a PASSIVE checkpoint never catches up and
    /// the WAL would grow without end; the checkpointer's RESTART keeps it bounded, while
    /// the writer itself never checkpoints.
    ///
    /// The writer runs until the checkpointer has completed a few RESTARTs and the WAL's
    /// peak is well below the commits made (or a deadline passes), not for a fixed time: on
    /// a slow disk (CI) a round, with its `fsync`s, takes longer, and a fixed run caught
    /// too few of them. Without the restarts the peak keeps pace with the commits: the run
    /// stops early once the WAL is large with no RESTART done, and in any case at a size
    /// far past any bound the restarts keep.
    #[test]
    fn the_checkpointer_keeps_the_wal_bounded_under_a_writer_that_never_pauses() {
        let (dir, path, mut w) =
            bare_writer("keygate-wal", "id INTEGER PRIMARY KEY, v BLOB NOT NULL");
        let restart_after = 400;
        let cp =
            Checkpointer::start(path.clone(), Duration::from_millis(5), restart_after).unwrap();
        let wanted = 3;
        let deadline = Duration::from_secs(60);
        // 100 MB of WAL with no RESTART yet, or 400 MB in any case
        let (unbounded, too_big) = (25_000, 100_000);
        let started = std::time::Instant::now();
        let mut commits = 0i64;
        let mut peak: u64;
        loop {
            if commits % 100 == 0 {
                peak = wal_frames(&path);
                let bounded =
                    commits >= 6_000 && cp.restarts() >= wanted && peak < commits as u64 / 2;
                let unrestarted = peak > unbounded && cp.restarts() == 0;
                if bounded || unrestarted || peak > too_big || started.elapsed() > deadline {
                    break;
                }
            }
            let i = commits;
            commits += 1;
            let tx = w
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .unwrap();
            tx.execute("INSERT INTO t (v) VALUES (zeroblob(200))", [])
                .unwrap();
            tx.commit().unwrap();
            if i % 10 == 0 {
                // a short gap now and then, as between batches: long enough for a RESTART
                // to take the lock, too short for a PASSIVE round to copy everything
                std::thread::sleep(Duration::from_micros(100));
            }
        }
        let restarts = cp.restarts();
        cp.stop();
        let n: i64 = w
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap();
        drop(w);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(n, commits);
        assert!(
            restarts >= wanted,
            "{restarts} RESTARTs over {commits} commits in {:?}",
            started.elapsed()
        );
        // every commit appended at least one frame: without the restarts the WAL would hold
        // them all
        assert!(
            peak < commits as u64 / 2,
            "the WAL grew to {peak} frames over {commits} commits"
        );
    }
}
