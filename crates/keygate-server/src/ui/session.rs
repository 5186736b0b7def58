//! Console sign-in and sessions: one-time login links, pasted JWTs, the session cookie,
//! and CSRF (a per-session token in every form plus an Origin check on every POST).

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use keygate_storage::{DbTime, UiSessionRecord};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::auth::Caller;
use crate::state::AppState;

/// Cookie name; `__Host-` needs `Secure`, so it is only used behind TLS.
pub const COOKIE_PLAIN: &str = "keygate_ui";
pub const COOKIE_TLS: &str = "__Host-keygate_ui";
/// A session ends after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session ends this long after sign-in, whatever the activity.
pub const ABSOLUTE: Duration = Duration::from_secs(12 * 3600);

/// The signed-in console user.
#[derive(Clone)]
pub struct Session {
    pub id_hash: Vec<u8>,
    pub user_id: Uuid,
    pub admin: bool,
    pub csrf: String,
    /// When the browser's user signed in (a login link used; for a pasted token, its
    /// authentication time), for the changes that need a recent one.
    pub signed_in_at: Option<i64>,
}

impl Session {
    /// The same caller identity the API sees for this user's own JWT, except its sign-in:
    /// the console session is one of its own (a vault unlock here counts here only).
    pub fn caller(&self) -> Caller {
        Caller {
            user_id: Some(self.user_id),
            service: false,
            admin: self.admin,
            session_id: None,
            sign_in: crate::auth::derived_sign_in("console", &self.id_hash),
            authenticated_at: self.signed_in_at,
        }
    }
}

pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut b);
    hex::encode(b)
}

pub fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Whether the browser reached the console over TLS: keygate serves it, a TLS-terminating
/// proxy stands in front (`KEYGATE_ALLOW_PLAINTEXT`, which says so), or the request says
/// it came through one (`X-Forwarded-Proto: https` or `Forwarded: proto=https`, as a proxy
/// on the same host sends, where the loopback address needs no `KEYGATE_ALLOW_PLAINTEXT`).
/// The cookie is then `Secure` with the `__Host-` prefix: never sent over plain HTTP, and
/// not overwritable from plain HTTP or a sibling subdomain. The forwarded headers need no
/// trusted peer: one forged by a client only makes its own cookie stricter, and a request
/// without them looks for the other cookie name (no session).
pub fn https(state: &AppState, headers: &HeaderMap) -> bool {
    state.config.allow_plaintext
        || crate::tls::TlsFiles::from_config(&state.config)
            .ok()
            .flatten()
            .is_some()
        || forwarded_https(headers)
}

/// `X-Forwarded-Proto: https` or `Forwarded: …proto=https` (the first hop's, i.e. the
/// proxy nearest the browser, when there are several).
fn forwarded_https(headers: &HeaderMap) -> bool {
    let first = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(str::trim)
    };
    if first("x-forwarded-proto").is_some_and(|p| p.eq_ignore_ascii_case("https")) {
        return true;
    }
    first("forwarded").is_some_and(|hop| {
        hop.split(';').any(|kv| {
            kv.trim().split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("proto")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("https")
            })
        })
    })
}

fn cookie_name(secure: bool) -> &'static str {
    if secure {
        COOKIE_TLS
    } else {
        COOKIE_PLAIN
    }
}

/// Where the token settings console sessions were last opened under are kept.
const META_TOKEN_SETTINGS: &str = "console_token_settings";

/// A console session opened with a token holds what the token settings made of it then
/// (its user, its admin flag): when `KEYGATE_ADMIN_CLAIM`, `KEYGATE_JWT_AUDIENCE` or
/// `KEYGATE_JWT_ISSUER` changed since the last start, such sessions are ended (a token
/// the new settings refuse, or no longer take for an admin, must not keep its console
/// session). Sessions opened with a sign-in link depend on none of these and stay.
pub async fn end_sessions_of_changed_token_settings(state: &AppState) -> anyhow::Result<()> {
    let c = &state.config;
    let mut d = Sha256::new();
    for part in [
        Some(c.admin_claim.as_str()),
        c.jwt_audience.as_deref(),
        c.jwt_issuer.as_deref(),
    ] {
        // tagged, so that an unset value and an empty one differ
        match part {
            Some(p) => {
                d.update(b"1");
                d.update((p.len() as u64).to_be_bytes());
                d.update(p.as_bytes());
            }
            None => d.update(b"0"),
        }
    }
    let now = hex::encode(d.finalize());
    let before = state.store.meta_get(META_TOKEN_SETTINGS).await?;
    if before.as_deref() != Some(now.as_str()) {
        let n = state.store.end_token_ui_sessions().await?;
        if n > 0 {
            tracing::warn!(
                sessions = n,
                "token settings changed: console sessions opened with a token were ended"
            );
        }
        state.store.meta_set(META_TOKEN_SETTINGS, &now).await?;
    }
    Ok(())
}

/// Creates a session for `user_id` and returns its `Set-Cookie` value. The session ends
/// [`ABSOLUTE`] after sign-in or at `not_after`, whichever is first: a session opened with
/// a pasted JWT ends when the token expires (its identity and admin flag are the token's,
/// and must not outlive it, nor its revocation: `opened_by` is its `Caller::sign_in`;
/// `signed_in_at` its `Caller::authenticated_at`).
#[allow(clippy::too_many_arguments)]
pub async fn start(
    state: &AppState,
    headers: &HeaderMap,
    user_id: Uuid,
    admin: bool,
    not_after: Option<DateTime<Utc>>,
    jwks_kid: Option<String>,
    issued_at: i64,
    opened_by: Option<Uuid>,
    signed_in_at: Option<i64>,
) -> anyhow::Result<HeaderValue> {
    let (mut rec, cookie) = prepare(
        state, headers, user_id, admin, not_after, jwks_kid, issued_at,
    )?;
    rec.opened_by = opened_by;
    rec.signed_in_at = signed_in_at;
    state.store.create_ui_session(&rec).await?;
    Ok(cookie)
}

/// A new session's row and `Set-Cookie` value, not stored yet ([`start`]).
pub fn prepare(
    state: &AppState,
    headers: &HeaderMap,
    user_id: Uuid,
    admin: bool,
    not_after: Option<DateTime<Utc>>,
    jwks_kid: Option<String>,
    issued_at: i64,
) -> anyhow::Result<(UiSessionRecord, HeaderValue)> {
    let id = random_token();
    let now = Utc::now();
    let mut expires_at = now + chrono::Duration::from_std(ABSOLUTE)?;
    if let Some(t) = not_after {
        expires_at = expires_at.min(t);
    }
    anyhow::ensure!(expires_at > now, "the sign-in has already expired");
    let rec = UiSessionRecord {
        id_hash: hash(&id),
        user_id,
        is_admin: admin,
        csrf_token: random_token(),
        created_at: DbTime::new(now),
        last_seen_at: DbTime::new(now),
        expires_at: DbTime::new(expires_at),
        jwks_kid,
        issued_at: Some(issued_at),
        opened_by: None,
        // a sign-in link's use is a sign-in; [`start`] sets a pasted token's own
        signed_in_at: Some(issued_at),
    };
    let tls = https(state, headers);
    let secure = if tls { "; Secure" } else { "" };
    let cookie = HeaderValue::from_str(&format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        cookie_name(tls),
        (expires_at - now).num_seconds().max(1)
    ))?;
    Ok((rec, cookie))
}

/// The `Set-Cookie` value that clears the session cookie.
pub fn clear_cookie(state: &AppState, headers: &HeaderMap) -> HeaderValue {
    let tls = https(state, headers);
    let secure = if tls { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}",
        cookie_name(tls)
    ))
    .expect("static cookie")
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The live session of this request, if any (and records the activity).
pub async fn current(state: &AppState, headers: &HeaderMap) -> Option<Session> {
    let id = cookie_value(headers, cookie_name(https(state, headers)))?;
    if id.len() != 64 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let idle_cutoff = DbTime::new(Utc::now() - chrono::Duration::from_std(IDLE).ok()?);
    match state.store.touch_ui_session(&hash(id), idle_cutoff).await {
        Ok(Some(r)) if !jwks_key_kept(state, &r).await => None,
        Ok(Some(r)) if revoked(state, &r).await => None,
        Ok(Some(r)) => Some(Session {
            id_hash: r.id_hash,
            user_id: r.user_id,
            admin: r.is_admin,
            csrf: r.csrf_token,
            signed_in_at: r.signed_in_at,
        }),
        Ok(None) => None,
        Err(e) => {
            tracing::error!(error = %e, "ui session lookup failed");
            None
        }
    }
}

/// A session opened with something issued before its user signed out everywhere (a token
/// with an older `iat`, a link used before), or with a token revoked by itself, is ended,
/// wherever it was opened: an instance that learned of the revocation late may have let
/// it in.
async fn revoked(state: &AppState, r: &UiSessionRecord) -> bool {
    let revocations = state.auth.revocations();
    // the token it was opened with was revoked by itself
    let token_revoked = r
        .opened_by
        .is_some_and(|s| revocations.sign_in_revoked(Some(r.user_id), s));
    if !token_revoked {
        let Some(cutoff) = revocations.cutoff(r.user_id) else {
            return false;
        };
        if r.issued_at.is_some_and(|i| i >= cutoff) {
            return false;
        }
    }
    if let Err(e) = state.store.delete_ui_session(&r.id_hash).await {
        tracing::error!(error = %e, "ending a ui session whose sign-in was revoked failed");
    }
    true
}

/// A session opened with a token lasts only while the token's key would still be
/// accepted, as the token would: for a JWKS-signed token, while its key is in the set (a
/// key the identity provider removed, rotated out or compromised, ends the session); for
/// an HS256 token, while the token secret is the one it was signed with (changing the
/// secret, the way to revoke minted tokens, ends it). While no usable JWKS is at hand
/// (unreachable past its grace) the session is refused, not ended.
async fn jwks_key_kept(state: &AppState, r: &UiSessionRecord) -> bool {
    let Some(kid) = &r.jwks_kid else {
        return true;
    };
    let kept = if kid.starts_with(crate::auth::HS_SESSION_KEY_PREFIX) {
        Ok(state.auth.is_current_hs_key(kid))
    } else {
        state.auth.jwks_key_in_set(kid).await
    };
    match kept {
        Ok(true) => true,
        Ok(false) => {
            if let Err(e) = state.store.delete_ui_session(&r.id_hash).await {
                tracing::error!(error = %e, "ending a ui session whose signing key is gone failed");
            }
            false
        }
        Err(_) => false,
    }
}

/// True when the request's `Origin` (or, when it is absent or `null`, `Sec-Fetch-Site`)
/// says it comes from this very site. Browsers send `Origin: null` on form posts from a
/// page with `Referrer-Policy: no-referrer`, so `Sec-Fetch-Site` (which a page cannot
/// forge) decides then. Fails closed: no evidence means cross-origin. Where the console
/// is reached over TLS ([`https`]), an `http://` origin on the same host is another
/// origin (a page an attacker on the network served there before HSTS took hold).
pub fn same_origin(state: &AppState, headers: &HeaderMap) -> bool {
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    let site = headers.get("sec-fetch-site").map(|v| v.as_bytes());
    if site.is_some_and(|s| s != b"same-origin") {
        return false;
    }
    match headers
        .get(header::ORIGIN)
        .and_then(|v| v.to_str().ok())
        .filter(|o| *o != "null")
    {
        Some(origin) => {
            let Ok(u) = url::Url::parse(origin) else {
                return false;
            };
            if https(state, headers) && u.scheme() != "https" {
                return false;
            }
            let Some(h) = u.host_str() else { return false };
            let authority = match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_string(),
            };
            host.is_some_and(|host| host.eq_ignore_ascii_case(&authority))
        }
        None => site == Some(b"same-origin"),
    }
}

/// Constant-time comparison of the form's CSRF token with the session's.
pub fn csrf_ok(session: &Session, form_token: Option<&str>) -> bool {
    form_token.is_some_and(|t| {
        t.len() == session.csrf.len() && bool::from(t.as_bytes().ct_eq(session.csrf.as_bytes()))
    })
}
