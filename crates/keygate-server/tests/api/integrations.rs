//! Integrations written by someone other than their owner, and where their secrets go:
//! `token_url` cannot be moved (the refresh token and client secret are posted to it), and
//! a service-role token acting on another user's integration seals for the owner.

use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::TestApp;

/// A token endpoint that records every form it is sent and answers with a new pair.
#[derive(Default)]
struct TokenEndpoint {
    forms: Mutex<Vec<std::collections::HashMap<String, String>>>,
}

impl TokenEndpoint {
    fn sent(&self, field: &str) -> Vec<String> {
        self.forms
            .lock()
            .unwrap()
            .iter()
            .map(|f| f.get(field).cloned().unwrap_or_default())
            .collect()
    }
}

async fn token_endpoint() -> (String, Arc<TokenEndpoint>) {
    let st = Arc::new(TokenEndpoint::default());
    let s2 = st.clone();
    let app = axum::Router::new().route(
        "/token",
        axum::routing::post(move |body: String| {
            let st = s2.clone();
            async move {
                let form: std::collections::HashMap<String, String> =
                    url::form_urlencoded::parse(body.as_bytes())
                        .into_owned()
                        .collect();
                let n = {
                    let mut f = st.forms.lock().unwrap();
                    f.push(form);
                    f.len()
                };
                axum::Json(json!({"access_token": format!("at-{n}"),
                    "refresh_token": format!("rt-{n}"), "token_type": "Bearer", "expires_in": 3600}))
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/token", l.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(l, app).await });
    (url, st)
}

async fn create(app: &TestApp, token: &str, token_url: &str) -> String {
    let (s, i) = app
        .post(
            "/v1/integrations",
            token,
            json!({"provider": "example", "name": "crm", "client_id": "client-1",
                "client_secret": "client-secret-1", "token_url": token_url, "scopes": ["read"],
                "tokens": {"access_token": "at-0", "refresh_token": "rt-0"}}),
        )
        .await;
    assert_eq!(s, 201, "{i}");
    i["id"].as_str().unwrap().to_string()
}

async fn patch(app: &TestApp, token: &str, id: &str, body: Value) -> (u16, Value) {
    app.send(
        reqwest::Method::PATCH,
        &format!("/v1/integrations/{id}"),
        token,
        body,
    )
    .await
}

// Before, anyone holding the owner's (or a service) token could PATCH `token_url` to a
// server of their own and then press refresh: keygate posted the stored refresh token and
// client secret there. A change of `token_url` is now refused (422 token_url_immutable),
// with or without a new client secret; the same URL sent back, and other edits, still work.
crate::both_backends!(
    integration_token_url_cannot_be_moved,
    |app: TestApp| async move {
        let (legit_url, legit) = token_endpoint().await;
        let (evil_url, evil) = token_endpoint().await;
        let owner = Uuid::new_v4();
        let t = app.token(owner);
        let id = create(&app, &t, &legit_url).await;

        for (who, token) in [
            ("owner", t.clone()),
            ("service", app.service_token(Uuid::new_v4())),
        ] {
            let (s, p) = patch(&app, &token, &id, json!({"token_url": evil_url})).await;
            assert_eq!(
                (s, p["code"].as_str()),
                (422, Some("token_url_immutable")),
                "{who}: {p}"
            );
            let (s, p) = patch(
                &app,
                &token,
                &id,
                json!({"token_url": evil_url, "client_secret": "attacker-secret"}),
            )
            .await;
            assert_eq!(
                (s, p["code"].as_str()),
                (422, Some("token_url_immutable")),
                "{who}, with a new secret: {p}"
            );
        }
        let (_, v) = app.get(&format!("/v1/integrations/{id}"), &t).await;
        assert_eq!(v["token_url"], json!(legit_url), "{v}");

        // the same URL back (a client PATCHing the whole object) and other edits still work
        let (s, v) = patch(
            &app,
            &t,
            &id,
            json!({"token_url": legit_url, "name": "crm-renamed"}),
        )
        .await;
        assert_eq!((s, v["name"].as_str()), (200, Some("crm-renamed")), "{v}");

        // a refresh goes to the URL the integration was created with, and nowhere else
        let (s, r) = app
            .post(&format!("/v1/integrations/{id}/refresh"), &t, json!({}))
            .await;
        assert_eq!((s, r["outcome"].as_str()), (200, Some("refreshed")), "{r}");
        assert_eq!(legit.sent("refresh_token"), vec!["rt-0".to_string()]);
        assert_eq!(
            legit.sent("client_secret"),
            vec!["client-secret-1".to_string()]
        );
        assert!(
            evil.forms.lock().unwrap().is_empty(),
            "the other URL was sent something"
        );
    }
);

// A service-role token carries a `sub` of its own (here X). Writing to user B's
// integration with it used to seal the new tokens and client secret for X (X's DEK, X in
// the AAD) over B's, so B could no longer read or refresh them. Now they are sealed for
// the owner: B reads the tokens, refreshes with them and the new client secret, and the
// audit trail names B.
crate::both_backends!(
    service_writes_to_an_integration_seal_for_its_owner,
    |app: TestApp| async move {
        let (url, endpoint) = token_endpoint().await;
        let owner = Uuid::new_v4();
        let t = app.token(owner);
        let id = create(&app, &t, &url).await;
        let service = app.service_token(Uuid::new_v4());

        let (s, v) = app
            .send(
                reqwest::Method::PUT,
                &format!("/v1/integrations/{id}/tokens"),
                &service,
                json!({"access_token": "at-svc", "refresh_token": "rt-svc"}),
            )
            .await;
        assert_eq!(s, 200, "{v}");
        let (s, tok) = app.get(&format!("/v1/integrations/{id}/token"), &t).await;
        assert_eq!(
            (s, tok["access_token"].as_str()),
            (200, Some("at-svc")),
            "the owner cannot open the tokens: {tok}"
        );

        let (s, v) = patch(
            &app,
            &service,
            &id,
            json!({"client_secret": "client-secret-2"}),
        )
        .await;
        assert_eq!(s, 200, "{v}");
        let (s, r) = app
            .post(&format!("/v1/integrations/{id}/refresh"), &t, json!({}))
            .await;
        assert_eq!((s, r["outcome"].as_str()), (200, Some("refreshed")), "{r}");
        assert_eq!(endpoint.sent("refresh_token"), vec!["rt-svc".to_string()]);
        assert_eq!(
            endpoint.sent("client_secret"),
            vec!["client-secret-2".to_string()]
        );
        let (_, tok) = app.get(&format!("/v1/integrations/{id}/token"), &t).await;
        assert_eq!(tok["access_token"], "at-1", "{tok}");

        // the owner's audit trail shows both writes
        for action in ["tokens_set", "update"] {
            let (_, ev) = app
                .get(
                    &format!("/v1/audit?category=integration&action={action}"),
                    &t,
                )
                .await;
            assert_eq!(
                ev["items"].as_array().map(Vec::len),
                Some(1),
                "{action}: {ev}"
            );
        }
    }
);

// A data-key rotation that commits while the token endpoint answers a refresh retires
// the version the new tokens were to be sealed under. They are sealed again under the
// active one and stored: the provider may already have retired the old refresh token,
// so dropping the new pair would cost the integration its consent.
crate::both_backends!(
    a_refresh_during_a_key_rotation_keeps_the_new_tokens,
    |app: TestApp| async move {
        let owner = Uuid::new_v4();
        let t = app.token(owner);
        let rotate_url = format!("{}/v1/vault/rotate-key", app.base);
        let (client, bearer) = (app.client.clone(), t.clone());
        let sent = Arc::new(Mutex::new(Vec::<String>::new()));
        let sent2 = sent.clone();
        let router = axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| {
                let (client, bearer, url, sent) =
                    (client.clone(), bearer.clone(), rotate_url.clone(), sent2.clone());
                async move {
                    let form: std::collections::HashMap<String, String> =
                        url::form_urlencoded::parse(body.as_bytes()).into_owned().collect();
                    let n = {
                        let mut s = sent.lock().unwrap();
                        s.push(form.get("refresh_token").cloned().unwrap_or_default());
                        s.len()
                    };
                    if n == 1 {
                        let r = client.post(&url).bearer_auth(&bearer).json(&json!({})).send().await.unwrap();
                        assert_eq!(r.status().as_u16(), 200, "rotation during the refresh");
                    }
                    axum::Json(json!({"access_token": format!("at-{n}"),
                        "refresh_token": format!("rt-{n}"), "token_type": "Bearer", "expires_in": 3600}))
                }
            }),
        );
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let token_url = format!("http://{}/token", l.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(l, router).await });
        let id = create(&app, &t, &token_url).await;

        let (s, r) = app
            .post(&format!("/v1/integrations/{id}/refresh"), &t, json!({}))
            .await;
        assert_eq!((s, r["outcome"].as_str()), (200, Some("refreshed")), "{r}");
        let (_, v) = app.get("/v1/vault/status", &t).await;
        let keys = app
            .state
            .store
            .user_keys(keygate_storage::Actor::user(owner), owner)
            .await
            .unwrap();
        assert!(
            keys.iter().any(|k| k.version == 2 && k.state == "active"),
            "{v}"
        );
        // the new refresh token was stored (under the new version): the next refresh sends it
        let (s, r) = app
            .post(&format!("/v1/integrations/{id}/refresh"), &t, json!({}))
            .await;
        assert_eq!((s, r["outcome"].as_str()), (200, Some("refreshed")), "{r}");
        assert_eq!(
            *sent.lock().unwrap(),
            vec!["rt-0".to_string(), "rt-1".to_string()]
        );
    }
);

// A token endpoint gets the refresh token and the client secret: plain http is refused
// unless the operator listed the host (KEYGATE_ALLOWED_PRIVATE_HOSTS, here 127.0.0.1),
// when saved (422) and, for one stored before, when refreshing (nothing is sent).
crate::both_backends!(a_token_endpoint_must_be_https, |app: TestApp| async move {
    let t = app.token(Uuid::new_v4());
    let body = |url: &str| {
        json!({"provider": "example", "name": "crm-https", "client_id": "client-1",
                "client_secret": "client-secret-1", "token_url": url,
                "tokens": {"access_token": "at-0", "refresh_token": "rt-0"}})
    };
    let (s, p) = app
        .post(
            "/v1/integrations",
            &t,
            body("http://oauth.example.com/token"),
        )
        .await;
    assert_eq!(s, 422, "{p}");
    assert_eq!(p["errors"][0]["field"], "token_url", "{p}");
    assert!(p.to_string().contains("https"), "{p}");
    let (s, p) = app
        .post(
            "/v1/integrations",
            &t,
            body("https://oauth.example.com/token"),
        )
        .await;
    assert_eq!(s, 201, "{p}");
    let id = p["id"].as_str().unwrap().to_string();
    // a listed host may use http: the local endpoint the other tests use
    let (url, _) = token_endpoint().await;
    create(&app, &t, &url).await;
    // one stored before the rule: refused at refresh, before any request
    app.raw_exec(
        "UPDATE integrations SET token_url = 'http://oauth.example.com/token' WHERE name = 'crm-https'",
    )
        .await
        .unwrap();
    let (s, r) = app
        .post(&format!("/v1/integrations/{id}/refresh"), &t, json!({}))
        .await;
    assert_eq!(
        (s, r["code"].as_str()),
        (502, Some("token_refresh_failed")),
        "{r}"
    );
    assert!(r.to_string().contains("https"), "{r}");
    let (_, v) = app.get(&format!("/v1/integrations/{id}"), &t).await;
    assert_eq!(v["status"], "error", "{v}");
    assert_eq!(v["last_error"], "token_url_not_https", "{v}");
});
