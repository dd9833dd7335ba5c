//! End-to-end tests of `warden audit verify` and `warden audit export` through the real binary, on a
//! SQLite data directory written the way the server writes it: entries appended through
//! `warden_store` in batches with signed checkpoints, the node's signing key in `ledger.key`, its
//! verifier key published in `ledger_keys`, a redaction key in `ledger-redaction.key`.
//!
//! - verify: a good log (counts, root, keys); one byte changed in entry 41, entry 41 deleted, an entry
//!   past the head, a checkpoint re-signed by a rogue key (accepted from the database, refused with the
//!   pinned key), a pinned key that signed nothing;
//! - export: complete and filtered bundles, verified offline in another directory with and without
//!   pinned keys; an edited bundle fails; OCSF lines; an unsigned tail is not exported;
//! - bad input: unknown format, bad times, missing files, passwords in URLs, existing output files;
//! - truncation and rewrites (issue 14): a log cut back with its head recomputed, or an entry rewritten
//!   with its tree recomputed, verifies by itself (the limit) but not against a checkpoint saved outside
//!   the database (`--checkpoint`) or a minimum size, in the database and in bundles; forged and
//!   unreadable checkpoint files; a real server keeps `ledger.checkpoint`, refuses to restart on a log
//!   cut back or rewritten below it, stops its writer on a log cut back under it, and is not stopped by
//!   another node extending the log; `GET /v1/audit/checkpoint` as `text/plain`; `audit checkpoint
//!   --out` saves, updates, and refuses a smaller or inconsistent checkpoint;
//! - policies are evidence (issue 14): a policy text edited in the database stops the server and fails
//!   verify naming the set and file; at runtime it is not loaded (409, `/healthz`); edited inside a
//!   bundle it fails verification naming the set and file.

// Test code: a failed `expect` is a failed test, with its message.
#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use base64::Engine as _;
use chrono::{DateTime, Duration, TimeZone as _, Utc};
use serde_json::Value;
use warden_ledger::{EntryKind, NewEntry, NoteSigner};
use warden_store::{CheckpointSigner, PolicyRole, PolicyVersion, SqliteStore, Store as _};

use common::{Backend, Out, Server, WARDEN, clean_env};

const ORIGIN: &str = "warden.test/ledger";
const POLICY_TEXT: &str = "permit(principal, action, resource);";

/// The fixture's policy set: one file.
fn policy_files() -> std::collections::BTreeMap<String, String> {
    [("all.cedar".to_owned(), POLICY_TEXT.to_owned())].into()
}

/// Its version: the content hash, as the server names it.
fn policy_version() -> String {
    warden_ledger::policy::set_version(&policy_files())
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// Runs `warden <args>` in `cwd`.
fn warden(cwd: &Path, args: &[&str]) -> Out {
    let output = clean_env(&mut Command::new(WARDEN))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("running warden");
    Out {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        args: args.iter().map(|s| s.to_string()).collect(),
    }
}

/// A node signing key and its private-key string, as the server writes `ledger.key`.
fn signer(name: &str, seed: u8) -> (NoteSigner, String) {
    let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
    let signer = NoteSigner::new(name, key).unwrap();
    let mut data = vec![0x01];
    data.extend_from_slice(&[seed; 32]);
    let private = format!(
        "PRIVATE+KEY+{name}+{:08x}+{}",
        signer.id(),
        base64::engine::general_purpose::STANDARD.encode(data)
    );
    assert_eq!(
        NoteSigner::parse(&private).unwrap().verifier_key(),
        signer.verifier_key()
    );
    (signer, private)
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap()
}

/// Entry `i`: entry 0 activates the policy set, as the server records it (with every file's hash);
/// the others are decisions under it at `t0 + i minutes`, about `alpha` (i % 3 == 0) or `beta`.
fn entry(i: u64) -> NewEntry {
    if i == 0 {
        return NewEntry::new(t0(), EntryKind::PolicyChange, "admin@example.com")
            .subject(policy_version())
            .body(serde_json::json!({
                "op": "policy.active",
                "policy_version": policy_version(),
                "files": ["all.cedar"],
                "file_hashes": warden_ledger::policy::file_hashes(&policy_files()),
                "comment": "",
            }));
    }
    let agent = if i.is_multiple_of(3) { "alpha" } else { "beta" };
    NewEntry::new(
        t0() + Duration::minutes(i as i64),
        EntryKind::Decision,
        format!("spiffe://warden.test/agent/{agent}"),
    )
    .subject(format!("task-{i}"))
    .body(serde_json::json!({
        "agent": agent,
        "action": "read",
        "outcome": "allow",
        "policy_version": policy_version(),
        "i": i,
    }))
}

/// A data directory with `warden.db` holding `signed` entries in batches of 37, each checkpointed,
/// then `unsigned` more without a checkpoint.
struct Ledger {
    dir: tempfile::TempDir,
    signer: NoteSigner,
}

impl Ledger {
    async fn new(signed: u64, unsigned: u64) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("warden-data");
        std::fs::create_dir(&data).unwrap();
        let (signer, private) = signer("node-1.warden.test", 7);
        std::fs::write(data.join("ledger.key"), format!("{private}\n")).unwrap();
        std::fs::write(
            data.join("ledger-redaction.key"),
            format!("{}\n", "ab".repeat(32)),
        )
        .unwrap();
        let store = SqliteStore::open(&data.join("warden.db")).await.unwrap();
        store
            .publish_ledger_key(&signer.verifier_key().to_string(), "node-1", Utc::now())
            .await
            .unwrap();
        let policy = PolicyVersion {
            version: policy_version(),
            files: policy_files(),
            created_at: Utc::now(),
            created_by: "admin@example.com".into(),
        };
        store
            .activate_policies(
                &policy,
                PolicyRole::Active,
                "",
                &warden_core::ChangeContext::new("admin@example.com", t0()),
            )
            .await
            .unwrap();
        let mut next = 0;
        while next < signed {
            let end = (next + 37).min(signed);
            let sign = CheckpointSigner {
                origin: ORIGIN,
                signer: &signer,
                at: Utc::now(),
            };
            store
                .ledger_append(
                    (next..end).map(|i| entry(i).pre_encode().unwrap()).collect(),
                    Some(sign),
                )
                .await
                .unwrap();
            next = end;
        }
        if unsigned > 0 {
            store
                .ledger_append(
                    (next..next + unsigned)
                        .map(|i| entry(i).pre_encode().unwrap())
                        .collect(),
                    None,
                )
                .await
                .unwrap();
        }
        store.close().await;
        Self { dir, signer }
    }

    fn data(&self) -> PathBuf {
        self.dir.path().join("warden-data")
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `warden audit <args>` in the directory holding `warden-data/` (the default data dir).
    fn audit(&self, args: &[&str]) -> Out {
        let mut all = vec!["audit"];
        all.extend(args);
        warden(self.cwd(), &all)
    }

    /// Runs SQL on the database directly, as an attacker with write access would.
    async fn sql(&self, statement: &str, bind: Option<Vec<u8>>) {
        let url = format!("sqlite:{}", self.data().join("warden.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let q = sqlx::query(statement);
        let q = match bind {
            Some(b) => q.bind(b),
            None => q,
        };
        q.execute(&pool).await.unwrap();
        pool.close().await;
    }

    async fn canonical(&self, seq: i64) -> Vec<u8> {
        let url = format!("sqlite:{}", self.data().join("warden.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let bytes: Vec<u8> = sqlx::query_scalar("SELECT canonical FROM ledger_entries WHERE seq = ?")
            .bind(seq)
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        bytes
    }
}

// ----------------------------------------------------------------------------------------------------
// verify

#[tokio::test]
async fn a_good_log_verifies_with_its_counts() {
    let ledger = Ledger::new(300, 5).await;
    let out = ledger.audit(&["verify", "-o", "json"]).ok();
    let v = out.json();
    assert_eq!(v["verified"], true);
    assert_eq!(v["entries"], 305);
    assert_eq!(v["checkpoints"], 9, "{v}"); // 300 / 37, rounded up
    assert_eq!(v["latest_checkpoint"], 300);
    assert_eq!(v["unsigned_tail"], 5);
    assert_eq!(v["origin"], ORIGIN);
    assert_eq!(v["appended_during_verification"], 0);
    assert_eq!(v["keys_pinned"], false);
    let keys = v["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "{v}");
    assert_eq!(keys[0]["vkey"], ledger.signer.verifier_key().to_string());
    assert_eq!(keys[0]["source"], "database");
    assert_eq!(v["root"].as_str().unwrap().len(), 64);
    // Keys from the evidence itself are flagged.
    assert!(
        out.stderr.contains("warning: the trusted keys came from"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("the last 5 entries"), "{}", out.stderr);

    // Table output; pinned keys (flag and file), an explicit data dir from elsewhere.
    let vkey = ledger.signer.verifier_key().to_string();
    let out = warden(
        std::env::temp_dir().as_path(),
        &[
            "audit",
            "verify",
            "--data-dir",
            path_str(&ledger.data()),
            "--key",
            &vkey,
            "--origin",
            ORIGIN,
        ],
    )
    .ok();
    assert!(out.stdout.contains("result:"), "{}", out.stdout);
    assert!(out.stdout.contains("verified"), "{}", out.stdout);
    assert!(out.stdout.contains("entries:"), "{}", out.stdout);
    assert!(out.stdout.contains("305"), "{}", out.stdout);
    assert!(out.stdout.contains("(pinned)"), "{}", out.stdout);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let key_file = ledger.cwd().join("keys.txt");
    std::fs::write(&key_file, format!("# the log's keys\n\n{vkey}\n")).unwrap();
    let v = ledger
        .audit(&["verify", "--key-file", path_str(&key_file), "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["keys_pinned"], true);
    assert_eq!(v["keys"][0]["source"], "pinned");

    // Without ledger_keys, the public half of ledger.key still verifies.
    ledger.sql("DELETE FROM ledger_keys", None).await;
    let v = ledger.audit(&["verify", "-o", "json"]).ok().json();
    assert_eq!(v["keys"][0]["source"], "ledger.key");
    // With neither, there is nothing to trust.
    std::fs::remove_file(ledger.data().join("ledger.key")).unwrap();
    let e = ledger.audit(&["verify"]).fails(1);
    assert!(e.contains("no trusted key"), "{e}");
}

#[tokio::test]
async fn one_changed_byte_fails_naming_the_entry() {
    let ledger = Ledger::new(300, 0).await;
    let mut bytes = ledger.canonical(41).await;
    let at = bytes
        .windows(5)
        .position(|w| w == b"beta\"")
        .expect("agent in entry 41");
    bytes[at] = b'z';
    ledger
        .sql(
            "UPDATE ledger_entries SET canonical = ? WHERE seq = 41",
            Some(bytes),
        )
        .await;
    let out = ledger.audit(&["verify"]);
    let e = out.fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED at entry 41: "),
        "{e}"
    );
    // JSON mode also prints the verdict on stdout, for scripts.
    let out = ledger.audit(&["verify", "-o", "json"]);
    assert_eq!(out.code, 1);
    let v = out.json();
    assert_eq!(v["verified"], false);
    assert_eq!(v["first_bad_entry"], 41);

    // The stored hash changed along with the bytes: the signed root still catches it, naming the
    // first entry its checkpoint covers that no earlier checkpoint does (37: batches of 37).
    let fixed = warden_ledger::leaf_hash(&ledger.canonical(41).await);
    ledger
        .sql(
            "UPDATE ledger_entries SET leaf_hash = ? WHERE seq = 41",
            Some(fixed.as_bytes().to_vec()),
        )
        .await;
    let e = ledger.audit(&["verify"]).fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED at entry 37: "),
        "{e}"
    );
    assert!(e.contains("tree size 74"), "{e}");
}

#[tokio::test]
async fn a_deleted_entry_fails_naming_it() {
    let ledger = Ledger::new(300, 0).await;
    ledger
        .sql("DELETE FROM ledger_entries WHERE seq = 41", None)
        .await;
    let e = ledger.audit(&["verify"]).fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED at entry 41: "),
        "{e}"
    );
    assert!(e.contains("missing"), "{e}");

    // The last entries deleted, and their checkpoint: the stored head still counts them.
    let ledger = Ledger::new(80, 0).await;
    ledger
        .sql("DELETE FROM ledger_entries WHERE seq >= 74", None)
        .await;
    ledger
        .sql("DELETE FROM ledger_checkpoints WHERE size > 74", None)
        .await;
    let e = ledger.audit(&["verify"]).fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED at entry 74: "),
        "{e}"
    );
    assert!(e.contains("stored head"), "{e}");
}

#[tokio::test]
async fn an_entry_past_the_head_fails() {
    let ledger = Ledger::new(40, 0).await;
    let bytes = ledger.canonical(39).await;
    ledger
        .sql(
            "INSERT INTO ledger_entries (seq, at, agent, canonical, leaf_hash) \
             SELECT 40, at, agent, canonical, leaf_hash FROM ledger_entries WHERE seq = 39",
            None,
        )
        .await;
    assert!(!bytes.is_empty());
    let e = ledger.audit(&["verify"]).fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED at entry 40: "),
        "{e}"
    );
}

#[tokio::test]
async fn checkpoints_signed_by_other_keys() {
    let ledger = Ledger::new(100, 0).await;
    // A key that signed nothing, pinned: the first checkpoint is refused.
    let (stranger, _) = signer("node-9.warden.test", 9);
    let stranger_vkey = stranger.verifier_key().to_string();
    let e = ledger.audit(&["verify", "--key", &stranger_vkey]).fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED: the checkpoint of tree size 37 is not acceptable"),
        "{e}"
    );

    // An attacker with write access re-signs a checkpoint with a key of their own and publishes it: the
    // database's keys now accept it, the pinned key does not.
    let (rogue, _) = signer("node-1.warden.test", 66);
    let body = {
        let url = format!("sqlite:{}", ledger.data().join("warden.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let note: String = sqlx::query_scalar("SELECT note FROM ledger_checkpoints WHERE size = 74")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        note.split("\n\n").next().unwrap().to_owned() + "\n"
    };
    let cp = warden_ledger::Checkpoint::parse_body(&body).unwrap();
    let forged = cp.sign(&[&rogue]).unwrap();
    let url = format!("sqlite:{}", ledger.data().join("warden.db").display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE ledger_checkpoints SET note = ? WHERE size = 74")
        .bind(&forged)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO ledger_keys (vkey, node, created_at) VALUES (?, 'evil', '2025-01-01T00:00:00Z')",
    )
    .bind(rogue.verifier_key().to_string())
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;
    let out = ledger.audit(&["verify", "-o", "json"]).ok();
    assert_eq!(out.json()["keys"].as_array().unwrap().len(), 2);
    assert!(out.stderr.contains("Pin the keys"), "{}", out.stderr);
    let vkey = ledger.signer.verifier_key().to_string();
    let e = ledger.audit(&["verify", "--key", &vkey]).fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED: the checkpoint of tree size 74 is not acceptable"),
        "{e}"
    );
}

// ----------------------------------------------------------------------------------------------------
// Truncation and rewrites (issue 14): what only a checkpoint kept outside the database can show

/// A database as someone with write access to it (and no signing key) sees it.
pub(crate) enum Db {
    Sqlite(PathBuf),
    Postgres(String),
}

impl Db {
    async fn exec(&self, statements: &[String]) {
        match self {
            Db::Sqlite(path) => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
                    .await
                    .unwrap();
                for s in statements {
                    sqlx::query(s).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
            Db::Postgres(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                for s in statements {
                    sqlx::query(s).execute(&pool).await.unwrap();
                }
                pool.close().await;
            }
        }
    }

    /// Every entry's canonical bytes and stored leaf hash, in sequence order.
    async fn entries(&self) -> Vec<(Vec<u8>, warden_ledger::Hash)> {
        const Q: &str = "SELECT canonical, leaf_hash FROM ledger_entries ORDER BY seq";
        let rows: Vec<(Vec<u8>, Vec<u8>)> = match self {
            Db::Sqlite(path) => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
                    .await
                    .unwrap();
                let rows = sqlx::query_as(Q).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }
            Db::Postgres(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                let rows = sqlx::query_as(Q).fetch_all(&pool).await.unwrap();
                pool.close().await;
                rows
            }
        };
        rows.into_iter()
            .map(|(c, h)| (c, warden_ledger::Hash(h.try_into().unwrap())))
            .collect()
    }

    /// A scalar text column.
    async fn text(&self, query: &str) -> String {
        match self {
            Db::Sqlite(path) => {
                let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}", path.display()))
                    .await
                    .unwrap();
                let v = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
                pool.close().await;
                v
            }
            Db::Postgres(url) => {
                let pool = sqlx::PgPool::connect(url).await.unwrap();
                let v = sqlx::query_scalar(query).fetch_one(&pool).await.unwrap();
                pool.close().await;
                v
            }
        }
    }

    /// A byte string as an SQL literal.
    fn blob(&self, bytes: &[u8]) -> String {
        match self {
            Db::Sqlite(_) => format!("X'{}'", hex::encode(bytes)),
            Db::Postgres(_) => format!("decode('{}', 'hex')", hex::encode(bytes)),
        }
    }

    async fn checkpoint_note(&self, size: u64) -> String {
        self.text(&format!(
            "SELECT note FROM ledger_checkpoints WHERE size = {size}"
        ))
        .await
    }

    /// Makes the stored tree the one of `leaves`: the head (size and frontier) and the interior nodes
    /// (level 8 and up) recomputed, as anyone can without a key.
    async fn rebuild_tree(&self, leaves: &[warden_ledger::Hash]) {
        let mut statements = vec!["DELETE FROM ledger_nodes".to_owned()];
        for level in 8u32..20 {
            let width = 1usize << level;
            for index in 0..leaves.len() / width {
                let range = &leaves[index * width..(index + 1) * width];
                let root = warden_ledger::MemoryTree::from_leaves(range.iter().copied())
                    .unwrap()
                    .root();
                statements.push(format!(
                    "INSERT INTO ledger_nodes (level, idx, hash) VALUES ({level}, {index}, {})",
                    self.blob(root.as_bytes())
                ));
            }
        }
        let mut frontier = warden_ledger::Frontier::new();
        for h in leaves {
            frontier.append(*h).unwrap();
        }
        statements.push(format!(
            "UPDATE ledger_head SET size = {}, frontier = '{}' WHERE id = 1",
            leaves.len(),
            serde_json::to_string(&frontier).unwrap()
        ));
        self.exec(&statements).await;
    }

    /// Cuts the log back to `size` entries: the newer entries and their checkpoints deleted, the head
    /// recomputed. What is left carries genuine signatures.
    async fn cut_back(&self, size: u64) {
        self.exec(&[
            format!("DELETE FROM ledger_entries WHERE seq >= {size}"),
            format!("DELETE FROM ledger_checkpoints WHERE size > {size}"),
        ])
        .await;
        let leaves: Vec<_> = self.entries().await.into_iter().map(|(_, h)| h).collect();
        self.rebuild_tree(&leaves).await;
    }

    /// Rewrites entry `seq` (the first `from` in its bytes becomes `to`), its leaf hash and the tree;
    /// the checkpoints that covered it, which no longer match and cannot be re-signed, are deleted.
    async fn rewrite(&self, seq: u64, from: &[u8], to: &[u8]) {
        let entries = self.entries().await;
        let mut bytes = entries[seq as usize].0.clone();
        let at = bytes
            .windows(from.len())
            .position(|w| w == from)
            .expect("the bytes to rewrite");
        bytes.splice(at..at + from.len(), to.iter().copied());
        let hash = warden_ledger::leaf_hash(&bytes);
        self.exec(&[
            format!(
                "UPDATE ledger_entries SET canonical = {}, leaf_hash = {} WHERE seq = {seq}",
                self.blob(&bytes),
                self.blob(hash.as_bytes())
            ),
            format!("DELETE FROM ledger_checkpoints WHERE size > {seq}"),
        ])
        .await;
        let mut leaves: Vec<_> = entries.into_iter().map(|(_, h)| h).collect();
        leaves[seq as usize] = hash;
        self.rebuild_tree(&leaves).await;
    }
}

/// The bug: the newest entries cut off with their checkpoints and the head recomputed — genuine
/// signatures on everything left — passed `audit verify`, even with pinned keys. It still does (a log
/// cannot show what is missing from its end), but not against a checkpoint saved outside the
/// database, nor a minimum size.
#[tokio::test]
async fn a_log_cut_back_with_its_head_recomputed_fails_against_a_saved_checkpoint() {
    let ledger = Ledger::new(300, 0).await;
    let db = Db::Sqlite(ledger.data().join("warden.db"));
    std::fs::write(ledger.cwd().join("saved.cp"), db.checkpoint_note(300).await).unwrap();
    db.cut_back(222).await;
    let vkey = ledger.signer.verifier_key().to_string();

    // The limit of what a log can say about itself.
    let v = ledger
        .audit(&["verify", "--key", &vkey, "-o", "json"])
        .ok()
        .json();
    assert_eq!(
        (v["verified"].clone(), v["entries"].clone()),
        (true.into(), 222.into())
    );

    // Against the checkpoint saved before the cut: refused, naming both sizes.
    let e = ledger
        .audit(&["verify", "--key", &vkey, "--checkpoint", "saved.cp"])
        .fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED at entry 222: "),
        "{e}"
    );
    assert!(e.contains("222 entries") && e.contains("covers 300"), "{e}");
    assert!(e.contains("saved.cp") && e.contains("cut back"), "{e}");
    let out = ledger.audit(&["verify", "--checkpoint", "saved.cp", "-o", "json"]);
    assert_eq!(out.code, 1, "{}", out.stderr);
    let v = out.json();
    assert_eq!(v["verified"], false);
    assert_eq!(v["first_bad_entry"], 222);
    assert!(v["error"].as_str().unwrap().contains("covers 300"), "{v}");
    // A minimum size does the same without a file.
    let e = ledger
        .audit(&["verify", "--key", &vkey, "--min-size", "300"])
        .fails(1);
    assert!(
        e.contains("222 entries, fewer than the required minimum of 300"),
        "{e}"
    );
    ledger
        .audit(&["verify", "--key", &vkey, "--min-size", "222"])
        .ok();

    // A complete bundle exported from the cut log verifies by itself, not against the checkpoint.
    let bundle = ledger.cwd().join("cut.jsonl");
    ledger.audit(&["export", "--out", path_str(&bundle)]).ok();
    let (dir, _) = elsewhere(&bundle);
    std::fs::copy(ledger.cwd().join("saved.cp"), dir.path().join("saved.cp")).unwrap();
    let in_dir = |args: &[&str]| {
        let mut all = vec!["audit", "verify", "--bundle", "evidence.jsonl", "--key", &vkey];
        all.extend(args);
        warden(dir.path(), &all)
    };
    in_dir(&[]).ok();
    let e = in_dir(&["--checkpoint", "saved.cp"]).fails(1);
    assert!(
        e.starts_with("error: bundle verification FAILED at entry 222: "),
        "{e}"
    );
    assert!(e.contains("covers 300"), "{e}");
    let e = in_dir(&["--min-size", "223"]).fails(1);
    assert!(e.contains("minimum of 223"), "{e}");
}

/// An entry below the saved checkpoint's size rewritten, its leaf hash, the tree and the head
/// recomputed, the checkpoints that no longer match deleted: the log verifies (with an unsigned
/// tail), but its tree at the saved size is not the saved one.
#[tokio::test]
async fn a_rewritten_entry_with_its_tree_recomputed_fails_against_a_saved_checkpoint() {
    let ledger = Ledger::new(300, 0).await;
    let db = Db::Sqlite(ledger.data().join("warden.db"));
    std::fs::write(ledger.cwd().join("saved.cp"), db.checkpoint_note(300).await).unwrap();
    db.rewrite(250, b"beta\"", b"betz\"").await;
    let vkey = ledger.signer.verifier_key().to_string();
    let v = ledger
        .audit(&["verify", "--key", &vkey, "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["entries"], 300);
    assert_eq!(v["latest_checkpoint"], 222);
    let e = ledger
        .audit(&["verify", "--key", &vkey, "--checkpoint", "saved.cp"])
        .fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED at entry 222: "),
        "{e}"
    );
    assert!(e.contains("rewritten") && e.contains("222..300"), "{e}");
    // A checkpoint saved earlier, of a size the rewrite did not reach, still verifies.
    std::fs::write(ledger.cwd().join("old.cp"), db.checkpoint_note(185).await).unwrap();
    ledger
        .audit(&["verify", "--key", &vkey, "--checkpoint", "old.cp"])
        .ok();
}

#[tokio::test]
async fn a_forged_or_unreadable_checkpoint_file_is_refused() {
    let ledger = Ledger::new(100, 0).await;
    let db = Db::Sqlite(ledger.data().join("warden.db"));
    let genuine = db.checkpoint_note(100).await;
    let vkey = ledger.signer.verifier_key().to_string();
    // The same tree head signed by a key that is not the log's (a rogue "node" of the same name).
    let (rogue, _) = signer("node-1.warden.test", 66);
    let body = genuine.split("\n\n").next().unwrap().to_owned() + "\n";
    let forged = warden_ledger::Checkpoint::parse_body(&body)
        .unwrap()
        .sign(&[&rogue])
        .unwrap();
    std::fs::write(ledger.cwd().join("forged.cp"), &forged).unwrap();
    for keys in [vec!["--key", vkey.as_str()], vec![]] {
        let mut args = vec!["verify", "--checkpoint", "forged.cp"];
        args.extend(keys);
        let e = ledger.audit(&args).fails(1);
        assert!(
            e.contains("the checkpoint in forged.cp is not acceptable")
                && e.contains("not signed by any trusted key"),
            "{e}"
        );
    }
    // An edited size breaks the genuine signature.
    std::fs::write(
        ledger.cwd().join("edited.cp"),
        genuine.replacen("\n100\n", "\n101\n", 1),
    )
    .unwrap();
    let e = ledger
        .audit(&["verify", "--key", &vkey, "--checkpoint", "edited.cp"])
        .fails(1);
    assert!(e.contains("does not verify"), "{e}");
    // Not a note, too large, missing.
    std::fs::write(ledger.cwd().join("junk.cp"), "hello\n").unwrap();
    let e = ledger
        .audit(&["verify", "--key", &vkey, "--checkpoint", "junk.cp"])
        .fails(1);
    assert!(e.contains("the checkpoint in junk.cp is not acceptable"), "{e}");
    std::fs::write(ledger.cwd().join("big.cp"), "x".repeat(70_000)).unwrap();
    let e = ledger
        .audit(&["verify", "--key", &vkey, "--checkpoint", "big.cp"])
        .fails(1);
    assert!(e.contains("big.cp") && e.contains("larger than"), "{e}");
    let e = ledger
        .audit(&["verify", "--key", &vkey, "--checkpoint", "missing.cp"])
        .fails(1);
    assert!(e.contains("cannot read checkpoint file missing.cp"), "{e}");
    let e = ledger.audit(&["verify", "--min-size", "many"]).fails(2);
    assert!(e.contains("--min-size"), "{e}");
    // The genuine one verifies, with the database's keys too.
    std::fs::write(ledger.cwd().join("genuine.cp"), &genuine).unwrap();
    let v = ledger
        .audit(&["verify", "--checkpoint", "genuine.cp", "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["checkpoint"]["size"], 100, "{v}");
}

// ----------------------------------------------------------------------------------------------------
// The server's own checkpoint file (issue 14): a sequence number is never handed out twice

on_both_backends!(
    a_server_restarted_on_a_cut_back_log_refuses_to_start,
    a_server_restarted_on_a_rewritten_log_refuses_to_start,
    the_servers_checkpoint_file_follows_its_checkpoints,
    a_log_cut_back_under_a_running_server_stops_its_ledger,
    the_checkpoint_endpoint_answers_text_plain_with_the_raw_note,
    audit_checkpoint_out_saves_updates_and_refuses_a_smaller_or_inconsistent_one,
    a_policy_text_edited_in_the_database_stops_the_server_and_fails_verify,
    a_policy_set_edited_in_the_database_is_not_loaded_at_runtime,
    a_policy_text_edited_in_a_bundle_fails_verify_naming_it,
);

/// The size of the checkpoint in a file, if it holds one.
fn file_checkpoint(path: &Path) -> Option<warden_ledger::Checkpoint> {
    warden_ledger::bundle::peek_checkpoint(&std::fs::read_to_string(path).ok()?)
}

/// `GET /v1/audit/checkpoint` as the admin: the latest checkpoint in the database.
async fn latest_checkpoint(server: &Server) -> Value {
    reqwest::Client::new()
        .get(server.endpoint("/v1/audit/checkpoint"))
        .bearer_auth(server.admin_token())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The number of entries in the log, from `GET /v1/audit/entries`.
async fn log_size(server: &Server) -> u64 {
    let v: Value = reqwest::Client::new()
        .get(server.endpoint("/v1/audit/entries?from=9007199254740000&limit=1"))
        .bearer_auth(server.admin_token())
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    v["size"].as_u64().unwrap()
}

/// Waits until the server's checkpoint file holds a checkpoint of the whole log (this node signs the
/// tail within a checkpoint interval) and returns its size.
async fn checkpoint_file_caught_up(server: &Server) -> u64 {
    let file = server.data_dir().join("ledger.checkpoint");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(15);
    loop {
        let latest = log_size(server).await;
        if let Some(cp) = file_checkpoint(&file)
            && cp.size == latest
        {
            return cp.size;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{} never reached the latest checkpoint ({latest}): {:?}",
            file.display(),
            file_checkpoint(&file)
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Makes `n` recorded changes.
async fn changes(server: &Server, tag: &str, n: usize) {
    for i in 0..n {
        server
            .run(&[
                "human",
                "add",
                &format!("{tag}{i}@example.com"),
                "--name",
                "Someone",
                "--role",
                "auditor",
            ])
            .await
            .ok();
    }
}

fn server_db(server: &Server) -> Db {
    match server.database_url() {
        Some(url) => Db::Postgres(url),
        None => Db::Sqlite(server.data_dir().join("warden.db")),
    }
}

/// The bug: a server restarted on a log cut back to an earlier size (entries, checkpoints, head)
/// started and handed the lost sequence numbers out again.
async fn a_server_restarted_on_a_cut_back_log_refuses_to_start(backend: Backend) {
    let mut server = Server::start(backend).await;
    changes(&server, "a", 6).await;
    let signed = checkpoint_file_caught_up(&server).await;
    server.kill9();
    let db = server_db(&server);
    db.cut_back(signed - 3).await;
    let (code, log) = server.restart_refused();
    assert_eq!(code, Some(1), "{log}");
    assert!(log.contains("ledger.checkpoint"), "{log}");
    assert!(
        log.contains(&format!("{} entries", signed - 3)) && log.contains(&format!("covers {signed}")),
        "{log}"
    );
    assert!(!log.contains("listening"), "{log}");
}

/// An entry rewritten under the node's last checkpoint, tree and head recomputed: same size, another
/// tree. And a checkpoint file this node did not sign is refused too.
async fn a_server_restarted_on_a_rewritten_log_refuses_to_start(backend: Backend) {
    let mut server = Server::start(backend).await;
    changes(&server, "r", 4).await;
    checkpoint_file_caught_up(&server).await;
    server.kill9();
    let db = server_db(&server);
    db.rewrite(2, b"example.com", b"example.org").await;
    let (code, log) = server.restart_refused();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("ledger.checkpoint") && log.contains("rewritten"),
        "{log}"
    );

    // A checkpoint file signed by another key (or edited) is not this node's.
    let file = server.data_dir().join("ledger.checkpoint");
    let genuine = std::fs::read_to_string(&file).unwrap();
    let (rogue, _) = signer("rogue.warden.test", 66);
    let body = genuine.split("\n\n").next().unwrap().to_owned() + "\n";
    let forged = warden_ledger::Checkpoint::parse_body(&body)
        .unwrap()
        .sign(&[&rogue])
        .unwrap();
    std::fs::write(&file, forged).unwrap();
    let (code, log) = server.restart_refused();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("ledger.checkpoint")
            && log.contains("not a checkpoint signed by this node's ledger key"),
        "{log}"
    );
    std::fs::write(&file, "garbage").unwrap();
    let (code, log) = server.restart_refused();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("ledger.checkpoint") && log.contains("the note is malformed"),
        "{log}"
    );
}

/// The server keeps the largest checkpoint it signed in `<data-dir>/ledger.checkpoint` (mode 0600),
/// replaced only by larger ones; the file verifies the log as `audit verify --checkpoint`.
async fn the_servers_checkpoint_file_follows_its_checkpoints(backend: Backend) {
    let mut server = Server::start(backend).await;
    let first = checkpoint_file_caught_up(&server).await;
    assert!(first > 0);
    let file = server.data_dir().join("ledger.checkpoint");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    changes(&server, "g", 3).await;
    let grown = checkpoint_file_caught_up(&server).await;
    assert!(grown > first, "{grown} > {first}");
    // The note is the database's latest checkpoint, verbatim.
    assert_eq!(
        std::fs::read_to_string(&file).unwrap(),
        latest_checkpoint(&server).await["note"].as_str().unwrap()
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(server.data_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("checkpoint") && n != "ledger.checkpoint")
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    // A graceful restart keeps it, and the log verifies against it.
    server.kill9();
    server.restart();
    let data = server.data_dir();
    let mut args = vec!["audit", "verify", "--data-dir", path_str(&data)];
    let url = server.database_url();
    if let Some(u) = &url {
        args.extend(["--database", u.as_str()]);
    }
    let cp = path_str(&file).to_owned();
    args.extend(["--checkpoint", cp.as_str(), "-o", "json"]);
    let v = warden(server.dir.path(), &args).ok().json();
    assert_eq!(v["checkpoint"]["size"], grown, "{v}");
}

/// The log cut back while the server runs: the next append would number entries again from the cut;
/// the writer notices (its first number is below what it had committed) and stops for good — changes
/// are refused with 503 and `/healthz` says why — instead of going on.
async fn a_log_cut_back_under_a_running_server_stops_its_ledger(backend: Backend) {
    let server = Server::start(backend).await;
    changes(&server, "u", 4).await;
    let signed = checkpoint_file_caught_up(&server).await;
    server_db(&server).cut_back(signed - 2).await;
    let out = server
        .run(&[
            "human",
            "add",
            "late@example.com",
            "--name",
            "Late",
            "--role",
            "auditor",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stderr.contains("ledger"), "{}", out.stderr);
    let health = reqwest::get(server.endpoint("/healthz")).await.unwrap();
    assert_eq!(health.status(), 503);
    let body: Value = health.json().await.unwrap();
    assert!(
        body["ledger"]["error"].as_str().unwrap().contains("cut back"),
        "{body}"
    );
    // And it stays stopped.
    let out = server
        .run(&[
            "human",
            "add",
            "later@example.com",
            "--name",
            "Later",
            "--role",
            "auditor",
        ])
        .await;
    assert_eq!(out.code, 1, "{out:?}");
}

/// `GET /v1/audit/checkpoint` answers the raw C2SP signed note as `text/plain` when the request
/// prefers it (what witnesses and `curl` fetch), JSON otherwise.
async fn the_checkpoint_endpoint_answers_text_plain_with_the_raw_note(backend: Backend) {
    let server = Server::start(backend).await;
    checkpoint_file_caught_up(&server).await;
    let json = latest_checkpoint(&server).await;
    let http = reqwest::Client::new();
    let get = |accept: Option<&'static str>| {
        let mut r = http
            .get(server.endpoint("/v1/audit/checkpoint"))
            .bearer_auth(server.admin_token());
        if let Some(a) = accept {
            r = r.header("accept", a);
        }
        r.send()
    };
    for accept in [
        "text/plain",
        "text/*",
        "application/json;q=0.5, text/plain",
        "text/plain;charset=utf-8",
    ] {
        let r = get(Some(accept)).await.unwrap();
        assert_eq!(r.status(), 200, "{accept}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "text/plain; charset=utf-8",
            "{accept}"
        );
        let note = r.text().await.unwrap();
        assert_eq!(note, json["note"].as_str().unwrap(), "{accept}");
        // It parses and verifies with the key the server publishes.
        let key = warden_ledger::VerifierKey::parse(json["keys"][0].as_str().unwrap()).unwrap();
        let verifier =
            warden_ledger::CheckpointVerifier::new(json["origin"].as_str().unwrap(), vec![key]).unwrap();
        assert_eq!(
            verifier.verify(&note).unwrap().size,
            json["size"].as_u64().unwrap()
        );
    }
    for accept in [
        None,
        Some("*/*"),
        Some("application/json"),
        Some("text/plain;q=0.4, application/json"),
        Some("text/plain;q=0, */*"),
        Some("image/png"),
    ] {
        let r = get(accept).await.unwrap();
        assert_eq!(r.status(), 200, "{accept:?}");
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/json"),
            "{accept:?}"
        );
    }
    // The OpenAPI document says so.
    let doc: Value = reqwest::get(server.endpoint("/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content = &doc["paths"]["/v1/audit/checkpoint"]["get"]["responses"]["200"]["content"];
    assert!(
        content["text/plain"].is_object() && content["application/json"].is_object(),
        "{content}"
    );
}

/// `warden audit checkpoint --out FILE` saves the latest checkpoint where the database's
/// administrators cannot reach it; run again, it replaces the file only with a larger checkpoint
/// proven consistent with the saved one, and leaves it untouched otherwise.
async fn audit_checkpoint_out_saves_updates_and_refuses_a_smaller_or_inconsistent_one(backend: Backend) {
    let server = Server::start(backend).await;
    let first = checkpoint_file_caught_up(&server).await;
    let saved = server.path("saved.cp");
    let saved_s = path_str(&saved).to_owned();
    let v = server.json(&["audit", "checkpoint", "--out", &saved_s]).await;
    assert_eq!(v["size"], first, "{v}");
    assert_eq!(v["previous_size"], Value::Null, "{v}");
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&saved).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let note = std::fs::read_to_string(&saved).unwrap();
    assert_eq!(file_checkpoint(&saved).unwrap().size, first);

    // Grown: replaced, with the proof checked.
    changes(&server, "c", 3).await;
    let grown = checkpoint_file_caught_up(&server).await;
    let v = server.json(&["audit", "checkpoint", "--out", &saved_s]).await;
    assert_eq!(
        (v["size"].clone(), v["previous_size"].clone()),
        (grown.into(), first.into()),
        "{v}"
    );
    assert_eq!(v["consistent"], true);
    // The same again: nothing to do, still fine.
    server.json(&["audit", "checkpoint", "--out", &saved_s]).await;
    // Pinned keys: the server's own published key.
    let vkey = latest_checkpoint(&server).await["keys"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let out = server
        .run(&["audit", "checkpoint", "--out", &saved_s, "--key", &vkey])
        .await
        .ok();
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    let (stranger, _) = signer("node-9.warden.test", 9);
    let e = server
        .run(&[
            "audit",
            "checkpoint",
            "--out",
            &saved_s,
            "--key",
            &stranger.verifier_key().to_string(),
        ])
        .await
        .fails(1);
    assert!(e.contains("not signed by any trusted key"), "{e}");

    // A saved checkpoint larger than the server's (the log was cut back since): refused, file kept.
    let kept = std::fs::read_to_string(&saved).unwrap();
    let mut big = server.path("big.cp");
    std::fs::write(&big, &kept).unwrap();
    server_db(&server).cut_back(grown - 2).await;
    let e = server
        .run(&["audit", "checkpoint", "--out", path_str(&big)])
        .await
        .fails(1);
    assert!(e.contains(&format!("fewer than the {grown}")), "{e}");
    assert!(e.contains("cut back") && e.contains("big.cp is unchanged"), "{e}");
    assert_eq!(std::fs::read_to_string(&big).unwrap(), kept);

    // A saved checkpoint signed by a key the server does not publish: refused, file kept.
    big = server.path("forged.cp");
    let (rogue, _) = signer("rogue.warden.test", 66);
    let body = note.split("\n\n").next().unwrap().to_owned() + "\n";
    let forged = warden_ledger::Checkpoint::parse_body(&body)
        .unwrap()
        .sign(&[&rogue])
        .unwrap();
    std::fs::write(&big, &forged).unwrap();
    let e = server
        .run(&["audit", "checkpoint", "--out", path_str(&big)])
        .await
        .fails(1);
    assert!(
        e.contains("forged.cp") && e.contains("not signed by any trusted key"),
        "{e}"
    );
    assert_eq!(std::fs::read_to_string(&big).unwrap(), forged);
}

/// A log whose history was rewritten under the running server (same size, tree recomputed) goes on
/// growing; its next checkpoint is larger but not consistent with the one saved before: refused.
#[tokio::test]
async fn audit_checkpoint_out_refuses_a_rewritten_history() {
    let server = Server::start(Backend::Sqlite).await;
    changes(&server, "w", 3).await;
    checkpoint_file_caught_up(&server).await;
    let saved = server.path("saved.cp");
    let saved_s = path_str(&saved).to_owned();
    server.json(&["audit", "checkpoint", "--out", &saved_s]).await;
    let kept = std::fs::read_to_string(&saved).unwrap();
    server_db(&server)
        .rewrite(2, b"example.com", b"example.org")
        .await;
    changes(&server, "x", 2).await;
    checkpoint_file_caught_up(&server).await;
    let e = server
        .run(&["audit", "checkpoint", "--out", &saved_s])
        .await
        .fails(1);
    assert!(e.contains("not consistent"), "{e}");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), kept);
}

// ----------------------------------------------------------------------------------------------------
// Policies are evidence too (issue 14)

/// The edit an attacker with write access makes: the secret-in-arguments guard switched off, in a
/// text that still compiles.
const GUARD: &str = "when { context.risk.secret_in_args }";
const GUARD_OFF: &str = "when { false && context.risk.secret_in_args }";

/// The active policy set's version and files, as stored.
async fn stored_active_set(db: &Db) -> (String, std::collections::BTreeMap<String, String>) {
    let version = db
        .text("SELECT version FROM policy_activations WHERE role = 'active' ORDER BY seq DESC LIMIT 1")
        .await;
    let files = db
        .text(&format!(
            "SELECT files FROM policy_versions WHERE version = '{version}'"
        ))
        .await;
    (version, serde_json::from_str(&files).unwrap())
}

/// Rewrites the stored text of policy set `version` with `edit` applied to `agents.cedar`.
async fn edit_stored_set(db: &Db, version: &str, edit: impl Fn(&str) -> String) {
    let stored = db
        .text(&format!(
            "SELECT files FROM policy_versions WHERE version = '{version}'"
        ))
        .await;
    let mut files: std::collections::BTreeMap<String, String> = serde_json::from_str(&stored).unwrap();
    let text = files["agents.cedar"].clone();
    let edited = edit(&text);
    assert_ne!(edited, text);
    files.insert("agents.cedar".into(), edited);
    let json = serde_json::to_string(&files).unwrap().replace('\'', "''");
    db.exec(&[format!(
        "UPDATE policy_versions SET files = '{json}' WHERE version = '{version}'"
    )])
    .await;
}

/// `audit verify` of a server's database (SQLite in its data directory, or its PostgreSQL URL).
fn verify_server_db(server: &Server, extra: &[&str]) -> Out {
    let data = server.data_dir();
    let mut args = vec!["audit", "verify", "--data-dir", path_str(&data)];
    let url = server.database_url();
    if let Some(u) = &url {
        args.extend(["--database", u.as_str()]);
    }
    args.extend(extra);
    warden(server.dir.path(), &args)
}

/// The bug: a stored policy text edited in the database — still compiling, nothing else changed —
/// was enforced by a server started on it without a warning, and `audit verify` passed. The text is
/// bound to its content hash (the version decisions name) and to the ledger entry that activated it.
async fn a_policy_text_edited_in_the_database_stops_the_server_and_fails_verify(backend: Backend) {
    let mut server = Server::start(backend).await;
    checkpoint_file_caught_up(&server).await;
    server.kill9();
    verify_server_db(&server, &[]).ok();
    let db = server_db(&server);
    let (version, _) = stored_active_set(&db).await;
    edit_stored_set(&db, &version, |t| t.replacen(GUARD, GUARD_OFF, 1)).await;

    let (code, log) = server.restart_refused();
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains(&version) && log.contains("does not match its content hash"),
        "{log}"
    );

    let e = verify_server_db(&server, &[]).fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED: policy set "),
        "{e}"
    );
    assert!(e.contains(&version), "{e}");
    assert!(e.contains("`agents.cedar` was changed"), "{e}");
    assert!(!e.contains("data.cedar"), "{e}");
    let out = verify_server_db(&server, &["-o", "json"]);
    assert_eq!(out.code, 1);
    assert!(out.json()["error"].as_str().unwrap().contains("agents.cedar"));

    // Relabelled as the edited text's own hash (versions, activations and all): the content hash
    // holds, but no ledger entry activated that version.
    let (_, files) = stored_active_set(&db).await;
    let forged = warden_ledger::policy::set_version(&files);
    db.exec(&[
        format!(
            "INSERT INTO policy_versions (version, files, created_at, created_by) \
             SELECT '{forged}', files, created_at, created_by FROM policy_versions WHERE version = '{version}'"
        ),
        format!("UPDATE policy_activations SET version = '{forged}' WHERE version = '{version}'"),
    ])
    .await;
    let e = verify_server_db(&server, &[]).fails(1);
    assert!(e.contains(&forged) && e.contains("no ledger entry"), "{e}");
}

/// At runtime. Re-activating a version whose stored text was edited is refused (409, naming it) and
/// changes nothing. A reload of the stored sets (a store event; here the one a shadow change makes)
/// that finds the active set's text edited keeps the sets the node runs, fails naming it, and
/// `/healthz` reports it until sets that match their hashes are loaded.
async fn a_policy_set_edited_in_the_database_is_not_loaded_at_runtime(backend: Backend) {
    let server = Server::start(backend).await;
    let db = server_db(&server);
    let (original, _) = stored_active_set(&db).await;
    let set = |name: &str, text: &str| {
        let dir = server.path(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("agents.cedar"), text).unwrap();
        dir
    };
    let other = set(
        "other",
        "@id(\"all\") @reason(\"test\") forbid (principal, action, resource)\nwhen { context.risk.secret_in_args };\n",
    );
    let third = set(
        "third",
        "@id(\"none\") @reason(\"test\") forbid (principal, action, resource)\nwhen { context.risk.secret_in_args };\n// three\n",
    );
    let server = &server;
    let activate = |dir: &Path, how: &'static str| {
        let dir = path_str(dir).to_owned();
        async move { server.run(&["policy", how, &dir, "--comment", "test"]).await }
    };
    activate(&other, "activate").await.ok();
    let (other_version, _) = stored_active_set(&db).await;
    edit_stored_set(&db, &original, |t| t.replacen(GUARD, GUARD_OFF, 1)).await;
    let healthz = || async {
        let r = reqwest::get(server.endpoint("/healthz")).await.unwrap();
        (r.status().as_u16(), r.json::<Value>().await.unwrap())
    };

    // Re-activating the original: its genuine files are uploaded, the stored (edited) text is what
    // the nodes would load. Refused before anything is recorded or changed.
    let e = activate(&common::default_policies_dir(), "activate")
        .await
        .fails(1);
    assert!(e.contains(&original) && e.contains("content hash"), "{e}");
    assert_eq!(
        server.json(&["policy", "status"]).await["active"],
        other_version.as_str()
    );
    assert_eq!(healthz().await.0, 200);

    // The running set's stored text edited; a change makes the node reload the stored sets.
    edit_stored_set(&db, &other_version, |t| t.replacen("forbid", "permit", 1)).await;
    let e = activate(&third, "shadow").await.fails(1);
    assert!(e.contains(&other_version) && e.contains("content hash"), "{e}");
    let status = server.json(&["policy", "status"]).await;
    assert_eq!(
        status["active"],
        other_version.as_str(),
        "the running set is kept: {status}"
    );
    assert_eq!(status["shadow"]["version"], Value::Null, "{status}");
    let (code, body) = healthz().await;
    assert_eq!(code, 503, "{body}");
    assert!(
        body["policy_error"].as_str().unwrap().contains(&other_version),
        "{body}"
    );
    assert!(server.log().contains("a stored policy set was refused"));

    // Sets that match their hashes clear it.
    activate(&third, "activate").await.ok();
    let (code, body) = healthz().await;
    assert_eq!(code, 200, "{body}");
}

/// The same inside an evidence bundle: the bundle carries the policy sets its decisions name, each
/// with the ledger entry that activated it (recording every file's hash) and its inclusion proof.
async fn a_policy_text_edited_in_a_bundle_fails_verify_naming_it(backend: Backend) {
    let server = Server::start(backend).await;
    server.bot_with_task("staging").await;
    checkpoint_file_caught_up(&server).await;
    let vkey = latest_checkpoint(&server).await["keys"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let db = server_db(&server);
    let (version, _) = stored_active_set(&db).await;
    let data = server.data_dir();
    let url = server.database_url();
    let export = |out: &str, extra: &[&str]| {
        let mut args = vec!["audit", "export", "--out", out, "--data-dir", path_str(&data)];
        if let Some(u) = &url {
            args.extend(["--database", u.as_str()]);
        }
        args.extend(extra);
        warden(server.dir.path(), &args).ok();
    };
    export("all.jsonl", &[]);
    export("bot.jsonl", &["--agent", "bot"]);
    for name in ["all.jsonl", "bot.jsonl"] {
        let bundle = server.dir.path().join(name);
        let (dir, copy) = elsewhere(&bundle);
        let v = warden(
            dir.path(),
            &[
                "audit",
                "verify",
                "--bundle",
                "evidence.jsonl",
                "--key",
                &vkey,
                "-o",
                "json",
            ],
        )
        .ok()
        .json();
        assert_eq!(
            v["policy_versions_verified"],
            serde_json::json!([version]),
            "{name}: {v}"
        );
        assert_eq!(
            v["policy_versions_activated"],
            serde_json::json!([version]),
            "{name}: {v}"
        );
        // The guard switched off in the bundle's copy of the policy text.
        let edited: String = std::fs::read_to_string(&copy)
            .unwrap()
            .lines()
            .map(|l| {
                if !l.contains(r#""type":"policy""#) {
                    return l.to_owned() + "\n";
                }
                let mut v: Value = serde_json::from_str(l).unwrap();
                let b64 = base64::engine::general_purpose::STANDARD;
                let mut files: std::collections::BTreeMap<String, String> =
                    serde_json::from_slice(&b64.decode(v["data"].as_str().unwrap()).unwrap()).unwrap();
                let text = files["agents.cedar"].replacen(GUARD, GUARD_OFF, 1);
                files.insert("agents.cedar".into(), text);
                v["data"] = b64.encode(serde_json::to_vec(&files).unwrap()).into();
                serde_json::to_string(&v).unwrap() + "\n"
            })
            .collect();
        std::fs::write(&copy, edited).unwrap();
        let e = warden(
            dir.path(),
            &["audit", "verify", "--bundle", "evidence.jsonl", "--key", &vkey],
        )
        .fails(1);
        assert!(
            e.starts_with("error: bundle verification FAILED: policy set "),
            "{name}: {e}"
        );
        assert!(
            e.contains(&version) && e.contains("`agents.cedar` was changed"),
            "{name}: {e}"
        );
    }
    // A database whose stored text was edited exports nothing.
    edit_stored_set(&db, &version, |t| t.replacen(GUARD, GUARD_OFF, 1)).await;
    let mut args = vec![
        "audit",
        "export",
        "--out",
        "late.jsonl",
        "--data-dir",
        path_str(&data),
    ];
    if let Some(u) = &url {
        args.extend(["--database", u.as_str()]);
    }
    let e = warden(server.dir.path(), &args).fails(1);
    assert!(e.contains(&version) && e.contains("content hash"), "{e}");
    assert!(!server.dir.path().join("late.jsonl").exists());
}

/// Several nodes on one PostgreSQL database: each node's file holds what that node signed; another
/// node extending the log does not stop a restart.
#[tokio::test]
async fn another_node_extending_the_log_does_not_stop_a_restart() {
    let database = warden_store::testing::fresh_postgres_url().await;
    let mut a = Server::spawn(
        Backend::Postgres,
        common::Spawn {
            database: Some(database.clone()),
            ..Default::default()
        },
    )
    .await;
    let b = Server::spawn(
        Backend::Postgres,
        common::Spawn {
            database: Some(database.clone()),
            admin_token_file: Some(a.admin_token_file.clone()),
            ..Default::default()
        },
    )
    .await;
    changes(&a, "a", 2).await;
    let a_signed = checkpoint_file_caught_up(&a).await;
    a.kill9();
    changes(&b, "b", 4).await;
    let b_signed = checkpoint_file_caught_up(&b).await;
    assert!(b_signed > a_signed);
    assert_eq!(
        file_checkpoint(&a.data_dir().join("ledger.checkpoint"))
            .unwrap()
            .size,
        a_signed,
        "node A's file holds what A signed"
    );
    a.restart();
    changes(&a, "c", 1).await;
}

// ----------------------------------------------------------------------------------------------------
// export

/// Copies `file` into a fresh directory (nothing else there) and returns both.
fn elsewhere(file: &Path) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("evidence.jsonl");
    std::fs::copy(file, &copy).unwrap();
    (dir, copy)
}

#[tokio::test]
async fn complete_and_filtered_bundles_verify_offline() {
    let ledger = Ledger::new(300, 4).await;
    let vkey = ledger.signer.verifier_key().to_string();

    // Complete.
    let bundle = ledger.cwd().join("all.jsonl");
    let v = ledger
        .audit(&["export", "--out", path_str(&bundle), "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["entries"], 300, "{v}");
    assert_eq!(v["tree_size"], 300);
    assert_eq!(v["entries_after_latest_checkpoint"], 4);
    assert_eq!(v["scope"]["complete"], true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&bundle).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let text = std::fs::read_to_string(&bundle).unwrap();
    assert_eq!(
        text.lines()
            .filter(|l| l.contains(r#""type":"checkpoint""#))
            .count(),
        9
    );
    assert_eq!(
        text.lines().filter(|l| l.contains(r#""type":"policy""#)).count(),
        1
    );
    let header: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert!(
        header["redaction_key"].as_str().unwrap().starts_with("sha256:"),
        "{header}"
    );
    // No temporary file is left behind.
    let leftovers: Vec<_> = std::fs::read_dir(ledger.cwd())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".warden-export"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let (dir, copy) = elsewhere(&bundle);
    let out = warden(
        dir.path(),
        &["audit", "verify", "--bundle", "evidence.jsonl", "-o", "json"],
    )
    .ok();
    let v = out.json();
    assert_eq!(v["verified"], true);
    assert_eq!(v["complete"], true);
    assert_eq!(v["entries"], 300);
    assert_eq!(v["checkpoints"], 9);
    assert_eq!(v["keys_from_bundle"], true);
    assert_eq!(v["policy_versions_missing"], serde_json::json!([]));
    assert!(
        out.stderr
            .contains("warning: the trusted keys came from the bundle"),
        "{}",
        out.stderr
    );
    let out = warden(
        dir.path(),
        &["audit", "verify", "--bundle", "evidence.jsonl", "--key", &vkey],
    )
    .ok();
    assert!(out.stdout.contains("complete"), "{}", out.stdout);
    assert!(!out.stderr.contains("warning"), "{}", out.stderr);
    // The wrong pinned key, the wrong origin.
    let (stranger, _) = signer("node-9.warden.test", 9);
    let e = warden(
        dir.path(),
        &[
            "audit",
            "verify",
            "--bundle",
            "evidence.jsonl",
            "--key",
            &stranger.verifier_key().to_string(),
        ],
    )
    .fails(1);
    assert!(e.starts_with("error: bundle verification FAILED: "), "{e}");
    let e = warden(
        dir.path(),
        &[
            "audit",
            "verify",
            "--bundle",
            "evidence.jsonl",
            "--origin",
            "other.test/log",
        ],
    )
    .fails(1);
    assert!(e.contains("not `other.test/log`"), "{e}");

    // One edited entry in the bundle.
    let edited: String = std::fs::read_to_string(&copy)
        .unwrap()
        .lines()
        .map(|l| {
            if l.contains(r#""type":"entry""#) && l.contains(r#""seq":41,"#) {
                l.replacen(r#""i":41"#, r#""i":42"#, 1)
            } else {
                l.to_owned()
            }
        })
        .map(|l| l + "\n")
        .collect();
    assert_ne!(edited, std::fs::read_to_string(&copy).unwrap());
    std::fs::write(&copy, edited).unwrap();
    let e = warden(dir.path(), &["audit", "verify", "--bundle", "evidence.jsonl"]).fails(1);
    assert!(
        e.starts_with("error: bundle verification FAILED at entry 41: "),
        "{e}"
    );

    // Filtered by agent: entries 0, 3, 6, … below 300.
    let alpha = ledger.cwd().join("alpha.jsonl");
    let v = ledger
        .audit(&[
            "export",
            "--out",
            path_str(&alpha),
            "--agent",
            "alpha",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(v["entries"], 99, "{v}"); // entry 0 activates the policy set
    assert_eq!(v["scope"]["complete"], false);
    let (dir, _) = elsewhere(&alpha);
    let v = warden(
        dir.path(),
        &[
            "audit",
            "verify",
            "--bundle",
            "evidence.jsonl",
            "--key",
            &vkey,
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(v["complete"], false);
    assert_eq!(v["entries"], 99);
    assert_eq!(v["first_seq"], 3);
    // The policy set travels with the entry that activated it, proven in the tree.
    assert_eq!(
        v["policy_versions_verified"],
        serde_json::json!([policy_version()])
    );
    assert_eq!(
        v["policy_versions_activated"],
        serde_json::json!([policy_version()])
    );
    assert_eq!(v["last_seq"], 297);
    assert_eq!(v["contiguous"], false);
    assert_eq!(v["scope"]["agent"], "alpha");
    assert_eq!(
        v["policy_versions_referenced"],
        serde_json::json!([policy_version()])
    );

    // Filtered by time: minutes 100 (inclusive) to 150 (exclusive).
    let window = ledger.cwd().join("window.jsonl");
    let since = (t0() + Duration::minutes(100)).to_rfc3339();
    let until = (t0() + Duration::minutes(150)).to_rfc3339();
    let v = ledger
        .audit(&[
            "export",
            "--out",
            path_str(&window),
            "--since",
            &since,
            "--until",
            &until,
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(v["entries"], 50, "{v}");
    let v = warden(
        ledger.cwd(),
        &["audit", "verify", "--bundle", path_str(&window), "-o", "json"],
    )
    .ok()
    .json();
    assert_eq!(
        (v["first_seq"].clone(), v["last_seq"].clone()),
        (100.into(), 149.into())
    );
    assert_eq!(v["contiguous"], true);

    // A bundle cut short.
    let text = std::fs::read_to_string(&window).unwrap();
    let cut = ledger.cwd().join("cut.jsonl");
    std::fs::write(&cut, &text[..text.len() / 2]).unwrap();
    let e = warden(ledger.cwd(), &["audit", "verify", "--bundle", path_str(&cut)]).fails(1);
    assert!(e.starts_with("error: bundle verification FAILED: "), "{e}");
}

#[tokio::test]
async fn ocsf_lines() {
    let ledger = Ledger::new(90, 3).await;
    let out_file = ledger.cwd().join("events.ocsf.jsonl");
    let v = ledger
        .audit(&[
            "export",
            "--format",
            "ocsf",
            "--out",
            path_str(&out_file),
            "--since",
            "2025-03-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(v["entries"], 90);
    let text = std::fs::read_to_string(&out_file).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 90);
    for (i, line) in lines.iter().enumerate() {
        let event: Value = serde_json::from_str(line).unwrap();
        assert_eq!(event["metadata"]["version"], "1.3.0", "{event}");
        assert_eq!(event["metadata"]["sequence"], i as u64, "{event}");
    }
    // A date after every entry: nothing, but still a (empty) file.
    let empty = ledger.cwd().join("none.jsonl");
    let v = ledger
        .audit(&[
            "export",
            "--format",
            "ocsf",
            "--out",
            path_str(&empty),
            "--since",
            "2030-01-01",
            "-o",
            "json",
        ])
        .ok()
        .json();
    assert_eq!(v["entries"], 0);
    assert_eq!(std::fs::read_to_string(&empty).unwrap(), "");
}

// ----------------------------------------------------------------------------------------------------
// bad input

#[tokio::test]
async fn bad_input_is_refused_precisely() {
    let ledger = Ledger::new(40, 0).await;
    let out = |name: &str| path_str(&ledger.cwd().join(name)).to_owned();

    let e = ledger
        .audit(&["export", "--out", &out("x"), "--format", "xml"])
        .fails(2);
    assert!(e.contains("invalid value 'xml' for '--format"), "{e}");
    let e = ledger
        .audit(&["export", "--out", &out("x"), "--since", "yesterday"])
        .fails(2);
    assert!(e.contains("--since: `yesterday` is not a time"), "{e}");
    let e = ledger
        .audit(&["export", "--out", &out("x"), "--until", "2025-13-01"])
        .fails(2);
    assert!(e.contains("--until: "), "{e}");
    let e = ledger
        .audit(&[
            "export",
            "--out",
            &out("x"),
            "--since",
            "2025-03-02",
            "--until",
            "2025-03-01",
        ])
        .fails(2);
    assert!(e.contains("--since must be before --until"), "{e}");
    let e = ledger.audit(&["export"]).fails(2);
    assert!(e.contains("--out <FILE>"), "{e}");
    let e = ledger
        .audit(&["verify", "--database", "postgres://u:hunter2@db/w"])
        .fails(2);
    assert!(
        e.contains("--database: the URL must not contain a password"),
        "{e}"
    );
    assert!(!e.contains("hunter2"), "{e}");
    let e = ledger.audit(&["verify", "--key", "not-a-key"]).fails(2);
    assert!(e.contains("--key: not a verifier key"), "{e}");
    let e = ledger.audit(&["verify", "--origin", "has space"]).fails(2);
    assert!(e.contains("--origin: "), "{e}");
    let e = ledger
        .audit(&["verify", "--bundle", "b.jsonl", "--data-dir", "warden-data"])
        .fails(2);
    assert!(e.contains("cannot be used with"), "{e}");
    assert!(!ledger.cwd().join("x").exists());

    // Files that are not there, or are.
    let e = ledger.audit(&["verify", "--bundle", "missing.jsonl"]).fails(1);
    assert!(e.contains("cannot read bundle missing.jsonl"), "{e}");
    let e = ledger.audit(&["verify", "--data-dir", "nowhere"]).fails(1);
    assert!(e.contains("no Warden database at nowhere/warden.db"), "{e}");
    assert!(!ledger.cwd().join("nowhere").exists());
    let e = ledger.audit(&["verify", "--key-file", "missing.txt"]).fails(1);
    assert!(e.contains("cannot read key file missing.txt"), "{e}");
    std::fs::write(ledger.cwd().join("bad-keys.txt"), "garbage\n").unwrap();
    let e = ledger.audit(&["verify", "--key-file", "bad-keys.txt"]).fails(1);
    assert!(e.contains("bad-keys.txt:1: not a verifier key"), "{e}");
    std::fs::write(ledger.cwd().join("taken.jsonl"), "mine\n").unwrap();
    let e = ledger.audit(&["export", "--out", &out("taken.jsonl")]).fails(1);
    assert!(e.contains("already exists; refusing to overwrite it"), "{e}");
    assert_eq!(
        std::fs::read_to_string(ledger.cwd().join("taken.jsonl")).unwrap(),
        "mine\n"
    );
    let e = ledger
        .audit(&["export", "--out", &out("no-such-dir/b.jsonl")])
        .fails(1);
    assert!(e.contains("cannot create a file in"), "{e}");
    std::fs::write(ledger.cwd().join("not-a-bundle.jsonl"), "{\"hello\": 1}\n").unwrap();
    let e = ledger
        .audit(&["verify", "--bundle", "not-a-bundle.jsonl"])
        .fails(1);
    assert!(e.starts_with("error: bundle verification FAILED: "), "{e}");

    // An empty log verifies; it has nothing to export with proof.
    let empty = tempfile::tempdir().unwrap();
    std::fs::create_dir(empty.path().join("warden-data")).unwrap();
    SqliteStore::open(&empty.path().join("warden-data/warden.db"))
        .await
        .unwrap()
        .close()
        .await;
    let v = warden(empty.path(), &["audit", "verify", "-o", "json"])
        .ok()
        .json();
    assert_eq!(v["entries"], 0);
    let e = warden(empty.path(), &["audit", "export", "--out", "b.jsonl"]).fails(1);
    assert!(e.contains("no signed checkpoint yet"), "{e}");
    assert!(!empty.path().join("b.jsonl").exists());
}

/// The same on PostgreSQL, the database named with --database or WARDEN_DATABASE_URL; the data
/// directory (with `ledger.key`) still given with --data-dir.
#[tokio::test]
async fn postgres_logs_verify_and_export() {
    let url = warden_store::testing::fresh_postgres_url().await;
    let store = warden_store::open(&url).await.unwrap();
    let (signer, private) = signer("node-1.warden.test", 7);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("ledger.key"), format!("{private}\n")).unwrap();
    store
        .activate_policies(
            &PolicyVersion {
                version: policy_version(),
                files: policy_files(),
                created_at: Utc::now(),
                created_by: "admin@example.com".into(),
            },
            PolicyRole::Active,
            "",
            &warden_core::ChangeContext::new("admin@example.com", t0()),
        )
        .await
        .unwrap();
    for start in (0..120u64).step_by(40) {
        let sign = CheckpointSigner {
            origin: ORIGIN,
            signer: &signer,
            at: Utc::now(),
        };
        store
            .ledger_append(
                (start..start + 40)
                    .map(|i| entry(i).pre_encode().unwrap())
                    .collect(),
                Some(sign),
            )
            .await
            .unwrap();
    }
    store.close().await;
    let data_dir = path_str(&data);

    let v = warden(
        dir.path(),
        &[
            "audit",
            "verify",
            "--database",
            &url,
            "--data-dir",
            data_dir,
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(
        (v["entries"].clone(), v["checkpoints"].clone()),
        (120.into(), 3.into())
    );
    assert_eq!(v["database"], "postgres database");
    assert_eq!(v["keys"][0]["source"], "ledger.key");
    assert!(!v.to_string().contains(&url), "{v}");

    let out = clean_env(&mut Command::new(WARDEN))
        .args([
            "audit",
            "export",
            "--out",
            "beta.jsonl",
            "--agent",
            "beta",
            "--data-dir",
            data_dir,
        ])
        .env("WARDEN_DATABASE_URL", &url)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (other, _) = elsewhere(&dir.path().join("beta.jsonl"));
    let vkey = signer.verifier_key().to_string();
    let v = warden(
        other.path(),
        &[
            "audit",
            "verify",
            "--bundle",
            "evidence.jsonl",
            "--key",
            &vkey,
            "-o",
            "json",
        ],
    )
    .ok()
    .json();
    assert_eq!(v["entries"], 80);

    // Cut back to 80 entries with the head recomputed: only the checkpoint saved before says so.
    let db = Db::Postgres(url.clone());
    std::fs::write(dir.path().join("saved.cp"), db.checkpoint_note(120).await).unwrap();
    db.cut_back(80).await;
    let pg = |extra: &[&str]| {
        let mut args = vec![
            "audit",
            "verify",
            "--database",
            &url,
            "--data-dir",
            data_dir,
            "--key",
            &vkey,
        ];
        args.extend(extra);
        warden(dir.path(), &args)
    };
    pg(&[]).ok();
    let e = pg(&["--checkpoint", "saved.cp"]).fails(1);
    assert!(e.contains("80 entries") && e.contains("covers 120"), "{e}");
    let e = pg(&["--min-size", "120"]).fails(1);
    assert!(e.contains("minimum of 120"), "{e}");

    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    sqlx::query("UPDATE ledger_entries SET canonical = convert_to(replace(convert_from(canonical, 'UTF8'), 'beta', 'betb'), 'UTF8') WHERE seq = 41")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let e = warden(
        dir.path(),
        &["audit", "verify", "--database", &url, "--data-dir", data_dir],
    )
    .fails(1);
    assert!(
        e.starts_with("error: ledger verification FAILED at entry 41: "),
        "{e}"
    );
}
