//! Cross-check against CCXT: every request `testing/ccxt/binance_vectors.py` captures from
//! CCXT (HMAC, Ed25519 and RSA keys; spot and USD-M) is fed to keygate as a client would
//! send it (with a placeholder API key), stripped, re-signed with the same key and time,
//! and must come out byte-identical: path, query, body and headers.

mod common;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method};
use keygate_exchanges::{
    ApiCredentials, EndpointClass, Environment, ExchangeId, OutgoingRequest, RequestIntent,
    SignContext,
};
use secrecy::SecretString;

fn split_url(url: &str) -> (String, String, Option<String>) {
    let rest = url.strip_prefix("https://").expect("https URL");
    let (host, path_query) = rest.split_at(rest.find('/').expect("a path"));
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (path_query.to_string(), None),
    };
    (host.to_string(), path, query)
}

fn headers_of(v: &serde_json::Value) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, val) in v.as_object().expect("headers object") {
        h.insert(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(val.as_str().unwrap()).unwrap(),
        );
    }
    h
}

#[test]
fn ccxt_binance_vectors_match_byte_for_byte() {
    let Some(vectors) = common::ccxt_vectors("binance_vectors.py") else {
        return;
    };
    assert!(vectors.len() >= 20, "expected the full vector set");
    let mut matched = 0;
    let mut seen_kinds = std::collections::BTreeSet::new();
    for v in &vectors {
        let name = v["name"].as_str().unwrap();
        let exchange: ExchangeId = v["exchange"].as_str().unwrap().parse().unwrap();
        let api = exchange.api();
        let (host, path, query) = split_url(v["url"].as_str().unwrap());
        assert!(
            api.hosts().production.ends_with(&host),
            "{name}: host {host}"
        );
        let method = Method::from_bytes(v["method"].as_str().unwrap().as_bytes()).unwrap();
        let body = v["body"].as_str().unwrap_or("").to_string();
        let want_headers = headers_of(&v["headers"]);

        // What a stock CCXT client pointed at keygate sends: its own (placeholder) key.
        let mut client_headers = want_headers.clone();
        client_headers.insert("x-mbx-apikey", HeaderValue::from_static("placeholder"));
        let mut req = OutgoingRequest {
            method: method.clone(),
            path: path.clone(),
            query: query.clone(),
            headers: client_headers,
            body: Bytes::from(body.clone()),
        };

        let class = api.classify(&method, &path);
        assert!(
            !matches!(class, EndpointClass::Unknown | EndpointClass::Public),
            "{name}: {method} {path} classified {class:?}"
        );
        if matches!(
            class,
            EndpointClass::Trade | EndpointClass::Withdraw | EndpointClass::Transfer
        ) {
            let intent = api
                .parse_intent(class, &req)
                .unwrap_or_else(|e| panic!("{name}: intent: {e}"));
            assert_ne!(intent, RequestIntent::None, "{name}");
        }

        api.strip_auth(&mut req);
        assert!(req.headers.get("x-mbx-apikey").is_none(), "{name}");
        for part in [
            req.query.as_deref().unwrap_or(""),
            &String::from_utf8_lossy(&req.body),
        ] {
            assert!(
                !part.contains("signature="),
                "{name}: signature left in {part}"
            );
            assert!(
                !part.contains("timestamp="),
                "{name}: timestamp left in {part}"
            );
        }

        let secret = v["secret"].as_str().unwrap();
        let is_pem = secret.contains("PRIVATE KEY");
        let creds = ApiCredentials {
            api_key: SecretString::from(v["api_key"].as_str().unwrap().to_string()),
            api_secret: (!is_pem).then(|| SecretString::from(secret.to_string())),
            passphrase: None,
            private_key: is_pem.then(|| SecretString::from(secret.to_string())),
        };
        let ctx = SignContext {
            now_ms: v["now_ms"].as_i64().unwrap(),
            nonce: 0,
            random_nonce: [0; 16],
            environment: Environment::Production,
            host: host.clone(),
            recv_window_ms: Some(5000), // client's recvWindow wins
        };
        api.sign(&mut req, &creds, &ctx)
            .unwrap_or_else(|e| panic!("{name}: sign: {e}"));

        assert_eq!(req.path, path, "{name}: path");
        assert_eq!(req.query, query, "{name}: query");
        assert_eq!(
            String::from_utf8(req.body.to_vec()).unwrap(),
            body,
            "{name}: body"
        );
        assert_eq!(req.headers, want_headers, "{name}: headers");
        seen_kinds.insert(if is_pem {
            if secret.len() > 120 {
                "rsa"
            } else {
                "ed25519"
            }
        } else {
            "hmac"
        });
        matched += 1;
    }
    assert_eq!(
        seen_kinds.into_iter().collect::<Vec<_>>(),
        ["ed25519", "hmac", "rsa"]
    );
    eprintln!(
        "ccxt_binance: {matched}/{} vectors byte-identical",
        vectors.len()
    );
    assert_eq!(matched, vectors.len());
}
