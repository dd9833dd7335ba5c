//! MCP load harness: `tools/call` throughput and latency against one streamable-HTTP MCP endpoint
//! (an upstream directly, or Warden's `/mcp/{upstream}` in front of it), for the gateway benchmark.
//!
//! ```sh
//! cargo build --release -p warden-server --examples
//! target/release/examples/mcp_echo &                       # prints http://127.0.0.1:PORT/mcp
//! target/release/examples/mcp_load --url http://127.0.0.1:PORT/mcp --concurrency 16 --duration-secs 10
//! target/release/examples/mcp_load --url http://127.0.0.1:8700/mcp/echo --token-file task.tt \
//!     --concurrency 1 --tool echo --args '{"text":"hi"}'
//! ```
//!
//! Each of `--concurrency` workers is one MCP client with its own HTTP connection: it initializes
//! its own session (`initialize`, `notifications/initialized`), then calls `--tool` with `--args`
//! back to back for `--duration-secs` (at most 300), then ends its session (DELETE). JSON and SSE
//! responses are both understood. A call counts as an error when the HTTP status is not 2xx, the
//! answer is a JSON-RPC error, or the tool result has `isError: true`.
//!
//! Prints one JSON line: `calls` (successful), `errors`, `throughput_per_s` (successful calls per
//! second), and the latency of successful calls in microseconds (`p50_us`, `p90_us`, `p99_us`,
//! `max_us`), with `first_error` when there was one. Only loopback URLs are accepted.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue};
use serde_json::{Value, json};

const MAX_DURATION_SECS: u64 = 300;
const MAX_CONCURRENCY: usize = 1024;
const PROTOCOL_VERSION: &str = "2025-11-25";
const USAGE: &str = "usage: mcp_load --url http://127.0.0.1:PORT/mcp [--token TOKEN | --token-file FILE]
               [--concurrency N] [--duration-secs S] [--tool NAME] [--args JSON]
  --url             the MCP endpoint (loopback only)
  --token           bearer token sent as `Authorization: Bearer TOKEN` (or --token-file, or MCP_LOAD_TOKEN)
  --concurrency     clients calling at once (default 1, at most 1024)
  --duration-secs   how long to call (default 10, at most 300)
  --tool, --args    the tool and its arguments (default echo, {\"text\":\"hi\"})";

#[derive(Debug, Clone)]
struct Options {
    url: url::Url,
    token: Option<String>,
    concurrency: usize,
    duration: Duration,
    tool: String,
    args: Value,
}

fn parse_args() -> anyhow::Result<Options> {
    let mut url = None;
    let mut token = std::env::var("MCP_LOAD_TOKEN").ok().filter(|t| !t.is_empty());
    let mut concurrency = 1usize;
    let mut duration_secs = 10u64;
    let mut tool = "echo".to_owned();
    let mut args_json = r#"{"text":"hi"}"#.to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .with_context(|| format!("{name} needs a value\n{USAGE}"))
        };
        match arg.as_str() {
            "--url" => url = Some(value("--url")?),
            "--token" => token = Some(value("--token")?),
            "--token-file" => {
                let path = value("--token-file")?;
                let text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
                token = Some(text.trim().to_owned());
            }
            "--concurrency" => {
                concurrency = value("--concurrency")?
                    .parse()
                    .context("--concurrency: not a number")?
            }
            "--duration-secs" => {
                duration_secs = value("--duration-secs")?
                    .parse()
                    .context("--duration-secs: not a number")?
            }
            "--tool" => tool = value("--tool")?,
            "--args" => args_json = value("--args")?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    let url = url.with_context(|| format!("--url is required\n{USAGE}"))?;
    let url = url::Url::parse(&url).with_context(|| format!("--url {url:?}"))?;
    check_loopback(&url)?;
    if !(1..=MAX_CONCURRENCY).contains(&concurrency) {
        bail!("--concurrency must be 1 to {MAX_CONCURRENCY}");
    }
    if !(1..=MAX_DURATION_SECS).contains(&duration_secs) {
        bail!("--duration-secs must be 1 to {MAX_DURATION_SECS}");
    }
    let args: Value = serde_json::from_str(&args_json).context("--args is not JSON")?;
    if !args.is_object() {
        bail!("--args must be a JSON object");
    }
    Ok(Options {
        url,
        token,
        concurrency,
        duration: Duration::from_secs(duration_secs),
        tool,
        args,
    })
}

/// This harness only talks to this machine: `http` to `localhost` or a loopback address.
fn check_loopback(url: &url::Url) -> anyhow::Result<()> {
    if url.scheme() != "http" {
        bail!(
            "--url must be http:// (a loopback endpoint), not {}",
            url.scheme()
        );
    }
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    };
    if !loopback {
        bail!(
            "--url must be a loopback address (127.0.0.0/8, ::1 or localhost): this harness sends load to this machine only"
        );
    }
    Ok(())
}

/// What one worker measured.
#[derive(Debug, Default)]
struct Tally {
    latencies_us: Vec<u64>,
    errors: u64,
    first_error: Option<String>,
}

impl Tally {
    fn error(&mut self, message: String) {
        self.errors += 1;
        self.first_error.get_or_insert(message);
    }
}

/// The JSON-RPC message answering `id` in a response body, JSON or SSE.
fn answer_in(content_type: &str, body: &str, id: u64) -> anyhow::Result<Value> {
    if content_type.starts_with("text/event-stream") {
        // Events are separated by blank lines; a message's JSON is in its `data:` lines.
        for event in body.split("\n\n") {
            let data: Vec<&str> = event
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .map(|d| d.strip_prefix(' ').unwrap_or(d))
                .collect();
            // An event without data (the priming event servers send for resumption) carries no message.
            if data.iter().all(|d| d.trim().is_empty()) {
                continue;
            }
            let message: Value = serde_json::from_str(&data.join("\n")).context("SSE data is not JSON")?;
            if message["id"] == id {
                return Ok(message);
            }
        }
        bail!("no answer to request {id} in the SSE stream")
    } else {
        serde_json::from_str(body).context("the answer is not JSON")
    }
}

/// One MCP client: its own connection and session.
#[derive(Debug)]
struct Worker {
    http: reqwest::Client,
    url: url::Url,
    session: Option<HeaderValue>,
    next_id: u64,
}

impl Worker {
    fn new(options: &Options) -> anyhow::Result<Worker> {
        let mut headers = HeaderMap::new();
        headers.insert(
            ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(token) = &options.token {
            let mut value = HeaderValue::from_str(&format!("Bearer {token}"))
                .context("the token is not a valid header value")?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .no_proxy()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Worker {
            http,
            url: options.url.clone(),
            session: None,
            next_id: 1,
        })
    }

    /// POSTs one message; returns the status, the content type and the body.
    async fn post(&self, message: &Value) -> anyhow::Result<(reqwest::StatusCode, HeaderMap, String)> {
        let mut request = self.http.post(self.url.clone()).body(message.to_string());
        if let Some(session) = &self.session {
            request = request
                .header("mcp-session-id", session)
                .header("mcp-protocol-version", PROTOCOL_VERSION);
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.text().await?;
        Ok((status, headers, body))
    }

    /// Sends a request; returns its result, or fails on an HTTP or JSON-RPC error.
    async fn request(&mut self, method: &str, params: Value) -> anyhow::Result<(Value, HeaderMap)> {
        let id = self.next_id;
        self.next_id += 1;
        let message = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        let (status, headers, body) = self.post(&message).await?;
        if !status.is_success() {
            bail!(
                "{method}: HTTP {status}: {}",
                body.chars().take(200).collect::<String>()
            );
        }
        let content_type = headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let answer = answer_in(content_type, &body, id)?;
        if let Some(error) = answer.get("error") {
            bail!("{method}: JSON-RPC error {error}");
        }
        Ok((answer["result"].clone(), headers))
    }

    async fn initialize(&mut self) -> anyhow::Result<()> {
        let (_, headers) = self
            .request(
                "initialize",
                json!({
                    "protocolVersion": PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": {"name": "warden-mcp-load", "version": env!("CARGO_PKG_VERSION")},
                }),
            )
            .await?;
        self.session = headers.get("mcp-session-id").cloned();
        let (status, _, body) = self
            .post(&json!({"jsonrpc": "2.0", "method": "notifications/initialized"}))
            .await?;
        if !status.is_success() {
            bail!("notifications/initialized: HTTP {status}: {body}");
        }
        Ok(())
    }

    async fn call(&mut self, tool: &str, args: &Value) -> anyhow::Result<()> {
        let (result, _) = self
            .request("tools/call", json!({"name": tool, "arguments": args}))
            .await?;
        if result["isError"] == true {
            bail!("tools/call {tool}: tool error: {}", result["content"]);
        }
        Ok(())
    }

    async fn end_session(&self) {
        if let Some(session) = &self.session {
            let _ = self
                .http
                .delete(self.url.clone())
                .header("mcp-session-id", session)
                .send()
                .await;
        }
    }
}

async fn run_worker(options: Options, start: Instant) -> Tally {
    let mut tally = Tally::default();
    let mut worker = match Worker::new(&options) {
        Ok(w) => w,
        Err(e) => {
            tally.error(format!("{e:#}"));
            return tally;
        }
    };
    if let Err(e) = worker.initialize().await {
        tally.error(format!("initialize: {e:#}"));
        return tally;
    }
    let deadline = start + options.duration;
    while Instant::now() < deadline {
        let began = Instant::now();
        match worker.call(&options.tool, &options.args).await {
            Ok(()) => tally
                .latencies_us
                .push(u64::try_from(began.elapsed().as_micros()).unwrap_or(u64::MAX)),
            Err(e) => {
                tally.error(format!("{e:#}"));
                // A failing endpoint fails fast: don't spin on it.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    worker.end_session().await;
    tally
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Errors end the program with one line on stderr (no backtrace, whatever RUST_BACKTRACE says).
fn main() -> std::process::ExitCode {
    let run = tokio::runtime::Runtime::new()
        .map_err(anyhow::Error::from)
        .and_then(|rt| rt.block_on(run()));
    match run {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mcp_load: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let options = parse_args()?;
    let start = Instant::now();
    let workers: Vec<_> = (0..options.concurrency)
        .map(|_| tokio::spawn(run_worker(options.clone(), start)))
        .collect();
    let mut latencies = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    for worker in workers {
        let tally = worker.await.context("a worker panicked")?;
        latencies.extend(tally.latencies_us);
        errors += tally.errors;
        if first_error.is_none() {
            first_error = tally.first_error;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    latencies.sort_unstable();
    let calls = latencies.len();
    let mut report = json!({
        "url": options.url.as_str(),
        "tool": options.tool,
        "concurrency": options.concurrency,
        "duration_secs": options.duration.as_secs(),
        "calls": calls,
        "errors": errors,
        "throughput_per_s": ((calls as f64 / elapsed) * 10.0).round() / 10.0,
        "p50_us": percentile(&latencies, 50.0),
        "p90_us": percentile(&latencies, 90.0),
        "p99_us": percentile(&latencies, 99.0),
        "max_us": latencies.last().copied().unwrap_or(0),
    });
    if let Some(e) = first_error {
        report["first_error"] = json!(e);
    }
    println!("{report}");
    Ok(())
}
