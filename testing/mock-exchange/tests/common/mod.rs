//! Keys, a client and hand-written signing helpers for the mock's tests.
#![allow(dead_code)]

use base64::Engine as _;
use hmac::{Hmac, Mac};
use keygate_mock_exchange::{MockConfig, MockExchange, MockKey};
use serde_json::Value;

pub const BIN_KEY: &str = "binKey";
pub const BIN_SECRET: &str = "binSecret";
pub const OKX_KEY: &str = "okxKey";
pub const OKX_SECRET: &str = "okxSecret";
pub const OKX_PASS: &str = "okxPass";
pub const BYBIT_KEY: &str = "bybKey";
pub const BYBIT_SECRET: &str = "bybSecret";
pub const KRAKEN_KEY: &str = "krKey";
/// base64 of 64 bytes, as Kraken issues secrets.
pub const KRAKEN_SECRET: &str =
    "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ==";
pub const KC_KEY: &str = "kcKey";
pub const KC_SECRET: &str = "kcSecret";
pub const KC_PASS: &str = "kcPass";
pub const BG_KEY: &str = "bgKey";
pub const BG_SECRET: &str = "bgSecret";
pub const BG_PASS: &str = "bgPass";
pub const GATE_KEY: &str = "gtKey";
pub const GATE_SECRET: &str = "gtSecret";
pub const CB_KEY: &str = "organizations/org-1/apiKeys/key-1";

pub fn cb_signing_key() -> p256::ecdsa::SigningKey {
    p256::ecdsa::SigningKey::from_bytes(&[5u8; 32].into()).unwrap()
}

pub async fn start_all() -> MockExchange {
    use p256::pkcs8::EncodePublicKey as _;
    let cb_pem = cb_signing_key()
        .verifying_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    MockExchange::start(MockConfig {
        keys: vec![
            MockKey::hmac("binance", BIN_KEY, BIN_SECRET),
            MockKey::hmac("okx", OKX_KEY, OKX_SECRET).with_passphrase(OKX_PASS),
            MockKey::hmac("bybit", BYBIT_KEY, BYBIT_SECRET),
            MockKey::hmac("kraken", KRAKEN_KEY, KRAKEN_SECRET),
            MockKey::hmac("kucoin", KC_KEY, KC_SECRET).with_passphrase(KC_PASS),
            MockKey::hmac("bitget", BG_KEY, BG_SECRET).with_passphrase(BG_PASS),
            MockKey::hmac("gate", GATE_KEY, GATE_SECRET),
            MockKey::public_key("coinbase", CB_KEY, cb_pem),
        ],
    })
    .await
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// Sends and returns (status, headers, JSON body or Null).
pub async fn send(rb: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = rb.send().await.expect("request");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = resp.bytes().await.expect("body");
    (
        status,
        headers,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

pub fn iso_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

pub fn hmac256(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha256>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

pub fn hmac512(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<sha2::Sha512>::new_from_slice(key).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

pub fn b64(data: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(data)
}

pub fn b64_decode(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn b64url(data: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

/// A CDP JWT as Coinbase documents it: ES256, `kid`/`nonce` in the header.
pub fn coinbase_jwt(key: &p256::ecdsa::SigningKey, kid: &str, uri: &str, now_s: i64) -> String {
    use p256::ecdsa::signature::Signer as _;
    let header = serde_json::json!({"alg": "ES256", "typ": "JWT", "kid": kid, "nonce": "0123456789abcdef0123456789abcdef"});
    let claims =
        serde_json::json!({"sub": kid, "iss": "cdp", "nbf": now_s, "exp": now_s + 120, "uri": uri});
    let signing_input = format!(
        "{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes())
    );
    let sig: p256::ecdsa::Signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64url(&sig.to_bytes()))
}
