"""keygate as a CCXT drop-in: stock ccxt with PLACEHOLDER keys, every `urls['api']` entry
pointed at keygate's proxy, keygate's token in `X-Keygate-Token` (ccxt's `headers` option).

Driven by crates/keygate-server/tests/api/ccxt_dropin.rs. Reads a JSON config on stdin:

    {"token": "<keygate JWT>" | null,
     "targets": [{"exchange": "binance", "base": "http://127.0.0.1:P/v1/connections/ID/proxy",
                  "calls": ["fetch_balance", "create_order"]}, ...]}

`base` replaces scheme + host of every API URL (pointed straight at the mock exchange it
shows the placeholder keys are rejected). Prints one JSON line per call:
{"exchange", "call", "ok", "error_type", "error_classes", "error", "result"}.
Markets are preloaded with `set_markets`, so only fetch_balance's and create_order's own
private endpoints are called.
"""

import base64
import json
import sys
from urllib.parse import urlsplit

import ccxt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec


def market(symbol, mid, base, quote, kind="spot", base_id=None, quote_id=None, info=None):
    contract = kind != "spot"
    settle = quote if contract else None
    return {
        "id": mid, "symbol": symbol, "base": base, "quote": quote, "settle": settle,
        "baseId": base_id or base, "quoteId": quote_id or quote, "settleId": settle,
        "type": kind, "spot": not contract, "margin": False, "swap": contract,
        "future": False, "option": False, "contract": contract,
        "linear": True if contract else None, "inverse": False if contract else None,
        "contractSize": 1 if contract else None, "active": True,
        "precision": {"amount": 0.00001, "price": 0.01},
        "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None},
                   "cost": {"min": None, "max": None}, "leverage": {"min": None, "max": None}},
        "info": info if info is not None else {"symbol": mid},
    }


def currencies(codes):
    return {c: {"id": c, "code": c, "precision": 1e-8, "networks": {}, "info": {}} for c in codes}


BINANCE_INFO = {"symbol": "BTCUSDT", "filters": [], "orderTypes": ["LIMIT", "MARKET"]}

# exchange -> (markets, currencies, symbol, options)
SETUP = {
    "binance": ([market("BTC/USDT", "BTCUSDT", "BTC", "USDT", info=BINANCE_INFO)], ["BTC", "USDT"], "BTC/USDT", {}),
    "binanceusdm": ([market("BTC/USDT:USDT", "BTCUSDT", "BTC", "USDT", "swap", info=BINANCE_INFO)],
                    ["BTC", "USDT"], "BTC/USDT:USDT", {}),
    "okx": ([market("BTC/USDT", "BTC-USDT", "BTC", "USDT")], ["BTC", "USDT"], "BTC/USDT", {"timeDifference": 0}),
    "bybit": ([market("BTC/USDT", "BTCUSDT", "BTC", "USDT", info={"symbol": "BTCUSDT", "category": "spot"})],
              ["BTC", "USDT"], "BTC/USDT", {"enableUnifiedAccount": True, "enableUnifiedMargin": False}),
    "kraken": ([market("BTC/USD", "XXBTZUSD", "BTC", "USD", base_id="XXBT", quote_id="ZUSD",
                       info={"altname": "XBTUSD"})], [], "BTC/USD", {}),
    "kucoin": ([market("BTC/USDT", "BTC-USDT", "BTC", "USDT")], ["BTC", "USDT"], "BTC/USDT",
               {"uta": False, "fetchBalance": {"uta": False}}),
    "bitget": ([market("BTC/USDT", "BTCUSDT", "BTC", "USDT")], ["BTC", "USDT"], "BTC/USDT",
               {"timeDifference": 0, "uta": False}),
    "gate": ([market("BTC/USDT", "BTC_USDT", "BTC", "USDT")], ["BTC", "USDT"], "BTC/USDT", {}),
    "coinbase": ([market("BTC/USD", "BTC-USD", "BTC", "USD")], ["BTC", "USD", "USDC"], "BTC/USD", {}),
}
KRAKEN_CURRENCIES = {
    "BTC": {"id": "XXBT", "code": "BTC", "precision": 1e-8, "networks": {}, "info": {}},
    "USD": {"id": "ZUSD", "code": "USD", "precision": 1e-4, "networks": {}, "info": {}},
}


def placeholder_config(exchange):
    """Keys a bot would ship with when keygate holds the real ones: all wrong."""
    config = {"apiKey": "placeholder-key", "secret": "placeholder-secret", "password": "placeholder-pass"}
    if exchange == "kraken":
        config["secret"] = base64.b64encode(b"placeholder-secret-placeholder!!").decode()
    if exchange == "coinbase":
        # A throwaway EC key, so ccxt's own JWT signing works; keygate replaces the JWT.
        pem = ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
        config["apiKey"] = "organizations/placeholder/apiKeys/placeholder"
        config["secret"] = pem.decode()
    return config


def point_at(urls, base):
    """Replaces scheme + host of every URL in a (nested) `urls['api']` with `base`."""
    if isinstance(urls, dict):
        return {k: point_at(v, base) for k, v in urls.items()}
    if isinstance(urls, str) and urls.startswith(("http://", "https://")):
        parts = urlsplit(urls)
        return base.rstrip("/") + urls[len(parts.scheme) + 3 + len(parts.netloc):]
    return urls


def client(exchange, base, token):
    markets, codes, _, options = SETUP[exchange]
    config = placeholder_config(exchange)
    config["options"] = dict(options)
    # The two lines a bot changes: keygate's token, and the API URLs pointed at keygate.
    if token:
        config["headers"] = {"X-Keygate-Token": token}
    ex = getattr(ccxt, exchange)(config)
    ex.urls["api"] = point_at(ex.urls["api"], base)
    ex.set_markets(markets, KRAKEN_CURRENCIES if exchange == "kraken" else currencies(codes))
    return ex


def summarize(call, result):
    if call == "fetch_balance":
        return {"total": {k: v for k, v in (result.get("total") or {}).items() if v}}
    return {"id": result.get("id"), "status": result.get("status")}


def run(target, token):
    exchange = target["exchange"]
    symbol = SETUP[exchange][2]
    ex = client(exchange, target["base"], token)
    for call in target.get("calls", ["fetch_balance", "create_order"]):
        line = {"exchange": exchange, "call": call, "ok": False}
        try:
            if call == "fetch_balance":
                result = ex.fetch_balance()
            else:
                result = ex.create_order(symbol, "limit", "buy", 0.001, 50000)
            line.update(ok=True, result=summarize(call, result))
        except Exception as e:  # reported, the Rust side decides
            line.update(
                error_type=type(e).__name__,
                error_classes=[c.__name__ for c in type(e).__mro__],
                error=str(e)[:2000],
            )
        print(json.dumps(line), flush=True)


def main():
    config = json.load(sys.stdin)
    for target in config["targets"]:
        try:
            run(target, config.get("token"))
        except Exception as e:  # client construction itself failed
            print(json.dumps({"exchange": target["exchange"], "call": "setup", "ok": False,
                              "error_type": type(e).__name__, "error": str(e)[:2000]}), flush=True)


if __name__ == "__main__":
    main()
