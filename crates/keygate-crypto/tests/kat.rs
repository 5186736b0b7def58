//! Known-answer tests for the primitives keygate builds on.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use argon2::{Algorithm, Argon2, AssociatedData, ParamsBuilder, Version};
use keygate_crypto::{KdfParams, PasswordKey};
use secrecy::SecretString;
use sha2::Sha256;

fn h(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// McGrew & Viega, "The Galois/Counter Mode of Operation (GCM)", revised 2005, Appendix B,
/// test cases 13-16 (AES-256); the same vectors appear in NIST CAVP gcmEncryptExtIV256.
/// (key, iv, plaintext, aad, ciphertext, tag)
const AES_256_GCM: &[(&str, &str, &str, &str, &str, &str)] = &[
    // Test case 13
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000",
        "",
        "",
        "",
        "530f8afbc74536b9a963b4f1c4cb738b",
    ),
    // Test case 14
    (
        "0000000000000000000000000000000000000000000000000000000000000000",
        "000000000000000000000000",
        "00000000000000000000000000000000",
        "",
        "cea7403d4d606b6e074ec5d3baf39d18",
        "d0d1c8a799996bf0265b98b5d48ab919",
    ),
    // Test case 15
    (
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b391aafd255",
        "",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662898015ad",
        "b094dac5d93471bdec1a502270e3cc6c",
    ),
    // Test case 16
    (
        "feffe9928665731c6d6a8f9467308308feffe9928665731c6d6a8f9467308308",
        "cafebabefacedbaddecaf888",
        "d9313225f88406e5a55909c5aff5269a86a7a9531534f7da2e4c303d8a318a72\
         1c3c0c95956809532fcf0e2449a6b525b16aedf5aa0de657ba637b39",
        "feedfacedeadbeeffeedfacedeadbeefabaddad2",
        "522dc1f099567d07f47f37a32a84427d643a8cdcbfe5c0c97598a2bd2555d1aa\
         8cb08e48590dbb3da7b08b1056828838c5f61e6393ba7a0abcc9f662",
        "76fc6ece0f4e1768cddf8853bb2d551b",
    ),
];

#[test]
fn aes_256_gcm_mcgrew_viega_13_to_16() {
    for (i, (k, iv, p, a, c, t)) in AES_256_GCM.iter().enumerate() {
        let cipher = Aes256Gcm::new_from_slice(&h(k)).unwrap();
        let iv: [u8; 12] = h(iv).try_into().unwrap();
        let (p, a) = (h(p), h(a));
        let mut expected = h(c);
        expected.extend(h(t));
        let ct = cipher
            .encrypt(&Nonce::from(iv), Payload { msg: &p, aad: &a })
            .unwrap();
        assert_eq!(ct, expected, "test case {}", 13 + i);
        let pt = cipher
            .decrypt(
                &Nonce::from(iv),
                Payload {
                    msg: &expected,
                    aad: &a,
                },
            )
            .unwrap();
        assert_eq!(pt, p, "test case {}", 13 + i);
    }
}

/// RFC 9106 §5.3: Argon2id, password 32×0x01, salt 16×0x02, secret 8×0x03,
/// associated data 12×0x04, m = 32 KiB, t = 3, p = 4, tag length 32.
#[test]
fn argon2id_rfc9106_5_3() {
    let params = ParamsBuilder::new()
        .m_cost(32)
        .t_cost(3)
        .p_cost(4)
        .output_len(32)
        .data(AssociatedData::new(&[4u8; 12]).unwrap())
        .build()
        .unwrap();
    let argon =
        Argon2::new_with_secret(&[3u8; 8], Algorithm::Argon2id, Version::V0x13, params).unwrap();
    let mut out = [0u8; 32];
    argon
        .hash_password_into(&[1u8; 32], &[2u8; 16], &mut out)
        .unwrap();
    assert_eq!(
        hex::encode(out),
        "0d640df58d78766c08c037a34a8b53c9d01ef0452d75b65eb52520e96b01e659"
    );
}

/// RFC 7914 §11, PBKDF2-HMAC-SHA256 test vectors (dkLen = 64).
#[test]
fn pbkdf2_sha256_rfc7914_11() {
    let mut out = [0u8; 64];
    pbkdf2::pbkdf2_hmac::<Sha256>(b"passwd", b"salt", 1, &mut out);
    assert_eq!(
        hex::encode(out),
        "55ac046e56e3089fec1691c22544b605f94185216dde0465e68b9d57c20dacbc\
         49ca9cccf179b645991664b39d77ef317c71b845b1e30bd509112041d3a19783"
    );
    pbkdf2::pbkdf2_hmac::<Sha256>(b"Password", b"NaCl", 80_000, &mut out);
    assert_eq!(
        hex::encode(out),
        "4ddcd8f60b98be21830cee5ef22701f9641a4418d04c0414aeff08876b34ab56\
         a1d425a1225833549adb841b51c9b3176a272bdebba1d078478f62b397f33c8d"
    );
}

/// Our PBKDF2 path (used for imported vaults) is the RFC function: a key derived through
/// `PasswordKey` with the RFC inputs opens what a key from the raw RFC output sealed.
#[test]
fn password_key_pbkdf2_uses_the_rfc_function() {
    use keygate_crypto::{Dek, WrapContext};
    let ctx = WrapContext {
        user_id: uuid::Uuid::nil(),
        dek_version: 1,
    };
    let pk = PasswordKey::derive(
        &SecretString::from("Password"),
        b"NaClNaCl",
        &KdfParams::Pbkdf2Sha256 { iterations: 1000 },
    )
    .unwrap();
    let dek = Dek::generate();
    let blob = pk.seal_dek(&ctx, dek.expose_secret());
    let again = PasswordKey::derive(
        &SecretString::from("Password"),
        b"NaClNaCl",
        &KdfParams::Pbkdf2Sha256 { iterations: 1000 },
    )
    .unwrap();
    assert_eq!(
        again.open_dek(&ctx, &blob).unwrap().expose_secret(),
        dek.expose_secret()
    );
}
