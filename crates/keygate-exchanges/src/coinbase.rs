//! Coinbase Advanced Trade (and the Coinbase App v2 endpoints CCXT uses) with CDP API keys
//! (<https://docs.cdp.coinbase.com/coinbase-app/authentication-authorization/api-key-authentication>).
//!
//! Signing: per request an ES256 JWT, header `{alg: ES256, kid: <key name>, nonce: <hex of
//! ctx.random_nonce>, typ: JWT}` (DESIGN.md §7: kid and nonce are header fields), claims
//! `{sub: <key name>, iss: "cdp", nbf, exp: nbf + 120, uri: "<METHOD> <host><path>"}`, sent
//! as `Authorization: Bearer <jwt>`. The ECDSA signature is deterministic (RFC 6979), so a
//! fixed context gives a fixed token.
//!
//! Differences from CCXT: CCXT still sends the legacy Coinbase Cloud claims (`iss:
//! "coinbase-cloud"`, `aud: ["retail_rest_api_proxy"]`, `iat`). keygate follows Coinbase's
//! current docs and official SDK (`iss: "cdp"`, no `aud`/`iat`); both are accepted.
//!
//! The key check (`key_permissions`) reports view/trade/transfer but not the key's IP
//! allowlist, so `ip_restricted` is unknown and said so.

use http::{HeaderMap, Method};
use p256::ecdsa::signature::Signer;
use p256::pkcs8::DecodePrivateKey;
use secrecy::ExposeSecret;
use serde_json::{json, Value};

use crate::util::{self, RouteRow};
use crate::*;

/// `coinbase` API.
pub struct Coinbase;

use EndpointClass::{Manage, Public, Read, Trade, Transfer as Xfer, Withdraw as Wd};

/// Endpoint classes, first match wins. Sources: Advanced Trade REST reference, Coinbase App
/// v2 reference, CCXT's `coinbase.describe()['api']`.
pub const ROUTES: &[RouteRow] = &[
    // Market data (the authenticated `products` family serves the same public data).
    ("GET", "/api/v3/brokerage/market/**", Public),
    ("GET", "/api/v3/brokerage/products/**", Public),
    ("GET", "/api/v3/brokerage/best_bid_ask", Public),
    ("GET", "/api/v3/brokerage/product_book", Public),
    ("GET", "/api/v3/brokerage/time", Public),
    ("GET", "/v2/currencies/**", Public),
    ("GET", "/v2/time", Public),
    ("GET", "/v2/exchange-rates", Public),
    ("GET", "/v2/prices/**", Public),
    // Reads.
    ("GET", "/api/v3/brokerage/accounts/**", Read),
    ("GET", "/api/v3/brokerage/portfolios/**", Read),
    ("GET", "/api/v3/brokerage/orders/historical/**", Read),
    ("GET", "/api/v3/brokerage/transaction_summary", Read),
    ("GET", "/api/v3/brokerage/key_permissions", Read),
    ("GET", "/api/v3/brokerage/payment_methods/**", Read),
    ("GET", "/api/v3/brokerage/cfm/**", Read),
    ("GET", "/api/v3/brokerage/intx/**", Read),
    ("GET", "/api/v3/brokerage/convert/trade/{trade_id}", Read),
    // Trading.
    ("POST", "/api/v3/brokerage/orders", Trade),
    ("POST", "/api/v3/brokerage/orders/batch_cancel", Trade),
    ("POST", "/api/v3/brokerage/orders/edit", Trade),
    ("POST", "/api/v3/brokerage/orders/edit_preview", Trade),
    ("POST", "/api/v3/brokerage/orders/preview", Trade),
    ("POST", "/api/v3/brokerage/orders/close_position", Trade),
    (
        "POST",
        "/api/v3/brokerage/cfm/intraday/margin_setting",
        Trade,
    ),
    // Moving funds between the user's own portfolios.
    ("POST", "/api/v3/brokerage/portfolios/move_funds", Xfer),
    ("POST", "/api/v3/brokerage/intx/allocate", Xfer),
    ("POST", "/api/v3/brokerage/portfolios", Manage),
    (
        "PUT|DELETE",
        "/api/v3/brokerage/portfolios/{portfolio_uuid}",
        Manage,
    ),
    // Coinbase App v2: `transactions` POST with type=send is how CCXT withdraws; sends
    // leave the account, so the whole POST family is `withdraw`.
    ("POST", "/v2/accounts/{account_id}/transactions", Wd),
    ("POST", "/v2/accounts/{account_id}/withdrawals/**", Wd),
    ("POST", "/v2/accounts/{account_id}/addresses", Read),
    ("GET", "/v2/accounts/**", Read),
    ("GET", "/v2/user", Read),
    ("GET", "/v2/user/auth", Read),
    ("GET", "/v2/payment-methods/**", Read),
];

impl Exchange for Coinbase {
    fn id(&self) -> ExchangeId {
        ExchangeId::Coinbase
    }

    fn hosts(&self) -> Hosts {
        Hosts {
            production: "https://api.coinbase.com",
            // Advanced Trade's static sandbox (accounts and orders, mocked responses).
            testnet: Some("https://api-sandbox.coinbase.com"),
        }
    }

    fn strip_auth(&self, req: &mut OutgoingRequest) {
        util::remove_headers(&mut req.headers, &["authorization"], &["cb-access-"]);
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
        let pem = creds
            .private_key
            .as_ref()
            .or(creds.api_secret.as_ref())
            .ok_or(SignError::MissingSecret)?;
        let signing_key = parse_private_key(pem.expose_secret())?;
        if ctx.host.is_empty() || ctx.host.contains('/') {
            return Err(SignError::InvalidRequest(
                "host required for the JWT uri claim",
            ));
        }
        let key_name = creds.api_key.expose_secret();
        let now_s = ctx.now_ms.div_euclid(1000);
        let header = json!({
            "alg": "ES256",
            "kid": key_name,
            "nonce": util::hex_lower(&ctx.random_nonce),
            "typ": "JWT",
        });
        let claims = json!({
            "sub": key_name,
            "iss": "cdp",
            "nbf": now_s,
            "exp": now_s + 120,
            "uri": format!("{} {}{}", req.method.as_str(), ctx.host, req.path),
        });
        let signing_input = format!(
            "{}.{}",
            util::b64url(header.to_string().as_bytes()),
            util::b64url(claims.to_string().as_bytes())
        );
        let signature: p256::ecdsa::Signature = signing_key.sign(signing_input.as_bytes());
        let jwt = format!("{signing_input}.{}", util::b64url(&signature.to_bytes()));
        let value = http::HeaderValue::from_str(&format!("Bearer {jwt}"))
            .map_err(|_| SignError::InvalidRequest("key name is not valid header text"))?;
        req.headers.insert(http::header::AUTHORIZATION, value);
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
        util::no_query_beside_the_body(req)?;
        let path = req.path.trim_end_matches('/');
        match class {
            EndpointClass::Trade => parse_trade(path, req),
            EndpointClass::Withdraw => parse_withdraw(path, req),
            EndpointClass::Transfer => {
                let v = util::json_request_body(&req.body)?;
                if let Some(funds) = v.get("funds") {
                    // portfolios/move_funds
                    Ok(RequestIntent::Transfer {
                        asset: str_field(funds, "currency")?.to_string(),
                        amount: util::json_opt_decimal("value", funds.get("value"))?,
                    })
                } else {
                    // intx/allocate
                    Ok(RequestIntent::Transfer {
                        asset: str_field(&v, "currency")?.to_string(),
                        amount: util::json_opt_decimal("amount", v.get("amount"))?,
                    })
                }
            }
            _ => Ok(RequestIntent::None),
        }
    }

    fn balance_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/api/v3/brokerage/accounts",
            query: Some("limit=250"),
        }
    }

    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError> {
        let v = util::json_body(body)?;
        let accounts = v
            .get("accounts")
            .and_then(Value::as_array)
            .ok_or(ParseError::MissingField("accounts"))?;
        accounts
            .iter()
            .map(|a| {
                let available = field(a, "available_balance")?;
                let free = util::json_decimal("available_balance", field(available, "value")?)?;
                let locked = match a.get("hold") {
                    Some(h) => util::json_opt_decimal("hold", h.get("value"))?.unwrap_or_default(),
                    None => Default::default(),
                };
                Ok(Balance {
                    asset: str_field(a, "currency")?.to_string(),
                    free,
                    locked,
                    total: free + locked,
                    account_type: a.get("type").and_then(Value::as_str).map(str::to_string),
                })
            })
            .collect()
    }

    fn key_check_request(&self) -> PlannedRequest {
        PlannedRequest {
            method: Method::GET,
            path: "/api/v3/brokerage/key_permissions",
            query: None,
        }
    }

    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError> {
        let v = util::json_body(body)?;
        let flag = |k: &'static str| -> Result<bool, ParseError> {
            v.get(k)
                .ok_or(ParseError::MissingField(k))?
                .as_bool()
                .ok_or(ParseError::InvalidValue(k))
        };
        let can_transfer = flag("can_transfer")?;
        let mut check = KeyCheck {
            can_read: flag("can_view")?,
            can_trade: flag("can_trade")?,
            // CDP's "transfer" permission is what allows sending crypto off the account.
            can_withdraw: can_transfer,
            can_transfer,
            // Not reported by Coinbase; see below.
            ip_restricted: true,
            expires_at_ms: None,
            warnings: Vec::new(),
        }
        .with_standard_warnings();
        check.ip_restricted = false;
        check.warnings.push(
            "Coinbase does not report the key's IP allowlist: check it in the CDP portal".into(),
        );
        Ok(check)
    }

    fn rate_limit(&self, _headers: &HeaderMap) -> Option<RateLimitStatus> {
        // Advanced Trade documents its limits but reports none in response headers.
        None
    }

    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind> {
        let v: Option<Value> = serde_json::from_slice(body).ok();
        // Order endpoints answer 200 with `success: false` and an `error_response`.
        let failure = v.as_ref().and_then(|v| {
            let failed = v.get("success").and_then(Value::as_bool) == Some(false);
            let from_response = v
                .get("error_response")
                .and_then(|e| e.get("error").or_else(|| e.get("preview_failure_reason")))
                .and_then(Value::as_str);
            let top = v.get("error").and_then(Value::as_str);
            let v2 = v
                .get("errors")
                .and_then(Value::as_array)
                .and_then(|e| e.first())
                .and_then(|e| e.get("id"))
                .and_then(Value::as_str);
            if failed || status >= 400 {
                from_response
                    .or(top)
                    .or(v2)
                    .map(str::to_string)
                    .or(Some(String::new()))
            } else {
                None
            }
        });
        if status < 400 && failure.is_none() {
            return None;
        }
        let code = failure.unwrap_or_default().to_ascii_uppercase();
        Some(match code.as_str() {
            "INSUFFICIENT_FUND"
            | "INSUFFICIENT_FUNDS"
            | "NOT_ENOUGH_FUNDS"
            | "PREVIEW_INSUFFICIENT_FUND" => ErrorKind::InsufficientBalance,
            "PERMISSION_DENIED" | "INVALID_SCOPE" => ErrorKind::PermissionDenied,
            "UNAUTHENTICATED" | "AUTHENTICATION_ERROR" | "INVALID_TOKEN" | "UNAUTHORIZED" => {
                ErrorKind::InvalidKey
            }
            "EXPIRED_TOKEN" => ErrorKind::TimestampOutOfWindow,
            "RATE_LIMIT_EXCEEDED" | "RESOURCE_EXHAUSTED" => ErrorKind::RateLimited,
            _ => match status {
                401 => ErrorKind::InvalidKey,
                403 => ErrorKind::PermissionDenied,
                429 => ErrorKind::RateLimited,
                _ => ErrorKind::Unknown,
            },
        })
    }
}

/// The CDP key's PEM: SEC1 (`BEGIN EC PRIVATE KEY`, as Coinbase issues it) or PKCS#8. Keys
/// pasted from Coinbase's JSON download carry literal `\n`; those are accepted too.
fn parse_private_key(pem: &str) -> Result<p256::ecdsa::SigningKey, SignError> {
    let pem = pem.trim().replace("\\n", "\n");
    let secret = p256::SecretKey::from_sec1_pem(&pem)
        .or_else(|_| p256::SecretKey::from_pkcs8_pem(&pem))
        .map_err(|_| SignError::InvalidPrivateKey)?;
    Ok(p256::ecdsa::SigningKey::from(&secret))
}

fn field<'a>(v: &'a Value, name: &'static str) -> Result<&'a Value, ParseError> {
    v.get(name).ok_or(ParseError::MissingField(name))
}

fn str_field<'a>(v: &'a Value, name: &'static str) -> Result<&'a str, ParseError> {
    field(v, name)?
        .as_str()
        .ok_or(ParseError::InvalidValue(name))
}

fn split_product(product: &str) -> (Option<String>, Option<String>) {
    // Spot `BTC-USD`; futures such as `BIT-28JUL23-CDE` keep only the base.
    let mut parts = product.split('-');
    let base = parts.next().filter(|b| !b.is_empty()).map(str::to_string);
    let quote = parts
        .next()
        .filter(|q| q.chars().all(|c| c.is_ascii_alphabetic()) && !q.is_empty())
        .map(str::to_string);
    (base, quote)
}

/// The fields of an order configuration keygate accepts: the sizes and prices it reads,
/// and those that time or trigger the order without sizing it.
const CONFIG_FIELDS: [&str; 12] = [
    "base_size",
    "quote_size",
    "limit_price",
    "stop_price",
    "stop_direction",
    "stop_trigger_price",
    "end_time",
    "start_time",
    "post_only",
    "number_buckets",
    "bucket_duration",
    "rfq_disabled",
];

fn parse_order(v: &Value) -> Result<OrderIntent, ParseError> {
    let product = str_field(v, "product_id")?;
    let mut o = OrderIntent::new(product);
    (o.base, o.quote) = split_product(product);
    // A futures product (`BIT-24APR26-CDE`) is sized in contracts, and its code (`BIT`)
    // is not an asset: no base to price it by, so a size cap refuses it until the
    // contract's value is known.
    if product.ends_with("-CDE") {
        o.size_unit = SizeUnit::Contracts;
        (o.base, o.quote) = (None, None);
    }
    o.side = Some(match str_field(v, "side")? {
        s if s.eq_ignore_ascii_case("buy") => Side::Buy,
        s if s.eq_ignore_ascii_case("sell") => Side::Sell,
        _ => return Err(ParseError::InvalidValue("side")),
    });
    let config = field(v, "order_configuration")?
        .as_object()
        .ok_or(ParseError::InvalidValue("order_configuration"))?;
    let (kind, params) = match config.iter().next() {
        Some(entry) if config.len() == 1 => entry,
        _ => return Err(ParseError::InvalidValue("order_configuration")),
    };
    // The configurations keygate knows how to size, by name: another one (a
    // `scaled_limit_gtc` whose `orders[]` legs keygate would not read) is refused.
    let order_type = match kind.as_str() {
        "market_market_ioc" | "market_market_fok" => "market",
        "limit_limit_gtc" | "limit_limit_gtd" | "limit_limit_fok" | "sor_limit_ioc" => "limit",
        "stop_limit_stop_limit_gtc" | "stop_limit_stop_limit_gtd" => "stop_limit",
        "trigger_bracket_gtc" | "trigger_bracket_gtd" => "bracket",
        "twap_limit_gtd" => "twap",
        _ => return Err(ParseError::InvalidValue("order_configuration")),
    };
    // and only the fields it reads or that do not size the order: another one (a
    // camelCase `baseSize`, which Coinbase's parser also accepts) is refused
    let params_obj = params
        .as_object()
        .ok_or(ParseError::InvalidValue("order_configuration"))?;
    if params_obj
        .keys()
        .any(|k| !CONFIG_FIELDS.contains(&k.as_str()))
    {
        return Err(ParseError::InvalidValue("order_configuration"));
    }
    o.order_type = Some(order_type.into());
    o.quantity = util::json_opt_decimal("base_size", params.get("base_size"))?;
    o.quote_amount = util::json_opt_decimal("quote_size", params.get("quote_size"))?;
    if o.quantity.is_none() && o.quote_amount.is_none() {
        return Err(ParseError::MissingField("base_size"));
    }
    o.price = util::json_opt_decimal("limit_price", params.get("limit_price"))?;
    // `limit_price` is what a limit, stop-limit or TWAP-limit configuration executes at or
    // better; a market configuration has none, and a bracket's is not sized by.
    o.price_is_limit = o.price.is_some() && matches!(order_type, "limit" | "stop_limit" | "twap");
    o.leverage = util::json_opt_decimal("leverage", v.get("leverage"))?;
    // `reduce_only` is not in Coinbase's create-order schema, so nothing says Coinbase
    // enforces it: an order claiming it is sized like any other (closing a position is
    // `orders/close_position`).
    Ok(o)
}

fn parse_trade(path: &str, req: &OutgoingRequest) -> Result<RequestIntent, ParseError> {
    let v = util::json_request_body(&req.body)?;
    let one = |o| Ok(RequestIntent::Orders { orders: vec![o] });
    match path.trim_start_matches("/api/v3/brokerage/") {
        "orders" | "orders/preview" => one(parse_order(&v)?),
        "orders/batch_cancel" => {
            let ids = v
                .get("order_ids")
                .and_then(Value::as_array)
                .ok_or(ParseError::MissingField("order_ids"))?;
            let mut o = OrderIntent::new("");
            o.is_cancel = true;
            Ok(RequestIntent::Orders {
                orders: vec![o; ids.len().max(1)],
            })
        }
        "orders/edit" | "orders/edit_preview" => {
            // Edits can raise the size; the product is not in the body.
            let mut o = OrderIntent::new("");
            o.quantity = util::json_opt_decimal("size", v.get("size"))?;
            o.price = util::json_opt_decimal("price", v.get("price"))?;
            one(o)
        }
        "orders/close_position" => {
            let product = str_field(&v, "product_id")?;
            let mut o = OrderIntent::new(product);
            (o.base, o.quote) = split_product(product);
            o.size_unit = SizeUnit::Contracts;
            o.quantity = util::json_opt_decimal("size", v.get("size"))?;
            o.reduce_only = true;
            one(o)
        }
        // Intraday margin raises the leverage of the account's futures positions: a
        // change keygate cannot size, refused like a loan while `max_leverage` is set.
        "cfm/intraday/margin_setting" => Ok(
            if v.get("setting").and_then(Value::as_str) == Some("INTRADAY_MARGIN_SETTING_STANDARD")
            {
                // back to standard margin only lowers leverage
                RequestIntent::None
            } else {
                RequestIntent::Borrow {
                    asset: String::new(),
                    amount: None,
                }
            },
        ),
        _ => Err(ParseError::Malformed("unrecognised trade endpoint".into())),
    }
}

fn parse_withdraw(path: &str, req: &OutgoingRequest) -> Result<RequestIntent, ParseError> {
    let v = util::json_request_body(&req.body)?;
    let amount = util::json_decimal("amount", field(&v, "amount")?)?;
    let asset = str_field(&v, "currency")?.to_string();
    if path.ends_with("/transactions") {
        return match str_field(&v, "type")? {
            "send" => Ok(RequestIntent::Withdrawal(WithdrawalIntent {
                asset,
                amount,
                address: str_field(&v, "to")?.to_string(),
                network: util::json_network(&v, "network")?,
                tag: util::json_tag(&v, "destination_tag")?,
            })),
            // Between the user's own accounts.
            "transfer" => Ok(RequestIntent::Transfer {
                asset,
                amount: Some(amount),
            }),
            _ => Err(ParseError::InvalidValue("type")),
        };
    }
    // Fiat withdrawal to a linked payment method.
    Ok(RequestIntent::Withdrawal(WithdrawalIntent {
        asset,
        amount,
        address: str_field(&v, "payment_method")?.to_string(),
        network: None,
        tag: None,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use p256::ecdsa::signature::Verifier;
    use rust_decimal::Decimal;
    use secrecy::SecretString;
    use std::str::FromStr;

    const SEC1: &str = "-----BEGIN EC PRIVATE KEY-----
MHcCAQEEID9NHyj0xImKB0qBluGqEa+g4DnUVbLwK3/xjrFkdvR5oAoGCCqGSM49
AwEHoUQDQgAEtqV/L/6kda65ii3Skqa24ozBy/pJQF817wErfgNWu5aZgR+6NPo5
KntAVpCHgxhcgYk6dyfeYN3i0rSbtwExZA==
-----END EC PRIVATE KEY-----
";
    const PKCS8: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgP00fKPTEiYoHSoGW
4aoRr6DgOdRVsvArf/GOsWR29HmhRANCAAS2pX8v/qR1rrmKLdKSprbijMHL+klA
XzXvASt+A1a7lpmBH7o0+jkqe0BWkIeDGFyBiTp3J95g3eLStJu3ATFk
-----END PRIVATE KEY-----
";
    const NAME: &str = "organizations/org-1/apiKeys/key-1";

    fn req(method: Method, path: &str, body: &str) -> OutgoingRequest {
        OutgoingRequest {
            method,
            path: path.into(),
            query: None,
            headers: HeaderMap::new(),
            body: Bytes::from(body.to_string()),
        }
    }

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn decode(part: &str) -> Value {
        use base64::Engine as _;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(part)
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn sign_with(pem: &str) -> String {
        let creds = ApiCredentials {
            api_key: SecretString::from(NAME),
            api_secret: None,
            passphrase: None,
            private_key: Some(SecretString::from(pem)),
        };
        let ctx = SignContext {
            now_ms: 1_700_000_000_999,
            nonce: 0,
            random_nonce: [0xab; 16],
            environment: Environment::Production,
            host: "api.coinbase.com".into(),
            recv_window_ms: None,
        };
        let mut r = req(Method::GET, "/api/v3/brokerage/accounts", "");
        r.query = Some("limit=250".into());
        r.headers
            .insert("authorization", "Bearer client".parse().unwrap());
        r.headers.insert("cb-access-sign", "x".parse().unwrap());
        Coinbase.strip_auth(&mut r);
        assert!(r.headers.is_empty());
        Coinbase.sign(&mut r, &creds, &ctx).unwrap();
        let auth = r.headers["authorization"].to_str().unwrap();
        auth.strip_prefix("Bearer ").unwrap().to_string()
    }

    // Only the order configurations keygate can size, with only the fields it knows; a
    // futures product is sized in contracts; intraday margin is refused like a loan.
    #[test]
    fn only_known_configurations_are_sized() {
        let parse = |path: &str, body: &str| {
            Coinbase.parse_intent(EndpointClass::Trade, &req(Method::POST, path, body))
        };
        let order = |config: &str| {
            format!(
                r#"{{"client_order_id":"1","product_id":"BTC-USD","side":"BUY","order_configuration":{config}}}"#
            )
        };
        assert!(parse(
            "/api/v3/brokerage/orders",
            &order(r#"{"limit_limit_gtc":{"base_size":"0.001","limit_price":"60000","post_only":false}}"#)
        )
        .is_ok());
        for config in [
            r#"{"scaled_limit_gtc":{"base_size":"0.0001","num_orders":5,"min_price":"60000","max_price":"1000000","orders":[{"base_size":"10","limit_price":"1000000"}]}}"#,
            r#"{"limit_limit_gtc":{"baseSize":"10","base_size":"0.001","limit_price":"60000"}}"#,
            r#"{"twap_limit_gtd":{"base_size":"0.001","limit_price":"60000","bucket_size":"10","end_time":"2027-01-01T00:00:00Z"}}"#,
            r#"{"something_new_limit":{"base_size":"0.001","limit_price":"60000"}}"#,
        ] {
            assert!(
                parse("/api/v3/brokerage/orders", &order(config)).is_err(),
                "{config}"
            );
        }
        let RequestIntent::Orders { orders } = parse(
            "/api/v3/brokerage/orders",
            r#"{"client_order_id":"1","product_id":"BIT-24APR26-CDE","side":"BUY","order_configuration":{"market_market_ioc":{"base_size":"10"}}}"#,
        )
        .unwrap() else {
            panic!()
        };
        assert_eq!(orders[0].size_unit, SizeUnit::Contracts);
        assert_eq!(orders[0].base, None);
        assert!(matches!(
            parse(
                "/api/v3/brokerage/cfm/intraday/margin_setting",
                r#"{"setting":"INTRADAY_MARGIN_SETTING_INTRADAY"}"#
            )
            .unwrap(),
            RequestIntent::Borrow { .. }
        ));
        assert_eq!(
            parse(
                "/api/v3/brokerage/cfm/intraday/margin_setting",
                r#"{"setting":"INTRADAY_MARGIN_SETTING_STANDARD"}"#
            )
            .unwrap(),
            RequestIntent::None
        );
    }

    #[test]
    fn jwt_verifies_and_carries_exact_header_and_claims() {
        let jwt = sign_with(SEC1);
        let parts: Vec<&str> = jwt.split('.').collect();
        assert_eq!(parts.len(), 3);
        assert_eq!(
            decode(parts[0]),
            json!({"alg": "ES256", "kid": NAME, "nonce": "ab".repeat(16), "typ": "JWT"})
        );
        assert_eq!(
            decode(parts[1]),
            json!({
                "sub": NAME,
                "iss": "cdp",
                "nbf": 1_700_000_000,
                "exp": 1_700_000_120,
                "uri": "GET api.coinbase.com/api/v3/brokerage/accounts",
            })
        );
        let key = parse_private_key(SEC1).unwrap();
        let sig = {
            use base64::Engine as _;
            let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(parts[2])
                .unwrap();
            p256::ecdsa::Signature::from_slice(&raw).unwrap()
        };
        key.verifying_key()
            .verify(format!("{}.{}", parts[0], parts[1]).as_bytes(), &sig)
            .unwrap();
        // PKCS#8 of the same key, and JSON-escaped newlines, give the same (deterministic) JWT.
        assert_eq!(sign_with(PKCS8), jwt);
        assert_eq!(sign_with(&SEC1.replace('\n', "\\n")), jwt);
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let creds = ApiCredentials {
            api_key: SecretString::from(NAME),
            api_secret: None,
            passphrase: None,
            private_key: Some(SecretString::from("-----BEGIN EC PRIVATE KEY-----\nnope\n")),
        };
        let ctx = SignContext {
            now_ms: 0,
            nonce: 0,
            random_nonce: [0; 16],
            environment: Environment::Production,
            host: "api.coinbase.com".into(),
            recv_window_ms: None,
        };
        let mut r = req(Method::GET, "/api/v3/brokerage/accounts", "");
        assert_eq!(
            Coinbase.sign(&mut r, &creds, &ctx),
            Err(SignError::InvalidPrivateKey)
        );
        let none = ApiCredentials {
            private_key: None,
            ..creds
        };
        assert_eq!(
            Coinbase.sign(&mut r, &none, &ctx),
            Err(SignError::MissingSecret)
        );
    }

    #[test]
    fn classes() {
        use EndpointClass::*;
        for (m, p, class) in ROUTES {
            let path = p
                .replace("/**", "/x")
                .replace("{account_id}", "acc")
                .replace("{trade_id}", "t")
                .replace("{portfolio_uuid}", "p");
            for method in m.split('|') {
                let got = Coinbase.classify(&Method::from_bytes(method.as_bytes()).unwrap(), &path);
                assert_eq!(got, *class, "{method} {path}");
            }
        }
        let c = |m: Method, p: &str| Coinbase.classify(&m, p);
        assert_eq!(c(Method::POST, "/v2/accounts/abc/transactions"), Withdraw);
        assert_eq!(c(Method::GET, "/v2/accounts/abc/transactions"), Read);
        assert_eq!(c(Method::POST, "/api/v3/brokerage/orders"), Trade);
        assert_eq!(
            c(Method::GET, "/api/v3/brokerage/orders/historical/batch"),
            Read
        );
        assert_eq!(
            c(Method::POST, "/api/v3/brokerage/portfolios/move_funds"),
            Transfer
        );
        assert_eq!(c(Method::GET, "/api/v3/brokerage/market/products"), Public);
        assert_eq!(c(Method::POST, "/api/v3/brokerage/convert/quote"), Unknown);
        assert_eq!(c(Method::POST, "/v2/accounts/abc/deposits"), Unknown);
        assert_eq!(c(Method::GET, "/api/v3/brokerage/new_thing"), Unknown);
    }

    #[test]
    fn parses_intents() {
        let r = req(
            Method::POST,
            "/api/v3/brokerage/orders",
            r#"{"client_order_id":"c","product_id":"BTC-USD","side":"BUY","order_configuration":{"market_market_ioc":{"quote_size":"100"}}}"#,
        );
        let RequestIntent::Orders { orders } =
            Coinbase.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        let o = &orders[0];
        assert_eq!((o.quote_amount, o.quantity), (Some(d("100")), None));
        assert_eq!(
            (o.base.as_deref(), o.quote.as_deref()),
            (Some("BTC"), Some("USD"))
        );
        assert_eq!(o.order_type.as_deref(), Some("market"));
        let r = req(
            Method::POST,
            "/api/v3/brokerage/orders",
            r#"{"product_id":"ETH-USDC","side":"SELL","order_configuration":{"limit_limit_gtc":{"base_size":"1.5","limit_price":"3000","post_only":true}}}"#,
        );
        let RequestIntent::Orders { orders } =
            Coinbase.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert_eq!(
            (orders[0].quantity, orders[0].price),
            (Some(d("1.5")), Some(d("3000")))
        );
        assert_eq!(orders[0].side, Some(Side::Sell));
        for bad in [
            "",
            r#"{"product_id":"BTC-USD","side":"BUY"}"#,
            r#"{"product_id":"BTC-USD","side":"BUY","order_configuration":{"market_market_ioc":{}}}"#,
        ] {
            let r = req(Method::POST, "/api/v3/brokerage/orders", bad);
            assert!(
                Coinbase.parse_intent(EndpointClass::Trade, &r).is_err(),
                "{bad}"
            );
        }
        let r = req(
            Method::POST,
            "/api/v3/brokerage/orders/batch_cancel",
            r#"{"order_ids":["a"]}"#,
        );
        let RequestIntent::Orders { orders } =
            Coinbase.parse_intent(EndpointClass::Trade, &r).unwrap()
        else {
            panic!()
        };
        assert!(orders[0].is_cancel);

        let r = req(
            Method::POST,
            "/v2/accounts/abc/transactions",
            r#"{"type":"send","to":"0xabc","amount":"25.5","currency":"USDC","network":"base"}"#,
        );
        assert_eq!(
            Coinbase.parse_intent(EndpointClass::Withdraw, &r).unwrap(),
            RequestIntent::Withdrawal(WithdrawalIntent {
                asset: "USDC".into(),
                amount: d("25.5"),
                address: "0xabc".into(),
                network: Some("base".into()),
                tag: None,
            })
        );
        let r = req(
            Method::POST,
            "/v2/accounts/abc/transactions",
            r#"{"type":"request","to":"x","amount":"1","currency":"BTC"}"#,
        );
        assert!(Coinbase.parse_intent(EndpointClass::Withdraw, &r).is_err());
        let r = req(
            Method::POST,
            "/api/v3/brokerage/portfolios/move_funds",
            r#"{"funds":{"value":"10","currency":"USD"},"source_portfolio_uuid":"a","target_portfolio_uuid":"b"}"#,
        );
        assert_eq!(
            Coinbase.parse_intent(EndpointClass::Transfer, &r).unwrap(),
            RequestIntent::Transfer {
                asset: "USD".into(),
                amount: Some(d("10"))
            }
        );
    }

    #[test]
    fn balances_key_check_errors() {
        let b = Coinbase
            .parse_balances(br#"{"accounts":[{"uuid":"u","name":"BTC Wallet","currency":"BTC","available_balance":{"value":"1.5","currency":"BTC"},"hold":{"value":"0.5","currency":"BTC"},"type":"ACCOUNT_TYPE_CRYPTO"}],"has_next":false}"#)
            .unwrap();
        assert_eq!(
            (b[0].free, b[0].locked, b[0].total),
            (d("1.5"), d("0.5"), d("2"))
        );
        assert!(Coinbase.parse_balances(b"{}").is_err());

        let kc = Coinbase
            .parse_key_check(br#"{"can_view":true,"can_trade":true,"can_transfer":false,"portfolio_uuid":"p","portfolio_type":"DEFAULT"}"#)
            .unwrap();
        assert!(kc.can_read && kc.can_trade && !kc.can_withdraw && !kc.can_transfer);
        assert!(!kc.warnings.iter().any(|w| w == "no IP restriction"));
        assert!(kc.warnings.iter().any(|w| w.contains("IP allowlist")));
        let kc = Coinbase
            .parse_key_check(br#"{"can_view":true,"can_trade":false,"can_transfer":true}"#)
            .unwrap();
        assert!(kc.can_withdraw && kc.warnings.iter().any(|w| w == "withdrawals enabled"));

        let e = |s, b: &str| Coinbase.classify_error(s, b.as_bytes());
        assert_eq!(e(200, r#"{"accounts":[]}"#), None);
        assert_eq!(e(200, r#"{"success":true,"success_response":{}}"#), None);
        assert_eq!(
            e(
                200,
                r#"{"success":false,"error_response":{"error":"INSUFFICIENT_FUND","message":"x"}}"#
            ),
            Some(ErrorKind::InsufficientBalance)
        );
        assert_eq!(e(401, "Unauthorized\n"), Some(ErrorKind::InvalidKey));
        assert_eq!(
            e(403, r#"{"error":"PERMISSION_DENIED","message":"m"}"#),
            Some(ErrorKind::PermissionDenied)
        );
        assert_eq!(
            e(429, r#"{"errors":[{"id":"rate_limit_exceeded"}]}"#),
            Some(ErrorKind::RateLimited)
        );
        assert_eq!(
            e(400, r#"{"error":"INVALID_ARGUMENT"}"#),
            Some(ErrorKind::Unknown)
        );
        assert_eq!(Coinbase.rate_limit(&HeaderMap::new()), None);
    }

    #[test]
    fn only_limit_configurations_price_at_limit_price() {
        let parse = |config: &str| {
            let body = format!(
                r#"{{"client_order_id":"1","product_id":"BTC-USD","side":"BUY","order_configuration":{config}}}"#
            );
            let r = OutgoingRequest {
                method: Method::POST,
                path: "/api/v3/brokerage/orders".into(),
                query: None,
                headers: HeaderMap::new(),
                body: bytes::Bytes::from(body),
            };
            match Coinbase.parse_intent(EndpointClass::Trade, &r).unwrap() {
                RequestIntent::Orders { orders } => orders[0].clone(),
                other => panic!("{other:?}"),
            }
        };
        assert!(
            parse(
                r#"{"limit_limit_gtc":{"base_size":"1","limit_price":"60000","post_only":false}}"#
            )
            .price_is_limit
        );
        assert!(parse(r#"{"stop_limit_stop_limit_gtc":{"base_size":"1","limit_price":"60000","stop_price":"59000"}}"#).price_is_limit);
        assert!(!parse(r#"{"trigger_bracket_gtc":{"base_size":"1","limit_price":"60000","stop_trigger_price":"50000"}}"#).price_is_limit);
        assert!(
            !parse(r#"{"market_market_ioc":{"base_size":"1","limit_price":"0.01"}}"#)
                .price_is_limit
        );
        let r = OutgoingRequest {
            method: Method::POST,
            path: "/api/v3/brokerage/orders".into(),
            query: None,
            headers: HeaderMap::new(),
            body: bytes::Bytes::from(
                r#"{"product_id":"BTC-USD","side":"BUY","order_configuration":{"market_market_ioc":{"base_size":"0.001"}},"product_id":"PEPE-USD"}"#,
            ),
        };
        assert!(Coinbase.parse_intent(EndpointClass::Trade, &r).is_err());
    }
}
