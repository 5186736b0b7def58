//! OpenBao Transit as the server's key provider (`KEYGATE_KEY_PROVIDER=openbao`) against a
//! real `bao server -dev`: no local master key, credentials stored and used through the
//! gateway, a restart, no plaintext DEK or root in the database, `keygate master-key
//! rotate` through Transit, the provider a database was created with enforced both ways,
//! another Transit key refused, and an outage failing closed (503, refusal to start).

use base64::Engine as _;
use keygate_server::{Config, KeyProviderKind};
use keygate_storage::{Actor, META_KEY_CHECK};
use secrecy::SecretString;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::bao::{bao_binary, BaoServer};
use crate::both_backends;
use crate::gateway::{binance_connection, call, mock};
use crate::helpers::{self, Backend, TestApp};

fn with_openbao(addr: String, token: String, key: &'static str) -> impl FnOnce(&mut Config) {
    move |c: &mut Config| {
        c.key_provider = KeyProviderKind::OpenBao;
        c.openbao_addr = Some(addr);
        c.openbao_token = Some(SecretString::from(token));
        c.openbao_key = key.into();
    }
}

async fn stop(app: TestApp) -> (tempfile::TempDir, String) {
    let (data_dir, database_url, _) = app.stop().await;
    (data_dir, database_url)
}

/// The database's bytes at rest: the SQLite files, or a pg_dump.
fn at_rest(app: &TestApp) -> Vec<u8> {
    match app.backend {
        Backend::Sqlite => {
            let mut out = Vec::new();
            for f in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
                if let Ok(b) = std::fs::read(app.data_dir.path().join(f)) {
                    out.extend(b);
                }
            }
            out
        }
        Backend::Postgres => {
            let out = std::process::Command::new("pg_dump")
                .arg(&app.database_url)
                .output()
                .expect("pg_dump runs");
            assert!(out.status.success());
            out.stdout
        }
    }
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

async fn proxied(app: &TestApp, token: &str, conn: &str) -> (u16, String) {
    let (s, _, body) = call(
        app,
        token,
        reqwest::Method::GET,
        conn,
        "api/v3/account",
        None,
    )
    .await;
    (s, body)
}

#[tokio::test]
async fn openbao_provider_sqlite() {
    openbao_provider(Backend::Sqlite).await;
}

#[tokio::test]
async fn openbao_provider_postgres() {
    openbao_provider(Backend::Postgres).await;
}

async fn openbao_provider(backend: Backend) {
    let Some(bin) = bao_binary("openbao_provider") else {
        return;
    };
    let data_dir = tempfile::tempdir().unwrap();
    let Some(url) = helpers::fresh_database_url(backend, data_dir.path()).await else {
        eprintln!("NOT RUN: PostgreSQL test needs KEYGATE_TEST_DATABASE_URL");
        return;
    };
    let mut bao = BaoServer::start(&bin).await;
    let (addr, token) = (bao.addr.clone(), bao.token.clone());
    let cfg = |key: &'static str| with_openbao(addr.clone(), token.clone(), key);

    // First start over an empty database: keygate creates the Transit key and a root
    // that is stored only wrapped by it; no local master key exists.
    let app = helpers::start_with(data_dir, url, backend, cfg("keygate")).await;
    assert!(!app.data_dir.path().join("master.key").exists());
    assert_eq!(app.state.keyring.provider.name(), "openbao-transit");
    let store = app.state.store.clone();
    assert_eq!(
        store.meta_get("key_provider").await.unwrap().as_deref(),
        Some("openbao")
    );
    let b64 = base64::engine::general_purpose::STANDARD;
    let root_wrapped = b64
        .decode(
            store
                .meta_get(keygate_server::master_key::META_DERIVATION_ROOT)
                .await
                .unwrap()
                .unwrap(),
        )
        .unwrap();
    assert!(root_wrapped.starts_with(b"vault:v1:"));
    assert!(store
        .meta_get(META_KEY_CHECK)
        .await
        .unwrap()
        .unwrap()
        .starts_with("transit-hmac:vault:v1:"));

    // Credentials stored and used through the gateway (the mock checks the signature).
    let mock = mock().await;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (ta, tb) = (app.token(a), app.token(b));
    let conn_a = binance_connection(&app, &ta, &mock, json!(["read"]), json!({})).await;
    let conn_b = binance_connection(&app, &tb, &mock, json!(["read"]), json!({})).await;
    for (t, c) in [(&ta, &conn_a), (&tb, &conn_b)] {
        let (s, body) = proxied(&app, t, c).await;
        assert_eq!(s, 200, "{body}");
    }
    assert_eq!(mock.count_verified(), 2);

    // At rest: DEKs are Transit ciphertexts; neither a DEK nor the root, raw or base64,
    // is anywhere in the database.
    let provider = app.state.keyring.provider.clone();
    let mut needles = Vec::new();
    for u in [a, b] {
        let rec = store
            .active_user_key(Actor::user(u), u)
            .await
            .unwrap()
            .unwrap();
        let wrapped = rec.wrapped_dek.unwrap();
        assert!(wrapped.starts_with(b"vault:v1:"));
        let dek = provider
            .unwrap(
                &keygate_crypto::WrapContext {
                    user_id: u,
                    dek_version: 1,
                },
                &wrapped,
            )
            .await
            .unwrap();
        assert_eq!(dek.len(), 32);
        needles.push(dek.to_vec());
    }
    let root_ctx = keygate_crypto::WrapContext {
        user_id: Uuid::nil(),
        dek_version: 0,
    };
    needles.push(
        provider
            .unwrap(&root_ctx, &root_wrapped)
            .await
            .unwrap()
            .to_vec(),
    );
    let hay = at_rest(&app);
    assert!(!hay.is_empty());
    for n in &needles {
        assert!(!contains(&hay, n), "plaintext key at rest");
        assert!(
            !contains(&hay, b64.encode(n).as_bytes()),
            "base64 key at rest"
        );
    }

    // A restart reads everything again through Transit.
    let (data_dir, url) = stop(app).await;
    let app = helpers::start_with(data_dir, url.clone(), backend, cfg("keygate")).await;
    let (s, body) = proxied(&app, &ta, &conn_a).await;
    assert_eq!(s, 200, "{body}");
    let (s, v) = app
        .post(
            &format!(
                "/v1/credentials/{}/reveal",
                store_credential(&app, a, &conn_a).await
            ),
            &app.service_token(a),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["api_secret"].as_str()),
        (200, Some(crate::API_SECRET))
    );

    // The database is tied to its provider and its Transit key: another key, or the
    // local provider, is refused with a clear reason and nothing is generated.
    assert!(bao
        .admin(
            reqwest::Method::POST,
            "transit/keys/other",
            r#"{"type":"aes256-gcm96","derived":true}"#,
        )
        .await
        .is_success());
    let dir = app.data_dir.path().to_path_buf();
    let mut other = helpers::test_config(dir.clone(), url.clone());
    cfg("other")(&mut other);
    let err = keygate_server::prepare(other).await.err().expect("refused");
    assert!(
        err.to_string().contains("does not match this database"),
        "{err}"
    );
    let local = helpers::test_config(dir.clone(), url.clone());
    let err = keygate_server::prepare(local).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("created with the openbao key provider"),
        "{err}"
    );
    assert!(!dir.join("master.key").exists());

    // `keygate master-key rotate`: Transit rotates the key, every DEK and the root are
    // rewrapped inside it (resumable), reads go on, the audit chain still verifies.
    let r = keygate_server::master_key::rotate(&app.state, 1, Some(1))
        .await
        .unwrap();
    assert_eq!((r.rewrapped, r.complete), (1, false));
    let (s, _) = proxied(&app, &tb, &conn_b).await;
    assert_eq!(s, 200);
    let r = keygate_server::master_key::rotate(&app.state, 1, None)
        .await
        .unwrap();
    assert_eq!(
        (r.rewrapped, r.complete),
        (1, true),
        "resumed, not rotated again"
    );
    for u in [a, b] {
        let rec = store
            .active_user_key(Actor::user(u), u)
            .await
            .unwrap()
            .unwrap();
        assert!(rec.wrapped_dek.unwrap().starts_with(b"vault:v2:"));
        assert_eq!(rec.kek_version, 2);
    }
    let root2 = store
        .meta_get(keygate_server::master_key::META_DERIVATION_ROOT)
        .await
        .unwrap()
        .unwrap();
    assert!(b64.decode(root2).unwrap().starts_with(b"vault:v2:"));
    for u in [a, b] {
        app.state.keyring.evict(u);
    }
    for (t, c) in [(&ta, &conn_a), (&tb, &conn_b)] {
        let (s, body) = proxied(&app, t, c).await;
        assert_eq!(s, 200, "{body}");
    }
    let chain = store
        .verify_audit_chain(app.state.chain_key.as_ref())
        .await
        .unwrap();
    assert!(chain.ok, "{chain:?}");
    // and a restart after the rotation still opens the database
    let (data_dir, url) = stop(app).await;
    let app = helpers::start_with(data_dir, url.clone(), backend, cfg("keygate")).await;
    let (s, body) = proxied(&app, &ta, &conn_a).await;
    assert_eq!(s, 200, "{body}");

    // A backup restores into a fresh database under the same Transit key (checked
    // against the backup's key-check value before anything is written), and serves.
    let backup = app.data_dir.path().join("openbao.kgbak");
    let src = helpers::test_config(app.data_dir.path().to_path_buf(), url.clone());
    keygate_server::backup::backup_to_file(&src, &backup)
        .await
        .unwrap();
    let dst_dir = tempfile::tempdir().unwrap();
    let dst_url = helpers::fresh_database_url(backend, dst_dir.path())
        .await
        .unwrap();
    let mut wrong = helpers::test_config(dst_dir.path().to_path_buf(), dst_url.clone());
    cfg("other")(&mut wrong);
    let err = keygate_server::backup::restore_from_file(&wrong, &backup)
        .await
        .expect_err("another Transit key is refused");
    assert!(err.to_string().contains("nothing was written"), "{err}");
    let mut dst = helpers::test_config(dst_dir.path().to_path_buf(), dst_url.clone());
    cfg("keygate")(&mut dst);
    let r = keygate_server::backup::restore_from_file(&dst, &backup)
        .await
        .unwrap();
    assert!(r.audit.ok, "{:?}", r.audit);
    let restored = helpers::start_with(dst_dir, dst_url, backend, cfg("keygate")).await;
    let (s, body) = proxied(&restored, &ta, &conn_a).await;
    assert_eq!(s, 200, "{body}");

    // OpenBao goes away: a call needing a DEK not in the cache fails closed with a 503
    // problem (never reaching the exchange), and keygate refuses to start.
    let before = mock.count_verified();
    bao.stop();
    let (s, body) = proxied(&app, &tb, &conn_b).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (503, "key_provider_unavailable"),
        "{body}"
    );
    assert_eq!(mock.count_verified(), before);
    let (s, p) = app
        .post(
            "/v1/credentials",
            &app.token(Uuid::new_v4()),
            crate::binance_body("new-user"),
        )
        .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (503, Some("key_provider_unavailable"))
    );
    let mut down = helpers::test_config(app.data_dir.path().to_path_buf(), url);
    cfg("keygate")(&mut down);
    let err = keygate_server::prepare(down).await.err().expect("refused");
    assert!(
        err.to_string().contains("unreachable") && err.to_string().contains("refusing to start"),
        "{err}"
    );
}

/// The credential behind a connection.
async fn store_credential(app: &TestApp, user: Uuid, conn: &str) -> String {
    let (s, c) = app
        .get(&format!("/v1/connections/{conn}"), &app.token(user))
        .await;
    assert_eq!(s, 200);
    c["credential_id"].as_str().unwrap().to_string()
}

// A database created under the local provider is never opened under openbao (before any
// KMS is contacted), and keeps working under local.
both_backends!(local_database_refuses_openbao, |app: TestApp| async move {
    let user = Uuid::new_v4();
    let (s, _) = app
        .post(
            "/v1/credentials",
            &app.token(user),
            crate::binance_body("l"),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        app.state
            .store
            .meta_get("key_provider")
            .await
            .unwrap()
            .as_deref(),
        Some("local")
    );
    let mut cfg = helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
    with_openbao("http://127.0.0.1:1".into(), "unused".into(), "keygate")(&mut cfg);
    let err = keygate_server::prepare(cfg).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("created with the local key provider")
            && err.to_string().contains("KEYGATE_KEY_PROVIDER=openbao"),
        "{err}"
    );
    // a database from before the setting (no key_provider row) is local too
    app.raw_exec("DELETE FROM keygate_meta WHERE key = 'key_provider'")
        .await
        .unwrap();
    let mut cfg = helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
    with_openbao("http://127.0.0.1:1".into(), "unused".into(), "keygate")(&mut cfg);
    let err = keygate_server::prepare(cfg).await.err().expect("refused");
    assert!(
        err.to_string()
            .contains("created with the local key provider"),
        "{err}"
    );
    let (s, v) = app
        .post(
            &format!(
                "/v1/credentials/{}/reveal",
                app.get("/v1/credentials", &app.token(user)).await.1["items"][0]["id"]
                    .as_str()
                    .unwrap()
            ),
            &app.service_token(user),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["api_secret"].as_str()),
        (200, Some(crate::API_SECRET))
    );
});

/// A first start that fails under one provider (OpenBao unreachable) does not bind the
/// empty database to it: the other provider may still create it.
async fn failed_first_start_binds_nothing(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(url) = helpers::fresh_database_url(backend, dir.path()).await else {
        eprintln!("NOT RUN: PostgreSQL test needs KEYGATE_TEST_DATABASE_URL");
        return;
    };
    let mut cfg = helpers::test_config(dir.path().to_path_buf(), url.clone());
    with_openbao("http://127.0.0.1:1".into(), "unused".into(), "keygate")(&mut cfg);
    let err = keygate_server::prepare(cfg).await.err().expect("refused");
    assert!(
        err.to_string().contains("unreachable") && err.to_string().contains("refusing to start"),
        "{err}"
    );
    let app = helpers::start(dir, url, backend).await;
    let (s, _) = app
        .post(
            "/v1/credentials",
            &app.token(Uuid::new_v4()),
            crate::binance_body("x"),
        )
        .await;
    assert_eq!(s, 201);
    assert_eq!(
        app.state
            .store
            .meta_get("key_provider")
            .await
            .unwrap()
            .as_deref(),
        Some("local")
    );
}

#[tokio::test]
async fn failed_first_start_binds_nothing_sqlite() {
    failed_first_start_binds_nothing(Backend::Sqlite).await;
}

#[tokio::test]
async fn failed_first_start_binds_nothing_postgres() {
    failed_first_start_binds_nothing(Backend::Postgres).await;
}
