//! The gateway end to end against the local mock exchange, which verifies the real
//! signature: forwarding, stripping a client's own auth, policy denials that never reach
//! the exchange, rate limits (ours and the exchange's), upstream failures, bookkeeping.

use keygate_mock_exchange::{Fault, MockConfig, MockExchange, MockKey};
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::TestApp;
use crate::{both_backends, API_KEY, API_SECRET};

pub async fn mock() -> MockExchange {
    MockExchange::start(MockConfig {
        keys: vec![
            MockKey::hmac("binance", API_KEY, API_SECRET),
            MockKey::hmac(
                "kraken",
                "kraken-key",
                "a3Jha2VuLXNlY3JldC1rcmFrZW4tc2VjcmV0LTEyMzQ=",
            ),
        ],
    })
    .await
}

/// Creates a Binance credential and a connection to `mock`; returns the connection id.
pub async fn binance_connection(
    app: &TestApp,
    token: &str,
    mock: &MockExchange,
    permissions: Value,
    limits: Value,
) -> String {
    let (s, cred) = app
        .post(
            "/v1/credentials",
            token,
            json!({"exchange": "binance", "label": format!("gw-{}", Uuid::new_v4().simple()), "api_key": API_KEY, "api_secret": API_SECRET, "permissions": permissions}),
        )
        .await;
    assert_eq!(s, 201, "{cred}");
    let (s, conn) = app
        .post(
            "/v1/connections",
            token,
            json!({"name": format!("gw-{}", Uuid::new_v4().simple()), "exchange": "binance", "credential_id": cred["id"], "base_url": mock.base_url(), "limits": limits, "timeout_ms": 1500, "max_retries": 1}),
        )
        .await;
    assert_eq!(s, 201, "{conn}");
    conn["id"].as_str().unwrap().to_string()
}

pub async fn call(
    app: &TestApp,
    token: &str,
    method: reqwest::Method,
    conn: &str,
    path_and_query: &str,
    body: Option<&str>,
) -> (u16, reqwest::header::HeaderMap, String) {
    let mut r = app
        .client
        .request(
            method,
            format!("{}/v1/connections/{conn}/proxy/{path_and_query}", app.base),
        )
        .bearer_auth(token);
    if let Some(b) = body {
        r = r
            .header("content-type", "application/x-www-form-urlencoded")
            .body(b.to_string());
    }
    let r = r.send().await.unwrap();
    let status = r.status().as_u16();
    let headers = r.headers().clone();
    (status, headers, r.text().await.unwrap())
}

fn code(body: &str) -> String {
    serde_json::from_str::<Value>(body).unwrap_or(Value::Null)["code"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

both_backends!(
    proxy_signs_forwards_and_records,
    |app: TestApp| async move {
        let mock = mock().await;
        let user = Uuid::new_v4();
        let t = app.token(user);
        let conn = binance_connection(&app, &t, &mock, json!(["read", "trade"]), json!({})).await;

        // A signed read: the mock verifies the real signature and answers.
        let (s, h, body) = account(&app, &t, &conn).await;
        assert_eq!(s, 200, "{body}");
        let v: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["accountType"], "SPOT");
        assert!(
            h.contains_key("x-mbx-used-weight-1m"),
            "exchange headers pass through"
        );
        assert_eq!(mock.count_verified(), 1);

        // A client that signs itself with a placeholder key (stock CCXT): its signature,
        // timestamp and key header are replaced; keygate's token travels in X-Keygate-Token.
        let r = app
            .client
            .get(format!(
                "{}/v1/connections/{conn}/proxy/api/v3/account?timestamp=1&signature=deadbeef",
                app.base
            ))
            .header("x-keygate-token", &t)
            .header("authorization", "Bearer placeholder-for-the-exchange")
            .header("x-mbx-apikey", "placeholder")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let reqs = mock.requests();
        let last = reqs.last().unwrap();
        assert!(last.verified, "{:?}", last.rejection);
        assert_eq!(last.api_key.as_deref(), Some(API_KEY));
        assert!(
            last.header("authorization").is_none(),
            "keygate's headers never reach the exchange"
        );
        assert!(last.header("x-keygate-token").is_none());

        // Public endpoints are forwarded unsigned.
        let (s, _, _) = call(&app, &t, reqwest::Method::GET, &conn, "api/v3/time", None).await;
        assert_eq!(s, 200);
        let last = mock.requests().pop().unwrap();
        assert!(
            last.header("x-mbx-apikey").is_none(),
            "public call carries no key"
        );

        // The exchange's own 4xx body comes back unchanged.
        let (s, _, body) = call(
            &app,
            &t,
            reqwest::Method::POST,
            &conn,
            "api/v3/order",
            Some("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000"),
        )
        .await;
        assert_eq!(s, 200, "{body}");

        // Bookkeeping: api_calls rows and usage audit events, committed before the response.
        let (s, calls) = app.get(&format!("/v1/connections/{conn}/calls"), &t).await;
        assert_eq!(s, 200);
        let items = calls["items"].as_array().unwrap();
        assert_eq!(items.len(), 4, "{calls}");
        assert!(items.iter().all(|c| c["decision"] == "allowed"));
        assert!(items.iter().any(|c| c["class"] == "trade"));
        let (s, audit) = app.get("/v1/audit?category=gateway&limit=100", &t).await;
        assert_eq!(s, 200);
        let uses = audit["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["action"] == "use")
            .count();
        assert_eq!(uses, 4, "{audit}");
        // Each allowed call counts once as a use of the credential.
        let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        let cred = c["credential_id"].as_str().unwrap().to_string();
        let (_, k) = app.get(&format!("/v1/credentials/{cred}"), &t).await;
        assert_eq!(k["usage_count"], 4, "{k}");
        assert!(k["last_used_at"].is_string(), "{k}");
        // Every column round-trips: on SQLite the group commit writes through its own
        // connection and encoder (sqlite_writer.rs), and sqlx reads the rows back here.
        let conn_id: Uuid = conn.parse().unwrap();
        let rows = app
            .state
            .store
            .list_api_calls(keygate_storage::Actor::service(), user, conn_id, None, 100)
            .await
            .unwrap();
        assert_eq!(rows.len(), 4);
        let order = rows.iter().find(|r| r.class == "trade").unwrap();
        assert_eq!(order.method, "POST");
        assert_eq!(order.endpoint, "/api/v3/order");
        assert_eq!(order.credential_id.to_string(), cred);
        assert_eq!(order.user_id, user);
        assert_eq!(
            (order.decision.as_str(), order.status_code),
            ("allowed", Some(200))
        );
        assert!(order.success && order.deny_code.is_none() && order.error_message.is_none());
        assert_eq!(order.notional_usd_micros, 50_000_000, "0.001 x 50000 USD");
        assert_eq!(order.withdrawal_usd_micros, 0);
        assert!(order.rate_limit_used.is_some(), "{order:?}");
        assert_eq!(order.ip_address.as_deref(), Some("127.0.0.1"));
        assert!(order.session_id.is_some(), "the token's session");
        assert!(order.response_time_ms.is_some_and(|ms| ms >= 0));
        let age = chrono::Utc::now() - order.created_at.0;
        assert!(age.num_seconds().abs() < 60, "{age}");
        let events = app
            .state
            .store
            .list_audit(
                keygate_storage::Actor::service(),
                &keygate_storage::AuditFilter {
                    connection_id: Some(conn_id),
                    ..Default::default()
                },
                100,
            )
            .await
            .unwrap();
        let ev = events
            .iter()
            .find(|e| e.http_method.as_deref() == Some("POST"))
            .unwrap();
        assert_eq!(
            (ev.category.as_str(), ev.action.as_str()),
            ("gateway", "use")
        );
        assert_eq!(ev.endpoint.as_deref(), Some("/api/v3/order"));
        assert_eq!(ev.credential_id.map(|c| c.to_string()), Some(cred.clone()));
        assert_eq!((ev.user_id, ev.actor_id), (Some(user), Some(user)));
        assert_eq!(ev.status_code, Some(200));
        assert_eq!(ev.metadata.0["exchange"], "binance");
        assert_eq!(ev.metadata.0["class"], "trade");
        assert!(ev.seq > 0 && ev.hash.len() == 64 && ev.prev_hash.len() == 64);
        let report = app
            .state
            .store
            .verify_audit_chain(app.state.chain_key.as_ref())
            .await
            .unwrap();
        assert!(report.ok, "{report:?}");
        let m = app
            .client
            .get(format!("{}/metrics", app.base))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(m.contains("keygate_proxied_calls_total{exchange=\"binance\",class=\"read\",decision=\"allowed\",status=\"200\"}"), "{m}");
        // the group commit's own figures: batches, rows, and none failed
        let value = |series: &str| -> f64 {
            m.lines()
                .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
                .unwrap_or_else(|| panic!("no {series} in {m}"))
        };
        assert!(value("keygate_record_batches_total{outcome=\"committed\"}") >= 1.0);
        assert_eq!(
            value("keygate_record_batches_total{outcome=\"failed\"}"),
            0.0
        );
        assert!(value("keygate_record_rows_total{table=\"api_calls\"}") >= 4.0);
        assert!(value("keygate_record_commit_seconds_count{}") >= 1.0);
    }
);

both_backends!(
    denials_never_reach_the_exchange,
    |app: TestApp| async move {
        let mock = mock().await;
        let user = Uuid::new_v4();
        let t = app.token(user);
        let conn = binance_connection(
            &app,
            &t,
            &mock,
            json!(["read", "trade"]),
            json!({"max_trade_usd": "1000", "allowed_symbols": ["BTCUSDT", "ETHUSDT"]}),
        )
        .await;
        let cases: [(reqwest::Method, &str, Option<&str>, &str); 6] = [
            // withdraw scope not granted
            (
                reqwest::Method::POST,
                "sapi/v1/capital/withdraw/apply",
                Some("coin=BTC&address=bc1qxyz&amount=1"),
                "scope_denied",
            ),
            // 0.1 BTC at 50 000 = 5 000 USD > 1 000
            (
                reqwest::Method::POST,
                "api/v3/order",
                Some("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.1&price=50000"),
                "notional_exceeds_limit",
            ),
            (
                reqwest::Method::POST,
                "api/v3/order",
                Some("symbol=DOGEUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1"),
                "symbol_not_allowed",
            ),
            // market order without a price and no reference price configured
            (
                reqwest::Method::POST,
                "api/v3/order",
                Some("symbol=ETHUSDT&side=BUY&type=MARKET&quantity=1"),
                "notional_unknown",
            ),
            // unparsable order
            (
                reqwest::Method::POST,
                "api/v3/order",
                Some("symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=abc&price=1"),
                "order_unparsable",
            ),
            // a private path the module does not know
            (
                reqwest::Method::POST,
                "sapi/v9/made/up/endpoint",
                Some("x=1"),
                "endpoint_unknown",
            ),
        ];
        for (m, path, body, want) in cases {
            let (s, _, b) = call(&app, &t, m, &conn, path, body).await;
            assert_eq!((s, code(&b).as_str()), (403, want), "{path}: {b}");
            let p: Value = serde_json::from_str(&b).unwrap();
            assert!(p["detail"].as_str().unwrap().len() > 10);
        }
        assert_eq!(
            mock.requests().len(),
            0,
            "no denied call reached the exchange"
        );

        // Within limits it goes through.
        let (s, _, b) = call(
            &app,
            &t,
            reqwest::Method::POST,
            &conn,
            "api/v3/order",
            Some("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=50000"),
        )
        .await;
        assert_eq!(s, 200, "{b}");
        assert_eq!(mock.count_verified(), 1);

        let (_, calls) = app
            .get(&format!("/v1/connections/{conn}/calls?limit=100"), &t)
            .await;
        let denied: Vec<&Value> = calls["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["decision"] == "denied")
            .collect();
        assert_eq!(denied.len(), 6);
        assert!(denied
            .iter()
            .any(|c| c["deny_code"] == "notional_exceeds_limit"));

        // Another user's connection does not exist for this caller; a bad id is 404 too.
        let other = app.token(Uuid::new_v4());
        let (s, _, b) = account(&app, &other, &conn).await;
        assert_eq!((s, code(&b).as_str()), (404, "not_found"));
        let (s, _, _) = call(
            &app,
            &t,
            reqwest::Method::GET,
            "not-a-uuid",
            "api/v3/account",
            None,
        )
        .await;
        assert_eq!(s, 404);
        // No token: 401.
        let r = app
            .client
            .get(format!(
                "{}/v1/connections/{conn}/proxy/api/v3/account",
                app.base
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);

        // A disabled connection and a suspended credential deny before anything else.
        let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        let r = app
            .client
            .patch(format!("{}/v1/connections/{conn}", app.base))
            .bearer_auth(&t)
            .header("if-match", format!("\"{}\"", c["version"]))
            .json(&json!({"is_enabled": false}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let (s, _, b) = account(&app, &t, &conn).await;
        assert_eq!((s, code(&b).as_str()), (403, "connection_disabled"));
        // nor does a check or sync sign with it (before, it did)
        let (s, b) = app
            .post(&format!("/v1/connections/{conn}/sync"), &t, json!({}))
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (409, Some("connection_disabled")),
            "{b}"
        );
        assert_eq!(mock.count_verified(), 1);
    }
);

// A connection's request cap counts the calls made through that connection alone; the
// key's own cap counts its calls through every connection.
both_backends!(
    connection_rate_caps_count_their_own_calls,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let (s, cred) = app
            .post(
                "/v1/credentials",
                &t,
                json!({"exchange": "binance", "label": "shared", "api_key": API_KEY, "api_secret": API_SECRET, "permissions": ["read"], "limits": {"max_requests_per_minute": 5}}),
            )
            .await;
        assert_eq!(s, 201, "{cred}");
        let mut conns = vec![];
        for (name, limits) in [
            ("capped", json!({"max_requests_per_minute": 2})),
            ("open", json!({})),
        ] {
            let (s, c) = app
                .post(
                    "/v1/connections",
                    &t,
                    json!({"name": name, "exchange": "binance", "credential_id": cred["id"], "base_url": mock.base_url(), "limits": limits}),
                )
                .await;
            assert_eq!(s, 201, "{c}");
            conns.push(c["id"].as_str().unwrap().to_string());
        }
        let (capped, open) = (&conns[0], &conns[1]);
        // Start at the beginning of a minute so the window cannot roll over mid-test.
        let secs = chrono::Utc::now().timestamp() % 60;
        if secs > 50 {
            tokio::time::sleep(std::time::Duration::from_secs((61 - secs) as u64)).await;
        }
        // Two calls through the open connection do not use the capped one's two.
        for _ in 0..2 {
            assert_eq!(account(&app, &t, open).await.0, 200);
        }
        for _ in 0..2 {
            assert_eq!(account(&app, &t, capped).await.0, 200);
        }
        let (s, h, b) = account(&app, &t, capped).await;
        assert_eq!((s, code(&b).as_str()), (429, "rate_limited"), "{b}");
        let detail = |b: &str| serde_json::from_str::<Value>(b).unwrap()["detail"].to_string();
        assert!(
            detail(&b).contains("this connection's request limit of 2 per minute"),
            "{b}"
        );
        assert!(h.contains_key("retry-after"));
        // The key's cap (5) counted the four that passed, not the one the connection's
        // cap refused: one more fits, through the open connection, and then no more.
        assert_eq!(account(&app, &t, open).await.0, 200);
        let (s, _, b) = account(&app, &t, open).await;
        assert_eq!((s, code(&b).as_str()), (429, "rate_limited"), "{b}");
        assert!(detail(&b).contains("request limit of 5 per minute"), "{b}");
        assert!(!detail(&b).contains("connection"), "{b}");
        assert_eq!(mock.count_verified(), 5);
    }
);

both_backends!(
    rate_limits_ours_and_the_exchanges,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn = binance_connection(
            &app,
            &t,
            &mock,
            json!(["read"]),
            json!({"max_requests_per_minute": 3}),
        )
        .await;
        let mut statuses = vec![];
        let mut retry_after = None;
        for _ in 0..5 {
            let (s, h, b) = account(&app, &t, &conn).await;
            if s == 429 {
                assert_eq!(code(&b), "rate_limited");
                retry_after = h
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap().parse::<u64>().unwrap());
            }
            statuses.push(s);
        }
        // The minute may roll over between calls; at most 3 per calendar minute pass.
        let passed = statuses.iter().filter(|s| **s == 200).count();
        assert!((3..=4).contains(&passed), "{statuses:?}");
        assert!(statuses.contains(&429), "{statuses:?}");
        assert!(retry_after.is_some_and(|r| (1..=60).contains(&r)));
        assert_eq!(mock.count_verified(), passed);

        // The exchange's own limit, by weight: once its headers say 10 of Binance's 6000 are
        // left, keygate holds an account read (weight 20) itself, without calling the
        // exchange, and lets a time call (weight 1) go.
        let conn2 = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        mock.set_rate_limit_used("binance", 5990);
        let before = mock.requests().len();
        let (s, _, _) = account(&app, &t, &conn2).await;
        assert_eq!(s, 200, "the first call learns the weight");
        let (s, h, b) = account(&app, &t, &conn2).await;
        assert_eq!(
            (s, code(&b).as_str()),
            (429, "exchange_rate_limited"),
            "{b}"
        );
        assert!(h.contains_key("retry-after"));
        assert_eq!(
            mock.requests().len(),
            before + 1,
            "the held call was not sent"
        );
        let (s, _, b) = call(&app, &t, reqwest::Method::GET, &conn2, "api/v3/time", None).await;
        assert_eq!(s, 200, "a call of weight 1 still fits: {b}");
        // Used up: public calls and the connection check are held too. Binance weighs
        // them, and bans the IP on further 429s whoever sent them.
        mock.set_rate_limit_used("binance", 6000);
        let (s, _, _) = call(&app, &t, reqwest::Method::GET, &conn2, "api/v3/time", None).await;
        assert_eq!(s, 200, "this call learns that nothing is left");
        let before = mock.requests().len();
        let (s, _, b) = call(&app, &t, reqwest::Method::GET, &conn2, "api/v3/time", None).await;
        assert_eq!(
            (s, code(&b).as_str()),
            (429, "exchange_rate_limited"),
            "{b}"
        );
        let (s, b) = app
            .post(&format!("/v1/connections/{conn2}/sync"), &t, json!({}))
            .await;
        assert_eq!(
            (s, b["code"].as_str()),
            (429, Some("exchange_rate_limited")),
            "{b}"
        );
        // the sync's key check is a `/sapi` call, weighed in a budget of its own, and went;
        // its balance read was held
        let sent: Vec<String> = mock.requests()[before..]
            .iter()
            .map(|r| r.path.clone())
            .collect();
        assert_eq!(
            sent,
            ["/sapi/v1/account/apiRestrictions"],
            "only the key check was sent"
        );
    }
);

both_backends!(upstream_failures_are_502_504, |app: TestApp| async move {
    let mock = mock().await;
    let t = app.token(Uuid::new_v4());
    let conn = binance_connection(&app, &t, &mock, json!(["read", "trade"]), json!({})).await;

    mock.set_fault(Some(Fault::Delay(std::time::Duration::from_millis(2500))));
    let (s, _, b) = call(
        &app,
        &t,
        reqwest::Method::POST,
        &conn,
        "api/v3/order",
        Some("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000"),
    )
    .await;
    assert_eq!((s, code(&b).as_str()), (504, "upstream_timeout"), "{b}");
    mock.set_fault(Some(Fault::Close));
    let n = mock.requests().len();
    let (s, _, b) = call(
        &app,
        &t,
        reqwest::Method::POST,
        &conn,
        "api/v3/order",
        Some("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000"),
    )
    .await;
    assert_eq!((s, code(&b).as_str()), (502, "upstream_unavailable"), "{b}");
    assert_eq!(mock.requests().len(), n + 1, "an order is never retried");

    // Reads are retried once (max_retries = 1) on a 503, then succeed.
    mock.set_fault(None);
    mock.set_fault_times(Fault::Status(503), 1);
    let n = mock.requests().len();
    let (s, _, _) = account(&app, &t, &conn).await;
    assert_eq!(s, 200);
    assert_eq!(mock.requests().len(), n + 2);

    // A retry is another call the exchange counts: once the weight left no longer covers
    // it, the 503 stands instead of a retry over the exchange's limit. (Not across a
    // minute's end, where keygate's copy of the window ends.)
    let secs = chrono::Utc::now().timestamp() % 60;
    if secs > 55 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - secs) as u64)).await;
    }
    mock.set_rate_limit_used("binance", 5975);
    let (s, _, _) = call(&app, &t, reqwest::Method::GET, &conn, "api/v3/time", None).await;
    assert_eq!(s, 200, "learns that 25 are left");
    mock.set_fault_times(Fault::Status(503), 1);
    let n = mock.requests().len();
    let (s, _, _) = account(&app, &t, &conn).await;
    assert_eq!(
        s, 503,
        "the account read (20) went; its retry (20 more) did not fit"
    );
    assert_eq!(mock.requests().len(), n + 1);

    // Health reflects the failures, then the recovery.
    let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
    assert!(c["status"] == "healthy" || c["status"] == "degraded", "{c}");
});

both_backends!(kraken_nonces_always_increase, |app: TestApp| async move {
    let mock = mock().await;
    let t = app.token(Uuid::new_v4());
    let (s, cred) = app
        .post(
            "/v1/credentials",
            &t,
            json!({"exchange": "kraken", "label": "k", "api_key": "kraken-key", "api_secret": "a3Jha2VuLXNlY3JldC1rcmFrZW4tc2VjcmV0LTEyMzQ=", "permissions": ["read"]}),
        )
        .await;
    assert_eq!(s, 201, "{cred}");
    let (s, conn) = app
        .post(
            "/v1/connections",
            &t,
            json!({"name": "k", "exchange": "kraken", "credential_id": cred["id"], "base_url": mock.base_url()}),
        )
        .await;
    assert_eq!(s, 201);
    let conn = conn["id"].as_str().unwrap();
    for _ in 0..3 {
        let (s, _, b) = call(
            &app,
            &t,
            reqwest::Method::POST,
            conn,
            "0/private/Balance",
            Some("nonce=1"),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(
        mock.count_verified(),
        3,
        "{:?}",
        mock.requests()
            .iter()
            .map(|r| r.rejection.clone())
            .collect::<Vec<_>>()
    );
});

/// A second keygate instance on the same database (same master key, same token secret),
/// optionally with shared counters in Redis.
async fn second_instance(app: &TestApp, redis: Option<String>) -> TestApp {
    let key = std::fs::read_to_string(app.data_dir.path().join("master.key")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    crate::helpers::start_with(dir, app.database_url.clone(), app.backend, move |cfg| {
        cfg.master_key = Some(secrecy::SecretString::from(key.trim().to_string()));
        cfg.redis_url = redis;
    })
    .await
}

/// Calls alternate between two instances; the per-minute limit holds across both. The
/// key has a cap too (100 a minute), so both its count and the connection's are shared.
/// Answers the credential's and the connection's ids.
async fn limit_holds_across_instances(a: TestApp, b: TestApp) -> (String, String) {
    let mock = mock().await;
    let user = Uuid::new_v4();
    let t = a.token(user);
    let (s, cred) = a
        .post(
            "/v1/credentials",
            &t,
            json!({"exchange": "binance", "label": "shared", "api_key": API_KEY, "api_secret": API_SECRET,
                   "permissions": ["read"], "limits": {"max_requests_per_minute": 100}}),
        )
        .await;
    assert_eq!(s, 201, "{cred}");
    let (s, c) = a
        .post(
            "/v1/connections",
            &t,
            json!({"name": "shared", "exchange": "binance", "credential_id": cred["id"], "base_url": mock.base_url(),
                   "limits": {"max_requests_per_minute": 4}}),
        )
        .await;
    assert_eq!(s, 201, "{c}");
    let conn = c["id"].as_str().unwrap().to_string();
    // Start at the beginning of a minute so the window cannot roll over mid-test.
    let secs = chrono::Utc::now().timestamp() % 60;
    if secs > 50 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - secs) as u64)).await;
    }
    let mut ok = 0;
    let mut limited = 0;
    for i in 0..8 {
        let inst = if i % 2 == 0 { &a } else { &b };
        let (s, _, body) = call(
            inst,
            &t,
            reqwest::Method::GET,
            &conn,
            "api/v3/account",
            None,
        )
        .await;
        match s {
            200 => ok += 1,
            429 => {
                assert_eq!(code(&body), "rate_limited");
                limited += 1
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!((ok, limited), (4, 4), "4 per minute across both instances");
    assert_eq!(mock.count_verified(), 4);
    (cred["id"].as_str().unwrap().to_string(), conn)
}

#[tokio::test]
async fn two_instances_share_counters_on_postgres() {
    let Some(a) = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await else {
        eprintln!("PostgreSQL not configured: two-instance test not run");
        return;
    };
    let b = second_instance(&a, None).await;
    limit_holds_across_instances(a, b).await;
}

#[tokio::test]
async fn two_instances_share_counters_in_redis() {
    let redis = match std::env::var("KEYGATE_TEST_REDIS_URL") {
        Ok(u) if !u.is_empty() => u,
        _ => {
            if std::env::var("KEYGATE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1")
                || std::env::var("CI").as_deref() == Ok("true")
            {
                panic!("KEYGATE_TEST_REDIS_URL is not set: run the suite through scripts/test");
            }
            eprintln!("Redis not configured: test not run");
            return;
        }
    };
    let Some(a) = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await else {
        eprintln!("PostgreSQL not configured: test not run");
        return;
    };
    // Restart the first instance with Redis counters too.
    let a2 = second_instance(&a, Some(redis.clone())).await;
    let b = second_instance(&a, Some(redis.clone())).await;
    let (credential, connection) = limit_holds_across_instances(a2, b).await;
    // The counts are in Redis, not in the database: the key's (the 4 that passed, not
    // the 4 the connection's cap refused) and the connection's (all 8).
    let client = redis::Client::open(redis).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (pattern, calls) in [
        (format!("keygate:req:{credential}:m:*"), 4),
        (format!("keygate:reqc:{connection}:m:*"), 8),
    ] {
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(&pattern)
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(keys.len(), 1, "{pattern}: {keys:?}");
        let n: i64 = redis::cmd("GET")
            .arg(&keys[0])
            .query_async(&mut conn)
            .await
            .unwrap();
        assert_eq!(n, calls, "{pattern}");
    }
    let db: i64 = {
        use sqlx::Connection;
        let mut c = sqlx::PgConnection::connect(&a.database_url).await.unwrap();
        sqlx::query_scalar("SELECT COUNT(*) FROM rate_counters")
            .fetch_one(&mut c)
            .await
            .unwrap()
    };
    assert_eq!(
        db, 0,
        "no counter rows in PostgreSQL when Redis is configured"
    );
    drop(a);
}

both_backends!(
    sync_verifies_key_and_stores_balances,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        let (s, r) = app
            .post(&format!("/v1/connections/{conn}/sync"), &t, json!({}))
            .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["verification_status"], "verified", "{r}");
        assert!(r["error"].is_null(), "{r}");
        assert!(r["balances"].as_u64().unwrap() > 0, "{r}");
        assert!(r["key_check"]["can_read"].as_bool().unwrap());
        let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        assert_eq!(c["verification_status"], "verified");
        assert_eq!(c["status"], "healthy");
        assert!(c["last_verified_at"].is_string());
        let (_, b) = app
            .get(&format!("/v1/connections/{conn}/balances"), &t)
            .await;
        let items = b["items"].as_array().unwrap();
        assert_eq!(items.len() as u64, r["balances"].as_u64().unwrap());
        let usdt = items
            .iter()
            .find(|i| i["asset"] == "USDT")
            .expect("USDT balance");
        assert_eq!(
            usdt["usd_value"],
            usdt["total"]
                .as_str()
                .map(|t| {
                    let d: rust_decimal::Decimal = t.parse().unwrap();
                    d.round_dp(2).to_string()
                })
                .unwrap()
        );
        // Every request the sync made was signed with the real key.
        assert!(mock.requests().iter().all(|r| r.verified));
        // A wrong key: the check fails and says so; the connection is marked.
        mock.set_fault(Some(Fault::Status(401)));
        let (s, r) = app
            .post(&format!("/v1/connections/{conn}/sync"), &t, json!({}))
            .await;
        assert_eq!(s, 200);
        assert_eq!(r["verification_status"], "failed", "{r}");
        assert!(r["error"].as_str().unwrap().contains("401"), "{r}");
        let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        assert_eq!(c["status"], "degraded");
        // Someone else's connection: 404.
        let (s, _) = app
            .post(
                &format!("/v1/connections/{conn}/sync"),
                &app.token(Uuid::new_v4()),
                json!({}),
            )
            .await;
        assert_eq!(s, 404);
    }
);

/// A scripted burst followed by a use from a new IP scores 80 (burst 50 + new IP 30): the
/// credential is suspended at once, that call and the next are denied with
/// `credential_suspended`, and neither reaches the exchange.
#[tokio::test]
async fn anomaly_burst_and_new_ip_suspend_the_credential() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |cfg| {
        cfg.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await
    .unwrap();
    let mock = mock().await;
    let user = Uuid::new_v4();
    let t = app.token(user);
    let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
    for _ in 0..35 {
        let (s, _, b) = account(&app, &t, &conn).await;
        assert_eq!(s, 200, "{b}");
    }
    assert_eq!(mock.count_verified(), 35);
    let from = |ip: &'static str| {
        let app = &app;
        let t = t.clone();
        let conn = conn.clone();
        async move {
            let r = app
                .client
                .get(format!(
                    "{}/v1/connections/{conn}/proxy/api/v3/account",
                    app.base
                ))
                .bearer_auth(&t)
                .header("x-forwarded-for", ip)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.text().await.unwrap())
        }
    };
    let (s, b) = from("203.0.113.9").await;
    assert_eq!((s, code(&b).as_str()), (403, "credential_suspended"), "{b}");
    assert!(
        b.contains("new_source_ip") && b.contains("burst_above_baseline"),
        "{b}"
    );
    let (s, b) = from("127.0.0.1").await;
    assert_eq!((s, code(&b).as_str()), (403, "credential_suspended"), "{b}");
    assert_eq!(
        mock.count_verified(),
        35,
        "nothing reached the exchange after the suspension"
    );
    // The credential says why, and the audit has the suspension with its score.
    let (_, conn_v) = app.get(&format!("/v1/connections/{conn}"), &t).await;
    let (_, cred) = app
        .get(
            &format!(
                "/v1/credentials/{}",
                conn_v["credential_id"].as_str().unwrap()
            ),
            &t,
        )
        .await;
    assert_eq!(cred["status"], "suspended", "{cred}");
    let (_, audit) = app.get("/v1/audit?action=suspend&limit=10", &t).await;
    let ev = &audit["items"][0];
    assert_eq!(ev["risk_score"], 80, "{audit}");
}

/// The periodic re-score (every 5 s per credential) runs in the background: the call that
/// starts it is answered at once with the last score, and a suspension it finds denies
/// the calls after it. Threshold 50, so a burst of 35 calls from a known IP suffices.
#[tokio::test]
async fn periodic_rescoring_runs_in_the_background_and_suspends_later_calls() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |cfg| {
        cfg.anomaly_suspend_threshold = 50;
    })
    .await
    .unwrap();
    let mock = mock().await;
    let t = app.token(Uuid::new_v4());
    let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
    let account = || {
        call(
            &app,
            &t,
            reqwest::Method::GET,
            &conn,
            "api/v3/account",
            None,
        )
    };
    // the first call scores inline (new IP, no history: 0); the burst after it is not
    // re-scored within the 5 s
    let started = std::time::Instant::now();
    for _ in 0..35 {
        let (s, _, b) = account().await;
        assert_eq!(s, 200, "{b}");
    }
    tokio::time::sleep(std::time::Duration::from_millis(5_200).saturating_sub(started.elapsed()))
        .await;
    // due for a refresh: answered with the last score, not held for (or denied by) it
    let (s, _, b) = account().await;
    assert_eq!(s, 200, "the refreshing call itself goes through: {b}");
    let mut denied = None;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let (s, _, b) = account().await;
        if s != 200 {
            denied = Some((s, b));
            break;
        }
    }
    let (s, b) = denied.expect("the background score suspended the credential");
    assert_eq!((s, code(&b).as_str()), (403, "credential_suspended"), "{b}");
    let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
    let cred = c["credential_id"].as_str().unwrap();
    let (_, k) = app.get(&format!("/v1/credentials/{cred}"), &t).await;
    assert_eq!(k["status"], "suspended", "{k}");
    assert!(
        k["suspended_reason"]
            .as_str()
            .is_some_and(|r| r.contains("burst_above_baseline")),
        "{k}"
    );
}

both_backends!(
    background_sync_checks_due_connections_once,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        let now = keygate_storage::DbTime::now();
        let n = keygate_server::gateway::sync::run_connection_sync(&app.state, now, 60)
            .await
            .unwrap();
        assert_eq!(n, 1);
        let warned = |c: &Value| {
            c["warnings"]
                .as_array()
                .is_some_and(|w| w.iter().any(|w| w == "no IP restriction"))
        };
        let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        assert_eq!(c["verification_status"], "verified", "{c}");
        assert!(warned(&c), "{c}");
        // Just verified: not due again within the interval.
        let n = keygate_server::gateway::sync::run_connection_sync(&app.state, now, 60)
            .await
            .unwrap();
        assert_eq!(n, 0);
        assert!(mock.requests().iter().all(|r| r.verified));
        // A check the exchange fails learns nothing of the key: the warnings stay.
        mock.set_fault(Some(Fault::Status(503)));
        let (s, r) = app
            .post(&format!("/v1/connections/{conn}/sync"), &t, json!({}))
            .await;
        assert_eq!(s, 200, "{r}");
        mock.set_fault(None);
        let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        assert_eq!(c["verification_status"], "failed", "{c}");
        assert!(warned(&c), "a failed check cleared the warnings: {c}");
    }
);

// Connections whose sync fails (here: 21 on a suspended key) are tried once per interval
// like the others: before, they stayed first in line on every run, and with 20 or more of
// them no other connection was ever synced again.
both_backends!(
    failing_syncs_do_not_starve_other_connections,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let first = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        let credential = credential_of(&app, &t, &first).await;
        for i in 0..20 {
            let (s, c) = app
                .post(
                    "/v1/connections",
                    &t,
                    json!({"name": format!("failing-{i}"), "exchange": "binance", "credential_id": credential, "base_url": mock.base_url()}),
                )
                .await;
            assert_eq!(s, 201, "{c}");
        }
        let (s, c) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/credentials/{credential}"),
                &t,
                json!({"status": "suspended"}),
            )
            .await;
        assert_eq!(s, 200, "{c}");
        let good = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        let now = keygate_storage::DbTime::now();
        let run = || keygate_server::gateway::sync::run_connection_sync(&app.state, now, 60);
        assert_eq!(
            run().await.unwrap(),
            0,
            "the first 20 are on the suspended key"
        );
        assert_eq!(run().await.unwrap(), 1, "the good connection's turn");
        let (_, c) = app.get(&format!("/v1/connections/{good}"), &t).await;
        assert_eq!(c["verification_status"], "verified", "{c}");
        assert_eq!(
            run().await.unwrap(),
            0,
            "everything was tried this interval"
        );
        // another key behind the good connection: due again at once
        let other = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        let other_credential = credential_of(&app, &t, &other).await;
        let (s, c) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/connections/{good}"),
                &t,
                json!({"credential_id": other_credential}),
            )
            .await;
        assert_eq!(s, 200, "{c}");
        assert_eq!(run().await.unwrap(), 2, "the edited and the new connection");
    }
);

/// After a rotation the new generation signs; during the grace period a caller may still pin
/// the old one (`X-Keygate-Key-Generation`), and after it the old one is refused.
#[tokio::test]
async fn rotation_grace_period_signs_with_the_pinned_generation() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    const NEW_KEY: &str = "rotatedKeyvmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7J";
    const NEW_SECRET: &str = "rotatedSecretNhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbv";
    let mock = MockExchange::start(MockConfig {
        keys: vec![
            MockKey::hmac("binance", API_KEY, API_SECRET),
            MockKey::hmac("binance", NEW_KEY, NEW_SECRET),
        ],
    })
    .await;
    let t = app.token(Uuid::new_v4());
    let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
    let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
    let cred = c["credential_id"].as_str().unwrap().to_string();
    let rotate = |grace: i64| {
        let app = &app;
        let t = t.clone();
        let cred = cred.clone();
        async move {
            app.post(
                &format!("/v1/credentials/{cred}/rotate"),
                &t,
                json!({"api_key": NEW_KEY, "api_secret": NEW_SECRET, "grace_period_seconds": grace}),
            )
            .await
        }
    };
    let (s, r) = rotate(3600).await;
    assert_eq!(s, 200, "{r}");
    let pinned = |generation: &'static str| {
        let app = &app;
        let t = t.clone();
        let conn = conn.clone();
        async move {
            let r = app
                .client
                .get(format!(
                    "{}/v1/connections/{conn}/proxy/api/v3/account",
                    app.base
                ))
                .bearer_auth(&t)
                .header("x-keygate-key-generation", generation)
                .send()
                .await
                .unwrap();
            let s = r.status().as_u16();
            (s, r.text().await.unwrap())
        }
    };
    let (s, _, b) = account(&app, &t, &conn).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        mock.requests().last().unwrap().api_key.as_deref(),
        Some(NEW_KEY)
    );
    let (s, b) = pinned("1").await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        mock.requests().last().unwrap().api_key.as_deref(),
        Some(API_KEY)
    );
    assert!(mock.requests().iter().all(|r| r.verified));
    // A generation that does not exist, and a malformed pin.
    let (s, b) = pinned("9").await;
    assert_eq!((s, code(&b).as_str()), (403, "credential_revoked"), "{b}");
    let (s, b) = pinned("abc").await;
    assert_eq!(
        (s, code(&b).as_str()),
        (400, "invalid_key_generation"),
        "{b}"
    );
    // Rotate again without grace: generation 2 stops signing at once, and so does
    // generation 1, whose hour of grace was still running (before, it kept signing
    // until then: an owner rotating a leaked key away had no way to stop it).
    let (s, r) = rotate(0).await;
    assert_eq!(s, 200, "{r}");
    let n = mock.requests().len();
    let (s, b) = pinned("2").await;
    assert_eq!((s, code(&b).as_str()), (403, "credential_revoked"), "{b}");
    let (s, b) = pinned("1").await;
    assert_eq!((s, code(&b).as_str()), (403, "credential_revoked"), "{b}");
    assert_eq!(mock.requests().len(), n, "refused before the exchange");
}

/// A backup taken while bots call through the gateway restores into a fresh PostgreSQL and
/// a fresh SQLite database; the restored keygate signs with the same key (the mock exchange
/// verifies it) and its audit chain verifies.
#[tokio::test]
async fn backup_during_proxied_calls_restores_keys_that_sign() {
    use std::os::unix::fs::PermissionsExt;
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let mock = mock().await;
    let user = Uuid::new_v4();
    let t = app.token(user);
    let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
    let load = {
        let (client, base, t, conn) = (
            app.client.clone(),
            app.base.clone(),
            t.clone(),
            conn.clone(),
        );
        tokio::spawn(async move {
            let mut ok = 0;
            for _ in 0..40 {
                let r = client
                    .get(format!("{base}/v1/connections/{conn}/proxy/api/v3/account"))
                    .bearer_auth(&t)
                    .send()
                    .await
                    .unwrap();
                if r.status() == 200 {
                    ok += 1;
                }
            }
            ok
        })
    };
    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("live.kgbak");
    let cfg =
        crate::helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
    keygate_server::backup::backup_to_file(&cfg, &file)
        .await
        .expect("backup while the gateway is busy");
    assert_eq!(
        load.await.unwrap(),
        40,
        "every proxied call succeeded during the backup"
    );

    let mut backends = vec![crate::helpers::Backend::Sqlite];
    if crate::helpers::pg_admin_url().is_some() {
        backends.push(crate::helpers::Backend::Postgres);
    }
    for backend in backends {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        std::fs::copy(app.data_dir.path().join("master.key"), &key).unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
        let url = crate::helpers::fresh_database_url(backend, dir.path())
            .await
            .unwrap();
        let rcfg = crate::helpers::test_config(dir.path().to_path_buf(), url.clone());
        let r = keygate_server::backup::restore_from_file(&rcfg, &file)
            .await
            .expect("restore");
        assert!(r.audit.ok, "{:?}", r.audit);
        let restored = crate::helpers::start(dir, url, backend).await;
        let before = mock.count_verified();
        let (s, _, b) = account(&restored, &t, &conn).await;
        assert_eq!(s, 200, "{backend:?}: {b}");
        assert_eq!(mock.count_verified(), before + 1, "{backend:?}");
        assert_eq!(
            mock.requests().last().unwrap().api_key.as_deref(),
            Some(API_KEY)
        );
        let (s, v) = restored
            .get("/v1/audit/verify", &restored.admin_token(Uuid::new_v4()))
            .await;
        assert_eq!(
            (s, v["ok"].as_bool()),
            (200, Some(true)),
            "{backend:?}: {v}"
        );
    }
}

/// A key pair generated inside keygate: only the public key comes back, the credential is
/// pending (the gateway refuses to sign) until the exchange's key id is attached; then the
/// mock exchange verifies Ed25519 signatures made with the sealed private key.
#[tokio::test]
async fn generated_key_pair_signs_after_the_key_id_is_attached() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let t = app.token(Uuid::new_v4());
    let (s, cred) = app
        .post(
            "/v1/credentials/generate",
            &t,
            json!({"exchange": "binance", "label": "generated", "permissions": ["read"]}),
        )
        .await;
    assert_eq!(s, 201, "{cred}");
    assert_eq!(cred["status"], "pending");
    let public = cred["public_key"].as_str().unwrap().to_string();
    assert!(public.starts_with("-----BEGIN PUBLIC KEY-----"), "{public}");
    assert!(
        !cred.to_string().contains("PRIVATE KEY"),
        "no private key in the response"
    );
    let (s, bad) = app
        .post(
            "/v1/credentials/generate",
            &t,
            json!({"exchange": "okx", "label": "x"}),
        )
        .await;
    assert_eq!(
        (s, bad["errors"][0]["field"].as_str()),
        (422, Some("exchange"))
    );

    let mock = MockExchange::start(MockConfig {
        keys: vec![MockKey::public_key(
            "binance",
            "generated-key-id-0001",
            public,
        )],
    })
    .await;
    let id = cred["id"].as_str().unwrap();
    let (s, conn) = app
        .post(
            "/v1/connections",
            &t,
            json!({"name": "gen", "exchange": "binance", "credential_id": id, "base_url": mock.base_url()}),
        )
        .await;
    assert_eq!(s, 201, "{conn}");
    let conn = conn["id"].as_str().unwrap().to_string();
    let (s, _, b) = account(&app, &t, &conn).await;
    assert_eq!((s, code(&b).as_str()), (403, "credential_pending"), "{b}");
    assert_eq!(mock.requests().len(), 0);

    let (s, c) = app
        .post(
            &format!("/v1/credentials/{id}/attach-key"),
            &t,
            json!({"api_key": "generated-key-id-0001"}),
        )
        .await;
    assert_eq!(s, 200, "{c}");
    assert_eq!(c["status"], "active");
    let (s, _, b) = account(&app, &t, &conn).await;
    assert_eq!(s, 200, "{b}");
    let last = mock.requests().pop().unwrap();
    assert!(last.verified, "{:?}", last.rejection);
    assert_eq!(last.api_key.as_deref(), Some("generated-key-id-0001"));
    // Only once.
    let (s, again) = app
        .post(
            &format!("/v1/credentials/{id}/attach-key"),
            &t,
            json!({"api_key": "other"}),
        )
        .await;
    assert_eq!(
        (s, again["code"].as_str()),
        (409, Some("credential_not_pending"))
    );
}

async fn account(app: &TestApp, t: &str, conn: &str) -> (u16, reqwest::header::HeaderMap, String) {
    call(app, t, reqwest::Method::GET, conn, "api/v3/account", None).await
}

// A stored base_url is checked against KEYGATE_ALLOWED_UPSTREAMS on use, not only when it
// was saved: a row from a backup, or from before the operator narrowed the list, is
// refused (403 upstream_not_allowed) and neither a proxied call nor the background sync
// sends a signed request there.
both_backends!(
    a_stored_base_url_off_the_allowlist_is_never_contacted,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        assert_eq!(account(&app, &t, &conn).await.0, 200);
        let port = mock.base_url().rsplit(':').next().unwrap().to_string();
        app.raw_exec(&format!(
            "UPDATE connections SET base_url = 'http://localhost:{port}'"
        ))
        .await
        .unwrap();
        // past the gateway's context cache (a raw write does not invalidate it)
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let sent = mock.requests().len();
        let (s, _, b) = account(&app, &t, &conn).await;
        assert_eq!((s, code(&b).as_str()), (403, "upstream_not_allowed"), "{b}");
        let (s, r) = app
            .post(&format!("/v1/connections/{conn}/sync"), &t, json!({}))
            .await;
        assert_ne!(s, 200, "{r}");
        assert_eq!(
            mock.requests().len(),
            sent,
            "a request reached the upstream"
        );
        // an allowed host with a path (a row from before paths were refused): the call
        // would go to `…/withdraw` + the path keygate classified
        app.raw_exec(&format!(
            "UPDATE connections SET base_url = 'http://127.0.0.1:{port}/sapi/v1/capital/withdraw'"
        ))
        .await
        .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (s, _, b) = account(&app, &t, &conn).await;
        assert_eq!((s, code(&b).as_str()), (403, "upstream_not_allowed"), "{b}");
        assert_eq!(
            mock.requests().len(),
            sent,
            "a request reached the upstream"
        );
    }
);

/// The gateway reuses a loaded connection/credential state for a while
/// (`KEYGATE_GATEWAY_CACHE_MS`), but every write through this instance takes effect on the
/// very next call, and a write through another instance within the TTL.
async fn writes_reach_cached_calls(backend: crate::helpers::Backend) {
    let Some(a) = crate::helpers::spawn_app_with(backend, |c| c.gateway_cache_ms = 60_000).await
    else {
        eprintln!("NOT RUN: PostgreSQL test needs KEYGATE_TEST_DATABASE_URL");
        return;
    };
    let mock = mock().await;
    let user = Uuid::new_v4();
    let t = a.token(user);
    let conn = binance_connection(&a, &t, &mock, json!(["read", "trade"]), json!({})).await;
    for _ in 0..3 {
        assert_eq!(account(&a, &t, &conn).await.0, 200);
    }
    let (_, c) = a.get(&format!("/v1/connections/{conn}"), &t).await;
    let cred = c["credential_id"].as_str().unwrap().to_string();
    // suspend: denied at once, although the state was cached for a minute
    let (s, body) = a
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/credentials/{cred}"),
            &t,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = account(&a, &t, &conn).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (403, "credential_suspended"),
        "{body}"
    );
    // reactivate: allowed at once
    let (s, body) = a
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/credentials/{cred}"),
            &t,
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(account(&a, &t, &conn).await.0, 200);
    // limits tightened on the connection: the next order is judged by them
    let (s, body) = a
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/connections/{conn}"),
            &t,
            json!({"limits": {"allowed_symbols": ["ETHUSDT"]}}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    let (s, _, body) = call(
        &a,
        &t,
        reqwest::Method::POST,
        &conn,
        "api/v3/order",
        Some("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000"),
    )
    .await;
    assert_eq!(
        (s, code(&body).as_str()),
        (403, "symbol_not_allowed"),
        "{body}"
    );
    // a write straight through the store (a background job, another module) also counts
    a.state
        .store
        .delete_connection(
            keygate_storage::Actor::user(user),
            user,
            conn.parse().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(account(&a, &t, &conn).await.0, 404);
}

#[tokio::test]
async fn writes_reach_cached_calls_sqlite() {
    writes_reach_cached_calls(crate::helpers::Backend::Sqlite).await;
}

#[tokio::test]
async fn writes_reach_cached_calls_postgres() {
    writes_reach_cached_calls(crate::helpers::Backend::Postgres).await;
}

/// Another instance's write is seen after at most the cache TTL.
#[tokio::test]
async fn another_instances_suspension_reaches_within_the_cache_ttl() {
    let Some(a) = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await else {
        eprintln!("NOT RUN: PostgreSQL test needs KEYGATE_TEST_DATABASE_URL");
        return;
    };
    let key = std::fs::read_to_string(a.data_dir.path().join("master.key")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let b = crate::helpers::start_with(dir, a.database_url.clone(), a.backend, move |cfg| {
        cfg.master_key = Some(secrecy::SecretString::from(key.trim().to_string()));
        cfg.gateway_cache_ms = 300;
    })
    .await;
    let mock = mock().await;
    let user = Uuid::new_v4();
    let t = a.token(user);
    let conn = binance_connection(&a, &t, &mock, json!(["read"]), json!({})).await;
    let (s, _, body) = account(&b, &t, &conn).await;
    assert_eq!(s, 200, "{body}");
    let (_, c) = a.get(&format!("/v1/connections/{conn}"), &t).await;
    let cred = c["credential_id"].as_str().unwrap().to_string();
    let (s, body) = a
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/credentials/{cred}"),
            &t,
            json!({"status": "suspended"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    let (s, _, body) = account(&b, &t, &conn).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (403, "credential_suspended"),
        "{body}"
    );
}

// Concurrent calls on two credentials are committed in shared batches (one statement
// per batch on PostgreSQL, the writer thread on SQLite): every call has its row and its
// audit event, each credential counts exactly its own allowed calls, denied calls count
// as none, and the chain verifies.
both_backends!(
    concurrent_calls_batch_and_count_exactly,
    |app: TestApp| async move {
        let mock = mock().await;
        let user = Uuid::new_v4();
        let t = app.token(user);
        let a = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        let b = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        let calls = (0..30).map(|i| {
            let (app, t) = (&app, t.clone());
            let conn = if i % 2 == 0 { a.clone() } else { b.clone() };
            async move {
                // every tenth call is an order on a read-only key: denied, never forwarded
                let (method, path, body) = if i % 10 == 9 {
                    (
                        reqwest::Method::POST,
                        "api/v3/order",
                        Some("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000"),
                    )
                } else {
                    (reqwest::Method::GET, "api/v3/account", None)
                };
                call(app, &t, method, &conn, path, body).await.0
            }
        });
        let statuses = futures::future::join_all(calls).await;
        // calls 9, 19, 29 are denied, all on connection b (odd)
        assert_eq!(
            statuses.iter().filter(|s| **s == 200).count(),
            27,
            "{statuses:?}"
        );
        assert_eq!(
            statuses.iter().filter(|s| **s == 403).count(),
            3,
            "{statuses:?}"
        );
        for (conn, allowed, denied) in [(&a, 15, 0), (&b, 12, 3)] {
            let id: Uuid = conn.parse().unwrap();
            let rows = app
                .state
                .store
                .list_api_calls(keygate_storage::Actor::service(), user, id, None, 100)
                .await
                .unwrap();
            let n = |d: &str| rows.iter().filter(|r| r.decision == d).count();
            assert_eq!((n("allowed"), n("denied")), (allowed, denied), "{conn}");
            let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
            let cred = c["credential_id"].as_str().unwrap();
            let (_, k) = app.get(&format!("/v1/credentials/{cred}"), &t).await;
            assert_eq!(k["usage_count"], allowed, "{k}");
        }
        let events = app
            .state
            .store
            .list_audit(
                keygate_storage::Actor::service(),
                &keygate_storage::AuditFilter {
                    category: Some("gateway".into()),
                    ..Default::default()
                },
                100,
            )
            .await
            .unwrap();
        let n = |a: &str| events.iter().filter(|e| e.action == a).count();
        assert_eq!((n("use"), n("denied")), (27, 3));
        let report = app
            .state
            .store
            .verify_audit_chain(app.state.chain_key.as_ref())
            .await
            .unwrap();
        assert!(report.ok, "{report:?}");
    }
);

/// An audit event for `user` with the chain fields left for the writer.
fn plain_event(user: Uuid, action: &str) -> keygate_storage::AuditEvent {
    keygate_storage::AuditEvent {
        actor_id: Some(user),
        user_id: Some(user),
        ..keygate_storage::AuditEvent::new("gateway", action, "user")
    }
}

/// Two instances record gateway calls at once. Each instance's writer chains a batch onto
/// the head its own last batch left and writes the batch only if the head is still there,
/// so the two keep overtaking each other: every loser must write nothing and chain again.
/// The chain must stay one unbroken line, and no call row, use or event may be lost or
/// written twice.
#[tokio::test]
async fn two_instances_recording_at_once_keep_one_chain_on_postgres() {
    let Some(a) = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await else {
        eprintln!("PostgreSQL not configured: two-instance test not run");
        return;
    };
    let other = keygate_storage::Store::connect(&a.database_url)
        .await
        .unwrap();
    let key = a.state.chain_key.clone();
    let user = Uuid::new_v4();
    let t = a.token(user);
    let (s, cred) = a
        .post(
            "/v1/credentials",
            &t,
            json!({"exchange": "binance", "label": "two", "api_key": API_KEY, "api_secret": API_SECRET, "permissions": ["read"]}),
        )
        .await;
    assert_eq!(s, 201, "{cred}");
    let (s, conn) = a
        .post(
            "/v1/connections",
            &t,
            json!({"name": "two", "exchange": "binance", "credential_id": cred["id"]}),
        )
        .await;
    assert_eq!(s, 201, "{conn}");
    let credential: Uuid = cred["id"].as_str().unwrap().parse().unwrap();
    let connection: Uuid = conn["id"].as_str().unwrap().parse().unwrap();
    let mut tasks = Vec::new();
    for i in 0..64usize {
        let store = if i % 2 == 0 {
            a.state.store.clone()
        } else {
            other.clone()
        };
        let key = key.clone();
        tasks.push(tokio::spawn(async move {
            let call = keygate_storage::ApiCallRecord {
                id: Uuid::now_v7(),
                connection_id: connection,
                credential_id: credential,
                user_id: user,
                method: "GET".into(),
                endpoint: format!("/api/v3/account?t={i}"),
                class: "read".into(),
                decision: "allowed".into(),
                deny_code: None,
                status_code: Some(200),
                response_time_ms: Some(1),
                success: true,
                error_message: None,
                rate_limit_remaining: None,
                rate_limit_reset: None,
                rate_limit_used: None,
                notional_usd_micros: 0,
                withdrawal_usd_micros: 0,
                ip_address: None,
                user_agent: None,
                session_id: None,
                created_at: keygate_storage::DbTime::now(),
                reserved: None,
            };
            // batches of one to three events
            let events = (0..=i % 3)
                .map(|j| plain_event(user, &format!("t{i}e{j}")))
                .collect();
            store
                .record_batch_owned(vec![call], events, key.as_ref())
                .await
                .unwrap()
        }));
    }
    let mut written = 0;
    for t in tasks {
        let stored = t.await.unwrap();
        // each task gets its own events back, chained in order
        assert!(stored.windows(2).all(|w| w[1].seq == w[0].seq + 1));
        written += stored.len();
    }
    assert_eq!(written, 64 / 3 * 6 + 1, "1+2+3 events per three tasks");
    let service = keygate_storage::Actor::service();
    let mine = a
        .state
        .store
        .list_audit(
            service,
            &keygate_storage::AuditFilter {
                user_id: Some(user),
                category: Some("gateway".into()),
                ..Default::default()
            },
            1000,
        )
        .await
        .unwrap();
    assert_eq!(mine.len(), written, "every event stored once");
    let seqs: std::collections::BTreeSet<i64> = mine.iter().map(|e| e.seq).collect();
    assert_eq!(seqs.len(), written, "no sequence number given twice");
    let calls = a
        .state
        .store
        .list_api_calls(service, user, connection, None, 1000)
        .await
        .unwrap();
    assert_eq!(calls.len(), 64, "every call row stored once");
    let (s, cred) = a.get(&format!("/v1/credentials/{credential}"), &t).await;
    assert_eq!(s, 200, "{cred}");
    assert_eq!(cred["usage_count"], 64, "every use counted once");
    let report = a
        .state
        .store
        .verify_audit_chain(key.as_ref())
        .await
        .unwrap();
    assert!(report.ok, "{report:?}");
    other.close().await;
}

/// A mock exchange, a user's token and a Binance connection allowed to withdraw at most
/// 250 USD a day.
async fn capped_withdrawals(app: &TestApp) -> (MockExchange, String, String) {
    let mock = mock().await;
    let t = app.token(Uuid::new_v4());
    let limits = json!({"max_withdrawal_usd_per_day": "250"});
    let conn = binance_connection(app, &t, &mock, json!(["read", "withdraw"]), limits).await;
    (mock, t, conn)
}

/// `n` withdrawals of 100 USDT at once, taking turns over `apps`, while the exchange is
/// slow to answer (so all are under way together): how many went out and how many were
/// refused for the daily cap. Only the ones that went out reached the exchange.
async fn parallel_withdrawals(
    apps: &[&TestApp],
    mock: &MockExchange,
    t: &str,
    conn: &str,
    n: usize,
) -> (usize, usize) {
    mock.set_fault(Some(Fault::Delay(std::time::Duration::from_millis(300))));
    let withdrawals = (0..n).map(|i| withdraw(apps[i % apps.len()], t, conn, 100));
    let answers: Vec<(u16, String)> = futures::future::join_all(withdrawals).await;
    mock.set_fault(None);
    let sent = answers.iter().filter(|(s, _)| *s == 200).count();
    let refused = answers
        .iter()
        .filter(|(s, c)| *s == 403 && c == "withdrawal_daily_limit_exceeded")
        .count();
    assert_eq!(sent + refused, n, "{answers:?}");
    assert_eq!(
        mock.requests().len(),
        sent,
        "the refused ones never reached the exchange"
    );
    (sent, refused)
}

/// A USDT withdrawal of `amount` through `conn`: status and problem code.
async fn withdraw(app: &TestApp, t: &str, conn: &str, amount: u32) -> (u16, String) {
    let body = format!("coin=USDT&address=TXyz1&network=TRX&amount={amount}");
    let path = "sapi/v1/capital/withdraw/apply";
    let (s, _, b) = call(app, t, reqwest::Method::POST, conn, path, Some(&body)).await;
    (s, code(&b))
}

// Parallel withdrawals against a daily cap: each one's amount is reserved in the ledger
// by its policy check, before it goes out, so the exchange is slow to answer and all five
// are under way at once, yet only what fits under the cap goes out. (Checked against the
// committed calls alone, all five went out: none of them had committed when the others
// were checked.)
both_backends!(
    parallel_withdrawals_stay_under_the_daily_cap,
    |app: TestApp| async move {
        let (mock, t, conn) = capped_withdrawals(&app).await;
        assert_eq!(
            parallel_withdrawals(&[&app], &mock, &t, &conn, 5).await,
            (2, 3)
        );
        // the sent ones count once (their rows settled their reservations): 50 more fit
        assert_eq!(withdraw(&app, &t, &conn, 50).await, (200, String::new()));
    }
);

// A capped call waits at most 5 s for its key's spend lock, which every instance on the
// PostgreSQL takes (here another session holds it), then is refused with
// `counters_unavailable` without reaching the exchange; once the lock is free it goes out.
#[tokio::test]
async fn a_spend_lock_held_elsewhere_refuses_after_5_s() {
    use sqlx::Connection;
    let Some(app) = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await else {
        eprintln!("PostgreSQL not configured: test not run");
        return;
    };
    let (mock, t, conn) = capped_withdrawals(&app).await;
    let credential: Uuid = credential_of(&app, &t, &conn).await.parse().unwrap();
    // the key keygate's spend check locks (`keygate_storage::spend::lock_key`)
    let (hi, lo) = credential.as_u64_pair();
    let mut other = sqlx::PgConnection::connect(&app.database_url)
        .await
        .unwrap();
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind((hi ^ lo) as i64)
        .execute(&mut other)
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let refused = withdraw(&app, &t, &conn, 100).await;
    let waited = started.elapsed();
    assert_eq!(refused, (503, "counters_unavailable".to_string()));
    assert!(
        (4_500..15_000).contains(&waited.as_millis()),
        "waited {waited:?}"
    );
    assert!(
        mock.requests().is_empty(),
        "a refused call reached the exchange"
    );
    sqlx::query("ROLLBACK").execute(&mut other).await.unwrap();
    assert_eq!(withdraw(&app, &t, &conn, 100).await, (200, String::new()));
    assert_eq!(mock.requests().len(), 1);
}

// A NUL in a proxied path (`%00`, decoded) is refused as malformed, and its row is
// recorded with U+FFFD in its place: PostgreSQL refuses U+0000 in text, and the one row
// failed the whole group commit, so the calls batched with it (other users' included,
// already forwarded) answered 500 with no row and no audit event.
both_backends!(
    a_nul_in_a_path_fails_no_one_elses_bookkeeping,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        let other = app.token(Uuid::new_v4());
        let theirs = binance_connection(&app, &other, &mock, json!(["read"]), json!({})).await;
        let nul = (0..8).map(|_| {
            call(
                &app,
                &t,
                reqwest::Method::GET,
                &conn,
                "api/v3/ti%00me",
                None,
            )
        });
        let fine = (0..8).map(|_| {
            call(
                &app,
                &other,
                reqwest::Method::GET,
                &theirs,
                "api/v3/time",
                None,
            )
        });
        let (nul, fine) = futures::future::join(
            futures::future::join_all(nul),
            futures::future::join_all(fine),
        )
        .await;
        for (s, _, b) in &nul {
            assert_eq!((*s, code(b).as_str()), (403, "request_malformed"), "{b}");
        }
        for (s, _, b) in &fine {
            assert_eq!(*s, 200, "{b}");
        }
        let (_, calls) = app
            .get(&format!("/v1/connections/{theirs}/calls?limit=100"), &other)
            .await;
        assert_eq!(calls["items"].as_array().unwrap().len(), 8, "{calls}");
        let (_, calls) = app
            .get(&format!("/v1/connections/{conn}/calls?limit=100"), &t)
            .await;
        let items = calls["items"].as_array().unwrap();
        assert_eq!(items.len(), 8, "{calls}");
        assert!(
            items
                .iter()
                .all(|c| c["endpoint"] == "/api/v3/ti\u{fffd}me"),
            "{calls}"
        );
        let (s, v) = app
            .get("/v1/audit/verify", &app.admin_token(Uuid::new_v4()))
            .await;
        assert_eq!((s, v["ok"].as_bool()), (200, Some(true)), "{v}");
    }
);

// A withdrawal allowlist entry may name the network: the address is then allowed on that
// network only (an EVM address on another chain may not be the same owner's), and not
// when the request leaves the network to the exchange's default. The entry is stored and
// read back as written; a bad one is refused by field. Before, entries named no network.
both_backends!(
    withdrawal_allowlist_entries_pin_a_network,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let allowlist = json!([{"address": "TXyz1", "network": "TRX"}, "0xAnyChain"]);
        let conn = binance_connection(
            &app,
            &t,
            &mock,
            json!(["read", "withdraw"]),
            json!({ "withdrawal_address_allowlist": allowlist }),
        )
        .await;
        let (s, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        assert_eq!(s, 200, "{c}");
        assert_eq!(c["limits"]["withdrawal_address_allowlist"], allowlist);

        let path = "sapi/v1/capital/withdraw/apply";
        let send = |to: &'static str| {
            let body = format!("coin=USDT&address={to}&amount=10");
            let (app, t, conn) = (&app, &t, &conn);
            async move {
                let (s, _, b) = call(app, t, reqwest::Method::POST, conn, path, Some(&body)).await;
                (s, code(&b), b)
            }
        };
        for allowed in [
            "TXyz1&network=TRX",
            "TXyz1&network=trx",
            "0xAnyChain&network=BSC",
        ] {
            let (s, code, b) = send(allowed).await;
            assert_eq!((s, code.as_str()), (200, ""), "{allowed}: {b}");
        }
        let reached = mock.requests().len();
        for refused in ["TXyz1&network=BSC", "TXyz1", "TXyz1&network="] {
            let (s, code, b) = send(refused).await;
            assert_eq!(
                (s, code.as_str()),
                (403, "withdrawal_address_not_allowed"),
                "{refused}: {b}"
            );
        }
        assert_eq!(
            mock.requests().len(),
            reached,
            "a refused withdrawal went out"
        );

        let (s, p) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/connections/{conn}"),
                &t,
                json!({"limits": {"withdrawal_address_allowlist": [{"address": "TXyz1", "network": "has space"}]}}),
            )
            .await;
        assert_eq!(s, 422, "{p}");
        assert!(
            p.to_string()
                .contains("withdrawal_address_allowlist[0].network"),
            "{p}"
        );
        let (s, p) = app
            .send(
                reqwest::Method::PATCH,
                &format!("/v1/connections/{conn}"),
                &t,
                json!({"limits": {"withdrawal_address_allowlist": [{"address": "TXyz1", "chain": "TRX"}]}}),
            )
            .await;
        assert_eq!(s, 422, "{p}");
        let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        assert_eq!(
            c["limits"]["withdrawal_address_allowlist"], allowlist,
            "nothing lost"
        );
    }
);

// An absurd order size is the exchange's to refuse, not a crash: with no caps set, an
// order of 10^24 USD goes out and is recorded, its amount clamped to what the ledger
// holds (100 billion USD per call and per day), so neither this call nor a batch it
// shares with other users' calls fails on an overflow. (It panicked converting the
// notional to micros, answering 500 with no row; and two orders of 5 trillion USD
// overflowed the ledger's bigint on PostgreSQL, failing the whole group commit.)
both_backends!(
    absurd_order_sizes_are_forwarded_and_recorded,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn = binance_connection(&app, &t, &mock, json!(["read", "trade"]), json!({})).await;
        for (qty, price) in [
            ("1000000000000", "1000000000000"),
            ("5000000000", "1000"),
            ("5000000000", "1000"),
        ] {
            let body = format!(
                "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity={qty}&price={price}"
            );
            let (s, _, b) = call(
                &app,
                &t,
                reqwest::Method::POST,
                &conn,
                "api/v3/order",
                Some(&body),
            )
            .await;
            assert_eq!(s, 200, "{b}");
        }
        let (_, calls) = app.get(&format!("/v1/connections/{conn}/calls"), &t).await;
        let items = calls["items"].as_array().unwrap();
        assert_eq!(items.len(), 3, "{calls}");
        assert!(items.iter().all(|c| c["decision"] == "allowed"), "{calls}");
        // a capped connection on the same key finds the day's volume at the clamp, which
        // is also the highest cap there is: full
        let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
        let (s, capped) = app
            .post(
                "/v1/connections",
                &t,
                json!({"name": "capped", "exchange": "binance", "credential_id": c["credential_id"],
                       "base_url": mock.base_url(), "limits": {"max_daily_volume_usd": "100000000000"}}),
            )
            .await;
        assert_eq!(s, 201, "{capped}");
        let capped = capped["id"].as_str().unwrap().to_string();
        let (s, _, b) = call(
            &app,
            &t,
            reqwest::Method::POST,
            &capped,
            "api/v3/order",
            Some("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000"),
        )
        .await;
        assert_eq!(
            (s, code(&b).as_str()),
            (403, "daily_volume_exceeded"),
            "{b}"
        );
    }
);

// Two instances on one PostgreSQL, parallel withdrawals split between them: each call's
// amount is reserved in the shared ledger, under a lock both instances take, before it goes
// out, so the cap holds across both. (With holds kept per process, each instance let two
// through: four went out.)
#[tokio::test]
async fn two_instances_share_the_spend_caps_on_postgres() {
    let Some(a) = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await else {
        eprintln!(
            "NOT RUN: PostgreSQL test needs KEYGATE_TEST_DATABASE_URL (scripts/test sets it)"
        );
        return;
    };
    let b = second_instance(&a, None).await;
    let (mock, t, conn) = capped_withdrawals(&a).await;
    assert_eq!(
        parallel_withdrawals(&[&a, &b], &mock, &t, &conn, 6).await,
        (2, 4)
    );
    // what went out is counted once: 50 more fit, on either instance, and then nothing
    assert_eq!(withdraw(&b, &t, &conn, 50).await, (200, String::new()));
    assert_eq!(
        withdraw(&a, &t, &conn, 1).await,
        (403, "withdrawal_daily_limit_exceeded".to_string())
    );
}

// A withdrawal the policy allows is counted at once, but one refused after that (here:
// anomaly detection suspends the key at the default threshold: withdrawal 40 + new IP 30
// + the pair 10) never went out: its row gives the reservation back, and after reactivation the whole
// rest of the cap is there.
both_backends!(
    a_call_refused_after_its_spend_check_gives_its_reservation_back,
    |app: TestApp| async move { refused_after_its_spend_check(app, false).await }
);

// The same when the refused call's row cannot be stored (its group commit fails): the
// reservation the row would have given back is given back all the same.
both_backends!(
    a_refused_call_whose_commit_fails_gives_its_reservation_back,
    |app: TestApp| async move { refused_after_its_spend_check(app, true).await }
);

async fn refused_after_its_spend_check(app: TestApp, its_commit_fails: bool) {
    let app = crate::helpers::spawn_app_with(app.backend, |cfg| {
        cfg.trusted_proxies = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await
    .unwrap();
    let (mock, t, conn) = capped_withdrawals(&app).await;
    assert_eq!(withdraw(&app, &t, &conn, 100).await, (200, String::new()));
    // a denied call's audit event fails its whole group commit
    let unfail = if its_commit_fails {
        let when = "NEW.category = 'gateway' AND NEW.action = 'denied'";
        Some(app.fail_inserts("fail_denied", "audit_events", when).await)
    } else {
        None
    };
    let r = app
        .client
        .post(format!(
            "{}/v1/connections/{conn}/proxy/sapi/v1/capital/withdraw/apply",
            app.base
        ))
        .bearer_auth(&t)
        .header("x-forwarded-for", "203.0.113.9")
        .header("content-type", "application/x-www-form-urlencoded")
        .body("coin=USDT&address=TXyz1&network=TRX&amount=100")
        .send()
        .await
        .unwrap();
    let (s, b) = (r.status().as_u16(), r.text().await.unwrap());
    if let Some(unfail) = unfail {
        assert_eq!(s, 500, "the call could not be recorded: {b}");
        app.raw_exec(&unfail).await.unwrap();
    } else {
        assert_eq!((s, code(&b).as_str()), (403, "credential_suspended"), "{b}");
        assert!(b.contains("withdrawal_from_new_ip"), "{b}");
    }
    assert_eq!(mock.requests().len(), 1, "the second one never went out");
    let (_, c) = app.get(&format!("/v1/connections/{conn}"), &t).await;
    let cred = c["credential_id"].as_str().unwrap().to_string();
    let (s, body) = app
        .send(
            reqwest::Method::PATCH,
            &format!("/v1/credentials/{cred}"),
            &t,
            json!({"status": "active"}),
        )
        .await;
    assert_eq!(s, 200, "{body}");
    assert_eq!(withdraw(&app, &t, &conn, 150).await, (200, String::new()));
    assert_eq!(
        withdraw(&app, &t, &conn, 1).await,
        (403, "withdrawal_daily_limit_exceeded".to_string())
    );
}

// A cap set on one connection counts the key's calls through its other connections too,
// while they are still at the exchange: a slow 200 USDT withdrawal through an uncapped
// connection leaves 50 of the other connection's 250 a day. (Before, the uncapped call
// counted only once its row committed, and a 100 through the capped one went out.)
both_backends!(
    a_cap_sees_calls_under_way_on_the_keys_uncapped_connection,
    |app: TestApp| async move {
        let (mock, t, capped) = capped_withdrawals(&app).await;
        let (_, c) = app.get(&format!("/v1/connections/{capped}"), &t).await;
        let (s, open) = app
            .post(
                "/v1/connections",
                &t,
                json!({"name": "uncapped", "exchange": "binance", "credential_id": c["credential_id"], "base_url": mock.base_url()}),
            )
            .await;
        assert_eq!(s, 201, "{open}");
        let open = open["id"].as_str().unwrap().to_string();
        mock.set_fault(Some(Fault::Delay(std::time::Duration::from_secs(3))));
        let answered = std::sync::atomic::AtomicBool::new(false);
        let (slow, meanwhile) = tokio::join!(
            async {
                let r = withdraw(&app, &t, &open, 200).await;
                answered.store(true, std::sync::atomic::Ordering::SeqCst);
                r
            },
            async {
                // the 200 has reached the exchange (which holds it for 3 s)
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                while mock.requests().is_empty() {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "the 200 never went out"
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(10)).await;
                }
                let r = withdraw(&app, &t, &capped, 100).await;
                (r, answered.load(std::sync::atomic::Ordering::SeqCst))
            }
        );
        assert_eq!(slow, (200, String::new()));
        assert_eq!(
            meanwhile,
            ((403, "withdrawal_daily_limit_exceeded".to_string()), false),
            "refused while the 200 was still at the exchange"
        );
        mock.set_fault(None);
        assert_eq!(withdraw(&app, &t, &capped, 50).await, (200, String::new()));
        assert_eq!(mock.requests().len(), 2);
    }
);

// An amount keygate cannot value would count 0 towards a cap on another connection of
// the key, so an uncapped connection refuses it once a sibling has a cap: a market order
// without a reference price under a daily volume cap elsewhere, a withdrawal of an asset
// without one under a daily withdrawal cap elsewhere. (Before, both went out.) Valued
// amounts still go out, and nothing refused reached the exchange.
both_backends!(
    a_cap_elsewhere_refuses_amounts_it_could_not_count,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let open = binance_connection(
            &app,
            &t,
            &mock,
            json!(["read", "trade", "withdraw"]),
            json!({}),
        )
        .await;
        let market = "symbol=ETHUSDT&side=BUY&type=MARKET&quantity=1";
        let unpriced = "coin=XYZ&address=TXyz1&network=TRX&amount=5";
        let order = |body: &'static str| {
            call(
                &app,
                &t,
                reqwest::Method::POST,
                &open,
                "api/v3/order",
                Some(body),
            )
        };
        let withdrawal = |body: &'static str| {
            call(
                &app,
                &t,
                reqwest::Method::POST,
                &open,
                "sapi/v1/capital/withdraw/apply",
                Some(body),
            )
        };
        // no cap anywhere: both go out
        assert_eq!(order(market).await.0, 200);
        assert_eq!(withdrawal(unpriced).await.0, 200);
        assert_eq!(mock.requests().len(), 2);

        let credential = credential_of(&app, &t, &open).await;
        let (s, capped) = app
            .post(
                "/v1/connections",
                &t,
                json!({"name": "capped", "exchange": "binance", "credential_id": credential, "base_url": mock.base_url(),
                       "limits": {"max_daily_volume_usd": "100000", "max_withdrawal_usd_per_day": "250"}}),
            )
            .await;
        assert_eq!(s, 201, "{capped}");
        // the uncapped connection's cached context sees the sibling within its 1 s TTL
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (s, _, b) = order(market).await;
        assert_eq!((s, code(&b).as_str()), (403, "notional_unknown"), "{b}");
        assert!(b.contains("another connection"), "{b}");
        let (s, _, b) = withdrawal(unpriced).await;
        assert_eq!(
            (s, code(&b).as_str()),
            (403, "withdrawal_value_unknown"),
            "{b}"
        );
        assert_eq!(
            mock.requests().len(),
            2,
            "a refused call reached the exchange"
        );
        // valued amounts still go out on the uncapped connection
        let limit = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000";
        assert_eq!(order(limit).await.0, 200);
        assert_eq!(withdraw(&app, &t, &open, 100).await, (200, String::new()));
        assert_eq!(mock.requests().len(), 4);
    }
);

// Deleting a connection takes its call rows with it, but not what its calls spent: a new
// connection on the same credential finds the day's withdrawals still counted.
both_backends!(
    deleting_a_connection_does_not_reopen_the_daily_cap,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let limits = json!({"max_withdrawal_usd_per_day": "250"});
        let first =
            binance_connection(&app, &t, &mock, json!(["read", "withdraw"]), limits.clone()).await;
        assert_eq!(withdraw(&app, &t, &first, 200).await, (200, String::new()));
        let (_, c) = app.get(&format!("/v1/connections/{first}"), &t).await;
        let credential = c["credential_id"].clone();
        let usage_path = format!("/v1/credentials/{}/usage", credential.as_str().unwrap());
        let (s, u) = app.get(&usage_path, &t).await;
        assert_eq!(s, 200, "{u}");
        assert_eq!(
            (
                &u["calls_today"],
                &u["denied_today"],
                &u["withdrawals_today_usd"]
            ),
            (&json!(1), &json!(0), &json!("200")),
            "{u}"
        );
        assert_eq!(u["withdrawals_this_month_usd"], "200", "{u}");
        assert_eq!(
            app.get(&usage_path, &app.token(Uuid::new_v4())).await.0,
            404
        );
        let s = app
            .send(
                reqwest::Method::DELETE,
                &format!("/v1/connections/{first}"),
                &t,
                json!({}),
            )
            .await
            .0;
        assert_eq!(s, 204);
        let (s, second) = app
            .post(
                "/v1/connections",
                &t,
                json!({"name": "again", "exchange": "binance", "credential_id": credential, "base_url": mock.base_url(), "limits": limits}),
            )
            .await;
        assert_eq!(s, 201, "{second}");
        let second = second["id"].as_str().unwrap().to_string();
        assert_eq!(
            withdraw(&app, &t, &second, 100).await,
            (403, "withdrawal_daily_limit_exceeded".to_string())
        );
        assert_eq!(withdraw(&app, &t, &second, 50).await, (200, String::new()));
        // the ledger kept what the deleted connection's calls spent; the calls went
        let (_, u) = app.get(&usage_path, &t).await;
        assert_eq!(
            (
                &u["calls_today"],
                &u["denied_today"],
                &u["withdrawals_today_usd"]
            ),
            (&json!(2), &json!(1), &json!("250")),
            "{u}"
        );
    }
);

// A client that hangs up while its withdrawal is at the exchange does not take the
// withdrawal off the books: the call runs to its end, its row and spend are recorded.
both_backends!(
    a_client_that_hangs_up_still_spends,
    |app: TestApp| async move {
        let (mock, t, conn) = capped_withdrawals(&app).await;
        mock.set_fault(Some(Fault::Delay(std::time::Duration::from_millis(500))));
        let impatient = reqwest::Client::builder()
            .timeout(std::time::Duration::from_millis(150))
            .build()
            .unwrap();
        let gone = impatient
            .post(format!(
                "{}/v1/connections/{conn}/proxy/sapi/v1/capital/withdraw/apply",
                app.base
            ))
            .bearer_auth(&t)
            .header("content-type", "application/x-www-form-urlencoded")
            .body("coin=USDT&address=TXyz1&network=TRX&amount=200")
            .send()
            .await;
        assert!(gone.is_err(), "the client gave up first");
        tokio::time::sleep(std::time::Duration::from_millis(900)).await;
        mock.set_fault(None);
        assert_eq!(
            mock.requests().len(),
            1,
            "the withdrawal reached the exchange"
        );
        assert_eq!(
            withdraw(&app, &t, &conn, 100).await,
            (403, "withdrawal_daily_limit_exceeded".to_string())
        );
        let (_, calls) = app.get(&format!("/v1/connections/{conn}/calls"), &t).await;
        assert!(
            calls["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|c| c["status_code"] == 200),
            "{calls}"
        );
    }
);

both_backends!(
    requests_the_exchange_could_read_otherwise_are_refused,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn = binance_connection(
            &app,
            &t,
            &mock,
            json!(["read", "trade", "transfer"]),
            json!({}),
        )
        .await;
        // %3F reaches keygate's router as '?': pasted into the upstream URL it would start
        // a query string, so the exchange would run another endpoint than the one keygate
        // classified. An encoded '%' (%25) the same.
        for path in ["api/v3/account%3F/x", "api/v3/%2561ccount"] {
            let (s, _, body) = call(&app, &t, reqwest::Method::GET, &conn, path, None).await;
            assert_eq!(s, 403, "{path}: {body}");
            assert_eq!(code(&body), "request_malformed", "{path}: {body}");
        }
        // two Content-Type headers: keygate reads the first, the exchange may read another;
        // a compressed body: the exchange would read what it decompresses to
        for second in [
            ("content-type", "application/json"),
            ("content-encoding", "gzip"),
        ] {
            let r = app
                .client
                .post(format!(
                    "{}/v1/connections/{conn}/proxy/api/v3/order",
                    app.base
                ))
                .bearer_auth(&t)
                .header("content-type", "application/x-www-form-urlencoded")
                .header(second.0, second.1)
                .body(
                    "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000",
                )
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{second:?}");
            assert_eq!(code(&r.text().await.unwrap()), "request_malformed");
        }
        // a transfer keygate cannot read (no asset) is refused, not forwarded unchecked
        let (s, _, body) = call(
            &app,
            &t,
            reqwest::Method::POST,
            &conn,
            "sapi/v1/asset/transfer",
            Some("type=MAIN_UMFUTURE&amount=1"),
        )
        .await;
        assert_eq!(s, 403, "{body}");
        assert_eq!(code(&body), "transfer_unparsable", "{body}");
        assert!(
            mock.requests().is_empty(),
            "a refusal never reaches the exchange"
        );

        // A method or URL override header is dropped: the exchange sees the signed GET only.
        let r = app
            .client
            .get(format!(
                "{}/v1/connections/{conn}/proxy/api/v3/account",
                app.base
            ))
            .bearer_auth(&t)
            .header("x-http-method-override", "POST")
            .header("x-original-url", "/sapi/v1/capital/withdraw/apply")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let reqs = mock.requests();
        let last = reqs.last().unwrap();
        assert!(last.verified, "{:?}", last.rejection);
        assert!(last.header("x-http-method-override").is_none());
        assert!(last.header("x-original-url").is_none());

        // the refusals are recorded like any other denial
        let (_, calls) = app.get(&format!("/v1/connections/{conn}/calls"), &t).await;
        let refused = calls["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["deny_code"] == "request_malformed")
            .count();
        assert_eq!(refused, 4, "{calls}");
    }
);

async fn sync_now(app: &TestApp, t: &str, conn: &str) -> Value {
    let (s, r) = app
        .post(&format!("/v1/connections/{conn}/sync"), t, json!({}))
        .await;
    assert_eq!(s, 200, "{r}");
    r
}

/// The id of the credential behind `conn`.
pub async fn credential_of(app: &TestApp, t: &str, conn: &str) -> String {
    let (s, c) = app.get(&format!("/v1/connections/{conn}"), t).await;
    assert_eq!(s, 200, "{c}");
    c["credential_id"].as_str().unwrap().to_string()
}

async fn credential_status(app: &TestApp, t: &str, conn: &str) -> String {
    let id = credential_of(app, t, conn).await;
    let (_, cred) = app.get(&format!("/v1/credentials/{id}"), t).await;
    cred["status"].as_str().unwrap().to_string()
}

/// `KEYGATE_REFUSE_WITHDRAWAL_KEYS`: a key check that reports withdrawal permission
/// suspends the credential (its calls are then refused before the exchange); a key without
/// it stays in service, and without the setting such a key only gets the usual warning.
#[tokio::test]
async fn refuse_withdrawal_keys_suspends_a_key_that_can_withdraw() {
    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |cfg| {
        cfg.refuse_withdrawal_keys = true;
    })
    .await
    .unwrap();
    let mock = mock().await;
    let t = app.token(Uuid::new_v4());
    let conn = binance_connection(&app, &t, &mock, json!(["read", "withdraw"]), json!({})).await;
    // no withdrawal permission: nothing happens
    sync_now(&app, &t, &conn).await;
    assert_eq!(credential_status(&app, &t, &conn).await, "active");
    // a withdrawal is refused whatever the key's scopes
    let (s, _, body) = call(
        &app,
        &t,
        reqwest::Method::POST,
        &conn,
        "sapi/v1/capital/withdraw/apply",
        Some("coin=USDT&address=TXyz1&network=TRX&amount=5"),
    )
    .await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(code(&body), "scope_denied");
    assert!(body.contains("KEYGATE_REFUSE_WITHDRAWAL_KEYS"), "{body}");
    assert!(mock.requests().iter().all(|r| !r.path.contains("withdraw")));
    // the sync's calls are keygate's own, not a client's: the withdrawal's IP is the
    // key's first, not a new one (which, with the withdrawal, would suspend the key)
    assert_eq!(credential_status(&app, &t, &conn).await, "active");

    mock.set_withdrawals_enabled(true);
    let r = sync_now(&app, &t, &conn).await;
    assert_eq!(r["key_check"]["can_withdraw"], true, "{r}");
    assert!(
        r["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|w| w.as_str().unwrap().contains("suspended")),
        "{r}"
    );
    assert_eq!(credential_status(&app, &t, &conn).await, "suspended");
    let before = mock.requests().len();
    let (s, _, body) = account(&app, &t, &conn).await;
    assert_eq!(s, 403, "{body}");
    assert_eq!(code(&body), "credential_suspended");
    assert_eq!(mock.requests().len(), before, "never reaches the exchange");

    // the control: the same key on a keygate without the setting stays active
    let plain = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let t = plain.token(Uuid::new_v4());
    let conn = binance_connection(&plain, &t, &mock, json!(["read"]), json!({})).await;
    let r = sync_now(&plain, &t, &conn).await;
    assert_eq!(r["key_check"]["can_withdraw"], true, "{r}");
    assert_eq!(credential_status(&plain, &t, &conn).await, "active");
}

both_backends!(
    a_query_beside_a_json_order_is_refused,
    |app: TestApp| async move {
        let mock = MockExchange::start(MockConfig {
            keys: vec![MockKey::hmac("bybit", "bybit-key", "bybit-secret")],
        })
        .await;
        let t = app.token(Uuid::new_v4());
        let (s, cred) = app
            .post(
                "/v1/credentials",
                &t,
                json!({"exchange": "bybit", "label": "bybit", "api_key": "bybit-key", "api_secret": "bybit-secret", "permissions": ["read", "trade"]}),
            )
            .await;
        assert_eq!(s, 201, "{cred}");
        let (s, conn) = app
            .post(
                "/v1/connections",
                &t,
                json!({"name": "bybit", "exchange": "bybit", "credential_id": cred["id"], "base_url": mock.base_url(), "limits": {"max_trade_usd": "100"}}),
            )
            .await;
        assert_eq!(s, 201, "{conn}");
        let conn = conn["id"].as_str().unwrap().to_string();
        let order = |query: &'static str| {
            let url = format!(
                "{}/v1/connections/{conn}/proxy/v5/order/create{query}",
                app.base
            );
            let req = app
                .client
                .post(url)
                .bearer_auth(&t)
                .header("content-type", "application/json")
                .body(r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.001","price":"50000"}"#);
            async move {
                let r = req.send().await.unwrap();
                (r.status().as_u16(), r.text().await.unwrap())
            }
        };
        // the body is a $50 order; a query beside it could say otherwise to the exchange
        let (s, body) = order("?qty=1000").await;
        assert_eq!(s, 403, "{body}");
        assert_eq!(code(&body), "order_unparsable", "{body}");
        assert!(mock.requests().is_empty(), "never reaches the exchange");
        let (s, body) = order("").await;
        assert_eq!(s, 200, "{body}");
        assert!(mock.requests().last().unwrap().verified);
    }
);

// An unknown endpoint's write cannot be checked against order or withdrawal limits: where
// such limits are set, only GET reaches one, even on a connection that allows unknown
// endpoints. Without them, the connection's permission to reach unknown endpoints stands.
both_backends!(
    unknown_writes_are_refused_where_limits_cannot_be_checked,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let every = json!(["read", "trade", "withdraw", "transfer", "sub_account"]);
        let capped = binance_connection(
            &app,
            &t,
            &mock,
            every.clone(),
            json!({"allow_unknown_endpoints": true, "max_trade_usd": "100"}),
        )
        .await;
        let open = binance_connection(
            &app,
            &t,
            &mock,
            every,
            json!({"allow_unknown_endpoints": true}),
        )
        .await;
        // unknown endpoints need the credential's consent too
        for conn in [&capped, &open] {
            let cred = credential_of(&app, &t, conn).await;
            let (s, r) = app
                .send(
                    reqwest::Method::PATCH,
                    &format!("/v1/credentials/{cred}"),
                    &t,
                    json!({"limits": {"allow_unknown_endpoints": true}}),
                )
                .await;
            assert_eq!(s, 200, "{r}");
        }
        let path = "api/v3/someNewEndpoint";
        let (s, _, body) = call(&app, &t, reqwest::Method::POST, &capped, path, Some("a=1")).await;
        assert_eq!(s, 403, "{body}");
        assert_eq!(code(&body), "endpoint_unknown", "{body}");
        assert!(body.contains("only GET"), "refused for its limits: {body}");
        assert!(mock.requests().is_empty(), "never reaches the exchange");
        // a read still does
        let (_, _, body) = call(&app, &t, reqwest::Method::GET, &capped, path, None).await;
        assert_eq!(mock.requests().len(), 1, "{body}");
        // and without such limits, so does a write
        call(&app, &t, reqwest::Method::POST, &open, path, Some("a=1")).await;
        assert_eq!(mock.requests().len(), 2);
        assert_eq!(mock.requests().last().unwrap().method, "POST");
    }
);

// An endpoint the exchange module does not know is taken for a transfer when its path
// says so, and then still needs what any unknown endpoint needs: a broker's transfer to a
// client's account does not pass on the `transfer` scope alone. Before, it did.
both_backends!(
    an_unknown_transfer_path_needs_what_an_unknown_endpoint_needs,
    |app: TestApp| async move {
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn =
            binance_connection(&app, &t, &mock, json!(["read", "transfer"]), json!({})).await;
        let (s, _, body) = call(
            &app,
            &t,
            reqwest::Method::POST,
            &conn,
            "sapi/v1/broker/universalTransfer",
            Some("fromAccountType=SPOT&toAccountType=SPOT&toId=1&asset=USDT&amount=50000"),
        )
        .await;
        assert_eq!(s, 403, "{body}");
        assert_eq!(code(&body), "endpoint_unknown", "{body}");
        assert!(mock.requests().is_empty(), "never reaches the exchange");
    }
);

// The call's time is read once its body is in: a caller that sends the headers before a
// key's expiry and the body after it is refused (`credential_expired`), not signed with
// the expired key. Before, the time the headers came at decided, however slowly the body
// followed (Kraken's nonce-only signatures have no freshness window of their own).
#[tokio::test]
async fn a_body_sent_slowly_is_judged_at_its_end() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let mock = mock().await;
    let t = app.token(Uuid::new_v4());
    let expires = chrono::Utc::now() + chrono::Duration::seconds(4);
    let (s, cred) = app
        .post(
            "/v1/credentials",
            &t,
            json!({"exchange": "binance", "label": "expiring", "api_key": API_KEY, "api_secret": API_SECRET,
                "permissions": ["read", "trade"], "expires_at": expires}),
        )
        .await;
    assert_eq!(s, 201, "{cred}");
    let (s, conn) = app
        .post(
            "/v1/connections",
            &t,
            json!({"name": "expiring", "exchange": "binance", "credential_id": cred["id"], "base_url": mock.base_url()}),
        )
        .await;
    assert_eq!(s, 201, "{conn}");
    let body = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.001&price=50000";
    let addr = app.base.trim_start_matches("http://").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/connections/{}/proxy/api/v3/order HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {t}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        conn["id"].as_str().unwrap(),
        body.len()
    );
    sock.write_all(head.as_bytes()).await.unwrap();
    sock.write_all(&body.as_bytes()[..10]).await.unwrap();
    // the rest after the key's expiry
    let wait = (expires - chrono::Utc::now()).num_milliseconds().max(0) as u64 + 700;
    tokio::time::sleep(std::time::Duration::from_millis(wait)).await;
    sock.write_all(&body.as_bytes()[10..]).await.unwrap();
    let mut answer = String::new();
    sock.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert!(answer.contains("credential_expired"), "{answer}");
    assert!(mock.requests().is_empty(), "signed with an expired key");
}

/// Binance bans by source IP (418), whichever key's calls caused it: once it refuses one
/// key's call for rate, keygate holds the calls of every key it sends to that host, not
/// only that key's. Before, the other keys kept calling into the ban, which Binance
/// lengthens for repeat offenders.
#[tokio::test]
async fn an_ip_ban_holds_every_key_sent_to_that_host() {
    let app = crate::helpers::spawn_app(crate::helpers::Backend::Sqlite)
        .await
        .unwrap();
    let mock = mock().await;
    let (ta, tb) = (app.token(Uuid::new_v4()), app.token(Uuid::new_v4()));
    let a = binance_connection(&app, &ta, &mock, json!(["read"]), json!({})).await;
    let b = binance_connection(&app, &tb, &mock, json!(["read"]), json!({})).await;
    assert_eq!(account(&app, &tb, &b).await.0, 200);
    mock.set_fault(Some(Fault::Status(418)));
    assert_eq!(
        account(&app, &ta, &a).await.0,
        418,
        "the exchange's answer passes through"
    );
    mock.set_fault(None);
    let sent = mock.requests().len();
    let (s, h, body) = account(&app, &tb, &b).await;
    assert_eq!(
        (s, code(&body).as_str()),
        (429, "exchange_rate_limited"),
        "{body}"
    );
    assert!(h.contains_key("retry-after"));
    let (s, _, body) = call(&app, &tb, reqwest::Method::GET, &b, "api/v3/time", None).await;
    assert_eq!((s, code(&body).as_str()), (429, "exchange_rate_limited"));
    assert_eq!(mock.requests().len(), sent, "a call went into the ban");
}

// An exchange's ban, learned by one instance from its answer, holds the calls of every
// instance on the same database within seconds: the other instance never saw a 418 of its
// own. Before, each instance kept calling into the ban until it ran into it itself, and
// Binance lengthens bans for addresses that keep calling.
both_backends!(
    an_exchange_ban_is_shared_by_every_instance,
    |app: TestApp| async move {
        let other = second_instance(&app, None).await;
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        mock.set_fault(Some(Fault::Status(418)));
        assert_eq!(account(&app, &t, &conn).await.0, 418);
        mock.set_fault(None);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let (s, h, body) =
                call(&other, &t, reqwest::Method::GET, &conn, "api/v3/time", None).await;
            if s == 429 {
                assert_eq!(code(&body), "exchange_rate_limited", "{body}");
                assert!(h.contains_key("retry-after"));
                break;
            }
            assert_eq!(s, 200, "{body}");
            assert!(
                std::time::Instant::now() < deadline,
                "the other instance never took on the ban"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        // and it holds there without calling the exchange
        let sent = mock.requests().len();
        let (s, _, _) = account(&other, &t, &conn).await;
        assert_eq!(s, 429);
        assert_eq!(mock.requests().len(), sent);
    }
);

// A budget the exchange reported used up to one instance is held by every instance on the
// same database within seconds: the other instance never saw the header itself.
both_backends!(
    a_used_up_budget_is_shared_by_every_instance,
    |app: TestApp| async move {
        let other = second_instance(&app, None).await;
        let mock = mock().await;
        let t = app.token(Uuid::new_v4());
        let conn = binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
        // not across a minute's end, where Binance's window (and keygate's copy) ends
        let secs = chrono::Utc::now().timestamp() % 60;
        if secs > 50 {
            tokio::time::sleep(std::time::Duration::from_secs((61 - secs) as u64)).await;
        }
        mock.set_rate_limit_used("binance", 6000);
        assert_eq!(
            account(&app, &t, &conn).await.0,
            200,
            "learns that nothing is left"
        );
        // the other instance must not learn it from its own answers: they say 1 used
        mock.set_rate_limit_used("binance", 1);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
        loop {
            let sent = mock.requests().len();
            let (s, _, body) =
                call(&other, &t, reqwest::Method::GET, &conn, "api/v3/time", None).await;
            if s == 429 {
                assert_eq!(code(&body), "exchange_rate_limited", "{body}");
                assert_eq!(
                    mock.requests().len(),
                    sent,
                    "held without calling the exchange"
                );
                break;
            }
            assert_eq!(s, 200, "{body}");
            assert!(
                std::time::Instant::now() < deadline,
                "the other instance never took on the used-up budget"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
);

// Two instances near the end of one budget. Each learned from its own answer that 10 of
// Binance's weight is left, and 16 calls of weight 1 arrive on both at once (the exchange
// is slow, so no answer comes back in between). Together they send 10 and hold 6: near a
// budget's end every instance takes from one pool on the database. Before, each instance
// spent what it knew was left, and 16 went out.
#[tokio::test]
async fn two_instances_share_the_end_of_an_exchange_budget_on_postgres() {
    let Some(a) = crate::helpers::spawn_app(crate::helpers::Backend::Postgres).await else {
        eprintln!("PostgreSQL not configured: two-instance test not run");
        return;
    };
    let b = second_instance(&a, None).await;
    let mock = mock().await;
    let t = a.token(Uuid::new_v4());
    let conn = binance_connection(&a, &t, &mock, json!(["read"]), json!({})).await;
    // within one minute: Binance's window (and keygate's copy) ends with it
    let secs = chrono::Utc::now().timestamp() % 60;
    if secs > 40 {
        tokio::time::sleep(std::time::Duration::from_secs((61 - secs) as u64)).await;
    }
    mock.set_rate_limit_used("binance", 5990);
    for inst in [&a, &b] {
        let (s, _, body) = call(inst, &t, reqwest::Method::GET, &conn, "api/v3/time", None).await;
        assert_eq!(s, 200, "{body}");
    }
    // slow, well within the connection's 1.5 s timeout
    mock.set_fault(Some(Fault::Delay(std::time::Duration::from_millis(400))));
    let sent = mock.requests().len();
    let calls = (0..16).map(|i| {
        let inst = if i % 2 == 0 { &a } else { &b };
        call(inst, &t, reqwest::Method::GET, &conn, "api/v3/time", None)
    });
    let answers = futures::future::join_all(calls).await;
    mock.set_fault(None);
    let mut ok = 0;
    for (s, h, body) in &answers {
        match s {
            200 => ok += 1,
            429 => {
                assert_eq!(code(body), "exchange_rate_limited", "{body}");
                assert!(h.contains_key("retry-after"));
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    assert_eq!(ok, 10, "the 10 left, across both instances");
    assert_eq!(
        mock.requests().len() - sent,
        10,
        "only those reached the exchange"
    );
}
