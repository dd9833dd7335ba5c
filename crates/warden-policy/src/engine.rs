//! Decisions: from a [`PolicyRequest`] and the registry to an `allow`, `deny` or `needs_approval`
//! [`Decision`], with reasons, errors, the policy version and the approval quorum.
//!
//! **The request.** The engine builds the Cedar request itself: the principal and resource entities
//! from the [`EntityStore`], the context from the request and the registry (environments,
//! sensitivity, the resource's upstream), so a context never disagrees with the schema. Anything that
//! cannot be built — an unknown agent or resource, an action that does not apply to the resource,
//! arguments over the limits or not matching the tool's declared type — is a deny naming the problem.
//! These checks run on every request; the context itself is built with only the attributes (and
//! argument tags) that a candidate policy can read (`analysis.rs`).
//!
//! **Evaluation.** Only the policies the [index](crate::index) selects are evaluated, each over a
//! precomputed condition: by the [native evaluator](crate::native) where it can decide (reading the
//! typed request and the registry's facts, building nothing), otherwise with Cedar's evaluator
//! (`cedar-policy-core`'s `Evaluator`, the same one `Authorizer::is_authorized` uses) against an
//! `Entities` holding just the entities the request touches and a context with what those
//! candidates read, built only when some candidate needs them. [`CompiledPolicies::decide_unindexed`] does the same with plain `Authorizer::is_authorized`
//! over the full set, the full context and always both passes; the two agree on every decision
//! (property-tested).
//!
//! **Three values.** Let *counted permits* be the satisfied permits, where an `@approval("required")`
//! permit counts only if `context.approval.granted` and `approvers >= @quorum`:
//! 1. any evaluation error → `deny` (an error never allows), errors listed;
//! 2. no satisfied forbid and at least one counted permit → `allow`, reasons = those permits;
//! 3. otherwise, if the request would be allowed with `approval = { granted: true, approvers: max }`
//!    → `needs_approval`, quorum = the highest `@quorum` among the approval permits that would allow
//!    it (1 if none);
//! 4. otherwise `deny`, reasons = the satisfied forbids, or `default-deny` when nothing permits.
//!
//! Step 3 is a second pass only over the candidates that can read the approval state
//! (`context.approval`, or the context as a whole); every other policy's result cannot change with
//! the approval, so the first pass's result stands for it. With the default pack and most policy
//! sets no policy reads it (approval is expressed by `@approval`), and step 3 costs nothing.

use std::borrow::Cow;
use std::cell::OnceCell;
use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::sync::{Arc, LazyLock, OnceLock};

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;
use smol_str::SmolStr;

use cedar_policy::{Authorizer, Effect};
use cedar_policy_core::ast::{
    Context, Entity, EntityUID, EntityUIDEntry, ExprKind, Literal, PartialValue, Request, SlotEnv, Value,
    ValueKind,
};
use cedar_policy_core::entities::{Entities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use warden_core::{Decision, Environment, Outcome, Sensitivity};

use crate::analysis::{CtxUse, TagUse, Variant, attr, task_field};
use crate::compile::CompiledPolicies;
use crate::index::Key;
use crate::native::{Env, Hot, Tags, hot};
use crate::request::{ArgLimits, MAX_MCP_METHOD, PolicyRequest, RESOURCE_KINDS, ResourceRef};
use crate::store::{AgentFacts, EntityStore, Facts, UpstreamFacts, sensitivity_level};
use crate::vocab::{Vocab, vocab};

type ContextMap = Arc<BTreeMap<SmolStr, Value>>;

/// Longest id (`<upstream>/<uri>`, `<upstream>/<name>`) of an MCP resource or a prompt: the bound
/// on tool arguments (`ArgLimits::max_bytes`), which a resource's URI arrives within.
const MAX_MCP_ID: usize = 64 * 1024;

/// A request resolved against the registry and checked: everything but the context. It borrows
/// the registry's entities and uids (no reference counts touched, nothing copied).
pub(crate) struct Prepared<'a> {
    principal: &'a Arc<EntityUID>,
    action: &'a Arc<EntityUID>,
    /// The registry's, or built for this request (a task).
    resource: Cow<'a, Arc<EntityUID>>,
    principal_entity: &'a Entity,
    /// The resource's entity, when the registry holds it (not for a task, an MCP resource or a
    /// prompt).
    resource_entity: Option<&'a Entity>,
    /// What the registry says about the principal, the resource and its upstream (the facts the
    /// entities were built from).
    principal_facts: &'a AgentFacts,
    resource_facts: Option<Facts<'a>>,
    upstream_facts: Option<&'a UpstreamFacts>,
    /// The resource's upstream's entity (the resource itself for an upstream).
    upstream_entity: Option<&'a Entity>,
    /// The registry's entities the request touches (principal, resource, its upstream, action), each
    /// once; the arguments entity comes with the context.
    slice: [Option<&'a Arc<Entity>>; 4],
    /// Built for this request (a task, an MCP resource, a prompt): not in the store.
    built: Option<Arc<Entity>>,
    agent_env: Environment,
    resource_env: Environment,
    sensitivity: Sensitivity,
    upstream: Option<&'a Arc<EntityUID>>,
    /// `context.tool_args`, for a tool that declares typed arguments.
    tool_args: Option<Value>,
    granted: bool,
    approvers: u8,
}

impl Prepared<'_> {
    /// The entities of the request: the slice and the entity built for it.
    fn entities(&self) -> impl Iterator<Item = &Arc<Entity>> {
        self.slice.iter().flatten().copied().chain(self.built.iter())
    }
}

/// A request being decided: resolved, its resource type, the time.
struct Question<'a> {
    p: &'a Prepared<'a>,
    req: &'a PolicyRequest,
    now: DateTime<Utc>,
    kind: usize,
}

/// What one evaluation pass found.
#[derive(Clone, Debug, Default)]
struct Pass {
    permits: Vec<u32>,
    forbids: Vec<u32>,
    errors: Vec<String>,
}

fn lit(v: impl Into<Literal>) -> Value {
    Value::from(v.into())
}

fn record<const N: usize>(pairs: [(&'static str, Value); N]) -> Value {
    Value::record(pairs.into_iter().map(|(k, v)| (SmolStr::new_static(k), v)), None)
}

fn env_rank(e: Environment) -> u8 {
    match e {
        Environment::Prototype => 0,
        Environment::Staging => 1,
        Environment::Production => 2,
    }
}

/// Context values that do not depend on the request, built once.
struct Statics {
    /// `context.environment` by (agent, resource) environment rank.
    environments: [[Value; 3]; 3],
    /// `context.approval` as the approval pass sees it.
    approved: Value,
    /// `context.approval` when nothing was approved.
    not_approved: Value,
    empty_set: Value,
    /// `context.risk` by `secret_in_args as usize * 256 + score`, built on first use.
    risk: Vec<OnceLock<Value>>,
    /// `context.delegation` with an empty chain, by depth, built on first use.
    delegation: Vec<OnceLock<Value>>,
    /// The slot environment of a static policy: empty.
    slots: SlotEnv,
}

static STATICS: LazyLock<Statics> = LazyLock::new(|| {
    let envs = [
        Environment::Prototype,
        Environment::Staging,
        Environment::Production,
    ];
    let env = |a: usize, r: usize| {
        record([
            ("agent", lit(envs[a].as_str())),
            ("resource", lit(envs[r].as_str())),
        ])
    };
    Statics {
        environments: [0, 1, 2].map(|a| [0, 1, 2].map(|r| env(a, r))),
        approved: record([("granted", lit(true)), ("approvers", lit(i64::from(u8::MAX)))]),
        not_approved: record([("granted", lit(false)), ("approvers", lit(0i64))]),
        empty_set: Value::set(std::iter::empty(), None),
        risk: (0..512).map(|_| OnceLock::new()).collect(),
        delegation: (0..256).map(|_| OnceLock::new()).collect(),
        slots: SlotEnv::new(),
    }
});

/// Whether a tag path can be, or lead to, one of `keys` (sorted): it is one, or a prefix of one
/// followed by `.`. The empty path leads anywhere (an empty key adds no `.`).
fn leads_to(path: &str, keys: &[SmolStr]) -> bool {
    if path.is_empty() {
        return true;
    }
    let from = keys.partition_point(|k| k.as_str() < path);
    keys.get(from..)
        .unwrap_or_default()
        .iter()
        .take_while(|k| k.starts_with(path))
        .any(|k| k.len() == path.len() || k.as_bytes().get(path.len()) == Some(&b'.'))
}

/// The leaves of the arguments as tags: dotted path → the string, or the JSON text of a number,
/// boolean or null, in document order (a later duplicate path replaces an earlier one, as in a
/// map). With `keys`, only the leaves at those paths, skipping subtrees that cannot hold one.
fn flatten_args(
    json: &serde_json::Value,
    path: &mut String,
    keys: Option<&[SmolStr]>,
    out: &mut Vec<(SmolStr, PartialValue)>,
    text: &mut String,
) {
    let child = |path: &mut String, key: &str, f: &mut dyn FnMut(&mut String)| {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        if keys.is_none_or(|k| leads_to(path, k)) {
            f(path);
        }
        path.truncate(len);
    };
    let wanted = |path: &str| keys.is_none_or(|k| k.binary_search_by(|x| x.as_str().cmp(path)).is_ok());
    match json {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                child(path, k, &mut |p| flatten_args(v, p, keys, out, text));
            }
        }
        serde_json::Value::Array(items) => {
            let mut index = String::new();
            for (i, v) in items.iter().enumerate() {
                index.clear();
                let _ = write!(index, "{i}");
                child(path, &index, &mut |p| flatten_args(v, p, keys, out, text));
            }
        }
        serde_json::Value::String(s) => {
            if wanted(path) {
                out.push((SmolStr::new(path.as_str()), PartialValue::from(lit(s.as_str()))));
            }
        }
        other => {
            if wanted(path) {
                text.clear();
                let _ = write!(text, "{other}");
                out.push((
                    SmolStr::new(path.as_str()),
                    PartialValue::from(lit(text.as_str())),
                ));
            }
        }
    }
}

impl CompiledPolicies {
    fn vocab(&self) -> Result<&'static Vocab, String> {
        vocab().map_err(|e| format!("internal: {e}"))
    }

    /// Resolves and checks the request. `Err` is a reason to deny.
    pub(crate) fn prepare<'a>(
        &'a self,
        store: &'a EntityStore,
        req: &PolicyRequest,
    ) -> Result<Prepared<'a>, String> {
        let v = self.vocab()?;
        let ctx = &req.context;
        let agent = store
            .agents
            .get(req.principal.as_str())
            .ok_or_else(|| format!("unknown-agent: agent `{}` is not registered", req.principal))?;
        let mut slice: [Option<&'a Arc<Entity>>; 4] = [Some(&agent.entity), None, None, None];

        if req.action.is_task_action() != matches!(req.resource, ResourceRef::Task(_)) {
            return Err(format!(
                "invalid-request: action `{}` does not apply to {}",
                req.action, req.resource
            ));
        }
        if let Some(task) = &ctx.task {
            task.check().map_err(|m| format!("limit-exceeded: {m}"))?;
        }
        if let Some(mcp) = &ctx.mcp
            && mcp.method.len() > MAX_MCP_METHOD
        {
            return Err(format!(
                "limit-exceeded: the MCP method is {} bytes long; the limit is {MAX_MCP_METHOD}",
                mcp.method.len()
            ));
        }

        // The resource, its upstream, and what the context says about them.
        let mut upstream: Option<&'a Arc<EntityUID>> = None;
        let mut resource_entity: Option<&'a Entity> = None;
        let mut resource_facts = None;
        let mut upstream_facts = None;
        let mut upstream_entity: Option<&'a Entity> = None;
        let mut built = None;
        let resource: Cow<'a, Arc<EntityUID>>;
        let resource_env;
        let sensitivity;
        match &req.resource {
            ResourceRef::Upstream(name) => {
                let up = store
                    .upstreams
                    .get(name.as_str())
                    .ok_or_else(|| format!("unknown-resource: upstream `{name}` is not registered"))?;
                resource = Cow::Borrowed(&up.uid);
                upstream = Some(&up.uid);
                resource_facts = Some(Facts::Upstream(&up.facts));
                upstream_facts = Some(&up.facts);
                upstream_entity = Some(&up.entity);
                resource_env = up.facts.environment;
                sensitivity = up.facts.sensitivity;
                resource_entity = Some(&up.entity);
                slice[1] = Some(&up.entity);
            }
            ResourceRef::Tool(id) | ResourceRef::Dataset(id) => {
                let (entity, uid, up_name, own_sensitivity, facts) = match &req.resource {
                    ResourceRef::Tool(_) => {
                        let t = store.tools.get(id.as_str()).ok_or_else(|| {
                            format!("unknown-resource: tool `{}` is not registered", id.escape_debug())
                        })?;
                        (&t.entity, &t.uid, &t.facts.upstream, None, Facts::Tool(&t.facts))
                    }
                    _ => {
                        let d = store.datasets.get(id.as_str()).ok_or_else(|| {
                            format!(
                                "unknown-resource: dataset `{}` is not registered",
                                id.escape_debug()
                            )
                        })?;
                        (
                            &d.entity,
                            &d.uid,
                            &d.facts.upstream,
                            Some(d.facts.sensitivity),
                            Facts::Dataset(&d.facts),
                        )
                    }
                };
                let up = store.upstreams.get(up_name.as_str()).ok_or_else(|| {
                    format!(
                        "unknown-resource: upstream `{up_name}` of {} is not registered",
                        req.resource
                    )
                })?;
                resource = Cow::Borrowed(uid);
                upstream = Some(&up.uid);
                resource_facts = Some(facts);
                upstream_facts = Some(&up.facts);
                upstream_entity = Some(&up.entity);
                resource_env = up.facts.environment;
                sensitivity = own_sensitivity.unwrap_or(up.facts.sensitivity);
                resource_entity = Some(entity);
                slice[1] = Some(entity);
                slice[2] = Some(&up.entity);
            }
            ResourceRef::Agent(name) => {
                let a = store
                    .agents
                    .get(name.as_str())
                    .ok_or_else(|| format!("unknown-resource: agent `{name}` is not registered"))?;
                resource = Cow::Borrowed(&a.uid);
                resource_facts = Some(Facts::Agent(&a.facts));
                resource_env = a.facts.environment;
                sensitivity = Sensitivity::Internal;
                resource_entity = Some(&a.entity);
                if a.uid != agent.uid {
                    slice[1] = Some(&a.entity);
                }
            }
            ResourceRef::McpResource(id) | ResourceRef::Prompt(id) => {
                if id.len() > MAX_MCP_ID {
                    return Err(format!(
                        "limit-exceeded: the {} id is {} bytes long; the limit is {MAX_MCP_ID}",
                        if matches!(req.resource, ResourceRef::Prompt(_)) {
                            "prompt"
                        } else {
                            "MCP resource"
                        },
                        id.len()
                    ));
                }
                let Some((up_name, name)) = id.split_once('/') else {
                    return Err(format!(
                        "invalid-request: {} is not `<upstream>/<name>`",
                        req.resource
                    ));
                };
                let up = store.upstreams.get(up_name).ok_or_else(|| {
                    format!(
                        "unknown-resource: upstream `{}` of {} is not registered",
                        up_name.escape_debug(),
                        req.resource
                    )
                })?;
                let upstream_value = PartialValue::from(lit(Arc::clone(&up.uid)));
                let (ty, attrs) = match &req.resource {
                    ResourceRef::McpResource(_) => {
                        // Derived here from the task's patterns, never supplied by a caller.
                        let declared = ctx
                            .task
                            .as_ref()
                            .is_some_and(|t| t.resources.iter().any(|p| warden_core::glob_matches(p, name)));
                        (
                            &v.mcp_resource,
                            vec![
                                (SmolStr::new_static("uri"), PartialValue::from(lit(name))),
                                (SmolStr::new_static("upstream"), upstream_value),
                                (SmolStr::new_static("declared"), PartialValue::from(lit(declared))),
                            ],
                        )
                    }
                    _ => (
                        &v.prompt,
                        vec![
                            (SmolStr::new_static("name"), PartialValue::from(lit(name))),
                            (SmolStr::new_static("upstream"), upstream_value),
                        ],
                    ),
                };
                let uid = v.uid(ty, id);
                let entity = Arc::new(Entity::new_with_attr_partial_value(
                    uid,
                    attrs,
                    HashSet::new(),
                    HashSet::from([(*up.uid).clone()]),
                    std::iter::empty(),
                ));
                resource = Cow::Owned(Arc::new(entity.uid().clone()));
                built = Some(entity);
                upstream = Some(&up.uid);
                upstream_facts = Some(&up.facts);
                upstream_entity = Some(&up.entity);
                resource_env = up.facts.environment;
                sensitivity = up.facts.sensitivity;
                slice[2] = Some(&up.entity);
            }
            ResourceRef::Task(id) => {
                let task = ctx.task.as_ref().ok_or_else(|| {
                    format!(
                        "invalid-request: `{}` needs the task's intent in the context",
                        req.action
                    )
                })?;
                let mut env = None::<Environment>;
                let mut sens = Sensitivity::Public;
                for u in &task.upstreams {
                    let up = store.upstreams.get(u.as_str()).ok_or_else(|| {
                        format!("unknown-resource: upstream `{u}` of the task is not registered")
                    })?;
                    if env.is_none_or(|e| env_rank(up.facts.environment) > env_rank(e)) {
                        env = Some(up.facts.environment);
                    }
                    sens = sens.max(up.facts.sensitivity);
                }
                let uid = v.uid(&v.task, id);
                resource_env = env.unwrap_or(agent.facts.environment);
                sensitivity = sens;
                built = Some(Arc::new(Entity::new_with_attr_partial_value(
                    uid.clone(),
                    [
                        (
                            SmolStr::new_static("purpose"),
                            PartialValue::from(lit(task.purpose.as_str())),
                        ),
                        (
                            SmolStr::new_static("task_type"),
                            PartialValue::from(lit(task.task_type.as_str())),
                        ),
                        (
                            SmolStr::new_static("depth"),
                            PartialValue::from(lit(i64::from(task.depth))),
                        ),
                    ],
                    HashSet::new(),
                    HashSet::new(),
                    std::iter::empty(),
                )));
                resource = Cow::Owned(Arc::new(uid));
            }
        }

        // The arguments: bounded (always, whatever the policies read) and, for a tool that
        // declares typed arguments, checked against the type.
        let mut tool_args = None;
        if let Some(args) = &ctx.args {
            ArgLimits::default()
                .check(args)
                .map_err(|m| format!("limit-exceeded: {m}"))?;
            if let ResourceRef::Tool(id) = &req.resource
                && let Some(ty) = self.tool_types.get(id)
            {
                let typed = ty.to_value(args, "").map_err(|m| {
                    format!(
                        "invalid-arguments: arguments of tool `{}`: {m}",
                        id.escape_debug()
                    )
                })?;
                tool_args = Some(Value::record([(SmolStr::new(id), typed)], None));
            }
        }

        slice[3] = self.action_entities.get(req.action as usize);
        Ok(Prepared {
            principal: &agent.uid,
            action: v.action(req.action),
            resource,
            principal_entity: &agent.entity,
            resource_entity,
            principal_facts: &agent.facts,
            resource_facts,
            upstream_facts,
            upstream_entity,
            slice,
            built,
            agent_env: agent.facts.environment,
            resource_env,
            sensitivity,
            upstream,
            tool_args,
            granted: ctx.approval.granted,
            approvers: ctx.approval.approvers,
        })
    }

    /// The Cedar context with the attributes in `need` (and of the generic argument view, the tags
    /// `need` names), and the arguments entity when the context refers to it.
    fn context(
        &self,
        p: &Prepared,
        req: &PolicyRequest,
        now: DateTime<Utc>,
        need: &CtxUse,
    ) -> Result<(ContextMap, Option<Arc<Entity>>), String> {
        let v = self.vocab()?;
        let st = &*STATICS;
        let ctx = &req.context;
        let want = |bit: u16| need.attrs & bit != 0;
        let mut c: Vec<(SmolStr, Value)> = Vec::with_capacity(12);
        let key = SmolStr::new_static;
        if want(attr::APPROVAL) {
            let a = &ctx.approval;
            let value = if !a.granted && a.approvers == 0 {
                st.not_approved.clone()
            } else {
                record([
                    ("granted", lit(a.granted)),
                    ("approvers", lit(i64::from(a.approvers))),
                ])
            };
            c.push((key("approval"), value));
        }
        let mut args_entity = None;
        if want(attr::ARGS)
            && let Some(args) = &ctx.args
        {
            let keys: Option<&[SmolStr]> = match &need.tags {
                TagUse::All => None,
                TagUse::Keys(k) => Some(k),
                TagUse::None => Some(&[]),
            };
            let mut tags = Vec::new();
            flatten_args(args, &mut String::new(), keys, &mut tags, &mut String::new());
            let uid = v.uid(&v.args, "call");
            args_entity = Some(Arc::new(Entity::new_with_attr_partial_value(
                uid.clone(),
                std::iter::empty(),
                HashSet::new(),
                HashSet::new(),
                tags,
            )));
            c.push((key("args"), lit(uid)));
        }
        if want(attr::DELEGATION) {
            let delegation =
                |depth: u8, chain: Value| record([("depth", lit(i64::from(depth))), ("chain", chain)]);
            let value = match &ctx.task {
                Some(t) if !t.chain.is_empty() => delegation(
                    t.depth,
                    Value::set(t.chain.iter().map(|a| lit(v.uid(&v.agent, a.as_str()))), None),
                ),
                _ => {
                    let depth = ctx.task.as_ref().map_or(0, |t| t.depth);
                    match st.delegation.get(usize::from(depth)) {
                        Some(cell) => cell
                            .get_or_init(|| delegation(depth, st.empty_set.clone()))
                            .clone(),
                        None => delegation(depth, st.empty_set.clone()),
                    }
                }
            };
            c.push((key("delegation"), value));
        }
        if want(attr::ENVIRONMENT) {
            let a = usize::from(env_rank(p.agent_env));
            let r = usize::from(env_rank(p.resource_env));
            let value = st
                .environments
                .get(a)
                .and_then(|row| row.get(r))
                .cloned()
                .unwrap_or_else(|| {
                    record([
                        ("agent", lit(p.agent_env.as_str())),
                        ("resource", lit(p.resource_env.as_str())),
                    ])
                });
            c.push((key("environment"), value));
        }
        if want(attr::MCP)
            && let Some(m) = &ctx.mcp
        {
            c.push((
                key("mcp"),
                record([("method", lit(m.method.as_str())), ("kind", lit(m.kind.as_str()))]),
            ));
        }
        if want(attr::RISK) {
            let r = ctx.risk;
            let risk = || {
                record([
                    ("secret_in_args", lit(r.secret_in_args)),
                    ("score", lit(i64::from(r.score))),
                ])
            };
            let value = match st
                .risk
                .get(usize::from(r.secret_in_args) * 256 + usize::from(r.score))
            {
                Some(cell) => cell.get_or_init(risk).clone(),
                None => risk(),
            };
            c.push((key("risk"), value));
        }
        if want(attr::SENSITIVITY) {
            c.push((key("sensitivity"), lit(p.sensitivity.as_str())));
        }
        if want(attr::SENSITIVITY_LEVEL) {
            c.push((key("sensitivity_level"), lit(sensitivity_level(p.sensitivity))));
        }
        if want(attr::TASK)
            && let Some(task) = &ctx.task
        {
            // Only the fields a candidate reads.
            let field = |bit: u8| need.task & bit != 0;
            let strings = |items: &[String]| {
                if items.is_empty() {
                    st.empty_set.clone()
                } else {
                    Value::set(items.iter().map(|s| lit(s.as_str())), None)
                }
            };
            let mut fields: Vec<(SmolStr, Value)> = Vec::with_capacity(8);
            if field(task_field::DATASETS) {
                fields.push((key("datasets"), strings(&task.datasets)));
            }
            if field(task_field::ID) {
                fields.push((key("id"), lit(task.id.as_str())));
            }
            if field(task_field::PROMPTS) {
                fields.push((key("prompts"), strings(&task.prompts)));
            }
            if field(task_field::PURPOSE) {
                fields.push((key("purpose"), lit(task.purpose.as_str())));
            }
            if field(task_field::RESOURCES) {
                fields.push((key("resources"), strings(&task.resources)));
            }
            if field(task_field::TASK_TYPE) {
                fields.push((key("task_type"), lit(task.task_type.as_str())));
            }
            if field(task_field::TOOLS) {
                fields.push((key("tools"), strings(&task.tools)));
            }
            if field(task_field::UPSTREAMS) {
                let ups = task.upstreams.iter().map(|u| lit(v.uid(&v.upstream, u.as_str())));
                fields.push((key("upstreams"), Value::set(ups, None)));
            }
            c.push((key("task"), Value::record(fields, None)));
        }
        if want(attr::TIME) {
            c.push((
                key("time"),
                record([
                    ("hour", lit(i64::from(now.hour()))),
                    ("weekday", lit(i64::from(now.weekday().number_from_monday()))),
                    ("unix", lit(now.timestamp())),
                ]),
            ));
        }
        if want(attr::TOOL_ARGS)
            && let Some(t) = &p.tool_args
        {
            c.push((key("tool_args"), t.clone()));
        }
        if want(attr::UPSTREAM)
            && let Some(up) = p.upstream
        {
            c.push((key("upstream"), Value::from(Literal::EntityUID(Arc::clone(up)))));
        }
        Ok((Arc::new(c.into_iter().collect()), args_entity))
    }

    fn request(p: &Prepared, context: ContextMap) -> Request {
        let known = |euid: &Arc<EntityUID>| EntityUIDEntry::Known {
            euid: euid.clone(),
            loc: None,
        };
        Request::new_unchecked(
            known(p.principal),
            known(p.action),
            known(&p.resource),
            Some(Context::Value(context)),
        )
    }

    /// `context` as the approval pass sees it: approved by the most approvers there can be.
    fn approved_context(context: &ContextMap) -> ContextMap {
        let mut c = (**context).clone();
        c.insert(SmolStr::new_static("approval"), STATICS.approved.clone());
        Arc::new(c)
    }

    /// Evaluates the candidates' conditions for resource type `kind`: natively where the native
    /// evaluator decides ([`crate::native`]), the others with Cedar's evaluator, over a context and
    /// an `Entities` built only then, with only what those read. `approved`: the approval pass.
    fn pass(
        &self,
        q: &Question<'_>,
        env: &Env<'_>,
        candidates: &[u32],
        approved: bool,
    ) -> Result<Pass, String> {
        let (p, req, now, kind) = (q.p, q.req, q.now, q.kind);
        let mut pass = Pass::default();
        let mut deferred: Vec<u32> = Vec::new();
        for &i in candidates {
            let Some(h) = self.hot_entry(i, kind) else {
                continue;
            };
            // A condition that folded to a constant needs no evaluator.
            let result = if h.flags & hot::TRUE != 0 {
                Some(true)
            } else if h.flags & hot::FALSE != 0 {
                Some(false)
            } else if h.flags & hot::NATIVE != 0 {
                self.programs.eval(h.root, env)
            } else {
                None
            };
            match result {
                Some(true) if h.flags & hot::FORBID != 0 => pass.forbids.push(i),
                Some(true) => pass.permits.push(i),
                Some(false) => {}
                None => deferred.push(i),
            }
        }
        if deferred.is_empty() {
            return Ok(pass);
        }
        let mut need = CtxUse::default();
        for i in &deferred {
            if let Some(variant) = self.variant(*i, kind) {
                need.merge(&variant.ctx);
            }
        }
        let (mut context, args) = self.context(p, req, now, &need)?;
        if approved {
            context = Self::approved_context(&context);
        }
        let entities = Self::entities(p, args.as_ref())?;
        let cedar = self.cedar_pass(&entities, Self::request(p, context), &deferred, kind);
        // Candidates are ascending: sorting restores their order.
        pass.permits.extend(cedar.permits);
        pass.permits.sort_unstable();
        pass.forbids.extend(cedar.forbids);
        pass.forbids.sort_unstable();
        pass.errors = cedar.errors;
        Ok(pass)
    }

    /// Evaluates the candidates' conditions for resource type `kind` with Cedar's evaluator.
    fn cedar_pass(&self, entities: &Entities, request: Request, candidates: &[u32], kind: usize) -> Pass {
        let eval = Evaluator::new(request, entities, Extensions::all_available());
        let mut pass = Pass::default();
        for &i in candidates {
            let Some(variant) = self.variant(i, kind) else {
                continue;
            };
            // A condition that folded to a constant needs no evaluator. Policies are static (no
            // templates), so their slot environment is empty.
            let result = match variant.condition.expr_kind() {
                ExprKind::Lit(Literal::Bool(b)) => Ok(Value::from(*b)),
                _ => eval.interpret(&variant.condition, &STATICS.slots),
            };
            let id = || self.policies.get(i as usize).map_or("?", |p| p.id.as_str());
            match result {
                Ok(Value {
                    value: ValueKind::Lit(Literal::Bool(true)),
                    ..
                }) => match variant.effect {
                    Effect::Permit => pass.permits.push(i),
                    Effect::Forbid => pass.forbids.push(i),
                },
                Ok(Value {
                    value: ValueKind::Lit(Literal::Bool(false)),
                    ..
                }) => {}
                Ok(_) => pass
                    .errors
                    .push(format!("{}: the policy's condition is not a boolean", id())),
                Err(e) => pass.errors.push(format!("{}: {e}", id())),
            }
        }
        pass
    }

    /// The approval pass over the candidates: only the policies that can read the approval state
    /// are evaluated again (with `approved`); every other candidate's result is the first pass's.
    fn approval_pass(
        &self,
        q: &Question<'_>,
        env: &Env<'_>,
        candidates: &[u32],
        first: &Pass,
    ) -> Result<Pass, String> {
        let kind = q.kind;
        let readers: Vec<u32> = candidates
            .iter()
            .copied()
            .filter(|i| {
                self.hot_entry(*i, kind)
                    .is_some_and(|h| h.flags & hot::READS_APPROVAL != 0)
            })
            .collect();
        if readers.is_empty() {
            return Ok(first.clone());
        }
        let approved = Env {
            granted: true,
            approvers: i64::from(u8::MAX),
            ..*env
        };
        let again = self.pass(q, &approved, &readers, true)?;
        let merge = |old: &[u32], new: Vec<u32>| -> Vec<u32> {
            let mut ids: Vec<u32> = old
                .iter()
                .copied()
                .filter(|i| readers.binary_search(i).is_err())
                .chain(new)
                .collect();
            ids.sort_unstable();
            ids
        };
        let mut errors = first.errors.clone();
        errors.extend(again.errors);
        Ok(Pass {
            permits: merge(&first.permits, again.permits),
            forbids: merge(&first.forbids, again.forbids),
            errors,
        })
    }

    /// The request's entities (already free of duplicates) and the arguments entity.
    fn entities(p: &Prepared<'_>, args: Option<&Arc<Entity>>) -> Result<Entities, String> {
        Entities::new()
            .add_entities(
                p.entities().chain(args).cloned(),
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| format!("internal: entities: {e}"))
    }

    /// Policy `i`'s condition for resource type `kind`, and what it reads.
    fn variant(&self, i: u32, kind: usize) -> Option<&Variant> {
        self.hot.get(i as usize * RESOURCE_KINDS + kind).map(|v| &**v)
    }

    /// Policy `i`'s compact entry for resource type `kind`.
    fn hot_entry(&self, i: u32, kind: usize) -> Option<Hot> {
        self.fast.get(i as usize * RESOURCE_KINDS + kind).copied()
    }

    /// Policy `i`'s `@quorum` if it is an `@approval` permit (the same for every resource type).
    fn approval(&self, i: u32) -> Option<u8> {
        self.hot_entry(i, 0)
            .filter(|h| h.flags & hot::APPROVAL != 0)
            .map(|h| h.quorum)
    }

    fn counts(&self, i: u32, granted: bool, approvers: u8) -> bool {
        match self.approval(i) {
            None => true,
            Some(q) => granted && approvers >= q,
        }
    }

    /// Steps 1-4 of the module doc. `second` computes the approval pass from the first pass; it
    /// runs only when the first pass neither errs nor allows and `mentions_approval`.
    fn combine(
        &self,
        p: &Prepared,
        req: &PolicyRequest,
        first: Pass,
        mentions_approval: bool,
        second: impl FnOnce(&Pass) -> Result<Pass, String>,
    ) -> Result<(Decision, Option<Pass>, Pass), String> {
        let reasons = |ids: &[u32]| -> Vec<String> {
            let mut r: Vec<String> = ids
                .iter()
                .filter_map(|i| self.policies.get(*i as usize).map(|p| p.reason.clone()))
                .collect();
            r.sort();
            r
        };
        let mut d = Decision {
            outcome: Outcome::Deny,
            reasons: Vec::new(),
            policy_version: self.version.clone(),
            errors: Vec::new(),
            quorum: None,
        };
        if !first.errors.is_empty() {
            d.reasons = reasons(&first.forbids);
            d.reasons
                .push("evaluation-error (deny): a policy could not be evaluated".into());
            let mut errors = first.errors.clone();
            errors.sort();
            d.errors = errors;
            return Ok((d, None, first));
        }
        let counted = first
            .permits
            .iter()
            .filter(|i| self.counts(**i, p.granted, p.approvers));
        if first.forbids.is_empty() && counted.clone().next().is_some() {
            d.outcome = Outcome::Allow;
            d.reasons = reasons(&counted.copied().collect::<Vec<u32>>());
            return Ok((d, None, first));
        }
        let mut second_pass = None;
        if mentions_approval {
            let s = second(&first)?;
            if s.errors.is_empty() && s.forbids.is_empty() && !s.permits.is_empty() {
                let quorum = s
                    .permits
                    .iter()
                    .filter_map(|i| self.approval(*i))
                    .max()
                    .unwrap_or(1);
                d.outcome = Outcome::NeedsApproval;
                d.quorum = Some(quorum);
                d.reasons = reasons(&s.permits);
                return Ok((d, Some(s), first));
            }
            second_pass = Some(s);
        }
        d.reasons = if first.forbids.is_empty() {
            vec![format!(
                "default-deny: no policy permits `{}` on {}",
                req.action, req.resource
            )]
        } else {
            reasons(&first.forbids)
        };
        Ok((d, second_pass, first))
    }

    fn denied(&self, reason: String) -> Decision {
        Decision {
            outcome: Outcome::Deny,
            reasons: vec![reason.clone()],
            policy_version: self.version.clone(),
            errors: vec![reason],
            quorum: None,
        }
    }

    /// The decision for `req` at `now`, evaluating only the policies the index selects.
    pub fn decide(&self, store: &EntityStore, req: &PolicyRequest, now: DateTime<Utc>) -> Decision {
        match self.run(store, req, now) {
            Ok((decision, ..)) => decision,
            Err(reason) => self.denied(reason),
        }
    }

    /// The indexed evaluation: the decision, the candidates, the first pass, the approval pass.
    fn run(
        &self,
        store: &EntityStore,
        req: &PolicyRequest,
        now: DateTime<Utc>,
    ) -> Result<(Decision, Vec<u32>, Pass, Option<Pass>), String> {
        let p = self.prepare(store, req)?;
        let kind = req.resource.kind();
        let v = self.vocab()?;
        // The closures: each entity, then its ancestors — in the registry, a tool's and a
        // dataset's upstream (`store.rs`); by the request's names, without reading the entities.
        let principal_closure = [Key {
            ty: &v.agent,
            eid: req.principal.as_str(),
        }];
        let key = |ty, eid| Key { ty, eid };
        let upstream_key = p.upstream_facts.map(|u| key(&v.upstream, u.name.as_str()));
        let resource_closure: [Option<Key<'_>>; 2] = match &req.resource {
            ResourceRef::Upstream(n) => [Some(key(&v.upstream, n.as_str())), None],
            ResourceRef::Tool(id) => [Some(key(&v.tool, id)), upstream_key],
            ResourceRef::Dataset(id) => [Some(key(&v.dataset, id)), upstream_key],
            ResourceRef::Agent(n) => [Some(key(&v.agent, n.as_str())), None],
            ResourceRef::Task(id) => [Some(key(&v.task, id)), None],
            ResourceRef::McpResource(id) => [Some(key(&v.mcp_resource, id)), upstream_key],
            ResourceRef::Prompt(id) => [Some(key(&v.prompt, id)), upstream_key],
        };
        let candidates = self.index.candidates(
            principal_closure.iter(),
            resource_closure.iter().flatten(),
            req.action as usize,
            kind,
        );
        let mentions_approval = candidates.iter().any(|i| {
            self.hot_entry(*i, kind)
                .is_some_and(|h| h.flags & (hot::APPROVAL | hot::READS_APPROVAL) != 0)
        });
        // The argument tags the candidates read, flattened on first use.
        let tags = OnceCell::new();
        let make_tags = || -> Tags {
            let mut out = Vec::new();
            let Some(args) = &req.context.args else {
                return out;
            };
            let mut keys = TagUse::None;
            for i in &candidates {
                if let Some(variant) = self.variant(*i, kind)
                    && variant.ctx.attrs & attr::ARGS != 0
                {
                    keys.merge(&variant.ctx.tags);
                }
            }
            let keys: Option<&[SmolStr]> = match &keys {
                TagUse::All => None,
                TagUse::Keys(k) => Some(k),
                TagUse::None => Some(&[]),
            };
            flatten_args(args, &mut String::new(), keys, &mut out, &mut String::new());
            out
        };
        let env = Env {
            principal: p.principal_entity.uid(),
            action: p.action,
            resource: p.resource_entity.map_or(&**p.resource, |e| e.uid()),
            entities: [
                p.slice[0].map(|e| &**e),
                p.slice[1].map(|e| &**e),
                p.slice[2].map(|e| &**e),
                p.slice[3].map(|e| &**e),
                p.built.as_deref(),
            ],
            ctx: &req.context,
            upstream: p.upstream_entity.map(Entity::uid),
            principal_facts: p.principal_facts,
            resource_facts: p.resource_facts,
            upstream_facts: p.upstream_facts,
            has_tool_args: p.tool_args.is_some(),
            agent_env: p.agent_env.as_str(),
            resource_env: p.resource_env.as_str(),
            sensitivity: p.sensitivity.as_str(),
            sensitivity_level: sensitivity_level(p.sensitivity),
            hour: i64::from(now.hour()),
            weekday: i64::from(now.weekday().number_from_monday()),
            unix: now.timestamp(),
            granted: p.granted,
            approvers: i64::from(p.approvers),
            upstream_type: &v.upstream,
            agent_type: &v.agent,
            human_type: &v.human,
            tags: &tags,
            make_tags: &make_tags,
        };
        let q = Question {
            p: &p,
            req,
            now,
            kind,
        };
        let first = self.pass(&q, &env, &candidates, false)?;
        let (decision, second, first) = self.combine(&p, req, first, mentions_approval, |first| {
            self.approval_pass(&q, &env, &candidates, first)
        })?;
        Ok((decision, candidates, first, second))
    }

    /// The decision with how it was reached: which policies the index selected, which matched, which
    /// would match with approval, and the errors.
    pub fn explain(&self, store: &EntityStore, req: &PolicyRequest, now: DateTime<Utc>) -> Explanation {
        let (decision, candidates, first, second) = match self.run(store, req, now) {
            Ok(r) => r,
            Err(reason) => return Explanation::from_decision(self.denied(reason), self.len()),
        };
        let cite = |ids: &[u32]| -> Vec<PolicyMatch> {
            ids.iter()
                .filter_map(|i| self.policies.get(*i as usize))
                .map(|p| PolicyMatch {
                    id: p.id.clone(),
                    effect: match p.effect {
                        Effect::Permit => "permit",
                        Effect::Forbid => "forbid",
                    },
                    approval_quorum: p.approval,
                    file: p.file.clone(),
                    line: p.line,
                })
                .collect()
        };
        let mut matched = cite(&first.permits);
        matched.extend(cite(&first.forbids));
        let with_approval = second
            .map(|s| {
                let mut m = cite(&s.permits);
                m.retain(|x| !matched.iter().any(|y| y.id == x.id));
                m
            })
            .unwrap_or_default();
        Explanation {
            considered: candidates
                .iter()
                .filter_map(|i| self.policies.get(*i as usize).map(|p| p.id.clone()))
                .collect(),
            total_policies: self.len(),
            matched,
            with_approval,
            errors: decision.errors.clone(),
            decision,
        }
    }

    /// The request fully built, as the reference path sees it: every context attribute, every
    /// argument tag; the entities of the request (the slice, with the arguments entity).
    pub(crate) fn build_full<'a>(
        &'a self,
        store: &'a EntityStore,
        req: &PolicyRequest,
        now: DateTime<Utc>,
    ) -> Result<(Prepared<'a>, ContextMap, Option<Arc<Entity>>), String> {
        let p = self.prepare(store, req)?;
        let (context, args) = self.context(&p, req, now, &CtxUse::everything())?;
        Ok((p, context, args))
    }

    /// The decision by plain Cedar: `Authorizer::is_authorized` over the *whole* policy set, on the
    /// same request and entities with the full context (every attribute, every argument tag), both
    /// passes whenever the set has a policy that can need approval, combined by the same rules. The
    /// reference the indexed path is tested against, and the "raw Cedar" of the benchmarks. With
    /// `all_entities`, the whole registry is given to Cedar instead of the request's slice.
    pub fn decide_unindexed(
        &self,
        store: &EntityStore,
        req: &PolicyRequest,
        now: DateTime<Utc>,
        all_entities: bool,
    ) -> Decision {
        let (p, context, args) = match self.build_full(store, req, now) {
            Ok(built) => built,
            Err(reason) => return self.denied(reason),
        };
        let entities = if all_entities {
            let mut all: Vec<Arc<Entity>> = store.all_entities().cloned().collect();
            all.extend(p.built.iter().chain(args.as_ref()).cloned());
            all.extend(self.action_entities.iter().cloned());
            Entities::new()
                .add_entities(
                    all,
                    None::<&NoEntitiesSchema>,
                    TCComputation::AssumeAlreadyComputed,
                    Extensions::all_available(),
                )
                .map_err(|e| format!("internal: entities: {e}"))
        } else {
            Self::entities(&p, args.as_ref())
        };
        let entities = match entities {
            Ok(e) => cedar_policy::Entities::from(e),
            Err(reason) => return self.denied(reason),
        };
        let authorizer = Authorizer::new();
        let pass = |ctx: ContextMap| -> Pass {
            let r = cedar_policy::Request::from(Self::request(&p, ctx));
            let resp = authorizer.is_authorized(&r, &self.set, &entities);
            let ids: Vec<u32> = resp
                .diagnostics()
                .reason()
                .filter_map(|id| self.by_id.get(id.as_ref() as &str).copied())
                .collect();
            let errors = resp
                .diagnostics()
                .errors()
                .map(|e| match e {
                    cedar_policy::AuthorizationError::PolicyEvaluationError(pe) => {
                        format!("{}: {}", pe.policy_id(), pe.inner())
                    }
                })
                .collect();
            // Cedar reports the satisfied forbids on a deny and the satisfied permits on an allow.
            match resp.decision() {
                cedar_policy::Decision::Allow => Pass {
                    permits: ids,
                    forbids: Vec::new(),
                    errors,
                },
                cedar_policy::Decision::Deny => Pass {
                    permits: Vec::new(),
                    forbids: ids,
                    errors,
                },
            }
        };
        let first = pass(context.clone());
        match self.combine(&p, req, first, self.any_mentions_approval, |_| {
            Ok(pass(Self::approved_context(&context)))
        }) {
            Ok((decision, _, _)) => decision,
            Err(reason) => self.denied(reason),
        }
    }
}

/// A policy that matched, in an [`Explanation`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PolicyMatch {
    pub id: String,
    /// `permit` or `forbid`.
    pub effect: &'static str,
    /// For `@approval` permits, the quorum.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approval_quorum: Option<u8>,
    pub file: String,
    pub line: usize,
}

/// How a decision was reached.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Explanation {
    pub decision: Decision,
    /// The policies the index selected and that were evaluated, in file order.
    pub considered: Vec<String>,
    /// Policies in the set.
    pub total_policies: usize,
    /// The policies whose condition held (permits, then forbids). An `@approval` permit is listed
    /// here when it held, even if the approval it needs is missing.
    pub matched: Vec<PolicyMatch>,
    /// Further permits that would hold if the action were approved.
    pub with_approval: Vec<PolicyMatch>,
    pub errors: Vec<String>,
}

impl Explanation {
    fn from_decision(decision: Decision, total: usize) -> Self {
        Self {
            errors: decision.errors.clone(),
            decision,
            considered: Vec::new(),
            total_policies: total,
            matched: Vec::new(),
            with_approval: Vec::new(),
        }
    }
}

/// The active decision and, when a candidate set runs in shadow mode, its decision.
#[derive(Clone, Debug, PartialEq)]
pub struct ShadowedDecision {
    pub active: Decision,
    pub shadow: Option<Decision>,
}

impl ShadowedDecision {
    /// Whether the shadow set decided differently (outcome or quorum).
    pub fn differs(&self) -> bool {
        self.shadow
            .as_ref()
            .is_some_and(|s| !same_decision(&self.active, s))
    }
}

/// Whether two decisions agree on what happens (outcome and quorum); reasons and versions may differ.
pub fn same_decision(a: &Decision, b: &Decision) -> bool {
    a.outcome == b.outcome && a.quorum == b.quorum
}

/// Evaluates a candidate set beside the active one: both decisions, for the server to count and
/// record the differences (`ShadowedDecision::differs`).
pub fn shadow_compare(
    active: &CompiledPolicies,
    candidate: &CompiledPolicies,
    store: &EntityStore,
    req: &PolicyRequest,
    now: DateTime<Utc>,
) -> ShadowedDecision {
    ShadowedDecision {
        active: active.decide(store, req, now),
        shadow: Some(candidate.decide(store, req, now)),
    }
}

/// The active policy set and an optional shadow set, swapped atomically. Decisions load the current
/// sets without locking; activation and shadowing store new `Arc`s.
#[derive(Debug)]
pub struct PolicyEngine {
    active: arc_swap::ArcSwap<CompiledPolicies>,
    shadow: ArcSwapOption<CompiledPolicies>,
}

impl PolicyEngine {
    pub fn new(active: Arc<CompiledPolicies>) -> Self {
        Self {
            active: arc_swap::ArcSwap::new(active),
            shadow: ArcSwapOption::empty(),
        }
    }

    /// The active set.
    pub fn active(&self) -> Arc<CompiledPolicies> {
        self.active.load_full()
    }

    /// The shadow set, if any.
    pub fn shadow(&self) -> Option<Arc<CompiledPolicies>> {
        self.shadow.load_full()
    }

    /// Makes `set` the active set; returns the previous one.
    pub fn activate(&self, set: Arc<CompiledPolicies>) -> Arc<CompiledPolicies> {
        self.active.swap(set)
    }

    /// Runs `set` in shadow mode (or stops shadowing with `None`).
    pub fn set_shadow(&self, set: Option<Arc<CompiledPolicies>>) {
        self.shadow.store(set);
    }

    /// Decides with the active set, and with the shadow set when there is one.
    pub fn decide(&self, store: &EntityStore, req: &PolicyRequest, now: DateTime<Utc>) -> ShadowedDecision {
        let active = self.active.load();
        let shadow = self.shadow.load();
        ShadowedDecision {
            active: active.decide(store, req, now),
            shadow: shadow.as_ref().map(|s| s.decide(store, req, now)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::{Action, Approval, McpContext, McpKind, PolicyContext, Risk, TaskContext};
    use crate::store::{AgentFacts, DatasetFacts, ToolClass, ToolFacts, UpstreamFacts};
    use crate::{PolicySource, ToolArgTypes, compile, compile_with_tools};
    use serde_json::json;
    use warden_core::{AgentName, AgentState, Email, Model, UpstreamKind, UpstreamName};

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2025-06-04T13:30:00Z")
            .expect("time")
            .with_timezone(&Utc)
    }

    fn store() -> EntityStore {
        let mut s = EntityStore::new();
        for (name, env) in [
            ("bot", Environment::Production),
            ("proto", Environment::Prototype),
        ] {
            s.upsert_agent(AgentFacts {
                name: AgentName::parse(name).expect("name"),
                environment: env,
                model: Model::parse("p/m@1").expect("model"),
                state: AgentState::Active,
                owners: vec![Email::parse("o@example.com").expect("email")],
                allowed_upstreams: vec![UpstreamName::parse("crm").expect("name")],
            })
            .expect("agent");
        }
        s.upsert_upstream(UpstreamFacts {
            name: UpstreamName::parse("crm").expect("name"),
            kind: UpstreamKind::Mcp,
            environment: Environment::Production,
            sensitivity: Sensitivity::Confidential,
            owner: Email::parse("o@example.com").expect("email"),
        })
        .expect("upstream");
        s.upsert_tool(ToolFacts {
            upstream: UpstreamName::parse("crm").expect("name"),
            name: "refund".into(),
            class: ToolClass::Write,
        })
        .expect("tool");
        s.upsert_dataset(DatasetFacts {
            upstream: UpstreamName::parse("crm").expect("name"),
            name: "people".into(),
            sensitivity: Sensitivity::Regulated,
        })
        .expect("dataset");
        s
    }

    fn req(action: Action, resource: ResourceRef) -> PolicyRequest {
        PolicyRequest {
            principal: AgentName::parse("bot").expect("name"),
            action,
            resource,
            context: PolicyContext {
                task: Some(TaskContext {
                    id: "t1".into(),
                    purpose: "p".into(),
                    task_type: "t".into(),
                    upstreams: vec![UpstreamName::parse("crm").expect("name")],
                    tools: vec!["refund".into()],
                    datasets: vec!["people".into()],
                    resources: vec!["file:///tmp/*".into()],
                    prompts: vec!["summary".into()],
                    depth: 1,
                    chain: vec![AgentName::parse("proto").expect("name")],
                }),
                approval: Approval::default(),
                args: Some(json!({"amount": 12, "note": "x", "items": [{"id": "a"}]})),
                risk: Risk::default(),
                mcp: Some(McpContext {
                    method: "tools/call".into(),
                    kind: McpKind::Request,
                }),
            },
        }
    }

    fn compiled(text: &str) -> CompiledPolicies {
        compile(&PolicySource::single("p.cedar", text).expect("src")).expect("compiles")
    }

    /// The entities and context the engine builds conform to the schema, for every kind of resource.
    #[test]
    fn built_requests_conform_to_the_schema() {
        let mut tools = ToolArgTypes::new();
        tools
            .add_json_schema(
                "crm/refund",
                &json!({"type": "object", "required": ["amount"], "properties": {
                    "amount": {"type": "integer"}, "items": {"type": "array", "items": {
                        "type": "object", "properties": {"id": {"type": "string"}}}}}}),
            )
            .expect("schema");
        let c = compile_with_tools(&PolicySource::from_files([]).expect("src"), &tools).expect("compiles");
        let s = store();
        let bot = AgentName::parse("bot").expect("name");
        let crm = UpstreamName::parse("crm").expect("name");
        for (action, resource) in [
            (Action::Read, ResourceRef::Upstream(crm.clone())),
            (Action::Write, ResourceRef::tool(&crm, "refund")),
            (Action::Read, ResourceRef::dataset(&crm, "people")),
            (Action::Admin, ResourceRef::Agent(bot.clone())),
            (Action::TaskStart, ResourceRef::Task("t1".into())),
            (Action::TaskDelegate, ResourceRef::Task("t2".into())),
            (Action::Read, ResourceRef::mcp_resource(&crm, "file:///tmp/a")),
            (Action::Write, ResourceRef::mcp_resource(&crm, "ui://x")),
            (Action::Read, ResourceRef::prompt(&crm, "summary")),
        ] {
            let r = req(action, resource.clone());
            assert!(context_has_mcp(&c, &s, &r), "{resource}");
            let (p, context, args) = c.build_full(&s, &r, now()).expect("prepares");
            let slice: Vec<Arc<Entity>> = p.entities().cloned().chain(args).collect();
            assert!(context.contains_key("args"));
            assert_eq!(
                context.contains_key("tool_args"),
                matches!(resource, ResourceRef::Tool(_))
            );
            let context = cedar_policy::Context::from(Context::Value(context.clone()));
            cedar_policy::Request::new(
                cedar_policy::EntityUid::from((**p.principal).clone()),
                cedar_policy::EntityUid::from((**p.action).clone()),
                cedar_policy::EntityUid::from((**p.resource).clone()),
                context,
                Some(c.schema()),
            )
            .unwrap_or_else(|e| panic!("{resource}: context does not conform: {e}"));
            let entities: Vec<cedar_policy::Entity> = slice
                .iter()
                .filter(|e| !e.uid().entity_type().is_action())
                .map(|e| cedar_policy::Entity::from((**e).clone()))
                .collect();
            cedar_policy::Entities::from_entities(entities, Some(c.schema()))
                .unwrap_or_else(|e| panic!("{resource}: entities do not conform: {e}"));
        }
    }

    fn context_has_mcp(c: &CompiledPolicies, s: &EntityStore, r: &PolicyRequest) -> bool {
        c.build_full(s, r, now())
            .is_ok_and(|(_, context, _)| context.contains_key("mcp"))
    }

    /// MCP resources and prompts are built per request under their upstream; `declared` comes from
    /// the task's patterns (never from the caller); `context.mcp` is there for policies; decisions
    /// equal plain Cedar's.
    #[test]
    fn mcp_resources_prompts_and_context() {
        let c = compiled(
            r#"
@id("declared-resources")
permit(principal, action == Warden::Action::"read", resource is Warden::McpResource in Warden::Upstream::"crm")
when { resource.declared && context has task && context.task.upstreams.contains(resource.upstream) };
@id("declared-prompts")
permit(principal, action == Warden::Action::"read", resource is Warden::Prompt)
when { context has task && context.task.prompts.contains(resource.name) };
@id("no-log-levels")
forbid(principal, action, resource)
when { context has mcp && context.mcp.method == "logging/setLevel" };
@id("uri-like")
forbid(principal, action, resource is Warden::McpResource)
when { resource.uri like "*shadow*" };
"#,
        );
        let s = store();
        let crm = UpstreamName::parse("crm").expect("name");
        let decide = |r: &PolicyRequest| {
            let d = c.decide(&s, r, now());
            assert_eq!(d, c.decide_unindexed(&s, r, now(), false), "{r:?}");
            assert_eq!(d, c.decide_unindexed(&s, r, now(), true), "{r:?}");
            assert_eq!(c.explain(&s, r, now()).decision, d);
            d
        };
        let mut r = req(Action::Read, ResourceRef::mcp_resource(&crm, "file:///tmp/a/b"));
        let d = decide(&r);
        assert_eq!(d.reasons, ["declared-resources (permit)"], "{d:?}");
        let e = c.explain(&s, &r, now());
        assert_eq!(e.considered, ["declared-resources", "no-log-levels", "uri-like"]);
        // Not among the task's patterns.
        r.resource = ResourceRef::mcp_resource(&crm, "file:///etc/passwd");
        assert_eq!(decide(&r).outcome, Outcome::Deny);
        // A `*` pattern covers everything, but a forbid still applies.
        r.context.task.as_mut().expect("task").resources = vec!["*".into()];
        assert_eq!(decide(&r).outcome, Outcome::Allow);
        r.resource = ResourceRef::mcp_resource(&crm, "file:///etc/shadow");
        assert_eq!(decide(&r).reasons, ["uri-like (forbid)"]);
        // Without a task nothing is declared.
        r.resource = ResourceRef::mcp_resource(&crm, "file:///tmp/a");
        r.context.task = None;
        assert_eq!(decide(&r).outcome, Outcome::Deny);
        // Prompts by name.
        let mut r = req(Action::Read, ResourceRef::prompt(&crm, "summary"));
        assert_eq!(decide(&r).reasons, ["declared-prompts (permit)"]);
        r.resource = ResourceRef::prompt(&crm, "other");
        assert_eq!(decide(&r).outcome, Outcome::Deny);
        // The MCP method.
        let mut r = req(Action::Read, ResourceRef::prompt(&crm, "summary"));
        r.context.mcp = Some(McpContext {
            method: "logging/setLevel".into(),
            kind: McpKind::Request,
        });
        assert_eq!(decide(&r).reasons, ["no-log-levels (forbid)"]);
        r.context.mcp = Some(McpContext {
            method: "x".repeat(129),
            kind: McpKind::Notification,
        });
        assert_eq!(
            decide(&r).reasons,
            ["limit-exceeded: the MCP method is 129 bytes long; the limit is 128"]
        );
        // Unknown upstreams and malformed ids.
        for (resource, want) in [
            (
                ResourceRef::McpResource("erp/file:///a".into()),
                "unknown-resource: upstream `erp` of MCP resource `erp/file:///a` is not registered",
            ),
            (
                ResourceRef::Prompt("crm".into()),
                "invalid-request: prompt `crm` is not `<upstream>/<name>`",
            ),
        ] {
            assert_eq!(decide(&req(Action::Read, resource)).reasons, [want]);
        }
        assert_eq!(
            decide(&req(Action::TaskStart, ResourceRef::prompt(&crm, "summary"))).reasons,
            ["invalid-request: action `task.start` does not apply to prompt `crm/summary`"]
        );
    }

    #[test]
    fn resource_refs_serialize_and_name_their_upstream() {
        let crm = UpstreamName::parse("crm").expect("name");
        let r = ResourceRef::mcp_resource(&crm, "file:///tmp/a");
        assert_eq!(
            serde_json::to_value(&r).expect("ser"),
            json!({"mcp_resource": "crm/file:///tmp/a"})
        );
        assert_eq!(r.upstream_name(), Some("crm"));
        assert_eq!(r.to_string(), "MCP resource `crm/file:///tmp/a`");
        let p = ResourceRef::prompt(&crm, "sum/mary");
        assert_eq!(
            serde_json::to_value(&p).expect("ser"),
            json!({"prompt": "crm/sum/mary"})
        );
        assert_eq!(p.upstream_name(), Some("crm"));
        assert_eq!(p.to_string(), "prompt `crm/sum/mary`");
        let m: McpContext =
            serde_json::from_value(json!({"method": "notifications/initialized", "kind": "notification"}))
                .expect("de");
        assert_eq!(m.kind, McpKind::Notification);
    }

    /// Flattening only some tags yields exactly those tags of the full flattening, including
    /// dotted keys, empty keys, arrays and a later key that collides with an earlier nested path.
    #[test]
    fn targeted_flattening_equals_full_flattening() {
        let args = json!({
            "a": {"b": "nested", "": {"c": 1}},
            "a.b": "dotted wins",
            "": {"x": true, "": null},
            "items": [{"id": "a"}, {"id": 2.5}, []],
            "k": "v",
            "long_key_name_beyond_twenty_three_bytes": {"and_another_long_segment": "z"}
        });
        let full = |keys: Option<&[SmolStr]>| {
            let mut out = Vec::new();
            flatten_args(&args, &mut String::new(), keys, &mut out, &mut String::new());
            let map: BTreeMap<SmolStr, PartialValue> = out.into_iter().collect();
            map
        };
        let all = full(None);
        assert_eq!(all.get("a.b"), Some(&PartialValue::from(lit("dotted wins"))));
        assert_eq!(all.get("a..c"), Some(&PartialValue::from(lit("1"))));
        assert_eq!(all.get("items.1.id"), Some(&PartialValue::from(lit("2.5"))));
        let mut keys: Vec<SmolStr> = all.keys().cloned().collect();
        keys.extend(["a".into(), "items.2".into(), "missing".into(), "items.0".into()]);
        for n in 0..keys.len() {
            for start in 0..keys.len() {
                let mut wanted: Vec<SmolStr> = keys.iter().cycle().skip(start).take(n).cloned().collect();
                wanted.sort();
                wanted.dedup();
                let want: BTreeMap<SmolStr, PartialValue> = all
                    .iter()
                    .filter(|(k, _)| wanted.contains(k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                assert_eq!(full(Some(&wanted)), want, "{wanted:?}");
            }
        }
    }

    #[test]
    fn three_valued_decisions() {
        let c = compiled(
            r#"
@id("w") @approval("required") @quorum("2")
permit(principal, action == Warden::Action::"write", resource);
@id("w1") @approval("required")
permit(principal, action == Warden::Action::"write", resource is Warden::Tool);
@id("unless-approved")
forbid(principal, action == Warden::Action::"destructive", resource) unless { context.approval.granted };
@id("d")
permit(principal, action == Warden::Action::"destructive", resource);
"#,
        );
        let s = store();
        let crm = UpstreamName::parse("crm").expect("name");
        let mut r = req(Action::Write, ResourceRef::tool(&crm, "refund"));
        let d = c.decide(&s, &r, now());
        assert_eq!((d.outcome, d.quorum), (Outcome::NeedsApproval, Some(2)), "{d:?}");
        assert_eq!(
            d.reasons,
            [
                "w (permit, approval, quorum 2)",
                "w1 (permit, approval, quorum 1)"
            ]
        );
        r.context.approval = Approval {
            granted: true,
            approvers: 1,
        };
        let d = c.decide(&s, &r, now());
        assert_eq!(d.outcome, Outcome::Allow, "{d:?}");
        assert_eq!(d.reasons, ["w1 (permit, approval, quorum 1)"]);
        // A forbid lifted by approval also yields needs_approval (quorum 1: no annotation).
        let mut r = req(Action::Destructive, ResourceRef::tool(&crm, "refund"));
        let d = c.decide(&s, &r, now());
        assert_eq!((d.outcome, d.quorum), (Outcome::NeedsApproval, Some(1)), "{d:?}");
        r.context.approval.granted = true;
        assert_eq!(c.decide(&s, &r, now()).outcome, Outcome::Allow);
        assert_eq!(c.decide(&s, &r, now()), c.decide_unindexed(&s, &r, now(), true));
    }

    #[test]
    fn errors_and_bad_requests_deny() {
        let c = compiled(
            r#"
@id("overflow")
permit(principal, action, resource) when { context.time.unix * 100000000000 > 0 };
@id("all")
permit(principal, action, resource);
"#,
        );
        let s = store();
        let crm = UpstreamName::parse("crm").expect("name");
        let d = c.decide(&s, &req(Action::Read, ResourceRef::Upstream(crm.clone())), now());
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.errors[0].starts_with("overflow: "), "{d:?}");
        assert!(
            d.reasons.iter().any(|r| r.starts_with("evaluation-error")),
            "{d:?}"
        );
        assert_eq!(
            d,
            c.decide_unindexed(
                &s,
                &req(Action::Read, ResourceRef::Upstream(crm.clone())),
                now(),
                false
            )
        );

        let c = compiled("@id(\"all\") permit(principal, action, resource);");
        for (r, want) in [
            (
                PolicyRequest {
                    principal: AgentName::parse("ghost").expect("n"),
                    ..req(Action::Read, ResourceRef::Upstream(crm.clone()))
                },
                "unknown-agent: agent `ghost` is not registered",
            ),
            (
                req(Action::Read, ResourceRef::Tool("crm/nope".into())),
                "unknown-resource: tool `crm/nope` is not registered",
            ),
            (
                req(Action::Read, ResourceRef::Task("t".into())),
                "invalid-request: action `read` does not apply to task `t`",
            ),
            (
                {
                    let mut r = req(Action::Read, ResourceRef::Upstream(crm.clone()));
                    r.context.args = Some(json!({"x": "a".repeat(70_000)}));
                    r
                },
                "limit-exceeded: tool arguments are larger than 65536 bytes",
            ),
        ] {
            let d = c.decide(&s, &r, now());
            assert_eq!(d.outcome, Outcome::Deny);
            assert_eq!(d.reasons, [want]);
            assert_eq!(d.policy_version, c.version());
        }
    }

    #[test]
    fn arguments_in_both_views() {
        let mut tools = ToolArgTypes::new();
        tools
            .add_json_schema(
                "crm/refund",
                &json!({"type": "object", "required": ["amount"], "properties": {"amount": {"type": "integer"}}}),
            )
            .expect("schema");
        let src = PolicySource::single(
            "p.cedar",
            r#"
@id("small-refunds")
permit(principal, action == Warden::Action::"write", resource == Warden::Tool::"crm/refund")
when { context has tool_args && context.tool_args has "crm/refund" && context.tool_args["crm/refund"].amount <= 100 };
@id("no-notes")
forbid(principal, action, resource) when { context has args && context.args.hasTag("items.0.id") && context.args.getTag("items.0.id") == "evil" };
"#,
        )
        .expect("src");
        let c = compile_with_tools(&src, &tools).expect("compiles");
        let s = store();
        let crm = UpstreamName::parse("crm").expect("name");
        let mut r = req(Action::Write, ResourceRef::tool(&crm, "refund"));
        assert_eq!(c.decide(&s, &r, now()).outcome, Outcome::Allow);
        r.context.args = Some(json!({"amount": 500}));
        assert_eq!(c.decide(&s, &r, now()).outcome, Outcome::Deny);
        r.context.args = Some(json!({"amount": 5, "items": [{"id": "evil"}]}));
        assert_eq!(c.decide(&s, &r, now()).reasons, ["no-notes (forbid)"]);
        r.context.args = Some(json!({"amount": "5"}));
        let d = c.decide(&s, &r, now());
        assert_eq!(
            d.reasons,
            ["invalid-arguments: arguments of tool `crm/refund`: `amount` must be an integer"]
        );
        // Without the typed view in the schema, the validator warns that the policy can never apply.
        let c = compile(&src).expect("compiles");
        assert!(
            c.warnings()[0].message.contains("policy is impossible"),
            "{:?}",
            c.warnings()
        );
    }

    #[test]
    fn explain_shows_the_index_at_work() {
        let c = compiled(
            r#"
@id("bot-reads") permit(principal == Warden::Agent::"bot", action == Warden::Action::"read", resource);
@id("proto-reads") permit(principal == Warden::Agent::"proto", action == Warden::Action::"read", resource);
@id("crm-writes") @approval("required") permit(principal, action == Warden::Action::"write", resource in Warden::Upstream::"crm");
@id("other-writes") permit(principal, action, resource in Warden::Upstream::"other");
@id("no-admin") forbid(principal, action == Warden::Action::"admin", resource);
@id("always") forbid(principal, action, resource) when { context.risk.score > 90 };
"#,
        );
        let stats = c.index_stats();
        assert_eq!(
            (
                stats.always,
                stats.by_principal,
                stats.by_resource,
                stats.by_action
            ),
            (1, 2, 2, 1)
        );
        let s = store();
        let crm = UpstreamName::parse("crm").expect("name");
        let e = c.explain(&s, &req(Action::Write, ResourceRef::tool(&crm, "refund")), now());
        assert_eq!(e.considered, ["crm-writes", "always"]);
        assert_eq!(e.decision.outcome, Outcome::NeedsApproval);
        assert_eq!(e.matched.len(), 1);
        assert_eq!(e.matched[0].approval_quorum, Some(1));
        let e = c.explain(&s, &req(Action::Read, ResourceRef::Upstream(crm)), now());
        assert_eq!(e.considered, ["bot-reads", "always"]);
        assert_eq!(e.decision.reasons, ["bot-reads (permit)"]);
        assert_eq!(e.total_policies, 6);
    }

    #[test]
    fn engine_swaps_and_shadows() {
        let allow = Arc::new(compiled("@id(\"all\") permit(principal, action, resource);"));
        let deny = Arc::new(compiled("@id(\"none\") forbid(principal, action, resource);"));
        let engine = PolicyEngine::new(allow.clone());
        let s = store();
        let r = req(
            Action::Read,
            ResourceRef::Upstream(UpstreamName::parse("crm").expect("n")),
        );
        let d = engine.decide(&s, &r, now());
        assert_eq!(
            (d.active.outcome, d.shadow.is_none(), d.differs()),
            (Outcome::Allow, true, false)
        );
        engine.set_shadow(Some(deny.clone()));
        let d = engine.decide(&s, &r, now());
        assert!(d.differs());
        assert_eq!(d.shadow.as_ref().map(|x| x.outcome), Some(Outcome::Deny));
        assert!(shadow_compare(&allow, &deny, &s, &r, now()).differs());
        let old = engine.activate(deny.clone());
        assert_eq!(old.version(), allow.version());
        assert_eq!(engine.decide(&s, &r, now()).active.outcome, Outcome::Deny);
        assert_eq!(engine.active().version(), deny.version());
    }
}
