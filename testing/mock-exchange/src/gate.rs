//! Gate v4 (`/api/v4`).
//!
//! Verification per <https://www.gate.io/docs/developers/apiv4/#apiv4-signed-request-requirements>:
//! `SIGN` = hex(HMAC-SHA512(secret, METHOD + "\n" + "/api/v4/..." path + "\n" + raw query
//! string + "\n" + hex(SHA512(body)) + "\n" + Timestamp)), `KEY` names the key and
//! `Timestamp` (seconds) must be within 60 s of server time. Auth errors are HTTP 401 with
//! `{"label", "message"}`.

use http::Method;
use serde_json::{json, Value};

use crate::crypto;
use crate::wire::{jstr, param, price_of, private_flow, Handled, Rejection, Reply, Req, BALANCES};
use crate::State;

const WINDOW_S: f64 = 60.0;
/// Requests per 10 s the mock reports as the limit.
const LIMIT: u64 = 200;

fn err(label: &str, message: &str) -> Reply {
    Reply::json(401, json!({"label": label, "message": message}))
}

pub(crate) fn handle(st: &State, req: &Req) -> Handled {
    if let Some(body) = public(st, req) {
        return Handled::public(Reply::ok(body));
    }
    let has_auth = req.header("key").is_some() || req.header("sign").is_some();
    let handled = private_flow(
        req,
        has_auth,
        private(st, req),
        || verify(st, req),
        || json!({}),
    );
    if handled.reply.status == 404 {
        return handled;
    }
    let (used, reset) = st.count_rate("gate", 1);
    handled.map_reply(|r| {
        r.header(
            "X-Gate-RateLimit-Requests-Remain",
            LIMIT.saturating_sub(used),
        )
        .header("X-Gate-RateLimit-Limit", LIMIT)
        .header("X-Gate-RateLimit-Reset-Timestamp", reset)
    })
}

fn verify(st: &State, req: &Req) -> Result<String, Rejection> {
    let (Some(key_id), Some(ts_text), Some(sign)) = (
        req.header_nonempty("key"),
        req.header_nonempty("timestamp"),
        req.header_nonempty("sign"),
    ) else {
        return Err(Rejection::new(
            req.header("key"),
            "missing KEY/Timestamp/SIGN",
            err(
                "MISSING_REQUIRED_HEADER",
                "Missing required authentication header",
            ),
        ));
    };
    let k = Some(key_id);
    let Some(key) = st.key("gate", key_id) else {
        return Err(Rejection::new(
            k,
            "unknown API key",
            err("INVALID_KEY", "Invalid key provided"),
        ));
    };
    let now_s = st.now_ms() as f64 / 1000.0;
    let ts_ok = ts_text
        .parse::<f64>()
        .is_ok_and(|ts| (now_s - ts).abs() <= WINDOW_S);
    if !ts_ok {
        return Err(Rejection::new(
            k,
            "timestamp outside 60 s window",
            err(
                "REQUEST_EXPIRED",
                "Gap between request Timestamp and server time exceeds 60",
            ),
        ));
    }
    let msg = format!(
        "{}\n{}\n{}\n{}\n{}",
        req.method.as_str(),
        req.path,
        req.query_str(),
        crypto::sha512_hex(&req.body),
        ts_text
    );
    let sig_ok = match (&key.secret, hex::decode(sign)) {
        (Some(secret), Ok(raw)) => crypto::hmac_sha512_ok(secret.as_bytes(), msg.as_bytes(), &raw),
        _ => false,
    };
    if !sig_ok {
        return Err(Rejection::new(
            k,
            format!("signature mismatch over {msg:?}"),
            err("INVALID_SIGNATURE", "Signature mismatch"),
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
        "/api/v4/spot/time" => json!({"server_time": now}),
        "/api/v4/spot/tickers" => {
            let pair = param(&p, "currency_pair").unwrap_or("BTC_USDT");
            let px = format!("{:.2}", price_of(pair.split('_').next().unwrap_or("BTC")));
            json!([{"currency_pair": pair, "last": px, "lowest_ask": px, "highest_bid": px,
                "change_percentage": "0", "base_volume": "0", "quote_volume": "0", "high_24h": px, "low_24h": px}])
        }
        "/api/v4/futures/usdt/contracts" => json!([
            {"name": "BTC_USDT", "type": "direct", "quanto_multiplier": "0.0001", "leverage_min": "1",
             "leverage_max": "100", "mark_price": "50000", "order_size_min": 1, "order_size_max": 1000000,
             "order_price_round": "0.1", "in_delisting": false},
            {"name": "ETH_USDT", "type": "direct", "quanto_multiplier": "0.01", "leverage_min": "1",
             "leverage_max": "100", "mark_price": "3000", "order_size_min": 1, "order_size_max": 1000000,
             "order_price_round": "0.01", "in_delisting": false},
        ]),
        _ => return None,
    })
}

fn order(st: &State, body: &Value, status: &str, id: Option<&str>) -> Value {
    let now = st.now_ms();
    let amount = jstr(body, "amount").unwrap_or_else(|| "0".into());
    json!({
        "id": id.map(str::to_string).unwrap_or_else(|| st.next_id().to_string()),
        "text": jstr(body, "text").unwrap_or_else(|| "apiv4".into()),
        "amend_text": "-", "create_time": (now / 1000).to_string(), "update_time": (now / 1000).to_string(),
        "create_time_ms": now, "update_time_ms": now, "status": status,
        "currency_pair": jstr(body, "currency_pair").unwrap_or_else(|| "BTC_USDT".into()),
        "type": jstr(body, "type").unwrap_or_else(|| "limit".into()),
        "account": jstr(body, "account").unwrap_or_else(|| "spot".into()),
        "side": jstr(body, "side").unwrap_or_else(|| "buy".into()),
        "amount": amount.clone(), "price": jstr(body, "price").unwrap_or_else(|| "0".into()),
        "time_in_force": jstr(body, "time_in_force").unwrap_or_else(|| "gtc".into()),
        "iceberg": "0", "left": amount, "filled_amount": "0", "fill_price": "0", "filled_total": "0",
        "fee": "0", "fee_currency": "USDT", "point_fee": "0", "gt_fee": "0", "gt_maker_fee": "0",
        "gt_taker_fee": "0", "gt_discount": false, "rebated_fee": "0", "rebated_fee_currency": "USDT",
        "finish_as": if status == "cancelled" { "cancelled" } else { "open" },
    })
}

fn private(st: &State, req: &Req) -> Option<Value> {
    let body = req.json();
    let path = req.path.as_str();
    if let Some(id) = path.strip_prefix("/api/v4/spot/orders/") {
        return match req.method.as_str() {
            "DELETE" => Some(order(st, &body, "cancelled", Some(id))),
            "GET" => Some(order(st, &body, "open", Some(id))),
            _ => None,
        };
    }
    let p = req.query_params();
    Some(match (req.method.as_str(), path) {
        ("GET", "/api/v4/spot/accounts") => {
            let currency = param(&p, "currency");
            Value::Array(
                BALANCES
                    .iter()
                    .filter(|(a, _, _)| currency.is_none_or(|c| c.eq_ignore_ascii_case(a)))
                    .map(|(a, f, l)| json!({"currency": a, "available": f, "locked": l, "update_id": 1}))
                    .collect(),
            )
        }
        // CCXT's fetch_balance asks whether the key is in unified-account mode first.
        ("GET", "/api/v4/account/detail") => json!({
            "user_id": 10406147, "ip_whitelist": [], "currency_pairs": [],
            "key": {"mode": 1}, "tier": 0, "tier_expire_time": "0001-01-01T00:00:00Z",
            "copy_trading_role": 0,
        }),
        ("POST", "/api/v4/spot/orders") => order(st, &body, "open", None),
        ("GET", "/api/v4/spot/orders")
        | ("GET", "/api/v4/spot/open_orders")
        | ("GET", "/api/v4/spot/my_trades") => json!([]),
        ("POST", "/api/v4/withdrawals") => json!({
            "id": format!("w{}", st.next_id()), "txid": "", "withdraw_order_id": jstr(&body, "withdraw_order_id").unwrap_or_default(),
            "timestamp": (st.now_ms() / 1000).to_string(), "amount": jstr(&body, "amount").unwrap_or_default(),
            "currency": jstr(&body, "currency").unwrap_or_default(), "address": jstr(&body, "address").unwrap_or_default(),
            "memo": jstr(&body, "memo").unwrap_or_default(), "status": "REQUEST", "chain": jstr(&body, "chain").unwrap_or_default(),
        }),
        ("POST", "/api/v4/wallet/transfers") => json!({"tx_id": st.next_id()}),
        ("GET", "/api/v4/futures/usdt/accounts") => json!({
            "total": "10000", "unrealised_pnl": "0", "position_margin": "0", "order_margin": "0",
            "available": "10000", "point": "0", "currency": "USDT", "in_dual_mode": false,
            "enable_credit": false, "position_initial_margin": "0", "maintenance_margin": "0",
        }),
        _ => return None,
    })
}
