//! `keygate master-key rotate` (the server function the command runs): the new key comes
//! in as `master.key`, the old one as `master.key.previous`; every DEK is rewrapped in
//! resumable batches while reads continue; afterwards the old key is not needed, the audit
//! chain still verifies and a second run is a no-op.

use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::both_backends;
use crate::helpers::{self, TestApp};
use keygate_server::master_key::rotate;
use secrecy::ExposeSecret;
use serde_json::json;
use uuid::Uuid;

fn write_key(path: &Path, key: &keygate_crypto::MasterKey) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .unwrap();
    writeln!(f, "{}", key.to_base64_secret().expose_secret()).unwrap();
}

async fn reveal_all(app: &TestApp, creds: &[(Uuid, String, String)]) {
    for (user, id, secret) in creds {
        let (s, v) = app
            .post(
                &format!("/v1/credentials/{id}/reveal"),
                &app.service_token(*user),
                json!({}),
            )
            .await;
        assert_eq!(
            (s, v["api_secret"].as_str()),
            (200, Some(secret.as_str())),
            "{v}"
        );
    }
}

async fn on_old_kek(app: &TestApp, current: i32) -> usize {
    app.state
        .store
        .user_keys_not_on_kek(current, 1000)
        .await
        .unwrap()
        .len()
}

both_backends!(master_key_rotation, |app: TestApp| async move {
    let mut creds = Vec::new();
    for i in 0..3 {
        let user = Uuid::new_v4();
        let secret = format!("rotation-secret-{i}-{}", Uuid::new_v4().simple());
        let (s, c) = app
            .post(
                "/v1/credentials",
                &app.token(user),
                json!({"exchange": "binance", "label": "r", "api_key": format!("k{i}"), "api_secret": secret}),
            )
            .await;
        assert_eq!(s, 201, "{c}");
        creds.push((user, c["id"].as_str().unwrap().to_string(), secret));
    }
    // one password-protected vault: its DEK is wrapped twice (password, then KEK)
    let pw_user = creds[0].0;
    let (s, _) = app
        .post(
            "/v1/vault/setup",
            &app.token(pw_user),
            json!({"password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, 200);
    let (data_dir, url, backend) = app.stop().await;

    // the operator installs the new key and keeps the old one as master.key.previous
    let key = data_dir.path().join("master.key");
    let prev = data_dir.path().join("master.key.previous");
    std::fs::rename(&key, &prev).unwrap();
    let new_key = keygate_crypto::MasterKey::generate();
    write_key(&key, &new_key);
    let app = helpers::start(data_dir, url, backend).await;
    assert_eq!(app.state.keyring.provider.current_version(), 2);
    assert_eq!(on_old_kek(&app, 2).await, 3);
    // reads work before and during the rotation
    reveal_all(&app, &creds[1..]).await;

    // "crash" after one batch of one key: partial, and reads still work
    let r = rotate(&app.state, 1, Some(1)).await.unwrap();
    assert_eq!((r.rewrapped, r.batches, r.complete), (1, 1, false));
    assert_eq!(on_old_kek(&app, 2).await, 2);
    reveal_all(&app, &creds[1..]).await;
    // resume: the rest, then the check value moves to the new key
    let r = rotate(&app.state, 1, None).await.unwrap();
    assert_eq!(
        (r.rewrapped, r.complete, r.already_current),
        (2, true, false)
    );
    assert_eq!(on_old_kek(&app, 2).await, 0);
    let check = app
        .state
        .store
        .meta_get(keygate_storage::META_KEY_CHECK)
        .await
        .unwrap()
        .unwrap();
    assert!(new_key.verify_key_check_value(&check));
    // a second run is a no-op
    let r = rotate(&app.state, 100, None).await.unwrap();
    assert_eq!((r.rewrapped, r.already_current), (0, true));
    let (_, log) = app
        .get("/v1/audit?category=keys", &app.admin_token(Uuid::new_v4()))
        .await;
    let actions: Vec<_> = log["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "master_key_rewrap_batch")
            .count(),
        3,
        "{log}"
    );
    assert_eq!(
        actions
            .iter()
            .filter(|a| *a == "master_key_rotated")
            .count(),
        1
    );
    let (data_dir, url, backend) = app.stop().await;

    // the old key is destroyed: everything still opens with the new key alone
    std::fs::remove_file(&prev).unwrap();
    let app = helpers::start(data_dir, url.clone(), backend).await;
    assert_eq!(app.state.keyring.provider.current_version(), 2);
    reveal_all(&app, &creds[1..]).await;
    // the password vault unlocks and opens under the new key
    let t = app.token(pw_user);
    let (s, st) = app
        .post(
            "/v1/vault/unlock",
            &t,
            json!({"password": "correct horse battery"}),
        )
        .await;
    assert_eq!(s, 200, "{st}");
    reveal_all(&app, &creds[..1]).await;
    // the audit chain (its key derives from the database's original root) still verifies
    let v = app
        .state
        .store
        .verify_audit_chain(app.state.chain_key.as_ref())
        .await
        .unwrap();
    assert!(v.ok, "{v:?}");
    // the old key alone is refused now
    let old = std::fs::read_to_string(&prev).ok();
    assert!(old.is_none());
    let mut cfg = helpers::test_config(app.data_dir.path().to_path_buf(), url);
    cfg.master_key = Some(keygate_crypto::MasterKey::generate().to_base64_secret());
    let err = keygate_server::prepare(cfg).await.err().expect("refused");
    assert!(err.to_string().contains("does not match"), "{err}");
});

// An instance still running with the old key alone when a rotation finishes elsewhere
// stops wrapping new data keys: they would be readable only with the key the operator is
// now told may be destroyed. (Before, it went on creating them under the old key.)
both_backends!(
    an_instance_left_on_the_old_key_stops_wrapping,
    |app: TestApp| async move {
        let (s, _) = app
            .post(
                "/v1/credentials",
                &app.token(Uuid::new_v4()),
                json!({"exchange": "binance", "label": "before", "api_key": "k0", "api_secret": "s0"}),
            )
            .await;
        assert_eq!(s, 201);
        // another instance, started with the new key and the old one as previous, rotates
        let old = std::fs::read_to_string(app.data_dir.path().join("master.key")).unwrap();
        let new_key = keygate_crypto::MasterKey::generate();
        let mut cfg =
            helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
        cfg.master_key = Some(new_key.to_base64_secret());
        cfg.master_key_previous = Some(old.trim().to_string().into());
        let other = keygate_server::Application::build(cfg).await.unwrap().state;
        let r = rotate(&other, 100, None).await.unwrap();
        assert!(r.complete);
        // past this instance's one-second reuse of the database's version
        tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
        let (s, r) = app
            .post(
                "/v1/credentials",
                &app.token(Uuid::new_v4()),
                json!({"exchange": "binance", "label": "after", "api_key": "k1", "api_secret": "s1"}),
            )
            .await;
        assert_eq!(
            (s, r["code"].as_str()),
            (503, Some("key_provider_unavailable")),
            "a data key was wrapped under the old key: {r}"
        );
        assert_eq!(on_old_kek(&app, 2).await, 0, "a data key is on the old key");
    }
);

// Once a rotation has rewrapped data keys under its new key, no instance starts with
// another new key (those data keys need the first one), and an instance on the old key
// alone stops wrapping: data keys it made now would be stranded when the rotation ends.
both_backends!(
    a_started_rotation_binds_its_new_key,
    |app: TestApp| async move {
        for i in 0..2 {
            let (s, _) = app
                .post(
                    "/v1/credentials",
                    &app.token(Uuid::new_v4()),
                    json!({"exchange": "binance", "label": "r", "api_key": format!("k{i}"), "api_secret": format!("s{i}")}),
                )
                .await;
            assert_eq!(s, 201);
        }
        let (data_dir, url, backend) = app.stop().await;
        let key = data_dir.path().join("master.key");
        let old = std::fs::read_to_string(&key).unwrap();
        std::fs::rename(&key, data_dir.path().join("master.key.previous")).unwrap();
        write_key(&key, &keygate_crypto::MasterKey::generate());
        let app = helpers::start(data_dir, url, backend).await;
        let r = rotate(&app.state, 1, Some(1)).await.unwrap();
        assert_eq!((r.rewrapped, r.complete), (1, false));

        // another new key, with the same previous key: refused
        let mut cfg =
            helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
        cfg.master_key = Some(keygate_crypto::MasterKey::generate().to_base64_secret());
        cfg.master_key_previous = Some(old.trim().to_string().into());
        let err = keygate_server::Application::build(cfg)
            .await
            .err()
            .expect("another new key is refused");
        assert!(
            err.to_string().contains("another new key is under way"),
            "{err}"
        );

        // an instance on the old key alone may start (it reads) but wraps nothing
        let mut cfg =
            helpers::test_config(app.data_dir.path().to_path_buf(), app.database_url.clone());
        cfg.master_key = Some(old.trim().to_string().into());
        cfg.master_key_previous = None;
        let stale = keygate_server::Application::build(cfg).await.unwrap().state;
        let ctx = keygate_crypto::WrapContext {
            user_id: Uuid::new_v4(),
            dek_version: 1,
        };
        let wrapped = stale.keyring.provider.wrap(&ctx, &[7u8; 32]).await;
        assert!(wrapped.is_err(), "the old key wrapped during the rotation");
        // the rotation's own instance finishes
        let r = rotate(&app.state, 10, None).await.unwrap();
        assert!(r.complete);
        assert_eq!(on_old_kek(&app, 2).await, 0);
    }
);

/// A provider whose latest version has moved on since it wrapped (OpenBao Transit after a
/// `rotate` lands between a wrap and its row's write).
struct MovedOn(std::sync::Arc<dyn keygate_keys::KeyProvider>);

#[async_trait::async_trait]
impl keygate_keys::KeyProvider for MovedOn {
    fn name(&self) -> &str {
        "moved-on"
    }
    fn current_version(&self) -> u32 {
        self.0.current_version() + 1
    }
    fn wrapped_version(&self, wrapped: &[u8]) -> Result<u32, keygate_keys::KeyError> {
        self.0.wrapped_version(wrapped)
    }
    async fn wrap(
        &self,
        ctx: &keygate_keys::WrapContext,
        plaintext: &[u8],
    ) -> Result<Vec<u8>, keygate_keys::KeyError> {
        self.0.wrap(ctx, plaintext).await
    }
    async fn unwrap(
        &self,
        ctx: &keygate_keys::WrapContext,
        wrapped: &[u8],
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, keygate_keys::KeyError> {
        self.0.unwrap(ctx, wrapped).await
    }
    async fn key_check_value(&self) -> Result<String, keygate_keys::KeyError> {
        self.0.key_check_value().await
    }
}

/// A new data key is labelled with the master-key version that wrapped it, not the
/// provider's latest. A row labelled newer than its wrap is skipped by a rotation, which
/// then reports completion while the row still needs the retired version.
#[tokio::test]
async fn a_data_key_is_labelled_with_the_version_that_wrapped_it() {
    let app = helpers::spawn_app(helpers::Backend::Sqlite).await.unwrap();
    let provider = app.state.keyring.provider.clone();
    assert_eq!(provider.current_version(), 1);
    let keyring = keygate_server::keyring::Keyring::new(
        std::sync::Arc::new(MovedOn(provider)),
        app.state.store.clone(),
    );
    let user = Uuid::new_v4();
    let actor = keygate_storage::Actor::user(user);
    let rec = keyring.active_record(actor, user).await.unwrap();
    assert_eq!(rec.kek_version, 1);
    let stored = app
        .state
        .store
        .active_user_key(actor, user)
        .await
        .unwrap()
        .expect("stored");
    assert_eq!(stored.kek_version, 1, "labelled with the provider's latest");
    // so a rotation to version 2 still finds it
    assert_eq!(on_old_kek(&app, 2).await, 1);
}
