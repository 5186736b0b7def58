//! Only `serve` and `migrate` upgrade a database's schema. The other commands set up a new
//! database, but refuse one at an older schema: run with a newly installed binary before
//! the server restarts, they would otherwise migrate the database under the older server.

use std::process::{Command, Output};

/// The migration before the newest one.
const OLDER: i64 = 20261127000100;

fn keygate(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_keygate"))
        .env_clear()
        .env("KEYGATE_DATA_DIR", dir)
        .env("KEYGATE_LOG", "warn")
        .args(args)
        .output()
        .expect("keygate runs")
}

async fn applied(url: &str) -> i64 {
    let store = keygate_storage::Store::connect(url).await.unwrap();
    let v = store.applied_schema_version().await.unwrap();
    store.close().await;
    v
}

#[tokio::test]
async fn a_tool_does_not_upgrade_an_older_schema() {
    let dir = tempfile::tempdir().unwrap();
    // a database the previous release set up
    let url = format!("sqlite://{}", dir.path().join("keygate.db").display());
    let store = keygate_storage::Store::connect(&url).await.unwrap();
    assert!(store.binary_schema_version() > OLDER && store.knows_migration(OLDER));
    store.migrate_to(OLDER).await.unwrap();
    store.close().await;
    assert_eq!(applied(&url).await, OLDER);

    for args in [
        &["audit", "verify"][..],
        &["audit", "export"],
        &["token", "--role", "service_role"],
        &[
            "login-link",
            "--user",
            "00000000-0000-0000-0000-000000000001",
        ],
        &["shred", "--user", "00000000-0000-0000-0000-000000000001"],
        &["master-key", "rotate"],
    ] {
        let out = keygate(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(out.stdout.is_empty(), "{args:?} printed something");
        assert!(
            stderr.contains("older than this binary") && stderr.contains("keygate migrate"),
            "{args:?}: {stderr}"
        );
        assert_eq!(applied(&url).await, OLDER, "{args:?} changed the schema");
    }
    // the operator's upgrade step; then the tools work
    let out = keygate(dir.path(), &["migrate"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(applied(&url).await > OLDER);
    let out = keygate(dir.path(), &["audit", "verify"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The tools that work on existing data refuse an empty database, before any key is
/// created: a mistyped data dir or database URL is not reported as an intact, empty audit
/// log (or a shred of nothing).
#[test]
fn a_tool_on_existing_data_refuses_an_empty_database() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["audit", "verify"][..],
        &["audit", "export"],
        &["shred", "--user", "00000000-0000-0000-0000-000000000001"],
        &["master-key", "rotate"],
    ] {
        let out = keygate(dir.path(), args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(
            stderr.contains("no keygate database at"),
            "{args:?}: {stderr}"
        );
        assert!(
            !dir.path().join("master.key").exists(),
            "{args:?} created a master key"
        );
    }
}
