//! `warden audit verify` and `warden audit export`: the ledger, read straight from the server's database
//! (or from an evidence bundle), with no server and no token; `audit tail` and `audit checkpoint`
//! through the API.
//!
//! The database is found as `warden serve` finds it (`--config`, `--data-dir`, `--database`,
//! `WARDEN_DATABASE_URL`, default `./warden-data/warden.db`). Conventions shared with the server:
//! `<data-dir>/ledger.key` holds this node's checkpoint signing key (only its public half is used
//! here), `<data-dir>/ledger-redaction.key` the deployment's redaction key (64 hex digits; only its
//! fingerprint goes into a bundle), and every node publishes its verifier key in `ledger_keys`.
//!
//! Verification streams the entries page by page through [`LogVerifier`], with the stored head read
//! first, so that a server appending meanwhile neither fails the check nor goes unnoticed: entries and
//! checkpoints past that head are left out, and reported as appended during verification when the head
//! moved (a row past a head that did not move is a failure). What the log cannot show by itself — that
//! it was cut back with its checkpoints — is checked against a signed checkpoint kept outside the
//! database (`--checkpoint`) and a minimum size. Every stored policy set must hash to its version, and
//! a `policy_change` entry of the verified log must have activated it. Exports are bounded by the
//! latest signed checkpoint, carry each policy set with the entry that activated it, and are written to
//! a temporary file in the target directory that is renamed only when complete.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::io::{BufReader, BufWriter, IsTerminal as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context as _, anyhow, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::runtime::Handle;
use warden_ledger::bundle::peek_checkpoint;
use warden_ledger::policy as policy_evidence;
use warden_ledger::verify::verify_checkpoints;
use warden_ledger::{
    BundleReport, BundleTrust, Checkpoint, CheckpointVerifier, EncodedEntry, Expected, ExportSpec, Frontier,
    Hash, HashSource, KnownCheckpoint, LogRecord, LogVerifier, MerkleError, NodeId, NoteSigner, OcsfOptions,
    PolicyBlob, RedactionKey, Scope, VerifierKey, VerifyError, VerifyOptions, VerifyReport,
};
use warden_server::ServeOptions;
use warden_server::config::{Config, DatabaseTarget};
use warden_store::{LedgerFilter, PolicyVersion, SqliteStore, Store, StoredCheckpoint};

use crate::cli::{AuditExportArgs, AuditVerifyArgs, ExportFormat, Format, StoreArgs};
use crate::output::{self, Fields};
use crate::request::UsageError;

/// Entries read per query.
const PAGE: u32 = 10_000;
/// Checkpoints read per query.
const CHECKPOINT_PAGE: u32 = 1_000;
/// The node signing key's file in the data directory.
pub const LEDGER_KEY_FILE: &str = "ledger.key";
/// The deployment's redaction key's file in the data directory.
pub const REDACTION_KEY_FILE: &str = "ledger-redaction.key";
/// How a bundle carries a policy set: the JSON object of its files, name → text.
pub const POLICY_MEDIA_TYPE: &str = policy_evidence::POLICY_SET_MEDIA_TYPE;
/// Largest key file read.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

// ---------------------------------------------------------------------------------------------------
// The database

/// The opened store and the data directory next to it.
struct Opened {
    store: Arc<dyn Store>,
    data_dir: PathBuf,
    /// What was opened, for the report: a path, or the backend (a URL may hold a password).
    described: String,
}

async fn open_store(args: &StoreArgs) -> anyhow::Result<Opened> {
    let config = match &args.config {
        Some(path) => Config::load(path)?,
        None => Config::default(),
    };
    let opts = ServeOptions {
        config: args.config.clone(),
        data_dir: args.data_dir.clone(),
        listen: None,
        database: args.database.as_ref().map(|d| d.0.clone()),
    };
    let resolved = config.resolve(&opts, std::env::var("WARDEN_DATABASE_URL").ok())?;
    let (store, described): (Arc<dyn Store>, String) = match &resolved.database {
        DatabaseTarget::EmbeddedSqlite(path) => {
            // Opening creates a missing database: check first, so a wrong directory is not "an empty
            // log that verifies".
            if !path.is_file() {
                bail!(
                    "no Warden database at {}; give the server's data directory with --data-dir, or \
                     --database / --config",
                    path.display()
                );
            }
            let store = SqliteStore::open(path)
                .await
                .with_context(|| format!("opening the database {}", path.display()))?;
            (Arc::new(store), path.display().to_string())
        }
        DatabaseTarget::Url(url) => {
            let store = warden_store::open(url.expose())
                .await
                .context("opening the database")?;
            let described = format!("{} database", store.backend().as_str());
            (store, described)
        }
    };
    Ok(Opened {
        store,
        data_dir: resolved.data_dir,
        described,
    })
}

/// Every stored checkpoint, smallest first.
async fn all_checkpoints(store: &dyn Store) -> anyhow::Result<Vec<StoredCheckpoint>> {
    let mut out: Vec<StoredCheckpoint> = Vec::new();
    loop {
        let from = out.last().map_or(0, |c| c.size + 1);
        let page = store
            .ledger_checkpoints(from, CHECKPOINT_PAGE)
            .await
            .context("reading the ledger's checkpoints")?;
        let full = page.len() == CHECKPOINT_PAGE as usize;
        out.extend(page);
        if !full {
            return Ok(out);
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Keys

/// A trusted key and where it came from.
#[derive(Clone, Debug)]
struct TrustedKey {
    key: VerifierKey,
    source: &'static str,
}

/// `name+id` of a key: enough to tell keys apart in a report.
fn key_label(k: &VerifierKey) -> String {
    format!("{}+{:08x}", k.name(), k.id())
}

fn push_key(keys: &mut Vec<TrustedKey>, key: VerifierKey, source: &'static str) {
    if !keys.iter().any(|k| k.key == key) {
        keys.push(TrustedKey { key, source });
    }
}

fn read_small(path: &Path, what: &str) -> anyhow::Result<String> {
    let meta = std::fs::metadata(path).with_context(|| format!("cannot read {what} {}", path.display()))?;
    if meta.len() > MAX_KEY_FILE_BYTES {
        bail!(
            "{what} {} is larger than {MAX_KEY_FILE_BYTES} bytes",
            path.display()
        );
    }
    std::fs::read_to_string(path).with_context(|| format!("cannot read {what} {}", path.display()))
}

/// The keys given on the command line (`--key`, `--key-file`), or `None` when there are none.
fn pinned_keys(keys: &[VerifierKey], key_file: Option<&Path>) -> anyhow::Result<Option<Vec<TrustedKey>>> {
    let mut out = Vec::new();
    for k in keys {
        push_key(&mut out, k.clone(), "pinned");
    }
    if let Some(file) = key_file {
        let text = read_small(file, "key file")?;
        let mut found = 0;
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let key = VerifierKey::parse(line).map_err(|e| {
                anyhow!(
                    "{}:{}: not a verifier key ({e}); expected `<name>+<8 hex digits>+<base64>` per line",
                    file.display(),
                    i + 1
                )
            })?;
            push_key(&mut out, key, "pinned");
            found += 1;
        }
        if found == 0 {
            bail!("{} holds no verifier key", file.display());
        }
    }
    Ok((!out.is_empty()).then_some(out))
}

/// The public half of `<data-dir>/ledger.key`, if that file exists. A file that cannot be used is a
/// warning: the published keys may still verify the log.
fn local_node_key(data_dir: &Path) -> Option<VerifierKey> {
    let path = data_dir.join(LEDGER_KEY_FILE);
    if !path.exists() {
        return None;
    }
    let text = match read_small(&path, "signing key") {
        Ok(t) => warden_core::Secret::new(t),
        Err(e) => {
            eprintln!("warning: {e:#}; not using it");
            return None;
        }
    };
    match NoteSigner::parse(text.expose().trim()) {
        Ok(signer) => Some(signer.verifier_key()),
        Err(e) => {
            eprintln!(
                "warning: {} is not a ledger signing key ({e}); not using it",
                path.display()
            );
            None
        }
    }
}

/// The keys the deployment publishes: every node's (`ledger_keys`) and this node's own.
async fn deployment_keys(store: &dyn Store, data_dir: &Path) -> anyhow::Result<Vec<TrustedKey>> {
    let mut out = Vec::new();
    for record in store
        .ledger_keys()
        .await
        .context("reading the ledger's verifier keys")?
    {
        match VerifierKey::parse(&record.vkey) {
            Ok(k) => push_key(&mut out, k, "database"),
            Err(e) => eprintln!(
                "warning: ignoring the verifier key published by node `{}`: {e}",
                record.node.escape_debug()
            ),
        }
    }
    if let Some(k) = local_node_key(data_dir) {
        push_key(&mut out, k, "ledger.key");
    }
    Ok(out)
}

fn keys_json(keys: &[TrustedKey]) -> Value {
    keys.iter()
        .map(|k| json!({"key": key_label(&k.key), "vkey": k.key.to_string(), "source": k.source}))
        .collect()
}

fn keys_line(keys: &[TrustedKey]) -> String {
    keys.iter()
        .map(|k| format!("{} ({})", key_label(&k.key), k.source))
        .collect::<Vec<_>>()
        .join(", ")
}

// ---------------------------------------------------------------------------------------------------
// Progress

/// A progress line on stderr: rewritten in place on a terminal, one line per update otherwise (with
/// `--progress`), silent when neither.
struct ProgressLine {
    mode: ProgressMode,
    last: Option<Instant>,
    shown: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ProgressMode {
    Off,
    Terminal,
    Lines,
}

impl ProgressLine {
    fn new(forced: bool) -> Self {
        let mode = if std::io::stderr().is_terminal() {
            ProgressMode::Terminal
        } else if forced {
            ProgressMode::Lines
        } else {
            ProgressMode::Off
        };
        Self {
            mode,
            last: None,
            shown: false,
        }
    }

    fn update(&mut self, text: impl FnOnce() -> String) {
        let every = match self.mode {
            ProgressMode::Off => return,
            ProgressMode::Terminal => Duration::from_millis(200),
            ProgressMode::Lines => Duration::from_secs(2),
        };
        if self.last.is_some_and(|t| t.elapsed() < every) {
            return;
        }
        self.last = Some(Instant::now());
        let mut err = std::io::stderr().lock();
        let _ = match self.mode {
            ProgressMode::Terminal => write!(err, "\r\x1b[K{}", text()),
            _ => writeln!(err, "{}", text()),
        };
        let _ = err.flush();
        self.shown = true;
    }

    /// Clears the line, so that what follows starts on a clean one.
    fn finish(&mut self) {
        if self.mode == ProgressMode::Terminal && self.shown {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
            self.shown = false;
        }
    }
}

impl Drop for ProgressLine {
    fn drop(&mut self) {
        self.finish();
    }
}

fn of_total(done: u64, total: u64) -> String {
    match done.saturating_mul(100).checked_div(total) {
        Some(percent) => format!("{done}/{total} ({percent}%)"),
        None => format!("{done}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// audit verify

/// A failed verification: the error, and the first bad entry where there is one.
fn verification_failed(format: Format, what: &str, error: &str, first_bad: Option<u64>) -> anyhow::Error {
    let message = match first_bad {
        Some(i) => {
            let detail = error.strip_prefix(&format!("entry {i}: ")).unwrap_or(error);
            format!("{what} verification FAILED at entry {i}: {detail}")
        }
        None => format!("{what} verification FAILED: {error}"),
    };
    if format == Format::Json {
        let _ = output::stdout(&pretty(&json!({
            "verified": false,
            "first_bad_entry": first_bad,
            "error": message,
        })));
    }
    anyhow!(message)
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

pub async fn verify(format: Format, args: AuditVerifyArgs) -> anyhow::Result<()> {
    let pinned = pinned_keys(&args.keys, args.key_file.as_deref())?;
    let origin = args.origin.map(|o| o.0);
    // Read first: a checkpoint saved before this run began covers no more than the head read later.
    let expected = Expected {
        checkpoint: args
            .checkpoint
            .as_deref()
            .map(read_known_checkpoint)
            .transpose()?,
        min_size: args.min_size,
    };
    match args.bundle {
        Some(file) => verify_bundle_file(format, &file, pinned, origin, &expected, args.progress).await,
        None => {
            verify_store(
                format,
                &args.store,
                pinned,
                origin,
                &expected,
                args.progress,
                args.strict,
            )
            .await
        }
    }
}

/// A signed checkpoint saved outside the database, as `--checkpoint FILE` gives it.
fn read_known_checkpoint(file: &Path) -> anyhow::Result<KnownCheckpoint> {
    let note = read_small(file, "checkpoint file")?;
    Ok(KnownCheckpoint {
        note,
        known: format!("the checkpoint in {}", file.display()),
    })
}

/// The outside checkpoint and minimum size that were checked, for the report.
fn expected_json(expected: &Expected, checked: Option<&Checkpoint>) -> (Value, Value) {
    let checkpoint = match (&expected.checkpoint, checked) {
        (Some(k), Some(cp)) => json!({
            "file": k.known.strip_prefix("the checkpoint in ").unwrap_or(&k.known),
            "size": cp.size,
            "root": cp.root.to_hex(),
            "consistent": true,
        }),
        _ => Value::Null,
    };
    (checkpoint, json!(expected.min_size))
}

fn expected_fields(f: &mut Fields, expected: &Expected, checked: Option<&Checkpoint>) {
    if let (Some(k), Some(cp)) = (&expected.checkpoint, checked) {
        f.add(
            "checkpoint",
            format!(
                "{} (tree size {}): consistent",
                k.known.strip_prefix("the checkpoint in ").unwrap_or(&k.known),
                cp.size
            ),
        );
    }
    if let Some(min) = expected.min_size {
        f.add("min_size", format!("{min}: reached"));
    }
}

/// What `verify_store` established, beyond the verifier's report.
struct StoreVerification {
    report: VerifyReport,
    origin: Option<String>,
    /// Entries the server appended while the log was read (past the head read first).
    appended_meanwhile: u64,
    /// The outside checkpoint the log was checked against.
    known: Option<Checkpoint>,
    /// Stored policy sets verified against their content hash and their activation entry.
    policy_sets: usize,
}

async fn verify_store(
    format: Format,
    args: &StoreArgs,
    pinned: Option<Vec<TrustedKey>>,
    origin: Option<String>,
    expected: &Expected,
    progress: bool,
    strict: bool,
) -> anyhow::Result<()> {
    let opened = open_store(args).await?;
    let store = opened.store.as_ref();
    let keys = match pinned {
        Some(k) => k,
        None => deployment_keys(store, &opened.data_dir).await?,
    };
    let result = verify_stored_log(
        &opened.store,
        &keys,
        origin,
        expected,
        &mut ProgressLine::new(progress),
        strict,
    )
    .await;
    opened.store.close().await;
    let v = match result? {
        Ok(v) => v,
        Err(Failure { error, first_bad }) => {
            return Err(verification_failed(format, "ledger", &error, first_bad));
        }
    };
    let r = &v.report;
    let latest = r.latest_checkpoint.as_ref().map(|c| c.size);
    let from_store = keys.iter().any(|k| k.source != "pinned");
    let (checkpoint, min_size) = expected_json(expected, v.known.as_ref());
    match format {
        Format::Json => output::stdout(&pretty(&json!({
            "verified": true,
            "database": opened.described,
            "origin": v.origin,
            "entries": r.entries,
            "checkpoints": r.checkpoints,
            "root": r.root.to_hex(),
            "latest_checkpoint": latest,
            "unsigned_tail": r.unsigned_tail,
            "appended_during_verification": v.appended_meanwhile,
            "checkpoint": checkpoint,
            "min_size": min_size,
            "policy_sets_verified": v.policy_sets,
            "keys": keys_json(&keys),
            "keys_pinned": !from_store,
        })))?,
        Format::Table => {
            let mut f = Fields::new();
            f.add("result", "verified")
                .add("database", opened.described.clone())
                .add("origin", v.origin.clone().unwrap_or_default())
                .add("entries", r.entries.to_string())
                .add("checkpoints", r.checkpoints.to_string())
                .add("root", r.root.to_hex())
                .add(
                    "latest_checkpoint",
                    latest.map(|s| s.to_string()).unwrap_or_default(),
                )
                .add("unsigned_tail", r.unsigned_tail.to_string());
            if v.appended_meanwhile > 0 {
                f.add(
                    "appended_during_verification",
                    format!(
                        "{} (not verified; run again to include them)",
                        v.appended_meanwhile
                    ),
                );
            }
            expected_fields(&mut f, expected, v.known.as_ref());
            f.add(
                "policy_sets",
                format!(
                    "{} verified (text against content hash, activation entry in the log)",
                    v.policy_sets
                ),
            );
            f.add("keys", keys_line(&keys));
            output::stdout(&f.render())?;
        }
    }
    if r.unsigned_tail > 0 {
        eprintln!(
            "note: the last {} entries are covered by no signed checkpoint yet (hashed and in order, but \
             not signed)",
            r.unsigned_tail
        );
    }
    if from_store && r.checkpoints > 0 {
        eprintln!(
            "warning: the trusted keys came from the data directory and database being verified; whoever \
             can rewrite the database can add a key there too. Pin the keys with --key or --key-file."
        );
    }
    Ok(())
}

/// Why verification failed: the message, and the first bad entry where one is known.
struct Failure {
    error: String,
    first_bad: Option<u64>,
}

impl From<VerifyError> for Failure {
    fn from(e: VerifyError) -> Self {
        Self {
            first_bad: e.first_bad_index(),
            error: e.to_string(),
        }
    }
}

/// Verifies the stored log. The outer error: the store could not be read; the inner: the log is bad.
async fn verify_stored_log(
    shared: &Arc<dyn Store>,
    keys: &[TrustedKey],
    origin: Option<String>,
    expected: &Expected,
    progress: &mut ProgressLine,
    strict: bool,
) -> anyhow::Result<Result<StoreVerification, Failure>> {
    let store = shared.as_ref();
    // The stored policy sets before the head: every activation read here was recorded (record before
    // act) by an entry the head covers.
    let policy_sets = stored_policy_sets(store).await?;
    // The head first: everything up to it is committed, entries and checkpoints alike.
    let head = store.ledger_head().await.context("reading the ledger's head")?;
    let checkpoints = all_checkpoints(store).await?;
    let (covered, later): (Vec<_>, Vec<_>) = checkpoints.into_iter().partition(|c| c.size <= head.size());
    let origin = match origin {
        Some(o) => Some(o),
        None => match covered.first() {
            None => expected
                .checkpoint
                .as_ref()
                .and_then(|k| peek_checkpoint(&k.note))
                .map(|cp| cp.origin),
            Some(c) => match peek_checkpoint(&c.note) {
                Some(cp) => Some(cp.origin),
                None => {
                    return Ok(Err(Failure {
                        error: format!(
                            "the checkpoint of tree size {} is malformed (give --origin to see why)",
                            c.size
                        ),
                        first_bad: None,
                    }));
                }
            },
        },
    };
    let verifier = match &origin {
        Some(origin) if !covered.is_empty() || expected.checkpoint.is_some() => {
            if keys.is_empty() {
                return Ok(Err(Failure {
                    error: "no trusted key: the database publishes none and there is no ledger.key; give \
                            the log's verifier keys with --key or --key-file"
                        .into(),
                    first_bad: None,
                }));
            }
            Some(
                CheckpointVerifier::new(origin, keys.iter().map(|k| k.key.clone()).collect())
                    .map_err(|e| anyhow!("--origin: {e}"))?,
            )
        }
        _ => None,
    };
    // The outside checkpoint: signed by a trusted key, for this log.
    let known = match (&expected.checkpoint, &verifier) {
        (Some(k), Some(verifier)) => match k.verify(verifier) {
            Ok(cp) => Some((cp, k.known.clone())),
            Err(e) => return Ok(Err(e.into())),
        },
        (Some(k), None) => {
            return Ok(Err(Failure {
                error: format!(
                    "{} is not acceptable: it is not a signed checkpoint (give --origin to see why)",
                    k.known
                ),
                first_bad: None,
            }));
        }
        (None, _) => None,
    };
    let verified = match &verifier {
        Some(verifier) if !covered.is_empty() => {
            let notes: Vec<&str> = covered.iter().map(|c| c.note.as_str()).collect();
            match verify_checkpoints(&notes, verifier) {
                Ok(v) => v,
                Err(e) => {
                    // Name the checkpoint by its size, not its position in this list.
                    let error = match &e {
                        VerifyError::Checkpoint { position, error } => format!(
                            "the checkpoint of tree size {} is not acceptable: {error}",
                            covered[*position].size
                        ),
                        _ => e.to_string(),
                    };
                    return Ok(Err(Failure {
                        error,
                        first_bad: None,
                    }));
                }
            }
        }
        _ => Vec::new(),
    };
    let mut verifier = match LogVerifier::with_checkpoints(
        verified,
        VerifyOptions {
            decode_entries: strict,
            progress_every: 0,
        },
    ) {
        Ok(v) => v,
        Err(e) => return Ok(Err(e.into())),
    };
    if let Some((cp, known)) = &known
        && let Err(e) = verifier.require_checkpoint(cp.clone(), known)
    {
        return Ok(Err(e.into()));
    }
    if let Some(min) = expected.min_size {
        verifier.require_min_size(min);
    }

    // Pages are read ahead while the previous one is verified.
    let total = head.size();
    // Readers are tasks of their own, so they keep reading while this one hashes (the verifier is
    // CPU-bound: polled in the same task, a reader would stall for each page), and there are two of
    // them, on two connections, taking pages in turn: the driver's per-row cost, not SQL, is what
    // reading 1M rows spends its time on.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<anyhow::Result<Vec<LogRecord>>>(4);
    let fetch = tokio::spawn(read_pages(shared.clone(), total, tx));
    let mut beyond_head = false;
    // What each `policy_change` entry says it activated: version → (entry, file hashes).
    let mut activations = Activations::new();
    let check = async {
        let checked = async {
            while let Some(page) = rx.recv().await {
                for record in &page? {
                    if record.seq >= total {
                        beyond_head = true;
                        return Ok(Ok(()));
                    }
                    if let Err(e) = verifier.push(record) {
                        return Ok(Err(Failure::from(e)));
                    }
                    note_activation(&mut activations, record);
                }
                progress.update(|| format!("verifying entries: {}", of_total(verifier.entries(), total)));
            }
            Ok::<_, anyhow::Error>(Ok(()))
        }
        .await;
        // Stops the reader if verification ended first.
        rx.close();
        checked
    };
    let checked = check.await;
    let _ = fetch.await;
    if let Err(failure) = checked? {
        return Ok(Err(failure));
    }
    progress.finish();
    let report = match verifier.finish() {
        Ok(r) => r,
        Err(e) => return Ok(Err(e.into())),
    };
    if let Some(failure) = head_mismatch(&head, &report) {
        return Ok(Err(failure));
    }
    // Rows past the head read first: appended since (fine), or written outside an append (not).
    let mut appended_meanwhile = 0;
    if beyond_head || !later.is_empty() {
        let now = store.ledger_head().await.context("reading the ledger's head")?;
        if now.size() == head.size() {
            let error = if beyond_head {
                format!(
                    "an entry past the stored head ({} entries) is in the database: entries {}.. were \
                     not appended by Warden",
                    head.size(),
                    head.size()
                )
            } else {
                format!(
                    "a checkpoint of tree size {} is stored but the log has {} entries",
                    later[0].size,
                    head.size()
                )
            };
            return Ok(Err(Failure {
                error,
                first_bad: beyond_head.then_some(head.size()),
            }));
        }
        appended_meanwhile = now.size() - head.size();
    }
    if let Err(failure) = check_policy_sets(&policy_sets, &activations) {
        return Ok(Err(failure));
    }
    Ok(Ok(StoreVerification {
        report,
        origin,
        appended_meanwhile,
        known: known.map(|(cp, _)| cp),
        policy_sets: policy_sets.len(),
    }))
}

/// Version → the last entry that activated it and the file hashes it recorded (`None`: an entry from
/// before per-file hashes).
type Activations = HashMap<String, (u64, Option<std::collections::BTreeMap<String, String>>)>;

/// Remembers what a `policy_change` entry activated (cheap for every other entry: a byte search).
fn note_activation(activations: &mut Activations, record: &LogRecord) {
    if !policy_evidence::may_be_policy_change(&record.bytes) {
        return;
    }
    // An entry that does not decode is the verifier's to report (with --strict); here it activated
    // nothing.
    if let Ok(e) = EncodedEntry::decode(record.bytes.clone())
        && let Some((version, hashes)) = policy_evidence::activation_of(e.entry())
    {
        activations.insert(version, (record.seq, hashes));
    }
}

/// Every policy set the store holds an activation of, with when it was last activated and as what.
struct StoredSet {
    set: PolicyVersion,
    last: warden_store::PolicyActivation,
}

async fn stored_policy_sets(store: &dyn Store) -> anyhow::Result<Vec<StoredSet>> {
    let history = store
        .policy_history(u32::MAX)
        .await
        .context("reading the policy history")?;
    let mut out: Vec<StoredSet> = Vec::new();
    // Newest first: the first activation seen of a version is its last.
    for a in history {
        let Some(v) = &a.version else { continue };
        if out.iter().any(|s| s.set.version == *v) {
            continue;
        }
        let set = store
            .policy_version(v)
            .await
            .with_context(|| format!("reading policy set {v}"))?
            .ok_or_else(|| anyhow!("the policy history names set {v}, which the database does not hold"))?;
        out.push(StoredSet { set, last: a });
    }
    Ok(out)
}

/// Each stored set: its files hash to its version, and a `policy_change` entry of the verified log
/// activated that version. The message names the set and, from the entry's file hashes, the file.
fn check_policy_sets(sets: &[StoredSet], activations: &Activations) -> Result<(), Failure> {
    for s in sets {
        let v = &s.set.version;
        let when = format!(
            "last made {} on {} by {}",
            s.last.role.as_str(),
            output::time(&s.last.at),
            crate::client::printable(&s.last.by)
        );
        let activation = activations.get(v);
        let actual = policy_evidence::set_version(&s.set.files);
        if actual != *v {
            let files = s
                .set
                .files
                .keys()
                .map(|n| format!("`{}`", n.escape_debug()))
                .collect::<Vec<_>>()
                .join(", ");
            let detail = match activation {
                Some((seq, Some(hashes))) => {
                    let changed = policy_evidence::changed_files(&s.set.files, hashes);
                    format!(
                        "compared with the file hashes ledger entry {seq} recorded when it was activated: {}",
                        if changed.is_empty() {
                            "every file matches, the version does not".to_owned()
                        } else {
                            changed.join(", ")
                        }
                    )
                }
                Some((seq, None)) => format!(
                    "ledger entry {seq} that activated it records no file hashes, so the changed file cannot be \
                     named; the stored set holds {files}"
                ),
                None => format!("no ledger entry activated it either; the stored set holds {files}"),
            };
            return Err(Failure {
                error: format!(
                    "policy set {} ({when}) does not match its content hash (its files hash to {actual}): its text \
                     was changed in the database after it was activated; {detail}",
                    v.escape_debug()
                ),
                first_bad: None,
            });
        }
        if activation.is_none() {
            return Err(Failure {
                error: format!(
                    "policy set {} ({when}) is stored as activated, but no ledger entry activated it: the activation \
                     was written into the database, not made through Warden",
                    v.escape_debug()
                ),
                first_bad: None,
            });
        }
    }
    Ok(())
}

/// The stored head must be the tree the entries make.
fn head_mismatch(head: &Frontier, report: &VerifyReport) -> Option<Failure> {
    if head.size() != report.entries {
        return Some(Failure {
            error: format!(
                "the stored head says the log has {} entries, but {} were found: entries {}.. are missing",
                head.size(),
                report.entries,
                report.entries
            ),
            first_bad: Some(report.entries),
        });
    }
    if head.size() > 0 && head.root() != report.root {
        return Some(Failure {
            error: format!(
                "the stored head (tree size {}) does not match the tree the entries make",
                head.size()
            ),
            first_bad: None,
        });
    }
    None
}

/// Reads pages `k * PAGE ..` with [`READERS`] queries in flight, and sends them in order.
async fn read_pages(
    store: Arc<dyn Store>,
    end: u64,
    tx: tokio::sync::mpsc::Sender<anyhow::Result<Vec<LogRecord>>>,
) {
    let read = |from: u64| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .ledger_records(from, PAGE, &LedgerFilter::default())
                .await
                .map_err(|e| anyhow::Error::new(e).context(format!("reading entries from {from}")))
        })
    };
    let mut next_from = 0u64;
    let mut in_flight = VecDeque::new();
    for _ in 0..READERS {
        in_flight.push_back(read(next_from));
        next_from += u64::from(PAGE);
    }
    while let Some(handle) = in_flight.pop_front() {
        let page = match handle.await {
            Ok(p) => p,
            Err(e) => Err(anyhow!("a reader task failed: {e}")),
        };
        let last = match &page {
            Ok(p) if p.len() == PAGE as usize => p.last().map(|r| r.seq),
            _ => None,
        };
        let more = matches!(last, Some(seq) if seq < end);
        if page.as_ref().is_ok_and(Vec::is_empty) {
            return;
        }
        if tx.send(page).await.is_err() || !more {
            return;
        }
        in_flight.push_back(read(next_from));
        next_from += u64::from(PAGE);
    }
}

/// Pages read at once by `audit verify`.
const READERS: usize = 2;

async fn verify_bundle_file(
    format: Format,
    file: &Path,
    pinned: Option<Vec<TrustedKey>>,
    origin: Option<String>,
    expected: &Expected,
    progress: bool,
) -> anyhow::Result<()> {
    let f = std::fs::File::open(file).with_context(|| format!("cannot read bundle {}", file.display()))?;
    let trust = BundleTrust {
        origin,
        keys: pinned.as_ref().map(|k| k.iter().map(|k| k.key.clone()).collect()),
    };
    let mut line = ProgressLine::new(progress);
    let want = expected.clone();
    let result = tokio::task::spawn_blocking(move || {
        let r = warden_ledger::verify_bundle_expecting(BufReader::new(f), &trust, &want, |p| {
            line.update(|| format!("verifying bundle entries: {}", p.entries));
        });
        line.finish();
        r
    })
    .await
    .context("the verification thread failed")?;
    let r = match result {
        Ok(r) => r,
        Err(e) => {
            let failure = Failure::from(e);
            return Err(verification_failed(
                format,
                "bundle",
                &failure.error,
                failure.first_bad,
            ));
        }
    };
    print_bundle_report(format, file, &r, pinned.as_deref(), expected)?;
    if !r.policy_versions_missing.is_empty() {
        eprintln!(
            "note: decisions name policy versions the bundle does not carry: {}",
            r.policy_versions_missing.join(", ")
        );
    }
    if !r.complete {
        eprintln!(
            "note: a filtered bundle proves that each of its entries is in the log at its position; it \
             cannot prove that no other entry matched the filter"
        );
    }
    if r.keys_from_bundle {
        eprintln!(
            "warning: the trusted keys came from the bundle itself; whoever made the bundle could have \
             put any key there. Pin the log's keys with --key or --key-file."
        );
    }
    Ok(())
}

fn scope_text(s: &Scope) -> String {
    if s.complete {
        return "complete".into();
    }
    let mut parts = vec!["filtered".to_owned()];
    if let Some(t) = &s.since {
        parts.push(format!("since {}", output::time(t)));
    }
    if let Some(t) = &s.until {
        parts.push(format!("until {}", output::time(t)));
    }
    if let Some(a) = &s.agent {
        parts.push(format!("agent {a}"));
    }
    parts.join(", ")
}

fn print_bundle_report(
    format: Format,
    file: &Path,
    r: &BundleReport,
    pinned: Option<&[TrustedKey]>,
    expected: &Expected,
) -> anyhow::Result<()> {
    let keys = match pinned {
        Some(k) => keys_line(k),
        None => "the bundle's own".into(),
    };
    let known = r.known_checkpoint.and_then(|size| {
        let k = expected.checkpoint.as_ref()?;
        let cp = peek_checkpoint(&k.note)?;
        (cp.size == size).then_some(cp)
    });
    let (checkpoint, min_size) = expected_json(expected, known.as_ref());
    match format {
        Format::Json => output::stdout(&pretty(&json!({
            "verified": true,
            "bundle": file.display().to_string(),
            "origin": r.origin,
            "complete": r.complete,
            "scope": r.scope,
            "entries": r.entries,
            "first_seq": r.first_seq,
            "last_seq": r.last_seq,
            "contiguous": r.contiguous,
            "checkpoints": r.checkpoints,
            "latest_checkpoint": r.latest_checkpoint.size,
            "root": r.latest_checkpoint.root.to_hex(),
            "keys": pinned.map(keys_json),
            "keys_from_bundle": r.keys_from_bundle,
            "policy_versions_referenced": r.policy_versions_referenced,
            "policy_versions_missing": r.policy_versions_missing,
            "policy_versions_verified": r.policy_versions_verified,
            "policy_versions_activated": r.policy_versions_activated,
            "checkpoint": checkpoint,
            "min_size": min_size,
            "redaction_key": r.redaction_key,
        }))),
        Format::Table => {
            let seqs = match (r.first_seq, r.last_seq) {
                (Some(a), Some(b)) => format!("{a}..{b}{}", if r.contiguous { "" } else { " (with gaps)" }),
                _ => String::new(),
            };
            let mut f = Fields::new();
            f.add("result", "verified")
                .add("bundle", file.display().to_string())
                .add("origin", r.origin.clone())
                .add("scope", scope_text(&r.scope))
                .add("entries", r.entries.to_string())
                .add("sequence_numbers", seqs)
                .add("checkpoints", r.checkpoints.to_string())
                .add("latest_checkpoint", r.latest_checkpoint.size.to_string())
                .add("root", r.latest_checkpoint.root.to_hex());
            expected_fields(&mut f, expected, known.as_ref());
            f.add("keys", keys)
                .add("policy_versions", r.policy_versions_referenced.join(", "))
                .add("redaction_key", r.redaction_key.clone().unwrap_or_default());
            output::stdout(&f.render())
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// audit export

/// The deployment's redaction key fingerprint, if its file exists and can be read.
fn redaction_fingerprint(data_dir: &Path) -> anyhow::Result<Option<String>> {
    let path = data_dir.join(REDACTION_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    let text = match read_small(&path, "redaction key") {
        Ok(t) => warden_core::Secret::new(t),
        Err(e) => {
            eprintln!("warning: {e:#}; the bundle will not name the redaction key");
            return Ok(None);
        }
    };
    let bytes = warden_core::Secret::new(hex::decode(text.expose().trim()).map_err(|_| {
        anyhow!(
            "{} is not a redaction key: expected 64 hexadecimal digits",
            path.display()
        )
    })?);
    let key = RedactionKey::from_bytes(bytes.expose())
        .map_err(|e| anyhow!("{} is not a redaction key: {e}", path.display()))?;
    Ok(Some(key.fingerprint()))
}

/// The entries an export reads, from the blocking thread: pages from the async store, up to `end`,
/// each decoded and checked against its stored leaf hash.
struct ExportEntries {
    handle: Handle,
    store: Arc<dyn Store>,
    filter: LedgerFilter,
    from: u64,
    end: u64,
    buffer: VecDeque<LogRecord>,
    done: bool,
    /// For filtered bundles: the nodes of each entry's inclusion proof in the tree of size `end` are
    /// fetched in one call as the entry is handed out, just before its proof is made.
    prefetch: Option<Arc<NodeCache>>,
}

impl ExportEntries {
    fn new(handle: Handle, store: Arc<dyn Store>, filter: LedgerFilter, end: u64) -> Self {
        Self {
            handle,
            store,
            filter,
            from: 0,
            end,
            buffer: VecDeque::new(),
            done: end == 0,
            prefetch: None,
        }
    }

    fn prefetching(mut self, cache: Arc<NodeCache>) -> Self {
        self.prefetch = Some(cache);
        self
    }
}

impl Iterator for ExportEntries {
    type Item = Result<EncodedEntry, String>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buffer.is_empty() && !self.done {
            let page = self
                .handle
                .block_on(self.store.ledger_records(self.from, PAGE, &self.filter));
            let page = match page {
                Ok(p) => p,
                Err(e) => {
                    self.done = true;
                    return Some(Err(format!("reading entries from {}: {e}", self.from)));
                }
            };
            match page.last() {
                Some(last) if page.len() == PAGE as usize && last.seq + 1 < self.end => {
                    self.from = last.seq + 1;
                }
                _ => self.done = true,
            }
            let end = self.end;
            self.buffer.extend(page.into_iter().filter(|r| r.seq < end));
        }
        let record = self.buffer.pop_front()?;
        let seq = record.seq;
        let encoded = EncodedEntry::decode(record.bytes)
            .map_err(|e| format!("entry {seq}: {e}; run `warden audit verify`"))
            .and_then(|e| match record.stored_hash {
                Some(h) if h != e.leaf_hash() => Err(format!(
                    "entry {seq}: its bytes do not hash to the stored leaf hash; run `warden audit verify`"
                )),
                _ if e.seq() != seq => Err(format!(
                    "entry {seq}: its bytes say sequence number {}; run `warden audit verify`",
                    e.seq()
                )),
                _ => Ok(e),
            });
        if let (Some(cache), Ok(_)) = (&self.prefetch, &encoded)
            && let Ok(plan) = warden_ledger::inclusion_plan(seq, self.end)
        {
            // A failure here is reported when the proof is made.
            cache.prefetch(&self.handle, self.store.as_ref(), plan.node_ids());
        }
        Some(encoded)
    }
}

/// A stored policy set as a bundle carries it: refused when its text does not hash to its version
/// (an export must not carry evidence that fails), with the `policy_change` entry that activated it
/// and that entry's inclusion proof in the tree of `tree_size` when one is found.
async fn policy_blob(store: &dyn Store, set: PolicyVersion, tree_size: u64) -> anyhow::Result<PolicyBlob> {
    let actual = policy_evidence::set_version(&set.files);
    if actual != set.version {
        bail!(
            "policy set {} in the database does not match its content hash (its files hash to {actual}); nothing \
             was exported: run `warden audit verify`, which names the changed file",
            set.version.escape_debug()
        );
    }
    let activation = activation_entry(store, &set.version, tree_size).await?;
    if activation.is_none() {
        eprintln!(
            "warning: no ledger entry that activated policy set {} was found under the latest checkpoint; the \
             bundle carries the set without it (its text is still checked against its hash)",
            set.version
        );
    }
    Ok(PolicyBlob {
        data: serde_json::to_vec(&set.files).context("encoding a policy set")?,
        version: set.version,
        media_type: POLICY_MEDIA_TYPE.into(),
        activation,
    })
}

/// The newest `policy_change` entry below `tree_size` that activated `version`, found by the times
/// the policy history gives (an activation and its entry share their time), with its inclusion proof.
async fn activation_entry(
    store: &dyn Store,
    version: &str,
    tree_size: u64,
) -> anyhow::Result<Option<warden_ledger::BundleEntry>> {
    let history = store
        .policy_history(u32::MAX)
        .await
        .context("reading the policy history")?;
    for a in history.iter().filter(|a| a.version.as_deref() == Some(version)) {
        let filter = LedgerFilter {
            since: Some(a.at - chrono::Duration::seconds(1)),
            until: Some(a.at + chrono::Duration::seconds(1)),
            agent: None,
        };
        let mut from = 0;
        let mut found = None;
        loop {
            let page = store
                .ledger_records(from, PAGE, &filter)
                .await
                .context("reading the ledger")?;
            for r in page.iter().filter(|r| r.seq < tree_size) {
                if !policy_evidence::may_be_policy_change(&r.bytes) {
                    continue;
                }
                let Ok(e) = EncodedEntry::decode(r.bytes.clone()) else {
                    continue;
                };
                if policy_evidence::activation_of(e.entry()).is_some_and(|(v, _)| v == version) {
                    found = Some(e);
                }
            }
            match page.last() {
                Some(last) if page.len() == PAGE as usize => from = last.seq + 1,
                _ => break,
            }
        }
        if let Some(e) = found {
            let proof = warden_store::inclusion_proof(store, e.seq(), tree_size)
                .await
                .map_err(|err| anyhow!("the inclusion proof of ledger entry {}: {err}", e.seq()))?;
            return Ok(Some(warden_ledger::BundleEntry {
                seq: e.seq(),
                leaf_hash: e.leaf_hash(),
                canonical: e.bytes().to_vec(),
                entry: e.entry().to_value().map_err(|err| anyhow!("{err}"))?,
                inclusion: Some(proof),
            }));
        }
    }
    Ok(None)
}

/// Merkle nodes already read, shared by the entry reader (which prefetches) and [`StoreNodes`].
/// Proofs of neighbouring entries share most of their nodes. Bounded: cleared when full.
#[derive(Default)]
struct NodeCache(Mutex<HashMap<NodeId, Hash>>);

/// Nodes kept at most (about 100 MB).
const MAX_CACHED_NODES: usize = 1 << 20;

impl NodeCache {
    fn get(&self, id: &NodeId) -> Option<Hash> {
        self.0.lock().ok()?.get(id).copied()
    }

    fn insert_all(&self, nodes: impl IntoIterator<Item = (NodeId, Hash)>) {
        if let Ok(mut map) = self.0.lock() {
            if map.len() >= MAX_CACHED_NODES {
                map.clear();
            }
            map.extend(nodes);
        }
    }

    /// Reads the nodes of `ids` not cached yet, in one call.
    fn prefetch(&self, handle: &Handle, store: &dyn Store, ids: Vec<NodeId>) {
        let missing: Vec<NodeId> = ids.into_iter().filter(|id| self.get(id).is_none()).collect();
        if missing.is_empty() {
            return;
        }
        if let Ok(hashes) = handle.block_on(store.ledger_nodes(&missing)) {
            self.insert_all(missing.into_iter().zip(hashes));
        }
    }
}

/// Merkle nodes for proofs, read from the async store from the blocking thread, through the cache.
struct StoreNodes {
    handle: Handle,
    store: Arc<dyn Store>,
    cache: Arc<NodeCache>,
}

#[derive(Debug)]
enum NodeError {
    Merkle(MerkleError),
    Store(String),
}

impl From<MerkleError> for NodeError {
    fn from(e: MerkleError) -> Self {
        NodeError::Merkle(e)
    }
}

impl std::fmt::Display for NodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NodeError::Merkle(e) => write!(f, "{e}"),
            NodeError::Store(e) => write!(f, "reading the ledger's Merkle nodes: {e}"),
        }
    }
}

impl HashSource for StoreNodes {
    type Error = NodeError;

    fn node_hash(&self, id: NodeId) -> Result<Hash, NodeError> {
        if let Some(h) = self.cache.get(&id) {
            return Ok(h);
        }
        let hashes = self
            .handle
            .block_on(self.store.ledger_nodes(&[id]))
            .map_err(|e| NodeError::Store(e.to_string()))?;
        let h = *hashes
            .first()
            .ok_or(NodeError::Merkle(MerkleError::MissingNode(id)))?;
        self.cache.insert_all([(id, h)]);
        Ok(h)
    }
}

/// The output file: written under a temporary name in its directory, renamed when complete.
fn temp_output(out: &Path) -> anyhow::Result<tempfile::NamedTempFile> {
    if out.exists() {
        bail!(
            "{} already exists; refusing to overwrite it (choose a new file)",
            out.display()
        );
    }
    let dir = match out.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    // tempfile creates files with mode 0600 on Unix: right for evidence.
    tempfile::Builder::new()
        .prefix(".warden-export-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a file in {}", dir.display()))
}

fn persist(tmp: tempfile::NamedTempFile, out: &Path) -> anyhow::Result<()> {
    tmp.as_file()
        .sync_all()
        .with_context(|| format!("writing {}", out.display()))?;
    tmp.persist_noclobber(out)
        .map_err(|e| anyhow!("cannot create {}: {}", out.display(), e.error))?;
    Ok(())
}

pub async fn export(format: Format, args: AuditExportArgs) -> anyhow::Result<()> {
    let since = args.since.map(|t| t.0);
    let until = args.until.map(|t| t.0);
    if let (Some(s), Some(u)) = (since, until)
        && s >= u
    {
        return Err(UsageError("--since must be before --until".into()).into());
    }
    let tmp = temp_output(&args.out)?;
    let opened = open_store(&args.store).await?;
    let result = export_from(format, &args, &opened, since, until, tmp).await;
    opened.store.close().await;
    result
}

async fn export_from(
    format: Format,
    args: &AuditExportArgs,
    opened: &Opened,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    tmp: tempfile::NamedTempFile,
) -> anyhow::Result<()> {
    let store = opened.store.clone();
    let latest = store
        .latest_ledger_checkpoint()
        .await
        .context("reading the ledger's checkpoints")?
        .ok_or_else(|| {
            anyhow!(
                "the ledger has no signed checkpoint yet: there is nothing that can be exported with proof"
            )
        })?;
    let cp = peek_checkpoint(&latest.note).ok_or_else(|| {
        anyhow!(
            "the latest checkpoint (tree size {}) is malformed; run `warden audit verify`",
            latest.size
        )
    })?;
    let head = store.ledger_head().await.context("reading the ledger's head")?;
    let filter = LedgerFilter {
        since,
        until,
        agent: args.agent.as_ref().map(|a| a.0.clone()),
    };
    let scope = Scope {
        complete: filter == LedgerFilter::default(),
        since,
        until,
        agent: filter.agent.clone(),
    };
    let handle = Handle::current();
    let mut progress = ProgressLine::new(args.progress);
    let out_path = args.out.clone();

    let (entries, extra) = match args.format {
        ExportFormat::Ocsf => {
            let options = OcsfOptions {
                log_name: Some(cp.origin.clone()),
                ..OcsfOptions::default()
            };
            let reader = ExportEntries::new(handle, store.clone(), filter, cp.size);
            let written =
                tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, tempfile::NamedTempFile)> {
                    let mut count = 0u64;
                    let mut w = BufWriter::new(tmp);
                    for e in reader {
                        let e = e.map_err(|e| anyhow!("cannot export: {e}"))?;
                        warden_ledger::write_ocsf_lines(&mut w, std::iter::once(&e), &options)
                            .with_context(|| format!("writing {}", out_path.display()))?;
                        count += 1;
                        if count.is_multiple_of(1024) {
                            progress.update(|| format!("exporting entries: {count}"));
                        }
                    }
                    progress.finish();
                    let tmp = w
                        .into_inner()
                        .map_err(|e| anyhow!("writing {}: {}", out_path.display(), e.error()))?;
                    Ok((count, tmp))
                })
                .await
                .context("the export thread failed")??;
            persist(written.1, &args.out)?;
            (written.0, Vec::new())
        }
        ExportFormat::Bundle => {
            let keys = deployment_keys(store.as_ref(), &opened.data_dir).await?;
            let notes: Vec<String> = if scope.complete {
                all_checkpoints(store.as_ref())
                    .await?
                    .into_iter()
                    .filter(|c| c.size <= cp.size)
                    .map(|c| c.note)
                    .collect()
            } else {
                vec![latest.note.clone()]
            };
            let redaction_key = redaction_fingerprint(&opened.data_dir)?;

            // First pass: the policy versions the exported entries name (the bundle carries them
            // before the entries).
            let reader = ExportEntries::new(handle.clone(), store.clone(), filter.clone(), cp.size);
            let versions = tokio::task::spawn_blocking(move || -> anyhow::Result<BTreeSet<String>> {
                let mut versions = BTreeSet::new();
                for e in reader {
                    let e = e.map_err(|e| anyhow!("cannot export: {e}"))?;
                    if let Some(v) = e.entry().body.get("policy_version").and_then(Value::as_str) {
                        versions.insert(v.to_owned());
                    }
                }
                Ok(versions)
            })
            .await
            .context("the export thread failed")??;
            let mut policies = Vec::new();
            let mut missing = Vec::new();
            for v in versions {
                match store
                    .policy_version(&v)
                    .await
                    .with_context(|| format!("reading policy version {v}"))?
                {
                    Some(p) => policies.push(policy_blob(store.as_ref(), p, cp.size).await?),
                    None => missing.push(v),
                }
            }
            let spec = ExportSpec {
                origin: cp.origin.clone(),
                created_at: Utc::now(),
                scope: scope.clone(),
                keys: keys.iter().map(|k| k.key.clone()).collect(),
                policies,
                checkpoints: notes,
                redaction_key,
                generator: Some(format!("warden {}", env!("CARGO_PKG_VERSION"))),
            };
            let cache = Arc::new(NodeCache::default());
            let mut reader = ExportEntries::new(handle.clone(), store.clone(), filter, cp.size);
            if !scope.complete {
                reader = reader.prefetching(cache.clone());
            }
            let nodes = StoreNodes {
                handle,
                store: store.clone(),
                cache,
            };
            let written =
                tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, tempfile::NamedTempFile)> {
                    let mut count = 0u64;
                    let counted = reader.inspect(|_| {
                        count += 1;
                        if count.is_multiple_of(1024) {
                            progress.update(|| format!("exporting entries: {count}"));
                        }
                    });
                    let w = warden_ledger::export_bundle(BufWriter::new(tmp), &spec, &nodes, counted)
                        .map_err(|e| anyhow!("{e}"))?;
                    progress.finish();
                    let tmp = w
                        .into_inner()
                        .map_err(|e| anyhow!("writing {}: {}", out_path.display(), e.error()))?;
                    Ok((count, tmp))
                })
                .await
                .context("the export thread failed")??;
            persist(written.1, &args.out)?;
            if !missing.is_empty() {
                eprintln!(
                    "warning: decisions name policy versions the database does not have: {}",
                    missing.join(", ")
                );
            }
            (written.0, missing)
        }
    };

    let unexported = head.size().saturating_sub(cp.size);
    let format_name = match args.format {
        ExportFormat::Bundle => "bundle",
        ExportFormat::Ocsf => "ocsf",
    };
    match format {
        Format::Json => output::stdout(&pretty(&json!({
            "out": args.out.display().to_string(),
            "format": format_name,
            "origin": cp.origin,
            "scope": scope,
            "entries": entries,
            "tree_size": cp.size,
            "entries_after_latest_checkpoint": unexported,
            "policy_versions_missing": extra,
        })))?,
        Format::Table => output::stdout(
            &Fields::new()
                .add("out", args.out.display().to_string())
                .add("format", format_name)
                .add("origin", cp.origin.clone())
                .add("scope", scope_text(&scope))
                .add("entries", entries.to_string())
                .add("tree_size", cp.size.to_string())
                .render(),
        )?,
    }
    if unexported > 0 {
        eprintln!(
            "note: {unexported} newer entries are not covered by a signed checkpoint yet and were not exported"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------------
// Tail

/// How long one long poll of `audit tail --follow` waits on the server, seconds.
const TAIL_WAIT_SECS: &str = "25";

/// One table line for an entry: what a person scanning the log needs.
fn tail_line(entry: &Value) -> String {
    let body = &entry["body"];
    let s = |v: &Value| v.as_str().map(crate::client::printable).unwrap_or_default();
    let what = if let Some(outcome) = body["outcome"].as_str() {
        let mut w = format!("{outcome} {}", s(&body["action"]));
        if let Some(r) = body["resource"].as_str() {
            w.push(' ');
            w.push_str(&crate::client::printable(r));
        }
        if let Some(reason) = body["reasons"].get(0).and_then(Value::as_str) {
            w.push_str(" — ");
            w.push_str(&crate::client::printable(reason));
        }
        w
    } else {
        s(&body["op"])
    };
    format!(
        "{:>8}  {}  {:<16}  {}  {}  {}",
        entry["seq"],
        s(&entry["at"]),
        s(&entry["kind"]),
        s(&entry["actor"]),
        s(&entry["subject"]),
        what
    )
}

/// `warden audit tail`: the newest entries, then (with --follow) new ones as they are committed.
pub async fn tail(
    client: &crate::client::Client,
    format: Format,
    args: crate::cli::AuditTailArgs,
) -> anyhow::Result<()> {
    let agent = args.agent.as_ref().map(|a| a.to_string());
    let query = |from: u64, wait: Option<&str>| {
        let mut q = vec![("from", from.to_string()), ("limit", "1000".to_owned())];
        if let Some(a) = &agent {
            q.push(("agent", a.clone()));
        }
        if let Some(w) = wait {
            q.push(("wait", w.to_owned()));
        }
        q
    };
    let get = |q: Vec<(&'static str, String)>| async move {
        let pairs: Vec<(&str, &str)> = q.iter().map(|(k, v)| (*k, v.as_str())).collect();
        client.get(&["v1", "audit", "entries"], &pairs).await
    };
    let mut from = match args.from {
        Some(f) => f,
        None => {
            let probe = get(query(u64::MAX >> 11, None)).await?;
            let size = probe["size"].as_u64().unwrap_or(0);
            if agent.is_some() {
                size
            } else {
                size.saturating_sub(u64::from(args.lines))
            }
        }
    };
    let mut out = std::io::stdout().lock();
    loop {
        let wait = args.follow.then_some(TAIL_WAIT_SECS);
        let page = get(query(from, wait)).await?;
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        for e in &entries {
            let line = match format {
                Format::Json => e["entry"].to_string(),
                Format::Table => tail_line(&e["entry"]),
            };
            writeln!(out, "{line}").context("writing to stdout")?;
        }
        out.flush().context("writing to stdout")?;
        from = page["next"].as_u64().unwrap_or(from);
        if entries.is_empty() && !args.follow {
            return Ok(());
        }
        if !args.follow && entries.len() < 1000 {
            return Ok(());
        }
    }
}

// ---------------------------------------------------------------------------------------------------
// Checkpoints kept elsewhere

/// `warden audit checkpoint --out FILE`: the server's latest checkpoint, written to FILE only when it
/// is at least as large as the one FILE holds and consistent with it.
pub async fn save_checkpoint(
    client: &crate::client::Client,
    format: Format,
    args: crate::cli::AuditCheckpointArgs,
) -> anyhow::Result<()> {
    let pinned = pinned_keys(&args.keys, args.key_file.as_deref())?;
    let out = &args.out;
    let saved = match std::fs::symlink_metadata(out) {
        Ok(m) if m.is_file() => Some(read_small(out, "checkpoint file")?),
        Ok(_) => bail!("{} exists and is not a regular file", out.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", out.display())),
    };
    let latest = client.get(&["v1", "audit", "checkpoint"], &[]).await?;
    let field = |name: &str| {
        latest[name]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| anyhow!("the server's checkpoint has no `{name}`"))
    };
    let note = field("note")?;
    let keys = match pinned {
        Some(k) => k,
        None => {
            let mut keys = Vec::new();
            for k in latest["keys"].as_array().into_iter().flatten() {
                let text = k.as_str().unwrap_or_default();
                let key = VerifierKey::parse(text).map_err(|e| {
                    anyhow!(
                        "the server publishes a verifier key that does not parse (`{}`): {e}",
                        crate::client::printable(text)
                    )
                })?;
                push_key(&mut keys, key, "server");
            }
            keys
        }
    };
    if keys.is_empty() {
        bail!(
            "no trusted key: the server publishes none; give the log's verifier keys with --key or --key-file"
        );
    }
    // The saved checkpoint decides which log this is; the first one, the server's.
    let origin = match saved.as_deref().and_then(peek_checkpoint) {
        Some(cp) => cp.origin,
        None => field("origin")?,
    };
    let verifier = CheckpointVerifier::new(&origin, keys.iter().map(|k| k.key.clone()).collect())
        .map_err(|e| anyhow!("the log's origin `{}`: {e}", origin.escape_debug()))?;
    let new = verifier
        .verify(&note)
        .map_err(|e| anyhow!("the server's latest checkpoint is not acceptable: {e}"))?;
    let unchanged = || format!("{} is unchanged", out.display());
    let previous = match &saved {
        None => None,
        Some(text) => {
            let old = verifier
                .verify(text)
                .map_err(|e| anyhow!("{} is not acceptable: {e}; {}", out.display(), unchanged()))?;
            if old.size > new.size {
                bail!(
                    "the server's latest checkpoint covers {} entries, fewer than the {} of the one saved in {}: \
                     the log was cut back (or this is not the server that signed it); a smaller checkpoint \
                     never replaces a larger one, {}",
                    new.size,
                    old.size,
                    out.display(),
                    unchanged()
                );
            }
            let proof = if old.size == 0 || old.size == new.size {
                Vec::new()
            } else {
                let (first, second) = (old.size.to_string(), new.size.to_string());
                let answer = client
                    .get(
                        &["v1", "audit", "proof", "consistency"],
                        &[("first", first.as_str()), ("second", second.as_str())],
                    )
                    .await?;
                answer["proof"]
                    .as_array()
                    .ok_or_else(|| anyhow!("the server's consistency proof has no `proof`"))?
                    .iter()
                    .map(|h| {
                        Hash::from_hex(h.as_str().unwrap_or_default())
                            .map_err(|e| anyhow!("the server's consistency proof holds a bad hash: {e}"))
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?
            };
            warden_ledger::verify_consistency(old.size, new.size, &old.root, &new.root, &proof).map_err(
                |e| {
                    anyhow!(
                        "the server's checkpoint of {} entries is not consistent with the one of {} saved in {}: \
                         the log's history was rewritten ({e}); {}",
                        new.size,
                        old.size,
                        out.display(),
                        unchanged()
                    )
                },
            )?;
            Some(old)
        }
    };
    let updated = previous.as_ref().is_none_or(|old| old.size < new.size);
    if updated {
        warden_server::checkpoint_file::write_atomically(out, note.as_bytes(), 0o600)
            .with_context(|| format!("cannot write {}", out.display()))?;
    }
    let from_server = keys.iter().any(|k| k.source != "pinned");
    match format {
        Format::Json => output::stdout(&pretty(&json!({
            "out": out.display().to_string(),
            "origin": new.origin,
            "size": new.size,
            "root": new.root.to_hex(),
            "previous_size": previous.as_ref().map(|c| c.size),
            "consistent": previous.is_some(),
            "updated": updated,
            "keys": keys_json(&keys),
            "keys_pinned": !from_server,
        })))?,
        Format::Table => {
            let mut f = Fields::new();
            f.add("out", out.display().to_string())
                .add("origin", new.origin.clone())
                .add("size", new.size.to_string())
                .add("root", new.root.to_hex());
            match &previous {
                Some(old) if updated => {
                    f.add("previous", format!("{} entries: consistent, replaced", old.size))
                }
                Some(_) => f.add("previous", "the same checkpoint: unchanged"),
                None => f.add("previous", "none: saved"),
            };
            f.add("keys", keys_line(&keys));
            output::stdout(&f.render())?;
        }
    }
    if from_server {
        eprintln!(
            "warning: the trusted keys came from the server whose checkpoint this is; pin the log's keys \
             with --key or --key-file"
        );
    }
    Ok(())
}
