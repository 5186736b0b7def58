//! Which API a request belongs to. The nine APIs share one port; their path prefixes
//! mostly do not collide, and where they do a header decides:
//!
//! | prefix | API |
//! |---|---|
//! | `/api/v3/brokerage/…`, `/v2/…` | Coinbase (Advanced Trade, and the v2 "Sign in with Coinbase" API) |
//! | `/api/v3/…` | KuCoin if a `KC-API-KEY` header is present or the first segment is a KuCoin-only family (`currencies`, `hf`, `margin`, `withdrawals`, `mark-price`, `project`, `purchase`, `redeem`, `earn`, `announcements`, `lend`); otherwise Binance spot |
//! | `/sapi/…` | Binance spot (wallet/SAPI) |
//! | `/fapi/…` | Binance USD-M futures |
//! | `/api/v5/…` | OKX |
//! | `/v5/…` | Bybit |
//! | `/0/…` | Kraken |
//! | `/api/v1/…` | KuCoin |
//! | `/api/v2/…` | Bitget if `ACCESS-KEY` is present, KuCoin if `KC-API-KEY` is; unsigned: Bitget for its families (`spot`, `mix`, `public`, `margin`, `earn`, `common`, `user`, `tax`, `p2p`, `broker`, `copy`, `convert`, `uta`), else KuCoin |
//! | `/api/v4/…` | Gate |
//!
//! Binance spot never uses `/api/v1`, `/api/v2` or `/api/v3/brokerage`, so the rules are
//! unambiguous for every path the real APIs have.

use http::HeaderMap;

/// The APIs, one per CCXT id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Api {
    Binance,
    BinanceUsdm,
    Okx,
    Bybit,
    Kraken,
    Kucoin,
    Bitget,
    Gate,
    Coinbase,
}

impl Api {
    pub(crate) fn id(self) -> &'static str {
        match self {
            Api::Binance => "binance",
            Api::BinanceUsdm => "binanceusdm",
            Api::Okx => "okx",
            Api::Bybit => "bybit",
            Api::Kraken => "kraken",
            Api::Kucoin => "kucoin",
            Api::Bitget => "bitget",
            Api::Gate => "gate",
            Api::Coinbase => "coinbase",
        }
    }
}

const KUCOIN_V3_FAMILIES: [&str; 11] = [
    "currencies",
    "hf",
    "margin",
    "withdrawals",
    "mark-price",
    "project",
    "purchase",
    "redeem",
    "earn",
    "announcements",
    "lend",
];

const BITGET_V2_FAMILIES: [&str; 13] = [
    "spot", "mix", "public", "margin", "earn", "common", "user", "tax", "p2p", "broker", "copy",
    "convert", "uta",
];

fn first_segment(rest: &str) -> &str {
    rest.split('/').next().unwrap_or("")
}

pub(crate) fn route(path: &str, headers: &HeaderMap) -> Option<Api> {
    let kucoin_signed = headers.contains_key("kc-api-key");
    let bitget_signed = headers.contains_key("access-key");
    if path == "/api/v3/brokerage" || path.starts_with("/api/v3/brokerage/") {
        return Some(Api::Coinbase);
    }
    if path.starts_with("/v2/") {
        return Some(Api::Coinbase);
    }
    if let Some(rest) = path.strip_prefix("/api/v3/") {
        if kucoin_signed || KUCOIN_V3_FAMILIES.contains(&first_segment(rest)) {
            return Some(Api::Kucoin);
        }
        return Some(Api::Binance);
    }
    if path.starts_with("/sapi/") {
        return Some(Api::Binance);
    }
    if path.starts_with("/fapi/") {
        return Some(Api::BinanceUsdm);
    }
    if path.starts_with("/api/v5/") {
        return Some(Api::Okx);
    }
    if path.starts_with("/v5/") {
        return Some(Api::Bybit);
    }
    if path.starts_with("/0/") {
        return Some(Api::Kraken);
    }
    if path.starts_with("/api/v1/") {
        return Some(Api::Kucoin);
    }
    if let Some(rest) = path.strip_prefix("/api/v2/") {
        if bitget_signed {
            return Some(Api::Bitget);
        }
        if kucoin_signed {
            return Some(Api::Kucoin);
        }
        if BITGET_V2_FAMILIES.contains(&first_segment(rest)) {
            return Some(Api::Bitget);
        }
        return Some(Api::Kucoin);
    }
    if path.starts_with("/api/v4/") {
        return Some(Api::Gate);
    }
    None
}

/// The CCXT id of the API the mock dispatches `path` (with these request headers) to, or
/// `None` when no API it serves has that prefix. Rules in this module's docs.
pub fn exchange_for(path: &str, headers: &HeaderMap) -> Option<&'static str> {
    route(path, headers).map(Api::id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(path: &str, header: Option<&'static str>) -> Option<&'static str> {
        let mut h = HeaderMap::new();
        if let Some(name) = header {
            h.insert(name, "x".parse().unwrap());
        }
        exchange_for(path, &h)
    }

    #[test]
    fn dispatch_rules() {
        assert_eq!(r("/api/v3/account", None), Some("binance"));
        assert_eq!(r("/api/v3/brokerage/accounts", None), Some("coinbase"));
        assert_eq!(r("/v2/accounts", None), Some("coinbase"));
        assert_eq!(r("/api/v3/currencies", None), Some("kucoin"));
        assert_eq!(r("/api/v3/withdrawals", Some("kc-api-key")), Some("kucoin"));
        assert_eq!(r("/sapi/v1/account/apiRestrictions", None), Some("binance"));
        assert_eq!(r("/fapi/v2/balance", None), Some("binanceusdm"));
        assert_eq!(r("/api/v5/account/balance", None), Some("okx"));
        assert_eq!(r("/v5/account/wallet-balance", None), Some("bybit"));
        assert_eq!(r("/0/private/Balance", None), Some("kraken"));
        assert_eq!(r("/api/v1/accounts", None), Some("kucoin"));
        assert_eq!(r("/api/v2/spot/account/assets", None), Some("bitget"));
        assert_eq!(r("/api/v2/symbols", None), Some("kucoin"));
        assert_eq!(r("/api/v2/anything", Some("access-key")), Some("bitget"));
        assert_eq!(r("/api/v2/spot/x", Some("kc-api-key")), Some("kucoin"));
        assert_eq!(r("/api/v4/spot/accounts", None), Some("gate"));
        assert_eq!(r("/nope", None), None);
    }
}
