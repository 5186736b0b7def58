//! Exchange protocols, one module per exchange API.
//!
//! Each module knows, for its exchange: the production and testnet hosts, how to strip
//! whatever auth a client already put on a request, how to sign a request exactly as the
//! exchange's servers verify it, which class every private endpoint belongs to, how to read
//! an order or withdrawal out of a request (for policy), and how to read balances,
//! rate-limit headers, error bodies and the key-permission report out of responses.
//!
//! Invariants:
//! - No network I/O, no clock, no randomness in signing: time and nonces come in through
//!   [`SignContext`], so every signature is reproducible in a known-answer test.
//! - Secrets arrive as [`ApiCredentials`] (secrecy types) and are exposed only inside the
//!   signing functions; no error or `Debug` output carries key material.
//! - Fail closed: a private path missing from a module's table is [`EndpointClass::Unknown`];
//!   an order that cannot be parsed is an error, never "no order".

use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use http::{HeaderMap, Method};
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

pub mod binance;
mod binance_weights;
pub mod binanceusdm;
pub mod bitget;
pub mod bybit;
pub mod coinbase;
pub mod gate;
pub mod keygen;
pub mod kraken;
pub mod kucoin;
mod kucoin_weights;
pub mod okx;
pub mod util;

/// The exchange APIs keygate speaks. Ids are CCXT's exchange ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeId {
    Binance,
    Binanceusdm,
    Okx,
    Bybit,
    Kraken,
    Kucoin,
    Bitget,
    Gate,
    Coinbase,
}

impl ExchangeId {
    pub const ALL: [ExchangeId; 9] = [
        ExchangeId::Binance,
        ExchangeId::Binanceusdm,
        ExchangeId::Okx,
        ExchangeId::Bybit,
        ExchangeId::Kraken,
        ExchangeId::Kucoin,
        ExchangeId::Bitget,
        ExchangeId::Gate,
        ExchangeId::Coinbase,
    ];

    /// CCXT's id for this exchange.
    pub fn as_str(self) -> &'static str {
        match self {
            ExchangeId::Binance => "binance",
            ExchangeId::Binanceusdm => "binanceusdm",
            ExchangeId::Okx => "okx",
            ExchangeId::Bybit => "bybit",
            ExchangeId::Kraken => "kraken",
            ExchangeId::Kucoin => "kucoin",
            ExchangeId::Bitget => "bitget",
            ExchangeId::Gate => "gate",
            ExchangeId::Coinbase => "coinbase",
        }
    }

    /// The venue whose keys this API uses: one Binance key serves `binance` and
    /// `binanceusdm` (DESIGN.md §7).
    pub fn venue(self) -> &'static str {
        match self {
            ExchangeId::Binanceusdm => "binance",
            other => other.as_str(),
        }
    }

    /// Whether API keys of this exchange carry a passphrase that must be supplied.
    pub fn needs_passphrase(self) -> bool {
        matches!(
            self,
            ExchangeId::Okx | ExchangeId::Kucoin | ExchangeId::Bitget
        )
    }

    /// Whether the exchange has a testnet / demo mode at all (Kraken spot has none; KuCoin closed its sandbox in 2023).
    pub fn has_testnet(self) -> bool {
        !matches!(self, ExchangeId::Kraken | ExchangeId::Kucoin)
    }

    /// The protocol module for this exchange.
    pub fn api(self) -> &'static dyn Exchange {
        match self {
            ExchangeId::Binance => &binance::Binance,
            ExchangeId::Binanceusdm => &binanceusdm::BinanceUsdm,
            ExchangeId::Okx => &okx::Okx,
            ExchangeId::Bybit => &bybit::Bybit,
            ExchangeId::Kraken => &kraken::Kraken,
            ExchangeId::Kucoin => &kucoin::Kucoin,
            ExchangeId::Bitget => &bitget::Bitget,
            ExchangeId::Gate => &gate::Gate,
            ExchangeId::Coinbase => &coinbase::Coinbase,
        }
    }
}

impl fmt::Display for ExchangeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for an exchange id keygate does not know.
#[derive(Debug, Clone, thiserror::Error)]
#[error("unknown exchange id")]
pub struct UnknownExchange;

impl FromStr for ExchangeId {
    type Err = UnknownExchange;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ExchangeId::ALL
            .into_iter()
            .find(|e| e.as_str() == s)
            .ok_or(UnknownExchange)
    }
}

/// Production or testnet/demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Production,
    Testnet,
}

impl Environment {
    pub fn as_str(self) -> &'static str {
        match self {
            Environment::Production => "production",
            Environment::Testnet => "testnet",
        }
    }
}

/// What an endpoint does, for scope checks. Private endpoints missing from an exchange's
/// table are `Unknown` and denied unless a connection explicitly allows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointClass {
    Public,
    Read,
    Trade,
    Withdraw,
    Transfer,
    SubAccount,
    Manage,
    Unknown,
}

impl EndpointClass {
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointClass::Public => "public",
            EndpointClass::Read => "read",
            EndpointClass::Trade => "trade",
            EndpointClass::Withdraw => "withdraw",
            EndpointClass::Transfer => "transfer",
            EndpointClass::SubAccount => "sub_account",
            EndpointClass::Manage => "manage",
            EndpointClass::Unknown => "unknown",
        }
    }
}

/// Plaintext key material for one credential, alive only while a request is signed.
/// `Debug` is redacted; nothing here is `Serialize`.
pub struct ApiCredentials {
    /// The exchange's API key id (Coinbase: the key name `organizations/.../apiKeys/...`).
    pub api_key: SecretString,
    /// HMAC secret (absent for Ed25519/RSA/EC keys).
    pub api_secret: Option<SecretString>,
    /// OKX / KuCoin / Bitget passphrase.
    pub passphrase: Option<SecretString>,
    /// PEM private key: Binance Ed25519 or RSA, Coinbase EC P-256.
    pub private_key: Option<SecretString>,
}

impl fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiCredentials([redacted])")
    }
}

/// A request on its way to an exchange: path relative to the exchange host (e.g.
/// `/api/v3/order`), raw query string without `?`, headers and body.
#[derive(Debug, Clone)]
pub struct OutgoingRequest {
    pub method: Method,
    pub path: String,
    pub query: Option<String>,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Everything signing needs that is not in the request or the key: injected so that
/// signatures are reproducible.
#[derive(Debug, Clone)]
pub struct SignContext {
    /// Current time in milliseconds since the Unix epoch.
    pub now_ms: i64,
    /// A nonce strictly greater than any this key used before (Kraken), allocated by the
    /// caller from persisted state; modules that need none ignore it.
    pub nonce: u64,
    /// Random 16-byte value for protocols that want a random nonce (Coinbase JWT `nonce`).
    pub random_nonce: [u8; 16],
    pub environment: Environment,
    /// Host the request goes to (no scheme), e.g. `api.coinbase.com`; Coinbase binds it
    /// into the JWT `uri` claim.
    pub host: String,
    /// Receive window in milliseconds where the exchange supports one (Binance, Bybit).
    pub recv_window_ms: Option<u64>,
}

/// Why a request could not be signed. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("credential lacks the secret this exchange signs with")]
    MissingSecret,
    #[error("credential lacks the passphrase this exchange requires")]
    MissingPassphrase,
    #[error("private key could not be parsed")]
    InvalidPrivateKey,
    #[error("request cannot be signed: {0}")]
    InvalidRequest(&'static str),
}

/// Why a request or response body could not be parsed. Never carries key material.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed body: {0}")]
    Malformed(String),
    #[error("missing field: {0}")]
    MissingField(&'static str),
    #[error("invalid value for {0}")]
    InvalidValue(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

/// How the order's size is expressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizeUnit {
    /// `quantity` is in the base asset.
    Base,
    /// `quantity` is a number of contracts; multiply by the contract value.
    Contracts,
}

/// An order (or a leverage change) read out of a trade request, for policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderIntent {
    /// The exchange's own symbol as sent (`BTCUSDT`, `BTC-USDT-SWAP`, `XBTUSD`).
    pub symbol: String,
    /// Base asset when known (`BTC`).
    pub base: Option<String>,
    /// Quote / settlement asset when known (`USDT`).
    pub quote: Option<String>,
    pub side: Option<Side>,
    /// Order type as the exchange names it, lower-cased (`limit`, `market`, ...).
    pub order_type: Option<String>,
    pub quantity: Option<Decimal>,
    pub size_unit: SizeUnit,
    pub price: Option<Decimal>,
    /// True only when the exchange executes this order at `price` or better (plain limit,
    /// post-only, IOC/FOK limit, limit-maker, the limit leg of a stop-limit). Otherwise
    /// `price` is a trigger, an offset or a field the exchange ignores for this order type
    /// (a market order's `price`), and policy must not size the order by it.
    #[serde(default)]
    pub price_is_limit: bool,
    /// Size expressed in the quote asset (Binance `quoteOrderQty`, market buys by cost).
    pub quote_amount: Option<Decimal>,
    pub leverage: Option<Decimal>,
    pub reduce_only: bool,
    /// True when this request only cancels/amends and cannot increase exposure.
    pub is_cancel: bool,
    /// Other spellings the exchange accepts for this market (Kraken: `XBTUSD`, `XXBTZUSD`
    /// and `BTCUSD` are one pair), so that a symbol list entry written any of those ways
    /// applies to it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<String>,
    /// The order borrows what it trades with (auto-borrow: Binance margin
    /// `sideEffectType` `MARGIN_BUY` or `AUTO_BORROW_REPAY`, KuCoin `autoBorrow`, Bybit
    /// spot `isLeverage=1`, OKX spot in a margin `tdMode`): its leverage is the margin account's, which keygate does not
    /// know, so it is refused while `max_leverage` is set.
    #[serde(default)]
    pub borrows: bool,
}

impl OrderIntent {
    /// An intent for `symbol` with every optional field empty.
    pub fn new(symbol: impl Into<String>) -> Self {
        OrderIntent {
            symbol: symbol.into(),
            base: None,
            quote: None,
            side: None,
            order_type: None,
            quantity: None,
            size_unit: SizeUnit::Base,
            price: None,
            price_is_limit: false,
            quote_amount: None,
            leverage: None,
            reduce_only: false,
            is_cancel: false,
            aliases: Vec::new(),
            borrows: false,
        }
    }
}

/// A withdrawal read out of a withdraw request, for policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WithdrawalIntent {
    pub asset: String,
    pub amount: Decimal,
    pub address: String,
    pub network: Option<String>,
    pub tag: Option<String>,
}

/// What a request does beyond its class, for policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RequestIntent {
    /// Nothing policy needs to look at (reads, cancels of all orders, ...).
    None,
    Orders {
        orders: Vec<OrderIntent>,
    },
    Withdrawal(WithdrawalIntent),
    /// Internal transfer between accounts of the same owner.
    Transfer {
        asset: String,
        amount: Option<Decimal>,
    },
    /// A transfer on a `transfer` endpoint whose body sends the funds to (or takes them
    /// from) another account, a sub-account (OKX `asset/transfer` type 1, Bybit's
    /// universal transfer, KuCoin's `PARENT_TO_SUB`): it needs the `sub_account` scope, as
    /// the exchanges' own sub-account transfer endpoints do. A sub-account's keys are not
    /// keygate's, so what is sent there escapes every cap and allowlist.
    SubAccountTransfer {
        asset: String,
        amount: Option<Decimal>,
    },
    /// A margin loan (Binance `margin/borrow-repay` with `type=BORROW` and `margin/loan`,
    /// KuCoin `margin/borrow`, Gate's margin and unified loans), or a margin setting that
    /// raises leverage (Coinbase `cfm/intraday/margin_setting`): exposure beyond what the
    /// account holds, at a leverage keygate cannot tell, so refused while `max_leverage`
    /// is set.
    Borrow {
        asset: String,
        amount: Option<Decimal>,
    },
}

/// One asset's balance, in one shape for every exchange.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Balance {
    pub asset: String,
    pub free: Decimal,
    pub locked: Decimal,
    pub total: Decimal,
    /// Exchange account type when the exchange has several (`spot`, `funding`, `futures`).
    pub account_type: Option<String>,
}

/// Rate-limit state reported by the exchange's response headers, in one shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimitStatus {
    /// Weight / requests used in the current window.
    pub used: Option<u64>,
    /// The window's limit, when the exchange reports or documents it.
    pub limit: Option<u64>,
    /// What is left in the current window.
    pub remaining: Option<u64>,
    /// When the window resets, in ms since the epoch, when reported.
    pub reset_at_ms: Option<i64>,
    /// How long until the window resets, in ms, where the exchange reports a countdown
    /// instead (KuCoin's `gw-ratelimit-reset`): this crate has no clock to make it an
    /// instant.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reset_in_ms: Option<i64>,
}

impl RateLimitStatus {
    /// What is left: reported, or the limit less what is used.
    pub fn left(&self) -> Option<u64> {
        self.remaining
            .or_else(|| self.limit.zip(self.used).map(|(l, u)| l.saturating_sub(u)))
    }

    /// What is used: reported, or the limit less what is left.
    pub fn spent(&self) -> Option<u64> {
        self.used.or_else(|| {
            self.limit
                .zip(self.remaining)
                .map(|(l, r)| l.saturating_sub(r))
        })
    }
}

/// One of the exchange's rate-limit budgets: what a call is charged against before it goes
/// out ([`Exchange::request_cost`]), and what an answer's headers report
/// ([`Exchange::rate_limits`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Budget {
    /// Which of the exchange's counters: `""` for an exchange's single budget, a name such as
    /// `"orders-10s"`, or the endpoint's path where the exchange counts per endpoint.
    pub name: std::borrow::Cow<'static, str>,
    /// Counted per source IP, so every key keygate sends from its address shares it; else per
    /// key.
    pub per_ip: bool,
    /// The window's length, for an answer that reports no reset time.
    pub window_ms: i64,
}

impl Budget {
    /// An exchange's one budget for everything, over a minute.
    pub fn whole(per_ip: bool) -> Budget {
        Budget {
            name: std::borrow::Cow::Borrowed(""),
            per_ip,
            window_ms: 60_000,
        }
    }

    /// A named budget over `window_ms`.
    pub const fn named(name: &'static str, per_ip: bool, window_ms: i64) -> Budget {
        Budget {
            name: std::borrow::Cow::Borrowed(name),
            per_ip,
            window_ms,
        }
    }

    /// The budget of endpoint `method path` of `api`, over windows of `window_ms`, where the
    /// exchange counts each endpoint on its own (Bybit, Bitget, Gate): named by the method
    /// and `endpoint`, the module's name for it (the path, or the endpoint table's row
    /// where paths carry ids). A path the table lacks (`None`) shares the budget `"?"`.
    ///
    /// Public endpoints (as `api` classifies them) are counted per source IP, as these
    /// exchanges count them; the others per key.
    pub fn endpoint_of(
        api: &dyn Exchange,
        method: &Method,
        path: &str,
        endpoint: Option<String>,
        window_ms: i64,
    ) -> Budget {
        let name = match endpoint {
            Some(e) => std::borrow::Cow::Owned(format!("{method} {e}")),
            None => std::borrow::Cow::Borrowed("?"),
        };
        Budget {
            name,
            per_ip: api.classify(method, path) == EndpointClass::Public,
            window_ms,
        }
    }
}

/// What a call costs in one of the exchange's budgets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub budget: Budget,
    /// The call's weight in the budget (1 where the exchange counts requests).
    pub weight: u64,
}

impl Charge {
    /// `weight` in `budget`.
    pub fn of(budget: &Budget, weight: u64) -> Charge {
        Charge {
            budget: budget.clone(),
            weight,
        }
    }
}

/// Common kinds of exchange error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidKey,
    BadSignature,
    IpNotAllowed,
    RateLimited,
    InsufficientBalance,
    TimestampOutOfWindow,
    PermissionDenied,
    Unknown,
}

/// A request keygate itself issues (key check, balance sync).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedRequest {
    pub method: Method,
    pub path: &'static str,
    pub query: Option<&'static str>,
}

/// The key's real permissions and restrictions as the exchange reports them.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct KeyCheck {
    pub can_read: bool,
    pub can_trade: bool,
    pub can_withdraw: bool,
    pub can_transfer: bool,
    pub ip_restricted: bool,
    /// When the exchange will take trading (or the key) away, ms since the epoch.
    pub expires_at_ms: Option<i64>,
    /// Human-readable warnings: "withdrawals enabled", "no IP restriction", ...
    pub warnings: Vec<String>,
}

impl KeyCheck {
    /// Fill `warnings` from the flags (call after setting them).
    pub fn with_standard_warnings(mut self) -> Self {
        if self.can_withdraw {
            self.warnings.push("withdrawals enabled".into());
        }
        if self.can_transfer {
            self.warnings.push("transfers enabled".into());
        }
        if !self.ip_restricted {
            self.warnings.push("no IP restriction".into());
        }
        if self.expires_at_ms.is_some() {
            self.warnings
                .push("key or trading permission expires".into());
        }
        self
    }
}

/// Base URLs (scheme + host, no trailing slash) for one environment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hosts {
    pub production: &'static str,
    /// `None` where the exchange has no testnet; `Some(production)` where demo mode is a
    /// header on the production host (OKX, Bitget).
    pub testnet: Option<&'static str>,
}

/// One exchange API. Implementations are stateless unit structs.
pub trait Exchange: Send + Sync + 'static {
    fn id(&self) -> ExchangeId;

    fn hosts(&self) -> Hosts;

    /// Remove every piece of auth a client may have put on the request (signature query
    /// parameters, auth headers, timestamps that are part of the signature), so keygate can
    /// sign it afresh.
    fn strip_auth(&self, req: &mut OutgoingRequest);

    /// The class of `method path` (path relative to the host, no query).
    fn classify(&self, method: &Method, path: &str) -> EndpointClass;

    /// Sign `req` in place, exactly as the exchange verifies it (query, headers, body).
    /// For testnet/demo environments, also adds the demo header where that is how the
    /// exchange selects demo mode.
    fn sign(
        &self,
        req: &mut OutgoingRequest,
        creds: &ApiCredentials,
        ctx: &SignContext,
    ) -> Result<(), SignError>;

    /// What the request does, for policy. Called for `Trade`, `Withdraw` and `Transfer`
    /// classes; must return an error rather than `RequestIntent::None` when a trade or
    /// withdraw body cannot be understood.
    fn parse_intent(
        &self,
        class: EndpointClass,
        req: &OutgoingRequest,
    ) -> Result<RequestIntent, ParseError>;

    /// The request that reads balances.
    fn balance_request(&self) -> PlannedRequest;

    /// Balances from the body of a `balance_request` response.
    fn parse_balances(&self, body: &[u8]) -> Result<Vec<Balance>, ParseError>;

    /// The request that reports the key's permissions and IP restriction.
    fn key_check_request(&self) -> PlannedRequest;

    fn parse_key_check(&self, body: &[u8]) -> Result<KeyCheck, ParseError>;

    /// Rate-limit state from response headers.
    fn rate_limit(&self, headers: &HeaderMap) -> Option<RateLimitStatus>;

    /// Whether the exchange counts [`Exchange::rate_limit`]'s budget, and bans on
    /// 429/418, per source IP rather than per key: then every key reached from one host
    /// shares them (Binance's request weight and its IP bans).
    fn limits_per_ip(&self) -> bool {
        false
    }

    /// The budget the exchange counts `method path` in, where that depends on the endpoint
    /// (Bybit, Bitget, Gate: the endpoint's own; KuCoin: its pool), for the default
    /// [`Exchange::request_cost`] and [`Exchange::rate_limits`]. `None`: one budget for
    /// everything.
    fn endpoint_budget(&self, _method: &Method, _path: &str) -> Option<Budget> {
        None
    }

    /// The budgets `req` counts against, and its weight in each, so the gateway can hold a
    /// call that would go over what the exchange has left. Default: one budget (the
    /// endpoint's, or the exchange's), every call weighing 1.
    fn request_cost(&self, req: &OutgoingRequest) -> Vec<Charge> {
        let budget = self
            .endpoint_budget(&req.method, &req.path)
            .unwrap_or_else(|| Budget::whole(self.limits_per_ip()));
        vec![Charge { budget, weight: 1 }]
    }

    /// What the answer to `method path` reports for each of the budgets
    /// [`Exchange::request_cost`] names. Default: [`Exchange::rate_limit`] for the one
    /// budget.
    fn rate_limits(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Vec<(Budget, RateLimitStatus)> {
        let Some(rl) = self.rate_limit(headers) else {
            return Vec::new();
        };
        let budget = self
            .endpoint_budget(method, path)
            .unwrap_or_else(|| Budget::whole(self.limits_per_ip()));
        vec![(budget, rl)]
    }

    /// Common kind of an error response, `None` when the response is not an error.
    fn classify_error(&self, status: u16, body: &[u8]) -> Option<ErrorKind>;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the exchanges documented to count their rate limit (and ban) per source IP
    /// share one window per host in the gateway; the others keep one per key.
    #[test]
    fn only_binance_limits_per_ip() {
        let per_ip: Vec<_> = ExchangeId::ALL
            .into_iter()
            .filter(|id| id.api().limits_per_ip())
            .collect();
        assert_eq!(per_ip, vec![ExchangeId::Binance, ExchangeId::Binanceusdm]);
    }

    /// Each JSON exchange's withdrawal is read with the network keygate checks against
    /// a network-pinned allowlist entry; the same field in another case, another type
    /// (and on Gate a query string beside the body) is refused rather than left for the
    /// exchange to read a second network from.
    #[test]
    fn withdrawal_networks_are_read_strictly() {
        let cases: [(ExchangeId, &str, &str, &str); 6] = [
            (
                ExchangeId::Okx,
                "/api/v5/asset/withdrawal",
                r#"{"ccy":"USDT","amt":"1","dest":"4","toAddr":"0xabc","#,
                "chain",
            ),
            (
                ExchangeId::Bybit,
                "/v5/asset/withdraw/create",
                r#"{"coin":"USDT","amount":"1","address":"0xabc","#,
                "chain",
            ),
            (
                ExchangeId::Bitget,
                "/api/v2/spot/wallet/withdrawal",
                r#"{"coin":"USDT","size":"1","transferType":"on_chain","address":"0xabc","#,
                "chain",
            ),
            (
                ExchangeId::Kucoin,
                "/api/v1/withdrawals",
                r#"{"currency":"USDT","amount":"1","address":"0xabc","#,
                "chain",
            ),
            (
                ExchangeId::Gate,
                "/api/v4/withdrawals",
                r#"{"currency":"USDT","amount":"1","address":"0xabc","#,
                "chain",
            ),
            (
                ExchangeId::Coinbase,
                "/v2/accounts/acc-1/transactions",
                r#"{"type":"send","currency":"USDC","amount":"1","to":"0xabc","#,
                "network",
            ),
        ];
        let parse = |id: ExchangeId, path: &str, body: String, query: Option<&str>| {
            let req = OutgoingRequest {
                method: Method::POST,
                path: path.into(),
                query: query.map(str::to_string),
                headers: http::HeaderMap::new(),
                body: bytes::Bytes::from(body),
            };
            assert_eq!(
                id.api().classify(&Method::POST, path),
                EndpointClass::Withdraw
            );
            id.api().parse_intent(EndpointClass::Withdraw, &req)
        };
        for (id, path, head, key) in cases {
            let upper = key.to_ascii_uppercase();
            let network = |body: String| match parse(id, path, body.clone(), None) {
                Ok(RequestIntent::Withdrawal(w)) => Ok(w.network),
                other => Err(format!("{other:?}")),
            };
            assert_eq!(
                network(format!(r#"{head}"{key}":"ETH"}}"#)),
                Ok(Some("ETH".into())),
                "{id:?}"
            );
            assert_eq!(
                network(format!(r#"{head}"{key}":""}}"#)),
                Ok(None),
                "{id:?}"
            );
            for bad in [
                format!(r#"{head}"{key}":"ETH","{upper}":"ARBITRUM"}}"#),
                format!(r#"{head}"{upper}":"ARBITRUM"}}"#),
                format!(r#"{head}"{key}":["ETH"]}}"#),
                format!(r#"{head}"{key}":{{"name":"ETH"}}}}"#),
            ] {
                assert!(network(bad.clone()).is_err(), "{id:?}: {bad}");
            }
            let body = format!(r#"{head}"{key}":"ETH"}}"#);
            let query = format!("{key}=ARBITRUM");
            assert!(
                parse(id, path, body, Some(&query)).is_err(),
                "{id:?}: a query beside the body"
            );
        }
    }

    #[test]
    fn ids_round_trip() {
        for id in ExchangeId::ALL {
            assert_eq!(id.as_str().parse::<ExchangeId>().unwrap(), id);
            assert_eq!(id.api().id(), id);
        }
        assert!("binance.us".parse::<ExchangeId>().is_err());
    }
}
