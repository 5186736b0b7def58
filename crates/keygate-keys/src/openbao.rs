//! OpenBao / HashiCorp Vault Transit as the master-key provider.
//!
//! Binding: the [`WrapContext`] goes to Transit as `context` (base64 of
//! [`WrapContext::encode`]). That requires a key created with `derived=true`: Transit then
//! derives a per-context key inside the KMS, so a wrap only opens with the same user id and
//! DEK version, and `rewrap` (which does not take `associated_data`) keeps the binding.
//! [`OpenBaoTransitProvider::connect`] refuses a key that is not derived or not an AEAD type.
//!
//! Key-check value: `transit-hmac:` followed by Transit's HMAC-SHA256 (`vault:vN:...`) of a
//! fixed label under the Transit key. Only the holder of that KMS key can produce a value
//! that Transit's `verify` accepts, it reveals nothing about the key, and it keeps verifying
//! after a KMS-side rotation (as long as `min_decryption_version` allows its version).
//!
//! Minimal policy for keygate's token (mount `transit`, key `keygate`):
//! ```hcl
//! path "transit/encrypt/keygate"  { capabilities = ["update"] }
//! path "transit/decrypt/keygate"  { capabilities = ["update"] }
//! path "transit/rewrap/keygate"   { capabilities = ["update"] }
//! path "transit/hmac/keygate/*"   { capabilities = ["update"] }
//! path "transit/verify/keygate/*" { capabilities = ["update"] }
//! path "transit/keys/keygate"     { capabilities = ["read"] }
//! ```
//!
//! Known limit: the base64 plaintext DEK passes through `reqwest`/`hyper` buffers on the way
//! out and back, which are not zeroized; our own copies are.

use std::fmt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use keygate_crypto::{WrapContext, Zeroizing};
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{KeyError, KeyProvider};

const KCV_LABEL: &[u8] = b"keygate key check value v1";
const KCV_PREFIX: &str = "transit-hmac:";

/// Settings for [`OpenBaoTransitProvider`].
pub struct OpenBaoConfig {
    /// Server address, e.g. `https://bao.internal:8200`.
    pub addr: String,
    /// Token with the policy shown in the module docs.
    pub token: SecretString,
    /// Transit key name (created with `type=aes256-gcm96`, `derived=true`).
    pub key_name: String,
    /// Transit mount path, default `transit`.
    pub mount: String,
    /// Optional Vault Enterprise / OpenBao namespace (`X-Vault-Namespace`).
    pub namespace: Option<String>,
    /// Whole-request timeout, default 10 s.
    pub timeout: Duration,
    /// Allow plaintext `http://` to a non-loopback address (default false: use TLS).
    pub allow_insecure_http: bool,
}

impl OpenBaoConfig {
    /// A config with the default mount (`transit`), no namespace, a 10 s timeout and TLS
    /// required except on loopback.
    pub fn new(addr: impl Into<String>, token: SecretString, key_name: impl Into<String>) -> Self {
        Self {
            addr: addr.into(),
            token,
            key_name: key_name.into(),
            mount: "transit".to_owned(),
            namespace: None,
            timeout: Duration::from_secs(10),
            allow_insecure_http: false,
        }
    }
}

impl fmt::Debug for OpenBaoConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBaoConfig")
            .field("addr", &self.addr)
            .field("token", &"[redacted]")
            .field("key_name", &self.key_name)
            .field("mount", &self.mount)
            .field("namespace", &self.namespace)
            .field("timeout", &self.timeout)
            .field("allow_insecure_http", &self.allow_insecure_http)
            .finish()
    }
}

fn valid_name(s: &str, allow_slash: bool) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('/')
        && !s.ends_with('/')
        && !s
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b) || (allow_slash && b == b'/'))
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The HTTP side: base URL, client and auth headers. The token sits only in a
/// sensitive-marked header value.
struct Http {
    client: reqwest::Client,
    /// `<addr>/v1/<mount>/`
    base: Url,
    key: String,
    headers: HeaderMap,
}

impl Http {
    fn new(cfg: &OpenBaoConfig) -> Result<Self, KeyError> {
        let addr =
            Url::parse(cfg.addr.trim()).map_err(|_| KeyError::Config("invalid KMS address"))?;
        match addr.scheme() {
            "https" => {}
            "http" if cfg.allow_insecure_http || is_loopback(&addr) => {}
            "http" => {
                return Err(KeyError::Config(
                    "plaintext http to a non-loopback KMS; use https or allow_insecure_http",
                ))
            }
            _ => return Err(KeyError::Config("KMS address must be http(s)")),
        }
        if addr.query().is_some() || addr.fragment().is_some() || !addr.username().is_empty() {
            return Err(KeyError::Config(
                "KMS address must not carry a query, fragment or userinfo",
            ));
        }
        if !valid_name(&cfg.mount, true) {
            return Err(KeyError::Config("invalid transit mount path"));
        }
        if !valid_name(&cfg.key_name, false) {
            return Err(KeyError::Config("invalid transit key name"));
        }
        let base = Url::parse(&format!(
            "{}/v1/{}/",
            addr.as_str().trim_end_matches('/'),
            cfg.mount
        ))
        .map_err(|_| KeyError::Config("invalid KMS address"))?;

        let mut headers = HeaderMap::new();
        let mut token = HeaderValue::from_str(cfg.token.expose_secret())
            .map_err(|_| KeyError::Config("KMS token contains invalid characters"))?;
        token.set_sensitive(true);
        headers.insert("X-Vault-Token", token);
        headers.insert("X-Vault-Request", HeaderValue::from_static("true"));
        if let Some(ns) = &cfg.namespace {
            let ns =
                HeaderValue::from_str(ns).map_err(|_| KeyError::Config("invalid namespace"))?;
            headers.insert("X-Vault-Namespace", ns);
        }
        let client = reqwest::Client::builder()
            .timeout(cfg.timeout)
            .connect_timeout(cfg.timeout.min(Duration::from_secs(5)))
            // A KMS never redirects; following one could send the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|_| KeyError::Config("cannot build HTTP client"))?;
        Ok(Self {
            client,
            base,
            key: cfg.key_name.clone(),
            headers,
        })
    }

    /// `path` is relative to the mount, with `{key}` standing for the key name.
    async fn call<T: DeserializeOwned>(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Option<T>, KeyError> {
        let url = self
            .base
            .join(&path.replace("{key}", &self.key))
            .map_err(|_| KeyError::Config("invalid transit path"))?;
        let mut req = self
            .client
            .request(method, url)
            .headers(self.headers.clone());
        if let Some(body) = body {
            req = req.header("Content-Type", "application/json").body(body);
        }
        let unavailable = |e: reqwest::Error| KeyError::Unavailable {
            op,
            source: Box::new(e.without_url()),
        };
        let resp = req.send().await.map_err(unavailable)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(KeyError::Rejected {
                op,
                status: status.as_u16(),
            });
        }
        if status == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let bytes = Zeroizing::new(resp.bytes().await.map_err(unavailable)?.to_vec());
        let env: Envelope<T> =
            serde_json::from_slice(&bytes).map_err(|_| KeyError::Protocol { op })?;
        Ok(Some(env.data))
    }

    async fn call_data<T: DeserializeOwned>(
        &self,
        op: &'static str,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Result<T, KeyError> {
        self.call(op, method, path, body)
            .await?
            .ok_or(KeyError::Protocol { op })
    }
}

#[derive(Deserialize)]
struct Envelope<T> {
    data: T,
}

#[derive(Deserialize)]
struct KeyInfo {
    latest_version: u32,
    derived: bool,
    #[serde(rename = "type")]
    key_type: String,
}

#[derive(Serialize)]
struct EncryptReq<'a> {
    plaintext: &'a str,
    context: &'a str,
}

#[derive(Serialize)]
struct CiphertextReq<'a> {
    ciphertext: &'a str,
    context: &'a str,
}

#[derive(Deserialize)]
struct CiphertextResp {
    ciphertext: String,
    #[serde(default)]
    key_version: Option<u32>,
}

#[derive(Deserialize)]
struct PlaintextResp {
    plaintext: String,
}

#[derive(Serialize)]
struct HmacReq<'a> {
    input: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    hmac: Option<&'a str>,
}

#[derive(Deserialize)]
struct HmacResp {
    hmac: String,
}

#[derive(Deserialize)]
struct VerifyResp {
    valid: bool,
}

fn json<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("request types serialize infallibly")
}

/// Parses `vault:v<N>:<base64>` and returns `(N, the whole string)`.
fn parse_transit_ciphertext(wrapped: &[u8]) -> Result<(u32, &str), KeyError> {
    let s = std::str::from_utf8(wrapped).map_err(|_| KeyError::Malformed)?;
    let rest = s.strip_prefix("vault:v").ok_or(KeyError::Malformed)?;
    let (v, body) = rest.split_once(':').ok_or(KeyError::Malformed)?;
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) || body.is_empty() {
        return Err(KeyError::Malformed);
    }
    let v = v.parse().map_err(|_| KeyError::Malformed)?;
    Ok((v, s))
}

/// Master key held in OpenBao / Vault Transit; see the module docs for binding and policy.
pub struct OpenBaoTransitProvider {
    http: Http,
    current: AtomicU32,
}

impl fmt::Debug for OpenBaoTransitProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenBaoTransitProvider")
            .field("base", &self.http.base.as_str())
            .field("key", &self.http.key)
            .field("current_version", &self.current.load(Ordering::Relaxed))
            .field("token", &"[redacted]")
            .finish()
    }
}

impl OpenBaoTransitProvider {
    /// Validates `cfg`, reads the Transit key and checks that it can bind contexts
    /// (`derived=true`, AEAD type). Errors: [`KeyError::Config`] for a key that cannot,
    /// [`KeyError::Rejected`] (404: no such mount/key, 403: token/policy) or
    /// [`KeyError::Unavailable`].
    pub async fn connect(cfg: &OpenBaoConfig) -> Result<Self, KeyError> {
        let provider = Self {
            http: Http::new(cfg)?,
            current: AtomicU32::new(0),
        };
        provider.refresh().await?;
        Ok(provider)
    }

    /// Creates the Transit key keygate needs (`aes256-gcm96`, `derived=true`); a setup helper
    /// for `keygate doctor`/tests. Needs `update` on `<mount>/keys/<key>`. Creating an
    /// existing key is a no-op on the server side (its settings are not changed).
    pub async fn create_key(cfg: &OpenBaoConfig) -> Result<(), KeyError> {
        let http = Http::new(cfg)?;
        let body = json(&serde_json::json!({"type": "aes256-gcm96", "derived": true}));
        http.call::<serde_json::Value>("create_key", Method::POST, "keys/{key}", Some(body))
            .await
            .map(|_| ())
    }

    /// Re-reads the key's latest version (call after a KMS-side rotation) and returns it.
    pub async fn refresh(&self) -> Result<u32, KeyError> {
        let info: KeyInfo = self
            .http
            .call_data("read_key", Method::GET, "keys/{key}", None)
            .await?;
        if !info.derived {
            return Err(KeyError::Config(
                "transit key must be created with derived=true to bind the wrap context",
            ));
        }
        if !matches!(
            info.key_type.as_str(),
            "aes256-gcm96" | "aes128-gcm96" | "chacha20-poly1305"
        ) {
            return Err(KeyError::Config("transit key must be an AEAD key type"));
        }
        self.current.store(info.latest_version, Ordering::Relaxed);
        Ok(info.latest_version)
    }

    /// Rotates the Transit key (needs `update` on `<mount>/keys/<key>/rotate`) and returns
    /// the new current version. Old wraps keep opening; re-wrap them with
    /// [`KeyProvider::rewrap`].
    pub async fn rotate(&self) -> Result<u32, KeyError> {
        self.http
            .call::<serde_json::Value>(
                "rotate_key",
                Method::POST,
                "keys/{key}/rotate",
                Some(b"{}".to_vec()),
            )
            .await?;
        self.refresh().await
    }

    fn context(ctx: &WrapContext) -> String {
        STANDARD.encode(ctx.encode())
    }

    fn note_version(&self, v: Option<u32>) {
        if let Some(v) = v {
            self.current.fetch_max(v, Ordering::Relaxed);
        }
    }

    /// Maps 400 on decrypt/rewrap (authentication failure, wrong context, bad ciphertext) to
    /// the one opaque integrity error.
    fn integrity_on_400(e: KeyError) -> KeyError {
        match e {
            KeyError::Rejected { status: 400, .. } => KeyError::Integrity,
            other => other,
        }
    }
}

#[async_trait]
impl KeyProvider for OpenBaoTransitProvider {
    fn name(&self) -> &str {
        "openbao-transit"
    }

    fn current_version(&self) -> u32 {
        self.current.load(Ordering::Relaxed)
    }

    fn wrapped_version(&self, wrapped: &[u8]) -> Result<u32, KeyError> {
        parse_transit_ciphertext(wrapped).map(|(v, _)| v)
    }

    async fn wrap(&self, ctx: &WrapContext, plaintext: &[u8]) -> Result<Vec<u8>, KeyError> {
        let b64 = Zeroizing::new(STANDARD.encode(plaintext));
        let context = Self::context(ctx);
        let body = Zeroizing::new(json(&EncryptReq {
            plaintext: &b64,
            context: &context,
        }));
        let resp: CiphertextResp = self
            .http
            .call_data(
                "encrypt",
                Method::POST,
                "encrypt/{key}",
                Some(body.to_vec()),
            )
            .await?;
        parse_transit_ciphertext(resp.ciphertext.as_bytes())
            .map_err(|_| KeyError::Protocol { op: "encrypt" })?;
        self.note_version(resp.key_version);
        Ok(resp.ciphertext.into_bytes())
    }

    async fn unwrap(
        &self,
        ctx: &WrapContext,
        wrapped: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, KeyError> {
        let (_, ciphertext) = parse_transit_ciphertext(wrapped)?;
        let context = Self::context(ctx);
        let resp: PlaintextResp = self
            .http
            .call_data(
                "decrypt",
                Method::POST,
                "decrypt/{key}",
                Some(json(&CiphertextReq {
                    ciphertext,
                    context: &context,
                })),
            )
            .await
            .map_err(Self::integrity_on_400)?;
        let b64 = Zeroizing::new(resp.plaintext);
        let plain = STANDARD
            .decode(b64.as_bytes())
            .map_err(|_| KeyError::Protocol { op: "decrypt" })?;
        Ok(Zeroizing::new(plain))
    }

    /// Re-wraps inside the KMS (`/rewrap`): the DEK never reaches keygate.
    async fn rewrap(&self, ctx: &WrapContext, wrapped: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (_, ciphertext) = parse_transit_ciphertext(wrapped)?;
        let context = Self::context(ctx);
        let resp: CiphertextResp = self
            .http
            .call_data(
                "rewrap",
                Method::POST,
                "rewrap/{key}",
                Some(json(&CiphertextReq {
                    ciphertext,
                    context: &context,
                })),
            )
            .await
            .map_err(Self::integrity_on_400)?;
        let (v, _) = parse_transit_ciphertext(resp.ciphertext.as_bytes())
            .map_err(|_| KeyError::Protocol { op: "rewrap" })?;
        self.note_version(Some(v));
        Ok(resp.ciphertext.into_bytes())
    }

    async fn key_check_value(&self) -> Result<String, KeyError> {
        let input = STANDARD.encode(KCV_LABEL);
        let resp: HmacResp = self
            .http
            .call_data(
                "hmac",
                Method::POST,
                "hmac/{key}/sha2-256",
                Some(json(&HmacReq {
                    input: &input,
                    hmac: None,
                })),
            )
            .await?;
        Ok(format!("{KCV_PREFIX}{}", resp.hmac))
    }

    /// Asks Transit to verify the stored HMAC; a value from another provider or key is
    /// `Ok(false)`.
    async fn verify_key_check_value(&self, stored: &str) -> Result<bool, KeyError> {
        let Some(hmac) = stored.trim().strip_prefix(KCV_PREFIX) else {
            return Ok(false);
        };
        if !hmac.starts_with("vault:v") {
            return Ok(false);
        }
        let input = STANDARD.encode(KCV_LABEL);
        let resp = self
            .http
            .call_data::<VerifyResp>(
                "verify",
                Method::POST,
                "verify/{key}/sha2-256",
                Some(json(&HmacReq {
                    input: &input,
                    hmac: Some(hmac),
                })),
            )
            .await;
        match resp {
            Ok(r) => Ok(r.valid),
            // Malformed HMAC or a version Transit no longer accepts.
            Err(KeyError::Rejected { status: 400, .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_transit_ciphertexts() {
        assert_eq!(parse_transit_ciphertext(b"vault:v12:abc").unwrap().0, 12);
        for bad in [
            &b""[..],
            b"vault:v:abc",
            b"vault:vx:abc",
            b"vault:v1:",
            b"vault:v1",
            b"\x01\x02\x00",
            b"vault:v99999999999:abc",
        ] {
            assert!(matches!(
                parse_transit_ciphertext(bad),
                Err(KeyError::Malformed)
            ));
        }
    }

    #[test]
    fn config_validation() {
        let tok = || SecretString::from("s.secret-token");
        assert!(Http::new(&OpenBaoConfig::new(
            "http://127.0.0.1:8200",
            tok(),
            "keygate"
        ))
        .is_ok());
        assert!(Http::new(&OpenBaoConfig::new("https://kms.example:8200/", tok(), "k")).is_ok());
        assert!(matches!(
            Http::new(&OpenBaoConfig::new("http://kms.example:8200", tok(), "k")),
            Err(KeyError::Config(_))
        ));
        let mut c = OpenBaoConfig::new("http://kms.example:8200", tok(), "k");
        c.allow_insecure_http = true;
        assert!(Http::new(&c).is_ok());
        for bad_key in ["", "a/b", "..", "k?x=1", "k#f"] {
            assert!(Http::new(&OpenBaoConfig::new("https://k", tok(), bad_key)).is_err());
        }
        let mut c = OpenBaoConfig::new("https://k", tok(), "k");
        c.mount = "../sys".into();
        assert!(Http::new(&c).is_err());
        c.mount = "team/transit".into();
        let h = Http::new(&c).unwrap();
        assert_eq!(h.base.as_str(), "https://k/v1/team/transit/");
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
