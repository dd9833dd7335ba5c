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
mod ledger;
mod narrowing;
mod postgres;
mod reach;
mod sql;
mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;
mod write;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use uuid::Uuid;
use warden_core::token::TokenHash;
use warden_core::{
    Agent, AgentName, AgentRegistration, AgentState, AgentStateChange, AgentUpdate, ApiTokenInfo,
    ChangeContext, Email, Human, Injection, LifecycleAction, NewHuman, NewUpstream, QuarantineCause,
    SecretName, Task, TaskState, ToolClass, ToolState, TrustDomain, Upstream, UpstreamName,
};

pub use error::StoreError;
pub use ledger::{ProofError, consistency_proof, inclusion_proof};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;
pub use write::{Failure, PROBE_INTERVAL};

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The PostgreSQL `NOTIFY` channel [`StoreEvent`]s travel on.
pub const EVENT_CHANNEL: &str = "warden_events";

/// How many events a slow subscriber may fall behind before it is told to resync.
const EVENT_BUFFER: usize = 4096;

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
/// agent holds stopped working in the same transaction: `revoked_tasks` lists the tasks (the agent's
/// own and every task delegated from them) that were revoked, and a [`StoreEvent::TasksRevoked`] went
/// out to every node.
#[derive(Clone, Debug, PartialEq)]
pub struct AgentChange {
    pub agent: Agent,
    pub credentials_invalidated: Option<String>,
    /// The live tasks (with their delegation trees) the change ended: a suspension, retirement, model or
    /// environment change ends them all; a change that narrows the agent ends those it narrows.
    pub revoked_tasks: Vec<Uuid>,
    /// Why `revoked_tasks` ended, when any did.
    pub tasks_ended: Option<String>,
}

/// A one-time enrollment secret for an agent: its hash and expiry (the value is shown once).
#[derive(Clone, Debug)]
pub struct JoinTokenRecord {
    pub hash: TokenHash,
    pub expires_at: DateTime<Utc>,
}

/// The public key an agent enrolled with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentKey {
    pub kid: String,
    /// base64url of the 32-byte Ed25519 public key.
    pub public_x: String,
    pub created_at: DateTime<Utc>,
}

/// A task to create. The store re-checks, inside its transaction, that the agent is active and (for
/// a delegated task) that the parent is live, so a concurrent suspension or end cannot slip past.
#[derive(Clone, Debug)]
pub struct NewTask {
    pub id: Uuid,
    pub agent: AgentName,
    pub parent_id: Option<Uuid>,
    pub depth: u8,
    pub intent: serde_json::Value,
    pub act: Option<serde_json::Value>,
    pub cnf_jkt: Option<String>,
    pub expires_at: DateTime<Utc>,
}

#[derive(Clone, Debug, Default)]
pub struct TaskFilter {
    pub agent: Option<AgentName>,
    pub state: Option<TaskState>,
}

/// The public half of a signing key a Warden node uses (the private half never leaves the node).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    pub public_x: String,
    pub node: String,
    pub created_at: DateTime<Utc>,
    /// After this time tokens signed with the key no longer verify (rotation overlap).
    pub retire_after: Option<DateTime<Utc>>,
}

/// What a human's removal did.
#[derive(Clone, Debug, PartialEq)]
pub struct HumanRemoval {
    pub human: Human,
    /// API tokens revoked: the human's own and the live ones minted from them for others (unclaimed).
    pub revoked_api_tokens: usize,
    /// Agents left without any owner, and therefore suspended.
    pub orphaned_agents: Vec<AgentName>,
    pub revoked_tasks: Vec<Uuid>,
}

/// Changes every node must learn about at once. Sent in-process on the node that made the change and,
/// on PostgreSQL, to every other node by `NOTIFY` (delivered at commit).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum StoreEvent {
    /// These tasks were ended or revoked: their credentials must stop verifying.
    TasksRevoked { ids: Vec<Uuid> },
    /// The set of published signing keys changed (rotation, a new node).
    SigningKeysChanged,
    /// The active or shadow policy set changed: load the current ones.
    PoliciesChanged,
    /// These registry records were created, changed or removed: reload them (policy entity data).
    RegistryChanged {
        #[serde(default)]
        agents: Vec<String>,
        #[serde(default)]
        upstreams: Vec<String>,
        /// Catalogued tools, as `upstream/name`: first seen, quarantined, classified, approved, or
        /// removed with their upstream.
        #[serde(default)]
        tools: Vec<String>,
        /// Upstream secrets, as `upstream/name`: created, rotated or deleted (drop cached plaintext).
        #[serde(default)]
        secrets: Vec<String>,
    },
    /// Events may have been lost (the notification connection dropped): forget everything cached.
    Resync,
}

/// A policy set as uploaded: its content hash and its files (name → text).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PolicyVersion {
    pub version: String,
    pub files: std::collections::BTreeMap<String, String>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// What a policy set is used as.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyRole {
    /// Enforced.
    Active,
    /// Evaluated beside the active set, differences counted, never enforced.
    Shadow,
}

impl PolicyRole {
    pub fn as_str(self) -> &'static str {
        match self {
            PolicyRole::Active => "active",
            PolicyRole::Shadow => "shadow",
        }
    }
}

/// One entry of the policy history.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct PolicyActivation {
    pub seq: i64,
    /// `None`: the shadow set was cleared.
    pub version: Option<String>,
    pub role: PolicyRole,
    pub at: DateTime<Utc>,
    pub by: String,
    pub comment: String,
}

/// The policy sets in force.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CurrentPolicies {
    pub active: Option<PolicyVersion>,
    pub shadow: Option<PolicyVersion>,
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
    /// The API token presented to create this one (see [`ApiTokenInfo::minted_by`]).
    pub minted_by: Option<Uuid>,
    /// The holder's own token (see [`ApiTokenInfo::personal`]).
    pub personal: bool,
    /// A claim: this issued token of the same human (not personal, not revoked) is revoked in the
    /// same transaction; a conflict when it is not such a token (claimed already, say).
    pub claims: Option<Uuid>,
}

/// A revoked API token and the tokens revoked with it (minted from it, transitively).
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct RevokedToken {
    #[serde(flatten)]
    pub token: ApiTokenInfo,
    /// Ids of the tokens minted from it (and from those, …) that were still live and are revoked too.
    pub minted_revoked: Vec<Uuid>,
}

/// Filters for listing agents.
#[derive(Clone, Debug, Default)]
pub struct AgentFilter {
    pub state: Option<AgentState>,
    pub owner: Option<Email>,
}

/// How an append signs a checkpoint of the tree it leaves: the log's origin and this node's key.
#[derive(Clone, Copy, Debug)]
pub struct CheckpointSigner<'a> {
    pub origin: &'a str,
    pub signer: &'a warden_ledger::NoteSigner,
    pub at: DateTime<Utc>,
}

/// What one committed append did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerAppend {
    /// Sequence number of the batch's first entry (the tree size before it).
    pub first_seq: u64,
    /// Tree size after the batch.
    pub tree_size: u64,
    pub root: warden_ledger::Hash,
    /// The size of the checkpoint signed in the same transaction, if one was.
    pub checkpoint: Option<u64>,
}

/// Which entries to read. Every filter narrows; none reads every entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LedgerFilter {
    /// Entries at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Entries strictly before this time.
    pub until: Option<DateTime<Utc>>,
    /// Entries about this agent (the `agent` member of their body).
    pub agent: Option<String>,
}

/// A signed checkpoint as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredCheckpoint {
    pub size: u64,
    /// The C2SP signed note.
    pub note: String,
    pub at: DateTime<Utc>,
}

/// A node's ledger verifier key (a C2SP `vkey` string: name, key id, public key).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LedgerKeyRecord {
    pub vkey: String,
    pub node: String,
    pub created_at: DateTime<Utc>,
}

/// Where an approval request is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalState {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalState {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalState::Pending => "pending",
            ApprovalState::Approved => "approved",
            ApprovalState::Denied => "denied",
            ApprovalState::Expired => "expired",
        }
    }
}

impl std::str::FromStr for ApprovalState {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        Ok(match s {
            "pending" => ApprovalState::Pending,
            "approved" => ApprovalState::Approved,
            "denied" => ApprovalState::Denied,
            "expired" => ApprovalState::Expired,
            other => return Err(format!("unknown approval state `{other}`")),
        })
    }
}

/// A human's answer to an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Vote {
    Approve,
    Deny,
}

/// A vote, as recorded.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct ApprovalVote {
    #[schema(value_type = String)]
    pub approver: Email,
    pub vote: Vote,
    pub comment: String,
    pub at: DateTime<Utc>,
    /// The id of the API token the vote was cast with (`None` for votes before tokens were recorded).
    pub token_id: Option<Uuid>,
}

/// Who casts a vote: the human and the id of the API token they authenticated with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Voter {
    pub email: Email,
    pub token_id: Uuid,
}

/// What a vote would do, checked before it is recorded ([`Store::check_vote`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VoteCheck {
    /// Approving votes the request would have with this vote counted.
    pub approvals: u8,
    pub quorum: u8,
    /// The request's delegation chain (see [`Approval::chain`]).
    pub chain: Vec<AgentName>,
}

/// In [`NewApproval::approvers`]: the owner of the upstream the request's action targets.
pub const UPSTREAM_OWNER: &str = "upstream-owner";

/// An approval request to open (or to find, when an identical one is pending).
#[derive(Clone, Debug, PartialEq)]
pub struct NewApproval {
    pub id: Uuid,
    /// Identifies "the same request": agent, task, action, resource and argument digest.
    pub request_key: String,
    pub agent: AgentName,
    pub task_id: Uuid,
    pub action: String,
    pub resource: String,
    pub upstream: Option<String>,
    /// SHA-256 (hex) of the canonical arguments the decision saw, when it saw any.
    pub args_digest: Option<String>,
    /// The arguments an approver needs to judge, sensitive values already redacted.
    pub arguments: Option<serde_json::Value>,
    pub reason: String,
    pub policies: Vec<String>,
    pub policy_version: String,
    pub quorum: u8,
    pub single_use: bool,
    /// The policy lets the agent's owners approve (`@self_approval("allowed")`); otherwise separation
    /// of duties refuses them.
    pub owners_may_approve: bool,
    /// Who may approve, from the approval policies' `@approvers`: one list per policy that names
    /// approvers, and an approver must be in every list (an email, or [`UPSTREAM_OWNER`] for the
    /// owner of the request's upstream). Empty: any human with the `approver` role.
    pub approvers: Vec<Vec<String>>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// An approval request and where it stands.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct Approval {
    pub id: Uuid,
    #[serde(skip)]
    pub request_key: String,
    #[schema(value_type = String)]
    pub agent: AgentName,
    pub task_id: Uuid,
    pub action: String,
    pub resource: String,
    pub upstream: Option<String>,
    pub args_digest: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub arguments: Option<serde_json::Value>,
    pub reason: String,
    pub policies: Vec<String>,
    pub policy_version: String,
    pub quorum: u8,
    pub approvals: u8,
    pub single_use: bool,
    pub owners_may_approve: bool,
    /// See [`NewApproval::approvers`].
    pub approvers: Vec<Vec<String>>,
    /// The delegation chain behind the request, from Warden's record of its task when it was opened:
    /// the acting agent first, then each agent its task was delegated from. Separation of duties
    /// covers the owners of every one of them.
    #[schema(value_type = Vec<String>)]
    pub chain: Vec<AgentName>,
    pub state: ApprovalState,
    pub created_at: DateTime<Utc>,
    /// Until when the request may be decided.
    pub expires_at: DateTime<Utc>,
    pub decided_at: Option<DateTime<Utc>>,
    /// Approved: the grant is good until then (never past its task's end).
    pub grant_expires_at: Option<DateTime<Utc>>,
    /// A single-use grant's use.
    pub used_at: Option<DateTime<Utc>>,
    pub votes: Vec<ApprovalVote>,
}

/// A tool as an upstream's `tools/list` showed it.
#[derive(Clone, Debug, PartialEq)]
pub struct ObservedTool {
    /// The tool's name (see [`warden_core::gateway::check_tool_name`]).
    pub name: String,
    /// Digest of the definition (name, description, input schema, annotations), computed by the gateway.
    pub digest: String,
    pub definition: serde_json::Value,
    /// The class the MCP annotations suggest.
    pub hint_class: ToolClass,
}

/// A catalogued tool.
///
/// `digest`/`definition` are what an admin approved (or what was trusted on first use: then
/// `approved_by` is `None`); `None` for a tool first seen in quarantine and never approved. A
/// quarantined tool has its new definition in `pending_*`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ToolRecord {
    #[schema(value_type = String)]
    pub upstream: UpstreamName,
    pub name: String,
    pub state: ToolState,
    pub digest: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub definition: Option<serde_json::Value>,
    /// The class the approved definition's annotations suggest (the observed one's, before any approval).
    pub hint_class: ToolClass,
    /// An admin's classification; wins over the hint.
    pub class_override: Option<ToolClass>,
    pub pending_digest: Option<String>,
    #[schema(value_type = Option<Object>)]
    pub pending_definition: Option<serde_json::Value>,
    pub pending_hint_class: Option<ToolClass>,
    pub first_seen: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub approved_by: Option<String>,
    pub approved_at: Option<DateTime<Utc>>,
    pub classified_by: Option<String>,
    pub classified_at: Option<DateTime<Utc>>,
    /// Why it is quarantined (`None` while active).
    pub quarantine_cause: Option<QuarantineCause>,
    /// The tool a `renamed` or `shadows` quarantine resembles (same upstream).
    pub resembles: Option<String>,
    /// [`QuarantineCause::reason`], as `warden tool show` prints it (`None` while active).
    pub quarantine_reason: Option<String>,
}

impl ToolRecord {
    /// Sets why the tool is quarantined (and the reason that says it), or clears it with `None`.
    pub fn set_quarantine(&mut self, cause: Option<QuarantineCause>, resembles: Option<String>) {
        self.quarantine_reason = cause.map(|c| c.reason(resembles.as_deref()));
        self.quarantine_cause = cause;
        self.resembles = resembles;
    }

    /// The gateway's and `/v1/authorize`'s answer to a call of this (quarantined) tool: why, and
    /// what an admin must approve.
    pub fn quarantine_message(&self) -> String {
        format!(
            "tool-quarantined: `{}/{}` is quarantined: {}; an admin must approve digest {} (`warden tool approve {}/{} --digest …`)",
            self.upstream,
            self.name,
            self.quarantine_reason
                .as_deref()
                .unwrap_or("held for an admin's approval"),
            self.pending_digest.as_deref().unwrap_or("-"),
            self.upstream,
            self.name,
        )
    }

    /// The class policies see: the admin's override, else the annotations' hint.
    pub fn effective_class(&self) -> ToolClass {
        self.class_override.unwrap_or(self.hint_class)
    }

    /// `upstream/name`, as events and messages name the tool.
    pub fn key(&self) -> String {
        format!("{}/{}", self.upstream, self.name)
    }
}

/// What observing an upstream's tools changed.
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
#[serde(tag = "change", content = "tool", rename_all = "snake_case")]
pub enum ToolChange {
    /// First sight: catalogued in the state the caller asked for — or quarantined whatever it
    /// asked, as `renamed` or `shadows` (see [`Store::observe_tools`]).
    New(ToolRecord),
    /// The definition differs from the approved one: quarantined with it pending.
    Quarantined(ToolRecord),
}

impl ToolChange {
    pub fn tool(&self) -> &ToolRecord {
        match self {
            ToolChange::New(t) | ToolChange::Quarantined(t) => t,
        }
    }
}

/// What approving a tool did ([`Store::approve_tool`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct ToolApproval {
    /// The tool as it is now: active, pinned to the digest approved.
    #[serde(flatten)]
    pub tool: ToolRecord,
    /// `true`: the digest approved was the one approved before, so the tool went back to its approved
    /// definition and the pending one was dropped unapproved. `false`: the pending definition was
    /// approved and replaced the approved one.
    pub restored: bool,
}

/// Longest key id a sealed secret may name.
pub const MAX_KEY_ID_LEN: usize = 128;
/// Longest nonce a sealed secret may carry.
pub const MAX_NONCE_LEN: usize = 64;
/// Largest ciphertext (an upstream credential, sealed, with its tag).
pub const MAX_CIPHERTEXT_LEN: usize = 16 * 1024;

/// A secret to store, already sealed by the server (the store never sees plaintext or keys).
#[derive(Clone, PartialEq, Eq)]
pub struct NewSecret {
    pub name: SecretName,
    pub upstream: UpstreamName,
    pub injection: Injection,
    /// Which sealing key: the server's key file names it.
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for NewSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewSecret")
            .field("name", &self.name)
            .field("upstream", &self.upstream)
            .field("injection", &self.injection)
            .field("key_id", &self.key_id)
            .field("nonce_len", &self.nonce.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// What a secret is, without its sealed value: safe to list and log.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
pub struct SecretInfo {
    #[schema(value_type = String)]
    pub name: SecretName,
    #[schema(value_type = String)]
    pub upstream: UpstreamName,
    pub injection: Injection,
    /// 1 when created, incremented by each rotation.
    pub version: u32,
    pub key_id: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub rotated_at: Option<DateTime<Utc>>,
    pub rotated_by: Option<String>,
}

/// A secret with its sealed value, for the gateway to open and inject. `Debug` shows lengths only.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret {
    pub name: SecretName,
    pub upstream: UpstreamName,
    pub injection: Injection,
    pub version: u32,
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SealedSecret")
            .field("name", &self.name)
            .field("upstream", &self.upstream)
            .field("injection", &self.injection)
            .field("version", &self.version)
            .field("key_id", &self.key_id)
            .field("nonce_len", &self.nonce.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

#[derive(Clone, Debug, Default)]
pub struct ApprovalFilter {
    pub state: Option<ApprovalState>,
    pub agent: Option<AgentName>,
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
    /// Revokes a token and, in the same transaction, every live token minted from it (transitively:
    /// the walk stops at tokens revoked already, whose own revocation took their descendants —
    /// except a claimed token, whose claimant's token was never its to take). Revoking a revoked token
    /// is a conflict (the first revocation is kept).
    async fn revoke_api_token(&self, id: Uuid, ctx: &ChangeContext) -> Result<RevokedToken>;
    /// Finds the token with this hash and its human, whatever the token's state: the caller decides
    /// (and reports) whether it is expired or revoked.
    async fn find_token(&self, hash: &TokenHash) -> Result<Option<TokenOwner>>;

    // ---- upstreams ----

    async fn create_upstream(&self, new: &NewUpstream, ctx: &ChangeContext) -> Result<Upstream>;
    async fn get_upstream(&self, name: &UpstreamName) -> Result<Option<Upstream>>;
    async fn list_upstreams(&self) -> Result<Vec<Upstream>>;
    /// Removes an upstream that no agent (other than retired ones) lists as allowed and that holds no
    /// secrets (conflicts name them: delete them first, deliberately). Its tool catalogue goes with it,
    /// in the same transaction: it is observed state, re-learned on first sight.
    async fn remove_upstream(&self, name: &UpstreamName, ctx: &ChangeContext) -> Result<Upstream>;

    // ---- agents ----

    /// Registers an agent in `pending_review`. Owners must be registered humans and allowed upstreams
    /// registered upstreams; names are never reused, not even a retired agent's.
    async fn create_agent(
        &self,
        new: &AgentRegistration,
        trust_domain: &TrustDomain,
        join: &JoinTokenRecord,
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

    // ---- identity ----

    /// Issues a new join token for an agent that is not retired; unused older ones stop working.
    async fn issue_join_token(
        &self,
        agent: &AgentName,
        join: &JoinTokenRecord,
        ctx: &ChangeContext,
    ) -> Result<()>;
    /// Consumes a join token and records the agent's public key (replacing an earlier one). Unknown,
    /// used or expired tokens are refused and nothing changes.
    async fn enroll_agent(&self, join: &TokenHash, key: &AgentKey, now: DateTime<Utc>) -> Result<Agent>;
    /// The agent with this SPIFFE ID and its active enrolled key, if any.
    async fn agent_by_spiffe_id(&self, spiffe_id: &str) -> Result<Option<(Agent, Option<AgentKey>)>>;
    /// Records a one-time id (assertion or proof `jti`) until `expires_at`. `false`: seen before (replay).
    async fn remember_jti(&self, issuer: &str, jti: &str, expires_at: DateTime<Utc>) -> Result<bool>;
    /// Forgets one-time ids that have expired. Returns how many.
    async fn purge_expired_jtis(&self, now: DateTime<Utc>) -> Result<u64>;

    // ---- tasks ----

    async fn create_task(&self, new: &NewTask, ctx: &ChangeContext) -> Result<Task>;
    async fn get_task(&self, id: Uuid) -> Result<Option<Task>>;
    async fn list_tasks(&self, filter: &TaskFilter) -> Result<Vec<Task>>;
    /// Ends an active task and revokes every active task delegated from it, transitively. Returns the
    /// ids of all tasks that stopped. Ending a task that is not active is a conflict.
    async fn end_task(&self, id: Uuid, reason: &str, ctx: &ChangeContext) -> Result<Vec<Uuid>>;

    // ---- signing keys ----

    async fn publish_signing_key(&self, key: &SigningKeyRecord) -> Result<()>;
    async fn retire_signing_key(&self, kid: &str, retire_after: DateTime<Utc>) -> Result<()>;
    async fn signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;

    // ---- humans leaving ----

    /// Removes a human (they left): kept for audit, their API tokens revoked, removed from the owners of
    /// every agent; agents left with no owner are suspended and their tasks revoked.
    async fn remove_human(&self, email: &Email, ctx: &ChangeContext) -> Result<HumanRemoval>;

    // ---- policies ----

    /// Records `policies` (if this version is new) and makes it the active or shadow set, in one
    /// transaction; every node hears of it.
    async fn activate_policies(
        &self,
        policies: &PolicyVersion,
        role: PolicyRole,
        comment: &str,
        ctx: &ChangeContext,
    ) -> Result<()>;
    /// Stops shadow evaluation.
    async fn clear_shadow_policies(&self, comment: &str, ctx: &ChangeContext) -> Result<()>;
    async fn current_policies(&self) -> Result<CurrentPolicies>;
    /// The newest `limit` activations, newest first.
    async fn policy_history(&self, limit: u32) -> Result<Vec<PolicyActivation>>;

    /// One stored policy set by version (decisions name it; evidence bundles carry it).
    async fn policy_version(&self, version: &str) -> Result<Option<PolicyVersion>>;

    // ---- ledger (append-only; see `warden_ledger`) ----

    /// Appends `batch` (entries encoded ahead, [`warden_ledger::NewEntry::pre_encode`]) after the
    /// current head in one transaction: the entries, the Merkle nodes they
    /// complete and the new head, and — when `checkpoint` is given and the new size has none yet — a
    /// signed checkpoint. The head is locked for the transaction, so concurrent appends (from any
    /// node) serialize into one log. When this returns `Ok`, every entry is durable; on `Err`, none
    /// was written. An empty batch with a signer only checkpoints the current head.
    async fn ledger_append(
        &self,
        batch: Vec<warden_ledger::PreEncoded>,
        checkpoint: Option<CheckpointSigner<'_>>,
    ) -> Result<LedgerAppend>;
    /// The persisted frontier: tree size and the hashes to extend it.
    async fn ledger_head(&self) -> Result<warden_ledger::Frontier>;
    /// Up to `limit` entries with `seq >= from_seq` that pass `filter`, in sequence order.
    async fn ledger_records(
        &self,
        from_seq: u64,
        limit: u32,
        filter: &LedgerFilter,
    ) -> Result<Vec<warden_ledger::LogRecord>>;
    /// Stored perfect-subtree hashes (level 0: leaf hashes), in the order asked. A missing node is
    /// `NotFound`.
    async fn ledger_nodes(&self, ids: &[warden_ledger::NodeId]) -> Result<Vec<warden_ledger::Hash>>;
    /// Up to `limit` checkpoints of size `>= from_size`, smallest first.
    async fn ledger_checkpoints(&self, from_size: u64, limit: u32) -> Result<Vec<StoredCheckpoint>>;
    async fn latest_ledger_checkpoint(&self) -> Result<Option<StoredCheckpoint>>;
    /// Records a node's checkpoint verifier key (idempotent).
    async fn publish_ledger_key(&self, vkey: &str, node: &str, at: DateTime<Utc>) -> Result<()>;
    async fn ledger_keys(&self) -> Result<Vec<LedgerKeyRecord>>;

    // ---- approvals ----

    /// Opens an approval request, or returns the pending one with the same `request_key` (`false`:
    /// reused). A pending request past its expiry is marked expired first, never reused.
    async fn request_approval(&self, new: &NewApproval) -> Result<(Approval, bool)>;
    async fn get_approval(&self, id: Uuid) -> Result<Option<Approval>>;
    /// Newest first, at most 500.
    async fn list_approvals(&self, filter: &ApprovalFilter) -> Result<Vec<Approval>>;
    /// Checks, without writing, whether `voter` may vote on the request now: the same checks
    /// [`Store::vote_approval`] makes (so a refusal is known, and recorded as one, before a vote is
    /// recorded), and the tally the vote would make.
    async fn check_vote(&self, id: Uuid, voter: &Email, vote: Vote, now: DateTime<Utc>) -> Result<VoteCheck>;
    /// Counts one human's vote, with the request locked: refused (conflict) when the request is not
    /// pending or has expired (left for the sweep to mark), when the human already voted on it, or
    /// when the human owns any agent of the request's delegation chain — the acting agent or one its
    /// task was delegated from, by current ownership (separation of duties; forbidden when not among
    /// the approvers policy names); not found when unknown. A deny ends the request; reaching the
    /// quorum approves it and opens the grant for `grant_ttl`, never past the task's end. The vote
    /// keeps the id of the token it was cast with.
    async fn vote_approval(
        &self,
        id: Uuid,
        approver: &Voter,
        vote: Vote,
        comment: &str,
        now: DateTime<Utc>,
        grant_ttl: chrono::Duration,
    ) -> Result<Approval>;
    /// The newest usable grant for `request_key` at `now` (approved, window open, single-use not yet
    /// used).
    async fn find_grant(&self, request_key: &str, now: DateTime<Utc>) -> Result<Option<Approval>>;
    /// Claims a single-use grant. `false`: already used (or not single use, or not approved).
    async fn use_grant(&self, id: Uuid, now: DateTime<Utc>) -> Result<bool>;
    /// Marks pending requests past their expiry as expired and returns them.
    async fn expire_approvals(&self, now: DateTime<Utc>) -> Result<Vec<Approval>>;

    // ---- MCP gateway: tool catalogue ----

    /// Catalogues what an upstream's `tools/list` showed, in one transaction: an unseen tool is
    /// inserted in `new_state` (`Active`: trust on first use; `Quarantined`: pending an admin's
    /// approval); a tool whose digest equals the approved one is left alone; a different digest
    /// quarantines the tool with the new definition pending (unless exactly that one is pending
    /// already). Tools that disappeared are left alone.
    ///
    /// A quarantined tool whose upstream serves the approved definition again is left alone too: it
    /// stays quarantined with the same definition pending. It is never re-activated by what an
    /// upstream shows (an upstream that changed a tool once may change it again; an admin decides,
    /// restoring it with [`Store::approve_tool`] and the approved digest), and the pending
    /// definition stays as evidence of the change that quarantined it.
    ///
    /// A new name is compared with the upstream's catalogued tools first (those catalogued before
    /// this call; tools new in the same listing are not compared with each other): one whose
    /// definition without `name`, `title` and `_meta` ([`warden_gateway::tools::shape_digest`])
    /// equals a catalogued tool's approved or pending one is quarantined as `renamed` from it
    /// (renamed, or copied under a second name); else one whose description shadows an approved
    /// tool's ([`warden_gateway::tools::shadows`]: what it catches and misses) is quarantined as
    /// `shadows` it. The first such tool by name is the one named. Returns only what changed, so a listing that
    /// changes nothing writes nothing. Concurrent observers (on any node) neither fail nor insert twice.
    /// Names must pass [`warden_core::gateway::check_tool_name`] and appear once (`seen[i]` names the
    /// offender); the upstream must exist (not found otherwise, unless nothing would change).
    async fn observe_tools(
        &self,
        upstream: &UpstreamName,
        seen: &[ObservedTool],
        new_state: ToolState,
        now: DateTime<Utc>,
    ) -> Result<Vec<ToolChange>>;
    /// Every catalogued tool (of one upstream, if given), by upstream then name.
    async fn list_tools(&self, upstream: Option<&UpstreamName>) -> Result<Vec<ToolRecord>>;
    async fn get_tool(&self, upstream: &UpstreamName, name: &str) -> Result<Option<ToolRecord>>;
    /// Sets (or, with `None`, clears) an admin's classification of a tool.
    async fn classify_tool(
        &self,
        upstream: &UpstreamName,
        name: &str,
        class: Option<ToolClass>,
        ctx: &ChangeContext,
    ) -> Result<ToolRecord>;
    /// Decides about a quarantined tool's pending definition, by digest (so an admin approves only
    /// what they looked at). The pending digest approves the pending definition: it becomes the
    /// approved one. The approved digest restores the approved definition: the tool keeps its
    /// digest, definition and hint, and the pending definition is dropped (for an upstream that
    /// changed a tool and changed it back). Either way the tool becomes active, approved by
    /// `ctx.actor`, and [`ToolApproval::restored`] says which it was. Any other digest is a
    /// conflict naming the digests it could have been; so is approving a tool with nothing pending
    /// (its approved digest: already approved).
    async fn approve_tool(
        &self,
        upstream: &UpstreamName,
        name: &str,
        digest: &str,
        ctx: &ChangeContext,
    ) -> Result<ToolApproval>;

    // ---- MCP gateway: upstream secrets (sealed by the server) ----

    /// Stores a sealed secret at version 1. Conflict when the name is taken or the upstream already gets
    /// that header or variable from another secret; not found when the upstream does not exist.
    async fn create_secret(&self, new: &NewSecret, ctx: &ChangeContext) -> Result<SecretInfo>;
    /// Replaces a secret's sealed value (the old ciphertext is gone) and increments its version.
    async fn rotate_secret(
        &self,
        name: &SecretName,
        key_id: &str,
        nonce: &[u8],
        ciphertext: &[u8],
        ctx: &ChangeContext,
    ) -> Result<SecretInfo>;
    async fn delete_secret(&self, name: &SecretName, ctx: &ChangeContext) -> Result<SecretInfo>;
    /// Every secret's metadata (never its sealed value), by name.
    async fn list_secrets(&self) -> Result<Vec<SecretInfo>>;
    /// The sealed secrets to inject into requests to `upstream`, by name.
    async fn upstream_secrets(&self, upstream: &UpstreamName) -> Result<Vec<SealedSecret>>;

    /// Subscribes to [`StoreEvent`]s.
    fn events(&self) -> tokio::sync::broadcast::Receiver<StoreEvent>;
}

/// How a store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a request waits for a database connection before it is refused as unavailable (so a
    /// database that is down is a quick 503, not a hang). SQLite's writer waits at least 5 s: it is a
    /// queue of this process's own writes.
    pub acquire_timeout: std::time::Duration,
    /// SQLite only: the most pages the database may grow to (`PRAGMA max_page_count`): a size limit
    /// that fails writes with `SQLITE_FULL` like a full disk does.
    pub sqlite_max_page_count: Option<u64>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            acquire_timeout: std::time::Duration::from_secs(1),
            sqlite_max_page_count: None,
        }
    }
}

/// Opens the store a database URL names: `sqlite://PATH` (or `sqlite:PATH`) or `postgres://…`, and
/// applies pending migrations.
pub async fn open(url: &str) -> Result<Arc<dyn Store>> {
    open_with_options(url, &StoreOptions::default()).await
}

/// [`open`] with options.
pub async fn open_with_options(url: &str, options: &StoreOptions) -> Result<Arc<dyn Store>> {
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::open_url(url, options).await?))
    } else if lower.starts_with("postgres://") || lower.starts_with("postgresql://") {
        Ok(Arc::new(PostgresStore::connect(url, options).await?))
    } else {
        Err(StoreError::Config(
            "database URL must start with `sqlite:` or `postgres://` (the URL itself is not shown: it may hold a password)"
                .into(),
        ))
    }
}
