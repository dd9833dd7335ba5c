//! Approvals end to end with real processes: a production write decided `needs_approval` (exit 4)
//! names its approval request; an approver approves it with `warden approvals approve`; the retried
//! action is allowed (exit 0); a non-approver and a second vote are refused; `approvals list|show`
//! show it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Backend, Server};
use serde_json::Value;

on_both_backends!(
    approve_from_the_cli,
    regression_owner_of_delegating_agent_cannot_approve,
    regression_admin_minted_token_cannot_vote,
    regression_token_cannot_mint_longer_lived_token,
    regression_refused_vote_is_not_recorded_as_granted,
    regression_partial_vote_is_not_granted,
);

async fn approve_from_the_cli(backend: Backend) {
    let s = Server::start(backend).await;
    let (tt, key, _) = s.bot_with_task("production").await;
    let (tt_s, key_s) = (tt.to_str().unwrap(), key.to_str().unwrap());
    let authorize = [
        "authorize",
        "--task-token-file",
        tt_s,
        "--key",
        key_s,
        "--action",
        "write",
        "--upstream",
        "crm",
        "-o",
        "json",
    ];
    let out = s.agent(&authorize).await;
    assert_eq!(out.code, 4, "needs approval: {} {}", out.stdout, out.stderr);
    let d: Value = serde_json::from_str(&out.stdout).unwrap();
    let id = d["approval"]["id"].as_str().expect("an approval id").to_owned();

    let pending = s
        .run(&["approvals", "list", "--state", "pending"])
        .await
        .ok()
        .stdout;
    assert!(pending.contains(&id) && pending.contains("0/1"), "{pending}");
    let (carol, _) = s.human_with_own_token("carol@example.com", &["approver"]).await;
    let (bob, _) = s.human_with_own_token("bob@example.com", &["approver"]).await;
    // The admin is no approver.
    let err = s.run(&["approvals", "approve", &id]).await.fails(1);
    assert!(err.contains("approver"), "{err}");
    let shown = s.run_as(&bob, &["approvals", "show", &id]).await.ok().stdout;
    assert!(
        shown.contains("write") && shown.contains("crm") && shown.contains("production-writes-need-approval"),
        "{shown}"
    );
    let approved = s
        .run_as(
            &carol,
            &[
                "approvals",
                "approve",
                &id,
                "--comment",
                "looks right",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(approved["state"], "approved", "{approved}");
    // Decided: another vote is refused with the reason.
    let err = s.run_as(&bob, &["approvals", "deny", &id]).await.fails(1);
    assert!(err.contains("already approved"), "{err}");
    let out = s.agent(&authorize).await;
    assert_eq!(
        out.code, 0,
        "allowed after approval: {} {}",
        out.stdout, out.stderr
    );
    let shown = s.run(&["approvals", "show", &id, "-o", "json"]).await.ok().json();
    assert_eq!(shown["votes"][0]["approver"], "carol@example.com");
    assert_eq!(shown["votes"][0]["comment"], "looks right");
}

/// The ledger entries about approval request `id` (decisions left out): `(kind, body)` in order.
async fn entries_about(s: &Server, id: &str) -> Vec<(String, Value)> {
    s.ledger()
        .await
        .into_iter()
        .filter(|e| e["entry"]["subject"] == id || e["entry"]["body"]["approval"] == id)
        .filter(|e| e["entry"]["kind"] != "decision")
        .map(|e| {
            (
                e["entry"]["kind"].as_str().unwrap_or_default().to_owned(),
                e["entry"]["body"].clone(),
            )
        })
        .collect()
}

/// The kinds of the approval entries (decisions left out).
fn kinds(entries: &[(String, Value)]) -> Vec<&str> {
    entries
        .iter()
        .map(|(k, _)| k.as_str())
        .filter(|k| *k != "decision")
        .collect()
}

/// `warden authorize` of `action` on `crm` with a task token: the approval request's id.
async fn needs_approval(
    s: &Server,
    task_token: &std::path::Path,
    key: &std::path::Path,
    action: &str,
) -> String {
    let out = s
        .agent(&[
            "authorize",
            "--task-token-file",
            task_token.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            "--action",
            action,
            "--upstream",
            "crm",
            "-o",
            "json",
        ])
        .await;
    assert_eq!(out.code, 4, "needs approval: {} {}", out.stdout, out.stderr);
    let d: Value = serde_json::from_str(&out.stdout).unwrap();
    d["approval"]["id"].as_str().expect("an approval id").to_owned()
}

fn whoami_token_id(token_file: &std::path::Path) -> String {
    let t = std::fs::read_to_string(token_file).unwrap();
    t.trim().to_owned()
}

/// Attack: bot-a (owned by dan) delegates its task to bot-d (owned by alice); bot-d's production
/// write needs approval; dan, who owns the delegating agent, approves it. Refused: separation of
/// duties covers every agent of the delegation chain, and the refusal is recorded with the reason.
async fn regression_owner_of_delegating_agent_cannot_approve(backend: Backend) {
    let s = Server::start(backend).await;
    // alice, crm (production), bot-d := the helper's `bot` is not used; we build the chain by hand.
    s.add_owner().await;
    s.run(&[
        "upstream",
        "add",
        "crm",
        "--kind",
        "mcp",
        "--url",
        "https://crm.example.com/mcp",
        "--environment",
        "production",
        "--owner",
        "alice@example.com",
        "--sensitivity",
        "internal",
    ])
    .await
    .ok();
    let (dan, _) = s
        .human_with_own_token("dan@example.com", &["owner", "approver"])
        .await;
    let (erin, _) = s.human_with_own_token("erin@example.com", &["approver"]).await;
    let mut keys = Vec::new();
    for (name, owner) in [("bot-a", "dan@example.com"), ("bot-d", "alice@example.com")] {
        let join = s.path(&format!("{name}.jt"));
        s.run(&[
            "agent",
            "register",
            name,
            "--owner",
            owner,
            "--environment",
            "staging",
            "--model",
            "anthropic/claude-sonnet@4.5",
            "--upstream",
            "crm",
            "--join-token-out",
            join.to_str().unwrap(),
        ])
        .await
        .ok();
        let key = s.path(&format!("{name}.key"));
        s.agent(&[
            "agent",
            "enroll",
            "--join-token-file",
            join.to_str().unwrap(),
            "--key-out",
            key.to_str().unwrap(),
        ])
        .await
        .ok();
        s.run(&["agent", "activate", name]).await.ok();
        keys.push(key);
    }
    let parent = s.path("bot-a.task");
    s.agent(&[
        "task",
        "start",
        "--key",
        keys[0].to_str().unwrap(),
        "--agent-id",
        "bot-a",
        "--purpose",
        "fix invoices",
        "--type",
        "billing",
        "--upstream",
        "crm",
        "--token-out",
        parent.to_str().unwrap(),
    ])
    .await
    .ok();
    let child = s.path("bot-d.task");
    s.agent(&[
        "task",
        "delegate",
        "--key",
        keys[1].to_str().unwrap(),
        "--agent-id",
        "bot-d",
        "--task-token-file",
        parent.to_str().unwrap(),
        "--token-out",
        child.to_str().unwrap(),
    ])
    .await
    .ok();
    let id = needs_approval(&s, &child, &keys[1], "write").await;
    let shown = s
        .run_as(&erin, &["approvals", "show", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(shown["chain"], serde_json::json!(["bot-d", "bot-a"]), "{shown}");

    let err = s.run_as(&dan, &["approvals", "approve", &id]).await.fails(1);
    assert!(
        err.contains("separation of duties") && err.contains("bot-a") && err.contains("delegated"),
        "{err}"
    );
    let still = s
        .run_as(&erin, &["approvals", "show", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (still["state"].as_str(), still["approvals"].as_u64()),
        (Some("pending"), Some(0))
    );
    let log = entries_about(&s, &id).await;
    let refused: Vec<&Value> = log
        .iter()
        .filter(|(k, _)| k == "approval_vote_refused")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(refused.len(), 1, "{log:?}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("separation of duties")
    );
    assert!(!kinds(&log).contains(&"approval_vote"), "{log:?}");
    // Someone outside the chain may.
    let ok = s
        .run_as(&erin, &["approvals", "approve", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(ok["state"], "approved");
}

/// Attack: an admin issues an approver a token (the admin has seen it) and votes with it; or
/// launders it by minting the approver a "self-made" token with it. Both refused, recorded; the
/// approver claims the issued token (revoking it) and votes; the vote names the token it was cast
/// with.
async fn regression_admin_minted_token_cannot_vote(backend: Backend) {
    let s = Server::start(backend).await;
    let (tt, key, _) = s.bot_with_task("production").await;
    let id = needs_approval(&s, &tt, &key, "write").await;
    s.run(&[
        "human",
        "add",
        "carol@example.com",
        "--name",
        "Carol",
        "--role",
        "approver",
    ])
    .await
    .ok();
    let issued = s
        .json(&[
            "human",
            "token",
            "create",
            "carol@example.com",
            "--label",
            "by-admin",
        ])
        .await;
    let issued_id = issued["info"]["id"].as_str().unwrap().to_owned();
    assert_eq!(issued["info"]["personal"], false, "{issued}");
    let issued = s.token_file("carol-issued", issued["token"].as_str().unwrap());
    let err = s.run_as(&issued, &["approvals", "approve", &id]).await.fails(1);
    assert!(
        err.contains(&issued_id) && err.contains("--claim") && err.contains("not their own"),
        "{err}"
    );
    // Laundering: a token minted for carol with the issued token (no claim) is no more hers.
    let laundered = s
        .run_as(
            &issued,
            &["human", "token", "create", "carol@example.com", "-o", "json"],
        )
        .await
        .ok()
        .json();
    assert_eq!(laundered["info"]["personal"], false, "{laundered}");
    let laundered = s.token_file("carol-laundered", laundered["token"].as_str().unwrap());
    let err = s
        .run_as(&laundered, &["approvals", "approve", &id])
        .await
        .fails(1);
    assert!(err.contains("not their own"), "{err}");
    // The claim: her own token; the issued one is revoked (and with it what it minted).
    let own = s
        .run_as(
            &issued,
            &[
                "human",
                "token",
                "create",
                "carol@example.com",
                "--claim",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(
        (own["info"]["personal"].as_bool(), own["claimed"].as_str()),
        (Some(true), Some(issued_id.as_str()))
    );
    let own_id = own["info"]["id"].as_str().unwrap().to_owned();
    let own = s.token_file("carol-own", own["token"].as_str().unwrap());
    let err = s.run_as(&issued, &["whoami"]).await.fails(1);
    assert!(err.contains("revoked"), "{err}");
    // A claim happens once.
    let err = s
        .run_as(
            &own,
            &["human", "token", "create", "carol@example.com", "--claim"],
        )
        .await
        .fails(1);
    assert!(err.contains("claim"), "{err}");
    let voted = s
        .run_as(&own, &["approvals", "approve", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(voted["state"], "approved");
    assert_eq!(voted["votes"][0]["token_id"], own_id.as_str(), "{voted}");
    let log = entries_about(&s, &id).await;
    let refused: Vec<&Value> = log
        .iter()
        .filter(|(k, _)| k == "approval_vote_refused")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(refused.len(), 2, "{log:?}");
    assert_eq!(refused[0]["token_id"], issued_id.as_str());
    let vote = log
        .iter()
        .find(|(k, _)| k == "approval_vote")
        .map(|(_, b)| b)
        .expect("the vote");
    assert_eq!(
        (vote["token_id"].as_str(), vote["voter"].as_str()),
        (Some(own_id.as_str()), Some("carol@example.com"))
    );
    let grant = log
        .iter()
        .find(|(k, _)| k == "grant_issued")
        .map(|(_, b)| b)
        .expect("the grant");
    assert_eq!(grant["token_ids"], serde_json::json!([own_id]));
    // No token value anywhere in the ledger.
    let all = serde_json::to_string(&s.ledger().await).unwrap();
    for f in [&issued, &own] {
        assert!(
            !all.contains(&whoami_token_id(f)),
            "a token value is in the ledger"
        );
    }
}

/// Attack: a 1-day token mints its holder a 365-day token that survives revoking the original.
/// Refused naming `ttl_seconds`; the default is cut to the minting token's expiry; and revoking a
/// token revokes what it minted.
async fn regression_token_cannot_mint_longer_lived_token(backend: Backend) {
    let s = Server::start(backend).await;
    s.run(&[
        "human",
        "add",
        "carol@example.com",
        "--name",
        "Carol",
        "--role",
        "approver",
    ])
    .await
    .ok();
    let issued = s
        .json(&["human", "token", "create", "carol@example.com", "--ttl", "1d"])
        .await;
    let issued_exp: chrono::DateTime<chrono::Utc> =
        issued["info"]["expires_at"].as_str().unwrap().parse().unwrap();
    let issued = s.token_file("carol-1d", issued["token"].as_str().unwrap());
    let err = s
        .run_as(
            &issued,
            &[
                "human",
                "token",
                "create",
                "carol@example.com",
                "--claim",
                "--ttl",
                "365d",
            ],
        )
        .await
        .fails(1);
    assert!(
        err.contains("ttl_seconds") && err.contains("never outlives"),
        "{err}"
    );
    let own = s
        .run_as(
            &issued,
            &[
                "human",
                "token",
                "create",
                "carol@example.com",
                "--claim",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    let own_exp: chrono::DateTime<chrono::Utc> = own["info"]["expires_at"].as_str().unwrap().parse().unwrap();
    assert!(own_exp <= issued_exp, "{own}");
    assert!(
        own["note"].as_str().unwrap_or("").contains("never outlives"),
        "{own}"
    );
    let own_id = own["info"]["id"].as_str().unwrap().to_owned();
    let own = s.token_file("carol-own", own["token"].as_str().unwrap());
    let child = s
        .run_as(
            &own,
            &[
                "human",
                "token",
                "create",
                "carol@example.com",
                "--ttl",
                "1h",
                "-o",
                "json",
            ],
        )
        .await
        .ok()
        .json();
    assert_eq!(child["info"]["minted_by"], own_id.as_str());
    let child = s.token_file("carol-child", child["token"].as_str().unwrap());
    s.run_as(&child, &["whoami"]).await.ok();
    let revoked = s
        .run(&["human", "token", "revoke", &own_id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        revoked["minted_revoked"].as_array().map(Vec::len),
        Some(1),
        "{revoked}"
    );
    let err = s.run_as(&child, &["whoami"]).await.fails(1);
    assert!(err.contains("revoked"), "the child does not survive: {err}");
}

/// Attack (ledger): a refused vote used to be recorded as `approval_granted` plus a failure marker.
/// Now a refused vote is one `approval_vote_refused` entry with the reason, nothing else.
async fn regression_refused_vote_is_not_recorded_as_granted(backend: Backend) {
    let s = Server::start(backend).await;
    let (tt, key, _) = s.bot_with_task("production").await;
    let id = needs_approval(&s, &tt, &key, "write").await;
    let (bob, bob_issued) = s.human_with_own_token("bob@example.com", &["approver"]).await;
    // Refused: a revoked (claimed) issued token is not even authenticated; a fresh issued one votes not.
    let issued = s.json(&["human", "token", "create", "bob@example.com"]).await;
    let issued = s.token_file("bob-issued-2", issued["token"].as_str().unwrap());
    let err = s.run_as(&issued, &["approvals", "approve", &id]).await.fails(1);
    assert!(err.contains("not their own"), "{err}");
    let err = s
        .run_as(&bob_issued, &["approvals", "approve", &id])
        .await
        .fails(1);
    assert!(err.contains("revoked"), "{err}");
    s.run_as(&bob, &["approvals", "deny", &id]).await.ok();
    let err = s.run_as(&bob, &["approvals", "approve", &id]).await.fails(1);
    assert!(err.contains("already denied"), "{err}");
    let log = entries_about(&s, &id).await;
    let k = kinds(&log);
    assert!(!k.contains(&"approval_granted"), "{k:?}");
    assert!(!k.contains(&"change_failed"), "{k:?}");
    assert!(log.iter().all(|(_, b)| b["outcome"] != "failed"), "{log:?}");
    let refused: Vec<&Value> = log
        .iter()
        .filter(|(k, _)| k == "approval_vote_refused")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(refused.len(), 2, "{k:?}");
    assert!(refused[1]["reason"].as_str().unwrap().contains("already denied"));
    // The deny: one counted vote, then the request's outcome.
    let votes: Vec<&Value> = log
        .iter()
        .filter(|(k, _)| k == "approval_vote")
        .map(|(_, b)| b)
        .collect();
    assert_eq!(votes.len(), 1, "{k:?}");
    assert_eq!(votes[0]["verdict"], "deny");
    assert_eq!(k.iter().filter(|k| **k == "approval_denied").count(), 1, "{k:?}");
    // The log still verifies.
    s.audit_verify().await;
}

/// Attack (ledger): a 1-of-2 vote used to be recorded as `approval_granted`. Now it is an
/// `approval_vote` stating `votes: 1, required: 2`; only the vote that reaches the quorum is followed
/// by `grant_issued`.
async fn regression_partial_vote_is_not_granted(backend: Backend) {
    let s = Server::start(backend).await;
    let (tt, key, _) = s.bot_with_task("production").await;
    let id = needs_approval(&s, &tt, &key, "destructive").await;
    let (bob, _) = s.human_with_own_token("bob@example.com", &["approver"]).await;
    let (carol, _) = s.human_with_own_token("carol@example.com", &["approver"]).await;
    let one = s
        .run_as(&bob, &["approvals", "approve", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(
        (one["state"].as_str(), one["quorum"].as_u64()),
        (Some("pending"), Some(2)),
        "{one}"
    );
    let log = entries_about(&s, &id).await;
    assert_eq!(kinds(&log), ["approval_requested", "approval_vote"], "{log:?}");
    assert_eq!(
        (log[1].1["votes"].as_u64(), log[1].1["required"].as_u64()),
        (Some(1), Some(2))
    );
    let two = s
        .run_as(&carol, &["approvals", "approve", &id, "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(two["state"], "approved");
    let log = entries_about(&s, &id).await;
    assert_eq!(
        kinds(&log),
        [
            "approval_requested",
            "approval_vote",
            "approval_vote",
            "grant_issued"
        ],
        "{log:?}"
    );
    assert_eq!(log[2].1["votes"], 2);
    assert_eq!(
        log[3].1["approved_by"],
        serde_json::json!(["bob@example.com", "carol@example.com"])
    );
}
