"""Signed Gate (v4) requests exactly as the installed ccxt builds them, for the keygate
cross-check (crates/keygate-exchanges/tests/ccxt_gate.rs).

Offline: fixed credentials, time and client order ids, a minimal markets dict, and a
`fetch` that records the signed request and stops before anything is sent.
Prints a JSON array of {name, method, url, headers, body, api_key, secret, password,
now_ms, nonce}.
"""

import json

import ccxt

API_KEY = "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
SECRET = "3f9c2e1d0b8a7f6e5d4c3b2a19081726354a5b6c7d8e9f0a1b2c3d4e5f607182"
PASSWORD = None
NOW_MS = 1_700_000_000_123


class Captured(Exception):
    pass


def make():
    ex = ccxt.gate({"apiKey": API_KEY, "secret": SECRET})
    ex.milliseconds = lambda: NOW_MS
    ex.nonce = lambda: NOW_MS
    ex.seconds = lambda: NOW_MS // 1000
    ex.uuid = lambda: "5c52e11203aa677f33e493fb"
    ex.uuid16 = lambda: "5c52e11203aa677f"
    common = {
        "active": True,
        "margin": False,
        "option": False,
        "future": False,
        "limits": {"amount": {}, "price": {}, "cost": {}, "leverage": {}},
    }
    ex.set_markets(
        [
            {
                **common,
                "id": "BTC_USDT",
                "symbol": "BTC/USDT",
                "base": "BTC",
                "quote": "USDT",
                "baseId": "BTC",
                "quoteId": "USDT",
                "type": "spot",
                "spot": True,
                "swap": False,
                "contract": False,
                "precision": {"amount": 0.000001, "price": 0.1},
                "info": {},
            },
            {
                **common,
                "id": "BTC_USDT",
                "symbol": "BTC/USDT:USDT",
                "base": "BTC",
                "quote": "USDT",
                "settle": "USDT",
                "baseId": "BTC",
                "quoteId": "USDT",
                "settleId": "usdt",
                "type": "swap",
                "spot": False,
                "swap": True,
                "contract": True,
                "linear": True,
                "inverse": False,
                "contractSize": 0.0001,
                "precision": {"amount": 1, "price": 0.1},
                "info": {},
            },
        ],
        {
            "USDT": {"id": "USDT", "code": "USDT", "precision": 0.000001, "networks": {}, "info": {}},
            "BTC": {"id": "BTC", "code": "BTC", "precision": 0.00000001, "networks": {}, "info": {}},
        },
    )
    return ex


def capture(name, call):
    ex = make()
    seen = {}

    def fetch(url, method="GET", headers=None, body=None):
        seen.update(url=url, method=method, headers=dict(headers or {}), body=body)
        raise Captured()

    ex.fetch = fetch
    try:
        call(ex)
    except Captured:
        pass
    if not seen:
        raise SystemExit(f"{name}: ccxt sent nothing")
    return {
        "name": name,
        **seen,
        "body": seen["body"] or "",
        "api_key": API_KEY,
        "secret": SECRET,
        "password": PASSWORD,
        "now_ms": NOW_MS,
        "nonce": NOW_MS,
    }


VECTORS = [
    ("fetch_balance", lambda ex: ex.fetch_balance()),
    ("create_order_limit", lambda ex: ex.create_order("BTC/USDT", "limit", "buy", 0.01, 35000.5)),
    ("create_order_market_sell", lambda ex: ex.create_order("BTC/USDT", "market", "sell", 0.02)),
    (
        "create_order_market_buy_cost",
        lambda ex: ex.create_market_buy_order_with_cost("BTC/USDT", 100),
    ),
    ("fetch_open_orders", lambda ex: ex.fetch_open_orders("BTC/USDT")),
    ("cancel_order", lambda ex: ex.cancel_order("12345678", "BTC/USDT")),
    (
        "create_order_swap_limit",
        lambda ex: ex.create_order("BTC/USDT:USDT", "limit", "sell", 3, 36000, {"reduceOnly": True}),
    ),
    ("set_leverage", lambda ex: ex.set_leverage(10, "BTC/USDT:USDT")),
    (
        "withdraw",
        lambda ex: ex.withdraw("USDT", 25.5, "0x1234567890abcdef1234567890abcdef12345678"),
    ),
    ("transfer", lambda ex: ex.transfer("USDT", 10, "spot", "swap")),
]

print(json.dumps([capture(n, c) for n, c in VECTORS], indent=1))
