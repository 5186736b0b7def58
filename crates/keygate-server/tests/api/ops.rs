//! Operations: client IP behind trusted proxies, plaintext refusal, schema version check.

use serde_json::json;
use uuid::Uuid;

use crate::helpers::{self, Backend, TestApp};

/// Creates a credential with the given `X-Forwarded-For` and returns the IP its audit
/// event recorded.
async fn audited_ip(app: &TestApp, xff: Option<&str>) -> String {
    let user = Uuid::new_v4();
    let t = app.token(user);
    let mut req = app
        .client
        .post(format!("{}/v1/credentials", app.base))
        .bearer_auth(&t)
        .json(&crate::binance_body("ip"));
    if let Some(x) = xff {
        req = req.header("x-forwarded-for", x);
    }
    assert_eq!(req.send().await.unwrap().status(), 201);
    let (s, v) = app.get("/v1/audit?limit=10", &t).await;
    assert_eq!(s, 200, "{v}");
    let ev = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["ip_address"].is_string())
        .unwrap_or_else(|| panic!("an audit event with an IP: {v}"))
        .clone();
    ev["ip_address"].as_str().unwrap().to_string()
}

async fn client_ip_case(backend: Backend) {
    // Without trusted proxies the header is ignored: the peer is the client.
    let Some(app) = helpers::spawn_app(backend).await else {
        eprintln!("NOT RUN: needs PostgreSQL");
        return;
    };
    assert_eq!(audited_ip(&app, Some("198.51.100.7")).await, "127.0.0.1");
    assert_eq!(audited_ip(&app, None).await, "127.0.0.1");
    // Behind a trusted proxy (the test client on loopback), the rightmost untrusted hop
    // is the client; what the caller wrote further left is not believed.
    let app = helpers::spawn_app_with(backend, |c| {
        c.trusted_proxies = vec![
            "127.0.0.0/8".parse().unwrap(),
            "10.0.0.5/32".parse().unwrap(),
        ]
    })
    .await
    .unwrap();
    assert_eq!(
        audited_ip(&app, Some("6.6.6.6, 198.51.100.7, 10.0.0.5")).await,
        "198.51.100.7"
    );
    assert_eq!(audited_ip(&app, None).await, "127.0.0.1");
}

/// Creates a credential with these geo headers and returns the place its audit event
/// recorded (country, city).
async fn audited_place(
    app: &TestApp,
    country: &str,
    city: &str,
) -> (serde_json::Value, serde_json::Value) {
    let t = app.token(Uuid::new_v4());
    let r = app
        .client
        .post(format!("{}/v1/credentials", app.base))
        .bearer_auth(&t)
        .header("cf-ipcountry", country)
        .header("x-geo-city", city)
        .json(&crate::binance_body("geo"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let (_, v) = app.get("/v1/audit?action=create&limit=1", &t).await;
    let ev = &v["items"][0];
    (ev["geo_country"].clone(), ev["geo_city"].clone())
}

/// The client's place comes from the headers the operator names, and only from a
/// trusted proxy: a client that reaches keygate directly could claim any.
#[tokio::test]
async fn geo_comes_from_a_trusted_proxys_headers_only() {
    let geo = |trusted: bool| {
        move |c: &mut keygate_server::config::Config| {
            if trusted {
                c.trusted_proxies = vec!["127.0.0.0/8".parse().unwrap()];
            }
            c.geo_country_header = Some("cf-ipcountry".into());
            c.geo_city_header = Some("x-geo-city".into());
        }
    };
    let app = helpers::spawn_app_with(Backend::Sqlite, geo(true))
        .await
        .unwrap();
    assert_eq!(
        audited_place(&app, "de", "Frankfurt am Main").await,
        (json!("DE"), json!("Frankfurt am Main"))
    );
    // not in a place's shape: not recorded
    assert_eq!(
        audited_place(&app, "Germany", "").await,
        (json!(null), json!(null))
    );
    let app = helpers::spawn_app_with(Backend::Sqlite, geo(false))
        .await
        .unwrap();
    assert_eq!(
        audited_place(&app, "DE", "Frankfurt").await,
        (json!(null), json!(null))
    );
}

#[tokio::test]
async fn client_ip_from_trusted_proxies_only_sqlite() {
    client_ip_case(Backend::Sqlite).await;
}

#[tokio::test]
async fn client_ip_from_trusted_proxies_only_postgres() {
    client_ip_case(Backend::Postgres).await;
}

#[tokio::test]
async fn plaintext_on_a_public_address_needs_an_explicit_flag() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = helpers::test_config(
        dir.path().to_path_buf(),
        format!("sqlite://{}", dir.path().join("keygate.db").display()),
    );
    cfg.listen = "0.0.0.0:0".parse().unwrap();
    let err = keygate_server::Application::build(cfg.clone())
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(
        err.contains("refusing to serve plain HTTP on non-loopback address 0.0.0.0:0"),
        "{err}"
    );
    assert!(!err.contains('\n'));
    // nothing was created: the check runs before the database is opened
    assert!(!dir.path().join("keygate.db").exists());

    let app = helpers::spawn_app_with(Backend::Sqlite, |c| {
        c.listen = "0.0.0.0:0".parse().unwrap();
        c.allow_plaintext = true;
    })
    .await
    .unwrap();
    let port = app.base.rsplit(':').next().unwrap().to_string();
    let v: serde_json::Value = app
        .client
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["status"], "ready");
    assert_eq!(v["transport"], "plaintext_allowed");
    assert!(v["warnings"][0]
        .as_str()
        .unwrap()
        .starts_with("plaintext_allowed"));

    let app = helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let (_, v) = app.get("/readyz", "").await;
    assert_eq!(v["transport"], "plaintext_loopback");
    assert_eq!(v["warnings"], json!([]));
    // not ready: the 503 says what is not (it was rewritten into a bare internal_error)
    app.raw_exec("UPDATE _sqlx_migrations SET success = false WHERE version = (SELECT MAX(version) FROM _sqlx_migrations)")
        .await
        .unwrap();
    let (s, v) = app.get("/readyz", "").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(
        (&v["status"], &v["database"]),
        (&json!("not_ready"), &json!("migrations_pending")),
        "{v}"
    );
}

/// A binary older than the database's schema refuses to start, naming both versions.
async fn schema_too_new_case(backend: Backend) {
    let Some(app) = helpers::spawn_app(backend).await else {
        eprintln!("NOT RUN: needs PostgreSQL");
        return;
    };
    let (data_dir, database_url, _) = app.stop().await;
    let store = keygate_storage::Store::connect(&database_url)
        .await
        .unwrap();
    let binary = store.binary_schema_version();
    assert_eq!(store.applied_schema_version().await.unwrap(), binary);
    store.close().await;
    let future = binary + 1;
    let sql = "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) VALUES ($1, 'from a newer keygate', TRUE, $2, 0)";
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::SqlitePool::connect(&database_url).await.unwrap();
            sqlx::query(sql)
                .bind(future)
                .bind(vec![0u8; 48])
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
            sqlx::query(sql)
                .bind(future)
                .bind(vec![0u8; 48])
                .execute(&pool)
                .await
                .unwrap();
            pool.close().await;
        }
    }
    let cfg = helpers::test_config(data_dir.path().to_path_buf(), database_url);
    let err = keygate_server::Application::build(cfg)
        .await
        .err()
        .expect("an older binary refuses a newer schema")
        .to_string();
    assert!(err.contains(&format!("database {future}")), "{err}");
    assert!(err.contains(&format!("binary {binary}")), "{err}");
    assert!(!err.contains('\n'));
}

#[tokio::test]
async fn older_binary_refuses_newer_schema_sqlite() {
    schema_too_new_case(Backend::Sqlite).await;
}

#[tokio::test]
async fn older_binary_refuses_newer_schema_postgres() {
    schema_too_new_case(Backend::Postgres).await;
}
