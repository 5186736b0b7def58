"""Signed OKX v5 requests as CCXT produces them, for keygate's cross-check
(crates/keygate-exchanges/tests/ccxt_okx.rs).

No network: markets are set by hand, time is frozen and `fetch` is replaced by a recorder
that returns a canned answer. Prints a JSON array of
{name, method, url, headers, body, api_key, secret, password, now_ms, environment}.
"""

import json
import sys

import ccxt

API_KEY = "kg-test-okx-key-0001"
SECRET = "KGTESTOKXSECRET0000000000000000A"
PASSWORD = "Pass phrase+1"
NOW_MS = 1_733_648_937_715  # 2024-12-08T09:08:57.715Z


def market(symbol, mid, base, quote, kind, settle=None, contract_size=None, inst_type=None):
    contract = kind in ("swap", "future")
    return {
        "id": mid,
        "symbol": symbol,
        "base": base,
        "quote": quote,
        "settle": settle,
        "baseId": base,
        "quoteId": quote,
        "settleId": settle,
        "type": kind,
        "spot": kind == "spot",
        "margin": kind == "spot",
        "swap": kind == "swap",
        "future": kind == "future",
        "option": False,
        "contract": contract,
        "linear": (settle == quote) if contract else None,
        "inverse": (settle == base) if contract else None,
        "contractSize": contract_size,
        "active": True,
        "precision": {"amount": 0.00000001, "price": 0.1},
        "limits": {"amount": {"min": None, "max": None}, "price": {"min": None, "max": None},
                   "cost": {"min": None, "max": None}, "leverage": {"min": None, "max": None}},
        "info": {"instId": mid, "instType": inst_type or ("SPOT" if kind == "spot" else "SWAP")},
    }


MARKETS = {
    "BTC/USDT": market("BTC/USDT", "BTC-USDT", "BTC", "USDT", "spot"),
    "BTC/USDT:USDT": market("BTC/USDT:USDT", "BTC-USDT-SWAP", "BTC", "USDT", "swap", "USDT", 0.01),
}

CURRENCIES = {
    "USDT": {
        "id": "USDT", "code": "USDT", "precision": 0.000001, "active": True,
        "networks": {
            "TRC20": {"id": "USDT-TRC20", "network": "TRC20", "fee": 1.0, "precision": 0.000001,
                      "info": {"chain": "USDT-TRC20", "ccy": "USDT", "minFee": "1"}},
        },
        "info": [],
    },
}


def make(sandbox=False):
    ex = ccxt.okx({"apiKey": API_KEY, "secret": SECRET, "password": PASSWORD})
    ex.options["timeDifference"] = 0
    ex.milliseconds = lambda: NOW_MS
    ex.seconds = lambda: NOW_MS // 1000
    if sandbox:
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
            # ccxt merges its global headers (the sandbox flag lives there) in `fetch`
            "headers": {**(ex.headers or {}), **(headers or {})},
            "body": body or "",
            "api_key": API_KEY,
            "secret": SECRET,
            "password": PASSWORD,
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


ORDER_OK = {"code": "0", "msg": "", "data": [{"ordId": "1", "clOrdId": "c", "sCode": "0", "sMsg": "", "tag": ""}]}
BAL = {"code": "0", "data": [{"details": [], "totalEq": "0", "uTime": "0"}], "msg": ""}

vectors = []
ex = make()
vectors += capture(ex, "fetch_balance", lambda e: e.fetch_balance(), BAL)
vectors += capture(ex, "fetch_balance_ccy", lambda e: e.private_get_account_balance({"ccy": "BTC,USDT"}), BAL)
vectors += capture(ex, "create_order_limit_spot",
                   lambda e: e.create_order("BTC/USDT", "limit", "buy", 0.01, 50000, {"clOrdId": "kg1"}), ORDER_OK)
vectors += capture(ex, "create_order_market_buy_spot",
                   lambda e: e.create_order("BTC/USDT", "market", "buy", 100, None,
                                            {"clOrdId": "kg2", "tgtCcy": "quote_ccy"}), ORDER_OK)
vectors += capture(ex, "create_order_market_sell_swap",
                   lambda e: e.create_order("BTC/USDT:USDT", "market", "sell", 3, None,
                                            {"clOrdId": "kg3", "reduceOnly": True}), ORDER_OK)
vectors += capture(ex, "cancel_order",
                   lambda e: e.cancel_order("12345", "BTC/USDT"), ORDER_OK)
vectors += capture(ex, "withdraw",
                   lambda e: e.withdraw("USDT", 25.5, "TXyz1234567890abcdefghijklmnop",
                                        {"network": "TRC20", "fee": "1"}),
                   {"code": "0", "msg": "", "data": [{"amt": "25.5", "wdId": "1", "ccy": "USDT", "chain": "USDT-TRC20"}]})
vectors += capture(ex, "transfer",
                   lambda e: e.transfer("USDT", 10, "funding", "trading"),
                   {"code": "0", "msg": "", "data": [{"transId": "1", "ccy": "USDT", "from": "6", "to": "18", "amt": "10"}]})
vectors += capture(ex, "set_leverage",
                   lambda e: e.set_leverage(5, "BTC/USDT:USDT", {"marginMode": "cross"}),
                   {"code": "0", "msg": "", "data": [{"lever": "5", "mgnMode": "cross", "instId": "BTC-USDT-SWAP", "posSide": ""}]})

demo = make(sandbox=True)
vectors += capture(demo, "demo_fetch_balance", lambda e: e.fetch_balance(), BAL, environment="testnet")
vectors += capture(demo, "demo_create_order_limit",
                   lambda e: e.create_order("BTC/USDT", "limit", "sell", 0.02, 60000.5, {"clOrdId": "kg4"}),
                   ORDER_OK, environment="testnet")

print(json.dumps(vectors, indent=1))
