//! `keygate login-link`: a one-time sign-in URL for the console.

use std::time::Duration;

use chrono::Utc;
use keygate_storage::{DbTime, Store};
use uuid::Uuid;

use crate::config::Config;

/// Longest lifetime a login link may have.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

/// Stores a one-time link for `user` and returns its URL. Only the token's hash is stored.
pub async fn create_login_link(
    config: &Config,
    user: Uuid,
    admin: bool,
    ttl: Duration,
    base_url: Option<&str>,
) -> Result<String, String> {
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err("--ttl must be between 1s and 24h".into());
    }
    let store = Store::connect(&config.database_url)
        .await
        .map_err(|e| format!("cannot open database: {e}"))?;
    // a new database is set up; an older schema is not upgraded under a running server
    store
        .migrate_if_new()
        .await
        .map_err(|e| format!("database migration failed: {e}"))?;
    let token = super::session::random_token();
    let expires = Utc::now() + chrono::Duration::from_std(ttl).map_err(|e| e.to_string())?;
    store
        .create_login_link(
            &super::session::hash(&token),
            user,
            admin,
            DbTime::new(expires),
        )
        .await
        .map_err(|e| format!("cannot store the link: {e}"))?;
    let base = match base_url {
        Some(b) => b.trim_end_matches('/').to_string(),
        None => {
            let tls = crate::tls::TlsFiles::from_config(config)
                .ok()
                .flatten()
                .is_some();
            let mut addr = config.listen;
            if addr.ip().is_unspecified() {
                addr.set_ip(if addr.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                });
            }
            format!("{}://{addr}", if tls { "https" } else { "http" })
        }
    };
    Ok(format!("{base}/ui/auth/{token}"))
}
