//! A configuration value the loader refuses is named, not echoed, when it may hold a
//! secret: a webhook URL with a password in it.

use std::process::Command;

#[test]
fn a_refused_webhook_url_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let password = "Hunter2-webhook-password-7f3a";
    for cmd in [
        &["doctor"][..],
        &["token", "--user", "00000000-0000-0000-0000-000000000001"],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_keygate"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("KEYGATE_DATA_DIR", dir.path())
            .env(
                "KEYGATE_WEBHOOK_SECRET",
                "whsec-0123456789abcdef0123456789abcdef",
            )
            .env(
                "KEYGATE_WEBHOOK_URLS",
                format!("https://hooks.example/ok,https://ops:{password}@hooks.example/x"),
            )
            .args(cmd)
            .output()
            .unwrap();
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(!out.status.success(), "{cmd:?} accepted it");
        let said = format!("{stdout}{stderr}");
        assert!(
            said.contains("KEYGATE_WEBHOOK_URLS: entry 2: credentials in the URL are not allowed"),
            "{cmd:?}: {said}"
        );
        assert!(
            !said.contains(password),
            "{cmd:?} echoed the password: {said}"
        );
    }
}
