//! The Cedar schema Warden ships (`schema/warden.cedarschema`) and the typed view of tool arguments.
//!
//! Cedar's strict validator needs every attribute a policy reads to have a declared type, but a tool's
//! JSON arguments are open-ended. Warden therefore gives policies two views of them:
//!
//! - the generic view, always available when a call has arguments: `context.args` is an `Args` entity
//!   whose String *tags* (Cedar 4 entity tags, RFC 82) hold every leaf by dotted path — strict
//!   validation accepts `context.args.hasTag("to") && context.args.getTag("to") == "x"` for any key;
//! - the typed view, for tools whose definition declares a JSON Schema for its input: the schema's
//!   supported subset (objects, strings, integers, booleans, arrays of those) becomes a Cedar record
//!   type, and `context.tool_args` is a record with one *optional* attribute per such tool, keyed
//!   `<upstream>/<tool>`. A policy reads `context.tool_args has "crm/refund" &&
//!   context.tool_args["crm/refund"].amount > 100`, and strict validation checks the attribute names
//!   and types. Required JSON Schema properties become required attributes, others optional; a call
//!   whose arguments do not fit the declared type is denied (fail closed), naming the field.
//!
//! The typed view is part of the schema, so it is fixed when policies are compiled
//! ([`crate::compile_with_tools`]); a tool whose input schema changes needs a recompile.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value as Json;
use sha2::{Digest as _, Sha256};
use smol_str::SmolStr;

use cedar_policy_core::ast::Value;

/// The schema text shipped with Warden.
pub const SCHEMA_TEXT: &str = include_str!("../schema/warden.cedarschema");

/// The line of [`SCHEMA_TEXT`] that the typed tool arguments replace.
const TOOL_ARGS_LINE: &str = "type ToolArgs = {};";

/// Deepest nesting of a typed argument record.
pub const MAX_ARG_TYPE_DEPTH: usize = 8;

/// A Cedar type for (part of) a tool's arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgType {
    String,
    Long,
    Bool,
    Set(Box<ArgType>),
    /// Attributes with whether each is required.
    Record(BTreeMap<String, (ArgType, bool)>),
}

/// The typed argument views of every tool that declares an input schema.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolArgTypes {
    tools: BTreeMap<String, ArgType>,
}

/// A tool's input schema could not be turned into a Cedar type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("input schema of tool `{tool}`: {message}")]
pub struct ArgSchemaError {
    pub tool: String,
    pub message: String,
}

fn safe_key(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/' | ':'))
}

impl ToolArgTypes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds the typed view of tool `<upstream>/<tool>` from its JSON Schema (an `object` schema, as MCP
    /// tools declare). Unsupported parts (numbers with fractions, `null`, `oneOf`, property names with
    /// unusual characters) are left out of the typed view; they stay visible in the generic view.
    pub fn add_json_schema(&mut self, tool_id: &str, schema: &Json) -> Result<(), ArgSchemaError> {
        let err = |m: String| ArgSchemaError {
            tool: tool_id.to_owned(),
            message: m,
        };
        if !safe_key(tool_id) || !tool_id.contains('/') {
            return Err(err(
                "the tool id must be `<upstream>/<tool>` of letters, digits and `_-.:`".into(),
            ));
        }
        match from_json_schema(schema, 0) {
            Some(t @ ArgType::Record(_)) => {
                self.tools.insert(tool_id.to_owned(), t);
                Ok(())
            }
            _ => Err(err(
                "the input schema must be an object schema (`\"type\": \"object\"`) of at most 8 levels"
                    .into(),
            )),
        }
    }

    /// The typed view of one tool, if it declared one.
    pub fn get(&self, tool_id: &str) -> Option<&ArgType> {
        self.tools.get(tool_id)
    }

    /// Takes a tool's typed view out (the tool was removed, quarantined or redefined).
    pub fn remove(&mut self, tool_id: &str) -> Option<ArgType> {
        self.tools.remove(tool_id)
    }

    /// The ids (`<upstream>/<tool>`) of the tools with a typed view, in order.
    pub fn tool_ids(&self) -> impl Iterator<Item = &str> {
        self.tools.keys().map(String::as_str)
    }

    /// Number of tools with a typed view.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }

    /// SHA-256 (hex) of the Cedar declaration these views make: equal fingerprints compile to the
    /// same schema, so a catalogue change that leaves the fingerprint alone needs no recompile.
    pub fn fingerprint(&self) -> String {
        hex::encode(Sha256::digest(self.declaration().as_bytes()))
    }

    /// The Cedar declaration of `ToolArgs`.
    fn declaration(&self) -> String {
        let mut out = String::from("type ToolArgs = {");
        for (i, (tool, t)) in self.tools.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, " \"{tool}\"?: ");
            write_type(&mut out, t);
        }
        out.push_str(" };");
        out
    }
}

fn from_json_schema(schema: &Json, depth: usize) -> Option<ArgType> {
    if depth > MAX_ARG_TYPE_DEPTH {
        return None;
    }
    let ty = schema.get("type")?.as_str()?;
    match ty {
        "string" => Some(ArgType::String),
        "integer" => Some(ArgType::Long),
        "boolean" => Some(ArgType::Bool),
        "array" => {
            let items = from_json_schema(schema.get("items")?, depth + 1)?;
            Some(ArgType::Set(Box::new(items)))
        }
        "object" => {
            let required: Vec<&str> = schema
                .get("required")
                .and_then(Json::as_array)
                .map(|a| a.iter().filter_map(Json::as_str).collect())
                .unwrap_or_default();
            let mut attrs = BTreeMap::new();
            if let Some(props) = schema.get("properties").and_then(Json::as_object) {
                for (name, sub) in props {
                    if !safe_key(name) {
                        continue;
                    }
                    if let Some(t) = from_json_schema(sub, depth + 1) {
                        attrs.insert(name.clone(), (t, required.contains(&name.as_str())));
                    }
                }
            }
            Some(ArgType::Record(attrs))
        }
        _ => None,
    }
}

fn write_type(out: &mut String, t: &ArgType) {
    match t {
        ArgType::String => out.push_str("String"),
        ArgType::Long => out.push_str("Long"),
        ArgType::Bool => out.push_str("Bool"),
        ArgType::Set(inner) => {
            out.push_str("Set<");
            write_type(out, inner);
            out.push('>');
        }
        ArgType::Record(attrs) => {
            out.push('{');
            for (i, (name, (t, required))) in attrs.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let _ = write!(out, " \"{name}\"{}: ", if *required { "" } else { "?" });
                write_type(out, t);
            }
            out.push_str(" }");
        }
    }
}

/// The schema text with the typed tool arguments spliced in.
pub fn schema_text(tools: &ToolArgTypes) -> String {
    if tools.is_empty() {
        SCHEMA_TEXT.to_owned()
    } else {
        SCHEMA_TEXT.replacen(TOOL_ARGS_LINE, &tools.declaration(), 1)
    }
}

impl ArgType {
    /// Converts JSON arguments to a Cedar value of this type. Extra JSON fields are ignored (they are
    /// in the generic view); a missing required field or a value of the wrong type is an error naming
    /// the field.
    pub fn to_value(&self, json: &Json, path: &str) -> Result<Value, String> {
        let at = |p: &str| {
            if p.is_empty() {
                "arguments".to_owned()
            } else {
                format!("`{p}`")
            }
        };
        match (self, json) {
            (ArgType::String, Json::String(s)) => Ok(Value::from(s.as_str())),
            (ArgType::Long, Json::Number(n)) => n
                .as_i64()
                .map(Value::from)
                .ok_or_else(|| format!("{} is not an integer in the 64-bit range", at(path))),
            (ArgType::Bool, Json::Bool(b)) => Ok(Value::from(*b)),
            (ArgType::Set(inner), Json::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, item) in items.iter().enumerate() {
                    out.push(inner.to_value(item, &format!("{path}.{i}"))?);
                }
                Ok(Value::set(out, None))
            }
            (ArgType::Record(attrs), Json::Object(map)) => {
                let mut out: BTreeMap<SmolStr, Value> = BTreeMap::new();
                for (name, (t, required)) in attrs {
                    let sub = if path.is_empty() {
                        name.clone()
                    } else {
                        format!("{path}.{name}")
                    };
                    match map.get(name) {
                        Some(v) => {
                            out.insert(SmolStr::new(name), t.to_value(v, &sub)?);
                        }
                        None if *required => return Err(format!("`{sub}` is required")),
                        None => {}
                    }
                }
                Ok(Value::record_arc(std::sync::Arc::new(out), None))
            }
            (t, _) => Err(format!("{} must be {}", at(path), t.describe())),
        }
    }

    fn describe(&self) -> &'static str {
        match self {
            ArgType::String => "a string",
            ArgType::Long => "an integer",
            ArgType::Bool => "a boolean",
            ArgType::Set(_) => "an array",
            ArgType::Record(_) => "an object",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shipped_schema_parses() {
        let (schema, warnings) =
            cedar_policy::Schema::from_cedarschema_str(SCHEMA_TEXT).expect("schema parses");
        assert_eq!(warnings.count(), 0);
        assert_eq!(schema.actions().count(), 6);
    }

    #[test]
    fn json_schema_becomes_a_cedar_type() {
        let mut t = ToolArgTypes::new();
        t.add_json_schema(
            "crm/refund",
            &json!({"type": "object", "required": ["amount"], "properties": {
                "amount": {"type": "integer"}, "note": {"type": "string"},
                "ratio": {"type": "number"}, "tags": {"type": "array", "items": {"type": "string"}},
                "opts": {"type": "object", "properties": {"force": {"type": "boolean"}}},
                "bad key": {"type": "string"}
            }}),
        )
        .expect("object schema");
        let text = schema_text(&t);
        assert!(
            text.contains(r#""crm/refund"?: { "amount": Long, "note"?: String, "opts"?: { "force"?: Bool }, "tags"?: Set<String> }"#),
            "{text}"
        );
        let _ = cedar_policy::Schema::from_cedarschema_str(&text).expect("extended schema parses");
        let e = t
            .add_json_schema("crm/x", &json!({"type": "string"}))
            .expect_err("not an object");
        assert!(e.to_string().contains("must be an object schema"), "{e}");

        let before = t.fingerprint();
        assert_eq!(before.len(), 64);
        assert_eq!(t.tool_ids().collect::<Vec<_>>(), ["crm/refund"]);
        let mut same = ToolArgTypes::new();
        // A different JSON Schema with the same typed view (unsupported parts left out): same
        // fingerprint.
        same.add_json_schema(
            "crm/refund",
            &json!({"type": "object", "required": ["amount"], "properties": {
                "amount": {"type": "integer"}, "note": {"type": "string"}, "other": {"type": "null"},
                "opts": {"type": "object", "properties": {"force": {"type": "boolean"}}},
                "tags": {"type": "array", "items": {"type": "string"}}
            }}),
        )
        .expect("object schema");
        assert_eq!(same.fingerprint(), before);
        assert_eq!(same, t);
        let mut other = same.clone();
        other
            .add_json_schema(
                "crm/refund",
                &json!({"type": "object", "properties": {"amount": {"type": "string"}}}),
            )
            .expect("object schema");
        assert_ne!(other.fingerprint(), before);
        assert!(other.remove("crm/refund").is_some());
        assert_eq!(other.fingerprint(), ToolArgTypes::new().fingerprint());
        assert!(other.is_empty());
        assert_eq!(other.len(), 0);

        let ty = t.get("crm/refund").expect("declared");
        assert!(ty.to_value(&json!({"amount": 5, "extra": 1}), "").is_ok());
        assert_eq!(
            ty.to_value(&json!({"note": "x"}), "").expect_err("missing"),
            "`amount` is required"
        );
        assert_eq!(
            ty.to_value(&json!({"amount": 5, "opts": {"force": "yes"}}), "")
                .expect_err("mistyped"),
            "`opts.force` must be a boolean"
        );
    }
}
