//! Turns parsed command lines into API request bodies, checking the rules that span several flags
//! (duplicates in a repeated flag, an update that changes nothing, a URL that does not suit the upstream
//! kind) with `warden-core`'s own validation, so the client refuses exactly what the server would refuse,
//! before sending anything. A refusal is a [`UsageError`] naming the flag: exit code 2.

use std::fmt;

use serde::Serialize;
use serde_json::{Value, json};
use warden_core::token::NewApiToken;
use warden_core::{AgentRegistration, AgentUpdate, Description, NewHuman, NewUpstream, ValidationError};
use warden_identity::{AUTHORIZATION_DETAILS_TYPE, TaskIntent, TokenError};

use crate::cli::{
    AgentRegisterArgs, AgentUpdateArgs, HumanAddArgs, IntentArgs, TokenCreateArgs, UpstreamAddArgs,
};

/// The command line asks for something invalid; reported as `error: <message>` with exit code 2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// The flag a field of a request body comes from (`owners[2]` → `--owner`).
fn flag_for(field: &str) -> Option<&'static str> {
    let base = field.split('[').next().unwrap_or(field);
    Some(match base {
        "name" => "NAME",
        "owners" | "owner" => "--owner",
        "allowed_upstreams" => "--upstream",
        "environment" => "--environment",
        "model" => "--model",
        "description" => "--description",
        "url" => "--url",
        "kind" => "--kind",
        "sensitivity" => "--sensitivity",
        "email" => "EMAIL",
        "display_name" => "--name",
        "roles" => "--role",
        "label" => "--label",
        "ttl_seconds" => "--ttl",
        "reason" => "--reason",
        "purpose" => "--purpose",
        "task_type" => "--type",
        "upstreams" => "--upstream",
        "tools" => "--tool",
        "datasets" => "--dataset",
        "resources" => "--resource",
        "prompts" => "--prompt",
        "max_duration_secs" => "--duration",
        _ => return None,
    })
}

/// A validation error from `warden-core`, restated in terms of the command line.
pub fn usage(e: ValidationError) -> UsageError {
    match flag_for(&e.field) {
        Some(flag) => UsageError(format!("{flag}: {}", e.message)),
        None => UsageError(e.message),
    }
}

pub fn agent_registration(args: AgentRegisterArgs) -> Result<AgentRegistration, UsageError> {
    let reg = AgentRegistration {
        name: args.name,
        owners: args.owners,
        environment: args.environment,
        model: args.model,
        description: args.description.unwrap_or_default(),
        allowed_upstreams: args.upstreams,
    };
    reg.validate().map_err(usage)?;
    Ok(reg)
}

/// Whether any intent flag was given (for `task delegate`: none means "the parent's scope").
pub fn intent_given(args: &IntentArgs) -> bool {
    args.purpose.is_some()
        || args.task_type.is_some()
        || !args.upstreams.is_empty()
        || !args.tools.is_empty()
        || !args.datasets.is_empty()
        || !args.resources.is_empty()
        || !args.prompts.is_empty()
        || args.duration.is_some()
}

/// The task's intent from the intent flags, checked by the same parser the server uses. `defaults`
/// supplies `--purpose` and `--type` when they are not given (a delegation inherits the parent's);
/// without defaults both are required.
pub fn task_intent(args: &IntentArgs, defaults: Option<(&str, &str)>) -> Result<TaskIntent, UsageError> {
    let purpose = match (&args.purpose, defaults) {
        (Some(p), _) => p.as_str(),
        (None, Some((p, _))) => p,
        (None, None) => {
            return Err(UsageError(
                "--purpose is required: say what the task is for".into(),
            ));
        }
    };
    let task_type = match (&args.task_type, defaults) {
        (Some(t), _) => t.as_str(),
        (None, Some((_, t))) => t,
        (None, None) => {
            return Err(UsageError(
                "--type is required: the kind of task, e.g. `billing.reconcile`".into(),
            ));
        }
    };
    let mut entry = json!({
        "type": AUTHORIZATION_DETAILS_TYPE,
        "purpose": purpose,
        "task_type": task_type,
        "upstreams": args.upstreams.iter().map(|u| u.as_str()).collect::<Vec<_>>(),
        "tools": args.tools,
        "datasets": args.datasets,
        "resources": args.resources,
        "prompts": args.prompts,
    });
    if let (Some(d), Some(obj)) = (args.duration, entry.as_object_mut()) {
        obj.insert("max_duration_secs".into(), json!(d.0));
    }
    TaskIntent::from_authorization_details(&Value::Array(vec![entry]).to_string()).map_err(|e| match e {
        TokenError::InvalidAuthorizationDetails { field, message } => {
            let field = field.rsplit('.').next().unwrap_or(&field);
            usage(ValidationError::new(field, message))
        }
        other => UsageError(other.to_string()),
    })
}

pub fn agent_update(args: AgentUpdateArgs) -> Result<AgentUpdate, UsageError> {
    let allowed_upstreams = if args.no_upstreams {
        Some(Vec::new())
    } else if args.upstreams.is_empty() {
        None
    } else {
        Some(args.upstreams)
    };
    let default_intent = if args.no_default_intent {
        Some(Value::Null)
    } else {
        args.default_intent.as_deref().map(default_intent).transpose()?
    };
    let update = AgentUpdate {
        owners: (!args.owners.is_empty()).then_some(args.owners),
        environment: args.environment,
        model: args.model,
        description: args.description,
        allowed_upstreams,
        default_intent,
    };
    update.validate().map_err(|e| {
        if e.field.is_empty() {
            UsageError(
                "the update changes nothing; give at least one of --owner, --environment, --model, \
                 --description, --upstream, --no-upstreams, --default-intent or --no-default-intent"
                    .into(),
            )
        } else {
            usage(e)
        }
    })?;
    Ok(update)
}

/// `--default-intent`: `authorization_details` JSON (the array, or its one object), checked by the
/// server's own intent parser and sent in its canonical form.
fn default_intent(text: &str) -> Result<Value, UsageError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| UsageError(format!("--default-intent: not JSON ({e})")))?;
    let array = match value {
        Value::Object(_) => Value::Array(vec![value]),
        other => other,
    };
    let intent = TaskIntent::from_authorization_details(&array.to_string())
        .map_err(|e| UsageError(format!("--default-intent: {e}")))?;
    Ok(intent.to_authorization_details())
}

/// The body of `POST /v1/agents/{name}/{activate,suspend,retire}`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LifecycleBody {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Description>,
}

pub fn new_upstream(args: UpstreamAddArgs) -> Result<NewUpstream, UsageError> {
    let upstream = NewUpstream {
        name: args.name,
        kind: args.kind,
        url: args.url,
        environment: args.environment,
        owner: args.owner,
        sensitivity: args.sensitivity,
        description: args.description.unwrap_or_default(),
    };
    upstream.validate().map_err(usage)?;
    Ok(upstream)
}

pub fn new_human(args: HumanAddArgs) -> Result<NewHuman, UsageError> {
    let human = NewHuman {
        email: args.email,
        display_name: args.name,
        roles: args.roles,
    };
    human.validate().map_err(usage)?;
    Ok(human)
}

pub fn new_api_token(args: &TokenCreateArgs) -> Result<NewApiToken, UsageError> {
    let token = NewApiToken {
        label: args.label.clone().unwrap_or_default(),
        ttl_seconds: args.ttl.map(|t| t.0),
        claim: args.claim,
    };
    token.ttl().map_err(usage)?;
    Ok(token)
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{AgentCommand, Cli, Command, HumanCommand, TokenCommand, UpstreamCommand};

    fn cli(args: &[&str]) -> Command {
        Cli::try_parse_from(std::iter::once("warden").chain(args.iter().copied()))
            .expect("parses")
            .command
    }

    fn register(extra: &[&str]) -> Result<AgentRegistration, UsageError> {
        let mut args = vec![
            "agent",
            "register",
            "bot",
            "--environment",
            "staging",
            "--model",
            "p/m@1",
        ];
        args.extend_from_slice(extra);
        let Command::Agent(AgentCommand::Register(a)) = cli(&args) else {
            panic!("wrong verb")
        };
        agent_registration(a)
    }

    fn update(extra: &[&str]) -> Result<AgentUpdate, UsageError> {
        let mut args = vec!["agent", "update", "bot"];
        args.extend_from_slice(extra);
        let Command::Agent(AgentCommand::Update(a)) = cli(&args) else {
            panic!("wrong verb")
        };
        agent_update(a)
    }

    #[test]
    fn registration() {
        let reg = register(&[
            "--owner",
            "a@example.com",
            "--upstream",
            "crm",
            "--description",
            "bills",
        ])
        .expect("ok");
        let json = serde_json::to_value(&reg).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({
                "name": "bot", "owners": ["a@example.com"], "environment": "staging", "model": "p/m@1",
                "description": "bills", "allowed_upstreams": ["crm"]
            })
        );
        let dup = register(&["--owner", "a@example.com", "--owner", "A@example.com"]).expect_err("duplicate");
        assert_eq!(dup.0, "--owner: `a@example.com` is listed twice");
        let dup = register(&["--owner", "a@example.com", "--upstream", "x", "--upstream", "x"])
            .expect_err("duplicate");
        assert_eq!(dup.0, "--upstream: `x` is listed twice");
    }

    #[test]
    fn updates() {
        let nothing = update(&[]).expect_err("empty");
        assert!(nothing.0.contains("changes nothing"), "{}", nothing.0);
        let json = |u: AgentUpdate| serde_json::to_value(u).expect("serializes");
        assert_eq!(
            json(update(&["--model", "p/m@2"]).expect("ok")),
            serde_json::json!({"model": "p/m@2"})
        );
        assert_eq!(
            json(update(&["--no-upstreams"]).expect("ok")),
            serde_json::json!({"allowed_upstreams": []})
        );
        assert_eq!(
            json(update(&["--owner", "a@example.com", "--upstream", "x"]).expect("ok")),
            serde_json::json!({"owners": ["a@example.com"], "allowed_upstreams": ["x"]})
        );
        assert_eq!(
            json(update(&["--description", ""]).expect("ok")),
            serde_json::json!({"description": ""})
        );
    }

    #[test]
    fn upstream_url_must_suit_the_kind() {
        let add = |kind: &str, url: &str| {
            let args = [
                "upstream",
                "add",
                "db",
                "--kind",
                kind,
                "--url",
                url,
                "--environment",
                "staging",
                "--owner",
                "a@example.com",
                "--sensitivity",
                "internal",
            ];
            let Command::Upstream(UpstreamCommand::Add(a)) = cli(&args) else {
                panic!("wrong verb")
            };
            new_upstream(a)
        };
        assert!(add("postgres", "postgres://db.internal/app").is_ok());
        let e = add("postgres", "https://db.internal").expect_err("wrong scheme");
        assert!(
            e.0.starts_with("--url: a postgres upstream needs a postgres or postgresql url"),
            "{}",
            e.0
        );
        let e = add("http", "https://u:p@x").expect_err("credentials");
        assert!(
            e.0.starts_with("--url: url must not carry credentials"),
            "{}",
            e.0
        );
    }

    fn intent(extra: &[&str], defaults: Option<(&str, &str)>) -> Result<TaskIntent, UsageError> {
        let mut args = vec!["task", "start", "--key", "k", "--agent-id", "bot"];
        args.extend_from_slice(extra);
        let Command::Task(crate::cli::TaskCommand::Start(a)) = cli(&args) else {
            panic!("wrong verb")
        };
        task_intent(&a.intent, defaults)
    }

    #[test]
    fn default_intents_are_checked_by_the_servers_parser() {
        let object =
            r#"{"type":"warden_task","purpose":"p","task_type":"t","upstreams":["crm"],"tools":["echo"]}"#;
        let v = default_intent(object).expect("the object form");
        assert_eq!(v[0]["tools"], serde_json::json!(["echo"]));
        assert_eq!(default_intent(&format!("[{object}]")).expect("the array form"), v);
        for bad in [
            "not json",
            "[]",
            r#"{"type":"warden_task"}"#,
            r#"{"type":"x","purpose":"p","task_type":"t"}"#,
        ] {
            let e = default_intent(bad).expect_err(bad);
            assert!(e.0.starts_with("--default-intent"), "{}", e.0);
        }
    }

    #[test]
    fn task_intents() {
        let i = intent(
            &[
                "--purpose",
                "p",
                "--type",
                "billing",
                "--upstream",
                "crm",
                "--tool",
                "search",
                "--duration",
                "1h",
            ],
            None,
        )
        .expect("ok");
        assert_eq!(i.task_type, "billing");
        assert_eq!(i.tools, ["search"]);
        assert_eq!(i.max_duration_secs, Some(3_600));
        assert_eq!(i.to_authorization_details()[0]["type"], "warden_task");

        let i = intent(
            &[
                "--purpose",
                "p",
                "--type",
                "t",
                "--upstream",
                "files",
                "--resource",
                "file:///tmp/*",
                "--resource",
                "ui://widgets/clock",
                "--prompt",
                "summary",
            ],
            None,
        )
        .expect("ok");
        assert_eq!(i.resources, ["file:///tmp/*", "ui://widgets/clock"]);
        assert_eq!(i.prompts, ["summary"]);
        assert_eq!(i.to_authorization_details()[0]["resources"][0], "file:///tmp/*");

        let e = intent(&["--type", "t"], None).expect_err("no purpose");
        assert!(e.0.starts_with("--purpose is required"), "{}", e.0);
        let e = intent(&["--purpose", "p"], None).expect_err("no type");
        assert!(e.0.starts_with("--type is required"), "{}", e.0);
        let i = intent(&["--tool", "search"], Some(("inherited", "billing"))).expect("defaults");
        assert_eq!(
            (i.purpose.as_str(), i.task_type.as_str()),
            ("inherited", "billing")
        );

        for (extra, want) in [
            (&["--type", "Billing"][..], "--type: "),
            (&["--type", "t", "--dataset", " padded "][..], "--dataset: "),
            (
                &["--type", "t", "--tool", "a", "--tool", "a"][..],
                "--tool: `a` is listed twice",
            ),
            (
                &["--type", "t", "--upstream", "crm", "--upstream", "crm"][..],
                "--upstream: ",
            ),
            (
                &["--type", "t", "--resource", "*", "--resource", "*"][..],
                "--resource: `*` is listed twice",
            ),
            (
                &["--type", "t", "--prompt", ""][..],
                "--prompt: must be 1 to 200 bytes",
            ),
        ] {
            let mut args = vec!["--purpose", "p"];
            args.extend_from_slice(extra);
            let e = intent(&args, None).expect_err("invalid");
            assert!(e.0.starts_with(want), "{extra:?}: {}", e.0);
        }
        let long = "x".repeat(501);
        let e = intent(&["--purpose", &long, "--type", "t"], None).expect_err("too long");
        assert!(e.0.starts_with("--purpose: "), "{}", e.0);
    }

    #[test]
    fn humans_and_tokens() {
        let Command::Human(HumanCommand::Add(a)) = cli(&[
            "human",
            "add",
            "a@example.com",
            "--name",
            "A",
            "--role",
            "owner",
            "--role",
            "owner",
        ]) else {
            panic!("wrong verb")
        };
        assert_eq!(
            new_human(a).expect_err("duplicate").0,
            "--role: `owner` is listed twice"
        );

        let token = |extra: &[&str]| {
            let mut args = vec!["human", "token", "create", "a@example.com"];
            args.extend_from_slice(extra);
            let Command::Human(HumanCommand::Token(TokenCommand::Create(a))) = cli(&args) else {
                panic!("wrong verb")
            };
            new_api_token(&a)
        };
        let t = token(&["--ttl", "2h", "--label", "ci"]).expect("ok");
        assert_eq!((t.label.as_str(), t.ttl_seconds), ("ci", Some(7_200)));
        assert_eq!(token(&[]).expect("ok").ttl_seconds, None);
        let e = token(&["--label", "a\u{1b}[31m"]).expect_err("control character");
        assert!(e.0.starts_with("--label: "), "{}", e.0);
    }
}
