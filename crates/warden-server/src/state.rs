//! Shared server state and the events it publishes.

use std::sync::Arc;

use chrono::Duration;
use tokio::sync::broadcast;
use warden_core::{AgentName, TrustDomain};
use warden_store::Store;

use crate::federation::Federation;
use crate::keys::KeyManager;
use crate::ledger::Ledger;
use crate::policy::Policies;
use crate::tasks::TaskCache;

/// An event other parts of Warden react to.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryEvent {
    /// Every credential of this agent stopped working: it was suspended or retired, its model or
    /// environment changed, or its last owner left. Its tasks were revoked in the same transaction.
    CredentialsInvalidated {
        agent: AgentName,
        reason: String,
        revoked_tasks: usize,
    },
}

/// Where Warden is and how long its credentials live.
#[derive(Clone, Debug)]
pub struct TokenSettings {
    /// The public URL without a trailing slash: `iss` and `aud` of task tokens.
    pub issuer: String,
    /// `<issuer>/v1/token`: the other audience agents' assertions may name, and the DPoP `htu` there.
    pub token_endpoint: String,
    pub task_token_ttl: Duration,
    pub task_max_duration: Duration,
    pub join_token_ttl: Duration,
    pub max_delegation_depth: u8,
}

impl TokenSettings {
    pub fn new(public_url: &url::Url, tokens: &crate::config::TokenConfig) -> Self {
        let issuer = public_url.as_str().trim_end_matches('/').to_owned();
        let secs = |s: u64| Duration::seconds(i64::try_from(s).unwrap_or(i64::MAX));
        Self {
            token_endpoint: format!("{issuer}/v1/token"),
            issuer,
            task_token_ttl: secs(tokens.task_token_ttl_secs),
            task_max_duration: secs(tokens.task_max_duration_secs),
            join_token_ttl: secs(tokens.join_token_ttl_secs),
            max_delegation_depth: tokens.max_delegation_depth,
        }
    }
}

/// How many verified task tokens a node remembers (a hit skips the Ed25519 check; see
/// `warden_identity::TaskTokenCache`).
const TOKEN_CACHE_CAPACITY: usize = 50_000;

/// Everything the credential flows need.
#[derive(Debug)]
pub struct Identity {
    pub settings: TokenSettings,
    pub keys: KeyManager,
    pub tasks: TaskCache,
    /// Verified task tokens, by their exact bytes: revocation is still checked by task id on every use.
    pub tokens: warden_identity::TaskTokenCache,
    pub federation: Federation,
    /// The policy view of each task's recorded intent (see [`crate::pipeline::TaskContexts`]).
    pub task_contexts: crate::pipeline::TaskContexts,
}

impl Identity {
    pub fn new(
        settings: TokenSettings,
        keys: KeyManager,
        federation: Federation,
        revocation_cache_ttl: std::time::Duration,
    ) -> Self {
        Self {
            settings,
            keys,
            tasks: TaskCache::new(revocation_cache_ttl),
            tokens: warden_identity::TaskTokenCache::new(TOKEN_CACHE_CAPACITY),
            federation,
            task_contexts: Default::default(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub trust_domain: TrustDomain,
    pub events: broadcast::Sender<RegistryEvent>,
    pub identity: Arc<Identity>,
    pub policies: Arc<Policies>,
    pub ledger: Arc<Ledger>,
    /// `[approvals]`: request and grant lifetimes.
    pub approvals: crate::approvals::ApprovalSettings,
    /// Webhooks told about approval requests and decisions.
    pub notifier: crate::notify::Notifier,
    /// The MCP gateway: its key, settings, secret scanner, upstream client and credential cache.
    pub gateway: Arc<crate::gateway::Gateway>,
    /// Revocations the store could not take yet: journaled, enforced, retried.
    pub revocations: Arc<crate::revocations::Revocations>,
    /// How long `/healthz` waits for the store (`[database] acquire_timeout_ms`).
    pub store_timeout: std::time::Duration,
}

impl AppState {
    pub fn new(
        store: Arc<dyn Store>,
        trust_domain: TrustDomain,
        identity: Arc<Identity>,
        policies: Arc<Policies>,
        ledger: Arc<Ledger>,
    ) -> Self {
        let (events, _) = broadcast::channel(1024);
        let revocations = Arc::new(crate::revocations::Revocations::memory_only(
            identity.tasks.held.clone(),
        ));
        Self {
            revocations,
            store_timeout: warden_store::StoreOptions::default().acquire_timeout,
            store,
            trust_domain,
            events,
            identity,
            policies,
            ledger,
            approvals: Default::default(),
            notifier: crate::notify::Notifier::disabled(),
            gateway: Arc::new(crate::gateway::Gateway::ephemeral()),
        }
    }

    /// Makes this node forget cached tasks it just stopped, before it answers: read-your-writes on this
    /// node does not wait for the event loop (other nodes hear through the store's events).
    pub fn forget_tasks(&self, ids: &[uuid::Uuid]) {
        if !ids.is_empty() {
            self.identity
                .tasks
                .apply(&warden_store::StoreEvent::TasksRevoked { ids: ids.to_vec() });
        }
    }

    /// Publishes an event. Having no subscriber is not an error; the event is logged either way.
    pub fn publish(&self, event: RegistryEvent) {
        match &event {
            RegistryEvent::CredentialsInvalidated {
                agent,
                reason,
                revoked_tasks,
            } => {
                tracing::warn!(%agent, %reason, revoked_tasks, "agent credentials invalidated");
            }
        }
        let _ = self.events.send(event);
    }
}
