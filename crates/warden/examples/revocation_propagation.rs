//! Revocation propagation benchmark: how long a task token ended on one Warden node keeps working on
//! another node of the same deployment (two nodes, one PostgreSQL database).
//!
//! ```sh
//! cargo run --release -p warden --example revocation_propagation -- --iterations 200
//! cargo run --release -p warden --example revocation_propagation -- --change narrow-upstream
//! cargo run --release -p warden --example revocation_propagation -- --database postgres://warden@db/empty_db
//! ```
//!
//! It starts two Warden nodes as separate processes (this program re-run as `__node`, which calls
//! `warden_server::run`, the same function as `warden serve`) on one database, both with the same
//! public URL, as behind a load balancer. Then, for each iteration:
//!
//! 1. the agent starts a task on node A (RFC 8693 exchange of a fresh assertion);
//! 2. node B accepts its token at `GET /v1/task` (which also puts the task in B's cache);
//! 3. an admin ends the task on node A (`POST /v1/tasks/{id}/end`), or, with `--change`, changes the
//!    agent in a way that narrows it (takes away the upstream the task names, removes an owner,
//!    changes its model: `PATCH /v1/agents/bench-bot`);
//! 4. node B is polled with the token until it answers 401.
//!
//! Reported: the time from A's answer to the end request until B's first refusal ("after ack"), and from
//! sending the end request ("after request"), as p50/p90/p99/max. Both nodes trust a cached task state
//! for 60 s (`revocation_cache_ttl_ms`), so a refusal within that time can only come from the store's
//! revocation event (PostgreSQL `NOTIFY`), not from a cache entry expiring. A poll's own round trip
//! (~0.2-1 ms) bounds the resolution.
//!
//! The database: `--database URL` names an empty database (a URL with a password goes in
//! `WARDEN_DATABASE_URL` instead, never the command line); without it, a fresh database on a throwaway
//! server (`WARDEN_TEST_PG_URL`, or one this program starts, as the tests do). The loop is bounded by
//! `--iterations` and `--max-seconds`, each poll loop by `--timeout-ms`; all traffic goes to 127.0.0.1.

use std::io::{BufRead as _, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::Utc;
use clap::Parser;
use serde_json::{Value, json};
use warden_identity::{SigningKey, create_assertion};

/// The hidden first argument that makes this program a Warden node.
const NODE: &str = "__node";
const READY_LINE: &str = "warden: listening on ";
const PUBLIC_URL: &str = "http://warden.bench.test";
/// The agent's two owners.
const OWNERS: [&str; 2] = ["owner@bench.test", "second@bench.test"];

#[derive(Debug, Parser)]
#[command(about = "Measures how fast a task ended on one Warden node stops working on another.")]
struct Args {
    /// PostgreSQL URL of an empty database, without a password (else set WARDEN_DATABASE_URL).
    /// Default: a fresh database on a throwaway server, like the tests.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Tasks to start and end.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    iterations: u32,
    /// Pause between two polls of node B, microseconds (0: poll back to back).
    #[arg(long, default_value_t = 1000)]
    poll_interval_us: u64,
    /// Longest wait for node B to refuse one ended task, milliseconds; longer counts as a failure.
    #[arg(long, default_value_t = 5000)]
    timeout_ms: u64,
    /// Stop starting iterations after this many seconds.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// What node A is asked to do to stop the task: end it (`end`), or change the agent in a way that
    /// narrows it — take away the upstream the task names (`narrow-upstream`), remove one of its two
    /// owners (`remove-owner`), change its model (`change-model`). The change is undone (not timed)
    /// before the next iteration.
    #[arg(long, value_enum, default_value_t = Stop::End)]
    change: Stop,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Stop {
    End,
    NarrowUpstream,
    RemoveOwner,
    ChangeModel,
}

fn main() -> anyhow::Result<()> {
    let mut argv = std::env::args_os();
    if argv.nth(1).is_some_and(|a| a == NODE) {
        let data_dir = argv.next().map(PathBuf::from).context("__node DATA_DIR CONFIG")?;
        let config = argv.next().map(PathBuf::from).context("__node DATA_DIR CONFIG")?;
        return tokio::runtime::Runtime::new()?.block_on(warden_server::run(warden_server::ServeOptions {
            config: Some(config),
            data_dir: Some(data_dir),
            listen: Some("127.0.0.1:0".into()),
            database: None,
        }));
    }
    let args = Args::parse();
    // One thread: the measuring loop sleeps between polls with `std::thread::sleep`, which is precise
    // to tens of microseconds, where tokio's timer rounds up to whole milliseconds.
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(bench(args))
}

/// A node: the child process, its URL and its output.
struct Node {
    child: Child,
    url: String,
    data_dir: PathBuf,
    log: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Node {
    fn start(name: &str, database: &str) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let data_dir = dir.path().join("data");
        let config = dir.path().join("warden.toml");
        std::fs::write(
            &config,
            format!(
                "public_url = \"{PUBLIC_URL}\"\n\n[log]\nlevel = \"warn\"\n\n[tokens]\nrevocation_cache_ttl_ms = 60000\n\n[policy]\nbootstrap_dir = {:?}\n",
                std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../policies/default")
            ),
        )?;
        let mut child = Command::new(std::env::current_exe()?)
            .arg(NODE)
            .arg(&data_dir)
            .arg(&config)
            .env("WARDEN_DATABASE_URL", database)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting a node")?;
        let stderr = child.stderr.take().context("piped stderr")?;
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Some(at) = line.find(READY_LINE) {
                    let _ = tx.send(line[at + READY_LINE.len()..].trim().to_owned());
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let mut node = Node {
            child,
            url: String::new(),
            data_dir,
            log,
            _dir: dir,
        };
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(url) => node.url = url,
            Err(_) => bail!("node {name} did not start; its output:\n{}", node.log()),
        }
        Ok(node)
    }

    fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The bootstrap admin token, written by the first node on an empty database.
    fn admin_token(&self) -> anyhow::Result<String> {
        let file = self.data_dir.join("admin.token");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !file.exists() {
            if Instant::now() > deadline {
                bail!(
                    "node A wrote no bootstrap admin token: is the database empty? Give --database an empty \
                     database"
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(std::fs::read_to_string(file)?.trim().to_owned())
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Sends a request; the JSON answer if its status is `want`, else an error with the body.
async fn expect(req: reqwest::RequestBuilder, want: u16, what: &str) -> anyhow::Result<Value> {
    let r = req.send().await.with_context(|| what.to_owned())?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    if status != want {
        bail!("{what}: HTTP {status} (expected {want}): {body}");
    }
    Ok(body)
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let database = match args.database.clone() {
        Some(url) => url,
        None => match std::env::var("WARDEN_DATABASE_URL") {
            Ok(url) if !url.is_empty() => url,
            _ => warden_store::testing::fresh_postgres_url().await,
        },
    };
    let a = Node::start("A", &database)?;
    let admin = a.admin_token()?;
    let b = Node::start("B", &database)?;
    let result = measure(&args, &a, &b, &admin).await;
    if result.is_err() {
        eprintln!("--- node A ---\n{}\n--- node B ---\n{}", a.log(), b.log());
    }
    result
}

async fn measure(args: &Args, a: &Node, b: &Node, admin: &str) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    // Two owners, an upstream, an agent allowed that upstream with its own key, active.
    for owner in OWNERS {
        expect(
            http.post(a.endpoint("/v1/humans"))
                .bearer_auth(admin)
                .json(&json!({"email": owner, "display_name": "Bench Owner", "roles": ["owner"]})),
            201,
            "adding an owner",
        )
        .await?;
    }
    expect(
        http.post(a.endpoint("/v1/upstreams"))
            .bearer_auth(admin)
            .json(&json!({
                "name": "crm", "kind": "mcp", "url": "https://crm.bench.test/mcp", "environment": "staging",
                "owner": OWNERS[0], "sensitivity": "internal",
            })),
        201,
        "registering the upstream",
    )
    .await?;
    let reg = expect(
        http.post(a.endpoint("/v1/agents"))
            .bearer_auth(admin)
            .json(&json!({
                "name": "bench-bot", "owners": OWNERS, "environment": "staging",
                "model": "bench/model@1", "allowed_upstreams": ["crm"],
            })),
        201,
        "registering the agent",
    )
    .await?;
    let join = reg["join_token"].as_str().context("join_token")?;
    let spiffe = reg["spiffe_id"].as_str().context("spiffe_id")?.to_owned();
    let key = SigningKey::generate(Utc::now());
    expect(
        http.post(b.endpoint("/v1/enroll"))
            .json(&json!({"join_token": join, "public_key": key.public().to_jwk()})),
        200,
        "enrolling",
    )
    .await?;
    expect(
        http.post(a.endpoint("/v1/agents/bench-bot/activate"))
            .bearer_auth(admin)
            .json(&json!({})),
        200,
        "activating",
    )
    .await?;
    let meta = expect(
        http.get(a.endpoint("/.well-known/oauth-authorization-server")),
        200,
        "discovery",
    )
    .await?;
    let token_endpoint = meta["token_endpoint"]
        .as_str()
        .context("token_endpoint")?
        .to_owned();
    let details =
        json!([{"type": "warden_task", "purpose": "benchmark", "task_type": "bench", "upstreams": ["crm"]}])
            .to_string();

    println!(
        "revocation propagation ({:?}): 2 nodes ({} and {}) on one PostgreSQL database; up to {} iterations; \
         polling node B every {} us",
        args.change, a.url, b.url, args.iterations, args.poll_interval_us
    );
    let started = Instant::now();
    let timeout = Duration::from_millis(args.timeout_ms);
    let pause = Duration::from_micros(args.poll_interval_us);
    let mut after_ack = Vec::new();
    let mut after_request = Vec::new();
    let mut end_round_trips = Vec::new();
    let mut first_poll_refused = 0u32;
    let mut polls_total = 0u64;
    let mut timeouts = 0u32;
    for i in 0..args.iterations {
        if started.elapsed() > Duration::from_secs(args.max_seconds) {
            println!(
                "stopping after {i} iterations: --max-seconds {} reached",
                args.max_seconds
            );
            break;
        }
        let assertion = create_assertion(&key, &spiffe, &token_endpoint, Utc::now(), 60)
            .map_err(|e| anyhow!("assertion: {e}"))?;
        let issued = expect(
            http.post(a.endpoint("/v1/token")).form(&[
                ("grant_type", "urn:ietf:params:oauth:grant-type:token-exchange"),
                ("subject_token", assertion.expose().as_str()),
                ("subject_token_type", "urn:ietf:params:oauth:token-type:jwt"),
                ("authorization_details", details.as_str()),
            ]),
            200,
            "starting a task on A",
        )
        .await?;
        let token = issued["access_token"].as_str().context("access_token")?;
        let task = issued["task_id"].as_str().context("task_id")?;
        let on_b = || http.get(b.endpoint("/v1/task")).bearer_auth(token);
        expect(on_b(), 200, "using the token on B").await?;

        let agent = a.endpoint("/v1/agents/bench-bot");
        let stop = match args.change {
            Stop::End => http
                .post(a.endpoint(&format!("/v1/tasks/{task}/end")))
                .json(&json!({"reason": "benchmark"})),
            Stop::NarrowUpstream => http.patch(&agent).json(&json!({"allowed_upstreams": []})),
            Stop::RemoveOwner => http.patch(&agent).json(&json!({"owners": [OWNERS[0]]})),
            Stop::ChangeModel => http
                .patch(&agent)
                .json(&json!({"model": format!("bench/model@{}", i + 2)})),
        };
        let t0 = Instant::now();
        expect(stop.bearer_auth(admin), 200, "stopping the task on A").await?;
        let t1 = Instant::now();
        let mut polls = 0u32;
        let refused_at = loop {
            let r = on_b().send().await.context("polling B")?;
            polls += 1;
            let now = Instant::now();
            match r.status().as_u16() {
                401 => break Some(now),
                200 if now - t1 < timeout => {}
                200 => break None,
                other => bail!("polling B: unexpected HTTP {other}"),
            }
            if pause.is_zero() {
                tokio::task::yield_now().await;
            } else {
                std::thread::sleep(pause);
            }
        };
        // Undo the change (not timed): the next task needs the agent as it was.
        let undo = match args.change {
            Stop::End => None,
            Stop::NarrowUpstream => Some(http.patch(&agent).json(&json!({"allowed_upstreams": ["crm"]}))),
            Stop::RemoveOwner => Some(http.patch(&agent).json(&json!({"owners": OWNERS}))),
            Stop::ChangeModel => Some(
                http.post(a.endpoint("/v1/agents/bench-bot/activate"))
                    .json(&json!({})),
            ),
        };
        if let Some(undo) = undo {
            expect(undo.bearer_auth(admin), 200, "undoing the change on A").await?;
        }
        polls_total += u64::from(polls);
        end_round_trips.push(t1 - t0);
        match refused_at {
            Some(t2) => {
                after_ack.push(t2 - t1);
                after_request.push(t2 - t0);
                if polls == 1 {
                    first_poll_refused += 1;
                }
            }
            None => timeouts += 1,
        }
    }
    let n = after_ack.len() + timeouts as usize;
    println!(
        "{n} iterations in {:.1} s; {timeouts} timed out (B still accepted after {} ms); B refused at the \
         first poll in {first_poll_refused}; {:.1} polls per iteration",
        started.elapsed().as_secs_f64(),
        args.timeout_ms,
        polls_total as f64 / n.max(1) as f64
    );
    println!(
        "{:<40} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "ms", "p50", "p90", "p99", "max", "mean"
    );
    for (label, samples) in [
        ("B refuses, after A acknowledged the end", &mut after_ack),
        ("B refuses, after the end was sent to A", &mut after_request),
        ("end request round trip on A", &mut end_round_trips),
    ] {
        println!("{label:<40} {}", summary(samples));
    }
    if timeouts > 0 {
        bail!(
            "{timeouts} of {n} ended tasks were still accepted by node B after {} ms",
            args.timeout_ms
        );
    }
    Ok(())
}

/// p50, p90, p99, max and mean of `samples`, in milliseconds (nearest-rank percentiles).
fn summary(samples: &mut [Duration]) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let rank = |p: f64| {
        let i = ((p / 100.0) * samples.len() as f64).ceil() as usize;
        ms(samples[i.clamp(1, samples.len()) - 1])
    };
    let mean = samples.iter().map(|d| ms(*d)).sum::<f64>() / samples.len() as f64;
    format!(
        "{:>9.3} {:>9.3} {:>9.3} {:>9.3} {:>9.3}",
        rank(50.0),
        rank(90.0),
        rank(99.0),
        ms(samples[samples.len() - 1]),
        mean
    )
}
