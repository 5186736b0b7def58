//! keygate as a CCXT drop-in (issue 7): stock Python ccxt with placeholder keys and its
//! `urls['api']` pointed at keygate's proxy calls `fetch_balance` and `create_order` on all
//! nine exchanges; keygate strips ccxt's signature and signs with the real key, which the
//! mock exchange verifies. The same script pointed straight at the mock is rejected, and a
//! policy denial reaches ccxt as an exception carrying keygate's problem `code`.
//! The script is `testing/ccxt/dropin.py`, run with `KEYGATE_TEST_PYTHON`.

use std::path::PathBuf;

use keygate_exchanges::keygen;
use keygate_mock_exchange::{MockConfig, MockExchange, MockKey, EXCHANGES};
use secrecy::ExposeSecret;
use serde_json::{json, Value};
use uuid::Uuid;

use crate::helpers::{spawn_app, Backend, TestApp};
use crate::{API_KEY, API_SECRET, OKX_PASSPHRASE};

const KRAKEN_KEY: &str = "kraken-dropin-key";
const KRAKEN_SECRET: &str = "a3Jha2VuLXNlY3JldC1rcmFrZW4tc2VjcmV0LTEyMzQ=";
const COINBASE_KEY: &str =
    "organizations/0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0/apiKeys/9a8b7c6d-5e4f-3a2b-1c0d-e9f8a7b6c5d4";

/// Exchanges whose stock ccxt error handler raises a plain `ValueError` on keygate's
/// problem body (a non-numeric `code`) instead of a ccxt exception.
const CCXT_CRASHES_ON_PROBLEM_CODE: [&str; 2] = ["binance", "binanceusdm"];

/// The real keys: what keygate stores and the mock checks. The bot never sees them.
struct RealKeys {
    coinbase_private_pem: String,
    coinbase_public_pem: String,
}

impl RealKeys {
    fn new() -> Self {
        let pair = keygen::generate_p256();
        RealKeys {
            coinbase_private_pem: pair.private_pem.expose_secret().to_string(),
            coinbase_public_pem: pair.public_pem,
        }
    }

    fn api_key(&self, exchange: &str) -> &'static str {
        match exchange {
            "binance" | "binanceusdm" => API_KEY,
            "kraken" => KRAKEN_KEY,
            "coinbase" => COINBASE_KEY,
            "okx" => "okx-dropin-key",
            "bybit" => "bybit-dropin-key",
            "kucoin" => "kucoin-dropin-key",
            "bitget" => "bitget-dropin-key",
            "gate" => "gate-dropin-key",
            other => panic!("no key for {other}"),
        }
    }

    fn secret(exchange: &str) -> &'static str {
        match exchange {
            "binance" | "binanceusdm" => API_SECRET,
            "kraken" => KRAKEN_SECRET,
            "okx" => "okx-dropin-secret-0123456789",
            "bybit" => "bybit-dropin-secret-0123456789",
            "kucoin" => "kucoin-dropin-secret-0123456789",
            "bitget" => "bitget-dropin-secret-0123456789",
            "gate" => "gate-dropin-secret-0123456789",
            other => panic!("no secret for {other}"),
        }
    }

    fn passphrase(exchange: &str) -> Option<&'static str> {
        match exchange {
            "okx" => Some(OKX_PASSPHRASE),
            "kucoin" => Some("kucoin-pass-77"),
            "bitget" => Some("bitget-pass-88"),
            _ => None,
        }
    }

    fn mock_keys(&self) -> Vec<MockKey> {
        let mut keys = Vec::new();
        for ex in EXCHANGES {
            if ex == "binanceusdm" {
                continue; // the binance key serves both APIs
            }
            let key = if ex == "coinbase" {
                MockKey::public_key(ex, self.api_key(ex), self.coinbase_public_pem.clone())
            } else {
                MockKey::hmac(ex, self.api_key(ex), Self::secret(ex))
            };
            keys.push(match Self::passphrase(ex) {
                Some(p) => key.with_passphrase(p),
                None => key,
            });
        }
        keys
    }

    fn credential_body(&self, exchange: &str) -> Value {
        let mut body = json!({
            "exchange": exchange,
            "label": format!("dropin-{exchange}-{}", Uuid::new_v4().simple()),
            "api_key": self.api_key(exchange),
            "permissions": ["read", "trade"],
        });
        if exchange == "coinbase" {
            body["private_key"] = json!(self.coinbase_private_pem);
        } else {
            body["api_secret"] = json!(Self::secret(exchange));
        }
        if let Some(p) = Self::passphrase(exchange) {
            body["passphrase"] = json!(p);
        }
        body
    }
}

/// The venv interpreter with ccxt, or `None` (skip) outside CI.
fn python() -> Option<String> {
    match std::env::var("KEYGATE_TEST_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            if std::env::var("CI").as_deref() == Ok("true")
                || std::env::var("KEYGATE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1")
            {
                panic!("KEYGATE_TEST_PYTHON is not set: run the suite through scripts/test");
            }
            eprintln!("skipping the CCXT drop-in test: KEYGATE_TEST_PYTHON is not set");
            None
        }
    }
}

/// Runs `testing/ccxt/dropin.py` with `config` on stdin; returns its JSON lines.
async fn run_dropin(python: &str, config: Value) -> Vec<Value> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testing/ccxt/dropin.py");
    let python = python.to_string();
    let out = tokio::task::spawn_blocking(move || {
        use std::io::Write as _;
        let mut child = std::process::Command::new(python)
            .arg(script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the ccxt script");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(config.to_string().as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dropin.py failed: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

async fn connection(
    app: &TestApp,
    token: &str,
    mock: &MockExchange,
    exchange: &str,
    credential: &Value,
    limits: Value,
) -> String {
    let (s, conn) = app
        .post(
            "/v1/connections",
            token,
            json!({"name": format!("dropin-{exchange}-{}", Uuid::new_v4().simple()), "exchange": exchange, "credential_id": credential["id"], "base_url": mock.base_url(), "scopes": ["read", "trade"], "limits": limits, "timeout_ms": 5000, "max_retries": 1}),
        )
        .await;
    assert_eq!(s, 201, "{exchange}: {conn}");
    conn["id"].as_str().unwrap().to_string()
}

fn proxy_base(app: &TestApp, conn: &str) -> String {
    format!("{}/v1/connections/{conn}/proxy", app.base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_ccxt_through_keygate() {
    let Some(python) = python() else { return };
    let Some(app) = spawn_app(Backend::Sqlite).await else {
        return;
    };
    let real = RealKeys::new();
    let mock = MockExchange::start(MockConfig {
        keys: real.mock_keys(),
    })
    .await;
    let t = app.token(Uuid::new_v4());

    // One credential per exchange with the real keys (binanceusdm shares binance's) and one
    // connection per CCXT id, pointed at the mock.
    let mut creds = std::collections::HashMap::new();
    let mut targets = Vec::new();
    for ex in EXCHANGES {
        let cred_ex = if ex == "binanceusdm" { "binance" } else { ex };
        if !creds.contains_key(cred_ex) {
            let (s, cred) = app
                .post("/v1/credentials", &t, real.credential_body(cred_ex))
                .await;
            assert_eq!(s, 201, "{cred_ex}: {cred}");
            creds.insert(cred_ex, cred);
        }
        let conn = connection(&app, &t, &mock, ex, &creds[cred_ex], json!({})).await;
        targets.push(json!({"exchange": ex, "base": proxy_base(&app, &conn)}));
    }

    // Through keygate: every call succeeds, and every request the mock saw was signed with
    // the real key.
    let lines = run_dropin(&python, json!({"token": t, "targets": targets})).await;
    let failed: Vec<&Value> = lines.iter().filter(|l| l["ok"] != true).collect();
    assert!(
        failed.is_empty(),
        "calls failed through keygate: {failed:#?}"
    );
    for ex in EXCHANGES {
        for call in ["fetch_balance", "create_order"] {
            assert!(
                lines
                    .iter()
                    .any(|l| l["exchange"] == ex && l["call"] == call && l["ok"] == true),
                "{ex} {call} missing: {lines:#?}"
            );
        }
    }
    let seen = mock.requests();
    for ex in EXCHANGES {
        let mine: Vec<_> = seen
            .iter()
            .filter(|r| r.exchange == Some(ex) && r.api_key.is_some())
            .collect();
        assert!(
            mine.len() >= 2,
            "{ex}: expected signed balance + order requests, saw {mine:#?}"
        );
        for r in &mine {
            assert!(
                r.verified,
                "{ex} {} {}: {:?}",
                r.method, r.path, r.rejection
            );
            assert_eq!(
                r.api_key.as_deref(),
                Some(real.api_key(ex)),
                "{ex} {}",
                r.path
            );
            assert!(r.header("x-keygate-token").is_none(), "{ex}: token leaked");
        }
        assert!(
            mine.iter().any(|r| r.method == "POST"),
            "{ex}: the order reached the exchange"
        );
    }
    assert!(
        seen.iter().all(|r| r.verified || r.api_key.is_none()),
        "no unverified private request through keygate: {:#?}",
        seen.iter().filter(|r| !r.verified).collect::<Vec<_>>()
    );

    // The same script straight at the mock, without keygate: the placeholder keys fail.
    mock.clear();
    let direct: Vec<Value> = EXCHANGES
        .iter()
        .map(|ex| json!({"exchange": ex, "base": mock.base_url()}))
        .collect();
    let lines = run_dropin(&python, json!({"token": null, "targets": direct})).await;
    assert_eq!(lines.len(), EXCHANGES.len() * 2, "{lines:#?}");
    for l in &lines {
        assert_eq!(l["ok"], false, "placeholder keys accepted: {l}");
    }
    let seen = mock.requests();
    assert!(!seen.is_empty());
    assert!(
        seen.iter().all(|r| !r.verified),
        "the mock verified a placeholder signature: {seen:#?}"
    );
    for ex in EXCHANGES {
        assert!(
            seen.iter()
                .any(|r| r.exchange == Some(ex) && r.rejection.is_some()),
            "{ex}: the mock saw and rejected the placeholder request"
        );
    }

    // A policy denial surfaces in ccxt as an exception carrying keygate's problem code,
    // on every exchange, and never reaches the exchange.
    mock.clear();
    let mut denied = Vec::new();
    for ex in EXCHANGES {
        let cred_ex = if ex == "binanceusdm" { "binance" } else { ex };
        let conn = connection(
            &app,
            &t,
            &mock,
            ex,
            &creds[cred_ex],
            json!({"max_trade_usd": "1"}),
        )
        .await;
        denied.push(
            json!({"exchange": ex, "base": proxy_base(&app, &conn), "calls": ["create_order"]}),
        );
    }
    let lines = run_dropin(&python, json!({"token": t, "targets": denied})).await;
    eprintln!("denials as ccxt reports them:");
    for l in &lines {
        eprintln!("  {l}");
    }
    assert_eq!(lines.len(), EXCHANGES.len(), "{lines:#?}");
    for l in &lines {
        let ex = l["exchange"].as_str().unwrap();
        assert_eq!(l["ok"], false, "{l}");
        let classes: Vec<&str> = l["error_classes"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        if CCXT_CRASHES_ON_PROBLEM_CODE.contains(&ex) && classes.contains(&"ValueError") {
            // ccxt 4.5.90's binance handle_errors feeds any `code` field to
            // `Precise.string_equals(code, '0')`, which raises ValueError on a
            // non-numeric string before ccxt builds its own exception (see the report
            // in README "Use keygate from a CCXT bot"). The order still never reaches
            // the exchange (asserted below).
            continue;
        }
        assert!(
            classes.contains(&"BaseError"),
            "{ex}: not a ccxt exception: {l}"
        );
        assert!(
            l["error"]
                .as_str()
                .unwrap()
                .contains("notional_exceeds_limit"),
            "{ex}: the exception does not name keygate's code: {l}"
        );
    }
    assert!(
        mock.requests().iter().all(|r| r.method != "POST"),
        "a denied order reached the exchange: {:#?}",
        mock.requests()
    );
}
