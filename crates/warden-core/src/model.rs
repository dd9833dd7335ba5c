//! Registry records and the requests that create or change them.
//!
//! Request types (`AgentRegistration`, `AgentUpdate`, `NewUpstream`, `NewHuman`, `NewApiToken`) are what
//! the API accepts; their fields are already-validated newtypes and enums, so deserializing one *is*
//! validating it, and serde reports the exact field that was wrong. Records (`Agent`, `Upstream`, `Human`,
//! `ApiTokenInfo`) are what the store returns.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{AgentName, Email, UpstreamName, ValidationError};

/// Longest free-text description we store.
pub const MAX_DESCRIPTION_LEN: usize = 2_000;
/// Most owners an agent may have, allowed upstreams it may list, roles a human may hold.
pub const MAX_LIST_LEN: usize = 64;

/// Declares a string enum with its wire names, `FromStr` with an error listing the choices, `Display`,
/// and `as_str`. One definition keeps the API, the database and the CLI spelling identical.
macro_rules! wire_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal { $($(#[$vdoc:meta])* $variant:ident = $wire:literal),+ $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vdoc])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $wire),+ }
            }
        }

        impl FromStr for $name {
            type Err = ValidationError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($wire => Ok($name::$variant),)+
                    _ => Err(ValidationError::new($what, format!(
                        "unknown {} `{}`; expected one of {}",
                        $what,
                        s.escape_debug(),
                        [$(concat!("`", $wire, "`")),+].join(", ")
                    ))),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

/// Other modules of this crate declare their wire enums with the same macro.
pub(crate) use wire_enum;

wire_enum!(
    /// Where an agent or upstream runs. Ordered: a prototype is less trusted than production.
    Environment, "environment" {
        Prototype = "prototype",
        Staging = "staging",
        Production = "production",
    }
);

wire_enum!(
    /// An agent's lifecycle state. Only `active` agents may obtain credentials (later issues).
    AgentState, "state" {
        /// Registered or changed (model, environment) and waiting for an admin to activate it.
        PendingReview = "pending_review",
        Active = "active",
        Suspended = "suspended",
        /// Terminal. Kept for audit, never deleted, its name never reused.
        Retired = "retired",
    }
);

wire_enum!(
    /// The protocol Warden speaks to an upstream.
    UpstreamKind, "kind" {
        Mcp = "mcp",
        Http = "http",
        Postgres = "postgres",
    }
);

wire_enum!(
    /// The most sensitive data an upstream holds.
    Sensitivity, "sensitivity" {
        Public = "public",
        Internal = "internal",
        Confidential = "confidential",
        Regulated = "regulated",
    }
);

wire_enum!(
    /// A task's state. An `active` task past its `expires_at` is expired: it is reported as `active`
    /// in the record but no credential for it verifies.
    TaskState, "state" {
        Active = "active",
        /// Ended by the agent or an admin.
        Ended = "ended",
        /// Killed because of something else: its agent was suspended, retired or changed, its parent
        /// task ended, its agent's last owner left.
        Revoked = "revoked",
    }
);

/// An agent's model: `provider/name@version`, e.g. `anthropic/claude-sonnet@4.5`. A change of model is a
/// change of identity as far as risk goes, so the agent goes back to review (see [`AgentState`]).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Model {
    provider: String,
    name: String,
    version: String,
}

impl Model {
    pub const MAX_LEN: usize = 200;

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let err = |m: String| ValidationError::new("model", m);
        let shown = value.escape_debug();
        if value.len() > Self::MAX_LEN {
            return Err(err(format!(
                "model is {} characters long; the limit is {}",
                value.len(),
                Self::MAX_LEN
            )));
        }
        let Some((provider, rest)) = value.split_once('/') else {
            return Err(err(format!(
                "model `{shown}` must look like `provider/name@version`"
            )));
        };
        let Some((name, version)) = rest.rsplit_once('@') else {
            return Err(err(format!("model `{shown}` has no `@version`")));
        };
        let part_ok =
            |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c));
        for (part, what) in [(provider, "provider"), (name, "name"), (version, "version")] {
            if !part_ok(part) {
                return Err(err(format!(
                    "model `{shown}` has an invalid {what} `{}`; use letters, digits, `-`, `.`, `_` and `:`",
                    part.escape_debug()
                )));
            }
        }
        Ok(Self {
            provider: provider.into(),
            name: name.into(),
            version: version.into(),
        })
    }

    pub fn provider(&self) -> &str {
        &self.provider
    }
    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn version(&self) -> &str {
        &self.version
    }
}

impl utoipa::PartialSchema for Model {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("`provider/name@version`"))
            .examples(["anthropic/claude-sonnet@4.5"])
            .into()
    }
}

impl ToSchema for Model {}

impl TryFrom<String> for Model {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Model> for String {
    fn from(m: Model) -> String {
        m.to_string()
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.provider, self.name, self.version)
    }
}

impl fmt::Debug for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{self}\"")
    }
}

impl FromStr for Model {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Free text a human wrote. Bounded, and free of control characters other than newline and tab, so it
/// cannot forge log lines or terminal escapes when printed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String)]
pub struct Description(String);

impl Description {
    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        if value.len() > MAX_DESCRIPTION_LEN {
            return Err(ValidationError::new(
                "description",
                format!(
                    "description is {} bytes long; the limit is {MAX_DESCRIPTION_LEN}",
                    value.len()
                ),
            ));
        }
        if value.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
            return Err(ValidationError::new(
                "description",
                "description contains a control character",
            ));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Description {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<Description> for String {
    fn from(d: Description) -> String {
        d.0
    }
}

/// A display name: like a description, but short and single-line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "Alice Example")]
pub struct DisplayName(String);

impl DisplayName {
    pub const MAX_LEN: usize = 200;

    pub fn parse(value: &str) -> Result<Self, ValidationError> {
        let err = |m: String| ValidationError::new("display_name", m);
        if value.trim().is_empty() {
            return Err(err("display name must not be empty".into()));
        }
        if value.len() > Self::MAX_LEN {
            return Err(err(format!(
                "display name is {} bytes long; the limit is {}",
                value.len(),
                Self::MAX_LEN
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(err("display name contains a control character".into()));
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for DisplayName {
    type Error = ValidationError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<DisplayName> for String {
    fn from(d: DisplayName) -> String {
        d.0
    }
}

/// Checks a list for emptiness, length and duplicates, naming the offending index.
pub fn check_list<T: PartialEq + fmt::Display>(
    field: &str,
    items: &[T],
    allow_empty: bool,
) -> Result<(), ValidationError> {
    if !allow_empty && items.is_empty() {
        return Err(ValidationError::new(
            field,
            format!("{field} must list at least one entry"),
        ));
    }
    if items.len() > MAX_LIST_LEN {
        return Err(ValidationError::new(
            field,
            format!(
                "{field} lists {} entries; the limit is {MAX_LIST_LEN}",
                items.len()
            ),
        ));
    }
    for (i, item) in items.iter().enumerate() {
        if items[..i].contains(item) {
            return Err(ValidationError::new(
                format!("{field}[{i}]"),
                format!("`{item}` is listed twice"),
            ));
        }
    }
    Ok(())
}

/// A request to register an agent.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentRegistration {
    pub name: AgentName,
    /// Emails of registered humans accountable for this agent; at least one.
    pub owners: Vec<Email>,
    pub environment: Environment,
    pub model: Model,
    #[serde(default)]
    pub description: Description,
    /// Upstreams this agent may reach (each must be registered).
    #[serde(default)]
    pub allowed_upstreams: Vec<UpstreamName>,
}

impl AgentRegistration {
    /// Checks the rules serde cannot express (list sizes, duplicates).
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_list("owners", &self.owners, false)?;
        check_list("allowed_upstreams", &self.allowed_upstreams, true)
    }
}

/// A partial update of an agent: absent fields stay as they are; lists are replaced whole.
#[derive(Clone, Debug, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AgentUpdate {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owners: Option<Vec<Email>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<Model>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<Description>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_upstreams: Option<Vec<UpstreamName>>,
    /// The intent a task started by OAuth client credentials gets when the agent asks for none
    /// (RFC 9396 `authorization_details`: an array with one `warden_task` object); `null` removes
    /// it. The API parses it with the token endpoint's own intent parser before it is stored, and
    /// stores it in that parser's canonical form.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "present_or_null"
    )]
    #[schema(value_type = Option<Object>)]
    pub default_intent: Option<serde_json::Value>,
}

/// A member that is present: `Some(value)`, `Some(Value::Null)` for an explicit `null` (absent
/// members are `None` through `#[serde(default)]`).
fn present_or_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    serde_json::Value::deserialize(d).map(Some)
}

/// Largest default intent an agent may carry (the token endpoint's limit for `authorization_details`).
pub const MAX_DEFAULT_INTENT_BYTES: usize = 16 * 1024;

impl AgentUpdate {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if let Some(owners) = &self.owners {
            check_list("owners", owners, false)?;
        }
        if let Some(ups) = &self.allowed_upstreams {
            check_list("allowed_upstreams", ups, true)?;
        }
        match &self.default_intent {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::Array(items)) if items.len() == 1 => {
                if self
                    .default_intent
                    .as_ref()
                    .is_some_and(|v| v.to_string().len() > MAX_DEFAULT_INTENT_BYTES)
                {
                    return Err(ValidationError::new(
                        "default_intent",
                        format!("is larger than {MAX_DEFAULT_INTENT_BYTES} bytes"),
                    ));
                }
            }
            Some(_) => {
                return Err(ValidationError::new(
                    "default_intent",
                    "must be an authorization_details array holding one `warden_task` object, or null to remove it",
                ));
            }
        }
        if self.owners.is_none()
            && self.environment.is_none()
            && self.model.is_none()
            && self.description.is_none()
            && self.allowed_upstreams.is_none()
            && self.default_intent.is_none()
        {
            return Err(ValidationError::new(
                "",
                "the update changes nothing; name at least one field",
            ));
        }
        Ok(())
    }
}

/// A registered agent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Agent {
    pub id: Uuid,
    pub name: AgentName,
    /// `spiffe://<trust-domain>/agent/<name>`, fixed at registration.
    pub spiffe_id: String,
    pub owners: Vec<Email>,
    pub environment: Environment,
    pub model: Model,
    pub description: Description,
    pub allowed_upstreams: Vec<UpstreamName>,
    pub state: AgentState,
    pub state_changed_at: DateTime<Utc>,
    /// Who moved the agent into its current state (a human's email, or `system`).
    pub state_changed_by: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
    pub updated_by: String,
    /// The intent of a task started by OAuth client credentials without one (RFC 9396
    /// `authorization_details`), if the agent has one (`agent update --default-intent`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub default_intent: Option<serde_json::Value>,
}

/// One entry of an agent's lifecycle history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentStateChange {
    /// `None` for the registration itself.
    pub from: Option<AgentState>,
    pub to: AgentState,
    pub at: DateTime<Utc>,
    pub by: String,
    pub reason: String,
}

/// An agent with its lifecycle history, as `agent show` presents it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub agent: Agent,
    pub history: Vec<AgentStateChange>,
}

/// A lifecycle command an admin issues.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleAction {
    Activate,
    Suspend,
    Retire,
}

impl LifecycleAction {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleAction::Activate => "activate",
            LifecycleAction::Suspend => "suspend",
            LifecycleAction::Retire => "retire",
        }
    }

    pub fn target(self) -> AgentState {
        match self {
            LifecycleAction::Activate => AgentState::Active,
            LifecycleAction::Suspend => AgentState::Suspended,
            LifecycleAction::Retire => AgentState::Retired,
        }
    }
}

/// Why a lifecycle command or an update was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransitionRefused {
    pub from: AgentState,
    pub message: String,
}

impl fmt::Display for TransitionRefused {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl AgentState {
    /// The lifecycle rules, in one place:
    /// - `activate`: from `pending_review` or `suspended`;
    /// - `suspend`: from `pending_review` or `active`;
    /// - `retire`: from any state but `retired`, which is terminal.
    ///
    /// Moving to the state one is already in is refused too, so a script learns its view was stale.
    pub fn apply(self, action: LifecycleAction) -> Result<AgentState, TransitionRefused> {
        use AgentState::*;
        let to = action.target();
        let allowed = match action {
            LifecycleAction::Activate => matches!(self, PendingReview | Suspended),
            LifecycleAction::Suspend => matches!(self, PendingReview | Active),
            LifecycleAction::Retire => self != Retired,
        };
        if allowed {
            Ok(to)
        } else if self == to {
            Err(TransitionRefused {
                from: self,
                message: format!("the agent is already {self}"),
            })
        } else {
            Err(TransitionRefused {
                from: self,
                message: format!("a {self} agent cannot move to {to}"),
            })
        }
    }

    /// The state after an update. Retired agents are frozen. A change of model or of environment is a
    /// change of what the agent is: an active agent goes back to `pending_review` and its credentials must
    /// die (the second value says why); a suspended one stays suspended, a pending one stays pending.
    pub fn after_update(
        self,
        update: &AgentUpdate,
        current: &Agent,
    ) -> Result<(AgentState, Option<String>), TransitionRefused> {
        if self == AgentState::Retired {
            return Err(TransitionRefused {
                from: self,
                message: "a retired agent cannot be changed".into(),
            });
        }
        let mut why = Vec::new();
        if let Some(m) = update.model.as_ref().filter(|m| **m != current.model) {
            why.push(format!("model changed from {} to {}", current.model, m));
        }
        if let Some(e) = update.environment.filter(|e| *e != current.environment) {
            why.push(format!(
                "environment changed from {} to {}",
                current.environment, e
            ));
        }
        if why.is_empty() {
            return Ok((self, None));
        }
        let next = if self == AgentState::Active {
            AgentState::PendingReview
        } else {
            self
        };
        Ok((next, Some(why.join("; "))))
    }
}

/// A request to register an upstream.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUpstream {
    pub name: UpstreamName,
    pub kind: UpstreamKind,
    /// `http(s)://` for `mcp` and `http`, `postgres://` for `postgres`. Never with credentials in it.
    pub url: String,
    pub environment: Environment,
    /// Email of the registered human accountable for the upstream.
    pub owner: Email,
    pub sensitivity: Sensitivity,
    #[serde(default)]
    pub description: Description,
}

/// Longest upstream URL we accept.
pub const MAX_URL_LEN: usize = 2_048;

impl NewUpstream {
    /// Checks the URL against the kind. Credentials in a URL are refused: they would end up in logs,
    /// listings and the ledger; later issues keep upstream credentials in the encrypted secret store.
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_upstream_url(self.kind, &self.url)
    }
}

/// Checks an upstream URL without an URL crate: the scheme and the absence of userinfo are what matter
/// here; the gateway parses it fully when it connects.
pub fn check_upstream_url(kind: UpstreamKind, url: &str) -> Result<(), ValidationError> {
    let err = |m: String| ValidationError::new("url", m);
    if url.len() > MAX_URL_LEN {
        return Err(err(format!(
            "url is {} bytes long; the limit is {MAX_URL_LEN}",
            url.len()
        )));
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(err("url contains whitespace or a control character".into()));
    }
    let schemes: &[&str] = match kind {
        // `stdio://<name>`: an MCP server Warden spawns (`[[gateway.stdio]]` in the config).
        UpstreamKind::Mcp => &["http", "https", "stdio"],
        UpstreamKind::Http => &["http", "https"],
        UpstreamKind::Postgres => &["postgres", "postgresql"],
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(err(format!(
            "url must start with {}://",
            schemes.join("://` or `")
        )));
    };
    if !schemes.contains(&scheme.to_ascii_lowercase().as_str()) {
        return Err(err(format!(
            "a {kind} upstream needs a {} url, not `{}`",
            schemes.join(" or "),
            scheme.escape_debug()
        )));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(err(
            "url must not carry credentials (user or password); upstream credentials belong in the secret store"
                .into(),
        ));
    }
    if authority.is_empty() {
        return Err(err("url has no host".into()));
    }
    if kind == UpstreamKind::Postgres && rest.to_ascii_lowercase().contains("password=") {
        return Err(err("url must not carry a password parameter".into()));
    }
    Ok(())
}

/// A registered upstream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Upstream {
    pub id: Uuid,
    pub name: UpstreamName,
    pub kind: UpstreamKind,
    pub url: String,
    pub environment: Environment,
    pub owner: Email,
    pub sensitivity: Sensitivity,
    pub description: Description,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
}

/// A request to register a human.
#[derive(Clone, Debug, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewHuman {
    pub email: Email,
    pub display_name: DisplayName,
    pub roles: Vec<crate::Role>,
}

impl NewHuman {
    pub fn validate(&self) -> Result<(), ValidationError> {
        check_list("roles", &self.roles, false)
    }
}

/// A registered human.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Human {
    pub email: Email,
    pub display_name: DisplayName,
    pub roles: Vec<crate::Role>,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// When the human was removed (left the organisation). Removed humans keep their record for audit,
    /// cannot authenticate, and own nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_by: Option<String>,
}

impl Human {
    pub fn has_role(&self, role: crate::Role) -> bool {
        self.roles.contains(&role)
    }
}

/// What an API token is, without the token: safe to list and log.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ApiTokenInfo {
    pub id: Uuid,
    pub human: Email,
    /// A label chosen by its creator, e.g. `laptop` or `ci`.
    pub label: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub revoked_by: Option<String>,
    /// The API token that was presented to create this one (`None`: the bootstrap token, or a token
    /// made before tokens recorded it). Revoking a token revokes the tokens it minted.
    #[serde(default)]
    pub minted_by: Option<Uuid>,
    /// The holder's own token: minted by the holder with a personal token, or by the holder claiming
    /// a token someone else issued to them. Only a personal token may vote on approval requests; a
    /// token an admin issued (and everything minted from it without a claim) may not, since whoever
    /// issued it has seen it.
    #[serde(default)]
    pub personal: bool,
}

impl ApiTokenInfo {
    /// Why this token may not be used at `now`, if it may not.
    pub fn unusable_at(&self, now: DateTime<Utc>) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("the token has been revoked")
        } else if now >= self.expires_at {
            Some("the token has expired")
        } else {
            None
        }
    }
}

/// One unit of agent work, with its declared intent. All task credentials hang off a task.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Task {
    pub id: Uuid,
    pub agent: AgentName,
    pub agent_spiffe_id: String,
    /// The task this one was delegated from.
    pub parent_id: Option<Uuid>,
    /// 0 for a task an agent started itself, parent's depth + 1 for a delegated one.
    pub depth: u8,
    /// The intent (RFC 9396 `authorization_details`) the task was granted.
    #[schema(value_type = Object)]
    pub intent: serde_json::Value,
    /// The delegation chain (`act` claim), if delegated.
    #[schema(value_type = Option<Object>)]
    pub act: Option<serde_json::Value>,
    /// The DPoP key thumbprint its tokens are bound to, if any.
    pub cnf_jkt: Option<String>,
    pub state: TaskState,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    /// The task's hard end: no credential for it outlives this.
    pub expires_at: DateTime<Utc>,
    pub ended_at: Option<DateTime<Utc>>,
    pub ended_by: Option<String>,
    pub end_reason: Option<String>,
}

impl Task {
    /// Whether credentials of this task may be used at `now`.
    pub fn is_live_at(&self, now: DateTime<Utc>) -> bool {
        self.state == TaskState::Active && now < self.expires_at
    }
}

/// Who made a change, and when: recorded on every write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChangeContext {
    pub actor: String,
    pub at: DateTime<Utc>,
}

impl ChangeContext {
    pub fn new(actor: impl Into<String>, at: DateTime<Utc>) -> Self {
        Self {
            actor: actor.into(),
            at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models() {
        let m = Model::parse("anthropic/claude-sonnet@4.5").expect("valid");
        assert_eq!(
            (m.provider(), m.name(), m.version()),
            ("anthropic", "claude-sonnet", "4.5")
        );
        assert_eq!(m.to_string(), "anthropic/claude-sonnet@4.5");
        let m = Model::parse("openai/gpt-4o@2024-08-06").expect("valid");
        assert_eq!(m.version(), "2024-08-06");
        for (bad, want) in [
            ("claude", "must look like"),
            ("anthropic/claude", "no `@version`"),
            ("/claude@1", "invalid provider"),
            ("anthropic/@1", "invalid name"),
            ("anthropic/claude@", "invalid version"),
            ("anthropic/cl aude@1", "invalid name"),
            ("a/b/c@1", "invalid name"),
        ] {
            let e = Model::parse(bad).expect_err(bad).to_string();
            assert!(e.contains(want), "{bad}: {e}");
        }
    }

    #[test]
    fn enums_parse_and_list_choices() {
        assert_eq!("production".parse::<Environment>(), Ok(Environment::Production));
        let e = "prod".parse::<Environment>().expect_err("unknown").to_string();
        assert_eq!(
            e,
            "environment: unknown environment `prod`; expected one of `prototype`, `staging`, `production`"
        );
        assert!(Environment::Prototype < Environment::Production);
        for s in AgentState::ALL {
            assert_eq!(s.as_str().parse::<AgentState>(), Ok(*s));
            assert_eq!(
                serde_json::to_string(s).expect("ser"),
                format!("\"{}\"", s.as_str())
            );
        }
    }

    #[test]
    fn lifecycle_table() {
        use AgentState::*;
        use LifecycleAction::*;
        let table = [
            (PendingReview, Activate, Some(Active)),
            (PendingReview, Suspend, Some(Suspended)),
            (PendingReview, Retire, Some(Retired)),
            (Active, Activate, None),
            (Active, Suspend, Some(Suspended)),
            (Active, Retire, Some(Retired)),
            (Suspended, Activate, Some(Active)),
            (Suspended, Suspend, None),
            (Suspended, Retire, Some(Retired)),
            (Retired, Activate, None),
            (Retired, Suspend, None),
            (Retired, Retire, None),
        ];
        for (from, action, want) in table {
            assert_eq!(from.apply(action).ok(), want, "{from} {action:?}");
        }
        assert_eq!(
            Active.apply(Activate).expect_err("same").message,
            "the agent is already active"
        );
        assert_eq!(
            Retired.apply(Activate).expect_err("terminal").message,
            "a retired agent cannot move to active"
        );
    }

    fn agent(state: AgentState) -> Agent {
        let now = Utc::now();
        Agent {
            id: Uuid::new_v4(),
            name: AgentName::parse("a").expect("valid"),
            spiffe_id: "spiffe://warden.local/agent/a".into(),
            owners: vec![Email::parse("o@example.com").expect("valid")],
            environment: Environment::Staging,
            model: Model::parse("p/m@1").expect("valid"),
            description: Description::default(),
            allowed_upstreams: vec![],
            state,
            state_changed_at: now,
            state_changed_by: "x".into(),
            created_at: now,
            created_by: "x".into(),
            updated_at: now,
            updated_by: "x".into(),
            default_intent: None,
        }
    }

    #[test]
    fn model_or_environment_change_sends_active_agent_back_to_review() {
        use AgentState::*;
        let model = AgentUpdate {
            model: Some(Model::parse("p/m@2").expect("valid")),
            ..Default::default()
        };
        let env = AgentUpdate {
            environment: Some(Environment::Production),
            ..Default::default()
        };
        let same = AgentUpdate {
            model: Some(Model::parse("p/m@1").expect("valid")),
            ..Default::default()
        };
        let desc = AgentUpdate {
            description: Some(Description::parse("x").expect("valid")),
            ..Default::default()
        };

        let (s, why) = Active.after_update(&model, &agent(Active)).expect("ok");
        assert_eq!(s, PendingReview);
        assert_eq!(why.as_deref(), Some("model changed from p/m@1 to p/m@2"));
        assert_eq!(
            Active.after_update(&env, &agent(Active)).expect("ok").0,
            PendingReview
        );
        assert_eq!(
            Suspended.after_update(&model, &agent(Suspended)).expect("ok").0,
            Suspended
        );
        assert_eq!(
            Active.after_update(&same, &agent(Active)).expect("ok"),
            (Active, None)
        );
        assert_eq!(
            Active.after_update(&desc, &agent(Active)).expect("ok"),
            (Active, None)
        );
        assert!(Retired.after_update(&desc, &agent(Retired)).is_err());
    }

    #[test]
    fn lists() {
        let e = |s: &str| Email::parse(s).expect("valid");
        assert!(check_list::<Email>("owners", &[], false).is_err());
        assert!(check_list::<Email>("allowed_upstreams", &[], true).is_ok());
        let dup = check_list("owners", &[e("a@x.io"), e("b@x.io"), e("a@x.io")], false).expect_err("dup");
        assert_eq!(dup.field, "owners[2]");
        let upd = AgentUpdate::default().validate().expect_err("empty update");
        assert!(upd.message.contains("changes nothing"));
    }

    #[test]
    fn upstream_urls() {
        use UpstreamKind::*;
        assert!(check_upstream_url(Mcp, "https://tools.example.com/mcp").is_ok());
        assert!(check_upstream_url(Mcp, "stdio://files").is_ok());
        assert!(check_upstream_url(Http, "http://127.0.0.1:9000").is_ok());
        assert!(check_upstream_url(Postgres, "postgres://db.internal:5432/app").is_ok());
        for (kind, url, want) in [
            (Mcp, "ftp://x", "needs a http or https or stdio url"),
            (Http, "stdio://x", "needs a http or https url"),
            (Postgres, "https://x", "needs a postgres or postgresql url"),
            (Http, "example.com", "must start with"),
            (Http, "https://user:pw@example.com/", "must not carry credentials"),
            (Postgres, "postgres://app@db/app", "must not carry credentials"),
            (Postgres, "postgres://db/app?password=x", "password parameter"),
            (Http, "https:///path", "no host"),
            (Http, "https://exa mple.com", "whitespace"),
        ] {
            let e = check_upstream_url(kind, url).expect_err(url).to_string();
            assert!(e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn token_usability() {
        let now = Utc::now();
        let mut t = ApiTokenInfo {
            id: Uuid::new_v4(),
            human: Email::parse("a@x.io").expect("valid"),
            label: "l".into(),
            created_at: now,
            created_by: "a@x.io".into(),
            expires_at: now + chrono::Duration::minutes(1),
            revoked_at: None,
            revoked_by: None,
            minted_by: None,
            personal: true,
        };
        assert_eq!(t.unusable_at(now), None);
        assert_eq!(
            t.unusable_at(now + chrono::Duration::minutes(1)),
            Some("the token has expired")
        );
        t.revoked_at = Some(now);
        assert_eq!(t.unusable_at(now), Some("the token has been revoked"));
    }
}
