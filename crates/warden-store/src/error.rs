//! Storage errors. Each variant maps to one kind of answer the server gives: `NotFound` → 404,
//! `Conflict` → 409, `Invalid` → 400 naming the field, `Unavailable` → 503 (deny: fail closed),
//! `Corrupt`/`Internal` → 500 with details in the log only.

use warden_core::ValidationError;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{what} `{key}` not found")]
    NotFound { what: &'static str, key: String },
    #[error("{0}")]
    Conflict(String),
    /// The caller is authenticated but the record's rules do not let it do this (e.g. an approver
    /// whom policy does not name).
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Invalid(#[from] ValidationError),
    #[error("database configuration: {0}")]
    Config(String),
    /// The database cannot be reached or did not answer in time.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database did not answer: no connection within the acquire timeout, a broken connection,
    /// a server shutting down. Answered like `Unavailable` (503); it also makes the store refuse
    /// further calls at once for a moment (see `reach.rs`), so a database that is down or hangs is
    /// refused in about one acquire timeout per request, not one per store call.
    #[error("the database did not answer: {0}")]
    Unreachable(String),
    /// The database cannot be written: the disk is full or failing (SQLite `SQLITE_FULL`/`SQLITE_IOERR`,
    /// PostgreSQL `53100`/`58030`). Answered like `Unavailable` (503); it also puts the store in its
    /// failed state.
    #[error("the database cannot be written: {0}")]
    StorageFault(String),
    /// A stored value failed to parse back: someone wrote to the database behind Warden's back, or a
    /// migration is missing.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    #[error("database error: {0}")]
    Internal(String),
}

impl StoreError {
    pub(crate) fn not_found(what: &'static str, key: impl ToString) -> Self {
        StoreError::NotFound {
            what,
            key: key.to_string(),
        }
    }

    pub(crate) fn corrupt(column: &str, err: impl std::fmt::Display) -> Self {
        StoreError::Corrupt(format!("column `{column}`: {err}"))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        if let Some(reason) = crate::write::storage_fault(&err) {
            return StoreError::StorageFault(reason);
        }
        match &err {
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict("a record with the same key already exists".into())
            }
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => StoreError::Conflict(
                "the change refers to a record that does not exist or is still referenced".into(),
            ),
            sqlx::Error::Database(db) if db.is_check_violation() => {
                StoreError::Corrupt(format!("a value violates a database check: {}", db.message()))
            }
            sqlx::Error::PoolTimedOut => {
                StoreError::Unreachable("no database connection within the acquire timeout".into())
            }
            sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => {
                StoreError::Unreachable(err.to_string())
            }
            sqlx::Error::PoolClosed => StoreError::Unavailable(err.to_string()),
            sqlx::Error::Database(db)
                if db.code().is_some_and(|c| {
                    c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03")
                }) =>
            {
                StoreError::Unreachable(db.message().to_owned())
            }
            sqlx::Error::Database(db) if is_unavailable_code(db.code().as_deref()) => {
                StoreError::Unavailable(db.message().to_owned())
            }
            sqlx::Error::ColumnDecode { .. } | sqlx::Error::Decode(_) | sqlx::Error::ColumnNotFound(_) => {
                StoreError::Corrupt(err.to_string())
            }
            _ => StoreError::Internal(err.to_string()),
        }
    }
}

/// Database error codes that mean "try later", not "your request is wrong": SQLite busy/locked/full/IO,
/// PostgreSQL admin shutdown, connection failures, too many connections, disk full, read-only, and
/// serialization failures and deadlocks (the transaction was rolled back; retrying is safe).
fn is_unavailable_code(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "5" | "6"
                | "10"
                | "13"
                | "517"
                | "261"
                | "57P01"
                | "57P02"
                | "57P03"
                | "53300"
                | "53100"
                | "25006"
                | "40001"
                | "40P01"
        )
    ) || code.is_some_and(|c| c.starts_with("08"))
}

impl From<sqlx::migrate::MigrateError> for StoreError {
    fn from(err: sqlx::migrate::MigrateError) -> Self {
        StoreError::Internal(format!("migration failed: {err}"))
    }
}
