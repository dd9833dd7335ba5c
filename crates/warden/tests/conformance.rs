//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, pinned in
//! `tests/mcp/package.json`), run twice against the same upstream, the reference server
//! `@modelcontextprotocol/server-everything` over streamable HTTP: once directly, and once through
//! Warden's MCP gateway (`warden serve`, SQLite, `/mcp/everything`) with a task token. Warden must be
//! transparent: every server scenario that passes directly must pass through Warden.
//!
//! The conformance client sends no credentials, so between it and Warden sits `tests/mcp/bearer_shim.cjs`,
//! a loopback proxy that forwards every request (POST, GET with an SSE stream, DELETE) as it is and adds
//! `Authorization: Bearer <task token>`. The task (agent `bot`, upstream `everything` registered as
//! `staging`, so the default policy pack permits the declared writes without an approval) declares
//! every tool of server-everything and every tool the scenarios call ([`TOOLS`]), and
//! `"resources": ["*"]`, `"prompts": ["*"]` when the server knows those `warden_task` members (when it
//! refuses them as unknown, the task is started without them and the table says so). Task tokens live
//! an hour here (`[tokens] task_token_ttl_secs`), longer than the whole run.
//!
//! The test prints a table (scenario, direct, through Warden) on stderr whether it passes or not, and
//! fails when a scenario passes directly and fails through Warden (unless [`NOT_APPLICABLE`] says why
//! it cannot pass through a gateway that authenticates). A scenario that fails directly proves nothing
//! about Warden and is only shown: the scenarios are written against the suite's own test server
//! (tools `test_*`, resources `test://...`, prompts `test_*`), so against server-everything many fail
//! directly (21 of 32 with conformance 0.1.13 and server-everything 2026.8.31); and two pass directly
//! only because server-everything answers an unknown tool with an `isError` result carrying text
//! (`tools-call-simple-text`, `tools-call-error`), where Warden refuses a tool its upstream does not
//! list.
//!
//! Needs node (Node.js 20 or later) and the npm packages in `tests/mcp`: scripts/test installs them;
//! without them this test fails and says so (it never skips).
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mcp::{EverythingServer, mcp_dir, node, npm_package};
use common::{Backend, Server, Spawn};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

/// The conformance client's npm package.
const CONFORMANCE: &str = "@modelcontextprotocol/conformance";

/// The most one scenario may take (a run that hangs is killed and counts as failed). A scenario
/// takes about a second.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(60);

/// The upstream's name in Warden.
const UPSTREAM: &str = "everything";

/// Scenarios that cannot pass through Warden by design, with the reason. Empty: every server scenario
/// of the suite applies to an authenticating gateway (none of them tests an unauthenticated server's
/// behavior that a token would change; `dns-rebinding-protection` sends its bad Host and Origin with
/// the token, through the shim).
///
/// Two scenarios are listed because of the upstream, not the gateway: they call tools that only the
/// suite's own test server has, and pass directly only because server-everything answers a call to a
/// tool it does not have with an `isError` result carrying text, which those scenarios happen to
/// accept. Warden refuses a call to a tool its upstream does not list (JSON-RPC -32010
/// `unknown-tool`, MCP's "unknown tool" protocol error) — deliberately: it cannot decide a call on a
/// tool whose class it does not know.
const NOT_APPLICABLE: &[(&str, &str)] = &[
    (
        "tools-call-simple-text",
        "server-everything has no `test_simple_text`; its direct pass is its isError answer for an unknown tool, which Warden refuses as unknown-tool",
    ),
    (
        "tools-call-error",
        "server-everything has no `test_error_handling`; its direct pass is its isError answer for an unknown tool, which Warden refuses as unknown-tool",
    ),
];

/// The tools the task declares: server-everything's (2026.8.31, with and without client
/// capabilities; see tests/mcp/README.md) and the ones the scenarios call by name (they are written
/// against the suite's own test server, and server-everything answers an unknown tool with an
/// `isError` result, which some scenarios accept). A tool that is not declared is refused by Warden
/// where the upstream would have answered, which is not what this test is about.
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
    // called by the conformance scenarios (0.1.13)
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
];

/// How one scenario went.
#[derive(Debug, Clone)]
struct Outcome {
    passed: bool,
    /// Empty when passed; else the failed checks (`id: message`), or why the run itself failed.
    why: String,
}

/// The conformance CLI's entry point, checked to be the pinned version.
fn conformance_cli() -> PathBuf {
    npm_package(CONFORMANCE).join("dist/index.js")
}

/// `node <conformance> <args>` with a clean environment (PATH only: no proxy variables), in
/// `tests/mcp`; killed when the returned future is dropped.
fn conformance(args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(node());
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
    cmd
}

/// The server scenarios, as `conformance list --server` names them.
async fn server_scenarios() -> Vec<String> {
    let out = tokio::time::timeout(SCENARIO_TIMEOUT, conformance(&["list", "--server"]).output())
        .await
        .expect("`conformance list --server` hangs")
        .expect("running node (the conformance CLI)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`conformance list --server` failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let scenarios: Vec<String> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("Server scenarios"))
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.trim().strip_prefix("- "))
        .map(str::to_owned)
        .collect();
    assert!(
        scenarios.iter().any(|s| s == "server-initialize"),
        "no server scenarios in `conformance list --server`:\n{stdout}"
    );
    scenarios
}

/// Runs one scenario against the MCP endpoint `url`: passed when the CLI exits 0 and its results
/// (`checks.json` in a fresh directory under `results`) hold no failed check.
async fn run_scenario(url: &str, scenario: &str, results: &Path) -> Outcome {
    let dir = results.join(scenario);
    std::fs::create_dir_all(&dir).expect("a results directory");
    let dir_s = dir.to_str().expect("UTF-8 path");
    let run = conformance(&["server", "--url", url, "--scenario", scenario, "-o", dir_s]).output();
    let out = match tokio::time::timeout(SCENARIO_TIMEOUT, run).await {
        Ok(out) => out.expect("running node (the conformance CLI)"),
        Err(_) => {
            return Outcome {
                passed: false,
                why: format!("timed out after {SCENARIO_TIMEOUT:?}"),
            };
        }
    };
    // The CLI writes <dir>/server-<scenario>-<time>/checks.json.
    let checks: Option<Vec<Value>> = std::fs::read_dir(&dir)
        .expect("the results directory")
        .filter_map(Result::ok)
        .map(|e| e.path().join("checks.json"))
        .find(|p| p.is_file())
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok());
    let Some(checks) = checks else {
        let tail = |b: &[u8]| {
            let s = String::from_utf8_lossy(b).into_owned();
            let lines: Vec<&str> = s.lines().rev().take(5).collect();
            lines.into_iter().rev().collect::<Vec<_>>().join(" / ")
        };
        return Outcome {
            passed: false,
            why: format!(
                "no results ({}): {} {}",
                out.status,
                tail(&out.stdout),
                tail(&out.stderr)
            ),
        };
    };
    let failed: Vec<String> = checks
        .iter()
        .filter(|c| c["status"] == "FAILURE")
        .map(|c| {
            format!(
                "{}: {}",
                c["id"].as_str().unwrap_or("?"),
                c["errorMessage"].as_str().unwrap_or("(no message)")
            )
        })
        .collect();
    match (out.status.success(), failed.is_empty()) {
        (true, true) => Outcome {
            passed: true,
            why: String::new(),
        },
        (_, false) => Outcome {
            passed: false,
            why: failed.join("; "),
        },
        (false, true) => Outcome {
            passed: false,
            why: format!("exit status {} with no failed check", out.status),
        },
    }
}

/// Runs every scenario against `url`, in order.
async fn run_all(url: &str, scenarios: &[String], results: &Path) -> Vec<Outcome> {
    let mut outcomes = Vec::new();
    for scenario in scenarios {
        outcomes.push(run_scenario(url, scenario, results).await);
    }
    outcomes
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

/// The owner alice, the upstream `everything` at `url` (staging), and the agent `bot` allowed on it,
/// enrolled (its key in `cwd/bot.key`) and active. Returns the key file.
async fn set_up(s: &Server, url: &str) -> PathBuf {
    s.add_owner().await;
    s.run(&[
        "upstream",
        "add",
        UPSTREAM,
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
    let join = s.path("bot.jt");
    s.run(&[
        "agent",
        "register",
        "bot",
        "--owner",
        "alice@example.com",
        "--environment",
        "staging",
        "--model",
        "anthropic/claude-sonnet@4.5",
        "--upstream",
        UPSTREAM,
        "--join-token-out",
        path_str(&join),
    ])
    .await
    .ok();
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

/// Starts the task (RFC 8693 exchange of an assertion signed with `key`, as `warden task start`
/// does, but with the intent as JSON so that it can carry members the CLI has no flags for).
/// Returns the task token, and a note when the server refused `resources`/`prompts` and the task
/// was started without them.
async fn start_task(s: &Server, key: &Path) -> (String, Option<String>) {
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
            "upstreams": [UPSTREAM],
            "tools": TOOLS,
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

/// The side-by-side table, and the scenarios that pass directly but not through Warden.
fn table(scenarios: &[String], direct: &[Outcome], warden: &[Outcome]) -> (String, Vec<String>) {
    let mark = |o: &Outcome| if o.passed { "pass" } else { "FAIL" };
    let width = scenarios.iter().map(String::len).max().unwrap_or(8).max(8);
    let mut t = String::new();
    writeln!(
        t,
        "{:<width$}  {:<6}  {:<14}  note",
        "scenario", "direct", "through Warden"
    )
    .unwrap();
    writeln!(t, "{}", "-".repeat(width + 2 + 6 + 2 + 14 + 2 + 4)).unwrap();
    let mut regressions = Vec::new();
    for ((scenario, d), w) in scenarios.iter().zip(direct).zip(warden) {
        let not_applicable = NOT_APPLICABLE.iter().find(|(n, _)| n == scenario);
        let note = match (d.passed, w.passed, not_applicable) {
            (true, false, Some((_, reason))) => format!("not applicable: {reason}"),
            (true, false, None) => {
                regressions.push(scenario.clone());
                format!("WARDEN DIFFERS: {}", w.why)
            }
            (false, false, _) => format!("fails directly too: {}", d.why),
            (false, true, _) => format!("passes only through Warden; directly: {}", d.why),
            (true, true, _) => String::new(),
        };
        writeln!(t, "{scenario:<width$}  {:<6}  {:<14}  {note}", mark(d), mark(w)).unwrap();
    }
    let count = |o: &[Outcome]| o.iter().filter(|o| o.passed).count();
    writeln!(
        t,
        "{}/{} pass directly, {}/{} through Warden",
        count(direct),
        scenarios.len(),
        count(warden),
        scenarios.len()
    )
    .unwrap();
    (t, regressions)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_through_warden_equals_direct() {
    let started = Instant::now();
    let scenarios = server_scenarios().await;
    let results = tempfile::tempdir().expect("a results directory");
    let everything = EverythingServer::start().await;

    // Directly.
    let direct = run_all(&everything.url, &scenarios, &results.path().join("direct")).await;
    assert!(
        direct
            .iter()
            .zip(&scenarios)
            .any(|(o, s)| o.passed && s == "server-initialize"),
        "server-initialize fails directly against server-everything: the direct run is broken \
         ({:?}); output of server-everything:\n{}",
        direct.first(),
        everything.log()
    );

    // Through the shim and Warden.
    let s = Server::spawn(
        Backend::Sqlite,
        Spawn {
            config: Some("[tokens]\ntask_token_ttl_secs = 3600\n".into()),
            ..Spawn::default()
        },
    )
    .await;
    let key = set_up(&s, &everything.url).await;
    let (token, note) = start_task(&s, &key).await;
    let token_file = s.token_file("conformance-task", &token);
    let shim = BearerShim::start(&s.url, &token_file).await;
    let through = format!("{}/mcp/{UPSTREAM}", shim.url);
    let warden = run_all(&through, &scenarios, &results.path().join("warden")).await;

    let (mut report, regressions) = table(&scenarios, &direct, &warden);
    if let Some(note) = &note {
        writeln!(report, "note: {note}").unwrap();
    }
    writeln!(
        report,
        "(the MCP conformance suite {}, {} scenarios, {:.0?})",
        conformance_version(),
        scenarios.len(),
        started.elapsed()
    )
    .unwrap();
    // Straight to stderr, past the test harness's capture: the table shows whether the test
    // passes or fails.
    let _ = writeln!(std::io::stderr(), "\n{report}");
    assert!(
        regressions.is_empty(),
        "{} scenario(s) pass directly but fail through Warden: {}\n{report}\n--- bearer shim ---\n{}",
        regressions.len(),
        regressions.join(", "),
        shim.log()
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
