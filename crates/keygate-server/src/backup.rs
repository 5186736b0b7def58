//! `keygate backup` / `keygate restore`: the file handling and key checks around
//! keygate-storage's snapshot format (which owns the SQL).
//!
//! Backup needs only the database: it copies ciphertexts and wrapped keys, never the master
//! key or the token secret. Restore needs the master key the backup was taken under
//! (`<data_dir>/master.key`, `$CREDENTIALS_DIRECTORY/master.key` or `KEYGATE_MASTER_KEY`)
//! and checks it against the backup's key-check value before it opens the target database.
//! With the OpenBao provider, Transit verifies the backup's key-check value instead.

use std::fs;
use std::io::BufWriter;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use keygate_storage::{BackupFile, BackupSummary, ChainReport, Store};

use crate::config::{Config, ConfigError, KeyProviderKind};
use crate::keyfiles;
use keygate_keys::KeyProvider;

/// What a restore did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RestoreReport {
    pub restored: BackupSummary,
    pub audit: ChainReport,
    /// Restored with the current key and the previous one (a backup from before a
    /// master-key rotation): a rotation is under way; `keygate master-key rotate` ends it.
    pub rotating: bool,
}

fn temp_path(out: &Path) -> PathBuf {
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    out.with_file_name(format!(".{name}.partial-{}", std::process::id()))
}

/// Writes a snapshot of the configured database to `out` (mode 0600). The file appears
/// only when complete: it is written beside `out` and renamed into place.
pub async fn backup_to_file(config: &Config, out: &Path) -> Result<BackupSummary, ConfigError> {
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| ConfigError(format!("cannot open database: {e}")))?;
    let tmp = temp_path(out);
    let file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| ConfigError(format!("cannot create {}: {e}", tmp.display())))?;
    let mut w = BufWriter::new(file);
    let result = store.backup(&mut w).await;
    store.close().await;
    let finish = result
        .map_err(|e| ConfigError(format!("backup failed: {e}")))
        .and_then(|s| {
            let file = w
                .into_inner()
                .map_err(|e| ConfigError(format!("cannot write {}: {e}", tmp.display())))?;
            file.sync_all()
                .map_err(|e| ConfigError(format!("cannot write {}: {e}", tmp.display())))?;
            fs::rename(&tmp, out)
                .map_err(|e| ConfigError(format!("cannot create {}: {e}", out.display())))?;
            Ok(s)
        });
    if finish.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    finish
}

/// Restores `from` into the (empty) database named by `config.database_url`, then walks
/// the restored audit chain. Every check that can fail without a database (file
/// integrity, format and schema version, master key) runs before the database is opened.
pub async fn restore_from_file(config: &Config, from: &Path) -> Result<RestoreReport, ConfigError> {
    let file = BackupFile::open(from)
        .map_err(|e| ConfigError(format!("{}: {e}; nothing was written", from.display())))?;
    let master = match config.key_provider {
        KeyProviderKind::Local => {
            let (master, _) = keyfiles::load_master_key(config)?.ok_or_else(|| {
                ConfigError(format!(
                    "no master key: put the key this backup was taken under in {} (mode 0600) or KEYGATE_MASTER_KEY; nothing was written",
                    config.data_dir.join(keyfiles::MASTER_KEY_FILE).display()
                ))
            })?;
            let header = &file.header().key_check_value;
            if !master.verify_key_check_value(header) {
                // A backup from before a master-key rotation: restored with the new key as
                // the current one and the old one as the previous, it comes back as a
                // rotation under way, which `keygate master-key rotate` then completes.
                let previous = keyfiles::load_previous_master_key(config)?;
                if !previous.is_some_and(|p| p.verify_key_check_value(header)) {
                    return Err(ConfigError(
                        "master key does not match the backup (key-check value differs; a backup from before a master-key rotation restores with the key it was taken under as KEYGATE_MASTER_KEY_PREVIOUS); nothing was written"
                            .into(),
                    ));
                }
            }
            Some(master)
        }
        KeyProviderKind::OpenBao => {
            // The Transit key must be the one the backup's data keys are wrapped by.
            let cfg = crate::kms::openbao_config(config)?;
            let provider = crate::kms::connect(&cfg, false).await?;
            let ok = provider
                .verify_key_check_value(&file.header().key_check_value)
                .await
                .map_err(|e| {
                    ConfigError(format!(
                        "{}; nothing was written",
                        crate::kms::describe(&cfg, &e)
                    ))
                })?;
            if !ok {
                return Err(ConfigError(
                    "the OpenBao Transit key does not match the backup (key-check value differs); nothing was written"
                        .into(),
                ));
            }
            None
        }
    };
    if config.database_url.starts_with("sqlite:") {
        keyfiles::ensure_data_dir(&config.data_dir)?;
    }
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| ConfigError(format!("cannot open database: {e}")))?;
    let restored = store.restore(&file).await;
    let restored = match restored {
        Ok(s) => s,
        Err(e) => {
            store.close().await;
            return Err(ConfigError(format!("restore failed: {e}")));
        }
    };
    // after a master-key rotation the chain key derives from the root kept in keygate_meta
    let keys = match master {
        Some(master) => crate::master_key::resolve(config, &store, master).await,
        None => crate::kms::resolve_openbao(config, &store).await,
    };
    let keys = match keys {
        Ok(k) => k,
        Err(e) => {
            store.close().await;
            return Err(ConfigError(format!("restored, but {e}")));
        }
    };
    let chain_key = keys.root.derive_subkey("audit-chain/v1");
    let audit = store
        .verify_audit_chain(chain_key.as_bytes())
        .await
        .map_err(|e| ConfigError(format!("restored, but the audit check failed: {e}")))?;
    let keys_missing = if keys.transit.is_none() && !keys.rotating {
        // Data keys on another version than the one key supplied: the backup was taken
        // while a rotation was under way, and some keys were already on its new key.
        let current = keys.provider.current_version() as i32;
        let other = store.user_keys_not_on_kek(current, 1).await;
        match other {
            Ok(rows) => rows.first().map(|r| r.kek_version),
            Err(e) => {
                store.close().await;
                return Err(ConfigError(format!(
                    "restored, but the data keys could not be checked: {e}"
                )));
            }
        }
    } else {
        None
    };
    store.close().await;
    if let Some(version) = keys_missing {
        return Err(ConfigError(format!(
            "restored, but data keys are wrapped under master-key version {version}, which was not supplied: the backup was taken during a master-key rotation; start with that rotation's new key as KEYGATE_MASTER_KEY and this one as KEYGATE_MASTER_KEY_PREVIOUS, then run `keygate master-key rotate`"
        )));
    }
    Ok(RestoreReport {
        restored,
        audit,
        rotating: keys.rotating,
    })
}

/// One line for the operator.
pub fn describe(s: &BackupSummary) -> String {
    format!(
        "{} rows in {} tables, schema version {}, sha256 {}",
        s.total_rows,
        s.tables.len(),
        s.schema_version,
        s.sha256
    )
}
