"""Signed Binance / Binance USD-M requests as CCXT builds them, for keygate's cross-check.

Runs offline: markets and currencies are set by hand, the clock is fixed, and
`exchange.fetch` is replaced by a recorder that raises instead of sending. Prints a JSON
array of {name, exchange, method, url, headers, body, api_key, secret, now_ms}.
`tests/ccxt_binance.rs` re-signs each request with keygate and compares bytes.
"""

import json
import sys

import ccxt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

API_KEY = "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A"
SECRET = "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j"
NOW_MS = 1700000000123

# Ed25519 key from RFC 8032 TEST 1: fixed, so the vector is reproducible.
ED25519_PEM = (
    ed25519.Ed25519PrivateKey.from_private_bytes(
        bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
    )
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)
RSA_PEM = (
    rsa.generate_private_key(public_exponent=65537, key_size=2048)
    .private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    .decode()
)


class Captured(Exception):
    pass


def spot_market(base, quote):
    return {
        "id": base + quote,
        "symbol": f"{base}/{quote}",
        "base": base,
        "quote": quote,
        "baseId": base,
        "quoteId": quote,
        "type": "spot",
        "spot": True,
        "margin": True,
        "swap": False,
        "future": False,
        "option": False,
        "contract": False,
        "linear": None,
        "inverse": None,
        "active": True,
        "precision": {"amount": 0.00001, "price": 0.01},
        "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None}, "cost": {"min": None, "max": None}},
        "info": {"symbol": base + quote, "filters": [], "orderTypes": ["LIMIT", "MARKET", "LIMIT_MAKER", "STOP_LOSS", "STOP_LOSS_LIMIT", "TAKE_PROFIT", "TAKE_PROFIT_LIMIT"]},
    }


def linear_market(base, quote):
    m = spot_market(base, quote)
    m.update(
        {
            "symbol": f"{base}/{quote}:{quote}",
            "type": "swap",
            "spot": False,
            "margin": False,
            "swap": True,
            "contract": True,
            "linear": True,
            "inverse": False,
            "settle": quote,
            "settleId": quote,
            "contractSize": 1,
            "precision": {"amount": 0.001, "price": 0.1},
        }
    )
    return m


CURRENCIES = {
    c: {"id": c, "code": c, "precision": 1e-8, "networks": {}, "info": {}}
    for c in ["BTC", "USDT", "ETH", "XRP"]
}


def make(cls, secret, markets, options=None):
    ex = cls({"apiKey": API_KEY, "secret": secret, "options": options or {}})
    ex.milliseconds = lambda: NOW_MS
    ex.nonce = lambda: NOW_MS
    ex.seconds = lambda: NOW_MS // 1000
    ex.uuid22 = lambda *a: "0123456789abcdef012345"  # broker client order id suffix
    ex.set_markets(markets, CURRENCIES)
    return ex


def capture(ex, name, call):
    box = {}

    def fetch(url, method="GET", headers=None, body=None):
        box.update(url=url, method=method, headers=dict(headers or {}), body=body)
        raise Captured()

    ex.fetch = fetch
    try:
        call(ex)
    except Captured:
        pass
    if "url" not in box:
        raise SystemExit(f"{name}: ccxt sent nothing")
    return {
        "name": name,
        "exchange": ex.id,
        "method": box["method"],
        "url": box["url"],
        "headers": box["headers"],
        "body": box["body"],
        "api_key": API_KEY,
        "secret": ex.secret,
        "now_ms": NOW_MS,
    }


def main():
    spot = [spot_market("BTC", "USDT"), spot_market("ETH", "BTC")]
    usdm = [linear_market("BTC", "USDT"), linear_market("ETH", "USDT")]
    out = []
    cases = [
        # ---- binance spot, HMAC ----
        ("spot fetch_balance", ccxt.binance, SECRET, spot, None,
         lambda e: e.fetch_balance()),
        ("spot create_order limit", ccxt.binance, SECRET, spot, None,
         lambda e: e.create_order("BTC/USDT", "limit", "buy", 0.001, 30000, {"clientOrderId": "kg-1"})),
        ("spot create_order market (broker id)", ccxt.binance, SECRET, spot, None,
         lambda e: e.create_order("ETH/BTC", "market", "sell", 0.5)),
        ("spot create_order market by cost", ccxt.binance, SECRET, spot, None,
         lambda e: e.create_order("BTC/USDT", "market", "buy", None, None, {"quoteOrderQty": 25, "clientOrderId": "kg-2"})),
        ("spot cancel_order", ccxt.binance, SECRET, spot, None,
         lambda e: e.cancel_order("12345", "BTC/USDT")),
        ("spot fetch_open_orders", ccxt.binance, SECRET, spot, None,
         lambda e: e.fetch_open_orders("BTC/USDT")),
        ("spot withdraw", ccxt.binance, SECRET, spot, None,
         lambda e: e.withdraw("XRP", 25.5, "rHb9CJAWyB4rj91VRWn96DkukG4bwdtyTh", {"tag": "123456", "network": "XRP"})),
        ("spot transfer", ccxt.binance, SECRET, spot, None,
         lambda e: e.transfer("USDT", 10, "spot", "future")),
        ("spot recvWindow option", ccxt.binance, SECRET, spot, {"recvWindow": 7000},
         lambda e: e.fetch_my_trades("BTC/USDT")),
        # ---- binance spot, Ed25519 / RSA ----
        ("spot ed25519 fetch_balance", ccxt.binance, ED25519_PEM, spot, None,
         lambda e: e.fetch_balance()),
        ("spot ed25519 create_order", ccxt.binance, ED25519_PEM, spot, None,
         lambda e: e.create_order("BTC/USDT", "limit", "sell", 0.002, 41000.5, {"clientOrderId": "kg-3"})),
        ("spot rsa create_order", ccxt.binance, RSA_PEM, spot, None,
         lambda e: e.create_order("BTC/USDT", "limit", "sell", 0.002, 41000.5, {"clientOrderId": "kg-4"})),
        ("spot rsa cancel_order", ccxt.binance, RSA_PEM, spot, None,
         lambda e: e.cancel_order("999", "BTC/USDT")),
        # ---- binanceusdm ----
        ("usdm fetch_balance", ccxt.binanceusdm, SECRET, usdm, None,
         lambda e: e.fetch_balance()),
        ("usdm create_order limit", ccxt.binanceusdm, SECRET, usdm, None,
         lambda e: e.create_order("BTC/USDT:USDT", "limit", "buy", 0.01, 60000, {"clientOrderId": "kg-5"})),
        ("usdm create_order market reduceOnly", ccxt.binanceusdm, SECRET, usdm, None,
         lambda e: e.create_order("ETH/USDT:USDT", "market", "sell", 1, None, {"reduceOnly": True, "clientOrderId": "kg-6"})),
        ("usdm cancel_order", ccxt.binanceusdm, SECRET, usdm, None,
         lambda e: e.cancel_order("777", "BTC/USDT:USDT")),
        ("usdm create_orders (batchOrders)", ccxt.binanceusdm, SECRET, usdm, None,
         lambda e: e.create_orders([
             {"symbol": "BTC/USDT:USDT", "type": "limit", "side": "buy", "amount": 0.01, "price": 50000, "params": {"clientOrderId": "kg-7"}},
             {"symbol": "ETH/USDT:USDT", "type": "limit", "side": "sell", "amount": 1, "price": 4000, "params": {"clientOrderId": "kg-8"}},
         ])),
        ("usdm set_leverage", ccxt.binanceusdm, SECRET, usdm, None,
         lambda e: e.set_leverage(10, "BTC/USDT:USDT")),
        ("usdm set_margin_mode", ccxt.binanceusdm, SECRET, usdm, None,
         lambda e: e.set_margin_mode("isolated", "BTC/USDT:USDT")),
        ("usdm fetch_positions", ccxt.binanceusdm, SECRET, usdm, None,
         lambda e: e.fetch_positions(["BTC/USDT:USDT"])),
        ("usdm ed25519 create_order", ccxt.binanceusdm, ED25519_PEM, usdm, None,
         lambda e: e.create_order("BTC/USDT:USDT", "limit", "sell", 0.01, 70000, {"clientOrderId": "kg-9"})),
    ]
    for name, cls, secret, markets, options, call in cases:
        out.append(capture(make(cls, secret, markets, options), name, call))
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
