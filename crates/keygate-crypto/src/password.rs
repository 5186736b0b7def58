//! The optional vault-password layer: a key derived from the user's password wraps the DEK
//! *inside* the master-key wrap (DESIGN §2), so neither the password nor the master key
//! alone opens it.
//!
//! Invariant: parameters are validated against hard upper bounds before any derivation, so
//! a tampered parameter string cannot make the server allocate unbounded memory or spin.

use std::fmt;
use std::str::FromStr;

use aes_gcm::Aes256Gcm;
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::format::{self, Kind};
use crate::keys::{cipher_for, Dek, WrapContext, KEY_LEN};
use crate::CryptoError;

/// Largest accepted Argon2 memory cost, KiB (1 GiB).
pub const ARGON2_MAX_M_KIB: u32 = 1 << 20;
/// Largest accepted Argon2 time cost.
pub const ARGON2_MAX_T: u32 = 64;
/// Largest accepted Argon2 parallelism.
pub const ARGON2_MAX_P: u32 = 16;
/// Largest accepted PBKDF2 iteration count.
pub const PBKDF2_MAX_ITERATIONS: u32 = 10_000_000;
/// Recommended salt length in bytes for new vaults.
pub const SALT_LEN: usize = 16;
/// Shortest accepted salt (Argon2's minimum).
pub const MIN_SALT_LEN: usize = 8;

/// Password KDF and its cost parameters, stored beside the salt.
///
/// Compact text form (`Display` / `FromStr`): `argon2id$m=65536,t=3,p=1` or
/// `pbkdf2-sha256$i=100000`. Parsing is strict: canonical order, decimal, no spaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KdfParams {
    /// Argon2id v1.3 (RFC 9106) — used for every new vault.
    Argon2id {
        /// Memory cost in KiB.
        m_kib: u32,
        /// Number of passes.
        t: u32,
        /// Lanes.
        p: u32,
    },
    /// PBKDF2-HMAC-SHA256 — only for vaults imported from the seed; upgrade on next unlock.
    Pbkdf2Sha256 {
        /// Iteration count as stored with the imported vault (the seed's is 100,000).
        iterations: u32,
    },
}

impl Default for KdfParams {
    /// RFC 9106 §4, second recommended option: Argon2id, m = 64 MiB, t = 3, p = 1.
    fn default() -> Self {
        Self::Argon2id {
            m_kib: 64 * 1024,
            t: 3,
            p: 1,
        }
    }
}

impl KdfParams {
    /// Parses the compact form (same as `str::parse`).
    pub fn parse(s: &str) -> Result<Self, CryptoError> {
        s.parse()
    }

    /// Checks the parameters against the crate's bounds.
    pub fn validate(&self) -> Result<(), CryptoError> {
        match *self {
            Self::Argon2id { m_kib, t, p } => {
                if !(1..=ARGON2_MAX_P).contains(&p) {
                    return Err(CryptoError::Kdf("argon2 parallelism out of range"));
                }
                if !(1..=ARGON2_MAX_T).contains(&t) {
                    return Err(CryptoError::Kdf("argon2 time cost out of range"));
                }
                if m_kib < 8 * p || m_kib > ARGON2_MAX_M_KIB {
                    return Err(CryptoError::Kdf("argon2 memory cost out of range"));
                }
            }
            Self::Pbkdf2Sha256 { iterations } => {
                if !(1..=PBKDF2_MAX_ITERATIONS).contains(&iterations) {
                    return Err(CryptoError::Kdf("pbkdf2 iteration count out of range"));
                }
            }
        }
        Ok(())
    }

    /// True when a vault using these parameters should be re-wrapped with the defaults at
    /// the next successful unlock (PBKDF2, or Argon2id weaker than the default).
    pub fn needs_upgrade(&self) -> bool {
        match *self {
            Self::Pbkdf2Sha256 { .. } => true,
            Self::Argon2id { m_kib, t, p: _ } => {
                let Self::Argon2id {
                    m_kib: dm, t: dt, ..
                } = Self::default()
                else {
                    unreachable!("default is Argon2id")
                };
                m_kib < dm || t < dt
            }
        }
    }
}

impl fmt::Display for KdfParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Argon2id { m_kib, t, p } => write!(f, "argon2id$m={m_kib},t={t},p={p}"),
            Self::Pbkdf2Sha256 { iterations } => write!(f, "pbkdf2-sha256$i={iterations}"),
        }
    }
}

fn parse_kv(part: &str, key: &str) -> Result<u32, CryptoError> {
    let v = part
        .strip_prefix(key)
        .and_then(|r| r.strip_prefix('='))
        .ok_or(CryptoError::Kdf("unparseable KDF parameters"))?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || (v.len() > 1 && v.starts_with('0'))
    {
        return Err(CryptoError::Kdf("unparseable KDF parameters"));
    }
    v.parse()
        .map_err(|_| CryptoError::Kdf("unparseable KDF parameters"))
}

impl FromStr for KdfParams {
    type Err = CryptoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = CryptoError::Kdf("unparseable KDF parameters");
        let (alg, rest) = s.split_once('$').ok_or(bad.clone())?;
        let parts: Vec<&str> = rest.split(',').collect();
        let params = match (alg, parts.as_slice()) {
            ("argon2id", [m, t, p]) => Self::Argon2id {
                m_kib: parse_kv(m, "m")?,
                t: parse_kv(t, "t")?,
                p: parse_kv(p, "p")?,
            },
            ("pbkdf2-sha256", [i]) => Self::Pbkdf2Sha256 {
                iterations: parse_kv(i, "i")?,
            },
            _ => return Err(bad),
        };
        params.validate()?;
        Ok(params)
    }
}

/// Generates a random salt of [`SALT_LEN`] bytes for a new vault password.
pub fn generate_salt() -> [u8; SALT_LEN] {
    use rand::RngCore;
    let mut salt = [0u8; SALT_LEN];
    rand::thread_rng().fill_bytes(&mut salt);
    salt
}

/// A key derived from a vault password, with its AES-256-GCM schedule prepared.
pub struct PasswordKey {
    cipher: Aes256Gcm,
}

impl PasswordKey {
    /// Derives the password key. CPU- and memory-heavy by design (≈64 MiB, tens to hundreds
    /// of ms at the defaults): call it off the async executor (`spawn_blocking`).
    pub fn derive(
        password: &SecretString,
        salt: &[u8],
        params: &KdfParams,
    ) -> Result<Self, CryptoError> {
        params.validate()?;
        if salt.len() < MIN_SALT_LEN {
            return Err(CryptoError::Kdf("salt too short"));
        }
        let pw = password.expose_secret().as_bytes();
        let mut out = Zeroizing::new([0u8; KEY_LEN]);
        match *params {
            KdfParams::Argon2id { m_kib, t, p } => {
                let p = Params::new(m_kib, t, p, Some(KEY_LEN))
                    .map_err(|_| CryptoError::Kdf("invalid argon2 parameters"))?;
                Argon2::new(Algorithm::Argon2id, Version::V0x13, p)
                    .hash_password_into(pw, salt, out.as_mut())
                    .map_err(|_| CryptoError::Kdf("argon2 derivation failed"))?;
            }
            KdfParams::Pbkdf2Sha256 { iterations } => {
                pbkdf2::pbkdf2_hmac::<Sha256>(pw, salt, iterations, out.as_mut());
            }
        }
        Ok(Self {
            cipher: cipher_for(&out),
        })
    }

    /// Seals DEK bytes under the password key (kind `password-wrap`, key version =
    /// `ctx.dek_version`). The result is what goes *inside* [`crate::MasterKey::wrap_dek`].
    pub fn seal_dek(&self, ctx: &WrapContext, dek_bytes: &[u8]) -> Vec<u8> {
        format::seal(
            &self.cipher,
            Kind::PasswordWrap,
            ctx.dek_version,
            ctx.binding(),
            dek_bytes,
        )
    }

    /// Opens a blob from [`PasswordKey::seal_dek`]. A wrong password is
    /// [`CryptoError::Integrity`] (indistinguishable from tampering, by design).
    pub fn open_dek(&self, ctx: &WrapContext, blob: &[u8]) -> Result<Dek, CryptoError> {
        let raw = format::open(
            &self.cipher,
            Kind::PasswordWrap,
            Some(ctx.dek_version),
            ctx.binding(),
            blob,
        )?;
        Dek::from_bytes(&raw).map_err(|_| CryptoError::Malformed)
    }
}

impl fmt::Debug for PasswordKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordKey([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_round_trip_and_defaults() {
        let d = KdfParams::default();
        assert_eq!(d.to_string(), "argon2id$m=65536,t=3,p=1");
        assert_eq!(KdfParams::parse("argon2id$m=65536,t=3,p=1"), Ok(d));
        let p = KdfParams::parse("pbkdf2-sha256$i=100000").unwrap();
        assert_eq!(
            p,
            KdfParams::Pbkdf2Sha256 {
                iterations: 100_000
            }
        );
        assert_eq!(p.to_string(), "pbkdf2-sha256$i=100000");
        assert!(p.needs_upgrade());
        assert!(!d.needs_upgrade());
        assert!(KdfParams::parse("argon2id$m=8,t=1,p=1")
            .unwrap()
            .needs_upgrade());
    }

    #[test]
    fn params_parse_is_strict_and_bounded() {
        for bad in [
            "",
            "argon2id",
            "argon2id$",
            "argon2id$t=3,m=65536,p=1",
            "argon2id$m=65536,t=3",
            "argon2id$m=65536,t=3,p=1,x=1",
            "argon2id$m=+65536,t=3,p=1",
            "argon2id$m=065536,t=3,p=1",
            "argon2id$m= 65536,t=3,p=1",
            "argon2id$m=99999999999,t=3,p=1",
            "argon2id$m=2097152,t=3,p=1",
            "argon2id$m=65536,t=0,p=1",
            "argon2id$m=65536,t=3,p=0",
            "argon2id$m=7,t=3,p=1",
            "argon2i$m=65536,t=3,p=1",
            "pbkdf2-sha256$i=0",
            "pbkdf2-sha256$i=100000000",
            "pbkdf2-sha1$i=1000",
            "pbkdf2-sha256$iterations=1000",
        ] {
            assert!(KdfParams::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn derive_rejects_short_salt() {
        let pw = SecretString::from("pw");
        let p = KdfParams::Argon2id {
            m_kib: 8,
            t: 1,
            p: 1,
        };
        assert!(matches!(
            PasswordKey::derive(&pw, b"short", &p),
            Err(CryptoError::Kdf(_))
        ));
    }
}
