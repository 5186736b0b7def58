//! What a Binance call costs in Binance's rate-limit budgets, before it goes out (issue 7:
//! "when a call would push it over the exchange's limit, answer 429 itself").
//!
//! Binance counts three kinds of budget:
//! - REQUEST_WEIGHT per source IP and minute (`X-MBX-USED-WEIGHT-1M`), where each endpoint
//!   has a documented weight, some of them by parameter (`depth` by `limit`, tickers by
//!   how many symbols). A 429 follows when it runs out, and a 418 IP ban follows further
//!   429s.
//! - On spot, `/sapi` endpoints count against an IP weight of their own
//!   (`X-SAPI-USED-IP-WEIGHT-1M`) or a per-account (UID) weight
//!   (`X-SAPI-USED-UID-WEIGHT-1M`), not against REQUEST_WEIGHT.
//! - ORDERS per account (`X-MBX-ORDER-COUNT-10S`, `-1D` on spot, `-1M` on USD-M): every
//!   new order, each order of an order list, and a cancel-replace.
//!
//! The weights are the exchange's documented ones (spot: "Request Weight" of each
//! endpoint in <https://developers.binance.com/docs/binance-spot-api-docs/rest-api>; USD-M:
//! <https://developers.binance.com/docs/derivatives/usds-margined-futures>). A test checks
//! them against CCXT's tables. An endpoint this table does not know is charged
//! [`UNKNOWN_WEIGHT`]: fail closed, it never counts as cheap.

use http::Method;

use crate::binance::canonical_path;
use crate::{Budget, Charge, OutgoingRequest};

/// REQUEST_WEIGHT per IP and minute, `/api` on spot, `/fapi` on USD-M.
pub(crate) const WEIGHT_1M: Budget = Budget::named("weight-1m", true, 60_000);
/// Spot `/sapi` IP weight per minute.
pub(crate) const SAPI_IP_1M: Budget = Budget::named("sapi-ip-1m", true, 60_000);
/// Spot `/sapi` UID weight per minute.
pub(crate) const SAPI_UID_1M: Budget = Budget::named("sapi-uid-1m", false, 60_000);
/// New orders per account and 10 s (spot).
pub(crate) const ORDERS_10S: Budget = Budget::named("orders-10s", false, 10_000);
/// New orders per account and 10 s (USD-M). Named apart from spot's: one key may serve
/// both, and each market counts its own.
pub(crate) const FAPI_ORDERS_10S: Budget = Budget::named("fapi-orders-10s", false, 10_000);
/// New orders per account and day (spot).
pub(crate) const ORDERS_1D: Budget = Budget::named("orders-1d", false, 86_400_000);
/// New orders per account and minute (USD-M).
pub(crate) const FAPI_ORDERS_1M: Budget = Budget::named("fapi-orders-1m", false, 60_000);

/// The weight charged for an endpoint missing from the tables: as much as the heaviest
/// common one (`depth` at its largest is 250), so an unknown call is never waved through
/// the last of a window.
pub(crate) const UNKNOWN_WEIGHT: u64 = 250;
/// The UID weight charged for a `/sapi` endpoint missing from the table: as much as a
/// withdrawal or a universal transfer.
pub(crate) const UNKNOWN_SAPI_UID_WEIGHT: u64 = 900;

/// A call's parameters (query and form body), for the weights that depend on them: read
/// on first use, so the calls whose weight is fixed pay nothing for them.
struct Params<'r> {
    req: &'r OutgoingRequest,
    pairs: std::cell::OnceCell<Option<Vec<(String, String)>>>,
}

/// One parameter of a call.
enum P<'a> {
    Absent,
    One(&'a str),
    /// Given more than once under any spelling of its name, or the parameters cannot be
    /// read: charged as the heaviest.
    Unclear,
}

impl<'r> Params<'r> {
    fn of(req: &'r OutgoingRequest) -> Params<'r> {
        Params {
            req,
            pairs: std::cell::OnceCell::new(),
        }
    }

    /// Parameter `name`, matched in any case (so `LIMIT=5000` is not missed).
    fn get(&self, name: &str) -> P<'_> {
        let pairs = self
            .pairs
            .get_or_init(|| crate::binance::request_params(self.req).ok());
        let Some(pairs) = pairs else {
            return P::Unclear;
        };
        let mut found = pairs.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name));
        match (found.next(), found.next()) {
            (None, _) => P::Absent,
            (Some((_, v)), None) => P::One(v.trim()),
            _ => P::Unclear,
        }
    }

    /// Whether `name` is given, once, and not empty.
    fn given(&self, name: &str) -> bool {
        matches!(self.get(name), P::One(v) if !v.is_empty())
    }

    /// `true` when `name` is given once as `true`, or is unclear.
    fn flag(&self, name: &str) -> bool {
        match self.get(name) {
            P::One(v) => v.eq_ignore_ascii_case("true"),
            P::Absent => false,
            P::Unclear => true,
        }
    }

    /// A numeric parameter: `Ok(None)` when absent, `Err` when unclear or not a number.
    fn number(&self, name: &str) -> Result<Option<u64>, ()> {
        match self.get(name) {
            P::Absent => Ok(None),
            P::One(v) => v.parse().map(Some).map_err(|_| ()),
            P::Unclear => Err(()),
        }
    }

    /// How many symbols a call to an endpoint taking `symbol` or `symbols` names: 1 with
    /// `symbol` alone, the length of a non-empty `symbols` JSON array alone, else `None`
    /// (every symbol, the heaviest).
    fn symbol_count(&self) -> Option<u64> {
        match (self.get("symbol"), self.get("symbols")) {
            (P::One(s), P::Absent) if !s.is_empty() => Some(1),
            (P::Absent, P::One(list)) => {
                match serde_json::from_str::<Vec<serde_json::Value>>(list) {
                    Ok(v) if !v.is_empty() => Some(v.len() as u64),
                    _ => None,
                }
            }
            _ => None,
        }
    }
}

/// `depth`'s weight by `limit` (spot: 5/25/50/250; USD-M: 2/5/10/20).
fn depth_weight(params: &Params<'_>, steps: [(u64, u64); 4], default_limit: u64) -> u64 {
    let heaviest = steps[3].1;
    let limit = match params.number("limit") {
        Ok(None) => default_limit,
        Ok(Some(l)) => l,
        Err(()) => return heaviest,
    };
    steps
        .iter()
        .find(|(up_to, _)| limit <= *up_to)
        .map(|(_, w)| *w)
        .unwrap_or(heaviest)
}

/// Spot (`api.binance.com`): what `req` costs.
pub(crate) fn spot(req: &OutgoingRequest) -> Vec<Charge> {
    let method = &req.method;
    let Some(p) = canonical_path(&req.path) else {
        return vec![Charge::of(&WEIGHT_1M, UNKNOWN_WEIGHT)];
    };
    if let Some(rest) = p.strip_prefix("/sapi/") {
        return sapi(method, rest);
    }
    let get = method == Method::GET || method == Method::HEAD;
    let params = Params::of(req);
    let symbols = || params.symbol_count();
    let one_symbol = || params.given("symbol");
    let weight = match (p.as_str(), get) {
        ("/api/v3/ping" | "/api/v3/time", true) => 1,
        ("/api/v3/exchangeinfo", true) => 20,
        ("/api/v3/depth", true) => {
            depth_weight(&params, [(100, 5), (500, 25), (1000, 50), (5000, 250)], 100)
        }
        ("/api/v3/trades" | "/api/v3/historicaltrades" | "/api/v3/historicalblocktrades", true) => {
            25
        }
        ("/api/v3/aggtrades", true) => 4,
        ("/api/v3/klines" | "/api/v3/uiklines" | "/api/v3/avgprice", true) => 2,
        ("/api/v3/referenceprice" | "/api/v3/referenceprice/calculation", true) => 2,
        ("/api/v3/executionrules", true) => match symbols() {
            Some(n) => (2 * n.max(1)).min(40),
            None => 40,
        },
        ("/api/v3/ticker/24hr", true) => match symbols() {
            Some(1..=20) => 2,
            Some(21..=100) => 40,
            _ => 80,
        },
        // a `symbols` list costs 4 whatever its length
        ("/api/v3/ticker/price" | "/api/v3/ticker/bookticker", true) => {
            if one_symbol() && matches!(params.get("symbols"), P::Absent) {
                2
            } else {
                4
            }
        }
        ("/api/v3/ticker" | "/api/v3/ticker/tradingday", true) => match symbols() {
            Some(n) => (4 * n.max(1)).min(200),
            // Binance requires a symbol here; an answer without one is refused, but the
            // charge is the cap
            None => 200,
        },
        ("/api/v3/order" | "/api/v3/order/amendments", true) => 4,
        ("/api/v3/order/amend/keeppriority", false) => 4,
        ("/api/v3/order/test" | "/api/v3/sor/order/test", false) => {
            if params.flag("computeCommissionRates") {
                20
            } else {
                1
            }
        }
        ("/api/v3/openorders", true) => {
            if one_symbol() {
                6
            } else {
                80
            }
        }
        ("/api/v3/openorders", false) => 1,
        ("/api/v3/mytrades", true) if params.given("orderId") => 5,
        ("/api/v3/allorders" | "/api/v3/account" | "/api/v3/mytrades", true) => 20,
        ("/api/v3/account/commission" | "/api/v3/allorderlist", true) => 20,
        ("/api/v3/orderlist", true) => 4,
        ("/api/v3/openorderlist", true) => 6,
        ("/api/v3/ratelimit/order", true) => 40,
        ("/api/v3/mypreventedmatches", true) => 20,
        ("/api/v3/myallocations", true) => 20,
        ("/api/v3/userdatastream", _) => 2,
        // placing and cancelling
        (
            "/api/v3/order"
            | "/api/v3/order/oco"
            | "/api/v3/orderlist/oco"
            | "/api/v3/orderlist/oto"
            | "/api/v3/orderlist/otoco"
            | "/api/v3/orderlist/opo"
            | "/api/v3/orderlist/opoco"
            | "/api/v3/orderlist"
            | "/api/v3/order/cancelreplace"
            | "/api/v3/sor/order",
            false,
        ) => 1,
        _ => UNKNOWN_WEIGHT,
    };
    let mut charges = vec![Charge::of(&WEIGHT_1M, weight)];
    if let Some(orders) = spot_orders(method, &p) {
        charges.push(Charge::of(&ORDERS_10S, orders));
        charges.push(Charge::of(&ORDERS_1D, orders));
    }
    charges
}

/// How many orders a spot call places (counted in the ORDERS budgets), if any.
fn spot_orders(method: &Method, p: &str) -> Option<u64> {
    if method != Method::POST {
        return None;
    }
    match p {
        "/api/v3/order" | "/api/v3/order/cancelreplace" | "/api/v3/sor/order" => Some(1),
        "/api/v3/order/oco"
        | "/api/v3/orderlist/oco"
        | "/api/v3/orderlist/oto"
        | "/api/v3/orderlist/opo" => Some(2),
        "/api/v3/orderlist/otoco" | "/api/v3/orderlist/opoco" => Some(3),
        _ => None,
    }
}

/// A `/sapi` call: the wallet and account endpoints are weighed per IP or per UID as
/// documented. An endpoint missing here may be either, so it is charged in both:
/// [`UNKNOWN_WEIGHT`] on the IP and [`UNKNOWN_SAPI_UID_WEIGHT`] on the account.
fn sapi(method: &Method, rest: &str) -> Vec<Charge> {
    let get = method == Method::GET;
    let ip = |w| vec![Charge::of(&SAPI_IP_1M, w)];
    let uid = |w| vec![Charge::of(&SAPI_UID_1M, w)];
    match (rest, get) {
        ("v1/capital/config/getall", true) => ip(10),
        ("v1/capital/deposit/address" | "v1/capital/deposit/address/list", true) => ip(10),
        ("v1/capital/deposit/hisrec", true) => ip(1),
        ("v1/capital/withdraw/history", true) => uid(18_000),
        ("v1/capital/withdraw/apply", false) => uid(900),
        ("v1/account/apirestrictions", true) => ip(1),
        ("v1/account/status" | "v1/account/apitradingstatus", true) => ip(1),
        ("v1/asset/tradefee" | "v1/system/status", true) => ip(1),
        // 300 in Binance's newest connector, 900 before: the larger
        ("v1/asset/transfer", false) => uid(900),
        ("v1/asset/transfer", true) => ip(1),
        ("v3/asset/getuserasset", false) => ip(5),
        ("v1/asset/wallet/balance", true) => ip(60),
        ("v1/accountsnapshot", true) => ip(2400),
        ("v1/userdatastream" | "v1/userdatastream/isolated", _) => ip(1),
        _ => vec![
            Charge::of(&SAPI_IP_1M, UNKNOWN_WEIGHT),
            Charge::of(&SAPI_UID_1M, UNKNOWN_SAPI_UID_WEIGHT),
        ],
    }
}

/// USD-M futures (`fapi.binance.com`): what `req` costs. Its endpoints take `symbol`
/// only: a `symbols` list is charged as every symbol.
pub(crate) fn usdm(req: &OutgoingRequest) -> Vec<Charge> {
    let method = &req.method;
    let Some(p) = canonical_path(&req.path) else {
        return vec![Charge::of(&WEIGHT_1M, UNKNOWN_WEIGHT)];
    };
    let get = method == Method::GET || method == Method::HEAD;
    let params = Params::of(req);
    let symbols = || {
        if params.given("symbol") && matches!(params.get("symbols"), P::Absent) {
            Some(1)
        } else {
            None
        }
    };
    let weight = match (p.as_str(), get) {
        ("/fapi/v1/ping" | "/fapi/v1/time", true) => 1,
        ("/fapi/v1/exchangeinfo", true) => 1,
        ("/fapi/v1/depth", true) => {
            depth_weight(&params, [(50, 2), (100, 5), (500, 10), (1000, 20)], 500)
        }
        ("/fapi/v1/trades", true) => 5,
        ("/fapi/v1/historicaltrades", true) => 20,
        ("/fapi/v1/aggtrades", true) => 20,
        (
            "/fapi/v1/klines"
            | "/fapi/v1/continuousklines"
            | "/fapi/v1/markpriceklines"
            | "/fapi/v1/indexpriceklines"
            | "/fapi/v1/premiumindexklines",
            true,
        ) => match params.number("limit") {
            Ok(Some(0..=99)) => 1,
            Ok(Some(100..=499)) => 2,
            // the default limit is 500
            Ok(None) | Ok(Some(500..=1000)) => 5,
            _ => 10,
        },
        ("/fapi/v1/premiumindex", true) => match symbols() {
            Some(1) => 1,
            _ => 10,
        },
        ("/fapi/v1/fundingrate" | "/fapi/v1/fundinginfo", true) => 1,
        ("/fapi/v1/ticker/24hr", true) => match symbols() {
            Some(1) => 1,
            _ => 40,
        },
        ("/fapi/v1/ticker/price" | "/fapi/v2/ticker/price", true) => match symbols() {
            Some(1) => 1,
            _ => 2,
        },
        ("/fapi/v1/ticker/bookticker", true) => match symbols() {
            Some(1) => 2,
            _ => 5,
        },
        ("/fapi/v1/openinterest", true) => 1,
        ("/fapi/v1/order", true) => 1,
        // placing and amending orders costs no weight, only order count
        ("/fapi/v1/order" | "/fapi/v1/algoorder", false) if method != Method::DELETE => 0,
        ("/fapi/v1/batchorders", false) if method != Method::DELETE => 5,
        (
            "/fapi/v1/order"
            | "/fapi/v1/algoorder"
            | "/fapi/v1/batchorders"
            | "/fapi/v1/allopenorders"
            | "/fapi/v1/algoopenorders",
            false,
        ) => 1,
        ("/fapi/v1/order/test", false) => 1,
        ("/fapi/v1/countdowncancelall", false) => 10,
        ("/fapi/v1/openorders", true) => match symbols() {
            Some(1) => 1,
            _ => 40,
        },
        ("/fapi/v1/openorder", true) => 1,
        ("/fapi/v1/allorders" | "/fapi/v1/usertrades", true) => 5,
        ("/fapi/v2/account" | "/fapi/v3/account", true) => 5,
        ("/fapi/v2/balance" | "/fapi/v3/balance", true) => 5,
        ("/fapi/v2/positionrisk" | "/fapi/v3/positionrisk", true) => 5,
        (
            "/fapi/v1/leverage"
            | "/fapi/v1/margintype"
            | "/fapi/v1/positionmargin"
            | "/fapi/v1/positionside/dual"
            | "/fapi/v1/multiassetsmargin",
            false,
        ) => 1,
        (
            "/fapi/v1/positionside/dual" | "/fapi/v1/multiassetsmargin" | "/fapi/v1/feeburn",
            true,
        ) => 30,
        ("/fapi/v1/adlquantile", true) => 5,
        ("/fapi/v1/apitradingstatus", true) => match symbols() {
            Some(1) => 1,
            _ => 10,
        },
        ("/fapi/v1/order/asyn" | "/fapi/v1/trade/asyn" | "/fapi/v1/income/asyn", true) => 1000,
        ("/fapi/v1/income", true) => 30,
        ("/fapi/v1/commissionrate", true) => 20,
        ("/fapi/v1/ratelimit/order", true) => 1,
        ("/fapi/v1/listenkey", _) => 1,
        _ => UNKNOWN_WEIGHT,
    };
    let mut charges = vec![Charge::of(&WEIGHT_1M, weight)];
    // new and amended orders count; a batch (up to 5 orders) 5 in 10 s and 1 a minute
    if method == Method::POST || method == Method::PUT {
        let counts = match p.as_str() {
            "/fapi/v1/order" | "/fapi/v1/algoorder" => Some((1, 1)),
            "/fapi/v1/batchorders" => Some((5, 1)),
            _ => None,
        };
        if let Some((ten_s, minute)) = counts {
            charges.push(Charge::of(&FAPI_ORDERS_10S, ten_s));
            charges.push(Charge::of(&FAPI_ORDERS_1M, minute));
        }
    }
    charges
}

/// The budgets Binance's answer headers report, each with its documented limit.
pub(crate) fn reported(
    headers: &http::HeaderMap,
    budgets: &[(&'static str, &Budget, u64)],
) -> Vec<(Budget, crate::RateLimitStatus)> {
    budgets
        .iter()
        .filter_map(|(header, budget, limit)| {
            crate::binance::weight_status(headers, header, *limit).map(|rl| ((*budget).clone(), rl))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cost(
        f: fn(&OutgoingRequest) -> Vec<Charge>,
        m: Method,
        p: &str,
        q: &str,
    ) -> Vec<(String, u64)> {
        f(&OutgoingRequest {
            method: m,
            path: p.to_string(),
            query: Some(q.to_string()).filter(|q| !q.is_empty()),
            headers: Default::default(),
            body: Default::default(),
        })
        .into_iter()
        .map(|c| (c.budget.name.to_string(), c.weight))
        .collect()
    }

    fn w(n: &str, weight: u64) -> (String, u64) {
        (n.to_string(), weight)
    }

    /// Parameter-dependent weights, from Binance's spot docs.
    #[test]
    fn spot_weights_follow_the_parameters() {
        let get = || Method::GET;
        assert_eq!(
            cost(spot, get(), "/api/v3/depth", "symbol=X"),
            [w("weight-1m", 5)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/depth", "symbol=X&limit=101"),
            [w("weight-1m", 25)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/depth", "limit=5000"),
            [w("weight-1m", 250)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/depth", "limit=abc"),
            [w("weight-1m", 250)]
        );
        let symbols = |n: usize| {
            let list: Vec<String> = (0..n).map(|i| format!("\"S{i}\"")).collect();
            format!("symbols=[{}]", list.join(","))
        };
        assert_eq!(
            cost(spot, get(), "/api/v3/ticker/24hr", &symbols(20)),
            [w("weight-1m", 2)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/ticker/24hr", &symbols(21)),
            [w("weight-1m", 40)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/ticker/24hr", &symbols(101)),
            [w("weight-1m", 80)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/ticker/24hr", "symbols=nonsense"),
            [w("weight-1m", 80)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/ticker", &symbols(10)),
            [w("weight-1m", 40)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/ticker", &symbols(60)),
            [w("weight-1m", 200)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/myTrades", "symbol=X&orderId=1"),
            [w("weight-1m", 5)]
        );
        assert_eq!(
            cost(
                spot,
                Method::POST,
                "/api/v3/order/test",
                "computeCommissionRates=true"
            ),
            [w("weight-1m", 20)]
        );
        // case and slashes do not dodge the table
        assert_eq!(
            cost(spot, get(), "//API/v3/Account/", ""),
            [w("weight-1m", 20)]
        );
    }

    /// What a client controls cannot make a heavy call cheap: a parameter given twice or
    /// in another case, one sent in the form body, an empty or foreign `symbols` list.
    #[test]
    fn parameters_cannot_make_a_call_cheap() {
        let get = || Method::GET;
        let depth = |q: &str| cost(spot, get(), "/api/v3/depth", q);
        assert_eq!(depth("limit=5&limit=5000"), [w("weight-1m", 250)]);
        assert_eq!(depth("limit=5&LIMIT=5000"), [w("weight-1m", 250)]);
        assert_eq!(depth("LIMIT=5000"), [w("weight-1m", 250)]);
        assert_eq!(
            cost(spot, get(), "/api/v3/ticker/24hr", "symbols=[]"),
            [w("weight-1m", 80)]
        );
        assert_eq!(
            cost(
                spot,
                get(),
                "/api/v3/ticker/24hr",
                "symbol=A&symbols=[\"B\"]"
            ),
            [w("weight-1m", 80)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/openOrders", "symbols=[\"A\"]"),
            [w("weight-1m", 80)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/ticker/price", "symbols=[\"A\"]"),
            [w("weight-1m", 4)]
        );
        assert_eq!(
            cost(spot, get(), "/api/v3/myTrades", "symbol=A&orderId="),
            [w("weight-1m", 20)]
        );
        assert_eq!(
            cost(usdm, get(), "/fapi/v1/ticker/24hr", "symbols=[\"A\"]"),
            [w("weight-1m", 40)]
        );
        // Binance reads a POST's form body as parameters too
        let test_order = OutgoingRequest {
            method: Method::POST,
            path: "/api/v3/order/test".into(),
            query: None,
            headers: Default::default(),
            body: "symbol=A&computeCommissionRates=true".into(),
        };
        assert_eq!(spot(&test_order)[0].weight, 20);
        let twice = OutgoingRequest {
            body: "computeCommissionRates=false&computeCommissionRates=true".into(),
            ..test_order
        };
        assert_eq!(spot(&twice)[0].weight, 20);
    }

    /// One key may serve spot and USD-M: each market's order counts are its own budget.
    #[test]
    fn spot_and_usdm_order_counts_are_apart() {
        let spot_names: Vec<_> = cost(spot, Method::POST, "/api/v3/order", "")
            .into_iter()
            .map(|c| c.0)
            .collect();
        let usdm_names: Vec<_> = cost(usdm, Method::POST, "/fapi/v1/order", "")
            .into_iter()
            .map(|c| c.0)
            .collect();
        for n in &usdm_names[1..] {
            assert!(!spot_names.contains(n), "{n} is shared");
        }
    }

    /// Orders count in the per-account ORDERS budgets, lists by how many orders they hold;
    /// cancels and reads do not.
    #[test]
    fn spot_orders_count_per_account() {
        let post = || Method::POST;
        let placed = cost(spot, post(), "/api/v3/order", "");
        assert_eq!(
            placed,
            [w("weight-1m", 1), w("orders-10s", 1), w("orders-1d", 1)]
        );
        let otoco = cost(spot, post(), "/api/v3/orderList/otoco", "");
        assert_eq!(
            otoco,
            [w("weight-1m", 1), w("orders-10s", 3), w("orders-1d", 3)]
        );
        assert_eq!(
            cost(spot, Method::DELETE, "/api/v3/order", ""),
            [w("weight-1m", 1)]
        );
        let per_account = [&ORDERS_10S, &ORDERS_1D, &FAPI_ORDERS_10S, &FAPI_ORDERS_1M];
        assert!(per_account.iter().all(|b| !b.per_ip));
        assert!([&WEIGHT_1M, &SAPI_IP_1M].iter().all(|b| b.per_ip));
    }

    /// Fail closed: what the tables do not know is charged as the heaviest, never as 1.
    #[test]
    fn unknown_endpoints_are_charged_heavily() {
        assert_eq!(
            cost(spot, Method::GET, "/api/v3/somethingNew", ""),
            [w("weight-1m", UNKNOWN_WEIGHT)]
        );
        assert_eq!(
            cost(spot, Method::GET, "/api/v3/%61ccount", ""),
            [w("weight-1m", UNKNOWN_WEIGHT)]
        );
        assert_eq!(
            cost(spot, Method::GET, "/sapi/v1/somethingNew", ""),
            [
                w("sapi-ip-1m", UNKNOWN_WEIGHT),
                w("sapi-uid-1m", UNKNOWN_SAPI_UID_WEIGHT)
            ]
        );
        assert_eq!(
            cost(usdm, Method::GET, "/fapi/v9/new", ""),
            [w("weight-1m", UNKNOWN_WEIGHT)]
        );
    }

    /// USD-M: placing costs no weight but counts as an order; a batch counts 5 in 10 s and
    /// 1 a minute; cancels count no order.
    #[test]
    fn usdm_weights_and_orders() {
        assert_eq!(
            cost(usdm, Method::POST, "/fapi/v1/order", ""),
            [
                w("weight-1m", 0),
                w("fapi-orders-10s", 1),
                w("fapi-orders-1m", 1)
            ]
        );
        assert_eq!(
            cost(usdm, Method::POST, "/fapi/v1/batchOrders", ""),
            [
                w("weight-1m", 5),
                w("fapi-orders-10s", 5),
                w("fapi-orders-1m", 1)
            ]
        );
        assert_eq!(
            cost(usdm, Method::DELETE, "/fapi/v1/order", ""),
            [w("weight-1m", 1)]
        );
        assert_eq!(
            cost(usdm, Method::GET, "/fapi/v1/depth", ""),
            [w("weight-1m", 10)]
        );
        assert_eq!(
            cost(usdm, Method::GET, "/fapi/v1/depth", "limit=1000"),
            [w("weight-1m", 20)]
        );
        assert_eq!(
            cost(usdm, Method::GET, "/fapi/v1/klines", "symbol=X"),
            [w("weight-1m", 5)]
        );
        assert_eq!(
            cost(usdm, Method::GET, "/fapi/v1/klines", "limit=1500"),
            [w("weight-1m", 10)]
        );
        assert_eq!(
            cost(usdm, Method::GET, "/fapi/v1/openOrders", ""),
            [w("weight-1m", 40)]
        );
        assert_eq!(
            cost(usdm, Method::GET, "/fapi/v2/account", ""),
            [w("weight-1m", 5)]
        );
    }
}
