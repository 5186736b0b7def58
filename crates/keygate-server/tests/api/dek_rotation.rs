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
    // a platform vault needs no body at all, and a password is refused, not ignored
    let r = app
        .client
        .post(format!("{}/v1/vault/rotate-key", app.base))
        .bearer_auth(&t)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, p) = app
        .post(
            "/v1/vault/rotate-key",
            &t,
            json!({"password": "correct horse battery"}),
        )
        .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (409, Some("vault_not_password_protected"))
    );
});

async fn one_by_one<F: std::future::Future>(fs: Vec<F>) -> Vec<F::Output> {
    let mut out = Vec::new();
    for f in fs {
        out.push(f.await);
    }
    out
}

const PW: &str = "correct horse battery";

/// Password-mode state a test asserts on: (version, state, protection) per DEK, the
/// session's (dek_version, previous_dek_version), and the failed-unlock count.
async fn vault_rows(
    app: &TestApp,
    user: Uuid,
) -> (Vec<(i32, String, String)>, Option<(i32, Option<i32>)>, i32) {
    let store = &app.state.store;
    let actor = keygate_storage::Actor::user(user);
    let mut keys: Vec<_> = store
        .user_keys(actor, user)
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.version, k.state, k.protection))
        .collect();
    keys.sort();
    let session = store
        .vault_session(actor, user, keygate_storage::DbTime::now())
        .await
        .unwrap()
        .map(|s| (s.dek_version, s.previous_dek_version));
    let failed = store
        .vault(actor, user)
        .await
        .unwrap()
        .unwrap()
        .failed_unlock_attempts;
    (keys, session, failed)
}

async fn on_version(app: &TestApp, user: Uuid, version: i32) -> bool {
    app.state
        .store
        .secrets_not_on_dek(keygate_storage::Actor::user(user), user, version, 100)
        .await
        .unwrap()
        .is_empty()
}

fn keys(v: &[(i32, &str)]) -> Vec<(i32, String, String)> {
    v.iter()
        .map(|(n, s)| (*n, s.to_string(), "password".to_string()))
        .collect()
}

// Rotation of a password-protected vault: the password is required, checked and counted
// like an unlock; failures write nothing; the new version is nested under the same
// password; the unlock session carries over; a locked vault stays locked.
both_backends!(dek_rotation_password_mode, |app: TestApp| async move {
    let mock = crate::gateway::mock().await;
    let user = Uuid::new_v4();
    let t = app.token(user);
    let svc = app.service_token(user);
    let conn =
        crate::gateway::binance_connection(&app, &t, &mock, json!(["read"]), json!({})).await;
    let proxied = || async {
        let (s, _, body) = crate::gateway::call(
            &app,
            &t,
            reqwest::Method::GET,
            &conn,
            "api/v3/account",
            None,
        )
        .await;
        (s, body)
    };
    let mut creds = Vec::new();
    for i in 0..2 {
        let secret = format!("pw-rotation-secret-{i}");
        let (s, c) = app
            .post(
                "/v1/credentials",
                &t,
                json!({"exchange": "okx", "label": format!("p{i}"), "api_key": format!("k{i}"),
                       "api_secret": secret, "passphrase": format!("pp{i}")}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        creds.push((c["id"].as_str().unwrap().to_string(), secret));
    }
    let reveal_all = || async {
        for (id, secret) in &creds {
            let (s, v) = app
                .post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
                .await;
            assert_eq!(
                (s, v["api_secret"].as_str()),
                (200, Some(secret.as_str())),
                "{v}"
            );
        }
    };
    let (s, _) = app
        .post("/v1/vault/setup", &t, json!({"password": PW}))
        .await;
    assert_eq!(s, 200);
    assert_eq!(proxied().await.0, 200);
    let before = vault_rows(&app, user).await;
    assert_eq!(before, (keys(&[(1, "active")]), Some((1, None)), 0));

    // no password: a validation problem naming the field; nothing written
    for body in [None, Some(json!({}))] {
        let mut r = app
            .client
            .post(format!("{}/v1/vault/rotate-key", app.base))
            .bearer_auth(&t);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 422);
        let p: serde_json::Value = r.json().await.unwrap();
        assert_eq!(p["code"], "validation_failed");
        assert_eq!(p["errors"][0]["field"], "password", "{p}");
    }
    // wrong password: counted like a failed unlock, logged, nothing else written
    let (s, p) = app
        .post(
            "/v1/vault/rotate-key",
            &t,
            json!({"password": "not the password"}),
        )
        .await;
    assert_eq!((s, p["code"].as_str()), (403, Some("wrong_password")));
    assert_eq!(
        vault_rows(&app, user).await,
        (keys(&[(1, "active")]), Some((1, None)), 1)
    );
    assert!(on_version(&app, user, 1).await);
    reveal_all().await;

    // the right password: a new version, every secret re-sealed, the session carried over
    let (s, r) = app
        .post("/v1/vault/rotate-key", &t, json!({"password": PW}))
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        (r["dek_version"].as_i64(), r["retired_version"].as_i64()),
        (Some(2), Some(1))
    );
    assert_eq!(r["credential_secrets"], 3);
    assert_eq!(
        vault_rows(&app, user).await,
        (keys(&[(1, "retired"), (2, "active")]), Some((2, None)), 0),
        "failure count reset, session on the new version, previous cleared"
    );
    assert!(on_version(&app, user, 2).await);
    app.state.keyring.evict(user); // what another instance sees: no cached DEK
    reveal_all().await;
    assert_eq!(proxied().await.0, 200, "the unlock session keeps working");

    // the new version is nested under the password: the KEK alone yields only the
    // password-wrapped blob, and a locked vault decrypts nothing
    let rec = app
        .state
        .store
        .active_user_key(keygate_storage::Actor::user(user), user)
        .await
        .unwrap()
        .unwrap();
    let inner = app
        .state
        .keyring
        .provider
        .unwrap(
            &keygate_crypto::WrapContext {
                user_id: user,
                dek_version: 2,
            },
            rec.wrapped_dek.as_deref().unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        keygate_crypto::inspect(&inner).unwrap().kind,
        keygate_crypto::Kind::PasswordWrap
    );
    assert_eq!(app.post("/v1/vault/lock", &t, json!({})).await.0, 200);
    let (s, p) = app
        .post(
            &format!("/v1/credentials/{}/reveal", creds[0].0),
            &svc,
            json!({}),
        )
        .await;
    assert_eq!((s, p["code"].as_str()), (403, Some("vault_locked")));
    let (s, body) = proxied().await;
    assert_eq!(s, 403, "{body}");
    assert!(body.contains("vault_locked"), "{body}");
    // after an unlock, decrypting and proxied calls work again
    assert_eq!(
        app.post("/v1/vault/unlock", &t, json!({"password": PW}))
            .await
            .0,
        200
    );
    reveal_all().await;
    assert_eq!(proxied().await.0, 200);

    // rotating a locked vault works and leaves it locked
    assert_eq!(app.post("/v1/vault/lock", &t, json!({})).await.0, 200);
    let (s, r) = app
        .post("/v1/vault/rotate-key", &t, json!({"password": PW}))
        .await;
    assert_eq!((s, r["dek_version"].as_i64()), (200, Some(3)), "{r}");
    assert_eq!(
        vault_rows(&app, user).await,
        (
            keys(&[(1, "retired"), (2, "retired"), (3, "active")]),
            None,
            0
        )
    );
    assert!(on_version(&app, user, 3).await);
    let (_, st) = app.get("/v1/vault/status", &t).await;
    assert_eq!(st["unlocked"], false);
    assert_eq!(
        app.post("/v1/vault/unlock", &t, json!({"password": PW}))
            .await
            .0,
        200
    );
    reveal_all().await;
    assert_eq!(proxied().await.0, 200);

    // five wrong passwords lock the vault out, for rotation and unlock alike
    for i in 1..=5 {
        let (s, _) = app
            .post(
                "/v1/vault/rotate-key",
                &t,
                json!({"password": "still not it"}),
            )
            .await;
        assert_eq!(s, 403, "attempt {i}");
    }
    let (s, p) = app
        .post("/v1/vault/rotate-key", &t, json!({"password": PW}))
        .await;
    assert_eq!((s, p["code"].as_str()), (429, Some("vault_locked_out")));
    let (s, p) = app
        .post("/v1/vault/unlock", &t, json!({"password": PW}))
        .await;
    assert_eq!((s, p["code"].as_str()), (429, Some("vault_locked_out")));
    let (rows, _, failed) = vault_rows(&app, user).await;
    assert_eq!(
        (rows, failed),
        (keys(&[(1, "retired"), (2, "retired"), (3, "active")]), 5)
    );
    let (_, log) = app.get("/v1/vault/access-log?limit=100", &t).await;
    let items = log["items"].as_array().unwrap();
    let count = |ok: bool| {
        items
            .iter()
            .filter(|e| e["action"] == "rotate_key" && e["success"] == ok)
            .count()
    };
    assert_eq!((count(true), count(false)), (2, 7), "{log}");
});

// A password-mode rotation that stopped after activating the new version (a crash before
// re-sealing): rows on the retired version stay readable through the carried-over session
// on any instance, the password cannot be changed until the rotation is finished, and
// running it again finishes it.
both_backends!(dek_rotation_password_resume, |app: TestApp| async move {
    use keygate_crypto::{Dek, KdfParams, PasswordKey, WrapContext};
    use keygate_server::keyring::SESSION_BIT;
    let user = Uuid::new_v4();
    let t = app.token(user);
    let svc = app.service_token(user);
    let (s, c) = app
        .post(
            "/v1/credentials",
            &t,
            json!({"exchange": "binance", "label": "r", "api_key": "rk", "api_secret": "resume-secret"}),
        )
        .await;
    assert_eq!(s, 201);
    let id = c["id"].as_str().unwrap().to_string();
    let (s, _) = app
        .post("/v1/vault/setup", &t, json!({"password": PW}))
        .await;
    assert_eq!(s, 200);

    // the first half of a rotation, as the handler does it: v2 active, session rekeyed
    let store = &app.state.store;
    let provider = &app.state.keyring.provider;
    let actor = keygate_storage::Actor::user(user);
    let vault = store.vault(actor, user).await.unwrap().unwrap();
    let pk = PasswordKey::derive(
        &secrecy::SecretString::from(PW),
        &vault.salt,
        &KdfParams::parse(&vault.kdf).unwrap(),
    )
    .unwrap();
    let ctx = |v: u32| WrapContext {
        user_id: user,
        dek_version: v,
    };
    let v1 = store.active_user_key(actor, user).await.unwrap().unwrap();
    let inner = provider
        .unwrap(&ctx(1), v1.wrapped_dek.as_deref().unwrap())
        .await
        .unwrap();
    let old = pk.open_dek(&ctx(1), &inner).unwrap();
    let new = Dek::generate();
    let now = keygate_storage::DbTime::now();
    let rekey = keygate_storage::SessionRekey {
        session_dek: provider
            .wrap(&ctx(2 | SESSION_BIT), new.expose_secret())
            .await
            .unwrap(),
        previous_session_dek: provider
            .wrap(&ctx(1 | SESSION_BIT), old.expose_secret())
            .await
            .unwrap(),
        previous_dek_version: 1,
        kek_version: provider.current_version() as i32,
        now,
    };
    store
        .add_user_key_version(
            actor,
            &keygate_storage::UserKeyRecord {
                user_id: user,
                version: 2,
                wrapped_dek: Some(
                    provider
                        .wrap(&ctx(2), &pk.seal_dek(&ctx(2), new.expose_secret()))
                        .await
                        .unwrap(),
                ),
                kek_version: provider.current_version() as i32,
                protection: "password".into(),
                state: "active".into(),
                created_at: now,
                updated_at: now,
            },
            &v1,
            Some(&rekey),
        )
        .await
        .unwrap();
    assert_eq!(
        vault_rows(&app, user).await,
        (
            keys(&[(1, "retired"), (2, "active")]),
            Some((2, Some(1))),
            0
        )
    );
    // a row still on v1 opens through the session's previous DEK (no cache)
    app.state.keyring.evict(user);
    let (s, v) = app
        .post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
        .await;
    assert_eq!(
        (s, v["api_secret"].as_str()),
        (200, Some("resume-secret")),
        "{v}"
    );
    // a new credential is sealed under v2 meanwhile
    let (s, c2) = app
        .post(
            "/v1/credentials",
            &t,
            json!({"exchange": "binance", "label": "r2", "api_key": "rk2", "api_secret": "during-rotation"}),
        )
        .await;
    assert_eq!(s, 201, "{c2}");
    // the password cannot change while a retired version still holds rows
    let (s, p) = app
        .post(
            "/v1/vault/password",
            &t,
            json!({"current_password": PW, "new_password": "another long password"}),
        )
        .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (409, Some("dek_rotation_incomplete"))
    );

    // running the rotation again finishes it (v1 opens with the password)
    let (s, r) = app
        .post("/v1/vault/rotate-key", &t, json!({"password": PW}))
        .await;
    assert_eq!((s, r["dek_version"].as_i64()), (200, Some(3)), "{r}");
    assert_eq!(r["credential_secrets"], 2);
    assert!(on_version(&app, user, 3).await);
    assert_eq!(
        vault_rows(&app, user).await.1,
        Some((3, None)),
        "session on the newest version, previous cleared"
    );
    app.state.keyring.evict(user);
    for (cid, secret) in [
        (id.as_str(), "resume-secret"),
        (c2["id"].as_str().unwrap(), "during-rotation"),
    ] {
        let (s, v) = app
            .post(&format!("/v1/credentials/{cid}/reveal"), &svc, json!({}))
            .await;
        assert_eq!((s, v["api_secret"].as_str()), (200, Some(secret)), "{v}");
    }
    // now the password can change, and the new one unlocks
    let (s, _) = app
        .post(
            "/v1/vault/password",
            &t,
            json!({"current_password": PW, "new_password": "another long password"}),
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(app.post("/v1/vault/lock", &t, json!({})).await.0, 200);
    assert_eq!(
        app.post(
            "/v1/vault/unlock",
            &t,
            json!({"password": "another long password"})
        )
        .await
        .0,
        200
    );
    let (s, v) = app
        .post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
        .await;
    assert_eq!((s, v["api_secret"].as_str()), (200, Some("resume-secret")));
});

// A platform-mode rotation that stopped after activating v2 leaves rows on the retired,
// platform-wrapped v1. Setting a vault password then would protect v2 only and leave those
// rows readable without it, so setup refuses until the rotation is finished.
both_backends!(
    vault_setup_waits_for_an_interrupted_rotation,
    |app: TestApp| async move {
        use keygate_crypto::{Dek, WrapContext};
        let user = Uuid::new_v4();
        let t = app.token(user);
        let (s, _) = app
        .post(
            "/v1/credentials",
            &t,
            json!({"exchange": "binance", "label": "p", "api_key": "pk", "api_secret": "platform-secret"}),
        )
        .await;
        assert_eq!(s, 201);
        let store = &app.state.store;
        let provider = &app.state.keyring.provider;
        let actor = keygate_storage::Actor::user(user);
        let now = keygate_storage::DbTime::now();
        let new = Dek::generate();
        let ctx = WrapContext {
            user_id: user,
            dek_version: 2,
        };
        let v1 = store.active_user_key(actor, user).await.unwrap().unwrap();
        store
            .add_user_key_version(
                actor,
                &keygate_storage::UserKeyRecord {
                    user_id: user,
                    version: 2,
                    wrapped_dek: Some(provider.wrap(&ctx, new.expose_secret()).await.unwrap()),
                    kek_version: provider.current_version() as i32,
                    protection: "platform".into(),
                    state: "active".into(),
                    created_at: now,
                    updated_at: now,
                },
                &v1,
                None,
            )
            .await
            .unwrap();
        assert!(on_version(&app, user, 1).await, "a row is left on v1");
        let (s, p) = app
            .post("/v1/vault/setup", &t, json!({"password": PW}))
            .await;
        assert_eq!(
            (s, p["code"].as_str()),
            (409, Some("dek_rotation_incomplete")),
            "{p}"
        );
        assert!(
            store.vault(actor, user).await.unwrap().is_none(),
            "nothing written"
        );
        // finishing the rotation lets setup through
        let (s, r) = app.post("/v1/vault/rotate-key", &t, json!({})).await;
        assert_eq!(s, 200, "{r}");
        let (s, p) = app
            .post("/v1/vault/setup", &t, json!({"password": PW}))
            .await;
        assert_eq!(s, 200, "{p}");
    }
);

// The writes that replace or re-wrap a data key check the version they read: a rotation
// that read v1 before a shred cannot bring the shredded keys back, an unlock that read
// it stores no session copy of the destroyed key, and a vault setup that read v1 before
// a rotation retired it cannot put the password on the retired version (leaving the
// active one without it).
both_backends!(
    key_writes_check_the_version_they_read,
    |app: TestApp| async move {
        use keygate_crypto::{Dek, WrapContext};
        use keygate_storage::{DbTime, StorageError, UserKeyRecord, VaultRecord, VaultSession};
        let store = &app.state.store;
        let provider = &app.state.keyring.provider;
        let next = |user: Uuid, wrapped: Vec<u8>| UserKeyRecord {
            user_id: user,
            version: 2,
            wrapped_dek: Some(wrapped),
            kek_version: provider.current_version() as i32,
            protection: "platform".into(),
            state: "active".into(),
            created_at: DbTime::now(),
            updated_at: DbTime::now(),
        };
        let v2_wrap = |user: Uuid| async move {
            let ctx = WrapContext {
                user_id: user,
                dek_version: 2,
            };
            provider
                .wrap(&ctx, Dek::generate().expose_secret())
                .await
                .unwrap()
        };

        // shred after the rotation / the unlock read v1
        let user = Uuid::new_v4();
        let (t, actor) = (app.token(user), keygate_storage::Actor::user(user));
        let body =
            json!({"exchange": "binance", "label": "k", "api_key": "k1", "api_secret": "s1"});
        assert_eq!(app.post("/v1/credentials", &t, body).await.0, 201);
        let v1 = store.active_user_key(actor, user).await.unwrap().unwrap();
        let shred = json!({"confirm": "SHRED ALL MY SECRETS"});
        assert_eq!(app.post("/v1/vault/shred", &t, shred).await.0, 204);
        let rotated = store
            .add_user_key_version(actor, &next(user, v2_wrap(user).await), &v1, None)
            .await;
        assert!(
            matches!(rotated, Err(StorageError::Conflict(_))),
            "{rotated:?}"
        );
        assert!(
            store.active_user_key(actor, user).await.unwrap().is_none(),
            "still shredded"
        );
        let now = DbTime::now();
        let session = VaultSession {
            user_id: user,
            session_id: Uuid::now_v7(),
            session_dek: vec![7; 60],
            dek_version: 1,
            kek_version: provider.current_version() as i32,
            unlocked_at: now,
            last_used_at: now,
            expires_at: DbTime::new(now.0 + chrono::Duration::minutes(5)),
            ip_address: None,
            previous_session_dek: None,
            previous_dek_version: None,
        };
        let opened = store
            .open_vault_session(
                actor,
                &session,
                v1.wrapped_dek.as_deref().unwrap_or_default(),
                None,
            )
            .await;
        assert!(
            matches!(opened, Err(StorageError::VersionMismatch)),
            "{opened:?}"
        );
        assert!(store
            .vault_session(actor, user, now)
            .await
            .unwrap()
            .is_none());

        // a rotation retires v1 after the setup read it
        let user = Uuid::new_v4();
        let (t, actor) = (app.token(user), keygate_storage::Actor::user(user));
        let body =
            json!({"exchange": "binance", "label": "k", "api_key": "k2", "api_secret": "s2"});
        assert_eq!(app.post("/v1/credentials", &t, body).await.0, 201);
        let v1 = store.active_user_key(actor, user).await.unwrap().unwrap();
        store
            .add_user_key_version(actor, &next(user, v2_wrap(user).await), &v1, None)
            .await
            .unwrap();
        let vault = VaultRecord {
            user_id: user,
            kdf: "argon2id$m=19456,t=2,p=1".into(),
            salt: vec![1; 16],
            auto_lock_minutes: 15,
            require_password_on_decrypt: false,
            biometric_unlock_enabled: false,
            failed_unlock_attempts: 0,
            last_failed_unlock_at: None,
            locked_out_until: None,
            last_unlocked_at: None,
            created_at: now,
            updated_at: now,
        };
        let setup = store
            .setup_vault(
                actor,
                &vault,
                1,
                v1.wrapped_dek.as_deref().unwrap(),
                &[9; 80],
            )
            .await;
        assert!(setup.is_err(), "the password went onto a retired version");
        let active = store.active_user_key(actor, user).await.unwrap().unwrap();
        assert_eq!(
            (active.version, active.protection.as_str()),
            (2, "platform")
        );
        assert!(
            store.vault(actor, user).await.unwrap().is_none(),
            "nothing written"
        );
    }
);

// Attaching the exchange's key id to a generated key pair writes the generation sealed
// under the data-key version it read. If a data-key rotation re-sealed that generation
// meanwhile, the attach writes nothing (the row would go back to the retired version);
// the credential stays pending and a fresh attach works.
both_backends!(
    attaching_a_key_id_does_not_undo_a_data_key_rotation,
    |app: TestApp| async move {
        let user = Uuid::new_v4();
        let t = app.token(user);
        let (s, cred) = app
            .post(
                "/v1/credentials/generate",
                &t,
                json!({"exchange": "binance", "label": "generated", "permissions": ["read"]}),
            )
            .await;
        assert_eq!(s, 201, "{cred}");
        let id: Uuid = cred["id"].as_str().unwrap().parse().unwrap();
        let actor = keygate_storage::Actor::service();
        let store = &app.state.store;
        let mut c = store.credential(actor, user, id).await.unwrap().unwrap();
        let stale = store
            .credential_secret(actor, user, id, c.current_generation)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stale.dek_version, 1);
        let (s, r) = app.post("/v1/vault/rotate-key", &t, json!({})).await;
        assert_eq!(s, 200, "{r}");
        c.api_key_hint = Some("…0001".into());
        let r = store.activate_generated(actor, &c, &stale).await;
        assert!(
            matches!(r, Err(keygate_storage::StorageError::VersionMismatch)),
            "{r:?}"
        );
        let now = store.credential(actor, user, id).await.unwrap().unwrap();
        assert_eq!(now.status, "pending");
        let secret = store
            .credential_secret(actor, user, id, c.current_generation)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            secret.dek_version, 2,
            "the row went back to the retired key"
        );
        // through the API, with a fresh read, the attach works
        let (s, r) = app
            .post(
                &format!("/v1/credentials/{id}/attach-key"),
                &t,
                json!({"api_key": "generated-key-id-0001"}),
            )
            .await;
        assert_eq!(s, 200, "{r}");
        assert_eq!(r["status"], "active");
    }
);

// Something sealed under a data-key version that a rotation retired is not stored: a
// write that took the key before the rotation committed (an OAuth refresh waits seconds
// on its provider) would otherwise leave a row on the retired version, outside a vault
// password set afterwards. Refused with 409 `data_key_changed`; under the active
// version the same write is stored.
both_backends!(
    nothing_is_stored_under_a_retired_data_key,
    |app: TestApp| async move {
        let user = Uuid::new_v4();
        let t = app.token(user);
        let (s, c) = app
            .post(
                "/v1/credentials",
                &t,
                json!({"exchange": "binance", "label": "r", "api_key": "k", "api_secret": "s"}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        let (s, r) = app.post("/v1/vault/rotate-key", &t, json!({})).await;
        assert_eq!((s, r["dek_version"].as_i64()), (200, Some(2)), "{r}");

        let store = &app.state.store;
        let actor = keygate_storage::Actor::user(user);
        let id: Uuid = c["id"].as_str().unwrap().parse().unwrap();
        let cred = store.credential(actor, user, id).await.unwrap().unwrap();
        let current = store.credential_secrets(actor, user, id).await.unwrap()[0].clone();
        let next = |dek_version: i32| keygate_storage::SecretRecord {
            id: Uuid::now_v7(),
            generation: current.generation + 1,
            dek_version,
            rotated_from: Some(current.id),
            created_at: keygate_storage::DbTime::now(),
            ..current.clone()
        };
        let grace = keygate_storage::DbTime::now();
        let stale = store
            .rotate_credential(actor, &cred, cred.row_version, &next(1), grace)
            .await;
        assert!(
            matches!(
                stale,
                Err(keygate_storage::StorageError::Conflict("data_key_version"))
            ),
            "{:?}",
            stale.err()
        );
        assert_eq!(
            store
                .credential_secrets(actor, user, id)
                .await
                .unwrap()
                .len(),
            1,
            "nothing was written"
        );
        let api = keygate_server::error::ApiError::from(stale.unwrap_err());
        assert_eq!(
            (api.status().as_u16(), api.code()),
            (409, "data_key_changed")
        );
        store
            .rotate_credential(actor, &cred, cred.row_version, &next(2), grace)
            .await
            .expect("stored under the active version");
    }
);
