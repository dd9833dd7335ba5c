//! The agent side of the CLI: `agent enroll`, `task start|renew|delegate|current` and
//! `task end --task-token-file`. These verbs act as an agent, not as a human, and use no API token: the
//! agent proves who it is with an assertion (RFC 7523 style) signed by its own key, exchanges it for a
//! task token (RFC 8693), and presents the task token, with a DPoP proof (RFC 9449) when the token is
//! bound to a key.
//!
//! Addresses and identities are kept apart. Requests always go to `--server`; the names a token or
//! proof must carry (the assertion's audience, a DPoP proof's `htu`) come from the server's RFC 8414
//! discovery document, because behind a load balancer or with several nodes the server's public URL
//! (its `issuer`) is not the address this client connects to.
//!
//! Secrets: the private key is generated here and written to a new file of mode 0600 before the
//! public key is sent; join tokens and task tokens are read from files (or the environment for the join
//! token), never from the command line, and are printed only when printing them once is the point.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use chrono::{DateTime, Utc};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderValue};
use serde::Deserialize;
use serde_json::{Value, json};
use warden_core::Secret;
use warden_identity::{
    GRANT_TYPE_TOKEN_EXCHANGE, SigningKey, TOKEN_TYPE_JWT, TOKEN_TYPE_TASK, TaskIntent, create_assertion,
    create_dpop_proof,
};

use crate::cli::{
    AgentId, EnrollArgs, Format, TaskDelegateArgs, TaskRenewArgs, TaskStartArgs, TaskTokenArgs,
};
use crate::client::{ApiError, Client, Server, TokenSource, authorization, printable, read_secret_file};
use crate::output::{self, Fields, list, time};
use crate::request;
use crate::secret_file::NewSecretFile;

/// Lifetime of the assertions this client makes: used at once, so short.
const ASSERTION_LIFETIME_SECS: i64 = 60;

/// The environment variable that may hold a join token (instead of `--join-token-file`).
pub const JOIN_TOKEN_ENV: &str = "WARDEN_JOIN_TOKEN";

/// What the server's discovery document says about its identity.
#[derive(Debug, Clone, Deserialize)]
pub struct Discovery {
    /// The server's public URL: `iss` of task tokens, base of DPoP `htu`s.
    pub issuer: String,
    /// The audience of assertions and the `htu` of token-endpoint DPoP proofs.
    pub token_endpoint: String,
    #[serde(rename = "warden_trust_domain")]
    pub trust_domain: String,
}

impl Discovery {
    /// Fetches `/.well-known/oauth-authorization-server`.
    pub async fn fetch(client: &Client) -> anyhow::Result<Self> {
        let v = client
            .get(&[".well-known", "oauth-authorization-server"], &[])
            .await
            .context("reading the server's discovery document")?;
        output::decode(v, "discovery document (RFC 8414 metadata)")
    }

    /// The agent's SPIFFE ID: as given, or `spiffe://<trust domain>/agent/<name>` for a bare name.
    pub fn spiffe_id(&self, id: &AgentId) -> anyhow::Result<String> {
        match id {
            AgentId::Name(name) => Ok(format!("spiffe://{}/agent/{name}", self.trust_domain)),
            AgentId::Spiffe(s) if s.trust_domain() == self.trust_domain => Ok(s.as_str().to_owned()),
            AgentId::Spiffe(s) => bail!(
                "--agent-id: `{}` is not in this server's trust domain `{}`",
                s.as_str(),
                printable(&self.trust_domain)
            ),
        }
    }

    /// The URL a DPoP proof names (`htu`) for an API path: the path below the issuer.
    pub fn resource_url(&self, path: &str) -> String {
        format!("{}{path}", self.issuer.trim_end_matches('/'))
    }
}

/// Loads an agent's private key file; `flag` names where it came from in errors.
pub fn load_key(path: &Path, flag: &str) -> anyhow::Result<SigningKey> {
    SigningKey::load(path).map_err(|e| anyhow!("{flag}: {e}"))
}

/// A task token read from `--task-token-file`, with its (unverified) claims. The claims are only read
/// to decide what this client sends (a DPoP proof, defaults for a delegation); the server verifies.
#[derive(Debug)]
pub struct TaskToken {
    pub token: Secret<String>,
    pub claims: Value,
    pub source: TokenSource,
}

impl TaskToken {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let token = read_secret_file(path, "task token file")?;
        let claims = peek_claims(token.expose()).ok_or_else(|| {
            anyhow!(
                "the task token file {} does not hold a task token",
                path.display()
            )
        })?;
        Ok(Self {
            token,
            claims,
            source: TokenSource::TaskTokenFile(path.to_owned()),
        })
    }

    /// The thumbprint of the key the token is bound to (`cnf.jkt`), if it is DPoP-bound.
    pub fn bound_to(&self) -> Option<&str> {
        self.claims.get("cnf")?.get("jkt")?.as_str()
    }

    pub fn subject(&self) -> &str {
        self.claims.get("sub").and_then(Value::as_str).unwrap_or("")
    }

    /// The key to make DPoP proofs with: `key` when the token is bound to it, none when the token is not
    /// bound; an error when it is bound and `key` is missing or another key.
    pub fn proof_key<'k>(
        &self,
        key: Option<&'k SigningKey>,
        flag: &str,
    ) -> anyhow::Result<Option<&'k SigningKey>> {
        let Some(jkt) = self.bound_to() else {
            return Ok(None);
        };
        match key {
            None => bail!(
                "the task token is DPoP-bound to key `{}`; pass {flag} FILE with that key",
                printable(jkt)
            ),
            Some(k) if k.kid() == jkt => Ok(Some(k)),
            Some(k) => bail!(
                "the task token is DPoP-bound to key `{}`, but {flag} holds key `{}`",
                printable(jkt),
                k.kid()
            ),
        }
    }
}

/// The claims of a compact JWS, decoded without verifying anything.
fn peek_claims(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_, payload, _, None) = (parts.next()?, parts.next()?, parts.next()?, parts.next()) else {
        return None;
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .ok()?;
    serde_json::from_slice::<Value>(&bytes)
        .ok()
        .filter(Value::is_object)
}

/// A client for the agent-side endpoints, and the server's discovery document.
pub async fn connect(server: &Server) -> anyhow::Result<(Client, Discovery)> {
    let client = Client::anonymous(server)?;
    let discovery = Discovery::fetch(&client).await?;
    Ok((client, discovery))
}

pub(crate) fn assertion(key: &SigningKey, spiffe_id: &str, d: &Discovery) -> anyhow::Result<Secret<String>> {
    create_assertion(
        key,
        spiffe_id,
        &d.token_endpoint,
        Utc::now(),
        ASSERTION_LIFETIME_SECS,
    )
    .map_err(|e| anyhow!("making the agent's assertion: {e}"))
}

/// A DPoP proof for `method url`, bound to `access_token` when given.
fn dpop_proof(
    key: &SigningKey,
    method: &Method,
    url: &str,
    access_token: Option<&Secret<String>>,
) -> anyhow::Result<Secret<String>> {
    create_dpop_proof(
        key,
        method.as_str(),
        url,
        access_token.map(|t| t.expose().as_str()),
        Utc::now(),
    )
    .map_err(|e| anyhow!("making the DPoP proof: {e}"))
}

fn header(value: &Secret<String>, what: &str) -> anyhow::Result<HeaderValue> {
    let mut v = HeaderValue::from_str(value.expose())
        .map_err(|_| anyhow!("the {what} cannot be sent in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// `POST /v1/token` (RFC 8693 token exchange), with a DPoP proof when given.
pub(crate) async fn exchange(
    client: &Client,
    form: &[(&str, &str)],
    proof: Option<&Secret<String>>,
) -> anyhow::Result<Value> {
    let (mut req, url) = client.request(Method::POST, &["v1", "token"])?;
    req = req.form(form);
    if let Some(p) = proof {
        req = req.header("dpop", header(p, "DPoP proof")?);
    }
    client.execute(&Method::POST, &url, req, None).await
}

/// Calls an agent-side endpoint with a task token (`Bearer`, or `DPoP` with a proof by `proof_key`).
pub async fn with_task_token(
    client: &Client,
    d: &Discovery,
    method: Method,
    segments: &[&str],
    token: &TaskToken,
    proof_key: Option<&SigningKey>,
    body: Option<&Value>,
) -> anyhow::Result<Value> {
    let (mut req, url) = client.request(method.clone(), segments)?;
    let scheme = match proof_key {
        Some(key) => {
            // The path below the server's public URL, whatever prefix --server itself has.
            let htu = d.resource_url(&format!("/{}", segments.join("/")));
            let proof = dpop_proof(key, &method, &htu, Some(&token.token))?;
            req = req.header("dpop", header(&proof, "DPoP proof")?);
            "DPoP"
        }
        None => "Bearer",
    };
    req = req.header(AUTHORIZATION, authorization(scheme, &token.token, &token.source)?);
    if let Some(b) = body {
        req = req.json(b);
    }
    client.execute(&method, &url, req, Some(&token.source)).await
}

// ---------------------------------------------------------------------------------------------------
// Verbs

/// `warden agent enroll`.
pub async fn enroll(server: &Server, format: Format, args: EnrollArgs) -> anyhow::Result<()> {
    let join = match &args.join_token_file {
        Some(path) => read_secret_file(path, "join token file")?,
        None => match std::env::var(JOIN_TOKEN_ENV) {
            Ok(v) if !v.trim().is_empty() => Secret::new(v.trim().to_owned()),
            Ok(_) => bail!("{JOIN_TOKEN_ENV} is set but empty"),
            Err(_) => bail!(
                "no join token: pass --join-token-file FILE (the file `warden agent register` or \
                 `warden agent join-token` wrote), or set {JOIN_TOKEN_ENV}"
            ),
        },
    };
    let source = match &args.join_token_file {
        Some(p) => format!("the join token file {}", p.display()),
        None => JOIN_TOKEN_ENV.to_owned(),
    };
    warden_core::token::check_join_shape(join.expose())
        .map_err(|m| anyhow!("{source} does not hold a join token: {m}"))?;
    let client = Client::anonymous(server)?;

    // The private key is safely on disk before the server learns the public key: an enrollment never
    // leaves the agent with a registered key it does not have.
    let pem_file = args
        .pem_out
        .as_deref()
        .map(|p| crate::secret_file::NewSecretFile::create(p, "private key (PEM)"))
        .transpose()?;
    let key = SigningKey::generate(Utc::now());
    key.save(&args.key_out).map_err(|e| anyhow!("--key-out: {e}"))?;
    if let Some(file) = pem_file {
        let pem = key.to_pkcs8_pem();
        if let Err(e) = file.write(&Secret::new(pem.trim_end().to_owned())) {
            let _ = std::fs::remove_file(&args.key_out);
            return Err(e.context("--pem-out"));
        }
    }
    let remove_keys = || {
        let _ = std::fs::remove_file(&args.key_out);
        if let Some(p) = &args.pem_out {
            let _ = std::fs::remove_file(p);
        }
    };
    let body = json!({"join_token": join.expose(), "public_key": key.public().to_jwk()});
    let answer = client.post(&["v1", "enroll"], &body).await;
    let mut v = match answer {
        Ok(v) => v,
        // The server refused: it recorded nothing, so the key is of no use.
        Err(e) if e.downcast_ref::<ApiError>().is_some() => {
            remove_keys();
            return Err(e.context("enrolling"));
        }
        // No answer: the server may have enrolled the key, so it stays.
        Err(e) => {
            return Err(e.context(format!(
                "enrolling (the new key stays in {} in case the server recorded it before the failure)",
                args.key_out.display()
            )));
        }
    };
    let key_file = args.key_out.display().to_string();
    if let Some(obj) = v.as_object_mut() {
        obj.insert("key_file".into(), json!(key_file));
    }
    #[derive(Deserialize)]
    struct Enrolled {
        agent: String,
        spiffe_id: String,
        kid: String,
        issuer: String,
        token_endpoint: String,
    }
    output::one(format, v, "enrollment answer", |e: &Enrolled| {
        Fields::new()
            .add("agent", e.agent.clone())
            .add("spiffe_id", e.spiffe_id.clone())
            .add("kid", e.kid.clone())
            .add("key_file", key_file.clone())
            .add("issuer", e.issuer.clone())
            .add("token_endpoint", e.token_endpoint.clone())
            .render()
    })
}

/// `warden task start`.
pub async fn start(server: &Server, format: Format, args: TaskStartArgs) -> anyhow::Result<()> {
    let intent = request::task_intent(&args.intent, None)?;
    let key = load_key(&args.agent.key, "--key")?;
    let out = open_out(args.token_out.as_deref())?;
    let (client, d) = connect(server).await?;
    let spiffe = d.spiffe_id(&args.agent.agent_id)?;
    let subject = assertion(&key, &spiffe, &d)?;
    let details = intent.to_authorization_details().to_string();
    let proof = if args.dpop {
        Some(dpop_proof(&key, &Method::POST, &d.token_endpoint, None)?)
    } else {
        None
    };
    let form = [
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", subject.expose().as_str()),
        ("subject_token_type", TOKEN_TYPE_JWT),
        ("requested_token_type", TOKEN_TYPE_TASK),
        ("authorization_details", details.as_str()),
    ];
    let v = exchange(&client, &form, proof.as_ref()).await?;
    issued(format, v, out, "started")
}

/// `warden task renew`.
pub async fn renew(server: &Server, format: Format, args: TaskRenewArgs) -> anyhow::Result<()> {
    let key = load_key(&args.agent.key, "--key")?;
    let token = TaskToken::read(&args.task_token_file)?;
    let proof_key = token.proof_key(Some(&key), "--key")?;
    let out = open_out(args.token_out.as_deref())?;
    let (client, d) = connect(server).await?;
    let spiffe = d.spiffe_id(&args.agent.agent_id)?;
    if token.subject() != spiffe {
        bail!(
            "the task token belongs to `{}`, not `{spiffe}`; only its own agent renews a task token \
             (to hand work to another agent, use `warden task delegate`)",
            printable(token.subject())
        );
    }
    let actor = assertion(&key, &spiffe, &d)?;
    let proof = match proof_key {
        Some(k) => Some(dpop_proof(
            k,
            &Method::POST,
            &d.token_endpoint,
            Some(&token.token),
        )?),
        None => None,
    };
    let form = [
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", token.token.expose().as_str()),
        ("subject_token_type", TOKEN_TYPE_TASK),
        ("actor_token", actor.expose().as_str()),
        ("actor_token_type", TOKEN_TYPE_JWT),
        ("requested_token_type", TOKEN_TYPE_TASK),
    ];
    let v = exchange(&client, &form, proof.as_ref()).await?;
    issued(format, v, out, "renewed")
}

/// `warden task delegate`.
pub async fn delegate(server: &Server, format: Format, args: TaskDelegateArgs) -> anyhow::Result<()> {
    let parent = TaskToken::read(&args.task_token_file)?;
    let intent = if request::intent_given(&args.intent) {
        let parent_intent = parent
            .claims
            .get("authorization_details")
            .map(Value::to_string)
            .and_then(|d| TaskIntent::from_authorization_details(&d).ok());
        let defaults = parent_intent
            .as_ref()
            .map(|p| (p.purpose.as_str(), p.task_type.as_str()));
        Some(request::task_intent(&args.intent, defaults)?)
    } else {
        None
    };
    let key = load_key(&args.agent.key, "--key")?;
    let parent_key = match &args.parent_key {
        Some(p) => Some(load_key(p, "--parent-key")?),
        None => None,
    };
    let parent_proof_key = parent.proof_key(parent_key.as_ref(), "--parent-key")?;
    let out = open_out(args.token_out.as_deref())?;
    let (client, d) = connect(server).await?;
    let spiffe = d.spiffe_id(&args.agent.agent_id)?;
    if parent.subject() == spiffe {
        bail!(
            "the task token already belongs to `{spiffe}`; an agent does not delegate to itself (to get a \
             fresh token, use `warden task renew`)"
        );
    }
    let actor = assertion(&key, &spiffe, &d)?;
    // A bound parent: the `DPoP` header proves the parent's key, and the child's token is always
    // bound to the child's key, proven in `actor_dpop` (the server refuses a bearer child of a bound
    // parent). An unbound parent: the child is bound only with --dpop, by the header.
    let (proof, actor_proof) = match (parent_proof_key, args.dpop) {
        (Some(k), _) => (
            Some(dpop_proof(
                k,
                &Method::POST,
                &d.token_endpoint,
                Some(&parent.token),
            )?),
            Some(dpop_proof(&key, &Method::POST, &d.token_endpoint, None)?),
        ),
        (None, true) => (
            Some(dpop_proof(&key, &Method::POST, &d.token_endpoint, None)?),
            None,
        ),
        (None, false) => (None, None),
    };
    let details = intent.map(|i| i.to_authorization_details().to_string());
    let mut form = vec![
        ("grant_type", GRANT_TYPE_TOKEN_EXCHANGE),
        ("subject_token", parent.token.expose().as_str()),
        ("subject_token_type", TOKEN_TYPE_TASK),
        ("actor_token", actor.expose().as_str()),
        ("actor_token_type", TOKEN_TYPE_JWT),
        ("requested_token_type", TOKEN_TYPE_TASK),
    ];
    if let Some(d) = &details {
        form.push(("authorization_details", d.as_str()));
    }
    if let Some(p) = &actor_proof {
        form.push(("actor_dpop", p.expose().as_str()));
    }
    let v = exchange(&client, &form, proof.as_ref()).await?;
    issued(format, v, out, "delegated")
}

/// `warden task current`.
pub async fn current(server: &Server, format: Format, args: TaskTokenArgs) -> anyhow::Result<()> {
    let token = TaskToken::read(&args.task_token_file)?;
    let key = match &args.key {
        Some(p) => Some(load_key(p, "--key")?),
        None => None,
    };
    let proof_key = token.proof_key(key.as_ref(), "--key")?;
    let (client, d) = connect(server).await?;
    let v = with_task_token(&client, &d, Method::GET, &["v1", "task"], &token, proof_key, None).await?;
    #[derive(Deserialize)]
    struct Current {
        task: warden_core::Task,
        sub: String,
        act: Option<Value>,
        exp: i64,
    }
    output::one(format, v, "current task", |c: &Current| {
        let mut f = task_fields(&c.task);
        f.add("token_subject", c.sub.clone())
            .add("token_acting_for", acting_for(c.act.as_ref()))
            .add(
                "token_expires_at",
                DateTime::<Utc>::from_timestamp(c.exp, 0)
                    .map(|t| time(&t))
                    .unwrap_or_default(),
            );
        f.render()
    })
}

/// `warden task end --task-token-file`.
pub async fn end(
    server: &Server,
    format: Format,
    token_file: &Path,
    key: Option<&Path>,
    reason: Option<String>,
) -> anyhow::Result<()> {
    let token = TaskToken::read(token_file)?;
    let key = match key {
        Some(p) => Some(load_key(p, "--key")?),
        None => None,
    };
    let proof_key = token.proof_key(key.as_ref(), "--key")?;
    let (client, d) = connect(server).await?;
    let body = reason.map(|r| json!({ "reason": r }));
    let v = with_task_token(
        &client,
        &d,
        Method::POST,
        &["v1", "task", "end"],
        &token,
        proof_key,
        body.as_ref(),
    )
    .await?;
    stopped(format, v)
}

// ---------------------------------------------------------------------------------------------------
// Output

fn open_out(path: Option<&Path>) -> anyhow::Result<Option<NewSecretFile>> {
    path.map(|p| NewSecretFile::create(p, "task token")).transpose()
}

/// The answer of `POST /v1/token`.
#[derive(Deserialize)]
struct Exchanged {
    access_token: String,
    token_type: String,
    expires_in: i64,
    task_id: String,
    #[serde(default)]
    authorization_details: Vec<Value>,
}

/// Prints a newly issued task token. With `out`, the token goes to that file and stdout gets the rest
/// (as `key: value` lines, or the JSON answer without `access_token` and with `token_file`). Without,
/// JSON mode prints the whole answer, and table mode prints a notice on stderr and the token alone on
/// stdout, so that `warden task start ... > FILE` captures exactly the token.
fn issued(format: Format, mut v: Value, out: Option<NewSecretFile>, verb: &str) -> anyhow::Result<()> {
    let answer: Exchanged = output::decode(v.clone(), "token exchange answer")?;
    let token = Secret::new(answer.access_token);
    let expires_at = Utc::now() + chrono::Duration::seconds(answer.expires_in);
    let scope = answer
        .authorization_details
        .first()
        .map(|d| d.to_string())
        .and_then(|d| TaskIntent::from_authorization_details(&format!("[{d}]")).ok());
    let Some(out) = out else {
        if format == Format::Json {
            return output::stdout(&format!(
                "{}\n",
                serde_json::to_string_pretty(&v).context("formatting JSON")?
            ));
        }
        eprintln!(
            "task {} {verb}; its {} task token expires {}. It is shown only once, below; store it now:",
            printable(&answer.task_id),
            printable(&answer.token_type),
            time(&expires_at)
        );
        return output::stdout(&format!("{}\n", token.expose()));
    };
    let written: PathBuf = out.write(&token)?;
    let token_file = written.display().to_string();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("access_token");
        obj.insert("token_file".into(), json!(token_file));
    }
    output::one(format, v, "token exchange answer", |_: &Value| {
        let mut f = Fields::new();
        f.add("task_id", answer.task_id.clone())
            .add("token_type", answer.token_type.clone())
            .add("expires_at", time(&expires_at))
            .add("token_file", token_file.clone());
        if let Some(s) = &scope {
            f.add("purpose", s.purpose.clone())
                .add("task_type", s.task_type.clone())
                .add("upstreams", list(&s.upstreams))
                .add("tools", s.tools.join(", "))
                .add("datasets", s.datasets.join(", "));
            if !s.resources.is_empty() {
                f.add("resources", s.resources.join(", "));
            }
            if !s.prompts.is_empty() {
                f.add("prompts", s.prompts.join(", "));
            }
        }
        f.render()
    })
}

/// `key: value` lines for a task.
pub fn task_fields(t: &warden_core::Task) -> Fields {
    let intent = t
        .intent
        .as_array()
        .and_then(|a| a.first())
        .cloned()
        .unwrap_or(Value::Null);
    let strings = |name: &str| {
        intent
            .get(name)
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let text = |name: &str| {
        intent
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let mut f = Fields::new();
    f.add("id", t.id.to_string())
        .add("agent", t.agent.to_string())
        .add("agent_spiffe_id", t.agent_spiffe_id.clone())
        .add("state", t.state.to_string())
        .add("purpose", text("purpose"))
        .add("task_type", text("task_type"))
        .add("upstreams", strings("upstreams"))
        .add("tools", strings("tools"))
        .add("datasets", strings("datasets"));
    for name in ["resources", "prompts"] {
        let declared = strings(name);
        if !declared.is_empty() {
            f.add(name, declared);
        }
    }
    f.add(
        "parent_id",
        t.parent_id.map(|p| p.to_string()).unwrap_or_default(),
    )
    .add("depth", t.depth.to_string())
    .add("acting_for", acting_for(t.act.as_ref()))
    .add("dpop_bound_to", t.cnf_jkt.clone().unwrap_or_default())
    .add("created_at", time(&t.created_at))
    .add("created_by", t.created_by.clone())
    .add("expires_at", time(&t.expires_at));
    if let Some(at) = &t.ended_at {
        f.add("ended_at", time(at))
            .add("ended_by", t.ended_by.clone().unwrap_or_default())
            .add("end_reason", t.end_reason.clone().unwrap_or_default());
    }
    f
}

/// The delegation chain of an `act` claim, nearest first: `spiffe://…/a <- spiffe://…/b`.
fn acting_for(act: Option<&Value>) -> String {
    let mut chain = Vec::new();
    let mut next = act;
    while let Some(a) = next {
        match a.get("sub").and_then(Value::as_str) {
            Some(sub) => chain.push(sub.to_owned()),
            None => break,
        }
        next = a.get("act");
    }
    chain.join(" <- ")
}

/// Prints the answer of a task end: the tasks that stopped (a held end is printed by `output::one`).
pub fn stopped(format: Format, v: Value) -> anyhow::Result<()> {
    #[derive(Deserialize)]
    struct Stopped {
        stopped: Vec<String>,
    }
    output::one(format, v, "task end answer", |s: &Stopped| {
        Fields::new().add("stopped", s.stopped.join(", ")).render()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_peeked_only_from_compact_jws() {
        let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
        let claims = json!({"sub": "spiffe://warden.local/agent/bot", "cnf": {"jkt": "abc"}});
        let token = format!("{}.{}.sig", b64(&json!({"alg": "EdDSA"})), b64(&claims));
        assert_eq!(peek_claims(&token), Some(claims));
        assert_eq!(peek_claims("a.b"), None);
        assert_eq!(peek_claims(&format!("{token}.extra")), None);
        assert_eq!(peek_claims("a.!!!.c"), None);
        assert_eq!(
            peek_claims(&format!("x.{}.y", b64(&json!([1])))),
            None,
            "claims are an object"
        );
    }

    #[test]
    fn dpop_bound_tokens_need_their_key() {
        let key = SigningKey::generate(Utc::now());
        let other = SigningKey::generate(Utc::now());
        let bound = TaskToken {
            token: Secret::new("t".into()),
            claims: json!({"sub": "s", "cnf": {"jkt": key.kid()}}),
            source: TokenSource::TaskTokenFile("t".into()),
        };
        assert!(bound.proof_key(Some(&key), "--key").unwrap().is_some());
        let e = bound.proof_key(None, "--key").unwrap_err().to_string();
        assert!(e.contains("DPoP-bound") && e.contains("pass --key"), "{e}");
        let e = bound.proof_key(Some(&other), "--key").unwrap_err().to_string();
        assert!(e.contains(other.kid()), "{e}");
        let unbound = TaskToken {
            claims: json!({"sub": "s"}),
            ..bound
        };
        assert!(unbound.proof_key(Some(&key), "--key").unwrap().is_none());
    }

    #[test]
    fn agent_ids_become_spiffe_ids() {
        use crate::cli::FlagValue as _;
        let d = Discovery {
            issuer: "http://warden.test/".into(),
            token_endpoint: "http://warden.test/v1/token".into(),
            trust_domain: "example.org".into(),
        };
        let name = AgentId::parse_flag("billing-bot").unwrap();
        assert_eq!(
            d.spiffe_id(&name).unwrap(),
            "spiffe://example.org/agent/billing-bot"
        );
        let full = AgentId::parse_flag("spiffe://example.org/agent/x").unwrap();
        assert_eq!(d.spiffe_id(&full).unwrap(), "spiffe://example.org/agent/x");
        let foreign = AgentId::parse_flag("spiffe://other.org/agent/x").unwrap();
        assert!(
            d.spiffe_id(&foreign)
                .unwrap_err()
                .to_string()
                .contains("trust domain")
        );
        assert_eq!(d.resource_url("/v1/task"), "http://warden.test/v1/task");
        assert!(AgentId::parse_flag("Bad_Name").is_err());
        assert!(AgentId::parse_flag("spiffe://Bad Domain/x").is_err());
    }

    #[test]
    fn delegation_chains_read_nearest_first() {
        let act = json!({"sub": "spiffe://t/agent/b", "act": {"sub": "spiffe://t/agent/a"}});
        assert_eq!(acting_for(Some(&act)), "spiffe://t/agent/b <- spiffe://t/agent/a");
        assert_eq!(acting_for(None), "");
    }
}
