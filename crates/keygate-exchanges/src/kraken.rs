//! Kraken spot REST API (<https://docs.kraken.com/api/docs/guides/spot-rest-auth>).
//!
//! Signing: `API-Sign` = base64 HMAC-SHA512(base64decode(secret), path + SHA256(nonce +
//! postdata)); `nonce` is the first field of the body, as CCXT sends it. The nonce comes
//! from [`SignContext::nonce`] (the caller keeps it strictly increasing per key across
//! restarts and instances); a client's own `nonce` is stripped. JSON bodies (`AddOrderBatch`,
//! `CancelOrderBatch`) get the nonce as their first member.
//!
//! Kraken has no endpoint that reports an API key's permissions or IP restriction; the key
//! check reads balances (proving the key works and can query funds) and says the rest is
//! unknown. Kraken spot has no testnet. REST responses carry no rate-limit headers.

use http::{HeaderMap, Method};
use rust_decimal::Decimal;
use secrecy::ExposeSecret;
use serde_json::Value;

use crate::util::{self, RouteRow};
use crate::*;

/// `kraken` API.
pub struct Kraken;

use EndpointClass::{Public, Read, SubAccount, Trade, Transfer as Xfer, Withdraw as Wd};

/// Endpoint classes, first match wins. Every private method is `POST /0/private/<Method>`.
/// Earn allocation, exports and anything else not listed is `Unknown`.
pub const ROUTES: &[RouteRow] = &[
    ("GET|POST", "/0/public/**", Public),
    // Account data.
    ("POST", "/0/private/Balance", Read),
    ("POST", "/0/private/BalanceEx", Read),
    ("POST", "/0/private/TradeBalance", Read),
    ("POST", "/0/private/OpenOrders", Read),
    ("POST", "/0/private/ClosedOrders", Read),
    ("POST", "/0/private/QueryOrders", Read),
    ("POST", "/0/private/OrderAmends", Read),
    ("POST", "/0/private/TradesHistory", Read),
    ("POST", "/0/private/QueryTrades", Read),
    ("POST", "/0/private/OpenPositions", Read),
    ("POST", "/0/private/Ledgers", Read),
    ("POST", "/0/private/QueryLedgers", Read),
    ("POST", "/0/private/TradeVolume", Read),
    ("POST", "/0/private/CreditLines", Read),
    ("POST", "/0/private/GetWebSocketsToken", Read),
    // Trading.
    ("POST", "/0/private/AddOrder", Trade),
    ("POST", "/0/private/AddOrderBatch", Trade),
    ("POST", "/0/private/EditOrder", Trade),
    ("POST", "/0/private/AmendOrder", Trade),
    ("POST", "/0/private/CancelOrder", Trade),
    ("POST", "/0/private/CancelAll", Trade),
    ("POST", "/0/private/CancelAllOrdersAfter", Trade),
    ("POST", "/0/private/CancelOrderBatch", Trade),
    // Funding: reads (creating a deposit address with `new=true` cannot move funds out).
    ("POST", "/0/private/DepositMethods", Read),
    ("POST", "/0/private/DepositAddresses", Read),
    ("POST", "/0/private/DepositStatus", Read),
    ("POST", "/0/private/WithdrawMethods", Read),
    ("POST", "/0/private/WithdrawAddresses", Read),
    ("POST", "/0/private/WithdrawInfo", Read),
    ("POST", "/0/private/WithdrawStatus", Read),
    // Funding: moving money out, never read/trade.
    ("POST", "/0/private/Withdraw", Wd),
    ("POST", "/0/private/WithdrawCancel", Wd),
    // Spot wallet -> Kraken Futures wallet of the same user.
    ("POST", "/0/private/WalletTransfer", Xfer),
    // Sub-accounts (institutional).
    ("POST", "/0/private/CreateSubaccount", SubAccount),
    ("POST", "/0/private/AccountTransfer", SubAccount),
    // Earn: listing only.
    ("POST", "/0/private/Earn/Strategies", Read),
    ("POST", "/0/private/Earn/Allocations", Read),
    ("POST", "/0/private/Earn/AllocateStatus", Read),
    ("POST", "/0/private/Earn/DeallocateStatus", Read),
];

impl Exchange for Kraken {
    fn id(&self) -> ExchangeId {
        ExchangeId::Kraken
    }

    fn hosts(&self) -> Hosts {
        Hosts {
            production: "https://api.kraken.com",
            testnet: None,
        }
    }

    fn strip_auth(&self, req: &mut OutgoingRequest) {
        util::remove_headers(&mut req.headers, &["api-key", "api-sign"], &[]);
        req.body = match body_kind(req) {
            BodyKind::Json => strip_json_nonce(&req.body).into(),
            BodyKind::Form => {
                let text = String::from_utf8_lossy(&req.body);
                let kept: Vec<_> = util::split_raw_pairs(&text)
                    .into_iter()
                    .filter(|(k, _)| *k != "nonce")
                    .collect();
                util::join_raw_pairs(kept).into()
            }
        };
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
        if req.path.starts_with("/0/public/") {
            return Ok(());
        }
        let secret = creds.api_secret.as_ref().ok_or(SignError::MissingSecret)?;
        let secret =
            util::b64_decode(secret.expose_secret().trim()).ok_or(SignError::InvalidPrivateKey)?;
        let nonce = ctx.nonce.to_string();
        let kind = body_kind(req);
        let body = match kind {
            BodyKind::Json => {
                let rest = String::from_utf8_lossy(&req.body);
                let inner = rest
                    .trim()
                    .trim_start_matches('{')
                    .trim_end_matches('}')
                    .trim();
                if inner.is_empty() {
                    format!("{{\"nonce\":\"{nonce}\"}}")
                } else {
                    format!("{{\"nonce\":\"{nonce}\",{inner}}}")
                }
            }
            BodyKind::Form if req.body.is_empty() => format!("nonce={nonce}"),
            BodyKind::Form => format!("nonce={nonce}&{}", String::from_utf8_lossy(&req.body)),
        };
        let mut message = req.path.as_bytes().to_vec();
        message.extend_from_slice(&util::sha256(format!("{nonce}{body}").as_bytes()));
        let signature = util::b64(&util::hmac_sha512(&secret, &message));

        req.body = body.into();
        let key = http::HeaderValue::from_str(creds.api_key.expose_secret())
            .map_err(|_| SignError::InvalidRequest("api key is not valid header text"))?;
        req.headers
            .insert(http::HeaderName::from_static("api-key"), key);
        util::set_header(&mut req.headers, "api-sign", &signature);
        // the type keygate read the body as, whatever the client named: a form type beside
        // a JSON-looking body would have Kraken read other fields (another withdrawal key,
        // another amount) than keygate checked
        let ct = match kind {
            BodyKind::Json => "application/json",
            BodyKind::Form => "application/x-www-form-urlencoded",
        };
        util::set_header(&mut req.headers, "content-type", ct);
        Ok(())
    }

    fn parse_intent(
        &self,
        class: EndpointClass,
        req: &OutgoingRequest,
    ) -> Result<RequestIntent, ParseError> {
        let method = req
            .path
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or("");
        // Kraken's private calls carry everything in the POST body
        util::no_query_beside_the_body(req)?;
        let fields = Fields::of(req)?;
        match (class, method) {
            (EndpointClass::Trade, "AddOrder") => Ok(RequestIntent::Orders {
                orders: vec![order(&fields, None)?],
            }),
            (EndpointClass::Trade, "AddOrderBatch") => {
                let pair = fields
                    .get("pair")?
                    .ok_or(ParseError::MissingField("pair"))?;
                let orders = fields.orders()?;
                if orders.is_empty() {
                    return Err(ParseError::MissingField("orders"));
                }
                let orders = orders
                    .iter()
                    .map(|o| order(o, Some(&pair)))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(RequestIntent::Orders { orders })
            }
            // Amends can raise size: not a cancel. Each is read from the fields Kraken reads
            // for it, and the other's are refused (Kraken ignores them: checked instead,
            // they would let a large amendment pass as a small one).
            (EndpointClass::Trade, "EditOrder") => {
                fields.refuse(&["order_qty", "limit_price"])?;
                let pair = fields
                    .get("pair")?
                    .ok_or(ParseError::MissingField("pair"))?;
                let mut o = OrderIntent::new(pair.clone());
                (o.base, o.quote) = split_pair(&pair);
                o.aliases = pair_aliases(&o);
                o.quantity = fields.decimal("volume")?;
                o.price = fields.decimal("price")?;
                Ok(RequestIntent::Orders { orders: vec![o] })
            }
            (EndpointClass::Trade, "AmendOrder") => {
                // AmendOrder names no pair (the order's own applies): a `pair` sent along
                // would be the caller's word for it, so it is refused, and the order has
                // no symbol, which policy refuses (as Coinbase's edits).
                fields.refuse(&["pair", "volume", "price"])?;
                let mut o = OrderIntent::new("");
                o.quantity = fields.decimal("order_qty")?;
                o.price = fields.decimal("limit_price")?;
                Ok(RequestIntent::Orders { orders: vec![o] })
            }
            (
                EndpointClass::Trade,
                "CancelOrder" | "CancelAll" | "CancelAllOrdersAfter" | "CancelOrderBatch",
            ) => {
                let mut o = OrderIntent::new("");
                o.is_cancel = true;
                Ok(RequestIntent::Orders { orders: vec![o] })
            }
            (EndpointClass::Withdraw, "WithdrawCancel") => Ok(RequestIntent::None),
            (EndpointClass::Withdraw, "Withdraw") => {
                // Kraken withdraws to a pre-registered address *name* (`key`); `address`,
                // when given, only makes Kraken check that name's address.
                let key = fields.get("key")?.ok_or(ParseError::MissingField("key"))?;
                Ok(RequestIntent::Withdrawal(WithdrawalIntent {
                    asset: fields
                        .get("asset")?
                        .ok_or(ParseError::MissingField("asset"))?,
                    amount: fields
                        .decimal("amount")?
                        .ok_or(ParseError::MissingField("amount"))?,
                    address: key,
                    network: None,
                    tag: None,
                }))
            }
            (EndpointClass::Transfer | EndpointClass::SubAccount, _) => {
                match fields.get("asset")? {
                    Some(asset) => Ok(RequestIntent::Transfer {
                        asset,
                        amount: fields.decimal("amount")?,
                    }),
                    None if class == EndpointClass::SubAccount => Ok(RequestIntent::None),
                    None => Err(ParseError::MissingField("asset")),
                }
            }
            (EndpointClass::Trade | EndpointClass::Withdraw, _) => {
                Err(ParseError::Malformed("unrecognised endpoint".into()))
            }
            _ => Ok(RequestIntent::None),
        }
    }

    fn balance_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::POST,
            path: "/0/private/BalanceEx",
            query: None,
        }
    }

    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError> {
        let result = ok_result(body)?;
        let map = result
            .as_object()
            .ok_or(ParseError::InvalidValue("result"))?;
        map.iter()
            .map(|(asset, v)| {
                let (total, locked) = match v {
                    // BalanceEx: {"balance": "...", "hold_trade": "..."}
                    Value::Object(o) => (
                        util::json_decimal(
                            "balance",
                            o.get("balance")
                                .ok_or(ParseError::MissingField("balance"))?,
                        )?,
                        util::json_opt_decimal("hold_trade", o.get("hold_trade"))?
                            .unwrap_or_default(),
                    ),
                    // Balance: {"ZUSD": "..."}
                    other => (util::json_decimal("balance", other)?, Decimal::ZERO),
                };
                Ok(Balance {
                    asset: asset.clone(),
                    free: total - locked,
                    locked,
                    total,
                    account_type: Some("spot".into()),
                })
            })
            .collect()
    }

    fn key_check_request(&self) -> PlannedRequest {
        self.balance_request()
    }

    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError> {
        let v = util::json_body(body)?;
        let errors = error_strings(&v);
        let mut check = KeyCheck {
            can_read: errors.is_empty(),
            ..KeyCheck::default()
        };
        if !errors.is_empty() {
            check
                .warnings
                .push(format!("balance query failed: {}", errors.join(", ")));
        }
        check.warnings.push(
            "Kraken does not report key permissions: trade, withdraw and IP restriction unknown"
                .into(),
        );
        Ok(check)
    }

    fn rate_limit(&self, _headers: &HeaderMap) -> Option<RateLimitStatus> {
        // Kraken's REST counter is documented, not reported in headers.
        None
    }

    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind> {
        let errors = serde_json::from_slice::<Value>(body)
            .map(|v| error_strings(&v))
            .unwrap_or_default();
        if errors.is_empty() {
            return match status {
                0..=399 => None,
                429 => Some(ErrorKind::RateLimited),
                401 => Some(ErrorKind::InvalidKey),
                403 => Some(ErrorKind::PermissionDenied),
                _ => Some(ErrorKind::Unknown),
            };
        }
        let kind = errors.iter().find_map(|e| {
            Some(match e.as_str() {
                "EAPI:Invalid key" => ErrorKind::InvalidKey,
                "EAPI:Invalid signature" => ErrorKind::BadSignature,
                "EAPI:Invalid nonce" => ErrorKind::TimestampOutOfWindow,
                "EGeneral:Permission denied" | "EAPI:Feature disabled" => {
                    ErrorKind::PermissionDenied
                }
                "EAPI:Rate limit exceeded"
                | "EOrder:Rate limit exceeded"
                | "EGeneral:Temporary lockout"
                | "EGeneral:Too many requests" => ErrorKind::RateLimited,
                "EOrder:Insufficient funds"
                | "EFunding:Insufficient funds"
                | "EOrder:Insufficient margin" => ErrorKind::InsufficientBalance,
                _ => return None,
            })
        });
        Some(kind.unwrap_or(ErrorKind::Unknown))
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum BodyKind {
    Form,
    Json,
}

fn body_kind(req: &OutgoingRequest) -> BodyKind {
    let ct_json = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("json"));
    let looks_json = req.body.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if ct_json || looks_json {
        BodyKind::Json
    } else {
        BodyKind::Form
    }
}

/// Removes top-level `"nonce"` members from a JSON object, keeping every other byte.
fn strip_json_nonce(body: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(body);
    let t = text.trim();
    let Some(inner) = t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) else {
        return body.to_vec();
    };
    // Split the object's members at top-level commas.
    let mut members = Vec::new();
    let (mut depth, mut in_str, mut esc, mut start) = (0i32, false, false, 0usize);
    for (i, c) in inner.char_indices() {
        if in_str {
            match c {
                _ if esc => esc = false,
                '\\' => esc = true,
                '"' => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            '{' | '[' => depth += 1,
            '}' | ']' => depth -= 1,
            ',' if depth == 0 => {
                members.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    members.push(&inner[start..]);
    let kept: Vec<&str> = members
        .into_iter()
        .filter(|m| {
            let key = m.trim_start();
            !(key.starts_with("\"nonce\"")
                && key["\"nonce\"".len()..].trim_start().starts_with(':'))
        })
        .filter(|m| !m.trim().is_empty())
        .collect();
    format!("{{{}}}", kept.join(",")).into_bytes()
}

/// Decoded request fields, form or JSON.
enum Fields {
    Form(Vec<(String, String)>),
    Json(Value),
}

impl Fields {
    fn of(req: &OutgoingRequest) -> Result<Self, ParseError> {
        Ok(match body_kind(req) {
            BodyKind::Json => Fields::Json(util::json_request_body(&req.body)?),
            BodyKind::Form => Fields::Form(util::decode_pairs(&String::from_utf8_lossy(&req.body))),
        })
    }

    /// The field as text; an error when a form repeats it (a JSON body with a repeated key
    /// is refused when it is parsed).
    fn get(&self, name: &str) -> Result<Option<String>, ParseError> {
        Ok(match self {
            Fields::Form(p) => util::pair(p, name)?.map(str::to_string),
            Fields::Json(v) => match v.get(name) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Number(n)) => Some(n.to_string()),
                Some(Value::Bool(b)) => Some(b.to_string()),
                _ => None,
            },
        })
    }

    /// `Err` when any of `names` is present at all.
    fn refuse(&self, names: &[&'static str]) -> Result<(), ParseError> {
        match self {
            Fields::Form(p) => match names.iter().find(|n| p.iter().any(|(k, _)| k == *n)) {
                Some(n) => Err(ParseError::InvalidValue(n)),
                None => Ok(()),
            },
            Fields::Json(v) => util::json_refuse(v, names),
        }
    }

    fn decimal(&self, name: &'static str) -> Result<Option<Decimal>, ParseError> {
        self.get(name)?
            .filter(|s| !s.is_empty())
            .map(|s| util::parse_decimal(name, &s))
            .transpose()
    }

    /// `orders` of `AddOrderBatch`: a JSON array, or form fields `orders[i][field]`.
    fn orders(&self) -> Result<Vec<Fields>, ParseError> {
        match self {
            Fields::Json(v) => Ok(v
                .get("orders")
                .and_then(Value::as_array)
                .ok_or(ParseError::MissingField("orders"))?
                .iter()
                .map(|o| Fields::Json(o.clone()))
                .collect()),
            Fields::Form(pairs) => {
                let mut out: Vec<Vec<(String, String)>> = Vec::new();
                for (k, v) in pairs {
                    let Some(rest) = k.strip_prefix("orders[") else {
                        continue;
                    };
                    let Some((idx, field)) = rest.split_once("][") else {
                        continue;
                    };
                    let idx: usize = idx
                        .parse()
                        .map_err(|_| ParseError::InvalidValue("orders"))?;
                    if idx > 64 {
                        return Err(ParseError::InvalidValue("orders"));
                    }
                    if out.len() <= idx {
                        out.resize(idx + 1, Vec::new());
                    }
                    out[idx].push((field.trim_end_matches(']').to_string(), v.clone()));
                }
                Ok(out.into_iter().map(Fields::Form).collect())
            }
        }
    }
}

/// Base and quote of a Kraken pair: `XBTUSD`, `XXBTZUSD`, `XBT/USD`, `ETHUSDT`.
/// Every spelling of the order's pair that Kraken accepts: its own asset codes (`XBT`,
/// `XDG`) and their legacy four-letter forms (`XXBT`, `ZUSD`), run together. A symbol
/// list entry written in any of them (`XBTUSD`, `XXBTZUSD`, `XETHZUSD`) then applies to
/// an order sent with another (`BTC/USD`, `ETHUSD`).
fn pair_aliases(o: &OrderIntent) -> Vec<String> {
    let (Some(base), Some(quote)) = (&o.base, &o.quote) else {
        return Vec::new();
    };
    const FIAT: [&str; 7] = ["USD", "EUR", "GBP", "CAD", "JPY", "CHF", "AUD"];
    let spellings = |a: &str| -> Vec<String> {
        let own = match a {
            "BTC" => "XBT",
            "DOGE" => "XDG",
            a => a,
        };
        let legacy = if FIAT.contains(&own) {
            format!("Z{own}")
        } else {
            format!("X{own}")
        };
        let mut v = vec![a.to_string(), own.to_string()];
        if own.len() == 3 {
            v.push(legacy);
        }
        v.dedup();
        v
    };
    let mut out = Vec::new();
    for b in spellings(base) {
        for q in spellings(quote) {
            out.push(format!("{b}{q}"));
        }
    }
    out
}

fn split_pair(pair: &str) -> (Option<String>, Option<String>) {
    let norm = |a: &str| match a {
        "XBT" | "XXBT" => "BTC".to_string(),
        "XDG" | "XXDG" => "DOGE".to_string(),
        a => a.to_string(),
    };
    if let Some((b, q)) = pair.split_once('/') {
        return (Some(norm(b)), Some(norm(q)));
    }
    // Legacy 8-letter names: X<base>Z<fiat> or X<base>X<crypto>.
    if pair.len() == 8
        && pair.is_ascii()
        && pair.starts_with('X')
        && matches!(&pair[4..5], "Z" | "X")
    {
        return (Some(norm(&pair[1..4])), Some(norm(&pair[5..])));
    }
    // Kraken's quote currencies, longer names first (`TUSD` must not eat `XBTUSD`).
    const QUOTES: [&str; 14] = [
        "USDT", "USDC", "PYUSD", "USD", "EUR", "GBP", "CAD", "JPY", "CHF", "AUD", "XBT", "ETH",
        "DAI", "DOT",
    ];
    QUOTES
        .iter()
        .find_map(|q| {
            pair.strip_suffix(q)
                .filter(|b| !b.is_empty())
                .map(|b| (Some(norm(b)), Some(norm(q))))
        })
        .unwrap_or((None, None))
}

/// An absolute price field; `None` when absent, empty or relative (a `+`/`-`/`#` prefix or
/// a `%` suffix makes it an offset from the market or the trigger, not a price).
fn absolute_price(f: &Fields, name: &'static str) -> Result<Option<Decimal>, ParseError> {
    match f.get(name)? {
        // `" +5"` must not read as 5 if Kraken trims it to the offset `+5`
        Some(p) if p.trim() != p => Err(ParseError::InvalidValue(name)),
        Some(p)
            if p.ends_with('%')
                || p.starts_with('+')
                || p.starts_with('-')
                || p.starts_with('#') =>
        {
            Ok(None)
        }
        Some(p) if !p.is_empty() => util::parse_decimal(name, &p).map(Some),
        _ => Ok(None),
    }
}

/// One order of `AddOrder`, or of `AddOrderBatch` (`pair` is then the batch's).
fn order(f: &Fields, pair: Option<&str>) -> Result<OrderIntent, ParseError> {
    let pair = match (pair, f.get("pair")?) {
        (None, own) => own.ok_or(ParseError::MissingField("pair"))?,
        (Some(batch), None) => batch.to_string(),
        (Some(batch), Some(own)) if own == batch => own,
        // Kraken trades the batch's `pair`; an order naming another one is refused rather
        // than checked against the wrong market.
        (Some(_), Some(_)) => return Err(ParseError::InvalidValue("pair")),
    };
    let mut o = OrderIntent::new(pair.clone());
    (o.base, o.quote) = split_pair(&pair);
    o.aliases = pair_aliases(&o);
    o.side = Some(match f.get("type")?.as_deref() {
        Some("buy") => Side::Buy,
        Some("sell") => Side::Sell,
        _ => return Err(ParseError::InvalidValue("type")),
    });
    let order_type = f
        .get("ordertype")?
        .ok_or(ParseError::MissingField("ordertype"))?
        .to_ascii_lowercase();
    let volume = f
        .decimal("volume")?
        .ok_or(ParseError::MissingField("volume"))?;
    // `viqc`: volume in quote currency, which Kraken documents for market buys without
    // leverage only (checked below, once the leverage is read)
    let viqc = f
        .get("oflags")?
        .is_some_and(|fl| fl.split(',').any(|x| x == "viqc"));
    // Which field, if any, is a limit the order executes at (Kraken "Add Order",
    // ordertype): `limit` and `iceberg` at `price`; `stop-loss-limit` and
    // `take-profit-limit` at `price2` (`price` is their trigger). `market`, `stop-loss`,
    // `take-profit` and `trailing-stop` execute at market (`price` is a trigger or an
    // offset); `trailing-stop-limit`'s `price2` is always an offset.
    let (price, is_limit) = match order_type.as_str() {
        "limit" | "iceberg" => (absolute_price(f, "price")?, true),
        "stop-loss-limit" | "take-profit-limit" => (absolute_price(f, "price2")?, true),
        _ => (absolute_price(f, "price")?, false),
    };
    o.price = price;
    o.price_is_limit = is_limit && price.is_some();
    o.order_type = Some(order_type);
    o.leverage = match f.get("leverage")?.as_deref() {
        None | Some("") | Some("none") => None,
        Some(l) => Some(util::parse_decimal(
            "leverage",
            l.split(':').next().unwrap_or(l),
        )?),
    };
    // `reduce_only` reduces a margin position; an order without leverage is a spot order,
    // which has no position to reduce, so the flag earns it no exemption.
    o.reduce_only = o.leverage.is_some() && f.get("reduce_only")?.is_some_and(|r| r == "true");
    // Elsewhere Kraken may ignore `viqc` and read the volume in the base: a 10 BTC order
    // would be checked as 10 USD. Refused rather than guessed.
    if viqc {
        let market_buy = o.side == Some(Side::Buy) && o.order_type.as_deref() == Some("market");
        if !market_buy || o.leverage.is_some() {
            return Err(ParseError::InvalidValue("oflags"));
        }
        o.quote_amount = Some(volume);
    } else {
        o.quantity = Some(volume);
    }
    Ok(o)
}

fn error_strings(v: &Value) -> Vec<String> {
    v.get("error")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn ok_result(body: &[u8]) -> Result<Value, ParseError> {
    let mut v = util::json_body(body)?;
    if !error_strings(&v).is_empty() {
        return Err(ParseError::InvalidValue("error"));
    }
    v.get_mut("result")
        .map(Value::take)
        .ok_or(ParseError::MissingField("result"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use secrecy::SecretString;
    use std::str::FromStr;

    fn req(path: &str, body: &str) -> OutgoingRequest {
        OutgoingRequest {
            method: Method::POST,
            path: path.into(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn creds() -> ApiCredentials {
        ApiCredentials {
            api_key: SecretString::from("CJbfPw4tnbf/9en/ZmpewCTKEwmmzO18LXZcHQcu7HPLWre4l8+V9I3y"),
            api_secret: Some(SecretString::from(
                "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==",
            )),
            passphrase: None,
            private_key: None,
        }
    }

    fn ctx(nonce: u64) -> SignContext {
        SignContext {
            now_ms: 1_616_492_376_594,
            nonce,
            random_nonce: [0; 16],
            environment: Environment::Production,
            host: "api.kraken.com".into(),
            recv_window_ms: None,
        }
    }

    /// Kraken's published example (docs.kraken.com, Spot REST Authentication).
    #[test]
    fn kraken_documented_signature() {
        let mut r = req(
            "/0/private/AddOrder",
            "nonce=1&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25",
        );
        r.headers.insert("api-sign", "client".parse().unwrap());
        Kraken.strip_auth(&mut r);
        assert_eq!(
            &r.body[..],
            b"ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
        );
        assert!(r.headers.get("api-sign").is_none());
        Kraken
            .sign(&mut r, &creds(), &ctx(1_616_492_376_594))
            .unwrap();
        assert_eq!(
            &r.body[..],
            b"nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25"
        );
        assert_eq!(
            r.headers["api-sign"],
            "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
        );
        assert_eq!(
            r.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
    }

    #[test]
    fn json_bodies_get_the_nonce_first() {
        let mut r = req(
            "/0/private/AddOrderBatch",
            r#"{"nonce":"5","orders":[{"type":"buy","ordertype":"limit","volume":"1","price":"2"}],"pair":"XBTUSD"}"#,
        );
        Kraken.strip_auth(&mut r);
        assert_eq!(
            &r.body[..],
            br#"{"orders":[{"type":"buy","ordertype":"limit","volume":"1","price":"2"}],"pair":"XBTUSD"}"#
        );
        Kraken.sign(&mut r, &creds(), &ctx(9)).unwrap();
        assert!(r.body.starts_with(br#"{"nonce":"9","orders":"#));
        let RequestIntent::Orders { orders } =
            Kraken.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(orders[0].base.as_deref(), Some("BTC"));
        assert_eq!(orders[0].quote.as_deref(), Some("USD"));
        assert_eq!(orders[0].quantity, Some(d("1")));
        assert_eq!(
            strip_json_nonce(br#"{"a":{"nonce":1},"nonce":2}"#),
            br#"{"a":{"nonce":1}}"#
        );
    }

    // The body goes out with the type keygate read it as, whatever the client named: a
    // JSON body under a form type would have Kraken read the `&key=…&amount=…` hidden in
    // one of its strings instead of the fields keygate checked.
    #[test]
    fn the_body_is_sent_as_the_kind_it_was_read_as() {
        let body =
            r#"{"asset":"XBT","key":"allowed","amount":"0.001","x":"&key=other&amount=5&y="}"#;
        let mut r = req("/0/private/Withdraw", body);
        r.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/x-www-form-urlencoded"),
        );
        let RequestIntent::Withdrawal(w) =
            Kraken.parse_intent(EndpointClass::Withdraw, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!((w.address.as_str(), w.amount), ("allowed", d("0.001")));
        Kraken.sign(&mut r, &creds(), &ctx(9)).unwrap();
        assert_eq!(r.headers[http::header::CONTENT_TYPE], "application/json");
        let mut r = req("/0/private/Balance", "");
        r.headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        Kraken.sign(&mut r, &creds(), &ctx(10)).unwrap();
        assert_eq!(
            r.headers[http::header::CONTENT_TYPE],
            "application/json",
            "named JSON: read, and sent, as JSON"
        );
    }

    #[test]
    fn classes() {
        use EndpointClass::*;
        for (m, p, class) in ROUTES {
            let path = p.replace("/**", "/Ticker");
            for method in m.split('|') {
                let got = Kraken.classify(&Method::from_bytes(method.as_bytes()).unwrap(), &path);
                assert_eq!(got, *class, "{method} {path}");
            }
        }
        for m in ["Withdraw", "WithdrawCancel"] {
            let c = Kraken.classify(&Method::POST, &format!("/0/private/{m}"));
            assert_eq!(c, Withdraw);
        }
        assert_eq!(
            Kraken.classify(&Method::POST, "/0/private/WalletTransfer"),
            Transfer
        );
        assert_eq!(
            Kraken.classify(&Method::POST, "/0/private/AccountTransfer"),
            SubAccount
        );
        assert_eq!(
            Kraken.classify(&Method::POST, "/0/private/Earn/Allocate"),
            Unknown
        );
        assert_eq!(
            Kraken.classify(&Method::POST, "/0/private/NewThing"),
            Unknown
        );
        assert_eq!(Kraken.classify(&Method::GET, "/0/private/Balance"), Unknown);
        assert_eq!(Kraken.classify(&Method::GET, "/0/public/Ticker"), Public);
    }

    // EditOrder reads `pair`, `volume` and `price`; AmendOrder `order_qty` and
    // `limit_price` and names no pair. Before, both took `volume` before `order_qty` and
    // trusted a `pair` AmendOrder does not use: a little DOGE checked, a 100 BTC amend made.
    #[test]
    fn amendments_are_read_from_what_kraken_applies() {
        let parse =
            |path: &str, body: &str| Kraken.parse_intent(EndpointClass::Trade, &req(path, body));
        let RequestIntent::Orders { orders } = parse(
            "/0/private/EditOrder",
            "nonce=1&txid=O1&pair=XXBTZUSD&volume=100&price=60000",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(
            (orders[0].quantity, orders[0].price),
            (Some(d("100")), Some(d("60000")))
        );
        assert_eq!(orders[0].base.as_deref(), Some("BTC"));
        let RequestIntent::Orders { orders } = parse(
            "/0/private/AmendOrder",
            "nonce=1&txid=O1&order_qty=100&limit_price=60000",
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(orders[0].quantity, Some(d("100")));
        assert_eq!(orders[0].symbol, "", "no pair: policy refuses it");
        for (path, body) in [
            (
                "/0/private/AmendOrder",
                "nonce=1&txid=O1&pair=XDGUSD&volume=0.001&order_qty=100",
            ),
            (
                "/0/private/AmendOrder",
                "nonce=1&txid=O1&order_qty=100&pair=XDGUSD",
            ),
            (
                "/0/private/EditOrder",
                "nonce=1&txid=O1&pair=XXBTZUSD&volume=1&order_qty=100",
            ),
            ("/0/private/EditOrder", "nonce=1&txid=O1&volume=1"),
        ] {
            assert!(parse(path, body).is_err(), "{path} {body}");
        }
    }

    // Kraken's spellings of one pair (its `XBT`/`XDG` codes, the legacy `X…Z…` names)
    // are carried along, so a symbol list entry in any of them applies.
    #[test]
    fn a_pair_carries_its_other_spellings() {
        let aliases = |pair: &str| {
            let body = format!("nonce=1&pair={pair}&type=buy&ordertype=limit&volume=1&price=1");
            let RequestIntent::Orders { orders } = Kraken
                .parse_intent(EndpointClass::Trade, &req("/0/private/AddOrder", &body))
                .unwrap()
            else {
                panic!()
            };
            orders[0].aliases.clone()
        };
        for pair in ["XXBTZUSD", "XBTUSD", "BTC/USD"] {
            let a = aliases(pair);
            for spelling in ["XBTUSD", "XXBTZUSD", "BTCUSD"] {
                assert!(a.iter().any(|x| x == spelling), "{pair}: {a:?}");
            }
        }
        let a = aliases("ETHUSD");
        assert!(a.iter().any(|x| x == "XETHZUSD"), "{a:?}");
        let a = aliases("XDGUSD");
        assert!(a.iter().any(|x| x == "DOGEUSD"), "{a:?}");
        // another market's spellings are not among them
        assert!(!aliases("ETHUSD").iter().any(|x| x.contains("XBT")));
        // a legacy name quoted in a crypto asset: its quote's spellings too
        let a = aliases("XETHXXBT");
        for spelling in ["ETHBTC", "ETHXBT", "XETHXXBT"] {
            assert!(a.iter().any(|x| x == spelling), "{a:?}");
        }
    }

    #[test]
    fn parses_intents() {
        let one = |body: &str| {
            let r = req("/0/private/AddOrder", body);
            let RequestIntent::Orders { orders } =
                Kraken.parse_intent(EndpointClass::Trade, &r).unwrap()
            else {
                panic!()
            };
            orders[0].clone()
        };
        let o = one("nonce=1&pair=XXBTZUSD&type=buy&ordertype=market&volume=100&oflags=fciq,viqc");
        assert_eq!(
            (o.base.as_deref(), o.quote.as_deref()),
            (Some("BTC"), Some("USD"))
        );
        assert_eq!((o.quote_amount, o.quantity), (Some(d("100")), None));
        let o = one("nonce=1&pair=XXBTZUSD&type=sell&ordertype=market&volume=2&leverage=2:1&reduce_only=true");
        assert_eq!((o.quote_amount, o.quantity), (None, Some(d("2"))));
        assert_eq!(o.leverage, Some(d("2")));
        assert!(o.reduce_only);
        for bad in [
            "pair=XBTUSD&type=buy",
            "pair=XBTUSD&type=hold&ordertype=limit&volume=1",
            "",
            // `viqc` only where Kraken documents it (a market buy without leverage):
            // elsewhere it may read the volume in the base
            "nonce=1&pair=XBTUSD&type=buy&ordertype=market&volume=100&oflags=viqc&leverage=2:1",
            "nonce=1&pair=XBTUSD&type=sell&ordertype=market&volume=100&oflags=viqc",
            "nonce=1&pair=XBTUSD&type=buy&ordertype=limit&volume=100&price=50000&oflags=viqc",
            // a price Kraken may trim to an offset (`+5`)
            "nonce=1&pair=XBTUSD&type=buy&ordertype=limit&volume=1&price=%20%2B5",
            "nonce=1&pair=XBTUSD&type=buy&ordertype=limit&volume=1&price=5%20",
        ] {
            assert!(Kraken
                .parse_intent(EndpointClass::Trade, &req("/0/private/AddOrder", bad))
                .is_err());
        }
        let r = req("/0/private/CancelAll", "nonce=1");
        let RequestIntent::Orders { orders } =
            Kraken.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert!(orders[0].is_cancel);
        let r = req(
            "/0/private/Withdraw",
            "asset=XBT&key=cold+wallet&amount=0.5",
        );
        assert_eq!(
            Kraken.parse_intent(EndpointClass::Withdraw, &r).unwrap(),
            RequestIntent::Withdrawal(WithdrawalIntent {
                asset: "XBT".into(),
                amount: d("0.5"),
                address: "cold wallet".into(),
                network: None,
                tag: None,
            })
        );
        assert!(Kraken
            .parse_intent(
                EndpointClass::Withdraw,
                &req("/0/private/Withdraw", "asset=XBT&amount=1")
            )
            .is_err());
        let r = req(
            "/0/private/WalletTransfer",
            "asset=ZUSD&from=Spot+Wallet&to=Futures+Wallet&amount=10",
        );
        assert_eq!(
            Kraken.parse_intent(EndpointClass::Transfer, &r).unwrap(),
            RequestIntent::Transfer {
                asset: "ZUSD".into(),
                amount: Some(d("10"))
            }
        );
    }

    #[test]
    fn balances_key_check_errors() {
        let b = Kraken
            .parse_balances(
                br#"{"error":[],"result":{"ZUSD":{"balance":"25435.21","hold_trade":"8249.76"}}}"#,
            )
            .unwrap();
        assert_eq!(
            (b[0].total, b[0].locked, b[0].free),
            (d("25435.21"), d("8249.76"), d("17185.45"))
        );
        let b = Kraken
            .parse_balances(br#"{"error":[],"result":{"XXBT":"1.5"}}"#)
            .unwrap();
        assert_eq!((b[0].free, b[0].locked), (d("1.5"), d("0")));
        assert!(Kraken
            .parse_balances(br#"{"error":["EAPI:Invalid key"]}"#)
            .is_err());

        let kc = Kraken
            .parse_key_check(br#"{"error":[],"result":{}}"#)
            .unwrap();
        assert!(kc.can_read && !kc.can_trade && !kc.can_withdraw);
        assert!(kc.warnings.iter().any(|w| w.contains("does not report")));

        let e = |s, b: &str| Kraken.classify_error(s, b.as_bytes());
        assert_eq!(e(200, r#"{"error":[],"result":{}}"#), None);
        assert_eq!(
            e(200, r#"{"error":["EAPI:Invalid key"]}"#),
            Some(ErrorKind::InvalidKey)
        );
        assert_eq!(
            e(200, r#"{"error":["EAPI:Invalid signature"]}"#),
            Some(ErrorKind::BadSignature)
        );
        assert_eq!(
            e(200, r#"{"error":["EAPI:Invalid nonce"]}"#),
            Some(ErrorKind::TimestampOutOfWindow)
        );
        assert_eq!(
            e(200, r#"{"error":["EGeneral:Permission denied"]}"#),
            Some(ErrorKind::PermissionDenied)
        );
        assert_eq!(
            e(200, r#"{"error":["EOrder:Insufficient funds"]}"#),
            Some(ErrorKind::InsufficientBalance)
        );
        assert_eq!(
            e(200, r#"{"error":["EAPI:Rate limit exceeded"]}"#),
            Some(ErrorKind::RateLimited)
        );
        assert_eq!(
            e(200, r#"{"error":["EGeneral:Invalid arguments"]}"#),
            Some(ErrorKind::Unknown)
        );
        assert_eq!(e(520, "<html>"), Some(ErrorKind::Unknown));
        assert_eq!(Kraken.rate_limit(&HeaderMap::new()), None);
    }

    fn first_order(body: &str) -> Result<OrderIntent, ParseError> {
        match Kraken.parse_intent(EndpointClass::Trade, &req("/0/private/AddOrder", body))? {
            RequestIntent::Orders { mut orders } => Ok(orders.remove(0)),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn only_limit_prices_are_limits() {
        let o = |t: &str, prices: &str| {
            first_order(&format!(
                "pair=XBTUSD&type=buy&ordertype={t}&volume=100{prices}"
            ))
            .unwrap()
        };
        // `price` of a triggered market order is its trigger (or, trailing, an offset).
        for t in ["market", "stop-loss", "take-profit", "trailing-stop"] {
            let x = o(t, "&price=0.01");
            assert!(!x.price_is_limit, "{t}");
        }
        let x = o("limit", "&price=37500");
        assert!(x.price_is_limit);
        assert_eq!(x.price, Some(d("37500")));
        assert!(o("iceberg", "&price=37500&displayvol=1").price_is_limit);
        // stop-loss-limit: `price` triggers, `price2` is the limit.
        let x = o("stop-loss-limit", "&price=0.01&price2=36000");
        assert_eq!(x.price, Some(d("36000")));
        assert!(x.price_is_limit);
        let x = o("take-profit-limit", "&price=40000&price2=%2B5");
        assert_eq!(x.price, None);
        assert!(!x.price_is_limit);
        assert!(!o("trailing-stop-limit", "&price=%2B10&price2=%2B5").price_is_limit);
        assert!(!o("limit", "&price=%2B5").price_is_limit);
    }

    #[test]
    fn repeated_parameters_are_refused() {
        for body in [
            "pair=XBTUSD&type=buy&ordertype=market&volume=0.001&volume=1000",
            "pair=XBTUSD&type=buy&ordertype=limit&volume=1&price=1&price=2",
            "pair=XBTUSD&pair=PEPEUSD&type=buy&ordertype=market&volume=1",
        ] {
            assert!(first_order(body).is_err(), "{body}");
        }
        let batch = req(
            "/0/private/AddOrderBatch",
            "pair=XBTUSD&orders[0][type]=buy&orders[0][ordertype]=market&orders[0][volume]=0.001&orders[0][volume]=1000",
        );
        assert!(Kraken.parse_intent(EndpointClass::Trade, &batch).is_err());
        let json = req(
            "/0/private/AddOrderBatch",
            r#"{"pair":"XBTUSD","orders":[{"type":"buy","ordertype":"market","volume":"0.001","volume":"1000"}]}"#,
        );
        assert!(Kraken.parse_intent(EndpointClass::Trade, &json).is_err());
        let w = req(
            "/0/private/Withdraw",
            "asset=XBT&key=cold&key=attacker&amount=1",
        );
        assert!(Kraken.parse_intent(EndpointClass::Withdraw, &w).is_err());
        // the body is what keygate reads: a query string beside it is refused
        let mut q = req(
            "/0/private/AddOrder",
            "pair=XBTUSD&type=buy&ordertype=market&volume=0.001",
        );
        assert!(Kraken.parse_intent(EndpointClass::Trade, &q).is_ok());
        q.query = Some("volume=1000".into());
        assert!(Kraken.parse_intent(EndpointClass::Trade, &q).is_err());
    }

    #[test]
    fn batch_orders_trade_the_batch_pair_and_reduce_only_needs_margin() {
        let json = req(
            "/0/private/AddOrderBatch",
            r#"{"pair":"XBTUSD","orders":[{"pair":"PEPEUSD","type":"buy","ordertype":"market","volume":"1"}]}"#,
        );
        assert!(Kraken.parse_intent(EndpointClass::Trade, &json).is_err());
        // A spot order (no leverage) has no position to reduce.
        let o = first_order("pair=XBTUSD&type=sell&ordertype=market&volume=1&reduce_only=true")
            .unwrap();
        assert!(!o.reduce_only);
        let o = first_order(
            "pair=XBTUSD&type=sell&ordertype=market&volume=1&leverage=2&reduce_only=true",
        )
        .unwrap();
        assert!(o.reduce_only);
    }
}
