//! KuCoin spot/margin REST API with v2 API keys
//! (<https://www.kucoin.com/docs-new/authentication>).
//!
//! Signing: `KC-API-SIGN` = base64 HMAC-SHA256(secret, timestamp + METHOD + path[?query] +
//! body); with key version 2 the passphrase is sent as base64 HMAC-SHA256(secret,
//! passphrase). The query is signed exactly as it is sent.
//!
//! Differences from CCXT, on purpose:
//! - CCXT adds broker headers (`KC-API-PARTNER`, `KC-API-PARTNER-SIGN`,
//!   `KC-API-PARTNER-VERIFY`) signed with *CCXT's own* partner key, which attributes the
//!   user's volume to CCXT's broker account. keygate is not CCXT: it strips them (with every
//!   other `KC-API-*` header) and does not add them. KuCoin accepts requests without them.
//! - KuCoin retired its sandbox (`openapi-sandbox.kucoin.com`) in 2023 and CCXT dropped it,
//!   so there is no testnet host.

use http::{HeaderMap, Method};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::util::{self, RouteRow};
use crate::*;

/// `kucoin` API.
pub struct Kucoin;

use EndpointClass::{Manage, Public, Read, SubAccount, Trade, Transfer as Xfer, Withdraw as Wd};

/// Endpoint classes, first match wins. Sources: KuCoin REST docs (docs-new), CCXT's
/// `kucoin.describe()['api']`.
pub const ROUTES: &[RouteRow] = &[
    // Public market data.
    ("GET", "/api/v1/market/**", Public),
    ("GET", "/api/v1/symbols/**", Public),
    ("GET", "/api/v2/symbols/**", Public),
    ("GET", "/api/v1/currencies/**", Public),
    ("GET", "/api/v3/currencies/**", Public),
    ("GET", "/api/v1/prices", Public),
    ("GET", "/api/v1/timestamp", Public),
    ("GET", "/api/v1/status", Public),
    ("GET", "/api/v1/mark-price/**", Public),
    ("GET", "/api/v1/margin/config", Public),
    ("POST", "/api/v1/bullet-public", Public),
    // Transfers between the user's own account types (main, trade, margin, ...).
    // Universal transfer can also move funds to a sub-account (`PARENT_TO_SUB`); it is the
    // endpoint CCXT uses for every `transfer()`, so it stays `transfer` as one family.
    ("POST", "/api/v2/accounts/inner-transfer", Xfer),
    ("POST", "/api/v1/accounts/inner-transfer", Xfer),
    ("POST", "/api/v3/accounts/universal-transfer", Xfer),
    // Master <-> sub-account transfers move funds out of this account into another
    // account (possibly operated by someone else): `sub_account`, not plain `transfer`.
    ("POST", "/api/v2/accounts/sub-transfer", SubAccount),
    ("POST", "/api/v1/accounts/sub-transfer", SubAccount),
    ("POST", "/api/v1/accounts", Manage),
    ("GET", "/api/v1/accounts/**", Read),
    ("GET", "/api/v2/accounts/**", Read),
    ("GET", "/api/v3/accounts/**", Read),
    ("GET", "/api/v1/hf/accounts/**", Read),
    ("GET", "/api/v1/user-info", Read),
    ("GET", "/api/v2/user-info", Read),
    ("GET", "/api/v1/user/api-key", Read),
    ("GET", "/api/v1/base-fee", Read),
    ("GET", "/api/v1/trade-fees", Read),
    ("POST", "/api/v1/bullet-private", Read),
    // Orders (classic, high-frequency, stop, OCO, margin).
    ("GET", "/api/v1/orders/**", Read),
    ("POST|DELETE", "/api/v1/orders/**", Trade),
    ("GET", "/api/v1/order/client-order/{clientOid}", Read),
    ("GET", "/api/v1/hf/orders/**", Read),
    ("POST|DELETE", "/api/v1/hf/orders/**", Trade),
    ("GET", "/api/v1/stop-order/**", Read),
    ("POST|DELETE", "/api/v1/stop-order/**", Trade),
    ("GET", "/api/v3/oco/**", Read),
    ("POST|DELETE", "/api/v3/oco/**", Trade),
    ("GET", "/api/v1/fills", Read),
    ("GET", "/api/v1/limit/orders", Read),
    ("GET", "/api/v1/limit/fills", Read),
    ("GET", "/api/v1/hf/fills", Read),
    ("POST", "/api/v1/margin/order", Trade),
    ("POST", "/api/v1/margin/order/test", Trade),
    ("GET", "/api/v3/hf/margin/**", Read),
    ("POST|DELETE", "/api/v3/hf/margin/order/**", Trade),
    ("GET", "/api/v1/hf/margin/**", Read),
    ("POST|DELETE", "/api/v1/hf/margin/order/**", Trade),
    // Margin borrowing changes exposure: trade.
    ("POST", "/api/v3/margin/borrow", Trade),
    ("POST", "/api/v3/margin/repay", Trade),
    ("POST", "/api/v1/margin/borrow", Trade),
    ("POST", "/api/v1/margin/repay/**", Trade),
    ("POST", "/api/v3/position/update-user-leverage", Trade),
    ("GET", "/api/v1/margin/**", Read),
    ("GET", "/api/v3/margin/**", Read),
    ("GET", "/api/v1/isolated/**", Read),
    ("GET", "/api/v3/isolated/**", Read),
    ("GET", "/api/v1/risk/limit/strategy", Read),
    // Deposits (creating a deposit address cannot move funds out).
    ("GET", "/api/v1/deposits", Read),
    ("GET|POST", "/api/v1/deposit-addresses", Read),
    ("GET", "/api/v2/deposit-addresses", Read),
    ("GET", "/api/v3/deposit-addresses", Read),
    ("POST", "/api/v3/deposit-address/create", Read),
    ("GET", "/api/v1/hist-deposits", Read),
    // Withdrawals: applying and cancelling are `withdraw`, never read/trade.
    ("POST", "/api/v1/withdrawals", Wd),
    ("POST", "/api/v3/withdrawals", Wd),
    ("DELETE", "/api/v1/withdrawals/{withdrawalId}", Wd),
    ("GET", "/api/v1/withdrawals/quotas", Read),
    ("GET", "/api/v1/withdrawals/**", Read),
    ("GET", "/api/v1/hist-withdrawals", Read),
    // Sub-accounts' API keys are `manage`, as on Binance, OKX, Bybit and Bitget: a key
    // made there is one keygate never sees, with none of this connection's limits.
    ("POST|DELETE", "/api/v1/sub/api-key", Manage),
    ("POST|DELETE", "/api/v1/sub/api-key/**", Manage),
    // Sub-accounts: creation, balances and transfers.
    ("*", "/api/v1/sub/**", SubAccount),
    ("*", "/api/v2/sub/**", SubAccount),
    ("*", "/api/v1/sub-accounts/**", SubAccount),
    ("*", "/api/v2/sub-accounts/**", SubAccount),
];

impl Exchange for Kucoin {
    fn id(&self) -> ExchangeId {
        ExchangeId::Kucoin
    }

    fn hosts(&self) -> Hosts {
        Hosts {
            production: "https://api.kucoin.com",
            testnet: None,
        }
    }

    fn strip_auth(&self, req: &mut OutgoingRequest) {
        // KC-API-KEY, -SIGN, -TIMESTAMP, -PASSPHRASE, -KEY-VERSION, -PARTNER*, and broker
        // attribution.
        util::remove_headers(&mut req.headers, &[], &["kc-api-", "kc-broker-"]);
    }

    fn classify(&self, method: &Method, path: &str) -> EndpointClass {
        // Everything not listed (public or private) is `Unknown`: fail closed.
        util::route_class(ROUTES, method, path).unwrap_or(EndpointClass::Unknown)
    }

    fn sign(
        &self,
        req: &mut OutgoingRequest,
        creds: &ApiCredentials,
        ctx: &SignContext,
    ) -> Result<(), SignError> {
        let secret = creds.api_secret.as_ref().ok_or(SignError::MissingSecret)?;
        let passphrase = creds
            .passphrase
            .as_ref()
            .ok_or(SignError::MissingPassphrase)?;
        let secret = secret.expose_secret().as_bytes();
        let timestamp = ctx.now_ms.to_string();

        let mut prehash = Vec::with_capacity(64 + req.path.len() + req.body.len());
        prehash.extend_from_slice(timestamp.as_bytes());
        prehash.extend_from_slice(req.method.as_str().as_bytes());
        prehash.extend_from_slice(req.path.as_bytes());
        if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
            prehash.push(b'?');
            prehash.extend_from_slice(q.as_bytes());
        }
        prehash.extend_from_slice(&req.body);

        let signature = util::b64(&util::hmac_sha256(secret, &prehash));
        let passphrase = util::b64(&util::hmac_sha256(
            secret,
            passphrase.expose_secret().as_bytes(),
        ));
        let key = creds.api_key.expose_secret();
        let h = &mut req.headers;
        set_text_header(h, "kc-api-key", key)?;
        util::set_header(h, "kc-api-sign", &signature);
        util::set_header(h, "kc-api-timestamp", &timestamp);
        util::set_header(h, "kc-api-passphrase", &passphrase);
        util::set_header(h, "kc-api-key-version", "2");
        // keygate read the body as JSON, whatever type the client named: so does KuCoin
        if !req.body.is_empty() {
            util::set_header(h, "content-type", "application/json");
        }
        Ok(())
    }

    fn parse_intent(
        &self,
        class: EndpointClass,
        req: &OutgoingRequest,
    ) -> Result<RequestIntent, ParseError> {
        util::no_query_beside_the_body(req)?;
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
            path: "/api/v1/accounts",
            query: None,
        }
    }

    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError> {
        let data = ok_data(body)?;
        let rows = data.as_array().ok_or(ParseError::InvalidValue("data"))?;
        rows.iter()
            .map(|row| {
                let asset = str_field(row, "currency")?.to_string();
                let free = util::json_decimal("available", field(row, "available")?)?;
                let locked = util::json_decimal("holds", field(row, "holds")?)?;
                let total = match util::json_opt_decimal("balance", row.get("balance"))? {
                    Some(t) => t,
                    None => free + locked,
                };
                Ok(Balance {
                    asset,
                    free,
                    locked,
                    total,
                    account_type: row.get("type").and_then(Value::as_str).map(str::to_string),
                })
            })
            .collect()
    }

    fn key_check_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/api/v1/user/api-key",
            query: None,
        }
    }

    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError> {
        let data = ok_data(body)?;
        // "General,Spot,Margin,Futures,InnerTransfer,Transfer,Earn,Withdrawal,..."
        let permission = str_field(&data, "permission")?;
        let perms: Vec<String> = permission
            .split(',')
            .map(|p| p.trim().to_ascii_lowercase())
            .filter(|p| !p.is_empty())
            .collect();
        let has = |names: &[&str]| perms.iter().any(|p| names.contains(&p.as_str()));
        let ip = data
            .get("ipWhitelist")
            .and_then(Value::as_str)
            .unwrap_or("");
        let mut check = KeyCheck {
            can_read: has(&["general"]),
            can_trade: has(&["spot", "margin", "futures", "hftrade", "leveragedtoken"]),
            can_withdraw: perms.iter().any(|p| p.starts_with("withdraw")),
            can_transfer: has(&["innertransfer", "transfer"]),
            ip_restricted: !ip.trim().is_empty(),
            expires_at_ms: None,
            warnings: Vec::new(),
        }
        .with_standard_warnings();
        if data.get("isMaster").and_then(Value::as_bool) == Some(false) {
            check.warnings.push("sub-account key".into());
        }
        Ok(check)
    }

    fn request_cost(&self, req: &OutgoingRequest) -> Vec<Charge> {
        crate::kucoin_weights::cost(&req.method, &req.path)
    }

    /// The pool `method path` counts in: the answer's headers are about it. An endpoint
    /// whose pool is not known teaches nothing (its answer names no budget it was
    /// charged in).
    fn endpoint_budget(&self, method: &Method, path: &str) -> Option<Budget> {
        crate::kucoin_weights::pool(method, path).cloned()
    }

    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitStatus> {
        // gw-ratelimit-reset is a countdown in ms, not an instant (this crate has no
        // clock): `reset_in_ms`
        let limit = header_u64(headers, "gw-ratelimit-limit");
        let remaining = header_u64(headers, "gw-ratelimit-remaining");
        if limit.is_none() && remaining.is_none() {
            return None;
        }
        Some(RateLimitStatus {
            used: limit.zip(remaining).map(|(l, r)| l.saturating_sub(r)),
            limit,
            remaining,
            reset_at_ms: None,
            reset_in_ms: header_u64(headers, "gw-ratelimit-reset")
                .and_then(|r| i64::try_from(r).ok()),
        })
    }

    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind> {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let code = json.as_ref().and_then(|v| v.get("code")).map(|c| match c {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        });
        match code.as_deref() {
            Some("200000") | Some("200") if status < 400 => return None,
            Some(code) => {
                if let Some(kind) = kind_for_code(code) {
                    return Some(kind);
                }
            }
            None if status < 400 => return None,
            None => {}
        }
        Some(match status {
            401 => ErrorKind::InvalidKey,
            403 => ErrorKind::PermissionDenied,
            429 => ErrorKind::RateLimited,
            _ => ErrorKind::Unknown,
        })
    }
}

/// KuCoin error codes (<https://www.kucoin.com/docs-new/error-code/spot>).
fn kind_for_code(code: &str) -> Option<ErrorKind> {
    Some(match code {
        // 400001 auth headers missing, 400003 key does not exist, 400004 wrong passphrase.
        "400001" | "400003" | "400004" => ErrorKind::InvalidKey,
        "400002" => ErrorKind::TimestampOutOfWindow,
        "400005" => ErrorKind::BadSignature,
        "400006" => ErrorKind::IpNotAllowed,
        // 400007 access denied (permission), 411100 user frozen.
        "400007" | "411100" => ErrorKind::PermissionDenied,
        "429000" => ErrorKind::RateLimited,
        // 200004 balance insufficient; 300000/400100 carry other validation errors.
        "200004" | "115017" | "260100" => ErrorKind::InsufficientBalance,
        _ => return None,
    })
}

fn set_text_header(h: &mut HeaderMap, name: &'static str, v: &str) -> Result<(), SignError> {
    let value = http::HeaderValue::from_str(v)
        .map_err(|_| SignError::InvalidRequest("api key is not valid header text"))?;
    h.insert(http::HeaderName::from_static(name), value);
    Ok(())
}

fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// `data` of a `{"code":"200000","data":...}` envelope.
fn ok_data(body: &[u8]) -> Result<Value, ParseError> {
    let mut v = util::json_body(body)?;
    let code = v.get("code").map(|c| match c {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    });
    if code.as_deref() != Some("200000") {
        return Err(ParseError::InvalidValue("code"));
    }
    v.get_mut("data")
        .map(Value::take)
        .ok_or(ParseError::MissingField("data"))
}

fn field<'a>(v: &'a Value, name: &'static str) -> Result<&'a Value, ParseError> {
    v.get(name).ok_or(ParseError::MissingField(name))
}

fn str_field<'a>(v: &'a Value, name: &'static str) -> Result<&'a str, ParseError> {
    field(v, name)?
        .as_str()
        .ok_or(ParseError::InvalidValue(name))
}

fn query_pairs(req: &OutgoingRequest) -> Vec<(String, String)> {
    req.query
        .as_deref()
        .map(util::decode_pairs)
        .unwrap_or_default()
}

fn split_symbol(symbol: &str) -> (Option<String>, Option<String>) {
    match symbol.split_once('-') {
        Some((b, q)) if !b.is_empty() && !q.is_empty() => {
            (Some(b.to_string()), Some(q.to_string()))
        }
        _ => (None, None),
    }
}

/// One order. `settled` is the symbol a batch already settled (see [`batch_orders`]).
///
/// KuCoin's spot and margin APIs have no reduce-only order (the flag belongs to KuCoin
/// Futures, a different API): a `reduceOnly` field here is ignored by KuCoin, so every order
/// is sized, whatever it says.
fn parse_order(v: &Value, settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    let symbol = match settled {
        Some(s) => s,
        None => str_field(v, "symbol")?,
    };
    let mut o = OrderIntent::new(symbol);
    (o.base, o.quote) = split_symbol(symbol);
    o.side = Some(match str_field(v, "side")? {
        s if s.eq_ignore_ascii_case("buy") => Side::Buy,
        s if s.eq_ignore_ascii_case("sell") => Side::Sell,
        _ => return Err(ParseError::InvalidValue("side")),
    });
    // KuCoin's default order type is limit (OCO orders have no type: both legs are limits).
    let order_type = v
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("limit")
        .to_ascii_lowercase();
    o.quantity = util::json_opt_decimal("size", v.get("size"))?;
    o.price = util::json_opt_decimal("price", v.get("price"))?;
    // OCO (`/api/v3/oco/order`): `price` is the limit leg, `limitPrice` the price of the
    // limit order placed when `stopPrice` triggers; one of them fills: size by the higher.
    if let Some(stop_limit) = util::json_opt_decimal("limitPrice", v.get("limitPrice"))? {
        o.price = Some(o.price.map_or(stop_limit, |p| p.max(stop_limit)));
    }
    // A market order (stop-market included) ignores `price`.
    o.price_is_limit = order_type == "limit" && o.price.is_some();
    o.quote_amount = util::json_opt_decimal("funds", v.get("funds"))?;
    if o.quantity.is_none() && o.quote_amount.is_none() {
        return Err(ParseError::MissingField("size"));
    }
    o.order_type = Some(order_type);
    // a margin order may borrow what it trades with (`autoBorrow`, a boolean); another
    // type counts as borrowing
    o.borrows = util::json_flag_set(v, "autoBorrow");
    Ok(o)
}

/// `POST /api/v1/hf/orders/alter`: KuCoin resizes and reprices a resting order from
/// `newSize` and `newPrice` (the side stays the order's, unknown here: policy sizes it at
/// the reference price, or refuses it under a cap). A new order's fields are refused:
/// KuCoin ignores them, and checked instead they would let a 50 BTC resize pass as a tiny
/// order.
fn alter_intent(v: &Value) -> Result<OrderIntent, ParseError> {
    util::json_refuse(v, &["side", "size", "funds", "price", "type"])?;
    let symbol = str_field(v, "symbol")?;
    let mut o = OrderIntent::new(symbol);
    (o.base, o.quote) = split_symbol(symbol);
    o.quantity = util::json_opt_decimal("newSize", v.get("newSize"))?;
    o.price = util::json_opt_decimal("newPrice", v.get("newPrice"))?;
    if o.quantity.is_none() && o.price.is_none() {
        return Err(ParseError::MissingField("newSize"));
    }
    Ok(o)
}

fn cancel_intent(req: &OutgoingRequest, body: Option<&Value>) -> Result<RequestIntent, ParseError> {
    let q = query_pairs(req);
    let symbol = util::pair(&q, "symbol")?
        .map(str::to_string)
        .or_else(|| {
            body.and_then(|b| b.get("symbol"))
                .and_then(Value::as_str)
                .map(str::to_string)
        })
        .unwrap_or_default();
    let mut o = OrderIntent::new(symbol.clone());
    (o.base, o.quote) = split_symbol(&symbol);
    o.is_cancel = true;
    Ok(RequestIntent::Orders { orders: vec![o] })
}

/// `POST .../orders/multi` (and HF `.../multi/sync`). The classic endpoint takes the symbol
/// from the envelope only (KuCoin "Place Multiple Orders": `symbol` top-level, orders
/// without one); the HF endpoints from each order only. A symbol on the other level that
/// differs is refused, not ignored: keygate would check one market and KuCoin trade another.
fn batch_orders(path: &str, body: &Value) -> Result<RequestIntent, ParseError> {
    let envelope_wins = !path.starts_with("/api/v1/hf/");
    let envelope = match body.get("symbol") {
        None => None,
        Some(v) => Some(v.as_str().ok_or(ParseError::InvalidValue("symbol"))?),
    };
    let list = body
        .get("orderList")
        .and_then(Value::as_array)
        .filter(|l| !l.is_empty())
        .ok_or(ParseError::InvalidValue("orderList"))?;
    let orders = list
        .iter()
        .map(|o| {
            let own = match o.get("symbol") {
                None => None,
                Some(v) => Some(v.as_str().ok_or(ParseError::InvalidValue("symbol"))?),
            };
            let symbol = match (envelope, own) {
                (Some(e), Some(i)) if e != i => return Err(ParseError::InvalidValue("symbol")),
                (Some(e), _) if envelope_wins => e,
                (_, Some(i)) if !envelope_wins => i,
                _ => return Err(ParseError::MissingField("symbol")),
            };
            parse_order(o, Some(symbol))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RequestIntent::Orders { orders })
}

fn parse_trade(req: &OutgoingRequest) -> Result<RequestIntent, ParseError> {
    let path = req.path.trim_end_matches('/');
    if req.method == Method::DELETE || path.ends_with("/cancel") || path.contains("/cancel/") {
        let body = (!req.body.is_empty())
            .then(|| util::json_request_body(&req.body))
            .transpose()?;
        return cancel_intent(req, body.as_ref());
    }
    if req.method != Method::POST {
        return Err(ParseError::Malformed("unexpected method".into()));
    }
    if path.ends_with("/margin/repay") || path.contains("/margin/repay/") {
        // A repayment only lowers exposure.
        return Ok(RequestIntent::None);
    }
    let body = util::json_request_body(&req.body)?;
    if path.ends_with("/margin/borrow") {
        // A loan: policy refuses it while `max_leverage` is set.
        return Ok(RequestIntent::Borrow {
            asset: str_field(&body, "currency")?.to_string(),
            amount: util::json_opt_decimal("size", body.get("size"))?,
        });
    }
    if path.ends_with("/position/update-user-leverage") {
        let symbol = body
            .get("symbol")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let mut o = OrderIntent::new(symbol);
        (o.base, o.quote) = split_symbol(symbol);
        o.leverage = util::json_opt_decimal("leverage", body.get("leverage"))?;
        return Ok(RequestIntent::Orders { orders: vec![o] });
    }
    if path.ends_with("/orders/multi") || path.ends_with("/orders/multi/sync") {
        return batch_orders(path, &body);
    }
    if path.ends_with("/hf/orders/alter") {
        return Ok(RequestIntent::Orders {
            orders: vec![alter_intent(&body)?],
        });
    }
    if !body.is_object() {
        return Err(ParseError::InvalidValue("body"));
    }
    // Single-order endpoints read the order's own fields; an `orderList` there is not what
    // KuCoin executes.
    if body.get("orderList").is_some() {
        return Err(ParseError::InvalidValue("orderList"));
    }
    Ok(RequestIntent::Orders {
        orders: vec![parse_order(&body, None)?],
    })
}

fn parse_withdraw(req: &OutgoingRequest) -> Result<RequestIntent, ParseError> {
    if req.method == Method::DELETE {
        // Cancelling a pending withdrawal sends nothing anywhere.
        return Ok(RequestIntent::None);
    }
    let v = util::json_request_body(&req.body)?;
    // v1 (`/api/v1/withdrawals`) sends to `address`, v3 (`/api/v3/withdrawals`) to
    // `toAddress`. A body carrying the other version's field as well (or instead) is
    // refused: keygate must check the address KuCoin pays out to, not a decoy next to it.
    let (address_field, other) = match req.path.trim_end_matches('/') {
        "/api/v1/withdrawals" => ("address", "toAddress"),
        "/api/v3/withdrawals" => ("toAddress", "address"),
        _ => {
            return Err(ParseError::Malformed(
                "no withdrawal parser for this path".into(),
            ))
        }
    };
    if v.get(other).is_some() {
        return Err(ParseError::InvalidValue("address"));
    }
    let address = v
        .get(address_field)
        .and_then(Value::as_str)
        .filter(|a| !a.is_empty())
        .ok_or(ParseError::MissingField("address"))?;
    Ok(RequestIntent::Withdrawal(WithdrawalIntent {
        asset: str_field(&v, "currency")?.to_string(),
        amount: util::json_decimal("amount", field(&v, "amount")?)?,
        address: address.to_string(),
        network: util::json_network(&v, "chain")?,
        tag: util::json_tag(&v, "memo")?,
    }))
}

fn parse_transfer(req: &OutgoingRequest) -> Result<RequestIntent, ParseError> {
    if req.method != Method::POST {
        return Ok(RequestIntent::None);
    }
    let v = util::json_request_body(&req.body)?;
    let asset = str_field(&v, "currency")?.to_string();
    let amount = util::json_opt_decimal("amount", v.get("amount"))?;
    // the universal transfer moves funds to or from a sub-account unless its `type` is
    // `INTERNAL` (or it names another user)
    let universal = req
        .path
        .trim_end_matches('/')
        .ends_with("/universal-transfer");
    let within = !universal
        || (v.get("type").and_then(Value::as_str) == Some("INTERNAL")
            && v.get("toUserId").is_none()
            && v.get("fromUserId").is_none());
    Ok(if within {
        RequestIntent::Transfer { asset, amount }
    } else {
        RequestIntent::SubAccountTransfer { asset, amount }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rust_decimal::Decimal;
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

    // A margin loan is a `Borrow`; a margin order with `autoBorrow` borrows.
    #[test]
    fn loans_and_borrowing_orders_are_marked() {
        let parse = |path: &str, body: &str| {
            Kucoin.parse_intent(Trade, &req(Method::POST, path, None, body))
        };
        assert!(matches!(
            parse("/api/v3/margin/borrow", r#"{"currency":"USDT","size":"1000","timeInForce":"IOC"}"#).unwrap(),
            RequestIntent::Borrow { ref asset, amount: Some(_) } if asset == "USDT"
        ));
        let order = r#"{"clientOid":"1","symbol":"BTC-USDT","side":"buy","type":"limit","price":"1","size":"1""#;
        for (extra, borrows) in [
            ("", false),
            (r#","autoBorrow":false"#, false),
            (r#","autoBorrow":true"#, true),
            (r#","autoBorrow":"true""#, true),
        ] {
            let RequestIntent::Orders { orders } =
                parse("/api/v3/hf/margin/order", &format!("{order}{extra}}}")).unwrap()
            else {
                panic!()
            };
            assert_eq!(orders[0].borrows, borrows, "{extra}");
        }
    }

    #[test]
    fn every_table_row_is_reachable_and_withdrawals_are_never_read_or_trade() {
        for (m, p, class) in ROUTES {
            let path = p
                .replace("/**", "/x")
                .replace("{clientOid}", "abc")
                .replace("{withdrawalId}", "abc");
            let method = m.split('|').next().unwrap();
            let method = if method == "*" { "POST" } else { method };
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let got = Kucoin.classify(&method, &path);
            // An earlier, more specific row may win; it must never be a weaker class for
            // a withdraw row.
            if *class == EndpointClass::Withdraw {
                assert_eq!(got, EndpointClass::Withdraw, "{m} {p}");
            }
            assert_ne!(got, EndpointClass::Unknown, "{m} {p}");
        }
        for (m, p) in [
            ("POST", "/api/v1/withdrawals"),
            ("POST", "/api/v3/withdrawals"),
            ("DELETE", "/api/v1/withdrawals/5bffb63303aa675e8bbe18f9"),
        ] {
            let c = Kucoin.classify(&Method::from_bytes(m.as_bytes()).unwrap(), p);
            assert_eq!(c, EndpointClass::Withdraw);
        }
    }

    #[test]
    fn classes() {
        use EndpointClass::*;
        let c = |m: Method, p: &str| Kucoin.classify(&m, p);
        // a sub-account's API key is `manage`, its transfers and balances `sub_account`
        assert_eq!(c(Method::POST, "/api/v1/sub/api-key"), Manage);
        assert_eq!(c(Method::POST, "/api/v1/sub/api-key/update"), Manage);
        assert_eq!(c(Method::DELETE, "/api/v1/sub/api-key"), Manage);
        assert_eq!(c(Method::POST, "/api/v1/sub/user/created"), SubAccount);
        assert_eq!(c(Method::GET, "/api/v1/accounts"), Read);
        assert_eq!(c(Method::GET, "/api/v1/accounts/ledgers"), Read);
        assert_eq!(c(Method::POST, "/api/v2/accounts/inner-transfer"), Transfer);
        assert_eq!(
            c(Method::POST, "/api/v3/accounts/universal-transfer"),
            Transfer
        );
        assert_eq!(c(Method::POST, "/api/v2/accounts/sub-transfer"), SubAccount);
        assert_eq!(c(Method::POST, "/api/v1/orders"), Trade);
        assert_eq!(c(Method::GET, "/api/v1/orders"), Read);
        assert_eq!(c(Method::DELETE, "/api/v1/orders/abc"), Trade);
        assert_eq!(c(Method::POST, "/api/v1/hf/orders"), Trade);
        assert_eq!(c(Method::GET, "/api/v1/hf/orders/active"), Read);
        assert_eq!(c(Method::GET, "/api/v1/withdrawals"), Read);
        assert_eq!(c(Method::POST, "/api/v1/withdrawals"), Withdraw);
        assert_eq!(c(Method::POST, "/api/v2/sub/user/created"), SubAccount);
        assert_eq!(c(Method::GET, "/api/v1/sub/api-key"), SubAccount);
        assert_eq!(c(Method::POST, "/api/v3/margin/borrow"), Trade);
        assert_eq!(c(Method::GET, "/api/v1/market/orderbook/level1"), Public);
        assert_eq!(c(Method::POST, "/api/v1/earn/orders"), Unknown);
        assert_eq!(c(Method::GET, "/api/v9/something"), Unknown);
        assert_eq!(c(Method::PUT, "/api/v1/orders"), Unknown);
    }

    // An HF order's alteration is read from `newSize`/`newPrice`, what KuCoin applies;
    // before, it was parsed as a new order, so made-up `side`/`size` fields were checked
    // while KuCoin resized the order to `newSize`.
    #[test]
    fn an_alteration_is_read_from_what_kucoin_applies() {
        let alter = |body: &str| {
            Kucoin.parse_intent(
                EndpointClass::Trade,
                &req(Method::POST, "/api/v1/hf/orders/alter", None, body),
            )
        };
        let RequestIntent::Orders { orders } =
            alter(r#"{"symbol":"BTC-USDT","orderId":"1","newSize":"50","newPrice":"60000"}"#)
                .unwrap()
        else {
            panic!()
        };
        assert_eq!(orders[0].quantity, Some(d("50")));
        assert_eq!(orders[0].price, Some(d("60000")));
        assert_eq!(orders[0].side, None);
        assert_eq!(orders[0].base.as_deref(), Some("BTC"));
        for body in [
            r#"{"symbol":"BTC-USDT","orderId":"1","newSize":"50","newPrice":"60000","side":"buy","size":"0.0001","price":"1"}"#,
            r#"{"symbol":"BTC-USDT","orderId":"1","newSize":"50","funds":"1"}"#,
            r#"{"orderId":"1","newSize":"50"}"#,
            r#"{"symbol":"BTC-USDT","orderId":"1"}"#,
        ] {
            assert!(alter(body).is_err(), "{body}");
        }
    }

    #[test]
    fn parses_orders() {
        let r = req(
            Method::POST,
            "/api/v1/orders",
            None,
            r#"{"clientOid":"x","side":"buy","symbol":"BTC-USDT","type":"market","funds":"100"}"#,
        );
        let RequestIntent::Orders { orders } =
            Kucoin.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(orders[0].quote_amount, Some(d("100")));
        assert_eq!(orders[0].quantity, None);
        assert_eq!(orders[0].base.as_deref(), Some("BTC"));
        assert_eq!(orders[0].quote.as_deref(), Some("USDT"));
        assert_eq!(orders[0].side, Some(Side::Buy));

        let r = req(
            Method::POST,
            "/api/v1/hf/orders/multi",
            None,
            r#"{"orderList":[{"symbol":"ETH-USDT","side":"sell","size":"1","price":"2000"}]}"#,
        );
        let RequestIntent::Orders { orders } =
            Kucoin.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(orders[0].order_type.as_deref(), Some("limit"));
        assert_eq!(orders[0].price, Some(d("2000")));

        let r = req(
            Method::DELETE,
            "/api/v1/orders",
            Some("symbol=BTC-USDT"),
            "",
        );
        let RequestIntent::Orders { orders } =
            Kucoin.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert!(orders[0].is_cancel);
        assert_eq!(orders[0].symbol, "BTC-USDT");

        for bad in [
            "",
            "[]",
            r#"{"symbol":"BTC-USDT","side":"up","size":"1"}"#,
            r#"{"symbol":"BTC-USDT","side":"buy"}"#,
        ] {
            let r = req(Method::POST, "/api/v1/orders", None, bad);
            assert!(
                Kucoin.parse_intent(EndpointClass::Trade, &r).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_withdrawals_and_transfers() {
        let r = req(
            Method::POST,
            "/api/v1/withdrawals",
            None,
            r#"{"currency":"USDT","address":"TXYZ","amount":25.5,"chain":"trx","memo":"7"}"#,
        );
        assert_eq!(
            Kucoin.parse_intent(EndpointClass::Withdraw, &r).unwrap(),
            RequestIntent::Withdrawal(WithdrawalIntent {
                asset: "USDT".into(),
                amount: d("25.5"),
                address: "TXYZ".into(),
                network: Some("trx".into()),
                tag: Some("7".into()),
            })
        );
        let r = req(
            Method::POST,
            "/api/v3/withdrawals",
            None,
            r#"{"currency":"USDT"}"#,
        );
        assert!(Kucoin.parse_intent(EndpointClass::Withdraw, &r).is_err());
        let r = req(
            Method::POST,
            "/api/v2/accounts/inner-transfer",
            None,
            r#"{"currency":"BTC","amount":"0.1","from":"main","to":"trade"}"#,
        );
        assert_eq!(
            Kucoin.parse_intent(EndpointClass::Transfer, &r).unwrap(),
            RequestIntent::Transfer {
                asset: "BTC".into(),
                amount: Some(d("0.1"))
            }
        );
        // the universal transfer: within the account only as INTERNAL naming no user
        let universal = |body: &str| {
            Kucoin
                .parse_intent(
                    EndpointClass::Transfer,
                    &req(
                        Method::POST,
                        "/api/v3/accounts/universal-transfer",
                        None,
                        body,
                    ),
                )
                .unwrap()
        };
        assert!(matches!(
            universal(
                r#"{"clientOid":"x","type":"INTERNAL","currency":"USDT","amount":"5","fromAccountType":"MAIN","toAccountType":"TRADE"}"#
            ),
            RequestIntent::Transfer { .. }
        ));
        for body in [
            r#"{"clientOid":"x","type":"PARENT_TO_SUB","toUserId":"u","currency":"USDT","amount":"50000","fromAccountType":"MAIN","toAccountType":"MAIN"}"#,
            r#"{"clientOid":"x","type":"INTERNAL","toUserId":"u","currency":"USDT","amount":"50000","fromAccountType":"MAIN","toAccountType":"MAIN"}"#,
        ] {
            assert!(
                matches!(universal(body), RequestIntent::SubAccountTransfer { .. }),
                "{body}"
            );
        }
        assert_eq!(
            Kucoin.parse_intent(EndpointClass::Transfer, &r).unwrap(),
            RequestIntent::Transfer {
                asset: "BTC".into(),
                amount: Some(d("0.1"))
            }
        );
    }

    #[test]
    fn balances_key_check_rate_limits_errors() {
        let body = br#"{"code":"200000","data":[{"id":"1","currency":"BTC","type":"trade","balance":"1.5","available":"1.2","holds":"0.3"}]}"#;
        let b = Kucoin.parse_balances(body).unwrap();
        assert_eq!(b[0].total, d("1.5"));
        assert_eq!(b[0].free, d("1.2"));
        assert_eq!(b[0].locked, d("0.3"));
        assert_eq!(b[0].account_type.as_deref(), Some("trade"));
        assert!(Kucoin
            .parse_balances(br#"{"code":"400003","msg":"x"}"#)
            .is_err());

        let kc = Kucoin
            .parse_key_check(br#"{"code":"200000","data":{"remark":"bot","apiKey":"k","apiVersion":3,"permission":"General,Spot,Withdrawal","ipWhitelist":"","createdAt":1,"uid":1,"isMaster":true}}"#)
            .unwrap();
        assert!(kc.can_read && kc.can_trade && kc.can_withdraw && !kc.can_transfer);
        assert!(!kc.ip_restricted);
        assert!(kc.warnings.iter().any(|w| w == "withdrawals enabled"));
        let kc = Kucoin
            .parse_key_check(br#"{"code":"200000","data":{"permission":"General","ipWhitelist":"1.2.3.4","isMaster":false}}"#)
            .unwrap();
        assert!(kc.can_read && !kc.can_trade && kc.ip_restricted);
        assert!(kc.warnings.iter().any(|w| w == "sub-account key"));

        let mut h = HeaderMap::new();
        h.insert("gw-ratelimit-limit", "4000".parse().unwrap());
        h.insert("gw-ratelimit-remaining", "3990".parse().unwrap());
        h.insert("gw-ratelimit-reset", "12000".parse().unwrap());
        let rl = Kucoin.rate_limit(&h).unwrap();
        assert_eq!(
            (rl.used, rl.limit, rl.remaining),
            (Some(10), Some(4000), Some(3990))
        );
        assert_eq!(Kucoin.rate_limit(&HeaderMap::new()), None);

        let e = |s, b: &str| Kucoin.classify_error(s, b.as_bytes());
        assert_eq!(e(200, r#"{"code":"200000","data":[]}"#), None);
        assert_eq!(
            e(401, r#"{"code":"400005","msg":"Invalid KC-API-SIGN"}"#),
            Some(ErrorKind::BadSignature)
        );
        assert_eq!(
            e(401, r#"{"code":"400003","msg":"KC-API-KEY not exists"}"#),
            Some(ErrorKind::InvalidKey)
        );
        assert_eq!(
            e(
                401,
                r#"{"code":"400004","msg":"Invalid KC-API-PASSPHRASE"}"#
            ),
            Some(ErrorKind::InvalidKey)
        );
        assert_eq!(
            e(400, r#"{"code":"400002","msg":"KC-API-TIMESTAMP Invalid"}"#),
            Some(ErrorKind::TimestampOutOfWindow)
        );
        assert_eq!(
            e(400, r#"{"code":"400006","msg":"ip"}"#),
            Some(ErrorKind::IpNotAllowed)
        );
        assert_eq!(
            e(403, r#"{"code":"400007","msg":"Access Denied"}"#),
            Some(ErrorKind::PermissionDenied)
        );
        assert_eq!(
            e(429, r#"{"code":"429000","msg":"Too Many Requests"}"#),
            Some(ErrorKind::RateLimited)
        );
        assert_eq!(
            e(200, r#"{"code":"200004","msg":"Balance insufficient!"}"#),
            Some(ErrorKind::InsufficientBalance)
        );
        assert_eq!(e(500, "oops"), Some(ErrorKind::Unknown));
    }

    #[test]
    fn signs_per_kucoin_docs_and_strips_client_auth() {
        // Independent computation of the documented pre-hash string.
        let creds = ApiCredentials {
            api_key: SecretString::from("key"),
            api_secret: Some(SecretString::from("secret")),
            passphrase: Some(SecretString::from("pass")),
            private_key: None,
        };
        let ctx = SignContext {
            now_ms: 1_547_015_186_532,
            nonce: 0,
            random_nonce: [0; 16],
            environment: Environment::Production,
            host: "api.kucoin.com".into(),
            recv_window_ms: None,
        };
        let mut r = req(
            Method::GET,
            "/api/v1/deposit-addresses",
            Some("currency=BTC"),
            "",
        );
        r.headers.insert("kc-api-sign", "client".parse().unwrap());
        r.headers.insert("kc-api-partner", "ccxt".parse().unwrap());
        Kucoin.strip_auth(&mut r);
        assert!(r.headers.is_empty());
        Kucoin.sign(&mut r, &creds, &ctx).unwrap();
        let want = util::b64(&util::hmac_sha256(
            b"secret",
            b"1547015186532GET/api/v1/deposit-addresses?currency=BTC",
        ));
        assert_eq!(r.headers["kc-api-sign"], want.as_str());
        assert_eq!(
            r.headers["kc-api-passphrase"],
            util::b64(&util::hmac_sha256(b"secret", b"pass")).as_str()
        );
        assert_eq!(r.headers["kc-api-key-version"], "2");
        assert_eq!(r.headers["kc-api-timestamp"], "1547015186532");
        assert!(r.headers.get("kc-api-partner").is_none());

        let no_pass = ApiCredentials {
            passphrase: None,
            ..creds
        };
        assert_eq!(
            Kucoin.sign(&mut r, &no_pass, &ctx),
            Err(SignError::MissingPassphrase)
        );
    }

    fn trade(path: &str, body: &str) -> Result<Vec<OrderIntent>, ParseError> {
        match Kucoin.parse_intent(EndpointClass::Trade, &req(Method::POST, path, None, body))? {
            RequestIntent::Orders { orders } => Ok(orders),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn market_price_is_not_a_limit_and_reduce_only_is_ignored() {
        let o = trade(
            "/api/v1/orders",
            r#"{"symbol":"BTC-USDT","side":"sell","type":"market","size":"100","price":"0.01","reduceOnly":true}"#,
        )
        .unwrap();
        assert_eq!(o[0].price, Some(d("0.01")));
        assert!(!o[0].price_is_limit);
        // Spot and margin have no reduce-only order: the flag earns no exemption.
        assert!(!o[0].reduce_only);
        let o = trade(
            "/api/v1/hf/margin/order",
            r#"{"symbol":"BTC-USDT","side":"sell","type":"limit","size":"1","price":"60000","reduceOnly":true}"#,
        )
        .unwrap();
        assert!(o[0].price_is_limit);
        assert!(!o[0].reduce_only);
        // OCO: both legs are limits; sized at the higher.
        let o = trade(
            "/api/v3/oco/order",
            r#"{"symbol":"BTC-USDT","side":"sell","size":"1","price":"70000","stopPrice":"50000","limitPrice":"49000"}"#,
        )
        .unwrap();
        assert_eq!(o[0].price, Some(d("70000")));
        assert!(o[0].price_is_limit);
    }

    #[test]
    fn batch_symbol_is_the_one_kucoin_uses() {
        // Classic: the envelope's symbol.
        let classic = r#"{"symbol":"BTC-USDT","orderList":[{"clientOid":"a","side":"buy","type":"limit","price":"1","size":"1"}]}"#;
        assert_eq!(
            trade("/api/v1/orders/multi", classic).unwrap()[0].symbol,
            "BTC-USDT"
        );
        for bad in [
            r#"{"symbol":"BTC-USDT","orderList":[{"symbol":"PEPE-USDT","side":"buy","type":"limit","price":"1","size":"1"}]}"#,
            r#"{"orderList":[{"symbol":"PEPE-USDT","side":"buy","type":"limit","price":"1","size":"1"}]}"#,
            r#"{"symbol":"BTC-USDT","orderList":[]}"#,
        ] {
            assert!(trade("/api/v1/orders/multi", bad).is_err(), "{bad}");
        }
        // HF: each order's own.
        let hf = r#"{"orderList":[{"symbol":"ETH-USDT","side":"buy","type":"limit","price":"1","size":"1"}]}"#;
        assert_eq!(
            trade("/api/v1/hf/orders/multi", hf).unwrap()[0].symbol,
            "ETH-USDT"
        );
        assert!(trade("/api/v1/hf/orders/multi/sync", classic).is_err());
        // A single-order endpoint executes the top-level order, not an orderList.
        assert!(trade(
            "/api/v1/orders",
            r#"{"symbol":"BTC-USDT","side":"buy","type":"limit","price":"60000","size":"100","orderList":[{"symbol":"BTC-USDT","side":"buy","price":"1","size":"0.001"}]}"#,
        )
        .is_err());
    }

    #[test]
    fn withdrawal_address_is_read_from_the_versions_field() {
        let w = |path: &str, body: &str| {
            Kucoin.parse_intent(
                EndpointClass::Withdraw,
                &req(Method::POST, path, None, body),
            )
        };
        // v1 pays out to `address`: a `toAddress` beside it is a decoy.
        assert!(w(
            "/api/v1/withdrawals",
            r#"{"currency":"USDT","toAddress":"0xallowlisted","address":"0xattacker","amount":"10"}"#
        )
        .is_err());
        assert!(w(
            "/api/v1/withdrawals",
            r#"{"currency":"USDT","toAddress":"0xallowlisted","amount":"10"}"#
        )
        .is_err());
        let RequestIntent::Withdrawal(v3) = w(
            "/api/v3/withdrawals",
            r#"{"currency":"USDT","toAddress":"0xallowlisted","amount":"10","withdrawType":"ADDRESS","chain":"eth"}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(v3.address, "0xallowlisted");
        assert!(w(
            "/api/v3/withdrawals",
            r#"{"currency":"USDT","toAddress":"0xallowlisted","address":"0xattacker","amount":"10"}"#
        )
        .is_err());
        assert!(w(
            "/api/v3/withdrawals",
            r#"{"currency":"USDT","address":"0xattacker","amount":"10"}"#
        )
        .is_err());
        assert!(w(
            "/api/v1/withdrawals",
            r#"{"currency":"USDT","address":"0xallowlisted","address":"0xattacker","amount":"10"}"#
        )
        .is_err());
    }

    #[test]
    fn repeated_query_parameters_are_refused() {
        let r = req(
            Method::DELETE,
            "/api/v1/orders",
            Some("symbol=BTC-USDT&symbol=ETH-USDT"),
            "",
        );
        assert!(Kucoin.parse_intent(EndpointClass::Trade, &r).is_err());
        assert!(trade(
            "/api/v1/orders",
            r#"{"symbol":"BTC-USDT","side":"buy","type":"limit","price":"1","size":"0.001","size":"1000"}"#,
        )
        .is_err());
    }
}
