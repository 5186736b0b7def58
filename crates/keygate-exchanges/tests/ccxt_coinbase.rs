//! Coinbase (CDP key, ES256 JWT) cross-checked against CCXT. ES256 tokens cannot be compared
//! byte for byte (CCXT's nonce is random), so for each request CCXT signed
//! (`testing/ccxt/coinbase_vectors.py`) both JWTs must verify under the key's public key and
//! agree on header fields (but the nonce) and on `sub`, `nbf`, `exp`, `uri`. The issuer
//! differs on purpose: CCXT sends the legacy `coinbase-cloud` (+ `aud`, `iat`), keygate
//! Coinbase's current `cdp` (see coinbase.rs).

mod common;

use base64::Engine as _;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keygate_exchanges::{
    ApiCredentials, EndpointClass, Environment, ExchangeId, OutgoingRequest, SignContext,
};
use p256::ecdsa::signature::Verifier;
use p256::ecdsa::{Signature, VerifyingKey};
use secrecy::SecretString;
use serde_json::Value;

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("vector field {k}"))
}

fn b64url(part: &str) -> Vec<u8> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap()
}

/// Verifies `jwt` under `key` and returns (header, claims).
fn verify(jwt: &str, key: &VerifyingKey) -> (Value, Value) {
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let sig = Signature::from_slice(&b64url(parts[2])).expect("64-byte r||s");
    key.verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
        .expect("JWT signature verifies");
    (
        serde_json::from_slice(&b64url(parts[0])).unwrap(),
        serde_json::from_slice(&b64url(parts[1])).unwrap(),
    )
}

fn bearer(h: &HeaderMap) -> String {
    h["authorization"]
        .to_str()
        .unwrap()
        .strip_prefix("Bearer ")
        .expect("Bearer token")
        .to_string()
}

#[test]
fn coinbase_matches_ccxt() {
    let Some(vectors) = common::ccxt_vectors("coinbase_vectors.py") else {
        return;
    };
    let api = ExchangeId::Coinbase.api();
    let prod = api.hosts().production;
    let mut matched = 0;
    for v in &vectors {
        let name = s(v, "name");
        let url = s(v, "url");
        let rest = url
            .strip_prefix(prod)
            .unwrap_or_else(|| panic!("{name}: {url} is not on {prod}"));
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string())),
            None => (rest.to_string(), None),
        };
        let mut headers = HeaderMap::new();
        for (k, val) in v["headers"].as_object().unwrap() {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(val.as_str().unwrap()).unwrap(),
            );
        }
        let public = p256::SecretKey::from_sec1_pem(s(v, "secret"))
            .unwrap()
            .public_key();
        let public = VerifyingKey::from(&public);
        let (ccxt_header, ccxt_claims) = verify(&bearer(&headers), &public);

        let method = Method::from_bytes(s(v, "method").as_bytes()).unwrap();
        let body = Bytes::from(s(v, "body").to_string());
        let mut req = OutgoingRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            headers,
            body: body.clone(),
        };
        let class = api.classify(&method, &path);
        assert!(
            !matches!(class, EndpointClass::Unknown | EndpointClass::Public),
            "{name}: {method} {path} classed {class:?}"
        );
        api.strip_auth(&mut req);
        assert!(req.headers.get("authorization").is_none(), "{name}");
        let creds = ApiCredentials {
            api_key: SecretString::from(s(v, "api_key")),
            api_secret: None,
            passphrase: None,
            private_key: Some(SecretString::from(s(v, "secret"))),
        };
        let ctx = SignContext {
            now_ms: v["now_ms"].as_i64().unwrap(),
            nonce: v["nonce"].as_u64().unwrap(),
            random_nonce: [0x5a; 16],
            environment: Environment::Production,
            host: "api.coinbase.com".into(),
            recv_window_ms: None,
        };
        api.sign(&mut req, &creds, &ctx).unwrap();
        assert_eq!(req.path, path, "{name}: path");
        assert_eq!(req.query, query, "{name}: query");
        assert_eq!(req.body, body, "{name}: body");

        let (header, claims) = verify(&bearer(&req.headers), &public);
        for k in ["alg", "kid", "typ"] {
            assert_eq!(header[k], ccxt_header[k], "{name}: header {k}");
        }
        assert_eq!(header["nonce"], "5a".repeat(16), "{name}: nonce");
        assert!(ccxt_header["nonce"].is_string(), "{name}: ccxt nonce");
        for k in ["sub", "nbf", "exp", "uri"] {
            assert_eq!(claims[k], ccxt_claims[k], "{name}: claim {k}");
        }
        assert_eq!(claims["iss"], "cdp");
        assert_eq!(ccxt_claims["iss"], "coinbase-cloud");
        let keys: Vec<&String> = claims.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            ["exp", "iss", "nbf", "sub", "uri"],
            "{name}: exactly these claims"
        );
        matched += 1;
        if matches!(
            class,
            EndpointClass::Trade | EndpointClass::Withdraw | EndpointClass::Transfer
        ) {
            api.parse_intent(class, &req)
                .unwrap_or_else(|e| panic!("{name}: parse_intent: {e}"));
        }
    }
    assert!(matched >= 8, "only {matched} vectors");
    eprintln!("coinbase: {matched}/{} ccxt vectors matched", vectors.len());
}
