//! Whether the database answers at all: a breaker around every store call.
//!
//! A request makes several store calls (its task, its upstream, its secrets, its ledger entry). While
//! the database is down or hangs, each would wait the whole acquire timeout, so a refusal took
//! seconds. When a call finds the database unreachable ([`StoreError::Unreachable`]), the store
//! refuses further calls at once, except one per [`PROBE_INTERVAL`], which tries the database: the
//! first answer from it (any answer the database itself gave, even "not found") closes the breaker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};

use crate::write::PROBE_INTERVAL;
use crate::{Result, StoreError};

#[derive(Debug)]
struct Down {
    reason: String,
    since: DateTime<Utc>,
    next_probe: Instant,
}

/// The breaker of one store. Every store call passes it twice, so the closed state is one atomic
/// load; the lock is taken only while the breaker is open or opening.
#[derive(Debug, Default, Clone)]
pub struct Reach(Arc<Inner>);

#[derive(Debug, Default)]
struct Inner {
    open: AtomicBool,
    down: Mutex<Option<Down>>,
}

impl Reach {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Down>> {
        self.0.down.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go to the database now? While it is unreachable, one call per probe interval may.
    pub(crate) fn admit(&self) -> Result<()> {
        if !self.0.open.load(Ordering::Acquire) {
            return Ok(());
        }
        let mut down = self.lock();
        let Some(d) = down.as_mut() else {
            return Ok(());
        };
        let now = Instant::now();
        if now < d.next_probe {
            return Err(StoreError::Unreachable(format!(
                "{} (since {}; refused without trying until a probe call gets an answer)",
                d.reason,
                d.since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )));
        }
        d.next_probe = now + PROBE_INTERVAL;
        Ok(())
    }

    /// Records what a call found out about the database.
    pub(crate) fn observe<T>(&self, result: &Result<T>) {
        let answered = match result {
            Ok(_) => true,
            Err(StoreError::Unreachable(reason)) => {
                let mut down = self.lock();
                if down.is_none() {
                    tracing::error!(%reason, "the database does not answer: refusing store calls at once until it does");
                    *down = Some(Down {
                        reason: reason.clone(),
                        since: Utc::now(),
                        next_probe: Instant::now() + PROBE_INTERVAL,
                    });
                    self.0.open.store(true, Ordering::Release);
                }
                false
            }
            // Refused before the database was asked, or a fault that says nothing about reaching it.
            Err(StoreError::Unavailable(_) | StoreError::StorageFault(_) | StoreError::Config(_)) => false,
            // The database answered.
            Err(_) => true,
        };
        if answered && self.0.open.load(Ordering::Acquire) {
            let mut down = self.lock();
            if let Some(d) = down.take() {
                self.0.open.store(false, Ordering::Release);
                tracing::warn!(since = %d.since, "the database answers again");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreachable_database_is_refused_at_once_but_probed() {
        let r = Reach::default();
        r.admit().expect("closed");
        r.observe::<()>(&Err(StoreError::Unreachable("timeout".into())));
        let e = r.admit().expect_err("open: refused at once");
        assert!(e.to_string().contains("timeout"), "{e}");
        r.lock().as_mut().unwrap().next_probe = Instant::now();
        r.admit().expect("the probe goes through");
        assert!(r.admit().is_err(), "one probe per interval");
        r.observe::<()>(&Err(StoreError::not_found("task", "x")));
        r.admit().expect("an answer from the database closes it");
    }
}
