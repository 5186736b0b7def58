//! Key types: the master key (KEK), its derived subkeys, and per-user data keys (DEKs).
//!
//! Invariants: key bytes live only in `SecretBox`es (zeroized on drop) and in cached
//! `Aes256Gcm` instances whose round keys are zeroized on drop (`aes/zeroize`); no type here
//! derives `Debug`, `Clone` or `Serialize`; the master key itself never keys AES directly:
//! every use goes through a domain-separated subkey.

use std::fmt;

use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::format::{self, Binding, Kind};
use crate::CryptoError;

/// Length in bytes of every symmetric key in keygate (AES-256, HMAC-SHA256 keys).
pub const KEY_LEN: usize = 32;

/// Fixed message whose MAC is the key-check value (DESIGN §7).
const KCV_MESSAGE: &[u8] = b"keygate key check value v1";

type HmacSha256 = Hmac<Sha256>;

fn random_key() -> SecretBox<[u8; KEY_LEN]> {
    let mut bytes = Box::new([0u8; KEY_LEN]);
    rand::thread_rng().fill_bytes(bytes.as_mut());
    SecretBox::new(bytes)
}

fn key_from_slice(bytes: &[u8]) -> Result<SecretBox<[u8; KEY_LEN]>, CryptoError> {
    if bytes.len() != KEY_LEN {
        return Err(CryptoError::InvalidKey);
    }
    let mut key = Box::new([0u8; KEY_LEN]);
    key.copy_from_slice(bytes);
    Ok(SecretBox::new(key))
}

/// HKDF-Expand (RFC 5869 §2.3) with SHA-256 for a single 32-byte output block:
/// `T(1) = HMAC(PRK, info || 0x01)`. The master key is uniformly random, so it serves as PRK
/// directly and HKDF-Extract is unnecessary.
pub(crate) fn hkdf_expand_32(prk: &[u8], info: &[&[u8]]) -> SecretBox<[u8; KEY_LEN]> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(prk).expect("HMAC accepts any key length");
    for part in info {
        mac.update(part);
    }
    mac.update(&[1]);
    let out = Zeroizing::new(<[u8; KEY_LEN]>::from(mac.finalize().into_bytes()));
    SecretBox::new(Box::new(*out))
}

pub(crate) fn cipher_for(key: &[u8; KEY_LEN]) -> Aes256Gcm {
    Aes256Gcm::new_from_slice(key).expect("32-byte key")
}

/// What a wrapped DEK is bound to: the owning user and the DEK's version.
///
/// Used as associated data for the local KEK wrap and the password wrap, and (via
/// [`WrapContext::encode`]) as the derivation context of a KMS such as OpenBao Transit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct WrapContext {
    /// The user who owns the DEK.
    pub user_id: Uuid,
    /// The DEK's version (bumped by DEK rotation).
    pub dek_version: u32,
}

impl WrapContext {
    /// `user_id (16) || dek_version (u32 BE)`; the same for both wrap kinds, which the
    /// authenticated kind byte in the header tells apart.
    pub(crate) fn binding(&self) -> Binding {
        let mut b = Binding::new();
        b.fixed(self.user_id.as_bytes())
            .fixed(&self.dek_version.to_be_bytes());
        b
    }

    /// Canonical encoding of this context for key providers that take an opaque context
    /// instead of our AAD: `"keygate/dek-wrap/v1" || user_id (16) || dek_version (u32 BE)`.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(19 + 20);
        out.extend_from_slice(b"keygate/dek-wrap/v1");
        out.extend_from_slice(&self.binding().into_binding_bytes());
        out
    }
}

/// The 256-bit master key (KEK). It wraps DEKs, yields the key-check value and derives
/// application subkeys; it never encrypts data directly.
pub struct MasterKey {
    key: SecretBox<[u8; KEY_LEN]>,
    /// AES-256-GCM keyed with the internal "kek-wrap" subkey, prepared once.
    wrap_cipher: Aes256Gcm,
}

impl MasterKey {
    fn from_secret(key: SecretBox<[u8; KEY_LEN]>) -> Self {
        let wrap_key = hkdf_expand_32(key.expose_secret(), &[b"keygate/v1/internal/kek-wrap"]);
        let wrap_cipher = cipher_for(wrap_key.expose_secret());
        Self { key, wrap_cipher }
    }

    /// Generates a fresh random master key (only ever for a new, empty database).
    pub fn generate() -> Self {
        Self::from_secret(random_key())
    }

    /// Builds a master key from exactly 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        key_from_slice(bytes).map(Self::from_secret)
    }

    /// Parses standard base64 (with padding; surrounding whitespace such as a key file's
    /// trailing newline is ignored) of exactly 32 bytes.
    pub fn from_base64(encoded: &str) -> Result<Self, CryptoError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(encoded.trim())
                .map_err(|_| CryptoError::InvalidKey)?,
        );
        Self::from_bytes(&decoded)
    }

    /// The key as standard base64, for writing the key file. Handle with care.
    pub fn to_base64_secret(&self) -> SecretString {
        SecretString::from(STANDARD.encode(self.key.expose_secret()))
    }

    /// Hex HMAC-SHA256 of a fixed label under a subkey derived from the master key.
    ///
    /// Stored in the database so an instance with a different key refuses to start. It is a
    /// PRF output under a key that is itself one-way derived, so it reveals nothing about the
    /// master key.
    pub fn key_check_value(&self) -> String {
        let kcv_key = hkdf_expand_32(self.key.expose_secret(), &[b"keygate/v1/internal/kcv"]);
        let mut mac =
            <HmacSha256 as Mac>::new_from_slice(kcv_key.expose_secret()).expect("any key length");
        mac.update(KCV_MESSAGE);
        hex::encode(mac.finalize().into_bytes())
    }

    /// Compares `stored` with this key's check value in constant time.
    pub fn verify_key_check_value(&self, stored: &str) -> bool {
        let mine = self.key_check_value();
        mine.as_bytes().ct_eq(stored.trim().as_bytes()).into()
    }

    /// Derives an application subkey (e.g. the audit-chain HMAC key) with HKDF-Expand
    /// (SHA-256) under the info `"keygate/v1/app/" || label`. Distinct labels give
    /// independent keys; no label can reach the internal wrap or check-value keys.
    pub fn derive_subkey(&self, label: &str) -> SubKey {
        SubKey {
            key: hkdf_expand_32(
                self.key.expose_secret(),
                &[b"keygate/v1/app/", label.as_bytes()],
            ),
        }
    }

    /// Wraps `plaintext` (a raw DEK, or a password-wrapped DEK blob) under this master key,
    /// recording `kek_version` in the header and binding `ctx` as associated data.
    pub fn wrap_dek(&self, kek_version: u32, ctx: &WrapContext, plaintext: &[u8]) -> Vec<u8> {
        format::seal(
            &self.wrap_cipher,
            Kind::DekWrap,
            kek_version,
            ctx.binding(),
            plaintext,
        )
    }

    /// Opens a blob made by [`MasterKey::wrap_dek`]. Any tampering, a different master key or
    /// a different `ctx` gives [`CryptoError::Integrity`]. Which master key to use is the
    /// caller's choice: read the KEK version with [`crate::ciphertext_key_version`].
    pub fn unwrap_dek(
        &self,
        ctx: &WrapContext,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        format::open(
            &self.wrap_cipher,
            Kind::DekWrap,
            None,
            ctx.binding(),
            wrapped,
        )
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey([redacted])")
    }
}

/// A 256-bit key derived from the master key for one purpose (see
/// [`MasterKey::derive_subkey`]).
pub struct SubKey {
    key: SecretBox<[u8; KEY_LEN]>,
}

impl SubKey {
    /// Exposes the key bytes, e.g. to key an HMAC. Do not store or log them.
    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        self.key.expose_secret()
    }
}

impl fmt::Debug for SubKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubKey([redacted])")
    }
}

/// A per-user 256-bit data key with its AES-256-GCM key schedule prepared once, so sealing a
/// field costs one AES-GCM call. Zeroized on drop.
pub struct Dek {
    key: SecretBox<[u8; KEY_LEN]>,
    pub(crate) cipher: Aes256Gcm,
}

impl Dek {
    fn from_secret(key: SecretBox<[u8; KEY_LEN]>) -> Self {
        let cipher = cipher_for(key.expose_secret());
        Self { key, cipher }
    }

    /// Generates a fresh random DEK.
    pub fn generate() -> Self {
        Self::from_secret(random_key())
    }

    /// Builds a DEK from exactly 32 bytes (e.g. the output of [`MasterKey::unwrap_dek`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, CryptoError> {
        key_from_slice(bytes).map(Self::from_secret)
    }

    /// Exposes the raw key bytes, to be wrapped. Do not store or log them.
    pub fn expose_secret(&self) -> &[u8; KEY_LEN] {
        self.key.expose_secret()
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Dek([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 5869 Appendix A.1 (test case 1): PRK and info as given, first 32 bytes of OKM.
    #[test]
    fn hkdf_expand_matches_rfc5869_case1() {
        let prk = hex::decode("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
            .unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        let okm = hkdf_expand_32(&prk, &[&info]);
        assert_eq!(
            hex::encode(okm.expose_secret()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    #[test]
    fn base64_round_trip_and_rejects_bad_input() {
        let mk = MasterKey::generate();
        let b64 = mk.to_base64_secret();
        let back = MasterKey::from_base64(&format!("{}\n", b64.expose_secret())).unwrap();
        assert_eq!(mk.key_check_value(), back.key_check_value());
        assert_eq!(
            MasterKey::from_base64("not base64!").unwrap_err(),
            CryptoError::InvalidKey
        );
        assert_eq!(
            MasterKey::from_base64(&STANDARD.encode([0u8; 31])).unwrap_err(),
            CryptoError::InvalidKey
        );
        assert!(MasterKey::from_bytes(&[0u8; 33]).is_err());
        assert!(Dek::from_bytes(&[0u8; 16]).is_err());
    }

    #[test]
    fn key_check_value_distinguishes_keys_and_is_stable() {
        let a = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let a2 = MasterKey::from_bytes(&[7u8; 32]).unwrap();
        let b = MasterKey::from_bytes(&[8u8; 32]).unwrap();
        let kcv = a.key_check_value();
        assert_eq!(kcv.len(), 64);
        assert_eq!(kcv, a2.key_check_value());
        assert_ne!(kcv, b.key_check_value());
        assert!(a.verify_key_check_value(&kcv));
        assert!(!b.verify_key_check_value(&kcv));
        assert!(!kcv.contains(&hex::encode([7u8; 32])));
    }

    #[test]
    fn subkeys_are_label_separated() {
        let mk = MasterKey::from_bytes(&[1u8; 32]).unwrap();
        let audit = mk.derive_subkey("audit-chain");
        assert_eq!(audit.as_bytes(), mk.derive_subkey("audit-chain").as_bytes());
        assert_ne!(
            audit.as_bytes(),
            mk.derive_subkey("audit-chain2").as_bytes()
        );
        assert_ne!(audit.as_bytes(), &[1u8; 32]);
    }

    #[test]
    fn wrap_round_trip_and_binding() {
        let mk = MasterKey::generate();
        let dek = Dek::generate();
        let ctx = WrapContext {
            user_id: Uuid::new_v4(),
            dek_version: 3,
        };
        let w = mk.wrap_dek(9, &ctx, dek.expose_secret());
        assert_eq!(crate::ciphertext_key_version(&w), Ok(9));
        let back = mk.unwrap_dek(&ctx, &w).unwrap();
        assert_eq!(&back[..], dek.expose_secret());
        let other = WrapContext {
            dek_version: 4,
            ..ctx
        };
        assert_eq!(mk.unwrap_dek(&other, &w), Err(CryptoError::Integrity));
        assert_eq!(
            MasterKey::generate().unwrap_dek(&ctx, &w),
            Err(CryptoError::Integrity)
        );
    }
}
