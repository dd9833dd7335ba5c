//! Ledger load harness: durable appends per second through the server's group-commit writer, the
//! commit latency a caller sees, and proof generation from the store — on SQLite and PostgreSQL, one
//! run, side by side.
//!
//! ```sh
//! cargo run --release -p warden-server --example ledger_load                      # both backends
//! cargo run --release -p warden-server --example ledger_load -- --backend sqlite --seconds 5 --concurrency 1,64,1024
//! cargo run --release -p warden-server --example ledger_load -- --raw        # the store alone, 1,024-entry batches
//! # a 1M-entry database kept for `warden audit verify --data-dir /tmp/l1m`:
//! cargo run --release -p warden-server --example ledger_load -- --backend sqlite --concurrency 1024 --entries 1000000 --dir /tmp/l1m
//! ```
//!
//! For each backend and concurrency C: a fresh database, the same `Ledger` the server runs (writer
//! task, `max_batch` 1024, checkpoint every second), and C tasks that each record a decision entry
//! (~600 bytes, like `/v1/authorize` writes) and wait for it to be durable, back to back, for
//! `--seconds`. Reported: appends/s, the latency of `Ledger::record` (enqueue → committed, what a
//! decision waits for) p50/p99/max, and the mean batch size. Then the log is verified end to end
//! (every acknowledged entry present, hashes and checkpoints good), and inclusion proofs for random
//! entries are generated from the store's nodes. PostgreSQL is a throwaway server on loopback (as the
//! tests start it; `WARDEN_TEST_PG_URL` to use another); SQLite is a file in a temporary directory
//! (`synchronous=FULL`: every commit is an fsync).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use warden_ledger::{EntryKind, NewEntry, NoteSigner, RedactionKey, Redactor};
use warden_server::ledger::{Ledger, WriterSettings};
use warden_store::{LedgerFilter, Store};

struct Args {
    backends: Vec<String>,
    seconds: u64,
    concurrency: Vec<usize>,
    proofs: usize,
    raw: bool,
    /// Stop after this many entries instead of after `seconds`.
    entries: Option<u64>,
    /// Keep the SQLite database in this directory (for `warden audit verify --data-dir DIR`).
    dir: Option<std::path::PathBuf>,
}

fn args() -> Args {
    let mut a = Args {
        backends: vec!["sqlite".into(), "postgres".into()],
        seconds: 3,
        concurrency: vec![1, 16, 256, 1024],
        proofs: 1000,
        raw: false,
        entries: None,
        dir: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--raw" {
            a.raw = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--backend" => {
                a.backends = match value.as_str() {
                    "both" => vec!["sqlite".into(), "postgres".into()],
                    "sqlite" | "postgres" => vec![value],
                    other => panic!("--backend: sqlite, postgres or both, not {other}"),
                }
            }
            "--seconds" => a.seconds = value.parse().expect("--seconds: a number"),
            "--concurrency" => {
                a.concurrency = value
                    .split(',')
                    .map(|c| c.parse().expect("--concurrency: numbers, comma-separated"))
                    .collect()
            }
            "--proofs" => a.proofs = value.parse().expect("--proofs: a number"),
            "--entries" => a.entries = Some(value.parse().expect("--entries: a number")),
            "--dir" => a.dir = Some(value.into()),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn decision(i: u64) -> NewEntry {
    NewEntry::new(
        chrono::Utc::now(),
        EntryKind::Decision,
        "spiffe://bench.test/agent/bot-17",
    )
    .subject(format!("3f1c2a9e-8d41-4b6f-9c0e-{i:012}"))
    .body(json!({
        "agent": "bot-17",
        "outcome": "allow",
        "reasons": ["reads-within-task-scope: permit reads of declared upstreams"],
        "policy_version": "9a3c5d0e1f2b4a6c8d7e9f0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e",
        "action": "read",
        "upstream": "crm",
        "resource": "crm/search",
        "task": format!("3f1c2a9e-8d41-4b6f-9c0e-{i:012}"),
        "request_id": "0b7e2f4c-5a61-4d3e-8f92-1c0d9e8b7a65",
        "arguments": {"query": "open invoices for ACME", "limit": 50},
        "latency_us": 6,
    }))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i].as_secs_f64() * 1e3
}

async fn open(backend: &str, dir: &std::path::Path) -> Arc<dyn Store> {
    match backend {
        "sqlite" => Arc::new(
            warden_store::SqliteStore::open(&dir.join("warden.db"))
                .await
                .unwrap(),
        ),
        _ => warden_store::open(&warden_store::testing::fresh_postgres_url().await)
            .await
            .unwrap(),
    }
}

async fn run(a: &Args, backend: &str, concurrency: usize) {
    let (seconds, proofs) = (a.seconds, a.proofs);
    let limit = a.entries.unwrap_or(u64::MAX);
    let tmp = tempfile::tempdir().unwrap();
    let dir = a.dir.clone().unwrap_or_else(|| tmp.path().to_owned());
    let store = open(backend, &dir).await;
    let signer = NoteSigner::new(
        "bench.warden.test",
        ed25519_dalek::SigningKey::from_bytes(&[7; 32]),
    )
    .unwrap();
    let settings = WriterSettings {
        checkpoint_interval: Duration::from_secs(1),
        max_batch: 1024,
        queue: 65_536,
        append_timeout: Duration::from_secs(60),
    };
    let ledger = Ledger::start(
        store.clone(),
        signer.clone(),
        "bench.test/warden-ledger".into(),
        Redactor::new(RedactionKey::from_bytes(&[1; 32]).unwrap()),
        settings,
        "bench",
    )
    .await
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(if a.entries.is_some() { 3600 } else { seconds });
    let started = Instant::now();
    let done = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let ledger = ledger.clone();
        let done = done.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut acked = Vec::new();
            let mut i = w as u64 * 1_000_000_000;
            while Instant::now() < deadline && done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < limit
            {
                let t = Instant::now();
                let seq = ledger.record(decision(i)).await.unwrap();
                lat.push(t.elapsed());
                acked.push(seq);
                i += 1;
            }
            (lat, acked)
        }));
    }
    let mut lat = Vec::new();
    let mut acked = Vec::new();
    for t in tasks {
        let (l, a) = t.await.unwrap();
        lat.extend(l);
        acked.extend(a);
    }
    let elapsed = started.elapsed();
    ledger.shutdown().await;
    lat.sort_unstable();
    let n = lat.len();
    let head = store.ledger_head().await.unwrap();
    let checkpoints = store.ledger_checkpoints(0, u32::MAX).await.unwrap();

    // Every acknowledged entry is there, and the log verifies.
    acked.sort_unstable();
    acked.dedup();
    assert_eq!(acked.len(), n, "every acknowledgement names its own entry");
    assert!(acked.last().is_none_or(|l| *l < head.size()));
    let t = Instant::now();
    let mut records = Vec::with_capacity(head.size() as usize);
    while (records.len() as u64) < head.size() {
        let page = store
            .ledger_records(records.len() as u64, 10_000, &LedgerFilter::default())
            .await
            .unwrap();
        assert!(!page.is_empty());
        records.extend(page);
    }
    let read = t.elapsed();
    let t = Instant::now();
    let verifier =
        warden_ledger::CheckpointVerifier::new("bench.test/warden-ledger", vec![signer.verifier_key()])
            .unwrap();
    let notes: Vec<_> = checkpoints.iter().map(|c| c.note.clone()).collect();
    let report = warden_ledger::verify_log(
        records.into_iter().map(Ok::<_, std::convert::Infallible>),
        &notes,
        &verifier,
        warden_ledger::VerifyOptions::default(),
        |_| {},
    )
    .unwrap();
    let verified = t.elapsed();
    assert_eq!(report.entries, head.size());
    assert_eq!(report.unsigned_tail, 0);

    // Inclusion proofs from stored nodes, for random entries in the final tree.
    let size = head.size();
    let mut proof_lat = Vec::new();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for _ in 0..proofs.min(size as usize) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % size;
        let t = Instant::now();
        let proof = warden_store::inclusion_proof(store.as_ref(), index, size)
            .await
            .unwrap();
        proof_lat.push(t.elapsed());
        assert_eq!(
            proof.len(),
            warden_ledger::merkle::inclusion_proof_len(index, size)
        );
    }
    proof_lat.sort_unstable();

    println!(
        "| {backend} | {concurrency} | {:.0} | {:.2} / {:.2} / {:.2} | {:.0} | {} | {} | {:.0} ms + {:.0} ms | {:.2} / {:.2} |",
        n as f64 / elapsed.as_secs_f64(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        n as f64 / checkpoints.len().max(1) as f64,
        n,
        checkpoints.len(),
        read.as_secs_f64() * 1e3,
        verified.as_secs_f64() * 1e3,
        pct(&proof_lat, 0.50),
        pct(&proof_lat, 0.99),
    );
    store.close().await;
}

/// The store alone: `Store::ledger_append` of 1,024-entry batches back to back (no writer, no callers),
/// to tell the database's share from the writer's.
async fn raw(backend: &str, seconds: u64) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(backend, dir.path()).await;
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut n, mut batches, mut i) = (0u64, 0u64, 0u64);
    let mut build = Duration::ZERO;
    let started = Instant::now();
    while Instant::now() < deadline {
        let t = Instant::now();
        let batch: Vec<_> = (0..1024)
            .map(|_| {
                i += 1;
                decision(i).pre_encode().unwrap()
            })
            .collect();
        build += t.elapsed();
        store.ledger_append(batch, None).await.unwrap();
        n += 1024;
        batches += 1;
    }
    let elapsed = started.elapsed() - build;
    println!(
        "raw {backend}: {:.0} entries/s in the store ({:.2} ms per 1,024-entry commit, {batches} commits)",
        n as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64() * 1e3 / batches as f64
    );
    store.close().await;
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let a = args();
    if a.raw {
        for backend in &a.backends {
            raw(backend, a.seconds).await;
        }
        return;
    }
    println!(
        "| backend | concurrency | appends/s | record latency p50 / p99 / max ms | entries per checkpoint | entries | checkpoints | read + verify | inclusion proof p50 / p99 ms |"
    );
    println!("|---|---:|---:|---|---:|---:|---:|---|---|");
    for backend in &a.backends {
        for &c in &a.concurrency {
            run(&a, backend, c).await;
        }
    }
}
