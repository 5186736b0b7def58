//! The HTTP/1.1 server: one task per connection, so that [`Fault::Close`] can drop the
//! connection itself (something a router-level handler cannot do).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::sync::Notify;

use crate::dispatch::{route, Api};
use crate::wire::{Auth, Handled, Reply, Req};
use crate::{static_id, Fault, RecordedRequest, State};

pub(crate) async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    loop {
        let Ok((stream, _peer)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        tokio::spawn(async move {
            let close = Arc::new(Notify::new());
            let svc_close = close.clone();
            let svc = service_fn(move |req| serve(state.clone(), req, svc_close.clone()));
            let conn = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                // Dropping the connection future closes the socket without an answer.
                _ = close.notified() => {}
            }
        });
    }
}

async fn serve(
    state: Arc<State>,
    req: Request<Incoming>,
    close: Arc<Notify>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let req = Req {
        method: parts.method,
        path: parts.uri.path().to_string(),
        query: parts.uri.query().map(str::to_string),
        headers: parts.headers,
        body,
    };

    if req.path.starts_with("/__mock/") {
        return Ok(to_response(admin(&state, &req)));
    }

    let api = route(&req.path, &req.headers);
    let handled = match api {
        Some(api) => handle(&state, api, &req),
        None => Handled::not_found(&req),
    };
    state.record(record(&req, api, &handled));

    match state.take_fault() {
        None => Ok(to_response(handled.reply)),
        Some(Fault::Delay(d)) => {
            tokio::time::sleep(d).await;
            Ok(to_response(handled.reply))
        }
        Some(Fault::Status(code)) => Ok(to_response(Reply::json(
            code,
            json!({"error": "mock_fault", "message": "injected fault", "status": code}),
        ))),
        Some(Fault::Garbage) => Ok(to_response(Reply {
            status: 200,
            body: Bytes::from_static(b"<html>\x00{\"garbage\": tru"),
            content_type: "application/json",
            headers: Vec::new(),
        })),
        Some(Fault::Close) => {
            close.notify_one();
            std::future::pending().await
        }
    }
}

fn handle(state: &State, api: Api, req: &Req) -> Handled {
    match api {
        Api::Binance => crate::binance::handle(state, req, false),
        Api::BinanceUsdm => crate::binance::handle(state, req, true),
        Api::Okx => crate::okx::handle(state, req),
        Api::Bybit => crate::bybit::handle(state, req),
        Api::Kraken => crate::kraken::handle(state, req),
        Api::Kucoin => crate::kucoin::handle(state, req),
        Api::Bitget => crate::bitget::handle(state, req),
        Api::Gate => crate::gate::handle(state, req),
        Api::Coinbase => crate::coinbase::handle(state, req),
    }
}

fn record(req: &Req, api: Option<Api>, handled: &Handled) -> RecordedRequest {
    let (verified, rejection, api_key) = match &handled.auth {
        Auth::Public => (false, None, None),
        Auth::Verified { api_key } => (true, None, Some(api_key.clone())),
        Auth::Rejected { api_key, reason } => (false, Some(reason.clone()), api_key.clone()),
    };
    RecordedRequest {
        method: req.method.to_string(),
        path: req.path.clone(),
        query: req.query.clone(),
        headers: req
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body: req.body.clone(),
        exchange: api.map(Api::id),
        verified,
        rejection,
        api_key,
        status: handled.reply.status,
    }
}

fn to_response(reply: Reply) -> Response<Full<Bytes>> {
    let mut b = Response::builder()
        .status(reply.status)
        .header("content-type", reply.content_type);
    for (name, value) in &reply.headers {
        b = b.header(*name, value.as_str());
    }
    b.body(Full::new(reply.body)).expect("valid response")
}

/// Control routes for out-of-process users (the benchmark, the CCXT test):
/// - `GET /__mock/requests` — recorded requests as JSON
/// - `GET /__mock/stats` — `{"received", "verified"}`
/// - `POST /__mock/clear`
/// - `POST /__mock/fault` — `{"kind": "delay", "ms": 500}` | `{"kind": "status", "status":
///   503}` | `{"kind": "garbage"}` | `{"kind": "close"}` | `{"kind": "none"}`, optional
///   `"times": n`
/// - `POST /__mock/rate-limit` — `{"exchange": "binance", "used": 1200}` (`"used": null`
///   unpins)
/// - `POST /__mock/clock` — `{"now_ms": 1700000000000}` (`null` = real time)
fn admin(state: &State, req: &Req) -> Reply {
    let body = req.json();
    match (req.method.as_str(), req.path.as_str()) {
        ("GET", "/__mock/requests") => {
            let records = state.records.lock().clone();
            Reply::ok(serde_json::to_value(records).unwrap_or(Value::Null))
        }
        ("GET", "/__mock/stats") => {
            let records = state.records.lock();
            Reply::ok(json!({
                "received": records.len(),
                "verified": records.iter().filter(|r| r.verified).count(),
            }))
        }
        ("POST", "/__mock/clear") => {
            state.records.lock().clear();
            Reply::ok(json!({"ok": true}))
        }
        ("POST", "/__mock/fault") => {
            let fault = match body.get("kind").and_then(Value::as_str) {
                Some("delay") => Some(Fault::Delay(Duration::from_millis(
                    body.get("ms").and_then(Value::as_u64).unwrap_or(1000),
                ))),
                Some("status") => Some(Fault::Status(
                    body.get("status")
                        .and_then(Value::as_u64)
                        .and_then(|s| u16::try_from(s).ok())
                        .unwrap_or(503),
                )),
                Some("garbage") => Some(Fault::Garbage),
                Some("close") => Some(Fault::Close),
                Some("none") | None => None,
                Some(_) => return Reply::json(400, json!({"error": "unknown fault kind"})),
            };
            let times = body.get("times").and_then(Value::as_u64);
            *state.fault.lock() = fault.map(|fault| crate::FaultState {
                fault,
                remaining: times.map(|t| t as usize),
            });
            Reply::ok(json!({"ok": true}))
        }
        ("POST", "/__mock/rate-limit") => {
            let Some(id) = body
                .get("exchange")
                .and_then(Value::as_str)
                .and_then(static_id)
            else {
                return Reply::json(400, json!({"error": "unknown exchange"}));
            };
            let used = body.get("used").and_then(Value::as_u64);
            let mut map = state.rate.lock();
            match used {
                Some(u) => map.entry(id).or_default().pinned = Some(u),
                None => {
                    map.remove(id);
                }
            }
            Reply::ok(json!({"ok": true}))
        }
        ("POST", "/__mock/clock") => {
            state.clock.lock().fixed_ms = body.get("now_ms").and_then(Value::as_i64);
            Reply::ok(json!({"ok": true, "now_ms": state.now_ms()}))
        }
        _ => Reply::not_found(req),
    }
}
