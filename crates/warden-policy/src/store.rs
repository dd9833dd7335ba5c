//! The registry as Cedar entities, kept in memory and updated one record at a time.
//!
//! Building Cedar `Entities` for 100k registry records on every request would cost milliseconds; the
//! store instead keeps each record's Cedar entity ready (`Arc`), and a decision takes only the ones the
//! request touches: the principal, the resource, the resource's ancestors (a tool's and a dataset's
//! upstream) and the action. Upserts and removals replace one entry, so the server can apply registry
//! events as they come (incremental refresh) instead of rebuilding.
//!
//! A tool or dataset refers to its upstream by name; the upstream's own attributes are looked up at
//! decision time, so changing an upstream never requires touching its tools.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smol_str::SmolStr;

use cedar_policy_core::ast::{Entity, EntityUID, PartialValue, Value};
use warden_core::{
    Agent, AgentName, AgentState, Email, Environment, Model, Sensitivity, Upstream, UpstreamKind,
    UpstreamName,
};

use crate::vocab::{Vocab, vocab};

/// What an agent is, as far as policy goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFacts {
    pub name: AgentName,
    pub environment: Environment,
    pub model: Model,
    pub state: AgentState,
    #[serde(default)]
    pub owners: Vec<Email>,
    #[serde(default)]
    pub allowed_upstreams: Vec<UpstreamName>,
}

impl From<&Agent> for AgentFacts {
    fn from(a: &Agent) -> Self {
        Self {
            name: a.name.clone(),
            environment: a.environment,
            model: a.model.clone(),
            state: a.state,
            owners: a.owners.clone(),
            allowed_upstreams: a.allowed_upstreams.clone(),
        }
    }
}

/// What an upstream is, as far as policy goes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamFacts {
    pub name: UpstreamName,
    pub kind: UpstreamKind,
    pub environment: Environment,
    pub sensitivity: Sensitivity,
    pub owner: Email,
}

impl From<&Upstream> for UpstreamFacts {
    fn from(u: &Upstream) -> Self {
        Self {
            name: u.name.clone(),
            kind: u.kind,
            environment: u.environment,
            sensitivity: u.sensitivity,
            owner: u.owner.clone(),
        }
    }
}

/// What calling a tool does. Set by an admin; MCP's `readOnlyHint` / `destructiveHint` only suggest
/// a default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ToolClass {
    Read,
    Write,
    Destructive,
    Admin,
}

impl ToolClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ToolClass::Read => "read",
            ToolClass::Write => "write",
            ToolClass::Destructive => "destructive",
            ToolClass::Admin => "admin",
        }
    }

    /// The action a call of a tool of this class is.
    pub fn action(self) -> crate::Action {
        match self {
            ToolClass::Read => crate::Action::Read,
            ToolClass::Write => crate::Action::Write,
            ToolClass::Destructive => crate::Action::Destructive,
            ToolClass::Admin => crate::Action::Admin,
        }
    }
}

/// A tool of an upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolFacts {
    pub upstream: UpstreamName,
    pub name: String,
    pub class: ToolClass,
}

/// A dataset of an upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetFacts {
    pub upstream: UpstreamName,
    pub name: String,
    pub sensitivity: Sensitivity,
}

/// A record the store refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error(
        "{what} name `{name}` must be 1 to 200 bytes without `/`, control characters or surrounding spaces"
    )]
    BadName { what: &'static str, name: String },
    #[error("the entity store holds {limit} entities; remove some before adding more")]
    Full { limit: usize },
    #[error("internal: {0}")]
    Internal(String),
}

fn check_name(what: &'static str, name: &str) -> Result<(), StoreError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && !name.contains('/')
        && name.trim() == name
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(StoreError::BadName {
            what,
            name: name.escape_debug().to_string(),
        })
    }
}

pub(crate) fn sensitivity_level(s: Sensitivity) -> i64 {
    match s {
        Sensitivity::Public => 0,
        Sensitivity::Internal => 1,
        Sensitivity::Confidential => 2,
        Sensitivity::Regulated => 3,
    }
}

#[derive(Clone, Debug)]
pub(crate) struct Stored<F> {
    pub facts: F,
    pub entity: Arc<Entity>,
    /// The entity's uid, shared: a decision names it in the request without copying it.
    pub uid: Arc<EntityUID>,
}

impl<F> Stored<F> {
    fn new(facts: F, entity: Arc<Entity>) -> Self {
        let uid = Arc::new(entity.uid().clone());
        Self { facts, entity, uid }
    }
}

/// Most entities the store holds (agents, upstreams, tools and datasets together).
pub const MAX_ENTITIES: usize = 1_000_000;

/// The registry, as Cedar entities, in memory. Not internally synchronized: the server keeps it
/// behind a lock (or swaps copies) and passes `&EntityStore` to decisions.
#[derive(Clone, Debug, Default)]
pub struct EntityStore {
    // Keyed by name; short names (up to 23 bytes) are held inline, so a lookup compares keys
    // without reading another allocation.
    pub(crate) agents: HashMap<SmolStr, Stored<AgentFacts>>,
    pub(crate) upstreams: HashMap<SmolStr, Stored<UpstreamFacts>>,
    pub(crate) tools: HashMap<SmolStr, Stored<ToolFacts>>,
    pub(crate) datasets: HashMap<SmolStr, Stored<DatasetFacts>>,
}

fn attrs<const N: usize>(pairs: [(&'static str, Value); N]) -> BTreeMap<SmolStr, PartialValue> {
    pairs
        .into_iter()
        .map(|(k, v)| (SmolStr::new_static(k), PartialValue::from(v)))
        .collect()
}

fn entity(
    uid: EntityUID,
    attrs: BTreeMap<SmolStr, PartialValue>,
    parents: HashSet<EntityUID>,
) -> Arc<Entity> {
    Arc::new(Entity::new_with_attr_partial_value(
        uid,
        attrs,
        HashSet::new(),
        parents,
        std::iter::empty(),
    ))
}

impl EntityStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of entities held.
    pub fn len(&self) -> usize {
        self.agents.len() + self.upstreams.len() + self.tools.len() + self.datasets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn room(&self) -> Result<(), StoreError> {
        if self.len() >= MAX_ENTITIES {
            Err(StoreError::Full { limit: MAX_ENTITIES })
        } else {
            Ok(())
        }
    }

    fn vocab() -> Result<&'static Vocab, StoreError> {
        vocab().map_err(StoreError::Internal)
    }

    /// Adds or replaces an agent (`(&agent).into()` from a registry record).
    pub fn upsert_agent(&mut self, facts: AgentFacts) -> Result<(), StoreError> {
        let v = Self::vocab()?;
        if !self.agents.contains_key(facts.name.as_str()) {
            self.room()?;
        }
        let e = entity(
            v.uid(&v.agent, facts.name.as_str()),
            attrs([
                ("name", Value::from(facts.name.as_str())),
                ("environment", Value::from(facts.environment.as_str())),
                ("model", Value::from(facts.model.to_string())),
                ("model_provider", Value::from(facts.model.provider())),
                ("state", Value::from(facts.state.as_str())),
                (
                    "owners",
                    Value::set(
                        facts
                            .owners
                            .iter()
                            .map(|o| Value::from(v.uid(&v.human, o.as_str()))),
                        None,
                    ),
                ),
                (
                    "allowed_upstreams",
                    Value::set(
                        facts
                            .allowed_upstreams
                            .iter()
                            .map(|u| Value::from(v.uid(&v.upstream, u.as_str()))),
                        None,
                    ),
                ),
            ]),
            HashSet::new(),
        );
        self.agents
            .insert(SmolStr::new(facts.name.as_str()), Stored::new(facts, e));
        Ok(())
    }

    /// Adds or replaces an upstream (`(&upstream).into()` from a registry record).
    pub fn upsert_upstream(&mut self, facts: UpstreamFacts) -> Result<(), StoreError> {
        let v = Self::vocab()?;
        if !self.upstreams.contains_key(facts.name.as_str()) {
            self.room()?;
        }
        let e = entity(
            v.uid(&v.upstream, facts.name.as_str()),
            attrs([
                ("name", Value::from(facts.name.as_str())),
                ("kind", Value::from(facts.kind.as_str())),
                ("environment", Value::from(facts.environment.as_str())),
                ("sensitivity", Value::from(facts.sensitivity.as_str())),
                (
                    "sensitivity_level",
                    Value::from(sensitivity_level(facts.sensitivity)),
                ),
                ("owner", Value::from(v.uid(&v.human, facts.owner.as_str()))),
            ]),
            HashSet::new(),
        );
        self.upstreams
            .insert(SmolStr::new(facts.name.as_str()), Stored::new(facts, e));
        Ok(())
    }

    /// Adds or replaces a tool. Its upstream need not be registered yet; a request on a tool whose
    /// upstream is unknown is denied.
    pub fn upsert_tool(&mut self, facts: ToolFacts) -> Result<(), StoreError> {
        let v = Self::vocab()?;
        check_name("tool", &facts.name)?;
        let id = format!("{}/{}", facts.upstream, facts.name);
        if !self.tools.contains_key(id.as_str()) {
            self.room()?;
        }
        let up = v.uid(&v.upstream, facts.upstream.as_str());
        let e = entity(
            v.uid(&v.tool, &id),
            attrs([
                ("name", Value::from(facts.name.as_str())),
                ("upstream", Value::from(up.clone())),
                ("class", Value::from(facts.class.as_str())),
            ]),
            HashSet::from([up]),
        );
        self.tools.insert(SmolStr::new(id), Stored::new(facts, e));
        Ok(())
    }

    /// Adds or replaces a dataset.
    pub fn upsert_dataset(&mut self, facts: DatasetFacts) -> Result<(), StoreError> {
        let v = Self::vocab()?;
        check_name("dataset", &facts.name)?;
        let id = format!("{}/{}", facts.upstream, facts.name);
        if !self.datasets.contains_key(id.as_str()) {
            self.room()?;
        }
        let up = v.uid(&v.upstream, facts.upstream.as_str());
        let e = entity(
            v.uid(&v.dataset, &id),
            attrs([
                ("name", Value::from(facts.name.as_str())),
                ("upstream", Value::from(up.clone())),
                ("sensitivity", Value::from(facts.sensitivity.as_str())),
                (
                    "sensitivity_level",
                    Value::from(sensitivity_level(facts.sensitivity)),
                ),
            ]),
            HashSet::from([up]),
        );
        self.datasets.insert(SmolStr::new(id), Stored::new(facts, e));
        Ok(())
    }

    /// Removes an agent; true if it was there.
    pub fn remove_agent(&mut self, name: &str) -> bool {
        self.agents.remove(name).is_some()
    }

    /// Removes an upstream (its tools and datasets stay, and are denied until it comes back).
    pub fn remove_upstream(&mut self, name: &str) -> bool {
        self.upstreams.remove(name).is_some()
    }

    /// Removes a tool by `<upstream>/<tool>`.
    pub fn remove_tool(&mut self, id: &str) -> bool {
        self.tools.remove(id).is_some()
    }

    /// Removes a dataset by `<upstream>/<dataset>`.
    pub fn remove_dataset(&mut self, id: &str) -> bool {
        self.datasets.remove(id).is_some()
    }

    pub fn agent(&self, name: &str) -> Option<&AgentFacts> {
        self.agents.get(name).map(|s| &s.facts)
    }

    pub fn upstream(&self, name: &str) -> Option<&UpstreamFacts> {
        self.upstreams.get(name).map(|s| &s.facts)
    }

    pub fn tool(&self, id: &str) -> Option<&ToolFacts> {
        self.tools.get(id).map(|s| &s.facts)
    }

    pub fn dataset(&self, id: &str) -> Option<&DatasetFacts> {
        self.datasets.get(id).map(|s| &s.facts)
    }

    /// Every entity, for evaluating against the whole registry (the unindexed reference path and
    /// tests; never the hot path).
    pub(crate) fn all_entities(&self) -> impl Iterator<Item = &Arc<Entity>> {
        self.agents
            .values()
            .map(|s| &s.entity)
            .chain(self.upstreams.values().map(|s| &s.entity))
            .chain(self.tools.values().map(|s| &s.entity))
            .chain(self.datasets.values().map(|s| &s.entity))
    }
}

/// An attribute of a registry entity, read from the facts it was built from (`upsert_*` above)
/// instead of from the Cedar entity: the same value, without touching the entity. The native
/// evaluator reads these (`native.rs`); `None` for an attribute it should read from the entity.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Fact<'a> {
    Str(&'a str),
    Long(i64),
    /// A `Warden::Human`, by email.
    Human(&'a str),
    /// A `Warden::Upstream`, by name.
    Upstream(&'a str),
    /// A `Set<Warden::Upstream>`.
    Upstreams(&'a [UpstreamName]),
}

/// The facts behind a registry entity.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Facts<'a> {
    Agent(&'a AgentFacts),
    Upstream(&'a UpstreamFacts),
    Tool(&'a ToolFacts),
    Dataset(&'a DatasetFacts),
}

impl<'a> Facts<'a> {
    /// Attribute `attr` as the entity holds it, for the attributes kept in the facts as such.
    pub(crate) fn get(self, attr: &str) -> Option<Fact<'a>> {
        Some(match (self, attr) {
            (Facts::Agent(a), "name") => Fact::Str(a.name.as_str()),
            (Facts::Agent(a), "environment") => Fact::Str(a.environment.as_str()),
            (Facts::Agent(a), "model_provider") => Fact::Str(a.model.provider()),
            (Facts::Agent(a), "state") => Fact::Str(a.state.as_str()),
            (Facts::Agent(a), "allowed_upstreams") => Fact::Upstreams(&a.allowed_upstreams),
            (Facts::Upstream(u), "name") => Fact::Str(u.name.as_str()),
            (Facts::Upstream(u), "kind") => Fact::Str(u.kind.as_str()),
            (Facts::Upstream(u), "environment") => Fact::Str(u.environment.as_str()),
            (Facts::Upstream(u), "sensitivity") => Fact::Str(u.sensitivity.as_str()),
            (Facts::Upstream(u), "sensitivity_level") => Fact::Long(sensitivity_level(u.sensitivity)),
            (Facts::Upstream(u), "owner") => Fact::Human(u.owner.as_str()),
            (Facts::Tool(t), "name") => Fact::Str(&t.name),
            (Facts::Tool(t), "upstream") => Fact::Upstream(t.upstream.as_str()),
            (Facts::Tool(t), "class") => Fact::Str(t.class.as_str()),
            (Facts::Dataset(d), "name") => Fact::Str(&d.name),
            (Facts::Dataset(d), "upstream") => Fact::Upstream(d.upstream.as_str()),
            (Facts::Dataset(d), "sensitivity") => Fact::Str(d.sensitivity.as_str()),
            (Facts::Dataset(d), "sensitivity_level") => Fact::Long(sensitivity_level(d.sensitivity)),
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use warden_core::{Email, Model, UpstreamKind};

    /// Every attribute the facts answer for is the entity's attribute, value for value; the
    /// entities' ancestors are what decisions assume (a tool's and a dataset's upstream, nothing
    /// else).
    #[test]
    fn facts_are_the_entities_attributes() {
        let v = vocab().expect("vocab");
        let mut s = EntityStore::new();
        let up = UpstreamName::parse("crm").expect("name");
        s.upsert_upstream(UpstreamFacts {
            name: up.clone(),
            kind: UpstreamKind::Mcp,
            environment: Environment::Staging,
            sensitivity: Sensitivity::Confidential,
            owner: Email::parse("o@example.com").expect("email"),
        })
        .expect("upstream");
        s.upsert_agent(AgentFacts {
            name: AgentName::parse("bot").expect("name"),
            environment: Environment::Production,
            model: Model::parse("anthropic/claude@4").expect("model"),
            state: AgentState::Suspended,
            owners: vec![Email::parse("o@example.com").expect("email")],
            allowed_upstreams: vec![up.clone(), UpstreamName::parse("erp").expect("name")],
        })
        .expect("agent");
        s.upsert_tool(ToolFacts {
            upstream: up.clone(),
            name: "refund".into(),
            class: ToolClass::Destructive,
        })
        .expect("tool");
        s.upsert_dataset(DatasetFacts {
            upstream: up.clone(),
            name: "people".into(),
            sensitivity: Sensitivity::Regulated,
        })
        .expect("dataset");
        let as_value = |f: Fact<'_>| -> Value {
            match f {
                Fact::Str(x) => Value::from(x),
                Fact::Long(i) => Value::from(i),
                Fact::Human(e) => Value::from(v.uid(&v.human, e)),
                Fact::Upstream(n) => Value::from(v.uid(&v.upstream, n)),
                Fact::Upstreams(list) => Value::set(
                    list.iter().map(|u| Value::from(v.uid(&v.upstream, u.as_str()))),
                    None,
                ),
            }
        };
        let cases: Vec<(Facts<'_>, &Arc<Entity>)> = vec![
            (Facts::Agent(&s.agents["bot"].facts), &s.agents["bot"].entity),
            (
                Facts::Upstream(&s.upstreams["crm"].facts),
                &s.upstreams["crm"].entity,
            ),
            (
                Facts::Tool(&s.tools["crm/refund"].facts),
                &s.tools["crm/refund"].entity,
            ),
            (
                Facts::Dataset(&s.datasets["crm/people"].facts),
                &s.datasets["crm/people"].entity,
            ),
        ];
        for (facts, entity) in cases {
            let mut answered = 0;
            for attr in entity.keys() {
                if let Some(f) = facts.get(attr) {
                    answered += 1;
                    let PartialValue::Value(want) = entity.get(attr).expect("attr") else {
                        panic!("residual");
                    };
                    assert_eq!(&as_value(f), want, "{attr} of {}", entity.uid());
                }
            }
            for attr in [
                "name",
                "environment",
                "model_provider",
                "state",
                "allowed_upstreams",
                "kind",
                "sensitivity",
                "sensitivity_level",
                "owner",
                "upstream",
                "class",
                "nope",
            ] {
                if facts.get(attr).is_some() {
                    assert!(entity.get(attr).is_some(), "{attr} of {}", entity.uid());
                }
            }
            assert!(answered >= 3, "{}", entity.uid());
            let ancestors: Vec<&EntityUID> = entity.ancestors().collect();
            match facts {
                Facts::Tool(_) | Facts::Dataset(_) => {
                    assert_eq!(ancestors, vec![&v.uid(&v.upstream, "crm")]);
                }
                _ => assert!(ancestors.is_empty()),
            }
        }
    }
}
