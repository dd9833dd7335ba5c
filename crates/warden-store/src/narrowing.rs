//! What an agent update takes away, and which live tasks that ends.
//!
//! A task's intent was decided against the agent as it was when the task started. When an update
//! narrows the agent, the tasks that relied on what was taken away must stop at once on every node,
//! not when they expire (up to the task's maximum duration):
//!
//! - **model or environment** changed: every task ends (and an active agent returns to review);
//!   decided by `AgentState::after_update`, not here;
//! - **an owner removed**: every task ends. A task runs under the accountability of the agent's owners;
//!   the humans it was started under are no longer all accountable for it;
//! - **an allowed upstream removed**: the tasks whose intent names a removed upstream end (a task that
//!   never asked for it keeps running; it could not reach it anyway, as its intent is exact);
//! - **state** (suspend, retire) is `transition_agent`, which ends every task.
//!
//! Ending goes through the same path as every revocation (the whole delegation tree, in the update's
//! transaction, announced to every node), so it has the same propagation guarantee. Widening (adding an
//! upstream or an owner) changes no task.

use warden_core::{Agent, AgentUpdate, ChangeContext, Email, UpstreamName};

/// What one update removes from an agent.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Narrowing {
    pub removed_owners: Vec<Email>,
    pub removed_upstreams: Vec<UpstreamName>,
}

impl Narrowing {
    /// Compares the agent before the update with what the update sets.
    pub fn of(before: &Agent, update: &AgentUpdate) -> Self {
        let removed_owners = update
            .owners
            .as_ref()
            .map(|next| {
                before
                    .owners
                    .iter()
                    .filter(|o| !next.contains(o))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        let removed_upstreams = update
            .allowed_upstreams
            .as_ref()
            .map(|next| {
                before
                    .allowed_upstreams
                    .iter()
                    .filter(|u| !next.contains(u))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        Narrowing {
            removed_owners,
            removed_upstreams,
        }
    }

    /// Why every live task of the agent ends, when the update removes an owner.
    pub fn ends_every_task(&self, ctx: &ChangeContext) -> Option<String> {
        if self.removed_owners.is_empty() {
            return None;
        }
        Some(format!(
            "agent narrowed by {}: owner {} removed",
            ctx.actor,
            join(&self.removed_owners)
        ))
    }

    /// Why a task that names a removed upstream ends.
    pub fn upstreams_reason(&self, ctx: &ChangeContext) -> String {
        format!(
            "agent narrowed by {}: upstream {} no longer allowed",
            ctx.actor,
            join(&self.removed_upstreams)
        )
    }

    /// Whether a live task whose stored intent is `intent` (JSON: its `authorization_details`, an
    /// array of intent objects, or one object) relied on a removed upstream. An intent that cannot be
    /// read counts as relying on it: ending a task is the safe mistake.
    pub fn task_is_narrowed(&self, intent: &str) -> bool {
        match serde_json::from_str::<serde_json::Value>(intent) {
            Ok(serde_json::Value::Array(items)) => items.iter().any(|i| self.names_removed(i)),
            Ok(item) => self.names_removed(&item),
            Err(_) => true,
        }
    }

    fn names_removed(&self, item: &serde_json::Value) -> bool {
        if !item.is_object() {
            return true;
        }
        let Some(upstreams) = item.get("upstreams") else {
            return false;
        };
        let Some(upstreams) = upstreams.as_array() else {
            return true;
        };
        upstreams.iter().any(|u| match u.as_str() {
            Some(u) => self.removed_upstreams.iter().any(|r| r.as_str() == u),
            None => true,
        })
    }
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(|i| format!("`{i}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn narrowing(upstreams: &[&str]) -> Narrowing {
        Narrowing {
            removed_owners: vec![],
            removed_upstreams: upstreams
                .iter()
                .map(|u| UpstreamName::parse(u).expect("name"))
                .collect(),
        }
    }

    #[test]
    fn a_task_is_narrowed_only_when_its_intent_names_a_removed_upstream() {
        let n = narrowing(&["crm"]);
        assert!(n.task_is_narrowed(r#"{"purpose":"p","task_type":"t","upstreams":["erp","crm"]}"#));
        assert!(!n.task_is_narrowed(r#"{"purpose":"p","task_type":"t","upstreams":["erp"]}"#));
        assert!(!n.task_is_narrowed(r#"{"purpose":"p","task_type":"t"}"#));
        assert!(!n.task_is_narrowed(r#"{"purpose":"p","task_type":"t","upstreams":[]}"#));
        // As stored: the authorization details, an array.
        assert!(n.task_is_narrowed(r#"[{"type":"warden_task","upstreams":["erp"]},{"upstreams":["crm"]}]"#));
        assert!(!n.task_is_narrowed(r#"[{"type":"warden_task","upstreams":["erp"]}]"#));
        assert!(!n.task_is_narrowed("[]"));
    }

    #[test]
    fn an_unreadable_intent_counts_as_narrowed() {
        let n = narrowing(&["crm"]);
        assert!(n.task_is_narrowed("not json"));
        assert!(n.task_is_narrowed(r#"{"upstreams":"crm"}"#));
        assert!(n.task_is_narrowed(r#"{"upstreams":[7]}"#));
        assert!(n.task_is_narrowed(r#"["crm"]"#));
    }

    #[test]
    fn nothing_removed_ends_nothing() {
        let n = Narrowing::default();
        let ctx = ChangeContext::new("admin@example.com", chrono::Utc::now());
        assert_eq!(n.ends_every_task(&ctx), None);
        assert!(!n.task_is_narrowed(r#"{"upstreams":["crm"]}"#));
    }
}
