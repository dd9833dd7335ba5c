//! The shared backend: PostgreSQL, for several `warden serve` nodes on one database. Each node is
//! stateless; the database is the only shared state. Rows read-then-changed in a transaction are locked
//! with `FOR UPDATE`, so two nodes changing one agent serialize instead of losing an update. Migrations
//! take sqlx's advisory lock, so nodes starting together migrate once.

use std::str::FromStr as _;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, Postgres};

use crate::{Backend, Result, StoreError};

static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

#[derive(Debug, Clone)]
pub struct PostgresStore {
    read: PgPool,
    write: PgPool,
}

impl PostgresStore {
    /// Connects, and applies pending migrations. The URL is never echoed in errors: it may hold a
    /// password.
    pub async fn connect(url: &str) -> Result<Self> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|_| StoreError::Config("the PostgreSQL URL could not be parsed".into()))?
            .application_name("warden");
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(opts)
            .await?;
        MIGRATIONS.run(&pool).await?;
        // One pool serves both roles: PostgreSQL has row locks and MVCC, so writers need no queue.
        Ok(Self {
            read: pool.clone(),
            write: pool,
        })
    }
}

crate::sql::impl_store!(
    PostgresStore,
    Postgres,
    sqlx::postgres::PgRow,
    Backend::Postgres,
    for_update = " FOR UPDATE"
);
