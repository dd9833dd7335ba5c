//! The names of Warden's schema as Cedar values: entity types (`Warden::Agent`, …) and action ids
//! (`Warden::Action::"read"`, …), parsed once.
//!
//! Parsing a Cedar name is fallible in Cedar's API even for constants; doing it once here, behind a
//! `LazyLock`, keeps the hot path free of parsing and of `expect` — a failure (which a unit test rules
//! out) turns every decision into a deny naming it, never a panic.

use std::sync::{Arc, LazyLock};

use cedar_policy_core::ast::{Eid, EntityType, EntityUID};

use crate::request::Action;

/// Cedar's names for Warden's entity types and actions.
#[derive(Debug)]
pub(crate) struct Vocab {
    pub agent: EntityType,
    pub upstream: EntityType,
    pub tool: EntityType,
    pub dataset: EntityType,
    pub task: EntityType,
    pub mcp_resource: EntityType,
    pub prompt: EntityType,
    pub human: EntityType,
    pub args: EntityType,
    actions: Vec<Arc<EntityUID>>,
}

impl Vocab {
    fn build() -> Result<Self, String> {
        let ty = |s: &str| {
            s.parse::<EntityType>()
                .map_err(|e| format!("entity type `{s}`: {e}"))
        };
        let action_ty = ty("Warden::Action")?;
        Ok(Self {
            agent: ty("Warden::Agent")?,
            upstream: ty("Warden::Upstream")?,
            tool: ty("Warden::Tool")?,
            dataset: ty("Warden::Dataset")?,
            task: ty("Warden::Task")?,
            mcp_resource: ty("Warden::McpResource")?,
            prompt: ty("Warden::Prompt")?,
            human: ty("Warden::Human")?,
            args: ty("Warden::Args")?,
            actions: Action::ALL
                .iter()
                .map(|a| {
                    Arc::new(EntityUID::from_components(
                        action_ty.clone(),
                        Eid::new(a.as_str()),
                        None,
                    ))
                })
                .collect(),
        })
    }

    /// The resource types, by `ResourceRef::kind` index.
    pub fn resource_types(&self) -> [EntityType; crate::request::RESOURCE_KINDS] {
        [
            self.upstream.clone(),
            self.tool.clone(),
            self.dataset.clone(),
            self.agent.clone(),
            self.task.clone(),
            self.mcp_resource.clone(),
            self.prompt.clone(),
        ]
    }

    pub fn uid(&self, ty: &EntityType, id: &str) -> EntityUID {
        EntityUID::from_components(ty.clone(), Eid::new(id), None)
    }

    pub fn action(&self, a: Action) -> &Arc<EntityUID> {
        // `Action::ALL` lists every variant in declaration order, so the index is in range.
        &self.actions[a as usize]
    }
}

static VOCAB: LazyLock<Result<Vocab, String>> = LazyLock::new(Vocab::build);

/// The vocabulary, or why it could not be built (never expected; a test checks it).
pub(crate) fn vocab() -> Result<&'static Vocab, String> {
    VOCAB.as_ref().map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_builds() {
        let v = vocab().expect("builds");
        assert_eq!(
            v.action(Action::TaskStart).to_string(),
            r#"Warden::Action::"task.start""#
        );
        assert_eq!(
            v.uid(&v.tool, "crm/search").to_string(),
            r#"Warden::Tool::"crm/search""#
        );
        for a in Action::ALL {
            assert_eq!(v.action(*a).eid().escaped(), a.as_str());
        }
    }
}
