//! The server's configuration: one TOML file, every option with a safe default, and the rules that keep
//! secrets off the command line.
//!
//! Precedence: command-line flags, then the environment (`WARDEN_DATABASE_URL`), then the file, then the
//! defaults. A database URL given inline (flag or file) must not carry a password — it would show in the
//! process list or a committed file; put a URL with a password in `database.url_file` or in
//! `WARDEN_DATABASE_URL`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::{Deserialize, Serialize};
use warden_core::{Email, Secret, TrustDomain, UpstreamName};

/// Upper bounds for configurable limits, so a typo cannot disable a protection.
const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;
const MAX_REQUEST_TIMEOUT_SECS: u64 = 600;
/// Longest config file we read.
const MAX_CONFIG_BYTES: u64 = 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address to listen on. Default `127.0.0.1:8700` (loopback: exposing Warden is a deliberate act).
    pub listen: String,
    /// Where Warden keeps its SQLite database, keys and the bootstrap token. Created 0700.
    pub data_dir: PathBuf,
    /// SPIFFE trust domain of agent identities.
    pub trust_domain: TrustDomain,
    /// The URL agents and clients reach this Warden at: the `iss` of task tokens, the audience agents'
    /// assertions must name, the base of DPoP `htu`s. Default: `https://<listen address>` when Warden
    /// terminates TLS (`[tls] cert_file`), else `http://<listen address>`. Behind a load balancer or
    /// TLS terminator, set it to the public URL (`https://`, required with `[tls] behind_proxy`). Every
    /// node of a deployment must use the same value.
    pub public_url: Option<String>,
    pub database: DatabaseConfig,
    pub log: LogConfig,
    pub http: HttpConfig,
    pub bootstrap: BootstrapConfig,
    pub tokens: TokenConfig,
    /// External issuers whose tokens agents may present instead of their own assertions.
    pub federation: Vec<FederationConfig>,
    pub policy: PolicyConfig,
    pub ledger: LedgerConfig,
    pub approvals: ApprovalConfig,
    pub notify: NotifyConfig,
    pub gateway: GatewayConfig,
    /// `[tls]`: TLS on the listener (see [`TlsConfig`]).
    pub tls: TlsConfig,
}

/// `[tls]`: how bearer tokens are kept off the network in clear. Either Warden terminates TLS itself
/// (`cert_file` + `key_file`, optionally `client_ca_file` for mutual TLS), or a TLS-terminating proxy in
/// front of it does (`behind_proxy = true`). Without either, Warden listens on loopback addresses only.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The server's certificate chain, PEM, leaf first. Reloaded when the file changes.
    pub cert_file: Option<PathBuf>,
    /// The leaf's private key, PEM (PKCS#8, PKCS#1 or SEC1). Reloaded when the file changes; should be
    /// readable by Warden's user only (chmod 600).
    pub key_file: Option<PathBuf>,
    /// CA certificates (PEM) that client certificates are verified against: mutual TLS, optional for
    /// the client (a client without a certificate still authenticates with its bearer token). A client
    /// certificate carrying a SPIFFE ID (X.509-SVID URI SAN) binds the connection to that agent.
    pub client_ca_file: Option<PathBuf>,
    /// Set to `true` when a TLS-terminating proxy in front of Warden is the only way to reach it: Warden
    /// then serves plain HTTP on a non-loopback address. Requires an `https://` `public_url` (the
    /// proxy's). Not with `cert_file`.
    pub behind_proxy: bool,
    /// How often the certificate, key and client CA files are checked for changes, ms. Default 1000,
    /// between 100 and 60000.
    pub reload_interval_ms: u64,
}

impl Default for TlsConfig {
    fn default() -> Self {
        Self {
            cert_file: None,
            key_file: None,
            client_ca_file: None,
            behind_proxy: false,
            reload_interval_ms: 1000,
        }
    }
}

/// The files Warden terminates TLS with (`[tls]`, resolved).
#[derive(Debug, Clone)]
pub struct TlsSettings {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub client_ca_file: Option<PathBuf>,
    pub reload_interval: Duration,
}

/// Who protects bearer tokens on the wire (`[tls]`, resolved).
#[derive(Debug, Clone)]
pub enum TlsMode {
    /// Plain HTTP on a loopback address: nothing crosses a network.
    Off,
    /// Plain HTTP behind a TLS-terminating proxy (`behind_proxy = true`).
    BehindProxy,
    /// Warden terminates TLS.
    Terminate(TlsSettings),
}

impl TlsConfig {
    /// Checks `[tls]` against the listen address and the public URL. Reading the files is
    /// [`crate::tls`]'s job (at start, before anything else is opened).
    fn resolve(self, listen: SocketAddr, public_url: Option<&url::Url>) -> anyhow::Result<TlsMode> {
        if !(100..=60_000).contains(&self.reload_interval_ms) {
            bail!("tls.reload_interval_ms must be between 100 and 60000");
        }
        let mode = match (self.cert_file, self.key_file) {
            (Some(_), None) => bail!(
                "tls.cert_file is set but tls.key_file is not: set both (the certificate chain and its private key)"
            ),
            (None, Some(_)) => bail!(
                "tls.key_file is set but tls.cert_file is not: set both (the certificate chain and its private key)"
            ),
            (Some(cert_file), Some(key_file)) => {
                if self.behind_proxy {
                    bail!(
                        "tls.behind_proxy = true says a proxy in front of Warden terminates TLS, but tls.cert_file is set too: \
                         remove behind_proxy (Warden terminates TLS) or the certificate files (the proxy does)"
                    );
                }
                TlsMode::Terminate(TlsSettings {
                    cert_file,
                    key_file,
                    client_ca_file: self.client_ca_file,
                    reload_interval: Duration::from_millis(self.reload_interval_ms),
                })
            }
            (None, None) => {
                if self.client_ca_file.is_some() {
                    bail!(
                        "tls.client_ca_file needs tls.cert_file and tls.key_file: client certificates are requested \
                         only when Warden terminates TLS itself"
                    );
                }
                if self.behind_proxy {
                    TlsMode::BehindProxy
                } else {
                    TlsMode::Off
                }
            }
        };
        match (&mode, public_url) {
            (TlsMode::Off, _) if !listen.ip().is_loopback() => bail!(
                "refusing to listen on {listen} without TLS: API and task tokens would cross the network in clear. \
                 Either give Warden a certificate ([tls] cert_file and key_file), or, if a TLS-terminating proxy \
                 in front of Warden is the only way to reach it, set [tls] behind_proxy = true and public_url to \
                 the proxy's https:// URL, or listen on a loopback address (e.g. 127.0.0.1:{})",
                listen.port()
            ),
            (TlsMode::BehindProxy, None) => bail!(
                "tls.behind_proxy = true needs public_url: set it to the https:// URL clients reach the proxy at \
                 (it is the issuer of task tokens and the base of DPoP htu values)"
            ),
            (TlsMode::BehindProxy | TlsMode::Terminate(_), Some(u)) if u.scheme() != "https" => bail!(
                "public_url `{u}` must be an https:// URL: clients reach Warden over TLS{}",
                if matches!(mode, TlsMode::BehindProxy) {
                    " (tls.behind_proxy = true)"
                } else {
                    " (tls.cert_file is set)"
                }
            ),
            _ => Ok(mode),
        }
    }
}

/// The MCP gateway (`/mcp/{upstream}`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GatewayConfig {
    /// Largest JSON-RPC message, either direction, bytes. Default 4 MiB, between 1 KiB and 64 MiB.
    pub max_message_bytes: usize,
    /// Deepest nesting of a message. Default 64, between 8 and 127.
    pub max_depth: usize,
    /// How long an upstream may take to start answering (its response headers; for a stdio
    /// server, see `answer_timeout_ms`), ms. Default 30000, between 100 and 600000.
    pub upstream_timeout_ms: u64,
    /// Longest silence inside an answer once it started — between the chunks of a JSON answer or
    /// the bytes of an event stream answering a request (SSE comments count: servers use them to
    /// keep a long call alive), ms. Default 60000, between 100 and 3600000.
    pub idle_timeout_ms: u64,
    /// Longest a whole answer to one request may take, ms. Default 600000 (10 minutes: a tool that
    /// works longer should use MCP tasks, or progress and a higher limit), between 1000 and
    /// 86400000, at least `upstream_timeout_ms`.
    pub answer_timeout_ms: u64,
    /// Longest an agent's message (the body of its request to `/mcp`) may take to arrive, ms: `/mcp`
    /// is not under `http.request_timeout_secs`. Default 30000, between 100 and 600000.
    pub message_timeout_ms: u64,
    /// The state of a tool seen for the first time: `active` (trust on first use, the default) or
    /// `quarantined` (an admin approves every new tool with `warden tool approve`).
    pub new_tools: warden_core::ToolState,
    /// Secrets found in tool results: `redact` (default), `deny` or `pass` (findings are recorded
    /// either way). Secrets in arguments are for policy (`context.risk.secret_in_args`).
    pub results: ResultPolicy,
    /// `Origin`s allowed on `/mcp` besides Warden's own (`public_url`) and loopback ones, e.g.
    /// `["https://console.example.com"]`. Any other `Origin` is refused with 403 (DNS rebinding).
    pub allowed_origins: Vec<String>,
    /// `Host` names (with `:port` when not the default) allowed on `/mcp` besides the host of
    /// `public_url` and loopback names: the names a TLS proxy in front forwards. Any other `Host`
    /// is refused with 403.
    pub allowed_hosts: Vec<String>,
    /// The key that seals upstream secrets and MCP session ids (32 bytes, hex or base64). Default
    /// `<data dir>/gateway.key`, created 0600 on first start. `WARDEN_GATEWAY_KEY` overrides it.
    /// Every node of a deployment needs the same key.
    pub key_file: Option<PathBuf>,
    /// Your own secret-detection rules, beside the built-in ones.
    pub scan_rule: Vec<ScanRuleConfig>,
    /// `[[gateway.stdio]]`: stdio MCP servers Warden spawns for upstreams registered as
    /// `stdio://<name>` (one process per session; see `crate::gateway::stdio`).
    pub stdio: Vec<StdioConfig>,
}

/// `[[gateway.scan_rule]]`: a rule of your own for the secret scanner.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanRuleConfig {
    /// Names the rule in findings (`[REDACTED:<id>]`).
    pub id: String,
    /// A regular expression (Rust `regex` syntax: linear time, no look-around).
    pub regex: String,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        Self {
            max_message_bytes: 4 * 1024 * 1024,
            max_depth: 64,
            upstream_timeout_ms: 30_000,
            idle_timeout_ms: 60_000,
            answer_timeout_ms: 600_000,
            message_timeout_ms: 30_000,
            new_tools: warden_core::ToolState::Active,
            results: ResultPolicy::Redact,
            allowed_origins: Vec::new(),
            allowed_hosts: Vec::new(),
            key_file: None,
            scan_rule: Vec::new(),
            stdio: Vec::new(),
        }
    }
}

impl GatewayConfig {
    /// Checks the limits; the scanner rules are checked when they are compiled.
    pub fn validate(&self) -> anyhow::Result<()> {
        if !(1024..=64 * 1024 * 1024).contains(&self.max_message_bytes) {
            bail!("gateway.max_message_bytes must be between 1024 and 67108864");
        }
        if !(8..=127).contains(&self.max_depth) {
            bail!("gateway.max_depth must be between 8 and 127");
        }
        if !(100..=600_000).contains(&self.upstream_timeout_ms) {
            bail!("gateway.upstream_timeout_ms must be between 100 and 600000");
        }
        if !(100..=3_600_000).contains(&self.idle_timeout_ms) {
            bail!("gateway.idle_timeout_ms must be between 100 and 3600000");
        }
        if !(1_000..=86_400_000).contains(&self.answer_timeout_ms) {
            bail!("gateway.answer_timeout_ms must be between 1000 and 86400000");
        }
        if !(100..=600_000).contains(&self.message_timeout_ms) {
            bail!("gateway.message_timeout_ms must be between 100 and 600000");
        }
        if self.answer_timeout_ms < self.upstream_timeout_ms {
            bail!("gateway.answer_timeout_ms must be at least gateway.upstream_timeout_ms");
        }
        let mut seen = std::collections::HashSet::new();
        for (i, o) in self.allowed_origins.iter().enumerate() {
            match url::Url::parse(o) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                _ => bail!(
                    "gateway.allowed_origins[{i}]: `{}` is not an origin (scheme://host[:port])",
                    o.escape_debug()
                ),
            }
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            if h.is_empty() || h.contains(['/', ' ', '@']) {
                bail!(
                    "gateway.allowed_hosts[{i}]: `{}` is not a host name (host[:port])",
                    h.escape_debug()
                );
            }
        }
        for (i, s) in self.stdio.iter().enumerate() {
            s.validate(i)?;
            if !seen.insert(&s.upstream) {
                bail!(
                    "gateway.stdio[{i}]: upstream `{}` is configured twice",
                    s.upstream
                );
            }
        }
        Ok(())
    }
}

/// `[[gateway.stdio]]`: how to run the stdio MCP server behind upstream `stdio://<upstream>`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdioConfig {
    /// The registered upstream's name.
    pub upstream: String,
    /// The program and its arguments (no shell).
    pub command: Vec<String>,
    /// Extra environment variables (not secrets: those belong in `warden secret set --env`).
    #[serde(default)]
    pub env: HashMap<String, String>,
    /// The environment variables this upstream's secrets of kind `env` may be injected as. The
    /// API creates such a secret only for a name listed here, and a spawn injects only names listed
    /// here (a secret whose name is no longer listed is withheld, logged and recorded). Empty (the
    /// default): no secret reaches the process.
    #[serde(default)]
    pub allow_env: Vec<String>,
    /// Names on `allow_env` that make a program load or run other code (`NODE_OPTIONS`,
    /// `PYTHONPATH`, `LD_*`, `HOME`, …: `warden_core::gateway::env_var_loads_code`). Such a name on
    /// `allow_env` is a startup error unless it is listed here too: whoever holds an admin API
    /// token could otherwise run code on the Warden host.
    #[serde(default)]
    pub allow_code_loading_env: Vec<String>,
    /// Working directory. Default: the server's.
    pub cwd: Option<PathBuf>,
    /// Most live sessions (processes) at once. Default 16, between 1 and 1024.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A session without a message for this long is ended, seconds. Default 600.
    #[serde(default = "default_idle")]
    pub idle_secs: u64,
}

fn default_max_sessions() -> usize {
    16
}

fn default_idle() -> u64 {
    600
}

impl StdioConfig {
    pub fn validate(&self, i: usize) -> anyhow::Result<()> {
        if UpstreamName::parse(&self.upstream).is_err() {
            anyhow::bail!(
                "gateway.stdio[{i}]: upstream `{}` is not an upstream name",
                self.upstream.escape_debug()
            );
        }
        if self.command.is_empty() || self.command[0].is_empty() {
            anyhow::bail!(
                "gateway.stdio[{i}] (`{}`): command must name a program",
                self.upstream
            );
        }
        if !(1..=1024).contains(&self.max_sessions) {
            anyhow::bail!(
                "gateway.stdio[{i}] (`{}`): max_sessions must be between 1 and 1024",
                self.upstream
            );
        }
        if !(10..=86_400).contains(&self.idle_secs) {
            anyhow::bail!(
                "gateway.stdio[{i}] (`{}`): idle_secs must be between 10 and 86400",
                self.upstream
            );
        }
        for var in &self.allow_env {
            if let Err(e) = warden_core::SecretEnvVar::parse(var) {
                anyhow::bail!(
                    "gateway.stdio[{i}] (`{}`): allow_env `{}`: {}",
                    self.upstream,
                    var.escape_debug(),
                    e.message
                );
            }
            if warden_core::gateway::env_var_loads_code(var) && !self.allow_code_loading_env.contains(var) {
                anyhow::bail!(
                    "gateway.stdio[{i}] (`{}`): allow_env `{var}` makes the server load or run other code (an interpreter, loader or shell variable): a secret in it would run code as Warden's user. Remove it, or, if the server needs it, list it in allow_code_loading_env too",
                    self.upstream
                );
            }
        }
        for var in &self.allow_code_loading_env {
            if !self.allow_env.contains(var) {
                anyhow::bail!(
                    "gateway.stdio[{i}] (`{}`): allow_code_loading_env `{}` is not on allow_env",
                    self.upstream,
                    var.escape_debug()
                );
            }
        }
        Ok(())
    }

    /// Why a secret cannot be injected as environment variable `var` of this server's processes;
    /// `None` when it can.
    pub fn env_refusal(&self, var: &str) -> Option<String> {
        if !self.allow_env.iter().any(|v| v == var) {
            return Some(if self.allow_env.is_empty() {
                format!(
                    "environment variable `{var}` is not on the allow_env list of upstream `{}`'s [[gateway.stdio]] entry (the list is empty: no secret reaches its processes); the names a stdio server may receive are set in the configuration file",
                    self.upstream
                )
            } else {
                format!(
                    "environment variable `{var}` is not on the allow_env list of upstream `{}`'s [[gateway.stdio]] entry ({}); the names a stdio server may receive are set in the configuration file",
                    self.upstream,
                    self.allow_env.join(", ")
                )
            });
        }
        if warden_core::gateway::env_var_loads_code(var)
            && !self.allow_code_loading_env.iter().any(|v| v == var)
        {
            return Some(format!(
                "environment variable `{var}` makes the server load or run other code, and upstream `{}`'s [[gateway.stdio]] entry does not list it in allow_code_loading_env",
                self.upstream
            ));
        }
        None
    }
}

/// Limits for the HTTP layer.
#[derive(Clone, Copy, Debug)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    /// Larger bodies for policy uploads (`/v1/policies/*`).
    pub max_policy_bytes: usize,
    pub request_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_body_bytes: 64 * 1024,
            max_policy_bytes: 8 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
        }
    }
}

/// What happened to an approval request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ApprovalEventKind {
    Requested,
    Approved,
    Denied,
    Expired,
}

impl ApprovalEventKind {
    pub const ALL: [Self; 4] = [Self::Requested, Self::Approved, Self::Denied, Self::Expired];

    /// The `X-Warden-Event` header value, e.g. `approval.requested`.
    pub fn event_name(self) -> &'static str {
        match self {
            Self::Requested => "approval.requested",
            Self::Approved => "approval.approved",
            Self::Denied => "approval.denied",
            Self::Expired => "approval.expired",
        }
    }
}

/// Secrets in what an upstream answers (`gateway.results`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResultPolicy {
    /// Replace each found secret with `[REDACTED:<rule>]` and record where (the default).
    Redact,
    /// Replace the whole result with an error.
    Deny,
    /// Pass results unchanged (findings are still recorded).
    Pass,
}

/// Human approval gates.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApprovalConfig {
    /// How long an approval request may be decided, seconds. Default 3600, between 60 and 7 days.
    pub request_ttl_secs: u64,
    /// How long an approved request is a grant, seconds (never past its task's end). Default 900,
    /// between 10 and 86400.
    pub grant_ttl_secs: u64,
    /// A grant allows one action, then is spent. Default false (any number within its window).
    pub single_use: bool,
    /// How long the gateway holds an MCP client's retry of a call waiting for approval (the retry
    /// carrying the `requestState` of Warden's `InputRequiredResult`, after the user opened the
    /// approval) before answering "still waiting", seconds. Default 20, at most 25; 0 answers at once.
    pub in_protocol_wait_secs: u64,
}

impl Default for ApprovalConfig {
    fn default() -> Self {
        Self {
            request_ttl_secs: 3600,
            grant_ttl_secs: 900,
            single_use: false,
            in_protocol_wait_secs: 20,
        }
    }
}

/// Notifications to humans: webhooks called when an approval is requested or decided.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// `[[notify.webhook]]` entries. None: no notifications.
    pub webhook: Vec<WebhookConfig>,
}

/// One webhook (see [`crate::notify`] for the body, the headers and the signature).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// A unique name, for logs and the delivery status (letters, digits, `-`, `_`, `.`; at most 64).
    pub name: String,
    /// Where events are POSTed: an `http(s)` URL without credentials (`user:pass@` is refused). Some
    /// services (Slack) put a token in the path: treat this file accordingly.
    pub url: String,
    /// A file holding the HMAC-SHA256 signing key (at least 16 bytes; surrounding whitespace is
    /// trimmed). Required, and must not be readable by group or others (chmod 600).
    pub secret_file: Option<PathBuf>,
    /// Upstreams whose approval requests this webhook receives. Empty (the default): every request,
    /// including those not tied to an upstream.
    #[serde(default)]
    pub upstreams: Vec<String>,
    /// Which events: any of `requested`, `approved`, `denied`, `expired`. Default: all of them.
    #[serde(default = "all_approval_events")]
    pub events: Vec<ApprovalEventKind>,
    /// Attempts per event before it is counted as failed. Default 5, between 1 and 20.
    #[serde(default = "default_webhook_attempts")]
    pub max_attempts: u32,
    /// Timeout of one attempt, milliseconds. Default 5000, between 100 and 60000.
    #[serde(default = "default_webhook_timeout")]
    pub timeout_ms: u64,
}

fn all_approval_events() -> Vec<ApprovalEventKind> {
    ApprovalEventKind::ALL.to_vec()
}

fn default_webhook_attempts() -> u32 {
    5
}

fn default_webhook_timeout() -> u64 {
    5000
}

/// Longest webhook URL accepted.
const MAX_WEBHOOK_URL_LEN: usize = 2048;

/// Checks `[[notify.webhook]]` without touching the secret files (which [`crate::notify::Notifier::new`]
/// reads). Errors name the entry; they never echo a URL, which may hold credentials.
pub fn validate_webhooks(hooks: &[WebhookConfig]) -> anyhow::Result<()> {
    let mut names = std::collections::HashSet::new();
    for (i, h) in hooks.iter().enumerate() {
        if h.name.is_empty()
            || h.name.len() > 64
            || !h
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            bail!(
                "notify.webhook[{i}]: name `{}` must be 1 to 64 letters, digits, `-`, `_` or `.`",
                h.name.escape_debug()
            );
        }
        let at = format!("notify.webhook[{i}] (`{}`)", h.name);
        if !names.insert(h.name.as_str()) {
            bail!("{at}: duplicate name; webhook names must be unique");
        }
        if h.url.len() > MAX_WEBHOOK_URL_LEN {
            bail!("{at}: url is longer than {MAX_WEBHOOK_URL_LEN} bytes");
        }
        let Ok(u) = url::Url::parse(&h.url) else {
            bail!("{at}: url is not a valid URL");
        };
        if !u.username().is_empty() || u.password().is_some() {
            bail!(
                "{at}: url must not contain credentials (user:password@); the request is signed with \
                 the key in secret_file instead"
            );
        }
        if !matches!(u.scheme(), "http" | "https") || u.host().is_none() {
            bail!("{at}: url must be an http or https URL with a host");
        }
        if h.secret_file.is_none() {
            bail!(
                "{at}: secret_file is required (a file, mode 0600, holding the key deliveries are \
                 signed with); unsigned webhooks are refused"
            );
        }
        if h.events.is_empty() {
            bail!(
                "{at}: events is empty; list some of requested, approved, denied, expired, or omit it for all"
            );
        }
        if h.upstreams.iter().any(|u| u.trim().is_empty()) {
            bail!("{at}: upstreams must not contain an empty name");
        }
        if !(1..=20).contains(&h.max_attempts) {
            bail!("{at}: max_attempts must be between 1 and 20");
        }
        if !(100..=60_000).contains(&h.timeout_ms) {
            bail!("{at}: timeout_ms must be between 100 and 60000");
        }
    }
    Ok(())
}

/// The audit ledger: how entries are committed and checkpoints signed.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LedgerConfig {
    /// Sign checkpoints at least this often while entries arrive (and on shutdown), milliseconds.
    /// Default 1000, between 10 and 60000.
    pub checkpoint_interval_ms: u64,
    /// Most entries committed in one transaction (group commit). Default 1024, between 1 and 16384.
    pub max_batch: usize,
    /// Entries that may wait for the writer before callers are held back (backpressure, never drops).
    /// Default 65536.
    pub queue: usize,
    /// How long an action waits for its entry to become durable before it is denied, milliseconds.
    /// Default 5000.
    pub append_timeout_ms: u64,
    /// This node's checkpoint signing key (C2SP private key line, mode 0600). Default
    /// `<data-dir>/ledger.key`, created on first start.
    pub signing_key_file: Option<PathBuf>,
    /// The per-deployment key sensitive values are HMAC'd with (64 hex characters, mode 0600). Every
    /// node of a deployment must use the same file. Default `<data-dir>/ledger-redaction.key`,
    /// created on first start.
    pub redaction_key_file: Option<PathBuf>,
}

impl Default for LedgerConfig {
    fn default() -> Self {
        Self {
            checkpoint_interval_ms: 1000,
            max_batch: 1024,
            queue: 65_536,
            append_timeout_ms: 5000,
            signing_key_file: None,
            redaction_key_file: None,
        }
    }
}

/// Where the first policy set comes from.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    /// On a first start (no active policy set in the store), compile and activate the `.cedar` files of
    /// this directory. Unset: no set is active until `warden policy activate`, and every decision is
    /// deny.
    pub bootstrap_dir: Option<PathBuf>,
}

/// Lifetimes and limits of agent credentials.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TokenConfig {
    /// Lifetime of a task token, seconds. Default 300 (5 min), at most 3600.
    pub task_token_ttl_secs: u64,
    /// Longest a task may last (tokens are renewable until then), seconds. Default 3600, at most 86400.
    /// A task may ask for less.
    pub task_max_duration_secs: u64,
    /// Lifetime of an enrollment join token, seconds. Default 3600, at most 7 days.
    pub join_token_ttl_secs: u64,
    /// How deep delegation chains may go. Default 2.
    pub max_delegation_depth: u8,
    /// How long a rotated-out signing key still verifies, seconds. Default: the task token lifetime
    /// plus one minute, so no token signed before the rotation dies early.
    pub key_overlap_secs: Option<u64>,
    /// How long a node trusts its cached view of a task without asking the store, milliseconds. Revocations
    /// reach every node at once by event; this bounds staleness if an event is ever lost. Default 2000.
    pub revocation_cache_ttl_ms: u64,
    /// Sign with this key file instead of keys generated in `<data-dir>/keys` (e.g. a key provisioned
    /// by a secrets manager; mode 0600, format as written by Warden). Rotation is then done by replacing
    /// the file and restarting; `warden keys rotate` refuses.
    pub signing_key_file: Option<PathBuf>,
}

impl Default for TokenConfig {
    fn default() -> Self {
        Self {
            task_token_ttl_secs: 300,
            task_max_duration_secs: 3600,
            join_token_ttl_secs: 3600,
            max_delegation_depth: 2,
            key_overlap_secs: None,
            revocation_cache_ttl_ms: 2000,
            signing_key_file: None,
        }
    }
}

/// One trusted external issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FederationConfig {
    /// A name for logs and errors.
    pub name: String,
    /// `oidc` (an OpenID Connect issuer, e.g. Kubernetes service-account tokens) or `spiffe` (JWT-SVIDs
    /// of a SPIFFE trust domain).
    pub kind: warden_identity::FederationKind,
    /// For `oidc`: the exact `iss` of its tokens.
    pub issuer: Option<String>,
    /// For `spiffe`: the trust domain whose SPIFFE IDs (`sub`) are accepted.
    pub trust_domain: Option<String>,
    /// Accepted `aud` values; at least one.
    pub audiences: Vec<String>,
    /// Allowed signature algorithms, e.g. `["RS256", "ES256"]`. `none` and `HS*` are refused.
    pub algorithms: Vec<String>,
    /// The issuer's JWK Set, from a file…
    pub jwks_file: Option<PathBuf>,
    /// …or fetched from a URL at start and every `jwks_refresh_secs`.
    pub jwks_url: Option<String>,
    #[serde(default = "default_jwks_refresh")]
    pub jwks_refresh_secs: u64,
    /// The longest validity (`exp − iat`, seconds) accepted for this issuer's tokens: 1 to 86400,
    /// default 3600. Tokens without `iat`, or valid longer, are refused.
    #[serde(default = "default_federated_lifetime")]
    pub max_token_lifetime_secs: u64,
    /// The claim whose value names the agent (e.g. `sub`).
    pub claim: String,
    /// Claim value → registered agent name.
    pub mapping: std::collections::BTreeMap<String, String>,
}

fn default_jwks_refresh() -> u64 {
    300
}

fn default_federated_lifetime() -> u64 {
    warden_identity::DEFAULT_MAX_FEDERATED_LIFETIME_SECS
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8700".into(),
            data_dir: PathBuf::from("./warden-data"),
            trust_domain: TrustDomain::default(),
            database: DatabaseConfig::default(),
            log: LogConfig::default(),
            http: HttpConfig::default(),
            bootstrap: BootstrapConfig::default(),
            public_url: None,
            tokens: TokenConfig::default(),
            federation: Vec::new(),
            policy: PolicyConfig::default(),
            ledger: LedgerConfig::default(),
            approvals: ApprovalConfig::default(),
            notify: NotifyConfig::default(),
            gateway: GatewayConfig::default(),
            tls: TlsConfig::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    /// `postgres://…` without a password, or `sqlite:…`. Unset: SQLite in the data directory.
    pub url: Option<String>,
    /// A file holding the database URL (may include a password).
    pub url_file: Option<PathBuf>,
    /// How long a request waits for a database connection before it is answered 503 (so a database
    /// that is down is refused in about this long, not in the 5–10 s of a connect retry loop).
    /// SQLite's single writer waits at least 5 s: its queue is this process's own writes.
    pub acquire_timeout_ms: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `pretty` (human) or `json` (one object per line, for log shippers).
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `warden_server=debug,info`. `RUST_LOG` overrides it.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            format: LogFormat::Pretty,
            level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Largest request body, bytes. Default 64 KiB.
    pub max_body_bytes: usize,
    /// Largest policy upload (`/v1/policies/*`), bytes. Default 8 MiB.
    pub max_policy_bytes: usize,
    /// Per-request timeout, seconds. Default 30.
    pub request_timeout_secs: u64,
}

impl Default for HttpConfig {
    fn default() -> Self {
        let d = HttpLimits::default();
        Self {
            max_body_bytes: d.max_body_bytes,
            max_policy_bytes: d.max_policy_bytes,
            request_timeout_secs: d.request_timeout.as_secs(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BootstrapConfig {
    /// Email of the admin created on first start, when the store has no human yet.
    pub admin_email: Email,
}

impl Default for BootstrapConfig {
    fn default() -> Self {
        #[expect(clippy::expect_used, reason = "a constant that the unit tests parse")]
        let admin_email = Email::parse("admin@warden.local").expect("valid constant");
        Self { admin_email }
    }
}

/// What the command line may override.
#[derive(Debug, Default, Clone)]
pub struct ServeOptions {
    pub config: Option<PathBuf>,
    pub data_dir: Option<PathBuf>,
    pub listen: Option<String>,
    /// A database URL from the command line: refused if it carries a password.
    pub database: Option<String>,
}

/// Where the store lives, resolved.
#[derive(Debug)]
pub enum DatabaseTarget {
    /// `<data-dir>/warden.db`.
    EmbeddedSqlite(PathBuf),
    /// A URL (possibly holding a password, hence secret).
    Url(Secret<String>),
}

/// The configuration after flags, env and file are merged and checked.
#[derive(Debug)]
pub struct Resolved {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    pub trust_domain: TrustDomain,
    pub database: DatabaseTarget,
    pub log: LogConfig,
    pub limits: HttpLimits,
    pub admin_email: Email,
    /// `None`: derived from the bound address once listening.
    pub public_url: Option<url::Url>,
    pub tokens: TokenConfig,
    pub federation: Vec<FederationConfig>,
    pub policy_bootstrap_dir: Option<PathBuf>,
    pub ledger: LedgerConfig,
    pub approvals: ApprovalConfig,
    /// Checked by [`validate_webhooks`]; the secret files are read by [`crate::notify::Notifier::new`].
    pub notify: NotifyConfig,
    pub gateway: GatewayConfig,
    /// `[database]` options for opening the store.
    pub store_options: warden_store::StoreOptions,
    /// Who protects tokens on the wire.
    pub tls: TlsMode,
}

impl Config {
    /// Reads and parses a config file; errors name the file and the key.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let meta =
            std::fs::metadata(path).with_context(|| format!("cannot read config file {}", path.display()))?;
        if meta.len() > MAX_CONFIG_BYTES {
            bail!(
                "config file {} is larger than {} bytes",
                path.display(),
                MAX_CONFIG_BYTES
            );
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("invalid config file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        Ok(toml::from_str(text)?)
    }

    /// Merges command-line options and the environment, and checks every value.
    pub fn resolve(self, opts: &ServeOptions, env_database_url: Option<String>) -> anyhow::Result<Resolved> {
        let listen_raw = opts.listen.clone().unwrap_or(self.listen);
        let listen: SocketAddr = listen_raw.parse().with_context(|| {
            format!("listen address `{listen_raw}` is not an IP:port (e.g. 127.0.0.1:8700)")
        })?;
        let data_dir = opts.data_dir.clone().unwrap_or(self.data_dir);
        let database = if let Some(url) = &opts.database {
            refuse_inline_password(url, "--database")?;
            DatabaseTarget::Url(Secret::new(url.clone()))
        } else if let Some(url) = env_database_url.filter(|u| !u.is_empty()) {
            DatabaseTarget::Url(Secret::new(url))
        } else if let Some(file) = &self.database.url_file {
            let url = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read database.url_file {}", file.display()))?;
            DatabaseTarget::Url(Secret::new(url.trim().to_owned()))
        } else if let Some(url) = &self.database.url {
            refuse_inline_password(url, "database.url")?;
            DatabaseTarget::Url(Secret::new(url.clone()))
        } else {
            DatabaseTarget::EmbeddedSqlite(data_dir.join("warden.db"))
        };
        let acquire_ms = self.database.acquire_timeout_ms.unwrap_or(1_000);
        if !(50..=60_000).contains(&acquire_ms) {
            bail!("database.acquire_timeout_ms must be between 50 and 60000");
        }
        let store_options = warden_store::StoreOptions {
            acquire_timeout: std::time::Duration::from_millis(acquire_ms),
            ..Default::default()
        };
        if self.http.max_body_bytes == 0 || self.http.max_body_bytes > MAX_BODY_LIMIT {
            bail!("http.max_body_bytes must be between 1 and {MAX_BODY_LIMIT}");
        }
        if self.http.max_policy_bytes == 0 || self.http.max_policy_bytes > 4 * MAX_BODY_LIMIT {
            bail!(
                "http.max_policy_bytes must be between 1 and {}",
                4 * MAX_BODY_LIMIT
            );
        }
        if self.http.request_timeout_secs == 0 || self.http.request_timeout_secs > MAX_REQUEST_TIMEOUT_SECS {
            bail!("http.request_timeout_secs must be between 1 and {MAX_REQUEST_TIMEOUT_SECS}");
        }
        let public_url = match self.public_url {
            None => None,
            Some(raw) => {
                let u = url::Url::parse(&raw).with_context(|| format!("public_url `{raw}` is not a URL"))?;
                if !matches!(u.scheme(), "http" | "https") || u.host().is_none() || u.query().is_some() {
                    bail!("public_url `{raw}` must be an http(s) URL with a host and no query");
                }
                Some(u)
            }
        };
        let tls = self.tls.resolve(listen, public_url.as_ref())?;
        let t = &self.tokens;
        let a = &self.approvals;
        if !(60..=7 * 86_400).contains(&a.request_ttl_secs) {
            bail!("approvals.request_ttl_secs must be between 60 and 604800");
        }
        if !(10..=86_400).contains(&a.grant_ttl_secs) {
            bail!("approvals.grant_ttl_secs must be between 10 and 86400");
        }
        if a.in_protocol_wait_secs > 25 {
            bail!("approvals.in_protocol_wait_secs must be at most 25");
        }
        let l = &self.ledger;
        if !(10..=60_000).contains(&l.checkpoint_interval_ms) {
            bail!("ledger.checkpoint_interval_ms must be between 10 and 60000");
        }
        if !(1..=16_384).contains(&l.max_batch) {
            bail!("ledger.max_batch must be between 1 and 16384");
        }
        if !(1..=1 << 24).contains(&l.queue) {
            bail!("ledger.queue must be between 1 and 16777216");
        }
        if !(1..=600_000).contains(&l.append_timeout_ms) {
            bail!("ledger.append_timeout_ms must be between 1 and 600000");
        }
        if !(1..=3600).contains(&t.task_token_ttl_secs) {
            bail!("tokens.task_token_ttl_secs must be between 1 and 3600");
        }
        if !(1..=86_400).contains(&t.task_max_duration_secs) {
            bail!("tokens.task_max_duration_secs must be between 1 and 86400");
        }
        if !(60..=7 * 86_400).contains(&t.join_token_ttl_secs) {
            bail!("tokens.join_token_ttl_secs must be between 60 and 604800");
        }
        if t.max_delegation_depth > 8 {
            bail!("tokens.max_delegation_depth must be at most 8");
        }
        if !(100..=60_000).contains(&t.revocation_cache_ttl_ms) {
            bail!("tokens.revocation_cache_ttl_ms must be between 100 and 60000");
        }
        for (i, f) in self.federation.iter().enumerate() {
            if f.jwks_file.is_some() == f.jwks_url.is_some() {
                bail!(
                    "federation[{i}] (`{}`): set exactly one of jwks_file and jwks_url",
                    f.name
                );
            }
            if !(1..=warden_identity::MAX_FEDERATED_LIFETIME_SECS).contains(&f.max_token_lifetime_secs) {
                bail!(
                    "federation[{i}] (`{}`): max_token_lifetime_secs must be between 1 and {}",
                    f.name,
                    warden_identity::MAX_FEDERATED_LIFETIME_SECS
                );
            }
        }
        validate_webhooks(&self.notify.webhook)?;
        self.gateway.validate()?;
        Ok(Resolved {
            tls,
            gateway: self.gateway,
            store_options,
            public_url,
            notify: self.notify,
            policy_bootstrap_dir: self.policy.bootstrap_dir,
            ledger: self.ledger,
            approvals: self.approvals,
            tokens: self.tokens,
            federation: self.federation,
            listen,
            data_dir,
            trust_domain: self.trust_domain,
            database,
            log: self.log,
            limits: HttpLimits {
                max_body_bytes: self.http.max_body_bytes,
                max_policy_bytes: self.http.max_policy_bytes,
                request_timeout: Duration::from_secs(self.http.request_timeout_secs),
            },
            admin_email: self.bootstrap.admin_email,
        })
    }
}

/// A URL with a password in argv or a config file is a leaked secret: refuse it, and say where it goes.
fn refuse_inline_password(url: &str, source: &str) -> anyhow::Result<()> {
    let has_password = match url::Url::parse(url) {
        Ok(u) => u.password().is_some() || u.query_pairs().any(|(k, _)| k.eq_ignore_ascii_case("password")),
        // Unparseable: let the store report it, but still refuse an obvious `user:pass@`.
        Err(_) => url
            .split("://")
            .nth(1)
            .and_then(|r| r.split('@').next())
            .is_some_and(|u| u.contains(':')),
    };
    if has_password {
        bail!(
            "{source} must not contain a password (it would be visible to other users and in logs); \
             put the URL in the WARDEN_DATABASE_URL environment variable or in a file named by database.url_file"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_safe() {
        let r = Config::default()
            .resolve(&ServeOptions::default(), None)
            .expect("defaults resolve");
        assert_eq!(r.listen.to_string(), "127.0.0.1:8700");
        assert_eq!(r.data_dir, PathBuf::from("./warden-data"));
        assert!(matches!(r.database, DatabaseTarget::EmbeddedSqlite(ref p) if p.ends_with("warden.db")));
        assert_eq!(r.limits.max_body_bytes, 64 * 1024);
        assert_eq!(r.trust_domain.as_str(), "warden.local");
        assert_eq!(r.admin_email.as_str(), "admin@warden.local");
    }

    #[test]
    fn precedence_flag_env_file() {
        let cfg = || {
            Config::parse("listen = \"127.0.0.1:9000\"\n[database]\nurl = \"postgres://app@db/warden\"\n")
                .expect("parses")
        };
        let r = cfg().resolve(&ServeOptions::default(), None).expect("ok");
        assert_eq!(r.listen.port(), 9000);
        assert!(matches!(&r.database, DatabaseTarget::Url(u) if u.expose() == "postgres://app@db/warden"));
        let r = cfg()
            .resolve(&ServeOptions::default(), Some("postgres://x:secret@db/w".into()))
            .expect("ok");
        assert!(
            matches!(&r.database, DatabaseTarget::Url(u) if u.expose().contains("secret")),
            "env beats the file"
        );
        let opts = ServeOptions {
            database: Some("postgres://cli@db/w".into()),
            listen: Some("127.0.0.1:0".into()),
            ..Default::default()
        };
        let r = cfg()
            .resolve(&opts, Some("postgres://env@db/w".into()))
            .expect("ok");
        assert!(
            matches!(&r.database, DatabaseTarget::Url(u) if u.expose() == "postgres://cli@db/w"),
            "flag beats env"
        );
        assert_eq!(r.listen.port(), 0);
        assert!(
            !format!("{r:?}").contains("cli@db"),
            "database URL is redacted in Debug"
        );
    }

    #[test]
    fn passwords_on_the_command_line_are_refused() {
        for url in ["postgres://u:hunter2@db/w", "postgres://u@db/w?password=hunter2"] {
            let opts = ServeOptions {
                database: Some(url.into()),
                ..Default::default()
            };
            let err = Config::default().resolve(&opts, None).expect_err("refused");
            let msg = format!("{err:#}");
            assert!(msg.contains("--database must not contain a password"), "{msg}");
            assert!(
                !msg.contains("hunter2"),
                "the error must not echo the secret: {msg}"
            );
        }
        let cfg = Config::parse("[database]\nurl = \"postgres://u:hunter2@db/w\"\n").expect("parses");
        let err = cfg.resolve(&ServeOptions::default(), None).expect_err("refused");
        assert!(format!("{err:#}").contains("database.url must not contain a password"));
    }

    #[test]
    fn bad_config_is_precise() {
        let err = Config::parse("listn = \"x\"").expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `listn`"), "{err}");
        let err = Config::parse("trust_domain = \"Bad Domain\"").expect_err("bad domain");
        assert!(err.to_string().contains("trust domain"), "{err}");
        let err = Config::parse("[log]\nformat = \"xml\"").expect_err("bad format");
        assert!(err.to_string().contains("unknown variant `xml`"), "{err}");
        let err = Config::parse("[http]\nmax_body_bytes = 0")
            .expect("parses")
            .resolve(&ServeOptions::default(), None)
            .expect_err("zero limit");
        assert!(err.to_string().contains("max_body_bytes"), "{err}");
        let opts = ServeOptions {
            listen: Some("localhost:80".into()),
            ..Default::default()
        };
        let err = Config::default().resolve(&opts, None).expect_err("not an ip");
        assert!(format!("{err:#}").contains("not an IP:port"), "{err:#}");
    }

    fn notify_resolve(toml: &str) -> anyhow::Result<Resolved> {
        Config::parse(toml)?.resolve(&ServeOptions::default(), None)
    }

    #[test]
    fn ledger_and_approval_limits_are_checked() {
        for (toml, want) in [
            ("[ledger]\nmax_batch = 0\n", "ledger.max_batch"),
            (
                "[ledger]\ncheckpoint_interval_ms = 5\n",
                "ledger.checkpoint_interval_ms",
            ),
            ("[ledger]\nqueue = 0\n", "ledger.queue"),
            ("[ledger]\nappend_timeout_ms = 0\n", "ledger.append_timeout_ms"),
            (
                "[approvals]\nrequest_ttl_secs = 10\n",
                "approvals.request_ttl_secs",
            ),
            (
                "[approvals]\ngrant_ttl_secs = 90000\n",
                "approvals.grant_ttl_secs",
            ),
            (
                "[approvals]\nin_protocol_wait_secs = 26\n",
                "approvals.in_protocol_wait_secs",
            ),
        ] {
            let err = notify_resolve(toml).expect_err(toml).to_string();
            assert!(err.contains(want), "{toml}: {err}");
        }
        let err = Config::parse("[approvals]\nsingle_use = \"yes\"\n").expect_err("a string");
        assert!(err.to_string().contains("single_use"), "{err}");
        let r = notify_resolve("").expect("defaults");
        assert_eq!((r.ledger.max_batch, r.approvals.grant_ttl_secs), (1024, 900));
    }

    #[test]
    fn notify_webhook_defaults() {
        let r = notify_resolve(
            "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\nsecret_file = \"/k\"\n",
        )
        .expect("resolves");
        let h = &r.notify.webhook[0];
        assert_eq!(h.events, ApprovalEventKind::ALL.to_vec());
        assert!(h.upstreams.is_empty());
        assert_eq!((h.max_attempts, h.timeout_ms), (5, 5000));
        assert!(Config::default().notify.webhook.is_empty());
    }

    #[test]
    fn notify_config_errors_are_precise() {
        let hook = |extra: &str| {
            format!(
                "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://hooks.example.com/x\"\nsecret_file = \"/k\"\n{extra}"
            )
        };
        let cases: &[(String, &str)] = &[
            (
                "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://u:hunter2@hooks.example.com/\"\nsecret_file = \"/k\"\n".into(),
                "notify.webhook[0] (`ops`): url must not contain credentials",
            ),
            (
                "[[notify.webhook]]\nname = \"ops\"\nurl = \"https://hooks.example.com/\"\n".into(),
                "notify.webhook[0] (`ops`): secret_file is required",
            ),
            (
                format!("{}{}", hook(""), hook("").replace("https://hooks", "https://other")),
                "notify.webhook[1] (`ops`): duplicate name",
            ),
            (
                "[[notify.webhook]]\nname = \"ops\"\nurl = \"ftp://hooks.example.com/\"\nsecret_file = \"/k\"\n".into(),
                "notify.webhook[0] (`ops`): url must be an http or https URL",
            ),
            (hook("events = []"), "notify.webhook[0] (`ops`): events is empty"),
            (hook("max_attempts = 0"), "max_attempts must be between 1 and 20"),
            (hook("timeout_ms = 10"), "timeout_ms must be between 100 and 60000"),
            (hook("upstreams = [\"\"]"), "upstreams must not contain an empty name"),
            (
                hook("").replace("\"ops\"", "\"a b\""),
                "notify.webhook[0]: name `a b` must be 1 to 64",
            ),
        ];
        for (toml, want) in cases {
            let err = notify_resolve(toml).expect_err(want);
            let msg = format!("{err:#}");
            assert!(msg.contains(want), "want `{want}`, got: {msg}");
            assert!(
                !msg.contains("hunter2"),
                "the error must not echo the secret: {msg}"
            );
        }
        let err = Config::parse(&hook("events = [\"approved\", \"escalated\"]")).expect_err("unknown event");
        assert!(
            err.to_string().contains(
                "unknown variant `escalated`, expected one of `requested`, `approved`, `denied`, `expired`"
            ),
            "{err}"
        );
        let err = Config::parse(&hook("secret = \"x\"")).expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `secret`"), "{err}");
    }

    fn resolve_with(toml: &str, listen: &str) -> anyhow::Result<Resolved> {
        let opts = ServeOptions {
            listen: Some(listen.into()),
            ..Default::default()
        };
        Config::parse(toml)?.resolve(&opts, None)
    }

    #[test]
    fn tls_modes_resolve() {
        let r = resolve_with("", "127.0.0.1:0").expect("loopback without TLS");
        assert!(matches!(r.tls, TlsMode::Off));
        let r = resolve_with("", "[::1]:0").expect("IPv6 loopback without TLS");
        assert!(matches!(r.tls, TlsMode::Off));
        let r = resolve_with(
            "[tls]\ncert_file = \"/c.pem\"\nkey_file = \"/k.pem\"\nclient_ca_file = \"/ca.pem\"\n",
            "0.0.0.0:8443",
        )
        .expect("TLS on any address");
        let TlsMode::Terminate(t) = r.tls else {
            panic!("terminates TLS")
        };
        assert_eq!(t.cert_file, PathBuf::from("/c.pem"));
        assert_eq!(t.client_ca_file, Some(PathBuf::from("/ca.pem")));
        assert_eq!(t.reload_interval, Duration::from_secs(1));
        let r = resolve_with(
            "public_url = \"https://warden.example.com\"\n[tls]\nbehind_proxy = true\n",
            "0.0.0.0:8700",
        )
        .expect("behind a proxy");
        assert!(matches!(r.tls, TlsMode::BehindProxy));
    }

    #[test]
    fn no_bearer_token_in_clear_on_a_network() {
        for listen in ["0.0.0.0:8700", "10.1.2.3:8700", "[::]:8700"] {
            let err = format!("{:#}", resolve_with("", listen).expect_err(listen));
            assert!(
                err.contains(&format!("refusing to listen on {listen} without TLS"))
                    && err.contains("[tls] cert_file and key_file")
                    && err.contains("[tls] behind_proxy = true")
                    && err.contains("loopback address"),
                "{err}"
            );
        }
    }

    #[test]
    fn tls_config_errors_are_precise() {
        let cases = [
            (
                "[tls]\ncert_file = \"/c.pem\"\n",
                "tls.cert_file is set but tls.key_file is not",
            ),
            (
                "[tls]\nkey_file = \"/k.pem\"\n",
                "tls.key_file is set but tls.cert_file is not",
            ),
            (
                "[tls]\nclient_ca_file = \"/ca.pem\"\n",
                "tls.client_ca_file needs tls.cert_file and tls.key_file",
            ),
            (
                "[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\nbehind_proxy = true\n",
                "tls.behind_proxy = true says a proxy in front of Warden terminates TLS, but tls.cert_file is set too",
            ),
            (
                "[tls]\nbehind_proxy = true\n",
                "tls.behind_proxy = true needs public_url",
            ),
            (
                "public_url = \"http://w.example.com\"\n[tls]\nbehind_proxy = true\n",
                "public_url `http://w.example.com/` must be an https:// URL",
            ),
            (
                "public_url = \"http://w.example.com\"\n[tls]\ncert_file = \"/c\"\nkey_file = \"/k\"\n",
                "must be an https:// URL: clients reach Warden over TLS (tls.cert_file is set)",
            ),
            (
                "[tls]\nreload_interval_ms = 5\n",
                "tls.reload_interval_ms must be between 100 and 60000",
            ),
        ];
        for (toml, want) in cases {
            let err = format!("{:#}", resolve_with(toml, "127.0.0.1:0").expect_err(toml));
            assert!(err.contains(want), "{toml}: want `{want}`, got: {err}");
        }
        let err = Config::parse("[tls]\ncert = \"/c\"\n").expect_err("unknown key");
        assert!(err.to_string().contains("unknown field `cert`"), "{err}");
    }

    #[test]
    fn example_config_parses() {
        let text = include_str!("../../../examples/quickstart.toml");
        Config::parse(text)
            .expect("examples/quickstart.toml is valid")
            .resolve(&ServeOptions::default(), None)
            .expect("resolves");
    }
}
