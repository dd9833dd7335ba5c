//! The ledger end to end, with real processes. Crash safety: `warden serve` is killed with SIGKILL in
//! the middle of heavy decision traffic, restarted on the same data, and every decision it had
//! acknowledged (a 200 with a `warden-ledger-seq`) is in the log, under its request id; the whole log
//! verifies with `warden audit verify`, an export verifies offline elsewhere, and a one-byte edit is
//! caught naming its entry. `warden audit tail` shows and follows entries.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{Backend, Server};
use serde_json::{Value, json};

on_both_backends!(kill_9_loses_no_acknowledged_decision, tail_shows_and_follows);

/// Two nodes on one PostgreSQL database, both recording at once, make one log: consecutive sequence
/// numbers, checkpoints signed by both nodes' keys, and `warden audit verify` passes.
#[tokio::test]
async fn two_nodes_write_one_verifiable_log() {
    let database = warden_store::testing::fresh_postgres_url().await;
    let a = Server::spawn(
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
    // Both nodes record changes at the same time.
    let (ra, rb) = tokio::join!(
        async {
            for i in 0..15 {
                a.run(&[
                    "human",
                    "add",
                    &format!("a{i}@example.com"),
                    "--name",
                    "From A",
                    "--role",
                    "auditor",
                ])
                .await
                .ok();
            }
        },
        async {
            for i in 0..15 {
                b.run(&[
                    "human",
                    "add",
                    &format!("b{i}@example.com"),
                    "--name",
                    "From B",
                    "--role",
                    "auditor",
                ])
                .await
                .ok();
            }
        }
    );
    let ((), ()) = (ra, rb);
    // Let both writers sign their last checkpoints (every second while entries arrive).
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let v = a
        .run_env(
            &a.cwd(),
            &["audit", "verify", "-o", "json"],
            &[("WARDEN_DATABASE_URL", &database)],
        )
        .await
        .ok()
        .json();
    assert_eq!(v["verified"], true, "{v}");
    assert!(v["entries"].as_u64().unwrap() >= 30, "{v}");
    let lines = a
        .run(&["audit", "tail", "--from", "0", "-o", "json"])
        .await
        .ok()
        .stdout;
    let entries: Vec<Value> = lines.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64, "one sequence, no gaps");
    }
    let from = |node: &str| {
        entries
            .iter()
            .filter(|e| e["body"]["display_name"] == node)
            .count()
    };
    assert_eq!((from("From A"), from("From B")), (15, 15));
    let keys = v["keys"].as_array().expect("keys in the report");
    assert_eq!(keys.len(), 2, "one checkpoint key per node: {v}");
}

async fn tail_shows_and_follows(backend: Backend) {
    let s = Server::start(backend).await;
    s.add_owner().await;
    let lines = s.run(&["audit", "tail", "-n", "2"]).await.ok().stdout;
    let lines: Vec<_> = lines.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[1].contains("registry_change") && lines[1].contains("human.add"),
        "{lines:?}"
    );
    let json = s
        .run(&["audit", "tail", "--from", "0", "-o", "json"])
        .await
        .ok()
        .stdout;
    let entries: Vec<Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert!(entries.len() >= 2);
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["seq"], i as u64);
    }
    // --follow prints entries as they are committed.
    let admin = s.admin_token_file.to_str().unwrap().to_owned();
    let mut follower = tokio::process::Command::new(common::WARDEN)
        .args([
            "--server",
            &s.url,
            "--token-file",
            &admin,
            "audit",
            "tail",
            "-n",
            "0",
            "--follow",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut out = tokio::io::BufReader::new(follower.stdout.take().unwrap());
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.run(&[
        "human",
        "add",
        "late@example.com",
        "--name",
        "Late Comer",
        "--role",
        "auditor",
    ])
    .await
    .ok();
    let mut line = String::new();
    use tokio::io::AsyncBufReadExt as _;
    tokio::time::timeout(Duration::from_secs(20), out.read_line(&mut line))
        .await
        .expect("a followed entry within 20 s")
        .unwrap();
    assert!(
        line.contains("human.add") && line.contains("late@example.com"),
        "{line}"
    );
    follower.kill().await.unwrap();
    // Reading the ledger takes an admin's or auditor's token.
    let owner = s.human_with_token("o@example.com", "owner").await;
    let err = s.run_as(&owner, &["audit", "tail"]).await.fails(1);
    assert!(err.contains("403") || err.contains("may not"), "{err}");
}

async fn kill_9_loses_no_acknowledged_decision(backend: Backend) {
    let mut s = Server::start(backend).await;
    let (token, _, _) = s.bot_with_task("staging").await;
    let token = std::fs::read_to_string(token).unwrap().trim().to_owned();
    let http = reqwest::Client::new();
    let url = s.endpoint("/v1/authorize");
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for w in 0..32 {
        let (http, url, token, stop, count) = (
            http.clone(),
            url.clone(),
            token.clone(),
            stop.clone(),
            count.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let id = format!("crash-{w}-{i}");
                i += 1;
                let r = http
                    .post(&url)
                    .bearer_auth(&token)
                    .header("x-request-id", &id)
                    .json(&json!({"action": "read", "resource": {"upstream": "crm"}}))
                    .send()
                    .await;
                let Ok(r) = r else { break };
                if r.status() == 200
                    && let Some(seq) = r.headers().get("warden-ledger-seq")
                {
                    let seq: u64 = seq.to_str().unwrap().parse().unwrap();
                    acked.push((id, seq));
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            acked
        }));
    }
    // Let the load build up, then crash the server in the middle of it.
    let started = std::time::Instant::now();
    while count.load(Ordering::Relaxed) < 300 && started.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!(
        "{} decisions acknowledged in {:?} before the kill",
        count.load(Ordering::Relaxed),
        started.elapsed()
    );
    s.kill9();
    stop.store(true, Ordering::Relaxed);
    let mut acked = Vec::new();
    for w in workers {
        acked.extend(w.await.unwrap());
    }
    assert!(
        acked.len() > 100,
        "only {} decisions before the crash",
        acked.len()
    );

    s.restart();
    let admin = s.admin_token();
    // Every acknowledged decision is in the log, at the number it was acknowledged with.
    let mut entries: Vec<Value> = Vec::new();
    loop {
        let page: Value = http
            .get(s.endpoint(&format!("/v1/audit/entries?from={}&limit=1000", entries.len())))
            .bearer_auth(&admin)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let page = page["entries"].as_array().unwrap().clone();
        if page.is_empty() {
            break;
        }
        entries.extend(page);
    }
    for (id, seq) in &acked {
        let e = &entries
            .get(*seq as usize)
            .unwrap_or_else(|| panic!("acknowledged entry {seq} is missing ({} entries)", entries.len()))["entry"];
        assert_eq!(e["body"]["request_id"], id.as_str(), "entry {seq}");
        assert_eq!(e["body"]["outcome"], "allow");
    }

    // The log verifies, checkpoints included (the restarted node signs what the crash left unsigned).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let cp: Value = http
        .get(s.endpoint("/v1/audit/checkpoint"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let size = cp["size"].as_u64().unwrap();
    assert!(size >= entries.len() as u64, "{cp}");

    let keys: Vec<warden_ledger::VerifierKey> = cp["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| warden_ledger::VerifierKey::parse(k.as_str().unwrap()).unwrap())
        .collect();
    let verifier = warden_ledger::CheckpointVerifier::new(cp["origin"].as_str().unwrap(), keys).unwrap();
    let checkpoint = verifier.verify(cp["note"].as_str().unwrap()).unwrap();
    let mut v =
        warden_ledger::LogVerifier::new(&[cp["note"].as_str().unwrap()], &verifier, Default::default())
            .unwrap();
    use base64::Engine as _;
    for e in entries.iter().take(size as usize) {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(e["canonical"].as_str().unwrap())
            .unwrap();
        v.push(&warden_ledger::LogRecord {
            seq: e["seq"].as_u64().unwrap(),
            bytes,
            stored_hash: None,
        })
        .unwrap();
    }
    let report = v.finish().unwrap();
    assert_eq!(report.root, checkpoint.root);

    // The same with the auditor's tool, offline: the whole log in the database verifies; an export
    // verifies in another directory, with no server and no database.
    let data_dir = s.dir.path().join("warden-data");
    let data_dir = data_dir.to_str().unwrap();
    let db = s.database_url();
    let env: Vec<(&str, &str)> = db.iter().map(|u| ("WARDEN_DATABASE_URL", u.as_str())).collect();
    let v = s
        .run_env(
            &s.cwd(),
            &["audit", "verify", "--data-dir", data_dir, "-o", "json"],
            &env,
        )
        .await
        .ok()
        .json();
    assert_eq!(v["verified"], true, "{v}");
    assert!(v["entries"].as_u64().unwrap() >= entries.len() as u64, "{v}");
    let bundle = s.path("evidence.bundle");
    s.run_env(
        &s.cwd(),
        &[
            "audit",
            "export",
            "--data-dir",
            data_dir,
            "--out",
            bundle.to_str().unwrap(),
            "--agent",
            "bot",
        ],
        &env,
    )
    .await
    .ok();
    let elsewhere = tempfile::tempdir().unwrap();
    let copy = elsewhere.path().join("evidence.bundle");
    std::fs::copy(&bundle, &copy).unwrap();
    let v = s
        .run_in(
            elsewhere.path(),
            &[
                "audit",
                "verify",
                "--bundle",
                copy.to_str().unwrap(),
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(v["verified"], true, "{v}");

    // One byte of one entry changed in the database: verification fails and names that entry.
    let target = acked[acked.len() / 2].1;
    let sql = format!(
        "UPDATE ledger_entries SET canonical = CAST(replace(CAST(canonical AS TEXT), '\"allow\"', '\"allOw\"') AS BLOB) WHERE seq = {target}"
    );
    match &db {
        None => {
            use sqlx::Connection as _;
            let mut c = sqlx::SqliteConnection::connect(&format!("sqlite:{data_dir}/warden.db"))
                .await
                .unwrap();
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
        Some(url) => {
            use sqlx::Connection as _;
            let mut c = sqlx::PgConnection::connect(url).await.unwrap();
            let sql = format!(
                "UPDATE ledger_entries SET canonical = convert_to(replace(convert_from(canonical, 'UTF8'), '\"allow\"', '\"allOw\"'), 'UTF8') WHERE seq = {target}"
            );
            sqlx::query(&sql).execute(&mut c).await.unwrap();
        }
    }
    let out = s
        .run_env(
            &s.cwd(),
            &["audit", "verify", "--data-dir", data_dir, "-o", "json"],
            &env,
        )
        .await;
    assert_eq!(out.code, 1, "{}", out.stderr);
    assert_eq!(out.json()["first_bad_entry"], target, "{}", out.stderr);
    assert!(out.stderr.contains(&format!("entry {target}")), "{}", out.stderr);
}
