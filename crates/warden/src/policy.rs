//! `warden policy …` and `warden authorize`.
//!
//! `policy validate` and `policy test` work on local files with the engine the server runs
//! (`warden-policy`): what validates here compiles there, with the same version (a content hash of the
//! files), and needs neither a server nor a token. `policy activate` and `policy shadow` compile the
//! directory here first and send nothing when it does not compile; the server compiles the upload again
//! (it trusts no client). `policy status` and `policy explain` read the server's state.
//!
//! `warden authorize` asks the decision point as the agent holding a task token, prints the decision and
//! turns its outcome into the exit code: 0 allow, [`EXIT_DENY`], [`EXIT_NEEDS_APPROVAL`].
//!
//! Problems in policy files are printed as `DIR/FILE:LINE:COLUMN: policy `ID`: message`, one per line,
//! so that editors and CI annotate them.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};
use warden_core::{Decision, Outcome};
use warden_policy::{CompiledPolicies, PolicyError, PolicySource, TestReport};

use crate::agent::{self, TaskToken, load_key};
use crate::cli::{AuthorizeArgs, Format, Note, PolicyExplainArgs, PolicyTestArgs, ResourceArgs};
use crate::client::{ApiError, Client, printable};
use crate::output::{self, Fields, Table, cell, time};
use crate::request::UsageError;

/// `warden authorize` exits with this code when the decision is `deny`.
pub const EXIT_DENY: u8 = 3;
/// `warden authorize` exits with this code when the decision is `needs_approval`.
pub const EXIT_NEEDS_APPROVAL: u8 = 4;

/// Largest `--args-file` read (the server's own limits are lower; this only stops a runaway read).
const MAX_ARGS_FILE_BYTES: u64 = 1024 * 1024;

/// The exit code of `warden authorize` for a decision.
pub fn exit_code(outcome: Outcome) -> u8 {
    match outcome {
        Outcome::Allow => 0,
        Outcome::Deny => EXIT_DENY,
        Outcome::NeedsApproval => EXIT_NEEDS_APPROVAL,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Text from a local file (a test name, a TOML error with its excerpt), made safe for a terminal:
/// control characters but newlines are escaped.
fn printable_lines(s: &str) -> String {
    s.split('\n').map(printable).collect::<Vec<_>>().join("\n")
}

fn pretty(v: &Value) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(v).context("formatting JSON")?;
    s.push('\n');
    Ok(s)
}

// ---------------------------------------------------------------------------------------------------
// Compiling a directory here

/// A policy directory, compiled here.
#[derive(Debug)]
pub struct LocalSet {
    pub dir: PathBuf,
    pub source: PolicySource,
    pub compiled: CompiledPolicies,
}

impl LocalSet {
    /// The files as the API takes them: name → text.
    fn files(&self) -> BTreeMap<&str, &str> {
        self.source
            .files()
            .iter()
            .map(|f| (f.name.as_str(), f.text.as_str()))
            .collect()
    }

    fn file_names(&self) -> Vec<&str> {
        self.source.files().iter().map(|f| f.name.as_str()).collect()
    }
}

/// A problem's file as a path below `dir` (`DIR/FILE`).
fn in_dir(dir: &Path, e: &PolicyError) -> PolicyError {
    if e.file.is_empty() {
        e.clone()
    } else {
        PolicyError {
            file: dir.join(&e.file).display().to_string(),
            ..e.clone()
        }
    }
}

/// `DIR/FILE:LINE:COLUMN: policy `ID`: message`, terminal-safe, on one line.
fn located(dir: &Path, e: &PolicyError) -> String {
    printable(&in_dir(dir, e).to_string())
}

fn problem_json(dir: &Path, e: &PolicyError) -> Value {
    let e = in_dir(dir, e);
    json!({
        "file": e.file,
        "line": e.line,
        "column": e.column,
        "policy_id": e.policy_id,
        "message": e.message,
    })
}

/// Every problem of a set that does not compile, not only the first kind.
///
/// The engine checks a set in two steps, and stops after the first that finds problems: parsing (with
/// Warden's annotations and unique ids), then strict validation against the schema. So a syntax error in
/// one file hides a misspelt attribute in another. Validation judges each policy on its own, so the
/// files without problems are compiled again on their own: their validation errors join the list.
fn every_problem(source: &PolicySource, mut errors: Vec<PolicyError>) -> Vec<PolicyError> {
    let has_problem = |name: &str| errors.iter().any(|e| e.file.is_empty() || e.file == name);
    let rest: Vec<(String, String)> = source
        .files()
        .iter()
        .filter(|f| !has_problem(&f.name))
        .map(|f| (f.name.clone(), f.text.clone()))
        .collect();
    if rest.is_empty() || rest.len() == source.files().len() {
        return errors;
    }
    if let Ok(rest) = PolicySource::from_files(rest)
        && let Err(more) = warden_policy::compile(&rest)
    {
        for e in more {
            if !errors.contains(&e) {
                errors.push(e);
            }
        }
    }
    errors.sort_by(|a, b| (&a.file, a.line, a.column).cmp(&(&b.file, b.line, b.column)));
    errors
}

/// Reads and compiles the `*.cedar` files of `dir`. When they do not compile, the error lists every
/// problem, one per line (and in JSON mode `{"valid": false, "errors": [...]}` goes to stdout first).
pub fn compile_dir(format: Format, dir: &Path) -> anyhow::Result<LocalSet> {
    let source = warden_policy::load_dir(dir).map_err(|e| anyhow!("{}", printable(&e.to_string())))?;
    if source.files().is_empty() {
        bail!(
            "{} holds no `.cedar` files; a policy set is the `*.cedar` files directly in a directory",
            dir.display()
        );
    }
    match warden_policy::compile(&source) {
        Ok(compiled) => Ok(LocalSet {
            dir: dir.to_owned(),
            source,
            compiled,
        }),
        Err(errors) => {
            let errors = every_problem(&source, errors);
            if format == Format::Json {
                let errs: Vec<Value> = errors.iter().map(|e| problem_json(dir, e)).collect();
                output::stdout(&pretty(&json!({
                    "valid": false,
                    "dir": dir.display().to_string(),
                    "errors": errs,
                }))?)?;
            }
            let mut message = format!(
                "the policy set in {} does not compile: {}",
                dir.display(),
                plural(errors.len(), "problem", "problems")
            );
            for e in &errors {
                message.push('\n');
                message.push_str(&located(dir, e));
            }
            Err(anyhow!(message))
        }
    }
}

fn warnings_json(set: &LocalSet) -> Vec<Value> {
    set.compiled
        .warnings()
        .iter()
        .map(|w| problem_json(&set.dir, w))
        .collect()
}

/// Validator warnings, on stderr (table mode; JSON mode includes them in the output).
fn print_warnings(format: Format, set: &LocalSet) {
    if format == Format::Table {
        for w in set.compiled.warnings() {
            eprintln!("warning: {}", located(&set.dir, w));
        }
    }
}

/// `warden policy validate DIR`.
pub fn validate(format: Format, dir: &Path) -> anyhow::Result<()> {
    let set = compile_dir(format, dir)?;
    print_warnings(format, &set);
    match format {
        Format::Json => output::stdout(&pretty(&json!({
            "valid": true,
            "dir": dir.display().to_string(),
            "version": set.compiled.version(),
            "policies": set.compiled.len(),
            "files": set.file_names(),
            "warnings": warnings_json(&set),
        }))?),
        Format::Table => output::stdout(&format!(
            "ok: {}, version {}\n",
            plural(set.compiled.len(), "policy", "policies"),
            set.compiled.version()
        )),
    }
}

// ---------------------------------------------------------------------------------------------------
// Policy tests

/// The policy directory a test path belongs to: the parent of the `tests` directory it is in (or is).
fn default_policy_dir(path: &Path, is_dir: bool) -> Result<PathBuf, UsageError> {
    let tests = if is_dir { Some(path) } else { path.parent() };
    match tests {
        Some(t) if t.file_name().is_some_and(|n| n == "tests") => {
            let parent = t.parent().unwrap_or(Path::new(""));
            Ok(if parent.as_os_str().is_empty() {
                PathBuf::from(".")
            } else {
                parent.to_owned()
            })
        }
        _ => Err(UsageError(format!(
            "--dir is required: {} is not in a `tests` directory beside the policies, so give the policy \
             directory with --dir DIR",
            path.display()
        ))),
    }
}

/// The test files of a path: the file itself, or the `*.toml` regular files directly in a directory.
fn test_files(path: &Path, is_dir: bool) -> anyhow::Result<Vec<PathBuf>> {
    if !is_dir {
        return Ok(vec![path.to_owned()]);
    }
    let mut files = Vec::new();
    for entry in
        std::fs::read_dir(path).with_context(|| format!("reading the test directory {}", path.display()))?
    {
        let entry = entry.with_context(|| format!("reading the test directory {}", path.display()))?;
        let p = entry.path();
        if p.extension().is_some_and(|e| e == "toml") && p.is_file() {
            files.push(p);
        }
    }
    files.sort();
    if files.is_empty() {
        bail!("{} holds no `*.toml` test files", path.display());
    }
    Ok(files)
}

/// One test file's outcome.
struct FileRun {
    path: PathBuf,
    report: TestReport,
}

impl FileRun {
    /// Why the file could not be used, if it could not (including a file without cases).
    fn error(&self) -> Option<String> {
        match &self.report.error {
            Some(e) => Some(e.clone()),
            None if self.report.cases.is_empty() => Some("the test file has no `[[cases]]`".into()),
            None => None,
        }
    }
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
        Outcome::NeedsApproval => "needs_approval",
    }
}

/// `warden policy test PATH [--dir DIR]`.
pub fn test(format: Format, args: PolicyTestArgs) -> anyhow::Result<()> {
    let meta = std::fs::metadata(&args.path)
        .with_context(|| format!("reading the test path {}", args.path.display()))?;
    let is_dir = meta.is_dir();
    let dir = match args.dir {
        Some(d) => d,
        None => default_policy_dir(&args.path, is_dir)?,
    };
    let files = test_files(&args.path, is_dir)?;
    let set = compile_dir(format, &dir)?;
    print_warnings(format, &set);

    let runs: Vec<FileRun> = files
        .into_iter()
        .map(|path| {
            let report = match std::fs::read_to_string(&path) {
                Ok(text) => warden_policy::run_tests(&set.compiled, &text),
                Err(e) => TestReport {
                    cases: Vec::new(),
                    error: Some(format!("cannot read the test file: {e}")),
                },
            };
            FileRun { path, report }
        })
        .collect();
    let passed: usize = runs.iter().map(|r| r.report.passed()).sum();
    let failed: usize = runs.iter().map(|r| r.report.failed()).sum();
    let unusable = runs.iter().filter(|r| r.error().is_some()).count();

    match format {
        Format::Json => {
            let files: Vec<Value> = runs
                .iter()
                .map(|r| {
                    let cases: Vec<Value> = r
                        .report
                        .cases
                        .iter()
                        .map(|c| {
                            json!({
                                "name": c.name,
                                "passed": c.passed,
                                "expected": {
                                    "outcome": c.expected.outcome,
                                    "reasons": c.expected.reasons,
                                    "quorum": c.expected.quorum,
                                },
                                "actual": c.actual,
                                "diff": c.diff,
                            })
                        })
                        .collect();
                    json!({
                        "file": r.path.display().to_string(),
                        "error": r.error(),
                        "passed": r.report.passed(),
                        "failed": r.report.failed(),
                        "cases": cases,
                    })
                })
                .collect();
            output::stdout(&pretty(&json!({
                "dir": dir.display().to_string(),
                "version": set.compiled.version(),
                "policies": set.compiled.len(),
                "passed": passed,
                "failed": failed,
                "unusable_files": unusable,
                "files": files,
            }))?)?;
        }
        Format::Table => {
            let mut out = String::new();
            for r in &runs {
                out.push_str(&format!("--- {}\n", r.path.display()));
                if let Some(e) = r.error() {
                    out.push_str(&format!("ERROR {}\n", printable_lines(&e)));
                    continue;
                }
                for c in &r.report.cases {
                    let verdict = if c.passed { "PASS" } else { "FAIL" };
                    out.push_str(&format!("{verdict} {}\n", printable(&c.name)));
                    for d in &c.diff {
                        out.push_str(&format!("     {}\n", printable(d)));
                    }
                }
            }
            let mut summary = format!(
                "{} passed, {} failed in {}",
                passed,
                failed,
                plural(runs.len(), "file", "files")
            );
            if unusable > 0 {
                summary.push_str(&format!(
                    " ({} could not be used)",
                    plural(unusable, "file", "files")
                ));
            }
            summary.push_str(&format!(
                "; policies {} ({}, version {})\n",
                dir.display(),
                plural(set.compiled.len(), "policy", "policies"),
                set.compiled.version()
            ));
            out.push_str(&summary);
            output::stdout(&out)?;
        }
    }
    if failed > 0 || unusable > 0 {
        let mut why = Vec::new();
        if failed > 0 {
            why.push(format!(
                "{failed} of {} failed",
                plural(passed + failed, "case", "cases")
            ));
        }
        if unusable > 0 {
            why.push(format!(
                "{} could not be used",
                plural(unusable, "test file", "test files")
            ));
        }
        bail!("{}", why.join("; "));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Server calls

/// A checked policy request, ready to send.
#[derive(Debug)]
pub enum PolicyCall {
    /// Upload a compiled set as the active set or as the shadow set.
    Install {
        set: Box<LocalSet>,
        shadow: bool,
        comment: Option<Note>,
    },
    ClearShadow(Option<Note>),
    Status,
    Explain(Value),
}

/// `policy activate DIR` / `policy shadow DIR`: compiles here first; nothing is sent when it fails.
pub fn install(
    format: Format,
    dir: &Path,
    shadow: bool,
    comment: Option<Note>,
) -> anyhow::Result<PolicyCall> {
    let set = compile_dir(format, dir)?;
    print_warnings(format, &set);
    Ok(PolicyCall::Install {
        set: Box::new(set),
        shadow,
        comment,
    })
}

/// The API's resource object for the resource flags.
fn resource_json(r: &ResourceArgs) -> Value {
    match (&r.upstream, &r.tool, &r.dataset) {
        (Some(u), _, _) => json!({ "upstream": u.as_str() }),
        (None, Some(t), _) => json!({ "tool": t.to_string() }),
        (None, None, Some(d)) => json!({ "dataset": d.to_string() }),
        // clap's argument group requires exactly one; the server refuses an empty object.
        (None, None, None) => json!({}),
    }
}

/// Reads `--args-file` (`-`: stdin) as JSON.
fn read_args(path: &Path) -> anyhow::Result<Value> {
    let mut bytes = Vec::new();
    let shown = if path == Path::new("-") {
        std::io::stdin()
            .take(MAX_ARGS_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .context("--args-file: reading stdin")?;
        "stdin".to_owned()
    } else {
        std::fs::File::open(path)
            .and_then(|f| f.take(MAX_ARGS_FILE_BYTES + 1).read_to_end(&mut bytes))
            .with_context(|| format!("--args-file: reading {}", path.display()))?;
        path.display().to_string()
    };
    if bytes.len() as u64 > MAX_ARGS_FILE_BYTES {
        bail!("--args-file: {shown} is larger than {MAX_ARGS_FILE_BYTES} bytes");
    }
    serde_json::from_slice(&bytes).map_err(|e| anyhow!("--args-file: {shown} is not JSON: {e}"))
}

/// `policy explain`: the request body, checked and with the arguments read, before anything is sent.
pub fn explain_call(a: PolicyExplainArgs) -> anyhow::Result<PolicyCall> {
    let mut body = json!({
        "principal": a.agent.as_str(),
        "action": a.action.as_str(),
        "resource": resource_json(&a.resource),
    });
    let obj = body
        .as_object_mut()
        .ok_or_else(|| anyhow!("internal: the request body is not an object"))?;
    if let Some(id) = a.task_id {
        obj.insert("task_id".into(), json!(id.0));
    }
    if a.approved {
        let approvers = a.approvers.map_or(1, |n| n.0);
        obj.insert(
            "approval".into(),
            json!({ "granted": true, "approvers": approvers }),
        );
    }
    if let Some(path) = &a.args_file {
        obj.insert("args".into(), read_args(path)?);
    }
    Ok(PolicyCall::Explain(body))
}

const POLICIES: &str = "policies";

pub async fn run(client: &Client, format: Format, call: PolicyCall) -> anyhow::Result<()> {
    match call {
        PolicyCall::Install { set, shadow, comment } => {
            let body = json!({
                "files": set.files(),
                "comment": comment.map(|c| c.0).unwrap_or_default(),
            });
            let sent = if shadow {
                client.put(&["v1", POLICIES, "shadow"], &body).await
            } else {
                client.post(&["v1", POLICIES, "activate"], &body).await
            };
            let v = sent.map_err(|e| too_large_hint(e, "the policy set", &body))?;
            installed(format, v, &set, shadow)
        }
        PolicyCall::ClearShadow(comment) => {
            let v = match comment {
                Some(c) => {
                    client
                        .delete_with(&["v1", POLICIES, "shadow"], &json!({ "comment": c.0 }))
                        .await?
                }
                None => client.delete(&["v1", POLICIES, "shadow"]).await?,
            };
            output::one(format, v, "shadow clearing answer", |_: &Value| {
                Fields::new()
                    .add("shadow", "cleared: shadow evaluation stopped")
                    .render()
            })
        }
        PolicyCall::Status => {
            let v = client.get(&["v1", POLICIES], &[]).await?;
            output::one(format, v, "policy status", status_text)
        }
        PolicyCall::Explain(body) => {
            let v = client.post(&["v1", POLICIES, "explain"], &body).await?;
            output::one(format, v, "explanation", explanation_text)
        }
    }
}

/// Adds what to do to a `413 Payload Too Large`: the server's body limit is its configuration's.
fn too_large_hint(e: anyhow::Error, what: &str, body: &Value) -> anyhow::Error {
    let too_large = e
        .downcast_ref::<ApiError>()
        .is_some_and(|a| a.status == reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    if !too_large {
        return e;
    }
    let size = serde_json::to_vec(body).map_or(0, |b| b.len());
    e.context(format!(
        "{what} is {size} bytes as JSON, more than the server accepts in one request (its \
         `http.max_body_bytes`, 64 KiB by default)"
    ))
}

/// The answer of `POST /v1/policies/activate` and `PUT /v1/policies/shadow`.
#[derive(Deserialize)]
struct SetInfo {
    version: String,
    policies: usize,
    files: Vec<String>,
}

fn installed(format: Format, v: Value, set: &LocalSet, shadow: bool) -> anyhow::Result<()> {
    let info: SetInfo = output::decode(v.clone(), "policy set answer")?;
    if info.version != set.compiled.version() {
        // Same files, same hash: a difference means the server stored something else than was read.
        eprintln!(
            "warning: the server recorded version {} but {} is version {} here",
            printable(&info.version),
            set.dir.display(),
            set.compiled.version()
        );
    }
    output::one(format, v, "policy set answer", |_: &Value| {
        Fields::new()
            .add(if shadow { "shadow" } else { "active" }, info.version.clone())
            .add("policies", info.policies.to_string())
            .add("files", info.files.join(", "))
            .render()
    })
}

/// The answer of `GET /v1/policies`.
#[derive(Deserialize)]
struct Status {
    active: Option<String>,
    shadow: ShadowStatus,
    history: Vec<HistoryEntry>,
}

#[derive(Deserialize)]
struct ShadowStatus {
    version: Option<String>,
    evaluated: u64,
    differed: u64,
}

#[derive(Deserialize)]
struct HistoryEntry {
    seq: i64,
    version: Option<String>,
    role: String,
    at: DateTime<Utc>,
    by: String,
    comment: String,
}

/// The first 12 hex digits of a version, as the history table shows it.
fn short(version: &str) -> String {
    version.chars().take(12).collect()
}

fn status_text(s: &Status) -> String {
    let mut f = Fields::new();
    f.add(
        "active",
        s.active
            .clone()
            .unwrap_or_else(|| "none (every decision is deny)".into()),
    )
    .add("shadow", s.shadow.version.clone().unwrap_or_default())
    .add("shadow_evaluated", s.shadow.evaluated.to_string())
    .add("shadow_differed", s.shadow.differed.to_string());
    let mut out = f.render();
    if s.history.is_empty() {
        out.push_str("history: -\n");
        return out;
    }
    let mut t = Table::new(&["SEQ", "AT", "ROLE", "VERSION", "BY", "COMMENT"]);
    for h in &s.history {
        t.row(vec![
            h.seq.to_string(),
            time(&h.at),
            h.role.clone(),
            h.version.as_deref().map_or_else(|| "(cleared)".to_owned(), short),
            h.by.clone(),
            h.comment.clone(),
        ]);
    }
    out.push_str("history (newest first):\n");
    out.push_str(&t.render());
    out
}

/// `title:` and one `  - item` line per item (or `title: -`).
fn bullets(title: &str, items: &[String]) -> String {
    if items.is_empty() {
        return format!("{title}: -\n");
    }
    let mut out = format!("{title}:\n");
    for i in items {
        out.push_str(&format!("  - {}\n", cell(i)));
    }
    out
}

/// A decision as `key: value` lines, its reasons and errors as lists.
pub fn decision_text(d: &Decision) -> String {
    let mut f = Fields::new();
    f.add("outcome", outcome_str(d.outcome));
    if let Some(q) = d.quorum {
        f.add("quorum", q.to_string());
    }
    f.add("policy_version", d.policy_version.clone());
    let mut out = f.render();
    out.push_str(&bullets("reasons", &d.reasons));
    if !d.errors.is_empty() {
        out.push_str(&bullets("errors", &d.errors));
    }
    out
}

/// The answer of `POST /v1/policies/explain`.
#[derive(Deserialize)]
struct Explained {
    decision: Decision,
    considered: Vec<String>,
    total_policies: usize,
    matched: Vec<Matched>,
    with_approval: Vec<Matched>,
}

#[derive(Deserialize)]
struct Matched {
    id: String,
    effect: String,
    #[serde(default)]
    approval_quorum: Option<u8>,
    file: String,
    line: usize,
}

fn matched_table(title: &str, matched: &[Matched]) -> String {
    if matched.is_empty() {
        return format!("{title}: -\n");
    }
    let mut t = Table::new(&["POLICY", "EFFECT", "APPROVAL", "LOCATION"]);
    for m in matched {
        t.row(vec![
            m.id.clone(),
            m.effect.clone(),
            m.approval_quorum
                .map(|q| format!("quorum {q}"))
                .unwrap_or_default(),
            format!("{}:{}", m.file, m.line),
        ]);
    }
    format!("{title}:\n{}", t.render())
}

fn explanation_text(e: &Explained) -> String {
    let mut out = decision_text(&e.decision);
    let considered = if e.considered.is_empty() {
        format!("0 of {}", e.total_policies)
    } else {
        format!(
            "{} of {}: {}",
            e.considered.len(),
            plural(e.total_policies, "policy", "policies"),
            e.considered.join(", ")
        )
    };
    out.push_str(&Fields::new().add("considered", considered).render());
    out.push_str(&matched_table("matched", &e.matched));
    if !e.with_approval.is_empty() {
        out.push_str(&matched_table("would match if approved", &e.with_approval));
    }
    out
}

// ---------------------------------------------------------------------------------------------------
// `warden authorize`

/// `warden authorize`: the decision, printed; the exit code from its outcome.
pub async fn authorize(
    server: &crate::client::Server,
    format: Format,
    a: AuthorizeArgs,
) -> anyhow::Result<u8> {
    let mut body = json!({
        "action": a.action.as_str(),
        "resource": resource_json(&a.resource),
    });
    if let (Some(path), Some(obj)) = (&a.args_file, body.as_object_mut()) {
        obj.insert("args".into(), read_args(path)?);
    }
    let token = TaskToken::read(&a.task_token_file)?;
    let key = match &a.key {
        Some(p) => Some(load_key(p, "--key")?),
        None => None,
    };
    let proof_key = token.proof_key(key.as_ref(), "--key")?;
    let (client, d) = agent::connect(server).await?;
    let v = agent::with_task_token(
        &client,
        &d,
        Method::POST,
        &["v1", "authorize"],
        &token,
        proof_key,
        Some(&body),
    )
    .await
    .map_err(|e| too_large_hint(e, "the request", &body))?;
    let decision: Decision = output::decode(v.clone(), "decision")?;
    output::one(format, v, "decision", decision_text)?;
    Ok(exit_code(decision.outcome))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_are_distinct() {
        assert_eq!(exit_code(Outcome::Allow), 0);
        assert_eq!(exit_code(Outcome::Deny), 3);
        assert_eq!(exit_code(Outcome::NeedsApproval), 4);
    }

    #[test]
    fn the_policy_dir_of_a_test_path() {
        let d = |p: &str, is_dir| default_policy_dir(Path::new(p), is_dir);
        assert_eq!(
            d("policies/default/tests", true),
            Ok(PathBuf::from("policies/default"))
        );
        assert_eq!(
            d("policies/default/tests/", true),
            Ok(PathBuf::from("policies/default"))
        );
        assert_eq!(
            d("policies/default/tests/a.toml", false),
            Ok(PathBuf::from("policies/default"))
        );
        assert_eq!(d("tests", true), Ok(PathBuf::from(".")));
        assert_eq!(d("tests/a.toml", false), Ok(PathBuf::from(".")));
        let e = d("elsewhere/a.toml", false).unwrap_err();
        assert!(e.0.starts_with("--dir is required"), "{}", e.0);
        assert!(d("a.toml", false).is_err());
    }

    #[test]
    fn problems_are_located_below_the_directory() {
        let e = PolicyError {
            file: "a.cedar".into(),
            line: 3,
            column: 7,
            policy_id: Some("p".into()),
            message: "bad\nthing".into(),
        };
        assert_eq!(
            located(Path::new("pol"), &e),
            "pol/a.cedar:3:7: policy `p`: bad\\nthing"
        );
        let bare = PolicyError {
            file: String::new(),
            line: 0,
            column: 0,
            policy_id: None,
            message: "the schema".into(),
        };
        assert_eq!(located(Path::new("pol"), &bare), "the schema");
    }

    #[test]
    fn decisions_render_with_their_reasons() {
        let mut d = Decision::deny("x (forbid): no", "v1");
        d.errors.push("e\u{1b}[31m".into());
        let text = decision_text(&d);
        assert_eq!(
            text,
            "outcome:        deny\npolicy_version: v1\nreasons:\n  - x (forbid): no\nerrors:\n  - e\\u{1b}[31m\n"
        );
        d.outcome = Outcome::NeedsApproval;
        d.quorum = Some(2);
        d.errors.clear();
        assert!(decision_text(&d).contains("quorum:         2\n"));
    }

    #[test]
    fn args_files_must_be_json() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.json");
        std::fs::write(&f, r#"{"q": [1, 2]}"#).unwrap();
        assert_eq!(read_args(&f).unwrap(), json!({"q": [1, 2]}));
        std::fs::write(&f, "{nope").unwrap();
        let e = read_args(&f).unwrap_err().to_string();
        assert!(e.starts_with("--args-file: ") && e.contains("is not JSON"), "{e}");
        let e = read_args(&dir.path().join("missing")).unwrap_err();
        assert!(format!("{e:#}").contains("--args-file: reading"), "{e:#}");
    }
}
