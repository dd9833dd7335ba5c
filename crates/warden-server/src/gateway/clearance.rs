//! The value an upstream send requires: a [`Clearance`].
//!
//! INVARIANT (every message in is decided): the HTTP client ([`super::upstream::Client::send`]) and
//! the stdio servers ([`super::stdio::StdioServers::spawn`] and `send`) take a `&Clearance`, and a
//! `Clearance` holds a [`Cleared`] — which only [`crate::pipeline::commit`] makes, from an allowing
//! decision that is durable in the ledger. There is no other constructor and no "undecided" variant:
//! a notification, a client's answer to a server request, a `GET` stream, a `DELETE`, a process spawn
//! and Warden's own catalogue fetch each carry the clearance of their own decision.
//!
//! The clearance also carries exactly what was decided (the message, or the stream to open), so the
//! send operation sends that and nothing else.

use std::time::Instant;

use serde::{Deserialize, Serialize};
use warden_gateway::jsonrpc::{Id, Message};

use crate::pipeline::Cleared;

/// What may be sent.
#[derive(Debug)]
pub enum Outgoing {
    /// One JSON-RPC message, exactly as decided.
    Message(Message),
    /// The server's event stream (`GET`), resuming after the upstream's own event id when given.
    OpenStream { last_event_id: Option<String> },
    /// The end of a session (`DELETE`; for a stdio upstream, its process is ended).
    EndSession,
}

/// The permission to send one thing to one upstream, from a durable allow.
#[derive(Debug)]
pub struct Clearance {
    cleared: Cleared,
    outgoing: Outgoing,
    post: Option<Post>,
}

impl Clearance {
    /// Pairs a durable allow with what it allowed.
    pub(super) fn new(cleared: Cleared, outgoing: Outgoing, post: Option<Post>) -> Self {
        Self {
            cleared,
            outgoing,
            post,
        }
    }

    pub fn outgoing(&self) -> &Outgoing {
        &self.outgoing
    }

    /// What to do with the answer (requests only).
    pub fn post(&self) -> Option<&Post> {
        self.post.as_ref()
    }

    /// The ledger sequence number of the decision that allowed this.
    pub fn seq(&self) -> u64 {
        self.cleared.seq()
    }

    /// The method of the message this allows (`None` for streams and session ends).
    pub fn method(&self) -> Option<&str> {
        match &self.outgoing {
            Outgoing::Message(m) => m.method(),
            _ => None,
        }
    }
}

/// Post-processing of the upstream's answer to an allowed request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum After {
    /// Passed on (filtered like everything else).
    Nothing,
    /// Catalogued, and filtered to the tools the task may call.
    ToolsList,
    /// Scanned for secrets (redacted per `gateway.results`); status and latency recorded.
    Result,
    /// `subscriptions/listen` (2026-07-28): a stream of change notifications that lasts while the
    /// task is live, filtered like the `GET` stream, without the answer's time limits.
    Listen,
}

/// What the outbound filter needs to know about the request an answer belongs to. Sealed into
/// every event id handed to the agent, so a resumed stream is filtered exactly as the original.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Post {
    pub id: Id,
    pub method: String,
    pub after: After,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    #[serde(skip, default = "Instant::now")]
    pub sent: Instant,
    /// The answer goes to a 2026-07-28 client from a 2025 upstream (`revisions.rs`): the result
    /// gains the members that revision requires (`resultType`; `ttlMs`, `cacheScope` on cacheable
    /// results) where the upstream did not send them.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub to_modern: bool,
}
