//! Backup and restore (issue 11): a snapshot taken under load restores into SQLite and
//! PostgreSQL with every secret opening as before and the audit chain intact; bad files,
//! wrong keys and non-empty targets are refused with nothing written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use keygate_server::backup::{backup_to_file, restore_from_file};
use keygate_storage::{Actor, RawTable, Store};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{self, Backend, TestApp};

const PASSWORD: &str = "restore drill password";

/// A new, empty target: a data dir holding a copy of `key_from`'s master key, and a
/// database URL (a fresh PostgreSQL database, or a SQLite file not yet created).
async fn fresh_target(backend: Backend, key_from: &Path) -> Option<(tempfile::TempDir, String)> {
    let dir = tempfile::tempdir().unwrap();
    let url = match backend {
        Backend::Sqlite => format!("sqlite://{}", dir.path().join("keygate.db").display()),
        Backend::Postgres => helpers::fresh_pg_database(&helpers::pg_admin_url()?).await,
    };
    let key = dir.path().join("master.key");
    std::fs::copy(key_from.join("master.key"), &key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    Some((dir, url))
}

fn backup_path(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

/// The row lines of a backup file (everything between header and trailer).
fn row_lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    lines[1..lines.len() - 1]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

fn header(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap();
    serde_json::from_str(text.lines().next().unwrap()).unwrap()
}

async fn table_counts(url: &str) -> Vec<i64> {
    let store = Store::connect(url).await.unwrap();
    let mut out = Vec::new();
    for t in [
        RawTable::Credentials,
        RawTable::CredentialSecrets,
        RawTable::Connections,
        RawTable::UserKeys,
        RawTable::AuditEvents,
        RawTable::ApiCalls,
    ] {
        out.push(store.count_rows_as(Actor::service(), t).await.unwrap());
    }
    store.close().await;
    out
}

async fn schema_version(url: &str) -> i64 {
    let store = Store::connect(url).await.unwrap();
    let v = store.applied_schema_version().await.unwrap();
    store.close().await;
    v
}

/// Reveals every credential of `user` and returns label → api_secret.
async fn reveal_all(app: &TestApp, user: Uuid) -> BTreeMap<String, (String, Option<String>)> {
    let (s, list) = app.get("/v1/credentials?limit=200", &app.token(user)).await;
    assert_eq!(s, 200, "{list}");
    let mut out = BTreeMap::new();
    for c in list["items"].as_array().unwrap() {
        let id = c["id"].as_str().unwrap();
        let (s, v) = app
            .post(
                &format!("/v1/credentials/{id}/reveal"),
                &app.service_token(user),
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        out.insert(
            c["label"].as_str().unwrap().to_string(),
            (
                v["api_secret"].as_str().unwrap().to_string(),
                v["passphrase"].as_str().map(str::to_string),
            ),
        );
    }
    out
}

async fn audit_ok(app: &TestApp) -> i64 {
    let (s, v) = app
        .get("/v1/audit/verify", &app.admin_token(Uuid::new_v4()))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["ok"], true, "{v}");
    v["events_checked"].as_i64().unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// SQLite under load → backup → PostgreSQL → backup → SQLite: rows identical at every
/// hop, every credential opens to the same secret, the chain verifies and continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_under_load_restores_into_postgres_and_back() {
    let Some(pg_admin) = helpers::pg_admin_url() else {
        eprintln!("NOT RUN: needs PostgreSQL");
        return;
    };
    let _ = pg_admin;
    let app = Arc::new(helpers::spawn_app(Backend::Sqlite).await.unwrap());
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let (ta, tb) = (app.token(a), app.token(b));
    let mut expected: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    let mut plaintexts: Vec<String> = vec![PASSWORD.into()];
    let secret = |tag: &str| format!("PLAIN-{tag}-{}", Uuid::new_v4().simple());

    let (k1, s1, s1b) = (secret("key1"), secret("sec1"), secret("sec1-rotated"));
    let (s, c) = app.post("/v1/credentials", &ta, json!({"exchange": "binance", "label": "bin", "api_key": k1, "api_secret": s1, "permissions": ["read", "trade"], "limits": {"max_trade_usd": "500"}})).await;
    assert_eq!(s, 201, "{c}");
    let bin_id = c["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post(
            &format!("/v1/credentials/{bin_id}/rotate"),
            &ta,
            json!({"api_key": k1, "api_secret": s1b, "grace_period_seconds": 3600}),
        )
        .await;
    assert_eq!(s, 200);
    expected.insert("bin".into(), (s1b.clone(), None));
    let (k2, s2, p2) = (secret("key2"), secret("sec2"), secret("pass2"));
    let (s, _) = app.post("/v1/credentials", &ta, json!({"exchange": "okx", "label": "okx", "api_key": k2, "api_secret": s2, "passphrase": p2})).await;
    assert_eq!(s, 201);
    expected.insert("okx".into(), (s2.clone(), Some(p2.clone())));
    let (s, conn) = app.post("/v1/connections", &ta, json!({"name": "main", "exchange": "binance", "credential_id": bin_id, "tags": ["x"], "limits": {"max_requests_per_minute": 10}})).await;
    assert_eq!(s, 201, "{conn}");
    // user B: a password vault, unlocked while the backup runs
    let (k3, s3) = (secret("key3"), secret("sec3"));
    let (s, _) = app
        .post(
            "/v1/credentials",
            &tb,
            json!({"exchange": "binance", "label": "b1", "api_key": k3, "api_secret": s3}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, st) = app
        .post("/v1/vault/setup", &tb, json!({"password": PASSWORD}))
        .await;
    assert_eq!((s, st["unlocked"].as_bool()), (200, Some(true)));
    plaintexts.extend([k1, s1, s1b, k2, s2, p2, k3, s3.clone()]);
    let (_, seeded_bin) = app.get(&format!("/v1/credentials/{bin_id}"), &ta).await;

    // Load: credentials created through the API while the backup runs.
    let created = Arc::new(AtomicUsize::new(0));
    let load_secrets: Vec<String> = (0..30).map(|i| secret(&format!("load{i}"))).collect();
    let load = {
        let (app, created, ta, load_secrets) = (
            app.clone(),
            created.clone(),
            ta.clone(),
            load_secrets.clone(),
        );
        tokio::spawn(async move {
            for (i, s) in load_secrets.iter().enumerate() {
                let (st, v) = app.post("/v1/credentials", &ta, json!({"exchange": "bybit", "label": format!("load-{i}"), "api_key": format!("KEY-{s}"), "api_secret": s})).await;
                assert_eq!(st, 201, "{v}");
                created.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    while created.load(Ordering::SeqCst) < 5 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let work = tempfile::tempdir().unwrap();
    let f1 = backup_path(work.path(), "one.kgbak");
    let cfg = helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
    let sum1 = backup_to_file(&cfg, &f1).await.expect("backup under load");
    let created_at_backup = created.load(Ordering::SeqCst);
    load.await.unwrap();
    for (i, s) in load_secrets.iter().enumerate() {
        plaintexts.push(s.clone());
        expected.insert(format!("load-{i}"), (s.clone(), None));
    }
    eprintln!(
        "backup under load: {} rows, {} load credentials created before it finished",
        sum1.total_rows, created_at_backup
    );
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&f1).unwrap().permissions().mode() & 0o777,
        0o600
    );

    // No plaintext secret, no master key, no token secret, no unlock session in the file.
    let bytes = std::fs::read(&f1).unwrap();
    for p in &plaintexts {
        assert!(!contains(&bytes, p.as_bytes()), "plaintext in backup");
    }
    let key_b64 = std::fs::read_to_string(app.data_dir.path().join("master.key")).unwrap();
    let key_b64 = key_b64.trim();
    assert!(!contains(&bytes, key_b64.as_bytes()), "master key (base64)");
    let raw = keygate_crypto::MasterKey::from_base64(key_b64).unwrap();
    let raw = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(secrecy::ExposeSecret::expose_secret(
                &raw.to_base64_secret(),
            ))
            .unwrap()
    };
    assert!(!contains(&bytes, &raw), "master key (raw)");
    assert!(
        !contains(&bytes, hex_lower(&raw).as_bytes()),
        "master key (hex)"
    );
    assert!(!contains(
        &bytes,
        secrecy::ExposeSecret::expose_secret(&app.jwt_secret).as_bytes()
    ));
    assert!(!contains(&bytes, b"{\"table\":\"vault_sessions\""));
    let h = header(&f1);
    assert_eq!(h["format_version"], 1);
    assert_eq!(h["source_backend"], "sqlite");
    assert!(h["not_included"]
        .as_array()
        .unwrap()
        .contains(&json!("vault_sessions")));
    let creds_in_backup = h["tables"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "credentials")
        .unwrap()["rows"]
        .as_i64()
        .unwrap();
    assert!(creds_in_backup >= 3 + 5, "{creds_in_backup}");

    // SQLite → PostgreSQL
    let (pg_dir, pg_url) = fresh_target(Backend::Postgres, app.data_dir.path())
        .await
        .unwrap();
    let pg_cfg = helpers::test_config(pg_dir.path().to_path_buf(), pg_url.clone());
    let r = restore_from_file(&pg_cfg, &f1)
        .await
        .expect("restore into PostgreSQL");
    assert!(r.audit.ok, "{:?}", r.audit);
    assert_eq!(r.restored.total_rows, sum1.total_rows);
    let f2 = backup_path(work.path(), "two.kgbak");
    backup_to_file(&pg_cfg, &f2)
        .await
        .expect("backup from PostgreSQL");
    assert_eq!(header(&f2)["source_backend"], "postgres");
    assert_eq!(
        row_lines(&f1),
        row_lines(&f2),
        "SQLite → PostgreSQL is exact"
    );

    // PostgreSQL → SQLite
    let (sq_dir, sq_url) = fresh_target(Backend::Sqlite, pg_dir.path()).await.unwrap();
    let sq_cfg = helpers::test_config(sq_dir.path().to_path_buf(), sq_url.clone());
    let r = restore_from_file(&sq_cfg, &f2)
        .await
        .expect("restore into SQLite");
    assert!(r.audit.ok, "{:?}", r.audit);
    let f3 = backup_path(work.path(), "three.kgbak");
    backup_to_file(&sq_cfg, &f3)
        .await
        .expect("backup of the restored SQLite");
    assert_eq!(
        row_lines(&f2),
        row_lines(&f3),
        "PostgreSQL → SQLite is exact"
    );

    // Both restored databases serve every credential of the snapshot with its secret.
    for (dir, url, backend) in [
        (pg_dir, pg_url, Backend::Postgres),
        (sq_dir, sq_url, Backend::Sqlite),
    ] {
        let app2 = helpers::start(dir, url, backend).await;
        let got = reveal_all(&app2, a).await;
        assert_eq!(got.len() as i64, creds_in_backup - 1, "{backend:?}");
        for (label, v) in &got {
            assert_eq!(Some(v), expected.get(label), "{backend:?} {label}");
        }
        let (_, bin) = app2
            .get(&format!("/v1/credentials/{bin_id}"), &app2.token(a))
            .await;
        assert_eq!(
            bin, seeded_bin,
            "metadata, generation, version and times unchanged"
        );
        let (_, conns) = app2.get("/v1/connections", &app2.token(a)).await;
        assert_eq!(conns["items"][0]["id"], conn["id"]);
        // B's vault comes back locked (sessions are not backed up) and opens with the password.
        let tb2 = app2.token(b);
        let (_, list) = app2.get("/v1/credentials", &tb2).await;
        let b1 = list["items"][0]["id"].as_str().unwrap().to_string();
        let (s, p) = app2
            .post(
                &format!("/v1/credentials/{b1}/reveal"),
                &app2.service_token(b),
                json!({}),
            )
            .await;
        assert_eq!((s, p["code"].as_str()), (403, Some("vault_locked")));
        let (s, _) = app2
            .post("/v1/vault/unlock", &tb2, json!({"password": PASSWORD}))
            .await;
        assert_eq!(s, 200);
        let (s, v) = app2
            .post(
                &format!("/v1/credentials/{b1}/reveal"),
                &app2.service_token(b),
                json!({}),
            )
            .await;
        assert_eq!((s, v["api_secret"].as_str()), (200, Some(s3.as_str())));
        // The chain verifies and continues.
        let n = audit_ok(&app2).await;
        let (s, _) = app2.post("/v1/credentials", &app2.token(a), json!({"exchange": "binance", "label": "after-restore", "api_key": "k-after", "api_secret": "s-after"})).await;
        assert_eq!(s, 201);
        assert!(audit_ok(&app2).await > n);
    }
}

// Wrong master key, truncated file, flipped byte, non-empty target: a one-line error and
// the target unchanged.
crate::both_backends!(restore_refuses_bad_input, |app: TestApp| async move {
    let t = app.token(Uuid::new_v4());
    for i in 0..3 {
        let (s, _) = app.post("/v1/credentials", &t, json!({"exchange": "binance", "label": format!("c{i}"), "api_key": format!("key-{i}"), "api_secret": format!("secret-{i}")})).await;
        assert_eq!(s, 201);
    }
    let work = tempfile::tempdir().unwrap();
    let good = work.path().join("good.kgbak");
    let src_cfg = helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
    backup_to_file(&src_cfg, &good).await.unwrap();
    let bytes = std::fs::read(&good).unwrap();
    let (dir, url) = fresh_target(app.backend, app.data_dir.path())
        .await
        .unwrap();
    let cfg = helpers::test_config(dir.path().to_path_buf(), url.clone());

    let expect_err = |r: Result<_, keygate_server::ConfigError>, what: &str| {
        let e = r
            .err()
            .unwrap_or_else(|| panic!("{what}: restore succeeded"));
        let msg = e.to_string();
        assert!(msg.contains(what), "expected '{what}' in: {msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    };

    // wrong master key
    let mut wrong = cfg.clone();
    wrong.master_key = Some(keygate_crypto::MasterKey::generate().to_base64_secret());
    expect_err(
        restore_from_file(&wrong, &good).await,
        "master key does not match",
    );
    // truncated: mid-line, and at a line boundary (trailer missing)
    let cut = work.path().join("cut.kgbak");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    expect_err(restore_from_file(&cfg, &cut).await, "truncated");
    let text = String::from_utf8(bytes.clone()).unwrap();
    let without_trailer: String = text
        .lines()
        .take(text.lines().count() - 1)
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&cut, without_trailer).unwrap();
    expect_err(restore_from_file(&cfg, &cut).await, "truncated");
    std::fs::write(&cut, b"").unwrap();
    expect_err(restore_from_file(&cfg, &cut).await, "truncated");
    // one flipped byte in a row, and in the header
    let flipped = work.path().join("flipped.kgbak");
    let mut f = bytes.clone();
    let row_start = text.find('\n').unwrap() + 1;
    let mid = row_start + (text.len() - row_start) / 2;
    f[mid] ^= 0x01;
    std::fs::write(&flipped, &f).unwrap();
    expect_err(restore_from_file(&cfg, &flipped).await, "checksum mismatch");
    let mut f = bytes.clone();
    f[20] ^= 0x20;
    std::fs::write(&flipped, &f).unwrap();
    expect_err(restore_from_file(&cfg, &flipped).await, "checksum mismatch");
    // a header rewritten for another master key (checksum recomputed): that key matches
    // the header, but not the backed-up metadata, whose data keys it cannot unwrap
    let other = keygate_crypto::MasterKey::generate();
    let header: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    let real = header["key_check_value"].as_str().unwrap().to_string();
    let body: String = text
        .lines()
        .take(text.lines().count() - 1)
        .map(|l| format!("{l}\n"))
        .collect::<String>()
        .replacen(&real, &other.key_check_value(), 1);
    let sha = {
        use sha2::Digest;
        hex_lower(&sha2::Sha256::digest(body.as_bytes()))
    };
    let rows = body.lines().count() - 1;
    let forged = work.path().join("forged.kgbak");
    std::fs::write(
        &forged,
        format!("{body}{{\"trailer\":\"keygate-backup\",\"rows\":{rows},\"sha256\":\"{sha}\"}}\n"),
    )
    .unwrap();
    let mut other_cfg = cfg.clone();
    other_cfg.master_key = Some(other.to_base64_secret());
    expect_err(
        restore_from_file(&other_cfg, &forged).await,
        "differs from the backed-up metadata",
    );
    // the metadata's key-check row removed, the header's row count fixed to match
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines.pop(); // trailer
    lines.retain(|l| !(l.contains("\"keygate_meta\"") && l.contains("\"master_key_check\"")));
    let mut header: serde_json::Value = serde_json::from_str(&lines[0]).unwrap();
    for t in header["tables"].as_array_mut().unwrap() {
        if t["name"] == "keygate_meta" {
            t["rows"] = json!(t["rows"].as_i64().unwrap() - 1);
        }
    }
    lines[0] = header.to_string();
    let body: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let sha = {
        use sha2::Digest;
        hex_lower(&sha2::Sha256::digest(body.as_bytes()))
    };
    std::fs::write(
        &forged,
        format!(
            "{body}{{\"trailer\":\"keygate-backup\",\"rows\":{},\"sha256\":\"{sha}\"}}\n",
            lines.len() - 1
        ),
    )
    .unwrap();
    expect_err(
        restore_from_file(&cfg, &forged).await,
        "exactly one master-key check value",
    );
    // nothing was written: the target has no schema at all
    assert_eq!(schema_version(&url).await, 0, "target untouched");

    // a good restore into that same target works, and a second one is refused
    let r = restore_from_file(&cfg, &good).await.expect("restore");
    assert!(r.audit.ok);
    let before = table_counts(&url).await;
    assert_eq!(before, table_counts(&app.database_url).await);
    expect_err(restore_from_file(&cfg, &good).await, "not empty");
    assert_eq!(table_counts(&url).await, before, "target unchanged");
    // the live source database is refused too
    let src_before = table_counts(&app.database_url).await;
    expect_err(restore_from_file(&src_cfg, &good).await, "not empty");
    assert_eq!(table_counts(&app.database_url).await, src_before);
});

fn hex_lower(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Backups and master-key rotations: a backup taken before a rotation restores with the
/// current key and the previous one (a rotation under way, finished by `rotate`); one
/// taken during a rotation, restored with the old key alone, is reported as needing the
/// new key too, instead of reported as a success with data keys nobody can open.
#[tokio::test]
async fn backups_from_before_and_during_a_master_key_rotation() {
    let app = helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let mut creds = Vec::new();
    for i in 0..2 {
        let user = Uuid::new_v4();
        let (s, c) = app
            .post(
                "/v1/credentials",
                &app.token(user),
                json!({"exchange": "binance", "label": "r", "api_key": format!("k{i}"), "api_secret": format!("rotation-backup-secret-{i}")}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        creds.push((user, c["id"].as_str().unwrap().to_string(), i));
    }
    let work = tempfile::tempdir().unwrap();
    let src = helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
    let before = work.path().join("before.kgbak");
    backup_to_file(&src, &before).await.unwrap();
    let old_key = std::fs::read_to_string(app.data_dir.path().join("master.key")).unwrap();
    let new_key = keygate_crypto::MasterKey::generate().to_base64_secret();

    // the rotation starts (new key current, old key previous) and rewraps one data key
    let (data_dir, database_url, _) = app.stop().await;
    let (o, n) = (old_key.trim().to_string(), new_key.clone());
    let app = helpers::start_with(data_dir, database_url, Backend::Sqlite, move |c| {
        c.master_key = Some(n);
        c.master_key_previous = Some(o.into());
    })
    .await;
    let r = keygate_server::master_key::rotate(&app.state, 1, Some(1))
        .await
        .unwrap();
    assert_eq!((r.rewrapped, r.complete), (1, false));
    let during = work.path().join("during.kgbak");
    let mut src = src.clone();
    src.master_key = Some(new_key.clone());
    backup_to_file(&src, &during).await.unwrap();

    let target = |name: &str| {
        let dir = work.path().join(name);
        let url = format!("sqlite://{}", dir.join("keygate.db").display());
        helpers::test_config(dir, url)
    };
    // before the rotation: the new key alone is refused, with the way out named
    let mut cfg = target("t1");
    cfg.master_key = Some(new_key.clone());
    let e = restore_from_file(&cfg, &before).await.expect_err("refused");
    assert!(e.to_string().contains("KEYGATE_MASTER_KEY_PREVIOUS"), "{e}");
    // with both keys: restored as a rotation under way, which `rotate` completes
    cfg.master_key_previous = Some(old_key.trim().to_string().into());
    let r = restore_from_file(&cfg, &before).await.expect("restored");
    assert!(r.audit.ok && r.rotating, "{:?}", r.audit);
    let restored = keygate_server::prepare(cfg.clone()).await.unwrap();
    let r = keygate_server::master_key::rotate(&restored, 100, None)
        .await
        .unwrap();
    assert_eq!((r.rewrapped, r.complete), (2, true));
    every_data_key_opens(&restored, &creds).await;

    // during the rotation, with the old key alone: the data key already on the new key
    // could not be opened, so the restore says so (exit 1 from the command)
    let mut cfg = target("t2");
    cfg.master_key = Some(old_key.trim().to_string().into());
    let e = restore_from_file(&cfg, &during)
        .await
        .expect_err("reported");
    assert!(
        e.to_string()
            .contains("master-key version 2, which was not supplied"),
        "{e}"
    );
    // with the new key and the old one: whole
    let mut cfg = target("t3");
    cfg.master_key = Some(new_key.clone());
    cfg.master_key_previous = Some(old_key.trim().to_string().into());
    let r = restore_from_file(&cfg, &during).await.expect("restored");
    assert!(r.audit.ok && r.rotating);
    let restored = keygate_server::prepare(cfg).await.unwrap();
    every_data_key_opens(&restored, &creds).await;
    drop(app);
}

async fn every_data_key_opens(
    state: &keygate_server::state::AppState,
    creds: &[(Uuid, String, i32)],
) {
    for (user, _, _) in creds {
        let rec = state
            .store
            .active_user_key(Actor::user(*user), *user)
            .await
            .unwrap()
            .expect("a data key");
        let ctx = keygate_keys::WrapContext {
            user_id: *user,
            dek_version: rec.version as u32,
        };
        state
            .keyring
            .provider
            .unwrap(&ctx, rec.wrapped_dek.as_deref().unwrap())
            .await
            .expect("the data key opens");
    }
}
