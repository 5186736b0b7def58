"""Signed Bybit v5 requests as CCXT produces them, for keygate's cross-check
(crates/keygate-exchanges/tests/ccxt_bybit.rs).

No network: markets are set by hand, time is frozen and `fetch` is replaced by a recorder
that returns a canned answer. Prints a JSON array of
{name, method, url, headers, body, api_key, secret, password, now_ms, environment}.
"""

import json
import sys

import ccxt

API_KEY = "KgTestBybitKey01"
SECRET = "KgTestBybitSecret0000000000000000001"
NOW_MS = 1_733_648_937_715


def market(symbol, mid, base, quote, kind, settle=None, category="spot"):
    contract = kind in ("swap", "future")
    return {
        "id": mid, "symbol": symbol, "base": base, "quote": quote, "settle": settle,
        "baseId": base, "quoteId": quote, "settleId": settle, "type": kind,
        "spot": kind == "spot", "margin": False, "swap": kind == "swap", "future": kind == "future",
        "option": False, "contract": contract,
        "linear": (settle == quote) if contract else None,
        "inverse": (settle == base) if contract else None,
        "contractSize": 1 if contract else None, "active": True,
        "precision": {"amount": 0.000001, "price": 0.01},
        "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None},
                   "cost": {"min": None, "max": None}, "leverage": {"min": None, "max": None}},
        "info": {"symbol": mid, "category": category},
    }


MARKETS = {
    "BTC/USDT": market("BTC/USDT", "BTCUSDT", "BTC", "USDT", "spot"),
    "BTC/USDT:USDT": market("BTC/USDT:USDT", "BTCUSDT", "BTC", "USDT", "swap", "USDT", "linear"),
}

CURRENCIES = {
    "USDT": {
        "id": "USDT", "code": "USDT", "precision": 0.000001, "active": True,
        "networks": {"TRC20": {"id": "TRX", "network": "TRC20", "fee": 1.0, "precision": 0.000001, "info": {}}},
        "info": {},
    },
}


def make(testnet=False):
    ex = ccxt.bybit({"apiKey": API_KEY, "secret": SECRET})
    ex.milliseconds = lambda: NOW_MS
    ex.seconds = lambda: NOW_MS // 1000
    ex.options["enableUnifiedAccount"] = True
    ex.options["enableUnifiedMargin"] = False
    if testnet:
        ex.set_sandbox_mode(True)
    ex.set_markets(MARKETS, CURRENCIES)
    return ex


def capture(ex, name, call, answer, environment="production"):
    out = []

    def fetch(url, method="GET", headers=None, body=None):
        out.append({
            "name": name if not out else f"{name}#{len(out)}",
            "method": method,
            "url": url,
            "headers": {**(ex.headers or {}), **(headers or {})},
            "body": body or "",
            "api_key": API_KEY,
            "secret": SECRET,
            "password": None,
            "now_ms": NOW_MS,
            "environment": environment,
        })
        return answer

    ex.fetch = fetch
    try:
        call(ex)
    except Exception as e:  # the canned answer may not satisfy ccxt's parser; the request is what counts
        print(f"{name}: {type(e).__name__}: {e}", file=sys.stderr)
    if not out:
        raise SystemExit(f"{name}: ccxt sent no request")
    return out


OK = {"retCode": 0, "retMsg": "OK", "result": {"orderId": "1", "orderLinkId": "c"}, "retExtInfo": {}, "time": NOW_MS}
BAL = {"retCode": 0, "retMsg": "OK", "result": {"list": [{"accountType": "UNIFIED", "coin": []}]},
       "retExtInfo": {}, "time": NOW_MS}

vectors = []
ex = make()
vectors += capture(ex, "fetch_balance", lambda e: e.fetch_balance(), BAL)
vectors += capture(ex, "create_order_limit_spot",
                   lambda e: e.create_order("BTC/USDT", "limit", "buy", 0.01, 50000, {"clientOrderId": "kg1"}), OK)
vectors += capture(ex, "create_order_market_buy_spot_cost",
                   lambda e: e.create_order("BTC/USDT", "market", "buy", 0.002, None, {"cost": 100}), OK)
vectors += capture(ex, "create_order_market_sell_linear",
                   lambda e: e.create_order("BTC/USDT:USDT", "market", "sell", 0.5, None, {"reduceOnly": True}), OK)
vectors += capture(ex, "cancel_order", lambda e: e.cancel_order("12345", "BTC/USDT:USDT"), OK)
vectors += capture(ex, "fetch_open_orders", lambda e: e.fetch_open_orders("BTC/USDT:USDT"),
                   {"retCode": 0, "retMsg": "OK", "result": {"list": [], "category": "linear"}, "time": NOW_MS})
vectors += capture(ex, "withdraw",
                   lambda e: e.withdraw("USDT", 25.5, "TXyz1234567890abcdefghijklmnop", {"network": "TRC20", "tag": "77"}),
                   {"retCode": 0, "retMsg": "OK", "result": {"id": "1"}, "time": NOW_MS})
vectors += capture(ex, "transfer", lambda e: e.transfer("USDT", 10, "funding", "unified"),
                   {"retCode": 0, "retMsg": "OK", "result": {"transferId": "x"}, "time": NOW_MS})
vectors += capture(ex, "set_leverage", lambda e: e.set_leverage(5, "BTC/USDT:USDT"), OK)

tn = make(testnet=True)
vectors += capture(tn, "testnet_create_order_limit",
                   lambda e: e.create_order("BTC/USDT:USDT", "limit", "sell", 0.02, 60000.5), OK, "testnet")

print(json.dumps(vectors, indent=1))
