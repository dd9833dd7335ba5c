//! The decisions the credential flows need: may this agent start this task, may this agent take over
//! part of that one. Both go through the active Cedar policy set ([`crate::policy::Policies`]); the
//! token endpoint acts only on the [`warden_core::Allowed`] an allowing decision yields.
//!
//! `needs_approval` cannot be satisfied for starting or delegating a task yet (approvals apply to
//! actions, issue 6), so here it is reported as a deny that says an approval would be needed.

use chrono::{DateTime, Utc};
use warden_core::{Agent, AgentName, Decision, Outcome};
use warden_identity::TaskIntent;
use warden_policy::{Action, PolicyContext, PolicyRequest, ResourceRef, TaskContext};

use crate::policy::Policies;

/// The hard cap on delegation depth from the configuration, checked before policy (which may be
/// stricter, never looser).
pub const DEPTH_CAP_RULE: &str = "config:max_delegation_depth";

/// The policy view of a task's intent: the one constructor of a `TaskContext` from an intent (a
/// task being started or delegated here; a recorded task in [`crate::pipeline::task_context`]).
pub(crate) fn task_context(
    task_id: &str,
    intent: &TaskIntent,
    depth: u8,
    chain: Vec<AgentName>,
) -> TaskContext {
    TaskContext {
        id: task_id.to_owned(),
        purpose: intent.purpose.clone(),
        task_type: intent.task_type.clone(),
        upstreams: intent.upstreams.clone(),
        tools: intent.tools.clone(),
        datasets: intent.datasets.clone(),
        resources: intent.resources.clone(),
        prompts: intent.prompts.clone(),
        depth,
        chain,
    }
}

fn request(agent: &Agent, action: Action, task: TaskContext) -> PolicyRequest {
    PolicyRequest {
        principal: agent.name.clone(),
        action,
        resource: ResourceRef::Task(task.id.clone()),
        context: PolicyContext {
            task: Some(task),
            ..Default::default()
        },
    }
}

fn no_pending(mut d: Decision) -> Decision {
    if d.outcome == Outcome::NeedsApproval {
        d.outcome = Outcome::Deny;
        d.reasons.push(
            "an approval would be needed, and starting or delegating a task cannot wait for one".into(),
        );
    }
    d
}

/// May `agent` start task `task_id` with `intent`?
pub fn task_start(
    policies: &Policies,
    agent: &Agent,
    task_id: &str,
    intent: &TaskIntent,
    now: DateTime<Utc>,
) -> Decision {
    let req = request(
        agent,
        Action::TaskStart,
        task_context(task_id, intent, 0, Vec::new()),
    );
    no_pending(policies.decide(&req, now))
}

/// May `child` take over part of a task as `task_id` at `depth`, with the chain of delegating agents?
#[expect(clippy::too_many_arguments, reason = "one value per fact the decision needs")]
pub fn delegation(
    policies: &Policies,
    child: &Agent,
    task_id: &str,
    narrowed: &TaskIntent,
    depth: u8,
    max_depth: u8,
    chain: Vec<AgentName>,
    now: DateTime<Utc>,
) -> Decision {
    if depth > max_depth {
        return Decision::deny(
            format!("{DEPTH_CAP_RULE}: a chain of depth {depth} exceeds the configured limit of {max_depth}"),
            policies
                .versions()
                .0
                .unwrap_or_else(|| crate::policy::NO_POLICY.to_owned()),
        );
    }
    let req = request(
        child,
        Action::TaskDelegate,
        task_context(task_id, narrowed, depth, chain),
    );
    no_pending(policies.decide(&req, now))
}
