"""Signed KuCoin requests exactly as the installed ccxt builds them, for the keygate
cross-check (crates/keygate-exchanges/tests/ccxt_kucoin.rs).

Offline: fixed credentials, time and client order ids, a minimal markets dict, and a
`fetch` that records the signed request and stops before anything is sent.
Prints a JSON array of {name, method, url, headers, body, api_key, secret, password,
now_ms, nonce}.
"""

import json

import ccxt

API_KEY = "5f1a2b3c4d5e6f7a8b9c0d1e"
SECRET = "f03a5284-5c39-4aaa-9b20-dea10bdcf8e3"
PASSWORD = "keygate-test-passphrase"
NOW_MS = 1_700_000_000_123


class Captured(Exception):
    pass


def make():
    ex = ccxt.kucoin({"apiKey": API_KEY, "secret": SECRET, "password": PASSWORD})
    ex.milliseconds = lambda: NOW_MS
    ex.nonce = lambda: NOW_MS
    ex.seconds = lambda: NOW_MS // 1000
    ex.uuid = lambda: "5c52e11203aa677f33e493fb"
    ex.options["uta"] = False
    ex.options["fetchBalance"] = {"uta": False}
    ex.set_markets(
        [
            {
                "id": "BTC-USDT",
                "symbol": "BTC/USDT",
                "base": "BTC",
                "quote": "USDT",
                "baseId": "BTC",
                "quoteId": "USDT",
                "type": "spot",
                "spot": True,
                "margin": True,
                "swap": False,
                "future": False,
                "option": False,
                "contract": False,
                "active": True,
                "precision": {"amount": 0.00000001, "price": 0.1},
                "limits": {"amount": {}, "price": {}, "cost": {}},
                "info": {"quoteIncrement": "0.000001"},
            }
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
    ("cancel_order", lambda ex: ex.cancel_order("5bd6e9286d99522a52e458de", "BTC/USDT")),
    ("fetch_open_orders", lambda ex: ex.fetch_open_orders("BTC/USDT")),
    (
        "withdraw",
        lambda ex: ex.withdraw("USDT", 25.5, "0x1234567890abcdef1234567890abcdef12345678"),
    ),
    ("transfer", lambda ex: ex.transfer("USDT", 10, "main", "trade")),
]

print(json.dumps([capture(n, c) for n, c in VECTORS], indent=1))
