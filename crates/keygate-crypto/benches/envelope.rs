//! Envelope overhead vs raw AES-256-GCM, DEK unwrap, and the password KDF at defaults.
//!
//! `seal_open_64B/envelope` and `seal_open_64B/raw_aes_gcm` run in the same process on the
//! same bytes, so their ratio is the cost of the format (header, AAD encoding, allocation).

use aes_gcm::aead::{AeadInPlace, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keygate_crypto::{
    open_field, seal_field, Dek, FieldAad, KdfParams, MasterKey, PasswordKey, WrapContext,
};
use secrecy::SecretString;
use uuid::Uuid;

fn field_seal_open(c: &mut Criterion) {
    let dek = Dek::generate();
    let aad = FieldAad {
        user_id: Uuid::new_v4(),
        record_id: Uuid::new_v4(),
        field: "api_secret",
        key_version: 1,
    };
    let pt = [0x42u8; 64];
    let mut g = c.benchmark_group("seal_open_64B");
    g.bench_function("envelope", |b| {
        b.iter(|| {
            let ct = seal_field(&dek, &aad, black_box(&pt));
            let back = open_field(&dek, &aad, black_box(&ct)).unwrap();
            black_box(back);
        })
    });
    let raw = Aes256Gcm::new_from_slice(dek.expose_secret()).unwrap();
    let nonce = Nonce::from([7u8; 12]);
    g.bench_function("raw_aes_gcm", |b| {
        b.iter(|| {
            let mut buf = black_box(&pt).to_vec();
            let tag = raw
                .encrypt_in_place_detached(&nonce, b"", &mut buf)
                .unwrap();
            raw.decrypt_in_place_detached(&nonce, b"", &mut buf, &tag)
                .unwrap();
            black_box(buf);
        })
    });
    // Same as raw, but with an AAD as long as the envelope's (6 header bytes + 2 UUIDs +
    // length + "api_secret"): separates the cost of binding from the rest of the format.
    let aad52 = [0x11u8; 6 + 32 + 4 + 10];
    g.bench_function("raw_aes_gcm_same_aad_len", |b| {
        b.iter(|| {
            let mut buf = black_box(&pt).to_vec();
            let tag = raw
                .encrypt_in_place_detached(&nonce, &aad52, &mut buf)
                .unwrap();
            raw.decrypt_in_place_detached(&nonce, &aad52, &mut buf, &tag)
                .unwrap();
            black_box(buf);
        })
    });
    g.finish();
}

fn dek_unwrap(c: &mut Criterion) {
    let mk = MasterKey::generate();
    let ctx = WrapContext {
        user_id: Uuid::new_v4(),
        dek_version: 1,
    };
    let wrapped = mk.wrap_dek(1, &ctx, Dek::generate().expose_secret());
    c.bench_function("dek_unwrap_local_kek", |b| {
        b.iter(|| {
            let raw = mk.unwrap_dek(&ctx, black_box(&wrapped)).unwrap();
            black_box(Dek::from_bytes(&raw).unwrap())
        })
    });
}

fn argon2_default(c: &mut Criterion) {
    let pw = SecretString::from("correct horse battery staple");
    let salt = [3u8; 16];
    let params = KdfParams::default();
    let mut g = c.benchmark_group("password_kdf");
    g.sample_size(10);
    g.bench_function("argon2id_m64MiB_t3_p1", |b| {
        b.iter(|| black_box(PasswordKey::derive(&pw, &salt, &params).unwrap()))
    });
    g.finish();
}

criterion_group!(benches, field_seal_open, dek_unwrap, argon2_default);
criterion_main!(benches);
