//! Bybit v5 (`/v5`).
//!
//! Verification per <https://bybit-exchange.github.io/docs/v5/guide#authentication>:
//! `X-BAPI-SIGN` = hex(HMAC-SHA256(secret, timestamp + apiKey + recvWindow + payload))
//! where payload is the raw query string for GET/DELETE and the raw JSON body otherwise;
//! for RSA keys the same string signed RSA-SHA256, base64. `X-BAPI-RECV-WINDOW` defaults to
//! 5000; the timestamp must satisfy `server - recvWindow <= ts < server + 1000`.
//! A bad key answers HTTP 401 (retCode 10003); a bad signature (10004) or time window
//! (10002) answer HTTP 200 with the retCode, as Bybit does.

use http::Method;
use serde_json::{json, Value};

use crate::crypto;
use crate::wire::{
    add, jstr, param, price_of, private_flow, Handled, Rejection, Reply, Req, BALANCES,
};
use crate::State;

/// Requests per second the mock reports as the per-endpoint limit.
const LIMIT: u64 = 20;

pub(crate) fn handle(st: &State, req: &Req) -> Handled {
    let now = st.now_ms();
    if let Some(body) = public(st, req) {
        return Handled::public(Reply::ok(body));
    }
    let has_auth = req.header("x-bapi-api-key").is_some() || req.header("x-bapi-sign").is_some();
    let handled = private_flow(
        req,
        has_auth,
        private(st, req),
        || verify(st, req),
        || envelope(json!({}), now),
    );
    if handled.reply.status == 404 {
        return handled;
    }
    let (used, reset) = st.count_rate("bybit", 1);
    handled.map_reply(|r| {
        r.header("X-Bapi-Limit-Status", LIMIT.saturating_sub(used))
            .header("X-Bapi-Limit", LIMIT)
            .header("X-Bapi-Limit-Reset-Timestamp", reset)
    })
}

fn envelope(result: Value, now: i64) -> Value {
    json!({"retCode": 0, "retMsg": "OK", "result": result, "retExtInfo": {}, "time": now})
}

fn err(st: &State, status: u16, code: i64, msg: &str) -> Reply {
    Reply::json(
        status,
        json!({"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": st.now_ms()}),
    )
}

fn verify(st: &State, req: &Req) -> Result<String, Rejection> {
    let Some(key_id) = req.header_nonempty("x-bapi-api-key") else {
        return Err(Rejection::new(
            None,
            "missing X-BAPI-API-KEY",
            err(st, 401, 10003, "API key is invalid."),
        ));
    };
    let k = Some(key_id);
    let Some(key) = st.key("bybit", key_id) else {
        return Err(Rejection::new(
            k,
            "unknown API key",
            err(st, 401, 10003, "API key is invalid."),
        ));
    };
    let Some(ts_text) = req.header_nonempty("x-bapi-timestamp") else {
        return Err(Rejection::new(
            k,
            "missing X-BAPI-TIMESTAMP",
            err(
                st,
                200,
                10002,
                "invalid request, please check your timestamp or recv_window param",
            ),
        ));
    };
    let Some(sign) = req.header_nonempty("x-bapi-sign") else {
        return Err(Rejection::new(
            k,
            "missing X-BAPI-SIGN",
            err(st, 200, 10004, "error sign!"),
        ));
    };
    let recv_text = req.header_nonempty("x-bapi-recv-window").unwrap_or("5000");
    let payload: &[u8] = if req.method == Method::GET || req.method == Method::DELETE {
        req.query_str().as_bytes()
    } else {
        &req.body
    };
    // The header is signed as sent; Bybit does not re-render it.
    let recv_for_sign = req.header("x-bapi-recv-window").unwrap_or("");
    let mut msg = format!("{ts_text}{key_id}{recv_for_sign}").into_bytes();
    msg.extend_from_slice(payload);
    let sig_ok = match (&key.public_key_pem, &key.secret) {
        (Some(pem), _) => crypto::b64_decode(sign)
            .is_some_and(|raw| crypto::verify_asymmetric(pem, &msg, &raw).is_ok()),
        (None, Some(secret)) => {
            hex::decode(sign).is_ok_and(|raw| crypto::hmac_sha256_ok(secret.as_bytes(), &msg, &raw))
        }
        (None, None) => false,
    };
    let origin = String::from_utf8_lossy(&msg).into_owned();
    if !sig_ok {
        return Err(Rejection::new(
            k,
            format!("signature mismatch over {origin:?}"),
            err(
                st,
                200,
                10004,
                &format!("error sign! origin_string[{origin}]"),
            ),
        ));
    }
    let now = st.now_ms();
    let (Ok(ts), Ok(recv)) = (ts_text.parse::<i64>(), recv_text.parse::<i64>()) else {
        return Err(Rejection::new(
            k,
            "unparsable timestamp/recv_window",
            err(
                st,
                200,
                10002,
                "invalid request, please check your timestamp or recv_window param",
            ),
        ));
    };
    if !(now - recv..now + 1000).contains(&ts) {
        return Err(Rejection::new(
            k,
            "timestamp outside recv_window",
            err(st, 200, 10002, &format!(
                "invalid request, please check your server timestamp or recv_window param. req_timestamp[{ts}],server_timestamp[{now}],recv_window[{recv}]"
            )),
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
    let category = param(&p, "category").unwrap_or("spot").to_string();
    Some(envelope(
        match req.path.as_str() {
            "/v5/market/time" => {
                json!({"timeSecond": (now / 1000).to_string(), "timeNano": (now as i128 * 1_000_000).to_string()})
            }
            "/v5/market/tickers" => {
                let sym = param(&p, "symbol").unwrap_or("BTCUSDT");
                let px = format!("{:.2}", price_of(sym.trim_end_matches("USDT")));
                json!({"category": category, "list": [{"symbol": sym, "lastPrice": px, "bid1Price": px, "ask1Price": px,
                    "bid1Size": "1", "ask1Size": "1", "prevPrice24h": px, "price24hPcnt": "0", "highPrice24h": px,
                    "lowPrice24h": px, "turnover24h": "0", "volume24h": "0"}]})
            }
            "/v5/market/instruments-info" => {
                let list: Vec<Value> = ["BTC", "ETH", "SOL"]
                    .iter()
                    .map(|b| json!({"symbol": format!("{b}USDT"), "contractType": "LinearPerpetual", "status": "Trading",
                        "baseCoin": b, "quoteCoin": "USDT", "settleCoin": "USDT",
                        "lotSizeFilter": {"minOrderQty": "0.001", "maxOrderQty": "100", "qtyStep": "0.001",
                            "basePrecision": "0.000001", "quotePrecision": "0.00000001"},
                        "priceFilter": {"tickSize": "0.10"}, "leverageFilter": {"minLeverage": "1", "maxLeverage": "100.00", "leverageStep": "0.01"}}))
                    .collect();
                json!({"category": category, "list": list, "nextPageCursor": ""})
            }
            _ => return None,
        },
        now,
    ))
}

fn private(st: &State, req: &Req) -> Option<Value> {
    let now = st.now_ms();
    let body = req.json();
    let result = match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/v5/account/wallet-balance") => {
            let coins: Vec<Value> = BALANCES
                .iter()
                .map(|(a, f, l)| {
                    let total = add(f, l);
                    json!({
                        "availableToBorrow": "", "bonus": "0", "accruedInterest": "0",
                        "availableToWithdraw": f, "totalOrderIM": l, "equity": total,
                        "totalPositionMM": "0", "usdValue": total, "spotHedgingQty": "0",
                        "unrealisedPnl": "0", "collateralSwitch": true, "borrowAmount": "0",
                        "totalPositionIM": "0", "walletBalance": total, "cumRealisedPnl": "0",
                        "locked": l, "marginCollateral": true, "coin": a,
                    })
                })
                .collect();
            json!({"list": [{
                "totalEquity": "10000", "accountIMRate": "0", "totalMarginBalance": "10000",
                "totalInitialMargin": "0", "accountType": "UNIFIED", "totalAvailableBalance": "10000",
                "accountMMRate": "0", "totalPerpUPL": "0", "totalWalletBalance": "10000",
                "accountLTV": "0", "totalMaintenanceMargin": "0", "coin": coins,
            }]})
        }
        ("POST", "/v5/order/create")
        | ("POST", "/v5/order/cancel")
        | ("POST", "/v5/order/amend") => json!({
            "orderId": jstr(&body, "orderId").unwrap_or_else(|| format!("mock-{}", st.next_id())),
            "orderLinkId": jstr(&body, "orderLinkId").unwrap_or_default(),
        }),
        ("GET", "/v5/order/realtime")
        | ("GET", "/v5/order/history")
        | ("GET", "/v5/position/list")
        | ("GET", "/v5/execution/list") => {
            json!({"list": [], "nextPageCursor": "", "category": "linear"})
        }
        ("POST", "/v5/position/set-leverage") => json!({}),
        ("GET", "/v5/account/info") => {
            json!({"unifiedMarginStatus": 4, "marginMode": "REGULAR_MARGIN",
            "isMasterTrader": false, "spotHedgingStatus": "OFF", "updatedTime": now.to_string(),
            "dcpStatus": "OFF", "timeWindow": 10, "smpGroup": 0})
        }
        ("GET", "/v5/user/query-api") => json!({
            "id": "13770661", "note": "keygate-mock", "apiKey": req.header("x-bapi-api-key").unwrap_or(""),
            "readOnly": 0, "secret": "", "permissions": {
                "ContractTrade": ["Order", "Position"], "Spot": ["SpotTrade"], "Wallet": [],
                "Options": [], "Derivatives": [], "CopyTrading": [], "BlockTrade": [],
                "Exchange": [], "NFT": [], "Affiliate": [],
            },
            "ips": ["*"], "type": 1, "deadlineDay": 83, "expiredAt": "2099-01-01T00:00:00Z",
            "createdAt": "2024-01-01T00:00:00Z", "unified": 0, "uta": 1, "userID": 24617703,
            "inviterID": 0, "vipLevel": "No VIP", "mktMakerLevel": "0", "affiliateID": 0,
            "rsaPublicKey": "", "isMaster": true, "parentUid": "0", "kycLevel": "LEVEL_DEFAULT",
            "kycRegion": "",
        }),
        ("POST", "/v5/asset/withdraw/create") => json!({"id": st.next_id().to_string()}),
        ("POST", "/v5/asset/transfer/inter-transfer") => {
            json!({"transferId": format!("mock-{}", st.next_id()), "status": "SUCCESS"})
        }
        _ => return None,
    };
    Some(envelope(result, now))
}
