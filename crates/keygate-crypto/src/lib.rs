//! keygate's envelope-encryption core (DESIGN.md §2). Pure: no I/O, no async, no clock.
//!
//! ```text
//! MasterKey (KEK)  --wrap_dek-->  DEK bytes, or the password-wrapped DEK blob
//!   PasswordKey    --seal_dek-->  DEK bytes              (optional, nested inside the KEK wrap)
//!     Dek          --seal_field-> each secret field      (AAD: user, record, field, version)
//! ```
//!
//! # API
//! - [`MasterKey`]: `generate()`, `from_bytes(&[u8])`, `from_base64(&str)`,
//!   `to_base64_secret() -> SecretString`, `key_check_value() -> String` (hex),
//!   `verify_key_check_value(&str) -> bool`, `derive_subkey(&str) -> SubKey`,
//!   `wrap_dek(kek_version, &WrapContext, &[u8]) -> Vec<u8>`,
//!   `unwrap_dek(&WrapContext, &[u8]) -> Result<Zeroizing<Vec<u8>>>`.
//! - [`SubKey`]: `as_bytes() -> &[u8; 32]`.
//! - [`Dek`]: `generate()`, `from_bytes(&[u8])`, `expose_secret() -> &[u8; 32]`; holds a
//!   prepared AES-256-GCM key schedule, so keep a `Dek` (e.g. in an `Arc`) for a request
//!   instead of rebuilding it per field.
//! - [`WrapContext`] `{ user_id, dek_version }` (+ `encode()` for KMS contexts).
//! - [`KdfParams`] (`Display`/`FromStr`: `argon2id$m=65536,t=3,p=1`,
//!   `pbkdf2-sha256$i=100000`), [`generate_salt`], [`PasswordKey`]:
//!   `derive(&SecretString, salt, &KdfParams)`, `seal_dek(&WrapContext, &[u8]) -> Vec<u8>`,
//!   `open_dek(&WrapContext, &[u8]) -> Result<Dek>`.
//! - [`FieldAad`], [`seal_field`], [`open_field`], [`ciphertext_key_version`], [`inspect`].
//! - [`CryptoError`]: `Integrity` (every authentication failure, including a wrong
//!   password), `Malformed`, `UnsupportedVersion(u8)`, `InvalidKey`, `Kdf(&'static str)`.
//!
//! Password-protected vault, storing: `inner = pk.seal_dek(ctx, dek.expose_secret())`,
//! `stored = master.wrap_dek(kek_v, ctx, &inner)`. Opening: `inner = master.unwrap_dek(ctx,
//! stored)?`, `dek = pk.open_dek(ctx, &inner)?`.
//!
//! # Format
//! Every ciphertext is `version(1) | kind(1) | key_version(u32 BE) | nonce(12) | ct | tag(16)`;
//! the header and a length-prefixed binding form the AAD. See `FORMAT.md`.
//!
//! # Invariants and non-features
//! - No key bytes, plaintext or passwords in `Debug`, `Display`, errors or panics: secret
//!   holders implement `Debug` by hand as `[redacted]`; nothing here logs.
//! - Decryption outputs are `Zeroizing`; key bytes live in `SecretBox`; cached AES key
//!   schedules are zeroized on drop.
//! - Nonces are 96-bit random from `rand::thread_rng()` (DESIGN §7); with random nonces a
//!   single DEK should seal well under 2^32 messages — far above one user's fields.
//! - Not provided: streaming/large-object encryption, key storage, clocks, KMS access (see
//!   `keygate-keys`).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![warn(unreachable_pub)]

mod error;
mod field;
mod format;
mod keys;
mod password;

pub use error::CryptoError;
pub use field::{open_field, seal_field, FieldAad};
pub use format::{ciphertext_key_version, inspect, CiphertextInfo, Kind, FORMAT_V1, MIN_LEN};
pub use keys::{Dek, MasterKey, SubKey, WrapContext, KEY_LEN};
pub use password::{
    generate_salt, KdfParams, PasswordKey, ARGON2_MAX_M_KIB, ARGON2_MAX_P, ARGON2_MAX_T,
    MIN_SALT_LEN, PBKDF2_MAX_ITERATIONS, SALT_LEN,
};
pub use zeroize::Zeroizing;
