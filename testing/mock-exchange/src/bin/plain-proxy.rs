//! `plain-proxy --port N --upstream http://127.0.0.1:M`
//!
//! A bare reverse proxy on the HTTP stack keygate's gateway is built on (tokio, a hyper
//! HTTP/1.1 server, hyper-util's pooled client): no authentication, policy, signing or
//! audit. `bench/run.sh` measures it beside nginx so that keygate's figures can be split
//! into what the stack costs and what keygate's own work costs. Not part of keygate.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

type Upstream = Client<HttpConnector, Incoming>;
type Body = http_body_util::combinators::BoxBody<bytes::Bytes, hyper::Error>;

fn usage() -> ExitCode {
    eprintln!("usage: plain-proxy --port N --upstream http://HOST:PORT");
    ExitCode::from(2)
}

async fn forward(
    client: Upstream,
    authority: Authority,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (mut parts, body) = req.into_parts();
    let mut uri = parts.uri.into_parts();
    uri.scheme = Some(Scheme::HTTP);
    uri.authority = Some(authority);
    parts.uri = Uri::from_parts(uri).unwrap_or_default();
    parts.headers.remove(http::header::HOST);
    match client.request(Request::from_parts(parts, body)).await {
        Ok(resp) => Ok(resp.map(|b| b.boxed())),
        Err(_) => {
            let mut r = Response::new(
                Full::new(bytes::Bytes::from_static(b"upstream unavailable"))
                    .map_err(|never| match never {})
                    .boxed(),
            );
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            Ok(r)
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut port: u16 = 0;
    let mut upstream: Option<Uri> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => match args.next().and_then(|v| v.parse().ok()) {
                Some(p) => port = p,
                None => return usage(),
            },
            "--upstream" => match args.next().and_then(|v| v.parse().ok()) {
                Some(u) => upstream = Some(u),
                None => return usage(),
            },
            _ => return usage(),
        }
    }
    let Some(authority) = upstream.and_then(|u| u.authority().cloned()) else {
        return usage();
    };
    let listener =
        match tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], port))).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("plain-proxy: cannot bind 127.0.0.1:{port}: {e}");
                return ExitCode::FAILURE;
            }
        };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Upstream = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build(connector);
    println!(
        "listening on http://{}",
        listener.local_addr().expect("bound")
    );
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (client, authority) = (client.clone(), authority.clone());
        tokio::spawn(async move {
            let svc = service_fn(move |req| forward(client.clone(), authority.clone(), req));
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}
