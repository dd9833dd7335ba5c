//! A fixed number of decisions per policy-set size, for instruction counts under
//! `valgrind --tool=callgrind` (repeatable on a loaded machine, unlike wall-clock timings). The same
//! workload as `latency.rs`; only `decisions` is measured:
//!
//! ```sh
//! cargo bench -p warden-policy --bench instructions --no-run
//! WARDEN_BENCH_SIZES=1000 WARDEN_BENCH_INPUTS=typed valgrind --tool=callgrind --collect-atstart=no \
//!   --toggle-collect='instructions::decisions*' target/release/deps/instructions-<hash>
//! ```
//!
//! Without valgrind it prints the decisions' wall-clock time (`WARDEN_BENCH_CALLS`, default 2,000
//! calls after 1,000 warm-up calls).

// A benchmark or test harness: a broken fixture should stop the run loudly.
#![allow(clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::Instant;

use chrono::{DateTime, Utc};
use common::generate as r#gen;
use rand::SeedableRng;
use rand::rngs::StdRng;
use warden_policy::{CompiledPolicies, EntityStore, PolicyRequest, PolicySource, compile};

#[inline(never)]
fn decisions(
    compiled: &CompiledPolicies,
    store: &EntityStore,
    reqs: &[(PolicyRequest, DateTime<Utc>)],
    calls: usize,
) {
    for i in 0..calls {
        let (r, now) = &reqs[i % reqs.len()];
        black_box(compiled.decide(store, r, *now));
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let calls: usize = std::env::var("WARDEN_BENCH_CALLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let mut rng = StdRng::seed_from_u64(42);
    let mut world = r#gen::world(&mut rng, 20_000, 11_430, 5_000, 1_000);
    let sizes: Vec<usize> = std::env::var("WARDEN_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 1_000, 10_000]);
    let inputs = std::env::var("WARDEN_BENCH_INPUTS").unwrap_or_else(|_| "typed,args4k".into());
    for n in sizes {
        world.hot_agents = (n / 2).clamp(1, 5_000);
        world.hot_upstreams = (n / 10).clamp(1, 1_000);
        let mut rng = StdRng::seed_from_u64(42 + n as u64);
        let typed: Vec<_> = (0..1000)
            .map(|_| (r#gen::request(&mut rng, &world, None), r#gen::time(&mut rng)))
            .collect();
        let with_args: Vec<_> = (0..32)
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
        for (label, reqs) in [("typed", &typed), ("args4k", &with_args)] {
            if !inputs.split(',').any(|x| x == label) {
                continue;
            }
            // Warm-up (not collected under callgrind: only `decisions` is).
            for (r, now) in reqs.iter().take(1000) {
                black_box(compiled.decide(&world.store, r, *now));
            }
            let t = Instant::now();
            decisions(&compiled, &world.store, reqs, calls);
            println!(
                "{n:>7} {label:<8} {calls} calls, {:.2} µs/call",
                t.elapsed().as_secs_f64() * 1e6 / calls as f64
            );
        }
    }
}
