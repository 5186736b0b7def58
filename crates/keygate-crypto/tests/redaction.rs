//! No secret type prints key material through `Debug`, and errors carry none.

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine as _;
use keygate_crypto::{
    open_field, CryptoError, Dek, FieldAad, KdfParams, MasterKey, PasswordKey, WrapContext,
};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

/// Every rendering of `key` (hex, base64 variants, Rust's `[1, 2, ...]`) and a 6-byte window
/// of each, none of which may appear in `s`.
fn assert_no_key_material(s: &str, key: &[u8]) {
    let decimal = format!("{key:?}");
    let renderings = [
        hex::encode(key),
        hex::encode_upper(key),
        STANDARD.encode(key),
        STANDARD_NO_PAD.encode(key),
        URL_SAFE.encode(key),
        URL_SAFE_NO_PAD.encode(key),
        decimal[1..decimal.len() / 2].to_string(),
    ];
    for r in &renderings {
        let window: String = r.chars().take(12).collect();
        assert!(!s.contains(window.as_str()), "{s:?} leaks key material");
    }
    assert!(s.contains("redacted"), "{s:?} should say it is redacted");
}

#[test]
fn debug_of_secret_types_is_redacted() {
    let raw = [0x5au8; 32];
    let mk = MasterKey::from_bytes(&raw).unwrap();
    assert_no_key_material(&format!("{mk:?}"), &raw);
    assert_no_key_material(&format!("{mk:#?}"), &raw);

    let sub = mk.derive_subkey("audit-chain");
    let sub_bytes = *sub.as_bytes();
    assert_no_key_material(&format!("{sub:?}"), &sub_bytes);

    let dek = Dek::from_bytes(&[0xa5u8; 32]).unwrap();
    assert_no_key_material(&format!("{dek:?}"), &[0xa5u8; 32]);
    let dek2 = Dek::generate();
    assert_no_key_material(&format!("{dek2:?}"), dek2.expose_secret());

    let pw = SecretString::from("hunter2-correct-horse");
    let pk = PasswordKey::derive(
        &pw,
        &[1u8; 16],
        &KdfParams::Argon2id {
            m_kib: 8,
            t: 1,
            p: 1,
        },
    )
    .unwrap();
    let s = format!("{pk:?}");
    assert!(!s.contains("hunter2"));
    assert!(s.contains("redacted"));

    let b64 = mk.to_base64_secret();
    assert!(!format!("{b64:?}").contains(b64.expose_secret()));
}

#[test]
fn errors_carry_no_material() {
    let mk = MasterKey::from_bytes(&[0x5au8; 32]).unwrap();
    let ctx = WrapContext {
        user_id: Uuid::nil(),
        dek_version: 1,
    };
    let w = mk.wrap_dek(1, &ctx, &[0x77u8; 32]);
    let err = MasterKey::generate().unwrap_dek(&ctx, &w).unwrap_err();
    assert_eq!(err, CryptoError::Integrity);
    let text = format!("{err} {err:?}");
    assert!(!text.contains(&hex::encode([0x77u8; 32])));
    let err = MasterKey::from_base64("WlpaWlpaWlpaWlpaWlpaWlpaWlpaWlpa").unwrap_err();
    assert!(!format!("{err} {err:?}").contains("WlpaWl"));
    let dek = Dek::generate();
    let aad = FieldAad {
        user_id: Uuid::nil(),
        record_id: Uuid::nil(),
        field: "api_secret",
        key_version: 1,
    };
    let e = open_field(&dek, &aad, &[1u8; 64]).unwrap_err();
    assert_eq!(e.to_string(), "ciphertext failed authentication");
}
