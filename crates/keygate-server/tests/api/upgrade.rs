//! Upgrades (issue 11): a database created and filled at the first release's schema
//! (`tests/fixtures/schema_v1`, a frozen copy of `20261126000001_init.sql`) is migrated by
//! the current binary and keeps every credential usable and its audit chain valid; a
//! binary older than the database's schema refuses to start and names both versions.
//!
//! The fixture is written with raw SQL against the v1 columns and sealed with the crypto
//! functions directly, as a v1 server would have, not with today's storage code. If an
//! applied migration is ever edited, sqlx's checksum check fails this test.

use std::path::Path;
use std::str::FromStr;

use keygate_crypto::{seal_field, Dek, FieldAad, MasterKey, WrapContext};
use keygate_storage::{AuditEvent, DbTime, Json};
use serde_json::json;
use uuid::Uuid;

use crate::helpers::{self, Backend};

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/schema_v1");
const FIRST_VERSION: i64 = 20261126000001;
const API_KEY: &str = "v1-legacy-api-key-0000-ABCD";
const API_SECRET: &str = "v1-legacy-api-secret-never-in-plaintext";
const PASSPHRASE: &str = "v1-legacy-passphrase";

struct V1 {
    user: Uuid,
    credential: Uuid,
    events: usize,
}

/// Inserts one user, one sealed OKX credential and a short audit chain at schema v1.
macro_rules! fill_v1 {
    ($pool:expr, $master:expr) => {{
        let master: &MasterKey = $master;
        let now = DbTime::now();
        let user = Uuid::new_v4();
        let dek = Dek::generate();
        let ctx = WrapContext {
            user_id: user,
            dek_version: 1,
        };
        let wrapped = master.wrap_dek(1, &ctx, dek.expose_secret());
        sqlx::query("INSERT INTO keygate_meta (key, value) VALUES ($1, $2)")
            .bind(keygate_storage::META_KEY_CHECK)
            .bind(master.key_check_value())
            .execute($pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO user_keys (user_id, version, wrapped_dek, kek_version, protection, state, created_at, updated_at) VALUES ($1, 1, $2, 1, 'platform', 'active', $3, $3)")
            .bind(user)
            .bind(wrapped)
            .bind(now)
            .execute($pool)
            .await
            .unwrap();
        let credential = Uuid::now_v7();
        sqlx::query("INSERT INTO credentials (id, user_id, exchange, label, environment, status, key_type, api_key_hint, public_key, permissions, limits, current_generation, expires_at, usage_count, last_used_at, suspended_reason, row_version, created_at, updated_at) \
                     VALUES ($1, $2, 'okx', 'legacy', 'production', 'active', 'hmac', '…ABCD', NULL, $3, $4, 1, NULL, 0, NULL, NULL, 1, $5, $5)")
            .bind(credential)
            .bind(user)
            .bind(Json(json!(["read", "trade"])))
            .bind(Json(json!({"max_trade_usd": "500"})))
            .bind(now)
            .execute($pool)
            .await
            .unwrap();
        let secret_id = Uuid::now_v7();
        let seal = |field: &str, v: &str| {
            let aad = FieldAad {
                user_id: user,
                record_id: secret_id,
                field,
                key_version: 1,
            };
            seal_field(&dek, &aad, v.as_bytes())
        };
        sqlx::query("INSERT INTO credential_secrets (id, credential_id, user_id, generation, dek_version, api_key_ct, api_secret_ct, passphrase_ct, private_key_ct, status, rotated_from, grace_period_ends_at, last_nonce, created_at) \
                     VALUES ($1, $2, $3, 1, 1, $4, $5, $6, NULL, 'active', NULL, NULL, 0, $7)")
            .bind(secret_id)
            .bind(credential)
            .bind(user)
            .bind(seal("api_key", API_KEY))
            .bind(seal("api_secret", API_SECRET))
            .bind(seal("passphrase", PASSPHRASE))
            .bind(now)
            .execute($pool)
            .await
            .unwrap();
        let chain_key = master.derive_subkey("audit-chain/v1");
        let mut prev = "genesis".to_string();
        let actions = ["create", "read", "update"];
        for (i, action) in actions.iter().enumerate() {
            let mut e = AuditEvent {
                seq: i as i64 + 1,
                created_at: now,
                actor_id: Some(user),
                user_id: Some(user),
                credential_id: Some(credential),
                endpoint: Some("/v1/credentials".into()),
                http_method: Some("POST".into()),
                ip_address: Some("127.0.0.1".into()),
                status_code: Some(201),
                metadata: Json(json!({"label": "legacy"})),
                prev_hash: prev.clone(),
                ..AuditEvent::new("credential", action, "user")
            };
            e.hash = e.compute_hash(chain_key.as_bytes());
            sqlx::query("INSERT INTO audit_events (seq, id, created_at, category, action, actor_id, actor_role, user_id, credential_id, connection_id, endpoint, http_method, ip_address, user_agent, device_fingerprint, geo_country, geo_city, session_id, success, status_code, reason, risk_score, risk_reasons, metadata, prev_hash, hash) \
                         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21,$22,$23,$24,$25,$26)")
                .bind(e.seq).bind(e.id).bind(e.created_at).bind(e.category.clone()).bind(e.action.clone())
                .bind(e.actor_id).bind(e.actor_role.clone()).bind(e.user_id).bind(e.credential_id).bind(e.connection_id)
                .bind(e.endpoint.clone()).bind(e.http_method.clone()).bind(e.ip_address.clone()).bind(e.user_agent.clone())
                .bind(e.device_fingerprint.clone()).bind(e.geo_country.clone()).bind(e.geo_city.clone()).bind(e.session_id)
                .bind(e.success).bind(e.status_code).bind(e.reason.clone()).bind(e.risk_score)
                .bind(e.risk_reasons.clone()).bind(e.metadata.clone()).bind(e.prev_hash.clone()).bind(e.hash.clone())
                .execute($pool)
                .await
                .unwrap();
            prev = e.hash;
        }
        sqlx::query("UPDATE audit_head SET seq = $1, hash = $2 WHERE id = 1")
            .bind(actions.len() as i64)
            .bind(prev)
            .execute($pool)
            .await
            .unwrap();
        V1 {
            user,
            credential,
            events: actions.len(),
        }
    }};
}

/// A data dir with a master key file, and a database at schema v1 filled by [`fill_v1`].
async fn v1_database(backend: Backend) -> Option<(tempfile::TempDir, String, V1)> {
    let dir = tempfile::tempdir().unwrap();
    let master = MasterKey::generate();
    let key_path = dir.path().join("master.key");
    std::fs::write(
        &key_path,
        secrecy::ExposeSecret::expose_secret(&master.to_base64_secret()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let fixture = Path::new(FIXTURES).join(match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    });
    let migrator = sqlx::migrate::Migrator::new(fixture.as_path())
        .await
        .unwrap();
    assert_eq!(
        migrator.iter().map(|m| m.version).collect::<Vec<_>>(),
        vec![FIRST_VERSION]
    );
    let (url, v1) = match backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
            let opts = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
                .unwrap()
                .create_if_missing(true);
            let pool = sqlx::SqlitePool::connect_with(opts).await.unwrap();
            migrator.run(&pool).await.unwrap();
            let v1 = fill_v1!(&pool, &master);
            pool.close().await;
            (url, v1)
        }
        Backend::Postgres => {
            let url = helpers::fresh_pg_database(&helpers::pg_admin_url()?).await;
            let pool = sqlx::PgPool::connect(&url).await.unwrap();
            migrator.run(&pool).await.unwrap();
            let v1 = fill_v1!(&pool, &master);
            pool.close().await;
            (url, v1)
        }
    };
    Some((dir, url, v1))
}

async fn upgrade_keeps_credentials_and_chain(backend: Backend) {
    let Some((dir, url, v1)) = v1_database(backend).await else {
        eprintln!("NOT RUN: needs PostgreSQL");
        return;
    };
    let store = keygate_storage::Store::connect(&url).await.unwrap();
    assert_eq!(store.applied_schema_version().await.unwrap(), FIRST_VERSION);
    let latest = store.binary_schema_version();
    store.close().await;
    // The current binary starts on it: migrations run, the key check passes.
    let app = helpers::start(dir, url.clone(), backend).await;
    let store = keygate_storage::Store::connect(&url).await.unwrap();
    assert_eq!(store.applied_schema_version().await.unwrap(), latest);
    store.close().await;
    let (s, v) = app
        .post(
            &format!("/v1/credentials/{}/reveal", v1.credential),
            &app.service_token(v1.user),
            json!({}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["api_key"], API_KEY);
    assert_eq!(v["api_secret"], API_SECRET);
    assert_eq!(v["passphrase"], PASSPHRASE);
    let (s, c) = app
        .get(
            &format!("/v1/credentials/{}", v1.credential),
            &app.token(v1.user),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(c["limits"]["max_trade_usd"], "500");
    let (s, r) = app
        .get("/v1/audit/verify", &app.admin_token(Uuid::new_v4()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(r["ok"], true, "{r}");
    assert!(r["events_checked"].as_i64().unwrap() > v1.events as i64);
    // The chain continues past the v1 events, and the upgraded data backs up.
    let work = tempfile::tempdir().unwrap();
    let cfg = helpers::test_config(app.data_dir.path().to_path_buf(), url);
    keygate_server::backup::backup_to_file(&cfg, &work.path().join("b"))
        .await
        .expect("the upgraded database backs up");
}

#[tokio::test]
async fn upgrade_from_v1_sqlite() {
    upgrade_keeps_credentials_and_chain(Backend::Sqlite).await;
}

#[tokio::test]
async fn upgrade_from_v1_postgres() {
    upgrade_keeps_credentials_and_chain(Backend::Postgres).await;
}

// A database migrated by a newer keygate: start, migrate and backup refuse, naming both
// schema versions; a backup from a newer schema is refused before anything is written.
crate::both_backends!(
    newer_schema_is_refused,
    |app: helpers::TestApp| async move {
        let future: i64 = 29991231000000;
        let work = tempfile::tempdir().unwrap();
        let file = work.path().join("ok.kgbak");
        let cfg = helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
        let binary = keygate_storage::Store::connect(&app.database_url)
            .await
            .unwrap()
            .binary_schema_version();
        keygate_server::backup::backup_to_file(&cfg, &file)
            .await
            .unwrap();

        // A backup claiming a newer schema (checksum recomputed, so only the version differs).
        let text = std::fs::read_to_string(&file).unwrap();
        let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
        let mut h: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
        h["schema_version"] = json!(future);
        lines[0] = h.to_string();
        let body: String = lines[..lines.len() - 1]
            .iter()
            .map(|l| format!("{l}\n"))
            .collect();
        let mut t: serde_json::Value = serde_json::from_str(lines.last().unwrap()).unwrap();
        use sha2::Digest;
        t["sha256"] = json!(hex::encode(sha2::Sha256::digest(body.as_bytes())));
        let newer = work.path().join("newer.kgbak");
        std::fs::write(&newer, format!("{body}{t}\n")).unwrap();
        let target = tempfile::tempdir().unwrap();
        std::fs::copy(
            app.data_dir.path().join("master.key"),
            target.path().join("master.key"),
        )
        .unwrap();
        let target_url = format!("sqlite://{}", target.path().join("t.db").display());
        let err = keygate_server::backup::restore_from_file(
            &helpers::test_config(target.path().to_path_buf(), target_url),
            &newer,
        )
        .await
        .expect_err("refuses a newer backup");
        let msg = err.to_string();
        assert!(
            msg.contains(&future.to_string()) && msg.contains(&binary.to_string()),
            "{msg}"
        );

        // The database itself moves ahead of this binary.
        let store = keygate_storage::Store::connect(&app.database_url)
            .await
            .unwrap();
        let binary = store.binary_schema_version();
        store.close().await;
        let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, 'from the future', TRUE, $2, 0)";
        match app.backend {
            Backend::Sqlite => {
                let pool = sqlx::SqlitePool::connect(&app.database_url).await.unwrap();
                sqlx::query(sql)
                    .bind(future)
                    .bind(vec![0u8; 48])
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
                sqlx::query(sql)
                    .bind(future)
                    .bind(vec![0u8; 48])
                    .execute(&pool)
                    .await
                    .unwrap();
                pool.close().await;
            }
        }
        let err = keygate_server::Application::build(cfg.clone())
            .await
            .err()
            .expect("an older binary refuses to start");
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("database {future}"))
                && msg.contains(&format!("binary {binary}")),
            "{msg}"
        );
        let err = keygate_server::backup::backup_to_file(&cfg, &work.path().join("x"))
            .await
            .expect_err("backup refuses a schema it does not know");
        assert!(err.to_string().contains(&future.to_string()), "{err}");
    }
);
