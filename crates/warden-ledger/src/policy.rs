//! Policy sets as evidence: the content hash that names a policy version, the per-file hashes an
//! activation entry records, and the checks that bind a stored (or exported) policy text to both.
//!
//! A policy set is a map of file name → text. Its version is SHA-256 over, for each file in name
//! order, the name, a NUL, the text's length in decimal, a NUL, and the text; lowercase hex — exactly
//! `warden_policy::PolicySource::version` (a test there holds the two equal). Decisions name the
//! version they were made under; the `policy_change` entry that activated a set records the version
//! and, since this module exists, the SHA-256 of each file (`file_hashes`), so an edited text is
//! caught by its hash and the edited file named by the entry.

use std::collections::BTreeMap;

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::entry::{EntryKind, LedgerEntry};

/// How a bundle carries a policy set: the JSON object of its files, name → text.
pub const POLICY_SET_MEDIA_TYPE: &str = "application/vnd.warden.policy-set+json";

/// The body member of a `policy_change` entry that names the version it activated.
pub const VERSION_MEMBER: &str = "policy_version";
/// The body member of a `policy_change` entry that records each file's SHA-256 (hex).
pub const FILE_HASHES_MEMBER: &str = "file_hashes";

/// The content hash of a policy set: its version.
pub fn set_version(files: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    for (name, text) in files {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(text.len().to_string().as_bytes());
        h.update([0]);
        h.update(text.as_bytes());
    }
    hex::encode(h.finalize())
}

/// SHA-256 of one file's text, lowercase hex.
pub fn file_hash(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Every file's hash, by name: what an activation entry records.
pub fn file_hashes(files: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    files
        .iter()
        .map(|(name, text)| (name.clone(), file_hash(text)))
        .collect()
}

/// Is `version` a content hash (64 lowercase hex digits), i.e. a policy set rather than a built-in
/// check (`builtin:…`) or the absence of one (`none`)?
pub fn is_content_hash(version: &str) -> bool {
    version.len() == 64 && version.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// The files of `files` whose text does not have the hash `recorded` holds for it, and the files
/// only one side has, by name (printable).
pub fn changed_files(files: &BTreeMap<String, String>, recorded: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (name, text) in files {
        match recorded.get(name) {
            Some(h) if *h == file_hash(text) => {}
            Some(_) => out.push(format!("`{}` was changed", name.escape_debug())),
            None => out.push(format!("`{}` was added", name.escape_debug())),
        }
    }
    for name in recorded.keys() {
        if !files.contains_key(name) {
            out.push(format!("`{}` was removed", name.escape_debug()));
        }
    }
    out
}

/// The files of a policy-set blob (a JSON object of strings), strictly.
pub fn decode_set(data: &[u8]) -> Result<BTreeMap<String, String>, String> {
    serde_json::from_slice::<BTreeMap<String, String>>(data)
        .map_err(|e| format!("not a JSON object of file name → text ({e})"))
}

/// What a `policy_change` entry says it activated: the version, and the files' hashes when it
/// records them. `None` for other entries (and for clearing the shadow set).
pub fn activation_of(entry: &LedgerEntry) -> Option<(String, Option<BTreeMap<String, String>>)> {
    if entry.kind != EntryKind::PolicyChange {
        return None;
    }
    let version = entry.body.get(VERSION_MEMBER)?.as_str()?.to_owned();
    let hashes = entry
        .body
        .get(FILE_HASHES_MEMBER)
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        });
    Some((version, hashes))
}

/// A cheap pre-filter for scanning canonical bytes: can these bytes be a `policy_change` entry?
/// (Every such entry's canonical form contains the kind's name literally; others rarely do, and are
/// then decoded and dismissed.)
pub fn may_be_policy_change(canonical: &[u8]) -> bool {
    memchr::memmem::find(canonical, b"\"policy_change\"").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(files: &[(&str, &str)]) -> BTreeMap<String, String> {
        files
            .iter()
            .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
            .collect()
    }

    #[test]
    fn the_version_is_a_content_hash_of_names_and_texts() {
        let a = set(&[("a.cedar", "permit(principal, action, resource);")]);
        let v = set_version(&a);
        assert!(is_content_hash(&v));
        assert_eq!(v, set_version(&a.clone()));
        assert_ne!(
            v,
            set_version(&set(&[("b.cedar", "permit(principal, action, resource);")]))
        );
        assert_ne!(
            v,
            set_version(&set(&[("a.cedar", "forbid(principal, action, resource);")]))
        );
        // The length prefix keeps file boundaries apart.
        assert_ne!(
            set_version(&set(&[("a.cedar", "xy"), ("b.cedar", "")])),
            set_version(&set(&[("a.cedar", "x"), ("b.cedar", "y")]))
        );
        assert!(!is_content_hash("none"));
        assert!(!is_content_hash("builtin:request-checks"));
        assert!(!is_content_hash(&v.to_uppercase()));
    }

    #[test]
    fn changed_files_names_edits_additions_and_removals() {
        let recorded = file_hashes(&set(&[("a.cedar", "A"), ("b.cedar", "B")]));
        assert!(changed_files(&set(&[("a.cedar", "A"), ("b.cedar", "B")]), &recorded).is_empty());
        assert_eq!(
            changed_files(&set(&[("a.cedar", "A!"), ("c.cedar", "C")]), &recorded),
            vec![
                "`a.cedar` was changed",
                "`c.cedar` was added",
                "`b.cedar` was removed"
            ]
        );
    }

    #[test]
    fn blobs_decode_strictly() {
        assert_eq!(
            decode_set(br#"{"a.cedar":"A"}"#).unwrap(),
            set(&[("a.cedar", "A")])
        );
        assert!(decode_set(br#"{"a.cedar":1}"#).is_err());
        assert!(decode_set(b"[]").is_err());
        assert!(decode_set(b"").is_err());
    }

    #[test]
    fn the_prefilter_finds_every_policy_change() {
        let e = crate::NewEntry::new(chrono::Utc::now(), EntryKind::PolicyChange, "admin@example.com")
            .body(serde_json::json!({"policy_version": "v", "file_hashes": {"a.cedar": "00"}}));
        let encoded = crate::prepare_append(&crate::Frontier::new(), vec![e]).unwrap();
        let entry = &encoded.entries[0];
        assert!(may_be_policy_change(entry.bytes()));
        let (version, hashes) = activation_of(entry.entry()).unwrap();
        assert_eq!(version, "v");
        assert_eq!(hashes.unwrap()["a.cedar"], "00");
    }
}
