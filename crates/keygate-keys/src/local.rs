//! The default provider: master keys held in process memory.

use std::collections::BTreeMap;
use std::fmt;

use async_trait::async_trait;
use keygate_crypto::{inspect, Kind, MasterKey, WrapContext, Zeroizing};
use subtle::ConstantTimeEq;

use crate::{KeyError, KeyProvider};

/// Master keys by version: the current one wraps, every held one unwraps.
///
/// During a master-key rotation, construct it with the new key as current and the old key
/// as previous; once every DEK is re-wrapped, drop the old key.
pub struct LocalKeyProvider {
    current: u32,
    keys: BTreeMap<u32, MasterKey>,
}

impl LocalKeyProvider {
    /// A provider with one master key, which is current at `version`.
    pub fn new(version: u32, key: MasterKey) -> Self {
        let mut keys = BTreeMap::new();
        keys.insert(version, key);
        Self {
            current: version,
            keys,
        }
    }

    /// Adds an older master key that still unwraps (but never wraps).
    ///
    /// Errors with [`KeyError::Config`] if `version` is the current version or already held.
    pub fn with_previous(mut self, version: u32, key: MasterKey) -> Result<Self, KeyError> {
        if self.keys.contains_key(&version) {
            return Err(KeyError::Config("duplicate master key version"));
        }
        self.keys.insert(version, key);
        Ok(self)
    }

    /// Versions of the master keys held, ascending.
    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    fn current_key(&self) -> &MasterKey {
        &self.keys[&self.current]
    }
}

impl fmt::Debug for LocalKeyProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LocalKeyProvider")
            .field("current", &self.current)
            .field("versions", &self.versions())
            .field("keys", &"[redacted]")
            .finish()
    }
}

#[async_trait]
impl KeyProvider for LocalKeyProvider {
    fn name(&self) -> &str {
        "local"
    }

    fn current_version(&self) -> u32 {
        self.current
    }

    fn wrapped_version(&self, wrapped: &[u8]) -> Result<u32, KeyError> {
        let info = inspect(wrapped)?;
        if info.kind != Kind::DekWrap {
            return Err(KeyError::Malformed);
        }
        Ok(info.key_version)
    }

    async fn wrap(&self, ctx: &WrapContext, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        Ok(self.current_key().wrap_dek(self.current, ctx, plaintext))
    }

    async fn unwrap(
        &self,
        ctx: &WrapContext,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let version = self.wrapped_version(wrapped)?;
        let key = self
            .keys
            .get(&version)
            .ok_or(KeyError::UnknownKeyVersion(version))?;
        Ok(key.unwrap_dek(ctx, wrapped)?)
    }

    /// The current master key's check value (hex HMAC-SHA256, see
    /// [`MasterKey::key_check_value`]).
    async fn key_check_value(&self) -> Result<String, KeyError> {
        Ok(self.current_key().key_check_value())
    }

    /// Accepts the check value of any held key, so an instance that already has the new key
    /// as current (and the old as previous) starts while the database still records the old.
    async fn verify_key_check_value(&self, stored: &str) -> Result<bool, KeyError> {
        let stored = stored.trim().as_bytes();
        let mut ok = subtle::Choice::from(0);
        for key in self.keys.values() {
            ok |= key.key_check_value().as_bytes().ct_eq(stored);
        }
        Ok(ok.into())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use uuid::Uuid;

    use super::*;

    fn ctx() -> WrapContext {
        WrapContext {
            user_id: Uuid::from_u128(42),
            dek_version: 1,
        }
    }

    #[tokio::test]
    async fn wraps_and_unwraps_as_dyn_provider() {
        let old = MasterKey::generate();
        let old_kcv = old.key_check_value();
        let p1: Arc<dyn KeyProvider> = Arc::new(LocalKeyProvider::new(1, old));
        let w1 = p1.wrap(&ctx(), &[9u8; 32]).await.unwrap();
        assert_eq!(p1.wrapped_version(&w1).unwrap(), 1);
        assert_eq!(&p1.unwrap(&ctx(), &w1).await.unwrap()[..], &[9u8; 32]);
        assert!(!p1.needs_rewrap(&w1).unwrap());
        assert!(p1.verify_key_check_value(&old_kcv).await.unwrap());

        // A KCV is not the key and does not parse as one.
        assert!(MasterKey::from_base64(&old_kcv).is_err());
    }

    #[tokio::test]
    async fn rotation_keeps_old_wraps_readable() {
        let old_bytes = [1u8; 32];
        let old = MasterKey::from_bytes(&old_bytes).unwrap();
        let old_kcv = old.key_check_value();
        let w1 = LocalKeyProvider::new(1, old)
            .wrap(&ctx(), &[9u8; 32])
            .await
            .unwrap();

        let new = MasterKey::generate();
        let new_kcv = new.key_check_value();
        let p = LocalKeyProvider::new(2, new)
            .with_previous(1, MasterKey::from_bytes(&old_bytes).unwrap())
            .unwrap();
        assert_eq!(p.current_version(), 2);
        assert!(p.needs_rewrap(&w1).unwrap());
        assert_eq!(&p.unwrap(&ctx(), &w1).await.unwrap()[..], &[9u8; 32]);
        let w2 = p.rewrap(&ctx(), &w1).await.unwrap();
        assert_eq!(p.wrapped_version(&w2).unwrap(), 2);
        assert!(!p.needs_rewrap(&w2).unwrap());
        assert!(p.verify_key_check_value(&old_kcv).await.unwrap());
        assert!(p.verify_key_check_value(&new_kcv).await.unwrap());
        assert_eq!(p.key_check_value().await.unwrap(), new_kcv);
        assert!(!p
            .verify_key_check_value(&MasterKey::generate().key_check_value())
            .await
            .unwrap());

        // After the old key is dropped, old wraps are refused by version, new ones open.
        let only_new = LocalKeyProvider::new(2, MasterKey::generate());
        assert!(matches!(
            only_new.unwrap(&ctx(), &w1).await,
            Err(KeyError::UnknownKeyVersion(1))
        ));
        assert!(matches!(
            only_new.unwrap(&ctx(), &w2).await,
            Err(KeyError::Integrity)
        ));
        assert!(LocalKeyProvider::new(2, MasterKey::generate())
            .with_previous(2, MasterKey::generate())
            .is_err());
    }

    #[tokio::test]
    async fn rejects_foreign_and_tampered_wraps() {
        let p = LocalKeyProvider::new(1, MasterKey::generate());
        let w = p.wrap(&ctx(), &[9u8; 32]).await.unwrap();
        assert!(matches!(
            p.unwrap(&ctx(), b"vault:v1:abcdefghijklmnopqrstuvwxyz0123456789")
                .await,
            Err(KeyError::Malformed)
        ));
        let mut bad = w.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(
            p.unwrap(&ctx(), &bad).await,
            Err(KeyError::Integrity)
        ));
        let other = WrapContext {
            user_id: Uuid::from_u128(43),
            dek_version: 1,
        };
        assert!(matches!(
            p.unwrap(&other, &w).await,
            Err(KeyError::Integrity)
        ));
        assert!(!format!("{p:?}").contains(&format!("{:?}", [9u8; 4])));
    }
}
