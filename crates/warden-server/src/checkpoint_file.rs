//! The largest checkpoint this node signed, kept outside the database: `<data-dir>/ledger.checkpoint`.
//!
//! A log cut back to an earlier size — newest entries, their checkpoints and the head, the head
//! recomputed — still carries genuine signatures, and a server started on it would hand the lost
//! sequence numbers out again. This file is the node's own record of how far the log had got:
//!
//! * [`Keeper`] writes it after every checkpoint this node signs (a temporary file, fsync, rename,
//!   fsync of the directory: [`write_atomically`]), and only ever replaces it with a larger one;
//! * [`check`], at start, verifies it with this node's ledger key and refuses to start when the stored
//!   log is shorter than it, or when the stored log's tree at its size is another (rewritten history:
//!   proven with a consistency proof from stored nodes).
//!
//! With several nodes on one database each node's file holds what that node signed; another node
//! having extended the log since is fine (the proof covers it). The file is a C2SP signed note, the
//! same text `GET /v1/audit/checkpoint` returns as `text/plain`, so it also serves as
//! `warden audit verify --checkpoint`.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context as _, bail};
use tokio::sync::watch;
use warden_ledger::{Checkpoint, CheckpointVerifier, NoteSigner};
use warden_store::Store;

/// The file's name in the data directory.
pub const CHECKPOINT_FILE: &str = "ledger.checkpoint";

/// The largest file read (a signed note is at most this large).
const MAX_FILE_BYTES: u64 = warden_ledger::note::MAX_NOTE_BYTES as u64;

/// `<data-dir>/ledger.checkpoint`.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(CHECKPOINT_FILE)
}

/// Writes `bytes` to `path` so that a crash leaves the old file or the new one, never a mix: a
/// temporary file in the same directory (`mode`), fsync, rename over `path`, fsync of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}", uuid::Uuid::new_v4().simple()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .create_new(true)
            .write(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

/// Reads the file, if it exists, with a size limit.
fn read(path: &Path) -> anyhow::Result<Option<String>> {
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    if meta.len() > MAX_FILE_BYTES {
        bail!(
            "{} is larger than {MAX_FILE_BYTES} bytes: it is not a checkpoint this node wrote",
            path.display()
        );
    }
    if meta.permissions().mode() & 0o022 != 0 {
        tracing::warn!(file = %path.display(), "the ledger's checkpoint file is writable by other users; chmod 600 it");
    }
    std::fs::read_to_string(path)
        .map(Some)
        .with_context(|| format!("cannot read {}", path.display()))
}

/// How to get going again, for every refusal below.
fn advice(path: &Path) -> String {
    format!(
        "If the database was restored from an older backup on purpose, the entries after it are lost: keep {} \
         as the evidence of how far the log had got, move it out of the data directory, and start again",
        path.display()
    )
}

/// At start: the stored log must contain the checkpoint this node last kept. Returns it (`None`: no
/// file yet). Refuses — so that no sequence number is ever handed out twice — when the file is not
/// this node's, when the log is shorter than it, or when the log's tree at its size is another.
pub async fn check(
    store: &dyn Store,
    path: &Path,
    signer: &NoteSigner,
    origin: &str,
) -> anyhow::Result<Option<Checkpoint>> {
    let Some(note) = read(path)? else {
        return Ok(None);
    };
    let verifier = CheckpointVerifier::new(origin, vec![signer.verifier_key()])
        .map_err(|e| anyhow::anyhow!("the ledger's origin `{origin}`: {e}"))?;
    let cp = verifier.verify(&note).map_err(|e| {
        anyhow::anyhow!(
            "{} is not a checkpoint signed by this node's ledger key for log `{origin}` ({e}); refusing to \
             start. If this node's ledger key or trust domain was changed on purpose, verify the log against \
             the file (`warden audit verify --checkpoint`, with the old key) and move it away",
            path.display()
        )
    })?;
    let head = store.ledger_head().await.context("cannot read the ledger head")?;
    if head.size() < cp.size {
        bail!(
            "the ledger in the database holds {} entries but {} — the largest checkpoint this node signed — \
             covers {}: the log was cut back (entries {}.. are missing); refusing to start, so that no \
             sequence number is handed out twice. {}",
            head.size(),
            path.display(),
            cp.size,
            head.size(),
            advice(path)
        );
    }
    let rewritten = || {
        anyhow::anyhow!(
            "the ledger in the database is not the log this node signed: its tree of {} entries is not the one \
             in {} (its history was rewritten); refusing to start. {}",
            cp.size,
            path.display(),
            advice(path)
        )
    };
    if head.size() == cp.size {
        if head.root() != cp.root {
            return Err(rewritten());
        }
    } else if cp.size > 0 {
        let proof = warden_store::consistency_proof(store, cp.size, head.size())
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot prove that the ledger in the database ({} entries) extends the checkpoint in {} \
                     ({} entries): {e}; refusing to start",
                    head.size(),
                    path.display(),
                    cp.size
                )
            })?;
        warden_ledger::verify_consistency(cp.size, head.size(), &cp.root, &head.root(), &proof)
            .map_err(|_| rewritten())?;
    }
    tracing::info!(file = %path.display(), size = cp.size, head = head.size(), "the ledger extends the checkpoint this node kept");
    Ok(Some(cp))
}

/// A checkpoint to keep: its size and signed note.
#[derive(Clone, Debug)]
struct Signed {
    size: u64,
    note: String,
}

/// Keeps the file current: the ledger writer offers every checkpoint it signs; a task of its own
/// writes the largest (so the writer never waits for a disk), and [`Keeper::finish`] waits for the
/// last one.
#[derive(Debug)]
pub struct Keeper {
    tx: watch::Sender<Option<Signed>>,
    task: tokio::task::JoinHandle<()>,
    error: Arc<Mutex<Option<String>>>,
}

impl Keeper {
    /// Starts keeping `path`, which holds a checkpoint of `kept` entries (0: none).
    pub fn start(path: PathBuf, kept: u64) -> Self {
        let (tx, mut rx) = watch::channel::<Option<Signed>>(None);
        let error = Arc::new(Mutex::new(None));
        let status = error.clone();
        let task = tokio::spawn(async move {
            let mut kept = kept;
            while rx.changed().await.is_ok() {
                let Some(signed) = rx.borrow_and_update().clone() else {
                    continue;
                };
                if signed.size <= kept {
                    continue;
                }
                let target = path.clone();
                let written = tokio::task::spawn_blocking(move || {
                    write_atomically(&target, signed.note.as_bytes(), 0o600).map(|()| signed.size)
                })
                .await;
                let mut status = status.lock().unwrap_or_else(|p| p.into_inner());
                match written {
                    Ok(Ok(size)) => {
                        kept = size;
                        *status = None;
                    }
                    Ok(Err(e)) => {
                        let message = format!("cannot write {}: {e}", path.display());
                        if status.is_none() {
                            tracing::error!(error = %message, "the ledger's checkpoint file is not kept current: a cut-back log would go unnoticed at the next start");
                        }
                        *status = Some(message);
                    }
                    Err(e) => *status = Some(format!("the checkpoint file task failed: {e}")),
                }
            }
        });
        Self { tx, task, error }
    }

    /// A checkpoint this node signed; written unless a larger one is already kept or waiting.
    pub fn offer(&self, size: u64, note: String) {
        self.tx.send_if_modified(|current| {
            if current.as_ref().is_some_and(|c| c.size >= size) {
                return false;
            }
            *current = Some(Signed { size, note });
            true
        });
    }

    /// Why the file could not be written, while it cannot.
    pub fn error(&self) -> Option<String> {
        self.error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The error slot, for a status reader that outlives the writer.
    pub fn error_slot(&self) -> Arc<Mutex<Option<String>>> {
        self.error.clone()
    }

    /// Writes what is waiting and stops.
    pub async fn finish(self) {
        drop(self.tx);
        let _ = self.task.await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn atomic_writes_replace_whole_files_and_leave_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        write_atomically(&p, b"one", 0o600).unwrap();
        write_atomically(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::metadata(&p).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A directory that is not there: an error, no panic.
        assert!(write_atomically(&dir.path().join("no/such/f"), b"x", 0o600).is_err());
    }

    #[tokio::test]
    async fn the_keeper_writes_only_larger_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(CHECKPOINT_FILE);
        let keeper = Keeper::start(p.clone(), 5);
        keeper.offer(4, "four".into());
        keeper.offer(7, "seven".into());
        keeper.offer(6, "six".into());
        keeper.finish().await;
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "seven");
        let keeper = Keeper::start(p.clone(), 7);
        keeper.offer(7, "seven again".into());
        keeper.finish().await;
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "seven");
    }
}
