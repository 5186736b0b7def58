//! KuCoin spot (`/api/v1`, `/api/v2`, `/api/v3`; see `dispatch` for how it shares
//! prefixes with Binance and Bitget).
//!
//! Verification per <https://www.kucoin.com/docs/basic-info/connection-method/authentication/signing-a-message>:
//! `KC-API-SIGN` = base64(HMAC-SHA256(secret, timestamp + METHOD + endpoint + body)) where
//! endpoint is the path plus `?query` when there is one; `KC-API-TIMESTAMP` in ms within
//! 5 s of server time; with `KC-API-KEY-VERSION` 2 or 3 the passphrase header is
//! base64(HMAC-SHA256(secret, passphrase)), with version 1 (or none) it is the plaintext.
//! Auth errors are HTTP 401.

use http::Method;
use serde_json::{json, Value};

use crate::crypto;
use crate::wire::{
    add, jstr, param, price_of, private_flow, Handled, Rejection, Reply, Req, BALANCES,
};
use crate::State;

const WINDOW_MS: i64 = 5_000;
/// The spot pool's documented quota per 30 s window (VIP 0).
const LIMIT: u64 = 4000;

fn err(status: u16, code: &str, msg: &str) -> Reply {
    Reply::json(status, json!({"code": code, "msg": msg}))
}

fn ok(data: Value) -> Value {
    json!({"code": "200000", "data": data})
}

pub(crate) fn handle(st: &State, req: &Req) -> Handled {
    if let Some(body) = public(st, req) {
        return Handled::public(Reply::ok(body));
    }
    let has_auth = req.header("kc-api-key").is_some();
    let handled = private_flow(
        req,
        has_auth,
        private(st, req),
        || verify(st, req),
        || ok(json!({})),
    );
    if handled.reply.status == 404 {
        return handled;
    }
    let (used, reset) = st.count_rate("kucoin", 1);
    let now = st.now_ms();
    handled.map_reply(|r| {
        r.header("gw-ratelimit-limit", LIMIT)
            .header("gw-ratelimit-remaining", LIMIT.saturating_sub(used))
            .header("gw-ratelimit-reset", (reset - now).max(0))
    })
}

fn verify(st: &State, req: &Req) -> Result<String, Rejection> {
    let missing = || {
        err(401, "400001", "Please check the header of your request for KC-API-KEY, KC-API-SIGN, KC-API-TIMESTAMP, KC-API-PASSPHRASE")
    };
    let Some(key_id) = req.header_nonempty("kc-api-key") else {
        return Err(Rejection::new(None, "missing KC-API-KEY", missing()));
    };
    let k = Some(key_id);
    let (Some(sign), Some(ts_text), Some(passphrase)) = (
        req.header_nonempty("kc-api-sign"),
        req.header_nonempty("kc-api-timestamp"),
        req.header_nonempty("kc-api-passphrase"),
    ) else {
        return Err(Rejection::new(
            k,
            "missing KC-API-SIGN/TIMESTAMP/PASSPHRASE",
            missing(),
        ));
    };
    let Some(key) = st.key("kucoin", key_id) else {
        return Err(Rejection::new(
            k,
            "unknown API key",
            err(401, "400003", "KC-API-KEY not exists"),
        ));
    };
    let Some(secret) = key.secret.as_deref() else {
        return Err(Rejection::new(
            k,
            "key has no secret",
            err(401, "400005", "Invalid KC-API-SIGN"),
        ));
    };
    let ts_ok = ts_text
        .parse::<i64>()
        .is_ok_and(|ts| (st.now_ms() - ts).abs() <= WINDOW_MS);
    if !ts_ok {
        return Err(Rejection::new(
            k,
            "timestamp outside 5 s window",
            err(
                401,
                "400002",
                "KC-API-TIMESTAMP Invalid -- Time differs from server time by more than 5 seconds",
            ),
        ));
    }
    let version = req.header("kc-api-key-version").unwrap_or("1");
    let expected_pass = key.passphrase.as_deref().unwrap_or("");
    let pass_ok = if version == "1" {
        crypto::ct_eq(expected_pass.as_bytes(), passphrase.as_bytes())
    } else {
        crypto::b64_decode(passphrase).is_some_and(|raw| {
            crypto::hmac_sha256_ok(secret.as_bytes(), expected_pass.as_bytes(), &raw)
        })
    };
    if !pass_ok {
        return Err(Rejection::new(
            k,
            format!("passphrase mismatch (KC-API-KEY-VERSION {version})"),
            err(401, "400004", "Invalid KC-API-PASSPHRASE"),
        ));
    }
    let mut msg = format!("{ts_text}{}{}", req.method.as_str(), req.path);
    if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
        msg.push('?');
        msg.push_str(q);
    }
    let mut msg = msg.into_bytes();
    msg.extend_from_slice(&req.body);
    let sig_ok = crypto::b64_decode(sign)
        .is_some_and(|raw| crypto::hmac_sha256_ok(secret.as_bytes(), &msg, &raw));
    if !sig_ok {
        return Err(Rejection::new(
            k,
            format!(
                "signature mismatch over {:?}",
                String::from_utf8_lossy(&msg)
            ),
            err(401, "400005", "Invalid KC-API-SIGN"),
        ));
    }
    Ok(key_id.to_string())
}

fn public(st: &State, req: &Req) -> Option<Value> {
    if req.method != Method::GET {
        return None;
    }
    let now = st.now_ms();
    let p = req.query_params();
    Some(match req.path.as_str() {
        "/api/v1/timestamp" => ok(json!(now)),
        "/api/v1/status" => ok(json!({"status": "open", "msg": ""})),
        "/api/v1/market/orderbook/level1" => {
            let sym = param(&p, "symbol").unwrap_or("BTC-USDT");
            let px = format!("{:.1}", price_of(sym.split('-').next().unwrap_or("BTC")));
            ok(json!({"time": now, "sequence": "1", "price": px, "size": "0.1", "bestBid": px,
                "bestBidSize": "1", "bestAsk": px, "bestAskSize": "1"}))
        }
        "/api/v2/symbols" | "/api/v1/symbols" => ok(Value::Array(
            ["BTC", "ETH", "SOL"]
                .iter()
                .map(|b| json!({"symbol": format!("{b}-USDT"), "name": format!("{b}-USDT"),
                    "baseCurrency": b, "quoteCurrency": "USDT", "feeCurrency": "USDT", "market": "USDS",
                    "baseMinSize": "0.00001", "quoteMinSize": "0.1", "baseMaxSize": "10000000000",
                    "quoteMaxSize": "99999999", "baseIncrement": "0.00000001", "quoteIncrement": "0.000001",
                    "priceIncrement": "0.1", "priceLimitRate": "0.1", "minFunds": "0.1",
                    "isMarginEnabled": false, "enableTrading": true, "feeCategory": 1,
                    "makerFeeCoefficient": "1.00", "takerFeeCoefficient": "1.00", "st": false}))
                .collect(),
        )),
        _ => return None,
    })
}

fn private(st: &State, req: &Req) -> Option<Value> {
    let body = req.json();
    let p = req.query_params();
    let path = req.path.as_str();
    let m = req.method.as_str();
    if m == "DELETE"
        && (path.starts_with("/api/v1/orders/") || path.starts_with("/api/v1/hf/orders/"))
    {
        let id = path.rsplit('/').next().unwrap_or_default();
        return Some(ok(json!({"cancelledOrderIds": [id], "orderId": id})));
    }
    Some(ok(match (m, path) {
        ("GET", "/api/v1/accounts") => {
            let kind = param(&p, "type");
            let currency = param(&p, "currency");
            Value::Array(
                BALANCES
                    .iter()
                    .filter(|(a, _, _)| currency.is_none_or(|c| c == *a))
                    .filter(|_| kind.is_none_or(|t| t == "trade"))
                    .enumerate()
                    .map(|(i, (a, f, l))| {
                        json!({"id": format!("5bd6e9286d99522a52e458d{i}"), "currency": a,
                        "type": "trade", "balance": add(f, l), "available": f, "holds": l})
                    })
                    .collect(),
            )
        }
        ("GET", "/api/v1/hf/accounts/opened") => json!(false),
        ("POST", "/api/v1/orders")
        | ("POST", "/api/v1/hf/orders")
        | ("POST", "/api/v1/margin/order") => {
            json!({"orderId": format!("mock{}", st.next_id()), "clientOid": jstr(&body, "clientOid").unwrap_or_default()})
        }
        ("GET", "/api/v1/orders") | ("GET", "/api/v1/fills") => {
            json!({"currentPage": 1, "pageSize": 50, "totalNum": 0, "totalPage": 0, "items": []})
        }
        ("GET", "/api/v1/user/api-key") => json!({
            "remark": "keygate-mock", "apiKey": req.header("kc-api-key").unwrap_or(""),
            "apiVersion": 3, "permission": "General,Spot", "ipWhitelist": "",
            "createdAt": st.now_ms() - 86_400_000, "uid": 165111215, "isMaster": true,
        }),
        ("POST", "/api/v1/withdrawals") | ("POST", "/api/v3/withdrawals") => {
            json!({"withdrawalId": format!("mockwd{}", st.next_id())})
        }
        ("POST", "/api/v2/accounts/inner-transfer")
        | ("POST", "/api/v3/accounts/universal-transfer") => {
            json!({"orderId": format!("mocktr{}", st.next_id())})
        }
        _ => return None,
    }))
}
