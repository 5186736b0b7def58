//! Requests signed by hand, from each exchange's documented formula, against the mock.
//! Each exchange: a correct request passes; a wrong secret or placeholder key fails with
//! the exchange's own error body; a body changed after signing fails.

mod common;

use std::time::{Duration, Instant};

use common::*;
use keygate_mock_exchange::{Fault, MockConfig, MockExchange, MockKey};
use serde_json::{json, Value};

// ---------------------------------------------------------------- Binance

fn binance_signed(query: &str, secret: &str) -> String {
    format!(
        "{query}&signature={}",
        hex::encode(hmac256(secret.as_bytes(), query.as_bytes()))
    )
}

#[tokio::test]
async fn binance_doc_example_signature_passes() {
    // The worked example in Binance's "SIGNED endpoint examples for POST /api/v3/order".
    let key = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A";
    let secret = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j";
    let mock = MockExchange::start(MockConfig {
        keys: vec![MockKey::hmac("binance", key, secret)],
    })
    .await;
    mock.set_now_ms(Some(1_499_827_319_559 + 100));
    let body = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
    let sig = "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71";
    let (status, _, v) = send(
        client()
            .post(format!("{}/api/v3/order", mock.base_url()))
            .header("X-MBX-APIKEY", key)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("{body}&signature={sig}")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["symbol"], "LTCBTC");
    assert_eq!(v["status"], "NEW");
    assert_eq!(mock.count_verified(), 1);

    // Same request, signature in the query and the body split: totalParams is the
    // concatenation, so a signature over the pieces joined with "&" must fail.
    let (q, b) = body.split_at(60);
    let wrong = hex::encode(hmac256(secret.as_bytes(), format!("{q}&{b}").as_bytes()));
    let (status, _, v) = send(
        client()
            .post(format!(
                "{}/api/v3/order?{q}&signature={wrong}",
                mock.base_url()
            ))
            .header("X-MBX-APIKEY", key)
            .body(b.to_string()),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(
        v,
        json!({"code": -1022, "msg": "Signature for this request is not valid."})
    );
}

#[tokio::test]
async fn binance_hmac_get_and_post() {
    let mock = start_all().await;
    let q = format!("timestamp={}&recvWindow=5000", now_ms());
    let (status, headers, v) = send(
        client()
            .get(format!(
                "{}/api/v3/account?{}",
                mock.base_url(),
                binance_signed(&q, BIN_SECRET)
            ))
            .header("X-MBX-APIKEY", BIN_KEY),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["balances"][0]["asset"], "USDT");
    assert!(headers.get("x-mbx-used-weight-1m").is_some());

    // POST with the signature in the form body (CCXT's way).
    let body = format!(
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=40000&timestamp={}",
        now_ms()
    );
    let signed = binance_signed(&body, BIN_SECRET);
    let (status, _, v) = send(
        client()
            .post(format!("{}/api/v3/order", mock.base_url()))
            .header("X-MBX-APIKEY", BIN_KEY)
            .body(signed.clone()),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["origQty"], "0.01000000");

    // Tampered body: quantity changed after signing.
    let (status, _, v) = send(
        client()
            .post(format!("{}/api/v3/order", mock.base_url()))
            .header("X-MBX-APIKEY", BIN_KEY)
            .body(signed.replace("quantity=0.01", "quantity=10")),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(v["code"], -1022);

    // Wrong secret.
    let (status, _, v) = send(
        client()
            .get(format!(
                "{}/api/v3/account?{}",
                mock.base_url(),
                binance_signed(&q, "wrong")
            ))
            .header("X-MBX-APIKEY", BIN_KEY),
    )
    .await;
    assert_eq!((status, v["code"].as_i64()), (400, Some(-1022)));

    // Placeholder key (what a stock CCXT client pointed at keygate would send).
    let (status, _, v) = send(
        client()
            .get(format!(
                "{}/api/v3/account?{}",
                mock.base_url(),
                binance_signed(&q, "placeholder")
            ))
            .header("X-MBX-APIKEY", "placeholder"),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        v,
        json!({"code": -2015, "msg": "Invalid API-key, IP, or permissions for action."})
    );

    // Stale timestamp.
    let old = format!("timestamp={}", now_ms() - 10_000);
    let (status, _, v) = send(
        client()
            .get(format!(
                "{}/api/v3/account?{}",
                mock.base_url(),
                binance_signed(&old, BIN_SECRET)
            ))
            .header("X-MBX-APIKEY", BIN_KEY),
    )
    .await;
    assert_eq!((status, v["code"].as_i64()), (400, Some(-1021)));

    let recs = mock.requests();
    assert_eq!(recs.len(), 6);
    assert_eq!(recs.iter().filter(|r| r.verified).count(), 2);
    assert!(recs[2]
        .rejection
        .as_deref()
        .unwrap()
        .contains("signature mismatch"));
    assert_eq!(recs[4].api_key.as_deref(), Some("placeholder"));
}

#[tokio::test]
async fn binance_ed25519_and_rsa_keys() {
    use ed25519_dalek::pkcs8::EncodePublicKey as _;
    use ed25519_dalek::Signer as _;
    use rsa::signature::SignatureEncoding as _;

    let ed = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
    let ed_pem = ed
        .verifying_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    let rsa_sk = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let rsa_pem = rsa_sk
        .to_public_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    let mock = MockExchange::start(MockConfig {
        keys: vec![
            MockKey::public_key("binance", "edKey", ed_pem),
            MockKey::public_key("binance", "rsaKey", rsa_pem),
        ],
    })
    .await;
    let enc =
        |sig: &[u8]| url::form_urlencoded::byte_serialize(b64(sig).as_bytes()).collect::<String>();

    let q = format!("timestamp={}", now_ms());
    let sig = enc(&ed.sign(q.as_bytes()).to_bytes());
    let (status, _, v) = send(
        client()
            .get(format!(
                "{}/api/v3/account?{q}&signature={sig}",
                mock.base_url()
            ))
            .header("X-MBX-APIKEY", "edKey"),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    // Tampered query.
    let (status, _, v) = send(
        client()
            .get(format!(
                "{}/api/v3/account?{q}1&signature={sig}",
                mock.base_url()
            ))
            .header("X-MBX-APIKEY", "edKey"),
    )
    .await;
    assert_eq!((status, v["code"].as_i64()), (400, Some(-1022)));

    // RSA, POST with the signature in the body; USD-M accepts the same key.
    let body = format!(
        "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.002&timestamp={}",
        now_ms()
    );
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(rsa_sk);
    let sig = enc(&signer.sign(body.as_bytes()).to_vec());
    let (status, _, v) = send(
        client()
            .post(format!("{}/fapi/v1/order", mock.base_url()))
            .header("X-MBX-APIKEY", "rsaKey")
            .body(format!("{body}&signature={sig}")),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["side"], "SELL");
    assert_eq!(mock.count_verified(), 2);
}

#[tokio::test]
async fn binanceusdm_balance_and_account() {
    let mock = start_all().await;
    for path in ["/fapi/v2/balance", "/fapi/v2/account", "/fapi/v3/account"] {
        let q = format!("timestamp={}", now_ms());
        let (status, headers, v) = send(
            client()
                .get(format!(
                    "{}{path}?{}",
                    mock.base_url(),
                    binance_signed(&q, BIN_SECRET)
                ))
                .header("X-MBX-APIKEY", BIN_KEY),
        )
        .await;
        assert_eq!(status, 200, "{path}: {v}");
        assert!(headers.get("x-mbx-used-weight-1m").is_some());
    }
    let recs = mock.requests();
    assert!(recs
        .iter()
        .all(|r| r.exchange == Some("binanceusdm") && r.verified));
}

// ---------------------------------------------------------------- OKX

fn okx_headers(
    rb: reqwest::RequestBuilder,
    method: &str,
    path_q: &str,
    body: &str,
    key: &str,
    secret: &str,
    pass: &str,
) -> reqwest::RequestBuilder {
    let ts = iso_now();
    let sign = b64(&hmac256(
        secret.as_bytes(),
        format!("{ts}{method}{path_q}{body}").as_bytes(),
    ));
    rb.header("OK-ACCESS-KEY", key)
        .header("OK-ACCESS-SIGN", sign)
        .header("OK-ACCESS-TIMESTAMP", ts)
        .header("OK-ACCESS-PASSPHRASE", pass)
}

#[tokio::test]
async fn okx_sign() {
    let mock = start_all().await;
    let url = |p: &str| format!("{}{p}", mock.base_url());
    let pq = "/api/v5/account/balance?ccy=BTC,USDT";
    let (status, _, v) = send(okx_headers(
        client().get(url(pq)),
        "GET",
        pq,
        "",
        OKX_KEY,
        OKX_SECRET,
        OKX_PASS,
    ))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], "0");
    assert!(v["data"][0]["details"].as_array().unwrap().len() >= 2);

    let body = r#"{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit","px":"40000","sz":"0.01","clOrdId":"b15"}"#;
    let p = "/api/v5/trade/order";
    let (status, _, v) = send(
        okx_headers(
            client().post(url(p)),
            "POST",
            p,
            body,
            OKX_KEY,
            OKX_SECRET,
            OKX_PASS,
        )
        .header("x-simulated-trading", "1")
        .header("content-type", "application/json")
        .body(body),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"][0]["clOrdId"], "b15");
    assert_eq!(v["data"][0]["sCode"], "0");

    // Tampered body.
    let (status, _, v) = send(
        okx_headers(
            client().post(url(p)),
            "POST",
            p,
            body,
            OKX_KEY,
            OKX_SECRET,
            OKX_PASS,
        )
        .body(body.replace("0.01", "1")),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        v,
        json!({"code": "50113", "msg": "Invalid Sign", "data": []})
    );
    // Wrong secret / wrong passphrase / placeholder key.
    let (status, _, v) = send(okx_headers(
        client().get(url(pq)),
        "GET",
        pq,
        "",
        OKX_KEY,
        "nope",
        OKX_PASS,
    ))
    .await;
    assert_eq!((status, v["code"].as_str()), (401, Some("50113")));
    let (_, _, v) = send(okx_headers(
        client().get(url(pq)),
        "GET",
        pq,
        "",
        OKX_KEY,
        OKX_SECRET,
        "nope",
    ))
    .await;
    assert_eq!(v["code"], "50105");
    let (_, _, v) = send(okx_headers(
        client().get(url(pq)),
        "GET",
        pq,
        "",
        "placeholder",
        OKX_SECRET,
        OKX_PASS,
    ))
    .await;
    assert_eq!(v["code"], "50111");
    // Query left out of the prehash.
    let (_, _, v) = send(okx_headers(
        client().get(url(pq)),
        "GET",
        "/api/v5/account/balance",
        "",
        OKX_KEY,
        OKX_SECRET,
        OKX_PASS,
    ))
    .await;
    assert_eq!(v["code"], "50113");
    assert_eq!(mock.count_verified(), 2);
}

// ---------------------------------------------------------------- Bybit

fn bybit_headers(
    rb: reqwest::RequestBuilder,
    payload: &str,
    key: &str,
    secret: &str,
) -> reqwest::RequestBuilder {
    let ts = now_ms().to_string();
    let sign = hex::encode(hmac256(
        secret.as_bytes(),
        format!("{ts}{key}5000{payload}").as_bytes(),
    ));
    rb.header("X-BAPI-API-KEY", key)
        .header("X-BAPI-TIMESTAMP", ts)
        .header("X-BAPI-RECV-WINDOW", "5000")
        .header("X-BAPI-SIGN", sign)
}

#[tokio::test]
async fn bybit_sign() {
    let mock = start_all().await;
    let q = "accountType=UNIFIED";
    let url = format!("{}/v5/account/wallet-balance?{q}", mock.base_url());
    let (status, headers, v) = send(bybit_headers(
        client().get(&url),
        q,
        BYBIT_KEY,
        BYBIT_SECRET,
    ))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["retCode"], 0);
    assert_eq!(v["result"]["list"][0]["coin"][0]["coin"], "USDT");
    assert!(headers.get("x-bapi-limit-status").is_some());

    let body = r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.01","price":"40000","orderLinkId":"x1"}"#;
    let ourl = format!("{}/v5/order/create", mock.base_url());
    let (status, _, v) =
        send(bybit_headers(client().post(&ourl), body, BYBIT_KEY, BYBIT_SECRET).body(body)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["result"]["orderLinkId"], "x1");

    let (status, _, v) = send(
        bybit_headers(client().post(&ourl), body, BYBIT_KEY, BYBIT_SECRET)
            .body(body.replace("0.01", "9")),
    )
    .await;
    assert_eq!((status, v["retCode"].as_i64()), (200, Some(10004)));
    assert!(v["retMsg"].as_str().unwrap().starts_with("error sign!"));
    let (_, _, v) = send(bybit_headers(client().get(&url), q, BYBIT_KEY, "wrong")).await;
    assert_eq!(v["retCode"], 10004);
    let (status, _, v) = send(bybit_headers(
        client().get(&url),
        q,
        "placeholder",
        BYBIT_SECRET,
    ))
    .await;
    assert_eq!((status, v["retCode"].as_i64()), (401, Some(10003)));

    mock.set_rate_limit_used("bybit", 15);
    let (_, headers, _) = send(bybit_headers(
        client().get(&url),
        q,
        BYBIT_KEY,
        BYBIT_SECRET,
    ))
    .await;
    assert_eq!(headers["x-bapi-limit-status"], "5");
    assert_eq!(headers["x-bapi-limit"], "20");
}

// ---------------------------------------------------------------- Kraken

fn kraken_sign(path: &str, nonce: &str, body: &str, secret_b64: &str) -> String {
    use sha2::Digest as _;
    let mut inner = sha2::Sha256::new();
    inner.update(nonce.as_bytes());
    inner.update(body.as_bytes());
    let mut msg = path.as_bytes().to_vec();
    msg.extend_from_slice(&inner.finalize());
    b64(&hmac512(&b64_decode(secret_b64), &msg))
}

#[tokio::test]
async fn kraken_doc_example_signature_passes() {
    // The worked example in Kraken's "Spot REST authentication" guide.
    let secret =
        "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==";
    let body = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25";
    let expected =
        "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ==";
    assert_eq!(
        kraken_sign("/0/private/AddOrder", "1616492376594", body, secret),
        expected
    );
    let mock = MockExchange::start(MockConfig {
        keys: vec![MockKey::hmac("kraken", "docKey", secret)],
    })
    .await;
    let (status, _, v) = send(
        client()
            .post(format!("{}/0/private/AddOrder", mock.base_url()))
            .header("API-Key", "docKey")
            .header("API-Sign", expected)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(v["error"], json!([]), "{v}");
    assert_eq!(
        v["result"]["descr"]["order"],
        "buy 1.25 XBTUSD @ limit 37500"
    );
    assert_eq!(mock.kraken_last_nonce("docKey"), Some(1_616_492_376_594));
}

#[tokio::test]
async fn kraken_sign_and_nonce() {
    let mock = start_all().await;
    let url = format!("{}/0/private/Balance", mock.base_url());
    let post = |nonce: u64, secret: &str, key: &str, tamper: bool| {
        let body = format!("nonce={nonce}");
        let sig = kraken_sign("/0/private/Balance", &nonce.to_string(), &body, secret);
        client()
            .post(&url)
            .header("API-Key", key)
            .header("API-Sign", sig)
            .body(if tamper {
                format!("{body}&asset=XBT")
            } else {
                body
            })
    };
    let n = now_ms() as u64 * 1000;
    let (_, _, v) = send(post(n, KRAKEN_SECRET, KRAKEN_KEY, false)).await;
    assert_eq!(v["error"], json!([]), "{v}");
    assert_eq!(v["result"]["ZUSD"], "10000.0000");
    // Replay: same nonce again.
    let (status, _, v) = send(post(n, KRAKEN_SECRET, KRAKEN_KEY, false)).await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"error": ["EAPI:Invalid nonce"]}));
    // Smaller nonce.
    let (_, _, v) = send(post(n - 1, KRAKEN_SECRET, KRAKEN_KEY, false)).await;
    assert_eq!(v, json!({"error": ["EAPI:Invalid nonce"]}));
    // Wrong secret / tampered body / placeholder key; none may consume a nonce.
    let other = b64(&[9u8; 64]);
    let (_, _, v) = send(post(n + 1, &other, KRAKEN_KEY, false)).await;
    assert_eq!(v, json!({"error": ["EAPI:Invalid signature"]}));
    let (_, _, v) = send(post(n + 1, KRAKEN_SECRET, KRAKEN_KEY, true)).await;
    assert_eq!(v, json!({"error": ["EAPI:Invalid signature"]}));
    let (_, _, v) = send(post(n + 1, KRAKEN_SECRET, "placeholder", false)).await;
    assert_eq!(v, json!({"error": ["EAPI:Invalid key"]}));
    assert_eq!(mock.kraken_last_nonce(KRAKEN_KEY), Some(n));
    // BalanceEx with a JSON body (Kraken accepts either).
    let body = format!(r#"{{"nonce":"{}"}}"#, n + 5);
    let sig = kraken_sign(
        "/0/private/BalanceEx",
        &(n + 5).to_string(),
        &body,
        KRAKEN_SECRET,
    );
    let (_, _, v) = send(
        client()
            .post(format!("{}/0/private/BalanceEx", mock.base_url()))
            .header("API-Key", KRAKEN_KEY)
            .header("API-Sign", sig)
            .header("content-type", "application/json")
            .body(body),
    )
    .await;
    assert_eq!(v["result"]["XXBT"]["hold_trade"], "0.1000000000", "{v}");
}

// ---------------------------------------------------------------- KuCoin

fn kucoin_headers(
    rb: reqwest::RequestBuilder,
    method: &str,
    endpoint: &str,
    body: &str,
    key: &str,
    secret: &str,
    pass: &str,
) -> reqwest::RequestBuilder {
    let ts = now_ms().to_string();
    let sign = b64(&hmac256(
        secret.as_bytes(),
        format!("{ts}{method}{endpoint}{body}").as_bytes(),
    ));
    let pass = b64(&hmac256(secret.as_bytes(), pass.as_bytes()));
    rb.header("KC-API-KEY", key)
        .header("KC-API-SIGN", sign)
        .header("KC-API-TIMESTAMP", ts)
        .header("KC-API-PASSPHRASE", pass)
        .header("KC-API-KEY-VERSION", "2")
}

#[tokio::test]
async fn kucoin_sign() {
    let mock = start_all().await;
    let ep = "/api/v1/accounts?type=trade";
    let url = format!("{}{ep}", mock.base_url());
    let (status, headers, v) = send(kucoin_headers(
        client().get(&url),
        "GET",
        ep,
        "",
        KC_KEY,
        KC_SECRET,
        KC_PASS,
    ))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], "200000");
    assert_eq!(v["data"][0]["type"], "trade");
    assert!(headers.get("gw-ratelimit-remaining").is_some());

    let body = r#"{"clientOid":"c1","side":"buy","symbol":"BTC-USDT","type":"limit","price":"40000","size":"0.01"}"#;
    for ep in ["/api/v1/orders", "/api/v1/hf/orders"] {
        let url = format!("{}{ep}", mock.base_url());
        let (status, _, v) = send(
            kucoin_headers(
                client().post(&url),
                "POST",
                ep,
                body,
                KC_KEY,
                KC_SECRET,
                KC_PASS,
            )
            .header("content-type", "application/json")
            .body(body),
        )
        .await;
        assert_eq!(status, 200, "{v}");
        assert!(v["data"]["orderId"].is_string());
        let (status, _, v) = send(
            kucoin_headers(
                client().post(&url),
                "POST",
                ep,
                body,
                KC_KEY,
                KC_SECRET,
                KC_PASS,
            )
            .body(body.replace("0.01", "5")),
        )
        .await;
        assert_eq!(status, 401);
        assert_eq!(v, json!({"code": "400005", "msg": "Invalid KC-API-SIGN"}));
    }
    let (_, _, v) = send(kucoin_headers(
        client().get(&url),
        "GET",
        ep,
        "",
        KC_KEY,
        "wrong",
        KC_PASS,
    ))
    .await;
    // A wrong secret also breaks the derived passphrase, which is checked first.
    assert_eq!(v["code"], "400004");
    let (_, _, v) = send(kucoin_headers(
        client().get(&url),
        "GET",
        ep,
        "",
        "placeholder",
        KC_SECRET,
        KC_PASS,
    ))
    .await;
    assert_eq!(v["code"], "400003");
    // Plaintext passphrase while claiming key version 2.
    let ts = now_ms().to_string();
    let sign = b64(&hmac256(
        KC_SECRET.as_bytes(),
        format!("{ts}GET{ep}").as_bytes(),
    ));
    let plain = client()
        .get(&url)
        .header("KC-API-KEY", KC_KEY)
        .header("KC-API-SIGN", &sign)
        .header("KC-API-TIMESTAMP", &ts)
        .header("KC-API-PASSPHRASE", KC_PASS);
    let (_, _, v) = send(plain.try_clone().unwrap().header("KC-API-KEY-VERSION", "2")).await;
    assert_eq!(v["code"], "400004");
    // The same with key version 1 (plaintext passphrase) passes.
    let (status, _, v) = send(plain.header("KC-API-KEY-VERSION", "1")).await;
    assert_eq!(status, 200, "{v}");
    // An auth header sent twice (a gateway that appended instead of replacing) fails.
    let (status, _, v) = send(
        kucoin_headers(
            client().get(&url),
            "GET",
            ep,
            "",
            KC_KEY,
            KC_SECRET,
            KC_PASS,
        )
        .header("KC-API-SIGN", "AAAA"),
    )
    .await;
    assert_eq!((status, v["code"].as_str()), (401, Some("400001")));
    // /api/v3 with KuCoin headers is KuCoin, not Binance.
    let ep = "/api/v3/withdrawals";
    let body = r#"{"currency":"USDT","toAddress":"T9zz","amount":"10","withdrawType":"ADDRESS","chain":"trx"}"#;
    let (status, _, v) = send(
        kucoin_headers(
            client().post(format!("{}{ep}", mock.base_url())),
            "POST",
            ep,
            body,
            KC_KEY,
            KC_SECRET,
            KC_PASS,
        )
        .body(body),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert!(v["data"]["withdrawalId"].is_string());
}

// ---------------------------------------------------------------- Bitget

fn bitget_headers(
    rb: reqwest::RequestBuilder,
    method: &str,
    path_q: &str,
    body: &str,
    key: &str,
    secret: &str,
    pass: &str,
) -> reqwest::RequestBuilder {
    let ts = now_ms().to_string();
    let sign = b64(&hmac256(
        secret.as_bytes(),
        format!("{ts}{method}{path_q}{body}").as_bytes(),
    ));
    rb.header("ACCESS-KEY", key)
        .header("ACCESS-SIGN", sign)
        .header("ACCESS-TIMESTAMP", ts)
        .header("ACCESS-PASSPHRASE", pass)
        .header("locale", "en-US")
}

#[tokio::test]
async fn bitget_sign() {
    let mock = start_all().await;
    let pq = "/api/v2/spot/account/assets?coin=USDT";
    let url = format!("{}{pq}", mock.base_url());
    let (status, _, v) = send(bitget_headers(
        client().get(&url),
        "GET",
        pq,
        "",
        BG_KEY,
        BG_SECRET,
        BG_PASS,
    ))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["code"], "00000");
    assert_eq!(v["data"][0]["coin"], "USDT");

    let p = "/api/v2/spot/trade/place-order";
    let body = r#"{"symbol":"BTCUSDT","side":"buy","orderType":"limit","force":"gtc","price":"40000","size":"0.01","clientOid":"k1"}"#;
    let url = format!("{}{p}", mock.base_url());
    let (status, _, v) = send(
        bitget_headers(
            client().post(&url),
            "POST",
            p,
            body,
            BG_KEY,
            BG_SECRET,
            BG_PASS,
        )
        .body(body),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["data"]["clientOid"], "k1");
    let (status, _, v) = send(
        bitget_headers(
            client().post(&url),
            "POST",
            p,
            body,
            BG_KEY,
            BG_SECRET,
            BG_PASS,
        )
        .body(body.replace("buy", "sell")),
    )
    .await;
    assert_eq!(
        (status, v["code"].as_str(), v["msg"].as_str()),
        (400, Some("40009"), Some("sign signature error"))
    );
    let (_, _, v) = send(
        bitget_headers(
            client().post(&url),
            "POST",
            p,
            body,
            BG_KEY,
            "wrong",
            BG_PASS,
        )
        .body(body),
    )
    .await;
    assert_eq!(v["code"], "40009");
    let (_, _, v) = send(
        bitget_headers(
            client().post(&url),
            "POST",
            p,
            body,
            "placeholder",
            BG_SECRET,
            BG_PASS,
        )
        .body(body),
    )
    .await;
    assert_eq!(v["code"], "40006");
    let (_, _, v) = send(
        bitget_headers(
            client().post(&url),
            "POST",
            p,
            body,
            BG_KEY,
            BG_SECRET,
            "nope",
        )
        .body(body),
    )
    .await;
    assert_eq!(v["code"], "40012");
}

// ---------------------------------------------------------------- Gate

fn gate_headers(
    rb: reqwest::RequestBuilder,
    method: &str,
    path: &str,
    query: &str,
    body: &str,
    key: &str,
    secret: &str,
) -> reqwest::RequestBuilder {
    use sha2::Digest as _;
    let ts = (now_ms() / 1000).to_string();
    let body_hash = hex::encode(sha2::Sha512::digest(body.as_bytes()));
    let msg = format!("{method}\n{path}\n{query}\n{body_hash}\n{ts}");
    rb.header("KEY", key).header("Timestamp", ts).header(
        "SIGN",
        hex::encode(hmac512(secret.as_bytes(), msg.as_bytes())),
    )
}

#[tokio::test]
async fn gate_sign() {
    let mock = start_all().await;
    let (path, query) = ("/api/v4/spot/accounts", "currency=BTC");
    let url = format!("{}{path}?{query}", mock.base_url());
    let (status, headers, v) = send(gate_headers(
        client().get(&url),
        "GET",
        path,
        query,
        "",
        GATE_KEY,
        GATE_SECRET,
    ))
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(
        v,
        json!([{"currency": "BTC", "available": "0.50000000", "locked": "0.10000000", "update_id": 1}])
    );
    assert!(headers.get("x-gate-ratelimit-requests-remain").is_some());

    let path = "/api/v4/spot/orders";
    let body = r#"{"text":"t-abc","currency_pair":"BTC_USDT","type":"limit","account":"spot","side":"buy","amount":"0.001","price":"40000"}"#;
    let url = format!("{}{path}", mock.base_url());
    let (status, _, v) = send(
        gate_headers(
            client().post(&url),
            "POST",
            path,
            "",
            body,
            GATE_KEY,
            GATE_SECRET,
        )
        .body(body),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["text"], "t-abc");
    assert_eq!(v["status"], "open");
    let (status, _, v) = send(
        gate_headers(
            client().post(&url),
            "POST",
            path,
            "",
            body,
            GATE_KEY,
            GATE_SECRET,
        )
        .body(body.replace("0.001", "1")),
    )
    .await;
    assert_eq!(status, 401);
    assert_eq!(
        v,
        json!({"label": "INVALID_SIGNATURE", "message": "Signature mismatch"})
    );
    let (_, _, v) = send(
        gate_headers(
            client().post(&url),
            "POST",
            path,
            "",
            body,
            GATE_KEY,
            "wrong",
        )
        .body(body),
    )
    .await;
    assert_eq!(v["label"], "INVALID_SIGNATURE");
    let (_, _, v) = send(
        gate_headers(
            client().post(&url),
            "POST",
            path,
            "",
            body,
            "placeholder",
            GATE_SECRET,
        )
        .body(body),
    )
    .await;
    assert_eq!(v["label"], "INVALID_KEY");
}

// ---------------------------------------------------------------- Coinbase

#[tokio::test]
async fn coinbase_jwt_auth() {
    let mock = start_all().await;
    let host = mock.host();
    let path = "/api/v3/brokerage/accounts";
    let url = format!("{}{path}", mock.base_url());
    let good = coinbase_jwt(
        &cb_signing_key(),
        CB_KEY,
        &format!("GET {host}{path}"),
        now_ms() / 1000,
    );
    let (status, _, v) = send(client().get(&url).bearer_auth(&good)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["accounts"][0]["available_balance"]["currency"], "USDT");

    // The production host in `uri` while talking to the mock: rejected.
    let wrong_uri = coinbase_jwt(
        &cb_signing_key(),
        CB_KEY,
        &format!("GET api.coinbase.com{path}"),
        now_ms() / 1000,
    );
    let (status, _, v) = send(client().get(&url).bearer_auth(&wrong_uri)).await;
    assert_eq!(status, 401);
    assert!(v["error_details"].as_str().unwrap().contains("uri claim"));
    // Method in `uri` does not match.
    let post_uri = coinbase_jwt(
        &cb_signing_key(),
        CB_KEY,
        &format!("POST {host}{path}"),
        now_ms() / 1000,
    );
    let (status, _, _) = send(client().get(&url).bearer_auth(&post_uri)).await;
    assert_eq!(status, 401);
    // Another P-256 key signs for our key name.
    let other = p256::ecdsa::SigningKey::from_bytes(&[3u8; 32].into()).unwrap();
    let forged = coinbase_jwt(
        &other,
        CB_KEY,
        &format!("GET {host}{path}"),
        now_ms() / 1000,
    );
    let (status, _, v) = send(client().get(&url).bearer_auth(&forged)).await;
    assert_eq!(status, 401);
    assert_eq!(v["error_details"], "ES256 signature mismatch");
    // Expired.
    let old = coinbase_jwt(
        &cb_signing_key(),
        CB_KEY,
        &format!("GET {host}{path}"),
        now_ms() / 1000 - 600,
    );
    let (status, _, _) = send(client().get(&url).bearer_auth(&old)).await;
    assert_eq!(status, 401);
    // Placeholder key name.
    let ph = coinbase_jwt(
        &cb_signing_key(),
        "placeholder",
        &format!("GET {host}{path}"),
        now_ms() / 1000,
    );
    let (status, _, _) = send(client().get(&url).bearer_auth(&ph)).await;
    assert_eq!(status, 401);

    // Order creation; the JWT does not cover the body.
    let opath = "/api/v3/brokerage/orders";
    let body = json!({"client_order_id": "cb1", "product_id": "BTC-USD", "side": "BUY",
        "order_configuration": {"limit_limit_gtc": {"base_size": "0.001", "limit_price": "40000"}}});
    let jwt = coinbase_jwt(
        &cb_signing_key(),
        CB_KEY,
        &format!("POST {host}{opath}"),
        now_ms() / 1000,
    );
    let (status, _, v) = send(
        client()
            .post(format!("{}{opath}", mock.base_url()))
            .bearer_auth(&jwt)
            .json(&body),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["success_response"]["client_order_id"], "cb1");
    // key_permissions, and the v2 API.
    for (p, field) in [
        ("/api/v3/brokerage/key_permissions", "can_trade"),
        ("/v2/accounts", "data"),
    ] {
        let jwt = coinbase_jwt(
            &cb_signing_key(),
            CB_KEY,
            &format!("GET {host}{p}"),
            now_ms() / 1000,
        );
        let (status, _, v) = send(
            client()
                .get(format!("{}{p}", mock.base_url()))
                .bearer_auth(&jwt),
        )
        .await;
        assert_eq!(status, 200, "{p}: {v}");
        assert!(v.get(field).is_some());
    }
    assert_eq!(mock.count_verified(), 4);
}

// ---------------------------------------------------------------- shared behaviour

#[tokio::test]
async fn public_time_endpoints() {
    let mock = start_all().await;
    mock.set_now_ms(Some(1_700_000_000_123));
    type Check = fn(&Value) -> bool;
    let cases: [(&str, Check); 10] = [
        ("/api/v3/time", |v| v["serverTime"] == 1_700_000_000_123_i64),
        ("/fapi/v1/time", |v| {
            v["serverTime"] == 1_700_000_000_123_i64
        }),
        ("/api/v5/public/time", |v| {
            v["data"][0]["ts"] == "1700000000123"
        }),
        ("/v5/market/time", |v| {
            v["result"]["timeSecond"] == "1700000000"
        }),
        ("/0/public/Time", |v| {
            v["result"]["unixtime"] == 1_700_000_000
        }),
        ("/api/v1/timestamp", |v| v["data"] == 1_700_000_000_123_i64),
        ("/api/v2/public/time", |v| {
            v["data"]["serverTime"] == "1700000000123"
        }),
        ("/api/v4/spot/time", |v| {
            v["server_time"] == 1_700_000_000_123_i64
        }),
        ("/api/v3/brokerage/time", |v| {
            v["epochMillis"] == "1700000000123"
        }),
        ("/v2/time", |v| v["data"]["epoch"] == 1_700_000_000),
    ];
    for (path, check) in cases {
        let (status, _, v) = send(client().get(format!("{}{path}", mock.base_url()))).await;
        assert_eq!(status, 200, "{path}");
        assert!(check(&v), "{path}: {v}");
    }
    let (_, _, v) = send(client().get(format!("{}/api/v3/exchangeInfo", mock.base_url()))).await;
    assert_eq!(v["symbols"][0]["symbol"], "BTCUSDT");
    let (_, _, v) = send(client().get(format!(
        "{}/api/v3/ticker/price?symbol=ETHUSDT",
        mock.base_url()
    )))
    .await;
    assert_eq!(v["price"], "3000.00");
    assert!(mock
        .requests()
        .iter()
        .all(|r| !r.verified && r.rejection.is_none()));
}

#[tokio::test]
async fn unknown_paths_and_generic_signed_success() {
    let mock = start_all().await;
    let (status, _, _) = send(client().get(format!("{}/nothing/here", mock.base_url()))).await;
    assert_eq!(status, 404);
    // Unsigned unknown path under a known prefix.
    let (status, _, _) =
        send(client().get(format!("{}/api/v5/account/made-up", mock.base_url()))).await;
    assert_eq!(status, 404);
    // Signed but unlisted: verified, then a generic success.
    let pq = "/api/v5/account/made-up?x=1";
    let (status, _, v) = send(okx_headers(
        client().get(format!("{}{pq}", mock.base_url())),
        "GET",
        pq,
        "",
        OKX_KEY,
        OKX_SECRET,
        OKX_PASS,
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(v, json!({"code": "0", "msg": "", "data": []}));
    // Known private path without any auth: the exchange's auth error.
    let (status, _, v) = send(client().get(format!("{}/api/v3/account", mock.base_url()))).await;
    assert_eq!((status, v["code"].as_i64()), (401, Some(-2014)));
    let recs = mock.requests();
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0].exchange, None);
    assert_eq!(recs[2].exchange, Some("okx"));
    assert!(recs[2].verified);
    assert_eq!(recs[2].query.as_deref(), Some("x=1"));
    assert!(recs[3].rejection.is_some());
    mock.clear();
    assert!(mock.requests().is_empty());
}

#[tokio::test]
async fn rate_limit_headers_can_be_pinned() {
    let mock = start_all().await;
    let get = || async {
        let (_, h, _) = send(client().get(format!("{}/api/v3/time", mock.base_url()))).await;
        h["x-mbx-used-weight-1m"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
    };
    let a = get().await;
    let b = get().await;
    assert_eq!(b, a + 1);
    mock.set_rate_limit_used("binance", 5999);
    assert_eq!(get().await, 5999);
    assert_eq!(get().await, 5999);
    mock.unpin_rate_limit("binance");
    assert_eq!(get().await, 1);
}

#[tokio::test]
async fn faults() {
    let mock = start_all().await;
    let url = format!("{}/api/v3/time", mock.base_url());

    mock.set_fault(Some(Fault::Delay(Duration::from_millis(300))));
    let t = Instant::now();
    let (status, _, _) = send(client().get(&url)).await;
    assert_eq!(status, 200);
    assert!(t.elapsed() >= Duration::from_millis(300));
    // A client timeout shorter than the delay.
    let err = client()
        .get(&url)
        .timeout(Duration::from_millis(50))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());

    mock.set_fault(Some(Fault::Status(503)));
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 503);

    mock.set_fault(Some(Fault::Garbage));
    let resp = client().get(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.json::<Value>().await.is_err());

    mock.set_fault(Some(Fault::Close));
    let err = client().get(&url).send().await.unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");

    mock.set_fault(None);
    let (status, _, _) = send(client().get(&url)).await;
    assert_eq!(status, 200);

    // Only the next two requests fail.
    mock.set_fault_times(Fault::Status(502), 2);
    let mut statuses = Vec::new();
    for _ in 0..3 {
        statuses.push(client().get(&url).send().await.unwrap().status().as_u16());
    }
    assert_eq!(statuses, [502, 502, 200]);
    // Every request was recorded, the dropped one included.
    assert_eq!(mock.requests().len(), 9);
}

#[tokio::test]
async fn clock_override_drives_time_windows() {
    let mock = start_all().await;
    let ts = 1_600_000_000_000_i64;
    mock.set_now_ms(Some(ts + 4_000));
    let q = format!("timestamp={ts}");
    let url = format!(
        "{}/api/v3/account?{}",
        mock.base_url(),
        binance_signed(&q, BIN_SECRET)
    );
    let (status, _, _) = send(client().get(&url).header("X-MBX-APIKEY", BIN_KEY)).await;
    assert_eq!(status, 200);
    mock.set_now_ms(Some(ts + 5_001));
    let (status, _, v) = send(client().get(&url).header("X-MBX-APIKEY", BIN_KEY)).await;
    assert_eq!((status, v["code"].as_i64()), (400, Some(-1021)));
    mock.set_now_ms(Some(ts - 1_000));
    let (_, _, v) = send(client().get(&url).header("X-MBX-APIKEY", BIN_KEY)).await;
    assert_eq!(
        v["msg"],
        "Timestamp for this request was 1000ms ahead of the server's time."
    );
}

#[tokio::test]
async fn admin_routes_for_out_of_process_users() {
    let mock = start_all().await;
    let base = mock.base_url();
    client()
        .get(format!("{base}/api/v3/time"))
        .send()
        .await
        .unwrap();
    let (_, _, stats) = send(client().get(format!("{base}/__mock/stats"))).await;
    assert_eq!(stats, json!({"received": 1, "verified": 0}));
    let (_, _, reqs) = send(client().get(format!("{base}/__mock/requests"))).await;
    assert_eq!(reqs[0]["path"], "/api/v3/time");
    send(
        client()
            .post(format!("{base}/__mock/fault"))
            .json(&json!({"kind": "status", "status": 500, "times": 1})),
    )
    .await;
    assert_eq!(
        client()
            .get(format!("{base}/api/v3/time"))
            .send()
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        client()
            .get(format!("{base}/api/v3/time"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    send(
        client()
            .post(format!("{base}/__mock/rate-limit"))
            .json(&json!({"exchange": "binance", "used": 42})),
    )
    .await;
    let (_, h, _) = send(client().get(format!("{base}/api/v3/time"))).await;
    assert_eq!(h["x-mbx-used-weight-1m"], "42");
    send(client().post(format!("{base}/__mock/clear"))).await;
    assert!(mock.requests().is_empty());
}

#[test]
fn config_from_json() {
    let cfg = MockConfig::from_json(
        r#"{"keys": [{"exchange": "okx", "api_key": "k", "secret": "s", "passphrase": "p"},
                     {"exchange": "coinbase", "api_key": "organizations/o/apiKeys/k", "public_key_pem": "-----BEGIN PUBLIC KEY-----"}]}"#,
    )
    .unwrap();
    assert_eq!(cfg.keys.len(), 2);
    assert_eq!(cfg.keys[0].exchange, "okx");
    assert!(!format!("{:?}", cfg.keys[0]).contains("\"s\""));
    assert!(MockConfig::from_json(
        r#"{"keys": [{"exchange": "ftx", "api_key": "k", "secret": "s"}]}"#
    )
    .is_err());
    assert!(MockConfig::from_json(r#"{"keys": [{"exchange": "okx", "api_key": "k"}]}"#).is_err());
}

#[tokio::test]
async fn binance_total_params_is_query_then_body() {
    let mock = start_all().await;
    // Signature in the query, more parameters in the body: signed over query + body with
    // nothing in between, as Binance's "mixed query string and request body" example.
    let q = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC";
    let b = format!("quantity=1&price=0.1&timestamp={}", now_ms());
    let sig = hex::encode(hmac256(BIN_SECRET.as_bytes(), format!("{q}{b}").as_bytes()));
    let (status, _, v) = send(
        client()
            .post(format!(
                "{}/api/v3/order?{q}&signature={sig}",
                mock.base_url()
            ))
            .header("X-MBX-APIKEY", BIN_KEY)
            .body(b),
    )
    .await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["symbol"], "BTCUSDT");
}

#[tokio::test]
async fn bybit_rsa_key_and_time_windows() {
    use rsa::pkcs8::EncodePublicKey as _;
    use rsa::signature::{SignatureEncoding as _, Signer as _};
    let sk = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
    let pem = sk
        .to_public_key()
        .to_public_key_pem(Default::default())
        .unwrap();
    let mut cfg = MockConfig::default();
    cfg.keys.push(MockKey::public_key("bybit", "rsaByb", pem));
    cfg.keys
        .push(MockKey::hmac("okx", OKX_KEY, OKX_SECRET).with_passphrase(OKX_PASS));
    cfg.keys.push(MockKey::hmac("gate", GATE_KEY, GATE_SECRET));
    let mock = MockExchange::start(cfg).await;
    let signer = rsa::pkcs1v15::SigningKey::<sha2::Sha256>::new(sk);
    let ts = now_ms().to_string();
    let q = "accountType=UNIFIED";
    let sig = b64(&signer
        .sign(format!("{ts}rsaByb5000{q}").as_bytes())
        .to_vec());
    let rb = client()
        .get(format!("{}/v5/account/wallet-balance?{q}", mock.base_url()))
        .header("X-BAPI-API-KEY", "rsaByb")
        .header("X-BAPI-TIMESTAMP", &ts)
        .header("X-BAPI-RECV-WINDOW", "5000")
        .header("X-BAPI-SIGN-TYPE", "2")
        .header("X-BAPI-SIGN", &sig);
    let (status, _, v) = send(rb.try_clone().unwrap()).await;
    assert_eq!((status, v["retCode"].as_i64()), (200, Some(0)), "{v}");

    // The mock's clock runs 40 s ahead: Bybit (5 s), OKX (30 s) refuse, Gate (60 s) accepts.
    mock.set_clock_offset_ms(40_000);
    let (_, _, v) = send(rb).await;
    assert_eq!(v["retCode"], 10002);
    let pq = "/api/v5/account/balance";
    let (_, _, v) = send(okx_headers(
        client().get(format!("{}{pq}", mock.base_url())),
        "GET",
        pq,
        "",
        OKX_KEY,
        OKX_SECRET,
        OKX_PASS,
    ))
    .await;
    assert_eq!(v["code"], "50102");
    let path = "/api/v4/spot/accounts";
    let (status, _, _) = send(gate_headers(
        client().get(format!("{}{path}", mock.base_url())),
        "GET",
        path,
        "",
        "",
        GATE_KEY,
        GATE_SECRET,
    ))
    .await;
    assert_eq!(status, 200);
    mock.set_clock_offset_ms(70_000);
    let (status, _, v) = send(gate_headers(
        client().get(format!("{}{path}", mock.base_url())),
        "GET",
        path,
        "",
        "",
        GATE_KEY,
        GATE_SECRET,
    ))
    .await;
    assert_eq!(
        (status, v["label"].as_str()),
        (401, Some("REQUEST_EXPIRED"))
    );
}

/// `--keep-requests N` (load runs): only about the newest N requests are kept, newest last.
#[tokio::test]
async fn keep_requests_bounds_the_record_to_the_newest() {
    let mock = MockExchange::start(MockConfig { keys: vec![] }).await;
    mock.keep_requests(4);
    for i in 0..10 {
        let (status, _, _) =
            send(client().get(format!("{}/api/v3/time?n={i}", mock.base_url()))).await;
        assert_eq!(status, 200);
    }
    let kept = mock.requests();
    assert!(!kept.is_empty() && kept.len() <= 4, "{}", kept.len());
    assert_eq!(kept.last().unwrap().query.as_deref(), Some("n=9"));
    mock.keep_requests(0);
    let _ = send(client().get(format!("{}/api/v3/time", mock.base_url()))).await;
    assert!(mock.requests().is_empty());
}
