//! `keygate shred --user` as an operator runs it (the effect on a user's secrets is tested
//! in the server's API tests, `tests/api/shred_cli.rs`).

use std::process::Command;

#[test]
fn shred_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .env_clear()
            .env("KEYGATE_DATA_DIR", dir.path())
            .env("KEYGATE_LOG", "warn")
            .args(args)
            .output()
            .expect("keygate runs")
    };
    assert!(run(&["migrate"]).status.success());
    let user = uuid::Uuid::new_v4().to_string();
    let out = run(&["shred", "--user", &user]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("no data keys left"));
    // a malformed id is a usage error, not a shred
    let out = run(&["shred", "--user", "not-a-uuid"]);
    assert_eq!(out.status.code(), Some(2));
    // --user is required
    assert_eq!(run(&["shred"]).status.code(), Some(2));
}
