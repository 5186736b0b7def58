"""Signed Coinbase Advanced Trade (CDP key, ES256 JWT) requests exactly as the installed ccxt builds them, for the keygate
cross-check (crates/keygate-exchanges/tests/ccxt_coinbase.rs).

Offline: fixed credentials, time and client order ids, a minimal markets dict, and a
`fetch` that records the signed request and stops before anything is sent.
Prints a JSON array of {name, method, url, headers, body, api_key, secret, password,
now_ms, nonce}.
"""

import json

import ccxt

API_KEY = "organizations/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/apiKeys/9a8b7c6d-5e4f-3a2b-1c0d-e9f8a7b6c5d4"
# A throwaway P-256 key made for this test (SEC1 PEM, as Coinbase issues CDP keys).
SECRET = """-----BEGIN EC PRIVATE KEY-----
MHcCAQEEID9NHyj0xImKB0qBluGqEa+g4DnUVbLwK3/xjrFkdvR5oAoGCCqGSM49
AwEHoUQDQgAEtqV/L/6kda65ii3Skqa24ozBy/pJQF817wErfgNWu5aZgR+6NPo5
KntAVpCHgxhcgYk6dyfeYN3i0rSbtwExZA==
-----END EC PRIVATE KEY-----
"""
PASSWORD = None
ACCOUNT_ID = "8d5e3d2c-1b0a-4f9e-8d7c-6b5a4f3e2d1c"
NOW_MS = 1_700_000_000_123


class Captured(Exception):
    pass


def make():
    ex = ccxt.coinbase({"apiKey": API_KEY, "secret": SECRET})
    ex.milliseconds = lambda: NOW_MS
    ex.nonce = lambda: NOW_MS
    ex.seconds = lambda: NOW_MS // 1000
    ex.uuid = lambda: "5c52e112-03aa-477f-83e4-93fb0c1d2e3f"
    ex.set_markets(
        [
            {
                "id": "BTC-USD",
                "symbol": "BTC/USD",
                "base": "BTC",
                "quote": "USD",
                "baseId": "BTC",
                "quoteId": "USD",
                "type": "spot",
                "spot": True,
                "margin": False,
                "swap": False,
                "future": False,
                "option": False,
                "contract": False,
                "active": True,
                "precision": {"amount": 0.00000001, "price": 0.01},
                "limits": {"amount": {}, "price": {}, "cost": {}, "leverage": {}},
                "info": {},
            }
        ],
        {
            "USD": {"id": "USD", "code": "USD", "precision": 0.01, "networks": {}, "info": {}},
            "BTC": {"id": "BTC", "code": "BTC", "precision": 0.00000001, "networks": {}, "info": {}},
            "USDC": {"id": "USDC", "code": "USDC", "precision": 0.000001, "networks": {}, "info": {}},
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
    ("fetch_balance_v3", lambda ex: ex.fetch_balance({"v3": True})),
    ("create_order_limit", lambda ex: ex.create_order("BTC/USD", "limit", "buy", 0.01, 35000.5)),
    ("create_order_market_sell", lambda ex: ex.create_order("BTC/USD", "market", "sell", 0.02)),
    (
        "create_order_market_buy_cost",
        lambda ex: ex.create_market_buy_order_with_cost("BTC/USD", 100),
    ),
    ("cancel_order", lambda ex: ex.cancel_order("0e2b6d2a-6f1a-4a1f-9d3c-1b2a3c4d5e6f")),
    ("fetch_open_orders", lambda ex: ex.fetch_open_orders("BTC/USD")),
    (
        "withdraw",
        lambda ex: ex.withdraw(
            "USDC", 25.5, "0x1234567890abcdef1234567890abcdef12345678", {"account_id": ACCOUNT_ID}
        ),
    ),
]

print(json.dumps([capture(n, c) for n, c in VECTORS], indent=1))
