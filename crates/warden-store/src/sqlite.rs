//! The embedded backend: one SQLite file, WAL mode.
//!
//! Durability: `synchronous = FULL` in WAL mode makes a commit durable when `commit()` returns (the
//! ledger issue depends on that). Writers: one connection, so write transactions queue in-process
//! instead of failing with `SQLITE_BUSY` when a deferred transaction upgrades its lock. Readers: a small
//! pool; WAL lets them read committed data while a write is in progress.

use std::path::Path;
use std::str::FromStr as _;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, SqlitePool};

use crate::{Backend, Result, StoreError};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for a lock held by another process before it reports the store busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// One node: events only need to reach this process.
    events: tokio::sync::broadcast::Sender<crate::StoreEvent>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        let opts = SqliteConnectOptions::new().filename(path);
        Self::open_with(opts).await
    }

    /// Opens a `sqlite:` URL.
    pub async fn open_url(url: &str) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid sqlite URL: {e}")))?;
        Self::open_with(opts).await
    }

    async fn open_with(opts: SqliteConnectOptions) -> Result<Self> {
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.clone())
            .await?;
        MIGRATIONS.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts.read_only(true))
            .await?;
        let (events, _) = tokio::sync::broadcast::channel(crate::EVENT_BUFFER);
        Ok(Self { read, write, events })
    }
}

crate::sql::impl_store!(
    SqliteStore,
    Sqlite,
    sqlx::sqlite::SqliteRow,
    Backend::Sqlite,
    for_update = ""
);
