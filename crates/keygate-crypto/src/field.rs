//! Sealing of individual secret fields under a user's DEK.

use uuid::Uuid;
use zeroize::Zeroizing;

use crate::format::{self, Binding, Kind};
use crate::keys::Dek;
use crate::CryptoError;

/// What a sealed field is bound to (DESIGN §2). Opening with any other value fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FieldAad<'a> {
    /// Owner of the record.
    pub user_id: Uuid,
    /// The row the field belongs to.
    pub record_id: Uuid,
    /// Column / field name, e.g. `"api_secret"`.
    pub field: &'a str,
    /// Version of the DEK that seals it (also written to the ciphertext header).
    pub key_version: u32,
}

impl FieldAad<'_> {
    /// `user_id (16) || record_id (16) || len (u32 BE) || field`. The key version is bound
    /// through the authenticated header (and checked against `key_version` on open).
    fn binding(&self) -> Binding {
        let mut b = Binding::new();
        b.fixed(self.user_id.as_bytes())
            .fixed(self.record_id.as_bytes())
            .var(self.field.as_bytes());
        b
    }
}

/// Seals one field with AES-256-GCM under `dek`, a fresh random 96-bit nonce and `aad`.
///
/// # Panics
/// Only if `plaintext` exceeds AES-GCM's 64 GiB limit.
pub fn seal_field(dek: &Dek, aad: &FieldAad<'_>, plaintext: &[u8]) -> Vec<u8> {
    format::seal(
        &dek.cipher,
        Kind::Field,
        aad.key_version,
        aad.binding(),
        plaintext,
    )
}

/// Opens a field sealed by [`seal_field`]; the plaintext is zeroized when dropped.
///
/// Errors: [`CryptoError::Integrity`] for any authentication failure (tampering, wrong DEK,
/// any difference in `aad`), [`CryptoError::Malformed`] / [`CryptoError::UnsupportedVersion`]
/// for bytes that are not a field ciphertext of a known format.
pub fn open_field(
    dek: &Dek,
    aad: &FieldAad<'_>,
    ciphertext: &[u8],
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    format::open(
        &dek.cipher,
        Kind::Field,
        Some(aad.key_version),
        aad.binding(),
        ciphertext,
    )
}
