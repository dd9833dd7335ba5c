//! What a policy reads from the request, found once at compile time, and the policy's condition
//! rewritten for the hot path.
//!
//! **What a policy reads.** A decision builds only the parts of the Cedar context that a candidate
//! policy can observe: the context attributes it names (`context.task`, `context has args`, …), and
//! of the generic argument view only the tags it asks for by literal key
//! (`context.args.hasTag("to")`, `context.args.getTag("to")`). Anything the analysis cannot pin down
//! — `context` used as a whole value, `context.args` used other than as the subject of
//! `hasTag`/`getTag` with a literal key, a literal `Warden::Args` entity, an unknown kind of
//! expression — counts as reading everything. A policy that cannot observe an attribute or a tag
//! evaluates identically with or without it (Cedar evaluation is a function of what it reads), so
//! leaving them out changes no decision, no reason and no error text (the text of a missing-tag
//! error does not list the tags present). The same analysis tells which policies can depend on the
//! approval state, so the approval pass re-evaluates only those (see [`crate::engine`]).
//!
//! **The hot-path condition.** Cedar's `Policy::condition()` is `principal-scope && action-scope
//! && resource-scope && body`, every node carrying its source location. The engine evaluates a
//! copy without source locations (cloning a location is an atomic reference-count update per
//! evaluated node, the largest single cost in the evaluator's profile; error texts do not include
//! locations), and without the scope conjuncts the index already decided: the action scope when
//! the index decides it exactly, and the principal or resource scope the policy is filed under
//! (see [`crate::index`]) — the index only yields a policy when those hold, so they are `true`
//! whenever it is evaluated. Scopes never fail to evaluate, so dropping a conjunct that is `true`
//! changes neither the value nor the errors.
//!
//! **Per resource type.** A request's resource is an `Upstream`, `Tool`, `Dataset`, `Agent`,
//! `Task`, `McpResource` or `Prompt`, and its principal always an `Agent`, so `resource is T` and `principal is T` are
//! constants once the resource type is known. Each policy gets one condition per resource type with
//! those tests folded away (`false && e` → `false`, `true && e` → `e` when `e` is sure to be a
//! boolean or an error, and so on — the rewrites Cedar's evaluation would do itself, so values and
//! errors are unchanged); a policy whose condition folds to `false` for a type is not a candidate
//! for requests on that type (e.g. a `resource is Warden::Dataset` rule for a tool call), and the
//! context a type's condition reads is what the context analysis sees (the dataset branch of a rule
//! does not make a tool call build `context.task.datasets`).

use std::sync::Arc;

use cedar_policy::Effect;
use cedar_policy_core::ast::{
    BinaryOp, EntityReference, EntityType, Expr, ExprKind, Literal, Policy, PrincipalOrResource,
    PrincipalOrResourceConstraint, UnaryOp, Var,
};
use smol_str::SmolStr;

use crate::index::Filed;

/// The context attributes of Warden's schema, as bits of [`CtxUse::attrs`].
pub(crate) mod attr {
    pub const TASK: u16 = 1 << 0;
    pub const DELEGATION: u16 = 1 << 1;
    pub const ENVIRONMENT: u16 = 1 << 2;
    pub const SENSITIVITY: u16 = 1 << 3;
    pub const SENSITIVITY_LEVEL: u16 = 1 << 4;
    pub const UPSTREAM: u16 = 1 << 5;
    pub const TIME: u16 = 1 << 6;
    pub const APPROVAL: u16 = 1 << 7;
    pub const ARGS: u16 = 1 << 8;
    pub const TOOL_ARGS: u16 = 1 << 9;
    pub const RISK: u16 = 1 << 10;
    pub const MCP: u16 = 1 << 11;
    pub const ALL: u16 = (1 << 12) - 1;

    /// The bit of a context attribute; `None` for a name the schema does not declare.
    pub fn bit(name: &str) -> Option<u16> {
        Some(match name {
            "task" => TASK,
            "delegation" => DELEGATION,
            "environment" => ENVIRONMENT,
            "sensitivity" => SENSITIVITY,
            "sensitivity_level" => SENSITIVITY_LEVEL,
            "upstream" => UPSTREAM,
            "time" => TIME,
            "approval" => APPROVAL,
            "args" => ARGS,
            "tool_args" => TOOL_ARGS,
            "risk" => RISK,
            "mcp" => MCP,
            _ => return None,
        })
    }
}

/// The fields of `context.task`, as bits of [`CtxUse::task`].
pub(crate) mod task_field {
    pub const ID: u8 = 1 << 0;
    pub const PURPOSE: u8 = 1 << 1;
    pub const TASK_TYPE: u8 = 1 << 2;
    pub const UPSTREAMS: u8 = 1 << 3;
    pub const TOOLS: u8 = 1 << 4;
    pub const DATASETS: u8 = 1 << 5;
    pub const RESOURCES: u8 = 1 << 6;
    pub const PROMPTS: u8 = 1 << 7;
    pub const ALL: u8 = u8::MAX;

    /// The bit of a field; `None` for a name the schema does not declare.
    pub fn bit(name: &str) -> Option<u8> {
        Some(match name {
            "id" => ID,
            "purpose" => PURPOSE,
            "task_type" => TASK_TYPE,
            "upstreams" => UPSTREAMS,
            "tools" => TOOLS,
            "datasets" => DATASETS,
            "resources" => RESOURCES,
            "prompts" => PROMPTS,
            _ => return None,
        })
    }
}

/// Which tags of the generic argument view (`context.args`) a policy can read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) enum TagUse {
    /// Only these keys (sorted, without duplicates; empty when the policy only tests
    /// `context has args`).
    #[default]
    None,
    Keys(Vec<SmolStr>),
    /// Any tag.
    All,
}

impl TagUse {
    fn add_key(&mut self, key: &SmolStr) {
        match self {
            TagUse::All => {}
            TagUse::None => *self = TagUse::Keys(vec![key.clone()]),
            TagUse::Keys(keys) => {
                if let Err(at) = keys.binary_search(key) {
                    keys.insert(at, key.clone());
                }
            }
        }
    }

    /// Adds another policy's tag use to this one.
    pub fn merge(&mut self, other: &TagUse) {
        match other {
            TagUse::None => {}
            TagUse::All => *self = TagUse::All,
            TagUse::Keys(keys) => keys.iter().for_each(|k| self.add_key(k)),
        }
    }
}

/// What a policy reads from the request context.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct CtxUse {
    /// Context attributes ([`attr`] bits) the policy can observe.
    pub attrs: u16,
    /// Tags of `context.args` it can read (meaningful when `attrs` has [`attr::ARGS`]).
    pub tags: TagUse,
    /// Fields of `context.task` it can read ([`task_field`] bits; meaningful when `attrs` has
    /// [`attr::TASK`]; none when it only tests `context has task`).
    pub task: u8,
}

impl CtxUse {
    pub fn everything() -> Self {
        CtxUse {
            attrs: attr::ALL,
            tags: TagUse::All,
            task: task_field::ALL,
        }
    }

    /// Adds another policy's use to this one.
    pub fn merge(&mut self, other: &CtxUse) {
        self.attrs |= other.attrs;
        self.tags.merge(&other.tags);
        self.task |= other.task;
    }

    /// Reads `context.<name>` as a whole value.
    fn read(&mut self, name: &str) {
        self.presence(name);
        match name {
            "args" => self.tags = TagUse::All,
            "task" => self.task = task_field::ALL,
            _ => {}
        }
    }

    /// Tests `context has <name>`.
    fn presence(&mut self, name: &str) {
        match attr::bit(name) {
            Some(b) => self.attrs |= b,
            // Strict validation rejects undeclared attributes; stay safe anyway.
            None => *self = CtxUse::everything(),
        }
    }

    /// Reads (or tests) the field `field` of `context.task`.
    fn task_field(&mut self, field: &str) {
        self.attrs |= attr::TASK;
        self.task |= task_field::bit(field).unwrap_or(task_field::ALL);
    }
}

fn is_context(e: &Expr) -> bool {
    matches!(e.expr_kind(), ExprKind::Var(Var::Context))
}

/// `context.<name>`?
fn is_context_attr(e: &Expr, name: &str) -> bool {
    matches!(e.expr_kind(), ExprKind::GetAttr { expr, attr } if is_context(expr) && attr == name)
}

/// What `condition` reads from the context. `args_type` is `Warden::Args`.
pub(crate) fn context_use(condition: &Expr, args_type: &EntityType) -> CtxUse {
    let mut u = CtxUse::default();
    visit(condition, args_type, &mut u);
    u
}

fn visit(e: &Expr, args_type: &EntityType, u: &mut CtxUse) {
    if u.attrs == attr::ALL && u.tags == TagUse::All && u.task == task_field::ALL {
        return;
    }
    match e.expr_kind() {
        ExprKind::Var(Var::Context) => *u = CtxUse::everything(),
        ExprKind::Var(_) | ExprKind::Slot(_) | ExprKind::Unknown(_) => {}
        ExprKind::Lit(Literal::EntityUID(uid)) => {
            // A literal `Warden::Args::"…"` reaches the arguments entity without `context.args`.
            if uid.entity_type() == args_type {
                u.attrs |= attr::ARGS;
                u.tags = TagUse::All;
            }
        }
        ExprKind::Lit(_) => {}
        // `context.args` used other than as the subject of a literal-keyed tag test, or
        // `context.task` used other than to reach one of its fields: read whole.
        ExprKind::GetAttr { expr, attr } if is_context(expr) => u.read(attr),
        ExprKind::HasAttr { expr, attr } if is_context(expr) => u.presence(attr),
        ExprKind::ExtHasAttr { expr, attrs } if is_context(expr) => {
            // `context has task.tools` tests `context.task` and its field `tools`; for any other
            // attribute, read it whole.
            let mut names = attrs.iter();
            match (names.next(), names.next()) {
                (Some(t), Some(field)) if t == "task" => u.task_field(field),
                (Some(a), Some(_)) => u.read(a),
                (Some(a), None) => u.presence(a),
                _ => {}
            }
        }
        ExprKind::GetAttr { expr, attr } | ExprKind::HasAttr { expr, attr }
            if is_context_attr(expr, "task") =>
        {
            u.task_field(attr)
        }
        ExprKind::ExtHasAttr { expr, attrs } if is_context_attr(expr, "task") => {
            for field in attrs.iter().take(1) {
                u.task_field(field);
            }
        }
        ExprKind::BinaryApp {
            op: BinaryOp::HasTag | BinaryOp::GetTag,
            arg1,
            arg2,
        } if is_context_attr(arg1, "args") => match arg2.expr_kind() {
            ExprKind::Lit(Literal::String(key)) => {
                u.attrs |= attr::ARGS;
                u.tags.add_key(key);
            }
            _ => {
                visit(arg1, args_type, u);
                visit(arg2, args_type, u);
            }
        },
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => {
            visit(test_expr, args_type, u);
            visit(then_expr, args_type, u);
            visit(else_expr, args_type, u);
        }
        ExprKind::And { left, right } | ExprKind::Or { left, right } => {
            visit(left, args_type, u);
            visit(right, args_type, u);
        }
        ExprKind::BinaryApp { arg1, arg2, .. } => {
            visit(arg1, args_type, u);
            visit(arg2, args_type, u);
        }
        ExprKind::UnaryApp { arg, .. } => visit(arg, args_type, u),
        ExprKind::ExtensionFunctionApp { args, .. } => args.iter().for_each(|a| visit(a, args_type, u)),
        ExprKind::Set(items) => items.iter().for_each(|a| visit(a, args_type, u)),
        ExprKind::Record(map) => map.values().for_each(|a| visit(a, args_type, u)),
        ExprKind::GetAttr { expr, .. }
        | ExprKind::HasAttr { expr, .. }
        | ExprKind::ExtHasAttr { expr, .. }
        | ExprKind::Like { expr, .. }
        | ExprKind::Is { expr, .. } => visit(expr, args_type, u),
        // Anything this version does not know: assume it reads everything.
        #[allow(unreachable_patterns)]
        _ => *u = CtxUse::everything(),
    }
}

/// `e` without source locations (see the module doc).
pub(crate) fn strip_locations(e: &Expr) -> Expr {
    let s = |x: &Expr| strip_locations(x);
    match e.expr_kind() {
        ExprKind::Lit(l) => Expr::val(l.clone()),
        ExprKind::Var(v) => Expr::var(*v),
        ExprKind::Slot(id) => Expr::slot(*id),
        ExprKind::Unknown(u) => Expr::unknown(u.clone()),
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => Expr::ite(s(test_expr), s(then_expr), s(else_expr)),
        ExprKind::And { left, right } => Expr::and(s(left), s(right)),
        ExprKind::Or { left, right } => Expr::or(s(left), s(right)),
        ExprKind::UnaryApp { op, arg } => Expr::unary_app(*op, s(arg)),
        ExprKind::BinaryApp { op, arg1, arg2 } => Expr::binary_app(*op, s(arg1), s(arg2)),
        ExprKind::ExtensionFunctionApp { fn_name, args } => {
            Expr::call_extension_fn(fn_name.clone(), args.iter().map(s).collect())
        }
        ExprKind::GetAttr { expr, attr } => Expr::get_attr(s(expr), attr.clone()),
        ExprKind::HasAttr { expr, attr } => Expr::has_attr(s(expr), attr.clone()),
        ExprKind::ExtHasAttr { expr, attrs } => Expr::extended_has_attr(s(expr), attrs.clone()),
        ExprKind::Like { expr, pattern } => Expr::like(s(expr), pattern.clone()),
        ExprKind::Is { expr, entity_type } => Expr::is_entity_type(s(expr), entity_type.clone()),
        ExprKind::Set(items) => Expr::set(items.iter().map(s)),
        ExprKind::Record(map) => {
            Expr::record(map.iter().map(|(k, v)| (k.clone(), s(v)))).unwrap_or_else(|_| e.clone())
        }
        #[allow(unreachable_patterns)]
        _ => e.clone(),
    }
}

/// What remains of a principal or resource scope once the index's bucket hit is known to hold:
/// nothing for `== E` and `in E`, `is T` for `is T in E` ([`crate::index::Filed`]).
fn scope_after_hit(c: &PrincipalOrResourceConstraint, var: Var) -> Option<Expr> {
    match c {
        PrincipalOrResourceConstraint::Eq(EntityReference::EUID(_))
        | PrincipalOrResourceConstraint::In(EntityReference::EUID(_)) => None,
        PrincipalOrResourceConstraint::IsIn(ty, EntityReference::EUID(_)) => {
            Some(Expr::is_entity_type(Expr::var(var), ty.as_ref().clone()))
        }
        PrincipalOrResourceConstraint::Any => None,
        other => Some(strip_locations(&other.as_expr(match var {
            Var::Principal => PrincipalOrResource::Principal,
            _ => PrincipalOrResource::Resource,
        }))),
    }
}

/// The hot-path condition of `policy`: its scope and body without source locations, without the
/// action scope when `drop_action_scope` (the index then decides the action exactly), and without
/// the scope the index files it under (`filed`) as far as a bucket hit implies it.
pub(crate) fn hot_condition(policy: &Policy, drop_action_scope: bool, filed: Filed) -> Expr {
    let mut conjuncts: Vec<Expr> = Vec::with_capacity(4);
    let principal = policy.principal_constraint();
    let principal = if filed == Filed::Principal {
        scope_after_hit(principal.as_inner(), Var::Principal)
    } else {
        (!matches!(principal.as_inner(), PrincipalOrResourceConstraint::Any))
            .then(|| strip_locations(&principal.as_expr()))
    };
    conjuncts.extend(principal);
    if !drop_action_scope {
        conjuncts.push(strip_locations(&policy.action_constraint().as_expr()));
    }
    let resource = policy.resource_constraint();
    let resource = if filed == Filed::Resource {
        scope_after_hit(resource.as_inner(), Var::Resource)
    } else {
        (!matches!(resource.as_inner(), PrincipalOrResourceConstraint::Any))
            .then(|| strip_locations(&resource.as_expr()))
    };
    conjuncts.extend(resource);
    let body = policy
        .non_scope_constraints()
        .map_or_else(|| Expr::val(true), strip_locations);
    // `true && body` keeps Cedar's check that the body is a boolean when no scope is left.
    let first = if conjuncts.is_empty() {
        Expr::val(true)
    } else {
        conjuncts.remove(0)
    };
    let rest = conjuncts.into_iter().rev().fold(body, |acc, c| Expr::and(c, acc));
    Expr::and(first, rest)
}

/// Whether evaluating `e` yields a boolean or an error, never another value — so that `true && e`
/// is `e`.
fn is_boolean(e: &Expr) -> bool {
    match e.expr_kind() {
        ExprKind::Lit(Literal::Bool(_))
        | ExprKind::And { .. }
        | ExprKind::Or { .. }
        | ExprKind::HasAttr { .. }
        | ExprKind::ExtHasAttr { .. }
        | ExprKind::Like { .. }
        | ExprKind::Is { .. } => true,
        ExprKind::UnaryApp { op, .. } => matches!(op, UnaryOp::Not | UnaryOp::IsEmpty),
        ExprKind::BinaryApp { op, .. } => matches!(
            op,
            BinaryOp::Eq
                | BinaryOp::Less
                | BinaryOp::LessEq
                | BinaryOp::In
                | BinaryOp::Contains
                | BinaryOp::ContainsAll
                | BinaryOp::ContainsAny
                | BinaryOp::HasTag
        ),
        _ => false,
    }
}

fn as_bool(e: &Expr) -> Option<bool> {
    match e.expr_kind() {
        ExprKind::Lit(Literal::Bool(b)) => Some(*b),
        _ => None,
    }
}

/// `true && e` / `false || e`: `e` when it is sure to be a boolean.
fn then(e: Expr, op: fn(Expr, Expr) -> Expr, unit: bool) -> Expr {
    if is_boolean(&e) { e } else { op(Expr::val(unit), e) }
}

/// `e` with `principal is T` and `resource is T` decided (the principal is a `principal`, the
/// resource a `resource`), and the constants that makes folded the way Cedar evaluates them.
pub(crate) fn fold(e: &Expr, principal: &EntityType, resource: &EntityType) -> Expr {
    let f = |x: &Expr| fold(x, principal, resource);
    match e.expr_kind() {
        ExprKind::Is { expr, entity_type } => match expr.expr_kind() {
            ExprKind::Var(Var::Principal) => Expr::val(entity_type == principal),
            ExprKind::Var(Var::Resource) => Expr::val(entity_type == resource),
            _ => Expr::is_entity_type(f(expr), entity_type.clone()),
        },
        ExprKind::And { left, right } => {
            let l = f(left);
            match as_bool(&l) {
                Some(false) => l,
                Some(true) => then(f(right), Expr::and, true),
                None => {
                    let r = f(right);
                    // `l && true` is `l` when `l` is sure to be a boolean.
                    if as_bool(&r) == Some(true) && is_boolean(&l) {
                        l
                    } else {
                        Expr::and(l, r)
                    }
                }
            }
        }
        ExprKind::Or { left, right } => {
            let l = f(left);
            match as_bool(&l) {
                Some(true) => l,
                Some(false) => then(f(right), Expr::or, false),
                None => {
                    let r = f(right);
                    // `l || false` is `l` when `l` is sure to be a boolean.
                    if as_bool(&r) == Some(false) && is_boolean(&l) {
                        l
                    } else {
                        Expr::or(l, r)
                    }
                }
            }
        }
        ExprKind::UnaryApp {
            op: UnaryOp::Not,
            arg,
        } => {
            let a = f(arg);
            match as_bool(&a) {
                Some(b) => Expr::val(!b),
                None => Expr::unary_app(UnaryOp::Not, a),
            }
        }
        ExprKind::If {
            test_expr,
            then_expr,
            else_expr,
        } => {
            let t = f(test_expr);
            match as_bool(&t) {
                Some(true) => f(then_expr),
                Some(false) => f(else_expr),
                None => Expr::ite(t, f(then_expr), f(else_expr)),
            }
        }
        ExprKind::UnaryApp { op, arg } => Expr::unary_app(*op, f(arg)),
        ExprKind::BinaryApp { op, arg1, arg2 } => Expr::binary_app(*op, f(arg1), f(arg2)),
        ExprKind::ExtensionFunctionApp { fn_name, args } => {
            Expr::call_extension_fn(fn_name.clone(), args.iter().map(f).collect())
        }
        ExprKind::GetAttr { expr, attr } => Expr::get_attr(f(expr), attr.clone()),
        ExprKind::HasAttr { expr, attr } => Expr::has_attr(f(expr), attr.clone()),
        ExprKind::ExtHasAttr { expr, attrs } => Expr::extended_has_attr(f(expr), attrs.clone()),
        ExprKind::Like { expr, pattern } => Expr::like(f(expr), pattern.clone()),
        ExprKind::Set(items) => Expr::set(items.iter().map(f)),
        ExprKind::Record(map) => {
            Expr::record(map.iter().map(|(k, v)| (k.clone(), f(v)))).unwrap_or_else(|_| e.clone())
        }
        _ => e.clone(),
    }
}

/// Whether `e` tests the type of the resource (`resource is T`).
fn tests_resource_type(e: &Expr) -> bool {
    e.subexpressions().any(|x| match x.expr_kind() {
        ExprKind::Is { expr, .. } => matches!(expr.expr_kind(), ExprKind::Var(Var::Resource)),
        _ => false,
    })
}

/// A policy's condition for one resource type, what it reads, and what the engine needs to know
/// about the policy when it holds (the hot path reads a compact copy first, `native::Hot`, and this
/// only for Cedar's evaluator).
#[derive(Debug)]
pub(crate) struct Variant {
    pub effect: Effect,
    /// `Some(quorum)` for an `@approval("required")` permit.
    pub approval: Option<u8>,
    pub condition: Expr,
    pub ctx: CtxUse,
    /// Whether the condition can read the approval state.
    pub reads_approval: bool,
    /// Whether the condition can hold at all (it did not fold to `false`).
    pub live: bool,
}

/// The hot-path condition of a policy for each resource type of `resource_types` (in that order),
/// variants shared between types where they are the same.
pub(crate) fn variants(
    policy: &Policy,
    effect: Effect,
    approval: Option<u8>,
    drop_action_scope: bool,
    principal_type: &EntityType,
    resource_types: &[EntityType],
    args_type: &EntityType,
) -> Vec<Arc<Variant>> {
    let hot = hot_condition(policy, drop_action_scope, crate::index::filed(policy));
    let make = |condition: Expr| {
        let ctx = context_use(&condition, args_type);
        Arc::new(Variant {
            effect,
            approval,
            reads_approval: ctx.attrs & attr::APPROVAL != 0,
            live: as_bool(&condition) != Some(false),
            ctx,
            condition,
        })
    };
    if !tests_resource_type(&hot) {
        let any = resource_types.first().unwrap_or(principal_type);
        let v = make(fold(&hot, principal_type, any));
        return resource_types.iter().map(|_| v.clone()).collect();
    }
    let mut out: Vec<Arc<Variant>> = Vec::with_capacity(resource_types.len());
    for t in resource_types {
        let c = fold(&hot, principal_type, t);
        match out.iter().find(|v| v.condition == c) {
            Some(v) => out.push(v.clone()),
            None => out.push(make(c)),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn policy(text: &str) -> Policy {
        let p = cedar_policy::Policy::from_str(text).expect("parses");
        let core: &Policy = p.as_ref();
        core.clone()
    }

    fn args_type() -> EntityType {
        "Warden::Args".parse().expect("type")
    }

    fn use_of(text: &str) -> CtxUse {
        context_use(&policy(text).condition(), &args_type())
    }

    #[test]
    fn context_reads_are_found() {
        let u = use_of(
            r#"permit(principal, action, resource) when { context.risk.score > 1 && context has task && context.time.hour < 3 };"#,
        );
        assert_eq!(u.attrs, attr::RISK | attr::TASK | attr::TIME);
        assert_eq!(u.tags, TagUse::None);
        let u = use_of(
            r#"permit(principal, action, resource) when { context has args && context.args.hasTag("b") && context.args.getTag("a") == "x" };"#,
        );
        assert_eq!(u.attrs, attr::ARGS);
        assert_eq!(u.tags, TagUse::Keys(vec!["a".into(), "b".into()]));
        assert_eq!(
            use_of(r#"permit(principal, action, resource) when { context has args };"#).tags,
            TagUse::None
        );
        assert_eq!(
            use_of(r#"permit(principal, action, resource) when { context has approval.granted };"#).attrs,
            attr::APPROVAL
        );
    }

    #[test]
    fn anything_unclear_reads_everything() {
        for text in [
            r#"permit(principal, action, resource) when { context.args.hasTag(context.task.purpose) };"#,
            r#"permit(principal, action, resource) when { [context.args].contains(context.args) };"#,
            r#"permit(principal, action, resource) when { Warden::Args::"call".hasTag("a") };"#,
        ] {
            assert_eq!(use_of(text).tags, TagUse::All, "{text}");
        }
        assert_eq!(
            use_of(r#"permit(principal, action, resource) when { {c: context}.c.risk.score > 1 };"#),
            CtxUse::everything()
        );
    }

    #[test]
    fn hot_condition_drops_locations_and_implied_scopes() {
        let p = policy(
            r#"permit(principal == A::"a", action in [Action::"r", Action::"w"], resource) when { context.x > 1 };"#,
        );
        let c = hot_condition(&p, true, Filed::Elsewhere);
        assert_eq!(c.to_string(), r#"(principal == A::"a") && (!(context.x <= 1))"#);
        assert!(c.subexpressions().all(|e| e.source_loc().is_none()));
        let c = hot_condition(&p, false, Filed::Elsewhere);
        assert!(c.to_string().contains("action in"), "{c}");
        let c = hot_condition(&p, true, Filed::Principal);
        assert_eq!(c.to_string(), r#"true && (!(context.x <= 1))"#);
        let p = policy(r#"permit(principal, action, resource is T in U::"u") when { resource.n == 1 };"#);
        let c = hot_condition(&p, true, Filed::Resource);
        assert_eq!(c.to_string(), r#"(resource is T) && (resource.n == 1)"#);
        // Cedar's builder folds `true && true`.
        let c = hot_condition(
            &policy("permit(principal, action, resource);"),
            true,
            Filed::Elsewhere,
        );
        assert_eq!(c, Expr::val(true));
    }

    #[test]
    fn type_tests_fold_per_resource_type() {
        let p = policy(
            r#"permit(principal is Warden::Agent, action, resource) when {
                context has task &&
                ((resource is Warden::Upstream && context.task.upstreams.contains(resource)) ||
                 (resource is Warden::Tool && context.task.tools.contains(resource.name)) ||
                 (resource is Warden::Dataset && context.task.datasets.contains(resource.name)))
            };"#,
        );
        let t = |s: &str| s.parse::<EntityType>().expect("type");
        let kinds = [t("Warden::Upstream"), t("Warden::Tool"), t("Warden::Task")];
        let v = variants(
            &p,
            Effect::Permit,
            None,
            true,
            &t("Warden::Agent"),
            &kinds,
            &args_type(),
        );
        assert_eq!(
            v[1].condition.to_string(),
            r#"(context has task) && context.task.tools.contains(resource.name)"#
        );
        assert_eq!(v[1].ctx.task, task_field::TOOLS);
        assert_eq!(v[0].ctx.task, task_field::UPSTREAMS);
        assert!(v[0].live && v[1].live);
        // For a task, every branch is `false`: `context has task && false`.
        assert_eq!(v[2].ctx.task, 0);
        let p = policy(r#"forbid(principal, action, resource is Warden::Dataset);"#);
        let v = variants(
            &p,
            Effect::Forbid,
            None,
            true,
            &t("Warden::Agent"),
            &kinds,
            &args_type(),
        );
        assert!(v.iter().all(|v| !v.live), "{v:?}");
    }
}
