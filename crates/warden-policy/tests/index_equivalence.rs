//! The index and the engine's fast paths never change a decision: on generated policy sets
//! (per-agent, per-upstream, per-tool, action-wide and unconstrained policies, and Cedar-only kinds:
//! policies that fail to evaluate, read the approval state in their condition, read the arguments
//! by computed keys or through a literal `Warden::Args` entity, or use the context as a whole; MCP
//! resources, prompts and `context.mcp`) and generated requests (with MCP resources and prompts
//! built per request, their `declared` from the task's patterns), Warden's decision equals plain Cedar's — `Authorizer::is_authorized` over the
//! whole set, with the full context (every attribute, every argument tag) and both passes — in
//! outcome, quorum, reasons and errors, both on the request's entity slice and on the whole registry.

// A benchmark or test harness: a broken fixture should stop the run loudly.
#![allow(clippy::expect_used)]

mod common;

use common::generate as r#gen;
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::StdRng;
use warden_policy::{PolicySource, compile};

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn indexed_equals_unindexed(seed in any::<u64>(), n in 1usize..400, agents in 2usize..30, upstreams in 1usize..10) {
        let mut rng = StdRng::seed_from_u64(seed);
        let world = r#gen::world(&mut rng, agents, upstreams, agents, upstreams);
        let generated = r#gen::policies(&mut rng, &world, n, 10);
        let mut files = r#gen::default_pack_files();
        files.push(("generated.cedar".into(), generated.cedar.clone()));
        let compiled = compile(&PolicySource::from_files(files).expect("source")).expect("compiles");
        for i in 0..40 {
            let args = if i % 3 == 0 { Some(200) } else { None };
            let mut req = r#gen::request(&mut rng, &world, args);
            r#gen::vary(&mut rng, &world, &mut req);
            let now = r#gen::time(&mut rng);
            let indexed = compiled.decide(&world.store, &req, now);
            let plain = compiled.decide_unindexed(&world.store, &req, now, false);
            prop_assert_eq!(&indexed, &plain, "request {:?}", req);
            if i % 4 == 0 {
                let whole = compiled.decide_unindexed(&world.store, &req, now, true);
                prop_assert_eq!(&indexed, &whole, "request {:?}", req);
            }
        }
    }

    /// The approval pass over only the candidates that read the approval state, and the context
    /// built with only the attributes and argument tags the candidates read, decide exactly as two
    /// full passes over the full context: sets where most policies are the Cedar-only kinds.
    #[test]
    fn fast_paths_equal_the_two_pass_reference(seed in any::<u64>(), n in 1usize..150, agents in 2usize..12, upstreams in 1usize..6) {
        let mut rng = StdRng::seed_from_u64(seed);
        let world = r#gen::world(&mut rng, agents, upstreams, agents, upstreams);
        let generated = r#gen::policies(&mut rng, &world, n, 60);
        let mut files = r#gen::default_pack_files();
        files.push(("generated.cedar".into(), generated.cedar.clone()));
        let compiled = compile(&PolicySource::from_files(files).expect("source")).expect("compiles");
        for i in 0..40 {
            let args = if i % 2 == 0 { Some(400) } else { None };
            let mut req = r#gen::request(&mut rng, &world, args);
            r#gen::vary(&mut rng, &world, &mut req);
            let now = r#gen::time(&mut rng);
            let fast = compiled.decide(&world.store, &req, now);
            let reference = compiled.decide_unindexed(&world.store, &req, now, false);
            prop_assert_eq!(&fast, &reference, "request {:?}", req);
            prop_assert_eq!(&compiled.explain(&world.store, &req, now).decision, &fast);
        }
    }
}
