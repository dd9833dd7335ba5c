//! Per-call latency percentiles (p50, p99) of a policy decision: Warden (indexed), plain Cedar
//! (`Authorizer::is_authorized` over the whole set, same request building) and regorus (the same
//! rules in Rego, RVM), at 10 / 100 / 1,000 / 10,000 generated policies plus the default pack, with
//! typed input and with ~4 KB JSON tool arguments, over a registry of ~100k entities.
//!
//! The workload scales like a deployment: N generated policies are about N/2 agents and N/10
//! upstreams (the first ones of the registry; agents work with upstreams of their team, see
//! `tests/common/generate.rs`), and requests come from those agents to those upstreams. So the
//! number of policies a request can meet stays about the same at every size; the harness prints it
//! (the index's candidates per request, mean and p99) with the outcome mix.
//!
//! `cargo bench -p warden-policy --bench latency` (criterion gives means; this harness times every
//! call with `Instant` and sorts). Each cell runs up to 100,000 calls or 2 s, after a warm-up.
//! `WARDEN_BENCH_SIZES=10,100`, `WARDEN_BENCH_ENGINES=warden` and `WARDEN_BENCH_INPUTS=typed` narrow
//! the run (for profiling).

// A benchmark or test harness: a broken fixture should stop the run loudly.
#![allow(clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::generate as r#gen;
use common::rego::RegoEngine;
use rand::SeedableRng;
use rand::rngs::StdRng;
use warden_core::Outcome;
use warden_policy::{EntityStore, PolicyRequest, PolicySource, compile};

const MAX_CALLS: usize = 100_000;
const MAX_TIME: Duration = Duration::from_secs(2);

struct Stats {
    p50: f64,
    p99: f64,
    calls: usize,
}

fn measure(mut f: impl FnMut(usize)) -> Stats {
    for i in 0..500 {
        f(i);
    }
    let mut samples = Vec::with_capacity(MAX_CALLS);
    let start = Instant::now();
    while samples.len() < MAX_CALLS && (samples.len() < 200 || start.elapsed() < MAX_TIME) {
        let i = samples.len();
        let t = Instant::now();
        f(i);
        samples.push(t.elapsed().as_nanos() as f64 / 1000.0);
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Stats {
        p50: at(0.50),
        p99: at(0.99),
        calls: samples.len(),
    }
}

fn fmt(s: &Stats) -> String {
    format!("{:>9.1} {:>9.1} {:>7}", s.p50, s.p99, s.calls)
}

/// 1,000 typed requests; 32 with arguments (a server decides on arguments it has just parsed, so
/// they are in cache; 1,000 distinct 4 KB trees would measure cache misses instead).
fn requests(rng: &mut StdRng, w: &r#gen::World, args: Option<usize>) -> Vec<(PolicyRequest, DateTime<Utc>)> {
    (0..if args.is_some() { 32 } else { 1000 })
        .map(|_| (r#gen::request(rng, w, args), r#gen::time(rng)))
        .collect()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let mut rng = StdRng::seed_from_u64(42);
    // 20,000 agents + 11,430 upstreams × (1 + 4 tools + 2 datasets) = 100,010 entities; teams of
    // 5 agents per upstream over the first 5,000 agents and 1,000 upstreams.
    let t = Instant::now();
    let mut world = r#gen::world(&mut rng, 20_000, 11_430, 5_000, 1_000);
    println!(
        "registry: {} entities (built in {:?})",
        world.store.len(),
        t.elapsed()
    );
    let sizes: Vec<usize> = std::env::var("WARDEN_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![10, 100, 1_000, 10_000]);
    let engines = std::env::var("WARDEN_BENCH_ENGINES").unwrap_or_else(|_| "warden,cedar,regorus".into());
    let inputs = std::env::var("WARDEN_BENCH_INPUTS").unwrap_or_else(|_| "typed,args4k".into());
    let on = |e: &str| engines.split(',').any(|x| x == e);
    println!(
        "{:>7} {:<8} {:<8} {:>9} {:>9} {:>7}",
        "policies", "input", "engine", "p50 µs", "p99 µs", "calls"
    );
    for n in sizes {
        // Policies (and requests) about n/2 agents and n/10 upstreams.
        world.hot_agents = (n / 2).clamp(1, 5_000);
        world.hot_upstreams = (n / 10).clamp(1, 1_000);
        let mut rng = StdRng::seed_from_u64(42 + n as u64);
        let typed = requests(&mut rng, &world, None);
        let with_args = requests(&mut rng, &world, Some(3300));
        let mut prng = StdRng::seed_from_u64(7 + n as u64);
        let generated = r#gen::policies(&mut prng, &world, n, 0);
        let mut files = r#gen::default_pack_files();
        files.push(("generated.cedar".into(), generated.cedar.clone()));
        let t = Instant::now();
        let compiled = compile(&PolicySource::from_files(files).expect("source")).expect("compiles");
        let compile_time = t.elapsed();
        let mut rego = RegoEngine::new(&generated);
        let stats = compiled.index_stats();
        println!(
            "# {n} generated + {} default = {} policies; compiled in {compile_time:?}; index: always {}, by principal {}, by resource {}, by action {}; rego {}",
            compiled.len() - n,
            compiled.len(),
            stats.always,
            stats.by_principal,
            stats.by_resource,
            stats.by_action,
            if rego.is_vm() { "vm" } else { "interpreter" }
        );
        let args_len = serde_json::to_string(&with_args[0].0.context.args)
            .map(|s| s.len())
            .unwrap_or(0);
        let mut considered: Vec<usize> = Vec::with_capacity(typed.len());
        let mut outcomes = [0usize; 3];
        for (r, now) in &typed {
            let e = compiled.explain(&world.store, r, *now);
            considered.push(e.considered.len());
            outcomes[match e.decision.outcome {
                Outcome::Allow => 0,
                Outcome::Deny => 1,
                Outcome::NeedsApproval => 2,
            }] += 1;
        }
        considered.sort_unstable();
        println!(
            "#   {} agents × {} upstreams; candidates per request: mean {:.1}, p99 {}; typed outcomes allow/deny/needs_approval {:?}; args {args_len} bytes",
            world.hot_agents,
            world.hot_upstreams,
            considered.iter().sum::<usize>() as f64 / considered.len() as f64,
            considered[considered.len() * 99 / 100],
            outcomes
        );
        for (label, reqs) in [("typed", &typed), ("args4k", &with_args)] {
            if !inputs.split(',').any(|x| x == label) {
                continue;
            }
            let store: &EntityStore = &world.store;
            if on("warden") {
                let s = measure(|i| {
                    let (r, now) = &reqs[i % reqs.len()];
                    black_box(compiled.decide(store, r, *now));
                });
                println!("{:>7} {:<8} {:<8} {}", n, label, "warden", fmt(&s));
            }
            if !on("cedar") {
                continue;
            }
            let s = measure(|i| {
                let (r, now) = &reqs[i % reqs.len()];
                black_box(compiled.decide_unindexed(store, r, *now, false));
            });
            println!("{:>7} {:<8} {:<8} {}", n, label, "cedar", fmt(&s));
            if !on("regorus") {
                continue;
            }
            let s = measure(|i| {
                let (r, now) = &reqs[i % reqs.len()];
                let input = r#gen::rego_input(store, r, *now).expect("input");
                black_box(rego.eval(regorus::Value::from(input)));
            });
            println!("{:>7} {:<8} {:<8} {}", n, label, "regorus", fmt(&s));
        }
    }
    // Entity count: a 1,000-policy set over a registry of 1,200 entities (the same 500 agents ×
    // 100 upstreams window as at 1,000 policies above).
    let mut rng = StdRng::seed_from_u64(42);
    let small = r#gen::world(&mut rng, 500, 100, 500, 100);
    let mut prng = StdRng::seed_from_u64(7 + 1_000);
    let generated = r#gen::policies(&mut prng, &small, 1_000, 0);
    let mut files = r#gen::default_pack_files();
    files.push(("generated.cedar".into(), generated.cedar));
    let compiled = compile(&PolicySource::from_files(files).expect("source")).expect("compiles");
    let reqs = requests(&mut rng, &small, None);
    let s = measure(|i| {
        let (r, now) = &reqs[i % reqs.len()];
        black_box(compiled.decide(&small.store, r, *now));
    });
    println!("# registry of {} entities, 1000 policies", small.store.len());
    println!("{:>7} {:<8} {:<8} {}", 1000, "typed", "warden", fmt(&s));
}
