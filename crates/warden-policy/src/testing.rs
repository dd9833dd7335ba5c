//! Policy tests, like `opa test`: a TOML file of fixtures (the registry) and cases (a request and the
//! decision it must get), run against a compiled set.
//!
//! ```toml
//! # The registry the cases run against.
//! [[agents]]
//! name = "support-bot"
//! environment = "production"          # prototype | staging | production
//! model = "anthropic/claude-sonnet@4.5"
//! state = "active"                    # pending_review | active | suspended | retired
//! owners = ["alice@example.com"]
//! allowed_upstreams = ["crm"]
//!
//! [[upstreams]]
//! name = "crm"
//! kind = "mcp"                        # mcp | http | postgres
//! environment = "production"
//! sensitivity = "confidential"        # public | internal | confidential | regulated
//! owner = "bob@example.com"
//!
//! [[tools]]
//! upstream = "crm"
//! name = "search"
//! class = "read"                      # read | write | destructive | admin
//!
//! [[datasets]]
//! upstream = "crm"
//! name = "customers"
//! sensitivity = "regulated"
//!
//! # Named task intents cases can refer to with `task = "support"`.
//! [tasks.support]
//! purpose = "answer a ticket"
//! task_type = "support"
//! upstreams = ["crm"]
//! tools = ["search"]
//! resources = ["file:///tmp/*"]       # URI glob patterns (`*`: any run of characters)
//! prompts = ["summary"]
//!
//! [defaults]
//! time = "2025-06-02T10:00:00Z"       # RFC 3339; the default for cases without `time`
//!
//! [[cases]]
//! name = "support reads within its task"
//! principal = "support-bot"
//! action = "read"                     # read | write | destructive | admin | task.start | task.delegate
//! resource = { tool = "crm/search" }  # or { upstream = "…" }, { dataset = "crm/customers" },
//!                                     #    { agent = "…" }, { task = "<id>" },
//!                                     #    { mcp_resource = "crm/file:///tmp/a" }, { prompt = "crm/summary" }
//! task = "support"                    # optional: a named task (or `context.task` inline)
//! context = { approval = { granted = true, approvers = 1 }, args = { q = "x" } }   # optional
//! # also `mcp = { method = "logging/setLevel", kind = "request" }` (request | notification |
//! # response | stream)
//! expect = { outcome = "allow", reasons = ["reads-within-task-scope"], quorum = 1 }
//! ```
//!
//! `expect.reasons` (optional) lists policy ids or whole reasons, each of which must be among the
//! decision's reasons (a policy id matches its `id (…)` reason). `expect.quorum` (optional) must equal
//! the decision's quorum. A failing case reports the differences.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, TimeZone, Utc};
use serde::Deserialize;
use warden_core::{AgentName, Decision, Outcome};

use crate::compile::CompiledPolicies;
use crate::request::{Action, PolicyContext, PolicyRequest, ResourceRef, TaskContext};
use crate::store::{AgentFacts, DatasetFacts, EntityStore, ToolFacts, UpstreamFacts};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TestFile {
    #[serde(default)]
    agents: Vec<AgentFacts>,
    #[serde(default)]
    upstreams: Vec<UpstreamFacts>,
    #[serde(default)]
    tools: Vec<ToolFacts>,
    #[serde(default)]
    datasets: Vec<DatasetFacts>,
    #[serde(default)]
    tasks: BTreeMap<String, TaskContext>,
    #[serde(default)]
    defaults: Defaults,
    #[serde(default)]
    cases: Vec<Case>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Defaults {
    time: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    principal: AgentName,
    action: Action,
    resource: ResourceRef,
    #[serde(default)]
    task: Option<String>,
    #[serde(default)]
    context: PolicyContext,
    #[serde(default)]
    time: Option<DateTime<Utc>>,
    expect: Expect,
}

/// What a case expects.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub outcome: Outcome,
    #[serde(default)]
    pub reasons: Vec<String>,
    #[serde(default)]
    pub quorum: Option<u8>,
}

/// The result of one case.
#[derive(Clone, Debug, PartialEq)]
pub struct CaseResult {
    pub name: String,
    pub passed: bool,
    pub expected: Expect,
    pub actual: Decision,
    /// What differed, one line each; empty when passed.
    pub diff: Vec<String>,
}

/// The result of a test file.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TestReport {
    pub cases: Vec<CaseResult>,
    /// Set when the file itself could not be used (bad TOML, bad fixture); no case ran then.
    pub error: Option<String>,
}

impl TestReport {
    pub fn passed(&self) -> usize {
        self.cases.iter().filter(|c| c.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.cases.len() - self.passed()
    }

    /// True when the file was usable, had cases, and every case passed.
    pub fn ok(&self) -> bool {
        self.error.is_none() && !self.cases.is_empty() && self.failed() == 0
    }
}

impl fmt::Display for TestReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(e) = &self.error {
            return writeln!(f, "error: {e}");
        }
        for c in &self.cases {
            writeln!(f, "{} {}", if c.passed { "PASS" } else { "FAIL" }, c.name)?;
            for d in &c.diff {
                writeln!(f, "     {d}")?;
            }
        }
        writeln!(f, "{} passed, {} failed", self.passed(), self.failed())
    }
}

/// The default time of cases: Monday 2025-01-06 10:00 UTC.
fn default_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 6, 10, 0, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn outcome_str(o: Outcome) -> &'static str {
    match o {
        Outcome::Allow => "allow",
        Outcome::Deny => "deny",
        Outcome::NeedsApproval => "needs_approval",
    }
}

fn reason_matches(expected: &str, actual: &str) -> bool {
    actual == expected
        || actual
            .strip_prefix(expected)
            .is_some_and(|rest| rest.starts_with(" (") || rest.starts_with(':'))
}

/// Builds the registry of a test file.
fn fixtures(file: &TestFile) -> Result<EntityStore, String> {
    let mut store = EntityStore::new();
    for a in &file.agents {
        store.upsert_agent(a.clone()).map_err(|e| e.to_string())?;
    }
    for u in &file.upstreams {
        store.upsert_upstream(u.clone()).map_err(|e| e.to_string())?;
    }
    for t in &file.tools {
        store.upsert_tool(t.clone()).map_err(|e| e.to_string())?;
    }
    for d in &file.datasets {
        store.upsert_dataset(d.clone()).map_err(|e| e.to_string())?;
    }
    Ok(store)
}

/// Runs the cases of a test file (TOML, format above) against `policies`.
pub fn run_tests(policies: &CompiledPolicies, test_file: &str) -> TestReport {
    let file: TestFile = match toml::from_str(test_file) {
        Ok(f) => f,
        Err(e) => {
            return TestReport {
                cases: Vec::new(),
                error: Some(format!(
                    "the test file does not parse: {}",
                    e.to_string().trim_end()
                )),
            };
        }
    };
    let store = match fixtures(&file) {
        Ok(s) => s,
        Err(e) => {
            return TestReport {
                cases: Vec::new(),
                error: Some(format!("fixtures: {e}")),
            };
        }
    };
    let mut report = TestReport::default();
    for case in &file.cases {
        let mut context = case.context.clone();
        if let Some(name) = &case.task {
            match file.tasks.get(name) {
                Some(t) => {
                    let mut t = t.clone();
                    if let Some(inline) = &context.task {
                        t.depth = inline.depth;
                        t.chain = inline.chain.clone();
                    }
                    context.task = Some(t);
                }
                None => {
                    report.error = Some(format!(
                        "case `{}` refers to task `{}`, which is not in `[tasks]`",
                        case.name,
                        name.escape_debug()
                    ));
                    report.cases.clear();
                    return report;
                }
            }
        }
        let req = PolicyRequest {
            principal: case.principal.clone(),
            action: case.action,
            resource: case.resource.clone(),
            context,
        };
        let now = case.time.or(file.defaults.time).unwrap_or_else(default_time);
        let actual = policies.decide(&store, &req, now);
        let mut diff = Vec::new();
        if actual.outcome != case.expect.outcome {
            diff.push(format!(
                "outcome: expected {}, got {}",
                outcome_str(case.expect.outcome),
                outcome_str(actual.outcome)
            ));
        }
        for r in &case.expect.reasons {
            if !actual.reasons.iter().any(|a| reason_matches(r, a)) {
                diff.push(format!("reasons: expected `{r}` among {:?}", actual.reasons));
            }
        }
        if case.expect.quorum.is_some() && case.expect.quorum != actual.quorum {
            diff.push(format!(
                "quorum: expected {:?}, got {:?}",
                case.expect.quorum, actual.quorum
            ));
        }
        if !diff.is_empty() && !actual.errors.is_empty() {
            diff.push(format!("errors: {:?}", actual.errors));
        }
        report.cases.push(CaseResult {
            name: case.name.clone(),
            passed: diff.is_empty(),
            expected: case.expect.clone(),
            actual,
            diff,
        });
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{PolicySource, compile};

    const POLICIES: &str = r#"
@id("reads")
permit(principal, action == Warden::Action::"read", resource);
"#;

    const TESTS: &str = r#"
[[agents]]
name = "bot"
environment = "staging"
model = "p/m@1"
state = "active"

[[upstreams]]
name = "crm"
kind = "mcp"
environment = "staging"
sensitivity = "internal"
owner = "bob@example.com"

[[cases]]
name = "reads are allowed"
principal = "bot"
action = "read"
resource = { upstream = "crm" }
expect = { outcome = "allow", reasons = ["reads"] }

[[cases]]
name = "a wrong expectation"
principal = "bot"
action = "write"
resource = { upstream = "crm" }
expect = { outcome = "allow", reasons = ["reads"] }
"#;

    #[test]
    fn cases_pass_and_fail_with_a_diff() {
        let c = compile(&PolicySource::single("p.cedar", POLICIES).expect("src")).expect("compiles");
        let r = run_tests(&c, TESTS);
        assert_eq!((r.passed(), r.failed()), (1, 1), "{r}");
        let failed = &r.cases[1];
        assert_eq!(failed.diff[0], "outcome: expected allow, got deny");
        assert!(
            failed.diff[1].starts_with("reasons: expected `reads` among"),
            "{r}"
        );
        let text = r.to_string();
        assert!(text.contains("PASS reads are allowed") && text.contains("FAIL a wrong expectation"));
        assert!(!r.ok());
    }

    #[test]
    fn bad_files_are_reported() {
        let c = compile(&PolicySource::single("p.cedar", POLICIES).expect("src")).expect("compiles");
        let r = run_tests(&c, "[[cases]]\nname = 1");
        assert!(
            r.error
                .as_deref()
                .is_some_and(|e| e.starts_with("the test file does not parse")),
            "{r:?}"
        );
        let r = run_tests(
            &c,
            "[[agents]]\nname = \"Bad Name\"\nenvironment = \"staging\"\nmodel = \"p/m@1\"\nstate = \"active\"",
        );
        assert!(r.error.is_some(), "{r:?}");
    }
}
