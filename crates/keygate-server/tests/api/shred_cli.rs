//! `keygate shred --user` (the server function the command runs): afterwards nothing of
//! that user decrypts, other users are untouched, metadata stays and the act is audited.

use crate::both_backends;
use crate::helpers::TestApp;
use serde_json::json;
use uuid::Uuid;

both_backends!(shred_from_the_command_line, |app: TestApp| async move {
    let victim = Uuid::new_v4();
    let bystander = Uuid::new_v4();
    let (tv, tb) = (app.token(victim), app.token(bystander));
    let mut ids = Vec::new();
    for i in 0..3 {
        let (s, c) = app
            .post(
                "/v1/credentials",
                &tv,
                json!({"exchange": "okx", "label": format!("v{i}"), "api_key": format!("k{i}"),
                       "api_secret": format!("victim-secret-{i}"), "passphrase": "pp"}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        ids.push(c["id"].as_str().unwrap().to_string());
    }
    let (s, c) = app
        .post(
            "/v1/credentials",
            &tb,
            json!({"exchange": "binance", "label": "b", "api_key": "bk", "api_secret": "bystander-secret"}),
        )
        .await;
    assert_eq!(s, 201);
    let other = c["id"].as_str().unwrap().to_string();
    // warm the DEK cache: shredding must evict it too
    let svc = app.service_token(victim);
    let (s, v) = app
        .post(
            &format!("/v1/credentials/{}/reveal", ids[0]),
            &svc,
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["api_secret"].as_str()),
        (200, Some("victim-secret-0"))
    );

    let n = keygate_server::shred::shred_user(&app.state, victim)
        .await
        .unwrap();
    assert!(n >= 1, "at least one DEK version destroyed");

    for id in &ids {
        let (s, p) = app
            .post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
            .await;
        assert_eq!(s, 410, "{p}");
        assert_eq!(p["code"], "credential_shredded");
        // metadata remains
        assert_eq!(app.get(&format!("/v1/credentials/{id}"), &tv).await.0, 200);
    }
    let keys = app
        .state
        .store
        .user_keys(keygate_storage::Actor::service(), victim)
        .await
        .unwrap();
    assert!(!keys.is_empty());
    assert!(keys
        .iter()
        .all(|k| k.wrapped_dek.is_none() && k.state == "shredded"));
    // a new credential cannot be sealed under the destroyed keys either
    let (s, p) = app
        .post(
            "/v1/credentials",
            &tv,
            json!({"exchange": "binance", "label": "new", "api_key": "k", "api_secret": "s"}),
        )
        .await;
    assert_eq!(
        (s, p["code"].as_str()),
        (410, Some("credential_shredded")),
        "{p}"
    );

    // the bystander still decrypts
    let (s, v) = app
        .post(
            &format!("/v1/credentials/{other}/reveal"),
            &app.service_token(bystander),
            json!({}),
        )
        .await;
    assert_eq!(
        (s, v["api_secret"].as_str()),
        (200, Some("bystander-secret"))
    );

    // audited, as the command line; a second run is a recorded no-op
    let (_, log) = app.get("/v1/vault/access-log", &tv).await;
    let shreds: Vec<_> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "shred")
        .collect();
    assert_eq!(shreds.len(), 1, "{log}");
    assert_eq!(shreds[0]["actor_role"], "service_role");
    assert_eq!(
        keygate_server::shred::shred_user(&app.state, victim)
            .await
            .unwrap(),
        0
    );
    let verify = app
        .state
        .store
        .verify_audit_chain(app.state.chain_key.as_ref())
        .await
        .unwrap();
    assert!(verify.ok);
});

// A user keygate holds no key of yet is shredded too (by themselves, or by an admin):
// afterwards no secret can be stored for them, as for any shredded user. Before, the
// shred answered 204 and changed nothing, so their next credential was sealed as usual.
both_backends!(
    shredding_a_user_without_keys_refuses_their_secrets_later,
    |app: TestApp| async move {
        let (own, by_admin) = (Uuid::new_v4(), Uuid::new_v4());
        let (s, _) = app
            .post(
                "/v1/vault/shred",
                &app.token(own),
                json!({"confirm": "SHRED ALL MY SECRETS"}),
            )
            .await;
        assert_eq!(s, 204);
        let (s, _) = app
            .post(
                &format!("/v1/admin/users/{by_admin}/shred"),
                &app.admin_token(Uuid::new_v4()),
                json!({"confirm": "SHRED ALL MY SECRETS"}),
            )
            .await;
        assert_eq!(s, 204);
        for user in [own, by_admin] {
            let t = app.token(user);
            let (_, v) = app.get("/v1/vault/status", &t).await;
            assert_eq!(v["shredded"], true, "{v}");
            let (s, p) = app
                .post(
                    "/v1/credentials",
                    &t,
                    json!({"exchange": "binance", "label": "new", "api_key": "k", "api_secret": "s"}),
                )
                .await;
            assert_eq!(
                (s, p["code"].as_str()),
                (410, Some("credential_shredded")),
                "{p}"
            );
            // shredding again is a recorded no-op
            let (s, _) = app
                .post(
                    "/v1/vault/shred",
                    &t,
                    json!({"confirm": "SHRED ALL MY SECRETS"}),
                )
                .await;
            assert_eq!(s, 204);
        }
        // a first key being stored for them as the shred commits (it read no key row
        // before): not stored, and no error but the shred's own
        let now = keygate_storage::DbTime::now();
        let racing = keygate_storage::UserKeyRecord {
            user_id: own,
            version: 1,
            wrapped_dek: Some(vec![0; 60]),
            kek_version: 1,
            protection: "platform".into(),
            state: "active".into(),
            created_at: now,
            updated_at: now,
        };
        let stored = app
            .state
            .store
            .insert_first_user_key(keygate_storage::Actor::service(), &racing)
            .await
            .unwrap();
        assert!(stored.is_none(), "{stored:?}");
        // a master-key rotation has nothing to re-wrap in the rows that hold no key
        let left = app.state.store.user_keys_not_on_kek(1, 10).await.unwrap();
        assert!(left.is_empty(), "{left:?}");
    }
);
