//! Decisions as values. Every action Warden governs gets one: `allow`, `deny` or `needs_approval`, with
//! the reasons (rule or policy ids) and the version of the rules that produced it. Code that acts takes
//! an [`Allowed`], which only [`Decision::allowed`] makes, so nothing can act on a decision it did not
//! get.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Allow,
    Deny,
    NeedsApproval,
}

/// A decision with its reasons.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub outcome: Outcome,
    /// Ids of the rules or policies that decided, with a short explanation each.
    pub reasons: Vec<String>,
    /// The version (content hash, or a built-in rule set's name) of the rules that decided.
    pub policy_version: String,
    /// Evaluation errors met on the way (an error never allows: a decision with errors that would
    /// otherwise allow is a deny).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<String>,
    /// For `needs_approval`: how many distinct approvers must approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quorum: Option<u8>,
}

/// Proof that a decision allowed an action. Private field: only [`Decision::allowed`] makes one.
#[derive(Debug, Clone)]
pub struct Allowed {
    decision: Decision,
}

impl Allowed {
    pub fn decision(&self) -> &Decision {
        &self.decision
    }
}

impl Decision {
    pub fn allow(reason: impl Into<String>, policy_version: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Allow,
            reasons: vec![reason.into()],
            policy_version: policy_version.into(),
            errors: Vec::new(),
            quorum: None,
        }
    }

    pub fn deny(reason: impl Into<String>, policy_version: impl Into<String>) -> Self {
        Self {
            outcome: Outcome::Deny,
            reasons: vec![reason.into()],
            policy_version: policy_version.into(),
            errors: Vec::new(),
            quorum: None,
        }
    }

    /// The permit to act, or the decision back when it did not allow.
    pub fn allowed(self) -> Result<Allowed, Decision> {
        if self.outcome == Outcome::Allow {
            Ok(Allowed { decision: self })
        } else {
            Err(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allow_makes_a_permit() {
        assert!(Decision::allow("r", "v").allowed().is_ok());
        let denied = Decision::deny("no", "v").allowed().expect_err("deny");
        assert_eq!(denied.reasons, vec!["no".to_owned()]);
        let pending = Decision {
            outcome: Outcome::NeedsApproval,
            quorum: Some(2),
            ..Decision::deny("r", "v")
        };
        assert!(pending.allowed().is_err());
    }
}
