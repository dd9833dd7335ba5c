//! JSON-RPC 2.0 as MCP uses it (protocol versions 2025-06-18, 2025-11-25 and 2026-07-28; what
//! 2026-07-28 adds on the HTTP wire is in [`crate::wire`]).
//!
//! The gateway reads every message an agent sends before anything else happens to it, so this is the
//! first parser untrusted bytes meet. It is strict where MCP is strict and bounded everywhere:
//!
//! * the size limit is checked before any parsing, and the nesting depth is checked by a linear scan of
//!   the bytes *before* serde_json sees them, so a megabyte of `[[[[…` costs one pass over the bytes
//!   and no recursion ([`Limits`]);
//! * batches (a JSON array of messages) are refused: MCP 2025-06-18 removed JSON-RPC batching, and a
//!   batch would let one HTTP request smuggle many decisions through one check;
//! * `jsonrpc` must be exactly `"2.0"`; a request's `id` is a string or an integer, never null or
//!   fractional; `params`, when present, is an object (MCP never uses positional parameters);
//! * a message with both `method` and `result`/`error`, or both `result` and `error`, is refused as
//!   ambiguous rather than guessed at.
//!
//! Members the JSON-RPC envelope does not define are ignored (they carry no meaning in MCP; MCP's own
//! metadata lives in `params._meta` and `result._meta`, which are kept).
//!
//! Every [`ParseError`] maps to a JSON-RPC error code (`-32700` for bytes that are not JSON, `-32600`
//! for JSON that is not a valid message) and names the offending field; [`ParseError::to_response`]
//! builds the error response to send back. [`ParamsError`] does the same for the typed parameter views
//! (`-32602`). Warden's own refusals use the stable codes below ([`DENIED`] …).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The MCP protocol versions this crate's message handling follows.
pub const SUPPORTED_PROTOCOL_VERSIONS: [&str; 3] = ["2025-06-18", "2025-11-25", "2026-07-28"];

/// JSON-RPC: the bytes are not JSON.
pub const PARSE_ERROR: i64 = -32700;
/// JSON-RPC: the JSON is not a valid request (also: a batch, a message past Warden's limits).
pub const INVALID_REQUEST: i64 = -32600;
/// JSON-RPC: the method does not exist.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// JSON-RPC: the method's parameters are invalid ([`ParamsError`]).
pub const INVALID_PARAMS: i64 = -32602;
/// JSON-RPC: internal error.
pub const INTERNAL_ERROR: i64 = -32603;
/// MCP 2025-11-25: URL elicitation required (`data.elicitations`: the URL-mode elicitations the
/// client must complete before retrying). Warden answers it to a session that declared URL
/// elicitation when a call waits for an approval.
pub const URL_ELICITATION_REQUIRED: i64 = -32042;

// MCP 2026-07-28's own codes (the range -32020..=-32099 is reserved for the MCP specification).

/// MCP 2026-07-28 `HeaderMismatch`: the HTTP request-metadata headers (`MCP-Protocol-Version`,
/// `Mcp-Method`, `Mcp-Name`, `Mcp-Param-*`) are missing, malformed or disagree with the body (HTTP 400).
pub const HEADER_MISMATCH: i64 = -32020;
/// MCP 2026-07-28 `MissingRequiredClientCapability`.
pub const MISSING_REQUIRED_CLIENT_CAPABILITY: i64 = -32021;
/// MCP 2026-07-28 `UnsupportedProtocolVersion`; `data`: `{"supported": [...], "requested": "..."}`.
pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;

// Warden's stable error codes. They sit in JSON-RPC's implementation-defined server-error range
// (-32000..=-32099) but clear of every code the MCP specification and the official SDKs already use
// there: -32000 (SDK: connection closed), -32001 (SDK: request timeout — a client would retry),
// -32002 (MCP: resource not found), -32003 (some SDKs: server not initialized), -32042 (MCP 2025-11-25:
// URL elicitation required). Never renumber them: agents and dashboards key off these numbers.

/// Policy denied the message. `data`: `{"reasons": [policy ids…], "policy_version": "…"}`.
pub const DENIED: i64 = -32010;
/// Policy requires a human approval first. `data`: `{"approval_id": "…", "url": "…"}`; the agent may
/// wait for the approval and retry the same call.
pub const APPROVAL_REQUIRED: i64 = -32011;
/// The tool's definition changed since an admin approved it; it is hidden and denied until the new
/// digest is approved. `data`: `{"tool": "…", "digest": "…"}`.
pub const TOOL_QUARANTINED: i64 = -32012;
/// A secret was detected in the arguments. `data`: `{"findings": [{"rule": "…", "pointer": "…"}]}`
/// (never the secret).
pub const SECRET_IN_ARGUMENTS: i64 = -32013;
/// The upstream MCP server could not be reached or failed at the transport level.
pub const UPSTREAM_UNAVAILABLE: i64 = -32014;
/// The ledger could not record the decision, so nothing was forwarded (record before act).
pub const LEDGER_UNAVAILABLE: i64 = -32015;
/// The message's arguments (or other parameters) are past what Warden examines for secrets (bytes
/// of strings, nesting depth), so it was refused unexamined. `data.reasons` names the limits.
pub const TOO_LARGE_TO_EXAMINE: i64 = -32016;
// Authentication failures are not JSON-RPC errors: they are HTTP 401 with `WWW-Authenticate`.

/// Bounds applied before and while parsing a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest message accepted, in bytes. Default 4 MiB.
    pub max_bytes: usize,
    /// Deepest nesting of arrays and objects accepted (the message object itself is depth 1).
    /// Default 64. serde_json refuses anything deeper than 128 on its own, so values above 127 act
    /// as 127.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 4 * 1024 * 1024,
            max_depth: 64,
        }
    }
}

/// A request id: a string or an integer (JSON-RPC allows numbers; MCP and Warden allow only integers).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Id {
    Number(i64),
    String(String),
}

impl Id {
    /// The id as JSON.
    pub fn to_value(&self) -> Value {
        match self {
            Id::Number(n) => Value::from(*n),
            Id::String(s) => Value::String(s.clone()),
        }
    }

    fn from_value(value: &Value) -> Result<Id, &'static str> {
        match value {
            Value::String(s) => Ok(Id::String(s.clone())),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Ok(Id::Number(i)),
                None if n.is_u64() => Err("is out of range (integers must fit in 64 bits, signed)"),
                None => Err("must be an integer or a string, not a fractional number"),
            },
            Value::Null => Err("must not be null"),
            _ => Err("must be a string or an integer"),
        }
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Id::Number(n) => write!(f, "{n}"),
            Id::String(s) => write!(f, "{s:?}"),
        }
    }
}

/// A request: a method call that expects a response with the same id.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub id: Id,
    pub method: String,
    /// The parameters; MCP parameters are always an object.
    pub params: Option<Map<String, Value>>,
}

/// A notification: a method call without an id, which gets no response.
#[derive(Debug, Clone, PartialEq)]
pub struct Notification {
    pub method: String,
    pub params: Option<Map<String, Value>>,
}

/// A successful response.
#[derive(Debug, Clone, PartialEq)]
pub struct Response {
    pub id: Id,
    pub result: Value,
}

/// The `error` member of an error response.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<Value>,
}

/// An error response. `id` is `None` when the peer could not determine the request's id (JSON `null`
/// or absent, as MCP 2025-11-25 allows).
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorResponse {
    pub id: Option<Id>,
    pub error: RpcError,
}

/// One JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    Request(Request),
    Notification(Notification),
    Response(Response),
    Error(ErrorResponse),
}

impl Message {
    /// The method name of a request or notification.
    pub fn method(&self) -> Option<&str> {
        match self {
            Message::Request(r) => Some(&r.method),
            Message::Notification(n) => Some(&n.method),
            Message::Response(_) | Message::Error(_) => None,
        }
    }

    /// The message's id (none for notifications and error responses without one).
    pub fn id(&self) -> Option<&Id> {
        match self {
            Message::Request(r) => Some(&r.id),
            Message::Response(r) => Some(&r.id),
            Message::Error(e) => e.id.as_ref(),
            Message::Notification(_) => None,
        }
    }

    /// The message as JSON (what [`parse`] would read back to an equal message).
    pub fn to_value(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("jsonrpc".into(), Value::from("2.0"));
        match self {
            Message::Request(r) => {
                obj.insert("id".into(), r.id.to_value());
                obj.insert("method".into(), Value::String(r.method.clone()));
                if let Some(p) = &r.params {
                    obj.insert("params".into(), Value::Object(p.clone()));
                }
            }
            Message::Notification(n) => {
                obj.insert("method".into(), Value::String(n.method.clone()));
                if let Some(p) = &n.params {
                    obj.insert("params".into(), Value::Object(p.clone()));
                }
            }
            Message::Response(r) => {
                obj.insert("id".into(), r.id.to_value());
                obj.insert("result".into(), r.result.clone());
            }
            Message::Error(e) => {
                obj.insert("id".into(), e.id.as_ref().map_or(Value::Null, Id::to_value));
                obj.insert("error".into(), rpc_error_value(&e.error));
            }
        }
        Value::Object(obj)
    }
}

fn rpc_error_value(error: &RpcError) -> Value {
    let mut obj = Map::new();
    obj.insert("code".into(), Value::from(error.code));
    obj.insert("message".into(), Value::String(error.message.clone()));
    if let Some(data) = &error.data {
        obj.insert("data".into(), data.clone());
    }
    Value::Object(obj)
}

/// Why bytes are not an acceptable message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the message is {len} bytes, more than the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("the message nests arrays and objects deeper than the limit of {max} levels")]
    TooDeep { max: usize },
    /// The bytes are not JSON (serde_json's reason, which names a position, never the input).
    #[error("the message is not valid JSON: {0}")]
    Syntax(String),
    #[error(
        "batches (JSON arrays of messages) are not supported: MCP removed JSON-RPC batching in 2025-06-18; send one message per request"
    )]
    Batch,
    #[error("the message must be a JSON object, not {found}")]
    NotObject { found: &'static str },
    /// A member is missing or has the wrong type. `id` is the message's id when it could be read, so
    /// the error response can be correlated.
    #[error("`{field}` {problem}")]
    Field {
        id: Option<Id>,
        field: &'static str,
        problem: &'static str,
    },
}

impl ParseError {
    /// The JSON-RPC error code for this error.
    pub fn code(&self) -> i64 {
        match self {
            ParseError::Syntax(_) => PARSE_ERROR,
            ParseError::TooLarge { .. }
            | ParseError::TooDeep { .. }
            | ParseError::Batch
            | ParseError::NotObject { .. }
            | ParseError::Field { .. } => INVALID_REQUEST,
        }
    }

    /// The id of the offending message, when it could be read.
    pub fn id(&self) -> Option<&Id> {
        match self {
            ParseError::Field { id, .. } => id.as_ref(),
            _ => None,
        }
    }

    /// The error response to send back (id `null` when the message's id could not be read).
    pub fn to_response(&self) -> Value {
        error_response(self.id(), self.code(), &self.to_string(), None)
    }
}

/// Parses one JSON-RPC message, checking `limits` before serde_json runs.
pub fn parse(bytes: &[u8], limits: &Limits) -> Result<Message, ParseError> {
    if bytes.len() > limits.max_bytes {
        return Err(ParseError::TooLarge {
            len: bytes.len(),
            max: limits.max_bytes,
        });
    }
    check_depth(bytes, limits.max_depth)?;
    let value: Value = serde_json::from_slice(bytes).map_err(|e| ParseError::Syntax(e.to_string()))?;
    Message::try_from(value)
}

/// Scans JSON text for its nesting depth without building anything. Strings are skipped (brackets
/// inside them do not count). On malformed input the count may differ from a real parse, but only
/// after the point where serde_json stops with a syntax error anyway, so serde_json never nests
/// deeper than `max`.
fn check_depth(bytes: &[u8], max: usize) -> Result<(), ParseError> {
    if depth_within(bytes, max) {
        Ok(())
    } else {
        Err(ParseError::TooDeep { max })
    }
}

/// Whether the nesting of JSON text `bytes` stays within `max` (a linear scan; strings skipped).
/// The one depth check of every parser of untrusted JSON in this crate.
pub fn depth_within(bytes: &[u8], max: usize) -> bool {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in bytes {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return false;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    true
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

impl TryFrom<Value> for Message {
    type Error = ParseError;

    /// Classifies an already-parsed JSON value. No size or depth limits apply here: use [`parse`]
    /// for bytes from outside.
    fn try_from(value: Value) -> Result<Self, ParseError> {
        let mut obj = match value {
            Value::Object(obj) => obj,
            Value::Array(_) => return Err(ParseError::Batch),
            other => return Err(ParseError::NotObject { found: kind(&other) }),
        };
        let raw_id = obj.remove("id");
        let readable_id = raw_id.as_ref().and_then(|v| Id::from_value(v).ok());
        let field = |field: &'static str, problem: &'static str| ParseError::Field {
            id: readable_id.clone(),
            field,
            problem,
        };

        match obj.get("jsonrpc") {
            Some(Value::String(v)) if v == "2.0" => {}
            None => return Err(field("jsonrpc", "is missing (it must be \"2.0\")")),
            Some(_) => return Err(field("jsonrpc", "must be the string \"2.0\"")),
        }
        let has_result = obj.contains_key("result");
        let has_error = obj.contains_key("error");

        if let Some(method) = obj.remove("method") {
            let Value::String(method) = method else {
                return Err(field("method", "must be a string"));
            };
            if method.is_empty() {
                return Err(field("method", "must not be empty"));
            }
            if has_result || has_error {
                return Err(field(
                    "method",
                    "must not appear together with `result` or `error`",
                ));
            }
            let params = match obj.remove("params") {
                None => None,
                Some(Value::Object(p)) => Some(p),
                Some(_) => return Err(field("params", "must be an object")),
            };
            return match raw_id {
                None => Ok(Message::Notification(Notification { method, params })),
                Some(raw) => {
                    let id = Id::from_value(&raw).map_err(|problem| field("id", problem))?;
                    Ok(Message::Request(Request { id, method, params }))
                }
            };
        }

        match (obj.remove("result"), obj.remove("error")) {
            (Some(_), Some(_)) => Err(field("result", "must not appear together with `error`")),
            (Some(result), None) => {
                let raw =
                    raw_id.ok_or_else(|| field("id", "is missing (a response needs the request's id)"))?;
                let id = Id::from_value(&raw).map_err(|problem| field("id", problem))?;
                Ok(Message::Response(Response { id, result }))
            }
            (None, Some(error)) => {
                let id = match raw_id {
                    None | Some(Value::Null) => None,
                    Some(raw) => Some(Id::from_value(&raw).map_err(|problem| field("id", problem))?),
                };
                let Value::Object(mut error) = error else {
                    return Err(field("error", "must be an object"));
                };
                let code = match error.get("code") {
                    None => return Err(field("error.code", "is missing")),
                    Some(Value::Number(n)) => n
                        .as_i64()
                        .ok_or_else(|| field("error.code", "must be an integer"))?,
                    Some(_) => return Err(field("error.code", "must be an integer")),
                };
                let message = match error.remove("message") {
                    None => return Err(field("error.message", "is missing")),
                    Some(Value::String(m)) => m,
                    Some(_) => return Err(field("error.message", "must be a string")),
                };
                let data = error.remove("data");
                Ok(Message::Error(ErrorResponse {
                    id,
                    error: RpcError { code, message, data },
                }))
            }
            (None, None) => Err(field(
                "method",
                "is missing (a message needs `method`, `result` or `error`)",
            )),
        }
    }
}

/// Builds an error response. `id` `None` is sent as `null` (the request's id could not be read).
pub fn error_response(id: Option<&Id>, code: i64, message: &str, data: Option<Value>) -> Value {
    Message::Error(ErrorResponse {
        id: id.cloned(),
        error: RpcError {
            code,
            message: message.to_owned(),
            data,
        },
    })
    .to_value()
}

/// Builds a successful response.
pub fn result_response(id: &Id, result: Value) -> Value {
    Message::Response(Response {
        id: id.clone(),
        result,
    })
    .to_value()
}

/// The methods the gateway decides on, by name. Everything else is [`Method::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Method {
    Initialize,
    Ping,
    ToolsList,
    ToolsCall,
    ResourcesList,
    ResourcesTemplatesList,
    ResourcesRead,
    PromptsList,
    PromptsGet,
    /// Any `notifications/…` method (the full name).
    Notification(String),
    /// Any other method (the full name).
    Other(String),
}

impl Method {
    /// Classifies a method name.
    pub fn parse(name: &str) -> Method {
        match name {
            "initialize" => Method::Initialize,
            "ping" => Method::Ping,
            "tools/list" => Method::ToolsList,
            "tools/call" => Method::ToolsCall,
            "resources/list" => Method::ResourcesList,
            "resources/templates/list" => Method::ResourcesTemplatesList,
            "resources/read" => Method::ResourcesRead,
            "prompts/list" => Method::PromptsList,
            "prompts/get" => Method::PromptsGet,
            n if n.starts_with("notifications/") => Method::Notification(n.to_owned()),
            n => Method::Other(n.to_owned()),
        }
    }

    /// The method's wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Method::Initialize => "initialize",
            Method::Ping => "ping",
            Method::ToolsList => "tools/list",
            Method::ToolsCall => "tools/call",
            Method::ResourcesList => "resources/list",
            Method::ResourcesTemplatesList => "resources/templates/list",
            Method::ResourcesRead => "resources/read",
            Method::PromptsList => "prompts/list",
            Method::PromptsGet => "prompts/get",
            Method::Notification(n) | Method::Other(n) => n,
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a method's parameters are unacceptable (JSON-RPC `-32602`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("`params` is missing")]
    Missing,
    #[error("`params.{field}` {problem}")]
    Field {
        field: &'static str,
        problem: &'static str,
    },
    /// A prompt argument is not a string; `name` is the argument's name, shortened to 64 characters.
    #[error("`params.arguments` member `{name}` must be a string")]
    PromptArgument { name: String },
}

impl ParamsError {
    /// The JSON-RPC error code (always [`INVALID_PARAMS`]).
    pub fn code(&self) -> i64 {
        INVALID_PARAMS
    }
}

fn required_str<'a>(params: &'a Map<String, Value>, field: &'static str) -> Result<&'a str, ParamsError> {
    match params.get(field) {
        None => Err(ParamsError::Field {
            field,
            problem: "is missing",
        }),
        Some(Value::String(s)) if s.is_empty() => Err(ParamsError::Field {
            field,
            problem: "must not be empty",
        }),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(ParamsError::Field {
            field,
            problem: "must be a string",
        }),
    }
}

/// The parameters of `tools/call`, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ToolCallParams<'a> {
    pub name: &'a str,
    /// The tool's arguments; an object when present.
    pub arguments: Option<&'a Map<String, Value>>,
}

impl<'a> ToolCallParams<'a> {
    pub fn parse(params: Option<&'a Map<String, Value>>) -> Result<Self, ParamsError> {
        let params = params.ok_or(ParamsError::Missing)?;
        let name = required_str(params, "name")?;
        let arguments = match params.get("arguments") {
            None => None,
            Some(Value::Object(a)) => Some(a),
            Some(_) => {
                return Err(ParamsError::Field {
                    field: "arguments",
                    problem: "must be an object",
                });
            }
        };
        Ok(Self { name, arguments })
    }
}

/// The parameters of `resources/read`, borrowed from the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceReadParams<'a> {
    pub uri: &'a str,
}

impl<'a> ResourceReadParams<'a> {
    pub fn parse(params: Option<&'a Map<String, Value>>) -> Result<Self, ParamsError> {
        let params = params.ok_or(ParamsError::Missing)?;
        Ok(Self {
            uri: required_str(params, "uri")?,
        })
    }
}

/// The parameters of `prompts/get`, borrowed from the request. MCP prompt arguments are strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptGetParams<'a> {
    pub name: &'a str,
    pub arguments: Option<BTreeMap<&'a str, &'a str>>,
}

impl<'a> PromptGetParams<'a> {
    pub fn parse(params: Option<&'a Map<String, Value>>) -> Result<Self, ParamsError> {
        let params = params.ok_or(ParamsError::Missing)?;
        let name = required_str(params, "name")?;
        let arguments = match params.get("arguments") {
            None => None,
            Some(Value::Object(a)) => {
                let mut out = BTreeMap::new();
                for (k, v) in a {
                    let Value::String(v) = v else {
                        return Err(ParamsError::PromptArgument {
                            name: k.chars().take(64).collect(),
                        });
                    };
                    out.insert(k.as_str(), v.as_str());
                }
                Some(out)
            }
            Some(_) => {
                return Err(ParamsError::Field {
                    field: "arguments",
                    problem: "must be an object",
                });
            }
        };
        Ok(Self { name, arguments })
    }
}

impl Request {
    /// Classifies this request's method.
    pub fn kind(&self) -> Method {
        Method::parse(&self.method)
    }

    /// This request's parameters as `tools/call` parameters.
    pub fn tool_call(&self) -> Result<ToolCallParams<'_>, ParamsError> {
        ToolCallParams::parse(self.params.as_ref())
    }

    /// This request's parameters as `resources/read` parameters.
    pub fn resource_read(&self) -> Result<ResourceReadParams<'_>, ParamsError> {
        ResourceReadParams::parse(self.params.as_ref())
    }

    /// This request's parameters as `prompts/get` parameters.
    pub fn prompt_get(&self) -> Result<PromptGetParams<'_>, ParamsError> {
        PromptGetParams::parse(self.params.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn p(s: &str) -> Result<Message, ParseError> {
        parse(s.as_bytes(), &Limits::default())
    }

    #[test]
    fn parses_the_four_kinds() {
        let m = p(
            r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"echo","arguments":{"x":1}}}"#,
        )
        .unwrap();
        let Message::Request(r) = &m else { panic!("{m:?}") };
        assert_eq!(r.id, Id::Number(1));
        assert_eq!(r.kind(), Method::ToolsCall);
        let call = r.tool_call().unwrap();
        assert_eq!(call.name, "echo");
        assert_eq!(call.arguments.unwrap()["x"], json!(1));

        let m = p(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#).unwrap();
        assert_eq!(
            m,
            Message::Notification(Notification {
                method: "notifications/initialized".into(),
                params: None
            })
        );
        assert_eq!(
            Method::parse(m.method().unwrap()),
            Method::Notification("notifications/initialized".into())
        );

        let m = p(r#"{"jsonrpc":"2.0","id":"a","result":{"tools":[]}}"#).unwrap();
        assert_eq!(
            m,
            Message::Response(Response {
                id: Id::String("a".into()),
                result: json!({"tools": []})
            })
        );

        let m =
            p(r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"bad","data":[1]}}"#).unwrap();
        assert_eq!(
            m,
            Message::Error(ErrorResponse {
                id: None,
                error: RpcError {
                    code: -32700,
                    message: "bad".into(),
                    data: Some(json!([1]))
                }
            })
        );
        // MCP 2025-11-25: the id of an error response may be absent.
        let m = p(r#"{"jsonrpc":"2.0","error":{"code":1,"message":""}}"#).unwrap();
        assert_eq!(m.id(), None);
    }

    #[test]
    fn refuses_batches_precisely() {
        let e = p(r#"[{"jsonrpc":"2.0","id":1,"method":"ping"}]"#).unwrap_err();
        assert_eq!(e, ParseError::Batch);
        assert_eq!(e.code(), INVALID_REQUEST);
        assert!(e.to_string().contains("batch"), "{e}");
        assert_eq!(p("[]").unwrap_err(), ParseError::Batch);
    }

    #[test]
    fn field_errors_name_the_field_and_keep_the_id() {
        let cases = [
            (r#"{"id":1,"method":"ping"}"#, "`jsonrpc` is missing"),
            (r#"{"jsonrpc":"1.0","id":1,"method":"ping"}"#, "`jsonrpc` must be"),
            (r#"{"jsonrpc":2.0,"id":1,"method":"ping"}"#, "`jsonrpc` must be"),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":5}"#,
                "`method` must be a string",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":""}"#,
                "`method` must not be empty",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","params":[1]}"#,
                "`params` must be an object",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"method":"x","result":{}}"#,
                "`method` must not appear",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"result":{},"error":{}}"#,
                "`result` must not appear",
            ),
            (r#"{"jsonrpc":"2.0","id":1}"#, "`method` is missing"),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"message":"x"}}"#,
                "`error.code` is missing",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":1.5,"message":"x"}}"#,
                "`error.code` must be an integer",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":{"code":1}}"#,
                "`error.message` is missing",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1,"error":"x"}"#,
                "`error` must be an object",
            ),
        ];
        for (input, want) in cases {
            let e = p(input).unwrap_err();
            assert!(e.to_string().starts_with(want), "{input}: {e}");
            assert_eq!(e.code(), INVALID_REQUEST);
            assert_eq!(e.id(), Some(&Id::Number(1)), "{input}");
            assert_eq!(e.to_response()["id"], json!(1));
        }
    }

    #[test]
    fn ids() {
        let bad = [
            (
                r#"{"jsonrpc":"2.0","id":null,"method":"ping"}"#,
                "`id` must not be null",
            ),
            (
                r#"{"jsonrpc":"2.0","id":1.5,"method":"ping"}"#,
                "`id` must be an integer or a string",
            ),
            (
                r#"{"jsonrpc":"2.0","id":18446744073709551615,"method":"ping"}"#,
                "`id` is out of range",
            ),
            (
                r#"{"jsonrpc":"2.0","id":[1],"method":"ping"}"#,
                "`id` must be a string or an integer",
            ),
            (r#"{"jsonrpc":"2.0","result":{}}"#, "`id` is missing"),
            (
                r#"{"jsonrpc":"2.0","id":null,"result":{}}"#,
                "`id` must not be null",
            ),
        ];
        for (input, want) in bad {
            let e = p(input).unwrap_err();
            assert!(e.to_string().starts_with(want), "{input}: {e}");
            assert_eq!(e.to_response()["id"], Value::Null);
        }
        let m = p(r#"{"jsonrpc":"2.0","id":-9223372036854775808,"method":"ping"}"#).unwrap();
        assert_eq!(m.id(), Some(&Id::Number(i64::MIN)));
        assert_eq!(Id::Number(3).to_string(), "3");
        assert_eq!(Id::String("a".into()).to_string(), "\"a\"");
    }

    #[test]
    fn syntax_errors_are_parse_errors() {
        for input in ["", "{", "nul", "{\"a\":}", "\u{0}", "{\"jsonrpc\":\"2.0\"} x"] {
            let e = p(input).unwrap_err();
            assert!(matches!(e, ParseError::Syntax(_)), "{input:?}: {e:?}");
            assert_eq!(e.code(), PARSE_ERROR);
            assert_eq!(e.to_response()["error"]["code"], json!(PARSE_ERROR));
        }
        assert!(matches!(
            parse(b"\"\xff\"", &Limits::default()),
            Err(ParseError::Syntax(_))
        ));
        assert_eq!(p("3").unwrap_err(), ParseError::NotObject { found: "a number" });
    }

    #[test]
    fn limits_are_checked_before_parsing() {
        let limits = Limits {
            max_bytes: 10,
            max_depth: 3,
        };
        assert_eq!(
            parse(&[b' '; 11], &limits).unwrap_err(),
            ParseError::TooLarge { len: 11, max: 10 }
        );
        // A megabyte of brackets: refused by the scan, serde_json never recurses.
        let deep = vec![b'['; 1 << 20];
        assert_eq!(
            parse(&deep, &Limits::default()).unwrap_err(),
            ParseError::TooDeep { max: 64 }
        );
        let limits = Limits {
            max_bytes: 1 << 20,
            max_depth: 3,
        };
        assert!(parse(br#"{"jsonrpc":"2.0","method":"x","params":{"a":[1]}}"#, &limits).is_ok());
        assert_eq!(
            parse(br#"{"jsonrpc":"2.0","method":"x","params":{"a":[[1]]}}"#, &limits).unwrap_err(),
            ParseError::TooDeep { max: 3 }
        );
        // Brackets inside strings (and escaped quotes) do not count.
        assert!(
            parse(
                br#"{"jsonrpc":"2.0","method":"[[[[\"{{{{","params":{"a":"]]]"}}"#,
                &limits
            )
            .is_ok()
        );
    }

    #[test]
    fn params_views() {
        let req = |params: Value| Request {
            id: Id::Number(1),
            method: "x".into(),
            params: params.as_object().cloned(),
        };
        let e = req(json!({"arguments": {}})).tool_call().unwrap_err();
        assert_eq!(e.to_string(), "`params.name` is missing");
        assert_eq!(e.code(), INVALID_PARAMS);
        let e = req(json!({"name": 3})).tool_call().unwrap_err();
        assert_eq!(e.to_string(), "`params.name` must be a string");
        let e = req(json!({"name": "t", "arguments": [1]}))
            .tool_call()
            .unwrap_err();
        assert_eq!(e.to_string(), "`params.arguments` must be an object");
        assert_eq!(
            Request {
                id: Id::Number(1),
                method: "x".into(),
                params: None
            }
            .tool_call()
            .unwrap_err(),
            ParamsError::Missing
        );
        let r = req(json!({"name": "t"}));
        let call = r.tool_call().unwrap();
        assert_eq!((call.name, call.arguments), ("t", None));

        let r = req(json!({"uri": "file:///a"}));
        assert_eq!(r.resource_read().unwrap().uri, "file:///a");
        assert_eq!(
            req(json!({"uri": ""})).resource_read().unwrap_err().to_string(),
            "`params.uri` must not be empty"
        );

        let r = req(json!({"name": "p", "arguments": {"a": "1", "b": "2"}}));
        let g = r.prompt_get().unwrap();
        assert_eq!(g.arguments.unwrap().get("b"), Some(&"2"));
        let e = req(json!({"name": "p", "arguments": {"n": 1}}))
            .prompt_get()
            .unwrap_err();
        assert_eq!(e.to_string(), "`params.arguments` member `n` must be a string");
    }

    #[test]
    fn methods_round_trip() {
        for name in [
            "initialize",
            "ping",
            "tools/list",
            "tools/call",
            "resources/list",
            "resources/templates/list",
            "resources/read",
            "prompts/list",
            "prompts/get",
            "notifications/cancelled",
            "sampling/createMessage",
        ] {
            assert_eq!(Method::parse(name).as_str(), name);
        }
        assert_eq!(
            Method::parse("completion/complete"),
            Method::Other("completion/complete".into())
        );
    }

    #[test]
    fn builders() {
        assert_eq!(
            error_response(
                Some(&Id::Number(7)),
                DENIED,
                "denied",
                Some(json!({"reasons": ["p1"]}))
            ),
            json!({"jsonrpc": "2.0", "id": 7, "error": {"code": -32010, "message": "denied", "data": {"reasons": ["p1"]}}})
        );
        assert_eq!(
            error_response(None, PARSE_ERROR, "x", None),
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "x"}})
        );
        assert_eq!(
            result_response(&Id::String("s".into()), json!({})),
            json!({"jsonrpc": "2.0", "id": "s", "result": {}})
        );
        let codes = [
            DENIED,
            APPROVAL_REQUIRED,
            TOOL_QUARANTINED,
            SECRET_IN_ARGUMENTS,
            UPSTREAM_UNAVAILABLE,
            LEDGER_UNAVAILABLE,
            TOO_LARGE_TO_EXAMINE,
        ];
        for c in codes {
            assert!((-32099..=-32000).contains(&c));
            assert!(![-32000, -32001, -32002, -32003, -32042].contains(&c));
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            ".{0,8}".prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(".{0,6}", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn arb_id() -> impl Strategy<Value = Id> {
        prop_oneof![any::<i64>().prop_map(Id::Number), ".{0,8}".prop_map(Id::String)]
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        fn params() -> impl Strategy<Value = Option<Map<String, Value>>> {
            prop::option::of(prop::collection::btree_map(".{0,6}", arb_json(), 0..4))
                .prop_map(|m| m.map(|m| m.into_iter().collect::<Map<_, _>>()))
        }
        prop_oneof![
            (arb_id(), ".{1,12}", params()).prop_map(|(id, method, params)| Message::Request(Request {
                id,
                method,
                params
            })),
            (".{1,12}", params())
                .prop_map(|(method, params)| Message::Notification(Notification { method, params })),
            (arb_id(), arb_json()).prop_map(|(id, result)| Message::Response(Response { id, result })),
            (
                prop::option::of(arb_id()),
                any::<i64>(),
                ".{0,8}",
                prop::option::of(arb_json())
            )
                .prop_map(|(id, code, message, data)| Message::Error(ErrorResponse {
                    id,
                    error: RpcError {
                        code,
                        message,
                        data: data.filter(|d| !d.is_null())
                    }
                })),
        ]
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&bytes, &Limits { max_bytes: 256, max_depth: 8 });
        }

        #[test]
        fn json_shaped_bytes_never_panic(s in r#"[\[\]{}",:\\a-z0-9 .-]{0,200}"#) {
            let _ = parse(s.as_bytes(), &Limits { max_bytes: 1 << 20, max_depth: 4 });
        }

        #[test]
        fn arbitrary_json_values_never_panic(v in arb_json()) {
            let _ = Message::try_from(v.clone());
            let _ = parse(&serde_json::to_vec(&v).unwrap(), &Limits::default());
        }

        #[test]
        fn messages_round_trip(m in arb_message()) {
            let bytes = serde_json::to_vec(&m.to_value()).unwrap();
            prop_assert_eq!(parse(&bytes, &Limits::default()).unwrap(), m);
        }

        #[test]
        fn depth_scan_agrees_with_serde(v in arb_json()) {
            fn depth(v: &Value) -> usize {
                match v {
                    Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
                    Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
                    _ => 0,
                }
            }
            let bytes = serde_json::to_vec(&v).unwrap();
            let d = depth(&v);
            prop_assert!(check_depth(&bytes, d).is_ok());
            if d > 0 {
                prop_assert_eq!(check_depth(&bytes, d - 1), Err(ParseError::TooDeep { max: d - 1 }));
            }
        }
    }
}
