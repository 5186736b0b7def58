//! Configuration: an optional TOML file (`--config`) overlaid by `KEYGATE_*` environment
//! variables. Secrets in the configuration (`KEYGATE_MASTER_KEY`, `KEYGATE_JWT_SECRET`,
//! `KEYGATE_OPENBAO_TOKEN`) are held as `SecretString` and never printed.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use secrecy::SecretString;
use serde::Deserialize;

/// Every setting keygate reads. The operator-facing reference (defaults, meaning) is the
/// table in `config_reference.rs`, tested against this loader.
#[derive(Debug, Clone)]
pub struct Config {
    /// `KEYGATE_LISTEN` / `listen`: address to serve on. Default `127.0.0.1:8420`.
    pub listen: SocketAddr,
    /// `KEYGATE_DATA_DIR` / `data_dir`: key files and the default SQLite database. Default `./keygate-data`.
    pub data_dir: PathBuf,
    /// `KEYGATE_DATABASE_URL` / `database_url`: `sqlite:` path or `postgres://` URL.
    /// Default: `sqlite://<data_dir>/keygate.db`.
    pub database_url: String,
    /// `KEYGATE_MASTER_KEY`: base64 master key instead of `<data_dir>/master.key`.
    pub master_key: Option<SecretString>,
    /// `KEYGATE_MASTER_KEY_PREVIOUS`: the master key being rotated away from (base64), instead
    /// of `<data_dir>/master.key.previous`; only needed during `keygate master-key rotate`.
    pub master_key_previous: Option<SecretString>,
    /// `KEYGATE_KEY_PROVIDER` / `key_provider`: where the master key (KEK) lives: `local`
    /// (key file / `KEYGATE_MASTER_KEY`, default) or `openbao` (OpenBao / Vault Transit).
    pub key_provider: KeyProviderKind,
    /// `KEYGATE_OPENBAO_ADDR` / `openbao_addr`: OpenBao server address (provider `openbao`).
    pub openbao_addr: Option<String>,
    /// `KEYGATE_OPENBAO_TOKEN`: token for the Transit key (environment only).
    pub openbao_token: Option<SecretString>,
    /// `KEYGATE_OPENBAO_TOKEN_FILE` / `openbao_token_file`: file holding the token instead.
    pub openbao_token_file: Option<PathBuf>,
    /// `KEYGATE_OPENBAO_KEY` / `openbao_key`: Transit key name. Default `keygate`.
    pub openbao_key: String,
    /// `KEYGATE_OPENBAO_MOUNT` / `openbao_mount`: Transit mount path. Default `transit`.
    pub openbao_mount: String,
    /// `KEYGATE_JWT_SECRET`: HS256 token secret instead of `<data_dir>/jwt.secret`; at
    /// least [`crate::keyfiles::MIN_JWT_SECRET_BYTES`] bytes.
    pub jwt_secret: Option<SecretString>,
    /// `KEYGATE_JWKS_URL` / `jwks_url`: accept RS256/ES256 tokens signed by these keys
    /// (Supabase). https, or http to a loopback host ([`check_jwks_url`]).
    pub jwks_url: Option<String>,
    /// `KEYGATE_JWKS_ALLOW_HTTP` / `jwks_allow_http`: accept an `http://` JWKS URL to
    /// any host. Default false.
    pub jwks_allow_http: bool,
    /// `KEYGATE_JWKS_MAX_AGE_SECS` / `jwks_max_age_secs`: how long a fetched JWKS key set
    /// is used before it is fetched again (a key removed from the JWKS stops working
    /// within this). Default 300; at least 1.
    pub jwks_max_age_secs: u64,
    /// `KEYGATE_JWT_AUDIENCE` / `jwt_audience`: required `aud` claim, if set.
    pub jwt_audience: Option<String>,
    /// `KEYGATE_JWT_ISSUER` / `jwt_issuer`: required `iss` claim, if set.
    pub jwt_issuer: Option<String>,
    /// `KEYGATE_ADMIN_CLAIM` / `admin_claim`: claim that marks admins (`true`, or a role
    /// array containing `admin`). Default `keygate_admin`.
    pub admin_claim: String,
    /// `KEYGATE_ALLOWED_UPSTREAMS` / `allowed_upstreams`: extra hosts (`host` or
    /// `host:port`) connections may forward to besides their exchange's own.
    pub allowed_upstreams: Vec<String>,
    /// `KEYGATE_ALLOWED_PRIVATE_HOSTS` / `allowed_private_hosts`: hosts (names or IP
    /// addresses) that user-chosen URLs (webhooks, OAuth token endpoints) may reach although
    /// they are not public addresses (`outbound.rs`). The operator's own `webhook_urls`
    /// are not held to this.
    pub allowed_private_hosts: Vec<String>,
    /// `KEYGATE_REVEAL_ENABLED` / `reveal_enabled`: allow the reveal endpoint (service role
    /// only). Default false.
    pub reveal_enabled: bool,
    /// `KEYGATE_MAX_BODY_BYTES` / `max_body_bytes`: largest request body. Default 1 MiB.
    pub max_body_bytes: usize,
    /// `KEYGATE_VAULT_AUTO_LOCK_MINUTES` / `vault_auto_lock_minutes`: default idle time
    /// before an unlocked vault locks. Default 15.
    pub vault_auto_lock_minutes: u32,
    /// `KEYGATE_REDIS_URL` / `redis_url`: shared counters in Redis instead of the database.
    pub redis_url: Option<String>,
    /// `KEYGATE_LOG_FORMAT` / `log_format`: `text` or `json`. Default `text`.
    pub log_format: String,
    /// `KEYGATE_DEV_FAST_KDF` (tests only): weak Argon2id parameters so test suites stay fast.
    pub dev_fast_kdf: bool,
    /// `KEYGATE_REFERENCE_PRICES` (`BTC=65000,ETH=3000`) / `[reference_prices]`: USD prices
    /// policy uses for notional and withdrawal caps when an order's quote is not a USD
    /// stablecoin, or a market order carries no price. Unknown -> denied when a cap is set.
    pub reference_prices: keygate_policy::Prices,
    /// `KEYGATE_SYNC_INTERVAL_MINUTES` / `sync_interval_minutes`: background key check and
    /// balance sync per connection. Default 60; 0 disables.
    pub sync_interval_minutes: u32,
    /// `KEYGATE_REFUSE_WITHDRAWAL_KEYS` / `refuse_withdrawal_keys`: refuse withdrawal calls
    /// and suspend a credential whose key check reports withdrawal permission. Default false.
    pub refuse_withdrawal_keys: bool,
    /// `KEYGATE_TLS_CERT` / `tls_cert`: PEM certificate chain; with `tls_key`, serve HTTPS only.
    pub tls_cert: Option<PathBuf>,
    /// `KEYGATE_TLS_KEY` / `tls_key`: PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// `KEYGATE_TLS_CLIENT_CA` / `tls_client_ca`: PEM CA bundle; callers must present a
    /// client certificate it signed (mTLS), in addition to their token.
    pub tls_client_ca: Option<PathBuf>,
    /// `KEYGATE_ALLOW_PLAINTEXT` / `allow_plaintext`: allow plain HTTP on a non-loopback
    /// address (behind a TLS-terminating proxy). Default false.
    pub allow_plaintext: bool,
    /// `KEYGATE_TRUSTED_PROXIES` / `trusted_proxies`: peers (IPs or CIDRs) whose
    /// `X-Forwarded-For` is believed. Default empty: the peer address is the client IP.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// `KEYGATE_GEO_COUNTRY_HEADER` / `geo_country_header`: the request header in which a
    /// trusted proxy names the client's country (e.g. `cf-ipcountry`), recorded in audit
    /// events. Read only from `trusted_proxies` peers. Default unset.
    pub geo_country_header: Option<String>,
    /// `KEYGATE_GEO_CITY_HEADER` / `geo_city_header`: likewise the client's city.
    pub geo_city_header: Option<String>,
    /// `KEYGATE_ANOMALY_SUSPEND_THRESHOLD` / `anomaly_suspend_threshold`: risk score (1–100)
    /// at which a credential is suspended at once; `0` or `off` disables. Default 80.
    pub anomaly_suspend_threshold: u8,
    /// `KEYGATE_REACTIVATE_FRESH_UNLOCK_MINUTES` / `reactivate_fresh_unlock_minutes`: in
    /// password mode, reactivating a suspended credential needs an unlock at most this
    /// old. Default 5.
    pub reactivate_fresh_unlock_minutes: u32,
    /// `KEYGATE_RECENT_SIGN_IN_MINUTES` / `recent_sign_in_minutes`: on a vault without a
    /// password, a change that widens what a key may do, reactivating a credential, and
    /// (on any vault) setting a vault password or shredding, need a sign-in at most this
    /// old (1–1440). Default 15.
    pub recent_sign_in_minutes: u32,
    /// `KEYGATE_WEBHOOK_URLS` / `webhook_urls`: platform webhook endpoints (comma-separated
    /// http(s) URLs) that receive every event, signed with `KEYGATE_WEBHOOK_SECRET`.
    pub webhook_urls: Vec<String>,
    /// `KEYGATE_WEBHOOK_SECRET`: signing secret for `webhook_urls` (required with them).
    pub webhook_secret: Option<SecretString>,
    /// `KEYGATE_WEBHOOK_TIMEOUT_MS` / `webhook_timeout_ms`: per delivery attempt, at most
    /// 60000. Default 10000.
    pub webhook_timeout_ms: u64,
    /// `KEYGATE_JOBS_ENABLED` / `jobs_enabled`: run background jobs (reminders, webhook
    /// delivery, token refresh, counter pruning) in this instance. Default true.
    pub jobs_enabled: bool,
    /// `KEYGATE_JOBS_INTERVAL_MS` / `jobs_interval_ms`: how often jobs run. Default 30000.
    pub jobs_interval_ms: u64,
    /// `KEYGATE_OAUTH_TIMEOUT_MS` / `oauth_timeout_ms`: token-endpoint request timeout for
    /// integration token refresh. Default 10000.
    pub oauth_timeout_ms: u64,
    /// `KEYGATE_GATEWAY_CACHE_MS` / `gateway_cache_ms`: how long a gateway call may reuse
    /// the connection, credential and key state another call loaded. Any write by this
    /// instance invalidates at once; writes by other instances are seen after at most this
    /// long. `0` reads the database on every call. Default 1000.
    pub gateway_cache_ms: u64,
}

/// Where the master key (KEK) lives (`KEYGATE_KEY_PROVIDER`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyProviderKind {
    /// A key file, systemd credential or `KEYGATE_MASTER_KEY` (the default).
    #[default]
    Local,
    /// OpenBao / HashiCorp Vault Transit: the KEK never leaves the KMS.
    OpenBao,
}

impl KeyProviderKind {
    /// The setting's value, also what `keygate_meta` records for a database.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyProviderKind::Local => "local",
            KeyProviderKind::OpenBao => "openbao",
        }
    }
}

impl std::fmt::Display for KeyProviderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for KeyProviderKind {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.trim().to_ascii_lowercase().as_str() {
            "local" => Ok(KeyProviderKind::Local),
            "openbao" => Ok(KeyProviderKind::OpenBao),
            _ => Err(ConfigError(
                "KEYGATE_KEY_PROVIDER: expected local or openbao".into(),
            )),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    database_url: Option<String>,
    key_provider: Option<String>,
    openbao_addr: Option<String>,
    openbao_token_file: Option<PathBuf>,
    openbao_key: Option<String>,
    openbao_mount: Option<String>,
    jwks_url: Option<String>,
    jwks_allow_http: Option<bool>,
    jwks_max_age_secs: Option<u64>,
    jwt_audience: Option<String>,
    jwt_issuer: Option<String>,
    admin_claim: Option<String>,
    allowed_upstreams: Option<Vec<String>>,
    allowed_private_hosts: Option<Vec<String>>,
    reveal_enabled: Option<bool>,
    max_body_bytes: Option<usize>,
    vault_auto_lock_minutes: Option<u32>,
    redis_url: Option<String>,
    log_format: Option<String>,
    reference_prices: Option<std::collections::BTreeMap<String, rust_decimal::Decimal>>,
    sync_interval_minutes: Option<u32>,
    refuse_withdrawal_keys: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    allow_plaintext: Option<bool>,
    trusted_proxies: Option<Vec<String>>,
    geo_country_header: Option<String>,
    geo_city_header: Option<String>,
    anomaly_suspend_threshold: Option<toml::Value>,
    reactivate_fresh_unlock_minutes: Option<u32>,
    recent_sign_in_minutes: Option<u32>,
    webhook_urls: Option<Vec<String>>,
    webhook_timeout_ms: Option<u64>,
    jobs_enabled: Option<bool>,
    jobs_interval_ms: Option<u64>,
    oauth_timeout_ms: Option<u64>,
    gateway_cache_ms: Option<u64>,
}

/// A configuration problem, reported as one line at startup.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

/// `KEYGATE_ANOMALY_SUSPEND_THRESHOLD`'s default: a withdrawal from a new IP reaches it
/// (`anomaly.rs`).
pub const DEFAULT_ANOMALY_SUSPEND_THRESHOLD: u8 = 80;

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn parse_num<T: std::str::FromStr>(
    name: &str,
    v: Option<String>,
    file: Option<T>,
    default: T,
) -> Result<T, ConfigError> {
    match v {
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("{name}: expected a number"))),
        None => Ok(file.unwrap_or(default)),
    }
}

/// `0`, `off` → 0 (disabled); otherwise 1–100.
fn parse_threshold(v: &str) -> Result<u8, ConfigError> {
    let v = v.trim().to_ascii_lowercase();
    if v == "off" || v == "false" {
        return Ok(0);
    }
    match v.parse::<u8>() {
        Ok(n) if n <= 100 => Ok(n),
        _ => Err(ConfigError(
            "KEYGATE_ANOMALY_SUSPEND_THRESHOLD: expected 0-100 or off".into(),
        )),
    }
}

fn parse_bool(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(ConfigError(format!("{name}: expected true or false"))),
    }
}

impl Default for Config {
    /// The documented defaults (what `load` yields with no file and no environment).
    fn default() -> Self {
        let data_dir = PathBuf::from("./keygate-data");
        Config {
            listen: "127.0.0.1:8420".parse().expect("valid default address"),
            database_url: format!("sqlite://{}", data_dir.join("keygate.db").display()),
            data_dir,
            master_key: None,
            master_key_previous: None,
            key_provider: KeyProviderKind::Local,
            openbao_addr: None,
            openbao_token: None,
            openbao_token_file: None,
            openbao_key: "keygate".into(),
            openbao_mount: "transit".into(),
            jwt_secret: None,
            jwks_url: None,
            jwks_allow_http: false,
            jwks_max_age_secs: 300,
            jwt_audience: None,
            jwt_issuer: None,
            admin_claim: "keygate_admin".into(),
            allowed_upstreams: Vec::new(),
            allowed_private_hosts: Vec::new(),
            reveal_enabled: false,
            max_body_bytes: 1024 * 1024,
            vault_auto_lock_minutes: 15,
            redis_url: None,
            log_format: "text".into(),
            dev_fast_kdf: false,
            reference_prices: keygate_policy::Prices::default(),
            sync_interval_minutes: 60,
            refuse_withdrawal_keys: false,
            tls_cert: None,
            tls_key: None,
            tls_client_ca: None,
            allow_plaintext: false,
            trusted_proxies: Vec::new(),
            geo_country_header: None,
            geo_city_header: None,
            anomaly_suspend_threshold: DEFAULT_ANOMALY_SUSPEND_THRESHOLD,
            reactivate_fresh_unlock_minutes: 5,
            recent_sign_in_minutes: 15,
            webhook_urls: Vec::new(),
            webhook_secret: None,
            webhook_timeout_ms: 10_000,
            jobs_enabled: true,
            jobs_interval_ms: 30_000,
            oauth_timeout_ms: 10_000,
            gateway_cache_ms: 1_000,
        }
    }
}

/// Parses `BTC=65000,ETH=3000`.
fn parse_prices(
    v: &str,
) -> Result<std::collections::BTreeMap<String, rust_decimal::Decimal>, ConfigError> {
    let mut out = std::collections::BTreeMap::new();
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (asset, price) = part.split_once('=').ok_or_else(|| {
            ConfigError(format!(
                "KEYGATE_REFERENCE_PRICES: expected ASSET=PRICE, got {part:?}"
            ))
        })?;
        let price: rust_decimal::Decimal = price
            .trim()
            .parse()
            .map_err(|_| ConfigError(format!("KEYGATE_REFERENCE_PRICES: {asset}: not a number")))?;
        if price <= rust_decimal::Decimal::ZERO {
            return Err(ConfigError(format!(
                "KEYGATE_REFERENCE_PRICES: {asset}: price must be positive"
            )));
        }
        out.insert(asset.trim().to_ascii_uppercase(), price);
    }
    Ok(out)
}

impl Config {
    /// Reads the optional TOML file, then the environment (environment wins).
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let fc: FileConfig = match file {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError(format!("cannot read config file {}: {e}", p.display()))
                })?;
                toml::from_str(&text).map_err(|e| {
                    ConfigError(format!("config file {}: {}", p.display(), e.message()))
                })?
            }
            None => FileConfig::default(),
        };
        let listen_s = env("KEYGATE_LISTEN")
            .or(fc.listen)
            .unwrap_or_else(|| "127.0.0.1:8420".into());
        let listen = listen_s
            .parse()
            .map_err(|_| ConfigError(format!("KEYGATE_LISTEN: not an address: {listen_s}")))?;
        let data_dir = env("KEYGATE_DATA_DIR")
            .map(PathBuf::from)
            .or(fc.data_dir)
            .unwrap_or_else(|| PathBuf::from("./keygate-data"));
        let database_url = env("KEYGATE_DATABASE_URL")
            .or(fc.database_url)
            .unwrap_or_else(|| format!("sqlite://{}", data_dir.join("keygate.db").display()));
        let allowed_upstreams = match env("KEYGATE_ALLOWED_UPSTREAMS") {
            Some(v) => v
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            None => fc.allowed_upstreams.unwrap_or_default(),
        };
        let allowed_private_hosts: Vec<String> = match env("KEYGATE_ALLOWED_PRIVATE_HOSTS") {
            Some(v) => v
                .split(',')
                .map(|s| s.trim().to_ascii_lowercase())
                .filter(|s| !s.is_empty())
                .collect(),
            None => fc
                .allowed_private_hosts
                .unwrap_or_default()
                .into_iter()
                .map(|s| s.trim().to_ascii_lowercase())
                .collect(),
        };
        for h in &allowed_private_hosts {
            crate::outbound::check_allowed_entry(h)
                .map_err(|e| ConfigError(format!("KEYGATE_ALLOWED_PRIVATE_HOSTS: {e}")))?;
        }
        let reveal_enabled = match env("KEYGATE_REVEAL_ENABLED") {
            Some(v) => parse_bool("KEYGATE_REVEAL_ENABLED", &v)?,
            None => fc.reveal_enabled.unwrap_or(false),
        };
        let max_body_bytes = match env("KEYGATE_MAX_BODY_BYTES") {
            Some(v) => v
                .parse()
                .map_err(|_| ConfigError("KEYGATE_MAX_BODY_BYTES: expected a number".into()))?,
            None => fc.max_body_bytes.unwrap_or(1024 * 1024),
        };
        let vault_auto_lock_minutes = match env("KEYGATE_VAULT_AUTO_LOCK_MINUTES") {
            Some(v) => v.parse().map_err(|_| {
                ConfigError("KEYGATE_VAULT_AUTO_LOCK_MINUTES: expected a number".into())
            })?,
            None => fc.vault_auto_lock_minutes.unwrap_or(15),
        };
        let log_format = env("KEYGATE_LOG_FORMAT")
            .or(fc.log_format)
            .unwrap_or_else(|| "text".into());
        if log_format != "text" && log_format != "json" {
            return Err(ConfigError("log format must be text or json".into()));
        }
        let usd = match env("KEYGATE_REFERENCE_PRICES") {
            Some(v) => parse_prices(&v)?,
            None => fc.reference_prices.unwrap_or_default(),
        };
        if let Some(url) = env("KEYGATE_REDIS_URL").or(fc.redis_url.clone()) {
            if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                return Err(ConfigError(
                    "KEYGATE_REDIS_URL: expected a redis:// or rediss:// URL".into(),
                ));
            }
        }
        let jwks_url = env("KEYGATE_JWKS_URL").or(fc.jwks_url);
        let jwks_allow_http = match env("KEYGATE_JWKS_ALLOW_HTTP") {
            Some(v) => parse_bool("KEYGATE_JWKS_ALLOW_HTTP", &v)?,
            None => fc.jwks_allow_http.unwrap_or(false),
        };
        if let Some(u) = &jwks_url {
            check_jwks_url(u, jwks_allow_http)?;
        }
        let allow_plaintext = match env("KEYGATE_ALLOW_PLAINTEXT") {
            Some(v) => parse_bool("KEYGATE_ALLOW_PLAINTEXT", &v)?,
            None => fc.allow_plaintext.unwrap_or(false),
        };
        let trusted_proxies = match env("KEYGATE_TRUSTED_PROXIES") {
            Some(v) => v.split(',').map(str::to_string).collect(),
            None => fc.trusted_proxies.unwrap_or_default(),
        };
        let trusted_proxies = crate::client_ip::parse_trusted_proxies(&trusted_proxies)?;
        let geo_header = |var: &str, file: Option<String>| -> Result<Option<String>, ConfigError> {
            match env(var).or(file).map(|h| h.trim().to_ascii_lowercase()) {
                None => Ok(None),
                Some(h) if h.is_empty() => Ok(None),
                Some(h) => axum::http::HeaderName::from_bytes(h.as_bytes())
                    .map(|_| Some(h))
                    .map_err(|_| ConfigError(format!("{var}: not a header name"))),
            }
        };
        let geo_country_header = geo_header("KEYGATE_GEO_COUNTRY_HEADER", fc.geo_country_header)?;
        let geo_city_header = geo_header("KEYGATE_GEO_CITY_HEADER", fc.geo_city_header)?;
        let anomaly_suspend_threshold = match env("KEYGATE_ANOMALY_SUSPEND_THRESHOLD").or(fc
            .anomaly_suspend_threshold
            .map(|v| match v {
                toml::Value::String(s) => s,
                toml::Value::Boolean(false) => "off".into(),
                other => other.to_string(),
            })) {
            Some(v) => parse_threshold(&v)?,
            None => DEFAULT_ANOMALY_SUSPEND_THRESHOLD,
        };
        let webhook_urls: Vec<String> = match env("KEYGATE_WEBHOOK_URLS") {
            Some(v) => v
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect(),
            None => fc.webhook_urls.unwrap_or_default(),
        };
        for (i, u) in webhook_urls.iter().enumerate() {
            // the entry's position, not the URL: a refused URL may hold a password
            crate::webhooks::check_url(u)
                .map_err(|e| ConfigError(format!("KEYGATE_WEBHOOK_URLS: entry {}: {e}", i + 1)))?;
        }
        let webhook_secret = env("KEYGATE_WEBHOOK_SECRET").map(SecretString::from);
        if !webhook_urls.is_empty() && webhook_secret.is_none() {
            return Err(ConfigError(
                "KEYGATE_WEBHOOK_URLS needs KEYGATE_WEBHOOK_SECRET to sign deliveries".into(),
            ));
        }
        let key_provider: KeyProviderKind = match env("KEYGATE_KEY_PROVIDER").or(fc.key_provider) {
            Some(v) => v.parse()?,
            None => KeyProviderKind::Local,
        };
        let openbao_addr = env("KEYGATE_OPENBAO_ADDR").or(fc.openbao_addr);
        if key_provider == KeyProviderKind::OpenBao && openbao_addr.is_none() {
            return Err(ConfigError(
                "KEYGATE_KEY_PROVIDER=openbao needs KEYGATE_OPENBAO_ADDR (e.g. https://bao.internal:8200)"
                    .into(),
            ));
        }
        let jwt_secret = env("KEYGATE_JWT_SECRET").map(SecretString::from);
        if let Some(secret) = &jwt_secret {
            crate::keyfiles::check_jwt_secret("KEYGATE_JWT_SECRET", secret)?;
        }
        let jobs_enabled = match env("KEYGATE_JOBS_ENABLED") {
            Some(v) => parse_bool("KEYGATE_JOBS_ENABLED", &v)?,
            None => fc.jobs_enabled.unwrap_or(true),
        };
        let recent_sign_in_minutes = parse_num(
            "KEYGATE_RECENT_SIGN_IN_MINUTES",
            env("KEYGATE_RECENT_SIGN_IN_MINUTES"),
            fc.recent_sign_in_minutes,
            15,
        )?;
        if !(1..=1440).contains(&recent_sign_in_minutes) {
            return Err(ConfigError(
                "KEYGATE_RECENT_SIGN_IN_MINUTES: expected 1-1440".into(),
            ));
        }
        Ok(Config {
            anomaly_suspend_threshold,
            reactivate_fresh_unlock_minutes: parse_num(
                "KEYGATE_REACTIVATE_FRESH_UNLOCK_MINUTES",
                env("KEYGATE_REACTIVATE_FRESH_UNLOCK_MINUTES"),
                fc.reactivate_fresh_unlock_minutes,
                5,
            )?,
            recent_sign_in_minutes,
            webhook_urls,
            webhook_secret,
            // below the two minutes a delivery is claimed for: a longer attempt could be
            // claimed again, and sent twice, by another instance
            webhook_timeout_ms: parse_num(
                "KEYGATE_WEBHOOK_TIMEOUT_MS",
                env("KEYGATE_WEBHOOK_TIMEOUT_MS"),
                fc.webhook_timeout_ms,
                10_000,
            )?
            .min(60_000),
            jobs_enabled,
            jobs_interval_ms: parse_num(
                "KEYGATE_JOBS_INTERVAL_MS",
                env("KEYGATE_JOBS_INTERVAL_MS"),
                fc.jobs_interval_ms,
                30_000,
            )?
            .max(50),
            oauth_timeout_ms: parse_num(
                "KEYGATE_OAUTH_TIMEOUT_MS",
                env("KEYGATE_OAUTH_TIMEOUT_MS"),
                fc.oauth_timeout_ms,
                10_000,
            )?,
            gateway_cache_ms: parse_num(
                "KEYGATE_GATEWAY_CACHE_MS",
                env("KEYGATE_GATEWAY_CACHE_MS"),
                fc.gateway_cache_ms,
                1_000,
            )?,
            listen,
            data_dir,
            database_url,
            master_key: env("KEYGATE_MASTER_KEY").map(SecretString::from),
            master_key_previous: env("KEYGATE_MASTER_KEY_PREVIOUS").map(SecretString::from),
            key_provider,
            openbao_addr,
            openbao_token: env("KEYGATE_OPENBAO_TOKEN").map(SecretString::from),
            openbao_token_file: env("KEYGATE_OPENBAO_TOKEN_FILE")
                .map(PathBuf::from)
                .or(fc.openbao_token_file),
            openbao_key: env("KEYGATE_OPENBAO_KEY")
                .or(fc.openbao_key)
                .unwrap_or_else(|| "keygate".into()),
            openbao_mount: env("KEYGATE_OPENBAO_MOUNT")
                .or(fc.openbao_mount)
                .unwrap_or_else(|| "transit".into()),
            jwt_secret,
            jwks_url,
            jwks_allow_http,
            jwks_max_age_secs: parse_num(
                "KEYGATE_JWKS_MAX_AGE_SECS",
                env("KEYGATE_JWKS_MAX_AGE_SECS"),
                fc.jwks_max_age_secs,
                300,
            )?
            .clamp(1, crate::auth::JWKS_MAX_MAX_AGE.as_secs()),
            jwt_audience: env("KEYGATE_JWT_AUDIENCE").or(fc.jwt_audience),
            jwt_issuer: env("KEYGATE_JWT_ISSUER").or(fc.jwt_issuer),
            admin_claim: env("KEYGATE_ADMIN_CLAIM")
                .or(fc.admin_claim)
                .unwrap_or_else(|| "keygate_admin".into()),
            allowed_upstreams,
            allowed_private_hosts,
            reveal_enabled,
            max_body_bytes,
            vault_auto_lock_minutes,
            redis_url: env("KEYGATE_REDIS_URL").or(fc.redis_url),
            log_format,
            dev_fast_kdf: env("KEYGATE_DEV_FAST_KDF")
                .map(|v| parse_bool("KEYGATE_DEV_FAST_KDF", &v))
                .transpose()?
                .unwrap_or(false),
            reference_prices: keygate_policy::Prices {
                usd,
                ..Default::default()
            },
            sync_interval_minutes: match env("KEYGATE_SYNC_INTERVAL_MINUTES") {
                Some(v) => v.parse().map_err(|_| {
                    ConfigError("KEYGATE_SYNC_INTERVAL_MINUTES: expected a number".into())
                })?,
                None => fc.sync_interval_minutes.unwrap_or(60),
            },
            refuse_withdrawal_keys: match env("KEYGATE_REFUSE_WITHDRAWAL_KEYS") {
                Some(v) => parse_bool("KEYGATE_REFUSE_WITHDRAWAL_KEYS", &v)?,
                None => fc.refuse_withdrawal_keys.unwrap_or(false),
            },
            tls_cert: env("KEYGATE_TLS_CERT").map(PathBuf::from).or(fc.tls_cert),
            tls_key: env("KEYGATE_TLS_KEY").map(PathBuf::from).or(fc.tls_key),
            tls_client_ca: env("KEYGATE_TLS_CLIENT_CA")
                .map(PathBuf::from)
                .or(fc.tls_client_ca),
            allow_plaintext,
            trusted_proxies,
            geo_country_header,
            geo_city_header,
        })
    }
}

/// A JWKS URL keygate may fetch signing keys from: https, or http to a loopback host
/// (or anywhere with `KEYGATE_JWKS_ALLOW_HTTP`). Whoever can answer a plain-HTTP fetch
/// in keygate's place can hand it a key, and sign tokens for any user or the service
/// role. The error does not repeat the URL, which may carry an API key.
pub fn check_jwks_url(u: &str, allow_http: bool) -> Result<(), ConfigError> {
    let parsed = url::Url::parse(u)
        .map_err(|e| ConfigError(format!("KEYGATE_JWKS_URL: not a URL ({e})")))?;
    let loopback = match parsed.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    };
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback || allow_http => Ok(()),
        "http" => Err(ConfigError(
            "KEYGATE_JWKS_URL: must be https (anyone who can answer a plain-HTTP fetch could sign tokens keygate accepts); http is accepted to a loopback host, or everywhere with KEYGATE_JWKS_ALLOW_HTTP=true".into(),
        )),
        other => Err(ConfigError(format!(
            "KEYGATE_JWKS_URL: expected an https URL, not {}",
            if other.len() <= 16 { other } else { "this scheme" }
        ))),
    }
}

/// The keys the TOML file accepts (the fields of `FileConfig`), read from serde's own
/// field list so the configuration reference cannot drift from the loader.
#[cfg(test)]
pub(crate) fn file_keys() -> &'static [&'static str] {
    use serde::de::{Deserializer, Visitor};

    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("field list recorded")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<T: std::fmt::Display>(_: T) -> Self {
            Stop
        }
    }
    struct Recorder<'a>(&'a mut &'static [&'static str]);
    impl<'de> Deserializer<'de> for Recorder<'_> {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            *self.0 = fields;
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut fields: &'static [&'static str] = &[];
    let _ = FileConfig::deserialize(Recorder(&mut fields));
    fields
}

#[cfg(test)]
mod tests {
    use super::check_jwks_url;

    #[test]
    fn a_jwks_url_is_https_or_loopback_http() {
        for ok in [
            "https://auth.example/auth/v1/.well-known/jwks.json",
            "http://127.0.0.1:9999/jwks.json",
            "http://127.8.0.1/jwks.json",
            "http://localhost:54321/auth/v1/.well-known/jwks.json",
            "http://[::1]:8080/jwks",
        ] {
            assert!(check_jwks_url(ok, false).is_ok(), "{ok}");
        }
        for (bad, says) in [
            (
                "http://auth.internal/jwks.json?apikey=hunter2",
                "must be https",
            ),
            ("http://10.0.0.5/jwks.json", "must be https"),
            ("http://localhost.evil.example/jwks.json", "must be https"),
            ("http://[::ffff:127.0.0.1]/jwks.json", "must be https"),
            ("ftp://auth.example/jwks.json", "expected an https URL"),
            ("auth.example/jwks.json", "not a URL"),
        ] {
            let e = check_jwks_url(bad, false).unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(!e.contains("hunter2") && !e.contains("auth."), "{e}");
        }
        assert!(check_jwks_url("http://auth.internal/jwks.json", true).is_ok());
        assert!(check_jwks_url("ftp://auth.example/jwks.json", true).is_err());
    }
}
