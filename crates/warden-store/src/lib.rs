//! Warden's storage: one interface, [`Store`], and two implementations behind it.
//!
//! - **SQLite** (the embedded default): one file in the data directory, WAL mode, `synchronous=FULL`.
//!   Writes go through a pool of exactly one connection, so write transactions are serialized inside the
//!   process and never fail on SQLite's lock upgrade; reads use a separate pool and see committed
//!   snapshots.
//! - **PostgreSQL**: for several `warden serve` nodes sharing one database. Rows that a transaction
//!   reads and then changes are locked with `SELECT … FOR UPDATE`.
//!
//! Both run the same SQL (see `sql.rs`): the statements are written once, in the dialect both accept,
//! and a macro instantiates them for each backend so the compiler checks each one separately. Each
//! backend has its own versioned migrations (`migrations/sqlite`, `migrations/postgres`), embedded in the
//! binary and applied at start.
//!
//! INVARIANT (one change, one transaction): every method that writes does all its writes — the record,
//! its owner and upstream links, its history row — in one transaction, after its checks, so a failed
//! call leaves nothing behind.
//!
//! The storage test suite (`tests/suite.rs`) runs every test against both backends; the PostgreSQL run
//! uses a real server (see [`testing`]).

mod error;
mod postgres;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_core::token::TokenHash;
use warden_core::{
    Agent, AgentName, AgentRegistration, AgentState, AgentStateChange, AgentUpdate, ApiTokenInfo,
    ChangeContext, Email, Human, LifecycleAction, NewHuman, NewUpstream, TrustDomain, Upstream, UpstreamName,
};

pub use error::StoreError;
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// Which backend a store is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// The result of a change to an agent. When `credentials_invalidated` says why, every credential the
/// agent holds must stop working at once: the caller publishes that (the hook later issues revoke on).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentChange {
    pub agent: Agent,
    pub credentials_invalidated: Option<String>,
}

/// A token presented for authentication, with the human it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenOwner {
    pub human: Human,
    pub token: ApiTokenInfo,
}

/// A new API token to store: its metadata and the hash of its value (never the value).
#[derive(Clone, Debug)]
pub struct TokenRecord {
    pub id: Uuid,
    pub human: Email,
    pub label: String,
    pub hash: TokenHash,
    pub expires_at: DateTime<Utc>,
}

/// Filters for listing agents.
#[derive(Clone, Debug, Default)]
pub struct AgentFilter {
    pub state: Option<AgentState>,
    pub owner: Option<Email>,
}

/// The storage interface. Every implementation must pass `tests/suite.rs`.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug {
    fn backend(&self) -> Backend;

    /// A cheap round trip to the database, for `/healthz`.
    async fn health(&self) -> Result<()>;

    /// Closes the connection pools (graceful shutdown). Further calls fail as unavailable.
    async fn close(&self);

    // ---- humans and their tokens ----

    /// Registers a human.
    async fn create_human(&self, new: &NewHuman, ctx: &ChangeContext) -> Result<Human>;
    async fn get_human(&self, email: &Email) -> Result<Option<Human>>;
    async fn list_humans(&self) -> Result<Vec<Human>>;
    /// Creates the first admin and its token, in one transaction, only if no human exists yet.
    /// Returns `false` (and writes nothing) when the store already has humans, so that several nodes
    /// starting at once bootstrap at most one admin.
    async fn bootstrap_admin(
        &self,
        admin: &NewHuman,
        token: &TokenRecord,
        ctx: &ChangeContext,
    ) -> Result<bool>;
    async fn create_api_token(&self, token: &TokenRecord, ctx: &ChangeContext) -> Result<ApiTokenInfo>;
    async fn list_api_tokens(&self, human: &Email) -> Result<Vec<ApiTokenInfo>>;
    async fn get_api_token(&self, id: Uuid) -> Result<Option<ApiTokenInfo>>;
    /// Revokes a token. Revoking a revoked token is a conflict (the first revocation is kept).
    async fn revoke_api_token(&self, id: Uuid, ctx: &ChangeContext) -> Result<ApiTokenInfo>;
    /// Finds the token with this hash and its human, whatever the token's state: the caller decides
    /// (and reports) whether it is expired or revoked.
    async fn find_token(&self, hash: &TokenHash) -> Result<Option<TokenOwner>>;

    // ---- upstreams ----

    async fn create_upstream(&self, new: &NewUpstream, ctx: &ChangeContext) -> Result<Upstream>;
    async fn get_upstream(&self, name: &UpstreamName) -> Result<Option<Upstream>>;
    async fn list_upstreams(&self) -> Result<Vec<Upstream>>;
    /// Removes an upstream that no agent (other than retired ones) lists as allowed.
    async fn remove_upstream(&self, name: &UpstreamName, ctx: &ChangeContext) -> Result<Upstream>;

    // ---- agents ----

    /// Registers an agent in `pending_review`. Owners must be registered humans and allowed upstreams
    /// registered upstreams; names are never reused, not even a retired agent's.
    async fn create_agent(
        &self,
        new: &AgentRegistration,
        trust_domain: &TrustDomain,
        ctx: &ChangeContext,
    ) -> Result<Agent>;
    async fn get_agent(&self, name: &AgentName) -> Result<Option<Agent>>;
    async fn list_agents(&self, filter: &AgentFilter) -> Result<Vec<Agent>>;
    /// Applies a partial update; see [`AgentState::after_update`] for its effect on the state.
    async fn update_agent(
        &self,
        name: &AgentName,
        update: &AgentUpdate,
        ctx: &ChangeContext,
    ) -> Result<AgentChange>;
    /// Applies a lifecycle command; see [`AgentState::apply`].
    async fn transition_agent(
        &self,
        name: &AgentName,
        action: LifecycleAction,
        reason: &str,
        ctx: &ChangeContext,
    ) -> Result<AgentChange>;
    /// The agent's lifecycle history, oldest first.
    async fn agent_history(&self, name: &AgentName) -> Result<Vec<AgentStateChange>>;
}

/// Opens the store a database URL names: `sqlite://PATH` (or `sqlite:PATH`) or `postgres://…`, and
/// applies pending migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open_url(url).await?))
    } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url).await?))
    } else {
        Err(StoreError::Config(
            "database URL must start with `sqlite:` or `postgres://` (the URL itself is not shown: it may hold a password)"
                .into(),
        ))
    }
}
