//! Webhook notifications about human approval requests: one is sent when a request is made and when it
//! is approved, denied or expires, to the webhooks configured in `[[notify.webhook]]`
//! ([`crate::config::WebhookConfig`]), globally or per upstream.
//!
//! # Delivery
//!
//! [`Notifier::notify`] never blocks and never fails: it puts the event on the bounded queue of every
//! webhook that wants it (1024 events each). When a webhook's queue is full — its endpoint is down or
//! slow and the backlog has grown — the event is **dropped for that webhook**: counted in
//! [`WebhookStatus::dropped`] and logged at `error`. Each webhook has its own worker, so a slow or dead
//! webhook never delays the others; a worker sends up to four events at a time, so events to one
//! webhook may arrive out of order (use `kind` and the `X-Warden-Timestamp`).
//!
//! An attempt that fails to connect, times out (`timeout_ms`), or is answered 5xx or 429 is retried
//! after an exponential backoff with jitter (about 0.5 s, 1 s, 2 s, 4 s…, at most 30 s; a 429's
//! `Retry-After` is honoured up to 60 s), up to `max_attempts` attempts. Any other answer that is not 2xx
//! (3xx — redirects are not followed — and 4xx) fails the delivery at once. A failed delivery is counted
//! in [`WebhookStatus::failed`], its error kept in `last_error`, and logged at `error` with the webhook
//! name, the approval id and the delivery id. Events still queued when the server exits are lost.
//!
//! # Request
//!
//! `POST` to the webhook URL, `Content-Type: application/json`, with a Slack-compatible body (an
//! incoming-webhook URL of Slack works as is, and so does anything reading `text`):
//!
//! ```json
//! {
//!   "text": "Approval needed: agent billing-bot wants to write crm (policy production-writes-need-approval) — 0/1 approvals — https://warden.example.com/v1/approvals/ap-1",
//!   "blocks": [{ "type": "section", "text": { "type": "mrkdwn", "text": "*Approval needed* …" } }],
//!   "warden": { "kind": "requested", "approval_id": "ap-1", "agent": "billing-bot", … }
//! }
//! ```
//!
//! `warden` is the [`ApprovalEvent`], field for field. Headers:
//!
//! - `X-Warden-Event`: `approval.requested`, `approval.approved`, `approval.denied` or `approval.expired`;
//! - `X-Warden-Delivery`: a UUID, the same on every attempt of one delivery (deduplicate on it);
//! - `X-Warden-Timestamp`: the Unix time of this attempt, seconds;
//! - `X-Warden-Signature`: `sha256=` and the lowercase hex HMAC-SHA256, keyed with the contents of
//!   `secret_file` (surrounding whitespace trimmed), of `<X-Warden-Timestamp>.<raw body>`.
//!
//! To verify (as with GitHub's and Slack's signatures): recompute the HMAC over the timestamp header, a
//! `.`, and the body bytes exactly as received; compare in constant time; and refuse timestamps more than
//! a few minutes from your clock, so a captured request cannot be replayed later.
//!
//! Secrets: the key is never logged nor printed by `Debug`. Logs and [`WebhookStatus::url`] show the
//! webhook's origin and first path segment only, since services like Slack put a credential in the rest
//! of the path.

use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac as _};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::{Semaphore, mpsc};
use zeroize::Zeroizing;

use crate::config::{WebhookConfig, validate_webhooks};

/// Events waiting for one webhook before new ones are dropped.
const QUEUE: usize = 1024;
/// Deliveries in flight per webhook.
const CONCURRENCY: usize = 4;
/// Shortest key accepted in a `secret_file`.
const MIN_KEY_BYTES: usize = 16;
/// Longest `secret_file` read.
const MAX_KEY_BYTES: u64 = 4096;
/// Longest value of one field in the human-readable text.
const MAX_FIELD_CHARS: usize = 200;
/// Most bytes of an error answer kept in `last_error`.
const MAX_ERROR_BODY: usize = 200;
/// Longest `Retry-After` honoured.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

pub use crate::config::ApprovalEventKind;

/// One notification: the state of an approval request when it was made or decided.
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct ApprovalEvent {
    pub kind: ApprovalEventKind,
    pub approval_id: String,
    pub agent: String,
    pub task: String,
    pub action: String,
    pub resource: String,
    /// Selects the per-upstream webhooks. `None`: only global webhooks (no `upstreams` list) get it.
    pub upstream: Option<String>,
    /// Why approval is needed (policy ids), shown in parentheses after the request.
    pub reason: String,
    pub quorum: u8,
    /// Approvals so far.
    pub approvals: u8,
    /// The human who approved or denied.
    pub decided_by: Option<String>,
    /// A link to the request.
    pub url: String,
    pub expires_at: DateTime<Utc>,
}

/// How deliveries to one webhook are going (since this server started).
#[derive(Clone, Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookStatus {
    pub name: String,
    /// Origin and first path segment (the rest of the path and the query are elided: they may hold a
    /// credential).
    pub url: String,
    /// Events delivered (answered 2xx).
    pub delivered: u64,
    /// Events given up on after their attempts.
    pub failed: u64,
    /// Events dropped because the webhook's queue was full.
    pub dropped: u64,
    pub last_error: Option<String>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub last_success_at: Option<DateTime<Utc>>,
}

/// Tuning that tests shrink.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Tuning {
    pub base_backoff: Duration,
    pub max_backoff: Duration,
    pub queue: usize,
    pub concurrency: usize,
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            base_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            queue: QUEUE,
            concurrency: CONCURRENCY,
        }
    }
}

/// Sends approval events to webhooks. Cheap to clone; the workers stop once every clone is dropped and
/// their queues are drained.
#[derive(Clone)]
pub struct Notifier {
    hooks: Arc<[Hook]>,
}

struct Hook {
    target: Arc<Target>,
    tx: mpsc::Sender<ApprovalEvent>,
}

/// A webhook as its worker sees it.
struct Target {
    name: String,
    url: url::Url,
    /// What logs and the status show of `url`.
    shown_url: String,
    key: Zeroizing<Vec<u8>>,
    upstreams: Vec<String>,
    events: Vec<ApprovalEventKind>,
    max_attempts: u32,
    timeout: Duration,
    stats: Mutex<Stats>,
}

#[derive(Default)]
struct Stats {
    delivered: u64,
    failed: u64,
    dropped: u64,
    last_error: Option<String>,
    last_failure_at: Option<DateTime<Utc>>,
    last_success_at: Option<DateTime<Utc>>,
}

impl fmt::Debug for Notifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "webhooks",
                &self.hooks.iter().map(|h| &*h.target).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook")
            .field("name", &self.name)
            .field("url", &self.shown_url)
            .field("key", &"REDACTED")
            .field("upstreams", &self.upstreams)
            .field("events", &self.events)
            .field("max_attempts", &self.max_attempts)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Checks the webhooks, reads their secret files, and starts one delivery worker per webhook. Must
    /// be called inside a Tokio runtime when `config` is not empty.
    pub fn new(config: &[WebhookConfig]) -> anyhow::Result<Self> {
        Self::with_tuning(config, Tuning::default())
    }

    /// A notifier without webhooks: [`Notifier::notify`] does nothing.
    pub fn disabled() -> Self {
        Self {
            hooks: Arc::from(Vec::new()),
        }
    }

    pub(crate) fn with_tuning(config: &[WebhookConfig], tuning: Tuning) -> anyhow::Result<Self> {
        validate_webhooks(config)?;
        if config.is_empty() {
            return Ok(Self::disabled());
        }
        let runtime = tokio::runtime::Handle::try_current()
            .context("webhook notifications need a Tokio runtime (Notifier::new was called outside one)")?;
        let mut targets = Vec::with_capacity(config.len());
        for (i, c) in config.iter().enumerate() {
            let at = format!("notify.webhook[{i}] (`{}`)", c.name);
            let Some(path) = &c.secret_file else {
                bail!("{at}: secret_file is required");
            };
            let key = read_key(path).with_context(|| format!("{at}: secret_file"))?;
            let url = url::Url::parse(&c.url).with_context(|| format!("{at}: url is not a valid URL"))?;
            let shown_url = shown_url(&url);
            if url.scheme() == "http" && !is_loopback(&url) {
                tracing::warn!(
                    webhook = %c.name, url = %shown_url,
                    "webhook over plain http: approval details travel unencrypted"
                );
            }
            targets.push(Target {
                name: c.name.clone(),
                url,
                shown_url,
                key,
                upstreams: c.upstreams.clone(),
                events: c.events.clone(),
                max_attempts: c.max_attempts,
                timeout: Duration::from_millis(c.timeout_ms),
                stats: Mutex::new(Stats::default()),
            });
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("warden/", env!("CARGO_PKG_VERSION")))
            .build()
            .context("cannot build an HTTP client")?;
        let hooks = targets
            .into_iter()
            .map(|target| {
                let target = Arc::new(target);
                let (tx, rx) = mpsc::channel(tuning.queue.max(1));
                runtime.spawn(worker(target.clone(), client.clone(), rx, tuning));
                Hook { target, tx }
            })
            .collect::<Vec<_>>();
        Ok(Self {
            hooks: Arc::from(hooks),
        })
    }

    /// Queues `event` for every webhook that wants it. Never blocks and never fails: when a webhook's
    /// queue is full, the event is dropped for that webhook, counted in its status and logged at `error`.
    pub fn notify(&self, event: ApprovalEvent) {
        for hook in self.hooks.iter() {
            let t = &hook.target;
            if !t.wants(&event) {
                continue;
            }
            match hook.tx.try_send(event.clone()) {
                Ok(()) => {}
                Err(e) => {
                    let why = match e {
                        mpsc::error::TrySendError::Full(_) => "its queue is full",
                        mpsc::error::TrySendError::Closed(_) => "its worker has stopped",
                    };
                    t.stats().dropped += 1;
                    tracing::error!(
                        webhook = %t.name,
                        approval_id = %event.approval_id,
                        event = event.kind.event_name(),
                        "webhook notification dropped: {why}"
                    );
                }
            }
        }
    }

    /// Delivery counters and the last error of every webhook, in configuration order.
    pub fn status(&self) -> Vec<WebhookStatus> {
        self.hooks
            .iter()
            .map(|h| {
                let t = &h.target;
                let s = t.stats();
                WebhookStatus {
                    name: t.name.clone(),
                    url: t.shown_url.clone(),
                    delivered: s.delivered,
                    failed: s.failed,
                    dropped: s.dropped,
                    last_error: s.last_error.clone(),
                    last_failure_at: s.last_failure_at,
                    last_success_at: s.last_success_at,
                }
            })
            .collect()
    }

    /// Whether any webhook is configured.
    pub fn is_enabled(&self) -> bool {
        !self.hooks.is_empty()
    }
}

impl Target {
    fn wants(&self, event: &ApprovalEvent) -> bool {
        self.events.contains(&event.kind)
            && (self.upstreams.is_empty()
                || event
                    .upstream
                    .as_ref()
                    .is_some_and(|u| self.upstreams.iter().any(|w| w == u)))
    }

    fn stats(&self) -> std::sync::MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Reads an HMAC key; refuses a file other users may read, and keys too short to resist guessing.
fn read_key(path: &std::path::Path) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    use std::io::Read as _;
    use std::os::unix::fs::PermissionsExt as _;
    let file = std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let meta = file
        .metadata()
        .with_context(|| format!("cannot read {}", path.display()))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        bail!(
            "{} is readable by other users (mode {:o}); chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut raw = Zeroizing::new(Vec::new());
    file.take(MAX_KEY_BYTES + 1)
        .read_to_end(&mut raw)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if raw.len() as u64 > MAX_KEY_BYTES {
        bail!("{} is larger than {MAX_KEY_BYTES} bytes", path.display());
    }
    let key = Zeroizing::new(raw.trim_ascii().to_vec());
    if key.len() < MIN_KEY_BYTES {
        bail!(
            "{} holds a key of {} bytes; use at least {MIN_KEY_BYTES} (e.g. `openssl rand -hex 32`)",
            path.display(),
            key.len()
        );
    }
    Ok(key)
}

/// `scheme://host[:port]/first-segment/…`: enough to recognise the endpoint, without the parts that may
/// be a credential.
fn shown_url(url: &url::Url) -> String {
    let mut shown = url.origin().ascii_serialization();
    let mut segments = url
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty());
    if let Some(first) = segments.next() {
        shown.push('/');
        shown.push_str(first);
    }
    if segments.next().is_some() {
        shown.push_str("/…");
    }
    shown
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    }
}

// ---------------------------------------------------------------------------------------------------
// Delivery

async fn worker(
    target: Arc<Target>,
    client: reqwest::Client,
    mut rx: mpsc::Receiver<ApprovalEvent>,
    tuning: Tuning,
) {
    let slots = Arc::new(Semaphore::new(tuning.concurrency.max(1)));
    while let Some(event) = rx.recv().await {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            break;
        };
        let target = target.clone();
        let client = client.clone();
        tokio::spawn(async move {
            deliver(&target, &client, &event, &tuning).await;
            drop(slot);
        });
    }
}

/// How one attempt ended.
enum Outcome {
    Delivered,
    /// Worth another attempt; the server may have said when.
    Retry(String, Option<Duration>),
    GiveUp(String),
}

async fn deliver(target: &Target, client: &reqwest::Client, event: &ApprovalEvent, tuning: &Tuning) {
    let delivery = uuid::Uuid::new_v4();
    let body = match serde_json::to_vec(&payload(event)) {
        Ok(b) => b,
        Err(e) => {
            record_failure(
                target,
                event,
                delivery,
                0,
                format!("cannot encode the event: {e}"),
            );
            return;
        }
    };
    let mut attempt = 0;
    loop {
        attempt += 1;
        let outcome = attempt_once(target, client, event, delivery, &body).await;
        let error = match outcome {
            Outcome::Delivered => {
                let mut s = target.stats();
                s.delivered += 1;
                s.last_success_at = Some(Utc::now());
                drop(s);
                tracing::debug!(
                    webhook = %target.name, approval_id = %event.approval_id, %delivery, attempt,
                    "webhook delivered"
                );
                return;
            }
            Outcome::GiveUp(error) => error,
            Outcome::Retry(error, _) if attempt >= target.max_attempts => error,
            Outcome::Retry(error, retry_after) => {
                let wait = backoff(tuning, attempt, retry_after);
                tracing::warn!(
                    webhook = %target.name, approval_id = %event.approval_id, %delivery, attempt,
                    error = %error, retry_in_ms = wait.as_millis() as u64,
                    "webhook attempt failed; retrying"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        record_failure(target, event, delivery, attempt, error);
        return;
    }
}

fn record_failure(
    target: &Target,
    event: &ApprovalEvent,
    delivery: uuid::Uuid,
    attempts: u32,
    error: String,
) {
    tracing::error!(
        webhook = %target.name, approval_id = %event.approval_id, event = event.kind.event_name(),
        %delivery, attempts, error = %error,
        "webhook delivery failed"
    );
    let mut s = target.stats();
    s.failed += 1;
    s.last_error = Some(error);
    s.last_failure_at = Some(Utc::now());
}

async fn attempt_once(
    target: &Target,
    client: &reqwest::Client,
    event: &ApprovalEvent,
    delivery: uuid::Uuid,
    body: &[u8],
) -> Outcome {
    let timestamp = Utc::now().timestamp().to_string();
    let signature = match sign(&target.key, &timestamp, body) {
        Ok(s) => s,
        Err(e) => return Outcome::GiveUp(e),
    };
    let sent = client
        .post(target.url.clone())
        .timeout(target.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header("X-Warden-Event", event.kind.event_name())
        .header("X-Warden-Delivery", delivery.to_string())
        .header("X-Warden-Timestamp", &timestamp)
        .header("X-Warden-Signature", signature)
        .body(body.to_vec())
        .send()
        .await;
    let mut resp = match sent {
        Ok(r) => r,
        // `without_url`: the URL may hold a credential.
        Err(e) => return Outcome::Retry(error_chain(&e.without_url()), None),
    };
    let status = resp.status();
    if status.is_success() {
        return Outcome::Delivered;
    }
    let retry_after = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(|s| Duration::from_secs(s).min(MAX_RETRY_AFTER));
    // A short excerpt of the answer (Slack explains itself there: `invalid_payload`, `no_service`).
    let excerpt = match tokio::time::timeout(Duration::from_secs(1), resp.chunk()).await {
        Ok(Ok(Some(chunk))) => {
            let text = String::from_utf8_lossy(&chunk[..chunk.len().min(MAX_ERROR_BODY)]);
            let text: String = text
                .chars()
                .map(|c| if c.is_control() { ' ' } else { c })
                .collect();
            let text = text.trim();
            if text.is_empty() {
                String::new()
            } else {
                format!(": {text}")
            }
        }
        _ => String::new(),
    };
    let error = format!("answered HTTP {status}{excerpt}");
    if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
        Outcome::Retry(error, retry_after)
    } else if status.is_redirection() {
        Outcome::GiveUp(format!("{error} (redirects are not followed)"))
    } else {
        Outcome::GiveUp(error)
    }
}

/// `sha256=<hex HMAC-SHA256(key, "<timestamp>.<body>")>`.
fn sign(key: &[u8], timestamp: &str, body: &[u8]) -> Result<String, String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| format!("bad signing key: {e}"))?;
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    Ok(format!("sha256={}", hex::encode(mac.finalize().into_bytes())))
}

/// The wait before attempt `attempt + 1`: `base · 2^(attempt-1)`, capped, with jitter (between half and
/// all of it); at least what a `Retry-After` asked.
fn backoff(tuning: &Tuning, attempt: u32, retry_after: Option<Duration>) -> Duration {
    use rand::Rng as _;
    let exp = tuning
        .base_backoff
        .saturating_mul(1u32 << (attempt.saturating_sub(1)).min(16))
        .min(tuning.max_backoff);
    let jittered = exp.mul_f64(rand::thread_rng().gen_range(0.5..=1.0));
    jittered.max(retry_after.unwrap_or_default())
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_msg = s.to_string();
        if !msg.contains(&s_msg) {
            msg.push_str(": ");
            msg.push_str(&s_msg);
        }
        source = s.source();
    }
    msg
}

// ---------------------------------------------------------------------------------------------------
// Body

#[derive(Serialize)]
struct Payload<'a> {
    text: String,
    blocks: [Block; 1],
    warden: &'a ApprovalEvent,
}

#[derive(Serialize)]
struct Block {
    #[serde(rename = "type")]
    kind: &'static str,
    text: BlockText,
}

#[derive(Serialize)]
struct BlockText {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
}

fn payload(event: &ApprovalEvent) -> Payload<'_> {
    Payload {
        text: summary(event),
        blocks: [Block {
            kind: "section",
            text: BlockText {
                kind: "mrkdwn",
                text: details(event),
            },
        }],
        warden: event,
    }
}

/// A field made safe for Slack mrkdwn: one line, bounded, with `&`, `<` and `>` escaped so a value
/// chosen by an agent cannot become a link or a mention.
fn field(value: &str) -> String {
    let mut out = String::with_capacity(value.len().min(MAX_FIELD_CHARS * 2));
    for (i, c) in value.chars().enumerate() {
        if i == MAX_FIELD_CHARS {
            out.push('…');
            break;
        }
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// The one-line `text`.
fn summary(e: &ApprovalEvent) -> String {
    let agent = field(&e.agent);
    let what = format!("{} {}", field(&e.action), field(&e.resource));
    let why = if e.reason.is_empty() {
        String::new()
    } else {
        format!(" ({})", field(&e.reason))
    };
    let count = format!("{}/{} approvals", e.approvals, e.quorum);
    let by = e.decided_by.as_deref().map(field).unwrap_or_else(|| "?".into());
    let url = field(&e.url);
    match e.kind {
        ApprovalEventKind::Requested => {
            format!("Approval needed: agent {agent} wants to {what}{why} — {count} — {url}")
        }
        ApprovalEventKind::Approved => {
            format!("Approved by {by}: agent {agent} may {what}{why} — {count} — {url}")
        }
        ApprovalEventKind::Denied => {
            format!("Denied by {by}: agent {agent} may not {what}{why} — {count} — {url}")
        }
        ApprovalEventKind::Expired => {
            format!("Expired: agent {agent}'s request to {what}{why} got {count} — {url}")
        }
    }
}

/// The Block Kit section.
fn details(e: &ApprovalEvent) -> String {
    let title = match e.kind {
        ApprovalEventKind::Requested => "Approval needed".to_owned(),
        ApprovalEventKind::Approved => format!(
            "Approved by {}",
            e.decided_by.as_deref().map(field).unwrap_or_else(|| "?".into())
        ),
        ApprovalEventKind::Denied => format!(
            "Denied by {}",
            e.decided_by.as_deref().map(field).unwrap_or_else(|| "?".into())
        ),
        ApprovalEventKind::Expired => "Expired".to_owned(),
    };
    let mut text = format!(
        "*{title}* — <{}|request {}>\n*Agent:* {}   *Task:* {}\n*Action:* {} on {}",
        field(&e.url),
        field(&e.approval_id),
        field(&e.agent),
        field(&e.task),
        field(&e.action),
        field(&e.resource),
    );
    if let Some(u) = &e.upstream {
        text.push_str(&format!("   *Upstream:* {}", field(u)));
    }
    if !e.reason.is_empty() {
        text.push_str(&format!("\n*Why:* {}", field(&e.reason)));
    }
    text.push_str(&format!(
        "\n*Approvals:* {}/{}   *Expires:* {}",
        e.approvals,
        e.quorum,
        e.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
    ));
    text
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;
    use std::os::unix::fs::PermissionsExt as _;
    use std::path::PathBuf;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Instant;

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};

    use super::*;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn fast() -> Tuning {
        Tuning {
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(40),
            ..Tuning::default()
        }
    }

    fn event(kind: ApprovalEventKind, id: &str, upstream: Option<&str>) -> ApprovalEvent {
        ApprovalEvent {
            kind,
            approval_id: id.into(),
            agent: "billing-bot".into(),
            task: "t-42".into(),
            action: "write".into(),
            resource: "crm".into(),
            upstream: upstream.map(Into::into),
            reason: "policy production-writes-need-approval".into(),
            quorum: 1,
            approvals: 0,
            decided_by: None,
            url: format!("https://warden/v1/approvals/{id}"),
            expires_at: DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
                .expect("date")
                .with_timezone(&Utc),
        }
    }

    struct Keys(tempfile::TempDir);

    impl Keys {
        fn new() -> Self {
            Self(tempfile::tempdir().expect("tempdir"))
        }

        fn file(&self, name: &str, content: &str, mode: u32) -> PathBuf {
            let p = self.0.path().join(name);
            std::fs::write(&p, content).expect("write");
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).expect("chmod");
            p
        }

        fn key(&self) -> PathBuf {
            self.file("hook.key", &format!("{KEY}\n"), 0o600)
        }
    }

    fn hook(name: &str, url: &str, secret: &std::path::Path) -> WebhookConfig {
        WebhookConfig {
            name: name.into(),
            url: url.into(),
            secret_file: Some(secret.to_owned()),
            upstreams: Vec::new(),
            events: ApprovalEventKind::ALL.to_vec(),
            max_attempts: 5,
            timeout_ms: 5000,
        }
    }

    struct Hit {
        headers: HeaderMap,
        body: Bytes,
        at: Instant,
    }

    struct Behaviour {
        /// Answers to give first, in order; then `then`.
        script: Mutex<VecDeque<u16>>,
        then: u16,
        delay: Duration,
        hits: AtomicUsize,
        tx: mpsc::UnboundedSender<Hit>,
    }

    struct Receiver {
        url: String,
        rx: mpsc::UnboundedReceiver<Hit>,
        state: Arc<Behaviour>,
    }

    impl Receiver {
        async fn next(&mut self) -> Hit {
            tokio::time::timeout(Duration::from_secs(10), self.rx.recv())
                .await
                .expect("a delivery within 10 s")
                .expect("receiver open")
        }

        fn hits(&self) -> usize {
            self.state.hits.load(Ordering::SeqCst)
        }

        /// Nothing more arrives within `d`.
        async fn quiet_for(&mut self, d: Duration) {
            if let Ok(Some(hit)) = tokio::time::timeout(d, self.rx.recv()).await {
                panic!("unexpected delivery: {}", String::from_utf8_lossy(&hit.body));
            }
        }
    }

    async fn receive(
        state: State<Arc<Behaviour>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> (StatusCode, HeaderMap, &'static str) {
        state.hits.fetch_add(1, Ordering::SeqCst);
        let _ = state.tx.send(Hit {
            headers,
            body,
            at: Instant::now(),
        });
        tokio::time::sleep(state.delay).await;
        let code = state
            .script
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
            .unwrap_or(state.then);
        let mut h = HeaderMap::new();
        if code == 302 {
            h.insert(
                "location",
                "http://127.0.0.1:1/elsewhere".parse().expect("header"),
            );
        }
        (StatusCode::from_u16(code).expect("status"), h, "invalid_payload")
    }

    async fn receiver(script: &[u16], then: u16, delay: Duration) -> Receiver {
        let (tx, rx) = mpsc::unbounded_channel();
        let state = Arc::new(Behaviour {
            script: Mutex::new(script.iter().copied().collect()),
            then,
            delay,
            hits: AtomicUsize::new(0),
            tx,
        });
        let app = axum::Router::new()
            .route("/hook/secret-token", axum::routing::post(receive))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver {
            url: format!("http://{addr}/hook/secret-token?x=1"),
            rx,
            state,
        }
    }

    async fn status_until(n: &Notifier, name: &str, done: impl Fn(&WebhookStatus) -> bool) -> WebhookStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let s = n
                .status()
                .into_iter()
                .find(|s| s.name == name)
                .expect("webhook in status");
            if done(&s) {
                return s;
            }
            assert!(Instant::now() < deadline, "status never settled: {s:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn json(hit: &Hit) -> serde_json::Value {
        serde_json::from_slice(&hit.body).expect("JSON body")
    }

    fn header<'a>(hit: &'a Hit, name: &str) -> &'a str {
        hit.headers
            .get(name)
            .unwrap_or_else(|| panic!("header {name}"))
            .to_str()
            .expect("ascii header")
    }

    #[tokio::test]
    async fn delivers_a_signed_slack_compatible_body() {
        let keys = Keys::new();
        let mut r = receiver(&[], 200, Duration::ZERO).await;
        let n = Notifier::with_tuning(&[hook("ops", &r.url, &keys.key())], fast()).expect("notifier");
        n.notify(event(ApprovalEventKind::Requested, "ap-1", Some("crm")));
        let hit = r.next().await;

        // The signature, recomputed as a receiver would.
        let ts = header(&hit, "x-warden-timestamp");
        let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).expect("key");
        mac.update(format!("{ts}.").as_bytes());
        mac.update(&hit.body);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(header(&hit, "x-warden-signature"), want);
        let age = Utc::now().timestamp() - ts.parse::<i64>().expect("unix seconds");
        assert!((0..5).contains(&age), "timestamp is now: {ts}");
        assert_eq!(header(&hit, "content-type"), "application/json");
        assert_eq!(header(&hit, "x-warden-event"), "approval.requested");
        uuid::Uuid::parse_str(header(&hit, "x-warden-delivery")).expect("delivery id is a UUID");

        let body = json(&hit);
        assert_eq!(
            body["text"],
            "Approval needed: agent billing-bot wants to write crm (policy production-writes-need-approval) \
             — 0/1 approvals — https://warden/v1/approvals/ap-1"
        );
        assert_eq!(body["blocks"][0]["type"], "section");
        assert_eq!(body["blocks"][0]["text"]["type"], "mrkdwn");
        let block = body["blocks"][0]["text"]["text"].as_str().expect("block text");
        assert!(
            block.contains("<https://warden/v1/approvals/ap-1|request ap-1>"),
            "{block}"
        );
        assert_eq!(body["warden"]["approval_id"], "ap-1");
        assert_eq!(body["warden"]["kind"], "requested");
        assert_eq!(body["warden"]["upstream"], "crm");
        assert_eq!(body["warden"]["expires_at"], "2030-01-02T03:04:05Z");

        let s = status_until(&n, "ops", |s| s.delivered == 1).await;
        assert_eq!((s.failed, s.dropped), (0, 0));
        assert!(s.last_success_at.is_some() && s.last_error.is_none());
        assert!(
            s.url.starts_with("http://127.0.0.1:") && s.url.ends_with("/hook/…"),
            "{}",
            s.url
        );
        assert!(
            !s.url.contains("secret-token") && !s.url.contains("x=1"),
            "{}",
            s.url
        );
    }

    #[tokio::test]
    async fn webhooks_are_selected_by_upstream() {
        let keys = Keys::new();
        let key = keys.key();
        let mut crm = receiver(&[], 200, Duration::ZERO).await;
        let mut global = receiver(&[], 200, Duration::ZERO).await;
        let crm_only = WebhookConfig {
            upstreams: vec!["crm".into()],
            ..hook("crm", &crm.url, &key)
        };
        let n = Notifier::with_tuning(&[crm_only, hook("all", &global.url, &key)], fast()).expect("notifier");
        n.notify(event(ApprovalEventKind::Requested, "a", Some("crm")));
        n.notify(event(ApprovalEventKind::Requested, "b", Some("db")));
        n.notify(event(ApprovalEventKind::Requested, "c", None));
        let mut ids: Vec<String> = Vec::new();
        for _ in 0..3 {
            ids.push(
                json(&global.next().await)["warden"]["approval_id"]
                    .as_str()
                    .expect("id")
                    .into(),
            );
        }
        ids.sort();
        assert_eq!(ids, ["a", "b", "c"], "a global webhook gets every upstream");
        assert_eq!(json(&crm.next().await)["warden"]["approval_id"], "a");
        crm.quiet_for(Duration::from_millis(200)).await;
        status_until(&n, "crm", |s| s.delivered == 1).await;
        status_until(&n, "all", |s| s.delivered == 3).await;
    }

    #[tokio::test]
    async fn webhooks_get_only_their_events() {
        let keys = Keys::new();
        let mut r = receiver(&[], 200, Duration::ZERO).await;
        let decisions = WebhookConfig {
            events: vec![ApprovalEventKind::Approved, ApprovalEventKind::Denied],
            ..hook("decisions", &r.url, &keys.key())
        };
        let n = Notifier::with_tuning(&[decisions], fast()).expect("notifier");
        n.notify(event(ApprovalEventKind::Requested, "a", None));
        n.notify(event(ApprovalEventKind::Expired, "a", None));
        let mut approved = event(ApprovalEventKind::Approved, "a", None);
        approved.approvals = 1;
        approved.decided_by = Some("alice@example.com".into());
        n.notify(approved);
        let hit = r.next().await;
        assert_eq!(header(&hit, "x-warden-event"), "approval.approved");
        let body = json(&hit);
        assert_eq!(
            body["text"],
            "Approved by alice@example.com: agent billing-bot may write crm (policy production-writes-need-approval) \
             — 1/1 approvals — https://warden/v1/approvals/a"
        );
        assert_eq!(body["warden"]["decided_by"], "alice@example.com");
        r.quiet_for(Duration::from_millis(200)).await;
    }

    #[tokio::test]
    async fn server_errors_are_retried_until_delivered() {
        let keys = Keys::new();
        let mut r = receiver(&[500, 500], 200, Duration::ZERO).await;
        let n = Notifier::with_tuning(&[hook("ops", &r.url, &keys.key())], fast()).expect("notifier");
        n.notify(event(ApprovalEventKind::Requested, "ap-1", None));
        let s = status_until(&n, "ops", |s| s.delivered == 1).await;
        assert_eq!((s.failed, r.hits()), (0, 3));
        let ids: Vec<String> = [r.next().await, r.next().await, r.next().await]
            .iter()
            .map(|h| header(h, "x-warden-delivery").to_owned())
            .collect();
        assert!(
            ids.iter().all(|i| *i == ids[0]),
            "one delivery id across attempts: {ids:?}"
        );

        // 429 is retried too.
        let r = receiver(&[429, 503], 204, Duration::ZERO).await;
        let n = Notifier::with_tuning(&[hook("slack", &r.url, &keys.key())], fast()).expect("notifier");
        n.notify(event(ApprovalEventKind::Requested, "ap-2", None));
        status_until(&n, "slack", |s| s.delivered == 1).await;
        assert_eq!(r.hits(), 3);
    }

    #[tokio::test]
    async fn a_dead_webhook_is_given_up_after_max_attempts() {
        let keys = Keys::new();
        let r = receiver(&[], 500, Duration::ZERO).await;
        let cfg = WebhookConfig {
            max_attempts: 3,
            ..hook("ops", &r.url, &keys.key())
        };
        let n = Notifier::with_tuning(&[cfg], fast()).expect("notifier");
        n.notify(event(ApprovalEventKind::Requested, "ap-1", None));
        let s = status_until(&n, "ops", |s| s.failed == 1).await;
        assert_eq!(s.delivered, 0);
        let err = s.last_error.expect("last_error");
        assert!(
            err.contains("HTTP 500") && err.contains("invalid_payload"),
            "{err}"
        );
        assert!(s.last_failure_at.is_some());
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(r.hits(), 3, "exactly max_attempts attempts");

        // Nobody listening: connection errors are retried, and the error does not show the URL.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr").port()
        };
        let cfg = WebhookConfig {
            max_attempts: 2,
            ..hook(
                "gone",
                &format!("http://127.0.0.1:{port}/secret-token"),
                &keys.key(),
            )
        };
        let n = Notifier::with_tuning(&[cfg], fast()).expect("notifier");
        n.notify(event(ApprovalEventKind::Requested, "ap-2", None));
        let s = status_until(&n, "gone", |s| s.failed == 1).await;
        let err = s.last_error.expect("last_error");
        assert!(!err.contains("secret-token"), "{err}");
        assert!(err.contains("tcp connect error"), "{err}");
    }

    #[tokio::test]
    async fn client_errors_and_redirects_are_not_retried() {
        let keys = Keys::new();
        for (code, want) in [
            (400, "HTTP 400 Bad Request: invalid_payload"),
            (302, "redirects are not followed"),
        ] {
            let r = receiver(&[], code, Duration::ZERO).await;
            let n = Notifier::with_tuning(&[hook("ops", &r.url, &keys.key())], fast()).expect("notifier");
            n.notify(event(ApprovalEventKind::Denied, "ap-1", None));
            let s = status_until(&n, "ops", |s| s.failed == 1).await;
            let err = s.last_error.expect("last_error");
            assert!(err.contains(want), "{err}");
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(r.hits(), 1, "HTTP {code} is not retried");
        }
    }

    #[tokio::test]
    async fn a_slow_webhook_does_not_delay_another() {
        let keys = Keys::new();
        let key = keys.key();
        let mut slow = receiver(&[], 200, Duration::from_secs(3)).await;
        let mut quick = receiver(&[], 200, Duration::ZERO).await;
        let n = Notifier::with_tuning(
            &[hook("slow", &slow.url, &key), hook("quick", &quick.url, &key)],
            fast(),
        )
        .expect("notifier");
        let start = Instant::now();
        for i in 0..10 {
            n.notify(event(ApprovalEventKind::Requested, &format!("ap-{i}"), None));
        }
        for _ in 0..10 {
            let hit = quick.next().await;
            assert!(
                hit.at - start < Duration::from_secs(1),
                "quick webhook waited for the slow one"
            );
        }
        status_until(&n, "quick", |s| s.delivered == 10).await;
        let _ = slow.next().await;
        assert_eq!(n.status()[0].delivered, 0, "the slow webhook is still answering");
    }

    #[tokio::test]
    async fn a_full_queue_drops_and_counts() {
        let keys = Keys::new();
        let r = receiver(&[], 200, Duration::from_millis(300)).await;
        let tuning = Tuning {
            queue: 1,
            concurrency: 1,
            ..fast()
        };
        let n = Notifier::with_tuning(&[hook("ops", &r.url, &keys.key())], tuning).expect("notifier");
        // A current-thread runtime: the worker cannot run between these calls, so the queue of one holds
        // the first event and the other four are dropped.
        for i in 0..5 {
            n.notify(event(ApprovalEventKind::Requested, &format!("ap-{i}"), None));
        }
        assert_eq!(n.status()[0].dropped, 4);
        let s = status_until(&n, "ops", |s| s.delivered == 1).await;
        assert_eq!((s.dropped, s.failed), (4, 0));
    }

    #[tokio::test]
    async fn secret_files_are_checked() {
        let keys = Keys::new();
        let url = "https://hooks.example.com/services/T0/B0/token";
        let err = |cfg: WebhookConfig| format!("{:#}", Notifier::new(&[cfg]).expect_err("refused"));

        let missing = keys.0.path().join("nope.key");
        let e = err(hook("ops", url, &missing));
        assert!(
            e.contains("notify.webhook[0] (`ops`): secret_file: cannot read") && e.contains("nope.key"),
            "{e}"
        );

        let open = keys.file("open.key", KEY, 0o644);
        let e = err(hook("ops", url, &open));
        assert!(
            e.contains("open.key is readable by other users (mode 644); chmod 600 it"),
            "{e}"
        );
        let group = keys.file("group.key", KEY, 0o640);
        assert!(err(hook("ops", url, &group)).contains("(mode 640)"));

        let short = keys.file("short.key", "tooshort\n", 0o600);
        let e = err(hook("ops", url, &short));
        assert!(e.contains("holds a key of 8 bytes; use at least 16"), "{e}");

        let e = err(WebhookConfig {
            secret_file: None,
            ..hook("ops", url, &missing)
        });
        assert!(e.contains("secret_file is required"), "{e}");

        let e = err(hook(
            "ops",
            "https://user:hunter2@hooks.example.com/x",
            &keys.key(),
        ));
        assert!(
            e.contains("url must not contain credentials") && !e.contains("hunter2"),
            "{e}"
        );

        Notifier::new(&[hook("ops", url, &keys.key())]).expect("a 0600 key file of 32 bytes is fine");
    }

    #[tokio::test]
    async fn debug_shows_no_secret() {
        let keys = Keys::new();
        let n = Notifier::new(&[hook(
            "ops",
            "https://hooks.slack.com/services/T0/B0/slacktoken?k=v",
            &keys.key(),
        )])
        .expect("notifier");
        let dbg = format!("{n:?}");
        assert!(dbg.contains("ops") && dbg.contains("REDACTED"), "{dbg}");
        for secret in [KEY, "slacktoken", "k=v"] {
            assert!(!dbg.contains(secret), "{dbg}");
        }
        assert_eq!(n.status()[0].url, "https://hooks.slack.com/services/…");
        assert!(n.is_enabled());
    }

    #[test]
    fn disabled_does_nothing() {
        let n = Notifier::disabled();
        n.notify(event(ApprovalEventKind::Requested, "a", None));
        assert!(n.status().is_empty() && !n.is_enabled());
        // No webhooks configured: no runtime needed, nothing spawned.
        assert!(Notifier::new(&[]).expect("empty").status().is_empty());
    }

    #[test]
    fn text_is_one_line_and_escaped() {
        let mut e = event(ApprovalEventKind::Expired, "a", Some("crm"));
        e.agent = "<!channel> & <https://evil|click>\nsecond line".into();
        e.resource = "x".repeat(500);
        let text = summary(&e);
        assert!(text.starts_with("Expired: agent &lt;!channel&gt; &amp; &lt;https://evil|click&gt; second line's request to write xxx"), "{text}");
        assert!(!text.contains('\n') && text.contains("…"), "{text}");
        assert!(text.chars().count() < 600, "fields are truncated");
        let block = details(&e);
        assert!(
            !block.contains("<!channel>") && block.contains("*Upstream:* crm"),
            "{block}"
        );

        let mut d = event(ApprovalEventKind::Denied, "a", None);
        d.decided_by = Some("bob".into());
        d.reason = String::new();
        assert_eq!(
            summary(&d),
            "Denied by bob: agent billing-bot may not write crm — 0/1 approvals — https://warden/v1/approvals/a"
        );
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        let t = Tuning::default();
        for _ in 0..50 {
            let first = backoff(&t, 1, None);
            assert!(
                first >= Duration::from_millis(250) && first <= Duration::from_millis(500),
                "{first:?}"
            );
            let fourth = backoff(&t, 4, None);
            assert!(
                fourth >= Duration::from_secs(2) && fourth <= Duration::from_secs(4),
                "{fourth:?}"
            );
            assert!(backoff(&t, 30, None) <= Duration::from_secs(30));
        }
        assert_eq!(
            backoff(&t, 1, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn signature_scheme() {
        // HMAC-SHA256("key", "1700000000.{}"), computed independently:
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac key
        assert_eq!(
            sign(b"key", "1700000000", b"{}").expect("sign"),
            "sha256=9d713ed406bb7076d4123f0dc2c39d2df5c654ed4b0cd56b52c8b4c940bd63ae"
        );
    }
}
