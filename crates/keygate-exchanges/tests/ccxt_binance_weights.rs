//! Cross-check against CCXT: what keygate charges a Binance spot call in Binance's
//! rate-limit budgets before it goes out (`Exchange::request_cost`) must be the weight
//! CCXT's rate limiter prices the same call at (`testing/ccxt/binance_weights.py`), except
//! where Binance changed a weight after CCXT's table was written: those are listed below
//! with the weight Binance documents now, and must differ from CCXT's.

mod common;

use http::Method;
use keygate_exchanges::{ExchangeId, OutgoingRequest};

/// (method, path, CCXT's weight, Binance's documented weight): CCXT 4.5.90 still has the
/// weights from before Binance's changes.
const NEWER_IN_BINANCE_DOCS: &[(&str, &str, u64, u64)] = &[
    // raised from 10 to 25 on 2024-04-04
    ("GET", "/api/v3/trades", 10, 25),
    ("GET", "/api/v3/historicalTrades", 10, 25),
    ("GET", "/api/v3/aggTrades", 2, 4),
    // the rolling-window ticker: 4 per symbol
    ("GET", "/api/v3/ticker", 2, 4),
    // Weight(UID) 900 in the wallet docs
    ("POST", "/sapi/v1/capital/withdraw/apply", 600, 900),
];

#[test]
fn binance_weights_match_ccxt() {
    let Some(cases) = common::ccxt_vectors("binance_weights.py") else {
        return;
    };
    assert!(cases.len() >= 60, "the script lists the common endpoints");
    let api = ExchangeId::Binance.api();
    let mut newer = 0;
    for c in &cases {
        let method: Method = c["method"].as_str().unwrap().parse().unwrap();
        let path = c["path"].as_str().unwrap();
        let query = c["query"].as_str().unwrap();
        let budget = c["budget"].as_str().unwrap();
        let ccxt = c["weight"].as_u64().unwrap();
        let charges = api.request_cost(&OutgoingRequest {
            method: method.clone(),
            path: path.to_string(),
            query: Some(query.to_string()).filter(|q| !q.is_empty()),
            headers: Default::default(),
            body: Default::default(),
        });
        let ours = charges
            .iter()
            .find(|ch| ch.budget.name == budget)
            .unwrap_or_else(|| {
                panic!("{method} {path}?{query}: no charge in {budget}: {charges:?}")
            })
            .weight;
        match NEWER_IN_BINANCE_DOCS
            .iter()
            .find(|(m, p, _, _)| *m == method.as_str() && *p == path)
        {
            Some((_, _, was, now)) => {
                newer += 1;
                assert_eq!(
                    ccxt, *was,
                    "{method} {path}: CCXT's weight changed; check Binance's"
                );
                assert_eq!(ours, *now, "{method} {path}?{query}");
            }
            None => assert_eq!(
                ours, ccxt,
                "{method} {path}?{query}: keygate {ours}, CCXT {ccxt}"
            ),
        }
    }
    assert_eq!(
        newer,
        NEWER_IN_BINANCE_DOCS.len(),
        "every listed difference was compared"
    );
}
