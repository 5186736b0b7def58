//! Kraken spot REST (`/0/public`, `/0/private`).
//!
//! Verification per <https://docs.kraken.com/api/docs/guides/spot-rest-auth>:
//! `API-Sign` = base64(HMAC-SHA512(base64decode(secret), URI path + SHA256(nonce +
//! POST data))), where POST data is the raw body (form-encoded, or JSON) and `nonce` is the
//! body's `nonce` field, which must strictly increase per key. Kraken answers errors with
//! HTTP 200 and an `error` array.

use http::Method;
use serde_json::{json, Value};

use crate::crypto;
use crate::wire::{jstr, param, price_of, private_flow, Handled, Rejection, Reply, Req};
use crate::State;

fn err(msg: &str) -> Reply {
    Reply::ok(json!({"error": [msg]}))
}

fn ok(result: Value) -> Value {
    json!({"error": [], "result": result})
}

pub(crate) fn handle(st: &State, req: &Req) -> Handled {
    if let Some(body) = public(st, req) {
        return Handled::public(Reply::ok(body));
    }
    let has_auth = req.header("api-key").is_some() || req.header("api-sign").is_some();
    private_flow(
        req,
        has_auth,
        private(st, req),
        || verify(st, req),
        || ok(json!({})),
    )
}

/// The body's `nonce`, from a form or a JSON body.
fn nonce_of(req: &Req) -> Option<String> {
    if req.is_json_body() {
        jstr(&req.json(), "nonce")
    } else {
        let p: Vec<(String, String)> = url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect();
        param(&p, "nonce").map(str::to_string)
    }
}

fn verify(st: &State, req: &Req) -> Result<String, Rejection> {
    let Some(key_id) = req.header_nonempty("api-key") else {
        return Err(Rejection::new(
            None,
            "missing API-Key",
            err("EAPI:Invalid key"),
        ));
    };
    let k = Some(key_id);
    let Some(key) = st.key("kraken", key_id) else {
        return Err(Rejection::new(
            k,
            "unknown API key",
            err("EAPI:Invalid key"),
        ));
    };
    let Some(nonce) = nonce_of(req) else {
        return Err(Rejection::new(
            k,
            "missing nonce",
            err("EAPI:Invalid nonce"),
        ));
    };
    let sig = req.header_nonempty("api-sign").and_then(crypto::b64_decode);
    let secret = key.secret.as_deref().and_then(crypto::b64_decode);
    let mut inner = nonce.clone().into_bytes();
    inner.extend_from_slice(&req.body);
    let mut msg = req.path.clone().into_bytes();
    msg.extend_from_slice(&crypto::sha256(&inner));
    let sig_ok = match (sig, secret) {
        (Some(sig), Some(secret)) => crypto::hmac_sha512_ok(&secret, &msg, &sig),
        _ => false,
    };
    if !sig_ok {
        return Err(Rejection::new(
            k,
            format!("signature mismatch (path {:?}, nonce {nonce:?})", req.path),
            err("EAPI:Invalid signature"),
        ));
    }
    let Ok(n) = nonce.parse::<u64>() else {
        return Err(Rejection::new(
            k,
            "nonce not an integer",
            err("EAPI:Invalid nonce"),
        ));
    };
    if let Err(last) = st.kraken_nonce(key_id, n) {
        return Err(Rejection::new(
            k,
            format!("nonce {n} not greater than last {last}"),
            err("EAPI:Invalid nonce"),
        ));
    }
    Ok(key_id.to_string())
}

fn public(st: &State, req: &Req) -> Option<Value> {
    if req.method != Method::GET && req.method != Method::POST {
        return None;
    }
    let now = st.now_ms();
    let p = req.form_params();
    Some(match req.path.as_str() {
        "/0/public/Time" => {
            let t = chrono::DateTime::from_timestamp_millis(now).unwrap_or_default();
            ok(
                json!({"unixtime": now / 1000, "rfc1123": t.format("%a, %d %b %y %H:%M:%S +0000").to_string()}),
            )
        }
        "/0/public/SystemStatus" => ok(
            json!({"status": "online", "timestamp": chrono::DateTime::from_timestamp_millis(now).unwrap_or_default().to_rfc3339()}),
        ),
        "/0/public/Ticker" => {
            let pair = param(&p, "pair").unwrap_or("XBTUSD").to_string();
            let px = format!("{:.1}", price_of(pair.get(..3).unwrap_or("XBT")));
            let mut result = serde_json::Map::new();
            result.insert(
                pair,
                json!({"a": [px, "1", "1.000"], "b": [px, "1", "1.000"], "c": [px, "0.1"],
                    "v": ["0", "0"], "p": [px, px], "t": [0, 0], "l": [px, px], "h": [px, px], "o": px}),
            );
            ok(Value::Object(result))
        }
        _ => return None,
    })
}

fn private(st: &State, req: &Req) -> Option<Value> {
    if req.method != Method::POST {
        return None;
    }
    let p: Vec<(String, String)> = if req.is_json_body() {
        let body = req.json();
        body.as_object()
            .map(|o| {
                o.keys()
                    .filter_map(|k| jstr(&body, k).map(|v| (k.clone(), v)))
                    .collect()
            })
            .unwrap_or_default()
    } else {
        url::form_urlencoded::parse(&req.body)
            .into_owned()
            .collect()
    };
    let get = |n: &str, d: &str| param(&p, n).unwrap_or(d).to_string();
    Some(ok(match req.path.as_str() {
        "/0/private/Balance" => {
            json!({"ZUSD": "10000.0000", "XXBT": "0.6000000000", "XETH": "2.0000000000", "USDT": "10000.00000000"})
        }
        "/0/private/BalanceEx" => json!({
            "ZUSD": {"balance": "10000.0000", "hold_trade": "0.0000"},
            "XXBT": {"balance": "0.6000000000", "hold_trade": "0.1000000000"},
            "XETH": {"balance": "2.0000000000", "hold_trade": "0.0000000000"},
            "USDT": {"balance": "10000.00000000", "hold_trade": "0.00000000"},
        }),
        "/0/private/TradeBalance" => json!({"eb": "40000.0000", "tb": "40000.0000", "m": "0.0000",
            "n": "0.0000", "c": "0.0000", "v": "0.0000", "e": "40000.0000", "mf": "40000.0000", "uv": "0.0000"}),
        "/0/private/OpenOrders" => json!({"open": {}}),
        "/0/private/ClosedOrders" => json!({"closed": {}, "count": 0}),
        "/0/private/AddOrder" => {
            let kind = get("ordertype", "limit");
            let price = if kind == "market" {
                String::new()
            } else {
                format!(" @ {kind} {}", get("price", "0"))
            };
            json!({
                "descr": {"order": format!("{} {} {}{}", get("type", "buy"), get("volume", "0"), get("pair", "XBTUSD"), price)},
                "txid": [format!("O{:05}-MOCK-{:06}", st.next_id() % 100_000, st.next_id() % 1_000_000)],
            })
        }
        "/0/private/CancelOrder" => json!({"count": 1}),
        "/0/private/CancelAll" => json!({"count": 0}),
        "/0/private/Withdraw" => json!({"refid": format!("MOCKWD-{}", st.next_id())}),
        "/0/private/WalletTransfer" => json!({"refid": format!("MOCKTR-{}", st.next_id())}),
        "/0/private/GetWebSocketsToken" => {
            json!({"token": format!("mocktoken{}", st.next_id()), "expires": 900})
        }
        _ => return None,
    }))
}
