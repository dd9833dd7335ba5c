//! The command-line grammar: every verb and flag of `warden`, declared with clap.
//!
//! Flag values are parsed straight into `warden-core`'s validated types by [`Flag`], a clap value parser,
//! so a bad value is refused while the command line is parsed, before any request is sent, with an error
//! that names the flag (`error: --environment: unknown environment `prod`; expected one of ...`) and exit
//! code 2. Rules that involve several flags (duplicates in a repeated flag, an update that changes
//! nothing, a URL that does not fit the upstream kind) are checked in `request.rs`, also before sending.

use std::ffi::OsStr;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::str::FromStr;

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use clap::builder::{PossibleValue, TypedValueParser};
use clap::error::ErrorKind;
use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;
use warden_core::token::MAX_TOKEN_TTL;
use warden_core::{
    AgentName, AgentState, Description, DisplayName, Email, Environment, Model, Role, Sensitivity, TaskState,
    UpstreamKind, UpstreamName,
};
use warden_identity::{MAX_TASK_DURATION_SECS, SpiffeId};
use warden_ledger::VerifierKey;
use warden_policy::Action;

/// Where the client looks for the server when neither `--server` nor `WARDEN_SERVER` is given.
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:8700";

/// The bootstrap admin token that `warden serve` writes on first start with the default data directory;
/// the client falls back to it when no token is configured.
pub const DEFAULT_TOKEN_FILE: &str = "warden-data/admin.token";

/// The help heading of the flags every verb accepts.
const GLOBAL: &str = "Global options";

const AFTER_HELP: &str = "\
Authentication (every verb but `serve`, `audit verify|export`, `policy validate|test` and the agent-side verbs below):
  The API token is taken from the first of:
    1. --token-file FILE
    2. the WARDEN_TOKEN environment variable (the token itself)
    3. the WARDEN_TOKEN_FILE environment variable (a file holding the token)
    4. ./warden-data/admin.token, if it exists: the bootstrap admin token that
       `warden serve` writes into its default data directory on first start
  Surrounding whitespace in a token file is ignored. A token is never accepted
  as a command-line argument, and never printed in errors.

TLS:
  An https:// server's certificate is verified against the built-in public (webpki)
  roots and, with --ca-file FILE (or WARDEN_CA_FILE), the CA certificates in FILE:
  the way to trust a server whose certificate your own CA issued. There is no way
  to skip verification. The host in --server must be a name (or IP address) the
  certificate was issued for. An agent whose Warden asks for client certificates
  presents one with --client-cert FILE --client-key FILE (or WARDEN_CLIENT_CERT,
  WARDEN_CLIENT_KEY); its SPIFFE ID must then be the agent's.

Agents (`agent enroll`, `task start|renew|delegate|current`, `task end --task-token-file`,
`authorize`, `connect`):
  These act as an agent, not as a human: they need no API token. An agent proves
  who it is with its private key (--key, written by `agent enroll`), and uses
  its task token from --task-token-file. Secrets an agent receives (task tokens,
  join tokens) are written with --token-out / --out as new files of mode 0600,
  or, without those, printed once on stdout.

Audit (`audit verify`, `audit export`):
  These read the ledger from the server's database directly (--data-dir, --database
  or --config, as `warden serve` finds it) or, with `audit verify --bundle FILE`, from
  an exported evidence bundle. They need neither a server nor a token.
  `audit tail` and `audit checkpoint` ask the server, with an admin's or auditor's API token.

Policies (`policy validate`, `policy test`):
  These work on local files and need neither a server nor a token.
  `policy activate` and `policy shadow` validate locally first and send nothing
  when the set does not compile.

Output:
  -o table (default) prints aligned columns for lists and `key: value` lines for
  single objects. -o json prints the object, or the JSON array for lists, as
  pretty JSON on stdout, for scripts.

Exit codes:
  0  success
  1  error: the server refused the request (any HTTP 4xx or 5xx), could not be
     reached, or a local file (e.g. the token file) could not be read
  2  usage error: unknown verb or flag, missing argument, or a flag value that
     is not valid (checked before any request is sent)
  3  `warden authorize`: the decision is deny
  4  `warden authorize`: the decision is needs_approval
  `warden policy validate|test` exit 1 when the policies do not compile or a
  test case fails; `warden audit verify` exits 1 when verification fails.";

/// `warden`: the Warden server and its command-line client.
#[derive(Debug, Parser)]
#[command(
    name = "warden",
    version,
    about = "Warden: a runtime access governor for AI agents. Runs the server and manages its registry.",
    after_help = AFTER_HELP,
    propagate_version = true,
    subcommand_required = true,
    arg_required_else_help = true
)]
pub struct Cli {
    /// Base URL of the Warden server.
    #[arg(
        long,
        global = true,
        help_heading = GLOBAL,
        env = "WARDEN_SERVER",
        default_value = DEFAULT_SERVER,
        value_name = "URL",
        value_parser = Flag::<ServerUrl>::new()
    )]
    pub server: ServerUrl,

    /// PEM file of CA certificates to trust for the server's TLS certificate, besides the built-in
    /// public roots (see "TLS" below).
    #[arg(long, global = true, help_heading = GLOBAL, env = "WARDEN_CA_FILE", value_name = "FILE")]
    pub ca_file: Option<PathBuf>,

    /// PEM file of a client certificate (chain, leaf first) to present to the server: mutual TLS, for
    /// agents whose certificate carries their SPIFFE ID. Needs --client-key.
    #[arg(long, global = true, help_heading = GLOBAL, env = "WARDEN_CLIENT_CERT", value_name = "FILE", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM file of the client certificate's private key. Needs --client-cert.
    #[arg(long, global = true, help_heading = GLOBAL, env = "WARDEN_CLIENT_KEY", value_name = "FILE", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// File holding the API token (also WARDEN_TOKEN_FILE; see "Authentication" below).
    #[arg(long, global = true, help_heading = GLOBAL, value_name = "FILE")]
    pub token_file: Option<PathBuf>,

    /// Output format.
    #[arg(
        short = 'o',
        long = "output",
        global = true,
        help_heading = GLOBAL,
        value_name = "FORMAT",
        value_enum,
        default_value_t = Format::Table
    )]
    pub output: Format,

    #[command(subcommand)]
    pub command: Command,
}

/// How results are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for lists, `key: value` lines for single objects.
    Table,
    /// Pretty JSON: the object, or the array for lists.
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the Warden server.
    Serve(ServeArgs),
    /// Bridge a desktop or IDE MCP client (stdio) to one upstream through Warden, as an agent.
    Connect(ConnectArgs),
    /// Register, list, change, suspend, activate and retire agents.
    #[command(subcommand)]
    Agent(AgentCommand),
    /// Register, list and remove upstreams (the MCP servers, HTTP APIs and databases agents reach).
    #[command(subcommand)]
    Upstream(UpstreamCommand),
    /// Register humans and manage their API tokens.
    #[command(subcommand)]
    Human(HumanCommand),
    /// Start, renew, delegate, inspect and end tasks and their task tokens.
    #[command(subcommand)]
    Task(TaskCommand),
    /// Manage the keys Warden signs task tokens with.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// List, show, approve and deny human approval requests.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// The MCP gateway's tool catalogue: list, show, classify, approve a changed definition.
    #[command(subcommand)]
    Tool(ToolCommand),
    /// Upstream credentials the gateway injects (sealed at rest; values never shown).
    #[command(subcommand)]
    Secret(SecretCommand),
    /// Validate and test Cedar policies (locally), activate them, run them in shadow, explain decisions.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Ask the decision point whether a task may do an action (exit 0 allow, 3 deny, 4 needs_approval).
    Authorize(AuthorizeArgs),
    /// Show the human and the API token this client authenticates as.
    Whoami,
    /// Verify the tamper-evident ledger, or export it as evidence (locally: no server, no token).
    #[command(subcommand)]
    Audit(AuditCommand),
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Configuration file (TOML).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Data directory (SQLite database, bootstrap admin token).
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address to listen on, e.g. 127.0.0.1:8700 (port 0 picks a free port).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// PostgreSQL URL (instead of the embedded SQLite); must not contain a password.
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum AgentCommand {
    /// Register an agent; it starts in state `pending_review`.
    Register(AgentRegisterArgs),
    /// List agents.
    List(AgentListArgs),
    /// Show an agent with its lifecycle history.
    Show(AgentNameArg),
    /// Change an agent; a new model or environment sends an active agent back to review.
    Update(AgentUpdateArgs),
    /// Suspend an agent.
    Suspend(LifecycleArgs),
    /// Activate an agent (from `pending_review` or `suspended`).
    Activate(LifecycleArgs),
    /// Retire an agent for good; it stays listed for audit and its name is never reused.
    Retire(LifecycleArgs),
    /// Issue a new one-time join token for an agent (re-enrollment: enrolling replaces its key).
    JoinToken(JoinTokenArgs),
    /// Enroll as an agent: generate a key pair here, register its public key with a join token, and
    /// write the private key to a new file (mode 0600). Needs no API token.
    Enroll(EnrollArgs),
}

#[derive(Debug, Args)]
pub struct AgentRegisterArgs {
    /// Agent name: a DNS label (lowercase letters, digits, `-`).
    #[arg(value_name = "NAME", value_parser = Flag::<AgentName>::new())]
    pub name: AgentName,
    /// Email of a registered human accountable for the agent (repeat for several).
    #[arg(long = "owner", value_name = "EMAIL", required = true, value_parser = Flag::<Email>::new())]
    pub owners: Vec<Email>,
    /// Where the agent runs.
    #[arg(long, value_name = "ENV", value_parser = Flag::<Environment>::new())]
    pub environment: Environment,
    /// The agent's model, `provider/name@version`.
    #[arg(long, value_name = "MODEL", value_parser = Flag::<Model>::new())]
    pub model: Model,
    /// What the agent does.
    #[arg(long, value_name = "TEXT", value_parser = Flag::<Description>::new())]
    pub description: Option<Description>,
    /// An upstream the agent may reach (repeat for several).
    #[arg(long = "upstream", value_name = "NAME", value_parser = Flag::<UpstreamName>::new())]
    pub upstreams: Vec<UpstreamName>,
    /// Write the one-time join token to this new file (mode 0600) instead of showing it.
    #[arg(long, value_name = "FILE")]
    pub join_token_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Agent name.
    #[arg(value_name = "NAME", value_parser = Flag::<AgentName>::new())]
    pub name: AgentName,
    /// Write the join token to this new file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct EnrollArgs {
    /// File holding the join token (else the WARDEN_JOIN_TOKEN environment variable holds it).
    #[arg(long, value_name = "FILE")]
    pub join_token_file: Option<PathBuf>,
    /// Where to write the new private key: a new file, mode 0600 (an existing file is never overwritten).
    #[arg(long, value_name = "FILE")]
    pub key_out: PathBuf,
    /// Also write the private key as PKCS#8 PEM to this new file (mode 0600), for OAuth clients that
    /// authenticate with `private_key_jwt` (`EdDSA`), such as the MCP SDKs' client-credentials
    /// providers.
    #[arg(long, value_name = "FILE")]
    pub pem_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AgentListArgs {
    /// Only agents in this state.
    #[arg(long, value_name = "STATE", value_parser = Flag::<AgentState>::new())]
    pub state: Option<AgentState>,
    /// Only agents this human owns.
    #[arg(long, value_name = "EMAIL", value_parser = Flag::<Email>::new())]
    pub owner: Option<Email>,
}

#[derive(Debug, Args)]
pub struct AgentNameArg {
    /// Agent name.
    #[arg(value_name = "NAME", value_parser = Flag::<AgentName>::new())]
    pub name: AgentName,
}

#[derive(Debug, Args)]
pub struct AgentUpdateArgs {
    /// Agent name.
    #[arg(value_name = "NAME", value_parser = Flag::<AgentName>::new())]
    pub name: AgentName,
    /// New owners: replaces the whole list (repeat for several).
    #[arg(long = "owner", value_name = "EMAIL", value_parser = Flag::<Email>::new())]
    pub owners: Vec<Email>,
    /// New environment.
    #[arg(long, value_name = "ENV", value_parser = Flag::<Environment>::new())]
    pub environment: Option<Environment>,
    /// New model, `provider/name@version`.
    #[arg(long, value_name = "MODEL", value_parser = Flag::<Model>::new())]
    pub model: Option<Model>,
    /// New description (`""` clears it).
    #[arg(long, value_name = "TEXT", value_parser = Flag::<Description>::new())]
    pub description: Option<Description>,
    /// New allowed upstreams: replaces the whole list (repeat for several).
    #[arg(long = "upstream", value_name = "NAME", value_parser = Flag::<UpstreamName>::new())]
    pub upstreams: Vec<UpstreamName>,
    /// Remove all allowed upstreams.
    #[arg(long, conflicts_with = "upstreams")]
    pub no_upstreams: bool,
    /// The intent a task started by OAuth client credentials gets when the agent asks for none: RFC
    /// 9396 `authorization_details` JSON (an array with one `warden_task` object, or the object).
    #[arg(long, value_name = "JSON")]
    pub default_intent: Option<String>,
    /// Remove the default intent (client-credentials requests must then name their intent).
    #[arg(long, conflicts_with = "default_intent")]
    pub no_default_intent: bool,
}

#[derive(Debug, Args)]
pub struct LifecycleArgs {
    /// Agent name.
    #[arg(value_name = "NAME", value_parser = Flag::<AgentName>::new())]
    pub name: AgentName,
    /// Why; recorded in the agent's history.
    #[arg(long, value_name = "TEXT", value_parser = Flag::<Description>::new())]
    pub reason: Option<Description>,
}

#[derive(Debug, Subcommand)]
pub enum UpstreamCommand {
    /// Register an upstream.
    Add(UpstreamAddArgs),
    /// List upstreams.
    List,
    /// Show an upstream.
    Show(UpstreamNameArg),
    /// Remove an upstream.
    Remove(UpstreamNameArg),
}

#[derive(Debug, Args)]
pub struct UpstreamAddArgs {
    /// Upstream name: a DNS label (lowercase letters, digits, `-`).
    #[arg(value_name = "NAME", value_parser = Flag::<UpstreamName>::new())]
    pub name: UpstreamName,
    /// Protocol Warden speaks to it.
    #[arg(long, value_name = "KIND", value_parser = Flag::<UpstreamKind>::new())]
    pub kind: UpstreamKind,
    /// Its URL: http(s):// for mcp and http, postgres:// for postgres; never with credentials.
    #[arg(long, value_name = "URL")]
    pub url: String,
    /// Where it runs.
    #[arg(long, value_name = "ENV", value_parser = Flag::<Environment>::new())]
    pub environment: Environment,
    /// Email of the registered human accountable for it.
    #[arg(long, value_name = "EMAIL", value_parser = Flag::<Email>::new())]
    pub owner: Email,
    /// The most sensitive data it holds.
    #[arg(long, value_name = "LEVEL", value_parser = Flag::<Sensitivity>::new())]
    pub sensitivity: Sensitivity,
    /// What it is.
    #[arg(long, value_name = "TEXT", value_parser = Flag::<Description>::new())]
    pub description: Option<Description>,
}

#[derive(Debug, Args)]
pub struct UpstreamNameArg {
    /// Upstream name.
    #[arg(value_name = "NAME", value_parser = Flag::<UpstreamName>::new())]
    pub name: UpstreamName,
}

#[derive(Debug, Subcommand)]
pub enum HumanCommand {
    /// Register a human.
    Add(HumanAddArgs),
    /// List humans.
    List,
    /// Show a human.
    Show(EmailArg),
    /// Remove a human (kept for audit): revokes their API tokens, suspends the agents they were the last
    /// owner of, and revokes those agents' tasks.
    Remove(EmailArg),
    /// Create, list and revoke a human's API tokens.
    #[command(subcommand)]
    Token(TokenCommand),
}

#[derive(Debug, Args)]
pub struct HumanAddArgs {
    /// The human's email, their identity in Warden.
    #[arg(value_name = "EMAIL", value_parser = Flag::<Email>::new())]
    pub email: Email,
    /// Display name.
    #[arg(long, value_name = "NAME", value_parser = Flag::<DisplayName>::new())]
    pub name: DisplayName,
    /// A role (repeat for several).
    #[arg(long = "role", value_name = "ROLE", required = true, value_parser = Flag::<Role>::new())]
    pub roles: Vec<Role>,
}

#[derive(Debug, Args)]
pub struct EmailArg {
    /// The human's email.
    #[arg(value_name = "EMAIL", value_parser = Flag::<Email>::new())]
    pub email: Email,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Create an API token for a human; the token is printed once and never again.
    Create(TokenCreateArgs),
    /// List a human's API tokens (never the tokens themselves).
    List(EmailArg),
    /// Revoke an API token by its id.
    Revoke(TokenRevokeArgs),
}

#[derive(Debug, Args)]
pub struct TokenCreateArgs {
    /// The human the token is for.
    #[arg(value_name = "EMAIL", value_parser = Flag::<Email>::new())]
    pub email: Email,
    /// A label for the token, e.g. `laptop`.
    #[arg(long, value_name = "LABEL")]
    pub label: Option<String>,
    /// Lifetime: a number and a unit, `s`, `m`, `h` or `d` (e.g. `30d`); default 30 days, at most 365 days.
    /// A token minted for yourself never outlives the token you are authenticated with.
    #[arg(long, value_name = "TTL", value_parser = Flag::<Ttl>::new())]
    pub ttl: Option<Ttl>,
    /// Claim the token an admin issued to you: the new token is your own (only your own tokens may
    /// vote on approval requests) and the issued token you are using is revoked.
    #[arg(long)]
    pub claim: bool,
    /// Write the token to this new file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub token_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TokenRevokeArgs {
    /// The token's id (a UUID, as shown by `human token list`).
    #[arg(value_name = "TOKEN_ID", value_parser = Flag::<TokenId>::new())]
    pub id: TokenId,
}

#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Approval requests, newest first.
    List(ApprovalsListArgs),
    /// One request: the action, its arguments (secrets redacted), the reason, the votes.
    Show(ApprovalsShowArgs),
    /// Approve (approvers only; never your own agent's request). The action is allowed once the
    /// quorum is reached.
    Approve(ApprovalVoteArgs),
    /// Deny: one deny ends the request.
    Deny(ApprovalVoteArgs),
}

/// States of an approval request.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ApprovalStateArg {
    Pending,
    Approved,
    Denied,
    Expired,
}

impl ApprovalStateArg {
    pub fn as_str(self) -> &'static str {
        match self {
            ApprovalStateArg::Pending => "pending",
            ApprovalStateArg::Approved => "approved",
            ApprovalStateArg::Denied => "denied",
            ApprovalStateArg::Expired => "expired",
        }
    }
}

#[derive(Debug, Args)]
pub struct ApprovalsListArgs {
    #[arg(long, value_enum)]
    pub state: Option<ApprovalStateArg>,
    #[arg(long, value_name = "NAME", value_parser = Flag::<AgentName>::new())]
    pub agent: Option<AgentName>,
}

#[derive(Debug, Args)]
pub struct ApprovalsShowArgs {
    /// The request's id.
    pub id: uuid::Uuid,
    /// Wait up to this many seconds (at most 25) for a pending request to be decided.
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(0..=25))]
    pub wait: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ApprovalVoteArgs {
    /// The request's id.
    pub id: uuid::Uuid,
    /// Why (kept with the vote and in the ledger).
    #[arg(long, default_value = "")]
    pub comment: String,
}

#[derive(Debug, Subcommand)]
pub enum ToolCommand {
    /// Catalogued tools (of one upstream), with state, class and digest.
    List(ToolListArgs),
    /// One tool: its approved definition, and the pending one when quarantined.
    Show(ToolRefArgs),
    /// Set the tool's class (read, write, destructive, admin), overriding the MCP hints; `--hint`
    /// goes back to the hints.
    Classify(ToolClassifyArgs),
    /// Approve a quarantined tool's new definition, named by its digest (from `tool show`); or, with
    /// the approved digest, restore the approved definition (the upstream changed the tool back).
    Approve(ToolApproveArgs),
}

#[derive(Debug, Args)]
pub struct ToolListArgs {
    #[arg(long, value_name = "NAME", value_parser = Flag::<UpstreamName>::new())]
    pub upstream: Option<UpstreamName>,
}

#[derive(Debug, Args)]
pub struct ToolRefArgs {
    /// `UPSTREAM/TOOL`.
    #[arg(value_name = "UPSTREAM/TOOL", value_parser = parse_tool_ref)]
    pub tool: (UpstreamName, String),
}

#[derive(Debug, Args)]
pub struct ToolClassifyArgs {
    #[arg(value_name = "UPSTREAM/TOOL", value_parser = parse_tool_ref)]
    pub tool: (UpstreamName, String),
    /// `read`, `write`, `destructive` or `admin`.
    #[arg(long, value_name = "CLASS", required_unless_present = "hint", conflicts_with = "hint", value_parser = Flag::<warden_core::ToolClass>::new())]
    pub class: Option<warden_core::ToolClass>,
    /// Clear the override: the MCP annotations decide again.
    #[arg(long)]
    pub hint: bool,
}

#[derive(Debug, Args)]
pub struct ToolApproveArgs {
    #[arg(value_name = "UPSTREAM/TOOL", value_parser = parse_tool_ref)]
    pub tool: (UpstreamName, String),
    /// The pending definition's SHA-256 digest (64 hex characters); the approved digest restores the
    /// approved definition and drops the pending one.
    #[arg(long, value_name = "SHA256")]
    pub digest: String,
}

fn parse_tool_ref(s: &str) -> Result<(UpstreamName, String), String> {
    let (up, tool) = s
        .split_once('/')
        .ok_or_else(|| format!("`{}` is not UPSTREAM/TOOL", s.escape_debug()))?;
    let up = UpstreamName::parse(up).map_err(|e| e.to_string())?;
    warden_core::gateway::check_tool_name("tool", tool).map_err(|e| e.message)?;
    Ok((up, tool.to_owned()))
}

#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Store a credential for an upstream. The value is read from --value-file or standard input,
    /// never from the command line, sealed by the server, and never shown again.
    Set(SecretSetArgs),
    /// Secrets and where they go (never their values).
    List,
    /// Replace a secret's value (read like `set`); the old value stops being sent at once.
    Rotate(SecretRotateArgs),
    /// Delete a secret: the upstream gets no credential from it any more.
    Delete(SecretNameArgs),
}

#[derive(Debug, Args)]
pub struct SecretSetArgs {
    /// The secret's name (lowercase letters, digits, `.`, `_`, `-`).
    pub name: String,
    /// The upstream it is for.
    #[arg(long, value_name = "NAME", value_parser = Flag::<UpstreamName>::new())]
    pub upstream: UpstreamName,
    /// Sent as this HTTP header (e.g. `Authorization`, `X-Api-Key`).
    #[arg(
        long,
        value_name = "NAME",
        conflicts_with = "env",
        required_unless_present = "env"
    )]
    pub header: Option<String>,
    /// Put before the value in the header, e.g. `"Bearer "`.
    #[arg(long, value_name = "TEXT", default_value = "", requires = "header")]
    pub prefix: String,
    /// For a stdio server Warden spawns: this environment variable.
    #[arg(long, value_name = "VAR")]
    pub env: Option<String>,
    /// Read the value from this file (surrounding whitespace trimmed); default: standard input.
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SecretRotateArgs {
    pub name: String,
    /// Read the new value from this file; default: standard input.
    #[arg(long, value_name = "FILE")]
    pub value_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SecretNameArgs {
    pub name: String,
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Make this node sign with a new key; the old key keeps verifying until its tokens have expired.
    Rotate,
}

#[derive(Debug, Subcommand)]
pub enum TaskCommand {
    /// Start a task (as an agent): exchange a signed assertion for a task token.
    Start(TaskStartArgs),
    /// Renew a task token (as the agent that holds it): a new token for the same task and scope.
    Renew(TaskRenewArgs),
    /// Hand part of a task to another agent (as that agent): its scope is the parent's, narrowed.
    Delegate(TaskDelegateArgs),
    /// Show the task a task token belongs to (as the agent that holds it).
    Current(TaskTokenArgs),
    /// End a task and every task delegated from it: `task end TASK_ID` as an admin or an owner of the
    /// agent (API token), or `task end --task-token-file FILE` as the agent itself.
    End(TaskEndArgs),
    /// List tasks.
    List(TaskListArgs),
    /// Show a task.
    Show(TaskIdArg),
}

/// Who the agent is and how it proves it.
#[derive(Debug, Args)]
pub struct AgentKeyArgs {
    /// The agent's private key file, as written by `warden agent enroll`.
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The agent: its SPIFFE ID, or its name (completed with the server's trust domain).
    #[arg(long, value_name = "SPIFFE_ID|NAME", value_parser = Flag::<AgentId>::new())]
    pub agent_id: AgentId,
}

/// A task's declared intent (RFC 9396 `authorization_details`).
#[derive(Debug, Args)]
pub struct IntentArgs {
    /// What the task is for, in words.
    #[arg(long, value_name = "TEXT")]
    pub purpose: Option<String>,
    /// The kind of task: `a-z 0-9 _ . -`, e.g. `billing.reconcile`.
    #[arg(long = "type", value_name = "TYPE")]
    pub task_type: Option<String>,
    /// An upstream the task needs (repeat for several).
    #[arg(long = "upstream", value_name = "NAME", value_parser = Flag::<UpstreamName>::new())]
    pub upstreams: Vec<UpstreamName>,
    /// A tool the task expects to call (repeat for several).
    #[arg(long = "tool", value_name = "TOOL")]
    pub tools: Vec<String>,
    /// A dataset the task expects to touch (repeat for several).
    #[arg(long = "dataset", value_name = "DATASET")]
    pub datasets: Vec<String>,
    /// MCP resources the task expects to read: a URI pattern where `*` matches any run of
    /// characters, e.g. `file:///tmp/*` (repeat for several).
    #[arg(long = "resource", value_name = "PATTERN")]
    pub resources: Vec<String>,
    /// An MCP prompt the task expects to get, by name (repeat for several).
    #[arg(long = "prompt", value_name = "NAME")]
    pub prompts: Vec<String>,
    /// Longest the whole task may last: a number and a unit, `s`, `m`, `h` or `d` (e.g. `30m`); the
    /// server may cap it. Default: the server's limit.
    #[arg(long, value_name = "DURATION", value_parser = Flag::<TaskDuration>::new())]
    pub duration: Option<TaskDuration>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
--purpose and --type are required. The agent's key signs a short-lived assertion that the server
exchanges for a task token (RFC 8693); the intent flags become its authorization_details (RFC 9396).
Without --token-out, the token is printed once on stdout (a notice goes to stderr).")]
pub struct TaskStartArgs {
    #[command(flatten)]
    pub agent: AgentKeyArgs,
    #[command(flatten)]
    pub intent: IntentArgs,
    /// Bind the task's tokens to the agent's key (DPoP, RFC 9449): a stolen token is useless without it.
    #[arg(long)]
    pub dpop: bool,
    /// Write the task token to this new file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub token_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Configure it in the MCP client as a stdio server (`\"command\": \"warden\", \"args\": [\"connect\", ...]`).
It starts a task with the agent's key (as `task start`; --upstream names the one upstream it relays
to), renews its token before it expires, starts a new task when the task reaches its maximum
duration (and re-initializes the MCP session for it), relays newline-delimited JSON-RPC between
stdin/stdout and <server>/mcp/<upstream>, and ends the task when stdin closes. A task ended by
someone else is not restarted: requests are then answered with an error. When a call needs
approval, the approval's URL is shown to the user (an `elicitation/create` in URL mode, when the
client supports it) and logged on stderr, and the call is retried once approved. stdout carries
only MCP messages; logs go to stderr. The key file must not be readable by group or others.")]
pub struct ConnectArgs {
    #[command(flatten)]
    pub agent: AgentKeyArgs,
    #[command(flatten)]
    pub intent: IntentArgs,
}

#[derive(Debug, Args)]
pub struct TaskRenewArgs {
    #[command(flatten)]
    pub agent: AgentKeyArgs,
    /// File holding the task token to renew. A DPoP-bound token is renewed with a proof made with --key.
    #[arg(long, value_name = "FILE")]
    pub task_token_file: PathBuf,
    /// Write the new task token to this new file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub token_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Run as the child agent: --key and --agent-id are the child's. Narrowing: without any of --purpose,
--type, --upstream, --tool, --dataset, --resource, --prompt, --duration the child gets the parent's
scope, limited to its own allowed upstreams; --purpose and --type default to the parent's. Asking for
an upstream, tool, dataset or prompt the parent does not hold is refused, and so is a --resource that
is neither one of the parent's patterns nor a URI (no `*`) they match. Ending the parent ends the
child.")]
pub struct TaskDelegateArgs {
    #[command(flatten)]
    pub agent: AgentKeyArgs,
    /// File holding the parent's task token.
    #[arg(long, value_name = "FILE")]
    pub task_token_file: PathBuf,
    /// The parent agent's key, needed when the parent's token is DPoP-bound (to prove possession);
    /// the child's token is then always DPoP-bound to the child's key (--key).
    #[arg(long, value_name = "FILE")]
    pub parent_key: Option<PathBuf>,
    #[command(flatten)]
    pub intent: IntentArgs,
    /// Bind the child's tokens to the child's key (always done when the parent's token is DPoP-bound).
    #[arg(long)]
    pub dpop: bool,
    /// Write the child's task token to this new file (mode 0600) instead of printing it.
    #[arg(long, value_name = "FILE")]
    pub token_out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TaskTokenArgs {
    /// File holding the task token.
    #[arg(long, value_name = "FILE")]
    pub task_token_file: PathBuf,
    /// The agent's key, needed when the token is DPoP-bound (to prove possession).
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["id", "task_token_file"])))]
pub struct TaskEndArgs {
    /// The task's id (admin or owner of the agent; uses the API token).
    #[arg(value_name = "TASK_ID", value_parser = Flag::<TaskId>::new())]
    pub id: Option<TaskId>,
    /// End the task this task token belongs to (as the agent; no API token needed).
    #[arg(long, value_name = "FILE", conflicts_with = "id")]
    pub task_token_file: Option<PathBuf>,
    /// The agent's key, needed with a DPoP-bound task token.
    #[arg(long, value_name = "FILE", conflicts_with = "id")]
    pub key: Option<PathBuf>,
    /// Why; recorded with the task.
    #[arg(long, value_name = "TEXT", value_parser = Flag::<EndReason>::new())]
    pub reason: Option<EndReason>,
}

#[derive(Debug, Args)]
pub struct TaskListArgs {
    /// Only tasks of this agent.
    #[arg(long, value_name = "NAME", value_parser = Flag::<AgentName>::new())]
    pub agent: Option<AgentName>,
    /// Only tasks in this state.
    #[arg(long, value_name = "STATE", value_parser = Flag::<TaskState>::new())]
    pub state: Option<TaskState>,
}

#[derive(Debug, Args)]
pub struct TaskIdArg {
    /// The task's id (a UUID, as shown by `task list`).
    #[arg(value_name = "TASK_ID", value_parser = Flag::<TaskId>::new())]
    pub id: TaskId,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check a policy directory here, without a server.
    ///
    /// Parses every `*.cedar` file in DIR, checks Warden's annotations (`@id` on every policy,
    /// `@approval`, `@quorum`) and validates against Warden's schema in strict mode, with the engine the
    /// server runs. Prints the version (a content hash of the files) or every problem as
    /// `DIR/FILE:LINE:COLUMN: ...` and exits 1. Validator warnings go to stderr.
    Validate(PolicyDirArgs),
    /// Run policy test files here, without a server (like `opa test`).
    ///
    /// Compiles the policies, runs every case of every test file, prints PASS or FAIL with the
    /// differences and a summary, and exits 1 when a case fails or a file cannot be used.
    Test(PolicyTestArgs),
    /// Validate a policy directory here, then make it the active set on every node (admins).
    ///
    /// Nothing is sent when the set does not compile. The server compiles it again, records it in the
    /// history with --comment, and every node decides with it from then on.
    Activate(PolicyInstallArgs),
    /// Run a candidate policy set in shadow mode beside the active one, or stop it (--clear).
    ///
    /// Every decision is also made with the candidate; differences (outcome or quorum) are counted and
    /// logged, and nothing it decides is enforced. The counters are per node (`policy status`).
    Shadow(PolicyShadowArgs),
    /// Show the active and shadow sets, the shadow counters and the recent history.
    ///
    /// `shadow_evaluated` and `shadow_differed` count the decisions the node that answers made with the
    /// shadow set since it loaded it.
    Status,
    /// Explain how the active set decides a request, policy by policy (file and line).
    Explain(PolicyExplainArgs),
}

#[derive(Debug, Args)]
pub struct PolicyDirArgs {
    /// The policy directory: its `*.cedar` files (not subdirectories) are the policy set.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "\
PATH is a test file (TOML) or a directory of `*.toml` test files. The policies are those of --dir, or,
when PATH is in (or is) a directory named `tests`, of that directory's parent: `warden policy test
policies/default/tests` tests `policies/default`. The test-file format is documented in warden-policy's
`testing` module (fixtures: agents, upstreams, tools, datasets, named tasks; cases with `expect`).
Exit codes: 0 every case passed; 1 a case failed, a file could not be used, or the policies do not
compile; 2 usage error.")]
pub struct PolicyTestArgs {
    /// A test file, or a directory of `*.toml` test files.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    /// The policy directory to test (default: the parent of the `tests` directory PATH is in).
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PolicyInstallArgs {
    /// The policy directory: its `*.cedar` files are the set.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
    /// Why; recorded in the policy history.
    #[arg(long, value_name = "TEXT", value_parser = Flag::<Note>::new())]
    pub comment: Option<Note>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["dir", "clear"])))]
pub struct PolicyShadowArgs {
    /// The candidate policy directory.
    #[arg(value_name = "DIR")]
    pub dir: Option<PathBuf>,
    /// Stop shadow evaluation.
    #[arg(long, conflicts_with = "dir")]
    pub clear: bool,
    /// Why; recorded in the policy history.
    #[arg(long, value_name = "TEXT", value_parser = Flag::<Note>::new())]
    pub comment: Option<Note>,
}

/// What an action targets: exactly one of an upstream, a tool or a dataset.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct ResourceArgs {
    /// The action targets this upstream.
    #[arg(long, value_name = "NAME", value_parser = Flag::<UpstreamName>::new())]
    pub upstream: Option<UpstreamName>,
    /// The action targets this tool, named `UPSTREAM/TOOL`.
    #[arg(long, value_name = "UPSTREAM/TOOL", value_parser = Flag::<QualifiedName>::new())]
    pub tool: Option<QualifiedName>,
    /// The action targets this dataset, named `UPSTREAM/DATASET`.
    #[arg(long, value_name = "UPSTREAM/DATASET", value_parser = Flag::<QualifiedName>::new())]
    pub dataset: Option<QualifiedName>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Explains the decision of the server's active policy set for a request that is not made: the agent,
the action and the resource, with the context of a recorded task (--task-id; without it, no task), an
approval (--approved, by --approvers people, default 1) and tool arguments (--args-file, JSON; `-`
reads stdin). Prints the decision, its reasons, the policies the index selected (considered) and those
whose condition held (matched), each with its file and line, and evaluation errors. -o json prints the
explanation as the server sends it.")]
pub struct PolicyExplainArgs {
    /// The agent acting.
    #[arg(long, value_name = "NAME", value_parser = Flag::<AgentName>::new())]
    pub agent: AgentName,
    /// The action: read, write, destructive or admin.
    #[arg(long, value_name = "ACTION", value_parser = Flag::<Action>::new())]
    pub action: Action,
    #[command(flatten)]
    pub resource: ResourceArgs,
    /// Take the task context (intent, delegation) from this recorded task.
    #[arg(long, value_name = "TASK_ID", value_parser = Flag::<TaskId>::new())]
    pub task_id: Option<TaskId>,
    /// Explain the request as if it had been approved.
    #[arg(long)]
    pub approved: bool,
    /// How many distinct people approved (with --approved; default 1).
    #[arg(long, value_name = "N", requires = "approved", value_parser = Flag::<Approvers>::new())]
    pub approvers: Option<Approvers>,
    /// The tool arguments: a JSON file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub args_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Asks the server's decision point (POST /v1/authorize) whether the task the token belongs to may do
ACTION to the resource, with the tool arguments of --args-file (JSON; `-` reads stdin). The task's
intent comes from Warden's record of the task, not from this command. A DPoP-bound task token needs
the agent's key (--key) to prove possession.

Exit codes (so that scripts can branch on the decision):
  0  allow
  3  deny
  4  needs_approval (the decision's quorum says how many approvers)
  1  error: no decision was made (token refused, server unreachable, unreadable file)
  2  usage error (checked before anything is sent)
With -o json the decision is printed as the server sent it, and the exit code is the same.")]
pub struct AuthorizeArgs {
    /// File holding the task token.
    #[arg(long, value_name = "FILE")]
    pub task_token_file: PathBuf,
    /// The agent's key, needed when the task token is DPoP-bound.
    #[arg(long, value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// The action: read, write, destructive or admin.
    #[arg(long, value_name = "ACTION", value_parser = Flag::<Action>::new())]
    pub action: Action,
    #[command(flatten)]
    pub resource: ResourceArgs,
    /// The tool arguments: a JSON file (`-` for stdin).
    #[arg(long, value_name = "FILE")]
    pub args_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify the whole ledger (every entry, checkpoint and signature), or an evidence bundle.
    Verify(AuditVerifyArgs),
    /// Export the ledger, or the entries a filter selects, as an evidence bundle or OCSF events.
    Export(AuditExportArgs),
    /// Show the newest ledger entries from the server, and with --follow keep showing new ones.
    Tail(AuditTailArgs),
    /// Save the server's latest signed checkpoint in a file kept outside the database, proven
    /// consistent with the one saved there before.
    Checkpoint(AuditCheckpointArgs),
}

#[derive(Debug, Args)]
#[command(after_help = "\
Reads GET /v1/audit/checkpoint (an API token of an admin or auditor) and writes its signed note (C2SP) to
FILE, which `warden audit verify --checkpoint FILE` reads. Keep FILE where whoever administers the
database cannot write, and run this regularly (e.g. from cron): a log cut back, or rewritten, after a
checkpoint was saved then fails verification against it.

When FILE exists, the new checkpoint must be at least as large as the saved one and consistent with it
(an RFC 9162 consistency proof from GET /v1/audit/proof/consistency, verified here); FILE is then
replaced atomically (temporary file, fsync, rename; mode 0600). Otherwise this exits 1 and FILE is left
as it was: a smaller checkpoint means the log was cut back, an inconsistent one that its history was
rewritten.

Trusted keys: those pinned with --key / --key-file; without them, the keys the server publishes (with a
warning). Both checkpoints must verify with them.")]
pub struct AuditCheckpointArgs {
    /// The file to keep the checkpoint in.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// Trust this checkpoint verifier key, `<name>+<id>+<base64>` (repeat for several).
    #[arg(long = "key", value_name = "VKEY", value_parser = Flag::<VerifierKey>::new())]
    pub keys: Vec<VerifierKey>,
    /// Trust the verifier keys in this file: one per line; blank lines and `#` comments are ignored.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Reads /v1/audit/entries from the server (an API token of an admin or auditor). Table output: one line
per entry (sequence number, time, kind, actor, subject, outcome or operation); -o json: one JSON object
per line, the entry as hashed into the log. With --follow, waits for new entries (long polling) until
interrupted.")]
pub struct AuditTailArgs {
    /// How many of the newest entries to show first (ignored with --from).
    #[arg(short = 'n', long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(0..=100_000))]
    pub lines: u32,
    /// Start at this sequence number instead.
    #[arg(long, value_name = "SEQ")]
    pub from: Option<u64>,
    /// Only entries about this agent (from the agent's newest entries on; with --follow, new ones).
    #[arg(long, value_name = "NAME", value_parser = Flag::<AgentName>::new())]
    pub agent: Option<AgentName>,
    /// Keep waiting for new entries.
    #[arg(short = 'f', long)]
    pub follow: bool,
}

/// Where the server's database is: found as `warden serve` finds it.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The server's configuration file (TOML): its data directory and database are used.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// The server's data directory (its SQLite database `warden.db`, `ledger.key`); default
    /// `./warden-data`.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// PostgreSQL URL instead of the embedded SQLite; must not contain a password (put such a URL in
    /// WARDEN_DATABASE_URL).
    #[arg(long, value_name = "URL", value_parser = Flag::<DatabaseUrl>::new())]
    pub database: Option<DatabaseUrl>,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Without --bundle, reads the server's database (no server needed): verifies every signed checkpoint
(signature, origin, no fork), then every entry in order (sequence, canonical bytes, stored leaf hash),
recomputes the Merkle root at each checkpoint, and checks that the server's stored head is the tree the
entries make. With --bundle FILE, verifies an exported evidence bundle offline, in any directory.

Trusted keys: those pinned with --key / --key-file; without them, the keys published in the database
(`ledger_keys`) and the public half of DATA_DIR/ledger.key, or for a bundle the keys it carries. Keys
from the evidence itself are reported with a warning: whoever can rewrite the database or the bundle
can add a key too. Pin the keys to rule that out.

What the log cannot show by itself: that its newest entries were cut off together with their
checkpoints (what is left still carries genuine signatures). --checkpoint FILE compares it with a
signed checkpoint saved outside the database (`warden audit checkpoint --out FILE`, a witness's copy,
or the server's DATA_DIR/ledger.checkpoint): its signature must verify with the trusted keys, the log
must reach its size, and the log's tree at that size must have its root. --min-size N requires at least
N entries. A complete bundle is checked the same way; a filtered bundle proves only the trees of its
own checkpoints, so a saved checkpoint of another size fails as not provable by it.

Exit codes: 0 verified; 1 verification failed (the message names the first bad entry where there is
one), or the database or file could not be read; 2 usage error.")]
pub struct AuditVerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Verify this evidence bundle (from `warden audit export`) instead of the database.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["config", "data_dir", "database"])]
    pub bundle: Option<PathBuf>,
    /// Trust this checkpoint verifier key, `<name>+<id>+<base64>` (repeat for several).
    #[arg(long = "key", value_name = "VKEY", value_parser = Flag::<VerifierKey>::new())]
    pub keys: Vec<VerifierKey>,
    /// Trust the verifier keys in this file: one per line; blank lines and `#` comments are ignored.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
    /// The log's origin (default: the one the checkpoints, or the bundle, name).
    #[arg(long, value_name = "ORIGIN", value_parser = Flag::<Origin>::new())]
    pub origin: Option<Origin>,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
    /// Also decode every entry strictly (known envelope, canonical bytes): finds entries that were
    /// malformed when written, not only ones changed since. About 4x slower; a bundle is always
    /// checked this way.
    #[arg(long)]
    pub strict: bool,
    /// A signed checkpoint (C2SP signed note) saved outside the database: the log must reach its size
    /// with its root (fails when the log was cut back or its history rewritten).
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// The log must hold at least this many entries.
    #[arg(long, value_name = "N")]
    pub min_size: Option<u64>,
}

/// What `audit export` writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ExportFormat {
    /// A Warden evidence bundle (JSON lines with keys, policies, checkpoints and proofs), verified
    /// offline with `warden audit verify --bundle`.
    Bundle,
    /// OCSF 1.3.0 events, one JSON object per line, for a SIEM.
    Ocsf,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Exports the entries up to the latest signed checkpoint (entries after it are exported once the server
has signed a checkpoint that covers them). Without a filter the bundle is complete: every entry, every
checkpoint and the consistency proofs between them. With --since, --until or --agent it holds the
matching entries, each with an inclusion proof against the latest checkpoint; it proves each entry is
in the log, not that no other entry matched. A bundle also carries the verifier keys and the policy
sets its decisions name.

FILE must not exist; it is written under a temporary name in the same directory and renamed when
complete (mode 0600). Times are RFC 3339 (`2025-01-31T09:15:00Z`) or a date (`2025-01-31`, midnight
UTC); --since is inclusive, --until exclusive.")]
pub struct AuditExportArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Where to write the export: a new file.
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
    /// What to write.
    #[arg(long, value_name = "FORMAT", value_enum, default_value_t = ExportFormat::Bundle)]
    pub format: ExportFormat,
    /// Only entries at or after this time.
    #[arg(long, value_name = "TIME", value_parser = Flag::<Timestamp>::new())]
    pub since: Option<Timestamp>,
    /// Only entries before this time.
    #[arg(long, value_name = "TIME", value_parser = Flag::<Timestamp>::new())]
    pub until: Option<Timestamp>,
    /// Only entries about this agent.
    #[arg(long, value_name = "NAME", value_parser = Flag::<AgentFilterName>::new())]
    pub agent: Option<AgentFilterName>,
    /// Show progress on stderr even when it is not a terminal.
    #[arg(long)]
    pub progress: bool,
}

/// A value that can be parsed from one command-line argument, with a message (without the flag name)
/// when it cannot.
pub trait FlagValue: Sized + Clone + Send + Sync + 'static {
    fn parse_flag(value: &str) -> Result<Self, String>;

    /// The accepted spellings, for `--help`, when there is a fixed set.
    fn choices() -> Vec<&'static str> {
        Vec::new()
    }
}

/// Implements [`FlagValue`] for `warden-core` types, keeping their message and dropping their API field
/// name (the flag name replaces it).
macro_rules! core_flag_value {
    ($($ty:ty => $parse:expr),+ $(,)?) => {$(
        impl FlagValue for $ty {
            fn parse_flag(value: &str) -> Result<Self, String> {
                ($parse)(value).map_err(|e: warden_core::ValidationError| e.message)
            }
        }
    )+};
    (enums: $($ty:ty),+ $(,)?) => {$(
        impl FlagValue for $ty {
            fn parse_flag(value: &str) -> Result<Self, String> {
                <$ty>::from_str(value).map_err(|e| e.message)
            }
            fn choices() -> Vec<&'static str> {
                <$ty>::ALL.iter().map(|v| v.as_str()).collect()
            }
        }
    )+};
}

core_flag_value!(
    AgentName => AgentName::parse,
    UpstreamName => UpstreamName::parse,
    Email => Email::parse,
    Model => Model::parse,
    Description => Description::parse,
    DisplayName => DisplayName::parse,
);
core_flag_value!(enums: Environment, AgentState, UpstreamKind, Sensitivity, Role, TaskState, warden_core::ToolClass);

/// The server's base URL: `http` or `https`, without credentials, query or fragment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerUrl(pub Url);

impl FlagValue for ServerUrl {
    fn parse_flag(value: &str) -> Result<Self, String> {
        let scheme_hint = "the server URL must start with http:// or https://";
        if !value.contains("://") {
            return Err(format!("{scheme_hint}, e.g. `{DEFAULT_SERVER}`"));
        }
        let url = Url::parse(value).map_err(|e| format!("`{}` is not a URL: {e}", value.escape_debug()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{scheme_hint}, not `{}://`", url.scheme()));
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the server URL must not carry credentials; use WARDEN_TOKEN or --token-file".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("the server URL must not have a query or a fragment".into());
        }
        if url.cannot_be_a_base() || url.host().is_none() {
            return Err(format!("`{}` has no host", value.escape_debug()));
        }
        Ok(Self(url))
    }
}

/// A duration in whole seconds written `<n>s`, `<n>m`, `<n>h` or `<n>d`, from 1 s to `max` seconds.
fn parse_duration(value: &str, what: &str, max: u64) -> Result<u64, String> {
    let shown = value.escape_debug();
    let usage = "use a whole number followed by `s`, `m`, `h` or `d`, e.g. `30d`";
    let Some(unit) = value.chars().last() else {
        return Err(format!("the {what} is empty; {usage}"));
    };
    let seconds_per_unit: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        _ => return Err(format!("`{shown}` has no unit; {usage}")),
    };
    let digits = &value[..value.len() - unit.len_utf8()];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{shown}` is not a {what}; {usage}"));
    }
    let seconds = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(seconds_per_unit));
    match seconds {
        Some(0) => Err(format!("the {what} must be at least 1s")),
        Some(s) if s <= max => Ok(s),
        _ => Err(format!("`{shown}` is longer than the limit of {}d", max / 86_400)),
    }
}

/// An API token's lifetime in seconds, written `<n>s`, `<n>m`, `<n>h` or `<n>d`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl(pub u64);

impl FlagValue for Ttl {
    fn parse_flag(value: &str) -> Result<Self, String> {
        parse_duration(value, "lifetime", MAX_TOKEN_TTL.num_seconds().unsigned_abs()).map(Self)
    }
}

/// A task's longest duration in seconds, written like a [`Ttl`]; at most 30 days.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskDuration(pub u64);

impl FlagValue for TaskDuration {
    fn parse_flag(value: &str) -> Result<Self, String> {
        parse_duration(value, "duration", MAX_TASK_DURATION_SECS).map(Self)
    }
}

/// Whether `value` looks like a UUID (`8-4-4-4-12` hex digits).
fn is_uuid(value: &str) -> bool {
    let groups: Vec<&str> = value.split('-').collect();
    let lengths: Vec<usize> = groups.iter().map(|g| g.len()).collect();
    lengths == [8, 4, 4, 4, 12] && groups.iter().all(|g| g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// An API token's id: a UUID, checked for shape so that a typo is caught before the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenId(pub String);

impl FlagValue for TokenId {
    fn parse_flag(value: &str) -> Result<Self, String> {
        if !is_uuid(value) {
            return Err(format!(
                "`{}` is not a token id; a token id is a UUID such as `1b4e28ba-2fa1-11d2-883f-0016d3cca427` \
                 (see `warden human token list EMAIL`)",
                value.escape_debug()
            ));
        }
        Ok(Self(value.to_ascii_lowercase()))
    }
}

/// A task's id: a UUID, checked for shape so that a typo is caught before the request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskId(pub String);

impl FlagValue for TaskId {
    fn parse_flag(value: &str) -> Result<Self, String> {
        if !is_uuid(value) {
            return Err(format!(
                "`{}` is not a task id; a task id is a UUID (see `warden task list`)",
                value.escape_debug()
            ));
        }
        Ok(Self(value.to_ascii_lowercase()))
    }
}

/// Why a task was ended: at most 1000 bytes, no control characters but newlines (the server's rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndReason(pub String);

/// Longest reason the server records when a task ends.
const MAX_END_REASON_BYTES: usize = 1_000;

impl FlagValue for EndReason {
    fn parse_flag(value: &str) -> Result<Self, String> {
        if value.len() > MAX_END_REASON_BYTES {
            return Err(format!(
                "the reason is {} bytes long; the limit is {MAX_END_REASON_BYTES}",
                value.len()
            ));
        }
        if value.chars().any(|c| c.is_control() && c != '\n') {
            return Err("the reason contains a control character".into());
        }
        Ok(Self(value.to_owned()))
    }
}

/// A comment recorded with a policy change: at most 1000 bytes, no control characters but newlines (the
/// server's rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note(pub String);

impl FlagValue for Note {
    fn parse_flag(value: &str) -> Result<Self, String> {
        if value.len() > MAX_END_REASON_BYTES {
            return Err(format!(
                "the comment is {} bytes long; the limit is {MAX_END_REASON_BYTES}",
                value.len()
            ));
        }
        if value.chars().any(|c| c.is_control() && c != '\n') {
            return Err("the comment contains a control character".into());
        }
        Ok(Self(value.to_owned()))
    }
}

/// The actions a task's agent does to upstreams, tools and datasets. `task.start` and `task.delegate`
/// are decided at the token endpoint (`warden task start|delegate`), so they are refused here.
impl FlagValue for Action {
    fn parse_flag(value: &str) -> Result<Self, String> {
        match value.parse::<Action>() {
            Ok(a) if a.is_task_action() => Err(format!(
                "`{a}` is decided when a task starts or is delegated (`warden task start|delegate`), not \
                 per action; expected one of `read`, `write`, `destructive`, `admin`"
            )),
            Ok(a) => Ok(a),
            Err(_) => Err(format!(
                "unknown action `{}`; expected one of `read`, `write`, `destructive`, `admin`",
                value.escape_debug()
            )),
        }
    }

    fn choices() -> Vec<&'static str> {
        Action::ALL
            .iter()
            .filter(|a| !a.is_task_action())
            .map(|a| a.as_str())
            .collect()
    }
}

/// A tool or dataset: `UPSTREAM/NAME`, the upstream a valid upstream name, the name 1 to 200 bytes
/// without `/`, control characters or surrounding spaces (the policy registry's rule).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QualifiedName {
    pub upstream: UpstreamName,
    pub name: String,
}

impl fmt::Display for QualifiedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.upstream, self.name)
    }
}

impl FlagValue for QualifiedName {
    fn parse_flag(value: &str) -> Result<Self, String> {
        let Some((upstream, name)) = value.split_once('/') else {
            return Err(format!(
                "`{}` must be `UPSTREAM/NAME`, e.g. `crm/search`",
                value.escape_debug()
            ));
        };
        let upstream = UpstreamName::parse(upstream).map_err(|e| e.message)?;
        let ok = !name.is_empty()
            && name.len() <= 200
            && !name.contains('/')
            && name.trim() == name
            && !name.chars().any(char::is_control);
        if !ok {
            return Err(format!(
                "the name after `{upstream}/` must be 1 to 200 bytes without `/`, control characters or \
                 surrounding spaces, not `{}`",
                name.escape_debug()
            ));
        }
        Ok(Self {
            upstream,
            name: name.to_owned(),
        })
    }
}

/// How many distinct people approved: 1 to 255.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Approvers(pub u8);

impl FlagValue for Approvers {
    fn parse_flag(value: &str) -> Result<Self, String> {
        match value.parse::<u8>() {
            Ok(n) if n >= 1 && value.bytes().all(|b| b.is_ascii_digit()) => Ok(Self(n)),
            _ => Err(format!(
                "`{}` is not a number of approvers from 1 to 255",
                value.escape_debug()
            )),
        }
    }
}

/// An agent named on the command line: a SPIFFE ID, or a bare agent name that becomes
/// `spiffe://<the server's trust domain>/agent/<name>` once the server's trust domain is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AgentId {
    Spiffe(SpiffeId),
    Name(AgentName),
}

impl FlagValue for AgentId {
    fn parse_flag(value: &str) -> Result<Self, String> {
        if value.starts_with("spiffe:") || value.contains('/') {
            SpiffeId::parse(value).map(Self::Spiffe).map_err(|e| e.message)
        } else {
            AgentName::parse(value).map(Self::Name).map_err(|e| {
                format!(
                    "{}; give the agent's SPIFFE ID (`spiffe://<trust domain>/agent/<name>`) or its name",
                    e.message
                )
            })
        }
    }
}

/// A checkpoint verifier key, `<name>+<hex id>+<base64>` (C2SP signed-note `vkey`).
impl FlagValue for VerifierKey {
    fn parse_flag(value: &str) -> Result<Self, String> {
        VerifierKey::parse(value.trim()).map_err(|e| {
            format!(
                "not a verifier key ({e}); expected `<name>+<8 hex digits>+<base64>`, as the server \
                 publishes it"
            )
        })
    }
}

/// A log's origin: the first line of its checkpoints.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin(pub String);

impl FlagValue for Origin {
    fn parse_flag(value: &str) -> Result<Self, String> {
        if !warden_ledger::note::is_valid_name(value) {
            return Err(format!(
                "`{}` is not a log origin; an origin is non-empty, without spaces, `+` or control \
                 characters",
                value.escape_debug()
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

/// A point in time: RFC 3339, or a date (midnight UTC).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamp(pub DateTime<Utc>);

impl FlagValue for Timestamp {
    fn parse_flag(value: &str) -> Result<Self, String> {
        if let Ok(t) = DateTime::parse_from_rfc3339(value) {
            return Ok(Self(t.with_timezone(&Utc)));
        }
        if let Ok(d) = NaiveDate::parse_from_str(value, "%Y-%m-%d")
            && value.len() == 10
        {
            return Ok(Self(d.and_time(NaiveTime::MIN).and_utc()));
        }
        Err(format!(
            "`{}` is not a time; use RFC 3339 (e.g. `2025-01-31T09:15:00Z`) or a date (`2025-01-31`)",
            value.escape_debug()
        ))
    }
}

/// The agent an export is filtered on: what entries carry as `body.agent`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AgentFilterName(pub String);

impl FlagValue for AgentFilterName {
    fn parse_flag(value: &str) -> Result<Self, String> {
        if value.is_empty()
            || value.len() > 1024
            || value.trim() != value
            || value.chars().any(char::is_control)
        {
            return Err(format!(
                "`{}` is not an agent name (1 to 1024 bytes, no control characters or surrounding spaces)",
                value.escape_debug()
            ));
        }
        Ok(Self(value.to_owned()))
    }
}

/// A database URL given on the command line: never with a password (it would be visible to other
/// users in the process list), as for `warden serve --database`.
#[derive(Clone, PartialEq, Eq)]
pub struct DatabaseUrl(pub String);

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DatabaseUrl(..)")
    }
}

impl FlagValue for DatabaseUrl {
    fn parse_flag(value: &str) -> Result<Self, String> {
        let has_password = match Url::parse(value) {
            Ok(u) => {
                u.password().is_some() || u.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password"))
            }
            Err(_) => value
                .split("://")
                .nth(1)
                .and_then(|r| r.split('@').next())
                .is_some_and(|u| u.contains(':')),
        };
        if has_password {
            return Err(
                "the URL must not contain a password (it would be visible to other users); put \
                        the URL in the WARDEN_DATABASE_URL environment variable instead"
                    .into(),
            );
        }
        let lower = value.to_ascii_lowercase();
        if !["sqlite:", "postgres://", "postgresql://"]
            .iter()
            .any(|p| lower.starts_with(p))
        {
            return Err("the URL must start with `postgres://` or `sqlite:`".into());
        }
        Ok(Self(value.to_owned()))
    }
}

/// A clap value parser for any [`FlagValue`]: on failure, the error names the flag (or the positional
/// argument) and clap exits with code 2.
#[derive(Debug)]
pub struct Flag<T>(PhantomData<fn() -> T>);

impl<T> Flag<T> {
    pub fn new() -> Self {
        Self(PhantomData)
    }
}

impl<T> Default for Flag<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> Clone for Flag<T> {
    fn clone(&self) -> Self {
        Self::new()
    }
}

/// How an argument is named in an error: `--flag` for flags, `NAME` for positional arguments.
pub fn arg_display(arg: Option<&clap::Arg>) -> String {
    match arg {
        Some(a) => match a.get_long() {
            Some(long) => format!("--{long}"),
            None => a
                .get_value_names()
                .and_then(|names| names.first())
                .map(|n| n.to_string())
                .unwrap_or_else(|| a.get_id().to_string().to_uppercase()),
        },
        None => "value".into(),
    }
}

impl<T: FlagValue> TypedValueParser for Flag<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg_display(arg);
        let result = match value.to_str() {
            Some(s) => T::parse_flag(s),
            None => Err("the value is not valid UTF-8".into()),
        };
        result.map_err(|message| {
            cmd.clone()
                .error(ErrorKind::ValueValidation, format!("{name}: {message}"))
        })
    }

    fn possible_values(&self) -> Option<Box<dyn Iterator<Item = PossibleValue> + '_>> {
        let choices = T::choices();
        if choices.is_empty() {
            None
        } else {
            Some(Box::new(choices.into_iter().map(PossibleValue::new)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("warden").chain(args.iter().copied()))
    }

    /// The rendered error for a command line that must fail with a usage error (exit code 2).
    fn usage_error(args: &[&str]) -> String {
        let err = parse(args).expect_err("must be refused");
        assert_eq!(err.exit_code(), 2, "{err}");
        err.render().to_string()
    }

    #[test]
    fn the_command_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn ttls() {
        assert_eq!(Ttl::parse_flag("30d"), Ok(Ttl(30 * 86_400)));
        assert_eq!(Ttl::parse_flag("90s"), Ok(Ttl(90)));
        assert_eq!(Ttl::parse_flag("15m"), Ok(Ttl(900)));
        assert_eq!(Ttl::parse_flag("12h"), Ok(Ttl(43_200)));
        assert_eq!(Ttl::parse_flag("365d"), Ok(Ttl(365 * 86_400)));
        for (bad, want) in [
            ("", "empty"),
            ("30", "no unit"),
            ("30w", "no unit"),
            ("d", "not a lifetime"),
            ("-1d", "not a lifetime"),
            ("+1d", "not a lifetime"),
            ("1.5d", "not a lifetime"),
            ("3 d", "not a lifetime"),
            ("0s", "at least 1s"),
            ("366d", "limit of 365d"),
            ("99999999999999999999999d", "limit of 365d"),
            ("999999999999999999d", "limit of 365d"),
            ("٣d", "not a lifetime"),
        ] {
            let got = Ttl::parse_flag(bad).expect_err(bad);
            assert!(got.contains(want), "{bad:?}: {got}");
        }
    }

    #[test]
    fn task_durations_and_reasons() {
        assert_eq!(TaskDuration::parse_flag("30m"), Ok(TaskDuration(1_800)));
        assert_eq!(TaskDuration::parse_flag("30d"), Ok(TaskDuration(30 * 86_400)));
        let e = TaskDuration::parse_flag("31d").unwrap_err();
        assert!(e.contains("limit of 30d"), "{e}");
        let e = TaskDuration::parse_flag("0s").unwrap_err();
        assert!(e.contains("duration must be at least 1s"), "{e}");
        assert!(EndReason::parse_flag("done\nfor today").is_ok());
        assert!(EndReason::parse_flag("a\tb").is_err());
        assert!(EndReason::parse_flag(&"x".repeat(1_001)).is_err());
        assert!(TaskId::parse_flag("1b4e28ba-2fa1-11d2-883f-0016d3cca427").is_ok());
        assert!(TaskId::parse_flag("latest").is_err());
    }

    #[test]
    fn task_verbs_parse() {
        let key = ["--key", "k.json", "--agent-id", "bot"];
        let start = |extra: &[&'static str]| {
            let mut args = vec!["task", "start"];
            args.extend(key);
            args.extend(extra);
            parse(&args)
        };
        let cli = start(&["--purpose", "p", "--type", "t", "--upstream", "crm", "--dpop"]).expect("valid");
        let Command::Task(TaskCommand::Start(a)) = cli.command else {
            panic!("wrong verb")
        };
        assert!(a.dpop);
        assert_eq!(a.agent.agent_id, AgentId::Name(AgentName::parse("bot").unwrap()));
        assert_eq!(a.intent.upstreams.len(), 1);
        let e = usage_error(&["task", "start", "--key", "k", "--agent-id", "spiffe://x/../y"]);
        assert!(e.contains("error: --agent-id: "), "{e}");
        let e = usage_error(&[
            "task",
            "start",
            "--key",
            "k",
            "--agent-id",
            "bot",
            "--upstream",
            "Bad",
        ]);
        assert!(e.contains("error: --upstream: "), "{e}");
        // `task end`: exactly one of TASK_ID and --task-token-file.
        usage_error(&["task", "end"]);
        usage_error(&[
            "task",
            "end",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "--task-token-file",
            "t",
        ]);
        usage_error(&["task", "end", "not-a-uuid"]);
        usage_error(&[
            "task",
            "end",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
            "--key",
            "k",
        ]);
        assert!(parse(&["task", "end", "--task-token-file", "t", "--key", "k"]).is_ok());
        // A delegation from a bound parent proves the parent's key (--parent-key) and binds the child
        // to its own (issue 15: a child of a DPoP-bound parent stays DPoP-bound).
        assert!(
            parse(&[
                "task",
                "delegate",
                "--key",
                "k",
                "--agent-id",
                "w",
                "--task-token-file",
                "t",
                "--parent-key",
                "p",
                "--dpop",
            ])
            .is_ok()
        );
        // Task tokens come from files only.
        usage_error(&["task", "current", "--task-token", "x"]);
        usage_error(&["agent", "enroll", "--join-token", "wdn_jt_x", "--key-out", "k"]);
        let e = usage_error(&["task", "list", "--state", "done"]);
        assert!(e.contains("error: --state: unknown state `done`"), "{e}");
    }

    #[test]
    fn policy_values() {
        assert_eq!(Action::parse_flag("write"), Ok(Action::Write));
        let e = Action::parse_flag("task.delegate").unwrap_err();
        assert!(e.contains("decided when a task starts"), "{e}");
        assert!(Action::parse_flag("Read").is_err());
        assert_eq!(
            <Action as FlagValue>::choices(),
            ["read", "write", "destructive", "admin"]
        );
        let t = QualifiedName::parse_flag("crm/search").unwrap();
        assert_eq!((t.upstream.as_str(), t.name.as_str()), ("crm", "search"));
        assert_eq!(t.to_string(), "crm/search");
        assert_eq!(
            QualifiedName::parse_flag("db/public.orders").unwrap().name,
            "public.orders"
        );
        for bad in ["crm", "crm/", "/x", "Crm/x", "crm/a/b", "crm/ x", "crm/a\u{1b}"] {
            assert!(QualifiedName::parse_flag(bad).is_err(), "{bad:?}");
        }
        assert!(QualifiedName::parse_flag(&format!("crm/{}", "x".repeat(201))).is_err());
        assert_eq!(Approvers::parse_flag("2"), Ok(Approvers(2)));
        for bad in ["0", "256", "+1", "-1", "", "two"] {
            assert!(Approvers::parse_flag(bad).is_err(), "{bad:?}");
        }
        assert!(Note::parse_flag("line one\nline two").is_ok());
        assert!(Note::parse_flag("a\tb").is_err());
        assert!(Note::parse_flag(&"x".repeat(1_001)).is_err());
    }

    #[test]
    fn policy_verbs_parse() {
        let cli = parse(&["policy", "shadow", "--clear", "--comment", "done"]).expect("valid");
        let Command::Policy(PolicyCommand::Shadow(a)) = cli.command else {
            panic!("wrong verb")
        };
        assert!(a.clear && a.dir.is_none());
        usage_error(&["policy", "shadow"]);
        usage_error(&["policy", "shadow", "dir", "--clear"]);
        let cli = parse(&[
            "policy",
            "explain",
            "--agent",
            "bot",
            "--action",
            "write",
            "--tool",
            "crm/x",
            "--approved",
            "--approvers",
            "2",
        ])
        .expect("valid");
        let Command::Policy(PolicyCommand::Explain(a)) = cli.command else {
            panic!("wrong verb")
        };
        assert_eq!(a.action, Action::Write);
        assert_eq!(a.approvers, Some(Approvers(2)));
        assert!(a.resource.tool.is_some() && a.resource.upstream.is_none());
        // Exactly one resource.
        let base = ["authorize", "--task-token-file", "t", "--action", "read"];
        usage_error(&base);
        let mut two = base.to_vec();
        two.extend(["--upstream", "crm", "--dataset", "crm/d"]);
        usage_error(&two);
        let e = usage_error(&[
            "authorize",
            "--task-token-file",
            "t",
            "--action",
            "task.start",
            "--upstream",
            "crm",
        ]);
        assert!(e.contains("error: --action: `task.start` is decided"), "{e}");
        // --approvers only with --approved.
        usage_error(&[
            "policy",
            "explain",
            "--agent",
            "bot",
            "--action",
            "read",
            "--upstream",
            "crm",
            "--approvers",
            "2",
        ]);
    }

    #[test]
    fn audit_values() {
        let t = Timestamp::parse_flag("2025-01-31T09:15:00+01:00").unwrap();
        assert_eq!(t.0.to_rfc3339(), "2025-01-31T08:15:00+00:00");
        let d = Timestamp::parse_flag("2025-01-31").unwrap();
        assert_eq!(d.0.to_rfc3339(), "2025-01-31T00:00:00+00:00");
        for bad in [
            "",
            "yesterday",
            "2025-1-31",
            "2025-02-30",
            "2025-01-31T09:15:00",
            "1738314900",
        ] {
            let e = Timestamp::parse_flag(bad).expect_err(bad);
            assert!(e.contains("is not a time"), "{bad:?}: {e}");
        }
        assert!(DatabaseUrl::parse_flag("postgres://warden@db/warden").is_ok());
        assert!(DatabaseUrl::parse_flag("sqlite:/var/lib/warden/warden.db").is_ok());
        for (bad, want) in [
            ("postgres://u:pw@db/w", "password"),
            ("postgres://u@db/w?password=pw", "password"),
            ("mysql://db/w", "must start with"),
        ] {
            let e = DatabaseUrl::parse_flag(bad).expect_err(bad);
            assert!(e.contains(want) && !e.contains("pw@"), "{bad:?}: {e}");
        }
        assert!(Origin::parse_flag("warden.example.com/ledger").is_ok());
        assert!(Origin::parse_flag("a b").is_err());
        assert!(AgentFilterName::parse_flag("billing-bot").is_ok());
        assert!(AgentFilterName::parse_flag(" x").is_err());
        let cli = parse(&[
            "audit", "export", "--out", "b.jsonl", "--format", "ocsf", "--agent", "bot",
        ])
        .unwrap();
        let Command::Audit(AuditCommand::Export(a)) = cli.command else {
            panic!("wrong verb")
        };
        assert_eq!(a.format, ExportFormat::Ocsf);
        usage_error(&[
            "audit",
            "verify",
            "--bundle",
            "b",
            "--database",
            "postgres://db/w",
        ]);
        usage_error(&["audit", "export", "--out", "b", "--format", "csv"]);
    }

    #[test]
    fn token_ids() {
        let id = "1B4E28BA-2FA1-11D2-883F-0016D3CCA427";
        assert_eq!(TokenId::parse_flag(id), Ok(TokenId(id.to_ascii_lowercase())));
        for bad in [
            "",
            "1b4e28ba",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca42",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca42g",
            "../x",
        ] {
            assert!(TokenId::parse_flag(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_urls() {
        assert!(ServerUrl::parse_flag("http://127.0.0.1:8700").is_ok());
        assert!(ServerUrl::parse_flag("https://warden.example.com/prefix/").is_ok());
        for (bad, want) in [
            ("127.0.0.1:8700", "must start with http"),
            ("ftp://x", "must start with http"),
            ("http://user:pw@x", "credentials"),
            ("http://x/?a=b", "query"),
            ("not a url", "must start with http"),
            ("http://exa mple.com", "is not a URL"),
        ] {
            let got = ServerUrl::parse_flag(bad).expect_err(bad);
            assert!(got.contains(want), "{bad:?}: {got}");
        }
    }

    #[test]
    fn bad_values_name_the_flag() {
        let base = ["agent", "register", "bot", "--owner", "a@example.com"];
        let with = |extra: &[&'static str]| {
            base.iter()
                .copied()
                .chain(extra.iter().copied())
                .collect::<Vec<_>>()
        };

        let e = usage_error(&with(&["--environment", "prod", "--model", "p/m@1"]));
        assert!(
            e.contains(
                "error: --environment: unknown environment `prod`; expected one of `prototype`, `staging`, `production`"
            ),
            "{e}"
        );

        let e = usage_error(&[
            "agent",
            "register",
            "Bad_Bot",
            "--owner",
            "a@example.com",
            "--environment",
            "staging",
            "--model",
            "p/m@1",
        ]);
        assert!(
            e.contains("error: NAME: agent name `Bad_Bot` contains `B`"),
            "{e}"
        );

        let e = usage_error(&[
            "agent",
            "register",
            "bot",
            "--owner",
            "nobody",
            "--environment",
            "staging",
            "--model",
            "p/m@1",
        ]);
        assert!(e.contains("error: --owner: email `nobody` has no `@`"), "{e}");

        let e = usage_error(&with(&["--environment", "staging", "--model", "claude"]));
        assert!(
            e.contains("error: --model: model `claude` must look like `provider/name@version`"),
            "{e}"
        );

        let e = usage_error(&[
            "upstream",
            "add",
            "db",
            "--kind",
            "mysql",
            "--url",
            "x",
            "--environment",
            "staging",
            "--owner",
            "a@example.com",
            "--sensitivity",
            "internal",
        ]);
        assert!(e.contains("error: --kind: unknown kind `mysql`"), "{e}");

        let e = usage_error(&["human", "add", "a@example.com", "--name", "A", "--role", "root"]);
        assert!(e.contains("error: --role: unknown role `root`"), "{e}");

        let e = usage_error(&["human", "token", "create", "a@example.com", "--ttl", "1y"]);
        assert!(e.contains("error: --ttl: `1y` has no unit"), "{e}");

        let e = usage_error(&["agent", "list", "--state", "alive"]);
        assert!(e.contains("error: --state: unknown state `alive`"), "{e}");

        let e = usage_error(&["--server", "localhost:8700", "whoami"]);
        assert!(
            e.contains("error: --server: the server URL must start with http"),
            "{e}"
        );
    }

    #[test]
    fn missing_and_conflicting_flags_are_usage_errors() {
        // No owner.
        usage_error(&[
            "agent",
            "register",
            "bot",
            "--environment",
            "staging",
            "--model",
            "p/m@1",
        ]);
        // No role.
        usage_error(&["human", "add", "a@example.com", "--name", "A"]);
        // Both a new upstream list and none.
        usage_error(&["agent", "update", "bot", "--upstream", "db", "--no-upstreams"]);
        // A token is never a command-line argument.
        usage_error(&["--token", "wdn_at_x", "whoami"]);
    }

    #[test]
    fn flags_parse_into_core_types() {
        let cli = parse(&[
            "agent",
            "register",
            "billing-bot",
            "--owner",
            "Alice@Example.com",
            "--owner",
            "bob@example.com",
            "--environment",
            "production",
            "--model",
            "anthropic/claude-sonnet@4.5",
            "--upstream",
            "crm",
            "-o",
            "json",
        ])
        .expect("valid");
        assert_eq!(cli.output, Format::Json);
        let Command::Agent(AgentCommand::Register(args)) = cli.command else {
            panic!("wrong verb")
        };
        assert_eq!(args.name.as_str(), "billing-bot");
        assert_eq!(
            args.owners.iter().map(Email::as_str).collect::<Vec<_>>(),
            ["alice@example.com", "bob@example.com"]
        );
        assert_eq!(args.environment, Environment::Production);
        assert_eq!(args.model.to_string(), "anthropic/claude-sonnet@4.5");
        assert_eq!(args.upstreams.len(), 1);
        assert!(args.description.is_none());
    }

    #[test]
    fn help_documents_exit_codes_and_the_token_fallback() {
        let help = Cli::command().render_long_help().to_string();
        assert!(help.contains("Exit codes:"), "{help}");
        assert!(help.contains("./warden-data/admin.token"), "{help}");
        assert!(help.contains("WARDEN_TOKEN"), "{help}");
        assert!(
            help.contains("3  `warden authorize`: the decision is deny"),
            "{help}"
        );
        let mut cmd = Cli::command();
        let authorize = cmd
            .find_subcommand_mut("authorize")
            .expect("authorize")
            .render_long_help()
            .to_string();
        assert!(authorize.contains("4  needs_approval"), "{authorize}");
    }
}
