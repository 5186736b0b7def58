//! Admin views across users (issue 10's admin console): credentials by status (e.g. every
//! suspended key), every user's integrations, and the server's effective non-secret
//! settings. Admins only; every other caller (service role included) gets 404 so the
//! routes cannot be probed. Reads run as the service identity after the admin check
//! (DESIGN.md §7: admin paths use the documented service policy, not a bypass); nothing
//! here writes, and no secret (or whether a user has one beyond a yes/no) is returned.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::auth::Caller;
use crate::config::Config;
use crate::error::{ApiError, ApiResult};
use crate::extract::AppQuery;
use crate::routes::credentials::CredentialView;
use crate::routes::{page, List, Page};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/v1/admin/credentials", get(credentials))
        .route("/v1/admin/integrations", get(integrations))
        .route("/v1/admin/settings", get(settings))
}

fn admin_only(caller: &Caller) -> ApiResult<()> {
    if caller.admin && !caller.service {
        Ok(())
    } else {
        Err(ApiError::not_found("resource"))
    }
}

/// A credential with its owner.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminCredentialView {
    pub user_id: Uuid,
    #[serde(flatten)]
    pub credential: CredentialView,
}

const STATUSES: &[&str] = &[
    "active",
    "rotating",
    "pending",
    "suspended",
    "revoked",
    "expired",
    "shredded",
];

#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AdminCredentialQuery {
    /// 1–200, default 50.
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    /// Only credentials in this status (active, rotating, pending, suspended, revoked,
    /// expired, shredded).
    pub status: Option<String>,
}

/// Admin: every user's credentials (metadata only), optionally by status.
#[utoipa::path(get, path = "/v1/admin/credentials", tag = "admin", params(AdminCredentialQuery), security(("bearer" = [])),
    responses((status = 200, body = List<AdminCredentialView>), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn credentials(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(q): AppQuery<AdminCredentialQuery>,
) -> ApiResult<Json<List<AdminCredentialView>>> {
    admin_only(&caller)?;
    if q.status
        .as_deref()
        .is_some_and(|st| !STATUSES.contains(&st))
    {
        return Err(ApiError::field(
            "status",
            format!("must be one of {}", STATUSES.join(", ")),
        ));
    }
    let p = Page {
        limit: q.limit,
        cursor: q.cursor,
    };
    let limit = p.limit()?;
    let rows = s
        .store
        .list_all_credentials(q.status.as_deref(), p.cursor_uuid()?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id.to_string(),
        |r| AdminCredentialView {
            user_id: r.user_id,
            credential: r.into(),
        },
    )))
}

/// An integration with its owner; never a secret or token.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminIntegrationView {
    pub id: Uuid,
    pub user_id: Uuid,
    pub provider: String,
    pub name: String,
    /// active | needs_reconsent | error
    pub status: String,
    pub last_error: Option<String>,
    pub scopes: Vec<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

/// Admin: every user's integrations (status and scopes; no secrets or tokens).
#[utoipa::path(get, path = "/v1/admin/integrations", tag = "admin", params(Page), security(("bearer" = [])),
    responses((status = 200, body = List<AdminIntegrationView>), (status = 404, body = crate::error::Problem), (status = 422, body = crate::error::Problem)))]
pub async fn integrations(
    State(s): State<AppState>,
    caller: Caller,
    AppQuery(p): AppQuery<Page>,
) -> ApiResult<Json<List<AdminIntegrationView>>> {
    admin_only(&caller)?;
    let limit = p.limit()?;
    let rows = s
        .store
        .list_all_integrations(p.cursor_uuid()?, limit + 1)
        .await?;
    Ok(Json(page(
        rows,
        limit,
        |r| r.id.to_string(),
        |r| AdminIntegrationView {
            id: r.id,
            user_id: r.user_id,
            provider: r.provider,
            name: r.name,
            status: r.status,
            last_error: r.last_error,
            scopes: r.scopes.0,
            created_at: r.created_at.0,
            updated_at: r.updated_at.0,
        },
    )))
}

/// One effective setting.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SettingView {
    /// The environment variable.
    pub name: String,
    /// The effective value; secrets only as `set` / `unset`, URLs without credentials.
    pub value: String,
    pub meaning: String,
}

/// A URL with any password replaced by `***` and its query dropped (database and Redis
/// URLs may carry a password in either place, e.g. `?password=`; a JWKS URL a token).
/// `keygate doctor` prints URLs through it too.
pub fn without_password(u: &str) -> String {
    match url::Url::parse(u) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            if url.query().is_some() {
                url.set_query(Some("***"));
            }
            if url.fragment().is_some() {
                url.set_fragment(Some("***"));
            }
            url.to_string()
        }
        // Not a URL (a bare SQLite path): nothing to hide, but do not echo anything odd
        // (`host=db password=x`, a libpq key-value string, is not a path).
        Err(_)
            if u.starts_with("sqlite:")
                || !u.contains(|c: char| matches!(c, '@' | '?' | '=') || c.is_whitespace()) =>
        {
            u.to_string()
        }
        Err(_) => "(set; not shown)".into(),
    }
}

/// Scheme, host and port only: a webhook URL's path or query may hold a token.
fn origin_only(u: &str) -> String {
    url::Url::parse(u)
        .map(|u| u.origin().ascii_serialization() + "/…")
        .unwrap_or_else(|_| "(invalid)".into())
}

fn set(v: bool) -> String {
    if v { "set" } else { "unset" }.into()
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref()
        .map(T::to_string)
        .unwrap_or_else(|| "unset".into())
}

fn path(v: &Option<std::path::PathBuf>) -> String {
    v.as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "unset".into())
}

/// The effective value of setting `env`, safe to show an admin. `None` for settings that
/// are not part of [`Config`] (read elsewhere, e.g. the log filter).
pub fn setting_value(c: &Config, env: &str) -> Option<String> {
    Some(match env {
        "KEYGATE_LISTEN" => c.listen.to_string(),
        "KEYGATE_DATA_DIR" => c.data_dir.display().to_string(),
        "KEYGATE_DATABASE_URL" => without_password(&c.database_url),
        "KEYGATE_MASTER_KEY" => set(c.master_key.is_some()),
        "KEYGATE_MASTER_KEY_PREVIOUS" => set(c.master_key_previous.is_some()),
        "KEYGATE_JWT_SECRET" => set(c.jwt_secret.is_some()),
        "KEYGATE_JWKS_URL" => c
            .jwks_url
            .as_deref()
            .map(without_password)
            .unwrap_or_else(|| "unset".into()),
        "KEYGATE_JWKS_ALLOW_HTTP" => c.jwks_allow_http.to_string(),
        "KEYGATE_JWKS_MAX_AGE_SECS" => c.jwks_max_age_secs.to_string(),
        "KEYGATE_JWT_AUDIENCE" => opt(&c.jwt_audience),
        "KEYGATE_JWT_ISSUER" => opt(&c.jwt_issuer),
        "KEYGATE_ADMIN_CLAIM" => c.admin_claim.clone(),
        "KEYGATE_ALLOWED_UPSTREAMS" => c.allowed_upstreams.join(", "),
        "KEYGATE_ALLOWED_PRIVATE_HOSTS" => c.allowed_private_hosts.join(", "),
        "KEYGATE_REVEAL_ENABLED" => c.reveal_enabled.to_string(),
        "KEYGATE_MAX_BODY_BYTES" => c.max_body_bytes.to_string(),
        "KEYGATE_VAULT_AUTO_LOCK_MINUTES" => c.vault_auto_lock_minutes.to_string(),
        "KEYGATE_REDIS_URL" => c
            .redis_url
            .as_deref()
            .map(without_password)
            .unwrap_or_else(|| "unset".into()),
        "KEYGATE_REFERENCE_PRICES" => c
            .reference_prices
            .usd
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", "),
        "KEYGATE_TLS_CERT" => path(&c.tls_cert),
        "KEYGATE_TLS_KEY" => path(&c.tls_key),
        "KEYGATE_TLS_CLIENT_CA" => path(&c.tls_client_ca),
        "KEYGATE_ALLOW_PLAINTEXT" => c.allow_plaintext.to_string(),
        "KEYGATE_TRUSTED_PROXIES" => c
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        "KEYGATE_GEO_COUNTRY_HEADER" => opt(&c.geo_country_header),
        "KEYGATE_GEO_CITY_HEADER" => opt(&c.geo_city_header),
        "KEYGATE_SYNC_INTERVAL_MINUTES" => c.sync_interval_minutes.to_string(),
        "KEYGATE_REFUSE_WITHDRAWAL_KEYS" => c.refuse_withdrawal_keys.to_string(),
        "KEYGATE_ANOMALY_SUSPEND_THRESHOLD" => match c.anomaly_suspend_threshold {
            0 => "off".into(),
            n => n.to_string(),
        },
        "KEYGATE_REACTIVATE_FRESH_UNLOCK_MINUTES" => c.reactivate_fresh_unlock_minutes.to_string(),
        "KEYGATE_RECENT_SIGN_IN_MINUTES" => c.recent_sign_in_minutes.to_string(),
        "KEYGATE_WEBHOOK_URLS" => c
            .webhook_urls
            .iter()
            .map(|u| origin_only(u))
            .collect::<Vec<_>>()
            .join(", "),
        "KEYGATE_WEBHOOK_SECRET" => set(c.webhook_secret.is_some()),
        "KEYGATE_WEBHOOK_TIMEOUT_MS" => c.webhook_timeout_ms.to_string(),
        "KEYGATE_JOBS_ENABLED" => c.jobs_enabled.to_string(),
        "KEYGATE_JOBS_INTERVAL_MS" => c.jobs_interval_ms.to_string(),
        "KEYGATE_OAUTH_TIMEOUT_MS" => c.oauth_timeout_ms.to_string(),
        "KEYGATE_GATEWAY_CACHE_MS" => c.gateway_cache_ms.to_string(),
        "KEYGATE_KEY_PROVIDER" => c.key_provider.as_str().to_string(),
        "KEYGATE_OPENBAO_ADDR" => c
            .openbao_addr
            .as_deref()
            .map(without_password)
            .unwrap_or_else(|| "unset".into()),
        "KEYGATE_OPENBAO_TOKEN" => set(c.openbao_token.is_some()),
        "KEYGATE_OPENBAO_TOKEN_FILE" => path(&c.openbao_token_file),
        "KEYGATE_OPENBAO_KEY" => c.openbao_key.clone(),
        "KEYGATE_OPENBAO_MOUNT" => c.openbao_mount.clone(),
        "KEYGATE_LOG_FORMAT" => c.log_format.clone(),
        "KEYGATE_DEV_FAST_KDF" => c.dev_fast_kdf.to_string(),
        _ => return None,
    })
}

/// Admin: the server's effective settings (secrets only as set/unset).
#[utoipa::path(get, path = "/v1/admin/settings", tag = "admin", security(("bearer" = [])),
    responses((status = 200, body = List<SettingView>), (status = 404, body = crate::error::Problem)))]
pub async fn settings(
    State(s): State<AppState>,
    caller: Caller,
) -> ApiResult<Json<List<SettingView>>> {
    admin_only(&caller)?;
    let items = crate::config_reference::SETTINGS
        .iter()
        .map(|st| SettingView {
            name: st.env.to_string(),
            value: setting_value(&s.config, st.env)
                .unwrap_or_else(|| "(process environment; not shown)".into()),
            meaning: st.meaning.to_string(),
        })
        .collect();
    Ok(Json(List {
        items,
        next_cursor: None,
    }))
}

#[cfg(test)]
mod tests {
    use secrecy::SecretString;

    use super::*;

    #[test]
    fn every_config_setting_has_a_value_and_secrets_stay_hidden() {
        let c = Config {
            database_url:
                "postgres://keygate:hunter2-db@db.internal/keygate?sslpassword=hunter2-ssl".into(),
            jwks_url: Some("https://auth.example/jwks?apikey=hunter2-jwks".into()),
            redis_url: Some("redis://:hunter2-redis@cache:6379".into()),
            master_key: Some(SecretString::from("hunter2-master")),
            jwt_secret: Some(SecretString::from("hunter2-jwt")),
            webhook_urls: vec!["https://hooks.example/p/hunter2-token?k=hunter2-q".into()],
            webhook_secret: Some(SecretString::from("hunter2-wh")),
            openbao_token: Some(SecretString::from("hunter2-bao")),
            openbao_addr: Some("https://bao:hunter2-bao-url@bao.internal:8200".into()),
            ..Config::default()
        };
        let mut shown = String::new();
        for st in crate::config_reference::SETTINGS {
            match setting_value(&c, st.env) {
                Some(v) => shown.push_str(&v),
                // Read outside `Config` (the tracing filter).
                None => assert_eq!(st.env, "KEYGATE_LOG"),
            }
            shown.push('\n');
        }
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("postgres://keygate:***@db.internal/keygate?***"));
        assert!(shown.contains("https://hooks.example/…"));
    }
}
