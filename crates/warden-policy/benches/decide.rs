//! Criterion means, side by side in one run: Warden's decision (indexed) vs plain Cedar
//! (`Authorizer::is_authorized` over the whole set) vs regorus (the same rules in Rego, RVM), at 10 /
//! 100 / 1,000 / 10,000 generated policies plus the default pack, typed input and ~4 KB JSON tool
//! arguments, over a registry of ~100k entities. Percentiles: `benches/latency.rs`.
//!
//! `cargo bench -p warden-policy --bench decide -- --warm-up-time 1 --measurement-time 2`

// A benchmark or test harness: a broken fixture should stop the run loudly.
#![allow(clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;

use common::generate as r#gen;
use common::rego::RegoEngine;
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use rand::SeedableRng;
use rand::rngs::StdRng;
use warden_policy::{PolicySource, compile};

fn bench(c: &mut Criterion) {
    let mut rng = StdRng::seed_from_u64(42);
    // The workload of `benches/latency.rs`: n policies about n/2 agents and n/10 upstreams.
    let mut world = r#gen::world(&mut rng, 20_000, 11_430, 5_000, 1_000);
    for n in [10usize, 100, 1_000, 10_000] {
        world.hot_agents = (n / 2).clamp(1, 5_000);
        world.hot_upstreams = (n / 10).clamp(1, 1_000);
        let typed: Vec<_> = (0..256)
            .map(|_| (r#gen::request(&mut rng, &world, None), r#gen::time(&mut rng)))
            .collect();
        let args: Vec<_> = (0..256)
            .map(|_| {
                (
                    r#gen::request(&mut rng, &world, Some(3300)),
                    r#gen::time(&mut rng),
                )
            })
            .collect();
        let mut prng = StdRng::seed_from_u64(7 + n as u64);
        let generated = r#gen::policies(&mut prng, &world, n, 0);
        let mut files = r#gen::default_pack_files();
        files.push(("generated.cedar".into(), generated.cedar.clone()));
        let compiled = compile(&PolicySource::from_files(files).expect("source")).expect("compiles");
        let mut rego = RegoEngine::new(&generated);
        let mut group = c.benchmark_group(format!("decide/{n}"));
        if n >= 1_000 {
            group.sample_size(10);
        }
        for (label, reqs) in [("typed", &typed), ("args4k", &args)] {
            let mut i = 0usize;
            group.bench_function(BenchmarkId::new("warden", label), |b| {
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    let (r, now) = &reqs[i];
                    black_box(compiled.decide(&world.store, r, *now))
                })
            });
            group.bench_function(BenchmarkId::new("cedar", label), |b| {
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    let (r, now) = &reqs[i];
                    black_box(compiled.decide_unindexed(&world.store, r, *now, false))
                })
            });
            group.bench_function(BenchmarkId::new("regorus", label), |b| {
                b.iter(|| {
                    i = (i + 1) % reqs.len();
                    let (r, now) = &reqs[i];
                    let input = r#gen::rego_input(&world.store, r, *now).expect("input");
                    black_box(rego.eval(regorus::Value::from(input)))
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
