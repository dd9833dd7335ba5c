//! The policy decision point inside the server: the active (and shadow) Cedar policy sets, the registry
//! as policy entities, and the one function every decision goes through.
//!
//! Policies and entities are loaded at start and kept current by store events: a
//! [`StoreEvent::PoliciesChanged`] reloads the sets (an activation on any node reaches every node), a
//! [`StoreEvent::RegistryChanged`] re-reads the named agents and upstreams. A decision takes no store
//! round trip. With no active policy set, every decision is a deny that says so.
//!
//! Shadow mode: when a candidate set is loaded as shadow, every decision is also made with it; the
//! shadow decision is never enforced, differences are counted and logged.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use warden_core::{AgentName, ChangeContext, Decision, UpstreamName};
use warden_policy::{
    AgentFacts, CompiledPolicies, EntityStore, Explanation, PolicyEngine, PolicyError, PolicyRequest,
    PolicySource, UpstreamFacts,
};
use warden_store::{PolicyRole, PolicyVersion, Store};

/// What `/healthz` and `GET /v1/policies` report about shadow evaluation.
#[derive(Debug, Default)]
pub struct ShadowStats {
    pub evaluated: AtomicU64,
    pub differed: AtomicU64,
}

#[derive(Debug, Default)]
pub struct Policies {
    engine: RwLock<Option<Arc<PolicyEngine>>>,
    entities: RwLock<EntityStore>,
    /// The `updated_at` of the agent record each entity was made from: an older read (an event handled
    /// late) never overwrites a newer one.
    agent_versions: RwLock<std::collections::HashMap<String, DateTime<Utc>>>,
    /// The MCP gateway's tool catalogue (`upstream/name` → record), kept current like the registry.
    /// Active tools are also policy entities; quarantined ones are not (a decision on one denies).
    tools: RwLock<std::collections::HashMap<String, Arc<warden_store::ToolRecord>>>,
    pub shadow: ShadowStats,
}

/// Puts an active tool into the policy entities with its effective class, and takes a quarantined
/// one out.
fn tool_entity(entities: &mut EntityStore, t: &warden_store::ToolRecord) {
    let key = t.key();
    if t.state != warden_core::ToolState::Active {
        entities.remove_tool(&key);
        return;
    }
    let class = match t.effective_class() {
        warden_core::ToolClass::Read => warden_policy::store::ToolClass::Read,
        warden_core::ToolClass::Write => warden_policy::store::ToolClass::Write,
        warden_core::ToolClass::Destructive => warden_policy::store::ToolClass::Destructive,
        warden_core::ToolClass::Admin => warden_policy::store::ToolClass::Admin,
    };
    if let Err(e) = entities.upsert_tool(warden_policy::store::ToolFacts {
        upstream: t.upstream.clone(),
        name: t.name.clone(),
        class,
    }) {
        tracing::error!(tool = %key, error = %e, "tool not loaded into the policy store");
    }
}

/// The version reported when no policy set is active.
pub const NO_POLICY: &str = "none";

impl Policies {
    /// Loads the current policy sets and the registry. A stored active set that no longer compiles
    /// stops the start: running with a different set than the one recorded as active is worse.
    pub async fn load(store: &dyn Store) -> anyhow::Result<Self> {
        let policies = Self::default();
        policies.reload_policies(store, true).await?;
        policies.reload_registry(store).await?;
        Ok(policies)
    }

    /// Re-reads the active and shadow sets from the store.
    pub async fn reload_policies(&self, store: &dyn Store, strict: bool) -> anyhow::Result<()> {
        let current = store
            .current_policies()
            .await
            .context("cannot read the current policy sets")?;
        let active = match &current.active {
            Some(v) => match compile_version(v) {
                Ok(c) => Some(Arc::new(c)),
                Err(errors) if strict => {
                    anyhow::bail!(
                        "the active policy set {} does not compile: {}",
                        v.version,
                        errors
                            .iter()
                            .map(ToString::to_string)
                            .collect::<Vec<_>>()
                            .join("; ")
                    )
                }
                Err(errors) => {
                    tracing::error!(version = %v.version, errors = errors.len(), "the active policy set does not compile; keeping the loaded one");
                    return Ok(());
                }
            },
            None => None,
        };
        let shadow = current.shadow.as_ref().and_then(|v| match compile_version(v) {
            Ok(c) => Some(Arc::new(c)),
            Err(errors) => {
                tracing::error!(version = %v.version, errors = errors.len(), "the shadow policy set does not compile; shadow evaluation is off");
                None
            }
        });
        let mut engine = self.engine.write().unwrap_or_else(|p| p.into_inner());
        match active {
            Some(set) => {
                tracing::info!(version = set.version(), policies = set.len(), shadow = ?shadow.as_ref().map(|s| s.version().to_owned()), "policy sets loaded");
                let e = engine.get_or_insert_with(|| Arc::new(PolicyEngine::new(set.clone())));
                e.activate(set);
                e.set_shadow(shadow);
            }
            None => {
                tracing::warn!(
                    "no active policy set: every decision is deny; activate one with `warden policy activate DIR`"
                );
                *engine = None;
            }
        }
        Ok(())
    }

    /// Loads every agent and upstream into the entity store.
    pub async fn reload_registry(&self, store: &dyn Store) -> anyhow::Result<()> {
        let agents = store
            .list_agents(&Default::default())
            .await
            .context("cannot read agents")?;
        let upstreams = store.list_upstreams().await.context("cannot read upstreams")?;
        let mut fresh = EntityStore::new();
        for u in &upstreams {
            if let Err(e) = fresh.upsert_upstream(UpstreamFacts::from(u)) {
                tracing::error!(upstream = %u.name, error = %e, "upstream not loaded into the policy store");
            }
        }
        let mut versions = std::collections::HashMap::new();
        for a in &agents {
            versions.insert(a.name.to_string(), a.updated_at);
            if let Err(e) = fresh.upsert_agent(AgentFacts::from(a)) {
                tracing::error!(agent = %a.name, error = %e, "agent not loaded into the policy store");
            }
        }
        let tools = store
            .list_tools(None)
            .await
            .context("cannot read the tool catalogue")?;
        let mut catalogue = std::collections::HashMap::new();
        for t in tools {
            tool_entity(&mut fresh, &t);
            catalogue.insert(t.key(), Arc::new(t));
        }
        *self.entities.write().unwrap_or_else(|p| p.into_inner()) = fresh;
        *self.agent_versions.write().unwrap_or_else(|p| p.into_inner()) = versions;
        *self.tools.write().unwrap_or_else(|p| p.into_inner()) = catalogue;
        Ok(())
    }

    /// A catalogued tool, as this node last saw it.
    pub fn tool(&self, upstream: &str, name: &str) -> Option<Arc<warden_store::ToolRecord>> {
        self.tools
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&format!("{upstream}/{name}"))
            .cloned()
    }

    /// Applies a tool record this node just wrote (or re-read after an event).
    pub fn tool_changed(&self, t: &warden_store::ToolRecord) {
        tool_entity(&mut self.entities.write().unwrap_or_else(|p| p.into_inner()), t);
        self.tools
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(t.key(), Arc::new(t.clone()));
    }

    /// Re-reads the named tools (`upstream/name`) after a store event.
    pub async fn refresh_tools(&self, store: &dyn Store, keys: &[String]) -> anyhow::Result<()> {
        for key in keys {
            let Some((up, name)) = key.split_once('/') else {
                continue;
            };
            let Ok(up) = UpstreamName::parse(up) else { continue };
            match store.get_tool(&up, name).await.context("cannot read a tool")? {
                Some(t) => self.tool_changed(&t),
                None => {
                    self.entities
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove_tool(key);
                    self.tools.write().unwrap_or_else(|p| p.into_inner()).remove(key);
                }
            }
        }
        Ok(())
    }

    /// Re-reads the named records (after a `RegistryChanged` event).
    pub async fn refresh(
        &self,
        store: &dyn Store,
        agents: &[String],
        upstreams: &[String],
    ) -> anyhow::Result<()> {
        let mut ups = Vec::new();
        for name in upstreams {
            let Ok(n) = UpstreamName::parse(name) else {
                continue;
            };
            ups.push((
                n.clone(),
                store.get_upstream(&n).await.context("cannot read an upstream")?,
            ));
        }
        let mut ags = Vec::new();
        for name in agents {
            let Ok(n) = AgentName::parse(name) else { continue };
            ags.push((
                n.clone(),
                store.get_agent(&n).await.context("cannot read an agent")?,
            ));
        }
        let mut entities = self.entities.write().unwrap_or_else(|p| p.into_inner());
        let mut versions = self.agent_versions.write().unwrap_or_else(|p| p.into_inner());
        for (name, up) in ups {
            match up {
                Some(u) => {
                    if let Err(e) = entities.upsert_upstream(UpstreamFacts::from(&u)) {
                        tracing::error!(upstream = %name, error = %e, "upstream not refreshed in the policy store");
                    }
                }
                None => {
                    entities.remove_upstream(name.as_str());
                }
            }
        }
        for (name, agent) in ags {
            match agent {
                Some(a) => {
                    if versions
                        .get(a.name.as_str())
                        .is_some_and(|seen| *seen > a.updated_at)
                    {
                        continue;
                    }
                    versions.insert(a.name.to_string(), a.updated_at);
                    if let Err(e) = entities.upsert_agent(AgentFacts::from(&a)) {
                        tracing::error!(agent = %name, error = %e, "agent not refreshed in the policy store");
                    }
                }
                None => {
                    entities.remove_agent(name.as_str());
                }
            }
        }
        Ok(())
    }

    /// Applies a registry change this node just made, before it answers (read-your-writes here; other
    /// nodes apply it when the store's event arrives).
    pub fn agent_changed(&self, agent: &warden_core::Agent) {
        let mut entities = self.entities.write().unwrap_or_else(|p| p.into_inner());
        let mut versions = self.agent_versions.write().unwrap_or_else(|p| p.into_inner());
        if versions
            .get(agent.name.as_str())
            .is_some_and(|seen| *seen > agent.updated_at)
        {
            return;
        }
        versions.insert(agent.name.to_string(), agent.updated_at);
        if let Err(e) = entities.upsert_agent(AgentFacts::from(agent)) {
            tracing::error!(agent = %agent.name, error = %e, "agent not refreshed in the policy store");
        }
    }

    /// See [`Policies::agent_changed`].
    pub fn upstream_changed(&self, name: &UpstreamName, upstream: Option<&warden_core::Upstream>) {
        let mut entities = self.entities.write().unwrap_or_else(|p| p.into_inner());
        match upstream {
            Some(u) => {
                if let Err(e) = entities.upsert_upstream(UpstreamFacts::from(u)) {
                    tracing::error!(upstream = %name, error = %e, "upstream not refreshed in the policy store");
                }
            }
            None => {
                entities.remove_upstream(name.as_str());
            }
        }
    }

    /// The decision for `req` under the active set (and, beside it, the shadow set's, never enforced).
    pub fn decide(&self, req: &PolicyRequest, now: DateTime<Utc>) -> Decision {
        let Some(engine) = self.engine.read().unwrap_or_else(|p| p.into_inner()).clone() else {
            return Decision::deny(
                "no-active-policy-set: no policy set is active, so nothing is allowed",
                NO_POLICY,
            );
        };
        let entities = self.entities.read().unwrap_or_else(|p| p.into_inner());
        let shadowed = engine.decide(&entities, req, now);
        if let Some(shadow) = &shadowed.shadow {
            self.shadow.evaluated.fetch_add(1, Ordering::Relaxed);
            if shadowed.differs() {
                self.shadow.differed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    principal = %req.principal, action = %req.action, resource = %req.resource,
                    active = ?shadowed.active.outcome, active_version = %shadowed.active.policy_version,
                    shadow = ?shadow.outcome, shadow_version = %shadow.policy_version, shadow_reasons = ?shadow.reasons,
                    "shadow policy set decided differently (not enforced)"
                );
            }
        }
        shadowed.active
    }

    /// How the active set decides `req`, policy by policy.
    pub fn explain(&self, req: &PolicyRequest, now: DateTime<Utc>) -> Option<Explanation> {
        let engine = self.engine.read().unwrap_or_else(|p| p.into_inner()).clone()?;
        let entities = self.entities.read().unwrap_or_else(|p| p.into_inner());
        Some(engine.active().explain(&entities, req, now))
    }

    /// Versions of the active and shadow sets.
    pub fn versions(&self) -> (Option<String>, Option<String>) {
        match self.engine.read().unwrap_or_else(|p| p.into_inner()).as_ref() {
            Some(e) => (
                Some(e.active().version().to_owned()),
                e.shadow().map(|s| s.version().to_owned()),
            ),
            None => (None, None),
        }
    }
}

/// Compiles a stored version.
pub fn compile_version(v: &PolicyVersion) -> Result<CompiledPolicies, Vec<PolicyError>> {
    let source = PolicySource::from_files(v.files.clone()).map_err(|e| vec![source_error(&e)])?;
    warden_policy::compile(&source)
}

fn source_error(e: &warden_policy::SourceError) -> PolicyError {
    PolicyError {
        file: String::new(),
        line: 0,
        column: 0,
        policy_id: None,
        message: e.to_string(),
    }
}

/// Compiles uploaded files; on success, the version to store.
pub fn compile_files(
    files: std::collections::BTreeMap<String, String>,
    actor: &str,
    now: DateTime<Utc>,
) -> Result<(PolicyVersion, CompiledPolicies), Vec<PolicyError>> {
    let source = PolicySource::from_files(files.clone()).map_err(|e| vec![source_error(&e)])?;
    let compiled = warden_policy::compile(&source)?;
    let version = PolicyVersion {
        version: source.version(),
        files,
        created_at: now,
        created_by: actor.to_owned(),
    };
    Ok((version, compiled))
}

/// On first start (no active set in the store), activates the policy directory named in the config.
/// Returns the ledger entry of the activation, if there was one (the caller records it).
pub async fn bootstrap(store: &dyn Store, dir: &Path) -> anyhow::Result<Option<warden_ledger::NewEntry>> {
    if store
        .current_policies()
        .await
        .context("cannot read the current policy sets")?
        .active
        .is_some()
    {
        return Ok(None);
    }
    let source = warden_policy::load_dir(dir)
        .with_context(|| format!("cannot load policies from {}", dir.display()))?;
    let compiled = warden_policy::compile(&source).map_err(|errors| {
        anyhow::anyhow!(
            "the bootstrap policies in {} do not compile:\n{}",
            dir.display(),
            errors
                .iter()
                .map(|e| format!("  {e}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let files = source
        .files()
        .iter()
        .map(|f| (f.name.clone(), f.text.clone()))
        .collect();
    let now = Utc::now();
    let version = PolicyVersion {
        version: source.version(),
        files,
        created_at: now,
        created_by: "system:bootstrap".into(),
    };
    store
        .activate_policies(
            &version,
            PolicyRole::Active,
            &format!("bootstrap from {}", dir.display()),
            &ChangeContext::new("system:bootstrap", now),
        )
        .await
        .context("cannot activate the bootstrap policies")?;
    tracing::info!(version = %version.version, policies = compiled.len(), dir = %dir.display(), "bootstrap policy set activated");
    let names: Vec<&String> = version.files.keys().collect();
    Ok(Some(
        warden_ledger::NewEntry::new(now, warden_ledger::EntryKind::PolicyChange, "system:bootstrap")
            .subject(version.version.clone())
            .body(serde_json::json!({
                "op": "policy.active",
                "policy_version": version.version,
                "files": names,
                "comment": format!("bootstrap from {}", dir.display()),
            })),
    ))
}
