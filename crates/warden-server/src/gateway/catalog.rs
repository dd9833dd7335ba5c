//! The tool catalogue as the gateway maintains it: every `tools/list` answer is observed, tools
//! seen for the first time are catalogued (`[gateway] new_tools`: trusted on first use, or held in
//! quarantine for an admin), and a tool whose definition digest changed is quarantined — hidden
//! from `tools/list` and denied — until an admin approves the new digest. Every change is a ledger
//! entry and reaches the other nodes by store event; this node applies it before it answers.

use warden_core::UpstreamName;
use warden_ledger::EntryKind;
use warden_store::{ObservedTool, ToolChange};

use crate::AppState;

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
            let (op, what) = match c {
                ToolChange::New(_) => ("tool.catalogued", "first seen"),
                ToolChange::Quarantined(_) => ("tool.quarantined", "definition changed"),
            };
            match c {
                ToolChange::Quarantined(_) => tracing::warn!(upstream = %t.upstream, tool = %t.name, approved = ?t.digest, pending = ?t.pending_digest, "tool definition changed; quarantined until an admin approves it"),
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
