//! Asymmetric tokens through a JWKS (Supabase-style): RS256 and ES256 access tokens signed
//! by keys the server only knows from a JWKS URL are accepted; a token signed by a key not in
//! the set, an expired one, or one with an unknown `kid` gets 401 problem+json.

use axum::routing::get;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use uuid::Uuid;

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// `n` and `e` of an RSA-2048 SubjectPublicKeyInfo (fixed DER layout, checked).
fn rsa_n_e(spki_pem: &str) -> (Vec<u8>, Vec<u8>) {
    let d = pem_der(spki_pem);
    assert_eq!(
        &d[28..33],
        &[0x02, 0x82, 0x01, 0x01, 0x00],
        "RSA-2048 modulus header"
    );
    assert_eq!(&d[289..291], &[0x02, 0x03], "exponent header");
    (d[33..289].to_vec(), d[291..294].to_vec())
}

struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer {
    fn token(&self, sub: Uuid, exp_in: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.into());
        let claims = json!({"sub": sub, "role": "authenticated", "aud": "authenticated",
            "iat": now, "exp": now + exp_in, "session_id": Uuid::new_v4()});
        encode(&h, &claims, &self.key).unwrap()
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_a_jwks() {
    // RS256 key (PKCS#8 private, SPKI public) and ES256 key (rcgen, P-256).
    let rsa = keygate_exchanges::keygen::generate_rsa(2048).unwrap();
    let (n, e) = rsa_n_e(&rsa.public_pem);
    let rs = Signer {
        kid: "rsa-1",
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(
            secrecy::ExposeSecret::expose_secret(&rsa.private_pem).as_bytes(),
        )
        .unwrap(),
    };
    let ec = rcgen::KeyPair::generate().unwrap();
    let point = ec.public_key_raw();
    assert_eq!((point.len(), point[0]), (65, 0x04));
    let es = Signer {
        kid: "ec-1",
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    };
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b64url(&n), "e": b64url(&e)},
        {"kty": "EC", "kid": "ec-1", "alg": "ES256", "use": "sig", "crv": "P-256",
         "x": b64url(&point[1..33]), "y": b64url(&point[33..65])},
    ]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!(
        "http://{}/auth/v1/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let router = axum::Router::new().route(
        "/auth/v1/.well-known/jwks.json",
        get(move || {
            let j = jwks.clone();
            async move { axum::Json(j) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |cfg| {
        cfg.jwks_url = Some(jwks_url);
    })
    .await
    .unwrap();
    let user = Uuid::new_v4();
    for signer in [&rs, &es] {
        let (s, v) = app.get("/v1/credentials", &signer.token(user, 600)).await;
        assert_eq!(s, 200, "{:?}: {v}", signer.alg);
        let (s, v): (u16, Value) = app.get("/v1/credentials", &signer.token(user, -600)).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("unauthorized")),
            "expired {:?}",
            signer.alg
        );
    }
    // Signed by a key that is not in the set, under a kid that is.
    let other = rcgen::KeyPair::generate().unwrap();
    let forged = Signer {
        kid: "ec-1",
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap(),
    };
    let (s, _) = app.get("/v1/credentials", &forged.token(user, 600)).await;
    assert_eq!(s, 401, "wrong key");
    let unknown = Signer {
        kid: "nope",
        ..forged
    };
    let (s, _) = app.get("/v1/credentials", &unknown.token(user, 600)).await;
    assert_eq!(s, 401, "unknown kid");
}

/// An EC P-256 signer under `kid` and its public JWK.
fn ec_signer(kid: &'static str) -> (Signer, Value) {
    let kp = rcgen::KeyPair::generate().unwrap();
    let point = kp.public_key_raw();
    let jwk = json!({"kty": "EC", "kid": kid, "alg": "ES256", "use": "sig", "crv": "P-256",
        "x": b64url(&point[1..33]), "y": b64url(&point[33..65])});
    let signer = Signer {
        kid,
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(kp.serialize_pem().as_bytes()).unwrap(),
    };
    (signer, jwk)
}

/// A JWKS endpoint whose key set (and failure) the test changes as it goes.
#[derive(Default)]
struct JwksServer {
    keys: std::sync::Mutex<Vec<Value>>,
    failing: std::sync::atomic::AtomicBool,
    fetches: std::sync::atomic::AtomicUsize,
    /// Answer only after this many milliseconds.
    delay_ms: std::sync::atomic::AtomicU64,
}

async fn jwks_server(keys: Vec<Value>) -> (String, std::sync::Arc<JwksServer>) {
    use std::sync::atomic::Ordering;
    let st = std::sync::Arc::new(JwksServer::default());
    *st.keys.lock().unwrap() = keys;
    let s2 = st.clone();
    let router = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let st = s2.clone();
            async move {
                st.fetches.fetch_add(1, Ordering::SeqCst);
                let delay = st.delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
                if st.failing.load(Ordering::SeqCst) {
                    return (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "down").into_response();
                }
                axum::Json(json!({"keys": *st.keys.lock().unwrap()})).into_response()
            }
        }),
    );
    use axum::response::IntoResponse;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, st)
}

/// keygate on SQLite, taking asymmetric tokens from the JWKS at `url`, fetched again once
/// it is `max_age_secs` old.
async fn app_with_jwks(url: String, max_age_secs: u64) -> crate::helpers::TestApp {
    crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |cfg| {
        cfg.jwks_url = Some(url);
        cfg.jwks_max_age_secs = max_age_secs;
    })
    .await
    .unwrap()
}

// A key removed from the JWKS stops being accepted once the fetched set is older than
// KEYGATE_JWKS_MAX_AGE_SECS, even for a token already verified (and cached) with it.
// Before, a kid present in the first fetched set was trusted for the life of the process.
// If the JWKS cannot be fetched, the old set serves until it is twice the max age old;
// then keygate fails closed (503 jwks_unavailable) until the JWKS answers again.
#[tokio::test]
async fn a_key_removed_from_the_jwks_stops_working_after_the_max_age() {
    use std::sync::atomic::Ordering;
    use std::time::{Duration, Instant};
    const MAX_AGE: u64 = 2;
    let (old, old_jwk) = ec_signer("ec-old");
    let (new, new_jwk) = ec_signer("ec-new");
    let (url, jwks) = jwks_server(vec![old_jwk, new_jwk.clone()]).await;
    let app = app_with_jwks(url, MAX_AGE).await;
    let user = Uuid::new_v4();
    let old_token = old.token(user, 600);
    let (s, v) = app.get("/v1/credentials", &old_token).await;
    assert_eq!(s, 200, "{v}");

    // the identity provider drops the key (rotated out, or compromised)
    *jwks.keys.lock().unwrap() = vec![new_jwk];
    tokio::time::sleep(Duration::from_millis(MAX_AGE * 1000 + 300)).await;
    let (s, v) = app.get("/v1/credentials", &old_token).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (401, Some("unauthorized")),
        "a removed key still accepted: {v}"
    );
    let (s, v) = app.get("/v1/credentials", &old.token(user, 600)).await;
    assert_eq!(s, 401, "a fresh token from the removed key: {v}");
    let (s, v) = app.get("/v1/credentials", &new.token(user, 600)).await;
    assert_eq!(s, 200, "the key still in the set: {v}");
    let fetched_at = Instant::now();

    // the JWKS goes down: the last set serves up to twice the max age, then fail closed
    jwks.failing.store(true, Ordering::SeqCst);
    let until = |secs_ms: u64| fetched_at + Duration::from_millis(secs_ms);
    tokio::time::sleep_until(until(MAX_AGE * 1000 + 300).into()).await;
    let before = jwks.fetches.load(Ordering::SeqCst);
    let (s, v) = app.get("/v1/credentials", &new.token(user, 600)).await;
    assert_eq!(s, 200, "within the grace after a failed refetch: {v}");
    assert!(
        jwks.fetches.load(Ordering::SeqCst) > before,
        "a stale set is fetched again"
    );
    tokio::time::sleep_until(until(2 * MAX_AGE * 1000 + 300).into()).await;
    let (s, v) = app.get("/v1/credentials", &new.token(user, 600)).await;
    assert_eq!(
        (s, v["code"].as_str()),
        (503, Some("jwks_unavailable")),
        "{v}"
    );
    assert_eq!(
        v["detail"].as_str().map(|d| d.contains("jwks.json")),
        Some(false),
        "the JWKS URL is not echoed"
    );

    // back up: accepted again (after the refetch back-off, at most the max age here)
    jwks.failing.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(MAX_AGE * 1000 + 100)).await;
    let (s, v) = app.get("/v1/credentials", &new.token(user, 600)).await;
    assert_eq!(s, 200, "{v}");
}

// A client that hangs up while its request fetches the JWKS does not cancel the fetch: it
// runs to its end and the next request finds the new key. (Cancelled, the fetch counted
// as tried and held off the next one, so made-up kids and a hang-up could keep the set
// from refreshing.)
#[tokio::test]
async fn a_client_hanging_up_does_not_cancel_the_jwks_fetch() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    let (first, first_jwk) = ec_signer("ec-first");
    let (rotated, rotated_jwk) = ec_signer("ec-rotated");
    let (url, jwks) = jwks_server(vec![first_jwk.clone()]).await;
    let app = app_with_jwks(url, 2).await;
    let user = Uuid::new_v4();
    let (s, v) = app.get("/v1/credentials", &first.token(user, 600)).await;
    assert_eq!(s, 200, "{v}");

    // the identity provider rotates a key in, and its JWKS answers slowly
    *jwks.keys.lock().unwrap() = vec![first_jwk, rotated_jwk];
    jwks.delay_ms.store(1_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    let hung_up = impatient
        .get(format!("{}/v1/credentials", app.base))
        .bearer_auth(rotated.token(user, 600))
        .send()
        .await;
    assert!(
        hung_up.is_err(),
        "the client gave up before the JWKS answered"
    );
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    let fetches = jwks.fetches.load(Ordering::SeqCst);
    let (s, v) = app.get("/v1/credentials", &rotated.token(user, 600)).await;
    assert_eq!(s, 200, "the fetch the client left ran to its end: {v}");
    assert_eq!(
        jwks.fetches.load(Ordering::SeqCst),
        fetches,
        "no second fetch needed"
    );
}

// A console session opened with a JWKS-signed token ends once its key leaves the set, as
// the token itself stops working (key rotated out, or compromised). Before, the session
// lasted until the token's `exp` (up to 12 h). A session opened with a key still in the
// set is not affected.
#[tokio::test]
async fn a_console_session_ends_when_its_key_leaves_the_jwks() {
    use std::time::Duration;
    const MAX_AGE: u64 = 2;
    let (old, old_jwk) = ec_signer("ec-old");
    let (new, new_jwk) = ec_signer("ec-new");
    let (url, jwks) = jwks_server(vec![old_jwk, new_jwk.clone()]).await;
    let app = app_with_jwks(url, MAX_AGE).await;
    let user = Uuid::new_v4();
    let on_old = app.console_sign_in(&old.token(user, 600)).await;
    let on_new = app.console_sign_in(&new.token(user, 600)).await;
    assert_eq!(app.console_home(&on_old).await, 200);
    assert_eq!(app.console_home(&on_new).await, 200);

    // the identity provider drops the old key
    *jwks.keys.lock().unwrap() = vec![new_jwk];
    tokio::time::sleep(Duration::from_millis(MAX_AGE * 1000 + 300)).await;
    assert_eq!(
        app.console_home(&on_old).await,
        303,
        "session outlived its key"
    );
    assert_eq!(
        app.console_home(&on_new).await,
        200,
        "a session on a kept key ended"
    );
    // ended, not only refused: its row is gone (the new key's session's is not)
    let gone = |kid: &str| format!("DELETE FROM ui_sessions WHERE jwks_kid = '{kid}'");
    assert_eq!(app.raw_exec(&gone("ec-old")).await.unwrap(), 0);
    assert_eq!(app.raw_exec(&gone("ec-new")).await.unwrap(), 1);
}

// A console session opened with an HS256 token ends once the token secret changes, as
// the token itself stops working: changing the secret is how minted tokens are revoked.
// Before, the session lasted until the token's `exp` (up to 12 h), across the change. A
// session opened with a sign-in link does not depend on the secret and stays.
#[tokio::test]
async fn a_console_session_ends_when_the_token_secret_changes() {
    use crate::helpers::{self, Backend};
    let app = helpers::spawn_app(Backend::Sqlite).await.unwrap();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let cookie_of = |r: &reqwest::Response| {
        assert_eq!(r.status(), 303);
        let set = r.headers()["set-cookie"].to_str().unwrap();
        set.split(';').next().unwrap().to_string()
    };
    let user = Uuid::new_v4();
    let by_token = app.console_sign_in(&app.token(user)).await;
    let link = keygate_server::ui::create_login_link(
        &app.state.config,
        user,
        false,
        std::time::Duration::from_secs(600),
        Some(&app.base),
    )
    .await
    .unwrap();
    let r = c
        .post(&link)
        .header("origin", &app.base)
        .send()
        .await
        .unwrap();
    let by_link = cookie_of(&r);

    // the operator changes the token secret and restarts
    let (data_dir, database_url, _) = app.stop().await;
    let app = helpers::start_with(data_dir, database_url, Backend::Sqlite, |c| {
        c.jwt_secret = Some("a-new-token-secret-after-a-leak-0123456789abcdef".into());
    })
    .await;
    assert_eq!(
        app.console_home(&by_token).await,
        303,
        "the session outlived its token's secret"
    );
    assert_eq!(
        app.console_home(&by_link).await,
        200,
        "a sign-in link's session ended"
    );
    // ended, not only refused: only the link's session row is left
    assert_eq!(app.raw_exec("DELETE FROM ui_sessions").await.unwrap(), 1);
}

/// Waits (at most 5 s) until `instance` refuses `token` as revoked: another instance on the
/// same database learns of a revocation from its reload.
async fn refused_within_seconds(instance: &keygate_server::state::AppState, token: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match instance.auth.verify(token).await {
            Err(e) if e.code() == "token_revoked" => return,
            _ if std::time::Instant::now() > deadline => {
                panic!("the other instance still accepts it")
            }
            _ => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
        }
    }
}

// "Sign out everywhere": a user revokes every token issued until now (the one making the
// call included) and their console sessions end; a new token works after the cut-off's
// second; other users are untouched; an admin can do it for a user (others get 404); and
// another instance on the same database refuses the revoked tokens within seconds.
crate::both_backends!(
    sign_out_everywhere_revokes_a_users_tokens,
    |app: crate::helpers::TestApp| async move {
        use std::time::Duration;
        let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
        let (old, old2, others) = (app.token(user), app.token(user), app.token(other));
        let cookie = app.console_sign_in(&old).await;
        assert_eq!(app.get("/v1/credentials", &old).await.0, 200);
        let unused_link = keygate_server::ui::create_login_link(
            &app.state.config,
            user,
            false,
            Duration::from_secs(600),
            Some(&app.base),
        )
        .await
        .unwrap();

        // the vault, unlocked by its setup, locks with the revocation
        let pw = json!({"password": "correct horse battery"});
        assert_eq!(app.post("/v1/vault/setup", &old, pw).await.0, 200);
        let unlocked = || async {
            use keygate_storage::{Actor, DbTime};
            app.state
                .store
                .vault_session(Actor::service(), user, DbTime::now())
                .await
                .unwrap()
                .is_some()
        };
        assert!(unlocked().await);

        let (s, v) = app.post("/v1/tokens/revoke", &old, json!({})).await;
        assert_eq!(
            (s, v["user_id"].as_str()),
            (200, Some(user.to_string().as_str())),
            "{v}"
        );
        assert!(!unlocked().await, "the vault stayed unlocked");
        let cutoff: chrono::DateTime<chrono::Utc> =
            v["tokens_issued_before"].as_str().unwrap().parse().unwrap();
        for t in [&old, &old2] {
            let (s, p) = app.get("/v1/credentials", t).await;
            assert_eq!((s, p["code"].as_str()), (401, Some("token_revoked")), "{p}");
        }
        assert_eq!(
            app.console_home(&cookie).await,
            303,
            "the console session outlived the revocation"
        );
        assert_eq!(app.get("/v1/credentials", &others).await.0, 200);
        // no way back in through the console: not with the old token, not with a sign-in
        // link made before, and not with a session another instance let in before it
        // learned of the revocation (opened with the old token)
        let r = reqwest::Client::new()
            .post(format!("{}/ui/login", app.base))
            .header("origin", &app.base)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("token={old}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .post(&unused_link)
            .header("origin", &app.base)
            .send()
            .await
            .unwrap();
        assert_ne!(r.status(), 303, "a sign-in link made before still signs in");
        let old_iat = cutoff.timestamp() - 1;
        let (rec, set) = keygate_server::ui::session::prepare(
            &app.state,
            &reqwest::header::HeaderMap::new(),
            user,
            false,
            None,
            None,
            old_iat,
        )
        .unwrap();
        app.state.store.create_ui_session(&rec).await.unwrap();
        let late = set.to_str().unwrap().split(';').next().unwrap().to_string();
        assert_eq!(
            app.console_home(&late).await,
            303,
            "a late session of a revoked token"
        );
        // a token issued after the cut-off works
        let wait = (cutoff - chrono::Utc::now()).num_milliseconds().max(0) as u64;
        tokio::time::sleep(Duration::from_millis(wait + 50)).await;
        let fresh = app.token(user);
        assert_eq!(app.get("/v1/credentials", &fresh).await.0, 200);
        let (_, log) = app
            .get("/v1/audit?category=auth&action=tokens_revoked", &fresh)
            .await;
        assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");

        // an admin for another user; a user for another user: 404
        let path = format!("/v1/admin/users/{other}/revoke-tokens");
        assert_eq!(app.post(&path, &fresh, json!({})).await.0, 404);
        assert_eq!(app.get("/v1/credentials", &others).await.0, 200);
        let (s, v) = app
            .post(&path, &app.admin_token(Uuid::new_v4()), json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(app.get("/v1/credentials", &others).await.0, 401);

        // a second instance on the same database learns it from the table
        let mut cfg = crate::helpers::test_config(
            app.data_dir.path().to_path_buf(),
            app.database_url.clone(),
        );
        cfg.jobs_enabled = false;
        let second = keygate_server::Application::build(cfg).await.unwrap().state;
        let third = Uuid::new_v4();
        let t3 = app.token(third);
        assert!(second.auth.verify(&t3).await.is_ok());
        let (s, _) = app
            .post(
                &format!("/v1/admin/users/{third}/revoke-tokens"),
                &app.admin_token(Uuid::new_v4()),
                json!({}),
            )
            .await;
        assert_eq!(s, 200);
        refused_within_seconds(&second, &t3).await;
    }
);

// "Revoke this token": the token making the call is refused from then on, on this instance
// at once and on another within seconds, until it expires, and a console session opened
// with it ends; the user's other tokens keep working; a token with a `session_id` takes
// its session's other tokens with it, not another user's naming the same session; a
// service-role token can revoke itself; and the revocation is in the database (a new
// instance refuses it from its start).
crate::both_backends!(
    revoke_current_revokes_only_that_token,
    |app: crate::helpers::TestApp| async move {
        use std::time::Duration;
        let revoked = |(s, p): (u16, serde_json::Value)| {
            assert_eq!((s, p["code"].as_str()), (401, Some("token_revoked")), "{p}");
        };
        let user = Uuid::new_v4();
        let (leaked, kept) = (
            app.token_without_session(user),
            app.token_without_session(user),
        );
        let mut cfg = crate::helpers::test_config(
            app.data_dir.path().to_path_buf(),
            app.database_url.clone(),
        );
        cfg.jobs_enabled = false;
        let second = keygate_server::Application::build(cfg).await.unwrap().state;
        assert!(second.auth.verify(&leaked).await.is_ok());
        // a console session the token's thief opened with it
        let cookie = app.console_sign_in(&leaked).await;
        assert_eq!(app.console_home(&cookie).await, 200);
        // the vault, unlocked by the other token's sign-in, stays unlocked
        let pw = json!({"password": "correct horse battery"});
        assert_eq!(app.post("/v1/vault/setup", &kept, pw).await.0, 200);

        let (s, v) = app
            .post("/v1/tokens/revoke-current", &leaked, json!({}))
            .await;
        assert_eq!(s, 200, "{v}");
        let unlocked = || async {
            app.state
                .store
                .vault_session(
                    keygate_storage::Actor::service(),
                    user,
                    keygate_storage::DbTime::now(),
                )
                .await
                .unwrap()
                .is_some()
        };
        assert!(unlocked().await, "another sign-in's unlock was ended");
        assert_eq!(v["user_id"].as_str(), Some(user.to_string().as_str()));
        assert_eq!(v["session"], json!(false));
        let until: chrono::DateTime<chrono::Utc> = v["until"].as_str().unwrap().parse().unwrap();
        assert!(
            until > chrono::Utc::now() + chrono::Duration::seconds(600),
            "past the token's exp and leeway: {v}"
        );
        revoked(app.get("/v1/credentials", &leaked).await);
        assert_eq!(
            app.get("/v1/credentials", &kept).await.0,
            200,
            "another token of the user"
        );
        assert_eq!(
            app.console_home(&cookie).await,
            303,
            "a console session opened with the revoked token"
        );
        refused_within_seconds(&second, &leaked).await;
        assert!(second.auth.verify(&kept).await.is_ok());
        let (_, log) = app
            .get("/v1/audit?category=auth&action=token_revoked", &kept)
            .await;
        assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");

        // a session's tokens go together (mint_token names a fresh session each time)
        let session = Uuid::new_v4();
        let mint = |who: Uuid, secs| {
            keygate_server::auth::mint_token_for_session(
                &app.jwt_secret,
                Some(who),
                false,
                "authenticated",
                Duration::from_secs(secs),
                "keygate_admin",
                session,
            )
            .unwrap()
        };
        let (first, sibling) = (mint(user, 600), mint(user, 900));
        // whoever can mint tokens could name another user's session: it is not theirs
        let someone_else = mint(Uuid::new_v4(), 600);
        let (s, v) = app
            .post("/v1/tokens/revoke-current", &first, json!({}))
            .await;
        assert_eq!((s, &v["session"]), (200, &json!(true)), "{v}");
        revoked(app.get("/v1/credentials", &first).await);
        revoked(app.get("/v1/credentials", &sibling).await);
        assert_eq!(app.get("/v1/credentials", &kept).await.0, 200);
        assert_eq!(app.get("/v1/credentials", &someone_else).await.0, 200);

        // a service-role token revokes itself
        let svc = app.service_token(Uuid::new_v4());
        assert_eq!(
            app.post("/v1/tokens/revoke-current", &svc, json!({}))
                .await
                .0,
            200
        );
        revoked(app.get("/v1/credentials", &svc).await);

        // the database holds it: a new instance refuses it from its start
        let mut cfg = crate::helpers::test_config(
            app.data_dir.path().to_path_buf(),
            app.database_url.clone(),
        );
        cfg.jobs_enabled = false;
        let third = keygate_server::Application::build(cfg).await.unwrap().state;
        assert_eq!(
            third.auth.verify(&leaked).await.unwrap_err().code(),
            "token_revoked"
        );
        assert!(third.auth.verify(&kept).await.is_ok());
    }
);

// A sign-in session revoked by its id, for a token that is lost rather than at hand: every
// token of that user and session is refused here at once and on another instance within
// seconds, a console session opened with one ends, the user's other sessions and another
// user's same session id are untouched; an admin (or the service role) can do it for a
// user, others get 404; a user cannot grow the revocations without bound.
crate::both_backends!(
    a_session_is_revoked_by_its_id,
    |app: crate::helpers::TestApp| async move {
        use std::time::Duration;
        let revoked = |(s, p): (u16, serde_json::Value)| {
            assert_eq!((s, p["code"].as_str()), (401, Some("token_revoked")), "{p}");
        };
        let (user, other) = (Uuid::new_v4(), Uuid::new_v4());
        let (lost, kept) = (Uuid::new_v4(), Uuid::new_v4());
        let mint = |who: Uuid, session: Uuid| {
            keygate_server::auth::mint_token_for_session(
                &app.jwt_secret,
                Some(who),
                false,
                "authenticated",
                Duration::from_secs(600),
                "keygate_admin",
                session,
            )
            .unwrap()
        };
        let (on_device, on_device2, mine) = (mint(user, lost), mint(user, lost), mint(user, kept));
        let others = mint(other, lost);
        let mut cfg = crate::helpers::test_config(
            app.data_dir.path().to_path_buf(),
            app.database_url.clone(),
        );
        cfg.jobs_enabled = false;
        let second = keygate_server::Application::build(cfg).await.unwrap().state;
        assert!(second.auth.verify(&on_device).await.is_ok());
        let cookie = app.console_sign_in(&on_device).await;
        assert_eq!(app.console_home(&cookie).await, 200);
        // the lost device's sign-in unlocked the vault: it locks with the session
        let pw = json!({"password": "correct horse battery"});
        assert_eq!(app.post("/v1/vault/setup", &on_device, pw).await.0, 200);

        let (s, v) = app
            .post(
                "/v1/tokens/revoke-session",
                &mine,
                json!({"session_id": lost}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (_, status) = app.get("/v1/vault/status", &mine).await;
        assert_eq!(status["unlocked"], false, "{status}");
        assert_eq!(v["user_id"].as_str(), Some(user.to_string().as_str()));
        assert_eq!(v["session_id"].as_str(), Some(lost.to_string().as_str()));
        revoked(app.get("/v1/credentials", &on_device).await);
        revoked(app.get("/v1/credentials", &on_device2).await);
        assert_eq!(app.get("/v1/credentials", &mine).await.0, 200);
        assert_eq!(
            app.get("/v1/credentials", &others).await.0,
            200,
            "another user"
        );
        assert_eq!(app.console_home(&cookie).await, 303, "its console session");
        refused_within_seconds(&second, &on_device2).await;
        assert!(second.auth.verify(&mine).await.is_ok());
        let (_, log) = app
            .get("/v1/audit?category=auth&action=session_revoked", &mine)
            .await;
        assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");

        // bad input changes nothing
        for bad in [
            json!({}),
            json!({"session_id": "not-a-uuid"}),
            json!({"session_id": Uuid::nil()}),
            json!({"session_id": kept, "until": "2000-01-01T00:00:00Z"}),
            json!({"session_id": kept, "until": "2999-01-01T00:00:00Z"}),
            json!({"session_id": kept, "extra": 1}),
        ] {
            let (s, p) = app
                .post("/v1/tokens/revoke-session", &mine, bad.clone())
                .await;
            assert!(s == 400 || s == 422, "{bad}: {s} {p}");
        }
        assert_eq!(app.get("/v1/credentials", &mine).await.0, 200);

        // an admin for a user; anyone else gets 404
        let (s, _) = app
            .post(
                &format!("/v1/admin/users/{other}/revoke-session"),
                &mine,
                json!({"session_id": lost}),
            )
            .await;
        assert_eq!(s, 404);
        assert_eq!(app.get("/v1/credentials", &others).await.0, 200);
        let until = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
        let (s, v) = app
            .post(
                &format!("/v1/admin/users/{other}/revoke-session"),
                &app.admin_token(Uuid::new_v4()),
                json!({"session_id": lost, "until": until}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        revoked(app.get("/v1/credentials", &others).await);

        // at the cap, a new session id is refused (an old one may still be renewed)
        let fill = match app.backend {
            crate::helpers::Backend::Sqlite => format!(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 999) \
                 INSERT INTO revoked_sign_ins (user_id, sign_in, expires_at, revoked_at) \
                 SELECT x'{u}', randomblob(16), '2999-01-01T00:00:00.000000Z', '2026-01-01T00:00:00.000000Z' FROM n",
                u = user.simple()
            ),
            crate::helpers::Backend::Postgres => format!(
                "INSERT INTO revoked_sign_ins (user_id, sign_in, expires_at, revoked_at) \
                 SELECT '{user}', gen_random_uuid(), now() + interval '1 day', now() \
                 FROM generate_series(1, 999)"
            ),
        };
        app.raw_exec(&fill).await.unwrap();
        let (s, p) = app
            .post(
                "/v1/tokens/revoke-session",
                &mine,
                json!({"session_id": Uuid::new_v4()}),
            )
            .await;
        assert_eq!(
            (s, p["code"].as_str()),
            (409, Some("too_many_revocations")),
            "{p}"
        );
        // renewing one in force adds none; a shorter `until` keeps the later one
        let (s, v) = app
            .post(
                "/v1/tokens/revoke-session",
                &mine,
                json!({"session_id": lost, "until": until}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let kept_until: chrono::DateTime<chrono::Utc> =
            v["until"].as_str().unwrap().parse().unwrap();
        assert!(
            kept_until > chrono::Utc::now() + chrono::Duration::days(300),
            "{v}"
        );
        // a stolen token that filled its user's cap cannot keep its session from being
        // revoked: the platform (service role) or an admin is not capped
        let stolen = Uuid::new_v4();
        let thief = mint(user, stolen);
        let (s, _) = app
            .post(
                &format!("/v1/admin/users/{user}/revoke-session"),
                &app.service_token(Uuid::new_v4()),
                json!({"session_id": stolen}),
            )
            .await;
        assert_eq!(s, 200);
        revoked(app.get("/v1/credentials", &thief).await);
        // the platform's own sessions (the nil user) are not an admin's to end
        let (s, _) = app
            .post(
                &format!("/v1/admin/users/{}/revoke-session", Uuid::nil()),
                &app.admin_token(Uuid::new_v4()),
                json!({"session_id": Uuid::new_v4()}),
            )
            .await;
        assert_eq!(s, 404);
    }
);

// With `KEYGATE_JWT_ISSUER` and `KEYGATE_JWT_AUDIENCE` set, a token must carry both: one
// with another issuer or audience, or none, is refused; what `keygate token` mints
// (`mint_scoped` with the server's scope) carries both and is accepted. Before, `iss` was
// never checked, and `keygate token` left `aud` out, so its tokens were refused.
#[tokio::test]
async fn issuer_and_audience_are_required_when_set() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |c| {
        c.jwt_issuer = Some("https://id.example.test/auth/v1".into());
        c.jwt_audience = Some("authenticated".into());
    })
    .await
    .unwrap();
    let user = Uuid::new_v4();
    let now = chrono::Utc::now().timestamp();
    let refused = |(s, p): (u16, serde_json::Value), why: &str| {
        assert_eq!(s, 401, "{why}: {p}");
        assert!(p["detail"].as_str().unwrap().contains(why), "{p}");
    };
    let good = json!({"iss": "https://id.example.test/auth/v1", "aud": "authenticated"});
    assert_eq!(
        app.get("/v1/credentials", &app.token_with(user, now, good))
            .await
            .0,
        200
    );
    for (claims, why) in [
        (json!({"aud": "authenticated"}), "issuer"),
        (
            json!({"iss": "https://other.example.test/auth/v1", "aud": "authenticated"}),
            "issuer",
        ),
        (
            json!({"iss": "https://id.example.test/auth/v1"}),
            "audience",
        ),
        (
            json!({"iss": "https://id.example.test/auth/v1", "aud": "someone-else"}),
            "audience",
        ),
    ] {
        refused(
            app.get("/v1/credentials", &app.token_with(user, now, claims))
                .await,
            why,
        );
    }
    refused(app.get("/v1/credentials", &app.token(user)).await, "");
    let minted = keygate_server::auth::mint_scoped(
        &app.jwt_secret,
        Some(user),
        false,
        "authenticated",
        std::time::Duration::from_secs(600),
        &keygate_server::auth::Scope::of(&app.state.config),
        Uuid::new_v4(),
    )
    .unwrap();
    assert_eq!(app.get("/v1/credentials", &minted).await.0, 200);
}

// A JWKS fetch follows no redirect to plain http: whoever answered there could hand
// keygate a signing key, whatever `KEYGATE_JWKS_URL` was checked to be. (The URL here
// is loopback http, which is allowed; the redirect's target is the same kind, and is
// still not followed.) Tokens signed by the key behind the redirect are refused.
#[tokio::test]
async fn a_jwks_fetch_follows_no_redirect_to_plain_http() {
    let (signer, jwk) = ec_signer("ec-behind-redirect");
    let (target, jwks) = jwks_server(vec![jwk]).await;
    let router = axum::Router::new().route(
        "/jwks.json",
        get(move || {
            let target = target.clone();
            async move { axum::response::Redirect::temporary(&target) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/jwks.json", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    let app = app_with_jwks(url, 300).await;
    let (s, v) = app
        .get("/v1/credentials", &signer.token(Uuid::new_v4(), 600))
        .await;
    assert!(
        matches!(s, 401 | 503),
        "accepted through a redirect: {s} {v}"
    );
    assert_eq!(
        jwks.fetches.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the redirect was followed"
    );
}
