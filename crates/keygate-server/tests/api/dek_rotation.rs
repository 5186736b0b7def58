//! `POST /v1/vault/rotate-key`: a new DEK version, every credential secret re-sealed under
//! it, the old version retired; reads keep working during and after; other users untouched.

use crate::both_backends;
use crate::helpers::TestApp;
use serde_json::json;
use uuid::Uuid;

both_backends!(dek_rotation, |app: TestApp| async move {
    let user = Uuid::new_v4();
    let t = app.token(user);
    let svc = app.service_token(user);
    let mut creds = Vec::new();
    for i in 0..4 {
        let secret = format!("dek-rotation-secret-{i}");
        let (s, c) = app
            .post(
                "/v1/credentials",
                &t,
                json!({"exchange": "okx", "label": format!("d{i}"), "api_key": format!("k{i}"),
                       "api_secret": secret, "passphrase": format!("pp{i}")}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        creds.push((
            c["id"].as_str().unwrap().to_string(),
            secret,
            format!("pp{i}"),
        ));
    }
    let other = Uuid::new_v4();
    let (_, oc) = app
        .post(
            "/v1/credentials",
            &app.token(other),
            json!({"exchange": "binance", "label": "o", "api_key": "ok", "api_secret": "other-secret"}),
        )
        .await;
    let reveal = |id: String, tok: String| {
        let app = &app;
        async move {
            app.post(&format!("/v1/credentials/{id}/reveal"), &tok, json!({}))
                .await
        }
    };
    // rotate while reads run
    let rotation = app.post("/v1/vault/rotate-key", &t, json!({}));
    let reads = one_by_one(
        creds
            .iter()
            .map(|(id, _, _)| reveal(id.clone(), svc.clone()))
            .collect(),
    );
    let ((s, r), reads) = tokio::join!(rotation, reads);
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["dek_version"], 2);
    assert_eq!(r["retired_version"], 1);
    assert_eq!(r["credential_secrets"], 4);
    for (st, v) in reads {
        assert_eq!(st, 200, "reads during the rotation: {v}");
    }
    for (id, secret, pp) in &creds {
        let (s, v) = reveal(id.clone(), svc.clone()).await;
        assert_eq!(s, 200);
        assert_eq!(v["api_secret"], secret.as_str());
        assert_eq!(v["passphrase"], pp.as_str());
    }
    let store = &app.state.store;
    let actor = keygate_storage::Actor::user(user);
    assert!(store
        .secrets_not_on_dek(actor, user, 2, 100)
        .await
        .unwrap()
        .is_empty());
    let mut keys = store.user_keys(actor, user).await.unwrap();
    keys.sort_by_key(|k| k.version);
    let states: Vec<_> = keys.iter().map(|k| (k.version, k.state.as_str())).collect();
    assert_eq!(states, vec![(1, "retired"), (2, "active")]);

    // a second rotation; a credential created after it is sealed under the newest version
    let (s, r) = app.post("/v1/vault/rotate-key", &t, json!({})).await;
    assert_eq!((s, r["dek_version"].as_i64()), (200, Some(3)), "{r}");
    assert_eq!(r["credential_secrets"], 4);
    let (s, c) = app
        .post(
            "/v1/credentials",
            &t,
            json!({"exchange": "binance", "label": "late", "api_key": "lk", "api_secret": "late-secret"}),
        )
        .await;
    assert_eq!(s, 201);
    let (s, v) = reveal(c["id"].as_str().unwrap().to_string(), svc.clone()).await;
    assert_eq!((s, v["api_secret"].as_str()), (200, Some("late-secret")));
    assert!(store
        .secrets_not_on_dek(actor, user, 3, 100)
        .await
        .unwrap()
        .is_empty());
    // the other user is untouched
    let (s, v) = reveal(
        oc["id"].as_str().unwrap().to_string(),
        app.service_token(other),
    )
    .await;
    assert_eq!((s, v["api_secret"].as_str()), (200, Some("other-secret")));
    assert_eq!(
        store
            .user_keys(keygate_storage::Actor::user(other), other)
            .await
            .unwrap()
            .len(),
        1
    );
    // audited
    let (_, log) = app.get("/v1/vault/access-log", &t).await;
    let n = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "rotate_key")
        .count();
    assert_eq!(n, 2, "{log}");
    // password vaults are refused for now, with a stable code
    let (s, _) = app
        .post(
            "/v1/vault/setup",
            &t,
            json!({"password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, 200);
    let (s, p) = app.post("/v1/vault/rotate-key", &t, json!({})).await;
    assert_eq!(
        (s, p["code"].as_str()),
        (409, Some("vault_password_protected"))
    );
});

async fn one_by_one<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in fs {
        out.push(f.await);
    }
    out
}
