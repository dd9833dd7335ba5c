//! `warden tool …` and `warden secret …`: the admin's side of the MCP gateway.
//!
//! Secret values are read from a file or standard input — never from the command line, where they
//! would show in the process list and shell history — and sent once; the server seals them and never
//! returns them.

use std::io::Read as _;

use anyhow::Context as _;
use serde_json::{Value, json};
use warden_core::{Secret, SecretName};

use crate::cli::{Format, SecretCommand, ToolCommand};
use crate::client::Client;
use crate::output::{self, Fields, Table};
use crate::request::UsageError;

fn s(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn class(t: &Value) -> String {
    if t["class_override"].is_null() {
        format!("{} (hint)", s(&t["hint_class"]))
    } else {
        format!("{} (admin)", s(&t["class_override"]))
    }
}

fn print_json(v: &Value) -> anyhow::Result<()> {
    output::stdout(&format!("{}\n", serde_json::to_string_pretty(v)?))
}

fn print_tool(format: Format, t: &Value) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(t),
        Format::Table => {
            let mut f = Fields::new();
            f.add("tool", format!("{}/{}", s(&t["upstream"]), s(&t["name"])))
                .add("state", s(&t["state"]));
            if !t["quarantine_reason"].is_null() {
                f.add("quarantined", s(&t["quarantine_reason"]));
            }
            f.add("class", class(t))
                .add("digest", s(&t["digest"]))
                .add("first_seen", s(&t["first_seen"]));
            if !t["approved_by"].is_null() {
                f.add(
                    "approved_by",
                    format!("{} at {}", s(&t["approved_by"]), s(&t["approved_at"])),
                );
            }
            f.add("definition", s(&t["definition"]));
            if !t["pending_digest"].is_null() {
                f.add("pending_digest", s(&t["pending_digest"]))
                    .add("pending_definition", s(&t["pending_definition"]));
            }
            output::stdout(&f.render())
        }
    }
}

pub async fn run_tool(client: &Client, format: Format, command: ToolCommand) -> anyhow::Result<()> {
    match command {
        ToolCommand::List(a) => {
            let up = a.upstream.map(|u| u.to_string());
            let query: Vec<(&str, &str)> = up.iter().map(|u| ("upstream", u.as_str())).collect();
            let v = client.get(&["v1", "tools"], &query).await?;
            match format {
                Format::Json => print_json(&v),
                Format::Table => {
                    let mut t = Table::new(&["TOOL", "STATE", "CLASS", "DIGEST", "REASON"]);
                    for tool in v["tools"].as_array().into_iter().flatten() {
                        let digest = s(&tool["digest"]);
                        t.row(vec![
                            format!("{}/{}", s(&tool["upstream"]), s(&tool["name"])),
                            s(&tool["state"]),
                            class(tool),
                            digest.chars().take(16).collect(),
                            s(&tool["quarantine_reason"]),
                        ]);
                    }
                    output::stdout(&t.render())
                }
            }
        }
        ToolCommand::Show(a) => {
            let (up, name) = a.tool;
            let v = client.get(&["v1", "tools", up.as_str(), &name], &[]).await?;
            print_tool(format, &v)
        }
        ToolCommand::Classify(a) => {
            let (up, name) = a.tool;
            let class = if a.hint {
                None
            } else {
                a.class.map(|c| c.as_str().to_owned())
            };
            let v = client
                .post(
                    &["v1", "tools", up.as_str(), &name, "classify"],
                    &json!({ "class": class }),
                )
                .await?;
            print_tool(format, &v)
        }
        ToolCommand::Approve(a) => {
            let (up, name) = a.tool;
            let v = client
                .post(
                    &["v1", "tools", up.as_str(), &name, "approve"],
                    &json!({ "digest": a.digest }),
                )
                .await?;
            if format == Format::Table {
                // `restored`: the digest was the approved one, so the pending definition is gone.
                output::stdout(&if v["restored"] == json!(true) {
                    format!("restored the approved definition of {up}/{name}; the pending one was dropped\n")
                } else {
                    format!("approved the pending definition of {up}/{name}\n")
                })?;
            }
            print_tool(format, &v)
        }
    }
}

/// A checked `secret` command, ready to send (the value already read).
pub enum SecretCall {
    Set(Value, Secret<String>),
    List,
    Rotate(SecretName, Secret<String>),
    Delete(SecretName),
}

fn read_value(file: Option<&std::path::Path>) -> anyhow::Result<Secret<String>> {
    match file {
        Some(path) => crate::client::read_secret_file(path, "secret value file"),
        None => {
            let mut raw = String::new();
            std::io::stdin()
                .take(64 * 1024)
                .read_to_string(&mut raw)
                .context("reading the secret value from standard input")?;
            let raw = Secret::new(raw);
            let v = Secret::new(raw.expose().trim().to_owned());
            if v.expose().is_empty() {
                anyhow::bail!("no secret value on standard input (or use --value-file FILE)");
            }
            Ok(v)
        }
    }
}

fn secret_name(raw: &str) -> anyhow::Result<SecretName> {
    SecretName::parse(raw).map_err(|e| UsageError(format!("NAME: {}", e.message)).into())
}

/// Checks the command line and reads the value before anything is sent.
pub fn secret_call(command: SecretCommand) -> anyhow::Result<SecretCall> {
    Ok(match command {
        SecretCommand::Set(a) => {
            let name = secret_name(&a.name)?;
            let injection = match (&a.header, &a.env) {
                (Some(h), None) => json!({ "kind": "header", "name": h, "prefix": a.prefix }),
                (None, Some(v)) => json!({ "kind": "env", "var": v }),
                _ => return Err(UsageError("give one of --header or --env".into()).into()),
            };
            // The injection is checked by the server's own types: parse it here first.
            serde_json::from_value::<warden_core::Injection>(injection.clone())
                .map_err(|e| UsageError(format!("--header/--env: {e}")))?;
            let value = read_value(a.value_file.as_deref())?;
            SecretCall::Set(
                json!({ "name": name.as_str(), "upstream": a.upstream.as_str(), "injection": injection }),
                value,
            )
        }
        SecretCommand::List => SecretCall::List,
        SecretCommand::Rotate(a) => {
            let name = secret_name(&a.name)?;
            SecretCall::Rotate(name, read_value(a.value_file.as_deref())?)
        }
        SecretCommand::Delete(a) => SecretCall::Delete(secret_name(&a.name)?),
    })
}

fn print_secret(format: Format, v: &Value) -> anyhow::Result<()> {
    match format {
        Format::Json => print_json(v),
        Format::Table => {
            let mut f = Fields::new();
            f.add("name", s(&v["name"]))
                .add("upstream", s(&v["upstream"]))
                .add("injection", s(&v["injection"]))
                .add("version", s(&v["version"]))
                .add("key_id", s(&v["key_id"]))
                .add(
                    "created",
                    format!("{} by {}", s(&v["created_at"]), s(&v["created_by"])),
                );
            if !v["rotated_at"].is_null() {
                f.add(
                    "rotated",
                    format!("{} by {}", s(&v["rotated_at"]), s(&v["rotated_by"])),
                );
            }
            output::stdout(&f.render())
        }
    }
}

pub async fn run_secret(client: &Client, format: Format, call: SecretCall) -> anyhow::Result<()> {
    match call {
        SecretCall::Set(mut body, value) => {
            body["value"] = value.expose().clone().into();
            let v = client.post(&["v1", "secrets"], &body).await?;
            print_secret(format, &v)
        }
        SecretCall::List => {
            let v = client.get(&["v1", "secrets"], &[]).await?;
            match format {
                Format::Json => print_json(&v),
                Format::Table => {
                    let mut t = Table::new(&["NAME", "UPSTREAM", "INJECTION", "VERSION", "KEY"]);
                    for x in v["secrets"].as_array().into_iter().flatten() {
                        let inj = &x["injection"];
                        let target = match s(&inj["kind"]).as_str() {
                            "header" => format!("header {}", s(&inj["name"])),
                            _ => format!("env {}", s(&inj["var"])),
                        };
                        t.row(vec![
                            s(&x["name"]),
                            s(&x["upstream"]),
                            target,
                            s(&x["version"]),
                            s(&x["key_id"]),
                        ]);
                    }
                    output::stdout(&t.render())
                }
            }
        }
        SecretCall::Rotate(name, value) => {
            let v = client
                .post(
                    &["v1", "secrets", name.as_str(), "rotate"],
                    &json!({ "value": value.expose() }),
                )
                .await?;
            print_secret(format, &v)
        }
        SecretCall::Delete(name) => {
            client.delete(&["v1", "secrets", name.as_str()]).await?;
            output::stdout(&format!("deleted secret {name}\n"))
        }
    }
}
