//! Verification primitives. Comparisons of MACs go through `Mac::verify_slice`, which is
//! constant-time; signatures through the RustCrypto verifiers.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256, Sha512};

type HmacSha256 = Hmac<Sha256>;
type HmacSha512 = Hmac<Sha512>;

/// Whether `tag` is HMAC-SHA256(`key`, `msg`).
pub(crate) fn hmac_sha256_ok(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let mut mac = HmacSha256::new_from_slice(key).expect("hmac takes any key length");
    mac.update(msg);
    mac.verify_slice(tag).is_ok()
}

/// Whether `tag` is HMAC-SHA512(`key`, `msg`).
pub(crate) fn hmac_sha512_ok(key: &[u8], msg: &[u8], tag: &[u8]) -> bool {
    let mut mac = HmacSha512::new_from_slice(key).expect("hmac takes any key length");
    mac.update(msg);
    mac.verify_slice(tag).is_ok()
}

pub(crate) fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub(crate) fn sha512_hex(data: &[u8]) -> String {
    hex::encode(Sha512::digest(data))
}

/// Standard base64, padding optional.
pub(crate) fn b64_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().trim_end_matches('=');
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(s)
        .ok()
}

/// base64url without padding (JWT segments); tolerates padding.
pub(crate) fn b64url_decode(s: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).ok()
}

/// Constant-time equality of two byte strings (passphrases).
pub(crate) fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    // Compare MACs of both under a fixed key: equal-length, constant-time, no new dep.
    let mut mac = HmacSha256::new_from_slice(b"mock-exchange-ct-eq").expect("key");
    mac.update(a);
    let tag = mac.finalize().into_bytes();
    hmac_sha256_ok(b"mock-exchange-ct-eq", b, &tag)
}

/// Verifies an Ed25519 or RSASSA-PKCS1-v1_5/SHA-256 signature with an SPKI (or PKCS#1
/// for RSA) PEM public key, whichever the PEM holds.
pub(crate) fn verify_asymmetric(pem: &str, msg: &[u8], sig: &[u8]) -> Result<(), &'static str> {
    use ed25519_dalek::pkcs8::DecodePublicKey as _;
    if let Ok(vk) = ed25519_dalek::VerifyingKey::from_public_key_pem(pem) {
        let sig =
            ed25519_dalek::Signature::from_slice(sig).map_err(|_| "malformed ed25519 signature")?;
        return vk
            .verify_strict(msg, &sig)
            .map_err(|_| "ed25519 signature mismatch");
    }
    let rsa_key = {
        use rsa::pkcs1::DecodeRsaPublicKey as _;
        use rsa::pkcs8::DecodePublicKey as _;
        rsa::RsaPublicKey::from_public_key_pem(pem)
            .or_else(|_| rsa::RsaPublicKey::from_pkcs1_pem(pem))
            .map_err(|_| "public key PEM is neither Ed25519 nor RSA")?
    };
    use rsa::signature::Verifier as _;
    let vk = rsa::pkcs1v15::VerifyingKey::<Sha256>::new(rsa_key);
    let sig = rsa::pkcs1v15::Signature::try_from(sig).map_err(|_| "malformed rsa signature")?;
    vk.verify(msg, &sig).map_err(|_| "rsa signature mismatch")
}

/// A P-256 verifying key from an SPKI public-key PEM or a SEC1/PKCS#8 private-key PEM.
pub(crate) fn p256_key(pem: &str) -> Option<p256::ecdsa::VerifyingKey> {
    use p256::pkcs8::{DecodePrivateKey as _, DecodePublicKey as _};
    if let Ok(pk) = p256::PublicKey::from_public_key_pem(pem) {
        return Some(p256::ecdsa::VerifyingKey::from(&pk));
    }
    let sk = p256::SecretKey::from_sec1_pem(pem)
        .or_else(|_| p256::SecretKey::from_pkcs8_pem(pem))
        .ok()?;
    Some(p256::ecdsa::VerifyingKey::from(&sk.public_key()))
}

/// Verifies an ES256 JWS signature (raw r||s, 64 bytes) over `msg`.
pub(crate) fn es256_ok(vk: &p256::ecdsa::VerifyingKey, msg: &[u8], sig: &[u8]) -> bool {
    use p256::ecdsa::signature::Verifier as _;
    match p256::ecdsa::Signature::from_slice(sig) {
        Ok(sig) => vk.verify(msg, &sig).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ct_eq_works() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn hmac_known_answer() {
        // RFC 4231 test case 2.
        let tag = hex::decode("5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843")
            .unwrap();
        assert!(hmac_sha256_ok(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag
        ));
        let tag512 = hex::decode(
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea2505549758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737",
        )
        .unwrap();
        assert!(hmac_sha512_ok(
            b"Jefe",
            b"what do ya want for nothing?",
            &tag512
        ));
    }
}
