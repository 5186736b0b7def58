//! The data directory and the key files in it.
//!
//! On first start keygate creates the data dir (0700), a random 256-bit master key
//! (`master.key`, base64, 0600) and a JWT signing secret (`jwt.secret`, 0600). It refuses
//! to start on an unreadable, corrupt or group/world-readable key file. The master key is
//! only ever generated for an empty database (DESIGN.md §7): the database stores a
//! key-check value, and an instance whose key does not match refuses to start.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use keygate_crypto::MasterKey;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use crate::config::{Config, ConfigError};

pub const MASTER_KEY_FILE: &str = "master.key";
pub const JWT_SECRET_FILE: &str = "jwt.secret";
/// The master key being rotated away from (only during `keygate master-key rotate`).
pub const PREVIOUS_MASTER_KEY_FILE: &str = "master.key.previous";

/// Creates the data dir with mode 0700 if missing.
pub fn ensure_data_dir(dir: &Path) -> Result<(), ConfigError> {
    if !dir.exists() {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| ConfigError(format!("cannot create data dir {}: {e}", dir.display())))?;
    }
    Ok(())
}

/// Fails when `path` is accessible to group or others.
pub fn check_mode(path: &Path) -> Result<(), ConfigError> {
    let meta = fs::metadata(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(ConfigError(format!(
            "{} is readable by group or others (mode {:o}); run: chmod 600 {}",
            path.display(),
            meta.permissions().mode() & 0o777,
            path.display()
        )));
    }
    Ok(())
}

fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, ConfigError> {
    check_mode(path)?;
    let text = fs::read_to_string(path)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    Ok(Zeroizing::new(text.trim().to_string()))
}

/// Writes a new key file all at once: the contents go to a temporary file (0600, a random
/// name of its own) that is synced and then linked in under `path`, which must not exist,
/// and the directory is synced. A crash leaves either no file or the whole one, never an
/// empty or half-written key; and once this returns, a power loss cannot take the file's
/// name away while the database already holds what the key wraps. Two processes writing
/// the same key file at once: one links its file in, the other fails (`path` exists). On a
/// file system without hard links the file is created in place, as before.
fn write_secret_file(path: &Path, contents: &str) -> Result<(), ConfigError> {
    let cannot = |e: std::io::Error| ConfigError(format!("cannot create {}: {e}", path.display()));
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.partial-{}",
        hex::encode(rand::random::<[u8; 8]>())
    ));
    let write = |target: &Path| -> std::io::Result<()> {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(target)?;
        f.write_all(contents.as_bytes())?;
        f.write_all(b"\n")?;
        f.sync_all()
    };
    if let Err(e) = write(&tmp) {
        let _ = fs::remove_file(&tmp);
        return Err(cannot(e));
    }
    let linked = fs::hard_link(&tmp, path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {}
        // no hard links on this file system (EPERM on FAT, EOPNOTSUPP, ENOSYS): write in
        // place, and leave no partial file when that fails too
        Err(e) if matches!(e.raw_os_error(), Some(1 | 38 | 95)) => {
            if let Err(e) = write(path) {
                // ours, half written (not one another process created meanwhile)
                if e.kind() != std::io::ErrorKind::AlreadyExists {
                    let _ = fs::remove_file(path);
                }
                return Err(cannot(e));
            }
        }
        Err(e) => return Err(cannot(e)),
    }
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(cannot)
}

/// `$CREDENTIALS_DIRECTORY/<name>` when systemd passed that credential
/// (`LoadCredential=<name>:<path>`); it takes precedence over the data dir's file.
pub fn credential_path(name: &str) -> Option<PathBuf> {
    let dir = std::env::var_os("CREDENTIALS_DIRECTORY")?;
    let p = Path::new(&dir).join(name);
    p.exists().then_some(p)
}

/// Where the master key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    Env,
    File(PathBuf),
    /// Newly generated into this file (first start on an empty database).
    Generated(PathBuf),
}

/// Loads the master key from `KEYGATE_MASTER_KEY` or the key file. Returns `None` when
/// neither exists (the caller may generate one, but only for an empty database).
pub fn load_master_key(cfg: &Config) -> Result<Option<(MasterKey, KeySource)>, ConfigError> {
    if let Some(b64) = &cfg.master_key {
        let key = MasterKey::from_base64(b64.expose_secret())
            .map_err(|_| ConfigError("KEYGATE_MASTER_KEY is not a base64 256-bit key".into()))?;
        return Ok(Some((key, KeySource::Env)));
    }
    if let Some(p) = credential_path(MASTER_KEY_FILE) {
        // systemd LoadCredential=master.key:/path (a private, read-only ramfs)
        let text = fs::read_to_string(&p)
            .map(Zeroizing::new)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
        let key = MasterKey::from_base64(text.trim())
            .map_err(|_| ConfigError(format!("{} is not a base64 256-bit key", p.display())))?;
        return Ok(Some((key, KeySource::File(p))));
    }
    let path = cfg.data_dir.join(MASTER_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = read_secret_file(&path)?;
    let key = MasterKey::from_base64(&text).map_err(|_| {
        ConfigError(format!(
            "{} is corrupt (not a base64 256-bit key)",
            path.display()
        ))
    })?;
    Ok(Some((key, KeySource::File(path))))
}

/// Loads the previous master key (rotation in progress) from `KEYGATE_MASTER_KEY_PREVIOUS`,
/// the systemd credential or `<data_dir>/master.key.previous`; `None` when none is supplied.
pub fn load_previous_master_key(cfg: &Config) -> Result<Option<MasterKey>, ConfigError> {
    if let Some(b64) = &cfg.master_key_previous {
        let key = MasterKey::from_base64(b64.expose_secret()).map_err(|_| {
            ConfigError("KEYGATE_MASTER_KEY_PREVIOUS is not a base64 256-bit key".into())
        })?;
        return Ok(Some(key));
    }
    let path = match credential_path(PREVIOUS_MASTER_KEY_FILE) {
        Some(p) => p,
        None => {
            let p = cfg.data_dir.join(PREVIOUS_MASTER_KEY_FILE);
            if !p.exists() {
                return Ok(None);
            }
            check_mode(&p)?;
            p
        }
    };
    let text = fs::read_to_string(&path)
        .map(Zeroizing::new)
        .map_err(|e| ConfigError(format!("cannot read {}: {e}", path.display())))?;
    let key = MasterKey::from_base64(text.trim()).map_err(|_| {
        ConfigError(format!(
            "{} is corrupt (not a base64 256-bit key)",
            path.display()
        ))
    })?;
    Ok(Some(key))
}

/// Generates and writes a fresh master key file (0600).
pub fn generate_master_key(cfg: &Config) -> Result<(MasterKey, KeySource), ConfigError> {
    let path = cfg.data_dir.join(MASTER_KEY_FILE);
    let key = MasterKey::generate();
    write_secret_file(&path, key.to_base64_secret().expose_secret())?;
    Ok((key, KeySource::Generated(path)))
}

/// The shortest HS256 token secret keygate accepts, in bytes: RFC 7518 §3.2 asks for a
/// key at least as long as the hash output (256 bits); a shorter one can be brute-forced
/// from any token, and whoever has it mints tokens for every user.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Refuses a token secret shorter than [`MIN_JWT_SECRET_BYTES`] (`what` names its source;
/// the secret itself is never in the message).
pub fn check_jwt_secret(what: &str, secret: &SecretString) -> Result<(), ConfigError> {
    let n = secret.expose_secret().trim().len();
    if n < MIN_JWT_SECRET_BYTES {
        return Err(ConfigError(format!(
            "{what} is too short ({n} bytes; at least {MIN_JWT_SECRET_BYTES} are required); \
             generate one with: openssl rand -base64 48"
        )));
    }
    Ok(())
}

/// The HS256 token secret: `KEYGATE_JWT_SECRET`, else `jwt.secret` (created if missing).
/// Every source must hold at least [`MIN_JWT_SECRET_BYTES`] bytes.
pub fn load_or_create_jwt_secret(cfg: &Config) -> Result<SecretString, ConfigError> {
    if let Some(s) = &cfg.jwt_secret {
        // `Config::load` checked it already; a `Config` built in code is checked here
        check_jwt_secret("KEYGATE_JWT_SECRET", s)?;
        return Ok(s.clone());
    }
    if let Some(p) = credential_path(JWT_SECRET_FILE) {
        // systemd LoadCredential=jwt.secret:/path (a private, read-only ramfs)
        let text = fs::read_to_string(&p)
            .map(Zeroizing::new)
            .map_err(|e| ConfigError(format!("cannot read {}: {e}", p.display())))?;
        if text.trim().len() < 32 {
            return Err(ConfigError(format!(
                "{} is corrupt (too short)",
                p.display()
            )));
        }
        return Ok(SecretString::from(text.trim()));
    }
    let path = cfg.data_dir.join(JWT_SECRET_FILE);
    if path.exists() {
        let text = read_secret_file(&path)?;
        if text.len() < 32 {
            return Err(ConfigError(format!(
                "{} is corrupt (too short)",
                path.display()
            )));
        }
        return Ok(SecretString::from(text.as_str()));
    }
    let mut raw = Zeroizing::new([0u8; 48]);
    rand::thread_rng().fill_bytes(raw.as_mut());
    let text = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.as_ref());
    write_secret_file(&path, &text)?;
    tracing::info!(path = %path.display(), "created token signing secret");
    Ok(SecretString::from(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = |secret: &str| Config {
            data_dir: dir.path().to_path_buf(),
            jwt_secret: Some(SecretString::from(secret)),
            ..Config::default()
        };
        for short in [
            "hunter2",
            &"x".repeat(31),
            &format!("  {}  ", "y".repeat(31)),
        ] {
            let e = load_or_create_jwt_secret(&cfg(short)).expect_err("short secret refused");
            assert!(e.0.contains("KEYGATE_JWT_SECRET is too short"), "{e}");
            assert!(!e.0.contains(short.trim()), "the secret is not echoed: {e}");
        }
        let ok = "z".repeat(32);
        assert_eq!(
            load_or_create_jwt_secret(&cfg(&ok))
                .unwrap()
                .expose_secret(),
            ok
        );
        // nothing was written to the data dir for an environment secret
        assert!(!dir.path().join(JWT_SECRET_FILE).exists());
    }

    /// A key file appears whole (0600, with its newline) or not at all, is never
    /// replaced, and leaves no temporary file behind; a second writer fails cleanly.
    #[test]
    fn a_key_file_is_written_whole_and_never_replaced() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("some.key");
        write_secret_file(&path, "first").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let e = write_secret_file(&path, "second").expect_err("never replaced");
        assert!(e.0.contains("cannot create"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "first\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            names,
            vec!["some.key".to_string()],
            "no temporary file is left"
        );
    }
}
