//! The audit ledger as the server uses it: every decision, credential and change becomes an entry of
//! the tamper-evident log (`warden_ledger`), durable before the action it records is taken.
//!
//! **Group commit.** Handlers hand entries to [`Ledger::record`], which queues them for one writer
//! task per node and waits. The writer takes everything queued (up to `max_batch`), commits it as one
//! transaction (`Store::ledger_append`: entries, Merkle nodes and the new head; one fsync on SQLite)
//! and only then answers every waiting handler with its sequence number. While one batch commits, the
//! next one gathers, so throughput grows with load while a lone entry still commits at once.
//!
//! **Fail closed, never drop.** A full queue holds callers back (backpressure); an entry that cannot be
//! committed (disk full, store down) is reported to its caller, which denies the action — nothing is
//! acknowledged that is not durable, and nothing acknowledged is lost. A caller that gave up (its
//! timeout passed) is skipped by the writer, so no decision is recorded for an action that was
//! denied for want of a record. `/healthz` reports the writer's state.
//!
//! **Checkpoints.** A signed checkpoint (C2SP, this node's Ed25519 key) of the new head goes into the
//! same transaction as a batch whenever `checkpoint_interval` has passed since the last one; an idle
//! timer signs the tail a quiet period left uncovered, and shutdown signs the final head. Every
//! checkpoint this node signs is also kept outside the database ([`crate::checkpoint_file`]), so a
//! start on a log cut back below it is refused.
//!
//! **Never a sequence number twice.** An append whose first sequence number is below the size this
//! node already committed means the log was cut back under the running server: the writer stops
//! (every later append fails, `/healthz` says why) rather than number entries again.
//!
//! INVARIANT (record before act): code that acts on an allow first awaits the allow's entry;
//! secrets never enter an entry (sensitive values go through [`Ledger::redactor`]).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::Utc;
use tokio::sync::{mpsc, oneshot};
use warden_ledger::{EntryKind, NewEntry, NoteSigner, PreEncoded, RedactionKey, Redactor, VerifierKey};
use warden_store::{CheckpointSigner, Store};
use zeroize::Zeroizing;

use crate::config::LedgerConfig;

/// File name of a node's checkpoint key in the data directory.
pub const SIGNING_KEY_FILE: &str = "ledger.key";
/// File name of the deployment's redaction key in the data directory.
pub const REDACTION_KEY_FILE: &str = "ledger-redaction.key";

/// The log's origin (first line of every checkpoint): one per deployment, the same on every node.
pub fn origin(trust_domain: &warden_core::TrustDomain) -> String {
    format!("{trust_domain}/warden-ledger")
}

/// Why an entry was not recorded. The action it was for must not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LedgerError {
    #[error("the audit ledger cannot record: {0}")]
    Unavailable(String),
    #[error("the audit ledger did not confirm the entry within {0} ms")]
    Timeout(u64),
    #[error("the audit ledger is shut down")]
    Closed,
    /// An entry Warden built does not encode (a bug; the action is refused all the same).
    #[error("an audit entry could not be encoded: {0}")]
    Invalid(String),
}

/// What `/healthz` and operators see of the writer.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct LedgerStatus {
    /// `ok`, or `failing` while entries cannot be committed (actions are denied meanwhile).
    pub status: &'static str,
    /// Entries in the log as of the last commit this node made.
    pub size: u64,
    /// Size covered by the last checkpoint this node signed.
    pub checkpoint_size: u64,
    /// Entries waiting for the writer.
    pub queued: usize,
    /// The last commit error, while failing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Why `<data-dir>/ledger.checkpoint` cannot be kept current, while it cannot (entries still
    /// commit; a log cut back meanwhile would not be noticed at the next start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub checkpoint_file_error: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    healthy: AtomicBool,
    size: AtomicU64,
    checkpoint_size: AtomicU64,
    error: Mutex<Option<String>>,
}

impl State {
    fn ok(&self, size: u64) {
        self.size.store(size, Ordering::Relaxed);
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(size, "audit ledger: committing");
        }
        if let Ok(mut e) = self.error.lock() {
            *e = None;
        }
    }

    fn fail(&self, error: String) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::error!(%error, "audit ledger: cannot commit; actions are denied until it can");
        }
        if let Ok(mut e) = self.error.lock() {
            *e = Some(error);
        }
    }
}

struct Job {
    entries: Vec<PreEncoded>,
    done: oneshot::Sender<Result<u64, LedgerError>>,
}

enum Msg {
    Append(Job),
    Shutdown(oneshot::Sender<()>),
}

/// Writer settings.
#[derive(Debug, Clone)]
pub struct WriterSettings {
    pub checkpoint_interval: Duration,
    pub max_batch: usize,
    pub queue: usize,
    pub append_timeout: Duration,
}

impl From<&LedgerConfig> for WriterSettings {
    fn from(c: &LedgerConfig) -> Self {
        Self {
            checkpoint_interval: Duration::from_millis(c.checkpoint_interval_ms),
            max_batch: c.max_batch,
            queue: c.queue,
            append_timeout: Duration::from_millis(c.append_timeout_ms),
        }
    }
}

/// The node's handle on the ledger.
pub struct Ledger {
    tx: mpsc::Sender<Msg>,
    state: Arc<State>,
    origin: String,
    verifier: VerifierKey,
    redactor: Redactor,
    append_timeout: Duration,
    queue: usize,
    checkpoint_file_error: Option<Arc<Mutex<Option<String>>>>,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger")
            .field("origin", &self.origin)
            .field("key", &self.verifier.to_string())
            .finish_non_exhaustive()
    }
}

impl Ledger {
    /// Starts the writer. The node's key is published so verifiers find it.
    pub async fn start(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        origin: String,
        redactor: Redactor,
        settings: WriterSettings,
        node: &str,
    ) -> anyhow::Result<Arc<Self>> {
        Self::start_keeping(store, signer, origin, redactor, settings, node, None).await
    }

    /// [`Ledger::start`], keeping every checkpoint this node signs in `keeper`'s file too.
    pub async fn start_keeping(
        store: Arc<dyn Store>,
        signer: NoteSigner,
        origin: String,
        redactor: Redactor,
        settings: WriterSettings,
        node: &str,
        keeper: Option<crate::checkpoint_file::Keeper>,
    ) -> anyhow::Result<Arc<Self>> {
        let verifier = signer.verifier_key();
        store
            .publish_ledger_key(&verifier.to_string(), node, Utc::now())
            .await
            .context("cannot publish the ledger's checkpoint key")?;
        let head = store.ledger_head().await.context("cannot read the ledger head")?;
        let state = Arc::new(State::default());
        state.ok(head.size());
        let signed = store
            .latest_ledger_checkpoint()
            .await
            .context("cannot read the ledger")?
            .map_or(0, |cp| cp.size);
        state.checkpoint_size.store(signed, Ordering::Relaxed);
        // Entries a crash left unsigned get their checkpoint at the first tick.
        let unsigned = head.size() > signed;
        let (tx, rx) = mpsc::channel(settings.queue);
        let checkpoint_file_error = keeper.as_ref().map(crate::checkpoint_file::Keeper::error_slot);
        let writer = Writer {
            store,
            signer,
            origin: origin.clone(),
            state: state.clone(),
            settings: settings.clone(),
            unsigned,
            keeper,
            cut_back: None,
        };
        tokio::spawn(writer.run(rx));
        tracing::info!(%origin, key = %verifier, size = head.size(), "audit ledger open");
        Ok(Arc::new(Self {
            tx,
            state,
            origin,
            verifier,
            redactor,
            append_timeout: settings.append_timeout,
            queue: settings.queue,
            checkpoint_file_error,
        }))
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    pub fn verifier_key(&self) -> &VerifierKey {
        &self.verifier
    }

    /// HMACs sensitive values with the deployment's key (matchable, not readable).
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    pub fn status(&self) -> LedgerStatus {
        let healthy = self.state.healthy.load(Ordering::Acquire);
        LedgerStatus {
            status: if healthy { "ok" } else { "failing" },
            size: self.state.size.load(Ordering::Relaxed),
            checkpoint_size: self.state.checkpoint_size.load(Ordering::Relaxed),
            queued: self.queue.saturating_sub(self.tx.capacity()),
            error: if healthy {
                None
            } else {
                self.state.error.lock().ok().and_then(|e| e.clone())
            },
            checkpoint_file_error: self
                .checkpoint_file_error
                .as_ref()
                .and_then(|e| e.lock().ok().and_then(|e| e.clone())),
        }
    }

    /// Records one entry and waits until it is durable. Returns its sequence number.
    pub async fn record(&self, entry: NewEntry) -> Result<u64, LedgerError> {
        self.record_all(vec![entry]).await
    }

    /// Records entries as one unit (same batch, consecutive numbers) and waits until they are
    /// durable. Returns the first one's sequence number.
    pub async fn record_all(&self, entries: Vec<NewEntry>) -> Result<u64, LedgerError> {
        // While the writer cannot commit, refuse at once: queueing behind commits that each wait for
        // the store (`[database] acquire_timeout_ms`) would make every refusal take seconds. The
        // writer's own probe (every checkpoint interval) notices when the store is back.
        if !self.state.healthy.load(Ordering::Acquire) {
            let why = self.state.error.lock().ok().and_then(|e| e.clone());
            return Err(LedgerError::Unavailable(
                why.unwrap_or_else(|| "the audit ledger cannot commit".into()),
            ));
        }
        // Encoding happens here, on the caller's task (in parallel across requests); the writer only
        // numbers, hashes and commits.
        let entries = entries
            .into_iter()
            .map(NewEntry::pre_encode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| LedgerError::Invalid(e.to_string()))?;
        let (done, answer) = oneshot::channel();
        let wait = async {
            self.tx
                .send(Msg::Append(Job { entries, done }))
                .await
                .map_err(|_| LedgerError::Closed)?;
            answer.await.map_err(|_| LedgerError::Closed)?
        };
        match tokio::time::timeout(self.append_timeout, wait).await {
            Ok(r) => r,
            Err(_) => {
                let ms = u64::try_from(self.append_timeout.as_millis()).unwrap_or(u64::MAX);
                self.state
                    .fail(format!("an entry waited more than {ms} ms for its commit"));
                Err(LedgerError::Timeout(ms))
            }
        }
    }

    /// Commits what is queued, signs a checkpoint of the final head and stops the writer. Entries
    /// recorded afterwards fail with [`LedgerError::Closed`].
    pub async fn shutdown(&self) {
        let (done, finished) = oneshot::channel();
        if self.tx.send(Msg::Shutdown(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

struct Writer {
    /// Entries exist past the last checkpoint at start.
    unsigned: bool,
    store: Arc<dyn Store>,
    signer: NoteSigner,
    origin: String,
    state: Arc<State>,
    settings: WriterSettings,
    /// Keeps the checkpoints this node signs outside the database.
    keeper: Option<crate::checkpoint_file::Keeper>,
    /// Set when the log was found cut back under this node: nothing is appended any more.
    cut_back: Option<String>,
}

impl Writer {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>) {
        let interval = self.settings.checkpoint_interval;
        let mut last_checkpoint: Option<Instant> = None;
        let mut unsigned = self.unsigned;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let first = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => m,
                    None => break,
                },
                _ = tick.tick() => {
                    // Sign what a quiet period left uncovered; while failing, this is also the probe
                    // that notices the store is back.
                    let failing = !self.state.healthy.load(Ordering::Acquire);
                    if (unsigned || failing) && self.commit(Vec::new(), true).await.is_ok() {
                        unsigned = false;
                        last_checkpoint = Some(Instant::now());
                    }
                    continue;
                }
            };
            let mut jobs = Vec::new();
            let mut shutdown = None;
            let mut count = 0usize;
            let mut next = Some(first);
            while let Some(msg) = next.take() {
                match msg {
                    Msg::Append(job) => {
                        count += job.entries.len();
                        jobs.push(job);
                    }
                    Msg::Shutdown(done) => {
                        shutdown = Some(done);
                        break;
                    }
                }
                if count < self.settings.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            // A caller that stopped waiting has denied its action: its entry would record a decision
            // nobody acted on.
            jobs.retain(|j| !j.done.is_closed());
            let due = shutdown.is_some() || last_checkpoint.is_none_or(|t| t.elapsed() >= interval);
            if !jobs.is_empty() || shutdown.is_some() {
                let mut entries = Vec::with_capacity(count);
                let mut sizes = Vec::with_capacity(jobs.len());
                for job in &mut jobs {
                    sizes.push(job.entries.len() as u64);
                    entries.append(&mut job.entries);
                }
                let had_entries = !entries.is_empty();
                match self.commit_batch(entries, due).await {
                    Ok((first_seq, signed)) => {
                        let mut seq = first_seq;
                        for (job, n) in jobs.into_iter().zip(sizes) {
                            let _ = job.done.send(Ok(seq));
                            seq += n;
                        }
                        if signed {
                            last_checkpoint = Some(Instant::now());
                            unsigned = false;
                        } else if had_entries {
                            unsigned = true;
                        }
                    }
                    Err(e) => {
                        for job in jobs {
                            let _ = job.done.send(Err(e.clone()));
                        }
                    }
                }
            }
            if let Some(done) = shutdown {
                let size = self.state.size.load(Ordering::Relaxed);
                if let Some(keeper) = self.keeper.take() {
                    keeper.finish().await;
                }
                tracing::info!(size, "audit ledger closed with a final checkpoint");
                let _ = done.send(());
                break;
            }
        }
        if let Some(keeper) = self.keeper.take() {
            keeper.finish().await;
        }
    }

    /// Commits entries (possibly none) and maybe a checkpoint.
    async fn commit(&mut self, entries: Vec<PreEncoded>, checkpoint: bool) -> Result<(), LedgerError> {
        self.commit_batch(entries, checkpoint).await.map(|_| ())
    }

    async fn commit_batch(
        &mut self,
        entries: Vec<PreEncoded>,
        checkpoint: bool,
    ) -> Result<(u64, bool), LedgerError> {
        if let Some(why) = &self.cut_back {
            self.state.fail(why.clone());
            return Err(LedgerError::Unavailable(why.clone()));
        }
        let signer = checkpoint.then(|| CheckpointSigner {
            origin: &self.origin,
            signer: &self.signer,
            at: Utc::now(),
        });
        let committed = self.state.size.load(Ordering::Relaxed);
        match self.store.ledger_append(entries, signer).await {
            Ok(a) if a.first_seq < committed => {
                // Numbers this node already handed out were handed out again: the log was cut back
                // under the running server. Stop, loudly; never number another entry.
                let why = format!(
                    "the ledger in the database was cut back: this node had committed {committed} entries,                      and the database numbered new ones from {}; the writer has stopped",
                    a.first_seq
                );
                tracing::error!(error = %why, "audit ledger: cut back under the running server");
                self.cut_back = Some(why.clone());
                self.state.fail(why.clone());
                Err(LedgerError::Unavailable(why))
            }
            Ok(a) => {
                self.state.ok(a.tree_size);
                if let Some(size) = a.checkpoint {
                    self.state.checkpoint_size.store(size, Ordering::Relaxed);
                    if let Some(keeper) = &self.keeper {
                        // The note the store committed, signed again (Ed25519 is deterministic).
                        match warden_ledger::Checkpoint::new(&self.origin, size, a.root)
                            .and_then(|cp| cp.sign(&[&self.signer]))
                        {
                            Ok(note) => keeper.offer(size, note),
                            Err(e) => tracing::error!(error = %e, "cannot sign the checkpoint to keep"),
                        }
                    }
                }
                Ok((a.first_seq, checkpoint))
            }
            Err(e) => {
                let msg = e.to_string();
                self.state.fail(msg.clone());
                Err(LedgerError::Unavailable(msg))
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Keys

/// Reads a secret key file, creating it with `make` (mode 0600, written to a temporary file and
/// renamed, so a crash never leaves half a key) when it does not exist and `create` allows.
fn key_file(
    path: &Path,
    create: bool,
    make: impl FnOnce() -> Zeroizing<String>,
) -> anyhow::Result<Zeroizing<String>> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            let mode = std::fs::metadata(path)
                .map(|m| m.permissions().mode())
                .unwrap_or(0);
            if mode & 0o077 != 0 {
                bail!(
                    "{} is readable by other users (mode {:o}); chmod 600 it",
                    path.display(),
                    mode & 0o777
                );
            }
            Ok(Zeroizing::new(text.trim().to_owned()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            let value = make();
            let tmp = path.with_extension(format!("tmp.{}", uuid::Uuid::new_v4().simple()));
            let mut f = OpenOptions::new()
                .create_new(true)
                .write(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            f.write_all(value.as_bytes())
                .and_then(|()| f.write_all(b"\n"))
                .and_then(|()| f.sync_all())
                .with_context(|| format!("cannot write {}", tmp.display()))?;
            std::fs::rename(&tmp, path).with_context(|| format!("cannot create {}", path.display()))?;
            tracing::info!(file = %path.display(), "created a ledger key");
            Ok(value)
        }
        Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
    }
}

/// A note key name for this node: `<host>.<trust domain>` made of the characters note names allow.
pub fn key_name(trust_domain: &warden_core::TrustDomain, host: &str) -> String {
    let host: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    format!("{}.{trust_domain}", if host.is_empty() { "node" } else { &host })
}

/// This node's checkpoint signer: the configured file, or `<data-dir>/ledger.key` (created once).
pub fn load_signer(data_dir: &Path, configured: Option<&PathBuf>, name: &str) -> anyhow::Result<NoteSigner> {
    let (path, create) = match configured {
        Some(p) => (p.clone(), false),
        None => (data_dir.join(SIGNING_KEY_FILE), true),
    };
    let text = key_file(&path, create, || {
        let key = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
        match NoteSigner::new(name, key) {
            Ok(s) => s.to_private_string(),
            // A name made by key_name is always valid; an invalid one fails at parse below.
            Err(_) => Zeroizing::new(String::new()),
        }
    })?;
    NoteSigner::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

/// The deployment's redaction key: the configured file, or `<data-dir>/ledger-redaction.key`.
pub fn load_redactor(data_dir: &Path, configured: Option<&PathBuf>) -> anyhow::Result<Redactor> {
    let (path, create) = match configured {
        Some(p) => (p.clone(), false),
        None => (data_dir.join(REDACTION_KEY_FILE), true),
    };
    let text = key_file(&path, create, || {
        let mut bytes = Zeroizing::new([0u8; 32]);
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, bytes.as_mut_slice());
        Zeroizing::new(hex::encode(bytes.as_slice()))
    })?;
    let bytes = Zeroizing::new(
        hex::decode(text.as_str()).map_err(|_| anyhow::anyhow!("{}: not hexadecimal", path.display()))?,
    );
    let key = RedactionKey::from_bytes(&bytes).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    Ok(Redactor::new(key))
}

// ---------------------------------------------------------------------------------------------------
// Entries

/// An entry about something an actor did, now.
pub fn entry(kind: EntryKind, actor: &str) -> NewEntry {
    NewEntry::new(
        Utc::now(),
        kind,
        if actor.is_empty() { "anonymous" } else { actor },
    )
}

/// Longest refusal message kept in an entry.
pub(crate) const MAX_REASON_BYTES: usize = 512;

/// `s`, cut to at most `max` bytes on a character boundary (with `…` when cut).
pub fn clip_str(s: &str, max: usize) -> String {
    clip(s, max)
}

pub(crate) fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The `policy_version` of decisions made by Warden's request checks (authentication, roles, input
/// validation) rather than by a policy set.
pub const BUILTIN_REQUEST_CHECKS: &str = "builtin:request-checks";

/// Arguments recorded in full up to this size (canonical JSON); larger ones are kept as their HMAC,
/// so a decision on them can still be matched to the exact arguments.
pub const MAX_RECORDED_ARGS_BYTES: usize = 16 * 1024;

/// What a decision was about, for its entry.
#[derive(Debug, Clone, Default)]
pub struct DecisionFacts {
    /// Who asked: the agent's SPIFFE ID.
    pub actor: String,
    /// The agent's name (the entry's `body.agent`, what `--agent` exports filter on).
    pub agent: String,
    pub task: Option<String>,
    pub action: String,
    pub upstream: Option<String>,
    pub resource: Option<String>,
    /// Arguments as recorded: sensitive values already redacted.
    pub arguments: Option<serde_json::Value>,
    pub request_id: Option<String>,
}

/// The `decision` entry of a decision.
pub fn decision_entry(facts: DecisionFacts, decision: &warden_core::Decision, latency: Duration) -> NewEntry {
    use warden_core::Outcome as O;
    let record = warden_ledger::DecisionRecord {
        outcome: match decision.outcome {
            O::Allow => warden_ledger::Outcome::Allow,
            O::Deny => warden_ledger::Outcome::Deny,
            O::NeedsApproval => warden_ledger::Outcome::NeedsApproval,
        },
        reasons: decision.reasons.clone(),
        policy_version: decision.policy_version.clone(),
        action: facts.action,
        upstream: facts.upstream,
        resource: facts.resource,
        task: facts.task.clone(),
        request_id: facts.request_id,
        arguments: facts.arguments,
        errors: decision.errors.clone(),
        latency_us: u64::try_from(latency.as_micros()).unwrap_or(u64::MAX),
    };
    let mut body = record.to_body();
    body["agent"] = facts.agent.into();
    if let Some(q) = decision.quorum {
        body["quorum"] = q.into();
    }
    let mut e = entry(EntryKind::Decision, &facts.actor).body(body);
    if let Some(t) = facts.task {
        e = e.subject(t);
    }
    e
}

impl Ledger {
    /// Arguments as they go into an entry: the values at `sensitive` (JSON pointers) replaced by
    /// their HMAC, and the whole replaced by its HMAC when it is larger than
    /// [`MAX_RECORDED_ARGS_BYTES`].
    pub fn recorded_arguments(
        &self,
        args: &serde_json::Value,
        sensitive: &[String],
    ) -> Result<serde_json::Value, String> {
        let mut out = args.clone();
        for pointer in sensitive {
            self.redactor
                .redact_at(&mut out, pointer)
                .map_err(|e| format!("sensitive `{}`: {e}", clip(pointer, 128)))?;
        }
        let size = serde_json::to_vec(&out).map(|v| v.len()).unwrap_or(usize::MAX);
        if size > MAX_RECORDED_ARGS_BYTES {
            let digest = self.redactor.redact_value(&out).map_err(|e| e.to_string())?;
            return Ok(serde_json::json!({ "hmac": digest, "bytes": size }));
        }
        Ok(out)
    }
}
