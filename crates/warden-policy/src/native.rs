//! A native evaluator for the common subset of policy conditions, compiled once per hot-path
//! condition ([`crate::analysis::Variant`]); anything outside the subset, and any evaluation that
//! would fail, is left to Cedar's evaluator.
//!
//! **Why.** Cedar's `Evaluator` needs a Cedar `Entities` (a hash map built per request) and a Cedar
//! context (records and sets built per request), and allocates a `Value` per evaluated node. Most
//! conditions only compare a few request facts with literals: `principal.state == "active"`,
//! `context.risk.score < 40`, `context has task && context.task.tools.contains(resource.name)`.
//! This evaluator reads those facts where they already are — the request's typed context, the
//! entities of the request's slice — without building anything, so a decision whose candidates
//! are all in the subset builds neither `Entities` nor a context.
//!
//! **Exactness.** Evaluation returns `Some(b)` only when Cedar's evaluation of the same condition
//! on the same request (the slice's entities, the full context) returns the boolean `b`, and
//! `None` ("ask Cedar") in every other case: a construct the compiler does not know (`None` at
//! compile time), or at run time anything that could be, or lead to, an error or a non-boolean —
//! a missing attribute, tag or entity, an operand of an unexpected type, an overflow, a context
//! attribute the request lacks. So errors, their texts and every non-boolean result always come
//! from Cedar itself. What is evaluated natively follows Cedar's rules: left-to-right
//! short-circuiting `&&`, `||` and `if` (only the branch taken is evaluated, and a non-boolean
//! operand asks Cedar), every operand of an operator evaluated first, `==` true only for equal
//! values and false (never an error) between values of different types, `in` as equality or
//! ancestry, set operations by value equality. `tests/index_equivalence.rs` compares the engine
//! with plain Cedar on generated sets that exercise each construct.
//!
//! **The subset.** Literals (booleans, integers, strings, entities but `Warden::Args`) and sets of
//! literals; `principal`, `resource`, `action`; `context.<attr>` and `context.<record>.<field>`
//! for Warden's context (not `tool_args`, not a record as a whole; `context.mcp.<field>` only when
//! the request has the MCP message), `context has …` (but `context has mcp.<field>` and
//! `context.mcp has <field>`),
//! `context.task has …`; `context.args.hasTag("k")` / `.getTag("k")` with a literal key;
//! attributes of entities and records (`.`, `has`); `&&`, `||`, `!`, `if`; `==`, `!=`, `<`, `<=`,
//! `>`, `>=`; `+`, `-`, `*`, unary `-`; `in`; `.contains`, `.containsAll`, `.containsAny`,
//! `.isEmpty()`; `is`; `like`. Not in it: extension functions (`ip`, `decimal`, `datetime`, …),
//! record literals, sets of non-literals, tags of other entities, the context as a whole.

use std::cell::OnceCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use cedar_policy_core::ast::{
    BinaryOp, Entity, EntityType, EntityUID, Expr, ExprKind, Literal, PartialValue, Pattern, Set, UnaryOp,
    Value, ValueKind, Var,
};
use smol_str::SmolStr;
use warden_core::{AgentName, UpstreamName};

use crate::request::PolicyContext;
use crate::store::{AgentFacts, Fact, Facts, UpstreamFacts};

/// A literal of the subset.
#[derive(Clone, Debug)]
enum Scalar {
    Bool(bool),
    Long(i64),
    Str(SmolStr),
    Entity(Arc<EntityUID>),
}

/// A value Warden's context provides (`context.<attr>` or `context.<record>.<field>`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Ctx {
    RiskSecret,
    RiskScore,
    EnvAgent,
    EnvResource,
    Hour,
    Weekday,
    Unix,
    Granted,
    Approvers,
    Depth,
    Chain,
    TaskId,
    TaskPurpose,
    TaskType,
    TaskUpstreams,
    TaskTools,
    TaskDatasets,
    TaskResources,
    TaskPrompts,
    McpMethod,
    McpKind,
    Sensitivity,
    SensitivityLevel,
    Upstream,
}

/// Which context attribute `context has <attr>` tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Present {
    Always,
    Task,
    Args,
    Upstream,
    ToolArgs,
    Mcp,
}

#[derive(Clone, Debug)]
enum Node {
    Lit(Scalar),
    /// A set literal whose elements are literals.
    Set(Box<[Scalar]>),
    Principal,
    Action,
    Resource,
    Ctx(Ctx),
    /// `context has <attr>` (or `context has <record>.<field>`, `context.<record> has <field>` for
    /// a record that is always present: `Present::Always` with a known field, or a literal `false`).
    CtxHas(Present),
    /// `context.task has <field>`: an error without a task; `.1` whether the field is declared.
    TaskHas(bool),
    /// `context has task.<field>`: `false` without a task; `.0` whether the field is declared.
    HasTaskField(bool),
    HasTag(SmolStr),
    GetTag(SmolStr),
    Attr(u32, SmolStr),
    Has(u32, SmolStr),
    And(u32, u32),
    Or(u32, u32),
    If(u32, u32, u32),
    Not(u32),
    Neg(u32),
    IsEmpty(u32),
    Bin(BinaryOp, u32, u32),
    Is(u32, Box<EntityType>),
    Like(u32, Box<Pattern>),
}

/// The conditions of a policy set compiled for the native evaluator, in one arena: each
/// condition's nodes in post-order (its root last), the conditions of a policy next to each other.
#[derive(Clone, Debug, Default)]
pub(crate) struct Programs {
    nodes: Vec<Node>,
}

/// The fields of each context record, for `has`.
fn declared(record: &str, field: &str) -> Option<bool> {
    let fields: &[&str] = match record {
        "risk" => &["secret_in_args", "score"],
        "environment" => &["agent", "resource"],
        "time" => &["hour", "weekday", "unix"],
        "approval" => &["granted", "approvers"],
        "delegation" => &["depth", "chain"],
        "task" => &[
            "id",
            "purpose",
            "task_type",
            "upstreams",
            "tools",
            "datasets",
            "resources",
            "prompts",
        ],
        _ => return None,
    };
    Some(fields.contains(&field))
}

fn ctx_field(record: &str, field: &str) -> Option<Ctx> {
    Some(match (record, field) {
        ("risk", "secret_in_args") => Ctx::RiskSecret,
        ("risk", "score") => Ctx::RiskScore,
        ("environment", "agent") => Ctx::EnvAgent,
        ("environment", "resource") => Ctx::EnvResource,
        ("time", "hour") => Ctx::Hour,
        ("time", "weekday") => Ctx::Weekday,
        ("time", "unix") => Ctx::Unix,
        ("approval", "granted") => Ctx::Granted,
        ("approval", "approvers") => Ctx::Approvers,
        ("delegation", "depth") => Ctx::Depth,
        ("delegation", "chain") => Ctx::Chain,
        ("task", "id") => Ctx::TaskId,
        ("task", "purpose") => Ctx::TaskPurpose,
        ("task", "task_type") => Ctx::TaskType,
        ("task", "upstreams") => Ctx::TaskUpstreams,
        ("task", "tools") => Ctx::TaskTools,
        ("task", "datasets") => Ctx::TaskDatasets,
        ("task", "resources") => Ctx::TaskResources,
        ("task", "prompts") => Ctx::TaskPrompts,
        ("mcp", "method") => Ctx::McpMethod,
        ("mcp", "kind") => Ctx::McpKind,
        _ => return None,
    })
}

fn present(attr: &str) -> Option<Present> {
    Some(match attr {
        "task" => Present::Task,
        "args" => Present::Args,
        "upstream" => Present::Upstream,
        "tool_args" => Present::ToolArgs,
        "mcp" => Present::Mcp,
        "delegation" | "environment" | "sensitivity" | "sensitivity_level" | "time" | "approval" | "risk" => {
            Present::Always
        }
        _ => return None,
    })
}

fn is_context(e: &Expr) -> bool {
    matches!(e.expr_kind(), ExprKind::Var(Var::Context))
}

/// `context.<name>`: the attribute's name.
fn context_attr(e: &Expr) -> Option<&SmolStr> {
    match e.expr_kind() {
        ExprKind::GetAttr { expr, attr } if is_context(expr) => Some(attr),
        _ => None,
    }
}

struct Builder<'t> {
    nodes: &'t mut Vec<Node>,
    args_type: &'t EntityType,
    /// Warden's entity types: a type in a condition is replaced by the equal one of this list, so
    /// that comparing it with a request's (built from the same list) finds the names shared.
    types: &'t [EntityType],
}

impl Builder<'_> {
    fn push(&mut self, n: Node) -> Option<u32> {
        let at = u32::try_from(self.nodes.len()).ok()?;
        self.nodes.push(n);
        Some(at)
    }

    fn canonical(&self, t: &EntityType) -> EntityType {
        self.types.iter().find(|c| *c == t).unwrap_or(t).clone()
    }

    fn scalar(&self, l: &Literal) -> Option<Scalar> {
        Some(match l {
            Literal::Bool(b) => Scalar::Bool(*b),
            Literal::Long(i) => Scalar::Long(*i),
            Literal::String(s) => Scalar::Str(s.clone()),
            // The arguments entity exists only when the context carries it: leave it to Cedar.
            Literal::EntityUID(u) if u.entity_type() == self.args_type => return None,
            Literal::EntityUID(u) => Scalar::Entity(Arc::new(EntityUID::from_components(
                self.canonical(u.entity_type()),
                u.eid().clone(),
                None,
            ))),
        })
    }

    fn build(&mut self, e: &Expr) -> Option<u32> {
        let node = match e.expr_kind() {
            ExprKind::Lit(l) => Node::Lit(self.scalar(l)?),
            ExprKind::Var(Var::Principal) => Node::Principal,
            ExprKind::Var(Var::Action) => Node::Action,
            ExprKind::Var(Var::Resource) => Node::Resource,
            ExprKind::Set(items) => {
                let lits = items
                    .iter()
                    .map(|i| match i.expr_kind() {
                        ExprKind::Lit(l) => self.scalar(l),
                        _ => None,
                    })
                    .collect::<Option<Vec<Scalar>>>()?;
                Node::Set(lits.into_boxed_slice())
            }
            ExprKind::GetAttr { expr, attr } => {
                if is_context(expr) {
                    match attr.as_str() {
                        "sensitivity" => Node::Ctx(Ctx::Sensitivity),
                        "sensitivity_level" => Node::Ctx(Ctx::SensitivityLevel),
                        "upstream" => Node::Ctx(Ctx::Upstream),
                        // A record as a whole, the arguments entity, the typed arguments.
                        _ => return None,
                    }
                } else if let Some(c) = context_attr(expr).and_then(|r| ctx_field(r, attr)) {
                    Node::Ctx(c)
                } else {
                    let of = self.build(expr)?;
                    Node::Attr(of, attr.clone())
                }
            }
            ExprKind::HasAttr { expr, attr } => {
                if is_context(expr) {
                    Node::CtxHas(present(attr)?)
                } else if let Some(known) = context_attr(expr).and_then(|r| declared(r, attr)) {
                    if context_attr(expr).is_some_and(|r| r == "task") {
                        Node::TaskHas(known)
                    } else if known {
                        Node::CtxHas(Present::Always)
                    } else {
                        Node::Lit(Scalar::Bool(false))
                    }
                } else {
                    let of = self.build(expr)?;
                    Node::Has(of, attr.clone())
                }
            }
            ExprKind::ExtHasAttr { expr, attrs } if is_context(expr) => {
                let mut names = attrs.iter();
                match (names.next(), names.next(), names.next()) {
                    (Some(a), None, None) => Node::CtxHas(present(a)?),
                    (Some(r), Some(f), None) => {
                        let known = declared(r, f)?;
                        if r == "task" {
                            Node::HasTaskField(known)
                        } else if known {
                            Node::CtxHas(Present::Always)
                        } else {
                            Node::Lit(Scalar::Bool(false))
                        }
                    }
                    _ => return None,
                }
            }
            ExprKind::And { left, right } => {
                let (l, r) = (self.build(left)?, self.build(right)?);
                Node::And(l, r)
            }
            ExprKind::Or { left, right } => {
                let (l, r) = (self.build(left)?, self.build(right)?);
                Node::Or(l, r)
            }
            ExprKind::If {
                test_expr,
                then_expr,
                else_expr,
            } => {
                let t = self.build(test_expr)?;
                let a = self.build(then_expr)?;
                let b = self.build(else_expr)?;
                Node::If(t, a, b)
            }
            ExprKind::UnaryApp { op, arg } => {
                let a = self.build(arg)?;
                match op {
                    UnaryOp::Not => Node::Not(a),
                    UnaryOp::Neg => Node::Neg(a),
                    UnaryOp::IsEmpty => Node::IsEmpty(a),
                    #[allow(unreachable_patterns)]
                    _ => return None,
                }
            }
            ExprKind::BinaryApp {
                op: op @ (BinaryOp::HasTag | BinaryOp::GetTag),
                arg1,
                arg2,
            } => match (context_attr(arg1).map(SmolStr::as_str), arg2.expr_kind()) {
                (Some("args"), ExprKind::Lit(Literal::String(key))) => {
                    if *op == BinaryOp::HasTag {
                        Node::HasTag(key.clone())
                    } else {
                        Node::GetTag(key.clone())
                    }
                }
                _ => return None,
            },
            ExprKind::BinaryApp { op, arg1, arg2 } => match op {
                BinaryOp::Eq
                | BinaryOp::Less
                | BinaryOp::LessEq
                | BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::In
                | BinaryOp::Contains
                | BinaryOp::ContainsAll
                | BinaryOp::ContainsAny => {
                    let (a, b) = (self.build(arg1)?, self.build(arg2)?);
                    Node::Bin(*op, a, b)
                }
                _ => return None,
            },
            ExprKind::Is { expr, entity_type } => {
                let a = self.build(expr)?;
                Node::Is(a, Box::new(self.canonical(entity_type)))
            }
            ExprKind::Like { expr, pattern } => {
                let a = self.build(expr)?;
                Node::Like(a, Box::new(pattern.clone()))
            }
            _ => return None,
        };
        self.push(node)
    }
}

impl Programs {
    /// Compiles `condition` into the arena: its root, or `None` (and nothing added) when it uses
    /// anything outside the subset. `args_type` is `Warden::Args`; `types` Warden's entity types.
    pub fn add(&mut self, condition: &Expr, args_type: &EntityType, types: &[EntityType]) -> Option<u32> {
        let len = self.nodes.len();
        let mut b = Builder {
            nodes: &mut self.nodes,
            args_type,
            types,
        };
        let root = b.build(condition);
        if root.is_none() {
            self.nodes.truncate(len);
        }
        root
    }
}

/// The argument tags a decision has flattened, in document order (a later duplicate key wins, as
/// in the arguments entity).
pub(crate) type Tags = Vec<(SmolStr, PartialValue)>;

/// What the native evaluator reads: the request as the engine resolved it.
pub(crate) struct Env<'a> {
    pub principal: &'a EntityUID,
    pub action: &'a EntityUID,
    pub resource: &'a EntityUID,
    /// The entities of the request (those the Cedar evaluator would be given, but the arguments).
    pub entities: [Option<&'a Entity>; 5],
    pub ctx: &'a PolicyContext,
    pub upstream: Option<&'a EntityUID>,
    pub has_tool_args: bool,
    pub agent_env: &'static str,
    pub resource_env: &'static str,
    pub sensitivity: &'static str,
    pub sensitivity_level: i64,
    pub hour: i64,
    pub weekday: i64,
    pub unix: i64,
    /// `context.approval` (the approval pass sets it to granted by the most approvers).
    pub granted: bool,
    pub approvers: i64,
    /// The facts behind the principal, the resource and its upstream ([`Facts`]): attributes are
    /// read from them where they hold them, instead of from the entities.
    pub principal_facts: &'a AgentFacts,
    pub resource_facts: Option<Facts<'a>>,
    pub upstream_facts: Option<&'a UpstreamFacts>,
    pub upstream_type: &'a EntityType,
    pub agent_type: &'a EntityType,
    pub human_type: &'a EntityType,
    /// The flattened argument tags, built on first use by `make_tags`.
    pub tags: &'a OnceCell<Tags>,
    pub make_tags: &'a dyn Fn() -> Tags,
}

/// An entity: a Cedar uid, or a type and a name (the task's upstreams, the delegation chain).
#[derive(Clone, Copy)]
enum Ent<'a> {
    Uid(&'a EntityUID),
    Named(&'a EntityType, &'a str),
}

impl Ent<'_> {
    fn ty(&self) -> &EntityType {
        match self {
            Ent::Uid(u) => u.entity_type(),
            Ent::Named(t, _) => t,
        }
    }

    fn eid(&self) -> &str {
        match self {
            Ent::Uid(u) => u.eid().as_ref(),
            Ent::Named(_, n) => n,
        }
    }

    fn same(&self, other: &Ent<'_>) -> bool {
        match (self, other) {
            (Ent::Uid(a), Ent::Uid(b)) => std::ptr::eq(*a, *b) || a == b,
            _ => self.eid() == other.eid() && self.ty() == other.ty(),
        }
    }
}

#[derive(Clone, Copy)]
enum SetRef<'a> {
    Cedar(&'a Set),
    Lits(&'a [Scalar]),
    Strings(&'a [String]),
    Upstreams(&'a [UpstreamName]),
    Agents(&'a [AgentName]),
}

#[derive(Clone, Copy)]
enum V<'a> {
    Bool(bool),
    Long(i64),
    Str(&'a str),
    Entity(Ent<'a>),
    Set(SetRef<'a>),
    Record(&'a BTreeMap<SmolStr, Value>),
}

fn from_scalar(s: &Scalar) -> V<'_> {
    match s {
        Scalar::Bool(b) => V::Bool(*b),
        Scalar::Long(i) => V::Long(*i),
        Scalar::Str(s) => V::Str(s),
        Scalar::Entity(u) => V::Entity(Ent::Uid(u)),
    }
}

/// A Cedar value as a native one; `None` for an extension value.
fn from_value(v: &Value) -> Option<V<'_>> {
    Some(match v.value_kind() {
        ValueKind::Lit(Literal::Bool(b)) => V::Bool(*b),
        ValueKind::Lit(Literal::Long(i)) => V::Long(*i),
        ValueKind::Lit(Literal::String(s)) => V::Str(s),
        ValueKind::Lit(Literal::EntityUID(u)) => V::Entity(Ent::Uid(u)),
        ValueKind::Set(s) => V::Set(SetRef::Cedar(s)),
        ValueKind::Record(r) => V::Record(r),
        ValueKind::ExtensionValue(_) => return None,
    })
}

fn from_partial(v: &PartialValue) -> Option<V<'_>> {
    match v {
        PartialValue::Value(v) => from_value(v),
        PartialValue::Residual(_) => None,
    }
}

/// Cedar's `==`; `None` where this evaluator does not compare (sets of different origins).
fn equal(a: &V<'_>, b: &V<'_>) -> Option<bool> {
    Some(match (a, b) {
        (V::Bool(x), V::Bool(y)) => x == y,
        (V::Long(x), V::Long(y)) => x == y,
        (V::Str(x), V::Str(y)) => x == y,
        (V::Entity(x), V::Entity(y)) => x.same(y),
        (V::Set(SetRef::Cedar(x)), V::Set(SetRef::Cedar(y))) => x == y,
        (V::Set(_), V::Set(_)) => return None,
        (V::Record(x), V::Record(y)) => x == y,
        // Values of different types are never equal (and comparing them is not an error).
        _ => false,
    })
}

impl<'a> SetRef<'a> {
    /// Calls `f` on each element until it returns `Some(true)`; `Some(found)`, or `None` when an
    /// element is not a value of the subset or `f` returns `None`.
    fn any(self, env: &Env<'a>, mut f: impl FnMut(V<'a>) -> Option<bool>) -> Option<bool> {
        match self {
            SetRef::Cedar(s) => {
                for v in s.iter() {
                    if f(from_value(v)?)? {
                        return Some(true);
                    }
                }
            }
            SetRef::Lits(items) => {
                for s in items {
                    if f(from_scalar(s))? {
                        return Some(true);
                    }
                }
            }
            SetRef::Strings(items) => {
                for s in items {
                    if f(V::Str(s))? {
                        return Some(true);
                    }
                }
            }
            SetRef::Upstreams(items) => {
                for u in items {
                    if f(V::Entity(Ent::Named(env.upstream_type, u.as_str())))? {
                        return Some(true);
                    }
                }
            }
            SetRef::Agents(items) => {
                for a in items {
                    if f(V::Entity(Ent::Named(env.agent_type, a.as_str())))? {
                        return Some(true);
                    }
                }
            }
        }
        Some(false)
    }

    fn is_empty(self) -> bool {
        match self {
            SetRef::Cedar(s) => s.is_empty(),
            SetRef::Lits(items) => items.is_empty(),
            SetRef::Strings(items) => items.is_empty(),
            SetRef::Upstreams(items) => items.is_empty(),
            SetRef::Agents(items) => items.is_empty(),
        }
    }

    fn contains(self, env: &Env<'a>, x: &V<'a>) -> Option<bool> {
        self.any(env, |e| equal(&e, x))
    }
}

impl<'a> Env<'a> {
    /// The entity of the request's slice with this uid (`None`: Cedar decides what a missing entity
    /// means).
    fn entity(&self, e: &Ent<'_>) -> Option<&'a Entity> {
        // The request's own entities are referred to by their uids' addresses: no need to read them.
        if let Ent::Uid(u) = e
            && let Some(x) = self.entities.iter().flatten().find(|x| std::ptr::eq(*u, x.uid()))
        {
            return Some(x);
        }
        self.entities
            .iter()
            .flatten()
            .find(|x| e.same(&Ent::Uid(x.uid())))
            .copied()
    }

    /// The facts behind `e` when it is the principal, the resource or its upstream.
    fn facts(&self, e: &Ent<'_>) -> Option<Facts<'a>> {
        let Ent::Uid(u) = e else {
            return None;
        };
        if std::ptr::eq(*u, self.principal) {
            Some(Facts::Agent(self.principal_facts))
        } else if std::ptr::eq(*u, self.resource) {
            self.resource_facts
        } else if self.upstream.is_some_and(|x| std::ptr::eq(*u, x)) {
            self.upstream_facts.map(Facts::Upstream)
        } else {
            None
        }
    }

    /// Attribute `attr` of entity `e`: from the facts behind it, else from the entity (`None`:
    /// Cedar decides what a missing entity or attribute means).
    fn attr(&self, e: &Ent<'_>, attr: &str) -> Option<V<'a>> {
        if let Some(f) = self.facts(e).and_then(|f| f.get(attr)) {
            return Some(match f {
                Fact::Str(s) => V::Str(s),
                Fact::Long(i) => V::Long(i),
                Fact::Human(h) => V::Entity(Ent::Named(self.human_type, h)),
                // A tool's or dataset's upstream is the request's upstream (`prepare`).
                Fact::Upstream(n) => V::Entity(match self.upstream {
                    Some(u) => Ent::Uid(u),
                    None => Ent::Named(self.upstream_type, n),
                }),
                Fact::Upstreams(list) => V::Set(SetRef::Upstreams(list)),
            });
        }
        from_partial(self.entity(e)?.get(attr)?)
    }

    /// Whether entity `e` has attribute `attr` (`None`: Cedar decides for a missing entity).
    fn has(&self, e: &Ent<'_>, attr: &str) -> Option<bool> {
        if self.facts(e).and_then(|f| f.get(attr)).is_some() {
            return Some(true);
        }
        Some(self.entity(e)?.get(attr).is_some())
    }

    fn ctx(&self, c: Ctx) -> Option<V<'a>> {
        let task = || self.ctx.task.as_ref();
        Some(match c {
            Ctx::RiskSecret => V::Bool(self.ctx.risk.secret_in_args),
            Ctx::RiskScore => V::Long(i64::from(self.ctx.risk.score)),
            Ctx::EnvAgent => V::Str(self.agent_env),
            Ctx::EnvResource => V::Str(self.resource_env),
            Ctx::Hour => V::Long(self.hour),
            Ctx::Weekday => V::Long(self.weekday),
            Ctx::Unix => V::Long(self.unix),
            Ctx::Granted => V::Bool(self.granted),
            Ctx::Approvers => V::Long(self.approvers),
            Ctx::Depth => V::Long(i64::from(task().map_or(0, |t| t.depth))),
            Ctx::Chain => V::Set(SetRef::Agents(task().map_or(&[], |t| t.chain.as_slice()))),
            Ctx::TaskId => V::Str(&task()?.id),
            Ctx::TaskPurpose => V::Str(&task()?.purpose),
            Ctx::TaskType => V::Str(&task()?.task_type),
            Ctx::TaskUpstreams => V::Set(SetRef::Upstreams(&task()?.upstreams)),
            Ctx::TaskTools => V::Set(SetRef::Strings(&task()?.tools)),
            Ctx::TaskDatasets => V::Set(SetRef::Strings(&task()?.datasets)),
            Ctx::TaskResources => V::Set(SetRef::Strings(&task()?.resources)),
            Ctx::TaskPrompts => V::Set(SetRef::Strings(&task()?.prompts)),
            // `context.mcp` is an error without the MCP message: Cedar reports it.
            Ctx::McpMethod => V::Str(&self.ctx.mcp.as_ref()?.method),
            Ctx::McpKind => V::Str(self.ctx.mcp.as_ref()?.kind.as_str()),
            Ctx::Sensitivity => V::Str(self.sensitivity),
            Ctx::SensitivityLevel => V::Long(self.sensitivity_level),
            Ctx::Upstream => V::Entity(Ent::Uid(self.upstream?)),
        })
    }

    fn tag(&self, key: &str) -> Option<Option<&'a PartialValue>> {
        // `context.args` is an error without arguments.
        self.ctx.args.as_ref()?;
        let tags = self.tags.get_or_init(self.make_tags);
        Some(tags.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v))
    }
}

impl Programs {
    /// The value of the condition at `root` when it is a boolean Cedar would compute without an
    /// error; `None` when Cedar must decide.
    pub fn eval(&self, root: u32, env: &Env<'_>) -> Option<bool> {
        self.boolean(root, env)
    }

    fn boolean(&self, at: u32, env: &Env<'_>) -> Option<bool> {
        match self.value(at as usize, env)? {
            V::Bool(b) => Some(b),
            _ => None,
        }
    }

    fn long(&self, at: u32, env: &Env<'_>) -> Option<i64> {
        match self.value(at as usize, env)? {
            V::Long(i) => Some(i),
            _ => None,
        }
    }

    fn value<'a>(&'a self, at: usize, env: &Env<'a>) -> Option<V<'a>> {
        Some(match self.nodes.get(at)? {
            Node::Lit(s) => from_scalar(s),
            Node::Set(items) => V::Set(SetRef::Lits(items)),
            Node::Principal => V::Entity(Ent::Uid(env.principal)),
            Node::Action => V::Entity(Ent::Uid(env.action)),
            Node::Resource => V::Entity(Ent::Uid(env.resource)),
            Node::Ctx(c) => env.ctx(*c)?,
            Node::CtxHas(p) => V::Bool(match p {
                Present::Always => true,
                Present::Task => env.ctx.task.is_some(),
                Present::Args => env.ctx.args.is_some(),
                Present::Upstream => env.upstream.is_some(),
                Present::ToolArgs => env.has_tool_args,
                Present::Mcp => env.ctx.mcp.is_some(),
            }),
            Node::TaskHas(known) => {
                env.ctx.task.as_ref()?;
                V::Bool(*known)
            }
            Node::HasTaskField(known) => V::Bool(*known && env.ctx.task.is_some()),
            Node::HasTag(key) => V::Bool(env.tag(key)?.is_some()),
            Node::GetTag(key) => from_partial(env.tag(key)??)?,
            Node::Attr(of, attr) => match self.value(*of as usize, env)? {
                V::Entity(e) => env.attr(&e, attr)?,
                V::Record(r) => from_value(r.get(attr)?)?,
                _ => return None,
            },
            Node::Has(of, attr) => match self.value(*of as usize, env)? {
                V::Entity(e) => V::Bool(env.has(&e, attr)?),
                V::Record(r) => V::Bool(r.contains_key(attr)),
                _ => return None,
            },
            Node::And(l, r) => V::Bool(self.boolean(*l, env)? && self.boolean(*r, env)?),
            Node::Or(l, r) => V::Bool(self.boolean(*l, env)? || self.boolean(*r, env)?),
            Node::If(t, a, b) => {
                let branch = if self.boolean(*t, env)? { a } else { b };
                self.value(*branch as usize, env)?
            }
            Node::Not(a) => V::Bool(!self.boolean(*a, env)?),
            Node::Neg(a) => V::Long(self.long(*a, env)?.checked_neg()?),
            Node::IsEmpty(a) => match self.value(*a as usize, env)? {
                V::Set(s) => V::Bool(s.is_empty()),
                _ => return None,
            },
            Node::Is(a, ty) => match self.value(*a as usize, env)? {
                V::Entity(e) => V::Bool(e.ty() == &**ty),
                _ => return None,
            },
            Node::Like(a, pattern) => match self.value(*a as usize, env)? {
                V::Str(s) => V::Bool(pattern.wildcard_match(s)),
                _ => return None,
            },
            Node::Bin(op, a, b) => {
                let x = self.value(*a as usize, env)?;
                let y = self.value(*b as usize, env)?;
                binary(*op, x, y, env)?
            }
        })
    }
}

fn binary<'a>(op: BinaryOp, x: V<'a>, y: V<'a>, env: &Env<'a>) -> Option<V<'a>> {
    Some(match (op, x, y) {
        (BinaryOp::Eq, x, y) => V::Bool(equal(&x, &y)?),
        (BinaryOp::Less, V::Long(a), V::Long(b)) => V::Bool(a < b),
        (BinaryOp::LessEq, V::Long(a), V::Long(b)) => V::Bool(a <= b),
        (BinaryOp::Add, V::Long(a), V::Long(b)) => V::Long(a.checked_add(b)?),
        (BinaryOp::Sub, V::Long(a), V::Long(b)) => V::Long(a.checked_sub(b)?),
        (BinaryOp::Mul, V::Long(a), V::Long(b)) => V::Long(a.checked_mul(b)?),
        (BinaryOp::In, V::Entity(e), rhs) => {
            // Cedar decides what `in` means for an entity the request does not hold.
            let entity = env.entity(&e)?;
            let within = |target: &Ent<'_>| -> bool {
                e.same(target)
                    || match target {
                        Ent::Uid(u) => entity.is_descendant_of(u),
                        Ent::Named(..) => entity.ancestors().any(|a| target.same(&Ent::Uid(a))),
                    }
            };
            match rhs {
                V::Entity(t) => V::Bool(within(&t)),
                V::Set(s) => {
                    // Every element must be an entity (else Cedar's type error), so look at all.
                    let mut found = false;
                    s.any(env, |v| match v {
                        V::Entity(t) => {
                            found |= within(&t);
                            Some(false)
                        }
                        _ => None,
                    })?;
                    V::Bool(found)
                }
                _ => return None,
            }
        }
        (BinaryOp::Contains, V::Set(s), x) => V::Bool(s.contains(env, &x)?),
        (BinaryOp::ContainsAll, V::Set(a), V::Set(b)) => {
            V::Bool(!b.any(env, |y| Some(!a.contains(env, &y)?))?)
        }
        (BinaryOp::ContainsAny, V::Set(a), V::Set(b)) => V::Bool(b.any(env, |y| a.contains(env, &y))?),
        _ => return None,
    })
}

/// What a decision reads first about a policy's condition for one resource type (8 bytes: the
/// five of a policy share a cache line): how it evaluates, and what it means when it holds.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Hot {
    /// The condition's root in [`Programs`] (with [`hot::NATIVE`]).
    pub root: u32,
    /// [`hot`] bits.
    pub flags: u8,
    /// The `@quorum` of an `@approval` permit.
    pub quorum: u8,
}

/// The bits of [`Hot::flags`].
pub(crate) mod hot {
    /// A `forbid` (else a `permit`).
    pub const FORBID: u8 = 1 << 0;
    /// The condition can read the approval state.
    pub const READS_APPROVAL: u8 = 1 << 1;
    /// An `@approval` permit.
    pub const APPROVAL: u8 = 1 << 2;
    /// The condition is the constant `true`.
    pub const TRUE: u8 = 1 << 3;
    /// The condition is the constant `false`.
    pub const FALSE: u8 = 1 << 4;
    /// The condition is in the native evaluator's subset (`Hot::root`).
    pub const NATIVE: u8 = 1 << 5;
}
