//! The key provider chosen by `KEYGATE_KEY_PROVIDER`, and what ties a database to it.
//!
//! - `keygate_meta.key_provider` records the provider a database was created with
//!   (`local` or `openbao`; a database from before the setting has none and is `local`).
//!   Starting it under the other provider is refused: its data keys are wrapped by a key
//!   the other provider does not have, and silently generating a new root would fork the
//!   audit chain. Until the first key material exists (check value, root or a data key),
//!   the record may still change, so a failed first start does not bind the database.
//! - With `openbao` the KEK never leaves OpenBao / Vault Transit. The derivation root
//!   (audit chain, site keys and webhook secrets derive from it) is generated at random on
//!   the first start and stored only wrapped by Transit (`master_key_derivation_root`).
//!   The key check is "Transit can unwrap the stored root": a different key, mount or
//!   server cannot, and keygate refuses to start. The Transit key-check value (an HMAC) is
//!   stored as well, for backup headers and restore.
//! - OpenBao unreachable at start: refuse to start. At request time a transient provider
//!   error is 503 `key_provider_unavailable` (`error.rs`), never a fallback.

use std::sync::Arc;
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use keygate_crypto::{MasterKey, WrapContext};
use keygate_keys::{KeyError, KeyProvider, OpenBaoConfig, OpenBaoTransitProvider};
use keygate_storage::{Store, META_KEY_CHECK};
use secrecy::{ExposeSecret, SecretString};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::config::{Config, ConfigError, KeyProviderKind};
use crate::keyfiles;
use crate::master_key::{ResolvedKeys, META_DERIVATION_ROOT};

/// `keygate_meta` key: the provider the database was created with (`local` | `openbao`).
pub const META_KEY_PROVIDER: &str = "key_provider";
/// systemd credential name of the OpenBao token (`LoadCredential=openbao.token:...`).
pub const OPENBAO_TOKEN_CREDENTIAL: &str = "openbao.token";

/// The wrap context of the derivation root (no user, DEK version 0).
pub(crate) fn root_ctx() -> WrapContext {
    WrapContext {
        user_id: Uuid::nil(),
        dek_version: 0,
    }
}

fn meta_err(e: keygate_storage::StorageError) -> ConfigError {
    ConfigError(format!("cannot read database metadata: {e}"))
}

/// The provider this database is bound to, or `None` while nothing binds it yet (no
/// key-check value, no wrapped root, no data key: a failed first start under the wrong
/// provider must not tie an empty database to it). A database that predates
/// `key_provider` is `local`.
pub async fn recorded_provider(store: &Store) -> Result<Option<String>, ConfigError> {
    let bound = store
        .meta_get(META_KEY_CHECK)
        .await
        .map_err(meta_err)?
        .is_some()
        || store
            .meta_get(META_DERIVATION_ROOT)
            .await
            .map_err(meta_err)?
            .is_some()
        || !store.is_empty().await.map_err(meta_err)?;
    if !bound {
        return Ok(None);
    }
    Ok(Some(
        store
            .meta_get(META_KEY_PROVIDER)
            .await
            .map_err(meta_err)?
            .unwrap_or_else(|| KeyProviderKind::Local.as_str().to_string()),
    ))
}

fn mismatch(recorded: &str, wanted: KeyProviderKind) -> ConfigError {
    ConfigError(format!(
        "this database was created with the {recorded} key provider, but KEYGATE_KEY_PROVIDER={wanted}; \
         its data keys are wrapped by the {recorded} provider's key and keygate does not move a database \
         between providers: set KEYGATE_KEY_PROVIDER={recorded} (refusing to start)"
    ))
}

/// Refuses a database bound to another provider; records `kind` for a new one.
pub async fn check_provider_kind(store: &Store, kind: KeyProviderKind) -> Result<(), ConfigError> {
    let recorded = match recorded_provider(store).await? {
        None => {
            store
                .meta_set(META_KEY_PROVIDER, kind.as_str())
                .await
                .map_err(meta_err)?;
            return Ok(());
        }
        Some(k) => store
            .meta_set_if_absent(META_KEY_PROVIDER, &k)
            .await
            .map_err(meta_err)?,
    };
    if recorded != kind.as_str() {
        return Err(mismatch(&recorded, kind));
    }
    Ok(())
}

/// The OpenBao token: `KEYGATE_OPENBAO_TOKEN`, else `KEYGATE_OPENBAO_TOKEN_FILE` (mode 0600
/// or stricter), else the systemd credential `openbao.token`.
fn openbao_token(cfg: &Config) -> Result<SecretString, ConfigError> {
    if let Some(t) = &cfg.openbao_token {
        return Ok(t.clone());
    }
    let path = match &cfg.openbao_token_file {
        Some(p) => {
            keyfiles::check_mode(p)?;
            p.clone()
        }
        None => keyfiles::credential_path(OPENBAO_TOKEN_CREDENTIAL).ok_or_else(|| {
            ConfigError(
                "KEYGATE_KEY_PROVIDER=openbao needs a token: KEYGATE_OPENBAO_TOKEN, KEYGATE_OPENBAO_TOKEN_FILE or the systemd credential openbao.token"
                    .into(),
            )
        })?,
    };
    let text = std::fs::read_to_string(&path)
        .map(Zeroizing::new)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    if text.trim().is_empty() {
        return Err(ConfigError(format!("{} is empty", path.display())));
    }
    Ok(SecretString::from(text.trim()))
}

/// The provider settings from the configuration.
pub fn openbao_config(cfg: &Config) -> Result<OpenBaoConfig, ConfigError> {
    let addr = cfg.openbao_addr.clone().ok_or_else(|| {
        ConfigError("KEYGATE_KEY_PROVIDER=openbao needs KEYGATE_OPENBAO_ADDR".into())
    })?;
    let mut c = OpenBaoConfig::new(addr, openbao_token(cfg)?, cfg.openbao_key.clone());
    c.mount = cfg.openbao_mount.clone();
    c.timeout = Duration::from_secs(10);
    Ok(c)
}

/// `error: cause: cause`, for one-line startup messages (no URL, token or payload is in
/// any of them).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cur = c.source();
    }
    out
}

/// A startup message for a provider error.
pub fn describe(cfg: &OpenBaoConfig, e: &KeyError) -> String {
    let key = format!("{}/keys/{}", cfg.mount, cfg.key_name);
    let addr = shown(cfg);
    match e {
        KeyError::Unavailable { .. } => {
            format!("OpenBao at {addr} is unreachable ({})", chain(e))
        }
        KeyError::Rejected { status: 403, .. } => format!(
            "OpenBao at {addr} refused the token (HTTP 403): check KEYGATE_OPENBAO_TOKEN and that its policy allows the Transit key {key}"
        ),
        KeyError::Rejected { status: 404, .. } => format!(
            "OpenBao at {addr} has no Transit key {key}; create it with `bao write -f {key} type=aes256-gcm96 derived=true` (and check KEYGATE_OPENBAO_MOUNT / KEYGATE_OPENBAO_KEY)"
        ),
        other => format!("OpenBao at {addr}: {}", chain(other)),
    }
}

/// The OpenBao address as messages show it: without a password or query, should the
/// configured address carry one.
fn shown(cfg: &OpenBaoConfig) -> String {
    crate::routes::admin::without_password(&cfg.addr)
}

/// Connects to Transit and checks the key (derived, AEAD). `create_missing`: create the
/// key if it does not exist (only for a new, empty database).
pub async fn connect(
    cfg: &OpenBaoConfig,
    create_missing: bool,
) -> Result<OpenBaoTransitProvider, ConfigError> {
    match OpenBaoTransitProvider::connect(cfg).await {
        Ok(p) => Ok(p),
        Err(KeyError::Rejected { status: 404, .. }) if create_missing => {
            OpenBaoTransitProvider::create_key(cfg)
                .await
                .map_err(|e| ConfigError(format!("{}; refusing to start", describe(cfg, &e))))?;
            tracing::warn!(key = %cfg.key_name, mount = %cfg.mount, "created the OpenBao Transit key for this new database");
            OpenBaoTransitProvider::connect(cfg)
                .await
                .map_err(|e| ConfigError(format!("{}; refusing to start", describe(cfg, &e))))
        }
        Err(e) => Err(ConfigError(format!(
            "{}; refusing to start",
            describe(cfg, &e)
        ))),
    }
}

fn decode_root(b64: &str) -> Result<Vec<u8>, ConfigError> {
    STANDARD
        .decode(b64.trim())
        .map_err(|_| ConfigError("keygate_meta derivation root is corrupt".into()))
}

async fn unwrap_root(
    cfg: &OpenBaoConfig,
    provider: &OpenBaoTransitProvider,
    wrapped: &[u8],
) -> Result<MasterKey, ConfigError> {
    let raw = provider
        .unwrap(&root_ctx(), wrapped)
        .await
        .map_err(|e| match e {
            KeyError::Integrity | KeyError::Malformed => ConfigError(format!(
                "the OpenBao Transit key {}/keys/{} at {} does not match this database (it cannot unwrap the stored root key); refusing to start",
                cfg.mount, cfg.key_name, shown(cfg)
            )),
            e => ConfigError(format!("{}; refusing to start", describe(cfg, &e))),
        })?;
    MasterKey::from_bytes(&raw)
        .map_err(|_| ConfigError("keygate_meta derivation root is corrupt".into()))
}

/// Opens (or, for a new database, sets up) a database under the OpenBao provider: connect,
/// unwrap the stored root (the key check) or create and store it, record the Transit
/// key-check value.
pub async fn resolve_openbao(config: &Config, store: &Store) -> Result<ResolvedKeys, ConfigError> {
    let cfg = openbao_config(config)?;
    let stored = store
        .meta_get(META_DERIVATION_ROOT)
        .await
        .map_err(meta_err)?;
    let fresh = stored.is_none() && store.is_empty().await.map_err(meta_err)?;
    let provider = Arc::new(connect(&cfg, fresh).await?);
    let root = match stored {
        Some(b64) => unwrap_root(&cfg, &provider, &decode_root(&b64)?).await?,
        None if !fresh => {
            return Err(ConfigError(
                "the database holds data keys but no wrapped root key for the openbao provider; refusing to start"
                    .into(),
            ))
        }
        None => {
            let root = MasterKey::generate();
            let raw = Zeroizing::new(
                STANDARD
                    .decode(root.to_base64_secret().expose_secret())
                    .expect("own encoding decodes"),
            );
            let wrapped = provider
                .wrap(&root_ctx(), &raw)
                .await
                .map_err(|e| ConfigError(format!("{}; refusing to start", describe(&cfg, &e))))?;
            // Two instances starting at once: the first root stored wins, both use it.
            let stored = store
                .meta_set_if_absent(META_DERIVATION_ROOT, &STANDARD.encode(&wrapped))
                .await
                .map_err(meta_err)?;
            tracing::info!(
                key = %cfg.key_name,
                "generated the root key for this database; it is stored only wrapped by OpenBao Transit"
            );
            unwrap_root(&cfg, &provider, &decode_root(&stored)?).await?
        }
    };
    let kcv = provider
        .key_check_value()
        .await
        .map_err(|e| ConfigError(format!("{}; refusing to start", describe(&cfg, &e))))?;
    store
        .meta_set_if_absent(META_KEY_CHECK, &kcv)
        .await
        .map_err(meta_err)?;
    tracing::info!(addr = %shown(&cfg), key = %cfg.key_name, version = provider.current_version(), "master key: OpenBao Transit");
    Ok(ResolvedKeys {
        provider: provider.clone(),
        transit: Some(provider),
        root,
        rotating: false,
    })
}

/// Read-only check for `keygate doctor`: the database is an openbao one (or new), OpenBao
/// answers, and it unwraps the stored root. `Ok((rotation_pending, detail))`.
pub async fn verify_openbao(config: &Config, store: &Store) -> Result<(bool, String), String> {
    let cfg = openbao_config(config).map_err(|e| e.to_string())?;
    match recorded_provider(store).await.map_err(|e| e.to_string())? {
        Some(k) if k != KeyProviderKind::OpenBao.as_str() => {
            return Err(mismatch(&k, KeyProviderKind::OpenBao).to_string())
        }
        _ => {}
    }
    let stored = store
        .meta_get(META_DERIVATION_ROOT)
        .await
        .map_err(|e| e.to_string())?;
    let provider =
        OpenBaoTransitProvider::connect(&cfg)
            .await
            .map_err(|e| match (&e, stored.is_none()) {
                // a new database: serve creates the key if the token may
                (KeyError::Rejected { status: 404, .. }, true) => format!(
                    "{} (on a new database `keygate serve` creates it if the token may)",
                    describe(&cfg, &e)
                ),
                _ => describe(&cfg, &e),
            })?;
    match stored {
        None => Ok((
            false,
            format!(
                "OpenBao Transit key {}/keys/{} (version {}) answers; the root key is created on first start",
                cfg.mount,
                cfg.key_name,
                provider.current_version()
            ),
        )),
        Some(b64) => {
            let wrapped = decode_root(&b64).map_err(|e| e.to_string())?;
            unwrap_root(&cfg, &provider, &wrapped)
                .await
                .map_err(|e| e.to_string())?;
            if provider.needs_rewrap(&wrapped).unwrap_or(false) {
                return Ok((
                    true,
                    format!(
                        "rotation in progress: the Transit key {}/keys/{} is at version {}, the database still on an older one; run `keygate master-key rotate`",
                        cfg.mount,
                        cfg.key_name,
                        provider.current_version()
                    ),
                ));
            }
            Ok((
                false,
                format!(
                    "OpenBao Transit key {}/keys/{} (version {}) unwraps this database's root key",
                    cfg.mount,
                    cfg.key_name,
                    provider.current_version()
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Startup messages name the OpenBao server without a password or query that its
    /// configured address might carry.
    #[test]
    fn messages_never_show_the_address_password() {
        let cfg = OpenBaoConfig {
            addr: "https://keygate:hunter2@bao.internal:8200/?token=s.secret".into(),
            token: "t".to_string().into(),
            key_name: "keygate".into(),
            mount: "transit".into(),
            namespace: None,
            timeout: std::time::Duration::from_secs(1),
            allow_insecure_http: false,
        };
        for status in [403, 404, 500] {
            let m = describe(
                &cfg,
                &KeyError::Rejected {
                    op: "decrypt",
                    status,
                },
            );
            assert!(m.contains("bao.internal"), "{m}");
            assert!(!m.contains("hunter2") && !m.contains("s.secret"), "{m}");
        }
    }
}
