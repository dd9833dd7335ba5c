//! The ledger end to end, with real processes: two nodes on one PostgreSQL database write one
//! verifiable log; `warden audit tail` shows and follows entries. (Crash safety — `warden serve`
//! killed with SIGKILL under load loses no acknowledged entry — is in `tests/faults.rs`.)

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
mod common;

use std::time::Duration;

use common::{Backend, Server};
use serde_json::Value;

on_both_backends!(tail_shows_and_follows);

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
