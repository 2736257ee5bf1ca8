//! The token hot path: format check, keyed digest, cached verification.

#![expect(
    clippy::unwrap_used,
    reason = "a benchmark: a failure should stop it loudly"
)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use d2_accounts::memory::MemoryAccountRepo;
use d2_audit::memory::MemoryAuditLog;
use d2_kernel::ManualClock;
use d2_tokens::memory::MemoryStore;
use d2_tokens::{
    BootstrapRequest, BootstrapService, CacheSettings, ControlPlaneSecret, Pepper, TokenSecret,
    TokenVerifier,
};

fn hot_path(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let clock = Arc::new(ManualClock::starting_now());
    let audit = Arc::new(MemoryAuditLog::default());
    let accounts = Arc::new(MemoryAccountRepo::new(audit));
    let repo = Arc::new(MemoryStore::new(accounts.clone()));
    let pepper = Arc::new(Pepper::new(&[3; 32]).unwrap());
    let verifier = TokenVerifier::new(
        repo.clone(),
        pepper.clone(),
        clock.clone(),
        CacheSettings::default(),
    );
    let bootstrap = BootstrapService::new(
        Some(ControlPlaneSecret::new("bench").unwrap()),
        repo.clone(),
        accounts,
        repo,
        pepper.clone(),
        clock,
        14,
    );
    let token = runtime
        .block_on(bootstrap.issue_trusted(BootstrapRequest::default()))
        .unwrap()
        .issued
        .secret;
    let text = token.expose().to_owned();
    runtime.block_on(verifier.verify(&text)).unwrap();

    let mut group = c.benchmark_group("token");
    group.bench_function("check_format", |b| {
        b.iter(|| TokenSecret::check_format(black_box(&text)));
    });
    group.bench_function("check_format+digest", |b| {
        b.iter(|| {
            TokenSecret::check_format(black_box(&text)).unwrap();
            pepper.digest(black_box(&token))
        });
    });
    group.bench_function("verify_cached", |b| {
        b.to_async(&runtime)
            .iter(|| async { verifier.verify(black_box(&text)).await.unwrap() });
    });
    group.bench_function("reject_malformed", |b| {
        b.to_async(&runtime).iter(|| async {
            verifier
                .verify(black_box("d2_not-a-real-token"))
                .await
                .unwrap_err()
        });
    });
    group.bench_function("generate", |b| b.iter(|| TokenSecret::generate().unwrap()));
    group.finish();
}

criterion_group!(benches, hot_path);
criterion_main!(benches);
