//! Tamper tests for whole-log verification: every way of editing a stored log is caught, and the
//! error names the first bad entry (or the checkpoint, for checkpoint forgeries).

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;

use common::*;
use warden_ledger::checkpoint::Checkpoint;
use warden_ledger::verify::verify_checkpoints;
use warden_ledger::{
    CheckpointError, CheckpointVerifier, EncodedEntry, LogRecord, LogVerifier, NoteError, SeqProblem,
    VerifyError, VerifyOptions, VerifyReport, leaf_hash, verify_log,
};

fn verify(records: Vec<LogRecord>, checkpoints: &[String]) -> Result<VerifyReport, VerifyError> {
    verify_with(records, checkpoints, VerifyOptions::default())
}

fn verify_with(
    records: Vec<LogRecord>,
    checkpoints: &[String],
    options: VerifyOptions,
) -> Result<VerifyReport, VerifyError> {
    verify_log(
        records.into_iter().map(Ok::<_, Infallible>),
        checkpoints,
        &verifier(),
        options,
        |_| {},
    )
}

/// Replaces the first occurrence of `from` inside entry `i`'s bytes.
fn edit(records: &mut [LogRecord], i: usize, from: &str, to: &str) {
    let text = String::from_utf8(records[i].bytes.clone()).unwrap();
    assert!(text.contains(from), "{text}");
    records[i].bytes = text.replacen(from, to, 1).into_bytes();
}

#[test]
fn a_clean_log_verifies() {
    let log = build_log(100, 10);
    let mut calls = 0;
    let report = verify_log(
        log.records().into_iter().map(Ok::<_, Infallible>),
        &log.checkpoints,
        &verifier(),
        VerifyOptions {
            decode_entries: true,
            progress_every: 25,
        },
        |_| calls += 1,
    )
    .unwrap();
    assert_eq!(report.entries, 100);
    assert_eq!(report.checkpoints, 10);
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(report.root, log.tree.root());
    assert_eq!(report.frontier, log.frontier);
    assert_eq!(report.latest_checkpoint.unwrap().size, 100);
    assert_eq!(calls, 5);
    // Entries beyond the last checkpoint are reported, not refused.
    let report = verify(log.records(), &log.checkpoints[..8]).unwrap();
    assert_eq!(report.unsigned_tail, 20);
    // No checkpoints at all: still checks hashes and order.
    assert_eq!(verify(log.records(), &[]).unwrap().unsigned_tail, 100);
}

#[test]
fn byte_flip_is_caught_at_the_entry() {
    let log = build_log(100, 10);
    // With the stored hash: the exact entry.
    let mut r = log.records();
    edit(&mut r, 37, "update_contact", "update_contacT");
    let err = verify(r, &log.checkpoints).unwrap_err();
    assert_eq!(err, VerifyError::StoredHashMismatch { index: 37 });
    assert_eq!(err.first_bad_index(), Some(37));

    // A flipped bit that breaks the JSON: the exact entry, even without stored hashes.
    let mut r = log.records();
    r[37].bytes[0] ^= 0x01;
    r[37].stored_hash = None;
    let err = verify(r, &log.checkpoints).unwrap_err();
    assert!(
        matches!(err, VerifyError::MalformedEntry { index: 37, .. }),
        "{err}"
    );

    // The attacker also rewrote the stored hash: the signed root catches it, and the first entry
    // not covered by a matching checkpoint is named.
    let mut r = log.records();
    edit(&mut r, 37, "update_contact", "update_contacT");
    r[37].stored_hash = Some(leaf_hash(&r[37].bytes));
    let err = verify(r, &log.checkpoints).unwrap_err();
    assert_eq!(
        err,
        VerifyError::RootMismatch {
            size: 40,
            first_unproven: 30
        }
    );
    assert_eq!(err.first_bad_index(), Some(30));
    assert!(err.to_string().contains("30..40"), "{err}");

    // Every single-bit flip of one entry is caught, with or without the stored hash.
    // (Checkpoint signatures are verified once: Ed25519 is slow in debug builds.)
    let log = build_log(20, 10);
    let clean = log.records();
    let checked = verify_checkpoints(&log.checkpoints, &verifier()).unwrap();
    let run = |records: Vec<LogRecord>| -> Result<VerifyReport, VerifyError> {
        let mut v = LogVerifier::with_checkpoints(checked.clone(), VerifyOptions::default())?;
        for r in &records {
            v.push(r)?;
        }
        v.finish()
    };
    assert!(run(clean.clone()).is_ok());
    for byte in 0..clean[5].bytes.len() {
        for bit in [1u8, 6] {
            let mut r = clean.clone();
            r[5].bytes[byte] ^= 1 << bit;
            let err = run(r.clone()).unwrap_err();
            assert_eq!(err.first_bad_index(), Some(5), "byte {byte} bit {bit}: {err}");
            r[5].stored_hash = None;
            let err = run(r).unwrap_err();
            assert!(
                matches!(err.first_bad_index(), Some(0..=5)),
                "byte {byte} bit {bit}: {err}"
            );
        }
    }
}

#[test]
fn reordering_is_caught_at_the_first_moved_entry() {
    let log = build_log(100, 10);
    // Rows read back in another order.
    let mut r = log.records();
    r.swap(20, 21);
    assert_eq!(
        verify(r, &log.checkpoints).unwrap_err(),
        VerifyError::Sequence {
            index: 20,
            found: 21,
            problem: SeqProblem::Gap
        }
    );
    // Contents (bytes and hashes) swapped between rows, sequence column untouched.
    let mut r = log.records();
    let (a, b) = (r[20].clone(), r[21].clone());
    r[20].bytes = b.bytes;
    r[20].stored_hash = b.stored_hash;
    r[21].bytes = a.bytes;
    r[21].stored_hash = a.stored_hash;
    let err = verify(r, &log.checkpoints).unwrap_err();
    assert_eq!(err, VerifyError::EmbeddedSeqMismatch { index: 20, found: 21 });
    assert_eq!(err.first_bad_index(), Some(20));
}

#[test]
fn deletion_is_caught() {
    let log = build_log(100, 10);
    let mut r = log.records();
    r.remove(50);
    let err = verify(r, &log.checkpoints).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Sequence {
            index: 50,
            found: 51,
            problem: SeqProblem::Gap
        }
    );
    assert!(err.to_string().contains("entries 50..51 are missing"), "{err}");

    // Deleted and everything after renumbered and rehashed: the signed root catches it.
    let mut r = log.records();
    r.remove(50);
    for (i, rec) in r.iter_mut().enumerate().skip(50) {
        let old = rec.seq;
        let text = String::from_utf8(rec.bytes.clone()).unwrap();
        rec.bytes = text
            .replace(&format!("\"seq\":{old},"), &format!("\"seq\":{i},"))
            .into_bytes();
        rec.seq = i as u64;
        rec.stored_hash = Some(leaf_hash(&rec.bytes));
        EncodedEntry::decode(rec.bytes.clone()).unwrap();
    }
    let err = verify(r, &log.checkpoints).unwrap_err();
    assert_eq!(
        err,
        VerifyError::RootMismatch {
            size: 60,
            first_unproven: 50
        }
    );
}

#[test]
fn duplicates_and_truncation_are_caught() {
    let log = build_log(100, 10);
    let mut r = log.records();
    let dup = r[10].clone();
    r.insert(11, dup);
    assert_eq!(
        verify(r, &log.checkpoints).unwrap_err(),
        VerifyError::Sequence {
            index: 11,
            found: 10,
            problem: SeqProblem::Repeated
        }
    );

    let mut r = log.records();
    r.truncate(95);
    let err = verify(r, &log.checkpoints).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Truncated {
            entries: 95,
            checkpoint_size: 100
        }
    );
    assert_eq!(err.first_bad_index(), Some(95));
}

#[test]
fn a_read_error_is_reported_at_its_position() {
    let log = build_log(20, 10);
    let records = log
        .records()
        .into_iter()
        .enumerate()
        .map(|(i, r)| if i == 13 { Err("disk on fire") } else { Ok(r) });
    let err = verify_log(
        records,
        &log.checkpoints,
        &verifier(),
        VerifyOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert_eq!(
        err,
        VerifyError::Source {
            index: 13,
            message: "disk on fire".into()
        }
    );
}

#[test]
fn checkpoint_forgeries_are_refused() {
    let log = build_log(100, 10);
    // Edited size.
    let mut cps = log.checkpoints.clone();
    cps[3] = cps[3].replacen("\n40\n", "\n41\n", 1);
    let err = verify(log.records(), &cps).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Checkpoint {
            position: 3,
            error: CheckpointError::Note(NoteError::BadSignature(ORIGIN.into()))
        }
    );
    assert_eq!(err.first_bad_index(), None);

    // Edited root.
    let mut cps = log.checkpoints.clone();
    let cp = warden_ledger::bundle::peek_checkpoint(&cps[4]).unwrap();
    let forged = Checkpoint {
        root: leaf_hash(b"x"),
        ..cp.clone()
    };
    cps[4] = cps[4].replace(forged_line(&cp).as_str(), forged_line(&forged).as_str());
    assert!(matches!(
        verify(log.records(), &cps).unwrap_err(),
        VerifyError::Checkpoint {
            position: 4,
            error: CheckpointError::Note(NoteError::BadSignature(_))
        }
    ));

    // A correct checkpoint signed by a key that is not trusted.
    let mut cps = log.checkpoints.clone();
    cps[6] = cp.sign(&[&other_signer()]).unwrap();
    assert_eq!(
        verify(log.records(), &cps).unwrap_err(),
        VerifyError::Checkpoint {
            position: 6,
            error: CheckpointError::Note(NoteError::UnknownKey)
        }
    );

    // A forged root signed by an untrusted key, alongside the trusted one: still refused.
    let mut cps = log.checkpoints.clone();
    let forged_note = forged.sign(&[&other_signer()]).unwrap();
    cps.push(forged_note);
    assert!(matches!(
        verify(log.records(), &cps).unwrap_err(),
        VerifyError::Checkpoint { position: 10, .. }
    ));

    // Another log's checkpoint, signed by a trusted key.
    let mut cps = log.checkpoints.clone();
    let other = Checkpoint::new("other.test/log", cp.size, cp.root).unwrap();
    let key = NoteSignerForOtherOrigin::new();
    cps[2] = other.sign(&[&key.0]).unwrap();
    let v = CheckpointVerifier::new(ORIGIN, vec![signer().verifier_key(), key.0.verifier_key()]).unwrap();
    let err = verify_log(
        log.records().into_iter().map(Ok::<_, Infallible>),
        &cps,
        &v,
        VerifyOptions::default(),
        |_| {},
    )
    .unwrap_err();
    assert!(matches!(
        err,
        VerifyError::Checkpoint {
            position: 2,
            error: CheckpointError::WrongOrigin { .. }
        }
    ));
}

struct NoteSignerForOtherOrigin(warden_ledger::NoteSigner);

impl NoteSignerForOtherOrigin {
    fn new() -> Self {
        Self(
            warden_ledger::NoteSigner::new(
                "other.test/log",
                ed25519_dalek::SigningKey::from_bytes(&[44u8; 32]),
            )
            .unwrap(),
        )
    }
}

fn forged_line(cp: &Checkpoint) -> String {
    cp.body()
}

#[test]
fn a_fork_is_refused() {
    // The log's own key signed two different trees of the same size: equivocation.
    let log = build_log(40, 10);
    let cp = warden_ledger::bundle::peek_checkpoint(&log.checkpoints[1]).unwrap();
    let fork = Checkpoint {
        root: leaf_hash(b"fork"),
        ..cp
    };
    let mut cps = log.checkpoints.clone();
    cps.push(fork.sign(&[&signer()]).unwrap());
    assert_eq!(
        verify(log.records(), &cps).unwrap_err(),
        VerifyError::ConflictingCheckpoints {
            size: 20,
            first: 1,
            second: 4
        }
    );
    // A signed root that matches no prefix of the entries.
    let mut cps = log.checkpoints.clone();
    cps[1] = fork.sign(&[&signer()]).unwrap();
    assert_eq!(
        verify(log.records(), &cps).unwrap_err(),
        VerifyError::RootMismatch {
            size: 20,
            first_unproven: 10
        }
    );
}

#[test]
fn an_empty_log() {
    let report = verify(vec![], &[]).unwrap();
    assert_eq!(report.entries, 0);
    assert_eq!(report.root, warden_ledger::empty_root());
    let cp = Checkpoint::new(ORIGIN, 0, warden_ledger::empty_root()).unwrap();
    assert!(verify(vec![], &[cp.sign(&[&signer()]).unwrap()]).is_ok());
    let bad = Checkpoint::new(ORIGIN, 0, leaf_hash(b"")).unwrap();
    assert!(matches!(
        verify(vec![], &[bad.sign(&[&signer()]).unwrap()]),
        Err(VerifyError::RootMismatch { size: 0, .. })
    ));
}

// ---------------------------------------------------------------------------------------------------
// What only a checkpoint kept outside the log can show (issue 14: truncation and rewrite detection)

/// A log of `n` entries rebuilt from `log`'s first `n`, checkpoints and all: what an attacker who cut
/// the newest entries off (or rewrote one and re-hashed everything) leaves behind.
fn cut(log: &TestLog, n: usize) -> (Vec<LogRecord>, Vec<String>) {
    let records = log.records()[..n].to_vec();
    // Genuine checkpoints of the remaining sizes are kept (every 10 entries).
    let checkpoints = log.checkpoints[..n / 10].to_vec();
    (records, checkpoints)
}

fn verify_expecting(
    records: Vec<LogRecord>,
    checkpoints: &[String],
    known: Option<&str>,
    min: Option<u64>,
) -> Result<VerifyReport, VerifyError> {
    let mut v = LogVerifier::new(checkpoints, &verifier(), VerifyOptions::default())?;
    if let Some(note) = known {
        let k = warden_ledger::KnownCheckpoint {
            note: note.to_owned(),
            known: "the checkpoint in saved.cp".into(),
        };
        v.require_checkpoint(k.verify(&verifier())?, &k.known)?;
    }
    if let Some(m) = min {
        v.require_min_size(m);
    }
    for r in &records {
        v.push(r)?;
    }
    v.finish()
}

#[test]
fn a_log_cut_back_with_its_checkpoints_verifies_only_without_an_outside_checkpoint() {
    let log = build_log(100, 10);
    let saved = log.checkpoints[9].clone(); // size 100
    let (records, checkpoints) = cut(&log, 70);
    // The limit of what a log can say about itself.
    assert_eq!(verify(records.clone(), &checkpoints).unwrap().entries, 70);
    // A checkpoint saved elsewhere catches it, naming both sizes.
    let err = verify_expecting(records.clone(), &checkpoints, Some(&saved), None).unwrap_err();
    assert_eq!(
        err,
        VerifyError::CutBack {
            entries: 70,
            size: 100,
            known: "the checkpoint in saved.cp".into()
        }
    );
    assert!(err.to_string().contains("70 entries"), "{err}");
    assert!(err.to_string().contains("covers 100"), "{err}");
    assert_eq!(err.first_bad_index(), Some(70));
    // So does a minimum size.
    let err = verify_expecting(records.clone(), &checkpoints, None, Some(71)).unwrap_err();
    assert_eq!(err, VerifyError::BelowMinimum { entries: 70, min: 71 });
    // Saved earlier, the same checkpoint is consistent with the longer log, at any size.
    assert!(verify_expecting(log.records(), &log.checkpoints, Some(&saved), Some(100)).is_ok());
    assert!(verify_expecting(records.clone(), &checkpoints, Some(&log.checkpoints[6]), Some(70)).is_ok());
    // A checkpoint of a size no stored checkpoint has is still compared.
    let mid = Checkpoint::new(ORIGIN, 65, log.tree.root_at(65).unwrap())
        .unwrap()
        .sign(&[&signer()])
        .unwrap();
    assert!(verify_expecting(records.clone(), &checkpoints, Some(&mid), None).is_ok());
    // An empty log against an empty tree's checkpoint.
    let empty = Checkpoint::new(ORIGIN, 0, warden_ledger::empty_root())
        .unwrap()
        .sign(&[&signer()])
        .unwrap();
    assert!(verify_expecting(vec![], &[], Some(&empty), None).is_ok());
}

#[test]
fn a_rewritten_entry_under_an_outside_checkpoint_is_caught() {
    let log = build_log(100, 10);
    let saved = log.checkpoints[9].clone();
    // Entry 83 rewritten, its hash and every later checkpoint re-made by someone without the key:
    // the checkpoints covering it are dropped, the log re-hashed.
    let mut records = log.records();
    edit(&mut records, 83, "owners", "ownerz");
    records[83].stored_hash = Some(leaf_hash(&records[83].bytes));
    let checkpoints = log.checkpoints[..8].to_vec();
    assert_eq!(verify(records.clone(), &checkpoints).unwrap().unsigned_tail, 20);
    let err = verify_expecting(records, &checkpoints, Some(&saved), None).unwrap_err();
    assert_eq!(
        err,
        VerifyError::Rewritten {
            size: 100,
            first_unproven: 80,
            known: "the checkpoint in saved.cp".into()
        }
    );
    assert_eq!(err.first_bad_index(), Some(80));
}

#[test]
fn a_forged_outside_checkpoint_is_refused() {
    let log = build_log(30, 10);
    let forged = Checkpoint::new(ORIGIN, 30, log.tree.root())
        .unwrap()
        .sign(&[&other_signer()])
        .unwrap();
    let err = verify_expecting(log.records(), &log.checkpoints, Some(&forged), None).unwrap_err();
    assert!(
        matches!(
            &err,
            VerifyError::KnownCheckpoint {
                error: CheckpointError::Note(NoteError::UnknownKey),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("the checkpoint in saved.cp is not acceptable"),
        "{err}"
    );
    // An edited size breaks the signature.
    let edited = log.checkpoints[2].replacen("\n30\n", "\n31\n", 1);
    let err = verify_expecting(log.records(), &log.checkpoints, Some(&edited), None).unwrap_err();
    assert!(matches!(err, VerifyError::KnownCheckpoint { .. }), "{err:?}");
}
