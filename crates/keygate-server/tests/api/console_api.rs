//! The API behind the console's newer pages (issue 10): admin views across users,
//! webhook test events, and the exchange weight recorded per call.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::{binance_body, both_backends};

both_backends!(
    admin_views_span_users_and_stay_hidden,
    |app: TestApp| async move {
        let (alice, bob, root) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let (ta, tb, admin) = (app.token(alice), app.token(bob), app.admin_token(root));
        // Non-admins and the service role get 404 on every admin view.
        for path in [
            "/v1/admin/credentials",
            "/v1/admin/integrations",
            "/v1/admin/settings",
        ] {
            assert_eq!(app.get(path, &ta).await.0, 404, "{path}");
            assert_eq!(
                app.get(path, &app.service_token(alice)).await.0,
                404,
                "{path}"
            );
        }
        // Alice's key suspended, Bob's active.
        let (_, a) = app
            .post("/v1/credentials", &ta, binance_body("alice-key"))
            .await;
        let (_, b) = app
            .post("/v1/credentials", &tb, binance_body("bob-key"))
            .await;
        let (s, v) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/credentials/{}", a["id"].as_str().unwrap()),
                &ta,
                json!({"status": "suspended"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, all) = app.get("/v1/admin/credentials", &admin).await;
        assert_eq!(s, 200, "{all}");
        assert_eq!(all["items"].as_array().unwrap().len(), 2);
        let (_, sus) = app
            .get("/v1/admin/credentials?status=suspended", &admin)
            .await;
        let items = sus["items"].as_array().unwrap();
        assert_eq!(items.len(), 1, "{sus}");
        assert_eq!(items[0]["id"], a["id"]);
        assert_eq!(items[0]["user_id"], alice.to_string());
        assert_eq!(items[0]["label"], "alice-key");
        assert!(items[0].get("api_secret").is_none());
        let text = sus.to_string();
        assert!(!text.contains(crate::API_SECRET) && !text.contains(crate::API_KEY));
        assert_ne!(items[0]["id"], b["id"]);
        let (s, v) = app.get("/v1/admin/credentials?status=bogus", &admin).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (422, Some("validation_failed")),
            "{v}"
        );
        // Paging: one per page, then the next.
        let (_, p1) = app.get("/v1/admin/credentials?limit=1", &admin).await;
        let cur = p1["next_cursor"].as_str().unwrap().to_string();
        let (_, p2) = app
            .get(
                &format!("/v1/admin/credentials?limit=1&cursor={cur}"),
                &admin,
            )
            .await;
        assert_ne!(p1["items"][0]["id"], p2["items"][0]["id"]);

        // Integrations of two users; no client secret or token in the view.
        for (t, name) in [(&ta, "a-int"), (&tb, "b-int")] {
            let (s, v) = app
                .post(
                    "/v1/integrations",
                    t,
                    json!({"provider": "example", "name": name, "client_id": "cid",
                       "client_secret": "hunter2-client-secret",
                       "token_url": "https://auth.example/token"}),
                )
                .await;
            assert_eq!(s, 201, "{v}");
        }
        let (s, ints) = app.get("/v1/admin/integrations", &admin).await;
        assert_eq!(s, 200, "{ints}");
        assert_eq!(ints["items"].as_array().unwrap().len(), 2);
        assert!(!ints.to_string().contains("hunter2"));

        // Settings: every documented setting, secrets as set/unset.
        let (s, st) = app.get("/v1/admin/settings", &admin).await;
        assert_eq!(s, 200);
        let items = st["items"].as_array().unwrap();
        let value = |n: &str| {
            items
                .iter()
                .find(|i| i["name"] == n)
                .map(|i| i["value"].as_str().unwrap().to_string())
                .unwrap()
        };
        assert_eq!(value("KEYGATE_JWT_SECRET"), "set");
        assert_eq!(value("KEYGATE_ALLOWED_UPSTREAMS"), "127.0.0.1");
        assert!(!st.to_string().contains("test-secret-test-secret"));
    }
);

/// A local receiver recording the event type header and body of each POST.
async fn receiver() -> (String, Arc<Mutex<Vec<(String, String, String)>>>) {
    let got: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |h: axum::http::HeaderMap, body: String| {
            let g = g.clone();
            async move {
                let hv = |k: &str| {
                    h.get(k)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string()
                };
                g.lock()
                    .push((hv("x-keygate-event"), hv("x-keygate-signature"), body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, got)
}

// Webhook and OAuth token URLs are chosen by users, so keygate reaches only public
// addresses with them unless the operator lists the host (KEYGATE_ALLOWED_PRIVATE_HOSTS):
// otherwise any user could make keygate POST to 127.0.0.1, 10.x or 169.254.169.254 and
// read the status back. A URL saved before the check (or since taken off the list) is
// refused when it would be sent to, and nothing reaches it.
async fn user_chosen_urls_reach_only_public_addresses(backend: crate::helpers::Backend) {
    // the operator's own receiver, on loopback: not held to the rule
    let (operator_url, operator_got) = receiver().await;
    let ou = operator_url.clone();
    let Some(app) = crate::helpers::spawn_app_with(backend, move |c| {
        c.allowed_private_hosts.clear();
        c.webhook_urls = vec![ou];
        c.webhook_secret = Some("operator-webhook-secret".to_string().into());
    })
    .await
    else {
        eprintln!("NOT RUN: PostgreSQL test needs KEYGATE_TEST_DATABASE_URL");
        return;
    };
    let t = app.token(Uuid::new_v4());
    let (url, got) = receiver().await;
    let port = url
        .split(':')
        .nth(2)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_string();
    for bad in [
        url.clone(),
        format!("http://localhost:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://10.0.0.5:8080/admin".to_string(),
    ] {
        let (s, p) = app.post("/v1/webhooks", &t, json!({"url": bad})).await;
        assert_eq!(s, 422, "{bad}: {p}");
        assert!(
            p.to_string().contains("KEYGATE_ALLOWED_PRIVATE_HOSTS"),
            "{bad}: {p}"
        );
        let (s, p) = app
            .post(
                "/v1/integrations",
                &t,
                json!({"provider": "x", "name": "x", "client_id": "c", "token_url": bad}),
            )
            .await;
        assert_eq!(s, 422, "{bad}: {p}");
        assert!(p.to_string().contains("token_url"), "{bad}: {p}");
    }
    // a public URL is accepted; pointed at loopback behind the API's back (an older
    // row), its delivery is refused unsent
    let (s, hook) = app
        .post(
            "/v1/webhooks",
            &t,
            json!({"url": "https://hooks.example.com/keygate"}),
        )
        .await;
    assert_eq!(s, 201, "{hook}");
    let id = hook["id"].as_str().unwrap().to_string();
    app.raw_exec(&format!("UPDATE webhooks SET url = '{url}'"))
        .await
        .unwrap();
    let (s, d) = app
        .post(&format!("/v1/webhooks/{id}/test"), &t, json!({}))
        .await;
    assert_eq!(s, 202, "{d}");
    let mut last = Value::Null;
    for _ in 0..100 {
        let (_, log) = app.get(&format!("/v1/webhooks/{id}/deliveries"), &t).await;
        if log["items"][0]["status"] == "failed" {
            last = log["items"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(last["status"], "failed", "never refused: {last}");
    assert!(
        last["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("not a public address")),
        "{last}"
    );
    assert!(got.lock().is_empty(), "the delivery reached loopback");
    // while the operator's KEYGATE_WEBHOOK_URLS on loopback are delivered to
    keygate_server::webhooks::emit(&app.state, None, "rotation.reminder", json!({}))
        .await
        .unwrap();
    for _ in 0..100 {
        if !operator_got.lock().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        operator_got.lock().len(),
        1,
        "the operator's receiver got nothing"
    );
}

#[tokio::test]
async fn user_chosen_urls_reach_only_public_addresses_sqlite() {
    user_chosen_urls_reach_only_public_addresses(crate::helpers::Backend::Sqlite).await;
}

#[tokio::test]
async fn user_chosen_urls_reach_only_public_addresses_postgres() {
    user_chosen_urls_reach_only_public_addresses(crate::helpers::Backend::Postgres).await;
}

// Test events go to an address the user chose, through the queue every user's deliveries
// share, so a user queues at most ten a minute (429 with Retry-After); other users are not
// held to that user's count.
both_backends!(
    webhook_tests_are_rate_limited_per_user,
    |app: TestApp| async move {
        let t = app.token(Uuid::new_v4());
        let (url, _got) = receiver().await;
        let mut hooks = Vec::new();
        for _ in 0..2 {
            let (s, hook) = app.post("/v1/webhooks", &t, json!({"url": url})).await;
            assert_eq!(s, 201, "{hook}");
            hooks.push(hook["id"].as_str().unwrap().to_string());
        }
        let test = |t: String, id: String| {
            let app = &app;
            async move {
                let r = app
                    .client
                    .post(format!("{}/v1/webhooks/{id}/test", app.base))
                    .bearer_auth(t)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap();
                let retry = r
                    .headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().to_string());
                let body: Value = r.json().await.unwrap_or(Value::Null);
                (body["code"].as_str().map(str::to_owned), retry)
            }
        };
        // ten, spread over the user's two endpoints, then no more
        for i in 0..10 {
            let (code, _) = test(t.clone(), hooks[i % 2].clone()).await;
            assert_eq!(code, None, "test {i} refused");
        }
        let (code, retry) = test(t.clone(), hooks[0].clone()).await;
        assert_eq!(code.as_deref(), Some("rate_limited"));
        assert_eq!(retry.as_deref(), Some("60"));
        // another user is not held to it
        let other = app.token(Uuid::new_v4());
        let (s, hook) = app.post("/v1/webhooks", &other, json!({"url": url})).await;
        assert_eq!(s, 201, "{hook}");
        let (code, _) = test(other, hook["id"].as_str().unwrap().to_string()).await;
        assert_eq!(code, None);
    }
);

// The limit holds against a burst: thirty test requests sent at once queue exactly ten
// events (count and insert are one transaction under the user's lock). Before, each
// request counted, then queued, so parallel requests all passed the count together.
both_backends!(
    webhook_test_limit_holds_against_a_burst,
    |app: TestApp| async move {
        let user = Uuid::new_v4();
        let t = app.token(user);
        let (url, _got) = receiver().await;
        let (s, hook) = app.post("/v1/webhooks", &t, json!({"url": url})).await;
        assert_eq!(s, 201, "{hook}");
        let id = hook["id"].as_str().unwrap().to_string();
        let sends = (0..30).map(|_| {
            let (app, t, id) = (&app, t.clone(), id.clone());
            async move {
                app.client
                    .post(format!("{}/v1/webhooks/{id}/test", app.base))
                    .bearer_auth(t)
                    .json(&json!({}))
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }
        });
        let statuses = futures::future::join_all(sends).await;
        let accepted = statuses.iter().filter(|s| **s == 202).count();
        let limited = statuses.iter().filter(|s| **s == 429).count();
        assert_eq!((accepted, limited), (10, 20), "{statuses:?}");
        let (s, log) = app
            .get(&format!("/v1/webhooks/{id}/deliveries?limit=100"), &t)
            .await;
        assert_eq!(s, 200, "{log}");
        assert_eq!(log["items"].as_array().unwrap().len(), 10, "{log}");
    }
);

// A retry goes where the endpoint points now: a user who moves a receiver (say, one that
// leaked) expects nothing more to reach the old address. (Before, every retry went to the
// URL the event was queued with.)
both_backends!(
    a_retry_goes_where_the_endpoint_points_now,
    |app: TestApp| async move {
        let t = app.token(Uuid::new_v4());
        // nothing listens on port 1: the first attempt fails and a retry is scheduled
        let (s, hook) = app
            .post(
                "/v1/webhooks",
                &t,
                json!({"url": "http://127.0.0.1:1/hook"}),
            )
            .await;
        assert_eq!(s, 201, "{hook}");
        let id = hook["id"].as_str().unwrap().to_string();
        let (s, _) = app
            .post(&format!("/v1/webhooks/{id}/test"), &t, json!({}))
            .await;
        assert_eq!(s, 202);
        let mut first = Value::Null;
        for _ in 0..100 {
            let (_, log) = app.get(&format!("/v1/webhooks/{id}/deliveries"), &t).await;
            if log["items"][0]["attempts"].as_i64() >= Some(1) {
                first = log["items"][0].clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(first["status"], "pending", "no retry scheduled: {first}");
        let (url, got) = receiver().await;
        let (s, r) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/webhooks/{id}"),
                &t,
                json!({"url": url}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        let later = keygate_storage::DbTime::new(chrono::Utc::now() + chrono::Duration::hours(1));
        keygate_server::webhooks::deliver_due(&app.state, later)
            .await
            .unwrap();
        assert_eq!(
            got.lock().len(),
            1,
            "the retry did not reach the new address"
        );
        let (_, log) = app.get(&format!("/v1/webhooks/{id}/deliveries"), &t).await;
        assert_eq!(log["items"][0]["status"], "delivered", "{log}");
    }
);

both_backends!(
    webhook_test_event_reaches_only_that_endpoint,
    |app: TestApp| async move {
        let user = Uuid::new_v4();
        let t = app.token(user);
        let (url, got) = receiver().await;
        let (other_url, other_got) = receiver().await;
        // Subscribed to one event type only: the test is sent anyway.
        let (s, hook) = app
            .post(
                "/v1/webhooks",
                &t,
                json!({"url": url, "events": ["rotation.reminder"]}),
            )
            .await;
        assert_eq!(s, 201, "{hook}");
        let secret = hook["secret"].as_str().unwrap().to_string();
        let id = hook["id"].as_str().unwrap().to_string();
        app.post("/v1/webhooks", &t, json!({"url": other_url}))
            .await;
        let (s, d) = app
            .post(&format!("/v1/webhooks/{id}/test"), &t, json!({}))
            .await;
        assert_eq!(s, 202, "{d}");
        assert_eq!(d["event_type"], "webhook.test");
        assert_eq!(d["status"], "pending");
        // Delivered by the job runner, which the test request woke.
        let mut delivered = Value::Null;
        for _ in 0..100 {
            let (_, log) = app.get(&format!("/v1/webhooks/{id}/deliveries"), &t).await;
            if log["items"][0]["status"] == "delivered" {
                delivered = log["items"][0].clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(delivered["event_type"], "webhook.test", "never delivered");
        assert_eq!(delivered["last_status_code"], 204);
        let got = got.lock().clone();
        assert_eq!(got.len(), 1);
        let (event, sig, body) = &got[0];
        assert_eq!(event, "webhook.test");
        let (ts, mac) = sig
            .strip_prefix("t=")
            .and_then(|s| s.split_once(",v1="))
            .unwrap();
        use hmac::{Hmac, Mac};
        let mut m = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
        m.update(format!("{ts}.{body}").as_bytes());
        assert_eq!(hex::encode(m.finalize().into_bytes()), *mac);
        let v: Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["data"]["webhook_id"], id.as_str());
        assert!(
            other_got.lock().is_empty(),
            "a test went to another endpoint"
        );
        // Audited; another user cannot test it; a disabled endpoint is refused.
        let (_, ev) = app.get("/v1/audit?category=webhook&action=test", &t).await;
        assert_eq!(ev["items"].as_array().unwrap().len(), 1);
        assert_eq!(
            app.post(
                &format!("/v1/webhooks/{id}/test"),
                &app.token(Uuid::new_v4()),
                json!({})
            )
            .await
            .0,
            404
        );
        let (s, _) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/webhooks/{id}"),
                &t,
                json!({"enabled": false}),
            )
            .await;
        assert_eq!(s, 200);
        let (s, v) = app
            .post(&format!("/v1/webhooks/{id}/test"), &t, json!({}))
            .await;
        assert_eq!((s, v["code"].as_str()), (409, Some("webhook_disabled")));
    }
);

both_backends!(
    exchange_weight_is_recorded_per_call,
    |app: TestApp| async move {
        let mock = crate::gateway::mock().await;
        mock.set_rate_limit_used("binance", 1234);
        let user = Uuid::new_v4();
        let t = app.token(user);
        let conn =
            crate::gateway::binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        let (s, _, body) = crate::gateway::call(
            &app,
            &t,
            reqwest::Method::GET,
            &conn,
            "api/v3/account",
            None,
        )
        .await;
        assert_eq!(s, 200, "{body}");
        let (_, conn_v) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        let mut calls = Value::Null;
        for _ in 0..50 {
            calls = app
                .get(&format!("/v1/connections/{conn}/calls"), &t)
                .await
                .1;
            if !calls["items"].as_array().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let c = &calls["items"][0];
        assert_eq!(c["rate_limit_used"], 1234, "{calls}");
        assert_eq!(c["credential_id"], conn_v["credential_id"]);
    }
);

/// Behind a TLS-terminating proxy on the same host (loopback, so no
/// `KEYGATE_ALLOW_PLAINTEXT`), a request forwarded as https gets the `Secure`,
/// `__Host-` session cookie and `Strict-Transport-Security`; the same browser reaching
/// keygate over plain HTTP has no session. Before, such a proxy got a plain cookie that
/// the browser would also send over http://.
#[tokio::test]
async fn a_console_behind_a_tls_proxy_gets_a_secure_cookie() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let sign_in = |proxy: Option<(&'static str, &'static str)>| {
        let (c, base, token) = (c.clone(), app.base.clone(), app.token(Uuid::new_v4()));
        async move {
            // the browser's origin: https when a TLS proxy says so
            let origin = match proxy {
                Some(_) => base.replacen("http://", "https://", 1),
                None => base.clone(),
            };
            let mut req = c
                .post(format!("{base}/ui/login"))
                .header("origin", origin)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={token}"));
            if let Some((k, v)) = proxy {
                req = req.header(k, v);
            }
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 303);
            let hsts = r.headers().get("strict-transport-security").cloned();
            let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
            (set, hsts)
        }
    };
    let (set, hsts) = sign_in(Some(("x-forwarded-proto", "https"))).await;
    assert!(
        set.starts_with("__Host-keygate_ui=") && set.ends_with("; Secure"),
        "{set}"
    );
    assert_eq!(hsts.unwrap(), "max-age=31536000");
    let (rfc, _) = sign_in(Some((
        "forwarded",
        "for=192.0.2.1;proto=https;host=keygate.example",
    )))
    .await;
    assert!(
        rfc.starts_with("__Host-keygate_ui=") && rfc.ends_with("; Secure"),
        "{rfc}"
    );
    let home = |cookie: String, forwarded: bool| {
        let (c, base) = (c.clone(), app.base.clone());
        async move {
            let mut req = c.get(format!("{base}/ui/")).header("cookie", cookie);
            if forwarded {
                req = req.header("x-forwarded-proto", "https");
            }
            req.send().await.unwrap().status().as_u16()
        }
    };
    let cookie = set.split(';').next().unwrap().to_string();
    assert_eq!(home(cookie.clone(), true).await, 200);
    assert_eq!(home(cookie, false).await, 303, "a session over plain HTTP");
    // a plain-HTTP console (no proxy): a plain cookie, no HSTS
    let (plain, hsts) = sign_in(None).await;
    assert!(
        plain.starts_with("keygate_ui=") && !plain.contains("Secure"),
        "{plain}"
    );
    assert!(hsts.is_none());
    let (plain, _) = sign_in(Some(("x-forwarded-proto", "http"))).await;
    assert!(plain.starts_with("keygate_ui="), "{plain}");
}

// Each user has at most 25 webhook endpoints and 50 integrations: every event is queued
// once per endpoint, and every integration is refreshed by the platform's job, so an
// unbounded number let one user grow the shared queue and job without end.
both_backends!(
    webhooks_and_integrations_are_capped_per_user,
    |app: TestApp| async move {
        let (t, other) = (app.token(Uuid::new_v4()), app.token(Uuid::new_v4()));
        let hook = |i: usize| json!({"url": format!("http://127.0.0.1:9/hook/{i}")});
        // a burst: the count and the insert are taken one at a time per owner
        let burst = (0..30).map(|i| app.post("/v1/webhooks", &t, hook(i)));
        let answers = futures::future::join_all(burst).await;
        let created = answers.iter().filter(|(s, _)| *s == 201).count();
        assert_eq!(created, 25, "{answers:?}");
        assert!(answers
            .iter()
            .all(|(s, v)| *s == 201 || (*s == 409 && v["code"] == "too_many_webhooks")));
        assert_eq!(
            app.post("/v1/webhooks", &other, hook(0)).await.0,
            201,
            "per user"
        );
        let integration = |i: usize| {
            json!({"provider": "p", "name": format!("n{i}"), "client_id": "c",
               "token_url": "http://127.0.0.1:9/token"})
        };
        for i in 0..50 {
            let (s, v) = app.post("/v1/integrations", &t, integration(i)).await;
            assert_eq!(s, 201, "{v}");
        }
        let (s, v) = app.post("/v1/integrations", &t, integration(50)).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (409, Some("too_many_integrations")),
            "{v}"
        );
        assert_eq!(
            app.post("/v1/integrations", &other, integration(0)).await.0,
            201
        );
        // nothing was stored past the limit
        let (_, l) = app.get("/v1/webhooks?limit=100", &t).await;
        assert_eq!(l["items"].as_array().unwrap().len(), 25);
    }
);

// A delivery queued for one of the operator's KEYGATE_WEBHOOK_URLS that has since been
// taken off the list ends `failed` without being sent. Before, it kept being retried
// there, and with the signing secret removed as well it was claimed again every two
// minutes without end.
#[tokio::test]
async fn a_delivery_to_a_removed_operator_url_ends_unsent() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |c| {
        c.jobs_enabled = false;
    })
    .await
    .unwrap();
    let now = keygate_storage::DbTime::now();
    let d = keygate_storage::DeliveryRecord {
        id: Uuid::now_v7(),
        webhook_id: None,
        user_id: None,
        url: "http://127.0.0.1:9/removed".into(),
        event_type: "credential.suspended".into(),
        payload: "{}".into(),
        status: "pending".into(),
        attempts: 0,
        next_attempt_at: now,
        claimed_until: None,
        last_status_code: None,
        last_error: None,
        created_at: now,
        delivered_at: None,
    };
    app.state.store.enqueue_deliveries(&[d]).await.unwrap();
    let n = keygate_server::webhooks::deliver_due(&app.state, keygate_storage::DbTime::now())
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(
        app.raw_exec(
            "DELETE FROM webhook_deliveries WHERE status = 'failed' AND attempts = 0 \
             AND last_error = 'no longer one of KEYGATE_WEBHOOK_URLS'"
        )
        .await
        .unwrap(),
        1
    );
}

// A console page that cannot read its request (an id that is not one, repeated query
// parameters, a method it does not take) answers with the console's error page, as HTML,
// not axum's plain-text rejection.
#[tokio::test]
async fn console_pages_refuse_unreadable_requests_with_their_error_page() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let cookie = app.console_sign_in(&app.token(Uuid::new_v4())).await;
    let c = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for (method, path, status) in [
        (reqwest::Method::GET, "/ui/credentials/not-a-uuid", 400),
        (reqwest::Method::GET, "/ui/audit?category=a&category=b", 400),
        (reqwest::Method::DELETE, "/ui/credentials", 405),
    ] {
        let r = c
            .request(method.clone(), format!("{}{path}", app.base))
            .header("cookie", &cookie)
            .header("origin", &app.base)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {path}");
        let ct = r.headers()["content-type"].to_str().unwrap().to_string();
        assert!(ct.starts_with("text/html"), "{method} {path}: {ct}");
        let page = r.text().await.unwrap();
        assert!(page.contains("could not read the request"), "{page}");
    }
}
