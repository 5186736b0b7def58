//! Bitget v2 (`/api/v2`; see `dispatch` for how it shares the prefix with KuCoin).
//!
//! Verification per <https://www.bitget.com/api-doc/common/signature>:
//! `ACCESS-SIGN` = base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath +
//! ("?" + query when there is one) + body)); `ACCESS-TIMESTAMP` in ms within 30 s of server
//! time; `ACCESS-PASSPHRASE` must equal the key's passphrase. Demo trading (`paptrading:
//! 1`) is accepted with the same keys. Auth errors are HTTP 400 (40009) or 401 (bad key).

use http::Method;
use serde_json::{json, Value};

use crate::crypto;
use crate::wire::{jstr, param, price_of, private_flow, Handled, Rejection, Reply, Req, BALANCES};
use crate::State;

const WINDOW_MS: i64 = 30_000;

fn err(st: &State, status: u16, code: &str, msg: &str) -> Reply {
    Reply::json(
        status,
        json!({"code": code, "msg": msg, "requestTime": st.now_ms(), "data": null}),
    )
}

fn ok(st: &State, data: Value) -> Value {
    json!({"code": "00000", "msg": "success", "requestTime": st.now_ms(), "data": data})
}

pub(crate) fn handle(st: &State, req: &Req) -> Handled {
    if let Some(body) = public(st, req) {
        return Handled::public(Reply::ok(body));
    }
    let has_auth = req.header("access-key").is_some();
    private_flow(
        req,
        has_auth,
        private(st, req),
        || verify(st, req),
        || ok(st, json!({})),
    )
}

fn verify(st: &State, req: &Req) -> Result<String, Rejection> {
    let Some(key_id) = req.header_nonempty("access-key") else {
        return Err(Rejection::new(
            None,
            "missing ACCESS-KEY",
            err(st, 400, "40001", "ACCESS_KEY cannot be empty"),
        ));
    };
    let k = Some(key_id);
    let Some(sign) = req.header_nonempty("access-sign") else {
        return Err(Rejection::new(
            k,
            "missing ACCESS-SIGN",
            err(st, 400, "40003", "Signature cannot be empty"),
        ));
    };
    let Some(ts_text) = req.header_nonempty("access-timestamp") else {
        return Err(Rejection::new(
            k,
            "missing ACCESS-TIMESTAMP",
            err(st, 400, "40004", "Request timestamp cannot be empty"),
        ));
    };
    let Some(passphrase) = req.header_nonempty("access-passphrase") else {
        return Err(Rejection::new(
            k,
            "missing ACCESS-PASSPHRASE",
            err(st, 400, "40011", "ACCESS_PASSPHRASE cannot be empty"),
        ));
    };
    let Ok(ts) = ts_text.parse::<i64>() else {
        return Err(Rejection::new(
            k,
            "ACCESS-TIMESTAMP not ms",
            err(st, 400, "40005", "Invalid ACCESS_TIMESTAMP"),
        ));
    };
    if (st.now_ms() - ts).abs() > WINDOW_MS {
        return Err(Rejection::new(
            k,
            "timestamp outside 30 s window",
            err(st, 400, "40008", "Request timestamp expired"),
        ));
    }
    let Some(key) = st.key("bitget", key_id) else {
        return Err(Rejection::new(
            k,
            "unknown API key",
            err(st, 401, "40006", "Invalid ACCESS_KEY"),
        ));
    };
    if !key
        .passphrase
        .as_deref()
        .is_some_and(|p| crypto::ct_eq(p.as_bytes(), passphrase.as_bytes()))
    {
        return Err(Rejection::new(
            k,
            "passphrase mismatch",
            err(st, 400, "40012", "apikey/password is incorrect"),
        ));
    }
    let mut msg = format!("{ts_text}{}{}", req.method.as_str(), req.path);
    if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
        msg.push('?');
        msg.push_str(q);
    }
    let mut msg = msg.into_bytes();
    msg.extend_from_slice(&req.body);
    let sig_ok = match (&key.secret, crypto::b64_decode(sign)) {
        (Some(secret), Some(raw)) => crypto::hmac_sha256_ok(secret.as_bytes(), &msg, &raw),
        _ => false,
    };
    if !sig_ok {
        return Err(Rejection::new(
            k,
            format!(
                "signature mismatch over {:?}",
                String::from_utf8_lossy(&msg)
            ),
            err(st, 400, "40009", "sign signature error"),
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
        "/api/v2/public/time" => ok(st, json!({"serverTime": now.to_string()})),
        "/api/v2/spot/market/tickers" => {
            let sym = param(&p, "symbol").unwrap_or("BTCUSDT");
            let px = format!("{:.2}", price_of(sym.trim_end_matches("USDT")));
            ok(
                st,
                json!([{"symbol": sym, "high24h": px, "open": px, "low24h": px, "lastPr": px,
                "quoteVolume": "0", "baseVolume": "0", "usdtVolume": "0", "bidPr": px, "askPr": px,
                "bidSz": "1", "askSz": "1", "openUtc": px, "ts": now.to_string(), "changeUtc24h": "0", "change24h": "0"}]),
            )
        }
        _ => return None,
    })
}

fn private(st: &State, req: &Req) -> Option<Value> {
    let now = st.now_ms().to_string();
    let body = req.json();
    let p = req.query_params();
    let data = match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/v2/spot/account/assets") => {
            let coin = param(&p, "coin");
            Value::Array(
                BALANCES
                    .iter()
                    .filter(|(a, _, _)| coin.is_none_or(|c| c.eq_ignore_ascii_case(a)))
                    .map(|(a, f, l)| {
                        json!({"coin": a, "available": f, "frozen": l, "locked": "0",
                        "limitAvailable": "0", "uTime": now})
                    })
                    .collect(),
            )
        }
        ("GET", "/api/v2/mix/account/accounts") => json!([{
            "marginCoin": "USDT", "locked": "0", "available": "10000", "crossedMaxAvailable": "10000",
            "isolatedMaxAvailable": "10000", "maxTransferOut": "10000", "accountEquity": "10000",
            "usdtEquity": "10000", "btcEquity": "0.2", "crossedRiskRate": "0", "unrealizedPL": "0",
            "coupon": "0", "crossedUnrealizedPL": "0", "isolatedUnrealizedPL": "0",
            "assetMode": "single", "unionTotalMargin": "10000", "unionAvailable": "10000",
        }]),
        ("GET", "/api/v2/spot/account/info") => json!({
            "userId": "1234567890", "inviterId": "", "ips": "", "authorities": ["stor", "stow", "mixr", "mixw"],
            "parentId": 1234567890_u64, "traderType": "", "channelCode": "", "channel": "",
            "regisTime": "1700000000000",
        }),
        ("POST", "/api/v2/spot/trade/place-order")
        | ("POST", "/api/v2/mix/order/place-order")
        | ("POST", "/api/v2/spot/trade/cancel-order")
        | ("POST", "/api/v2/mix/order/cancel-order") => json!({
            "orderId": jstr(&body, "orderId").unwrap_or_else(|| st.next_id().to_string()),
            "clientOid": jstr(&body, "clientOid").unwrap_or_else(|| format!("mock{}", st.next_id())),
        }),
        ("GET", "/api/v2/spot/trade/unfilled-orders")
        | ("GET", "/api/v2/spot/trade/history-orders") => json!([]),
        ("POST", "/api/v2/spot/wallet/withdrawal") => json!({
            "orderId": st.next_id().to_string(), "clientOid": jstr(&body, "clientOid").unwrap_or_default(),
        }),
        ("POST", "/api/v2/spot/wallet/transfer") => json!({
            "transferId": st.next_id().to_string(), "clientOid": jstr(&body, "clientOid").unwrap_or_default(),
        }),
        ("POST", "/api/v2/mix/account/set-leverage") => json!({
            "symbol": jstr(&body, "symbol").unwrap_or_default(), "marginCoin": jstr(&body, "marginCoin").unwrap_or_default(),
            "longLeverage": jstr(&body, "leverage").unwrap_or_default(), "shortLeverage": jstr(&body, "leverage").unwrap_or_default(),
            "crossMarginLeverage": jstr(&body, "leverage").unwrap_or_default(), "marginMode": "crossed",
        }),
        _ => return None,
    };
    Some(ok(st, data))
}
