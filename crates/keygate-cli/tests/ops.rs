//! The real `keygate` binary: refusal to serve plain HTTP off loopback, the plaintext
//! flag, process hardening visible in /proc, certificate reload on SIGHUP, `doctor`,
//! completions, man page, and the systemd unit.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

/// `keygate` with a clean environment (no inherited `KEYGATE_*`), fast KDF, data in `dir`.
fn keygate(dir: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("KEYGATE_DATA_DIR", dir.join("data"))
        .env("KEYGATE_DEV_FAST_KDF", "true")
        .env("KEYGATE_LOG_FORMAT", "json");
    c
}

/// A running `keygate serve`; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
    log: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Server {
    fn start(mut cmd: Command) -> Server {
        let mut child = cmd
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("keygate starts");
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) {
                    if v["message"] == "keygate listening" {
                        let _ = tx.send(v["addr"].as_str().unwrap().to_string());
                    }
                }
                sink.lock().unwrap().push(line);
            }
        });
        let addr: String = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => {
                let _ = child.kill();
                panic!("server did not start: {:?}", log.lock().unwrap());
            }
        };
        let addr: SocketAddr = addr.parse().unwrap();
        Server {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], addr.port())),
            log,
        }
    }

    fn log_contains(&self, needle: &str) -> bool {
        self.log.lock().unwrap().iter().any(|l| l.contains(needle))
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }

    /// SIGTERM, then the exit status (graceful shutdown must end the process).
    fn stop(mut self) -> std::process::ExitStatus {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).unwrap();
    let status = text.split(' ').nth(1).unwrap().parse().unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1.to_string();
    (status, body)
}

#[test]
fn refuses_plain_http_on_a_public_address() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path())
        .env("KEYGATE_LISTEN", "0.0.0.0:0")
        .arg("serve")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let reason: Vec<&str> = err.lines().filter(|l| l.starts_with("keygate:")).collect();
    assert_eq!(reason.len(), 1, "{err}");
    assert!(
        reason[0].contains("refusing to serve plain HTTP on non-loopback address 0.0.0.0:0"),
        "{err}"
    );
    assert!(!dir.path().join("data/keygate.db").exists());
}

#[test]
fn plaintext_flag_starts_warns_and_is_hardened() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = keygate(dir.path());
    cmd.env("KEYGATE_LISTEN", "0.0.0.0:0")
        .env("KEYGATE_ALLOW_PLAINTEXT", "true");
    let server = Server::start(cmd);
    assert!(server.log_contains("serving PLAIN HTTP on a non-loopback address"));
    let (status, body) = http_get(server.addr, "/readyz");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["transport"], "plaintext_allowed");
    assert!(v["warnings"][0]
        .as_str()
        .unwrap()
        .contains("plain HTTP on a non-loopback address"));

    // Hardening, as the kernel sees it.
    let pid = server.child.id();
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    let cols: Vec<&str> = core.split_whitespace().collect();
    assert_eq!(&cols[4..6], ["0", "0"], "{core}");
    // Memory is locked, or the operator is told clearly that it is not.
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let locked_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmLck:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        locked_kb > 0 || server.log_contains("key material is NOT locked in memory"),
        "neither locked nor warned"
    );
    let exit = server.stop();
    assert!(exit.success(), "graceful shutdown exits 0: {exit:?}");
}

struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

fn ca() -> Ca {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, "test CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let cert = p.self_signed(&key).unwrap();
    Ca { cert, key }
}

/// Writes a server certificate for 127.0.0.1 to `dir/tls.crt` + `dir/tls.key`; returns
/// its DER. `expired` backdates it.
fn server_cert(ca: &Ca, dir: &Path, cn: &str, expired: bool) -> CertificateDer<'static> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    p.subject_alt_names
        .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
    p.distinguished_name.push(DnType::CommonName, cn);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    if expired {
        p.not_before = rcgen::date_time_ymd(2020, 1, 1);
        p.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    let cert = p.signed_by(&key, &ca.cert, &ca.key).unwrap();
    std::fs::write(dir.join("tls.crt"), cert.pem()).unwrap();
    std::fs::write(dir.join("tls.key"), key.serialize_pem()).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir.join("tls.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
    cert.der().clone()
}

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn tls_connect(addr: SocketAddr, ca: &Ca) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let conn =
        rustls::ClientConnection::new(Arc::new(cfg), "127.0.0.1".try_into().unwrap()).unwrap();
    let tcp = TcpStream::connect(addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut s = rustls::StreamOwned::new(conn, tcp);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock).expect("handshake");
    }
    s
}

fn peer(s: &Tls) -> CertificateDer<'static> {
    s.conn.peer_certificates().unwrap()[0].clone()
}

/// One keep-alive request; reads exactly one response.
fn tls_get(s: &mut Tls, path: &str) -> u16 {
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").unwrap();
    s.flush().unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf).to_string();
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return text.split(' ').nth(1).unwrap().parse().unwrap();
            }
        }
    }
}

#[test]
fn sighup_reloads_the_certificate_without_dropping_connections() {
    let dir = tempfile::tempdir().unwrap();
    let ca = ca();
    let first = server_cert(&ca, dir.path(), "first", false);
    let mut cmd = keygate(dir.path());
    cmd.env("KEYGATE_LISTEN", "127.0.0.1:0")
        .env("KEYGATE_TLS_CERT", dir.path().join("tls.crt"))
        .env("KEYGATE_TLS_KEY", dir.path().join("tls.key"));
    let server = Server::start(cmd);
    let mut open = tls_connect(server.addr, &ca);
    assert_eq!(peer(&open), first);
    assert_eq!(tls_get(&mut open, "/healthz"), 200);

    let second = server_cert(&ca, dir.path(), "second", false);
    server.signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let fresh = tls_connect(server.addr, &ca);
        if peer(&fresh) == second {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "SIGHUP did not swap the certificate"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // the swap can be seen a moment before its log line is written
    let logged = (0..100).any(|_| {
        let found = server.log_contains("SIGHUP: TLS configuration reloaded");
        if !found {
            std::thread::sleep(Duration::from_millis(50));
        }
        found
    });
    assert!(logged, "the reload is logged");
    // The connection opened before the reload is still served, on its old certificate.
    assert_eq!(tls_get(&mut open, "/healthz"), 200);
    assert_eq!(peer(&open), first);
    // The process is still alive after SIGHUP (its default action would end it).
    assert_eq!(tls_get(&mut tls_connect(server.addr, &ca), "/readyz"), 200);
    assert!(server.stop().success());
}

/// A one-request-per-connection HTTP server answering `{"serverTime": now + skew}`.
fn time_server(skew_ms: i64) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_millis() as i64;
            let body = format!("{{\"serverTime\":{}}}", now + skew_ms);
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    format!("http://{addr}/api/v3/time")
}

fn doctor(cmd: &mut Command, time_url: &str) -> (Output, Vec<String>) {
    let out = cmd
        .args(["doctor", "--time-url", time_url])
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    (out, lines)
}

fn line<'a>(lines: &'a [String], name: &str) -> &'a str {
    lines
        .iter()
        .find(|l| {
            l.split_once(' ')
                .is_some_and(|(_, r)| r.starts_with(&format!("{name}:")))
        })
        .unwrap_or_else(|| panic!("no {name} line in {lines:?}"))
}

#[test]
fn doctor_reports_ok_warn_and_fail() {
    let dir = tempfile::tempdir().unwrap();
    let clock = time_server(0);

    // Before anything exists: warnings, no failure, and nothing created.
    let (out, lines) = doctor(&mut keygate(dir.path()), &clock);
    assert!(out.status.success(), "{lines:?}");
    assert!(line(&lines, "data_dir").starts_with("warn "));
    assert!(line(&lines, "database").starts_with("warn "));
    assert!(
        !dir.path().join("data").exists(),
        "doctor must not create anything"
    );

    // A healthy installation: every check ok.
    let m = keygate(dir.path()).arg("migrate").output().unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    let (out, lines) = doctor(&mut keygate(dir.path()), &clock);
    for l in &lines {
        assert!(l.starts_with("ok "), "{l}\n{lines:?}");
    }
    assert!(out.status.success());
    for name in [
        "config",
        "tls",
        "data_dir",
        "master_key",
        "jwt_secret",
        "database",
        "migrations",
        "key_check",
        "redis",
        "clock",
    ] {
        line(&lines, name);
    }

    // A world-readable key file fails.
    use std::os::unix::fs::PermissionsExt;
    let key = dir.path().join("data/master.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let (out, lines) = doctor(&mut keygate(dir.path()), &clock);
    assert!(!out.status.success());
    let l = line(&lines, "master_key");
    assert!(
        l.starts_with("fail master_key:") && l.contains("readable by group or others"),
        "{l}"
    );
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();

    // Another master key does not match the database.
    let (out, lines) = doctor(
        keygate(dir.path()).env(
            "KEYGATE_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        ),
        &clock,
    );
    assert!(!out.status.success());
    assert!(line(&lines, "master_key").starts_with("warn master_key: from KEYGATE_MASTER_KEY"));
    assert!(
        line(&lines, "key_check").starts_with("fail key_check:"),
        "{lines:?}"
    );

    // Plain HTTP on a public address would be refused.
    let (out, lines) = doctor(
        keygate(dir.path()).env("KEYGATE_LISTEN", "0.0.0.0:8420"),
        &clock,
    );
    assert!(!out.status.success());
    assert!(line(&lines, "tls").starts_with("fail tls: serve would refuse"));

    // TLS files: valid, then expired.
    let ca = ca();
    server_cert(&ca, dir.path(), "s", false);
    let tls_env = |c: &mut Command| {
        c.env("KEYGATE_TLS_CERT", dir.path().join("tls.crt"))
            .env("KEYGATE_TLS_KEY", dir.path().join("tls.key"));
    };
    let mut c = keygate(dir.path());
    tls_env(&mut c);
    let (_, lines) = doctor(&mut c, &clock);
    assert!(
        line(&lines, "tls").starts_with("ok tls: certificate valid until"),
        "{lines:?}"
    );
    server_cert(&ca, dir.path(), "s", true);
    let mut c = keygate(dir.path());
    tls_env(&mut c);
    let (out, lines) = doctor(&mut c, &clock);
    assert!(!out.status.success());
    assert!(line(&lines, "tls").contains("expired"), "{lines:?}");

    // Clock: skewed, then unreachable (offline).
    let (out, lines) = doctor(&mut keygate(dir.path()), &time_server(30_000));
    assert!(!out.status.success());
    assert!(
        line(&lines, "clock").starts_with("fail clock:"),
        "{lines:?}"
    );
    let (out, lines) = doctor(&mut keygate(dir.path()), "http://127.0.0.1:1/api/v3/time");
    assert!(out.status.success());
    assert!(line(&lines, "clock").starts_with("warn clock: could not check"));

    // Redis: unreachable fails; the test Redis (when configured) answers.
    let (out, lines) = doctor(
        keygate(dir.path()).env("KEYGATE_REDIS_URL", "redis://127.0.0.1:1/0"),
        &clock,
    );
    assert!(!out.status.success());
    assert!(line(&lines, "redis").starts_with("fail redis:"));
    if let Ok(url) = std::env::var("KEYGATE_TEST_REDIS_URL") {
        let (_, lines) = doctor(keygate(dir.path()).env("KEYGATE_REDIS_URL", &url), &clock);
        assert!(line(&lines, "redis").starts_with("ok redis:"), "{lines:?}");
    }

    // A configuration that does not load is one failed check.
    let (out, lines) = doctor(keygate(dir.path()).env("KEYGATE_LISTEN", "nowhere"), &clock);
    assert!(!out.status.success());
    assert_eq!(lines.len(), 1);
    assert!(lines[0].starts_with("fail config:"));
}

#[test]
fn completions_and_man_page_come_from_the_cli_definition() {
    let out = Command::new(BIN)
        .args(["completions", "bash"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let bash = String::from_utf8_lossy(&out.stdout);
    assert!(
        bash.contains("_keygate()") && bash.contains("doctor"),
        "{bash}"
    );
    let out = Command::new(BIN)
        .args(["completions", "zsh"])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("#compdef keygate"));
    let out = Command::new(BIN).arg("man").output().unwrap();
    assert!(out.status.success());
    let man = String::from_utf8_lossy(&out.stdout);
    assert!(
        man.contains(".TH keygate") && man.contains("doctor"),
        "{man}"
    );
    let out = Command::new(BIN).arg("config-reference").output().unwrap();
    let reference = String::from_utf8_lossy(&out.stdout);
    let checked_in = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/CONFIGURATION.md"),
    )
    .unwrap();
    assert_eq!(reference, checked_in, "regenerate docs/CONFIGURATION.md");
}

#[test]
fn systemd_unit_is_sandboxed_and_verifies() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/keygate.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for directive in [
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "PrivateTmp=yes",
        "MemoryDenyWriteExecute=yes",
        "CapabilityBoundingSet=\n",
        "User=keygate",
        "LoadCredential=master.key:",
        "LoadCredential=jwt.secret:",
        "LimitCORE=0",
        "LimitMEMLOCK=infinity",
        "ExecReload=/bin/kill -HUP $MAINPID",
    ] {
        assert!(unit.contains(directive), "unit lacks {directive:?}");
    }
    assert!(
        !unit.contains("KEYGATE_MASTER_KEY="),
        "no master key in the unit"
    );
    let Ok(probe) = Command::new("systemd-analyze").arg("--version").output() else {
        println!("NOTE: systemd-analyze not found; `systemd-analyze verify` skipped");
        return;
    };
    assert!(probe.status.success());
    // verify checks that ExecStart exists: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let test_unit = dir.path().join("keygate.service");
    std::fs::write(&test_unit, unit.replace("/usr/local/bin/keygate", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&test_unit)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    let complaints: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("keygate.service"))
        .collect();
    assert!(
        complaints.is_empty(),
        "systemd-analyze verify: {complaints:?}"
    );
}

#[test]
fn systemd_credentials_supply_the_master_key_and_token_secret() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    std::fs::create_dir(&creds).unwrap();
    let key = "q83vEjRWeJq83vEjRWeJq83vEjRWeJq83vEjRWeJq80=";
    std::fs::write(creds.join("master.key"), format!("{key}\n")).unwrap();
    std::fs::write(creds.join("jwt.secret"), "c".repeat(48)).unwrap();
    let with_creds = || {
        let mut c = keygate(dir.path());
        c.env("CREDENTIALS_DIRECTORY", &creds);
        c
    };
    let m = with_creds().arg("migrate").output().unwrap();
    assert!(m.status.success(), "{}", String::from_utf8_lossy(&m.stderr));
    // Nothing secret was written to the data dir: the credentials were used.
    assert!(!dir.path().join("data/master.key").exists());
    assert!(!dir.path().join("data/jwt.secret").exists());
    let (out, lines) = doctor(&mut with_creds(), "http://127.0.0.1:1/");
    assert!(out.status.success(), "{lines:?}");
    assert!(line(&lines, "master_key").contains("credentials/master.key"));
    assert!(line(&lines, "jwt_secret").starts_with("ok jwt_secret: systemd credential"));
    assert!(line(&lines, "key_check").starts_with("ok key_check:"));
    // The same key given another way matches; without it the database is refused.
    let (_, lines) = doctor(
        keygate(dir.path()).env("KEYGATE_MASTER_KEY", key),
        "http://127.0.0.1:1/",
    );
    assert!(
        line(&lines, "key_check").starts_with("ok key_check:"),
        "{lines:?}"
    );
    let (out, lines) = doctor(&mut keygate(dir.path()), "http://127.0.0.1:1/");
    assert!(!out.status.success());
    assert!(
        line(&lines, "key_check").starts_with("fail key_check:"),
        "{lines:?}"
    );
}
