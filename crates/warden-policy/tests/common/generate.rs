//! Generated registries, policy sets and requests for the index-equivalence property test, the
//! three-engine equality gate and the benchmarks (included by path from `benches/`).
//!
//! Policies come from a few realistic templates — per-agent permits and forbids, per-upstream
//! approval rules, per-tool permits, argument checks, a few action-wide rules — each emitted both as
//! Cedar and as the equivalent Rego rule, so the same rules run in Warden, in plain Cedar and in
//! regorus. Rule bodies never read `context.approval` (approval lives in `@approval`/`@quorum`), which
//! lets the Rego side decide `needs_approval` in one pass.
#![allow(dead_code)]

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, TimeZone, Timelike, Utc};
use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use serde_json::{Value as Json, json};
use warden_core::{
    AgentName, AgentState, Email, Environment, Model, Sensitivity, UpstreamKind, UpstreamName,
};
use warden_policy::{
    Action, AgentFacts, Approval, DatasetFacts, EntityStore, McpContext, McpKind, PolicyContext,
    PolicyRequest, ResourceRef, Risk, TaskContext, ToolClass, ToolFacts, UpstreamFacts, glob_matches,
};

pub const ENVS: [Environment; 3] = [
    Environment::Prototype,
    Environment::Staging,
    Environment::Production,
];
pub const SENS: [Sensitivity; 4] = [
    Sensitivity::Public,
    Sensitivity::Internal,
    Sensitivity::Confidential,
    Sensitivity::Regulated,
];
pub const TOOLS_PER_UPSTREAM: usize = 4;
pub const DATASETS_PER_UPSTREAM: usize = 2;
const CLASSES: [ToolClass; 4] = [
    ToolClass::Read,
    ToolClass::Write,
    ToolClass::Destructive,
    ToolClass::Admin,
];

/// MCP resource URIs requests name (`vary`) and patterns tasks declare.
pub const URIS: [&str; 5] = [
    "file:///tmp/a",
    "file:///tmp/b/c",
    "file:///etc/shadow",
    "ui://w/1",
    "file:///tmp",
];
const URI_PATTERNS: [&str; 5] = ["file:///tmp/*", "*", "ui://w/1", "*shadow", "file:///*/c"];

/// A generated registry. Agents and upstreams are `a<i>` and `u<j>`; tools `u<j>/t<k>`, datasets
/// `u<j>/d<k>`. Policies and requests use the first `hot_agents` agents and `hot_upstreams`
/// upstreams, so they meet however large the registry is.
///
/// Agents work in teams: agent `i` of the hot window has a home upstream `i × hot_upstreams /
/// hot_agents` and is allowed its home and some of its neighbours (plus, sometimes, one upstream
/// anywhere). The hot window may be narrowed after the world is built (`hot_agents` and
/// `hot_upstreams` are public): any prefix of the agents, in the same proportion to a prefix of the
/// upstreams, still holds agents together with the upstreams they work with. The benchmarks use
/// this to scale the agents and upstreams that policies are about with the number of policies.
pub struct World {
    pub store: EntityStore,
    pub agents: usize,
    pub upstreams: usize,
    pub hot_agents: usize,
    pub hot_upstreams: usize,
    /// Each agent's allowed upstreams, by index.
    pub allowed: Vec<Vec<usize>>,
}

fn agent_name(i: usize) -> AgentName {
    AgentName::parse(&format!("a{i}")).expect("agent name")
}

fn upstream_name(j: usize) -> UpstreamName {
    UpstreamName::parse(&format!("u{j}")).expect("upstream name")
}

/// A registry of `agents` agents and `upstreams` upstreams (with 4 tools and 2 datasets each):
/// `agents + 7 × upstreams` entities.
pub fn world(
    rng: &mut StdRng,
    agents: usize,
    upstreams: usize,
    hot_agents: usize,
    hot_upstreams: usize,
) -> World {
    let mut store = EntityStore::new();
    let owner = Email::parse("owner@example.com").expect("email");
    for j in 0..upstreams {
        let up = upstream_name(j);
        store
            .upsert_upstream(UpstreamFacts {
                name: up.clone(),
                kind: UpstreamKind::Mcp,
                environment: *ENVS.choose(rng).expect("env"),
                sensitivity: *SENS.choose(rng).expect("sens"),
                owner: owner.clone(),
            })
            .expect("upstream");
        for k in 0..TOOLS_PER_UPSTREAM {
            store
                .upsert_tool(ToolFacts {
                    upstream: up.clone(),
                    name: format!("t{k}"),
                    class: CLASSES[k % 4],
                })
                .expect("tool");
        }
        for k in 0..DATASETS_PER_UPSTREAM {
            store
                .upsert_dataset(DatasetFacts {
                    upstream: up.clone(),
                    name: format!("d{k}"),
                    sensitivity: *SENS.choose(rng).expect("sens"),
                })
                .expect("dataset");
        }
    }
    let hot_up = hot_upstreams.min(upstreams).max(1);
    let hot_ag = hot_agents.min(agents).max(1);
    let mut all_allowed = Vec::with_capacity(agents);
    for i in 0..agents {
        let home = (i % hot_ag) * hot_up / hot_ag;
        let mut set: std::collections::BTreeSet<usize> = (home.saturating_sub(4)..(home + 5).min(hot_up))
            .filter(|_| rng.gen_bool(0.6))
            .collect();
        set.insert(home);
        if rng.gen_bool(0.3) {
            set.insert(rng.gen_range(0..hot_up));
        }
        let allowed: Vec<UpstreamName> = set.iter().copied().map(upstream_name).collect();
        all_allowed.push(set.into_iter().collect());
        let state = if rng.gen_bool(0.9) {
            AgentState::Active
        } else {
            AgentState::Suspended
        };
        store
            .upsert_agent(AgentFacts {
                name: agent_name(i),
                environment: *ENVS.choose(rng).expect("env"),
                model: Model::parse("anthropic/claude-sonnet@4.5").expect("model"),
                state,
                owners: vec![owner.clone()],
                allowed_upstreams: allowed,
            })
            .expect("agent");
    }
    World {
        store,
        agents,
        upstreams,
        hot_agents: hot_ag,
        hot_upstreams: hot_up,
        allowed: all_allowed,
    }
}

/// An upstream agent `a` works with: one of its allowed upstreams in the hot window (80%), else any
/// upstream of the window.
fn upstream_for(rng: &mut StdRng, w: &World, a: usize) -> usize {
    let mine: Vec<usize> = w
        .allowed
        .get(a)
        .map(|v| v.iter().copied().filter(|u| *u < w.hot_upstreams).collect())
        .unwrap_or_default();
    match mine.choose(rng) {
        Some(u) if rng.gen_bool(0.8) => *u,
        _ => rng.gen_range(0..w.hot_upstreams),
    }
}

/// A generated policy set in both languages, plus the approval quorums (for Rego's `data`).
#[derive(Default)]
pub struct Generated {
    pub cedar: String,
    pub rego: String,
    pub quorum: BTreeMap<String, u8>,
}

/// The default pack (`policies/default/*.cedar`) as Rego.
pub const DEFAULT_PACK_REGO: &str = include_str!("default_pack.rego");

/// The default pack's approval quorums.
pub fn default_pack_quorum() -> BTreeMap<String, u8> {
    BTreeMap::from([
        ("production-writes-need-approval".to_owned(), 1),
        ("destructive-needs-two-approvals".to_owned(), 2),
    ])
}

/// The default pack's Cedar files.
pub fn default_pack_files() -> Vec<(String, String)> {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../policies/default");
    let src = warden_policy::load_dir(&dir).expect("default pack");
    src.files()
        .iter()
        .map(|f| (f.name.clone(), f.text.clone()))
        .collect()
}

/// A policy only Cedar runs (no Rego twin), exercising what the engine's fast paths must get right:
/// evaluation errors, conditions that read the approval state (the approval pass), the arguments
/// read in ways the context analysis cannot narrow to literal tag keys, and the context used as a
/// whole.
fn cedar_only(rng: &mut StdRng, w: &World, id: &str, a: usize, u: usize) -> String {
    let k = rng.gen_range(0..10);
    let u2 = if rng.gen_bool(0.5) {
        u
    } else {
        rng.gen_range(0..w.hot_upstreams)
    };
    let a2 = rng.gen_range(0..w.hot_agents);
    let t = rng.gen_range(0..TOOLS_PER_UPSTREAM);
    let ty = ["report", "support", "maintenance"].choose(rng).expect("type");
    let env = ENVS.choose(rng).expect("env").as_str();
    let n = rng.gen_range(0..100);
    let uri = URIS.choose(rng).expect("uri");
    let body = match rng.gen_range(0..42) {
        // Fails to evaluate (integer overflow) when it applies.
        0 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"read\", resource)\nwhen {{ context.time.unix * 10000000000 > 0 }};"
        ),
        // Reads the approval state: a plain permit that holds once enough people approved.
        1 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action in [Warden::Action::\"write\", Warden::Action::\"destructive\"], resource)\nwhen {{ context.approval.granted && context.approval.approvers >= {} }};",
            rng.gen_range(1..4)
        ),
        // A forbid lifted by approval.
        2 => format!(
            "forbid(principal, action == Warden::Action::\"destructive\", resource in Warden::Upstream::\"u{u}\")\nunless {{ context.approval.granted }};"
        ),
        // An `@approval` permit whose condition also reads the approval state.
        3 => format!(
            "@approval(\"required\")\n@quorum(\"{}\")\npermit(principal, action == Warden::Action::\"write\", resource in Warden::Upstream::\"u{u}\")\nwhen {{ context.approval.approvers < 3 || context.risk.score < 50 }};",
            rng.gen_range(1..=3)
        ),
        // A tag key that is not a literal.
        4 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ context has args && context has task && context.args.hasTag(context.task.task_type) }};"
        ),
        // The arguments entity named directly.
        5 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ Warden::Args::\"call\".hasTag(\"k{k}\") }};"
        ),
        // Only whether there are arguments.
        6 => format!(
            "forbid(principal, action == Warden::Action::\"destructive\", resource in Warden::Upstream::\"u{u}\")\nwhen {{ context has args && context.risk.score > 50 }};"
        ),
        // The context as a whole value.
        7 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action, resource)\nwhen {{ {{c: context}}.c.approval.granted && {{c: context}}.c.risk.score < 60 }};"
        ),
        // Resource and principal type tests, folded per resource type by the engine.
        9 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"read\", resource)\nwhen {{ if resource is Warden::Tool then resource.class == \"read\" else (resource is Warden::Upstream && context.sensitivity_level < 2) }};"
        ),
        10 => format!(
            "forbid(principal is Warden::Agent, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ (resource is Warden::Dataset || resource is Warden::Tool) && context has task && context.task.task_type == \"report\" && !(resource is Warden::Tool) }};"
        ),
        // Fields of the task tested with `has`.
        11 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action, resource)\nwhen {{ context has task.tools && context.task has datasets && context.task.tools.containsAny([\"t1\", \"t2\"]) && (resource is Warden::Task || context.task.datasets.isEmpty()) }};"
        ),
        // `resource == upstream` (not its tools and datasets) and `resource is T in upstream`:
        // the index files both under the upstream, which a tool's request also looks up.
        12 => format!(
            "permit(principal, action in [Warden::Action::\"read\", Warden::Action::\"write\"], resource == Warden::Upstream::\"u{u}\")\nwhen {{ context.risk.score < 70 }};"
        ),
        13 => format!(
            "forbid(principal, action, resource is Warden::Dataset in Warden::Upstream::\"u{u}\")\nwhen {{ resource.sensitivity_level > {} }};",
            rng.gen_range(0..4)
        ),
        // From here on: kinds aimed at the native evaluator's constructs (`src/native.rs`), and at
        // the cases it must leave to Cedar (entities outside the request, overflows).
        14 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"read\", resource)\nwhen {{ context has upstream && principal.allowed_upstreams.contains(context.upstream) }};"
        ),
        15 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ (principal.model like \"anthropic/*\" && principal.model_provider != \"anthropic\") || (resource has sensitivity_level && resource.sensitivity_level >= {}) }};",
            rng.gen_range(1..4)
        ),
        16 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action in [Warden::Action::\"read\", Warden::Action::\"write\"], resource)\nwhen {{ context.risk.score + context.time.hour * 2 - 10 < {n} && -context.sensitivity_level <= -1 }};"
        ),
        17 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ (if context has task then context.task.task_type else \"none\") == \"{ty}\" }};"
        ),
        // The delegation chain (requests get one in `vary`).
        18 => format!(
            "forbid(principal, action == Warden::Action::\"task.delegate\", resource)\nwhen {{ context.delegation.chain.contains(Warden::Agent::\"a{a}\") || context.delegation.chain.contains(principal) }};"
        ),
        // An entity named by a literal: the resource's upstream (in the request's entities), or
        // one the registry does not hold (an evaluation error).
        19 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ Warden::Upstream::\"{}\".environment == \"{env}\" }};",
            if rng.gen_bool(0.5) {
                format!("u{u}")
            } else {
                "nowhere".to_owned()
            }
        ),
        // `in` with sets, and an entity outside the request on the left.
        20 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"read\", resource)\nwhen {{ resource in [Warden::Upstream::\"u{u}\", Warden::Upstream::\"u{u2}\"] || Warden::Upstream::\"u{u}\" in resource }};"
        ),
        21 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ context has args && context.args.hasTag(\"k{k}\") && context.args.getTag(\"k{k}\") like \"v*{}\" }};",
            rng.gen_range(0..5)
        ),
        22 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action, resource)\nwhen {{ context has task && context.task.upstreams.containsAll([Warden::Upstream::\"u{u}\"]) && !context.task.tools.isEmpty() && context.task.tools.containsAny([\"t1\", \"t3\"]) && context.task.purpose != \"x\" && context.task.id == \"t\" }};"
        ),
        23 => format!(
            "permit(principal, action == Warden::Action::\"write\", resource is Warden::Tool in Warden::Upstream::\"u{u}\")\nwhen {{ resource.upstream is Warden::Upstream && resource.upstream.environment != \"{env}\" && resource.class == \"write\" && context has upstream && resource.upstream == context.upstream }};"
        ),
        24 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ action in [Warden::Action::\"write\", Warden::Action::\"destructive\"] && action != Warden::Action::\"destructive\" && context.time.weekday > {} }};",
            rng.gen_range(0..7)
        ),
        25 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action, resource)\nwhen {{ principal.owners.containsAny([Warden::Human::\"owner@example.com\"]) && context.environment has agent && context has time.hour && context.approval has granted && context.risk.score < {n} }};"
        ),
        26 => format!(
            "forbid(principal, action, resource)\nwhen {{ principal in Warden::Upstream::\"u{u}\" || principal in [Warden::Agent::\"a{a2}\"] }};"
        ),
        27 => format!(
            "permit(principal, action, resource)\nwhen {{ resource is Warden::Agent && resource == principal && context.sensitivity == \"{}\" && !(context has tool_args) }};",
            SENS.choose(rng).expect("sensitivity").as_str()
        ),
        28 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"read\", resource)\nwhen {{ resource == Warden::Tool::\"u{u}/t{t}\" || (resource is Warden::Dataset && resource.sensitivity == \"public\") || principal.environment == \"{env}\" }};"
        ),
        29 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ principal.allowed_upstreams.contains(Warden::Upstream::\"u{u2}\") && context has task && context.task.upstreams.contains(Warden::Upstream::\"u{u}\") && context.time.unix > 0 }};"
        ),
        // Overflows natively too, so Cedar reports it.
        30 => format!(
            "forbid(principal == Warden::Agent::\"a{a}\", action, resource)\nwhen {{ context.risk.score > {n} && -(context.time.unix * {}) < 0 }};",
            ["1000000000", "6000000000"].choose(rng).expect("factor")
        ),
        31 => format!(
            "forbid(principal == Warden::Agent::\"a{a}\", action, resource)\nwhen {{ context.risk.score > {n} && -(context.time.unix - context.time.unix - 9223372036854775807 - {}) > 0 }};",
            rng.gen_range(0..2)
        ),
        // `context has task.<field>` without a task is false, `context.task has <field>` an error.
        32 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ !(context has task.datasets) && context.risk.score > {n} }};"
        ),
        // A dotted key that collides with a nested path: the later one is the tag.
        33 => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ context has args && context.args.hasTag(\"nested.k{k}\") && context.args.getTag(\"nested.k{k}\") == \"{}\" }};",
            ["v", "true"].choose(rng).expect("value")
        ),
        // MCP resources and prompts (built per request), and the MCP message (`vary`).
        36 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"read\", resource is Warden::McpResource in Warden::Upstream::\"u{u}\")\nwhen {{ resource.declared && context has task && context.task.resources.containsAny([\"*\", \"file:///tmp/*\"]) }};"
        ),
        37 => format!(
            "forbid(principal, action, resource is Warden::McpResource)\nwhen {{ resource.uri like \"*shadow*\" && resource.upstream == Warden::Upstream::\"u{u}\" }};"
        ),
        38 => format!(
            "forbid(principal == Warden::Agent::\"a{a}\", action, resource)\nwhen {{ context has mcp && context.mcp.method == \"logging/setLevel\" && context.mcp.kind == \"request\" }};"
        ),
        // `context.mcp has …` and `context has mcp.…` are left to Cedar.
        39 => format!(
            "permit(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"read\", resource)\nwhen {{ (resource is Warden::Prompt && context has task && context.task.prompts.contains(resource.name)) || (context has mcp.kind && context.mcp.kind == \"notification\") || (context has mcp && context.mcp has method && resource is Warden::McpResource && !resource.declared) }};"
        ),
        40 => format!(
            "permit(principal, action == Warden::Action::\"read\", resource == Warden::McpResource::\"u{u}/{uri}\")\nwhen {{ principal.environment == \"{env}\" }};"
        ),
        41 => format!(
            "forbid(principal, action, resource == Warden::Prompt::\"u{u}/p{}\")\nwhen {{ resource.upstream.sensitivity_level > 1 || (context has mcp && context.mcp.method == \"prompts/get\") }};",
            rng.gen_range(0..3)
        ),
        // Literal tag keys that lead into nested arguments.
        _ => format!(
            "forbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ context has args && context.args.hasTag(\"field_{k}.n\") && context.args.getTag(\"field_{k}.n\") == \"{k}\" && context.args.hasTag(\"nested.k{k}\") }};"
        ),
    };
    format!("@id(\"{id}\")\n{body}\n")
}

/// `n` generated policies. `cedar_only` percent of them (0 for the equality gate and the
/// benchmarks) are Cedar-only kinds for the index test ([`cedar_only`]).
pub fn policies(rng: &mut StdRng, w: &World, n: usize, cedar_only_percent: u32) -> Generated {
    let mut g = Generated::default();
    // Action-wide rules are about the deployment, not about agents or upstreams: 1 in 100 policies,
    // but at most 10 in a set (a request meets every one for its action).
    let mut action_wide = 0;
    for i in 0..n {
        let id = format!("g{i}");
        let a = rng.gen_range(0..w.hot_agents);
        // Per-agent policies name an upstream the agent works with; per-upstream policies any.
        let ua = upstream_for(rng, w, a);
        let u = rng.gen_range(0..w.hot_upstreams);
        let t = rng.gen_range(0..TOOLS_PER_UPSTREAM);
        let roll = rng.gen_range(0..100);
        let (cedar, rego) = if rng.gen_range(0..100) < cedar_only_percent {
            (cedar_only(rng, w, &id, a, u), String::new())
        } else if roll < 25 {
            let score = rng.gen_range(10..100);
            (
                format!(
                    "@id(\"{id}\")\npermit(principal == Warden::Agent::\"a{a}\", action in [Warden::Action::\"read\", Warden::Action::\"write\"], resource in Warden::Upstream::\"u{ua}\")\nwhen {{ context.risk.score < {score} }};\n"
                ),
                format!(
                    "permits contains \"{id}\" if {{\n  input.principal.name == \"a{a}\"\n  input.action in {{\"read\", \"write\"}}\n  \"Upstream::u{ua}\" in input.resource.closure\n  input.context.risk.score < {score}\n}}\n"
                ),
            )
        } else if roll < 40 {
            let from = rng.gen_range(0..12);
            let to = rng.gen_range(12..24);
            (
                format!(
                    "@id(\"{id}\")\nforbid(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"destructive\", resource)\nwhen {{ context.time.hour < {from} || context.time.hour > {to} }};\n"
                ),
                format!(
                    "forbids contains \"{id}\" if {{\n  input.principal.name == \"a{a}\"\n  input.action == \"destructive\"\n  outside_hours({from}, {to})\n}}\n"
                ),
            )
        } else if roll < 55 {
            let q = rng.gen_range(1..=3u8);
            let level = rng.gen_range(0..4);
            g.quorum.insert(id.clone(), q);
            (
                format!(
                    "@id(\"{id}\")\n@approval(\"required\")\n@quorum(\"{q}\")\npermit(principal, action == Warden::Action::\"write\", resource in Warden::Upstream::\"u{u}\")\nwhen {{ context.sensitivity_level >= {level} }};\n"
                ),
                format!(
                    "permits contains \"{id}\" if {{\n  input.action == \"write\"\n  \"Upstream::u{u}\" in input.resource.closure\n  input.context.sensitivity_level >= {level}\n}}\n"
                ),
            )
        } else if roll < 70 {
            let env = ENVS.choose(rng).expect("env").as_str();
            (
                format!(
                    "@id(\"{id}\")\npermit(principal, action == Warden::Action::\"read\", resource == Warden::Tool::\"u{u}/t{t}\")\nwhen {{ principal.environment == \"{env}\" }};\n"
                ),
                format!(
                    "permits contains \"{id}\" if {{\n  input.action == \"read\"\n  input.resource.uid == \"Tool::u{u}/t{t}\"\n  input.principal.environment == \"{env}\"\n}}\n"
                ),
            )
        } else if roll < 82 {
            let k = rng.gen_range(0..10);
            let v = rng.gen_range(0..5);
            (
                format!(
                    "@id(\"{id}\")\nforbid(principal, action, resource in Warden::Upstream::\"u{u}\")\nwhen {{ context has args && context.args.hasTag(\"k{k}\") && context.args.getTag(\"k{k}\") == \"v{v}\" }};\n"
                ),
                format!(
                    "forbids contains \"{id}\" if {{\n  \"Upstream::u{u}\" in input.resource.closure\n  input.context.args[\"k{k}\"] == \"v{v}\"\n}}\n"
                ),
            )
        } else if roll < 93 {
            let ty = ["report", "support", "maintenance"].choose(rng).expect("type");
            (
                format!(
                    "@id(\"{id}\")\npermit(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"read\", resource)\nwhen {{ context has task && context.task.task_type == \"{ty}\" }};\n"
                ),
                format!(
                    "permits contains \"{id}\" if {{\n  input.principal.name == \"a{a}\"\n  input.action == \"read\"\n  input.context.task.task_type == \"{ty}\"\n}}\n"
                ),
            )
        } else if roll < 99 || action_wide >= 10 {
            (
                format!(
                    "@id(\"{id}\")\npermit(principal == Warden::Agent::\"a{a}\", action == Warden::Action::\"task.start\", resource)\nwhen {{ context has task && context.task.upstreams.contains(Warden::Upstream::\"u{ua}\") }};\n"
                ),
                format!(
                    "permits contains \"{id}\" if {{\n  input.principal.name == \"a{a}\"\n  input.action == \"task.start\"\n  \"u{ua}\" in input.context.task.upstreams\n}}\n"
                ),
            )
        } else {
            action_wide += 1;
            let d = rng.gen_range(0..3);
            (
                format!(
                    "@id(\"{id}\")\nforbid(principal, action == Warden::Action::\"task.delegate\", resource)\nwhen {{ context.delegation.depth > {d} && principal.environment == \"staging\" }};\n"
                ),
                format!(
                    "forbids contains \"{id}\" if {{\n  input.action == \"task.delegate\"\n  input.context.delegation.depth > {d}\n  input.principal.environment == \"staging\"\n}}\n"
                ),
            )
        };
        g.cedar.push_str(&cedar);
        g.cedar.push('\n');
        g.rego.push_str(&rego);
        g.rego.push('\n');
    }
    g
}

/// A fixed time: 2025-06-02 (a Monday) at a random hour.
pub fn time(rng: &mut StdRng) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 6, 2, rng.gen_range(0..24), 17, 0)
        .single()
        .expect("time")
}

/// Tool arguments of about `bytes` bytes: keys `k0`…`k9` with values `v0`…`v4`, then filler.
pub fn args(rng: &mut StdRng, bytes: usize) -> Json {
    let mut map = serde_json::Map::new();
    for k in 0..10 {
        if rng.gen_bool(0.5) {
            map.insert(format!("k{k}"), json!(format!("v{}", rng.gen_range(0..5))));
        }
    }
    // Keys a Cedar-only policy of the index test looks up by a non-literal key (the task type),
    // nested objects, and a dotted key that collides with a nested path (the later one wins).
    if rng.gen_bool(0.3) {
        let ty = ["report", "support", "maintenance"].choose(rng).expect("type");
        map.insert((*ty).to_owned(), json!("x"));
    }
    if rng.gen_bool(0.5) {
        let k = rng.gen_range(0..10);
        map.insert(
            "nested".into(),
            json!({format!("k{k}"): "v", "list": [1, {"a": null}]}),
        );
        if rng.gen_bool(0.3) {
            map.insert(format!("nested.k{k}"), json!(true));
        }
    }
    let mut i = 0;
    let mut size = 60;
    while size < bytes {
        map.insert(
            format!("field_{i}"),
            json!({"text": "lorem ipsum dolor sit amet", "n": i, "ok": true}),
        );
        size += 52;
        i += 1;
    }
    Json::Object(map)
}

/// A random request over the hot part of the registry. `args_bytes`: `None` for no arguments.
pub fn request(rng: &mut StdRng, w: &World, args_bytes: Option<usize>) -> PolicyRequest {
    let action = *[
        Action::Read,
        Action::Read,
        Action::Read,
        Action::Write,
        Action::Write,
        Action::Destructive,
        Action::Admin,
        Action::TaskStart,
        Action::TaskDelegate,
    ]
    .choose(rng)
    .expect("action");
    let principal = rng.gen_range(0..w.hot_agents);
    let u = upstream_for(rng, w, principal);
    let up = upstream_name(u);
    let resource = if action.is_task_action() {
        ResourceRef::Task(format!("task-{}", rng.gen_range(0..1000)))
    } else {
        match rng.gen_range(0..10) {
            0..=1 => ResourceRef::Upstream(up.clone()),
            2..=6 => ResourceRef::tool(&up, &format!("t{}", rng.gen_range(0..TOOLS_PER_UPSTREAM))),
            7..=8 => ResourceRef::dataset(&up, &format!("d{}", rng.gen_range(0..DATASETS_PER_UPSTREAM))),
            _ => ResourceRef::Agent(agent_name(rng.gen_range(0..w.hot_agents))),
        }
    };
    let task = if action.is_task_action() || rng.gen_bool(0.85) {
        let mut set = std::collections::BTreeSet::new();
        for _ in 0..rng.gen_range(1..=3) {
            set.insert(upstream_name(upstream_for(rng, w, principal)));
        }
        if rng.gen_bool(0.7) {
            set.insert(up.clone());
        }
        let ups: Vec<UpstreamName> = set.into_iter().collect();
        Some(TaskContext {
            id: "t".into(),
            purpose: "generated".into(),
            task_type: ["report", "support", "maintenance"]
                .choose(rng)
                .expect("type")
                .to_string(),
            upstreams: ups,
            tools: (0..TOOLS_PER_UPSTREAM)
                .filter(|_| rng.gen_bool(0.5))
                .map(|k| format!("t{k}"))
                .collect(),
            datasets: (0..DATASETS_PER_UPSTREAM)
                .filter(|_| rng.gen_bool(0.5))
                .map(|k| format!("d{k}"))
                .collect(),
            resources: Vec::new(),
            prompts: Vec::new(),
            depth: rng.gen_range(0..4),
            chain: vec![],
        })
    } else {
        None
    };
    let granted = rng.gen_bool(0.3);
    PolicyRequest {
        principal: agent_name(principal),
        action,
        resource,
        context: PolicyContext {
            task,
            approval: Approval {
                granted,
                approvers: if granted { rng.gen_range(1..4) } else { 0 },
            },
            args: args_bytes.map(|b| args(rng, b)),
            risk: Risk {
                secret_in_args: rng.gen_bool(0.05),
                score: rng.gen_range(0..100),
            },
            mcp: None,
        },
    }
}

/// Varies a generated request in ways the benchmarks' requests do not (so their workload stays
/// the same): a delegation chain, sometimes with the principal in it; a task without tools; MCP
/// resources and prompts (sometimes of an unknown upstream) with the task's patterns and prompt
/// names; the MCP message (sometimes with a method over the limit).
pub fn vary(rng: &mut StdRng, w: &World, req: &mut PolicyRequest) {
    let principal = req.principal.clone();
    if !req.action.is_task_action() && rng.gen_bool(0.3) {
        let up = match req.resource.upstream_name() {
            Some(u) if rng.gen_bool(0.95) => u.to_owned(),
            Some(_) => "nowhere".to_owned(),
            None => format!("u{}", rng.gen_range(0..w.hot_upstreams)),
        };
        req.resource = if rng.gen_bool(0.6) {
            ResourceRef::McpResource(format!("{up}/{}", URIS.choose(rng).expect("uri")))
        } else {
            ResourceRef::Prompt(format!("{up}/p{}", rng.gen_range(0..3)))
        };
    }
    if let Some(task) = req.context.task.as_mut() {
        task.resources = URI_PATTERNS
            .iter()
            .filter(|_| rng.gen_bool(0.3))
            .map(|p| (*p).to_owned())
            .collect();
        task.prompts = (0..3)
            .filter(|_| rng.gen_bool(0.4))
            .map(|k| format!("p{k}"))
            .collect();
    }
    req.context.mcp = match rng.gen_range(0..10) {
        0 => Some(("logging/setLevel", McpKind::Request)),
        1 => Some(("notifications/initialized", McpKind::Notification)),
        2 => Some(("sampling/createMessage", McpKind::Response)),
        3 => Some(("stream/open", McpKind::Stream)),
        4 => Some(("prompts/get", McpKind::Request)),
        _ => None,
    }
    .map(|(method, kind)| McpContext {
        method: method.to_owned(),
        kind,
    });
    if rng.gen_bool(0.02) {
        req.context.mcp = Some(McpContext {
            method: "m".repeat(129),
            kind: McpKind::Request,
        });
    }
    if let Some(task) = req.context.task.as_mut() {
        if rng.gen_bool(0.4) {
            task.chain = (0..rng.gen_range(1..=3))
                .map(|_| agent_name(rng.gen_range(0..w.hot_agents)))
                .collect();
            if rng.gen_bool(0.3) {
                task.chain.push(principal);
            }
        }
        if rng.gen_bool(0.2) {
            task.tools.clear();
        }
    }
}

fn env_rank(e: Environment) -> u8 {
    match e {
        Environment::Prototype => 0,
        Environment::Staging => 1,
        Environment::Production => 2,
    }
}

fn sens_level(s: Sensitivity) -> i64 {
    match s {
        Sensitivity::Public => 0,
        Sensitivity::Internal => 1,
        Sensitivity::Confidential => 2,
        Sensitivity::Regulated => 3,
    }
}

fn flatten(v: &Json, path: &str, out: &mut serde_json::Map<String, Json>) {
    let join = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Json::Object(m) => m.iter().for_each(|(k, v)| flatten(v, &join(k), out)),
        Json::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(v, &join(&i.to_string()), out)),
        Json::String(s) => {
            out.insert(path.to_owned(), json!(s));
        }
        other => {
            out.insert(path.to_owned(), json!(other.to_string()));
        }
    }
}

/// The Rego engine's input for a request: the same facts Warden puts into the Cedar request. `None`
/// when the request names something unknown (Warden denies those before evaluating).
pub fn rego_input(store: &EntityStore, req: &PolicyRequest, now: DateTime<Utc>) -> Option<Json> {
    let agent = store.agent(req.principal.as_str())?;
    let (resource, env, sens) = match &req.resource {
        ResourceRef::Upstream(u) => {
            let f = store.upstream(u.as_str())?;
            (
                json!({"type": "upstream", "uid": format!("Upstream::{u}"), "name": u.as_str(), "closure": [format!("Upstream::{u}")]}),
                f.environment,
                f.sensitivity,
            )
        }
        ResourceRef::Tool(id) => {
            let t = store.tool(id)?;
            let f = store.upstream(t.upstream.as_str())?;
            (
                json!({"type": "tool", "uid": format!("Tool::{id}"), "name": t.name, "upstream": t.upstream.as_str(),
                       "closure": [format!("Tool::{id}"), format!("Upstream::{}", t.upstream)]}),
                f.environment,
                f.sensitivity,
            )
        }
        ResourceRef::Dataset(id) => {
            let d = store.dataset(id)?;
            let f = store.upstream(d.upstream.as_str())?;
            (
                json!({"type": "dataset", "uid": format!("Dataset::{id}"), "name": d.name, "upstream": d.upstream.as_str(),
                       "sensitivity": d.sensitivity.as_str(),
                       "closure": [format!("Dataset::{id}"), format!("Upstream::{}", d.upstream)]}),
                f.environment,
                d.sensitivity,
            )
        }
        ResourceRef::Agent(a) => {
            let f = store.agent(a.as_str())?;
            (
                json!({"type": "agent", "uid": format!("Agent::{a}"), "name": a.as_str(), "closure": [format!("Agent::{a}")]}),
                f.environment,
                Sensitivity::Internal,
            )
        }
        ResourceRef::McpResource(id) | ResourceRef::Prompt(id) => {
            let (up, name) = id.split_once('/')?;
            let f = store.upstream(up)?;
            let (ty, uid) = match &req.resource {
                ResourceRef::McpResource(_) => ("mcp_resource", format!("McpResource::{id}")),
                _ => ("prompt", format!("Prompt::{id}")),
            };
            let declared = ty == "mcp_resource"
                && req
                    .context
                    .task
                    .as_ref()
                    .is_some_and(|t| t.resources.iter().any(|p| glob_matches(p, name)));
            (
                json!({"type": ty, "uid": uid, "name": name, "upstream": up, "declared": declared,
                       "closure": [uid, format!("Upstream::{up}")]}),
                f.environment,
                f.sensitivity,
            )
        }
        ResourceRef::Task(id) => {
            let task = req.context.task.as_ref()?;
            let mut env: Option<Environment> = None;
            let mut sens = Sensitivity::Public;
            for u in &task.upstreams {
                let f = store.upstream(u.as_str())?;
                if env.is_none_or(|e| env_rank(f.environment) > env_rank(e)) {
                    env = Some(f.environment);
                }
                sens = sens.max(f.sensitivity);
            }
            (
                json!({"type": "task", "uid": format!("Task::{id}"), "name": id, "closure": [format!("Task::{id}")]}),
                env.unwrap_or(agent.environment),
                sens,
            )
        }
    };
    let c = &req.context;
    let mut context = json!({
        "delegation": {"depth": c.task.as_ref().map_or(0, |t| t.depth)},
        "environment": {"agent": agent.environment.as_str(), "resource": env.as_str()},
        "sensitivity": sens.as_str(),
        "sensitivity_level": sens_level(sens),
        "time": {"hour": now.hour(), "weekday": now.weekday().number_from_monday(), "unix": now.timestamp()},
        "approval": {"granted": c.approval.granted, "approvers": c.approval.approvers},
        "risk": {"secret_in_args": c.risk.secret_in_args, "score": c.risk.score},
    });
    if let Some(t) = &c.task {
        context["task"] = json!({
            "purpose": t.purpose, "task_type": t.task_type,
            "upstreams": t.upstreams.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
            "tools": t.tools, "datasets": t.datasets, "resources": t.resources, "prompts": t.prompts,
        });
    }
    if let Some(a) = &c.args {
        let mut flat = serde_json::Map::new();
        flatten(a, "", &mut flat);
        context["args"] = Json::Object(flat);
    }
    Some(json!({
        "principal": {
            "name": agent.name.as_str(),
            "environment": agent.environment.as_str(),
            "state": agent.state.as_str(),
            "allowed_upstreams": agent.allowed_upstreams.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        },
        "action": req.action.as_str(),
        "resource": resource,
        "context": context,
    }))
}

/// The Rego module for a generated set: the decision logic, the default pack, the generated rules.
pub fn rego_module(generated: &Generated) -> String {
    let mut m = String::from(include_str!("decision.rego"));
    m.push('\n');
    m.push_str(DEFAULT_PACK_REGO);
    m.push('\n');
    m.push_str(&generated.rego);
    m
}

/// Rego `data` for a generated set: the approval quorums.
pub fn rego_data(generated: &Generated) -> Json {
    let mut q = default_pack_quorum();
    q.extend(generated.quorum.iter().map(|(k, v)| (k.clone(), *v)));
    json!({ "quorum": q })
}
