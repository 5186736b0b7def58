//! Bitget API v2 (<https://www.bitget.com/api-doc/common/signature>).
//!
//! Signing: `ACCESS-SIGN = base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath +
//! ("?" + queryString if any) + body))`, `ACCESS-TIMESTAMP` in ms, `ACCESS-KEY`,
//! `ACCESS-PASSPHRASE`. The query in the prehash is the *decoded* one (CCXT: "bitget signs
//! the raw (non-percent-encoded) query string"); for the usual ASCII parameters it equals
//! the query as sent. CCXT sends no `locale`, so neither does keygate.
//! Demo trading is the production host plus `paptrading: 1` (Bitget "Demo Trading / REST
//! API"), which keygate sets from the credential's environment. As CCXT (ccxt issue
//! 25252), requests for the old simulated product lines (`S*-FUTURES`) go without it.
//!
//! Key check: `GET /api/v2/spot/account/info` reports `authorities` and `ips`; Bitget
//! reports no key expiry.
//!
//! Invariants: as in [`crate::okx`] (plain-path route matching; withdrawal paths are
//! `Withdraw` for every method). Only the classic-account v2 API is tabled: unified-account
//! (`/api/v3/...`) paths are `Unknown`.

use http::{HeaderMap, Method};
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::okx::{
    body_json, classify_by, default_json_content_type, header_u64, hmac_secret, non_empty_array,
    opt_positive_decimal, parse_side, positive_decimal, put_header, req_str, str_field, Route,
    Verb,
};
use crate::util::{b64, decode_pairs, hmac_sha256, json_body, json_opt_decimal, remove_headers};
use crate::*;

/// `bitget` API.
pub struct Bitget;

const PRODUCTION: &str = "https://api.bitget.com";

/// Header that selects Bitget demo trading.
const DEMO_HEADER: &str = "paptrading";

use EndpointClass::{Manage, Public, Read, SubAccount, Trade, Transfer, Withdraw};
use Verb::{Any, Get, Post};

/// Every Bitget v2 endpoint family keygate knows. Not listed (hence `Unknown`): earn,
/// loans, margin borrow/repay, copy trading, convert, P2P, broker, tax, and the v1/v3 APIs.
#[rustfmt::skip]
pub(crate) const ROUTES: &[Route] = &[
    // Money out. Every method, before any family wildcard.
    (Any,  "/api/v2/spot/wallet/withdrawal",             Withdraw),
    (Any,  "/api/v2/spot/wallet/cancel-withdrawal",      Withdraw),
    // Money between the owner's own accounts.
    (Any,  "/api/v2/spot/wallet/transfer",               Transfer),
    // Sub-accounts.
    (Any,  "/api/v2/spot/wallet/subaccount-transfer",    SubAccount),
    (Get,  "/api/v2/spot/wallet/subaccount-deposit-address", SubAccount),
    (Get,  "/api/v2/spot/wallet/subaccount-deposit-records", SubAccount),
    (Get,  "/api/v2/spot/account/subaccount-assets",     SubAccount),
    (Get,  "/api/v2/mix/account/sub-account-assets",     SubAccount),
    (Post, "/api/v2/user/create-virtual-subaccount",     SubAccount),
    (Post, "/api/v2/user/modify-virtual-subaccount",     SubAccount),
    (Post, "/api/v2/user/batch-create-subaccount-and-apikey", Manage),
    (Get,  "/api/v2/user/virtual-subaccount-list",       SubAccount),
    // API-key management: `manage`.
    (Post, "/api/v2/user/create-virtual-subaccount-apikey", Manage),
    (Post, "/api/v2/user/modify-virtual-subaccount-apikey", Manage),
    (Get,  "/api/v2/user/virtual-subaccount-apikey-list", SubAccount),
    // Account settings: change how every later order behaves, not one order: `manage`.
    (Post, "/api/v2/spot/wallet/modify-deposit-account", Manage),
    (Post, "/api/v2/spot/account/switch-deduct",         Manage),
    (Post, "/api/v2/mix/account/set-margin-mode",        Manage),
    (Post, "/api/v2/mix/account/set-position-mode",      Manage),
    (Post, "/api/v2/mix/account/set-auto-margin",        Manage),
    (Post, "/api/v2/mix/account/set-asset-mode",         Manage),
    // Spot orders.
    (Post, "/api/v2/spot/trade/place-order",             Trade),
    (Post, "/api/v2/spot/trade/batch-orders",            Trade),
    (Post, "/api/v2/spot/trade/cancel-order",            Trade),
    (Post, "/api/v2/spot/trade/batch-cancel-order",      Trade),
    (Post, "/api/v2/spot/trade/cancel-symbol-order",     Trade),
    (Post, "/api/v2/spot/trade/cancel-replace-order",    Trade),
    (Post, "/api/v2/spot/trade/batch-cancel-replace-order", Trade),
    (Post, "/api/v2/spot/trade/place-plan-order",        Trade),
    (Post, "/api/v2/spot/trade/modify-plan-order",       Trade),
    (Post, "/api/v2/spot/trade/cancel-plan-order",       Trade),
    (Post, "/api/v2/spot/trade/batch-cancel-plan-order", Trade),
    // Futures orders and positions.
    (Post, "/api/v2/mix/order/place-order",              Trade),
    (Post, "/api/v2/mix/order/click-backhand",           Trade),
    (Post, "/api/v2/mix/order/batch-place-order",        Trade),
    (Post, "/api/v2/mix/order/modify-order",             Trade),
    (Post, "/api/v2/mix/order/cancel-order",             Trade),
    (Post, "/api/v2/mix/order/batch-cancel-orders",      Trade),
    (Post, "/api/v2/mix/order/cancel-all-orders",        Trade),
    (Post, "/api/v2/mix/order/close-positions",          Trade),
    (Post, "/api/v2/mix/order/place-tpsl-order",         Trade),
    (Post, "/api/v2/mix/order/place-pos-tpsl",           Trade),
    (Post, "/api/v2/mix/order/place-plan-order",         Trade),
    (Post, "/api/v2/mix/order/modify-tpsl-order",        Trade),
    (Post, "/api/v2/mix/order/modify-plan-order",        Trade),
    (Post, "/api/v2/mix/order/cancel-plan-order",        Trade),
    (Post, "/api/v2/mix/account/set-leverage",           Trade),
    (Post, "/api/v2/mix/account/set-margin",             Trade),
    // Margin orders (borrowing itself is not tabled).
    (Post, "/api/v2/margin/crossed/place-order",         Trade),
    (Post, "/api/v2/margin/crossed/batch-place-order",   Trade),
    (Post, "/api/v2/margin/crossed/cancel-order",        Trade),
    (Post, "/api/v2/margin/crossed/batch-cancel-order",  Trade),
    (Post, "/api/v2/margin/isolated/place-order",        Trade),
    (Post, "/api/v2/margin/isolated/batch-place-order",  Trade),
    (Post, "/api/v2/margin/isolated/cancel-order",       Trade),
    (Post, "/api/v2/margin/isolated/batch-cancel-order", Trade),
    // Public market data (before the private GET families that share a prefix).
    (Get,  "/api/v2/public/*",                           Public),
    (Get,  "/api/v2/spot/public/*",                      Public),
    (Get,  "/api/v2/spot/market/*",                      Public),
    (Get,  "/api/v2/mix/market/*",                       Public),
    (Get,  "/api/v2/margin/currencies",                  Public),
    // Reads: Bitget v2 performs no action on GET.
    (Get,  "/api/v2/spot/account/*",                     Read),
    (Get,  "/api/v2/spot/trade/*",                       Read),
    (Get,  "/api/v2/spot/wallet/*",                      Read),
    (Get,  "/api/v2/mix/account/*",                      Read),
    (Get,  "/api/v2/mix/position/*",                     Read),
    (Get,  "/api/v2/mix/order/*",                        Read),
    (Get,  "/api/v2/margin/*",                           Read),
];

/// Product lines of the old futures simulation, which CCXT sends without the demo header.
const SIMULATED_PRODUCT_TYPES: [&str; 3] = ["SCOIN-FUTURES", "SUSDT-FUTURES", "SUSDC-FUTURES"];

fn product_type(req: &OutgoingRequest) -> Option<String> {
    if let Some(q) = req.query.as_deref() {
        if let Some((_, v)) = decode_pairs(q)
            .into_iter()
            .find(|(k, _)| k == "productType")
        {
            return Some(v);
        }
    }
    serde_json::from_slice::<Value>(&req.body)
        .ok()
        .and_then(|v| str_field(&v, "productType"))
}

/// The query as Bitget hashes it: each pair form-decoded and joined raw, order kept.
fn signed_query(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for (k, v) in decode_pairs(raw) {
        if !out.is_empty() {
            out.push('&');
        }
        out.push_str(&k);
        out.push('=');
        out.push_str(&v);
    }
    out
}

fn symbol_intent(symbol: String) -> OrderIntent {
    let (base, quote) = match util::split_concatenated_symbol(&symbol) {
        Some((b, q)) => (Some(b), Some(q)),
        None => (None, None),
    };
    let mut o = OrderIntent::new(symbol);
    o.base = base;
    o.quote = quote;
    o
}

/// The order's symbol: `symbol` when a batch already settled it (see [`batch`]), else the
/// order's own.
fn symbol_of(v: &Value, settled: Option<&str>) -> Result<String, ParseError> {
    match settled {
        Some(s) => Ok(s.to_string()),
        None => req_str(v, "symbol"),
    }
}

/// Bitget's two order types (`limit`, `market`); `force` (gtc, post_only, fok, ioc) only
/// qualifies a limit order, and a market order ignores `price`.
fn is_limit(order_type: &str) -> bool {
    order_type == "limit"
}

/// Spot order (`place-order`, `batch-orders`). Market buys are sized in the quote coin
/// (Bitget "Place Order": size is "quote coin amount" for market buys).
fn spot_order(v: &Value, settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    // `planType` is a plan order's: on a plain order Bitget ignores it, so it must not
    // make keygate read `size` as a quote amount (a 10 BTC sell checked as $10)
    util::json_refuse(v, &["planType"])?;
    let market_buy = |order_type: &str, side| order_type == "market" && side == Side::Buy;
    spot_order_with(v, settled, "price", market_buy)
}

/// Spot plan order (`place-plan-order`): on trigger it places a limit order at
/// `executePrice` or a market order; it has no `price` field. Its size is set by
/// `planType`, whatever the order type or side (Bitget "Place Plan Order": "`amount`: base
/// coin, `total`: quote coin. The default value is `amount`"): without it a 10 BTC
/// market buy was checked as 10 USDT. Another value, or another type, is refused.
fn spot_plan_order(v: &Value, settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    let by_quote = match v.get("planType") {
        None => false,
        Some(Value::String(t)) if t == "amount" => false,
        Some(Value::String(t)) if t == "total" => true,
        Some(_) => return Err(ParseError::InvalidValue("planType")),
    };
    spot_order_with(v, settled, "executePrice", |_, _| by_quote)
}

/// A spot order whose size is in the quote coin when `by_quote(order type, side)` says so.
fn spot_order_with(
    v: &Value,
    settled: Option<&str>,
    price_field: &'static str,
    by_quote: impl Fn(&str, Side) -> bool,
) -> Result<OrderIntent, ParseError> {
    let mut o = symbol_intent(symbol_of(v, settled)?);
    let side = parse_side(&req_str(v, "side")?)?;
    let order_type = req_str(v, "orderType")?.to_ascii_lowercase();
    let size = positive_decimal(v, "size")?;
    o.side = Some(side);
    o.price = opt_positive_decimal(v, price_field)?;
    o.price_is_limit = is_limit(&order_type) && o.price.is_some();
    if by_quote(&order_type, side) {
        o.quote_amount = Some(size);
    } else {
        o.quantity = Some(size);
    }
    o.order_type = Some(order_type);
    Ok(o)
}

/// Futures order: `size` is in the base coin (Bitget "Place Order" (mix): "Amount (base
/// coin)").
///
/// Reduce-only: `reduceOnly: YES` with no `tradeSide`, or with `tradeSide: close` (any
/// case). The position mode is an account setting the request does not state: in one-way
/// mode Bitget honours `reduceOnly` and ignores `tradeSide`; in hedge mode `tradeSide` is
/// required (an order without it is rejected) and `close` closes. So `reduceOnly: YES`
/// cannot open a position in either mode unless `tradeSide` says `open`; `tradeSide:
/// close` alone (what CCXT sends in hedge mode) could open one in one-way mode, and is
/// sized like any order.
fn mix_order(v: &Value, settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    let mut o = symbol_intent(symbol_of(v, settled)?);
    o.side = Some(parse_side(&req_str(v, "side")?)?);
    let order_type = req_str(v, "orderType")?.to_ascii_lowercase();
    o.quantity = Some(positive_decimal(v, "size")?);
    o.price = opt_positive_decimal(v, "price")?;
    o.price_is_limit = is_limit(&order_type) && o.price.is_some();
    o.order_type = Some(order_type);
    o.reduce_only = str_field(v, "reduceOnly").as_deref() == Some("YES")
        && str_field(v, "tradeSide").is_none_or(|t| t.eq_ignore_ascii_case("close"));
    Ok(o)
}

/// Margin order: `baseSize` or `quoteSize` (market buys).
fn margin_order(v: &Value, settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    let mut o = symbol_intent(symbol_of(v, settled)?);
    o.side = Some(parse_side(&req_str(v, "side")?)?);
    let order_type = req_str(v, "orderType")?.to_ascii_lowercase();
    o.price = opt_positive_decimal(v, "price")?;
    o.price_is_limit = is_limit(&order_type) && o.price.is_some();
    o.order_type = Some(order_type);
    o.quantity = opt_positive_decimal(v, "baseSize")?;
    o.quote_amount = opt_positive_decimal(v, "quoteSize")?;
    if o.quantity.is_none() && o.quote_amount.is_none() {
        return Err(ParseError::MissingField("baseSize"));
    }
    // `loanType`: `normal` (and `autoRepay`) trade what the account holds; `autoLoan` and
    // `autoLoanAndRepay` borrow. Another value counts as borrowing.
    o.borrows = match v.get("loanType") {
        None => false,
        Some(t) => !matches!(t.as_str(), Some("normal" | "autoRepay")),
    };
    Ok(o)
}

/// An amendment: may raise size or move the price, so not a cancel. Each endpoint names
/// its new size and price its own way, and the other names are refused: the exchange
/// ignores them, so a small `newSize` beside the `size` Bitget reads must not be what
/// keygate checks.
fn amend_with(
    v: &Value,
    settled: Option<&str>,
    size: &'static str,
    price: &'static str,
) -> Result<OrderIntent, ParseError> {
    let others: Vec<&'static str> = ["size", "newSize", "price", "newPrice", "executePrice"]
        .into_iter()
        .filter(|f| *f != size && *f != price)
        .collect();
    util::json_refuse(v, &others)?;
    let mut o = symbol_intent(symbol_of(v, settled)?);
    o.quantity = opt_positive_decimal(v, size)?;
    o.price = opt_positive_decimal(v, price)?;
    Ok(o)
}

/// Spot `cancel-replace-order` (and each of `batch-cancel-replace-order`): `size`, `price`.
fn amend_spot(v: &Value, settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    amend_with(v, settled, "size", "price")
}

/// Mix `modify-tpsl-order`: `size`, `executePrice`.
fn amend_plan(v: &Value, settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    amend_with(v, settled, "size", "executePrice")
}

/// Spot `modify-plan-order`: `size`, `executePrice`, and no symbol (Bitget "Modify Plan
/// Order" names the order by id; a `symbol` beside it is ignored, and the size is in
/// whichever coin the order's `planType` chose). The intent names no symbol, which policy
/// refuses: checked against a stated symbol, a BTC order could be resized as SHIB.
fn amend_spot_plan(v: &Value, _settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    amend_with(v, Some(""), "size", "executePrice")
}

/// Mix `modify-order`, `modify-plan-order`: `newSize`, `newPrice`.
fn amend_mix(v: &Value, settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    amend_with(v, settled, "newSize", "newPrice")
}

fn cancel(v: &Value, settled: Option<&str>) -> Result<OrderIntent, ParseError> {
    let mut o = symbol_intent(symbol_of(v, settled)?);
    o.is_cancel = true;
    Ok(o)
}

type OrderParser = fn(&Value, Option<&str>) -> Result<OrderIntent, ParseError>;

/// Which `symbol` of a `{symbol, orderList: [...]}` batch Bitget acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BatchSymbol {
    /// The envelope's (mix and margin batches).
    Envelope,
    /// Each order's own.
    PerOrder,
    /// Spot `batchMode`: `single` (the default) uses the envelope's and ignores the orders'
    /// own, `multiple` the reverse (Bitget "Batch Place Orders", batchMode).
    SpotBatchMode,
}

/// A batch's orders, each with the symbol Bitget will use. A symbol on the other level
/// that differs from it is refused rather than ignored: keygate would check one market and
/// Bitget trade another.
fn batch(body: &Value, f: OrderParser, which: BatchSymbol) -> Result<Vec<OrderIntent>, ParseError> {
    let envelope = str_field(body, "symbol");
    let envelope_wins = match which {
        BatchSymbol::Envelope => true,
        BatchSymbol::PerOrder => false,
        BatchSymbol::SpotBatchMode => match str_field(body, "batchMode").as_deref() {
            None | Some("single") => true,
            Some("multiple") => false,
            Some(_) => return Err(ParseError::InvalidValue("batchMode")),
        },
    };
    non_empty_array(body.get("orderList"), "orderList")?
        .iter()
        .map(|o| {
            let own = str_field(o, "symbol");
            let symbol = match (&envelope, own) {
                (Some(e), Some(i)) if !e.eq_ignore_ascii_case(&i) => {
                    return Err(ParseError::InvalidValue("symbol"))
                }
                (Some(e), _) if envelope_wins => e.clone(),
                (_, Some(i)) if !envelope_wins => i,
                _ => return Err(ParseError::MissingField("symbol")),
            };
            f(o, Some(&symbol))
        })
        .collect()
}

fn trade_intent(path: &str, body: &Value) -> Result<RequestIntent, ParseError> {
    let one = |f: OrderParser| f(body, None).map(|o| vec![o]);
    let orders = match path {
        "/api/v2/spot/trade/place-order" => one(spot_order)?,
        "/api/v2/spot/trade/place-plan-order" => one(spot_plan_order)?,
        "/api/v2/spot/trade/batch-orders" => batch(body, spot_order, BatchSymbol::SpotBatchMode)?,
        "/api/v2/spot/trade/cancel-order"
        | "/api/v2/spot/trade/cancel-symbol-order"
        | "/api/v2/spot/trade/cancel-plan-order"
        | "/api/v2/mix/order/cancel-order"
        | "/api/v2/mix/order/batch-cancel-orders"
        | "/api/v2/margin/crossed/cancel-order"
        | "/api/v2/margin/isolated/cancel-order" => one(cancel)?,
        "/api/v2/spot/trade/batch-cancel-order" => {
            if body.get("orderList").is_some() {
                batch(body, cancel, BatchSymbol::SpotBatchMode)?
            } else {
                one(cancel)?
            }
        }
        "/api/v2/margin/crossed/batch-cancel-order"
        | "/api/v2/margin/isolated/batch-cancel-order" => {
            if body.get("orderList").is_some() {
                batch(body, cancel, BatchSymbol::Envelope)?
            } else {
                one(cancel)?
            }
        }
        "/api/v2/spot/trade/batch-cancel-plan-order" => {
            match body.get("symbolList").and_then(Value::as_array) {
                Some(list) if !list.is_empty() => list
                    .iter()
                    .map(|s| {
                        let s = s.as_str().ok_or(ParseError::InvalidValue("symbolList"))?;
                        let mut o = symbol_intent(s.to_string());
                        o.is_cancel = true;
                        Ok(o)
                    })
                    .collect::<Result<_, ParseError>>()?,
                // No list: every plan order of the account.
                _ => return Ok(RequestIntent::None),
            }
        }
        "/api/v2/spot/trade/cancel-replace-order" => one(amend_spot)?,
        "/api/v2/spot/trade/modify-plan-order" => one(amend_spot_plan)?,
        "/api/v2/mix/order/modify-order" | "/api/v2/mix/order/modify-plan-order" => one(amend_mix)?,
        "/api/v2/mix/order/modify-tpsl-order" => {
            let mut o = amend_plan(body, None)?;
            o.reduce_only = true;
            vec![o]
        }
        "/api/v2/spot/trade/batch-cancel-replace-order" => {
            batch(body, amend_spot, BatchSymbol::PerOrder)?
        }
        "/api/v2/mix/order/place-order" | "/api/v2/mix/order/place-plan-order" => one(mix_order)?,
        "/api/v2/mix/order/batch-place-order" => batch(body, mix_order, BatchSymbol::Envelope)?,
        // Reverses the position: opens the other side, so it is an order like any other.
        "/api/v2/mix/order/click-backhand" => {
            let mut o = symbol_intent(req_str(body, "symbol")?);
            o.side = str_field(body, "side")
                .map(|s| parse_side(&s))
                .transpose()?;
            o.order_type = Some("market".into());
            o.quantity = opt_positive_decimal(body, "size")?;
            vec![o]
        }
        "/api/v2/mix/order/cancel-all-orders" => match str_field(body, "symbol") {
            Some(s) => {
                let mut o = symbol_intent(s);
                o.is_cancel = true;
                vec![o]
            }
            None => return Ok(RequestIntent::None),
        },
        // Market-closes positions; without a symbol, all of a product line.
        "/api/v2/mix/order/close-positions" => match str_field(body, "symbol") {
            Some(s) => {
                let mut o = symbol_intent(s);
                o.order_type = Some("market".into());
                o.reduce_only = true;
                vec![o]
            }
            None => return Ok(RequestIntent::None),
        },
        "/api/v2/mix/order/place-tpsl-order" | "/api/v2/mix/order/place-pos-tpsl" => {
            let mut o = symbol_intent(req_str(body, "symbol")?);
            o.reduce_only = true;
            o.quantity = opt_positive_decimal(body, "size")?;
            o.order_type = str_field(body, "planType").map(|t| t.to_ascii_lowercase());
            vec![o]
        }
        "/api/v2/mix/account/set-leverage" => {
            let mut o = symbol_intent(req_str(body, "symbol")?);
            let lev = [
                opt_positive_decimal(body, "leverage")?,
                opt_positive_decimal(body, "longLeverage")?,
                opt_positive_decimal(body, "shortLeverage")?,
            ]
            .into_iter()
            .flatten()
            .max()
            .ok_or(ParseError::MissingField("leverage"))?;
            o.leverage = Some(lev);
            vec![o]
        }
        "/api/v2/mix/account/set-margin" => vec![symbol_intent(req_str(body, "symbol")?)],
        "/api/v2/margin/crossed/place-order" | "/api/v2/margin/isolated/place-order" => {
            one(margin_order)?
        }
        "/api/v2/margin/crossed/batch-place-order"
        | "/api/v2/margin/isolated/batch-place-order" => {
            batch(body, margin_order, BatchSymbol::Envelope)?
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
/// Bitget counts each endpoint per UID (public ones per IP), per second
/// (<https://www.bitget.com/api-doc/common/intro>, "Rate limit").
const ENDPOINT_WINDOW_MS: i64 = 1_000;

/// The name of the rate-limit budget of `method path`: the exchange counts each endpoint
/// (its paths carry no ids), so the path itself, where the endpoint table knows it (a
/// row ending in `*` covers several endpoints, each with its own counter).
fn endpoint_name(method: &Method, path: &str) -> Option<String> {
    crate::okx::route_by(ROUTES, method, path).map(|_| path.to_ascii_lowercase())
}

impl Exchange for Bitget {
    fn id(&self) -> ExchangeId {
        ExchangeId::Bitget
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
            &["access-"],
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
        let timestamp = ctx.now_ms.to_string();
        let mut prehash = Vec::with_capacity(64 + req.path.len() + req.body.len());
        prehash.extend_from_slice(timestamp.as_bytes());
        prehash.extend_from_slice(req.method.as_str().as_bytes());
        prehash.extend_from_slice(req.path.as_bytes());
        if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
            prehash.push(b'?');
            prehash.extend_from_slice(signed_query(q).as_bytes());
        }
        prehash.extend_from_slice(&req.body);
        let signature = b64(&hmac_sha256(secret.as_bytes(), &prehash));

        let demo = ctx.environment == Environment::Testnet
            && !product_type(req).is_some_and(|p| {
                SIMULATED_PRODUCT_TYPES
                    .iter()
                    .any(|s| s.eq_ignore_ascii_case(&p))
            });
        let h = &mut req.headers;
        put_header(h, "access-key", creds.api_key.expose_secret(), true)?;
        put_header(h, "access-sign", &signature, true)?;
        put_header(h, "access-timestamp", &timestamp, false)?;
        put_header(h, "access-passphrase", passphrase.expose_secret(), true)?;
        if demo {
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
            Trade => trade_intent(&req.path, &body_json(req)?),
            Withdraw => match req.path.as_str() {
                "/api/v2/spot/wallet/withdrawal" => {
                    let body = body_json(req)?;
                    Ok(RequestIntent::Withdrawal(WithdrawalIntent {
                        asset: req_str(&body, "coin")?,
                        amount: positive_decimal(&body, "size")?,
                        address: req_str(&body, "address")?,
                        network: util::json_network(&body, "chain")?,
                        tag: util::json_tag(&body, "tag")?,
                    }))
                }
                // Cancelling a pending withdrawal moves nothing.
                "/api/v2/spot/wallet/cancel-withdrawal" => Ok(RequestIntent::None),
                _ => Err(ParseError::Malformed(
                    "no withdrawal parser for this path".into(),
                )),
            },
            Transfer => {
                let body = body_json(req)?;
                Ok(RequestIntent::Transfer {
                    asset: req_str(&body, "coin")?,
                    amount: Some(positive_decimal(&body, "amount")?),
                })
            }
            _ => Ok(RequestIntent::None),
        }
    }

    fn balance_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/api/v2/spot/account/assets",
            query: None,
        }
    }

    /// `data[]`: `available` free; `frozen` (open orders) + `locked` (e.g. fiat merchant)
    /// locked; total their sum.
    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError> {
        let v = json_body(body)?;
        bitget_ok(&v)?;
        let data = v
            .get("data")
            .and_then(Value::as_array)
            .ok_or(ParseError::MissingField("data"))?;
        data.iter()
            .map(|a| {
                let d = |k: &'static str| json_opt_decimal(k, a.get(k));
                let free = d("available")?.ok_or(ParseError::MissingField("available"))?;
                let locked = d("frozen")?.unwrap_or_default() + d("locked")?.unwrap_or_default();
                Ok(Balance {
                    asset: req_str(a, "coin")?,
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
            path: "/api/v2/spot/account/info",
            query: None,
        }
    }

    /// `data.authorities`: read-only codes end in `or`/`r` (`coor`, `stor`, ...), read-write
    /// ones in `ow` (`coow` futures orders, `cpow` futures positions, `stow` spot, `smow`
    /// margin, `ttow` copy trading, `wtow` transfer, `wwow` withdraw, `chow` sub-accounts);
    /// older keys report `readonly`, `trade`, `transfer`, `withdraw`. `data.ips` is the IP
    /// whitelist (empty: none). Bitget reports no expiry.
    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError> {
        let v = json_body(body)?;
        bitget_ok(&v)?;
        let data = v.get("data").ok_or(ParseError::MissingField("data"))?;
        let auth: Vec<String> = data
            .get("authorities")
            .and_then(Value::as_array)
            .ok_or(ParseError::MissingField("authorities"))?
            .iter()
            .filter_map(Value::as_str)
            .map(|s| s.trim().to_ascii_lowercase())
            .collect();
        let has = |codes: &[&str]| auth.iter().any(|a| codes.contains(&a.as_str()));
        let can_trade = has(&["trade", "coow", "cpow", "stow", "smow", "ttow"]);
        let check = KeyCheck {
            can_read: !auth.is_empty(),
            can_trade,
            can_withdraw: has(&["withdraw", "wwow"]),
            can_transfer: has(&["transfer", "wtow"]),
            ip_restricted: data
                .get("ips")
                .and_then(Value::as_str)
                .is_some_and(|ips| !ips.trim().is_empty()),
            expires_at_ms: None,
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

    /// Bitget documents one header (API FAQ, "remaining rate limit per second"):
    /// `x-mbx-used-remain-limit`, the requests left in the current one-second window of the
    /// endpoint. Neither the limit nor the reset time is sent.
    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitStatus> {
        let remaining = header_u64(headers, "x-mbx-used-remain-limit")?;
        Some(RateLimitStatus {
            remaining: Some(remaining),
            ..RateLimitStatus::default()
        })
    }

    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind> {
        let v: Option<Value> = serde_json::from_slice(body).ok();
        let code = v.as_ref().and_then(|v| str_field(v, "code"));
        let kind = match code.as_deref() {
            Some("00000") if status < 400 => return None,
            Some(c) => Some(bitget_error_kind(c)),
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

/// Maps Bitget error codes (API "Error Codes") to keygate's kinds.
fn bitget_error_kind(code: &str) -> ErrorKind {
    match code {
        "40001" | "40002" | "40006" | "40011" | "40012" | "40037" => ErrorKind::InvalidKey,
        "40003" | "40009" | "40010" | "40506" | "40507" => ErrorKind::BadSignature,
        "40018" => ErrorKind::IpNotAllowed,
        "429" | "1001" | "50009" => ErrorKind::RateLimited,
        "40004" | "40005" | "40008" => ErrorKind::TimestampOutOfWindow,
        "40014" | "40016" | "40301" | "50006" | "50007" => ErrorKind::PermissionDenied,
        "40711" | "40712" | "40762" | "43012" | "50020" => ErrorKind::InsufficientBalance,
        _ => ErrorKind::Unknown,
    }
}

fn bitget_ok(v: &Value) -> Result<(), ParseError> {
    match str_field(v, "code").as_deref() {
        Some("00000") | None => Ok(()),
        Some(_) => Err(ParseError::InvalidValue("code")),
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

    fn creds(passphrase: Option<&str>) -> ApiCredentials {
        ApiCredentials {
            api_key: SecretString::from("bg_key"),
            api_secret: Some(SecretString::from("bg_secret")),
            passphrase: passphrase.map(|p| SecretString::from(p.to_string())),
            private_key: None,
        }
    }

    fn ctx(environment: Environment) -> SignContext {
        SignContext {
            now_ms: 1_659_076_670_000,
            nonce: 0,
            random_nonce: [0; 16],
            environment,
            host: "api.bitget.com".into(),
            recv_window_ms: None,
        }
    }

    /// Known answer for the documented prehash (Bitget "Signature": `timestamp +
    /// method.toUpperCase() + requestPath + "?" + queryString + body`) with the timestamp
    /// of the docs' request examples (`1659076670000`). Bitget prints no signature; the
    /// expected values were computed independently with
    /// `printf %s "$prehash" | openssl dgst -sha256 -hmac bg_secret -binary | base64`.
    #[test]
    fn known_answer_from_doc_inputs() {
        let mut get = OutgoingRequest {
            method: Method::GET,
            path: "/api/v2/spot/trade/unfilled-orders".into(),
            query: Some("symbol=BTCUSDT&limit=20".into()),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        Bitget
            .sign(&mut get, &creds(Some("pp")), &ctx(Environment::Production))
            .unwrap();
        assert_eq!(get.headers["access-timestamp"], "1659076670000");
        assert_eq!(get.headers["access-passphrase"], "pp");
        assert_eq!(
            get.headers["access-sign"],
            "QkhAZII2Np5cEBbKfXKdPyoZOThp029sCt84X5a8hxw="
        );
        assert!(get.headers.get(DEMO_HEADER).is_none());

        let body = r#"{"symbol":"BTCUSDT","side":"buy","orderType":"limit","force":"gtc","price":"23222.5","size":"1"}"#;
        let mut p = post("/api/v2/spot/trade/place-order", body);
        Bitget
            .sign(&mut p, &creds(Some("pp")), &ctx(Environment::Testnet))
            .unwrap();
        assert_eq!(
            p.headers["access-sign"],
            "L8JhffWT15uuUtajntUI2CdF0y9D63d8DM0kDps+Wgc="
        );
        assert_eq!(p.headers[DEMO_HEADER], "1");
    }

    #[test]
    fn query_is_signed_decoded() {
        assert_eq!(signed_query("a=1&b=x%2Cy&c=d+e"), "a=1&b=x,y&c=d e");
        let mut enc = OutgoingRequest {
            method: Method::GET,
            path: "/api/v2/spot/trade/fills".into(),
            query: Some("symbol=BTCUSDT&note=x%2Cy".into()),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        let mut raw = enc.clone();
        raw.query = Some("symbol=BTCUSDT&note=x,y".into());
        let c = ctx(Environment::Production);
        Bitget.sign(&mut enc, &creds(Some("p")), &c).unwrap();
        Bitget.sign(&mut raw, &creds(Some("p")), &c).unwrap();
        assert_eq!(enc.headers["access-sign"], raw.headers["access-sign"]);
        assert_eq!(enc.query.as_deref(), Some("symbol=BTCUSDT&note=x%2Cy"));
    }

    #[test]
    fn demo_header_skipped_for_simulated_product_lines() {
        let mut p = post(
            "/api/v2/mix/order/place-order",
            r#"{"symbol":"SBTCSUSDT","productType":"SUSDT-FUTURES","side":"buy","orderType":"market","size":"1"}"#,
        );
        Bitget
            .sign(&mut p, &creds(Some("p")), &ctx(Environment::Testnet))
            .unwrap();
        assert!(p.headers.get(DEMO_HEADER).is_none());
    }

    #[test]
    fn passphrase_is_required() {
        let mut p = post("/api/v2/spot/trade/place-order", "{}");
        assert_eq!(
            Bitget.sign(&mut p, &creds(None), &ctx(Environment::Production)),
            Err(SignError::MissingPassphrase)
        );
    }

    #[test]
    fn strip_removes_client_auth_and_demo_flag() {
        let mut req = post("/api/v2/spot/trade/place-order", "{}");
        for k in [
            "ACCESS-KEY",
            "ACCESS-SIGN",
            "ACCESS-TIMESTAMP",
            "ACCESS-PASSPHRASE",
            "PAPTRADING",
            "Authorization",
            "locale",
        ] {
            req.headers.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_static("x"),
            );
        }
        Bitget.strip_auth(&mut req);
        assert_eq!(req.headers.len(), 1);
        assert!(req.headers.contains_key("locale"));
    }

    #[test]
    fn table_entries_classify_as_listed() {
        for (verb, pattern, class) in ROUTES {
            let path = pattern.replace('*', "x");
            let method = match verb {
                Get => Method::GET,
                Post | Any => Method::POST,
            };
            assert_eq!(Bitget.classify(&method, &path), *class, "{pattern}");
        }
    }

    #[test]
    fn withdrawals_are_never_read_or_trade() {
        for path in [
            "/api/v2/spot/wallet/withdrawal",
            "/api/v2/spot/wallet/cancel-withdrawal",
        ] {
            for m in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
                assert_eq!(Bitget.classify(&m, path), Withdraw, "{m} {path}");
            }
        }
        assert_eq!(
            Bitget.classify(&Method::GET, "/api/v2/spot/wallet/withdrawal-records"),
            Read
        );
        for path in [
            "/api/v2/spot/trade/../wallet/withdrawal",
            "/api/v2/spot/wallet/withdrawal/",
            "/api/v2/spot/wallet/%77ithdrawal",
        ] {
            assert_eq!(
                Bitget.classify(&Method::POST, path),
                EndpointClass::Unknown,
                "{path}"
            );
        }
    }

    #[test]
    fn unlisted_private_and_public_paths() {
        assert_eq!(
            Bitget.classify(&Method::POST, "/api/v2/earn/savings/subscribe"),
            EndpointClass::Unknown
        );
        assert_eq!(
            Bitget.classify(&Method::POST, "/api/v3/trade/place-order"),
            EndpointClass::Unknown
        );
        assert_eq!(
            Bitget.classify(&Method::GET, "/api/v2/spot/market/tickers"),
            Public
        );
        assert_eq!(Bitget.classify(&Method::GET, "/api/v2/public/time"), Public);
        assert_eq!(
            Bitget.classify(&Method::GET, "/api/v2/spot/account/assets"),
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
        let parse =
            |path: &str, body: &str| orders(Bitget.parse_intent(Trade, &post(path, body)).unwrap());
        let o = parse(
            "/api/v2/spot/trade/place-order",
            r#"{"symbol":"BTCUSDT","orderType":"market","force":"GTC","side":"buy","size":"100"}"#,
        );
        assert_eq!(o[0].quote_amount, Some(Decimal::from(100)));
        assert_eq!(o[0].quantity, None);
        assert_eq!(o[0].base.as_deref(), Some("BTC"));
        let o = parse(
            "/api/v2/spot/trade/place-order",
            r#"{"symbol":"BTCUSDT","orderType":"limit","force":"GTC","side":"sell","price":"60000","size":"0.5"}"#,
        );
        assert_eq!(o[0].quantity, Some(Decimal::new(5, 1)));
        assert_eq!(o[0].price, Some(Decimal::from(60_000)));
        let o = parse(
            "/api/v2/mix/order/place-order",
            r#"{"symbol":"BTCUSDT","productType":"USDT-FUTURES","marginMode":"crossed","marginCoin":"USDT","size":"0.5","side":"sell","orderType":"market","reduceOnly":"YES","tradeSide":"close"}"#,
        );
        assert!(o[0].reduce_only);
        assert_eq!(o[0].size_unit, SizeUnit::Base);
        assert_eq!(o[0].quantity, Some(Decimal::new(5, 1)));
        let o = parse(
            "/api/v2/mix/order/batch-place-order",
            r#"{"symbol":"ETHUSDT","productType":"USDT-FUTURES","marginCoin":"USDT","marginMode":"crossed",
                "orderList":[{"size":"1","side":"buy","orderType":"limit","price":"3000"},{"size":"2","side":"sell","tradeSide":"close","orderType":"market"}]}"#,
        );
        assert_eq!(o.len(), 2);
        assert_eq!(o[0].symbol, "ETHUSDT");
        assert!(o[0].price_is_limit);
        // `tradeSide: close` alone is ignored in one-way mode: not reduce-only.
        assert!(!o[1].reduce_only);
        let c = parse(
            "/api/v2/spot/trade/cancel-order",
            r#"{"symbol":"BTCUSDT","orderId":"1"}"#,
        );
        assert!(c[0].is_cancel);
        let lev = parse(
            "/api/v2/mix/account/set-leverage",
            r#"{"symbol":"BTCUSDT","leverage":"5","marginCoin":"USDT","productType":"USDT-FUTURES"}"#,
        );
        assert_eq!(lev[0].leverage, Some(Decimal::from(5)));

        for bad in [
            "",
            "[]",
            r#"{"symbol":"BTCUSDT","orderType":"limit","side":"buy"}"#,
            r#"{"orderType":"limit","side":"buy","size":"1"}"#,
            r#"{"symbol":"BTCUSDT","orderType":"limit","side":"long","size":"1"}"#,
        ] {
            assert!(
                Bitget
                    .parse_intent(Trade, &post("/api/v2/spot/trade/place-order", bad))
                    .is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn parses_withdrawals_and_transfers() {
        let w = Bitget
            .parse_intent(
                Withdraw,
                &post(
                    "/api/v2/spot/wallet/withdrawal",
                    r#"{"coin":"USDT","address":"Txyz","chain":"TRC20","size":"25.5","transferType":"on_chain"}"#,
                ),
            )
            .unwrap();
        assert_eq!(
            w,
            RequestIntent::Withdrawal(WithdrawalIntent {
                asset: "USDT".into(),
                amount: Decimal::new(255, 1),
                address: "Txyz".into(),
                network: Some("TRC20".into()),
                tag: None,
            })
        );
        let t = Bitget
            .parse_intent(
                Transfer,
                &post(
                    "/api/v2/spot/wallet/transfer",
                    r#"{"fromType":"spot","toType":"usdt_futures","amount":10,"coin":"USDT"}"#,
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
    }

    #[test]
    fn parses_balances_key_check_and_limits() {
        let body = br#"{"code":"00000","msg":"success","data":[{"coin":"USDT","available":"90","frozen":"8","locked":"2","limitAvailable":"0","uTime":"1"}]}"#;
        let b = Bitget.parse_balances(body).unwrap();
        assert_eq!(b[0].free, Decimal::from(90));
        assert_eq!(b[0].locked, Decimal::from(10));
        assert_eq!(b[0].total, Decimal::from(100));

        let info = br#"{"code":"00000","data":{"userId":"1","ips":"","authorities":["coow","stow","wtow","wwow"]}}"#;
        let k = Bitget.parse_key_check(info).unwrap();
        assert!(k.can_read && k.can_trade && k.can_transfer && k.can_withdraw && !k.ip_restricted);
        let ro = br#"{"code":"00000","data":{"userId":"1","ips":"127.0.0.1","authorities":["readonly"]}}"#;
        let k = Bitget.parse_key_check(ro).unwrap();
        assert!(k.can_read && !k.can_trade && !k.can_withdraw && k.ip_restricted);
        assert!(k.warnings.is_empty());

        let mut h = HeaderMap::new();
        h.insert("x-mbx-used-remain-limit", HeaderValue::from_static("19"));
        assert_eq!(Bitget.rate_limit(&h).unwrap().remaining, Some(19));
        assert_eq!(Bitget.rate_limit(&HeaderMap::new()), None);
    }

    #[test]
    fn maps_errors() {
        let e = |s: u16, b: &str| Bitget.classify_error(s, b.as_bytes());
        assert_eq!(
            e(200, r#"{"code":"00000","msg":"success","data":{}}"#),
            None
        );
        assert_eq!(
            e(400, r#"{"code":"40006","msg":"Invalid ACCESS_KEY"}"#),
            Some(ErrorKind::InvalidKey)
        );
        assert_eq!(
            e(400, r#"{"code":"40009","msg":"sign signature error"}"#),
            Some(ErrorKind::BadSignature)
        );
        assert_eq!(
            e(400, r#"{"code":"40018","msg":"Invalid IP"}"#),
            Some(ErrorKind::IpNotAllowed)
        );
        assert_eq!(
            e(429, r#"{"code":"429","msg":"Too Many Requests"}"#),
            Some(ErrorKind::RateLimited)
        );
        assert_eq!(
            e(400, r#"{"code":"43012","msg":"Insufficient balance"}"#),
            Some(ErrorKind::InsufficientBalance)
        );
        assert_eq!(
            e(400, r#"{"code":"40014","msg":"Incorrect permissions"}"#),
            Some(ErrorKind::PermissionDenied)
        );
        assert_eq!(
            e(400, r#"{"code":"40008","msg":""}"#),
            Some(ErrorKind::TimestampOutOfWindow)
        );
    }

    #[test]
    fn market_price_is_not_a_limit() {
        let parse =
            |path: &str, body: &str| orders(Bitget.parse_intent(Trade, &post(path, body)).unwrap());
        let o = parse(
            "/api/v2/spot/trade/place-order",
            r#"{"symbol":"BTCUSDT","orderType":"market","force":"gtc","side":"sell","size":"100","price":"0.01"}"#,
        );
        assert_eq!(o[0].price, Some(Decimal::new(1, 2)));
        assert!(!o[0].price_is_limit);
        let o = parse(
            "/api/v2/mix/order/place-order",
            r#"{"symbol":"BTCUSDT","productType":"USDT-FUTURES","marginMode":"crossed","marginCoin":"USDT","size":"100","side":"buy","orderType":"market","price":"0.01"}"#,
        );
        assert!(!o[0].price_is_limit);
        let o = parse(
            "/api/v2/mix/order/place-order",
            r#"{"symbol":"BTCUSDT","productType":"USDT-FUTURES","marginMode":"crossed","marginCoin":"USDT","size":"1","side":"buy","orderType":"limit","force":"post_only","price":"60000"}"#,
        );
        assert!(o[0].price_is_limit);
        // A spot plan order has no `price`: its limit is `executePrice`.
        let o = parse(
            "/api/v2/spot/trade/place-plan-order",
            r#"{"symbol":"BTCUSDT","side":"buy","orderType":"limit","size":"1","triggerPrice":"60000","executePrice":"61000","price":"0.01"}"#,
        );
        assert_eq!(o[0].price, Some(Decimal::from(61_000)));
        assert!(o[0].price_is_limit);
    }

    // Each amendment is read from the fields Bitget reads for that endpoint, and the
    // other names are refused: before, `newSize` was taken before `size` everywhere, so a
    // spot cancel-replace sized by a tiny `newSize` replaced at Bitget's `size`; and
    // `planType: total` on a plain spot order made `size` a quote amount.
    #[test]
    fn amendments_and_plain_orders_read_the_fields_bitget_reads() {
        let parse = |path: &str, body: &str| Bitget.parse_intent(Trade, &post(path, body));
        let one = |path: &str, body: &str| orders(parse(path, body).unwrap()).remove(0);
        let o = one(
            "/api/v2/spot/trade/cancel-replace-order",
            r#"{"symbol":"BTCUSDT","orderId":"1","price":"60000","size":"50"}"#,
        );
        assert_eq!(
            (o.quantity, o.price),
            (Some(Decimal::from(50)), Some(Decimal::from(60_000)))
        );
        let o = one(
            "/api/v2/mix/order/modify-order",
            r#"{"symbol":"BTCUSDT","productType":"USDT-FUTURES","orderId":"1","newSize":"50","newPrice":"60000","newClientOid":"x"}"#,
        );
        assert_eq!(
            (o.quantity, o.price),
            (Some(Decimal::from(50)), Some(Decimal::from(60_000)))
        );
        // a spot plan amendment names no symbol Bitget reads: none is taken from the body
        // (policy refuses it), so a stated `SHIBUSDT` cannot stand for the BTC order
        for symbol in [r#""symbol":"SHIBUSDT","#, ""] {
            let o = one(
                "/api/v2/spot/trade/modify-plan-order",
                &format!(
                    r#"{{"orderId":"1",{symbol}"triggerPrice":"59000","orderType":"limit","executePrice":"60000","size":"50"}}"#
                ),
            );
            assert_eq!(
                (o.symbol.as_str(), o.quantity, o.price),
                ("", Some(Decimal::from(50)), Some(Decimal::from(60_000)))
            );
        }
        for (path, body) in [
            (
                "/api/v2/spot/trade/cancel-replace-order",
                r#"{"symbol":"BTCUSDT","orderId":"1","price":"60000","size":"50","newSize":"0.0001"}"#,
            ),
            (
                "/api/v2/spot/trade/batch-cancel-replace-order",
                r#"{"orderList":[{"symbol":"BTCUSDT","orderId":"1","price":"60000","size":"50","newSize":"0.0001"}]}"#,
            ),
            (
                "/api/v2/mix/order/modify-order",
                r#"{"symbol":"BTCUSDT","productType":"USDT-FUTURES","orderId":"1","newSize":"50","size":"0.0001"}"#,
            ),
            (
                "/api/v2/spot/trade/modify-plan-order",
                r#"{"orderId":"1","symbol":"BTCUSDT","executePrice":"60000","size":"50","price":"1"}"#,
            ),
            (
                "/api/v2/spot/trade/place-order",
                r#"{"symbol":"BTCUSDT","side":"sell","orderType":"market","size":"10","planType":"total"}"#,
            ),
            (
                "/api/v2/spot/trade/batch-orders",
                r#"{"symbol":"BTCUSDT","orderList":[{"side":"buy","orderType":"limit","force":"gtc","price":"60000","size":"10","planType":"total"}]}"#,
            ),
        ] {
            assert!(parse(path, body).is_err(), "{path} {body}");
        }
        // a plan order's `planType` still counts
        let o = one(
            "/api/v2/spot/trade/place-plan-order",
            r#"{"symbol":"BTCUSDT","side":"buy","orderType":"market","size":"100","triggerPrice":"60000","planType":"total"}"#,
        );
        assert_eq!(o.quote_amount, Some(Decimal::from(100)));
    }

    // A plan order without `planType` is sized in the base coin, Bitget's default, for a
    // market buy too: before, it was read like a plain market buy (quote), so a 10 BTC
    // buy was checked as 10 USDT.
    #[test]
    fn a_plan_order_is_sized_in_the_base_coin_by_default() {
        let parse = |body: &str| {
            Bitget.parse_intent(Trade, &post("/api/v2/spot/trade/place-plan-order", body))
        };
        for plan in ["", r#","planType":"amount""#] {
            let body = format!(
                r#"{{"symbol":"BTCUSDT","side":"buy","orderType":"market","triggerPrice":"60000","triggerType":"fill_price","size":"10"{plan}}}"#
            );
            let o = orders(parse(&body).unwrap()).remove(0);
            assert_eq!(
                (o.quantity, o.quote_amount),
                (Some(Decimal::from(10)), None),
                "{body}"
            );
        }
        for plan in [r#""""#, r#""TOTAL""#, "1", "null"] {
            let body = format!(
                r#"{{"symbol":"BTCUSDT","side":"buy","orderType":"market","triggerPrice":"60000","size":"10","planType":{plan}}}"#
            );
            assert!(parse(&body).is_err(), "{body}");
        }
    }

    // A margin order whose `loanType` borrows is marked; `normal` and `autoRepay` are not.
    #[test]
    fn margin_orders_that_borrow_are_marked() {
        for (extra, borrows) in [
            ("", false),
            (r#","loanType":"normal""#, false),
            (r#","loanType":"autoRepay""#, false),
            (r#","loanType":"autoLoan""#, true),
            (r#","loanType":"autoLoanAndRepay""#, true),
        ] {
            let body = format!(
                r#"{{"symbol":"BTCUSDT","side":"buy","orderType":"limit","price":"1","baseSize":"1","force":"gtc"{extra}}}"#
            );
            let o = orders(
                Bitget
                    .parse_intent(Trade, &post("/api/v2/margin/crossed/place-order", &body))
                    .unwrap(),
            )
            .remove(0);
            assert_eq!(o.borrows, borrows, "{extra}");
        }
    }

    #[test]
    fn batch_symbol_is_the_one_bitget_uses() {
        let parse = |path: &str, body: &str| Bitget.parse_intent(Trade, &post(path, body));
        // Spot, single mode (the default): the envelope's symbol; a differing inner one is
        // refused.
        let o = orders(
            parse(
                "/api/v2/spot/trade/batch-orders",
                r#"{"symbol":"BTCUSDT","orderList":[{"side":"buy","orderType":"limit","force":"gtc","price":"1","size":"1"}]}"#,
            )
            .unwrap(),
        );
        assert_eq!(o[0].symbol, "BTCUSDT");
        for body in [
            r#"{"symbol":"BTCUSDT","orderList":[{"symbol":"PEPEUSDT","side":"buy","orderType":"limit","force":"gtc","price":"1","size":"1"}]}"#,
            r#"{"symbol":"BTCUSDT","batchMode":"multiple","orderList":[{"symbol":"PEPEUSDT","side":"buy","orderType":"limit","force":"gtc","price":"1","size":"1"}]}"#,
            r#"{"orderList":[{"symbol":"PEPEUSDT","side":"buy","orderType":"limit","force":"gtc","price":"1","size":"1"}]}"#,
            r#"{"symbol":"BTCUSDT","batchMode":"other","orderList":[{"side":"buy","orderType":"limit","force":"gtc","price":"1","size":"1"}]}"#,
        ] {
            assert!(
                parse("/api/v2/spot/trade/batch-orders", body).is_err(),
                "{body}"
            );
        }
        // Multiple mode: each order's own symbol.
        let o = orders(
            parse(
                "/api/v2/spot/trade/batch-orders",
                r#"{"batchMode":"multiple","orderList":[{"symbol":"ETHUSDT","side":"buy","orderType":"limit","force":"gtc","price":"1","size":"1"},{"symbol":"BTCUSDT","side":"buy","orderType":"limit","force":"gtc","price":"1","size":"1"}]}"#,
            )
            .unwrap(),
        );
        assert_eq!(
            (o[0].symbol.as_str(), o[1].symbol.as_str()),
            ("ETHUSDT", "BTCUSDT")
        );
        // Mix: the envelope's symbol; an inner one must match it.
        let mix = r#"{"symbol":"BTCUSDT","productType":"USDT-FUTURES","marginCoin":"USDT","marginMode":"crossed","orderList":[{"symbol":"XRPUSDT","size":"1","side":"buy","orderType":"market"}]}"#;
        assert!(parse("/api/v2/mix/order/batch-place-order", mix).is_err());
        let same = mix.replace("XRPUSDT", "btcusdt");
        assert_eq!(
            orders(parse("/api/v2/mix/order/batch-place-order", &same).unwrap())[0].symbol,
            "BTCUSDT"
        );
        let margin = r#"{"symbol":"BTCUSDT","orderList":[{"symbol":"XRPUSDT","side":"buy","orderType":"market","quoteSize":"10"}]}"#;
        assert!(parse("/api/v2/margin/crossed/batch-place-order", margin).is_err());
    }

    #[test]
    fn mix_reduce_only_cannot_open_in_either_position_mode() {
        let body = |extra: &str| {
            format!(
                r#"{{"symbol":"BTCUSDT","productType":"USDT-FUTURES","marginMode":"crossed","marginCoin":"USDT","size":"5","side":"buy","orderType":"market"{extra}}}"#
            )
        };
        let ro = |extra: &str| {
            orders(
                Bitget
                    .parse_intent(Trade, &post("/api/v2/mix/order/place-order", &body(extra)))
                    .unwrap(),
            )[0]
            .reduce_only
        };
        assert!(ro(r#","reduceOnly":"YES","tradeSide":"close""#));
        assert!(ro(r#","reduceOnly":"YES","tradeSide":"Close""#));
        // one-way mode honours it; hedge mode rejects an order without tradeSide (CCXT)
        assert!(ro(r#","reduceOnly":"YES""#));
        // hedge mode opens with it
        assert!(!ro(r#","reduceOnly":"YES","tradeSide":"open""#));
        // one-way mode ignores tradeSide: it could open there (CCXT's hedge-mode close)
        assert!(!ro(r#","tradeSide":"close""#));
        assert!(!ro(r#","reduceOnly":"yes","tradeSide":"close""#));
        assert!(!ro(r#","reduceOnly":true,"tradeSide":"close""#));
        assert!(!ro(r#","reduceOnly":"1","tradeSide":"close""#));
        assert!(!ro(""));
    }

    #[test]
    fn duplicate_json_keys_are_refused() {
        let r = post(
            "/api/v2/spot/trade/place-order",
            r#"{"symbol":"BTCUSDT","orderType":"limit","force":"gtc","side":"buy","price":"1","size":"0.001","size":"1000"}"#,
        );
        assert!(Bitget.parse_intent(Trade, &r).is_err());
    }
}
