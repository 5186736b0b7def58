//! `keygate doctor`: checks what `serve` needs and what an operator gets wrong, one line
//! per check (`ok|warn|fail <name>: <detail>`). It only reads: it never creates the data
//! dir, a key, a database file, or runs migrations. Exit code 1 when any check fails.
//!
//! `fail` means `serve` would refuse to start or callers would be refused (expired
//! certificate, skewed clock); `warn` means it runs, but weaker or not yet set up.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use keygate_crypto::MasterKey;
use keygate_server::keyfiles::{self, KeySource};
use keygate_server::kms;
use keygate_server::tls::{self, TlsFiles};
use keygate_server::{Config, KeyProviderKind};
use keygate_storage::{Store, META_KEY_CHECK};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub level: Level,
    pub name: &'static str,
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "fail",
        };
        write!(f, "{level} {}: {}", self.name, self.detail)
    }
}

fn check(level: Level, name: &'static str, detail: impl Into<String>) -> Check {
    Check {
        level,
        name,
        detail: detail.into(),
    }
}

const NET_TIMEOUT: Duration = Duration::from_secs(5);

fn mode(path: &Path) -> Option<u32> {
    std::fs::metadata(path)
        .ok()
        .map(|m| m.permissions().mode() & 0o777)
}

fn date(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Runs every check. `config` is `Err` when the configuration did not load.
pub async fn run(
    config: Result<Config, String>,
    config_file: Option<&Path>,
    time_url: &str,
) -> Vec<Check> {
    let mut out = Vec::new();
    let config = match config {
        Ok(c) => c,
        Err(e) => {
            out.push(check(Level::Fail, "config", e));
            return out;
        }
    };
    out.push(config_check(&config, config_file));
    out.push(tls_check(&config));
    out.push(data_dir_check(&config.data_dir));
    let (master_check, master) = match config.key_provider {
        KeyProviderKind::Local => master_key_check(&config),
        KeyProviderKind::OpenBao => (
            check(
                Level::Ok,
                "master_key",
                format!(
                    "not used: KEYGATE_KEY_PROVIDER=openbao (the master key stays in OpenBao at {})",
                    config
                        .openbao_addr
                        .as_deref()
                        .map(redact_url)
                        .unwrap_or_else(|| "?".into())
                ),
            ),
            None,
        ),
    };
    out.push(master_check);
    out.push(jwt_check(&config));
    let db = database_checks(&config, master.as_ref()).await;
    out.extend(db);
    out.push(redis_check(config.redis_url.as_deref()).await);
    out.push(clock_check(time_url).await);
    out
}

fn config_check(cfg: &Config, file: Option<&Path>) -> Check {
    let source = match file {
        Some(p) => {
            if mode(p).is_some_and(|m| m & 0o022 != 0) {
                return check(
                    Level::Warn,
                    "config",
                    format!(
                        "{} is writable by group or others (mode {:o}); chmod 640",
                        p.display(),
                        mode(p).unwrap_or(0)
                    ),
                );
            }
            format!("loaded from {} and the environment", p.display())
        }
        None => "defaults and the environment".to_string(),
    };
    check(
        Level::Ok,
        "config",
        format!("{source}; listen {}", cfg.listen),
    )
}

fn tls_check(cfg: &Config) -> Check {
    let files = match TlsFiles::from_config(cfg) {
        Ok(f) => f,
        Err(e) => return check(Level::Fail, "tls", e.to_string()),
    };
    let Some(files) = files else {
        return match tls::plaintext_policy(cfg) {
            Ok(()) if cfg.listen.ip().is_loopback() => check(
                Level::Ok,
                "tls",
                format!("off; plain HTTP on loopback {}", cfg.listen),
            ),
            Ok(()) => check(
                Level::Warn,
                "tls",
                format!(
                    "off; plain HTTP on {} (KEYGATE_ALLOW_PLAINTEXT=true): safe only behind a TLS-terminating proxy",
                    cfg.listen
                ),
            ),
            Err(e) => check(Level::Fail, "tls", format!("serve would refuse: {e}")),
        };
    };
    let summary = match tls::server_config(&files) {
        Ok((_, s)) => s,
        Err(e) => return check(Level::Fail, "tls", e.to_string()),
    };
    let until = date(summary.not_after);
    let mtls = if summary.client_auth {
        "; client certificates required"
    } else {
        ""
    };
    let key_mode = mode(&files.key).unwrap_or(0);
    match summary.not_after.duration_since(SystemTime::now()) {
        Err(_) => check(
            Level::Fail,
            "tls",
            format!("certificate {} expired at {until}", files.cert.display()),
        ),
        Ok(left) if left < Duration::from_secs(30 * 86400) => check(
            Level::Warn,
            "tls",
            format!(
                "certificate expires at {until} (in {} days); renew it and send SIGHUP",
                left.as_secs() / 86400
            ),
        ),
        Ok(_) if key_mode & 0o077 != 0 => check(
            Level::Warn,
            "tls",
            format!(
                "{} is readable by group or others (mode {key_mode:o}); chmod 600",
                files.key.display()
            ),
        ),
        Ok(left) => check(
            Level::Ok,
            "tls",
            format!(
                "certificate valid until {until} ({} days), key matches{mtls}",
                left.as_secs() / 86400
            ),
        ),
    }
}

fn data_dir_check(dir: &Path) -> Check {
    match std::fs::metadata(dir) {
        Err(_) => check(
            Level::Warn,
            "data_dir",
            format!(
                "{} does not exist yet; `keygate serve` creates it (mode 0700)",
                dir.display()
            ),
        ),
        Ok(m) if !m.is_dir() => check(
            Level::Fail,
            "data_dir",
            format!("{} is not a directory", dir.display()),
        ),
        Ok(m) if m.permissions().mode() & 0o077 != 0 => check(
            Level::Warn,
            "data_dir",
            format!(
                "{} is accessible by group or others (mode {:o}); chmod 700",
                dir.display(),
                m.permissions().mode() & 0o777
            ),
        ),
        Ok(_) => check(
            Level::Ok,
            "data_dir",
            format!("{} (mode 0700)", dir.display()),
        ),
    }
}

fn master_key_check(cfg: &Config) -> (Check, Option<MasterKey>) {
    match keyfiles::load_master_key(cfg) {
        Err(e) => (check(Level::Fail, "master_key", e.to_string()), None),
        Ok(None) => (
            // Whether that is fine depends on the database: see key_check.
            check(
                Level::Warn,
                "master_key",
                format!(
                    "none found ({} missing, no systemd credential, KEYGATE_MASTER_KEY unset); one is generated only for an empty database",
                    cfg.data_dir.join(keyfiles::MASTER_KEY_FILE).display()
                ),
            ),
            None,
        ),
        Ok(Some((key, KeySource::Env))) => (
            check(
                Level::Warn,
                "master_key",
                "from KEYGATE_MASTER_KEY: an environment variable leaks more easily than a 0600 file or a systemd credential",
            ),
            Some(key),
        ),
        Ok(Some((key, KeySource::File(p) | KeySource::Generated(p)))) => (
            check(Level::Ok, "master_key", format!("{} (mode 0600 or stricter)", p.display())),
            Some(key),
        ),
    }
}

fn jwt_check(cfg: &Config) -> Check {
    if cfg.jwt_secret.is_some() {
        return check(Level::Ok, "jwt_secret", "from KEYGATE_JWT_SECRET");
    }
    if let Some(p) = keyfiles::credential_path(keyfiles::JWT_SECRET_FILE) {
        return check(
            Level::Ok,
            "jwt_secret",
            format!("systemd credential {}", p.display()),
        );
    }
    let p = cfg.data_dir.join(keyfiles::JWT_SECRET_FILE);
    if !p.exists() {
        return check(
            Level::Warn,
            "jwt_secret",
            format!(
                "{} does not exist yet; `keygate serve` creates it",
                p.display()
            ),
        );
    }
    // the same read serve does (mode, then length): the file exists, so nothing is created
    match keyfiles::load_or_create_jwt_secret(cfg) {
        Ok(_) => check(Level::Ok, "jwt_secret", format!("{}", p.display())),
        Err(e) => check(Level::Fail, "jwt_secret", e.to_string()),
    }
}

/// A URL fit for printing: the password masked and the query hidden (a database or
/// Redis URL may carry its password as `?password=`, a libpq URL as `?sslpassword=`), the
/// same rule as the admin settings page.
fn redact_url(url: &str) -> String {
    keygate_server::routes::admin::without_password(url)
}

/// The file of a `sqlite:` URL, when it names one.
fn sqlite_file(url: &str) -> Option<PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or(rest);
    (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
}

async fn database_checks(cfg: &Config, master: Option<&MasterKey>) -> Vec<Check> {
    let shown = redact_url(&cfg.database_url);
    if let Some(file) = sqlite_file(&cfg.database_url) {
        if !file.exists() {
            return vec![
                check(
                    Level::Warn,
                    "database",
                    format!(
                        "{} does not exist yet; `keygate serve` creates it",
                        file.display()
                    ),
                ),
                check(Level::Warn, "migrations", "no database yet"),
                match cfg.key_provider {
                    KeyProviderKind::Local => key_check_without_db(master),
                    KeyProviderKind::OpenBao => check(
                        Level::Warn,
                        "key_check",
                        "new database: `keygate serve` creates its root key in OpenBao on first start",
                    ),
                },
            ];
        }
    }
    let store = match tokio::time::timeout(NET_TIMEOUT, Store::connect(&cfg.database_url)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return vec![check(Level::Fail, "database", format!("{shown}: {e}"))],
        Err(_) => {
            return vec![check(
                Level::Fail,
                "database",
                format!("{shown}: no answer within {}s", NET_TIMEOUT.as_secs()),
            )]
        }
    };
    let mut out = Vec::new();
    let binary = store.binary_schema_version();
    let applied = match store.applied_schema_version().await {
        Ok(v) => v,
        Err(e) => {
            out.push(check(Level::Fail, "database", format!("{shown}: {e}")));
            return out;
        }
    };
    out.push(check(Level::Ok, "database", format!("{shown} reachable")));
    out.push(if applied == binary {
        check(
            Level::Ok,
            "migrations",
            format!("schema version {applied} (current)"),
        )
    } else if applied == 0 {
        check(
            Level::Warn,
            "migrations",
            format!("empty database; `keygate migrate` or `serve` creates schema {binary}"),
        )
    } else if applied < binary {
        check(
            Level::Warn,
            "migrations",
            format!("schema {applied}, this binary has {binary}; `keygate migrate` applies the pending migrations"),
        )
    } else {
        check(
            Level::Fail,
            "migrations",
            format!("database schema {applied} is newer than this binary's {binary}; run a newer keygate"),
        )
    });
    out.push(key_check(cfg, &store, applied, master).await);
    store.close().await;
    out
}

/// Whether the configured key opens this database: the local master key against the
/// stored key-check value (a rotation in progress, where the previous key still matches,
/// is a warning), or OpenBao Transit against the stored root.
async fn key_check(cfg: &Config, store: &Store, applied: i64, master: Option<&MasterKey>) -> Check {
    if applied > 0 {
        match kms::recorded_provider(store).await {
            Ok(Some(k)) if k != cfg.key_provider.as_str() => {
                return check(
                    Level::Fail,
                    "key_check",
                    format!(
                        "this database was created with the {k} key provider but KEYGATE_KEY_PROVIDER={}; serve would refuse to start",
                        cfg.key_provider
                    ),
                )
            }
            Ok(_) => {}
            Err(e) => return check(Level::Fail, "key_check", e.to_string()),
        }
    }
    if cfg.key_provider == KeyProviderKind::OpenBao {
        if applied == 0 {
            return check(
                Level::Warn,
                "key_check",
                "new database: `keygate serve` creates its root key in OpenBao on first start",
            );
        }
        return match tokio::time::timeout(NET_TIMEOUT * 3, kms::verify_openbao(cfg, store)).await {
            Ok(Ok((false, detail))) => check(Level::Ok, "key_check", detail),
            Ok(Ok((true, detail))) => check(Level::Warn, "key_check", detail),
            Ok(Err(e)) => check(Level::Fail, "key_check", e),
            Err(_) => check(Level::Fail, "key_check", "OpenBao did not answer in time"),
        };
    }
    let stored = if applied > 0 {
        store.meta_get(META_KEY_CHECK).await.ok().flatten()
    } else {
        None
    };
    let empty = applied == 0 || store.is_empty().await.unwrap_or(false);
    let previous = || keyfiles::load_previous_master_key(cfg);
    match (stored, master) {
        (Some(kcv), Some(key)) if key.verify_key_check_value(&kcv) => check(
            Level::Ok,
            "key_check",
            match previous() {
                Ok(Some(_)) => "the master key matches the database's key-check value; the previous master key is still supplied but no longer needed by the database (keep it while you keep backups from before the rotation)",
                Ok(None) => "the master key matches the database's key-check value",
                // serve reads the previous key whenever one is supplied, and refuses to
                // start on one it cannot read
                Err(e) => return check(Level::Fail, "key_check", format!("previous master key: {e}; serve would refuse to start")),
            },
        ),
        (Some(kcv), Some(key)) => match previous() {
            Ok(Some(prev)) if prev.verify_key_check_value(&kcv) => {
                // the rotation's new key, once recorded, is the only one serve accepts
                // after data keys were rewrapped under it
                let base: u32 = store
                    .meta_get(keygate_server::master_key::META_KEK_VERSION)
                    .await
                    .ok()
                    .flatten()
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(1);
                let recorded = store
                    .meta_get(&keygate_server::master_key::meta_key_check_next(base + 1))
                    .await
                    .ok()
                    .flatten();
                match recorded {
                    Some(next) if !key.verify_key_check_value(&next) => check(
                        Level::Warn,
                        "key_check",
                        "rotation in progress to another new key than this one: serve refuses this key once data keys are rewrapped under the other; supply the new key the rotation started with",
                    ),
                    _ => check(
                        Level::Warn,
                        "key_check",
                        "rotation in progress: the master key is new and the previous one still matches the database; run `keygate master-key rotate` to finish",
                    ),
                }
            }
            Ok(Some(_)) => check(
                Level::Fail,
                "key_check",
                "neither the master key nor the previous master key matches this database's key-check value; serve would refuse to start",
            ),
            Ok(None) => check(
                Level::Fail,
                "key_check",
                "the master key does NOT match this database's key-check value; serve would refuse to start",
            ),
            Err(e) => check(Level::Fail, "key_check", format!("previous master key: {e}")),
        },
        (Some(_), None) => check(
            Level::Fail,
            "key_check",
            "the database holds keys but no master key was found; supply the one it was created with",
        ),
        (None, _) if !empty => check(
            Level::Fail,
            "key_check",
            "the database holds data but no key-check value; it was not created by this keygate",
        ),
        (None, m) => key_check_without_db(m),
    }
}

fn key_check_without_db(master: Option<&MasterKey>) -> Check {
    match master {
        Some(_) => check(
            Level::Ok,
            "key_check",
            "no key-check value stored yet; recorded from this master key on first start",
        ),
        None => check(
            Level::Warn,
            "key_check",
            "new database and no master key: `keygate serve` generates one; back it up",
        ),
    }
}

/// Redis answers `PING` (after `AUTH` when the URL has credentials). `rediss://` is only
/// checked for TCP reachability.
async fn redis_check(url: Option<&str>) -> Check {
    let Some(url) = url else {
        return check(
            Level::Ok,
            "redis",
            "not configured (shared counters in the database)",
        );
    };
    let shown = redact_url(url);
    let u = match url::Url::parse(url) {
        Ok(u) if u.scheme() == "redis" || u.scheme() == "rediss" => u,
        _ => {
            return check(
                Level::Fail,
                "redis",
                format!("{shown} is not a redis:// URL"),
            )
        }
    };
    let host = u.host_str().unwrap_or("127.0.0.1").to_string();
    let port = u.port().unwrap_or(6379);
    let probe = async {
        let mut s = tokio::net::TcpStream::connect((host.as_str(), port)).await?;
        if u.scheme() == "rediss" {
            return Ok::<_, std::io::Error>("TCP reachable (TLS not verified by doctor)".into());
        }
        let mut cmd = Vec::new();
        if let Some(pw) = u.password() {
            let pw = percent_decode(pw);
            if u.username().is_empty() {
                cmd.extend(resp(&["AUTH", &pw]));
            } else {
                cmd.extend(resp(&["AUTH", &percent_decode(u.username()), &pw]));
            }
        }
        cmd.extend(resp(&["PING"]));
        s.write_all(&cmd).await?;
        let mut buf = vec![0u8; 512];
        let mut got = Vec::new();
        while !String::from_utf8_lossy(&got).contains("PONG") {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
            if got.starts_with(b"-") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&got).trim().to_string();
        if text.contains("+PONG") {
            Ok("answers PING".to_string())
        } else {
            Err(std::io::Error::other(format!(
                "unexpected answer: {}",
                text.lines().next().unwrap_or("")
            )))
        }
    };
    match tokio::time::timeout(NET_TIMEOUT, probe).await {
        Ok(Ok(d)) => check(Level::Ok, "redis", format!("{shown} {d}")),
        Ok(Err(e)) => check(Level::Fail, "redis", format!("{shown}: {e}")),
        Err(_) => check(Level::Fail, "redis", format!("{shown}: no answer")),
    }
}

fn resp(args: &[&str]) -> Vec<u8> {
    let mut v = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        v.extend(format!("${}\r\n{a}\r\n", a.len()).into_bytes());
    }
    v
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// Local clock against an exchange's server time. Binance refuses a request stamped more
/// than 1 s ahead of its clock or older than the receive window (5 s by default).
async fn clock_check(time_url: &str) -> Check {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(3))
        .build()
    {
        Ok(c) => c,
        Err(e) => return check(Level::Warn, "clock", format!("could not check: {e}")),
    };
    let t0 = SystemTime::now();
    let resp = client.get(time_url).send().await;
    let t1 = SystemTime::now();
    let server_ms = match resp {
        Ok(r) if r.status().is_success() => r
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["serverTime"].as_i64()),
        _ => None,
    };
    let Some(server_ms) = server_ms else {
        return check(
            Level::Warn,
            "clock",
            format!("could not check (no server time from {time_url}; offline?)"),
        );
    };
    let ms = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    };
    let (a, b) = (ms(t0), ms(t1));
    let local = (a + b) / 2;
    let skew = local - server_ms;
    let rtt = b - a;
    let detail = format!("local clock {skew:+} ms against {time_url} (round trip {rtt} ms)");
    if !(-5000..=1000).contains(&skew) {
        check(
            Level::Fail,
            "clock",
            format!("{detail}: exchanges will reject signed requests; sync the clock (NTP)"),
        )
    } else if skew.abs() > 500 {
        check(
            Level::Warn,
            "clock",
            format!("{detail}: close to exchange limits"),
        )
    } else {
        check(Level::Ok, "clock", detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_printed_without_passwords() {
        assert_eq!(
            redact_url("postgres://kg:hunter2@db:5432/keygate"),
            "postgres://kg:***@db:5432/keygate"
        );
        assert_eq!(redact_url("sqlite://./x.db"), "sqlite://./x.db");
        // a password in the query (libpq, Redis) is not printed either
        for (url, secret) in [
            ("postgres://kg@db/keygate?password=hunter2-q", "hunter2-q"),
            (
                "postgres://kg@db/keygate?sslpassword=hunter2-ssl&sslmode=require",
                "hunter2-ssl",
            ),
            (
                "redis://cache:6379/0?password=hunter2-redis",
                "hunter2-redis",
            ),
            ("redis://:hunter2-user@cache:6379", "hunter2-user"),
            ("https://bao:hunter2-bao@bao.internal:8200", "hunter2-bao"),
            ("host=db user=kg password=hunter2-kv", "hunter2-kv"),
        ] {
            let shown = redact_url(url);
            assert!(!shown.contains(secret), "{url} printed as {shown}");
        }
        assert_eq!(
            redact_url("postgres://kg@db:5432/keygate?password=x"),
            "postgres://kg@db:5432/keygate?***"
        );
        assert_eq!(
            sqlite_file("sqlite:///var/lib/kg/keygate.db?mode=rwc"),
            Some(PathBuf::from("/var/lib/kg/keygate.db"))
        );
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("postgres://x"), None);
    }

    /// `doctor` with the OpenBao provider names its address, without the credentials an
    /// operator may have put into it.
    #[tokio::test]
    async fn doctor_does_not_print_the_openbao_addr_password() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = Config {
            data_dir: dir.path().join("data"),
            database_url: format!("sqlite://{}", dir.path().join("none.db").display()),
            key_provider: KeyProviderKind::OpenBao,
            openbao_addr: Some("https://kg:hunter2-bao@bao.internal:8200".into()),
            ..Config::default()
        };
        let checks = run(Ok(cfg), None, "http://127.0.0.1:9/").await;
        let printed = format!("{checks:?}");
        assert!(printed.contains("bao.internal"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
    }

    #[test]
    fn resp_encoding() {
        assert_eq!(resp(&["PING"]), b"*1\r\n$4\r\nPING\r\n");
        assert_eq!(percent_decode("p%40ss"), "p@ss");
    }
}
