//! The crate's one error type.
//!
//! Invariant: no variant carries key bytes, plaintext, passwords or ciphertext. Every
//! authentication failure (tampered bytes, wrong key, wrong password, wrong binding) is the
//! single opaque [`CryptoError::Integrity`], so callers cannot build an oracle out of the
//! distinction and have nothing to leak into logs.

/// Errors from sealing, opening, key handling and password derivation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CryptoError {
    /// Authentication failed: the ciphertext or its header was altered, the key (or password)
    /// is wrong, or the associated data (user, record, field, key version) does not match.
    #[error("ciphertext failed authentication")]
    Integrity,
    /// The bytes are not a keygate ciphertext of the expected kind (too short, unknown kind
    /// byte, a blob of another kind, or an authenticated payload of the wrong length).
    #[error("malformed ciphertext")]
    Malformed,
    /// The ciphertext's format version byte is not one this build understands.
    #[error("unsupported ciphertext format version {0}")]
    UnsupportedVersion(u8),
    /// Key material of the wrong length or encoding was supplied.
    #[error("invalid key material")]
    InvalidKey,
    /// Password-based key derivation failed or its parameters are invalid / unparseable.
    #[error("key derivation failed: {0}")]
    Kdf(&'static str),
}
