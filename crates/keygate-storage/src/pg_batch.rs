//! The PostgreSQL side of the gateway's group commit ([`Store::record_batch`]): usually a
//! whole batch in ONE round trip whatever its size.
//!
//! The writer's connection holds the service's RLS identity for its session
//! ([`crate::db::pg_identity_sql`], set on connect). A batch's events are chained onto the
//! audit head this writer's last batch left (read without a lock on first use), and the
//! batch goes as ONE statement in its own transaction: the call rows, the credentials'
//! usage and the chained events, each from arrays (`UNNEST`), as data-modifying CTEs that
//! all write only if the first one moves the head from the value they were chained onto
//! ([`Chain::Guarded`]). If another instance (or a restore) moved the head first, nothing
//! is written and the batch is chained onto the new head; after [`OPTIMISTIC_TRIES`] such
//! losses it takes the head's row lock: `BEGIN` with the identity, `UPDATE … RETURNING`,
//! the statement, `COMMIT` (four round trips, the form every batch used to take).
//!
//! Under load the recorder's batches are serial, so a batch's latency is what bounds
//! throughput. Each round trip to a local PostgreSQL cost 200–400 µs on the benchmark
//! machine (the backend's wake-up, `strace -T`); the four-round-trip form took about
//! 1 ms for a batch of one, this one about 0.5 ms (`benches/record.rs`). An earlier
//! statement-per-table-and-credential form took 7 to 9 round trips, and PostgreSQL sat
//! "idle in transaction" most of the time.
//!
//! The session identity and sqlx's prepared statements are session state: keygate needs
//! session pooling, not a transaction-mode pooler, between it and PostgreSQL.
//!
//! The batches run on the store's writer thread (`batch_writer.rs`) with a
//! one-connection current-thread runtime: on the server's runtime, each of a batch's
//! round trips re-queued the writing task behind every request task on the busy workers,
//! and that wait, not PostgreSQL, was most of a batch's time. The connection is opened on
//! first use, within [`CONNECT_TIMEOUT`], and one that failed mid-batch is discarded.
//!
//! Values are bound as typed arrays, never spliced into the SQL text; the JSON columns
//! go as text and are cast to `jsonb` (the same value the per-row path stored).
//!
//! [`Store::record_batch`]: crate::Store::record_batch

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Postgres};
use uuid::Uuid;

use crate::batch_writer::{BatchWriter, Outcome, Sink};
use crate::usage::{spend_of, usage_of, COLS as CALL_COLS};
use crate::{audit, Actor, ApiCallRecord, AuditEvent, Result, StorageError};

type Query<'q> = sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>;

/// Column types of `api_calls` in `usage::COLS` order.
const CALL_TYPES: [&str; 22] = [
    "uuid",
    "uuid",
    "uuid",
    "uuid",
    "text",
    "text",
    "text",
    "text",
    "text",
    "int4",
    "int4",
    "bool",
    "text",
    "int8",
    "timestamptz",
    "int8",
    "int8",
    "text",
    "text",
    "uuid",
    "timestamptz",
    "int8",
];

/// Column types of `audit_events` in `audit::COLS` order; the two JSON columns come as
/// text (cast in the select list).
const EVENT_TYPES: [&str; 26] = [
    "int8",
    "uuid",
    "timestamptz",
    "text",
    "text",
    "uuid",
    "text",
    "uuid",
    "uuid",
    "uuid",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "text",
    "uuid",
    "bool",
    "int4",
    "text",
    "int4",
    "text",
    "text",
    "text",
    "text",
];
const EVENT_JSON: [usize; 2] = [22, 23];

/// `INSERT INTO table (cols) SELECT c1, …, cN FROM UNNEST($k::t1[], …) AS x(c1, …, cN)`,
/// parameters numbered from `*next`.
fn unnest_insert(
    table: &str,
    cols: &str,
    types: &[&str],
    json: &[usize],
    next: &mut usize,
) -> String {
    let mut params = String::new();
    let mut names = String::new();
    let mut select = String::new();
    for (i, t) in types.iter().enumerate() {
        let sep = if i == 0 { "" } else { ", " };
        let _ = write!(params, "{sep}${}::{t}[]", *next);
        let _ = write!(names, "{sep}c{i}");
        if json.contains(&i) {
            let _ = write!(select, "{sep}c{i}::jsonb");
        } else {
            let _ = write!(select, "{sep}c{i}");
        }
        *next += 1;
    }
    format!("INSERT INTO {table} ({cols}) SELECT {select} FROM UNNEST({params}) AS x({names})")
}

/// How a batch statement with events moves the audit chain's head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chain {
    /// No events: the head is not touched.
    None,
    /// The transaction already holds the head's row lock: set its new value.
    Locked,
    /// No lock held: move the head only if it still holds the value the events were
    /// chained onto, and write nothing at all otherwise. The statement's one row says
    /// whether it did (1) or another writer moved the head first (0).
    Guarded,
}

/// The batch statement for the parts present, with its parameters numbered in bind order:
/// calls, usage, events, the head's new seq and hash, and (guarded) the seq and hash the
/// events were chained onto.
fn batch_sql(calls: bool, usage: bool, spend: bool, chain: Chain) -> String {
    let guarded = chain == Chain::Guarded;
    // every part of a guarded statement writes only if the head moved
    let guard = |sql: String, has_where: bool| {
        if !guarded {
            sql
        } else if has_where {
            format!("{sql} AND EXISTS (SELECT 1 FROM h)")
        } else {
            format!("{sql} WHERE EXISTS (SELECT 1 FROM h)")
        }
    };
    let mut next = 1;
    let mut parts = Vec::new();
    if calls {
        // c1 is connection_id: a deleted connection's late rows are left out (`Store::record_batch`).
        // FOR KEY SHARE takes the lock the foreign key check would: a deletion still
        // uncommitted is waited for here, and once it commits the row is not found (READ
        // COMMITTED skips a locked row deleted meanwhile), so the row is left out instead
        // of failing the foreign key check, and the batch, after the wait.
        let sql = unnest_insert("api_calls", CALL_COLS, &CALL_TYPES, &[], &mut next);
        parts.push(guard(
            format!("{sql} WHERE EXISTS (SELECT 1 FROM connections WHERE id = x.c1 FOR KEY SHARE)"),
            true,
        ));
    }
    if usage {
        let (c, u, n, t) = (next, next + 1, next + 2, next + 3);
        next += 4;
        parts.push(guard(format!(
            "UPDATE credentials AS cr SET usage_count = cr.usage_count + x.n, \
             last_used_at = CASE WHEN cr.last_used_at IS NULL OR cr.last_used_at < x.at THEN x.at ELSE cr.last_used_at END \
             FROM UNNEST(${c}::uuid[], ${u}::uuid[], ${n}::int8[], ${t}::timestamptz[]) AS x(cred, usr, n, at) \
             WHERE cr.user_id = x.usr AND cr.id = x.cred"
        ), true));
    }
    if spend {
        let (c, u, d, v, w) = (next, next + 1, next + 2, next + 3, next + 4);
        next += 5;
        // `WHERE` before `ON CONFLICT`: after a bare FROM item, ON would parse as a join's
        let insert = guard(
            format!(
                "INSERT INTO credential_spend (credential_id, user_id, day, volume_usd_micros, withdrawal_usd_micros) \
                 SELECT cred, usr, day, v, w \
                 FROM UNNEST(${c}::uuid[], ${u}::uuid[], ${d}::text[], ${v}::int8[], ${w}::int8[]) AS x(cred, usr, day, v, w) \
                 WHERE true"
            ),
            true,
        );
        parts.push(format!(
            "{insert} ON CONFLICT (credential_id, day) DO UPDATE SET {}",
            crate::usage::SPEND_SET
        ));
    }
    if chain != Chain::None {
        let sql = unnest_insert(
            "audit_events",
            audit::COLS,
            &EVENT_TYPES,
            &EVENT_JSON,
            &mut next,
        );
        parts.push(guard(sql, false));
    }
    let (seq, hash) = (next, next + 1);
    let last = match chain {
        Chain::None => parts.pop().unwrap_or_else(|| "SELECT 1".into()),
        Chain::Locked => format!("UPDATE audit_head SET seq = ${seq}, hash = ${hash} WHERE id = 1"),
        Chain::Guarded => {
            let (old_seq, old_hash) = (next + 2, next + 3);
            parts.insert(
                0,
                format!(
                    "UPDATE audit_head SET seq = ${seq}, hash = ${hash} \
                     WHERE id = 1 AND seq = ${old_seq} AND hash = ${old_hash} RETURNING 1"
                ),
            );
            "SELECT COUNT(*) FROM h".into()
        }
    };
    if parts.is_empty() {
        return last;
    }
    let ctes: Vec<String> = parts
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let name = if guarded && i == 0 {
                "h".to_string()
            } else {
                format!("p{i}")
            };
            format!("{name} AS ({p})")
        })
        .collect();
    format!("WITH {} {last}", ctes.join(", "))
}

/// One column of `rows` as an array parameter.
fn col<R, T>(rows: &[R], f: impl Fn(&R) -> T) -> Vec<T> {
    rows.iter().map(f).collect()
}

fn bind_calls<'q>(q: Query<'q>, c: &[ApiCallRecord]) -> Query<'q> {
    let t = |v: Option<crate::DbTime>| v.map(|t| t.0);
    q.bind(col(c, |r| r.id))
        .bind(col(c, |r| r.connection_id))
        .bind(col(c, |r| r.credential_id))
        .bind(col(c, |r| r.user_id))
        .bind(col(c, |r| r.method.clone()))
        .bind(col(c, |r| r.endpoint.clone()))
        .bind(col(c, |r| r.class.clone()))
        .bind(col(c, |r| r.decision.clone()))
        .bind(col(c, |r| r.deny_code.clone()))
        .bind(col(c, |r| r.status_code))
        .bind(col(c, |r| r.response_time_ms))
        .bind(col(c, |r| r.success))
        .bind(col(c, |r| r.error_message.clone()))
        .bind(col(c, |r| r.rate_limit_remaining))
        .bind(col(c, |r| t(r.rate_limit_reset)))
        .bind(col(c, |r| r.notional_usd_micros))
        .bind(col(c, |r| r.withdrawal_usd_micros))
        .bind(col(c, |r| r.ip_address.clone()))
        .bind(col(c, |r| r.user_agent.clone()))
        .bind(col(c, |r| r.session_id))
        .bind(col(c, |r| r.created_at.0))
        .bind(col(c, |r| r.rate_limit_used))
}

fn bind_events<'q>(q: Query<'q>, e: &[AuditEvent]) -> Result<Query<'q>> {
    let risk: Vec<String> = e
        .iter()
        .map(|v| serde_json::to_string(&v.risk_reasons.0))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let meta: Vec<String> = e
        .iter()
        .map(|v| serde_json::to_string(&v.metadata.0))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    Ok(q.bind(col(e, |v| v.seq))
        .bind(col(e, |v| v.id))
        .bind(col(e, |v| v.created_at.0))
        .bind(col(e, |v| v.category.clone()))
        .bind(col(e, |v| v.action.clone()))
        .bind(col(e, |v| v.actor_id))
        .bind(col(e, |v| v.actor_role.clone()))
        .bind(col(e, |v| v.user_id))
        .bind(col(e, |v| v.credential_id))
        .bind(col(e, |v| v.connection_id))
        .bind(col(e, |v| v.endpoint.clone()))
        .bind(col(e, |v| v.http_method.clone()))
        .bind(col(e, |v| v.ip_address.clone()))
        .bind(col(e, |v| v.user_agent.clone()))
        .bind(col(e, |v| v.device_fingerprint.clone()))
        .bind(col(e, |v| v.geo_country.clone()))
        .bind(col(e, |v| v.geo_city.clone()))
        .bind(col(e, |v| v.session_id))
        .bind(col(e, |v| v.success))
        .bind(col(e, |v| v.status_code))
        .bind(col(e, |v| v.reason.clone()))
        .bind(col(e, |v| v.risk_score))
        .bind(risk)
        .bind(meta)
        .bind(col(e, |v| v.prev_hash.clone()))
        .bind(col(e, |v| v.hash.clone())))
}

/// Binds the call rows, the credentials' usage and their spend (the parts before the
/// events).
fn bind_front<'q>(
    mut q: Query<'q>,
    calls: &[ApiCallRecord],
    usage: &BTreeMap<(Uuid, Uuid), (i64, crate::DbTime)>,
    spend: &Spend,
) -> Query<'q> {
    if !calls.is_empty() {
        q = bind_calls(q, calls);
    }
    if !usage.is_empty() {
        let keys: Vec<(Uuid, Uuid)> = usage.keys().copied().collect();
        let n: Vec<i64> = usage.values().map(|(n, _)| *n).collect();
        let at: Vec<DateTime<Utc>> = usage.values().map(|(_, t)| t.0).collect();
        q = q
            .bind(keys.iter().map(|k| k.0).collect::<Vec<_>>())
            .bind(keys.iter().map(|k| k.1).collect::<Vec<_>>())
            .bind(n)
            .bind(at);
    }
    if !spend.is_empty() {
        q = q
            .bind(spend.keys().map(|k| k.0).collect::<Vec<_>>())
            .bind(spend.values().map(|v| v.0).collect::<Vec<_>>())
            .bind(spend.keys().map(|k| k.1.clone()).collect::<Vec<_>>())
            .bind(spend.values().map(|v| v.1).collect::<Vec<_>>())
            .bind(spend.values().map(|v| v.2).collect::<Vec<_>>());
    }
    q
}

/// What `usage::spend_of` returns.
type Spend = BTreeMap<(Uuid, String), (Uuid, i64, i64)>;

/// Optimistic attempts before a batch takes the head's lock instead.
const OPTIMISTIC_TRIES: usize = 3;

/// Records `calls` (each allowed one a use of its credential) and chains and appends
/// `events`, atomically. Returns the stored events.
///
/// Usually ONE round trip: the events are chained onto `head` (what this writer's last
/// batch left there, else read without a lock) and the whole batch is one statement in its
/// own transaction, which moves the head only if it still holds that value and otherwise
/// writes nothing ([`Chain::Guarded`]). When another instance moved the head first, the
/// batch is chained again onto the new value; after [`OPTIMISTIC_TRIES`] such losses it
/// takes the head's row lock (four round trips, always succeeds). A stale `head` (after
/// an error, a restore, another instance) costs a lost try, never a wrong write. `tries`
/// is [`OPTIMISTIC_TRIES`] except in tests.
async fn record_batch(
    conn: &mut PgConnection,
    head: &mut Option<(i64, String)>,
    calls: &[ApiCallRecord],
    events: &mut [AuditEvent],
    chain_key: &[u8],
    tries: usize,
) -> Result<()> {
    let usage = usage_of(calls);
    let spend = spend_of(calls);
    let parts = (!calls.is_empty(), !usage.is_empty(), !spend.is_empty());
    if events.is_empty() {
        let sql = batch_sql(parts.0, parts.1, parts.2, Chain::None);
        bind_front(sqlx::query(&sql), calls, &usage, &spend)
            .execute(&mut *conn)
            .await?;
        return Ok(());
    }
    let sql = batch_sql(parts.0, parts.1, parts.2, Chain::Guarded);
    for _ in 0..tries {
        let (seq, prev) = match head.take() {
            Some(h) => h,
            None => {
                sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
                    .fetch_one(&mut *conn)
                    .await?
            }
        };
        let (new_seq, new_prev) = audit::chain_in_place(events, seq, prev.clone(), chain_key);
        let q = bind_events(bind_front(sqlx::query(&sql), calls, &usage, &spend), events)?
            .bind(new_seq)
            .bind(new_prev.clone())
            .bind(seq)
            .bind(prev);
        let moved: i64 = sqlx::Row::try_get(&q.fetch_one(&mut *conn).await?, 0)?;
        if moved == 1 {
            *head = Some((new_seq, new_prev));
            return Ok(());
        }
        // another instance appended first: nothing was written; chain onto its head
    }
    let mut tx = conn
        .begin_with(crate::db::pg_begin_sql(Actor::service()))
        .await?;
    // takes the head's row lock and reads it in one statement
    let (seq, prev): (i64, String) =
        sqlx::query_as("UPDATE audit_head SET seq = seq WHERE id = 1 RETURNING seq, hash")
            .fetch_one(&mut *tx)
            .await?;
    let (seq, prev) = audit::chain_in_place(events, seq, prev, chain_key);
    let sql = batch_sql(parts.0, parts.1, parts.2, Chain::Locked);
    bind_events(bind_front(sqlx::query(&sql), calls, &usage, &spend), events)?
        .bind(seq)
        .bind(prev.clone())
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    *head = Some((seq, prev));
    Ok(())
}

/// How long the writer waits to (re)connect, as long as the pool waits to acquire.
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Starts the writer thread (it connects on first use).
pub(crate) fn start(options: PgConnectOptions) -> std::io::Result<BatchWriter> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    BatchWriter::start(
        "keygate-pg-writer",
        "PostgreSQL",
        PgSink {
            rt,
            options,
            head: None,
        },
    )
}

/// A one-connection current-thread runtime on the writer thread.
struct PgSink {
    rt: tokio::runtime::Runtime,
    options: PgConnectOptions,
    /// The chain head this writer's last batch left (see `record_batch`).
    head: Option<(i64, String)>,
}

impl Sink for PgSink {
    type Conn = PgConnection;
    type Error = StorageError;

    fn open(&mut self) -> Result<PgConnection> {
        // bounded like the pool's acquire: an unreachable server fails the batch (and its
        // calls) rather than holding them
        let options = &self.options;
        // the timer must be made inside the runtime
        let connect = async {
            tokio::time::timeout(CONNECT_TIMEOUT, PgConnection::connect_with(options)).await
        };
        let mut conn = self.rt.block_on(connect).map_err(|_| {
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "connecting to PostgreSQL timed out",
            ))
        })??;
        // the writer always acts as the service: its identity for the whole session, so
        // a batch needs no BEGIN of its own (row-level security applies as before)
        // READ COMMITTED whatever the server's default: a batch leaves out the row of a
        // connection deleted while it waited for the deletion (`batch_sql`), which takes a
        // fresh look at the row after the wait; a snapshot isolation would fail instead
        let identity = format!(
            "{}; {}",
            crate::db::pg_identity_sql(Actor::service(), false),
            crate::db::PG_READ_COMMITTED
        );
        self.rt.block_on(async {
            use sqlx::Executor;
            conn.execute(identity.as_str()).await
        })?;
        self.head = None;
        Ok(conn)
    }

    fn write(
        &mut self,
        conn: &mut PgConnection,
        calls: &[ApiCallRecord],
        events: &mut [AuditEvent],
        chain_key: &[u8],
    ) -> Result<()> {
        self.rt.block_on(record_batch(
            conn,
            &mut self.head,
            calls,
            events,
            chain_key,
            OPTIMISTIC_TRIES,
        ))
    }

    fn close(&mut self, conn: PgConnection) {
        let _ = self.rt.block_on(conn.close());
    }

    /// Only an error the server answered with: a broken connection or a timeout leaves
    /// the batch's fate unknown (the server may still commit it).
    fn outcome(e: &StorageError) -> Outcome {
        if e.refused_row() {
            Outcome::RowRefused
        } else if e.rolled_back() {
            Outcome::RolledBack
        } else {
            Outcome::Unknown
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `$n` parameter numbers in `sql`, sorted.
    fn params(sql: &str) -> Vec<usize> {
        let mut seen: Vec<usize> = sql
            .split('$')
            .skip(1)
            .map(|s| {
                let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
                digits.parse().unwrap()
            })
            .collect();
        seen.sort_unstable();
        seen
    }

    #[test]
    fn the_batch_statement_numbers_every_array_once_in_bind_order() {
        let all = batch_sql(true, true, true, Chain::Locked);
        // 22 call columns, 4 usage arrays, 5 spend arrays, 26 event columns, seq and
        // hash: each once
        assert_eq!(
            params(&all),
            (1..=22 + 4 + 5 + 26 + 2).collect::<Vec<_>>(),
            "{all}"
        );
        assert!(
            all.starts_with("WITH p0 AS (INSERT INTO api_calls"),
            "{all}"
        );
        assert!(
            all.ends_with("UPDATE audit_head SET seq = $58, hash = $59 WHERE id = 1"),
            "{all}"
        );
        assert!(all.contains("c22::jsonb, c23::jsonb"), "{all}");
        // guarded: the head's move first, every other part gated on it, then the count;
        // the seq and hash the events were chained onto come after the new ones
        let guarded = batch_sql(true, true, true, Chain::Guarded);
        assert_eq!(
            params(&guarded),
            (1..=22 + 4 + 5 + 26 + 4).collect::<Vec<_>>(),
            "{guarded}"
        );
        assert!(
            guarded.starts_with(
                "WITH h AS (UPDATE audit_head SET seq = $58, hash = $59 \
                 WHERE id = 1 AND seq = $60 AND hash = $61 RETURNING 1)"
            ),
            "{guarded}"
        );
        assert!(guarded.ends_with(" SELECT COUNT(*) FROM h"), "{guarded}");
        assert_eq!(
            guarded.matches("EXISTS (SELECT 1 FROM h)").count(),
            4,
            "calls, usage, spend and events each gated: {guarded}"
        );
        // calls only: a plain insert, parameters from $1
        let calls = batch_sql(true, false, false, Chain::None);
        assert!(calls.starts_with("INSERT INTO api_calls") && calls.contains("$22::int8[]"));
        assert_eq!(CALL_COLS.split(", ").count(), CALL_TYPES.len());
        assert_eq!(audit::COLS.split(", ").count(), EVENT_TYPES.len());
    }

    fn event(action: &str) -> AuditEvent {
        AuditEvent::new("system", action, "service")
    }

    /// A batch that keeps losing the race for the head (here: a stale cached head and no
    /// optimistic tries left, or one) takes the head's lock, and the chain stays whole.
    #[tokio::test]
    async fn a_batch_that_loses_the_head_takes_the_lock_and_stays_on_the_chain() {
        let Some(admin) = crate::scratch::test_admin_url() else {
            return;
        };
        use sqlx::Executor;
        let db = crate::scratch::create(&admin, &crate::scratch::test_prefix())
            .await
            .unwrap();
        let url = db.url.clone();
        let store = crate::Store::connect(&url).await.unwrap();
        store.migrate().await.unwrap();
        let mut conn = PgConnection::connect(&url).await.unwrap();
        conn.execute(crate::db::pg_identity_sql(Actor::service(), false).as_str())
            .await
            .unwrap();
        let key = [9u8; 32];
        let mut head = None;
        // optimistic, from a fresh read of the head
        let mut first = vec![event("a")];
        record_batch(&mut conn, &mut head, &[], &mut first, &key, 3)
            .await
            .unwrap();
        let stale = head.clone();
        let mut second = vec![event("b"), event("c")];
        record_batch(&mut conn, &mut head, &[], &mut second, &key, 3)
            .await
            .unwrap();
        assert_eq!(second[0].seq, first[0].seq + 1);
        // the head moved on since `stale`: one lost try, then the lock
        head = stale.clone();
        let mut third = vec![event("d")];
        record_batch(&mut conn, &mut head, &[], &mut third, &key, 1)
            .await
            .unwrap();
        assert_eq!(
            third[0].seq,
            second[1].seq + 1,
            "chained onto the real head"
        );
        assert_eq!(third[0].prev_hash, second[1].hash);
        // no tries at all: straight to the lock, and the lock path leaves the head cached
        head = stale;
        let mut fourth = vec![event("e")];
        record_batch(&mut conn, &mut head, &[], &mut fourth, &key, 0)
            .await
            .unwrap();
        assert_eq!(fourth[0].prev_hash, third[0].hash);
        assert_eq!(head, Some((fourth[0].seq, fourth[0].hash.clone())));
        let report = store.verify_audit_chain(&key).await.unwrap();
        assert!(report.ok, "{report:?}");
        let (n,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM audit_events WHERE category = 'system' AND action IN ('a','b','c','d','e')")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, 5, "every event once");
        store.close().await;
        drop(conn);
        db.drop().await;
    }
}
