//! Leaf certificates: minting one (a cache miss) and looking one up (every intercepted
//! handshake after the first).

use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use grantdoctor::tls::{CaFiles, CertificateAuthority, LeafCertCache};

fn leaf_minting(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let (ca, _) = CertificateAuthority::load_or_create(CaFiles::new(dir.path())).unwrap();
    let cache = LeafCertCache::new(Arc::new(ca), 1024).unwrap();
    let mut n = 0u64;
    c.bench_function("mint_leaf", |b| {
        b.iter(|| {
            n += 1;
            cache.mint(&format!("org{n}.my.salesforce.com")).unwrap()
        })
    });
    cache.get("login.salesforce.com").unwrap();
    c.bench_function("cached_leaf_lookup", |b| {
        b.iter(|| {
            cache
                .get(std::hint::black_box("login.salesforce.com"))
                .unwrap()
        })
    });
}

criterion_group!(benches, leaf_minting);
criterion_main!(benches);
