//! Master-key (KEK) providers, the edge of keygate's key hierarchy (DESIGN.md §2).
//!
//! A [`KeyProvider`] wraps and unwraps per-user DEKs (or password-wrapped DEK blobs) bound to
//! a [`WrapContext`]; it is used as `Arc<dyn KeyProvider>`.
//!
//! - [`LocalKeyProvider`]: a [`MasterKey`] from a key file or `KEYGATE_MASTER_KEY` (loaded by
//!   the server), plus previous master keys by version so old wraps still open during a
//!   rotation. Wrapped bytes are keygate's own format (kind `dek-wrap`, first byte `0x01`).
//! - [`OpenBaoTransitProvider`]: OpenBao or HashiCorp Vault Transit over HTTP; the KEK never
//!   leaves the KMS. Wrapped bytes are the Transit ciphertext string (`vault:v<N>:...`).
//!   The [`WrapContext`] is bound as the Transit `context` of a key created with
//!   `derived=true` (a per-context key is derived inside the KMS), which, unlike
//!   `associated_data`, also works for `rewrap`.
//!
//! Rotation: `current_version()` names the KEK version new wraps use;
//! [`KeyProvider::needs_rewrap`] tells whether a stored wrap is older; [`KeyProvider::rewrap`]
//! re-wraps it under the current version (inside the KMS for Transit, so the DEK is never
//! seen by keygate).
//!
//! Key-check values: compare a stored value with [`KeyProvider::verify_key_check_value`],
//! never with `==` on [`KeyProvider::key_check_value`] (a Transit KCV is an HMAC that names
//! the key version it was made with, so it changes after a KMS-side rotation while the old
//! one still verifies).
//!
//! Invariants: no error, `Debug` output or log carries key bytes, plaintext, or the KMS token;
//! unwrapped bytes are returned as `Zeroizing`.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

use async_trait::async_trait;
use keygate_crypto::CryptoError;
pub use keygate_crypto::{MasterKey, WrapContext, Zeroizing};
use subtle::ConstantTimeEq;

mod local;
mod openbao;

pub use local::LocalKeyProvider;
pub use openbao::{OpenBaoConfig, OpenBaoTransitProvider};

/// Errors from key providers. Never carries key bytes, plaintext or credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// The wrapped key failed authentication: tampered, wrong KEK, or wrong context.
    #[error("wrapped key failed authentication")]
    Integrity,
    /// The bytes are not a wrapped key this provider understands (e.g. made by another
    /// provider).
    #[error("wrapped key is malformed or from another key provider")]
    Malformed,
    /// The wrap names a KEK version this provider does not hold.
    #[error("wrapped key needs master key version {0}, which this provider does not hold")]
    UnknownKeyVersion(u32),
    /// The provider could not be reached (connect error, timeout).
    #[error("key provider unreachable during {op}")]
    Unavailable {
        /// The operation, e.g. `"decrypt"`.
        op: &'static str,
        /// Transport error (carries no URL, token or payload).
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The provider answered with an error status (403: bad token or policy, 404: no such
    /// mount or key, 5xx: KMS failure). The response body is not kept.
    #[error("key provider refused {op} (HTTP {status})")]
    Rejected {
        /// The operation, e.g. `"encrypt"`.
        op: &'static str,
        /// HTTP status code.
        status: u16,
    },
    /// The provider answered 2xx with a body that is not what the API documents.
    #[error("unexpected response from key provider during {op}")]
    Protocol {
        /// The operation, e.g. `"encrypt"`.
        op: &'static str,
    },
    /// The provider is misconfigured (bad address, key not created with `derived=true`, ...).
    #[error("invalid key provider configuration: {0}")]
    Config(&'static str),
    /// Another error from the crypto core.
    #[error(transparent)]
    Crypto(CryptoError),
}

impl KeyError {
    /// True for failures worth retrying later (KMS down, timeout, 429, 5xx).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Unavailable { .. } => true,
            Self::Rejected { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }
}

impl From<CryptoError> for KeyError {
    fn from(e: CryptoError) -> Self {
        match e {
            CryptoError::Integrity => Self::Integrity,
            CryptoError::Malformed | CryptoError::UnsupportedVersion(_) => Self::Malformed,
            other => Self::Crypto(other),
        }
    }
}

/// A source of the master key (KEK) that wraps per-user DEKs. Object-safe: use as
/// `Arc<dyn KeyProvider>`.
#[async_trait]
pub trait KeyProvider: Send + Sync {
    /// Short provider name for logs and `doctor` output, e.g. `"local"` or
    /// `"openbao-transit"`.
    fn name(&self) -> &str;

    /// KEK version that [`KeyProvider::wrap`] uses.
    fn current_version(&self) -> u32;

    /// KEK version that produced `wrapped` (read from its header; not authenticated).
    fn wrapped_version(&self, wrapped: &[u8]) -> Result<u32, KeyError>;

    /// Wraps `plaintext` (a DEK, or a password-wrapped DEK blob) bound to `ctx`.
    async fn wrap(&self, ctx: &WrapContext, plaintext: &[u8]) -> Result<Vec<u8>, KeyError>;

    /// Unwraps what [`KeyProvider::wrap`] returned for the same `ctx`.
    async fn unwrap(
        &self,
        ctx: &WrapContext,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError>;

    /// Re-wraps `wrapped` under the current KEK version (master-key rotation).
    async fn rewrap(&self, ctx: &WrapContext, wrapped: &[u8]) -> Result<Vec<u8>, KeyError> {
        let plain = self.unwrap(ctx, wrapped).await?;
        self.wrap(ctx, &plain).await
    }

    /// True when `wrapped` was made with an older KEK version than the current one.
    fn needs_rewrap(&self, wrapped: &[u8]) -> Result<bool, KeyError> {
        Ok(self.wrapped_version(wrapped)? < self.current_version())
    }

    /// A value to store in the database that identifies this KEK without revealing it.
    async fn key_check_value(&self) -> Result<String, KeyError>;

    /// Whether a stored key-check value belongs to this provider's key (constant-time where
    /// it compares locally).
    async fn verify_key_check_value(&self, stored: &str) -> Result<bool, KeyError> {
        let mine = self.key_check_value().await?;
        Ok(mine.as_bytes().ct_eq(stored.trim().as_bytes()).into())
    }
}
