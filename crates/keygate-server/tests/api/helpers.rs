//! `spawn_app` runs the real server on port 0 against a fresh SQLite file or a fresh
//! PostgreSQL database (from `KEYGATE_TEST_DATABASE_URL`, set by scripts/test).

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use keygate_server::{Application, Config};
use secrecy::SecretString;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub data_dir: tempfile::TempDir,
    pub database_url: String,
    pub backend: Backend,
    pub jwt_secret: SecretString,
    pub shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    /// The running server's state (store, keyring, config), for tests that call library
    /// entry points (anomaly scoring, jobs) directly.
    pub state: keygate_server::state::AppState,
}

/// Stops the server. Being `Drop` also makes a closure or `async move` block that uses
/// some of a `TestApp`'s fields take all of it: with precise capture it took only those,
/// and the rest (the data dir, deleted with its `TempDir`) was dropped when the test
/// began. The SQLite database then lived on only in the pool's open connections, and
/// the first new connection a busy moment needed failed with "unable to open database
/// file" (a console sign-in answering 503 in CI, now and then).
impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// The admin URL of the test PostgreSQL server, or `None` (then PostgreSQL tests fail
/// under scripts/test / CI and are reported as not run elsewhere).
pub fn pg_admin_url() -> Option<String> {
    match std::env::var("KEYGATE_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true")
                || std::env::var("KEYGATE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1")
            {
                panic!("KEYGATE_TEST_DATABASE_URL is not set: run the suite through scripts/test");
            }
            None
        }
    }
}

pub async fn fresh_pg_database(admin: &str) -> String {
    keygate_storage::scratch::create(admin, &keygate_storage::scratch::test_prefix())
        .await
        .expect("create test database")
        .url
}

pub fn test_config(data_dir: PathBuf, database_url: String) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir,
        database_url,
        jwt_secret: Some(SecretString::from(
            "test-secret-test-secret-test-secret-0123456789",
        )),
        allowed_upstreams: vec!["127.0.0.1".into()],
        // webhook receivers and OAuth token endpoints in tests listen on loopback
        allowed_private_hosts: vec!["127.0.0.1".into()],
        reveal_enabled: true,
        max_body_bytes: 64 * 1024,
        dev_fast_kdf: true,
        // Tests drive the sync job themselves; a background sync would add exchange calls.
        sync_interval_minutes: 0,
        ..Config::default()
    }
}

/// Starts keygate on `backend`. `None` when PostgreSQL is not configured outside CI.
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// A fresh database URL for `backend` inside `data_dir` (SQLite) or on the test server.
pub async fn fresh_database_url(backend: Backend, data_dir: &std::path::Path) -> Option<String> {
    Some(match backend {
        Backend::Sqlite => format!("sqlite://{}", data_dir.join("keygate.db").display()),
        Backend::Postgres => fresh_pg_database(&pg_admin_url()?).await,
    })
}

/// Like `spawn_app`, with `tweak` applied to the test configuration.
pub async fn spawn_app_with(backend: Backend, tweak: impl FnOnce(&mut Config)) -> Option<TestApp> {
    let data_dir = tempfile::tempdir().unwrap();
    let database_url = fresh_database_url(backend, data_dir.path()).await?;
    Some(start_with(data_dir, database_url, backend, tweak).await)
}

pub async fn start(data_dir: tempfile::TempDir, database_url: String, backend: Backend) -> TestApp {
    start_with(data_dir, database_url, backend, |_| {}).await
}

pub async fn start_with(
    data_dir: tempfile::TempDir,
    database_url: String,
    backend: Backend,
    tweak: impl FnOnce(&mut Config),
) -> TestApp {
    let mut config = test_config(data_dir.path().to_path_buf(), database_url.clone());
    tweak(&mut config);
    if std::env::var("TEST_LOG").is_ok() {
        keygate_server::telemetry::init("text");
    }
    let jwt_secret = config.jwt_secret.clone().unwrap();
    let app = Application::build(config).await.expect("server starts");
    let base = format!("http://{}", app.local_addr());
    let state = app.state.clone();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // Only an explicit send stops the server (`stop`, or dropping the `TestApp`): a
    // sender dropped without one must not.
    tokio::spawn(app.run_until(async {
        if rx.await.is_err() {
            std::future::pending::<()>().await
        }
    }));
    TestApp {
        base,
        client: reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        data_dir,
        database_url,
        backend,
        jwt_secret,
        shutdown: Some(tx),
        state,
    }
}

impl TestApp {
    pub fn token(&self, user: Uuid) -> String {
        keygate_server::auth::mint_token(
            &self.jwt_secret,
            Some(user),
            false,
            "authenticated",
            Duration::from_secs(600),
            "keygate_admin",
        )
        .unwrap()
    }
    /// A user token without a `session_id` claim, as other issuers may mint.
    pub fn token_without_session(&self, user: Uuid) -> String {
        self.token_with(user, chrono::Utc::now().timestamp(), serde_json::json!({}))
    }
    /// A user token issued at `iat` with these further claims (`auth_time`, `amr`, an
    /// admin flag), valid for ten minutes from now.
    pub fn token_with(&self, user: Uuid, iat: i64, extra: serde_json::Value) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut extra: std::collections::HashMap<String, serde_json::Value> =
            serde_json::from_value(extra).unwrap();
        extra.insert("jti".into(), Uuid::new_v4().to_string().into());
        let claims = keygate_server::auth::Claims {
            sub: Some(user.to_string()),
            role: Some("authenticated".into()),
            exp: now + 600,
            nbf: None,
            iat: Some(iat),
            session_id: None,
            extra,
        };
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(
                secrecy::ExposeSecret::expose_secret(&self.jwt_secret).as_bytes(),
            ),
        )
        .unwrap()
    }
    pub fn admin_token(&self, user: Uuid) -> String {
        keygate_server::auth::mint_token(
            &self.jwt_secret,
            Some(user),
            true,
            "authenticated",
            Duration::from_secs(600),
            "keygate_admin",
        )
        .unwrap()
    }
    pub fn service_token(&self, user: Uuid) -> String {
        keygate_server::auth::mint_token(
            &self.jwt_secret,
            Some(user),
            false,
            "service_role",
            Duration::from_secs(600),
            "keygate_admin",
        )
        .unwrap()
    }

    pub async fn get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        let r = self
            .client
            .get(format!("{}{}", self.base, path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .client
            .request(method, format!("{}{}", self.base, path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let s = r.status().as_u16();
        (s, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn post(
        &self,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        self.send(reqwest::Method::POST, path, token, body).await
    }
}

impl TestApp {
    /// Runs `sql` directly as the database owner (SQLite file / PostgreSQL login), outside
    /// keygate: how tests tamper with rows.
    pub async fn raw_exec(&self, sql: &str) -> Result<u64, sqlx::Error> {
        use sqlx::Connection;
        match self.backend {
            Backend::Sqlite => {
                let mut c = sqlx::SqliteConnection::connect(&self.database_url).await?;
                Ok(sqlx::raw_sql(sql).execute(&mut c).await?.rows_affected())
            }
            Backend::Postgres => {
                let mut c = sqlx::PgConnection::connect(&self.database_url).await?;
                Ok(sqlx::raw_sql(sql).execute(&mut c).await?.rows_affected())
            }
        }
    }

    /// Signs in to the web console with `token` (`POST /ui/login`, same origin); answers
    /// the session cookie as `name=value`.
    pub async fn console_sign_in(&self, token: &str) -> String {
        let r = no_redirects()
            .post(format!("{}/ui/login", self.base))
            .header("origin", &self.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "console sign-in");
        let set = r.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    }

    /// The console home page's status for session `cookie`: 200 signed in, 303 (to the
    /// sign-in page) not.
    pub async fn console_home(&self, cookie: &str) -> u16 {
        no_redirects()
            .get(format!("{}/ui/", self.base))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// Stops the server (as an operator would, to restart it with other keys or settings)
    /// and hands back what a restart needs: the data dir, the database URL, the backend.
    pub async fn stop(mut self) -> (tempfile::TempDir, String, Backend) {
        let _ = self.shutdown.take().expect("running").send(());
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        // `TestApp` is `Drop`, so its fields are swapped out, not moved (the spare
        // directory left behind is empty and goes with it)
        let data_dir = std::mem::replace(&mut self.data_dir, tempfile::tempdir().unwrap());
        (
            data_dir,
            std::mem::take(&mut self.database_url),
            self.backend,
        )
    }

    /// Makes the database refuse every INSERT into `table` whose new row matches `when`
    /// (an SQL condition on `NEW`), with a trigger named `name`, as a failing disk or a
    /// constraint would. Returns the SQL that takes the trigger away again.
    pub async fn fail_inserts(&self, name: &str, table: &str, when: &str) -> String {
        let (fail, unfail) = match self.backend {
            Backend::Sqlite => (
                format!(
                    "CREATE TRIGGER {name} BEFORE INSERT ON {table} WHEN {when} \
                     BEGIN SELECT RAISE(ABORT, 'injected: this write fails'); END;"
                ),
                format!("DROP TRIGGER {name};"),
            ),
            Backend::Postgres => (
                format!(
                    "CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS \
                     $$ BEGIN RAISE EXCEPTION 'injected: this write fails'; END $$; \
                     CREATE TRIGGER {name} BEFORE INSERT ON {table} FOR EACH ROW \
                     WHEN ({when}) EXECUTE FUNCTION {name}();"
                ),
                format!("DROP TRIGGER {name} ON {table}; DROP FUNCTION {name}();"),
            ),
        };
        self.raw_exec(&fail).await.unwrap();
        unfail
    }
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Runs an async test body against SQLite and PostgreSQL.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test]
            async fn sqlite() {
                let app = $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await.unwrap();
                ($body)(app).await;
            }
            #[tokio::test]
            async fn postgres() {
                match $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await {
                    Some(app) => ($body)(app).await,
                    None => eprintln!("NOT RUN: PostgreSQL test needs KEYGATE_TEST_DATABASE_URL (scripts/test sets it)"),
                }
            }
        }
    };
}
