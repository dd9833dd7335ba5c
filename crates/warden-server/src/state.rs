//! Shared server state and the events it publishes.

use std::sync::Arc;

use tokio::sync::broadcast;
use warden_core::{AgentName, TrustDomain};
use warden_store::Store;

/// An event other parts of Warden react to.
#[derive(Clone, Debug, PartialEq)]
pub enum RegistryEvent {
    /// Every credential of this agent must stop working now: it was suspended or retired, or its model or
    /// environment changed. (The credential issue subscribes and revokes; until then it is logged.)
    CredentialsInvalidated { agent: AgentName, reason: String },
}

#[derive(Clone, Debug)]
pub struct AppState {
    pub store: Arc<dyn Store>,
    pub trust_domain: TrustDomain,
    pub events: broadcast::Sender<RegistryEvent>,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, trust_domain: TrustDomain) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            store,
            trust_domain,
            events,
        }
    }

    /// Publishes an event. Having no subscriber is not an error; the event is logged either way.
    pub fn publish(&self, event: RegistryEvent) {
        match &event {
            RegistryEvent::CredentialsInvalidated { agent, reason } => {
                tracing::warn!(%agent, %reason, "agent credentials invalidated");
            }
        }
        let _ = self.events.send(event);
    }
}
