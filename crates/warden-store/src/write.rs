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
const PROBE: &str = "INSERT INTO store_probe (id, n) VALUES (1, 1) ON CONFLICT (id) DO UPDATE SET n = store_probe.n + 1";

/// The store's write health, shared by every write transaction of one store.
#[derive(Debug, Default, Clone)]
pub struct WriteHealth(Arc<Mutex<State>>);

impl WriteHealth {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the state half-written (plain assignments).
        self.0.lock().unwrap_or_else(|p| p.into_inner())
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
        if s.failed.is_none() {
            tracing::error!(reason = %reason, "the database cannot be written: the store is now in the failed state");
            s.failed = Some(Failure {
                reason,
                since: Utc::now(),
            });
        }
        s.next_probe = Some(Instant::now() + PROBE_INTERVAL);
    }

    /// A write committed: the storage works.
    pub(crate) fn committed(&self) {
        let mut s = self.lock();
        s.suspect = false;
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
    conn: Option<PoolConnection<DB>>,
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
            conn: Some(conn),
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
            if let Some(conn) = self.conn.as_mut() {
                // Closing the connection rolls back whatever it holds; the pool opens a fresh one.
                conn.close_on_drop();
            }
        }
    }
}

impl<DB: Database> Deref for WriteTx<DB> {
    type Target = DB::Connection;

    fn deref(&self) -> &DB::Connection {
        // `conn` is `Some` from `begin` until drop.
        self.conn.as_ref().map(|c| &**c).unwrap_or_else(|| unreachable!("connection taken before drop"))
    }
}

impl<DB: Database> DerefMut for WriteTx<DB> {
    fn deref_mut(&mut self) -> &mut DB::Connection {
        self.conn
            .as_mut()
            .map(|c| &mut **c)
            .unwrap_or_else(|| unreachable!("connection taken before drop"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(h.admit().expect("the probe goes through"), "and writes the probe row");
        assert!(h.admit().is_err(), "only one probe per interval");
        h.committed();
        assert!(h.failure().is_none());
        assert!(!h.admit().expect("healthy"), "no probe row once healthy");
        h.rolled_back();
        assert!(h.admit().expect("a rollback refuses nothing"), "but the next write probes");
    }
}
