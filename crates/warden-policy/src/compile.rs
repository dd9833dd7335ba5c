//! From policy files to a [`CompiledPolicies`]: parse, check Warden's annotations, validate against
//! the schema in strict mode, and index.
//!
//! Nothing here is lenient: a set with any error does not compile, so a policy that would be
//! silently skipped at runtime (a typo in an attribute, a missing `@id`) never reaches activation.
//! Errors carry the file, line and column, mapped from Cedar's source spans, and a precise message.
//!
//! Warden's annotations:
//! - `@id("…")` — required on every policy, unique in the set: decisions name policies by it.
//! - `@approval("required")` — on a `permit` only: it applies only when the action was approved
//!   (`context.approval.granted`, with at least `quorum` approvers); see [`crate::engine`].
//! - `@quorum("N")` — with `@approval`, 1 to 10 approvers (default 1).
//! - `@reason("…")` — optional text appended to the decision's reason.
//! - `@self_approval("allowed")` — with `@approval`: the agent's own owners may approve what this
//!   policy holds for approval (by default separation of duties refuses them). Cited in the reason as
//!   [`SELF_APPROVAL_REASON`].
//! - `@approvers("upstream-owner alice@example.com")` — with `@approval`: who may approve what this
//!   policy holds for approval, narrowing the humans with the `approver` role: `upstream-owner` (the
//!   owner of the upstream the action targets) and email addresses, separated by spaces or commas.
//!   Cited in the reason after [`APPROVERS_REASON`]; a request behind several such policies may be
//!   approved only by someone every one of them names.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use cedar_policy::{Effect, PolicyId, PolicySet, Schema, ValidationMode, Validator};
use cedar_policy_core::ast;
use miette::Diagnostic;

use crate::analysis::{Variant, variants};
use crate::index::{self, Index};
use crate::native::{Hot, Programs, hot};
use crate::request::{Action, RESOURCE_KINDS};
use crate::schema::{ToolArgTypes, schema_text};
use crate::source::PolicySource;
use crate::vocab::vocab;

/// Most policies in one set.
pub const MAX_POLICIES: usize = 100_000;
/// Highest `@quorum`.
pub const MAX_QUORUM: u8 = 10;

/// A problem with a policy, where it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyError {
    /// The policy file, as named in the source (empty for problems with no file, e.g. the schema).
    pub file: String,
    /// 1-based; 0 when unknown.
    pub line: usize,
    /// 1-based, in characters; 0 when unknown.
    pub column: usize,
    /// The policy's `@id`, when known.
    pub policy_id: Option<String>,
    pub message: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.file.is_empty() {
            return f.write_str(&self.message);
        }
        write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        if let Some(id) = &self.policy_id {
            write!(f, "policy `{id}`: ")?;
        }
        f.write_str(&self.message)
    }
}

impl std::error::Error for PolicyError {}

/// One policy, ready for the hot path.
#[derive(Debug)]
pub(crate) struct CompiledPolicy {
    pub id: String,
    pub file: String,
    pub line: usize,
    pub effect: Effect,
    /// `Some(quorum)` for an `@approval("required")` permit.
    pub approval: Option<u8>,
    /// The request actions (bit `Action as usize`) the action scope admits.
    pub action_mask: u8,
    /// The resource types (bit [`ResourceRef::kind`](crate::ResourceRef)) for which the condition
    /// can hold.
    pub kind_mask: u8,
    /// How decisions cite it: `id (forbid)`, `id (permit)`, `id (permit, approval, quorum 2)`, plus
    /// `: <@reason>` when given.
    pub reason: String,
    pub ast: ast::Policy,
}

/// A validated, indexed policy set. Cheap to share (`Arc`) and immutable: activation swaps sets.
#[derive(Debug)]
pub struct CompiledPolicies {
    pub(crate) version: String,
    pub(crate) schema: Schema,
    pub(crate) set: PolicySet,
    pub(crate) policies: Vec<CompiledPolicy>,
    pub(crate) by_id: HashMap<String, u32>,
    pub(crate) index: Index,
    /// Per policy and resource type (`policy * RESOURCE_KINDS + kind`,
    /// [`ResourceRef::kind`](crate::ResourceRef)), the condition evaluated on the hot path and what
    /// it reads, built once: scope and body without source locations, without the scopes the index
    /// decides, type tests folded ([`crate::analysis`]).
    pub(crate) hot: Vec<Arc<Variant>>,
    /// The same, compact, for the first look at a candidate: by `policy * RESOURCE_KINDS + kind`.
    pub(crate) fast: Vec<Hot>,
    /// The conditions in the native evaluator's subset ([`crate::native`]).
    pub(crate) programs: Programs,
    /// The action entities (with their groups), by `Action as usize`.
    pub(crate) action_entities: Vec<Arc<ast::Entity>>,
    pub(crate) tool_types: ToolArgTypes,
    /// Whether any policy can need approval (`@approval`, or reads `context.approval`).
    pub(crate) any_mentions_approval: bool,
    warnings: Vec<PolicyError>,
}

/// The line and column (1-based, in characters) of a byte offset.
fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn diag_message(d: &dyn Diagnostic, display: String) -> String {
    match d.help() {
        Some(help) => format!("{display} ({help})"),
        None => display,
    }
}

fn first_offset(d: &dyn Diagnostic) -> Option<usize> {
    d.labels()?.next().map(|l| l.offset())
}

fn loc_offset(p: &cedar_policy::Policy) -> usize {
    let policy: &ast::Policy = p.as_ref();
    policy.loc().map_or(0, |l| l.span.offset())
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ':' | '/'))
}

/// Compiles a policy source against the shipped schema (no typed tool arguments).
pub fn compile(source: &PolicySource) -> Result<CompiledPolicies, Vec<PolicyError>> {
    compile_with_tools(source, &ToolArgTypes::new())
}

/// Compiles a policy source against the shipped schema extended with the typed arguments of the
/// tools that declare an input schema.
pub fn compile_with_tools(
    source: &PolicySource,
    tools: &ToolArgTypes,
) -> Result<CompiledPolicies, Vec<PolicyError>> {
    let bare = |m: String| PolicyError {
        file: String::new(),
        line: 0,
        column: 0,
        policy_id: None,
        message: m,
    };
    let schema = Schema::from_cedarschema_str(&schema_text(tools))
        .map(|(s, _)| s)
        .map_err(|e| vec![bare(format!("the schema does not parse: {e}"))])?;
    let vocab = vocab().map_err(|e| vec![bare(format!("internal: {e}"))])?;

    let mut errors = Vec::new();
    let mut set = PolicySet::new();
    // Per policy: (file index, line) for messages.
    let mut origin: HashMap<String, (usize, usize)> = HashMap::new();
    let mut count = 0usize;

    for (fi, file) in source.files().iter().enumerate() {
        let err_at = |offset: usize, id: Option<&str>, message: String| {
            let (line, column) = line_col(&file.text, offset);
            PolicyError {
                file: file.name.clone(),
                line,
                column,
                policy_id: id.map(str::to_owned),
                message,
            }
        };
        let parsed = match PolicySet::from_str(&file.text) {
            Ok(p) => p,
            Err(es) => {
                for e in es.iter() {
                    let offset = first_offset(e).unwrap_or(0);
                    errors.push(err_at(offset, None, diag_message(e, e.to_string())));
                }
                continue;
            }
        };
        if parsed.templates().next().is_some() {
            for t in parsed.templates() {
                let tpl: &ast::Template = t.as_ref();
                let offset = tpl.loc().map_or(0, |l| l.span.offset());
                errors.push(err_at(
                    offset,
                    t.annotation("id"),
                    "templates (policies with `?principal` or `?resource`) are not supported; write static policies".into(),
                ));
            }
            continue;
        }
        // Keep the file's order (Cedar's set is keyed by generated ids `policy0`, `policy1`, …).
        let mut policies: Vec<&cedar_policy::Policy> = parsed.policies().collect();
        policies.sort_by_key(|p| loc_offset(p));
        for p in policies {
            count += 1;
            let offset = loc_offset(p);
            let Some(id) = p.annotation("id") else {
                errors.push(err_at(
                    offset,
                    None,
                    "every policy needs an `@id(\"...\")` annotation; decisions name policies by it".into(),
                ));
                continue;
            };
            if !valid_id(id) {
                errors.push(err_at(
                    offset,
                    None,
                    format!(
                        "policy id `{}` must be 1 to 128 characters of letters, digits and `-_.:/`",
                        id.escape_debug()
                    ),
                ));
                continue;
            }
            if let Some((ofi, oline)) = origin.get(id) {
                let other = source.files().get(*ofi).map_or("", |f| f.name.as_str());
                errors.push(err_at(
                    offset,
                    Some(id),
                    format!("policy id `{id}` is already used at {other}:{oline}"),
                ));
                continue;
            }
            if let Err(m) = check_annotations(p) {
                errors.push(err_at(offset, Some(id), m));
                continue;
            }
            let (line, _) = line_col(&file.text, offset);
            origin.insert(id.to_owned(), (fi, line));
            if let Err(e) = set.add(p.new_id(PolicyId::new(id))) {
                errors.push(err_at(offset, Some(id), e.to_string()));
            }
        }
        if count > MAX_POLICIES {
            errors.push(bare(format!(
                "the policy set has more than {MAX_POLICIES} policies"
            )));
            return Err(errors);
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }

    // Strict validation against the schema.
    let located = |id: &str, offset: Option<usize>, message: String| {
        let (fi, line) = origin.get(id).copied().unwrap_or((usize::MAX, 0));
        match source.files().get(fi) {
            Some(file) => {
                let (line, column) = offset.map_or((line, 1), |o| line_col(&file.text, o));
                PolicyError {
                    file: file.name.clone(),
                    line,
                    column,
                    policy_id: Some(id.to_owned()),
                    message,
                }
            }
            None => PolicyError {
                policy_id: Some(id.to_owned()),
                ..bare(message)
            },
        }
    };
    let validator = Validator::new(schema.clone());
    let result = validator.validate(&set, ValidationMode::Strict);
    for e in result.validation_errors() {
        let id = e.policy_id().to_string();
        errors.push(located(&id, first_offset(e), diag_message(e, e.to_string())));
    }
    let warnings: Vec<PolicyError> = result
        .validation_warnings()
        .map(|w| {
            let id = w.policy_id().to_string();
            located(&id, first_offset(w), diag_message(w, w.to_string()))
        })
        .collect();
    if !errors.is_empty() {
        errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
        return Err(errors);
    }

    // Action entities and their groups, from the schema.
    let actions = schema
        .action_entities()
        .map_err(|e| vec![bare(format!("the schema's actions: {e}"))])?;
    let mut action_entities = Vec::with_capacity(Action::ALL.len());
    let mut action_closure = Vec::with_capacity(Action::ALL.len());
    for a in Action::ALL {
        let uid = vocab.action(*a);
        let api_uid = cedar_policy::EntityUid::from((**uid).clone());
        let Some(e) = actions.get(&api_uid) else {
            return Err(vec![bare(format!("the schema lacks action `{a}`"))]);
        };
        let core: &ast::Entity = e.as_ref();
        let mut closure = vec![(**uid).clone()];
        closure.extend(core.ancestors().cloned());
        action_closure.push(closure);
        action_entities.push(Arc::new(core.clone()));
    }

    // Compile each policy for the hot path, in file order.
    let resource_types = vocab.resource_types();
    let mut ids: Vec<(&String, &(usize, usize))> = origin.iter().collect();
    ids.sort_by(|a, b| a.1.cmp(b.1).then(a.0.cmp(b.0)));
    let mut policies = Vec::with_capacity(ids.len());
    let mut hot = Vec::with_capacity(ids.len() * RESOURCE_KINDS);
    let mut fast: Vec<Hot> = Vec::with_capacity(ids.len() * RESOURCE_KINDS);
    let mut programs = Programs::default();
    let mut types: Vec<ast::EntityType> = resource_types.to_vec();
    types.push(vocab.human.clone());
    types.push(vocab.action(Action::Read).entity_type().clone());
    for (id, (fi, line)) in ids {
        let Some(p) = set.policy(&PolicyId::new(id.as_str())) else {
            continue;
        };
        let approval = p.annotation("approval").map(|_| {
            p.annotation("quorum")
                .and_then(|q| q.parse::<u8>().ok())
                .unwrap_or(1)
        });
        let effect = p.effect();
        let mut reason = match (effect, approval) {
            (Effect::Forbid, _) => format!("{id} (forbid)"),
            (Effect::Permit, None) => format!("{id} (permit)"),
            (Effect::Permit, Some(q)) => {
                let mut r = format!("{id} (permit, approval, quorum {q}");
                if p.annotation("self_approval") == Some("allowed") {
                    r.push_str(", ");
                    r.push_str(SELF_APPROVAL_REASON);
                }
                if let Some(list) = p.annotation("approvers") {
                    r.push_str(", ");
                    r.push_str(APPROVERS_REASON);
                    r.push_str(&normalized_approvers(list).join(" "));
                }
                r.push(')');
                r
            }
        };
        if let Some(r) = p.annotation("reason") {
            reason.push_str(": ");
            reason.push_str(r);
        }
        let core: &ast::Policy = p.as_ref();
        let (action_mask, exact) = index::action_mask(core.action_constraint(), &action_closure);
        let variants = variants(
            core,
            effect,
            approval,
            exact,
            &vocab.agent,
            &resource_types,
            &vocab.args,
        );
        let kind_mask = variants
            .iter()
            .enumerate()
            .filter(|(_, v)| v.live)
            .fold(0u8, |m, (k, _)| m | (1 << k));
        for (k, v) in variants.iter().enumerate() {
            // Variants shared between resource types share their program.
            let shared = variants
                .iter()
                .take(k)
                .position(|w| Arc::ptr_eq(v, w))
                .and_then(|at| fast.get(fast.len() - k + at).copied());
            let entry = shared.unwrap_or_else(|| {
                let mut flags = 0;
                if v.effect == Effect::Forbid {
                    flags |= hot::FORBID;
                }
                if v.reads_approval {
                    flags |= hot::READS_APPROVAL;
                }
                if v.approval.is_some() {
                    flags |= hot::APPROVAL;
                }
                let mut root = 0;
                match v.condition.expr_kind() {
                    ast::ExprKind::Lit(ast::Literal::Bool(true)) => flags |= hot::TRUE,
                    ast::ExprKind::Lit(ast::Literal::Bool(false)) => flags |= hot::FALSE,
                    _ => {
                        if let Some(r) = programs.add(&v.condition, &vocab.args, &types) {
                            flags |= hot::NATIVE;
                            root = r;
                        }
                    }
                }
                Hot {
                    root,
                    flags,
                    quorum: v.approval.unwrap_or(0),
                }
            });
            fast.push(entry);
        }
        hot.extend(variants);
        policies.push(CompiledPolicy {
            id: id.clone(),
            file: source
                .files()
                .get(*fi)
                .map(|f| f.name.clone())
                .unwrap_or_default(),
            line: *line,
            effect,
            approval,
            action_mask,
            kind_mask,
            reason,
            ast: core.clone(),
        });
    }
    let by_id = policies
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.clone(), i as u32))
        .collect();

    let index = Index::build(&policies, &action_closure, &types);
    let any_mentions_approval = hot.iter().any(|v| v.approval.is_some() || v.reads_approval);
    Ok(CompiledPolicies {
        version: source.version(),
        schema,
        set,
        policies,
        by_id,
        index,
        hot,
        fast,
        programs,
        action_entities,
        tool_types: tools.clone(),
        any_mentions_approval,
        warnings,
    })
}

/// How a decision's reason marks an approval policy that lets owners approve their own agent's
/// requests (`@self_approval("allowed")`).
pub const SELF_APPROVAL_REASON: &str = "self-approval allowed";

/// How a decision's reason introduces the approvers an approval policy names (`@approvers`),
/// followed by the names separated by single spaces.
pub const APPROVERS_REASON: &str = "approvers: ";

/// The `@approvers` value that names the owner of the upstream the action targets.
pub const UPSTREAM_OWNER: &str = "upstream-owner";

/// Most names in one `@approvers`.
pub const MAX_APPROVERS: usize = 32;

/// The names in an `@approvers` value (separated by commas or white space).
fn approver_specs(list: &str) -> impl Iterator<Item = &str> {
    list.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
}

/// The names of a (checked) `@approvers` value as decisions cite them: emails lowercased.
fn normalized_approvers(list: &str) -> Vec<String> {
    approver_specs(list)
        .map(|s| match warden_core::Email::parse(s) {
            Ok(e) => e.as_str().to_owned(),
            Err(_) => s.to_owned(),
        })
        .collect()
}

fn check_approvers(p: &cedar_policy::Policy) -> Result<(), String> {
    let Some(list) = p.annotation("approvers") else {
        return Ok(());
    };
    if p.annotation("approval") != Some("required") {
        return Err("`@approvers` needs `@approval(\"required\")`".into());
    }
    let mut n = 0;
    for spec in approver_specs(list) {
        n += 1;
        if spec != UPSTREAM_OWNER && warden_core::Email::parse(spec).is_err() {
            return Err(format!(
                "`@approvers` names `{}`, which is neither `{UPSTREAM_OWNER}` nor an email address",
                spec.escape_debug()
            ));
        }
    }
    if n == 0 {
        return Err(format!(
            "`@approvers` is empty; name `{UPSTREAM_OWNER}` or email addresses, or leave it out"
        ));
    }
    if n > MAX_APPROVERS {
        return Err(format!(
            "`@approvers` names {n} approvers; at most {MAX_APPROVERS}"
        ));
    }
    Ok(())
}

fn check_annotations(p: &cedar_policy::Policy) -> Result<(), String> {
    check_approvers(p)?;
    match p.annotation("self_approval") {
        None => {}
        Some("allowed") if p.annotation("approval") == Some("required") => {}
        Some("allowed") => {
            return Err("`@self_approval` needs `@approval(\"required\")`".into());
        }
        Some(other) => {
            return Err(format!(
                "`@self_approval(\"{}\")` is not understood; write `@self_approval(\"allowed\")`",
                other.escape_debug()
            ));
        }
    }
    match p.annotation("approval") {
        None => {
            if p.annotation("quorum").is_some() {
                return Err("`@quorum` needs `@approval(\"required\")`".into());
            }
        }
        Some("required") => {
            if p.effect() != Effect::Permit {
                return Err("`@approval` applies to `permit` policies only".into());
            }
            if let Some(q) = p.annotation("quorum") {
                match q.parse::<u8>() {
                    Ok(n) if (1..=MAX_QUORUM).contains(&n) => {}
                    _ => {
                        return Err(format!(
                            "`@quorum(\"{}\")` must be a number from 1 to {MAX_QUORUM}",
                            q.escape_debug()
                        ));
                    }
                }
            }
        }
        Some(other) => {
            return Err(format!(
                "`@approval(\"{}\")` is not understood; write `@approval(\"required\")`",
                other.escape_debug()
            ));
        }
    }
    Ok(())
}

impl CompiledPolicies {
    /// The content hash of the source this set was compiled from.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Number of policies.
    pub fn len(&self) -> usize {
        self.policies.len()
    }

    pub fn is_empty(&self) -> bool {
        self.policies.is_empty()
    }

    /// Validator warnings (not fatal), located like errors.
    pub fn warnings(&self) -> &[PolicyError] {
        &self.warnings
    }

    /// The policy ids, in file order.
    pub fn policy_ids(&self) -> impl Iterator<Item = &str> {
        self.policies.iter().map(|p| p.id.as_str())
    }

    /// The Cedar policy set (ids are the `@id`s), e.g. to print or to hand to other Cedar tools.
    pub fn policy_set(&self) -> &PolicySet {
        &self.set
    }

    /// The schema the set was validated against.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The typed tool-argument views the set was compiled with (`context.tool_args`).
    pub fn tool_types(&self) -> &ToolArgTypes {
        &self.tool_types
    }

    /// The text of policy `id` as Cedar prints it, if the set has it.
    pub fn policy_text(&self, id: &str) -> Option<String> {
        self.set.policy(&PolicyId::new(id)).map(ToString::to_string)
    }

    /// Where the index put the policies: (always, by principal, by resource, by action).
    pub fn index_stats(&self) -> IndexStats {
        self.index.stats()
    }
}

/// How the index distributed the policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IndexStats {
    /// Policies with no entity or action in their scope: evaluated for every request.
    pub always: usize,
    pub by_principal: usize,
    pub by_resource: usize,
    pub by_action: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(text: &str) -> PolicySource {
        PolicySource::single("p.cedar", text).expect("source")
    }

    #[test]
    fn line_and_column() {
        assert_eq!(line_col("ab\ncd", 0), (1, 1));
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("é\nx", 3), (2, 1));
    }

    #[test]
    fn valid_set_compiles() {
        let c = compile(&src(r#"
@id("reads")
permit(principal, action == Warden::Action::"read", resource);

@id("no-prototypes")
forbid(principal, action, resource) when { principal.environment == "prototype" };
"#))
        .expect("compiles");
        assert_eq!(c.policy_ids().collect::<Vec<_>>(), ["reads", "no-prototypes"]);
        assert_eq!(c.version().len(), 64);
    }

    #[test]
    fn parse_errors_are_located() {
        let errs = compile(&src(
            "@id(\"a\")\npermit(principal, action, resource)\n  when { principal.name == };",
        ))
        .expect_err("parse error");
        assert_eq!((errs[0].file.as_str(), errs[0].line), ("p.cedar", 3), "{errs:?}");
        assert!(errs[0].column > 1, "{errs:?}");
    }

    #[test]
    fn missing_and_duplicate_ids_are_refused() {
        let errs = compile(&src(
            "permit(principal, action, resource);\n\n@id(\"x\")\npermit(principal, action, resource);\n@id(\"x\")\nforbid(principal, action, resource);",
        ))
        .expect_err("refused");
        assert_eq!(errs.len(), 2, "{errs:?}");
        assert_eq!((errs[0].line, errs[0].column), (1, 1));
        assert!(errs[0].message.contains("needs an `@id"), "{errs:?}");
        assert_eq!(errs[1].line, 5);
        assert!(errs[1].message.contains("already used at p.cedar:3"), "{errs:?}");
    }

    #[test]
    fn strict_validation_errors_are_located() {
        let text =
            "@id(\"a\")\npermit(principal, action, resource)\nwhen {\n  principal.enviroment == \"x\"\n};";
        let errs = compile(&src(text)).expect_err("typo");
        let e = &errs[0];
        assert_eq!((e.file.as_str(), e.line), ("p.cedar", 4), "{errs:?}");
        assert_eq!(e.policy_id.as_deref(), Some("a"));
        assert!(e.message.contains("enviroment"), "{e}");
        assert!(e.to_string().starts_with("p.cedar:4:"), "{e}");
    }

    #[test]
    fn annotations_are_checked() {
        for (text, want) in [
            (
                "@id(\"a\") @approval(\"yes\") permit(principal, action, resource);",
                "not understood",
            ),
            (
                "@id(\"a\") @approval(\"required\") forbid(principal, action, resource);",
                "`permit` policies only",
            ),
            (
                "@id(\"a\") @approval(\"required\") @quorum(\"11\") permit(principal, action, resource);",
                "from 1 to 10",
            ),
            (
                "@id(\"a\") @quorum(\"2\") permit(principal, action, resource);",
                "needs `@approval",
            ),
            (
                "@id(\"a b\") permit(principal, action, resource);",
                "must be 1 to 128",
            ),
            (
                "@id(\"a\") @self_approval(\"allowed\") permit(principal, action, resource);",
                "needs `@approval",
            ),
            (
                "@id(\"a\") @approval(\"required\") @self_approval(\"yes\") permit(principal, action, resource);",
                "not understood",
            ),
            (
                "@id(\"a\") @approvers(\"upstream-owner\") permit(principal, action, resource);",
                "needs `@approval",
            ),
            (
                "@id(\"a\") @approval(\"required\") @approvers(\"team-leads\") permit(principal, action, resource);",
                "neither `upstream-owner` nor an email",
            ),
            (
                "@id(\"a\") @approval(\"required\") @approvers(\" , \") permit(principal, action, resource);",
                "is empty",
            ),
        ] {
            let errs = compile(&src(text)).expect_err(text);
            assert!(errs[0].message.contains(want), "{text}: {errs:?}");
        }
        let c = compile(&src(
            "@id(\"w\") @approval(\"required\") @quorum(\"2\") @reason(\"two people\")\npermit(principal, action, resource);",
        ))
        .expect("ok");
        assert_eq!(c.policies[0].approval, Some(2));
        assert_eq!(c.policies[0].reason, "w (permit, approval, quorum 2): two people");
        let c = compile(&src(
            "@id(\"s\") @approval(\"required\") @self_approval(\"allowed\")\npermit(principal, action, resource);",
        ))
        .expect("ok");
        assert_eq!(
            c.policies[0].reason,
            "s (permit, approval, quorum 1, self-approval allowed)"
        );
        let c = compile(&src(
            "@id(\"o\") @approval(\"required\") @approvers(\"upstream-owner, Carol@Example.com\")\npermit(principal, action, resource);",
        ))
        .expect("ok");
        assert_eq!(
            c.policies[0].reason,
            "o (permit, approval, quorum 1, approvers: upstream-owner carol@example.com)"
        );
    }

    #[test]
    fn templates_are_refused() {
        let errs = compile(&src(
            "@id(\"t\") permit(principal == ?principal, action, resource);",
        ))
        .expect_err("template");
        assert!(errs[0].message.contains("templates"), "{errs:?}");
    }
}
