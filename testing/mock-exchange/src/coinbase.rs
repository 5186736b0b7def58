//! Coinbase Advanced Trade (`/api/v3/brokerage`) and the v2 API (`/v2`), CDP keys.
//!
//! Verification per <https://docs.cdp.coinbase.com/advanced-trade/docs/rest-api-auth>:
//! `Authorization: Bearer <JWT>` signed ES256 with the key's P-256 key. JWT header: `alg`
//! = ES256, `kid` = key name, `nonce` present (DESIGN.md §7: `kid`/`nonce` are header
//! fields). Claims: `sub` = key name, `iss` = "cdp", `nbf` <= now (1 s leeway), `exp` > now,
//! `uri` = "METHOD host/path" (no query).
//!
//! The host in `uri` is checked against the request's `Host` header, not against
//! `api.coinbase.com`: a signer that binds the host it really sends to (here
//! `127.0.0.1:PORT`) passes, one that hard-codes the production host does not. Failures
//! answer HTTP 401.

use http::Method;
use serde_json::{json, Value};

use crate::crypto;
use crate::wire::{add, jstr, private_flow, Handled, Rejection, Reply, Req, BALANCES};
use crate::State;

fn unauthorized(detail: &str) -> Reply {
    Reply::json(
        401,
        json!({"error": "UNAUTHENTICATED", "message": "Unauthorized", "error_details": detail}),
    )
}

pub(crate) fn handle(st: &State, req: &Req) -> Handled {
    if let Some(body) = public(st, req) {
        return Handled::public(Reply::ok(body));
    }
    let has_auth = req.header("authorization").is_some();
    private_flow(
        req,
        has_auth,
        private(st, req),
        || verify(st, req),
        || json!({}),
    )
}

fn rej(k: Option<&str>, reason: &str) -> Rejection {
    Rejection::new(k, reason, unauthorized(reason))
}

fn verify(st: &State, req: &Req) -> Result<String, Rejection> {
    let Some(token) = req
        .header("authorization")
        .and_then(|h| {
            h.strip_prefix("Bearer ")
                .or_else(|| h.strip_prefix("bearer "))
        })
        .map(str::trim)
    else {
        return Err(rej(None, "missing bearer JWT"));
    };
    let parts: Vec<&str> = token.split('.').collect();
    let [h64, p64, s64] = parts.as_slice() else {
        return Err(rej(None, "JWT is not three segments"));
    };
    let decode_json = |s: &str| -> Option<Value> {
        crypto::b64url_decode(s).and_then(|raw| serde_json::from_slice(&raw).ok())
    };
    let (Some(header), Some(claims)) = (decode_json(h64), decode_json(p64)) else {
        return Err(rej(None, "JWT header or claims not base64url JSON"));
    };
    let Some(kid) = header.get("kid").and_then(Value::as_str) else {
        return Err(rej(None, "JWT header lacks kid"));
    };
    let k = Some(kid);
    if header.get("alg").and_then(Value::as_str) != Some("ES256") {
        return Err(rej(k, "JWT alg is not ES256"));
    }
    if header
        .get("nonce")
        .and_then(Value::as_str)
        .is_none_or(str::is_empty)
    {
        return Err(rej(k, "JWT header lacks nonce"));
    }
    let Some(key) = st.key("coinbase", kid) else {
        return Err(rej(k, "unknown key name (kid)"));
    };
    let Some(vk) = key.public_key_pem.as_deref().and_then(crypto::p256_key) else {
        return Err(rej(k, "key has no usable P-256 public key"));
    };
    let sig_ok = crypto::b64url_decode(s64)
        .is_some_and(|sig| crypto::es256_ok(&vk, format!("{h64}.{p64}").as_bytes(), &sig));
    if !sig_ok {
        return Err(rej(k, "ES256 signature mismatch"));
    }
    if claims.get("sub").and_then(Value::as_str) != Some(kid) {
        return Err(rej(k, "sub does not equal kid"));
    }
    if claims.get("iss").and_then(Value::as_str) != Some("cdp") {
        return Err(rej(k, "iss is not cdp"));
    }
    let now_s = st.now_ms().div_euclid(1000);
    let (Some(nbf), Some(exp)) = (
        claims.get("nbf").and_then(Value::as_i64),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Err(rej(k, "nbf/exp missing or not integers"));
    };
    if nbf > now_s + 1 {
        return Err(rej(k, "JWT not yet valid (nbf)"));
    }
    if exp <= now_s {
        return Err(rej(k, "JWT expired (exp)"));
    }
    let host = req.header("host").unwrap_or("");
    let expected = format!("{} {}{}", req.method.as_str(), host, req.path);
    let uri = claims.get("uri").and_then(Value::as_str).unwrap_or("");
    if uri != expected {
        return Err(rej(k, &format!("uri claim {uri:?} != {expected:?}")));
    }
    Ok(kid.to_string())
}

fn public(st: &State, req: &Req) -> Option<Value> {
    if req.method != Method::GET {
        return None;
    }
    let now = st.now_ms();
    let iso = chrono::DateTime::from_timestamp_millis(now)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Some(match req.path.as_str() {
        "/api/v3/brokerage/time" => json!({"iso": iso, "epochSeconds": (now / 1000).to_string(),
            "epochMillis": now.to_string()}),
        "/v2/time" => json!({"data": {"iso": iso, "epoch": now / 1000}}),
        _ => return None,
    })
}

fn private(st: &State, req: &Req) -> Option<Value> {
    let body = req.json();
    let now = chrono::DateTime::from_timestamp_millis(st.now_ms())
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let path = req.path.as_str();
    if req.method == Method::POST
        && path.starts_with("/v2/accounts/")
        && path.ends_with("/transactions")
    {
        return Some(json!({"data": {
            "id": format!("mock-tx-{}", st.next_id()), "type": jstr(&body, "type").unwrap_or_else(|| "send".into()),
            "status": "pending",
            "amount": {"amount": format!("-{}", jstr(&body, "amount").unwrap_or_default()), "currency": jstr(&body, "currency").unwrap_or_default()},
            "native_amount": {"amount": "0.00", "currency": "USD"}, "description": null,
            "created_at": now, "updated_at": now, "resource": "transaction",
            "network": {"status": "pending"},
            "to": {"resource": "address", "address": jstr(&body, "to").unwrap_or_default()},
        }}));
    }
    Some(match (req.method.as_str(), path) {
        ("GET", "/api/v3/brokerage/accounts") => {
            let accounts: Vec<Value> = BALANCES
                .iter()
                .enumerate()
                .map(|(i, (a, f, l))| json!({
                    "uuid": format!("8bfc20d7-f7c6-4422-bf07-8243ca4169f{i}"), "name": format!("{a} Wallet"),
                    "currency": a, "available_balance": {"value": f, "currency": a}, "default": true,
                    "active": true, "created_at": now, "updated_at": now, "deleted_at": null,
                    "type": "ACCOUNT_TYPE_CRYPTO", "ready": true, "hold": {"value": l, "currency": a},
                    "retail_portfolio_id": "b87a2d3f-8a1e-49b3-a4ea-402d8c389379",
                    "platform": "ACCOUNT_PLATFORM_CONSUMER",
                }))
                .collect();
            json!({"accounts": accounts, "has_next": false, "cursor": "", "size": BALANCES.len()})
        }
        ("POST", "/api/v3/brokerage/orders") => {
            let order_id = format!("mock-{}", st.next_id());
            json!({
                "success": true,
                "failure_reason": "UNKNOWN_FAILURE_REASON",
                "order_id": order_id,
                "success_response": {
                    "order_id": order_id,
                    "product_id": jstr(&body, "product_id").unwrap_or_default(),
                    "side": jstr(&body, "side").unwrap_or_default(),
                    "client_order_id": jstr(&body, "client_order_id").unwrap_or_default(),
                },
                "order_configuration": body.get("order_configuration").cloned().unwrap_or(json!({})),
            })
        }
        ("POST", "/api/v3/brokerage/orders/batch_cancel") => {
            let ids: Vec<Value> = body
                .get("order_ids")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            json!({"results": ids.into_iter().map(|id| json!({"success": true,
                "failure_reason": "UNKNOWN_CANCEL_FAILURE_REASON", "order_id": id})).collect::<Vec<_>>()})
        }
        ("GET", "/api/v3/brokerage/orders/historical/batch") => {
            json!({"orders": [], "sequence": "0", "has_next": false, "cursor": ""})
        }
        ("GET", "/api/v3/brokerage/key_permissions") => json!({
            "can_view": true, "can_trade": true, "can_transfer": false,
            "portfolio_uuid": "b87a2d3f-8a1e-49b3-a4ea-402d8c389379", "portfolio_type": "DEFAULT",
        }),
        ("GET", "/v2/accounts") => {
            let data: Vec<Value> = BALANCES
                .iter()
                .enumerate()
                .map(|(i, (a, f, l))| json!({
                    "id": format!("8bfc20d7-f7c6-4422-bf07-8243ca4169f{i}"), "name": format!("{a} Wallet"),
                    "primary": i == 0, "type": "wallet",
                    "currency": {"code": a, "name": a, "type": "crypto"},
                    "balance": {"amount": add(f, l), "currency": a},
                    "created_at": now, "updated_at": now, "resource": "account",
                    "resource_path": format!("/v2/accounts/8bfc20d7-f7c6-4422-bf07-8243ca4169f{i}"),
                }))
                .collect();
            json!({"pagination": {"ending_before": null, "starting_after": null, "limit": 25,
                "order": "desc", "previous_uri": null, "next_uri": null}, "data": data})
        }
        ("GET", "/v2/user") => json!({"data": {"id": "9da7a204-544e-5fd1-9a12-61176c5d4cd8",
            "name": "Mock User", "resource": "user", "resource_path": "/v2/user"}}),
        _ => return None,
    })
}
