"""KuCoin request weights as CCXT's rate limiter prices them, for keygate's cross-check.

CCXT 4.5.90's KuCoin table keeps one cost per endpoint; for the spot host's `public` and
`private` groups its cost is KuCoin's weight (its `rateLimit` 7.5 ms is the Spot pool's
4000 per 30 s). Prints a JSON array of {method, path, weight};
`tests/ccxt_kucoin_weights.rs` compares each with the weight keygate charges the same
call before it goes out. Runs offline.
"""

import json

import ccxt

EX = ccxt.kucoin()

# (ccxt api, method, ccxt path, the path on the wire)
CASES = [
    ("public", "GET", "market/allTickers", "/api/v1/market/allTickers"),
    ("public", "GET", "market/orderbook/level1", "/api/v1/market/orderbook/level1"),
    ("public", "GET", "market/orderbook/level{level}_{limit}", "/api/v1/market/orderbook/level2_20"),
    ("public", "GET", "market/stats", "/api/v1/market/stats"),
    ("public", "GET", "market/histories", "/api/v1/market/histories"),
    ("public", "GET", "market/candles", "/api/v1/market/candles"),
    ("public", "GET", "markets", "/api/v1/markets"),
    ("public", "GET", "symbols", "/api/v2/symbols"),
    ("public", "GET", "currencies", "/api/v3/currencies"),
    ("public", "GET", "prices", "/api/v1/prices"),
    ("public", "GET", "timestamp", "/api/v1/timestamp"),
    ("public", "GET", "status", "/api/v1/status"),
    ("public", "POST", "bullet-public", "/api/v1/bullet-public"),
    ("private", "POST", "bullet-private", "/api/v1/bullet-private"),
    ("private", "GET", "market/orderbook/level{level}", "/api/v3/market/orderbook/level2"),
    ("private", "GET", "accounts", "/api/v1/accounts"),
    ("private", "GET", "accounts/{accountId}", "/api/v1/accounts/5bd6e9286d99522a52e458de"),
    ("private", "GET", "accounts/ledgers", "/api/v1/accounts/ledgers"),
    ("private", "GET", "hf/accounts/ledgers", "/api/v1/hf/accounts/ledgers"),
    ("private", "GET", "user-info", "/api/v2/user-info"),
    ("private", "GET", "base-fee", "/api/v1/base-fee"),
    ("private", "GET", "trade-fees", "/api/v1/trade-fees"),
    ("private", "POST", "orders", "/api/v1/orders"),
    ("private", "POST", "orders/test", "/api/v1/orders/test"),
    ("private", "POST", "orders/multi", "/api/v1/orders/multi"),
    ("private", "GET", "orders", "/api/v1/orders"),
    ("private", "DELETE", "orders", "/api/v1/orders"),
    ("private", "GET", "orders/{orderId}", "/api/v1/orders/5c35c02703aa673ceec2a168"),
    ("private", "DELETE", "orders/{orderId}", "/api/v1/orders/5c35c02703aa673ceec2a168"),
    ("private", "DELETE", "order/client-order/{clientOid}", "/api/v1/order/client-order/abc"),
    ("private", "GET", "fills", "/api/v1/fills"),
    ("private", "GET", "limit/orders", "/api/v1/limit/orders"),
    ("private", "GET", "limit/fills", "/api/v1/limit/fills"),
    ("private", "POST", "hf/orders", "/api/v1/hf/orders"),
    ("private", "POST", "hf/orders/test", "/api/v1/hf/orders/test"),
    ("private", "POST", "hf/orders/sync", "/api/v1/hf/orders/sync"),
    ("private", "POST", "hf/orders/multi", "/api/v1/hf/orders/multi"),
    ("private", "POST", "hf/orders/dead-cancel-all", "/api/v1/hf/orders/dead-cancel-all"),
    ("private", "DELETE", "hf/orders", "/api/v1/hf/orders"),
    ("private", "DELETE", "hf/orders/cancelAll", "/api/v1/hf/orders/cancelAll"),
    ("private", "DELETE", "hf/orders/{orderId}", "/api/v1/hf/orders/5c35c02703aa673ceec2a168"),
    ("private", "DELETE", "hf/orders/sync/{orderId}", "/api/v1/hf/orders/sync/5c35c02703aa673ceec2a168"),
    ("private", "GET", "hf/orders/active", "/api/v1/hf/orders/active"),
    ("private", "GET", "hf/orders/done", "/api/v1/hf/orders/done"),
    ("private", "GET", "hf/orders/{orderId}", "/api/v1/hf/orders/5c35c02703aa673ceec2a168"),
    ("private", "GET", "hf/orders/client-order/{clientOid}", "/api/v1/hf/orders/client-order/abc"),
    ("private", "GET", "hf/fills", "/api/v1/hf/fills"),
    ("private", "POST", "stop-order", "/api/v1/stop-order"),
    ("private", "GET", "stop-order", "/api/v1/stop-order"),
    ("private", "GET", "stop-order/{orderId}", "/api/v1/stop-order/5c35c02703aa673ceec2a168"),
    ("private", "DELETE", "stop-order/{orderId}", "/api/v1/stop-order/5c35c02703aa673ceec2a168"),
    ("private", "POST", "oco/order", "/api/v3/oco/order"),
    ("private", "GET", "oco/orders", "/api/v3/oco/orders"),
    ("private", "POST", "margin/order", "/api/v1/margin/order"),
    ("private", "POST", "margin/borrow", "/api/v3/margin/borrow"),
    ("private", "POST", "margin/repay", "/api/v3/margin/repay"),
    ("private", "GET", "margin/accounts", "/api/v3/margin/accounts"),
    ("private", "GET", "isolated/accounts", "/api/v3/isolated/accounts"),
    ("private", "GET", "deposits", "/api/v1/deposits"),
    ("private", "GET", "deposit-addresses", "/api/v1/deposit-addresses"),
    ("private", "POST", "deposit-address/create", "/api/v3/deposit-address/create"),
    ("private", "GET", "hist-deposits", "/api/v1/hist-deposits"),
    ("private", "POST", "withdrawals", "/api/v3/withdrawals"),
    ("private", "DELETE", "withdrawals/{withdrawalId}", "/api/v1/withdrawals/5bffb63303aa675e8bbe18f9"),
    ("private", "GET", "withdrawals", "/api/v1/withdrawals"),
    ("private", "GET", "withdrawals/quotas", "/api/v1/withdrawals/quotas"),
    ("private", "GET", "hist-withdrawals", "/api/v1/hist-withdrawals"),
    ("private", "POST", "accounts/inner-transfer", "/api/v2/accounts/inner-transfer"),
    ("private", "POST", "accounts/universal-transfer", "/api/v3/accounts/universal-transfer"),
    ("private", "GET", "accounts/transferable", "/api/v1/accounts/transferable"),
    ("private", "GET", "sub/user", "/api/v2/sub/user"),
    ("private", "GET", "sub-accounts", "/api/v2/sub-accounts"),
]

out = []
for api, method, path, wire in CASES:
    config = EX.api[api][method.lower()][path]
    cost = EX.calculate_rate_limiter_cost(api, method, path, {}, config)
    out.append({"method": method, "path": wire, "weight": cost})
print(json.dumps(out))
