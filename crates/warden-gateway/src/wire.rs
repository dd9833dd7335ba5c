//! MCP 2026-07-28 on Streamable HTTP: what changes for a gateway, checked without IO.
//!
//! In 2026-07-28 there is no `initialize` and no session: every request carries its protocol
//! version and the client's capabilities in `params._meta`
//! (`io.modelcontextprotocol/protocolVersion`, `io.modelcontextprotocol/clientCapabilities`), and
//! the HTTP transport mirrors parts of the body into headers so intermediaries can route without
//! reading it: `MCP-Protocol-Version`, `Mcp-Method` (the method), `Mcp-Name` (`params.name` of
//! `tools/call` and `prompts/get`, `params.uri` of `resources/read`) and `Mcp-Param-{token}` (a
//! primitive tool argument whose schema property carries `x-mcp-header: token`). A server that reads
//! the body MUST refuse a request whose headers disagree with it (HTTP 400, JSON-RPC -32020
//! `HeaderMismatch`).
//!
//! Warden reads the body, so it is such a server, and it never trusts a header over the body: the
//! headers are only checked here ([`check_request`], [`check_param_headers`]) and then dropped;
//! what an upstream receives is derived again from the decided body ([`name_header`],
//! [`param_headers`]). Values may be carried in the spec's Base64 sentinel (`=?base64?…?=`,
//! [`decode_header_value`], [`encode_header_value`]).

use base64::Engine as _;
use serde_json::{Map, Value};

use crate::jsonrpc::{self, Message};

/// The modern (sessionless) MCP revisions: per-request `_meta` instead of `initialize`.
pub const MODERN_PROTOCOL_VERSIONS: [&str; 1] = ["2026-07-28"];

/// `_meta` key of a request's protocol version (2026-07-28).
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of the client's capabilities (2026-07-28).
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of the client's identity (2026-07-28, optional).
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key of the server's identity in results (2026-07-28).
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";

/// The header names (lowercase).
pub const PROTOCOL_VERSION_HEADER: &str = "mcp-protocol-version";
pub const METHOD_HEADER: &str = "mcp-method";
pub const NAME_HEADER: &str = "mcp-name";
/// Prefix of the headers mirrored from tool arguments (lowercase; the token follows).
pub const PARAM_HEADER_PREFIX: &str = "mcp-param-";

/// Most `Mcp-Param-*` headers read from one request.
pub const MAX_PARAM_HEADERS: usize = 64;
/// Most schema positions walked looking for `x-mcp-header` annotations.
const MAX_SCHEMA_POSITIONS: usize = 10_000;

/// Whether `version` is a modern (sessionless) revision.
pub fn is_modern(version: &str) -> bool {
    MODERN_PROTOCOL_VERSIONS.contains(&version)
}

/// Methods and notifications of earlier revisions that 2026-07-28 removed, with what replaces them.
const REMOVED: [(&str, &str); 10] = [
    (
        "initialize",
        "2026-07-28 has no handshake: each request carries its protocol version and client capabilities in `params._meta` (call `server/discover` to learn the server's versions); `initialize` is answered only at 2025-06-18 and 2025-11-25",
    ),
    ("notifications/initialized", "2026-07-28 has no handshake"),
    ("ping", "2026-07-28 removed `ping`"),
    (
        "logging/setLevel",
        "2026-07-28 removed `logging/setLevel`: set `io.modelcontextprotocol/logLevel` in a request's `_meta`",
    ),
    (
        "resources/subscribe",
        "2026-07-28 replaced `resources/subscribe` with `subscriptions/listen`",
    ),
    (
        "resources/unsubscribe",
        "2026-07-28 replaced `resources/unsubscribe` with closing the `subscriptions/listen` stream",
    ),
    (
        "notifications/roots/list_changed",
        "2026-07-28 removed `notifications/roots/list_changed`",
    ),
    (
        "tasks/result",
        "2026-07-28 moved tasks into the `io.modelcontextprotocol/tasks` extension, which polls `tasks/get` instead of `tasks/result`",
    ),
    (
        "tasks/list",
        "2026-07-28 moved tasks into the `io.modelcontextprotocol/tasks` extension, which has no `tasks/list`",
    ),
    (
        "notifications/elicitation/complete",
        "2026-07-28 removed `notifications/elicitation/complete` (a client retries the original request instead)",
    ),
];

/// Why `method` does not exist at 2026-07-28, when an earlier revision had it.
pub fn removed(method: &str) -> Option<&'static str> {
    REMOVED.iter().find(|(m, _)| *m == method).map(|(_, why)| *why)
}

/// A refusal on the 2026-07-28 wire: the JSON-RPC code and a message naming what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct WireError {
    pub code: i64,
    pub message: String,
    /// `data` of the error (the supported versions of an unsupported-version error).
    pub data: Option<Value>,
}

impl WireError {
    fn new(code: i64, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            data: None,
        }
    }

    fn mismatch(message: impl Into<String>) -> Self {
        Self::new(
            jsonrpc::HEADER_MISMATCH,
            format!("header mismatch: {}", message.into()),
        )
    }

    /// The HTTP status of the refusal (2026-07-28 Streamable HTTP): 404 for a method the server
    /// does not implement, 400 for everything else.
    pub fn http_status(&self) -> u16 {
        if self.code == jsonrpc::METHOD_NOT_FOUND {
            404
        } else {
            400
        }
    }
}

/// The request-metadata headers of one POST, read and checked for shape (not yet against the body).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaHeaders {
    pub protocol_version: Option<String>,
    pub method: Option<String>,
    /// `Mcp-Name`, decoded from the Base64 sentinel when it was encoded.
    pub name: Option<String>,
    /// `Mcp-Param-{token}` headers: the token lowercased, and the value decoded.
    pub params: Vec<(String, String)>,
}

impl MetaHeaders {
    /// Reads the request-metadata headers from `(name, value)` pairs (any case). Each header may
    /// appear once (a first-copy and a last-copy reader would disagree); values must be visible
    /// ASCII (or space/tab) and a Base64 sentinel must decode to UTF-8.
    pub fn read<'a>(headers: impl IntoIterator<Item = (&'a str, &'a [u8])>) -> Result<Self, WireError> {
        let mut out = MetaHeaders::default();
        for (name, raw) in headers {
            let lower = name.to_ascii_lowercase();
            let is_param = lower.starts_with(PARAM_HEADER_PREFIX);
            if !is_param && ![PROTOCOL_VERSION_HEADER, METHOD_HEADER, NAME_HEADER].contains(&lower.as_str()) {
                continue;
            }
            let text = std::str::from_utf8(raw)
                .ok()
                .filter(|t| t.bytes().all(|b| b == b'\t' || (0x20..=0x7e).contains(&b)))
                .ok_or_else(|| {
                    WireError::mismatch(format!("`{lower}` holds characters a header value may not"))
                })?;
            let dup = || WireError::mismatch(format!("`{lower}` appears more than once"));
            if is_param {
                let token = lower[PARAM_HEADER_PREFIX.len()..].to_owned();
                if out.params.iter().any(|(t, _)| *t == token) {
                    return Err(dup());
                }
                if out.params.len() >= MAX_PARAM_HEADERS {
                    return Err(WireError::mismatch(format!(
                        "more than {MAX_PARAM_HEADERS} Mcp-Param-* headers"
                    )));
                }
                let value = decode_header_value(text).ok_or_else(|| {
                    WireError::mismatch(format!("`{lower}` holds a malformed base64 value"))
                })?;
                out.params.push((token, value));
                continue;
            }
            let slot = match lower.as_str() {
                PROTOCOL_VERSION_HEADER => &mut out.protocol_version,
                METHOD_HEADER => &mut out.method,
                _ => &mut out.name,
            };
            if slot.is_some() {
                return Err(dup());
            }
            *slot = Some(if lower == NAME_HEADER {
                decode_header_value(text)
                    .ok_or_else(|| WireError::mismatch("`mcp-name` holds a malformed base64 value"))?
            } else {
                text.to_owned()
            });
        }
        Ok(out)
    }
}

/// The body member `Mcp-Name` mirrors for `method` (`None`: the method carries no `Mcp-Name`).
pub fn name_param(method: &str) -> Option<&'static str> {
    match method {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    }
}

/// The protocol version a message's `params._meta` declares, if any.
pub fn declared_version(message: &Message) -> Option<&str> {
    let params = match message {
        Message::Request(r) => r.params.as_ref(),
        Message::Notification(n) => n.params.as_ref(),
        _ => None,
    }?;
    params.get("_meta")?.get(META_PROTOCOL_VERSION)?.as_str()
}

/// Checks one message an agent sent on the 2026-07-28 wire against its headers: only requests;
/// no method 2026-07-28 removed; `_meta` with the protocol version and the client's capabilities;
/// `MCP-Protocol-Version`, `Mcp-Method` and (for `tools/call`, `resources/read`, `prompts/get`)
/// `Mcp-Name` present and equal to the body. `Mcp-Param-*` is checked by [`check_param_headers`],
/// which needs the tool's schema. `Ok`: the protocol version.
pub fn check_request(h: &MetaHeaders, message: &Message) -> Result<String, WireError> {
    let req = match message {
        Message::Request(r) => r,
        Message::Notification(n) => {
            return Err(WireError::new(
                jsonrpc::INVALID_REQUEST,
                format!(
                    "MCP 2026-07-28 defines no client notifications over Streamable HTTP (`{}` is not forwarded; close the response stream to cancel a request)",
                    clip(&n.method)
                ),
            ));
        }
        Message::Response(_) | Message::Error(_) => {
            return Err(WireError::new(
                jsonrpc::INVALID_REQUEST,
                "MCP 2026-07-28 servers send no requests for a client to answer (input is requested by an `input_required` result and sent with a retry of the original request)",
            ));
        }
    };
    if let Some(why) = removed(&req.method) {
        return Err(WireError::new(
            jsonrpc::METHOD_NOT_FOUND,
            format!("method `{}` does not exist in MCP 2026-07-28: {why}", req.method),
        ));
    }
    let meta = req.params.as_ref().and_then(|p| p.get("_meta"));
    let Some(meta) = meta.and_then(Value::as_object) else {
        return Err(WireError::new(
            jsonrpc::INVALID_PARAMS,
            format!(
                "an MCP 2026-07-28 request carries `params._meta` with `{META_PROTOCOL_VERSION}` and `{META_CLIENT_CAPABILITIES}`; this one has no `_meta` object"
            ),
        ));
    };
    let missing: Vec<&str> = [META_PROTOCOL_VERSION, META_CLIENT_CAPABILITIES]
        .into_iter()
        .filter(|k| !meta.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        return Err(WireError::new(
            jsonrpc::INVALID_PARAMS,
            format!(
                "`params._meta` lacks `{}` (required in MCP 2026-07-28)",
                missing.join("`, `")
            ),
        ));
    }
    let Some(version) = meta.get(META_PROTOCOL_VERSION).and_then(Value::as_str) else {
        return Err(WireError::new(
            jsonrpc::INVALID_PARAMS,
            format!("`params._meta.{META_PROTOCOL_VERSION}` must be a string"),
        ));
    };
    match h.protocol_version.as_deref() {
        None => return Err(WireError::mismatch("the MCP-Protocol-Version header is missing")),
        Some(v) if v != version => {
            return Err(WireError::mismatch(format!(
                "MCP-Protocol-Version `{}` is not the body's `{}`",
                clip(v),
                clip(version)
            )));
        }
        Some(_) => {}
    }
    match h.method.as_deref() {
        None => return Err(WireError::mismatch("the Mcp-Method header is missing")),
        Some(m) if m != req.method => {
            return Err(WireError::mismatch(format!(
                "Mcp-Method `{}` is not the body's method `{}`",
                clip(m),
                clip(&req.method)
            )));
        }
        Some(_) => {}
    }
    match name_param(&req.method) {
        Some(key) => {
            let body = req
                .params
                .as_ref()
                .and_then(|p| p.get(key))
                .and_then(Value::as_str);
            match (h.name.as_deref(), body) {
                (None, _) => {
                    return Err(WireError::mismatch(format!(
                        "the Mcp-Name header is missing (required for `{}`)",
                        req.method
                    )));
                }
                (Some(n), Some(b)) if n != b => {
                    return Err(WireError::mismatch(format!(
                        "Mcp-Name `{}` is not the body's `{key}` `{}`",
                        clip(n),
                        clip(b)
                    )));
                }
                (Some(_), None) => {
                    return Err(WireError::new(
                        jsonrpc::INVALID_PARAMS,
                        format!("`{}`: `params.{key}` must be a string", req.method),
                    ));
                }
                (Some(_), Some(_)) => {}
            }
        }
        None if h.name.is_some() => {
            return Err(WireError::mismatch(format!(
                "Mcp-Name is sent only with tools/call, resources/read and prompts/get, not `{}`",
                clip(&req.method)
            )));
        }
        None => {}
    }
    if req.method != "tools/call" && !h.params.is_empty() {
        return Err(WireError::mismatch(format!(
            "Mcp-Param-* headers are sent only with tools/call, not `{}`",
            clip(&req.method)
        )));
    }
    if !is_modern(version) {
        return Err(WireError {
            code: jsonrpc::UNSUPPORTED_PROTOCOL_VERSION,
            message: format!(
                "unsupported protocol version `{}` for a request with per-request `_meta`",
                clip(version)
            ),
            data: Some(serde_json::json!({
                "supported": MODERN_PROTOCOL_VERSIONS,
                "requested": version,
            })),
        });
    }
    Ok(version.to_owned())
}

fn clip(s: &str) -> String {
    let mut end = s.len().min(128);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].escape_debug().to_string()
}

/// One `x-mcp-header` annotation of a tool's input schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    /// The chain of `properties` keys from the schema's root to the annotated property.
    pub path: Vec<String>,
    /// The annotation's value: the header is `Mcp-Param-{token}`.
    pub token: String,
    /// The property's type: `string`, `integer` or `boolean`.
    pub kind: String,
}

/// JSON Schema keywords whose value is one subschema (leaving the `properties` chain).
const SUBSCHEMA_ONE: [&str; 11] = [
    "items",
    "contains",
    "unevaluatedItems",
    "additionalProperties",
    "propertyNames",
    "unevaluatedProperties",
    "not",
    "if",
    "then",
    "else",
    "contentSchema",
];
/// Keywords whose value is an array of subschemas.
const SUBSCHEMA_LIST: [&str; 4] = ["allOf", "anyOf", "oneOf", "prefixItems"];
/// Keywords whose value is an object of subschemas.
const SUBSCHEMA_MAP: [&str; 4] = ["patternProperties", "dependentSchemas", "$defs", "definitions"];

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The `x-mcp-header` annotations of a tool's `inputSchema`, checked as 2026-07-28 requires: on a
/// property reachable from the root through `properties` keys only, a non-empty HTTP token,
/// unique regardless of case, on a `string`, `integer` or `boolean` property. `Err`: why the
/// annotations are invalid (a conforming client drops such a tool).
pub fn param_annotations(schema: &Value) -> Result<Vec<ParamHeader>, String> {
    let mut out: Vec<ParamHeader> = Vec::new();
    let mut stack: Vec<(Option<Vec<String>>, &Value)> = vec![(Some(Vec::new()), schema)];
    let mut walked = 0usize;
    while let Some((path, node)) = stack.pop() {
        let Value::Object(s) = node else { continue };
        walked += 1;
        if walked > MAX_SCHEMA_POSITIONS {
            return Err(format!(
                "the input schema has more than {MAX_SCHEMA_POSITIONS} schema positions"
            ));
        }
        if let Some(token) = s.get("x-mcp-header") {
            let Some(path) = path.as_ref().filter(|p| !p.is_empty()) else {
                return Err(
                    "`x-mcp-header` on a schema position not reached through `properties` alone".into(),
                );
            };
            let at = path.join(".");
            let Some(token) = token.as_str() else {
                return Err(format!("property `{at}`: `x-mcp-header` must be a string"));
            };
            if !is_token(token) {
                return Err(format!(
                    "property `{at}`: `x-mcp-header` `{}` is not an HTTP token",
                    clip(token)
                ));
            }
            let kind = s.get("type").and_then(Value::as_str).unwrap_or("");
            if !["string", "integer", "boolean"].contains(&kind) {
                return Err(format!(
                    "property `{at}`: `x-mcp-header` is allowed only on string, integer and boolean properties"
                ));
            }
            if out.iter().any(|p| p.token.eq_ignore_ascii_case(token)) {
                return Err(format!("`x-mcp-header` `{token}` appears twice"));
            }
            out.push(ParamHeader {
                path: path.clone(),
                token: token.to_owned(),
                kind: kind.to_owned(),
            });
        }
        for (k, v) in s {
            if k == "properties" {
                if let Value::Object(props) = v {
                    for (name, sub) in props {
                        let p = path.as_ref().map(|p| {
                            let mut p = p.clone();
                            p.push(name.clone());
                            p
                        });
                        stack.push((p, sub));
                    }
                }
            } else if SUBSCHEMA_ONE.contains(&k.as_str()) {
                stack.push((None, v));
            } else if SUBSCHEMA_LIST.contains(&k.as_str()) {
                if let Value::Array(a) = v {
                    stack.extend(a.iter().map(|s| (None, s)));
                }
            } else if SUBSCHEMA_MAP.contains(&k.as_str())
                && let Value::Object(m) = v
            {
                stack.extend(m.values().map(|s| (None, s)));
            }
        }
    }
    out.sort_by_key(|a| a.token.to_ascii_lowercase());
    Ok(out)
}

fn value_at<'a>(args: Option<&'a Map<String, Value>>, path: &[String]) -> Option<&'a Value> {
    let mut node = args?;
    let (last, init) = path.split_last()?;
    for k in init {
        node = node.get(k)?.as_object()?;
    }
    node.get(last).filter(|v| !v.is_null())
}

/// How an argument is written into its header (`None`: it has no header form).
fn render(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Some(n.to_string()),
        _ => None,
    }
}

/// Whether a decoded header value is the argument: integers compare numerically (`42.0` is `42`),
/// everything else as the argument's header form.
fn same(kind: &str, arg: &Value, rendered: &str, header: &str) -> bool {
    if kind == "integer"
        && let Some(n) = arg
            .as_i64()
            .map(i128::from)
            .or_else(|| arg.as_u64().map(i128::from))
    {
        let (whole, frac_ok) = match header.split_once('.') {
            None => (header, true),
            Some((w, f)) => (w, !f.is_empty() && f.bytes().all(|b| b == b'0')),
        };
        let digits = whole.strip_prefix('-').unwrap_or(whole);
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && frac_ok {
            return whole.parse::<i128>().is_ok_and(|h| h == n);
        }
        return false;
    }
    header == rendered
}

/// Checks a `tools/call`'s `Mcp-Param-*` headers against its arguments, by the tool's input
/// schema: every header names an annotated parameter; an argument with a value has its header and
/// the two agree; an absent (or null) argument has none. A schema whose annotations are invalid
/// takes no headers at all.
pub fn check_param_headers(
    tool: &str,
    schema: Option<&Value>,
    arguments: Option<&Map<String, Value>>,
    h: &MetaHeaders,
) -> Result<(), WireError> {
    let annotations = match schema.map(param_annotations) {
        None => Vec::new(),
        Some(Ok(a)) => a,
        Some(Err(why)) => {
            if let Some((token, _)) = h.params.first() {
                return Err(WireError::mismatch(format!(
                    "Mcp-Param-{token}: the `x-mcp-header` annotations of tool `{}` are invalid ({why}), so it takes no Mcp-Param-* headers",
                    clip(tool)
                )));
            }
            return Ok(());
        }
    };
    for (token, _) in &h.params {
        if !annotations.iter().any(|a| a.token.eq_ignore_ascii_case(token)) {
            return Err(WireError::mismatch(format!(
                "Mcp-Param-{token} names no `x-mcp-header` parameter of tool `{}` as Warden catalogued it",
                clip(tool)
            )));
        }
    }
    for a in &annotations {
        let header = h
            .params
            .iter()
            .find(|(t, _)| a.token.eq_ignore_ascii_case(t))
            .map(|(_, v)| v.as_str());
        let at = a.path.join(".");
        let arg = value_at(arguments, &a.path);
        match (arg.and_then(|v| render(v).map(|r| (v, r))), header) {
            (None, None) => {}
            (None, Some(_)) if arg.is_some() => {
                return Err(WireError::mismatch(format!(
                    "Mcp-Param-{} does not match argument `{at}` (which has no header form)",
                    a.token
                )));
            }
            (None, Some(_)) => {
                return Err(WireError::mismatch(format!(
                    "Mcp-Param-{} is sent but argument `{at}` is absent",
                    a.token
                )));
            }
            (Some(_), None) => {
                return Err(WireError::mismatch(format!(
                    "Mcp-Param-{} is missing but argument `{at}` is present",
                    a.token
                )));
            }
            (Some((v, rendered)), Some(h)) => {
                if !same(&a.kind, v, &rendered, h) {
                    return Err(WireError::mismatch(format!(
                        "Mcp-Param-{} `{}` does not match argument `{at}`",
                        a.token,
                        clip(h)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The `Mcp-Param-*` headers a `tools/call` with `arguments` carries by the tool's input schema
/// (none when the schema's annotations are invalid), values encoded.
pub fn param_headers(
    schema: Option<&Value>,
    arguments: Option<&Map<String, Value>>,
) -> Vec<(String, String)> {
    let Some(Ok(annotations)) = schema.map(param_annotations) else {
        return Vec::new();
    };
    annotations
        .iter()
        .filter_map(|a| {
            let v = render(value_at(arguments, &a.path)?)?;
            Some((format!("Mcp-Param-{}", a.token), encode_header_value(&v)))
        })
        .collect()
}

/// The `Mcp-Name` header of a request (encoded), when its method carries one.
pub fn name_header(method: &str, params: Option<&Map<String, Value>>) -> Option<String> {
    let key = name_param(method)?;
    params?.get(key)?.as_str().map(encode_header_value)
}

const SENTINEL_START: &str = "=?base64?";
const SENTINEL_END: &str = "?=";

fn is_sentinel(s: &str) -> bool {
    s.len() >= SENTINEL_START.len() + SENTINEL_END.len()
        && s.starts_with(SENTINEL_START)
        && s.ends_with(SENTINEL_END)
}

/// A value as a header carries it: as it is when it is printable ASCII without surrounding spaces
/// (and does not look like the sentinel), else `=?base64?{base64 of its UTF-8}?=`.
pub fn encode_header_value(value: &str) -> String {
    let plain =
        value.bytes().all(|b| (0x20..=0x7e).contains(&b)) && value.trim() == value && !is_sentinel(value);
    if plain {
        value.to_owned()
    } else {
        format!(
            "{SENTINEL_START}{}{SENTINEL_END}",
            base64::engine::general_purpose::STANDARD.encode(value.as_bytes())
        )
    }
}

/// A header value decoded: the Base64 sentinel's UTF-8 (`None` when it is not canonical base64 of
/// UTF-8), else the value itself.
pub fn decode_header_value(value: &str) -> Option<String> {
    if !is_sentinel(value) {
        return Some(value.to_owned());
    }
    let payload = &value[SENTINEL_START.len()..value.len() - SENTINEL_END.len()];
    let bytes = base64::engine::general_purpose::STANDARD.decode(payload).ok()?;
    if base64::engine::general_purpose::STANDARD.encode(&bytes) != payload {
        return None;
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use serde_json::json;

    fn msg(v: Value) -> Message {
        jsonrpc::parse(v.to_string().as_bytes(), &Default::default()).unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> MetaHeaders {
        MetaHeaders::read(pairs.iter().map(|(k, v)| (*k, v.as_bytes()))).unwrap()
    }

    fn meta() -> Value {
        json!({META_PROTOCOL_VERSION: "2026-07-28", META_CLIENT_CAPABILITIES: {}})
    }

    fn call(name: &str, args: Value) -> Message {
        msg(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                   "params": {"name": name, "arguments": args, "_meta": meta()}}))
    }

    const STD: [(&str, &str); 2] = [
        ("MCP-Protocol-Version", "2026-07-28"),
        ("Mcp-Method", "tools/call"),
    ];

    #[test]
    fn header_values_round_trip_through_the_sentinel() {
        for v in [
            "us-west1",
            "Hello, 世界",
            " padded ",
            "line1\nline2",
            "=?base64?literal?=",
        ] {
            let e = encode_header_value(v);
            assert!(e.bytes().all(|b| (0x20..=0x7e).contains(&b)), "{e}");
            assert_eq!(decode_header_value(&e).as_deref(), Some(v));
        }
        assert_eq!(
            encode_header_value("Hello, 世界"),
            "=?base64?SGVsbG8sIOS4lueVjA==?="
        );
        assert_eq!(decode_header_value("=?base64?not base64?="), None);
        // Non-canonical (non-zero trailing bits) is refused, not read as something else.
        assert_eq!(decode_header_value("=?base64?QR==?="), None);
    }

    #[test]
    fn the_body_decides_and_headers_must_agree() {
        let h = |name: &str| {
            let mut p = STD.to_vec();
            p.push(("Mcp-Name", name));
            headers(&p)
        };
        assert_eq!(
            check_request(&h("search"), &call("search", json!({}))).unwrap(),
            "2026-07-28"
        );
        let e = check_request(&h("search"), &call("purge", json!({}))).unwrap_err();
        assert_eq!(e.code, jsonrpc::HEADER_MISMATCH);
        assert_eq!(e.http_status(), 400);
        assert!(
            e.message.contains("Mcp-Name `search`") && e.message.contains("`purge`"),
            "{e}"
        );
        let wrong_method = headers(&[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/list"),
            ("Mcp-Name", "purge"),
        ]);
        let e = check_request(&wrong_method, &call("purge", json!({}))).unwrap_err();
        assert_eq!(e.code, jsonrpc::HEADER_MISMATCH);
        assert!(e.message.contains("Mcp-Method `tools/list`"), "{e}");
        // Encoded names are decoded before they are compared.
        let encoded = encode_header_value("naïve");
        assert!(check_request(&h(&encoded), &call("naïve", json!({}))).is_ok());
        // Missing headers are a mismatch too.
        let e = check_request(&headers(&STD), &call("search", json!({}))).unwrap_err();
        assert!(e.message.contains("Mcp-Name header is missing"), "{e}");
    }

    #[test]
    fn the_envelope_is_required_and_removed_methods_are_named() {
        let h = headers(&[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/list"),
        ]);
        let bare = msg(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}));
        let e = check_request(&h, &bare).unwrap_err();
        assert_eq!(e.code, jsonrpc::INVALID_PARAMS);
        assert!(e.message.contains(META_PROTOCOL_VERSION), "{e}");
        let half = msg(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                              "params": {"_meta": {META_PROTOCOL_VERSION: "2026-07-28"}}}));
        let e = check_request(&h, &half).unwrap_err();
        assert!(e.message.contains(META_CLIENT_CAPABILITIES), "{e}");
        for m in ["ping", "initialize", "logging/setLevel", "resources/subscribe"] {
            let e = check_request(&h, &msg(json!({"jsonrpc": "2.0", "id": 1, "method": m}))).unwrap_err();
            assert_eq!(e.code, jsonrpc::METHOD_NOT_FOUND, "{m}");
            assert_eq!(e.http_status(), 404);
            assert!(e.message.contains(m), "{e}");
        }
        let note = msg(json!({"jsonrpc": "2.0", "method": "notifications/cancelled"}));
        assert_eq!(
            check_request(&h, &note).unwrap_err().code,
            jsonrpc::INVALID_REQUEST
        );
        let other = headers(&[
            ("MCP-Protocol-Version", "2026-07-28"),
            ("Mcp-Method", "tools/list"),
        ]);
        let old = msg(json!({"jsonrpc": "2.0", "id": 1, "method": "tools/list",
                             "params": {"_meta": {META_PROTOCOL_VERSION: "2025-11-25", META_CLIENT_CAPABILITIES: {}}}}));
        assert_eq!(
            check_request(&other, &old).unwrap_err().code,
            jsonrpc::HEADER_MISMATCH
        );
    }

    #[test]
    fn duplicate_and_malformed_headers_are_refused() {
        let pairs: [(&str, &[u8]); 2] = [("mcp-method", b"tools/list"), ("Mcp-Method", b"tools/call")];
        assert_eq!(
            MetaHeaders::read(pairs).unwrap_err().code,
            jsonrpc::HEADER_MISMATCH
        );
        let bad: [(&str, &[u8]); 1] = [("mcp-name", b"a\x01b")];
        assert!(MetaHeaders::read(bad).is_err());
        let bad: [(&str, &[u8]); 1] = [("mcp-param-region", b"=?base64?%%?=")];
        assert!(MetaHeaders::read(bad).is_err());
    }

    fn region_schema() -> Value {
        json!({"type": "object", "properties": {
            "region": {"type": "string", "x-mcp-header": "Region"},
            "limit": {"type": "integer", "x-mcp-header": "Limit"},
            "opts": {"type": "object", "properties": {"dry": {"type": "boolean", "x-mcp-header": "Dry"}}},
            "query": {"type": "string"}}})
    }

    #[test]
    fn param_headers_must_match_the_arguments() {
        let s = region_schema();
        let args = json!({"region": "us-west1", "limit": 42, "opts": {"dry": true}, "query": "x"});
        let args = args.as_object();
        let good = headers(&[
            ("Mcp-Param-Region", "us-west1"),
            ("mcp-param-limit", "42.0"),
            ("Mcp-Param-Dry", "true"),
        ]);
        check_param_headers("q", Some(&s), args, &good).unwrap();
        for (bad, what) in [
            (
                vec![
                    ("Mcp-Param-Region", "eu-west1"),
                    ("Mcp-Param-Limit", "42"),
                    ("Mcp-Param-Dry", "true"),
                ],
                "Region",
            ),
            (
                vec![("Mcp-Param-Limit", "42"), ("Mcp-Param-Dry", "true")],
                "missing",
            ),
            (
                vec![
                    ("Mcp-Param-Region", "us-west1"),
                    ("Mcp-Param-Limit", "42.5"),
                    ("Mcp-Param-Dry", "true"),
                ],
                "Limit",
            ),
            (
                vec![
                    ("Mcp-Param-Region", "us-west1"),
                    ("Mcp-Param-Limit", "42"),
                    ("Mcp-Param-Dry", "true"),
                    ("Mcp-Param-Query", "x"),
                ],
                "Query",
            ),
        ] {
            let e = check_param_headers("q", Some(&s), args, &headers(&bad)).unwrap_err();
            assert_eq!(e.code, jsonrpc::HEADER_MISMATCH);
            assert!(
                e.message.to_lowercase().contains(&what.to_lowercase()),
                "{what}: {e}"
            );
        }
        // An absent argument takes no header.
        let none = json!({"query": "x"});
        check_param_headers("q", Some(&s), none.as_object(), &headers(&[])).unwrap();
        let e = check_param_headers(
            "q",
            Some(&s),
            none.as_object(),
            &headers(&[("Mcp-Param-Region", "x")]),
        )
        .unwrap_err();
        assert!(e.message.contains("absent"), "{e}");
        // What Warden sends is derived from the body.
        let mut sent = param_headers(Some(&s), args);
        sent.sort();
        assert_eq!(
            sent,
            [
                ("Mcp-Param-Dry".to_owned(), "true".to_owned()),
                ("Mcp-Param-Limit".to_owned(), "42".to_owned()),
                ("Mcp-Param-Region".to_owned(), "us-west1".to_owned())
            ]
        );
    }

    #[test]
    fn invalid_annotations_take_no_headers() {
        for s in [
            json!({"type": "object", "properties": {"a": {"type": "number", "x-mcp-header": "A"}}}),
            json!({"type": "object", "properties": {"a": {"type": "array", "items": {"type": "string", "x-mcp-header": "A"}}}}),
            json!({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "A"}, "b": {"type": "string", "x-mcp-header": "a"}}}),
            json!({"type": "object", "properties": {"a": {"type": "string", "x-mcp-header": "bad header"}}}),
            json!({"type": "string", "x-mcp-header": "Root"}),
        ] {
            assert!(param_annotations(&s).is_err(), "{s}");
            assert!(param_headers(Some(&s), json!({"a": "x"}).as_object()).is_empty());
            let e = check_param_headers("t", Some(&s), None, &headers(&[("Mcp-Param-A", "x")])).unwrap_err();
            assert!(e.message.contains("invalid"), "{e}");
        }
    }
}
