//! The audit log (seed `api_key_usage_audit` + `vault_access_log`): append-only and
//! chained with HMAC-SHA256, so a deleted, edited, reordered or truncated row is detected.
//!
//! Each event's hash is `HMAC(chain_key, prev_hash || canonical(event))`, where the
//! canonical encoding is backend-neutral (fixed field order, length-prefixed UTF-8,
//! timestamps in [`DbTime::canonical`] form), so a backup restored into the other backend
//! still verifies. The chain key is derived from the master key: database write access
//! alone cannot forge the chain. The head (last seq and hash) lives in `audit_head`.

use futures::future::BoxFuture;
use sqlx::types::Json;
use uuid::Uuid;

use crate::{Actor, DbTime, Result, Store};

#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Serialize)]
pub struct AuditEvent {
    pub seq: i64,
    pub id: Uuid,
    pub created_at: DbTime,
    /// vault | credential | gateway | admin | system
    pub category: String,
    pub action: String,
    pub actor_id: Option<Uuid>,
    pub actor_role: String,
    pub user_id: Option<Uuid>,
    pub credential_id: Option<Uuid>,
    pub connection_id: Option<Uuid>,
    pub endpoint: Option<String>,
    pub http_method: Option<String>,
    pub ip_address: Option<String>,
    pub user_agent: Option<String>,
    pub device_fingerprint: Option<String>,
    pub geo_country: Option<String>,
    pub geo_city: Option<String>,
    pub session_id: Option<Uuid>,
    pub success: bool,
    pub status_code: Option<i32>,
    pub reason: Option<String>,
    pub risk_score: i32,
    pub risk_reasons: Json<Vec<String>>,
    pub metadata: Json<serde_json::Value>,
    pub prev_hash: String,
    pub hash: String,
}

pub(crate) const COLS: &str = "seq, id, created_at, category, action, actor_id, actor_role, user_id, credential_id, connection_id, endpoint, http_method, ip_address, user_agent, device_fingerprint, geo_country, geo_city, session_id, success, status_code, reason, risk_score, risk_reasons, metadata, prev_hash, hash";

/// Filters for listing audit events.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub user_id: Option<Uuid>,
    pub credential_id: Option<Uuid>,
    pub connection_id: Option<Uuid>,
    pub category: Option<String>,
    pub action: Option<String>,
    /// Only successful (`true`) or failed (`false`) events.
    pub success: Option<bool>,
    /// Events at or after this instant.
    pub since: Option<DbTime>,
    /// Events before this instant.
    pub until: Option<DbTime>,
    /// Events with `seq` below this (newest-first paging).
    pub before_seq: Option<i64>,
    /// Events with `seq` above this (oldest-first export).
    pub after_seq: Option<i64>,
}

/// Result of walking the chain.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ChainReport {
    pub ok: bool,
    pub events_checked: i64,
    /// First sequence number where the chain breaks.
    pub first_broken_seq: Option<i64>,
    pub problem: Option<String>,
}

/// One field: `0`, or `1`, its length (u64, big-endian) and its UTF-8 bytes.
fn put(buf: &mut Vec<u8>, s: Option<&str>) {
    match s {
        None => buf.push(0),
        Some(s) => {
            buf.push(1);
            buf.extend_from_slice(&(s.len() as u64).to_be_bytes());
            buf.extend_from_slice(s.as_bytes());
        }
    }
}

/// [`put`] of the hyphenated lower-case form.
fn put_uuid(buf: &mut Vec<u8>, u: Option<&Uuid>) {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    put(buf, u.map(|u| &*u.hyphenated().encode_lower(&mut text)));
}

/// [`put`] of the decimal form.
fn put_int(buf: &mut Vec<u8>, i: Option<i64>) {
    let mut text = itoa::Buffer::new();
    put(buf, i.map(|i| text.format(i)));
}

/// A present field whose bytes `write` appends in place: [`put`]'s framing, with the
/// length patched in after.
fn put_with(buf: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    buf.push(1);
    let at = buf.len();
    buf.extend_from_slice(&[0; 8]);
    write(buf);
    let len = (buf.len() - at - 8) as u64;
    buf[at..at + 8].copy_from_slice(&len.to_be_bytes());
}

/// [`put`] of `parts` joined by `sep`.
fn put_joined(buf: &mut Vec<u8>, parts: &[String], sep: &str) {
    put_with(buf, |b| {
        for (i, p) in parts.iter().enumerate() {
            if i > 0 {
                b.extend_from_slice(sep.as_bytes());
            }
            b.extend_from_slice(p.as_bytes());
        }
    });
}

/// [`put`] of the JSON text of [`sorted`]`(v)`.
fn put_json(buf: &mut Vec<u8>, v: &serde_json::Value) {
    put_with(buf, |b| {
        let res = if is_canonical(v) {
            serde_json::to_writer(b, v)
        } else {
            serde_json::to_writer(b, &sorted(v))
        };
        res.expect("a Value always serializes");
    });
}

impl AuditEvent {
    /// A successful event stamped now, with every optional field empty and the chain
    /// fields (`seq`, `prev_hash`, `hash`) left for the writer to fill.
    pub fn new(category: &str, action: &str, actor_role: &str) -> AuditEvent {
        AuditEvent {
            seq: 0,
            id: Uuid::now_v7(),
            created_at: DbTime::now(),
            category: category.into(),
            action: action.into(),
            actor_id: None,
            actor_role: actor_role.into(),
            user_id: None,
            credential_id: None,
            connection_id: None,
            endpoint: None,
            http_method: None,
            ip_address: None,
            user_agent: None,
            device_fingerprint: None,
            geo_country: None,
            geo_city: None,
            session_id: None,
            success: true,
            status_code: None,
            reason: None,
            risk_score: 0,
            risk_reasons: Json(vec![]),
            metadata: Json(serde_json::json!({})),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    /// The backend-neutral byte encoding the HMAC covers (everything but `hash`). Pinned
    /// by a test: every stored chain was hashed over exactly these bytes. Written without
    /// a temporary string per field, since the gateway's group-commit writer (one thread,
    /// on every call's path) hashes one event per call.
    pub fn canonical(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(768);
        b.extend_from_slice(b"keygate-audit-v1");
        put_int(&mut b, Some(self.seq));
        put_uuid(&mut b, Some(&self.id));
        put(&mut b, Some(&self.created_at.canonical()));
        put(&mut b, Some(&self.category));
        put(&mut b, Some(&self.action));
        put_uuid(&mut b, self.actor_id.as_ref());
        put(&mut b, Some(&self.actor_role));
        put_uuid(&mut b, self.user_id.as_ref());
        put_uuid(&mut b, self.credential_id.as_ref());
        put_uuid(&mut b, self.connection_id.as_ref());
        put(&mut b, self.endpoint.as_deref());
        put(&mut b, self.http_method.as_deref());
        put(&mut b, self.ip_address.as_deref());
        put(&mut b, self.user_agent.as_deref());
        put(&mut b, self.device_fingerprint.as_deref());
        put(&mut b, self.geo_country.as_deref());
        put(&mut b, self.geo_city.as_deref());
        put_uuid(&mut b, self.session_id.as_ref());
        put(&mut b, Some(if self.success { "1" } else { "0" }));
        put_int(&mut b, self.status_code.map(i64::from));
        put(&mut b, self.reason.as_deref());
        put_int(&mut b, Some(i64::from(self.risk_score)));
        put_joined(&mut b, &self.risk_reasons.0, "\u{1f}");
        put_json(&mut b, &self.metadata.0);
        put(&mut b, Some(&self.prev_hash));
        b
    }

    pub fn compute_hash(&self, chain_key: &[u8]) -> String {
        self.hash_with(&ring::hmac::Key::new(ring::hmac::HMAC_SHA256, chain_key))
    }

    /// [`AuditEvent::compute_hash`] with the key already scheduled (once per batch).
    fn hash_with(&self, key: &ring::hmac::Key) -> String {
        // ring's HMAC-SHA256 (assembly), the same bytes as the `hmac` crate's
        hex::encode(ring::hmac::sign(key, &self.canonical()).as_ref())
    }
}

/// Makes `s` storable on both backends: PostgreSQL refuses U+0000 in `text` and `jsonb`
/// (SQLite keeps it), so a NUL becomes U+FFFD on both. Every row of the group commit
/// goes through this: one client's NUL (a percent-encoded `%00` in a proxied path) made
/// the whole batch fail on PostgreSQL, with every other call's row and audit event in it.
pub(crate) fn storable(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

pub(crate) fn storable_opt(s: &mut Option<String>) {
    if let Some(s) = s {
        storable(s);
    }
}

fn storable_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::String(s) => storable(s),
        serde_json::Value::Array(a) => a.iter_mut().for_each(storable_json),
        serde_json::Value::Object(m) => {
            if m.keys().any(|k| k.contains('\0')) {
                *m = std::mem::take(m)
                    .into_iter()
                    .map(|(mut k, v)| {
                        storable(&mut k);
                        (k, v)
                    })
                    .collect();
            }
            m.values_mut().for_each(storable_json);
        }
        _ => {}
    }
}

impl AuditEvent {
    /// [`storable`] for every text of the event, before it is hashed.
    pub fn make_storable(&mut self) {
        for s in [&mut self.category, &mut self.action, &mut self.actor_role] {
            storable(s);
        }
        for s in [
            &mut self.endpoint,
            &mut self.http_method,
            &mut self.ip_address,
            &mut self.user_agent,
            &mut self.device_fingerprint,
            &mut self.geo_country,
            &mut self.geo_city,
            &mut self.reason,
        ] {
            storable_opt(s);
        }
        self.risk_reasons.0.iter_mut().for_each(storable);
        storable_json(&mut self.metadata.0);
    }
}

/// Chains `events` after the head (`seq`, `prev`): assigns each its `seq`, `prev_hash`
/// and `hash`. Returns them and the new head. Each is made [`storable`] first.
pub(crate) fn chain(
    mut events: Vec<AuditEvent>,
    seq: i64,
    prev: String,
    chain_key: &[u8],
) -> (Vec<AuditEvent>, i64, String) {
    let (seq, prev) = chain_in_place(&mut events, seq, prev, chain_key);
    (events, seq, prev)
}

/// [`chain`] in place: the events stay the caller's, so a batch the database refused
/// can be chained again onto another head (whatever chain fields they carry are
/// overwritten). Returns the new head.
pub(crate) fn chain_in_place(
    events: &mut [AuditEvent],
    mut seq: i64,
    mut prev: String,
    chain_key: &[u8],
) -> (i64, String) {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, chain_key);
    for e in events.iter_mut() {
        e.make_storable();
        seq += 1;
        e.seq = seq;
        e.prev_hash = prev;
        e.hash = e.hash_with(&key);
        prev = e.hash.clone();
    }
    (seq, prev)
}

/// `v` with every object's keys in sorted order: the JSON the hash covers, so that jsonb's
/// reordering does not change it.
fn sorted(v: &serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => {
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            let mut out = serde_json::Map::new();
            for k in keys {
                out.insert(k.clone(), sorted(&m[k]));
            }
            serde_json::Value::Object(out)
        }
        serde_json::Value::Array(a) => serde_json::Value::Array(a.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// Whether `v` already serializes as [`sorted`]`(v)` does (every object's keys in order).
/// Always so while serde_json's `Map` is a `BTreeMap`; checked, so that a dependency
/// turning on `preserve_order` cannot silently change the hashes.
fn is_canonical(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(m) => m.keys().is_sorted() && m.values().all(is_canonical),
        serde_json::Value::Array(a) => a.iter().all(is_canonical),
        _ => true,
    }
}

impl Store {
    async fn audit_page(
        &self,
        sql: &str,
        after: i64,
        limit: i64,
        through: i64,
    ) -> Result<Vec<AuditEvent>> {
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            sqlx::query_as::<DB, _>(sql)
                .bind(after)
                .bind(limit)
                .bind(through)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// The chain's head (`seq`, `hash`) and the highest `seq` stored, read by one
    /// statement, so from one snapshot on either backend.
    async fn audit_head(&self) -> Result<(i64, String, i64)> {
        Ok(in_tx!(@quiet self, Actor::service(), |tx| {
            let head = sqlx::query::<DB>(
                "SELECT seq, hash, (SELECT COALESCE(MAX(seq), 0) FROM audit_events) FROM audit_head WHERE id = 1",
            )
            .fetch_one(&mut *tx)
            .await?;
            (
                sqlx::Row::try_get(&head, 0)?,
                sqlx::Row::try_get(&head, 1)?,
                sqlx::Row::try_get(&head, 2)?,
            )
        }))
    }

    /// Appends events (their `seq`, `prev_hash` and `hash` are assigned here) under the
    /// chain head's row lock, in one transaction. Returns the stored events.
    pub fn append_audit<'a>(
        &'a self,
        events: Vec<AuditEvent>,
        chain_key: &'a [u8],
    ) -> BoxFuture<'a, Result<Vec<AuditEvent>>> {
        Box::pin(async move { self.record_batch(&[], events, chain_key).await })
    }

    /// Newest-first page of events visible to `actor` matching `f`.
    pub async fn list_audit(
        &self,
        actor: Actor,
        f: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        self.query_audit(actor, f, limit, "DESC").await
    }

    /// Oldest-first page of events visible to `actor` matching `f` (export; page with
    /// `after_seq`).
    pub async fn export_audit(
        &self,
        actor: Actor,
        f: &AuditFilter,
        limit: i64,
    ) -> Result<Vec<AuditEvent>> {
        self.query_audit(actor, f, limit, "ASC").await
    }

    async fn query_audit(
        &self,
        actor: Actor,
        f: &AuditFilter,
        limit: i64,
        order: &'static str,
    ) -> Result<Vec<AuditEvent>> {
        let sql = format!(
            "SELECT {COLS} FROM audit_events WHERE ($1 IS NULL OR user_id = $1) AND ($2 IS NULL OR credential_id = $2) \
             AND ($3 IS NULL OR category = $3) AND ($4 IS NULL OR action = $4) AND ($5 IS NULL OR seq < $5) \
             AND ($6 IS NULL OR seq > $6) AND ($7 IS NULL OR connection_id = $7) AND ($8 IS NULL OR success = $8) \
             AND ($9 IS NULL OR created_at >= $9) AND ($10 IS NULL OR created_at < $10) ORDER BY seq {order} LIMIT $11"
        );
        // read-only: deferred, so a long filtered scan never holds SQLite's write lock
        Ok(in_tx!(@quiet self, actor, |tx| {
            sqlx::query_as::<DB, _>(&sql)
                .bind(f.user_id)
                .bind(f.credential_id)
                .bind(f.category.clone())
                .bind(f.action.clone())
                .bind(f.before_seq)
                .bind(f.after_seq)
                .bind(f.connection_id)
                .bind(f.success)
                .bind(f.since)
                .bind(f.until)
                .bind(limit)
                .fetch_all(&mut *tx)
                .await?
        }))
    }

    /// Walks the chain in order, up to the head it reads first, and reports the first
    /// broken link. Events appended during the walk lie past that head and are left for
    /// the next run: a live chain verifies. A stored event past the head read in the same
    /// snapshot was not appended through the head, and is reported.
    pub fn verify_audit_chain<'a>(
        &'a self,
        chain_key: &'a [u8],
    ) -> BoxFuture<'a, Result<ChainReport>> {
        Box::pin(async move {
            let page = 1000i64;
            let sql =
                format!("SELECT {COLS} FROM audit_events WHERE seq > $1 AND seq <= $3 ORDER BY seq LIMIT $2");
            let mut last_seq = 0i64;
            let mut prev = "genesis".to_string();
            let mut checked = 0i64;
            let broken = |seq: i64, checked: i64, why: &str| ChainReport {
                ok: false,
                events_checked: checked,
                first_broken_seq: Some(seq),
                problem: Some(why.to_string()),
            };
            let (head_seq, head_hash, stored_max) = self.audit_head().await?;
            loop {
                let rows = self.audit_page(&sql, last_seq, page, head_seq).await?;
                if rows.is_empty() {
                    break;
                }
                for e in rows {
                    if e.seq != last_seq + 1 {
                        return Ok(broken(
                            last_seq + 1,
                            checked,
                            "missing event (sequence gap)",
                        ));
                    }
                    if e.prev_hash != prev {
                        return Ok(broken(
                            e.seq,
                            checked,
                            "link to previous event broken (deleted or reordered)",
                        ));
                    }
                    if e.compute_hash(chain_key) != e.hash {
                        return Ok(broken(
                            e.seq,
                            checked,
                            "event content does not match its hash (edited)",
                        ));
                    }
                    prev = e.hash.clone();
                    last_seq = e.seq;
                    checked += 1;
                }
            }
            if head_seq != last_seq || head_hash != prev {
                return Ok(broken(
                    last_seq + 1,
                    checked,
                    "chain ends before its recorded head (truncated)",
                ));
            }
            if stored_max > head_seq {
                return Ok(broken(
                    head_seq + 1,
                    checked,
                    "event stored past the chain's recorded head (appended outside the chain)",
                ));
            }
            Ok(ChainReport {
                ok: true,
                events_checked: checked,
                first_broken_seq: None,
                problem: None,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_text_of_an_event_is_made_storable() {
        let mut e = full();
        e.endpoint = Some("/a\0b".into());
        e.reason = Some("\0".into());
        e.risk_reasons = Json(vec!["x\0".into()]);
        e.metadata = Json(serde_json::json!({"k\0": ["v\0", {"n": "\0"}], "ok": 1}));
        e.make_storable();
        let all =
            serde_json::to_string(&(&e.endpoint, &e.reason, &e.risk_reasons.0, &e.metadata.0))
                .unwrap();
        assert!(!all.contains("\\u0000"), "{all}");
        assert_eq!(e.endpoint.as_deref(), Some("/a\u{fffd}b"));
        assert_eq!(e.metadata.0["k\u{fffd}"][1]["n"], "\u{fffd}");
        assert_eq!(e.metadata.0["ok"], 1);
        let before = full();
        let mut same = full();
        same.make_storable();
        assert_eq!(
            same.canonical(),
            before.canonical(),
            "text without NUL unchanged"
        );
    }

    fn full() -> AuditEvent {
        let u = |n: u128| Some(Uuid::from_u128(n));
        AuditEvent {
            seq: 4_294_967_301,
            id: Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0001),
            created_at: DbTime::from_micros(1_700_000_000_123_456),
            category: "gateway".into(),
            action: "use".into(),
            actor_id: u(2),
            actor_role: "user".into(),
            user_id: u(3),
            credential_id: u(4),
            connection_id: u(5),
            endpoint: Some("/api/v3/order".into()),
            http_method: Some("POST".into()),
            ip_address: Some("203.0.113.7".into()),
            user_agent: Some("ccxt/4.4 \u{e9}\u{1f}".into()),
            device_fingerprint: Some("fp".into()),
            geo_country: Some("DE".into()),
            geo_city: Some("Berlin".into()),
            session_id: u(6),
            success: false,
            status_code: Some(403),
            reason: Some("symbol_blocked".into()),
            risk_score: -17,
            risk_reasons: Json(vec!["new_ip".into(), "burst".into()]),
            metadata: Json(serde_json::json!({
                "z": [3, {"b": 1, "a": null}], "a": "x", "m": {"y": 1.5, "x": true}
            })),
            prev_hash: "ab".repeat(32),
            hash: String::new(),
        }
    }

    fn sparse() -> AuditEvent {
        AuditEvent {
            id: Uuid::from_u128(7),
            created_at: DbTime::from_micros(0),
            ..AuditEvent::new("vault", "unlock", "service")
        }
    }

    /// The hash format is what every stored chain was built with: a change here breaks
    /// the verification of every existing audit log. These values were computed by the
    /// first implementation; they must never change.
    #[test]
    fn the_canonical_form_and_hash_are_pinned() {
        let key = [7u8; 32];
        let pinned = [
            (
                full(),
                "77c87f26458d3157b2c59ed8a2a1e1a08f9408b46991c4ec1c6f53bee8d65aab",
                "14f0f3650ee7ebc2f1222bf19e497c717c238396408b513a3842835e0e8cab16",
            ),
            (
                sparse(),
                "b664149b5320068ec41770faff8683e1342cb12920b687de0ebe20b0c61c7c9e",
                "96bc6554c06be90a0ae50b9b0de1fa14e163ef557c98ef40721b1bd5804d4e6d",
            ),
        ];
        for (event, sha256, hmac) in pinned {
            let bytes = event.canonical();
            let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
            assert_eq!(
                hex::encode(digest),
                sha256,
                "canonical bytes of {}",
                event.action
            );
            assert_eq!(event.compute_hash(&key), hmac, "hash of {}", event.action);
        }
        // the chain hashes with a key scheduled once per batch: the same bytes
        let (chained, seq, head) = chain(vec![sparse(), full()], 41, "00".into(), &key);
        assert_eq!((seq, chained[1].seq), (43, 43));
        assert_eq!(chained[1].prev_hash, chained[0].hash);
        assert_eq!(head, chained[1].hash);
        for e in &chained {
            assert_eq!(e.hash, e.compute_hash(&key));
        }
    }
}
