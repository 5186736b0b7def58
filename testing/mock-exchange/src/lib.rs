//! A local mock of the nine exchange APIs keygate speaks, verifying signatures exactly the
//! way each real exchange does.
//!
//! Gateway tests, the CCXT drop-in test and the load benchmark point keygate at this server
//! (`KEYGATE_ALLOWED_UPSTREAMS=127.0.0.1`). One server answers every API on one port and
//! tells them apart by path prefix (see [`exchange_for`]).
//!
//! Invariants:
//! - The verifiers are written from the exchanges' public docs, independently of
//!   `keygate-exchanges`' signers (this crate does not depend on it), so a bug has to be
//!   made twice, the same way, to go unnoticed.
//! - A private request is answered only after its signature, key, passphrase and time
//!   window check out; otherwise the exchange's own error body and status are returned.
//! - Every request is recorded, verified or not, with the reason it was rejected.
//! - Secrets never leave the process: [`MockKey`]'s `Debug` is redacted and recorded
//!   requests hold only what the client sent.
#![forbid(unsafe_code)]

mod binance;
mod bitget;
mod bybit;
mod coinbase;
mod crypto;
mod dispatch;
mod gate;
mod kraken;
mod kucoin;
mod okx;
mod server;
mod wire;

use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use parking_lot::Mutex;
use serde::Serialize;

pub use dispatch::exchange_for;

/// The exchanges (CCXT ids) the mock serves.
pub const EXCHANGES: [&str; 9] = [
    "binance",
    "binanceusdm",
    "okx",
    "bybit",
    "kraken",
    "kucoin",
    "bitget",
    "gate",
    "coinbase",
];

/// The keys the mock knows.
#[derive(Debug, Clone, Default)]
pub struct MockConfig {
    pub keys: Vec<MockKey>,
}

/// One API key as the exchange stores it.
///
/// A key registered for `binance` also serves `binanceusdm` and vice versa (one Binance key
/// covers both APIs, DESIGN.md §7).
#[derive(Clone)]
pub struct MockKey {
    /// CCXT id of the exchange (`binance`, `okx`, ...).
    pub exchange: &'static str,
    /// The API key id; for Coinbase the key name `organizations/{org}/apiKeys/{id}`.
    pub api_key: String,
    /// HMAC secret. Kraken's is base64, as Kraken hands it out.
    pub secret: Option<String>,
    /// OKX, KuCoin and Bitget passphrase, in plaintext.
    pub passphrase: Option<String>,
    /// SPKI PEM public key: Binance Ed25519 or RSA, Bybit RSA, Coinbase EC P-256 (for
    /// Coinbase an `EC PRIVATE KEY` PEM is accepted too; its public half is used).
    pub public_key_pem: Option<String>,
}

impl fmt::Debug for MockKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MockKey")
            .field("exchange", &self.exchange)
            .field("api_key", &self.api_key)
            .field("secret", &self.secret.as_ref().map(|_| "[redacted]"))
            .field(
                "passphrase",
                &self.passphrase.as_ref().map(|_| "[redacted]"),
            )
            .field("public_key_pem", &self.public_key_pem.is_some())
            .finish()
    }
}

impl MockKey {
    /// An HMAC key without passphrase. `exchange` must be one of [`EXCHANGES`].
    pub fn hmac(exchange: &str, api_key: impl Into<String>, secret: impl Into<String>) -> Self {
        MockKey {
            exchange: static_id(exchange).expect("unknown exchange id"),
            api_key: api_key.into(),
            secret: Some(secret.into()),
            passphrase: None,
            public_key_pem: None,
        }
    }

    /// A key verified with a public key (Binance Ed25519/RSA, Bybit RSA, Coinbase EC).
    pub fn public_key(exchange: &str, api_key: impl Into<String>, pem: impl Into<String>) -> Self {
        MockKey {
            exchange: static_id(exchange).expect("unknown exchange id"),
            api_key: api_key.into(),
            secret: None,
            passphrase: None,
            public_key_pem: Some(pem.into()),
        }
    }

    /// Adds the passphrase (OKX, KuCoin, Bitget).
    pub fn with_passphrase(mut self, passphrase: impl Into<String>) -> Self {
        self.passphrase = Some(passphrase.into());
        self
    }
}

/// Maps a CCXT id onto the `'static` string the mock uses.
pub fn static_id(id: &str) -> Option<&'static str> {
    EXCHANGES.into_iter().find(|e| *e == id)
}

/// Why a JSON key file could not be read.
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid mock config: {}", self.0)
    }
}

impl std::error::Error for ConfigError {}

impl MockConfig {
    /// Reads `{"keys": [{"exchange", "api_key", "secret"?, "passphrase"?,
    /// "public_key_pem"?}]}`.
    pub fn from_json(text: &str) -> Result<MockConfig, ConfigError> {
        #[derive(serde::Deserialize)]
        struct File {
            keys: Vec<Key>,
        }
        #[derive(serde::Deserialize)]
        struct Key {
            exchange: String,
            api_key: String,
            secret: Option<String>,
            passphrase: Option<String>,
            public_key_pem: Option<String>,
        }
        let file: File = serde_json::from_str(text).map_err(|e| ConfigError(e.to_string()))?;
        let keys = file
            .keys
            .into_iter()
            .map(|k| {
                let exchange = static_id(&k.exchange)
                    .ok_or_else(|| ConfigError(format!("unknown exchange {:?}", k.exchange)))?;
                if k.secret.is_none() && k.public_key_pem.is_none() {
                    return Err(ConfigError(format!(
                        "key {:?} has neither secret nor public_key_pem",
                        k.api_key
                    )));
                }
                Ok(MockKey {
                    exchange,
                    api_key: k.api_key,
                    secret: k.secret,
                    passphrase: k.passphrase,
                    public_key_pem: k.public_key_pem,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MockConfig { keys })
    }
}

/// A fault applied to requests after they were processed and recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer normally, but only after this long.
    Delay(Duration),
    /// Answer with this status and a small JSON body instead of the real answer.
    Status(u16),
    /// Answer 200 with a body that is not JSON although it says it is.
    Garbage,
    /// Drop the connection without answering.
    Close,
}

/// One request as the mock received it.
#[derive(Debug, Clone, Serialize)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Raw query string without `?`.
    pub query: Option<String>,
    /// Header names lower-cased, in the order received.
    pub headers: Vec<(String, String)>,
    #[serde(serialize_with = "ser_body")]
    pub body: Bytes,
    /// CCXT id of the API the path was dispatched to; `None` for unknown paths.
    pub exchange: Option<&'static str>,
    /// True when the request carried a valid signature from a known key.
    pub verified: bool,
    /// Why the request was rejected (signature, key, passphrase, time window, nonce).
    pub rejection: Option<String>,
    /// The API key the request claimed, when it named one.
    pub api_key: Option<String>,
    /// Status the mock answered (before any fault replaced the answer).
    pub status: u16,
}

fn ser_body<S: serde::Serializer>(b: &Bytes, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(b))
}

impl RecordedRequest {
    /// First value of a header (name case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as UTF-8 text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Rate-limit accounting for one exchange: a fixed window of request counts, unless a test
/// pinned the value the headers report.
#[derive(Debug, Default, Clone, Copy)]
struct RateWindow {
    pinned: Option<u64>,
    window_start_ms: i64,
    count: u64,
}

/// Window length per exchange, in ms, as the exchanges document their main limit.
pub(crate) fn rate_window_ms(exchange: &str) -> i64 {
    match exchange {
        "binance" | "binanceusdm" => 60_000,
        "bybit" => 1_000,
        "kucoin" => 30_000,
        "gate" => 10_000,
        _ => 60_000,
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Clock {
    fixed_ms: Option<i64>,
    offset_ms: i64,
}

#[derive(Debug, Clone)]
struct FaultState {
    fault: Fault,
    /// Requests left to apply it to; `None` = until cleared.
    remaining: Option<usize>,
}

/// Shared state of one mock server.
pub(crate) struct State {
    keys: Vec<MockKey>,
    clock: Mutex<Clock>,
    records: Mutex<Vec<RecordedRequest>>,
    /// Keep at most this many records (the newest); `usize::MAX` = all.
    max_records: AtomicUsize,
    fault: Mutex<Option<FaultState>>,
    rate: Mutex<HashMap<&'static str, RateWindow>>,
    kraken_nonces: Mutex<HashMap<String, u64>>,
    next_id: AtomicU64,
    /// What Binance's key check reports for withdrawals (`enableWithdrawals`).
    withdrawals_enabled: std::sync::atomic::AtomicBool,
}

impl State {
    fn new(config: MockConfig) -> State {
        State {
            keys: config.keys,
            clock: Mutex::new(Clock::default()),
            records: Mutex::new(Vec::new()),
            max_records: AtomicUsize::new(usize::MAX),
            fault: Mutex::new(None),
            rate: Mutex::new(HashMap::new()),
            kraken_nonces: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1_000_001),
            withdrawals_enabled: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// The mock's clock in ms since the epoch.
    pub(crate) fn now_ms(&self) -> i64 {
        let c = *self.clock.lock();
        c.fixed_ms
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis())
            + c.offset_ms
    }

    /// The key `api_key` of the venue `exchange` belongs to.
    pub(crate) fn key(&self, exchange: &str, api_key: &str) -> Option<&MockKey> {
        let wanted = venue(exchange);
        self.keys
            .iter()
            .find(|k| venue(k.exchange) == wanted && k.api_key == api_key)
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Counts one request of `weight` against `exchange` and returns what the rate-limit
    /// headers report now: `(used, window_reset_at_ms)`.
    pub(crate) fn count_rate(&self, exchange: &'static str, weight: u64) -> (u64, i64) {
        let now = self.now_ms();
        let window = rate_window_ms(exchange);
        let mut map = self.rate.lock();
        let w = map.entry(exchange).or_default();
        if let Some(p) = w.pinned {
            return (p, now - now.rem_euclid(window) + window);
        }
        if now >= w.window_start_ms + window || now < w.window_start_ms {
            w.window_start_ms = now - now.rem_euclid(window);
            w.count = 0;
        }
        w.count += weight;
        (w.count, w.window_start_ms + window)
    }

    /// Checks and records a Kraken nonce: must be strictly greater than the key's last.
    pub(crate) fn kraken_nonce(&self, api_key: &str, nonce: u64) -> Result<(), u64> {
        let mut map = self.kraken_nonces.lock();
        match map.get(api_key) {
            Some(&last) if nonce <= last => Err(last),
            _ => {
                map.insert(api_key.to_string(), nonce);
                Ok(())
            }
        }
    }

    fn take_fault(&self) -> Option<Fault> {
        let mut slot = self.fault.lock();
        let state = slot.as_mut()?;
        let fault = state.fault.clone();
        if let Some(n) = state.remaining.as_mut() {
            *n = n.saturating_sub(1);
            if *n == 0 {
                *slot = None;
            }
        }
        Some(fault)
    }

    fn record(&self, r: RecordedRequest) {
        let max = self.max_records.load(Ordering::Relaxed);
        let mut records = self.records.lock();
        if records.len() >= max {
            // drop the older half at once rather than shifting on every request
            let drop = records.len() - max / 2;
            records.drain(..drop);
        }
        if max > 0 {
            records.push(r);
        }
    }
}

/// The venue whose keys an API uses.
pub(crate) fn venue(exchange: &str) -> &str {
    match exchange {
        "binanceusdm" => "binance",
        other => other,
    }
}

/// A running mock exchange. Dropping it stops accepting connections.
pub struct MockExchange {
    state: Arc<State>,
    addr: SocketAddr,
    accept_task: tokio::task::JoinHandle<()>,
}

impl MockExchange {
    /// Starts on `127.0.0.1:0` (a free port).
    pub async fn start(config: MockConfig) -> MockExchange {
        Self::start_on(config, SocketAddr::from(([127, 0, 0, 1], 0)))
            .await
            .expect("bind 127.0.0.1:0")
    }

    /// Starts on `addr`. The admin routes under `/__mock/` are served too (see the binary).
    pub async fn start_on(config: MockConfig, addr: SocketAddr) -> std::io::Result<MockExchange> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::new(config));
        let accept_task = tokio::spawn(server::accept_loop(listener, state.clone()));
        Ok(MockExchange {
            state,
            addr,
            accept_task,
        })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `127.0.0.1:PORT`: what a client sends as `Host` (and so what a Coinbase JWT `uri`
    /// must name).
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Everything received so far, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.state.records.lock().clone()
    }

    /// How many received requests carried a valid signature.
    pub fn count_verified(&self) -> usize {
        self.state
            .records
            .lock()
            .iter()
            .filter(|r| r.verified)
            .count()
    }

    /// Keeps only about the newest `n` requests (load runs that would otherwise hold every
    /// request in memory); `0` keeps none.
    pub fn keep_requests(&self, n: usize) {
        self.state.max_records.store(n, Ordering::Relaxed);
    }

    /// Forgets the recorded requests (keys, nonces, clock and faults stay).
    pub fn clear(&self) {
        self.state.records.lock().clear();
    }

    /// Applies `fault` to every following request until set to `None`.
    pub fn set_fault(&self, fault: Option<Fault>) {
        *self.state.fault.lock() = fault.map(|fault| FaultState {
            fault,
            remaining: None,
        });
    }

    /// Makes Binance's key check (`apiRestrictions`) report withdrawals enabled or not.
    pub fn set_withdrawals_enabled(&self, on: bool) {
        self.state
            .withdrawals_enabled
            .store(on, std::sync::atomic::Ordering::Relaxed);
    }

    /// Applies `fault` to the next `times` requests only, then answers normally again.
    pub fn set_fault_times(&self, fault: Fault, times: usize) {
        *self.state.fault.lock() = (times > 0).then_some(FaultState {
            fault,
            remaining: Some(times),
        });
    }

    /// Pins what `exchange`'s rate-limit headers report as used (Binance weight, Bybit and
    /// KuCoin and Gate remaining = limit - used) until [`Self::unpin_rate_limit`].
    pub fn set_rate_limit_used(&self, exchange: &str, used: u64) {
        let id = static_id(exchange).expect("unknown exchange id");
        self.state.rate.lock().entry(id).or_default().pinned = Some(used);
    }

    /// Back to counting requests per window.
    pub fn unpin_rate_limit(&self, exchange: &str) {
        let id = static_id(exchange).expect("unknown exchange id");
        self.state.rate.lock().remove(id);
    }

    /// Freezes the mock's clock at `now_ms` (ms since the epoch); `None` = real time.
    pub fn set_now_ms(&self, now_ms: Option<i64>) {
        self.state.clock.lock().fixed_ms = now_ms;
    }

    /// Skews the mock's clock by `offset_ms` (on top of real or frozen time).
    pub fn set_clock_offset_ms(&self, offset_ms: i64) {
        self.state.clock.lock().offset_ms = offset_ms;
    }

    /// The mock's current time in ms since the epoch.
    pub fn now_ms(&self) -> i64 {
        self.state.now_ms()
    }

    /// The last nonce Kraken accepted from `api_key`.
    pub fn kraken_last_nonce(&self, api_key: &str) -> Option<u64> {
        self.state.kraken_nonces.lock().get(api_key).copied()
    }

    /// Sets (or with `None` forgets) the last nonce Kraken accepted from `api_key`.
    pub fn set_kraken_last_nonce(&self, api_key: &str, nonce: Option<u64>) {
        let mut map = self.state.kraken_nonces.lock();
        match nonce {
            Some(n) => {
                map.insert(api_key.to_string(), n);
            }
            None => {
                map.remove(api_key);
            }
        }
    }
}

impl Drop for MockExchange {
    fn drop(&mut self) {
        self.accept_task.abort();
    }
}
