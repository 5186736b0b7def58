//! OKX API v5 (<https://www.okx.com/docs-v5/en/>).
//!
//! Signing: `OK-ACCESS-SIGN = base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath + body))`
//! where `timestamp` is ISO-8601 UTC with milliseconds (`2020-12-08T09:08:57.715Z`, the same
//! value as `OK-ACCESS-TIMESTAMP`) and `requestPath` carries the query (`/api/v5/x?a=1`).
//! Demo trading is the production host plus `x-simulated-trading: 1`, which keygate sets
//! from the credential's environment and never takes from the client.
//!
//! Invariants:
//! - The route table is matched only against a plain path (no `..`, `//`, `%`, ...), so a
//!   prefix entry cannot be stretched over another family; anything else is `Unknown`.
//! - `/api/v5/asset/withdrawal*` and `/api/v5/fiat/*withdrawal` are `Withdraw` for every method.
//!
//! This file also holds the small pieces the OKX, Bybit and Bitget modules share (route
//! table matching, ISO-8601 conversion, JSON field readers). They live here rather than in
//! `util.rs` only because that file is edited concurrently; they are `pub(crate)`.

use http::{HeaderMap, HeaderValue, Method};
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::util::{
    b64, hmac_sha256, json_body, json_opt_decimal, json_request_body, remove_headers,
};
use crate::*;

/// `okx` API.
pub struct Okx;

const PRODUCTION: &str = "https://www.okx.com";

/// Header that selects OKX demo trading.
const DEMO_HEADER: &str = "x-simulated-trading";

// ---------------------------------------------------------------------------------------
// Shared by okx / bybit / bitget: route tables.
// ---------------------------------------------------------------------------------------

/// The method part of a route-table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verb {
    /// Any method: used for money-moving paths so that no method slips past the class.
    Any,
    /// `GET` (and `HEAD`).
    Get,
    Post,
}

impl Verb {
    fn matches(self, method: &Method) -> bool {
        match self {
            Verb::Any => true,
            Verb::Get => method == Method::GET || method == Method::HEAD,
            Verb::Post => method == Method::POST,
        }
    }
}

/// `(method, path pattern, class)`. A pattern ending in `*` matches any longer path with
/// that prefix; otherwise the match is exact. First match wins, so specific entries (and
/// every money-moving path) come before the family wildcards.
pub(crate) type Route = (Verb, &'static str, EndpointClass);

/// True for a path made only of non-empty segments of `[A-Za-z0-9._-]` that are not `.`
/// or `..`. Anything else (encoded bytes, dot segments, doubled slashes, a trailing slash)
/// could be normalised differently by the exchange than by the table, so it is refused.
pub(crate) fn is_plain_path(path: &str) -> bool {
    let Some(rest) = path.strip_prefix('/') else {
        return false;
    };
    !rest.is_empty()
        && rest.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        })
}

/// Classifies `method path` by `routes`; `Unknown` when the path is not plain or no entry
/// matches.
pub(crate) fn classify_by(routes: &[Route], method: &Method, path: &str) -> EndpointClass {
    route_by(routes, method, path)
        .map(|(_, _, class)| *class)
        .unwrap_or(EndpointClass::Unknown)
}

/// The first row of `routes` matching `method path`; none for a path that is not plain.
pub(crate) fn route_by<'r>(routes: &'r [Route], method: &Method, path: &str) -> Option<&'r Route> {
    if !is_plain_path(path) {
        return None;
    }
    routes.iter().find(|(verb, pattern, _)| {
        verb.matches(method)
            && match pattern.strip_suffix('*') {
                Some(prefix) => path.len() > prefix.len() && path.starts_with(prefix),
                None => *pattern == path,
            }
    })
}

// ---------------------------------------------------------------------------------------
// Shared: signing and parsing helpers.
// ---------------------------------------------------------------------------------------

/// The HMAC secret, or `MissingSecret`.
pub(crate) fn hmac_secret(creds: &ApiCredentials) -> Result<&str, SignError> {
    creds
        .api_secret
        .as_ref()
        .map(|s| s.expose_secret())
        .ok_or(SignError::MissingSecret)
}

/// Inserts a header whose value may come from the credential (key, passphrase): invalid
/// header text is an error instead of a panic, and the value is marked sensitive so that
/// `Debug` output of the request does not print it.
pub(crate) fn put_header(
    headers: &mut HeaderMap,
    name: &'static str,
    value: &str,
    sensitive: bool,
) -> Result<(), SignError> {
    let mut v = HeaderValue::from_str(value)
        .map_err(|_| SignError::InvalidRequest("credential is not valid header text"))?;
    v.set_sensitive(sensitive);
    headers.insert(http::HeaderName::from_static(name), v);
    Ok(())
}

/// Sets `Content-Type: application/json` on a request with a body, whatever the client
/// sent: keygate read the body as JSON, and so must the exchange (a form type beside a
/// JSON-looking body could make an exchange read other fields than keygate checked).
pub(crate) fn default_json_content_type(req: &mut OutgoingRequest) {
    if !req.body.is_empty() {
        req.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
}

/// `(year, month, day)` of a day count since 1970-01-01 (H. Hinnant's civil_from_days).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// Days since 1970-01-01 of a civil date (H. Hinnant's days_from_civil).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `2020-12-08T09:08:57.715Z` for a Unix time in milliseconds.
pub(crate) fn iso8601_millis(ms: i64) -> String {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, mo, d) = civil_from_days(days);
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3_600_000,
        rem / 60_000 % 60,
        rem / 1000 % 60,
        rem % 1000
    )
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fff]Z` (UTC only) into Unix milliseconds.
pub(crate) fn parse_iso8601_utc(s: &str) -> Option<i64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut dp = date.split('-');
    let y: i64 = dp.next()?.parse().ok()?;
    let mo: u32 = dp.next()?.parse().ok()?;
    let d: u32 = dp.next()?.parse().ok()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, ""));
    let mut tp = hms.split(':');
    let h: i64 = tp.next()?.parse().ok()?;
    let mi: i64 = tp.next()?.parse().ok()?;
    let sec: i64 = tp.next()?.parse().ok()?;
    if dp.next().is_some()
        || tp.next().is_some()
        || !(1..=12).contains(&mo)
        || !(1..=31).contains(&d)
    {
        return None;
    }
    let ms: i64 = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(3).collect();
        let n: i64 = digits.parse().ok()?;
        n * 10_i64.pow(3 - digits.len() as u32)
    };
    Some(((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + sec * 1000 + ms)
}

/// A non-empty string field (numbers are rendered as text).
pub(crate) fn str_field(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A required non-empty string field.
pub(crate) fn req_str(v: &Value, key: &'static str) -> Result<String, ParseError> {
    str_field(v, key).ok_or(ParseError::MissingField(key))
}

/// `buy` / `sell` in any case.
pub(crate) fn parse_side(s: &str) -> Result<Side, ParseError> {
    match s.to_ascii_lowercase().as_str() {
        "buy" => Ok(Side::Buy),
        "sell" => Ok(Side::Sell),
        _ => Err(ParseError::InvalidValue("side")),
    }
}

/// True only for a JSON `true` under `key`: the one form OKX and Bybit document for their
/// boolean order flags. A string `"true"`, `"yes"` or `1` is read as false, so a flag the
/// exchange might not honour never earns a reduce-only exemption.
pub(crate) fn json_true(v: &Value, key: &str) -> bool {
    matches!(v.get(key), Some(Value::Bool(true)))
}

/// A decimal that must be present and positive.
pub(crate) fn positive_decimal(v: &Value, key: &'static str) -> Result<Decimal, ParseError> {
    let d = json_opt_decimal(key, v.get(key))?.ok_or(ParseError::MissingField(key))?;
    if d <= Decimal::ZERO {
        return Err(ParseError::InvalidValue(key));
    }
    Ok(d)
}

/// An optional decimal; present but zero or negative is an error (a policy cap must never
/// see a negative size).
pub(crate) fn opt_positive_decimal(
    v: &Value,
    key: &'static str,
) -> Result<Option<Decimal>, ParseError> {
    match json_opt_decimal(key, v.get(key))? {
        Some(d) if d <= Decimal::ZERO => Err(ParseError::InvalidValue(key)),
        other => Ok(other),
    }
}

/// The body of a POST as JSON; an empty body, or an object with a repeated key, is a
/// malformed request for the classes that carry an intent.
pub(crate) fn body_json(req: &OutgoingRequest) -> Result<Value, ParseError> {
    if req.body.is_empty() {
        return Err(ParseError::Malformed("empty body".into()));
    }
    json_request_body(&req.body)
}

/// The elements of a JSON array, or `MissingField` when `v` is not a non-empty array.
pub(crate) fn non_empty_array<'a>(
    v: Option<&'a Value>,
    field: &'static str,
) -> Result<&'a Vec<Value>, ParseError> {
    match v {
        Some(Value::Array(a)) if !a.is_empty() => Ok(a),
        Some(Value::Array(_)) | None | Some(Value::Null) => Err(ParseError::MissingField(field)),
        Some(_) => Err(ParseError::InvalidValue(field)),
    }
}

/// The decimal behind a header, when present and numeric.
pub(crate) fn header_u64(headers: &HeaderMap, name: &str) -> Option<u64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

// ---------------------------------------------------------------------------------------
// OKX.
// ---------------------------------------------------------------------------------------

use EndpointClass::{Manage, Public, Read, SubAccount, Trade, Transfer, Withdraw};
use Verb::{Any, Get, Post};

/// Every OKX v5 endpoint family keygate knows. Not listed (hence `Unknown`): earn/finance,
/// loans and borrowing, spread and block (RFQ) trading, trading bots, copy trading, convert,
/// broker, affiliate; their bodies are not orders keygate can check.
#[rustfmt::skip]
pub(crate) const ROUTES: &[Route] = &[
    // Money out. Every method, before any family wildcard.
    (Any,  "/api/v5/asset/withdrawal",                 Withdraw),
    (Any,  "/api/v5/asset/withdrawal-lightning",       Withdraw),
    (Any,  "/api/v5/asset/cancel-withdrawal",          Withdraw),
    (Any,  "/api/v5/fiat/create-withdrawal",           Withdraw),
    (Any,  "/api/v5/fiat/cancel-withdrawal",           Withdraw),
    // Money between the owner's own accounts.
    (Any,  "/api/v5/asset/transfer",                   Transfer),
    // Sub-accounts (listing, balances, transfers between them).
    (Post, "/api/v5/users/subaccount/apikey",          Manage),
    (Post, "/api/v5/users/subaccount/modify-apikey",   Manage),
    (Post, "/api/v5/users/subaccount/delete-apikey",   Manage),
    (Post, "/api/v5/users/subaccount/subaccount-apikey", Manage),
    (Any,  "/api/v5/users/subaccount/*",               SubAccount),
    (Get,  "/api/v5/users/entrust-subaccount-list",    SubAccount),
    (Any,  "/api/v5/asset/subaccount/*",               SubAccount),
    (Any,  "/api/v5/account/subaccount/*",             SubAccount),
    // Orders.
    (Post, "/api/v5/trade/order",                      Trade),
    (Post, "/api/v5/trade/batch-orders",               Trade),
    (Post, "/api/v5/trade/cancel-order",               Trade),
    (Post, "/api/v5/trade/cancel-batch-orders",        Trade),
    (Post, "/api/v5/trade/amend-order",                Trade),
    (Post, "/api/v5/trade/amend-batch-orders",         Trade),
    (Post, "/api/v5/trade/close-position",             Trade),
    (Post, "/api/v5/trade/mass-cancel",                Trade),
    (Post, "/api/v5/trade/cancel-all-after",           Trade),
    (Post, "/api/v5/trade/order-algo",                 Trade),
    (Post, "/api/v5/trade/cancel-algos",               Trade),
    (Post, "/api/v5/trade/amend-algos",                Trade),
    (Post, "/api/v5/trade/cancel-advance-algos",       Trade),
    (Post, "/api/v5/account/set-leverage",             Trade),
    (Post, "/api/v5/account/position/margin-balance",  Trade),
    // POSTs that only read.
    (Post, "/api/v5/trade/order-precheck",             Read),
    (Post, "/api/v5/trade/fills-archive",              Read),
    (Post, "/api/v5/account/bills-history-archive",    Read),
    (Post, "/api/v5/account/position-builder",         Read),
    // Account settings: change how every order of the account behaves (position mode,
    // margin mode, account level, collateral, auto-borrow), not one order: `manage`.
    (Post, "/api/v5/account/set-position-mode",        Manage),
    (Post, "/api/v5/account/set-account-level",        Manage),
    (Post, "/api/v5/account/account-level-switch-preset", Manage),
    (Post, "/api/v5/account/set-isolated-mode",        Manage),
    (Post, "/api/v5/account/set-greeks",               Manage),
    (Post, "/api/v5/account/set-fee-type",             Manage),
    (Post, "/api/v5/account/set-auto-loan",            Manage),
    (Post, "/api/v5/account/set-auto-repay",           Manage),
    (Post, "/api/v5/account/set-collateral-assets",    Manage),
    (Post, "/api/v5/account/set-riskOffset-type",      Manage),
    (Post, "/api/v5/account/activate-option",          Manage),
    (Post, "/api/v5/account/mmp-config",               Manage),
    (Post, "/api/v5/account/set-settle-currency",      Manage),
    (Post, "/api/v5/account/set-trading-config",       Manage),
    // Reads: OKX performs no action on GET.
    (Get,  "/api/v5/account/*",                        Read),
    (Get,  "/api/v5/trade/*",                          Read),
    (Get,  "/api/v5/asset/*",                          Read),
    (Get,  "/api/v5/fiat/*",                           Read),
    (Get,  "/api/v5/users/*",                          Read),
    // Public market data.
    (Get,  "/api/v5/market/*",                         Public),
    (Get,  "/api/v5/public/*",                         Public),
    (Get,  "/api/v5/rubik/*",                          Public),
    (Get,  "/api/v5/system/*",                         Public),
    (Get,  "/api/v5/support/*",                        Public),
    (Get,  "/api/v5/sprd/spreads",                     Public),
    (Get,  "/api/v5/sprd/books",                       Public),
    (Get,  "/api/v5/sprd/public-trades",               Public),
    (Get,  "/api/v5/sprd/ticker",                      Public),
    (Get,  "/api/v5/copytrading/public-*",             Public),
];

/// Base and quote of an OKX instrument id, and whether its `sz` counts contracts:
/// `BTC-USDT` (spot/margin), `BTC-USDT-SWAP`, `BTC-USD-241227`, `BTC-USD-241227-50000-C`.
fn okx_instrument(inst_id: &str) -> (Option<String>, Option<String>, bool) {
    let parts: Vec<&str> = inst_id.split('-').collect();
    let base = parts
        .first()
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string());
    let quote = parts
        .get(1)
        .filter(|s| !s.is_empty())
        .map(|s| s.to_string());
    (base, quote, parts.len() > 2)
}

/// A price field, where OKX uses `-1` for "market price" (algo orders).
fn okx_price(v: &Value, key: &'static str) -> Result<Option<Decimal>, ParseError> {
    match json_opt_decimal(key, v.get(key))? {
        Some(p) if p == Decimal::NEGATIVE_ONE => Ok(None),
        Some(p) if p <= Decimal::ZERO => Err(ParseError::InvalidValue(key)),
        other => Ok(other),
    }
}

fn okx_symbol_intent(inst_id: &str) -> OrderIntent {
    let (base, quote, contracts) = okx_instrument(inst_id);
    let mut o = OrderIntent::new(inst_id);
    o.base = base;
    o.quote = quote;
    if contracts {
        o.size_unit = SizeUnit::Contracts;
    }
    o
}

/// The endpoint a new OKX order came through: its price and its position-closing fields
/// differ between them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OkxNewOrder {
    /// `trade/order`, `trade/batch-orders`.
    Order,
    /// `trade/order-algo`.
    Algo,
}

/// Order types that execute at `px` or better. docs-v5 "Place order", px: "Only applicable
/// to limit, post_only, fok, ioc, mmp, mmp_and_post_only order"; `market` and
/// `optimal_limit_ioc` ignore it.
const OKX_LIMIT_ORDER_TYPES: [&str; 6] = [
    "limit",
    "post_only",
    "fok",
    "ioc",
    "mmp",
    "mmp_and_post_only",
];

/// Whether an algo order closes the whole position on trigger (`closeFraction: 1`). OKX
/// honours it only on `order-algo`, for `conditional` and `oco` orders on FUTURES or SWAP
/// (docs-v5 "Place algo order", closeFraction); anywhere else it is ignored and the order's
/// `sz` counts, so it earns no exemption.
fn okx_closes_whole_position(v: &Value, inst_id: &str, ord_type: &str) -> Result<bool, ParseError> {
    let Some(fraction) = json_opt_decimal("closeFraction", v.get("closeFraction"))? else {
        return Ok(false);
    };
    if fraction != Decimal::ONE {
        return Err(ParseError::InvalidValue("closeFraction"));
    }
    let parts: Vec<&str> = inst_id.split('-').collect();
    let swap_or_futures = match parts.as_slice() {
        [_, _, "SWAP"] => true,
        [_, _, expiry] => !expiry.is_empty() && expiry.bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    };
    Ok(swap_or_futures && matches!(ord_type, "conditional" | "oco"))
}

/// A new order (`trade/order`, `batch-orders`, `order-algo`).
/// OKX names an instrument by `instId` or by its numeric `instIdCode`, and where both are
/// given the code wins (OKX's order docs, WebSocket; reported for REST too). keygate checks
/// `instId`: an order, amendment or batch item naming a code (any case) is refused, so it
/// cannot be checked as one instrument and traded as another.
fn refuse_inst_id_code(v: &Value) -> Result<(), ParseError> {
    // any case, and with `_` or `-` (`inst_id_code`), for a binder that matches loosely
    let named = |item: &Value| {
        item.as_object().is_some_and(|o| {
            o.keys().any(|k| {
                let k: String = k.chars().filter(|c| !matches!(c, '_' | '-')).collect();
                k.eq_ignore_ascii_case("instIdCode")
            })
        })
    };
    let any = match v {
        Value::Array(items) => items.iter().any(named),
        one => named(one),
    };
    if any {
        return Err(ParseError::InvalidValue("instIdCode"));
    }
    Ok(())
}

fn okx_new_order(v: &Value, endpoint: OkxNewOrder) -> Result<OrderIntent, ParseError> {
    let inst_id = req_str(v, "instId")?;
    let mut o = okx_symbol_intent(&inst_id);
    let side = parse_side(&req_str(v, "side")?)?;
    o.side = Some(side);
    let ord_type = req_str(v, "ordType")?.to_ascii_lowercase();
    let sz = opt_positive_decimal(v, "sz")?;
    let closes_position =
        endpoint == OkxNewOrder::Algo && okx_closes_whole_position(v, &inst_id, &ord_type)?;
    if sz.is_none() && !closes_position {
        return Err(ParseError::MissingField("sz"));
    }
    match endpoint {
        OkxNewOrder::Order => {
            o.price = okx_price(v, "px")?;
            o.price_is_limit =
                o.price.is_some() && OKX_LIMIT_ORDER_TYPES.contains(&ord_type.as_str());
        }
        // A trigger order places a limit order at `orderPx` (`-1`: a market order); the
        // TP/SL prices of conditional and oco orders are not sized by.
        OkxNewOrder::Algo if ord_type == "trigger" => {
            o.price = okx_price(v, "orderPx")?;
            o.price_is_limit = o.price.is_some();
        }
        OkxNewOrder::Algo => {}
    }
    // reduceOnly: "Only applicable to MARGIN orders, and FUTURES/SWAP orders in net mode"
    // (docs-v5 "Place order"): a `cash` (spot) order or a long/short-mode order ignores it.
    let margin_mode = matches!(
        str_field(v, "tdMode").as_deref(),
        Some("cross" | "isolated")
    );
    let net_mode = matches!(str_field(v, "posSide").as_deref(), None | Some("net"));
    o.reduce_only = (json_true(v, "reduceOnly") && margin_mode && net_mode) || closes_position;
    // tgtCcy applies to SPOT market orders; OKX's default is quote_ccy for buys and
    // base_ccy for sells (docs-v5 "Place order", tgtCcy). keygate honours it only for
    // `tdMode: cash`: for margin modes the unit is not documented unambiguously, and reading
    // a base size as a quote amount would understate notional, whereas the reverse only
    // overstates it (fail closed).
    let cash_market = o.size_unit == SizeUnit::Base
        && ord_type == "market"
        && str_field(v, "tdMode").as_deref() == Some("cash");
    let by_quote = match str_field(v, "tgtCcy").as_deref() {
        Some("quote_ccy") => cash_market,
        Some("base_ccy") => false,
        Some(_) => return Err(ParseError::InvalidValue("tgtCcy")),
        None => cash_market && side == Side::Buy,
    };
    if by_quote {
        o.quote_amount = sz;
    } else {
        o.quantity = sz;
    }
    o.order_type = Some(ord_type);
    // A spot instrument traded in a margin mode (`cross`, `isolated`) may borrow what it
    // trades with; `cash` (and copy trading's `spot_isolated`) does not. Derivatives are
    // sized in contracts and margined by their own leverage setting.
    o.borrows = o.size_unit == SizeUnit::Base
        && !matches!(
            str_field(v, "tdMode").as_deref(),
            Some("cash" | "spot_isolated")
        );
    Ok(o)
}

/// A cancel by instrument (`cancel-order`, `cancel-batch-orders`, `cancel-algos`).
fn okx_cancel(v: &Value) -> Result<OrderIntent, ParseError> {
    let mut o = okx_symbol_intent(&req_str(v, "instId")?);
    o.is_cancel = true;
    Ok(o)
}

/// An amendment: it may raise size or move the price, so it is not a cancel.
fn okx_amend(v: &Value) -> Result<OrderIntent, ParseError> {
    let mut o = okx_symbol_intent(&req_str(v, "instId")?);
    o.quantity = opt_positive_decimal(v, "newSz")?;
    o.price = okx_price(v, "newPx")?;
    if o.price.is_none() {
        o.price = okx_price(v, "newTriggerPx")?;
    }
    Ok(o)
}

/// One object or a non-empty array of them.
fn each<T>(
    body: &Value,
    f: impl Fn(&Value) -> Result<T, ParseError>,
) -> Result<Vec<T>, ParseError> {
    match body {
        Value::Array(items) if !items.is_empty() => items.iter().map(f).collect(),
        Value::Object(_) => Ok(vec![f(body)?]),
        _ => Err(ParseError::Malformed(
            "expected a JSON object or array".into(),
        )),
    }
}

fn okx_trade_intent(path: &str, body: &Value) -> Result<RequestIntent, ParseError> {
    let orders = match path {
        "/api/v5/trade/order" | "/api/v5/trade/batch-orders" => {
            each(body, |v| okx_new_order(v, OkxNewOrder::Order))?
        }
        "/api/v5/trade/order-algo" => each(body, |v| okx_new_order(v, OkxNewOrder::Algo))?,
        "/api/v5/trade/cancel-order"
        | "/api/v5/trade/cancel-batch-orders"
        | "/api/v5/trade/cancel-algos"
        | "/api/v5/trade/cancel-advance-algos" => each(body, okx_cancel)?,
        "/api/v5/trade/amend-order"
        | "/api/v5/trade/amend-batch-orders"
        | "/api/v5/trade/amend-algos" => each(body, okx_amend)?,
        "/api/v5/trade/mass-cancel" => {
            let family = req_str(body, "instFamily")?;
            let mut o = okx_symbol_intent(&family);
            o.size_unit = SizeUnit::Contracts;
            o.is_cancel = true;
            vec![o]
        }
        // Arms or disarms the dead-man switch: it can only cancel.
        "/api/v5/trade/cancel-all-after" => return Ok(RequestIntent::None),
        "/api/v5/trade/close-position" => {
            let mut o = okx_symbol_intent(&req_str(body, "instId")?);
            o.order_type = Some("market".into());
            o.reduce_only = true;
            vec![o]
        }
        "/api/v5/account/set-leverage" => {
            // Per instrument (`instId`) or per margin currency (`ccy`, cross margin).
            let symbol = str_field(body, "instId")
                .or_else(|| str_field(body, "ccy"))
                .ok_or(ParseError::MissingField("instId"))?;
            let mut o = okx_symbol_intent(&symbol);
            o.leverage = Some(positive_decimal(body, "lever")?);
            vec![o]
        }
        "/api/v5/account/position/margin-balance" => {
            vec![okx_symbol_intent(&req_str(body, "instId")?)]
        }
        _ => {
            return Err(ParseError::Malformed(
                "no order parser for this path".into(),
            ))
        }
    };
    Ok(RequestIntent::Orders { orders })
}

fn okx_withdraw_intent(path: &str, body: &Value) -> Result<RequestIntent, ParseError> {
    match path {
        "/api/v5/asset/withdrawal" => {
            // Addresses with a memo are sent as `address:tag` (docs-v5 "Withdrawal", toAddr).
            let to = req_str(body, "toAddr")?;
            let (mut address, tag) = match to.split_once(':') {
                Some((a, t)) if !a.is_empty() && !t.is_empty() => {
                    (a.to_string(), Some(t.to_string()))
                }
                _ => (to.clone(), None),
            };
            // An internal withdrawal to a phone number names its country in `areaCode`
            // (docs-v5 "Withdrawal"): the same `toAddr` under another code is someone
            // else's account. It is checked as `+<areaCode><toAddr>` (allowlist entries
            // for phone numbers are written so); an on-chain address with one matches no
            // entry.
            if let Some(area) = util::json_tag(body, "areaCode")? {
                address = format!("+{}{address}", area.trim_start_matches('+'));
            }
            Ok(RequestIntent::Withdrawal(WithdrawalIntent {
                asset: req_str(body, "ccy")?,
                amount: positive_decimal(body, "amt")?,
                address,
                network: util::json_network(body, "chain")?,
                tag,
            }))
        }
        "/api/v5/fiat/create-withdrawal" => Ok(RequestIntent::Withdrawal(WithdrawalIntent {
            asset: req_str(body, "ccy")?,
            amount: positive_decimal(body, "amt")?,
            address: req_str(body, "paymentAcctId")?,
            network: util::json_network(body, "paymentMethod")?,
            tag: None,
        })),
        // Cancelling a pending withdrawal moves nothing.
        "/api/v5/asset/cancel-withdrawal" | "/api/v5/fiat/cancel-withdrawal" => {
            Ok(RequestIntent::None)
        }
        // The amount lives inside the BOLT11 invoice, which keygate does not decode: refuse
        // rather than let a withdrawal through unchecked.
        "/api/v5/asset/withdrawal-lightning" => Err(ParseError::InvalidValue("invoice")),
        _ => Err(ParseError::Malformed(
            "no withdrawal parser for this path".into(),
        )),
    }
}

impl Exchange for Okx {
    fn id(&self) -> ExchangeId {
        ExchangeId::Okx
    }

    fn hosts(&self) -> Hosts {
        Hosts {
            production: PRODUCTION,
            testnet: Some(PRODUCTION),
        }
    }

    fn strip_auth(&self, req: &mut OutgoingRequest) {
        remove_headers(
            &mut req.headers,
            &["authorization", DEMO_HEADER],
            &["ok-access-"],
        );
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
        let passphrase = creds
            .passphrase
            .as_ref()
            .ok_or(SignError::MissingPassphrase)?;
        let timestamp = iso8601_millis(ctx.now_ms);
        let mut prehash = Vec::with_capacity(64 + req.path.len() + req.body.len());
        prehash.extend_from_slice(timestamp.as_bytes());
        prehash.extend_from_slice(req.method.as_str().as_bytes());
        prehash.extend_from_slice(req.path.as_bytes());
        if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
            prehash.push(b'?');
            prehash.extend_from_slice(q.as_bytes());
        }
        prehash.extend_from_slice(&req.body);
        let signature = b64(&hmac_sha256(secret.as_bytes(), &prehash));

        let h = &mut req.headers;
        put_header(h, "ok-access-key", creds.api_key.expose_secret(), true)?;
        put_header(h, "ok-access-passphrase", passphrase.expose_secret(), true)?;
        put_header(h, "ok-access-timestamp", &timestamp, false)?;
        put_header(h, "ok-access-sign", &signature, true)?;
        if ctx.environment == Environment::Testnet {
            put_header(h, DEMO_HEADER, "1", false)?;
        }
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
            Trade => {
                let body = body_json(req)?;
                refuse_inst_id_code(&body)?;
                okx_trade_intent(&req.path, &body)
            }
            Withdraw => okx_withdraw_intent(&req.path, &body_json(req)?),
            Transfer => {
                let body = body_json(req)?;
                let (asset, amount) = (
                    req_str(&body, "ccy")?,
                    Some(positive_decimal(&body, "amt")?),
                );
                // `type` 0 (the default) moves funds within this account; 1–4 to or from
                // a sub-account, as does naming one (`subAcct`)
                let within = str_field(&body, "type").is_none_or(|t| t == "0")
                    && body.get("subAcct").is_none();
                Ok(if within {
                    RequestIntent::Transfer { asset, amount }
                } else {
                    RequestIntent::SubAccountTransfer { asset, amount }
                })
            }
            _ => Ok(RequestIntent::None),
        }
    }

    fn balance_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/api/v5/account/balance",
            query: None,
        }
    }

    /// `data[0].details[]` of the trading account: `availBal` free, `frozenBal` locked,
    /// `eq` (equity, as CCXT reports it) total, `cashBal` when `eq` is absent.
    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError> {
        let v = json_body(body)?;
        okx_ok(&v)?;
        let details = v
            .get("data")
            .and_then(|d| d.get(0))
            .and_then(|d| d.get("details"))
            .and_then(Value::as_array)
            .ok_or(ParseError::MissingField("data[0].details"))?;
        details
            .iter()
            .map(|d| {
                let asset = req_str(d, "ccy")?;
                let locked = json_opt_decimal("frozenBal", d.get("frozenBal"))?.unwrap_or_default();
                let total = match json_opt_decimal("eq", d.get("eq"))? {
                    Some(t) => t,
                    None => json_opt_decimal("cashBal", d.get("cashBal"))?
                        .ok_or(ParseError::MissingField("eq"))?,
                };
                let free =
                    json_opt_decimal("availBal", d.get("availBal"))?.unwrap_or(total - locked);
                Ok(Balance {
                    asset,
                    free,
                    locked,
                    total,
                    account_type: Some("trading".into()),
                })
            })
            .collect()
    }

    fn key_check_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/api/v5/account/config",
            query: None,
        }
    }

    /// `data[0].perm` is a comma list of `read_only`, `trade`, `withdraw`; `data[0].ip` the
    /// bound IPs (empty: none). OKX has no separate transfer permission: funds transfer
    /// (`/api/v5/asset/transfer`) requires `trade`, so a trade key can transfer.
    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError> {
        let v = json_body(body)?;
        okx_ok(&v)?;
        let cfg = v
            .get("data")
            .and_then(|d| d.get(0))
            .ok_or(ParseError::MissingField("data[0]"))?;
        let perm = cfg
            .get("perm")
            .and_then(Value::as_str)
            .ok_or(ParseError::MissingField("perm"))?;
        let perms: Vec<&str> = perm.split(',').map(str::trim).collect();
        let can_trade = perms.contains(&"trade");
        let check = KeyCheck {
            can_read: perms.contains(&"read_only") || can_trade,
            can_trade,
            can_withdraw: perms.contains(&"withdraw"),
            can_transfer: can_trade,
            ip_restricted: cfg
                .get("ip")
                .and_then(Value::as_str)
                .is_some_and(|ip| !ip.trim().is_empty()),
            expires_at_ms: None,
            warnings: Vec::new(),
        };
        Ok(check.with_standard_warnings())
    }

    /// OKX sends no rate-limit headers; limits are documented per endpoint and reported by
    /// `GET /api/v5/trade/account-rate-limit` only.
    fn rate_limit(&self, _headers: &HeaderMap) -> Option<RateLimitStatus> {
        None
    }

    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind> {
        let v: Option<Value> = serde_json::from_slice(body).ok();
        let code = v.as_ref().and_then(|v| str_field(v, "code"));
        // Batch endpoints answer code 1/2 with the reason in data[].sCode.
        let s_code = v
            .as_ref()
            .and_then(|v| v.get("data"))
            .and_then(|d| d.get(0))
            .and_then(|d| str_field(d, "sCode"))
            .filter(|c| c != "0");
        let kind = match code.as_deref() {
            Some("0") if status < 400 => return None,
            Some("1") | Some("2") => s_code.as_deref().map(okx_error_kind),
            Some(c) => Some(okx_error_kind(c)),
            None => None,
        };
        match kind {
            Some(ErrorKind::Unknown) | None if status == 429 => Some(ErrorKind::RateLimited),
            Some(k) => Some(k),
            None if status >= 400 => Some(ErrorKind::Unknown),
            None => None,
        }
    }
}

/// Maps OKX error codes (docs-v5 "Error Code") to keygate's kinds.
fn okx_error_kind(code: &str) -> ErrorKind {
    match code {
        // 50100: API frozen; 50101: key of another environment (demo vs live).
        "50111" | "50103" | "50104" | "50105" | "50114" | "50100" | "50101" => {
            ErrorKind::InvalidKey
        }
        "50113" | "50106" => ErrorKind::BadSignature,
        "50110" => ErrorKind::IpNotAllowed,
        "50011" | "50061" => ErrorKind::RateLimited,
        "50102" | "50107" | "50112" => ErrorKind::TimestampOutOfWindow,
        "51008" | "51119" | "51127" | "51131" | "58350" | "59200" => ErrorKind::InsufficientBalance,
        // 50030: "No permission to use this API".
        "50030" => ErrorKind::PermissionDenied,
        _ => ErrorKind::Unknown,
    }
}

/// An OKX response whose top-level `code` is not `"0"` carries no data to parse.
fn okx_ok(v: &Value) -> Result<(), ParseError> {
    match str_field(v, "code").as_deref() {
        Some("0") | None => Ok(()),
        Some(_) => Err(ParseError::InvalidValue("code")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use secrecy::SecretString;

    fn creds(secret: &str, passphrase: Option<&str>) -> ApiCredentials {
        ApiCredentials {
            api_key: SecretString::from("key-1"),
            api_secret: Some(SecretString::from(secret.to_string())),
            passphrase: passphrase.map(|p| SecretString::from(p.to_string())),
            private_key: None,
        }
    }

    fn ctx(now_ms: i64, environment: Environment) -> SignContext {
        SignContext {
            now_ms,
            nonce: 0,
            random_nonce: [0; 16],
            environment,
            host: "www.okx.com".into(),
            recv_window_ms: None,
        }
    }

    fn post(path: &str, body: &str) -> OutgoingRequest {
        OutgoingRequest {
            method: Method::POST,
            path: path.into(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn iso8601_round_trips() {
        // The example timestamp of docs-v5 "REST Authentication".
        let ms = parse_iso8601_utc("2020-12-08T09:08:57.715Z").unwrap();
        assert_eq!(ms, 1_607_418_537_715);
        assert_eq!(iso8601_millis(ms), "2020-12-08T09:08:57.715Z");
        assert_eq!(iso8601_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_millis(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(
            parse_iso8601_utc("2023-12-01T02:36:06Z"),
            Some(1_701_398_166_000)
        );
        assert_eq!(parse_iso8601_utc("2023-12-01 02:36:06"), None);
    }

    /// Known answer built from the inputs of the OKX docs' signing example (docs-v5 "REST
    /// Authentication": timestamp `2020-12-08T09:08:57.715Z`, secret
    /// `22582BD0CFF14C41EDBF1AB98506286D`, body `{"instId":"BTC-USDT","lever":"5",
    /// "mgnMode":"isolated"}` for set-leverage). The docs print no signature; the expected
    /// value was computed independently with
    /// `printf %s "$prehash" | openssl dgst -sha256 -hmac "$secret" -binary | base64`.
    // A spot order in a margin mode may borrow; a cash one, or a swap, does not.
    #[test]
    fn spot_margin_orders_are_marked_as_borrowing() {
        let one = |inst: &str, mode: &str| {
            let body = format!(
                r#"{{"instId":"{inst}","tdMode":"{mode}","side":"buy","ordType":"limit","px":"1","sz":"1"}}"#
            );
            match Okx
                .parse_intent(Trade, &post("/api/v5/trade/order", &body))
                .unwrap()
            {
                RequestIntent::Orders { mut orders } => orders.remove(0).borrows,
                other => panic!("{other:?}"),
            }
        };
        assert!(!one("BTC-USDT", "cash"));
        assert!(one("BTC-USDT", "cross"));
        assert!(one("BTC-USDT", "isolated"));
        assert!(!one("BTC-USDT-SWAP", "cross"));
    }

    // An order naming its instrument by `instIdCode` (which OKX prefers to `instId`) is
    // refused: keygate checks `instId`.
    #[test]
    fn an_instrument_code_is_refused() {
        let parse = |path: &str, body: &str| Okx.parse_intent(Trade, &post(path, body));
        let order = r#"{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit","px":"1","sz":"1""#;
        assert!(parse("/api/v5/trade/order", &format!("{order}}}")).is_ok());
        for body in [
            format!(r#"{order},"instIdCode":10459}}"#),
            format!(r#"{order},"InstIdCode":"10459"}}"#),
            format!(r#"{order},"inst_id_code":"10459"}}"#),
            format!(r#"[{order}}},{order},"instIdCode":10459}}]"#),
        ] {
            let path = if body.starts_with('[') {
                "/api/v5/trade/batch-orders"
            } else {
                "/api/v5/trade/order"
            };
            assert!(parse(path, &body).is_err(), "{body}");
        }
        assert!(parse(
            "/api/v5/trade/amend-order",
            r#"{"instIdCode":10459,"ordId":"1","newSz":"2"}"#
        )
        .is_err());
    }

    #[test]
    fn known_answer_from_doc_inputs() {
        let body = r#"{"instId":"BTC-USDT","lever":"5","mgnMode":"isolated"}"#;
        let mut req = post("/api/v5/account/set-leverage", body);
        let c = creds("22582BD0CFF14C41EDBF1AB98506286D", Some("pp"));
        Okx.sign(
            &mut req,
            &c,
            &ctx(1_607_418_537_715, Environment::Production),
        )
        .unwrap();
        assert_eq!(
            req.headers["ok-access-timestamp"],
            "2020-12-08T09:08:57.715Z"
        );
        assert_eq!(
            req.headers["ok-access-sign"],
            "eCnnCgWLjlQ9XnpUkrcny3qNq3WW/81KNrDr/XR6Xv8="
        );
        assert!(req.headers.get(DEMO_HEADER).is_none());

        let mut get = OutgoingRequest {
            method: Method::GET,
            path: "/api/v5/account/balance".into(),
            query: Some("ccy=BTC".into()),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        Okx.sign(&mut get, &c, &ctx(1_607_418_537_715, Environment::Testnet))
            .unwrap();
        assert_eq!(
            get.headers["ok-access-sign"],
            "HiZhvSfMtWJA3uUIVXV3a/bSXNPCWvYFXoGCVS8V4zY="
        );
        assert_eq!(get.headers[DEMO_HEADER], "1");
    }

    #[test]
    fn passphrase_and_secret_are_required() {
        let mut req = post("/api/v5/trade/order", "{}");
        let ctx = ctx(0, Environment::Production);
        assert_eq!(
            Okx.sign(&mut req, &creds("s", None), &ctx),
            Err(SignError::MissingPassphrase)
        );
        let no_secret = ApiCredentials {
            api_key: SecretString::from("k"),
            api_secret: None,
            passphrase: Some(SecretString::from("p")),
            private_key: None,
        };
        assert_eq!(
            Okx.sign(&mut req, &no_secret, &ctx),
            Err(SignError::MissingSecret)
        );
    }

    #[test]
    fn strip_removes_client_auth_and_demo_flag() {
        let mut req = post("/api/v5/trade/order", "{}");
        for (k, v) in [
            ("OK-ACCESS-KEY", "x"),
            ("OK-ACCESS-SIGN", "x"),
            ("OK-ACCESS-TIMESTAMP", "x"),
            ("OK-ACCESS-PASSPHRASE", "x"),
            ("x-simulated-trading", "1"),
            ("Authorization", "Bearer x"),
            ("Content-Type", "application/json"),
        ] {
            req.headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static(v),
            );
        }
        Okx.strip_auth(&mut req);
        assert_eq!(req.headers.len(), 1);
        assert!(req.headers.contains_key("content-type"));
    }

    // A body keygate read as JSON goes out as JSON, whatever type the client named (OKX,
    // Bybit and Bitget share this); an empty one gets no type.
    #[test]
    fn a_body_goes_out_as_json() {
        let mut req = post("/api/v5/trade/order", r#"{"instId":"BTC-USDT"}"#);
        req.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        default_json_content_type(&mut req);
        assert_eq!(req.headers[http::header::CONTENT_TYPE], "application/json");
        let mut req = post("/api/v5/account/balance", "");
        default_json_content_type(&mut req);
        assert!(!req.headers.contains_key(http::header::CONTENT_TYPE));
    }

    #[test]
    fn table_entries_classify_as_listed() {
        for (verb, pattern, class) in ROUTES {
            let path = pattern.replace('*', "x");
            let method = match verb {
                Get => Method::GET,
                Post | Any => Method::POST,
            };
            assert_eq!(Okx.classify(&method, &path), *class, "{pattern}");
        }
    }

    #[test]
    fn withdrawals_are_never_read_or_trade() {
        for path in [
            "/api/v5/asset/withdrawal",
            "/api/v5/asset/withdrawal-lightning",
            "/api/v5/asset/cancel-withdrawal",
            "/api/v5/fiat/create-withdrawal",
        ] {
            for m in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
                assert_eq!(Okx.classify(&m, path), Withdraw, "{m} {path}");
            }
        }
        // Path tricks cannot reach a withdrawal through a wider family.
        for path in [
            "/api/v5/trade/../asset/withdrawal",
            "/api/v5/trade//order",
            "/api/v5/asset/%77ithdrawal",
            "/api/v5/trade/order/",
            "/API/V5/ASSET/WITHDRAWAL",
        ] {
            assert_eq!(
                Okx.classify(&Method::POST, path),
                EndpointClass::Unknown,
                "{path}"
            );
        }
    }

    #[test]
    fn unlisted_private_and_public_paths() {
        assert_eq!(
            Okx.classify(&Method::POST, "/api/v5/finance/savings/purchase-redempt"),
            EndpointClass::Unknown
        );
        assert_eq!(
            Okx.classify(&Method::POST, "/api/v5/account/balance"),
            EndpointClass::Unknown
        );
        assert_eq!(Okx.classify(&Method::GET, "/api/v5/market/ticker"), Public);
        assert_eq!(Okx.classify(&Method::GET, "/api/v5/account/balance"), Read);
        assert_eq!(
            Okx.classify(&Method::GET, "/api/v5/asset/withdrawal-history"),
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
        let req = post(
            "/api/v5/trade/batch-orders",
            r#"[{"instId":"BTC-USDT","side":"buy","ordType":"limit","sz":"0.01","px":"50000","tdMode":"cash"},
                {"instId":"BTC-USDT","side":"buy","ordType":"market","sz":"100","tdMode":"cash"},
                {"instId":"BTC-USDT","side":"buy","ordType":"market","sz":"0.1","tgtCcy":"base_ccy","tdMode":"cash"},
                {"instId":"BTC-USDT-SWAP","side":"sell","ordType":"market","sz":"3","tdMode":"cross","reduceOnly":true},
                {"instId":"BTC-USDT","side":"buy","ordType":"market","sz":"2","tdMode":"cross"}]"#,
        );
        let o = orders(Okx.parse_intent(Trade, &req).unwrap());
        assert_eq!(o.len(), 5);
        assert_eq!(o[0].base.as_deref(), Some("BTC"));
        assert_eq!(o[0].quote.as_deref(), Some("USDT"));
        assert_eq!(o[0].quantity, Some(Decimal::new(1, 2)));
        assert_eq!(o[0].price, Some(Decimal::from(50_000)));
        assert_eq!(o[1].quote_amount, Some(Decimal::from(100)));
        assert_eq!(o[1].quantity, None);
        assert_eq!(o[2].quantity, Some(Decimal::new(1, 1)));
        assert_eq!(o[3].size_unit, SizeUnit::Contracts);
        assert_eq!(o[3].quantity, Some(Decimal::from(3)));
        assert!(o[3].reduce_only);
        assert_eq!(o[3].side, Some(Side::Sell));
        // Margin market buy: read as base (never understate notional).
        assert_eq!(o[4].quantity, Some(Decimal::from(2)));
        assert_eq!(o[4].quote_amount, None);

        let cancel = post(
            "/api/v5/trade/cancel-order",
            r#"{"instId":"BTC-USDT","ordId":"1"}"#,
        );
        assert!(orders(Okx.parse_intent(Trade, &cancel).unwrap())[0].is_cancel);

        let lev = post(
            "/api/v5/account/set-leverage",
            r#"{"lever":5,"mgnMode":"cross","instId":"BTC-USDT-SWAP"}"#,
        );
        assert_eq!(
            orders(Okx.parse_intent(Trade, &lev).unwrap())[0].leverage,
            Some(Decimal::from(5))
        );
    }

    #[test]
    fn unparsable_orders_are_errors() {
        for body in [
            "",
            "not json",
            "[]",
            r#"{"instId":"BTC-USDT","side":"buy","ordType":"limit"}"#,
            r#"{"instId":"BTC-USDT","side":"hold","ordType":"limit","sz":"1"}"#,
            r#"{"instId":"BTC-USDT","side":"buy","ordType":"limit","sz":"-1"}"#,
        ] {
            let req = post("/api/v5/trade/order", body);
            assert!(Okx.parse_intent(Trade, &req).is_err(), "{body}");
        }
    }

    #[test]
    fn parses_withdrawals_and_transfers() {
        let req = post(
            "/api/v5/asset/withdrawal",
            r#"{"ccy":"XRP","toAddr":"rAddr:12345","dest":"4","amt":"25.5","chain":"XRP-Ripple"}"#,
        );
        let RequestIntent::Withdrawal(w) = Okx.parse_intent(Withdraw, &req).unwrap() else {
            panic!()
        };
        assert_eq!(w.asset, "XRP");
        assert_eq!(w.amount, Decimal::new(255, 1));
        assert_eq!(w.address, "rAddr");
        assert_eq!(w.tag.as_deref(), Some("12345"));
        assert_eq!(w.network.as_deref(), Some("XRP-Ripple"));
        // an internal withdrawal to a phone number: its area code is part of the address
        for (area, want) in [(r#""86""#, "+8613800000000"), ("1", "+113800000000")] {
            let req = post(
                "/api/v5/asset/withdrawal",
                &format!(
                    r#"{{"ccy":"USDT","toAddr":"13800000000","areaCode":{area},"dest":"3","amt":"1"}}"#
                ),
            );
            let RequestIntent::Withdrawal(w) = Okx.parse_intent(Withdraw, &req).unwrap() else {
                panic!()
            };
            assert_eq!(w.address, want);
        }
        let other_case = post(
            "/api/v5/asset/withdrawal",
            r#"{"ccy":"USDT","toAddr":"13800000000","AreaCode":"1","dest":"3","amt":"1"}"#,
        );
        assert!(Okx.parse_intent(Withdraw, &other_case).is_err());
        let ln = post(
            "/api/v5/asset/withdrawal-lightning",
            r#"{"ccy":"BTC","invoice":"lnbc1"}"#,
        );
        assert!(Okx.parse_intent(Withdraw, &ln).is_err());

        let t = post(
            "/api/v5/asset/transfer",
            r#"{"ccy":"USDT","amt":"10","from":"6","to":"18"}"#,
        );
        assert_eq!(
            Okx.parse_intent(Transfer, &t).unwrap(),
            RequestIntent::Transfer {
                asset: "USDT".into(),
                amount: Some(Decimal::from(10))
            }
        );
        // to or from a sub-account: the `sub_account` scope's, not `transfer`'s alone
        for body in [
            r#"{"ccy":"USDT","amt":"50000","from":"6","to":"6","type":"1","subAcct":"x"}"#,
            r#"{"ccy":"USDT","amt":"50000","from":"6","to":"6","type":2}"#,
            r#"{"ccy":"USDT","amt":"50000","from":"6","to":"6","subAcct":"x"}"#,
        ] {
            assert!(
                matches!(
                    Okx.parse_intent(Transfer, &post("/api/v5/asset/transfer", body)),
                    Ok(RequestIntent::SubAccountTransfer { .. })
                ),
                "{body}"
            );
        }
    }

    #[test]
    fn parses_balances_and_key_check() {
        let body = br#"{"code":"0","msg":"","data":[{"totalEq":"1","details":[
            {"ccy":"USDT","availBal":"90","frozenBal":"10","cashBal":"100","eq":"100.5"},
            {"ccy":"BTC","availBal":"","frozenBal":"0","cashBal":"1","eq":""}]}]}"#;
        let b = Okx.parse_balances(body).unwrap();
        assert_eq!(b[0].free, Decimal::from(90));
        assert_eq!(b[0].locked, Decimal::from(10));
        assert_eq!(b[0].total, Decimal::new(1005, 1));
        assert_eq!(b[1].total, Decimal::ONE);
        assert_eq!(b[1].free, Decimal::ONE);

        let cfg = br#"{"code":"0","data":[{"perm":"read_only,trade,withdraw","ip":""}]}"#;
        let k = Okx.parse_key_check(cfg).unwrap();
        assert!(k.can_read && k.can_trade && k.can_withdraw && k.can_transfer);
        assert!(!k.ip_restricted);
        assert!(k.warnings.iter().any(|w| w == "withdrawals enabled"));
        let ro = br#"{"code":"0","data":[{"perm":"read_only","ip":"1.2.3.4"}]}"#;
        let k = Okx.parse_key_check(ro).unwrap();
        assert!(k.can_read && !k.can_trade && !k.can_withdraw && k.ip_restricted);
        assert!(k.warnings.is_empty());
    }

    #[test]
    fn maps_errors() {
        let e = |s: u16, b: &str| Okx.classify_error(s, b.as_bytes());
        assert_eq!(e(200, r#"{"code":"0","data":[]}"#), None);
        assert_eq!(
            e(401, r#"{"code":"50111","msg":"Invalid OK-ACCESS-KEY"}"#),
            Some(ErrorKind::InvalidKey)
        );
        assert_eq!(
            e(401, r#"{"code":"50113","msg":""}"#),
            Some(ErrorKind::BadSignature)
        );
        assert_eq!(
            e(401, r#"{"code":"50110","msg":""}"#),
            Some(ErrorKind::IpNotAllowed)
        );
        assert_eq!(
            e(429, r#"{"code":"50011","msg":""}"#),
            Some(ErrorKind::RateLimited)
        );
        assert_eq!(
            e(401, r#"{"code":"50102","msg":""}"#),
            Some(ErrorKind::TimestampOutOfWindow)
        );
        assert_eq!(
            e(200, r#"{"code":"1","data":[{"sCode":"51008","sMsg":""}]}"#),
            Some(ErrorKind::InsufficientBalance)
        );
        assert_eq!(e(502, "<html>"), Some(ErrorKind::Unknown));
        assert_eq!(e(429, ""), Some(ErrorKind::RateLimited));
    }

    fn parse(path: &str, body: &str) -> Result<Vec<OrderIntent>, ParseError> {
        Okx.parse_intent(Trade, &post(path, body)).map(orders)
    }

    #[test]
    fn only_limit_types_price_at_px() {
        let one = |ord_type: &str| {
            parse(
                "/api/v5/trade/order",
                &format!(
                    r#"{{"instId":"BTC-USDT-SWAP","tdMode":"cross","side":"buy","ordType":"{ord_type}","sz":"100","px":"0.01"}}"#
                ),
            )
            .unwrap()
            .remove(0)
        };
        for market in ["market", "optimal_limit_ioc"] {
            let o = one(market);
            assert_eq!(o.price, Some(Decimal::new(1, 2)));
            assert!(!o.price_is_limit, "{market}");
        }
        for limit in [
            "limit",
            "post_only",
            "fok",
            "ioc",
            "mmp",
            "mmp_and_post_only",
        ] {
            assert!(one(limit).price_is_limit, "{limit}");
        }
        // `orderPx` belongs to algo orders; `trade/order` ignores it.
        let o = parse(
            "/api/v5/trade/order",
            r#"{"instId":"BTC-USDT","tdMode":"cash","side":"sell","ordType":"limit","sz":"1","orderPx":"0.01"}"#,
        )
        .unwrap();
        assert_eq!(o[0].price, None);
        // A trigger algo places a limit at orderPx, or a market order at -1.
        let algo = |px: &str| {
            parse(
                "/api/v5/trade/order-algo",
                &format!(
                    r#"{{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"trigger","sz":"1","triggerPx":"60000","orderPx":"{px}"}}"#
                ),
            )
            .unwrap()
            .remove(0)
        };
        assert!(algo("61000").price_is_limit);
        assert!(!algo("-1").price_is_limit);
    }

    #[test]
    fn reduce_only_only_where_okx_honours_it() {
        let ro = |fields: &str| {
            parse(
                "/api/v5/trade/order",
                &format!(
                    r#"{{"instId":"BTC-USDT-SWAP","side":"buy","ordType":"market","sz":"5"{fields}}}"#
                ),
            )
            .unwrap()[0]
                .reduce_only
        };
        assert!(ro(r#","tdMode":"cross","reduceOnly":true"#));
        assert!(ro(
            r#","tdMode":"isolated","posSide":"net","reduceOnly":true"#
        ));
        assert!(!ro(r#","tdMode":"cash","reduceOnly":true"#));
        assert!(!ro(
            r#","tdMode":"cross","posSide":"long","reduceOnly":true"#
        ));
        assert!(!ro(r#","tdMode":"cross","reduceOnly":"true""#));
        assert!(!ro(r#","tdMode":"cross","reduceOnly":1"#));
        // closeFraction is an algo field: on trade/order it is ignored and sz counts.
        assert!(!ro(r#","tdMode":"cross","closeFraction":"1""#));
        assert!(parse(
            "/api/v5/trade/order",
            r#"{"instId":"BTC-USDT-SWAP","tdMode":"cross","side":"buy","ordType":"market","closeFraction":"1"}"#,
        )
        .is_err());
        let algo = |inst: &str, ord_type: &str| {
            parse(
                "/api/v5/trade/order-algo",
                &format!(
                    r#"{{"instId":"{inst}","tdMode":"cross","side":"sell","ordType":"{ord_type}","closeFraction":"1","slTriggerPx":"50000","slOrdPx":"-1"}}"#
                ),
            )
        };
        assert!(algo("BTC-USDT-SWAP", "conditional").unwrap()[0].reduce_only);
        assert!(algo("BTC-USD-250328", "oco").unwrap()[0].reduce_only);
        // Not a FUTURES/SWAP conditional: closeFraction does not apply and there is no sz.
        assert!(algo("BTC-USDT", "conditional").is_err());
        assert!(algo("BTC-USDT-SWAP", "trigger").is_err());
        assert!(parse(
            "/api/v5/trade/order-algo",
            r#"{"instId":"BTC-USDT-SWAP","tdMode":"cross","side":"sell","ordType":"conditional","closeFraction":"0.5"}"#,
        )
        .is_err());
    }

    #[test]
    fn duplicate_json_keys_are_refused() {
        assert!(parse(
            "/api/v5/trade/batch-orders",
            r#"[{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit","px":"1","sz":"0.001","sz":"1000"}]"#,
        )
        .is_err());
    }
}
