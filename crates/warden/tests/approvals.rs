//! Approvals end to end with real processes: a production write decided `needs_approval` (exit 4)
//! names its approval request; an approver approves it with `warden approvals approve`; the retried
//! action is allowed (exit 0); a non-approver and a second vote are refused; `approvals list|show`
//! show it.

#![allow(clippy::expect_used, clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Backend, Server};
use serde_json::Value;

on_both_backends!(approve_from_the_cli);

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
    let carol = s.human_with_token("carol@example.com", "approver").await;
    let bob = s.human_with_token("bob@example.com", "approver").await;
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
