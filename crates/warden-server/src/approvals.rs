//! Human approval gates: what happens when a decision is `needs_approval`.
//!
//! The exact action — agent, task, action, resource and the digest of its arguments (the
//! `request_key`) — either has a grant (an approval request that reached its quorum, within its
//! window, not yet spent if single use), and is decided again with the approval in the context; or an
//! approval request is opened for it (or the identical pending one reused), and the caller gets its id
//! and link to wait on. A grant is bound to exactly that key: another agent, task, resource or other
//! arguments do not match it, and it dies with its task (decisions need a live task).
//!
//! Votes, separation of duties and quorum are the store's (`Store::vote_approval`, one transaction
//! with the request locked), so concurrent approvals on any node count once each.

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};
use utoipa::ToSchema;
use uuid::Uuid;
use warden_core::{Decision, Outcome};
use warden_ledger::{EntryKind, NewEntry};
use warden_policy::PolicyRequest;
use warden_store::{Approval, ApprovalState, NewApproval};

use crate::AppState;
use crate::tasks::TaskCaller;

/// How approval requests and grants behave (from `[approvals]`).
#[derive(Clone, Debug)]
pub struct ApprovalSettings {
    pub request_ttl: Duration,
    pub grant_ttl: Duration,
    pub single_use: bool,
    /// How long the gateway holds a retry that carries a request state while its approval is
    /// pending (`in_protocol_wait_secs`).
    pub in_protocol_wait: std::time::Duration,
}

impl Default for ApprovalSettings {
    fn default() -> Self {
        Self::from(&crate::config::ApprovalConfig::default())
    }
}

impl From<&crate::config::ApprovalConfig> for ApprovalSettings {
    fn from(c: &crate::config::ApprovalConfig) -> Self {
        let secs = |s: u64| Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
        Self {
            request_ttl: secs(c.request_ttl_secs),
            grant_ttl: secs(c.grant_ttl_secs),
            single_use: c.single_use,
            in_protocol_wait: std::time::Duration::from_secs(c.in_protocol_wait_secs),
        }
    }
}

/// What a caller is told about the approval behind a decision.
#[derive(Clone, Debug, Serialize, ToSchema)]
pub struct ApprovalRef {
    pub id: Uuid,
    /// Where to wait for it: `GET` with `?wait=25` long-polls until it is decided.
    pub url: String,
    pub state: ApprovalState,
    pub quorum: u8,
    pub approvals: u8,
    /// Until when it may be decided.
    pub expires_at: DateTime<Utc>,
    /// For a grant: until when it allows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub grant_expires_at: Option<DateTime<Utc>>,
}

impl ApprovalRef {
    pub fn of(state: &AppState, a: &Approval) -> Self {
        Self {
            id: a.id,
            url: format!("{}/v1/approvals/{}", state.identity.settings.issuer, a.id),
            state: a.state,
            quorum: a.quorum,
            approvals: a.approvals,
            expires_at: a.expires_at,
            grant_expires_at: a.grant_expires_at,
        }
    }
}

/// SHA-256 (hex) of the canonical JSON of the arguments: what a grant is bound to.
pub fn args_digest(args: Option<&serde_json::Value>) -> Option<String> {
    let args = args?;
    // The arguments passed the engine's limits already; canonical encoding of such a value fails
    // only on numbers JSON cannot represent, which serde_json never produces.
    let bytes = warden_ledger::canonical::to_vec(args).unwrap_or_else(|_| args.to_string().into_bytes());
    Some(hex::encode(Sha256::digest(bytes)))
}

/// Identifies "the same action": a grant for one key allows nothing else.
pub fn request_key(agent: &str, task: Uuid, action: &str, resource: &str, digest: Option<&str>) -> String {
    let parts = serde_json::json!([agent, task.to_string(), action, resource, digest]);
    hex::encode(Sha256::digest(parts.to_string().as_bytes()))
}

/// The outcome of the gate: the decision to answer with, the approval it refers to, and the ledger
/// entries it adds (an opened request).
#[derive(Debug)]
pub struct Gate {
    pub decision: Decision,
    pub approval: Option<ApprovalRef>,
    pub entries: Vec<NewEntry>,
}

/// Handles a `needs_approval` decision: a matching grant decides the request again with the approval
/// granted; otherwise an approval request is opened or reused.
#[expect(clippy::too_many_arguments, reason = "one value per fact of the request")]
pub async fn gate(
    state: &AppState,
    caller: &TaskCaller,
    request: &PolicyRequest,
    decision: Decision,
    recorded_args: Option<serde_json::Value>,
    upstream: Option<String>,
    resource: &str,
    now: DateTime<Utc>,
) -> Gate {
    let digest = args_digest(request.context.args.as_ref());
    let action = request.action.as_str();
    let key = request_key(
        caller.task.agent.as_str(),
        caller.task.id,
        action,
        resource,
        digest.as_deref(),
    );
    match state.store.find_grant(&key, now).await {
        Err(e) => {
            tracing::warn!(error = %e, "approval grants cannot be read; the action waits for approval");
            return Gate {
                decision,
                approval: None,
                entries: Vec::new(),
            };
        }
        Ok(Some(grant)) => {
            let mut again = request.clone();
            again.context.approval = warden_policy::Approval {
                granted: true,
                approvers: grant.approvals,
            };
            let mut d = state.policies.decide(&again, now);
            let spent = if d.outcome == Outcome::Allow && grant.single_use {
                match state.store.use_grant(grant.id, now).await {
                    Ok(claimed) => !claimed,
                    Err(e) => {
                        tracing::warn!(error = %e, grant = %grant.id, "a single-use grant cannot be claimed");
                        true
                    }
                }
            } else {
                false
            };
            if d.outcome == Outcome::Allow && !spent {
                d.reasons.push(format!(
                    "approval-granted: request {} approved by {} of {} ({})",
                    grant.id,
                    grant.approvals,
                    grant.quorum,
                    grant
                        .votes
                        .iter()
                        .filter(|v| v.vote == warden_store::Vote::Approve)
                        .map(|v| v.approver.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
                return Gate {
                    decision: d,
                    approval: Some(ApprovalRef::of(state, &grant)),
                    entries: Vec::new(),
                };
            }
        }
        Ok(None) => {}
    }
    let new = NewApproval {
        id: Uuid::new_v4(),
        request_key: key,
        agent: caller.task.agent.clone(),
        task_id: caller.task.id,
        action: action.to_owned(),
        resource: resource.to_owned(),
        upstream: upstream.clone(),
        args_digest: digest,
        arguments: recorded_args,
        reason: decision.reasons.join("; "),
        policies: decision.reasons.clone(),
        policy_version: decision.policy_version.clone(),
        quorum: decision.quorum.unwrap_or(1).max(1),
        single_use: state.approvals.single_use,
        owners_may_approve: owners_may_approve(&decision),
        approvers: approvers(&decision),
        created_at: now,
        // Never past the task: a request that outlives its task could never be used.
        expires_at: (now + state.approvals.request_ttl).min(caller.task.expires_at),
    };
    match state.store.request_approval(&new).await {
        Err(e) => {
            tracing::warn!(error = %e, "an approval request cannot be opened");
            Gate {
                decision,
                approval: None,
                entries: Vec::new(),
            }
        }
        Ok((a, created)) => {
            let mut entries = Vec::new();
            if created {
                tracing::info!(approval = %a.id, agent = %a.agent, action = %a.action, resource = %a.resource, quorum = a.quorum, "approval requested");
                notify(state, &a, crate::notify::ApprovalEventKind::Requested, None);
                entries.push(
                    crate::ledger::entry(EntryKind::ApprovalRequested, &caller.task.agent_spiffe_id)
                        .subject(a.id.to_string())
                        .body(approval_body(&a)),
                );
            }
            Gate {
                decision,
                approval: Some(ApprovalRef::of(state, &a)),
                entries,
            }
        }
    }
}

/// Tells the webhooks (never blocks; delivery is the notifier's).
pub fn notify(state: &AppState, a: &Approval, kind: crate::notify::ApprovalEventKind, by: Option<&str>) {
    state.notifier.notify(crate::notify::ApprovalEvent {
        kind,
        approval_id: a.id.to_string(),
        agent: a.agent.to_string(),
        task: a.task_id.to_string(),
        action: a.action.clone(),
        resource: a.resource.clone(),
        upstream: a.upstream.clone(),
        reason: format!("policy {}", a.policies.join(", ")),
        quorum: a.quorum,
        approvals: a.approvals,
        decided_by: by.map(str::to_owned),
        url: ApprovalRef::of(state, a).url,
        expires_at: a.expires_at,
    });
}

/// Separation of duties yields only when every approval policy behind the decision says
/// `@self_approval("allowed")`.
fn owners_may_approve(decision: &Decision) -> bool {
    let approval: Vec<&String> = decision
        .reasons
        .iter()
        .filter(|r| r.contains("(permit, approval"))
        .collect();
    !approval.is_empty()
        && approval
            .iter()
            .all(|r| r.contains(warden_policy::SELF_APPROVAL_REASON))
}

/// Who may approve, per approval policy that narrows it (`@approvers`, cited in the reason after
/// [`warden_policy::APPROVERS_REASON`]). A policy that names nobody narrows nothing.
fn approvers(decision: &Decision) -> Vec<Vec<String>> {
    decision
        .reasons
        .iter()
        .filter(|r| r.contains("(permit, approval"))
        .filter_map(|r| {
            let (_, rest) = r.split_once(warden_policy::APPROVERS_REASON)?;
            let names = rest.split(')').next().unwrap_or("");
            let names: Vec<String> = names
                .split(' ')
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect();
            (!names.is_empty()).then_some(names)
        })
        .collect()
}

/// The ledger body describing an approval request (secrets are already redacted from its arguments).
pub fn approval_body(a: &Approval) -> serde_json::Value {
    serde_json::json!({
        "approval": a.id,
        "agent": a.agent.as_str(),
        "task": a.task_id,
        "action": a.action,
        "resource": a.resource,
        "upstream": a.upstream,
        "args_digest": a.args_digest,
        "arguments": a.arguments,
        "reasons": a.policies,
        "policy_version": a.policy_version,
        "quorum": a.quorum,
        "approvals": a.approvals,
        "owners_may_approve": a.owners_may_approve,
        "approvers": a.approvers,
        "state": a.state,
        "expires_at": a.expires_at,
        "grant_expires_at": a.grant_expires_at,
    })
}

/// Marks requests past their time as expired, records each, every `every`.
pub fn spawn_expiry(state: AppState, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            match state.store.expire_approvals(Utc::now()).await {
                Ok(expired) if !expired.is_empty() => {
                    for a in &expired {
                        notify(&state, a, crate::notify::ApprovalEventKind::Expired, None);
                    }
                    let entries = expired
                        .iter()
                        .map(|a| {
                            crate::ledger::entry(EntryKind::ApprovalExpired, "system:approvals")
                                .subject(a.id.to_string())
                                .body(approval_body(a))
                        })
                        .collect();
                    if let Err(e) = state.ledger.record_all(entries).await {
                        tracing::error!(error = %e, count = expired.len(), "expired approval requests not recorded in the audit ledger");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot expire approval requests"),
            }
        }
    });
}
