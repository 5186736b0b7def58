//! What a KuCoin call costs in KuCoin's rate-limit pools, before it goes out (issue 7).
//!
//! KuCoin ("rate limit 2.0", <https://www.kucoin.com/docs-new/rate-limit>) counts weight in
//! resource pools over 30 s: Spot (orders, fills, margin, fees; per account), Management
//! (accounts, deposits, withdrawals, transfers, sub-accounts; per account), Earn (per
//! account) and Public (per source IP). Each endpoint has a weight in one pool, and the
//! answer's `gw-ratelimit-*` headers report that pool. The weights are those of KuCoin's
//! generated SDK (`Kucoin/kucoin-universal-sdk`, "API-RATE-LIMIT-WEIGHT"); where CCXT's
//! table says more, the larger. A test checks them against CCXT's table.
//!
//! An endpoint missing here is charged the heaviest weight of every pool it may count in:
//! a public path the Public pool's 20; any other path Spot's 50, Management's 30 and
//! Public's 20.

use http::Method;

use crate::binance::canonical_path;
use crate::{util, Budget, Charge, Exchange};

/// KuCoin's windows are 30 s, from the account's first request in them.
const WINDOW_MS: i64 = 30_000;
pub(crate) static SPOT: Budget = Budget::named("spot-30s", false, WINDOW_MS);
pub(crate) static MANAGEMENT: Budget = Budget::named("management-30s", false, WINDOW_MS);
pub(crate) static PUBLIC: Budget = Budget::named("public-30s", true, WINDOW_MS);
pub(crate) static EARN: Budget = Budget::named("earn-30s", false, WINDOW_MS);

/// The heaviest weights (SDK): Spot's deprecated isolated-margin reads, Management's
/// sub-account key changes, Public's announcements.
const SPOT_MAX: u64 = 50;
const MANAGEMENT_MAX: u64 = 30;
const PUBLIC_MAX: u64 = 20;

#[derive(Clone, Copy)]
enum Pool {
    S,
    M,
    P,
    E,
}
use Pool::{E, M, P, S};

impl Pool {
    fn budget(self) -> &'static Budget {
        match self {
            S => &SPOT,
            M => &MANAGEMENT,
            P => &PUBLIC,
            E => &EARN,
        }
    }
}

/// `(methods, lower-cased path pattern, pool, weight)`, first match wins. Patterns as
/// [`util::path_matches`]: `{id}` one segment, a final `**` any further ones.
const TABLE: &[(&str, &str, Pool, u64)] = &[
    // public market data
    ("GET", "/api/v1/market/alltickers", P, 15),
    ("GET", "/api/v1/market/orderbook/level1", P, 2),
    // the SDK says 2, CCXT 4 (KuCoin's older docs)
    ("GET", "/api/v1/market/orderbook/level2_20", P, 4),
    ("GET", "/api/v1/market/orderbook/level2_100", P, 4),
    ("GET", "/api/v1/market/stats", P, 15),
    ("GET", "/api/v1/market/histories", P, 3),
    ("GET", "/api/v1/market/candles", P, 3),
    ("GET", "/api/v1/markets", P, 3),
    ("GET", "/api/v3/market/orderbook/level2", S, 3),
    ("GET", "/api/v1/symbols/**", P, 4),
    ("GET", "/api/v2/symbols/**", P, 4),
    ("GET", "/api/v1/currencies/**", P, 3),
    ("GET", "/api/v3/currencies/**", P, 3),
    ("GET", "/api/v1/prices", P, 3),
    ("GET", "/api/v1/timestamp", P, 3),
    ("GET", "/api/v1/status", P, 3),
    ("GET", "/api/v1/mark-price/all-symbols", P, 10),
    ("GET", "/api/v1/mark-price/{symbol}/current", P, 2),
    // the SDK counts it in the Spot pool, but it goes out unsigned, with no account to
    // count it against: charged, and learned, in the Public pool
    ("GET", "/api/v1/margin/config", P, 25),
    ("POST", "/api/v1/bullet-public", P, 10),
    ("POST", "/api/v1/bullet-private", S, 10),
    // accounts and fees
    ("GET", "/api/v1/accounts", M, 5),
    ("GET", "/api/v1/accounts/ledgers", M, 2),
    ("GET", "/api/v1/accounts/transferable", M, 20),
    ("GET", "/api/v1/accounts/{id}", M, 5),
    ("GET", "/api/v1/hf/accounts/ledgers", S, 2),
    ("GET", "/api/v1/hf/accounts/opened", S, 30),
    ("GET", "/api/v1/user-info", M, 20),
    ("GET", "/api/v2/user-info", M, 20),
    ("GET", "/api/v1/user/api-key", M, 20),
    ("GET", "/api/v1/base-fee", S, 3),
    ("GET", "/api/v1/trade-fees", S, 3),
    // classic spot orders
    ("POST", "/api/v1/orders", S, 2),
    ("POST", "/api/v1/orders/test", S, 2),
    ("POST", "/api/v1/orders/multi", S, 3),
    ("GET", "/api/v1/orders", S, 2),
    ("DELETE", "/api/v1/orders", S, 20),
    ("GET", "/api/v1/orders/{id}", S, 2),
    ("DELETE", "/api/v1/orders/{id}", S, 3),
    ("GET", "/api/v1/order/client-order/{id}", S, 3),
    ("DELETE", "/api/v1/order/client-order/{id}", S, 5),
    ("GET", "/api/v1/fills", S, 10),
    ("GET", "/api/v1/limit/orders", S, 3),
    ("GET", "/api/v1/limit/fills", S, 20),
    // high-frequency spot orders
    ("POST", "/api/v1/hf/orders", S, 1),
    ("POST", "/api/v1/hf/orders/test", S, 1),
    ("POST", "/api/v1/hf/orders/sync", S, 1),
    ("POST", "/api/v1/hf/orders/multi", S, 1),
    ("POST", "/api/v1/hf/orders/multi/sync", S, 1),
    ("POST", "/api/v1/hf/orders/alter", S, 3),
    ("POST", "/api/v1/hf/orders/dead-cancel-all", S, 2),
    ("DELETE", "/api/v1/hf/orders", S, 2),
    ("DELETE", "/api/v1/hf/orders/cancelall", S, 30),
    ("DELETE", "/api/v1/hf/orders/cancel/{id}", S, 2),
    ("DELETE", "/api/v1/hf/orders/sync/client-order/{id}", S, 1),
    ("DELETE", "/api/v1/hf/orders/sync/{id}", S, 1),
    ("DELETE", "/api/v1/hf/orders/client-order/{id}", S, 1),
    ("DELETE", "/api/v1/hf/orders/{id}", S, 1),
    ("GET", "/api/v1/hf/orders/active/**", S, 2),
    ("GET", "/api/v1/hf/orders/done", S, 2),
    ("GET", "/api/v1/hf/orders/dead-cancel-all/query", S, 2),
    ("GET", "/api/v1/hf/orders/client-order/{id}", S, 2),
    ("GET", "/api/v1/hf/orders/{id}", S, 2),
    ("GET", "/api/v1/hf/fills", S, 2),
    // stop and OCO orders
    ("POST", "/api/v1/stop-order", S, 2),
    ("GET", "/api/v1/stop-order", S, 8),
    ("GET", "/api/v1/stop-order/queryorderbyclientoid", S, 3),
    ("DELETE", "/api/v1/stop-order/cancelorderbyclientoid", S, 5),
    ("DELETE", "/api/v1/stop-order/cancel", S, 3),
    ("GET|DELETE", "/api/v1/stop-order/{id}", S, 3),
    ("POST", "/api/v3/oco/order", S, 2),
    ("GET", "/api/v3/oco/order/details/{id}", S, 2),
    ("GET", "/api/v3/oco/order/{id}", S, 2),
    ("DELETE", "/api/v3/oco/order/{id}", S, 3),
    ("GET", "/api/v3/oco/orders", S, 2),
    ("DELETE", "/api/v3/oco/orders", S, 3),
    ("GET", "/api/v3/oco/client-order/{id}", S, 2),
    ("DELETE", "/api/v3/oco/client-order/{id}", S, 3),
    // margin
    ("POST", "/api/v1/margin/order", S, 5),
    ("POST", "/api/v1/margin/order/test", S, 5),
    ("POST", "/api/v3/hf/margin/order", S, 5),
    ("POST", "/api/v3/hf/margin/order/test", S, 5),
    ("DELETE", "/api/v3/hf/margin/orders", S, 10),
    ("DELETE", "/api/v3/hf/margin/orders/**", S, 5),
    ("POST|GET", "/api/v3/margin/borrow", S, 15),
    ("POST", "/api/v3/margin/repay", S, 10),
    ("GET", "/api/v3/margin/repay", S, 15),
    ("GET", "/api/v3/margin/accounts", S, 15),
    ("GET", "/api/v3/isolated/accounts", S, 15),
    ("GET", "/api/v1/margin/account", S, 40),
    ("GET", "/api/v1/isolated/**", S, 50),
    // deposits, withdrawals, transfers, sub-accounts
    ("GET", "/api/v1/deposits", M, 5),
    ("GET", "/api/v1/deposit-addresses", M, 5),
    ("POST", "/api/v1/deposit-addresses", M, 20),
    ("GET", "/api/v2/deposit-addresses", M, 5),
    ("GET", "/api/v3/deposit-addresses", M, 5),
    ("POST", "/api/v3/deposit-address/create", M, 20),
    ("GET", "/api/v1/hist-deposits", M, 5),
    ("POST", "/api/v1/withdrawals", M, 5),
    ("POST", "/api/v3/withdrawals", M, 5),
    ("GET", "/api/v1/withdrawals/quotas", M, 20),
    ("GET|DELETE", "/api/v1/withdrawals/**", M, 20),
    ("GET", "/api/v1/hist-withdrawals", M, 20),
    // the SDK says 10, CCXT 15
    ("POST", "/api/v2/accounts/inner-transfer", M, 15),
    ("POST", "/api/v3/accounts/universal-transfer", M, 4),
    ("POST", "/api/v2/accounts/sub-transfer", M, 30),
    ("GET", "/api/v1/sub/user", M, 20),
    ("GET", "/api/v2/sub/user", M, 20),
    ("POST", "/api/v2/sub/user/created", M, 15),
    ("GET", "/api/v1/sub-accounts", M, 20),
    ("GET", "/api/v2/sub-accounts", M, 20),
    ("GET", "/api/v1/sub-accounts/{id}", M, 15),
    ("*", "/api/v1/sub/**", M, MANAGEMENT_MAX),
    ("*", "/api/v2/sub/**", M, MANAGEMENT_MAX),
    ("*", "/api/v1/earn/**", E, 5),
];

/// The table's row for `method path`.
fn row(method: &Method, path: &str) -> Option<(Pool, u64)> {
    let p = canonical_path(path)?;
    TABLE
        .iter()
        .find(|(m, pattern, _, _)| {
            (*m == "*" || m.split('|').any(|m| m == method.as_str()))
                && util::path_matches(pattern, &p)
        })
        .map(|(_, _, pool, w)| (*pool, *w))
}

/// The pool `method path` counts in, when the table knows it.
pub(crate) fn pool(method: &Method, path: &str) -> Option<&'static Budget> {
    row(method, path).map(|(pool, _)| pool.budget())
}

/// What `method path` costs.
pub(crate) fn cost(method: &Method, path: &str) -> Vec<Charge> {
    if let Some((pool, weight)) = row(method, path) {
        return vec![Charge::of(pool.budget(), weight)];
    }
    let public = method == Method::GET
        && crate::kucoin::Kucoin.classify(method, path) == crate::EndpointClass::Public;
    if public {
        vec![Charge::of(&PUBLIC, PUBLIC_MAX)]
    } else {
        // signed, it counts in one of the account's pools; sent unsigned, in the IP's
        vec![
            Charge::of(&SPOT, SPOT_MAX),
            Charge::of(&MANAGEMENT, MANAGEMENT_MAX),
            Charge::of(&PUBLIC, PUBLIC_MAX),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(method: Method, path: &str) -> Vec<(String, u64)> {
        cost(&method, path)
            .into_iter()
            .map(|c| (c.budget.name.to_string(), c.weight))
            .collect()
    }

    fn w(n: &str, weight: u64) -> (String, u64) {
        (n.to_string(), weight)
    }

    /// Pools and weights from KuCoin's SDK, ids in paths included.
    #[test]
    fn known_endpoints_have_their_pool_and_weight() {
        assert_eq!(names(Method::POST, "/api/v1/hf/orders"), [w("spot-30s", 1)]);
        assert_eq!(
            names(Method::DELETE, "/api/v1/hf/orders/5c35c02703aa673ceec2a168"),
            [w("spot-30s", 1)]
        );
        assert_eq!(
            names(Method::DELETE, "/api/v1/hf/orders/cancelAll"),
            [w("spot-30s", 30)]
        );
        assert_eq!(
            names(Method::GET, "/api/v1/accounts"),
            [w("management-30s", 5)]
        );
        assert_eq!(
            names(Method::GET, "/api/v1/accounts/ledgers"),
            [w("management-30s", 2)]
        );
        assert_eq!(
            names(Method::GET, "/api/v1/market/allTickers"),
            [w("public-30s", 15)]
        );
        assert_eq!(
            names(Method::POST, "/api/v3/withdrawals"),
            [w("management-30s", 5)]
        );
        assert_eq!(
            names(
                Method::DELETE,
                "/api/v1/withdrawals/5bffb63303aa675e8bbe18f9"
            ),
            [w("management-30s", 20)]
        );
        assert!(PUBLIC.per_ip && !SPOT.per_ip && !MANAGEMENT.per_ip && !EARN.per_ip);
    }

    /// Fail closed: an endpoint the table lacks is charged the heaviest weight of every
    /// pool it may count in.
    #[test]
    fn unknown_endpoints_are_charged_heavily() {
        assert_eq!(
            names(Method::GET, "/api/v1/market/somethingNew"),
            [w("public-30s", PUBLIC_MAX)]
        );
        let every = [
            w("spot-30s", SPOT_MAX),
            w("management-30s", MANAGEMENT_MAX),
            w("public-30s", PUBLIC_MAX),
        ];
        assert_eq!(names(Method::POST, "/api/v9/new"), every);
        assert_eq!(names(Method::GET, "/api/v1/%61ccounts"), every);
    }
}
