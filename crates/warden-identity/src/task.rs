//! Task tokens: the short-lived credential Warden issues for one task of one agent, carrying the task's
//! declared intent (RFC 9396 `authorization_details` of type `warden_task`), the delegation chain (RFC
//! 8693 `act`) and, when bound, the DPoP key thumbprint (RFC 9449 `cnf.jkt`).
//!
//! Also here: parsing and validating intents, and [`TaskIntent::narrow`], the rule that makes
//! delegation unable to widen a task's scope.
//!
//! # Why a custom EdDSA verification path instead of `jsonwebtoken`
//!
//! Every MCP message carries a task token, so verifying one is the hottest path in Warden. For this one
//! token type there is exactly one algorithm (EdDSA), one header shape and one key source, so the code
//! reads the header into a struct that refuses unknown members, checks `alg`, `typ` and `kid`, and calls
//! `ed25519_dalek::VerifyingKey::verify_strict` on the signing input before parsing any claim. Compared
//! with `jsonwebtoken::decode` this is (a) stricter — `verify_strict` refuses small-order keys and `R`
//! points, unknown header members (`crit`, `jku`, `x5u`, `jwk`...) and duplicate members are refused,
//! and the claims are read only after the signature verified; and (b) correct about time — it checks
//! against the caller's `now`, where `jsonwebtoken` reads the system clock.
//!
//! It is not faster, and cannot be: `benches/tokens.rs` on the 2-core CI machine measured
//! `verify_task_token` 41 µs, of which the Ed25519 check alone (`breakdown/ed25519_verify_strict`) is
//! 37-38 µs and the claims parse 1.7 µs; `jsonwebtoken::decode` on the same token is 40.6 µs (its
//! non-strict `verify` is ~5 µs cheaper than `verify_strict`). A cold verification therefore tops out
//! near 25k/s per core on this hardware; [`crate::TaskTokenCache`] makes the repeated presentation of
//! one token (the gateway's real pattern) about 1.2 µs.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use uuid::Uuid;
use warden_core::{Secret, UpstreamName, glob_matches};

use crate::jws::{self, Compact};
use crate::keys::{KeyLookup, PublicKey, SigningKey};
use crate::spiffe::SpiffeId;
use crate::{MAX_TOKEN_BYTES, TokenError};

pub const TASK_TOKEN_TYP: &str = "wdn-task+jwt";
/// The RFC 9396 `type` of a Warden task's authorization details.
pub const AUTHORIZATION_DETAILS_TYPE: &str = "warden_task";
/// Longest `authorization_details` parameter accepted.
pub const MAX_AUTHORIZATION_DETAILS_BYTES: usize = 16 * 1024;
/// Longest `max_duration_secs` a task may ask for: 30 days. The server applies its own, usually much
/// smaller, limit; this one only keeps the arithmetic far from overflow.
pub const MAX_TASK_DURATION_SECS: u64 = 30 * 24 * 3600;
/// Longest lifetime (`exp - iat`) of one task token: one hour. Task tokens are meant to be short-lived
/// (default 5 minutes) and renewed while the task is active; this caps a misconfiguration.
pub const MAX_TASK_TOKEN_LIFETIME_SECS: i64 = 3600;
/// Most entries in each of `upstreams`, `tools`, `datasets`, `resources`, `prompts`.
pub const MAX_INTENT_ITEMS: usize = 64;
const MAX_PURPOSE_BYTES: usize = 500;
const MAX_TASK_TYPE_BYTES: usize = 100;
const MAX_ITEM_BYTES: usize = 200;
/// Longest MCP resource URI pattern.
const MAX_PATTERN_BYTES: usize = 500;
/// Longest `act` chain accepted in claims being issued.
const MAX_ACT_DEPTH: usize = 32;

/// The intent of a task (RFC 9396 authorization_details entry of type `warden_task`).
///
/// Holding one means it is valid: deserializing validates (unknown fields are refused). In an issued
/// token the lists are exact: an empty list grants nothing in that dimension (see [`TaskIntent::narrow`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "RawTaskIntent")]
pub struct TaskIntent {
    /// What the task is for, in words: 1 to 500 bytes, no control characters.
    pub purpose: String,
    /// 1 to 100 characters of `a-z 0-9 _ . -`.
    pub task_type: String,
    #[serde(default)]
    pub upstreams: Vec<UpstreamName>,
    /// Each 1 to 200 bytes, no control characters nor surrounding whitespace, no duplicates, at most 64.
    #[serde(default)]
    pub tools: Vec<String>,
    /// Same rules as `tools`.
    #[serde(default)]
    pub datasets: Vec<String>,
    /// The MCP resources the task needs, as URI glob patterns: `*` matches any run of characters
    /// (`file:///tmp/*`, `ui://widgets/*`, `*`). Each 1 to 500 bytes, no control characters nor
    /// surrounding whitespace, no duplicates, at most 64.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<String>,
    /// The MCP prompts the task needs, by name. Same rules as `tools`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    /// Requested maximum duration of the whole task, seconds (1 to 30 days). None: server default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_duration_secs: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTaskIntent {
    purpose: String,
    task_type: String,
    #[serde(default)]
    upstreams: Vec<UpstreamName>,
    #[serde(default)]
    tools: Vec<String>,
    #[serde(default)]
    datasets: Vec<String>,
    #[serde(default)]
    resources: Vec<String>,
    #[serde(default)]
    prompts: Vec<String>,
    #[serde(default)]
    max_duration_secs: Option<u64>,
}

impl TryFrom<RawTaskIntent> for TaskIntent {
    type Error = TokenError;
    fn try_from(raw: RawTaskIntent) -> Result<Self, TokenError> {
        let intent = TaskIntent {
            purpose: raw.purpose,
            task_type: raw.task_type,
            upstreams: raw.upstreams,
            tools: raw.tools,
            datasets: raw.datasets,
            resources: raw.resources,
            prompts: raw.prompts,
            max_duration_secs: raw.max_duration_secs,
        };
        intent.validate("")?;
        Ok(intent)
    }
}

fn invalid(field: String, message: impl Into<String>) -> TokenError {
    TokenError::InvalidAuthorizationDetails {
        field,
        message: message.into(),
    }
}

fn field_name(at: &str, name: &str) -> String {
    if at.is_empty() {
        name.to_owned()
    } else {
        format!("{at}.{name}")
    }
}

impl TaskIntent {
    /// Parses the `authorization_details` form parameter: a JSON array holding exactly one object with
    /// `"type": "warden_task"` plus the fields of [`TaskIntent`] (the `type` member is consumed).
    /// At most 16 KiB. Errors name the field (e.g. `authorization_details[0].tools[2]`).
    pub fn from_authorization_details(json: &str) -> Result<Self, TokenError> {
        if json.len() > MAX_AUTHORIZATION_DETAILS_BYTES {
            return Err(invalid(
                "authorization_details".into(),
                format!("is longer than {MAX_AUTHORIZATION_DETAILS_BYTES} bytes"),
            ));
        }
        let value: Value = serde_json::from_str(json)
            .map_err(|e| invalid("authorization_details".into(), format!("is not valid JSON ({e})")))?;
        jws::reject_duplicate_members(json.as_bytes())
            .map_err(|m| invalid("authorization_details".into(), m))?;
        match value {
            Value::Array(items) => Self::from_details_slice(&items),
            _ => Err(invalid("authorization_details".into(), "must be a JSON array")),
        }
    }

    fn from_details_slice(items: &[Value]) -> Result<Self, TokenError> {
        let [item] = items else {
            return Err(invalid(
                "authorization_details".into(),
                format!(
                    "must hold exactly one object of type `{AUTHORIZATION_DETAILS_TYPE}`, not {}",
                    items.len()
                ),
            ));
        };
        let at = "authorization_details[0]";
        let obj = item
            .as_object()
            .ok_or_else(|| invalid(at.into(), "must be a JSON object"))?;
        Self::from_object(obj, at)
    }

    fn from_object(obj: &Map<String, Value>, at: &str) -> Result<Self, TokenError> {
        match obj.get("type") {
            Some(Value::String(t)) if t == AUTHORIZATION_DETAILS_TYPE => {}
            Some(Value::String(t)) => {
                return Err(invalid(
                    field_name(at, "type"),
                    format!(
                        "unknown type `{}`; expected `{AUTHORIZATION_DETAILS_TYPE}`",
                        jws::shorten(t)
                    ),
                ));
            }
            Some(_) => return Err(invalid(field_name(at, "type"), "must be a string")),
            None => return Err(invalid(field_name(at, "type"), "is missing")),
        }
        let string = |name: &str, v: &Value| -> Result<String, TokenError> {
            v.as_str()
                .map(str::to_owned)
                .ok_or_else(|| invalid(field_name(at, name), "must be a string"))
        };
        let strings = |name: &str, v: &Value| -> Result<Vec<String>, TokenError> {
            if v.is_null() {
                return Ok(Vec::new());
            }
            let items = v
                .as_array()
                .ok_or_else(|| invalid(field_name(at, name), "must be an array of strings"))?;
            if items.len() > MAX_INTENT_ITEMS {
                return Err(invalid(
                    field_name(at, name),
                    format!("has {} entries; the limit is {MAX_INTENT_ITEMS}", items.len()),
                ));
            }
            items
                .iter()
                .enumerate()
                .map(|(i, item)| {
                    item.as_str()
                        .map(str::to_owned)
                        .ok_or_else(|| invalid(field_name(at, &format!("{name}[{i}]")), "must be a string"))
                })
                .collect()
        };
        let (mut purpose, mut task_type) = (None, None);
        let mut intent = TaskIntent {
            purpose: String::new(),
            task_type: String::new(),
            upstreams: Vec::new(),
            tools: Vec::new(),
            datasets: Vec::new(),
            resources: Vec::new(),
            prompts: Vec::new(),
            max_duration_secs: None,
        };
        for (key, value) in obj {
            match key.as_str() {
                "type" => {}
                "purpose" => purpose = Some(string(key, value)?),
                "task_type" => task_type = Some(string(key, value)?),
                "upstreams" => {
                    intent.upstreams = strings(key, value)?
                        .iter()
                        .enumerate()
                        .map(|(i, name)| {
                            UpstreamName::parse(name)
                                .map_err(|e| invalid(field_name(at, &format!("upstreams[{i}]")), e.message))
                        })
                        .collect::<Result<_, _>>()?;
                }
                "tools" => intent.tools = strings(key, value)?,
                "datasets" => intent.datasets = strings(key, value)?,
                "resources" => intent.resources = strings(key, value)?,
                "prompts" => intent.prompts = strings(key, value)?,
                "max_duration_secs" => {
                    intent.max_duration_secs = match value {
                        Value::Null => None,
                        v => Some(v.as_u64().ok_or_else(|| {
                            invalid(field_name(at, key), "must be a whole number of seconds")
                        })?),
                    }
                }
                other => {
                    return Err(invalid(
                        field_name(at, &jws::shorten(other)),
                        format!(
                            "unknown field; a `{AUTHORIZATION_DETAILS_TYPE}` entry has `purpose`, `task_type`, \
                             `upstreams`, `tools`, `datasets`, `resources`, `prompts` and `max_duration_secs`"
                        ),
                    ));
                }
            }
        }
        intent.purpose = purpose.ok_or_else(|| invalid(field_name(at, "purpose"), "is missing"))?;
        intent.task_type = task_type.ok_or_else(|| invalid(field_name(at, "task_type"), "is missing"))?;
        intent.validate(at)?;
        Ok(intent)
    }

    /// Checks every rule; `at` prefixes field names in errors.
    fn validate(&self, at: &str) -> Result<(), TokenError> {
        let p = &self.purpose;
        if p.is_empty() || p.len() > MAX_PURPOSE_BYTES {
            return Err(invalid(
                field_name(at, "purpose"),
                format!("must be 1 to {MAX_PURPOSE_BYTES} bytes"),
            ));
        }
        if p.chars().any(char::is_control) {
            return Err(invalid(
                field_name(at, "purpose"),
                "must not contain control characters",
            ));
        }
        let t = &self.task_type;
        if t.is_empty() || t.len() > MAX_TASK_TYPE_BYTES {
            return Err(invalid(
                field_name(at, "task_type"),
                format!("must be 1 to {MAX_TASK_TYPE_BYTES} characters"),
            ));
        }
        if let Some(c) = t
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "_.-".contains(*c)))
        {
            return Err(invalid(
                field_name(at, "task_type"),
                format!(
                    "`{}` contains `{}`; use `a-z`, `0-9`, `_`, `.` and `-`",
                    jws::shorten(t),
                    c.escape_debug()
                ),
            ));
        }
        check_list(
            at,
            "upstreams",
            self.upstreams.iter().map(UpstreamName::as_str),
            |_| Ok(()),
        )?;
        check_list(at, "tools", self.tools.iter().map(String::as_str), check_item)?;
        check_list(
            at,
            "datasets",
            self.datasets.iter().map(String::as_str),
            check_item,
        )?;
        check_list(
            at,
            "resources",
            self.resources.iter().map(String::as_str),
            check_pattern,
        )?;
        check_list(at, "prompts", self.prompts.iter().map(String::as_str), check_item)?;
        if let Some(d) = self.max_duration_secs
            && !(1..=MAX_TASK_DURATION_SECS).contains(&d)
        {
            return Err(invalid(
                field_name(at, "max_duration_secs"),
                format!("must be 1 to {MAX_TASK_DURATION_SECS} seconds"),
            ));
        }
        Ok(())
    }

    /// The `authorization_details` array for this intent (`type` included), as echoed in responses
    /// and carried in task tokens.
    pub fn to_authorization_details(&self) -> Value {
        let mut entry = json!({
            "type": AUTHORIZATION_DETAILS_TYPE,
            "purpose": self.purpose,
            "task_type": self.task_type,
            "upstreams": self.upstreams.iter().map(UpstreamName::as_str).collect::<Vec<_>>(),
            "tools": self.tools,
            "datasets": self.datasets,
        });
        if let Some(obj) = entry.as_object_mut() {
            // Only when declared: tokens of tasks without them stay as they were.
            if !self.resources.is_empty() {
                obj.insert("resources".into(), json!(self.resources));
            }
            if !self.prompts.is_empty() {
                obj.insert("prompts".into(), json!(self.prompts));
            }
            if let Some(d) = self.max_duration_secs {
                obj.insert("max_duration_secs".into(), json!(d));
            }
        }
        json!([entry])
    }

    /// Delegation narrowing: the intersection of `self` (the parent's scope) and `requested` (the
    /// child's request), further limited to `child_allowed_upstreams`.
    ///
    /// * A requested upstream, tool, dataset or prompt that the parent does not hold is an error
    ///   naming it (delegation never widens); the `task_type` must be the parent's.
    /// * A requested resource pattern must be one of the parent's patterns, or contain no `*` and
    ///   match one of them (a child can name one URI within a parent's `file:///tmp/*`, not a
    ///   pattern of its own).
    /// * An empty requested list means "inherit the parent's list" (upstreams: intersected with what
    ///   the child is allowed).
    /// * The parent's lists are exact allow-lists: a parent with no tools can delegate no tools.
    /// * A requested upstream the child may not use is dropped (the result may be empty: nothing).
    /// * `max_duration_secs` is the smaller of the two; the purpose is the child's own.
    ///
    /// The caller must also keep the child token's `exp` within the parent's.
    pub fn narrow(
        &self,
        requested: &TaskIntent,
        child_allowed_upstreams: &[UpstreamName],
    ) -> Result<TaskIntent, TokenError> {
        let at = "authorization_details[0]";
        if requested.task_type != self.task_type {
            return Err(TokenError::ScopeWidened {
                field: field_name(at, "task_type"),
                item: requested.task_type.clone(),
            });
        }
        fn pick<T: Clone + PartialEq>(
            parent: &[T],
            requested: &[T],
            field: &str,
            show: impl Fn(&T) -> String,
        ) -> Result<Vec<T>, TokenError> {
            if requested.is_empty() {
                return Ok(parent.to_vec());
            }
            for (i, item) in requested.iter().enumerate() {
                if !parent.contains(item) {
                    return Err(TokenError::ScopeWidened {
                        field: format!("authorization_details[0].{field}[{i}]"),
                        item: show(item),
                    });
                }
            }
            Ok(requested.to_vec())
        }
        let mut upstreams = pick(&self.upstreams, &requested.upstreams, "upstreams", |u| {
            u.to_string()
        })?;
        upstreams.retain(|u| child_allowed_upstreams.contains(u));
        let tools = pick(&self.tools, &requested.tools, "tools", |t| jws::shorten(t))?;
        let datasets = pick(&self.datasets, &requested.datasets, "datasets", |d| {
            jws::shorten(d)
        })?;
        let prompts = pick(&self.prompts, &requested.prompts, "prompts", |p| jws::shorten(p))?;
        let resources = if requested.resources.is_empty() {
            self.resources.clone()
        } else {
            for (i, r) in requested.resources.iter().enumerate() {
                let within = self.resources.contains(r)
                    || (!r.contains('*') && self.resources.iter().any(|p| glob_matches(p, r)));
                if !within {
                    return Err(TokenError::ScopeWidened {
                        field: format!("{at}.resources[{i}]"),
                        item: jws::shorten(r),
                    });
                }
            }
            requested.resources.clone()
        };
        let max_duration_secs = match (self.max_duration_secs, requested.max_duration_secs) {
            (Some(p), Some(r)) => Some(p.min(r)),
            (p, r) => p.or(r),
        };
        Ok(TaskIntent {
            purpose: requested.purpose.clone(),
            task_type: self.task_type.clone(),
            upstreams,
            tools,
            datasets,
            resources,
            prompts,
            max_duration_secs,
        })
    }
}

fn check_item(item: &str) -> Result<(), String> {
    if item.is_empty() || item.len() > MAX_ITEM_BYTES {
        return Err(format!("must be 1 to {MAX_ITEM_BYTES} bytes"));
    }
    if item.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if item.trim() != item {
        return Err("must not start or end with whitespace".into());
    }
    Ok(())
}

fn check_pattern(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() || pattern.len() > MAX_PATTERN_BYTES {
        return Err(format!("must be 1 to {MAX_PATTERN_BYTES} bytes"));
    }
    if pattern.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if pattern.trim() != pattern {
        return Err("must not start or end with whitespace".into());
    }
    Ok(())
}

fn check_list<'a>(
    at: &str,
    name: &str,
    items: impl ExactSizeIterator<Item = &'a str>,
    check: impl Fn(&str) -> Result<(), String>,
) -> Result<(), TokenError> {
    if items.len() > MAX_INTENT_ITEMS {
        return Err(invalid(
            field_name(at, name),
            format!("has {} entries; the limit is {MAX_INTENT_ITEMS}", items.len()),
        ));
    }
    let mut seen = HashSet::new();
    for (i, item) in items.enumerate() {
        let field = || field_name(at, &format!("{name}[{i}]"));
        check(item).map_err(|m| invalid(field(), m))?;
        if !seen.insert(item) {
            return Err(invalid(
                field(),
                format!("`{}` is listed twice", jws::shorten(item)),
            ));
        }
    }
    Ok(())
}

/// One link of the delegation chain (RFC 8693 §4.1 `act`): the actor's SPIFFE ID and, nested, the
/// previous actor. Only the top-level `sub` and the current actor count for decisions.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub sub: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Box<Actor>>,
}

/// RFC 7800 / RFC 9449 §6: the token is bound to the DPoP key with this RFC 7638 thumbprint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Confirmation {
    pub jkt: String,
}

/// Claims of a task token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskClaims {
    pub iss: String,
    /// The agent's SPIFFE ID.
    pub sub: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    pub task_id: Uuid,
    /// Delegation depth: 0 for a task started by the agent itself.
    pub depth: u8,
    /// Exactly what [`TaskIntent::to_authorization_details`] returns.
    pub authorization_details: Vec<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub act: Option<Actor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cnf: Option<Confirmation>,
}

impl TaskClaims {
    /// The task's intent, parsed and validated from `authorization_details`.
    pub fn intent(&self) -> Result<TaskIntent, TokenError> {
        TaskIntent::from_details_slice(&self.authorization_details)
    }

    /// Checks what [`issue_task_token`] refuses to sign.
    fn check_for_issue(&self) -> Result<(), TokenError> {
        let bad = |claim: &str, message: &str| TokenError::InvalidClaim {
            claim: claim.into(),
            message: message.into(),
        };
        if self.iss.is_empty() {
            return Err(bad("iss", "must not be empty"));
        }
        if self.aud.is_empty() {
            return Err(bad("aud", "must not be empty"));
        }
        SpiffeId::parse(&self.sub).map_err(|e| bad("sub", &e.message))?;
        jws::check_jti(Some(self.jti.clone()))?;
        jws::check_lifetime(self.iat, self.exp, MAX_TASK_TOKEN_LIFETIME_SECS)?;
        self.intent()?;
        let mut actor = self.act.as_ref();
        let mut links = 0;
        while let Some(a) = actor {
            links += 1;
            if links > MAX_ACT_DEPTH {
                return Err(bad("act", "the delegation chain is too long"));
            }
            SpiffeId::parse(&a.sub).map_err(|e| bad("act.sub", &e.message))?;
            actor = a.act.as_deref();
        }
        if let Some(cnf) = &self.cnf
            && (cnf.jkt.len() != 43 || jws::b64_decode_field(&cnf.jkt, "jkt").is_err())
        {
            return Err(bad("cnf.jkt", "must be a base64url SHA-256 thumbprint"));
        }
        Ok(())
    }
}

/// Signs claims as a compact JWS: header `{"alg":"EdDSA","typ":TASK_TOKEN_TYP,"kid":key.kid()}`.
///
/// Refuses claims that could not be verified later: `sub` (and every `act.sub`) must be a SPIFFE ID,
/// `jti` 1 to 256 characters, `0 < exp - iat <= MAX_TASK_TOKEN_LIFETIME_SECS`, the intent valid, and
/// the whole token within [`MAX_TOKEN_BYTES`] (a very large intent does not fit: the error names
/// `authorization_details`).
pub fn issue_task_token(key: &SigningKey, claims: &TaskClaims) -> Result<Secret<String>, TokenError> {
    claims.check_for_issue()?;
    // The kid is base64url, so it needs no JSON escaping.
    let header = format!(
        r#"{{"alg":"EdDSA","typ":"{TASK_TOKEN_TYP}","kid":"{}"}}"#,
        key.kid()
    );
    let payload = serde_json::to_vec(claims).map_err(|e| TokenError::Internal(e.to_string()))?;
    let token = jws::sign_ed25519(key.dalek(), header.as_bytes(), &payload);
    if token.len() > MAX_TOKEN_BYTES {
        return Err(invalid(
            "authorization_details".into(),
            format!(
                "the task's intent is too large: the token would be {} bytes; the limit is {MAX_TOKEN_BYTES}",
                token.len()
            ),
        ));
    }
    Ok(Secret::new(token))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TaskHeader {
    alg: String,
    #[serde(default)]
    typ: Option<String>,
    #[serde(default)]
    kid: Option<String>,
}

/// Verifies signature (kid looked up with `keys`), typ, alg (EdDSA only), iss, aud, exp/iat (with
/// LEEWAY_SECS), lifetime, size. Does NOT check revocation (the caller does, by task id), and does not
/// re-validate the intent (it was validated when the token was issued; [`TaskClaims::intent`] parses
/// it).
pub fn verify_task_token(
    token: &str,
    keys: &dyn KeyLookup,
    issuer: &str,
    audience: &str,
    now: DateTime<Utc>,
) -> Result<TaskClaims, TokenError> {
    verify_with_key(token, keys, issuer, &|aud| aud == audience, now).map(|(claims, _)| claims)
}

/// [`verify_task_token`] accepting every audience `accept` says yes to (a task token's `aud` is
/// Warden's issuer, or one resource, RFC 8707); the caller decides which of them the place the token
/// was presented takes.
pub fn verify_task_token_for(
    token: &str,
    keys: &dyn KeyLookup,
    issuer: &str,
    accept: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<TaskClaims, TokenError> {
    verify_with_key(token, keys, issuer, accept, now).map(|(claims, _)| claims)
}

/// [`verify_task_token`], also returning the key that verified the signature.
pub(crate) fn verify_with_key(
    token: &str,
    keys: &dyn KeyLookup,
    issuer: &str,
    accept: &dyn Fn(&str) -> bool,
    now: DateTime<Utc>,
) -> Result<(TaskClaims, PublicKey), TokenError> {
    let jws = Compact::split(token, "token")?;
    let header: TaskHeader = jws.header_as()?;
    if header.alg != "EdDSA" {
        return Err(TokenError::UnsupportedAlgorithm(jws::shorten(&header.alg)));
    }
    let typ = header.typ.unwrap_or_default();
    if typ != TASK_TOKEN_TYP {
        return Err(TokenError::WrongType {
            expected: TASK_TOKEN_TYP,
            found: jws::shorten(&typ),
        });
    }
    let kid = header
        .kid
        .ok_or_else(|| TokenError::Malformed("the header has no `kid`".into()))?;
    let key = keys.public_key(&kid).ok_or_else(|| TokenError::UnknownKey {
        kid: jws::shorten(&kid),
    })?;
    jws::verify_ed25519(key.verifying_key(), jws.signing_input.as_bytes(), &jws.signature)?;

    let claims: TaskClaims = jws::parse_json(&jws.payload()?, "payload")?;
    if claims.iss != issuer {
        return Err(TokenError::WrongIssuer);
    }
    if !accept(&claims.aud) {
        return Err(TokenError::WrongAudience);
    }
    let now = now.timestamp();
    jws::check_lifetime(claims.iat, claims.exp, MAX_TASK_TOKEN_LIFETIME_SECS)?;
    jws::check_iat(claims.iat, now)?;
    jws::check_exp(claims.exp, now)?;
    Ok((claims, key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn check_details(input: &str, expect: Result<(), &str>) {
        let got = TaskIntent::from_authorization_details(input)
            .map(|_| ())
            .map_err(|e| e.to_string());
        match (got, expect) {
            (Ok(()), Ok(())) => {}
            (Err(got), Err(want)) => assert!(got.contains(want), "{input}: `{got}` lacks `{want}`"),
            (got, want) => panic!("{input}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn authorization_details_parse() {
        let intent = sample_intent();
        let json = intent.to_authorization_details().to_string();
        assert_eq!(TaskIntent::from_authorization_details(&json), Ok(intent.clone()));

        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t"}]"#,
            Ok(()),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","tools":null,"max_duration_secs":null}]"#,
            Ok(()),
        );
        check_details("", Err("authorization_details: is not valid JSON"));
        check_details("{}", Err("must be a JSON array"));
        check_details("[]", Err("exactly one object"));
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","tools":["a"],"tools":["b"]}]"#,
            Err("authorization_details: the member `tools` is given twice"),
        );
        check_details(r#"[{"type":"warden_task"},{"type":"warden_task"}]"#, Err("not 2"));
        check_details("[1]", Err("authorization_details[0]: must be a JSON object"));
        check_details(
            r#"[{"purpose":"p","task_type":"t"}]"#,
            Err("[0].type: is missing"),
        );
        check_details(
            r#"[{"type":"payment_initiation"}]"#,
            Err("unknown type `payment_initiation`"),
        );
        check_details(
            r#"[{"type":"warden_task","task_type":"t"}]"#,
            Err("[0].purpose: is missing"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p"}]"#,
            Err("[0].task_type: is missing"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","actions":["x"]}]"#,
            Err("authorization_details[0].actions: unknown field"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"","task_type":"t"}]"#,
            Err("[0].purpose: must be 1 to 500 bytes"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"a\nb","task_type":"t"}]"#,
            Err("[0].purpose: must not contain control characters"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"Refund"}]"#,
            Err("[0].task_type: `Refund` contains `R`"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","tools":["a","b",""]}]"#,
            Err("authorization_details[0].tools[2]: must be 1 to 200 bytes"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","tools":["a",7]}]"#,
            Err("authorization_details[0].tools[1]: must be a string"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","datasets":["a","a"]}]"#,
            Err("authorization_details[0].datasets[1]: `a` is listed twice"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","datasets":[" a"]}]"#,
            Err("datasets[0]: must not start or end with whitespace"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","upstreams":["ok","Bad"]}]"#,
            Err("authorization_details[0].upstreams[1]: upstream name `Bad` contains `B`"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","tools":"a"}]"#,
            Err("[0].tools: must be an array of strings"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","max_duration_secs":0}]"#,
            Err("[0].max_duration_secs: must be 1 to 2592000 seconds"),
        );
        check_details(
            r#"[{"type":"warden_task","purpose":"p","task_type":"t","max_duration_secs":-1}]"#,
            Err("must be a whole number of seconds"),
        );
        let many: Vec<String> = (0..65).map(|i| format!("t{i}")).collect();
        check_details(
            &json!([{"type":"warden_task","purpose":"p","task_type":"t","tools": many}]).to_string(),
            Err("[0].tools: has 65 entries; the limit is 64"),
        );
        check_details(
            &format!(
                r#"[{{"type":"warden_task","purpose":"{}","task_type":"t"}}]"#,
                "a".repeat(20_000)
            ),
            Err("longer than 16384 bytes"),
        );
    }

    #[test]
    fn serde_validates_too() {
        let intent = sample_intent();
        let json = serde_json::to_string(&intent).expect("serializes");
        assert_eq!(serde_json::from_str::<TaskIntent>(&json).expect("valid"), intent);
        let err =
            serde_json::from_str::<TaskIntent>(r#"{"purpose":"p","task_type":"T"}"#).expect_err("invalid");
        assert!(err.to_string().contains("task_type: `T` contains `T`"), "{err}");
        let err = serde_json::from_str::<TaskIntent>(r#"{"purpose":"p","task_type":"t","x":1}"#)
            .expect_err("unknown field");
        assert!(err.to_string().contains("unknown field `x`"), "{err}");
    }

    fn names(list: &[&str]) -> Vec<UpstreamName> {
        list.iter()
            .map(|n| UpstreamName::parse(n).expect("valid"))
            .collect()
    }

    fn intent(upstreams: &[&str], tools: &[&str], datasets: &[&str], max: Option<u64>) -> TaskIntent {
        TaskIntent {
            purpose: "p".into(),
            task_type: "t".into(),
            upstreams: names(upstreams),
            tools: tools.iter().map(|s| s.to_string()).collect(),
            datasets: datasets.iter().map(|s| s.to_string()).collect(),
            resources: Vec::new(),
            prompts: Vec::new(),
            max_duration_secs: max,
        }
    }

    fn with_mcp(mut i: TaskIntent, resources: &[&str], prompts: &[&str]) -> TaskIntent {
        i.resources = resources.iter().map(|s| s.to_string()).collect();
        i.prompts = prompts.iter().map(|s| s.to_string()).collect();
        i
    }

    #[test]
    fn resources_and_prompts_parse_validate_and_round_trip() {
        let details = r#"[{"type":"warden_task","purpose":"p","task_type":"t","upstreams":["files"],
            "resources":["file:///tmp/*","ui://widgets/*"],"prompts":["summary"]}]"#;
        let i = TaskIntent::from_authorization_details(details).expect("valid");
        assert_eq!(i.resources, ["file:///tmp/*", "ui://widgets/*"]);
        assert_eq!(i.prompts, ["summary"]);
        let again =
            TaskIntent::from_authorization_details(&i.to_authorization_details().to_string()).expect("again");
        assert_eq!(again, i);
        let via_serde: TaskIntent = serde_json::from_value(json!({
            "purpose": "p", "task_type": "t", "resources": ["*"], "prompts": ["a"]
        }))
        .expect("serde");
        assert_eq!((via_serde.resources.len(), via_serde.prompts.len()), (1, 1));
        // Without them, nothing changes in the details (nor in tokens).
        let plain = intent(&["crm"], &["x"], &[], None);
        let d = plain.to_authorization_details();
        assert!(
            d[0].get("resources").is_none() && d[0].get("prompts").is_none(),
            "{d}"
        );
        assert!(
            serde_json::to_value(&plain)
                .expect("ser")
                .get("resources")
                .is_none()
        );
        for (entry, want) in [
            (
                json!({"resources": [""]}),
                "authorization_details[0].resources[0]: must be 1 to 500 bytes",
            ),
            (
                json!({"resources": ["a".repeat(501)]}),
                "authorization_details[0].resources[0]: must be 1 to 500 bytes",
            ),
            (
                json!({"resources": ["file:///a\nb"]}),
                "authorization_details[0].resources[0]: must not contain control characters",
            ),
            (
                json!({"resources": ["*", "*"]}),
                "authorization_details[0].resources[1]: `*` is listed twice",
            ),
            (
                json!({"resources": (0..65).map(|i| format!("u{i}")).collect::<Vec<_>>()}),
                "authorization_details[0].resources: has 65 entries; the limit is 64",
            ),
            (
                json!({"prompts": ["a".repeat(201)]}),
                "authorization_details[0].prompts[0]: must be 1 to 200 bytes",
            ),
            (
                json!({"prompts": "a"}),
                "authorization_details[0].prompts: must be an array of strings",
            ),
        ] {
            let mut obj = json!({"type": "warden_task", "purpose": "p", "task_type": "t"});
            if let (Some(o), Some(extra)) = (obj.as_object_mut(), entry.as_object()) {
                o.extend(extra.clone());
            }
            let err = TaskIntent::from_authorization_details(&json!([obj]).to_string()).expect_err("invalid");
            assert!(err.to_string().contains(want), "{err} / {want}");
        }
        // A 500-byte pattern is fine.
        let mut long = plain.clone();
        long.resources = vec!["a".repeat(500)];
        assert!(long.validate("").is_ok());
    }

    #[test]
    fn narrowing_resources_and_prompts() {
        let parent = with_mcp(
            intent(&["files"], &[], &[], None),
            &["file:///tmp/*", "ui://w/1"],
            &["summary", "draft"],
        );
        // Inherited when not asked for.
        let child = parent
            .narrow(&intent(&[], &[], &[], None), &names(&["files"]))
            .expect("ok");
        assert_eq!(
            (child.resources.clone(), child.prompts.clone()),
            (parent.resources.clone(), parent.prompts.clone())
        );
        // The parent's own patterns, and star-free URIs within them.
        let asked = with_mcp(
            intent(&[], &[], &[], None),
            &["file:///tmp/*", "file:///tmp/a/b.txt", "ui://w/1"],
            &["draft"],
        );
        let child = parent.narrow(&asked, &names(&["files"])).expect("ok");
        assert_eq!(child.resources, asked.resources);
        assert_eq!(child.prompts, ["draft"]);
        // A narrower pattern of its own, a URI outside, a prompt the parent lacks: refused.
        for (asked, field, item) in [
            (
                with_mcp(intent(&[], &[], &[], None), &["file:///tmp/a/*"], &[]),
                "resources[0]",
                "file:///tmp/a/*",
            ),
            (
                with_mcp(
                    intent(&[], &[], &[], None),
                    &["ui://w/1", "file:///etc/shadow"],
                    &[],
                ),
                "resources[1]",
                "file:///etc/shadow",
            ),
            (
                with_mcp(intent(&[], &[], &[], None), &["*"], &[]),
                "resources[0]",
                "*",
            ),
            (
                with_mcp(intent(&[], &[], &[], None), &[], &["exfiltrate"]),
                "prompts[0]",
                "exfiltrate",
            ),
        ] {
            assert_eq!(
                parent.narrow(&asked, &names(&["files"])),
                Err(TokenError::ScopeWidened {
                    field: format!("authorization_details[0].{field}"),
                    item: item.into()
                })
            );
        }
        // A parent with no resources delegates none.
        let bare = intent(&["files"], &[], &[], None);
        assert!(
            bare.narrow(
                &with_mcp(intent(&[], &[], &[], None), &["file:///tmp/a"], &[]),
                &[]
            )
            .is_err()
        );
    }

    #[test]
    fn narrowing() {
        let parent = intent(&["crm", "db", "mail"], &["read", "write"], &["orders"], Some(600));
        // Inherit everything, limited to the child's upstreams.
        let child = parent
            .narrow(&intent(&[], &[], &[], None), &names(&["db", "mail", "other"]))
            .expect("narrowed");
        assert_eq!(
            child,
            intent(&["db", "mail"], &["read", "write"], &["orders"], Some(600))
        );
        // Ask for a subset; the duration is capped.
        let child = parent
            .narrow(
                &intent(&["crm", "db"], &["read"], &[], Some(9000)),
                &names(&["db"]),
            )
            .expect("narrowed");
        assert_eq!(child, intent(&["db"], &["read"], &["orders"], Some(600)));
        // Widening is an error naming the item.
        let err = parent
            .narrow(
                &intent(&["crm", "billing"], &[], &[], None),
                &names(&["crm", "billing"]),
            )
            .expect_err("widens");
        assert_eq!(
            err,
            TokenError::ScopeWidened {
                field: "authorization_details[0].upstreams[1]".into(),
                item: "billing".into()
            }
        );
        let err = parent
            .narrow(&intent(&[], &["read", "delete"], &[], None), &[])
            .expect_err("widens");
        assert!(
            err.to_string()
                .starts_with("authorization_details[0].tools[1]: `delete`"),
            "{err}"
        );
        let err = parent
            .narrow(&intent(&[], &[], &["payroll"], None), &[])
            .expect_err("widens");
        assert!(err.to_string().contains("datasets[0]"), "{err}");
        let mut other_type = intent(&[], &[], &[], None);
        other_type.task_type = "admin".into();
        assert!(matches!(
            parent.narrow(&other_type, &[]),
            Err(TokenError::ScopeWidened { .. })
        ));
        // An empty parent list grants nothing to delegate.
        let bare = intent(&[], &[], &[], None);
        assert!(bare.narrow(&intent(&[], &["read"], &[], None), &[]).is_err());
        assert_eq!(
            bare.narrow(&intent(&[], &[], &[], Some(5)), &[]),
            Ok(intent(&[], &[], &[], Some(5)))
        );
    }

    fn claims(key_now: i64) -> TaskClaims {
        sample_claims(key_now)
    }

    #[test]
    fn issue_then_verify() {
        let key = signing_key();
        let claims = claims(NOW);
        let token = issue_task_token(&key, &claims).expect("issued");
        let verified =
            verify_task_token(token.expose(), &key.public(), ISSUER, AUDIENCE, at(NOW)).expect("verified");
        assert_eq!(verified, claims);
        assert_eq!(verified.intent(), Ok(sample_intent()));
        // A token is verified by kid among several keys.
        let other = signing_key();
        let keys: HashMap<String, crate::PublicKey> = [
            (other.kid().to_owned(), other.public()),
            (key.kid().to_owned(), key.public()),
        ]
        .into();
        assert!(verify_task_token(token.expose(), &keys, ISSUER, AUDIENCE, at(NOW)).is_ok());
    }

    fn verify(token: &str, now: i64) -> Result<TaskClaims, TokenError> {
        verify_task_token(token, &test_key().public(), ISSUER, AUDIENCE, at(now))
    }

    fn issue(claims: &TaskClaims) -> String {
        issue_task_token(test_key(), claims).expect("issued").into_inner()
    }

    #[test]
    fn time_refusals() {
        let token = issue(&claims(NOW));
        let exp = NOW + 300;
        assert!(verify(&token, exp + LEEWAY - 1).is_ok());
        assert_eq!(verify(&token, exp + LEEWAY), Err(TokenError::Expired));
        assert_eq!(verify(&token, NOW - LEEWAY - 1), Err(TokenError::IssuedInFuture));
        assert!(verify(&token, NOW - LEEWAY).is_ok());
    }

    #[test]
    fn claim_refusals() {
        let token = issue(&claims(NOW));
        let key = test_key().public();
        assert_eq!(
            verify_task_token(&token, &key, "https://other", AUDIENCE, at(NOW)),
            Err(TokenError::WrongIssuer)
        );
        assert_eq!(
            verify_task_token(&token, &key, ISSUER, "other", at(NOW)),
            Err(TokenError::WrongAudience)
        );
        let stranger = signing_key().public();
        assert!(matches!(
            verify_task_token(&token, &stranger, ISSUER, AUDIENCE, at(NOW)),
            Err(TokenError::UnknownKey { .. })
        ));
        // A token whose claims are signed by a known key but say something odd.
        let mut long = claims(NOW);
        long.exp = NOW + MAX_TASK_TOKEN_LIFETIME_SECS + 1;
        let forged = forge(
            &task_header(test_key()),
            &serde_json::to_value(&long).expect("json"),
            test_key(),
        );
        assert_eq!(
            verify(&forged, NOW),
            Err(TokenError::LifetimeTooLong { max_secs: 3600 })
        );
        let mut missing = serde_json::to_value(claims(NOW)).expect("json");
        missing.as_object_mut().expect("object").remove("task_id");
        let forged = forge(&task_header(test_key()), &missing, test_key());
        assert!(matches!(verify(&forged, NOW), Err(TokenError::Malformed(m)) if m.contains("task_id")));
    }

    #[test]
    fn tampering_is_detected() {
        let token = issue(&claims(NOW));
        let (head, sig) = token.rsplit_once('.').expect("three parts");
        let (header, payload) = head.split_once('.').expect("three parts");
        // Flip one payload character (keeping valid base64url) and one signature character.
        let flip = |s: &str, i: usize| {
            let mut b = s.as_bytes().to_vec();
            b[i] = if b[i] == b'A' { b'B' } else { b'A' };
            String::from_utf8(b).expect("ascii")
        };
        let tampered = format!("{header}.{}.{sig}", flip(payload, 10));
        assert_eq!(verify(&tampered, NOW), Err(TokenError::BadSignature));
        let tampered = format!("{header}.{payload}.{}", flip(sig, 5));
        assert_eq!(verify(&tampered, NOW), Err(TokenError::BadSignature));
        let tampered = format!("{header}.{payload}.{}", &sig[..sig.len() - 2]);
        assert!(verify(&tampered, NOW).is_err());
    }

    #[test]
    fn header_refusals() {
        let claims = serde_json::to_value(claims(NOW)).expect("json");
        let key = test_key();
        let kid = key.kid();
        let check = |header: Value, want: TokenError| {
            let token = forge(&header, &claims, key);
            assert_eq!(verify(&token, NOW), Err(want), "{header}");
        };
        check(
            json!({"alg":"EdDSA","typ":"JWT","kid":kid}),
            TokenError::WrongType {
                expected: TASK_TOKEN_TYP,
                found: "JWT".into(),
            },
        );
        check(
            json!({"alg":"EdDSA","kid":kid}),
            TokenError::WrongType {
                expected: TASK_TOKEN_TYP,
                found: String::new(),
            },
        );
        check(
            json!({"alg":"EdDSA","typ":"dpop+jwt","kid":kid}),
            TokenError::WrongType {
                expected: TASK_TOKEN_TYP,
                found: "dpop+jwt".into(),
            },
        );
        check(
            json!({"alg":"ES256","typ":TASK_TOKEN_TYP,"kid":kid}),
            TokenError::UnsupportedAlgorithm("ES256".into()),
        );
        check(
            json!({"alg":"EdDSA","typ":TASK_TOKEN_TYP}),
            TokenError::Malformed("the header has no `kid`".into()),
        );
        let token = forge(
            &json!({"alg":"EdDSA","typ":TASK_TOKEN_TYP,"kid":kid,"crit":["exp"]}),
            &claims,
            key,
        );
        assert!(
            matches!(verify(&token, NOW), Err(TokenError::Malformed(m)) if m.contains("unknown field `crit`"))
        );
        let token = forge(
            &json!({"alg":"EdDSA","typ":TASK_TOKEN_TYP,"kid":kid,"jku":"https://evil"}),
            &claims,
            key,
        );
        assert!(matches!(verify(&token, NOW), Err(TokenError::Malformed(_))));
        // Duplicate header members are refused, not resolved to the last one.
        let header = format!(r#"{{"alg":"EdDSA","typ":"{TASK_TOKEN_TYP}","kid":"{kid}","alg":"none"}}"#);
        let token = forge_raw(header.as_bytes(), claims.to_string().as_bytes(), key);
        assert!(
            matches!(verify(&token, NOW), Err(TokenError::Malformed(m)) if m.contains("duplicate field"))
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let claims = serde_json::to_value(claims(NOW)).expect("json");
        let header = json!({"alg":"none","typ":TASK_TOKEN_TYP,"kid":test_key().kid()});
        let unsigned = format!(
            "{}.{}.",
            jws::b64(header.to_string().as_bytes()),
            jws::b64(claims.to_string().as_bytes())
        );
        assert!(verify(&unsigned, NOW).is_err());
        let junk_sig = format!("{unsigned}AAAA");
        assert_eq!(
            verify(&junk_sig, NOW),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
    }

    #[test]
    fn hs256_with_the_public_key_as_secret_is_refused() {
        let claims = serde_json::to_value(claims(NOW)).expect("json");
        for secret in [
            test_key().public().verifying_key().as_bytes().to_vec(),
            test_key().public().x_b64().into_bytes(),
            test_key().public().to_jwk().to_string().into_bytes(),
        ] {
            let token = hs256(
                &json!({"alg":"HS256","typ":TASK_TOKEN_TYP,"kid":test_key().kid()}),
                &claims,
                &secret,
            );
            assert_eq!(
                verify(&token, NOW),
                Err(TokenError::UnsupportedAlgorithm("HS256".into()))
            );
        }
    }

    #[test]
    fn other_token_types_do_not_verify_as_task_tokens() {
        // An agent assertion signed by a key the verifier knows is still not a task token.
        let assertion = crate::create_assertion(test_key(), AGENT, AUDIENCE, at(NOW), 60).expect("created");
        assert!(matches!(
            verify(assertion.expose(), NOW),
            Err(TokenError::WrongType { .. })
        ));
        let proof = crate::create_dpop_proof(test_key(), "POST", "https://w/v1/token", None, at(NOW))
            .expect("created");
        assert!(verify(proof.expose(), NOW).is_err());
    }

    #[test]
    fn oversized_tokens_are_refused_before_decoding() {
        let huge = format!("{}.{}.{}", "e".repeat(4000), "e".repeat(4000), "A".repeat(400));
        assert_eq!(
            verify(&huge, NOW),
            Err(TokenError::TooLarge {
                what: "token",
                max: MAX_TOKEN_BYTES
            })
        );
    }

    #[test]
    fn issue_refuses_claims_it_could_not_stand_behind() {
        let key = test_key();
        let refuse = |change: &dyn Fn(&mut TaskClaims), want: &str| {
            let mut c = claims(NOW);
            change(&mut c);
            let err = issue_task_token(key, &c).expect_err("refused").to_string();
            assert!(err.contains(want), "`{err}` lacks `{want}`");
        };
        refuse(&|c| c.sub = "billing-bot".into(), "`sub` is invalid");
        refuse(&|c| c.jti = String::new(), "`jti` is invalid");
        refuse(&|c| c.exp = c.iat, "must be after `iat`");
        refuse(&|c| c.exp = c.iat + 3601, "exceeds 3600 seconds");
        refuse(&|c| c.authorization_details = vec![], "exactly one object");
        refuse(
            &|c| c.cnf = Some(Confirmation { jkt: "short".into() }),
            "`cnf.jkt`",
        );
        refuse(
            &|c| {
                c.act = Some(Actor {
                    sub: "nope".into(),
                    act: None,
                })
            },
            "`act.sub` is invalid",
        );
        refuse(
            &|c| {
                let mut big = sample_intent();
                big.tools = (0..60).map(|i| format!("{i}-{}", "t".repeat(100))).collect();
                c.authorization_details = vec![big.to_authorization_details()[0].clone()];
            },
            "the task's intent is too large",
        );
    }

    #[test]
    fn delegated_claims_round_trip() {
        let mut c = claims(NOW);
        c.depth = 2;
        c.act = Some(Actor {
            sub: "spiffe://warden.local/agent/child".into(),
            act: Some(Box::new(Actor {
                sub: "spiffe://warden.local/agent/middle".into(),
                act: None,
            })),
        });
        c.cnf = Some(Confirmation {
            jkt: test_key().kid().to_owned(),
        });
        let token = issue(&c);
        assert_eq!(verify(&token, NOW), Ok(c));
    }

    fn item() -> impl Strategy<Value = String> {
        prop::sample::select(vec!["a", "b", "c", "d", "e", "f"]).prop_map(str::to_owned)
    }

    fn pattern() -> impl Strategy<Value = String> {
        prop::sample::select(vec![
            "*", "f:/t/*", "f:/t/a", "f:/t/a/*", "f:/e", "u:*", "u:1", "*a",
        ])
        .prop_map(str::to_owned)
    }

    fn upstream() -> impl Strategy<Value = UpstreamName> {
        prop::sample::select(vec!["crm", "db", "mail", "git", "s3"])
            .prop_map(|s| UpstreamName::parse(s).expect("valid"))
    }

    fn dedup<T: PartialEq>(mut v: Vec<T>) -> Vec<T> {
        let mut out = Vec::new();
        for x in v.drain(..) {
            if !out.contains(&x) {
                out.push(x);
            }
        }
        out
    }

    prop_compose! {
        fn arb_intent()(
            upstreams in prop::collection::vec(upstream(), 0..5),
            tools in prop::collection::vec(item(), 0..6),
            datasets in prop::collection::vec(item(), 0..6),
            resources in prop::collection::vec(pattern(), 0..5),
            prompts in prop::collection::vec(item(), 0..4),
            max in prop::option::of(1u64..10_000),
            purpose in "[ -~]{1,40}",
        ) -> TaskIntent {
            TaskIntent {
                purpose,
                task_type: "t".into(),
                upstreams: dedup(upstreams),
                tools: dedup(tools),
                datasets: dedup(datasets),
                resources: dedup(resources),
                prompts: dedup(prompts),
                max_duration_secs: max,
            }
        }
    }

    proptest! {
        #[test]
        fn narrow_never_widens(
            parent in arb_intent(),
            requested in arb_intent(),
            allowed in prop::collection::vec(upstream(), 0..5),
        ) {
            let within = |req: &[String], par: &[String]| req.iter().all(|x| par.contains(x));
            // A resource pattern is within the parent's when it is one of them, or a URI (no `*`)
            // one of them matches.
            let pattern_within = |r: &String, par: &[String]| {
                par.contains(r) || (!r.contains('*') && par.iter().any(|p| glob_matches(p, r)))
            };
            let requested_within = requested.upstreams.iter().all(|u| parent.upstreams.contains(u))
                && within(&requested.tools, &parent.tools)
                && within(&requested.datasets, &parent.datasets)
                && within(&requested.prompts, &parent.prompts)
                && requested.resources.iter().all(|r| pattern_within(r, &parent.resources));
            match parent.narrow(&requested, &allowed) {
                Ok(child) => {
                    prop_assert!(requested_within);
                    prop_assert!(child.upstreams.iter().all(|u| parent.upstreams.contains(u) && allowed.contains(u)));
                    prop_assert!(within(&child.tools, &parent.tools));
                    prop_assert!(within(&child.datasets, &parent.datasets));
                    prop_assert!(within(&child.prompts, &parent.prompts));
                    // Every URI the child's patterns match, the parent's match too (checked on
                    // the URIs of the strategy).
                    for uri in ["f:/t/a", "f:/t/a/b", "f:/e", "u:1", "u:2", "xa", ""] {
                        if child.resources.iter().any(|p| glob_matches(p, uri)) {
                            prop_assert!(parent.resources.iter().any(|p| glob_matches(p, uri)), "{}", uri);
                        }
                    }
                    prop_assert_eq!(&child.task_type, &parent.task_type);
                    if let Some(p) = parent.max_duration_secs {
                        prop_assert!(child.max_duration_secs.is_some_and(|c| c <= p));
                    }
                    prop_assert!(child.validate("").is_ok());
                    // Narrowing again with the result changes nothing: it is a fixed point.
                    prop_assert_eq!(child.narrow(&child, &allowed), Ok(child.clone()));
                }
                Err(e) => {
                    prop_assert!(!requested_within, "refused a request within scope: {}", e);
                    let is_scope_widened = matches!(e, TokenError::ScopeWidened { .. });
                    prop_assert!(is_scope_widened);
                }
            }
        }

        #[test]
        fn issued_tokens_verify(intent in arb_intent(), lifetime in 1i64..=3600, depth in 0u8..5, bound in any::<bool>()) {
            let mut c = claims(NOW);
            c.exp = NOW + lifetime;
            c.depth = depth;
            c.authorization_details = vec![intent.to_authorization_details()[0].clone()];
            if bound {
                c.cnf = Some(Confirmation { jkt: test_key().kid().to_owned() });
            }
            let token = issue(&c);
            let verified = verify(&token, NOW).expect("verifies");
            prop_assert_eq!(verified.intent(), Ok(intent));
            prop_assert_eq!(verified, c);
        }

        #[test]
        fn from_authorization_details_never_panics(s in "\\PC{0,300}") {
            let _ = TaskIntent::from_authorization_details(&s);
        }

        #[test]
        fn from_authorization_details_never_panics_on_near_misses(
            purpose in "\\PC{0,20}",
            task_type in "\\PC{0,10}",
            tools in prop::collection::vec("\\PC{0,8}", 0..4),
            extra in prop::option::of("[a-z_]{1,10}"),
        ) {
            let mut entry = json!({"type":"warden_task","purpose":purpose,"task_type":task_type,"tools":tools});
            if let (Some(extra), Some(obj)) = (extra, entry.as_object_mut()) {
                obj.insert(extra, json!(1));
            }
            if let Ok(intent) = TaskIntent::from_authorization_details(&json!([entry]).to_string()) {
                prop_assert!(intent.validate("").is_ok());
            }
        }

        #[test]
        fn verify_never_panics(s in "\\PC{0,400}") {
            let _ = verify(&s, NOW);
        }

        #[test]
        fn verify_never_panics_on_jws_shaped_garbage(
            h in "[A-Za-z0-9_-]{0,60}", p in "[A-Za-z0-9_-]{0,200}", s in "[A-Za-z0-9_-]{0,100}"
        ) {
            let _ = verify(&format!("{h}.{p}.{s}"), NOW);
        }

        #[test]
        fn verify_never_accepts_a_mutated_token(pos in 0usize..10_000, byte in any::<u8>()) {
            let token = issue(&claims(NOW));
            let mut bytes = token.clone().into_bytes();
            let i = pos % bytes.len();
            prop_assume!(bytes[i] != byte);
            bytes[i] = byte;
            if let Ok(mutated) = String::from_utf8(bytes) {
                prop_assert!(verify(&mutated, NOW).is_err());
            }
        }
    }
}
