//! Warden's policy engine: Cedar policies over Warden's schema, decided fast and explained.
//!
//! The flow the server drives:
//! 1. [`load_dir`] (or [`PolicySource::from_files`]) → a [`PolicySource`] with a content-hash
//!    [`version`](PolicySource::version);
//! 2. [`compile`] → a [`CompiledPolicies`]: parsed, checked for Warden's annotations (`@id` on every
//!    policy, `@approval`, `@quorum`), validated against [`SCHEMA_TEXT`] in strict mode, and indexed; or
//!    every error with file, line and column;
//! 3. keep the registry in an [`EntityStore`] (upsert agents, upstreams, tools, datasets as they
//!    change; MCP resources and prompts are not registry entities: a decision builds them from the
//!    [`ResourceRef`]);
//! 4. [`CompiledPolicies::decide`] a [`PolicyRequest`] → a `warden_core::Decision` (`allow`, `deny` or
//!    `needs_approval` with a quorum), or [`CompiledPolicies::explain`] it;
//! 5. [`PolicyEngine`] holds the active set and an optional shadow set, swapped atomically;
//!    [`run_tests`] runs a policy test file (see [`testing`]).
//!
//! The crate does no IO besides reading a policy directory in [`load_dir`]; evaluation is pure and
//! takes the time as an argument. Nothing here panics on input: every problem is a deny with the
//! reason, or an error value.

mod analysis;
pub mod compile;
pub mod engine;
mod index;
mod native;
pub mod request;
pub mod schema;
pub mod source;
pub mod store;
pub mod testing;
mod vocab;

pub use compile::{
    APPROVERS_REASON, CompiledPolicies, IndexStats, PolicyError, SELF_APPROVAL_REASON, UPSTREAM_OWNER,
    compile, compile_with_tools,
};
pub use engine::{Explanation, PolicyEngine, PolicyMatch, ShadowedDecision, same_decision, shadow_compare};
pub use request::{
    Action, Approval, ArgLimits, MAX_MCP_METHOD, McpContext, McpKind, PolicyContext, PolicyRequest,
    ResourceRef, Risk, TaskContext, UnknownAction,
};
pub use schema::{ArgSchemaError, ArgType, SCHEMA_TEXT, ToolArgTypes};
pub use source::{PolicyFile, PolicySource, SourceError, load_dir};
pub use store::{AgentFacts, DatasetFacts, EntityStore, StoreError, ToolClass, ToolFacts, UpstreamFacts};
pub use testing::{CaseResult, TestReport, run_tests};
/// The URI glob matcher behind an MCP resource's `declared` attribute (shared with task delegation,
/// hence kept in `warden-core`).
pub use warden_core::glob_matches;
