//! The decision seam for starting and delegating tasks.
//!
//! Until the policy engine lands (Cedar, issue 4), these built-in rules decide: an agent may start a task
//! only while active and only within its allowed upstreams; a delegation may not go deeper than the
//! configured depth and never wider than the parent task and the child's own allowed upstreams. The
//! token endpoint calls these functions and acts only on the [`Allowed`] they yield; the policy issue
//! replaces their bodies, not their callers.

use warden_core::{Agent, AgentState, Decision};
use warden_identity::TaskIntent;

/// The version recorded on decisions made by these built-in rules.
pub const BUILTIN_RULES: &str = "builtin:task-scope-v1";

/// May `agent` start a task with `intent`?
pub fn task_start(agent: &Agent, intent: &TaskIntent) -> Decision {
    if agent.state != AgentState::Active {
        return Decision::deny(
            format!("agent-not-active: agent `{}` is {}", agent.name, agent.state),
            BUILTIN_RULES,
        );
    }
    if let Some(up) = intent
        .upstreams
        .iter()
        .find(|u| !agent.allowed_upstreams.contains(u))
    {
        return Decision::deny(
            format!(
                "upstream-not-allowed: `{up}` is not among agent `{}`'s allowed upstreams",
                agent.name
            ),
            BUILTIN_RULES,
        );
    }
    Decision::allow("task-scope: within the agent's allowed upstreams", BUILTIN_RULES)
}

/// May `child` take over part of a task at `depth` (the child task's depth)?
pub fn delegation(child: &Agent, depth: u8, max_depth: u8, narrowed: &TaskIntent) -> Decision {
    if depth > max_depth {
        return Decision::deny(
            format!("delegation-depth: a chain of depth {depth} exceeds the limit of {max_depth}"),
            BUILTIN_RULES,
        );
    }
    task_start(child, narrowed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use warden_core::*;

    fn agent(state: AgentState, ups: &[&str]) -> Agent {
        let now = Utc::now();
        Agent {
            id: uuid::Uuid::new_v4(),
            name: AgentName::parse("bot").expect("valid"),
            spiffe_id: "spiffe://warden.local/agent/bot".into(),
            owners: vec![],
            environment: Environment::Staging,
            model: Model::parse("p/m@1").expect("valid"),
            description: Description::default(),
            allowed_upstreams: ups
                .iter()
                .map(|u| UpstreamName::parse(u).expect("valid"))
                .collect(),
            state,
            state_changed_at: now,
            state_changed_by: "x".into(),
            created_at: now,
            created_by: "x".into(),
            updated_at: now,
            updated_by: "x".into(),
        }
    }

    fn intent(ups: &[&str]) -> TaskIntent {
        TaskIntent {
            purpose: "p".into(),
            task_type: "t".into(),
            upstreams: ups
                .iter()
                .map(|u| UpstreamName::parse(u).expect("valid"))
                .collect(),
            tools: vec![],
            datasets: vec![],
            max_duration_secs: None,
        }
    }

    #[test]
    fn rules() {
        assert_eq!(
            task_start(&agent(AgentState::Active, &["crm"]), &intent(&["crm"])).outcome,
            Outcome::Allow
        );
        assert_eq!(
            task_start(&agent(AgentState::Active, &["crm"]), &intent(&[])).outcome,
            Outcome::Allow
        );
        let d = task_start(&agent(AgentState::Active, &["crm"]), &intent(&["db"]));
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.reasons[0].starts_with("upstream-not-allowed"), "{d:?}");
        assert_eq!(d.policy_version, BUILTIN_RULES);
        let d = task_start(&agent(AgentState::Suspended, &["crm"]), &intent(&["crm"]));
        assert!(d.reasons[0].starts_with("agent-not-active"), "{d:?}");
        let d = delegation(&agent(AgentState::Active, &["crm"]), 3, 2, &intent(&["crm"]));
        assert!(d.reasons[0].starts_with("delegation-depth"), "{d:?}");
        assert_eq!(
            delegation(&agent(AgentState::Active, &["crm"]), 2, 2, &intent(&["crm"])).outcome,
            Outcome::Allow
        );
    }
}
