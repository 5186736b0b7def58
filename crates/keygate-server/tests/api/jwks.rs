//! Asymmetric tokens through a JWKS (Supabase-style): RS256 and ES256 access tokens signed
//! by keys the server only knows from a JWKS URL are accepted; a token signed by a key not in
//! the set, an expired one, or one with an unknown `kid` gets 401 problem+json.

use axum::routing::get;
use base64::Engine;
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use uuid::Uuid;

fn b64url(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn pem_der(pem: &str) -> Vec<u8> {
    let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .unwrap()
}

/// `n` and `e` of an RSA-2048 SubjectPublicKeyInfo (fixed DER layout, checked).
fn rsa_n_e(spki_pem: &str) -> (Vec<u8>, Vec<u8>) {
    let d = pem_der(spki_pem);
    assert_eq!(
        &d[28..33],
        &[0x02, 0x82, 0x01, 0x01, 0x00],
        "RSA-2048 modulus header"
    );
    assert_eq!(&d[289..291], &[0x02, 0x03], "exponent header");
    (d[33..289].to_vec(), d[291..294].to_vec())
}

struct Signer {
    kid: &'static str,
    alg: Algorithm,
    key: EncodingKey,
}

impl Signer {
    fn token(&self, sub: Uuid, exp_in: i64) -> String {
        let now = chrono::Utc::now().timestamp();
        let mut h = Header::new(self.alg);
        h.kid = Some(self.kid.into());
        let claims = json!({"sub": sub, "role": "authenticated", "aud": "authenticated",
            "iat": now, "exp": now + exp_in, "session_id": Uuid::new_v4()});
        encode(&h, &claims, &self.key).unwrap()
    }
}

#[tokio::test]
async fn rs256_and_es256_tokens_from_a_jwks() {
    // RS256 key (PKCS#8 private, SPKI public) and ES256 key (rcgen, P-256).
    let rsa = keygate_exchanges::keygen::generate_rsa(2048).unwrap();
    let (n, e) = rsa_n_e(&rsa.public_pem);
    let rs = Signer {
        kid: "rsa-1",
        alg: Algorithm::RS256,
        key: EncodingKey::from_rsa_pem(
            secrecy::ExposeSecret::expose_secret(&rsa.private_pem).as_bytes(),
        )
        .unwrap(),
    };
    let ec = rcgen::KeyPair::generate().unwrap();
    let point = ec.public_key_raw();
    assert_eq!((point.len(), point[0]), (65, 0x04));
    let es = Signer {
        kid: "ec-1",
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
    };
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "alg": "RS256", "use": "sig", "n": b64url(&n), "e": b64url(&e)},
        {"kty": "EC", "kid": "ec-1", "alg": "ES256", "use": "sig", "crv": "P-256",
         "x": b64url(&point[1..33]), "y": b64url(&point[33..65])},
    ]});
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let jwks_url = format!(
        "http://{}/auth/v1/.well-known/jwks.json",
        listener.local_addr().unwrap()
    );
    let router = axum::Router::new().route(
        "/auth/v1/.well-known/jwks.json",
        get(move || {
            let j = jwks.clone();
            async move { axum::Json(j) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });

    let app = crate::helpers::spawn_app_with(crate::helpers::Backend::Sqlite, |cfg| {
        cfg.jwks_url = Some(jwks_url);
    })
    .await
    .unwrap();
    let user = Uuid::new_v4();
    for signer in [&rs, &es] {
        let (s, v) = app.get("/v1/credentials", &signer.token(user, 600)).await;
        assert_eq!(s, 200, "{:?}: {v}", signer.alg);
        let (s, v): (u16, Value) = app.get("/v1/credentials", &signer.token(user, -600)).await;
        assert_eq!(
            (s, v["code"].as_str()),
            (401, Some("unauthorized")),
            "expired {:?}",
            signer.alg
        );
    }
    // Signed by a key that is not in the set, under a kid that is.
    let other = rcgen::KeyPair::generate().unwrap();
    let forged = Signer {
        kid: "ec-1",
        alg: Algorithm::ES256,
        key: EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap(),
    };
    let (s, _) = app.get("/v1/credentials", &forged.token(user, 600)).await;
    assert_eq!(s, 401, "wrong key");
    let unknown = Signer {
        kid: "nope",
        ..forged
    };
    let (s, _) = app.get("/v1/credentials", &unknown.token(user, 600)).await;
    assert_eq!(s, 401, "unknown kid");
}
