//! The one table of settings: every `KEYGATE_*` variable and TOML key with its default and
//! meaning. `keygate config-reference` renders it as `docs/CONFIGURATION.md`.
//!
//! *Invariant (tested):* the table names exactly the TOML keys `Config::load` accepts and
//! exactly the `KEYGATE_*` variables the server and CLI sources read, its defaults agree
//! with `Config::default()`, and the checked-in `docs/CONFIGURATION.md` is its rendering.

/// One setting.
#[derive(Debug, Clone, Copy)]
pub struct Setting {
    /// Environment variable.
    pub env: &'static str,
    /// Key in the TOML file (`--config`), if the file may set it. Secrets may not.
    pub toml: Option<&'static str>,
    /// Default, as the operator would write it.
    pub default: &'static str,
    /// What it does.
    pub meaning: &'static str,
}

const fn s(
    env: &'static str,
    toml: Option<&'static str>,
    default: &'static str,
    meaning: &'static str,
) -> Setting {
    Setting {
        env,
        toml,
        default,
        meaning,
    }
}

/// Every setting, in the order the reference lists them.
pub const SETTINGS: &[Setting] = &[
    s("KEYGATE_LISTEN", Some("listen"), "127.0.0.1:8420",
      "Address to serve on. A non-loopback address needs TLS or `KEYGATE_ALLOW_PLAINTEXT=true`."),
    s("KEYGATE_DATA_DIR", Some("data_dir"), "./keygate-data",
      "Key files (`master.key`, `jwt.secret`) and the default SQLite database. Created with mode 0700."),
    s("KEYGATE_DATABASE_URL", Some("database_url"), "sqlite://<data_dir>/keygate.db",
      "`sqlite:` path or `postgres://` URL. On PostgreSQL the login may be the table owner or a superuser: migrations create the `keygate_app` role that requests run as."),
    s("KEYGATE_MASTER_KEY", None, "unset (use `$CREDENTIALS_DIRECTORY/master.key`, else `<data_dir>/master.key`)",
      "Base64 256-bit master key. Environment only, never read from the TOML file; a key file or systemd credential is the safer choice (README, security notes)."),
    s("KEYGATE_MASTER_KEY_PREVIOUS", None, "unset (use `$CREDENTIALS_DIRECTORY/master.key.previous`, else `<data_dir>/master.key.previous`)",
      "During a master-key rotation: the old base64 master key, while `KEYGATE_MASTER_KEY` / `master.key` holds the new one. Both unwrap until `keygate master-key rotate` has rewrapped every data key; then the old key can be destroyed. Environment only."),
    s("KEYGATE_KEY_PROVIDER", Some("key_provider"), "local",
      "Where the master key (KEK) lives: `local` (the key file, systemd credential or `KEYGATE_MASTER_KEY`) or `openbao` (an OpenBao / HashiCorp Vault Transit key: the KEK never leaves it, and keygate asks it to wrap, unwrap and rewrap data keys). A database stays with the provider it was created with: keygate refuses to start it under the other one."),
    s("KEYGATE_OPENBAO_ADDR", Some("openbao_addr"), "unset",
      "OpenBao / Vault address, e.g. `https://bao.internal:8200` (required with `KEYGATE_KEY_PROVIDER=openbao`). Plain `http://` only on loopback. Unreachable at start: keygate refuses to start; at request time: 503 `key_provider_unavailable`."),
    s("KEYGATE_OPENBAO_TOKEN", None, "unset (use `KEYGATE_OPENBAO_TOKEN_FILE`, else `$CREDENTIALS_DIRECTORY/openbao.token`)",
      "Token for the Transit key (policy: `encrypt`, `decrypt`, `rewrap`, `hmac`, `verify` on the key, `read` on `keys/<key>`; `update` on `keys/<key>/rotate` lets `keygate master-key rotate` rotate it). keygate does not renew it: use a periodic or long-lived token. Environment only."),
    s("KEYGATE_OPENBAO_TOKEN_FILE", Some("openbao_token_file"), "unset",
      "File holding the OpenBao token (mode 0600 or stricter), read at start."),
    s("KEYGATE_OPENBAO_KEY", Some("openbao_key"), "keygate",
      "Transit key name (`type=aes256-gcm96`, `derived=true`). On the first start over an empty database keygate creates it if it is missing and the token may."),
    s("KEYGATE_OPENBAO_MOUNT", Some("openbao_mount"), "transit",
      "Mount path of the Transit secrets engine."),
    s("KEYGATE_JWT_SECRET", None, "unset (use `$CREDENTIALS_DIRECTORY/jwt.secret`, else `<data_dir>/jwt.secret`)",
      "HS256 token secret, at least 32 bytes (shorter: keygate refuses to start). Environment only. Several instances must share it."),
    s("KEYGATE_JWKS_URL", Some("jwks_url"), "unset",
      "Also accept RS256/ES256 tokens signed by these keys (for example Supabase). Must be https, or http to a loopback host (`localhost`, `127.0.0.1`, `::1`): whoever answers a plain-HTTP fetch could sign tokens keygate accepts."),
    s("KEYGATE_JWKS_ALLOW_HTTP", Some("jwks_allow_http"), "false",
      "Accept an `http://` `KEYGATE_JWKS_URL` to any host. Only for a JWKS on a network no one else can reach."),
    s("KEYGATE_JWKS_MAX_AGE_SECS", Some("jwks_max_age_secs"), "300",
      "How long a fetched JWKS key set is used before it is fetched again: a key removed from the JWKS stops being accepted within this. If the refetch fails, the old set is used until it is twice this old; after that, tokens signed with JWKS keys get 503 `jwks_unavailable` until the JWKS answers again. 1 to 86400. A console session opened with a JWKS-signed token is not ended when its key is removed: end such sessions yourself (they last until the token's `exp`, at most 12 h)."),
    s("KEYGATE_JWT_AUDIENCE", Some("jwt_audience"), "unset",
      "Required `aud` claim, if set (`keygate token` puts it in the tokens it mints)."),
    s("KEYGATE_JWT_ISSUER", Some("jwt_issuer"), "unset",
      "Required `iss` claim of every token, if set: pin it to your identity provider's issuer (Supabase: `https://<project>.supabase.co/auth/v1`) so that tokens another issuer signed with the same secret or JWKS are refused. `keygate token` puts it in the tokens it mints."),
    s("KEYGATE_ADMIN_CLAIM", Some("admin_claim"), "keygate_admin",
      "Claim that marks admins (`true`, or a role array containing `admin`)."),
    s("KEYGATE_ALLOWED_UPSTREAMS", Some("allowed_upstreams"), "empty",
      "Comma-separated `host` or `host:port` (TOML: array) that connections may forward to besides their exchange's own hosts. Any other `base_url` is refused with a 422."),
    s("KEYGATE_ALLOWED_PRIVATE_HOSTS", Some("allowed_private_hosts"), "empty",
      "Comma-separated host names or IP addresses (TOML: array) that user-chosen URLs, webhook receivers and OAuth token endpoints, may reach although they are not public addresses (loopback, private, link-local and the like). Any other such URL is refused with a 422 when saved, and a name that resolves only to such addresses is never connected to. List a host exactly as the URLs write it: an address entry allows only URLs that use that address, not a name that resolves to it. An entry with a scheme, port or path stops keygate at start. The operator's own `KEYGATE_WEBHOOK_URLS` are not held to this."),
    s("KEYGATE_REVEAL_ENABLED", Some("reveal_enabled"), "false",
      "Enable `POST /v1/credentials/{id}/reveal` (service role only)."),
    s("KEYGATE_MAX_BODY_BYTES", Some("max_body_bytes"), "1048576",
      "Largest request body, in bytes."),
    s("KEYGATE_VAULT_AUTO_LOCK_MINUTES", Some("vault_auto_lock_minutes"), "15",
      "Default idle time before an unlocked vault locks."),
    s("KEYGATE_REDIS_URL", Some("redis_url"), "unset",
      "`redis://` URL. Gateway request-rate counters then live in Redis, shared by every instance (otherwise: PostgreSQL's `rate_counters`, or in process on SQLite). `keygate doctor` checks that it answers."),
    s("KEYGATE_REFERENCE_PRICES", Some("reference_prices"), "empty",
      "USD reference prices, `BTC=65000,ETH=3000` (TOML: table `[reference_prices]`). Policy values orders whose quote is not a USD stablecoin, market orders without a price, and withdrawals with them; where a price is unknown and a USD cap is set, the call is denied. Balance sync uses them for `usd_value`."),
    s("KEYGATE_TLS_CERT", Some("tls_cert"), "unset",
      "PEM certificate chain (end-entity first). With `KEYGATE_TLS_KEY`, keygate serves HTTPS only. Reloaded on SIGHUP."),
    s("KEYGATE_TLS_KEY", Some("tls_key"), "unset",
      "PEM private key (PKCS#8, PKCS#1 or SEC1) of `KEYGATE_TLS_CERT`. Keep it mode 0600. Reloaded on SIGHUP."),
    s("KEYGATE_TLS_CLIENT_CA", Some("tls_client_ca"), "unset",
      "PEM CA bundle. When set, every caller must present a client certificate signed by it (mTLS), in addition to its token. Reloaded on SIGHUP."),
    s("KEYGATE_ALLOW_PLAINTEXT", Some("allow_plaintext"), "false",
      "Allow plain HTTP on a non-loopback address, for a TLS-terminating proxy in front. keygate then warns at start and in `/readyz`, and the console's session cookie is `Secure` (reach the console through the proxy)."),
    s("KEYGATE_TRUSTED_PROXIES", Some("trusted_proxies"), "empty",
      "Comma-separated IPs or CIDRs (TOML: array) of reverse proxies. Only from these peers is `X-Forwarded-For` believed (its rightmost untrusted address is the client IP); otherwise the peer address is. IP allowlists and audit IPs use it."),
    s("KEYGATE_GEO_COUNTRY_HEADER", Some("geo_country_header"), "unset",
      "The request header in which a trusted proxy names the client's country (e.g. `cf-ipcountry`, `cloudfront-viewer-country`): two letters or digits, recorded as the audit event's `geo_country`. Read only from `KEYGATE_TRUSTED_PROXIES` peers."),
    s("KEYGATE_GEO_CITY_HEADER", Some("geo_city_header"), "unset",
      "Likewise the client's city (`geo_city`, at most 100 printable characters)."),
    s("KEYGATE_SYNC_INTERVAL_MINUTES", Some("sync_interval_minutes"), "60",
      "Background key check and balance sync: connections not verified for this long are checked (a few per job tick); exchange-side key expiry reminders go out as webhooks. `0` disables."),
    s("KEYGATE_REFUSE_WITHDRAWAL_KEYS", Some("refuse_withdrawal_keys"), "false",
      "Suspend a credential whose key check reports withdrawal permission, and refuse every withdrawal call through the gateway (403 `scope_denied`)."),
    s("KEYGATE_ANOMALY_SUSPEND_THRESHOLD", Some("anomaly_suspend_threshold"), "80",
      "Risk score (1-100) at which a credential is suspended at once; `0` or `off` disables suspension (scores are still recorded)."),
    s("KEYGATE_REACTIVATE_FRESH_UNLOCK_MINUTES", Some("reactivate_fresh_unlock_minutes"), "5",
      "Password-mode vaults: reactivating a suspended credential, and any change that widens what a key may do (README, Security notes), needs an unlock at most this old."),
    s("KEYGATE_RECENT_SIGN_IN_MINUTES", Some("recent_sign_in_minutes"), "15",
      "1-1440. Vaults without a password: reactivating a credential, a new connection and any widening change need a sign-in at most this old (the token's `auth_time`, else its newest `amr` timestamp, else `iat`); on every vault, so do setting a vault password and shredding. Service-role callers are not asked."),
    s("KEYGATE_WEBHOOK_URLS", Some("webhook_urls"), "empty",
      "Comma-separated http(s) platform webhook endpoints (TOML: array) that receive every event. Needs `KEYGATE_WEBHOOK_SECRET`."),
    s("KEYGATE_WEBHOOK_SECRET", None, "unset",
      "Signing secret for `KEYGATE_WEBHOOK_URLS` deliveries (`X-Keygate-Signature`). Environment only."),
    s("KEYGATE_WEBHOOK_TIMEOUT_MS", Some("webhook_timeout_ms"), "10000",
      "Timeout of one webhook delivery attempt; at most 60000 (a larger value counts as 60000)."),
    s("KEYGATE_JOBS_ENABLED", Some("jobs_enabled"), "true",
      "Run background jobs (rotation reminders, webhook delivery, token refresh, counter pruning, connection sync) in this instance. Several instances may all run them: each unit of work runs once."),
    s("KEYGATE_JOBS_INTERVAL_MS", Some("jobs_interval_ms"), "30000",
      "Job period."),
    s("KEYGATE_OAUTH_TIMEOUT_MS", Some("oauth_timeout_ms"), "10000",
      "Token-endpoint timeout when refreshing integration tokens."),
    s("KEYGATE_GATEWAY_CACHE_MS", Some("gateway_cache_ms"), "1000",
      "How long a gateway call may reuse the connection, credential and key state an earlier call loaded (saves a read transaction per call). Every write by this instance invalidates it at once; a change made through another instance sharing the database (suspend, revoke, limits) takes effect here after at most this long. `0` reads the database on every call."),
    s("KEYGATE_LOG_FORMAT", Some("log_format"), "text",
      "`text` or `json` (also `--log-format`)."),
    s("KEYGATE_LOG", None, "info",
      "`tracing` filter directive, e.g. `keygate_server=debug,info`."),
    s("KEYGATE_DEV_FAST_KDF", None, "false",
      "Tests only: weak Argon2id parameters so test suites run fast. Never set it in production."),
];

fn cell(s: &str) -> String {
    s.replace('|', "\\|")
}

/// The reference as Markdown (the content of `docs/CONFIGURATION.md`).
pub fn render_markdown() -> String {
    let mut out = String::from(
        "# keygate configuration reference\n\n\
         <!-- Generated by `keygate config-reference` from \
         crates/keygate-server/src/config_reference.rs; do not edit by hand. -->\n\n\
         Settings come from an optional TOML file (`keygate --config <file>`) and are overridden \
         by environment variables. Secrets (`KEYGATE_MASTER_KEY`, `KEYGATE_JWT_SECRET`, \
         `KEYGATE_OPENBAO_TOKEN`) are read from the environment, a key file in the data dir, or a systemd credential \
         (`$CREDENTIALS_DIRECTORY`), never from the TOML file.\n\n\
         | Variable | TOML key | Default | Meaning |\n\
         | --- | --- | --- | --- |\n",
    );
    for s in SETTINGS {
        let toml = s
            .toml
            .map(|k| format!("`{k}`"))
            .unwrap_or_else(|| "—".into());
        let default = if matches!(s.default, "unset" | "empty") || s.default.contains(['`', ' ']) {
            s.default.to_string()
        } else {
            format!("`{}`", s.default)
        };
        out.push_str(&format!(
            "| `{}` | {} | {} | {} |\n",
            s.env,
            toml,
            cell(&default),
            cell(s.meaning)
        ));
    }
    out.push_str(
        "\nSignals: SIGHUP reloads the TLS certificate, key and client CA without dropping \
         open connections; SIGINT and SIGTERM stop accepting and finish in-flight requests.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;
    use crate::config::Config;

    fn lookup(env: &str) -> &'static Setting {
        SETTINGS.iter().find(|s| s.env == env).unwrap()
    }

    #[test]
    fn table_has_exactly_the_toml_keys_the_loader_accepts() {
        let documented: BTreeSet<&str> = SETTINGS.iter().filter_map(|s| s.toml).collect();
        let accepted: BTreeSet<&str> = crate::config::file_keys().iter().copied().collect();
        assert_eq!(documented, accepted);
    }

    fn keygate_vars_in(dir: &Path, found: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                keygate_vars_in(&p, found);
            } else if p.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&p).unwrap();
                for piece in text.split("\"KEYGATE_").skip(1) {
                    let name: String = piece
                        .chars()
                        .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
                        .collect();
                    if !name.is_empty()
                        && piece[name.len()..].starts_with('"')
                        && !name.starts_with("TEST_")
                    {
                        found.insert(format!("KEYGATE_{name}"));
                    }
                }
            }
        }
    }

    #[test]
    fn table_has_exactly_the_variables_the_code_reads() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut read = BTreeSet::new();
        for crate_dir in ["crates/keygate-server/src", "crates/keygate-cli/src"] {
            keygate_vars_in(&root.join(crate_dir), &mut read);
        }
        let documented: BTreeSet<String> = SETTINGS.iter().map(|s| s.env.to_string()).collect();
        assert_eq!(documented, read);
    }

    #[test]
    fn documented_defaults_are_the_real_defaults() {
        let d = Config::default();
        assert_eq!(lookup("KEYGATE_LISTEN").default, d.listen.to_string());
        assert_eq!(
            lookup("KEYGATE_DATA_DIR").default,
            d.data_dir.display().to_string()
        );
        assert_eq!(lookup("KEYGATE_ADMIN_CLAIM").default, d.admin_claim);
        assert_eq!(
            lookup("KEYGATE_MAX_BODY_BYTES").default,
            d.max_body_bytes.to_string()
        );
        assert_eq!(
            lookup("KEYGATE_VAULT_AUTO_LOCK_MINUTES").default,
            d.vault_auto_lock_minutes.to_string()
        );
        assert_eq!(lookup("KEYGATE_LOG_FORMAT").default, d.log_format);
        assert_eq!(
            lookup("KEYGATE_KEY_PROVIDER").default,
            d.key_provider.as_str()
        );
        assert_eq!(lookup("KEYGATE_OPENBAO_KEY").default, d.openbao_key);
        assert_eq!(lookup("KEYGATE_OPENBAO_MOUNT").default, d.openbao_mount);
        for (env, v) in [
            ("KEYGATE_REVEAL_ENABLED", d.reveal_enabled),
            ("KEYGATE_ALLOW_PLAINTEXT", d.allow_plaintext),
            ("KEYGATE_DEV_FAST_KDF", d.dev_fast_kdf),
        ] {
            assert_eq!(lookup(env).default, v.to_string(), "{env}");
        }
        assert!(d.allowed_upstreams.is_empty() && d.trusted_proxies.is_empty());
        for env in [
            "KEYGATE_TLS_CERT",
            "KEYGATE_TLS_KEY",
            "KEYGATE_TLS_CLIENT_CA",
        ] {
            assert_eq!(lookup(env).default, "unset");
        }
        assert!(d.tls_cert.is_none() && d.tls_key.is_none() && d.tls_client_ca.is_none());
    }

    #[test]
    fn checked_in_reference_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONFIGURATION.md");
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            on_disk == render_markdown(),
            "docs/CONFIGURATION.md is out of date; regenerate it with:\n  cargo run -q -p keygate-cli -- config-reference > docs/CONFIGURATION.md"
        );
    }
}
