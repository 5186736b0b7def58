//! Gate API v4 (<https://www.gate.com/docs/developers/apiv4/#authentication>).
//!
//! Signing: `SIGN` = hex HMAC-SHA512(secret, `METHOD\n/api/v4/path\nquery\nhex(SHA512(body))\n
//! timestamp`), `Timestamp` in seconds, `KEY` the key id. The query is signed exactly as it
//! is sent, as Gate's documented `gen_sign` does. (CCXT signs its *raw* (unescaped) query but
//! sends the escaped one; the two agree for every value without reserved characters.)
//!
//! Key check: `GET /api/v4/account/main_keys` reports `perms` (`name`, `read_only`) and
//! `ip_whitelist`; it answers for main-account keys only (a sub-account key gets an error,
//! surfaced as such). `/account/detail` has the IP whitelist but no permissions; its shape
//! is accepted too, with a warning.

use http::{HeaderMap, Method};
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::util::{self, RouteRow};
use crate::*;

/// `gate` API.
pub struct Gate;

use EndpointClass::{Manage, Public, Read, SubAccount, Trade, Transfer as Xfer, Withdraw as Wd};

/// Endpoint classes, first match wins (paths relative to the host, so with `/api/v4`).
/// Sources: Gate API v4 docs, CCXT's `gate.describe()['api']`.
pub const ROUTES: &[RouteRow] = &[
    // Public market data.
    ("GET", "/api/v4/spot/currencies/**", Public),
    ("GET", "/api/v4/spot/currency_pairs/**", Public),
    ("GET", "/api/v4/spot/tickers", Public),
    ("GET", "/api/v4/spot/order_book", Public),
    ("GET", "/api/v4/spot/trades", Public),
    ("GET", "/api/v4/spot/candlesticks", Public),
    ("GET", "/api/v4/spot/time", Public),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/contracts/**",
        Public,
    ),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/order_book",
        Public,
    ),
    ("GET", "/api/v4/futures|delivery/{settle}/trades", Public),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/candlesticks",
        Public,
    ),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/premium_index",
        Public,
    ),
    ("GET", "/api/v4/futures|delivery/{settle}/tickers", Public),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/funding_rate",
        Public,
    ),
    ("GET", "/api/v4/futures|delivery/{settle}/insurance", Public),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/contract_stats",
        Public,
    ),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/index_constituents/**",
        Public,
    ),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/liq_orders",
        Public,
    ),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/risk_limit_tiers",
        Public,
    ),
    ("GET", "/api/v4/margin/currency_pairs/**", Public),
    ("GET", "/api/v4/margin/uni/currency_pairs/**", Public),
    ("GET", "/api/v4/options/underlyings", Public),
    ("GET", "/api/v4/options/expirations", Public),
    ("GET", "/api/v4/options/contracts/**", Public),
    ("GET", "/api/v4/options/settlements/**", Public),
    ("GET", "/api/v4/options/order_book", Public),
    ("GET", "/api/v4/options/tickers", Public),
    ("GET", "/api/v4/options/candlesticks", Public),
    ("GET", "/api/v4/options/trades", Public),
    ("GET", "/api/v4/wallet/currency_chains", Public),
    // Spot.
    ("GET", "/api/v4/spot/accounts", Read),
    ("GET", "/api/v4/spot/account_book", Read),
    ("GET", "/api/v4/spot/open_orders", Read),
    ("GET", "/api/v4/spot/my_trades", Read),
    ("GET", "/api/v4/spot/fee", Read),
    ("GET", "/api/v4/spot/batch_fee", Read),
    ("GET", "/api/v4/spot/orders/**", Read),
    ("POST|DELETE|PATCH", "/api/v4/spot/orders/**", Trade),
    ("POST", "/api/v4/spot/batch_orders", Trade),
    ("POST", "/api/v4/spot/cancel_batch_orders", Trade),
    ("POST", "/api/v4/spot/amend_batch_orders", Trade),
    ("POST", "/api/v4/spot/cross_liquidate_orders", Trade),
    ("POST", "/api/v4/spot/countdown_cancel_all", Trade),
    ("GET", "/api/v4/spot/price_orders/**", Read),
    ("POST|DELETE", "/api/v4/spot/price_orders/**", Trade),
    // Margin / unified account: borrowing changes exposure, so it is trade.
    ("POST", "/api/v4/margin/uni/loans", Trade),
    ("POST", "/api/v4/margin/loans", Trade),
    ("POST", "/api/v4/margin/auto_repay", Trade),
    ("POST", "/api/v4/unified/loans", Trade),
    ("GET", "/api/v4/margin/**", Read),
    ("GET", "/api/v4/unified/**", Read),
    // Futures and delivery.
    ("GET", "/api/v4/futures|delivery/{settle}/accounts", Read),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/account_book",
        Read,
    ),
    (
        "POST",
        "/api/v4/futures|delivery/{settle}/positions/{contract}/leverage",
        Trade,
    ),
    (
        "POST",
        "/api/v4/futures|delivery/{settle}/positions/{contract}/margin",
        Trade,
    ),
    (
        "POST",
        "/api/v4/futures|delivery/{settle}/positions/{contract}/risk_limit",
        Trade,
    ),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/positions/**",
        Read,
    ),
    ("POST", "/api/v4/futures/{settle}/dual_mode", Trade),
    (
        "POST",
        "/api/v4/futures/{settle}/dual_comp/positions/**",
        Trade,
    ),
    (
        "GET",
        "/api/v4/futures/{settle}/dual_comp/positions/**",
        Read,
    ),
    ("GET", "/api/v4/futures|delivery/{settle}/orders/**", Read),
    (
        "POST|DELETE|PUT",
        "/api/v4/futures|delivery/{settle}/orders/**",
        Trade,
    ),
    ("POST", "/api/v4/futures/{settle}/batch_orders", Trade),
    (
        "POST",
        "/api/v4/futures/{settle}/batch_cancel_orders",
        Trade,
    ),
    ("POST", "/api/v4/futures/{settle}/batch_amend_orders", Trade),
    (
        "POST",
        "/api/v4/futures/{settle}/countdown_cancel_all",
        Trade,
    ),
    ("GET", "/api/v4/futures|delivery/{settle}/my_trades", Read),
    ("GET", "/api/v4/futures/{settle}/my_trades_timerange", Read),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/position_close",
        Read,
    ),
    ("GET", "/api/v4/futures|delivery/{settle}/liquidates", Read),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/auto_deleverages",
        Read,
    ),
    ("GET", "/api/v4/futures/{settle}/fee", Read),
    (
        "GET",
        "/api/v4/futures|delivery/{settle}/price_orders/**",
        Read,
    ),
    (
        "POST|DELETE",
        "/api/v4/futures|delivery/{settle}/price_orders/**",
        Trade,
    ),
    // Options.
    ("GET", "/api/v4/options/accounts", Read),
    ("GET", "/api/v4/options/account_book", Read),
    ("GET", "/api/v4/options/positions/**", Read),
    ("GET", "/api/v4/options/position_close", Read),
    ("GET", "/api/v4/options/my_trades", Read),
    ("GET", "/api/v4/options/orders/**", Read),
    ("POST|DELETE", "/api/v4/options/orders/**", Trade),
    // Withdrawals (to an address, or `push` to another Gate user): never read/trade.
    ("POST", "/api/v4/withdrawals", Wd),
    ("POST", "/api/v4/withdrawals/push", Wd),
    ("DELETE", "/api/v4/withdrawals/{withdrawal_id}", Wd),
    // Wallet.
    ("POST", "/api/v4/wallet/transfers", Xfer),
    ("*", "/api/v4/wallet/sub_account_*", SubAccount),
    ("POST", "/api/v4/wallet/small_balance", Trade),
    ("GET", "/api/v4/wallet/**", Read),
    // Sub-accounts' API keys are `manage`, as on Binance, OKX, Bybit and Bitget: a key
    // made there is one keygate never sees, with none of this connection's limits.
    (
        "POST|PUT|DELETE",
        "/api/v4/sub_accounts/{user_id}/keys",
        Manage,
    ),
    (
        "POST|PUT|DELETE",
        "/api/v4/sub_accounts/{user_id}/keys/**",
        Manage,
    ),
    // Sub-accounts.
    ("*", "/api/v4/sub_accounts/**", SubAccount),
    // Account.
    ("GET", "/api/v4/account/**", Read),
    ("POST|PUT|DELETE", "/api/v4/account/**", Manage),
    ("GET", "/api/v4/flash_swap/currency_pairs", Public),
    ("GET", "/api/v4/flash_swap/orders/**", Read),
    ("POST", "/api/v4/flash_swap/orders", Trade),
];

/// The window of an endpoint's budget when the answer reports no reset.
/// Gate counts each endpoint group per user, over 10 s windows whose end its
/// headers report (<https://www.gate.io/docs/developers/apiv4/#frequency-limit-rule>).
const ENDPOINT_WINDOW_MS: i64 = 10_000;

/// The name of the rate-limit budget of `method path`: the endpoint table's row, so the
/// ids in Gate's paths (`/spot/orders/{id}`) do not make a budget each.
fn endpoint_name(method: &Method, path: &str) -> Option<String> {
    util::route_row(ROUTES, method, path).map(|r| r.1.to_string())
}

impl Exchange for Gate {
    fn id(&self) -> ExchangeId {
        ExchangeId::Gate
    }

    fn hosts(&self) -> Hosts {
        Hosts {
            production: "https://api.gateio.ws",
            testnet: Some("https://api-testnet.gateapi.io"),
        }
    }

    fn strip_auth(&self, req: &mut OutgoingRequest) {
        util::remove_headers(&mut req.headers, &["key", "sign", "timestamp"], &[]);
    }

    fn classify(&self, method: &Method, path: &str) -> EndpointClass {
        util::route_class(ROUTES, method, path).unwrap_or(EndpointClass::Unknown)
    }

    fn sign(
        &self,
        req: &mut OutgoingRequest,
        creds: &ApiCredentials,
        ctx: &SignContext,
    ) -> Result<(), SignError> {
        let secret = creds.api_secret.as_ref().ok_or(SignError::MissingSecret)?;
        let timestamp = ctx.now_ms.div_euclid(1000).to_string();
        let payload = format!(
            "{}\n{}\n{}\n{}\n{}",
            req.method.as_str(),
            req.path,
            req.query.as_deref().unwrap_or(""),
            util::hex_lower(&util::sha512(&req.body)),
            timestamp
        );
        let signature = util::hex_lower(&util::hmac_sha512(
            secret.expose_secret().as_bytes(),
            payload.as_bytes(),
        ));
        let key = http::HeaderValue::from_str(creds.api_key.expose_secret())
            .map_err(|_| SignError::InvalidRequest("api key is not valid header text"))?;
        req.headers
            .insert(http::HeaderName::from_static("key"), key);
        util::set_header(&mut req.headers, "sign", &signature);
        util::set_header(&mut req.headers, "timestamp", &timestamp);
        // keygate read the body as JSON, whatever type the client named: so does the
        // exchange
        if !req.body.is_empty() {
            util::set_header(&mut req.headers, "content-type", "application/json");
        }
        Ok(())
    }

    fn parse_intent(
        &self,
        class: EndpointClass,
        req: &OutgoingRequest,
    ) -> Result<RequestIntent, ParseError> {
        match class {
            EndpointClass::Trade => parse_trade(req),
            EndpointClass::Withdraw => parse_withdraw(req),
            EndpointClass::Transfer | EndpointClass::SubAccount => parse_transfer(req),
            _ => Ok(RequestIntent::None),
        }
    }

    fn balance_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/api/v4/spot/accounts",
            query: None,
        }
    }

    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError> {
        let v = util::json_body(body)?;
        let rows = v.as_array().ok_or(ParseError::InvalidValue("accounts"))?;
        rows.iter()
            .map(|row| {
                let free = util::json_decimal("available", field(row, "available")?)?;
                let locked = util::json_decimal("locked", field(row, "locked")?)?;
                Ok(Balance {
                    asset: str_field(row, "currency")?.to_string(),
                    free,
                    locked,
                    total: free + locked,
                    account_type: Some("spot".into()),
                })
            })
            .collect()
    }

    fn key_check_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/api/v4/account/main_keys",
            query: None,
        }
    }

    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError> {
        let v = util::json_body(body)?;
        // The SDKs model one object; accept a list too and take the union (the most
        // permissive reading, so no warning is lost).
        let keys: Vec<&Value> = match &v {
            Value::Array(a) if !a.is_empty() => a.iter().collect(),
            Value::Object(_) => vec![&v],
            _ => return Err(ParseError::InvalidValue("main_keys")),
        };
        let mut check = KeyCheck::default();
        let mut perms_reported = false;
        let mut locked = false;
        for key in &keys {
            let ips = key.get("ip_whitelist").and_then(Value::as_array);
            check.ip_restricted |= ips.is_some_and(|ips| {
                ips.iter()
                    .any(|ip| ip.as_str().is_some_and(|s| !s.is_empty()))
            });
            locked |= key
                .get("state")
                .and_then(Value::as_i64)
                .is_some_and(|s| s != 1);
            let Some(perms) = key.get("perms").and_then(Value::as_array) else {
                continue;
            };
            perms_reported = true;
            for p in perms {
                let name = p.get("name").and_then(Value::as_str).unwrap_or("");
                let writable = p.get("read_only").and_then(Value::as_bool) == Some(false);
                check.can_read = true;
                match name {
                    // Gate's `wallet` write permission covers withdrawals and transfers.
                    "wallet" if writable => {
                        check.can_withdraw = true;
                        check.can_transfer = true;
                    }
                    "spot" | "futures" | "delivery" | "options" | "margin" | "unified" | "loan"
                    | "copy" | "alpha" | "crossx" | "otc"
                        if writable =>
                    {
                        check.can_trade = true
                    }
                    _ => {}
                }
            }
        }
        if !perms_reported {
            check.can_read = true;
            let mut check = check;
            check.warnings.push(
                "Gate did not report this key's permissions (only main-account keys can read them)"
                    .into(),
            );
            if !check.ip_restricted {
                check.warnings.push("no IP restriction".into());
            }
            return Ok(check);
        }
        let mut check = check.with_standard_warnings();
        if locked {
            check.warnings.push("key is locked or frozen".into());
        }
        Ok(check)
    }

    fn endpoint_budget(&self, method: &Method, path: &str) -> Option<Budget> {
        Some(Budget::endpoint_of(
            self,
            method,
            path,
            endpoint_name(method, path),
            ENDPOINT_WINDOW_MS,
        ))
    }

    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitStatus> {
        let limit = header_u64(headers, "x-gate-ratelimit-limit");
        let remaining = header_u64(headers, "x-gate-ratelimit-requests-remain");
        let reset = header_u64(headers, "x-gate-ratelimit-reset-timestamp");
        if limit.is_none() && remaining.is_none() {
            return None;
        }
        Some(RateLimitStatus {
            used: limit.zip(remaining).map(|(l, r)| l.saturating_sub(r)),
            limit,
            remaining,
            // Documented in ms; a seconds value is scaled rather than misread as 1970.
            reset_at_ms: reset.map(|r| {
                let r = i64::try_from(r).unwrap_or(i64::MAX);
                if r < 100_000_000_000 {
                    r.saturating_mul(1000)
                } else {
                    r
                }
            }),
            reset_in_ms: None,
        })
    }

    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind> {
        let label = serde_json::from_slice::<Value>(body)
            .ok()
            .and_then(|v| v.get("label").and_then(Value::as_str).map(str::to_string));
        if status < 400 && label.is_none() {
            return None;
        }
        let by_label = label.as_deref().and_then(|l| {
            Some(match l {
                "INVALID_KEY"
                | "MISSING_REQUIRED_HEADER"
                | "INVALID_CREDENTIALS"
                | "KEY_EXPIRED" => ErrorKind::InvalidKey,
                "INVALID_SIGNATURE" => ErrorKind::BadSignature,
                "REQUEST_EXPIRED" => ErrorKind::TimestampOutOfWindow,
                "IP_FORBIDDEN" => ErrorKind::IpNotAllowed,
                "FORBIDDEN" | "READ_ONLY" | "ACCOUNT_LOCKED" | "ACCOUNT_FROZEN" => {
                    ErrorKind::PermissionDenied
                }
                "TOO_MANY_REQUESTS" => ErrorKind::RateLimited,
                "BALANCE_NOT_ENOUGH"
                | "INSUFFICIENT_AVAILABLE"
                | "MARGIN_BALANCE_NOT_ENOUGH"
                | "MARGIN_NOT_ENOUGH"
                | "INSUFFICIENT_BALANCE" => ErrorKind::InsufficientBalance,
                _ => return None,
            })
        });
        by_label.or(Some(match status {
            401 => ErrorKind::InvalidKey,
            403 => ErrorKind::PermissionDenied,
            429 => ErrorKind::RateLimited,
            _ => ErrorKind::Unknown,
        }))
    }
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

fn field<'a>(v: &'a Value, name: &'static str) -> Result<&'a Value, ParseError> {
    v.get(name).ok_or(ParseError::MissingField(name))
}

fn str_field<'a>(v: &'a Value, name: &'static str) -> Result<&'a str, ParseError> {
    field(v, name)?
        .as_str()
        .ok_or(ParseError::InvalidValue(name))
}

fn split_pair(symbol: &str) -> (Option<String>, Option<String>) {
    match symbol.split_once('_') {
        Some((b, q)) if !b.is_empty() && !q.is_empty() => {
            (Some(b.to_string()), Some(q.to_string()))
        }
        _ => (None, None),
    }
}

fn side(v: &Value) -> Result<Side, ParseError> {
    match str_field(v, "side")? {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        _ => Err(ParseError::InvalidValue("side")),
    }
}

/// A spot order (`/spot/orders`, `/spot/batch_orders`, the `put` of a price order).
fn spot_order(v: &Value, symbol: Option<&str>) -> Result<OrderIntent, ParseError> {
    let symbol = match (symbol, v.get("currency_pair")) {
        (Some(s), None) => s,
        // A price order's `put` trades the envelope's `market`; a pair of its own that
        // differs is refused rather than ignored.
        (Some(s), Some(own)) if own.as_str() == Some(s) => s,
        (Some(_), Some(_)) => return Err(ParseError::InvalidValue("currency_pair")),
        (None, _) => str_field(v, "currency_pair")?,
    };
    let mut o = OrderIntent::new(symbol);
    (o.base, o.quote) = split_pair(symbol);
    let side = side(v)?;
    o.side = Some(side);
    let order_type = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("limit")
        .to_ascii_lowercase();
    let amount = util::json_decimal("amount", field(v, "amount")?)?;
    // Gate: "market buy: amount is the quote currency to spend".
    if order_type == "market" && side == Side::Buy {
        o.quote_amount = Some(amount);
    } else {
        o.quantity = Some(amount);
    }
    o.price = util::json_opt_decimal("price", v.get("price"))?.filter(|p| !p.is_zero());
    // Gate spot types are `limit` (default) and `market`; a market order ignores `price`.
    o.price_is_limit = order_type == "limit" && o.price.is_some();
    o.order_type = Some(order_type);
    // a margin or unified account's order may borrow what it trades with
    // (`auto_borrow`, a boolean); another type counts as borrowing
    o.borrows = util::json_flag_set(v, "auto_borrow");
    Ok(o)
}

/// A futures order: `size` is a signed number of contracts (positive buys).
fn futures_order(v: &Value, settle: &str) -> Result<OrderIntent, ParseError> {
    let contract = str_field(v, "contract")?;
    let mut o = OrderIntent::new(contract);
    o.base = split_pair(contract).0;
    o.quote = Some(settle.to_ascii_uppercase());
    o.size_unit = SizeUnit::Contracts;
    let size = util::json_decimal("size", field(v, "size")?)?;
    o.side = match size.cmp(&Decimal::ZERO) {
        std::cmp::Ordering::Greater => Some(Side::Buy),
        std::cmp::Ordering::Less => Some(Side::Sell),
        std::cmp::Ordering::Equal => None,
    };
    o.quantity = Some(size.abs());
    let price = util::json_opt_decimal("price", v.get("price"))?;
    o.order_type = Some(
        if price.is_none_or(|p| p.is_zero()) {
            "market"
        } else {
            "limit"
        }
        .into(),
    );
    o.price = price.filter(|p| !p.is_zero());
    // A non-zero price is a limit; price 0 (with `tif: ioc`) is Gate's market order.
    o.price_is_limit = o.price.is_some();
    let is_true = |k: &str| matches!(v.get(k), Some(Value::Bool(true)));
    // With size 0, `close: true` closes a single-mode position and `auto_size` (exactly
    // `close_long` / `close_short`) one side of a dual-mode position (Gate "FuturesOrder":
    // "Note size also needs to be set to 0"). Any other `auto_size` value, and either
    // field with a non-zero size, is not a documented close: no exemption.
    let auto_size = match v.get("auto_size") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.is_empty() => None,
        Some(Value::String(s)) if s == "close_long" || s == "close_short" => Some(s.as_str()),
        Some(_) => return Err(ParseError::InvalidValue("auto_size")),
    };
    let closes_position = size.is_zero() && (is_true("close") || auto_size.is_some());
    o.reduce_only = is_true("reduce_only") || closes_position;
    if size.is_zero() && !closes_position {
        return Err(ParseError::InvalidValue("size"));
    }
    Ok(o)
}

fn query_pairs(req: &OutgoingRequest) -> Vec<(String, String)> {
    req.query
        .as_deref()
        .map(util::decode_pairs)
        .unwrap_or_default()
}

fn cancel(symbol: &str) -> OrderIntent {
    let mut o = OrderIntent::new(symbol);
    (o.base, o.quote) = split_pair(symbol);
    o.is_cancel = true;
    o
}

fn orders(orders: Vec<OrderIntent>) -> Result<RequestIntent, ParseError> {
    if orders.is_empty() {
        return Err(ParseError::InvalidValue("orders"));
    }
    Ok(RequestIntent::Orders { orders })
}

fn parse_trade(req: &OutgoingRequest) -> Result<RequestIntent, ParseError> {
    let segs: Vec<&str> = req
        .path
        .trim_end_matches('/')
        .trim_start_matches("/api/v4/")
        .split('/')
        .collect();
    let q = query_pairs(req);
    let body = || util::json_request_body(&req.body);
    let m = &req.method;
    match segs.as_slice() {
        ["spot", "orders", ..] | ["spot", "price_orders", ..] if *m == Method::DELETE => {
            let sym = match util::pair(&q, "currency_pair")? {
                Some(s) => Some(s),
                None => util::pair(&q, "market")?,
            };
            orders(vec![cancel(sym.unwrap_or_default())])
        }
        ["spot", "orders"] => orders(vec![spot_order(&body()?, None)?]),
        ["spot", "orders", _id] if *m == Method::PATCH => {
            let b = body()?;
            // `currency_pair` in the body or the query; in both, they must agree.
            let in_query = util::pair(&q, "currency_pair")?;
            let sym = match (b.get("currency_pair").and_then(Value::as_str), in_query) {
                (Some(a), Some(b)) if a != b => {
                    return Err(ParseError::InvalidValue("currency_pair"))
                }
                (Some(a), _) => a,
                (None, b) => b.unwrap_or_default(),
            }
            .to_string();
            let mut o = OrderIntent::new(sym.clone());
            (o.base, o.quote) = split_pair(&sym);
            o.quantity = util::json_opt_decimal("amount", b.get("amount"))?;
            o.price = util::json_opt_decimal("price", b.get("price"))?;
            orders(vec![o])
        }
        ["spot", "batch_orders"] => {
            let b = body()?;
            let list = b.as_array().ok_or(ParseError::InvalidValue("orders"))?;
            orders(
                list.iter()
                    .map(|o| spot_order(o, None))
                    .collect::<Result<_, _>>()?,
            )
        }
        ["spot", "cancel_batch_orders"] => {
            let b = body()?;
            let list = b.as_array().ok_or(ParseError::InvalidValue("orders"))?;
            orders(
                list.iter()
                    .map(|o| cancel(o.get("currency_pair").and_then(Value::as_str).unwrap_or("")))
                    .collect(),
            )
        }
        ["spot", "countdown_cancel_all"] | ["futures", _, "countdown_cancel_all"] => {
            let b = body()?;
            let sym = b
                .get("currency_pair")
                .or_else(|| b.get("contract"))
                .and_then(Value::as_str)
                .unwrap_or("");
            orders(vec![cancel(sym)])
        }
        ["spot", "price_orders"] => {
            let b = body()?;
            let put = field(&b, "put")?;
            orders(vec![spot_order(put, Some(str_field(&b, "market")?))?])
        }
        ["spot", "amend_batch_orders"] | ["spot", "cross_liquidate_orders"] => {
            let b = body()?;
            let list = b.as_array().ok_or(ParseError::InvalidValue("orders"))?;
            let mut out = Vec::new();
            for item in list {
                let sym = item
                    .get("currency_pair")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                let mut o = OrderIntent::new(sym);
                (o.base, o.quote) = split_pair(sym);
                o.quantity = util::json_opt_decimal("amount", item.get("amount"))?;
                o.price = util::json_opt_decimal("price", item.get("price"))?;
                out.push(o);
            }
            orders(out)
        }
        [_, _, "orders", ..] | [_, _, "price_orders", ..] if *m == Method::DELETE => {
            orders(vec![cancel(
                util::pair(&q, "contract")?.unwrap_or_default(),
            )])
        }
        ["futures" | "delivery", settle, "orders"] => {
            orders(vec![futures_order(&body()?, settle)?])
        }
        // An amendment names no contract (Gate "Amend an order": the order id, `size`,
        // `price`); a `contract` in the query is ignored by Gate, so it is not what the
        // symbol lists are checked against: no symbol, which policy refuses as an order
        // it cannot read (as Coinbase's edits and Kraken's `AmendOrder`).
        ["futures" | "delivery", settle, "orders", _id] if *m == Method::PUT => {
            let b = body()?;
            let mut o = OrderIntent::new("");
            o.quote = Some(settle.to_ascii_uppercase());
            o.size_unit = SizeUnit::Contracts;
            o.quantity = util::json_opt_decimal("size", b.get("size"))?.map(|s| s.abs());
            o.price = util::json_opt_decimal("price", b.get("price"))?;
            orders(vec![o])
        }
        ["futures", settle, "batch_orders"] => {
            let b = body()?;
            let list = b.as_array().ok_or(ParseError::InvalidValue("orders"))?;
            orders(
                list.iter()
                    .map(|o| futures_order(o, settle))
                    .collect::<Result<_, _>>()?,
            )
        }
        ["futures", _, "batch_cancel_orders"] => orders(vec![cancel("")]),
        ["futures", settle, "batch_amend_orders"] => {
            let b = body()?;
            let list = b.as_array().ok_or(ParseError::InvalidValue("orders"))?;
            let mut out = Vec::new();
            for item in list {
                let mut o = OrderIntent::new("");
                o.quote = Some(settle.to_ascii_uppercase());
                o.size_unit = SizeUnit::Contracts;
                o.quantity = util::json_opt_decimal("size", item.get("size"))?.map(|s| s.abs());
                o.price = util::json_opt_decimal("price", item.get("price"))?;
                out.push(o);
            }
            orders(out)
        }
        ["futures" | "delivery", settle, "price_orders"] => {
            let b = body()?;
            let initial = field(&b, "initial")?;
            orders(vec![futures_order(initial, settle)?])
        }
        // A position's margin, leverage or risk limit, in single or (dual_comp) hedge mode:
        // the contract's symbol lists and `max_leverage` apply to both.
        ["futures" | "delivery", settle, "positions", contract, what]
        | ["futures", settle, "dual_comp", "positions", contract, what] => {
            let mut o = OrderIntent::new(*contract);
            o.base = split_pair(contract).0;
            o.quote = Some(settle.to_ascii_uppercase());
            o.size_unit = SizeUnit::Contracts;
            if *what == "leverage" {
                let lev =
                    util::pair(&q, "leverage")?.ok_or(ParseError::MissingField("leverage"))?;
                o.leverage = Some(util::parse_decimal("leverage", lev)?);
            }
            orders(vec![o])
        }
        ["futures", _, "dual_mode"] => Ok(RequestIntent::None),
        ["options", "orders"] => {
            let b = body()?;
            let contract = str_field(&b, "contract")?;
            let mut o = OrderIntent::new(contract);
            o.size_unit = SizeUnit::Contracts;
            let size = util::json_decimal("size", field(&b, "size")?)?;
            o.side = Some(if size.is_sign_negative() {
                Side::Sell
            } else {
                Side::Buy
            });
            o.quantity = Some(size.abs());
            // As futures: price 0 (with `tif: ioc`) is a market order.
            o.price = util::json_opt_decimal("price", b.get("price"))?.filter(|p| !p.is_zero());
            o.price_is_limit = o.price.is_some();
            o.reduce_only = b
                .get("reduce_only")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            orders(vec![o])
        }
        // A loan (`margin/loans`; `margin/uni/loans` and `unified/loans` unless `type` is
        // `repay`): policy refuses it while `max_leverage` is set. Repayments, auto-repay
        // settings and dust conversion only lower exposure.
        ["margin", "loans"] | ["margin", "uni", "loans"] | ["unified", "loans"] => {
            let b = body()?;
            let typed = segs.len() > 2 || segs[0] == "unified";
            if typed && b.get("type").and_then(Value::as_str) == Some("repay") {
                return Ok(RequestIntent::None);
            }
            Ok(RequestIntent::Borrow {
                asset: str_field(&b, "currency")?.to_string(),
                amount: util::json_opt_decimal("amount", b.get("amount"))?,
            })
        }
        ["margin", ..] | ["wallet", "small_balance"] => Ok(RequestIntent::None),
        ["flash_swap", "orders"] => {
            let b = body()?;
            let sell = str_field(&b, "sell_currency")?;
            let buy = str_field(&b, "buy_currency")?;
            let mut o = OrderIntent::new(format!("{buy}_{sell}"));
            o.base = Some(buy.into());
            o.quote = Some(sell.into());
            // selling `sell` for `buy` is the market `sell_buy` too: a list entry for
            // either direction applies
            o.aliases = vec![format!("{sell}_{buy}"), format!("{sell}{buy}")];
            o.side = Some(Side::Buy);
            o.order_type = Some("market".into());
            o.quantity = util::json_opt_decimal("buy_amount", b.get("buy_amount"))?;
            o.quote_amount = util::json_opt_decimal("sell_amount", b.get("sell_amount"))?;
            orders(vec![o])
        }
        _ => Err(ParseError::Malformed("unrecognised trade endpoint".into())),
    }
}

fn parse_withdraw(req: &OutgoingRequest) -> Result<RequestIntent, ParseError> {
    if req.method == Method::DELETE {
        // Cancelling a pending withdrawal sends nothing anywhere.
        return Ok(RequestIntent::None);
    }
    // Withdrawals take their fields from the body alone: a query string beside it could
    // carry a second `chain` or `address` keygate does not read.
    util::no_query_beside_the_body(req)?;
    let v = util::json_request_body(&req.body)?;
    let amount = util::json_decimal("amount", field(&v, "amount")?)?;
    let asset = str_field(&v, "currency")?.to_string();
    if req
        .path
        .trim_end_matches('/')
        .ends_with("/withdrawals/push")
    {
        // Transfer to another Gate user by UID: the UID is the destination.
        let uid = field(&v, "receive_uid")?;
        let uid = uid
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| uid.to_string());
        return Ok(RequestIntent::Withdrawal(WithdrawalIntent {
            asset,
            amount,
            address: format!("uid:{uid}"),
            network: None,
            tag: None,
        }));
    }
    Ok(RequestIntent::Withdrawal(WithdrawalIntent {
        asset,
        amount,
        address: str_field(&v, "address")?.to_string(),
        network: util::json_network(&v, "chain")?,
        tag: util::json_tag(&v, "memo")?,
    }))
}

fn parse_transfer(req: &OutgoingRequest) -> Result<RequestIntent, ParseError> {
    if req.method != Method::POST {
        return Ok(RequestIntent::None);
    }
    let v = util::json_request_body(&req.body)?;
    Ok(RequestIntent::Transfer {
        asset: str_field(&v, "currency")?.to_string(),
        amount: util::json_opt_decimal("amount", v.get("amount"))?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use secrecy::SecretString;
    use std::str::FromStr;

    fn req(method: Method, path: &str, query: Option<&str>, body: &str) -> OutgoingRequest {
        OutgoingRequest {
            method,
            path: path.into(),
            query: query.map(str::to_string),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn one_order(r: &OutgoingRequest) -> OrderIntent {
        match Gate.parse_intent(EndpointClass::Trade, r).unwrap() {
            RequestIntent::Orders { mut orders } => orders.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_table_row_is_reachable_and_withdrawals_are_never_read_or_trade() {
        for (m, p, class) in ROUTES {
            let path = p
                .replace("/**", "/x")
                .replace("futures|delivery", "futures")
                .replace("sub_account_*", "sub_account_balances")
                .replace("{settle}", "usdt")
                .replace("{contract}", "BTC_USDT")
                .replace("{withdrawal_id}", "w1");
            for method in m.split('|') {
                let method = if method == "*" { "POST" } else { method };
                let got = Gate.classify(&Method::from_bytes(method.as_bytes()).unwrap(), &path);
                assert_eq!(got, *class, "{method} {path}");
            }
        }
        use EndpointClass::*;
        for (m, p) in [
            (Method::POST, "/api/v4/withdrawals"),
            (Method::POST, "/api/v4/withdrawals/push"),
            (Method::DELETE, "/api/v4/withdrawals/123"),
        ] {
            assert_eq!(Gate.classify(&m, p), Withdraw);
        }
        assert_eq!(
            Gate.classify(&Method::GET, "/api/v4/wallet/withdrawals"),
            Read
        );
        assert_eq!(Gate.classify(&Method::GET, "/api/v4/spot/accounts"), Read);
        // a sub-account's API keys are `manage`, the rest of sub-accounts `sub_account`
        for (m, p) in [
            (Method::POST, "/api/v4/sub_accounts/123/keys"),
            (Method::PUT, "/api/v4/sub_accounts/123/keys/abc"),
            (Method::DELETE, "/api/v4/sub_accounts/123/keys/abc"),
        ] {
            assert_eq!(Gate.classify(&m, p), Manage, "{m} {p}");
        }
        assert_eq!(
            Gate.classify(&Method::POST, "/api/v4/sub_accounts"),
            SubAccount
        );
        assert_eq!(Gate.classify(&Method::POST, "/api/v4/spot/orders"), Trade);
        assert_eq!(Gate.classify(&Method::DELETE, "/api/v4/spot/orders"), Trade);
        assert_eq!(Gate.classify(&Method::GET, "/api/v4/spot/orders"), Read);
        assert_eq!(
            Gate.classify(
                &Method::POST,
                "/api/v4/futures/usdt/positions/BTC_USDT/leverage"
            ),
            Trade
        );
        assert_eq!(
            Gate.classify(&Method::POST, "/api/v4/wallet/transfers"),
            Transfer
        );
        assert_eq!(
            Gate.classify(&Method::POST, "/api/v4/wallet/sub_account_transfers"),
            SubAccount
        );
        assert_eq!(
            Gate.classify(&Method::POST, "/api/v4/sub_accounts"),
            SubAccount
        );
        assert_eq!(Gate.classify(&Method::GET, "/api/v4/spot/tickers"), Public);
        assert_eq!(
            Gate.classify(&Method::POST, "/api/v4/earn/uni/lends"),
            Unknown
        );
        assert_eq!(
            Gate.classify(&Method::POST, "/api/v4/wallet/deposit_address"),
            Unknown
        );
        assert_eq!(
            Gate.classify(&Method::GET, "/api/v5/spot/accounts"),
            Unknown
        );
    }

    #[test]
    fn parses_orders() {
        let o = one_order(&req(
            Method::POST,
            "/api/v4/spot/orders",
            None,
            r#"{"currency_pair":"BTC_USDT","type":"market","side":"buy","amount":"100"}"#,
        ));
        assert_eq!((o.quote_amount, o.quantity), (Some(d("100")), None));
        assert_eq!(o.quote.as_deref(), Some("USDT"));
        let o = one_order(&req(
            Method::POST,
            "/api/v4/spot/orders",
            None,
            r#"{"currency_pair":"BTC_USDT","side":"sell","amount":"0.5","price":"40000"}"#,
        ));
        assert_eq!((o.quantity, o.price), (Some(d("0.5")), Some(d("40000"))));
        assert_eq!(o.order_type.as_deref(), Some("limit"));
        let o = one_order(&req(
            Method::POST,
            "/api/v4/futures/usdt/orders",
            None,
            r#"{"contract":"BTC_USDT","size":-3,"price":"0","tif":"ioc","reduce_only":true}"#,
        ));
        assert_eq!(o.side, Some(Side::Sell));
        assert_eq!(o.quantity, Some(d("3")));
        assert_eq!(o.size_unit, SizeUnit::Contracts);
        assert_eq!(o.order_type.as_deref(), Some("market"));
        assert!(o.reduce_only);
        let o = one_order(&req(
            Method::POST,
            "/api/v4/futures/usdt/positions/BTC_USDT/leverage",
            Some("leverage=10"),
            "",
        ));
        assert_eq!(o.leverage, Some(d("10")));
        // hedge mode's leverage too (before, it was not checked at all)
        let o = one_order(&req(
            Method::POST,
            "/api/v4/futures/usdt/dual_comp/positions/DOGE_USDT/leverage",
            Some("leverage=100"),
            "",
        ));
        assert_eq!(
            (o.symbol.as_str(), o.leverage),
            ("DOGE_USDT", Some(d("100")))
        );
        for path in [
            "/api/v4/futures/usdt/dual_comp/positions/DOGE_USDT",
            "/api/v4/futures/usdt/dual_comp/positions/DOGE_USDT/leverage",
        ] {
            let q = path
                .ends_with("leverage")
                .then_some("cross_leverage_limit=100");
            let r = req(Method::POST, path, q, "");
            assert!(
                Gate.parse_intent(EndpointClass::Trade, &r).is_err(),
                "{path}"
            );
        }
        let o = one_order(&req(
            Method::DELETE,
            "/api/v4/spot/orders",
            Some("currency_pair=ETH_USDT"),
            "",
        ));
        assert!(o.is_cancel);
        assert_eq!(o.symbol, "ETH_USDT");
        for bad in ["", "{}", r#"{"currency_pair":"BTC_USDT","side":"buy"}"#] {
            let r = req(Method::POST, "/api/v4/spot/orders", None, bad);
            assert!(
                Gate.parse_intent(EndpointClass::Trade, &r).is_err(),
                "{bad}"
            );
        }
        let r = req(
            Method::POST,
            "/api/v4/futures/usdt/orders",
            None,
            r#"{"contract":"BTC_USDT","size":0}"#,
        );
        assert!(Gate.parse_intent(EndpointClass::Trade, &r).is_err());
        let r = req(Method::POST, "/api/v4/spot/something_new", None, "{}");
        assert!(Gate.parse_intent(EndpointClass::Trade, &r).is_err());
    }

    // A futures amendment names no contract: Gate ignores a `contract` in the query, so
    // it is not taken as the order's symbol (before, a DOGE order could be resized while
    // the symbol lists checked `?contract=BTC_USDT`). A flash swap selling an asset is
    // known by that direction's market name too.
    #[test]
    fn amendments_and_swaps_are_checked_on_the_market_gate_trades() {
        let o = one_order(&req(
            Method::PUT,
            "/api/v4/futures/usdt/orders/123456789",
            Some("contract=BTC_USDT"),
            r#"{"size": -50000}"#,
        ));
        assert_eq!(
            o.symbol, "",
            "no symbol: policy refuses it under symbol lists"
        );
        assert_eq!(o.quantity, Some(d("50000")));
        let o = one_order(&req(
            Method::POST,
            "/api/v4/flash_swap/orders",
            None,
            r#"{"sell_currency":"DOGE","sell_amount":"1000","buy_currency":"USDT","buy_amount":"100"}"#,
        ));
        assert_eq!(o.symbol, "USDT_DOGE");
        assert!(
            o.aliases.iter().any(|a| a == "DOGE_USDT"),
            "{:?}",
            o.aliases
        );
    }

    // A margin or unified loan is a `Borrow`, unless its `type` is `repay`.
    #[test]
    fn loans_are_marked() {
        let parse = |path: &str, body: &str| {
            Gate.parse_intent(EndpointClass::Trade, &req(Method::POST, path, None, body))
                .unwrap()
        };
        for path in ["/api/v4/margin/uni/loans", "/api/v4/unified/loans"] {
            assert!(matches!(
                parse(path, r#"{"currency":"USDT","type":"borrow","amount":"1000"}"#),
                RequestIntent::Borrow { ref asset, .. } if asset == "USDT"
            ));
            assert_eq!(
                parse(
                    path,
                    r#"{"currency":"USDT","type":"repay","amount":"1000"}"#
                ),
                RequestIntent::None
            );
        }
        assert!(matches!(
            parse(
                "/api/v4/margin/loans",
                r#"{"currency":"USDT","amount":"1000","side":"borrow"}"#
            ),
            RequestIntent::Borrow { .. }
        ));
    }

    #[test]
    fn parses_withdrawals_and_transfers() {
        let r = req(
            Method::POST,
            "/api/v4/withdrawals",
            None,
            r#"{"currency":"USDT","amount":"25.5","address":"0xabc","chain":"ETH","memo":""}"#,
        );
        assert_eq!(
            Gate.parse_intent(EndpointClass::Withdraw, &r).unwrap(),
            RequestIntent::Withdrawal(WithdrawalIntent {
                asset: "USDT".into(),
                amount: d("25.5"),
                address: "0xabc".into(),
                network: Some("ETH".into()),
                tag: None,
            })
        );
        let r = req(
            Method::POST,
            "/api/v4/withdrawals/push",
            None,
            r#"{"receive_uid":12233,"currency":"USDT","amount":"1"}"#,
        );
        let RequestIntent::Withdrawal(w) = Gate.parse_intent(EndpointClass::Withdraw, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(w.address, "uid:12233");
        let r = req(
            Method::POST,
            "/api/v4/withdrawals",
            None,
            r#"{"currency":"USDT"}"#,
        );
        assert!(Gate.parse_intent(EndpointClass::Withdraw, &r).is_err());
        let r = req(
            Method::POST,
            "/api/v4/wallet/transfers",
            None,
            r#"{"currency":"USDT","amount":"10","from":"spot","to":"futures","settle":"usdt"}"#,
        );
        assert_eq!(
            Gate.parse_intent(EndpointClass::Transfer, &r).unwrap(),
            RequestIntent::Transfer {
                asset: "USDT".into(),
                amount: Some(d("10"))
            }
        );
    }

    #[test]
    fn balances_key_check_rate_limits_errors() {
        let b = Gate
            .parse_balances(
                br#"[{"currency":"ETH","available":"0.5","locked":"0.25","update_id":1}]"#,
            )
            .unwrap();
        assert_eq!(
            (b[0].free, b[0].locked, b[0].total),
            (d("0.5"), d("0.25"), d("0.75"))
        );
        assert!(Gate.parse_balances(br#"{"label":"INVALID_KEY"}"#).is_err());

        let kc = Gate
            .parse_key_check(br#"{"state":1,"mode":1,"name":["bot"],"user_id":1,"ip_whitelist":["1.2.3.4"],"perms":[{"name":"spot","read_only":false},{"name":"wallet","read_only":true}]}"#)
            .unwrap();
        assert!(
            kc.can_read && kc.can_trade && !kc.can_withdraw && !kc.can_transfer && kc.ip_restricted
        );
        assert!(kc.warnings.is_empty(), "{:?}", kc.warnings);
        let kc = Gate
            .parse_key_check(
                br#"[{"state":2,"ip_whitelist":[],"perms":[{"name":"wallet","read_only":false}]}]"#,
            )
            .unwrap();
        assert!(kc.can_withdraw && kc.can_transfer && !kc.ip_restricted);
        assert!(kc.warnings.iter().any(|w| w.contains("locked")));
        let kc = Gate
            .parse_key_check(
                br#"{"user_id":1,"ip_whitelist":[],"currency_pairs":[],"key":{"mode":1}}"#,
            )
            .unwrap();
        assert!(kc.warnings.iter().any(|w| w.contains("did not report")));

        let mut h = HeaderMap::new();
        h.insert("x-gate-ratelimit-requests-remain", "9".parse().unwrap());
        h.insert("x-gate-ratelimit-limit", "10".parse().unwrap());
        h.insert(
            "x-gate-ratelimit-reset-timestamp",
            "1700000001000".parse().unwrap(),
        );
        let rl = Gate.rate_limit(&h).unwrap();
        assert_eq!(
            rl,
            RateLimitStatus {
                used: Some(1),
                limit: Some(10),
                remaining: Some(9),
                reset_at_ms: Some(1_700_000_001_000),
                reset_in_ms: None,
            }
        );
        assert_eq!(Gate.rate_limit(&HeaderMap::new()), None);

        let e = |s, b: &str| Gate.classify_error(s, b.as_bytes());
        assert_eq!(e(200, "[]"), None);
        assert_eq!(
            e(401, r#"{"label":"INVALID_KEY","message":"x"}"#),
            Some(ErrorKind::InvalidKey)
        );
        assert_eq!(
            e(401, r#"{"label":"INVALID_SIGNATURE"}"#),
            Some(ErrorKind::BadSignature)
        );
        assert_eq!(
            e(401, r#"{"label":"REQUEST_EXPIRED"}"#),
            Some(ErrorKind::TimestampOutOfWindow)
        );
        assert_eq!(
            e(403, r#"{"label":"FORBIDDEN"}"#),
            Some(ErrorKind::PermissionDenied)
        );
        assert_eq!(
            e(403, r#"{"label":"IP_FORBIDDEN"}"#),
            Some(ErrorKind::IpNotAllowed)
        );
        assert_eq!(
            e(429, r#"{"label":"TOO_MANY_REQUESTS"}"#),
            Some(ErrorKind::RateLimited)
        );
        assert_eq!(
            e(400, r#"{"label":"BALANCE_NOT_ENOUGH"}"#),
            Some(ErrorKind::InsufficientBalance)
        );
        assert_eq!(
            e(400, r#"{"label":"INVALID_PARAM_VALUE"}"#),
            Some(ErrorKind::Unknown)
        );
    }

    #[test]
    fn signs_like_gate_docs_gen_sign() {
        // Gate's documented Python gen_sign, computed independently.
        let creds = ApiCredentials {
            api_key: SecretString::from("key"),
            api_secret: Some(SecretString::from("secret")),
            passphrase: None,
            private_key: None,
        };
        let ctx = SignContext {
            now_ms: 1_700_000_000_999,
            nonce: 0,
            random_nonce: [0; 16],
            environment: Environment::Testnet,
            host: "api-testnet.gateapi.io".into(),
            recv_window_ms: None,
        };
        let body = r#"{"currency_pair":"ETH_BTC","side":"buy","amount":"1","price":"5"}"#;
        let mut r = req(Method::POST, "/api/v4/spot/orders", Some("a=1"), body);
        r.headers.insert("sign", "client".parse().unwrap());
        r.headers.insert("timestamp", "1".parse().unwrap());
        Gate.strip_auth(&mut r);
        assert!(r.headers.is_empty());
        Gate.sign(&mut r, &creds, &ctx).unwrap();
        let payload = format!(
            "POST\n/api/v4/spot/orders\na=1\n{}\n1700000000",
            util::hex_lower(&util::sha512(body.as_bytes()))
        );
        assert_eq!(
            r.headers["sign"],
            util::hex_lower(&util::hmac_sha512(b"secret", payload.as_bytes())).as_str()
        );
        assert_eq!(r.headers["timestamp"], "1700000000");
        assert_eq!(r.headers["key"], "key");
    }

    #[test]
    fn market_price_is_not_a_limit() {
        let o = one_order(&req(
            Method::POST,
            "/api/v4/spot/orders",
            None,
            r#"{"currency_pair":"BTC_USDT","type":"market","side":"sell","amount":"100","price":"0.01"}"#,
        ));
        assert_eq!(o.price, Some(d("0.01")));
        assert!(!o.price_is_limit);
        let o = one_order(&req(
            Method::POST,
            "/api/v4/spot/orders",
            None,
            r#"{"currency_pair":"BTC_USDT","side":"sell","amount":"1","price":"60000","time_in_force":"poc"}"#,
        ));
        assert!(o.price_is_limit);
        let o = one_order(&req(
            Method::POST,
            "/api/v4/futures/usdt/orders",
            None,
            r#"{"contract":"BTC_USDT","size":10,"price":"60000","tif":"gtc"}"#,
        ));
        assert!(o.price_is_limit);
        let o = one_order(&req(
            Method::POST,
            "/api/v4/futures/usdt/orders",
            None,
            r#"{"contract":"BTC_USDT","size":10,"price":"0","tif":"ioc"}"#,
        ));
        assert!(!o.price_is_limit);
    }

    #[test]
    fn futures_close_flags_only_as_gate_documents_them() {
        let parse = |body: &str| {
            Gate.parse_intent(
                EndpointClass::Trade,
                &req(Method::POST, "/api/v4/futures/usdt/orders", None, body),
            )
        };
        let ro = |body: &str| match parse(body).unwrap() {
            RequestIntent::Orders { orders } => orders[0].reduce_only,
            other => panic!("{other:?}"),
        };
        assert!(ro(
            r#"{"contract":"BTC_USDT","size":0,"price":"0","tif":"ioc","auto_size":"close_long"}"#
        ));
        assert!(ro(
            r#"{"contract":"BTC_USDT","size":0,"price":"0","tif":"ioc","close":true}"#
        ));
        assert!(ro(
            r#"{"contract":"BTC_USDT","size":5,"price":"0","tif":"ioc","reduce_only":true}"#
        ));
        // With a size, `auto_size` and `close` do not make a close: the size counts.
        assert!(!ro(
            r#"{"contract":"BTC_USDT","size":500,"price":"0","tif":"ioc","auto_size":"close_long"}"#
        ));
        assert!(!ro(
            r#"{"contract":"BTC_USDT","size":500,"price":"0","tif":"ioc","close":true}"#
        ));
        assert!(!ro(
            r#"{"contract":"BTC_USDT","size":500,"price":"0","tif":"ioc","reduce_only":"true"}"#
        ));
        for bad in [
            r#"{"contract":"BTC_USDT","size":500,"price":"0","auto_size":null}"#,
            r#"{"contract":"BTC_USDT","size":500,"price":"0","auto_size":"close_both"}"#,
            r#"{"contract":"BTC_USDT","size":500,"price":"0","auto_size":true}"#,
            r#"{"contract":"BTC_USDT","size":0,"price":"0","auto_size":""}"#,
            r#"{"contract":"BTC_USDT","size":0,"price":"0","auto_size":null}"#,
        ] {
            match parse(bad) {
                Err(_) => {}
                Ok(RequestIntent::Orders { orders }) => {
                    assert!(!orders[0].reduce_only, "{bad}")
                }
                Ok(other) => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn repeated_or_conflicting_parameters_are_refused() {
        let r = req(
            Method::DELETE,
            "/api/v4/spot/orders",
            Some("currency_pair=ETH_USDT&currency_pair=BTC_USDT"),
            "",
        );
        assert!(Gate.parse_intent(EndpointClass::Trade, &r).is_err());
        let r = req(
            Method::POST,
            "/api/v4/futures/usdt/positions/BTC_USDT/leverage",
            Some("leverage=2&leverage=100"),
            "",
        );
        assert!(Gate.parse_intent(EndpointClass::Trade, &r).is_err());
        let r = req(
            Method::PATCH,
            "/api/v4/spot/orders/1",
            Some("currency_pair=BTC_USDT"),
            r#"{"currency_pair":"PEPE_USDT","amount":"1"}"#,
        );
        assert!(Gate.parse_intent(EndpointClass::Trade, &r).is_err());
        let r = req(
            Method::POST,
            "/api/v4/spot/price_orders",
            None,
            r#"{"market":"BTC_USDT","trigger":{"price":"1","rule":">=","expiration":60},"put":{"currency_pair":"PEPE_USDT","type":"limit","side":"buy","price":"1","amount":"1"}}"#,
        );
        assert!(Gate.parse_intent(EndpointClass::Trade, &r).is_err());
        let r = req(
            Method::POST,
            "/api/v4/withdrawals",
            None,
            r#"{"currency":"USDT","amount":"1","address":"0xallowed","address":"0xattacker"}"#,
        );
        assert!(Gate.parse_intent(EndpointClass::Withdraw, &r).is_err());
    }
}
