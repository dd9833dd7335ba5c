//! The tool catalogue as the gateway maintains it: every `tools/list` answer is observed, tools
//! seen for the first time are catalogued (`[gateway] new_tools`: trusted on first use, or held in
//! quarantine for an admin), and a tool whose definition digest changed is quarantined — hidden
//! from `tools/list` and denied — until an admin approves the new digest. So is a new name that
//! resembles a catalogued tool: the same definition under another name (`renamed`), or an approved
//! tool's description (`shadows`; the store decides, `Store::observe_tools`). Every change is a ledger
//! entry and reaches the other nodes by store event; this node applies it before it answers.

use std::sync::Arc;

use warden_core::{Upstream, UpstreamName};
use warden_gateway::jsonrpc::{self, Id, Message};
use warden_ledger::EntryKind;
use warden_policy::McpKind;
use warden_store::{ObservedTool, ToolChange};

use super::Route;
use super::clearance::{After, Clearance, Outgoing, Post};
use crate::AppState;
use crate::pipeline::Ruling;
use crate::tasks::TaskCaller;

/// Observes what an upstream's `tools/list` showed. Writes (and records) only what changed.
pub async fn observe(state: &AppState, upstream: &UpstreamName, seen: &[ObservedTool]) -> anyhow::Result<()> {
    // Unchanged tools (the common case) need no write: the node's copy already says so.
    let changed: Vec<ObservedTool> = seen
        .iter()
        .filter(|t| {
            state.policies.tool(upstream.as_str(), &t.name).is_none_or(|r| {
                r.digest.as_deref() != Some(t.digest.as_str()) || r.state != warden_core::ToolState::Active
            })
        })
        .cloned()
        .collect();
    if changed.is_empty() {
        return Ok(());
    }
    let changes = state
        .store
        .observe_tools(
            upstream,
            &changed,
            state.gateway.settings.new_tools,
            chrono::Utc::now(),
        )
        .await?;
    if changes.is_empty() {
        return Ok(());
    }
    let entries = changes
        .iter()
        .map(|c| {
            let t = c.tool();
            // A new name quarantined as a rename or a shadow is recorded as a quarantine (with its
            // reason), like a changed definition; other new tools as catalogued.
            let resembles = t.resembles.is_some();
            let (op, what) = match c {
                ToolChange::New(_) if resembles => ("tool.quarantined", "first seen"),
                ToolChange::New(_) => ("tool.catalogued", "first seen"),
                ToolChange::Quarantined(_) => ("tool.quarantined", "definition changed"),
            };
            match c {
                ToolChange::Quarantined(_) => tracing::warn!(upstream = %t.upstream, tool = %t.name, approved = ?t.digest, pending = ?t.pending_digest, "tool definition changed; quarantined until an admin approves it"),
                ToolChange::New(_) if resembles => tracing::warn!(upstream = %t.upstream, tool = %t.name, reason = ?t.quarantine_reason, pending = ?t.pending_digest, "new tool resembles a catalogued one; quarantined until an admin approves it"),
                ToolChange::New(_) => tracing::info!(upstream = %t.upstream, tool = %t.name, state = %t.state, class = %t.effective_class(), "tool catalogued"),
            }
            crate::ledger::entry(EntryKind::RegistryChange, "system:gateway")
                .subject(t.key())
                .body(serde_json::json!({
                    "operation": op,
                    "what": what,
                    "upstream": t.upstream.as_str(),
                    "tool": t.name,
                    "state": t.state,
                    "digest": t.digest,
                    "pending_digest": t.pending_digest,
                    "class": t.effective_class(),
                    "cause": t.quarantine_cause,
                    "reason": t.quarantine_reason,
                    "resembles": t.resembles,
                }))
        })
        .collect();
    // A quarantine takes effect whether or not it could be recorded (it takes a privilege away);
    // the failure is logged. The sets are recompiled for the new typed views (once for the page)
    // before the listing is answered, so the caller's next call finds them compiled.
    for c in &changes {
        state.policies.apply_tool(c.tool());
    }
    state.policies.sync_tool_types().await;
    state.ledger.record_all(entries).await?;
    Ok(())
}

/// The tools of a `tools/list` page as the store observes them.
pub fn observed(page: &warden_gateway::tools::ToolsPage) -> Vec<ObservedTool> {
    page.tools
        .iter()
        .map(|t| ObservedTool {
            name: t.name().to_owned(),
            digest: t.digest().to_owned(),
            definition: t.value().clone(),
            hint_class: convert_class(warden_gateway::tools::hint_class(t)),
        })
        .collect()
}

fn convert_class(c: warden_gateway::tools::ToolClass) -> warden_core::ToolClass {
    use warden_gateway::tools::ToolClass as G;
    match c {
        G::Read => warden_core::ToolClass::Read,
        G::Write => warden_core::ToolClass::Write,
        G::Destructive => warden_core::ToolClass::Destructive,
        G::Admin => warden_core::ToolClass::Admin,
    }
}

/// Most `tools/list` pages Warden reads on its own when a call names a tool it has not seen.
const MAX_CATALOGUE_PAGES: usize = 10;

/// A call names a tool this node has not catalogued (the client never listed tools, or another
/// node did): Warden lists the upstream's tools itself, in the caller's session, and catalogues
/// them, so the decision can know the tool's class. Each page is Warden's own `tools/list` on the
/// task's behalf: decided and recorded like the agent's own (`initiator: warden`), sent only with
/// its clearance, its answer filtered. Failures leave the tool unknown (denied).
pub(super) async fn catalogue_on_miss(
    state: &AppState,
    caller: &Arc<TaskCaller>,
    upstream: &Arc<Upstream>,
    route: &Route,
    tool: &str,
    request_id: Option<String>,
) {
    // One fetch per upstream at a time on this node: calls arriving together for a tool not yet
    // catalogued wait for the first one's fetch instead of racing it (and being denied as unknown).
    let lock = state.gateway.catalogue_lock(upstream.name.as_str());
    let _one_at_a_time = lock.lock().await;
    if state.policies.tool(upstream.name.as_str(), tool).is_some() {
        return;
    }
    // Another node may have catalogued it; its event may not have arrived yet.
    match state.store.get_tool(&upstream.name, tool).await {
        Ok(Some(t)) => {
            state.policies.tool_changed(&t).await;
            return;
        }
        Ok(None) => {}
        Err(e) => {
            tracing::warn!(upstream = %upstream.name, error = %e, "the tool catalogue cannot be read");
            return;
        }
    }
    let mut cursor: Option<String> = None;
    for _ in 0..MAX_CATALOGUE_PAGES {
        let started = std::time::Instant::now();
        let id = Id::String(format!("warden-catalogue-{}", uuid::Uuid::new_v4()));
        let params = cursor.as_ref().map(|c| {
            let mut m = serde_json::Map::new();
            m.insert("cursor".into(), c.clone().into());
            m
        });
        let (question, mut facts) =
            super::inbound::upstream_read(upstream, "tools/list", McpKind::Request, request_id.clone());
        facts.body.insert("initiator".into(), "warden".into());
        let verdict = crate::pipeline::decide(state, caller, question, facts, started).await;
        let cleared = match crate::pipeline::commit(state, verdict, state.gateway.take_results()).await {
            Ruling::Cleared(c, _) => c,
            Ruling::Refused(r) => {
                tracing::info!(upstream = %upstream.name, reasons = ?r.decision.reasons, "Warden's own tools/list for the task was refused");
                return;
            }
        };
        let msg = Message::Request(jsonrpc::Request {
            id: id.clone(),
            method: "tools/list".into(),
            params: route.own_params(params),
        });
        let post = Post {
            id,
            method: "tools/list".into(),
            after: After::Nothing,
            tool: None,
            sent: std::time::Instant::now(),
            to_modern: false,
        };
        let clearance = Clearance::new(cleared, Outgoing::Message(msg), Some(post));
        let answer = match super::relay::fetch(state, caller, upstream, route, clearance).await {
            Ok(Message::Response(r)) => r.result,
            Ok(other) => {
                tracing::warn!(upstream = %upstream.name, answer = ?other.method(), "the upstream refused Warden's own tools/list");
                return;
            }
            Err(e) => {
                tracing::warn!(upstream = %upstream.name, error = %e, "Warden's own tools/list failed");
                return;
            }
        };
        let page = match warden_gateway::tools::parse_tools_list(&answer, &Default::default()) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(upstream = %upstream.name, error = %e, "tools/list answer refused");
                return;
            }
        };
        if let Err(e) = observe(state, &upstream.name, &observed(&page)).await {
            tracing::error!(upstream = %upstream.name, error = %e, "tools cannot be catalogued");
            return;
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return,
        }
    }
}
