//! `warden approvals list|show|approve|deny`: the approver's side of human approval gates.

use serde_json::{Value, json};

use crate::cli::{ApprovalsCommand, Format};
use crate::client::Client;
use crate::output::{self, Fields, Table, cell};

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn votes(a: &Value) -> String {
    format!("{}/{}", s(&a["approvals"]), s(&a["quorum"]))
}

fn render(a: &Value) -> String {
    let mut f = Fields::new();
    f.add("id", s(&a["id"]))
        .add("state", s(&a["state"]))
        .add("agent", s(&a["agent"]))
        .add("task", s(&a["task_id"]))
        .add("action", s(&a["action"]))
        .add("resource", s(&a["resource"]))
        .add("arguments", s(&a["arguments"]))
        .add("reason", s(&a["reason"]))
        .add("approvals", votes(a))
        .add("expires_at", s(&a["expires_at"]));
    // Who policy lets approve (`@approvers`): everyone in each line must be matched.
    for names in a["approvers"].as_array().into_iter().flatten() {
        let names: Vec<String> = names.as_array().into_iter().flatten().map(s).collect();
        f.add("approvers", names.join(" or "));
    }
    if a["owners_may_approve"] == Value::Bool(true) {
        f.add("owners_may_approve", "yes".to_owned());
    }
    if !a["grant_expires_at"].is_null() {
        f.add("grant_expires_at", s(&a["grant_expires_at"]));
    }
    for v in a["votes"].as_array().into_iter().flatten() {
        f.add(
            "vote",
            format!(
                "{} {} at {} {}",
                s(&v["vote"]),
                s(&v["approver"]),
                s(&v["at"]),
                cell(&s(&v["comment"]))
            ),
        );
    }
    f.render()
}

fn print_one(format: Format, v: &Value) -> anyhow::Result<()> {
    match format {
        Format::Json => output::stdout(&format!("{}\n", serde_json::to_string_pretty(v)?)),
        Format::Table => output::stdout(&render(v)),
    }
}

pub async fn run(client: &Client, format: Format, command: ApprovalsCommand) -> anyhow::Result<()> {
    match command {
        ApprovalsCommand::List(a) => {
            let agent = a.agent.map(|n| n.to_string());
            let mut query = Vec::new();
            if let Some(st) = a.state {
                query.push(("state", st.as_str()));
            }
            if let Some(n) = &agent {
                query.push(("agent", n.as_str()));
            }
            let v = client.get(&["v1", "approvals"], &query).await?;
            match format {
                Format::Json => output::stdout(&format!("{}\n", serde_json::to_string_pretty(&v)?)),
                Format::Table => {
                    let mut t =
                        Table::new(&["ID", "STATE", "AGENT", "ACTION", "RESOURCE", "VOTES", "EXPIRES"]);
                    for a in v["approvals"].as_array().into_iter().flatten() {
                        t.row(vec![
                            s(&a["id"]),
                            s(&a["state"]),
                            s(&a["agent"]),
                            s(&a["action"]),
                            s(&a["resource"]),
                            votes(a),
                            s(&a["expires_at"]),
                        ]);
                    }
                    output::stdout(&t.render())
                }
            }
        }
        ApprovalsCommand::Show(a) => {
            let id = a.id.to_string();
            let wait = a.wait.map(|w| w.to_string());
            let query: Vec<(&str, &str)> = wait.iter().map(|w| ("wait", w.as_str())).collect();
            let v = client.get(&["v1", "approvals", &id], &query).await?;
            print_one(format, &v)
        }
        ApprovalsCommand::Approve(a) => {
            let v = client
                .post(
                    &["v1", "approvals", &a.id.to_string(), "approve"],
                    &json!({"comment": a.comment}),
                )
                .await?;
            print_one(format, &v)
        }
        ApprovalsCommand::Deny(a) => {
            let v = client
                .post(
                    &["v1", "approvals", &a.id.to_string(), "deny"],
                    &json!({"comment": a.comment}),
                )
                .await?;
            print_one(format, &v)
        }
    }
}
