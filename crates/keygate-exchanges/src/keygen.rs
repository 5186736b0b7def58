//! Key pairs generated inside keygate, for exchanges that accept self-generated keys
//! (Binance Ed25519 / RSA; Coinbase-style EC P-256). Only the public half ever leaves
//! keygate: the user registers it with the exchange and attaches the API key id the
//! exchange returns (DESIGN.md §4, §7 "Credentials without a shared secret").
//!
//! Invariants: private keys exist only as PEM inside [`SecretString`] (zeroized on drop);
//! `Debug` never prints them; randomness comes from the OS CSPRNG.

use std::fmt;

use rand::rngs::OsRng;
use secrecy::SecretString;

/// A freshly generated key pair, both halves PEM-encoded.
pub struct GeneratedKeyPair {
    /// The private key, in the PEM form the matching signer reads: PKCS#8
    /// (`BEGIN PRIVATE KEY`) for Ed25519 and RSA, SEC1 (`BEGIN EC PRIVATE KEY`) for P-256.
    pub private_pem: SecretString,
    /// SubjectPublicKeyInfo (`BEGIN PUBLIC KEY`), the form Binance and Coinbase register.
    pub public_pem: String,
}

impl fmt::Debug for GeneratedKeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GeneratedKeyPair")
            .field("private_pem", &"[redacted]")
            .field("public_pem", &self.public_pem)
            .finish()
    }
}

/// Why a key pair could not be generated. Carries no key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeygenError {
    #[error("unsupported RSA key size {0} (2048, 3072 or 4096)")]
    UnsupportedRsaBits(usize),
    #[error("key generation failed")]
    Failed,
}

const LF: pkcs8::LineEnding = pkcs8::LineEnding::LF;
use rsa::pkcs8;

fn secret_pem(pem: &str) -> SecretString {
    SecretString::from(pem.to_owned())
}

/// An Ed25519 key pair (Binance's recommended key type).
pub fn generate_ed25519() -> GeneratedKeyPair {
    use ed25519_dalek::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    let key = ed25519_dalek::SigningKey::generate(&mut OsRng);
    // Encoding a well-formed in-memory key cannot fail.
    let private = key.to_pkcs8_pem(LF).expect("Ed25519 key encodes as PKCS#8");
    let public = key
        .verifying_key()
        .to_public_key_pem(LF)
        .expect("Ed25519 public key encodes as SPKI");
    GeneratedKeyPair {
        private_pem: secret_pem(&private),
        public_pem: public,
    }
}

/// An RSA key pair for PKCS#1 v1.5 / SHA-256 signing (Binance RSA keys).
pub fn generate_rsa(bits: usize) -> Result<GeneratedKeyPair, KeygenError> {
    use rsa::pkcs8::{EncodePrivateKey as _, EncodePublicKey as _};
    if !matches!(bits, 2048 | 3072 | 4096) {
        return Err(KeygenError::UnsupportedRsaBits(bits));
    }
    let key = rsa::RsaPrivateKey::new(&mut OsRng, bits).map_err(|_| KeygenError::Failed)?;
    let private = key.to_pkcs8_pem(LF).map_err(|_| KeygenError::Failed)?;
    let public = key
        .to_public_key()
        .to_public_key_pem(LF)
        .map_err(|_| KeygenError::Failed)?;
    Ok(GeneratedKeyPair {
        private_pem: secret_pem(&private),
        public_pem: public,
    })
}

/// An EC P-256 key pair, private key as SEC1 `EC PRIVATE KEY` PEM (the form Coinbase
/// issues CDP keys in).
pub fn generate_p256() -> GeneratedKeyPair {
    use p256::pkcs8::EncodePublicKey as _;
    let key = p256::SecretKey::random(&mut OsRng);
    let private = key.to_sec1_pem(LF).expect("P-256 key encodes as SEC1");
    let public = key
        .public_key()
        .to_public_key_pem(LF)
        .expect("P-256 public key encodes as SPKI");
    GeneratedKeyPair {
        private_pem: secret_pem(&private),
        public_pem: public,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::Binance;
    use crate::{ApiCredentials, Environment, Exchange, OutgoingRequest, SignContext};
    use secrecy::ExposeSecret;

    const PAYLOAD: &str = "timestamp=1700000000000&symbol=BTCUSDT";

    /// Signs `GET /api/v3/account?symbol=BTCUSDT` with `pem` through the Binance module and
    /// returns (signed payload, raw signature bytes).
    fn binance_sign(pem: &SecretString) -> (String, Vec<u8>) {
        let creds = ApiCredentials {
            api_key: SecretString::from("key-id"),
            api_secret: None,
            passphrase: None,
            private_key: Some(SecretString::from(pem.expose_secret().to_owned())),
        };
        let mut req = OutgoingRequest {
            method: http::Method::GET,
            path: "/api/v3/account".into(),
            query: Some("symbol=BTCUSDT".into()),
            headers: http::HeaderMap::new(),
            body: bytes::Bytes::new(),
        };
        let ctx = SignContext {
            now_ms: 1_700_000_000_000,
            nonce: 0,
            random_nonce: [0; 16],
            environment: Environment::Testnet,
            host: "testnet.binance.vision".into(),
            recv_window_ms: None,
        };
        Binance.sign(&mut req, &creds, &ctx).unwrap();
        let q = req.query.unwrap();
        let (payload, sig) = q.rsplit_once("&signature=").unwrap();
        let sig = percent_encoding::percent_decode_str(sig)
            .decode_utf8()
            .unwrap();
        (payload.to_string(), crate::util::b64_decode(&sig).unwrap())
    }

    #[test]
    fn ed25519_generated_key_signs_and_verifies() {
        use ed25519_dalek::pkcs8::DecodePublicKey as _;
        use ed25519_dalek::Verifier as _;
        let kp = generate_ed25519();
        assert!(kp
            .private_pem
            .expose_secret()
            .starts_with("-----BEGIN PRIVATE KEY-----"));
        assert!(kp.public_pem.starts_with("-----BEGIN PUBLIC KEY-----"));
        let (payload, sig) = binance_sign(&kp.private_pem);
        assert_eq!(payload, PAYLOAD);
        let vk = ed25519_dalek::VerifyingKey::from_public_key_pem(&kp.public_pem).unwrap();
        let sig = ed25519_dalek::Signature::from_slice(&sig).unwrap();
        vk.verify(payload.as_bytes(), &sig).unwrap();
        assert!(vk.verify(b"tampered", &sig).is_err());
        // Two generations differ.
        assert_ne!(generate_ed25519().public_pem, kp.public_pem);
    }

    #[test]
    fn rsa_generated_key_signs_and_verifies() {
        use rsa::pkcs8::DecodePublicKey as _;
        use rsa::signature::Verifier as _;
        assert_eq!(
            generate_rsa(1024).unwrap_err(),
            KeygenError::UnsupportedRsaBits(1024)
        );
        let kp = generate_rsa(2048).unwrap();
        let (payload, sig) = binance_sign(&kp.private_pem);
        let pk = rsa::RsaPublicKey::from_public_key_pem(&kp.public_pem).unwrap();
        let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(pk);
        let sig = rsa::pkcs1v15::Signature::try_from(sig.as_slice()).unwrap();
        vk.verify(payload.as_bytes(), &sig).unwrap();
        assert!(vk.verify(b"tampered", &sig).is_err());
    }

    #[test]
    fn p256_generated_key_is_sec1_and_verifies() {
        use p256::ecdsa::signature::{Signer as _, Verifier as _};
        use p256::pkcs8::DecodePublicKey as _;
        let kp = generate_p256();
        assert!(kp
            .private_pem
            .expose_secret()
            .starts_with("-----BEGIN EC PRIVATE KEY-----"));
        let sk = p256::SecretKey::from_sec1_pem(kp.private_pem.expose_secret()).unwrap();
        let signing = p256::ecdsa::SigningKey::from(sk);
        let sig: p256::ecdsa::Signature = signing.sign(b"header.claims");
        let pk = p256::PublicKey::from_public_key_pem(&kp.public_pem).unwrap();
        let vk = p256::ecdsa::VerifyingKey::from(pk);
        vk.verify(b"header.claims", &sig).unwrap();
        assert!(vk.verify(b"other", &sig).is_err());
    }

    #[test]
    fn debug_is_redacted() {
        let kp = generate_ed25519();
        let dbg = format!("{kp:?}");
        assert!(dbg.contains("[redacted]"));
        assert!(!dbg.contains("PRIVATE KEY"));
    }
}

/// The kind of a private key given as PEM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrivateKeyKind {
    Ed25519,
    Rsa,
    EcP256,
}

impl PrivateKeyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PrivateKeyKind::Ed25519 => "ed25519",
            PrivateKeyKind::Rsa => "rsa",
            PrivateKeyKind::EcP256 => "ec",
        }
    }
}

/// Parses a PEM private key (PKCS#8, PKCS#1 RSA or SEC1 EC; literal `\n` accepted as
/// Coinbase's JSON download has it) and says what it is; `None` when it is none of these.
pub fn detect_private_key(pem: &str) -> Option<PrivateKeyKind> {
    use ed25519_dalek::pkcs8::DecodePrivateKey as _;
    let pem = pem.replace("\\n", "\n");
    let pem = pem.trim();
    if ed25519_dalek::SigningKey::from_pkcs8_pem(pem).is_ok() {
        return Some(PrivateKeyKind::Ed25519);
    }
    if p256::SecretKey::from_sec1_pem(pem).is_ok() || p256::SecretKey::from_pkcs8_pem(pem).is_ok() {
        return Some(PrivateKeyKind::EcP256);
    }
    {
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        use rsa::pkcs8::DecodePrivateKey as _;
        if rsa::RsaPrivateKey::from_pkcs1_pem(pem).is_ok()
            || rsa::RsaPrivateKey::from_pkcs8_pem(pem).is_ok()
        {
            return Some(PrivateKeyKind::Rsa);
        }
    }
    None
}

#[cfg(test)]
mod detect_tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn detects_generated_keys() {
        assert_eq!(
            detect_private_key(generate_ed25519().private_pem.expose_secret()),
            Some(PrivateKeyKind::Ed25519)
        );
        assert_eq!(
            detect_private_key(generate_p256().private_pem.expose_secret()),
            Some(PrivateKeyKind::EcP256)
        );
        assert_eq!(
            detect_private_key("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"),
            None
        );
    }
}
