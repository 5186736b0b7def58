//! HTTPS end to end with a CA made in the test: plain HTTP fails on the TLS port, mTLS
//! rejects callers without a certificate or with one from another CA, and a reload swaps
//! the certificate for new handshakes while an open connection keeps working.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keygate_server::tls::TlsReloader;
use keygate_server::Application;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A test certificate authority.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

/// A leaf certificate and its key, PEM.
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
    pub der: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = p.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    fn leaf(&self, cn: &str, purpose: ExtendedKeyUsagePurpose) -> Leaf {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
        p.subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse().unwrap()));
        p.distinguished_name.push(DnType::CommonName, cn);
        p.extended_key_usages = vec![purpose];
        let cert = p.signed_by(&key, &self.cert, &self.key).unwrap();
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().clone(),
        }
    }

    pub fn server(&self, cn: &str) -> Leaf {
        self.leaf(cn, ExtendedKeyUsagePurpose::ServerAuth)
    }

    pub fn client(&self, cn: &str) -> Leaf {
        self.leaf(cn, ExtendedKeyUsagePurpose::ClientAuth)
    }
}

pub fn write_leaf(dir: &Path, leaf: &Leaf) {
    std::fs::write(dir.join("server.crt"), &leaf.cert_pem).unwrap();
    std::fs::write(dir.join("server.key"), &leaf.key_pem).unwrap();
}

struct TlsApp {
    addr: SocketAddr,
    reloader: TlsReloader,
    dir: tempfile::TempDir,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn start_tls(leaf: &Leaf, client_ca: Option<&TestCa>) -> TlsApp {
    let dir = tempfile::tempdir().unwrap();
    write_leaf(dir.path(), leaf);
    let mut cfg = crate::helpers::test_config(
        dir.path().join("data"),
        format!("sqlite://{}", dir.path().join("keygate.db").display()),
    );
    cfg.tls_cert = Some(dir.path().join("server.crt"));
    cfg.tls_key = Some(dir.path().join("server.key"));
    if let Some(ca) = client_ca {
        std::fs::write(dir.path().join("client-ca.pem"), ca.pem()).unwrap();
        cfg.tls_client_ca = Some(dir.path().join("client-ca.pem"));
    }
    let app = Application::build(cfg).await.expect("TLS server starts");
    let addr = app.local_addr();
    let reloader = app.tls_reloader().expect("TLS is on");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async {
        let _ = rx.await;
    }));
    TlsApp {
        addr,
        reloader,
        dir,
        _shutdown: tx,
    }
}

fn https_client(ca: &TestCa, identity: Option<&Leaf>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .timeout(Duration::from_secs(10));
    if let Some(leaf) = identity {
        let pem = format!("{}{}", leaf.cert_pem, leaf.key_pem);
        b = b.identity(reqwest::Identity::from_pem(pem.as_bytes()).unwrap());
    }
    b.build().unwrap()
}

type Conn = tokio_rustls::client::TlsStream<TcpStream>;

/// Opens a raw TLS connection trusting `ca`.
async fn connect(addr: SocketAddr, ca: &TestCa) -> Conn {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.cert.der().clone()).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect("127.0.0.1".try_into().unwrap(), tcp)
        .await
        .expect("TLS handshake")
}

fn peer_cert(conn: &Conn) -> CertificateDer<'static> {
    conn.get_ref().1.peer_certificates().unwrap()[0].clone()
}

/// One HTTP/1.1 keep-alive request on an open connection; returns the status.
async fn get_on(conn: &mut Conn, path: &str) -> u16 {
    conn.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.unwrap();
        assert!(n > 0, "connection closed mid-response");
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let head = &text[..end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                return head.split(' ').nth(1).unwrap().parse().unwrap();
            }
        }
    }
}

#[tokio::test]
async fn https_serves_and_plain_http_fails() {
    let ca = TestCa::new("keygate test CA");
    let app = start_tls(&ca.server("server-1"), None).await;
    let r = https_client(&ca, None)
        .get(format!("https://127.0.0.1:{}/healthz", app.addr.port()))
        .send()
        .await
        .expect("HTTPS works");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = https_client(&ca, None)
        .get(format!("https://127.0.0.1:{}/readyz", app.addr.port()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["transport"], "tls");
    assert_eq!(v["warnings"], serde_json::json!([]));
    // The accept loop hands the peer address to handlers: audit events record it.
    let user = uuid::Uuid::new_v4();
    let token = keygate_server::auth::mint_token(
        &secrecy::SecretString::from("test-secret-test-secret-test-secret-0123456789"),
        Some(user),
        false,
        "authenticated",
        Duration::from_secs(60),
        "keygate_admin",
    )
    .unwrap();
    let base = format!("https://127.0.0.1:{}", app.addr.port());
    let r = https_client(&ca, None)
        .post(format!("{base}/v1/credentials"))
        .bearer_auth(&token)
        .json(&crate::binance_body("tls"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let audit: serde_json::Value = https_client(&ca, None)
        .get(format!("{base}/v1/audit"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"][0]["ip_address"], "127.0.0.1", "{audit}");
    // Plain HTTP to the TLS port gets no HTTP answer.
    let plain = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
        .get(format!("http://127.0.0.1:{}/healthz", app.addr.port()))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must fail: {plain:?}");
    // A client that does not trust the test CA refuses the server.
    let other = TestCa::new("another CA");
    assert!(https_client(&other, None)
        .get(format!("https://127.0.0.1:{}/healthz", app.addr.port()))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn mtls_requires_a_client_certificate_from_the_configured_ca() {
    let ca = TestCa::new("keygate test CA");
    let client_ca = TestCa::new("bot client CA");
    let rogue_ca = TestCa::new("rogue CA");
    let app = start_tls(&ca.server("server-1"), Some(&client_ca)).await;
    let url = format!("https://127.0.0.1:{}/readyz", app.addr.port());
    // no client certificate
    let r = https_client(&ca, None).get(&url).send().await;
    assert!(r.is_err(), "no client cert must be refused: {r:?}");
    // a certificate from another CA
    let r = https_client(&ca, Some(&rogue_ca.client("bot")))
        .get(&url)
        .send()
        .await;
    assert!(r.is_err(), "a foreign client cert must be refused: {r:?}");
    // a server certificate of the right CA is not a client certificate (wrong EKU)
    let r = https_client(&ca, Some(&client_ca.server("not-a-client")))
        .get(&url)
        .send()
        .await;
    assert!(
        r.is_err(),
        "a cert without clientAuth must be refused: {r:?}"
    );
    // the right one
    let r = https_client(&ca, Some(&client_ca.client("bot")))
        .get(&url)
        .send()
        .await
        .expect("a client cert of the configured CA is accepted");
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["transport"], "mtls");
    // mTLS is in addition to the token, not instead of it
    let r = https_client(&ca, Some(&client_ca.client("bot")))
        .get(format!(
            "https://127.0.0.1:{}/v1/credentials",
            app.addr.port()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn reload_swaps_the_certificate_and_keeps_open_connections() {
    let ca = TestCa::new("keygate test CA");
    let first = ca.server("server-1");
    let app = start_tls(&first, None).await;
    let mut open = connect(app.addr, &ca).await;
    assert_eq!(peer_cert(&open), first.der);
    assert_eq!(get_on(&mut open, "/healthz").await, 200);

    let second = ca.server("server-2");
    write_leaf(app.dir.path(), &second);
    app.reloader.reload().expect("reload");

    // the open connection keeps working on its original handshake
    assert_eq!(get_on(&mut open, "/healthz").await, 200);
    assert_eq!(peer_cert(&open), first.der);
    // a new handshake sees the new certificate
    let mut fresh = connect(app.addr, &ca).await;
    assert_eq!(peer_cert(&fresh), second.der);
    assert_eq!(get_on(&mut fresh, "/healthz").await, 200);

    // a broken reload (key of another certificate) is refused and changes nothing
    let third = ca.server("server-3");
    std::fs::write(app.dir.path().join("server.crt"), &third.cert_pem).unwrap();
    let err = app.reloader.reload().expect_err("mismatched key refused");
    assert!(err.to_string().contains("does not fit"), "{err}");
    let again = connect(app.addr, &ca).await;
    assert_eq!(peer_cert(&again), second.der);
    assert_eq!(get_on(&mut open, "/healthz").await, 200);
}

#[tokio::test]
async fn tls_misconfiguration_is_a_one_line_startup_error() {
    let dir = tempfile::tempdir().unwrap();
    let base = |d: &Path| {
        crate::helpers::test_config(
            d.join("data"),
            format!("sqlite://{}", d.join("keygate.db").display()),
        )
    };
    let mut cfg = base(dir.path());
    cfg.tls_cert = Some(dir.path().join("server.crt"));
    let err = Application::build(cfg).await.err().unwrap().to_string();
    assert!(err.contains("KEYGATE_TLS_KEY is not"), "{err}");
    let mut cfg = base(dir.path());
    cfg.tls_cert = Some(dir.path().join("missing.crt"));
    cfg.tls_key = Some(dir.path().join("missing.key"));
    let err = Application::build(cfg).await.err().unwrap().to_string();
    assert!(err.contains("missing.crt"), "{err}");
    assert!(!err.contains('\n'));
    // the key file must hold a key
    let ca = TestCa::new("ca");
    let leaf = ca.server("s");
    write_leaf(dir.path(), &leaf);
    std::fs::write(dir.path().join("server.key"), "not a key").unwrap();
    let mut cfg = base(dir.path());
    cfg.tls_cert = Some(dir.path().join("server.crt"));
    cfg.tls_key = Some(dir.path().join("server.key"));
    let err = Application::build(cfg).await.err().unwrap().to_string();
    assert!(err.contains("no usable PEM private key"), "{err}");
}

/// The console over HTTP/2 (which carries the host as `:authority`, not `Host`): the
/// sign-in passes the same-origin check, and the session cookie is `Secure` under the
/// `__Host-` prefix, with `Strict-Transport-Security` on the answer. Before, every
/// console POST over HTTP/2 was refused as cross-origin.
#[tokio::test]
async fn the_console_works_over_http2_and_asks_for_https() {
    let ca = TestCa::new("keygate test CA");
    let app = start_tls(&ca.server("server-1"), None).await;
    let base = format!("https://127.0.0.1:{}", app.addr.port());
    let client = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .http2_prior_knowledge()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let token = keygate_server::auth::mint_token(
        &secrecy::SecretString::from("test-secret-test-secret-test-secret-0123456789"),
        Some(uuid::Uuid::new_v4()),
        false,
        "authenticated",
        Duration::from_secs(600),
        "keygate_admin",
    )
    .unwrap();
    let r = client
        .post(format!("{base}/ui/login"))
        .header("origin", &base)
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
    let set = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        set.starts_with("__Host-keygate_ui=") && set.contains("; Secure"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap();
    let r = client
        .get(format!("{base}/ui/"))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(page.contains("Sign out"), "signed in");
}
