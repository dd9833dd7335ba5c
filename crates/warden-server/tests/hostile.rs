//! Regression tests of the MCP gateway against a hostile upstream (`common::hostile`), through the
//! real router on SQLite and PostgreSQL: one test per way an upstream or an agent broke the
//! gateway's promise (every message decided and recorded, the upstream's credential never seen by
//! the agent, everything coming back filtered). Each test is named after the bug it guards against
//! and asserts only what the gateway promises from outside: HTTP status, JSON-RPC errors, what the
//! agent's bytes hold, what reached the upstream, and what the ledger holds.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request, StatusCode, header};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use common::Api;
use common::agents::{enrolled, exchange, seed, start, task_with};
use common::hostile::{self, AWS_KEY, Config, Echo, Era, GetEvent, Hostile};

api_tests!(
    upstream_faults_end_in_a_clear_answer,
    a_slow_agent_message_is_refused_in_time,
    concurrent_first_calls_wait_for_one_catalogue_fetch,
    notification_tools_call_is_not_forwarded,
    client_notifications_need_a_session_in_scope,
    initialize_notification_spawns_no_stdio_process,
    an_env_secret_named_node_options_never_reaches_a_stdio_child,
    an_env_secret_named_pythonpath_never_reaches_a_stdio_child,
    authorize_cannot_weaken_a_catalogued_tools_class,
    authorize_may_name_a_stricter_class_than_the_catalogue,
    responses_to_unissued_ids_are_refused,
    get_and_delete_outside_the_task_are_refused,
    credential_echoes_are_cut_from_json_answers,
    credential_echoes_are_cut_from_sse_answers,
    credential_echoes_are_cut_from_the_get_stream,
    stdio_secret_in_nested_json_is_cut,
    secret_values_shorter_than_8_bytes_are_refused,
    resumed_streams_are_filtered_and_recorded,
    last_event_ids_warden_did_not_issue_are_refused,
    upstream_error_messages_are_redacted,
    responses_with_foreign_ids_are_not_relayed,
    server_notifications_are_redacted,
    secrets_anywhere_in_params_are_refused,
    standard_methods_are_governed,
    reads_are_limited_to_declared_resources_and_prompts,
    foreign_origins_and_hosts_are_refused,
    catalogue_fetch_is_decided_before_it_is_sent,
    changed_tool_definitions_are_quarantined,
    a_renamed_tool_is_quarantined_not_trusted_as_new,
    a_tool_shadowing_an_approved_ones_description_is_quarantined,
    credential_in_random_escapings_never_reaches_the_agent,
    narrowing_an_agent_ends_the_live_tasks_it_narrows,
    an_empty_json_202_to_a_notification_is_accepted,
    a_refused_first_revision_is_asked_again_not_taken_for_2025,
    out_of_scope_tools_are_reported_as_out_of_scope,
    arguments_too_large_to_scan_are_reported_as_too_large,
    modern_mcp_method_header_that_disagrees_with_the_body_is_refused,
    modern_mcp_name_header_that_disagrees_with_the_body_is_refused,
    modern_mcp_param_headers_that_disagree_with_the_arguments_are_refused,
    modern_requests_without_their_envelope_or_with_removed_methods_are_refused_precisely,
    modern_server_discover_is_decided_and_recorded,
    modern_subscriptions_listen_is_decided_and_its_stream_filtered,
    modern_client_to_a_legacy_upstream_is_translated_in_a_held_session,
    held_upstream_sessions_are_bound_to_their_task,
    legacy_client_to_a_modern_upstream_is_answered_and_translated,
);

/// The hostile upstream's credential: `/`, `&` and `+` (escaped differently by different JSON
/// writers, and all in base64's alphabets), 24 bytes.
const CRED: &str = "hk/9Qx&Zr+T4mW/8Lp&Vn+2c";
/// The credential of the upstream outside the task.
const OTHER_CRED: &str = "ot/7Yb&Kd+M3pQ/5Rz&Wq+1e";
/// How long a test waits for an event stream to end.
const STREAM_WAIT: Duration = Duration::from_secs(3);

// ---- Setup ----

/// The agent's task token and the hostile upstream `tools` behind the gateway.
struct Env {
    token: String,
    hostile: Hostile,
}

/// Registers the MCP upstream `name` at `url` with `cred` injected as `Authorization: Bearer …`.
async fn register(api: &Api, name: &str, url: &str, cred: &str) {
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(
                json!({"name": name, "kind": "mcp", "url": url, "environment": "production",
                        "owner": "owner@example.com", "sensitivity": "confidential"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": format!("{name}-key"), "upstream": name,
                        "injection": {"kind": "header", "name": "Authorization", "prefix": "Bearer "},
                        "value": cred})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
}

/// An intent with the upstreams and tools, and optionally resources and prompts.
fn intent(
    upstreams: &[&str],
    tools: &[&str],
    resources: Option<&[&str]>,
    prompts: Option<&[&str]>,
) -> String {
    let mut d = json!({"type": "warden_task", "purpose": "reconcile invoices", "task_type": "billing",
                       "upstreams": upstreams, "tools": tools, "datasets": ["invoices"]});
    if let Some(r) = resources {
        d["resources"] = json!(r);
    }
    if let Some(p) = prompts {
        d["prompts"] = json!(p);
    }
    json!([d]).to_string()
}

async fn task_token(api: &Api, agent: &common::agents::Enrolled, details: &str) -> String {
    let (s, t) = start(api, agent, details, None).await;
    assert_eq!(s, StatusCode::OK, "the task starts: {t}");
    t["access_token"].as_str().unwrap().to_owned()
}

/// The hostile upstream `tools` (configured by `config`), and the agent `bot` (allowed only
/// `tools`) with a task that declares `tools` and its tools `echo` and `search`.
async fn setup_with(api: &Api, config: Config) -> Env {
    setup_declaring(api, config, &["echo", "search"]).await
}

/// As [`setup_with`], with a task that declares `tools`.
async fn setup_declaring(api: &Api, config: Config, tools: &[&str]) -> Env {
    seed(api).await;
    let hostile = Hostile::start(config).await;
    register(api, "tools", &hostile.url, CRED).await;
    let bot = enrolled(api, "bot", &["tools"]).await;
    let token = task_token(api, &bot, &intent(&["tools"], tools, None, None)).await;
    Env { token, hostile }
}

async fn setup(api: &Api) -> Env {
    setup_with(api, Config::default()).await
}

/// A second hostile upstream, `other`: registered with its own credential, in neither the agent's
/// allowed list nor the task.
async fn outsider(api: &Api) -> Hostile {
    let other = Hostile::start(Config::default()).await;
    register(api, "other", &other.url, OTHER_CRED).await;
    other
}

// ---- Talking to the gateway ----

/// What the agent got back.
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn session(&self) -> Option<String> {
        self.headers
            .get("mcp-session-id")
            .map(|v| v.to_str().unwrap().to_owned())
    }

    /// The JSON-RPC messages of the body (one JSON answer, or each event's data).
    fn messages(&self) -> Vec<Value> {
        hostile::messages(&self.body)
    }

    /// The event ids of an event stream, in order.
    fn event_ids(&self) -> Vec<String> {
        hostile::parse_sse(&self.text())
            .into_iter()
            .filter_map(|(id, _)| id.filter(|i| !i.is_empty()))
            .collect()
    }

    fn is_json(&self) -> bool {
        serde_json::from_slice::<Value>(&self.body).is_ok()
    }
}

/// One request to `/mcp/{upstream}`: the status, the headers and the body, unread.
async fn open(
    api: &Api,
    method: Method,
    upstream: &str,
    token: &str,
    session: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> (StatusCode, HeaderMap, Body) {
    let accept = if method == Method::GET {
        "text/event-stream"
    } else {
        "application/json, text/event-stream"
    };
    let mut req = Request::builder()
        .method(method)
        .uri(format!("/mcp/{upstream}"))
        .header(header::ACCEPT, accept)
        .header(header::AUTHORIZATION, format!("Bearer {token}"));
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("mcp-protocol-version"))
    {
        req = req.header("mcp-protocol-version", "2025-06-18");
    }
    if body.is_some() {
        req = req.header(header::CONTENT_TYPE, "application/json");
    }
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = api
        .app
        .clone()
        .oneshot(req.body(body.map_or_else(Body::empty, Body::from)).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.into_body())
}

/// Reads `body` into `out` until it ends, `done(out)` holds, or `wait` passes.
async fn read_until(body: &mut Body, out: &mut Vec<u8>, wait: Duration, done: impl Fn(&[u8]) -> bool) {
    let deadline = tokio::time::Instant::now() + wait;
    while !done(out) {
        match tokio::time::timeout_at(deadline, http_body_util::BodyExt::frame(body)).await {
            Ok(Some(Ok(frame))) => {
                if let Ok(data) = frame.into_data() {
                    out.extend_from_slice(&data);
                }
            }
            _ => return,
        }
    }
}

/// One request to `/mcp/{upstream}`; the body is read until it ends or [`STREAM_WAIT`] passes.
async fn send(
    api: &Api,
    method: Method,
    upstream: &str,
    token: &str,
    session: Option<&str>,
    headers: &[(&str, &str)],
    body: Option<String>,
) -> Reply {
    let (status, headers, mut body) = open(api, method, upstream, token, session, headers, body).await;
    let mut out = Vec::new();
    read_until(&mut body, &mut out, STREAM_WAIT, |_| false).await;
    Reply {
        status,
        headers,
        body: out,
    }
}

async fn post(api: &Api, upstream: &str, token: &str, session: Option<&str>, msg: Value) -> Reply {
    send(
        api,
        Method::POST,
        upstream,
        token,
        session,
        &[],
        Some(msg.to_string()),
    )
    .await
}

async fn get_stream(
    api: &Api,
    upstream: &str,
    token: &str,
    session: Option<&str>,
    last_event_id: Option<&str>,
) -> Reply {
    let headers: Vec<(&str, &str)> = last_event_id
        .map(|l| vec![("last-event-id", l)])
        .unwrap_or_default();
    send(api, Method::GET, upstream, token, session, &headers, None).await
}

fn initialize_msg() -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
           "params": {"protocolVersion": "2025-06-18", "capabilities": {"sampling": {}},
                      "clientInfo": {"name": "agent", "version": "1"}}})
}

/// Opens a session at `upstream`: Warden's session id.
async fn initialize(api: &Api, upstream: &str, token: &str) -> String {
    let r = post(api, upstream, token, None, initialize_msg()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["result"]["serverInfo"].is_object(), "{}", r.text());
    r.session().expect("a session id")
}

fn request(id: i64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

fn call(id: i64, tool: &str, args: Value) -> Value {
    request(id, "tools/call", json!({"name": tool, "arguments": args}))
}

/// Lists the tools (cataloguing them): the names shown.
async fn listed(api: &Api, env: &Env, session: &str) -> Vec<String> {
    let r = post(
        api,
        "tools",
        &env.token,
        Some(session),
        request(2, "tools/list", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    tool_names(&r.json())
}

fn tool_names(answer: &Value) -> Vec<String> {
    let mut names: Vec<String> = answer["result"]["tools"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|t| t["name"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn error_code(answer: &Value) -> Option<i64> {
    answer["error"]["code"].as_i64()
}

// ---- The ledger ----

/// Every ledger entry's (kind, body), read from the store.
async fn store_entries(store: &Arc<dyn warden_store::Store>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    loop {
        let page = store
            .ledger_records(out.len() as u64, 500, &Default::default())
            .await
            .expect("ledger page");
        if page.is_empty() {
            return out;
        }
        for r in page {
            let e = warden_ledger::EncodedEntry::decode(r.bytes).expect("entry decodes");
            out.push((e.entry().kind.to_string(), e.entry().body.clone()));
        }
    }
}

/// The bodies of the `decision` entries for the JSON-RPC `method`.
async fn decisions(api: &Api, method: &str) -> Vec<Value> {
    common::ledger_entries(api)
        .await
        .into_iter()
        .filter(|(k, b)| k == "decision" && b["method"] == method)
        .map(|(_, b)| b)
        .collect()
}

async fn assert_decided(api: &Api, method: &str, outcome: &str) {
    let found = decisions(api, method).await;
    assert!(
        found.iter().any(|b| b["outcome"] == outcome),
        "no `{outcome}` decision for `{method}` in the ledger: {found:?}"
    );
}

// ---- Notifications ----

async fn notification_tools_call_is_not_forwarded(api: Api) {
    let env = setup(&api).await;
    let other = outsider(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    let before = env.hostile.seen().len();
    let note = json!({"jsonrpc": "2.0", "method": "tools/call",
                      "params": {"name": "echo", "arguments": {"form": "slash"}}});
    for (upstream, session) in [
        ("tools", Some(session.as_str())),
        ("tools", None),
        ("other", None),
    ] {
        let r = post(&api, upstream, &env.token, session, note.clone()).await;
        assert!(
            r.status.is_client_error() && r.is_json(),
            "a tools/call without id to `{upstream}` is refused with a JSON body: {} {}",
            r.status,
            r.text()
        );
    }
    assert!(
        env.hostile.executed().is_empty() && other.executed().is_empty(),
        "the notification ran a tool: {:?} {:?}",
        env.hostile.executed(),
        other.executed()
    );
    assert_eq!(
        env.hostile.seen().len(),
        before,
        "nothing reached the upstream: {:?}",
        env.hostile.methods()
    );
    assert!(
        other.seen().is_empty(),
        "the upstream outside the task got a request (with its credential)"
    );
    let refused = decisions(&api, "tools/call").await;
    for upstream in ["tools", "other"] {
        assert!(
            refused.iter().any(|b| b["outcome"] == "deny"
                && (b["upstream"] == upstream
                    || b["resource"].as_str().is_some_and(|r| r.contains(upstream)))),
            "the refusal at `{upstream}` is in the ledger: {refused:?}"
        );
    }
}

async fn client_notifications_need_a_session_in_scope(api: Api) {
    let env = setup(&api).await;
    let other = outsider(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let count = |h: &Hostile| {
        h.methods()
            .iter()
            .filter(|m| *m == "notifications/initialized")
            .count()
    };
    // Without a session, and at an upstream outside the task: refused, never forwarded.
    let r = post(&api, "tools", &env.token, None, note.clone()).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.text());
    assert_eq!(count(&env.hostile), 0, "forwarded without a session");
    let r = post(&api, "other", &env.token, None, note.clone()).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.text());
    assert!(other.seen().is_empty(), "forwarded outside the task");
    // In the task's session at an upstream in scope: forwarded, and recorded as allowed.
    let r = post(&api, "tools", &env.token, Some(&session), note).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert_eq!(count(&env.hostile), 1);
    assert_decided(&api, "notifications/initialized", "allow").await;
}

// ---- stdio ----

/// A stdio MCP server: notes each start in the file named by its first argument; its tool
/// `whoami` prints the injected `API_TOKEN` inside JSON text (with `\/` escapes), once and twice
/// nested.
const STDIO_SERVER: &str = r#"
import json, os, sys
if len(sys.argv) > 1:
    with open(sys.argv[1], "a") as f:
        f.write("started %d\n" % os.getpid())
secret = os.environ.get("API_TOKEN", "")
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    m = msg.get("method")
    if m == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "py", "version": "1"}}
    elif m == "tools/list":
        result = {"tools": [{"name": "whoami", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}}]}
    elif m == "tools/call":
        inner = json.dumps({"token": secret}).replace("/", "\\/")
        twice = json.dumps({"payload": inner})
        result = {"content": [{"type": "text", "text": inner}, {"type": "text", "text": twice}]}
    else:
        result = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

/// The API with a gateway that runs [`STDIO_SERVER`] for the upstream `local` (at most 4
/// sessions), `API_TOKEN` = [`CRED`]; the agent's task token; the file of process starts.
async fn stdio_setup(api: Api) -> (Api, String, std::path::PathBuf) {
    seed(&api).await;
    let starts = api.dir.path().join("starts.log");
    let config: warden_server::config::Config = toml::from_str(&format!(
        "[[gateway.stdio]]\nupstream = \"local\"\nmax_sessions = 4\nallow_env = [\"API_TOKEN\"]\ncommand = [\"python3\", \"-c\", {:?}, {:?}]\n",
        STDIO_SERVER,
        starts.display().to_string()
    ))
    .unwrap();
    let mut state = api.state.clone();
    state.gateway = Arc::new(
        warden_server::gateway::Gateway::new(
            (&config.gateway).into(),
            warden_server::gateway::GatewayKeys::generate(),
            warden_gateway::scan::Scanner::new(&[]).unwrap(),
            &config.gateway.stdio,
        )
        .unwrap(),
    );
    let api = Api {
        app: warden_server::router(state, warden_server::HttpLimits::default()),
        ..api
    };
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(
                json!({"name": "local", "kind": "mcp", "url": "stdio://local", "environment": "staging",
                        "owner": "owner@example.com", "sensitivity": "internal"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "local-token", "upstream": "local",
                        "injection": {"kind": "env", "var": "API_TOKEN"}, "value": CRED})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let bot = enrolled(&api, "bot", &["local"]).await;
    let token = task_token(&api, &bot, &intent(&["local"], &["whoami"], None, None)).await;
    (api, token, starts)
}

fn started_processes(starts: &std::path::Path) -> usize {
    std::fs::read_to_string(starts)
        .unwrap_or_default()
        .lines()
        .count()
}

async fn initialize_notification_spawns_no_stdio_process(api: Api) {
    let (api, token, starts) = stdio_setup(api).await;
    let mut note = initialize_msg();
    note.as_object_mut().unwrap().remove("id");
    for i in 0..20 {
        let r = post(&api, "local", &token, None, note.clone()).await;
        assert!(
            r.status.is_client_error() && r.session().is_none(),
            "initialize without id #{i}: {} {:?} {}",
            r.status,
            r.session(),
            r.text()
        );
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        started_processes(&starts),
        0,
        "no process was spawned for a notification"
    );
    // max_sessions is not exhausted: a real initialize still works.
    let r = post(&api, "local", &token, None, initialize_msg()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.json()["result"]["serverInfo"]["name"], "py", "{}", r.text());
    assert!(r.session().is_some());
}

/// A stdio server whose tool `env` answers the names in its environment (values never leave it),
/// and notes each start in the file named by its first argument.
const ENV_SERVER: &str = r#"
import json, os, sys
with open(sys.argv[1], "a") as f:
    f.write("started %d\n" % os.getpid())
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    m = msg.get("method")
    if m == "initialize":
        result = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}}, "serverInfo": {"name": "py", "version": "1"}}
    elif m == "tools/list":
        result = {"tools": [{"name": "env", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": True}}]}
    elif m == "tools/call":
        result = {"content": [{"type": "text", "text": json.dumps(sorted(os.environ))}]}
    else:
        result = {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
"#;

/// The deployment's gateway key, fixed so that a gateway rebuilt with another configuration (a
/// restart after the operator edited the file) still opens the secrets stored before.
const GATEWAY_KEY: &str = "6a1f0c4e9b2d7a3c5e8f1b0d2c4a6e8f0b1d3c5e7a9f1b3d5c7e9a1b3d5f7a9c";

/// Gives `api` a gateway that runs [`ENV_SERVER`] for `local` under `[[gateway.stdio]]` `extra`
/// (a restart with that configuration file).
fn use_stdio(api: &mut Api, extra: &str, starts: &std::path::Path) {
    let config: warden_server::config::Config = toml::from_str(&format!(
        "[[gateway.stdio]]\nupstream = \"local\"\ncommand = [\"python3\", \"-c\", {:?}, {:?}]\n{extra}",
        ENV_SERVER,
        starts.display().to_string()
    ))
    .unwrap();
    config.gateway.validate().expect("the configuration starts");
    let keys =
        warden_server::gateway::GatewayKeys::load(Some(GATEWAY_KEY), &api.dir.path().join("unused.key"))
            .unwrap();
    let mut state = api.state.clone();
    state.gateway = Arc::new(
        warden_server::gateway::Gateway::new(
            (&config.gateway).into(),
            keys,
            warden_gateway::scan::Scanner::new(&[]).unwrap(),
            &config.gateway.stdio,
        )
        .unwrap(),
    );
    api.app = warden_server::router(state.clone(), warden_server::HttpLimits::default());
    api.state = state;
}

async fn env_secret(api: &Api, name: &str, var: &str, value: &str) -> (StatusCode, Value) {
    api.admin(
        Method::POST,
        "/v1/secrets",
        Some(json!({"name": name, "upstream": "local",
                    "injection": {"kind": "env", "var": var}, "value": value})),
    )
    .await
}

/// The regression of issue 15: an admin API token made a stdio child run its script as Warden's
/// user through a secret of kind `env` named after an interpreter variable. `var` = `value` is
/// such a secret; `payload` is what running it would leave behind.
async fn code_loading_env_never_reaches_a_stdio_child(
    mut api: Api,
    var: &str,
    value: &str,
    payload: &std::path::Path,
) {
    seed(&api).await;
    let starts = api.dir.path().join("starts.log");
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(
                json!({"name": "local", "kind": "mcp", "url": "stdio://local", "environment": "staging",
                        "owner": "owner@example.com", "sensitivity": "internal"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    // The API refuses the name, naming the field: the entry's allow-list does not hold it.
    let strict = "allow_env = [\"API_TOKEN\"]\n";
    let lax = format!("allow_env = [\"API_TOKEN\", \"{var}\"]\nallow_code_loading_env = [\"{var}\"]\n");
    use_stdio(&mut api, strict, &starts);
    let (s, b) = env_secret(&api, "evil", var, value).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    assert_eq!(b["field"], "injection.var", "{b}");
    assert!(
        b["message"].as_str().unwrap().contains(&format!(
            "`{var}` is not on the allow_env list of upstream `local`"
        )),
        "{b}"
    );
    // Not for an upstream without a [[gateway.stdio]] entry either.
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "elsewhere", "upstream": "crm",
                        "injection": {"kind": "env", "var": "API_TOKEN"}, "value": "elsewhere-123456"})),
        )
        .await;
    assert_eq!(
        (s, b["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("injection.var")),
        "{b}"
    );
    let (s, b) = env_secret(&api, "local-token", "API_TOKEN", CRED).await;
    assert_eq!(s, StatusCode::CREATED, "the allowed name: {b}");

    // Defense in depth: an operator once allowed the name explicitly, a secret was stored, and
    // the configuration changed since. The spawn withholds it.
    use_stdio(&mut api, &lax, &starts);
    let (s, b) = env_secret(&api, "evil", var, value).await;
    assert_eq!(s, StatusCode::CREATED, "explicitly allowed then: {b}");
    use_stdio(&mut api, strict, &starts);
    let bot = enrolled(&api, "bot", &["local"]).await;
    let token = task_token(&api, &bot, &intent(&["local"], &["env"], None, None)).await;
    let session = initialize(&api, "local", &token).await;
    let r = post(
        &api,
        "local",
        &token,
        Some(&session),
        request(2, "tools/list", json!({})),
    )
    .await;
    assert_eq!(tool_names(&r.json()), ["env"], "{}", r.text());
    let r = post(&api, "local", &token, Some(&session), call(3, "env", json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let names: Vec<String> =
        serde_json::from_str(r.json()["result"]["content"][0]["text"].as_str().expect("text"))
            .expect("names");
    assert!(
        !names.iter().any(|n| n == var),
        "{var} reached the child: {names:?}"
    );
    assert!(
        names.iter().any(|n| n == "API_TOKEN"),
        "the allowed secret is injected: {names:?}"
    );
    assert_eq!(started_processes(&starts), 1);
    assert!(!payload.exists(), "the child ran the payload of {var}");
    let withheld: Vec<Value> = store_entries(&api.state.store)
        .await
        .into_iter()
        .filter(|(k, _)| k == "secret_withheld")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(withheld.len(), 1, "{withheld:?}");
    assert_eq!(
        (
            withheld[0]["upstream"].as_str(),
            withheld[0]["secret"].as_str(),
            withheld[0]["var"].as_str()
        ),
        (Some("local"), Some("evil"), Some(var)),
        "{withheld:?}"
    );
    let all = serde_json::to_string(&store_entries(&api.state.store).await).unwrap();
    assert!(!all.contains(value), "the withheld value is not in the ledger");

    // With the name still allowed (the operator's explicit choice), it is injected: the check
    // above withheld it because of the configuration, not by accident.
    use_stdio(&mut api, &lax, &starts);
    let session = initialize(&api, "local", &token).await;
    let r = post(&api, "local", &token, Some(&session), call(3, "env", json!({}))).await;
    let names: Vec<String> =
        serde_json::from_str(r.json()["result"]["content"][0]["text"].as_str().expect("text"))
            .expect("names");
    assert!(names.iter().any(|n| n == var), "explicitly allowed: {names:?}");
    if var == "PYTHONPATH" {
        // The child is Python: the payload is live, so its absence above is the fix's doing.
        assert!(payload.exists(), "the payload runs when the name is let through");
    }
}

async fn an_env_secret_named_node_options_never_reaches_a_stdio_child(api: Api) {
    let dir = api.dir.path().to_owned();
    let script = dir.join("evil.js");
    let payload = dir.join("pwned-by-node");
    std::fs::write(
        &script,
        format!(
            "require('fs').writeFileSync({:?}, 'gateway.key');\n",
            payload.display().to_string()
        ),
    )
    .unwrap();
    let value = format!("--require {}", script.display());
    code_loading_env_never_reaches_a_stdio_child(api, "NODE_OPTIONS", &value, &payload).await;
}

async fn an_env_secret_named_pythonpath_never_reaches_a_stdio_child(api: Api) {
    let dir = api.dir.path().join("evil-python");
    std::fs::create_dir_all(&dir).unwrap();
    let payload = api.dir.path().join("pwned-by-python");
    std::fs::write(
        dir.join("sitecustomize.py"),
        format!(
            "open({:?}, 'w').write('gateway.key')\n",
            payload.display().to_string()
        ),
    )
    .unwrap();
    let value = dir.display().to_string();
    code_loading_env_never_reaches_a_stdio_child(api, "PYTHONPATH", &value, &payload).await;
}

async fn stdio_secret_in_nested_json_is_cut(api: Api) {
    let (api, token, _) = stdio_setup(api).await;
    let r = post(&api, "local", &token, None, initialize_msg()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let session = r.session().expect("session");
    let r = post(
        &api,
        "local",
        &token,
        Some(&session),
        request(2, "tools/list", json!({})),
    )
    .await;
    assert_eq!(tool_names(&r.json()), ["whoami"], "{}", r.text());
    let r = post(
        &api,
        "local",
        &token,
        Some(&session),
        call(3, "whoami", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    hostile::assert_no_secret("stdio tool result", &r.body, CRED);
}

// ---- /v1/authorize and the catalogue ----

/// The upstream `evil` whose catalogue holds `wipe` (classified `destructive` by an admin) and
/// `search` (read, from its hint); the agent's task token for both.
async fn evil_catalogue(api: &Api) -> (String, Hostile) {
    seed(api).await;
    let mut config = Config::default();
    config
        .tools
        .push(json!({"name": "wipe", "description": "wipes everything",
                             "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}}));
    let hostile = Hostile::start(config).await;
    register(api, "evil", &hostile.url, CRED).await;
    let bot = enrolled(api, "bot", &["evil"]).await;
    let token = task_token(api, &bot, &intent(&["evil"], &["wipe", "search"], None, None)).await;
    let session = initialize(api, "evil", &token).await;
    let r = post(
        api,
        "evil",
        &token,
        Some(&session),
        request(2, "tools/list", json!({})),
    )
    .await;
    assert!(tool_names(&r.json()).contains(&"wipe".to_owned()), "{}", r.text());
    // The upstream's hint says read-only; the admin knows better.
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/tools/evil/wipe/classify",
            Some(json!({"class": "destructive"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    (token, hostile)
}

async fn authorize(api: &Api, token: &str, action: &str, tool: &str) -> Value {
    let resp = api
        .app
        .clone()
        .oneshot(
            Request::builder()
                .method(Method::POST)
                .uri("/v1/authorize")
                .header(header::AUTHORIZATION, format!("Bearer {token}"))
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(
                    json!({"action": action, "resource": {"tool": tool}}).to_string(),
                ))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

/// Issue 15: `read` on the catalogued destructive tool was an allow at `/v1/authorize` while the
/// gateway required two approvals. The catalogue's class wins over a weaker one, and the answer
/// and the ledger say so.
async fn authorize_cannot_weaken_a_catalogued_tools_class(api: Api) {
    let (token, _hostile) = evil_catalogue(&api).await;
    let d = authorize(&api, &token, "read", "evil/wipe").await;
    assert_eq!(
        (d["outcome"].as_str(), d["quorum"].as_u64()),
        (Some("needs_approval"), Some(2)),
        "decided as destructive: {d}"
    );
    assert_eq!(
        (
            d["action_class"]["requested"].as_str(),
            d["action_class"]["catalogued"].as_str(),
            d["action_class"]["used"].as_str()
        ),
        (Some("read"), Some("destructive"), Some("destructive")),
        "{d}"
    );
    assert!(
        d["action_class"]["reason"]
            .as_str()
            .unwrap()
            .contains("weaker than the catalogued class `destructive`"),
        "{d}"
    );
    // The same answer as naming the class honestly.
    let honest = authorize(&api, &token, "destructive", "evil/wipe").await;
    assert_eq!(
        (honest["outcome"].clone(), honest["quorum"].clone()),
        (d["outcome"].clone(), d["quorum"].clone())
    );
    // The ledger records the class used and why.
    let entries: Vec<Value> = store_entries(&api.store)
        .await
        .into_iter()
        .filter(|(k, b)| {
            k == "decision"
                && b["action_class"]["requested"] == "read"
                && b["resource"].as_str().is_some_and(|r| r.contains("evil/wipe"))
        })
        .map(|(_, b)| b)
        .collect();
    assert!(!entries.is_empty(), "no decision entry for the weakened request");
    assert_eq!(entries[0]["action"], "destructive", "{:?}", entries[0]);
    assert!(
        entries[0]["action_class"]["reason"]
            .as_str()
            .unwrap()
            .contains("weaker"),
        "{:?}",
        entries[0]
    );
    // A tool the catalogue does not hold is denied, as at the gateway (outside the task: said so).
    let d = authorize(&api, &token, "read", "evil/nope").await;
    assert_eq!(d["outcome"], "deny", "{d}");
    assert!(d["reasons"].to_string().contains("out-of-scope"), "{d}");
    assert!(d.get("action_class").is_none(), "{d}");
}

/// A caller may ask for a stricter class than the catalogue's, and is decided on it.
async fn authorize_may_name_a_stricter_class_than_the_catalogue(api: Api) {
    let (token, _hostile) = evil_catalogue(&api).await;
    let d = authorize(&api, &token, "read", "evil/search").await;
    assert_eq!(d["outcome"], "allow", "{d}");
    assert_eq!(d["action_class"]["used"], "read", "{d}");
    let d = authorize(&api, &token, "destructive", "evil/search").await;
    assert_eq!(
        (d["outcome"].as_str(), d["quorum"].as_u64()),
        (Some("needs_approval"), Some(2)),
        "decided as the stricter class asked for: {d}"
    );
    assert_eq!(
        (
            d["action_class"]["requested"].as_str(),
            d["action_class"]["catalogued"].as_str(),
            d["action_class"]["used"].as_str()
        ),
        (Some("destructive"), Some("read"), Some("destructive")),
        "{d}"
    );
    assert!(d["action_class"].get("reason").is_none(), "{d}");
}

// ---- Responses from the agent ----

async fn responses_to_unissued_ids_are_refused(api: Api) {
    let env = setup_with(
        &api,
        Config {
            get_events: vec![GetEvent::Sampling(7)],
            get_hold: Duration::from_secs(5),
            ..Config::default()
        },
    )
    .await;
    let session = initialize(&api, "tools", &env.token).await;
    // The server's own request reaches the agent under an opaque id of Warden's; the agent
    // answers while the stream is still open.
    let (status, _, mut stream) =
        open(&api, Method::GET, "tools", &env.token, Some(&session), &[], None).await;
    assert_eq!(status, StatusCode::OK);
    let mut got = Vec::new();
    let has_request = |b: &[u8]| {
        hostile::messages(b)
            .iter()
            .any(|m| m["method"] == "sampling/createMessage")
    };
    read_until(&mut stream, &mut got, STREAM_WAIT, has_request).await;
    let sampling = hostile::messages(&got)
        .into_iter()
        .find(|m| m["method"] == "sampling/createMessage")
        .unwrap_or_else(|| {
            panic!(
                "the server's request is relayed: {}",
                String::from_utf8_lossy(&got)
            )
        });
    let id = sampling["id"].clone();
    assert!(
        id.as_str().is_some_and(|s| s != "7"),
        "the upstream's id is replaced by an opaque string: {sampling}"
    );
    let answer = json!({"jsonrpc": "2.0", "id": id,
                        "result": {"role": "assistant", "content": {"type": "text", "text": "hi"}, "model": "m"}});
    let r = post(&api, "tools", &env.token, Some(&session), answer.clone()).await;
    assert!(r.status.is_success(), "{} {}", r.status, r.text());
    let got = env.hostile.client_responses();
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0]["id"],
        json!(7),
        "the upstream gets its own id back: {got:?}"
    );
    // The same answer again: refused, not forwarded.
    let r = post(&api, "tools", &env.token, Some(&session), answer).await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.text());
    assert_eq!(env.hostile.client_responses().len(), 1, "answered twice");
    // A response to nothing Warden handed out.
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        json!({"jsonrpc": "2.0", "id": 5, "result": {}}),
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(
        env.hostile.client_responses().len(),
        1,
        "the bare response reached the upstream"
    );
    drop(stream);
}

// ---- GET and DELETE ----

async fn get_and_delete_outside_the_task_are_refused(api: Api) {
    let env = setup(&api).await;
    let other = outsider(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    let r = get_stream(&api, "other", &env.token, None, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN, "GET: {}", r.text());
    // A session of another upstream does not open here: refused as unknown (404, MCP's answer to
    // a session the server does not know) before anything else.
    let r = get_stream(&api, "other", &env.token, Some(&session), None).await;
    assert!(
        matches!(r.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "GET with a session: {}",
        r.text()
    );
    let r = send(
        &api,
        Method::DELETE,
        "other",
        &env.token,
        Some(&session),
        &[],
        None,
    )
    .await;
    assert!(
        matches!(r.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND),
        "DELETE: {}",
        r.text()
    );
    assert!(
        other.seen().is_empty(),
        "the upstream outside the task was reached: {:?}",
        other.seen().iter().map(|s| s.method.clone()).collect::<Vec<_>>()
    );
}

// ---- The credential echoed back ----

async fn credential_echoes_are_cut_from_json_answers(api: Api) {
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    listed(&api, &env, &session).await;
    for (i, form) in (10..).zip(Echo::ALL) {
        let r = post(
            &api,
            "tools",
            &env.token,
            Some(&session),
            call(i, "echo", form.arguments()),
        )
        .await;
        hostile::assert_no_secret(&format!("JSON answer, {form:?}"), &r.body, CRED);
    }
    let last = env.hostile.seen().last().cloned().unwrap();
    assert_eq!(
        last.header("authorization"),
        Some(format!("Bearer {CRED}").as_str()),
        "the upstream got the credential to echo"
    );
}

async fn credential_echoes_are_cut_from_sse_answers(api: Api) {
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    listed(&api, &env, &session).await;
    env.hostile.config(|c| c.sse = true);
    for (i, form) in (10..).zip(Echo::ALL) {
        let r = post(
            &api,
            "tools",
            &env.token,
            Some(&session),
            call(i, "echo", form.arguments()),
        )
        .await;
        hostile::assert_no_secret(&format!("SSE answer, {form:?}"), &r.body, CRED);
    }
}

async fn credential_echoes_are_cut_from_the_get_stream(api: Api) {
    let env = setup_with(
        &api,
        Config {
            get_events: Echo::ALL.into_iter().map(GetEvent::Echo).collect(),
            ..Config::default()
        },
    )
    .await;
    let session = initialize(&api, "tools", &env.token).await;
    let r = get_stream(&api, "tools", &env.token, Some(&session), None).await;
    assert!(
        env.hostile.seen().iter().any(|s| s.method == Method::GET),
        "the stream was opened at the upstream"
    );
    hostile::assert_no_secret("GET stream", &r.body, CRED);
}

async fn credential_in_random_escapings_never_reaches_the_agent(api: Api) {
    use proptest::strategy::{Strategy as _, ValueTree as _};
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    listed(&api, &env, &session).await;
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let plans = proptest::collection::vec(0u8..4, 1..24);
    for i in 0..16 {
        let plan = plans.new_tree(&mut runner).unwrap().current();
        let form = Echo::Mixed(plan);
        let r = post(
            &api,
            "tools",
            &env.token,
            Some(&session),
            call(10 + i, "echo", form.arguments()),
        )
        .await;
        hostile::assert_no_secret(&format!("JSON answer, {form:?}"), &r.body, CRED);
    }
}

// ---- Secrets ----

async fn secret_values_shorter_than_8_bytes_are_refused(api: Api) {
    seed(&api).await;
    let hostile = Hostile::start(Config::default()).await;
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/upstreams",
            Some(
                json!({"name": "tools", "kind": "mcp", "url": hostile.url, "environment": "production",
                        "owner": "owner@example.com", "sensitivity": "confidential"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    for (i, value) in ["k", "sevenby"].into_iter().enumerate() {
        let (s, b) = api
            .admin(
                Method::POST,
                "/v1/secrets",
                Some(json!({"name": format!("short-{i}"), "upstream": "tools",
                            "injection": {"kind": "header", "name": "Authorization", "prefix": "Bearer "},
                            "value": value})),
            )
            .await;
        assert_eq!(
            (s, b["field"].as_str()),
            (StatusCode::BAD_REQUEST, Some("value")),
            "a {}-byte value: {b}",
            value.len()
        );
    }
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/secrets",
            Some(json!({"name": "eight", "upstream": "tools",
                        "injection": {"kind": "header", "name": "Authorization", "prefix": "Bearer "},
                        "value": "eightbyt"})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "an 8-byte value: {b}");
}

// ---- Resumed streams ----

/// Polls the ledger for up to 2 s (results are committed within 200 ms).
async fn wait_for_entry(api: &Api, f: impl Fn(&str, &Value) -> bool) -> bool {
    for _ in 0..20 {
        // The server's flusher commits result entries every 200 ms; the router tests run none.
        api.state.gateway.flush_results(&api.state.ledger).await;
        if common::ledger_entries(api).await.iter().any(|(k, b)| f(k, b)) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

async fn resumed_streams_are_filtered_and_recorded(api: Api) {
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    assert_eq!(listed(&api, &env, &session).await, ["echo", "search"]);
    // The live streams break before the answer; the answers come on the resumed stream.
    env.hostile.config(|c| {
        c.sse = true;
        c.sse_cut = true;
    });
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        request(3, "tools/list", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let last = r
        .event_ids()
        .pop()
        .unwrap_or_else(|| panic!("Warden relayed no event id: {}", r.text()));
    let replay = get_stream(&api, "tools", &env.token, Some(&session), Some(&last)).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text());
    let listing = replay
        .messages()
        .into_iter()
        .find(|m| m["result"]["tools"].is_array())
        .unwrap_or_else(|| panic!("the replayed tools/list answer is relayed: {}", replay.text()));
    assert!(tool_names(&listing).contains(&"echo".to_owned()), "{listing}");
    assert!(
        !replay.text().contains("purge"),
        "the replay shows a tool the task may not call: {}",
        replay.text()
    );

    env.hostile.config(|c| c.result_aws = true);
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        call(4, "search", json!({"q": "x"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let last = r
        .event_ids()
        .pop()
        .unwrap_or_else(|| panic!("Warden relayed no event id: {}", r.text()));
    let replay = get_stream(&api, "tools", &env.token, Some(&session), Some(&last)).await;
    assert_eq!(replay.status, StatusCode::OK, "{}", replay.text());
    let text = replay.text();
    assert!(
        text.contains("[REDACTED:") && !text.contains(AWS_KEY),
        "the replayed result is redacted: {text}"
    );
    assert!(
        wait_for_entry(&api, |k, b| k == "action_result"
            && b["tool"] == "search"
            && b["status"].as_str().is_some_and(|s| s.starts_with("ok")))
        .await,
        "the replayed result is recorded: {:?}",
        common::ledger_entries(&api).await
    );
}

async fn last_event_ids_warden_did_not_issue_are_refused(api: Api) {
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    listed(&api, &env, &session).await;
    env.hostile.config(|c| c.sse = true);
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        request(3, "tools/list", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let raw = env.hostile.stream_ids(env.hostile.stream_count() - 1)[0].clone();
    let replay = get_stream(&api, "tools", &env.token, Some(&session), Some(&raw)).await;
    assert_eq!(
        replay.status,
        StatusCode::BAD_REQUEST,
        "the upstream's own event id: {}",
        replay.text()
    );
    assert!(
        !env.hostile.seen().iter().any(|s| s.method == Method::GET),
        "the GET reached the upstream"
    );
}

// ---- Unfiltered outbound paths ----

async fn upstream_error_messages_are_redacted(api: Api) {
    let env = setup_with(
        &api,
        Config {
            error_with_aws: true,
            ..Config::default()
        },
    )
    .await;
    let session = initialize(&api, "tools", &env.token).await;
    listed(&api, &env, &session).await;
    for sse in [false, true] {
        env.hostile.config(|c| c.sse = sse);
        let r = post(
            &api,
            "tools",
            &env.token,
            Some(&session),
            call(3, "search", json!({})),
        )
        .await;
        let text = r.text();
        assert!(
            r.messages().iter().any(|m| m["error"].is_object()),
            "sse={sse}: the error is relayed: {text}"
        );
        assert!(
            text.contains("[REDACTED:") && !text.contains(AWS_KEY),
            "sse={sse}: the error's message and data are redacted: {text}"
        );
    }
}

async fn responses_with_foreign_ids_are_not_relayed(api: Api) {
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    listed(&api, &env, &session).await;
    env.hostile.config(|c| c.foreign_id = true);
    let leaked = |text: &str| text.contains(AWS_KEY) || text.contains("purge") || text.contains("exfiltrate");
    for (id, msg) in [
        (3, request(3, "tools/list", json!({}))),
        (4, call(4, "search", json!({}))),
    ] {
        let r = post(&api, "tools", &env.token, Some(&session), msg).await;
        let text = r.text();
        assert!(!leaked(&text), "JSON answer to {id}: {text}");
        assert_eq!(
            error_code(&r.json()),
            Some(warden_gateway::jsonrpc::UPSTREAM_UNAVAILABLE),
            "JSON answer to {id}: {text}"
        );
    }
    env.hostile.config(|c| c.sse = true);
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        request(5, "tools/list", json!({})),
    )
    .await;
    let text = r.text();
    assert!(!leaked(&text), "the foreign message on the stream: {text}");
}

async fn server_notifications_are_redacted(api: Api) {
    let env = setup_with(
        &api,
        Config {
            aws_notice: true,
            get_events: vec![GetEvent::AwsNotice],
            ..Config::default()
        },
    )
    .await;
    let session = initialize(&api, "tools", &env.token).await;
    listed(&api, &env, &session).await;
    env.hostile.config(|c| c.sse = true);
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        call(3, "search", json!({})),
    )
    .await;
    let text = r.text();
    assert!(
        text.contains("notifications/message") && text.contains("[REDACTED:") && !text.contains(AWS_KEY),
        "POST stream: {text}"
    );
    let r = get_stream(&api, "tools", &env.token, Some(&session), None).await;
    let text = r.text();
    assert!(
        text.contains("notifications/message") && text.contains("[REDACTED:") && !text.contains(AWS_KEY),
        "GET stream: {text}"
    );
}

// ---- Unscanned inbound parts ----

async fn secrets_anywhere_in_params_are_refused(api: Api) {
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    listed(&api, &env, &session).await;
    for (what, msg) in [
        (
            "params._meta",
            request(
                3,
                "tools/call",
                json!({"name": "search", "arguments": {}, "_meta": {"note": AWS_KEY}}),
            ),
        ),
        (
            "an extra params member",
            request(
                4,
                "tools/call",
                json!({"name": "search", "arguments": {}, "extra": AWS_KEY}),
            ),
        ),
        ("ping's params", request(5, "ping", json!({"note": AWS_KEY}))),
    ] {
        let r = post(&api, "tools", &env.token, Some(&session), msg).await;
        assert_eq!(
            error_code(&r.json()),
            Some(warden_gateway::jsonrpc::SECRET_IN_ARGUMENTS),
            "{what}: {}",
            r.text()
        );
    }
    assert!(
        !env.hostile.seen().iter().any(|s| s.body.contains(AWS_KEY)),
        "a secret reached the upstream: {:?}",
        env.hostile.methods()
    );
    let all = serde_json::to_string(&common::ledger_entries(&api).await).unwrap();
    assert!(!all.contains(AWS_KEY), "the ledger holds the key in clear");
}

// ---- Standard methods and the scope of reads ----

async fn standard_methods_are_governed(api: Api) {
    seed(&api).await;
    let hostile = Hostile::start(Config::default()).await;
    register(&api, "tools", &hostile.url, CRED).await;
    let bot = enrolled(&api, "bot", &["tools"]).await;
    let token = task_token(
        &api,
        &bot,
        &intent(
            &["tools"],
            &["echo"],
            Some(&["file:///tmp/*"]),
            Some(&["greeting"]),
        ),
    )
    .await;
    let session = initialize(&api, "tools", &token).await;
    let methods = [
        ("logging/setLevel", json!({"level": "debug"})),
        (
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "greeting"}, "argument": {"name": "who", "value": "a"}}),
        ),
        ("resources/subscribe", json!({"uri": "file:///tmp/a.txt"})),
        ("resources/unsubscribe", json!({"uri": "file:///tmp/a.txt"})),
    ];
    for (i, (method, params)) in (10..).zip(methods) {
        let r = post(&api, "tools", &token, Some(&session), request(i, method, params)).await;
        assert!(
            r.status == StatusCode::OK && r.json()["result"].is_object(),
            "{method}: {} {}",
            r.status,
            r.text()
        );
        assert!(
            hostile.methods().iter().any(|m| m == method),
            "{method} reached the upstream"
        );
        assert_decided(&api, method, "allow").await;
    }
    let r = post(
        &api,
        "tools",
        &token,
        Some(&session),
        request(20, "foo/bar", json!({})),
    )
    .await;
    let v = r.json();
    assert_eq!(error_code(&v), Some(-32601), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase()
            .contains("govern"),
        "the message says the method is not governed: {v}"
    );
    assert!(!hostile.methods().iter().any(|m| m == "foo/bar"));
}

async fn reads_are_limited_to_declared_resources_and_prompts(api: Api) {
    seed(&api).await;
    let hostile = Hostile::start(Config::default()).await;
    register(&api, "tools", &hostile.url, CRED).await;
    let bot = enrolled(&api, "bot", &["tools"]).await;
    let reads = |h: &Hostile, what: &str| {
        h.seen()
            .iter()
            .filter(|s| {
                s.body.contains(what)
                    && s.rpc_method()
                        .is_some_and(|m| m == "resources/read" || m == "prompts/get")
            })
            .count()
    };
    // A task that declared only the tool `echo` reads no resource.
    let only_echo = task_token(&api, &bot, &intent(&["tools"], &["echo"], None, None)).await;
    let session = initialize(&api, "tools", &only_echo).await;
    let r = post(
        &api,
        "tools",
        &only_echo,
        Some(&session),
        request(2, "resources/read", json!({"uri": "file:///etc/shadow"})),
    )
    .await;
    assert_eq!(
        error_code(&r.json()),
        Some(warden_gateway::jsonrpc::DENIED),
        "{}",
        r.text()
    );
    assert_eq!(reads(&hostile, "/etc/shadow"), 0, "forwarded");

    // Declared resources and prompts: those are read, nothing else.
    let scoped = task_token(
        &api,
        &bot,
        &intent(
            &["tools"],
            &["echo"],
            Some(&["file:///tmp/*"]),
            Some(&["greeting"]),
        ),
    )
    .await;
    let session = initialize(&api, "tools", &scoped).await;
    let r = post(
        &api,
        "tools",
        &scoped,
        Some(&session),
        request(3, "resources/read", json!({"uri": "file:///tmp/a.txt"})),
    )
    .await;
    assert!(r.json()["result"]["contents"].is_array(), "{}", r.text());
    assert_eq!(reads(&hostile, "/tmp/a.txt"), 1);
    let r = post(
        &api,
        "tools",
        &scoped,
        Some(&session),
        request(4, "resources/read", json!({"uri": "file:///etc/shadow"})),
    )
    .await;
    assert_eq!(
        error_code(&r.json()),
        Some(warden_gateway::jsonrpc::DENIED),
        "{}",
        r.text()
    );
    assert_eq!(reads(&hostile, "/etc/shadow"), 0, "forwarded");
    let r = post(
        &api,
        "tools",
        &scoped,
        Some(&session),
        request(5, "prompts/get", json!({"name": "exfiltrate"})),
    )
    .await;
    assert_eq!(
        error_code(&r.json()),
        Some(warden_gateway::jsonrpc::DENIED),
        "{}",
        r.text()
    );
    assert_eq!(reads(&hostile, "exfiltrate"), 0, "forwarded");
    let r = post(
        &api,
        "tools",
        &scoped,
        Some(&session),
        request(6, "prompts/get", json!({"name": "greeting"})),
    )
    .await;
    assert!(r.json()["result"]["messages"].is_array(), "{}", r.text());
    assert_eq!(reads(&hostile, "greeting"), 1);
}

// ---- Origin and Host ----

async fn foreign_origins_and_hosts_are_refused(api: Api) {
    let env = setup(&api).await;
    let init = Some(initialize_msg().to_string());
    for (name, value) in [("origin", "http://evil.example"), ("host", "evil.example")] {
        let r = send(
            &api,
            Method::POST,
            "tools",
            &env.token,
            None,
            &[(name, value)],
            init.clone(),
        )
        .await;
        assert_eq!(r.status, StatusCode::FORBIDDEN, "{name}: {value}: {}", r.text());
    }
    assert!(env.hostile.seen().is_empty(), "a refused request was forwarded");
    let r = send(&api, Method::POST, "tools", &env.token, None, &[], init.clone()).await;
    assert_eq!(r.status, StatusCode::OK, "no Origin: {}", r.text());
    let r = send(
        &api,
        Method::POST,
        "tools",
        &env.token,
        None,
        &[("origin", common::ISSUER)],
        init,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "Warden's own origin: {}", r.text());
}

// ---- The catalogue ----

async fn catalogue_fetch_is_decided_before_it_is_sent(api: Api) {
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    // When the upstream receives a tools/list: how many tools/list decisions the ledger holds.
    let snapshots: Arc<Mutex<Vec<usize>>> = Arc::default();
    let (store, snaps) = (api.store.clone(), snapshots.clone());
    env.hostile.config(|c| {
        c.on_message = Some(Arc::new(
            move |msg: Value| -> futures_util::future::BoxFuture<'static, ()> {
                let (store, snaps) = (store.clone(), snaps.clone());
                Box::pin(async move {
                    if msg["method"] == "tools/list" {
                        let n = store_entries(&store)
                            .await
                            .iter()
                            .filter(|(k, b)| k == "decision" && b["method"] == "tools/list")
                            .count();
                        snaps.lock().unwrap().push(n);
                    }
                })
            },
        ));
    });
    // No listing yet: Warden lists the tools itself to learn `search`'s class.
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        call(2, "search", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let seen = snapshots.lock().unwrap().clone();
    assert!(
        !seen.is_empty(),
        "Warden listed the tools: {:?}",
        env.hostile.methods()
    );
    assert!(
        seen[0] >= 1,
        "the tools/list was recorded as a decision before the upstream received it"
    );
}

async fn changed_tool_definitions_are_quarantined(api: Api) {
    let env = setup_with(
        &api,
        Config {
            rug_pull: true,
            ..Config::default()
        },
    )
    .await;
    let session = initialize(&api, "tools", &env.token).await;
    assert_eq!(listed(&api, &env, &session).await, ["echo", "search"]);
    // The second listing serves `echo` with another description.
    assert_eq!(
        listed(&api, &env, &session).await,
        ["search"],
        "the changed tool is hidden"
    );
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        call(3, "echo", json!({})),
    )
    .await;
    assert_eq!(
        error_code(&r.json()),
        Some(warden_gateway::jsonrpc::TOOL_QUARANTINED),
        "{}",
        r.text()
    );
    assert!(env.hostile.executed().is_empty(), "the quarantined tool ran");
}

/// A quarantined tool `name` of the upstream `tools`: denied with `tool-quarantined` naming
/// `reason`, hidden, never run; `warden tool show`/`list` (the API behind them) say why, the
/// ledger recorded it; an admin approving its pending digest trusts it: listed, and it runs.
async fn assert_quarantined_until_approved(api: &Api, env: &Env, session: &str, name: &str, reason: &str) {
    let r = post(api, "tools", &env.token, Some(session), call(3, name, json!({}))).await;
    let answer = r.json();
    assert_eq!(
        error_code(&answer),
        Some(warden_gateway::jsonrpc::TOOL_QUARANTINED),
        "{}",
        r.text()
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(message.contains(reason), "the denial names why: {message}");
    assert!(env.hostile.executed().is_empty(), "the quarantined tool ran");

    let (s, shown) = api
        .admin(Method::GET, &format!("/v1/tools/tools/{name}"), None)
        .await;
    assert_eq!(s, StatusCode::OK, "{shown}");
    assert_eq!(shown["state"], "quarantined", "{shown}");
    assert!(
        shown["quarantine_reason"]
            .as_str()
            .is_some_and(|r| r.contains(reason)),
        "`tool show` says why: {shown}"
    );
    let (_, all) = api.admin(Method::GET, "/v1/tools?upstream=tools", None).await;
    let listed_reason = all["tools"]
        .as_array()
        .and_then(|a| a.iter().find(|t| t["name"] == name))
        .map(|t| t["quarantine_reason"].clone());
    assert!(
        listed_reason
            .as_ref()
            .and_then(Value::as_str)
            .is_some_and(|r| r.contains(reason)),
        "`tool list` says why: {all}"
    );
    let recorded = common::ledger_entries(api).await.into_iter().any(|(k, b)| {
        k == "registry_change"
            && b["operation"] == "tool.quarantined"
            && b["tool"] == name
            && b["reason"].as_str().is_some_and(|r| r.contains(reason))
    });
    assert!(recorded, "the quarantine and its reason are in the ledger");

    let digest = shown["pending_digest"]
        .as_str()
        .expect("a pending digest")
        .to_owned();
    let (s, b) = api
        .admin(
            Method::POST,
            &format!("/v1/tools/tools/{name}/approve"),
            Some(json!({ "digest": digest })),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["state"], "active", "{b}");
    assert!(b["quarantine_reason"].is_null(), "approved: no reason left {b}");
    assert!(
        listed(api, env, session).await.iter().any(|t| t == name),
        "approved: listed"
    );
    let r = post(api, "tools", &env.token, Some(session), call(4, name, json!({}))).await;
    assert!(r.json()["result"].is_object(), "approved: it runs {}", r.text());
    assert_eq!(env.hostile.executed().len(), 1);
}

/// An upstream lists `echo`, then lists it again as `echo_v2` — the same description, input
/// schema and annotations under a new name. Trusting it as a new tool would shed its pinning (and
/// its admin's classification); it is quarantined as renamed until an admin approves it.
async fn a_renamed_tool_is_quarantined_not_trusted_as_new(api: Api) {
    let config = Config {
        rename: true,
        ..Config::default()
    };
    let env = setup_declaring(&api, config, &["echo", "echo_v2", "search"]).await;
    let session = initialize(&api, "tools", &env.token).await;
    assert_eq!(listed(&api, &env, &session).await, ["echo", "search"]);
    assert_eq!(
        listed(&api, &env, &session).await,
        ["search"],
        "the renamed tool is hidden"
    );
    assert_quarantined_until_approved(&api, &env, &session, "echo_v2", "renamed from `echo`").await;
}

/// An upstream adds `lookup`, a new tool whose description is the approved `search`'s (in other
/// case and spacing): a model choosing by description would send it `search`'s calls. It is
/// quarantined as shadowing `search` until an admin approves it.
async fn a_tool_shadowing_an_approved_ones_description_is_quarantined(api: Api) {
    let config = Config {
        shadow: true,
        ..Config::default()
    };
    let env = setup_declaring(&api, config, &["echo", "search", "lookup"]).await;
    let session = initialize(&api, "tools", &env.token).await;
    assert_eq!(listed(&api, &env, &session).await, ["echo", "search"]);
    assert_eq!(
        listed(&api, &env, &session).await,
        ["echo", "search"],
        "the shadowing tool is hidden"
    );
    assert_quarantined_until_approved(&api, &env, &session, "lookup", "shadows `search`").await;
}

/// The harness itself: the leak check sees every form the hostile server echoes (so a passing test
/// means no leak, not a blind check), and does not fire on another credential's echoes.
#[test]
fn the_leak_check_sees_every_echo_form() {
    let auth = format!("Bearer {CRED}");
    let mut forms = Echo::ALL.to_vec();
    forms.push(Echo::Mixed(vec![3, 1, 0, 2]));
    for form in forms {
        let payload = match hostile::echo_payload(&form, &auth) {
            Ok(p) => format!(r#"{{"jsonrpc":"2.0","id":1,"result":{p}}}"#),
            Err(p) => format!(r#"{{"jsonrpc":"2.0","id":1,"error":{p}}}"#),
        };
        let sse = format!("id: 1\ndata: {payload}\n\n");
        for body in [&payload, &sse] {
            let caught =
                std::panic::catch_unwind(|| hostile::assert_no_secret("probe", body.as_bytes(), CRED));
            assert!(caught.is_err(), "{form:?} slips past the check: {body}");
            hostile::assert_no_secret("another credential", body.as_bytes(), OTHER_CRED);
        }
    }
    hostile::assert_no_secret(
        "redacted",
        br#"{"jsonrpc":"2.0","id":1,"result":{"content":[{"type":"text","text":"auth=[REDACTED:upstream-credential]"}]}}"#,
        CRED,
    );
}

// ---- Upstream faults (issue 14): every fault ends in a JSON-RPC error within its limit ----

/// What the faulty upstream saw.
#[derive(Default)]
struct Faulty {
    /// `tools/list` requests received.
    lists: usize,
}

/// A small MCP server whose tools fail the way real servers do: `first_byte` answers after 5 s,
/// `silent_sse` sends event-stream headers and then nothing, `hang_body` starts a JSON answer and
/// stops, `http500` fails with a status, `garbage` answers what is not JSON, `ends_early` closes an
/// event stream without an answer; `ok` answers. `tools/list` takes 100 ms (so concurrent callers
/// overlap it).
async fn faulty_upstream() -> (String, Arc<Mutex<Faulty>>) {
    use axum::response::IntoResponse as _;
    let shared = Arc::new(Mutex::new(Faulty::default()));
    let s = shared.clone();
    let app = axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                let msg: Value = serde_json::from_slice(&body).unwrap();
                let id = msg["id"].clone();
                let json = |result: Value| {
                    (
                        StatusCode::OK,
                        [("content-type", "application/json")],
                        json!({"jsonrpc": "2.0", "id": id, "result": result}).to_string(),
                    )
                        .into_response()
                };
                let pending = || futures_util::stream::pending::<Result<axum::body::Bytes, std::convert::Infallible>>();
                match msg["method"].as_str().unwrap_or("") {
                    "initialize" => json(json!({"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                                               "serverInfo": {"name": "faulty", "version": "1"}})),
                    "tools/list" => {
                        s.lock().unwrap().lists += 1;
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        let tools: Vec<Value> = ["ok", "first_byte", "silent_sse", "hang_body", "http500", "garbage", "ends_early", "wrong_kind"]
                            .iter()
                            .map(|n| json!({"name": n, "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}}))
                            .collect();
                        json(json!({"tools": tools}))
                    }
                    "tools/call" => match msg["params"]["name"].as_str().unwrap_or("") {
                        "first_byte" => {
                            tokio::time::sleep(Duration::from_secs(5)).await;
                            json(json!({"content": []}))
                        }
                        "silent_sse" => (
                            StatusCode::OK,
                            [("content-type", "text/event-stream")],
                            Body::from_stream(pending()),
                        )
                            .into_response(),
                        "hang_body" => {
                            use futures_util::StreamExt as _;
                            let first = futures_util::stream::once(async {
                                Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(b"{\"jsonrpc\":"))
                            });
                            (
                                StatusCode::OK,
                                [("content-type", "application/json")],
                                Body::from_stream(first.chain(pending())),
                            )
                                .into_response()
                        }
                        "http500" => (StatusCode::INTERNAL_SERVER_ERROR, "upstream broke").into_response(),
                        "garbage" => (StatusCode::OK, [("content-type", "application/json")], "this is not json")
                            .into_response(),
                        // A JSON body that is a notification, not the answer.
                        "wrong_kind" => (
                            StatusCode::OK,
                            [("content-type", "application/json")],
                            json!({"jsonrpc": "2.0", "method": "notifications/message",
                                   "params": {"level": "info", "data": "not your answer"}})
                            .to_string(),
                        )
                            .into_response(),
                        "ends_early" => (StatusCode::OK, [("content-type", "text/event-stream")], "")
                            .into_response(),
                        _ => json(json!({"content": [{"type": "text", "text": "fine"}]})),
                    },
                    _ if id.is_null() => StatusCode::ACCEPTED.into_response(),
                    _ => json(json!({})),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}/mcp"), shared)
}

/// The API with a gateway whose upstream limits are short (first byte and idle 300 ms, a whole
/// answer 1.5 s), the faulty upstream registered as `faulty`, and a task token for it.
async fn faulty_setup(api: Api) -> (Api, String, Arc<Mutex<Faulty>>) {
    seed(&api).await;
    let config: warden_server::config::Config = toml::from_str(
        "[gateway]\nupstream_timeout_ms = 300\nidle_timeout_ms = 300\nanswer_timeout_ms = 1500\nmessage_timeout_ms = 300\n",
    )
    .unwrap();
    config.gateway.validate().unwrap();
    let mut state = api.state.clone();
    state.gateway = Arc::new(
        warden_server::gateway::Gateway::new(
            (&config.gateway).into(),
            warden_server::gateway::GatewayKeys::generate(),
            warden_gateway::scan::Scanner::new(&[]).unwrap(),
            &[],
        )
        .unwrap(),
    );
    let api = Api {
        app: warden_server::router(state.clone(), warden_server::HttpLimits::default()),
        state,
        ..api
    };
    let (url, seen) = faulty_upstream().await;
    register(&api, "faulty", &url, CRED).await;
    let bot = enrolled(&api, "bot", &["faulty"]).await;
    let tools = [
        "ok",
        "first_byte",
        "silent_sse",
        "hang_body",
        "http500",
        "garbage",
        "ends_early",
        "wrong_kind",
    ];
    let token = task_token(&api, &bot, &intent(&["faulty"], &tools, None, None)).await;
    (api, token, seen)
}

async fn upstream_faults_end_in_a_clear_answer(api: Api) {
    let (api, token, _) = faulty_setup(api).await;
    let session = initialize(&api, "faulty", &token).await;
    let r = post(
        &api,
        "faulty",
        &token,
        Some(&session),
        request(2, "tools/list", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // (tool, what the error names, the result entry's status)
    let cases = [
        ("first_byte", "first-byte limit", "upstream_timeout_first_byte"),
        ("silent_sse", "idle limit", "upstream_timeout_idle"),
        ("hang_body", "idle limit", "upstream_timeout_idle"),
        ("http500", "HTTP 500", "upstream_http_500"),
        ("garbage", "not a JSON-RPC message", "upstream_protocol_error"),
        ("ends_early", "without an answer", "upstream_protocol_error"),
        (
            "wrong_kind",
            "not the answer to the request",
            "upstream_protocol_error",
        ),
    ];
    for (i, (tool, names, status)) in (10..).zip(cases) {
        let started = std::time::Instant::now();
        let r = post(&api, "faulty", &token, Some(&session), call(i, tool, json!({}))).await;
        let took = started.elapsed();
        let answer = r
            .messages()
            .into_iter()
            .find(|m| m["id"] == i)
            .unwrap_or_else(|| panic!("{tool}: no answer to the call: {} {}", r.status, r.text()));
        assert_eq!(answer["error"]["code"], -32014, "{tool}: {answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(names),
            "{tool}: the error names what happened: {answer}"
        );
        assert!(
            took < Duration::from_millis(2500),
            "{tool}: answered within its limit ({took:?})"
        );
        assert!(
            wait_for_entry(&api, |k, b| k == "action_result"
                && b["tool"] == tool
                && b["status"] == status)
            .await,
            "{tool}: the result is recorded as {status}: {:?}",
            common::ledger_entries(&api)
                .await
                .iter()
                .filter(|(k, _)| k == "action_result")
                .collect::<Vec<_>>()
        );
    }
    // The calls that still work work.
    let r = post(&api, "faulty", &token, Some(&session), call(30, "ok", json!({}))).await;
    assert_eq!(r.json()["result"]["content"][0]["text"], "fine", "{}", r.text());
}

async fn concurrent_first_calls_wait_for_one_catalogue_fetch(api: Api) {
    let (api, token, seen) = faulty_setup(api).await;
    let session = initialize(&api, "faulty", &token).await;
    // 16 calls at once naming a tool no tools/list has shown yet.
    let calls = (0..16).map(|i| {
        let (api, token, session) = (&api, &token, &session);
        async move {
            post(
                api,
                "faulty",
                token,
                Some(session),
                call(100 + i, "ok", json!({})),
            )
            .await
        }
    });
    let replies = futures_util::future::join_all(calls).await;
    for r in &replies {
        assert_eq!(
            r.json()["result"]["content"][0]["text"],
            "fine",
            "every first call is allowed, none denied as unknown: {}",
            r.text()
        );
    }
    assert_eq!(
        seen.lock().unwrap().lists,
        1,
        "one catalogue fetch served them all"
    );
}

async fn a_slow_agent_message_is_refused_in_time(api: Api) {
    use futures_util::StreamExt as _;
    let (api, token, _) = faulty_setup(api).await;
    // The REST timeout does not cover /mcp: a body that starts and never ends must not hold the
    // connection for ever.
    let first = futures_util::stream::once(async {
        Ok::<_, std::convert::Infallible>(axum::body::Bytes::from_static(b"{\"jsonrpc\":"))
    });
    let body = Body::from_stream(first.chain(futures_util::stream::pending()));
    let req = Request::builder()
        .method(Method::POST)
        .uri("/mcp/faulty")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::ACCEPT, "application/json, text/event-stream")
        .body(body)
        .unwrap();
    let started = std::time::Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(5), api.app.clone().oneshot(req))
        .await
        .expect("answered within the limit, not held")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::REQUEST_TIMEOUT);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

// ---- Registry changes reach live tasks ----

/// The `task_ended` entries a registry change wrote with `cause`.
async fn tasks_ended_by(api: &Api, cause: &str) -> Vec<Value> {
    common::ledger_entries(api)
        .await
        .into_iter()
        .filter(|(k, b)| k == "task_ended" && b["cause"] == cause)
        .map(|(_, b)| b)
        .collect()
}

/// Removing an upstream from an agent's allowed list left its tasks calling that upstream, and
/// renewing, until they ended (up to an hour). A narrowing change must end the tasks it narrows at
/// once (and only those), say so in the ledger, and widening must end nothing.
async fn narrowing_an_agent_ends_the_live_tasks_it_narrows(api: Api) {
    seed(&api).await;
    let hostile = Hostile::start(Config::default()).await;
    register(&api, "tools", &hostile.url, CRED).await;
    let other = outsider(&api).await;
    let bot = enrolled(&api, "bot", &["tools", "other"]).await;
    let (s, on_tools) = start(&api, &bot, &intent(&["tools"], &["echo"], None, None), None).await;
    assert_eq!(s, StatusCode::OK, "{on_tools}");
    let (s, on_other) = start(&api, &bot, &intent(&["other"], &["echo"], None, None), None).await;
    assert_eq!(s, StatusCode::OK, "{on_other}");
    let tools_token = on_tools["access_token"].as_str().unwrap().to_owned();
    let other_token = on_other["access_token"].as_str().unwrap().to_owned();
    let session = initialize(&api, "tools", &tools_token).await;
    let r = post(
        &api,
        "tools",
        &tools_token,
        Some(&session),
        call(2, "echo", json!({"form": "plain"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "the call works before: {}", r.text());
    let executed = hostile.executed().len();

    // Widening ends nothing.
    let (s, b) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"allowed_upstreams": ["tools", "other", "db"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        task_with(&api, &tools_token).await.0,
        StatusCode::OK,
        "widening ended a task"
    );
    assert!(tasks_ended_by(&api, "agent.update").await.is_empty());

    // Taking `tools` away ends the task that named it, not the other one.
    let (s, b) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"allowed_upstreams": ["other"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = task_with(&api, &tools_token).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "the narrowed task still verifies: {b}"
    );
    let r = post(
        &api,
        "tools",
        &tools_token,
        Some(&session),
        call(3, "echo", json!({"form": "plain"})),
    )
    .await;
    assert_eq!(
        r.status,
        StatusCode::UNAUTHORIZED,
        "the narrowed task still calls the upstream: {}",
        r.text()
    );
    assert_eq!(
        hostile.executed().len(),
        executed,
        "a call ran after the narrowing"
    );
    let (s, b) = exchange(&api, &tools_token, &bot, None, None).await;
    assert!(s.is_client_error(), "the narrowed task renews: {s} {b}");
    assert_eq!(
        task_with(&api, &other_token).await.0,
        StatusCode::OK,
        "a task that never named `tools` ended"
    );
    let ended = tasks_ended_by(&api, "agent.update").await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["tasks"], json!([on_tools["task_id"]]), "{ended:?}");
    assert_eq!(ended[0]["count"], 1);
    let reason = ended[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("no longer allowed") && reason.contains("`tools`"),
        "{reason}"
    );

    // Removing an owner ends every live task of the agent.
    let (s, b) = api
        .admin(
            Method::POST,
            "/v1/humans",
            Some(json!({"email": "second@example.com", "display_name": "Second", "roles": ["owner"]})),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"owners": ["owner@example.com", "second@example.com"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        task_with(&api, &other_token).await.0,
        StatusCode::OK,
        "adding an owner ended a task"
    );
    let (s, b) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"owners": ["second@example.com"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        task_with(&api, &other_token).await.0,
        StatusCode::UNAUTHORIZED,
        "an owner removed, the task lives on"
    );
    let ended = tasks_ended_by(&api, "agent.update").await;
    assert_eq!(ended.len(), 2, "{ended:?}");
    assert!(
        ended[1]["reason"]
            .as_str()
            .unwrap()
            .contains("owner `owner@example.com` removed"),
        "{ended:?}"
    );
    assert!(other.executed().is_empty());

    // Removing a human who co-owns an agent ends that agent's tasks too, and says so.
    let (s, on_other) = start(&api, &bot, &intent(&["other"], &["echo"], None, None), None).await;
    assert_eq!(s, StatusCode::OK, "{on_other}");
    let token = on_other["access_token"].as_str().unwrap().to_owned();
    let (s, b) = api
        .admin(
            Method::PATCH,
            "/v1/agents/bot",
            Some(json!({"owners": ["owner@example.com", "second@example.com"]})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let (s, b) = api
        .admin(Method::DELETE, "/v1/humans/second@example.com", None)
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        task_with(&api, &token).await.0,
        StatusCode::UNAUTHORIZED,
        "a co-owner removed, the task lives on"
    );
    let ended = tasks_ended_by(&api, "human.remove").await;
    assert_eq!(ended.len(), 1, "{ended:?}");
    assert_eq!(ended[0]["tasks"], json!([on_other["task_id"]]), "{ended:?}");
}

// ---- Precise answers ----

/// An out-of-scope tool call was reported as `unknown-tool` (or as "no policy permits"): the answer
/// must say the task's intent does not name it, at the gateway and at `/v1/authorize`, whether the
/// upstream lists the tool or not.
async fn out_of_scope_tools_are_reported_as_out_of_scope(api: Api) {
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    for (round, tool) in [(0, "purge"), (0, "nonexistent"), (1, "purge"), (1, "nonexistent")] {
        if round == 1 {
            let _ = listed(&api, &env, &session).await;
        }
        let r = post(
            &api,
            "tools",
            &env.token,
            Some(&session),
            call(5, tool, json!({})),
        )
        .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        let answer = r.json();
        assert_eq!(error_code(&answer), Some(-32010), "{answer}");
        let first = answer["error"]["data"]["reasons"][0]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert!(
            first.starts_with("out-of-scope: the task's intent does not name the tool `")
                && first.contains("(it names `echo`, `search`)"),
            "{tool}: {answer}"
        );
        assert!(!answer.to_string().contains("unknown-tool"), "{answer}");
    }
    for tool in ["purge", "nonexistent"] {
        let d = authorize(&api, &env.token, "read", &format!("tools/{tool}")).await;
        assert_eq!(d["outcome"], "deny", "{d}");
        assert!(
            d["reasons"][0]
                .as_str()
                .unwrap_or_default()
                .starts_with("out-of-scope:"),
            "{d}"
        );
    }
    assert!(env.hostile.executed().is_empty(), "{:?}", env.hostile.executed());
    let denied = decisions(&api, "tools/call").await;
    assert!(
        denied.iter().filter(|b| b["outcome"] == "deny").count() >= 4
            && denied.iter().all(|b| b["reasons"][0]
                .as_str()
                .is_some_and(|r| r.starts_with("out-of-scope:"))),
        "{denied:?}"
    );
}

/// A too-large argument was reported with the "secret in arguments" code (-32013): an argument the
/// scanner cannot examine in full is refused before policy with its own code, saying which limit.
async fn arguments_too_large_to_scan_are_reported_as_too_large(api: Api) {
    let env = setup(&api).await;
    let session = initialize(&api, "tools", &env.token).await;
    let big = "a".repeat(1_100_000);
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        call(6, "echo", json!({"text": big})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.status);
    let answer = r.json();
    assert_eq!(
        error_code(&answer),
        Some(-32016),
        "{}",
        &r.text()[..r.text().len().min(600)]
    );
    let message = answer["error"]["message"].as_str().unwrap_or_default();
    assert!(
        message.contains("too-large: the arguments") && message.contains("1024 KiB"),
        "{message}"
    );
    assert!(!message.contains("secret"), "{message}");
    assert!(env.hostile.executed().is_empty());
    let found = decisions(&api, "tools/call").await;
    assert!(
        found.iter().any(|b| b["outcome"] == "deny"
            && b["reasons"][0]
                .as_str()
                .is_some_and(|r| r.starts_with("too-large:"))
            && b.get("risk").is_none()),
        "{found:?}"
    );
    // A notification cannot carry a JSON-RPC answer: 413 with the same error.
    let note = json!({"jsonrpc": "2.0", "method": "notifications/progress",
                      "params": {"progressToken": 1, "progress": 1, "message": "a".repeat(1_100_000)}});
    let r = post(&api, "tools", &env.token, Some(&session), note).await;
    assert_eq!(
        r.status,
        StatusCode::PAYLOAD_TOO_LARGE,
        "{}",
        &r.text()[..r.text().len().min(600)]
    );
    assert_eq!(error_code(&r.json()), Some(-32016));
}

// ---- MCP 2026-07-28: the body decides, headers must agree ----

const MODERN: &str = "2026-07-28";

/// The `_meta` every 2026-07-28 request carries.
fn modern_meta() -> Value {
    json!({"io.modelcontextprotocol/protocolVersion": MODERN,
           "io.modelcontextprotocol/clientCapabilities": {},
           "io.modelcontextprotocol/clientInfo": {"name": "agent", "version": "1"}})
}

/// A 2026-07-28 request: `params` with the per-request `_meta`.
fn modern(id: i64, method: &str, mut params: Value) -> Value {
    params["_meta"] = modern_meta();
    request(id, method, params)
}

/// The request-metadata headers a conforming 2026-07-28 client sends with `msg`.
fn standard_headers(msg: &Value) -> Vec<(String, String)> {
    let method = msg["method"].as_str().unwrap_or_default().to_owned();
    let mut h = vec![("mcp-method".to_owned(), method.clone())];
    let key = match method.as_str() {
        "tools/call" | "prompts/get" => Some("name"),
        "resources/read" => Some("uri"),
        _ => None,
    };
    if let Some(v) = key.and_then(|k| msg["params"][k].as_str()) {
        h.push(("mcp-name".to_owned(), v.to_owned()));
    }
    h
}

/// A POST to `/mcp/{upstream}` on the 2026-07-28 wire with exactly these extra headers (besides
/// `MCP-Protocol-Version: 2026-07-28`); the body is read until it ends or [`STREAM_WAIT`] passes.
async fn post_modern(
    api: &Api,
    upstream: &str,
    token: &str,
    headers: &[(String, String)],
    msg: &Value,
) -> Reply {
    let mut req = Request::builder()
        .method(Method::POST)
        .uri(format!("/mcp/{upstream}"))
        .header(header::ACCEPT, "application/json, text/event-stream")
        .header(header::AUTHORIZATION, format!("Bearer {token}"))
        .header(header::CONTENT_TYPE, "application/json")
        .header("mcp-protocol-version", MODERN);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let resp = api
        .app
        .clone()
        .oneshot(req.body(Body::from(msg.to_string())).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let mut body = resp.into_body();
    let mut out = Vec::new();
    read_until(&mut body, &mut out, STREAM_WAIT, |_| false).await;
    Reply {
        status,
        headers,
        body: out,
    }
}

/// A conforming 2026-07-28 request.
async fn modern_ok(api: &Api, token: &str, msg: &Value) -> Reply {
    post_modern(api, "tools", token, &standard_headers(msg), msg).await
}

/// Whether the audit layer recorded a refusal whose reason starts with `code`.
async fn refusal_recorded(api: &Api, code: &str) -> bool {
    common::ledger_entries(api).await.iter().any(|(k, b)| {
        k == "decision"
            && b["outcome"] == "deny"
            && b["reasons"]
                .as_array()
                .is_some_and(|r| r.iter().any(|r| r.as_str().is_some_and(|r| r.starts_with(code))))
    })
}

fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
    p.iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// A load balancer routing on `Mcp-Method` would see a list; the body runs a tool. Refused (400,
/// -32020), recorded, and nothing reaches the upstream.
async fn modern_mcp_method_header_that_disagrees_with_the_body_is_refused(api: Api) {
    let env = setup(&api).await;
    let msg = modern(1, "tools/call", json!({"name": "search", "arguments": {}}));
    let r = post_modern(
        &api,
        "tools",
        &env.token,
        &pairs(&[("mcp-method", "tools/list"), ("mcp-name", "search")]),
        &msg,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let v = r.json();
    assert_eq!(error_code(&v), Some(-32020), "{v}");
    assert_eq!(v["id"], 1, "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Mcp-Method `tools/list`"),
        "{v}"
    );
    assert!(
        env.hostile.seen().is_empty(),
        "nothing was forwarded: {:?}",
        env.hostile.methods()
    );
    assert!(
        refusal_recorded(&api, "header_mismatch").await,
        "the refusal is recorded"
    );
    // The same request with headers that agree is decided on its body, and runs.
    let r = modern_ok(&api, &env.token, &msg).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["result"].is_object(), "{}", r.text());
    assert_eq!(env.hostile.executed().len(), 1);
    let seen = env.hostile.seen();
    let call = seen
        .iter()
        .find(|s| s.rpc_method().as_deref() == Some("tools/call"))
        .unwrap();
    assert_eq!(call.header("mcp-method"), Some("tools/call"));
    assert_eq!(call.header("mcp-name"), Some("search"));
    assert_eq!(call.header("mcp-protocol-version"), Some(MODERN));
    assert!(
        call.header("mcp-session-id").is_none(),
        "no session on the 2026-07-28 wire"
    );
    assert!(
        r.session().is_none(),
        "Warden hands out no session on the 2026-07-28 wire"
    );
}

/// `Mcp-Name: search` over a body that purges: refused; decisions are made on the body.
async fn modern_mcp_name_header_that_disagrees_with_the_body_is_refused(api: Api) {
    let env = setup(&api).await;
    let msg = modern(1, "tools/call", json!({"name": "purge", "arguments": {}}));
    let r = post_modern(
        &api,
        "tools",
        &env.token,
        &pairs(&[("mcp-method", "tools/call"), ("mcp-name", "search")]),
        &msg,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let v = r.json();
    assert_eq!(error_code(&v), Some(-32020), "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(m.contains("Mcp-Name `search`") && m.contains("purge"), "{v}");
    // A base64-encoded name is decoded before it is compared: still a mismatch.
    let r = post_modern(
        &api,
        "tools",
        &env.token,
        &pairs(&[("mcp-method", "tools/call"), ("mcp-name", "=?base64?c2VhcmNo?=")]),
        &msg,
    )
    .await;
    assert_eq!(error_code(&r.json()), Some(-32020), "{}", r.text());
    // Missing it is a mismatch too.
    let r = post_modern(
        &api,
        "tools",
        &env.token,
        &pairs(&[("mcp-method", "tools/call")]),
        &msg,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    assert_eq!(error_code(&r.json()), Some(-32020), "{}", r.text());
    assert!(env.hostile.executed().is_empty(), "purge never ran");
    // With honest headers, `purge` (outside the task) is decided on the body: denied by policy.
    let r = modern_ok(&api, &env.token, &msg).await;
    let v = r.json();
    assert_eq!(error_code(&v), Some(-32010), "{v}");
    assert!(env.hostile.executed().is_empty(), "purge never ran");
    assert!(refusal_recorded(&api, "header_mismatch").await);
}

/// `Mcp-Param-*` must say what the arguments say, by the catalogued schema's `x-mcp-header`; what
/// the upstream gets is derived from the body.
async fn modern_mcp_param_headers_that_disagree_with_the_arguments_are_refused(api: Api) {
    let mut tools = hostile::default_tools();
    tools[1]["inputSchema"] = json!({"type": "object", "properties": {
        "region": {"type": "string", "x-mcp-header": "Region"},
        "limit": {"type": "integer", "x-mcp-header": "Limit"},
        "q": {"type": "string"}}});
    let env = setup_with(
        &api,
        Config {
            tools,
            ..Config::default()
        },
    )
    .await;
    let list = modern(1, "tools/list", json!({}));
    let r = modern_ok(&api, &env.token, &list).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(tool_names(&r.json()), ["echo", "search"]);
    let msg = modern(
        2,
        "tools/call",
        json!({"name": "search", "arguments": {"region": "us-west1", "limit": 5, "q": "x"}}),
    );
    let with = |extra: &[(&str, &str)]| {
        let mut h = standard_headers(&msg);
        h.extend(pairs(extra));
        h
    };
    for (bad, why) in [
        (
            vec![("mcp-param-region", "eu-west1"), ("mcp-param-limit", "5")],
            "Region",
        ),
        (vec![("mcp-param-limit", "5")], "missing"),
        (
            vec![("mcp-param-region", "us-west1"), ("mcp-param-limit", "6")],
            "Limit",
        ),
        (
            vec![
                ("mcp-param-region", "us-west1"),
                ("mcp-param-limit", "5"),
                ("mcp-param-tenant", "acme"),
            ],
            "Tenant",
        ),
    ] {
        let r = post_modern(&api, "tools", &env.token, &with(&bad), &msg).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{why}: {}", r.text());
        let v = r.json();
        assert_eq!(error_code(&v), Some(-32020), "{why}: {v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .to_lowercase()
                .contains(&why.to_lowercase()),
            "{why}: {v}"
        );
    }
    assert!(
        env.hostile.executed().is_empty(),
        "nothing ran: {:?}",
        env.hostile.executed()
    );
    // Agreeing headers (an integer may be written `5.0`): forwarded, with headers derived from the
    // body.
    let r = post_modern(
        &api,
        "tools",
        &env.token,
        &with(&[("mcp-param-region", "us-west1"), ("mcp-param-limit", "5.0")]),
        &msg,
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["result"].is_object(), "{}", r.text());
    let seen = env.hostile.seen();
    let call = seen
        .iter()
        .rev()
        .find(|s| s.rpc_method().as_deref() == Some("tools/call"))
        .unwrap();
    assert_eq!(call.header("mcp-param-region"), Some("us-west1"));
    assert_eq!(
        call.header("mcp-param-limit"),
        Some("5"),
        "derived from the body, not the header"
    );
    assert!(refusal_recorded(&api, "header_mismatch").await);
}

/// A 2026-07-28 request without its `_meta`, a method that revision removed, a notification, a
/// `GET` stream: each gets an error naming what is wrong; nothing is forwarded.
async fn modern_requests_without_their_envelope_or_with_removed_methods_are_refused_precisely(api: Api) {
    let env = setup(&api).await;
    let bare = request(1, "tools/list", json!({}));
    let r = modern_ok(&api, &env.token, &bare).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let v = r.json();
    assert_eq!(error_code(&v), Some(-32602), "{v}");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("io.modelcontextprotocol/protocolVersion"),
        "{v}"
    );
    // The header says 2026-07-28, the body another revision.
    let mut other = modern(2, "tools/list", json!({}));
    other["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"] = "2025-11-25".into();
    let r = modern_ok(&api, &env.token, &other).await;
    assert_eq!(error_code(&r.json()), Some(-32020), "{}", r.text());
    // A 2026 `_meta` under a 2025 header: the headers disagree with the body.
    let msg = modern(3, "tools/list", json!({}));
    let r = send(
        &api,
        Method::POST,
        "tools",
        &env.token,
        None,
        &[("mcp-method", "tools/list")],
        Some(msg.to_string()),
    )
    .await;
    assert_eq!(error_code(&r.json()), Some(-32020), "{}", r.text());
    for (i, method) in (10..).zip(["ping", "initialize", "logging/setLevel", "resources/subscribe"]) {
        let msg = modern(i, method, json!({"level": "debug", "uri": "file:///tmp/a"}));
        let r = modern_ok(&api, &env.token, &msg).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "{method}: {}", r.text());
        let v = r.json();
        assert_eq!(error_code(&v), Some(-32601), "{method}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(method) && m.contains("2026-07-28"), "{method}: {v}");
    }
    let note =
        json!({"jsonrpc": "2.0", "method": "notifications/cancelled", "params": {"_meta": modern_meta()}});
    let r = post_modern(
        &api,
        "tools",
        &env.token,
        &pairs(&[("mcp-method", "notifications/cancelled")]),
        &note,
    )
    .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{}", r.text());
    let r = send(
        &api,
        Method::GET,
        "tools",
        &env.token,
        None,
        &[("mcp-protocol-version", MODERN)],
        None,
    )
    .await;
    assert!(r.status.is_client_error(), "{} {}", r.status, r.text());
    assert!(
        env.hostile.seen().is_empty(),
        "nothing was forwarded: {:?}",
        env.hostile.methods()
    );
    assert!(refusal_recorded(&api, "method_not_found").await);
}

/// `server/discover` is a read of the upstream: decided, recorded, its answer filtered.
async fn modern_server_discover_is_decided_and_recorded(api: Api) {
    let env = setup(&api).await;
    let r = modern_ok(&api, &env.token, &modern(1, "server/discover", json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["result"]["supportedVersions"], json!([MODERN]), "{v}");
    assert_eq!(v["result"]["ttlMs"], 60000, "caching hints pass: {v}");
    assert_decided(&api, "server/discover", "allow").await;
    // Warden's own discover (learning what the upstream speaks), then the agent's.
    let seen = env.hostile.seen();
    assert_eq!(seen.len(), 2);
    assert!(
        seen.iter()
            .all(|s| s.header("mcp-method") == Some("server/discover"))
    );
    assert!(
        decisions(&api, "server/discover")
            .await
            .iter()
            .any(|b| b["initiator"] == "warden" && b["outcome"] == "allow"),
        "Warden's own discover is decided and recorded"
    );
    // A task without the upstream is refused by policy, recorded.
    let other = outsider(&api).await;
    let r = post_modern(
        &api,
        "other",
        &env.token,
        &pairs(&[("mcp-method", "server/discover")]),
        &modern(2, "server/discover", json!({})),
    )
    .await;
    assert!(error_code(&r.json()).is_some(), "{}", r.text());
    assert!(other.seen().is_empty());
    assert_decided(&api, "server/discover", "deny").await;
}

/// `subscriptions/listen` is decided like a `GET` stream, and every notification on it passes the
/// outbound filter.
async fn modern_subscriptions_listen_is_decided_and_its_stream_filtered(api: Api) {
    let env = setup_with(
        &api,
        Config {
            get_hold: Duration::from_millis(300),
            ..Config::default()
        },
    )
    .await;
    let msg = modern(
        1,
        "subscriptions/listen",
        json!({"notifications": {"toolsListChanged": true}}),
    );
    let r = modern_ok(&api, &env.token, &msg).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let methods: Vec<String> = r
        .messages()
        .iter()
        .filter_map(|m| m["method"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        methods,
        [
            "notifications/subscriptions/acknowledged",
            "notifications/message",
            "notifications/tools/list_changed"
        ],
        "{}",
        r.text()
    );
    assert!(
        !r.text().contains(AWS_KEY),
        "the stream is filtered: {}",
        r.text()
    );
    assert_decided(&api, "subscriptions/listen", "allow").await;
}

// ---- Translation between revisions ----

/// The hostile upstream of `era` as `tools`, and the agent `bot` with two tasks declaring it (and
/// `echo`, `search`).
async fn era_setup(api: &Api, era: Era) -> (Hostile, String, String) {
    seed(api).await;
    let hostile = Hostile::start(Config {
        era,
        ..Config::default()
    })
    .await;
    register(api, "tools", &hostile.url, CRED).await;
    let bot = enrolled(api, "bot", &["tools"]).await;
    let details = intent(&["tools"], &["echo", "search"], None, None);
    let a = task_token(api, &bot, &details).await;
    let b = task_token(api, &bot, &details).await;
    (hostile, a, b)
}

fn count(methods: &[String], method: &str) -> usize {
    methods.iter().filter(|m| *m == method).count()
}

/// A 2026-07-28 client to an upstream that speaks only 2025: Warden learns that (its own
/// `server/discover`, decided), opens and holds a session (its own `initialize` and
/// `notifications/initialized`, decided), sends each request there without the 2026 envelope,
/// answers `server/discover` from the session's `initialize`, opens a new session when the upstream
/// forgets it, and refuses `subscriptions/listen` naming it.
async fn modern_client_to_a_legacy_upstream_is_translated_in_a_held_session(api: Api) {
    let (hostile, token, _) = era_setup(&api, Era::Legacy).await;
    let r = modern_ok(&api, &token, &modern(1, "tools/list", json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(tool_names(&r.json()), ["echo", "search"], "{}", r.text());
    assert!(r.session().is_none(), "no session for a 2026-07-28 client");
    let v = r.json();
    assert_eq!(
        (&v["result"]["resultType"], &v["result"]["cacheScope"]),
        (&json!("complete"), &json!("private")),
        "what 2026-07-28 requires of the result: {v}"
    );
    assert_eq!(
        hostile.methods(),
        [
            "server/discover",
            "initialize",
            "notifications/initialized",
            "tools/list"
        ]
    );
    let seen = hostile.seen();
    let list = seen.last().unwrap();
    assert_eq!(list.header("mcp-session-id"), Some("hostile-session-1"));
    assert_eq!(
        list.header("mcp-protocol-version"),
        Some("2025-06-18"),
        "the negotiated revision"
    );
    assert!(
        list.message()["params"].get("_meta").is_none(),
        "no 2026 envelope: {}",
        list.body
    );
    let init = seen
        .iter()
        .find(|s| s.rpc_method().as_deref() == Some("initialize"))
        .unwrap();
    assert_eq!(
        init.message()["params"]["capabilities"],
        json!({}),
        "only capabilities Warden can carry are declared"
    );
    for (method, initiator) in [
        ("server/discover", "warden"),
        ("initialize", "warden"),
        ("notifications/initialized", "warden"),
    ] {
        assert!(
            decisions(&api, method)
                .await
                .iter()
                .any(|b| b["initiator"] == initiator && b["outcome"] == "allow"),
            "Warden's own {method} is decided and recorded"
        );
    }
    // Calls in the held session; a tool outside the task is denied and never sent.
    let r = modern_ok(
        &api,
        &token,
        &modern(
            2,
            "tools/call",
            json!({"name": "search", "arguments": {"q": "x"}}),
        ),
    )
    .await;
    assert!(r.json()["result"].is_object(), "{}", r.text());
    let r = modern_ok(
        &api,
        &token,
        &modern(3, "tools/call", json!({"name": "purge", "arguments": {}})),
    )
    .await;
    assert!(error_code(&r.json()).is_some(), "{}", r.text());
    assert_eq!(
        hostile
            .executed()
            .iter()
            .map(|e| e.tool.clone())
            .collect::<Vec<_>>(),
        ["search"]
    );
    assert_decided(&api, "tools/call", "deny").await;
    // server/discover: answered by Warden from the session's initialize, through the filter.
    let r = modern_ok(&api, &token, &modern(4, "server/discover", json!({}))).await;
    let v = r.json();
    assert_eq!(v["result"]["supportedVersions"], json!([MODERN]), "{v}");
    assert_eq!(
        v["result"]["_meta"]["io.modelcontextprotocol/serverInfo"]["name"], "hostile",
        "{v}"
    );
    assert_eq!(v["result"]["capabilities"]["tools"], json!({}), "{v}");
    assert!(v["result"]["capabilities"].get("logging").is_none(), "{v}");
    assert_eq!(count(&hostile.methods(), "server/discover"), 1, "not sent on");
    assert!(
        decisions(&api, "server/discover")
            .await
            .iter()
            .any(|b| b["initiator"].is_null()),
        "the agent's discover is decided too"
    );
    // The upstream forgets the session: a new one, and the request is answered.
    hostile.forget_sessions();
    let r = modern_ok(&api, &token, &modern(5, "tools/list", json!({}))).await;
    assert_eq!(tool_names(&r.json()), ["echo", "search"], "{}", r.text());
    assert_eq!(count(&hostile.methods(), "initialize"), 2);
    assert_eq!(
        hostile.seen().last().unwrap().header("mcp-session-id"),
        Some("hostile-session-2")
    );
    // subscriptions/listen does not map: a precise error, recorded, nothing sent.
    let before = hostile.seen().len();
    let r = modern_ok(
        &api,
        &token,
        &modern(
            6,
            "subscriptions/listen",
            json!({"notifications": {"toolsListChanged": true}}),
        ),
    )
    .await;
    let v = r.json();
    assert_eq!(error_code(&v), Some(-32601), "{v}");
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("subscriptions/listen") && m.contains("cannot be translated"),
        "{m}"
    );
    assert_eq!(hostile.seen().len(), before);
    assert!(refusal_recorded(&api, "not-translated").await);
}

/// The session Warden holds at a 2025 upstream belongs to one task: another task gets its own, and
/// a task without the upstream gets none (Warden's initialize for it is denied, recorded).
async fn held_upstream_sessions_are_bound_to_their_task(api: Api) {
    let (hostile, a, b) = era_setup(&api, Era::Legacy).await;
    let list = modern(1, "tools/list", json!({}));
    assert_eq!(
        tool_names(&modern_ok(&api, &a, &list).await.json()),
        ["echo", "search"]
    );
    assert_eq!(count(&hostile.methods(), "initialize"), 1);
    hostile.forget_sessions();
    // Task b never reaches a's session (now forgotten upstream): it opens its own.
    assert_eq!(
        tool_names(&modern_ok(&api, &b, &list).await.json()),
        ["echo", "search"]
    );
    assert_eq!(count(&hostile.methods(), "initialize"), 2);
    let last = hostile.seen();
    assert_eq!(
        last.last().unwrap().header("mcp-session-id"),
        Some("hostile-session-2")
    );
    // A task of an agent not allowed this upstream: Warden's initialize for it is denied.
    let _other = outsider(&api).await;
    let stranger = enrolled(&api, "stranger", &["other"]).await;
    let token = task_token(&api, &stranger, &intent(&["other"], &[], None, None)).await;
    let r = modern_ok(&api, &token, &list).await;
    assert!(error_code(&r.json()).is_some(), "{}", r.text());
    assert_eq!(count(&hostile.methods(), "initialize"), 2, "no session for it");
    assert!(
        decisions(&api, "initialize")
            .await
            .iter()
            .any(|b| b["initiator"] == "warden" && b["outcome"] == "deny"),
        "Warden's initialize for the stranger is denied and recorded"
    );
}

/// A 2025 client to an upstream that speaks only 2026-07-28: the upstream refuses the client's
/// `initialize`, Warden learns it is modern and answers the `initialize` from `server/discover`
/// with a session of its own; each later request goes out in the 2026-07-28 form; `ping` and
/// `notifications/initialized` are answered by Warden after their decision; what cannot be
/// translated is refused naming it.
async fn legacy_client_to_a_modern_upstream_is_answered_and_translated(api: Api) {
    let (hostile, token, _) = era_setup(&api, Era::Modern).await;
    let r = post(&api, "tools", &token, None, initialize_msg()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["result"]["protocolVersion"], "2025-06-18", "{v}");
    assert_eq!(v["result"]["serverInfo"]["name"], "hostile", "{v}");
    assert_eq!(v["result"]["capabilities"]["tools"], json!({}), "{v}");
    let session = r.session().expect("Warden's own session");
    assert_eq!(hostile.methods(), ["initialize", "server/discover"]);
    let sent = hostile.seen().len();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = post(&api, "tools", &token, Some(&session), note).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    let r = post(
        &api,
        "tools",
        &token,
        Some(&session),
        request(2, "ping", json!({})),
    )
    .await;
    assert_eq!(r.json()["result"], json!({}), "{}", r.text());
    assert_eq!(hostile.seen().len(), sent, "answered by Warden");
    assert_decided(&api, "ping", "allow").await;
    assert_decided(&api, "notifications/initialized", "allow").await;
    // Requests go out in the 2026-07-28 form.
    let r = post(
        &api,
        "tools",
        &token,
        Some(&session),
        request(3, "tools/list", json!({})),
    )
    .await;
    assert_eq!(tool_names(&r.json()), ["echo", "search"], "{}", r.text());
    let r = post(
        &api,
        "tools",
        &token,
        Some(&session),
        call(4, "search", json!({"q": "x"})),
    )
    .await;
    assert!(r.json()["result"].is_object(), "{}", r.text());
    let seen = hostile.seen();
    let c = seen.last().unwrap();
    assert_eq!(c.header("mcp-protocol-version"), Some(MODERN));
    assert_eq!(c.header("mcp-method"), Some("tools/call"));
    assert_eq!(c.header("mcp-name"), Some("search"));
    assert!(c.header("mcp-session-id").is_none());
    assert_eq!(
        c.message()["params"]["_meta"]["io.modelcontextprotocol/protocolVersion"],
        MODERN
    );
    let r = post(&api, "tools", &token, Some(&session), call(5, "purge", json!({}))).await;
    assert!(error_code(&r.json()).is_some(), "{}", r.text());
    assert_eq!(hostile.executed().len(), 1, "the denied call is not sent");
    // What 2026-07-28 removed: refused naming it, recorded, not sent.
    let before = hostile.seen().len();
    for (id, method, params) in [
        (6, "logging/setLevel", json!({"level": "debug"})),
        (7, "resources/subscribe", json!({"uri": "file:///x"})),
    ] {
        let r = post(&api, "tools", &token, Some(&session), request(id, method, params)).await;
        let v = r.json();
        assert_eq!(error_code(&v), Some(-32601), "{method}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(method) && m.contains("cannot be translated"), "{m}");
    }
    let r = get_stream(&api, "tools", &token, Some(&session), None).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED, "{}", r.text());
    assert_eq!(hostile.seen().len(), before, "nothing sent");
    assert!(refusal_recorded(&api, "not-translated").await);
    // A second client: Warden knows the upstream refuses initialize and answers at once.
    let r = post(&api, "tools", &token, None, initialize_msg()).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(count(&hostile.methods(), "initialize"), 1);
    // The session is the task's: another token cannot use it.
    let other = outsider_token(&api).await;
    let r = post(
        &api,
        "tools",
        &other,
        Some(&session),
        request(8, "tools/list", json!({})),
    )
    .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "{}", r.text());
}

async fn outsider_token(api: &Api) -> String {
    let bot2 = enrolled(api, "bot2", &["tools"]).await;
    task_token(api, &bot2, &intent(&["tools"], &["echo"], None, None)).await
}

/// Conformance found it: an upstream that acknowledges a notification with `202 Accepted`,
/// `Content-Type: application/json` and an empty body (the Python SDK's server) was answered 502
/// ("not valid JSON"), so a client's `notifications/initialized` failed and no session started. A
/// 202 to a notification or a response is its status alone, whatever its content type says.
async fn an_empty_json_202_to_a_notification_is_accepted(api: Api) {
    let env = setup_with(
        &api,
        Config {
            json_202: true,
            ..Config::default()
        },
    )
    .await;
    let session = initialize(&api, "tools", &env.token).await;
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    let r = post(&api, "tools", &env.token, Some(&session), note).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.text());
    assert!(r.body.is_empty(), "{}", r.text());
    let r = post(
        &api,
        "tools",
        &env.token,
        Some(&session),
        call(3, "echo", json!({"form": "plain"})),
    )
    .await;
    assert_eq!(r.status, StatusCode::OK, "the session works: {}", r.text());
}

/// Conformance found it (`request-metadata`): an upstream that refuses Warden's first request with
/// -32022 naming 2026-07-28 among the revisions it supports (a server may, to make its client
/// choose again) was taken for a 2025 server, and every request of a 2026-07-28 agent failed with
/// -32014 "negotiated MCP `?`". Warden asks once more, at a revision the refusal names.
async fn a_refused_first_revision_is_asked_again_not_taken_for_2025(api: Api) {
    let env = setup_with(
        &api,
        Config {
            era: hostile::Era::Modern,
            refuse_first_version: true,
            ..Config::default()
        },
    )
    .await;
    let r = modern_ok(&api, &env.token, &modern(1, "tools/list", json!({}))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert!(r.json()["result"]["tools"].is_array(), "{}", r.text());
    let probes = decisions(&api, "server/discover")
        .await
        .into_iter()
        .filter(|b| b["initiator"] == "warden" && b["outcome"] == "allow")
        .count();
    assert_eq!(
        probes, 2,
        "the refused discover and the one asked again are both decided and recorded"
    );
}
