//! The gateway's group commit on its own: `Store::record_batch_owned` with batches of the
//! rows one proxied call writes (an `api_calls` row and a chained audit event), on a
//! SQLite file in a temp dir, and on PostgreSQL when `KEYGATE_BENCH_DATABASE_URL` names an
//! admin URL (a fresh database is created and dropped).
//!
//! This is the writer's cost per call without the HTTP stack around it, so a change to the
//! writer (schema, statements, checkpoints) can be measured apart from the end-to-end
//! noise of `bench/run.sh`. Batches of 16 are about what 32 connections produce.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use keygate_storage::{
    Actor, ApiCallRecord, AuditEvent, ConnectionRecord, CredentialRecord, DbTime, Json,
    SecretRecord, Store,
};
use uuid::Uuid;

struct Fixture {
    store: Store,
    user: Uuid,
    credential: Uuid,
    connection: Uuid,
}

async fn fixture(url: &str) -> Fixture {
    let store = Store::connect(url).await.expect("connect");
    store.migrate().await.expect("migrate");
    let user = Uuid::now_v7();
    let actor = Actor::user(user);
    let now = DbTime::now();
    let credential = CredentialRecord {
        id: Uuid::now_v7(),
        user_id: user,
        exchange: "binance".into(),
        label: "bench".into(),
        environment: "production".into(),
        status: "active".into(),
        key_type: "hmac".into(),
        api_key_hint: None,
        public_key: None,
        permissions: Json(vec!["read".into(), "trade".into()]),
        limits: Json(serde_json::json!({})),
        current_generation: 1,
        expires_at: None,
        usage_count: 0,
        last_used_at: None,
        suspended_reason: None,
        row_version: 1,
        created_at: now,
        updated_at: now,
    };
    let secret = SecretRecord {
        id: Uuid::now_v7(),
        credential_id: credential.id,
        user_id: user,
        generation: 1,
        dek_version: 1,
        api_key_ct: Some(vec![1; 64]),
        api_secret_ct: Some(vec![2; 64]),
        passphrase_ct: None,
        private_key_ct: None,
        status: "active".into(),
        rotated_from: None,
        grace_period_ends_at: None,
        last_nonce: 0,
        created_at: now,
    };
    // secrets are stored only under the user's active data-key version
    store
        .insert_first_user_key(
            actor,
            &keygate_storage::UserKeyRecord {
                user_id: user,
                version: 1,
                wrapped_dek: Some(vec![3; 60]),
                kek_version: 1,
                protection: "platform".into(),
                state: "active".into(),
                created_at: now,
                updated_at: now,
            },
        )
        .await
        .expect("user key");
    store
        .create_credential(actor, &credential, &secret)
        .await
        .expect("credential");
    let connection = ConnectionRecord {
        id: Uuid::now_v7(),
        user_id: user,
        name: "bench".into(),
        exchange: "binance".into(),
        credential_id: credential.id,
        base_url: None,
        timeout_ms: 5000,
        max_retries: 0,
        is_default: false,
        is_enabled: true,
        status: "active".into(),
        scopes: None,
        limits: Json(serde_json::json!({})),
        tags: Json(vec![]),
        metadata: Json(serde_json::json!({})),
        last_successful_ping: None,
        last_error_message: None,
        error_count: 0,
        warnings: Json(vec![]),
        last_verified_at: None,
        verification_status: "unverified".into(),
        row_version: 1,
        created_at: now,
        updated_at: now,
    };
    store
        .create_connection(actor, &connection)
        .await
        .expect("connection");
    Fixture {
        store,
        user,
        credential: credential.id,
        connection: connection.id,
    }
}

/// The rows `gateway::finish` writes for one allowed signed call.
fn rows(f: &Fixture) -> (ApiCallRecord, AuditEvent) {
    let now = DbTime::now();
    let ua = "python-requests/2.32 ccxt/4.4".to_string();
    let call = ApiCallRecord {
        id: Uuid::now_v7(),
        connection_id: f.connection,
        credential_id: f.credential,
        user_id: f.user,
        method: "GET".into(),
        endpoint: "/api/v3/account".into(),
        class: "read".into(),
        decision: "allowed".into(),
        deny_code: None,
        status_code: Some(200),
        response_time_ms: Some(1),
        success: true,
        error_message: None,
        rate_limit_remaining: Some(5999),
        rate_limit_reset: None,
        rate_limit_used: Some(1),
        notional_usd_micros: 0,
        withdrawal_usd_micros: 0,
        ip_address: Some("127.0.0.1".into()),
        user_agent: Some(ua.clone()),
        session_id: None,
        created_at: now,
        reserved: None,
    };
    let event = AuditEvent {
        actor_id: Some(f.user),
        user_id: Some(f.user),
        credential_id: Some(f.credential),
        connection_id: Some(f.connection),
        endpoint: Some("/api/v3/account".into()),
        http_method: Some("GET".into()),
        ip_address: Some("127.0.0.1".into()),
        user_agent: Some(ua),
        status_code: Some(200),
        metadata: Json(
            serde_json::json!({"exchange": "binance", "class": "read", "decision": "allowed"}),
        ),
        ..AuditEvent::new("gateway", "use", "user")
    };
    (call, event)
}

fn record(c: &mut Criterion, backend: &str, url: &str) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let f = rt.block_on(fixture(url));
    let key = [7u8; 32];
    let mut g = c.benchmark_group(format!("record_batch/{backend}"));
    for n in [1usize, 16, 32] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, &n| {
            b.iter(|| {
                let (calls, events) = (0..n).map(|_| rows(&f)).unzip();
                rt.block_on(f.store.record_batch_owned(calls, events, &key))
                    .expect("record");
            })
        });
    }
    g.finish();
    rt.block_on(f.store.close());
}

fn benches(c: &mut Criterion) {
    let dir = std::env::temp_dir().join(format!("keygate-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let url = format!("sqlite://{}", dir.join("bench.db").display());
    record(c, "sqlite", &url);
    let _ = std::fs::remove_dir_all(&dir);

    if let Ok(admin) = std::env::var("KEYGATE_BENCH_DATABASE_URL") {
        let rt = tokio::runtime::Runtime::new().unwrap();
        let db = rt
            .block_on(keygate_storage::scratch::create(&admin, "keygate_bench"))
            .expect("create the bench database");
        record(c, "postgres", &db.url);
        rt.block_on(db.drop());
    }
}

criterion_group! {
    name = group;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = benches
}
criterion_main!(group);
