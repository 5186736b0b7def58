//! `keygate token` and `keygate login-link` record what they hand out in the audit chain
//! before they show it, and never the token or link itself. A token's event carries the
//! token's own `session_id`, which its later calls carry too.

use std::process::{Command, Output};

use base64::Engine;
use serde_json::Value;

struct Cli(tempfile::TempDir);

impl Cli {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_keygate"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KEYGATE_DATA_DIR", self.0.path())
            .env("KEYGATE_LOG", "warn")
            .args(args)
            .output()
            .expect("keygate runs")
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// The exported events whose action is `action`.
    fn events(&self, action: &str) -> (String, Vec<Value>) {
        let text = self.ok(&["audit", "export"]);
        let events = text
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|e| e["action"] == action)
            .collect();
        (text, events)
    }
}

fn claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn minted_tokens_and_sign_in_links_are_audited_before_they_are_shown() {
    let cli = Cli(tempfile::tempdir().unwrap());
    let user = uuid::Uuid::new_v4().to_string();

    let token = cli.ok(&["token", "--user", &user, "--admin", "--ttl", "2h"]);
    let token = token.trim();
    let session = claims(token)["session_id"].as_str().unwrap().to_string();
    let service = cli.ok(&["token", "--role", "service_role"]);
    let link = cli.ok(&["login-link", "--user", &user, "--ttl", "5m"]);
    let link_secret = link.trim().rsplit('/').next().unwrap().to_string();
    assert!(link_secret.len() >= 20, "{link}");

    let (all, tokens) = cli.events("token_issued");
    assert_eq!(tokens.len(), 2, "{all}");
    let admin = &tokens[0];
    assert_eq!(admin["category"], "auth");
    assert_eq!(admin["user_id"], user.as_str());
    assert_eq!(admin["session_id"], session.as_str(), "{admin}");
    assert_eq!(admin["metadata"]["role"], "authenticated");
    assert_eq!(admin["metadata"]["admin"], true);
    assert_eq!(admin["metadata"]["ttl_seconds"], 7200);
    assert_eq!(admin["metadata"]["source"], "cli");
    assert_eq!(admin["risk_score"], 20, "a token for every user is flagged");
    let svc = &tokens[1];
    assert_eq!(svc["user_id"], Value::Null);
    assert_eq!(svc["metadata"]["role"], "service_role");
    assert_eq!(
        svc["session_id"],
        claims(service.trim())["session_id"],
        "{svc}"
    );
    assert_eq!(svc["risk_score"], 20);
    let (_, links) = cli.events("login_link_issued");
    assert_eq!(links.len(), 1, "{all}");
    assert_eq!(links[0]["user_id"], user.as_str());
    assert_eq!(links[0]["metadata"]["ttl_seconds"], 300);
    assert_eq!(links[0]["risk_score"], 0);
    // what was handed out is not in the log
    for secret in [token, service.trim(), link_secret.as_str()] {
        assert!(
            !all.contains(secret),
            "a handed-out secret is in the audit log"
        );
    }
    assert!(cli.run(&["audit", "verify"]).status.success());

    // no token that outlives a year, or is dead on arrival, and none unaudited
    for ttl in ["366d", "0s"] {
        let out = cli.run(&["token", "--user", &user, "--ttl", ttl]);
        assert_eq!(out.status.code(), Some(1), "--ttl {ttl}");
        assert!(out.stdout.is_empty(), "--ttl {ttl} printed a token");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--ttl must be between 1s and 365d"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert_eq!(cli.events("token_issued").1.len(), 2);
}

// A server with `KEYGATE_JWT_ISSUER` / `KEYGATE_JWT_AUDIENCE` set refuses tokens without
// that `iss` / `aud`: `keygate token` puts them in (before, its tokens lacked `aud`).
#[test]
fn minted_tokens_carry_the_issuer_and_audience_the_server_requires() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYGATE_DATA_DIR", dir.path())
        .env("KEYGATE_LOG", "warn")
        .env("KEYGATE_JWT_ISSUER", "https://id.example.test/auth/v1")
        .env("KEYGATE_JWT_AUDIENCE", "authenticated")
        .args(["token", "--user", &uuid::Uuid::new_v4().to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let c = claims(String::from_utf8(out.stdout).unwrap().trim());
    assert_eq!(c["iss"], "https://id.example.test/auth/v1", "{c}");
    assert_eq!(c["aud"], "authenticated", "{c}");
    // and without them set, neither
    let cli = Cli(tempfile::tempdir().unwrap());
    let c = claims(
        cli.ok(&["token", "--user", &uuid::Uuid::new_v4().to_string()])
            .trim(),
    );
    assert!(c.get("iss").is_none() && c.get("aud").is_none(), "{c}");
}
