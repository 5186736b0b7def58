//! Secrets never leak: the real `keygate serve` with JSON logs at debug level, stderr in a
//! file; credential create / reveal, vault setup / unlock (right and wrong) / password
//! change, and error paths carrying secrets in bad input. Then the log file and the SQLite
//! files are searched for every secret, the passphrase, the vault passwords, the master key
//! (base64 and hex) and the token secret: none may appear.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");
const JWT_SECRET: &str = "leak-test-jwt-secret-Zq7YpW3nR8sT1vB6xK2mJ9dF4hL0cA5e";

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygate(data: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYGATE_DATA_DIR", data)
        .env("KEYGATE_JWT_SECRET", JWT_SECRET)
        .env("KEYGATE_DEV_FAST_KDF", "true")
        .env("KEYGATE_REVEAL_ENABLED", "true")
        .env("KEYGATE_LOG_FORMAT", "json")
        .env("KEYGATE_LOG", "debug");
    c
}

fn token(data: &Path, args: &[&str]) -> String {
    let out = keygate(data).arg("token").args(args).output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

#[tokio::test]
async fn no_secret_in_debug_logs_or_database() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log_path = dir.path().join("keygate.log");
    let child = keygate(&data)
        .env("KEYGATE_LISTEN", "127.0.0.1:0")
        .arg("serve")
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&log_path).unwrap()))
        .spawn()
        .unwrap();
    let mut server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    let addr = loop {
        let text = std::fs::read_to_string(&log_path).unwrap_or_default();
        if let Some(a) = text.lines().find_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "keygate listening" || v["message"] == "keygate listening")
                .then(|| {
                    v["fields"]["addr"]
                        .as_str()
                        .or(v["addr"].as_str())
                        .unwrap()
                        .to_string()
                })
        }) {
            break a;
        }
        assert!(Instant::now() < deadline, "server did not start: {text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let base = format!("http://{addr}");
    let user = uuid::Uuid::new_v4().to_string();
    let t = token(&data, &["--user", &user]);
    let svc = token(&data, &["--user", &user, "--role", "service_role"]);
    let c = reqwest::Client::new();
    let post = |path: &str, tok: &str, body: serde_json::Value| {
        c.post(format!("{base}{path}"))
            .bearer_auth(tok)
            .json(&body)
            .send()
    };

    let api_key = "LEAKTEST-APIKEY-7f3c9a1e5b2d4c6e8a0f";
    let api_secret = "LEAKTEST-SECRET-q9w8e7r6t5y4u3i2o1p0";
    let passphrase = "LEAKTEST-PASSPHRASE-m1n2b3v4c5";
    let vault_pw = "LEAKTEST-VAULTPW-correct-horse";
    let vault_pw2 = "LEAKTEST-VAULTPW2-battery-staple";
    let wrong_pw = "LEAKTEST-WRONGPW-not-it-at-all";
    let bad_secret = "LEAKTEST-BADINPUT-zxcvbnm0987";

    let r = post("/v1/credentials", &t, json!({"exchange": "okx", "label": "l", "api_key": api_key, "api_secret": api_secret, "passphrase": passphrase}))
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let id = r.json::<serde_json::Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["api_secret"],
        api_secret
    );
    // error paths with secrets in the input
    for body in [
        json!({"exchange": "nope", "label": "l", "api_key": bad_secret, "api_secret": bad_secret}),
        json!({"exchange": "okx", "label": "l", "api_key": bad_secret, "api_secret": bad_secret, "unknown": bad_secret}),
        json!({"exchange": "okx", "label": 5, "api_secret": bad_secret}),
    ] {
        let s = post("/v1/credentials", &t, body).await.unwrap().status();
        assert!(s.is_client_error(), "{s}");
    }
    let s = c
        .post(format!("{base}/v1/credentials"))
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body(format!("{{\"api_secret\": \"{bad_secret}\""))
        .send()
        .await
        .unwrap()
        .status();
    assert!(s.is_client_error());
    // a bad token carrying a secret
    let s = c
        .get(format!("{base}/v1/credentials"))
        .bearer_auth(bad_secret)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(s, 401);
    // vault: setup, lock, wrong and right unlock, password change, reveal
    assert_eq!(
        post("/v1/vault/setup", &t, json!({"password": vault_pw}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post("/v1/vault/lock", &t, json!({}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post("/v1/vault/unlock", &t, json!({"password": wrong_pw}))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post("/v1/vault/unlock", &t, json!({"password": vault_pw}))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post(
            "/v1/vault/password",
            &t,
            json!({"current_password": vault_pw, "new_password": vault_pw2})
        )
        .await
        .unwrap()
        .status(),
        200
    );
    assert_eq!(
        post(
            "/v1/vault/password",
            &t,
            json!({"current_password": wrong_pw, "new_password": bad_secret})
        )
        .await
        .unwrap()
        .status(),
        403
    );
    // data-key rotation of the password vault: wrong, then right password
    assert_eq!(
        post("/v1/vault/rotate-key", &t, json!({"password": wrong_pw}))
            .await
            .unwrap()
            .status(),
        403
    );
    assert_eq!(
        post("/v1/vault/rotate-key", &t, json!({"password": vault_pw2}))
            .await
            .unwrap()
            .status(),
        200
    );
    let r = post(&format!("/v1/credentials/{id}/reveal"), &svc, json!({}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // graceful stop flushes everything
    let pid = server.0.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    while server.0.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    }

    let master_b64 = std::fs::read_to_string(data.join("master.key")).unwrap();
    let master_b64 = master_b64.trim().to_string();
    let master_raw = base64_decode(&master_b64);
    let master_hex: String = master_raw.iter().map(|b| format!("{b:02x}")).collect();
    let needles = [
        api_key,
        api_secret,
        passphrase,
        vault_pw,
        vault_pw2,
        wrong_pw,
        bad_secret,
        JWT_SECRET,
        &master_b64,
        &master_hex,
        &master_hex.to_uppercase(),
    ];
    let log = std::fs::read(&log_path).unwrap();
    let log_text = String::from_utf8_lossy(&log);
    assert!(
        log_text.contains("\"DEBUG\""),
        "the log really is at debug level"
    );
    assert!(log_text.lines().count() > 20, "{log_text}");
    let mut haystacks = vec![("log".to_string(), log)];
    for f in ["keygate.db", "keygate.db-wal", "keygate.db-shm"] {
        if let Ok(b) = std::fs::read(data.join(f)) {
            haystacks.push((f.to_string(), b));
        }
    }
    assert!(haystacks.len() >= 2, "the database file exists");
    for (name, hay) in &haystacks {
        for n in needles {
            assert!(
                !hay.windows(n.len()).any(|w| w == n.as_bytes()),
                "{n:?} found in {name}"
            );
        }
        // raw master key bytes either
        assert!(
            !hay.windows(32).any(|w| w == master_raw.as_slice()),
            "raw master key in {name}"
        );
    }
}

fn base64_decode(s: &str) -> Vec<u8> {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut buf, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|c| *c != b'=') {
        buf = (buf << 6) | A.iter().position(|a| *a == c).unwrap() as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
            buf &= (1 << bits) - 1;
        }
    }
    assert_eq!(out.len(), 32);
    out
}
