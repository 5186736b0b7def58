//! DEK unwrap latency: local master key vs OpenBao Transit over loopback.
//!
//! The OpenBao half runs only with `KEYGATE_TEST_BAO` set (path to `bao`); otherwise it
//! prints a notice and measures the local provider alone.

#[path = "../tests/common/mod.rs"]
mod common;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use keygate_keys::{KeyProvider, LocalKeyProvider, MasterKey, OpenBaoTransitProvider, WrapContext};
use uuid::Uuid;

fn unwrap_bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let ctx = WrapContext {
        user_id: Uuid::new_v4(),
        dek_version: 1,
    };
    let dek = [0x42u8; 32];
    let mut g = c.benchmark_group("dek_unwrap");

    let local = LocalKeyProvider::new(1, MasterKey::generate());
    let lw = rt.block_on(local.wrap(&ctx, &dek)).unwrap();
    g.bench_function("local", |b| {
        b.iter(|| black_box(rt.block_on(local.unwrap(&ctx, black_box(&lw))).unwrap()))
    });

    // Without KEYGATE_TEST_BAO this is skipped with a notice (never fails the bench run).
    let bin = std::env::var_os("KEYGATE_TEST_BAO").map(std::path::PathBuf::from);
    match bin {
        None => eprintln!("NOT RUN: dek_unwrap/openbao_transit: set KEYGATE_TEST_BAO"),
        Some(bin) => {
            let bao = rt.block_on(common::BaoServer::start(&bin));
            let cfg = bao.config("keygate");
            rt.block_on(OpenBaoTransitProvider::create_key(&cfg))
                .unwrap();
            let transit = rt.block_on(OpenBaoTransitProvider::connect(&cfg)).unwrap();
            let tw = rt.block_on(transit.wrap(&ctx, &dek)).unwrap();
            g.bench_function("openbao_transit_loopback", |b| {
                b.iter(|| black_box(rt.block_on(transit.unwrap(&ctx, black_box(&tw))).unwrap()))
            });
            drop(bao);
        }
    }
    g.finish();
}

criterion_group!(benches, unwrap_bench);
criterion_main!(benches);
