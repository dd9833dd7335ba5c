//! Traffic that keeps account: workers send decisions to a running `warden serve` until stopped, and
//! remember for every request what came back — acknowledged (with the ledger sequence number when
//! the answer names one), refused (status, JSON-RPC code), or no answer at all — and when. Crash
//! tests then hold the ledger against what was acknowledged ([`assert_in_ledger`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

/// What a worker sends, over and over.
#[derive(Debug, Clone)]
pub enum Op {
    /// `POST /v1/authorize` for a read of `upstream`: acknowledged by a 200 allowing it, with the
    /// ledger sequence number in `warden-ledger-seq`.
    Authorize { upstream: String },
    /// A `tools/call` of `tool` through the gateway (`POST /mcp/{upstream}`): acknowledged by its
    /// result.
    Call { upstream: String, tool: String },
}

/// What came back.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// Allowed and answered: the action happened (or may happen).
    Acked { seq: Option<u64> },
    /// A refusal: the HTTP status, and the JSON-RPC error code of a gateway answer.
    Refused {
        status: u16,
        code: Option<i64>,
        body: String,
    },
    /// No answer (connection refused or cut, timeout).
    Lost(String),
}

/// One request and its answer.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Its `x-request-id`.
    pub id: String,
    pub op: &'static str,
    pub sent: Instant,
    pub answered: Instant,
    pub answer: Answer,
}

impl Outcome {
    pub fn acked(&self) -> bool {
        matches!(self.answer, Answer::Acked { .. })
    }

    pub fn latency(&self) -> Duration {
        self.answered - self.sent
    }
}

/// Workers sending requests until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// Starts `workers` workers per entry of `ops`, each sending that op to `base_url` with the task
    /// token `token` in a loop; request ids are `<label>-<op index>-<worker>-<n>`.
    pub fn start(base_url: &str, token: &str, ops: &[Op], workers: usize, label: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .expect("HTTP client");
        let mut handles = Vec::new();
        for (o, op) in ops.iter().enumerate() {
            for w in 0..workers {
                let (http, stop, acked, answered, outcomes) = (
                    http.clone(),
                    stop.clone(),
                    acked.clone(),
                    answered.clone(),
                    outcomes.clone(),
                );
                let (op, token) = (op.clone(), token.to_owned());
                let prefix = format!("{label}-{o}-{w}");
                let base = base_url.trim_end_matches('/').to_owned();
                handles.push(tokio::spawn(async move {
                    let mut n = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        let id = format!("{prefix}-{n}");
                        n += 1;
                        let sent = Instant::now();
                        let (name, answer) = send(&http, &base, &token, &op, &id, n).await;
                        match &answer {
                            Answer::Acked { .. } => {
                                acked.fetch_add(1, Ordering::Relaxed);
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            Answer::Refused { .. } => {
                                answered.fetch_add(1, Ordering::Relaxed);
                            }
                            // Nobody listening (killed): do not spin.
                            Answer::Lost(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                        }
                        let o = Outcome {
                            id,
                            op: name,
                            sent,
                            answered: Instant::now(),
                            answer,
                        };
                        outcomes.lock().unwrap().push(o);
                    }
                }));
            }
        }
        Load {
            stop,
            acked,
            answered,
            outcomes,
            workers: handles,
        }
    }

    /// Requests acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    /// Requests answered (acknowledged or refused) so far.
    pub fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Waits until at least `n` requests are acknowledged; panics after `within`.
    pub async fn wait_acked(&self, n: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.acked() < n {
            assert!(
                Instant::now() < deadline,
                "only {} requests acknowledged within {within:?} (wanted {n})",
                self.acked()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The outcomes so far.
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.outcomes.lock().unwrap().clone()
    }

    /// Waits until `done(outcomes so far)` holds; panics with `what` after `within`.
    pub async fn wait_for(&self, what: &str, within: Duration, done: impl Fn(&[Outcome]) -> bool) {
        let deadline = Instant::now() + within;
        while !done(&self.outcomes()) {
            assert!(Instant::now() < deadline, "{what}: not within {within:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the workers (each finishes the request it is in) and returns every outcome.
    pub async fn stop(self) -> Vec<Outcome> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            w.await.expect("a load worker panicked");
        }
        self.outcomes.lock().unwrap().clone()
    }
}

async fn send(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    op: &Op,
    id: &str,
    n: u64,
) -> (&'static str, Answer) {
    let lost = |e: reqwest::Error| Answer::Lost(e.to_string());
    match op {
        Op::Authorize { upstream } => {
            let r = http
                .post(format!("{base}/v1/authorize"))
                .bearer_auth(token)
                .header("x-request-id", id)
                .json(&json!({"action": "read", "resource": {"upstream": upstream}}))
                .send()
                .await;
            let r = match r {
                Ok(r) => r,
                Err(e) => return ("authorize", lost(e)),
            };
            let status = r.status().as_u16();
            let seq = r
                .headers()
                .get("warden-ledger-seq")
                .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
            let body = match r.text().await {
                Ok(b) => b,
                Err(e) => return ("authorize", lost(e)),
            };
            let allowed = serde_json::from_str::<Value>(&body).is_ok_and(|v| v["outcome"] == "allow");
            let answer = if status == 200 && allowed {
                Answer::Acked { seq }
            } else {
                Answer::Refused {
                    status,
                    code: None,
                    body,
                }
            };
            ("authorize", answer)
        }
        Op::Call { upstream, tool } => {
            let msg = json!({"jsonrpc": "2.0", "id": n, "method": "tools/call",
                             "params": {"name": tool, "arguments": {"n": n}}});
            let r = http
                .post(format!("{base}/mcp/{upstream}"))
                .bearer_auth(token)
                .header("x-request-id", id)
                .header("accept", "application/json, text/event-stream")
                .header("mcp-protocol-version", "2025-06-18")
                .json(&msg)
                .send()
                .await;
            let r = match r {
                Ok(r) => r,
                Err(e) => return ("call", lost(e)),
            };
            let status = r.status().as_u16();
            let body = match r.text().await {
                Ok(b) => b,
                Err(e) => return ("call", lost(e)),
            };
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            let answer = if status == 200 && v["id"] == n && v.get("result").is_some() {
                Answer::Acked { seq: None }
            } else {
                Answer::Refused {
                    status,
                    code: v["error"]["code"].as_i64(),
                    body,
                }
            };
            ("call", answer)
        }
    }
}

/// Asserts that every acknowledged outcome is in the ledger `entries` (as [`super::Server::ledger`]
/// returns them): an acknowledged `/v1/authorize` at exactly the sequence number it was answered
/// with, under its request id, as an allow; an acknowledged gateway call as an allowing `decision`
/// entry under its request id. No sequence number was acknowledged twice. Returns how many were
/// checked.
#[track_caller]
pub fn assert_in_ledger(entries: &[Value], outcomes: &[Outcome]) -> usize {
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "the ledger has no gaps");
    }
    let mut by_request: HashMap<&str, Vec<&Value>> = HashMap::new();
    for e in entries {
        if let Some(id) = e["entry"]["body"]["request_id"].as_str() {
            by_request.entry(id).or_default().push(&e["entry"]);
        }
    }
    let mut seqs = HashSet::new();
    let mut checked = 0;
    for o in outcomes.iter().filter(|o| o.acked()) {
        checked += 1;
        match (&o.answer, o.op) {
            (Answer::Acked { seq: Some(seq) }, _) => {
                assert!(seqs.insert(*seq), "sequence number {seq} was acknowledged twice");
                let e = &entries.get(*seq as usize).unwrap_or_else(|| {
                    panic!(
                        "acknowledged entry {seq} ({}) is missing: the ledger has {} entries",
                        o.id,
                        entries.len()
                    )
                })["entry"];
                assert_eq!(
                    e["body"]["request_id"],
                    o.id.as_str(),
                    "entry {seq} is not the decision acknowledged with it: {e}"
                );
                assert_eq!(e["body"]["outcome"], "allow", "entry {seq}: {e}");
            }
            (Answer::Acked { seq: None }, "authorize") => {
                panic!("{} was allowed without a ledger sequence number", o.id)
            }
            _ => {
                let found = by_request.get(o.id.as_str()).is_some_and(|es| {
                    es.iter()
                        .any(|e| e["kind"] == "decision" && e["body"]["outcome"] == "allow")
                });
                assert!(
                    found,
                    "the answered {} {} has no allowing decision in the ledger (entries under its id: {:?})",
                    o.op,
                    o.id,
                    by_request.get(o.id.as_str())
                );
            }
        }
    }
    checked
}

/// The entries recorded under request id `id`.
pub fn entries_for<'e>(entries: &'e [Value], id: &str) -> Vec<&'e Value> {
    entries
        .iter()
        .map(|e| &e["entry"])
        .filter(|e| e["body"]["request_id"] == id)
        .collect()
}
