//! The policy decision point inside the server: the active (and shadow) Cedar policy sets, the registry
//! as policy entities, the MCP gateway's tool catalogue, and the one function every decision goes
//! through.
//!
//! Policies and entities are loaded at start and kept current by store events: a
//! [`StoreEvent::PoliciesChanged`] reloads the sets (an activation on any node reaches every node), a
//! [`StoreEvent::RegistryChanged`] re-reads the named agents, upstreams and tools. A decision takes no
//! store round trip. With no active policy set, every decision is a deny that says so.
//!
//! Shadow mode: when a candidate set is loaded as shadow, every decision is also made with it; the
//! shadow decision is never enforced, differences are counted and logged.
//!
//! Typed tool arguments: every active catalogued tool whose approved definition declares an
//! `inputSchema` has a typed view (`context.tool_args["<upstream>/<tool>"]`, see
//! [`warden_policy::schema`]), and the sets are compiled — and uploads validated — against the views
//! of the catalogue as it is. The views are part of the Cedar schema, so a catalogue change that
//! changes them (a tool becomes active, is approved with a new definition, is quarantined or removed)
//! recompiles both sets; a change that leaves their fingerprint alone recompiles nothing. A set that
//! does not validate with some tool's view is compiled without it (logged), and that tool is denied.
//!
//! INVARIANT (typed views fail closed): a decision on a tool runs only on an active set compiled with
//! exactly the typed view the catalogue holds for that tool. Two mechanisms keep it:
//! - the rule: [`Policies::decide`] compares, per tool, the view the active set it decides with was
//!   compiled with to the catalogue's, and denies on any difference — `policy-recompiling` while a
//!   recompile is due, `tool-args-not-compiled` when the set does not validate with the view. This
//!   holds whatever the order of events (a resync that reloads the catalogue first, a recompile
//!   that fails, a decision that straddles a swap), so a `forbid` reading `context.tool_args` is
//!   never skipped because the engine has not caught up with the catalogue;
//! - so that the rule rarely has to deny: a record that makes a tool active with a new view (first
//!   sight, an approved definition) is staged — the tool stays unknown or quarantined — while the
//!   sets are compiled with the view off the decision path, then the sets, the entity and the
//!   record are swapped in together under the entities' lock, which decisions take first. Records
//!   that take privileges away (quarantine, removal) apply at once and the recompile follows.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use warden_core::{AgentName, ChangeContext, Decision, ToolState, UpstreamName};
use warden_policy::{
    AgentFacts, CompiledPolicies, EntityStore, Explanation, PolicyEngine, PolicyError, PolicyRequest,
    PolicySource, ResourceRef, ShadowedDecision, ToolArgTypes, UpstreamFacts,
};
use warden_store::{PolicyRole, PolicyVersion, Store, ToolRecord};

/// What `/healthz` and `GET /v1/policies` report about shadow evaluation.
#[derive(Debug, Default)]
pub struct ShadowStats {
    pub evaluated: AtomicU64,
    pub differed: AtomicU64,
}

/// The MCP gateway's tool catalogue as this node knows it.
#[derive(Debug, Default)]
struct Catalogue {
    /// `upstream/name` → record.
    tools: HashMap<String, Arc<ToolRecord>>,
    /// The typed argument views of the active tools among `tools` whose approved definition
    /// declares an input schema that has one: what the running sets must be compiled with.
    types: ToolArgTypes,
    /// Records that make a tool active with another typed view than `types` holds (first sight,
    /// an approved definition): kept out of `tools` — the tool is unknown, or stays as it was —
    /// until the sets are compiled with the view, then swapped in together with the sets.
    staged: HashMap<String, Arc<ToolRecord>>,
}

impl Catalogue {
    fn insert(&mut self, t: Arc<ToolRecord>) {
        let key = t.key();
        self.types.remove(&key);
        warn_untyped(&t, add_typed_view(&mut self.types, &t));
        self.tools.insert(key, t);
    }

    fn remove(&mut self, key: &str) {
        self.tools.remove(key);
        self.types.remove(key);
        self.staged.remove(key);
    }

    /// The typed views the sets are to be compiled with: `types`, with the staged records' views
    /// in place of their tools'.
    fn wanted(&self) -> ToolArgTypes {
        let mut types = self.types.clone();
        for (key, t) in &self.staged {
            types.remove(key);
            // Without a view is as it will be inserted (and warned about then).
            let _untyped = add_typed_view(&mut types, t);
        }
        types
    }
}

/// Swaps in the staged records whose typed view is the one the running sets were compiled for
/// (`compiled_for`); a record staged since with another view waits for its own compile. By view,
/// not by record: the same change read twice (this node's write, then its store event) is one view.
fn apply_staged(entities: &mut EntityStore, catalogue: &mut Catalogue, compiled_for: &ToolArgTypes) {
    let ready: Vec<String> = catalogue
        .staged
        .iter()
        .filter(|(key, t)| typed_view(t).as_ref() == compiled_for.get(key))
        .map(|(key, _)| key.clone())
        .collect();
    for key in ready {
        if let Some(t) = catalogue.staged.remove(&key) {
            tool_entity(entities, &t);
            catalogue.insert(t);
        }
    }
}

/// The typed view of one tool on its own (none for a schema that has none; see [`add_typed_view`]).
fn typed_view(t: &ToolRecord) -> Option<warden_policy::ArgType> {
    let mut one = ToolArgTypes::new();
    add_typed_view(&mut one, t).ok()?;
    one.get(&t.key()).cloned()
}

/// Adds the typed view of `t` when it is active and its approved definition declares an input
/// schema. A schema with no typed view is an error, and nothing is added: the tool keeps the
/// generic view (`context.args`), and compiling the sets goes on.
fn add_typed_view(types: &mut ToolArgTypes, t: &ToolRecord) -> Result<(), warden_policy::ArgSchemaError> {
    if t.state != ToolState::Active {
        return Ok(());
    }
    let Some(schema) = t.definition.as_ref().and_then(|d| d.get("inputSchema")) else {
        return Ok(());
    };
    types.add_json_schema(&t.key(), schema)
}

fn warn_untyped(t: &ToolRecord, added: Result<(), warden_policy::ArgSchemaError>) {
    if let Err(e) = added {
        tracing::warn!(tool = %t.key(), error = %e, "the tool's input schema has no typed view; policies see its arguments in `context.args` only");
    }
}

/// The typed argument views of the active tools among `tools` (see [`Catalogue::types`]); a tool
/// whose schema has none is logged and left out.
pub fn typed_views<'a>(tools: impl IntoIterator<Item = &'a ToolRecord>) -> ToolArgTypes {
    let mut types = ToolArgTypes::new();
    for t in tools {
        warn_untyped(t, add_typed_view(&mut types, t));
    }
    types
}

/// What the running sets were compiled from.
#[derive(Debug, Default)]
struct Sources {
    active: Option<PolicyVersion>,
    shadow: Option<PolicyVersion>,
    /// The fingerprint of the catalogue's typed views the running sets were compiled for (whether
    /// or not every view validated); `None` before the first compile.
    fingerprint: Option<String>,
}

#[derive(Debug, Default)]
pub struct Policies {
    engine: RwLock<Option<Arc<PolicyEngine>>>,
    /// The typed views the catalogue has and the running active set was compiled without, because
    /// the set does not validate with them: tool id → why. Decisions on those tools cite it.
    left_out: RwLock<BTreeMap<String, String>>,
    entities: RwLock<EntityStore>,
    /// The `updated_at` of the agent record each entity was made from: an older read (an event handled
    /// late) never overwrites a newer one.
    agent_versions: RwLock<HashMap<String, DateTime<Utc>>>,
    /// The MCP gateway's tool catalogue, kept current like the registry. Active tools are also policy
    /// entities; quarantined ones are not (a decision on one denies).
    catalogue: RwLock<Catalogue>,
    /// Serializes every compile-and-swap (reloading the sets, recompiling them for the catalogue),
    /// so an older compile never replaces a newer one. Held across the compile; decisions never
    /// take it.
    sources: tokio::sync::Mutex<Sources>,
    pub shadow: ShadowStats,
    /// Why the stored sets were last refused (a text that does not match its content hash), while
    /// they are: `/healthz` reports it. Cleared by the next load that verifies.
    refused: RwLock<Option<String>>,
}

/// A stored policy set whose text does not match its version (the content hash decisions name and
/// the ledger entry that activated it records): it was edited after it was activated. Never loaded.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct TamperedPolicy(pub String);

/// Checks that a stored set's files hash to its version (see `warden_ledger::policy`); `role`
/// (`active`, `shadow` or empty) names it in the error.
pub fn check_stored(v: &PolicyVersion, role: &str) -> Result<(), TamperedPolicy> {
    let actual = warden_ledger::policy::set_version(&v.files);
    if actual == v.version {
        return Ok(());
    }
    let what = if role.is_empty() {
        "policy set".to_owned()
    } else {
        format!("{role} policy set")
    };
    Err(TamperedPolicy(format!(
        "the stored {what} {} does not match its content hash (its files hash to {actual}): its text was \
         changed in the database after it was activated",
        v.version.escape_debug()
    )))
}

/// Puts an active tool into the policy entities with its effective class, and takes a quarantined
/// one out.
fn tool_entity(entities: &mut EntityStore, t: &ToolRecord) {
    let key = t.key();
    if t.state != ToolState::Active {
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

/// A set compiled for the catalogue, and the typed views it had to leave out.
#[derive(Debug)]
struct Built {
    set: CompiledPolicies,
    /// Tool id → why the set does not validate with its view.
    left_out: BTreeMap<String, String>,
}

impl Policies {
    /// Loads the tool catalogue, the registry and the current policy sets (compiled with the
    /// catalogue's typed views). A stored active set that no longer compiles stops the start: running
    /// with a different set than the one recorded as active is worse.
    pub async fn load(store: &dyn Store) -> anyhow::Result<Self> {
        let policies = Self::default();
        policies.load_registry(store).await?;
        policies.reload_policies(store, true).await?;
        Ok(policies)
    }

    /// Re-reads the active and shadow sets from the store and compiles them with the catalogue's
    /// typed views (off the async threads; decisions go on with the running sets meanwhile).
    pub async fn reload_policies(&self, store: &dyn Store, strict: bool) -> anyhow::Result<()> {
        let mut sources = self.sources.lock().await;
        let current = store
            .current_policies()
            .await
            .context("cannot read the current policy sets")?;
        // Before anything is compiled: a set whose text is not the one its version names is never
        // loaded (at start, the node does not start; later, it keeps the sets it runs).
        let tampered: Vec<String> = [(&current.active, "active"), (&current.shadow, "shadow")]
            .into_iter()
            .filter_map(|(v, role)| check_stored(v.as_ref()?, role).err())
            .map(|e| e.0)
            .collect();
        if !tampered.is_empty() {
            let why = tampered.join("; ");
            if strict {
                anyhow::bail!(
                    "{why}; refusing to start. Restore the set's text (an evidence bundle carries it; `warden audit \
                     verify` names the changed file) or activate another set from a node that runs"
                );
            }
            tracing::error!(error = %why, "a stored policy set was refused; the running policy sets are kept");
            *self.refused.write().unwrap_or_else(|p| p.into_inner()) = Some(why.clone());
            return Err(TamperedPolicy(format!("{why}; the running policy sets are kept")).into());
        }
        *self.refused.write().unwrap_or_else(|p| p.into_inner()) = None;
        let types = self.wanted();
        let fingerprint = types.fingerprint();
        let active = match &current.active {
            Some(v) => match compile_off_thread(v, &types).await {
                Ok(built) => Some(built),
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
                    tracing::error!(version = %v.version, errors = errors.len(), first = %errors.first().map(ToString::to_string).unwrap_or_default(), "the active policy set does not compile; keeping the loaded one");
                    return Ok(());
                }
            },
            None => None,
        };
        match active {
            Some(built) => {
                let shadow = match &current.shadow {
                    Some(v) => self.compile_shadow(v, &types).await,
                    None => None,
                };
                tracing::info!(
                    version = built.set.version(), policies = built.set.len(),
                    shadow = ?shadow.as_ref().map(|s| s.version().to_owned()),
                    typed_tools = built.set.tool_types().len(), left_out = built.left_out.len(),
                    "policy sets loaded"
                );
                self.install(Some(built), shadow, &types);
            }
            None => {
                tracing::warn!(
                    "no active policy set: every decision is deny; activate one with `warden policy activate DIR`"
                );
                self.install(None, None, &types);
            }
        }
        *sources = Sources {
            active: current.active,
            shadow: current.shadow,
            fingerprint: Some(fingerprint),
        };
        Ok(())
    }

    /// The shadow set compiled for the catalogue, or `None` (logged) when it does not compile.
    async fn compile_shadow(&self, v: &PolicyVersion, types: &ToolArgTypes) -> Option<Arc<CompiledPolicies>> {
        match compile_off_thread(v, types).await {
            Ok(built) => {
                if !built.left_out.is_empty() {
                    tracing::warn!(version = %v.version, left_out = ?built.left_out.keys().collect::<Vec<_>>(), "the shadow policy set does not validate with some tools' typed arguments; compiled without them");
                }
                Some(Arc::new(built.set))
            }
            Err(errors) => {
                tracing::error!(version = %v.version, errors = errors.len(), "the shadow policy set does not compile; shadow evaluation is off");
                None
            }
        }
    }

    /// Makes `active` (and `shadow`) the running sets — or none — and swaps in the staged tool
    /// records they were compiled for, in one step for decisions (which read the entities first).
    fn install(
        &self,
        active: Option<Built>,
        shadow: Option<Arc<CompiledPolicies>>,
        compiled_for: &ToolArgTypes,
    ) {
        let mut entities = self.entities.write().unwrap_or_else(|p| p.into_inner());
        let mut engine = self.engine.write().unwrap_or_else(|p| p.into_inner());
        let mut catalogue = self.catalogue.write().unwrap_or_else(|p| p.into_inner());
        let left_out = match active {
            Some(active) => {
                let set = Arc::new(active.set);
                let e = engine.get_or_insert_with(|| Arc::new(PolicyEngine::new(set.clone())));
                e.activate(set);
                e.set_shadow(shadow);
                active.left_out
            }
            None => {
                *engine = None;
                BTreeMap::new()
            }
        };
        apply_staged(&mut entities, &mut catalogue, compiled_for);
        *self.left_out.write().unwrap_or_else(|p| p.into_inner()) = left_out;
    }

    /// Swaps in staged records without new sets (the running ones already fit, or cannot be made
    /// to): a tool whose view the running sets lack is then denied, citing `gaps`.
    fn release_staged(&self, compiled_for: &ToolArgTypes, gaps: Option<BTreeMap<String, String>>) {
        let mut entities = self.entities.write().unwrap_or_else(|p| p.into_inner());
        let mut catalogue = self.catalogue.write().unwrap_or_else(|p| p.into_inner());
        apply_staged(&mut entities, &mut catalogue, compiled_for);
        if let Some(gaps) = gaps {
            *self.left_out.write().unwrap_or_else(|p| p.into_inner()) = gaps;
        }
    }

    /// Recompiles the running sets when the catalogue's typed views changed since they were
    /// compiled (by fingerprint: an unchanged catalogue compiles nothing). Runs in a task of its
    /// own, so a caller that gives up (a dropped request) never leaves the recompile half done;
    /// returns when the sets match the catalogue as it was when the recompile began.
    pub async fn sync_tool_types(self: &Arc<Self>) {
        let this = Arc::clone(self);
        if let Err(e) = tokio::spawn(async move { this.recompile_for_catalogue().await }).await {
            tracing::error!(error = %e, "the policy recompile task failed; tools whose typed arguments changed stay denied");
        }
    }

    async fn recompile_for_catalogue(&self) {
        let mut sources = self.sources.lock().await;
        let types = self.wanted();
        let fingerprint = types.fingerprint();
        if sources.fingerprint.as_deref() == Some(fingerprint.as_str()) {
            self.release_staged(&types, None);
            return;
        }
        let Some(active) = sources.active.clone() else {
            // Nothing to compile: with no active set every decision is a deny.
            self.release_staged(&types, None);
            sources.fingerprint = Some(fingerprint);
            return;
        };
        let started = Instant::now();
        match compile_off_thread(&active, &types).await {
            Ok(built) => {
                let shadow = match sources.shadow.clone() {
                    Some(v) => self.compile_shadow(&v, &types).await,
                    None => None,
                };
                tracing::info!(
                    version = %active.version, typed_tools = built.set.tool_types().len(),
                    left_out = built.left_out.len(), elapsed_ms = started.elapsed().as_millis() as u64,
                    "policy sets recompiled for the tool catalogue's typed arguments"
                );
                self.install(Some(built), shadow, &types);
            }
            Err(errors) => {
                // The set itself no longer compiles (it did when loaded): keep the running sets;
                // the tools whose views they lack are denied, citing why.
                let why = errors.first().map(ToString::to_string).unwrap_or_default();
                tracing::error!(version = %active.version, errors = errors.len(), first = %why, "the active policy set does not compile for the tool catalogue; keeping the running sets");
                let running = self.engine.read().unwrap_or_else(|p| p.into_inner()).clone();
                let gaps = running.map(|engine| {
                    let set = engine.active();
                    let compiled = set.tool_types();
                    types
                        .tool_ids()
                        .filter(|id| types.get(id) != compiled.get(id))
                        .map(|id| (id.to_owned(), why.clone()))
                        .collect()
                });
                self.release_staged(&types, gaps);
            }
        }
        sources.fingerprint = Some(fingerprint);
    }

    /// The typed views the sets are to be compiled with (staged ones included).
    fn wanted(&self) -> ToolArgTypes {
        self.catalogue.read().unwrap_or_else(|p| p.into_inner()).wanted()
    }

    /// The catalogue's typed views (staged ones included): what uploads are validated against and
    /// the sets compiled with.
    pub fn tool_types(&self) -> ToolArgTypes {
        self.wanted()
    }

    /// Reads every agent, upstream and tool into the entity store and the catalogue, without
    /// recompiling.
    async fn load_registry(&self, store: &dyn Store) -> anyhow::Result<()> {
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
        let mut versions = HashMap::new();
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
        let mut catalogue = Catalogue::default();
        for t in tools {
            tool_entity(&mut fresh, &t);
            catalogue.insert(Arc::new(t));
        }
        let mut entities = self.entities.write().unwrap_or_else(|p| p.into_inner());
        *entities = fresh;
        *self.agent_versions.write().unwrap_or_else(|p| p.into_inner()) = versions;
        *self.catalogue.write().unwrap_or_else(|p| p.into_inner()) = catalogue;
        Ok(())
    }

    /// After a lost event: the registry and the catalogue, then the sets (compiled once, for the
    /// new catalogue), then a recompile if the sets were kept.
    pub async fn resync(self: &Arc<Self>, store: &dyn Store) -> anyhow::Result<()> {
        self.load_registry(store).await?;
        let reloaded = self.reload_policies(store, false).await;
        self.sync_tool_types().await;
        reloaded
    }

    /// A catalogued tool, as this node last saw it.
    pub fn tool(&self, upstream: &str, name: &str) -> Option<Arc<ToolRecord>> {
        self.catalogue
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .tools
            .get(&format!("{upstream}/{name}"))
            .cloned()
    }

    /// Applies a tool record without recompiling. A record that takes privileges away or leaves
    /// the typed view alone (quarantine, reclassification) applies at once; one that makes the tool
    /// active with another typed view is staged, and swapped in with the sets compiled for it by
    /// the next [`Policies::sync_tool_types`] (which every caller runs next).
    pub(crate) fn apply_tool(&self, t: &ToolRecord) {
        let key = t.key();
        let t = Arc::new(t.clone());
        let mut entities = self.entities.write().unwrap_or_else(|p| p.into_inner());
        let mut catalogue = self.catalogue.write().unwrap_or_else(|p| p.into_inner());
        if t.state == ToolState::Active && typed_view(&t).as_ref() != catalogue.types.get(&key) {
            catalogue.staged.insert(key, t);
            return;
        }
        // A later record supersedes a staged one.
        catalogue.staged.remove(&key);
        tool_entity(&mut entities, &t);
        catalogue.insert(t);
    }

    /// Applies a tool record this node just wrote (or re-read after an event), and recompiles the
    /// sets if its typed view changed.
    pub async fn tool_changed(self: &Arc<Self>, t: &ToolRecord) {
        self.apply_tool(t);
        self.sync_tool_types().await;
    }

    /// Re-reads the named tools (`upstream/name`) after a store event; one recompile for all.
    pub async fn refresh_tools(self: &Arc<Self>, store: &dyn Store, keys: &[String]) -> anyhow::Result<()> {
        let mut result = Ok(());
        for key in keys {
            let Some((up, name)) = key.split_once('/') else {
                continue;
            };
            let Ok(up) = UpstreamName::parse(up) else { continue };
            match store.get_tool(&up, name).await.context("cannot read a tool") {
                Ok(Some(t)) => self.apply_tool(&t),
                Ok(None) => {
                    let mut entities = self.entities.write().unwrap_or_else(|p| p.into_inner());
                    entities.remove_tool(key);
                    self.catalogue
                        .write()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(key);
                }
                Err(e) => {
                    result = Err(e);
                    break;
                }
            }
        }
        // What was applied is compiled for, even when a later read failed.
        self.sync_tool_types().await;
        result
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
        // The entities first: sets and staged tools are swapped in under their write lock, so the
        // engine, the entities and the catalogue read here are of one moment.
        let entities = self.entities.read().unwrap_or_else(|p| p.into_inner());
        let Some(engine) = self.engine.read().unwrap_or_else(|p| p.into_inner()).clone() else {
            return Decision::deny(
                "no-active-policy-set: no policy set is active, so nothing is allowed",
                NO_POLICY,
            );
        };
        // One load of each set: the one checked against the catalogue is the one that decides.
        let active = engine.active();
        if let Some(reason) = self.typed_view_gap(&active, &req.resource) {
            return Decision::deny(reason, active.version());
        }
        let shadowed = ShadowedDecision {
            active: active.decide(&entities, req, now),
            shadow: engine.shadow().map(|s| s.decide(&entities, req, now)),
        };
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

    /// For a tool, why `set` may not decide on it: it was compiled with another typed view of the
    /// tool's arguments than the catalogue holds (see the module's invariant). Called with the
    /// entities' read lock held, so the catalogue read here matches the entities decided with.
    fn typed_view_gap(&self, set: &CompiledPolicies, resource: &ResourceRef) -> Option<String> {
        let ResourceRef::Tool(id) = resource else {
            return None;
        };
        {
            let catalogue = self.catalogue.read().unwrap_or_else(|p| p.into_inner());
            if catalogue.types.get(id) == set.tool_types().get(id) {
                return None;
            }
        }
        let id_shown = id.escape_debug();
        Some(
            match self.left_out.read().unwrap_or_else(|p| p.into_inner()).get(id) {
                Some(why) => format!(
                    "tool-args-not-compiled: the active policy set does not validate with the typed arguments of tool `{id_shown}` ({why}); calls to it are denied until the policies or the tool change"
                ),
                None => format!(
                    "policy-recompiling: the typed arguments of tool `{id_shown}` are not compiled into the active policy set yet"
                ),
            },
        )
    }

    /// How the active set decides `req`, policy by policy.
    pub fn explain(&self, req: &PolicyRequest, now: DateTime<Utc>) -> Option<Explanation> {
        let entities = self.entities.read().unwrap_or_else(|p| p.into_inner());
        let engine = self.engine.read().unwrap_or_else(|p| p.into_inner()).clone()?;
        let active = engine.active();
        let mut explanation = active.explain(&entities, req, now);
        if let Some(reason) = self.typed_view_gap(&active, &req.resource) {
            explanation.decision = Decision::deny(reason, active.version());
        }
        Some(explanation)
    }

    /// Versions of the active and shadow sets.
    /// Why the stored policy sets were refused, while they are (for `/healthz`).
    pub fn refused(&self) -> Option<String> {
        self.refused.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

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

/// [`compile_for_catalogue`] on the blocking pool: a big set takes a while.
async fn compile_off_thread(v: &PolicyVersion, types: &ToolArgTypes) -> Result<Built, Vec<PolicyError>> {
    let (v, types) = (v.clone(), types.clone());
    tokio::task::spawn_blocking(move || compile_for_catalogue(&v, &types))
        .await
        .unwrap_or_else(|e| Err(vec![bare_error(format!("the policy compile task failed: {e}"))]))
}

/// Compiles a stored set with the catalogue's typed views. A set that does not validate with them
/// but does without is compiled without the views its failing policies read — a policy reads
/// `context.tool_args["x/y"]` only by naming `"x/y"` literally (Cedar has no computed attribute
/// access), so those are the views its text names — or, if it still does not validate, without
/// any; the views left out are returned with the first error, and decisions on those tools deny.
/// A set that does not compile even without typed views is an error.
fn compile_for_catalogue(v: &PolicyVersion, types: &ToolArgTypes) -> Result<Built, Vec<PolicyError>> {
    let source = PolicySource::from_files(v.files.clone()).map_err(|e| vec![source_error(&e)])?;
    let errors = match warden_policy::compile_with_tools(&source, types) {
        Ok(set) => {
            return Ok(Built {
                set,
                left_out: BTreeMap::new(),
            });
        }
        Err(errors) if types.is_empty() => return Err(errors),
        Err(errors) => errors,
    };
    // Errors without typed views belong to the set itself: report the ones with them.
    let untyped = warden_policy::compile(&source).map_err(|_| errors.clone())?;
    let mut left_out = BTreeMap::new();
    for e in &errors {
        let text = e.policy_id.as_deref().and_then(|id| untyped.policy_text(id));
        for id in types.tool_ids() {
            let named = text.as_deref().is_none_or(|t| t.contains(&format!("\"{id}\"")));
            if named {
                left_out.entry(id.to_owned()).or_insert_with(|| e.to_string());
            }
        }
    }
    let mut narrowed = types.clone();
    for id in left_out.keys() {
        narrowed.remove(id);
    }
    let first = errors.first().map(ToString::to_string).unwrap_or_default();
    let built = match warden_policy::compile_with_tools(&source, &narrowed) {
        Ok(set) => Built { set, left_out },
        Err(_) => Built {
            set: untyped,
            left_out: types
                .tool_ids()
                .map(|id| {
                    (
                        id.to_owned(),
                        left_out.get(id).cloned().unwrap_or_else(|| first.clone()),
                    )
                })
                .collect(),
        },
    };
    tracing::error!(
        version = %v.version, left_out = ?built.left_out.keys().collect::<Vec<_>>(), first = %first,
        "the policy set does not validate with some tools' typed arguments; compiled without them, and calls to those tools are denied"
    );
    Ok(built)
}

fn bare_error(message: String) -> PolicyError {
    PolicyError {
        file: String::new(),
        line: 0,
        column: 0,
        policy_id: None,
        message,
    }
}

fn source_error(e: &warden_policy::SourceError) -> PolicyError {
    bare_error(e.to_string())
}

/// Compiles uploaded files against the typed views `types` (the catalogue's: a policy reading
/// `context.tool_args["up/tool"]` is checked against the tool's declared input); on success, the
/// version to store — content-addressed by the source alone, whatever the catalogue holds.
pub fn compile_files(
    files: BTreeMap<String, String>,
    actor: &str,
    now: DateTime<Utc>,
    types: &ToolArgTypes,
) -> Result<(PolicyVersion, CompiledPolicies), Vec<PolicyError>> {
    let source = PolicySource::from_files(files.clone()).map_err(|e| vec![source_error(&e)])?;
    let compiled = warden_policy::compile_with_tools(&source, types)?;
    let version = PolicyVersion {
        version: source.version(),
        files,
        created_at: now,
        created_by: actor.to_owned(),
    };
    Ok((version, compiled))
}

/// The ledger entry of a policy activation: the version (the content hash) and, so that an edited
/// text can be named by file later, every file's SHA-256 (`warden_ledger::policy`).
pub fn activation_body(version: &PolicyVersion, comment: &str) -> serde_json::Value {
    serde_json::json!({
        "policy_version": version.version,
        "files": version.files.keys().collect::<Vec<_>>(),
        warden_ledger::policy::FILE_HASHES_MEMBER: warden_ledger::policy::file_hashes(&version.files),
        "comment": comment,
    })
}

/// The first-start activation of `policy.bootstrap_dir`: the set and the ledger entry to record
/// before it is activated.
#[derive(Debug)]
pub struct Bootstrap {
    pub version: PolicyVersion,
    pub comment: String,
    pub entry: warden_ledger::NewEntry,
    policies: usize,
    typed_tools: usize,
}

/// On first start (no active set in the store), compiles the policy directory named in the config;
/// `None` when a set is active already. The caller records [`Bootstrap::entry`], then
/// [`activate_bootstrap`] (record before act).
pub async fn prepare_bootstrap(store: &dyn Store, dir: &Path) -> anyhow::Result<Option<Bootstrap>> {
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
    // Validated like an upload: against the typed views of the tools already catalogued.
    let tools = store
        .list_tools(None)
        .await
        .context("cannot read the tool catalogue")?;
    let types = typed_views(&tools);
    let compiled = warden_policy::compile_with_tools(&source, &types).map_err(|errors| {
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
    let comment = format!("bootstrap from {}", dir.display());
    let mut body = activation_body(&version, &comment);
    body["op"] = "policy.active".into();
    let entry = warden_ledger::NewEntry::new(now, warden_ledger::EntryKind::PolicyChange, "system:bootstrap")
        .subject(version.version.clone())
        .body(body);
    Ok(Some(Bootstrap {
        version,
        comment,
        entry,
        policies: compiled.len(),
        typed_tools: types.len(),
    }))
}

/// [`prepare_bootstrap`] and [`activate_bootstrap`] in one step, for callers that record the
/// returned entry afterwards (tests that build their own state).
pub async fn bootstrap(store: &dyn Store, dir: &Path) -> anyhow::Result<Option<warden_ledger::NewEntry>> {
    let Some(b) = prepare_bootstrap(store, dir).await? else {
        return Ok(None);
    };
    activate_bootstrap(store, &b).await?;
    Ok(Some(b.entry))
}

/// Activates a prepared bootstrap set (its entry recorded first), at the entry's time.
pub async fn activate_bootstrap(store: &dyn Store, b: &Bootstrap) -> anyhow::Result<()> {
    store
        .activate_policies(
            &b.version,
            PolicyRole::Active,
            &b.comment,
            &ChangeContext::new("system:bootstrap", b.entry.at),
        )
        .await
        .context("cannot activate the bootstrap policies")?;
    tracing::info!(version = %b.version.version, policies = b.policies, typed_tools = b.typed_tools, "bootstrap policy set activated");
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::expect_used, clippy::unwrap_used)]

    use super::*;
    use serde_json::{Value, json};
    use warden_core::{AgentState, Email, Environment, Model, Outcome, Sensitivity, ToolClass, UpstreamKind};
    use warden_policy::{Action, PolicyContext};

    /// Permits both tools; forbids refunds over 100, read from the typed view.
    const POLICY: &str = r#"
@id("refunds") permit(principal, action, resource == Warden::Tool::"crm/refund");
@id("searches") permit(principal, action, resource == Warden::Tool::"crm/search");
@id("big-refunds") forbid(principal, action, resource == Warden::Tool::"crm/refund")
when { context has tool_args && context.tool_args has "crm/refund" && context.tool_args["crm/refund"].amount > 100 };
"#;

    fn amount_schema(ty: &str) -> Value {
        json!({"type": "object", "properties": {"amount": {"type": ty}}, "required": ["amount"]})
    }

    fn version(text: &str) -> PolicyVersion {
        let files = BTreeMap::from([("p.cedar".to_owned(), text.to_owned())]);
        let source = PolicySource::from_files(files.clone()).expect("source");
        PolicyVersion {
            version: source.version(),
            files,
            created_at: Utc::now(),
            created_by: "test".into(),
        }
    }

    fn tool(name: &str, state: ToolState, schema: Option<Value>) -> ToolRecord {
        let now = Utc::now();
        let mut definition = json!({"name": name, "description": "a tool"});
        if let Some(s) = schema {
            definition["inputSchema"] = s;
        }
        ToolRecord {
            upstream: UpstreamName::parse("crm").expect("name"),
            name: name.into(),
            state,
            digest: Some("0".repeat(64)),
            definition: Some(definition),
            hint_class: ToolClass::Read,
            class_override: None,
            pending_digest: None,
            pending_definition: None,
            pending_hint_class: None,
            first_seen: now,
            updated_at: now,
            approved_by: None,
            approved_at: None,
            classified_by: None,
            classified_at: None,
            quarantine_cause: None,
            resembles: None,
            quarantine_reason: None,
        }
    }

    fn registry(p: &Policies) {
        let mut e = p.entities.write().expect("lock");
        e.upsert_upstream(UpstreamFacts {
            name: UpstreamName::parse("crm").expect("name"),
            kind: UpstreamKind::Mcp,
            environment: Environment::Production,
            sensitivity: Sensitivity::Internal,
            owner: Email::parse("owner@example.com").expect("email"),
        })
        .expect("upstream");
        e.upsert_agent(AgentFacts {
            name: AgentName::parse("bot").expect("name"),
            environment: Environment::Production,
            model: Model::parse("anthropic/claude-sonnet@4.5").expect("model"),
            state: AgentState::Active,
            owners: vec![],
            allowed_upstreams: vec![UpstreamName::parse("crm").expect("name")],
        })
        .expect("agent");
    }

    /// Policies running `text` as the active set, compiled for an empty catalogue, as
    /// `reload_policies` leaves them.
    async fn running(text: &str) -> Arc<Policies> {
        let p = Arc::new(Policies::default());
        registry(&p);
        let v = version(text);
        let types = p.tool_types();
        let built = compile_off_thread(&v, &types).await.expect("compiles");
        p.install(Some(built), None, &types);
        *p.sources.lock().await = Sources {
            active: Some(v),
            shadow: None,
            fingerprint: Some(types.fingerprint()),
        };
        p
    }

    fn call(p: &Policies, tool: &str, args: Value) -> Decision {
        let req = PolicyRequest {
            principal: AgentName::parse("bot").expect("name"),
            action: Action::Read,
            resource: ResourceRef::Tool(format!("crm/{tool}")),
            context: PolicyContext {
                args: Some(args),
                ..Default::default()
            },
        };
        p.decide(&req, Utc::now())
    }

    fn active(p: &Policies) -> Arc<CompiledPolicies> {
        p.engine
            .read()
            .expect("lock")
            .clone()
            .expect("an active set")
            .active()
    }

    #[test]
    fn typed_views_are_those_of_active_tools_with_a_typable_input_schema() {
        let types = typed_views(&[
            tool("refund", ToolState::Active, Some(amount_schema("integer"))),
            tool("held", ToolState::Quarantined, Some(amount_schema("integer"))),
            tool("bare", ToolState::Active, None),
            // Not an object schema: no typed view (warned), and the others are still typed.
            tool("odd", ToolState::Active, Some(json!({"type": "string"}))),
            tool("search", ToolState::Active, Some(json!({"type": "object"}))),
        ]);
        assert_eq!(types.tool_ids().collect::<Vec<_>>(), ["crm/refund", "crm/search"]);
        let mut one = ToolArgTypes::new();
        one.add_json_schema("crm/refund", &amount_schema("integer"))
            .expect("schema");
        assert_eq!(types.get("crm/refund"), one.get("crm/refund"));
    }

    #[tokio::test]
    async fn only_a_change_of_the_typed_views_recompiles() {
        let p = running(POLICY).await;
        let first = active(&p);
        assert!(first.tool_types().is_empty());

        // A tool without an input schema changes no typed view: nothing recompiled.
        p.tool_changed(&tool("search", ToolState::Active, None)).await;
        assert!(Arc::ptr_eq(&first, &active(&p)), "no typed view changed");

        // A new active tool with a schema: recompiled with its view.
        let refund = tool("refund", ToolState::Active, Some(amount_schema("integer")));
        p.tool_changed(&refund).await;
        let second = active(&p);
        assert!(!Arc::ptr_eq(&first, &second));
        assert!(second.tool_types().get("crm/refund").is_some());
        assert_eq!(second.version(), first.version(), "the version is the source's");

        // The same record again, a reclassification, a schema whose typed view is the same (an
        // unsupported `number` property is not in it): nothing recompiled.
        p.tool_changed(&refund).await;
        let mut reclassified = refund.clone();
        reclassified.class_override = Some(ToolClass::Write);
        p.tool_changed(&reclassified).await;
        let mut wider = refund.clone();
        wider.definition = Some(json!({"name": "refund", "inputSchema": {"type": "object",
            "properties": {"amount": {"type": "integer"}, "ratio": {"type": "number"}}, "required": ["amount"]}}));
        p.tool_changed(&wider).await;
        assert!(Arc::ptr_eq(&second, &active(&p)), "the typed views are unchanged");

        // Quarantined: its view is gone, so the sets are recompiled without it.
        p.tool_changed(&tool(
            "refund",
            ToolState::Quarantined,
            Some(amount_schema("integer")),
        ))
        .await;
        let third = active(&p);
        assert!(!Arc::ptr_eq(&second, &third));
        assert!(third.tool_types().is_empty());
        assert_eq!(
            p.sources.lock().await.fingerprint.as_deref(),
            Some(ToolArgTypes::new().fingerprint().as_str())
        );
    }

    /// Puts `t` into the catalogue and the entities without staging or recompiling: the catalogue
    /// ahead of the running sets, as after a resync reloaded it and before the sets are recompiled.
    fn ahead(p: &Policies, t: ToolRecord) {
        let mut entities = p.entities.write().expect("lock");
        let mut catalogue = p.catalogue.write().expect("lock");
        tool_entity(&mut entities, &t);
        catalogue.insert(Arc::new(t));
    }

    /// The rule of the module's invariant: the catalogue holds a typed view of a tool the running
    /// set was not compiled with. Every call on that tool is denied — even one the policies would
    /// allow — never decided by a set whose `forbid` cannot see `context.tool_args`.
    #[tokio::test]
    async fn a_call_is_denied_while_the_engine_lacks_the_tools_typed_view() {
        let p = running(POLICY).await;
        p.tool_changed(&tool("search", ToolState::Active, None)).await;
        ahead(
            &p,
            tool("refund", ToolState::Active, Some(amount_schema("integer"))),
        );
        for args in [json!({"amount": 500}), json!({"amount": 50})] {
            let d = call(&p, "refund", args);
            assert_eq!(d.outcome, Outcome::Deny, "{d:?}");
            assert_eq!(
                d.reasons,
                [
                    "policy-recompiling: the typed arguments of tool `crm/refund` are not compiled into the active policy set yet"
                ]
            );
            assert_eq!(d.policy_version, active(&p).version());
        }
        // Other tools are decided as usual meanwhile.
        assert_eq!(call(&p, "search", json!({})).outcome, Outcome::Allow);
        // A compile in progress holds the sources' lock: decisions never wait for it.
        {
            let _compiling = p.sources.lock().await;
            assert_eq!(call(&p, "refund", json!({"amount": 50})).outcome, Outcome::Deny);
            let explained = p
                .explain(
                    &PolicyRequest {
                        principal: AgentName::parse("bot").expect("name"),
                        action: Action::Read,
                        resource: ResourceRef::Tool("crm/refund".into()),
                        context: PolicyContext {
                            args: Some(json!({"amount": 50})),
                            ..Default::default()
                        },
                    },
                    Utc::now(),
                )
                .expect("explained");
            assert_eq!(explained.decision.outcome, Outcome::Deny);
            assert!(explained.decision.reasons[0].starts_with("policy-recompiling:"));
        }
        p.sync_tool_types().await;
        assert_eq!(call(&p, "refund", json!({"amount": 50})).outcome, Outcome::Allow);
        let d = call(&p, "refund", json!({"amount": 500}));
        assert_eq!(
            (d.outcome, d.reasons.clone()),
            (Outcome::Deny, vec!["big-refunds (forbid)".to_owned()])
        );
        let d = call(&p, "refund", json!({"amount": "x"}));
        assert_eq!(
            d.reasons,
            ["invalid-arguments: arguments of tool `crm/refund`: `amount` must be an integer"]
        );

        // The other way round: the catalogue's view is another one (here: none) than the set's.
        ahead(&p, tool("refund", ToolState::Active, None));
        assert!(call(&p, "refund", json!({"amount": 50})).reasons[0].starts_with("policy-recompiling:"));
        p.sync_tool_types().await;
        assert_eq!(call(&p, "refund", json!({"amount": 500})).outcome, Outcome::Allow);
    }

    /// A record that makes a tool active with a new view is staged: the tool stays as it was
    /// (unknown, quarantined) until the sets are compiled with the view, then both are swapped in
    /// together — no call sees the tool without its view, and none waits on a recompile.
    #[tokio::test]
    async fn a_tool_with_a_new_view_is_staged_until_the_sets_have_it() {
        let p = running(POLICY).await;
        let refund = tool("refund", ToolState::Active, Some(amount_schema("integer")));
        p.apply_tool(&refund);
        assert!(p.tool("crm", "refund").is_none(), "unknown until compiled");
        assert!(
            p.tool_types().get("crm/refund").is_some(),
            "uploads are validated with the staged view"
        );
        let d = call(&p, "refund", json!({"amount": 500}));
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(d.reasons[0].starts_with("unknown-resource:"), "{d:?}");
        p.sync_tool_types().await;
        assert_eq!(p.tool("crm", "refund").map(|t| t.state), Some(ToolState::Active));
        assert_eq!(call(&p, "refund", json!({"amount": 50})).outcome, Outcome::Allow);
        assert_eq!(
            call(&p, "refund", json!({"amount": 500})).reasons,
            ["big-refunds (forbid)"]
        );

        // A quarantine applies at once.
        let quarantined = tool("refund", ToolState::Quarantined, Some(amount_schema("integer")));
        p.apply_tool(&quarantined);
        assert_eq!(
            p.tool("crm", "refund").map(|t| t.state),
            Some(ToolState::Quarantined)
        );
        assert_eq!(call(&p, "refund", json!({"amount": 50})).outcome, Outcome::Deny);
        // A definition approved with a new view is staged: the tool stays quarantined meanwhile.
        let approved = tool(
            "refund",
            ToolState::Active,
            Some(
                json!({"type": "object", "properties": {"amount": {"type": "integer"}, "note": {"type": "string"}},
                        "required": ["amount"]}),
            ),
        );
        p.apply_tool(&approved);
        assert_eq!(
            p.tool("crm", "refund").map(|t| t.state),
            Some(ToolState::Quarantined)
        );
        // A later record supersedes the staged one, which is never swapped in.
        p.apply_tool(&quarantined);
        p.sync_tool_types().await;
        assert_eq!(
            p.tool("crm", "refund").map(|t| t.state),
            Some(ToolState::Quarantined)
        );
        assert!(active(&p).tool_types().is_empty());
        p.tool_changed(&approved).await;
        assert_eq!(
            call(&p, "refund", json!({"amount": 50, "note": "ok"})).outcome,
            Outcome::Allow
        );
        assert_eq!(
            call(&p, "refund", json!({"amount": 50, "note": 1})).reasons,
            ["invalid-arguments: arguments of tool `crm/refund`: `note` must be a string"]
        );
    }

    /// What a compile swaps in is decided by view when it ends: the same change staged again while
    /// it ran (this node's write, then its own store event) goes in with it; a change to another
    /// view waits for the compile made for it.
    #[tokio::test]
    async fn a_compile_swaps_in_the_staged_records_of_the_view_it_compiled() {
        let p = running(POLICY).await;
        let refund = tool("refund", ToolState::Active, Some(amount_schema("integer")));
        p.apply_tool(&refund);
        let types = p.wanted();
        let built = compile_off_thread(&version(POLICY), &types)
            .await
            .expect("compiles");
        p.apply_tool(&refund.clone());
        p.install(Some(built), None, &types);
        assert!(p.tool("crm", "refund").is_some());
        assert_eq!(
            call(&p, "refund", json!({"amount": 500})).reasons,
            ["big-refunds (forbid)"]
        );

        let p = running(POLICY).await;
        p.apply_tool(&refund);
        let types = p.wanted();
        let built = compile_off_thread(&version(POLICY), &types)
            .await
            .expect("compiles");
        let other = tool(
            "refund",
            ToolState::Active,
            Some(
                json!({"type": "object", "properties": {"amount": {"type": "integer"}, "note": {"type": "string"}},
                        "required": ["amount"]}),
            ),
        );
        p.apply_tool(&other);
        p.install(Some(built), None, &types);
        assert!(p.tool("crm", "refund").is_none(), "staged for its own compile");
        p.sync_tool_types().await;
        assert_eq!(
            p.tool("crm", "refund").and_then(|t| t.definition.clone()),
            other.definition
        );
        assert_eq!(
            call(&p, "refund", json!({"amount": 5, "note": "x"})).outcome,
            Outcome::Allow
        );
    }

    /// A view the active set does not validate with is left out (named, with the policy's error);
    /// its tool is denied; the other tools' views are compiled and decide.
    #[tokio::test]
    async fn a_view_the_set_does_not_validate_with_is_left_out_and_its_tool_denied() {
        let p = running(POLICY).await;
        let search = tool(
            "search",
            ToolState::Active,
            Some(json!({"type": "object", "properties": {"q": {"type": "string"}}})),
        );
        p.apply_tool(&search);
        // `amount` a string: `amount > 100` does not type-check.
        p.tool_changed(&tool("refund", ToolState::Active, Some(amount_schema("string"))))
            .await;
        let set = active(&p);
        assert!(set.tool_types().get("crm/search").is_some());
        assert!(set.tool_types().get("crm/refund").is_none());
        let d = call(&p, "refund", json!({"amount": "50"}));
        assert_eq!(d.outcome, Outcome::Deny);
        assert!(
            d.reasons[0].starts_with(
                "tool-args-not-compiled: the active policy set does not validate with the typed arguments of tool `crm/refund` (p.cedar:"
            ) && d.reasons[0].contains("big-refunds"),
            "{d:?}"
        );
        assert_eq!(call(&p, "search", json!({"q": "x"})).outcome, Outcome::Allow);
        // The catalogue unchanged: nothing is retried.
        p.tool_changed(&search).await;
        assert!(Arc::ptr_eq(&set, &active(&p)));
        // Fixed by the tool: the view validates again.
        p.tool_changed(&tool("refund", ToolState::Active, Some(amount_schema("integer"))))
            .await;
        assert_eq!(call(&p, "refund", json!({"amount": 50})).outcome, Outcome::Allow);
        assert_eq!(call(&p, "refund", json!({"amount": 500})).outcome, Outcome::Deny);
    }

    #[test]
    fn uploads_are_validated_against_the_catalogues_views_and_versioned_by_source() {
        let text = POLICY.replace("].amount > 100", "].amuont > 100");
        let files = BTreeMap::from([("p.cedar".to_owned(), text)]);
        let types = typed_views(&[tool("refund", ToolState::Active, Some(amount_schema("integer")))]);
        let errors = compile_files(files.clone(), "a@example.com", Utc::now(), &types)
            .expect_err("no attribute `amuont`");
        assert!(
            errors
                .iter()
                .any(|e| e.policy_id.as_deref() == Some("big-refunds") && e.to_string().contains("amuont")),
            "{errors:?}"
        );
        // Without the view the typo goes unnoticed (the guard makes the read impossible).
        let (plain, _) = compile_files(files, "a@example.com", Utc::now(), &ToolArgTypes::new())
            .expect("compiles untyped");
        let files = BTreeMap::from([("p.cedar".to_owned(), POLICY.to_owned())]);
        let (typed, compiled) =
            compile_files(files.clone(), "a@example.com", Utc::now(), &types).expect("compiles");
        assert!(compiled.tool_types().get("crm/refund").is_some());
        let (untyped, _) =
            compile_files(files, "a@example.com", Utc::now(), &ToolArgTypes::new()).expect("compiles");
        assert_eq!(typed.version, untyped.version, "content-addressed by source");
        assert_ne!(typed.version, plain.version);
    }

    /// A stored set whose text does not hash to its version (edited in the database) is never
    /// loaded: at start the node does not start; later it keeps the sets it runs and reports it.
    #[tokio::test]
    async fn a_stored_set_whose_text_does_not_match_its_version_is_never_loaded() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = warden_store::SqliteStore::open(&dir.path().join("w.db"))
            .await
            .expect("sqlite");
        let ctx = ChangeContext::new("test", Utc::now());
        let good = version(POLICY);
        store
            .activate_policies(&good, PolicyRole::Active, "test", &ctx)
            .await
            .expect("activate");
        let p = Policies::load(&store).await.expect("loads");
        assert!(p.refused().is_none());
        // A set stored under a version its text does not hash to (as an edit in the database leaves it).
        let mut forged = version(&POLICY.replace("forbid", "permit"));
        forged.version = "f".repeat(64);
        store
            .activate_policies(&forged, PolicyRole::Active, "test", &ctx)
            .await
            .expect("activate");
        let err = p.reload_policies(&store, false).await.expect_err("refused");
        assert!(err.downcast_ref::<TamperedPolicy>().is_some(), "{err:#}");
        assert!(err.to_string().contains(&"f".repeat(64)), "{err:#}");
        assert_eq!(
            p.versions().0.as_deref(),
            Some(good.version.as_str()),
            "the running set is kept"
        );
        assert!(p.refused().expect("reported").contains("content hash"));
        // At start: no start.
        let err = Policies::load(&store).await.expect_err("refused");
        assert!(format!("{err:#}").contains("refusing to start"), "{err:#}");
        // A set that matches its hash clears it.
        store
            .activate_policies(
                &version("@id(\"p\") permit(principal, action, resource);"),
                PolicyRole::Active,
                "test",
                &ctx,
            )
            .await
            .expect("activate");
        p.reload_policies(&store, false).await.expect("loads");
        assert!(p.refused().is_none());
    }

    /// Through a real store: the start compiles the stored set with the stored catalogue's views,
    /// and the event paths (`refresh_tools`, `resync`) recompile for what changed on another node.
    #[tokio::test]
    async fn the_start_and_store_events_compile_for_the_stored_catalogue() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = warden_store::SqliteStore::open(&dir.path().join("w.db"))
            .await
            .expect("sqlite");
        let ctx = ChangeContext::new("test", Utc::now());
        store
            .create_human(
                &warden_core::NewHuman {
                    email: Email::parse("owner@example.com").expect("email"),
                    display_name: warden_core::DisplayName::parse("Owner").expect("name"),
                    roles: vec![warden_core::Role::Owner],
                },
                &ctx,
            )
            .await
            .expect("human");
        let crm = UpstreamName::parse("crm").expect("name");
        store
            .create_upstream(
                &warden_core::NewUpstream {
                    name: crm.clone(),
                    kind: UpstreamKind::Mcp,
                    url: "https://crm.example.com/mcp".into(),
                    environment: Environment::Production,
                    owner: Email::parse("owner@example.com").expect("email"),
                    sensitivity: Sensitivity::Internal,
                    description: Default::default(),
                },
                &ctx,
            )
            .await
            .expect("upstream");
        let observed = |digest: char, schema: Value| warden_store::ObservedTool {
            name: "refund".into(),
            digest: digest.to_string().repeat(64),
            definition: json!({"name": "refund", "inputSchema": schema}),
            hint_class: ToolClass::Read,
        };
        store
            .observe_tools(
                &crm,
                &[observed('a', amount_schema("integer"))],
                ToolState::Active,
                Utc::now(),
            )
            .await
            .expect("observe");
        store
            .activate_policies(&version(POLICY), PolicyRole::Active, "test", &ctx)
            .await
            .expect("activate");

        let p = Arc::new(Policies::load(&store).await.expect("loads"));
        registry(&p);
        assert!(active(&p).tool_types().get("crm/refund").is_some());
        assert_eq!(call(&p, "refund", json!({"amount": 50})).outcome, Outcome::Allow);
        assert_eq!(
            call(&p, "refund", json!({"amount": 500})).reasons,
            ["big-refunds (forbid)"]
        );

        // Another node saw a changed definition: quarantined in the store; the event names it.
        store
            .observe_tools(
                &crm,
                &[observed('b', amount_schema("string"))],
                ToolState::Active,
                Utc::now(),
            )
            .await
            .expect("observe");
        p.refresh_tools(&store, &["crm/refund".to_owned()])
            .await
            .expect("refresh");
        assert!(active(&p).tool_types().is_empty());
        assert_eq!(call(&p, "refund", json!({"amount": 50})).outcome, Outcome::Deny);

        // Approved elsewhere, and this node missed the event: a resync reloads the catalogue and
        // compiles for it — the string view does not validate with `big-refunds`, so it is left
        // out and the tool denied.
        store
            .approve_tool(&crm, "refund", &"b".repeat(64), &ctx)
            .await
            .expect("approve");
        p.resync(&store).await.expect("resync");
        registry(&p);
        let d = call(&p, "refund", json!({"amount": "50"}));
        assert!(d.reasons[0].starts_with("tool-args-not-compiled:"), "{d:?}");
        assert_eq!(
            p.tool_types().len(),
            1,
            "the catalogue has the view; the set does not"
        );
        assert!(active(&p).tool_types().is_empty());
    }
}
