//! The decision-equality gate: Warden (indexed), plain Cedar (`Authorizer::is_authorized` over the
//! whole set) and regorus (the same rules in Rego) decide generated requests alike — outcome, quorum
//! and the ids of the deciding policies — over policy sets of several sizes (generated per-agent and
//! per-upstream policies plus the default pack).
//!
//! In a debug build (`cargo test`) the gate runs 10,000 requests at 10 and 100 policies and 2,000 at
//! 1,000 policies, one test per size so they run in parallel (about 20 s on 2 cores). The full
//! gate — 10,000 requests at each of 10, 100, 1,000 and 10,000 policies — runs with
//! `WARDEN_FULL_GATE=1 cargo test --release -p warden-policy --test equality`.

// A benchmark or test harness: a broken fixture should stop the run loudly.
#![allow(clippy::expect_used)]

mod common;

use common::generate as r#gen;
use common::rego::{RegoEngine, set_quorum, warden_terms};
use rand::SeedableRng;
use rand::rngs::StdRng;
use warden_core::Outcome;
use warden_policy::{PolicySource, compile};

fn gate(policies: usize, requests: usize) {
    let started = std::time::Instant::now();
    let mut rng = StdRng::seed_from_u64(0x5eed_0000 + policies as u64);
    let world = r#gen::world(&mut rng, 400, 60, 400, 60);
    let generated = r#gen::policies(&mut rng, &world, policies, 0);
    let mut files = r#gen::default_pack_files();
    files.push(("generated.cedar".into(), generated.cedar.clone()));
    let compiled = compile(&PolicySource::from_files(files).expect("source")).expect("compiles");
    let mut rego = RegoEngine::new(&generated);
    let mut quorum = r#gen::default_pack_quorum();
    quorum.extend(generated.quorum.clone());
    set_quorum(quorum);
    let mut outcomes = [0usize; 3];
    for i in 0..requests {
        let args = (i % 4 == 0).then_some(300);
        let req = r#gen::request(&mut rng, &world, args);
        let now = r#gen::time(&mut rng);
        let warden = compiled.decide(&world.store, &req, now);
        let cedar = compiled.decide_unindexed(&world.store, &req, now, false);
        assert_eq!(warden, cedar, "{policies} policies, request {i}: {req:?}");
        let input = r#gen::rego_input(&world.store, &req, now).expect("known entities");
        let by_rego = rego.decide(&input);
        assert_eq!(
            warden_terms(&warden),
            by_rego,
            "{policies} policies, request {i}: {req:?}\n{warden:?}"
        );
        outcomes[match warden.outcome {
            Outcome::Allow => 0,
            Outcome::Deny => 1,
            Outcome::NeedsApproval => 2,
        }] += 1;
    }
    eprintln!(
        "{policies} policies, {requests} requests (rego {}): allow {}, deny {}, needs_approval {} ({:.1?})",
        if rego.is_vm() { "vm" } else { "interpreter" },
        outcomes[0],
        outcomes[1],
        outcomes[2],
        started.elapsed()
    );
    assert!(
        outcomes.iter().all(|n| *n > requests / 200),
        "every outcome is exercised: {outcomes:?}"
    );
}

fn full_gate() -> bool {
    std::env::var_os("WARDEN_FULL_GATE").is_some()
}

// One test per size, so the test harness runs them on parallel threads.

#[test]
fn three_engines_agree_at_the_default_pack_size() {
    gate(10, 10_000);
}

#[test]
fn three_engines_agree_at_100_policies() {
    gate(100, 10_000);
}

#[test]
fn three_engines_agree_at_1000_policies() {
    gate(1_000, if full_gate() { 10_000 } else { 2_000 });
}

#[test]
fn three_engines_agree_at_10000_policies() {
    if full_gate() {
        gate(10_000, 10_000);
    }
}
