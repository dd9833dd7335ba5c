//! Evidence bundles end to end: export (complete and filtered), read back, verify offline, and every
//! kind of tampering with the file refused.

#![allow(clippy::unwrap_used)]

mod common;

use std::convert::Infallible;

use chrono::{TimeZone, Utc};
use common::*;
use warden_ledger::{
    BundleError, BundleTrust, ExportSpec, PolicyBlob, Scope, VerifyError, export_bundle, read_bundle,
    verify_bundle, write_bundle,
};

fn spec(log: &TestLog, scope: Scope) -> ExportSpec {
    ExportSpec {
        origin: ORIGIN.into(),
        created_at: Utc.with_ymd_and_hms(2025, 7, 1, 0, 0, 0).unwrap(),
        scope,
        keys: vec![signer().verifier_key()],
        policies: vec![PolicyBlob {
            version: "sha256:v0".into(),
            media_type: "application/x-warden-policies+json".into(),
            data: b"{\"policies\":[]}".to_vec(),
            activation: None,
        }],
        checkpoints: log.checkpoints.clone(),
        redaction_key: Some("sha256:0011223344556677".into()),
        generator: Some("warden test".into()),
    }
}

fn complete(log: &TestLog) -> Vec<u8> {
    export_bundle(
        Vec::new(),
        &spec(
            log,
            Scope {
                complete: true,
                ..Scope::default()
            },
        ),
        &log.tree,
        log.entries.iter().cloned().map(Ok::<_, Infallible>),
    )
    .unwrap()
}

fn filtered(log: &TestLog, pick: impl Fn(u64) -> bool) -> Vec<u8> {
    export_bundle(
        Vec::new(),
        &spec(
            log,
            Scope {
                complete: false,
                agent: Some("spiffe://acme.test/agent/a1".into()),
                ..Scope::default()
            },
        ),
        &log.tree,
        log.entries
            .iter()
            .filter(|e| pick(e.seq()))
            .cloned()
            .map(Ok::<_, Infallible>),
    )
    .unwrap()
}

fn pinned() -> BundleTrust {
    BundleTrust {
        origin: Some(ORIGIN.into()),
        keys: Some(vec![signer().verifier_key()]),
    }
}

fn check(bytes: &[u8], trust: &BundleTrust) -> Result<warden_ledger::BundleReport, VerifyError> {
    verify_bundle(bytes, trust, |_| {})
}

/// Edits line `n` (1-based) of a bundle as JSON.
fn edit_line(bytes: &[u8], n: usize, f: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let mut v: serde_json::Value = serde_json::from_str(&lines[n - 1]).unwrap();
    f(&mut v);
    lines[n - 1] = serde_json::to_string(&v).unwrap();
    (lines.join("\n") + "\n").into_bytes()
}

fn line_of(bytes: &[u8], pred: impl Fn(&serde_json::Value) -> bool) -> usize {
    std::str::from_utf8(bytes)
        .unwrap()
        .lines()
        .position(|l| pred(&serde_json::from_str(l).unwrap()))
        .unwrap()
        + 1
}

fn remove_line(bytes: &[u8], n: usize) -> Vec<u8> {
    let text = std::str::from_utf8(bytes).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .enumerate()
        .filter(|(i, _)| i + 1 != n)
        .map(|(_, l)| l)
        .collect();
    (lines.join("\n") + "\n").into_bytes()
}

fn entry_line(bytes: &[u8], seq: u64) -> usize {
    line_of(bytes, |v| v["type"] == "entry" && v["seq"] == seq)
}

#[test]
fn complete_export_verifies_offline() {
    let log = build_log(60, 10);
    let bytes = complete(&log);
    let report = check(&bytes, &pinned()).unwrap();
    assert!(report.complete);
    assert_eq!(report.entries, 60);
    assert_eq!(report.latest_checkpoint.size, 60);
    assert_eq!(report.latest_checkpoint.root, log.tree.root());
    assert_eq!(report.checkpoints, 6);
    assert!(!report.keys_from_bundle);
    assert!(report.contiguous);
    assert_eq!(report.policy_versions_referenced, vec!["sha256:v0", "sha256:v1"]);
    assert_eq!(report.policy_versions_missing, vec!["sha256:v1"]);
    assert_eq!(report.redaction_key.as_deref(), Some("sha256:0011223344556677"));

    // With the bundle's own keys (reported as such).
    let report = check(&bytes, &BundleTrust::default()).unwrap();
    assert!(report.keys_from_bundle);

    // The in-memory form round-trips byte for byte.
    let bundle = read_bundle(bytes.as_slice()).unwrap();
    assert_eq!(bundle.entries.len(), 60);
    assert_eq!(bundle.consistency.len(), 5);
    assert_eq!(write_bundle(Vec::new(), &bundle).unwrap(), bytes);
}

#[test]
fn filtered_export_verifies_by_inclusion_proofs() {
    let log = build_log(60, 10);
    let bytes = filtered(&log, |s| s % 7 == 3);
    let report = check(&bytes, &pinned()).unwrap();
    assert!(!report.complete);
    assert_eq!(report.entries, 9);
    assert_eq!(report.first_seq, Some(3));
    assert_eq!(report.last_seq, Some(59));
    assert!(!report.contiguous);
    assert_eq!(report.scope.agent.as_deref(), Some("spiffe://acme.test/agent/a1"));

    let range = filtered(&log, |s| (20..30).contains(&s));
    assert!(check(&range, &pinned()).unwrap().contiguous);
    // An empty selection is still a valid (checkpoints-only) bundle.
    assert_eq!(check(&filtered(&log, |_| false), &pinned()).unwrap().entries, 0);
}

#[test]
fn tampered_entries_are_refused_with_their_index() {
    let log = build_log(60, 10);
    for bytes in [complete(&log), filtered(&log, |s| s % 3 == 0)] {
        let n = entry_line(&bytes, 27);
        // The decoded copy says something else than the hashed bytes.
        let t = edit_line(&bytes, n, |v| v["entry"]["actor"] = "someone-else".into());
        assert_eq!(
            check(&t, &pinned()).unwrap_err(),
            VerifyError::DecodedMismatch { index: 27 }
        );
        // Both copies edited consistently: the leaf hash no longer matches.
        let t = edit_line(&bytes, n, |v| {
            v["entry"]["actor"] = "someone-else".into();
            let mut e: serde_json::Value = v["entry"].clone();
            e["actor"] = "someone-else".into();
            let canon = warden_ledger::canonical::to_vec(&e).unwrap();
            use base64::Engine as _;
            v["canonical"] = base64::engine::general_purpose::STANDARD.encode(canon).into();
        });
        assert_eq!(
            check(&t, &pinned()).unwrap_err(),
            VerifyError::StoredHashMismatch { index: 27 }
        );
        // …and the leaf hash recomputed too: the tree (complete) or the proof (filtered) refuses.
        let t = edit_line(&t, n, |v| {
            use base64::Engine as _;
            let canon = base64::engine::general_purpose::STANDARD
                .decode(v["canonical"].as_str().unwrap())
                .unwrap();
            v["leaf_hash"] = warden_ledger::leaf_hash(&canon).to_hex().into();
        });
        let err = check(&t, &pinned()).unwrap_err();
        match err {
            VerifyError::RootMismatch {
                size: 30,
                first_unproven: 20,
            } => {}
            VerifyError::Inclusion { index: 27, .. } => {}
            other => panic!("{other}"),
        }
        // An entry claims another position.
        let t = edit_line(&bytes, n, |v| v["seq"] = 28.into());
        assert!(check(&t, &pinned()).unwrap_err().first_bad_index().is_some());
    }
}

#[test]
fn removed_and_reordered_entries_are_refused() {
    let log = build_log(60, 10);
    let bytes = complete(&log);
    // A line removed (and the end count fixed): the gap is named.
    let t = remove_line(&bytes, entry_line(&bytes, 33));
    let t = edit_line(&t, line_of(&t, |v| v["type"] == "end"), |v| {
        v["entries"] = 59.into()
    });
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Sequence {
            index: 33,
            found: 34,
            ..
        }
    ));
    // Not fixed: the gap still comes first.
    assert!(check(&remove_line(&bytes, entry_line(&bytes, 59)), &pinned()).is_err());
    // The last entries dropped, counts fixed: truncation.
    let mut t = bytes.clone();
    for seq in (55..60).rev() {
        t = remove_line(&t, entry_line(&t, seq));
    }
    let t = edit_line(&t, line_of(&t, |v| v["type"] == "end"), |v| {
        v["entries"] = 55.into()
    });
    assert_eq!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Truncated {
            entries: 55,
            checkpoint_size: 60
        }
    );
    // Two entry lines swapped.
    let (a, b) = (entry_line(&bytes, 40), entry_line(&bytes, 41));
    let text = std::str::from_utf8(&bytes).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(a - 1, b - 1);
    let t = (lines.join("\n") + "\n").into_bytes();
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Sequence { index: 40, .. }
    ));

    // Filtered: order matters too.
    let f = filtered(&log, |s| s % 5 == 0);
    let (a, b) = (entry_line(&f, 10), entry_line(&f, 15));
    let text = std::str::from_utf8(&f).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.swap(a - 1, b - 1);
    let t = (lines.join("\n") + "\n").into_bytes();
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Sequence { .. }
    ));
}

#[test]
fn tampered_proofs_and_checkpoints_are_refused() {
    let log = build_log(60, 10);
    let f = filtered(&log, |s| s % 4 == 1);
    // Inclusion proof element flipped.
    let t = edit_line(&f, entry_line(&f, 21), |v| {
        let h = v["inclusion"][1].as_str().unwrap().to_owned();
        let flipped = if h.starts_with('0') {
            h.replacen('0', "1", 1)
        } else {
            format!("0{}", &h[1..])
        };
        v["inclusion"][1] = flipped.into();
    });
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Inclusion { index: 21, .. }
    ));
    // Inclusion proof dropped.
    let t = edit_line(&f, entry_line(&f, 21), |v| {
        v.as_object_mut().unwrap().remove("inclusion");
    });
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Inclusion { index: 21, .. }
    ));
    // Consistency proof removed or edited.
    let c = line_of(&f, |v| v["type"] == "consistency" && v["from"] == 20);
    assert_eq!(
        check(&remove_line(&f, c), &pinned()).unwrap_err(),
        VerifyError::MissingConsistency { from: 20, to: 30 }
    );
    let t = edit_line(&f, c, |v| {
        v["proof"].as_array_mut().unwrap().pop().map(|_| ()).unwrap_or(())
    });
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Consistency { from: 20, to: 30, .. }
    ));
    // Checkpoint edited.
    let cl = line_of(&f, |v| v["type"] == "checkpoint");
    let t = edit_line(&f, cl, |v| {
        let note = v["note"].as_str().unwrap().replacen("\n10\n", "\n11\n", 1);
        v["note"] = note.into();
    });
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Checkpoint { position: 0, .. }
    ));
    // The auditor pins another key: nothing the bundle carries helps.
    let other = BundleTrust {
        origin: None,
        keys: Some(vec![other_signer().verifier_key()]),
    };
    assert!(matches!(
        check(&f, &other).unwrap_err(),
        VerifyError::Checkpoint { position: 0, .. }
    ));
    // Wrong origin pinned.
    let wrong = BundleTrust {
        origin: Some("elsewhere.test/log".into()),
        keys: None,
    };
    assert!(matches!(
        check(&f, &wrong).unwrap_err(),
        VerifyError::Bundle(BundleError::WrongOrigin { .. })
    ));
    // The header lies about the tree size.
    let t = edit_line(&f, 1, |v| v["tree_size"] = 50.into());
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Bundle(BundleError::TreeSizeMismatch {
            header: 50,
            latest: 60
        })
    ));
}

#[test]
fn damaged_files_are_refused() {
    let log = build_log(20, 10);
    let bytes = complete(&log);
    // Cut before the end record.
    let t = remove_line(&bytes, line_of(&bytes, |v| v["type"] == "end"));
    assert_eq!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Bundle(BundleError::Truncated)
    );
    // Cut mid-line.
    assert_eq!(
        check(&bytes[..bytes.len() - 3], &pinned()).unwrap_err(),
        VerifyError::Bundle(BundleError::Truncated)
    );
    // Trailing data.
    let mut t = bytes.clone();
    t.extend_from_slice(b"{\"type\":\"key\",\"vkey\":\"x\"}\n");
    assert!(check(&t, &pinned()).is_err());
    // Records out of order.
    let k = line_of(&bytes, |v| v["type"] == "key");
    let e = entry_line(&bytes, 0);
    let text = std::str::from_utf8(&bytes).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    let key = lines.remove(k - 1);
    lines.insert(e - 1, key);
    let t = (lines.join("\n") + "\n").into_bytes();
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Bundle(BundleError::Order { .. })
    ));
    // Unknown members and versions.
    let t = edit_line(&bytes, 1, |v| v["version"] = 2.into());
    assert_eq!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Bundle(BundleError::NotABundle)
    );
    let t = edit_line(&bytes, entry_line(&bytes, 3), |v| v["extra"] = 1.into());
    assert!(matches!(
        check(&t, &pinned()).unwrap_err(),
        VerifyError::Bundle(BundleError::Malformed { .. })
    ));
    assert!(check(b"not json\n", &pinned()).is_err());
    assert!(check(b"", &pinned()).is_err());
    // An over-long line is refused before it is buffered whole.
    let long = vec![b'x'; warden_ledger::bundle::MAX_LINE_BYTES + 10];
    assert!(matches!(
        check(&long, &pinned()).unwrap_err(),
        VerifyError::Bundle(BundleError::LineTooLong { line: 1 })
    ));
}

#[test]
fn exports_refuse_what_they_cannot_prove() {
    let log = build_log(30, 10);
    // Complete export missing an entry.
    let err = export_bundle(
        Vec::new(),
        &spec(
            &log,
            Scope {
                complete: true,
                ..Scope::default()
            },
        ),
        &log.tree,
        log.entries
            .iter()
            .filter(|e| e.seq() != 5)
            .cloned()
            .map(Ok::<_, Infallible>),
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::Export(_)));
    // An entry past the latest checkpoint.
    let mut s = spec(&log, Scope::default());
    s.checkpoints.truncate(2);
    let err = export_bundle(
        Vec::new(),
        &s,
        &log.tree,
        log.entries.iter().cloned().map(Ok::<_, Infallible>),
    )
    .unwrap_err();
    assert!(matches!(err, BundleError::Export(_)));
    // No checkpoint at all.
    let mut s = spec(&log, Scope::default());
    s.checkpoints.clear();
    assert_eq!(
        export_bundle(
            Vec::new(),
            &s,
            &log.tree,
            std::iter::empty::<Result<_, Infallible>>()
        )
        .unwrap_err(),
        BundleError::NoCheckpoint
    );
}

#[test]
fn a_bundle_file_verifies_from_disk() {
    use std::io::{BufReader, BufWriter};
    let log = build_log(25, 10);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evidence.jsonl");
    let file = std::fs::File::create(&path).unwrap();
    let spec = spec(
        &log,
        Scope {
            complete: true,
            ..Scope::default()
        },
    );
    export_bundle(
        BufWriter::new(file),
        &spec,
        &log.tree,
        log.entries.iter().cloned().map(Ok::<_, Infallible>),
    )
    .unwrap();
    let report = verify_bundle(
        BufReader::new(std::fs::File::open(&path).unwrap()),
        &pinned(),
        |_| {},
    )
    .unwrap();
    assert_eq!(report.entries, 25);
    let bundle = read_bundle(BufReader::new(std::fs::File::open(&path).unwrap())).unwrap();
    assert_eq!(bundle.header.tree_size, 25);
}

// ---------------------------------------------------------------------------------------------------
// Outside checkpoints and minimum sizes (issue 14: truncation and rewrite detection)

fn expecting(note: Option<&str>, min: Option<u64>) -> warden_ledger::Expected {
    warden_ledger::Expected {
        checkpoint: note.map(|n| warden_ledger::KnownCheckpoint {
            note: n.to_owned(),
            known: "the checkpoint in saved.cp".into(),
        }),
        min_size: min,
    }
}

fn check_expecting(
    bytes: &[u8],
    expected: &warden_ledger::Expected,
) -> Result<warden_ledger::BundleReport, VerifyError> {
    warden_ledger::verify_bundle_expecting(bytes, &pinned(), expected, |_| {})
}

/// A complete bundle of a log cut back to 40 entries (checkpoints and all) verifies by itself; the
/// checkpoint of size 60 saved before the cut does not let it.
#[test]
fn a_bundle_of_a_cut_back_log_fails_against_a_saved_checkpoint() {
    let log = build_log(60, 10);
    let saved = log.checkpoints[5].clone();
    let mut short = build_log(60, 10);
    short.entries.truncate(40);
    short.checkpoints.truncate(4);
    let bytes = complete(&short);
    assert!(check(&bytes, &pinned()).is_ok());
    let err = check_expecting(&bytes, &expecting(Some(&saved), None)).unwrap_err();
    assert_eq!(
        err,
        VerifyError::CutBack {
            entries: 40,
            size: 60,
            known: "the checkpoint in saved.cp".into()
        }
    );
    assert_eq!(
        check_expecting(&bytes, &expecting(None, Some(41))).unwrap_err(),
        VerifyError::BelowMinimum { entries: 40, min: 41 }
    );
    // The full log's bundle against the same checkpoint, at a size between two of its own, and a
    // minimum it reaches.
    let full = complete(&log);
    let r = check_expecting(&full, &expecting(Some(&saved), Some(60))).unwrap();
    assert_eq!(r.known_checkpoint, Some(60));
    let mid = warden_ledger::Checkpoint::new(ORIGIN, 45, log.tree.root_at(45).unwrap())
        .unwrap()
        .sign(&[&signer()])
        .unwrap();
    assert_eq!(
        check_expecting(&full, &expecting(Some(&mid), None))
            .unwrap()
            .known_checkpoint,
        Some(45)
    );
    // A checkpoint of another tree of the same size: the bundle's history is not the saved one.
    let other = warden_ledger::Checkpoint::new(ORIGIN, 45, log.tree.root_at(44).unwrap())
        .unwrap()
        .sign(&[&signer()])
        .unwrap();
    assert!(matches!(
        check_expecting(&full, &expecting(Some(&other), None)).unwrap_err(),
        VerifyError::Rewritten { size: 45, .. }
    ));
    // Signed by a key the auditor does not trust.
    let forged = warden_ledger::Checkpoint::new(ORIGIN, 60, log.tree.root())
        .unwrap()
        .sign(&[&other_signer()])
        .unwrap();
    assert!(matches!(
        check_expecting(&full, &expecting(Some(&forged), None)).unwrap_err(),
        VerifyError::KnownCheckpoint { .. }
    ));
}

#[test]
fn a_filtered_bundle_says_what_it_cannot_prove() {
    let log = build_log(60, 10);
    let f = filtered(&log, |s| s % 7 == 3);
    // Its own (latest) checkpoint's size: compared.
    assert!(check_expecting(&f, &expecting(Some(&log.checkpoints[5]), None)).is_ok());
    let other = warden_ledger::Checkpoint::new(ORIGIN, 60, log.tree.root_at(59).unwrap())
        .unwrap()
        .sign(&[&signer()])
        .unwrap();
    assert!(matches!(
        check_expecting(&f, &expecting(Some(&other), None)).unwrap_err(),
        VerifyError::Rewritten { size: 60, .. }
    ));
    // A size none of its checkpoints has: it carries no proof, and says so.
    let between = warden_ledger::Checkpoint::new(ORIGIN, 35, log.tree.root_at(35).unwrap())
        .unwrap()
        .sign(&[&signer()])
        .unwrap();
    let err = check_expecting(&f, &expecting(Some(&between), None)).unwrap_err();
    assert!(matches!(err, VerifyError::Unprovable { size: 35, .. }), "{err:?}");
    assert!(err.to_string().contains("complete export"), "{err}");
    // A larger one: the bundle's log is shorter.
    let mut short = build_log(60, 10);
    short.checkpoints.truncate(3);
    short.entries.truncate(30);
    let fs = filtered(&short, |s| s % 7 == 3);
    assert!(matches!(
        check_expecting(&fs, &expecting(Some(&log.checkpoints[5]), None)).unwrap_err(),
        VerifyError::CutBack {
            entries: 30,
            size: 60,
            ..
        }
    ));
}

// ---------------------------------------------------------------------------------------------------
// Policies are evidence too (issue 14)

use warden_ledger::policy;

const POLICY_TEXT: &str = "@id(\"all\") permit(principal, action, resource);\n";

fn policy_files() -> std::collections::BTreeMap<String, String> {
    [
        ("a.cedar".to_owned(), POLICY_TEXT.to_owned()),
        (
            "b.cedar".to_owned(),
            "@id(\"none\") forbid(principal, action, resource) when { false };\n".to_owned(),
        ),
    ]
    .into()
}

/// A log whose entry 0 activates the policy set and whose decisions name it; checkpoints every 5.
fn policy_log(file_hashes: bool) -> (TestLog, String) {
    use warden_ledger::{DecisionRecord, EntryKind, Frontier, MemoryTree, NewEntry, Outcome, prepare_append};
    let files = policy_files();
    let version = policy::set_version(&files);
    let at = Utc.with_ymd_and_hms(2025, 6, 1, 12, 0, 0).unwrap();
    let mut body = serde_json::json!({"op": "policy.active", "policy_version": version, "files": ["a.cedar", "b.cedar"]});
    if file_hashes {
        body["file_hashes"] = serde_json::to_value(policy::file_hashes(&files)).unwrap();
    }
    let mut all = vec![
        NewEntry::new(at, EntryKind::PolicyChange, "admin@acme.test")
            .subject(version.clone())
            .body(body),
    ];
    for i in 1..10 {
        all.push(
            NewEntry::new(at, EntryKind::Decision, "spiffe://acme.test/agent/a1").body(
                DecisionRecord {
                    outcome: Outcome::Allow,
                    reasons: vec!["all".into()],
                    policy_version: version.clone(),
                    action: "read".into(),
                    upstream: None,
                    resource: None,
                    task: None,
                    request_id: Some(format!("req-{i}")),
                    arguments: None,
                    errors: vec![],
                    latency_us: 1,
                }
                .to_body(),
            ),
        );
    }
    let (mut frontier, mut tree) = (Frontier::new(), MemoryTree::new());
    let (mut entries, mut checkpoints) = (Vec::new(), Vec::new());
    for batch in all.chunks(5) {
        let p = prepare_append(&frontier, batch.to_vec()).unwrap();
        checkpoints.push(p.sign_checkpoint(ORIGIN, &[&signer()]).unwrap());
        for e in &p.entries {
            tree.push(e.leaf_hash()).unwrap();
        }
        entries.extend(p.entries);
        frontier = p.frontier;
    }
    (
        TestLog {
            entries,
            checkpoints,
            tree,
            frontier,
        },
        version,
    )
}

/// The blob an export writes, with the activation entry proven against the latest checkpoint.
fn policy_blob(
    log: &TestLog,
    version: &str,
    files: &std::collections::BTreeMap<String, String>,
) -> PolicyBlob {
    let e = &log.entries[0];
    PolicyBlob {
        version: version.to_owned(),
        media_type: policy::POLICY_SET_MEDIA_TYPE.into(),
        data: serde_json::to_vec(files).unwrap(),
        activation: Some(warden_ledger::BundleEntry {
            seq: 0,
            leaf_hash: e.leaf_hash(),
            canonical: e.bytes().to_vec(),
            entry: e.entry().to_value().unwrap(),
            inclusion: Some(log.tree.inclusion_proof(0, log.tree.size()).unwrap()),
        }),
    }
}

fn policy_bundle(log: &TestLog, blobs: Vec<PolicyBlob>, complete: bool) -> Vec<u8> {
    let mut s = spec(
        log,
        Scope {
            complete,
            agent: (!complete).then(|| "a1".to_owned()),
            ..Scope::default()
        },
    );
    s.policies = blobs;
    if !complete {
        s.checkpoints = vec![log.checkpoints.last().unwrap().clone()];
    }
    export_bundle(
        Vec::new(),
        &s,
        &log.tree,
        log.entries
            .iter()
            .filter(|e| complete || e.seq() > 0)
            .cloned()
            .map(Ok::<_, Infallible>),
    )
    .unwrap()
}

#[test]
fn policy_sets_in_a_bundle_are_bound_to_their_hash_and_activation() {
    let (log, version) = policy_log(true);
    for complete in [true, false] {
        let good = policy_bundle(&log, vec![policy_blob(&log, &version, &policy_files())], complete);
        let r = check(&good, &pinned()).unwrap();
        assert_eq!(r.policy_versions_verified, vec![version.clone()]);
        assert_eq!(r.policy_versions_activated, vec![version.clone()]);
        assert!(r.policy_versions_missing.is_empty());
    }
}

/// The bug: a policy text edited inside a bundle verified with pinned keys.
#[test]
fn policy_text_edited_in_a_bundle_fails_naming_the_set_and_file() {
    let (log, version) = policy_log(true);
    let good = policy_bundle(&log, vec![policy_blob(&log, &version, &policy_files())], false);
    let line = line_of(&good, |v| v["type"] == "policy");
    let mut edited = policy_files();
    edited.insert("a.cedar".into(), POLICY_TEXT.replace("permit", "forbid"));
    let t = edit_line(&good, line, |v| {
        v["data"] = base64::Engine::encode(
            &base64::engine::general_purpose::STANDARD,
            serde_json::to_vec(&edited).unwrap(),
        )
        .into();
    });
    let err = check(&t, &pinned()).unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(&err, VerifyError::Policy { version: v, .. } if *v == version),
        "{err:?}"
    );
    assert!(msg.contains("`a.cedar` was changed"), "{msg}");
    assert!(!msg.contains("b.cedar"), "{msg}");

    // Without the activation entry, the set is still caught; the file cannot be named.
    let t2 = edit_line(&t, line, |v| {
        v.as_object_mut().unwrap().remove("activation");
    });
    let msg = check(&t2, &pinned()).unwrap_err().to_string();
    assert!(msg.contains(&version) && msg.contains("cannot be named"), "{msg}");

    // Relabelled with the edited text's own hash: the decisions' version is no longer carried.
    let t3 = edit_line(&t2, line, |v| v["version"] = policy::set_version(&edited).into());
    let err = check(&t3, &pinned()).unwrap_err();
    assert!(
        matches!(&err, VerifyError::Policy { version: v, problem } if *v == version && problem.contains("does not carry")),
        "{err:?}"
    );

    // Relabelled but with the original activation kept: the entry names another version.
    let t4 = edit_line(&t, line, |v| v["version"] = policy::set_version(&edited).into());
    let msg = check(&t4, &pinned()).unwrap_err().to_string();
    assert!(msg.contains("activated policy set"), "{msg}");

    // An activation entry whose proof does not lead to the checkpoint.
    let t5 = edit_line(&good, line, |v| {
        v["activation"]["inclusion"] = serde_json::json!([]);
    });
    let msg = check(&t5, &pinned()).unwrap_err().to_string();
    assert!(msg.contains("not in the tree"), "{msg}");

    // An activation that records no file hashes (older entries): the set is named, the files listed.
    let (old, version) = policy_log(false);
    let good = policy_bundle(&old, vec![policy_blob(&old, &version, &policy_files())], true);
    assert!(check(&good, &pinned()).is_ok());
    let blob = policy_blob(&old, &version, &edited);
    let msg = check(&policy_bundle(&old, vec![blob], true), &pinned())
        .unwrap_err()
        .to_string();
    assert!(msg.contains("records no file hashes"), "{msg}");
    assert!(msg.contains("`a.cedar`, `b.cedar`"), "{msg}");
}

#[test]
fn the_content_hash_agrees_with_warden_policy() {
    // warden-policy's own test holds `PolicySource::version` equal to this; here the fixed value.
    let files: std::collections::BTreeMap<String, String> = [("a.cedar".to_owned(), "x".to_owned())].into();
    let digest = <sha2::Sha256 as sha2::Digest>::digest(b"a.cedar\x001\x00x");
    assert_eq!(policy::set_version(&files), hex::encode(digest));
}
