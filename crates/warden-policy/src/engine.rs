//! Decisions: from a [`PolicyRequest`] and the registry to an `allow`, `deny` or `needs_approval`
//! [`Decision`], with reasons, errors, the policy version and the approval quorum.
//!
//! **The request.** The engine builds the Cedar request itself: the principal and resource entities
//! from the [`EntityStore`], the context from the request and the registry (environments,
//! sensitivity, the resource's upstream), so a context never disagrees with the schema. Anything that
//! cannot be built — an unknown agent or resource, an action that does not apply to the resource,
//! arguments over the limits or not matching the tool's declared type — is a deny naming the problem.
//!
//! **Evaluation.** Only the policies the [index](crate::index) selects are evaluated, each with one
//! Cedar evaluator (`cedar-policy-core`'s `Evaluator`, the same one `Authorizer::is_authorized`
//! uses) over a precomputed condition, against an `Entities` holding just the entities the request
//! touches. [`CompiledPolicies::decide_unindexed`] does the same with plain `Authorizer::is_authorized`
//! over the full set; the two agree on every decision (property-tested).
//!
//! **Three values.** Let *counted permits* be the satisfied permits, where an `@approval("required")`
//! permit counts only if `context.approval.granted` and `approvers >= @quorum`:
//! 1. any evaluation error → `deny` (an error never allows), errors listed;
//! 2. no satisfied forbid and at least one counted permit → `allow`, reasons = those permits;
//! 3. otherwise, if the request would be allowed with `approval = { granted: true, approvers: max }`
//!    (evaluated again, only when some candidate policy can depend on approval) → `needs_approval`,
//!    quorum = the highest `@quorum` among the approval permits that would allow it (1 if none);
//! 4. otherwise `deny`, reasons = the satisfied forbids, or `default-deny` when nothing permits.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use arc_swap::ArcSwapOption;
use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;
use smol_str::SmolStr;

use cedar_policy::{Authorizer, Effect};
use cedar_policy_core::ast::{
    Context, Entity, EntityUID, EntityUIDEntry, Literal, PartialValue, Request, Value, ValueKind,
};
use cedar_policy_core::entities::{Entities, NoEntitiesSchema, TCComputation};
use cedar_policy_core::evaluator::Evaluator;
use cedar_policy_core::extensions::Extensions;
use warden_core::{Decision, Environment, Outcome, Sensitivity};

use crate::compile::CompiledPolicies;
use crate::request::{Action, ArgLimits, PolicyRequest, ResourceRef};
use crate::store::{EntityStore, sensitivity_level};
use crate::vocab::{Vocab, vocab};

/// A request turned into Cedar terms.
pub(crate) struct Prepared {
    principal: EntityUID,
    action: EntityUID,
    resource: EntityUID,
    context: Arc<BTreeMap<SmolStr, Value>>,
    /// The entities the request touches (principal, resource, its upstream, task, arguments, action).
    slice: Vec<Arc<Entity>>,
    /// Built for this request (task, arguments): not in the store.
    extra: Vec<Arc<Entity>>,
    principal_closure: Vec<EntityUID>,
    resource_closure: Vec<EntityUID>,
    granted: bool,
    approvers: u8,
}

/// What one evaluation pass found.
#[derive(Debug, Default)]
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

fn flatten_args(json: &serde_json::Value, path: &mut String, out: &mut BTreeMap<SmolStr, PartialValue>) {
    let push = |path: &mut String, key: &str, f: &mut dyn FnMut(&mut String)| {
        let len = path.len();
        if !path.is_empty() {
            path.push('.');
        }
        path.push_str(key);
        f(path);
        path.truncate(len);
    };
    match json {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                push(path, k, &mut |p| flatten_args(v, p, out));
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                let key = i.to_string();
                push(path, &key, &mut |p| flatten_args(v, p, out));
            }
        }
        serde_json::Value::String(s) => {
            out.insert(SmolStr::new(path.as_str()), PartialValue::from(lit(s.as_str())));
        }
        other => {
            out.insert(
                SmolStr::new(path.as_str()),
                PartialValue::from(lit(other.to_string())),
            );
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

impl CompiledPolicies {
    fn vocab(&self) -> Result<&'static Vocab, String> {
        vocab().map_err(|e| format!("internal: {e}"))
    }

    /// Adds the generic view of the tool arguments (`context.args`, an `Args` entity with one tag per
    /// leaf). Built only when a policy that may apply reads it: flattening 4 KB of JSON costs more
    /// than the rest of a decision, and a policy that cannot apply cannot observe it.
    fn add_args_view(p: &mut Prepared, req: &PolicyRequest) -> Result<(), String> {
        let Some(args) = &req.context.args else {
            return Ok(());
        };
        let v = vocab().map_err(|e| format!("internal: {e}"))?;
        let mut tags = BTreeMap::new();
        flatten_args(args, &mut String::new(), &mut tags);
        let uid = v.uid(&v.args, "call");
        let e = Arc::new(Entity::new_with_attr_partial_value(
            uid.clone(),
            std::iter::empty(),
            HashSet::new(),
            HashSet::new(),
            tags,
        ));
        p.slice.push(e.clone());
        p.extra.push(e);
        Arc::make_mut(&mut p.context).insert(SmolStr::new_static("args"), lit(uid));
        Ok(())
    }

    /// Builds the Cedar request (without the generic arguments view). `Err` is a reason to deny.
    pub(crate) fn prepare(
        &self,
        store: &EntityStore,
        req: &PolicyRequest,
        now: DateTime<Utc>,
    ) -> Result<Prepared, String> {
        let v = self.vocab()?;
        let ctx = &req.context;
        let agent = store
            .agents
            .get(req.principal.as_str())
            .ok_or_else(|| format!("unknown-agent: agent `{}` is not registered", req.principal))?;
        let principal = agent.entity.uid().clone();
        let mut slice: Vec<Arc<Entity>> = Vec::with_capacity(6);
        let mut extra: Vec<Arc<Entity>> = Vec::new();
        slice.push(agent.entity.clone());

        if req.action.is_task_action() != matches!(req.resource, ResourceRef::Task(_)) {
            return Err(format!(
                "invalid-request: action `{}` does not apply to {}",
                req.action, req.resource
            ));
        }
        if let Some(task) = &ctx.task {
            task.check().map_err(|m| format!("limit-exceeded: {m}"))?;
        }

        // The resource, its upstream, and what the context says about them.
        let mut upstream_uid: Option<EntityUID> = None;
        let resource;
        let resource_env;
        let sensitivity;
        match &req.resource {
            ResourceRef::Upstream(name) => {
                let up = store
                    .upstreams
                    .get(name.as_str())
                    .ok_or_else(|| format!("unknown-resource: upstream `{name}` is not registered"))?;
                resource = up.entity.uid().clone();
                upstream_uid = Some(resource.clone());
                resource_env = up.facts.environment;
                sensitivity = up.facts.sensitivity;
                slice.push(up.entity.clone());
            }
            ResourceRef::Tool(id) | ResourceRef::Dataset(id) => {
                let (entity, up_name, own_sensitivity) = match &req.resource {
                    ResourceRef::Tool(_) => {
                        let t = store.tools.get(id).ok_or_else(|| {
                            format!("unknown-resource: tool `{}` is not registered", id.escape_debug())
                        })?;
                        (&t.entity, &t.facts.upstream, None)
                    }
                    _ => {
                        let d = store.datasets.get(id).ok_or_else(|| {
                            format!(
                                "unknown-resource: dataset `{}` is not registered",
                                id.escape_debug()
                            )
                        })?;
                        (&d.entity, &d.facts.upstream, Some(d.facts.sensitivity))
                    }
                };
                let up = store.upstreams.get(up_name.as_str()).ok_or_else(|| {
                    format!(
                        "unknown-resource: upstream `{up_name}` of {} is not registered",
                        req.resource
                    )
                })?;
                resource = entity.uid().clone();
                upstream_uid = Some(up.entity.uid().clone());
                resource_env = up.facts.environment;
                sensitivity = own_sensitivity.unwrap_or(up.facts.sensitivity);
                slice.push(entity.clone());
                slice.push(up.entity.clone());
            }
            ResourceRef::Agent(name) => {
                let a = store
                    .agents
                    .get(name.as_str())
                    .ok_or_else(|| format!("unknown-resource: agent `{name}` is not registered"))?;
                resource = a.entity.uid().clone();
                resource_env = a.facts.environment;
                sensitivity = Sensitivity::Internal;
                if resource != principal {
                    slice.push(a.entity.clone());
                }
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
                resource = v.uid(&v.task, id);
                resource_env = env.unwrap_or(agent.facts.environment);
                sensitivity = sens;
                let e = Arc::new(Entity::new_with_attr_partial_value(
                    resource.clone(),
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
                ));
                slice.push(e.clone());
                extra.push(e);
            }
        }

        let mut context: BTreeMap<SmolStr, Value> = BTreeMap::new();
        if let Some(task) = &ctx.task {
            context.insert(
                SmolStr::new_static("task"),
                record([
                    ("id", lit(task.id.as_str())),
                    ("purpose", lit(task.purpose.as_str())),
                    ("task_type", lit(task.task_type.as_str())),
                    (
                        "upstreams",
                        Value::set(
                            task.upstreams.iter().map(|u| lit(v.uid(&v.upstream, u.as_str()))),
                            None,
                        ),
                    ),
                    (
                        "tools",
                        Value::set(task.tools.iter().map(|t| lit(t.as_str())), None),
                    ),
                    (
                        "datasets",
                        Value::set(task.datasets.iter().map(|d| lit(d.as_str())), None),
                    ),
                ]),
            );
        }
        let (depth, chain) = match &ctx.task {
            Some(t) => (
                i64::from(t.depth),
                Value::set(t.chain.iter().map(|a| lit(v.uid(&v.agent, a.as_str()))), None),
            ),
            None => (0, Value::set(std::iter::empty(), None)),
        };
        context.insert(
            SmolStr::new_static("delegation"),
            record([("depth", lit(depth)), ("chain", chain)]),
        );
        context.insert(
            SmolStr::new_static("environment"),
            record([
                ("agent", lit(agent.facts.environment.as_str())),
                ("resource", lit(resource_env.as_str())),
            ]),
        );
        context.insert(SmolStr::new_static("sensitivity"), lit(sensitivity.as_str()));
        context.insert(
            SmolStr::new_static("sensitivity_level"),
            lit(sensitivity_level(sensitivity)),
        );
        if let Some(up) = upstream_uid {
            context.insert(SmolStr::new_static("upstream"), lit(up));
        }
        context.insert(
            SmolStr::new_static("time"),
            record([
                ("hour", lit(i64::from(now.hour()))),
                ("weekday", lit(i64::from(now.weekday().number_from_monday()))),
                ("unix", lit(now.timestamp())),
            ]),
        );
        context.insert(
            SmolStr::new_static("approval"),
            record([
                ("granted", lit(ctx.approval.granted)),
                ("approvers", lit(i64::from(ctx.approval.approvers))),
            ]),
        );
        context.insert(
            SmolStr::new_static("risk"),
            record([
                ("secret_in_args", lit(ctx.risk.secret_in_args)),
                ("score", lit(i64::from(ctx.risk.score))),
            ]),
        );
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
                context.insert(
                    SmolStr::new_static("tool_args"),
                    Value::record([(SmolStr::new(id), typed)], None),
                );
            }
        }

        let action = v.action(req.action).clone();
        let ai = req.action as usize;
        if let Some(a) = self.action_entities.get(ai) {
            slice.push(a.clone());
        }
        let principal_closure: Vec<EntityUID> = std::iter::once(principal.clone())
            .chain(agent.entity.ancestors().cloned())
            .collect();
        let resource_closure: Vec<EntityUID> = match slice.get(1) {
            Some(r) if *r.uid() == resource => std::iter::once(resource.clone())
                .chain(r.ancestors().cloned())
                .collect(),
            _ => vec![resource.clone()],
        };
        Ok(Prepared {
            principal,
            action,
            resource,
            context: Arc::new(context),
            slice,
            extra,
            principal_closure,
            resource_closure,
            granted: ctx.approval.granted,
            approvers: ctx.approval.approvers,
        })
    }

    fn request(p: &Prepared, context: Arc<BTreeMap<SmolStr, Value>>) -> Request {
        Request::new_unchecked(
            EntityUIDEntry::from(p.principal.clone()),
            EntityUIDEntry::from(p.action.clone()),
            EntityUIDEntry::from(p.resource.clone()),
            Some(Context::Value(context)),
        )
    }

    fn approved_context(p: &Prepared) -> Arc<BTreeMap<SmolStr, Value>> {
        let mut c = (*p.context).clone();
        c.insert(
            SmolStr::new_static("approval"),
            record([("granted", lit(true)), ("approvers", lit(i64::from(u8::MAX)))]),
        );
        Arc::new(c)
    }

    fn candidates(&self, p: &Prepared, action: Action) -> Vec<u32> {
        let empty = Vec::new();
        let actions = self.action_closure.get(action as usize).unwrap_or(&empty);
        self.index.candidates(
            &p.principal_closure,
            &p.resource_closure,
            action as usize,
            actions,
        )
    }

    fn eval_pass(&self, entities: &Entities, request: Request, candidates: &[u32]) -> Pass {
        let eval = Evaluator::new(request, entities, Extensions::all_available());
        let mut pass = Pass::default();
        for &i in candidates {
            let Some(pol) = self.policies.get(i as usize) else {
                continue;
            };
            match eval.interpret(&pol.condition, pol.ast.env()) {
                Ok(Value {
                    value: ValueKind::Lit(Literal::Bool(true)),
                    ..
                }) => match pol.effect {
                    Effect::Permit => pass.permits.push(i),
                    Effect::Forbid => pass.forbids.push(i),
                },
                Ok(Value {
                    value: ValueKind::Lit(Literal::Bool(false)),
                    ..
                }) => {}
                Ok(_) => pass
                    .errors
                    .push(format!("{}: the policy's condition is not a boolean", pol.id)),
                Err(e) => pass.errors.push(format!("{}: {e}", pol.id)),
            }
        }
        pass
    }

    fn slice_entities(p: &Prepared) -> Result<Entities, String> {
        let mut seen: HashSet<&EntityUID> = HashSet::with_capacity(p.slice.len());
        let unique: Vec<Arc<Entity>> = p.slice.iter().filter(|e| seen.insert(e.uid())).cloned().collect();
        Entities::new()
            .add_entities(
                unique,
                None::<&NoEntitiesSchema>,
                TCComputation::AssumeAlreadyComputed,
                Extensions::all_available(),
            )
            .map_err(|e| format!("internal: entities: {e}"))
    }

    fn counts(&self, i: u32, granted: bool, approvers: u8) -> bool {
        match self.policies.get(i as usize).and_then(|p| p.approval) {
            None => true,
            Some(q) => granted && approvers >= q,
        }
    }

    /// Steps 1-4 of the module doc, over any evaluator of passes.
    fn combine(
        &self,
        p: &Prepared,
        req: &PolicyRequest,
        first: Pass,
        mentions_approval: bool,
        second: impl FnOnce() -> Pass,
    ) -> (Decision, Option<Pass>, Pass) {
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
            return (d, None, first);
        }
        let counted: Vec<u32> = first
            .permits
            .iter()
            .copied()
            .filter(|i| self.counts(*i, p.granted, p.approvers))
            .collect();
        if first.forbids.is_empty() && !counted.is_empty() {
            d.outcome = Outcome::Allow;
            d.reasons = reasons(&counted);
            return (d, None, first);
        }
        let mut second_pass = None;
        if mentions_approval {
            let s = second();
            if s.errors.is_empty() && s.forbids.is_empty() && !s.permits.is_empty() {
                let quorum = s
                    .permits
                    .iter()
                    .filter_map(|i| self.policies.get(*i as usize).and_then(|p| p.approval))
                    .max()
                    .unwrap_or(1);
                d.outcome = Outcome::NeedsApproval;
                d.quorum = Some(quorum);
                d.reasons = reasons(&s.permits);
                return (d, Some(s), first);
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
        (d, second_pass, first)
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
        let mut p = self.prepare(store, req, now)?;
        let candidates = self.candidates(&p, req.action);
        let (mut mentions_approval, mut mentions_args) = (false, false);
        for i in &candidates {
            if let Some(pol) = self.policies.get(*i as usize) {
                mentions_approval |= pol.mentions_approval;
                mentions_args |= pol.mentions_args;
            }
        }
        if mentions_args {
            Self::add_args_view(&mut p, req)?;
        }
        let entities = Self::slice_entities(&p)?;
        let first = self.eval_pass(&entities, Self::request(&p, p.context.clone()), &candidates);
        let (decision, second, first) = self.combine(&p, req, first, mentions_approval, || {
            self.eval_pass(
                &entities,
                Self::request(&p, Self::approved_context(&p)),
                &candidates,
            )
        });
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

    /// The decision by plain Cedar: `Authorizer::is_authorized` over the *whole* policy set, on the
    /// same request and entities, combined by the same rules. The reference the index is tested
    /// against, and the "raw Cedar" of the benchmarks. With `all_entities`, the whole registry is
    /// given to Cedar instead of the request's slice.
    pub fn decide_unindexed(
        &self,
        store: &EntityStore,
        req: &PolicyRequest,
        now: DateTime<Utc>,
        all_entities: bool,
    ) -> Decision {
        let mut p = match self.prepare(store, req, now) {
            Ok(p) => p,
            Err(reason) => return self.denied(reason),
        };
        if self.any_mentions_args
            && let Err(reason) = Self::add_args_view(&mut p, req)
        {
            return self.denied(reason);
        }
        let entities = if all_entities {
            let mut all: Vec<Arc<Entity>> = store.all_entities().cloned().collect();
            all.extend(p.extra.iter().cloned());
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
            Self::slice_entities(&p)
        };
        let entities = match entities {
            Ok(e) => cedar_policy::Entities::from(e),
            Err(reason) => return self.denied(reason),
        };
        let authorizer = Authorizer::new();
        let pass = |ctx: Arc<BTreeMap<SmolStr, Value>>| -> Pass {
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
        let first = pass(p.context.clone());
        let (decision, _, _) = self.combine(&p, req, first, self.any_mentions_approval, || {
            pass(Self::approved_context(&p))
        });
        decision
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
    use crate::request::{Approval, PolicyContext, Risk, TaskContext};
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
                    depth: 1,
                    chain: vec![AgentName::parse("proto").expect("name")],
                }),
                approval: Approval::default(),
                args: Some(json!({"amount": 12, "note": "x", "items": [{"id": "a"}]})),
                risk: Risk::default(),
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
        ] {
            let r = req(action, resource.clone());
            let mut p = c.prepare(&s, &r, now()).expect("prepares");
            CompiledPolicies::add_args_view(&mut p, &r).expect("args view");
            assert!(p.context.contains_key("args"));
            assert_eq!(p.context.contains_key("tool_args"), action == Action::Write);
            let context = cedar_policy::Context::from(Context::Value(p.context.clone()));
            cedar_policy::Request::new(
                cedar_policy::EntityUid::from(p.principal.clone()),
                cedar_policy::EntityUid::from(p.action.clone()),
                cedar_policy::EntityUid::from(p.resource.clone()),
                context,
                Some(c.schema()),
            )
            .unwrap_or_else(|e| panic!("{resource}: context does not conform: {e}"));
            let entities: Vec<cedar_policy::Entity> = p
                .slice
                .iter()
                .filter(|e| !e.uid().entity_type().is_action())
                .map(|e| cedar_policy::Entity::from((**e).clone()))
                .collect();
            cedar_policy::Entities::from_entities(entities, Some(c.schema()))
                .unwrap_or_else(|e| panic!("{resource}: entities do not conform: {e}"));
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
