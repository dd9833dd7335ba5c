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

use crate::{Backend, Result, StoreError, StoreOptions};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// How long a statement waits for a lock held by another process before it reports the store busy.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// The shortest wait for the writer connection: writes queue for it in-process.
const MIN_WRITER_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Clone)]
pub struct SqliteStore {
    read: SqlitePool,
    write: SqlitePool,
    /// Whether the database can be written (the failed state after `SQLITE_FULL`/`SQLITE_IOERR`).
    health: crate::write::WriteHealth,
    /// Whether the database answers at all (the breaker around every call).
    reach: crate::reach::Reach,
    /// One node: events only need to reach this process.
    events: tokio::sync::broadcast::Sender<crate::StoreEvent>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path` and applies pending migrations.
    pub async fn open(path: &Path) -> Result<Self> {
        Self::open_with_options(path, &StoreOptions::default()).await
    }

    /// [`SqliteStore::open`] with options.
    pub async fn open_with_options(path: &Path, options: &StoreOptions) -> Result<Self> {
        let opts = SqliteConnectOptions::new().filename(path);
        Self::open_with(opts, options).await
    }

    /// Opens a `sqlite:` URL.
    pub async fn open_url(url: &str, options: &StoreOptions) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Config(format!("invalid sqlite URL: {e}")))?;
        Self::open_with(opts, options).await
    }

    async fn open_with(opts: SqliteConnectOptions, options: &StoreOptions) -> Result<Self> {
        let mut opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        if let Some(pages) = options.sqlite_max_page_count {
            opts = opts.pragma("max_page_count", pages.to_string());
        }
        // The writer waits at least a few seconds: it is a queue of this process's own writes, not a
        // server that may be down.
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(options.acquire_timeout.max(MIN_WRITER_WAIT))
            .connect_with(opts.clone())
            .await?;
        MIGRATIONS.run(&write).await?;
        let read = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(options.acquire_timeout.max(MIN_WRITER_WAIT))
            .connect_with(opts.clone().read_only(true))
            .await?;
        let (events, _) = tokio::sync::broadcast::channel(crate::EVENT_BUFFER);
        let dir = opts
            .get_filename()
            .parent()
            .map(std::path::Path::to_path_buf)
            .unwrap_or_default();
        Ok(Self {
            read,
            write,
            health: crate::write::WriteHealth::on_disk(dir),
            reach: Default::default(),
            events,
        })
    }

    /// Why the database cannot be written, while it cannot.
    pub fn write_failure(&self) -> Option<crate::write::Failure> {
        self.health.failure()
    }
}

crate::sql::impl_store!(
    SqliteStore,
    Sqlite,
    sqlx::sqlite::SqliteRow,
    Backend::Sqlite,
    for_update = "",
    begin = "BEGIN IMMEDIATE"
);
