//! The shared backend: PostgreSQL, for several `warden serve` nodes on one database. Each node is
//! stateless; the database is the only shared state. Rows read-then-changed in a transaction are locked
//! with `FOR UPDATE`, so two nodes changing one agent serialize instead of losing an update. Migrations
//! take sqlx's advisory lock, so nodes starting together migrate once.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::{PgPool, Postgres};
use tokio::sync::broadcast;

use crate::{Backend, Result, StoreError, StoreEvent, StoreOptions};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PostgresStore {
    read: PgPool,
    write: PgPool,
    /// Whether the database can be written (the failed state after a disk-full or I/O error).
    health: crate::write::WriteHealth,
    /// Whether the database answers at all (the breaker around every call).
    reach: crate::reach::Reach,
    /// Events of this node (sent after commit) and of every other node (forwarded by the listener).
    events: broadcast::Sender<StoreEvent>,
    /// Stops the listener task when the last clone of the store is dropped.
    _listener: std::sync::Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl PostgresStore {
    /// Connects, and applies pending migrations. The URL is never echoed in errors: it may hold a
    /// password.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Config("the PostgreSQL URL could not be parsed".into()))?
            .application_name("warden");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            // While the server is down, a request waits this long for a connection, then is a 503.
            .acquire_timeout(options.acquire_timeout)
            .connect_with(opts)
            .await?;
        MIGRATIONS.run(&pool).await?;
        let (events, _) = broadcast::channel(crate::EVENT_BUFFER);
        let listener = PgListener::connect_with(&pool).await?;
        let task = tokio::spawn(listen(listener, events.clone()));
        // One pool serves both roles: PostgreSQL has row locks and MVCC, so writers need no queue.
        Ok(Self {
            read: pool.clone(),
            write: pool,
            health: crate::write::WriteHealth::default(),
            reach: Default::default(),
            events,
            _listener: std::sync::Arc::new(AbortOnDrop(task)),
        })
    }
}

/// Forwards other nodes' notifications to this node's subscribers. When the connection drops,
/// notifications sent meanwhile are lost, so subscribers are told to resync (forget what they cached)
/// when the loss is seen and again when the listener is back.
async fn listen(mut listener: PgListener, events: broadcast::Sender<StoreEvent>) {
    if let Err(e) = listener.listen(crate::EVENT_CHANNEL).await {
        tracing::error!(error = %e, "cannot LISTEN for store events; revocations from other nodes will not be seen");
        let _ = events.send(StoreEvent::Resync);
        return;
    }
    let mut lost = false;
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                if lost {
                    lost = false;
                    let _ = events.send(StoreEvent::Resync);
                }
                match serde_json::from_str::<StoreEvent>(n.payload()) {
                    Ok(event) => {
                        let _ = events.send(event);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "unreadable store event; resyncing");
                        let _ = events.send(StoreEvent::Resync);
                    }
                }
            }
            Ok(None) => {
                tracing::warn!("store event connection lost; reconnecting and resyncing");
                lost = true;
                let _ = events.send(StoreEvent::Resync);
            }
            // The store was closed: nothing left to listen for.
            Err(sqlx::Error::PoolClosed) => return,
            Err(e) => {
                tracing::warn!(error = %e, "store event listener error; retrying");
                lost = true;
                let _ = events.send(StoreEvent::Resync);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

crate::sql::impl_store!(
    PostgresStore,
    Postgres,
    sqlx::postgres::PgRow,
    Backend::Postgres,
    for_update = " FOR UPDATE",
    begin = "BEGIN"
);
