"""Binance spot request weights as CCXT's rate limiter prices them, for keygate's cross-check.

CCXT keeps one cost per endpoint (some by `limit` or by whether a symbol is given) and
documents how its costs map to Binance's weights: for `/api/v3`, 1 weight is cost 0.2; for
`/sapi` IP weight, cost 0.1; for `/sapi` UID weight, cost 0.006667. Prints a JSON array of
{method, path, query, budget, weight}; `tests/ccxt_binance_weights.rs` compares each with
the charge keygate puts on the same call before it goes out. Runs offline.
"""

import json
from urllib.parse import urlencode

import ccxt

EX = ccxt.binance()

# (ccxt api, method, ccxt path, params, budget)
CASES = [
    ("public", "GET", "ping", {}, "weight-1m"),
    ("public", "GET", "time", {}, "weight-1m"),
    ("public", "GET", "exchangeInfo", {}, "weight-1m"),
    ("public", "GET", "depth", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "depth", {"symbol": "BTCUSDT", "limit": 100}, "weight-1m"),
    ("public", "GET", "depth", {"symbol": "BTCUSDT", "limit": 500}, "weight-1m"),
    ("public", "GET", "depth", {"symbol": "BTCUSDT", "limit": 1000}, "weight-1m"),
    ("public", "GET", "depth", {"symbol": "BTCUSDT", "limit": 5000}, "weight-1m"),
    ("public", "GET", "trades", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "historicalTrades", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "aggTrades", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "klines", {"symbol": "BTCUSDT", "interval": "1m"}, "weight-1m"),
    ("public", "GET", "uiKlines", {"symbol": "BTCUSDT", "interval": "1m"}, "weight-1m"),
    ("public", "GET", "avgPrice", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "referencePrice", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "historicalBlockTrades", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "executionRules", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "executionRules", {}, "weight-1m"),
    ("public", "GET", "ticker/24hr", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "ticker/24hr", {}, "weight-1m"),
    ("public", "GET", "ticker/price", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "ticker/price", {}, "weight-1m"),
    ("public", "GET", "ticker/bookTicker", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "ticker/bookTicker", {}, "weight-1m"),
    ("public", "GET", "ticker", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "GET", "ticker/tradingDay", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("public", "POST", "userDataStream", {}, "weight-1m"),
    ("public", "PUT", "userDataStream", {}, "weight-1m"),
    ("public", "DELETE", "userDataStream", {}, "weight-1m"),
    ("private", "GET", "order", {"symbol": "BTCUSDT", "orderId": 1}, "weight-1m"),
    ("private", "GET", "openOrders", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "GET", "openOrders", {}, "weight-1m"),
    ("private", "GET", "allOrders", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "GET", "account", {}, "weight-1m"),
    ("private", "GET", "myTrades", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "GET", "rateLimit/order", {}, "weight-1m"),
    ("private", "GET", "myPreventedMatches", {"symbol": "BTCUSDT", "orderId": 1}, "weight-1m"),
    ("private", "GET", "myAllocations", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "GET", "account/commission", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "GET", "orderList", {"orderListId": 1}, "weight-1m"),
    ("private", "GET", "openOrderList", {}, "weight-1m"),
    ("private", "GET", "allOrderList", {}, "weight-1m"),
    ("private", "POST", "order", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "order/test", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "order/cancelReplace", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "order/oco", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "orderList/oco", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "orderList/oto", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "orderList/otoco", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "orderList/opo", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "orderList/opoco", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "sor/order", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "POST", "sor/order/test", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "DELETE", "order", {"symbol": "BTCUSDT", "orderId": 1}, "weight-1m"),
    ("private", "DELETE", "openOrders", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("private", "DELETE", "orderList", {"symbol": "BTCUSDT"}, "weight-1m"),
    ("sapi", "GET", "capital/config/getall", {}, "sapi-ip-1m"),
    ("sapi", "GET", "capital/deposit/address", {"coin": "BTC"}, "sapi-ip-1m"),
    ("sapi", "GET", "capital/deposit/address/list", {"coin": "BTC"}, "sapi-ip-1m"),
    ("sapi", "GET", "capital/deposit/hisrec", {}, "sapi-ip-1m"),
    ("sapi", "GET", "account/apiRestrictions", {}, "sapi-ip-1m"),
    ("sapi", "GET", "account/status", {}, "sapi-ip-1m"),
    ("sapi", "GET", "account/apiTradingStatus", {}, "sapi-ip-1m"),
    ("sapi", "GET", "asset/tradeFee", {}, "sapi-ip-1m"),
    ("sapi", "GET", "system/status", {}, "sapi-ip-1m"),
    ("sapi", "GET", "asset/transfer", {"type": "MAIN_UMFUTURE"}, "sapi-ip-1m"),
    ("sapi", "GET", "asset/wallet/balance", {}, "sapi-ip-1m"),
    ("sapi", "GET", "accountSnapshot", {"type": "SPOT"}, "sapi-ip-1m"),
    ("sapiV3", "POST", "asset/getUserAsset", {}, "sapi-ip-1m"),
    ("sapi", "POST", "capital/withdraw/apply", {"coin": "BTC"}, "sapi-uid-1m"),
    ("sapi", "POST", "asset/transfer", {"type": "MAIN_UMFUTURE"}, "sapi-uid-1m"),
]

PREFIX = {"public": "/api/v3/", "private": "/api/v3/", "sapi": "/sapi/v1/", "sapiV3": "/sapi/v3/"}
# CCXT's cost of one unit of each budget (its comments in binance.py's `describe`)
UNIT = {"weight-1m": 0.2, "sapi-ip-1m": 0.1, "sapi-uid-1m": 0.006667}

out = []
for api, method, path, params, budget in CASES:
    config = EX.api[api][method.lower()][path]
    cost = EX.calculate_rate_limiter_cost(api, method, path, params, config)
    out.append(
        {
            "method": method,
            "path": PREFIX[api] + path,
            "query": urlencode(params),
            "budget": budget,
            "weight": round(cost / UNIT[budget]),
        }
    )
print(json.dumps(out))
