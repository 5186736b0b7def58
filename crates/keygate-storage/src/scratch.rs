//! Scratch PostgreSQL databases for tests and benchmarks: a fresh database next to the
//! one an admin URL names, and its URL with the admin URL's query options kept.
//! Not part of keygate's API (hidden from the docs); the storage crate's tests, its
//! benches and the server's API tests share it.

use sqlx::{Connection, Executor, PgConnection};
use uuid::Uuid;

/// A database created by [`create`]; [`ScratchDatabase::drop`] removes it.
pub struct ScratchDatabase {
    name: String,
    pub url: String,
    admin: String,
}

/// The prefix of the test suite's databases: `KEYGATE_TEST_DB_PREFIX`, which `scripts/test`
/// sets to one name per run and whose databases it drops when the run ends (tests that
/// fail or panic never get to drop their own), or `keygate_test` outside that script.
pub fn test_prefix() -> String {
    let prefix = std::env::var("KEYGATE_TEST_DB_PREFIX")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "keygate_test".into());
    // it goes into CREATE DATABASE unquoted, with 33 characters after it (63 at most)
    let word = |b: u8| b.is_ascii_lowercase() || b == b'_';
    assert!(
        prefix.len() <= 30
            && prefix.bytes().next().is_some_and(word)
            && prefix.bytes().all(|b| word(b) || b.is_ascii_digit()),
        "KEYGATE_TEST_DB_PREFIX must be at most 30 of [a-z0-9_], not starting with a digit"
    );
    prefix
}

/// The admin URL of the suite's PostgreSQL (`KEYGATE_TEST_DATABASE_URL`), or `None` when
/// it is not set: the test then does not run, which fails it under CI (`CI=true`).
pub fn test_admin_url() -> Option<String> {
    match std::env::var("KEYGATE_TEST_DATABASE_URL") {
        Ok(u) if !u.is_empty() => Some(u),
        _ => {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "KEYGATE_TEST_DATABASE_URL is not set: run the suite through scripts/test"
            );
            eprintln!("PostgreSQL not configured: test not run");
            None
        }
    }
}

/// Creates `{prefix}_{random}` on the server `admin` points at.
pub async fn create(admin: &str, prefix: &str) -> crate::Result<ScratchDatabase> {
    let name = format!("{prefix}_{}", Uuid::new_v4().simple());
    let mut conn = PgConnection::connect(admin).await?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await?;
    let url = with_database(admin, &name);
    Ok(ScratchDatabase {
        name,
        url,
        admin: admin.to_string(),
    })
}

impl ScratchDatabase {
    /// Drops the database, closing any connection still open to it. Best effort.
    pub async fn drop(self) {
        if let Ok(mut conn) = PgConnection::connect(&self.admin).await {
            let _ = conn
                .execute(format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name).as_str())
                .await;
        }
    }
}

/// `url` with its database swapped for `name`, its query options kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, options) = url.split_once('?').unwrap_or((url, ""));
    let server = base.rsplit_once('/').map_or(base, |(s, _)| s);
    let sep = if options.is_empty() { "" } else { "?" };
    format!("{server}/{name}{sep}{options}")
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn the_database_is_swapped_and_the_options_kept() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "x"),
            "postgres://u@h:5432/x"
        );
        assert_eq!(
            with_database(
                "postgres://u@h/postgres?sslmode=disable&options=-c%20a%3Db",
                "x"
            ),
            "postgres://u@h/x?sslmode=disable&options=-c%20a%3Db"
        );
    }
}
