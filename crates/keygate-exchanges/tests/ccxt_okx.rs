//! CCXT cross-check for OKX v5: every request `testing/ccxt/okx_vectors.py` captured from
//! CCXT, stripped and re-signed by keygate with the same key and time, must carry the same
//! path, query, body and auth headers byte for byte.

mod common;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keygate_exchanges::{
    ApiCredentials, EndpointClass, Environment, ExchangeId, OutgoingRequest, SignContext,
};
use secrecy::SecretString;
use serde_json::Value;

const EXCHANGE: ExchangeId = ExchangeId::Okx;
const SCRIPT: &str = "okx_vectors.py";

/// Headers that carry auth or select the environment; all must match CCXT's.
fn is_auth_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("ok-access-") || n == "x-simulated-trading" || n == "authorization"
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("vector field {k}"))
}

#[test]
fn okx_signs_like_ccxt() {
    let Some(vectors) = common::ccxt_vectors(SCRIPT) else {
        return;
    };
    let api = EXCHANGE.api();
    assert!(vectors.len() >= 8, "too few vectors: {}", vectors.len());
    for v in &vectors {
        let name = s(v, "name");
        let environment = match s(v, "environment") {
            "testnet" => Environment::Testnet,
            _ => Environment::Production,
        };
        let hosts = api.hosts();
        let base = match environment {
            Environment::Production => hosts.production,
            Environment::Testnet => hosts.testnet.expect("testnet host"),
        };
        let url = s(v, "url");
        let rest = url
            .strip_prefix(base)
            .unwrap_or_else(|| panic!("{name}: {url} is not on {base}"));
        let (path, query) = match rest.split_once('?') {
            Some((p, q)) => (p.to_string(), Some(q.to_string()).filter(|q| !q.is_empty())),
            None => (rest.to_string(), None),
        };

        // The client's request as it reaches keygate: CCXT's own headers (signed with the
        // same key) plus stale auth that must disappear.
        let mut headers = HeaderMap::new();
        for (k, val) in v["headers"].as_object().expect("headers") {
            headers.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(val.as_str().unwrap()).unwrap(),
            );
        }
        let expected = headers.clone();
        headers.insert("authorization", HeaderValue::from_static("Bearer stale"));
        headers.insert("ok-access-sign", HeaderValue::from_static("stale"));
        let mut req = OutgoingRequest {
            method: Method::from_bytes(s(v, "method").as_bytes()).unwrap(),
            path: path.clone(),
            query: query.clone(),
            headers,
            body: Bytes::from(s(v, "body").to_string()),
        };
        api.strip_auth(&mut req);
        assert!(
            req.headers.keys().all(|h| !is_auth_header(h.as_str())),
            "{name}: auth left after strip_auth"
        );

        let creds = ApiCredentials {
            api_key: SecretString::from(s(v, "api_key").to_string()),
            api_secret: Some(SecretString::from(s(v, "secret").to_string())),
            passphrase: v["password"]
                .as_str()
                .map(|p| SecretString::from(p.to_string())),
            private_key: None,
        };
        let ctx = SignContext {
            now_ms: v["now_ms"].as_i64().unwrap(),
            nonce: 0,
            random_nonce: [0; 16],
            environment,
            host: base.trim_start_matches("https://").to_string(),
            recv_window_ms: None,
        };
        api.sign(&mut req, &creds, &ctx)
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        assert_eq!(req.path, path, "{name}: path");
        assert_eq!(req.query, query, "{name}: query");
        assert_eq!(
            req.body,
            Bytes::from(s(v, "body").to_string()),
            "{name}: body"
        );
        let auth = |h: &HeaderMap| {
            let mut a: Vec<(String, String)> = h
                .iter()
                .filter(|(k, _)| is_auth_header(k.as_str()))
                .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap().to_string()))
                .collect();
            a.sort();
            a
        };
        assert_eq!(auth(&req.headers), auth(&expected), "{name}: auth headers");
        assert!(!auth(&expected).is_empty(), "{name}: ccxt sent no auth");

        // CCXT's requests are private and well-formed: keygate must class them and, for the
        // classes policy inspects, understand their bodies.
        let class = api.classify(&req.method, &req.path);
        assert!(
            !matches!(class, EndpointClass::Public | EndpointClass::Unknown),
            "{name}: {} {} classed {class:?}",
            req.method,
            req.path
        );
        if matches!(
            class,
            EndpointClass::Trade | EndpointClass::Withdraw | EndpointClass::Transfer
        ) {
            api.parse_intent(class, &req)
                .unwrap_or_else(|e| panic!("{name}: parse_intent: {e}"));
        }
        eprintln!("{name}: matches ccxt");
    }
    eprintln!("{} {} vectors matched ccxt", vectors.len(), EXCHANGE);
}
