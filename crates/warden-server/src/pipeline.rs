//! The one decision pipeline every enforcement point goes through: the MCP gateway (every message
//! an agent sends, every stream it opens, Warden's own catalogue fetch) and `POST /v1/authorize`.
//!
//! ```text
//! TaskCaller (authenticated) ─▶ Question ─▶ decide() ─▶ Verdict ─▶ commit() ─▶ Ruling::Cleared(Cleared)
//!                                   │  scan args and the rest of the message (risk)     │
//!                                   │  task context (cached per task record)            └▶ Ruling::Refused
//!                                   │  policy, then the approval gate
//!                                   └  the decision entry (arguments redacted, sensitive values HMAC'd)
//! ```
//!
//! INVARIANT (decide, record, then act): a [`Cleared`] is the only proof that an action may happen,
//! and only [`commit`] makes one — from an allowing [`Decision`] whose ledger entries are durable.
//! Its fields are private to this module, so no other code can forge one; the gateway's send
//! operation takes it (see `gateway::clearance`). Everything that refuses is recorded too, and a
//! refusal stands when its record cannot be written.
//!
//! Before this module the sequence was written twice (gateway and `/v1/authorize`), with three
//! copies of the task context, and `/v1/authorize` never scanned arguments.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use chrono::Utc;
use serde_json::Value;
use warden_core::{Decision, Outcome, Task};
use warden_identity::TaskIntent;
use warden_ledger::NewEntry;
use warden_policy::{Action, PolicyContext, PolicyRequest, ResourceRef, Risk, TaskContext};

use crate::AppState;
use crate::approvals::ApprovalRef;
use crate::tasks::TaskCaller;

/// What an enforcement point asks: may the caller's agent do `action` to `resource` now?
#[derive(Debug, Clone)]
pub struct Question {
    pub action: Action,
    pub resource: ResourceRef,
    /// The arguments as policy sees them (`context.args`).
    pub args: Option<Value>,
    /// Everything else the message carries to the upstream (MCP `params` besides the arguments,
    /// `_meta`, a client's answer to a server request): scanned for secrets like the arguments,
    /// recorded redacted, invisible to policy.
    pub rest: Option<Value>,
    /// JSON pointers into `args` whose values the ledger keeps only as HMAC (and the scanner skips:
    /// the caller declared them secret).
    pub sensitive: Vec<String>,
    /// The MCP message behind the question (method and kind), for `context.mcp`.
    pub mcp: Option<warden_policy::McpContext>,
}

/// What the decision entry says besides the decision itself.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    /// The upstream the action reaches.
    pub upstream: Option<String>,
    /// The `x-request-id` of the HTTP request.
    pub request_id: Option<String>,
    /// The action as the caller named it, when it is not one the policy engine knows (recorded as
    /// given, clipped).
    pub action_label: Option<String>,
    /// More members of the entry's body (`via`, `method`, `initiator`).
    pub body: serde_json::Map<String, Value>,
}

/// A decision with everything that goes with it: the approval behind it, the risk signals it saw,
/// and the ledger entries that record it (not yet durable).
#[derive(Debug)]
pub struct Verdict {
    pub decision: Decision,
    pub approval: Option<ApprovalRef>,
    pub risk: Risk,
    /// Refused before policy was asked, and why (the answer's code says so).
    pub unexamined: Option<Unexamined>,
    entries: Vec<NewEntry>,
}

/// Why a question was refused before policy could be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unexamined {
    /// The question itself is malformed (a `sensitive` pointer to nothing, …).
    BadRequest,
    /// The arguments or the rest of the message are past what the scanner examines (bytes of
    /// strings, depth): what cannot be examined is refused, never decided as if it were clean.
    TooLarge,
    /// Warden's record of the task cannot be read.
    BadTask,
}

impl Verdict {
    /// The entries that record this verdict (for callers that commit several verdicts at once and
    /// act on none of them: the batch decision point).
    pub fn into_entries(self) -> (Decision, Option<ApprovalRef>, Vec<NewEntry>) {
        (self.decision, self.approval, self.entries)
    }
}

/// The proof that an allowing decision is durable in the ledger. Only [`commit`] makes one.
#[derive(Debug)]
pub struct Cleared {
    allowed: warden_core::Allowed,
    seq: u64,
}

impl Cleared {
    pub fn decision(&self) -> &Decision {
        self.allowed.decision()
    }

    /// The ledger sequence number of the decision entry.
    pub fn seq(&self) -> u64 {
        self.seq
    }
}

/// A verdict after [`commit`].
#[derive(Debug)]
pub enum Ruling {
    /// Allowed, and the allow is durable: act.
    Cleared(Cleared, Option<ApprovalRef>),
    /// Refused: denied, waiting for approval, or allowed but not recordable.
    Refused(Refused),
}

/// A refusal, recorded when the ledger could (`seq`).
#[derive(Debug)]
pub struct Refused {
    pub decision: Decision,
    pub approval: Option<ApprovalRef>,
    pub risk: Risk,
    pub seq: Option<u64>,
    /// The decision allowed, but the ledger could not make it durable: nothing may act.
    pub ledger_unavailable: bool,
    /// Refused before policy was asked, and why.
    pub unexamined: Option<Unexamined>,
}

/// The policy context of each task seen, valid for exactly the task record it was made from (a
/// task's intent and delegation chain never change; parsing them per message showed in profiles).
#[derive(Debug, Default)]
pub struct TaskContexts(RwLock<std::collections::HashMap<uuid::Uuid, (Arc<Task>, TaskContext)>>);

/// Most task contexts remembered (then the memory starts over).
const MAX_TASK_CONTEXTS: usize = 10_000;

impl TaskContexts {
    /// The task context a decision sees: what Warden recorded for the task, never what the caller
    /// says.
    pub fn get(&self, task: &Arc<Task>) -> Result<TaskContext, String> {
        if let Ok(m) = self.0.read()
            && let Some((seen, ctx)) = m.get(&task.id)
            && Arc::ptr_eq(seen, task)
        {
            return Ok(ctx.clone());
        }
        let ctx = task_context(task)?;
        if let Ok(mut m) = self.0.write() {
            if m.len() >= MAX_TASK_CONTEXTS {
                m.clear();
            }
            m.insert(task.id, (task.clone(), ctx.clone()));
        }
        Ok(ctx)
    }
}

/// The task context of a task record (see [`TaskContexts::get`], which remembers it).
pub fn task_context(task: &Task) -> Result<TaskContext, String> {
    let intent = TaskIntent::from_authorization_details(&task.intent.to_string())
        .map_err(|e| format!("the task's recorded intent is unreadable: {e}"))?;
    let mut chain = Vec::new();
    let mut act = task.act.as_ref();
    while let Some(a) = act {
        if let Some(name) = a
            .get("sub")
            .and_then(|s| s.as_str())
            .and_then(|s| s.rsplit('/').next())
            .and_then(|n| warden_core::AgentName::parse(n).ok())
        {
            chain.push(name);
        }
        act = a.get("act");
    }
    Ok(crate::decide::task_context(
        &task.id.to_string(),
        &intent,
        task.depth,
        chain,
    ))
}

/// The active policy version (what a refusal made before policy is asked names).
pub fn policy_version(state: &AppState) -> String {
    state
        .policies
        .versions()
        .0
        .unwrap_or_else(|| crate::policy::NO_POLICY.to_owned())
}

/// A deny decided before policy (a malformed message, an unknown tool): same entry, same shape.
pub fn deny(state: &AppState, reason: String) -> Decision {
    Decision::deny(reason, policy_version(state))
}

/// Decides a question for the caller: scans the arguments and the rest of the message, builds the
/// context from Warden's record of the task, asks policy, runs the approval gate on a
/// `needs_approval`, and builds the entries that record it all.
pub async fn decide(
    state: &AppState,
    caller: &TaskCaller,
    q: Question,
    facts: Facts,
    started: Instant,
) -> Verdict {
    let now = Utc::now();
    let resource = q.resource.to_string();
    let scanned = scan(state, &q);
    let (recorded, risk) = match scanned {
        Ok(s) => s,
        Err((why, reason)) => {
            let decision = deny(state, reason);
            return unexamined(
                why,
                verdict(
                    caller,
                    &q,
                    facts,
                    decision,
                    None,
                    Risk::default(),
                    None,
                    Vec::new(),
                    started,
                ),
            );
        }
    };
    let task = match state.identity.task_contexts.get(&caller.task) {
        Ok(t) => t,
        Err(e) => {
            let decision = deny(state, format!("bad-task: {e}"));
            return unexamined(
                Unexamined::BadTask,
                verdict(
                    caller,
                    &q,
                    facts,
                    decision,
                    None,
                    risk,
                    recorded,
                    Vec::new(),
                    started,
                ),
            );
        }
    };
    let request = PolicyRequest {
        principal: caller.task.agent.clone(),
        action: q.action,
        resource: q.resource.clone(),
        context: PolicyContext {
            task: Some(task),
            args: q.args.clone(),
            risk,
            mcp: q.mcp.clone(),
            ..Default::default()
        },
    };
    let mut d = state.policies.decide(&request, now);
    if d.outcome == Outcome::Deny
        && d.reasons.iter().all(|r| r.starts_with("default-deny"))
        && let Some(task) = &request.context.task
        && let Some(why) = out_of_scope(task, &q.resource)
    {
        // Say what the agent can act on: "no policy permits" alone does not tell it that its own
        // task never asked for this. (A forbid's reason is precise already.)
        d.reasons.insert(0, why);
    }
    let (decision, approval, more) = if d.outcome == Outcome::NeedsApproval {
        let gate = crate::approvals::gate(
            state,
            caller,
            &request,
            d,
            recorded.clone(),
            facts.upstream.clone(),
            &resource,
            now,
        )
        .await;
        (gate.decision, gate.approval, gate.entries)
    } else {
        (d, None, Vec::new())
    };
    verdict(
        caller, &q, facts, decision, approval, risk, recorded, more, started,
    )
}

/// Why `resource` is outside what the task's intent names, if it is (the upstream first, then the
/// tool, dataset or prompt on it). Before policy (a tool Warden has not catalogued) it replaces
/// `unknown-tool`; after a policy deny it is the first reason.
pub fn out_of_scope(task: &TaskContext, resource: &ResourceRef) -> Option<String> {
    let (kind, names, full) = match resource {
        ResourceRef::Upstream(u) => {
            return (!task.upstreams.contains(u)).then(|| {
                format!(
                    "out-of-scope: the task's intent does not name the upstream `{u}`{}",
                    named(&task.upstreams)
                )
            });
        }
        ResourceRef::Tool(t) => ("tool", &task.tools, t),
        ResourceRef::Dataset(d) => ("dataset", &task.datasets, d),
        ResourceRef::Prompt(p) => ("prompt", &task.prompts, p),
        _ => return None,
    };
    let (upstream, name) = full.split_once('/')?;
    if !task.upstreams.iter().any(|u| u.as_str() == upstream) {
        return Some(format!(
            "out-of-scope: the task's intent does not name the upstream `{upstream}`{}",
            named(&task.upstreams)
        ));
    }
    (!names.iter().any(|n| n == name)).then(|| {
        format!(
            "out-of-scope: the task's intent does not name the {kind} `{}`{}",
            crate::ledger::clip_str(name, 200).escape_debug(),
            named(names)
        )
    })
}

/// " (it names `a`, `b`)", or " (it names none)"; at most 20 names.
fn named<T: std::fmt::Display>(names: &[T]) -> String {
    if names.is_empty() {
        return " (it names none)".to_owned();
    }
    let mut listed: Vec<String> = names.iter().take(20).map(|n| format!("`{n}`")).collect();
    if names.len() > 20 {
        listed.push(format!("and {} more", names.len() - 20));
    }
    format!(" (it names {})", listed.join(", "))
}

/// The arguments as the ledger records them (secrets redacted, sensitive values HMAC'd, bounded),
/// and the risk signals: a secret anywhere in the arguments or the rest of the message.
fn scan(state: &AppState, q: &Question) -> Result<(Option<Value>, Risk), (Unexamined, String)> {
    let scanner = &state.gateway.scanner;
    let bad = |m: String| (Unexamined::BadRequest, m);
    let too_large = |what: &str| {
        let limits = scanner.limits();
        (
            Unexamined::TooLarge,
            format!(
                "too-large: {what} are more than Warden examines (at most {} KiB of strings, {} levels \
                 deep); a message that cannot be examined in full is refused",
                limits.max_bytes / 1024,
                limits.max_depth
            ),
        )
    };
    let mut found = false;
    if let Some(rest) = &q.rest {
        let report = scanner.scan(rest);
        if report.incomplete {
            return Err(too_large("the message's parameters besides the arguments"));
        }
        found |= !report.findings.is_empty();
    }
    let recorded = match &q.args {
        None if q.sensitive.is_empty() => None,
        None => {
            return Err(bad(
                "bad-request: `sensitive` names arguments, but there are none".to_owned(),
            ));
        }
        Some(_) if q.sensitive.len() > MAX_SENSITIVE => {
            return Err(bad(format!(
                "bad-request: at most {MAX_SENSITIVE} sensitive pointers"
            )));
        }
        Some(args) => {
            // Values the caller declared sensitive are not scanned (they are secrets by
            // declaration, and kept only as HMAC); everything else is.
            let mut copy = args.clone();
            let mut held = Vec::with_capacity(q.sensitive.len());
            for p in &q.sensitive {
                let Some(slot) = copy.pointer_mut(p) else {
                    return Err(bad(format!(
                        "bad-request: sensitive `{}`: no such argument",
                        crate::ledger::clip_str(p, 128)
                    )));
                };
                held.push((p, std::mem::take(slot)));
            }
            let report = scanner.redact(&mut copy);
            if report.incomplete {
                return Err(too_large("the arguments"));
            }
            found |= !report.findings.is_empty();
            for (p, v) in held {
                if let Some(slot) = copy.pointer_mut(p) {
                    *slot = v;
                }
            }
            Some(
                state
                    .ledger
                    .recorded_arguments(&copy, &q.sensitive)
                    .map_err(|e| bad(format!("bad-request: {e}")))?,
            )
        }
    };
    Ok((
        recorded,
        Risk {
            secret_in_args: found,
            score: if found { 100 } else { 0 },
        },
    ))
}

/// Most sensitive pointers per question.
pub const MAX_SENSITIVE: usize = 64;

#[expect(clippy::too_many_arguments, reason = "one value per fact of the decision")]
fn verdict(
    caller: &TaskCaller,
    q: &Question,
    facts: Facts,
    decision: Decision,
    approval: Option<ApprovalRef>,
    risk: Risk,
    recorded: Option<Value>,
    more: Vec<NewEntry>,
    started: Instant,
) -> Verdict {
    let action = facts.action_label.as_deref().map_or_else(
        || q.action.as_str().to_owned(),
        |a| crate::ledger::clip_str(a, 64),
    );
    let record = crate::ledger::DecisionFacts {
        actor: caller.task.agent_spiffe_id.clone(),
        agent: caller.task.agent.to_string(),
        task: Some(caller.task.id.to_string()),
        action,
        upstream: facts.upstream,
        resource: Some(q.resource.to_string()),
        arguments: recorded,
        request_id: facts.request_id,
    };
    let mut entry = crate::ledger::decision_entry(record, &decision, started.elapsed());
    for (k, v) in facts.body {
        entry.body[k] = v;
    }
    if let Some(a) = &approval {
        entry.body["approval"] = a.id.to_string().into();
        entry.body["approval_state"] = a.state.as_str().into();
    }
    if risk.secret_in_args {
        entry.body["risk"] = serde_json::json!({ "secret_in_args": true });
    }
    let mut entries = vec![entry];
    entries.extend(more);
    // Refusals at info (an operator reads them); allows at debug (one per forwarded call: the
    // ledger is their record).
    if decision.outcome == Outcome::Allow {
        tracing::debug!(
            agent = %caller.task.agent, task = %caller.task.id, action = %q.action, resource = %q.resource,
            reasons = ?decision.reasons, policy = %decision.policy_version, "allowed"
        );
    } else {
        tracing::info!(
            agent = %caller.task.agent, task = %caller.task.id, action = %q.action, resource = %q.resource,
            outcome = ?decision.outcome, reasons = ?decision.reasons, policy = %decision.policy_version,
            approval = ?approval.as_ref().map(|a| a.id),
            "refused"
        );
    }
    Verdict {
        decision,
        approval,
        risk,
        unexamined: None,
        entries,
    }
}

/// `v`, marked as refused before policy for `why`.
fn unexamined(why: Unexamined, v: Verdict) -> Verdict {
    Verdict {
        unexamined: Some(why),
        ..v
    }
}

/// A refusal decided before policy is asked, with the question it refuses (for its entry).
pub fn refusal(
    state: &AppState,
    caller: &TaskCaller,
    q: &Question,
    facts: Facts,
    reason: String,
    started: Instant,
) -> Verdict {
    let decision = deny(state, reason);
    // What the refused message carried is not recorded: it was malformed or not governed, and may
    // hold anything.
    let q = Question {
        args: None,
        rest: None,
        sensitive: Vec::new(),
        ..q.clone()
    };
    verdict(
        caller,
        &q,
        facts,
        decision,
        None,
        Risk::default(),
        None,
        Vec::new(),
        started,
    )
}

/// Makes a verdict durable (with `more` entries riding in the same commit) and rules on it: only an
/// allow whose entries are durable is [`Ruling::Cleared`].
pub async fn commit(state: &AppState, v: Verdict, more: Vec<NewEntry>) -> Ruling {
    let Verdict {
        decision,
        approval,
        risk,
        unexamined,
        mut entries,
    } = v;
    entries.extend(more);
    let recorded = state.ledger.record_all(entries).await;
    match (decision.allowed(), recorded) {
        (Ok(allowed), Ok(seq)) => Ruling::Cleared(Cleared { allowed, seq }, approval),
        (Ok(allowed), Err(e)) => {
            tracing::error!(error = %e, "an allow could not be recorded; nothing acts on it");
            Ruling::Refused(Refused {
                decision: allowed.decision().clone(),
                approval,
                risk,
                seq: None,
                ledger_unavailable: true,
                unexamined,
            })
        }
        (Err(decision), recorded) => {
            if let Err(e) = &recorded {
                // A refusal stands without its record; the answer carries no sequence number.
                tracing::error!(error = %e, "a refusal could not be recorded in the audit ledger");
            }
            Ruling::Refused(Refused {
                decision,
                approval,
                risk,
                seq: recorded.ok(),
                ledger_unavailable: false,
                unexamined,
            })
        }
    }
}
