//! Bybit API v5 (<https://bybit-exchange.github.io/docs/v5/guide>).
//!
//! Signing (HMAC keys): `X-BAPI-SIGN = hex(HMAC-SHA256(secret, timestamp + apiKey +
//! recvWindow + payload))`, where the payload is the raw query string of a GET and the JSON
//! body of a POST, exactly as sent. Headers `X-BAPI-API-KEY`, `X-BAPI-TIMESTAMP` (ms),
//! `X-BAPI-RECV-WINDOW` (5000 unless the context says otherwise, as CCXT). CCXT sends no
//! `X-BAPI-SIGN-TYPE` for v5 (HMAC is the default), and neither does keygate.
//! Testnet is a separate host (`api-testnet.bybit.com`).
//!
//! Invariants: as in [`crate::okx`] (plain-path route matching; withdrawal paths are
//! `Withdraw` for every method).

use http::{HeaderMap, Method};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::okx::{
    body_json, classify_by, default_json_content_type, header_u64, hmac_secret, json_true,
    non_empty_array, opt_positive_decimal, parse_iso8601_utc, parse_side, positive_decimal,
    put_header, req_str, str_field, Route, Verb,
};
use crate::util::{hex_lower, hmac_sha256, json_body, json_opt_decimal, remove_headers};
use crate::*;

/// `bybit` API.
pub struct Bybit;

/// CCXT's and Bybit's default receive window.
const DEFAULT_RECV_WINDOW_MS: u64 = 5000;

use EndpointClass::{Manage, Public, Read, SubAccount, Trade, Transfer, Withdraw};
use Verb::{Any, Get, Post};

/// Every Bybit v5 endpoint family keygate knows. Not listed (hence `Unknown`): earn,
/// crypto/institutional loans, spot margin borrowing, convert, broker, affiliate, pre-upgrade
/// and legacy (v1-v3) paths.
#[rustfmt::skip]
pub(crate) const ROUTES: &[Route] = &[
    // Money out. Every method, before any family wildcard.
    (Any,  "/v5/asset/withdraw/create",                    Withdraw),
    (Any,  "/v5/asset/withdraw/cancel",                    Withdraw),
    // Money between the owner's own accounts (inter-transfer: same UID; universal: master
    // and sub UIDs of one owner).
    (Any,  "/v5/asset/transfer/inter-transfer",            Transfer),
    (Any,  "/v5/asset/transfer/universal-transfer",        Transfer),
    // Sub-accounts.
    (Any,  "/v5/asset/transfer/save-transfer-sub-member",  SubAccount),
    // moves positions between the master's and sub-accounts' UIDs
    (Any,  "/v5/position/move-positions",                  SubAccount),
    (Post, "/v5/user/create-sub-member",                   SubAccount),
    (Post, "/v5/user/frozen-sub-member",                   SubAccount),
    (Post, "/v5/user/del-submember",                       SubAccount),
    (Get,  "/v5/user/query-sub-members",                   SubAccount),
    (Get,  "/v5/user/submembers",                          SubAccount),
    (Get,  "/v5/user/sub-apikeys",                         SubAccount),
    (Get,  "/v5/asset/transfer/query-sub-member-list",     SubAccount),
    // API-key management (own key or a sub-account's): `manage`.
    (Post, "/v5/user/create-sub-api",                      Manage),
    (Post, "/v5/user/update-api",                          Manage),
    (Post, "/v5/user/update-sub-api",                      Manage),
    (Post, "/v5/user/delete-api",                          Manage),
    (Post, "/v5/user/delete-sub-api",                      Manage),
    // Orders and positions.
    (Post, "/v5/order/create",                             Trade),
    (Post, "/v5/order/amend",                              Trade),
    (Post, "/v5/order/cancel",                             Trade),
    (Post, "/v5/order/cancel-all",                         Trade),
    (Post, "/v5/order/create-batch",                       Trade),
    (Post, "/v5/order/amend-batch",                        Trade),
    (Post, "/v5/order/cancel-batch",                       Trade),
    (Post, "/v5/order/disconnected-cancel-all",            Trade),
    (Post, "/v5/position/set-leverage",                    Trade),
    (Post, "/v5/position/trading-stop",                    Trade),
    (Post, "/v5/position/add-margin",                      Trade),
    // Account and position settings: they change how every later order behaves (position
    // mode, margin mode, risk limit, collateral, MMP, UTA upgrade), not one order: `manage`.
    (Post, "/v5/position/switch-mode",                     Manage),
    (Post, "/v5/position/switch-isolated",                 Manage),
    (Post, "/v5/position/set-tpsl-mode",                   Manage),
    (Post, "/v5/position/set-risk-limit",                  Manage),
    (Post, "/v5/position/set-auto-add-margin",             Manage),
    (Post, "/v5/account/set-margin-mode",                  Manage),
    (Post, "/v5/account/upgrade-to-uta",                   Manage),
    (Post, "/v5/account/set-hedging-mode",                 Manage),
    (Post, "/v5/account/set-collateral-switch",            Manage),
    (Post, "/v5/account/set-collateral-switch-batch",      Manage),
    (Post, "/v5/account/mmp-modify",                       Manage),
    (Post, "/v5/account/mmp-reset",                        Manage),
    (Post, "/v5/spot-margin-trade/switch-mode",            Manage),
    (Post, "/v5/spot-margin-trade/set-leverage",           Manage),
    // Reads: Bybit v5 performs no action on GET.
    (Get,  "/v5/order/*",                                  Read),
    (Get,  "/v5/position/*",                               Read),
    (Get,  "/v5/execution/*",                              Read),
    (Get,  "/v5/account/*",                                Read),
    (Get,  "/v5/asset/*",                                  Read),
    (Get,  "/v5/user/*",                                   Read),
    (Get,  "/v5/spot-margin-trade/*",                      Read),
    // Public market data.
    (Get,  "/v5/market/*",                                 Public),
    (Get,  "/v5/announcements/*",                          Public),
];

/// How a Bybit `category` sizes `qty`: linear and spot in the base coin; inverse in USD
/// contracts; options in contracts of one underlying.
fn size_unit(category: &str) -> SizeUnit {
    match category {
        "inverse" | "option" => SizeUnit::Contracts,
        _ => SizeUnit::Base,
    }
}

/// Base/quote of a Bybit symbol: `BTCUSDT`, `BTCUSD`, `BTC-26DEC25`, `BTC-29JUL22-25000-C`.
fn base_quote(symbol: &str) -> (Option<String>, Option<String>) {
    if let Some((base, _)) = symbol.split_once('-') {
        return (Some(base.to_string()), None);
    }
    match util::split_concatenated_symbol(symbol) {
        Some((b, q)) => (Some(b), Some(q)),
        None => (None, None),
    }
}

fn symbol_intent(v: &Value, category: &str) -> Result<OrderIntent, ParseError> {
    let symbol = req_str(v, "symbol")?;
    let (base, quote) = base_quote(&symbol);
    let mut o = OrderIntent::new(symbol);
    o.base = base;
    o.quote = quote;
    o.size_unit = size_unit(category);
    Ok(o)
}

/// The order's category. A single request carries its own; in a batch Bybit reads only
/// the envelope's (docs v5 "Batch Place Order": `category` is a top-level field), so a
/// `category` inside an order of the batch must be absent or the same, else the request is
/// refused: keygate would size the order for one product and Bybit place it in another.
fn category_of(v: &Value, outer: Option<&str>) -> Result<String, ParseError> {
    let own = str_field(v, "category");
    let category = match (outer, own) {
        (None, own) => own,
        (Some(outer), None) => Some(outer.to_string()),
        (Some(outer), Some(own)) if own == outer => Some(own),
        (Some(_), Some(_)) => return Err(ParseError::InvalidValue("category")),
    };
    category
        .map(|c| c.to_ascii_lowercase())
        .ok_or(ParseError::MissingField("category"))
}

fn new_order(v: &Value, outer: Option<&str>) -> Result<OrderIntent, ParseError> {
    let category = category_of(v, outer)?;
    let mut o = symbol_intent(v, &category)?;
    let side = parse_side(&req_str(v, "side")?)?;
    let order_type = req_str(v, "orderType")?.to_ascii_lowercase();
    let qty = positive_decimal(v, "qty")?;
    o.side = Some(side);
    o.price = opt_positive_decimal(v, "price")?;
    // Bybit v5 has two order types; a `Market` order ignores `price` (docs v5 "Place
    // Order": price "Market order will ignore this field"), including a conditional market
    // order whose trigger is `triggerPrice`.
    o.price_is_limit = order_type == "limit" && o.price.is_some();
    // reduceOnly / closeOnTrigger are booleans that apply to derivatives only; a spot order
    // carrying them is a plain spot order.
    o.reduce_only = matches!(category.as_str(), "linear" | "inverse" | "option")
        && (json_true(v, "reduceOnly") || json_true(v, "closeOnTrigger"));
    // Spot market orders: qty is in the quote coin for buys and the base coin for sells,
    // unless `marketUnit` says otherwise (docs v5 "Place Order", marketUnit). The key in
    // another case is refused: read by a backend that ignores case, `MarketUnit:
    // baseCoin` would make a buy checked as 10 USDT one of 10 BTC.
    util::json_refuse_other_case(v, "marketUnit")?;
    util::json_refuse_other_case(v, "isLeverage")?;
    let by_quote = category == "spot"
        && order_type == "market"
        && match str_field(v, "marketUnit").as_deref() {
            Some("quoteCoin") => true,
            Some("baseCoin") => false,
            Some(_) => return Err(ParseError::InvalidValue("marketUnit")),
            None => side == Side::Buy,
        };
    if by_quote {
        o.quote_amount = Some(qty);
    } else {
        o.quantity = Some(qty);
    }
    o.order_type = Some(order_type);
    // a spot margin order (`isLeverage: 1`) borrows what it trades with; `0` or none is a
    // plain spot order, another value counts as borrowing
    o.borrows = category == "spot"
        && match v.get("isLeverage") {
            None | Some(Value::Null) => false,
            Some(Value::Number(n)) => n.as_i64() != Some(0),
            Some(Value::String(s)) => s != "0",
            Some(_) => true,
        };
    Ok(o)
}

/// An amendment may raise qty or move the price: not a cancel.
fn amend(v: &Value, outer: Option<&str>) -> Result<OrderIntent, ParseError> {
    let category = category_of(v, outer)?;
    let mut o = symbol_intent(v, &category)?;
    o.quantity = opt_positive_decimal(v, "qty")?;
    o.price = opt_positive_decimal(v, "price")?;
    Ok(o)
}

fn cancel(v: &Value, outer: Option<&str>) -> Result<OrderIntent, ParseError> {
    let category = category_of(v, outer)?;
    let mut o = symbol_intent(v, &category)?;
    o.is_cancel = true;
    Ok(o)
}

type OrderParser = fn(&Value, Option<&str>) -> Result<OrderIntent, ParseError>;

/// `{category, request: [...]}` batches: the envelope's `category` is the one Bybit uses.
fn batch(body: &Value, f: OrderParser) -> Result<Vec<OrderIntent>, ParseError> {
    let outer = req_str(body, "category")?;
    non_empty_array(body.get("request"), "request")?
        .iter()
        .map(|o| f(o, Some(&outer)))
        .collect()
}

fn trade_intent(path: &str, body: &Value) -> Result<RequestIntent, ParseError> {
    let orders = match path {
        "/v5/order/create" => vec![new_order(body, None)?],
        "/v5/order/create-batch" => batch(body, new_order)?,
        "/v5/order/amend" => vec![amend(body, None)?],
        "/v5/order/amend-batch" => batch(body, amend)?,
        "/v5/order/cancel" => vec![cancel(body, None)?],
        "/v5/order/cancel-batch" => batch(body, cancel)?,
        "/v5/order/cancel-all" => {
            if str_field(body, "symbol").is_none() {
                // Cancels everything in a category / coin: only reduces exposure.
                return Ok(RequestIntent::None);
            }
            vec![cancel(body, None)?]
        }
        "/v5/order/disconnected-cancel-all" => return Ok(RequestIntent::None),
        "/v5/position/set-leverage" => {
            let category = category_of(body, None)?;
            let mut o = symbol_intent(body, &category)?;
            let buy = positive_decimal(body, "buyLeverage")?;
            let sell = positive_decimal(body, "sellLeverage")?;
            o.leverage = Some(buy.max(sell));
            vec![o]
        }
        // Take-profit / stop-loss on an open position: they can only close it.
        "/v5/position/trading-stop" => {
            let category = category_of(body, None)?;
            let mut o = symbol_intent(body, &category)?;
            o.reduce_only = true;
            o.quantity =
                opt_positive_decimal(body, "tpSize")?.or(opt_positive_decimal(body, "slSize")?);
            vec![o]
        }
        "/v5/position/add-margin" => {
            let category = category_of(body, None)?;
            vec![symbol_intent(body, &category)?]
        }
        _ => {
            return Err(ParseError::Malformed(
                "no order parser for this path".into(),
            ))
        }
    };
    Ok(RequestIntent::Orders { orders })
}

/// The window of an endpoint's budget when the answer reports no reset.
/// Bybit counts each endpoint per UID, over windows of 1–5 s that its
/// headers report the end of (<https://bybit-exchange.github.io/docs/v5/rate-limit>).
const ENDPOINT_WINDOW_MS: i64 = 5_000;

/// The name of the rate-limit budget of `method path`: the exchange counts each endpoint
/// (its paths carry no ids), so the path itself, where the endpoint table knows it (a
/// row ending in `*` covers several endpoints, each with its own counter).
fn endpoint_name(method: &Method, path: &str) -> Option<String> {
    crate::okx::route_by(ROUTES, method, path).map(|_| path.to_ascii_lowercase())
}

impl Exchange for Bybit {
    fn id(&self) -> ExchangeId {
        ExchangeId::Bybit
    }

    fn hosts(&self) -> Hosts {
        Hosts {
            production: "https://api.bybit.com",
            testnet: Some("https://api-testnet.bybit.com"),
        }
    }

    fn strip_auth(&self, req: &mut OutgoingRequest) {
        remove_headers(&mut req.headers, &["authorization"], &["x-bapi-"]);
    }

    fn classify(&self, method: &Method, path: &str) -> EndpointClass {
        classify_by(ROUTES, method, path)
    }

    fn sign(
        &self,
        req: &mut OutgoingRequest,
        creds: &ApiCredentials,
        ctx: &SignContext,
    ) -> Result<(), SignError> {
        let secret = hmac_secret(creds)?;
        let api_key = creds.api_key.expose_secret();
        let timestamp = ctx.now_ms.to_string();
        let recv_window = ctx
            .recv_window_ms
            .unwrap_or(DEFAULT_RECV_WINDOW_MS)
            .to_string();
        let mut prehash = Vec::with_capacity(64 + req.body.len());
        prehash.extend_from_slice(timestamp.as_bytes());
        prehash.extend_from_slice(api_key.as_bytes());
        prehash.extend_from_slice(recv_window.as_bytes());
        // As CCXT: POST signs the body, every other method the query string.
        if req.method == Method::POST {
            prehash.extend_from_slice(&req.body);
        } else if let Some(q) = req.query.as_deref() {
            prehash.extend_from_slice(q.as_bytes());
        }
        let signature = hex_lower(&hmac_sha256(secret.as_bytes(), &prehash));

        let h = &mut req.headers;
        put_header(h, "x-bapi-api-key", api_key, true)?;
        put_header(h, "x-bapi-timestamp", &timestamp, false)?;
        put_header(h, "x-bapi-recv-window", &recv_window, false)?;
        put_header(h, "x-bapi-sign", &signature, true)?;
        default_json_content_type(req);
        Ok(())
    }

    fn parse_intent(
        &self,
        class: EndpointClass,
        req: &OutgoingRequest,
    ) -> Result<RequestIntent, ParseError> {
        util::no_query_beside_the_body(req)?;
        match class {
            Trade => trade_intent(&req.path, &body_json(req)?),
            Withdraw => match req.path.as_str() {
                "/v5/asset/withdraw/create" => {
                    let body = body_json(req)?;
                    Ok(RequestIntent::Withdrawal(WithdrawalIntent {
                        asset: req_str(&body, "coin")?,
                        amount: positive_decimal(&body, "amount")?,
                        address: req_str(&body, "address")?,
                        network: util::json_network(&body, "chain")?,
                        tag: util::json_tag(&body, "tag")?,
                    }))
                }
                // Cancelling a pending withdrawal moves nothing.
                "/v5/asset/withdraw/cancel" => Ok(RequestIntent::None),
                _ => Err(ParseError::Malformed(
                    "no withdrawal parser for this path".into(),
                )),
            },
            Transfer => {
                let body = body_json(req)?;
                let (asset, amount) = (
                    req_str(&body, "coin")?,
                    Some(positive_decimal(&body, "amount")?),
                );
                // the universal transfer moves funds between members (main and sub
                // UIDs); only the inter-transfer stays within this one
                Ok(
                    if req.path.trim_end_matches('/') == "/v5/asset/transfer/inter-transfer" {
                        RequestIntent::Transfer { asset, amount }
                    } else {
                        RequestIntent::SubAccountTransfer { asset, amount }
                    },
                )
            }
            _ => Ok(RequestIntent::None),
        }
    }

    fn balance_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/v5/account/wallet-balance",
            query: Some("accountType=UNIFIED"),
        }
    }

    /// `result.list[].coin[]`: `walletBalance` is the total; free is `availableToWithdraw`
    /// where Bybit still fills it, else total minus `locked + totalOrderIM +
    /// totalPositionIM` (CCXT's reading of the unified account).
    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError> {
        let v = json_body(body)?;
        bybit_ok(&v)?;
        let list = v
            .get("result")
            .and_then(|r| r.get("list"))
            .and_then(Value::as_array)
            .ok_or(ParseError::MissingField("result.list"))?;
        let mut out = Vec::new();
        for account in list {
            let account_type = str_field(account, "accountType").map(|t| t.to_ascii_lowercase());
            let coins = account
                .get("coin")
                .and_then(Value::as_array)
                .ok_or(ParseError::MissingField("coin"))?;
            for c in coins {
                let d = |k: &'static str| json_opt_decimal(k, c.get(k));
                let total = d("walletBalance")?.ok_or(ParseError::MissingField("walletBalance"))?;
                let (free, locked) = match d("availableToWithdraw")? {
                    Some(free) => (free, total - free),
                    None => {
                        let locked = d("locked")?.unwrap_or_default()
                            + d("totalOrderIM")?.unwrap_or_default()
                            + d("totalPositionIM")?.unwrap_or_default();
                        (total - locked, locked)
                    }
                };
                out.push(Balance {
                    asset: req_str(c, "coin")?,
                    free,
                    locked,
                    total,
                    account_type: account_type.clone(),
                });
            }
        }
        Ok(out)
    }

    fn key_check_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/v5/user/query-api",
            query: None,
        }
    }

    /// `result.readOnly` (0/1), `result.permissions` (`{Wallet: ["AccountTransfer",
    /// "SubMemberTransfer", "Withdraw"], Spot: ["SpotTrade"], ContractTrade: [...], ...}`),
    /// `result.ips` (`["*"]` = unrestricted), `result.expiredAt` (keys without an IP binding
    /// expire).
    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError> {
        let v = json_body(body)?;
        bybit_ok(&v)?;
        let r = v.get("result").ok_or(ParseError::MissingField("result"))?;
        // Bybit reports 0/1; a string or boolean spelling is read the same way.
        let read_only = match r.get("readOnly") {
            Some(Value::Bool(b)) => *b,
            Some(Value::Number(n)) => n.as_i64() == Some(1),
            Some(Value::String(s)) => s == "1" || s.eq_ignore_ascii_case("true"),
            _ => false,
        };
        let perms = r
            .get("permissions")
            .and_then(Value::as_object)
            .ok_or(ParseError::MissingField("permissions"))?;
        let has = |group: &str, p: &str| {
            perms
                .get(group)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x.as_str() == Some(p)))
        };
        let any_in = |group: &str| {
            perms
                .get(group)
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|x| x.as_str().is_some_and(|s| !s.is_empty())))
        };
        let can_trade = !read_only
            && [
                "ContractTrade",
                "Spot",
                "Options",
                "Derivatives",
                "CopyTrading",
            ]
            .iter()
            .any(|g| any_in(g));
        let ips: Vec<&str> = r
            .get("ips")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let ip_restricted = !ips.is_empty() && !ips.iter().any(|ip| ip.trim() == "*");
        let expires_at_ms = r
            .get("expiredAt")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .and_then(parse_iso8601_utc);
        let check = KeyCheck {
            can_read: true,
            can_trade,
            can_withdraw: !read_only && has("Wallet", "Withdraw"),
            can_transfer: !read_only
                && (has("Wallet", "AccountTransfer") || has("Wallet", "SubMemberTransfer")),
            ip_restricted,
            expires_at_ms,
            warnings: Vec::new(),
        };
        Ok(check.with_standard_warnings())
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

    /// `X-Bapi-Limit` (window limit), `X-Bapi-Limit-Status` (remaining),
    /// `X-Bapi-Limit-Reset-Timestamp` (ms), per docs v5 "Rate Limit".
    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitStatus> {
        let limit = header_u64(headers, "x-bapi-limit");
        let remaining = header_u64(headers, "x-bapi-limit-status");
        let reset_at_ms =
            header_u64(headers, "x-bapi-limit-reset-timestamp").and_then(|t| i64::try_from(t).ok());
        if limit.is_none() && remaining.is_none() && reset_at_ms.is_none() {
            return None;
        }
        Some(RateLimitStatus {
            used: limit.zip(remaining).map(|(l, r)| l.saturating_sub(r)),
            limit,
            remaining,
            reset_at_ms,
            reset_in_ms: None,
        })
    }

    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind> {
        let v: Option<Value> = serde_json::from_slice(body).ok();
        let code = v
            .as_ref()
            .and_then(|v| v.get("retCode").or_else(|| v.get("ret_code")))
            .and_then(Value::as_i64);
        match code {
            Some(0) if status < 400 => None,
            Some(c) => match bybit_error_kind(c) {
                ErrorKind::Unknown if status == 429 => Some(ErrorKind::RateLimited),
                k => Some(k),
            },
            None if status == 429 || status == 403 && body.is_empty() => {
                Some(ErrorKind::RateLimited)
            }
            None if status >= 400 => Some(ErrorKind::Unknown),
            None => None,
        }
    }
}

/// Maps Bybit v5 `retCode`s (docs v5 "Error Codes") to keygate's kinds.
fn bybit_error_kind(code: i64) -> ErrorKind {
    match code {
        10003 | 10007 | 33004 => ErrorKind::InvalidKey,
        10004 => ErrorKind::BadSignature,
        10010 | 10009 => ErrorKind::IpNotAllowed,
        10006 | 10018 => ErrorKind::RateLimited,
        10002 => ErrorKind::TimestampOutOfWindow,
        10005 | 10024 | 10027 | 10029 => ErrorKind::PermissionDenied,
        110004 | 110007 | 110012 | 110044 | 110045 | 131212 | 170033 | 170131 => {
            ErrorKind::InsufficientBalance
        }
        _ => ErrorKind::Unknown,
    }
}

fn bybit_ok(v: &Value) -> Result<(), ParseError> {
    match v.get("retCode").and_then(Value::as_i64) {
        Some(0) | None => Ok(()),
        Some(_) => Err(ParseError::InvalidValue("retCode")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http::HeaderValue;
    use rust_decimal::Decimal;
    use secrecy::SecretString;

    fn post(path: &str, body: &str) -> OutgoingRequest {
        OutgoingRequest {
            method: Method::POST,
            path: path.into(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    // A spot margin order (`isLeverage: 1`) borrows; a derivatives order never does.
    #[test]
    fn spot_margin_orders_are_marked_as_borrowing() {
        let one = |body: &str| match Bybit
            .parse_intent(Trade, &post("/v5/order/create", body))
            .unwrap()
        {
            RequestIntent::Orders { mut orders } => orders.remove(0),
            other => panic!("{other:?}"),
        };
        for (category, extra, borrows) in [
            ("spot", "", false),
            ("spot", r#","isLeverage":0"#, false),
            ("spot", r#","isLeverage":1"#, true),
            ("spot", r#","isLeverage":"1""#, true),
            ("linear", r#","isLeverage":1"#, false),
        ] {
            let o = one(&format!(
                r#"{{"category":"{category}","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"1","price":"1"{extra}}}"#
            ));
            assert_eq!(o.borrows, borrows, "{category}{extra}");
        }
        // `marketUnit` in another case is refused, not read as absent (quote)
        assert!(Bybit
            .parse_intent(
                Trade,
                &post(
                    "/v5/order/create",
                    r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Market","qty":"10","MarketUnit":"baseCoin"}"#
                )
            )
            .is_err());
        assert!(Bybit
            .parse_intent(
                Trade,
                &post(
                    "/v5/order/create",
                    r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"1","price":"1","IsLeverage":1}"#
                )
            )
            .is_err());
        assert_eq!(
            Bybit.classify(&Method::POST, "/v5/position/move-positions"),
            SubAccount
        );
    }

    fn creds() -> ApiCredentials {
        ApiCredentials {
            api_key: SecretString::from("XXXXXXXXXX"),
            api_secret: Some(SecretString::from("YYYYYYYYYY")),
            passphrase: None,
            private_key: None,
        }
    }

    fn ctx(recv: Option<u64>) -> SignContext {
        SignContext {
            now_ms: 1_658_384_314_791,
            nonce: 0,
            random_nonce: [0; 16],
            environment: Environment::Production,
            host: "api.bybit.com".into(),
            recv_window_ms: recv,
        }
    }

    /// Known answer for the documented prehash (docs v5 "Integration Guidance":
    /// `timestamp + api_key + recv_window + queryString`), with the timestamp and query of
    /// the docs' GET example (`1658384314791`, `category=option&symbol=BTC-29JUL22-25000-C`).
    /// Bybit prints no signature; the expected value was computed independently with
    /// `printf %s "$prehash" | openssl dgst -sha256 -hmac YYYYYYYYYY`.
    #[test]
    fn known_answer_from_doc_inputs() {
        let mut req = OutgoingRequest {
            method: Method::GET,
            path: "/v5/order/realtime".into(),
            query: Some("category=option&symbol=BTC-29JUL22-25000-C".into()),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        Bybit.sign(&mut req, &creds(), &ctx(None)).unwrap();
        assert_eq!(req.headers["x-bapi-recv-window"], "5000");
        assert_eq!(req.headers["x-bapi-timestamp"], "1658384314791");
        assert_eq!(req.headers["x-bapi-api-key"], "XXXXXXXXXX");
        assert_eq!(
            req.headers["x-bapi-sign"],
            "37813c67fafb3017e92354eb88f218e7e52a98f9f5eb74cfcf0b21f17edb143b"
        );
        assert!(req.headers.get("x-bapi-sign-type").is_none());

        let body = r#"{"category":"linear","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.001","price":"10000"}"#;
        let mut p = post("/v5/order/create", body);
        Bybit.sign(&mut p, &creds(), &ctx(Some(20_000))).unwrap();
        assert_eq!(p.headers["x-bapi-recv-window"], "20000");
        assert_eq!(
            p.headers["x-bapi-sign"],
            "67facf81cfb31d118ae117c317d9a0e35ff965ffa23581a18917fa83413579eb"
        );
    }

    #[test]
    fn strip_removes_client_auth() {
        let mut req = post("/v5/order/create", "{}");
        for k in [
            "X-BAPI-API-KEY",
            "X-BAPI-SIGN",
            "X-BAPI-SIGN-TYPE",
            "X-BAPI-TIMESTAMP",
            "X-BAPI-RECV-WINDOW",
            "Authorization",
            "Referer",
        ] {
            req.headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
        }
        Bybit.strip_auth(&mut req);
        assert_eq!(req.headers.len(), 1);
        assert!(req.headers.contains_key("referer"));
    }

    #[test]
    fn table_entries_classify_as_listed() {
        for (verb, pattern, class) in ROUTES {
            let path = pattern.replace('*', "x");
            let method = match verb {
                Get => Method::GET,
                Post | Any => Method::POST,
            };
            assert_eq!(Bybit.classify(&method, &path), *class, "{pattern}");
        }
    }

    #[test]
    fn withdrawals_are_never_read_or_trade() {
        for path in ["/v5/asset/withdraw/create", "/v5/asset/withdraw/cancel"] {
            for m in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
                assert_eq!(Bybit.classify(&m, path), Withdraw, "{m} {path}");
            }
        }
        assert_eq!(
            Bybit.classify(&Method::GET, "/v5/asset/withdraw/query-record"),
            Read
        );
        for path in [
            "/v5/order/../asset/withdraw/create",
            "/v5/asset//withdraw/create",
            "/v5/asset/withdraw/create/",
            "/v5/asset/withdraw/%63reate",
        ] {
            assert_eq!(
                Bybit.classify(&Method::POST, path),
                EndpointClass::Unknown,
                "{path}"
            );
        }
    }

    #[test]
    fn unlisted_private_and_public_paths() {
        assert_eq!(
            Bybit.classify(&Method::POST, "/v5/earn/place-order"),
            EndpointClass::Unknown
        );
        assert_eq!(
            Bybit.classify(&Method::POST, "/v5/account/wallet-balance"),
            EndpointClass::Unknown
        );
        assert_eq!(Bybit.classify(&Method::GET, "/v5/market/tickers"), Public);
        assert_eq!(
            Bybit.classify(&Method::GET, "/v5/account/wallet-balance"),
            Read
        );
    }

    fn orders(intent: RequestIntent) -> Vec<OrderIntent> {
        match intent {
            RequestIntent::Orders { orders } => orders,
            other => panic!("not orders: {other:?}"),
        }
    }

    #[test]
    fn parses_orders() {
        let o = orders(
            Bybit
                .parse_intent(
                    Trade,
                    &post(
                        "/v5/order/create",
                        r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Market","qty":"100"}"#,
                    ),
                )
                .unwrap(),
        );
        assert_eq!(o[0].quote_amount, Some(Decimal::from(100)));
        assert_eq!(o[0].quantity, None);
        assert_eq!(o[0].base.as_deref(), Some("BTC"));
        assert_eq!(o[0].quote.as_deref(), Some("USDT"));

        let o = orders(
            Bybit
                .parse_intent(
                    Trade,
                    &post(
                        "/v5/order/create",
                        r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Market","qty":"0.1","marketUnit":"baseCoin"}"#,
                    ),
                )
                .unwrap(),
        );
        assert_eq!(o[0].quantity, Some(Decimal::new(1, 1)));

        let o = orders(
            Bybit
                .parse_intent(
                    Trade,
                    &post(
                        "/v5/order/create-batch",
                        r#"{"category":"linear","request":[
                          {"symbol":"BTCUSDT","side":"Sell","orderType":"Limit","qty":"0.5","price":"60000","reduceOnly":true},
                          {"symbol":"ETHUSDT","side":"Buy","orderType":"Market","qty":"2"}]}"#,
                    ),
                )
                .unwrap(),
        );
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].size_unit, SizeUnit::Base);
        assert!(o[0].reduce_only);
        assert_eq!(o[0].price, Some(Decimal::from(60_000)));
        assert_eq!(o[1].quantity, Some(Decimal::from(2)));

        let inv = orders(
            Bybit
                .parse_intent(
                    Trade,
                    &post(
                        "/v5/order/create",
                        r#"{"category":"inverse","symbol":"BTCUSD","side":"Buy","orderType":"Limit","qty":"100","price":"50000"}"#,
                    ),
                )
                .unwrap(),
        );
        assert_eq!(inv[0].size_unit, SizeUnit::Contracts);

        let c = orders(
            Bybit
                .parse_intent(
                    Trade,
                    &post(
                        "/v5/order/cancel",
                        r#"{"category":"linear","symbol":"BTCUSDT","orderId":"1"}"#,
                    ),
                )
                .unwrap(),
        );
        assert!(c[0].is_cancel);

        let lev = orders(
            Bybit
                .parse_intent(
                    Trade,
                    &post(
                        "/v5/position/set-leverage",
                        r#"{"category":"linear","symbol":"BTCUSDT","buyLeverage":"5","sellLeverage":"10"}"#,
                    ),
                )
                .unwrap(),
        );
        assert_eq!(lev[0].leverage, Some(Decimal::from(10)));

        for bad in [
            "",
            "{}",
            r#"{"category":"linear","symbol":"BTCUSDT","side":"Buy","orderType":"Limit"}"#,
            r#"{"symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"1"}"#,
        ] {
            assert!(
                Bybit
                    .parse_intent(Trade, &post("/v5/order/create", bad))
                    .is_err(),
                "{bad}"
            );
        }
        assert!(Bybit
            .parse_intent(
                Trade,
                &post(
                    "/v5/order/create-batch",
                    r#"{"category":"linear","request":[]}"#
                )
            )
            .is_err());
    }

    #[test]
    fn parses_withdrawals_and_transfers() {
        let w = Bybit
            .parse_intent(
                Withdraw,
                &post(
                    "/v5/asset/withdraw/create",
                    r#"{"coin":"USDT","chain":"TRX","address":"Txyz","tag":"77","amount":"25.5","timestamp":1}"#,
                ),
            )
            .unwrap();
        assert_eq!(
            w,
            RequestIntent::Withdrawal(WithdrawalIntent {
                asset: "USDT".into(),
                amount: Decimal::new(255, 1),
                address: "Txyz".into(),
                network: Some("TRX".into()),
                tag: Some("77".into()),
            })
        );
        assert!(Bybit
            .parse_intent(
                Withdraw,
                &post(
                    "/v5/asset/withdraw/create",
                    r#"{"coin":"USDT","address":"x"}"#
                )
            )
            .is_err());
        let t = Bybit
            .parse_intent(
                Transfer,
                &post(
                    "/v5/asset/transfer/inter-transfer",
                    r#"{"transferId":"x","coin":"USDT","amount":"10","fromAccountType":"FUND","toAccountType":"UNIFIED"}"#,
                ),
            )
            .unwrap();
        assert_eq!(
            t,
            RequestIntent::Transfer {
                asset: "USDT".into(),
                amount: Some(Decimal::from(10))
            }
        );
        // the universal transfer moves funds between members: a sub-account's business
        let t = Bybit.parse_intent(
            Transfer,
            &post(
                "/v5/asset/transfer/universal-transfer",
                r#"{"transferId":"x","coin":"USDT","amount":"50000","fromMemberId":1,"toMemberId":2,"fromAccountType":"UNIFIED","toAccountType":"UNIFIED"}"#,
            ),
        );
        assert!(
            matches!(t, Ok(RequestIntent::SubAccountTransfer { .. })),
            "{t:?}"
        );
    }

    #[test]
    fn parses_balances_key_check_and_limits() {
        let body = br#"{"retCode":0,"retMsg":"OK","result":{"list":[{"accountType":"UNIFIED","coin":[
            {"coin":"USDT","walletBalance":"100","availableToWithdraw":"","locked":"5","totalOrderIM":"10","totalPositionIM":"15"},
            {"coin":"BTC","walletBalance":"1","availableToWithdraw":"0.75","locked":"0"}]}]}}"#;
        let b = Bybit.parse_balances(body).unwrap();
        assert_eq!(b[0].locked, Decimal::from(30));
        assert_eq!(b[0].free, Decimal::from(70));
        assert_eq!(b[1].free, Decimal::new(75, 2));
        assert_eq!(b[1].account_type.as_deref(), Some("unified"));

        let key = br#"{"retCode":0,"result":{"readOnly":0,"ips":["*"],"expiredAt":"2023-12-01T02:36:06Z",
            "permissions":{"ContractTrade":["Order","Position"],"Spot":["SpotTrade"],"Wallet":["AccountTransfer","Withdraw"],"Options":[]}}}"#;
        let k = Bybit.parse_key_check(key).unwrap();
        assert!(k.can_trade && k.can_withdraw && k.can_transfer && !k.ip_restricted);
        assert_eq!(k.expires_at_ms, Some(1_701_398_166_000));
        assert_eq!(k.warnings.len(), 4);
        let ro = br#"{"retCode":0,"result":{"readOnly":1,"ips":["1.2.3.4"],"expiredAt":"",
            "permissions":{"ContractTrade":["Order"],"Wallet":["Withdraw"]}}}"#;
        let k = Bybit.parse_key_check(ro).unwrap();
        assert!(k.can_read && !k.can_trade && !k.can_withdraw && k.ip_restricted);
        assert!(k.warnings.is_empty());

        let mut h = HeaderMap::new();
        h.insert("X-Bapi-Limit", HeaderValue::from_static("20"));
        h.insert("X-Bapi-Limit-Status", HeaderValue::from_static("15"));
        h.insert(
            "X-Bapi-Limit-Reset-Timestamp",
            HeaderValue::from_static("1672738134824"),
        );
        assert_eq!(
            Bybit.rate_limit(&h),
            Some(RateLimitStatus {
                used: Some(5),
                limit: Some(20),
                remaining: Some(15),
                reset_at_ms: Some(1_672_738_134_824),
                reset_in_ms: None,
            })
        );
        assert_eq!(Bybit.rate_limit(&HeaderMap::new()), None);
    }

    #[test]
    fn maps_errors() {
        let e = |s: u16, b: &str| Bybit.classify_error(s, b.as_bytes());
        assert_eq!(e(200, r#"{"retCode":0,"retMsg":"OK"}"#), None);
        assert_eq!(
            e(200, r#"{"retCode":10003,"retMsg":"API key is invalid."}"#),
            Some(ErrorKind::InvalidKey)
        );
        assert_eq!(
            e(200, r#"{"retCode":10004,"retMsg":""}"#),
            Some(ErrorKind::BadSignature)
        );
        assert_eq!(
            e(200, r#"{"retCode":10005,"retMsg":""}"#),
            Some(ErrorKind::PermissionDenied)
        );
        assert_eq!(
            e(200, r#"{"retCode":10006,"retMsg":""}"#),
            Some(ErrorKind::RateLimited)
        );
        assert_eq!(
            e(200, r#"{"retCode":10010,"retMsg":""}"#),
            Some(ErrorKind::IpNotAllowed)
        );
        assert_eq!(
            e(200, r#"{"retCode":10002,"retMsg":""}"#),
            Some(ErrorKind::TimestampOutOfWindow)
        );
        assert_eq!(
            e(200, r#"{"retCode":110007,"retMsg":""}"#),
            Some(ErrorKind::InsufficientBalance)
        );
        assert_eq!(e(500, "oops"), Some(ErrorKind::Unknown));
    }

    fn parse(path: &str, body: &str) -> Result<Vec<OrderIntent>, ParseError> {
        Bybit.parse_intent(Trade, &post(path, body)).map(orders)
    }

    #[test]
    fn market_price_is_not_a_limit() {
        let o = parse(
            "/v5/order/create",
            r#"{"category":"linear","symbol":"BTCUSDT","side":"Buy","orderType":"Market","qty":"100","price":"0.01"}"#,
        )
        .unwrap();
        assert_eq!(o[0].price, Some(Decimal::new(1, 2)));
        assert!(!o[0].price_is_limit);
        let o = parse(
            "/v5/order/create",
            r#"{"category":"linear","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"1","price":"60000","timeInForce":"PostOnly"}"#,
        )
        .unwrap();
        assert!(o[0].price_is_limit);
        // An amendment does not say what it amends: its price is not taken as a limit.
        let o = parse(
            "/v5/order/amend",
            r#"{"category":"linear","symbol":"BTCUSDT","orderId":"1","qty":"100","price":"0.01"}"#,
        )
        .unwrap();
        assert!(!o[0].price_is_limit);
    }

    #[test]
    fn batch_category_is_the_envelopes() {
        let batch = |inner: &str| {
            parse(
                "/v5/order/create-batch",
                &format!(
                    r#"{{"category":"spot","request":[{{"symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"1","price":"1"{inner}}}]}}"#
                ),
            )
        };
        // The order's own category would make it a linear order for keygate; Bybit uses
        // the envelope's.
        assert!(batch(r#","category":"linear""#).is_err());
        assert_eq!(
            batch(r#","category":"spot""#).unwrap()[0].size_unit,
            SizeUnit::Base
        );
        assert!(batch("").is_ok());
        assert!(parse(
            "/v5/order/create-batch",
            r#"{"request":[{"category":"linear","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"1","price":"1"}]}"#,
        )
        .is_err());
    }

    #[test]
    fn reduce_only_only_where_bybit_honours_it() {
        let ro = |category: &str, flags: &str| {
            parse(
                "/v5/order/create",
                &format!(
                    r#"{{"category":"{category}","symbol":"BTCUSDT","side":"Sell","orderType":"Market","qty":"1"{flags}}}"#
                ),
            )
            .unwrap()[0]
                .reduce_only
        };
        assert!(ro("linear", r#","reduceOnly":true"#));
        assert!(ro("inverse", r#","closeOnTrigger":true"#));
        assert!(!ro("spot", r#","reduceOnly":true"#));
        assert!(!ro("spot", r#","closeOnTrigger":true"#));
        assert!(!ro("linear", r#","reduceOnly":"true""#));
        assert!(!ro("linear", r#","reduceOnly":1"#));
        assert!(!ro("linear", r#","reduceOnly":false"#));
    }

    #[test]
    fn duplicate_json_keys_are_refused() {
        assert!(parse(
            "/v5/order/create",
            r#"{"category":"linear","symbol":"BTCUSDT","side":"Buy","orderType":"Market","qty":"0.001","qty":"1000"}"#,
        )
        .is_err());
        let w = post(
            "/v5/asset/withdraw/create",
            r#"{"coin":"USDT","chain":"TRX","address":"Tallowed","address":"Tattacker","amount":"1"}"#,
        );
        assert!(Bybit.parse_intent(Withdraw, &w).is_err());
    }
}
