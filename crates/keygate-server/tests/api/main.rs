//! API tests: every test runs against SQLite and PostgreSQL (`both_backends!`).

mod backup;
mod bao;
mod browser;
mod ccxt_dropin;
mod console_api;
mod dek_rotation;
mod gateway;
mod helpers;
mod integrations;
mod jwks;
mod master_key;
mod openbao;
mod ops;
mod oversight;
mod schemathesis;
mod shred_cli;
mod tls;
mod upgrade;

use helpers::TestApp;
use serde_json::json;
use uuid::Uuid;

const API_KEY: &str = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
const API_SECRET: &str = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
const OKX_PASSPHRASE: &str = "okx-passphrase-zq81";

pub(crate) fn binance_body(label: &str) -> serde_json::Value {
    json!({"exchange": "binance", "label": label, "api_key": API_KEY, "api_secret": API_SECRET, "permissions": ["read", "trade"]})
}

async fn count_credentials(app: &TestApp, token: &str) -> usize {
    let (s, v) = app.get("/v1/credentials", token).await;
    assert_eq!(s, 200);
    v["items"].as_array().unwrap().len()
}

both_backends!(health_ready_openapi, |app: TestApp| async move {
    let r = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-request-id"));
    // Readiness is checked against the database; on a loaded test machine SQLite may be
    // briefly busy (a 503 then is the right answer), so allow a few tries.
    let mut r = None;
    for _ in 0..20 {
        let resp = app
            .client
            .get(format!("{}/readyz", app.base))
            .header("x-request-id", "abc-123")
            .send()
            .await
            .unwrap();
        if resp.status() == 200 {
            r = Some(resp);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
    let r = r.expect("/readyz answers 200");
    assert_eq!(r.headers()["x-request-id"], "abc-123");
    let doc: serde_json::Value = app
        .client
        .get(format!("{}/openapi.json", app.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(doc["paths"]["/v1/credentials"]["post"].is_object());
    let m = app
        .client
        .get(format!("{}/metrics", app.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        m.contains("keygate_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"}")
    );
    let r = app
        .client
        .get(format!("{}/no/such/route", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
});

both_backends!(tokens_are_checked, |app: TestApp| async move {
    let user = Uuid::new_v4();
    // missing
    let r = app
        .client
        .get(format!("{}/v1/credentials", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let p: serde_json::Value = r.json().await.unwrap();
    assert_eq!(p["code"], "unauthorized");
    // wrong secret
    let forged = keygate_server::auth::mint_token(
        &secrecy::SecretString::from("another-secret-another-secret-another"),
        Some(user),
        false,
        "authenticated",
        std::time::Duration::from_secs(600),
        "keygate_admin",
    )
    .unwrap();
    assert_eq!(app.get("/v1/credentials", &forged).await.0, 401);
    // expired (beyond the 30 s leeway)
    let now = chrono::Utc::now().timestamp();
    let expired = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": user.to_string(), "role": "authenticated", "exp": now - 120}),
        &jsonwebtoken::EncodingKey::from_secret(
            secrecy::ExposeSecret::expose_secret(&app.jwt_secret).as_bytes(),
        ),
    )
    .unwrap();
    let (s, p) = app.get("/v1/credentials", &expired).await;
    assert_eq!(s, 401);
    assert_eq!(p["detail"], "token expired");
    // valid
    assert_eq!(app.get("/v1/credentials", &app.token(user)).await.0, 200);
});

both_backends!(
    credential_lifecycle_and_isolation,
    |app: TestApp| async move {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (ta, tb) = (app.token(a), app.token(b));
        let (s, c) = app.post("/v1/credentials", &ta, binance_body("main")).await;
        assert_eq!(s, 201, "{c}");
        let text = c.to_string();
        assert!(
            !text.contains(API_SECRET) && !text.contains(API_KEY),
            "no secret in responses"
        );
        assert_eq!(c["api_key_hint"], "…Eh8A");
        let id = c["id"].as_str().unwrap().to_string();
        // duplicate label: 422 naming the field, nothing written
        let (s, p) = app.post("/v1/credentials", &ta, binance_body("main")).await;
        assert_eq!(s, 422);
        assert_eq!(p["errors"][0]["field"], "label");
        assert_eq!(count_credentials(&app, &ta).await, 1);
        // user B sees nothing and gets 404 on A's id for every verb
        assert_eq!(count_credentials(&app, &tb).await, 0);
        assert_eq!(app.get(&format!("/v1/credentials/{id}"), &tb).await.0, 404);
        assert_eq!(
            app.send(
                reqwest::Method::PATCH,
                &format!("/v1/credentials/{id}"),
                &tb,
                json!({"label": "x"})
            )
            .await
            .0,
            404
        );
        assert_eq!(
            app.send(
                reqwest::Method::DELETE,
                &format!("/v1/credentials/{id}"),
                &tb,
                json!({})
            )
            .await
            .0,
            404
        );
        assert_eq!(
            app.post(
                &format!("/v1/credentials/{id}/rotate"),
                &tb,
                json!({"api_key": API_KEY, "api_secret": "x"})
            )
            .await
            .0,
            404
        );
        assert_eq!(
            app.post(
                &format!("/v1/credentials/{id}/reveal"),
                &app.service_token(b),
                json!({})
            )
            .await
            .0,
            404
        );
        // PATCH with a stale version is refused
        let (s, _) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/credentials/{id}"),
                &ta,
                json!({"label": "renamed", "version": 99}),
            )
            .await;
        assert_eq!(s, 412);
        // an If-Match that cannot be read is refused, not taken as absent
        let r = app
            .client
            .patch(format!("{}/v1/credentials/{id}", app.base))
            .bearer_auth(&ta)
            .header(
                "if-match",
                reqwest::header::HeaderValue::from_bytes(b"\"\xff\"").unwrap(),
            )
            .json(&json!({"label": "renamed"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["code"], "bad_if_match", "{p}");
        let (s, u) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/credentials/{id}"),
                &ta,
                json!({"label": "renamed", "version": 1, "limits": {"max_trade_usd": "500"}}),
            )
            .await;
        assert_eq!(s, 200, "{u}");
        assert_eq!(u["version"], 2);
        assert_eq!(u["limits"]["max_trade_usd"], "500");
        // rotate: generation 2, hint follows the new key
        let (s, r) = app.post(&format!("/v1/credentials/{id}/rotate"), &ta, json!({"api_key": "NEWKEY-000000000000-WXYZ", "api_secret": "new-secret-value", "grace_period_seconds": 60})).await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["generation"], 2);
        assert_eq!(r["api_key_hint"], "…WXYZ");
        // the generations: the new one signs, the old one within its grace
        let (s, g) = app
            .get(&format!("/v1/credentials/{id}/generations"), &ta)
            .await;
        assert_eq!(s, 200, "{g}");
        let g = g["items"].as_array().unwrap().clone();
        assert_eq!(g.len(), 2, "{g:?}");
        assert_eq!(
            (&g[0]["generation"], &g[0]["status"], &g[0]["signs"]),
            (&json!(2), &json!("active"), &json!(true))
        );
        assert_eq!(
            (&g[1]["generation"], &g[1]["status"], &g[1]["signs"]),
            (&json!(1), &json!("rotating"), &json!(true))
        );
        assert_eq!(g[0]["rotated_from"], g[1]["id"]);
        assert!(g[1]["grace_period_ends_at"].is_string());
        assert!(!serde_json::Value::Array(g.clone())
            .to_string()
            .contains("new-secret-value"));
        assert_eq!(
            app.get(
                &format!("/v1/credentials/{id}/generations"),
                &app.token(Uuid::new_v4())
            )
            .await
            .0,
            404
        );
        // reveal: service role only, returns the current generation
        assert_eq!(
            app.post(&format!("/v1/credentials/{id}/reveal"), &ta, json!({}))
                .await
                .0,
            403
        );
        let (s, v) = app
            .post(
                &format!("/v1/credentials/{id}/reveal"),
                &app.service_token(a),
                json!({}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        assert_eq!(v["api_secret"], "new-secret-value");
        // audit: create, read, update, rotate, reveal all recorded and the chain verifies
        let (s, log) = app.get("/v1/audit", &ta).await;
        assert_eq!(s, 200);
        let actions: Vec<&str> = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["action"].as_str().unwrap())
            .collect();
        for a in ["create", "update", "rotate", "reveal"] {
            assert!(actions.contains(&a), "{a} missing from {actions:?}");
        }
        let (s, v) = app
            .get("/v1/audit/verify", &app.admin_token(Uuid::new_v4()))
            .await;
        assert_eq!(s, 200);
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(
            app.get("/v1/audit/verify", &ta).await.0,
            404,
            "non-admins cannot see admin routes"
        );
        // delete
        assert_eq!(
            app.send(
                reqwest::Method::DELETE,
                &format!("/v1/credentials/{id}"),
                &ta,
                json!({})
            )
            .await
            .0,
            204
        );
        assert_eq!(count_credentials(&app, &ta).await, 0);
    }
);

both_backends!(bad_input_is_rejected_cleanly, |app: TestApp| async move {
    let user = Uuid::new_v4();
    let t = app.token(user);
    let cases = [
        (
            json!({"exchange": "binance.us", "label": "x", "api_key": "k", "api_secret": "s"}),
            "exchange",
        ),
        (
            json!({"exchange": "okx", "label": "x", "api_key": "k", "api_secret": "s"}),
            "passphrase",
        ),
        (
            json!({"exchange": "kraken", "label": "x", "environment": "testnet", "api_key": "k", "api_secret": "s"}),
            "environment",
        ),
        (
            json!({"exchange": "binance", "label": "", "api_key": "k", "api_secret": "s"}),
            "label",
        ),
        (
            json!({"exchange": "binance", "label": "x", "api_key": "k"}),
            "api_secret",
        ),
        (
            json!({"exchange": "binance", "label": "x", "api_key": "k", "api_secret": "s", "permissions": ["admin"]}),
            "permissions",
        ),
        (
            json!({"exchange": "binance", "label": "x", "api_key": "k", "api_secret": "s", "limits": {"max_leverage": "-1"}}),
            "limits.max_leverage",
        ),
        (
            json!({"exchange": "binance", "label": 5, "api_key": "k", "api_secret": "s"}),
            "label",
        ),
        (
            json!({"exchange": "binance", "label": "x", "api_key": "k", "api_secret": "s", "permissions": "read"}),
            "permissions",
        ),
        (
            json!({"label": "x", "api_key": "k", "api_secret": "s"}),
            "exchange",
        ),
        (
            json!({"exchange": "coinbase", "label": "x", "api_key": "k", "api_secret": "s"}),
            "private_key",
        ),
    ];
    for (body, field) in cases {
        let (s, p) = app.post("/v1/credentials", &t, body.clone()).await;
        assert_eq!(s, 422, "{body} -> {p}");
        assert_eq!(p["code"], "validation_failed");
        let fields: Vec<&str> = p["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["field"].as_str().unwrap())
            .collect();
        assert!(
            fields.contains(&field),
            "{body}: expected {field} in {fields:?}"
        );
    }
    // invalid UTF-8, wrong content type, oversized body
    let r = app
        .client
        .post(format!("{}/v1/credentials", app.base))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(vec![0x7b, 0xff, 0xfe, 0x7d])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = app
        .client
        .post(format!("{}/v1/credentials", app.base))
        .bearer_auth(&t)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let big = json!({"exchange": "binance", "label": "x", "api_key": "k", "api_secret": "s".repeat(200_000)});
    let r = app
        .client
        .post(format!("{}/v1/credentials", app.base))
        .bearer_auth(&t)
        .json(&big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    assert_eq!(count_credentials(&app, &t).await, 0, "nothing was written");
    // OKX with passphrase is fine
    let (s, c) = app.post("/v1/credentials", &t, json!({"exchange": "okx", "label": "okx", "api_key": "k", "api_secret": "s", "passphrase": OKX_PASSPHRASE})).await;
    assert_eq!(s, 201);
    let cred = c["id"].as_str().unwrap().to_string();

    // Years chrono reads but nothing stores alike, and NUL, which PostgreSQL refuses: 422
    // (they were stored unreadable on SQLite, or a 500 on PostgreSQL), nothing written.
    let field_of =
        |p: &serde_json::Value| p["errors"][0]["field"].as_str().unwrap_or("").to_string();
    let far = "+10000-01-01T00:00:00Z";
    let integration = |extra: serde_json::Value| {
        let mut b = json!({"provider": "p", "name": "n", "client_id": "c", "token_url": "https://example.com/t"});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let post = reqwest::Method::POST;
    let cases = [
        (
            post.clone(),
            "/v1/credentials".to_string(),
            json!({"exchange": "binance", "label": "far", "api_key": "k", "api_secret": "s", "expires_at": far}),
            "expires_at",
        ),
        (
            reqwest::Method::PUT,
            format!("/v1/credentials/{cred}/rotation-schedule"),
            json!({"interval_days": 90, "next_due_at": "-0001-01-01T00:00:00Z"}),
            "next_due_at",
        ),
        (
            post.clone(),
            "/v1/integrations".to_string(),
            integration(
                json!({"tokens": {"access_token": "a", "refresh_token": "r", "expires_at": far}}),
            ),
            "tokens.expires_at",
        ),
        (
            post.clone(),
            "/v1/integrations".to_string(),
            integration(json!({"config": {"a": ["b\u{0}"]}})),
            "config",
        ),
        (
            post.clone(),
            "/v1/webhooks".to_string(),
            json!({"url": "https://example.com/a\u{0}b"}),
            "url",
        ),
        (
            post,
            "/v1/connections".to_string(),
            json!({"name": "m", "exchange": "okx", "credential_id": cred, "metadata": {"k\u{0}": 1}}),
            "metadata",
        ),
    ];
    for (method, path, body, field) in cases {
        let (s, p) = app.send(method, &path, &t, body.clone()).await;
        assert_eq!((s, field_of(&p)), (422, field.to_string()), "{body}: {p}");
    }
    let (s, p) = app.get("/v1/audit?category=%00", &t).await;
    assert_eq!((s, field_of(&p)), (422, "category".into()), "{p}");
    // a time filter outside what is stored is no error: nothing is that old
    let (s, p) = app.get("/v1/audit?since=-5000-01-01T00:00:00Z", &t).await;
    assert_eq!(s, 200, "{p}");
    let (_, l) = app.get("/v1/integrations", &t).await;
    assert_eq!(l["items"], json!([]), "an integration was written: {l}");
    let (_, l) = app.get("/v1/webhooks", &t).await;
    assert_eq!(l["items"], json!([]), "a webhook was written: {l}");
    assert_eq!(count_credentials(&app, &t).await, 1);
});

both_backends!(
    connections_and_upstream_allowlist,
    |app: TestApp| async move {
        let user = Uuid::new_v4();
        let t = app.token(user);
        let (_, c) = app.post("/v1/credentials", &t, binance_body("bin")).await;
        let cid = c["id"].as_str().unwrap();
        let (s, p) = app.post("/v1/connections", &t, json!({"name": "evil", "exchange": "binance", "credential_id": cid, "base_url": "https://attacker.example"})).await;
        assert_eq!(s, 422);
        assert_eq!(p["errors"][0]["field"], "base_url");
        // the exchange's own host with a path: the call would reach another endpoint than
        // the one keygate classified (`…/withdraw` + `/apply`)
        let (s, p) = app.post("/v1/connections", &t, json!({"name": "pathed", "exchange": "binance", "credential_id": cid, "base_url": "https://api.binance.com/sapi/v1/capital/withdraw"})).await;
        assert_eq!(s, 422, "{p}");
        assert_eq!(p["errors"][0]["field"], "base_url");
        assert!(
            p["errors"][0]["message"].as_str().unwrap().contains("path"),
            "{p}"
        );
        let (s, p) = app
            .post(
                "/v1/connections",
                &t,
                json!({"name": "wrong venue", "exchange": "okx", "credential_id": cid}),
            )
            .await;
        assert_eq!(s, 422, "{p}");
        let (s, conn) = app.post("/v1/connections", &t, json!({"name": "futures", "exchange": "binanceusdm", "credential_id": cid, "base_url": "http://127.0.0.1:9", "limits": {"max_requests_per_minute": 10}})).await;
        assert_eq!(s, 201, "{conn}");
        let id = conn["id"].as_str().unwrap();
        assert_eq!(
            app.get(&format!("/v1/connections/{id}"), &app.token(Uuid::new_v4()))
                .await
                .0,
            404
        );
        assert_eq!(
            app.get(&format!("/v1/connections/{id}/calls"), &t).await.0,
            200
        );
        // a credential in use cannot be deleted
        assert_eq!(
            app.send(
                reqwest::Method::DELETE,
                &format!("/v1/credentials/{cid}"),
                &t,
                json!({})
            )
            .await
            .0,
            409
        );
    }
);

both_backends!(vault_password_flow, |app: TestApp| async move {
    let user = Uuid::new_v4();
    let t = app.token(user);
    let (_, c) = app.post("/v1/credentials", &t, binance_body("v")).await;
    let id = c["id"].as_str().unwrap().to_string();
    let (s, st) = app
        .post(
            "/v1/vault/setup",
            &t,
            json!({"password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(st["protection"], "password");
    assert_eq!(st["unlocked"], true);
    assert_eq!(st["require_password_on_decrypt"], true);
    assert_eq!(st["biometric_unlock_enabled"], false);
    assert!(st["created_at"].is_string(), "{st}");
    // settings: with the fresh unlock of the caller's own sign-in only; audited
    let settings = |t: String, body: serde_json::Value| {
        let app = &app;
        async move {
            app.send(reqwest::Method::PATCH, "/v1/vault/settings", &t, body)
                .await
        }
    };
    let (s, st) = settings(
        t.clone(),
        json!({"auto_lock_minutes": 30, "biometric_unlock_enabled": true}),
    )
    .await;
    assert_eq!(s, 200, "{st}");
    assert_eq!(
        (&st["auto_lock_minutes"], &st["biometric_unlock_enabled"]),
        (&json!(30), &json!(true)),
        "{st}"
    );
    let (s, p) = settings(app.token(user), json!({"auto_lock_minutes": 1440})).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (403, Some("fresh_unlock_required")),
        "another sign-in: {p}"
    );
    let (s, p) = settings(t.clone(), json!({"auto_lock_minutes": 0})).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (422, Some("validation_failed")),
        "{p}"
    );
    let (s, p) = settings(app.token(Uuid::new_v4()), json!({"auto_lock_minutes": 5})).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (409, Some("vault_not_password_protected")),
        "{p}"
    );
    // a shorter auto-lock brings the unlock under way forward too
    let (s, st) = settings(t.clone(), json!({"auto_lock_minutes": 1})).await;
    assert_eq!(s, 200, "{st}");
    let until: chrono::DateTime<chrono::Utc> =
        st["unlocked_until"].as_str().unwrap().parse().unwrap();
    assert!(
        until <= chrono::Utc::now() + chrono::Duration::seconds(61),
        "{st}"
    );
    let (s, _) = settings(t.clone(), json!({"auto_lock_minutes": 30})).await;
    assert_eq!(s, 200);
    let (_, st) = app.get("/v1/vault/status", &t).await;
    assert_eq!(st["auto_lock_minutes"], 30, "{st}");
    let (_, log) = app
        .get("/v1/audit?category=vault&action=settings", &t)
        .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 3, "{log}");
    let svc = app.service_token(user);
    assert_eq!(
        app.post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
            .await
            .0,
        200
    );
    assert_eq!(app.post("/v1/vault/lock", &t, json!({})).await.0, 200);
    let (s, p) = app
        .post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
        .await;
    assert_eq!((s, p["code"].as_str()), (403, Some("vault_locked")));
    let (s, p) = app
        .post(
            "/v1/vault/unlock",
            &t,
            json!({"password": "wrong password!!"}),
        )
        .await;
    assert_eq!((s, p["code"].as_str()), (403, Some("wrong_password")));
    let (s, st) = app
        .post(
            "/v1/vault/unlock",
            &t,
            json!({"password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(st["failed_unlock_attempts"], 0);
    let (s, v) = app
        .post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["api_secret"], API_SECRET);
    // five failures in a row lock the vault out
    for _ in 0..5 {
        app.post(
            "/v1/vault/unlock",
            &t,
            json!({"password": "wrong password!!"}),
        )
        .await;
    }
    let (s, p) = app
        .post(
            "/v1/vault/unlock",
            &t,
            json!({"password": "correct horse battery"}),
        )
        .await;
    assert_eq!((s, p["code"].as_str()), (429, Some("vault_locked_out")));
    let (_, log) = app.get("/v1/vault/access-log", &t).await;
    let failed = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "unlock" && e["success"] == false)
        .count();
    assert!(failed >= 6, "failed unlocks are logged: {failed}");
    // crypto-shred: secrets gone for good, metadata stays
    assert_eq!(
        app.post(
            "/v1/vault/shred",
            &t,
            json!({"confirm": "SHRED ALL MY SECRETS"})
        )
        .await
        .0,
        204
    );
    let (s, _) = app
        .post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
        .await;
    assert_eq!(s, 410);
    assert_eq!(app.get(&format!("/v1/credentials/{id}"), &t).await.0, 200);
});

// Plaintext of stored secrets appears nowhere in the database files or a pg_dump.
// A burst of parallel wrong guesses is counted before the password is checked: at most
// five are tried (403 wrong_password), the rest meet the lockout (429), and so does the
// right password after them. (Checked against a count read first, all twelve were tried.)
both_backends!(
    parallel_guesses_cannot_outrun_the_lockout,
    |app: TestApp| async move {
        let t = app.token(Uuid::new_v4());
        let (s, st) = app
            .post(
                "/v1/vault/setup",
                &t,
                json!({"password": "correct horse battery"}),
            )
            .await;
        assert_eq!(s, 200, "{st}");
        let guesses = (0..12).map(|_| {
            app.post(
                "/v1/vault/unlock",
                &t,
                json!({"password": "wrong password!!"}),
            )
        });
        let answers: Vec<(u16, String)> = futures::future::join_all(guesses)
            .await
            .into_iter()
            .map(|(s, p)| (s, p["code"].as_str().unwrap_or_default().to_string()))
            .collect();
        let tried = answers
            .iter()
            .filter(|(s, c)| *s == 403 && c == "wrong_password")
            .count();
        let held = answers
            .iter()
            .filter(|(s, c)| *s == 429 && c == "vault_locked_out")
            .count();
        assert_eq!(tried + held, 12, "{answers:?}");
        assert!((1..=5).contains(&tried), "{answers:?}");
        let (s, p) = app
            .post(
                "/v1/vault/unlock",
                &t,
                json!({"password": "correct horse battery"}),
            )
            .await;
        assert_eq!((s, p["code"].as_str()), (429, Some("vault_locked_out")));
    }
);

// A shred made through one instance stops another instance's cached data key within a
// second (a cached key's row is read again every second), not after the cache's 60 s.
both_backends!(
    a_shred_stops_another_instances_cached_key,
    |app: TestApp| async move {
        let user = Uuid::new_v4();
        let t = app.token(user);
        assert_eq!(
            app.post("/v1/credentials", &t, binance_body("s")).await.0,
            201
        );
        let mut cfg =
            helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
        cfg.jobs_enabled = false;
        let second = keygate_server::Application::build(cfg).await.unwrap().state;
        let actor = keygate_storage::Actor::user(user);
        assert!(
            second.keyring.dek(actor, user, Some(1)).await.is_ok(),
            "cached there"
        );
        let shred = json!({"confirm": "SHRED ALL MY SECRETS"});
        assert_eq!(app.post("/v1/vault/shred", &t, shred).await.0, 204);
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let refused = second.keyring.dek(actor, user, Some(1)).await.err();
        assert_eq!(refused.map(|e| e.status().as_u16()), Some(410));
    }
);

// A shred and its audit event commit together: when the event cannot be stored, nothing
// is destroyed (the caller sees an error and may try again), and a shred that succeeds is
// in the access log. Before, the keys were destroyed first and the event written after,
// so a failed write left a shred nobody could see in the audit chain.
both_backends!(
    a_shred_is_never_stored_without_its_audit_event,
    |app: TestApp| async move {
        let user = Uuid::new_v4();
        let t = app.token(user);
        let (s, c) = app.post("/v1/credentials", &t, binance_body("s")).await;
        assert_eq!(s, 201, "{c}");
        let id = c["id"].as_str().unwrap().to_string();
        let when = "NEW.category = 'vault' AND NEW.action = 'shred'";
        let unfail = app.fail_inserts("fail_shred", "audit_events", when).await;
        let shred = json!({"confirm": "SHRED ALL MY SECRETS"});
        let (s, body) = app.post("/v1/vault/shred", &t, shred.clone()).await;
        assert_eq!(s, 500, "{body}");
        let (_, status) = app.get("/v1/vault/status", &t).await;
        assert_eq!(status["shredded"], false, "{status}");
        let (_, cred) = app.get(&format!("/v1/credentials/{id}"), &t).await;
        assert_ne!(cred["status"], "shredded", "{cred}");
        app.raw_exec(&unfail).await.unwrap();
        assert_eq!(app.post("/v1/vault/shred", &t, shred).await.0, 204);
        let (_, status) = app.get("/v1/vault/status", &t).await;
        assert_eq!(status["shredded"], true, "{status}");
        let (_, log) = app.get("/v1/vault/access-log", &t).await;
        let shreds = log["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "shred")
            .count();
        assert_eq!(shreds, 1, "{log}");
    }
);

// Using the vault keeps it unlocked: a use (written at most once a minute) starts the
// idle timeout the unlock set again, on the session row every instance reads.
both_backends!(
    using_the_vault_slides_its_auto_lock,
    |app: TestApp| async move {
        use keygate_storage::{Actor, DbTime};
        let user = Uuid::new_v4();
        let t = app.token(user);
        let (_, c) = app.post("/v1/credentials", &t, binance_body("slide")).await;
        let id = c["id"].as_str().unwrap().to_string();
        let setup = json!({"password": "correct horse battery", "auto_lock_minutes": 15});
        assert_eq!(app.post("/v1/vault/setup", &t, setup).await.0, 200);
        // last used 10 minutes ago, locks in 5 (an idle timeout of 15)
        let now = chrono::Utc::now();
        let at = |mins: i64| DbTime::new(now + chrono::Duration::minutes(mins)).canonical();
        let sql = format!(
            "UPDATE vault_sessions SET last_used_at = '{}', expires_at = '{}'",
            at(-10),
            at(5)
        );
        assert_eq!(app.raw_exec(&sql).await.unwrap(), 1);
        let svc = app.service_token(user);
        let reveal = format!("/v1/credentials/{id}/reveal");
        assert_eq!(app.post(&reveal, &svc, json!({})).await.0, 200);
        let session = app
            .state
            .store
            .vault_session(Actor::user(user), user, DbTime::now())
            .await
            .unwrap()
            .expect("still unlocked");
        let left = session.expires_at.0 - now;
        assert!(left > chrono::Duration::minutes(14), "locks in {left}");
        // the platform's own uses (sync and refresh jobs) do not keep an idle vault open
        assert_eq!(app.raw_exec(&sql).await.unwrap(), 1);
        app.state.keyring.evict(user);
        let job = app.state.keyring.dek(Actor::service(), user, Some(1)).await;
        assert!(job.is_ok());
        let session = app
            .state
            .store
            .vault_session(Actor::user(user), user, DbTime::now())
            .await
            .unwrap()
            .expect("still unlocked");
        let left = session.expires_at.0 - now;
        assert!(left < chrono::Duration::minutes(6), "locks in {left}");
        // a 1-minute auto-lock slides too: last used 20 s ago, locks in 40 s; a use
        // pushes it back to a minute from now (before, a session slid only when last
        // used a minute ago, so a 1-minute vault locked under steady use)
        let now = chrono::Utc::now();
        let at = |secs: i64| DbTime::new(now + chrono::Duration::seconds(secs)).canonical();
        let sql = format!(
            "UPDATE vault_sessions SET last_used_at = '{}', expires_at = '{}'",
            at(-20),
            at(40)
        );
        assert_eq!(app.raw_exec(&sql).await.unwrap(), 1);
        assert_eq!(app.post(&reveal, &svc, json!({})).await.0, 200);
        let session = app
            .state
            .store
            .vault_session(Actor::user(user), user, DbTime::now())
            .await
            .unwrap()
            .expect("still unlocked");
        let left = session.expires_at.0 - now;
        assert!(left > chrono::Duration::seconds(55), "locks in {left}");
        // an ended session's row (it holds the data key wrapped by the master key alone)
        // is deleted by the pruning job; a live one is kept
        assert_eq!(
            app.state
                .store
                .prune_vault_sessions(DbTime::now())
                .await
                .unwrap(),
            0
        );
        let ended = format!("UPDATE vault_sessions SET expires_at = '{}'", at(-1));
        assert_eq!(app.raw_exec(&ended).await.unwrap(), 1);
        assert_eq!(
            app.state
                .store
                .prune_vault_sessions(DbTime::now())
                .await
                .unwrap(),
            1
        );
        assert_eq!(app.raw_exec("DELETE FROM vault_sessions").await.unwrap(), 0);
    }
);

both_backends!(no_plaintext_at_rest, |app: TestApp| async move {
    let t = app.token(Uuid::new_v4());
    let secrets: Vec<String> = (0..5)
        .map(|i| format!("PLAINTEXT-SECRET-{i}-{}", Uuid::new_v4().simple()))
        .collect();
    for (i, s) in secrets.iter().enumerate() {
        let (st, _) = app.post("/v1/credentials", &t, json!({"exchange": "okx", "label": format!("c{i}"), "api_key": format!("KEY-{s}"), "api_secret": s, "passphrase": format!("PP-{s}")})).await;
        assert_eq!(st, 201);
    }
    let mut haystack = Vec::new();
    match app.backend {
        helpers::Backend::Sqlite => {
            for f in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
                if let Ok(b) = std::fs::read(app.data_dir.path().join(f)) {
                    haystack.extend(b);
                }
            }
            assert!(!haystack.is_empty());
        }
        helpers::Backend::Postgres => {
            let out = std::process::Command::new("pg_dump")
                .arg(&app.database_url)
                .output()
                .expect("pg_dump runs");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            haystack = out.stdout;
            assert!(String::from_utf8_lossy(&haystack).contains("credential_secrets"));
        }
    }
    for s in &secrets {
        assert!(
            !haystack.windows(s.len()).any(|w| w == s.as_bytes()),
            "plaintext found at rest"
        );
    }
});

/// A shredded user's wrapped data key leaves the SQLite file once the WAL is checkpointed:
/// its bytes are not kept anywhere the master key could still open them from. (SQLite
/// rewrote this page whole here even without `secure_delete`, which keygate sets for the
/// pages it does not.)
#[tokio::test]
async fn a_shredded_data_key_leaves_the_database_file() {
    use keygate_storage::Actor;
    let app = helpers::spawn_app(helpers::Backend::Sqlite).await.unwrap();
    let user = Uuid::new_v4();
    let t = app.token(user);
    assert_eq!(
        app.post("/v1/credentials", &t, binance_body("s")).await.0,
        201
    );
    let wrapped = app
        .state
        .store
        .active_user_key(Actor::user(user), user)
        .await
        .unwrap()
        .and_then(|k| k.wrapped_dek)
        .expect("a wrapped data key");
    let in_files = |app: &helpers::TestApp| {
        ["keygate.db", "keygate.db-wal"].iter().any(|f| {
            std::fs::read(app.data_dir.path().join(f))
                .is_ok_and(|b| b.windows(wrapped.len()).any(|w| w == wrapped.as_slice()))
        })
    };
    assert!(in_files(&app), "the test looks for the wrong bytes");
    let shred = json!({"confirm": "SHRED ALL MY SECRETS"});
    assert_eq!(app.post("/v1/vault/shred", &t, shred).await.0, 204);
    // what the WAL holds goes into the file, and the WAL is emptied
    app.raw_exec("PRAGMA wal_checkpoint(TRUNCATE)")
        .await
        .unwrap();
    assert!(
        !in_files(&app),
        "the shredded key's bytes are still in the file"
    );
}

// A key past its `expires_at` is refused by the gateway at once; the expiry job then
// marks it `expired` (audited), so lists, the admin's status filter and reminders say
// so. A later expiry brings it back (a widening: a recent sign-in on this vault). A
// suspended key stays suspended.
both_backends!(
    keys_past_their_expiry_are_marked_expired,
    |app: TestApp| async move {
        use keygate_storage::DbTime;
        let user = Uuid::new_v4();
        let t = app.token(user);
        let mut ids = vec![];
        for label in ["old", "held"] {
            let (s, c) = app.post("/v1/credentials", &t, binance_body(label)).await;
            assert_eq!(s, 201, "{c}");
            ids.push(c["id"].as_str().unwrap().to_string());
        }
        let (s, _) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/credentials/{}", ids[1]),
                &t,
                json!({"status": "suspended"}),
            )
            .await;
        assert_eq!(s, 200);
        let past = DbTime::new(chrono::Utc::now() - chrono::Duration::minutes(1)).canonical();
        app.raw_exec(&format!("UPDATE credentials SET expires_at = '{past}'"))
            .await
            .unwrap();
        let n = keygate_server::jobs::expire_credentials(&app.state, DbTime::now())
            .await
            .unwrap();
        assert_eq!(n, 1);
        let (_, c) = app.get(&format!("/v1/credentials/{}", ids[0]), &t).await;
        assert_eq!(c["status"], "expired", "{c}");
        let (_, c) = app.get(&format!("/v1/credentials/{}", ids[1]), &t).await;
        assert_eq!(c["status"], "suspended", "{c}");
        let (_, log) = app
            .get("/v1/audit?category=credential&action=expire", &t)
            .await;
        assert_eq!(log["items"][0]["credential_id"], json!(ids[0]), "{log}");
        let admin = app.admin_token(Uuid::new_v4());
        let (_, l) = app
            .get("/v1/admin/credentials?status=expired", &admin)
            .await;
        assert!(
            l["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["id"] == json!(ids[0])),
            "{l}"
        );
        // nothing more to do
        assert_eq!(
            keygate_server::jobs::expire_credentials(&app.state, DbTime::now())
                .await
                .unwrap(),
            0
        );
        // back in use: as a reactivation, by the owner with a recent sign-in only
        let later = (chrono::Utc::now() + chrono::Duration::days(30)).to_rfc3339();
        let path = format!("/v1/credentials/{}", ids[0]);
        let renew = |t: String| {
            let (app, path, body) = (&app, path.clone(), json!({"expires_at": later}));
            async move { app.send(reqwest::Method::PATCH, &path, &t, body).await }
        };
        let (s, p) = renew(app.service_token(user)).await;
        assert_eq!(
            (s, p["code"].as_str()),
            (403, Some("owner_required")),
            "{p}"
        );
        let an_hour_ago = chrono::Utc::now().timestamp() - 3600;
        let (s, p) = renew(app.token_with(user, an_hour_ago, json!({}))).await;
        assert_eq!(
            (s, p["code"].as_str()),
            (403, Some("reauthentication_required")),
            "{p}"
        );
        let (s, c) = renew(t.clone()).await;
        assert_eq!((s, c["status"].as_str()), (200, Some("active")), "{c}");
        let (_, log) = app
            .get("/v1/audit?category=credential&action=reactivate", &t)
            .await;
        assert_eq!(log["items"][0]["credential_id"], json!(ids[0]), "{log}");
    }
);

// The connection list narrows by exchange, status, default, enabled and credential;
// an unknown filter is refused rather than ignored (a typo listed everything).
both_backends!(connections_list_by_filter, |app: TestApp| async move {
    let t = app.token(Uuid::new_v4());
    let (_, b) = app.post("/v1/credentials", &t, binance_body("b")).await;
    let (_, o) = app
        .post("/v1/credentials", &t, json!({"exchange": "okx", "label": "o", "api_key": "k", "api_secret": "s", "passphrase": OKX_PASSPHRASE}))
        .await;
    for (name, cred, exchange, enabled) in [
        ("b1", &b, "binance", true),
        ("b2", &b, "binance", false),
        ("o1", &o, "okx", true),
    ] {
        let (s, c) = app
            .post(
                "/v1/connections",
                &t,
                json!({"name": name, "exchange": exchange, "credential_id": cred["id"], "is_enabled": enabled}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
    }
    let names = |q: &'static str| {
        let app = &app;
        let t = t.clone();
        async move {
            let (s, l) = app.get(&format!("/v1/connections{q}"), &t).await;
            assert_eq!(s, 200, "{q}: {l}");
            let mut n: Vec<String> = l["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["name"].as_str().unwrap().to_string())
                .collect();
            n.sort();
            n
        }
    };
    assert_eq!(names("").await, ["b1", "b2", "o1"]);
    assert_eq!(names("?exchange=binance").await, ["b1", "b2"]);
    assert_eq!(names("?exchange=binance&is_enabled=true").await, ["b1"]);
    assert_eq!(names("?is_enabled=false").await, ["b2"]);
    let by_cred = format!("?credential_id={}", o["id"].as_str().unwrap());
    let (_, l) = app.get(&format!("/v1/connections{by_cred}"), &t).await;
    assert_eq!(l["items"].as_array().unwrap().len(), 1, "{l}");
    let (s, p) = app.get("/v1/connections?stauts=healthy", &t).await;
    assert_eq!(s, 422, "{p}");
});

/// A due date an earlier release stored with a year past 9999 (as `+10000-…` text, which
/// sorts before every real date on SQLite, so it was always due) is read back, and the
/// upgrade's migration moves it to the last instant keygate stores.
#[tokio::test]
async fn a_far_year_stored_by_an_earlier_release_is_read_and_migrated() {
    let app = helpers::spawn_app(helpers::Backend::Sqlite).await.unwrap();
    let t = app.token(Uuid::new_v4());
    let (_, c) = app.post("/v1/credentials", &t, binance_body("far")).await;
    let id = c["id"].as_str().unwrap().to_string();
    let path = format!("/v1/credentials/{id}/rotation-schedule");
    let (s, v) = app
        .send(
            reqwest::Method::PUT,
            &path,
            &t,
            json!({"interval_days": 90}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    // as the earlier release wrote it, and as if this release's migration had not run
    app.raw_exec(
        "UPDATE rotation_schedules SET next_due_at = '+10000-01-01T00:00:00.000000Z'; \
         DELETE FROM _sqlx_migrations WHERE version = 20261128000190",
    )
    .await
    .unwrap();
    let (s, v) = app.get(&path, &t).await;
    assert_eq!(
        (s, v["next_due_at"].as_str()),
        (200, Some("+10000-01-01T00:00:00Z")),
        "{v}"
    );
    let (data_dir, database_url, backend) = app.stop().await;
    let app = helpers::start(data_dir, database_url, backend).await;
    let (s, v) = app.get(&path, &t).await;
    assert_eq!(
        (s, v["next_due_at"].as_str()),
        (200, Some("9999-12-31T23:59:59.999999Z")),
        "{v}"
    );
}

/// Row-level security isolates users even for a query without a WHERE clause.
#[tokio::test]
async fn rls_hides_other_users_rows() {
    let Some(app) = helpers::spawn_app(helpers::Backend::Postgres).await else {
        eprintln!("NOT RUN: needs PostgreSQL");
        return;
    };
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (u, l) in [(a, "a1"), (a, "a2"), (b, "b1")] {
        assert_eq!(
            app.post("/v1/credentials", &app.token(u), binance_body(l))
                .await
                .0,
            201
        );
    }
    let store = keygate_storage::Store::connect(&app.database_url)
        .await
        .unwrap();
    use keygate_storage::{Actor, RawTable};
    assert_eq!(
        store
            .count_rows_as(Actor::user(a), RawTable::Credentials)
            .await
            .unwrap(),
        2
    );
    assert_eq!(
        store
            .count_rows_as(Actor::user(b), RawTable::Credentials)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_rows_as(Actor::user(b), RawTable::CredentialSecrets)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        store
            .count_rows_as(Actor::user(Uuid::new_v4()), RawTable::UserKeys)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .count_rows_as(Actor::service(), RawTable::Credentials)
            .await
            .unwrap(),
        3
    );
}

/// keygate refuses to serve a PostgreSQL database where a table's row-level security
/// was turned off (checked with the migrations, at every start).
#[tokio::test]
async fn a_table_without_row_level_security_is_refused_at_start() {
    let Some(app) = helpers::spawn_app(helpers::Backend::Postgres).await else {
        eprintln!("NOT RUN: needs PostgreSQL");
        return;
    };
    app.raw_exec("ALTER TABLE api_calls DISABLE ROW LEVEL SECURITY")
        .await
        .unwrap();
    let e = app.state.store.migrate().await.unwrap_err().to_string();
    assert!(
        e.contains("row-level security") && e.contains("api_calls"),
        "{e}"
    );
    app.raw_exec("ALTER TABLE api_calls ENABLE ROW LEVEL SECURITY")
        .await
        .unwrap();
    app.state.store.migrate().await.unwrap();
}

/// Tables only the service identity writes refuse a user identity's writes (a bug
/// running a statement as the wrong user): a planted spend row could block or lift
/// another user's caps, a revocation cut-off moved back would undo "sign out everywhere".
/// The owner still reads its own rows, and deletes its call rows with a connection.
#[tokio::test]
async fn service_only_tables_refuse_a_users_writes() {
    let Some(app) = helpers::spawn_app(helpers::Backend::Postgres).await else {
        eprintln!("NOT RUN: needs PostgreSQL");
        return;
    };
    use sqlx::Connection;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let mut c = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    let as_user = |u: Uuid, role: &str| {
        format!(
            "SELECT set_config('role', 'keygate_app', true), set_config('keygate.user_id', '{u}', true), set_config('keygate.role', '{role}', true)"
        )
    };
    let writes = [
        format!("INSERT INTO credential_spend (credential_id, user_id, day, volume_usd_micros) VALUES ('{b}', '{a}', '9999-12-31', 100000000000000000)"),
        format!("INSERT INTO token_revocations (user_id, issued_before, updated_at) VALUES ('{a}', '2000-01-01T00:00:00Z', '2026-11-28T00:00:00Z')"),
        "INSERT INTO rate_counters (bucket, window_start, count) VALUES ('up:x', 0, 0)".to_string(),
        "UPDATE rate_counters SET count = 0".to_string(),
        format!("INSERT INTO api_calls (id, connection_id, credential_id, user_id, method, endpoint, class, decision, success, notional_usd_micros, withdrawal_usd_micros, created_at) VALUES ('{b}', '{b}', '{b}', '{a}', 'GET', '/', 'read', 'allowed', true, 0, 0, '2026-11-28T00:00:00Z')"),
    ];
    for w in &writes {
        sqlx::raw_sql("BEGIN").execute(&mut c).await.unwrap();
        sqlx::raw_sql(&as_user(a, "user"))
            .execute(&mut c)
            .await
            .unwrap();
        let r = sqlx::raw_sql(w).execute(&mut c).await;
        sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
        match r {
            Err(e) => assert!(e.to_string().contains("row-level security"), "{w}: {e}"),
            // an UPDATE the policies hide every row from changes nothing
            Ok(done) => assert_eq!(done.rows_affected(), 0, "{w}"),
        }
    }
    // the service identity writes them
    sqlx::raw_sql("BEGIN").execute(&mut c).await.unwrap();
    sqlx::raw_sql(&as_user(Uuid::nil(), "service"))
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::raw_sql(&writes[0]).execute(&mut c).await.unwrap();
    sqlx::raw_sql("ROLLBACK").execute(&mut c).await.unwrap();
}

/// The caches in front of the database keep to row-level security: a data key another
/// user's calls keep warm is not handed to an actor whose read the database refuses (a
/// bug passing the wrong user id). Before, the keyring served it from its cache.
#[tokio::test]
async fn the_keyring_cache_keeps_to_row_level_security() {
    let Some(app) = helpers::spawn_app(helpers::Backend::Postgres).await else {
        eprintln!("NOT RUN: needs PostgreSQL");
        return;
    };
    use keygate_storage::Actor;
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    for (u, l) in [(a, "a1"), (b, "b1")] {
        assert_eq!(
            app.post("/v1/credentials", &app.token(u), binance_body(l))
                .await
                .0,
            201
        );
    }
    // B's key, warm in the cache; a ciphertext names its version (as signing does)
    let v = match app.state.keyring.dek(Actor::user(b), b, None).await {
        Ok(h) => h.version,
        Err(_) => panic!("B's data key"),
    };
    assert!(app
        .state
        .keyring
        .dek(Actor::user(b), b, Some(v))
        .await
        .is_ok());
    assert!(
        app.state
            .keyring
            .dek(Actor::user(a), b, Some(v))
            .await
            .is_err(),
        "A was handed B's data key"
    );
    assert!(app
        .state
        .keyring
        .dek(Actor::user(a), b, None)
        .await
        .is_err());
    // the service role reads every user's rows, from the cache or not
    assert!(app
        .state
        .keyring
        .dek(Actor::service(), b, Some(v))
        .await
        .is_ok());
}

// The database itself refuses to hang one user's row under another user's: a
// connection cannot take another user's credential, a secret cannot change owner, and a
// parent with children keeps its owner. Consistent changes still go through.
both_backends!(
    the_database_refuses_a_child_row_of_another_owner,
    |app: TestApp| async move {
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let credential = |u: Uuid, label: &'static str| {
            let app = &app;
            async move {
                let (s, c) = app
                    .post("/v1/credentials", &app.token(u), binance_body(label))
                    .await;
                assert_eq!(s, 201, "{c}");
                Uuid::parse_str(c["id"].as_str().unwrap()).unwrap()
            }
        };
        let (a1, a2, b1) = (
            credential(a, "a1").await,
            credential(a, "a2").await,
            credential(b, "b1").await,
        );
        let (s, conn) = app
            .post(
                "/v1/connections",
                &app.token(a),
                json!({"name": "main", "exchange": "binance", "credential_id": a1, "base_url": "http://127.0.0.1:9"}),
            )
            .await;
        assert_eq!(s, 201, "{conn}");
        let conn = Uuid::parse_str(conn["id"].as_str().unwrap()).unwrap();
        let lit = |u: Uuid| match app.backend {
            helpers::Backend::Sqlite => format!("X'{}'", u.simple()),
            helpers::Backend::Postgres => format!("'{u}'::uuid"),
        };
        let refused = [
            // A's connection onto B's credential
            format!(
                "UPDATE connections SET credential_id = {} WHERE id = {}",
                lit(b1),
                lit(conn)
            ),
            // A's connection handed to B, its credential staying A's
            format!(
                "UPDATE connections SET user_id = {} WHERE id = {}",
                lit(b),
                lit(conn)
            ),
            // A's sealed secret filed under B
            format!(
                "UPDATE credential_secrets SET user_id = {} WHERE credential_id = {}",
                lit(b),
                lit(a1)
            ),
            // A's credential (with a connection and a secret under it) handed to B
            format!(
                "UPDATE credentials SET user_id = {} WHERE id = {}",
                lit(b),
                lit(a1)
            ),
        ];
        for sql in &refused {
            let e = app.raw_exec(sql).await.expect_err(sql);
            let msg = e.to_string();
            assert!(msg.contains("owner"), "{sql}: {msg}");
        }
        // nothing moved: A still sees its connection on its credential, B sees none
        let (s, c) = app
            .get(&format!("/v1/connections/{conn}"), &app.token(a))
            .await;
        assert_eq!(
            (s, c["credential_id"].as_str()),
            (200, Some(a1.to_string().as_str())),
            "{c}"
        );
        assert_eq!(
            app.get(&format!("/v1/connections/{conn}"), &app.token(b))
                .await
                .0,
            404
        );
        // the same change within one owner goes through
        let ok = format!(
            "UPDATE connections SET credential_id = {} WHERE id = {}",
            lit(a2),
            lit(conn)
        );
        assert_eq!(app.raw_exec(&ok).await.unwrap(), 1);
    }
);

/// A restart keeps data and keys; a different master key is refused.
#[tokio::test]
async fn restart_keeps_keys_and_refuses_a_foreign_master_key() {
    let app = helpers::spawn_app(helpers::Backend::Sqlite).await.unwrap();
    let user = Uuid::new_v4();
    let (_, c) = app
        .post("/v1/credentials", &app.token(user), binance_body("k"))
        .await;
    let id = c["id"].as_str().unwrap().to_string();
    let (data_dir, database_url, _) = app.stop().await;
    let key_file = data_dir.path().join("master.key");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&key_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let app = helpers::start(data_dir, database_url.clone(), helpers::Backend::Sqlite).await;
    let (s, v) = app
        .post(
            &format!("/v1/credentials/{id}/reveal"),
            &app.service_token(user),
            json!({}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(v["api_secret"], API_SECRET);
    // world-readable key file
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cfg = helpers::test_config(app.data_dir.path().to_path_buf(), database_url.clone());
    let err = keygate_server::Application::build(cfg)
        .await
        .err()
        .expect("refuses a world-readable key");
    assert!(
        err.to_string().contains("readable by group or others"),
        "{err}"
    );
    // another master key over existing data
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut cfg = helpers::test_config(app.data_dir.path().to_path_buf(), database_url);
    cfg.master_key = Some(keygate_crypto::MasterKey::generate().to_base64_secret());
    let err = keygate_server::Application::build(cfg)
        .await
        .err()
        .expect("refuses a foreign key");
    assert!(err.to_string().contains("does not match"), "{err}");
    // a database with keys but no key-check value would take any key as its own (and
    // record it): refused, even with the right key
    app.raw_exec("DELETE FROM keygate_meta WHERE key = 'master_key_check'")
        .await
        .unwrap();
    let cfg = helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
    let err = keygate_server::Application::build(cfg)
        .await
        .err()
        .expect("refuses to guess");
    assert!(
        err.to_string().contains("no master-key check value"),
        "{err}"
    );
}
