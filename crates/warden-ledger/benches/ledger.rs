//! Ledger core benchmarks: per-entry encoding and hashing, frontier appends, batch preparation,
//! checkpoint signing, proofs at 1M leaves, and whole-log verification of 1M entries (all in
//! memory). Results and commands: BENCHMARKS.md, "Ledger core (issue 5)".

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use ed25519_dalek::SigningKey;
use serde_json::json;
use warden_ledger::{
    Checkpoint, CheckpointVerifier, DecisionRecord, EntryKind, Frontier, LogRecord, MemoryTree, NewEntry,
    NoteSigner, Outcome, VerifyOptions, leaf_hash, prepare_append, verify_consistency, verify_inclusion,
    verify_log,
};

const ORIGIN: &str = "bench.warden/ledger";
const LOG_SIZE: u64 = 1_000_000;
const CHECKPOINT_EVERY: u64 = 1_000;

/// A realistic decision entry: 610 bytes canonical.
fn decision(i: u64) -> NewEntry {
    let at =
        Utc.with_ymd_and_hms(2025, 6, 1, 0, 0, 0).unwrap() + chrono::Duration::microseconds(i as i64 * 1_733);
    NewEntry::new(
        at,
        EntryKind::Decision,
        format!("spiffe://acme.example/agent/agent-{}", i % 500),
    )
    .subject(format!("4b1d0c1e-5f0a-4c55-9f8e-{:012x}", i / 20))
    .body(
        DecisionRecord {
            outcome: if i.is_multiple_of(17) {
                Outcome::Deny
            } else {
                Outcome::Allow
            },
            reasons: vec![format!("permit-crm-reads-{}", i % 11), "default-pack".into()],
            policy_version: "sha256:6f2b1c0e9a7d4e3f8b5a2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d2e1f".into(),
            action: ["read", "write", "destructive"][(i % 3) as usize].into(),
            upstream: Some(format!("crm-{}", i % 40)),
            resource: Some("search_contacts".into()),
            task: Some(format!("4b1d0c1e-5f0a-4c55-9f8e-{:012x}", i / 20)),
            request_id: Some(format!("req-{i:016x}")),
            arguments: Some(json!({
                "query": "hmac-sha256:9b71d224bd62f3785d96d46ad3ea3d73319bfbc2890caadae2dff72519673ca7",
                "limit": 25
            })),
            errors: vec![],
            latency_us: 12 + i % 60,
        }
        .to_body(),
    )
}

fn signer() -> NoteSigner {
    NoteSigner::new(ORIGIN, SigningKey::from_bytes(&[7u8; 32])).unwrap()
}

struct Log {
    records: Vec<LogRecord>,
    checkpoints: Vec<String>,
    tree: MemoryTree,
}

fn build_log(n: u64) -> Log {
    let s = signer();
    let mut frontier = Frontier::new();
    let mut records = Vec::with_capacity(n as usize);
    let mut checkpoints = Vec::new();
    let mut tree = MemoryTree::new();
    let mut next = 0;
    while next < n {
        let end = (next + CHECKPOINT_EVERY).min(n);
        let p = prepare_append(&frontier, (next..end).map(decision).collect()).unwrap();
        checkpoints.push(p.sign_checkpoint(ORIGIN, &[&s]).unwrap());
        for e in p.entries {
            tree.push(e.leaf_hash()).unwrap();
            let (_, bytes, hash) = e.into_parts();
            records.push(LogRecord {
                seq: records.len() as u64,
                bytes,
                stored_hash: Some(hash),
            });
        }
        frontier = p.frontier;
        next = end;
    }
    Log {
        records,
        checkpoints,
        tree,
    }
}

fn per_entry(c: &mut Criterion) {
    let entry = decision(12_345);
    let encoded = entry.clone().at_seq(12_345).encode().unwrap();
    println!("canonical decision entry: {} bytes", encoded.bytes().len());
    c.bench_function("entry/encode+leaf_hash (decision, 610 B)", |b| {
        b.iter_batched(
            || entry.clone().at_seq(12_345),
            |e| black_box(e.encode().unwrap()),
            BatchSize::SmallInput,
        )
    });
    c.bench_function("entry/leaf_hash only", |b| {
        b.iter(|| black_box(leaf_hash(black_box(encoded.bytes()))))
    });
    c.bench_function("entry/decode (strict + canonical check)", |b| {
        b.iter(|| black_box(warden_ledger::EncodedEntry::decode(encoded.bytes().to_vec()).unwrap()))
    });

    let mut frontier = Frontier::new();
    let h = leaf_hash(b"x");
    c.bench_function("frontier/append", |b| {
        b.iter(|| frontier.append(black_box(h)).unwrap())
    });
    c.bench_function("frontier/root (after ~millions of appends)", |b| {
        b.iter(|| black_box(frontier.root()))
    });

    let batch: Vec<NewEntry> = (0..64).map(decision).collect();
    let base = Frontier::new();
    c.bench_function("append/prepare batch of 64", |b| {
        b.iter_batched(
            || batch.clone(),
            |batch| black_box(prepare_append(&base, batch).unwrap()),
            BatchSize::SmallInput,
        )
    });

    let s = signer();
    let cp = Checkpoint::new(ORIGIN, 1_000_000, leaf_hash(b"root")).unwrap();
    let note = cp.sign(&[&s]).unwrap();
    let v = CheckpointVerifier::new(ORIGIN, vec![s.verifier_key()]).unwrap();
    c.bench_function("checkpoint/sign", |b| {
        b.iter(|| black_box(cp.sign(&[&s]).unwrap()))
    });
    c.bench_function("checkpoint/verify", |b| {
        b.iter(|| black_box(v.verify(&note).unwrap()))
    });
}

fn at_one_million(c: &mut Criterion) {
    let t0 = std::time::Instant::now();
    let log = build_log(LOG_SIZE);
    println!(
        "built {} entries ({} checkpoints) in {:.1} s; {:.0} MB of entry bytes",
        log.records.len(),
        log.checkpoints.len(),
        t0.elapsed().as_secs_f64(),
        log.records.iter().map(|r| r.bytes.len()).sum::<usize>() as f64 / 1e6
    );
    let tree = &log.tree;
    let size = tree.size();
    let root = tree.root();

    let mut i = 0u64;
    c.bench_function("proof/inclusion generate (1M, in memory)", |b| {
        b.iter(|| {
            i = (i + 7_919) % size;
            black_box(tree.inclusion_proof(i, size).unwrap())
        })
    });
    let index = 654_321;
    let proof = tree.inclusion_proof(index, size).unwrap();
    let leaf = tree.leaf(index).unwrap();
    c.bench_function("proof/inclusion verify (1M)", |b| {
        b.iter(|| verify_inclusion(black_box(&leaf), index, size, &proof, &root).unwrap())
    });
    let mut m = 1u64;
    c.bench_function("proof/consistency generate (m → 1M)", |b| {
        b.iter(|| {
            m = (m + 7_919) % (size - 1) + 1;
            black_box(tree.consistency_proof(m, size).unwrap())
        })
    });
    let first = 777_777;
    let first_root = tree.root_at(first).unwrap();
    let cproof = tree.consistency_proof(first, size).unwrap();
    c.bench_function("proof/consistency verify (777,777 → 1M)", |b| {
        b.iter(|| verify_consistency(first, size, &first_root, &root, black_box(&cproof)).unwrap())
    });

    let verifier = CheckpointVerifier::new(ORIGIN, vec![signer().verifier_key()]).unwrap();
    let mut group = c.benchmark_group("verify_log");
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.bench_function("1M entries, 1,000 checkpoints", |b| {
        b.iter(|| {
            let report = verify_log(
                log.records.iter().map(|r| {
                    Ok::<_, Infallible>(LogRecord {
                        seq: r.seq,
                        bytes: r.bytes.as_slice(),
                        stored_hash: r.stored_hash,
                    })
                }),
                &log.checkpoints,
                &verifier,
                VerifyOptions::default(),
                |_| {},
            )
            .unwrap();
            assert_eq!(report.entries, LOG_SIZE);
            black_box(report)
        })
    });
    group.bench_function("1M entries, 1,000 checkpoints, decode_entries", |b| {
        b.iter(|| {
            let report = verify_log(
                log.records.iter().map(|r| {
                    Ok::<_, Infallible>(LogRecord {
                        seq: r.seq,
                        bytes: r.bytes.as_slice(),
                        stored_hash: r.stored_hash,
                    })
                }),
                &log.checkpoints,
                &verifier,
                VerifyOptions {
                    decode_entries: true,
                    ..VerifyOptions::default()
                },
                |_| {},
            )
            .unwrap();
            black_box(report)
        })
    });
    group.finish();
}

criterion_group!(benches, per_entry, at_one_million);
criterion_main!(benches);
