//! Shared fixtures for the integration tests: a log built the way the server will build it (batches
//! through `prepare_append`, a signed checkpoint per batch), kept in memory.

#![allow(dead_code, clippy::unwrap_used)]

use chrono::{Duration, TimeZone, Utc};
use ed25519_dalek::SigningKey;
use serde_json::json;
use warden_ledger::{
    CheckpointVerifier, DecisionRecord, EncodedEntry, EntryKind, Frontier, LogRecord, MemoryTree, NewEntry,
    NoteSigner, Outcome, prepare_append,
};

pub const ORIGIN: &str = "warden.test/ledger";

pub fn signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[42u8; 32])).unwrap()
}

pub fn other_signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[43u8; 32])).unwrap()
}

pub fn verifier() -> CheckpointVerifier {
    CheckpointVerifier::new(ORIGIN, vec![signer().verifier_key()]).unwrap()
}

pub fn new_entry(i: u64) -> NewEntry {
    let at = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap() + Duration::milliseconds(i as i64 * 37);
    match i % 4 {
        0 | 1 => NewEntry::new(
            at,
            EntryKind::Decision,
            format!("spiffe://acme.test/agent/a{}", i % 3),
        )
        .subject(format!("task-{}", i / 10))
        .body(
            DecisionRecord {
                outcome: if i.is_multiple_of(5) {
                    Outcome::Deny
                } else {
                    Outcome::Allow
                },
                reasons: vec![format!("policy-{}", i % 7)],
                policy_version: format!("sha256:v{}", i / 50),
                action: ["read", "write", "destructive"][(i % 3) as usize].into(),
                upstream: Some("crm".into()),
                resource: Some("update_contact".into()),
                task: Some(format!("task-{}", i / 10)),
                request_id: Some(format!("req-{i}")),
                arguments: Some(json!({"id": i, "email": "hmac-sha256:0000"})),
                errors: vec![],
                latency_us: 10 + i % 90,
            }
            .to_body(),
        ),
        2 => NewEntry::new(at, EntryKind::TokenIssued, "warden")
            .subject(format!("spiffe://acme.test/agent/a{}", i % 3))
            .body(json!({"task": format!("task-{}", i / 10), "scope": "crm:read"})),
        _ => NewEntry::new(at, EntryKind::RegistryChange, "admin@acme.test")
            .subject("crm")
            .body(json!({"operation": "update", "field": "owners"})),
    }
}

/// A log of `n` entries appended in batches of `batch`, with a checkpoint after each batch.
pub struct TestLog {
    pub entries: Vec<EncodedEntry>,
    pub checkpoints: Vec<String>,
    pub tree: MemoryTree,
    pub frontier: Frontier,
}

pub fn build_log(n: u64, batch: u64) -> TestLog {
    let s = signer();
    let mut frontier = Frontier::new();
    let mut entries = Vec::new();
    let mut checkpoints = Vec::new();
    let mut tree = MemoryTree::new();
    let mut next = 0;
    while next < n {
        let end = (next + batch).min(n);
        let p = prepare_append(&frontier, (next..end).map(new_entry).collect()).unwrap();
        checkpoints.push(p.sign_checkpoint(ORIGIN, &[&s]).unwrap());
        for e in &p.entries {
            tree.push(e.leaf_hash()).unwrap();
        }
        entries.extend(p.entries);
        frontier = p.frontier;
        next = end;
    }
    TestLog {
        entries,
        checkpoints,
        tree,
        frontier,
    }
}

impl TestLog {
    pub fn records(&self) -> Vec<LogRecord> {
        self.entries
            .iter()
            .map(|e| LogRecord {
                seq: e.seq(),
                bytes: e.bytes().to_vec(),
                stored_hash: Some(e.leaf_hash()),
            })
            .collect()
    }
}
