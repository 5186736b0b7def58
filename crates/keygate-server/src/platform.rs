//! Platform-held keys derived from the master key (`derive_subkey`): one for site keys and
//! one for webhook signing secrets. Both are used like a DEK with keygate's field format,
//! bound to the record id (and owner), so a ciphertext copied to another row does not open.
//! Background jobs need these without a user's vault, which is why they are not user DEKs.

use keygate_crypto::{open_field, seal_field, Dek, FieldAad, MasterKey};
use secrecy::SecretString;
use uuid::Uuid;

use crate::error::ApiError;

pub struct PlatformKeys {
    site: Dek,
    webhooks: Dek,
}

impl std::fmt::Debug for PlatformKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PlatformKeys([redacted])")
    }
}

const SITE_FIELD: &str = "site_key_value";
const WEBHOOK_FIELD: &str = "webhook_secret";

fn aad(owner: Option<Uuid>, record: Uuid, field: &str) -> FieldAad<'_> {
    FieldAad {
        user_id: owner.unwrap_or(Uuid::nil()),
        record_id: record,
        field,
        key_version: 1,
    }
}

fn open(dek: &Dek, aad: &FieldAad<'_>, ct: &[u8]) -> Result<SecretString, ApiError> {
    let pt = open_field(dek, aad, ct)?;
    let s = std::str::from_utf8(&pt).map_err(|_| ApiError::internal("sealed value not UTF-8"))?;
    Ok(SecretString::from(s))
}

impl PlatformKeys {
    pub fn derive(master: &MasterKey) -> Self {
        let site = master.derive_subkey("site-keys/v1");
        let webhooks = master.derive_subkey("webhooks/v1");
        PlatformKeys {
            site: Dek::from_bytes(site.as_bytes()).expect("32-byte subkey"),
            webhooks: Dek::from_bytes(webhooks.as_bytes()).expect("32-byte subkey"),
        }
    }

    pub fn seal_site_value(&self, id: Uuid, value: &str) -> Vec<u8> {
        seal_field(&self.site, &aad(None, id, SITE_FIELD), value.as_bytes())
    }

    pub fn open_site_value(&self, id: Uuid, ct: &[u8]) -> Result<SecretString, ApiError> {
        open(&self.site, &aad(None, id, SITE_FIELD), ct)
    }

    pub fn seal_webhook_secret(&self, owner: Option<Uuid>, id: Uuid, secret: &str) -> Vec<u8> {
        seal_field(
            &self.webhooks,
            &aad(owner, id, WEBHOOK_FIELD),
            secret.as_bytes(),
        )
    }

    pub fn open_webhook_secret(
        &self,
        owner: Option<Uuid>,
        id: Uuid,
        ct: &[u8],
    ) -> Result<SecretString, ApiError> {
        open(&self.webhooks, &aad(owner, id, WEBHOOK_FIELD), ct)
    }
}
