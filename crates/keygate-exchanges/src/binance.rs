//! Binance spot API (`api.binance.com`): spot account/trade under `/api/v3`, margin and
//! wallet endpoints under `/sapi`.
//!
//! Signing follows <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/request-security>:
//! the signed payload is the query string concatenated *without separator* to the form
//! body, exactly as sent; `signature` is appended to whichever of the two carries the
//! parameters. Placement matches CCXT's `binance.sign()` byte for byte: `timestamp` first,
//! a defaulted `recvWindow` last, parameters in the body for POST/PUT, in the query for
//! GET/DELETE (CCXT-signed requests re-sign to identical bytes; see `tests/ccxt_binance.rs`).
//!
//! Invariants:
//! - Bytes of the client's parameters are never re-encoded: auth is removed with raw-pair
//!   surgery, so what policy parsed is what Binance receives.
//! - Paths are classified case-insensitively after canonicalisation; anything odd
//!   (percent-escapes, dot segments) is `Unknown`, and no non-GET path that mentions a
//!   withdrawal can come out as `public`, `read` or `trade`.
//!
//! The helpers here (`sign_request`, `strip_request`, the route matcher, order parsing) are
//! shared with [`crate::binanceusdm`]: same venue, same key, same signing scheme.

use bytes::Bytes;
use http::{HeaderMap, Method};
use rust_decimal::Decimal;
use secrecy::ExposeSecret;

use crate::util;
use crate::*;

/// `binance` API (spot, margin, wallet).
pub struct Binance;

/// Which HTTP methods a route entry applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum On {
    Any,
    Get,
    Post,
    Put,
    Delete,
}

impl On {
    fn matches(self, m: &Method) -> bool {
        match self {
            On::Any => true,
            On::Get => m == Method::GET || m == Method::HEAD,
            On::Post => m == Method::POST,
            On::Put => m == Method::PUT,
            On::Delete => m == Method::DELETE,
        }
    }
}

/// `(method, path pattern, class)`. First match wins, so specific entries come before the
/// wildcard that would also match them. A pattern ending in `*` matches any path that starts
/// with the part before the `*`; patterns are compared case-insensitively.
pub(crate) type Route = (On, &'static str, EndpointClass);

const PUBLIC: EndpointClass = EndpointClass::Public;
const READ: EndpointClass = EndpointClass::Read;
const TRADE: EndpointClass = EndpointClass::Trade;
const WITHDRAW: EndpointClass = EndpointClass::Withdraw;
const TRANSFER: EndpointClass = EndpointClass::Transfer;
const SUB_ACCOUNT: EndpointClass = EndpointClass::SubAccount;
const MANAGE: EndpointClass = EndpointClass::Manage;

/// Endpoint classes for the spot host. Sources: Binance spot REST docs (market data,
/// trading, account endpoints) and the wallet / margin / sub-account sections of
/// <https://developers.binance.com/docs/>.
pub(crate) const SPOT_ROUTES: &[Route] = &[
    // --- withdrawals: anything that moves value off the account ------------------------
    (On::Any, "/sapi/v1/capital/withdraw/apply", WITHDRAW),
    (On::Any, "/sapi/v1/localentity/withdraw/apply", WITHDRAW), // travel-rule withdraw
    (On::Any, "/sapi/v1/giftcard/createCode", WITHDRAW),        // bearer code = funds out
    (On::Any, "/sapi/v1/giftcard/buyCode", WITHDRAW),
    // --- public market data (security type NONE) -------------------------------------
    (On::Get, "/api/v3/ping", PUBLIC),
    (On::Get, "/api/v3/time", PUBLIC),
    (On::Get, "/api/v3/exchangeInfo", PUBLIC),
    (On::Get, "/api/v3/depth", PUBLIC),
    (On::Get, "/api/v3/trades", PUBLIC),
    // No longer MARKET_DATA: the current docs list no security type (weight 25).
    (On::Get, "/api/v3/historicalTrades", PUBLIC),
    (On::Get, "/api/v3/historicalBlockTrades", PUBLIC),
    (On::Get, "/api/v3/aggTrades", PUBLIC),
    (On::Get, "/api/v3/klines", PUBLIC),
    (On::Get, "/api/v3/uiKlines", PUBLIC),
    (On::Get, "/api/v3/avgPrice", PUBLIC),
    (On::Get, "/api/v3/ticker*", PUBLIC), // ticker, ticker/24hr, /price, /bookTicker, /tradingDay
    (On::Get, "/api/v3/executionRules", PUBLIC),
    (On::Get, "/api/v3/referencePrice*", PUBLIC),
    (On::Get, "/sapi/v1/system/status", PUBLIC),
    // --- user data stream (USER_STREAM: API key header only) ---------------------------
    (On::Any, "/api/v3/userDataStream", READ),
    (On::Any, "/sapi/v1/userDataStream", READ), // margin
    (On::Any, "/sapi/v1/userDataStream/isolated", READ),
    // --- spot trading -----------------------------------------------------------------
    (On::Post, "/api/v3/order", TRADE),
    (On::Delete, "/api/v3/order", TRADE),
    (On::Post, "/api/v3/order/test", TRADE),
    (On::Post, "/api/v3/order/cancelReplace", TRADE),
    (On::Put, "/api/v3/order/amend/keepPriority", TRADE),
    (On::Post, "/api/v3/order/oco", TRADE), // deprecated OCO
    (On::Post, "/api/v3/orderList/oco", TRADE),
    (On::Post, "/api/v3/orderList/oto", TRADE),
    (On::Post, "/api/v3/orderList/otoco", TRADE),
    (On::Post, "/api/v3/orderList/opo", TRADE),
    (On::Post, "/api/v3/orderList/opoco", TRADE),
    (On::Delete, "/api/v3/orderList", TRADE),
    (On::Delete, "/api/v3/openOrders", TRADE),
    (On::Post, "/api/v3/sor/order", TRADE),
    (On::Post, "/api/v3/sor/order/test", TRADE),
    // --- spot account reads (USER_DATA) -------------------------------------------------
    (On::Get, "/api/v3/order", READ),
    (On::Get, "/api/v3/order/amendments", READ),
    (On::Get, "/api/v3/openOrders", READ),
    (On::Get, "/api/v3/allOrders", READ),
    (On::Get, "/api/v3/orderList", READ),
    (On::Get, "/api/v3/allOrderList", READ),
    (On::Get, "/api/v3/openOrderList", READ),
    (On::Get, "/api/v3/account", READ),
    (On::Get, "/api/v3/account/commission", READ),
    (On::Get, "/api/v3/myTrades", READ),
    (On::Get, "/api/v3/myPreventedMatches", READ),
    (On::Get, "/api/v3/myAllocations", READ),
    (On::Get, "/api/v3/myFilters", READ),
    (On::Get, "/api/v3/rateLimit/order", READ),
    // --- wallet: deposits, withdrawal history, asset info -----------------------------
    (On::Get, "/sapi/v1/capital/*", READ), // config/getall, deposit/address, deposit/hisrec, withdraw/history
    (On::Get, "/sapi/v1/localentity/*", READ),
    (On::Get, "/sapi/v1/asset/*", READ), // assetDetail, tradeFee, transfer history, ...
    (On::Post, "/sapi/v1/asset/get-funding-asset", READ), // POST but read-only
    (On::Post, "/sapi/v3/asset/getUserAsset", READ),
    (On::Get, "/sapi/v1/accountSnapshot", READ),
    (On::Get, "/sapi/v1/account/status", READ),
    (On::Get, "/sapi/v1/account/apiTradingStatus", READ),
    (On::Get, "/sapi/v1/account/info", READ),
    (On::Get, "/sapi/v1/account/apiRestrictions", READ),
    (
        On::Get,
        "/sapi/v1/account/apiRestrictions/ipRestriction",
        READ,
    ),
    // --- transfers between the owner's own accounts ----------------------------------
    (On::Post, "/sapi/v1/asset/transfer", TRANSFER),
    (On::Post, "/sapi/v1/futures/transfer", TRANSFER),
    (On::Get, "/sapi/v1/futures/transfer", READ),
    (On::Post, "/sapi/v1/margin/transfer", TRANSFER),
    (On::Post, "/sapi/v1/margin/isolated/transfer", TRANSFER),
    // --- margin ---------------------------------------------------------------------
    (On::Post, "/sapi/v1/margin/order", TRADE),
    (On::Delete, "/sapi/v1/margin/order", TRADE),
    (On::Delete, "/sapi/v1/margin/openOrders", TRADE),
    (On::Post, "/sapi/v1/margin/order/oco", TRADE),
    (On::Post, "/sapi/v1/margin/orderList/oto", TRADE),
    (On::Post, "/sapi/v1/margin/orderList/otoco", TRADE),
    (On::Delete, "/sapi/v1/margin/orderList", TRADE),
    (On::Post, "/sapi/v1/margin/borrow-repay", TRADE),
    (On::Post, "/sapi/v1/margin/loan", TRADE), // legacy borrow
    (On::Post, "/sapi/v1/margin/repay", TRADE), // legacy repay
    (On::Post, "/sapi/v1/margin/max-leverage", MANAGE), // account-wide setting
    (On::Get, "/sapi/v1/margin/*", READ),
    // --- sub-accounts (API-key management of sub-accounts is `manage`) ---------------
    (On::Any, "/sapi/v1/sub-account/subAccountApi/*", MANAGE),
    (On::Any, "/sapi/v2/sub-account/subAccountApi/*", MANAGE),
    (On::Any, "/sapi/v1/sub-account/*", SUB_ACCOUNT),
    (On::Any, "/sapi/v2/sub-account/*", SUB_ACCOUNT),
    (On::Any, "/sapi/v3/sub-account/*", SUB_ACCOUNT),
    (On::Any, "/sapi/v4/sub-account/*", SUB_ACCOUNT),
    // managed sub-accounts (run by an asset manager): deposits into them move funds out
    (On::Any, "/sapi/v1/managed-subaccount/*", SUB_ACCOUNT),
    // --- API-key management and account settings ----------------------------------------
    (On::Any, "/sapi/v1/account/apiRestrictions/*", MANAGE), // IP allowlist edits
    (On::Any, "/sapi/v1/account/enableFastWithdrawSwitch", MANAGE),
    (
        On::Any,
        "/sapi/v1/account/disableFastWithdrawSwitch",
        MANAGE,
    ),
    (On::Post, "/sapi/v1/bnbBurn", MANAGE),
    (On::Get, "/sapi/v1/bnbBurn", READ),
];

/// Endpoints whose security type is USER_STREAM / MARKET_DATA: the API key header only,
/// no timestamp or signature (Binance rejects neither, but CCXT sends none, and a listen
/// key needs no replay protection).
pub(crate) const SPOT_KEY_ONLY: &[&str] = &[
    "/api/v3/userdatastream",
    "/sapi/v1/userdatastream",
    "/sapi/v1/userdatastream/isolated",
];

/// Path fragments that mark a withdrawal-like endpoint: a non-GET request to such a path
/// is never allowed to classify as public/read/trade/unknown, whatever the table says.
const WITHDRAW_MARKERS: &[&str] = &["withdraw", "giftcard"];

/// REQUEST_WEIGHT per minute for `/api` endpoints (spot `exchangeInfo` `rateLimits`,
/// <https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits>).
const SPOT_WEIGHT_LIMIT_1M: u64 = 6000;
/// `/sapi` IP weight per minute (wallet docs "General Info: IP limits").
const SAPI_IP_WEIGHT_LIMIT_1M: u64 = 12000;
/// `/sapi` UID weight per minute (same page, "UID limits").
const SAPI_UID_WEIGHT_LIMIT_1M: u64 = 180_000;
/// Spot ORDERS limit per 10 s (spot `exchangeInfo` `rateLimits`).
const SPOT_ORDERS_LIMIT_10S: u64 = 100;
/// Spot ORDERS limit per day (same source).
const SPOT_ORDERS_LIMIT_1D: u64 = 200_000;

impl Exchange for Binance {
    fn id(&self) -> ExchangeId {
        ExchangeId::Binance
    }

    fn hosts(&self) -> Hosts {
        Hosts {
            production: "https://api.binance.com",
            testnet: Some("https://testnet.binance.vision"),
        }
    }

    fn strip_auth(&self, req: &mut OutgoingRequest) {
        strip_request(req);
    }

    fn classify(&self, method: &Method, path: &str) -> EndpointClass {
        classify_with(SPOT_ROUTES, method, path)
    }

    fn sign(
        &self,
        req: &mut OutgoingRequest,
        creds: &ApiCredentials,
        ctx: &SignContext,
    ) -> Result<(), SignError> {
        let key_only =
            canonical_path(&req.path).is_some_and(|p| SPOT_KEY_ONLY.contains(&p.as_str()));
        sign_request(req, creds, ctx, key_only)
    }

    fn parse_intent(
        &self,
        class: EndpointClass,
        req: &OutgoingRequest,
    ) -> Result<RequestIntent, ParseError> {
        let params = request_params(req)?;
        let path = canonical_path(&req.path).ok_or(ParseError::InvalidValue("path"))?;
        match class {
            EndpointClass::Trade => spot_trade_intent(&req.method, &path, &params),
            EndpointClass::Withdraw => withdraw_intent(&path, &params),
            EndpointClass::Transfer => transfer_intent(&params),
            _ => Ok(RequestIntent::None),
        }
    }

    fn balance_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/api/v3/account",
            query: Some("omitZeroBalances=true"),
        }
    }

    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError> {
        let v = util::json_body(body)?;
        let rows = v
            .get("balances")
            .and_then(|b| b.as_array())
            .ok_or(ParseError::MissingField("balances"))?;
        let mut out = Vec::new();
        for row in rows {
            let asset = row
                .get("asset")
                .and_then(|a| a.as_str())
                .ok_or(ParseError::MissingField("asset"))?;
            let free =
                util::json_decimal("free", row.get("free").unwrap_or(&serde_json::Value::Null))?;
            let locked = util::json_decimal(
                "locked",
                row.get("locked").unwrap_or(&serde_json::Value::Null),
            )?;
            if free.is_zero() && locked.is_zero() {
                continue;
            }
            out.push(Balance {
                asset: asset.to_string(),
                free,
                locked,
                total: free + locked,
                account_type: Some("spot".into()),
            });
        }
        Ok(out)
    }

    fn key_check_request(&self) -> PlannedRequest {
        api_restrictions_request()
    }

    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError> {
        parse_api_restrictions(body, "enableSpotAndMarginTrading")
    }

    /// Request weight is counted per IP, and a 418 bans the IP
    /// (<https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits>).
    fn limits_per_ip(&self) -> bool {
        true
    }

    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitStatus> {
        weight_status(headers, "x-mbx-used-weight-1m", SPOT_WEIGHT_LIMIT_1M)
            .or_else(|| weight_status(headers, "x-sapi-used-ip-weight-1m", SAPI_IP_WEIGHT_LIMIT_1M))
            .or_else(|| weight_status(headers, "x-mbx-order-count-10s", SPOT_ORDERS_LIMIT_10S))
    }

    fn request_cost(&self, req: &OutgoingRequest) -> Vec<crate::Charge> {
        crate::binance_weights::spot(req)
    }

    fn rate_limits(
        &self,
        _method: &Method,
        _path: &str,
        headers: &HeaderMap,
    ) -> Vec<(crate::Budget, RateLimitStatus)> {
        use crate::binance_weights::*;
        reported(
            headers,
            &[
                ("x-mbx-used-weight-1m", &WEIGHT_1M, SPOT_WEIGHT_LIMIT_1M),
                (
                    "x-sapi-used-ip-weight-1m",
                    &SAPI_IP_1M,
                    SAPI_IP_WEIGHT_LIMIT_1M,
                ),
                (
                    "x-sapi-used-uid-weight-1m",
                    &SAPI_UID_1M,
                    SAPI_UID_WEIGHT_LIMIT_1M,
                ),
                ("x-mbx-order-count-10s", &ORDERS_10S, SPOT_ORDERS_LIMIT_10S),
                ("x-mbx-order-count-1d", &ORDERS_1D, SPOT_ORDERS_LIMIT_1D),
            ],
        )
    }

    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind> {
        classify_binance_error(status, body)
    }
}

// ---------------------------------------------------------------------------------------
// Classification

/// Lower-cased path with repeated and trailing slashes removed; `None` for anything a
/// router might interpret differently from a string compare (percent-escapes, dot
/// segments, backslashes, non-ASCII): such paths are `Unknown`.
pub(crate) fn canonical_path(path: &str) -> Option<String> {
    if !path.starts_with('/')
        || path
            .bytes()
            .any(|b| b == b'%' || b == b'\\' || b == b'?' || b == b'#' || !b.is_ascii_graphic())
    {
        return None;
    }
    let mut out = String::with_capacity(path.len());
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        if seg == "." || seg == ".." {
            return None;
        }
        out.push('/');
        out.push_str(&seg.to_ascii_lowercase());
    }
    if out.is_empty() {
        out.push('/');
    }
    Some(out)
}

fn pattern_matches(pattern: &str, canon: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => {
            canon.len() >= prefix.len()
                && canon.as_bytes()[..prefix.len()].eq_ignore_ascii_case(prefix.as_bytes())
        }
        None => canon.eq_ignore_ascii_case(pattern),
    }
}

/// Looks `method path` up in `routes`, fail-closed (see the module invariants).
pub(crate) fn classify_with(routes: &[Route], method: &Method, path: &str) -> EndpointClass {
    let Some(canon) = canonical_path(path) else {
        return EndpointClass::Unknown;
    };
    let class = routes
        .iter()
        .find(|(on, pat, _)| on.matches(method) && pattern_matches(pat, &canon))
        .map(|(_, _, c)| *c)
        .unwrap_or(EndpointClass::Unknown);
    // Unknown is upgraded too: a connection that allows unknown endpoints must still not
    // reach a withdrawal through one.
    let withdraw_like = WITHDRAW_MARKERS.iter().any(|m| canon.contains(m));
    if withdraw_like
        && method != Method::GET
        && matches!(
            class,
            EndpointClass::Public
                | EndpointClass::Read
                | EndpointClass::Trade
                | EndpointClass::Unknown
        )
    {
        return EndpointClass::Withdraw;
    }
    class
}

// ---------------------------------------------------------------------------------------
// Auth stripping and signing

const FORM: &str = "application/x-www-form-urlencoded";

/// Parameters keygate owns: the client's values are dropped and re-created at signing.
const AUTH_PARAMS: &[&str] = &["signature", "timestamp"];

/// Removes `signature`/`timestamp` from query and form body and the API-key header.
/// `recvWindow` stays: it is the client's choice of freshness window.
pub(crate) fn strip_request(req: &mut OutgoingRequest) {
    req.query = util::remove_raw_params(req.query.as_deref(), AUTH_PARAMS);
    if !req.body.is_empty() && is_form(&req.headers) {
        if let Ok(body) = std::str::from_utf8(&req.body) {
            let kept = util::remove_raw_params(Some(body), AUTH_PARAMS).unwrap_or_default();
            req.body = Bytes::from(kept);
        }
    }
    util::remove_headers(&mut req.headers, &["x-mbx-apikey"], &[]);
}

/// True when the body is (or is presumed to be) `application/x-www-form-urlencoded`: Binance
/// takes no other request body.
fn is_form(headers: &HeaderMap) -> bool {
    match headers.get(http::header::CONTENT_TYPE) {
        None => true,
        Some(v) => v
            .to_str()
            .map(|s| s.trim().to_ascii_lowercase().starts_with(FORM))
            .unwrap_or(false),
    }
}

/// The key a credential signs with. Parsed per request; the parsed keys zeroize on drop.
enum Signer<'a> {
    Hmac(&'a str),
    Ed25519(Box<ed25519_dalek::SigningKey>),
    Rsa(Box<rsa::pkcs1v15::SigningKey<sha2::Sha256>>),
}

impl<'a> Signer<'a> {
    /// `private_key` (PEM) wins over `api_secret`; a PEM stored as `api_secret` (the way
    /// CCXT takes Ed25519/RSA keys) is recognised too.
    fn from_creds(creds: &'a ApiCredentials) -> Result<Self, SignError> {
        if let Some(pem) = &creds.private_key {
            return Self::from_pem(pem.expose_secret());
        }
        let secret = creds
            .api_secret
            .as_ref()
            .ok_or(SignError::MissingSecret)?
            .expose_secret();
        if secret.contains("PRIVATE KEY-----") {
            return Self::from_pem(secret);
        }
        if secret.is_empty() {
            return Err(SignError::MissingSecret);
        }
        Ok(Signer::Hmac(secret))
    }

    fn from_pem(pem: &str) -> Result<Self, SignError> {
        use ed25519_dalek::pkcs8::DecodePrivateKey as _;
        use rsa::pkcs1::DecodeRsaPrivateKey as _;
        let pem = pem.trim();
        if let Ok(k) = ed25519_dalek::SigningKey::from_pkcs8_pem(pem) {
            return Ok(Signer::Ed25519(Box::new(k)));
        }
        let rsa_key = rsa::RsaPrivateKey::from_pkcs8_pem(pem)
            .or_else(|_| rsa::RsaPrivateKey::from_pkcs1_pem(pem))
            .map_err(|_| SignError::InvalidPrivateKey)?;
        Ok(Signer::Rsa(Box::new(rsa::pkcs1v15::SigningKey::new(
            rsa_key,
        ))))
    }

    /// The value of the `signature` parameter, already URL-safe.
    fn sign(&self, payload: &[u8]) -> String {
        use rsa::signature::{SignatureEncoding as _, Signer as _};
        match self {
            Signer::Hmac(secret) => util::hex_lower(&util::hmac_sha256(secret.as_bytes(), payload)),
            Signer::Ed25519(k) => util::percent_encode(&util::b64(&k.sign(payload).to_bytes())),
            Signer::Rsa(k) => util::percent_encode(&util::b64(&k.sign(payload).to_bytes())),
        }
    }
}

/// Signs a Binance request in place (spot and USD-M share the scheme).
///
/// `key_only`: USER_STREAM / MARKET_DATA endpoints get the `X-MBX-APIKEY` header and
/// nothing else.
pub(crate) fn sign_request(
    req: &mut OutgoingRequest,
    creds: &ApiCredentials,
    ctx: &SignContext,
    key_only: bool,
) -> Result<(), SignError> {
    let api_key = creds.api_key.expose_secret();
    let api_key_header = http::HeaderValue::from_str(api_key)
        .map_err(|_| SignError::InvalidRequest("API key is not valid header text"))?;
    if key_only {
        req.headers.insert("x-mbx-apikey", api_key_header);
        return Ok(());
    }
    let signer = Signer::from_creds(creds)?;

    if !req.body.is_empty() && !is_form(&req.headers) {
        return Err(SignError::InvalidRequest(
            "Binance signs only form-encoded bodies",
        ));
    }
    let body = std::str::from_utf8(&req.body)
        .map_err(|_| SignError::InvalidRequest("body is not UTF-8 form data"))?
        .to_string();
    let query = req.query.clone().unwrap_or_default();

    // Where the parameters live decides where timestamp and signature go (CCXT: POST/PUT
    // carry them in the body, GET/DELETE in the query).
    let in_body = !body.is_empty()
        || (query.is_empty() && (req.method == Method::POST || req.method == Method::PUT));

    let has_recv_window = [query.as_str(), body.as_str()].iter().any(|s| {
        util::split_raw_pairs(s)
            .iter()
            .any(|(k, _)| *k == "recvWindow")
    });
    let target = if in_body { &body } else { &query };
    let mut params = format!("timestamp={}", ctx.now_ms);
    if !target.is_empty() {
        params.push('&');
        params.push_str(target);
    }
    if let (Some(rw), false) = (ctx.recv_window_ms, has_recv_window) {
        params.push_str(&format!("&recvWindow={rw}"));
    }

    // totalParams = query string concatenated with the body, no separator.
    let payload = if in_body {
        format!("{query}{params}")
    } else {
        format!("{params}{body}")
    };
    let signature = signer.sign(payload.as_bytes());
    params.push_str("&signature=");
    params.push_str(&signature);

    if in_body {
        req.body = Bytes::from(params);
        if !req.headers.contains_key(http::header::CONTENT_TYPE) {
            req.headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static(FORM),
            );
        }
    } else {
        req.query = Some(params);
    }
    req.headers.insert("x-mbx-apikey", api_key_header);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Intent parsing

/// Decoded query pairs followed by decoded form-body pairs.
pub(crate) fn request_params(req: &OutgoingRequest) -> Result<Vec<(String, String)>, ParseError> {
    let mut pairs = util::decode_pairs(req.query.as_deref().unwrap_or(""));
    if !req.body.is_empty() {
        if !is_form(&req.headers) {
            return Err(ParseError::Malformed("body is not form-encoded".into()));
        }
        let body = std::str::from_utf8(&req.body)
            .map_err(|_| ParseError::Malformed("body is not UTF-8".into()))?;
        pairs.extend(util::decode_pairs(body));
    }
    Ok(pairs)
}

pub(crate) fn opt_decimal(
    params: &[(String, String)],
    name: &'static str,
) -> Result<Option<Decimal>, ParseError> {
    match util::pair(params, name)? {
        None | Some("") => Ok(None),
        Some(v) => util::parse_decimal(name, v).map(Some),
    }
}

pub(crate) fn parse_side(s: &str) -> Result<Side, ParseError> {
    match s.to_ascii_uppercase().as_str() {
        "BUY" => Ok(Side::Buy),
        "SELL" => Ok(Side::Sell),
        _ => Err(ParseError::InvalidValue("side")),
    }
}

/// A Binance boolean parameter: exactly `true` or `false` (Binance's documented values; an
/// empty value is absent). Anything else (`TRUE`, `1`, `yes`) is refused: keygate must not
/// grant a reduce-only exemption on a spelling Binance might read as false.
pub(crate) fn parse_bool(field: &'static str, s: &str) -> Result<bool, ParseError> {
    match s {
        "true" => Ok(true),
        "false" | "" => Ok(false),
        _ => Err(ParseError::InvalidValue(field)),
    }
}

/// Spot and margin order types that execute at `price` or better: LIMIT, LIMIT_MAKER and
/// the stop-limit pair (STOP_LOSS_LIMIT, TAKE_PROFIT_LIMIT: `price` is the limit,
/// `stopPrice` the trigger). MARKET, STOP_LOSS and TAKE_PROFIT execute at market.
pub(crate) const SPOT_LIMIT_TYPES: [&str; 4] = [
    "limit",
    "limit_maker",
    "stop_loss_limit",
    "take_profit_limit",
];

/// Whether the request prices its orders from the book rather than from `price`: a pegged
/// spot order (`pegPriceType`, also per leg: `workingPegPriceType`, `abovePegPriceType`...)
/// or a USD-M `priceMatch` (`OPPONENT`, `QUEUE`...).
pub(crate) fn priced_by_the_book(params: &[(String, String)]) -> bool {
    params.iter().any(|(k, v)| {
        let key_pegs = k == "pegPriceType" || k.ends_with("PegPriceType") || k == "priceMatch";
        key_pegs && !v.is_empty() && v != "NONE"
    })
}

/// An intent for `symbol` with base/quote filled from the concatenated symbol.
pub(crate) fn intent_for(symbol: &str) -> Result<OrderIntent, ParseError> {
    if symbol.is_empty() {
        return Err(ParseError::MissingField("symbol"));
    }
    let mut o = OrderIntent::new(symbol);
    if let Some((base, quote)) = util::split_concatenated_symbol(symbol) {
        o.base = Some(base);
        o.quote = Some(quote);
    }
    Ok(o)
}

fn symbol_of(params: &[(String, String)]) -> Result<&str, ParseError> {
    util::pair(params, "symbol")?.ok_or(ParseError::MissingField("symbol"))
}

/// A cancel (or amend-down) of orders on `symbol`: cannot add exposure.
pub(crate) fn cancel_intent(params: &[(String, String)]) -> Result<RequestIntent, ParseError> {
    let mut o = intent_for(symbol_of(params)?)?;
    o.is_cancel = true;
    Ok(RequestIntent::Orders { orders: vec![o] })
}

/// One order from flat parameters (`symbol`, `side`, `type`, `quantity`, `price`,
/// `quoteOrderQty`, `reduceOnly`). `prefix` selects a leg of an order list (`working`,
/// `pending`): `workingSide`, `workingQuantity`, ... `limit_types` are the API's order types
/// (lower-case) that execute at `price` or better.
pub(crate) fn order_from_params(
    params: &[(String, String)],
    prefix: &str,
    limit_types: &[&str],
) -> Result<OrderIntent, ParseError> {
    let field = |name: &str| -> String {
        if prefix.is_empty() {
            name.to_string()
        } else {
            let mut s = prefix.to_string();
            let mut cs = name.chars();
            if let Some(c) = cs.next() {
                s.push(c.to_ascii_uppercase());
                s.extend(cs);
            }
            s
        }
    };
    let get = |name: &str| -> Result<Option<&str>, ParseError> {
        Ok(util::pair(params, &field(name))?.filter(|v| !v.is_empty()))
    };
    let mut o = intent_for(symbol_of(params)?)?;
    o.side = Some(parse_side(
        get("side")?.ok_or(ParseError::MissingField("side"))?,
    )?);
    o.order_type = get("type")?.map(|t| t.to_ascii_lowercase());
    o.quantity = get("quantity")?
        .map(|v| util::parse_decimal("quantity", v))
        .transpose()?;
    o.price = get("price")?
        .map(|v| util::parse_decimal("price", v))
        .transpose()?;
    o.price_is_limit = o.price.is_some()
        && o.order_type
            .as_deref()
            .is_some_and(|t| limit_types.contains(&t))
        && !priced_by_the_book(params);
    o.quote_amount = get("quoteOrderQty")?
        .map(|v| util::parse_decimal("quoteOrderQty", v))
        .transpose()?;
    if let Some(r) = get("reduceOnly")? {
        o.reduce_only = parse_bool("reduceOnly", r)?;
    }
    Ok(o)
}

/// Whether every named order type (a parameter holding e.g. `LIMIT_MAKER`) is present and
/// one of `limit_types`.
fn all_limit_types(
    params: &[(String, String)],
    names: &[&str],
    limit_types: &[&str],
) -> Result<bool, ParseError> {
    for n in names {
        match util::pair(params, n)? {
            Some(t) if limit_types.contains(&t.to_ascii_lowercase().as_str()) => {}
            _ => return Ok(false),
        }
    }
    Ok(true)
}

/// The highest of the named prices, for a conservative notional of an order whose
/// execution price is one of several (OCO legs, stop/limit pairs).
fn max_price(
    params: &[(String, String)],
    names: &[&'static str],
) -> Result<Option<Decimal>, ParseError> {
    let mut best: Option<Decimal> = None;
    for n in names {
        if let Some(p) = opt_decimal(params, n)? {
            best = Some(best.map_or(p, |b| b.max(p)));
        }
    }
    Ok(best)
}

fn spot_trade_intent(
    method: &Method,
    path: &str,
    params: &[(String, String)],
) -> Result<RequestIntent, ParseError> {
    if method == Method::DELETE {
        return cancel_intent(params);
    }
    if path.ends_with("/margin/borrow-repay")
        || path.ends_with("/margin/loan")
        || path.ends_with("/margin/repay")
    {
        // Parsed (asset + amount are required). A loan is the `trade` scope's, and policy
        // refuses it while `max_leverage` is set; a repayment only lowers exposure.
        let asset = util::pair(params, "asset")?.ok_or(ParseError::MissingField("asset"))?;
        let amount = util::parse_decimal(
            "amount",
            util::pair(params, "amount")?.ok_or(ParseError::MissingField("amount"))?,
        )?;
        let repays = path.ends_with("/margin/repay")
            || (path.ends_with("/margin/borrow-repay")
                && util::pair(params, "type")? == Some("REPAY"));
        return Ok(if repays {
            RequestIntent::None
        } else {
            RequestIntent::Borrow {
                asset: asset.to_string(),
                amount: Some(amount),
            }
        });
    }
    if path.ends_with("/order/amend/keeppriority") {
        // Amend-keep-priority can only lower the quantity.
        let mut o = intent_for(symbol_of(params)?)?;
        o.quantity = opt_decimal(params, "newQty")?;
        o.is_cancel = true;
        return Ok(RequestIntent::Orders { orders: vec![o] });
    }
    let limits = &SPOT_LIMIT_TYPES[..];
    let mut orders = if path.ends_with("/oco") {
        // One leg fills, the other is cancelled: one order at the higher of its prices,
        // a limit only when both legs are limit types. `orderList/oco` names the legs'
        // types; the older `order/oco` pairs a LIMIT_MAKER with a STOP_LOSS, or with a
        // STOP_LOSS_LIMIT when `stopLimitPrice` is given.
        let mut o = order_from_params(params, "", limits)?;
        let both_limits = if util::pair(params, "aboveType")?.is_some()
            || util::pair(params, "belowType")?.is_some()
        {
            all_limit_types(params, &["aboveType", "belowType"], limits)?
        } else {
            opt_decimal(params, "stopLimitPrice")?.is_some()
        };
        o.price = max_price(
            params,
            &[
                "price",
                "stopPrice",
                "stopLimitPrice",
                "abovePrice",
                "aboveStopPrice",
                "belowPrice",
                "belowStopPrice",
            ],
        )?;
        o.price_is_limit = both_limits && o.price.is_some() && !priced_by_the_book(params);
        vec![o]
    } else if path.ends_with("/oto")
        || path.ends_with("/otoco")
        || path.ends_with("/opo")
        || path.ends_with("/opoco")
    {
        let working = order_from_params(params, "working", limits)?;
        let mut pending = order_from_params(params, "pending", limits)?;
        if pending.quantity.is_none() {
            // OPO: the pending order inherits the working order's filled quantity.
            pending.quantity = working.quantity;
        }
        if path.ends_with("co") {
            pending.order_type =
                util::pair(params, "pendingAboveType")?.map(|t| t.to_ascii_lowercase());
            let both_limits =
                all_limit_types(params, &["pendingAboveType", "pendingBelowType"], limits)?;
            pending.price = max_price(
                params,
                &[
                    "pendingAbovePrice",
                    "pendingAboveStopPrice",
                    "pendingBelowPrice",
                    "pendingBelowStopPrice",
                ],
            )?;
            pending.price_is_limit =
                both_limits && pending.price.is_some() && !priced_by_the_book(params);
        }
        vec![working, pending]
    } else {
        // order, order/test, sor/order, order/cancelReplace, margin/order
        vec![order_from_params(params, "", limits)?]
    };
    // Spot and margin orders have no reduce-only flag (it is a futures parameter): nothing
    // here earns the exemption, whatever the request says.
    // A margin order's `sideEffectType` may borrow what it trades with: `MARGIN_BUY` and
    // `AUTO_BORROW_REPAY` do, `NO_SIDE_EFFECT` and `AUTO_REPAY` do not; another value
    // counts as borrowing.
    let borrows = !matches!(
        util::pair(params, "sideEffectType")?,
        None | Some("NO_SIDE_EFFECT") | Some("AUTO_REPAY")
    );
    for o in &mut orders {
        o.reduce_only = false;
        o.borrows = borrows;
    }
    Ok(RequestIntent::Orders { orders })
}

fn withdraw_intent(path: &str, params: &[(String, String)]) -> Result<RequestIntent, ParseError> {
    if path.ends_with("/giftcard/createcode") || path.ends_with("/giftcard/buycode") {
        // A gift card is a bearer claim on the funds: a withdrawal to "whoever holds the
        // code". Policy sees the pseudo-address below.
        let (asset, amount) = if path.ends_with("/createcode") {
            ("token", "amount")
        } else {
            ("baseToken", "baseTokenAmount")
        };
        let asset = util::pair(params, asset)?.ok_or(ParseError::MissingField("token"))?;
        let amount = util::pair(params, amount)?.ok_or(ParseError::MissingField("amount"))?;
        return Ok(RequestIntent::Withdrawal(WithdrawalIntent {
            asset: asset.to_string(),
            amount: util::parse_decimal("amount", amount)?,
            address: "binance-gift-card".into(),
            network: None,
            tag: None,
        }));
    }
    let coin = util::pair(params, "coin")?.ok_or(ParseError::MissingField("coin"))?;
    let amount = util::pair(params, "amount")?.ok_or(ParseError::MissingField("amount"))?;
    let address = util::pair(params, "address")?.ok_or(ParseError::MissingField("address"))?;
    if coin.is_empty() || address.is_empty() {
        return Err(ParseError::InvalidValue("withdrawal"));
    }
    let nonempty = |n: &str| -> Result<Option<String>, ParseError> {
        Ok(util::pair(params, n)?
            .filter(|v| !v.is_empty())
            .map(str::to_string))
    };
    Ok(RequestIntent::Withdrawal(WithdrawalIntent {
        asset: coin.to_string(),
        amount: util::parse_decimal("amount", amount)?,
        address: address.to_string(),
        network: nonempty("network")?,
        tag: nonempty("addressTag")?,
    }))
}

pub(crate) fn transfer_intent(params: &[(String, String)]) -> Result<RequestIntent, ParseError> {
    let asset = util::pair(params, "asset")?
        .filter(|a| !a.is_empty())
        .ok_or(ParseError::MissingField("asset"))?;
    Ok(RequestIntent::Transfer {
        asset: asset.to_string(),
        amount: opt_decimal(params, "amount")?,
    })
}

// ---------------------------------------------------------------------------------------
// Responses

/// `GET /sapi/v1/account/apiRestrictions` (spot host; it reports the key's permissions
/// for every Binance product, futures included).
pub(crate) fn api_restrictions_request() -> PlannedRequest {
    PlannedRequest {
        method: Method::GET,
        path: "/sapi/v1/account/apiRestrictions",
        query: None,
    }
}

/// Reads the apiRestrictions report; `trade_flag` names the flag that means "can trade"
/// for this API (`enableSpotAndMarginTrading`, `enableFutures`).
pub(crate) fn parse_api_restrictions(
    body: &[u8],
    trade_flag: &'static str,
) -> Result<KeyCheck, ParseError> {
    let v = util::json_body(body)?;
    if !v.is_object() {
        return Err(ParseError::Malformed("expected an object".into()));
    }
    let flag = |name: &'static str| -> Result<bool, ParseError> {
        match v.get(name) {
            None | Some(serde_json::Value::Null) => Ok(false),
            Some(serde_json::Value::Bool(b)) => Ok(*b),
            Some(_) => Err(ParseError::InvalidValue(name)),
        }
    };
    if v.get("ipRestrict").is_none() {
        return Err(ParseError::MissingField("ipRestrict"));
    }
    let expires_at_ms = match v.get("tradingAuthorityExpirationTime") {
        None | Some(serde_json::Value::Null) => None,
        Some(t) => Some(
            t.as_i64()
                .ok_or(ParseError::InvalidValue("tradingAuthorityExpirationTime"))?,
        ),
    };
    Ok(KeyCheck {
        can_read: flag("enableReading")?,
        can_trade: flag(trade_flag)?,
        can_withdraw: flag("enableWithdrawals")?,
        can_transfer: flag("enableInternalTransfer")? || flag("permitsUniversalTransfer")?,
        ip_restricted: flag("ipRestrict")?,
        expires_at_ms,
        warnings: Vec::new(),
    }
    .with_standard_warnings())
}

/// Used/limit/remaining from one Binance counter header.
pub(crate) fn weight_status(
    headers: &HeaderMap,
    name: &str,
    limit: u64,
) -> Option<RateLimitStatus> {
    let used: u64 = headers.get(name)?.to_str().ok()?.trim().parse().ok()?;
    Some(RateLimitStatus {
        used: Some(used),
        limit: Some(limit),
        remaining: Some(limit.saturating_sub(used)),
        reset_at_ms: None,
        reset_in_ms: None,
    })
}

/// Binance error codes, shared by spot and USD-M
/// (<https://developers.binance.com/docs/binance-spot-api-docs/errors>).
pub(crate) fn classify_binance_error(status: u16, body: &[u8]) -> Option<ErrorKind> {
    if status == 429 || status == 418 {
        return Some(ErrorKind::RateLimited);
    }
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let code = parsed
        .as_ref()
        .and_then(|v| v.get("code"))
        .and_then(|c| c.as_i64());
    let msg = parsed
        .as_ref()
        .and_then(|v| v.get("msg"))
        .and_then(|m| m.as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    let kind = match code {
        // Success envelopes some /sapi endpoints use.
        Some(0) | Some(200) | None if status < 400 => return None,
        Some(c) if c >= 0 && status < 400 => return None,
        Some(-2014) | Some(-2008) => ErrorKind::InvalidKey,
        // "Invalid API-key, IP, or permissions for action."
        Some(-2015) => ErrorKind::InvalidKey,
        Some(-1022) => ErrorKind::BadSignature,
        Some(-1021) => ErrorKind::TimestampOutOfWindow,
        Some(-1003) | Some(-1015) => ErrorKind::RateLimited,
        Some(-1002) => ErrorKind::PermissionDenied,
        Some(-2018) | Some(-2019) => ErrorKind::InsufficientBalance,
        Some(-2010) if msg.contains("insufficient") => ErrorKind::InsufficientBalance,
        _ if status == 401 => ErrorKind::InvalidKey,
        _ if status == 403 => ErrorKind::PermissionDenied,
        _ => ErrorKind::Unknown,
    };
    Some(kind)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use secrecy::SecretString;

    pub(crate) fn req(
        method: Method,
        path: &str,
        query: Option<&str>,
        body: &str,
    ) -> OutgoingRequest {
        OutgoingRequest {
            method,
            path: path.into(),
            query: query.map(str::to_string),
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn ctx(now_ms: i64, recv: Option<u64>) -> SignContext {
        SignContext {
            now_ms,
            nonce: 0,
            random_nonce: [0; 16],
            environment: Environment::Production,
            host: "api.binance.com".into(),
            recv_window_ms: recv,
        }
    }

    fn hmac_creds() -> ApiCredentials {
        ApiCredentials {
            api_key: SecretString::from(
                "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
            ),
            api_secret: Some(SecretString::from(
                "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
            )),
            passphrase: None,
            private_key: None,
        }
    }

    /// Binance docs, "SIGNED endpoint examples for POST /api/v3/order - HMAC Keys".
    #[test]
    fn hmac_kat_from_binance_docs() {
        let sig = Signer::Hmac("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j")
            .sign(b"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559");
        assert_eq!(
            sig,
            "c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"
        );
        // Non-ASCII symbol example (percent-encoded payload).
        let sig = Signer::Hmac("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j")
            .sign(b"symbol=%EF%BC%91%EF%BC%92%EF%BC%93%EF%BC%94%EF%BC%95%EF%BC%96&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559");
        assert_eq!(
            sig,
            "e1353ec6b14d888f1164ae9af8228a3dbd508bc82eb867db8ab6046442f33ef3"
        );
    }

    /// Binance docs example 3: params split between query and body; the payload is the two
    /// concatenated without `&`.
    #[test]
    fn hmac_kat_query_and_body_concatenated() {
        let sig = Signer::Hmac("NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j")
            .sign(b"symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTCquantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559");
        assert_eq!(
            sig,
            "0fd168b8ddb4876a0358a8d14d0c9f3da0e9b20c5d52b2a00fcf7d1c602f9a77"
        );
    }

    #[test]
    fn signs_docs_example_through_the_trait() {
        // The docs put timestamp last; a client sending it that way gets it re-stamped
        // first (CCXT order) with the same time, which Binance accepts equally.
        let mut r = req(
            Method::POST,
            "/api/v3/order",
            Some("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1&signature=bogus"),
            "",
        );
        r.headers
            .insert("x-mbx-apikey", "placeholder".parse().unwrap());
        Binance.strip_auth(&mut r);
        assert_eq!(
            r.query.as_deref(),
            Some("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000")
        );
        assert!(r.headers.get("x-mbx-apikey").is_none());
        Binance
            .sign(&mut r, &hmac_creds(), &ctx(1499827319559, Some(60000)))
            .unwrap();
        let q = r.query.unwrap();
        let expected_payload = "timestamp=1499827319559&symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000";
        let sig = util::hex_lower(&util::hmac_sha256(
            b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
            expected_payload.as_bytes(),
        ));
        // recvWindow from the client is kept; the context's default is not added.
        assert_eq!(q, format!("{expected_payload}&signature={sig}"));
        assert_eq!(
            r.headers["x-mbx-apikey"],
            "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
        );
        assert!(r.body.is_empty());
    }

    #[test]
    fn post_body_gets_timestamp_signature_and_recv_window() {
        let mut r = req(
            Method::POST,
            "/api/v3/order",
            None,
            "timestamp=5&symbol=BTCUSDT&side=SELL&type=MARKET&quantity=1&signature=x",
        );
        Binance.strip_auth(&mut r);
        assert_eq!(
            &r.body[..],
            b"symbol=BTCUSDT&side=SELL&type=MARKET&quantity=1"
        );
        Binance
            .sign(&mut r, &hmac_creds(), &ctx(1000, Some(5000)))
            .unwrap();
        let body = std::str::from_utf8(&r.body).unwrap();
        let (signed, sig) = body.rsplit_once("&signature=").unwrap();
        assert_eq!(
            signed,
            "timestamp=1000&symbol=BTCUSDT&side=SELL&type=MARKET&quantity=1&recvWindow=5000"
        );
        let want = util::hex_lower(&util::hmac_sha256(
            b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
            signed.as_bytes(),
        ));
        assert_eq!(sig, want);
        assert_eq!(r.headers[http::header::CONTENT_TYPE], FORM);
        assert_eq!(r.query, None);
    }

    #[test]
    fn query_plus_body_payload_has_no_separator() {
        let mut r = req(
            Method::POST,
            "/api/v3/order",
            Some("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC"),
            "quantity=1&price=0.1&recvWindow=5000",
        );
        Binance
            .sign(&mut r, &hmac_creds(), &ctx(1499827319559, None))
            .unwrap();
        let body = std::str::from_utf8(&r.body).unwrap();
        let (signed_body, sig) = body.rsplit_once("&signature=").unwrap();
        assert_eq!(
            signed_body,
            "timestamp=1499827319559&quantity=1&price=0.1&recvWindow=5000"
        );
        let payload = format!("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC{signed_body}");
        let want = util::hex_lower(&util::hmac_sha256(
            b"NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
            payload.as_bytes(),
        ));
        assert_eq!(sig, want);
        assert_eq!(
            r.query.as_deref(),
            Some("symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC")
        );
    }

    #[test]
    fn user_data_stream_gets_only_the_key_header() {
        let mut r = req(Method::POST, "/api/v3/userDataStream", None, "");
        Binance.sign(&mut r, &hmac_creds(), &ctx(1, None)).unwrap();
        assert!(r.body.is_empty());
        assert_eq!(r.query, None);
        assert!(r.headers.contains_key("x-mbx-apikey"));
        // API-key-only needs no secret at all.
        let creds = ApiCredentials {
            api_key: SecretString::from("k"),
            api_secret: None,
            passphrase: None,
            private_key: None,
        };
        let mut r = req(
            Method::PUT,
            "/api/v3/userDataStream",
            Some("listenKey=abc"),
            "",
        );
        Binance.sign(&mut r, &creds, &ctx(1, None)).unwrap();
        assert_eq!(r.query.as_deref(), Some("listenKey=abc"));
    }

    #[test]
    fn missing_secret_and_bad_pem_are_errors() {
        let mut creds = hmac_creds();
        creds.api_secret = None;
        let mut r = req(Method::GET, "/api/v3/account", None, "");
        assert_eq!(
            Binance.sign(&mut r, &creds, &ctx(1, None)),
            Err(SignError::MissingSecret)
        );
        creds.private_key = Some(SecretString::from(
            "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
        ));
        assert_eq!(
            Binance.sign(&mut r, &creds, &ctx(1, None)),
            Err(SignError::InvalidPrivateKey)
        );
    }

    #[test]
    fn json_body_is_refused() {
        let mut r = req(
            Method::POST,
            "/api/v3/order",
            None,
            "{\"symbol\":\"BTCUSDT\"}",
        );
        r.headers.insert(
            http::header::CONTENT_TYPE,
            "application/json".parse().unwrap(),
        );
        assert!(matches!(
            Binance.sign(&mut r, &hmac_creds(), &ctx(1, None)),
            Err(SignError::InvalidRequest(_))
        ));
    }

    /// Ed25519 with the RFC 8032 §7.1 TEST 1 key (wrapped in PKCS#8): Ed25519 is
    /// deterministic, so the signature of the empty message is the RFC's.
    #[test]
    fn ed25519_rfc8032_kat() {
        use ed25519_dalek::pkcs8::EncodePrivateKey as _;
        let seed: [u8; 32] =
            hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
                .unwrap()
                .try_into()
                .unwrap();
        let key = ed25519_dalek::SigningKey::from_bytes(&seed);
        let pem = key
            .to_pkcs8_pem(ed25519_dalek::pkcs8::spki::der::pem::LineEnding::LF)
            .unwrap();
        let signer = Signer::from_pem(&pem).unwrap();
        let want = util::percent_encode(&util::b64(
            &hex::decode("e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b").unwrap(),
        ));
        assert_eq!(signer.sign(b""), want);
    }

    #[test]
    fn rsa_pkcs1_pem_signs_and_verifies() {
        use rsa::pkcs1::EncodeRsaPrivateKey as _;
        use rsa::signature::Verifier as _;
        let key = rsa::RsaPrivateKey::new(&mut rand::thread_rng(), 2048).unwrap();
        let pem = key.to_pkcs1_pem(rsa::pkcs8::LineEnding::LF).unwrap();
        let signer = Signer::from_pem(&pem).unwrap();
        let sig = signer.sign(b"symbol=BTCUSDT&timestamp=1");
        let raw = util::b64_decode(
            &percent_encoding::percent_decode_str(&sig)
                .decode_utf8()
                .unwrap(),
        )
        .unwrap();
        let vk = rsa::pkcs1v15::VerifyingKey::<sha2::Sha256>::new(key.to_public_key());
        vk.verify(
            b"symbol=BTCUSDT&timestamp=1",
            &rsa::pkcs1v15::Signature::try_from(raw.as_slice()).unwrap(),
        )
        .unwrap();
    }

    #[test]
    fn classification_table() {
        use EndpointClass as C;
        let cases: &[(Method, &str, EndpointClass)] = &[
            (Method::POST, "/api/v3/order", C::Trade),
            (Method::DELETE, "/api/v3/order", C::Trade),
            (Method::GET, "/api/v3/order", C::Read),
            (Method::POST, "/api/v3/order/test", C::Trade),
            (Method::POST, "/api/v3/order/cancelReplace", C::Trade),
            (Method::PUT, "/api/v3/order/amend/keepPriority", C::Trade),
            (Method::POST, "/api/v3/order/oco", C::Trade),
            (Method::POST, "/api/v3/orderList/oco", C::Trade),
            (Method::POST, "/api/v3/orderList/oto", C::Trade),
            (Method::POST, "/api/v3/orderList/otoco", C::Trade),
            (Method::DELETE, "/api/v3/orderList", C::Trade),
            (Method::GET, "/api/v3/orderList", C::Read),
            (Method::GET, "/api/v3/allOrderList", C::Read),
            (Method::GET, "/api/v3/openOrderList", C::Read),
            (Method::DELETE, "/api/v3/openOrders", C::Trade),
            (Method::GET, "/api/v3/openOrders", C::Read),
            (Method::GET, "/api/v3/allOrders", C::Read),
            (Method::GET, "/api/v3/account", C::Read),
            (Method::GET, "/api/v3/myTrades", C::Read),
            (Method::GET, "/api/v3/rateLimit/order", C::Read),
            (Method::POST, "/api/v3/sor/order", C::Trade),
            (Method::POST, "/api/v3/sor/order/test", C::Trade),
            (Method::POST, "/api/v3/userDataStream", C::Read),
            (Method::PUT, "/api/v3/userDataStream", C::Read),
            (Method::DELETE, "/api/v3/userDataStream", C::Read),
            (Method::GET, "/api/v3/ticker/price", C::Public),
            (Method::GET, "/api/v3/ticker/24hr", C::Public),
            (Method::GET, "/api/v3/ticker", C::Public),
            (Method::GET, "/api/v3/depth", C::Public),
            (Method::GET, "/api/v3/klines", C::Public),
            (Method::GET, "/api/v3/exchangeInfo", C::Public),
            (Method::GET, "/api/v3/time", C::Public),
            (Method::GET, "/api/v3/ping", C::Public),
            (Method::GET, "/api/v3/avgPrice", C::Public),
            (Method::POST, "/sapi/v1/capital/withdraw/apply", C::Withdraw),
            (Method::GET, "/sapi/v1/capital/withdraw/apply", C::Withdraw),
            (
                Method::POST,
                "/sapi/v1/localentity/withdraw/apply",
                C::Withdraw,
            ),
            (Method::POST, "/sapi/v1/giftcard/createCode", C::Withdraw),
            (Method::GET, "/sapi/v1/capital/deposit/address", C::Read),
            (Method::GET, "/sapi/v1/capital/deposit/hisrec", C::Read),
            (Method::GET, "/sapi/v1/capital/withdraw/history", C::Read),
            (Method::GET, "/sapi/v1/capital/config/getall", C::Read),
            (Method::POST, "/sapi/v1/asset/transfer", C::Transfer),
            (Method::GET, "/sapi/v1/asset/transfer", C::Read),
            (Method::POST, "/sapi/v1/futures/transfer", C::Transfer),
            (Method::POST, "/sapi/v1/margin/transfer", C::Transfer),
            (
                Method::POST,
                "/sapi/v1/margin/isolated/transfer",
                C::Transfer,
            ),
            (Method::POST, "/sapi/v1/margin/order", C::Trade),
            (Method::DELETE, "/sapi/v1/margin/order", C::Trade),
            (Method::POST, "/sapi/v1/margin/borrow-repay", C::Trade),
            (Method::POST, "/sapi/v1/margin/loan", C::Trade),
            (Method::POST, "/sapi/v1/margin/repay", C::Trade),
            (Method::GET, "/sapi/v1/margin/account", C::Read),
            (
                Method::POST,
                "/sapi/v1/sub-account/universalTransfer",
                C::SubAccount,
            ),
            (Method::GET, "/sapi/v1/sub-account/list", C::SubAccount),
            (
                Method::POST,
                "/sapi/v2/sub-account/subAccountApi/ipRestriction",
                C::Manage,
            ),
            (
                Method::POST,
                "/sapi/v1/sub-account/subAccountApi/ipRestriction",
                C::Manage,
            ),
            (Method::GET, "/sapi/v1/account/apiRestrictions", C::Read),
            (
                Method::POST,
                "/sapi/v1/account/apiRestrictions/ipRestriction",
                C::Manage,
            ),
            (
                Method::POST,
                "/sapi/v1/account/apiRestrictions/ipRestriction/ipList",
                C::Manage,
            ),
            (
                Method::POST,
                "/sapi/v1/account/enableFastWithdrawSwitch",
                C::Manage,
            ),
            (Method::GET, "/sapi/v1/system/status", C::Public),
            (Method::POST, "/sapi/v1/userDataStream", C::Read),
            // fail closed
            (Method::GET, "/sapi/v1/foo", C::Unknown),
            (Method::POST, "/sapi/v1/foo/withdraw", C::Withdraw),
            (Method::POST, "/api/v3/ticker/price", C::Unknown),
            (Method::POST, "/api/v3/somethingNew", C::Unknown),
            (
                Method::POST,
                "/sapi/v1/capital/withdraw%2Fapply",
                C::Unknown,
            ),
            (
                Method::POST,
                "/sapi/v1/capital/./withdraw/apply",
                C::Unknown,
            ),
            // canonicalisation
            (
                Method::POST,
                "/SAPI/v1/Capital/Withdraw/Apply/",
                C::Withdraw,
            ),
            (
                Method::POST,
                "//sapi//v1/capital/withdraw/apply",
                C::Withdraw,
            ),
            (Method::GET, "/api/v3/ORDER", C::Read),
        ];
        for (m, p, want) in cases {
            assert_eq!(Binance.classify(m, p), *want, "{m} {p}");
        }
    }

    /// Every entry's own path classifies as the entry says (nothing is shadowed by an
    /// earlier wildcard), and withdrawal-like paths are never read/trade/public.
    pub(crate) fn check_table(ex: &dyn Exchange, routes: &[Route]) {
        for (on, pat, class) in routes {
            let path = match pat.strip_suffix('*') {
                Some(prefix) => format!("{prefix}x"),
                None => pat.to_string(),
            };
            for m in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
                if !on.matches(&m) {
                    continue;
                }
                let got = ex.classify(&m, &path);
                assert_eq!(got, *class, "{m} {path}");
                let lower = path.to_ascii_lowercase();
                if lower.contains("withdraw") && !lower.contains("fastwithdrawswitch") {
                    assert!(
                        !matches!(
                            got,
                            EndpointClass::Read | EndpointClass::Trade | EndpointClass::Public
                        ) || (m == Method::GET && !lower.ends_with("/apply")),
                        "{m} {path} -> {got:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn every_table_entry_classifies_as_listed() {
        check_table(&Binance, SPOT_ROUTES);
        // POST to a read-only wallet path is not in the table and mentions withdrawals:
        // classified as a withdrawal (whose intent then fails to parse), never read.
        assert_eq!(
            Binance.classify(&Method::POST, "/sapi/v1/capital/withdraw/history"),
            EndpointClass::Withdraw
        );
    }

    #[test]
    fn parses_orders() {
        let r = req(
            Method::POST,
            "/api/v3/order",
            None,
            "timestamp=1&symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.5&price=30000",
        );
        let RequestIntent::Orders { orders } =
            Binance.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        let o = &orders[0];
        assert_eq!(o.symbol, "BTCUSDT");
        assert_eq!(o.base.as_deref(), Some("BTC"));
        assert_eq!(o.quote.as_deref(), Some("USDT"));
        assert_eq!(o.side, Some(Side::Buy));
        assert_eq!(o.order_type.as_deref(), Some("limit"));
        assert_eq!(o.quantity, Some(Decimal::new(5, 1)));
        assert_eq!(o.price, Some(Decimal::new(30000, 0)));
        assert!(!o.is_cancel);

        let r = req(
            Method::POST,
            "/api/v3/order",
            Some("symbol=ETHUSDT&side=BUY&type=MARKET&quoteOrderQty=100"),
            "",
        );
        let RequestIntent::Orders { orders } =
            Binance.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(orders[0].quote_amount, Some(Decimal::new(100, 0)));
        assert_eq!(orders[0].quantity, None);

        let r = req(
            Method::DELETE,
            "/api/v3/order",
            Some("symbol=BTCUSDT&orderId=1"),
            "",
        );
        let RequestIntent::Orders { orders } =
            Binance.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert!(orders[0].is_cancel);

        let r = req(
            Method::POST,
            "/api/v3/orderList/oto",
            None,
            "symbol=BTCUSDT&workingType=LIMIT&workingSide=BUY&workingPrice=100&workingQuantity=2&pendingType=LIMIT_MAKER&pendingSide=SELL&pendingPrice=120&pendingQuantity=2",
        );
        let RequestIntent::Orders { orders } =
            Binance.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(orders.len(), 2);
        assert_eq!(orders[1].side, Some(Side::Sell));
        assert_eq!(orders[1].price, Some(Decimal::new(120, 0)));

        let r = req(
            Method::POST,
            "/api/v3/orderList/oco",
            None,
            "symbol=BTCUSDT&side=SELL&quantity=1&aboveType=LIMIT_MAKER&abovePrice=110&belowType=STOP_LOSS&belowStopPrice=90",
        );
        let RequestIntent::Orders { orders } =
            Binance.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(orders[0].price, Some(Decimal::new(110, 0)));
    }

    #[test]
    fn unparsable_orders_are_errors() {
        for body in [
            "side=BUY&type=LIMIT&quantity=1",       // no symbol
            "symbol=BTCUSDT&type=LIMIT&quantity=1", // no side
            "symbol=BTCUSDT&side=HOLD&quantity=1",
            "symbol=BTCUSDT&side=BUY&quantity=lots",
        ] {
            let r = req(Method::POST, "/api/v3/order", None, body);
            assert!(
                Binance.parse_intent(EndpointClass::Trade, &r).is_err(),
                "{body}"
            );
        }
        let r = req(
            Method::POST,
            "/sapi/v1/capital/withdraw/apply",
            None,
            "coin=BTC&amount=1",
        );
        assert!(Binance.parse_intent(EndpointClass::Withdraw, &r).is_err());
    }

    #[test]
    fn parses_withdrawals_and_transfers() {
        let r = req(
            Method::POST,
            "/sapi/v1/capital/withdraw/apply",
            None,
            "timestamp=1&coin=XRP&amount=25.5&address=rAddr&addressTag=1234&network=XRP&signature=s",
        );
        let RequestIntent::Withdrawal(w) =
            Binance.parse_intent(EndpointClass::Withdraw, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(w.asset, "XRP");
        assert_eq!(w.amount, Decimal::new(255, 1));
        assert_eq!(w.address, "rAddr");
        assert_eq!(w.network.as_deref(), Some("XRP"));
        assert_eq!(w.tag.as_deref(), Some("1234"));

        let r = req(
            Method::POST,
            "/sapi/v1/asset/transfer",
            None,
            "type=MAIN_UMFUTURE&asset=USDT&amount=10",
        );
        assert_eq!(
            Binance.parse_intent(EndpointClass::Transfer, &r).unwrap(),
            RequestIntent::Transfer {
                asset: "USDT".into(),
                amount: Some(Decimal::new(10, 0))
            }
        );
    }

    #[test]
    fn balances_key_check_rate_limit_errors() {
        let body = br#"{"balances":[{"asset":"BTC","free":"0.5","locked":"0.1"},{"asset":"ETH","free":"0.00000000","locked":"0.00000000"}]}"#;
        let b = Binance.parse_balances(body).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].total, Decimal::new(6, 1));

        let kc = Binance
            .parse_key_check(br#"{"ipRestrict":false,"createTime":1698645219000,"enableReading":true,"enableWithdrawals":true,"enableInternalTransfer":false,"enableMargin":false,"enableFutures":false,"permitsUniversalTransfer":false,"enableVanillaOptions":false,"enableSpotAndMarginTrading":true,"enablePortfolioMarginTrading":false,"tradingAuthorityExpirationTime":1628985600000}"#)
            .unwrap();
        assert!(kc.can_read && kc.can_trade && kc.can_withdraw && !kc.can_transfer);
        assert_eq!(kc.expires_at_ms, Some(1628985600000));
        assert!(kc.warnings.iter().any(|w| w == "withdrawals enabled"));
        assert!(kc.warnings.iter().any(|w| w == "no IP restriction"));

        let mut h = HeaderMap::new();
        h.insert("x-mbx-used-weight-1m", "1200".parse().unwrap());
        let rl = Binance.rate_limit(&h).unwrap();
        assert_eq!(
            (rl.used, rl.limit, rl.remaining),
            (Some(1200), Some(6000), Some(4800))
        );
        assert_eq!(Binance.rate_limit(&HeaderMap::new()), None);

        let e = |s, b: &str| Binance.classify_error(s, b.as_bytes());
        assert_eq!(
            e(
                401,
                r#"{"code":-2015,"msg":"Invalid API-key, IP, or permissions for action."}"#
            ),
            Some(ErrorKind::InvalidKey)
        );
        assert_eq!(
            e(
                400,
                r#"{"code":-1022,"msg":"Signature for this request is not valid."}"#
            ),
            Some(ErrorKind::BadSignature)
        );
        assert_eq!(
            e(
                400,
                r#"{"code":-1021,"msg":"Timestamp for this request is outside of the recvWindow."}"#
            ),
            Some(ErrorKind::TimestampOutOfWindow)
        );
        assert_eq!(e(429, ""), Some(ErrorKind::RateLimited));
        assert_eq!(e(418, ""), Some(ErrorKind::RateLimited));
        assert_eq!(
            e(
                400,
                r#"{"code":-2010,"msg":"Account has insufficient balance for requested action."}"#
            ),
            Some(ErrorKind::InsufficientBalance)
        );
        assert_eq!(e(200, r#"{"balances":[]}"#), None);
        assert_eq!(e(500, "garbage"), Some(ErrorKind::Unknown));
    }

    fn spot_orders(path: &str, body: &str) -> Result<Vec<OrderIntent>, ParseError> {
        match Binance.parse_intent(EndpointClass::Trade, &req(Method::POST, path, None, body))? {
            RequestIntent::Orders { orders } => Ok(orders),
            other => panic!("{other:?}"),
        }
    }

    // A margin loan is a `Borrow` (a repayment is nothing to check); a margin order whose
    // `sideEffectType` borrows says so.
    #[test]
    fn loans_and_borrowing_orders_are_marked() {
        let parse = |path: &str, body: &str| {
            Binance
                .parse_intent(EndpointClass::Trade, &req(Method::POST, path, None, body))
                .unwrap()
        };
        for (path, body) in [
            (
                "/sapi/v1/margin/borrow-repay",
                "asset=USDT&amount=1000&type=BORROW&isIsolated=FALSE",
            ),
            ("/sapi/v1/margin/borrow-repay", "asset=USDT&amount=1000"),
            ("/sapi/v1/margin/loan", "asset=USDT&amount=1000"),
        ] {
            assert!(
                matches!(parse(path, body), RequestIntent::Borrow { ref asset, .. } if asset == "USDT"),
                "{path} {body}"
            );
        }
        assert_eq!(
            parse(
                "/sapi/v1/margin/borrow-repay",
                "asset=USDT&amount=1000&type=REPAY"
            ),
            RequestIntent::None
        );
        let order = "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=1";
        for (effect, borrows) in [
            ("", false),
            ("&sideEffectType=NO_SIDE_EFFECT", false),
            ("&sideEffectType=AUTO_REPAY", false),
            ("&sideEffectType=MARGIN_BUY", true),
            ("&sideEffectType=AUTO_BORROW_REPAY", true),
            ("&sideEffectType=SOMETHING_NEW", true),
        ] {
            let o = spot_orders("/sapi/v1/margin/order", &format!("{order}{effect}")).unwrap();
            assert_eq!(o[0].borrows, borrows, "{effect}");
        }
    }

    #[test]
    fn only_limit_types_price_at_price() {
        let one = |t: &str, extra: &str| {
            spot_orders(
                "/api/v3/order",
                &format!("symbol=BTCUSDT&side=BUY&type={t}&quantity=100&price=0.01{extra}"),
            )
            .unwrap()
            .remove(0)
        };
        for t in ["MARKET", "STOP_LOSS", "TAKE_PROFIT"] {
            let o = one(t, "&stopPrice=1");
            assert_eq!(o.price, Some(Decimal::new(1, 2)));
            assert!(!o.price_is_limit, "{t}");
        }
        for t in [
            "LIMIT",
            "LIMIT_MAKER",
            "STOP_LOSS_LIMIT",
            "TAKE_PROFIT_LIMIT",
        ] {
            assert!(one(t, "").price_is_limit, "{t}");
        }
        // A pegged order takes its price from the book.
        assert!(!one("LIMIT", "&pegPriceType=PRIMARY_PEG").price_is_limit);

        // OCO: a limit only when both legs are.
        let oco = |legs: &str| {
            spot_orders(
                "/api/v3/orderList/oco",
                &format!("symbol=BTCUSDT&side=SELL&quantity=1&aboveType=LIMIT_MAKER&abovePrice=110{legs}"),
            )
            .unwrap()
            .remove(0)
        };
        assert!(!oco("&belowType=STOP_LOSS&belowStopPrice=90").price_is_limit);
        assert!(oco("&belowType=STOP_LOSS_LIMIT&belowStopPrice=90&belowPrice=89").price_is_limit);
        let old = |extra: &str| {
            spot_orders(
                "/api/v3/order/oco",
                &format!("symbol=BTCUSDT&side=SELL&quantity=1&price=110&stopPrice=90{extra}"),
            )
            .unwrap()
            .remove(0)
        };
        assert!(!old("").price_is_limit);
        assert!(old("&stopLimitPrice=89&stopLimitTimeInForce=GTC").price_is_limit);
    }

    #[test]
    fn spot_has_no_reduce_only_and_booleans_are_exact() {
        let o = spot_orders(
            "/api/v3/order",
            "symbol=BTCUSDT&side=SELL&type=MARKET&quantity=100&reduceOnly=true",
        )
        .unwrap();
        assert!(!o[0].reduce_only);
        assert_eq!(parse_bool("reduceOnly", "true"), Ok(true));
        assert_eq!(parse_bool("reduceOnly", "false"), Ok(false));
        for bad in ["TRUE", "True", "1", "yes"] {
            assert!(parse_bool("reduceOnly", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn repeated_parameters_are_refused() {
        assert!(spot_orders(
            "/api/v3/order",
            "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.001&quantity=1000&price=1",
        )
        .is_err());
        // In the query and in the body: Binance reads both.
        let r = req(
            Method::POST,
            "/api/v3/order",
            Some("quantity=1000"),
            "symbol=BTCUSDT&side=BUY&type=LIMIT&quantity=0.001&price=1",
        );
        assert!(Binance.parse_intent(EndpointClass::Trade, &r).is_err());
        let w = req(
            Method::POST,
            "/sapi/v1/capital/withdraw/apply",
            Some("address=attacker"),
            "coin=BTC&amount=1&address=allowed",
        );
        assert!(Binance.parse_intent(EndpointClass::Withdraw, &w).is_err());
    }
}
