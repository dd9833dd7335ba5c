//! Warden's domain model: the records of the registry (agents, upstreams, humans, API tokens), the rules
//! that make a value valid, the lifecycle of an agent, and which role may do what.
//!
//! This crate does no IO. Every type that arrives from outside (an HTTP body, a CLI flag, a row) is parsed
//! into one of these types and validated on the way in ("parse, don't validate"): an `AgentName` is a DNS
//! label because the only way to make one is [`AgentName::parse`]. The server and the storage layer can
//! therefore rely on what they hold, and a bad value is reported once, precisely, with the field it came
//! from.

pub mod decision;
pub mod error;
pub mod gateway;
pub mod glob;
pub mod model;
pub mod names;
pub mod redact;
pub mod roles;
pub mod secret;
pub mod token;

pub use decision::{Allowed, Decision, Outcome};
pub use error::ValidationError;
pub use gateway::{
    Injection, QuarantineCause, SecretEnvVar, SecretHeaderName, SecretHeaderPrefix, SecretName, ToolClass,
    ToolState,
};
pub use glob::glob_matches;
pub use model::*;
pub use names::{AgentName, Email, TrustDomain, UpstreamName};
pub use roles::{Permission, Role};
pub use secret::Secret;
