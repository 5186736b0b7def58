//! Binance USD-M futures API (`fapi.binance.com`, paths under `/fapi`).
//!
//! Same venue, key and signing scheme as [`crate::binance`] (the shared helpers live there);
//! only the host, the endpoint table, order parsing (`batchOrders`, leverage) and the
//! rate-limit budget differ. Docs: <https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info>.
//!
//! Sizes: USDⓈ-M linear contracts are quoted in the base asset (`quantity=0.01` on
//! `BTCUSDT` is 0.01 BTC), so every intent carries `SizeUnit::Base`.
//!
//! Class choices:
//! - `marginType`, `positionMargin` → `trade`: per-symbol, set routinely by bots right
//!   before opening a position (CCXT `set_margin_mode`, `add_margin`), no funds leave the
//!   futures wallet; the intent carries the symbol so symbol allowlists apply.
//! - `positionSide/dual`, `multiAssetsMargin`, `feeBurn` (POST) → `manage`: account-wide mode
//!   switches that change the meaning of every other bot's orders on the same key.

use http::{HeaderMap, Method};

use crate::binance::{
    self, cancel_intent, classify_with, intent_for, opt_decimal, order_from_params, parse_bool,
    parse_side, On, Route,
};
use crate::util;
use crate::*;

/// `binanceusdm` API (USDⓈ-M futures).
pub struct BinanceUsdm;

const PUBLIC: EndpointClass = EndpointClass::Public;
const READ: EndpointClass = EndpointClass::Read;
const TRADE: EndpointClass = EndpointClass::Trade;
const MANAGE: EndpointClass = EndpointClass::Manage;

/// Endpoint classes for the USD-M host (market data, trade, account/user-data and user
/// data stream sections of the USD-M futures docs).
pub(crate) const USDM_ROUTES: &[Route] = &[
    // --- public market data ---------------------------------------------------------
    (On::Get, "/fapi/v1/ping", PUBLIC),
    (On::Get, "/fapi/v1/time", PUBLIC),
    (On::Get, "/fapi/v1/exchangeInfo", PUBLIC),
    (On::Get, "/fapi/v1/depth", PUBLIC),
    (On::Get, "/fapi/v1/trades", PUBLIC),
    (On::Get, "/fapi/v1/aggTrades", PUBLIC),
    (On::Get, "/fapi/v1/klines", PUBLIC),
    (On::Get, "/fapi/v1/continuousKlines", PUBLIC),
    (On::Get, "/fapi/v1/indexPriceKlines", PUBLIC),
    (On::Get, "/fapi/v1/markPriceKlines", PUBLIC),
    (On::Get, "/fapi/v1/premiumIndexKlines", PUBLIC),
    (On::Get, "/fapi/v1/premiumIndex", PUBLIC),
    (On::Get, "/fapi/v1/fundingRate", PUBLIC),
    (On::Get, "/fapi/v1/fundingInfo", PUBLIC),
    (On::Get, "/fapi/v1/ticker/*", PUBLIC), // 24hr, price, bookTicker
    (On::Get, "/fapi/v2/ticker/price", PUBLIC),
    (On::Get, "/fapi/v1/openInterest", PUBLIC),
    (On::Get, "/fapi/v1/indexInfo", PUBLIC),
    (On::Get, "/fapi/v1/assetIndex", PUBLIC),
    (On::Get, "/fapi/v1/constituents", PUBLIC),
    (On::Get, "/futures/data/*", PUBLIC), // open interest / long-short ratio statistics
    // MARKET_DATA: API key header, no signature.
    (On::Get, "/fapi/v1/historicalTrades", READ),
    // --- user data stream (USER_STREAM) ------------------------------------------------
    (On::Any, "/fapi/v1/listenKey", READ),
    // --- trade ----------------------------------------------------------------------
    (On::Post, "/fapi/v1/order", TRADE),
    (On::Put, "/fapi/v1/order", TRADE), // modify: may raise quantity, so an order
    (On::Delete, "/fapi/v1/order", TRADE),
    (On::Post, "/fapi/v1/order/test", TRADE),
    (On::Post, "/fapi/v1/batchOrders", TRADE),
    (On::Put, "/fapi/v1/batchOrders", TRADE),
    (On::Delete, "/fapi/v1/batchOrders", TRADE),
    (On::Delete, "/fapi/v1/allOpenOrders", TRADE),
    (On::Post, "/fapi/v1/countdownCancelAll", TRADE),
    (On::Post, "/fapi/v1/algoOrder", TRADE), // conditional orders (algo service)
    (On::Delete, "/fapi/v1/algoOrder", TRADE),
    (On::Delete, "/fapi/v1/algoOpenOrders", TRADE),
    (On::Post, "/fapi/v1/leverage", TRADE),
    (On::Post, "/fapi/v1/marginType", TRADE),
    (On::Post, "/fapi/v1/positionMargin", TRADE),
    // --- account settings -------------------------------------------------------------
    (On::Post, "/fapi/v1/positionSide/dual", MANAGE),
    (On::Post, "/fapi/v1/multiAssetsMargin", MANAGE),
    (On::Post, "/fapi/v1/feeBurn", MANAGE),
    // --- reads (USER_DATA) ---------------------------------------------------------------
    (On::Get, "/fapi/v1/order", READ),
    (On::Get, "/fapi/v1/openOrder", READ),
    (On::Get, "/fapi/v1/openOrders", READ),
    (On::Get, "/fapi/v1/allOrders", READ),
    (On::Get, "/fapi/v1/algoOrder", READ),
    (On::Get, "/fapi/v1/openAlgoOrders", READ),
    (On::Get, "/fapi/v1/allAlgoOrders", READ),
    (On::Get, "/fapi/v1/orderAmendment", READ),
    (On::Get, "/fapi/v1/forceOrders", READ),
    (On::Get, "/fapi/v1/userTrades", READ),
    (On::Get, "/fapi/v1/income", READ),
    (On::Get, "/fapi/v1/income/asyn*", READ),
    (On::Get, "/fapi/v1/order/asyn*", READ),
    (On::Get, "/fapi/v1/trade/asyn*", READ),
    (On::Get, "/fapi/v2/account", READ),
    (On::Get, "/fapi/v3/account", READ),
    (On::Get, "/fapi/v2/balance", READ),
    (On::Get, "/fapi/v3/balance", READ),
    (On::Get, "/fapi/v2/positionRisk", READ),
    (On::Get, "/fapi/v3/positionRisk", READ),
    (On::Get, "/fapi/v1/positionMargin/history", READ),
    (On::Get, "/fapi/v1/positionSide/dual", READ),
    (On::Get, "/fapi/v1/multiAssetsMargin", READ),
    (On::Get, "/fapi/v1/feeBurn", READ),
    (On::Get, "/fapi/v1/leverageBracket", READ),
    (On::Get, "/fapi/v1/adlQuantile", READ),
    (On::Get, "/fapi/v1/commissionRate", READ),
    (On::Get, "/fapi/v1/accountConfig", READ),
    (On::Get, "/fapi/v1/symbolConfig", READ),
    (On::Get, "/fapi/v1/rateLimit/order", READ),
    (On::Get, "/fapi/v1/apiTradingStatus", READ),
    (On::Get, "/fapi/v1/pmAccountInfo", READ),
];

/// USER_STREAM / MARKET_DATA endpoints: API key header only.
const USDM_KEY_ONLY: &[&str] = &["/fapi/v1/listenkey", "/fapi/v1/historicaltrades"];

/// REQUEST_WEIGHT per minute, USD-M `exchangeInfo` `rateLimits`
/// (<https://developers.binance.com/docs/derivatives/usds-margined-futures/general-info#limits>).
const USDM_WEIGHT_LIMIT_1M: u64 = 2400;
/// ORDERS per minute, same source.
const USDM_ORDERS_LIMIT_1M: u64 = 1200;
/// ORDERS per 10 s, same source.
const USDM_ORDERS_LIMIT_10S: u64 = 300;

impl Exchange for BinanceUsdm {
    fn id(&self) -> ExchangeId {
        ExchangeId::Binanceusdm
    }

    fn hosts(&self) -> Hosts {
        Hosts {
            production: "https://fapi.binance.com",
            testnet: Some("https://testnet.binancefuture.com"),
        }
    }

    fn strip_auth(&self, req: &mut OutgoingRequest) {
        binance::strip_request(req);
    }

    fn classify(&self, method: &Method, path: &str) -> EndpointClass {
        classify_with(USDM_ROUTES, method, path)
    }

    fn sign(
        &self,
        req: &mut OutgoingRequest,
        creds: &ApiCredentials,
        ctx: &SignContext,
    ) -> Result<(), SignError> {
        let key_only =
            binance::canonical_path(&req.path).is_some_and(|p| USDM_KEY_ONLY.contains(&p.as_str()));
        binance::sign_request(req, creds, ctx, key_only)
    }

    fn parse_intent(
        &self,
        class: EndpointClass,
        req: &OutgoingRequest,
    ) -> Result<RequestIntent, ParseError> {
        let params = binance::request_params(req)?;
        let path = binance::canonical_path(&req.path).ok_or(ParseError::InvalidValue("path"))?;
        match class {
            EndpointClass::Trade => usdm_trade_intent(&req.method, &path, &params),
            EndpointClass::Transfer => binance::transfer_intent(&params),
            // No withdrawal endpoint lives on the futures host; should one be routed here,
            // refuse to describe it rather than say "nothing to check".
            EndpointClass::Withdraw => Err(ParseError::InvalidValue("withdrawal endpoint")),
            _ => Ok(RequestIntent::None),
        }
    }

    fn balance_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/fapi/v2/balance",
            query: None,
        }
    }

    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError> {
        let v = util::json_body(body)?;
        // `/fapi/v2|v3/balance` is a list; `/fapi/v2|v3/account` nests it under `assets`.
        let (rows, total_field) = match (&v, v.get("assets")) {
            (serde_json::Value::Array(rows), _) => (rows, "balance"),
            (_, Some(serde_json::Value::Array(rows))) => (rows, "walletBalance"),
            _ => return Err(ParseError::MissingField("assets")),
        };
        let mut out = Vec::new();
        for row in rows {
            let asset = row
                .get("asset")
                .and_then(|a| a.as_str())
                .ok_or(ParseError::MissingField("asset"))?;
            let null = serde_json::Value::Null;
            let total = util::json_decimal("balance", row.get(total_field).unwrap_or(&null))?;
            let available = util::json_decimal(
                "availableBalance",
                row.get("availableBalance").unwrap_or(&null),
            )?;
            if total.is_zero() && available.is_zero() {
                continue;
            }
            // Unrealised profit can make `availableBalance` exceed the wallet balance;
            // "free" never exceeds the total here.
            let free = available.min(total).max(rust_decimal::Decimal::ZERO);
            out.push(Balance {
                asset: asset.to_string(),
                free,
                locked: total - free,
                total,
                account_type: Some("futures".into()),
            });
        }
        Ok(out)
    }

    /// Binance reports key permissions only on the spot host: this path must be sent to
    /// `api.binance.com` (or `testnet.binance.vision`), not to the futures host. The futures
    /// trading permission is `enableFutures`.
    fn key_check_request(&self) -> PlannedRequest {
        binance::api_restrictions_request()
    }

    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError> {
        binance::parse_api_restrictions(body, "enableFutures")
    }

    /// As on spot: request weight per IP, 418 bans the IP.
    fn limits_per_ip(&self) -> bool {
        true
    }

    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitStatus> {
        binance::weight_status(headers, "x-mbx-used-weight-1m", USDM_WEIGHT_LIMIT_1M).or_else(
            || binance::weight_status(headers, "x-mbx-order-count-1m", USDM_ORDERS_LIMIT_1M),
        )
    }

    fn request_cost(&self, req: &OutgoingRequest) -> Vec<crate::Charge> {
        crate::binance_weights::usdm(req)
    }

    fn rate_limits(
        &self,
        _method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Vec<(crate::Budget, RateLimitStatus)> {
        use crate::binance_weights::*;
        // Binance documents the weight header of these two as "not accurate": their
        // answers leave the window as it was
        let inaccurate = binance::canonical_path(path)
            .is_some_and(|p| p == "/fapi/v1/ticker/bookticker" || p == "/fapi/v2/ticker/price");
        let weight_header = if inaccurate {
            ""
        } else {
            "x-mbx-used-weight-1m"
        };
        reported(
            headers,
            &[
                (weight_header, &WEIGHT_1M, USDM_WEIGHT_LIMIT_1M),
                (
                    "x-mbx-order-count-10s",
                    &FAPI_ORDERS_10S,
                    USDM_ORDERS_LIMIT_10S,
                ),
                (
                    "x-mbx-order-count-1m",
                    &FAPI_ORDERS_1M,
                    USDM_ORDERS_LIMIT_1M,
                ),
            ],
        )
    }

    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind> {
        binance::classify_binance_error(status, body)
    }
}

/// USD-M order types that execute at `price` or better: LIMIT and the stop-limit pair
/// STOP and TAKE_PROFIT (`price` the limit, `stopPrice` the trigger). MARKET, STOP_MARKET,
/// TAKE_PROFIT_MARKET and TRAILING_STOP_MARKET execute at market.
const USDM_LIMIT_TYPES: [&str; 3] = ["limit", "stop", "take_profit"];

fn with_usdm_units(
    mut o: OrderIntent,
    params_close_position: Option<&str>,
) -> Result<OrderIntent, ParseError> {
    o.size_unit = SizeUnit::Base;
    if let Some(cp) = params_close_position {
        // closePosition=true closes the whole position: reduce-only by construction, but
        // only for the two types Binance documents it with (STOP_MARKET,
        // TAKE_PROFIT_MARKET); elsewhere it earns no exemption.
        let applies = matches!(
            o.order_type.as_deref(),
            Some("stop_market" | "take_profit_market")
        );
        o.reduce_only |= parse_bool("closePosition", cp)? && applies;
    }
    Ok(o)
}

fn usdm_trade_intent(
    method: &Method,
    path: &str,
    params: &[(String, String)],
) -> Result<RequestIntent, ParseError> {
    if method == Method::DELETE || path.ends_with("/countdowncancelall") {
        return cancel_intent(params);
    }
    let symbol = || util::pair(params, "symbol")?.ok_or(ParseError::MissingField("symbol"));
    if path.ends_with("/leverage") {
        let mut o = intent_for(symbol()?)?;
        let lev = util::pair(params, "leverage")?.ok_or(ParseError::MissingField("leverage"))?;
        o.leverage = Some(util::parse_decimal("leverage", lev)?);
        return Ok(RequestIntent::Orders { orders: vec![o] });
    }
    if path.ends_with("/margintype") || path.ends_with("/positionmargin") {
        let o = intent_for(symbol()?)?;
        return Ok(RequestIntent::Orders { orders: vec![o] });
    }
    let amends = method == Method::PUT;
    if path.ends_with("/batchorders") {
        return batch_intent(params, amends);
    }
    if amends {
        // Modify Order names the order, `side`, `quantity`, `price` and `priceMatch`,
        // and modifies a LIMIT order only; the order keeps its own `reduceOnly`. Fields a
        // new order has are refused: read, `reduceOnly` or `closePosition` earned the
        // amendment the reduce-only exemption while Binance grew the order.
        for f in AMEND_REFUSED {
            if util::pair(params, f)?.is_some() {
                return Err(ParseError::InvalidValue(f));
            }
        }
        let mut o = intent_for(symbol()?)?;
        o.side = Some(parse_side(
            util::pair(params, "side")?.ok_or(ParseError::MissingField("side"))?,
        )?);
        o.quantity = opt_decimal(params, "quantity")?;
        o.price = opt_decimal(params, "price")?;
        o.price_is_limit = o.price.is_some()
            && util::pair(params, "priceMatch")?.is_none_or(|m| m.is_empty() || m == "NONE");
        return Ok(RequestIntent::Orders { orders: vec![o] });
    }
    // order, order/test, algoOrder
    let o = order_from_params(params, "", &USDM_LIMIT_TYPES)?;
    let o = with_usdm_units(o, util::pair(params, "closePosition")?)?;
    Ok(RequestIntent::Orders { orders: vec![o] })
}

/// A new order's fields, which Modify Order (single or batch) does not take.
const AMEND_REFUSED: [&str; 5] = [
    "reduceOnly",
    "closePosition",
    "type",
    "stopPrice",
    "positionSide",
];

/// `batchOrders` is a JSON list of order objects (max 5) in one form parameter.
fn batch_intent(params: &[(String, String)], amends: bool) -> Result<RequestIntent, ParseError> {
    let raw = util::pair(params, "batchOrders")?.ok_or(ParseError::MissingField("batchOrders"))?;
    // Refuses an order object with a repeated key, as for JSON bodies.
    let list = match util::json_request_body(raw.as_bytes())? {
        serde_json::Value::Array(list) => list,
        _ => {
            return Err(ParseError::Malformed(
                "batchOrders is not a JSON list".into(),
            ))
        }
    };
    if list.is_empty() {
        return Err(ParseError::InvalidValue("batchOrders"));
    }
    let text = |v: &serde_json::Value, name: &'static str| -> Result<Option<String>, ParseError> {
        match v.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(serde_json::Value::Bool(b)) => Ok(Some(b.to_string())),
            Some(serde_json::Value::Number(n)) => Ok(Some(n.to_string())),
            Some(_) => Err(ParseError::InvalidValue(name)),
        }
    };
    let mut orders = Vec::with_capacity(list.len());
    for item in &list {
        if !item.is_object() {
            return Err(ParseError::InvalidValue("batchOrders"));
        }
        if amends {
            if let Some(f) = AMEND_REFUSED.iter().find(|f| item.get(**f).is_some()) {
                return Err(ParseError::InvalidValue(f));
            }
        }
        let symbol = text(item, "symbol")?.ok_or(ParseError::MissingField("symbol"))?;
        let mut o = intent_for(&symbol)?;
        o.side = Some(parse_side(
            &text(item, "side")?.ok_or(ParseError::MissingField("side"))?,
        )?);
        o.order_type = text(item, "type")?.map(|t| t.to_ascii_lowercase());
        o.quantity = util::json_opt_decimal("quantity", item.get("quantity"))?;
        o.price = util::json_opt_decimal("price", item.get("price"))?;
        let price_match = text(item, "priceMatch")?;
        // an amendment modifies a LIMIT order (its type is not sent)
        o.price_is_limit = o.price.is_some()
            && (amends
                || o.order_type
                    .as_deref()
                    .is_some_and(|t| USDM_LIMIT_TYPES.contains(&t)))
            && price_match
                .as_deref()
                .is_none_or(|m| m.is_empty() || m == "NONE");
        if let Some(r) = text(item, "reduceOnly")? {
            o.reduce_only = parse_bool("reduceOnly", &r)?;
        }
        let cp = text(item, "closePosition")?;
        orders.push(with_usdm_units(o, cp.as_deref())?);
    }
    Ok(RequestIntent::Orders { orders })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binance::tests::{check_table, req};
    use rust_decimal::Decimal;

    // Modify Order (single and batch) takes the order's id, side, quantity, price and
    // priceMatch; the order keeps its own reduce-only. A new order's fields are refused:
    // read, `reduceOnly` or `closePosition` earned a 50 BTC resize the reduce-only
    // exemption from every size cap.
    #[test]
    fn an_amendment_is_never_reduce_only() {
        let parse = |path: &str, query: &str| {
            BinanceUsdm.parse_intent(
                EndpointClass::Trade,
                &req(Method::PUT, path, Some(query), ""),
            )
        };
        let RequestIntent::Orders { orders } = parse(
            "/fapi/v1/order",
            "symbol=BTCUSDT&side=BUY&orderId=123&quantity=50&price=200000",
        )
        .unwrap() else {
            panic!()
        };
        assert!(!orders[0].reduce_only);
        assert_eq!(orders[0].quantity, Some(Decimal::from(50)));
        assert!(orders[0].price_is_limit);
        for extra in [
            "&reduceOnly=true",
            "&closePosition=true&type=STOP_MARKET",
            "&type=LIMIT",
        ] {
            let q = format!("symbol=BTCUSDT&side=BUY&orderId=123&quantity=50&price=200000{extra}");
            assert!(parse("/fapi/v1/order", &q).is_err(), "{extra}");
        }
        let batch =
            |item: &str| format!("batchOrders={}", util::percent_encode(&format!("[{item}]")));
        assert!(parse(
            "/fapi/v1/batchOrders",
            &batch(r#"{"orderId":"123","symbol":"BTCUSDT","side":"BUY","quantity":"50","price":"200000","reduceOnly":"true"}"#),
        )
        .is_err());
        let RequestIntent::Orders { orders } = parse(
            "/fapi/v1/batchOrders",
            &batch(r#"{"orderId":"123","symbol":"BTCUSDT","side":"BUY","quantity":"50","price":"200000"}"#),
        )
        .unwrap() else {
            panic!()
        };
        assert!(!orders[0].reduce_only);
    }

    #[test]
    fn usdm_classification_table() {
        use EndpointClass as C;
        check_table(&BinanceUsdm, USDM_ROUTES);
        let cases: &[(Method, &str, EndpointClass)] = &[
            (Method::POST, "/fapi/v1/order", C::Trade),
            (Method::DELETE, "/fapi/v1/order", C::Trade),
            (Method::GET, "/fapi/v1/order", C::Read),
            (Method::POST, "/fapi/v1/batchOrders", C::Trade),
            (Method::POST, "/fapi/v1/leverage", C::Trade),
            (Method::POST, "/fapi/v1/marginType", C::Trade),
            (Method::POST, "/fapi/v1/positionSide/dual", C::Manage),
            (Method::GET, "/fapi/v1/positionSide/dual", C::Read),
            (Method::GET, "/fapi/v2/account", C::Read),
            (Method::GET, "/fapi/v3/account", C::Read),
            (Method::GET, "/fapi/v2/balance", C::Read),
            (Method::GET, "/fapi/v3/balance", C::Read),
            (Method::GET, "/fapi/v2/positionRisk", C::Read),
            (Method::POST, "/fapi/v1/listenKey", C::Read),
            (Method::GET, "/fapi/v1/ticker/24hr", C::Public),
            (Method::GET, "/fapi/v1/depth", C::Public),
            (Method::GET, "/fapi/v1/exchangeInfo", C::Public),
            (Method::GET, "/fapi/v1/foo", C::Unknown),
            (Method::POST, "/fapi/v1/foo", C::Unknown),
            (Method::GET, "/sapi/v1/foo", C::Unknown),
            // spot paths do not belong to this host
            (Method::POST, "/api/v3/order", C::Unknown),
            (Method::POST, "/sapi/v1/capital/withdraw/apply", C::Withdraw),
        ];
        for (m, p, want) in cases {
            assert_eq!(BinanceUsdm.classify(m, p), *want, "{m} {p}");
        }
    }

    #[test]
    fn usdm_parses_orders_batch_and_leverage() {
        let r = req(
            Method::POST,
            "/fapi/v1/order",
            None,
            "timestamp=1&symbol=BTCUSDT&side=SELL&type=MARKET&quantity=0.01&reduceOnly=true&signature=x",
        );
        let RequestIntent::Orders { orders } =
            BinanceUsdm.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(orders[0].size_unit, SizeUnit::Base);
        assert!(orders[0].reduce_only);
        assert_eq!(orders[0].quantity, Some(Decimal::new(1, 2)));

        let r = req(
            Method::POST,
            "/fapi/v1/batchOrders",
            None,
            r#"timestamp=1&batchOrders=[{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","quantity":"0.002","price":"60000","timeInForce":"GTC"},{"symbol":"ETHUSDT","side":"SELL","type":"MARKET","quantity":"1","reduceOnly":"true"}]"#,
        );
        let RequestIntent::Orders { orders } =
            BinanceUsdm.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(orders.len(), 2);
        assert_eq!(orders[0].price, Some(Decimal::new(60000, 0)));
        assert_eq!(orders[1].base.as_deref(), Some("ETH"));
        assert!(orders[1].reduce_only);

        // URL-encoded JSON works as well.
        let r = req(
            Method::POST,
            "/fapi/v1/batchOrders",
            None,
            "batchOrders=%5B%7B%22symbol%22%3A%22BTCUSDT%22%2C%22side%22%3A%22BUY%22%2C%22quantity%22%3A%221%22%7D%5D",
        );
        assert!(BinanceUsdm.parse_intent(EndpointClass::Trade, &r).is_ok());

        for bad in [
            "batchOrders=[]",
            "batchOrders=nope",
            "batchOrders=[{\"side\":\"BUY\"}]",
        ] {
            let r = req(Method::POST, "/fapi/v1/batchOrders", None, bad);
            assert!(
                BinanceUsdm.parse_intent(EndpointClass::Trade, &r).is_err(),
                "{bad}"
            );
        }

        let r = req(
            Method::POST,
            "/fapi/v1/leverage",
            None,
            "symbol=BTCUSDT&leverage=20",
        );
        let RequestIntent::Orders { orders } =
            BinanceUsdm.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(orders[0].leverage, Some(Decimal::new(20, 0)));
        let r = req(Method::POST, "/fapi/v1/leverage", None, "symbol=BTCUSDT");
        assert!(BinanceUsdm.parse_intent(EndpointClass::Trade, &r).is_err());

        let r = req(
            Method::DELETE,
            "/fapi/v1/allOpenOrders",
            Some("symbol=BTCUSDT"),
            "",
        );
        let RequestIntent::Orders { orders } =
            BinanceUsdm.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert!(orders[0].is_cancel);
    }

    #[test]
    fn usdm_balances_key_check_rate_limit() {
        let body = br#"[{"accountAlias":"x","asset":"USDT","balance":"122.6","crossWalletBalance":"122.6","crossUnPnl":"0","availableBalance":"100.0","maxWithdrawAmount":"100.0"},{"asset":"BNB","balance":"0","availableBalance":"0"}]"#;
        let b = BinanceUsdm.parse_balances(body).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].free, Decimal::new(100, 0));
        assert_eq!(b[0].locked, Decimal::new(226, 1));
        let body = br#"{"assets":[{"asset":"USDT","walletBalance":"10","availableBalance":"12"}]}"#;
        let b = BinanceUsdm.parse_balances(body).unwrap();
        assert_eq!(
            (b[0].free, b[0].locked),
            (Decimal::new(10, 0), Decimal::ZERO)
        );

        let kc = BinanceUsdm
            .parse_key_check(br#"{"ipRestrict":true,"enableReading":true,"enableFutures":true,"enableWithdrawals":false,"enableSpotAndMarginTrading":false}"#)
            .unwrap();
        assert!(kc.can_trade && kc.ip_restricted && kc.warnings.is_empty());

        let mut h = HeaderMap::new();
        h.insert("x-mbx-used-weight-1m", "2400".parse().unwrap());
        let rl = BinanceUsdm.rate_limit(&h).unwrap();
        assert_eq!((rl.limit, rl.remaining), (Some(2400), Some(0)));
    }

    #[test]
    fn listen_key_and_historical_trades_are_key_only() {
        let creds = ApiCredentials {
            api_key: secrecy::SecretString::from("k"),
            api_secret: Some(secrecy::SecretString::from("s")),
            passphrase: None,
            private_key: None,
        };
        let ctx = SignContext {
            now_ms: 1,
            nonce: 0,
            random_nonce: [0; 16],
            environment: Environment::Production,
            host: "fapi.binance.com".into(),
            recv_window_ms: Some(5000),
        };
        for path in ["/fapi/v1/listenKey", "/fapi/v1/historicalTrades"] {
            let mut r = req(Method::GET, path, Some("symbol=BTCUSDT"), "");
            BinanceUsdm.sign(&mut r, &creds, &ctx).unwrap();
            assert_eq!(r.query.as_deref(), Some("symbol=BTCUSDT"));
            assert_eq!(r.headers["x-mbx-apikey"], "k");
        }
    }

    fn usdm_orders(body: &str) -> Result<Vec<OrderIntent>, ParseError> {
        let path = if body.starts_with("batchOrders") {
            "/fapi/v1/batchOrders"
        } else {
            "/fapi/v1/order"
        };
        match BinanceUsdm
            .parse_intent(EndpointClass::Trade, &req(Method::POST, path, None, body))?
        {
            RequestIntent::Orders { orders } => Ok(orders),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn usdm_only_limit_types_price_at_price() {
        let one = |t: &str, extra: &str| {
            usdm_orders(&format!(
                "symbol=BTCUSDT&side=BUY&type={t}&quantity=100&price=0.01&stopPrice=1{extra}"
            ))
            .unwrap()
            .remove(0)
        };
        for t in [
            "MARKET",
            "STOP_MARKET",
            "TAKE_PROFIT_MARKET",
            "TRAILING_STOP_MARKET",
        ] {
            assert!(!one(t, "").price_is_limit, "{t}");
        }
        for t in ["LIMIT", "STOP", "TAKE_PROFIT"] {
            assert!(one(t, "").price_is_limit, "{t}");
        }
        assert!(!one("LIMIT", "&priceMatch=OPPONENT").price_is_limit);
        let batch = usdm_orders(
            r#"batchOrders=[{"symbol":"BTCUSDT","side":"BUY","type":"STOP_MARKET","quantity":"100","price":"0.01","stopPrice":"1"},{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","quantity":"1","price":"60000"},{"symbol":"BTCUSDT","side":"BUY","type":"LIMIT","quantity":"1","price":"1","priceMatch":"QUEUE"}]"#,
        )
        .unwrap();
        assert!(!batch[0].price_is_limit);
        assert!(batch[1].price_is_limit);
        assert!(!batch[2].price_is_limit);
    }

    #[test]
    fn usdm_close_position_only_with_its_order_types() {
        let o = usdm_orders(
            "symbol=BTCUSDT&side=SELL&type=LIMIT&quantity=100&price=60000&closePosition=true",
        )
        .unwrap();
        assert!(!o[0].reduce_only);
        let o = usdm_orders(
            "symbol=BTCUSDT&side=SELL&type=STOP_MARKET&stopPrice=50000&closePosition=true",
        )
        .unwrap();
        assert!(o[0].reduce_only);
        assert!(
            usdm_orders("symbol=BTCUSDT&side=SELL&type=MARKET&quantity=1&reduceOnly=TRUE").is_err()
        );
    }

    #[test]
    fn usdm_batch_with_duplicate_keys_is_refused() {
        assert!(usdm_orders(
            r#"batchOrders=[{"symbol":"BTCUSDT","side":"BUY","type":"MARKET","quantity":"0.001","quantity":"1000"}]"#,
        )
        .is_err());
        assert!(
            usdm_orders("symbol=BTCUSDT&side=BUY&type=MARKET&quantity=0.001&quantity=1000")
                .is_err()
        );
    }
}
