//! Property tests: round trips, and every kind of tampering fails closed (an error, never a
//! panic, never wrong plaintext).

use std::sync::OnceLock;

use keygate_crypto::{
    open_field, seal_field, CryptoError, Dek, FieldAad, KdfParams, MasterKey, PasswordKey,
    WrapContext,
};
use proptest::prelude::*;
use secrecy::SecretString;
use uuid::Uuid;

/// Cheap Argon2id parameters so property tests stay fast; the KDF itself has KATs.
const TEST_KDF: KdfParams = KdfParams::Argon2id {
    m_kib: 8,
    t: 1,
    p: 1,
};

fn dek() -> &'static Dek {
    static D: OnceLock<Dek> = OnceLock::new();
    D.get_or_init(Dek::generate)
}

fn master() -> &'static MasterKey {
    static M: OnceLock<MasterKey> = OnceLock::new();
    M.get_or_init(MasterKey::generate)
}

fn rejected<T>(r: &Result<T, CryptoError>) -> bool {
    matches!(
        r,
        Err(CryptoError::Integrity | CryptoError::Malformed | CryptoError::UnsupportedVersion(_))
    )
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

/// Tampered variants of `ct`: a byte flip, a truncation and an extension.
fn tamper(ct: &[u8], idx: usize, mask: u8, cut: usize, extra: &[u8]) -> Vec<Vec<u8>> {
    let mut flipped = ct.to_vec();
    flipped[idx % ct.len()] ^= mask;
    let truncated = ct[..cut % ct.len()].to_vec();
    let mut extended = ct.to_vec();
    extended.extend_from_slice(extra);
    vec![flipped, truncated, extended]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn field_round_trip(pt in proptest::collection::vec(any::<u8>(), 0..600),
                        user in uuid(), record in uuid(), field in ".{0,40}", v in any::<u32>()) {
        let aad = FieldAad { user_id: user, record_id: record, field: &field, key_version: v };
        let ct = seal_field(dek(), &aad, &pt);
        prop_assert_eq!(ct.len(), pt.len() + keygate_crypto::MIN_LEN);
        prop_assert_eq!(keygate_crypto::ciphertext_key_version(&ct), Ok(v));
        let back = open_field(dek(), &aad, &ct).unwrap();
        prop_assert_eq!(&back[..], &pt[..]);
    }

    #[test]
    fn field_tampering_fails(pt in proptest::collection::vec(any::<u8>(), 0..128),
                             idx in any::<usize>(), mask in 1u8..=255, cut in any::<usize>(),
                             extra in proptest::collection::vec(any::<u8>(), 1..32)) {
        let aad = FieldAad { user_id: Uuid::from_u128(1), record_id: Uuid::from_u128(2),
                             field: "api_secret", key_version: 1 };
        let ct = seal_field(dek(), &aad, &pt);
        for bad in tamper(&ct, idx, mask, cut, &extra) {
            let r = open_field(dek(), &aad, &bad);
            prop_assert!(rejected(&r), "tampered ciphertext accepted");
        }
    }

    #[test]
    fn field_aad_mismatch_fails(pt in proptest::collection::vec(any::<u8>(), 0..64),
                                user in uuid(), record in uuid(), field in "[a-z_]{0,12}",
                                v in any::<u32>(), which in 0u8..5, other in uuid(),
                                other_field in "[a-z_]{0,12}", dv in 1u32..) {
        let aad = FieldAad { user_id: user, record_id: record, field: &field, key_version: v };
        let ct = seal_field(dek(), &aad, &pt);
        let mut wrong = aad;
        match which {
            0 => wrong.user_id = other,
            1 => wrong.record_id = other,
            2 => wrong.field = &other_field,
            3 => wrong.key_version = v.wrapping_add(dv),
            _ => { wrong.user_id = record; wrong.record_id = user; }
        }
        prop_assume!(wrong != aad);
        prop_assert_eq!(open_field(dek(), &wrong, &ct), Err(CryptoError::Integrity));
        // And with a different DEK.
        prop_assert_eq!(open_field(&Dek::generate(), &aad, &ct), Err(CryptoError::Integrity));
    }

    #[test]
    fn field_name_boundaries_are_bound(a in "[a-z]{0,6}", b in "[a-z]{0,6}", split in 0usize..12) {
        // Moving bytes between the field name and neighbouring items is impossible to forge:
        // the length prefixes make the encoding injective.
        let joined = format!("{a}{b}");
        let split = split.min(joined.len());
        let aad1 = FieldAad { user_id: Uuid::nil(), record_id: Uuid::nil(), field: &joined, key_version: 1 };
        let ct = seal_field(dek(), &aad1, b"x");
        let other = &joined[..split];
        prop_assume!(other != joined);
        let aad2 = FieldAad { field: other, ..aad1 };
        prop_assert_eq!(open_field(dek(), &aad2, &ct), Err(CryptoError::Integrity));
    }

    #[test]
    fn dek_wrap_round_trip_and_tampering(user in uuid(), dv in any::<u32>(), kv in any::<u32>(),
                                         idx in any::<usize>(), mask in 1u8..=255,
                                         cut in any::<usize>(),
                                         extra in proptest::collection::vec(any::<u8>(), 1..32),
                                         other_user in uuid(), ddv in 1u32..) {
        let ctx = WrapContext { user_id: user, dek_version: dv };
        let d = Dek::generate();
        let w = master().wrap_dek(kv, &ctx, d.expose_secret());
        prop_assert_eq!(keygate_crypto::ciphertext_key_version(&w), Ok(kv));
        prop_assert_eq!(&master().unwrap_dek(&ctx, &w).unwrap()[..], &d.expose_secret()[..]);
        for bad in tamper(&w, idx, mask, cut, &extra) {
            prop_assert!(rejected(&master().unwrap_dek(&ctx, &bad)));
        }
        if other_user != user {
            let c2 = WrapContext { user_id: other_user, ..ctx };
            prop_assert_eq!(master().unwrap_dek(&c2, &w), Err(CryptoError::Integrity));
        }
        let c3 = WrapContext { dek_version: dv.wrapping_add(ddv), ..ctx };
        prop_assert_eq!(master().unwrap_dek(&c3, &w), Err(CryptoError::Integrity));
        prop_assert_eq!(MasterKey::generate().unwrap_dek(&ctx, &w), Err(CryptoError::Integrity));
        // A wrap is not a field and vice versa.
        let aad = FieldAad { user_id: user, record_id: user, field: "", key_version: kv };
        prop_assert_eq!(open_field(&d, &aad, &w), Err(CryptoError::Malformed));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn nested_password_wrap(pw in ".{0,24}", wrong in ".{0,24}", user in uuid(), dv in any::<u32>(),
                            idx in any::<usize>(), mask in 1u8..=255, cut in any::<usize>(),
                            extra in proptest::collection::vec(any::<u8>(), 1..8)) {
        let ctx = WrapContext { user_id: user, dek_version: dv };
        let salt = keygate_crypto::generate_salt();
        let pk = PasswordKey::derive(&SecretString::from(pw.clone()), &salt, &TEST_KDF).unwrap();
        let d = Dek::generate();
        let inner = pk.seal_dek(&ctx, d.expose_secret());
        let outer = master().wrap_dek(2, &ctx, &inner);

        let got_inner = master().unwrap_dek(&ctx, &outer).unwrap();
        let got = pk.open_dek(&ctx, &got_inner).unwrap();
        prop_assert_eq!(got.expose_secret(), d.expose_secret());

        // The master key alone yields only the inner blob, which is not a DEK.
        prop_assert_ne!(&got_inner[..], &d.expose_secret()[..]);
        // Wrong password fails closed.
        if wrong != pw {
            let wk = PasswordKey::derive(&SecretString::from(wrong), &salt, &TEST_KDF).unwrap();
            prop_assert!(matches!(wk.open_dek(&ctx, &inner), Err(CryptoError::Integrity)));
        }
        // Same password, other salt or other params: a different key.
        let other_salt = PasswordKey::derive(&SecretString::from(pw.clone()), &[9u8; 16], &TEST_KDF).unwrap();
        prop_assert!(other_salt.open_dek(&ctx, &inner).is_err());
        // Tampering with the inner blob.
        for bad in tamper(&inner, idx, mask, cut, &extra) {
            let r = pk.open_dek(&ctx, &bad);
            prop_assert!(rejected(&r));
        }
        // Binding to user and DEK version.
        let c2 = WrapContext { dek_version: dv.wrapping_add(1), ..ctx };
        prop_assert!(matches!(pk.open_dek(&c2, &inner), Err(CryptoError::Integrity)));
    }
}

/// Exhaustive: every single-bit flip of one field ciphertext is rejected.
#[test]
fn every_bit_flip_of_a_field_is_rejected() {
    let aad = FieldAad {
        user_id: Uuid::from_u128(7),
        record_id: Uuid::from_u128(8),
        field: "passphrase",
        key_version: 3,
    };
    let ct = seal_field(
        dek(),
        &aad,
        b"0123456789abcdef0123456789abcdef0123456789abcdef",
    );
    for i in 0..ct.len() {
        for bit in 0..8 {
            let mut bad = ct.clone();
            bad[i] ^= 1 << bit;
            assert!(
                rejected(&open_field(dek(), &aad, &bad)),
                "byte {i} bit {bit}"
            );
        }
    }
    for len in 0..ct.len() {
        assert!(rejected(&open_field(dek(), &aad, &ct[..len])), "len {len}");
    }
}

#[test]
fn nonces_are_fresh() {
    let aad = FieldAad {
        user_id: Uuid::nil(),
        record_id: Uuid::nil(),
        field: "f",
        key_version: 1,
    };
    let a = seal_field(dek(), &aad, b"same");
    let b = seal_field(dek(), &aad, b"same");
    assert_ne!(a[6..18], b[6..18]);
    assert_ne!(a, b);
}
