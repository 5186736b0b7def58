//! Gate v4 signing cross-checked against CCXT: each vector is a request CCXT signed
//! (`testing/ccxt/gate_vectors.py`); keygate strips CCXT's auth, signs afresh with the same
//! key and time, and must produce the same URL, body and auth headers byte for byte.

mod common;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keygate_exchanges::{
    ApiCredentials, EndpointClass, Environment, ExchangeId, OutgoingRequest, SignContext,
};
use secrecy::SecretString;
use serde_json::Value;

const AUTH_HEADERS: [&str; 3] = ["key", "sign", "timestamp"];

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or_else(|| panic!("vector field {k}"))
}

#[test]
fn gate_matches_ccxt() {
    let Some(vectors) = common::ccxt_vectors("gate_vectors.py") else {
        return;
    };
    let api = ExchangeId::Gate.api();
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
        for h in AUTH_HEADERS {
            assert!(
                req.headers.get(h).is_none(),
                "{name}: {h} survived strip_auth"
            );
        }
        let creds = ApiCredentials {
            api_key: SecretString::from(s(v, "api_key")),
            api_secret: Some(SecretString::from(s(v, "secret"))),
            passphrase: None,
            private_key: None,
        };
        let ctx = SignContext {
            now_ms: v["now_ms"].as_i64().unwrap(),
            nonce: v["nonce"].as_u64().unwrap(),
            random_nonce: [7; 16],
            environment: Environment::Production,
            host: "api.gateio.ws".into(),
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
        matched += 1;
        if matches!(
            class,
            EndpointClass::Trade | EndpointClass::Withdraw | EndpointClass::Transfer
        ) {
            api.parse_intent(class, &req)
                .unwrap_or_else(|e| panic!("{name}: parse_intent: {e}"));
        }
    }
    assert!(matched >= 9, "only {matched} vectors");
    eprintln!("gate: {matched}/{} ccxt vectors matched", vectors.len());
}
