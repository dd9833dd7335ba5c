//! Write transactions that never leave a connection in an unknown state, and the store's failed state.
//!
//! Why not `sqlx::Transaction`: after SQLite rolls a transaction back by itself (`SQLITE_FULL`,
//! `SQLITE_IOERR`, …), sqlx's transaction depth no longer matches the connection. The next `begin`
//! then only opens a savepoint inside a transaction that is never committed, every later "commit"
//! releases that savepoint, and the single writer connection acknowledges writes that are never made
//! durable (seen with a full disk: 200k decisions acknowledged, 8k in the ledger). [`WriteTx`] issues
//! `BEGIN` and `COMMIT` itself, treats an error from `COMMIT` as "not committed", and closes the
//! connection — never returning it to the pool — whenever the transaction did not end in a successful
//! commit. Closing the connection makes the database roll back whatever was left open, so the next
//! transaction always starts on a clean connection.
//!
//! [`WriteHealth`] is the failed state: a disk-full or I/O error from the database puts the store in
//! it. While failed, writes are refused at once with [`StoreError::StorageFault`] naming the cause,
//! except one write per [`PROBE_INTERVAL`], which is let through as the probe: when it commits, the
//! store is healthy again (no restart needed once space is freed). `Store::health` reports the state
//! and probes with a write of its own.

use std::ops::{Deref, DerefMut};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};

use crate::{Result, StoreError};

/// How often a failed store lets one write through to find out whether it works again.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(500);

/// Why the store cannot be written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What the database said, e.g. "disk full (SQLITE_FULL)".
    pub reason: String,
    pub since: DateTime<Utc>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (since {}; writes are refused until a probe write succeeds)",
            self.reason,
            self.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        )
    }
}

#[derive(Debug, Default)]
struct State {
    failed: Option<Failure>,
    next_probe: Option<Instant>,
    /// A transaction ended without a commit, for a reason this module did not see (a statement inside
    /// it failed): the next write also writes the probe row, so a storage fault cannot go unnoticed.
    suspect: bool,
}

/// Written by probes: one row whose counter every probe increments, so the probe is a real write.
const PROBE: &str =
    "INSERT INTO store_probe (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = store_probe.n + 1";

/// How much free space the filesystem of a failed SQLite database must have again before a
/// committed probe makes the store healthy. A tiny write can commit on a full disk (into space SQLite
/// already holds) while the next ledger batch cannot; without this, the state would flap.
pub const RECOVERY_HEADROOM: u64 = 8 << 20;

/// The store's write health, shared by every write transaction of one store.
#[derive(Debug, Default, Clone)]
pub struct WriteHealth {
    state: Arc<Mutex<State>>,
    /// The directory holding the database file (SQLite): its free space is checked on recovery.
    disk: Option<Arc<std::path::PathBuf>>,
}

/// Free bytes (for an unprivileged process) on the filesystem holding `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    let st = rustix::fs::statvfs(dir).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize as u64))
}

impl WriteHealth {
    /// The health of a database stored in `dir` (SQLite).
    pub(crate) fn on_disk(dir: std::path::PathBuf) -> Self {
        Self {
            state: Arc::default(),
            disk: Some(Arc::new(dir)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written (plain assignments).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The failure, if the store is in the failed state.
    pub fn failure(&self) -> Option<Failure> {
        self.lock().failed.clone()
    }

    /// May a write start now, and must it write the probe row too? While failed, only one write per
    /// [`PROBE_INTERVAL`] may start (the probe).
    pub(crate) fn admit(&self) -> Result<bool> {
        let mut s = self.lock();
        let Some(failed) = &s.failed else {
            return Ok(s.suspect);
        };
        let now = Instant::now();
        if s.next_probe.is_some_and(|t| now < t) {
            return Err(StoreError::StorageFault(failed.to_string()));
        }
        s.next_probe = Some(now + PROBE_INTERVAL);
        Ok(true)
    }

    fn rolled_back(&self) {
        self.lock().suspect = true;
    }

    /// Records what a failed statement says about the storage.
    pub(crate) fn observe(&self, err: &sqlx::Error) {
        if let Some(reason) = storage_fault(err) {
            self.failed(reason);
        }
    }

    /// Records what a write method's result says about the storage: every write method of the store
    /// passes its result here, so a fault in any statement of a transaction is seen.
    pub(crate) fn observe_result<T>(&self, result: &Result<T>) {
        if let Err(StoreError::StorageFault(reason)) = result {
            self.failed(reason.clone());
        }
    }

    fn failed(&self, reason: String) {
        let mut s = self.lock();
        // Only the transition sets the next probe: refusals while failed come back here too (through
        // `observe_result`), and must not push the probe away for as long as the load lasts.
        if s.failed.is_none() {
            tracing::error!(reason = %reason, "the database cannot be written: the store is now in the failed state");
            s.failed = Some(Failure {
                reason,
                since: Utc::now(),
            });
            s.next_probe = Some(Instant::now() + PROBE_INTERVAL);
        }
    }

    /// A write committed: the storage works (with room to spare, for a database on a local disk).
    pub(crate) fn committed(&self) {
        let mut s = self.lock();
        s.suspect = false;
        if s.failed.is_some()
            && let Some(dir) = &self.disk
            && let Some(free) = free_bytes(dir)
            && free < RECOVERY_HEADROOM
        {
            if let Some(f) = s.failed.as_mut() {
                f.reason = format!(
                    "the disk holding the database is (nearly) full: {} KiB free, {} KiB needed to resume",
                    free / 1024,
                    RECOVERY_HEADROOM / 1024
                );
            }
            return;
        }
        if let Some(f) = s.failed.take() {
            tracing::warn!(since = %f.since, reason = %f.reason, "the database can be written again: the store left the failed state");
        }
        s.next_probe = None;
    }
}

/// The storage faults that put a store in the failed state: the disk is full or failing. Busy, locked
/// or an unreachable server are not: they pass by themselves and are answered per request.
pub(crate) fn storage_fault(err: &sqlx::Error) -> Option<String> {
    let sqlx::Error::Database(db) = err else {
        return None;
    };
    let code = db.code()?;
    // PostgreSQL's SQLSTATEs are five characters; SQLite's are its (extended) result codes as numbers.
    match code.as_ref() {
        "53100" => return Some("disk full (PostgreSQL 53100 disk_full)".into()),
        "58030" => return Some("I/O error (PostgreSQL 58030 io_error)".into()),
        _ => {}
    }
    let code: i64 = code.parse().ok()?;
    match code & 0xff {
        13 => Some("disk full or database size limit reached (SQLITE_FULL)".into()),
        10 => Some(format!("I/O error (SQLITE_IOERR, extended code {code})")),
        _ => None,
    }
}

/// One write transaction on a connection of its own (see the module docs).
pub struct WriteTx<DB: Database> {
    conn: PoolConnection<DB>,
    health: WriteHealth,
    committed: bool,
}

/// The methods that run statements, once per backend: written generically they need a
/// higher-ranked `Executor` bound that async functions cannot prove `Send` for.
macro_rules! impl_write_tx {
    ($db:ty) => {
impl WriteTx<$db> {
    /// Takes a connection from `pool` and starts a transaction with `begin` (`BEGIN IMMEDIATE` on
    /// SQLite, so the write lock is taken at once; `BEGIN` on PostgreSQL).
    pub(crate) async fn begin(pool: &Pool<$db>, health: &WriteHealth, begin: &'static str) -> Result<Self> {
        let probe = health.admit()?;
        let conn = pool.acquire().await?;
        let mut tx = Self {
            conn,
            health: health.clone(),
            committed: false,
        };
        let result = sqlx::query(begin).execute(&mut *tx).await;
        tx.check(result)?;
        if probe {
            let result = sqlx::query(PROBE).execute(&mut *tx).await;
            tx.check(result)?;
        }
        Ok(tx)
    }

    /// A write of the probe row alone: `Ok` when the database can be written.
    pub(crate) async fn probe(pool: &Pool<$db>, health: &WriteHealth, begin: &'static str) -> Result<()> {
        let mut tx = Self::begin(pool, health, begin).await?;
        let result = sqlx::query(PROBE).execute(&mut *tx).await;
        tx.check(result)?;
        tx.commit().await
    }

    /// Commits. An error means the transaction did not commit, and its connection is closed.
    pub(crate) async fn commit(mut self) -> Result<()> {
        let result = sqlx::query("COMMIT").execute(&mut *self).await;
        self.check(result)?;
        self.committed = true;
        self.health.committed();
        Ok(())
    }

    fn check<T>(&self, result: std::result::Result<T, sqlx::Error>) -> Result<T> {
        result.map_err(|e| {
            if self.health.failure().is_some() {
                tracing::warn!(error = %e, "probe write failed: the store stays in the failed state");
            }
            self.health.observe(&e);
            e.into()
        })
    }
}
    };
}

impl_write_tx!(sqlx::Sqlite);
impl_write_tx!(sqlx::Postgres);

impl<DB: Database> Drop for WriteTx<DB> {
    fn drop(&mut self) {
        if !self.committed {
            self.health.rolled_back();
            // Closing the connection rolls back whatever it holds; the pool opens a fresh one.
            self.conn.close_on_drop();
        }
    }
}

impl<DB: Database> Deref for WriteTx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        &self.conn
    }
}

impl<DB: Database> DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        &mut self.conn
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_while_failed_do_not_push_the_probe_away() {
        let h = WriteHealth::default();
        h.failed("disk full".into());
        h.lock().next_probe = Some(Instant::now());
        // A refused write reports its refusal: the probe stays due.
        h.observe_result::<()>(&Err(StoreError::StorageFault("refused".into())));
        assert!(h.admit().is_ok(), "the probe is still due");
    }

    #[test]
    fn a_failed_store_lets_one_probe_through_per_interval() {
        let h = WriteHealth::default();
        assert!(!h.admit().expect("healthy"));
        {
            let mut s = h.lock();
            s.failed = Some(Failure {
                reason: "disk full".into(),
                since: Utc::now(),
            });
            s.next_probe = Some(Instant::now() + PROBE_INTERVAL);
        }
        let err = h.admit().expect_err("refused while failed");
        assert!(err.to_string().contains("disk full"), "{err}");
        h.lock().next_probe = Some(Instant::now());
        assert!(
            h.admit().expect("the probe goes through"),
            "and writes the probe row"
        );
        assert!(h.admit().is_err(), "only one probe per interval");
        h.committed();
        assert!(h.failure().is_none());
        assert!(!h.admit().expect("healthy"), "no probe row once healthy");
        h.rolled_back();
        assert!(
            h.admit().expect("a rollback refuses nothing"),
            "but the next write probes"
        );
    }
}
