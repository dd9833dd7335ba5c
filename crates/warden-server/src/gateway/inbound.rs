//! Inbound: every message an agent sends to an upstream, classified into the question policy
//! decides — or refused before policy, with the reason. Nothing here sends anything; what may be
//! sent leaves as the message of a [`super::clearance::Clearance`].
//!
//! | message | question (action, resource, `context.mcp`) | refused before policy when |
//! |---|---|---|
//! | request `tools/call` | the tool's class, `Tool`, arguments in `context.args` | unknown or quarantined tool, bad params |
//! | request `resources/read`, `resources/subscribe`, `resources/unsubscribe` | `read`, `McpResource` (the URI) | no `uri` |
//! | request `prompts/get` | `read`, `Prompt`, arguments | no `name` |
//! | request `completion/complete` | `read`, the `Prompt` or `McpResource` its `ref` names | bad `ref` |
//! | request `initialize`, `ping`, the list methods, `logging/setLevel`, `tasks/*`, `server/discover` (2026-07-28) | `read`, `Upstream` | — |
//! | request `subscriptions/listen` (2026-07-28) | `read`, `Upstream`; its stream is filtered like the `GET` stream | — |
//! | request, any other method | — | always: not governed (-32601) |
//! | notification | `read`, `Upstream` | not an MCP client notification; outside a session of this task |
//! | response / error response | `read`, `Upstream`, kind `response`, the server request's method | its id is not one Warden handed out for a request of this session, or was answered already |
//!
//! A message on the 2026-07-28 wire reaches this only after its headers were checked against its
//! body (`super::modern_wire`); everything here reads the body alone.
//!
//! Everything a message carries besides the arguments (`params` members, `_meta`, a response's
//! result) is the question's `rest`: scanned for secrets like the arguments.

use serde_json::{Map, Value};
use warden_core::{ToolState, Upstream};
use warden_gateway::jsonrpc::{self, Id, Message};
use warden_policy::{Action, McpContext, McpKind, ResourceRef};

use super::clearance::{After, Post};
use crate::AppState;
use crate::pipeline::{Facts, Question};
use crate::tasks::TaskCaller;

/// The notifications MCP clients send (2025-06-18, 2025-11-25).
pub const CLIENT_NOTIFICATIONS: [&str; 4] = [
    "notifications/initialized",
    "notifications/cancelled",
    "notifications/progress",
    "notifications/roots/list_changed",
];

/// Requests that read the upstream as a whole.
const UPSTREAM_READS: [&str; 13] = [
    "initialize",
    "server/discover",
    "subscriptions/listen",
    "ping",
    "tools/list",
    "resources/list",
    "resources/templates/list",
    "prompts/list",
    "logging/setLevel",
    "tasks/get",
    "tasks/list",
    "tasks/result",
    "tasks/cancel",
];

/// A message, classified.
#[derive(Debug)]
pub(super) struct Planned {
    pub question: Question,
    pub facts: Facts,
    /// The id a refusal answers (a request's); `None` for notifications and responses, which are
    /// answered with an HTTP status.
    pub reply_to: Option<Id>,
    /// What is sent when policy allows, and what to do with the answer; or why it is refused
    /// before policy is asked.
    pub action: Result<(Message, Option<Post>), Refuse>,
}

/// A refusal before policy: the reason (recorded) and the JSON-RPC code.
#[derive(Debug)]
pub(super) struct Refuse {
    pub reason: String,
    pub code: i64,
}

fn refuse(reason: String, code: i64) -> Result<(Message, Option<Post>), Refuse> {
    Err(Refuse { reason, code })
}

/// Classifies one message of `caller` to `upstream`. `session` is the upstream session the message
/// arrived in (an HTTP upstream's own id — empty for an upstream without sessions — or a stdio
/// session's key), already checked to belong to this task and upstream.
pub(super) fn classify(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    session: Option<&str>,
    message: Message,
    request_id: Option<String>,
) -> Planned {
    let method = match &message {
        Message::Request(r) => r.method.clone(),
        Message::Notification(n) => n.method.clone(),
        Message::Response(_) | Message::Error(_) => String::new(),
    };
    let kind = match &message {
        Message::Request(_) => McpKind::Request,
        Message::Notification(_) => McpKind::Notification,
        Message::Response(_) | Message::Error(_) => McpKind::Response,
    };
    let (question, facts) = upstream_read(upstream, &method, kind, request_id);
    let mut planned = Planned {
        question,
        facts,
        reply_to: None,
        action: refuse(String::new(), jsonrpc::INVALID_REQUEST),
    };
    match message {
        Message::Request(req) => {
            planned.reply_to = Some(req.id.clone());
            planned.action = request(state, caller, upstream, &mut planned.question, req);
        }
        Message::Notification(n) => {
            planned.action = if !CLIENT_NOTIFICATIONS.contains(&n.method.as_str()) {
                refuse(
                    format!(
                        "not-a-client-notification: `{}` is not a notification MCP clients send; not forwarded",
                        crate::ledger::clip_str(&n.method, 128).escape_debug()
                    ),
                    jsonrpc::INVALID_REQUEST,
                )
            } else if session.is_none() {
                refuse(
                    "no-session: notifications are forwarded only inside a session this task opened on this upstream (send its Mcp-Session-Id)".to_owned(),
                    jsonrpc::INVALID_REQUEST,
                )
            } else {
                planned.question.rest = n.params.clone().map(Value::Object);
                Ok((Message::Notification(n), None))
            };
        }
        Message::Response(_) | Message::Error(_) => {
            planned.action = response(state, caller, upstream, session, &mut planned, message);
        }
    }
    planned
}

/// The question "may this task read the upstream with this MCP message" and the facts of its
/// entry: what every message starts as (a tool call, resource or prompt narrows it), and what
/// Warden's own catalogue fetch, streams and session ends are.
pub(super) fn upstream_read(
    upstream: &Upstream,
    method: &str,
    kind: McpKind,
    request_id: Option<String>,
) -> (Question, Facts) {
    let method = crate::ledger::clip_str(method, 128);
    let mut body = Map::new();
    body.insert("via".into(), "mcp".into());
    body.insert("method".into(), method.clone().into());
    let facts = Facts {
        upstream: Some(upstream.name.to_string()),
        request_id,
        action_label: None,
        body,
    };
    let question = Question {
        action: Action::Read,
        resource: ResourceRef::Upstream(upstream.name.clone()),
        args: None,
        rest: None,
        sensitive: Vec::new(),
        mcp: Some(McpContext { method, kind }),
    };
    (question, facts)
}

/// A request: its question, or its refusal.
fn request(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    q: &mut Question,
    req: jsonrpc::Request,
) -> Result<(Message, Option<Post>), Refuse> {
    let bad = |e: jsonrpc::ParamsError| {
        refuse(
            format!("bad-request: `{}`: {e}", req.method.escape_debug()),
            e.code(),
        )
    };
    let post = |after, tool: Option<String>| Post {
        id: req.id.clone(),
        method: req.method.clone(),
        after,
        tool,
        sent: std::time::Instant::now(),
        to_modern: false,
    };
    let without = |keys: &[&str]| -> Option<Value> {
        let mut rest = req.params.clone()?;
        for k in keys {
            rest.remove(*k);
        }
        (!rest.is_empty()).then_some(Value::Object(rest))
    };
    let m = req.method.as_str();
    let plan = if UPSTREAM_READS.contains(&m) {
        q.rest = req.params.clone().map(Value::Object);
        post(
            match m {
                "tools/list" => After::ToolsList,
                // A long-lived stream of change notifications: no answer deadline.
                "subscriptions/listen" => After::Listen,
                // A task's result is a tool's result: scanned and recorded like one.
                "tasks/result" => After::Result,
                _ => After::Nothing,
            },
            None,
        )
    } else {
        match m {
            "tools/call" => {
                let call = match req.tool_call() {
                    Ok(c) => c,
                    Err(e) => return bad(e),
                };
                let Some(tool) = state.policies.tool(upstream.name.as_str(), call.name) else {
                    // Outside the task, the answer is the same whether the upstream lists the
                    // tool or not; inside it, the tool is unknown.
                    let scope = state.identity.task_contexts.get(&caller.task).ok().and_then(|t| {
                        crate::pipeline::out_of_scope(&t, &ResourceRef::tool(&upstream.name, call.name))
                    });
                    return refuse(
                        scope.unwrap_or_else(|| {
                            format!(
                                "unknown-tool: upstream `{1}` does not list a tool `{0}`",
                                crate::ledger::clip_str(call.name, 200).escape_debug(),
                                upstream.name
                            )
                        }),
                        jsonrpc::DENIED,
                    );
                };
                if tool.state == ToolState::Quarantined {
                    return refuse(tool.quarantine_message(), jsonrpc::TOOL_QUARANTINED);
                }
                q.action = class_action(tool.effective_class());
                q.resource = ResourceRef::tool(&upstream.name, call.name);
                q.args = Some(Value::Object(call.arguments.cloned().unwrap_or_default()));
                q.rest = without(&["name", "arguments"]);
                post(After::Result, Some(call.name.to_owned()))
            }
            "resources/read" | "resources/subscribe" | "resources/unsubscribe" => {
                let uri = match req.resource_read() {
                    Ok(r) => r.uri.to_owned(),
                    Err(e) => return bad(e),
                };
                q.resource = ResourceRef::mcp_resource(&upstream.name, &uri);
                q.args = Some(serde_json::json!({ "uri": uri }));
                q.rest = without(&["uri"]);
                post(
                    if m == "resources/read" {
                        After::Result
                    } else {
                        After::Nothing
                    },
                    None,
                )
            }
            "prompts/get" => {
                let name = match req.prompt_get() {
                    Ok(g) => g.name.to_owned(),
                    Err(e) => return bad(e),
                };
                q.resource = ResourceRef::prompt(&upstream.name, &name);
                let arguments = req
                    .params
                    .as_ref()
                    .and_then(|p| p.get("arguments"))
                    .cloned()
                    .unwrap_or_else(|| Value::Object(Map::new()));
                q.args = Some(serde_json::json!({ "prompt": name, "arguments": arguments }));
                q.rest = without(&["name", "arguments"]);
                post(After::Result, None)
            }
            "completion/complete" => {
                let params = req.params.as_ref();
                let r = params.and_then(|p| p.get("ref"));
                let field = |k: &str| r.and_then(|r| r.get(k)).and_then(Value::as_str);
                q.resource = match field("type") {
                    Some("ref/prompt") => match field("name") {
                        Some(n) => ResourceRef::prompt(&upstream.name, n),
                        None => {
                            return refuse(
                                "bad-request: `completion/complete`: `ref.name` must be a string".into(),
                                jsonrpc::INVALID_PARAMS,
                            );
                        }
                    },
                    Some("ref/resource") => match field("uri") {
                        Some(u) => ResourceRef::mcp_resource(&upstream.name, u),
                        None => {
                            return refuse(
                                "bad-request: `completion/complete`: `ref.uri` must be a string".into(),
                                jsonrpc::INVALID_PARAMS,
                            );
                        }
                    },
                    _ => {
                        return refuse(
                            "bad-request: `completion/complete`: `ref.type` must be `ref/prompt` or `ref/resource`".into(),
                            jsonrpc::INVALID_PARAMS,
                        );
                    }
                };
                q.args = params.and_then(|p| p.get("argument")).cloned();
                q.rest = without(&["ref", "argument"]);
                post(After::Result, None)
            }
            other => {
                return refuse(
                    format!(
                        "method-not-governed: `{}` is not an MCP method Warden governs; not forwarded",
                        crate::ledger::clip_str(other, 128).escape_debug()
                    ),
                    jsonrpc::METHOD_NOT_FOUND,
                );
            }
        }
    };
    Ok((Message::Request(req), Some(plan)))
}

/// A client's answer to a request of the upstream: only to a request Warden relayed in this
/// session, once.
fn response(
    state: &AppState,
    caller: &TaskCaller,
    upstream: &Upstream,
    session: Option<&str>,
    planned: &mut Planned,
    message: Message,
) -> Result<(Message, Option<Post>), Refuse> {
    let sealed = match message.id() {
        Some(Id::String(s)) => s.clone(),
        _ => {
            return refuse(
                "unknown-response: a response is forwarded only as the answer to a request the upstream sent in this session".into(),
                jsonrpc::INVALID_REQUEST,
            );
        }
    };
    let Some((id, method)) =
        state
            .gateway
            .keys
            .open_server_request(&sealed, caller.task.id, upstream.name.as_str(), session)
    else {
        return refuse(
            "unknown-response: the id answers no request the upstream sent in this session".into(),
            jsonrpc::INVALID_REQUEST,
        );
    };
    if !state
        .gateway
        .first_answer(caller.task.id, upstream.name.as_str(), session, &id)
    {
        return refuse(
            "response-replayed: that request of the upstream was answered already".into(),
            jsonrpc::INVALID_REQUEST,
        );
    }
    if let Some(mcp) = &mut planned.question.mcp {
        mcp.method = crate::ledger::clip_str(&method, 128);
    }
    planned
        .facts
        .body
        .insert("method".into(), crate::ledger::clip_str(&method, 128).into());
    planned.facts.body.insert("kind".into(), "response".into());
    let message = match message {
        Message::Response(mut r) => {
            planned.question.rest = Some(r.result.clone());
            r.id = id;
            Message::Response(r)
        }
        Message::Error(mut e) => {
            planned.question.rest = Some(serde_json::json!({
                "message": e.error.message, "data": e.error.data
            }));
            e.id = Some(id);
            Message::Error(e)
        }
        other => other,
    };
    Ok((message, None))
}

/// The action a tool of `class` is decided as (the gateway's `tools/call` and `/v1/authorize`).
pub(crate) fn class_action(class: warden_core::ToolClass) -> Action {
    match class {
        warden_core::ToolClass::Read => Action::Read,
        warden_core::ToolClass::Write => Action::Write,
        warden_core::ToolClass::Destructive => Action::Destructive,
        warden_core::ToolClass::Admin => Action::Admin,
    }
}
