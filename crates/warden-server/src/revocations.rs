//! Revocations that win when the store or the ledger cannot be written.
//!
//! A revocation (a task ended, an API token revoked, an agent suspended or retired) is never refused
//! for want of a write: refusing it would fail open. When the store cannot write it (a full disk, an
//! unreachable database), or the ledger cannot record its entry, it is **held**:
//!
//! 1. written to the revocation journal (`<data-dir>/revocations.journal`, fsynced before the answer);
//! 2. enforced on this node at once ([`HeldSet`], consulted by the task cache, API-token
//!    authentication and the token endpoint);
//! 3. retried every second, and written with its original time and actor when the store (and the
//!    ledger) take it; only then is it marked done in the journal.
//!
//! A restart in between replays the journal before the server listens, so the revoked credential
//! never comes back. The journal is preallocated (zeros written at creation), and records are written
//! in place inside it, so writing one needs no new disk space on a filesystem that overwrites in place
//! (ext4, xfs, tmpfs; not a copy-on-write one such as btrfs or ZFS): a full disk does not stop it.
//! When every held revocation is done, the used part is zeroed and reused.
//!
//! Each record is `len (u32 LE) | checksum (first 8 bytes of SHA-256 of the JSON) | JSON`; reading
//! stops at the first zero length or bad checksum (a torn write at the end is the only way to get one).
//!
//! Held revocations are enforced on this node only until they reach the store; other nodes learn of
//! them from the store when it is written (ARCHITECTURE.md, "Revocations win").

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, RwLock};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use uuid::Uuid;
use warden_core::{AgentName, ChangeContext, LifecycleAction, Task};
use warden_ledger::{EntryKind, NewEntry};
use warden_store::{Store, StoreError};

/// The journal's name in the data directory.
pub const JOURNAL_FILE: &str = "revocations.journal";
/// The journal's preallocated size: about 3,000 held revocations.
pub const JOURNAL_BYTES: u64 = 1 << 20;
/// The largest record (a revocation with its ledger entry is well under 4 KiB).
const MAX_RECORD: usize = 16 * 1024;
const HEADER: usize = 12;

/// What is revoked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revocation {
    /// A task ended (and with it every task delegated from it).
    TaskEnd { task: Uuid, reason: String },
    /// An API token revoked.
    ApiToken { token: Uuid },
    /// An agent suspended or retired (every task of it stops).
    Agent {
        agent: AgentName,
        action: LifecycleAction,
        reason: String,
    },
}

/// A ledger entry waiting to be recorded, with its original time.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub at: DateTime<Utc>,
    pub kind: EntryKind,
    pub actor: String,
    pub subject: Option<String>,
    pub body: serde_json::Value,
}

impl PendingEntry {
    pub fn of(entry: &NewEntry) -> Self {
        Self {
            at: entry.at,
            kind: entry.kind.clone(),
            actor: entry.actor.clone(),
            subject: entry.subject.clone(),
            body: entry.body.clone(),
        }
    }

    fn entry(&self) -> NewEntry {
        let e = NewEntry::new(self.at, self.kind.clone(), self.actor.clone()).body(self.body.clone());
        match &self.subject {
            Some(s) => e.subject(s.clone()),
            None => e,
        }
    }
}

/// One held item: a store write still to make, a ledger entry still to record, or both.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Held {
    pub id: Uuid,
    /// `None` once the store has it (or when only the entry was missing).
    pub revocation: Option<Revocation>,
    /// Who revoked, and when: the store write made later carries these.
    pub actor: String,
    pub at: DateTime<Utc>,
    /// The ledger entry, when the ledger could not record it.
    pub entry: Option<PendingEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Record {
    Hold {
        held: Box<Held>,
    },
    /// Part of a held item is done: the revocation reached the store, or the entry the ledger.
    Progress {
        id: Uuid,
        revocation: bool,
        entry: bool,
    },
}

/// What this node enforces while revocations are held.
#[derive(Debug, Default)]
pub struct HeldSet {
    any: AtomicBool,
    sets: RwLock<Sets>,
}

#[derive(Debug, Default)]
struct Sets {
    tasks: HashSet<Uuid>,
    tokens: HashSet<Uuid>,
    agents: HashSet<AgentName>,
}

impl HeldSet {
    fn rebuild(&self, held: &HashMap<Uuid, Held>) {
        let mut sets = Sets::default();
        for h in held.values() {
            match &h.revocation {
                Some(Revocation::TaskEnd { task, .. }) => {
                    sets.tasks.insert(*task);
                }
                Some(Revocation::ApiToken { token }) => {
                    sets.tokens.insert(*token);
                }
                Some(Revocation::Agent { agent, .. }) => {
                    sets.agents.insert(agent.clone());
                }
                None => {}
            }
        }
        let any = !(sets.tasks.is_empty() && sets.tokens.is_empty() && sets.agents.is_empty());
        *self.sets.write().unwrap_or_else(|p| p.into_inner()) = sets;
        self.any.store(any, Ordering::Release);
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Sets> {
        self.sets.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Is this API token revoked by a held revocation?
    pub fn token_revoked(&self, token: Uuid) -> bool {
        self.any.load(Ordering::Acquire) && self.read().tokens.contains(&token)
    }

    /// Is this agent suspended or retired by a held revocation?
    pub fn agent_stopped(&self, agent: &AgentName) -> bool {
        self.any.load(Ordering::Acquire) && self.read().agents.contains(agent)
    }

    /// Why a task's credentials stop working because of a held revocation: the task, one of the
    /// tasks it was delegated from, or its agent.
    pub async fn task_refusal(&self, store: &dyn Store, task: &Task) -> Option<String> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        if self.agent_stopped(&task.agent) {
            return Some(format!("agent `{}` was stopped (held revocation)", task.agent));
        }
        let mut parent = Some(task.id);
        let mut hops = 0;
        while let Some(id) = parent {
            if self.read().tasks.contains(&id) {
                return Some(format!("task `{id}` was ended (held revocation)"));
            }
            hops += 1;
            if hops > 16 {
                break;
            }
            parent = if id == task.id {
                task.parent_id
            } else {
                match store.get_task(id).await {
                    Ok(Some(t)) => t.parent_id,
                    // An ancestor that cannot be read: refuse rather than guess (fail closed).
                    Ok(None) | Err(_) => {
                        return Some(format!("task `{}`'s delegation chain cannot be checked", task.id));
                    }
                }
            };
        }
        None
    }
}

/// A revocation on its way: the context its store write takes, and its ledger entry when the ledger
/// could not record it.
#[derive(Debug)]
pub struct Revoking {
    pub ctx: ChangeContext,
    pub unrecorded: Option<PendingEntry>,
}

/// How a revocation ended.
#[derive(Debug)]
pub enum Settled<T> {
    /// The store has it.
    Written(T),
    /// The store could not take it: held (see the module docs).
    Held(HeldRevocation),
}

/// The answer to a revocation the store could not take (HTTP 202).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HeldRevocation {
    /// Always `true`.
    pub held: bool,
    /// `journaled`: enforced on this node and kept across a restart; `memory_only`: enforced on this
    /// node until it restarts (the journal could not be written either).
    pub durability: &'static str,
    pub message: String,
}

impl axum::response::IntoResponse for HeldRevocation {
    fn into_response(self) -> axum::response::Response {
        (axum::http::StatusCode::ACCEPTED, axum::Json(self)).into_response()
    }
}

/// The journal file and the held items.
#[derive(Debug)]
pub struct Revocations {
    path: PathBuf,
    inner: Mutex<Journal>,
    pub set: std::sync::Arc<HeldSet>,
}

#[derive(Debug)]
struct Journal {
    /// `None`: held in memory only (a server without a data directory, in tests).
    file: Option<File>,
    /// Where the next record goes.
    end: u64,
    held: HashMap<Uuid, Held>,
}

/// The answer a revocation handler gives when it held the revocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HoldOutcome {
    /// Journaled (fsynced) and enforced on this node: a restart keeps it.
    Journaled,
    /// Enforced on this node only until it restarts: the journal could not be written.
    MemoryOnly,
}

impl Revocations {
    /// Opens the journal in `data_dir` (creating and preallocating it), and loads every held item.
    pub fn open(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(JOURNAL_FILE);
        let created = !path.exists();
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("cannot open the revocation journal {}", path.display()))?;
        if created || file.metadata()?.len() < JOURNAL_BYTES {
            // Real zeros, not a sparse file or unwritten extents: overwriting them later needs no space.
            let zeros = vec![0u8; 64 * 1024];
            let mut at = file.metadata()?.len();
            while at < JOURNAL_BYTES {
                file.write_all_at(&zeros, at)
                    .with_context(|| format!("cannot preallocate {}", path.display()))?;
                at += zeros.len() as u64;
            }
            file.sync_all()?;
            File::open(data_dir)?.sync_all()?;
        }
        let (held, end) = read_journal(&file).with_context(|| format!("cannot read {}", path.display()))?;
        let set = std::sync::Arc::new(HeldSet::default());
        set.rebuild(&held);
        if !held.is_empty() {
            tracing::warn!(
                held = held.len(),
                "revocations held before the restart: enforcing them, writing them to the store"
            );
        }
        Ok(Self {
            path,
            inner: Mutex::new(Journal {
                file: Some(file),
                end,
                held,
            }),
            set,
        })
    }

    /// Without a journal: held revocations last until the process exits.
    pub fn memory_only(set: std::sync::Arc<HeldSet>) -> Self {
        Self {
            path: PathBuf::new(),
            inner: Mutex::new(Journal {
                file: None,
                end: 0,
                held: HashMap::new(),
            }),
            set,
        }
    }

    /// Opens the journal in `data_dir`, enforcing what it holds through `set`.
    pub fn open_with(data_dir: &Path, set: std::sync::Arc<HeldSet>) -> anyhow::Result<Self> {
        let mut r = Self::open(data_dir)?;
        set.rebuild(&r.lock().held);
        r.set = set;
        Ok(r)
    }

    /// Settles a revocation's store write: written, or held when the store could not take it (a
    /// full disk, an unreachable database). Other errors (not found, a conflict) are the caller's.
    pub fn settle<T>(
        &self,
        revoking: Revoking,
        revocation: Option<Revocation>,
        result: Result<T, StoreError>,
    ) -> Result<Settled<T>, StoreError> {
        let Revoking { ctx, unrecorded } = revoking;
        let held = |revocation| Held {
            id: Uuid::new_v4(),
            revocation,
            actor: ctx.actor.clone(),
            at: ctx.at,
            entry: unrecorded.clone(),
        };
        match result {
            Ok(v) => {
                if unrecorded.is_some() {
                    // Written, but not in the ledger yet: hold the entry alone.
                    self.hold(held(None));
                }
                Ok(Settled::Written(v))
            }
            Err(
                e @ (StoreError::Unavailable(_) | StoreError::StorageFault(_) | StoreError::Unreachable(_)),
            ) if revocation.is_some() => {
                tracing::error!(error = %e, revocation = ?revocation, by = %ctx.actor, "the store cannot take a revocation: holding it");
                let outcome = self.hold(held(revocation));
                let (durability, message) = match outcome {
                    HoldOutcome::Journaled => (
                        "journaled",
                        format!(
                            "the store did not take it ({e}); the revocation is in force on this node, kept in its \
                             revocation journal across restarts, and will be written to the store with its original \
                             time when it recovers (other nodes see it then)"
                        ),
                    ),
                    HoldOutcome::MemoryOnly => (
                        "memory_only",
                        format!(
                            "the store did not take it ({e}) and the revocation journal cannot be written either; it \
                             is in force on this node until it restarts and is retried until the store takes it"
                        ),
                    ),
                };
                Ok(Settled::Held(HeldRevocation {
                    held: true,
                    durability,
                    message,
                }))
            }
            Err(e) => Err(e),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many items are held.
    pub fn held(&self) -> usize {
        self.lock().held.len()
    }

    /// Holds a revocation (and/or its entry): enforced at once, journaled before this returns.
    pub fn hold(&self, held: Held) -> HoldOutcome {
        let mut j = self.lock();
        j.held.insert(held.id, held.clone());
        self.set.rebuild(&j.held);
        match append(&mut j, &Record::Hold { held: Box::new(held) }) {
            Ok(()) => HoldOutcome::Journaled,
            Err(e) => {
                tracing::error!(journal = %self.path.display(), error = %e, "revocation held in memory only: the journal cannot be written; it is enforced on this node until it restarts");
                HoldOutcome::MemoryOnly
            }
        }
    }

    fn progress(&self, id: Uuid, revocation: bool, entry: bool) {
        let mut j = self.lock();
        let Some(h) = j.held.get_mut(&id) else { return };
        if revocation {
            h.revocation = None;
        }
        if entry {
            h.entry = None;
        }
        if h.revocation.is_none() && h.entry.is_none() {
            j.held.remove(&id);
        }
        self.set.rebuild(&j.held);
        if let Err(e) = append(
            &mut j,
            &Record::Progress {
                id,
                revocation,
                entry,
            },
        ) {
            tracing::error!(error = %e, "cannot journal a held revocation's progress; it will be retried (idempotent)");
            return;
        }
        if let (true, Some(file)) = (j.held.is_empty(), &j.file) {
            // Everything is done: zero the used part (in place) and start again from the beginning.
            let used = usize::try_from(j.end).unwrap_or(usize::MAX);
            let zeroed = file
                .write_all_at(&vec![0u8; used], 0)
                .and_then(|()| file.sync_data());
            match zeroed {
                Ok(()) => j.end = 0,
                Err(e) => tracing::warn!(error = %e, "cannot reset the revocation journal; it keeps growing"),
            }
        }
    }

    fn snapshot(&self) -> Vec<Held> {
        self.lock().held.values().cloned().collect()
    }

    /// Writes what is held to the store and the ledger, as far as they take it. Called every second.
    pub async fn retry(&self, state: &crate::AppState) {
        for h in self.snapshot() {
            let mut done_revocation = false;
            if let Some(r) = &h.revocation {
                let ctx = ChangeContext::new(h.actor.clone(), h.at);
                match apply(state, r, &ctx).await {
                    Ok(()) => done_revocation = true,
                    Err(e) => {
                        tracing::debug!(id = %h.id, error = %e, "held revocation not written yet");
                        continue;
                    }
                }
            }
            let mut done_entry = false;
            if let Some(e) = &h.entry {
                match state.ledger.record(e.entry()).await {
                    Ok(seq) => {
                        tracing::info!(id = %h.id, seq, "held revocation's ledger entry recorded");
                        done_entry = true;
                    }
                    Err(err) => {
                        tracing::debug!(id = %h.id, error = %err, "held ledger entry not recorded yet")
                    }
                }
            }
            if done_revocation || done_entry {
                if done_revocation {
                    tracing::warn!(id = %h.id, actor = %h.actor, at = %h.at, "held revocation written to the store");
                }
                self.progress(h.id, done_revocation, done_entry);
            }
        }
    }
}

/// Retries held revocations every `every`, for the life of the process.
pub fn spawn_retry(state: crate::AppState, every: std::time::Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if state.revocations.held() > 0 {
                state.revocations.retry(&state).await;
            }
        }
    });
}

/// Makes one revocation in the store. Already made (a conflict) or gone (not found) counts as done.
async fn apply(state: &crate::AppState, r: &Revocation, ctx: &ChangeContext) -> Result<(), StoreError> {
    let result = match r {
        Revocation::TaskEnd { task, reason } => {
            state.store.end_task(*task, reason, ctx).await.map(|stopped| {
                state.forget_tasks(&stopped);
            })
        }
        Revocation::ApiToken { token } => state.store.revoke_api_token(*token, ctx).await.map(|_| ()),
        Revocation::Agent {
            agent,
            action,
            reason,
        } => state
            .store
            .transition_agent(agent, *action, reason, ctx)
            .await
            .map(|change| {
                crate::api::agents::publish(state, change);
            }),
    };
    match result {
        Ok(()) | Err(StoreError::Conflict(_)) | Err(StoreError::NotFound { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}

fn append(j: &mut Journal, record: &Record) -> std::io::Result<()> {
    let Some(file) = &j.file else {
        return Err(std::io::Error::other("this server has no revocation journal"));
    };
    let json = serde_json::to_vec(record).map_err(std::io::Error::other)?;
    if json.len() > MAX_RECORD {
        return Err(std::io::Error::other("revocation record too large"));
    }
    let len = u32::try_from(json.len()).map_err(std::io::Error::other)?;
    let mut buf = Vec::with_capacity(HEADER + json.len());
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&Sha256::digest(&json)[..8]);
    buf.extend_from_slice(&json);
    if j.end + buf.len() as u64 > JOURNAL_BYTES {
        return Err(std::io::Error::other(format!(
            "the revocation journal is full ({JOURNAL_BYTES} bytes of held revocations)"
        )));
    }
    file.write_all_at(&buf, j.end)?;
    file.sync_data()?;
    j.end += buf.len() as u64;
    Ok(())
}

fn read_journal(file: &File) -> std::io::Result<(HashMap<Uuid, Held>, u64)> {
    let mut held: HashMap<Uuid, Held> = HashMap::new();
    let mut at = 0u64;
    let mut header = [0u8; HEADER];
    while at + HEADER as u64 <= JOURNAL_BYTES {
        file.read_exact_at(&mut header, at)?;
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]) as usize;
        if len == 0 || len > MAX_RECORD || at + (HEADER + len) as u64 > JOURNAL_BYTES {
            break;
        }
        let mut json = vec![0u8; len];
        file.read_exact_at(&mut json, at + HEADER as u64)?;
        if Sha256::digest(&json)[..8] != header[4..12] {
            tracing::warn!(
                offset = at,
                "revocation journal ends in a torn record; ignoring it"
            );
            break;
        }
        match serde_json::from_slice::<Record>(&json) {
            Ok(Record::Hold { held: h }) => {
                held.insert(h.id, *h);
            }
            Ok(Record::Progress {
                id,
                revocation,
                entry,
            }) => {
                if let Some(h) = held.get_mut(&id) {
                    if revocation {
                        h.revocation = None;
                    }
                    if entry {
                        h.entry = None;
                    }
                    if h.revocation.is_none() && h.entry.is_none() {
                        held.remove(&id);
                    }
                }
            }
            Err(e) => {
                // Checksummed but unreadable: written by another version. Refusing to start is safer
                // than forgetting a revocation.
                return Err(std::io::Error::other(format!(
                    "unreadable record at offset {at}: {e}"
                )));
            }
        }
        at += (HEADER + len) as u64;
    }
    Ok((held, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(task: Uuid) -> Held {
        Held {
            id: Uuid::new_v4(),
            revocation: Some(Revocation::TaskEnd {
                task,
                reason: "stop".into(),
            }),
            actor: "admin@example.com".into(),
            at: Utc::now(),
            entry: None,
        }
    }

    #[test]
    fn held_revocations_survive_a_restart_until_done() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let (ha, hb) = (held(a), held(b));
        {
            let r = Revocations::open(dir.path()).unwrap();
            assert_eq!(r.hold(ha.clone()), HoldOutcome::Journaled);
            assert_eq!(r.hold(hb.clone()), HoldOutcome::Journaled);
            r.progress(ha.id, true, false);
        }
        let meta = std::fs::metadata(dir.path().join(JOURNAL_FILE)).unwrap();
        assert_eq!(meta.len(), JOURNAL_BYTES, "preallocated, never grown");
        let r = Revocations::open(dir.path()).unwrap();
        assert_eq!(r.snapshot(), vec![hb.clone()]);
        assert!(r.set.read().tasks.contains(&b) && !r.set.read().tasks.contains(&a));
        r.progress(hb.id, true, false);
        assert_eq!(r.held(), 0);
        assert_eq!(r.lock().end, 0, "reset once everything is done");
        drop(r);
        assert_eq!(Revocations::open(dir.path()).unwrap().held(), 0);
    }

    #[test]
    fn a_torn_last_record_is_ignored_and_earlier_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let h = held(Uuid::new_v4());
        let end = {
            let r = Revocations::open(dir.path()).unwrap();
            r.hold(h.clone());
            r.hold(held(Uuid::new_v4()));
            r.lock().end
        };
        // Tear the second record: flip a byte of its JSON.
        let f = OpenOptions::new()
            .write(true)
            .open(dir.path().join(JOURNAL_FILE))
            .unwrap();
        f.write_all_at(b"X", end - 3).unwrap();
        let r = Revocations::open(dir.path()).unwrap();
        assert_eq!(r.snapshot(), vec![h]);
    }

    #[test]
    fn a_full_journal_still_enforces_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let r = Revocations::open(dir.path()).unwrap();
        r.lock().end = JOURNAL_BYTES - 10;
        let task = Uuid::new_v4();
        assert_eq!(r.hold(held(task)), HoldOutcome::MemoryOnly);
        assert!(r.set.read().tasks.contains(&task));
    }
}
