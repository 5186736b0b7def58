"""Signed Kraken (spot REST) requests exactly as the installed ccxt builds them, for the keygate
cross-check (crates/keygate-exchanges/tests/ccxt_kraken.rs).

Offline: fixed credentials, time and client order ids, a minimal markets dict, and a
`fetch` that records the signed request and stops before anything is sent.
Prints a JSON array of {name, method, url, headers, body, api_key, secret, password,
now_ms, nonce}.
"""

import json

import ccxt

API_KEY = "CJbfPw4tnbf/9en/ZmpewCTKEwmmzO18LXZcHQcu7HPLWre4l8+V9I3y"
# Kraken's documented example private key (not tied to any account).
SECRET = "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg=="
PASSWORD = None
NOW_MS = 1_700_000_000_123
NONCE = 1_700_000_000_123_456


class Captured(Exception):
    pass


def make():
    ex = ccxt.kraken({"apiKey": API_KEY, "secret": SECRET})
    ex.milliseconds = lambda: NOW_MS
    ex.seconds = lambda: NOW_MS // 1000
    ex.nonce = lambda: NONCE
    ex.incrementing_nonce = lambda: NONCE
    ex.set_markets(
        [
            {
                "id": "XXBTZUSD",
                "altname": "XBTUSD",
                "wsId": "XBT/USD",
                "symbol": "BTC/USD",
                "base": "BTC",
                "quote": "USD",
                "baseId": "XXBT",
                "quoteId": "ZUSD",
                "type": "spot",
                "spot": True,
                "margin": True,
                "swap": False,
                "future": False,
                "option": False,
                "contract": False,
                "active": True,
                "precision": {"amount": 0.00000001, "price": 0.1},
                "limits": {"amount": {}, "price": {}, "cost": {}, "leverage": {}},
                "info": {"altname": "XBTUSD"},
            }
        ],
        {
            "USD": {"id": "ZUSD", "code": "USD", "precision": 0.0001, "networks": {}, "info": {}},
            "BTC": {"id": "XXBT", "code": "BTC", "precision": 0.00000001, "networks": {}, "info": {}},
            "USDT": {"id": "USDT", "code": "USDT", "precision": 0.00000001, "networks": {}, "info": {}},
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
        "nonce": NONCE,
    }


VECTORS = [
    ("fetch_balance", lambda ex: ex.fetch_balance()),
    ("create_order_limit", lambda ex: ex.create_order("BTC/USD", "limit", "buy", 1.25, 37500)),
    ("create_order_market_sell", lambda ex: ex.create_order("BTC/USD", "market", "sell", 0.02)),
    (
        "create_order_limit_leverage",
        lambda ex: ex.create_order("BTC/USD", "limit", "sell", 0.5, 40000, {"leverage": 2, "reduceOnly": True}),
    ),
    ("cancel_order", lambda ex: ex.cancel_order("OQCLML-BW3P3-BUCMWZ")),
    ("fetch_open_orders", lambda ex: ex.fetch_open_orders()),
    (
        "withdraw",
        lambda ex: ex.withdraw("USDT", 25.5, None, {"key": "my-cold-wallet"}),
    ),
]

print(json.dumps([capture(n, c) for n, c in VECTORS], indent=1))
