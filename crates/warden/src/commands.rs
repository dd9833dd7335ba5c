//! Runs one parsed command line: builds the request (refusing bad input before anything is sent), finds
//! the token, calls the REST API and prints the result.

use std::path::PathBuf;

use anyhow::Context as _;
use serde::Deserialize;
use serde_json::{Value, json};
use warden_core::{Agent, AgentDetail, ApiTokenInfo, Human, Task, Upstream};

use crate::cli::{
    AgentCommand, AuditCommand, Cli, Command, Format, HumanCommand, KeysCommand, PolicyCommand, ServeArgs,
    TaskCommand, TokenCommand, UpstreamCommand,
};
use crate::client::{Client, find_token};
use crate::output::{self, Fields, Table, list, time};
use crate::policy::{self, PolicyCall};
use crate::request::{self, LifecycleBody};
use crate::secret_file::NewSecretFile;
use crate::{agent, audit};

/// The exit code of a command that succeeded.
fn done((): ()) -> u8 {
    0
}

/// Runs a command line; on success, the exit code: 0, or for `warden authorize` the decision's
/// ([`policy::exit_code`]).
pub async fn run(cli: Cli) -> anyhow::Result<u8> {
    let Cli {
        server,
        ca_file,
        client_cert,
        client_key,
        token_file,
        output: format,
        command,
    } = cli;
    let server = crate::client::Server {
        url: server.0,
        ca_file,
        // clap requires both or neither.
        client_identity: client_cert.zip(client_key),
    };
    // Every request body is built, and checked, before the token is read or anything is sent.
    let call = match command {
        Command::Serve(args) => return serve(args).await.map(done),
        // As the agent: its key, no API token.
        Command::Connect(a) => return crate::connect::run(&server, a).await.map(done),
        // As the agent, with its task token; exits with the decision's code.
        Command::Authorize(a) => return policy::authorize(&server, format, a).await,
        // Local: no server, no token.
        Command::Audit(AuditCommand::Verify(a)) => return audit::verify(format, a).await.map(done),
        Command::Audit(AuditCommand::Export(a)) => return audit::export(format, a).await.map(done),
        Command::Audit(AuditCommand::Tail(a)) => Call::AuditTail(a),
        Command::Audit(AuditCommand::Checkpoint(a)) => Call::AuditCheckpoint(a),
        Command::Policy(PolicyCommand::Validate(a)) => return policy::validate(format, &a.dir).map(done),
        Command::Policy(PolicyCommand::Test(a)) => return policy::test(format, a).map(done),
        // Compiled here first; nothing is sent when the set does not compile.
        Command::Policy(PolicyCommand::Activate(a)) => {
            Call::Policy(policy::install(format, &a.dir, false, a.comment)?)
        }
        Command::Policy(PolicyCommand::Shadow(a)) => match a.dir {
            Some(dir) => Call::Policy(policy::install(format, &dir, true, a.comment)?),
            None => Call::Policy(PolicyCall::ClearShadow(a.comment)),
        },
        Command::Policy(PolicyCommand::Status) => Call::Policy(PolicyCall::Status),
        Command::Policy(PolicyCommand::Explain(a)) => Call::Policy(policy::explain_call(a)?),
        // The agent side: no API token.
        Command::Agent(AgentCommand::Enroll(a)) => return agent::enroll(&server, format, a).await.map(done),
        Command::Task(TaskCommand::Start(a)) => return agent::start(&server, format, a).await.map(done),
        Command::Task(TaskCommand::Renew(a)) => return agent::renew(&server, format, a).await.map(done),
        Command::Task(TaskCommand::Delegate(a)) => {
            return agent::delegate(&server, format, a).await.map(done);
        }
        Command::Task(TaskCommand::Current(a)) => return agent::current(&server, format, a).await.map(done),
        Command::Task(TaskCommand::End(a)) => match (a.id, a.task_token_file) {
            (Some(id), _) => Call::Task(TaskCall::End(id.0, end_body(a.reason))),
            (None, Some(file)) => {
                let reason = a.reason.map(|r| r.0);
                return agent::end(&server, format, &file, a.key.as_deref(), reason)
                    .await
                    .map(done);
            }
            // clap's argument group requires one of the two.
            (None, None) => {
                return Err(request::UsageError("give a TASK_ID or --task-token-file".into()).into());
            }
        },
        Command::Task(TaskCommand::List(a)) => Call::Task(TaskCall::List {
            agent: a.agent.map(|n| n.to_string()),
            state: a.state.map(|s| s.as_str().to_owned()),
        }),
        Command::Task(TaskCommand::Show(a)) => Call::Task(TaskCall::Show(a.id.0)),
        Command::Keys(KeysCommand::Rotate) => Call::KeysRotate,
        Command::Agent(c) => Call::Agent(agent_call(c)?),
        Command::Upstream(c) => Call::Upstream(upstream_call(c)?),
        Command::Human(c) => Call::Human(human_call(c)?),
        Command::Whoami => Call::Whoami,
        Command::Approvals(c) => Call::Approvals(c),
        Command::Tool(c) => Call::Tool(c),
        Command::Secret(c) => Call::Secret(crate::gateway::secret_call(c)?),
    };
    let (token, source) = find_token(token_file.as_deref(), |k| std::env::var(k).ok())?;
    let client = Client::new(&server, &token, source)?;
    drop(token);
    let result = match call {
        Call::Agent(c) => run_agent(&client, format, c).await,
        Call::Upstream(c) => run_upstream(&client, format, c).await,
        Call::Human(c) => run_human(&client, format, c).await,
        Call::Task(c) => run_task(&client, format, c).await,
        Call::KeysRotate => keys_rotate(&client, format).await,
        Call::Policy(c) => policy::run(&client, format, c).await,
        Call::Whoami => whoami(&client, format).await,
        Call::AuditTail(a) => audit::tail(&client, format, a).await,
        Call::AuditCheckpoint(a) => audit::save_checkpoint(&client, format, a).await,
        Call::Approvals(c) => crate::approvals::run(&client, format, c).await,
        Call::Tool(c) => crate::gateway::run_tool(&client, format, c).await,
        Call::Secret(c) => crate::gateway::run_secret(&client, format, c).await,
    };
    result.map(done)
}

fn end_body(reason: Option<crate::cli::EndReason>) -> Value {
    json!({ "reason": reason.map(|r| r.0).unwrap_or_default() })
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let ServeArgs {
        config,
        data_dir,
        listen,
        database,
    } = args;
    warden_server::run(warden_server::ServeOptions {
        config,
        data_dir,
        listen,
        database,
    })
    .await
}

/// A validated request, ready to send.
enum Call {
    Agent(AgentCall),
    Upstream(UpstreamCall),
    Human(HumanCall),
    Task(TaskCall),
    KeysRotate,
    Policy(PolicyCall),
    Whoami,
    AuditTail(crate::cli::AuditTailArgs),
    AuditCheckpoint(crate::cli::AuditCheckpointArgs),
    Approvals(crate::cli::ApprovalsCommand),
    Tool(crate::cli::ToolCommand),
    Secret(crate::gateway::SecretCall),
}

enum TaskCall {
    List {
        agent: Option<String>,
        state: Option<String>,
    },
    Show(String),
    End(String, Value),
}

enum AgentCall {
    Register(warden_core::AgentRegistration, Option<PathBuf>),
    JoinToken(String, Option<PathBuf>),
    List {
        state: Option<String>,
        owner: Option<String>,
    },
    Show(String),
    Update(String, warden_core::AgentUpdate),
    Lifecycle(String, &'static str, LifecycleBody),
}

enum UpstreamCall {
    Add(warden_core::NewUpstream),
    List,
    Show(String),
    Remove(String),
}

enum HumanCall {
    Add(warden_core::NewHuman),
    List,
    Show(String),
    Remove(String),
    TokenCreate(String, warden_core::token::NewApiToken, Option<PathBuf>),
    TokenList(String),
    TokenRevoke(String),
}

fn agent_call(c: AgentCommand) -> anyhow::Result<AgentCall> {
    let lifecycle = |a: crate::cli::LifecycleArgs, action| {
        AgentCall::Lifecycle(a.name.to_string(), action, LifecycleBody { reason: a.reason })
    };
    Ok(match c {
        AgentCommand::Register(mut a) => {
            let out = a.join_token_out.take();
            AgentCall::Register(request::agent_registration(a)?, out)
        }
        AgentCommand::JoinToken(a) => AgentCall::JoinToken(a.name.to_string(), a.out),
        AgentCommand::Enroll(_) => {
            return Err(request::UsageError("`agent enroll` needs no API token".into()).into());
        }
        AgentCommand::List(a) => AgentCall::List {
            state: a.state.map(|s| s.as_str().to_owned()),
            owner: a.owner.map(|o| o.to_string()),
        },
        AgentCommand::Show(a) => AgentCall::Show(a.name.to_string()),
        AgentCommand::Update(a) => AgentCall::Update(a.name.to_string(), request::agent_update(a)?),
        AgentCommand::Suspend(a) => lifecycle(a, "suspend"),
        AgentCommand::Activate(a) => lifecycle(a, "activate"),
        AgentCommand::Retire(a) => lifecycle(a, "retire"),
    })
}

fn upstream_call(c: UpstreamCommand) -> anyhow::Result<UpstreamCall> {
    Ok(match c {
        UpstreamCommand::Add(a) => UpstreamCall::Add(request::new_upstream(a)?),
        UpstreamCommand::List => UpstreamCall::List,
        UpstreamCommand::Show(a) => UpstreamCall::Show(a.name.to_string()),
        UpstreamCommand::Remove(a) => UpstreamCall::Remove(a.name.to_string()),
    })
}

fn human_call(c: HumanCommand) -> anyhow::Result<HumanCall> {
    Ok(match c {
        HumanCommand::Add(a) => HumanCall::Add(request::new_human(a)?),
        HumanCommand::List => HumanCall::List,
        HumanCommand::Show(a) => HumanCall::Show(a.email.to_string()),
        HumanCommand::Remove(a) => HumanCall::Remove(a.email.to_string()),
        HumanCommand::Token(TokenCommand::Create(a)) => {
            let body = request::new_api_token(&a)?;
            HumanCall::TokenCreate(a.email.to_string(), body, a.token_out.clone())
        }
        HumanCommand::Token(TokenCommand::List(a)) => HumanCall::TokenList(a.email.to_string()),
        HumanCommand::Token(TokenCommand::Revoke(a)) => HumanCall::TokenRevoke(a.id.0),
    })
}

const AGENT: &str = "agent";
const AGENTS: &str = "agents";

async fn run_agent(client: &Client, format: Format, call: AgentCall) -> anyhow::Result<()> {
    match call {
        AgentCall::Register(body, out) => {
            let out = out.map(|p| NewSecretFile::create(&p, "join token")).transpose()?;
            let v = client.post(&["v1", AGENTS], &body).await?;
            registered(format, v, out)
        }
        AgentCall::JoinToken(name, out) => {
            let out = out.map(|p| NewSecretFile::create(&p, "join token")).transpose()?;
            let v = client
                .post(&["v1", AGENTS, &name, "join-token"], &json!({}))
                .await?;
            new_join_token(format, &name, v, out)
        }
        AgentCall::List { state, owner } => {
            let mut query = Vec::new();
            if let Some(s) = &state {
                query.push(("state", s.as_str()));
            }
            if let Some(o) = &owner {
                query.push(("owner", o.as_str()));
            }
            let v = client.get(&["v1", AGENTS], &query).await?;
            output::many(
                format,
                v,
                AGENTS,
                AGENTS,
                &[
                    "NAME",
                    "STATE",
                    "ENVIRONMENT",
                    "MODEL",
                    "OWNERS",
                    "UPSTREAMS",
                    "SPIFFE ID",
                ],
                |a: &Agent| {
                    vec![
                        a.name.to_string(),
                        a.state.to_string(),
                        a.environment.to_string(),
                        a.model.to_string(),
                        list(&a.owners),
                        list(&a.allowed_upstreams),
                        a.spiffe_id.clone(),
                    ]
                },
            )
        }
        AgentCall::Show(name) => {
            let v = client.get(&["v1", AGENTS, &name], &[]).await?;
            output::one(format, v, AGENT, |d: &AgentDetail| {
                let mut history = Table::new(&["AT", "FROM", "TO", "BY", "REASON"]);
                for h in &d.history {
                    history.row(vec![
                        time(&h.at),
                        h.from.map(|s| s.to_string()).unwrap_or_default(),
                        h.to.to_string(),
                        h.by.clone(),
                        h.reason.clone(),
                    ]);
                }
                format!("{}\nhistory:\n{}", agent_fields(&d.agent), history.render())
            })
        }
        AgentCall::Update(name, body) => {
            let v = client.patch(&["v1", AGENTS, &name], &body).await?;
            output::one(format, v, AGENT, agent_fields)
        }
        AgentCall::Lifecycle(name, action, body) => {
            let v = client.post(&["v1", AGENTS, &name, action], &body).await?;
            output::one(format, v, AGENT, agent_fields)
        }
    }
}

fn agent_fields(a: &Agent) -> String {
    Fields::new()
        .add("name", a.name.to_string())
        .add("spiffe_id", a.spiffe_id.clone())
        .add("state", a.state.to_string())
        .add("environment", a.environment.to_string())
        .add("model", a.model.to_string())
        .add("owners", list(&a.owners))
        .add("allowed_upstreams", list(&a.allowed_upstreams))
        .add("description", a.description.as_str())
        .add("state_changed_at", time(&a.state_changed_at))
        .add("state_changed_by", a.state_changed_by.clone())
        .add("created_at", time(&a.created_at))
        .add("created_by", a.created_by.clone())
        .add("updated_at", time(&a.updated_at))
        .add("updated_by", a.updated_by.clone())
        .add("id", a.id.to_string())
        .render()
}

/// The answer of `POST /v1/agents`: the agent and its one-time join token.
#[derive(Deserialize)]
struct Registered {
    #[serde(flatten)]
    agent: Agent,
    join_token: String,
    join_token_expires_at: chrono::DateTime<chrono::Utc>,
}

/// Prints a registration. The join token is shown once: with `out`, it is written there (and JSON mode
/// prints the answer without it, with `join_token_file`); without, JSON mode prints the whole answer,
/// and table mode prints the agent on stdout and the join token, labelled, on stderr, so stdout stays
/// the agent's `key: value` lines.
fn registered(format: Format, mut v: Value, out: Option<NewSecretFile>) -> anyhow::Result<()> {
    let reg: Registered = output::decode(v.clone(), AGENT)?;
    let token = warden_core::Secret::new(reg.join_token);
    let expires = time(&reg.join_token_expires_at);
    let Some(out) = out else {
        if format == Format::Table {
            output::stdout(&agent_fields(&reg.agent))?;
            eprintln!(
                "join token for {} (shown only once; single use; expires {expires}; the agent enrolls with \
                 `warden agent enroll --join-token-file FILE --key-out KEY`):\n{}",
                reg.agent.name,
                token.expose()
            );
            return Ok(());
        }
        return output::one(format, v, AGENT, |_: &Value| String::new());
    };
    let file = out.write(&token)?.display().to_string();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("join_token");
        obj.insert("join_token_file".into(), json!(file));
    }
    output::one(format, v, AGENT, |_: &Value| {
        let mut f = agent_fields(&reg.agent);
        f.push_str(
            &Fields::new()
                .add("join_token_file", file.clone())
                .add("join_token_expires_at", expires.clone())
                .render(),
        );
        f
    })
}

/// Prints a new join token: like an API token, alone on stdout in table mode (notice on stderr), or
/// written to `out`.
fn new_join_token(
    format: Format,
    agent: &str,
    mut v: Value,
    out: Option<NewSecretFile>,
) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct JoinToken {
        join_token: String,
        expires_at: chrono::DateTime<chrono::Utc>,
    }
    let j: JoinToken = output::decode(v.clone(), "join token answer")?;
    let token = warden_core::Secret::new(j.join_token);
    let Some(out) = out else {
        if format == Format::Json {
            return output::one(format, v, "join token answer", |_: &Value| String::new());
        }
        eprintln!(
            "join token for {agent} created (single use; older unused ones stop working; enrolling with it \
             replaces the agent's key), expires {}. It is shown only once, below; store it now:",
            time(&j.expires_at)
        );
        return output::stdout(&format!("{}\n", token.expose())).context("printing the token");
    };
    let file = out.write(&token)?.display().to_string();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("join_token");
        obj.insert("agent".into(), json!(agent));
        obj.insert("join_token_file".into(), json!(file));
    }
    output::one(format, v, "join token answer", |_: &Value| {
        Fields::new()
            .add("agent", agent)
            .add("join_token_file", file.clone())
            .add("expires_at", time(&j.expires_at))
            .render()
    })
}

const TASKS: &str = "tasks";

async fn run_task(client: &Client, format: Format, call: TaskCall) -> anyhow::Result<()> {
    match call {
        TaskCall::List { agent, state } => {
            let mut query = Vec::new();
            if let Some(a) = &agent {
                query.push(("agent", a.as_str()));
            }
            if let Some(s) = &state {
                query.push(("state", s.as_str()));
            }
            let v = client.get(&["v1", TASKS], &query).await?;
            output::many(
                format,
                v,
                TASKS,
                TASKS,
                &[
                    "ID",
                    "AGENT",
                    "STATE",
                    "TYPE",
                    "UPSTREAMS",
                    "DEPTH",
                    "PARENT",
                    "EXPIRES",
                ],
                |t: &Task| {
                    let intent = t.intent.as_array().and_then(|a| a.first());
                    let field = |name: &str| intent.and_then(|i| i.get(name));
                    vec![
                        t.id.to_string(),
                        t.agent.to_string(),
                        t.state.to_string(),
                        field("task_type")
                            .and_then(Value::as_str)
                            .unwrap_or_default()
                            .to_owned(),
                        field("upstreams")
                            .and_then(Value::as_array)
                            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                            .unwrap_or_default(),
                        t.depth.to_string(),
                        t.parent_id.map(|p| p.to_string()).unwrap_or_default(),
                        time(&t.expires_at),
                    ]
                },
            )
        }
        TaskCall::Show(id) => {
            let v = client.get(&["v1", TASKS, &id], &[]).await?;
            output::one(format, v, "task", |t: &Task| agent::task_fields(t).render())
        }
        TaskCall::End(id, body) => {
            let v = client.post(&["v1", TASKS, &id, "end"], &body).await?;
            agent::stopped(format, v)
        }
    }
}

async fn keys_rotate(client: &Client, format: Format) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Rotated {
        old_kid: String,
        new_kid: String,
    }
    let v = client.post(&["v1", "keys", "rotate"], &json!({})).await?;
    output::one(format, v, "key rotation answer", |r: &Rotated| {
        Fields::new()
            .add("old_kid", r.old_kid.clone())
            .add("new_kid", r.new_kid.clone())
            .render()
    })
}

const UPSTREAM: &str = "upstream";
const UPSTREAMS: &str = "upstreams";

async fn run_upstream(client: &Client, format: Format, call: UpstreamCall) -> anyhow::Result<()> {
    let v = match call {
        UpstreamCall::Add(body) => client.post(&["v1", UPSTREAMS], &body).await?,
        UpstreamCall::List => {
            let v = client.get(&["v1", UPSTREAMS], &[]).await?;
            return output::many(
                format,
                v,
                UPSTREAMS,
                UPSTREAMS,
                &["NAME", "KIND", "ENVIRONMENT", "SENSITIVITY", "OWNER", "URL"],
                |u: &Upstream| {
                    vec![
                        u.name.to_string(),
                        u.kind.to_string(),
                        u.environment.to_string(),
                        u.sensitivity.to_string(),
                        u.owner.to_string(),
                        u.url.clone(),
                    ]
                },
            );
        }
        UpstreamCall::Show(name) => client.get(&["v1", UPSTREAMS, &name], &[]).await?,
        UpstreamCall::Remove(name) => client.delete(&["v1", UPSTREAMS, &name]).await?,
    };
    output::one(format, v, UPSTREAM, upstream_fields)
}

fn upstream_fields(u: &Upstream) -> String {
    Fields::new()
        .add("name", u.name.to_string())
        .add("kind", u.kind.to_string())
        .add("url", u.url.clone())
        .add("environment", u.environment.to_string())
        .add("owner", u.owner.to_string())
        .add("sensitivity", u.sensitivity.to_string())
        .add("description", u.description.as_str())
        .add("created_at", time(&u.created_at))
        .add("created_by", u.created_by.clone())
        .add("id", u.id.to_string())
        .render()
}

const HUMAN: &str = "human";
const HUMANS: &str = "humans";
const TOKEN: &str = "API token";
const TOKENS: &str = "tokens";

async fn run_human(client: &Client, format: Format, call: HumanCall) -> anyhow::Result<()> {
    match call {
        HumanCall::Add(body) => {
            let v = client.post(&["v1", HUMANS], &body).await?;
            output::one(format, v, HUMAN, human_fields)
        }
        HumanCall::List => {
            let v = client.get(&["v1", HUMANS], &[]).await?;
            output::many(
                format,
                v,
                HUMANS,
                HUMANS,
                &["EMAIL", "NAME", "ROLES", "CREATED"],
                |h: &Human| {
                    vec![
                        h.email.to_string(),
                        h.display_name.as_str().to_owned(),
                        list(&h.roles),
                        time(&h.created_at),
                    ]
                },
            )
        }
        HumanCall::Show(email) => {
            let v = client.get(&["v1", HUMANS, &email], &[]).await?;
            output::one(format, v, HUMAN, human_fields)
        }
        HumanCall::Remove(email) => {
            #[derive(Deserialize)]
            struct Removed {
                human: Human,
                revoked_api_tokens: usize,
                orphaned_agents: Vec<warden_core::AgentName>,
                revoked_tasks: usize,
            }
            let v = client.delete(&["v1", HUMANS, &email]).await?;
            output::one(format, v, "human removal answer", |r: &Removed| {
                Fields::new()
                    .add("removed", r.human.email.to_string())
                    .add("revoked_api_tokens", r.revoked_api_tokens.to_string())
                    .add("suspended_agents", list(&r.orphaned_agents))
                    .add("revoked_tasks", r.revoked_tasks.to_string())
                    .render()
            })
        }
        HumanCall::TokenCreate(email, body, out) => {
            let out = out.map(|p| NewSecretFile::create(&p, "API token")).transpose()?;
            let v = client.post(&["v1", HUMANS, &email, TOKENS], &body).await?;
            created_token(format, v, out)
        }
        HumanCall::TokenList(email) => {
            let v = client.get(&["v1", HUMANS, &email, TOKENS], &[]).await?;
            let now = chrono::Utc::now();
            output::many(
                format,
                v,
                TOKENS,
                "API tokens",
                &["ID", "LABEL", "STATUS", "CREATED", "EXPIRES"],
                |t: &ApiTokenInfo| {
                    vec![
                        t.id.to_string(),
                        t.label.clone(),
                        token_status(t, now).to_owned(),
                        time(&t.created_at),
                        time(&t.expires_at),
                    ]
                },
            )
        }
        HumanCall::TokenRevoke(id) => {
            let v = client.delete(&["v1", TOKENS, &id]).await?;
            output::one(format, v, TOKEN, |t: &ApiTokenInfo| {
                token_fields(t, chrono::Utc::now()).render()
            })
        }
    }
}

fn human_fields(h: &Human) -> String {
    Fields::new()
        .add("email", h.email.to_string())
        .add("display_name", h.display_name.as_str())
        .add("roles", list(&h.roles))
        .add("created_at", time(&h.created_at))
        .add("created_by", h.created_by.clone())
        .render()
}

fn token_status(t: &ApiTokenInfo, now: chrono::DateTime<chrono::Utc>) -> &'static str {
    if t.revoked_at.is_some() {
        "revoked"
    } else if t.unusable_at(now).is_some() {
        "expired"
    } else {
        "active"
    }
}

fn token_fields(t: &ApiTokenInfo, now: chrono::DateTime<chrono::Utc>) -> Fields {
    let mut f = Fields::new();
    f.add("id", t.id.to_string())
        .add("human", t.human.to_string())
        .add("label", t.label.clone())
        .add("status", token_status(t, now))
        .add("created_at", time(&t.created_at))
        .add("created_by", t.created_by.clone())
        .add("expires_at", time(&t.expires_at));
    if let Some(at) = &t.revoked_at {
        f.add("revoked_at", time(at));
        f.add("revoked_by", t.revoked_by.clone().unwrap_or_default());
    }
    f
}

/// The answer to `POST /v1/humans/{email}/tokens`.
#[derive(Deserialize)]
struct CreatedToken {
    token: String,
    info: ApiTokenInfo,
}

/// Prints a new token. JSON mode prints the whole response. Table mode says on stderr that the token is
/// shown only once (with its id and expiry), and puts the token alone on stdout, so that
/// `warden human token create ... > file` captures exactly the token.
fn created_token(format: Format, mut v: Value, out: Option<NewSecretFile>) -> anyhow::Result<()> {
    if let Some(out) = out {
        let created: CreatedToken = output::decode(v.clone(), "new API token")?;
        let file = out
            .write(&warden_core::Secret::new(created.token))?
            .display()
            .to_string();
        if let Some(obj) = v.as_object_mut() {
            obj.remove("token");
            obj.insert("token_file".into(), json!(file));
        }
        return output::one(format, v, TOKEN, |_: &Value| {
            format!(
                "API token {} for {} written to {file}, expires {}\n",
                created.info.id,
                created.info.human,
                time(&created.info.expires_at)
            )
        });
    }
    if format == Format::Json {
        return output::one(format, v, TOKEN, |_: &Value| String::new());
    }
    let created: CreatedToken = output::decode(v, "new API token")?;
    eprintln!(
        "API token {} for {} created, expires {}. It is shown only once, below; store it now:",
        created.info.id,
        created.info.human,
        time(&created.info.expires_at)
    );
    output::stdout(&format!("{}\n", created.token)).context("printing the token")
}

async fn whoami(client: &Client, format: Format) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct WhoAmI {
        human: Human,
        token: ApiTokenInfo,
    }
    let v = client.get(&["v1", "whoami"], &[]).await?;
    output::one(format, v, "whoami answer", |w: &WhoAmI| {
        Fields::new()
            .add("email", w.human.email.to_string())
            .add("display_name", w.human.display_name.as_str())
            .add("roles", list(&w.human.roles))
            .add("token_id", w.token.id.to_string())
            .add("token_label", w.token.label.clone())
            .add("token_expires_at", time(&w.token.expires_at))
            .render()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Duration, Utc};
    use warden_core::Email;

    fn token(revoked: bool, expires_in: Duration) -> ApiTokenInfo {
        let now = Utc::now();
        ApiTokenInfo {
            id: "1b4e28ba-2fa1-11d2-883f-0016d3cca427".parse().unwrap(),
            human: Email::parse("a@example.com").unwrap(),
            label: "ci".into(),
            created_at: now,
            created_by: "admin@example.com".into(),
            expires_at: now + expires_in,
            revoked_at: revoked.then_some(now),
            revoked_by: revoked.then(|| "admin@example.com".into()),
            minted_by: None,
            personal: false,
        }
    }

    #[test]
    fn token_states() {
        let now = Utc::now();
        assert_eq!(token_status(&token(false, Duration::days(1)), now), "active");
        assert_eq!(token_status(&token(false, Duration::days(-1)), now), "expired");
        assert_eq!(token_status(&token(true, Duration::days(1)), now), "revoked");
        let shown = token_fields(&token(true, Duration::days(1)), now).render();
        assert!(shown.contains("status:     revoked\n"), "{shown}");
        assert!(shown.contains("revoked_by: admin@example.com\n"), "{shown}");
    }
}
