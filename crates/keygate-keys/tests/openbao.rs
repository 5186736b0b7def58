//! End-to-end tests of the Transit provider against a real OpenBao dev server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{bao_binary, BaoServer};
use keygate_crypto::{KdfParams, MasterKey, PasswordKey};
use keygate_keys::{KeyError, KeyProvider, LocalKeyProvider, OpenBaoTransitProvider, WrapContext};
use reqwest::Method;
use secrecy::SecretString;
use uuid::Uuid;

fn ctx(user: u128, v: u32) -> WrapContext {
    WrapContext {
        user_id: Uuid::from_u128(user),
        dek_version: v,
    }
}

#[tokio::test]
async fn openbao_transit_end_to_end() {
    let Some(bin) = bao_binary("openbao_transit_end_to_end") else {
        return;
    };
    tokio::time::timeout(Duration::from_secs(120), run(bin))
        .await
        .expect("OpenBao test timed out");
}

async fn run(bin: std::path::PathBuf) {
    let bao = BaoServer::start(&bin).await;

    // A key without derived=true cannot bind the context: refused.
    assert!(bao
        .admin(
            Method::POST,
            "transit/keys/plain",
            r#"{"type":"aes256-gcm96"}"#
        )
        .await
        .is_success());
    assert!(matches!(
        OpenBaoTransitProvider::connect(&bao.config("plain")).await,
        Err(KeyError::Config(_))
    ));
    // Missing key: 404.
    assert!(matches!(
        OpenBaoTransitProvider::connect(&bao.config("missing")).await,
        Err(KeyError::Rejected { status: 404, .. })
    ));

    OpenBaoTransitProvider::create_key(&bao.config("keygate"))
        .await
        .unwrap();
    let transit = Arc::new(
        OpenBaoTransitProvider::connect(&bao.config("keygate"))
            .await
            .unwrap(),
    );
    let p: Arc<dyn KeyProvider> = transit.clone();
    assert_eq!(p.name(), "openbao-transit");
    assert_eq!(p.current_version(), 1);
    assert!(!format!("{transit:?}").contains(&bao.token));

    // Round trip.
    let dek = [0x5au8; 32];
    let w1 = p.wrap(&ctx(1, 1), &dek).await.unwrap();
    assert!(w1.starts_with(b"vault:v1:"));
    assert_eq!(p.wrapped_version(&w1).unwrap(), 1);
    assert_eq!(&p.unwrap(&ctx(1, 1), &w1).await.unwrap()[..], &dek);

    // Context binding: other user, other DEK version → integrity failure.
    for wrong in [ctx(2, 1), ctx(1, 2)] {
        assert!(matches!(
            p.unwrap(&wrong, &w1).await,
            Err(KeyError::Integrity)
        ));
    }
    // Tampering with the Transit ciphertext.
    let mut bad = w1.clone();
    let i = bad.len() - 5;
    bad[i] = if bad[i] == b'A' { b'B' } else { b'A' };
    assert!(matches!(
        p.unwrap(&ctx(1, 1), &bad).await,
        Err(KeyError::Integrity | KeyError::Malformed)
    ));
    let truncated = &w1[..w1.len() - 8];
    assert!(matches!(
        p.unwrap(&ctx(1, 1), truncated).await,
        Err(KeyError::Integrity | KeyError::Malformed)
    ));
    // A local-format wrap is refused without a request.
    let local = LocalKeyProvider::new(1, MasterKey::generate());
    let lw = local.wrap(&ctx(1, 1), &dek).await.unwrap();
    assert!(matches!(
        p.unwrap(&ctx(1, 1), &lw).await,
        Err(KeyError::Malformed)
    ));
    assert!(matches!(
        local.unwrap(&ctx(1, 1), &w1).await,
        Err(KeyError::Malformed)
    ));

    // Nested password wrap through the KMS.
    let pk = PasswordKey::derive(
        &SecretString::from("pw"),
        &[7u8; 16],
        &KdfParams::Argon2id {
            m_kib: 8,
            t: 1,
            p: 1,
        },
    )
    .unwrap();
    let inner = pk.seal_dek(&ctx(3, 1), &dek);
    let outer = p.wrap(&ctx(3, 1), &inner).await.unwrap();
    let got = p.unwrap(&ctx(3, 1), &outer).await.unwrap();
    assert_eq!(pk.open_dek(&ctx(3, 1), &got).unwrap().expose_secret(), &dek);

    // Key-check value: verifies for this key, not for another key or provider.
    let kcv = p.key_check_value().await.unwrap();
    assert!(kcv.starts_with("transit-hmac:vault:v1:"), "{kcv}");
    assert!(p.verify_key_check_value(&kcv).await.unwrap());
    assert!(!p
        .verify_key_check_value(&local.key_check_value().await.unwrap())
        .await
        .unwrap());
    assert!(!p
        .verify_key_check_value(
            "transit-hmac:vault:v1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
        )
        .await
        .unwrap());
    OpenBaoTransitProvider::create_key(&bao.config("other"))
        .await
        .unwrap();
    let other = OpenBaoTransitProvider::connect(&bao.config("other"))
        .await
        .unwrap();
    assert!(!other.verify_key_check_value(&kcv).await.unwrap());
    assert!(matches!(
        other.unwrap(&ctx(1, 1), &w1).await,
        Err(KeyError::Integrity)
    ));

    // Rotation: new wraps use v2, old ones still open, rewrap happens inside the KMS.
    assert_eq!(transit.rotate().await.unwrap(), 2);
    assert_eq!(p.current_version(), 2);
    assert!(p.needs_rewrap(&w1).unwrap());
    let w2 = p.rewrap(&ctx(1, 1), &w1).await.unwrap();
    assert!(w2.starts_with(b"vault:v2:"));
    assert!(!p.needs_rewrap(&w2).unwrap());
    assert_eq!(&p.unwrap(&ctx(1, 1), &w2).await.unwrap()[..], &dek);
    assert_eq!(&p.unwrap(&ctx(1, 1), &w1).await.unwrap()[..], &dek);
    assert!(matches!(
        p.rewrap(&ctx(2, 1), &w1).await,
        Err(KeyError::Integrity)
    ));
    assert!(p
        .wrap(&ctx(1, 1), &dek)
        .await
        .unwrap()
        .starts_with(b"vault:v2:"));
    // The v1 key-check value still verifies after rotation.
    assert!(p.verify_key_check_value(&kcv).await.unwrap());

    // Bad token: 403, and the error text carries neither token nor plaintext.
    let mut cfg = bao.config("keygate");
    cfg.token = SecretString::from("not-the-token".to_owned());
    let err = OpenBaoTransitProvider::connect(&cfg).await.unwrap_err();
    assert!(
        matches!(err, KeyError::Rejected { status: 403, .. }),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(!text.contains("not-the-token") && !text.contains(&bao.token));

    // Unreachable KMS: a transient error, quickly.
    drop(other);
    let addr = bao.addr.clone();
    drop(bao);
    let err = transit.unwrap(&ctx(1, 1), &w1).await.unwrap_err();
    assert!(err.is_transient(), "{err:?}");
    assert!(matches!(err, KeyError::Unavailable { .. }));
    assert!(!err.to_string().contains(&addr), "{err}");
    let text = format!("{err} {err:?}");
    assert!(!text.contains("vault:v"), "{text}");
}
