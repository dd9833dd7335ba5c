//! The scanner against a corpus (`scanner_corpus.json`, made by `scanner_corpus_gen.py`): fake but
//! format-valid secrets of several kinds under the encodings a leak takes (hex, base64, two layers of
//! them, percent and backslash escapes, zero-width and full-width characters, split across an
//! object's or an array's members, URLs with passwords, credential-named members), and ordinary tool
//! arguments. Prints recall and false positives per category; requires every positive sample to be
//! found under its rule and no negative sample to be reported.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;

use serde_json::Value;
use warden_gateway::scan::Scanner;

#[test]
fn scanner_corpus_recall_and_false_positives() {
    let corpus: Value = serde_json::from_str(include_str!("scanner_corpus.json")).unwrap();
    let scanner = Scanner::new(&[]).unwrap();

    let mut recall: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut missed = Vec::new();
    for sample in corpus["positive"].as_array().unwrap() {
        let category = sample["category"].as_str().unwrap();
        let rule = sample["rule"].as_str().unwrap();
        let report = scanner.scan(&sample["value"]);
        assert!(!report.incomplete);
        let found = report.findings.iter().any(|f| f.rule == rule);
        let entry = recall.entry(category).or_default();
        entry.1 += 1;
        if found {
            entry.0 += 1;
        } else {
            missed.push(format!("{category}/{}: {:?}", sample["kind"], report.findings));
        }
        // Redacting removes it: the redacted value scans clean, and holds none of the secret's text.
        let mut redacted = sample["value"].clone();
        assert!(!scanner.redact(&mut redacted).findings.is_empty());
        assert!(
            scanner.scan(&redacted).is_clean(),
            "{category}/{}: {redacted}",
            sample["kind"]
        );
    }

    let mut false_positives: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut flagged = Vec::new();
    for sample in corpus["negative"].as_array().unwrap() {
        let category = sample["category"].as_str().unwrap();
        let report = scanner.scan(&sample["value"]);
        let entry = false_positives.entry(category).or_default();
        entry.1 += 1;
        if !report.is_clean() {
            entry.0 += 1;
            flagged.push(format!("{category}: {:?}", report.findings));
        }
    }

    let (mut hit, mut total) = (0, 0);
    println!("recall per encoding (found / samples):");
    for (category, (h, t)) in &recall {
        println!("  {category:28} {h:3} / {t:3}");
        hit += h;
        total += t;
    }
    println!("recall: {hit} / {total}");
    let (mut fp, mut clean_total) = (0, 0);
    println!("false positives per category (flagged / samples):");
    for (category, (f, t)) in &false_positives {
        println!("  {category:28} {f:3} / {t:3}");
        fp += f;
        clean_total += t;
    }
    println!("false positives: {fp} / {clean_total}");
    assert!(missed.is_empty(), "missed:\n{}", missed.join("\n"));
    assert!(flagged.is_empty(), "false positives:\n{}", flagged.join("\n"));
}
