//! Sealing and opening a credential generation's secret fields. Plaintext exists only in
//! `SecretString`s, for the duration of one request.

use keygate_crypto::{open_field, seal_field, FieldAad};
use keygate_exchanges::ApiCredentials;
use keygate_storage::{Actor, SecretRecord};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;

use crate::error::ApiError;
use crate::keyring::{DekHandle, Keyring};

/// The secret fields of one key generation, in plaintext (redacted `Debug`).
pub struct PlainSecrets {
    pub api_key: SecretString,
    pub api_secret: Option<SecretString>,
    pub passphrase: Option<SecretString>,
    pub private_key: Option<SecretString>,
}

impl std::fmt::Debug for PlainSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlainSecrets([redacted])")
    }
}

pub const F_API_KEY: &str = "api_key";
pub const F_API_SECRET: &str = "api_secret";
pub const F_PASSPHRASE: &str = "passphrase";
pub const F_PRIVATE_KEY: &str = "private_key";

fn seal(dek: &DekHandle, user: Uuid, record: Uuid, field: &str, v: &SecretString) -> Vec<u8> {
    let aad = FieldAad {
        user_id: user,
        record_id: record,
        field,
        key_version: dek.version,
    };
    seal_field(&dek.dek, &aad, v.expose_secret().as_bytes())
}

/// Seals every present field into `rec` (bound to `rec.id`, `rec.user_id`, the DEK version).
pub fn seal_into(rec: &mut SecretRecord, dek: &DekHandle, p: &PlainSecrets) {
    let (u, r) = (rec.user_id, rec.id);
    rec.dek_version = dek.version as i32;
    rec.api_key_ct = Some(seal(dek, u, r, F_API_KEY, &p.api_key));
    rec.api_secret_ct = p
        .api_secret
        .as_ref()
        .map(|v| seal(dek, u, r, F_API_SECRET, v));
    rec.passphrase_ct = p
        .passphrase
        .as_ref()
        .map(|v| seal(dek, u, r, F_PASSPHRASE, v));
    rec.private_key_ct = p
        .private_key
        .as_ref()
        .map(|v| seal(dek, u, r, F_PRIVATE_KEY, v));
}

fn open(
    dek: &DekHandle,
    user: Uuid,
    record: Uuid,
    field: &str,
    ct: &Option<Vec<u8>>,
) -> Result<Option<SecretString>, ApiError> {
    let Some(ct) = ct else { return Ok(None) };
    let aad = FieldAad {
        user_id: user,
        record_id: record,
        field,
        key_version: dek.version,
    };
    let pt = open_field(&dek.dek, &aad, ct)?;
    let s =
        std::str::from_utf8(&pt).map_err(|_| ApiError::internal("sealed field is not UTF-8"))?;
    Ok(Some(SecretString::from(s)))
}

/// Opens a generation's fields (DEK unwrapped via the keyring; `vault_locked` in password
/// mode without an unlock session).
pub async fn open_secrets(
    keyring: &Keyring,
    actor: Actor,
    rec: &SecretRecord,
) -> Result<PlainSecrets, ApiError> {
    let dek = keyring
        .dek(actor, rec.user_id, Some(rec.dek_version as u32))
        .await?;
    open_secrets_with(&dek, rec)
}

/// Opens a generation's fields with a DEK the caller already holds (DEK rotation). The
/// header of each field must name `dek.version`.
pub fn open_secrets_with(dek: &DekHandle, rec: &SecretRecord) -> Result<PlainSecrets, ApiError> {
    Ok(PlainSecrets {
        api_key: open(dek, rec.user_id, rec.id, F_API_KEY, &rec.api_key_ct)?
            .unwrap_or_else(|| SecretString::from("")),
        api_secret: open(dek, rec.user_id, rec.id, F_API_SECRET, &rec.api_secret_ct)?,
        passphrase: open(dek, rec.user_id, rec.id, F_PASSPHRASE, &rec.passphrase_ct)?,
        private_key: open(dek, rec.user_id, rec.id, F_PRIVATE_KEY, &rec.private_key_ct)?,
    })
}

impl From<PlainSecrets> for ApiCredentials {
    fn from(p: PlainSecrets) -> Self {
        ApiCredentials {
            api_key: p.api_key,
            api_secret: p.api_secret,
            passphrase: p.passphrase,
            private_key: p.private_key,
        }
    }
}

/// Last four characters of an API key id, for display; nothing for short keys.
pub fn hint(api_key: &SecretString) -> Option<String> {
    let k = api_key.expose_secret();
    if k.chars().count() < 12 {
        return None;
    }
    let tail: String = k
        .chars()
        .rev()
        .take(4)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    Some(format!("…{tail}"))
}
