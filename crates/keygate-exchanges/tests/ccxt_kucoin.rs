//! KuCoin signing cross-checked against CCXT: each vector is a request CCXT signed
//! (`testing/ccxt/kucoin_vectors.py`); keygate strips CCXT's auth, signs afresh with the same
//! key and time, and must produce the same URL, body and auth headers byte for byte.

mod common;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keygate_exchanges::{
    ApiCredentials, EndpointClass, Environment, ExchangeId, OutgoingRequest, SignContext,
};
use secrecy::SecretString;
use serde_json::Value;

const AUTH_HEADERS: [&str; 5] = [
    "kc-api-key",
    "kc-api-sign",
    "kc-api-timestamp",
    "kc-api-passphrase",
    "kc-api-key-version",
];

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("vector field {k}"))
}

#[test]
fn kucoin_matches_ccxt() {
    let Some(vectors) = common::ccxt_vectors("kucoin_vectors.py") else {
        return;
    };
    let api = ExchangeId::Kucoin.api();
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
        let method = Method::from_bytes(s(v, "method").as_bytes()).unwrap();
        let mut req = OutgoingRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            headers,
            body: Bytes::from(s(v, "body").to_string()),
        };
        let class = api.classify(&method, &path);
        assert!(
            !matches!(class, EndpointClass::Unknown | EndpointClass::Public),
            "{name}: {method} {path} classed {class:?}"
        );

        api.strip_auth(&mut req);
        for h in req.headers.keys() {
            assert!(
                !h.as_str().starts_with("kc-"),
                "{name}: {h} survived strip_auth"
            );
        }
        let creds = ApiCredentials {
            api_key: SecretString::from(s(v, "api_key")),
            api_secret: Some(SecretString::from(s(v, "secret"))),
            passphrase: Some(SecretString::from(s(v, "password"))),
            private_key: None,
        };
        let ctx = SignContext {
            now_ms: v["now_ms"].as_i64().unwrap(),
            nonce: v["nonce"].as_u64().unwrap(),
            random_nonce: [7; 16],
            environment: Environment::Production,
            host: "api.kucoin.com".into(),
            recv_window_ms: None,
        };
        api.sign(&mut req, &creds, &ctx).unwrap();

        assert_eq!(req.path, path, "{name}: path");
        assert_eq!(req.query, query, "{name}: query");
        assert_eq!(
            req.body,
            Bytes::from(s(v, "body").to_string()),
            "{name}: body"
        );
        let ccxt: Vec<(String, &str)> = v["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, val)| (k.to_ascii_lowercase(), val.as_str().unwrap()))
            .collect();
        for h in AUTH_HEADERS {
            let want = ccxt
                .iter()
                .find(|(k, _)| k == h)
                .unwrap_or_else(|| panic!("{name}: ccxt sent no {h}"))
                .1;
            assert_eq!(req.headers[h], want, "{name}: {h}");
        }
        // CCXT's broker attribution is deliberately not reproduced (see kucoin.rs).
        assert!(req.headers.get("kc-api-partner").is_none());
        assert!(req.headers.get("kc-api-partner-sign").is_none());
        matched += 1;
        if matches!(
            class,
            EndpointClass::Trade | EndpointClass::Withdraw | EndpointClass::Transfer
        ) {
            api.parse_intent(class, &req)
                .unwrap_or_else(|e| panic!("{name}: parse_intent: {e}"));
        }
    }
    assert!(matched >= 7, "only {matched} vectors");
    eprintln!("kucoin: {matched}/{} ccxt vectors matched", vectors.len());
}
