//! Cross-check against CCXT: what keygate charges a KuCoin call in KuCoin's rate-limit
//! pools before it goes out (`Exchange::request_cost`) must be the weight CCXT's rate
//! limiter prices the same call at (`testing/ccxt/kucoin_weights.py`). keygate takes the
//! larger of KuCoin's SDK and CCXT where they differ, so on these endpoints the two agree.

mod common;

use http::Method;
use keygate_exchanges::{ExchangeId, OutgoingRequest};

#[test]
fn kucoin_weights_match_ccxt() {
    let Some(cases) = common::ccxt_vectors("kucoin_weights.py") else {
        return;
    };
    assert!(cases.len() >= 60, "the script lists the common endpoints");
    let api = ExchangeId::Kucoin.api();
    for c in &cases {
        let method: Method = c["method"].as_str().unwrap().parse().unwrap();
        let path = c["path"].as_str().unwrap();
        let ccxt = c["weight"].as_f64().unwrap();
        let charges = api.request_cost(&OutgoingRequest {
            method: method.clone(),
            path: path.to_string(),
            query: None,
            headers: Default::default(),
            body: Default::default(),
        });
        assert_eq!(charges.len(), 1, "{method} {path}: one pool, {charges:?}");
        assert_eq!(
            charges[0].weight as f64, ccxt,
            "{method} {path}: keygate {}, CCXT {ccxt}",
            charges[0].weight
        );
    }
}
