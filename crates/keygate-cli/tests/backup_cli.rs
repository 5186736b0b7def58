//! `keygate backup` / `keygate restore` as an operator runs them: exit codes, one-line
//! errors, and a wrong key or non-empty target leaving the target alone.

use std::path::Path;
use std::process::{Command, Output};

use secrecy::ExposeSecret;

fn keygate(data_dir: &Path, master_key: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keygate"));
    c.env_clear()
        .env("KEYGATE_DATA_DIR", data_dir)
        .env("KEYGATE_LOG", "warn")
        .args(args);
    if let Some(k) = master_key {
        c.env("KEYGATE_MASTER_KEY", k);
    }
    c.output().expect("keygate runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn backup_and_restore_from_the_command_line() {
    let src = tempfile::tempdir().unwrap();
    let out = keygate(src.path(), None, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key = std::fs::read_to_string(src.path().join("master.key")).unwrap();
    let key = key.trim();
    let file = src.path().join("keygate.kgbak");
    let file_s = file.to_str().unwrap();

    let out = keygate(src.path(), None, &["backup", "--out", file_s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("backup written to"));

    // wrong master key: exit 1, one line, no database created
    let other = tempfile::tempdir().unwrap();
    let wrong = keygate_crypto::MasterKey::generate().to_base64_secret();
    let out = keygate(
        other.path(),
        Some(wrong.expose_secret()),
        &["restore", "--from", file_s],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("master key does not match the backup"),
        "{err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
    assert!(!other.path().join("keygate.db").exists(), "nothing written");

    // the right key restores; the restored database verifies and serves the same key
    let dst = tempfile::tempdir().unwrap();
    let out = keygate(dst.path(), Some(key), &["restore", "--from", file_s]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("audit chain verified"));
    let out = keygate(dst.path(), Some(key), &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // a second restore into the now non-empty target is refused
    let out = keygate(dst.path(), Some(key), &["restore", "--from", file_s]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not empty"),
        "{}",
        text(&out.stderr)
    );

    // a missing file is a clean error too
    let out = keygate(
        dst.path(),
        Some(key),
        &["restore", "--from", "/nonexistent.kgbak"],
    );
    assert_eq!(out.status.code(), Some(1));
}
