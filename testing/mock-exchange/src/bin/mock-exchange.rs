//! `mock-exchange --port N --config keys.json [--rate-limit-used N] [--keep-requests N]`
//!
//! Serves the mock exchange on 127.0.0.1:N (0 = any free port) until interrupted, printing
//! `listening on http://127.0.0.1:PORT` once bound. The key file is
//! `{"keys": [{"exchange", "api_key", "secret"?, "passphrase"?, "public_key_pem"?}]}`.
//! `--rate-limit-used N` pins every exchange's rate-limit headers at N (load benchmarks
//! that must not trip keygate's own throttling). `--keep-requests N` keeps only about the
//! newest N received requests for `/__mock/requests` (a load run would otherwise hold
//! millions in memory and pay for growing the list). Control routes under `/__mock/` are
//! described in the library's `server` module.

use std::net::SocketAddr;
use std::process::ExitCode;

use keygate_mock_exchange::{MockConfig, MockExchange, EXCHANGES};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn usage() -> ExitCode {
    eprintln!(
        "usage: mock-exchange --port N --config keys.json [--rate-limit-used N] [--keep-requests N]"
    );
    ExitCode::from(2)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut port: u16 = 0;
    let mut config_path: Option<String> = None;
    let mut pinned: Option<u64> = None;
    let mut keep: Option<usize> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => match args.next().and_then(|v| v.parse().ok()) {
                Some(p) => port = p,
                None => return usage(),
            },
            "--config" => match args.next() {
                Some(p) => config_path = Some(p),
                None => return usage(),
            },
            "--rate-limit-used" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => pinned = Some(n),
                None => return usage(),
            },
            "--keep-requests" => match args.next().and_then(|v| v.parse().ok()) {
                Some(n) => keep = Some(n),
                None => return usage(),
            },
            "-h" | "--help" => {
                usage();
                return ExitCode::SUCCESS;
            }
            _ => return usage(),
        }
    }
    let config = match config_path {
        None => MockConfig::default(),
        Some(path) => {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                Err(e) => {
                    eprintln!("mock-exchange: cannot read {path}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match MockConfig::from_json(&text) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("mock-exchange: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
    };
    let mock = match MockExchange::start_on(config, SocketAddr::from(([127, 0, 0, 1], port))).await
    {
        Ok(m) => m,
        Err(e) => {
            eprintln!("mock-exchange: cannot bind 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(n) = keep {
        mock.keep_requests(n);
    }
    if let Some(n) = pinned {
        for id in EXCHANGES {
            mock.set_rate_limit_used(id, n);
        }
    }
    println!("listening on {}", mock.base_url());
    let _ = tokio::signal::ctrl_c().await;
    ExitCode::SUCCESS
}
