//! `keygate master-key rotate` as an operator runs it: new key in `master.key`, old key in
//! `KEYGATE_MASTER_KEY_PREVIOUS`; completion, a no-op second run, and the audit chain still
//! verifying with the new key alone. (DEK rewrapping with data: tests/api/master_key.rs.)

use std::process::{Command, Output};

use secrecy::ExposeSecret;

fn keygate(dir: &std::path::Path, previous: Option<&str>, args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_keygate"));
    c.env_clear()
        .env("KEYGATE_DATA_DIR", dir)
        .env("KEYGATE_LOG", "warn")
        .args(args);
    if let Some(p) = previous {
        c.env("KEYGATE_MASTER_KEY_PREVIOUS", p);
    }
    c.output().expect("keygate runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn rotate_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path(), None, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key_file = dir.path().join("master.key");
    let old = std::fs::read_to_string(&key_file).unwrap();
    // nothing to rotate without a new key
    let out = keygate(dir.path(), None, &["master-key", "rotate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("nothing to rotate"));

    std::fs::remove_file(&key_file).unwrap();
    let new = keygate_crypto::MasterKey::generate();
    std::fs::write(
        &key_file,
        format!("{}\n", new.to_base64_secret().expose_secret()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    // the new key alone does not match the database yet
    let out = keygate(dir.path(), None, &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("does not match"),
        "{}",
        text(&out.stderr)
    );

    let out = keygate(dir.path(), Some(old.trim()), &["master-key", "rotate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("rotation complete"),
        "{}",
        text(&out.stdout)
    );
    let out = keygate(dir.path(), Some(old.trim()), &["master-key", "rotate"]);
    assert!(out.status.success());
    assert!(text(&out.stdout).contains("nothing to rotate"));
    // the old key is gone; the chain (rotation events included) verifies with the new one
    let out = keygate(dir.path(), None, &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    let out = keygate(dir.path(), None, &["audit", "export"]);
    assert!(text(&out.stdout).contains("master_key_rotated"));
    // a backup taken after the rotation restores with the new key alone, chain verified
    let file = dir.path().join("after-rotation.kgbak");
    let out = keygate(
        dir.path(),
        None,
        &["backup", "--out", file.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let dst = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .env_clear()
        .env("KEYGATE_DATA_DIR", dst.path())
        .env("KEYGATE_LOG", "warn")
        .env("KEYGATE_MASTER_KEY", new.to_base64_secret().expose_secret())
        .args(["restore", "--from", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("audit chain verified"),
        "{}",
        text(&out.stdout)
    );
    // a wrong previous key is not a way in
    let bogus = keygate_crypto::MasterKey::generate().to_base64_secret();
    let out = keygate(
        dir.path(),
        Some(bogus.expose_secret()),
        &["audit", "verify"],
    );
    assert!(
        out.status.success(),
        "the database is on the current key: previous unused"
    );
}

/// The `key_check` line of `keygate doctor` and whether doctor passed.
fn doctor_key_check(dir: &std::path::Path, previous: Option<&str>) -> (bool, String) {
    let out = keygate(
        dir,
        previous,
        &["doctor", "--time-url", "http://127.0.0.1:1/api/v3/time"],
    );
    let line = text(&out.stdout)
        .lines()
        .find(|l| l.contains(" key_check: "))
        .unwrap_or_else(|| panic!("no key_check line: {}", text(&out.stdout)))
        .to_string();
    (out.status.success(), line)
}

#[test]
fn doctor_during_a_master_key_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path(), None, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key_file = dir.path().join("master.key");
    let old = std::fs::read_to_string(&key_file).unwrap();
    let (ok, line) = doctor_key_check(dir.path(), None);
    assert!(ok && line.starts_with("ok key_check:"), "{line}");

    // the new key is installed, the old one supplied as previous: a rotation in progress
    std::fs::remove_file(&key_file).unwrap();
    let new = keygate_crypto::MasterKey::generate();
    std::fs::write(
        &key_file,
        format!("{}\n", new.to_base64_secret().expose_secret()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (ok, line) = doctor_key_check(dir.path(), Some(old.trim()));
    assert!(ok, "a rotation in progress passes: {line}");
    assert!(
        line.starts_with("warn key_check: rotation in progress")
            && line.contains("keygate master-key rotate"),
        "{line}"
    );
    // neither key matches: fail
    let (ok, line) = doctor_key_check(dir.path(), None);
    assert!(!ok && line.starts_with("fail key_check:"), "{line}");
    let bogus = keygate_crypto::MasterKey::generate().to_base64_secret();
    let (ok, line) = doctor_key_check(dir.path(), Some(bogus.expose_secret()));
    assert!(!ok, "{line}");
    assert!(line.starts_with("fail key_check: neither"), "{line}");

    // after the rotation: ok, with or without the (now unneeded) previous key
    let out = keygate(dir.path(), Some(old.trim()), &["master-key", "rotate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ok, line) = doctor_key_check(dir.path(), Some(old.trim()));
    assert!(ok && line.starts_with("ok key_check:"), "{line}");
    assert!(line.contains("no longer needed"), "{line}");
    let (ok, line) = doctor_key_check(dir.path(), None);
    assert!(ok && line.starts_with("ok key_check:"), "{line}");
}

/// A new key recorded for a rotation that has wrapped nothing yet (here: a database
/// without data keys) can still be replaced, so a mistaken, lost new key does not block
/// every later rotation; the rotation then completes with the replacement. (Once data keys
/// are rewrapped, another new key is refused: tests/api/master_key.rs.)
#[test]
fn an_unused_new_key_can_be_replaced() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path(), None, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let key_file = dir.path().join("master.key");
    let install = |k: &keygate_crypto::MasterKey| {
        std::fs::remove_file(&key_file).unwrap();
        std::fs::write(
            &key_file,
            format!("{}\n", k.to_base64_secret().expose_secret()),
        )
        .unwrap();
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    };
    let old = std::fs::read_to_string(&key_file).unwrap();
    let b = keygate_crypto::MasterKey::generate();
    let c = keygate_crypto::MasterKey::generate();
    // a start with new key B and the old one as previous records B for the rotation
    install(&b);
    let out = keygate(dir.path(), Some(old.trim()), &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // B is lost before it wrapped anything: C takes its place, and the rotation completes
    install(&c);
    let out = keygate(dir.path(), Some(old.trim()), &["master-key", "rotate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("rotation complete"));
    let out = keygate(dir.path(), None, &["audit", "verify"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

/// `keygate doctor` fails where `serve` would refuse to start: a previous master key it
/// cannot read (here: a world-readable file), and a `jwt.secret` too short to use.
#[test]
fn doctor_fails_what_serve_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path(), None, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (ok, line) = doctor_key_check(dir.path(), None);
    assert!(ok && line.starts_with("ok key_check:"), "{line}");

    use std::os::unix::fs::PermissionsExt;
    let prev = dir.path().join("master.key.previous");
    let spare = keygate_crypto::MasterKey::generate();
    std::fs::write(
        &prev,
        format!("{}\n", spare.to_base64_secret().expose_secret()),
    )
    .unwrap();
    std::fs::set_permissions(&prev, std::fs::Permissions::from_mode(0o644)).unwrap();
    let serve_says = keygate(dir.path(), None, &["audit", "verify"]);
    assert_eq!(
        serve_says.status.code(),
        Some(1),
        "the keys load refuses it"
    );
    let (ok, line) = doctor_key_check(dir.path(), None);
    assert!(
        !ok && line.starts_with("fail key_check: previous master key:"),
        "{line}"
    );
    std::fs::remove_file(&prev).unwrap();

    let secret = dir.path().join("jwt.secret");
    if !secret.exists() {
        let out = keygate(dir.path(), None, &["token", "--role", "service_role"]);
        assert!(out.status.success(), "{}", text(&out.stderr));
    }
    std::fs::remove_file(&secret).unwrap();
    std::fs::write(&secret, "too-short\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = keygate(
        dir.path(),
        None,
        &["doctor", "--time-url", "http://127.0.0.1:1/api/v3/time"],
    );
    assert!(!out.status.success());
    let line = text(&out.stdout)
        .lines()
        .find(|l| l.contains(" jwt_secret: "))
        .unwrap_or_default()
        .to_string();
    assert!(
        line.starts_with("fail jwt_secret:") && line.contains("too short"),
        "{line}"
    );
}
