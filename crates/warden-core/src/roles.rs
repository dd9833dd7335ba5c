//! Humans' roles and what each permits on the admin API. One table, so a reviewer can read the whole
//! access model of the registry in one screen.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::ValidationError;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages the registry, humans and (later) policies.
    Admin,
    /// Decides approval requests (later issues).
    Approver,
    /// Reads everything, changes nothing.
    Auditor,
    /// Accountable for agents; reads the registry.
    Owner,
}

impl Role {
    pub const ALL: &'static [Role] = &[Role::Admin, Role::Approver, Role::Auditor, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::Owner => "owner",
        }
    }
}

impl FromStr for Role {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .iter()
            .copied()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                ValidationError::new(
                    "roles",
                    format!(
                        "unknown role `{}`; expected one of `admin`, `approver`, `auditor`, `owner`",
                        s.escape_debug()
                    ),
                )
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a request wants to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permission {
    /// List and show agents, upstreams and humans.
    ReadRegistry,
    /// Register, change, suspend, activate and retire agents; add and remove upstreams.
    WriteRegistry,
    /// Add humans; create or revoke other humans' API tokens.
    ManageHumans,
    /// Create, list and revoke one's own API tokens.
    ManageOwnTokens,
    /// End the tasks of agents one owns (checked together with ownership).
    ManageOwnAgents,
    /// Read policy sets, their history, and explain decisions.
    ReadPolicies,
    /// Validate, activate and shadow policy sets.
    ManagePolicies,
    /// Read the audit ledger: entries, checkpoints and proofs.
    ReadAudit,
    /// Approve or deny approval requests (further limited by separation of duties).
    DecideApprovals,
}

impl Permission {
    /// The roles that grant this permission. Deny by default: a permission not listed here for a role
    /// is not granted.
    pub fn granted_by(self) -> &'static [Role] {
        match self {
            Permission::ReadRegistry => &[Role::Admin, Role::Approver, Role::Auditor, Role::Owner],
            Permission::WriteRegistry | Permission::ManageHumans => &[Role::Admin],
            Permission::ManageOwnTokens => &[Role::Admin, Role::Approver, Role::Auditor, Role::Owner],
            Permission::ManageOwnAgents => &[Role::Admin, Role::Owner],
            Permission::ReadPolicies => &[Role::Admin, Role::Auditor, Role::Approver, Role::Owner],
            Permission::ManagePolicies => &[Role::Admin],
            Permission::ReadAudit => &[Role::Admin, Role::Auditor],
            Permission::DecideApprovals => &[Role::Approver],
        }
    }

    pub fn is_granted_to(self, roles: &[Role]) -> bool {
        self.granted_by().iter().any(|r| roles.contains(r))
    }

    pub fn describe(self) -> &'static str {
        match self {
            Permission::ReadRegistry => "read the registry",
            Permission::WriteRegistry => "change the registry",
            Permission::ManageHumans => "manage humans and their tokens",
            Permission::ManageOwnTokens => "manage your own API tokens",
            Permission::ManageOwnAgents => "manage the agents you own",
            Permission::ReadPolicies => "read policies",
            Permission::ManagePolicies => "change policies",
            Permission::ReadAudit => "read the audit ledger",
            Permission::DecideApprovals => "decide approval requests",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_admins_write() {
        for role in Role::ALL {
            assert!(Permission::ReadRegistry.is_granted_to(&[*role]));
            assert_eq!(
                Permission::WriteRegistry.is_granted_to(&[*role]),
                *role == Role::Admin
            );
            assert_eq!(
                Permission::ManageHumans.is_granted_to(&[*role]),
                *role == Role::Admin
            );
        }
        assert!(!Permission::ReadRegistry.is_granted_to(&[]));
    }

    #[test]
    fn parse_roles() {
        assert_eq!("auditor".parse::<Role>(), Ok(Role::Auditor));
        assert!(
            "root"
                .parse::<Role>()
                .expect_err("unknown")
                .message
                .contains("unknown role `root`")
        );
        assert_eq!(
            serde_json::to_string(&Role::Approver).expect("ser"),
            "\"approver\""
        );
    }
}
