//! What the server asks the engine: who (an agent), does what (an [`Action`]), to what (a
//! [`ResourceRef`]), in which circumstances (a [`PolicyContext`]).
//!
//! These are plain typed values; the engine turns them into a Cedar request itself, filling in what the
//! registry knows (environments, sensitivity, the resource's upstream), so the server cannot produce a
//! context that does not match the schema. The one open-ended input, tool arguments, is bounded
//! here ([`ArgLimits`]); a request beyond the bounds is denied with the reason.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use warden_core::{AgentName, UpstreamName};

/// The actions of Warden's schema. A tool call maps to `read`, `write`, `destructive` or `admin` by
/// the tool's class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Action {
    #[serde(rename = "read")]
    Read,
    #[serde(rename = "write")]
    Write,
    #[serde(rename = "destructive")]
    Destructive,
    #[serde(rename = "admin")]
    Admin,
    #[serde(rename = "task.start")]
    TaskStart,
    #[serde(rename = "task.delegate")]
    TaskDelegate,
}

impl Action {
    /// Every action, in declaration order (the order `vocab` relies on).
    pub const ALL: &'static [Action] = &[
        Action::Read,
        Action::Write,
        Action::Destructive,
        Action::Admin,
        Action::TaskStart,
        Action::TaskDelegate,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Read => "read",
            Action::Write => "write",
            Action::Destructive => "destructive",
            Action::Admin => "admin",
            Action::TaskStart => "task.start",
            Action::TaskDelegate => "task.delegate",
        }
    }

    /// Whether the action's resource is a task (as opposed to an upstream, tool, dataset or agent).
    pub fn is_task_action(self) -> bool {
        matches!(self, Action::TaskStart | Action::TaskDelegate)
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An action name that is not in the schema.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown action `{0}`; expected one of `read`, `write`, `destructive`, `admin`, `task.start`, `task.delegate`"
)]
pub struct UnknownAction(pub String);

impl FromStr for Action {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Action::ALL
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
            .ok_or_else(|| UnknownAction(s.escape_debug().to_string()))
    }
}

/// What an action targets. Tools and datasets are named `<upstream>/<name>`, and so are MCP
/// resources (`<upstream>/<uri>`) and prompts (`<upstream>/<prompt name>`): the upstream is the part
/// before the first `/`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ResourceRef {
    Upstream(UpstreamName),
    /// `<upstream>/<tool>`.
    Tool(String),
    /// `<upstream>/<dataset>`.
    Dataset(String),
    Agent(AgentName),
    /// A task being started or delegated, by id; its intent is `context.task`.
    Task(String),
    /// An MCP resource of an upstream (`resources/read`, `resources/subscribe`, …):
    /// `<upstream>/<uri>`. Not a registry entity: the engine builds `Warden::McpResource` per
    /// request (its `declared` attribute from the task's `resources` patterns).
    McpResource(String),
    /// An MCP prompt of an upstream (`prompts/get`): `<upstream>/<prompt name>`. Built per request
    /// like an MCP resource.
    Prompt(String),
}

impl ResourceRef {
    pub fn tool(upstream: &UpstreamName, tool: &str) -> Self {
        ResourceRef::Tool(format!("{upstream}/{tool}"))
    }

    pub fn dataset(upstream: &UpstreamName, dataset: &str) -> Self {
        ResourceRef::Dataset(format!("{upstream}/{dataset}"))
    }

    /// The MCP resource `uri` of `upstream`.
    pub fn mcp_resource(upstream: &UpstreamName, uri: &str) -> Self {
        ResourceRef::McpResource(format!("{upstream}/{uri}"))
    }

    /// The MCP prompt `name` of `upstream`.
    pub fn prompt(upstream: &UpstreamName, name: &str) -> Self {
        ResourceRef::Prompt(format!("{upstream}/{name}"))
    }

    /// The name of the upstream the resource belongs to (an upstream's own name); `None` for an
    /// agent, a task, or an id without `/`.
    pub fn upstream_name(&self) -> Option<&str> {
        match self {
            ResourceRef::Upstream(u) => Some(u.as_str()),
            ResourceRef::Tool(id)
            | ResourceRef::Dataset(id)
            | ResourceRef::McpResource(id)
            | ResourceRef::Prompt(id) => id.split_once('/').map(|(u, _)| u),
            ResourceRef::Agent(_) | ResourceRef::Task(_) => None,
        }
    }

    /// The resource's type as an index: upstream 0, tool 1, dataset 2, agent 3, task 4, MCP
    /// resource 5, prompt 6.
    pub(crate) fn kind(&self) -> usize {
        match self {
            ResourceRef::Upstream(_) => 0,
            ResourceRef::Tool(_) => 1,
            ResourceRef::Dataset(_) => 2,
            ResourceRef::Agent(_) => 3,
            ResourceRef::Task(_) => 4,
            ResourceRef::McpResource(_) => 5,
            ResourceRef::Prompt(_) => 6,
        }
    }
}

/// Number of resource types ([`ResourceRef::kind`]).
pub(crate) const RESOURCE_KINDS: usize = 7;

impl fmt::Display for ResourceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResourceRef::Upstream(u) => write!(f, "upstream `{u}`"),
            ResourceRef::Tool(t) => write!(f, "tool `{}`", t.escape_debug()),
            ResourceRef::Dataset(d) => write!(f, "dataset `{}`", d.escape_debug()),
            ResourceRef::Agent(a) => write!(f, "agent `{a}`"),
            ResourceRef::Task(t) => write!(f, "task `{}`", t.escape_debug()),
            ResourceRef::McpResource(r) => write!(f, "MCP resource `{}`", r.escape_debug()),
            ResourceRef::Prompt(p) => write!(f, "prompt `{}`", p.escape_debug()),
        }
    }
}

/// The task on whose behalf the agent acts: its declared intent and where it sits in a delegation
/// chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskContext {
    #[serde(default)]
    pub id: String,
    pub purpose: String,
    pub task_type: String,
    #[serde(default)]
    pub upstreams: Vec<UpstreamName>,
    #[serde(default)]
    pub tools: Vec<String>,
    #[serde(default)]
    pub datasets: Vec<String>,
    /// URI glob patterns of the MCP resources the task needs (`*` matches any run of characters).
    #[serde(default)]
    pub resources: Vec<String>,
    /// Names of the MCP prompts the task needs.
    #[serde(default)]
    pub prompts: Vec<String>,
    /// 0 for a task an agent started itself; for `task.delegate`, the depth of the child task.
    #[serde(default)]
    pub depth: u8,
    /// The agents that delegated, outermost first.
    #[serde(default)]
    pub chain: Vec<AgentName>,
}

/// The approval state of this exact action. The server sets `granted` when an approval request for
/// it reached its quorum; `approvers` is the number of distinct humans who approved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    #[serde(default)]
    pub granted: bool,
    #[serde(default)]
    pub approvers: u8,
}

/// Risk signals computed before the decision (e.g. by the secret scanner on the arguments).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Risk {
    #[serde(default)]
    pub secret_in_args: bool,
    /// 0 (none) to 100.
    #[serde(default)]
    pub score: u8,
}

/// What kind of MCP message a decision is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum McpKind {
    /// A JSON-RPC request from the client.
    Request,
    /// A JSON-RPC notification from the client.
    Notification,
    /// The client's response to a request of the server (`sampling/createMessage`, …).
    Response,
    /// An HTTP stream of a session: `GET` (`stream/open`) or `DELETE` (`session/delete`).
    Stream,
}

impl McpKind {
    pub fn as_str(self) -> &'static str {
        match self {
            McpKind::Request => "request",
            McpKind::Notification => "notification",
            McpKind::Response => "response",
            McpKind::Stream => "stream",
        }
    }
}

/// Longest [`McpContext::method`] accepted; a longer one is a deny.
pub const MAX_MCP_METHOD: usize = 128;

/// The MCP message a decision is about (`context.mcp` in Cedar).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpContext {
    /// The JSON-RPC method (`tools/call`, `logging/setLevel`, `notifications/initialized`); for a
    /// response, the method of the server's request it answers; for a stream, `stream/open` or
    /// `session/delete`. At most [`MAX_MCP_METHOD`] bytes.
    pub method: String,
    pub kind: McpKind,
}

/// Everything about the circumstances of a request that the registry does not know.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyContext {
    #[serde(default)]
    pub task: Option<TaskContext>,
    #[serde(default)]
    pub approval: Approval,
    /// The tool call's JSON arguments, bounded by [`ArgLimits`].
    #[serde(default)]
    pub args: Option<Json>,
    #[serde(default)]
    pub risk: Risk,
    /// The MCP message, when the request comes from the MCP gateway.
    #[serde(default)]
    pub mcp: Option<McpContext>,
}

/// One question to the policy engine.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyRequest {
    pub principal: AgentName,
    pub action: Action,
    pub resource: ResourceRef,
    #[serde(default)]
    pub context: PolicyContext,
}

/// Bounds on tool arguments and on the lists in a request; beyond them the request is denied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ArgLimits {
    /// Approximate encoded JSON size: string and key bytes plus punctuation and scalars.
    pub max_bytes: usize,
    /// Nesting depth of arrays and objects (a flat object is depth 1).
    pub max_depth: usize,
    /// Object keys, all levels together.
    pub max_keys: usize,
    /// Leaves (strings, numbers, booleans, nulls), all levels together.
    pub max_leaves: usize,
}

impl Default for ArgLimits {
    fn default() -> Self {
        Self {
            max_bytes: 64 * 1024,
            max_depth: 16,
            max_keys: 1_000,
            max_leaves: 4_000,
        }
    }
}

/// Most entries in each list of a task context (the same limit as the registry's lists).
pub const MAX_CONTEXT_LIST: usize = 64;
/// Longest string in a task context.
pub const MAX_CONTEXT_STRING: usize = 1_000;

#[derive(Default)]
struct Measure {
    bytes: usize,
    keys: usize,
    leaves: usize,
}

impl ArgLimits {
    /// Checks arguments against the limits, without allocating. The error says which limit.
    pub fn check(&self, args: &Json) -> Result<(), String> {
        let mut m = Measure::default();
        self.walk(args, 1, &mut m)
    }

    fn walk(&self, v: &Json, depth: usize, m: &mut Measure) -> Result<(), String> {
        match v {
            Json::Null | Json::Bool(_) => {
                m.bytes += 5;
                m.leaves += 1;
            }
            Json::Number(_) => {
                m.bytes += 8;
                m.leaves += 1;
            }
            Json::String(s) => {
                m.bytes += s.len() + 2;
                m.leaves += 1;
            }
            Json::Array(items) => {
                if depth > self.max_depth {
                    return Err(format!(
                        "tool arguments nest deeper than {} levels",
                        self.max_depth
                    ));
                }
                m.bytes += 2 + items.len();
                for item in items {
                    self.walk(item, depth + 1, m)?;
                }
            }
            Json::Object(map) => {
                if depth > self.max_depth {
                    return Err(format!(
                        "tool arguments nest deeper than {} levels",
                        self.max_depth
                    ));
                }
                m.keys += map.len();
                if m.keys > self.max_keys {
                    return Err(format!("tool arguments have more than {} keys", self.max_keys));
                }
                m.bytes += 2;
                for (k, item) in map {
                    m.bytes += k.len() + 4;
                    self.walk(item, depth + 1, m)?;
                }
            }
        }
        if m.leaves > self.max_leaves {
            return Err(format!(
                "tool arguments have more than {} values",
                self.max_leaves
            ));
        }
        if m.bytes > self.max_bytes {
            return Err(format!("tool arguments are larger than {} bytes", self.max_bytes));
        }
        Ok(())
    }
}

impl TaskContext {
    /// Checks the list and string bounds of a task context.
    pub fn check(&self) -> Result<(), String> {
        for (what, len) in [
            ("upstreams", self.upstreams.len()),
            ("tools", self.tools.len()),
            ("datasets", self.datasets.len()),
            ("resources", self.resources.len()),
            ("prompts", self.prompts.len()),
            ("chain", self.chain.len()),
        ] {
            if len > MAX_CONTEXT_LIST {
                return Err(format!(
                    "the task context lists {len} {what}; the limit is {MAX_CONTEXT_LIST}"
                ));
            }
        }
        let long = [&self.id, &self.purpose, &self.task_type]
            .into_iter()
            .chain(self.tools.iter())
            .chain(self.datasets.iter())
            .chain(self.resources.iter())
            .chain(self.prompts.iter())
            .any(|s| s.len() > MAX_CONTEXT_STRING);
        if long {
            return Err(format!(
                "a string in the task context is longer than {MAX_CONTEXT_STRING} bytes"
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn actions_round_trip() {
        for a in Action::ALL {
            assert_eq!(a.as_str().parse::<Action>(), Ok(*a));
            assert_eq!(
                serde_json::to_string(a).expect("ser"),
                format!("\"{}\"", a.as_str())
            );
        }
        let e = "delete".parse::<Action>().expect_err("unknown");
        assert!(e.to_string().starts_with("unknown action `delete`"), "{e}");
    }

    #[test]
    fn arg_limits() {
        let l = ArgLimits::default();
        assert!(l.check(&json!({"a": [1, 2, {"b": "c"}]})).is_ok());
        let mut deep = json!(1);
        for _ in 0..17 {
            deep = json!([deep]);
        }
        assert!(l.check(&deep).expect_err("deep").contains("deeper than 16"));
        let wide: serde_json::Map<String, Json> = (0..1001).map(|i| (format!("k{i}"), json!(i))).collect();
        assert!(
            l.check(&Json::Object(wide))
                .expect_err("wide")
                .contains("more than 1000 keys")
        );
        let big = json!({"x": "a".repeat(70_000)});
        assert!(
            l.check(&big)
                .expect_err("big")
                .contains("larger than 65536 bytes")
        );
    }

    #[test]
    fn requests_deserialize_strictly() {
        let r: PolicyRequest = serde_json::from_value(json!({
            "principal": "bot", "action": "read", "resource": {"tool": "crm/search"},
            "context": {"approval": {"granted": true, "approvers": 1}}
        }))
        .expect("valid");
        assert_eq!(r.resource, ResourceRef::Tool("crm/search".into()));
        let bad = serde_json::from_value::<PolicyRequest>(json!({
            "principal": "bot", "action": "delete", "resource": {"upstream": "crm"}
        }));
        assert!(bad.is_err());
    }
}
