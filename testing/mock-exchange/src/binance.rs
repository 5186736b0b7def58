//! Binance spot (`/api/v3`, `/sapi`) and USD-M futures (`/fapi`).
//!
//! Verification per <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/request-security>:
//! `X-MBX-APIKEY` names the key; `signature` covers `totalParams` = query string (without
//! the `signature` parameter) immediately followed by the request body; HMAC-SHA256 as hex,
//! or for Ed25519/RSA keys a base64 signature (URL-encoded in the query/body). `timestamp`
//! must satisfy `timestamp < serverTime + 1000` and `serverTime - timestamp <= recvWindow`
//! (default 5000, at most 60000).

use http::Method;
use serde_json::{json, Value};

use crate::crypto;
use crate::wire::{add, param, price_of, private_flow, Handled, Rejection, Reply, Req, BALANCES};
use crate::State;

pub(crate) fn handle(st: &State, req: &Req, usdm: bool) -> Handled {
    let id = if usdm { "binanceusdm" } else { "binance" };
    let handled = route(st, req, usdm);
    let (used, _) = st.count_rate(id, 1);
    handled.map_reply(|r| {
        let r = r
            .header("X-MBX-USED-WEIGHT-1M", used)
            .header("X-MBX-USED-WEIGHT", used);
        if req.method == Method::POST && req.path.ends_with("/order") {
            r.header("X-MBX-ORDER-COUNT-10S", 1)
                .header("X-MBX-ORDER-COUNT-1D", 1)
        } else {
            r
        }
    })
}

fn err(status: u16, code: i64, msg: &str) -> Reply {
    Reply::json(status, json!({"code": code, "msg": msg}))
}

fn route(st: &State, req: &Req, usdm: bool) -> Handled {
    if let Some(body) = public(st, req, usdm) {
        return Handled::public(Reply::ok(body));
    }
    let listen_key_path = if usdm {
        "/fapi/v1/listenKey"
    } else {
        "/api/v3/userDataStream"
    };
    if req.path == listen_key_path {
        // USER_STREAM: API key only, no signature.
        return match api_key(st, req) {
            Ok(key) => Handled::verified(
                &key,
                Reply::ok(if req.method == Method::DELETE {
                    json!({})
                } else {
                    json!({"listenKey": format!("mockListenKey{}", st.next_id())})
                }),
            ),
            Err(rej) => rej.into(),
        };
    }
    let has_auth = req.header("x-mbx-apikey").is_some()
        || req.query_str().contains("signature=")
        || req.body_text().contains("signature=");
    let known = if usdm {
        private_usdm(st, req)
    } else {
        private_spot(st, req)
    };
    private_flow(req, has_auth, known, || verify(st, req), || json!({}))
}

fn api_key(st: &State, req: &Req) -> Result<String, Rejection> {
    let Some(key) = req.header_nonempty("x-mbx-apikey") else {
        return Err(Rejection::new(
            None,
            "missing X-MBX-APIKEY",
            err(401, -2014, "API-key format invalid."),
        ));
    };
    if st.key("binance", key).is_none() {
        return Err(Rejection::new(
            Some(key),
            "unknown API key",
            err(
                401,
                -2015,
                "Invalid API-key, IP, or permissions for action.",
            ),
        ));
    }
    Ok(key.to_string())
}

/// `s` without its `signature=` component, and that component's decoded value.
fn split_signature(s: &str) -> (String, Option<String>) {
    let mut sig = None;
    let kept: Vec<&str> = s
        .split('&')
        .filter(|part| {
            if let Some(v) = part.strip_prefix("signature=") {
                let decoded: String = url::form_urlencoded::parse(format!("s={v}").as_bytes())
                    .next()
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                // A client that did not URL-encode a base64 `+` sent it as a space.
                sig = Some(decoded.replace(' ', "+"));
                false
            } else {
                true
            }
        })
        .collect();
    if sig.is_none() {
        return (s.to_string(), None);
    }
    (kept.join("&"), sig)
}

fn verify(st: &State, req: &Req) -> Result<String, Rejection> {
    let key_id = api_key(st, req)?;
    let key = st.key("binance", &key_id).expect("checked");
    let k = Some(key_id.as_str());
    let (query, q_sig) = split_signature(req.query_str());
    let body = std::str::from_utf8(&req.body).map_err(|_| {
        Rejection::new(
            k,
            "body is not UTF-8",
            err(400, -1022, "Signature for this request is not valid."),
        )
    })?;
    let (body, b_sig) = split_signature(body);
    let Some(sig) = q_sig.or(b_sig).filter(|s| !s.is_empty()) else {
        return Err(Rejection::new(
            k,
            "missing signature",
            err(
                400,
                -1102,
                "Mandatory parameter 'signature' was not sent, was empty/null, or malformed.",
            ),
        ));
    };
    let params = req.form_params();
    let Some(ts) = param(&params, "timestamp").and_then(|t| t.parse::<i64>().ok()) else {
        return Err(Rejection::new(
            k,
            "missing timestamp",
            err(
                400,
                -1102,
                "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed.",
            ),
        ));
    };
    let recv_window = match param(&params, "recvWindow") {
        None => 5000.0,
        Some(v) => v.parse::<f64>().unwrap_or(-1.0),
    };
    if !(0.0..=60_000.0).contains(&recv_window) {
        return Err(Rejection::new(
            k,
            "recvWindow out of range",
            err(400, -1131, "recvWindow must be less than 60000"),
        ));
    }

    let total_params = format!("{query}{body}");
    let sig_ok = match (&key.public_key_pem, &key.secret) {
        (Some(pem), _) => match crypto::b64_decode(&sig) {
            Some(raw) => crypto::verify_asymmetric(pem, total_params.as_bytes(), &raw).is_ok(),
            None => false,
        },
        (None, Some(secret)) => match hex::decode(&sig) {
            Ok(raw) => crypto::hmac_sha256_ok(secret.as_bytes(), total_params.as_bytes(), &raw),
            Err(_) => false,
        },
        (None, None) => false,
    };
    if !sig_ok {
        return Err(Rejection::new(
            k,
            format!("signature mismatch over totalParams {total_params:?}"),
            err(400, -1022, "Signature for this request is not valid."),
        ));
    }

    let now = st.now_ms() as f64;
    let ts = ts as f64;
    if ts >= now + 1000.0 {
        return Err(Rejection::new(
            k,
            "timestamp ahead of server time",
            err(
                400,
                -1021,
                "Timestamp for this request was 1000ms ahead of the server's time.",
            ),
        ));
    }
    if now - ts > recv_window {
        return Err(Rejection::new(
            k,
            "timestamp outside recvWindow",
            err(
                400,
                -1021,
                "Timestamp for this request is outside of the recvWindow.",
            ),
        ));
    }
    Ok(key_id)
}

const SYMBOLS: [(&str, &str, &str); 3] = [
    ("BTCUSDT", "BTC", "USDT"),
    ("ETHUSDT", "ETH", "USDT"),
    ("SOLUSDT", "SOL", "USDT"),
];

fn base_of(symbol: &str) -> &str {
    symbol.strip_suffix("USDT").unwrap_or(symbol)
}

fn public(st: &State, req: &Req, usdm: bool) -> Option<Value> {
    if req.method != Method::GET {
        return None;
    }
    let now = st.now_ms();
    let params = req.query_params();
    let path = req.path.as_str();
    let prefix = if usdm { "/fapi/v1" } else { "/api/v3" };
    let rest = path.strip_prefix(prefix).or_else(|| {
        if usdm {
            path.strip_prefix("/fapi/v2")
        } else {
            None
        }
    })?;
    Some(match rest {
        "/ping" => json!({}),
        "/time" => json!({"serverTime": now}),
        "/exchangeInfo" => exchange_info(now, usdm),
        "/ticker/price" => match param(&params, "symbol") {
            Some(s) => json!({"symbol": s, "price": format!("{:.2}", price_of(base_of(s))), "time": now}),
            None => Value::Array(
                SYMBOLS
                    .iter()
                    .map(|(s, b, _)| json!({"symbol": s, "price": format!("{:.2}", price_of(b)), "time": now}))
                    .collect(),
            ),
        },
        "/depth" => {
            let p = price_of(base_of(param(&params, "symbol").unwrap_or("BTCUSDT")));
            json!({"lastUpdateId": 1, "E": now, "T": now,
                   "bids": [[format!("{:.2}", p - 1.0), "1.00000000"]],
                   "asks": [[format!("{:.2}", p + 1.0), "1.00000000"]]})
        }
        _ => return None,
    })
}

fn exchange_info(now: i64, usdm: bool) -> Value {
    let symbols: Vec<Value> = SYMBOLS
        .iter()
        .map(|(s, b, q)| {
            let mut v = json!({
                "symbol": s, "status": "TRADING", "baseAsset": b, "quoteAsset": q,
                "baseAssetPrecision": 8, "quotePrecision": 8, "quoteAssetPrecision": 8,
                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                "icebergAllowed": true, "ocoAllowed": true, "otoAllowed": true,
                "quoteOrderQtyMarketAllowed": true, "allowTrailingStop": true,
                "cancelReplaceAllowed": true, "isSpotTradingAllowed": true,
                "isMarginTradingAllowed": false,
                "filters": [
                    {"filterType": "PRICE_FILTER", "minPrice": "0.01000000", "maxPrice": "1000000.00000000", "tickSize": "0.01000000"},
                    {"filterType": "LOT_SIZE", "minQty": "0.00001000", "maxQty": "9000.00000000", "stepSize": "0.00001000"},
                    {"filterType": "NOTIONAL", "minNotional": "5.00000000", "applyMinToMarket": true, "maxNotional": "9000000.00000000", "applyMaxToMarket": false, "avgPriceMins": 5},
                ],
                "permissions": [], "permissionSets": [["SPOT"]],
                "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
            });
            if usdm {
                v = json!({
                    "symbol": s, "pair": s, "contractType": "PERPETUAL",
                    "deliveryDate": 4133404800000_i64, "onboardDate": 1569398400000_i64,
                    "status": "TRADING", "maintMarginPercent": "2.5000", "requiredMarginPercent": "5.0000",
                    "baseAsset": b, "quoteAsset": q, "marginAsset": q,
                    "pricePrecision": 2, "quantityPrecision": 3, "baseAssetPrecision": 8, "quotePrecision": 8,
                    "underlyingType": "COIN", "underlyingSubType": [], "settlePlan": 0,
                    "triggerProtect": "0.0500", "liquidationFee": "0.012500", "marketTakeBound": "0.05",
                    "filters": [
                        {"filterType": "PRICE_FILTER", "minPrice": "0.10", "maxPrice": "4529764", "tickSize": "0.10"},
                        {"filterType": "LOT_SIZE", "minQty": "0.001", "maxQty": "1000", "stepSize": "0.001"},
                        {"filterType": "MARKET_LOT_SIZE", "minQty": "0.001", "maxQty": "120", "stepSize": "0.001"},
                        {"filterType": "MAX_NUM_ORDERS", "limit": 200},
                        {"filterType": "MIN_NOTIONAL", "notional": "5"},
                    ],
                    "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET", "TRAILING_STOP_MARKET"],
                    "timeInForce": ["GTC", "IOC", "FOK", "GTX", "GTD"],
                });
            }
            v
        })
        .collect();
    json!({
        "timezone": "UTC",
        "serverTime": now,
        "rateLimits": [
            {"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": if usdm { 2400 } else { 6000 }},
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": if usdm { 300 } else { 100 }},
        ],
        "exchangeFilters": [],
        "symbols": symbols,
    })
}

/// Order fields echoed from the request parameters.
struct OrderParams {
    symbol: String,
    side: String,
    kind: String,
    qty: String,
    price: String,
    tif: String,
    client_id: String,
    reduce_only: bool,
}

fn order_params(st: &State, req: &Req) -> OrderParams {
    let p = req.form_params();
    let get = |n: &str, d: &str| param(&p, n).unwrap_or(d).to_string();
    OrderParams {
        symbol: get("symbol", "BTCUSDT"),
        side: get("side", "BUY"),
        kind: get("type", "LIMIT"),
        qty: get("quantity", "0"),
        price: get("price", "0"),
        tif: get("timeInForce", "GTC"),
        client_id: param(&p, "newClientOrderId")
            .or(param(&p, "origClientOrderId"))
            .map(str::to_string)
            .unwrap_or_else(|| format!("mock{}", st.next_id())),
        reduce_only: param(&p, "reduceOnly") == Some("true"),
    }
}

fn order_id(req: &Req, st: &State) -> u64 {
    param(&req.form_params(), "orderId")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| st.next_id())
}

fn spot_order(st: &State, req: &Req, status: &str) -> Value {
    let o = order_params(st, req);
    let now = st.now_ms();
    let p = req.form_params();
    let quote_qty = param(&p, "quoteOrderQty");
    let (price, qty) = if o.kind == "MARKET" {
        let px = price_of(base_of(&o.symbol));
        let qty = match quote_qty {
            Some(q) => q.parse::<f64>().unwrap_or(0.0) / px,
            None => o.qty.parse().unwrap_or(0.0),
        };
        (px, qty)
    } else {
        (o.price.parse().unwrap_or(0.0), o.qty.parse().unwrap_or(0.0))
    };
    let filled = o.kind == "MARKET" && status == "NEW";
    let status = if filled { "FILLED" } else { status };
    let executed = if filled { qty } else { 0.0 };
    json!({
        "symbol": o.symbol,
        "orderId": order_id(req, st),
        "orderListId": -1,
        "clientOrderId": o.client_id,
        "transactTime": now,
        "price": if o.kind == "MARKET" { "0.00000000".to_string() } else { format!("{price:.8}") },
        "origQty": format!("{qty:.8}"),
        "executedQty": format!("{executed:.8}"),
        "origQuoteOrderQty": format!("{:.8}", quote_qty.and_then(|q| q.parse::<f64>().ok()).unwrap_or(0.0)),
        "cummulativeQuoteQty": format!("{:.8}", executed * price),
        "status": status,
        "timeInForce": o.tif,
        "type": o.kind,
        "side": o.side,
        "workingTime": now,
        "selfTradePreventionMode": "EXPIRE_MAKER",
        "fills": if filled {
            json!([{"price": format!("{price:.8}"), "qty": format!("{qty:.8}"),
                    "commission": "0.00000000", "commissionAsset": "BNB", "tradeId": st.next_id()}])
        } else {
            json!([])
        },
    })
}

fn private_spot(st: &State, req: &Req) -> Option<Value> {
    let now = st.now_ms();
    let m = &req.method;
    Some(match (m.as_str(), req.path.as_str()) {
        ("GET", "/api/v3/account") => json!({
            "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
            "commissionRates": {"maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000", "seller": "0.00000000"},
            "canTrade": true, "canWithdraw": true, "canDeposit": true, "brokered": false,
            "requireSelfTradePrevention": false, "preventSor": false,
            "updateTime": now, "accountType": "SPOT",
            "balances": BALANCES.iter().map(|(a, f, l)| json!({"asset": a, "free": f, "locked": l})).collect::<Vec<_>>(),
            "permissions": ["SPOT"], "uid": 354937868,
        }),
        ("POST", "/api/v3/order") => spot_order(st, req, "NEW"),
        ("POST", "/api/v3/order/test") => json!({}),
        ("GET", "/api/v3/order") => spot_order(st, req, "NEW"),
        ("DELETE", "/api/v3/order") => spot_order(st, req, "CANCELED"),
        ("GET", "/api/v3/openOrders")
        | ("DELETE", "/api/v3/openOrders")
        | ("GET", "/api/v3/allOrders")
        | ("GET", "/api/v3/myTrades") => json!([]),
        ("GET", "/sapi/v1/account/apiRestrictions") => json!({
            "ipRestrict": false, "createTime": now - 86_400_000,
            "enableReading": true, "enableSpotAndMarginTrading": true,
            "enableWithdrawals": st.withdrawals_enabled.load(std::sync::atomic::Ordering::Relaxed),
            "enableInternalTransfer": false,
            "enableMargin": false, "enableFutures": true, "permitsUniversalTransfer": false,
            "enableVanillaOptions": false, "enableFixApiTrade": false, "enableFixReadOnly": false,
            "enablePortfolioMarginTrading": false,
        }),
        ("GET", "/sapi/v1/account/status") => json!({"data": "Normal"}),
        ("GET", "/sapi/v1/capital/config/getall") => json!([]),
        ("POST", "/sapi/v1/capital/withdraw/apply") => {
            json!({"id": format!("mockwd{}", st.next_id())})
        }
        ("POST", "/sapi/v1/asset/transfer") => json!({"tranId": st.next_id()}),
        _ => return None,
    })
}

fn futures_order(st: &State, req: &Req, status: &str) -> Value {
    let o = order_params(st, req);
    let now = st.now_ms();
    json!({
        "clientOrderId": o.client_id, "cumQty": "0", "cumQuote": "0", "executedQty": "0",
        "orderId": order_id(req, st), "avgPrice": "0.00", "origQty": o.qty, "price": o.price,
        "reduceOnly": o.reduce_only, "side": o.side, "positionSide": "BOTH", "status": status,
        "stopPrice": "0", "closePosition": false, "symbol": o.symbol, "timeInForce": o.tif,
        "type": o.kind, "origType": o.kind, "updateTime": now, "workingType": "CONTRACT_PRICE",
        "priceProtect": false, "priceMatch": "NONE", "selfTradePreventionMode": "NONE",
        "goodTillDate": 0,
    })
}

fn futures_assets(now: i64) -> Vec<Value> {
    BALANCES
        .iter()
        .map(|(a, f, l)| {
            let total = add(f, l);
            json!({
                "asset": a, "walletBalance": total, "unrealizedProfit": "0.00000000",
                "marginBalance": total, "maintMargin": "0.00000000", "initialMargin": l,
                "positionInitialMargin": "0.00000000", "openOrderInitialMargin": l,
                "crossWalletBalance": total, "crossUnPnl": "0.00000000",
                "availableBalance": f, "maxWithdrawAmount": f, "marginAvailable": true,
                "updateTime": now,
            })
        })
        .collect()
}

fn private_usdm(st: &State, req: &Req) -> Option<Value> {
    let now = st.now_ms();
    Some(match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/fapi/v2/balance") | ("GET", "/fapi/v3/balance") => Value::Array(
            BALANCES
                .iter()
                .map(|(a, f, l)| {
                    let total = add(f, l);
                    json!({
                        "accountAlias": "SgsR", "asset": a, "balance": total,
                        "crossWalletBalance": total, "crossUnPnl": "0.00000000",
                        "availableBalance": f, "maxWithdrawAmount": f,
                        "marginAvailable": true, "updateTime": now,
                    })
                })
                .collect(),
        ),
        ("GET", "/fapi/v2/account") | ("GET", "/fapi/v3/account") => json!({
            "feeTier": 0, "canTrade": true, "canDeposit": true, "canWithdraw": true,
            "feeBurn": false, "updateTime": 0, "multiAssetsMargin": false, "tradeGroupId": -1,
            "totalInitialMargin": "0.00000000", "totalMaintMargin": "0.00000000",
            "totalWalletBalance": "10000.00000000", "totalUnrealizedProfit": "0.00000000",
            "totalMarginBalance": "10000.00000000", "totalPositionInitialMargin": "0.00000000",
            "totalOpenOrderInitialMargin": "0.00000000", "totalCrossWalletBalance": "10000.00000000",
            "totalCrossUnPnl": "0.00000000", "availableBalance": "10000.00000000",
            "maxWithdrawAmount": "10000.00000000",
            "assets": futures_assets(now),
            "positions": [],
        }),
        ("POST", "/fapi/v1/order") | ("GET", "/fapi/v1/order") => futures_order(st, req, "NEW"),
        ("DELETE", "/fapi/v1/order") => futures_order(st, req, "CANCELED"),
        ("GET", "/fapi/v1/openOrders")
        | ("GET", "/fapi/v1/allOrders")
        | ("GET", "/fapi/v1/userTrades")
        | ("GET", "/fapi/v2/positionRisk")
        | ("GET", "/fapi/v3/positionRisk") => json!([]),
        ("POST", "/fapi/v1/leverage") => {
            let p = req.form_params();
            json!({
                "leverage": param(&p, "leverage").and_then(|l| l.parse::<u64>().ok()).unwrap_or(20),
                "maxNotionalValue": "50000000",
                "symbol": param(&p, "symbol").unwrap_or("BTCUSDT"),
            })
        }
        ("POST", "/fapi/v1/marginType") => json!({"code": 200, "msg": "success"}),
        ("GET", "/fapi/v1/positionSide/dual") => json!({"dualSidePosition": false}),
        ("GET", "/fapi/v1/multiAssetsMargin") => json!({"multiAssetsMargin": false}),
        _ => return None,
    })
}
