//! OKX v5 (`/api/v5`).
//!
//! Verification per <https://www.okx.com/docs-v5/en/#overview-rest-authentication>:
//! `OK-ACCESS-SIGN` = base64(HMAC-SHA256(secret, timestamp + METHOD + requestPath + body)),
//! where requestPath carries `?query` when there is one and body is the raw JSON (empty for
//! GET); `OK-ACCESS-TIMESTAMP` is ISO-8601 UTC with milliseconds and must be within 30 s of
//! server time; `OK-ACCESS-PASSPHRASE` must equal the key's passphrase. Demo trading
//! (`x-simulated-trading: 1`) is accepted with the same keys. Auth errors are HTTP 401.

use http::Method;
use serde_json::{json, Value};

use crate::crypto;
use crate::wire::{jstr, param, price_of, private_flow, Handled, Rejection, Reply, Req, BALANCES};
use crate::State;

const WINDOW_MS: i64 = 30_000;

fn err(status: u16, code: &str, msg: &str) -> Reply {
    Reply::json(status, json!({"code": code, "msg": msg, "data": []}))
}

fn ok(data: Value) -> Value {
    json!({"code": "0", "msg": "", "data": data})
}

pub(crate) fn handle(st: &State, req: &Req) -> Handled {
    if let Some(body) = public(st, req) {
        return Handled::public(Reply::ok(body));
    }
    let has_auth = req.header("ok-access-key").is_some() || req.header("ok-access-sign").is_some();
    private_flow(
        req,
        has_auth,
        private(st, req),
        || verify(st, req),
        || ok(json!([])),
    )
}

fn verify(st: &State, req: &Req) -> Result<String, Rejection> {
    let Some(key_id) = req.header_nonempty("ok-access-key") else {
        return Err(Rejection::new(
            None,
            "missing OK-ACCESS-KEY",
            err(
                401,
                "50103",
                "Request header OK-ACCESS-KEY cannot be empty.",
            ),
        ));
    };
    let k = Some(key_id);
    let Some(sign) = req.header_nonempty("ok-access-sign") else {
        return Err(Rejection::new(
            k,
            "missing OK-ACCESS-SIGN",
            err(
                401,
                "50106",
                "Request header OK-ACCESS-SIGN cannot be empty.",
            ),
        ));
    };
    let Some(ts) = req.header_nonempty("ok-access-timestamp") else {
        return Err(Rejection::new(
            k,
            "missing OK-ACCESS-TIMESTAMP",
            err(
                401,
                "50107",
                "Request header OK-ACCESS-TIMESTAMP cannot be empty.",
            ),
        ));
    };
    let Some(passphrase) = req.header_nonempty("ok-access-passphrase") else {
        return Err(Rejection::new(
            k,
            "missing OK-ACCESS-PASSPHRASE",
            err(
                401,
                "50104",
                "Request header OK-ACCESS-PASSPHRASE cannot be empty.",
            ),
        ));
    };
    let Ok(ts_parsed) = chrono::DateTime::parse_from_rfc3339(ts) else {
        return Err(Rejection::new(
            k,
            "OK-ACCESS-TIMESTAMP is not ISO-8601",
            err(401, "50112", "Invalid OK-ACCESS-TIMESTAMP."),
        ));
    };
    if (st.now_ms() - ts_parsed.timestamp_millis()).abs() > WINDOW_MS {
        return Err(Rejection::new(
            k,
            "timestamp outside 30 s window",
            err(401, "50102", "Timestamp request expired."),
        ));
    }
    let Some(key) = st.key("okx", key_id) else {
        return Err(Rejection::new(
            k,
            "unknown API key",
            err(401, "50111", "Invalid OK-ACCESS-KEY."),
        ));
    };
    if !key
        .passphrase
        .as_deref()
        .is_some_and(|p| crypto::ct_eq(p.as_bytes(), passphrase.as_bytes()))
    {
        return Err(Rejection::new(
            k,
            "passphrase mismatch",
            err(401, "50105", "Invalid OK-ACCESS-PASSPHRASE."),
        ));
    }
    let mut prehash = format!("{ts}{}{}", req.method.as_str(), req.path);
    if let Some(q) = req.query.as_deref().filter(|q| !q.is_empty()) {
        prehash.push('?');
        prehash.push_str(q);
    }
    let mut msg = prehash.into_bytes();
    msg.extend_from_slice(&req.body);
    let ok_sig = match (&key.secret, crypto::b64_decode(sign)) {
        (Some(secret), Some(raw)) => crypto::hmac_sha256_ok(secret.as_bytes(), &msg, &raw),
        _ => false,
    };
    if !ok_sig {
        return Err(Rejection::new(
            k,
            format!(
                "signature mismatch over {:?}",
                String::from_utf8_lossy(&msg)
            ),
            err(401, "50113", "Invalid Sign"),
        ));
    }
    Ok(key_id.to_string())
}

fn public(st: &State, req: &Req) -> Option<Value> {
    if req.method != Method::GET {
        return None;
    }
    let now = st.now_ms();
    let p = req.query_params();
    Some(match req.path.as_str() {
        "/api/v5/public/time" => ok(json!([{"ts": now.to_string()}])),
        "/api/v5/public/instruments" => {
            let inst_type = param(&p, "instType").unwrap_or("SPOT");
            let insts: Vec<Value> = ["BTC", "ETH", "SOL"]
                .iter()
                .map(|b| {
                    let b: &str = b;
                    let swap = inst_type == "SWAP";
                    let inst_id = if swap { format!("{b}-USDT-SWAP") } else { format!("{b}-USDT") };
                    let ct_val = match b { "BTC" => "0.01", "ETH" => "0.1", _ => "1" };
                    json!({
                        "instType": inst_type, "instId": inst_id, "uly": if swap { format!("{b}-USDT") } else { String::new() },
                        "instFamily": if swap { format!("{b}-USDT") } else { String::new() },
                        "baseCcy": if swap { "" } else { b }, "quoteCcy": if swap { "" } else { "USDT" },
                        "settleCcy": if swap { "USDT" } else { "" },
                        "ctVal": if swap { ct_val } else { "" }, "ctMult": if swap { "1" } else { "" },
                        "ctValCcy": if swap { b } else { "" }, "ctType": if swap { "linear" } else { "" },
                        "lever": "10", "lotSz": if swap { "0.01" } else { "0.00000001" },
                        "minSz": if swap { "0.01" } else { "0.00001" }, "tickSz": "0.1",
                        "state": "live", "listTime": "1606468572000", "expTime": "", "alias": "",
                        "optType": "", "stk": "", "category": "1",
                    })
                })
                .collect();
            let insts = match param(&p, "instId") {
                Some(id) => insts.into_iter().filter(|i| i["instId"] == id).collect(),
                None => insts,
            };
            ok(Value::Array(insts))
        }
        "/api/v5/market/ticker" => {
            let inst = param(&p, "instId").unwrap_or("BTC-USDT");
            let px = format!("{:.1}", price_of(inst.split('-').next().unwrap_or("BTC")));
            ok(
                json!([{"instType": "SPOT", "instId": inst, "last": px, "lastSz": "0.1",
                "askPx": px, "askSz": "1", "bidPx": px, "bidSz": "1", "open24h": px,
                "high24h": px, "low24h": px, "volCcy24h": "0", "vol24h": "0",
                "sodUtc0": px, "sodUtc8": px, "ts": now.to_string()}]),
            )
        }
        _ => return None,
    })
}

fn private(st: &State, req: &Req) -> Option<Value> {
    let now = st.now_ms().to_string();
    let body = req.json();
    Some(match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/api/v5/account/balance") => {
            let details: Vec<Value> = BALANCES
                .iter()
                .map(|(a, f, l)| {
                    let eq = crate::wire::add(f, l);
                    json!({
                        "availBal": f, "availEq": f, "borrowFroz": "", "cashBal": eq, "ccy": a,
                        "crossLiab": "", "disEq": eq, "eq": eq, "eqUsd": eq, "fixedBal": "0",
                        "frozenBal": l, "imr": "", "interest": "", "isoEq": "0", "isoLiab": "",
                        "isoUpl": "0", "liab": "", "maxLoan": "", "mgnRatio": "", "mmr": "",
                        "notionalLever": "", "ordFrozen": l, "spotInUseAmt": "", "stgyEq": "0",
                        "twap": "0", "uTime": now, "upl": "0", "uplLiab": "",
                    })
                })
                .collect();
            ok(json!([{"adjEq": "", "borrowFroz": "", "details": details, "imr": "", "isoEq": "0",
                "mgnRatio": "", "mmr": "", "notionalUsd": "", "ordFroz": "", "totalEq": "10000",
                "uTime": now, "upl": ""}]))
        }
        ("GET", "/api/v5/asset/balances") => ok(Value::Array(
            BALANCES
                .iter()
                .map(|(a, f, l)| json!({"availBal": f, "bal": crate::wire::add(f, l), "ccy": a, "frozenBal": l}))
                .collect(),
        )),
        ("GET", "/api/v5/account/config") => ok(json!([{
            "acctLv": "2", "autoLoan": false, "ctIsoMode": "automatic", "greeksType": "PA",
            "level": "Lv1", "levelTmp": "", "mgnIsoMode": "automatic", "posMode": "net_mode",
            "spotOffsetType": "", "uid": "44705892343619584", "mainUid": "44705892343619584",
            "label": "keygate-mock", "roleType": "0", "traderInsts": [], "spotRoleType": "0",
            "spotTraderInsts": [], "opAuth": "0", "kycLv": "2", "ip": "",
            "perm": "read_only,trade", "enableSpotBorrow": false, "spotBorrowAutoRepay": false,
        }])),
        ("POST", "/api/v5/trade/order") => {
            let item = |o: &Value| json!({
                "clOrdId": jstr(o, "clOrdId").unwrap_or_default(), "ordId": st.next_id().to_string(),
                "tag": jstr(o, "tag").unwrap_or_default(), "ts": now, "sCode": "0", "sMsg": "Order placed",
            });
            let mut v = ok(json!([item(&body)]));
            v["inTime"] = json!(now);
            v["outTime"] = json!(now);
            v
        }
        ("POST", "/api/v5/trade/batch-orders") => {
            let items: Vec<Value> = body
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|o| json!({"clOrdId": jstr(o, "clOrdId").unwrap_or_default(),
                    "ordId": st.next_id().to_string(), "tag": "", "ts": now, "sCode": "0", "sMsg": "Order placed"}))
                .collect();
            ok(Value::Array(items))
        }
        ("POST", "/api/v5/trade/cancel-order") | ("POST", "/api/v5/trade/amend-order") => ok(json!([{
            "clOrdId": jstr(&body, "clOrdId").unwrap_or_default(),
            "ordId": jstr(&body, "ordId").unwrap_or_default(), "ts": now, "sCode": "0", "sMsg": "",
        }])),
        ("GET", "/api/v5/trade/orders-pending")
        | ("GET", "/api/v5/trade/orders-history")
        | ("GET", "/api/v5/account/positions") => ok(json!([])),
        ("POST", "/api/v5/account/set-leverage") => ok(json!([{
            "lever": jstr(&body, "lever").unwrap_or_default(), "mgnMode": jstr(&body, "mgnMode").unwrap_or_default(),
            "instId": jstr(&body, "instId").unwrap_or_default(), "posSide": jstr(&body, "posSide").unwrap_or_default(),
        }])),
        ("POST", "/api/v5/asset/withdrawal") => ok(json!([{
            "amt": jstr(&body, "amt").unwrap_or_default(), "wdId": st.next_id().to_string(),
            "ccy": jstr(&body, "ccy").unwrap_or_default(), "clientId": jstr(&body, "clientId").unwrap_or_default(),
            "chain": jstr(&body, "chain").unwrap_or_default(),
        }])),
        ("POST", "/api/v5/asset/transfer") => ok(json!([{
            "transId": st.next_id().to_string(), "ccy": jstr(&body, "ccy").unwrap_or_default(),
            "clientId": jstr(&body, "clientId").unwrap_or_default(), "from": jstr(&body, "from").unwrap_or_default(),
            "amt": jstr(&body, "amt").unwrap_or_default(), "to": jstr(&body, "to").unwrap_or_default(),
        }])),
        _ => return None,
    })
}
