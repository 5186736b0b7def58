//! `KEYGATE_JWT_SECRET` must be at least 32 bytes, like `jwt.secret`: a shorter HS256 key
//! can be brute-forced from any token it signed. Checked when the configuration loads, so
//! every command (`serve`, `token`, `doctor`, ...) refuses it with a one-line reason that
//! does not repeat the secret.

use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn token_with_secret(dir: &std::path::Path, secret: &str) -> std::process::Output {
    Command::new(BIN)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYGATE_DATA_DIR", dir)
        .env("KEYGATE_JWT_SECRET", secret)
        .args(["token", "--user", "00000000-0000-0000-0000-000000000001"])
        .output()
        .unwrap()
}

#[test]
fn a_short_jwt_secret_is_refused_at_config_load() {
    let dir = tempfile::tempdir().unwrap();
    for short in ["hunter2", "0123456789abcdef0123456789abcde"] {
        let out = token_with_secret(dir.path(), short);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success(),
            "accepted a {}-byte secret",
            short.len()
        );
        assert!(out.stdout.is_empty(), "a token was minted");
        assert!(
            stderr.contains("KEYGATE_JWT_SECRET is too short"),
            "{stderr}"
        );
        assert!(!stderr.contains(short), "the secret is echoed: {stderr}");
    }
    let out = token_with_secret(dir.path(), "0123456789abcdef0123456789abcdef");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .split('.')
            .count(),
        3
    );
}

/// A plain-HTTP `KEYGATE_JWKS_URL` to another host is refused when the configuration
/// loads (whoever answers the fetch could sign tokens), without echoing the URL, which
/// may carry an API key; `KEYGATE_JWKS_ALLOW_HTTP=true` lets it through.
#[test]
fn a_plain_http_jwks_url_is_refused_at_config_load() {
    let dir = tempfile::tempdir().unwrap();
    let run = |allow: Option<&str>| {
        let mut c = Command::new(BIN);
        c.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KEYGATE_DATA_DIR", dir.path())
            .env(
                "KEYGATE_JWKS_URL",
                "http://auth.internal/jwks.json?apikey=hunter2",
            )
            .args(["token", "--user", "00000000-0000-0000-0000-000000000001"]);
        if let Some(a) = allow {
            c.env("KEYGATE_JWKS_ALLOW_HTTP", a);
        }
        c.output().unwrap()
    };
    let out = run(None);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "accepted");
    assert!(
        stderr.contains("KEYGATE_JWKS_URL: must be https"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "the URL is echoed: {stderr}");
    let out = run(Some("true"));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
