//! Bearer-token authentication: HS256 with the server's secret, or RS256/ES256 from a JWKS
//! URL, so Supabase access tokens work unchanged (`sub` = user id, `role` =
//! `authenticated` | `service_role`, admins marked by a configurable claim).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use jsonwebtoken::{
    decode, decode_header, encode, Algorithm, DecodingKey, EncodingKey, Header, Validation,
};
use parking_lot::RwLock;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::state::AppState;
use keygate_storage::Actor;

/// Clock-skew leeway for `exp`/`nbf`.
pub const LEEWAY_SECS: u64 = 30;

#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    #[serde(flatten)]
    pub extra: HashMap<String, serde_json::Value>,
}

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `sub` as a UUID (absent for a service_role token without `sub`).
    pub user_id: Option<Uuid>,
    pub service: bool,
    pub admin: bool,
    pub session_id: Option<Uuid>,
    /// The sign-in this request belongs to, which a vault unlock is bound to (a widening
    /// change needs a fresh unlock from the same sign-in): the token's `session_id`, else
    /// an id derived from the token itself, or from the console session. Stored only with
    /// the vault session it opened, and in `revoked_sign_ins` once revoked.
    pub sign_in: Uuid,
    /// When the caller last proved who they are (Unix seconds): the token's OIDC
    /// `auth_time`, else the latest `amr` timestamp (Supabase), else its `iat`; for a
    /// console session, its sign-in. `None` for keygate itself. A change that would let a
    /// stolen token do lasting harm on a vault without a password (setting one, shredding,
    /// widening a key) needs it recent ([`Caller::require_recent_sign_in`]).
    pub authenticated_at: Option<i64>,
}

impl Caller {
    /// keygate itself (the command line, background jobs): a service identity acting for
    /// nobody, whose sign-in matches no unlock.
    pub fn system() -> Caller {
        Caller {
            user_id: None,
            service: true,
            admin: false,
            session_id: None,
            sign_in: Uuid::now_v7(),
            authenticated_at: None,
        }
    }

    /// 403 `reauthentication_required` unless the caller signed in within the last
    /// `minutes` (service-role callers pass: the platform's backend vouches for them).
    /// `to` says what it is for, in the error ("shred your secrets").
    pub fn require_recent_sign_in(&self, minutes: u32, to: &str) -> Result<(), ApiError> {
        if self.service {
            return Ok(());
        }
        let now = chrono::Utc::now().timestamp();
        match self.authenticated_at {
            // a sign-in "in the future" beyond the clock-skew leeway is not believed
            Some(t)
                if t <= now.saturating_add(LEEWAY_SECS as i64)
                    && now.saturating_sub(t) <= i64::from(minutes) * 60 =>
            {
                Ok(())
            }
            _ => Err(ApiError::forbidden(
                "reauthentication_required",
                format!("sign in again (at most {minutes} minutes ago) to {to}"),
            )),
        }
    }

    /// The caller's own user id, or 403 for a service token acting for nobody.
    pub fn user(&self) -> Result<Uuid, ApiError> {
        self.user_id.ok_or_else(|| {
            ApiError::forbidden(
                "user_required",
                "this route acts for a user; the token has no user (sub)",
            )
        })
    }

    /// The storage identity that row-level security applies to.
    pub fn actor(&self) -> Actor {
        match (self.service, self.admin, self.user_id) {
            (true, _, _) => Actor {
                user_id: self.user_id,
                role: keygate_storage::ActorRole::Service,
            },
            (false, true, Some(u)) => Actor::admin(u),
            (false, _, Some(u)) => Actor::user(u),
            (false, _, None) => Actor {
                user_id: None,
                role: keygate_storage::ActorRole::User,
            },
        }
    }

    pub fn role_name(&self) -> &'static str {
        if self.service {
            "service_role"
        } else if self.admin {
            "admin"
        } else {
            "authenticated"
        }
    }
}

/// Verifies tokens. Cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    hs_key: Arc<DecodingKey>,
    /// Names the token secret without revealing it ([`HS_SESSION_KEY_PREFIX`]): a console
    /// session opened with an HS256 token ends when the secret changes.
    hs_fingerprint: Arc<str>,
    admin_claim: Arc<str>,
    audience: Option<Arc<str>>,
    /// `KEYGATE_JWT_ISSUER`: the `iss` every token must carry, when set.
    issuer: Option<Arc<str>>,
    jwks: Option<Arc<Jwks>>,
    verified: Arc<parking_lot::Mutex<VerifiedCache>>,
    /// The users' "sign out everywhere" cut-offs.
    revocations: Arc<crate::revocations::Revocations>,
}

/// Tokens whose signature and claims were checked recently, keyed by the SHA-256 of the
/// token (no token text kept, and a lookup compares digests, not secrets): a bot sends
/// the same token on every call, and verifying it (base64, HMAC or RSA, JSON) was the
/// biggest single cost of a gateway call after the exchange itself. `exp` and `nbf` are
/// still judged on every use; an entry lives at most [`VERIFIED_TTL`], and an entry
/// verified with a JWKS key no longer than the key set it was checked against is fresh
/// (see [`Jwks`]): the cache never keeps a key alive that the JWKS has dropped.
type VerifiedCache = HashMap<[u8; 32], VerifiedToken>;

struct VerifiedToken {
    caller: Caller,
    exp: i64,
    nbf: Option<i64>,
    iat: Option<i64>,
    /// Not used from the cache at or after this instant.
    until: Instant,
}

const VERIFIED_TTL: Duration = Duration::from_secs(30);
const VERIFIED_MAX: usize = 10_000;

/// Default for `KEYGATE_JWKS_MAX_AGE_SECS`: how long a fetched key set is used before it
/// is fetched again.
pub const JWKS_DEFAULT_MAX_AGE: Duration = Duration::from_secs(300);
/// An unknown `kid` fetches the set again at most this often (bounded by the max age), so
/// tokens with made-up kids cannot make keygate hammer the JWKS URL.
const JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// The largest `KEYGATE_JWKS_MAX_AGE_SECS` honoured: a day.
pub const JWKS_MAX_MAX_AGE: Duration = Duration::from_secs(86_400);

/// The keys of the JWKS URL, by `kid`.
///
/// *Invariant:* a key is used only while the set it came from is at most `max_age` old.
/// After that the set is fetched again before the next asymmetric token is accepted, and
/// the new set replaces the old one whole, so a key removed from the JWKS stops working
/// within `max_age` (plus one refetch). If that fetch fails, the old set keeps serving
/// until it is `2 × max_age` old (a brief outage of the identity provider does not sign
/// everyone out); past that, asymmetric tokens are refused with 503 `jwks_unavailable`
/// (fail closed: an attacker who can block the fetch cannot keep a dropped key alive).
struct Jwks {
    url: String,
    max_age: Duration,
    keys: RwLock<KeySet>,
    /// One fetch at a time; others wait for it and use its result.
    fetching: tokio::sync::Mutex<()>,
    http: reqwest::Client,
}

#[derive(Default)]
struct KeySet {
    keys: HashMap<String, (Algorithm, DecodingKey)>,
    /// When the set was last fetched successfully.
    fetched: Option<Instant>,
    /// When a fetch was last tried (successful or not).
    tried: Option<Instant>,
}

/// A key for one token, and until when a verification with it may be reused.
struct JwksKey {
    alg: Algorithm,
    key: DecodingKey,
    fresh_until: Instant,
}

impl Jwks {
    fn min_refetch(&self) -> Duration {
        JWKS_MIN_REFETCH.min(self.max_age)
    }

    /// The key for `kid`, fetching the set first when it is older than the max age (or
    /// when `kid` is unknown and the last try is long enough ago).
    ///
    /// One fetch at a time, in a task of its own: a client that hangs up cannot cancel it
    /// (a cancelled fetch would count as tried and hold off the next one, so hanging up on
    /// made-up `kid`s could keep the set from ever refreshing). A request that misses
    /// while a fetch runs waits for it (the fetch times out after 5 s), then looks again.
    async fn key(self: &Arc<Self>, kid: &str) -> Result<JwksKey, ApiError> {
        if let Some(k) = self.lookup(kid, false) {
            return Ok(k);
        }
        {
            let _one = self.fetching.lock().await;
            // another request may have fetched while this one waited
            if self.needs_fetch(kid) {
                let me = Arc::clone(self);
                match tokio::spawn(async move { me.fetch().await }).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::warn!(error = %e, "jwks refresh failed"),
                    Err(e) => tracing::warn!(error = %e, "jwks refresh task failed"),
                }
            }
        }
        if let Some(k) = self.lookup(kid, false) {
            return Ok(k);
        }
        // not fresh: within the grace after a failed refetch, the old set still serves
        if let Some(k) = self.lookup(kid, true) {
            return Ok(k);
        }
        // a usable set without this kid: the key is unknown; no usable set at all (never
        // fetched, or too old and the refetch failed): fail closed
        match self.keys.read().fetched {
            Some(t) if t.elapsed() < self.max_age * 2 => {
                Err(ApiError::unauthorized("token signed by an unknown key"))
            }
            _ => Err(jwks_unavailable()),
        }
    }

    /// `kid` from the current set if the set is fresh (or, with `grace`, within the
    /// stale-if-error limit).
    fn lookup(&self, kid: &str, grace: bool) -> Option<JwksKey> {
        let g = self.keys.read();
        let fetched = g.fetched?;
        let limit = if grace {
            self.max_age * 2
        } else {
            self.max_age
        };
        if fetched.elapsed() >= limit {
            return None;
        }
        let (alg, key) = g.keys.get(kid)?;
        Some(JwksKey {
            alg: *alg,
            key: key.clone(),
            // a verification made from the grace set is not cached beyond a minimal time
            fresh_until: if grace {
                Instant::now()
            } else {
                fetched + self.max_age
            },
        })
    }

    fn needs_fetch(&self, kid: &str) -> bool {
        let g = self.keys.read();
        let tried_recently = g.tried.is_some_and(|t| t.elapsed() < self.min_refetch());
        match g.fetched {
            None => !tried_recently,
            Some(t) if t.elapsed() >= self.max_age => !tried_recently,
            Some(_) => !g.keys.contains_key(kid) && !tried_recently,
        }
    }

    async fn fetch(&self) -> Result<(), String> {
        self.keys.write().tried = Some(Instant::now());
        let resp = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(|r| r.error_for_status())
            .map_err(|e| format!("jwks fetch: {}", e.without_url()))?;
        // a key set is a few KiB: a longer answer is refused, not buffered without end
        let body = crate::outbound::read_capped(resp, 1024 * 1024)
            .await
            .ok_or("jwks fetch: answer unreadable or over 1 MiB")?;
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_slice(&body).map_err(|_| "jwks parse: not a JWK set".to_string())?;
        let mut map = HashMap::new();
        for k in set.keys {
            let Some(kid) = k.common.key_id.clone() else {
                continue;
            };
            let alg = match &k.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                _ => continue,
            };
            if let Ok(dk) = DecodingKey::from_jwk(&k) {
                map.insert(kid, (alg, dk));
            }
        }
        let mut g = self.keys.write();
        g.keys = map;
        g.fetched = Some(Instant::now());
        Ok(())
    }
}

fn jwks_unavailable() -> ApiError {
    ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "jwks_unavailable",
        "the token's signing keys could not be fetched from the JWKS URL; try again shortly",
    )
}

/// Redirects a JWKS fetch may follow: at most three, and only to https. An https URL
/// that redirected to plain http would hand the signing keys to whoever answers there,
/// whatever `KEYGATE_JWKS_URL` itself was checked to be.
fn jwks_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        // `previous()` holds the URLs fetched so far, the first one included
        if attempt.url().scheme() != "https" {
            attempt.error("redirect to a URL other than https refused")
        } else if attempt.previous().len() > 3 {
            attempt.error("more than three redirects")
        } else {
            attempt.follow()
        }
    })
}

impl Authenticator {
    /// The key a console session opened with this token depends on: the JWKS key id of an
    /// asymmetric token (when a JWKS is configured), or the token secret's fingerprint
    /// ([`HS_SESSION_KEY_PREFIX`]) for an HS256 token.
    pub fn jwks_kid_of(&self, token: &str) -> Option<String> {
        let header = decode_header(token).ok()?;
        match header.alg {
            Algorithm::RS256 | Algorithm::ES256 if self.jwks.is_some() => header.kid,
            Algorithm::HS256 => Some(self.hs_fingerprint.to_string()),
            _ => None,
        }
    }

    /// Names the token `secret` (the one given to [`Authenticator::new`]) in console
    /// sessions by an HMAC under `key` (a subkey of the master key).
    pub fn with_session_key(mut self, secret: &SecretString, key: &[u8]) -> Self {
        self.hs_fingerprint = hs_fingerprint(secret, Some(key)).into();
        self
    }

    /// Whether `key` (a session's [`Authenticator::jwks_kid_of`] that names the token
    /// secret) names the secret in use now.
    pub fn is_current_hs_key(&self, key: &str) -> bool {
        key == &*self.hs_fingerprint
    }

    /// Whether key `kid` is still in the JWKS (read as a token's would be: fetched again
    /// when the set is older than its max age). `Err` when no usable set is at hand (the
    /// JWKS is unreachable past its grace), or no JWKS is configured any more.
    pub async fn jwks_key_in_set(&self, kid: &str) -> Result<bool, ApiError> {
        let Some(jwks) = self.jwks.as_ref() else {
            return Err(jwks_unavailable());
        };
        match jwks.key(kid).await {
            Ok(_) => Ok(true),
            Err(e) if e.status() == axum::http::StatusCode::UNAUTHORIZED => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn new(
        secret: &SecretString,
        admin_claim: &str,
        audience: Option<&str>,
        jwks_url: Option<&str>,
    ) -> Self {
        Authenticator {
            hs_key: Arc::new(DecodingKey::from_secret(secret.expose_secret().as_bytes())),
            hs_fingerprint: hs_fingerprint(secret, None).into(),
            admin_claim: admin_claim.into(),
            audience: audience.map(Into::into),
            issuer: None,
            jwks: jwks_url.map(|u| {
                Arc::new(Jwks {
                    url: u.to_string(),
                    max_age: JWKS_DEFAULT_MAX_AGE,
                    keys: RwLock::new(KeySet::default()),
                    fetching: tokio::sync::Mutex::new(()),
                    http: reqwest::Client::builder()
                        .timeout(Duration::from_secs(5))
                        .redirect(jwks_redirects())
                        .build()
                        .expect("http client"),
                })
            }),
            verified: Default::default(),
            revocations: Default::default(),
        }
    }

    /// Requires every token's `iss` to be `issuer` (`KEYGATE_JWT_ISSUER`). Call before the
    /// authenticator is cloned.
    pub fn with_issuer(mut self, issuer: Option<&str>) -> Self {
        self.issuer = issuer.map(Into::into);
        self
    }

    /// Sets how long a fetched JWKS key set is used (`KEYGATE_JWKS_MAX_AGE_SECS`; one
    /// second to one day). Call before the authenticator is cloned.
    /// Refuses the tokens their users revoked (see [`crate::revocations`]).
    pub fn with_revocations(mut self, r: Arc<crate::revocations::Revocations>) -> Self {
        self.revocations = r;
        self
    }

    /// The revocation cut-offs this authenticator applies.
    pub fn revocations(&self) -> &Arc<crate::revocations::Revocations> {
        &self.revocations
    }

    pub fn with_jwks_max_age(mut self, max_age: Duration) -> Self {
        if let Some(jwks) = self.jwks.as_mut() {
            let j =
                Arc::get_mut(jwks).expect("with_jwks_max_age before the authenticator is shared");
            j.max_age = max_age.clamp(Duration::from_secs(1), JWKS_MAX_MAX_AGE);
        }
        self
    }

    fn digest(token: &str) -> [u8; 32] {
        let mut d = [0u8; 32];
        d.copy_from_slice(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()).as_ref());
        d
    }

    /// A cached verification still valid now (same leeway as the full check), with the
    /// token's `exp`.
    fn cached(&self, digest: &[u8; 32]) -> Option<(Caller, i64, Option<i64>)> {
        let now = chrono::Utc::now().timestamp();
        let leeway = LEEWAY_SECS as i64;
        let mut m = self.verified.lock();
        let v = m.get(digest)?;
        if Instant::now() < v.until
            && now <= v.exp + leeway
            && v.nbf.is_none_or(|nbf| now + leeway >= nbf)
        {
            return Some((v.caller.clone(), v.exp, v.iat));
        }
        m.remove(digest);
        None
    }

    fn remember(
        &self,
        digest: [u8; 32],
        caller: &Caller,
        exp: i64,
        nbf: Option<i64>,
        iat: Option<i64>,
        key_fresh_until: Option<Instant>,
    ) {
        let now = Instant::now();
        let until = (now + VERIFIED_TTL).min(key_fresh_until.unwrap_or(now + VERIFIED_TTL));
        if until <= now {
            return;
        }
        let mut m = self.verified.lock();
        if m.len() >= VERIFIED_MAX {
            m.retain(|_, v| now < v.until);
            if m.len() >= VERIFIED_MAX {
                m.clear();
            }
        }
        m.insert(
            digest,
            VerifiedToken {
                caller: caller.clone(),
                exp,
                nbf,
                iat,
                until,
            },
        );
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.leeway = LEEWAY_SECS;
        v.validate_nbf = true;
        v.validate_exp = true;
        v.required_spec_claims = ["exp"].into_iter().map(String::from).collect();
        // required when set: jsonwebtoken checks a present `aud` or `iss` against the
        // expected one, but lets a token without the claim through unless it is required
        // (so before, a token without `aud` passed a server with an audience set)
        match &self.audience {
            Some(a) => {
                v.set_audience(&[a.as_ref()]);
                v.required_spec_claims.insert("aud".into());
            }
            None => v.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss.as_ref()]);
            v.required_spec_claims.insert("iss".into());
        }
        v
    }

    /// Verifies `token` and returns the caller. Errors are 401s (503 `jwks_unavailable`
    /// when the JWKS cannot be fetched and the last key set is too old) whose detail never
    /// echoes the token.
    pub async fn verify(&self, token: &str) -> Result<Caller, ApiError> {
        self.verify_with_expiry(token).await.map(|(c, _, _)| c)
    }

    /// [`Authenticator::verify`], also returning the token's `exp` and `iat` (Unix
    /// seconds): what outlives the request (a console session) must not outlive the
    /// token, nor its user's signing out everywhere.
    pub async fn verify_with_expiry(
        &self,
        token: &str,
    ) -> Result<(Caller, i64, Option<i64>), ApiError> {
        let digest = Self::digest(token);
        if let Some((caller, exp, iat)) = self.cached(&digest) {
            // judged on every use, as `exp` is: a revocation takes effect at once
            self.revocations.check(&caller, iat)?;
            return Ok((caller, exp, iat));
        }
        let mut key_fresh_until = None;
        let header =
            decode_header(token).map_err(|_| ApiError::unauthorized("malformed bearer token"))?;
        let claims = match header.alg {
            Algorithm::HS256 => {
                decode::<Claims>(token, &self.hs_key, &self.validation(Algorithm::HS256))
            }
            Algorithm::RS256 | Algorithm::ES256 => {
                let jwks = self.jwks.as_ref().ok_or_else(|| {
                    ApiError::unauthorized(
                        "asymmetric tokens need KEYGATE_JWKS_URL to be configured",
                    )
                })?;
                let kid = header
                    .kid
                    .clone()
                    .ok_or_else(|| ApiError::unauthorized("token has no kid"))?;
                let JwksKey {
                    alg,
                    key,
                    fresh_until,
                } = jwks.key(&kid).await?;
                key_fresh_until = Some(fresh_until);
                if alg != header.alg {
                    return Err(ApiError::unauthorized(
                        "token algorithm does not match its key",
                    ));
                }
                decode::<Claims>(token, &key, &self.validation(alg))
            }
            _ => return Err(ApiError::unauthorized("unsupported token algorithm")),
        }
        .map_err(|e| {
            use jsonwebtoken::errors::ErrorKind as K;
            let why = match e.kind() {
                K::ExpiredSignature => "token expired",
                K::ImmatureSignature => "token not yet valid",
                K::InvalidSignature => "token signature invalid",
                K::InvalidAudience => "token audience not accepted",
                K::InvalidIssuer => "token issuer not accepted",
                K::MissingRequiredClaim(c) if c == "aud" => "token audience not accepted",
                K::MissingRequiredClaim(c) if c == "iss" => "token issuer not accepted",
                _ => "token invalid",
            };
            tracing::debug!(reason = why, "token rejected");
            ApiError::unauthorized(why)
        })?
        .claims;
        let (exp, nbf, iat) = (claims.exp, claims.nbf, claims.iat);
        // a token's own sign-in is derived from what it signs, not its signature: an ECDSA
        // signature can be altered into another valid one, which must not make the same
        // token a new sign-in (one that escapes its revocation)
        let signed = Self::digest(token.rsplit_once('.').map_or(token, |(signed, _)| signed));
        let caller = self.caller_from(claims, &signed)?;
        self.remember(digest, &caller, exp, nbf, iat, key_fresh_until);
        self.revocations.check(&caller, iat)?;
        Ok((caller, exp, iat))
    }

    fn caller_from(&self, c: Claims, digest: &[u8; 32]) -> Result<Caller, ApiError> {
        let service = c.role.as_deref() == Some("service_role");
        if !service && c.role.as_deref().is_some_and(|r| r != "authenticated") {
            return Err(ApiError::unauthorized("token role is not accepted"));
        }
        let user_id = match c.sub.as_deref() {
            Some(s) => Some(
                Uuid::parse_str(s)
                    .map_err(|_| ApiError::unauthorized("token sub is not a UUID"))?,
            ),
            None if service => None,
            None => return Err(ApiError::unauthorized("token has no sub")),
        };
        let admin = match c.extra.get(self.admin_claim.as_ref()) {
            Some(serde_json::Value::Bool(b)) => *b,
            Some(serde_json::Value::String(s)) => s == "admin" || s == "true",
            Some(serde_json::Value::Array(a)) => a.iter().any(|v| v.as_str() == Some("admin")),
            _ => false,
        } || c
            .extra
            .get("app_metadata")
            .and_then(|m| m.get(self.admin_claim.as_ref()))
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        let session_id = c
            .session_id
            .as_deref()
            .and_then(|s| Uuid::parse_str(s).ok());
        Ok(Caller {
            user_id,
            service,
            admin,
            session_id,
            sign_in: session_id.unwrap_or_else(|| derived_sign_in("token", digest)),
            authenticated_at: authenticated_at(&c),
        })
    }
}

/// When the holder of a token last authenticated: OIDC's `auth_time`, else the latest
/// timestamp in Supabase's `amr` list (`[{"method": "password", "timestamp": …}]`: a
/// refreshed access token keeps the sign-in's), else `iat` (a token that says nothing
/// more, OIDC's `amr: ["pwd", "mfa"]` included, is taken to have been issued at its
/// sign-in). An `auth_time` that is not a number is unknown (`None`: never recent), not
/// skipped for a later `iat`.
pub fn authenticated_at(c: &Claims) -> Option<i64> {
    fn seconds(v: &serde_json::Value) -> Option<i64> {
        v.as_i64().or_else(|| {
            v.as_f64()
                .filter(|f| f.is_finite() && f.abs() < 1e15)
                .map(|f| f.floor() as i64)
        })
    }
    if let Some(t) = c.extra.get("auth_time") {
        return seconds(t);
    }
    let amr = c.extra.get("amr").and_then(|v| v.as_array()).and_then(|a| {
        a.iter()
            .filter_map(|m| m.get("timestamp").and_then(seconds))
            .max()
    });
    amr.or(c.iat)
}

/// How a console session names the HS256 token secret it was opened with (in the column
/// that holds a JWKS key's `kid` otherwise).
pub const HS_SESSION_KEY_PREFIX: &str = "keygate:hs256:";

/// [`HS_SESSION_KEY_PREFIX`] and 64 bits of an HMAC of the secret: it tells whether the
/// secret changed. Keyed by `key` (derived from the master key, see
/// [`Authenticator::with_session_key`]), so the stored value cannot be used to test
/// guesses at the secret without that key; without one, by a fixed label.
fn hs_fingerprint(secret: &SecretString, key: Option<&[u8]>) -> String {
    let tag = match key {
        Some(k) => ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, k),
            secret.expose_secret().as_bytes(),
        ),
        None => ring::hmac::sign(
            &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.expose_secret().as_bytes()),
            b"keygate console session key\0",
        ),
    };
    format!("{HS_SESSION_KEY_PREFIX}{}", hex::encode(&tag.as_ref()[..8]))
}

/// A sign-in id derived from the digest of what the caller holds (its token, its console
/// session cookie), domain-separated: it tells nothing about the secret, and another
/// token of the same user gets another id.
pub fn derived_sign_in(domain: &str, digest: &[u8]) -> Uuid {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(b"keygate sign-in\0");
    ctx.update(domain.as_bytes());
    ctx.update(b"\0");
    ctx.update(digest);
    let mut id = [0u8; 16];
    id.copy_from_slice(&ctx.finish().as_ref()[..16]);
    Uuid::from_bytes(id)
}

/// Mints an HS256 token the local server accepts, with a fresh `session_id`.
pub fn mint_token(
    secret: &SecretString,
    user: Option<Uuid>,
    admin: bool,
    role: &str,
    ttl: Duration,
    admin_claim: &str,
) -> Result<String, jsonwebtoken::errors::Error> {
    mint_token_for_session(secret, user, admin, role, ttl, admin_claim, Uuid::new_v4())
}

/// Mints an HS256 token whose `session_id` claim is `session_id` (`keygate token`, which
/// records that id in the audit chain).
pub fn mint_token_for_session(
    secret: &SecretString,
    user: Option<Uuid>,
    admin: bool,
    role: &str,
    ttl: Duration,
    admin_claim: &str,
    session_id: Uuid,
) -> Result<String, jsonwebtoken::errors::Error> {
    mint_scoped(
        secret,
        user,
        admin,
        role,
        ttl,
        &Scope {
            admin_claim,
            issuer: None,
            audience: None,
        },
        session_id,
    )
}

/// What a minted token must carry to be accepted by the server it is for: its admin
/// claim's name and, when the server requires them (`KEYGATE_JWT_ISSUER`,
/// `KEYGATE_JWT_AUDIENCE`), `iss` and `aud`.
pub struct Scope<'a> {
    pub admin_claim: &'a str,
    pub issuer: Option<&'a str>,
    pub audience: Option<&'a str>,
}

impl<'a> Scope<'a> {
    /// The scope `config`'s server accepts.
    pub fn of(config: &'a crate::config::Config) -> Scope<'a> {
        Scope {
            admin_claim: &config.admin_claim,
            issuer: config.jwt_issuer.as_deref(),
            audience: config.jwt_audience.as_deref(),
        }
    }
}

/// [`mint_token_for_session`] for a server that may require `iss` and `aud` (`keygate
/// token`: before, its tokens were refused by a server with `KEYGATE_JWT_AUDIENCE` set).
pub fn mint_scoped(
    secret: &SecretString,
    user: Option<Uuid>,
    admin: bool,
    role: &str,
    ttl: Duration,
    scope: &Scope<'_>,
    session_id: Uuid,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = chrono::Utc::now().timestamp();
    let mut extra = HashMap::new();
    if admin {
        extra.insert(scope.admin_claim.to_string(), serde_json::Value::Bool(true));
    }
    if let Some(iss) = scope.issuer {
        extra.insert("iss".into(), iss.into());
    }
    if let Some(aud) = scope.audience {
        extra.insert("aud".into(), aud.into());
    }
    let claims = Claims {
        sub: user.map(|u| u.to_string()),
        role: Some(role.to_string()),
        exp: now.saturating_add(i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX)),
        nbf: Some(now),
        iat: Some(now),
        session_id: Some(session_id.to_string()),
        extra,
    };
    encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret.expose_secret().as_bytes()),
    )
}

/// Extracts the bearer token: `Authorization: Bearer`, or `X-Keygate-Token` when the
/// `Authorization` header belongs to the exchange (proxy route).
pub fn bearer_token(parts: &Parts) -> Option<&str> {
    bearer_in(&parts.headers)
}

/// [`bearer_token`] from the request's headers.
pub fn bearer_in(headers: &axum::http::HeaderMap) -> Option<&str> {
    if let Some(v) = headers.get("x-keygate-token").and_then(|v| v.to_str().ok()) {
        return Some(v.trim());
    }
    let v = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(c) = parts.extensions.get::<Caller>() {
            return Ok(c.clone());
        }
        let token =
            bearer_token(parts).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
        let caller = state.auth.verify(token).await?;
        parts.extensions.insert(caller.clone());
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn the_sign_in_time_of_a_token() {
        let with = |iat: Option<i64>, extra: serde_json::Value| Claims {
            sub: None,
            role: None,
            exp: 0,
            nbf: None,
            iat,
            session_id: None,
            extra: serde_json::from_value(extra).unwrap(),
        };
        let at = |iat, extra| authenticated_at(&with(iat, extra));
        // OIDC `auth_time` first, a whole or a decimal number
        assert_eq!(
            at(
                Some(900),
                serde_json::json!({"auth_time": 100, "amr": [{"timestamp": 800}]})
            ),
            Some(100)
        );
        assert_eq!(
            at(Some(900), serde_json::json!({"auth_time": 100.9})),
            Some(100)
        );
        // one that is not a number is unknown, not passed over for a later `iat`
        assert_eq!(at(Some(900), serde_json::json!({"auth_time": "100"})), None);
        assert_eq!(at(Some(900), serde_json::json!({"auth_time": null})), None);
        assert_eq!(at(Some(900), serde_json::json!({"auth_time": 1e300})), None);
        // Supabase's `amr`: the newest timestamp, not the refreshed token's `iat`
        assert_eq!(
            at(
                Some(900),
                serde_json::json!({"amr": [{"method": "password", "timestamp": 100},
                                      {"method": "totp", "timestamp": 300}, "x"]})
            ),
            Some(300)
        );
        // OIDC's `amr` (method names), an empty one, or none: the token's `iat`
        assert_eq!(
            at(Some(900), serde_json::json!({"amr": ["pwd", "mfa"]})),
            Some(900)
        );
        assert_eq!(at(Some(900), serde_json::json!({"amr": []})), Some(900));
        assert_eq!(at(Some(900), serde_json::json!({})), Some(900));
        assert_eq!(at(None, serde_json::json!({})), None);
    }

    #[test]
    fn a_recent_sign_in_is_within_the_window_and_not_in_the_future() {
        let caller = |t: Option<i64>, service: bool| Caller {
            user_id: Some(Uuid::new_v4()),
            service,
            admin: false,
            session_id: None,
            sign_in: Uuid::new_v4(),
            authenticated_at: t,
        };
        let ok = |t: Option<i64>| caller(t, false).require_recent_sign_in(15, "test").is_ok();
        assert!(ok(Some(now())));
        assert!(ok(Some(now() - 14 * 60)));
        assert!(!ok(Some(now() - 16 * 60)));
        assert!(!ok(None));
        assert!(!ok(Some(i64::MIN)));
        assert!(ok(Some(now() + 20)), "inside the clock-skew leeway");
        assert!(!ok(Some(now() + 3600)), "a sign-in an hour from now");
        assert!(!ok(Some(i64::MAX)));
        let e = caller(None, false)
            .require_recent_sign_in(15, "test")
            .unwrap_err();
        assert_eq!(e.code(), "reauthentication_required");
        // the platform's backend is not asked
        assert!(caller(None, true)
            .require_recent_sign_in(15, "test")
            .is_ok());
    }

    #[tokio::test]
    async fn verified_tokens_are_reused_only_while_valid() {
        let secret = SecretString::from("k".repeat(32));
        let a = Authenticator::new(&secret, "is_admin", None, None);
        let user = Uuid::new_v4();
        let ttl = Duration::from_secs(600);
        let t = mint_token(&secret, Some(user), true, "authenticated", ttl, "is_admin").unwrap();
        let d = Authenticator::digest(&t);
        assert!(a.cached(&d).is_none());
        let c = a.verify(&t).await.unwrap();
        assert_eq!((c.user_id, c.admin), (Some(user), true));
        let (hit, exp, _) = a
            .cached(&d)
            .expect("verified once, then served from the cache");
        assert_eq!((hit.user_id, hit.admin), (Some(user), true));
        assert!(
            (exp - now() - 600).abs() <= 2,
            "the token's exp comes back with it"
        );

        // past exp + leeway: not used, and dropped
        a.verified.lock().get_mut(&d).unwrap().exp = now() - LEEWAY_SECS as i64 - 1;
        assert!(a.cached(&d).is_none());
        assert!(a.verified.lock().get(&d).is_none());
        // before nbf - leeway: not used
        a.verify(&t).await.unwrap();
        a.verified.lock().get_mut(&d).unwrap().nbf = Some(now() + LEEWAY_SECS as i64 + 5);
        assert!(a.cached(&d).is_none());
        // older than the TTL: verified again
        a.verify(&t).await.unwrap();
        a.verified.lock().get_mut(&d).unwrap().until = Instant::now();
        assert!(a.cached(&d).is_none());

        // a token that differs in any byte is verified on its own (and fails)
        let mut forged = t.clone();
        forged.pop();
        forged.push(if t.ends_with('A') { 'B' } else { 'A' });
        assert!(a.verify(&t).await.is_ok());
        assert!(a.verify(&forged).await.is_err());
        assert!(a.cached(&Authenticator::digest(&forged)).is_none());
        // another server secret: the cache of one authenticator never vouches for another
        let other = Authenticator::new(&SecretString::from("o".repeat(32)), "is_admin", None, None);
        assert!(other.verify(&t).await.is_err());
    }
}
