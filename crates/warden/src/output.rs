//! Printing results: aligned tables for lists, `key: value` lines for single objects (`-o table`), or the
//! server's JSON, pretty-printed (`-o json`).
//!
//! In JSON mode the client prints what the server sent, unchanged (the array for lists), so scripts see
//! every field. In table mode it decodes the response into `warden-core`'s types first, so a response of
//! the wrong shape is an error rather than a half-empty table. Text from the server has its control
//! characters escaped before it reaches the terminal.

use std::io::Write as _;

use anyhow::{Context as _, anyhow};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::cli::Format;

/// A table: a header row and rows of cells, rendered with columns aligned and two spaces between them.
#[derive(Debug, Clone, Default)]
pub struct Table {
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(headers: &[&str]) -> Self {
        Self {
            headers: headers.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let cols = self.headers.len();
        let clean_rows: Vec<Vec<String>> = std::iter::once(&self.headers)
            .chain(&self.rows)
            .map(|r| {
                (0..cols)
                    .map(|i| cell(r.get(i).map(String::as_str).unwrap_or("")))
                    .collect()
            })
            .collect();
        let mut widths = vec![0; cols];
        for row in &clean_rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut out = String::new();
        for row in &clean_rows {
            let mut line = String::new();
            for (i, (c, w)) in row.iter().zip(&widths).enumerate() {
                if i > 0 {
                    line.push_str("  ");
                }
                line.push_str(c);
                if i + 1 < cols {
                    line.extend(std::iter::repeat_n(' ', w - c.chars().count()));
                }
            }
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// `key: value` lines, values aligned.
#[derive(Debug, Clone, Default)]
pub struct Fields(Vec<(String, String)>);

impl Fields {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn add(&mut self, key: &str, value: impl Into<String>) -> &mut Self {
        self.0.push((key.to_owned(), value.into()));
        self
    }

    pub fn render(&self) -> String {
        let width = self.0.iter().map(|(k, _)| k.chars().count()).max().unwrap_or(0);
        let mut out = String::new();
        for (k, v) in &self.0 {
            let line = format!("{k}:{:pad$} {}", "", cell(v), pad = width - k.chars().count());
            out.push_str(line.trim_end());
            out.push('\n');
        }
        out
    }
}

/// One cell or value on one line: control characters (newlines included) escaped, empty shown as `-`.
pub fn cell(s: &str) -> String {
    if s.is_empty() {
        return "-".into();
    }
    s.chars()
        .map(|c| {
            if c.is_control() {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// A timestamp as `2025-01-31T09:15:00Z`.
pub fn time(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// A list of displayable values, comma-separated.
pub fn list<T: std::fmt::Display>(items: &[T]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Writes to stdout. A closed pipe (`warden agent list | head -1`) is not an error.
pub fn stdout(text: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

fn pretty(value: &Value) -> anyhow::Result<String> {
    let mut s = serde_json::to_string_pretty(value).context("formatting JSON")?;
    s.push('\n');
    Ok(s)
}

/// Decodes a response in table mode, naming what was expected when it does not fit.
pub fn decode<T: DeserializeOwned>(value: Value, what: &str) -> anyhow::Result<T> {
    serde_json::from_value(value).with_context(|| format!("the server's response is not a valid {what}"))
}

/// Prints one object: as JSON, or decoded into `T` and rendered by `render`.
pub fn one<T: DeserializeOwned>(
    format: Format,
    value: Value,
    what: &str,
    render: impl FnOnce(&T) -> String,
) -> anyhow::Result<()> {
    match format {
        Format::Json => stdout(&pretty(&value)?),
        // A revocation the store could not take yet (202): say so, whatever the command expected.
        Format::Table if value.get("held") == Some(&Value::Bool(true)) => stdout(&held(&value)),
        Format::Table => stdout(&render(&decode::<T>(value, what)?)),
    }
}

/// A held revocation, as a table: durability and the server's explanation.
fn held(value: &Value) -> String {
    let field = |k: &str| value.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    Fields::new()
        .add("held", field("durability"))
        .add("message", field("message"))
        .render()
}

/// Prints a list the server wraps as `{"<key>": [...]}`: the array as JSON, or a table of `T`s.
pub fn many<T: DeserializeOwned>(
    format: Format,
    mut value: Value,
    key: &str,
    what: &str,
    headers: &[&str],
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    let items = value
        .get_mut(key)
        .map(Value::take)
        .filter(Value::is_array)
        .ok_or_else(|| anyhow!("the server's response has no `{key}` list"))?;
    match format {
        Format::Json => stdout(&pretty(&items)?),
        Format::Table => {
            let items: Vec<T> = decode(items, &format!("list of {what}"))?;
            if items.is_empty() {
                eprintln!("no {what}");
                return Ok(());
            }
            let mut table = Table::new(headers);
            for item in &items {
                table.row(row(item));
            }
            stdout(&table.render())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_held_revocation_is_printed_whatever_the_command_expected() {
        let v = serde_json::json!({"held": true, "durability": "journaled", "message": "the store did not take it"});
        let table = held(&v);
        assert!(
            table.contains("journaled") && table.contains("the store did not take it"),
            "{table}"
        );
    }

    #[test]
    fn tables_align_columns_without_trailing_spaces() {
        let mut t = Table::new(&["NAME", "STATE", "OWNERS"]);
        t.row(vec![
            "billing-bot".into(),
            "active".into(),
            "a@x.io, b@x.io".into(),
        ]);
        t.row(vec!["b".into(), "pending_review".into(), "".into()]);
        assert_eq!(
            t.render(),
            "NAME         STATE           OWNERS\n\
             billing-bot  active          a@x.io, b@x.io\n\
             b            pending_review  -\n"
        );
    }

    #[test]
    fn table_cells_are_one_line_and_escaped() {
        let mut t = Table::new(&["A", "B"]);
        t.row(vec!["x\ny".into(), "\u{1b}[31mred".into()]);
        t.row(vec!["é".into()]);
        assert_eq!(t.render(), "A     B\nx\\ny  \\u{1b}[31mred\né     -\n");
    }

    #[test]
    fn fields_align_values() {
        let mut f = Fields::new();
        f.add("name", "billing-bot")
            .add("state", "active")
            .add("description", "");
        assert_eq!(
            f.render(),
            "name:        billing-bot\nstate:       active\ndescription: -\n"
        );
    }

    #[test]
    fn list_responses_must_have_the_list() {
        let render =
            |v: Value| many::<String>(Format::Json, v, "agents", "agents", &["X"], |s| vec![s.clone()]);
        assert!(render(serde_json::json!({"agents": []})).is_ok());
        let e = render(serde_json::json!({"agent": []})).unwrap_err();
        assert_eq!(e.to_string(), "the server's response has no `agents` list");
        assert!(render(serde_json::json!({"agents": {}})).is_err());
    }

    #[test]
    fn times_are_rfc3339_seconds() {
        let t = DateTime::parse_from_rfc3339("2025-01-31T09:15:00.123456+00:00")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(time(&t), "2025-01-31T09:15:00Z");
    }
}
