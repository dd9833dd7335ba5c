//! End-to-end tests of the policy verbs and of the decision point through the real `warden` binary.
//!
//! - Local, no server: `policy validate` (the repository's default pack; located syntax, annotation and
//!   strict-validation errors) and `policy test` (the default pack's tests pass; a wrong expectation
//!   fails with its difference).
//! - On SQLite and PostgreSQL, with the default pack bootstrapped: `warden authorize` with real task
//!   tokens (production writes need one approver, destructive actions two, a prototype agent never
//!   reaches production, reads within the task are allowed; unknown actions and arguments beyond the
//!   limits are denies with a reason; batches), `policy explain`, `policy activate` (decisions change at
//!   once; a broken set is refused and changes nothing), `policy shadow` (counted, never enforced).
//! - Two nodes on one PostgreSQL database: an activation on one node changes decisions on the other.

// Test code: a failed `expect` is a failed test, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use common::{Backend, Out, Server, Spawn, WARDEN, clean_env, default_policies_dir};

on_both_backends!(
    decisions_through_authorize,
    activation_changes_decisions_at_once,
    shadow_sets_are_counted_never_enforced,
);

// ----------------------------------------------------------------------------------------------------
// Helpers

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Runs `warden <args>` in `cwd` without a server or token (the local verbs).
fn local(cwd: &Path, args: &[&str]) -> Out {
    let output = clean_env(&mut Command::new(WARDEN))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running warden");
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// Copies the default pack's `*.cedar` files (not its tests) into `dst`, which is created.
fn copy_pack(dst: &Path) -> PathBuf {
    std::fs::create_dir_all(dst).expect("mkdir");
    for entry in std::fs::read_dir(default_policies_dir()).expect("the default pack") {
        let p = entry.expect("entry").path();
        if p.extension().is_some_and(|e| e == "cedar") {
            std::fs::copy(&p, dst.join(p.file_name().expect("name"))).expect("copy");
        }
    }
    dst.to_owned()
}

/// The 1-based line of the first line of `file` in the default pack that contains `needle`.
fn line_of(file: &str, needle: &str) -> usize {
    let text = std::fs::read_to_string(default_policies_dir().join(file)).expect("pack file");
    text.lines()
        .position(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("`{needle}` not in {file}"))
        + 1
}

/// The version `policy validate` computes for `dir`.
fn local_version(dir: &Path) -> String {
    let out = local(dir, &["policy", "validate", path_str(dir), "-o", "json"]).ok();
    out.json()["version"].as_str().expect("version").to_owned()
}

/// A candidate set: the default pack plus a forbid on reading the upstream `crm`.
const NO_CRM_READS: &str = r#"// A candidate added by the tests.
@id("no-crm-reads")
@reason("crm is being migrated")
forbid (principal, action == Warden::Action::"read", resource == Warden::Upstream::"crm");
"#;

fn pack_with_forbid(dst: &Path) -> PathBuf {
    let dir = copy_pack(dst);
    std::fs::write(dir.join("zz-candidate.cedar"), NO_CRM_READS).expect("write");
    dir
}

async fn add_upstream(s: &Server, name: &str, environment: &str, sensitivity: &str) {
    s.run(&[
        "upstream",
        "add",
        name,
        "--kind",
        "mcp",
        "--url",
        &format!("https://{name}.example.com/mcp"),
        "--environment",
        environment,
        "--owner",
        "alice@example.com",
        "--sensitivity",
        sensitivity,
    ])
    .await
    .ok();
}

/// The registry the scenarios use: an owner; `crm` (production), `sandbox` (prototype) and
/// `staging-db` (staging).
async fn setup(s: &Server) {
    s.add_owner().await;
    add_upstream(s, "crm", "production", "confidential").await;
    add_upstream(s, "sandbox", "prototype", "public").await;
    add_upstream(s, "staging-db", "staging", "internal").await;
}

/// An enrolled, active agent and its key file.
struct Agent {
    name: String,
    key: PathBuf,
}

/// Registers `name` in `environment` with `upstreams`, enrolls it with the CLI (on `enroll_on`), and
/// activates it.
async fn onboard(s: &Server, enroll_on: &Server, name: &str, environment: &str, upstreams: &[&str]) -> Agent {
    let join = s.path(&format!("{name}.jt"));
    let mut args = vec![
        "agent",
        "register",
        name,
        "--owner",
        "alice@example.com",
        "--environment",
        environment,
        "--model",
        "anthropic/claude-sonnet@4.5",
        "--join-token-out",
        path_str(&join),
    ];
    for u in upstreams {
        args.extend(["--upstream", u]);
    }
    s.run(&args).await.ok();
    let key = s.path(&format!("{name}.key"));
    enroll_on
        .agent(&[
            "agent",
            "enroll",
            "--join-token-file",
            path_str(&join),
            "--key-out",
            path_str(&key),
        ])
        .await
        .ok();
    s.run(&["agent", "activate", name]).await.ok();
    Agent {
        name: name.to_owned(),
        key,
    }
}

/// Starts a task for `agent` declaring `upstreams` (plus `extra` flags); its id and token file.
async fn start(
    s: &Server,
    agent: &Agent,
    out: &str,
    upstreams: &[&str],
    extra: &[&str],
) -> (String, PathBuf) {
    let token = s.path(out);
    let mut args = vec![
        "task",
        "start",
        "--key",
        path_str(&agent.key),
        "--agent-id",
        &agent.name,
        "--purpose",
        "policy tests",
        "--type",
        "test",
        "--token-out",
        path_str(&token),
        "-o",
        "json",
    ];
    for u in upstreams {
        args.extend(["--upstream", u]);
    }
    args.extend_from_slice(extra);
    let started = s.agent(&args).await.ok().json();
    (started["task_id"].as_str().expect("task_id").to_owned(), token)
}

/// `warden authorize --task-token-file TOKEN <args>` (as the agent: no API token).
async fn authorize(s: &Server, token: &Path, args: &[&str]) -> Out {
    let mut all = vec!["authorize", "--task-token-file", path_str(token)];
    all.extend_from_slice(args);
    s.agent(&all).await
}

/// `warden authorize ... -o json`, asserting the exit code; the decision.
async fn decision(s: &Server, token: &Path, args: &[&str], code: i32) -> Value {
    let mut all = args.to_vec();
    all.extend(["-o", "json"]);
    let out = authorize(s, token, &all).await;
    assert_eq!(
        out.code,
        code,
        "`warden {}`: wrong exit code\nstdout: {}\nstderr: {}",
        out.args.join(" "),
        out.stdout,
        out.stderr
    );
    assert!(out.stderr.is_empty(), "{}", out.stderr);
    out.json()
}

fn reasons(d: &Value) -> Vec<String> {
    d["reasons"]
        .as_array()
        .unwrap_or_else(|| panic!("no reasons: {d}"))
        .iter()
        .map(|r| r.as_str().expect("a string").to_owned())
        .collect()
}

/// Whether a decision names policy `id` among its reasons.
fn cites(d: &Value, id: &str) -> bool {
    reasons(d)
        .iter()
        .any(|r| r == id || r.starts_with(&format!("{id} (")))
}

fn read_token(path: &Path) -> String {
    std::fs::read_to_string(path)
        .expect("token file")
        .trim()
        .to_owned()
}

/// `POST path` with the task token as a bearer token; the status and the JSON answer.
async fn post_task(s: &Server, token: &Path, path: &str, body: &Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(s.endpoint(path))
        .bearer_auth(read_token(token))
        .json(body)
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

/// `{"a": {"a": ... 1 ...}}`, `depth` objects deep.
fn nested(depth: usize) -> Value {
    let mut v = json!(1);
    for _ in 0..depth {
        v = json!({ "a": v });
    }
    v
}

// ----------------------------------------------------------------------------------------------------
// Local verbs: no server

#[test]
fn validate_the_default_pack() {
    let dir = default_policies_dir();
    let out = local(&dir, &["policy", "validate", path_str(&dir)]).ok();
    let line = out.stdout.trim();
    let version = line
        .strip_prefix("ok: ")
        .and_then(|rest| rest.split(", version ").nth(1))
        .unwrap_or_else(|| panic!("{line}"));
    assert!(line.contains(" policies, version "), "{line}");
    assert_eq!(version.len(), 64, "{line}");
    assert!(version.bytes().all(|b| b.is_ascii_hexdigit()), "{line}");

    let v = local(&dir, &["policy", "validate", path_str(&dir), "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["valid"], true);
    assert_eq!(v["version"], version);
    let policies = v["policies"].as_u64().expect("policies");
    assert!(line.starts_with(&format!("ok: {policies} policies")), "{line}");
    assert!(v["files"].as_array().expect("files").len() >= 5, "{v:#}");
    // A content hash: the same directory gives the same version, and a copy too.
    let tmp = tempfile::tempdir().unwrap();
    assert_eq!(local_version(&copy_pack(&tmp.path().join("copy"))), version);
}

#[test]
fn validate_locates_every_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("broken");
    std::fs::create_dir(&dir).unwrap();
    // A syntax error (line 3), and in another file a misspelt attribute (line 4, strict validation):
    // both are reported, each with file, line and column.
    std::fs::write(
        dir.join("a-syntax.cedar"),
        "@id(\"a\")\npermit(principal, action, resource)\n  when { principal.name == };\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("b-typo.cedar"),
        "@id(\"typo\")\npermit(principal, action, resource)\nwhen {\n  principal.enviroment == \"x\"\n};\n",
    )
    .unwrap();
    let d = path_str(&dir);
    let e = local(tmp.path(), &["policy", "validate", d]).fails(1);
    assert!(
        e.starts_with(&format!(
            "error: the policy set in {d} does not compile: 2 problems\n"
        )),
        "{e}"
    );
    let lines: Vec<&str> = e.lines().skip(1).collect();
    assert_eq!(lines.len(), 2, "{e}");
    assert!(lines[0].starts_with(&format!("{d}/a-syntax.cedar:3:")), "{e}");
    assert!(lines[0].contains("unexpected token"), "{e}");
    assert!(
        lines[1].starts_with(&format!("{d}/b-typo.cedar:4:3: policy `typo`: ")),
        "{e}"
    );
    assert!(
        lines[1].contains("`enviroment`") && lines[1].contains("did you mean `environment`"),
        "{e}"
    );
    // The column points into the line.
    let col: usize = lines[0].split(':').nth(2).unwrap().parse().unwrap();
    assert!(col > 1, "{e}");

    // JSON mode: the problems on stdout, for tools; still exit 1.
    let out = local(tmp.path(), &["policy", "validate", d, "-o", "json"]);
    let v = out.json();
    assert_eq!(out.code, 1);
    assert_eq!(v["valid"], false);
    let errs = v["errors"].as_array().unwrap();
    assert_eq!(errs.len(), 2, "{v:#}");
    assert_eq!(errs[1]["file"], format!("{d}/b-typo.cedar"));
    assert_eq!(
        (errs[1]["line"].as_u64(), errs[1]["column"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(errs[1]["policy_id"], "typo");

    // A policy without `@id` is refused.
    let noid = tmp.path().join("noid");
    std::fs::create_dir(&noid).unwrap();
    std::fs::write(noid.join("p.cedar"), "\npermit(principal, action, resource);\n").unwrap();
    let e = local(tmp.path(), &["policy", "validate", path_str(&noid)]).fails(1);
    assert!(
        e.contains(&format!(
            "{}/p.cedar:2:1: every policy needs an `@id(\"...\")` annotation",
            path_str(&noid)
        )),
        "{e}"
    );

    // No policy files, or no directory: refused, not "ok: 0 policies".
    let empty = tmp.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let e = local(tmp.path(), &["policy", "validate", path_str(&empty)]).fails(1);
    assert!(e.contains("holds no `.cedar` files"), "{e}");
    let e = local(tmp.path(), &["policy", "validate", "missing"]).fails(1);
    assert!(e.contains("cannot read policy directory"), "{e}");
}

#[test]
fn the_default_pack_passes_its_tests() {
    let tests = default_policies_dir().join("tests");
    let toml_files = std::fs::read_dir(&tests)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "toml")
        })
        .count();
    let out = local(&tests, &["policy", "test", path_str(&tests)]).ok();
    let passes = out.stdout.lines().filter(|l| l.starts_with("PASS ")).count();
    assert!(passes > 0, "{}", out.stdout);
    assert!(!out.stdout.contains("\nFAIL "), "{}", out.stdout);
    let summary = out.stdout.lines().last().unwrap();
    assert!(
        summary.starts_with(&format!(
            "{passes} passed, 0 failed in {toml_files} files; policies "
        )),
        "{summary}"
    );

    // The same from inside the directory (`tests` → its parent), and as JSON.
    let v = local(&tests, &["policy", "test", ".", "--dir", "..", "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["passed"], passes);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["files"].as_array().unwrap().len(), toml_files);
    // One file: the policies are the parent of its `tests` directory.
    let one = tests.join("writes.toml");
    let out = local(&tests, &["policy", "test", path_str(&one)]).ok();
    assert!(
        out.stdout
            .contains("PASS a destructive action needs two approvals"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_wrong_expectation_fails_with_the_difference() {
    let tmp = tempfile::tempdir().unwrap();
    let pack = copy_pack(&tmp.path().join("pack"));
    std::fs::create_dir(pack.join("tests")).unwrap();
    let writes = std::fs::read_to_string(default_policies_dir().join("tests/writes.toml")).unwrap();
    let wrong = writes.replacen(
        "expect = { outcome = \"needs_approval\", quorum = 2, reasons = [\"destructive-needs-two-approvals\"] }",
        "expect = { outcome = \"allow\", quorum = 2, reasons = [\"destructive-needs-two-approvals\"] }",
        1,
    );
    assert_ne!(wrong, writes, "the case to break is in writes.toml");
    std::fs::write(pack.join("tests/writes.toml"), wrong).unwrap();
    let tests = pack.join("tests");
    let out = local(tmp.path(), &["policy", "test", path_str(&tests)]);
    assert_eq!(out.code, 1, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains(
            "FAIL a destructive action needs two approvals\n     outcome: expected allow, got needs_approval\n"
        ),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("PASS two approvers allow a destructive action"),
        "{}",
        out.stdout
    );
    let summary = out.stdout.lines().last().unwrap();
    assert!(summary.contains(" passed, 1 failed in 1 file;"), "{summary}");
    assert!(
        out.stderr.starts_with("error: 1 of ") && out.stderr.contains(" cases failed"),
        "{}",
        out.stderr
    );

    // A file that does not parse is a failure too, named.
    std::fs::write(tests.join("broken.toml"), "[[cases]]\nname = 1\n").unwrap();
    let out = local(tmp.path(), &["policy", "test", path_str(&tests)]);
    assert_eq!(out.code, 1);
    assert!(
        out.stdout.contains("ERROR the test file does not parse"),
        "{}",
        out.stdout
    );
    assert!(
        out.stderr.contains("1 test file could not be used"),
        "{}",
        out.stderr
    );

    // Outside a `tests` directory, the policies must be named: a usage error.
    let loose = tmp.path().join("loose.toml");
    std::fs::write(&loose, writes).unwrap();
    let e = local(tmp.path(), &["policy", "test", path_str(&loose)]).fails(2);
    assert!(e.starts_with("error: --dir is required"), "{e}");
    local(
        tmp.path(),
        &["policy", "test", path_str(&loose), "--dir", path_str(&pack)],
    )
    .ok();
}

/// Values the client refuses before sending anything (the server address is a closed port: a request
/// would fail with exit 1, not 2).
#[test]
fn bad_values_are_refused_before_sending() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    drop(listener);
    let tmp = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["--server", url.as_str()];
        all.extend_from_slice(args);
        local(tmp.path(), &all)
    };
    let tt = ["authorize", "--task-token-file", "t.tt"];
    for (extra, want) in [
        (
            &["--action", "delete", "--upstream", "crm"][..],
            "error: --action: unknown action `delete`",
        ),
        (
            &["--action", "task.start", "--upstream", "crm"][..],
            "error: --action: `task.start` is decided",
        ),
        (
            &["--action", "read", "--tool", "crm"][..],
            "error: --tool: `crm` must be `UPSTREAM/NAME`",
        ),
        (&["--action", "read", "--tool", "Crm/x"][..], "error: --tool: "),
        (
            &["--action", "read", "--dataset", "crm/"][..],
            "error: --dataset: the name after `crm/`",
        ),
        (
            &["--action", "read", "--upstream", "crm", "--tool", "crm/x"][..],
            "cannot be used with",
        ),
        (
            &["--action", "read"][..],
            "the following required arguments were not provided",
        ),
    ] {
        let mut args = tt.to_vec();
        args.extend_from_slice(extra);
        let e = run(&args).fails(2);
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    let explain = [
        "policy",
        "explain",
        "--agent",
        "bot",
        "--action",
        "read",
        "--upstream",
        "crm",
    ];
    for (extra, want) in [
        (&["--approvers", "2"][..], "--approved"),
        (
            &["--approved", "--approvers", "0"][..],
            "error: --approvers: `0` is not a number",
        ),
        (
            &["--task-id", "latest"][..],
            "error: --task-id: `latest` is not a task id",
        ),
    ] {
        let mut args = explain.to_vec();
        args.extend_from_slice(extra);
        let e = run(&args).fails(2);
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    run(&[
        "policy",
        "explain",
        "--agent",
        "Bot",
        "--action",
        "read",
        "--upstream",
        "crm",
    ])
    .fails(2);
    run(&["policy", "shadow"]).fails(2);
    run(&["policy", "shadow", "dir", "--clear"]).fails(2);
    let e = run(&["policy", "activate", "dir", "--comment", "a\u{7}b"]).fails(2);
    assert!(
        e.contains("error: --comment: the comment contains a control character"),
        "{e}"
    );

    // A broken set is refused here, before any connection: the compile error, not "cannot connect".
    let broken = tmp.path().join("broken");
    std::fs::create_dir(&broken).unwrap();
    std::fs::write(
        broken.join("p.cedar"),
        "@id(\"p\") permit(principal, action, resource",
    )
    .unwrap();
    for verb in ["activate", "shadow"] {
        let e = run(&["--token-file", "none", "policy", verb, path_str(&broken)]).fails(1);
        assert!(e.contains("does not compile: 1 problem\n"), "{e}");
        assert!(e.contains(&format!("{}/p.cedar:1:", path_str(&broken))), "{e}");
    }
    // A local args file that is not JSON: exit 1 before sending.
    std::fs::write(tmp.path().join("args.json"), "{nope").unwrap();
    let mut args = tt.to_vec();
    args.extend([
        "--action",
        "read",
        "--upstream",
        "crm",
        "--args-file",
        "args.json",
    ]);
    let e = run(&args).fails(1);
    assert!(e.contains("--args-file: args.json is not JSON"), "{e}");
}

#[test]
fn help_documents_the_decision_exit_codes() {
    for args in [&["authorize", "--help"][..], &["--help"][..]] {
        let out = local(Path::new("."), args).ok();
        assert!(
            out.stdout.contains("3  ") && out.stdout.contains("deny"),
            "{}",
            out.stdout
        );
        assert!(
            out.stdout.contains("4  ") && out.stdout.contains("needs_approval"),
            "{}",
            out.stdout
        );
    }
}

// ----------------------------------------------------------------------------------------------------
// Scenarios on both backends

/// The default pack at work on real task tokens, through `warden authorize` (and raw HTTP for what the
/// CLI refuses to send).
async fn decisions_through_authorize(backend: Backend) {
    let s = Server::start(backend).await;
    setup(&s).await;
    let support = onboard(&s, &s, "support-bot", "production", &["crm"]).await;
    let (task_id, tt) = start(&s, &support, "support.tt", &["crm"], &[]).await;

    // A read within the task's scope: allowed, exit 0.
    let d = decision(&s, &tt, &["--action", "read", "--upstream", "crm"], 0).await;
    assert_eq!(d["outcome"], "allow");
    assert!(cites(&d, "reads-within-task-scope"), "{d:#}");
    let version = local_version(&default_policies_dir());
    assert_eq!(d["policy_version"], version.as_str());

    // A write to a production upstream: one approver (exit 4). Table output says so.
    let out = authorize(&s, &tt, &["--action", "write", "--upstream", "crm"]).await;
    assert_eq!(out.code, 4, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .starts_with("outcome:        needs_approval\nquorum:         1\n"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout
            .contains("  - production-writes-need-approval (permit, approval, quorum 1)"),
        "{}",
        out.stdout
    );
    let d = decision(&s, &tt, &["--action", "write", "--upstream", "crm"], 4).await;
    assert_eq!(
        (d["outcome"].as_str(), d["quorum"].as_u64()),
        (Some("needs_approval"), Some(1))
    );
    // Destructive: two approvers.
    let d = decision(&s, &tt, &["--action", "destructive", "--upstream", "crm"], 4).await;
    assert_eq!(
        (d["outcome"].as_str(), d["quorum"].as_u64()),
        (Some("needs_approval"), Some(2))
    );
    assert!(cites(&d, "destructive-needs-two-approvals"), "{d:#}");
    // Outside the task's scope: denied (exit 3), by default, saying what the task names.
    let d = decision(&s, &tt, &["--action", "read", "--upstream", "staging-db"], 3).await;
    assert!(
        reasons(&d)[0].starts_with("out-of-scope: the task's intent does not name the upstream `staging-db`"),
        "{d:#}"
    );
    assert!(reasons(&d)[1].starts_with("default-deny: "), "{d:#}");
    // Admin actions are for humans.
    let d = decision(&s, &tt, &["--action", "admin", "--upstream", "crm"], 3).await;
    assert!(cites(&d, "agents-never-admin"), "{d:#}");

    // A prototype agent: the default pack refuses a task that declares a production upstream...
    let proto = onboard(&s, &s, "proto-bot", "prototype", &["sandbox", "crm"]).await;
    let e = s
        .agent(&[
            "task",
            "start",
            "--key",
            path_str(&proto.key),
            "--agent-id",
            "proto-bot",
            "--purpose",
            "look at customers",
            "--type",
            "test",
            "--upstream",
            "crm",
        ])
        .await
        .fails(1);
    assert!(e.contains("prototype-never-production"), "{e}");
    // ...so its task is on the sandbox, where reads are allowed; reading production is denied by the
    // forbid itself: the reasons are the forbids that held (not `default-deny`), a staging agent's
    // identical read is denied only by default.
    let (_, proto_tt) = start(&s, &proto, "proto.tt", &["sandbox"], &[]).await;
    let d = decision(&s, &proto_tt, &["--action", "read", "--upstream", "sandbox"], 0).await;
    assert!(cites(&d, "reads-within-task-scope"), "{d:#}");
    let d = decision(&s, &proto_tt, &["--action", "read", "--upstream", "crm"], 3).await;
    assert!(cites(&d, "prototype-never-production"), "{d:#}");
    assert!(
        !reasons(&d).iter().any(|r| r.starts_with("default-deny")),
        "{d:#}"
    );
    let stager = onboard(&s, &s, "stage-bot", "staging", &["staging-db", "crm"]).await;
    let (_, stage_tt) = start(&s, &stager, "stage.tt", &["staging-db"], &[]).await;
    let d = decision(&s, &stage_tt, &["--action", "read", "--upstream", "crm"], 3).await;
    assert!(!cites(&d, "prototype-never-production"), "{d:#}");
    assert!(reasons(&d)[0].starts_with("out-of-scope: "), "{d:#}");
    assert!(reasons(&d)[1].starts_with("default-deny: "), "{d:#}");

    // Tool arguments beyond the limits: a deny naming the limit (nesting 40 deep; 1001 keys).
    let deep = s.path("deep.json");
    std::fs::write(&deep, nested(40).to_string()).unwrap();
    let d = decision(
        &s,
        &tt,
        &[
            "--action",
            "read",
            "--upstream",
            "crm",
            "--args-file",
            path_str(&deep),
        ],
        3,
    )
    .await;
    let r = reasons(&d);
    assert!(
        r[0].starts_with("limit-exceeded: tool arguments nest deeper than"),
        "{d:#}"
    );
    let wide: serde_json::Map<String, Value> = (0..1001).map(|i| (format!("k{i}"), json!(i))).collect();
    let wide_file = s.path("wide.json");
    std::fs::write(&wide_file, Value::Object(wide).to_string()).unwrap();
    let d = decision(
        &s,
        &tt,
        &[
            "--action",
            "read",
            "--upstream",
            "crm",
            "--args-file",
            path_str(&wide_file),
        ],
        3,
    )
    .await;
    assert!(
        reasons(&d)[0].starts_with("limit-exceeded: tool arguments have more than 1000 keys"),
        "{d:#}"
    );
    // Too large by the engine's measure (numbers count 8 bytes each), though the request is well
    // within the server's HTTP body limit: a deny too.
    let mut big: serde_json::Map<String, Value> = (0..998).map(|i| (format!("k{i}"), json!(i))).collect();
    big.insert("arr".into(), json!(vec![1; 2_999]));
    big.insert("s".into(), json!("x".repeat(24_000)));
    let big = Value::Object(big).to_string();
    assert!(big.len() < 60_000, "{}", big.len());
    let big_file = s.path("big.json");
    std::fs::write(&big_file, &big).unwrap();
    let d = decision(
        &s,
        &tt,
        &[
            "--action",
            "read",
            "--upstream",
            "crm",
            "--args-file",
            path_str(&big_file),
        ],
        3,
    )
    .await;
    assert!(
        reasons(&d)[0].starts_with("limit-exceeded: tool arguments are larger than 65536 bytes"),
        "{d:#}"
    );
    // Arguments past the engine's size limit still get a decision: a deny that says why (exit 3).
    let huge_file = s.path("huge.json");
    std::fs::write(&huge_file, json!({ "s": "x".repeat(70_000) }).to_string()).unwrap();
    let d = decision(
        &s,
        &tt,
        &[
            "--action",
            "read",
            "--upstream",
            "crm",
            "--args-file",
            path_str(&huge_file),
        ],
        3,
    )
    .await;
    assert!(reasons(&d).iter().any(|r| r.contains("limit-exceeded")), "{d}");
    // Arguments within the limits change nothing.
    let small = s.path("small.json");
    std::fs::write(&small, r#"{"query": "acme", "limit": 10}"#).unwrap();
    decision(
        &s,
        &tt,
        &[
            "--action",
            "read",
            "--upstream",
            "crm",
            "--args-file",
            path_str(&small),
        ],
        0,
    )
    .await;

    // What the CLI refuses to send, over HTTP: an unknown action is a deny with a reason (200).
    let (status, d) = post_task(
        &s,
        &tt,
        "/v1/authorize",
        &json!({"action": "delete", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!(status, 200, "{d:#}");
    assert_eq!(d["outcome"], "deny");
    assert!(
        reasons(&d)[0].starts_with("bad-request: unknown action `delete`"),
        "{d:#}"
    );
    let (status, d) = post_task(
        &s,
        &tt,
        "/v1/authorize",
        &json!({"action": "task.start", "resource": {"upstream": "crm"}}),
    )
    .await;
    assert_eq!((status, d["outcome"].as_str()), (200, Some("deny")), "{d:#}");

    // Batches: decisions in order; more than 100 requests is a 400.
    let batch: Vec<Value> = [("read", "crm"), ("write", "crm"), ("destructive", "crm")]
        .iter()
        .map(|(a, u)| json!({"action": a, "resource": {"upstream": u}}))
        .collect();
    let (status, v) = post_task(&s, &tt, "/v1/authorize/batch", &json!({ "requests": batch })).await;
    assert_eq!(status, 200, "{v:#}");
    let got: Vec<(Option<&str>, Option<u64>)> = v["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .map(|d| (d["outcome"].as_str(), d["quorum"].as_u64()))
        .collect();
    assert_eq!(
        got,
        [
            (Some("allow"), None),
            (Some("needs_approval"), Some(1)),
            (Some("needs_approval"), Some(2))
        ]
    );
    let many: Vec<Value> = (0..101)
        .map(|_| json!({"action": "read", "resource": {"upstream": "crm"}}))
        .collect();
    let (status, v) = post_task(&s, &tt, "/v1/authorize/batch", &json!({ "requests": many })).await;
    assert_eq!(status, 400, "{v:#}");
    assert_eq!(v["field"], "requests", "{v:#}");

    // DPoP-bound tokens need the agent's key to prove possession.
    let (_, bound) = start(&s, &support, "bound.tt", &["crm"], &["--dpop"]).await;
    let e = authorize(&s, &bound, &["--action", "read", "--upstream", "crm"])
        .await
        .fails(1);
    assert!(e.contains("DPoP-bound"), "{e}");
    let d = decision(
        &s,
        &bound,
        &[
            "--action",
            "read",
            "--upstream",
            "crm",
            "--key",
            path_str(&support.key),
        ],
        0,
    )
    .await;
    assert_eq!(d["outcome"], "allow");
    // An ended task's token gets no decision: an error (exit 1), not a deny.
    s.run(&["task", "end", &task_id]).await.ok();
    let e = authorize(&s, &tt, &["--action", "read", "--upstream", "crm"])
        .await
        .fails(1);
    assert!(e.contains("HTTP 401"), "{e}");

    // `policy explain`: the matching policy with its file and line.
    let (explained_task, _) = start(&s, &support, "explain.tt", &["crm"], &[]).await;
    let explain = [
        "policy",
        "explain",
        "--agent",
        "support-bot",
        "--action",
        "write",
        "--upstream",
        "crm",
        "--task-id",
        &explained_task,
    ];
    let line = line_of("writes.cedar", "@id(\"production-writes-need-approval\")");
    let out = s.run(&explain).await.ok();
    assert!(
        out.stdout
            .starts_with("outcome:        needs_approval\nquorum:         1\n"),
        "{}",
        out.stdout
    );
    let row = out
        .stdout
        .lines()
        .find(|l| l.starts_with("production-writes-need-approval "))
        .unwrap_or_else(|| panic!("no matched row: {}", out.stdout));
    assert!(row.contains(" permit ") && row.contains("quorum 1"), "{row}");
    assert!(
        row.ends_with(&format!("writes.cedar:{line}")),
        "{row}\n{}",
        out.stdout
    );
    let v = s.json(&explain).await;
    assert_eq!(v["decision"]["outcome"], "needs_approval");
    let m = &v["matched"][0];
    assert_eq!(
        (m["id"].as_str(), m["file"].as_str(), m["line"].as_u64()),
        (
            Some("production-writes-need-approval"),
            Some("writes.cedar"),
            Some(line as u64)
        ),
        "{v:#}"
    );
    assert!(v["considered"].as_array().unwrap().len() <= v["total_policies"].as_u64().unwrap() as usize);
    // Approved, it is allowed; without a task nothing permits it.
    let mut approved = explain.to_vec();
    approved.push("--approved");
    let v = s.json(&approved).await;
    assert_eq!(v["decision"]["outcome"], "allow", "{v:#}");
    let out = s
        .run(&[
            "policy",
            "explain",
            "--agent",
            "proto-bot",
            "--action",
            "read",
            "--upstream",
            "crm",
        ])
        .await
        .ok();
    assert!(out.stdout.starts_with("outcome:        deny\n"), "{}", out.stdout);
    let line = line_of("environments.cedar", "@id(\"prototype-never-production\")");
    assert!(
        out.stdout
            .lines()
            .any(|l| l.starts_with("prototype-never-production ")
                && l.contains(" forbid ")
                && l.ends_with(&format!("environments.cedar:{line}"))),
        "{}",
        out.stdout
    );
    // An unknown task is a 404.
    let e = s
        .run(&[
            "policy",
            "explain",
            "--agent",
            "support-bot",
            "--action",
            "read",
            "--upstream",
            "crm",
            "--task-id",
            "1b4e28ba-2fa1-11d2-883f-0016d3cca427",
        ])
        .await
        .fails(1);
    assert!(e.contains("HTTP 404"), "{e}");
}

/// `policy activate` of a modified pack changes decisions at once; `policy status` shows the new version
/// and the history; a broken set is refused (located) and changes nothing; only admins activate.
async fn activation_changes_decisions_at_once(backend: Backend) {
    let s = Server::start(backend).await;
    setup(&s).await;
    let bot = onboard(&s, &s, "support-bot", "production", &["crm"]).await;
    let (_, tt) = start(&s, &bot, "bot.tt", &["crm"], &[]).await;
    let default_version = local_version(&default_policies_dir());

    let status = s.json(&["policy", "status"]).await;
    assert_eq!(status["active"], default_version.as_str(), "{status:#}");
    assert_eq!(status["shadow"]["version"], Value::Null);
    let history = status["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{status:#}");
    assert_eq!(history[0]["by"], "system:bootstrap");
    decision(&s, &tt, &["--action", "read", "--upstream", "crm"], 0).await;

    // Activate the pack plus a forbid: the next decision is the new set's.
    let tmp = tempfile::tempdir().unwrap();
    let candidate = pack_with_forbid(&tmp.path().join("candidate"));
    let new_version = local_version(&candidate);
    assert_ne!(new_version, default_version);
    let out = s
        .run(&[
            "policy",
            "activate",
            path_str(&candidate),
            "--comment",
            "block crm reads",
        ])
        .await
        .ok();
    assert!(
        out.stdout
            .starts_with(&format!("active:   {new_version}\npolicies: ")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("zz-candidate.cedar"), "{}", out.stdout);
    let d = decision(&s, &tt, &["--action", "read", "--upstream", "crm"], 3).await;
    assert!(cites(&d, "no-crm-reads"), "{d:#}");
    assert_eq!(d["policy_version"], new_version.as_str());
    // Writes are unaffected.
    decision(&s, &tt, &["--action", "write", "--upstream", "crm"], 4).await;

    // Status: the new version, and the history, newest first.
    let out = s.run(&["policy", "status"]).await.ok();
    assert!(
        out.stdout
            .starts_with(&format!("active:           {new_version}\n")),
        "{}",
        out.stdout
    );
    let rows: Vec<&str> = out
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("SEQ "))
        .skip(1)
        .collect();
    assert_eq!(rows.len(), 2, "{}", out.stdout);
    assert!(
        rows[0].contains(&new_version[..12])
            && rows[0].contains(" active ")
            && rows[0].contains("admin@")
            && rows[0].ends_with("block crm reads"),
        "{}",
        out.stdout
    );
    assert!(
        rows[1].contains(&default_version[..12]) && rows[1].contains("system:bootstrap"),
        "{}",
        out.stdout
    );

    // A broken set is refused with its location, before anything is sent; the server's state is
    // exactly what it was.
    let before = s.json(&["policy", "status"]).await;
    let broken = copy_pack(&tmp.path().join("broken"));
    std::fs::write(
        broken.join("writes.cedar"),
        "@id(\"w\")\npermit (principal, action == Warden::Action::\"write\", resource)\nwhen { context.nope };\n",
    )
    .unwrap();
    let e = s.run(&["policy", "activate", path_str(&broken)]).await.fails(1);
    assert!(
        e.contains(&format!("{}/writes.cedar:3:", path_str(&broken))),
        "{e}"
    );
    // The server refuses it too (the client's check is a convenience, not the guard), located.
    let files: serde_json::Map<String, Value> = std::fs::read_dir(&broken)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                json!(std::fs::read_to_string(&p).unwrap()),
            )
        })
        .collect();
    let r = reqwest::Client::new()
        .post(s.endpoint("/v1/policies/activate"))
        .bearer_auth(s.admin_token())
        .json(&json!({ "files": files }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let body: Value = r.json().await.unwrap();
    let err = &body["errors"][0];
    assert_eq!(
        (err["file"].as_str(), err["line"].as_u64()),
        (Some("writes.cedar"), Some(3)),
        "{body:#}"
    );
    assert_eq!(s.json(&["policy", "status"]).await, before);
    decision(&s, &tt, &["--action", "read", "--upstream", "crm"], 3).await;

    // Only admins change policies; owners read them.
    let owner = s.human_with_token("olga@example.com", "owner").await;
    let e = s
        .run_as(&owner, &["policy", "activate", path_str(&default_policies_dir())])
        .await
        .fails(1);
    assert!(e.contains("HTTP 403"), "{e}");
    s.run_as(&owner, &["policy", "status"]).await.ok();
    assert_eq!(s.json(&["policy", "status"]).await, before);

    // Back to the default pack: the read is allowed again.
    let out = s
        .run(&[
            "policy",
            "activate",
            path_str(&default_policies_dir()),
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    assert_eq!(out["version"], default_version.as_str());
    decision(&s, &tt, &["--action", "read", "--upstream", "crm"], 0).await;
}

/// `policy shadow`: the candidate decides beside the active set, differences are counted, the enforced
/// decision stays the active set's; `--clear` stops it.
async fn shadow_sets_are_counted_never_enforced(backend: Backend) {
    let s = Server::start(backend).await;
    setup(&s).await;
    let bot = onboard(&s, &s, "support-bot", "production", &["crm"]).await;
    let (_, tt) = start(&s, &bot, "bot.tt", &["crm"], &[]).await;
    let default_version = local_version(&default_policies_dir());

    let tmp = tempfile::tempdir().unwrap();
    let candidate = pack_with_forbid(&tmp.path().join("candidate"));
    let shadow_version = local_version(&candidate);
    let out = s
        .run(&[
            "policy",
            "shadow",
            path_str(&candidate),
            "--comment",
            "try the freeze",
        ])
        .await
        .ok();
    assert!(
        out.stdout.starts_with(&format!("shadow:   {shadow_version}\n")),
        "{}",
        out.stdout
    );
    let status = s.json(&["policy", "status"]).await;
    assert_eq!(status["active"], default_version.as_str());
    assert_eq!(status["shadow"]["version"], shadow_version.as_str());
    let (evaluated0, differed0) = (
        status["shadow"]["evaluated"].as_u64().unwrap(),
        status["shadow"]["differed"].as_u64().unwrap(),
    );

    // Three reads the candidate would deny: enforced as the active set decides (allow).
    for _ in 0..3 {
        let d = decision(&s, &tt, &["--action", "read", "--upstream", "crm"], 0).await;
        assert_eq!(d["policy_version"], default_version.as_str());
    }
    // A write both sets send for approval: evaluated, not different.
    decision(&s, &tt, &["--action", "write", "--upstream", "crm"], 4).await;
    let status = s.json(&["policy", "status"]).await;
    let evaluated = status["shadow"]["evaluated"].as_u64().unwrap() - evaluated0;
    let differed = status["shadow"]["differed"].as_u64().unwrap() - differed0;
    assert_eq!((evaluated, differed), (4, 3), "{status:#}");
    let out = s.run(&["policy", "status"]).await.ok();
    assert!(
        out.stdout
            .contains(&format!("shadow:           {shadow_version}\n")),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("shadow_evaluated: "), "{}", out.stdout);
    assert!(
        out.stdout.lines().any(|l| l.contains(" shadow ")
            && l.contains(&shadow_version[..12])
            && l.ends_with("try the freeze")),
        "{}",
        out.stdout
    );

    // Cleared: no more shadow decisions; the history records it.
    let out = s
        .run(&["policy", "shadow", "--clear", "--comment", "enough"])
        .await
        .ok();
    assert!(out.stdout.starts_with("shadow: cleared"), "{}", out.stdout);
    let cleared = s.json(&["policy", "status"]).await;
    assert_eq!(cleared["shadow"]["version"], Value::Null, "{cleared:#}");
    assert_eq!(cleared["history"][0]["role"], "shadow");
    assert_eq!(cleared["history"][0]["version"], Value::Null);
    assert_eq!(cleared["history"][0]["comment"], "enough");
    decision(&s, &tt, &["--action", "read", "--upstream", "crm"], 0).await;
    let after = s.json(&["policy", "status"]).await;
    assert_eq!(after["shadow"]["evaluated"], cleared["shadow"]["evaluated"]);
    let out = s.run(&["policy", "status"]).await.ok();
    assert!(out.stdout.contains("(cleared)"), "{}", out.stdout);
    // Clearing again is harmless.
    s.run(&["policy", "shadow", "--clear"]).await.ok();
}

// ----------------------------------------------------------------------------------------------------
// Two nodes

const CLUSTER_CONFIG: &str = r#"
public_url = "http://warden.cluster.test"
"#;

/// Two nodes on one PostgreSQL database: a policy set activated on node A decides on node B as soon as
/// B hears of it (polled, at most 5 s; the time is printed).
#[tokio::test]
async fn activation_reaches_every_node() {
    let database = warden_store::testing::fresh_postgres_url().await;
    let a = Server::spawn(
        Backend::Postgres,
        Spawn {
            database: Some(database.clone()),
            config: Some(CLUSTER_CONFIG.into()),
            ..Spawn::default()
        },
    )
    .await;
    let b = Server::spawn(
        Backend::Postgres,
        Spawn {
            database: Some(database),
            config: Some(CLUSTER_CONFIG.into()),
            admin_token_file: Some(a.admin_token_file.clone()),
            ..Default::default()
        },
    )
    .await;
    setup(&a).await;
    let bot = onboard(&a, &b, "support-bot", "production", &["crm"]).await;
    let (_, tt) = start(&a, &bot, "bot.tt", &["crm"], &[]).await;
    let read = json!({"action": "read", "resource": {"upstream": "crm"}});
    let (status, d) = post_task(&b, &tt, "/v1/authorize", &read).await;
    assert_eq!((status, d["outcome"].as_str()), (200, Some("allow")), "{d:#}");

    let tmp = tempfile::tempdir().unwrap();
    let candidate = pack_with_forbid(&tmp.path().join("candidate"));
    let new_version = local_version(&candidate);
    // One HTTP client for the polls, connected before the activation, so that the time measured is the
    // propagation's, not the client's set-up.
    let http = reqwest::Client::new();
    let token = read_token(&tt);
    let on_b = || async {
        let r = http
            .post(b.endpoint("/v1/authorize"))
            .bearer_auth(&token)
            .json(&read)
            .send()
            .await
            .expect("request");
        assert_eq!(r.status().as_u16(), 200);
        r.json::<Value>().await.expect("a decision")
    };
    assert_eq!(on_b().await["outcome"], "allow");
    a.run(&["policy", "activate", path_str(&candidate)]).await.ok();
    let activated_at = Instant::now();
    let deadline = activated_at + Duration::from_secs(5);
    let mut polls = 0u32;
    let d = loop {
        polls += 1;
        let d = on_b().await;
        if d["outcome"] != "allow" || Instant::now() >= deadline {
            break d;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    let elapsed = activated_at.elapsed();
    eprintln!(
        "policy activation A -> B: {:.3} ms after A acknowledged it ({polls} polls of B)",
        elapsed.as_secs_f64() * 1e3
    );
    assert_eq!(
        d["outcome"], "deny",
        "node B still decided with the old set {elapsed:?} after A activated"
    );
    assert!(cites(&d, "no-crm-reads"), "{d:#}");
    assert_eq!(d["policy_version"], new_version.as_str());
    let status = b.json(&["policy", "status"]).await;
    assert_eq!(status["active"], new_version.as_str());
    // And the CLI on node B agrees.
    decision(&b, &tt, &["--action", "read", "--upstream", "crm"], 3).await;
}
